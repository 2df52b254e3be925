//! Tests of the sandbox's hosted MCP endpoints: raw JSON-RPC over real sockets.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ::http::{HeaderMap, Method, Request};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const KEY: &str = "sbx_mcp_key";
const ACCEPT_BOTH: (&str, &str) = ("accept", "application/json, text/event-stream");

struct Mcp {
    addr: SocketAddr,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn ctype(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn session_id(&self) -> String {
        self.headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .expect("an Mcp-Session-Id header")
            .to_owned()
    }

    /// The JSON-RPC message(s) of the answer, whichever the mode: the last SSE event, or the
    /// JSON body.
    fn message(&self) -> Value {
        if self.ctype().starts_with("text/event-stream") {
            sse_messages(&self.body).pop().expect("an SSE message")
        } else {
            self.json()
        }
    }
}

fn sse_messages(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

impl Mcp {
    async fn start(sandbox: &Sandbox) -> Self {
        Self {
            addr: sandbox.start().await.unwrap(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(format!("http://{}{path}", self.addr));
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// POSTs a JSON-RPC message with the key, JSON content type, both Accept types and
    /// `extra` headers.
    async fn post(&self, path: &str, extra: &[(&str, &str)], msg: &Value) -> Resp {
        let mut headers = vec![
            ("x-api-key", KEY),
            ("content-type", "application/json"),
            ACCEPT_BOTH,
        ];
        headers.extend_from_slice(extra);
        self.send("POST", path, &headers, &serde_json::to_vec(msg).unwrap())
            .await
    }

    /// `initialize` at `version`; answers the session id.
    async fn initialize(&self, path: &str, version: &str) -> String {
        let r = self
            .post(
                path,
                &[],
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": version, "capabilities": {},
                    "clientInfo": {"name": "raw-test", "version": "1"}}}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(r.message()["result"]["protocolVersion"], version);
        let sid = r.session_id();
        let n = self
            .post(
                path,
                &[("mcp-session-id", &sid), ("mcp-protocol-version", version)],
                &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            )
            .await;
        assert_eq!(n.status, 202);
        assert!(n.body.is_empty());
        sid
    }

    /// Creates a tool-router session for `user` with `toolkits` over REST; answers its MCP
    /// path.
    async fn session(&self, user: &str, toolkits: &[&str]) -> String {
        let r = self
            .send(
                "POST",
                "/api/v3.1/tool_router/session",
                &[("x-api-key", KEY), ("content-type", "application/json")],
                &serde_json::to_vec(&json!({"user_id": user, "toolkits": {"enable": toolkits}}))
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 201);
        let url = r.json()["mcp"]["url"].as_str().unwrap().to_owned();
        let path = url
            .strip_prefix(&format!("http://{}", self.addr))
            .unwrap()
            .to_owned();
        assert!(path.starts_with("/tool_router/trs_") && path.ends_with("/mcp"));
        path
    }
}

fn call(id: u64, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": name, "arguments": arguments}})
}

fn tool_names(result: &Value) -> Vec<String> {
    result["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The stateless request headers for `msg`.
fn modern(msg: &mut Value) -> Vec<(String, String)> {
    msg["params"]["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut h = vec![
        ("mcp-protocol-version".to_owned(), MODERN_VERSION.to_owned()),
        (
            "mcp-method".to_owned(),
            msg["method"].as_str().unwrap().to_owned(),
        ),
    ];
    if let Some(name) = msg["params"]["name"].as_str() {
        h.push(("mcp-name".to_owned(), name.to_owned()));
    }
    h
}

fn refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

#[tokio::test]
async fn a_session_endpoint_serves_meta_tools_as_the_sessions_user() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github", "gmail"]).await;
    let sid = api.initialize(&path, "2025-06-18").await;
    let h = [
        ("mcp-session-id", sid.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];

    let list = api
        .post(
            &path,
            &h,
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(list.status, 200);
    assert!(list.ctype().starts_with("application/json"));
    let names = tool_names(&list.json()["result"]);
    assert_eq!(
        names,
        [
            "COMPOSIO_SEARCH_TOOLS",
            "COMPOSIO_MULTI_EXECUTE_TOOL",
            "COMPOSIO_MANAGE_CONNECTIONS",
            "COMPOSIO_GET_TOOL_SCHEMAS"
        ]
    );

    // A meta tool runs its inner tools as the session's user, with the user's account.
    let multi = api
        .post(
            &path,
            &h,
            &call(
                2,
                "COMPOSIO_MULTI_EXECUTE_TOOL",
                json!({"tools": [
                    {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"owner": "o", "repo": "r", "title": "t"}},
                    {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}},
                ]}),
            ),
        )
        .await;
    let result = &multi.json()["result"];
    assert_eq!(result["isError"], false);
    let results = &result["structuredContent"]["data"]["results"];
    assert_eq!(results[0]["successful"], true);
    assert_eq!(results[0]["data"]["user_id"], "alice");
    assert_eq!(
        results[0]["data"]["connected_account_id"],
        "ca_alice_github"
    );
    assert_eq!(results[0]["data"]["api"], "mcp");
    // alice's gmail is EXPIRED: refused per tool, as Composio does.
    assert_eq!(results[1]["successful"], false);
    assert!(results[1]["error"]
        .as_str()
        .unwrap()
        .contains("No connected account found for user alice and toolkit gmail"));
    // The text content is the same JSON.
    let text: Value = serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(&text, &result["structuredContent"]);

    // A direct call of an expired toolkit's tool is an error result with Composio's error.
    let expired = api
        .post(&path, &h, &call(3, "GMAIL_SEND_EMAIL", json!({})))
        .await;
    let result = &expired.json()["result"];
    assert_eq!(result["isError"], true);
    assert!(result["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("No connected account found for user alice and toolkit gmail"));
    assert_eq!(result["structuredContent"]["error"]["code"], 1803);

    // A toolkit the session does not enable.
    let slack = api
        .post(&path, &h, &call(4, "SLACK_SEND_MESSAGE", json!({})))
        .await;
    assert_eq!(slack.json()["result"]["isError"], true);
    assert_eq!(
        slack.json()["result"]["structuredContent"]["error"]["code"],
        1813
    );

    // Unknown tools and methods are protocol errors.
    let unknown = api.post(&path, &h, &call(5, "NOPE_TOOL", json!({}))).await;
    assert_eq!(unknown.json()["error"]["code"], -32602);
    let method = api
        .post(
            &path,
            &h,
            &json!({"jsonrpc": "2.0", "id": 6, "method": "prompts/list"}),
        )
        .await;
    assert_eq!(method.status, 200);
    assert_eq!(method.json()["error"]["code"], -32601);

    // Every message reached the sandbox with the project key, and is recorded.
    let recorded = sandbox.requests_to(&path);
    assert_eq!(recorded.len(), 8);
    assert!(recorded.iter().all(|r| r.header("x-api-key") == Some(KEY)));
    assert_eq!(sandbox.mcp_stats().tool_calls, 4);
}

#[tokio::test]
async fn stateful_sessions_are_required_bound_and_ended_by_delete() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let alice = api.session("alice", &["github"]).await;
    let bob = api.session("bob", &["github"]).await;
    let sid = api.initialize(&alice, "2025-11-25").await;
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});

    // No session id: 400; an unknown one: 404; alice's id on bob's endpoint: 404.
    assert_eq!(api.post(&alice, &[], &list).await.status, 400);
    let unknown = api
        .post(&alice, &[("mcp-session-id", "mcp-nope")], &list)
        .await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], -32001);
    assert_eq!(
        api.post(&bob, &[("mcp-session-id", &sid)], &list)
            .await
            .status,
        404
    );
    assert_eq!(
        api.post(&alice, &[("mcp-session-id", &sid)], &list)
            .await
            .status,
        200
    );

    // An unknown tool-router session is 404 before anything else.
    let gone = api.post("/tool_router/trs_missing/mcp", &[], &list).await;
    assert_eq!(gone.status, 404);

    // DELETE ends the session.
    assert_eq!(sandbox.mcp_stats().sessions, 1);
    let del = api
        .send(
            "DELETE",
            &alice,
            &[("x-api-key", KEY), ("mcp-session-id", &sid)],
            b"",
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(sandbox.mcp_stats().sessions, 0);
    assert_eq!(
        api.post(&alice, &[("mcp-session-id", &sid)], &list)
            .await
            .status,
        404
    );
    // Without a session, GET and DELETE are 405.
    for m in ["GET", "DELETE"] {
        let r = api
            .send(m, &alice, &[("x-api-key", KEY), ACCEPT_BOTH], b"")
            .await;
        assert_eq!(r.status, 405, "{m}");
    }
    assert_eq!(
        api.send("PUT", &alice, &[("x-api-key", KEY)], b"")
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn answers_are_json_or_sse_as_configured_or_asked() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;
    let sid = api.initialize(&path, "2025-06-18").await;
    let ping = json!({"jsonrpc": "2.0", "id": 7, "method": "ping"});
    let with = |mode: &str| {
        vec![
            ("mcp-session-id".to_owned(), sid.clone()),
            ("x-sandbox-mcp-answer".to_owned(), mode.to_owned()),
        ]
    };

    let h = with("sse");
    let sse = api.post(&path, &refs(&h), &ping).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.ctype(), "text/event-stream");
    assert_eq!(
        sse_messages(&sse.body),
        [json!({"jsonrpc": "2.0", "id": 7, "result": {}})]
    );

    sandbox.set_mcp_config(McpConfig {
        answer: McpAnswer::Sse,
        ..McpConfig::default()
    });
    let sid_h = [("mcp-session-id", sid.as_str())];
    let r = api.post(&path, &sid_h, &ping).await;
    assert_eq!(r.ctype(), "text/event-stream");
    let h = with("json");
    let r = api.post(&path, &refs(&h), &ping).await;
    assert_eq!(r.ctype(), "application/json");
    assert_eq!(r.json()["id"], 7);

    // An Accept naming one type gets that one; naming neither is 406.
    let body = serde_json::to_vec(&ping).unwrap();
    let base = [
        ("x-api-key", KEY),
        ("content-type", "Application/JSON; charset=utf-8"),
        ("mcp-session-id", sid.as_str()),
    ];
    let mut only_json = base.to_vec();
    only_json.push(("accept", "application/json"));
    assert_eq!(
        api.send("POST", &path, &only_json, &body).await.ctype(),
        "application/json"
    );
    let mut html = base.to_vec();
    html.push(("accept", "text/html"));
    assert_eq!(api.send("POST", &path, &html, &body).await.status, 406);
    // Only JSON bodies are accepted.
    let text = [
        ("x-api-key", KEY),
        ("content-type", "text/plain"),
        ACCEPT_BOTH,
        ("mcp-session-id", sid.as_str()),
    ];
    assert_eq!(api.send("POST", &path, &text, &body).await.status, 415);
    let garbage = api
        .send(
            "POST",
            &path,
            &[
                ("x-api-key", KEY),
                ("content-type", "application/json"),
                ACCEPT_BOTH,
            ],
            b"{not json",
        )
        .await;
    assert_eq!(garbage.status, 400);
    assert_eq!(garbage.json()["error"]["code"], -32700);
}

#[tokio::test]
async fn the_stateless_revision_checks_its_headers_against_the_body() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;

    let mut discover =
        json!({"jsonrpc": "2.0", "id": "d", "method": "server/discover", "params": {}});
    let h = modern(&mut discover);
    let r = api.post(&path, &refs(&h), &discover).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.headers.get("mcp-session-id").is_none());
    let result = &r.json()["result"];
    assert_eq!(result["supportedVersions"], json!([MODERN_VERSION]));
    assert_eq!(result["resultType"], "complete");

    let mut c = call(
        1,
        "COMPOSIO_MULTI_EXECUTE_TOOL",
        json!({"tools": [
        {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"owner": "o", "repo": "r", "title": "t"}}]}),
    );
    let h = modern(&mut c);
    let ok = api.post(&path, &refs(&h), &c).await;
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.json()["result"]["structuredContent"]["data"]["results"][0]["data"]["user_id"],
        "alice"
    );

    // Mcp-Name in the Base64 sentinel form is decoded before comparing.
    let mut h64 = h.clone();
    h64[2].1 = "=?base64?Q09NUE9TSU9fTVVMVElfRVhFQ1VURV9UT09M?=".into();
    assert_eq!(api.post(&path, &refs(&h64), &c).await.status, 200);

    // Every disagreement is 400 with HeaderMismatch, and nothing runs.
    let calls = sandbox.mcp_stats().tool_calls;
    let mut cases: Vec<Vec<(String, String)>> = Vec::new();
    let mut name = h.clone();
    name[2].1 = "GITHUB_CREATE_ISSUE".into();
    cases.push(name);
    let mut method = h.clone();
    method[1].1 = "tools/list".into();
    cases.push(method);
    cases.push(h[..2].to_vec()); // no Mcp-Name
    cases.push(h[1..].to_vec()); // no MCP-Protocol-Version (the body says 2026-07-28)
    let mut version = h.clone();
    version[0].1 = "2025-11-25".into();
    cases.push(version);
    for case in &cases {
        let r = api.post(&path, &refs(case), &c).await;
        assert_eq!(r.status, 400, "{case:?}");
        assert_eq!(r.json()["error"]["code"], -32020, "{case:?}");
    }
    assert_eq!(sandbox.mcp_stats().tool_calls, calls);

    // Unknown method: 404 with -32601; unknown version: 400 with -32022; batches: 400.
    let mut nope = json!({"jsonrpc": "2.0", "id": 2, "method": "nope/nope", "params": {}});
    let h = modern(&mut nope);
    let r = api.post(&path, &refs(&h), &nope).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!(-32601))
    );
    let r = api
        .post(&path, &[("mcp-protocol-version", "1999-01-01")], &nope)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32022);
    assert_eq!(r.json()["error"]["data"]["requested"], "1999-01-01");
    let r = api
        .post(&path, &refs(&h), &json!([nope.clone(), nope.clone()]))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(sandbox.mcp_stats().sessions, 0);
}

