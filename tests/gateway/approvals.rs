//! Approvals (issue 28) over real sockets: a covered call is refused and stored on every
//! carrier with nothing forwarded; a named operator approves it through the admin API; the
//! agent's identical retry passes once (also under real concurrency); any other call needs its
//! own approval; denials, separation of duties, the shared token, the per-subject bound, a
//! restart, the signed notification, and the audit trail that proves it all.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use entitygate::sandbox::{Account, Sandbox};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

use crate::support::*;

#[allow(dead_code)]
#[path = "../../examples/webhook_receiver.rs"]
mod receiver;

const OPERATORS: &str = r#"
[admin]
listen = "127.0.0.1:0"
token_env = "ADMIN_TOKEN"
[[admin.operators]]
name = "dana"
token_env = "DANA_TOKEN"
subject = "dana@acme.com"
[[admin.operators]]
name = "erin"
token_env = "ERIN_TOKEN"
"#;

/// Messages outside `#internal` need approval.
const OUTSIDE: &str = r##"
[[policy.approvals]]
name = "outside channels"
tools = ["SLACK_SEND_MESSAGE"]
if = '!args.channel.startsWith("#internal")'
message = "Messages outside #internal need approval by security."
"##;

fn audit_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("entitygate-approvals-audit-{}.jsonl", uuid_like()))
}

/// The demo data, and an active Slack account for bob and for dana (an operator who is also
/// a user).
fn sandbox() -> Sandbox {
    let sb = Sandbox::with_demo_data(API_KEY);
    sb.add_account(Account::new("ca_bob_slack_ok", "bob", "slack", "ACTIVE"));
    sb.add_account(Account::new(
        "ca_dana_slack",
        "dana@acme.com",
        "slack",
        "ACTIVE",
    ));
    sb
}

async fn gateway(extra: &str) -> Harness {
    Harness::with(sandbox(), &format!("{OPERATORS}{OUTSIDE}{extra}")).await
}

/// Asserts that no tool call reached the sandbox (lookups may have).
fn assert_nothing_executed(h: &Harness) {
    let posted: Vec<_> = h
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| r.path)
        .collect();
    assert!(posted.is_empty(), "{posted:?}");
}

/// Stops `h`'s gateway and starts another on the same sandbox with `extra` (the old one may
/// hold the state file for a moment).
async fn restart(mut h: Harness, extra: &str) -> Harness {
    h.gateway.take().unwrap().shutdown().await;
    let config = entitygate::Config::from_toml(&config_toml(
        h.upstream_addr(),
        &format!("{OPERATORS}{OUTSIDE}{extra}"),
    ))
    .unwrap();
    for _ in 0..50 {
        if let Ok(g) = entitygate::Gateway::builder(config.clone())
            .env(env())
            .build()
            .await
        {
            h.serve(g).await;
            h.sandbox.clear();
            return h;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the state file reopens");
}

fn send_message(channel: &str, text: &str) -> Value {
    json!({"arguments": {"channel": channel, "text": text}})
}

/// Executions of SLACK_SEND_MESSAGE that reached the sandbox.
fn executions(h: &Harness) -> usize {
    h.sandbox
        .count("POST", "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE")
}

async fn decide(h: &Harness, who: &str, id: &str, action: &str, reason: &str) -> Reply {
    h.admin(
        Method::POST,
        &format!("/approvals/{id}/{action}"),
        Some(who),
        Some(json!({"reason": reason})),
    )
    .await
}

fn approval_id(r: &Reply) -> String {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.slug(), "approval_required", "{}", r.text());
    r.json()["error"]["approval_id"]
        .as_str()
        .expect("an approval id")
        .to_owned()
}

fn audit_events(path: &std::path::Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == kind)
        .collect()
}

async fn wait_for_audit(path: &std::path::Path, kind: &str, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let got = audit_events(path, kind);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("expected {n} `{kind}` audit events");
}

