//! MCP `tools/call` latency through the gateway vs direct to the same upstream (BENCHMARKS.md).
//!
//! ```sh
//! cargo run --release --example bench_mcp -- [REQUESTS] [CONCURRENCY]
//! ```
//!
//! Starts the sandbox Composio (its hosted MCP endpoint `/v3/mcp/mcp_1` is the upstream) and a
//! gateway in front of it, both on 127.0.0.1:0 in this process, then sends the same 2026-07-28
//! stateless `tools/call` (`GITHUB_GET_THE_AUTHENTICATED_USER`, JSON answer) to each, in
//! alternating rounds so that machine noise falls on both alike. Direct requests carry the
//! project key; gateway requests a TEST-ONLY HS256 token. Prints p50/p90/p99/p99.9 per target
//! and the difference. The gateway's connection cache is warm after the first request, as in
//! steady state.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use entitygate::sandbox::Sandbox;
use entitygate::{Config, Gateway};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const KEY: &str = "sk_bench_ONLY_0123456789abcdef";
const SECRET: &str = "bench-only-hs256-secret-0123456789abcdef0123456789";

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);

    let sandbox = Sandbox::with_demo_data(KEY);
    let upstream = sandbox.start().await.expect("sandbox starts");
    let toml = format!(
        r#"
listen = "127.0.0.1:0"
[upstream]
base_url = "http://{upstream}"
api_key_env = "BENCH_COMPOSIO_KEY"
[auth]
issuer = "https://idp.bench/"
audience = "entitygate"
[[auth.keys]]
alg = "HS256"
secret_env = "BENCH_JWT_SECRET"
[audit]
path = "/dev/null"
"#
    );
    let env: HashMap<String, String> = [
        ("BENCH_COMPOSIO_KEY".to_owned(), KEY.to_owned()),
        ("BENCH_JWT_SECRET".to_owned(), SECRET.to_owned()),
    ]
    .into();
    let config = Config::from_toml(&toml).expect("config");
    let gateway = Gateway::builder(config)
        .env(env)
        .build()
        .await
        .expect("gateway builds")
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice", "iss": "https://idp.bench/",
            "aud": "entitygate", "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    let direct = format!("http://{upstream}/v3/mcp/mcp_1?user_id=alice");
    let through = format!("http://{}/v3/mcp/mcp_1", gateway.local_addr());
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let targets = [
        ("direct", direct, KEY.to_owned()),
        ("gateway", through, token),
    ];

    // Warm-up: connections, token cache, tool and connection caches.
    for (_, url, cred) in &targets {
        for _ in 0..500 {
            one(&client, url, cred).await;
        }
    }
    let rounds = 10;
    let per_round = requests / rounds / concurrency;
    let mut lat: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, (_, url, cred)) in targets.iter().enumerate() {
            let mut tasks = Vec::new();
            for _ in 0..concurrency {
                let (client, url, cred) = (client.clone(), url.clone(), cred.clone());
                tasks.push(tokio::spawn(async move {
                    let mut out = Vec::with_capacity(per_round);
                    for _ in 0..per_round {
                        out.push(one(&client, &url, &cred).await);
                    }
                    out
                }));
            }
            for t in tasks {
                lat[i].extend(t.await.expect("task"));
            }
        }
    }
    println!("MCP tools/call, {requests} requests per target, concurrency {concurrency}");
    println!("| target | p50 ms | p90 ms | p99 ms | p99.9 ms |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let mut p = Vec::new();
    for (i, (name, _, _)) in targets.iter().enumerate() {
        let q = quantiles(&mut lat[i]);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            q[0], q[1], q[2], q[3]
        );
        p.push(q);
    }
    println!(
        "| added by the gateway | {:.3} | {:.3} | {:.3} | {:.3} |",
        p[1][0] - p[0][0],
        p[1][1] - p[0][1],
        p[1][2] - p[0][2],
        p[1][3] - p[0][3]
    );
    let stats = sandbox.mcp_stats();
    println!("(sandbox ran {} tool calls)", stats.tool_calls);
    gateway.shutdown().await;
    sandbox.stop();
}

async fn one(client: &HttpClient, url: &str, cred: &str) -> Duration {
    static BODY: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GITHUB_GET_THE_AUTHENTICATED_USER","arguments":{},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
    let req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("x-api-key", cred)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "GITHUB_GET_THE_AUTHENTICATED_USER")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .expect("request");
    let started = Instant::now();
    let resp = client.request(req).await.expect("answer");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let took = started.elapsed();
    assert!(
        status.is_success() && !body.windows(11).any(|w| w == b"\"isError\":t"),
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
    took
}

fn quantiles(v: &mut [Duration]) -> [f64; 4] {
    v.sort_unstable();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1));
        v[i].as_secs_f64() * 1000.0
    };
    [at(0.5), at(0.9), at(0.99), at(0.999)]
}
