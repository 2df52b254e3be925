//! Slowing admin-token guessing, per source address, without ever refusing the right token.
//!
//! The bearer API and the console's sign-in form share one [`Throttle`]: a bounded table of
//! recent failed authentications by source. After [`FREE`] failures a source's next attempts
//! wait before their token is checked (doubling from [`FIRST_DELAY`] up to [`MAX_DELAY`]), and
//! a success or [`FORGET`] without failures clears its entry. Nothing is ever refused for
//! having failed before: admin tokens are long random strings, so a lockout would protect
//! nothing and hand anyone who can reach the port a way to keep the operators out.
//!
//! Every failure is also an `admin_auth_failed` audit event and a metric ([`failed`]), with
//! the source, method, path and reason, never the presented token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;

use super::Refused;
use crate::audit::Sink;

/// Failures a source may make before its attempts are slowed (typos happen).
const FREE: u32 = 3;
/// The wait of the first slowed attempt; each further failure doubles it.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest wait: a few seconds per guess, never a refusal.
const MAX_DELAY: Duration = Duration::from_secs(3);
/// A source with no failure for this long is forgotten.
const FORGET: Duration = Duration::from_secs(10 * 60);
/// Sources remembered at most; past it the one whose last failure is oldest makes room, so
/// an attacker with many addresses costs bounded memory (and only sheds its own entries).
const MAX_SOURCES: usize = 4096;

/// Recent failed admin authentications by source.
#[derive(Debug, Default)]
pub(crate) struct Throttle {
    sources: Mutex<HashMap<IpAddr, Failures>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Where an admin authentication was attempted (a metric label and an audit field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `Authorization: Bearer` on an admin endpoint.
    Api,
    /// The console's sign-in form.
    Console,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Console => "console",
        }
    }
}

impl Throttle {
    /// How long an attempt from `source` waits before its token is checked.
    pub(crate) fn delay(&self, source: IpAddr) -> Duration {
        self.delay_at(source, Instant::now())
    }

    fn delay_at(&self, source: IpAddr, now: Instant) -> Duration {
        let t = self.lock();
        match t.get(&key(source)) {
            Some(f) if now.duration_since(f.last) < FORGET && f.count >= FREE => {
                let doublings = (f.count - FREE).min(16);
                FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
            }
            _ => Duration::ZERO,
        }
    }

    /// Waits as long as [`Throttle::delay`] says for `source`.
    pub(crate) async fn wait(&self, source: IpAddr) {
        let delay = self.delay(source);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Counts a failed authentication from `source`.
    fn failed_at(&self, source: IpAddr, now: Instant) {
        let mut t = self.lock();
        let source = key(source);
        if !t.contains_key(&source) && t.len() >= MAX_SOURCES {
            t.retain(|_, f| now.duration_since(f.last) < FORGET);
            if t.len() >= MAX_SOURCES {
                if let Some(oldest) = t.iter().min_by_key(|(_, f)| f.last).map(|(k, _)| *k) {
                    t.remove(&oldest);
                }
            }
        }
        let f = t.entry(source).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(f.last) >= FORGET {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    /// A source that presented the right token is not slowed any more.
    pub(crate) fn succeeded(&self, source: IpAddr) {
        self.lock().remove(&key(source));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The table's key for an address: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64, the
/// block one host is usually given (one host must not become 2^64 sources).
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// One failed admin authentication: counted against `source` in `throttle`, logged, audited
/// as `admin_auth_failed` and counted in `entitygate_admin_auth_failures_total`. The presented
/// token is never written anywhere.
pub(crate) fn failed(
    audit: &Sink,
    throttle: &Throttle,
    source: IpAddr,
    via: Via,
    method: &http::Method,
    path: &str,
    reason: Refused,
) {
    // With no admin token configured there is nothing to guess: only the refusal is said.
    if reason == Refused::Disabled {
        tracing::warn!(%method, path, reason = reason.message(), "admin request refused");
        return;
    }
    throttle.failed_at(source, Instant::now());
    tracing::warn!(%source, via = via.as_str(), %method, path, reason = reason.slug(),
        "admin authentication failed");
    crate::metrics::admin_auth_failed(via.as_str(), reason.slug());
    audit.record(
        "admin_auth_failed",
        json!({
            "source": source.to_string(),
            "via": via.as_str(),
            "method": method.as_str(),
            "path": path,
            "reason": reason.slug(),
        }),
    );
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn failures_slow_a_source_more_and_more_up_to_the_cap() {
        let t = Throttle::default();
        let now = Instant::now();
        let mut delays = Vec::new();
        for _ in 0..12 {
            delays.push(t.delay_at(A, now));
            t.failed_at(A, now);
        }
        assert!(delays[..FREE as usize].iter().all(Duration::is_zero));
        assert_eq!(delays[FREE as usize], FIRST_DELAY);
        assert_eq!(delays[FREE as usize + 1], FIRST_DELAY * 2);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]), "{delays:?}");
        assert_eq!(delays[11], MAX_DELAY);
        // Thousands more failures: still a delay, never more than the cap.
        for _ in 0..10_000 {
            t.failed_at(A, now);
        }
        assert_eq!(t.delay_at(A, now), MAX_DELAY);
    }

    #[test]
    fn another_source_is_not_slowed() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..50 {
            t.failed_at(A, now);
        }
        assert_eq!(t.delay_at(A, now), MAX_DELAY);
        assert_eq!(t.delay_at(B, now), Duration::ZERO);
    }

    #[test]
    fn a_success_or_a_quiet_window_forgets_a_source() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed_at(A, now);
        }
        assert!(!t.delay_at(A, now + FORGET / 2).is_zero());
        assert_eq!(t.delay_at(A, now + FORGET), Duration::ZERO);
        // Failing again after the window starts from nothing, not from the old count.
        t.failed_at(A, now + FORGET);
        assert_eq!(t.delay_at(A, now + FORGET), Duration::ZERO);
        for _ in 0..10 {
            t.failed_at(B, now);
        }
        t.succeeded(B);
        assert_eq!(t.delay_at(B, now), Duration::ZERO);
    }

    #[test]
    fn the_table_is_bounded() {
        let t = Throttle::default();
        let now = Instant::now();
        for _ in 0..10 {
            t.failed_at(A, now);
        }
        for i in 0..(MAX_SOURCES as u32 + 10) {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            t.failed_at(ip, now + Duration::from_millis(1));
        }
        assert_eq!(t.lock().len(), MAX_SOURCES);
        // The oldest entry made room first.
        assert_eq!(t.delay_at(A, now), Duration::ZERO);
    }

    #[test]
    fn one_ipv6_host_is_one_source() {
        let t = Throttle::default();
        let now = Instant::now();
        for i in 0..10u16 {
            t.failed_at(
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, i, i, i)),
                now,
            );
        }
        let sibling = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 0xffff));
        assert!(!t.delay_at(sibling, now).is_zero());
        let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
        assert_eq!(t.delay_at(other, now), Duration::ZERO);
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
        assert_eq!(key(mapped), A);
    }
}
