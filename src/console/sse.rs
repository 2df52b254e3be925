//! `GET /ui/live/events`: the decisions after `after`, then each new one, as Server-Sent
//! Events of JSON (filtered like the page). One small task per open page forwards the feed's
//! broadcast into the response body; it ends when the browser goes away (the body is
//! dropped) and at most every [`KEEPALIVE`] it finds out.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response};
use http_body::Frame;
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::{Body, Decision, Feed, Filter};

/// A comment line this often keeps proxies from closing the stream and finds closed ones.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Events replayed at most on connect.
const REPLAY: usize = 500;

/// The page's filters and the last sequence number it shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct EventsQuery {
    #[serde(flatten)]
    filter: Filter,
    after: String,
}

/// The streaming answer.
pub(crate) fn events(feed: &Arc<Feed>, q: EventsQuery) -> Response<Body> {
    // Subscribed before the replay is read: nothing falls between the two.
    let mut live = feed.subscribe();
    let after = q.after.parse::<u64>().unwrap_or(0);
    let mut replay = feed.after(after);
    if replay.len() > REPLAY {
        replay.drain(..replay.len() - REPLAY);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let filter = q.filter;
    tokio::spawn(async move {
        let mut last = after;
        for d in replay {
            last = d.seq;
            if d.matches(&filter) && tx.send(event(&d)).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::time::timeout(KEEPALIVE, live.recv()).await;
            let frame = match next {
                Err(_) => Bytes::from_static(b": keepalive\n\n"),
                Ok(Ok(d)) if d.seq <= last || !d.matches(&filter) => continue,
                Ok(Ok(d)) => {
                    last = d.seq;
                    event(&d)
                }
                Ok(Err(broadcast::error::RecvError::Lagged(n))) => {
                    Bytes::from(format!("event: lagged\ndata: {n}\n\n"))
                }
                Ok(Err(broadcast::error::RecvError::Closed)) => return,
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(SseBody(rx).boxed());
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
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
