//! Per-subject rate limiting: one token bucket per subject in a concurrent map.
//!
//! Buckets only ever slow a subject down; they never decide access. Each replica keeps its
//! own buckets, so a fleet of N replicas allows up to N times the configured rate (documented).

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
    fn tokens_refill_over_time() {
        let l = RateLimiter::new(100.0, 1);
        let s: Arc<str> = Arc::from("alice");
        assert!(l.check(&s).is_ok());
        assert!(l.check(&s).is_err());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(l.check(&s).is_ok());
    }
}
