//! The admin listener: `/healthz`, `/readyz`, `/metrics` and `POST /reload`, on an address of
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
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
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
