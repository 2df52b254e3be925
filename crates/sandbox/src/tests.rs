//! Tests of the sandbox over real sockets, with a hyper client.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::http::{Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::*;

const KEY: &str = "sbx_test_key";

struct Api {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: u16,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl Api {
    async fn start(sandbox: &Sandbox) -> Self {
        let addr = sandbox.start().await.unwrap();
        Self {
            addr,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, hyper_util::client::legacy::Error> {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("http://{}{path}", self.addr));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(serde_json::to_vec(b).unwrap()));
        if !body.is_empty() {
            req = req.header("content-type", "application/json");
        }
        let resp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(Answer { status, body })
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.raw(method, path, &[("x-api-key", KEY)], body.as_ref())
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let a = self.call("GET", path, None).await;
        (a.status, a.json())
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let a = self.call("POST", path, Some(body)).await;
        (a.status, a.json())
    }
}

fn ids(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn assert_envelope(v: &Value, status: u16, code: u64) {
    let e = &v["error"];
    assert_eq!(e["status"], status, "{v}");
    assert_eq!(e["code"], code, "{v}");
    assert!(e["slug"].is_string(), "{v}");
    assert!(e["message"].is_string(), "{v}");
    assert!(e["request_id"].is_string(), "{v}");
}

// --- credentials ---

#[tokio::test]
async fn exactly_one_credential_is_accepted() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let path = "/api/v3.1/toolkits";
    let ok = api
        .raw("GET", path, &[("x-api-key", KEY)], None)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);

    let refused: &[&[(&str, &str)]] = &[
        &[],
        &[("x-api-key", "wrong")],
        &[("x-api-key", KEY), ("authorization", "Bearer x")],
        &[("x-api-key", KEY), ("x-user-api-key", "uak_1")],
        &[("x-api-key", KEY), ("x-org-api-key", "oak_1")],
        &[("x-api-key", KEY), ("x-api-key", KEY)],
        &[("authorization", &format!("Bearer {KEY}"))],
    ];
    for headers in refused {
        let a = api.raw("GET", path, headers, None).await.unwrap();
        assert_eq!(a.status, 401, "{headers:?}");
        assert_envelope(&a.json(), 401, 10401);
    }
    // v1 errors carry the old flat fields too, and still answer 401.
    let a = api
        .raw(
            "GET",
            "/api/v1/client/auth/client_info",
            &[("x-api-key", "nope")],
            None,
        )
        .await
        .unwrap();
    assert_eq!(a.status, 401);
    let v = a.json();
    assert_envelope(&v, 401, 10401);
    assert_eq!(v["status"], 401);
    // Every one of them was recorded.
    assert_eq!(sb.count("GET", path), 1 + refused.len());
    sb.stop();
}

#[tokio::test]
async fn a_scoped_key_is_refused_outside_its_scope_only() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    sb.set_key_refused_for(KEY, &["/api/v3.1/connected_accounts", "/api/v3.1/mcp"]);
    for path in [
        "/api/v3.1/connected_accounts?limit=1",
        "/api/v3.1/connected_accounts/ca_1",
        "/api/v3.1/mcp/servers",
    ] {
        let a = api.call("GET", path, None).await;
        assert_eq!(a.status, 401, "{path}");
        assert_envelope(&a.json(), 401, 10401);
    }
    // Outside the refused areas the same key works, v3 paths included (a prefix is exact).
    for path in [
        "/api/v3.1/tools?limit=1",
        "/api/v3/connected_accounts?limit=1",
    ] {
        assert_eq!(api.get(path).await.0, 200, "{path}");
    }
    sb.set_key_refused_for(KEY, &[]);
    assert_eq!(api.get("/api/v3.1/connected_accounts?limit=1").await.0, 200);
    sb.stop();
}

// --- pagination and filters ---

