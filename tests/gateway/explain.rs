//! `entitygate explain` (issue 16): for each kind of decision, the dry run says what the
//! gateway then does with the same request: the same decision (and status), and for an
//! allowed call exactly the body Composio receives.

use std::process::Command;

use entitygate::explain::{explain, ExplainRequest, Explanation};
use entitygate::Config;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const RULES: &str = r#"
[[policy.rules]]
name = "free plan"
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github"]
"#;

struct Case {
    name: &'static str,
    token: String,
    path: &'static str,
    body: Value,
    decision: &'static str,
}

fn cases() -> Vec<Case> {
    let free = token_with(json!({
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "plan": "free",
        "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600
    }));
    vec![
        Case {
            name: "allowed",
            token: token("alice"),
            path: "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            body: json!({"arguments": {"title": "t"}}),
            decision: "allow",
        },
        Case {
            name: "pinned over a forged user id",
            token: token("alice"),
            path: "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            body: json!({"user_id": "bob", "arguments": {"title": "t"}}),
            decision: "allow",
        },
        Case {
            name: "refused by a policy rule",
            token: free,
            path: "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            body: json!({"arguments": {"title": "t"}}),
            decision: "tool_not_allowed",
        },
        Case {
            name: "code tool",
            token: token("alice"),
            path: "/api/v3.1/tools/execute/COMPOSIO_REMOTE_WORKBENCH",
            body: json!({"arguments": {"code": "print(1)"}}),
            decision: "",
        },
        Case {
            name: "code tool nested in a meta tool (v2)",
            token: token("alice"),
            path: "/api/v2/actions/COMPOSIO_MULTI_EXECUTE_TOOL/execute",
            body: json!({"input": {"tools": [
                {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"title": "t"}},
                {"tool_slug": "COMPOSIO_REMOTE_WORKBENCH", "arguments": {"code": "print(1)"}}
            ]}}),
            decision: "",
        },
        Case {
            name: "expired connection",
            token: token("alice"),
            path: "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL",
            body: json!({"arguments": {"to": "x@example.com"}}),
            decision: "connection_expired",
        },
    ]
}

