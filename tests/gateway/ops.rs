//! Running it in production: admin endpoints, metrics, readiness, reload, rate limits,
//! slowloris, the in-flight cap and the audit trail.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use entitygate::sandbox::{Fault, Sandbox};
use entitygate::{Config, Gateway};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> (StatusCode, String) {
    admin(addr, Method::GET, path).await
}

async fn admin(addr: std::net::SocketAddr, method: Method, path: &str) -> (StatusCode, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("authorization", "Bearer ops-admin-token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The value of the first sample of `metric` whose labels contain every `label`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let h = Harness::with_config("[admin]\nlisten = \"127.0.0.1:0\"").await;
    let admin_addr = h.gateway.as_ref().unwrap().admin_addr().unwrap();
    let (_, before) = admin_get(admin_addr, "/metrics").await;
    for _ in 0..3 {
        h.execute("alice", "SLACK_SEND_MESSAGE", json!({})).await;
    }
    h.execute("carol", "SLACK_SEND_MESSAGE", json!({})).await;
    let (status, after) = admin_get(admin_addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let allow = |t: &str| {
        sample(
            t,
            "entitygate_requests_total",
            &["policy=\"execute\"", "decision=\"allow\""],
        )
    };
    let refused = |t: &str| {
        sample(
            t,
            "entitygate_requests_total",
            &["decision=\"app_not_connected\""],
        )
    };
    assert!(allow(&after) >= allow(&before) + 3.0, "{after}");
    assert!(refused(&after) >= refused(&before) + 1.0);
    assert!(after.contains("entitygate_request_duration_seconds_bucket"));
    assert!(after.contains("entitygate_upstream_duration_seconds_bucket"));
    assert!(sample(&after, "entitygate_connection_cache_hits_total", &[]) >= 1.0);
    assert!(sample(&after, "entitygate_connection_cache_misses_total", &[]) >= 1.0);
    assert!(after.contains("entitygate_in_flight_requests"));
    let (status, _) = admin_get(admin_addr, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    // The admin endpoints are not on the proxy listener.
    let r = h
        .send(Method::GET, "/metrics", Some(&token("alice")), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    h.shutdown().await;
}

#[tokio::test]
async fn readiness_needs_keys_and_a_reachable_upstream() {
    let h = Harness::with_config("[admin]\nlisten = \"127.0.0.1:0\"\nready_window_secs = 0").await;
    let admin_addr = h.gateway.as_ref().unwrap().admin_addr().unwrap();
    let (status, body) = admin_get(admin_addr, "/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.sandbox.stop();
    // Past the window, readiness probes Composio again, and the probe fails.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = admin_get(admin_addr, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("\"upstream_reachable\":false"));
    h.shutdown().await;

    // Only a JWKS, and it cannot be loaded: not ready, and tokens are refused with 503.
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let toml = format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n[auth]\n[auth.jwks]\nurl = \"http://{dead}/jwks\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n[audit]\npath = {:?}\n",
        std::env::temp_dir().join(format!("eg-audit-{}.jsonl", uuid_like())).display().to_string()
    );
    let gw = Gateway::builder(Config::from_toml(&toml).unwrap())
        .env(env())
        .build()
        .await
        .unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (status, body) = admin_get(running.admin_addr().unwrap(), "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("\"keys_loaded\":false"), "{body}");
    running.shutdown().await;
    sandbox.stop();
}

#[tokio::test]
async fn past_the_rate_a_subject_gets_429_with_retry_after() {
    let h = Harness::with_config("[limits]\nper_subject_rps = 1\nburst = 3").await;
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let r = h
            .send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(r.slug(), "rate_limited");
            retry_after = r.headers.get("retry-after").cloned();
        }
        statuses.push(r.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        3
    );
    assert_eq!(retry_after.unwrap(), "1");
    // Another subject is not affected.
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("bob")), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let h = Harness::with_config("[limits]\nheader_read_timeout_secs = 1").await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"GET /api/v3.1/tools HTTP/1.1\r\nHost: x\r\nx-api-key: ")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    // The gateway closes the connection (after at most a short error answer) on its own.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "connection still open after the header timeout"
    );
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn the_in_flight_cap_sheds_load_with_503() {
    let h = std::sync::Arc::new(
        Harness::with_config("[limits]\nmax_in_flight = 1\n[connections]\ngate = false").await,
    );
    h.sandbox
        .set_fault(Fault::Delay(Duration::from_millis(400)));
    let slow = {
        let h = h.clone();
        tokio::spawn(async move {
            h.send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
                .await
                .status
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("bob")), None)
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.slug(), "overloaded");
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
}