#[tokio::test]
async fn cursor_pagination_returns_every_account_exactly_once() {
    let sb = Sandbox::new(KEY);
    let n = sb.add_bulk_accounts(
        "bulk",
        500,
        &["github", "slack", "gmail", "notion", "hackernews"],
    );
    assert_eq!(n, 2500);
    let api = Api::start(&sb).await;

    for order in ["", "&order_direction=asc"] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut path = format!("/api/v3.1/connected_accounts?limit=100{order}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, v) = api.get(&path).await;
            assert_eq!(status, 200, "{v}");
            pages += 1;
            assert_eq!(v["current_page"], pages);
            assert_eq!(v["total_items"], 2500);
            assert_eq!(v["total_pages"], 25);
            seen.extend(ids(&v));
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(pages, 25);
        assert_eq!(seen.len(), 2500);
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 2500);
    }

    // Filtered, across pages: one user's 5 accounts in pages of 2.
    let mut seen = Vec::new();
    let mut path = "/api/v3/connected_accounts?user_ids=bulk7&limit=2".to_owned();
    loop {
        let (_, v) = api.get(&path).await;
        seen.extend(ids(&v));
        let Some(c) = v["next_cursor"].as_str() else {
            break;
        };
        path = format!("/api/v3/connected_accounts?user_ids=bulk7&limit=2&cursor={c}");
    }
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|id| id.starts_with("ca_bulk7_")));
    sb.stop();
}

#[tokio::test]
async fn deleting_during_a_walk_skips_nothing_and_repeats_nothing() {
    let sb = Sandbox::new(KEY);
    sb.add_bulk_accounts("u", 30, &["github"]);
    let api = Api::start(&sb).await;
    let (_, first) = api.get("/api/v3.1/connected_accounts?limit=10").await;
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let mut seen = ids(&first);
    // The first record of the next page disappears before it is fetched.
    let (_, peek) = api
        .get(&format!(
            "/api/v3.1/connected_accounts?limit=10&cursor={cursor}"
        ))
        .await;
    let gone = ids(&peek)[0].clone();
    assert!(sb.remove_account(&gone));
    let mut path = format!("/api/v3.1/connected_accounts?limit=10&cursor={cursor}");
    loop {
        let (_, v) = api.get(&path).await;
        seen.extend(ids(&v));
        let Some(c) = v["next_cursor"].as_str() else {
            break;
        };
        path = format!("/api/v3.1/connected_accounts?limit=10&cursor={c}");
    }
    assert_eq!(seen.len(), 29);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 29);
    assert!(!seen.contains(&gone));
    let (status, v) = api.get("/api/v3.1/connected_accounts?cursor=bogus").await;
    assert_eq!(status, 400);
    assert_envelope(&v, 400, 10400);
    sb.stop();
}