async fn dry(h: &Harness, c: &Case, live: bool) -> Explanation {
    let config = Config::from_toml(&config_toml(h.upstream_addr(), RULES)).unwrap();
    explain(
        &config,
        &env(),
        &ExplainRequest {
            method: Method::POST,
            target: c.path.to_owned(),
            token: c.token.clone(),
            body: Some(c.body.to_string().into_bytes()),
            live,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn explain_says_what_the_gateway_then_does() {
    let h = Harness::with_config(RULES).await;
    for c in cases() {
        let live = dry(&h, &c, true).await;
        let seen_before = h.sandbox.requests_to(c.path).len();
        let r = h
            .send(Method::POST, c.path, Some(&c.token), Some(c.body.clone()))
            .await;
        let actual = if r.status == StatusCode::OK {
            "allow".to_owned()
        } else {
            r.slug()
        };
        assert_eq!(live.decision, actual, "{}: {live:#?}", c.name);
        if !c.decision.is_empty() {
            assert_eq!(live.decision, c.decision, "{}", c.name);
        } else {
            assert_ne!(live.decision, "allow", "{}", c.name);
        }
        if actual == "allow" {
            // Exactly the body that reached Composio.
            let sent = h.sandbox.requests_to(c.path);
            assert_eq!(sent.len(), seen_before + 1, "{}", c.name);
            let forwarded = live
                .forwarded
                .as_ref()
                .expect("an allowed call is forwarded");
            assert_eq!(forwarded.target, c.path);
            assert_eq!(
                forwarded.body.as_ref(),
                sent.last().unwrap().json().as_ref(),
                "{}",
                c.name
            );
            assert_eq!(forwarded.body.as_ref().unwrap()["user_id"], "alice");
        } else {
            assert_eq!(live.status, Some(r.status.as_u16()), "{}", c.name);
            assert!(live.forwarded.is_none(), "{}", c.name);
            assert_eq!(h.sandbox.requests_to(c.path).len(), seen_before);
        }
        assert_eq!(live.subject.as_deref(), Some("alice"));
        assert_eq!(live.route.as_deref(), Some(live.steps[1].1.as_str()));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn explain_names_the_rule_the_nested_tools_and_the_pinning() {
    let h = Harness::with_config(RULES).await;
    let cs = cases();
    let rule = dry(&h, &cs[2], true).await;
    assert!(
        rule.steps
            .iter()
            .any(|(k, v)| k == "rule" && v.contains("free plan")),
        "{rule:#?}"
    );
    assert!(rule.to_text().contains("free plan"));
    let pinned = dry(&h, &cs[1], false).await;
    assert!(
        pinned.steps.iter().any(|(k, _)| k == "identity"),
        "{pinned:#?}"
    );
    let nested = dry(&h, &cs[4], true).await;
    assert!(
        nested
            .invocations
            .iter()
            .any(|i| i.tool == "COMPOSIO_REMOTE_WORKBENCH"),
        "{nested:#?}"
    );
    // Offline, Composio is not asked: the expired connection is a stated requirement, not a
    // refusal, and nothing reached the sandbox.
    let before = h.sandbox.requests().len();
    let offline = dry(&h, &cs[5], false).await;
    assert_eq!(offline.decision, "allow");
    assert!(
        offline
            .requirements
            .iter()
            .any(|r| r.contains("connection of `gmail` for alice")),
        "{offline:#?}"
    );
    assert_eq!(
        h.sandbox.requests().len(),
        before,
        "offline explain asked Composio"
    );
    // Offline and live agree where the sandbox holds what offline assumes.
    for c in [&cs[0], &cs[2], &cs[3], &cs[4]] {
        assert_eq!(
            dry(&h, c, false).await.decision,
            dry(&h, c, true).await.decision,
            "{}",
            c.name
        );
    }
    // A token that does not verify: no identity, the same refusal as the gateway's.
    let mut bad = cases().remove(0);
    bad.token = "not-a-jwt".into();
    let e = dry(&h, &bad, false).await;
    assert!(e.subject.is_none());
    let r = h
        .send(
            Method::POST,
            bad.path,
            Some("not-a-jwt"),
            Some(bad.body.clone()),
        )
        .await;
    assert_eq!(e.decision, r.slug());
    h.shutdown().await;
}

#[tokio::test]
async fn the_explain_command_prints_text_or_json_and_exits_by_decision() {
    let h = Harness::with_config(RULES).await;
    let dir = std::env::temp_dir().join(format!("eg-explain-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("entitygate.toml");
    std::fs::write(&config, config_toml(h.upstream_addr(), RULES)).unwrap();
    let run = |tool: &str, json_out: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_entitygate"));
        cmd.args(["explain", "--config"])
            .arg(&config)
            .args(["--token", &token("alice")])
            .args(["--request", &format!("POST /api/v3.1/tools/execute/{tool}")])
            .args(["--body", r#"{"user_id":"bob","arguments":{}}"#])
            .env("COMPOSIO_API_KEY", API_KEY)
            .env("JWT_SECRET", SECRET);
        if json_out {
            cmd.arg("--json");
        }
        cmd.output().unwrap()
    };
    let out = run("GITHUB_CREATE_ISSUE", false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("decision     allow"), "{text}");
    assert!(text.contains(r#""user_id":"alice""#), "{text}");
    assert!(text.contains("requires"), "{text}");
    let out = run("COMPOSIO_REMOTE_WORKBENCH", true);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(v["decision"], "allow");
    assert!(
        h.sandbox.requests_to("/api/v3.1/tools/execute").is_empty(),
        "nothing forwarded"
    );
    let _ = std::fs::remove_dir_all(&dir);
    h.shutdown().await;
}

#[tokio::test]
async fn the_admin_listener_explains_with_its_token_only() {
    let h = Harness::with_config(RULES).await;
    let dir = std::env::temp_dir().join(format!("eg-explain-admin-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("entitygate.toml");
    let extra = format!(
        "{RULES}\n[admin]\nlisten = \"127.0.0.1:0\"\nexplain_token_env = \"ADMIN_EXPLAIN_TOKEN\"\n"
    );
    std::fs::write(&path, config_toml(h.upstream_addr(), &extra)).unwrap();
    let mut secrets = env();
    secrets.insert(
        "ADMIN_EXPLAIN_TOKEN".into(),
        "admin-explain-test-token".into(),
    );
    let gateway = entitygate::Gateway::builder(Config::load(&path).unwrap())
        .config_path(&path)
        .env(secrets)
        .build()
        .await
        .unwrap()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let admin = gateway.admin_addr().unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let ask = |auth: Option<&str>, live: bool| {
        let mut req = http::Request::post(format!("http://{admin}/explain"))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", format!("Bearer {a}"));
        }
        let body = json!({
            "token": token("alice"),
            "request": "POST /api/v3.1/tools/execute/GMAIL_SEND_EMAIL",
            "body": {"user_id": "bob", "arguments": {}},
            "live": live,
        });
        client.request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(
                body.to_string(),
            )))
            .unwrap(),
        )
    };
    for auth in [None, Some("wrong")] {
        let r = ask(auth, false).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let read = |r: http::Response<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt as _;
        let status = r.status();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice::<Value>(&b).unwrap())
    };
    let (status, offline) = read(ask(Some("admin-explain-test-token"), false).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{offline}");
    assert_eq!(offline["decision"], "allow");
    assert_eq!(offline["forwarded"]["body"]["user_id"], "alice");
    let (_, live) = read(ask(Some("admin-explain-test-token"), true).await.unwrap()).await;
    assert_eq!(live["decision"], "connection_expired", "{live}");
    assert!(
        h.sandbox.requests_to("/api/v3.1/tools/execute").is_empty(),
        "nothing forwarded"
    );
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    h.shutdown().await;
}

/// An investigator reads what was asked and what is forwarded, once each; and each fact of
/// the decision once (the tool is named by the carrier and by the decision: one step).
#[tokio::test]
async fn explain_names_the_forged_user_and_each_step_once() {
    let h = Harness::with_config(RULES).await;
    let pinned = dry(&h, &cases()[1], false).await;
    let id = pinned
        .identity
        .as_ref()
        .expect("the request named another user");
    assert_eq!(
        id.asked,
        vec![("body /user_id".to_owned(), json!("bob"))],
        "{pinned:#?}"
    );
    assert_eq!(id.forwarded_as.as_deref(), Some("alice"));
    let identity_steps: Vec<_> = pinned
        .steps
        .iter()
        .filter(|(k, _)| k == "identity")
        .collect();
    assert_eq!(identity_steps.len(), 1, "{pinned:#?}");
    assert!(
        identity_steps[0].1.contains("`bob`") && identity_steps[0].1.contains("`alice`"),
        "{}",
        identity_steps[0].1
    );
    assert!(pinned
        .to_text()
        .contains("asked for `bob` (body /user_id); forwarded as `alice`"));
    let tool_steps = pinned.steps.iter().filter(|(k, _)| k == "tool").count();
    assert_eq!(tool_steps, 1, "{:#?}", pinned.steps);

    // A query and a nested forged id, and an argument that merely is called user_id (a
    // tool's own argument, forwarded as sent: not something the caller "asked for").
    let c = Case {
        name: "query and body",
        token: token("alice"),
        path: "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        body: json!({"entity_id": "mallory", "arguments": {"user_id": "U123"}}),
        decision: "allow",
    };
    let e = dry(&h, &c, false).await;
    let asked = &e.identity.as_ref().expect("named another user").asked;
    assert_eq!(
        asked,
        &vec![("body /entity_id".to_owned(), json!("mallory"))],
        "{}",
        c.name
    );
    // Nobody else named: no identity story at all.
    assert!(dry(&h, &cases()[0], false).await.identity.is_none());
    h.shutdown().await;
}

/// Issue 26: explain's invocations are the decision's own trace, not a story rebuilt from the
/// audit journal: each invocation with its steps and the reason of its refusal, including one
/// refused before anything was looked up (the kill switch's tool rule), of which the journal
/// held no toolkit and no rule.
#[tokio::test]
async fn explain_shows_each_invocation_as_the_decision_traced_it() {
    use entitygate::killswitch::{KillSwitch, Rule};
    let h = Harness::with_config(RULES).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ks = KillSwitch::in_memory();
    let rule = json!({"tool": "COMPOSIO_REMOTE_*", "reason": "incident"});
    ks.replace_all(vec![Rule::from_request(&rule, now).unwrap()])
        .await
        .unwrap();
    let config = Config::from_toml(&config_toml(h.upstream_addr(), RULES)).unwrap();
    let nested = &cases()[4];
    let e = entitygate::explain::explain_with(
        &config,
        &env(),
        &ExplainRequest {
            method: Method::POST,
            target: nested.path.to_owned(),
            token: nested.token.clone(),
            body: Some(nested.body.to_string().into_bytes()),
            live: false,
        },
        Some(std::sync::Arc::new(ks)),
    )
    .await
    .unwrap();
    assert_eq!(e.decision, "denied_by_kill_switch", "{e:#?}");
    let tools: Vec<&str> = e.invocations.iter().map(|i| i.tool.as_str()).collect();
    assert_eq!(
        tools,
        [
            "COMPOSIO_MULTI_EXECUTE_TOOL",
            "GITHUB_CREATE_ISSUE",
            "COMPOSIO_REMOTE_WORKBENCH"
        ],
        "{e:#?}"
    );
    assert!(e.invocations[..2].iter().all(|i| i.refusal.is_none()));
    assert_eq!(e.invocations[1].toolkit.as_deref(), Some("github"));
    let refused = &e.invocations[2];
    assert_eq!(
        refused.steps,
        vec![("kill switch (tool)".to_owned(), "refused".to_owned())]
    );
    assert!(refused.refusal.is_some(), "{refused:#?}");
    assert!(
        e.to_text().contains("COMPOSIO_REMOTE_WORKBENCH: refused"),
        "{}",
        e.to_text()
    );
    h.shutdown().await;
}

/// A gateway built in-process (no configuration file) explains against the configuration in
/// force instead of answering 409 (a status the SDKs retry, for a refusal that never changes).
#[tokio::test]
async fn without_a_config_file_the_admin_explains_against_the_rules_in_force() {
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n";
    let h = Harness::with_config(&format!("{RULES}\n{admin}")).await;
    let free = token_with(json!({
        "sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "plan": "free",
        "exp": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600
    }));
    let r = h
        .admin(
            Method::POST,
            "/explain",
            Some(ADMIN_TOKEN),
            Some(json!({"token": free,
                "request": "POST /api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
                "body": {"arguments": {}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["decision"], "tool_not_allowed", "{}", r.text());
    h.assert_nothing_forwarded();
    h.shutdown().await;
}
