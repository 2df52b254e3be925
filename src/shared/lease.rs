//! The audit job's lease, and the dedup the job and the expiry webhook keep in Redis.
//!
//! One replica holds `{prefix}lease:audit_job` (its id, with a TTL of `lease_secs`) and renews
//! it every third of that; only the holder runs the schedule. When it dies, the key expires
//! and the next replica to try takes over within `lease_secs`. A holder that cannot renew
//! (Redis away, or the key is another's) stops its pass at once.
//!
//! Notification dedup mirrors the embedded store ([`crate::expiry::dedup`]) in one hash,
//! `{prefix}notified` (`user\0account` → milliseconds), so every replica, and every restart,
//! sees the same record; webhook ids are `SET NX` keys that expire after the replay window.

use std::collections::HashSet;
use std::sync::LazyLock;
use std::time::Duration;

use redis::AsyncCommands as _;

use super::Cluster;

const LEASE: &str = "audit_job";

/// `KEYS[1]`: the lease. `ARGV[1]`: this replica's id, `ARGV[2]`: TTL (ms). Takes a free lease
/// or renews one already held; returns 1 when this replica holds it.
const TAKE_OR_RENEW: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Releases the lease if this replica holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

static TAKE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(TAKE_OR_RENEW));
static GIVE_BACK: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(RELEASE));

/// A failure of the state store: the embedded one ([`crate::expiry::dedup`]) or this one.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(String);

impl StoreError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// Whether a notification record (`user\0account`, notified at `t` ms) is dropped by a
/// prune: past the renotify window, or recorded before this scan for a connection the scan
/// no longer found. One rule for the embedded store and the Redis one.
pub(crate) fn prunable(
    key: &str,
    t: u64,
    present: &HashSet<(String, String)>,
    scan_started_ms: u64,
    now_ms: u64,
    window_ms: u64,
) -> bool {
    let expired = now_ms.saturating_sub(t) >= window_ms;
    let gone = t < scan_started_ms
        && key
            .split_once('\0')
            .is_some_and(|(u, a)| !present.contains(&(u.to_owned(), a.to_owned())));
    expired || gone
}

fn err(e: &redis::RedisError) -> StoreError {
    StoreError::new(format!("shared state (Redis): {e}"))
}

fn key(user: &str, account: &str) -> String {
    format!("{user}\0{account}")
}

// === impl Cluster ===

impl Cluster {
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.lease_secs)
    }

    /// Takes or renews the audit job's lease; `false` when another replica holds it or Redis
    /// does not answer.
    pub async fn take_lease(&self) -> bool {
        let mut conn = self.conn();
        let mut call = TAKE.key(self.key(&["lease", LEASE]));
        call.arg(&self.id).arg(self.lease_ttl().as_millis() as u64);
        let limit = Duration::from_millis(self.cfg.connect_timeout_ms.max(self.cfg.timeout_ms));
        let held = matches!(
            tokio::time::timeout(limit, call.invoke_async::<i64>(&mut conn)).await,
            Ok(Ok(1))
        );
        self.set_lease_held(held);
        held
    }

    /// Gives the lease back (a replica shutting down lets the next take over at once).
    pub async fn release_lease(&self) {
        let mut conn = self.conn();
        let mut call = GIVE_BACK.key(self.key(&["lease", LEASE]));
        call.arg(&self.id);
        let _ = tokio::time::timeout(self.timeout(), call.invoke_async::<i64>(&mut conn)).await;
        self.set_lease_held(false);
    }

    /// Resolves when this replica no longer holds the lease (renewing it meanwhile).
    pub async fn lease_lost(&self) {
        let every = self.lease_ttl() / 3;
        loop {
            tokio::time::sleep(every).await;
            if !self.take_lease().await {
                tracing::warn!("audit job lease lost; this replica stops running the schedule");
                return;
            }
        }
    }

    /// Which of `accounts` of `user` are due for a notification (not notified within
    /// `window_ms`).
    ///
    /// # Errors
    /// When Redis cannot be read: nobody is notified (the next pass retries).
    pub async fn due(
        &self,
        user: &str,
        accounts: &[String],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        if accounts.is_empty() {
            return Ok(Vec::new());
        }
        let fields: Vec<String> = accounts.iter().map(|a| key(user, a)).collect();
        let mut conn = self.conn();
        let last: Vec<Option<u64>> = redis::cmd("HMGET")
            .arg(self.key(&["notified"]))
            .arg(&fields)
            .query_async(&mut conn)
            .await
            .map_err(|e| err(&e))?;
        Ok(accounts
            .iter()
            .zip(last)
            .filter(|(_, t)| t.is_none_or(|t| now_ms.saturating_sub(t) >= window_ms))
            .map(|(a, _)| a.clone())
            .collect())
    }

    /// Records that `user` was notified about `accounts` at `now_ms`.
    ///
    /// # Errors
    /// When Redis cannot be written.
    pub async fn mark_notified(
        &self,
        user: &str,
        accounts: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if accounts.is_empty() {
            return Ok(());
        }
        let items: Vec<(String, u64)> = accounts.iter().map(|a| (key(user, a), now_ms)).collect();
        let mut conn = self.conn();
        conn.hset_multiple::<_, _, _, ()>(self.key(&["notified"]), &items)
            .await
            .map_err(|e| err(&e))
    }

    /// The embedded store's prune, on the shared record: forgets notifications older than
    /// `window_ms`, and those recorded before the scan for connections it no longer found.
    ///
    /// # Errors
    /// When Redis cannot be read or written.
    pub async fn prune(
        &self,
        present: &HashSet<(String, String)>,
        scan_started_ms: u64,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let hash = self.key(&["notified"]);
        let all: Vec<(String, u64)> = conn.hgetall(&hash).await.map_err(|e| err(&e))?;
        let gone: Vec<String> = all
            .into_iter()
            .filter(|(k, t)| prunable(k, *t, present, scan_started_ms, now_ms, window_ms))
            .map(|(k, _)| k)
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        conn.hdel::<_, _, ()>(&hash, &gone)
            .await
            .map_err(|e| err(&e))?;
        Ok(gone.len())
    }

    /// Records a Composio webhook id for `keep_secs`; `false` when another replica (or this
    /// one) already took it (a replay).
    ///
    /// # Errors
    /// When Redis cannot be written (the delivery is refused and Composio retries).
    pub async fn first_delivery(&self, id: &str, keep_secs: u64) -> Result<bool, StoreError> {
        let mut conn = self.conn();
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::EX(keep_secs.max(1)));
        let set: Option<String> = conn
            .set_options(self.key(&["webhook", id]), 1, opts)
            .await
            .map_err(|e| err(&e))?;
        Ok(set.is_some())
    }

    /// Forgets a webhook id whose handling failed, so Composio's retry is accepted.
    ///
    /// # Errors
    /// When Redis cannot be written.
    pub async fn forget_delivery(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn();
        conn.del::<_, ()>(self.key(&["webhook", id]))
            .await
            .map_err(|e| err(&e))
    }
}