fn file_config(
    upstream: std::net::SocketAddr,
    mismatch: &str,
    secret_env: &str,
    audit: &std::path::Path,
) -> String {
    format!(
        "[upstream]\nbase_url = \"http://{upstream}\"\n[auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"{secret_env}\"\n[policy]\non_identity_mismatch = \"{mismatch}\"\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n[audit]\npath = {:?}\n",
        audit.display().to_string()
    )
}

#[tokio::test]
async fn reload_swaps_policy_and_keys_and_refuses_a_bad_config() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("eg-reload-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("entitygate.toml");
    let audit = dir.join("audit.jsonl");
    std::fs::write(
        &path,
        file_config(upstream, "rewrite", "JWT_SECRET", &audit),
    )
    .unwrap();
    let mut env: HashMap<String, String> = env();
    env.insert(
        "JWT_SECRET_NEXT".into(),
        "next-test-only-secret-0123456789abcdef0123".into(),
    );
    env.insert("ADMIN_TOKEN".into(), "ops-admin-token".into());
    let gw = Gateway::builder(Config::load(&path).unwrap())
        .env(env)
        .config_path(&path)
        .build()
        .await
        .unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let admin_addr = running.admin_addr().unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let exec = |tok: String, body: serde_json::Value| {
        let client = client.clone();
        let url = format!(
            "http://{}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            running.local_addr()
        );
        async move {
            let req = Request::post(url)
                .header("x-api-key", tok)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap();
            client.request(req).await.unwrap().status()
        }
    };
    assert_eq!(
        exec(token("alice"), json!({"user_id": "bob"})).await,
        StatusCode::OK
    );

    // Policy: rewrite -> reject.
    std::fs::write(&path, file_config(upstream, "reject", "JWT_SECRET", &audit)).unwrap();
    assert_eq!(
        admin(admin_addr, Method::POST, "/reload").await.0,
        StatusCode::OK
    );
    assert_eq!(
        exec(token("alice"), json!({"user_id": "bob"})).await,
        StatusCode::FORBIDDEN
    );

    // A broken file is refused and the current rules stay.
    std::fs::write(&path, "this is = not [valid toml").unwrap();
    let (status, body) = admin(admin_addr, Method::POST, "/reload").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        exec(token("alice"), json!({"user_id": "bob"})).await,
        StatusCode::FORBIDDEN
    );
    std::fs::write(
        &path,
        file_config(upstream, "reject", "NO_SUCH_SECRET_VAR", &audit),
    )
    .unwrap();
    assert_eq!(
        admin(admin_addr, Method::POST, "/reload").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(exec(token("alice"), json!({})).await, StatusCode::OK);

    // Key rotation: tokens of the old secret stop working, the new secret's work.
    std::fs::write(
        &path,
        file_config(upstream, "reject", "JWT_SECRET_NEXT", &audit),
    )
    .unwrap();
    assert_eq!(
        admin(admin_addr, Method::POST, "/reload").await.0,
        StatusCode::OK
    );
    assert_eq!(
        exec(token("alice"), json!({})).await,
        StatusCode::UNAUTHORIZED
    );
    let next = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(b"next-test-only-secret-0123456789abcdef0123"),
    )
    .unwrap();
    assert_eq!(exec(next, json!({})).await, StatusCode::OK);
    running.shutdown().await;
    sandbox.stop();
}

