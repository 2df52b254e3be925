//! Constraints on tool arguments (issue 27): the README's four examples end to end, on every
//! carrier (REST v3/v3.1, v1/v2 `input`, multi-execute items, session `execute`,
//! `execute_meta` and `proxy_execute`, `COMPOSIO_PROXY_EXECUTE`, the proxy routes, trigger
//! upsert, MCP `tools/call` on the session and the v3 endpoints and in a batch). Every refusal
//! is a 403 `arguments_not_allowed` (an MCP tool result with `isError`) and nothing reaches
//! Composio; a reload with a broken expression keeps the constraints in force.

use entitygate::sandbox::{Account, Sandbox};
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const SESSION: &str = "trs_constraints";
const MCP: &str = "/tool_router/trs_constraints/mcp";

/// The README's four examples (kept in step with README.md "Constraints on arguments").
pub(crate) const EXAMPLES: &str = r#"
[[policy.constraints]]
name = "mail stays inside acme"
tools = ["GMAIL_SEND_EMAIL", "GMAIL_REPLY_TO_THREAD"]
require = '''
  args.recipient_email.lowerAscii().endsWith("@acme.com")
  && args.?cc.orValue([]).all(a, a.lowerAscii().endsWith("@acme.com"))
  && args.?bcc.orValue([]).all(a, a.lowerAscii().endsWith("@acme.com"))'''
message = "Mail may only go to acme.com addresses."

[[policy.constraints]]
name = "github stays in our org"
toolkits = ["github"]
when = 'tool != "PROXY_EXECUTE"'
require = 'args.owner.lowerAscii() == "acme"'
message = "GitHub calls may only touch repositories of the acme organisation."

[[policy.constraints]]
name = "slack channels of the user"
tools = ["SLACK_SEND_MESSAGE"]
require = 'args.channel in claims.channels'
message = "You may only post to your own Slack channels."

[[policy.constraints]]
name = "proxy is read-only"
tools = ["PROXY_EXECUTE"]
require = 'proxy.method.upperAscii() == "GET"'
message = "Raw API calls may only read (GET)."
"#;

fn sandbox() -> Sandbox {
    let sb = Sandbox::with_demo_data(API_KEY);
    for (id, toolkit) in [
        ("ca_dave_gmail", "gmail"),
        ("ca_dave_github", "github"),
        ("ca_dave_slack", "slack"),
    ] {
        sb.add_account(Account::new(id, "dave", toolkit, "ACTIVE"));
    }
    sb.add_session(SESSION, "dave");
    sb
}

async fn harness() -> Harness {
    Harness::with(sandbox(), EXAMPLES).await
}

fn dave() -> String {
    token_with(
        json!({"sub": "dave", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600,
        "channels": ["C_DAVE", "C_TEAM"]}),
    )
}

async fn post(h: &Harness, path: &str, body: Value) -> Reply {
    h.send(Method::POST, path, Some(&dave()), Some(body)).await
}

/// A refusal by `constraint`, with its message, and nothing sent to Composio but lookups.
fn assert_refused(h: &Harness, r: &Reply, constraint: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["slug"], "arguments_not_allowed", "{}", r.text());
    assert_eq!(e["constraint"], constraint, "{}", r.text());
    assert!(
        e["message"].as_str().unwrap_or("").contains(constraint),
        "{}",
        r.text()
    );
    assert_no_execution(h);
}

/// Nothing but lookups (GETs) reached Composio.
fn assert_no_execution(h: &Harness) {
    let posted: Vec<String> = h
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| r.path.clone())
        .collect();
    assert!(posted.is_empty(), "forwarded: {posted:?}");
}

fn forwarded(h: &Harness) -> bool {
    h.sandbox.requests().iter().any(|r| r.method == "POST")
}

fn mail(to: &str, cc: &[&str]) -> Value {
    json!({"recipient_email": to, "cc": cc, "body": "hi"})
}

