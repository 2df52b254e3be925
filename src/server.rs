//! The gateway as a server: the builder that turns a [`Config`] into a running listener, the
//! accept loop (each connection then served by [`crate::accept`]: HTTP/1.1 or HTTP/2, optional
//! rustls), the connection cap, hot reload, and graceful shutdown that lets in-flight requests
//! finish.
//!
//! What a reload may change (keys, policy, limits, messages, TLS certificate, upstream) lives
//! in one [`Shared`] value behind an `ArcSwap`: each request takes a snapshot when it starts
//! and keeps it to the end, so a swap never changes the rules under a request in flight and
//! never drops a connection. A reload keeps every piece of state whose meaning it does not
//! change (see [`crate::proxy::build`]); a changed `[audit_job]` replaces the job and its
//! schedule.
//! The listen addresses and connection-level limits are fixed at start.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::{AdminConfig, Config, ConfigError, Env, LimitsConfig, ProcessEnv};
use crate::conn::Deadlines;
use crate::control::{Control, Reloading};
use crate::proxy::build::build_shared;
use crate::proxy::{Proxy, Shared};

/// A configured gateway, ready to serve.
pub struct Gateway {
    state: Arc<State>,
    listen: SocketAddr,
}

/// Builds a [`Gateway`] from a configuration.
pub struct GatewayBuilder {
    config: Config,
    env: Arc<dyn Env>,
    config_path: Option<PathBuf>,
    clock: Option<Arc<dyn crate::clock::Clock>>,
}

/// A gateway serving in the background (tests, embedders).
pub struct RunningGateway {
    addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// What outlives a reload: the current rules, and how to make new ones. The admin side sees
/// it only as its [`Control`] handle.
pub(crate) struct State {
    /// The rules in force, shared with the proxy service (which only loads them).
    current: Arc<ArcSwap<Shared>>,
    env: Arc<dyn Env>,
    config_path: Option<PathBuf>,
    admin: AdminConfig,
    limits: LimitsConfig,
    /// Background tasks of the current rules (JWKS refresh), aborted when they are replaced.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The scheduled audit scan, while serving.
    schedule: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serialises reloads.
    reloading: tokio::sync::Mutex<()>,
    /// The configuration in force (the secret-file watcher rebuilds from it).
    applied: Mutex<Config>,
    /// Why the last reload prompted by a changed secret file failed, while it stands.
    secrets_error: Mutex<Option<String>>,
}

// === impl GatewayBuilder ===

impl GatewayBuilder {
    /// Reads secrets from `env` instead of the process environment.
    pub fn env(mut self, env: impl Env + 'static) -> Self {
        self.env = Arc::new(env);
        self
    }

    /// The file that [`RunningGateway::reload`] (SIGHUP, `POST /reload`) reads again.
    pub fn config_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_path = Some(path.into());
        self
    }