#[tokio::test]
async fn an_approved_call_passes_once_and_the_audit_trail_proves_it() {
    let audit = audit_path();
    let h = gateway(&format!(
        "[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    // Inside #internal: the `if` does not hold, nothing to approve.
    let inside = h
        .execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#internal-ops", "hi"),
        )
        .await;
    assert_eq!(inside.status, StatusCode::OK, "{}", inside.text());
    h.sandbox.clear();

    let body = send_message("#general", "launch at noon");
    let first = h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await;
    let id = approval_id(&first);
    let err = &first.json()["error"];
    assert!(err["message"]
        .as_str()
        .unwrap()
        .starts_with("Messages outside #internal need approval by security."));
    assert!(err["approval_url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/approvals#{id}")));
    assert_eq!(first.headers["x-should-retry"], "false");
    assert_nothing_executed(&h);

    // The approver sees the request with its arguments.
    let listed = h
        .admin(
            Method::GET,
            "/approvals?status=pending",
            Some(DANA_TOKEN),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let req = &listed.json()["approvals"][0];
    assert_eq!(req["id"], id);
    assert_eq!(req["subject"], "alice");
    assert_eq!(req["tool"], "SLACK_SEND_MESSAGE");
    assert_eq!(req["toolkit"], "slack");
    assert_eq!(req["carrier"], "rest");
    assert_eq!(req["rule"], "outside channels");
    assert_eq!(req["arguments"]["text"], "launch at noon");
    assert!(req["trace_id"].is_string() && req["policy_version"].is_string());

    // Retrying before the decision: the same request, nothing forwarded.
    let again = h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await;
    assert_eq!(approval_id(&again), id);
    assert_nothing_executed(&h);

    let ok = decide(
        &h,
        DANA_TOKEN,
        &id,
        "approve",
        "launch announced in standup",
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json()["approval"]["approver"], "dana");
    // Approving forwards nothing by itself.
    assert_nothing_executed(&h);

    let passed = h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await;
    assert_eq!(passed.status, StatusCode::OK, "{}", passed.text());
    assert_eq!(executions(&h), 1);
    // Once: the same call again needs a new approval.
    let second = h.execute("alice", "SLACK_SEND_MESSAGE", body).await;
    assert_ne!(approval_id(&second), id);
    assert_eq!(executions(&h), 1);

    // The trail: requested, granted by dana with the reason, used; the arguments' hash only.
    let requested = wait_for_audit(&audit, "approval_requested", 2).await;
    let granted = wait_for_audit(&audit, "approval_granted", 1).await;
    let used = wait_for_audit(&audit, "approval_used", 1).await;
    assert_eq!(requested[0]["approval_id"], id);
    assert_eq!(granted[0]["approver"], "dana");
    assert_eq!(granted[0]["reason"], "launch announced in standup");
    assert_eq!(used[0]["approval_id"], id);
    // The decision line of the call that spent the grant carries its trace id.
    let used_by = used[0]["used_trace_id"].as_str().unwrap();
    let allowed = std::fs::read_to_string(&audit).unwrap();
    assert!(allowed.lines().any(|l| l.contains("\"decision\":\"allow\"")
        && l.contains(used_by)
        && l.contains("SLACK_SEND_MESSAGE")));
    let hash = requested[0]["args_sha256"].as_str().unwrap();
    assert_eq!(hash.len(), 64);
    assert_eq!(used[0]["args_sha256"], hash);
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert!(
        !trail.contains("launch at noon"),
        "arguments leaked into the audit trail"
    );
    h.shutdown().await;
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test]
async fn concurrent_identical_retries_exactly_one_passes() {
    let h = gateway("").await;
    let body = send_message("#general", "once");
    let id = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    assert_eq!(
        decide(&h, ERIN_TOKEN, &id, "approve", "ok").await.status,
        StatusCode::OK
    );
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (h, body) = (h.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            h.execute("alice", "SLACK_SEND_MESSAGE", body).await.status
        }));
    }
    let mut passed = 0;
    for t in tasks {
        let status = t.await.unwrap();
        if status == StatusCode::OK {
            passed += 1;
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN);
        }
    }
    assert_eq!(passed, 1);
    assert_eq!(executions(&h), 1);
}