#[tokio::test]
async fn a_reload_under_load_loses_no_request() {
    let h = std::sync::Arc::new(Harness::start().await);
    let config = |mismatch: &str| {
        let upstream = h.upstream_addr();
        Config::from_toml(&config_toml(
            upstream,
            &format!("[policy]\non_identity_mismatch = \"{mismatch}\""),
        ))
        .unwrap()
    };
    let mut workers = Vec::new();
    for w in 0..8 {
        let h = h.clone();
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..60 {
                let user = if (w + i) % 2 == 0 { "alice" } else { "bob" };
                let r = h
                    .execute(user, "GITHUB_CREATE_ISSUE", json!({"arguments": {"i": i}}))
                    .await;
                statuses.push(r.status);
            }
            statuses
        }));
    }
    for i in 0..10 {
        let mode = if i % 2 == 0 { "rewrite" } else { "reject" };
        h.gateway
            .as_ref()
            .unwrap()
            .reload_with(&config(mode))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    for w in workers {
        for s in w.await.unwrap() {
            assert_eq!(s, StatusCode::OK, "a request failed during reloads");
        }
    }
    for r in h.sandbox.requests_to("/api/v3.1/tools/execute/") {
        assert_only_real_key(&r);
    }
}

#[tokio::test]
async fn the_audit_trail_records_decisions_and_never_secrets() {
    let path = std::env::temp_dir().join(format!("eg-audit-{}.jsonl", uuid_like()));
    let h =
        Harness::with_config(&format!("[audit]\npath = {:?}", path.display().to_string())).await;
    let tok = token("alice");
    let req = Request::post(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
        .header("x-api-key", &tok)
        .header("cookie", "session=COOKIE_SECRET_MARKER")
        .header("content-type", "application/json")
        .header("x-request-id", "audit-allowed-1")
        .body(Full::new(Bytes::from(
            json!({"user_id": "bob", "arguments": {"title": "ARGUMENT_SECRET_MARKER"}}).to_string(),
        )))
        .unwrap();
    assert_eq!(h.raw(req).await.status, StatusCode::OK);
    let req = Request::post(h.url("/api/v3.1/tools/execute/GMAIL_SEND_EMAIL"))
        .header("x-api-key", &tok)
        .header("content-type", "application/json")
        .header("x-request-id", "audit-refused-1")
        .body(Full::new(Bytes::from(
            json!({"arguments": {"body": "ARGUMENT_SECRET_MARKER"}}).to_string(),
        )))
        .unwrap();
    assert_eq!(h.raw(req).await.status, StatusCode::BAD_REQUEST);
    let bad = h
        .send(
            Method::GET,
            "/api/v3.1/tools",
            Some("not-a-jwt.at.all"),
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    // The writer thread flushes promptly; give it a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        // The first line is the chain's `log_opened` record, then one line per decision.
        if text.lines().count() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.remove(0)["event"], "log_opened");
    assert_eq!(lines.len(), 3, "{text}");
    let allowed = lines
        .iter()
        .find(|l| l["request_id"] == "audit-allowed-1")
        .unwrap();
    assert_eq!(allowed["decision"], "allow");
    assert_eq!(allowed["subject"], "alice");
    assert_eq!(allowed["tool"], "GITHUB_CREATE_ISSUE");
    assert_eq!(allowed["toolkit"], "github");
    assert_eq!(allowed["identity_rewritten"], true);
    assert_eq!(allowed["upstream_status"], 200);
    assert!(allowed["time"].as_str().unwrap().ends_with('Z'));
    let refused = lines
        .iter()
        .find(|l| l["request_id"] == "audit-refused-1")
        .unwrap();
    assert_eq!(refused["decision"], "connection_expired");
    assert_eq!(refused["code"], 1803);
    assert_eq!(refused["toolkit"], "gmail");
    let unauthenticated = lines
        .iter()
        .find(|l| l["decision"] == "token_malformed")
        .unwrap();
    assert_eq!(
        unauthenticated["path"], "/api/v3.1/tools",
        "refusals keep the canonical path"
    );
    assert_eq!(unauthenticated["subject"], serde_json::Value::Null);
    for secret in [
        tok.as_str(),
        API_KEY,
        "COOKIE_SECRET_MARKER",
        "ARGUMENT_SECRET_MARKER",
        "not-a-jwt",
    ] {
        assert!(!text.contains(secret), "audit trail contains {secret}");
    }
    h.shutdown().await;
}

/// A refused query can be investigated from the audit trail alone: the line carries the query
/// as sent, identity values included, with credential-named values redacted.
#[tokio::test]
async fn the_audit_trail_records_the_query_string() {
    let path = std::env::temp_dir().join(format!("eg-audit-{}.jsonl", uuid_like()));
    let h =
        Harness::with_config(&format!("[audit]\npath = {:?}", path.display().to_string())).await;
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/tools?user_id%5B0%5D=bob&limit=5&api_key=QUERY_SECRET_MARKER",
            Some(&token("alice")),
            None,
        )
        .await;
    assert_eq!(r.slug(), "query_not_allowed");
    h.assert_nothing_forwarded();
    // The chain's `log_opened` record comes first; the decision is the line after it.
    let mut line = serde_json::Value::Null;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["event"] != "log_opened")
        {
            line = l;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(line["decision"], "query_not_allowed");
    assert_eq!(line["subject"], "alice");
    assert_eq!(
        line["query"],
        "user_id%5B0%5D=bob&limit=5&api_key=[REDACTED]"
    );
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(!text.contains("QUERY_SECRET_MARKER"));
    h.shutdown().await;
}