#[tokio::test]
async fn list_filters_accept_comma_lists_and_repeated_parameters() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let list = |q: &str| format!("/api/v3.1/connected_accounts?limit=100&{q}");

    let (_, all) = api.get("/api/v3.1/connected_accounts?limit=100").await;
    assert_eq!(
        all["total_items"], 9,
        "no user filter: every user's accounts"
    );

    let (_, a) = api.get(&list("user_ids=alice,bob")).await;
    let (_, b) = api.get(&list("user_ids=alice&user_ids=bob")).await;
    let (_, c) = api
        .get(&list("user_ids%5B%5D=alice&user_ids%5B%5D=bob"))
        .await;
    assert_eq!(a["total_items"], 7);
    assert_eq!(sorted(ids(&a)), sorted(ids(&b)));
    assert_eq!(sorted(ids(&a)), sorted(ids(&c)));

    let (_, v) = api
        .get(&list("user_ids=alice&toolkit_slugs=github,GMAIL"))
        .await;
    assert_eq!(sorted(ids(&v)), vec!["ca_alice_github", "ca_alice_gmail"]);
    let (_, v) = api
        .get(&list("statuses=ACTIVE&statuses=EXPIRED&user_ids=alice"))
        .await;
    assert_eq!(
        sorted(ids(&v)),
        vec!["ca_alice_github", "ca_alice_gmail", "ca_alice_slack"]
    );
    let (_, v) = api
        .get(&list("connected_account_ids=ca_bob_gmail,ca_alice_slack"))
        .await;
    assert_eq!(sorted(ids(&v)), vec!["ca_alice_slack", "ca_bob_gmail"]);
    let (_, v) = api.get(&list("auth_config_ids=ac_slack")).await;
    assert_eq!(sorted(ids(&v)), vec!["ca_alice_slack", "ca_bob_slack"]);
    let (_, v) = api.get(&list("user_ids=carol")).await;
    assert_eq!(v["total_items"], 0);
    assert_eq!(v["items"], json!([]));
    // A user filter must match the user exactly.
    let (_, v) = api.get(&list("user_ids=ALICE")).await;
    assert_eq!(v["total_items"], 0);

    // Item shape (composio_client 2.0 ConnectedAccountListResponse).
    let (_, v) = api.get(&list("connected_account_ids=ca_bob_gmail")).await;
    let item = &v["items"][0];
    assert_eq!(item["status"], "ACTIVE");
    assert_eq!(item["is_disabled"], true);
    assert_eq!(item["user_id"], "bob");
    assert_eq!(item["toolkit"]["slug"], "gmail");
    assert_eq!(item["auth_config"]["id"], "ac_gmail");
    assert!(item["state"]["val"]["status"].is_string());
    assert!(item["created_at"].is_string() && item["updated_at"].is_string());
    let (status, v) = api.get("/api/v3.1/connected_accounts?limit=0").await;
    assert_eq!(status, 400, "{v}");
    sb.stop();
}

#[tokio::test]
async fn v1_listing_filters_and_pages() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let (status, v) = api
        .get("/api/v1/connectedAccounts?pageSize=99999999&user_uuid=alice&showActiveOnly=true")
        .await;
    assert_eq!(status, 200);
    assert_eq!(sorted(ids(&v)), vec!["ca_alice_github", "ca_alice_slack"]);
    let item = &v["items"][0];
    for key in [
        "clientUniqueUserId",
        "appUniqueId",
        "appName",
        "integrationId",
        "connectionParams",
        "createdAt",
        "updatedAt",
    ] {
        assert!(!item[key].is_null(), "{key} missing: {item}");
    }
    // entityId filters too; together with user_uuid both must match.
    let (_, v) = api.get("/api/v1/connectedAccounts?entityId=bob").await;
    assert_eq!(
        sorted(ids(&v)),
        vec!["ca_bob_github", "ca_bob_slack"],
        "disabled hidden by default"
    );
    let (_, v) = api
        .get("/api/v1/connectedAccounts?entityId=bob&showDisabled=true")
        .await;
    assert_eq!(v["items"].as_array().unwrap().len(), 3);
    let (_, v) = api
        .get("/api/v1/connectedAccounts?user_uuid=alice&entityId=bob")
        .await;
    assert_eq!(v["items"], json!([]));
    let (_, v) = api
        .get("/api/v1/connectedAccounts?appNames=GITHUB&pageSize=2&page=2")
        .await;
    assert_eq!(v["page"], 2);
    assert_eq!(v["totalPages"], 2);
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    sb.stop();
}

// --- execution rules ---

