//! Approval requests in the embedded store: the `[state]` redb file the kill switch opened
//! (one open per file per process, so the handle is shared), or an in-memory redb without one.
//!
//! Tables: `approvals` (id → request JSON), `approval_keys` (binding key → id of the latest
//! request for it), `approvals_pending` (`subject \0 id` → expiry, the per-subject bound).
//! Every step that reads and then changes a request is one write transaction; redb runs one
//! at a time, so of two identical calls racing for one grant exactly one uses it.

use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

use super::{
    store_err, AskOutcome, Asked, DecideError, Live, Request, Status, StoreError, Verdict,
};

const REQUESTS: TableDefinition<'_, &str, &str> = TableDefinition::new("approvals");
const KEYS: TableDefinition<'_, &str, &str> = TableDefinition::new("approval_keys");
const PENDING: TableDefinition<'_, &str, u64> = TableDefinition::new("approvals_pending");

/// The embedded store's requests.
#[derive(Clone)]
pub(crate) struct Local {
    db: Arc<Database>,
}

fn pending_key(subject: &str, id: &str) -> String {
    format!("{subject}\0{id}")
}

fn parse(json: &str) -> Result<Request, StoreError> {
    serde_json::from_str(json).map_err(store_err)
}

fn to_json(r: &Request) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(store_err)
}

impl Local {
    /// Opens the tables in `db`, or in a new in-memory database.
    pub(crate) fn open(db: Option<Arc<Database>>) -> Result<Self, StoreError> {
        let db = match db {
            Some(db) => db,
            None => Arc::new(
                Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(store_err)?,
            ),
        };
        let txn = db.begin_write().map_err(store_err)?;
        txn.open_table(REQUESTS).map_err(store_err)?;
        txn.open_table(KEYS).map_err(store_err)?;
        txn.open_table(PENDING).map_err(store_err)?;
        txn.commit().map_err(store_err)?;
        Ok(Self { db })
    }

