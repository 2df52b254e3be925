//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /reload` and (with a token)
//! `POST /explain`, on an address of
//! its own so that none of it is reachable through the proxy listener. It has no
//! authentication: bind it to loopback or a cluster-internal address.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::server::State;

/// Serves the admin endpoints on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening");
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn route(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => ready(state).await,
        (&Method::GET, "/metrics") => {
            let shared = state.current.load();
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
        (&Method::POST, "/reload") => match state.reload().await {
            Ok(()) => json_response(StatusCode::OK, &json!({"reloaded": true})),
            Err(e) => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"reloaded": false, "error": e.to_string()}),
            ),
        },
        (&Method::POST, "/explain") if state.admin.explain_token_env.is_some() => {
            explain(state, req).await
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Largest `POST /explain` body read.
const MAX_EXPLAIN_BODY: usize = 1 << 20;

/// `POST /explain` with `Authorization: Bearer <[admin] explain_token_env>` and
/// `{"token": JWT, "request": "POST /api/...", "body": {...}, "live": false}`: the dry run of
/// `entitygate explain` against the configuration file the gateway runs (read again, so a
/// policy can be tried by editing the file before `POST /reload`).
async fn explain(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt as _;
    let expected = state
        .admin
        .explain_token_env
        .as_deref()
        .and_then(|name| state.env().var(name))
        .filter(|t| !t.is_empty());
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let authorized = match (expected, given) {
        (Some(e), Some(g)) => {
            use sha2::Digest as _;
            // Compared as digests: equal lengths, and no early exit on the token's bytes.
            sha2::Sha256::digest(e.as_bytes()) == sha2::Sha256::digest(g.as_bytes())
        }
        _ => false,
    };
    if !authorized {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "POST /explain needs the admin explain token"}),
        );
    }
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
    let Some(path) = state.config_path() else {
        return json_response(
            StatusCode::CONFLICT,
            &json!({"error": "the gateway was not started from a config file"}),
        );
    };
    let config = match crate::config::Config::load(path) {
        Ok(c) => c,
        Err(e) => return bad(&e.to_string()),
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
    match crate::explain::explain(&config, state.env(), &request).await {
        Ok(e) => json_response(StatusCode::OK, &json!(e)),
        Err(e) => bad(&e.to_string()),
    }
}

/// Ready when keys are loaded and Composio answered recently (or answers a probe now).
async fn ready(state: &State) -> Response<Full<Bytes>> {
    let shared = state.current.load_full();
    let keys = shared.keys_ready();
    let window = Duration::from_secs(state.admin.ready_window_secs);
    let upstream = shared.upstream.reachable(window).await;
    let status = if keys && upstream {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"ready": keys && upstream, "keys_loaded": keys, "upstream_reachable": upstream}),
    )
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
