//! Single-flight of cold status lookups across replicas.
//!
//! Each replica's cache already coalesces a burst for one key into one lookup; this makes the
//! burst spread over every replica one lookup. The first replica takes a short lock in Redis
//! and asks Composio; the answer (or "the lookup failed") is left in Redis for
//! `status_share_ms`, where the other replicas, polling every few milliseconds, pick it up.
//! Every replica then caches it locally with its own TTL, so a warm hit never leaves the
//! process.
//!
//! Keys carry the global and the subject's epoch (`…|<global>.<subject>`), which the bus bumps
//! with every invalidation it publishes: an answer handed over before an expiry webhook is
//! never read after it. When Redis is down or slow, or the leader does not answer in time,
//! a replica asks Composio itself, exactly as in single-node mode.

use std::future::Future;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

use super::Cluster;
use crate::error::Error;

/// How long the leader's lock lives (a leader that dies mid-lookup holds the others no longer).
const LOCK_MS: u64 = 5_000;
/// How often a waiting replica looks for the leader's answer.
const POLL: Duration = Duration::from_millis(5);
/// How long a failed lookup is remembered for the others (they refuse with 503 too).
const ERROR_MS: u64 = 1_000;

/// `KEYS[1]`: global epoch, `KEYS[2]`: subject epoch. `ARGV[1]`: the answer key without its
/// epoch suffix, `ARGV[2]`: the lock key without it, `ARGV[3]`: this replica's token,
/// `ARGV[4]`: lock lifetime (ms). Returns `{1, tag, answer}` (an answer is there),
/// `{2, tag, ''}` (this replica leads), `{3, tag, ''}` (another replica leads).
const ACQUIRE: &str = r"
local tag = (redis.call('GET', KEYS[1]) or '0') .. '.' .. (redis.call('GET', KEYS[2]) or '0')
local v = redis.call('GET', ARGV[1] .. tag)
if v then return {1, tag, v} end
if redis.call('SET', ARGV[2] .. tag, ARGV[3], 'NX', 'PX', ARGV[4]) then return {2, tag, ''} end
return {3, tag, ''}
";

/// `KEYS[1]`: the lock, `KEYS[2]`: the answer. `ARGV[1]`: answer, `ARGV[2]`: its lifetime
/// (ms), `ARGV[3]`: token. Leaves the answer and releases the lock if still held.
const RELEASE: &str = r"
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[3] then redis.call('DEL', KEYS[1]) end
return 1
";

static ACQUIRE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACQUIRE));
static RELEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

/// What is handed over: the answer, or that the lookup failed.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum Handover<T> {
    Ok { ok: T },
    Failed { failed: bool },
}

/// Looks `subject`'s `toolkit` status up once for the whole fleet: returns the answer another
/// replica left, or runs `fetch` as the leader, or (Redis away, leader gone) runs it alone.
///
/// # Errors
/// What `fetch` returned, here or on the leading replica
/// ([`Error::ConnectionStatusUnavailable`] when the leader's lookup failed).
pub async fn status<T, F, Fut>(
    c: &Cluster,
    subject: &str,
    toolkit: &str,
    fetch: F,
) -> Result<T, Error>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let answer_base = format!("{}|{toolkit}|", c.key(&["status", subject]));
    let lock_base = format!("{}|{toolkit}|", c.key(&["lock", subject]));
    let epochs = [c.key(&["epoch"]), c.key(&["epoch", subject])];
    let token = uuid::Uuid::new_v4().simple().to_string();
    let deadline = Instant::now() + Duration::from_millis(LOCK_MS);
    loop {
        if !c.is_up() {
            return solo(fetch).await;
        }
        let mut conn = c.conn();
        let mut call = ACQUIRE_SCRIPT.key(&epochs[0]);
        call.key(&epochs[1])
            .arg(&answer_base)
            .arg(&lock_base)
            .arg(&token)
            .arg(LOCK_MS);
        let Some((state, tag, value)) = c
            .run(
                "status_acquire",
                call.invoke_async::<(i64, String, Vec<u8>)>(&mut conn),
            )
            .await
        else {
            return solo(fetch).await;
        };
        match state {
            1 => match serde_json::from_slice::<Handover<T>>(&value) {
                Ok(Handover::Ok { ok }) => {
                    outcome("shared");
                    return Ok(ok);
                }
                Ok(Handover::Failed { .. }) => {
                    outcome("shared_failure");
                    return Err(Error::ConnectionStatusUnavailable);
                }
                Err(_) => return solo(fetch).await,
            },
            2 => {
                outcome("led");
                let result = fetch().await;
                let (handover, ttl) = match &result {
                    Ok(v) => (
                        serde_json::to_vec(&Handover::Ok { ok: v }),
                        c.cfg.status_share_ms,
                    ),
                    Err(_) => (
                        serde_json::to_vec(&Handover::<T>::Failed { failed: true }),
                        ERROR_MS.min(c.cfg.status_share_ms),
                    ),
                };
                if let Ok(handover) = handover {
                    let mut call = RELEASE_SCRIPT.key(format!("{lock_base}{tag}"));
                    call.key(format!("{answer_base}{tag}"))
                        .arg(handover)
                        .arg(ttl)
                        .arg(&token);
                    let _ = c
                        .run("status_release", call.invoke_async::<i64>(&mut conn))
                        .await;
                }
                return result;
            }
            _ if Instant::now() >= deadline => return solo(fetch).await,
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

async fn solo<T, F, Fut>(fetch: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    outcome("alone");
    fetch().await
}

fn outcome(how: &'static str) {
    metrics::counter!("entitygate_shared_status_lookups_total", "how" => how).increment(1);
}
