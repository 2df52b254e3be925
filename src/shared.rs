//! Several replicas, one gateway: the state replicas share on Redis (or Valkey) when
//! `[shared]` is configured. Absent, nothing here runs and every replica decides alone.
//!
//! What is shared, and how a replica behaves when Redis is not there:
//! - the per-subject rate limit ([`crate::limits::global`]), one atomic GCRA script per
//!   decision, run through [`Cluster`]. Redis down or slow: the replica's own limiter
//!   (per-replica limits), never none.
//! - [`bus`]: invalidations on pub/sub (a (subject, toolkit) status, a subject, a tool,
//!   everything, deny rules changed). A replica whose subscription dropped forgets every
//!   cached answer when it is back, since it may have missed messages; a publish that failed
//!   is queued and sent when Redis is back.
//! - [`flight`]: single-flight of cold status lookups across replicas (a short lock, the
//!   answer handed over in Redis for `status_share_ms`). Redis down: the replica asks
//!   Composio itself, as in single-node mode.
//! - [`lease`]: the audit job's lease, and the notification and webhook dedup.
//! - the kill switch's deny rules, the same on every replica (an outage keeps the last known
//!   set): the kill switch syncs them itself over a [`Cluster`] ([`crate::killswitch`]).
//!
//! Nothing on the request path waits for Redis longer than `timeout_ms`: a timeout or error
//! marks Redis down, and until the prober sees it answer again requests do not try it.
//! Nothing replica-local ever turns a refusal into an allow: every fallback is the
//! single-node behaviour, which is itself fail-closed.

pub mod bus;
pub mod flight;
pub mod lease;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo as _;
use tokio::sync::Notify;

use crate::config::{ConfigError, Env, SharedConfig};

pub use bus::{Listener, Message};

/// The connection to the shared Redis, and what this replica knows of its state.
pub struct Cluster {
    cfg: SharedConfig,
    client: redis::Client,
    conn: ConnectionManager,
    /// This replica's id on the bus (its own messages are not applied twice).
    id: String,
    /// Redis answered the last command or probe.
    up: AtomicBool,
    /// The invalidation subscription is live.
    subscribed: AtomicBool,
    /// Wakes the bus to resubscribe (the prober saw Redis stop answering).
    resubscribe: Notify,
    bus: bus::Bus,
    /// Whether this replica holds the audit job's lease.
    lease_held: AtomicBool,
    /// Requests decided by the local limiter because Redis was not available.
    pub(crate) fallbacks: AtomicU64,
    /// Tasks that end with this cluster: its own, and those others run over it
    /// ([`Cluster::own_task`]).
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("id", &self.id)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

/// What `/readyz` and the console show of the shared state.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    /// `up` or `down`.
    pub redis: &'static str,
    /// `subscribed` or `disconnected`.
    pub bus: &'static str,
    /// `global` (Redis) or `per_replica` (fallback).
    pub rate_limits: &'static str,
    /// This replica holds the audit job's lease.
    pub audit_lease: bool,
    /// Requests decided by the local limiter since start.
    pub fallbacks: u64,
}

// === impl Cluster ===

impl Cluster {
    /// Connects lazily to `[shared] redis_url` and starts the prober and the bus. A Redis
    /// that is down at start is not an error: the replica serves in fallback mode and joins
    /// when Redis answers.
    ///
    /// # Errors
    /// An unparseable URL, or a password variable that is not set.
    pub fn start(cfg: &SharedConfig, env: &dyn Env) -> Result<Arc<Self>, ConfigError> {
        let mut info = cfg
            .redis_url
            .as_str()
            .into_connection_info()
            .map_err(|e| ConfigError::invalid("shared.redis_url", e.to_string()))?;
        if let Some(var) = &cfg.password_env {
            let password =
                env.var(var)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| ConfigError::MissingEnv {
                        key: "shared.password_env".into(),
                        var: var.clone(),
                    })?;
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info)
            .map_err(|e| ConfigError::invalid("shared.redis_url", e.to_string()))?;
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(cfg.probe_interval_ms));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| ConfigError::invalid("shared.redis_url", e.to_string()))?;
        let cluster = Arc::new(Self {
            bus: bus::Bus::new(&cfg.key_prefix),
            cfg: cfg.clone(),
            client,
            conn,
            id: uuid::Uuid::new_v4().simple().to_string(),
            up: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            resubscribe: Notify::new(),
            lease_held: AtomicBool::new(false),
            fallbacks: AtomicU64::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        let probe = tokio::spawn(probe(Arc::downgrade(&cluster)));
        let subscriber = tokio::spawn(bus::subscribe(Arc::downgrade(&cluster)));
        let publisher = tokio::spawn(bus::publish(Arc::downgrade(&cluster)));
        cluster
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([probe, subscriber, publisher]);
        metrics::gauge!("entitygate_shared_redis_up").set(0.0);
        metrics::gauge!("entitygate_shared_bus_subscribed").set(0.0);
        Ok(cluster)
    }

    /// The configuration this cluster was started with.
    pub fn config(&self) -> &SharedConfig {
        &self.cfg
    }

    /// This replica's id on the bus.
    pub fn replica_id(&self) -> &str {
        &self.id
    }

    /// Whether Redis answered the last command or probe.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether invalidations from other replicas are arriving.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// The state for `/readyz`.
    pub fn health(&self) -> Health {
        let up = self.is_up();
        Health {
            redis: if up { "up" } else { "down" },
            bus: if self.is_subscribed() {
                "subscribed"
            } else {
                "disconnected"
            },
            rate_limits: if up { "global" } else { "per_replica" },
            audit_lease: self.lease_held.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }

    /// Registers `listener` for invalidations (the connection cache, the kill switch).
    pub fn listen(&self, listener: Weak<dyn Listener>) {
        self.bus.add_listener(listener);
    }

    /// Sends `msg` to every other replica (queued while Redis is down).
    pub fn broadcast(&self, msg: Message) {
        self.bus.send(msg);
    }

    /// Ties `task` to this cluster: it is aborted when the cluster is dropped (a sync another
    /// module runs over Redis, such as the kill switch's deny rules).
    pub(crate) fn own_task(&self, task: tokio::task::JoinHandle<()>) {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(task);
    }

    /// A key under the configured prefix.
    pub(crate) fn key(&self, parts: &[&str]) -> String {
        let mut k = self.cfg.key_prefix.clone();
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                k.push(':');
            }
            k.push_str(p);
        }
        k
    }

    /// A handle for one command (the manager multiplexes and reconnects).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The request-path bound on one Redis command.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.cfg.timeout_ms)
    }

    /// Runs one command within the request-path timeout. An error or a timeout marks Redis
    /// down (the prober marks it up again), so later requests do not wait for it.
    pub(crate) async fn run<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout(), fut).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                self.mark_down(what, &e.to_string());
                None
            }
            Err(_) => {
                self.mark_down(what, "timed out");
                None
            }
        }
    }

    fn mark_down(&self, what: &'static str, error: &str) {
        metrics::counter!("entitygate_shared_redis_errors_total", "op" => what).increment(1);
        if self.up.swap(false, Ordering::Relaxed) {
            metrics::gauge!("entitygate_shared_redis_up").set(0.0);
            tracing::error!(
                op = what,
                error,
                "shared state: Redis unavailable; rate limits are per replica until it answers"
            );
        }
        if what == "probe" && self.is_subscribed() {
            // No answer to a PING within the connect timeout: the subscription may be as dead
            // as the command connection, so subscribe again (and resync). A request that only
            // missed `timeout_ms` does not flush the caches.
            self.resubscribe.notify_one();
        }
    }

    fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            metrics::gauge!("entitygate_shared_redis_up").set(1.0);
            tracing::info!("shared state: Redis answering; limits are global");
        }
    }

    pub(crate) fn set_lease_held(&self, held: bool) {
        self.lease_held.store(held, Ordering::Relaxed);
        metrics::gauge!("entitygate_shared_audit_lease_held").set(if held { 1.0 } else { 0.0 });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            t.abort();
        }
    }
}

