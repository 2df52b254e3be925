//! A minimal, fast stand-in for Composio, for `bench/run.sh` (BENCHMARKS.md). Not a test
//! double: it answers only what a tool execution through the gateway needs, as fast as it can.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- serve --listen 127.0.0.1:18001
//! cargo run --release --example bench_upstream -- mint --alg HS256 --secret-env SECRET \
//!     --issuer https://idp.bench/ --audience entitygate --prefix u --count 10000 --out tokens.txt
//! ```
//!
//! `serve` answers on loopback, over HTTP/1.1 with keep-alive and h2c (HTTP/2 with prior
//! knowledge, detected from the connection preface); with `--tls-cert PEM --tls-key PEM` over
//! TLS instead, offering the ALPN protocols of `--alpn` (default `h2,http/1.1`):
//! - `POST .../tools/execute/{slug}` (any prefix): reads the body, answers like Composio's
//!   execute endpoint;
//! - `GET /api/v3.1/tools/{slug}`: the tool's definition for the bench's GitHub tools
//!   ([`github_tools`]), else only its toolkit (always GitHub); `GET /api/v3.1/tools` lists
//!   the bench's GitHub tools (for `entitygate tools lock`);
//! - `GET /api/v3.1/connected_accounts?user_ids=U&...`: one ACTIVE GitHub account `ca_U`,
//!   after `--lookup-delay-ms` (to make a burst overlap one lookup, as against the real one);
//! - MCP over Streamable HTTP on `/mcp`, `/v3/mcp/{id}`, `/tool_router/{id}/mcp` ([`mcp`]):
//!   POST answers `application/json`, or with `--mcp-answer sse` a one-event
//!   `text/event-stream`; `initialize` hands out an `Mcp-Session-Id` (requests are accepted with
//!   or without one), notifications get 202, `tools/list` the GitHub tools of [`github_tools`],
//!   `tools/call` a small fixed result; `GET` with `Accept: text/event-stream` opens a stream
//!   that stays open; `DELETE` 200;
//! - `POST /api/v3.1/tool_router/session` (entitygate's MCP front door creates one per subject)
//!   and `GET /api/v3.1/tool_router/session/{id}` (its owner);
//! - `GET /__stats`: how many of each it answered (JSON; `http2`: how many came over HTTP/2;
//!   `mcp_streams_open`: event streams open now), `POST /__reset` sets them to 0.
//!
//! `mint` writes one token per line for users `{prefix}0 .. {prefix}{count-1}`, or one for
//! `--subject S` exactly (HS256 with the
//! secret from an environment variable, or RS256/ES256 with a PEM private key file).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

#[path = "bench_upstream/mcp.rs"]
mod mcp;

#[derive(Default)]
struct Stats {
    executes: AtomicU64,
    tool_lookups: AtomicU64,
    status_lookups: AtomicU64,
    other: AtomicU64,
    body_bytes: AtomicU64,
    /// Requests of any kind that arrived over HTTP/2 (to see what a proxy spoke upstream).
    http2: AtomicU64,
    mcp_calls: AtomicU64,
    mcp_initialize: AtomicU64,
    mcp_notifications: AtomicU64,
    mcp_lists: AtomicU64,
    mcp_deletes: AtomicU64,
    mcp_other: AtomicU64,
    mcp_streams_opened: AtomicU64,
    /// A gauge, not a counter: `__reset` leaves it alone.
    mcp_streams_open: AtomicU64,
    sessions_created: AtomicU64,
    session_lookups: AtomicU64,
}

struct Upstream {
    stats: Stats,
    lookup_delay: Duration,
    framing: mcp::Framing,
    next_session: AtomicU64,
}

const EXECUTE_ANSWER: &[u8] = br#"{"data":{"id":1347,"number":42,"state":"open","title":"Bug: login fails","html_url":"https://github.com/acme/app/issues/42"},"error":null,"successful":true,"log_id":"log_bench_0001"}"#;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args),
        Some("mint") => mint(&args),
        _ => {
            eprintln!("usage: bench_upstream serve --listen ADDR [--threads N] [--lookup-delay-ms MS] [--mcp-answer json|sse] [--tls-cert PEM --tls-key PEM [--alpn h2,http/1.1]]\n       bench_upstream mint --alg HS256|RS256|ES256 (--secret-env VAR | --key-file PEM) --issuer ISS --audience AUD (--prefix P --count N | --subject S) [--kid KID] [--ttl-secs S] --out FILE");
            std::process::exit(2);
        }
    }
}