#[tokio::test]
async fn execute_runs_as_the_user_with_a_usable_account_only() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let exec = |slug: &str| format!("/api/v3.1/tools/execute/{slug}");

    let (s, v) = api
        .post(
            &exec("GITHUB_CREATE_ISSUE"),
            json!({"user_id": "alice", "arguments": {"title": "t"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["successful"], true);
    assert_eq!(v["data"]["user_id"], "alice");
    assert_eq!(v["data"]["connected_account_id"], "ca_alice_github");
    assert!(v["log_id"].is_string());

    // Another user's account: 1812.
    let (s, v) = api
        .post(
            &exec("GITHUB_CREATE_ISSUE"),
            json!({"user_id": "alice", "connected_account_id": "ca_bob_github"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1812);
    // Expired, disabled, failed, initiated, none: 1803.
    for (user, slug) in [
        ("alice", "GMAIL_SEND_EMAIL"),
        ("bob", "GMAIL_SEND_EMAIL"),
        ("bob", "SLACK_SEND_MESSAGE"),
        ("alice", "NOTION_CREATE_PAGE"),
        ("carol", "GITHUB_CREATE_ISSUE"),
        ("alice", "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH"),
    ] {
        let (s, v) = api
            .post(&exec(slug), json!({"user_id": user, "arguments": {}}))
            .await;
        assert_eq!(s, 400, "{user} {slug}: {v}");
        assert_envelope(&v, 400, 1803);
    }
    let (s, v) = api
        .post(
            &exec("GMAIL_SEND_EMAIL"),
            json!({"user_id": "bob", "connected_account_id": "ca_bob_gmail"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1803);
    // Account of another toolkit.
    let (s, v) = api
        .post(
            &exec("SLACK_SEND_MESSAGE"),
            json!({"user_id": "alice", "connected_account_id": "ca_alice_github"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1810);
    // No-auth tools run for anyone, including the composio meta toolkit.
    for slug in ["HACKERNEWS_GET_FRONTPAGE", "COMPOSIO_SEARCH_TOOLS"] {
        let (s, v) = api
            .post(&exec(slug), json!({"user_id": "carol", "arguments": {}}))
            .await;
        assert_eq!(s, 200, "{slug}: {v}");
        assert_eq!(v["data"]["user_id"], "carol");
        assert_eq!(v["data"]["connected_account_id"], Value::Null);
    }
    // The deprecated entity_id alias selects the user too.
    let (s, v) = api
        .post(&exec("SLACK_SEND_MESSAGE"), json!({"entity_id": "alice"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["connected_account_id"], "ca_alice_slack");
    // Caller-supplied credentials bypass connected accounts, visibly.
    let (s, v) = api
        .post(
            &exec("GMAIL_SEND_EMAIL"),
            json!({"user_id": "carol", "custom_auth_params": {"parameters": []}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["custom_auth"], true);
    // Both text and arguments: validation.
    let (s, _) = api
        .post(
            &exec("HACKERNEWS_GET_FRONTPAGE"),
            json!({"text": "x", "arguments": {}}),
        )
        .await;
    assert_eq!(s, 400);
    // Unknown tool: 404 envelope.
    let (s, v) = api
        .post(&exec("NOPE_TOOL"), json!({"user_id": "alice"}))
        .await;
    assert_eq!(s, 404);
    assert_envelope(&v, 404, 10404);

    // State changes are seen by the next execution.
    assert!(sb.set_account_status("ca_alice_github", "EXPIRED"));
    let (s, _) = api
        .post(&exec("GITHUB_CREATE_ISSUE"), json!({"user_id": "alice"}))
        .await;
    assert_eq!(s, 400);
    sb.set_account_status("ca_alice_github", "ACTIVE");
    sb.set_account_disabled("ca_alice_github", true);
    let (s, _) = api
        .post(&exec("GITHUB_CREATE_ISSUE"), json!({"user_id": "alice"}))
        .await;
    assert_eq!(s, 400);
    sb.add_account(Account::new(
        "ca_carol_search",
        "carol",
        "composio_search",
        "ACTIVE",
    ));
    let (s, v) = api
        .post(
            &exec("COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH"),
            json!({"user_id": "carol"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["connected_account_id"], "ca_carol_search");
    sb.stop();
}

#[tokio::test]
async fn tools_answer_their_real_toolkit_and_version() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    for (slug, toolkit, no_auth) in [
        (
            "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH",
            "composio_search",
            false,
        ),
        ("COMPOSIO_SEARCH_TOOLS", "composio", true),
        ("TEXT_TO_PDF_CONVERT_TEXT_TO_PDF", "text_to_pdf", false),
        ("HACKERNEWS_GET_FRONTPAGE", "hackernews", true),
        ("GITHUB_CREATE_AN_ISSUE", "github", false),
    ] {
        for prefix in ["/api/v3", "/api/v3.1"] {
            let (s, v) = api.get(&format!("{prefix}/tools/{slug}")).await;
            assert_eq!(s, 200);
            assert_eq!(v["toolkit"]["slug"], toolkit);
            assert_eq!(v["no_auth"], no_auth);
            assert!(v["input_parameters"]["properties"].is_object());
        }
    }
    let (_, v) = api.get("/api/v3/tools/GITHUB_CREATE_ISSUE").await;
    assert_eq!(v["version"], "00000000_00");
    let (_, v) = api.get("/api/v3.1/tools/GITHUB_CREATE_ISSUE").await;
    assert_eq!(v["version"], shapes::TOOL_VERSION);
    let (_, v) = api
        .get("/api/v3.1/tools/GITHUB_CREATE_ISSUE?toolkit_versions%5Bgithub%5D=20250101_00")
        .await;
    assert_eq!(v["version"], "20250101_00");
    let (s, v) = api.get("/api/v3.1/tools/NOT_A_TOOL").await;
    assert_eq!(s, 404);
    assert_envelope(&v, 404, 10404);
    let (s, v) = api.get("/api/v3.1/tools/enum").await;
    assert_eq!(s, 200);
    assert!(v
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "HACKERNEWS_GET_FRONTPAGE"));
    let (s, v) = api.get("/api/v3.1/no/such/route").await;
    assert_eq!(s, 404);
    assert_envelope(&v, 404, 10404);
    let (s, _) = api.get("/somewhere/else").await;
    assert_eq!(s, 404);
    sb.stop();
}

#[tokio::test]
async fn state_changes_persist_across_calls() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let (s, v) = api
        .post(
            "/api/v3.1/connected_accounts/link",
            json!({"auth_config_id": "ac_github", "user_id": "carol"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let id = v["connected_account_id"].as_str().unwrap().to_owned();
    let (_, v) = api.get("/api/v3.1/connected_accounts?user_ids=carol").await;
    assert_eq!(ids(&v), vec![id.clone()]);
    assert_eq!(v["items"][0]["status"], "INITIATED");

    let a = api
        .call(
            "PATCH",
            &format!("/api/v3.1/connected_accounts/{id}/status"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(sb.account(&id).unwrap().is_disabled);
    let a = api
        .call(
            "PATCH",
            &format!("/api/v3.1/connected_accounts/{id}/status"),
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(a.status, 200);
    assert!(!sb.account(&id).unwrap().is_disabled);

    let a = api
        .call("DELETE", &format!("/api/v3/connected_accounts/{id}"), None)
        .await;
    assert_eq!(a.status, 200);
    let (s, v) = api.get(&format!("/api/v3.1/connected_accounts/{id}")).await;
    assert_eq!(s, 404);
    assert_envelope(&v, 404, 10404);

    let (s, v) = api
        .post(
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_slack"}, "connection": {"user_id": "carol"}}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        sb.account(v["id"].as_str().unwrap()).unwrap().user_id,
        "carol"
    );

    let (_, v) = api
        .post(
            "/api/v3.1/connected_accounts/ca_bob_github/revoke",
            json!({}),
        )
        .await;
    assert_eq!(v["connected_account"]["status"], "REVOKED");
    assert_eq!(sb.account("ca_bob_github").unwrap().status, "REVOKED");

    // Sessions remember their user.
    let (s, v) = api
        .post(
            "/api/v3.1/tool_router/session",
            json!({"user_id": "alice", "toolkits": {"enable": ["github"]}}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let sid = v["session_id"].as_str().unwrap().to_owned();
    assert!(sid.starts_with("trs_"));
    assert_eq!(v["config"]["user_id"], "alice");
    assert!(v["mcp"]["url"].as_str().unwrap().contains(&sid));
    assert_eq!(sb.session_user(&sid).as_deref(), Some("alice"));
    let (_, v) = api.get(&format!("/api/v3/tool_router/session/{sid}")).await;
    assert_eq!(v["config"]["user_id"], "alice");
    let (s, v) = api
        .post(
            &format!("/api/v3.1/tool_router/session/{sid}/execute"),
            json!({"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["user_id"], "alice");
    assert_eq!(v["data"]["connected_account_id"], "ca_alice_github");
    let (s, v) = api
        .post(
            &format!("/api/v3.1/tool_router/session/{sid}/execute"),
            json!({"tool_slug": "SLACK_SEND_MESSAGE"}),
        )
        .await;
    assert_eq!(s, 400, "slack is not enabled in the session: {v}");
    let (s, v) = api
        .post(
            &format!("/api/v3.1/tool_router/session/{sid}/execute"),
            json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}},
                {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}},
            ]}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["results"][0]["successful"], true);
    assert_eq!(v["data"]["results"][1]["successful"], false);
    // Pinning another user's account is refused.
    let (s, v) = api
        .post(
            "/api/v3.1/tool_router/session",
            json!({"user_id": "alice", "connected_accounts": {"github": ["ca_bob_github"]}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1812);
    let (s, _) = api.get("/api/v3.1/tool_router/session/trs_nope").await;
    assert_eq!(s, 404);

    // Triggers: upsert resolves the user's account; the listing filters by user.
    let (s, v) = api
        .post(
            "/api/v3.1/trigger_instances/SLACK_RECEIVE_MESSAGE/upsert",
            json!({"user_id": "alice"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let tid = v["trigger_id"].as_str().unwrap().to_owned();
    let (_, v) = api
        .get("/api/v3.1/trigger_instances/active?user_ids=alice")
        .await;
    assert!(ids(&v).contains(&tid));
    assert!(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["user_id"] == "alice"));
    let (s, v) = api
        .post(
            "/api/v3.1/trigger_instances/GITHUB_COMMIT_EVENT/upsert",
            json!({"user_id": "alice", "connected_account_id": "ca_abc123"}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1812);

    // MCP URLs carry the user.
    let (_, v) = api
        .post(
            "/api/v3.1/mcp/servers/generate",
            json!({"mcp_server_id": "mcp_1", "user_ids": ["alice"]}),
        )
        .await;
    assert!(v["user_ids_url"][0]
        .as_str()
        .unwrap()
        .ends_with("/v3/mcp/mcp_1?user_id=alice"));
    sb.stop();
}

#[tokio::test]
async fn v2_execute_answers_exactly_200() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let (s, v) = api
        .post(
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"entityId": "bob", "appName": "GITHUB", "input": {"title": "t"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["successfull"], true);
    assert_eq!(v["successful"], true);
    assert_eq!(v["data"]["user_id"], "bob");
    assert_eq!(v["data"]["connected_account_id"], "ca_bob_github");
    let (s, v) = api
        .post(
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"entityId": "bob", "connectedAccountId": "ca_alice_github", "input": {}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_envelope(&v, 400, 1812);
    let (s, v) = api
        .post(
            "/api/v1/connectedAccounts",
            json!({"integrationId": "ac_github", "userUuid": "carol"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["connectionStatus"], "INITIATED");
    let (s, v) = api
        .post(
            "/api/v1/integrations",
            json!({"appId": shapes::app_id("slack"), "useComposioAuth": true, "name": "slack_1"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["appName"], "slack");
    let (s, v) = api.get("/api/v1/triggers").await;
    assert_eq!(s, 200);
    assert!(v.is_array());
    sb.stop();
}

// --- faults, recording, lifecycle ---

#[tokio::test]
async fn faults_apply_until_cleared() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    let path = "/api/v3.1/tools/GITHUB_CREATE_ISSUE";

    sb.set_fault(Fault::Status(503));
    let a = api.call("GET", path, None).await;
    assert_eq!(a.status, 503);
    assert_envelope(&a.json(), 503, 10503);

    sb.set_fault(Fault::Garbage);
    let a = api.call("GET", path, None).await;
    assert_eq!(a.status, 200);
    assert!(serde_json::from_slice::<Value>(&a.body).is_err());

    sb.set_fault(Fault::Delay(Duration::from_millis(300)));
    let t = Instant::now();
    let a = api.call("GET", path, None).await;
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, 200);

    sb.set_fault(Fault::EchoHeaders);
    let a = api
        .raw(
            "POST",
            "/api/v3.1/x?q=1",
            &[("x-api-key", KEY), ("x-extra", "v")],
            Some(&json!({"a": 1})),
        )
        .await
        .unwrap();
    let v = a.json();
    assert_eq!(v["headers"]["x-api-key"], KEY);
    assert_eq!(v["headers"]["x-extra"], "v");
    assert_eq!(v["query"], "q=1");
    assert_eq!(v["body_json"]["a"], 1);

    sb.set_fault(Fault::Reset);
    assert!(api
        .raw("GET", path, &[("x-api-key", KEY)], None)
        .await
        .is_err());

    sb.set_fault(Fault::None);
    assert_eq!(api.call("GET", path, None).await.status, 200);

    // Scoped: only the prefix misbehaves, and the longest prefix wins.
    sb.set_fault_for("/api/v3.1/tools/execute/", Fault::Status(502));
    sb.set_fault_for("/api/v3.1/tools/execute/proxy", Fault::Status(418));
    assert_eq!(api.call("GET", path, None).await.status, 200);
    let a = api
        .call(
            "POST",
            "/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE",
            Some(json!({})),
        )
        .await;
    assert_eq!(a.status, 502);
    let a = api
        .call("POST", "/api/v3.1/tools/execute/proxy", Some(json!({})))
        .await;
    assert_eq!(a.status, 418);
    sb.set_fault_for("/api/v3.1/tools/execute/", Fault::None);
    sb.set_fault_for("/api/v3.1/tools/execute/proxy", Fault::None);
    let a = api
        .call(
            "POST",
            "/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE",
            Some(json!({})),
        )
        .await;
    assert_eq!(a.status, 200);
    sb.stop();
}

#[tokio::test]
async fn requests_are_recorded_in_order() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    api.raw(
        "POST",
        "/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE?a=1&b=x%2Cy",
        &[("x-api-key", KEY), ("x-request-id", "rid-1")],
        Some(&json!({"user_id": "u"})),
    )
    .await
    .unwrap();
    api.get("/api/v3.1/connected_accounts").await;
    let all = sb.requests();
    assert_eq!(all.len(), 2);
    let r = &all[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE");
    assert_eq!(r.query.as_deref(), Some("a=1&b=x%2Cy"));
    assert_eq!(r.header("X-Request-Id"), Some("rid-1"));
    assert_eq!(r.query_param("b").as_deref(), Some("x,y"));
    assert_eq!(r.json().unwrap()["user_id"], "u");
    assert_eq!(sb.count("POST", "/api/v3.1/tools/execute/"), 1);
    assert_eq!(sb.count("GET", "/api/v3.1/"), 1);
    assert_eq!(sb.requests_to("/api/v3.1/connected").len(), 1);
    sb.clear();
    assert!(sb.requests().is_empty());
    sb.stop();
}

#[tokio::test]
async fn stop_refuses_new_connections_and_drops_open_ones() {
    let sb = Sandbox::with_demo_data(KEY);
    let api = Api::start(&sb).await;
    assert_eq!(
        api.call("GET", "/api/v3.1/toolkits", None).await.status,
        200
    );
    sb.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(api
        .raw("GET", "/api/v3.1/toolkits", &[("x-api-key", KEY)], None)
        .await
        .is_err());
    assert!(tokio::net::TcpStream::connect(api.addr).await.is_err());
    // The same sandbox can be served again.
    let again = Api::start(&sb).await;
    assert_eq!(
        again.call("GET", "/api/v3.1/toolkits", None).await.status,
        200
    );
    sb.stop();
}

#[tokio::test]
async fn serves_h2c_and_tls() {
    let sb = Sandbox::with_demo_data(KEY);
    let addr = sb.start().await.unwrap();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let req = Request::get(format!("http://{addr}/api/v3.1/toolkits"))
        .header("x-api-key", KEY)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), ::http::Version::HTTP_2);

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../certs/dev");
    let tls_addr = sb
        .start_tls(&dir.join("server.crt"), &dir.join("server.key"))
        .await
        .unwrap();
    let tls = client_tls(&dir.join("ca.crt"));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let req = Request::get(format!(
        "https://localhost:{}/api/v3.1/tool_router/session/trs_1",
        tls_addr.port()
    ))
    .header("x-api-key", KEY)
    .body(Full::new(Bytes::new()))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["config"]["user_id"], "user-1");
    assert!(body["mcp"]["url"]
        .as_str()
        .unwrap()
        .starts_with("https://localhost:"));
    sb.stop();
}

// --- the recorded SDK traffic ---

/// Every request the real SDKs sent (composio-wire-captures.jsonl) gets a faithful answer from
/// a fresh demo sandbox: JSON, never 5xx, 2xx except where Composio itself would refuse, and
/// exactly 200 for the old SDK's v1/v2 calls.
#[tokio::test]
async fn every_captured_sdk_request_gets_a_faithful_answer() {
    let captures = include_str!("../../../tests/sdk/composio-wire-captures.jsonl");
    let mut n = 0;
    for line in captures.lines().filter(|l| !l.trim().is_empty()) {
        let cap: Value = serde_json::from_str(line).unwrap();
        let sb = Sandbox::with_demo_data(KEY);
        let api = Api::start(&sb).await;
        let mut headers: Vec<(String, String)> = cap["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h[0].as_str().unwrap().to_owned(),
                    h[1].as_str().unwrap().to_owned(),
                )
            })
            .filter(|(n, _)| {
                !["host", "content-length", "x-api-key"].contains(&n.to_ascii_lowercase().as_str())
            })
            .collect();
        headers.push(("x-api-key".into(), KEY.into()));
        let path = match cap["query"].as_str().unwrap() {
            "" => cap["path"].as_str().unwrap().to_owned(),
            q => format!("{}?{q}", cap["path"].as_str().unwrap()),
        };
        let method = cap["method"].as_str().unwrap();
        let body = cap["body"].as_str().unwrap();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", api.addr));
        for (n, v) in &headers {
            req = req.header(n.as_str(), v.as_str());
        }
        let resp = api
            .client
            .request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value =
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: not JSON"));
        let scenario = cap["scenario"].as_str().unwrap();
        if scenario == "execute_nouser" && method == "POST" {
            // No user and no account: Composio's "default" user has no GitHub account.
            assert_eq!(status, 400, "{path}: {v}");
            assert_envelope(&v, 400, 1803);
        } else if path.starts_with("/api/v1") || path.starts_with("/api/v2") {
            assert_eq!(status, 200, "{method} {path}: {v}");
        } else {
            assert!(
                (200..300).contains(&status),
                "{method} {path} ({scenario}): {status} {v}"
            );
        }
        assert_eq!(sb.requests().len(), 1);
        sb.stop();
        n += 1;
    }
    assert_eq!(n, 53);
}

/// A rustls client trusting only the dev CA (`certs/dev/ca.crt`), on the ring provider the
/// sandbox's server side uses.
fn client_tls(ca: &std::path::Path) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth()
}