#[tokio::test]
async fn server_urls_run_as_the_query_user_or_account() {
    let sandbox = Sandbox::with_demo_data(KEY);
    sandbox.add_mcp_server("mcp_ws", "workspace", &["github", "gmail", "slack"], &[]);
    let api = Mcp::start(&sandbox).await;

    // mcp_1 serves its allowed GitHub tools only.
    let sid = api
        .initialize("/v3/mcp/mcp_1?user_id=alice", "2025-06-18")
        .await;
    let list = api
        .post(
            "/v3/mcp/mcp_1?user_id=alice",
            &[("mcp-session-id", &sid)],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    let mut names = tool_names(&list.json()["result"]);
    names.sort();
    assert_eq!(
        names,
        ["GITHUB_CREATE_ISSUE", "GITHUB_GET_THE_AUTHENTICATED_USER"]
    );

    // Stateless calls, each user by query.
    let run = |query: &'static str, tool: &'static str| {
        let api = &api;
        async move {
            let mut c = call(1, tool, json!({}));
            let h = modern(&mut c);
            let r = api
                .post(&format!("/v3/mcp/mcp_ws?{query}"), &refs(&h), &c)
                .await;
            assert_eq!(r.status, 200, "{query} {tool}: {:?}", r.body);
            r.json()["result"].clone()
        }
    };
    let ok = run("user_id=alice", "GITHUB_CREATE_ISSUE").await;
    assert_eq!(ok["isError"], false);
    assert_eq!(ok["structuredContent"]["data"]["user_id"], "alice");
    assert_eq!(
        ok["structuredContent"]["data"]["connected_account_id"],
        "ca_alice_github"
    );

    let by_account = run("connected_account_id=ca_bob_github", "GITHUB_CREATE_ISSUE").await;
    assert_eq!(by_account["structuredContent"]["data"]["user_id"], "bob");

    let expired = run("user_id=alice", "GMAIL_SEND_EMAIL").await;
    assert_eq!(expired["isError"], true);
    assert_eq!(expired["structuredContent"]["error"]["code"], 1803);

    let unconnected = run("user_id=carol", "SLACK_SEND_MESSAGE").await;
    assert_eq!(unconnected["isError"], true);
    assert!(unconnected["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("No connected account found for user carol"));

    // Another user's account next to a user id: refused like REST (1812).
    let mismatch = run(
        "user_id=alice&connected_account_id=ca_bob_github",
        "GITHUB_CREATE_ISSUE",
    )
    .await;
    assert_eq!(mismatch["isError"], true);
    assert_eq!(mismatch["structuredContent"]["error"]["code"], 1812);

    // A session initialized for alice is not bob's.
    let sid = api
        .initialize("/v3/mcp/mcp_ws?user_id=alice", "2025-06-18")
        .await;
    let r = api
        .post(
            "/v3/mcp/mcp_ws?user_id=bob",
            &[("mcp-session-id", &sid)],
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
        )
        .await;
    assert_eq!(r.status, 404);

    // No user at all: 400; an unknown server: 404; the /mcp suffix form works.
    let mut l = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}});
    let h = modern(&mut l);
    assert_eq!(api.post("/v3/mcp/mcp_ws", &refs(&h), &l).await.status, 400);
    assert_eq!(
        api.post("/v3/mcp/mcp_nope?user_id=alice", &refs(&h), &l)
            .await
            .status,
        404
    );
    assert_eq!(
        api.post("/v3/mcp/mcp_ws/mcp?user_id=alice", &refs(&h), &l)
            .await
            .status,
        200
    );
    // POST /api/{v3}/mcp/{id} is the same endpoint; GET there stays the REST retrieve.
    for path in [
        "/api/v3/mcp/mcp_ws?user_id=alice",
        "/api/v3.1/mcp/mcp_ws?user_id=alice",
    ] {
        let r = api.post(path, &refs(&h), &l).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(!tool_names(&r.json()["result"]).is_empty(), "{path}");
    }
    let rest = api
        .send("GET", "/api/v3.1/mcp/mcp_ws", &[("x-api-key", KEY)], b"")
        .await;
    assert_eq!(rest.json()["id"], "mcp_ws");
    let recorded = sandbox.requests_to("/v3/mcp/mcp_ws");
    assert!(recorded
        .iter()
        .any(|r| r.query_param("user_id").as_deref() == Some("carol")));
}

