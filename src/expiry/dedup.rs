//! The audit job's memory, in one small embedded [`redb`] file that survives restarts:
//! - which (user, connected account) pairs were notified, and when, so a user is not told
//!   twice about the same connection within `renotify_secs`;
//! - which Composio webhook ids were already accepted, so a replayed delivery is acted on
//!   only once.
//!
//! redb allows one process per file (a second open fails with "already open"): `serve` holds
//! the file for its lifetime, so a one-shot `entitygate audit` beside a running gateway needs
//! its own `state_path`. Every operation is a short blocking transaction; async callers go
//! through [`StateStore::run`], which moves it to the blocking pool.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

/// `"{user_id}\0{connected_account_id}"` -> unix milliseconds of the last successful
/// notification (milliseconds, so that a scan can tell entries older than itself apart even
/// within one second).
const NOTIFIED: TableDefinition<'_, &str, u64> = TableDefinition::new("notified");
/// Composio `webhook-id` -> unix seconds when it was first accepted.
const SEEN_WEBHOOKS: TableDefinition<'_, &str, u64> = TableDefinition::new("seen_webhooks");

use crate::shared::lease::prunable;
/// The dedup rules and their error are shared with the Redis mirror, which lives below this
/// module ([`crate::shared::lease`]); the old path keeps working.
pub use crate::shared::lease::StoreError;

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(e.to_string())
}

/// The key of one notified connection.
fn key(user_id: &str, account_id: &str) -> String {
    format!("{user_id}\0{account_id}")
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore").finish_non_exhaustive()
    }
}

impl StateStore {
    /// Opens (creating if needed) the store at `path`.
    ///
    /// # Errors
    /// When the file cannot be created or read, is not a redb file, or another process holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::new(format!(
                "{} is in use by another process (a running gateway?); give this run its own \
                 audit_job.state_path",
                path.display()
            )),
            other => StoreError::new(format!("{}: {other}", path.display())),
        })?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(NOTIFIED).map_err(err)?;
        txn.open_table(SEEN_WEBHOOKS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs a blocking store operation on the blocking pool.
    ///
    /// # Errors
    /// The operation's error, or a failure of the blocking task itself.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&StateStore) -> Result<T, StoreError> + Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(err)?
    }

    /// Of `account_ids` (all `user_id`'s), those not notified in the `window_ms` before
    /// `now_ms`.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub fn due(
        &self,
        user_id: &str,
        account_ids: &[String],
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(NOTIFIED).map_err(err)?;
        let mut due = Vec::new();
        for id in account_ids {
            let last = table
                .get(key(user_id, id).as_str())
                .map_err(err)?
                .map(|v| v.value());
            if last.is_none_or(|t| now_ms.saturating_sub(t) >= window_ms) {
                due.push(id.clone());
            }
        }
        Ok(due)
    }

    /// Records that `user_id` was notified about `account_ids` at `now_ms`.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn mark_notified(
        &self,
        user_id: &str,
        account_ids: &[String],
        now_ms: u64,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(NOTIFIED).map_err(err)?;
            for id in account_ids {
                table
                    .insert(key(user_id, id).as_str(), now_ms)
                    .map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }

    /// After a complete scan that started at `scan_started_ms`: forgets notifications older
    /// than `window_ms`, and those recorded before the scan for connections the scan no longer
    /// found (reconnected or deleted), so a connection that breaks again is reported again.
    /// Returns how many entries were removed.
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn prune(
        &self,
        present: &HashSet<(String, String)>,
        scan_started_ms: u64,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut removed = 0;
        {
            let mut table = txn.open_table(NOTIFIED).map_err(err)?;
            table
                .retain(|k, t| {
                    let keep = !prunable(k, t, present, scan_started_ms, now_ms, window_ms);
                    removed += usize::from(!keep);
                    keep
                })
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(removed)
    }

    /// Records a Composio webhook id; `false` when it was already recorded (a replay). Ids
    /// older than `keep_secs` are forgotten on the way (a delivery that old fails the
    /// timestamp check anyway).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn first_delivery(&self, id: &str, now: u64, keep_secs: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let fresh = {
            let mut table = txn.open_table(SEEN_WEBHOOKS).map_err(err)?;
            if table.get(id).map_err(err)?.is_some() {
                false
            } else {
                table.insert(id, now).map_err(err)?;
                table
                    .retain(|_, t| now.saturating_sub(t) <= keep_secs)
                    .map_err(err)?;
                true
            }
        };
        if fresh {
            txn.commit().map_err(err)?;
        } else {
            txn.abort().map_err(err)?;
        }
        Ok(fresh)
    }

    /// Forgets a webhook id (its handling failed before anything was done, so a retry by
    /// Composio must be accepted).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub fn forget_delivery(&self, id: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(SEEN_WEBHOOKS).map_err(err)?;
            table.remove(id).map_err(err)?;
        }
        txn.commit().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renotify_window_and_restart() {
        let dir = std::env::temp_dir().join(format!("eg-dedup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.redb");
        {
            let s = StateStore::open(&path).unwrap();
            assert_eq!(
                s.due("u1", &ids(&["a", "b"]), 1000, 60).unwrap(),
                ids(&["a", "b"])
            );
            s.mark_notified("u1", &ids(&["a"]), 1000).unwrap();
            assert_eq!(
                s.due("u1", &ids(&["a", "b"]), 1030, 60).unwrap(),
                ids(&["b"])
            );
            // Another user with the same account id is independent.
            assert_eq!(s.due("u2", &ids(&["a"]), 1030, 60).unwrap(), ids(&["a"]));
        }
        let s = StateStore::open(&path).unwrap();
        assert_eq!(
            s.due("u1", &ids(&["a"]), 1030, 60).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(s.due("u1", &ids(&["a"]), 1060, 60).unwrap(), ids(&["a"]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn prune_forgets_recovered_and_old() {
        let dir = std::env::temp_dir().join(format!("eg-dedup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = StateStore::open(&dir.join("s.redb")).unwrap();
        s.mark_notified("u", &ids(&["kept", "gone"]), 100).unwrap();
        s.mark_notified("u", &ids(&["new"]), 205).unwrap();
        let present: HashSet<_> = [("u".to_owned(), "kept".to_owned())].into();
        // "new" was recorded after the scan started: kept although absent.
        assert_eq!(s.prune(&present, 200, 210, 1000).unwrap(), 1);
        assert_eq!(
            s.due("u", &ids(&["kept", "gone", "new"]), 210, 1000)
                .unwrap(),
            ids(&["gone"])
        );
        assert_eq!(s.prune(&present, 2000, 2000, 1000).unwrap(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn webhook_ids_once() {
        let dir = std::env::temp_dir().join(format!("eg-dedup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = StateStore::open(&dir.join("s.redb")).unwrap();
        assert!(s.first_delivery("msg_1", 100, 600).unwrap());
        assert!(!s.first_delivery("msg_1", 101, 600).unwrap());
        s.forget_delivery("msg_1").unwrap();
        assert!(s.first_delivery("msg_1", 102, 600).unwrap());
        // Old ids are dropped when a new one arrives.
        assert!(s.first_delivery("msg_2", 1000, 600).unwrap());
        assert!(s.first_delivery("msg_1", 1000, 600).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
