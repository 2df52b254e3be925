//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /reload`, the kill switch
//! (`/deny`, [`deny`]), approvals (`/approvals`, [`approvals`]) and `POST /explain`, on an address of its own so that none of it is reachable through the
//! proxy listener. Health, readiness and metrics are open; every endpoint that changes state
//! or reveals decisions needs the admin bearer token ([`auth`]), and is disabled when none is
//! configured. A failed authentication is audited and slows later attempts from its source,
//! never locking the right token out ([`throttle`]). Bind it to loopback or a cluster-internal
//! address all the same.
//!
//! Bounded like the proxy listener, more tightly: HTTP/1 only, `[admin] max_connections`,
//! small request heads, a deadline from accept to the first request head and an idle
//! timeout. A browser cannot be made to use it: a request whose `Host` is not the address
//! the connection arrived on (or an `allowed_hosts` entry), or whose `Origin` is not one of
//! those, is refused with 403 (DNS rebinding, cross-site `POST /reload`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::conn::{Activity, Deadlines, Tracked, Watched};
use crate::control::Control;

pub(crate) mod approvals;
pub mod auth;
pub mod console;
mod deny;
pub(crate) mod throttle;

pub use auth::{Actor, AdminToken, Refused};
use throttle::{Throttle, Via};

/// Time allowed from accept to a complete request head.
const FIRST_REQUEST: Duration = Duration::from_secs(5);
/// A complete request head within 5 s of accept or of its first byte; an admin connection
/// with no request in flight is closed after 30 s.
const DEADLINES: Deadlines = Deadlines {
    head: FIRST_REQUEST,
    keepalive: Duration::from_secs(30),
};
/// Request head cap (hyper's smallest read buffer).
const MAX_HEAD: usize = 8 * 1024;
/// Header fields per request.
const MAX_HEADERS: usize = 32;

/// Serves the admin endpoints on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, control: Arc<dyn Control>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening");
    }
    let permits = Arc::new(Semaphore::new(control.admin().max_connections.max(1)));
    // `[admin]` is fixed at start (a reload does not change it), and so is where its token
    // is read from; the token itself is read on every check.
    let token = AdminToken::from_config(control.admin());
    // One throttle for the bearer API and the console's sign-in form: guessing through one
    // does not start afresh on the other.
    let throttle = Arc::new(Throttle::default());
    let console = console::Console::new(control.as_ref(), throttle.clone());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(FIRST_REQUEST)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            crate::metrics::connection_refused("admin");
            continue;
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let conn = Arc::new(Conn {
            control: control.clone(),
            token: token.clone(),
            throttle: throttle.clone(),
            console: console.clone(),
            hosts: Hosts::new(local, &control.admin().allowed_hosts),
            source: peer.ip(),
        });
        let builder = builder.clone();
        tokio::spawn(async move {
            let activity = Activity::new();
            let svc = Tracked::new(
                tower::service_fn(move |req: Request<Incoming>| {
                    let conn = conn.clone();
                    async move { Ok::<_, Infallible>(guarded(&conn, req).await) }
                }),
                activity.clone(),
                Some(peer),
            );
            let conn = builder.serve_connection(
                TokioIo::new(Watched::new(stream, activity.clone())),
                TowerToHyperService::new(svc),
            );
            tokio::select! {
                _ = conn => {}
                () = activity.expired(DEADLINES) => {}
            }
            drop(permit);
        });
    }
}

/// What the requests of one admin connection share.
struct Conn {
    control: Arc<dyn Control>,
    /// The bearer token of the state-changing admin endpoints.
    token: AdminToken,
    /// Failed authentications by source, shared by every connection.
    throttle: Arc<Throttle>,
    console: Option<Arc<console::Console>>,
    hosts: Hosts,
    /// The peer's address: whose failed authentications slow whose attempts.
    source: IpAddr,
}

