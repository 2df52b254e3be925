//! Tool policy from claims (issue 9): rules on every execute route, nested meta-tool slugs,
//! code-running meta tools, listings, session toolkits, reload and the audit trail. Every
//! refusal also proves that nothing reached Composio's execute endpoints.

use std::time::Duration;

use entitygate::Config;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const PLANS: &str = r#"
[[policy.rules]]
name = "free plan"
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github"]
"#;

const ROLES: &str = r#"
[[policy.rules]]
name = "engineers"
when = { claim = "roles", contains = "engineer" }
allow_tools = ["COMPOSIO_REMOTE_WORKBENCH"]
allow_toolkits = ["*"]
[[policy.rules]]
name = "support"
when = { claim = "roles", contains = "support" }
allow_tools = ["SLACK_SEND_MESSAGE", "GMAIL_*"]
"#;

fn tok(user: &str, extra: Value) -> String {
    let mut claims = json!({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
    if let (Some(c), Value::Object(e)) = (claims.as_object_mut(), extra) {
        c.extend(e);
    }
    token_with(claims)
}

fn assert_refused(r: &Reply, tool: &str, rule: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.slug(), "tool_not_allowed", "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["code"], 9143);
    assert_eq!(e["tool"], tool, "{}", r.text());
    assert!(
        e["rule"].as_str().unwrap().contains(rule),
        "rule {rule:?}: {}",
        r.text()
    );
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains(tool) && msg.contains(rule),
        "the message names the tool and the rule: {msg}"
    );
    assert_eq!(r.headers["x-should-retry"], "false");
}

/// Nothing reached any execute endpoint, direct, proxy or in a session.
fn assert_nothing_executed(h: &Harness) {
    h.assert_no_execution();
    assert_eq!(h.sandbox.count("POST", "/api/v3/tools/execute"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v2/actions"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v1/actions"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tool_router"), 0);
    assert_eq!(h.sandbox.count("PATCH", "/api/v3.1/tool_router"), 0);
}

async fn post(h: &Harness, path: &str, t: &str, body: Value) -> Reply {
    h.send(Method::POST, path, Some(t), Some(body)).await
}

fn multi(tools: Value) -> Value {
    json!({"arguments": {"tools": tools}})
}

#[tokio::test]
async fn without_rules_executions_are_as_before_but_code_tools_are_refused() {
    let h = Harness::start().await;
    let t = tok("alice", json!({"plan": "free"}));
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        &t,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.sandbox.clear();
    for tool in ["COMPOSIO_REMOTE_WORKBENCH", "composio_remote_bash_tool"] {
        let r = post(
            &h,
            &format!("/api/v3.1/tools/execute/{tool}"),
            &t,
            json!({}),
        )
        .await;
        assert_refused(&r, tool, "code-running");
    }
    // Refused by name: not even the tool lookup went upstream.
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn a_plan_rule_refuses_on_every_execute_route() {
    let h = Harness::with_config(PLANS).await;
    h.sandbox.add_session("trs_alice", "alice");
    let free = tok("alice", json!({"plan": "free"}));
    let rule = "free plan";
    let calls: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            json!({"arguments": {}}),
            "GITHUB_CREATE_ISSUE",
        ),
        (
            "/api/v3/tools/execute/GITHUB_CREATE_ISSUE",
            json!({"arguments": {}}),
            "GITHUB_CREATE_ISSUE",
        ),
        (
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"appName": "github", "input": {}}),
            "GITHUB_CREATE_AN_ISSUE",
        ),
        (
            "/api/v1/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"appName": "github", "input": {}}),
            "GITHUB_CREATE_AN_ISSUE",
        ),
        (
            "/api/v3.1/tools/execute/proxy",
            json!({"endpoint": "/user", "method": "GET", "connected_account_id": "ca_alice_github"}),
            "PROXY_EXECUTE (github)",
        ),
        (
            "/api/v2/actions/proxy",
            json!({"endpoint": "/user", "method": "GET", "connectedAccountId": "ca_alice_github"}),
            "PROXY_EXECUTE (github)",
        ),
        (
            "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL",
            multi(json!([
                {"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}},
                {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}},
            ])),
            "GITHUB_CREATE_ISSUE",
        ),
        (
            "/api/v3.1/tools/execute/COMPOSIO_MANAGE_CONNECTIONS",
            json!({"arguments": {"toolkits": ["slack", "github"]}}),
            "github",
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/execute",
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}),
            "GITHUB_CREATE_ISSUE",
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/execute",
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "GITHUB_STAR_A_REPOSITORY_FOR_THE_AUTHENTICATED_USER"},
            ]}}),
            "GITHUB_STAR_A_REPOSITORY_FOR_THE_AUTHENTICATED_USER",
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/execute",
            json!({"tool_slug": "COMPOSIO_MANAGE_CONNECTIONS", "arguments": {"toolkits": ["github"]}}),
            "github",
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/execute",
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "COMPOSIO_MANAGE_CONNECTIONS", "arguments": {"toolkits": ["github"]}},
            ]}}),
            "github",
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/proxy_execute",
            json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET"}),
            "PROXY_EXECUTE (github)",
        ),
    ];
    for (path, body, tool) in &calls {
        let r = post(&h, path, &free, body.clone()).await;
        assert_refused(&r, tool, rule);
    }
    assert_nothing_executed(&h);

    // The same calls for slack pass the policy (and reach Composio).
    for (path, body) in [
        ("/api/v3.1/tools/execute/SLACK_SEND_MESSAGE", json!({})),
        (
            "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL",
            multi(json!([{"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}}])),
        ),
        (
            "/api/v3.1/tools/execute/COMPOSIO_MANAGE_CONNECTIONS",
            json!({"arguments": {"toolkits": ["slack"]}}),
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/execute",
            json!({"tool_slug": "SLACK_SEND_MESSAGE"}),
        ),
        (
            "/api/v3.1/tool_router/session/trs_alice/proxy_execute",
            json!({"toolkit_slug": "slack", "endpoint": "/x", "method": "GET"}),
        ),
    ] {
        h.sandbox.clear();
        let r = post(&h, path, &free, body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(h.sandbox.count("POST", path), 1, "{path}");
    }
    // Another plan is not concerned.
    let pro = tok("alice", json!({"plan": "pro"}));
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        &pro,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn a_role_allowlist_with_globs_and_the_code_tools() {
    let h = Harness::with_config(ROLES).await;
    let support = tok("alice", json!({"roles": ["support"]}));
    let exec = |tool: &str| format!("/api/v3.1/tools/execute/{tool}");
    let r = post(&h, &exec("SLACK_SEND_MESSAGE"), &support, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.sandbox.clear();
    for tool in [
        "SLACK_LIST_ALL_CHANNELS",
        "GITHUB_CREATE_ISSUE",
        "COMPOSIO_REMOTE_WORKBENCH",
    ] {
        let r = post(&h, &exec(tool), &support, json!({})).await;
        assert_refused(&r, tool, "support");
    }
    // A glob: the policy allows gmail, then the connection gate speaks (alice's is expired).
    let r = post(&h, &exec("GMAIL_SEND_EMAIL"), &support, json!({})).await;
    assert_eq!(r.slug(), "connection_expired", "{}", r.text());
    assert_nothing_executed(&h);

    // Engineers may run the workbench: the policy lets it through to the lookup (the sandbox
    // does not know it).
    let eng = tok("alice", json!({"roles": ["engineer"]}));
    let r = post(&h, &exec("COMPOSIO_REMOTE_WORKBENCH"), &eng, json!({})).await;
    assert_eq!(r.slug(), "tool_not_found", "{}", r.text());
    // Nobody else may, directly or nested.
    let plain = token("alice");
    let r = post(&h, &exec("COMPOSIO_REMOTE_BASH_TOOL"), &plain, json!({})).await;
    assert_refused(&r, "COMPOSIO_REMOTE_BASH_TOOL", "code-running");
    let r = post(
        &h,
        &exec("COMPOSIO_MULTI_EXECUTE_TOOL"),
        &plain,
        multi(json!([{"tool_slug": "COMPOSIO_REMOTE_WORKBENCH", "arguments": {"code": "x"}}])),
    )
    .await;
    assert_refused(&r, "COMPOSIO_REMOTE_WORKBENCH", "code-running");
    // A multi-execute nested in a multi-execute would hide its targets.
    let r = post(
        &h,
        &exec("COMPOSIO_MULTI_EXECUTE_TOOL"),
        &eng,
        multi(json!([{"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": []}}])),
    )
    .await;
    assert_refused(&r, "COMPOSIO_MULTI_EXECUTE_TOOL", "nested");
    assert_nothing_executed(&h);
    h.shutdown().await;
}

#[tokio::test]
async fn oauth_scopes_grant_toolkits() {
    let h = Harness::start().await;
    let t = tok("alice", json!({"scope": "openid composio:slack"}));
    let r = post(
        &h,
        "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE",
        &t,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.sandbox.clear();
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        &t,
        json!({}),
    )
    .await;
    assert_refused(&r, "GITHUB_CREATE_ISSUE", "scope");
    assert_nothing_executed(&h);
    let all = tok("alice", json!({"scp": ["composio:*"]}));
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        &all,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

fn slugs(v: &Value, key: &str) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[key].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn listings_leave_out_what_the_caller_may_not_run() {
    let h = Harness::with_config(&format!("{PLANS}{ROLES}")).await;
    let get = |path: &'static str, t: String| {
        let h = &h;
        async move {
            let r = h.send(Method::GET, path, Some(&t), None).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
            r.json()
        }
    };
    let free = tok("alice", json!({"plan": "free"}));
    let anyone = token("alice");

    let all = slugs(
        &get("/api/v3.1/tools?limit=100", anyone.clone()).await,
        "slug",
    );
    assert!(all.iter().any(|s| s.starts_with("GITHUB_")), "{all:?}");
    let tools = slugs(
        &get("/api/v3.1/tools?limit=100", free.clone()).await,
        "slug",
    );
    assert!(!tools.iter().any(|s| s.starts_with("GITHUB_")), "{tools:?}");
    assert!(tools.iter().any(|s| s == "SLACK_SEND_MESSAGE"));
    assert!(tools.iter().any(|s| s == "COMPOSIO_MULTI_EXECUTE_TOOL"));
    assert_eq!(tools.len() + 4, all.len(), "{tools:?}");

    let actions = slugs(&get("/api/v2/actions", free.clone()).await, "name");
    assert!(
        !actions.iter().any(|s| s.starts_with("GITHUB_")),
        "{actions:?}"
    );
    assert!(actions.iter().any(|s| s == "GMAIL_SEND_EMAIL"));

    let toolkits = slugs(&get("/api/v3.1/toolkits", free.clone()).await, "slug");
    assert!(!toolkits.contains(&"github".to_owned()), "{toolkits:?}");
    assert!(toolkits.contains(&"slack".to_owned()), "{toolkits:?}");
    let apps = slugs(&get("/api/v1/apps", free.clone()).await, "key");
    assert!(!apps.contains(&"github".to_owned()), "{apps:?}");

    // An allowlist: support sees slack's one tool and gmail's, and their toolkits (plus the
    // meta toolkit).
    let support = tok("alice", json!({"roles": ["support"]}));
    let mut tools = slugs(
        &get("/api/v3.1/tools?limit=100", support.clone()).await,
        "slug",
    );
    tools.retain(|s| !entitygate::toolpolicy::is_meta_tool(s));
    tools.sort();
    assert_eq!(
        tools,
        [
            "GMAIL_FETCH_EMAILS",
            "GMAIL_REPLY_TO_THREAD",
            "GMAIL_SEND_EMAIL",
            "SLACK_SEND_MESSAGE"
        ],
        "{tools:?}"
    );
    let mut toolkits = slugs(&get("/api/v3.1/toolkits", support.clone()).await, "slug");
    toolkits.sort();
    assert_eq!(toolkits, ["composio", "gmail", "slack"]);
    let all_toolkits = slugs(&get("/api/v3.1/toolkits", anyone).await, "slug");
    assert!(all_toolkits.len() > 3);
    h.shutdown().await;
}

async fn create_session(h: &Harness, t: &str, body: Value) -> (Reply, Option<Value>) {
    h.sandbox.clear();
    let path = "/api/v3.1/tool_router/session";
    let r = post(h, path, t, body).await;
    let sent = h
        .upstream(path)
        .into_iter()
        .find(|r| r.method == "POST" && r.path == path)
        .map(|r| r.json().unwrap());
    (r, sent)
}

#[tokio::test]
async fn session_creation_gets_the_permitted_toolkits() {
    let h = Harness::with_config(&format!("{PLANS}{ROLES}")).await;
    let free = tok("alice", json!({"plan": "free"}));
    let cases = [
        (json!({}), json!({"disable": ["github"]})),
        (
            json!({"toolkits": {"enable": ["GitHub", "gmail"]}}),
            json!({"enable": ["gmail"]}),
        ),
        (json!({"toolkits": ["slack"]}), json!({"enable": ["slack"]})),
        (
            json!({"toolkits": {"disable": ["gmail"]}}),
            json!({"disable": ["gmail", "github"]}),
        ),
    ];
    for (body, want) in cases {
        let (r, sent) = create_session(&h, &free, body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{body}: {}", r.text());
        assert_eq!(sent.unwrap()["toolkits"], want, "{body}");
    }
    // Asking only for what is not permitted is refused.
    let (r, sent) = create_session(&h, &free, json!({"toolkits": {"enable": ["github"]}})).await;
    assert_refused(&r, "github", "free plan");
    assert!(sent.is_none());

    // An allowlist is enumerated: gmail from `GMAIL_*`, slack from the exact tool's metadata.
    let support = tok("alice", json!({"roles": ["support"]}));
    let (r, sent) = create_session(&h, &support, json!({})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    assert_eq!(
        sent.unwrap()["toolkits"],
        json!({"enable": ["gmail", "slack"]})
    );
    let id = r.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(h.sandbox.session_user(&id).as_deref(), Some("alice"));

    // Scopes too.
    let scoped = tok("alice", json!({"scope": "composio:slack composio:notion"}));
    let (_, sent) = create_session(&h, &scoped, json!({"toolkits": ["notion", "github"]})).await;
    assert_eq!(sent.unwrap()["toolkits"], json!({"enable": ["notion"]}));

    // Callers the policy does not restrict: the body is left as is.
    let anyone = token("alice");
    let (_, sent) = create_session(&h, &anyone, json!({})).await;
    assert!(sent.unwrap().get("toolkits").is_none());

    // Updates of a session's toolkits are restricted the same way.
    let (r, _) = create_session(&h, &free, json!({})).await;
    let id = r.json()["session_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v3.1/tool_router/session/{id}");
    h.sandbox.clear();
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&free),
            Some(json!({"toolkits": {"enable": ["github"]}})),
        )
        .await;
    assert_refused(&r, "github", "free plan");
    assert_eq!(h.sandbox.count("PATCH", &path), 0);
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&free),
            Some(json!({"toolkits": {"enable": ["github", "slack"]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream(&path)[0].json().unwrap();
    assert_eq!(sent["toolkits"], json!({"enable": ["slack"]}));
    h.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_the_rules_and_refuses_bad_ones() {
    let h = Harness::start().await;
    let free = tok("alice", json!({"plan": "free"}));
    let path = "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE";
    let r = post(&h, path, &free, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let gw = h.gateway.as_ref().unwrap();
    let config = |extra: &str| Config::from_toml(&config_toml(h.upstream_addr(), extra)).unwrap();
    gw.reload_with(&config(PLANS)).await.unwrap();
    h.sandbox.clear();
    let r = post(&h, path, &free, json!({})).await;
    assert_refused(&r, "GITHUB_CREATE_ISSUE", "free plan");
    assert_nothing_executed(&h);

    // A rule that names nothing, or with an unknown operator, is refused; the rules stay.
    let bad = "[[policy.rules]]\nwhen = { claim = \"plan\", equals = \"free\" }\n";
    let e = gw.reload_with(&config(bad)).await.unwrap_err();
    assert!(e.to_string().contains("policy.rules[0]"), "{e}");
    assert!(Config::from_toml(&config_toml(
        h.upstream_addr(),
        "[[policy.rules]]\nwhen = { claim = \"plan\", is = \"free\" }\ndeny_toolkits = [\"x\"]\n"
    ))
    .is_err());
    let r = post(&h, path, &free, json!({})).await;
    assert_refused(&r, "GITHUB_CREATE_ISSUE", "free plan");

    gw.reload_with(&config("")).await.unwrap();
    let r = post(&h, path, &free, json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn decisions_go_to_the_audit_trail_with_their_rule() {
    let path = std::env::temp_dir().join(format!("eg-policy-audit-{}.jsonl", uuid_like()));
    let h = Harness::with_config(&format!(
        "[audit]\npath = {:?}\n{PLANS}",
        path.display().to_string()
    ))
    .await;
    let free = tok("alice", json!({"plan": "free"}));
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
        &free,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = post(
        &h,
        "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE",
        &free,
        json!({}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut lines: Vec<Value> = Vec::new();
    for _ in 0..50 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // Decisions only: the chain's `log_opened` record comes first.
        lines = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|l| l["event"] != "log_opened")
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["decision"], "tool_not_allowed");
    assert_eq!(lines[0]["code"], 9143);
    assert_eq!(lines[0]["tool"], "GITHUB_CREATE_ISSUE");
    assert_eq!(lines[0]["rule"], "policy.rules[0] \"free plan\"");
    assert_eq!(lines[1]["decision"], "allow");
    assert_eq!(lines[1]["rule"], "default (allow)");
    let _ = std::fs::remove_file(&path);
    h.shutdown().await;
}
