//! The global per-subject rate limit, on the fleet's Redis ([`crate::shared`], which knows
//! nothing of rate limits: this module brings its script and asks it to run it): GCRA (the generic cell rate algorithm) in one Lua
//! script, so each decision is one atomic round trip with no read-modify-write race between
//! replicas. Redis keeps one number per subject (its theoretical arrival time), expiring
//! when the subject's bucket would be full again.
//!
//! When Redis does not answer within `timeout_ms` (or is marked down), the replica's own
//! token bucket decides: the limit becomes per replica (as in single-node mode), never none.

use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};

use crate::error::Error;
use crate::shared::Cluster;

use super::RateLimiter;

/// `KEYS[1]`: the subject's key. `ARGV[1]`: emission interval (µs per request), `ARGV[2]`:
/// burst tolerance (interval × burst, µs). Returns `{1, 0}` when allowed, `{0, µs to wait}`.
/// Time is the server's (`TIME`), so replicas' clocks never matter.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0}
";

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(GCRA));

/// Takes one request of `subject` against the limit: globally on Redis when `cluster` is
/// given and up, else on `local`.
///
/// # Errors
/// [`Error::RateLimited`] with the whole seconds until the next request is allowed.
pub async fn check(
    cluster: Option<&Cluster>,
    local: &RateLimiter,
    subject: &Arc<str>,
) -> Result<(), Error> {
    let Some(c) = cluster else {
        return local.check(subject);
    };
    if local.rate() <= 0.0 {
        return Ok(());
    }
    if c.is_up() {
        let interval = (1_000_000.0 / local.rate()).round().max(1.0) as u64;
        let tolerance = interval.saturating_mul(u64::from(local.burst()));
        let key = c.key(&["rl", subject]);
        let mut conn = c.conn();
        let mut call = SCRIPT.key(key);
        call.arg(interval).arg(tolerance);
        if let Some((allowed, wait_us)) = c
            .run("rate_limit", call.invoke_async::<(i64, i64)>(&mut conn))
            .await
        {
            if allowed == 1 {
                return Ok(());
            }
            let secs = (wait_us.max(0) as u64).div_ceil(1_000_000).max(1);
            return Err(Error::RateLimited(secs));
        }
    }
    c.fallbacks.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("entitygate_shared_fallback_total", "what" => "rate_limit").increment(1);
    local.check(subject)
}
