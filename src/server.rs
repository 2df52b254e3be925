//! The gateway as a server: the builder that turns a [`Config`] into a running listener, the
//! accept loop (HTTP/1.1 and HTTP/2 by hyper-util's auto builder, optional rustls), the
//! connection cap, and graceful shutdown that lets in-flight requests finish.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Env, LimitsConfig, ProcessEnv};
use crate::connections::Connections;
use crate::proxy::{Proxy, Shared};
use crate::upstream::{self, Upstream};

/// A configured gateway, ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    limits: LimitsConfig,
    listen: SocketAddr,
    background: Vec<tokio::task::JoinHandle<()>>,
}

/// Builds a [`Gateway`] from a configuration.
pub struct GatewayBuilder {
    config: Config,
    env: Arc<dyn Env>,
}

/// A gateway serving in the background (tests, embedders).
pub struct RunningGateway {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

// === impl GatewayBuilder ===

impl GatewayBuilder {
    /// Reads secrets from `env` instead of the process environment.
    pub fn env(mut self, env: impl Env + 'static) -> Self {
        self.env = Arc::new(env);
        self
    }

    /// Loads keys and certificates and checks every secret.
    ///
    /// # Errors
    /// Any [`ConfigError`]: a missing secret, an unreadable key file, a bad certificate.
    pub async fn build(self) -> Result<Gateway, ConfigError> {
        let Self { config, env } = self;
        config.validate()?;
        let client = upstream::build_client(&config.upstream)?;
        let upstream = Upstream::new(&config.upstream, env.as_ref(), client.clone())?;
        let auth = Authenticator::new(&config.auth, env.as_ref(), client).await?;
        let tls = match &config.tls {
            Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(t)?)),
            None => None,
        };
        let background = vec![auth.spawn_refresh()];
        let shared = Arc::new(Shared {
            secret: bytes::Bytes::copy_from_slice(upstream.api_key()),
            connections: Connections::new(upstream.clone(), config.connections.clone()),
            auth,
            upstream,
            policy: config.policy.clone(),
        });
        Ok(Gateway {
            shared,
            tls,
            limits: config.limits.clone(),
            listen: config.listen,
            background,
        })
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
        }
    }

    /// The configured listen address.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The proxy service, for embedding in another server.
    pub fn service(&self) -> Proxy {
        Proxy::new(self.shared.clone())
    }

    /// Binds `addr` and serves in the background until [`RunningGateway::shutdown`].
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn spawn(self, addr: SocketAddr) -> std::io::Result<RunningGateway> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(self.serve(listener, async move {
            let _ = rx.wait_for(|v| *v).await;
        }));
        Ok(RunningGateway { addr, stop, task })
    }

    /// Serves on `listener` until `shutdown` completes, then stops accepting and waits up to
    /// the grace period for in-flight requests.
    ///
    /// # Errors
    /// Only if the listener itself fails irrecoverably.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(self.limits.header_read_timeout_secs))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .keep_alive_interval(Duration::from_secs(30));
        let graceful = GracefulShutdown::new();
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let handshake_timeout = Duration::from_secs(self.limits.tls_handshake_timeout_secs);
        let service = Proxy::new(self.shared.clone());
        tokio::pin!(shutdown);
        tracing::info!(addr = %listener.local_addr()?, tls = self.tls.is_some(), "entitygate listening");
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
                tracing::warn!(%peer, "connection limit reached; closing");
                continue;
            };
            let _ = stream.set_nodelay(true);
            let svc = TowerToHyperService::new(service.clone());
            let watcher = graceful.watcher();
            let builder = builder.clone();
            let tls = self.tls.clone();
            tokio::spawn(async move {
                let result = match tls {
                    None => {
                        let conn = builder.serve_connection(TokioIo::new(stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                    Some(acceptor) => {
                        let tls_stream =
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder.serve_connection(TokioIo::new(tls_stream), svc);
                        watcher.watch(conn.into_owned()).await
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        for task in &self.background {
            task.abort();
        }
        let grace = Duration::from_secs(self.limits.shutdown_grace_secs);
        match tokio::time::timeout(grace, graceful.shutdown()).await {
            Ok(()) => tracing::info!("all connections drained; stopped"),
            Err(_) => tracing::warn!(?grace, "grace period over; stopping with connections open"),
        }
        Ok(())
    }
}

// === impl RunningGateway ===

impl RunningGateway {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
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