/// The `Host` values a connection may name: the address it arrived on, `localhost` on
/// loopback, and the configured extras.
struct Hosts {
    allowed: Vec<String>,
}

impl Hosts {
    fn new(local: SocketAddr, extra: &[String]) -> Self {
        let port = local.port();
        let mut allowed = vec![local.to_string()];
        if local.ip().is_loopback() {
            allowed.push(format!("localhost:{port}"));
        }
        for h in extra {
            let h = h.to_ascii_lowercase();
            if h.contains(':') && !h.ends_with(']') {
                allowed.push(h);
            } else {
                allowed.push(format!("{h}:{port}"));
                allowed.push(h);
            }
        }
        Self { allowed }
    }

    fn host_ok(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed.contains(&host)
    }

    /// An `Origin` is acceptable when it is `http(s)://` one of the allowed hosts.
    fn origin_ok(&self, origin: &str) -> bool {
        let rest = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        rest.is_some_and(|h| self.host_ok(h))
    }
}

/// Refuses requests that a browser was made to send (see the module documentation).
async fn guarded(conn: &Conn, req: Request<Incoming>) -> Response<console::Body> {
    use http_body_util::BodyExt;
    let hosts = &conn.hosts;
    let header = |name| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
    };
    let foreign_host = header(header::HOST).is_some_and(|h| !hosts.host_ok(h));
    let foreign_origin = header(header::ORIGIN).is_some_and(|o| !hosts.origin_ok(o));
    let multiple = req.headers().get_all(header::HOST).iter().count() > 1
        || req.headers().get_all(header::ORIGIN).iter().count() > 1;
    if foreign_host || foreign_origin || multiple {
        tracing::warn!(method = %req.method(), path = req.uri().path(),
            "admin request from a foreign Host or Origin refused");
        return text(StatusCode::FORBIDDEN, "forbidden\n").map(BodyExt::boxed);
    }
    let path = req.uri().path();
    let console = conn.console.as_ref();
    if let Some(console) = console.filter(|_| path == "/ui" || path.starts_with("/ui/")) {
        return console.handle(&conn.control, conn.source, req).await;
    }
    route(conn, req).await.map(BodyExt::boxed)
}

/// Whether the request carries the admin token: `Ok`, or the answer to send instead. A
/// source with recent failures waits first ([`throttle`]); a failure is audited.
#[allow(clippy::result_large_err)]
async fn authorized(conn: &Conn, req: &Request<Incoming>) -> Result<Actor, Response<Full<Bytes>>> {
    let control = &*conn.control;
    conn.throttle.wait(conn.source).await;
    match conn.token.check(control.env(), req.headers()) {
        Ok(actor) => {
            conn.throttle.succeeded(conn.source);
            Ok(actor)
        }
        Err(refused) => {
            crate::metrics::admin_refused();
            throttle::failed(
                &control.rules().load().audit,
                &conn.throttle,
                conn.source,
                Via::Api,
                req.method(),
                req.uri().path(),
                refused,
            );
            Err(json_response(
                refused.status(),
                &json!({"error": refused.message()}),
            ))
        }
    }
}

