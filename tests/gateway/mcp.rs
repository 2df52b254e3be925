//! MCP through the gateway (issue 13): Streamable HTTP on the hosted endpoints Composio hands
//! out and on the front door, over real sockets, against the sandbox's MCP endpoints.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::support::*;

const STATELESS: &str = "2026-07-28";
const STATEFUL: &str = "2025-06-18";

/// A POST of `body` (raw text) to an MCP path with extra headers.
async fn post_raw(
    h: &Harness,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(h.url(path))
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.header("x-api-key", t);
    }
    let mut typed = false;
    for (k, v) in headers {
        typed |= k.eq_ignore_ascii_case("content-type");
        req = req.header(*k, *v);
    }
    if !typed {
        req = req.header("content-type", "application/json");
    }
    h.raw(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
        .await
}

/// A stateless (2026-07-28) POST of one message, its headers set from the body.
async fn call(h: &Harness, path: &str, user: &str, mut msg: Value) -> Reply {
    if msg.get("method").is_some() {
        if !msg["params"].is_object() {
            msg["params"] = json!({});
        }
        msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(STATELESS);
    }
    let method = msg["method"].as_str().unwrap_or_default().to_owned();
    let name = msg["params"]["name"].as_str().map(str::to_owned);
    let mut hs = vec![
        ("mcp-protocol-version", STATELESS),
        ("mcp-method", method.as_str()),
    ];
    if let Some(n) = &name {
        hs.push(("mcp-name", n.as_str()));
    }
    post_raw(h, path, Some(&token(user)), &hs, &msg.to_string()).await
}

fn tool_call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": arguments}})
}

/// Creates a tool router session for `user` through the gateway; answers its id and body.
async fn session_for(h: &Harness, user: &str) -> (String, Value) {
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&token(user)),
            Some(json!({"user_id": user})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let v = r.json();
    (v["session_id"].as_str().unwrap().to_owned(), v)
}

fn mcp_requests(h: &Harness, prefix: &str) -> Vec<entitygate::sandbox::Recorded> {
    h.upstream(prefix)
}

// --- resource-server behaviour: metadata, 401s, tokens, origins ---

#[tokio::test]
async fn protected_resource_metadata_and_every_401_names_it() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::GET,
            "/.well-known/oauth-protected-resource",
            None,
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["resource"], format!("http://{}", h.addr));
    assert_eq!(v["authorization_servers"], json!([ISSUER]));
    assert_eq!(v["bearer_methods_supported"], json!(["header"]));
    for path in [
        "/mcp",
        "/tool_router/trs_x/mcp",
        "/v3/mcp/mcp_1?user_id=alice",
    ] {
        let r = post_raw(
            &h,
            path,
            None,
            &[],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        let www = r.headers["www-authenticate"].to_str().unwrap();
        assert!(
            www.contains(&format!(
                "resource_metadata=\"http://{}/.well-known/oauth-protected-resource\"",
                h.addr
            )),
            "{www}"
        );
    }
    // REST 401s stay as they were.
    let r = h.send(Method::GET, "/api/v3.1/tools", None, None).await;
    assert!(!r.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("resource_metadata"));
    h.assert_nothing_forwarded();
}

