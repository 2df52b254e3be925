//! The user-scoped surface beyond tool execution: connected accounts, triggers, MCP URL
//! generation and tool router sessions. Every forwarded call reaches Composio with the
//! subject's id only; every refusal reaches nothing.

use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

/// Identity-bearing query pairs of a recorded request.
fn identity_pairs(r: &entitygate::sandbox::Recorded) -> Vec<(String, String)> {
    r.query_pairs()
        .into_iter()
        .filter(|(k, _)| {
            let f: String = k
                .chars()
                .filter(|c| *c != '_' && *c != '-')
                .collect::<String>()
                .to_ascii_lowercase();
            ["userid", "userids", "entityid", "useruuid"].contains(&f.as_str())
        })
        .collect()
}

fn item_ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .expect("a listing")
        .iter()
        .map(|i| i["id"].as_str().expect("an id").to_owned())
        .collect()
}

/// The one request forwarded for `path` (exact path), checked for the real key only.
fn forwarded(h: &Harness, method: &str, path: &str) -> entitygate::sandbox::Recorded {
    let seen: Vec<_> = h
        .upstream(path)
        .into_iter()
        .filter(|r| r.path == path && r.method == method)
        .collect();
    assert_eq!(seen.len(), 1, "{method} {path}: {seen:?}");
    assert_only_real_key(&seen[0]);
    seen.into_iter().next().expect("one request")
}

// --- connected accounts: listing ---

