//! Test support: a sandbox Composio and a gateway in front of it, both on 127.0.0.1:0, a
//! client that speaks to the gateway over a real socket, and token minting.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use entitygate::sandbox::{Recorded, Sandbox};
use entitygate::{Config, Gateway, RunningGateway};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Value};

/// The gateway's real Composio key in tests. Tests assert it never comes back.
pub const API_KEY: &str = "sk_test_REAL_COMPOSIO_KEY_0123456789abcdef";
/// The admin bearer token, in `ADMIN_TOKEN` (`[admin] token_env = "ADMIN_TOKEN"`).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Named operators' tokens (`[[admin.operators]]`), in `DANA_TOKEN` and `ERIN_TOKEN`.
pub const DANA_TOKEN: &str = "operator-dana-token-0123456789";
pub const ERIN_TOKEN: &str = "operator-erin-token-0123456789";
/// The approvals notification secret, in `APPROVALS_WEBHOOK_SECRET`.
pub const APPROVALS_SECRET: &str = "approvals-webhook-secret-for-tests";
/// HS256 secret of the test IdP.
pub const SECRET: &str = "test-only-hs256-secret-0123456789abcdef0123456789";
pub const ISSUER: &str = "https://idp.test/";
pub const AUDIENCE: &str = "entitygate";

pub struct Harness {
    pub sandbox: Sandbox,
    pub gateway: Option<RunningGateway>,
    pub addr: SocketAddr,
    upstream_addr: SocketAddr,
    /// The audit file this harness's gateway writes, removed when the harness is dropped.
    audit_file: Option<std::path::PathBuf>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// The refusal's slug, from Composio's error envelope.
    pub fn slug(&self) -> String {
        self.json()["error"]["slug"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The JSON-RPC answers of an MCP reply (JSON or event stream, batches flattened).
    pub fn mcp_answers(&self) -> Vec<Value> {
        let sse = self
            .headers
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let all: Vec<Value> = if sse {
            self.text()
                .split("\n\n")
                .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|d| serde_json::from_str(d).ok())
                .collect()
        } else {
            vec![self.json()]
        };
        all.into_iter()
            .flat_map(|v| match v {
                Value::Array(a) => a,
                one => vec![one],
            })
            .collect()
    }
    /// An MCP reply's JSON-RPC message: the JSON body, or an event stream's last data event
    /// (`null` when it has none).
    pub fn mcp_message(&self) -> Value {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if ct.starts_with("text/event-stream") {
            self.text()
                .split("\n\n")
                .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .last()
                .unwrap_or(Value::Null)
        } else {
            self.json()
        }
    }
    /// The MCP answer to JSON-RPC request `id` (panics, naming the reply, when there is none).
    pub fn mcp_answer(&self, id: u64) -> Value {
        self.mcp_answers()
            .into_iter()
            .find(|a| a["id"] == id)
            .unwrap_or_else(|| panic!("no answer to {id}: {}", self.text()))
    }
}

pub fn config_toml(upstream: SocketAddr, extra: &str) -> String {
    // Audit lines go to a file per gateway, not to the test runner's stdout.
    let audit = if extra.contains("[audit]") {
        String::new()
    } else {
        let path =
            std::env::temp_dir().join(format!("entitygate-test-audit-{}.jsonl", uuid_like()));
        format!("[audit]\npath = {:?}\n", path.display().to_string())
    };
    format!(
        r#"
listen = "127.0.0.1:0"
[upstream]
base_url = "http://{upstream}"
api_key_env = "COMPOSIO_API_KEY"
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
leeway_secs = 5
[[auth.keys]]
alg = "HS256"
secret_env = "JWT_SECRET"
{audit}
{extra}
"#
    )
}

/// A process-unique suffix for temp files.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn env() -> HashMap<String, String> {
    [
        ("COMPOSIO_API_KEY".to_owned(), API_KEY.to_owned()),
        ("JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
        ("DANA_TOKEN".to_owned(), DANA_TOKEN.to_owned()),
        ("ERIN_TOKEN".to_owned(), ERIN_TOKEN.to_owned()),
        (
            "APPROVALS_WEBHOOK_SECRET".to_owned(),
            APPROVALS_SECRET.to_owned(),
        ),
    ]
    .into()
}

impl Harness {
    /// Sandbox with demo data and a gateway with the default policy.
    pub async fn start() -> Self {
        Self::with(Sandbox::with_demo_data(API_KEY), "").await
    }

    /// Same, with extra TOML appended to the config (tables after `[[auth.keys]]`).
    pub async fn with_config(extra: &str) -> Self {
        Self::with(Sandbox::with_demo_data(API_KEY), extra).await
    }

    pub async fn with(sandbox: Sandbox, extra: &str) -> Self {
        Self::with_top(sandbox, "", extra).await
    }