#[tokio::test]
async fn credentials_are_those_of_the_rest_api() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;
    let init = serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "x", "version": "1"}}}))
    .unwrap();
    let json_ct = ("content-type", "application/json");
    for headers in [
        vec![json_ct, ACCEPT_BOTH],
        vec![json_ct, ACCEPT_BOTH, ("x-api-key", "wrong")],
        vec![json_ct, ACCEPT_BOTH, ("authorization", "Bearer user-jwt")],
        vec![
            json_ct,
            ACCEPT_BOTH,
            ("x-api-key", KEY),
            ("authorization", "Bearer user-jwt"),
        ],
    ] {
        let r = api.send("POST", &path, &headers, &init).await;
        assert_eq!(r.status, 401, "{headers:?}");
        assert_eq!(r.json()["error"]["code"], 10401);
    }
    assert_eq!(sandbox.mcp_stats().sessions, 0);
}

#[tokio::test]
async fn batches_only_where_the_protocol_had_them() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;
    let batch = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "method": "notifications/progress", "params": {}},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [{"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {}}]}}},
    ]);
    let old = api.initialize(&path, "2025-03-26").await;
    let r = api.post(&path, &[("mcp-session-id", &old)], &batch).await;
    assert_eq!(r.status, 200);
    let answers = r.json();
    assert_eq!(answers.as_array().unwrap().len(), 2);
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(
        answers[1]["result"]["structuredContent"]["data"]["results"][0]["data"]["user_id"],
        "alice"
    );
    let h = [
        ("mcp-session-id", old.as_str()),
        ("x-sandbox-mcp-answer", "sse"),
    ];
    let sse = api.post(&path, &h, &batch).await;
    assert_eq!(sse.message().as_array().unwrap().len(), 2);

    let new = api.initialize(&path, "2025-06-18").await;
    let r = api.post(&path, &[("mcp-session-id", &new)], &batch).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], -32600);
    // initialize never rides in a batch.
    let r = api
        .post(
            &path,
            &[],
            &json!([{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}]),
        )
        .await;
    assert_eq!(r.status, 400);
}