#[tokio::test]
async fn a_request_whose_client_leaves_is_still_audited() {
    let path = std::env::temp_dir().join(format!("eg-audit-{}.jsonl", uuid_like()));
    let h =
        Harness::with_config(&format!("[audit]\npath = {:?}", path.display().to_string())).await;
    h.sandbox.set_fault(Fault::Delay(Duration::from_secs(2)));
    // HTTP/2: dropping the request future resets the stream, and the gateway drops its work.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let req = Request::post(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .header("x-request-id", "leaves-early")
        .body(Full::new(Bytes::from_static(b"{\"arguments\":{}}")))
        .unwrap();
    let gave_up = tokio::time::timeout(Duration::from_millis(300), client.request(req)).await;
    assert!(gave_up.is_err(), "the client gave up first");
    let mut line = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        line = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|l| l["request_id"] == "leaves-early");
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let line = line.expect("the abandoned request was audited");
    assert_eq!(line["decision"], "abandoned");
    assert_eq!(line["status"], 499);
    assert_eq!(line["subject"], "alice");
    assert_eq!(line["tool"], "GITHUB_CREATE_ISSUE");
    h.sandbox.set_fault(Fault::None);
    h.shutdown().await;
}

// === keep-alive: idle connections stay, slow heads do not, idle HTTP/1 parks ===

/// A raw HTTP/1 request for the tool list as alice.
fn tools_request(version: &str, connection: Option<&str>) -> String {
    let connection = connection.map_or(String::new(), |c| format!("connection: {c}\r\n"));
    format!(
        "GET /api/v3.1/tools HTTP/{version}\r\nhost: gw\r\nx-api-key: {}\r\n{connection}\r\n",
        token("alice")
    )
}

/// Reads one response (a `content-length` body or a chunked one); returns its head.
async fn read_one(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let whole = match len {
                Some(len) => out.len() >= end + 4 + len,
                None => out.ends_with(b"\r\n0\r\n\r\n"),
            };
            if whole {
                return head;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response");
        out.extend_from_slice(&buf[..n]);
    }
}