#[tokio::test]
async fn a_grant_binds_the_exact_call_not_the_caller_and_tool() {
    let h = gateway("").await;
    let body = send_message("#general", "exact");
    let id = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    decide(&h, DANA_TOKEN, &id, "approve", "ok").await;
    // A changed argument, another subject, a named account: none is the approved call.
    for (user, b) in [
        ("alice", send_message("#general", "exact!")),
        ("alice", send_message("#General", "exact")),
        ("bob", body.clone()),
        (
            "alice",
            json!({"arguments": {"channel": "#general", "text": "exact"},
                   "connected_account_id": "ca_alice_slack"}),
        ),
    ] {
        let r = h.execute(user, "SLACK_SEND_MESSAGE", b).await;
        assert_ne!(approval_id(&r), id, "{user}");
    }
    assert_eq!(executions(&h), 0);
    // Whitespace and key order do not make another call.
    let raw = "{ \"arguments\" : {\n  \"text\": \"exact\",\t\"channel\" : \"#general\" } }";
    let req = Request::builder()
        .method(Method::POST)
        .uri(h.url("/api/v3.1/tools/execute/SLACK_SEND_MESSAGE"))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(raw)))
        .unwrap();
    let r = h.raw(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(executions(&h), 1);
}

#[tokio::test]
async fn a_denied_call_is_answered_with_the_reason_until_the_request_expires() {
    let h = gateway("").await;
    let body = send_message("#general", "no");
    let id = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    // A deny needs a reason.
    assert_eq!(
        decide(&h, DANA_TOKEN, &id, "deny", " ").await.status,
        StatusCode::BAD_REQUEST
    );
    let denied = decide(&h, DANA_TOKEN, &id, "deny", "not to #general").await;
    assert_eq!(denied.status, StatusCode::OK, "{}", denied.text());
    for _ in 0..2 {
        let r = h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.slug(), "approval_denied");
        assert_eq!(r.json()["error"]["reason"], "not to #general");
    }
    // Decided once: approving it afterwards is refused.
    assert_eq!(
        decide(&h, ERIN_TOKEN, &id, "approve", "").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_nothing_executed(&h);
}

