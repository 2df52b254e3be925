//! Console sessions: a random id in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui`,
//! mapped in memory to the admin token it was opened with and a CSRF token for its forms.
//!
//! The admin token itself never leaves the server after login (no token in URLs, storage or
//! cookies); it is checked again on every request, so rotating the admin token (or emptying
//! its source) ends every session at once. Sessions also end after an idle period, at a hard
//! maximum age, and at logout. The table is bounded: the least recently seen session makes
//! room for a new login.
//!
//! Each session owns a close signal ([`Sessions::closed`]): whatever removes it from the
//! table (logout, a rotated token, expiry once noticed, eviction) ends the live streams
//! opened with it at once.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "eg_console";
/// Sessions kept at most.
const MAX_SESSIONS: usize = 64;
/// A session ends this long after login, however active.
const MAX_AGE: Duration = Duration::from_secs(12 * 3600);

/// One signed-in browser.
#[derive(Clone)]
pub(crate) struct Session {
    /// The CSRF token of this session's forms.
    pub(crate) csrf: String,
    /// The admin token presented at login, checked against the current one on every request.
    pub(crate) token: String,
    created: Instant,
    seen: Instant,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").finish_non_exhaustive()
    }
}

/// The session table.
#[derive(Debug)]
pub(crate) struct Sessions {
    idle: Duration,
    table: Mutex<HashMap<String, Slot>>,
}

/// A session in the table, with its close signal.
#[derive(Debug)]
struct Slot {
    session: Session,
    /// Never sent on: dropped with the slot, which every [`watch::Receiver`] from
    /// [`Sessions::closed`] sees as its end.
    closed: watch::Sender<()>,
}

/// 244 random bits as 64 hex digits: two v4 UUIDs from uuid's `fast-rng` generator (rand's
/// thread-local ChaCha CSPRNG, seeded from the operating system).
pub(crate) fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// Equality of two secrets that does not stop at the first differing byte.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

impl Sessions {
    pub(crate) fn new(idle: Duration) -> Self {
        Self {
            idle,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Opens a session for a browser that presented `token`; returns its id.
    pub(crate) fn open(&self, token: &str) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        t.retain(|_, s| !expired(&s.session, now, self.idle));
        if t.len() >= MAX_SESSIONS {
            if let Some(oldest) = t
                .iter()
                .min_by_key(|(_, s)| s.session.seen)
                .map(|(k, _)| k.clone())
            {
                t.remove(&oldest);
            }
        }
        t.insert(
            id.clone(),
            Slot {
                session: Session {
                    csrf: random_token(),
                    token: token.to_owned(),
                    created: now,
                    seen: now,
                },
                closed: watch::Sender::new(()),
            },
        );
        id
    }

    /// The live session `id` names, marked as seen (a request from its browser).
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        self.live(id, true)
    }

    /// The live session `id` names, *not* marked as seen: an open live stream re-checks its
    /// session with this, and must not keep it from expiring when idle.
    pub(crate) fn peek(&self, id: &str) -> Option<Session> {
        self.live(id, false)
    }

    fn live(&self, id: &str, seen: bool) -> Option<Session> {
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let s = t.get_mut(id)?;
        if expired(&s.session, now, self.idle) {
            t.remove(id);
            return None;
        }
        if seen {
            s.session.seen = now;
        }
        Some(s.session.clone())
    }

    /// The close signal of session `id`: `changed()` fails once the session is gone from
    /// the table (at once if it already is).
    pub(crate) fn closed(&self, id: &str) -> watch::Receiver<()> {
        let t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match t.get(id) {
            Some(s) => s.closed.subscribe(),
            // A receiver whose sender is gone: closed from the start.
            None => watch::channel(()).1,
        }
    }

    /// Ends session `id`.
    pub(crate) fn close(&self, id: &str) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

fn expired(s: &Session, now: Instant, idle: Duration) -> bool {
    now.duration_since(s.seen) >= idle || now.duration_since(s.created) >= MAX_AGE
}

/// The session id in a `Cookie` header, if any.
pub(crate) fn cookie(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` value of a new session.
pub(crate) fn set_cookie(id: &str, idle: Duration) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}",
        idle.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_end_at_logout() {
        let s = Sessions::new(Duration::from_millis(50));
        let id = s.open("t");
        assert_eq!(id.len(), 64);
        assert!(s
            .get(&id)
            .is_some_and(|x| x.token == "t" && x.csrf.len() == 64));
        std::thread::sleep(Duration::from_millis(60));
        assert!(s.get(&id).is_none());
        let id = s.open("t");
        s.close(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn the_table_is_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let first = s.open("t");
        for _ in 0..MAX_SESSIONS {
            s.open("t");
        }
        assert!(s.get(&first).is_none());
        assert_eq!(
            s.table.lock().unwrap_or_else(PoisonError::into_inner).len(),
            MAX_SESSIONS
        );
    }

    #[tokio::test]
    async fn closing_a_session_signals_its_streams_and_peeking_does_not_keep_it() {
        let s = Sessions::new(Duration::from_secs(60));
        let id = s.open("t");
        let mut a = s.closed(&id);
        let mut b = s.closed(&id);
        assert!(a.has_changed().is_ok(), "open while the session is");
        s.close(&id);
        assert!(a.changed().await.is_err() && b.changed().await.is_err());
        assert!(s.closed("no-such-session").changed().await.is_err());
        // Peeking (what a live stream does) leaves the session's last use where it was, so
        // an open stream does not keep an idle session alive; a request moves it.
        let id = s.open("t");
        let seen = |s: &Sessions| {
            let t = s.table.lock().unwrap_or_else(PoisonError::into_inner);
            t.get(&id).map(|slot| slot.session.seen)
        };
        let opened = seen(&s);
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.peek(&id).is_some());
        assert_eq!(seen(&s), opened);
        assert!(s.get(&id).is_some());
        assert!(seen(&s) > opened);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_set_strictly() {
        let mut h = http::HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=b; eg_console=abc; c=d"),
        );
        assert_eq!(cookie(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc", Duration::from_secs(5));
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/ui"));
        assert!(same_secret("x", "x") && !same_secret("x", "y"));
    }
}
