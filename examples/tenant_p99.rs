#![allow(clippy::unwrap_used, clippy::print_stdout)]
//! Issue 12, finding 9: another tenant's latency while two worst-case bodies are in flight.
//!
//! The gateway runs on a 2-worker runtime (the default on the 2-core bench machine), the sandbox
//! Composio and each client on runtimes of their own threads. Bob sends small executions one
//! after another, first alone, then while two clients (alice and mallory) keep sending 1 MiB
//! bodies with the most keys the default limits allow and a repeated key at the very end (so
//! the gateway parses all of it and refuses it: nothing reaches the sandbox). Prints bob's
//! latency percentiles in both phases.
//!
//! ```sh
//! cargo run --release --example tenant_p99 [-- REQUESTS]
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use entitygate::rewrite::JsonLimits;
use entitygate::sandbox::Sandbox;
use entitygate::{Config, Gateway};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{EncodingKey, Header};

const SECRET: &str = "bench-only-hs256-secret-0123456789abcdef0123456789";
const KEY: &str = "sk_bench_tenant_p99";
const MIB: usize = 1 << 20;

fn token(sub: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "sub": sub, "iss": "https://idp.test/", "aud": "entitygate", "exp": now + 3600,
    });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn key_name(mut i: usize, out: &mut String) {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    loop {
        out.push(char::from(DIGITS[i % 62]));
        i /= 62;
        if i == 0 {
            break;
        }
    }
}

/// Objects of `per_object` short keys up to `size` bytes, the first key of the last object
/// repeated at its very end.
fn heavy_body(size: usize, per_object: usize) -> (Vec<u8>, usize) {
    let mut objects: Vec<String> = Vec::new();
    let mut len = 32; // the wrapper and the repeated key
    let mut keys = 0;
    'fill: for o in 0.. {
        let mut obj = format!("\"o{o}\":{{");
        for n in 0..per_object {
            if len + obj.len() + 8 > size {
                if n > 0 {
                    objects.push(obj);
                }
                break 'fill;
            }
            if n > 0 {
                obj.push(',');
            }
            obj.push('"');
            key_name(n, &mut obj);
            obj.push_str("\":0");
            keys += 1;
        }
        len += obj.len() + 2;
        keys += 1;
        objects.push(obj);
    }
    let last = objects.last_mut().unwrap();
    last.push_str(",\"0\":1");
    let body = format!(
        "{{\"arguments\":{{{}}}}}",
        objects
            .iter()
            .map(|o| format!("{o}}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    (body.into_bytes(), keys)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Runs `f` on a fresh single-threaded runtime on its own thread.
fn on_thread<F, T>(f: F) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
}

async fn bob(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let t = token("bob");
    let body = Bytes::from_static(br#"{"arguments":{"owner":"acme","repo":"app","title":"hi"}}"#);
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 50 {
        let req = Request::post(format!(
            "http://{addr}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"
        ))
        .header("x-api-key", &t)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
        let start = Instant::now();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body().collect().await.unwrap();
        if i >= 50 {
            out.push(start.elapsed()); // the first 50 warm the pool and caches
        }
    }
    out.sort();
    out
}

fn report(name: &str, lat: &[Duration]) {
    println!(
        "{name:<32} n={:<5} p50={:.3} ms  p90={:.3} ms  p99={:.3} ms  max={:.3} ms",
        lat.len(),
        percentile(lat, 0.50),
        percentile(lat, 0.90),
        percentile(lat, 0.99),
        percentile(lat, 1.0),
    );
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3000);
    let (body, keys) = heavy_body(MIB, JsonLimits::default().max_keys_per_object);
    let body = Bytes::from(body);
    println!("heavy body: {} bytes, {keys} keys", body.len());

    // The sandbox on its own thread.
    let sandbox = Sandbox::with_demo_data(KEY);
    sandbox.set_record_limit(100);
    let (tx, rx) = std::sync::mpsc::channel();
    let sb = sandbox.clone();
    let _sandbox_thread = on_thread(async move {
        tx.send(sb.start().await.unwrap()).unwrap();
        std::future::pending::<()>().await;
    });
    let upstream = rx.recv().unwrap();

    // The gateway on a 2-worker runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let gateway = rt.block_on(async {
        let config = Config::from_toml(&format!(
            r#"
listen = "127.0.0.1:0"
[upstream]
base_url = "http://{upstream}"
[auth]
issuer = "https://idp.test/"
audience = "entitygate"
[[auth.keys]]
alg = "HS256"
secret_env = "JWT_SECRET"
[audit]
path = "/dev/null"
"#
        ))
        .unwrap();
        let env: HashMap<String, String> = [
            ("JWT_SECRET".into(), SECRET.into()),
            ("COMPOSIO_API_KEY".into(), KEY.into()),
        ]
        .into();
        Gateway::builder(config)
            .env(env)
            .build()
            .await
            .unwrap()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap()
    });
    let addr = gateway.local_addr();

    let alone = on_thread(bob(addr, n)).join().unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let heavy_done = Arc::new(AtomicUsize::new(0));
    let heavy_time = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = ["alice", "mallory"]
        .into_iter()
        .map(|who| {
            let (stop, done, time, body) = (
                stop.clone(),
                heavy_done.clone(),
                heavy_time.clone(),
                body.clone(),
            );
            on_thread(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                let t = token(who);
                while !stop.load(Ordering::Relaxed) {
                    let req = Request::post(format!(
                        "http://{addr}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"
                    ))
                    .header("x-api-key", &t)
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                    let start = Instant::now();
                    let resp = client.request(req).await.unwrap();
                    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "duplicate_key");
                    resp.into_body().collect().await.unwrap();
                    time.fetch_add(start.elapsed().as_micros() as usize, Ordering::Relaxed);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Let both heavy streams get going.
    while heavy_done.load(Ordering::Relaxed) < 4 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let before = heavy_done.load(Ordering::Relaxed);
    let loaded = on_thread(bob(addr, n)).join().unwrap();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let heavy = heavy_done.load(Ordering::Relaxed);

    report("bob alone", &alone);
    report("bob with 2 heavy bodies in flight", &loaded);
    println!(
        "heavy bodies refused while bob ran: {}; mean time per heavy request {:.1} ms",
        heavy - before,
        heavy_time.load(Ordering::Relaxed) as f64 / heavy as f64 / 1000.0
    );
    println!(
        "added p99: {:.3} ms; requests that reached the sandbox from the heavy streams: {}",
        percentile(&loaded, 0.99) - percentile(&alone, 0.99),
        sandbox
            .requests()
            .iter()
            .filter(|r| r.body.len() > 100_000)
            .count()
    );
    rt.block_on(gateway.shutdown());
}
