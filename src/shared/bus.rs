//! The invalidation bus: typed messages on one pub/sub channel (`{prefix}bus`).
//!
//! A replica that drops cached knowledge (an expiry webhook, a refused execution, a
//! connection created, deleted, refreshed or disabled) applies it locally at once and queues
//! the message; the publisher task bumps the subject's epoch (so the answer another replica
//! handed over in Redis is never read again, see [`super::flight`]) and publishes, in one
//! transaction. Subscribers apply what other replicas sent.
//!
//! Pub/sub delivers at most once: a replica whose subscription dropped may have missed
//! messages, so every (re)subscription tells the listeners to forget everything
//! ([`Listener::resync`]). A publish that failed stays queued (bounded; on overflow the queue
//! becomes one "everything") and is sent when Redis answers again.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::Cluster;

/// Messages queued at most while Redis is away; past it, one [`Message::Everything`].
const MAX_QUEUED: usize = 10_000;

/// What one replica tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// Forget the subject's status for one toolkit (and its named-account answers).
    Status {
        /// The subject.
        subject: String,
        /// The toolkit slug.
        toolkit: String,
    },
    /// Forget everything known of the subject's connections.
    Subject {
        /// The subject.
        subject: String,
    },
    /// Forget a tool's metadata.
    Tool {
        /// The tool slug.
        slug: String,
    },
    /// Forget every cached answer.
    Everything,
    /// The kill switch's deny rules changed in Redis: read them again.
    DenyRulesChanged,
    /// A note for whichever listener knows `topic` (the tool lock's drift); the bus does not
    /// read `payload`.
    Note {
        /// What the note is about.
        topic: String,
        /// Its content, as the listener that knows the topic wrote it.
        payload: String,
    },
}

impl Message {
    /// The subject whose shared status answers this message makes stale, if it is about one.
    fn subject(&self) -> Option<&str> {
        match self {
            Self::Status { subject, .. } | Self::Subject { subject } => Some(subject),
            _ => None,
        }
    }
}

/// One message on the wire, with its sender.
#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    #[serde(flatten)]
    msg: Message,
}

/// Something that keeps state other replicas may invalidate.
pub trait Listener: Send + Sync {
    /// Applies a message another replica sent.
    fn apply(&self, msg: &Message);
    /// Forgets everything that a missed message could have invalidated.
    fn resync(&self);
}

pub(super) struct Bus {
    channel: String,
    listeners: Mutex<Vec<Weak<dyn Listener>>>,
    queue: Mutex<VecDeque<Message>>,
    queued: Notify,
}

impl Bus {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            channel: format!("{prefix}bus"),
            listeners: Mutex::new(Vec::new()),
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
        }
    }

    pub(super) fn add_listener(&self, l: Weak<dyn Listener>) {
        let mut ls = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        ls.retain(|l| l.strong_count() > 0);
        ls.push(l);
    }

    pub(super) fn send(&self, msg: Message) {
        {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.len() >= MAX_QUEUED {
                q.clear();
                q.push_back(Message::Everything);
            } else {
                q.push_back(msg);
            }
        }
        self.queued.notify_one();
    }

    fn each_listener(&self, f: impl Fn(&dyn Listener)) {
        let ls: Vec<_> = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for l in ls {
            f(l.as_ref());
        }
    }

    fn front(&self) -> Option<Message> {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .cloned()
    }

    fn pop(&self) {
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
    }
}

/// The publisher: sends queued messages in order; keeps them while Redis does not answer.
pub(super) async fn publish(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let Some(msg) = c.bus.front() else {
            // `notify_one` keeps a permit, so a message queued since `front` wakes this at
            // once; the timeout lets a dropped cluster end the task.
            let _ = tokio::time::timeout(Duration::from_secs(5), c.bus.queued.notified()).await;
            continue;
        };
        if send_one(&c, &msg).await {
            c.bus.pop();
            metrics::counter!("entitygate_shared_bus_messages_total", "direction" => "sent")
                .increment(1);
        } else {
            let every = Duration::from_millis(c.cfg.probe_interval_ms);
            drop(c);
            tokio::time::sleep(every).await;
        }
    }
}