/// Reads from `stream` until `needle` has been seen; answers everything read.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "never saw {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn raw_post(addr: SocketAddr, path: &str, extra: &str, body: &Value) -> String {
    let body = body.to_string();
    format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {KEY}\r\ncontent-type: application/json\r\naccept: application/json, text/event-stream\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_cancels_the_call() {
    let sandbox = Sandbox::with_demo_data(KEY);
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;
    let mut slow = call(
        1,
        "COMPOSIO_MULTI_EXECUTE_TOOL",
        json!({"sandbox_delay_ms": 30_000, "tools": []}),
    );
    let h = modern(&mut slow);
    slow["params"]["_meta"]["progressToken"] = json!("p1");
    let extra: String = h.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();

    // SSE: the stream opens with a progress event; the client leaves.
    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let req = raw_post(
        api.addr,
        &path,
        &format!("{extra}x-sandbox-mcp-answer: sse\r\n"),
        &slow,
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_until(&mut s, "notifications/progress").await;
    assert!(head.contains("text/event-stream"), "{head}");
    assert_eq!(sandbox.mcp_stats().open_streams, 1);
    drop(s);
    wait_for("the SSE cancellation", || {
        sandbox.mcp_stats().cancelled == 1
    })
    .await;
    wait_for("the stream to close", || {
        sandbox.mcp_stats().open_streams == 0
    })
    .await;

    // JSON: nothing is sent until the answer; the client leaves before it.
    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let req = raw_post(api.addr, &path, &extra, &slow);
    s.write_all(req.as_bytes()).await.unwrap();
    wait_for("the request to arrive", || {
        sandbox.requests_to(&path).len() == 2
    })
    .await;
    drop(s);
    wait_for("the JSON cancellation", || {
        sandbox.mcp_stats().cancelled == 2
    })
    .await;
    // Neither call ran.
    assert_eq!(sandbox.mcp_stats().tool_calls, 0);

    // A short delay completes, streamed: progress first, then the result.
    slow["params"]["arguments"]["sandbox_delay_ms"] = json!(50);
    let mut sse_h = h.clone();
    sse_h.push(("x-sandbox-mcp-answer".into(), "sse".into()));
    let r = api.post(&path, &refs(&sse_h), &slow).await;
    let events = sse_messages(&r.body);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["method"], "notifications/progress");
    assert_eq!(events[1]["result"]["isError"], false);
    assert_eq!(sandbox.mcp_stats().tool_calls, 1);
}

