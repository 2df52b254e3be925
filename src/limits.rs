//! Per-subject limits: a token bucket per subject (rate), and a count of each subject's
//! requests in flight (concurrency), both in concurrent maps.
//!
//! They only ever slow a subject down; they never decide access. Each replica keeps its own:
//! with `[shared]` the rate is decided on Redis for the whole fleet ([`global`]) and
//! this limiter is the fallback while Redis is away; the concurrency cap stays per replica. The concurrency cap exists so that one user whose requests are slow (a body
//! sent byte by byte, a heavy body to parse, a slow tool) cannot hold every in-flight slot of
//! the gateway: past `[limits] max_in_flight_per_subject`, that user alone is told 429 with
//! `Retry-After`, while everyone else is still served.

pub mod global;

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;

use crate::error::Error;

/// Buckets kept before idle (full) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

/// Token buckets keyed by subject.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<Arc<str>, Bucket>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

// === impl RateLimiter ===

impl RateLimiter {
    /// `rate` tokens per second, up to `burst`; a rate of 0 disables limiting.
    pub fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: DashMap::new(),
        }
    }

    /// Whether this limiter enforces `rate` and `burst` (a reload keeps it, buckets and all).
    pub fn same_settings(&self, rate: f64, burst: u32) -> bool {
        self.rate.to_bits() == rate.to_bits()
            && self.burst.to_bits() == f64::from(burst.max(1)).to_bits()
    }

    /// Requests per second allowed (0: no limit).
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Requests allowed at once after a quiet period.
    pub fn burst(&self) -> u32 {
        self.burst as u32
    }

    /// Takes one token for `subject`.
    ///
    /// # Errors
    /// [`Error::RateLimited`] with the whole seconds until a token is available.
    pub fn check(&self, subject: &Arc<str>) -> Result<(), Error> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        if self.buckets.len() >= MAX_BUCKETS {
            self.sweep(now);
        }
        let mut b = self.buckets.entry(subject.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / self.rate).ceil().max(1.0);
        Err(Error::RateLimited(wait as u64))
    }

    /// Drops buckets that have refilled completely: they hold no information.
    fn sweep(&self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
    }
}

/// Requests in flight per subject. Entries are removed when their count returns to zero, so
/// the map holds only subjects with requests in progress.
#[derive(Debug, Default)]
pub struct SubjectInFlight {
    counts: DashMap<Arc<str>, usize>,
}

/// One request of a subject in flight; dropping it ends the request.
#[derive(Debug)]
pub struct SubjectPermit {
    owner: Arc<SubjectInFlight>,
    subject: Arc<str>,
}

// === impl SubjectInFlight ===

impl SubjectInFlight {
    /// Counts one more request of `subject`, unless it already has `cap` in flight.
    ///
    /// # Errors
    /// [`Error::SubjectBusy`] at the cap.
    pub fn acquire(
        self: &Arc<Self>,
        subject: &Arc<str>,
        cap: usize,
    ) -> Result<SubjectPermit, Error> {
        let mut n = self.counts.entry(subject.clone()).or_insert(0);
        if *n >= cap {
            return Err(Error::SubjectBusy);
        }
        *n += 1;
        drop(n);
        Ok(SubjectPermit {
            owner: self.clone(),
            subject: subject.clone(),
        })
    }

    /// Requests of `subject` in flight now.
    pub fn current(&self, subject: &str) -> usize {
        self.counts.get(subject).map_or(0, |n| *n)
    }
}

impl Drop for SubjectPermit {
    fn drop(&mut self) {
        // Decrement, and drop the entry at zero (atomically with respect to `acquire`).
        self.owner.counts.remove_if_mut(&self.subject, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_retry_after() {
        let l = RateLimiter::new(1.0, 3);
        let s: Arc<str> = Arc::from("alice");
        for _ in 0..3 {
            assert_eq!(l.check(&s), Ok(()));
        }
        assert_eq!(l.check(&s), Err(Error::RateLimited(1)));
        // Another subject has its own bucket.
        assert_eq!(l.check(&Arc::from("bob")), Ok(()));
    }

    #[test]
    fn zero_rate_means_no_limit() {
        let l = RateLimiter::new(0.0, 1);
        let s: Arc<str> = Arc::from("alice");
        for _ in 0..1000 {
            assert_eq!(l.check(&s), Ok(()));
        }
    }

    #[test]
    fn in_flight_is_capped_per_subject_and_released_on_drop() {
        let f = Arc::new(SubjectInFlight::default());
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        let p1 = f.acquire(&a, 2).unwrap();
        let p2 = f.acquire(&a, 2).unwrap();
        assert!(matches!(f.acquire(&a, 2), Err(Error::SubjectBusy)));
        // Another subject is not affected.
        let q = f.acquire(&b, 2).unwrap();
        drop(p1);
        let p3 = f.acquire(&a, 2).unwrap();
        drop((p2, p3, q));
        assert_eq!(f.current("alice"), 0);
        assert!(f.counts.is_empty(), "idle subjects leave no entry");
    }

    #[test]
    fn tokens_refill_over_time() {
        let l = RateLimiter::new(100.0, 1);
        let s: Arc<str> = Arc::from("alice");
        assert!(l.check(&s).is_ok());
        assert!(l.check(&s).is_err());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(l.check(&s).is_ok());
    }
}