/// Without `public_url` the gateway's own address comes from `Host`, on loopback names only,
/// and only with the port the listener has: any other port is the caller's word and is never
/// handed back (metadata, `WWW-Authenticate`, `mcp.url` in answers).
#[tokio::test]
async fn a_host_port_other_than_the_listeners_is_never_reflected() {
    let h = Harness::start().await;
    let port = h.addr.port();
    let get_meta = |host: String| {
        let req = Request::builder()
            .method(Method::GET)
            .uri(h.url("/.well-known/oauth-protected-resource"))
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .unwrap();
        h.raw(req)
    };
    for host in [
        "localhost:99999",
        "127.0.0.1:1",
        "localhost:",
        "localhost:0",
    ] {
        let r = get_meta(host.to_owned()).await;
        assert_ne!(r.status, StatusCode::OK, "{host}: {}", r.text());
        assert!(!r.text().contains(host), "{host}: {}", r.text());
        let r = post_raw(
            &h,
            "/mcp",
            None,
            &[("host", host)],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{host}");
        let www = r
            .headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        assert!(!www.contains("resource_metadata"), "{host}: {www}");
    }
    // The listener's own port, and a loopback name without one, still work.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let r = get_meta(host.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{host}");
        assert_eq!(r.json()["resource"], format!("http://{host}"));
    }
    assert_eq!(get_meta("localhost".into()).await.status, StatusCode::OK);
    // A session's `mcp.url` is never built on a foreign port either.
    let r = h
        .raw(
            Request::builder()
                .method(Method::POST)
                .uri(h.url("/api/v3.1/tool_router/session"))
                .header("host", "localhost:99999")
                .header("x-api-key", token("alice"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(r#"{"user_id":"alice"}"#)))
                .unwrap(),
        )
        .await;
    assert!(!r.text().contains("99999"), "{}", r.text());
}

#[tokio::test]
async fn configured_authorization_servers_are_published() {
    let h =
        Harness::with_config("[mcp]\nauthorization_servers = [\"https://login.example\"]\n").await;
    let r = h
        .send(
            Method::GET,
            "/.well-known/oauth-protected-resource/mcp",
            None,
            None,
        )
        .await;
    assert_eq!(
        r.json()["authorization_servers"],
        json!(["https://login.example"])
    );
    assert_eq!(r.json()["resource"], format!("http://{}/mcp", h.addr));
}

#[tokio::test]
async fn a_token_in_the_query_is_refused_even_beside_a_valid_header() {
    let h = Harness::start().await;
    let t = token("alice");
    for q in [
        "access_token",
        "token",
        "api_key",
        "x-api-key",
        "Access-Token",
    ] {
        let path = format!("/v3/mcp/mcp_1?user_id=alice&{q}={t}");
        let r = post_raw(
            &h,
            &path,
            Some(&t),
            &[],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.slug(), "query_not_allowed");
    }
    h.assert_nothing_forwarded();
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_anything_else() {
    let h = Harness::with_config("[mcp]\nallowed_origins = [\"https://app.example\"]\n").await;
    let t = token("alice");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1",
        Some(&t),
        &[("origin", "https://evil.example")],
        ping,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.slug(), "origin_not_allowed");
    h.assert_nothing_forwarded();
    let own = format!("http://{}", h.addr);
    for origin in ["https://app.example", own.as_str()] {
        let r = post_raw(&h, "/v3/mcp/mcp_1", Some(&t), &[("origin", origin)], ping).await;
        assert_ne!(r.status, StatusCode::FORBIDDEN, "{origin}: {}", r.text());
    }
    // DNS rebinding: a page on evil.example whose name now resolves to the gateway sends a
    // matching Host and Origin. Only loopback names count as the gateway's own.
    let port = h.addr.port();
    let evil = format!("http://evil.example:{port}");
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1",
        Some(&t),
        &[
            ("origin", evil.as_str()),
            ("host", &format!("evil.example:{port}")),
        ],
        ping,
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(mcp_requests(&h, "/v3/mcp").len(), 2);
}

#[test]
fn public_url_is_required_on_a_non_loopback_listener() {
    let base = config_toml("127.0.0.1:9".parse().unwrap(), "");
    let open = base.replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    let err = entitygate::Config::from_toml(&open)
        .unwrap()
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("public_url"), "{err}");
    let fixed = format!("public_url = \"https://gw.example\"\n{open}");
    entitygate::Config::from_toml(&fixed)
        .unwrap()
        .validate()
        .unwrap();
    let bad = format!("public_url = \"ftp://gw.example\"\n{open}");
    assert!(entitygate::Config::from_toml(&bad)
        .unwrap()
        .validate()
        .is_err());
}

// --- MCP URLs in REST answers ---

#[tokio::test]
async fn session_answers_carry_the_gateway_mcp_url() {
    let h = Harness::start().await;
    let (id, created) = session_for(&h, "alice").await;
    let want = format!("http://{}/tool_router/{id}/mcp", h.addr);
    assert_eq!(created["mcp"]["url"], want);
    let got = h
        .send(
            Method::GET,
            &format!("/api/v3.1/tool_router/session/{id}"),
            Some(&token("alice")),
            None,
        )
        .await;
    assert_eq!(got.json()["mcp"]["url"], want, "{}", got.text());
    assert!(!got.text().contains(&h.upstream_addr().to_string()));
}

#[tokio::test]
async fn public_url_is_the_origin_of_rewritten_urls() {
    let sandbox = entitygate::sandbox::Sandbox::with_demo_data(API_KEY);
    let h = Harness::with_top(sandbox, "public_url = \"https://gw.example/\"", "").await;
    let (id, created) = session_for(&h, "alice").await;
    assert_eq!(
        created["mcp"]["url"],
        format!("https://gw.example/tool_router/{id}/mcp")
    );
}

#[tokio::test]
async fn mcp_server_urls_point_at_the_gateway_with_the_subject() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/mcp/servers/generate",
            Some(&token("alice")),
            Some(json!({"mcp_server_id": "mcp_1", "user_ids": ["bob"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let text = r.text();
    assert!(!text.contains(&h.upstream_addr().to_string()), "{text}");
    assert!(!text.contains("bob"), "{text}");
    let url = r.json()["mcp_url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://{}/v3/mcp/mcp_1", h.addr)),
        "{url}"
    );
    for u in r.json()["user_ids_url"].as_array().unwrap() {
        assert!(u.as_str().unwrap().ends_with("user_id=alice"), "{u}");
    }
    let cfg = h
        .send(
            Method::GET,
            "/api/v3.1/mcp/mcp_1",
            Some(&token("alice")),
            None,
        )
        .await;
    assert!(
        !cfg.text().contains(&h.upstream_addr().to_string()),
        "{}",
        cfg.text()
    );
}

// --- ownership: sessions, users, accounts ---

#[tokio::test]
async fn another_users_session_is_refused_and_nothing_reaches_its_endpoint() {
    let h = Harness::start().await;
    let (id, _) = session_for(&h, "alice").await;
    let path = format!("/tool_router/{id}/mcp");
    for method in ["tools/list", "initialize"] {
        let r = call(
            &h,
            &path,
            "bob",
            json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    }
    let r = post_raw(
        &h,
        "/tool_router/trs_doesnotexist/mcp",
        Some(&token("bob")),
        &[],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(mcp_requests(&h, "/tool_router/").is_empty());
}

#[tokio::test]
async fn a_forged_user_id_is_pinned_and_only_the_real_key_goes_upstream() {
    let h = Harness::start().await;
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1?user_id=bob&user_id=carol&userId=bob",
        Some(&token("alice")),
        &[("authorization", &format!("Bearer {}", token("alice")))],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#,
    )
    .await;
    let seen = mcp_requests(&h, "/v3/mcp/mcp_1");
    assert_eq!(seen.len(), 1, "{}", r.text());
    assert_eq!(
        seen[0].query_pairs(),
        vec![("user_id".to_owned(), "alice".to_owned())]
    );
    assert_only_real_key(&seen[0]);
}

#[tokio::test]
async fn bracketed_identity_and_foreign_accounts_on_server_urls_are_refused() {
    let h = Harness::start().await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let t = token("alice");
    let r = post_raw(&h, "/v3/mcp/mcp_1?user_id[]=bob", Some(&t), &[], ping).await;
    assert_eq!(r.slug(), "query_not_allowed");
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1?connected_account_id=ca_bob_github",
        Some(&t),
        &[],
        ping,
    )
    .await;
    assert_eq!(r.slug(), "connected_account_not_owned");
    let r = post_raw(&h, "/api/v3.1/mcp/servers", Some(&t), &[], ping).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
    assert!(mcp_requests(&h, "/api/v3.1/mcp").is_empty());
}

// --- strict JSON-RPC ---

#[tokio::test]
async fn strict_parsing_refuses_what_a_server_could_read_differently() {
    let h = Harness::start().await;
    let t = token("alice");
    let path = "/v3/mcp/mcp_1";
    let cases = [
        // duplicate and case-variant keys
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call","params":{"name":"GMAIL_SEND_EMAIL"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"SLACK_SEND_MESSAGE","name":"GMAIL_SEND_EMAIL"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"SLACK_SEND_MESSAGE","Name":"GMAIL_SEND_EMAIL"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"SLACK_SEND_MESSAGE","arguments":{"a":1,"a":2}}}"#,
        // not one message
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"} {"jsonrpc":"2.0","id":2,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"X","arguments":"{}"}}"#,
    ];
    for body in cases {
        let r = post_raw(&h, path, Some(&t), &[], body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
        assert!(
            r.json()["error"]["code"].as_i64().unwrap() <= -32600,
            "{}",
            r.text()
        );
    }
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
}

#[tokio::test]
async fn content_type_spellings() {
    let h = Harness::start().await;
    let t = token("alice");
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    for ct in [
        "text/plain",
        "application/json-rpc",
        "application/x-www-form-urlencoded",
        "",
    ] {
        let r = post_raw(&h, "/v3/mcp/mcp_1", Some(&t), &[("content-type", ct)], ping).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
    }
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
    // The media type is case-insensitive and may carry parameters; what is parsed is the same.
    for ct in ["Application/JSON", "application/json; charset=UTF-8"] {
        let r = post_raw(&h, "/v3/mcp/mcp_1", Some(&t), &[("content-type", ct)], ping).await;
        assert_ne!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}");
    }
}

#[tokio::test]
async fn headers_that_disagree_with_the_body_are_refused_with_32020() {
    let h = Harness::start().await;
    let t = token("alice");
    let body = tool_call(1, "GMAIL_SEND_EMAIL", json!({})).to_string();
    for hs in [
        vec![
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/list"),
        ],
        vec![
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/call"),
            ("mcp-name", "SLACK_SEND_MESSAGE"),
        ],
        vec![
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/call"),
        ],
        vec![("mcp-method", "ping")],
    ] {
        let r = post_raw(&h, "/v3/mcp/mcp_1", Some(&t), &hs, &body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hs:?}");
        assert_eq!(r.json()["error"]["code"], -32020, "{hs:?}: {}", r.text());
    }
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
}

#[tokio::test]
async fn batches_only_where_the_protocol_allows_and_each_element_decided() {
    let audit = std::env::temp_dir().join(format!("eg-mcp-batch-{}.jsonl", uuid_like()));
    let h = Harness::with_config(&format!(
        "[[policy.rules]]\nname = \"no-mail\"\ndeny_toolkits = [\"gmail\"]\n[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    let t = token("alice");
    let sid = initialize(&h, "/v3/mcp/mcp_1", "alice", "2025-03-26").await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        tool_call(2, "GMAIL_SEND_EMAIL", json!({"to": "x"})),
    ])
    .to_string();
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1",
        Some(&t),
        &[("mcp-protocol-version", STATEFUL)],
        &batch,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(mcp_requests(&h, "/v3/mcp").len(), 1, "only the initialize");
    // 2025-03-26 had batches: the denied call is answered by the gateway, only the rest goes on.
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1",
        Some(&t),
        &[
            ("mcp-protocol-version", "2025-03-26"),
            ("mcp-session-id", &sid),
        ],
        &batch,
    )
    .await;
    let seen = mcp_requests(&h, "/v3/mcp");
    assert_eq!(seen.len(), 2, "{}", r.text());
    let forwarded = seen[1].json().unwrap();
    assert_eq!(forwarded.as_array().unwrap().len(), 1, "{forwarded}");
    assert_eq!(forwarded[0]["method"], "ping");
    let answers = r.json();
    let refused = answers
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == 2)
        .unwrap_or_else(|| panic!("{answers}"));
    assert_eq!(refused["result"]["isError"], true);
    // The element's own audit line names the same caller as its request's (issue 30).
    let mut element = None;
    for _ in 0..100 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        element = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["policy"] == "mcp_tool_call");
        if element.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let element = element.expect("the refused element is audited");
    assert_eq!(element["decision"], "tool_not_allowed", "{element}");
    assert_eq!(element["issuer"], ISSUER, "{element}");
    assert!(
        element["source"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{element}"
    );
    assert_eq!(
        element["trace_id"].as_str().map(str::len),
        Some(32),
        "{element}"
    );
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test]
async fn unknown_methods_are_answered_by_the_gateway() {
    let h = Harness::start().await;
    let r = call(
        &h,
        "/v3/mcp/mcp_1",
        "alice",
        json!({"jsonrpc": "2.0", "id": 9, "method": "admin/exec", "params": {}}),
    )
    .await;
    assert_eq!(r.json()["error"]["code"], -32601, "{}", r.text());
    assert_eq!(r.json()["id"], 9);
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
}

// --- tools/call: the one decision ---

#[tokio::test]
async fn a_denied_tool_is_an_error_result_with_the_rest_message() {
    let h =
        Harness::with_config("[[policy.rules]]\nname = \"no-mail\"\ndeny_toolkits = [\"gmail\"]\n")
            .await;
    let r = call(
        &h,
        "/v3/mcp/mcp_1",
        "alice",
        tool_call(1, "GMAIL_SEND_EMAIL", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let res = &r.json()["result"];
    assert_eq!(res["isError"], true, "{}", r.text());
    let rest = h
        .execute("alice", "GMAIL_SEND_EMAIL", json!({"arguments": {}}))
        .await;
    assert_eq!(res["content"][0]["text"], rest.json()["error"]["message"]);
    assert_eq!(
        res["structuredContent"]["error"]["slug"],
        "tool_not_allowed"
    );
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
    h.assert_no_execution();
}

#[tokio::test]
async fn an_expired_connection_is_an_error_result_with_the_reconnect_message() {
    let h = Harness::start().await;
    let r = call(
        &h,
        "/v3/mcp/mcp_1",
        "alice",
        tool_call(3, "GMAIL_SEND_EMAIL", json!({})),
    )
    .await;
    let res = &r.json()["result"];
    assert_eq!(res["isError"], true, "{}", r.text());
    let text = res["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("Gmail") && text.contains("reconnect"),
        "{text}"
    );
    assert_eq!(
        res["structuredContent"]["error"]["slug"],
        "connection_expired"
    );
    let rest = h
        .execute("alice", "GMAIL_SEND_EMAIL", json!({"arguments": {}}))
        .await;
    assert_eq!(text, rest.json()["error"]["message"]);
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
}

#[tokio::test]
async fn meta_tools_nested_in_a_call_are_decided() {
    let h = Harness::start().await;
    let (id, _) = session_for(&h, "alice").await;
    let path = format!("/tool_router/{id}/mcp");
    let nested = tool_call(
        1,
        "COMPOSIO_MULTI_EXECUTE_TOOL",
        json!({"tools": [
            {"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}},
            {"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [
                {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}}]}}]}),
    );
    let r = call(&h, &path, "alice", nested).await;
    assert_eq!(r.json()["result"]["isError"], true, "{}", r.text());
    let code = tool_call(2, "COMPOSIO_REMOTE_WORKBENCH", json!({"code": "print(1)"}));
    let r = call(&h, &path, "alice", code).await;
    assert_eq!(r.json()["result"]["isError"], true, "{}", r.text());
    assert!(mcp_requests(&h, "/tool_router/").is_empty());
}

#[tokio::test]
async fn an_account_id_in_tool_arguments_must_be_the_subjects() {
    let h = Harness::start().await;
    for key in ["connected_account_id", "connectedAccountId"] {
        let msg = tool_call(
            1,
            "GITHUB_CREATE_ISSUE",
            json!({key: "ca_bob_github", "title": "x"}),
        );
        let r = call(&h, "/v3/mcp/mcp_1", "alice", msg).await;
        let res = &r.json()["result"];
        assert_eq!(res["isError"], true, "{}", r.text());
        assert_eq!(
            res["structuredContent"]["error"]["slug"],
            "connected_account_not_owned",
            "{}",
            r.text()
        );
    }
    assert!(mcp_requests(&h, "/v3/mcp").is_empty());
}

#[tokio::test]
async fn a_refused_call_is_audited_like_a_rest_execution() {
    let audit = std::env::temp_dir().join(format!("eg-mcp-audit-{}.jsonl", uuid_like()));
    let h = Harness::with_config(&format!(
        "[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    let (id, _) = session_for(&h, "alice").await;
    let path = format!("/tool_router/{id}/mcp");
    call(
        &h,
        &path,
        "alice",
        tool_call(1, "GMAIL_SEND_EMAIL", json!({})),
    )
    .await;
    let mut line = None;
    for _ in 0..50 {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        line = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["policy"] == "mcp");
        if line.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&audit);
    let line = line.expect("an audit line for the MCP call");
    assert_eq!(line["subject"], "alice");
    assert_eq!(line["tool"], "GMAIL_SEND_EMAIL");
    assert_eq!(line["toolkit"], "gmail");
    assert_eq!(line["decision"], "connection_expired");
    assert_eq!(line["session"], id.as_str());
}

// --- the front door ---

#[tokio::test]
async fn the_front_door_is_off_unless_configured() {
    let h = Harness::start().await;
    let r = call(
        &h,
        "/mcp",
        "alice",
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    h.assert_nothing_forwarded();
}

#[tokio::test]
async fn the_front_door_creates_one_session_per_subject_with_the_permitted_toolkits() {
    let h = Harness::with_config(
        "[mcp]\nfront_door = true\n[mcp.session]\nmanage_connections = { enable = false }\n\
         [[policy.rules]]\nname = \"only-github\"\nallow_toolkits = [\"github\"]\n",
    )
    .await;
    for _ in 0..3 {
        call(
            &h,
            "/mcp",
            "alice",
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        )
        .await;
    }
    let created = mcp_requests(&h, "/api/v3.1/tool_router/session");
    let creates: Vec<_> = created.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(creates.len(), 1);
    let body = creates[0].json().unwrap();
    assert_eq!(body["user_id"], "alice");
    assert_eq!(body["toolkits"], json!({"enable": ["github"]}));
    assert_eq!(body["manage_connections"], json!({"enable": false}));
    let served: Vec<String> = mcp_requests(&h, "/tool_router/")
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert_eq!(served.len(), 3, "{served:?}");
    assert!(served.iter().all(|p| *p == served[0]), "{served:?}");
    let sid = served[0].split('/').nth(2).unwrap().to_owned();
    assert_eq!(h.sandbox.session_user(&sid).as_deref(), Some("alice"));
    // Another subject gets its own session.
    call(
        &h,
        "/mcp",
        "bob",
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    )
    .await;
    let bob: Vec<String> = mcp_requests(&h, "/tool_router/")
        .into_iter()
        .map(|r| r.path)
        .filter(|p| *p != served[0])
        .collect();
    assert_eq!(bob.len(), 1);
    let bob_sid = bob[0].split('/').nth(2).unwrap().to_owned();
    assert_eq!(h.sandbox.session_user(&bob_sid).as_deref(), Some("bob"));
}

// --- end to end against the sandbox's hosted MCP endpoints ---

/// `initialize` on the older stateful transport; answers the `Mcp-Session-Id`.
async fn initialize(h: &Harness, path: &str, user: &str, version: &str) -> String {
    let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": version, "capabilities": {},
        "clientInfo": {"name": "entitygate-test", "version": "1"}}});
    let r = post_raw(h, path, Some(&token(user)), &[], &body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        r.mcp_message()["result"]["protocolVersion"].is_string(),
        "{}",
        r.text()
    );
    r.headers["mcp-session-id"].to_str().unwrap().to_owned()
}