#[tokio::test]
async fn account_listing_is_forced_to_the_subject() {
    let h = Harness::start().await;
    let t = token("alice");
    for prefix in ["/api/v3.1", "/api/v3"] {
        let path = format!("{prefix}/connected_accounts");
        for query in [
            "",
            "?user_ids=bob",
            "?user_ids=bob,alice",
            "?user_ids=bob&user_ids=alice&userIds=carol&toolkit_slugs=github",
        ] {
            h.sandbox.clear();
            let r = h
                .send(Method::GET, &format!("{path}{query}"), Some(&t), None)
                .await;
            assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
            let sent = forwarded(&h, "GET", &path);
            assert_eq!(
                identity_pairs(&sent),
                vec![("user_ids".to_owned(), "alice".to_owned())],
                "{query}"
            );
            let ids = item_ids(&r.json());
            assert!(!ids.is_empty(), "{query}");
            assert!(
                ids.iter().all(|i| i.starts_with("ca_alice_")),
                "{query}: {ids:?}"
            );
            if query.contains("toolkit_slugs") {
                assert_eq!(sent.query_param("toolkit_slugs").as_deref(), Some("github"));
                assert_eq!(ids, ["ca_alice_github"]);
            }
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn legacy_account_listing_is_forced_to_the_subject() {
    let h = Harness::start().await;
    let t = token("alice");
    for query in [
        "",
        "?pageSize=99999999",
        "?user_uuid=bob&showActiveOnly=true",
        "?entityId=bob",
        "?user_uuid=bob&entityId=alice",
    ] {
        h.sandbox.clear();
        let r = h
            .send(
                Method::GET,
                &format!("/api/v1/connectedAccounts{query}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        let sent = forwarded(&h, "GET", "/api/v1/connectedAccounts");
        assert_eq!(
            identity_pairs(&sent),
            vec![("user_uuid".to_owned(), "alice".to_owned())],
            "{query}"
        );
        let items = r.json()["items"].as_array().unwrap().clone();
        assert!(!items.is_empty());
        assert!(
            items.iter().all(|i| i["clientUniqueUserId"] == "alice"),
            "{query}"
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn bracketed_user_filters_are_refused() {
    let h = Harness::start().await;
    let t = token("alice");
    for path in [
        "/api/v3.1/connected_accounts?user_ids[]=bob",
        "/api/v3.1/connected_accounts?user_ids%5B0%5D=bob",
        "/api/v3.1/trigger_instances/active?user_ids[]=user-1",
        "/api/v1/connectedAccounts?user_uuid[]=bob",
    ] {
        let r = h.send(Method::GET, path, Some(&t), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.text());
        assert_eq!(r.slug(), "query_not_allowed", "{path}");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn shared_account_listing_is_refused_unless_allowed() {
    let h = Harness::start().await;
    let t = token("alice");
    for q in [
        "account_type=SHARED",
        "account_type=ALL",
        "accountType=shared",
        "account_type=PRIVATE,SHARED",
    ] {
        let r = h
            .send(
                Method::GET,
                &format!("/api/v3.1/connected_accounts?{q}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{q}");
        assert_eq!(r.slug(), "shared_accounts_not_allowed");
    }
    h.assert_nothing_forwarded();
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/connected_accounts?account_type=PRIVATE",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;

    let h = Harness::with_config("[policy]\nallow_shared_accounts = true").await;
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/connected_accounts?account_type=SHARED&user_ids=bob",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = forwarded(&h, "GET", "/api/v3.1/connected_accounts");
    assert_eq!(sent.query_param("account_type").as_deref(), Some("SHARED"));
    assert_eq!(
        identity_pairs(&sent),
        vec![("user_ids".to_owned(), "alice".to_owned())]
    );
    h.shutdown().await;
}

// --- connected accounts: one account by id ---

#[tokio::test]
async fn own_account_operations_are_forwarded() {
    let h = Harness::start().await;
    let t = token("alice");
    let base = "/api/v3.1/connected_accounts/ca_alice_slack";
    // Warm the gate's cache: slack is ACTIVE.
    let r = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = h.send(Method::GET, base, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["id"], "ca_alice_slack");
    forwarded(&h, "GET", base);

    let r = h
        .send(
            Method::PATCH,
            base,
            Some(&t),
            Some(json!({"alias": "work", "user_id": "bob", "connection": {"userId": "bob"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = forwarded(&h, "PATCH", base).json().unwrap();
    assert_eq!(body, json!({"alias": "work", "connection": {}}));

    let r = h
        .send(
            Method::POST,
            &format!("{base}/refresh"),
            Some(&t),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    forwarded(&h, "POST", &format!("{base}/refresh"));

    let r = h
        .send(
            Method::PATCH,
            &format!("{base}/status"),
            Some(&t),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        forwarded(&h, "PATCH", &format!("{base}/status"))
            .json()
            .unwrap(),
        json!({"enabled": false})
    );
    assert!(h.sandbox.account("ca_alice_slack").unwrap().is_disabled);

    // A change forgets the cached answer: the next gated execution asks Composio again and
    // sees the account disabled.
    let r = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.slug(), "connection_expired", "{}", r.text());

    let r = h
        .send(Method::POST, &format!("{base}/revoke"), Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    let r = h
        .send(
            Method::DELETE,
            "/api/v3.1/connected_accounts/ca_alice_notion?revoke_on_delete=true",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = forwarded(&h, "DELETE", "/api/v3.1/connected_accounts/ca_alice_notion");
    assert_eq!(
        sent.query_param("revoke_on_delete").as_deref(),
        Some("true")
    );
    assert!(h.sandbox.account("ca_alice_notion").is_none());

    // Legacy read and delete of an own account.
    let r = h
        .send(
            Method::GET,
            "/api/v1/connectedAccounts/ca_alice_github",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    forwarded(&h, "GET", "/api/v1/connectedAccounts/ca_alice_github");
    h.shutdown().await;
}

#[tokio::test]
async fn another_users_account_is_404_and_nothing_is_forwarded() {
    let h = Harness::start().await;
    let t = token("alice");
    let calls = [
        (
            Method::GET,
            "/api/v3.1/connected_accounts/ca_bob_github",
            None,
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_bob_github",
            Some(json!({"alias": "x"})),
        ),
        (
            Method::DELETE,
            "/api/v3/connected_accounts/ca_bob_github",
            None,
        ),
        (
            Method::POST,
            "/api/v3.1/connected_accounts/ca_bob_github/refresh",
            Some(json!({})),
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_bob_github/status",
            Some(json!({"enabled": false})),
        ),
        (
            Method::POST,
            "/api/v3.1/connected_accounts/ca_bob_gmail/revoke",
            None,
        ),
        (
            Method::GET,
            "/api/v3.1/connected_accounts/ca_nonexistent",
            None,
        ),
        (Method::GET, "/api/v1/connectedAccounts/ca_bob_github", None),
        (
            Method::DELETE,
            "/api/v1/connectedAccounts/ca_bob_github",
            None,
        ),
    ];
    for (m, p, body) in calls {
        let r = h.send(m.clone(), p, Some(&t), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}: {}", r.text());
        assert_eq!(r.slug(), "not_found");
    }
    assert!(h.upstream("/api/v3.1/connected_accounts/").is_empty());
    assert!(h.upstream("/api/v3/connected_accounts/").is_empty());
    assert!(h.upstream("/api/v1/connectedAccounts/").is_empty());
    // Only the gateway's own ownership lookups reached Composio, each for alice.
    for r in h.sandbox.requests() {
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("GET", "/api/v3.1/connected_accounts")
        );
        assert_eq!(r.query_param("user_ids").as_deref(), Some("alice"));
    }
    assert!(h.sandbox.account("ca_bob_github").is_some());
    assert!(!h.sandbox.account("ca_bob_github").unwrap().is_disabled);
    h.shutdown().await;
}

#[tokio::test]
async fn sharing_an_own_account_is_refused_unless_allowed() {
    let h = Harness::start().await;
    let t = token("alice");
    h.sandbox.clear();
    let r = h
        .send(
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github",
            Some(&t),
            Some(json!({"experimental": {"account_type": "SHARED", "acl_config_for_shared": {"allow_all_users": true}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.slug(), "shared_accounts_not_allowed");
    assert!(h.upstream("/api/v3.1/connected_accounts/").is_empty());
    h.shutdown().await;
}

// --- connected accounts: creation ---

#[tokio::test]
async fn created_accounts_belong_to_the_subject() {
    let h = Harness::start().await;
    let t = token("alice");
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/connected_accounts",
            Some(&t),
            Some(json!({
                "auth_config": {"id": "ac_github"},
                "user_id": "bob",
                "connection": {"user_id": "bob", "userId": "bob", "callback_url": "https://app.test/cb"},
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v3.1/connected_accounts")
        .json()
        .unwrap();
    assert_eq!(body["user_id"], "alice");
    assert_eq!(
        body["connection"],
        json!({"callback_url": "https://app.test/cb", "user_id": "alice"})
    );
    assert_eq!(body["auth_config"], json!({"id": "ac_github"}));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(h.sandbox.account(&id).unwrap().user_id, "alice");

    // No connection object: one is created for the subject; no top-level id is added.
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            "/api/v3/connected_accounts",
            Some(&t),
            Some(json!({"auth_config": {"id": "ac_slack"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v3/connected_accounts")
        .json()
        .unwrap();
    assert_eq!(
        body,
        json!({"auth_config": {"id": "ac_slack"}, "connection": {"user_id": "alice"}})
    );

    // Link.
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/connected_accounts/link",
            Some(&t),
            Some(json!({"auth_config_id": "ac_github", "user_id": "bob", "entity_id": "bob", "callback_url": "https://app.test/cb"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v3.1/connected_accounts/link")
        .json()
        .unwrap();
    assert_eq!(body["user_id"], "alice");
    assert!(body.get("entity_id").is_none());
    let id = r.json()["connected_account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(h.sandbox.account(&id).unwrap().user_id, "alice");

    // Legacy.
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            "/api/v1/connectedAccounts",
            Some(&t),
            Some(json!({"integrationId": "int-1", "userUuid": "bob", "data": {}, "labels": [], "redirectUri": "https://app.test/cb"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v1/connectedAccounts")
        .json()
        .unwrap();
    assert_eq!(body["userUuid"], "alice");
    assert_eq!(body["entityId"], "alice");
    let id = r.json()["connectedAccountId"].as_str().unwrap().to_owned();
    assert_eq!(h.sandbox.account(&id).unwrap().user_id, "alice");
    h.shutdown().await;
}

#[tokio::test]
async fn invalid_or_shared_creations_are_refused() {
    let h = Harness::start().await;
    let t = token("alice");
    h.sandbox.clear();
    let cases = [
        (
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "connection": "bob"}),
            "body_invalid",
        ),
        (
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "connection": ["bob"]}),
            "body_invalid",
        ),
        (
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "connection": {"experimental": {"account_type": "SHARED"}}}),
            "shared_accounts_not_allowed",
        ),
        (
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "Experimental": {"account_type": "SHARED"}}),
            "shared_accounts_not_allowed",
        ),
        (
            "/api/v3.1/connected_accounts/link",
            json!({"auth_config_id": "ac_github", "experimental": {"account_type": "SHARED"}}),
            "shared_accounts_not_allowed",
        ),
    ];
    for (path, body, slug) in cases {
        let r = h
            .send(Method::POST, path, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.slug(), slug, "{body}: {}", r.text());
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;

    let h = Harness::with_config("[policy]\nallow_shared_accounts = true").await;
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/connected_accounts/link",
            Some(&t),
            Some(json!({"auth_config_id": "ac_github", "user_id": "bob", "experimental": {"account_type": "SHARED"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v3.1/connected_accounts/link")
        .json()
        .unwrap();
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["experimental"], json!({"account_type": "SHARED"}));
    h.shutdown().await;
}

// --- triggers ---

#[tokio::test]
async fn trigger_upsert_forces_the_user_and_needs_an_owned_account() {
    let h = Harness::start().await;
    let t = token("alice");
    let path = "/api/v3.1/trigger_instances/GITHUB_STAR_ADDED_EVENT/upsert";
    for body in [
        json!({"user_id": "alice", "connected_account_id": "ca_bob_github", "trigger_config": {}}),
        json!({"connectedAuthId": "ca_abc123", "trigger_config": {}}),
        json!({"connected_account_id": "ca_alice_github", "connectedAuthId": "ca_bob_github"}),
    ] {
        let r = h
            .send(Method::POST, path, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{body}: {}", r.text());
        assert_eq!(r.slug(), "connected_account_not_owned");
    }
    assert!(h.upstream("/api/v3.1/trigger_instances").is_empty());

    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"user_id": "bob", "connected_account_id": "ca_alice_github", "trigger_config": {"owner": "a", "repo": "b"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = forwarded(&h, "POST", path).json().unwrap();
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["connected_account_id"], "ca_alice_github");

    // Without an account Composio picks the (pinned) user's own.
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"userId": "bob", "trigger_config": {}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = forwarded(&h, "POST", path).json().unwrap();
    assert_eq!(body, json!({"trigger_config": {}, "user_id": "alice"}));
    h.shutdown().await;
}

#[tokio::test]
async fn trigger_listing_is_forced_and_account_filters_owned() {
    let h = Harness::start().await;
    let t = token("alice");
    let path = "/api/v3.1/trigger_instances/active";
    for query in [
        "",
        "?user_ids=user-1",
        "?user_ids=user-1,alice&showDisabled=true",
        "?connectedAccountIds=ca_alice_github",
    ] {
        h.sandbox.clear();
        let r = h
            .send(Method::GET, &format!("{path}{query}"), Some(&t), None)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{query}: {}", r.text());
        let sent = forwarded(&h, "GET", path);
        assert_eq!(
            identity_pairs(&sent),
            vec![("user_ids".to_owned(), "alice".to_owned())],
            "{query}"
        );
        assert_eq!(item_ids(&r.json()), ["ti_alice_commit"], "{query}");
    }
    h.sandbox.clear();
    for query in [
        "?connected_account_ids=ca_abc123",
        "?connectedAccountIds=ca_alice_github,ca_bob_github",
        "?connected_account_ids[]=ca_bob_github",
        "?deprecatedConnectedAccountUuids=ca_bob_github",
    ] {
        let r = h
            .send(Method::GET, &format!("{path}{query}"), Some(&t), None)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{query}: {}", r.text());
        assert_eq!(r.slug(), "connected_account_not_owned");
    }
    assert!(h.upstream("/api/v3.1/trigger_instances").is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn managing_a_trigger_needs_it_to_be_the_subjects() {
    let h = Harness::start().await;
    let t = token("alice");
    for (m, body) in [
        (Method::PATCH, Some(json!({"status": "disable"}))),
        (Method::DELETE, None),
    ] {
        for id in ["ti_1", "ti_nonexistent"] {
            let r = h
                .send(
                    m.clone(),
                    &format!("/api/v3.1/trigger_instances/manage/{id}"),
                    Some(&t),
                    body.clone(),
                )
                .await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {id}: {}", r.text());
            assert_eq!(r.slug(), "not_found");
        }
    }
    assert!(h.upstream("/api/v3.1/trigger_instances/manage").is_empty());
    for r in h.sandbox.requests() {
        assert_eq!(r.path, "/api/v3.1/trigger_instances/active");
        assert_eq!(r.query_param("user_ids").as_deref(), Some("alice"));
    }

    // alice's own trigger: disabled, then enabled again (a disabled trigger is still hers).
    let path = "/api/v3.1/trigger_instances/manage/ti_alice_commit";
    for status in ["disable", "enable"] {
        h.sandbox.clear();
        let r = h
            .send(
                Method::PATCH,
                path,
                Some(&t),
                Some(json!({"status": status, "user_id": "bob"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{status}: {}", r.text());
        let body = forwarded(&h, "PATCH", path).json().unwrap();
        assert_eq!(body, json!({"status": status, "user_id": "alice"}));
    }
    h.sandbox.clear();
    let r = h.send(Method::DELETE, path, Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    forwarded(&h, "DELETE", path);
    h.shutdown().await;
}

// --- MCP ---

#[tokio::test]
async fn mcp_generate_forces_user_ids_and_owned_accounts() {
    let h = Harness::start().await;
    let t = token("alice");
    let path = "/api/v3.1/mcp/servers/generate";
    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"mcp_server_id": "mcp_1", "managed_auth_by_composio": true, "user_ids": ["bob", "alice"], "user_id": "carol"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let body = forwarded(&h, "POST", path).json().unwrap();
    assert_eq!(body["user_ids"], json!(["alice"]));
    assert!(body.get("user_id").is_none());
    assert_eq!(r.json()["user_ids_url"].as_array().unwrap().len(), 1);
    assert!(r.json()["user_ids_url"][0]
        .as_str()
        .unwrap()
        .ends_with("user_id=alice"));

    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"mcp_server_id": "mcp_1", "connected_account_ids": ["ca_alice_github"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        forwarded(&h, "POST", path).json().unwrap()["user_ids"],
        json!(["alice"])
    );

    h.sandbox.clear();
    for (body, slug) in [
        (
            json!({"mcp_server_id": "mcp_1", "connected_account_ids": ["ca_alice_github", "ca_bob_github"]}),
            "connected_account_not_owned",
        ),
        (
            json!({"mcp_server_id": "mcp_1", "connectedAccountIds": ["ca_abc123"]}),
            "connected_account_not_owned",
        ),
        (
            json!({"mcp_server_id": "mcp_1", "connected_account_ids": [1]}),
            "body_invalid",
        ),
        (
            json!({"mcp_server_id": "mcp_1", "connected_account_ids": "ca_alice_github"}),
            "body_invalid",
        ),
    ] {
        let r = h
            .send(Method::POST, path, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.slug(), slug, "{body}: {}", r.text());
    }
    assert!(h.upstream("/api/v3.1/mcp").is_empty());
    h.shutdown().await;
}

// --- tool router sessions ---

#[tokio::test]
async fn sessions_are_created_for_the_subject_and_usable_at_once() {
    let h = Harness::start().await;
    let t = token("alice");
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&t),
            Some(json!({"user_id": "bob", "toolkits": {"enable": ["github", "gmail"]}, "connected_accounts": {"github": ["ca_alice_github"]}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let body = forwarded(&h, "POST", "/api/v3.1/tool_router/session")
        .json()
        .unwrap();
    assert_eq!(body["user_id"], "alice");
    let id = r.json()["session_id"].as_str().unwrap().to_owned();
    assert_eq!(h.sandbox.session_user(&id).as_deref(), Some("alice"));

    // The gateway remembers the session it created: no ownership lookup is needed.
    h.sandbox.clear();
    let exec = format!("/api/v3.1/tool_router/session/{id}/execute");
    let r = h
        .send(
            Method::POST,
            &exec,
            Some(&t),
            Some(json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"title": "x"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    forwarded(&h, "POST", &exec);
    assert_eq!(
        h.sandbox
            .count("GET", &format!("/api/v3.1/tool_router/session/{id}")),
        0
    );

    h.sandbox.clear();
    for body in [
        json!({"user_id": "alice", "connected_accounts": {"github": ["ca_bob_github"]}}),
        json!({"user_id": "alice", "connected_accounts": {"github": "ca_abc123"}}),
    ] {
        let r = h
            .send(
                Method::POST,
                "/api/v3.1/tool_router/session",
                Some(&t),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            r.slug(),
            "connected_account_not_owned",
            "{body}: {}",
            r.text()
        );
    }
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&t),
            Some(json!({"connected_accounts": {"github": [7]}})),
        )
        .await;
    assert_eq!(r.slug(), "body_invalid", "{}", r.text());
    assert!(h.upstream("/api/v3.1/tool_router").is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn another_users_session_is_404_and_nothing_is_forwarded() {
    let h = Harness::start().await;
    h.sandbox.add_session("trs_bob", "bob");
    let t = token("alice");
    let base = "/api/v3.1/tool_router/session/trs_bob";
    let calls = [
        (
            Method::POST,
            format!("{base}/execute"),
            Some(json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}})),
        ),
        (Method::GET, base.to_owned(), None),
        (Method::DELETE, base.to_owned(), None),
        (
            Method::PATCH,
            base.to_owned(),
            Some(json!({"toolkits": {"enable": ["gmail"]}})),
        ),
        (
            Method::POST,
            format!("{base}/proxy_execute"),
            Some(json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET"})),
        ),
        (
            Method::POST,
            format!("{base}/link"),
            Some(json!({"toolkit": "github"})),
        ),
        (Method::GET, format!("{base}/tools"), None),
    ];
    for (m, p, body) in calls {
        let r = h.send(m.clone(), &p, Some(&t), body).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}: {}", r.text());
        assert_eq!(r.slug(), "not_found");
    }
    // One ownership lookup (then cached), nothing else.
    let seen = h.sandbox.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", base)
    );
    assert_eq!(h.sandbox.session_user("trs_bob").as_deref(), Some("bob"));

    // bob himself may use it.
    let r = h
        .send(
            Method::POST,
            &format!("{base}/execute"),
            Some(&token("bob")),
            Some(json!({"tool_slug": "GITHUB_CREATE_ISSUE"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn session_executions_are_gated_by_the_tools_toolkit() {
    let h = Harness::start().await;
    h.sandbox.add_session("trs_alice", "alice");
    let t = token("alice");
    let exec = "/api/v3.1/tool_router/session/trs_alice/execute";
    let refused = [
        (
            json!({"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}}),
            "connection_expired",
        ),
        (
            json!({"tool_slug": "NOTION_CREATE_PAGE"}),
            "connection_pending",
        ),
        (
            json!({"tool_slug": "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH"}),
            "app_not_connected",
        ),
        (
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "account": "ca_bob_github"}),
            "connected_account_not_owned",
        ),
        (
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "connected_account_id": "ca_abc123"}),
            "connected_account_not_owned",
        ),
        (
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "toolSlug": "GMAIL_SEND_EMAIL"}),
            "connection_expired",
        ),
        (
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "custom_auth_params": {"parameters": []}}),
            "custom_auth_not_allowed",
        ),
        (json!({"arguments": {}}), "body_invalid"),
        (json!({"tool_slug": "NO_SUCH_TOOL"}), "tool_not_found"),
        (
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}},
                {"tool_slug": "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH", "arguments": {"query": "x"}},
            ]}}),
            "app_not_connected",
        ),
        (
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "GITHUB_CREATE_ISSUE", "account": "ca_bob_github"},
            ]}}),
            "connected_account_not_owned",
        ),
        (
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [{"arguments": {}}]}}),
            "body_invalid",
        ),
        (
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": "GMAIL_SEND_EMAIL"}}),
            "body_invalid",
        ),
    ];
    for (body, slug) in refused {
        let r = h
            .send(Method::POST, exec, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.slug(), slug, "{body}: {}", r.text());
    }
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tool_router"), 0);

    for body in [
        json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"title": "x"}, "user_id": "bob"}),
        json!({"tool_slug": "GITHUB_CREATE_ISSUE", "account": "ca_alice_github"}),
        json!({"tool_slug": "HACKERNEWS_GET_FRONTPAGE"}),
        json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
            {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"title": "x"}},
            {"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}},
        ]}}),
    ] {
        h.sandbox.clear();
        let r = h
            .send(Method::POST, exec, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{body}: {}", r.text());
        let sent = forwarded(&h, "POST", exec).json().unwrap();
        assert!(sent.get("user_id").is_none(), "{sent}");
        assert_eq!(sent["tool_slug"], body["tool_slug"]);
        if body["tool_slug"] == "COMPOSIO_MULTI_EXECUTE_TOOL" {
            let results = r.json()["data"]["results"].as_array().unwrap().clone();
            assert!(
                results.iter().all(|x| x["successful"] == true),
                "{results:?}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn session_proxy_execute_is_gated_by_toolkit_slug() {
    let h = Harness::start().await;
    h.sandbox.add_session("trs_alice", "alice");
    let t = token("alice");
    let path = "/api/v3.1/tool_router/session/trs_alice/proxy_execute";
    for (toolkit, slug) in [
        ("gmail", "connection_expired"),
        ("NOTION", "connection_pending"),
        ("text_to_pdf", "app_not_connected"),
    ] {
        let r = h
            .send(
                Method::POST,
                path,
                Some(&t),
                Some(json!({"toolkit_slug": toolkit, "endpoint": "/x", "method": "GET"})),
            )
            .await;
        assert_eq!(r.slug(), slug, "{toolkit}: {}", r.text());
    }
    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"endpoint": "/x", "method": "GET"})),
        )
        .await;
    assert_eq!(r.slug(), "body_invalid");
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tool_router"), 0);

    let r = h
        .send(
            Method::POST,
            path,
            Some(&t),
            Some(json!({"toolkit_slug": "github", "endpoint": "/user", "method": "GET"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    forwarded(&h, "POST", path);
    assert_eq!(r.json()["data"]["user_id"], "alice");
    h.shutdown().await;
}

// --- tool router sessions: a user id nested in the session's settings ---

/// A session's settings carry no tool arguments, so a user id anywhere in them (Composio's
/// own session object has `config.user_id`) is one more place the user could be read from:
/// removed at creation and update, and refused under `on_identity_mismatch = "reject"`.
#[tokio::test]
async fn a_user_id_nested_in_session_settings_never_reaches_composio() {
    let h = Harness::start().await;
    let t = token("alice");
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&t),
            Some(json!({"user_id": "alice", "config": {"user_id": "bob", "x": [{"entityId": "bob"}]}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let id = r.json()["session_id"].as_str().unwrap().to_owned();
    let sent = forwarded(&h, "POST", "/api/v3.1/tool_router/session")
        .json()
        .unwrap();
    assert_eq!(sent, json!({"user_id": "alice", "config": {"x": [{}]}}));

    let path = format!("/api/v3.1/tool_router/session/{id}");
    for body in [
        json!({"config": {"user_id": "bob"}}),
        json!({"config": {"nested": {"User-Id": "bob"}}, "toolkits": {"enable": ["github"]}}),
    ] {
        h.sandbox.clear();
        let r = h
            .send(Method::PATCH, &path, Some(&t), Some(body.clone()))
            .await;
        assert!(r.status.is_success(), "{body}: {}", r.text());
        let sent = forwarded(&h, "PATCH", &path).body;
        let text = String::from_utf8_lossy(&sent).to_ascii_lowercase();
        assert!(!text.contains("bob"), "{body} forwarded as {text}");
    }
    h.shutdown().await;

    let h = Harness::with_config("[policy]\non_identity_mismatch = \"reject\"").await;
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&t),
            Some(json!({"user_id": "alice"})),
        )
        .await;
    let id = r.json()["session_id"].as_str().unwrap().to_owned();
    h.sandbox.clear();
    let path = format!("/api/v3.1/tool_router/session/{id}");
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&t),
            Some(json!({"config": {"user_id": "bob"}})),
        )
        .await;
    assert_eq!(r.slug(), "identity_mismatch", "{}", r.text());
    assert_eq!(h.sandbox.count("PATCH", &path), 0);
    // Naming the subject itself is no mismatch.
    let r = h
        .send(
            Method::PATCH,
            &path,
            Some(&t),
            Some(json!({"config": {"user_id": "alice"}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    h.shutdown().await;
}
