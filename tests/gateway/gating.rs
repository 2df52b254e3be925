//! Connection gating: unconnected, expired, pending and foreign accounts are refused before
//! Composio's execute endpoint; a burst costs one lookup; outages fail closed.

use std::time::Duration;

use entitygate::sandbox::{Account, Fault, Sandbox, Tool};
use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

fn lookups(h: &Harness) -> usize {
    h.sandbox.count("GET", "/api/v3.1/connected_accounts")
}

#[tokio::test]
async fn each_unusable_connection_gets_its_own_clear_refusal() {
    let h = Harness::start().await;
    let cases = [
        (
            "carol",
            "SLACK_SEND_MESSAGE",
            "app_not_connected",
            "NONE",
            "Please connect your Slack account first in Settings > Integrations.",
        ),
        (
            "alice",
            "GMAIL_SEND_EMAIL",
            "connection_expired",
            "EXPIRED",
            "Your Gmail connection has expired. Please reconnect in Settings > Integrations.",
        ),
        (
            "bob",
            "SLACK_SEND_MESSAGE",
            "connection_expired",
            "FAILED",
            "Your Slack connection has expired. Please reconnect in Settings > Integrations.",
        ),
        (
            "bob",
            "GMAIL_SEND_EMAIL",
            "connection_expired",
            "DISABLED",
            "Your Gmail connection has expired. Please reconnect in Settings > Integrations.",
        ),
        (
            "alice",
            "NOTION_CREATE_PAGE",
            "connection_pending",
            "INITIATED",
            "",
        ),
    ];
    for (user, tool, slug, status, message) in cases {
        let r = h.execute(user, tool, json!({"arguments": {}})).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{user} {tool}: {}",
            r.text()
        );
        let e = &r.json()["error"];
        assert_eq!(e["slug"], slug, "{user} {tool}");
        assert_eq!(
            e["code"], 1803,
            "Composio's own code, so SDK handling keeps working"
        );
        assert_eq!(e["connection_status"], status, "{user} {tool}");
        assert!(e["toolkit"].is_string());
        if !message.is_empty() {
            assert_eq!(e["message"], message);
        }
        assert_eq!(r.headers["x-should-retry"], "false");
    }
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn inactive_and_revoked_accounts_are_refused() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.add_account(Account::new("ca_dan_slack", "dan", "slack", "INACTIVE"));
    sandbox.add_account(Account::new("ca_dan_github", "dan", "github", "REVOKED"));
    let h = Harness::with(sandbox, "").await;
    let r = h.execute("dan", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(r.slug(), "connection_inactive");
    let r = h.execute("dan", "GITHUB_CREATE_ISSUE", json!({})).await;
    assert_eq!(r.slug(), "connection_expired");
    assert_eq!(r.json()["error"]["connection_status"], "REVOKED");
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn another_users_connected_account_is_refused() {
    let h = Harness::start().await;
    for key in ["connected_account_id", "connectedAccountId"] {
        let r = h
            .execute(
                "alice",
                "GITHUB_CREATE_ISSUE",
                json!({key: "ca_bob_github", "arguments": {}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{key}: {}", r.text());
        assert_eq!(r.slug(), "connected_account_not_owned");
        assert_eq!(r.json()["error"]["code"], 1812);
    }
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"connected_account_id": "instant_account"}),
        )
        .await;
    assert_eq!(r.slug(), "connected_account_not_owned");
    let r = h.execute("alice", "GITHUB_CREATE_ISSUE",
        json!({"connected_account_id": "ca_alice_github", "connectedAccountId": "ca_bob_github"})).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "two different accounts are ambiguous"
    );
    // Her own, expired, account is refused as expired.
    let r = h
        .execute(
            "alice",
            "GMAIL_SEND_EMAIL",
            json!({"connected_account_id": "ca_alice_gmail"}),
        )
        .await;
    assert_eq!(r.slug(), "connection_expired");
    h.assert_no_execution();
    // Her own, active, account passes.
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"connected_account_id": "ca_alice_github"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v3.1/tools/execute/");
    assert_eq!(
        sent[0].json().unwrap()["connected_account_id"],
        "ca_alice_github"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn ownership_is_asked_of_composio_for_the_subject() {
    let h = Harness::start().await;
    h.execute(
        "alice",
        "GITHUB_CREATE_ISSUE",
        json!({"connected_account_id": "ca_bob_github"}),
    )
    .await;
    let asked = h.upstream("/api/v3.1/connected_accounts");
    assert!(!asked.is_empty());
    for a in asked {
        assert_eq!(
            a.query_param("user_ids").as_deref(),
            Some("alice"),
            "asked for the subject only"
        );
        assert_only_real_key(&a);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn no_auth_tools_pass_without_a_connection() {
    let h = Harness::start().await;
    let r = h
        .execute(
            "carol",
            "HACKERNEWS_GET_FRONTPAGE",
            json!({"arguments": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(lookups(&h), 0, "no status lookup for a no_auth tool");
    h.shutdown().await;
}

#[tokio::test]
async fn toolkits_with_underscores_are_resolved_from_composio() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.add_account(Account::new(
        "ca_erin_search",
        "erin",
        "composio_search",
        "ACTIVE",
    ));
    let h = Harness::with(sandbox, "").await;
    let r = h
        .execute(
            "erin",
            "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH",
            json!({"arguments": {"query": "x"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let asked = h.upstream("/api/v3.1/connected_accounts");
    assert_eq!(
        asked[0].query_param("toolkit_slugs").as_deref(),
        Some("composio_search")
    );
    let r = h
        .execute("erin", "TEXT_TO_PDF_CONVERT_TEXT_TO_PDF", json!({}))
        .await;
    assert_eq!(r.slug(), "app_not_connected");
    assert_eq!(r.json()["error"]["toolkit"], "text_to_pdf");
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_tools_are_refused_as_not_found() {
    let h = Harness::start().await;
    let r = h.execute("alice", "NO_SUCH_TOOL_AT_ALL", json!({})).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.slug(), "tool_not_found");
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn a_burst_for_one_cold_user_makes_one_status_lookup() {
    let h = std::sync::Arc::new(Harness::start().await);
    // Warm the tool metadata so that only the status lookup is cold.
    h.execute("bob", "SLACK_SEND_MESSAGE", json!({})).await;
    h.sandbox.clear();
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
                .await
                .status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(lookups(&h), 1, "one upstream lookup for the whole burst");
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tools/execute/"), 100);
}

#[tokio::test]
async fn answers_are_cached_until_their_ttl() {
    let h = Harness::with_config("[connections]\ncache_ttl_secs = 1\nnegative_ttl_secs = 1").await;
    assert_eq!(
        h.execute("alice", "SLACK_SEND_MESSAGE", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.execute("alice", "SLACK_SEND_MESSAGE", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(lookups(&h), 1, "second call served from cache");
    // The connection expires at Composio; within the TTL the cache still says ACTIVE, after
    // it the gateway asks again and refuses.
    h.sandbox.set_account_status("ca_alice_slack", "EXPIRED");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = h.execute("alice", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(r.slug(), "connection_expired");
    assert_eq!(lookups(&h), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn a_refused_execution_invalidates_the_cached_status() {
    let h = Harness::start().await;
    assert_eq!(
        h.execute("alice", "SLACK_SEND_MESSAGE", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    // Composio learns of the expiry first and refuses the execution (1803).
    h.sandbox.set_account_status("ca_alice_slack", "EXPIRED");
    let r = h.execute("alice", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "Composio's own refusal is relayed"
    );
    let before = lookups(&h);
    let r = h.execute("alice", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(r.slug(), "connection_expired", "the gateway now knows");
    // Composio's answer was enough: refused before Composio is asked again (issue 15).
    assert_eq!(lookups(&h), before);
    h.shutdown().await;
}

#[tokio::test]
async fn pagination_is_followed_to_the_end() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    for i in 0..250 {
        sandbox.add_account(Account::new(
            &format!("ca_frank_{i:03}"),
            "frank",
            "slack",
            "EXPIRED",
        ));
    }
    sandbox.add_account(Account::new(
        "ca_frank_zz_active",
        "frank",
        "slack",
        "ACTIVE",
    ));
    let h = Harness::with(sandbox, "").await;
    let r = h.execute("frank", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(lookups(&h) >= 3, "several pages were read");
    h.shutdown().await;
}

#[tokio::test]
async fn a_failing_status_lookup_refuses_with_503() {
    let h = Harness::start().await;
    h.execute("bob", "GITHUB_CREATE_ISSUE", json!({})).await; // warm the tool metadata
    h.sandbox.clear();
    for fault in [Fault::Status(500), Fault::Garbage, Fault::Reset] {
        h.sandbox
            .set_fault_for("/api/v3.1/connected_accounts", fault.clone());
        let r = h.execute("alice", "GITHUB_CREATE_ISSUE", json!({})).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{fault:?}: {}",
            r.text()
        );
        assert_eq!(r.slug(), "connection_status_unavailable");
    }
    h.assert_no_execution();
    h.sandbox
        .set_fault_for("/api/v3.1/connected_accounts", Fault::None);
    assert_eq!(
        h.execute("alice", "GITHUB_CREATE_ISSUE", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    h.shutdown().await;
}

#[tokio::test]
async fn serve_stale_accepts_a_recent_active_answer_during_an_outage() {
    let h = Harness::with_config("[connections]\ncache_ttl_secs = 1\nserve_stale_secs = 60").await;
    assert_eq!(
        h.execute("alice", "SLACK_SEND_MESSAGE", json!({}))
            .await
            .status,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.sandbox
        .set_fault_for("/api/v3.1/connected_accounts", Fault::Status(503));
    let r = h.execute("alice", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "stale ACTIVE answer used: {}",
        r.text()
    );
    // Never for a user with no known ACTIVE answer.
    let r = h.execute("carol", "GITHUB_CREATE_ISSUE", json!({})).await;
    assert_eq!(r.slug(), "connection_status_unavailable");
    h.shutdown().await;
}

#[tokio::test]
async fn messages_are_configurable() {
    let h = Harness::with_config(
        "[connections]\nsettings_hint = \"under Account > Apps\"\n[connections.messages]\nnot_connected = \"Link {toolkit} {settings} to continue.\"",
    )
    .await;
    let r = h.execute("carol", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_eq!(
        r.json()["error"]["message"],
        "Link Slack under Account > Apps to continue."
    );
    h.shutdown().await;
}

#[tokio::test]
async fn gating_can_be_switched_off_but_ownership_still_holds() {
    let h = Harness::with_config("[connections]\ngate = false").await;
    let r = h.execute("carol", "SLACK_SEND_MESSAGE", json!({})).await;
    assert_ne!(r.slug(), "app_not_connected");
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"connected_account_id": "ca_bob_github"}),
        )
        .await;
    assert_eq!(r.slug(), "connected_account_not_owned");
    h.shutdown().await;
}

#[tokio::test]
async fn old_sdk_execution_is_gated_too() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/api/v2/actions/GMAIL_SEND_EMAIL/execute",
            Some(&token("alice")),
            Some(json!({"appName": "gmail", "input": {}})),
        )
        .await;
    assert_eq!(r.slug(), "connection_expired");
    // A lying appName does not change the gate: the action's real toolkit decides.
    let r = h
        .send(
            Method::POST,
            "/api/v2/actions/GMAIL_SEND_EMAIL/execute",
            Some(&token("alice")),
            Some(json!({"appName": "github", "input": {}})),
        )
        .await;
    assert_eq!(r.slug(), "connection_expired");
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn tool_metadata_is_fetched_once_for_all_users() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.add_tool(Tool::new("SLACK_CUSTOM_TOOL", "slack", false));
    let h = Harness::with(sandbox, "").await;
    for user in ["alice", "bob", "carol", "alice"] {
        h.execute(user, "SLACK_CUSTOM_TOOL", json!({})).await;
    }
    assert_eq!(
        h.sandbox.count("GET", "/api/v3.1/tools/SLACK_CUSTOM_TOOL"),
        1
    );
    h.shutdown().await;
}

#[tokio::test]
async fn meta_tool_inner_tools_are_gated_on_direct_execution() {
    let h = Harness::start().await;
    let r = h
        .execute("alice", "COMPOSIO_MULTI_EXECUTE_TOOL",
            json!({"arguments": {"tools": [{"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}, {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}}]}}))
        .await;
    assert_eq!(r.slug(), "connection_expired", "{}", r.text());
    assert_eq!(r.json()["error"]["toolkit"], "gmail");
    h.assert_no_execution();
    let r = h
        .execute("alice", "COMPOSIO_MULTI_EXECUTE_TOOL",
            json!({"arguments": {"tools": [{"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}]}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}
