//! The security team's controls (issue 15): admin authentication, the kill switch,
//! revocation on the response path, secrets from files and the rotation window.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n";

#[tokio::test]
async fn admin_state_changes_need_the_token() {
    let h = Harness::with_config(ADMIN).await;
    for bearer in [None, Some("wrong"), Some("test-admin-token-012345678")] {
        for (method, path) in [(Method::POST, "/reload"), (Method::POST, "/explain")] {
            let r = h.admin(method, path, bearer, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {bearer:?}");
        }
    }
    // The right token gets through to the endpoint (this gateway has no file to reload).
    let r = h
        .admin(Method::POST, "/reload", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["reloaded"], false);
    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        let r = h.admin(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn without_a_token_state_changes_are_disabled_not_open() {
    let h = Harness::with_config("[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    for bearer in [None, Some(""), Some(ADMIN_TOKEN)] {
        let r = h.admin(Method::POST, "/reload", bearer, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bearer:?}");
        assert!(r.text().contains("disabled"), "{}", r.text());
    }
    let r = h.admin(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

// --- the kill switch ---

const SESSION: &str = "trs_controls_1";

/// Adds a deny rule through the admin API; answers its id.
async fn deny(h: &Harness, rule: serde_json::Value) -> String {
    let r = h
        .admin(Method::POST, "/deny", Some(ADMIN_TOKEN), Some(rule))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_owned()
}

/// A stateless MCP `tools/call` of `tool` on a hosted server, as `user`.
async fn mcp_call(h: &Harness, user: &str, tool: &str) -> Reply {
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": {},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let req = http::Request::post(h.url("/v3/mcp/mcp_1"))
        .header("x-api-key", token(user))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            msg.to_string(),
        )))
        .unwrap();
    h.raw(req).await
}

fn assert_denied(r: &Reply, reason: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.slug(), "denied_by_kill_switch", "{}", r.text());
    assert_eq!(r.json()["error"]["code"], 9144);
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(reason), "{message}");
}

