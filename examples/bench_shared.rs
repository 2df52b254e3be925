#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Issue 14: what `[shared]` costs on the hot path, and how fast an invalidation crosses
//! replicas. Starts its own `redis-server` on a free loopback port, a sandbox Composio, and
//! gateways in this process.
//!
//! 1. Warm execution (cached connection status, rate limit on): a single-node gateway against
//!    one with `[shared]` (the rate-limit decision is a GCRA script on Redis), measured in
//!    interleaved blocks of sequential requests.
//! 2. Invalidation delay: an expiry webhook posted to replica A; the time until replica B
//!    (which had the connection cached as ACTIVE) refuses, polling B back to back.
//!
//! ```sh
//! cargo run --release --example bench_shared [-- REQUESTS ROUNDS]
//! ```

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use entitygate::expiry::inbound;
use entitygate::sandbox::{Account, Sandbox, Tool};
use entitygate::{Config, Gateway, RunningGateway};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{EncodingKey, Header};

const SECRET: &str = "bench-only-hs256-secret-0123456789abcdef0123456789";
const KEY: &str = "sk_bench_shared";
const HOOK: &str = "bench-composio-webhook-secret";
const TOOL: &str = "GITHUB_GET_THE_AUTHENTICATED_USER";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(sub: &str) -> String {
    let claims = serde_json::json!({
        "sub": sub, "iss": "https://idp.test/", "aud": "entitygate", "exp": now() + 3600,
    });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

async fn gateway(upstream: std::net::SocketAddr, extra: &str) -> RunningGateway {
    // Audit lines to a file, as in production, not to this program's output.
    let audit = std::env::temp_dir().join(format!("eg-bench-audit-{}.jsonl", uuid::Uuid::new_v4()));
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
[audit]
path = "{}"
[upstream]
base_url = "http://{upstream}"
api_key_env = "COMPOSIO_API_KEY"
[auth]
issuer = "https://idp.test/"
audience = "entitygate"
[[auth.keys]]
alg = "HS256"
secret_env = "JWT_SECRET"
[limits]
per_subject_rps = 1000000.0
burst = 1000000
[connections]
cache_ttl_secs = 3600
negative_ttl_secs = 3600
{extra}
"#,
        audit.display()
    );
    let env: HashMap<String, String> = [
        ("COMPOSIO_API_KEY".to_owned(), KEY.to_owned()),
        ("JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("COMPOSIO_HOOK_SECRET".to_owned(), HOOK.to_owned()),
    ]
    .into();
    Gateway::builder(Config::from_toml(&toml).unwrap())
        .env(env)
        .build()
        .await
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

async fn execute(
    client: &Client<HttpConnector, Full<Bytes>>,
    gw: &RunningGateway,
    tok: &str,
) -> StatusCode {
    let req = Request::post(format!(
        "http://{}/api/v3.1/tools/execute/{TOOL}",
        gw.local_addr()
    ))
    .header("x-api-key", tok)
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(br#"{"arguments":{}}"#)))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let _ = resp.into_body().collect().await.unwrap();
    status
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(20_000);
    let rounds = args.get(1).copied().unwrap_or(200);

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut redis = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let dir = std::env::temp_dir().join(format!("eg-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let sandbox = Sandbox::new(KEY);
    sandbox.add_tool(Tool::new(TOOL, "github", false));
    sandbox.add_account(Account::new("ca_alice", "alice", "github", "ACTIVE"));
    for i in 0..rounds {
        sandbox.add_account(Account::new(
            &format!("ca_u{i}"),
            &format!("u{i}"),
            "github",
            "ACTIVE",
        ));
    }
    sandbox.set_record_limit(1000);
    let upstream = sandbox.start().await.unwrap();
    let shared = |n: usize| {
        format!(
            "[shared]\nredis_url = \"redis://127.0.0.1:{port}/0\"\nprobe_interval_ms = 100\n\
             [audit_job]\nstate_path = \"{}\"\ncomposio_webhook_secret_env = \"COMPOSIO_HOOK_SECRET\"\n",
            dir.join(format!("s{n}.redb")).display()
        )
    };
    let single = gateway(upstream, "").await;
    let a = gateway(upstream, &shared(0)).await;
    let b = gateway(upstream, &shared(1)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let tok = token("alice");

    // 1. Warm execution, interleaved blocks.
    for gw in [&single, &a] {
        for _ in 0..500 {
            assert_eq!(execute(&client, gw, &tok).await, StatusCode::OK);
        }
    }
    let (mut one, mut many) = (Vec::new(), Vec::new());
    let block = 1000;
    for _ in 0..requests.div_ceil(block) {
        for (gw, out) in [(&single, &mut one), (&a, &mut many)] {
            for _ in 0..block {
                let t = Instant::now();
                assert_eq!(execute(&client, gw, &tok).await, StatusCode::OK);
                out.push(t.elapsed());
            }
        }
    }
    println!("warm execution, {} requests each, sequential:", one.len());
    println!(
        "  single node        p50 {}  p90 {}  p99 {}",
        us(pct(&mut one, 0.50)),
        us(pct(&mut one, 0.90)),
        us(pct(&mut one, 0.99))
    );
    println!(
        "  [shared] on Redis  p50 {}  p90 {}  p99 {}",
        us(pct(&mut many, 0.50)),
        us(pct(&mut many, 0.90)),
        us(pct(&mut many, 0.99))
    );

    // 2. Invalidation delay across replicas.
    let mut delays = Vec::new();
    for i in 0..rounds {
        let user = format!("u{i}");
        let t = token(&user);
        assert_eq!(execute(&client, &b, &t).await, StatusCode::OK);
        assert_eq!(execute(&client, &b, &t).await, StatusCode::OK);
        sandbox.set_account_status(&format!("ca_u{i}"), "EXPIRED");
        let id = format!("msg_{i}");
        let body = serde_json::json!({
            "id": id, "type": "composio.connected_account.expired",
            "data": {"id": format!("ca_u{i}"), "user_id": user, "status": "EXPIRED",
                "toolkit": {"slug": "github"}, "is_disabled": false}
        })
        .to_string();
        let ts = now();
        let sig = inbound::sign(HOOK.as_bytes(), &id, ts, body.as_bytes());
        let req = Request::post(format!("http://{}/webhooks/composio", a.local_addr()))
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let started = Instant::now();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let _ = resp.into_body().collect().await.unwrap();
        loop {
            if execute(&client, &b, &t).await == StatusCode::BAD_REQUEST {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never refused");
        }
        delays.push(started.elapsed());
    }
    println!("invalidation, webhook on A until B refuses, {rounds} rounds:");
    println!(
        "  p50 {}  p90 {}  p99 {}  max {}",
        us(pct(&mut delays, 0.50)),
        us(pct(&mut delays, 0.90)),
        us(pct(&mut delays, 0.99)),
        us(pct(&mut delays, 1.0))
    );
    for g in [single, a, b] {
        g.shutdown().await;
    }
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