fn serve(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = arg(args, "--listen")
        .unwrap_or_else(|| "127.0.0.1:18001".into())
        .parse()?;
    if !listen.ip().is_loopback() {
        return Err("bench_upstream listens on loopback only".into());
    }
    let threads: usize = arg(args, "--threads").map_or(Ok(1), |t| t.parse())?;
    let delay: u64 = arg(args, "--lookup-delay-ms").map_or(Ok(0), |t| t.parse())?;
    let framing = match arg(args, "--mcp-answer").as_deref() {
        None | Some("json") => mcp::Framing::Json,
        Some("sse") => mcp::Framing::Sse,
        Some(other) => return Err(format!("--mcp-answer json|sse, not {other}").into()),
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    let up = Arc::new(Upstream {
        stats: Stats::default(),
        lookup_delay: Duration::from_millis(delay),
        framing,
        next_session: AtomicU64::new(1),
    });
    let tls = match (arg(args, "--tls-cert"), arg(args, "--tls-key")) {
        (Some(cert), Some(key)) => {
            let alpn = arg(args, "--alpn").unwrap_or_else(|| "h2,http/1.1".into());
            Some(tokio_rustls::TlsAcceptor::from(tls_config(
                &cert, &key, &alpn,
            )?))
        }
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "bench_upstream listening on {scheme}://{}",
            listener.local_addr()?
        );
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let up = up.clone();
            match &tls {
                None => {
                    tokio::spawn(serve_connection(up, stream));
                }
                Some(acceptor) => {
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(up, stream).await;
                        }
                    });
                }
            }
        }
    })
}