    /// The clock approvals' requests and grants age by (tests move a
    /// [`crate::clock::ManualClock`] instead of sleeping); the system clock otherwise.
    pub fn clock(mut self, clock: Arc<dyn crate::clock::Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Loads keys and certificates and checks every secret.
    ///
    /// # Errors
    /// Any [`ConfigError`]: a missing secret, an unreadable key file, a bad certificate.
    pub async fn build(self) -> Result<Gateway, ConfigError> {
        let Self {
            config,
            env,
            config_path,
            clock,
        } = self;
        crate::metrics::install();
        let (mut shared, tasks) = build_shared(&config, env.as_ref(), None).await?;
        if let Some(clock) = clock {
            shared.approvals = Arc::new(shared.approvals.with_clock(clock));
        }
        let state = Arc::new(State {
            current: Arc::new(ArcSwap::from_pointee(shared)),
            env,
            config_path,
            admin: config.admin.clone(),
            limits: config.limits.clone(),
            tasks: Mutex::new(tasks.unwrap_or_default()),
            schedule: Mutex::new(None),
            reloading: tokio::sync::Mutex::new(()),
            applied: Mutex::new(config.clone()),
            secrets_error: Mutex::new(None),
        });
        Ok(Gateway {
            state,
            listen: config.listen,
        })
    }
}

// === impl State ===

impl State {
    /// Swaps in `config`'s rules. An invalid config is refused and the current rules stay.
    pub(crate) async fn reload_with(&self, config: &Config) -> Result<(), ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let previous = self.current.load_full();
        let result = build_shared(config, self.env.as_ref(), Some(&previous)).await;
        crate::metrics::reload(result.is_ok());
        let (shared, tasks) = match result {
            Ok(built) => built,
            Err(e) => {
                tracing::error!(error = %e, "reload rejected; the current configuration stays");
                return Err(e);
            }
        };
        let restart_schedule = match (&previous.expiry, &shared.expiry) {
            (Some(a), Some(b)) => {
                !Arc::ptr_eq(a, b) || !Arc::ptr_eq(&previous.connections, &shared.connections)
            }
            (None, None) => false,
            _ => true,
        };
        let reopen = previous.audit.path() == shared.audit.path();
        // The schedule writes its findings to the audit sink it was given: a new file means a
        // new sink, and the schedule must write there.
        let restart_schedule = restart_schedule || (!reopen && shared.expiry.is_some());
        let shared = Arc::new(shared);
        self.current.store(shared.clone());
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = config.clone();
        *self
            .secrets_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = None;
        if reopen {
            // SIGHUP and reload are also how `logrotate` says "the file was moved".
            shared.audit.reopen();
        }
        if let Some(tasks) = tasks {
            let old = std::mem::replace(
                &mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner),
                tasks,
            );
            for t in old {
                t.abort();
            }
        }
        if restart_schedule {
            let mut schedule = self.schedule.lock().unwrap_or_else(PoisonError::into_inner);
            // Only a serving gateway runs the schedule.
            if let Some(old) = schedule.take() {
                old.abort();
                *schedule = shared.expiry.as_ref().and_then(|job| {
                    crate::expiry::spawn_schedule(job, &shared.connections, &shared.audit)
                });
            }
        }
        tracing::info!("configuration reloaded");
        Ok(())
    }

    /// Reads the config file again and swaps it in.
    pub(crate) async fn reload(&self) -> Result<(), ConfigError> {
        let path = self.config_path.as_ref().ok_or_else(|| {
            ConfigError::invalid("reload", "the gateway was not started from a file")
        })?;
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                crate::metrics::reload(false);
                tracing::error!(error = %e, "reload rejected; the current configuration stays");
                return Err(e);
            }
        };
        self.reload_with(&config).await
    }

    /// Starts the scheduled audit scan of the current rules (when serving starts).
    fn start_schedule(&self) {
        let shared = self.current.load_full();
        let task = shared
            .expiry
            .as_ref()
            .and_then(|job| crate::expiry::spawn_schedule(job, &shared.connections, &shared.audit))
            // A placeholder keeps "serving" visible to reloads that add a job later.
            .unwrap_or_else(|| tokio::spawn(async {}));
        *self.schedule.lock().unwrap_or_else(PoisonError::into_inner) = Some(task);
    }

    fn stop_tasks(&self) {
        if let Some(t) = self
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
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

// === impl Control for State ===

impl Control for State {
    fn rules(&self) -> &ArcSwap<Shared> {
        &self.current
    }

    fn env(&self) -> &dyn Env {
        self.env.as_ref()
    }

    fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    fn admin(&self) -> &AdminConfig {
        &self.admin
    }

    fn applied(&self) -> Config {
        self.applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn secrets_error(&self) -> Option<String> {
        self.secrets_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn secrets_failed(&self, error: String) {
        *self
            .secrets_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    fn reload(&self) -> Reloading<'_> {
        Box::pin(State::reload(self))
    }

    fn reload_with<'a>(&'a self, config: &'a Config) -> Reloading<'a> {
        Box::pin(State::reload_with(self, config))
    }
}

// === impl Gateway ===

impl Gateway {
    /// Starts building a gateway from `config`; secrets come from the process environment
    /// unless [`GatewayBuilder::env`] says otherwise.
    pub fn builder(config: Config) -> GatewayBuilder {
        GatewayBuilder {
            config,
            env: Arc::new(ProcessEnv),
            config_path: None,
            clock: None,
        }
    }

    /// The configured listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The proxy service, for embedding in another server.
    pub fn service(&self) -> Proxy {
        Proxy::new(self.state.current.clone())
    }

    /// Binds `addr` (and the admin address, if configured) and serves in the background until
    /// [`RunningGateway::shutdown`].
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningGateway> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut rx) = watch::channel(false);
        let state = self.state.clone();
        let admin = match state.admin.listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let task = tokio::spawn(self.serve_with_admin(listener, admin, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        Ok(RunningGateway {
            addr,
            admin_addr,
            state,
            stop,
            task,
        })
    }

    /// Serves on `listener` (and on the configured admin address) until `shutdown` completes,
    /// reloading on SIGHUP, then stops accepting and waits up to the grace period for
    /// in-flight requests.
    ///
    /// # Errors
    /// When the admin address cannot be bound.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let admin = match self.state.admin.listen {
            Some(a) => Some(TcpListener::bind(a).await?),
            None => None,
        };
        let hup = tokio::spawn(reload_on_sighup(self.state.clone()));
        let result = self.serve_with_admin(listener, admin, shutdown).await;
        hup.abort();
        result
    }

    async fn serve_with_admin(
        self,
        listener: TcpListener,
        admin: Option<TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let state = self.state;
        let limits = state.limits.clone();
        let serving = Arc::new(serving(&limits));
        // Connections watch this to finish what is in flight and close.
        let (stop, stopping) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(limits.max_connections));
        let service = Proxy::new(state.current.clone());
        let admin_task = admin.map(|l| tokio::spawn(crate::admin::serve(l, state.clone())));
        let secrets_task = tokio::spawn(crate::secrets::watch(state.clone()));
        let lapse_task = tokio::spawn(audit_lapsed_rules(state.clone()));
        state.start_schedule();
        tokio::pin!(shutdown);
        let local = listener.local_addr()?;
        // MCP URLs derived from `Host` may name only this port (crate::proxy::mcp::public_base).
        state
            .current
            .load()
            .listen_port
            .store(local.port(), std::sync::atomic::Ordering::Relaxed);
        tracing::info!(addr = %local, "entitygate listening");
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                crate::metrics::connection_refused("proxy");
                tracing::warn!(%peer, "connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            // The certificate of the moment: a reload rotates it for new connections.
            let tls = state.current.load().tls.clone();
            let (serving, proxy, stopping) = (serving.clone(), service.clone(), stopping.clone());
            tokio::spawn(async move {
                crate::accept::serve(serving, stream, peer, tls, proxy, stopping).await;
                drop(permit);
            });
        }
        drop(listener);
        if let Some(t) = &admin_task {
            t.abort();
        }
        secrets_task.abort();
        lapse_task.abort();
        state.stop_tasks();
        if let Some(cluster) = &state.current.load().cluster {
            // The next replica takes the audit job over now rather than at the lease's end.
            cluster.release_lease().await;
        }
        let grace = Duration::from_secs(limits.shutdown_grace_secs);
        let _ = stop.send(true);
        // Every connection holds a permit until it has closed.
        let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, permits.acquire_many(all)).await {
            Ok(_) => tracing::info!("all connections drained; stopped"),
            Err(_) => tracing::warn!(?grace, "grace period over; stopping with connections open"),
        }
        // The audit writer batches on its own thread: the last decisions must reach the file
        // before the process exits, or a graceful stop loses exactly the newest evidence.
        let audit = state.current.load().audit.clone();
        let flushed = tokio::task::spawn_blocking(move || audit.flush_blocking(AUDIT_FLUSH))
            .await
            .unwrap_or(false);
        if !flushed {
            tracing::warn!("audit log not flushed within {AUDIT_FLUSH:?} at shutdown");
        }
        Ok(())
    }
}

