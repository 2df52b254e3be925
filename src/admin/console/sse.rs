//! `GET /ui/live/events`: the decisions after `after`, then each new one, as Server-Sent
//! Events of JSON (filtered like the page). One small task per open page forwards the feed's
//! broadcast into the response body; it ends when the browser goes away (the body is
//! dropped, found out at the next frame).
//!
//! A stream lives no longer than the session it was opened with: before every frame (event,
//! keepalive) and every [`RECHECK`] its [`Guard`] asks whether the session is still live and
//! its admin token still the admin token, and a sign-out ends it at once through the
//! session's close signal. So sign-out, rotating the admin token and expiry each end it, and
//! no decision made after is sent.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::session::Sessions;
use super::{Body, Decision, Feed, Filter};

/// A comment line after this long without an event keeps proxies from closing the stream.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How often a quiet stream re-checks its session: an expired session or a rotated admin
/// token ends it within this long even when no decision comes.
const RECHECK: Duration = Duration::from_secs(2);
/// Events replayed at most on connect.
const REPLAY: usize = 500;
/// The last frame of a stream whose session ended (the console's script stops there rather
/// than reconnecting).
const ENDED: &[u8] = b"event: ended\ndata: sign in again\n\n";

/// Whether a stream may still send: asked before every frame.
pub(crate) struct Guard {
    /// The session is live (checked without marking it used) and its token is the admin
    /// token now.
    allowed: Box<dyn Fn() -> bool + Send + Sync>,
    /// Fails once the session is gone from the table (a sign-out ends the stream at once).
    closed: watch::Receiver<()>,
}

impl Guard {
    /// The guard of a stream opened with session `id`: the session is live (checked without
    /// marking it used: an open stream must not keep an idle session alive) and `token_ok`
    /// holds for the token it was opened with (else the session ends, as on a request).
    pub(crate) fn new(
        sessions: Arc<Sessions>,
        id: String,
        token_ok: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        let closed = sessions.closed(&id);
        Self {
            allowed: Box::new(move || {
                let Some(session) = sessions.peek(&id) else {
                    return false;
                };
                let ok = token_ok(&session.token);
                if !ok {
                    sessions.close(&id);
                }
                ok
            }),
            closed,
        }
    }
}

/// The page's filters and the last sequence number it shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EventsQuery {
    #[serde(flatten)]
    filter: Filter,
    after: String,
}