/// One connection: HTTP/1.1 with keep-alive or HTTP/2 (h2c by its preface, or by ALPN).
async fn serve_connection<IO>(up: Arc<Upstream>, io: IO)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let up = up.clone();
        async move { Ok::<_, Infallible>(up.handle(req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let _ = builder.serve_connection(TokioIo::new(io), svc).await;
}

/// A rustls server configuration from PEM files (TEST-ONLY certificates in the bench).
fn tls_config(
    cert: &str,
    key: &str,
    alpn: &str,
) -> Result<Arc<rustls::ServerConfig>, Box<dyn std::error::Error>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.as_bytes().to_vec())
        .collect();
    Ok(Arc::new(config))
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> mcp::Answer {
    let mut resp = Response::new(Either::Left(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The value of `name` in a query string (no percent-decoding beyond what the bench needs:
/// user ids are plain).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

impl Upstream {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> mcp::Answer {
        let path = req.uri().path();
        let s = &self.stats;
        if req.version() == http::Version::HTTP_2 {
            s.http2.fetch_add(1, Ordering::Relaxed);
        }
        if mcp::is_mcp_path(path) {
            let method = req.method().clone();
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .map_or(&b""[..], HeaderValue::as_bytes)
                .to_owned();
            if method != Method::POST {
                return self.mcp(&method, &accept, b"");
            }
            return match req.into_body().collect().await {
                Ok(b) => self.mcp(&method, &accept, &b.to_bytes()),
                Err(_) => json(StatusCode::BAD_REQUEST, "{}"),
            };
        }
        let path = path.to_owned();
        if req.method() == Method::POST
            && (path == "/api/v3.1/tool_router/session" || path == "/api/v3/tool_router/session")
        {
            return match req.into_body().collect().await {
                Ok(b) => self.create_session(&b.to_bytes()),
                Err(_) => json(StatusCode::BAD_REQUEST, "{}"),
            };
        }
        if req.method() == Method::POST && path.contains("/tools/execute/") {
            let n = match req.into_body().collect().await {
                Ok(b) => b.to_bytes().len(),
                Err(_) => return json(StatusCode::BAD_REQUEST, "{}"),
            };
            s.executes.fetch_add(1, Ordering::Relaxed);
            s.body_bytes.fetch_add(n as u64, Ordering::Relaxed);
            return json(StatusCode::OK, EXECUTE_ANSWER);
        }
        if req.method() == Method::GET {
            if path == "/api/v3.1/connected_accounts" || path == "/api/v3/connected_accounts" {
                s.status_lookups.fetch_add(1, Ordering::Relaxed);
                let user = query_param(req.uri().query().unwrap_or(""), "user_ids")
                    .unwrap_or("")
                    .to_owned();
                if !self.lookup_delay.is_zero() {
                    tokio::time::sleep(self.lookup_delay).await;
                }
                let body = serde_json::json!({
                    "items": [{
                        "id": format!("ca_{user}"),
                        "status": "ACTIVE",
                        "is_disabled": false,
                        "toolkit": {"slug": "github"},
                    }],
                    "next_cursor": null,
                });
                return json(StatusCode::OK, body.to_string());
            }
            if let Some(slug) = path
                .strip_prefix("/api/v3.1/tools/")
                .or_else(|| path.strip_prefix("/api/v3/tools/"))
            {
                s.tool_lookups.fetch_add(1, Ordering::Relaxed);
                let body = github_tool(slug).unwrap_or_else(|| {
                    serde_json::json!({
                        "slug": slug,
                        "toolkit": {"slug": "github", "name": "GitHub"},
                        "no_auth": false,
                    })
                });
                return json(StatusCode::OK, body.to_string());
            }
            if path == "/api/v3.1/tools" || path == "/api/v3/tools" {
                s.other.fetch_add(1, Ordering::Relaxed);
                let body = serde_json::json!({ "items": github_tools(), "next_cursor": null });
                return json(StatusCode::OK, body.to_string());
            }
            if let Some(id) = path
                .strip_prefix("/api/v3.1/tool_router/session/")
                .or_else(|| path.strip_prefix("/api/v3/tool_router/session/"))
            {
                return self.session_owner(id);
            }
            if path == "/__stats" {
                let body = serde_json::json!({
                    "executes": s.executes.load(Ordering::Relaxed),
                    "tool_lookups": s.tool_lookups.load(Ordering::Relaxed),
                    "status_lookups": s.status_lookups.load(Ordering::Relaxed),
                    "other": s.other.load(Ordering::Relaxed),
                    "body_bytes": s.body_bytes.load(Ordering::Relaxed),
                    "http2": s.http2.load(Ordering::Relaxed),
                    "mcp_calls": s.mcp_calls.load(Ordering::Relaxed),
                    "mcp_initialize": s.mcp_initialize.load(Ordering::Relaxed),
                    "mcp_notifications": s.mcp_notifications.load(Ordering::Relaxed),
                    "mcp_lists": s.mcp_lists.load(Ordering::Relaxed),
                    "mcp_deletes": s.mcp_deletes.load(Ordering::Relaxed),
                    "mcp_other": s.mcp_other.load(Ordering::Relaxed),
                    "mcp_streams_opened": s.mcp_streams_opened.load(Ordering::Relaxed),
                    "mcp_streams_open": s.mcp_streams_open.load(Ordering::Relaxed),
                    "sessions_created": s.sessions_created.load(Ordering::Relaxed),
                    "session_lookups": s.session_lookups.load(Ordering::Relaxed),
                });
                return json(StatusCode::OK, body.to_string());
            }
        }
        if req.method() == Method::POST && path == "/__reset" {
            for c in [
                &s.executes,
                &s.tool_lookups,
                &s.status_lookups,
                &s.other,
                &s.body_bytes,
                &s.http2,
                &s.mcp_calls,
                &s.mcp_initialize,
                &s.mcp_notifications,
                &s.mcp_lists,
                &s.mcp_deletes,
                &s.mcp_other,
                &s.mcp_streams_opened,
                &s.sessions_created,
                &s.session_lookups,
            ] {
                c.store(0, Ordering::Relaxed);
            }
            return json(StatusCode::OK, "{}");
        }
        s.other.fetch_add(1, Ordering::Relaxed);
        json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"message":"not found (bench_upstream)"}}"#,
        )
    }
}

/// The toolkit version the bench's tool definitions are at (the bench bodies send it too).
const GITHUB_VERSION: &str = "20250909_00";

/// The bench's GitHub tools as Composio's v3 tool objects: what `GET /api/v3.1/tools/{slug}`
/// and the toolkit listing answer, so that `entitygate tools lock` can lock them and the
/// gateway's tool lock (bench/steps/toollock.toml) judges the same definitions on every
/// metadata read. Anything else that shows these tools (an MCP `tools/list`) should build
/// them from here, or the lock sees a drift.
fn github_tools() -> Vec<serde_json::Value> {
    let repo = serde_json::json!({
        "owner": {"type": "string", "description": "The account owner of the repository."},
        "repo": {"type": "string", "description": "The name of the repository."},
    });
    let mut issue_props = repo.as_object().cloned().unwrap_or_default();
    for (k, v) in [
        (
            "title",
            serde_json::json!({"type": "string", "description": "The title of the issue."}),
        ),
        (
            "body",
            serde_json::json!({"type": "string", "description": "The contents of the issue."}),
        ),
        (
            "labels",
            serde_json::json!({"type": "array", "items": {"type": "string"},
                "description": "Labels to associate with this issue."}),
        ),
        (
            "assignees",
            serde_json::json!({"type": "array", "items": {"type": "string"},
                "description": "Logins for users to assign to this issue."}),
        ),
    ] {
        issue_props.insert(k.to_owned(), v);
    }
    let tool = |slug: &str, name: &str, description: &str, input: serde_json::Value| {
        serde_json::json!({
            "slug": slug,
            "name": name,
            "description": description,
            "input_parameters": input,
            "output_parameters": {"type": "object", "properties": {
                "data": {"type": "object", "description": "The GitHub API's answer."},
                "successful": {"type": "boolean"},
                "error": {"type": ["string", "null"]},
            }, "required": ["data", "successful"]},
            "toolkit": {"slug": "github", "name": "GitHub"},
            "version": GITHUB_VERSION,
            "no_auth": false,
        })
    };
    vec![
        tool(
            "GITHUB_CREATE_AN_ISSUE",
            "Create an issue",
            "Creates a new issue in a GitHub repository the connected user can open issues in.",
            serde_json::json!({"type": "object", "properties": issue_props,
                "required": ["owner", "repo", "title"]}),
        ),
        tool(
            "GITHUB_GET_THE_AUTHENTICATED_USER",
            "Get the authenticated user",
            "Gets the profile of the connected GitHub user.",
            serde_json::json!({"type": "object", "properties": {}}),
        ),
        tool(
            "GITHUB_LIST_REPOSITORY_ISSUES",
            "List repository issues",
            "Lists the issues of a repository, newest first.",
            serde_json::json!({"type": "object", "properties": repo,
                "required": ["owner", "repo"]}),
        ),
    ]
}

/// One of [`github_tools`] by slug (ASCII case-insensitive).
fn github_tool(slug: &str) -> Option<serde_json::Value> {
    github_tools().into_iter().find(|t| {
        t["slug"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(slug))
    })
}

fn mint(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use std::io::Write;

    let need = |name: &str| arg(args, name).ok_or_else(|| format!("missing {name}"));
    let alg = need("--alg")?;
    let issuer = need("--issuer")?;
    let audience = need("--audience")?;
    // `--subject S`: one token for exactly S (the MCP table's "alice", whom every gateway's
    // rule names); else users {prefix}0 .. {prefix}{count-1}.
    let subject = arg(args, "--subject");
    let (prefix, count) = match &subject {
        Some(_) => (String::new(), 1),
        None => (need("--prefix")?, need("--count")?.parse()?),
    };
    let ttl: u64 = arg(args, "--ttl-secs").map_or(Ok(3600), |t| t.parse())?;
    let out = need("--out")?;
    let (algorithm, key) = match alg.as_str() {
        "HS256" => {
            let var = need("--secret-env")?;
            let secret = std::env::var(&var).map_err(|_| format!("{var} is not set"))?;
            (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
            )
        }
        "RS256" => {
            let pem = std::fs::read(need("--key-file")?)?;
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem)?)
        }
        "ES256" => {
            let pem = std::fs::read(need("--key-file")?)?;
            (Algorithm::ES256, EncodingKey::from_ec_pem(&pem)?)
        }
        other => return Err(format!("unsupported --alg {other}").into()),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let mut header = Header::new(algorithm);
    // `--kid`: agentgateway picks the JWKS key by the token's kid (the MCP table's peers).
    header.kid = arg(args, "--kid");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&out)?);
    for i in 0..count {
        let sub = subject.clone().unwrap_or_else(|| format!("{prefix}{i}"));
        let claims = serde_json::json!({
            "sub": sub, "iss": issuer, "aud": audience,
            "iat": now, "exp": now + ttl,
        });
        writeln!(w, "{}", jsonwebtoken::encode(&header, &claims, &key)?)?;
    }
    w.flush()?;
    Ok(())
}