/// Mail: a good call passes on every REST carrier, a bad one is refused on each, with the
/// constraint's name and message.
#[tokio::test]
async fn mail_stays_inside_acme_on_every_rest_carrier() {
    let h = harness().await;
    let session = format!("/api/v3.1/tool_router/session/{SESSION}/execute");
    let meta = format!("/api/v3.1/tool_router/session/{SESSION}/execute_meta");
    let carriers = |args: Value| -> Vec<(String, Value)> {
        vec![
            (
                "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL".into(),
                json!({"arguments": args}),
            ),
            (
                "/api/v3/tools/execute/GMAIL_SEND_EMAIL".into(),
                json!({"arguments": args}),
            ),
            (
                "/api/v2/actions/GMAIL_SEND_EMAIL/execute".into(),
                json!({"input": args}),
            ),
            (
                "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL".into(),
                json!({"arguments": {"tools": [
                    {"tool_slug": "HACKERNEWS_GET_FRONTPAGE", "arguments": {}},
                    {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": args},
                ]}}),
            ),
            (
                "/api/v2/actions/COMPOSIO_MULTI_EXECUTE_TOOL/execute".into(),
                json!({"input": {"tools": [{"tool_slug": "GMAIL_SEND_EMAIL", "input": args}]}}),
            ),
            (
                session.clone(),
                json!({"tool_slug": "GMAIL_SEND_EMAIL", "arguments": args}),
            ),
            (
                meta.clone(),
                json!({"slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                    {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": args},
                ]}}),
            ),
        ]
    };
    for (path, body) in carriers(mail("bob@acme.com", &["carol@ACME.com"])) {
        h.sandbox.clear();
        let r = post(&h, &path, body).await;
        assert!(forwarded(&h), "{path}: {} {}", r.status, r.text());
    }
    for bad in [
        mail("eve@acme.com.evil.io", &[]),
        mail("bob@acme.com", &["eve@evil.io"]),
        mail("eve@evil.io@acme.com.evil", &[]),
        // Missing and mistyped fields: evaluation errors, refused.
        json!({"body": "no recipient"}),
        json!({"recipient_email": ["bob@acme.com"]}),
        json!({"recipient_email": "bob@acme.com", "cc": "eve@evil.io"}),
        json!({"recipient_email": "bob@acme.com", "bcc": [7]}),
    ] {
        for (path, body) in carriers(bad.clone()) {
            h.sandbox.clear();
            let r = post(&h, &path, body).await;
            assert_refused(&h, &r, "mail stays inside acme");
            assert!(
                r.json()["error"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("Mail may only go to acme.com addresses."),
                "{path}: {}",
                r.text()
            );
        }
    }
    h.shutdown().await;
}

/// GitHub org, Slack channels from a claim: held and broken, directly.
#[tokio::test]
async fn github_org_and_slack_channels_from_a_claim() {
    let h = harness().await;
    let exec = |tool: &str| format!("/api/v3.1/tools/execute/{tool}");
    h.sandbox.clear();
    let r = post(
        &h,
        &exec("GITHUB_CREATE_ISSUE"),
        json!({"arguments": {"owner": "Acme", "repo": "x", "title": "t"}}),
    )
    .await;
    assert!(forwarded(&h), "{}", r.text());
    for args in [
        json!({"owner": "acme-evil", "repo": "x", "title": "t"}),
        json!({"repo": "acme/x", "title": "t"}),
        json!({"owner": ["acme"], "repo": "x", "title": "t"}),
    ] {
        h.sandbox.clear();
        let r = post(&h, &exec("GITHUB_CREATE_ISSUE"), json!({"arguments": args})).await;
        assert_refused(&h, &r, "github stays in our org");
    }
    h.sandbox.clear();
    let r = post(
        &h,
        &exec("SLACK_SEND_MESSAGE"),
        json!({"arguments": {"channel": "C_TEAM", "text": "hi"}}),
    )
    .await;
    assert!(forwarded(&h), "{}", r.text());
    for channel in [
        json!("C_OTHER"),
        json!("c_team"),
        json!(["C_TEAM"]),
        Value::Null,
    ] {
        h.sandbox.clear();
        let r = post(
            &h,
            &exec("SLACK_SEND_MESSAGE"),
            json!({"arguments": {"channel": channel, "text": "hi"}}),
        )
        .await;
        assert_refused(&h, &r, "slack channels of the user");
    }
    // A token without the claim: evaluation error, refused.
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            &exec("SLACK_SEND_MESSAGE"),
            Some(&token("dave")),
            Some(json!({"arguments": {"channel": "C_TEAM", "text": "hi"}})),
        )
        .await;
    assert_refused(&h, &r, "slack channels of the user");
    h.shutdown().await;
}