/// How often expired deny rules are looked for.
const LAPSE_CHECK: Duration = Duration::from_secs(1);

/// Writes a `deny_expired` audit event for each deny rule when its expiry passes, so the trail
/// shows when a rule stopped applying as well as when it was added or lifted.
async fn audit_lapsed_rules(state: Arc<State>) {
    let mut tick = tokio::time::interval(LAPSE_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let shared = state.current.load_full();
        for rule in shared.kill_switch.lapsed().await {
            tracing::warn!(id = %rule.id, rule = %rule.describe(), "kill switch: deny rule expired");
            shared.audit.record("deny_expired", rule.audit_fields());
        }
        n += 1;
        if n.is_multiple_of(APPROVALS_SWEEP_TICKS) {
            sweep_approvals(&shared).await;
        }
    }
}

/// Approvals are swept every this many lapse checks.
const APPROVALS_SWEEP_TICKS: u64 = 5;

/// Marks approval requests and grants whose time ended as expired (`approval_expired`, once
/// fleet-wide), drops old records, and sets the pending gauge.
async fn sweep_approvals(shared: &crate::proxy::Shared) {
    let settings = &shared.approval_rules.settings;
    match shared.approvals.sweep(settings).await {
        Ok(expired) => {
            for r in &expired {
                crate::approvals::record(&shared.audit, "approval_expired", r);
            }
        }
        Err(e) => tracing::warn!(error = %e, "approvals: sweep failed; retried"),
    }
    if let Ok(all) = shared.approvals.list().await {
        let now = shared.approvals.now();
        let pending = all
            .iter()
            .filter(|r| r.live(now) == crate::approvals::Live::Pending)
            .count();
        crate::metrics::approvals_pending(pending);
    }
}

