//! The kill switch's deny rules, shared by the fleet over Redis ([`crate::shared`], which
//! knows no kill switch: this module attaches to it as a [`Listener`], as the connection
//! cache does).
//!
//! Redis holds the fleet's set in a hash, `{prefix}deny` (rule id → rule JSON), and the ids of
//! lifted rules in a set, `{prefix}deny:lifted` (ids are random and never reused, so a
//! tombstone never hides a new rule). A rule added or lifted on one replica is written there,
//! then [`Message::DenyRulesChanged`] tells the others, which read the set again and swap it in
//! with [`KillSwitch::replace_all`] (persisted in their own store too).
//!
//! A Redis outage never loses a deny rule: a replica that cannot read the set keeps the last
//! one it knew (and its own store keeps it across a restart); a local change that cannot be
//! written stays queued and is written when Redis answers. A Redis that comes back empty
//! (restarted without persistence) gets every replica's known, unlifted rules back. Local
//! changes are always written before the set is read again, so a lift is never undone by a
//! stale read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, Notify};

use super::{Change, KillSwitch, Rule};
use crate::shared::{Cluster, Listener, Message};

/// Wakes the sync task when another replica changed the rules or the bus resubscribed.
struct Wake(Notify);

impl Listener for Wake {
    fn apply(&self, msg: &Message) {
        if *msg == Message::DenyRulesChanged {
            self.0.notify_one();
        }
    }

    fn resync(&self) {
        self.0.notify_one();
    }
}

/// Shares `ks` through `cluster`: once per (kill switch, cluster); a reload that keeps both
/// does nothing.
pub(crate) fn attach(cluster: &Arc<Cluster>, ks: &Arc<KillSwitch>) {
    {
        let mut current = ks.fleet.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ptr() == Arc::as_ptr(cluster) {
            return;
        }
        *current = Arc::downgrade(cluster);
    }
    // Subscribed before anything else can change the rules: no local change is missed.
    let changes = ks.subscribe();
    let wake = Arc::new(Wake(Notify::new()));
    let weak: Weak<dyn Listener> = Arc::downgrade(&wake) as Weak<Wake>;
    cluster.listen(weak);
    let task = tokio::spawn(sync(
        Arc::downgrade(cluster),
        Arc::downgrade(ks),
        changes,
        wake,
    ));
    cluster.own_task(task);
}

async fn sync(
    cluster: Weak<Cluster>,
    ks: Weak<KillSwitch>,
    mut changes: broadcast::Receiver<Change>,
    wake: Arc<Wake>,
) {
    let mut pending: Vec<Change> = Vec::new();
    // Read the fleet's set at once (and push this replica's rules if Redis lost them).
    let mut stale = true;
    loop {
        let (Some(c), Some(k)) = (cluster.upgrade(), ks.upgrade()) else {
            return;
        };
        let retry = Duration::from_millis(c.config().probe_interval_ms);
        if !pending.is_empty() && write(&c, &pending).await {
            pending.clear();
            c.broadcast(Message::DenyRulesChanged);
            // Read back: a pull racing this change may have swapped in a set without it.
            stale = true;
        }
        if stale && pending.is_empty() {
            stale = !pull(&c, &k).await;
        }
        drop((c, k));
        tokio::select! {
            change = changes.recv() => match change {
                Ok(change) => pending.push(change),
                // Missed local changes: the local set is the truth to push.
                Err(broadcast::error::RecvError::Lagged(_)) => stale = true,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            () = wake.0.notified() => stale = true,
            () = tokio::time::sleep(retry), if stale || !pending.is_empty() => {}
            // Now and then, so a dropped cluster or kill switch ends this task.
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

fn deny_keys(c: &Cluster) -> (String, String) {
    (c.key(&["deny"]), c.key(&["deny", "lifted"]))
}

/// Writes local changes to Redis; `false` when Redis did not take them (they stay queued).
async fn write(c: &Cluster, pending: &[Change]) -> bool {
    let (rules, lifted) = deny_keys(c);
    let mut pipe = redis::pipe();
    pipe.atomic();
    for change in pending {
        match change {
            Change::Added(rule) => {
                let Ok(json) = serde_json::to_string(rule) else {
                    continue;
                };
                pipe.hset(&rules, &rule.id, json).ignore();
            }
            Change::Removed(rule) => {
                pipe.hdel(&rules, &rule.id).ignore();
                pipe.sadd(&lifted, &rule.id).ignore();
            }
        }
    }
    let mut conn = c.conn();
    let limit = Duration::from_millis(c.config().connect_timeout_ms.max(c.config().timeout_ms));
    let ok = matches!(
        tokio::time::timeout(limit, pipe.query_async::<()>(&mut conn)).await,
        Ok(Ok(()))
    );
    if !ok {
        tracing::warn!(
            changes = pending.len(),
            "kill switch: Redis did not take the change; it applies here and is retried"
        );
    }
    ok
}

/// Reads the fleet's set and swaps it in; puts back rules Redis lost. `false` when Redis could
/// not be read (the last known set stays).
async fn pull(c: &Cluster, ks: &KillSwitch) -> bool {
    let (rules_key, lifted_key) = deny_keys(c);
    let mut conn = c.conn();
    let limit = Duration::from_millis(c.config().connect_timeout_ms.max(c.config().timeout_ms));
    let mut read = redis::pipe();
    read.hgetall(&rules_key).smembers(&lifted_key);
    let Ok(Ok((stored, lifted))) = tokio::time::timeout(
        limit,
        read.query_async::<(HashMap<String, String>, HashSet<String>)>(&mut conn),
    )
    .await
    else {
        tracing::warn!("kill switch: shared rules unreadable; the last known set stays");
        return false;
    };
    let now = crate::clock::unix_now();
    let mut fleet: Vec<Rule> = stored
        .values()
        .filter_map(|json| serde_json::from_str::<Rule>(json).ok())
        .filter(|r| r.active(now) && !lifted.contains(&r.id))
        .collect();
    // Rules this replica knows that Redis lost (a restart without persistence).
    let lost: Vec<Rule> = ks
        .rules()
        .into_iter()
        .filter(|r| !stored.contains_key(&r.id) && !lifted.contains(&r.id))
        .collect();
    if !lost.is_empty() {
        let mut put = redis::pipe();
        for r in &lost {
            if let Ok(json) = serde_json::to_string(r) {
                put.hset_nx(&rules_key, &r.id, json).ignore();
            }
        }
        if !matches!(
            tokio::time::timeout(limit, put.query_async::<()>(&mut conn)).await,
            Ok(Ok(()))
        ) {
            return false;
        }
        tracing::warn!(
            rules = lost.len(),
            "kill switch: Redis had lost deny rules; written back"
        );
        fleet.extend(lost);
        c.broadcast(Message::DenyRulesChanged);
    }
    let mut mine: Vec<String> = ks.rules().into_iter().map(|r| r.id).collect();
    let mut theirs: Vec<String> = fleet.iter().map(|r| r.id.clone()).collect();
    mine.sort();
    theirs.sort();
    if mine != theirs {
        if let Err(e) = ks.replace_all(fleet).await {
            tracing::error!(error = %e, "kill switch: could not store the fleet's rules");
            return false;
        }
        tracing::info!(
            rules = theirs.len(),
            "kill switch: rules updated from the fleet"
        );
    }
    true
}