/// Proxy GET-only on every proxy carrier: the REST routes (v3.1, v2), a session's
/// `proxy_execute`, `COMPOSIO_PROXY_EXECUTE` (direct and in a multi-execute).
#[tokio::test]
async fn proxy_is_read_only_on_every_proxy_carrier() {
    let h = harness().await;
    let carriers = |method: &str| -> Vec<(String, Value)> {
        let tool = json!({"toolkit_slug": "github", "endpoint": "/user", "method": method});
        vec![
            (
                "/api/v3.1/tools/execute/proxy".into(),
                json!({"endpoint": "/user", "method": method,
                    "connected_account_id": "ca_dave_github"}),
            ),
            (
                "/api/v2/actions/proxy".into(),
                json!({"endpoint": "/user", "method": method,
                    "connectedAccountId": "ca_dave_github"}),
            ),
            (
                format!("/api/v3.1/tool_router/session/{SESSION}/proxy_execute"),
                json!({"toolkit_slug": "github", "endpoint": "/user", "method": method}),
            ),
            (
                "/api/v3.1/tools/execute/COMPOSIO_PROXY_EXECUTE".into(),
                json!({"arguments": tool}),
            ),
            (
                "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL".into(),
                json!({"arguments": {"tools": [
                    {"tool_slug": "COMPOSIO_PROXY_EXECUTE", "arguments": tool},
                ]}}),
            ),
        ]
    };
    for (path, body) in carriers("get") {
        h.sandbox.clear();
        let r = post(&h, &path, body).await;
        assert!(forwarded(&h), "{path}: {} {}", r.status, r.text());
    }
    for (path, body) in carriers("DELETE") {
        h.sandbox.clear();
        let r = post(&h, &path, body).await;
        assert_refused(&h, &r, "proxy is read-only");
    }
    // Without a method at all: refused too.
    h.sandbox.clear();
    let r = post(
        &h,
        "/api/v3.1/tools/execute/proxy",
        json!({"endpoint": "/user", "connected_account_id": "ca_dave_github"}),
    )
    .await;
    assert_refused(&h, &r, "proxy is read-only");
    h.shutdown().await;
}

/// A trigger upsert is decided on its config (`args` is `trigger_config`).
#[tokio::test]
async fn trigger_upsert_is_checked_on_its_config() {
    let h = harness().await;
    let path = "/api/v3.1/trigger_instances/GITHUB_COMMIT_EVENT/upsert";
    h.sandbox.clear();
    let r = post(
        &h,
        path,
        json!({"trigger_config": {"owner": "acme", "repo": "x"}}),
    )
    .await;
    assert!(forwarded(&h), "{} {}", r.status, r.text());
    for cfg in [json!({"owner": "evil", "repo": "x"}), json!({"repo": "x"})] {
        h.sandbox.clear();
        let r = post(&h, path, json!({"trigger_config": cfg})).await;
        assert_refused(&h, &r, "github stays in our org");
    }
    h.shutdown().await;
}

fn rpc(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
}

async fn mcp(h: &Harness, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
    let mut req = http::Request::post(h.url(path))
        .header("authorization", format!("Bearer {}", dave()))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    h.raw(
        req.body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap(),
    )
    .await
}