#[tokio::test]
async fn the_get_stream_lasts_until_the_session_ends() {
    let sandbox = Sandbox::with_demo_data(KEY);
    sandbox.set_mcp_config(McpConfig {
        keepalive: Duration::from_millis(20),
        ..McpConfig::default()
    });
    let api = Mcp::start(&sandbox).await;
    let path = api.session("alice", &["github"]).await;
    let sid = api.initialize(&path, "2025-06-18").await;

    let mut s = tokio::net::TcpStream::connect(api.addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nhost: {}\r\nx-api-key: {KEY}\r\naccept: text/event-stream\r\nmcp-session-id: {sid}\r\n\r\n",
        api.addr
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let head = read_until(&mut s, ": keepalive").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"));
    assert_eq!(sandbox.mcp_stats().open_streams, 1);

    // DELETE ends the session and its stream (the chunked body's last chunk).
    let del = api
        .send(
            "DELETE",
            &path,
            &[("x-api-key", KEY), ("mcp-session-id", &sid)],
            b"",
        )
        .await;
    assert_eq!(del.status, 200);
    read_until(&mut s, "0\r\n\r\n").await;
    wait_for("the stream to close", || {
        sandbox.mcp_stats().open_streams == 0
    })
    .await;

    // With the GET stream turned off it is 405.
    sandbox.set_mcp_config(McpConfig {
        get_stream: false,
        ..McpConfig::default()
    });
    let sid = api.initialize(&path, "2025-06-18").await;
    let r = api
        .send(
            "GET",
            &path,
            &[
                ("x-api-key", KEY),
                ("accept", "text/event-stream"),
                ("mcp-session-id", &sid),
            ],
            b"",
        )
        .await;
    assert_eq!(r.status, 405);
}