#[tokio::test]
async fn only_a_named_operator_decides_and_never_on_their_own_call() {
    let h = gateway("").await;
    // The shared admin token reads the list but cannot decide.
    let own = h
        .execute(
            "dana@acme.com",
            "SLACK_SEND_MESSAGE",
            send_message("#general", "mine"),
        )
        .await;
    let id = approval_id(&own);
    assert_eq!(
        h.admin(Method::GET, "/approvals", Some(ADMIN_TOKEN), None)
            .await
            .status,
        StatusCode::OK
    );
    let shared = decide(&h, ADMIN_TOKEN, &id, "approve", "").await;
    assert_eq!(shared.status, StatusCode::FORBIDDEN, "{}", shared.text());
    // Dana cannot approve her own call; Erin can.
    let mine = decide(&h, DANA_TOKEN, &id, "approve", "").await;
    assert_eq!(mine.status, StatusCode::FORBIDDEN, "{}", mine.text());
    assert!(mine.text().contains("separation of duties"));
    assert_eq!(
        decide(&h, ERIN_TOKEN, &id, "approve", "checked")
            .await
            .status,
        StatusCode::OK
    );
    // No token, a wrong one: 401.
    assert_eq!(
        h.admin(Method::GET, "/approvals", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        decide(&h, "not-a-token", &id, "approve", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_nothing_executed(&h);
}

#[tokio::test]
async fn every_carrier_asks_for_approval_the_same_way() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.add_session("trs_alice", "alice");
    let h = Harness::with(
        sandbox,
        &format!(
            "{OPERATORS}[mcp]\nfront_door = true\n\
             [[policy.approvals]]\nname = \"slack\"\ntoolkits = [\"slack\"]\n"
        ),
    )
    .await;
    // Another text per carrier: the same call through two carriers is one binding.
    let a = |n: &str| json!({"channel": "#general", "text": n});
    let item = json!({"tool_slug": "SLACK_SEND_MESSAGE", "arguments": a("multi")});
    let rest: Vec<(&str, String, Value)> = vec![
        (
            "rest",
            "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE".into(),
            json!({"arguments": a("rest")}),
        ),
        (
            "legacy",
            "/api/v2/actions/SLACK_SEND_MESSAGE/execute".into(),
            json!({"input": a("legacy")}),
        ),
        (
            "multi",
            "/api/v3/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL".into(),
            json!({"arguments": {"tools": [item]}}),
        ),
        (
            "session",
            "/api/v3.1/tool_router/session/trs_alice/execute".into(),
            json!({"tool_slug": "SLACK_SEND_MESSAGE", "arguments": a("session")}),
        ),
        (
            "proxy",
            "/api/v3/tools/execute/proxy".into(),
            json!({"endpoint": "/chat.postMessage", "method": "POST",
                   "connected_account_id": "ca_alice_slack", "body": a("proxy")}),
        ),
    ];
    let t = token("alice");
    for (carrier, path, body) in rest {
        let r = h.send(Method::POST, &path, Some(&t), Some(body)).await;
        let id = approval_id(&r);
        let stored = h
            .admin(
                Method::GET,
                &format!("/approvals/{id}"),
                Some(ERIN_TOKEN),
                None,
            )
            .await;
        assert_eq!(stored.json()["approval"]["carrier"], carrier, "{path}");
    }
    // MCP on each endpoint: a tool result with `isError` and the same text.
    for path in ["/v3/mcp/mcp_1", "/tool_router/trs_alice/mcp", "/mcp"] {
        let msg = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "SLACK_SEND_MESSAGE", "arguments": a(path),
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
        let req = Request::builder()
            .method(Method::POST)
            .uri(h.url(path))
            .header("x-api-key", &t)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "SLACK_SEND_MESSAGE")
            .body(Full::new(Bytes::from(msg.to_string())))
            .unwrap();
        let r = h.raw(req).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let result = &r.json()["result"];
        assert_eq!(result["isError"], true, "{path}: {}", r.text());
        let text = result["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("Approval apr_"), "{path}: {text}");
        assert_eq!(
            result["structuredContent"]["error"]["slug"],
            "approval_required"
        );
    }
    // Nothing executed anywhere: no execution, no proxy, no tools/call upstream.
    let executed: Vec<_> = h
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "POST"
                && (r.path.contains("/execute")
                    || r.path.contains("/proxy")
                    || String::from_utf8_lossy(&r.body).contains("tools/call"))
        })
        .map(|r| r.path)
        .collect();
    assert!(executed.is_empty(), "{executed:?}");
}

#[tokio::test]
async fn pending_requests_per_subject_are_bounded_and_the_excess_is_not_stored() {
    let h = gateway("[approvals]\nmax_pending_per_subject = 2\nmax_argument_bytes = 200\n").await;
    for i in 0..2 {
        approval_id(
            &h.execute(
                "alice",
                "SLACK_SEND_MESSAGE",
                send_message("#general", &format!("m{i}")),
            )
            .await,
        );
    }
    let third = h
        .execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#general", "m3"),
        )
        .await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.text()
    );
    assert_eq!(third.slug(), "too_many_pending_approvals");
    let listed = h
        .admin(Method::GET, "/approvals", Some(ERIN_TOKEN), None)
        .await;
    assert_eq!(listed.json()["approvals"].as_array().unwrap().len(), 2);
    // Arguments too large to show whole are refused, not stored cut.
    let big = h
        .execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#general", &"x".repeat(300)),
        )
        .await;
    assert_eq!(big.status, StatusCode::BAD_REQUEST, "{}", big.text());
    assert!(big.text().contains("max_argument_bytes"));
    assert_nothing_executed(&h);
}