fn refused_in_band(a: &Value, constraint: &str) -> bool {
    a["result"]["isError"] == true
        && a["result"]["structuredContent"]["error"]["slug"] == "arguments_not_allowed"
        && a["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.contains(constraint) && t.contains("acme.com"))
}

/// MCP `tools/call`: on the session endpoint and the v3 endpoint, alone and in a batch; a
/// refusal is a tool result with `isError` and the constraint's text, and not forwarded.
#[tokio::test]
async fn mcp_tool_calls_on_every_endpoint_and_in_batches() {
    let h = harness().await;
    h.sandbox
        .add_mcp_server("mcp_dave", "dave's", &["gmail"], &["GMAIL_SEND_EMAIL"]);
    let stateless = |name: &'static str| {
        [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ]
    };
    for path in [MCP, "/v3/mcp/mcp_dave?user_id=dave"] {
        for (args, held) in [
            (mail("bob@acme.com", &[]), true),
            (mail("eve@acme.com.evil.io", &[]), false),
            (json!({}), false),
        ] {
            h.sandbox.clear();
            let mut msg = rpc(1, "GMAIL_SEND_EMAIL", args);
            msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
            let r = mcp(&h, path, &stateless("GMAIL_SEND_EMAIL"), &msg).await;
            assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
            let a = r.mcp_answer(1);
            if held {
                assert!(!refused_in_band(&a, "mail"), "{path}: {a}");
                assert!(forwarded(&h), "{path}: {a}");
            } else {
                assert!(refused_in_band(&a, "mail stays inside acme"), "{path}: {a}");
                assert!(
                    h.sandbox.requests().iter().all(|r| !r.path.contains("mcp")),
                    "{path}: forwarded"
                );
            }
        }
    }
    // A batch (2025-03-26 session): the held call is forwarded, the broken one answered by
    // the gateway, each with its own arguments.
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "constraints", "version": "1"}}});
    let r = mcp(&h, MCP, &[], &init).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sid = r.headers["mcp-session-id"].to_str().unwrap().to_owned();
    h.sandbox.clear();
    let batch = json!([
        rpc(2, "GMAIL_SEND_EMAIL", mail("bob@acme.com", &[])),
        rpc(
            3,
            "GMAIL_SEND_EMAIL",
            mail("bob@acme.com", &["eve@evil.io"])
        ),
    ]);
    let r = mcp(
        &h,
        MCP,
        &[
            ("mcp-protocol-version", "2025-03-26"),
            ("mcp-session-id", &sid),
        ],
        &batch,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(refused_in_band(&r.mcp_answer(3), "mail stays inside acme"));
    assert!(!refused_in_band(&r.mcp_answer(2), "mail"), "{}", r.text());
    let forwarded_body: Vec<String> = h
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("mcp"))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        forwarded_body.iter().all(|b| !b.contains("evil.io")),
        "{forwarded_body:?}"
    );
    h.shutdown().await;
}

/// A rule's allow never skips a constraint; a tool the policy refuses is refused by the
/// policy first; the audit line names the constraint and never the arguments.
#[tokio::test]
async fn allowed_by_a_rule_still_constrained_and_audited_by_name_only() {
    let audit = std::env::temp_dir().join(format!("eg-constraints-audit-{}.jsonl", uuid_like()));
    let cfg = format!(
        "[audit]\npath = {:?}\n{EXAMPLES}\n[[policy.rules]]\nname = \"mail ok\"\nallow_toolkits = [\"gmail\"]\n",
        audit.display().to_string()
    );
    let h = Harness::with(sandbox(), &cfg).await;
    let r = post(
        &h,
        "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL",
        json!({"arguments": mail("secret-person@evil.io", &[])}),
    )
    .await;
    assert_refused(&h, &r, "mail stays inside acme");
    // Another toolkit: the rule's allowlist refuses it before any constraint.
    let r = post(
        &h,
        "/api/v3.1/tools/execute/SLACK_SEND_MESSAGE",
        json!({"arguments": {"channel": "C_OTHER"}}),
    )
    .await;
    assert_eq!(r.slug(), "tool_not_allowed", "{}", r.text());
    h.shutdown().await;
    let text = std::fs::read_to_string(&audit).unwrap_or_default();
    let line = text
        .lines()
        .find(|l| l.contains("arguments_not_allowed") || l.contains("\"constraint\""))
        .unwrap_or_else(|| panic!("no refusal in {text}"));
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["constraint"], "mail stays inside acme", "{line}");
    assert!(!text.contains("secret-person"), "{text}");
    let _ = std::fs::remove_file(&audit);
}

