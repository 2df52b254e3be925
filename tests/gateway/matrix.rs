//! The rows of the README's support matrix that the SDK suite does not reach: each is driven
//! here once, and what reached Composio is checked against the row's policy.

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn catalogue_reads_are_forwarded_as_they_are() {
    let h = Harness::start().await;
    let t = token("alice");
    for path in [
        "/api/v3.1/tools/enum",
        "/api/v3.1/toolkits/categories",
        "/api/v3.1/toolkits/github",
        "/api/v3/triggers_types",
        "/api/v3.1/triggers_types/list/enum",
        "/api/v3.1/triggers_types/GITHUB_COMMIT_EVENT",
        "/api/v3.1/mcp/mcp_1",
        "/api/v2/actions",
        "/api/v2/actions/GITHUB_CREATE_AN_ISSUE",
        "/api/v1/actions/list/enums",
        "/api/v1/apps",
        "/api/v1/apps/GITHUB",
        "/api/v1/triggers",
    ] {
        h.sandbox.clear();
        let r = h
            .send(Method::GET, &format!("{path}?limit=5"), Some(&t), None)
            .await;
        assert!(
            r.status != StatusCode::FORBIDDEN && r.status != StatusCode::UNAUTHORIZED,
            "{path}: {}",
            r.text()
        );
        let sent = h.upstream(path);
        assert_eq!(sent.len(), 1, "{path} forwarded once");
        assert_eq!(
            sent[0].path, path,
            "forwarded on the path it was classified on"
        );
        assert_eq!(sent[0].query_param("limit").as_deref(), Some("5"));
        assert_only_real_key(&sent[0]);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn v1_execute_pins_entity_id() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/api/v1/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(&token("alice")),
            Some(json!({"entityId": "bob", "input": {"title": "t"}})),
        )
        .await;
    assert_ne!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    let sent = h.upstream("/api/v1/actions/");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].json().unwrap()["entityId"], "alice");
    h.shutdown().await;
}

#[tokio::test]
async fn proxy_execute_needs_an_owned_active_account() {
    let h = Harness::start().await;
    let t = token("alice");
    // v3: pinned user, own ACTIVE account.
    let r = h
        .send(Method::POST, "/api/v3.1/tools/execute/proxy", Some(&t),
            Some(json!({"connected_account_id": "ca_alice_github", "user_id": "bob", "endpoint": "/user", "method": "GET"})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v3.1/tools/execute/proxy");
    assert_eq!(sent[0].json().unwrap()["user_id"], "alice");
    h.sandbox.clear();
    for (body, slug) in [
        (
            json!({"endpoint": "/user", "method": "GET"}),
            "body_invalid",
        ),
        (
            json!({"connected_account_id": "ca_bob_github", "endpoint": "/user", "method": "GET"}),
            "connected_account_not_owned",
        ),
        (
            json!({"connected_account_id": "ca_alice_gmail", "endpoint": "/x", "method": "GET"}),
            "connection_expired",
        ),
    ] {
        let r = h
            .send(
                Method::POST,
                "/api/v3.1/tools/execute/proxy",
                Some(&t),
                Some(body),
            )
            .await;
        assert_eq!(r.slug(), slug);
    }
    // v2 (the old SDK's execute_request): same rules, no user field of its own.
    let r = h
        .send(Method::POST, "/api/v2/actions/proxy", Some(&t),
            Some(json!({"connectedAccountId": "ca_bob_github", "endpoint": "/repos/a/b", "method": "GET", "parameters": []})))
        .await;
    assert_eq!(r.slug(), "connected_account_not_owned");
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tools/execute/proxy"), 0);
    assert_eq!(h.sandbox.count("POST", "/api/v2/actions/proxy"), 0);
    let r = h
        .send(Method::POST, "/api/v2/actions/proxy", Some(&t),
            Some(json!({"connectedAccountId": "ca_alice_github", "entityId": "bob", "endpoint": "/repos/a/b", "method": "GET", "parameters": []})))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v2/actions/proxy");
    assert!(
        sent[0].json().unwrap().get("entityId").is_none(),
        "no foreign user forwarded"
    );
    // Switched off by policy.
    let off = Harness::with_config("[policy]\nallow_proxy_execute = false").await;
    let r = off
        .send(Method::POST, "/api/v3.1/tools/execute/proxy", Some(&t),
            Some(json!({"connected_account_id": "ca_alice_github", "endpoint": "/user", "method": "GET"})))
        .await;
    assert_eq!(r.slug(), "operation_disabled");
    off.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn session_search_and_mounts_need_the_subjects_session() {
    let h = Harness::start().await;
    h.sandbox.add_session("trs_alice_m", "alice");
    h.sandbox.add_session("trs_bob_m", "bob");
    let t = token("alice");
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session/trs_alice_m/search",
            Some(&t),
            Some(json!({"queries": [{"use_case": "issues"}]})),
        )
        .await;
    assert_ne!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(
        h.upstream("/api/v3.1/tool_router/session/trs_alice_m/search")
            .len(),
        1
    );
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/tool_router/session/trs_alice_m/mounts/m1/items",
            Some(&t),
            None,
        )
        .await;
    assert_ne!(r.slug(), "not_found", "{}", r.text());
    assert_eq!(
        h.upstream("/api/v3.1/tool_router/session/trs_alice_m/mounts/")
            .len(),
        1
    );
    for path in [
        "/api/v3.1/tool_router/session/trs_bob_m/search",
        "/api/v3.1/tool_router/session/trs_bob_m/mounts/m1/items",
    ] {
        let method = if path.ends_with("search") {
            Method::POST
        } else {
            Method::GET
        };
        let body = (method == Method::POST).then(|| json!({}));
        let r = h.send(method, path, Some(&t), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(h.upstream(path).is_empty(), "{path} must not be forwarded");
    }
    h.shutdown().await;
}