#[tokio::test]
async fn a_grant_survives_a_restart_through_the_state_file() {
    let state = std::env::temp_dir().join(format!("entitygate-approvals-{}.redb", uuid_like()));
    let cfg = format!("[state]\npath = {:?}\n", state.display().to_string());
    let h = gateway(&cfg).await;
    let body = send_message("#general", "after restart");
    let id = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    decide(&h, DANA_TOKEN, &id, "approve", "ok").await;
    let h = restart(h, &cfg).await;
    let r = h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(executions(&h), 1);
    let h = restart(h, &cfg).await;
    assert_ne!(
        approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body).await),
        id,
        "used once, also across restarts"
    );
    h.shutdown().await;
    let _ = std::fs::remove_file(&state);
}

/// Receives the approvals notifications: (timestamp, signature, body).
async fn hook() -> (
    Arc<Mutex<Vec<(String, String, Bytes)>>>,
    std::net::SocketAddr,
) {
    let got: Arc<Mutex<Vec<(String, String, Bytes)>>> = Arc::default();
    let sink = got.clone();
    let addr = webhook_receiver(move |d| {
        sink.lock()
            .unwrap()
            .push((d.timestamp, d.signature, d.body));
        async { StatusCode::NO_CONTENT }
    })
    .await;
    (got, addr)
}

#[tokio::test]
async fn each_new_request_is_notified_signed_with_slack_text() {
    let (got, addr) = hook().await;
    let h = gateway(&format!(
        "[approvals]\nnotify_url = \"http://{addr}/approvals\"\n\
         notify_secret_env = \"APPROVALS_WEBHOOK_SECRET\"\n"
    ))
    .await;
    let body = send_message("#general", "secret plans");
    let id = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    // The same call again is the same request: no second notification.
    approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body).await);
    for _ in 0..250 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let deliveries = got.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 1);
    let (ts, sig, raw) = &deliveries[0];
    receiver::verify(APPROVALS_SECRET.as_bytes(), Some(ts), Some(sig), raw, now())
        .expect("signed with the approvals secret");
    assert!(receiver::verify(b"another secret", Some(ts), Some(sig), raw, now()).is_err());
    let v: Value = serde_json::from_slice(raw).unwrap();
    assert_eq!(v["type"], "entitygate.approval.requested");
    assert_eq!(v["approval_id"], id);
    assert!(v["text"].as_str().unwrap().contains("SLACK_SEND_MESSAGE"));
    assert!(!String::from_utf8_lossy(raw).contains("secret plans"));
}

#[tokio::test]
async fn the_cli_lists_approves_and_denies_as_an_operator() {
    let h = gateway("").await;
    let id = approval_id(
        &h.execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#general", "cli"),
        )
        .await,
    );
    let admin = format!(
        "http://{}",
        h.gateway.as_ref().unwrap().admin_addr().unwrap()
    );
    let run = |args: Vec<String>, token: &'static str| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
                .arg("approvals")
                .args(args)
                .env("ENTITYGATE_ADMIN_TOKEN", token)
                .output()
                .unwrap()
        })
    };
    let listed = run(
        vec![
            "list".into(),
            "--status".into(),
            "pending".into(),
            "--admin".into(),
            admin.clone(),
        ],
        ADMIN_TOKEN,
    )
    .await
    .unwrap();
    assert!(listed.status.success());
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&id));
    // The shared token cannot approve: exit 1, nothing granted.
    let refused = run(
        vec![
            "approve".into(),
            id.clone(),
            "--admin".into(),
            admin.clone(),
        ],
        ADMIN_TOKEN,
    )
    .await
    .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let approved = run(
        vec![
            "approve".into(),
            id.clone(),
            "--reason".into(),
            "reviewed".into(),
            "--admin".into(),
            admin.clone(),
        ],
        DANA_TOKEN,
    )
    .await
    .unwrap();
    assert!(
        approved.status.success(),
        "{}",
        String::from_utf8_lossy(&approved.stderr)
    );
    assert!(String::from_utf8_lossy(&approved.stdout).contains("\"approver\":\"dana\""));
    let passed = h
        .execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#general", "cli"),
        )
        .await;
    assert_eq!(passed.status, StatusCode::OK);
    // Deny needs a reason (clap: usage error).
    let other = approval_id(
        &h.execute(
            "alice",
            "SLACK_SEND_MESSAGE",
            send_message("#general", "cli2"),
        )
        .await,
    );
    let no_reason = run(
        vec![
            "deny".into(),
            other.clone(),
            "--admin".into(),
            admin.clone(),
        ],
        ERIN_TOKEN,
    )
    .await
    .unwrap();
    assert!(!no_reason.status.success());
    let denied = run(
        vec![
            "deny".into(),
            other,
            "--reason".into(),
            "no".into(),
            "--admin".into(),
            admin,
        ],
        ERIN_TOKEN,
    )
    .await
    .unwrap();
    assert!(denied.status.success());
}