/// The streaming answer, for as long as `guard` allows.
pub(crate) fn events(feed: &Arc<Feed>, q: EventsQuery, guard: Guard) -> Response<Body> {
    // Subscribed before the replay is read: nothing falls between the two.
    let live = feed.subscribe();
    let after = q.after.parse::<u64>().unwrap_or(0);
    let mut replay = feed.after(after);
    if replay.len() > REPLAY {
        replay.drain(..replay.len() - REPLAY);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    tokio::spawn(forward(replay, live, q.filter, after, guard, tx));
    let mut r = Response::new(SseBody(rx).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The stream's task: the replay, then live decisions and keepalives, each frame sent only
/// while the guard allows; ends with [`ENDED`] when it does not.
async fn forward(
    replay: Vec<Arc<Decision>>,
    mut live: broadcast::Receiver<Arc<Decision>>,
    filter: Filter,
    after: u64,
    mut guard: Guard,
    tx: mpsc::Sender<Bytes>,
) {
    let mut last = after;
    for d in replay {
        last = d.seq;
        if !d.matches(&filter) {
            continue;
        }
        if !(guard.allowed)() {
            let _ = tx.try_send(Bytes::from_static(ENDED));
            return;
        }
        if tx.send(event(&d)).await.is_err() {
            return;
        }
    }
    let mut recheck = tokio::time::interval_at(Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut quiet_since = Instant::now();
    loop {
        let frame = tokio::select! {
            // Nothing is ever sent on it: any wake-up is the session's end.
            _ = guard.closed.changed() => None,
            _ = recheck.tick() => {
                if quiet_since.elapsed() < KEEPALIVE {
                    if (guard.allowed)() {
                        continue;
                    }
                    None
                } else {
                    Some(Bytes::from_static(b": keepalive\n\n"))
                }
            }
            next = live.recv() => match next {
                Ok(d) if d.seq <= last || !d.matches(&filter) => continue,
                Ok(d) => {
                    last = d.seq;
                    Some(event(&d))
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some(Bytes::from(format!("event: lagged\ndata: {n}\n\n")))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let Some(frame) = frame.filter(|_| (guard.allowed)()) else {
            let _ = tx.try_send(Bytes::from_static(ENDED));
            return;
        };
        // A browser that stops reading holds the task here: a sign-out still ends it.
        tokio::select! {
            sent = tx.send(frame) => if sent.is_err() { return },
            _ = guard.closed.changed() => return,
        }
        quiet_since = Instant::now();
    }
}

/// One event: the decision as JSON on a single `data:` line (JSON escapes newlines).
fn event(d: &Decision) -> Bytes {
    let json = serde_json::to_string(d).unwrap_or_default();
    Bytes::from(format!("id: {}\ndata: {json}\n\n", d.seq))
}

struct SseBody(mpsc::Receiver<Bytes>);

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use http_body_util::BodyExt as _;

    use super::*;

    fn line(request_id: &str) -> String {
        serde_json::json!({
            "time": "2026-12-01T03:00:00Z", "request_id": request_id, "subject": "alice",
            "method": "GET", "path": "/api/v3/toolkits", "route": "x", "policy": "p",
            "decision": "allow", "code": 0, "identity_rewritten": false, "status": 200,
            "latency_ms": 1.5,
        })
        .to_string()
    }

    /// The next frame's text, or `None` at the stream's end.
    async fn next(body: &mut Body) -> Option<String> {
        let frame = tokio::time::timeout(Duration::from_secs(30), body.frame())
            .await
            .expect("the stream answers or ends")?
            .expect("infallible");
        Some(String::from_utf8_lossy(frame.data_ref().expect("data")).into_owned())
    }

    /// Everything until the stream's end (a stream that does not end, keepalives and all,
    /// fails the test).
    async fn rest(body: &mut Body) -> String {
        let mut all = String::new();
        let read = async {
            while let Some(f) = next(body).await {
                all.push_str(&f);
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("the stream ends");
        all
    }

    /// A feed, a session table with `idle`, a signed-in session and its open stream.
    async fn open(
        idle: Duration,
        token_ok: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> (Arc<Feed>, Arc<Sessions>, String, Body) {
        let feed = Arc::new(Feed::new());
        feed.set_capacity(100);
        let sessions = Arc::new(Sessions::new(idle));
        let id = sessions.open("the-token");
        let guard = Guard::new(sessions.clone(), id.clone(), token_ok);
        let mut body = events(&feed, EventsQuery::default(), guard).into_body();
        feed.consume(&line("before"), 0);
        assert!(next(&mut body)
            .await
            .is_some_and(|f| f.contains("\"before\"")));
        (feed, sessions, id, body)
    }

    #[tokio::test]
    async fn a_stream_ends_when_its_session_expires_and_sends_nothing_after() {
        // Below the configured minimum (a minute), which the table itself does not impose.
        let idle = Duration::from_millis(100);
        let (feed, _sessions, _id, mut body) = open(idle, |_| true).await;
        std::thread::sleep(idle + Duration::from_millis(20));
        feed.consume(&line("after-expiry"), 0);
        let rest = rest(&mut body).await;
        assert!(!rest.contains("after-expiry"), "{rest}");
        assert!(
            rest.ends_with("event: ended\ndata: sign in again\n\n"),
            "{rest}"
        );
    }

    #[tokio::test]
    async fn a_stream_ends_when_the_admin_token_changes() {
        let rotated = Arc::new(AtomicBool::new(false));
        let token_ok = {
            let rotated = rotated.clone();
            move |t: &str| t == "the-token" && !rotated.load(Ordering::SeqCst)
        };
        let (feed, sessions, id, mut body) = open(Duration::from_secs(60), token_ok).await;
        rotated.store(true, Ordering::SeqCst);
        feed.consume(&line("after-rotation"), 0);
        let rest = rest(&mut body).await;
        assert!(!rest.contains("after-rotation"), "{rest}");
        // The session ended with it, as a request would have ended it.
        assert!(sessions.get(&id).is_none());
    }

    #[tokio::test]
    async fn signing_out_ends_a_stream_without_waiting_for_an_event() {
        let (feed, sessions, id, mut body) = open(Duration::from_secs(60), |_| true).await;
        sessions.close(&id);
        feed.consume(&line("after-sign-out"), 0);
        let rest = rest(&mut body).await;
        assert!(!rest.contains("after-sign-out"), "{rest}");
        assert!(rest.contains("event: ended"), "{rest}");
    }
}
