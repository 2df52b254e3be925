//! The ceiling of entitygate's stack, for `bench/run.sh` group `ceiling` (BENCHMARKS.md): a
//! reverse proxy with no checks at all, built from the same parts as the gateway.
//!
//! ```sh
//! cargo run --release --example bench_minimal_proxy -- --listen 127.0.0.1:18083 \
//!     --upstream http://127.0.0.1:18001
//! ```
//!
//! - **Accept**: tokio's `TcpListener`, one task per connection, hyper-util's `auto` builder
//!   (HTTP/1.1, or h2c when the connection opens with the HTTP/2 preface — the same detection
//!   entitygate's `accept` module does by peeking), with the HTTP/1 head limits and the HTTP/2
//!   windows, send buffer and limits entitygate's `server::serving` sets (the `server::H2_*`
//!   constants).
//! - **Forward**: the request body is read whole (entitygate reads it to parse it), `Host` is
//!   dropped and `x-api-key` set, and the request goes out over
//!   [`entitygate::client::build_client`] — the very client, connector and pool settings the
//!   gateway sends to Composio with (hyper-util's legacy `Client` over hyper-rustls,
//!   HTTP/1.1 + HTTP/2 by ALPN, 256 idle connections per host).
//! - **Relay**: the upstream's response is returned as it arrives; a failed upstream is a
//!   bare 502.
//!
//! No token, no policy, no connection gate, no audit, no watchdog, no connection parking:
//! entitygate's row divided by this one is what its checks cost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use entitygate::client::{build_client, HttpClient};
use entitygate::config::{LimitsConfig, UpstreamConfig};
use entitygate::server::{H2_CONNECTION_WINDOW, H2_MAX_SEND_BUF, H2_STREAM_WINDOW};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

struct Proxy {
    client: HttpClient,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    api_key: HeaderValue,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen: SocketAddr = arg(&args, "--listen")
        .unwrap_or_else(|| "127.0.0.1:18083".into())
        .parse()?;
    let upstream = arg(&args, "--upstream").unwrap_or_else(|| "http://127.0.0.1:18001".into());
    let cfg = UpstreamConfig {
        base_url: upstream.clone(),
        ..UpstreamConfig::default()
    };
    let base: Uri = upstream.parse()?;
    let parts = base.into_parts();
    let proxy = Arc::new(Proxy {
        client: build_client(&cfg)?,
        scheme: parts.scheme.ok_or("--upstream needs a scheme")?,
        authority: parts.authority.ok_or("--upstream needs a host")?,
        api_key: HeaderValue::from_static("sk_bench_only"),
    });

    // entitygate's `server::serving`, knob for knob, on the auto builder.
    let limits = LimitsConfig::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(limits.max_request_head_bytes)
        .max_headers(limits.max_request_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .max_header_list_size(u32::try_from(limits.max_request_head_bytes).unwrap_or(u32::MAX))
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .keep_alive_interval(Duration::from_secs(30));
    let builder = Arc::new(builder);

    let listener = TcpListener::bind(listen).await?;
    eprintln!("bench_minimal_proxy on {listen} -> {upstream}");
    loop {
        let (stream, _) = listener.accept().await?;
        // As entitygate's accept loop: no Nagle delay on small answers.
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(req).await) }
            });
            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
}

impl Proxy {
    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
            return status(StatusCode::BAD_REQUEST);
        };
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let Ok(uri) = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
        else {
            return status(StatusCode::BAD_REQUEST);
        };
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        parts.headers.remove(header::HOST);
        parts.headers.insert("x-api-key", self.api_key.clone());
        match self
            .client
            .request(Request::from_parts(parts, Full::new(body)))
            .await
        {
            Ok(resp) => resp.map(BodyExt::boxed_unsync),
            Err(_) => status(StatusCode::BAD_GATEWAY),
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = code;
    resp
}