/// Everything until the gateway closes the connection (or 5 s pass: `None`).
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Option<String> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn an_idle_keepalive_connection_outlives_the_header_timeout_and_parks() {
    // hyper's own header timer ran from one request to the next: an SDK's pooled connection
    // idle for longer than `header_read_timeout_secs` was closed under it.
    let h = Harness::with_config(
        "[limits]\nheader_read_timeout_secs = 1\nkeepalive_idle_secs = 30\n[admin]\nlisten = \"127.0.0.1:0\"",
    )
    .await;
    let admin_addr = h.gateway.as_ref().unwrap().admin_addr().unwrap();
    let parked = |t: &str| sample(t, "entitygate_connections_parked_total", &[]);
    let (_, before) = admin_get(admin_addr, "/metrics").await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(tools_request("1.1", None).as_bytes())
        .await
        .unwrap();
    assert!(read_one(&mut s).await.starts_with("http/1.1 200"));
    // Idle for more than the header timeout (and long enough to park).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, after) = admin_get(admin_addr, "/metrics").await;
    assert!(
        parked(&after) >= parked(&before) + 1.0,
        "the idle connection gave its buffers back"
    );
    // Parked, then woken by the next request: the same socket serves it.
    s.write_all(tools_request("1.1", None).as_bytes())
        .await
        .unwrap();
    assert!(read_one(&mut s).await.starts_with("http/1.1 200"));
    // Two requests in one write to a parked connection: both answered, then closed as the
    // second asked.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let both = tools_request("1.1", None) + &tools_request("1.1", Some("close"));
    s.write_all(both.as_bytes()).await.unwrap();
    let text = read_to_close(&mut s)
        .await
        .expect("closed after the second");
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_slow_head_on_a_kept_connection_is_cut_and_an_idle_one_expires() {
    let h = Harness::with_config("[limits]\nheader_read_timeout_secs = 1\nkeepalive_idle_secs = 2")
        .await;
    // A later head that never finishes: closed by the head deadline, from its first byte.
    let mut slow = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    slow.write_all(tools_request("1.1", None).as_bytes())
        .await
        .unwrap();
    read_one(&mut slow).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    slow.write_all(b"GET /api/v3.1/tools HTTP/1.1\r\nhost: gw\r\n")
        .await
        .unwrap();
    let text = read_to_close(&mut slow).await;
    assert!(text.is_some(), "a trickling head is cut");
    // Nothing sent after a request: closed once keepalive_idle_secs pass.
    let mut idle = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    idle.write_all(tools_request("1.1", None).as_bytes())
        .await
        .unwrap();
    read_one(&mut idle).await;
    let started = std::time::Instant::now();
    assert!(read_to_close(&mut idle).await.is_some(), "closed when idle");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "kept at least keepalive_idle_secs, about"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn requests_that_ask_to_close_get_their_connection_closed() {
    let h = Harness::start().await;
    // The tool list is relayed as it streams (no length): HTTP/1.0 ends it by closing.
    for (version, connection) in [
        ("1.1", Some("close")),
        ("1.0", None),
        ("1.0", Some("keep-alive")),
    ] {
        let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        s.write_all(tools_request(version, connection).as_bytes())
            .await
            .unwrap();
        let text = read_to_close(&mut s)
            .await
            .unwrap_or_else(|| panic!("HTTP/{version} {connection:?}: not closed"));
        assert!(text.contains(" 200 OK"), "{text}");
    }
    // HTTP/1.0 asking for keep-alive, with answers of known length (an unknown route is
    // refused), keeps it (parked
    // between the two).
    let unknown = format!(
        "GET /api/v3.1/no_such_route HTTP/1.0\r\nhost: gw\r\nx-api-key: {}\r\nconnection: keep-alive\r\n\r\n",
        token("alice")
    );
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    s.write_all(unknown.as_bytes()).await.unwrap();
    let head = read_one(&mut s).await;
    assert!(head.contains(" 403 "), "{head}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    s.write_all(unknown.as_bytes()).await.unwrap();
    assert!(read_one(&mut s).await.contains(" 403 "));
    h.shutdown().await;
}
