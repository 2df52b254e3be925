//! Issue 12: every carrier of a tool invocation gets the one decision. One test per finding,
//! each proving that nothing reached Composio's executing endpoints when refused.

use entitygate::sandbox::Tool;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

const V3_EXEC: &str = "/api/v3.1/tools/execute";
const SESSION: &str = "trs_alice_12";

/// Nothing reached anything that runs a tool, a proxy or a trigger subscription.
fn assert_nothing_ran(h: &Harness) {
    h.assert_no_execution();
    assert_eq!(h.sandbox.count("POST", "/api/v1/actions"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tool_router"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/trigger_instances"), 0);
}

async fn post(h: &Harness, path: &str, user: &str, body: Value) -> Reply {
    h.send(Method::POST, path, Some(&token(user)), Some(body))
        .await
}

fn multi(items: Value) -> Value {
    json!({ "tools": items })
}

fn refused(r: &Reply, slug: &str, what: &str) {
    assert_eq!(r.slug(), slug, "{what}: {}", r.text());
    assert!(r.status.is_client_error(), "{what}: {}", r.status);
}

/// Finding 1: the old API carries arguments under `input`; a meta tool's arguments that the
/// gateway cannot read are refused, not forwarded.
#[tokio::test]
async fn legacy_input_carries_meta_tools_and_unreadable_meta_calls_are_refused() {
    let h = Harness::with_config("[[policy.rules]]\ndeny_toolkits = [\"notion\"]").await;
    for v in ["v1", "v2"] {
        let path = format!("/api/{v}/actions/COMPOSIO_MULTI_EXECUTE_TOOL/execute");
        let r = post(
            &h,
            &path,
            "alice",
            json!({"entityId": "alice", "input": multi(json!([
                {"tool_slug": "COMPOSIO_REMOTE_WORKBENCH", "arguments": {"code": "print(1)"}},
                {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}},
            ]))}),
        )
        .await;
        refused(&r, "tool_not_allowed", &path);
        assert_eq!(r.json()["error"]["tool"], "COMPOSIO_REMOTE_WORKBENCH");
        let r = post(
            &h,
            &path,
            "alice",
            json!({"input": multi(json!([
                {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}},
            ]))}),
        )
        .await;
        refused(&r, "connection_expired", &path);
        let path = format!("/api/{v}/actions/COMPOSIO_MANAGE_CONNECTIONS/execute");
        let r = post(
            &h,
            &path,
            "alice",
            json!({"input": {"toolkits": ["notion"]}}),
        )
        .await;
        refused(&r, "tool_not_allowed", &path);
    }
    // Unreadable meta-tool arguments, on every carrier that can send them.
    for body in [
        json!({}),
        json!({"arguments": null}),
        json!({"arguments": "{\"tools\": []}"}),
        json!({"text": "run the workbench with print(1)"}),
        json!({"arguments": {"tools": [{"tool_slug": "A"}]}, "input": {"tools": []}}),
    ] {
        let r = post(
            &h,
            &format!("{V3_EXEC}/COMPOSIO_MULTI_EXECUTE_TOOL"),
            "alice",
            body.clone(),
        )
        .await;
        refused(&r, "body_invalid", &body.to_string());
        let r = post(
            &h,
            "/api/v2/actions/COMPOSIO_MANAGE_CONNECTIONS/execute",
            "alice",
            body.clone(),
        )
        .await;
        refused(&r, "body_invalid", &body.to_string());
    }
    // An unknown Composio tool that names a toolkit or an account.
    h.sandbox
        .add_tool(Tool::new("COMPOSIO_CONNECT_ANYTHING", "composio", true));
    let r = post(
        &h,
        &format!("{V3_EXEC}/COMPOSIO_CONNECT_ANYTHING"),
        "alice",
        json!({"arguments": {"opts": {"connected_account_id": "ca_bob_github"}}}),
    )
    .await;
    refused(&r, "body_invalid", "unknown COMPOSIO_* tool");
    assert_nothing_ran(&h);

    // What the gateway can read and allow still runs, through `input`.
    let r = post(
        &h,
        "/api/v2/actions/COMPOSIO_MULTI_EXECUTE_TOOL/execute",
        "alice",
        json!({"input": multi(json!([{"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}]))}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json()["data"]["results"][0]["data"]["connected_account_id"],
        "ca_alice_github"
    );
    h.shutdown().await;
}

/// Finding 2: `COMPOSIO_PROXY_EXECUTE` is a proxy execution of the toolkit it names, decided
/// as `tools/execute/proxy` is: directly, nested, and in a session.
#[tokio::test]
async fn the_proxy_meta_tool_is_decided_as_proxy_execution_of_its_toolkit() {
    let proxy =
        |toolkit: &str| json!({"toolkit_slug": toolkit, "endpoint": "/user", "method": "GET"});
    // Every carrier of one proxy-tool call.
    let carriers = |args: Value| {
        vec![
            (
                format!("{V3_EXEC}/COMPOSIO_PROXY_EXECUTE"),
                json!({"arguments": args}),
            ),
            (
                "/api/v2/actions/COMPOSIO_PROXY_EXECUTE/execute".to_owned(),
                json!({"input": args}),
            ),
            (
                format!("{V3_EXEC}/COMPOSIO_MULTI_EXECUTE_TOOL"),
                json!({"arguments": multi(json!([{"tool_slug": "COMPOSIO_PROXY_EXECUTE", "arguments": args}]))}),
            ),
            (
                format!("/api/v3.1/tool_router/session/{SESSION}/execute"),
                json!({"tool_slug": "COMPOSIO_PROXY_EXECUTE", "arguments": args}),
            ),
            (
                format!("/api/v3.1/tool_router/session/{SESSION}/execute_meta"),
                json!({"slug": "COMPOSIO_PROXY_EXECUTE", "arguments": args}),
            ),
        ]
    };

    let off = Harness::with_config("[policy]\nallow_proxy_execute = false").await;
    off.sandbox.add_session(SESSION, "alice");
    for (path, body) in carriers(proxy("github")) {
        let r = post(&off, &path, "alice", body).await;
        refused(&r, "operation_disabled", &path);
    }
    assert_nothing_ran(&off);
    off.shutdown().await;

    let h = Harness::with_config("[[policy.rules]]\ndeny_toolkits = [\"slack\"]").await;
    h.sandbox.add_session(SESSION, "alice");
    let cases = [
        (proxy("slack"), "tool_not_allowed"),
        (proxy("gmail"), "connection_expired"),
        (proxy("notion"), "connection_pending"),
        (
            json!({"toolkit_slug": "github", "connected_account_id": "ca_bob_github", "endpoint": "/user"}),
            "connected_account_not_owned",
        ),
        (
            json!({"endpoint": "/user", "method": "GET"}),
            "body_invalid",
        ),
    ];
    for (args, slug) in cases {
        for (path, body) in carriers(args.clone()) {
            let r = post(&h, &path, "alice", body).await;
            refused(&r, slug, &format!("{path} {args}"));
        }
    }
    assert_nothing_ran(&h);

    // Allowed: it runs with alice's own GitHub account, on every carrier.
    for (path, body) in carriers(proxy("github")) {
        let r = post(&h, &path, "alice", body).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert!(r.text().contains("ca_alice_github"), "{path}: {}", r.text());
    }
    h.shutdown().await;
}

/// Finding 3: the proxy switch covers a session's `proxy_execute`.
#[tokio::test]
async fn the_proxy_switch_covers_session_proxy_execute() {
    let h = Harness::with_config("[policy]\nallow_proxy_execute = false").await;
    h.sandbox.add_session(SESSION, "alice");
    let path = format!("/api/v3.1/tool_router/session/{SESSION}/proxy_execute");
    for body in [
        json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET"}),
        json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET", "account": "ca_alice_github"}),
    ] {
        let r = post(&h, &path, "alice", body).await;
        refused(&r, "operation_disabled", &path);
    }
    assert_nothing_ran(&h);
    h.shutdown().await;

    // Switched on, the same call runs.
    let h = Harness::start().await;
    h.sandbox.add_session(SESSION, "alice");
    let r = post(
        &h,
        &path,
        "alice",
        json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// Finding 4: a trigger subscription needs the toolkit's usable connection and the policy's
/// consent (a trigger type is a tool of its toolkit).
#[tokio::test]
async fn trigger_upsert_is_gated_and_policed() {
    let h = Harness::with_config(
        "[[policy.rules]]\ndeny_toolkits = [\"slack\"]\ndeny_tools = [\"GITHUB_STAR_ADDED_EVENT\"]",
    )
    .await;
    let upsert = |slug: &str| format!("/api/v3.1/trigger_instances/{slug}/upsert");
    let cases = [
        (
            "alice",
            "GMAIL_NEW_GMAIL_MESSAGE",
            json!({}),
            "connection_expired",
        ),
        (
            "carol",
            "GITHUB_COMMIT_EVENT",
            json!({}),
            "app_not_connected",
        ),
        (
            "alice",
            "SLACK_RECEIVE_MESSAGE",
            json!({}),
            "tool_not_allowed",
        ),
        (
            "alice",
            "GITHUB_STAR_ADDED_EVENT",
            json!({}),
            "tool_not_allowed",
        ),
        (
            "alice",
            "GITHUB_COMMIT_EVENT",
            json!({"connected_account_id": "ca_alice_gmail"}),
            "body_invalid",
        ),
        ("alice", "NOPE_NO_SUCH_TRIGGER", json!({}), "tool_not_found"),
    ];
    for (user, slug, body, want) in cases {
        let r = post(&h, &upsert(slug), user, body).await;
        refused(&r, want, slug);
    }
    assert_nothing_ran(&h);
    let r = post(
        &h,
        &upsert("GITHUB_COMMIT_EVENT"),
        "alice",
        json!({"trigger_config": {"owner": "a", "repo": "b"}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// A trigger slug from the path is checked against the identifier grammar before the
/// gateway's own trigger-type lookup (which carries the project key) is built from it.
#[tokio::test]
async fn trigger_slugs_outside_the_identifier_grammar_never_reach_a_lookup() {
    let h = Harness::start().await;
    let long = "G".repeat(129);
    for slug in [
        "GITHUB%2F..%2FX",
        "GITHUB_X%3Fuser_ids=bob",
        "GITHUB_X%23frag",
        "GITHUB.X",
        long.as_str(),
    ] {
        let r = post(
            &h,
            &format!("/api/v3.1/trigger_instances/{slug}/upsert"),
            "alice",
            json!({}),
        )
        .await;
        assert!(r.status.is_client_error(), "{slug}: {}", r.status);
        assert_ne!(r.status, StatusCode::OK, "{slug}");
    }
    for r in h.sandbox.requests() {
        assert!(
            !r.path.contains("triggers_types"),
            "a lookup was built from an unchecked slug: {} {}",
            r.method,
            r.path
        );
    }
    assert_nothing_ran(&h);
    h.shutdown().await;
}

/// Finding 5: an account named anywhere in a carrier, in any spelling, is the subject's and
/// of the tool's toolkit.
#[tokio::test]
async fn accounts_named_anywhere_are_folded_owned_and_of_the_tools_toolkit() {
    let h = Harness::start().await;
    h.sandbox.add_session(SESSION, "alice");
    let session_exec = format!("/api/v3.1/tool_router/session/{SESSION}/execute");
    let v3_multi = format!("{V3_EXEC}/COMPOSIO_MULTI_EXECUTE_TOOL");
    for key in [
        "account",
        "connected_account_id",
        "connectedAccountId",
        "Connected-Account-Id",
        "connectedAuthId",
    ] {
        let mut item = json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}});
        item[key] = json!("ca_bob_github");
        let r = post(
            &h,
            &session_exec,
            "alice",
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": multi(json!([item.clone()]))}),
        )
        .await;
        refused(&r, "connected_account_not_owned", key);
        let r = post(
            &h,
            &v3_multi,
            "alice",
            json!({"arguments": multi(json!([item]))}),
        )
        .await;
        refused(&r, "connected_account_not_owned", key);
    }
    // The subject's own account, but of another toolkit than the tool's.
    let mismatched = [
        (
            session_exec.clone(),
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": multi(json!([
                {"tool_slug": "SLACK_SEND_MESSAGE", "connected_account_id": "ca_alice_github"},
            ]))}),
        ),
        (
            session_exec.clone(),
            json!({"tool_slug": "SLACK_SEND_MESSAGE", "account": "ca_alice_github"}),
        ),
        (
            format!("{V3_EXEC}/SLACK_SEND_MESSAGE"),
            json!({"arguments": {}, "connected_account_id": "ca_alice_github"}),
        ),
        (
            "/api/v2/actions/SLACK_SEND_MESSAGE/execute".to_owned(),
            json!({"input": {}, "connectedAccountId": "ca_alice_github"}),
        ),
    ];
    for (path, body) in mismatched {
        let r = post(&h, &path, "alice", body.clone()).await;
        refused(&r, "body_invalid", &format!("{path} {body}"));
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not of slack"),
            "{}",
            r.text()
        );
    }
    // execute_meta: whichever slug field Composio reads, each is decided.
    let r = post(
        &h,
        &format!("/api/v3.1/tool_router/session/{SESSION}/execute_meta"),
        "alice",
        json!({"slug": "COMPOSIO_SEARCH_TOOLS", "tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}}),
    )
    .await;
    refused(&r, "connection_expired", "execute_meta with a second slug");
    assert_nothing_ran(&h);
    // The right account in an item runs.
    let r = post(
        &h,
        &session_exec,
        "alice",
        json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": multi(json!([
            {"tool_slug": "SLACK_SEND_MESSAGE", "account": "ca_alice_slack"},
        ]))}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// Finding 6: on the old API the toolkit comes from Composio (v3.1 metadata, else the old
/// API's own action metadata), never from the caller's `appName`; unknown is 404.
#[tokio::test]
async fn legacy_execute_takes_the_toolkit_from_composio_never_from_app_name() {
    let h = Harness::with_config("[[policy.rules]]\ndeny_toolkits = [\"slack\"]").await;
    // Actions only the old API knows.
    h.sandbox
        .add_legacy_action(Tool::new("GMAIL_LEGACY_SEND", "gmail", false));
    h.sandbox
        .add_legacy_action(Tool::new("SLACK_LEGACY_POST", "slack", false));
    h.sandbox
        .add_legacy_action(Tool::new("GITHUB_LEGACY_STAR", "github", false));
    let exec = |action: &str| format!("/api/v2/actions/{action}/execute");
    // alice's GitHub is ACTIVE and allowed: an `appName` of GitHub must not lend it.
    let r = post(
        &h,
        &exec("GMAIL_LEGACY_SEND"),
        "alice",
        json!({"appName": "GITHUB", "input": {}}),
    )
    .await;
    refused(
        &r,
        "connection_expired",
        "gmail action under a github appName",
    );
    let r = post(
        &h,
        &exec("SLACK_LEGACY_POST"),
        "alice",
        json!({"appName": "github", "input": {}}),
    )
    .await;
    refused(
        &r,
        "tool_not_allowed",
        "slack action under a github appName",
    );
    let r = post(
        &h,
        &exec("NOPE_UNKNOWN_ACTION"),
        "alice",
        json!({"appName": "GITHUB", "input": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    refused(&r, "tool_not_found", "unknown action");
    assert_nothing_ran(&h);
    // The old API's metadata was asked, the caller's hint ignored.
    assert!(h.sandbox.count("GET", "/api/v2/actions/GMAIL_LEGACY_SEND") >= 1);

    // A known legacy action runs; the misleading `appName` changes nothing.
    let r = post(
        &h,
        &exec("GITHUB_LEGACY_STAR"),
        "alice",
        json!({"appName": "GMAIL", "input": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["data"]["connected_account_id"], "ca_alice_github");
    let sent = h.upstream("/api/v2/actions/GITHUB_LEGACY_STAR/execute");
    assert_eq!(
        sent[0].json().unwrap()["appName"],
        "GITHUB",
        "what is forwarded names the app that was decided"
    );
    h.shutdown().await;
}

/// The code tools are refused by name, before anything is looked up: no metadata request for
/// the tool reaches Composio, on a direct call or nested in a meta tool. (Without the early
/// ban the decision would look the tool up at Composio first, then refuse it by policy.)
#[tokio::test]
async fn code_tools_are_refused_before_any_lookup() {
    let h = Harness::start().await;
    h.sandbox.clear();
    let r = post(
        &h,
        "/api/v3.1/tools/execute/COMPOSIO_REMOTE_WORKBENCH",
        "alice",
        json!({"arguments": {"code": "print(1)"}}),
    )
    .await;
    refused(&r, "tool_not_allowed", "direct");
    h.assert_nothing_forwarded();
    let r = post(
        &h,
        "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL",
        "alice",
        json!({"arguments": multi(json!([
            {"tool_slug": "COMPOSIO_REMOTE_BASH_TOOL", "arguments": {"command": "id"}},
        ]))}),
    )
    .await;
    refused(&r, "tool_not_allowed", "nested");
    assert!(
        h.upstream("/api/v3")
            .iter()
            .all(|r| !r.path.contains("REMOTE_BASH") && !r.path.contains("REMOTE_WORKBENCH")),
        "a code tool was looked up: {:?}",
        h.upstream("/api")
            .iter()
            .map(|r| &r.path)
            .collect::<Vec<_>>()
    );
    h.shutdown().await;
}