/// A reload compiles every expression: a broken one (syntax, unknown variable, a constraint
/// naming no tool) is refused with the constraint's name and position, and the constraints
/// in force stay; a good reload swaps them.
#[tokio::test]
async fn a_reload_with_a_broken_expression_keeps_the_constraints_in_force() {
    let h = harness().await;
    let gw = h.gateway.as_ref().unwrap();
    let config = |extra: &str| {
        entitygate::Config::from_toml(&config_toml(h.upstream_addr(), extra)).unwrap()
    };
    let path = "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL";
    let bad_mail = || json!({"arguments": mail("eve@evil.io", &[])});
    for (broken, says) in [
        (
            "[[policy.constraints]]\nname = \"typo\"\ntools = [\"GMAIL_*\"]\nrequire = 'args.recipient_email.endsWith(\"@acme.com\"'\n",
            "line 1, column",
        ),
        (
            "[[policy.constraints]]\nname = \"typo\"\ntools = [\"GMAIL_*\"]\nrequire = '''\nargs.to == \"x\"\n  && arg.cc == []'''\n",
            "line 2, column 6: unknown variable `arg`",
        ),
        (
            "[[policy.constraints]]\nname = \"typo\"\nrequire = 'true'\n",
            "names no tool",
        ),
    ] {
        let e = gw.reload_with(&config(broken)).await.unwrap_err();
        let e = e.to_string();
        assert!(e.contains("policy.constraints[0]"), "{e}");
        assert!(e.contains(says), "{e}");
        assert!(e.contains("typo") || says == "names no tool", "{e}");
        h.sandbox.clear();
        let r = post(&h, path, bad_mail()).await;
        assert_refused(&h, &r, "mail stays inside acme");
    }
    // Without constraints the same call goes through.
    gw.reload_with(&config("")).await.unwrap();
    h.sandbox.clear();
    post(&h, path, bad_mail()).await;
    assert!(forwarded(&h));
    h.shutdown().await;
}

fn check_config(extra: &str, upstream: std::net::SocketAddr, live: bool) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("eg-check-constraints-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, config_toml(upstream, extra)).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"));
    cmd.args(["check-config", "--config"]).arg(&file);
    if live {
        cmd.arg("--live");
    }
    let out = cmd
        .env("JWT_SECRET", SECRET)
        .env("COMPOSIO_API_KEY", API_KEY)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `check-config` reports every broken constraint with its name and position; `--live` reads