async fn send_one(c: &Cluster, msg: &Message) -> bool {
    let Ok(payload) = serde_json::to_string(&Envelope {
        from: c.id.clone(),
        msg: msg.clone(),
    }) else {
        // Cannot happen (plain strings); dropping it beats blocking the queue.
        return true;
    };
    let mut pipe = redis::pipe();
    pipe.atomic();
    match msg {
        Message::Everything => {
            pipe.incr(c.key(&["epoch"]), 1).ignore();
        }
        other => {
            if let Some(subject) = other.subject() {
                pipe.incr(c.key(&["epoch", subject]), 1).ignore();
            }
        }
    }
    pipe.publish(&c.bus.channel, payload).ignore();
    let mut conn = c.conn();
    let limit = Duration::from_millis(c.cfg.connect_timeout_ms.max(c.cfg.timeout_ms));
    matches!(
        tokio::time::timeout(limit, pipe.query_async::<()>(&mut conn)).await,
        Ok(Ok(()))
    )
}

/// The subscriber: (re)subscribes, tells listeners to resync on every subscription, then
/// applies other replicas' messages until the connection drops or the prober says Redis is
/// gone.
pub(super) async fn subscribe(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        let limit = Duration::from_millis(c.cfg.connect_timeout_ms);
        let retry = Duration::from_millis(c.cfg.probe_interval_ms);
        let connected = tokio::time::timeout(limit, async {
            let mut ps = c.client.get_async_pubsub().await?;
            ps.subscribe(&c.bus.channel).await?;
            redis::RedisResult::Ok(ps)
        })
        .await;
        let Ok(Ok(ps)) = connected else {
            drop(c);
            tokio::time::sleep(retry).await;
            continue;
        };
        c.subscribed.store(true, Ordering::Relaxed);
        metrics::gauge!("entitygate_shared_bus_subscribed").set(1.0);
        metrics::counter!("entitygate_shared_bus_resyncs_total").increment(1);
        // Whatever was sent while this replica was not listening is lost: forget it all.
        c.bus.each_listener(|l| l.resync());
        tracing::info!("shared state: invalidation bus subscribed; local caches dropped");
        let mut stream = ps.into_on_message();
        let cluster_weak = cluster.clone();
        drop(c);
        loop {
            let Some(c) = cluster_weak.upgrade() else {
                return;
            };
            let reset = c.resubscribe.notified();
            let next = tokio::select! {
                m = stream.next() => m,
                () = reset => None,
                // Re-check the cluster now and then so a dropped one ends this task.
                () = tokio::time::sleep(Duration::from_secs(5)) => continue,
            };
            let Some(m) = next else {
                c.subscribed.store(false, Ordering::Relaxed);
                metrics::gauge!("entitygate_shared_bus_subscribed").set(0.0);
                tracing::warn!("shared state: invalidation bus disconnected");
                break;
            };
            let Ok(env) = serde_json::from_slice::<Envelope>(m.get_payload_bytes()) else {
                tracing::warn!("shared state: unreadable bus message ignored");
                continue;
            };
            if env.from == c.id {
                continue;
            }
            metrics::counter!("entitygate_shared_bus_messages_total", "direction" => "received")
                .increment(1);
            c.bus.each_listener(|l| l.apply(&env.msg));
        }
    }
}

#[cfg(test)]
pub(super) mod tests_support {
    use super::{Envelope, Message};

    pub(crate) fn envelope(from: &str, msg: &Message) -> String {
        serde_json::to_string(&Envelope {
            from: from.to_owned(),
            msg: msg.clone(),
        })
        .unwrap_or_default()
    }

    pub(crate) fn parse(s: &str) -> Option<Message> {
        serde_json::from_str::<Envelope>(s).ok().map(|e| e.msg)
    }
}