/// Pings Redis every `probe_interval_ms`: marks it up when it answers, down when it does not.
async fn probe(cluster: Weak<Cluster>) {
    loop {
        let Some(c) = cluster.upgrade() else { return };
        probe_once(&c).await;
        let every = Duration::from_millis(c.cfg.probe_interval_ms);
        drop(c);
        tokio::time::sleep(every).await;
    }
}

async fn probe_once(c: &Cluster) {
    let mut conn = c.conn();
    // A probe may take the connect timeout: it is off the request path.
    let limit = Duration::from_millis(c.cfg.connect_timeout_ms.max(c.cfg.timeout_ms));
    let ping = redis::cmd("PING");
    match tokio::time::timeout(limit, ping.query_async::<String>(&mut conn)).await {
        Ok(Ok(_)) => c.mark_up(),
        Ok(Err(e)) => c.mark_down("probe", &e.to_string()),
        Err(_) => c.mark_down("probe", "timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(shared: &str) -> Result<crate::Config, ConfigError> {
        let toml = format!(
            "[upstream]\napi_key_env = \"K\"\n[auth]\n[[auth.keys]]\nalg = \"HS256\"\n\
             secret_env = \"S\"\n[shared]\n{shared}\n"
        );
        let c = crate::Config::from_toml(&toml)?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn shared_section_defaults_and_validation() {
        let c = config("redis_url = \"redis://127.0.0.1:6379/0\"").unwrap();
        let s = c.shared.unwrap();
        assert_eq!(s.key_prefix, "entitygate:");
        assert_eq!((s.timeout_ms, s.lease_secs), (50, 15));
        for (bad, key) in [
            ("redis_url = \"http://127.0.0.1:6379\"", "shared.redis_url"),
            (
                "redis_url = \"redis://h\"\nkey_prefix = \"\"",
                "shared.key_prefix",
            ),
            (
                "redis_url = \"redis://h\"\ntimeout_ms = 0",
                "shared.timeout_ms",
            ),
            (
                "redis_url = \"redis://h\"\nlease_secs = 0",
                "shared.lease_secs",
            ),
        ] {
            let e = config(bad).unwrap_err().to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        assert!(config("redis_url = \"redis://h\"\nunknown = 1").is_err());
    }

    #[tokio::test]
    async fn a_missing_password_variable_is_a_startup_error() {
        let c = config("redis_url = \"redis://127.0.0.1:1/0\"\npassword_env = \"NOPE\"").unwrap();
        let env: std::collections::HashMap<String, String> = Default::default();
        let e = Cluster::start(&c.shared.unwrap(), &env).unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
    }

    #[test]
    fn bus_messages_have_a_stable_wire_shape() {
        let m = Message::Status {
            subject: "user:1".into(),
            toolkit: "github".into(),
        };
        let env = bus::tests_support::envelope("r1", &m);
        assert_eq!(
            env,
            r#"{"from":"r1","kind":"status","subject":"user:1","toolkit":"github"}"#
        );
        assert_eq!(bus::tests_support::parse(&env), Some(m));
        let e = bus::tests_support::envelope("r1", &Message::DenyRulesChanged);
        assert_eq!(e, r#"{"from":"r1","kind":"deny_rules_changed"}"#);
        assert_eq!(
            bus::tests_support::parse(r#"{"from":"r1","kind":"nope"}"#),
            None
        );
    }
}