#[tokio::test]
async fn a_toolkit_rule_covers_every_carrier_on_the_next_request() {
    let h = Harness::with_config(ADMIN).await;
    h.sandbox.add_session(SESSION, "alice");
    let ok = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let id = deny(&h, json!({"toolkit": "github", "reason": "incident 42"})).await;
    h.sandbox.clear();

    // REST, direct.
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_denied(&r, "incident 42");
    // Nested in a multi-execute, beside an allowed tool.
    let r = h
        .execute(
            "alice",
            "COMPOSIO_MULTI_EXECUTE_TOOL",
            json!({"arguments": {"tools": [
                {"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}},
                {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}]}}),
        )
        .await;
    assert_denied(&r, "incident 42");
    // A tool router session's execute.
    let r = h
        .send(
            Method::POST,
            &format!("/api/v3.1/tool_router/session/{SESSION}/execute"),
            Some(&token("alice")),
            Some(json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}})),
        )
        .await;
    assert_denied(&r, "incident 42");
    // Proxy execution of the toolkit.
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tools/execute/proxy",
            Some(&token("alice")),
            Some(json!({"connected_account_id": "ca_alice_github", "endpoint": "/user", "method": "GET"})),
        )
        .await;
    assert_denied(&r, "incident 42");
    // MCP tools/call: an error result carrying the same refusal.
    let r = mcp_call(&h, "alice", "GITHUB_CREATE_ISSUE").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let res = &r.json()["result"];
    assert_eq!(res["isError"], true, "{}", r.text());
    assert_eq!(
        res["structuredContent"]["error"]["slug"],
        "denied_by_kill_switch"
    );
    h.assert_no_execution();
    assert!(h.upstream("/v3/mcp").is_empty());
    assert_eq!(
        h.sandbox.count(
            "POST",
            &format!("/api/v3.1/tool_router/session/{SESSION}/execute")
        ),
        0
    );
    // Another toolkit is untouched.
    let r = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Lifted: the next request goes through.
    let r = h
        .admin(
            Method::DELETE,
            &format!("/deny/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h
        .admin(
            Method::DELETE,
            &format!("/deny/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

/// A catalogue read (no connected account involved) with `tok`.
async fn tools(h: &Harness, tok: String) -> Reply {
    h.send(
        Method::GET,
        "/api/v3.1/tools?toolkit_slug=github",
        Some(&tok),
        None,
    )
    .await
}

#[tokio::test]
async fn subject_jti_tool_and_all_rules_and_expiry() {
    let h = Harness::with_config(ADMIN).await;
    // Subject: alice is refused on every route, bob is not.
    let id = deny(
        &h,
        json!({"subject": "alice", "reason": "account compromised"}),
    )
    .await;
    h.sandbox.clear();
    assert_denied(&tools(&h, token("alice")).await, "account compromised");
    h.assert_nothing_forwarded();
    assert_eq!(tools(&h, token("bob")).await.status, StatusCode::OK);
    h.admin(
        Method::DELETE,
        &format!("/deny/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;

    // jti: one token of bob's is refused, his others are not.
    let leaked = token_with(json!({"sub": "bob", "iss": ISSUER, "aud": AUDIENCE,
        "exp": now() + 600, "jti": "tok-leaked"}));
    let fresh = token_with(json!({"sub": "bob", "iss": ISSUER, "aud": AUDIENCE,
        "exp": now() + 600, "jti": "tok-fresh"}));
    assert_eq!(tools(&h, leaked.clone()).await.status, StatusCode::OK);
    let id = deny(&h, json!({"jti": "tok-leaked", "reason": "token leaked"})).await;
    h.sandbox.clear();
    assert_denied(&tools(&h, leaked).await, "token leaked");
    h.assert_nothing_forwarded();
    assert_eq!(tools(&h, fresh).await.status, StatusCode::OK);
    h.admin(
        Method::DELETE,
        &format!("/deny/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;

    // A numeric jti is the same token as its decimal text: `deny --jti 123` stops it.
    let numeric = token_with(json!({"sub": "bob", "iss": ISSUER, "aud": AUDIENCE,
        "exp": now() + 600, "jti": 123}));
    let id = deny(&h, json!({"jti": "123", "reason": "numeric token leaked"})).await;
    h.sandbox.clear();
    assert_denied(&tools(&h, numeric).await, "numeric token leaked");
    h.assert_nothing_forwarded();
    h.admin(
        Method::DELETE,
        &format!("/deny/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;

    // Tool glob.
    let id = deny(&h, json!({"tool": "slack_*", "reason": "slack bot loop"})).await;
    h.sandbox.clear();
    let r = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_denied(&r, "slack bot loop");
    h.assert_no_execution();
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.admin(
        Method::DELETE,
        &format!("/deny/{id}"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;

    // Everything, for two seconds.
    deny(
        &h,
        json!({"all": true, "reason": "maintenance", "expires_in_secs": 2}),
    )
    .await;
    h.sandbox.clear();
    assert_denied(&tools(&h, token("bob")).await, "maintenance");
    h.assert_nothing_forwarded();
    let listed = h.admin(Method::GET, "/deny", Some(ADMIN_TOKEN), None).await;
    assert_eq!(listed.json()["rules"].as_array().unwrap().len(), 1);
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    assert_eq!(tools(&h, token("bob")).await.status, StatusCode::OK);
    let listed = h.admin(Method::GET, "/deny", Some(ADMIN_TOKEN), None).await;
    assert_eq!(listed.json()["rules"], json!([]));
    h.shutdown().await;
}

/// A rule's end is evidence too: when its expiry passes the trail says so, once.
#[tokio::test]
async fn an_expiring_rule_is_audited_when_it_lapses() {
    let dir = std::env::temp_dir().join(format!("eg-lapse-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let h = Harness::with_config(&format!(
        "{ADMIN}[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    let id = deny(
        &h,
        json!({"subject": "alice", "reason": "short", "expires_in_secs": 1}),
    )
    .await;
    let mut lapsed = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        lapsed = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "deny_expired")
            .collect();
        if !lapsed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(lapsed.len(), 1, "{lapsed:?}");
    assert_eq!(lapsed[0]["rule_id"], id.as_str());
    assert_eq!(lapsed[0]["rule"], "subject=alice");
    assert_eq!(tools(&h, token("alice")).await.status, StatusCode::OK);
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_deny_api_needs_the_admin_token_and_checks_its_input() {
    let h = Harness::with_config(ADMIN).await;
    for bearer in [None, Some("wrong")] {
        let r = h
            .admin(
                Method::POST,
                "/deny",
                bearer,
                Some(json!({"all": true, "reason": "x"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
        let r = h.admin(Method::GET, "/deny", bearer, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("bob")), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "no rule was added");
    for bad in [
        json!({"all": true}),
        json!({"subject": "a", "toolkit": "b", "reason": "x"}),
        json!({"tool": "a b", "reason": "x"}),
    ] {
        let r = h
            .admin(Method::POST, "/deny", Some(ADMIN_TOKEN), Some(bad.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn deny_rules_survive_a_restart_and_every_change_is_audited() {
    let dir = std::env::temp_dir().join(format!("eg-controls-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.redb");
    let audit = dir.join("audit.jsonl");
    let extra = format!(
        "{ADMIN}[state]\npath = {:?}\n[audit]\npath = {:?}\n",
        state.display().to_string(),
        audit.display().to_string()
    );
    let h = Harness::with_config(&extra).await;
    let id = deny(&h, json!({"subject": "alice", "reason": "compromised"})).await;
    deny(&h, json!({"toolkit": "slack", "reason": "gone"})).await;
    let r = h
        .admin(
            Method::DELETE,
            &format!("/deny/{id}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    deny(
        &h,
        json!({"subject": "alice", "reason": "still compromised"}),
    )
    .await;
    let upstream = h.upstream_addr();
    let running = h.gateway.as_ref().unwrap().local_addr();
    let mut h = h;
    h.gateway.take().unwrap().shutdown().await;
    assert!(std::net::TcpStream::connect(running).is_err(), "stopped");

    // A new gateway on the same store refuses on its first request. (Its own audit file:
    // in one test process the first writer thread may still be finishing.)
    let extra2 = format!(
        "{ADMIN}[state]\npath = {:?}\n[audit]\npath = {:?}\n",
        state.display().to_string(),
        dir.join("audit2.jsonl").display().to_string()
    );
    let config = entitygate::Config::from_toml(&config_toml(upstream, &extra2)).unwrap();
    let mut restarted = None;
    for _ in 0..50 {
        match entitygate::Gateway::builder(config.clone())
            .env(env())
            .build()
            .await
        {
            Ok(g) => {
                restarted = Some(g);
                break;
            }
            // The old gateway's last connections may still hold the store for a moment.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    h.serve(restarted.expect("the store reopens")).await;
    h.sandbox.clear();
    assert_denied(
        &h.send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
            .await,
        "still compromised",
    );
    let r = h
        .execute("bob", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_denied(&r, "gone");
    // Only the tool's metadata was read (its toolkit is Composio's word); nothing ran.
    h.assert_no_execution();
    let listed = h.admin(Method::GET, "/deny", Some(ADMIN_TOKEN), None).await;
    assert_eq!(listed.json()["rules"].as_array().unwrap().len(), 2);
    h.shutdown().await;

    // Every change is an event of the hash chain.
    let mut events = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        events = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"].as_str().is_some_and(|e| e.starts_with("deny_")))
            .collect();
        if events.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let kinds: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["deny_added", "deny_added", "deny_removed", "deny_added"]
    );
    assert_eq!(events[0]["rule"], "subject=alice");
    assert_eq!(events[0]["reason"], "compromised");
    assert!(events.iter().all(|e| e["hash"].is_string()), "chained");
    let report = entitygate::audit::verify(std::slice::from_ref(&audit), None, None);
    assert!(report.is_ok(), "{report:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `entitygate deny ...` against `admin`, with the token in `ENTITYGATE_ADMIN_TOKEN`.
fn deny_cli(admin: std::net::SocketAddr, token: Option<&str>, args: &[&str]) -> (i32, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"));
    cmd.arg("deny")
        .args(["--admin", &format!("http://{admin}")])
        .args(args)
        .env_remove("ENTITYGATE_ADMIN_TOKEN");
    if let Some(t) = token {
        cmd.env("ENTITYGATE_ADMIN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn the_deny_cli_adds_lists_and_lifts_rules() {
    let h = Harness::with_config(ADMIN).await;
    let admin = h.gateway.as_ref().unwrap().admin_addr().unwrap();
    let run = |token: Option<&'static str>, args: Vec<&'static str>| {
        tokio::task::spawn_blocking(move || deny_cli(admin, token, &args))
    };
    // No token: a usage error; a wrong one: refused by the gateway. Neither adds a rule.
    let (code, out) = run(None, vec!["add", "--all", "--reason", "x"])
        .await
        .unwrap();
    assert_eq!(code, 64, "{out}");
    let (code, out) = run(Some("wrong"), vec!["add", "--all", "--reason", "x"])
        .await
        .unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("401"), "{out}");

    let (code, out) = run(
        Some(ADMIN_TOKEN),
        vec!["add", "--subject", "alice", "--reason", "phished"],
    )
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}");
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    h.sandbox.clear();
    assert_denied(&tools(&h, token("alice")).await, "phished");
    h.assert_nothing_forwarded();
    let (code, out) = run(Some(ADMIN_TOKEN), vec!["list"]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&id) && out.contains("phished"), "{out}");
    let id: &'static str = Box::leak(id.into_boxed_str());
    let (code, out) = run(Some(ADMIN_TOKEN), vec!["remove", id]).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert_eq!(tools(&h, token("alice")).await.status, StatusCode::OK);
    let (code, _) = run(Some(ADMIN_TOKEN), vec!["remove", id]).await.unwrap();
    assert_eq!(code, 1, "already lifted");
    h.shutdown().await;
}

// --- secrets from files, and the rotation window ---

const NEW_KEY: &str = "sk_test_ROTATED_COMPOSIO_KEY_fedcba9876543210";

/// Replaces the harness's gateway with one built from `upstream_toml` (the `[upstream]`
/// table's body) and `extra`, on the same sandbox.
async fn regateway(h: &mut Harness, upstream_toml: &str, extra: &str) {
    if let Some(g) = h.gateway.take() {
        g.shutdown().await;
    }
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://{}\"\n{upstream_toml}\n\
         [auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[[auth.keys]]\nalg = \"HS256\"\n\
         secret_env = \"JWT_SECRET\"\n{extra}\n",
        h.upstream_addr()
    );
    let config = entitygate::Config::from_toml(&text).unwrap();
    let gateway = entitygate::Gateway::builder(config)
        .env(env())
        .build()
        .await
        .unwrap();
    h.serve(gateway).await;
}

/// Writes `text` to `path` as a secret volume does: a new file renamed over the old one.
fn write_secret(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The keys the sandbox saw, in order.
fn keys_seen(h: &Harness) -> Vec<String> {
    h.sandbox
        .requests()
        .iter()
        .map(|r| r.header_all("x-api-key").join(","))
        .collect()
}

#[tokio::test]
async fn rotating_the_key_file_changes_the_key_upstream_sees_with_no_request_failing() {
    let dir = std::env::temp_dir().join(format!("eg-keyfile-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("composio-api-key");
    write_secret(&key_file, &format!("{API_KEY}\n"));
    let mut h = Harness::with_config(ADMIN).await;
    regateway(
        &mut h,
        &format!(
            "api_key_file = {:?}\nsecret_poll_ms = 50",
            key_file.display().to_string()
        ),
        &format!(
            "{ADMIN}[audit]\npath = {:?}\n",
            dir.join("audit.jsonl").display().to_string()
        ),
    )
    .await;
    let h = Arc::new(h);
    // Composio accepts both keys during the rotation window.
    h.sandbox.set_accepted_keys(&[API_KEY, NEW_KEY]);

    // Load: eight clients reading and executing without pause.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (h, stop) = (h.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = if i % 2 == 0 {
                    tools(&h, token("bob")).await
                } else {
                    h.execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
                        .await
                };
                statuses.push(r.status);
            }
            statuses
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    write_secret(&key_file, NEW_KEY);
    let mut rotated = false;
    for _ in 0..100 {
        if keys_seen(&h).last().map(String::as_str) == Some(NEW_KEY) {
            rotated = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(rotated, "the new key reaches Composio");
    // The old key is revoked at Composio: nothing uses it any more.
    h.sandbox.set_accepted_keys(&[NEW_KEY]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // A broken file (empty, half-written) keeps the key in use, and /readyz says so.
    write_secret(&key_file, "");
    let mut said = false;
    for _ in 0..100 {
        let r = h.admin(Method::GET, "/readyz", None, None).await;
        if r.json()["secrets_error"].is_string() {
            assert!(r.text().contains("api_key_file"), "{}", r.text());
            said = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(said, "/readyz names the failed secret");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let statuses = c.await.unwrap();
        total += statuses.len();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "a request failed during the rotation: {statuses:?}"
        );
    }
    assert!(total > 50, "the load ran ({total} requests)");
    let seen = keys_seen(&h);
    let first_new = seen.iter().position(|k| k == NEW_KEY).unwrap();
    assert!(seen[..first_new].iter().all(|k| k == API_KEY));
    // A request that started before the switch may finish with the old key; after the first
    // new one, stragglers are only those in flight.
    let old_after = seen[first_new..].iter().filter(|k| *k == API_KEY).count();
    assert!(
        old_after <= 16,
        "{old_after} requests with the old key after the switch"
    );

    // Fixed again: the error clears.
    write_secret(&key_file, NEW_KEY);
    for _ in 0..100 {
        let r = h.admin(Method::GET, "/readyz", None, None).await;
        if r.json()["secrets_error"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = h.admin(Method::GET, "/readyz", None, None).await;
    assert!(r.json()["secrets_error"].is_null(), "{}", r.text());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_previous_key_is_retried_for_safe_requests_only() {
    let dir = std::env::temp_dir().join(format!("eg-prevkey-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("composio-api-key");
    write_secret(&key_file, NEW_KEY);
    let audit = dir.join("audit.jsonl");
    let mut h = Harness::start().await;
    // The rotation was done in the wrong order: the gateway has the new key, Composio does
    // not know it yet.
    regateway(
        &mut h,
        &format!(
            "api_key_file = {:?}\nprevious_api_key_env = \"COMPOSIO_API_KEY\"",
            key_file.display().to_string()
        ),
        &format!("[audit]\npath = {:?}\n", audit.display().to_string()),
    )
    .await;
    h.sandbox.clear();
    // A catalogue read: refused with the new key, answered with the previous one.
    let r = tools(&h, token("bob")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(keys_seen(&h), [NEW_KEY, API_KEY]);
    // An execution: never repeated. (Its lookups are reads, and are.)
    h.sandbox.clear();
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    let executions: Vec<_> = h
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert_eq!(executions.len(), 1, "the execution was sent once");
    assert_eq!(executions[0].header_all("x-api-key"), [NEW_KEY]);
    // Reported in the audit trail.
    let mut found = false;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        if text.contains("\"upstream_key\":\"previous\"") {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(found, "the audit line says the previous key answered");
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// During a rotation the key being rotated out is still live at Composio: an answer that
/// carries it is redacted as one carrying the current key is. `Harness::send` itself asserts `API_KEY` (the previous key here) never
/// comes back, in the body or a header.
#[tokio::test]
async fn the_previous_key_is_redacted_from_answers_too() {
    let dir = std::env::temp_dir().join(format!("eg-prevkey-echo-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("composio-api-key");
    write_secret(&key_file, NEW_KEY);
    let mut h = Harness::start().await;
    regateway(
        &mut h,
        &format!(
            "api_key_file = {:?}\nprevious_api_key_env = \"COMPOSIO_API_KEY\"",
            key_file.display().to_string()
        ),
        "",
    )
    .await;
    // The answer carries the previous key (here Composio echoes a request that quoted it).
    h.sandbox.clear();
    h.sandbox.set_fault(entitygate::sandbox::Fault::EchoHeaders);
    let r = h
        .send(
            Method::GET,
            &format!("/api/v3.1/tools?search={API_KEY}"),
            Some(&token("bob")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(keys_seen(&h), [NEW_KEY], "sent with the current key");
    assert!(r.text().contains("[REDACTED]"), "{}", r.text());
    assert!(!r.text().contains(API_KEY) && !r.text().contains(NEW_KEY));
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_admin_explain_consults_the_running_kill_switch() {
    let dir = std::env::temp_dir().join(format!("eg-explain-ks-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut h = Harness::start().await;
    let path = dir.join("entitygate.toml");
    std::fs::write(&path, config_toml(h.upstream_addr(), ADMIN)).unwrap();
    if let Some(g) = h.gateway.take() {
        g.shutdown().await;
    }
    let gateway = entitygate::Gateway::builder(entitygate::Config::load(&path).unwrap())
        .config_path(&path)
        .env(env())
        .build()
        .await
        .unwrap();
    h.serve(gateway).await;
    deny(&h, json!({"toolkit": "github", "reason": "INC-7"})).await;
    h.sandbox.clear();
    let r = h
        .admin(
            Method::POST,
            "/explain",
            Some(ADMIN_TOKEN),
            Some(json!({"token": token("alice"),
                "request": "POST /api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
                "body": {"arguments": {}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let e = r.json();
    assert_eq!(e["decision"], "denied_by_kill_switch", "{e}");
    assert!(e["message"].as_str().unwrap().contains("INC-7"), "{e}");
    assert!(
        e["kill_switch"]
            .as_str()
            .unwrap()
            .starts_with("consulted (1"),
        "{e}"
    );
    h.assert_nothing_forwarded();
    h.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// --- revocation on the response path, through a session (the REST case is in tests/expiry.rs) ---

#[tokio::test]
async fn a_session_execute_answer_showing_a_revoked_token_refuses_the_next_call() {
    let h = Harness::start().await;
    h.sandbox.add_session(SESSION, "alice");
    assert!(h.sandbox.set_revoked_at_provider("ca_alice_github", true));
    let path = format!("/api/v3.1/tool_router/session/{SESSION}/execute");
    let alice = token("alice");
    let call = || {
        h.send(
            Method::POST,
            &path,
            Some(&alice),
            Some(json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}})),
        )
    };
    // The provider's 401 reaches the caller as Composio relayed it...
    let r = call().await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["data"]["status_code"], 401);
    // ... and the next call, through any carrier, is refused before Composio runs anything.
    h.sandbox.clear();
    let r = call().await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.slug(), "connection_expired");
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.slug(), "connection_expired", "{}", r.text());
    h.assert_no_execution();
    assert_eq!(h.sandbox.count("POST", &path), 0);
    assert!(
        h.upstream("/api/v3.1/connected_accounts").is_empty(),
        "not even a status lookup"
    );
    // Other toolkits of alice's still run.
    let r = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// An MCP `tools/call` is an execution too: its tool result showing the provider's 401 marks
/// the connection broken like a REST answer, with the answer as JSON or as an event stream.
#[tokio::test]
async fn an_mcp_tool_result_showing_a_revoked_token_refuses_the_next_call() {
    use entitygate::sandbox::{McpAnswer, McpConfig};
    for answer in [McpAnswer::Json, McpAnswer::Sse] {
        let h = Harness::start().await;
        h.sandbox.set_mcp_config(McpConfig {
            answer,
            ..McpConfig::default()
        });
        h.sandbox.add_session(SESSION, "alice");
        assert!(h.sandbox.set_revoked_at_provider("ca_alice_github", true));
        let path = format!("/tool_router/{SESSION}/mcp");
        let call = |id: u64| {
            let msg = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "GITHUB_CREATE_ISSUE", "arguments": {},
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
            let req = http::Request::post(h.url(&path))
                .header("x-api-key", token("alice"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2026-07-28")
                .header("mcp-method", "tools/call")
                .header("mcp-name", "GITHUB_CREATE_ISSUE")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    msg.to_string(),
                )))
                .unwrap();
            h.raw(req)
        };
        // The provider's 401 reaches the model as Composio answered it...
        let r = call(1).await;
        assert_eq!(r.status, StatusCode::OK, "{answer:?}: {}", r.text());
        assert!(r.text().contains("401"), "{answer:?}: {}", r.text());
        // ... and the next call, through any carrier, is refused before Composio runs it.
        h.sandbox.clear();
        let r = call(2).await;
        assert!(
            r.text().contains("\"isError\":true") && r.text().contains("reconnect"),
            "{answer:?}: {}",
            r.text()
        );
        let r = h
            .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
            .await;
        assert_eq!(r.slug(), "connection_expired", "{answer:?}: {}", r.text());
        h.assert_no_execution();
        assert_eq!(h.sandbox.count("POST", &path), 0, "{answer:?}");
        h.shutdown().await;
    }
}