/// the tools' input schemas from Composio (the sandbox here) and catches a wrong field name
/// with a "did you mean" and a string method on an array parameter. The README's examples
/// pass both.
#[tokio::test]
async fn check_config_catches_broken_constraints_and_live_wrong_fields() {
    let sb = Sandbox::with_demo_data(API_KEY);
    let upstream = sb.start().await.unwrap();
    let run = |extra: String, live: bool| {
        tokio::task::spawn_blocking(move || check_config(&extra, upstream, live))
    };
    let (code, out) = run(EXAMPLES.to_owned(), true).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    // The GitHub example reaches a tool without `owner`: said, as a warning.
    assert!(
        out.contains("warning: policy.constraints[1] `github stays in our org`, line 1, column 1: `args.owner` on GITHUB_GET_THE_AUTHENTICATED_USER: no such parameter"),
        "{out}"
    );
    let broken = r#"
[[policy.constraints]]
name = "syntax"
tools = ["GMAIL_SEND_EMAIL"]
require = 'args.recipient_email.endsWith("@acme.com"'

[[policy.constraints]]
name = "unknown variable"
tools = ["GMAIL_SEND_EMAIL"]
when = 'claim.plan == "free"'
require = 'true'

[[policy.constraints]]
name = "no tool"
require = 'true'
"#;
    let (code, out) = run(broken.to_owned(), false).await.unwrap();
    assert_eq!(code, Some(64), "{out}");
    for want in [
        "policy.constraints[0].require",
        "constraint `syntax`: line 1, column",
        "policy.constraints[1].when",
        "constraint `unknown variable`: line 1, column 1: unknown variable `claim`",
        "constraint `no tool` names no tool",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    let wrong = r#"
[[policy.constraints]]
name = "mail"
tools = ["GMAIL_SEND_EMAIL"]
require = '''args.recipient.endsWith("@acme.com")
  && args.cc.endsWith("@acme.com")'''

[[policy.constraints]]
name = "github"
tools = ["GITHUB_CREATE_*"]
require = 'args.ownr == "acme"'
"#;
    // Offline the file is valid: only Composio knows the parameters.
    let (code, out) = run(wrong.to_owned(), false).await.unwrap();
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = run(wrong.to_owned(), true).await.unwrap();
    assert_eq!(code, Some(64), "{out}");
    for want in [
        "`mail`, line 1, column 1: `args.recipient` on GMAIL_SEND_EMAIL: no such parameter; did you mean `recipient_email`?",
        "`mail`, line 2, column 6: `args.cc` on GMAIL_SEND_EMAIL: `endsWith` is a string method but `cc` is of type array",
        "`args.ownr` on GITHUB_CREATE_ISSUE: no such parameter; did you mean `owner`?",
        "`args.ownr` on GITHUB_CREATE_AN_ISSUE: no such parameter; did you mean `owner`?",
    ] {
        assert!(out.contains(want), "{want} in {out}");
    }
    // Only reads: nothing but GETs reached Composio.
    assert!(sb.requests().iter().all(|r| r.method == "GET"));
    sb.stop();
}

/// `explain` (the CLI's, POST /explain's and the console's dry run) shows each applying
/// constraint with its result and the argument values it read; an evaluation error says why.
#[tokio::test]
async fn explain_shows_each_constraint_its_result_and_what_it_read() {
    use entitygate::explain::{explain, ExplainRequest};
    let h = harness().await;
    let config = entitygate::Config::from_toml(&config_toml(h.upstream_addr(), EXAMPLES)).unwrap();
    let ask = |args: Value| ExplainRequest {
        method: Method::POST,
        target: "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL".into(),
        token: dave(),
        body: Some(json!({"arguments": args}).to_string().into_bytes()),
        live: false,
    };
    let e = explain(&config, &env(), &ask(mail("eve@acme.com.evil.io", &[])))
        .await
        .unwrap();
    assert_eq!(e.decision, "arguments_not_allowed", "{e:#?}");
    let c = &e.invocations[0].constraints[0];
    assert_eq!(c.name, "mail stays inside acme");
    assert_eq!(c.result, "refused");
    assert_eq!(
        c.read,
        vec![
            (
                "args.recipient_email".to_owned(),
                json!("eve@acme.com.evil.io")
            ),
            ("args.cc".to_owned(), json!([])),
            ("args.bcc".to_owned(), Value::Null),
        ]
    );
    let text = e.to_text();
    assert!(
        text.contains("constraint \"mail stays inside acme\": refused"),
        "{text}"
    );
    assert!(
        text.contains("args.recipient_email = \"eve@acme.com.evil.io\""),
        "{text}"
    );
    assert!(
        e.steps
            .iter()
            .any(|(k, v)| k == "constraint" && v == "mail stays inside acme: refused"),
        "{:?}",
        e.steps
    );
    // A missing field: the evaluation error is shown.
    let e = explain(&config, &env(), &ask(json!({"body": "x"})))
        .await
        .unwrap();
    let c = &e.invocations[0].constraints[0];
    assert!(
        c.error
            .as_deref()
            .is_some_and(|m| m.contains("recipient_email")),
        "{c:#?}"
    );
    // Held: shown as held, the call allowed.
    let e = explain(&config, &env(), &ask(mail("bob@acme.com", &[])))
        .await
        .unwrap();
    assert_eq!(e.invocations[0].constraints[0].result, "held", "{e:#?}");
    h.shutdown().await;
}

/// The README's "Constraints on arguments" example is exactly what these tests run.
#[test]
fn the_readme_examples_are_the_ones_tested() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = &readme[readme.find("## Constraints on arguments").unwrap()..];
    let block = &section[section.find("```toml\n").unwrap() + 8..];
    let block = &block[..block.find("```").unwrap()];
    assert_eq!(block.trim(), EXAMPLES.trim());
}