/// How long a stopping gateway waits for its audit writer.
const AUDIT_FLUSH: Duration = Duration::from_secs(5);

/// How the listener's connections are served: HTTP/1 and HTTP/2 settings that bound what one
/// connection may make the gateway hold (README, "Deployment": worst case per connection),
/// and the deadlines. Header-read and keep-alive deadlines are the connection watchdog's
/// ([`crate::conn`]), not hyper's: hyper's HTTP/1 timer also runs between requests, which
/// would close idle keep-alive connections that clients expect to reuse.
fn serving(limits: &LimitsConfig) -> crate::accept::Serving {
    let mut h1 = hyper::server::conn::http1::Builder::new();
    // The read buffer is the request head's cap: a head that does not fit is a 431.
    h1.max_buf_size(limits.max_request_head_bytes)
        .max_headers(limits.max_request_headers)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(u32::try_from(limits.max_request_head_bytes).unwrap_or(u32::MAX))
        // Flow control bounds what a client can make the gateway buffer before it reads:
        // unread request data per connection stays under the connection window.
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .keep_alive_interval(Duration::from_secs(30));
    crate::accept::Serving {
        h1,
        h2,
        deadlines: Deadlines {
            head: Duration::from_secs(limits.header_read_timeout_secs),
            keepalive: Duration::from_secs(limits.keepalive_idle_secs),
        },
        handshake_timeout: Duration::from_secs(limits.tls_handshake_timeout_secs),
    }
}

/// HTTP/2 flow-control window per stream (README, "Deployment"). Public so that the benchmark's
/// minimal proxy (`examples/bench_minimal_proxy.rs`) serves with exactly these settings.
pub const H2_STREAM_WINDOW: u32 = 64 * 1024;
/// HTTP/2 flow-control window per connection.
pub const H2_CONNECTION_WINDOW: u32 = 256 * 1024;
/// HTTP/2 send buffer per stream.
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// Reloads the configuration file on every SIGHUP.
async fn reload_on_sighup(state: Arc<State>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received; reloading");
            let _ = state.reload().await;
        }
    }
    #[cfg(not(unix))]
    drop(state);
}

// === impl RunningGateway ===

impl RunningGateway {
    /// The bound proxy address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin address, if an admin listener is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Verified tokens cached, and the bytes they are counted for (`auth.token_cache_bytes`).
    pub fn token_cache_usage(&self) -> (usize, usize) {
        self.state.current.load().auth.cache_usage()
    }

    /// Swaps in a new configuration without dropping connections.
    ///
    /// # Errors
    /// When the new configuration is invalid; the current one stays.
    pub async fn reload_with(&self, config: &Config) -> Result<(), ConfigError> {
        self.state.reload_with(config).await
    }

    /// Reads the configuration file again and swaps it in.
    ///
    /// # Errors
    /// When the file is unreadable or invalid; the current configuration stays.
    pub async fn reload(&self) -> Result<(), ConfigError> {
        self.state.reload().await
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Resolves when the process receives SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}