    /// Runs `f` on the blocking pool (redb does file I/O).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(store_err)?
    }

    pub(crate) async fn peek(&self, key: &str) -> Result<Option<Request>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let keys = txn.open_table(KEYS).map_err(store_err)?;
            let Some(id) = keys.get(key.as_str()).map_err(store_err)? else {
                return Ok(None);
            };
            let reqs = txn.open_table(REQUESTS).map_err(store_err)?;
            let found = reqs.get(id.value()).map_err(store_err)?;
            found.map(|j| parse(j.value())).transpose()
        })
        .await
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let reqs = txn.open_table(REQUESTS).map_err(store_err)?;
            let found = reqs.get(id.as_str()).map_err(store_err)?;
            found.map(|j| parse(j.value())).transpose()
        })
        .await
    }

    pub(crate) async fn list(&self) -> Result<Vec<Request>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(store_err)?;
            let reqs = txn.open_table(REQUESTS).map_err(store_err)?;
            let mut out = Vec::new();
            for entry in reqs.iter().map_err(store_err)? {
                let (_, json) = entry.map_err(store_err)?;
                match parse(json.value()) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::error!(error = %e, "unreadable approval request; skipped"),
                }
            }
            Ok(out)
        })
        .await
    }

    pub(crate) async fn ask(
        &self,
        fresh: Request,
        max_pending: usize,
        now: u64,
    ) -> Result<AskOutcome, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store_err)?;
            let outcome = {
                let mut reqs = txn.open_table(REQUESTS).map_err(store_err)?;
                let mut keys = txn.open_table(KEYS).map_err(store_err)?;
                let mut pending = txn.open_table(PENDING).map_err(store_err)?;
                let current = keys
                    .get(fresh.key.as_str())
                    .map_err(store_err)?
                    .map(|v| v.value().to_owned());
                let found = match &current {
                    Some(id) => reqs
                        .get(id.as_str())
                        .map_err(store_err)?
                        .map(|j| parse(j.value()))
                        .transpose()?,
                    None => None,
                };
                let mut expired = None;
                let mut answer = None;
                if let Some(mut r) = found {
                    match r.live(now) {
                        Live::Granted => {
                            r.status = Status::Used;
                            r.used_at = Some(now);
                            reqs.insert(r.id.as_str(), to_json(&r)?.as_str())
                                .map_err(store_err)?;
                            answer = Some(Asked::Granted(r));
                        }
                        Live::Pending => {
                            answer = Some(Asked::Pending {
                                request: r,
                                created: false,
                            });
                        }
                        Live::Denied => answer = Some(Asked::Denied(r)),
                        Live::Over(mark) => {
                            if mark {
                                r.status = Status::Expired;
                                reqs.insert(r.id.as_str(), to_json(&r)?.as_str())
                                    .map_err(store_err)?;
                                pending
                                    .remove(pending_key(&r.subject, &r.id).as_str())
                                    .map_err(store_err)?;
                                expired = Some(r);
                            }
                        }
                    }
                }
                let asked = match answer {
                    Some(a) => a,
                    None => {
                        let prefix = pending_key(&fresh.subject, "");
                        let mut live = 0usize;
                        for entry in pending.range(prefix.as_str()..).map_err(store_err)? {
                            let (k, exp) = entry.map_err(store_err)?;
                            if !k.value().starts_with(prefix.as_str()) {
                                break;
                            }
                            if now < exp.value() {
                                live += 1;
                            }
                        }
                        if live >= max_pending {
                            Asked::Full
                        } else {
                            reqs.insert(fresh.id.as_str(), to_json(&fresh)?.as_str())
                                .map_err(store_err)?;
                            keys.insert(fresh.key.as_str(), fresh.id.as_str())
                                .map_err(store_err)?;
                            pending
                                .insert(
                                    pending_key(&fresh.subject, &fresh.id).as_str(),
                                    fresh.expires_at,
                                )
                                .map_err(store_err)?;
                            Asked::Pending {
                                request: fresh,
                                created: true,
                            }
                        }
                    }
                };
                AskOutcome { asked, expired }
            };
            txn.commit().map_err(store_err)?;
            Ok(outcome)
        })
        .await
    }

    pub(crate) async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        reason: &str,
        now: u64,
        grant_until: u64,
    ) -> Result<Request, DecideError> {
        let (id, approver, reason) = (id.to_owned(), approver.to_owned(), reason.to_owned());
        let decided = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(store_err)?;
                let result = {
                    let mut reqs = txn.open_table(REQUESTS).map_err(store_err)?;
                    let mut pending = txn.open_table(PENDING).map_err(store_err)?;
                    let found = reqs
                        .get(id.as_str())
                        .map_err(store_err)?
                        .map(|j| parse(j.value()))
                        .transpose()?;
                    match found {
                        None => Err(DecideError::NotFound),
                        Some(r) if r.status != Status::Pending => {
                            Err(DecideError::NotPending(r.status.as_str()))
                        }
                        // Left for the sweep to mark (and audit) as expired.
                        Some(r) if now >= r.expires_at => Err(DecideError::Expired),
                        Some(mut r) => {
                            r.status = verdict.status();
                            r.approver = Some(approver);
                            r.reason = Some(reason);
                            r.decided_at = Some(now);
                            if verdict == Verdict::Approve {
                                r.grant_expires_at = Some(grant_until);
                            }
                            reqs.insert(r.id.as_str(), to_json(&r)?.as_str())
                                .map_err(store_err)?;
                            pending
                                .remove(pending_key(&r.subject, &r.id).as_str())
                                .map_err(store_err)?;
                            Ok(r)
                        }
                    }
                };
                if result.is_ok() {
                    txn.commit().map_err(store_err)?;
                }
                Ok(result)
            })
            .await?;
        decided
    }

    pub(crate) async fn sweep(&self, now: u64, ttl: u64) -> Result<Vec<Request>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(store_err)?;
            let expired = {
                let mut reqs = txn.open_table(REQUESTS).map_err(store_err)?;
                let mut keys = txn.open_table(KEYS).map_err(store_err)?;
                let mut pending = txn.open_table(PENDING).map_err(store_err)?;
                let mut all = Vec::new();
                for entry in reqs.iter().map_err(store_err)? {
                    let (id, json) = entry.map_err(store_err)?;
                    all.push((id.value().to_owned(), parse(json.value())));
                }
                let mut expired = Vec::new();
                for (id, parsed) in all {
                    let Ok(mut r) = parsed else {
                        continue;
                    };
                    if r.live(now) == Live::Over(true) {
                        r.status = Status::Expired;
                        reqs.insert(id.as_str(), to_json(&r)?.as_str())
                            .map_err(store_err)?;
                        pending
                            .remove(pending_key(&r.subject, &r.id).as_str())
                            .map_err(store_err)?;
                        expired.push(r.clone());
                    }
                    if r.live(now) == Live::Over(false) && now >= r.retain_until(ttl) {
                        reqs.remove(id.as_str()).map_err(store_err)?;
                        let points_here = keys
                            .get(r.key.as_str())
                            .map_err(store_err)?
                            .is_some_and(|v| v.value() == id);
                        if points_here {
                            keys.remove(r.key.as_str()).map_err(store_err)?;
                        }
                    }
                }
                expired
            };
            txn.commit().map_err(store_err)?;
            Ok(expired)
        })
        .await
    }
}