#[tokio::test]
async fn requests_and_grants_expire_by_the_gateways_clock() {
    use entitygate::clock::ManualClock;
    let audit = audit_path();
    let h = gateway("").await;
    let clock = Arc::new(ManualClock::new(now()));
    let extra = format!(
        "[approvals]\nrequest_ttl_secs = 60\ngrant_ttl_secs = 30\n[audit]\npath = {:?}\n",
        audit.display().to_string()
    );
    // The same sandbox, a gateway whose approvals age by `clock` (no sleeping).
    let mut h = h;
    h.gateway.take().unwrap().shutdown().await;
    let config = entitygate::Config::from_toml(&config_toml(
        h.upstream_addr(),
        &format!("{OPERATORS}{OUTSIDE}{extra}"),
    ))
    .unwrap();
    let gateway = entitygate::Gateway::builder(config)
        .env(env())
        .clock(clock.clone())
        .build()
        .await
        .unwrap();
    h.serve(gateway).await;
    let body = send_message("#general", "soon");
    let first = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    clock.advance(60);
    // Unanswered past its TTL: too late to approve, and the call asks anew.
    assert_eq!(
        decide(&h, DANA_TOKEN, &first, "approve", "late")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let second = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body.clone()).await);
    assert_ne!(second, first);
    // Approved, then unused past the grant's TTL: gone.
    assert_eq!(
        decide(&h, DANA_TOKEN, &second, "approve", "ok")
            .await
            .status,
        StatusCode::OK
    );
    clock.advance(30);
    let third = approval_id(&h.execute("alice", "SLACK_SEND_MESSAGE", body).await);
    assert_ne!(third, second);
    assert_eq!(executions(&h), 0);
    let expired = wait_for_audit(&audit, "approval_expired", 2).await;
    let ids: Vec<_> = expired.iter().map(|e| e["approval_id"].clone()).collect();
    assert!(
        ids.contains(&json!(first)) && ids.contains(&json!(second)),
        "{ids:?}"
    );
    h.shutdown().await;
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test]
async fn explain_says_a_call_needs_approval_and_stores_nothing() {
    let h = gateway("").await;
    let config = entitygate::Config::from_toml(&config_toml(
        h.upstream_addr(),
        &format!("{OPERATORS}{OUTSIDE}"),
    ))
    .unwrap();
    let e = entitygate::explain::explain(
        &config,
        &env(),
        &entitygate::explain::ExplainRequest {
            method: Method::POST,
            target: "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE".into(),
            token: token("alice"),
            body: Some(send_message("#general", "dry").to_string().into_bytes()),
            live: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(e.decision, "approval_required", "{e:#?}");
    let steps = &e.invocations[0].steps;
    assert_eq!(
        steps.last(),
        Some(&("approval".to_owned(), "refused".to_owned())),
        "{steps:?}"
    );
    // The running gateway's store has no request from the dry run.
    let listed = h
        .admin(Method::GET, "/approvals", Some(ERIN_TOKEN), None)
        .await;
    assert_eq!(listed.json()["approvals"], json!([]));
}