    /// Same, with `top` (top-level keys such as `public_url`) put before every table.
    pub async fn with_top(sandbox: Sandbox, top: &str, extra: &str) -> Self {
        let upstream = sandbox.start().await.expect("sandbox starts");
        let config = Config::from_toml(&format!("{top}\n{}", config_toml(upstream, extra)))
            .expect("test config parses");
        // Only the file the harness chose itself; a test that configures its own reads it later.
        let audit_file = config
            .audit
            .path
            .clone()
            .filter(|_| !extra.contains("[audit]"));
        let gateway = Gateway::builder(config)
            .env(env())
            .build()
            .await
            .expect("gateway builds");
        let running = gateway
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binds");
        let addr = running.local_addr();
        Self {
            sandbox,
            gateway: Some(running),
            addr,
            upstream_addr: upstream,
            audit_file,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Runs `gateway` on 127.0.0.1 port 0 as this harness's gateway (the previous one, if any,
    /// stopped by the caller), on the same sandbox.
    pub async fn serve(&mut self, gateway: Gateway) {
        let running = gateway
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binds");
        self.addr = running.local_addr();
        self.gateway = Some(running);
    }

    /// The sandbox's address (the gateway's upstream).
    pub fn upstream_addr(&self) -> SocketAddr {
        self.upstream_addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a request with `token` in `x-api-key` (if any) and a JSON body (if any).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        if let Some(t) = token {
            req = req.header("x-api-key", t);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&v).unwrap())
            }
            None => Bytes::new(),
        };
        self.raw(req.body(Full::new(body)).unwrap()).await
    }

    pub async fn raw(&self, req: Request<Full<Bytes>>) -> Reply {
        let resp = self.client.request(req).await.expect("gateway answers");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        let reply = Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        };
        assert_no_key_leak(&reply);
        reply
    }

    pub async fn execute(&self, user: &str, tool: &str, body: Value) -> Reply {
        let t = token(user);
        self.send(
            Method::POST,
            &format!("/api/v3.1/tools/execute/{tool}"),
            Some(&t),
            Some(body),
        )
        .await
    }

    /// Sends `method path` to the admin listener with `Authorization: Bearer <bearer>` (if
    /// any) and a JSON body (if any).
    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let addr = self
            .gateway
            .as_ref()
            .and_then(RunningGateway::admin_addr)
            .expect("an admin listener");
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(t) = bearer {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Bytes::from(serde_json::to_vec(&v).unwrap())
            }
            None => Bytes::new(),
        };
        self.raw(req.body(Full::new(body)).unwrap()).await
    }

    /// Requests the sandbox received for `path_prefix`.
    pub fn upstream(&self, path_prefix: &str) -> Vec<Recorded> {
        self.sandbox.requests_to(path_prefix)
    }

    /// Asserts that nothing at all reached Composio.
    pub fn assert_nothing_forwarded(&self) {
        let seen = self.sandbox.requests();
        assert!(
            seen.is_empty(),
            "expected nothing upstream, saw {:?}",
            seen.iter()
                .map(|r| (&r.method, &r.path))
                .collect::<Vec<_>>()
        );
    }

    /// Asserts that no tool execution reached Composio.
    pub fn assert_no_execution(&self) {
        assert_eq!(self.sandbox.count("POST", "/api/v3.1/tools/execute"), 0);
        assert_eq!(self.sandbox.count("POST", "/api/v3/tools/execute"), 0);
        assert_eq!(self.sandbox.count("POST", "/api/v2/actions"), 0);
    }

    pub async fn shutdown(mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
        self.sandbox.stop();
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(path) = &self.audit_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Every request that reached the sandbox carried exactly one credential: the real key.
pub fn assert_only_real_key(r: &Recorded) {
    assert_eq!(
        r.header_all("x-api-key"),
        vec![API_KEY],
        "{} {}",
        r.method,
        r.path
    );
    for h in [
        "authorization",
        "x-user-api-key",
        "x-org-api-key",
        "cookie",
        "proxy-authorization",
    ] {
        assert!(r.header(h).is_none(), "{h} leaked upstream on {}", r.path);
    }
}

/// The gateway's key never appears in what callers receive.
pub fn assert_no_key_leak(reply: &Reply) {
    assert!(
        !reply.text().contains(API_KEY),
        "key leaked in body: {}",
        reply.text()
    );
    for (name, value) in &reply.headers {
        assert!(
            !String::from_utf8_lossy(value.as_bytes()).contains(API_KEY),
            "key leaked in header {name}"
        );
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A valid token for `user`.
pub fn token(user: &str) -> String {
    token_with(json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}))
}

/// An HS256 token with arbitrary claims, signed with the test secret.
pub fn token_with(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// One webhook delivery as a receiver saw it.
pub struct Delivery {
    /// The `x-entitygate-timestamp` header ("" when absent).
    pub timestamp: String,
    /// The `x-entitygate-signature` header ("" when absent).
    pub signature: String,
    pub body: Bytes,
}

/// A webhook receiver on 127.0.0.1 port 0: each delivery goes to `on_delivery`, whose status
/// is the answer. Answers its address.
pub async fn webhook_receiver<F, Fut>(on_delivery: F) -> SocketAddr
where
    F: Fn(Delivery) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = StatusCode> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let on_delivery = on_delivery.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let on_delivery = on_delivery.clone();
                    async move {
                        let hdr = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let (timestamp, signature) =
                            (hdr("x-entitygate-timestamp"), hdr("x-entitygate-signature"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let status = on_delivery(Delivery {
                            timestamp,
                            signature,
                            body,
                        })
                        .await;
                        let mut r = http::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}