async fn route(conn: &Conn, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let control = &*conn.control;
    let open = matches!(
        (req.method(), req.uri().path()),
        (&Method::GET, "/healthz" | "/readyz" | "/metrics")
    );
    let actor = if open {
        Actor::Admin
    } else {
        match authorized(conn, &req).await {
            Ok(actor) => actor,
            Err(refusal) => return refusal,
        }
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => ready(control).await,
        (&Method::GET, "/metrics") => {
            let shared = control.rules().load();
            let mut r = text(
                StatusCode::OK,
                crate::metrics::render(shared.connections().stats()),
            );
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            r
        }
        (&Method::POST, "/reload") => match control.reload().await {
            Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
            Err(e) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"reloaded": false, "error": e.to_string()}),
            ),
        },
        (&Method::POST, "/explain") => explain(control, req).await,
        (_, p) if p == "/deny" || p.starts_with("/deny/") => deny::handle(control, req)
            .await
            .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
        (_, p) if p == "/approvals" || p.starts_with("/approvals/") => {
            approvals::handle(control, &actor, req)
                .await
                .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Largest `POST /explain` body read.
const MAX_EXPLAIN_BODY: usize = 1 << 20;

/// `POST /explain` (admin token checked by [`route`]) with
/// `{"token": JWT, "request": "POST /api/...", "body": {...}, "live": false}`: the dry run of
/// `entitygate explain` against the configuration file the gateway runs (read again, so a
/// policy can be tried by editing the file before `POST /reload`).
async fn explain(control: &dyn Control, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let bad = |why: &str| json_response(StatusCode::BAD_REQUEST, &json!({"error": why}));
    let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_EXPLAIN_BODY)
        .collect()
        .await
    else {
        return bad("unreadable or too large body");
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return bad("the body must be a JSON object");
    };
    let (Some(token), Some(line)) = (v["token"].as_str(), v["request"].as_str()) else {
        return bad("`token` and `request` are required");
    };
    let Some((method, target)) = line.trim().split_once(' ') else {
        return bad("`request` must be \"METHOD /path\"");
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return bad("`request` has no valid method");
    };
    let request = crate::explain::ExplainRequest {
        method,
        target: target.trim().to_owned(),
        token: token.to_owned(),
        body: match &v["body"] {
            serde_json::Value::Null => None,
            b => Some(b.to_string().into_bytes()),
        },
        live: v["live"].as_bool().unwrap_or(false),
    };
    match dry_run(control, &request).await {
        Ok(e) => json_response(StatusCode::OK, &json!(e)),
        Err(e @ DryRunError::Invalid(_)) => bad(&e.to_string()),
    }
}

/// Why [`dry_run`] made no explanation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DryRunError {
    /// The configuration file does not load or build.
    #[error("{0}")]
    Invalid(String),
}

/// The dry run of `POST /explain` and of the console's explain page: `request` against the
/// configuration file the gateway runs (read again, so a policy can be tried by editing the
/// file before `POST /reload`; without a file, the configuration in force) and the running
/// gateway's kill switch. One function, so the two answers cannot differ.
pub(crate) async fn dry_run(
    control: &dyn Control,
    request: &crate::explain::ExplainRequest,
) -> Result<crate::explain::Explanation, DryRunError> {
    // A gateway built in-process (no file) explains against the configuration in force.
    let config = match control.config_path() {
        Some(path) => {
            crate::config::Config::load(path).map_err(|e| DryRunError::Invalid(e.to_string()))?
        }
        None => control.applied(),
    };
    let kill_switch = control.rules().load().kill_switch.clone();
    crate::explain::explain_with(&config, control.env(), request, Some(kill_switch))
        .await
        .map_err(|e| DryRunError::Invalid(e.to_string()))
}

/// Ready when keys are loaded and Composio answered recently (or answers a probe now).
async fn ready(control: &dyn Control) -> Response<Full<Bytes>> {
    let shared = control.rules().load_full();
    let keys = shared.keys_ready();
    let window = Duration::from_secs(control.admin().ready_window_secs);
    let upstream = shared.upstream.reachable(window).await;
    let status = if keys && upstream {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    // A secret file that failed to load leaves the previous secrets in use: ready, but said.
    let secrets_error = control.secrets_error();
    let mut body = json!({"ready": keys && upstream, "keys_loaded": keys,
        "upstream_reachable": upstream, "secrets_error": secrets_error});
    if let Some(cluster) = &shared.cluster {
        // Redis away does not make a replica unready: it decides alone (per-replica rate
        // limits, its own lookups) and says so here.
        body["shared"] = json!(cluster.health());
    }
    json_response(status, &body)
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = text(status, serde_json::to_vec(v).unwrap_or_default());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