/// A stateful POST inside MCP session `sid`.
async fn stateful(
    h: &Harness,
    path: &str,
    user: &str,
    sid: &str,
    version: &str,
    msg: &Value,
) -> Reply {
    post_raw(
        h,
        path,
        Some(&token(user)),
        &[("mcp-session-id", sid), ("mcp-protocol-version", version)],
        &msg.to_string(),
    )
    .await
}

fn tool_names(v: &Value) -> Vec<String> {
    v["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn mail_and_github() -> Harness {
    let sandbox = entitygate::sandbox::Sandbox::with_demo_data(API_KEY);
    sandbox.add_mcp_server("mcp_mix", "mix", &["github", "gmail"], &[]);
    Harness::with(
        sandbox,
        "[[policy.rules]]\nname = \"no-mail\"\ndeny_toolkits = [\"gmail\"]\n",
    )
    .await
}

#[tokio::test]
async fn stateful_client_lists_filtered_tools_and_runs_an_allowed_one_as_the_subject() {
    let h = mail_and_github().await;
    let path = "/v3/mcp/mcp_mix?user_id=bob";
    let sid = initialize(&h, path, "alice", STATEFUL).await;
    let list = stateful(
        &h,
        path,
        "alice",
        &sid,
        STATEFUL,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    let names = tool_names(&list.mcp_message());
    assert!(names.iter().any(|n| n.starts_with("GITHUB_")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("GMAIL_")), "{names:?}");
    let r = stateful(
        &h,
        path,
        "alice",
        &sid,
        STATEFUL,
        &tool_call(2, "GITHUB_GET_THE_AUTHENTICATED_USER", json!({})),
    )
    .await;
    let res = r.mcp_message();
    assert_eq!(res["result"]["isError"], false, "{}", r.text());
    for seen in mcp_requests(&h, "/v3/mcp/mcp_mix") {
        assert_eq!(seen.query_param("user_id").as_deref(), Some("alice"));
        assert_only_real_key(&seen);
    }
    // Ending the session is relayed too.
    let del = h
        .raw(
            Request::builder()
                .method(Method::DELETE)
                .uri(h.url(path))
                .header("x-api-key", token("alice"))
                .header("mcp-session-id", &sid)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(del.status.is_success(), "{}", del.text());
    assert_eq!(h.sandbox.mcp_stats().sessions, 0);
}

#[tokio::test]
async fn stateless_2026_client_runs_tools_and_gets_filtered_lists() {
    let h = mail_and_github().await;
    let path = "/v3/mcp/mcp_mix";
    let list = call(
        &h,
        path,
        "alice",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    let names = tool_names(&list.mcp_message());
    assert!(
        !names.is_empty() && !names.iter().any(|n| n.starts_with("GMAIL_")),
        "{names:?}"
    );
    let r = call(
        &h,
        path,
        "alice",
        tool_call(2, "GITHUB_GET_THE_AUTHENTICATED_USER", json!({})),
    )
    .await;
    assert_eq!(r.mcp_message()["result"]["isError"], false, "{}", r.text());
    let seen = mcp_requests(&h, "/v3/mcp/mcp_mix");
    assert_eq!(
        seen.last().unwrap().header("mcp-method"),
        Some("tools/call")
    );
    assert_eq!(
        seen.last().unwrap().header("mcp-name"),
        Some("GITHUB_GET_THE_AUTHENTICATED_USER")
    );
}

#[tokio::test]
async fn sse_answers_are_inspected_event_by_event() {
    let h = mail_and_github().await;
    h.sandbox.set_mcp_config(entitygate::sandbox::McpConfig {
        answer: entitygate::sandbox::McpAnswer::Sse,
        ..Default::default()
    });
    let list = call(
        &h,
        "/v3/mcp/mcp_mix",
        "alice",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    assert!(list.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let names = tool_names(&list.mcp_message());
    assert!(
        names.iter().any(|n| n.starts_with("GITHUB_")),
        "{}",
        list.text()
    );
    assert!(!list.text().contains("GMAIL_"), "{}", list.text());
}

#[tokio::test]
async fn session_tools_list_hides_the_code_tools_and_calls_run_in_the_session() {
    let h = Harness::start().await;
    let (id, created) = session_for(&h, "alice").await;
    let path = format!("/tool_router/{id}/mcp");
    assert_eq!(created["mcp"]["url"], h.url(&path));
    let list = call(
        &h,
        &path,
        "alice",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    let names = tool_names(&list.mcp_message());
    assert!(
        names.iter().any(|n| n == "COMPOSIO_SEARCH_TOOLS"),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| entitygate::toolpolicy::is_code_tool(n)),
        "{names:?}"
    );
    let r = call(
        &h,
        &path,
        "alice",
        tool_call(
            2,
            "COMPOSIO_SEARCH_TOOLS",
            json!({"queries": [{"use_case": "star a repo"}]}),
        ),
    )
    .await;
    assert_eq!(r.mcp_message()["result"]["isError"], false, "{}", r.text());
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_upstream_call() {
    let h = Harness::start().await;
    h.sandbox.set_mcp_config(entitygate::sandbox::McpConfig {
        answer: entitygate::sandbox::McpAnswer::Sse,
        ..Default::default()
    });
    let mut msg = tool_call(
        1,
        "GITHUB_GET_THE_AUTHENTICATED_USER",
        json!({"sandbox_delay_ms": 20000}),
    );
    msg["params"]["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": STATELESS});
    let req = Request::builder()
        .method(Method::POST)
        .uri(h.url("/v3/mcp/mcp_1"))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "tools/call")
        .header("mcp-name", "GITHUB_GET_THE_AUTHENTICATED_USER")
        .body(Full::new(Bytes::from(msg.to_string())))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let _first = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    assert_eq!(h.sandbox.mcp_stats().open_streams, 1);
    drop(body);
    drop(client);
    let mut cancelled = false;
    for _ in 0..100 {
        let s = h.sandbox.mcp_stats();
        if s.cancelled == 1 && s.open_streams == 0 {
            cancelled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cancelled, "{:?}", h.sandbox.mcp_stats());
    assert_eq!(h.sandbox.mcp_stats().tool_calls, 0);
}

#[tokio::test]
async fn a_silent_stream_ends_at_the_mcp_idle_timeout() {
    let h = Harness::with_config("[mcp]\nstream_idle_timeout_secs = 1\n").await;
    h.sandbox.set_mcp_config(entitygate::sandbox::McpConfig {
        answer: entitygate::sandbox::McpAnswer::Sse,
        keepalive: Duration::from_secs(30),
        ..Default::default()
    });
    let path = "/v3/mcp/mcp_1";
    let sid = initialize(&h, path, "alice", STATEFUL).await;
    let req = Request::builder()
        .method(Method::GET)
        .uri(h.url(path))
        .header("x-api-key", token("alice"))
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", STATEFUL)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), h.raw(req))
        .await
        .expect("the idle timeout ends the stream");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
}

#[tokio::test]
async fn the_front_door_serves_the_subjects_own_session() {
    let h = Harness::with_config("[mcp]\nfront_door = true\n").await;
    let list = call(
        &h,
        "/mcp",
        "alice",
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}),
    )
    .await;
    let names = tool_names(&list.mcp_message());
    assert!(
        names.iter().any(|n| n == "COMPOSIO_MULTI_EXECUTE_TOOL"),
        "{}",
        list.text()
    );
    let r = call(
        &h,
        "/mcp",
        "alice",
        tool_call(
            2,
            "COMPOSIO_MULTI_EXECUTE_TOOL",
            json!({"tools": [{"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}}]}),
        ),
    )
    .await;
    assert_eq!(r.mcp_message()["result"]["isError"], true, "{}", r.text());
    assert_eq!(h.sandbox.mcp_stats().tool_calls, 0);
}

/// A stateful session id is bound to the subject it was issued to: another user holding it
/// (leaked from a log, a shared proxy) is answered 404 and nothing goes upstream; Composio's
/// own id, without the gateway's tag, is refused the same way.
#[tokio::test]
async fn a_session_id_works_only_for_the_subject_it_was_issued_to() {
    let h = mail_and_github().await;
    let path = "/v3/mcp/mcp_mix";
    let sid = initialize(&h, path, "alice", STATEFUL).await;
    let (upstream_sid, _) = sid.rsplit_once('.').expect("a bound id");
    let seen: Vec<_> = mcp_requests(&h, path)
        .into_iter()
        .filter_map(|r| r.header("mcp-session-id").map(str::to_owned))
        .collect();
    assert!(
        seen.is_empty(),
        "initialize carries no session id: {seen:?}"
    );
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let before = mcp_requests(&h, path).len();
    for (user, id) in [("bob", sid.as_str()), ("alice", upstream_sid)] {
        let r = stateful(&h, path, user, id, STATEFUL, &list).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{user}: {}", r.text());
    }
    let get = h
        .raw(
            Request::builder()
                .method(Method::GET)
                .uri(h.url(path))
                .header("x-api-key", token("bob"))
                .header("accept", "text/event-stream")
                .header("mcp-session-id", &sid)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(get.status, StatusCode::NOT_FOUND, "{}", get.text());
    assert_eq!(
        mcp_requests(&h, path).len(),
        before,
        "nothing reached upstream"
    );
    // The owner's requests carry Composio's own id upstream.
    let r = stateful(&h, path, "alice", &sid, STATEFUL, &list).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let last = mcp_requests(&h, path).pop().unwrap();
    assert_eq!(last.header("mcp-session-id"), Some(upstream_sid));
}

/// MCP goes upstream through the one upstream request every carrier uses: the caller's trace
/// reaches Composio's MCP endpoint as it reaches a REST execution (the MCP path used to
/// build its own request and dropped it).
#[tokio::test]
async fn the_callers_trace_reaches_composios_mcp_endpoint() {
    let h = Harness::start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = format!("00-{trace}-00f067aa0ba902b7-01");
    let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": STATELESS}}});
    let r = post_raw(
        &h,
        "/v3/mcp/mcp_1",
        Some(&token("alice")),
        &[
            ("mcp-protocol-version", STATELESS),
            ("mcp-method", "tools/list"),
            ("traceparent", caller.as_str()),
        ],
        &msg.to_string(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = mcp_requests(&h, "/v3/mcp");
    assert_eq!(sent.len(), 1);
    let tp = sent[0].header("traceparent").unwrap_or_default().to_owned();
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "the gateway's span: {tp}");
    h.shutdown().await;
}
