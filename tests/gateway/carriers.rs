//! What every carrier of an execution does around the one decision (issue 25): how it reads
//! its body (one reader, one set of limits) and what it does with Composio's answer (one
//! after-execution step), for REST execute (v3, legacy v2), session execute, proxy execute,
//! MCP `tools/call` alone and in a batch.

use bytes::Bytes;
use entitygate::sandbox::Fault;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

const SESSION: &str = "trs_carriers_1";
const MCP: &str = "/tool_router/trs_carriers_1/mcp";
const LOOKUPS: &str = "/api/v3.1/connected_accounts";

/// The carriers of an execution, each running a Slack tool for alice (`ca_alice_slack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    V3,
    Legacy,
    Session,
    Proxy,
    Mcp,
    /// A batch of a Slack call (even id) and a GitHub call (odd id), in MCP session `sid`.
    McpBatch,
}

const ALL: [Carrier; 6] = [
    Carrier::V3,
    Carrier::Legacy,
    Carrier::Session,
    Carrier::Proxy,
    Carrier::Mcp,
    Carrier::McpBatch,
];

impl Carrier {
    /// The upstream path the execution goes to (where a fault is injected).
    fn upstream(self) -> String {
        match self {
            Self::V3 => "/api/v3.1/tools/execute/SLACK".into(),
            Self::Legacy => "/api/v2/actions/SLACK".into(),
            Self::Session => format!("/api/v3.1/tool_router/session/{SESSION}/execute"),
            Self::Proxy => "/api/v3.1/tools/execute/proxy".into(),
            Self::Mcp | Self::McpBatch => MCP.into(),
        }
    }
}

async fn harness(extra: &str) -> Harness {
    let h = Harness::with_config(extra).await;
    h.sandbox.add_session(SESSION, "alice");
    h
}

fn mcp_post(h: &Harness, headers: &[(&str, &str)], body: &Value) -> Request<Full<Bytes>> {
    let mut req = Request::post(h.url(MCP))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

fn tool_call(id: u64, name: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": name, "arguments": {}}})
}

/// A stateless MCP `tools/call` of `name`.
async fn mcp_call(h: &Harness, id: u64, name: &str) -> Reply {
    let mut msg = tool_call(id, name);
    msg["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2026-07-28");
    let req = mcp_post(
        h,
        &[
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", name),
        ],
        &msg,
    );
    h.raw(req).await
}

/// A 2025-03-26 MCP session (the revision with batches).
async fn mcp_session(h: &Harness) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "carriers", "version": "1"}}});
    let r = h.raw(mcp_post(h, &[], &init)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    r.headers["mcp-session-id"].to_str().unwrap().to_owned()
}

async fn mcp_batch(h: &Harness, sid: &str, calls: &[Value]) -> Reply {
    let req = mcp_post(
        h,
        &[
            ("mcp-protocol-version", "2025-03-26"),
            ("mcp-session-id", sid),
        ],
        &Value::Array(calls.to_vec()),
    );
    h.raw(req).await
}

/// Runs alice's Slack execution through `carrier` (`n` makes MCP ids unique).
async fn run(h: &Harness, carrier: Carrier, sid: &str, n: u64) -> Reply {
    let alice = token("alice");
    let post = |path: String, body: Value| {
        let alice = alice.clone();
        async move { h.send(Method::POST, &path, Some(&alice), Some(body)).await }
    };
    match carrier {
        Carrier::V3 => {
            h.execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
                .await
        }
        Carrier::Legacy => {
            post(
                "/api/v2/actions/SLACK_SEND_MESSAGE/execute".into(),
                json!({"input": {}}),
            )
            .await
        }
        Carrier::Session => {
            post(
                format!("/api/v3.1/tool_router/session/{SESSION}/execute"),
                json!({"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {}}),
            )
            .await
        }
        Carrier::Proxy => {
            post(
                "/api/v3.1/tools/execute/proxy".into(),
                json!({"endpoint": "/api/auth.test", "method": "GET",
                    "connected_account_id": "ca_alice_slack"}),
            )
            .await
        }
        Carrier::Mcp => mcp_call(h, 2 * n, "SLACK_SEND_MESSAGE").await,
        Carrier::McpBatch => {
            mcp_batch(
                h,
                sid,
                &[
                    tool_call(2 * n, "SLACK_SEND_MESSAGE"),
                    tool_call(2 * n + 1, "GITHUB_CREATE_ISSUE"),
                ],
            )
            .await
        }
    }
}

/// Whether alice's Slack execution ran (as opposed to being refused) on `carrier`.
fn slack_ran(r: &Reply, carrier: Carrier, n: u64) -> bool {
    match carrier {
        Carrier::Mcp | Carrier::McpBatch => {
            r.status == StatusCode::OK && r.mcp_answer(2 * n)["result"]["isError"] == false
        }
        _ => r.status == StatusCode::OK,
    }
}

/// Whether the gateway refused alice's Slack call with its "reconnect" error.
fn reconnect_refusal(r: &Reply, carrier: Carrier, n: u64) -> bool {
    match carrier {
        Carrier::Mcp | Carrier::McpBatch => {
            let a = r.mcp_answer(2 * n);
            a["result"]["isError"] == true && a.to_string().contains("reconnect")
        }
        _ => r.slug() == "connection_expired",
    }
}

async fn marker(h: &Harness, audit: &std::path::Path, rid: &str) -> String {
    let req = Request::get(h.url("/api/v3.1/toolkits"))
        .header("x-api-key", token("alice"))
        .header("x-request-id", rid)
        .body(Full::new(Bytes::new()))
        .unwrap();
    h.raw(req).await;
    for _ in 0..200 {
        let text = std::fs::read_to_string(audit).unwrap_or_default();
        if text.contains(rid) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{rid} was not audited");
}

// --- 2: free text never revokes ---

/// A provider's error text echoes the request. A call whose URL says `C401-unauthorized`
/// fails with "401 ... Unauthorized" in its text but no provider status: the connection is
/// not marked dead, nothing is audited as broken, and the next call runs.
#[tokio::test]
async fn free_text_naming_401_unauthorized_never_revokes_over_rest_or_mcp() {
    let echoed = "401 Client Error: Unauthorized for url: \
        https://slack.com/api/conversations.history?channel=C401-unauthorized (token revoked)";
    let failed = json!({"data": {"message": echoed, "url": echoed}, "error": echoed,
        "successful": false, "log_id": "log_1"});
    for carrier in [Carrier::V3, Carrier::Mcp] {
        let dir = std::env::temp_dir().join(format!("eg-carriers-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let audit = dir.join("audit.jsonl");
        let h = harness(&format!(
            "[audit]\npath = {:?}\n",
            audit.display().to_string()
        ))
        .await;
        assert!(slack_ran(&run(&h, carrier, "", 1).await, carrier, 1));
        let canned = match carrier {
            Carrier::Mcp => json!({"jsonrpc": "2.0", "id": 4, "result": {
                "content": [{"type": "text", "text": failed.to_string()}],
                "structuredContent": failed, "isError": false}}),
            _ => failed.clone(),
        };
        h.sandbox
            .set_fault_for(&carrier.upstream(), Fault::Json(200, canned));
        let r = run(&h, carrier, "", 2).await;
        assert!(
            r.text().contains("C401-unauthorized"),
            "{carrier:?}: {}",
            r.text()
        );
        h.sandbox.set_fault_for(&carrier.upstream(), Fault::None);
        h.sandbox.clear();
        let r = run(&h, carrier, "", 3).await;
        assert!(slack_ran(&r, carrier, 3), "{carrier:?}: {}", r.text());
        assert_eq!(
            h.sandbox.count("POST", &carrier.upstream()),
            1,
            "{carrier:?}"
        );
        let text = marker(&h, &audit, &format!("carriers-{}", uuid_like())).await;
        assert!(!text.contains("connection_broken"), "{carrier:?}: {text}");
        h.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}

// --- 11: one step after every execution ---

/// A gateway on which `carrier` has run SLACK once (the status cached), with the MCP session
/// the batch carrier needs.
async fn ran_once(carrier: Carrier) -> (Harness, String) {
    let h = harness("").await;
    let sid = if carrier == Carrier::McpBatch {
        mcp_session(&h).await
    } else {
        String::new()
    };
    let r = run(&h, carrier, &sid, 1).await;
    assert!(slack_ran(&r, carrier, 1), "{carrier:?}: {}", r.text());
    (h, sid)
}

/// Composio refusing an execution makes the next call, on any carrier, look the connection
/// status up again.
#[tokio::test]
async fn a_refused_execution_makes_every_carrier_look_the_status_up_again() {
    for carrier in ALL {
        let (h, sid) = ran_once(carrier).await;
        h.sandbox
            .set_fault_for(&carrier.upstream(), Fault::Status(500));
        let r = run(&h, carrier, &sid, 2).await;
        assert_eq!(
            r.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{carrier:?}: {}",
            r.text()
        );
        h.sandbox.set_fault_for(&carrier.upstream(), Fault::None);
        h.sandbox.clear();
        let r = run(&h, carrier, &sid, 3).await;
        assert!(slack_ran(&r, carrier, 3), "{carrier:?}: {}", r.text());
        assert!(
            !h.upstream(LOOKUPS).is_empty(),
            "{carrier:?}: the cached status was used after Composio refused"
        );
        h.shutdown().await;
    }
}

/// Composio's answer showing a dead connection (the account expired at Composio before the
/// gateway's cache knew) refuses the next call, on any carrier, with the reconnect error and
/// nothing sent upstream.
#[tokio::test]
async fn a_dead_connection_in_any_carriers_answer_refuses_the_next_call() {
    for carrier in ALL {
        let (h, sid) = ran_once(carrier).await;
        h.sandbox.set_account_status("ca_alice_slack", "EXPIRED");
        // Composio's own refusal (1803) reaches the caller as it answered.
        let r = run(&h, carrier, &sid, 2).await;
        assert!(!slack_ran(&r, carrier, 2), "{carrier:?}: {}", r.text());
        h.sandbox.clear();
        let r = run(&h, carrier, &sid, 3).await;
        assert!(
            reconnect_refusal(&r, carrier, 3),
            "{carrier:?}: {}",
            r.text()
        );
        if carrier == Carrier::Proxy {
            // A proxy names an account, not a toolkit: which toolkit it is of is looked up
            // again (the step forgot it), the execution itself never goes.
            assert_eq!(h.sandbox.count("POST", &carrier.upstream()), 0);
            h.shutdown().await;
            continue;
        }
        assert!(
            h.upstream(LOOKUPS).is_empty(),
            "{carrier:?}: not even a lookup"
        );
        if carrier == Carrier::McpBatch {
            // The batch's other call (GitHub) was not the dead one: it alone went on.
            let sent = h.upstream(MCP);
            assert_eq!(sent.len(), 1, "{carrier:?}");
            let forwarded = sent[0].json().unwrap();
            assert_eq!(forwarded.as_array().unwrap().len(), 1, "{forwarded}");
            assert_eq!(forwarded[0]["params"]["name"], "GITHUB_CREATE_ISSUE");
            assert_eq!(r.mcp_answer(7)["result"]["isError"], false, "{}", r.text());
        } else {
            h.assert_nothing_forwarded();
        }
        h.shutdown().await;
    }
}

/// In a batch, a dead connection is attributed by JSON-RPC id: the call whose answer shows
/// it is marked, the other call's toolkit is not (its status stays cached).
#[tokio::test]
async fn a_batch_attributes_each_answer_to_its_own_call() {
    let h = harness("").await;
    let sid = mcp_session(&h).await;
    let r = run(&h, Carrier::McpBatch, &sid, 1).await;
    assert!(slack_ran(&r, Carrier::McpBatch, 1), "{}", r.text());
    // GitHub's token is revoked at the provider: its answer (id 5) shows the 401.
    assert!(h.sandbox.set_revoked_at_provider("ca_alice_github", true));
    let r = run(&h, Carrier::McpBatch, &sid, 2).await;
    assert!(r.mcp_answer(5).to_string().contains("401"), "{}", r.text());
    h.sandbox.clear();
    let r = run(&h, Carrier::McpBatch, &sid, 3).await;
    assert!(slack_ran(&r, Carrier::McpBatch, 3), "{}", r.text());
    let github = r.mcp_answer(7);
    assert!(
        github["result"]["isError"] == true && github.to_string().contains("reconnect"),
        "{github}"
    );
    let sent = h.upstream(MCP);
    let forwarded = sent[0].json().unwrap();
    assert_eq!(forwarded.as_array().unwrap().len(), 1, "{forwarded}");
    assert_eq!(forwarded[0]["params"]["name"], "SLACK_SEND_MESSAGE");
    assert!(
        h.upstream(LOOKUPS).is_empty(),
        "Slack's status stayed cached"
    );
    h.shutdown().await;
}

// --- 10: one body reader ---

/// Sends the head of a POST announcing 64 bytes and one byte of its body, then waits.
async fn drip(h: &Harness, path: &str, extra: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: {}\r\n\
         content-type: application/json\r\naccept: application/json, text/event-stream\r\n\
         {extra}content-length: 64\r\n\r\n{{",
        token("alice")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    // A bound for the test only: without a deadline the gateway would wait forever.
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{path}: the body was never cut"))
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, text)
}

/// A body that never finishes is cut at `[limits] body_read_timeout_secs` on MCP as on REST,
/// and nothing is executed.
#[tokio::test]
async fn a_slow_drip_body_is_cut_at_the_deadline_on_mcp_as_on_rest() {
    let h = harness("[limits]\nbody_read_timeout_secs = 1\n").await;
    for (path, extra) in [
        ("/api/v3.1/tools/execute/SLACK_SEND_MESSAGE", ""),
        (MCP, "mcp-protocol-version: 2026-07-28\r\n"),
        ("/v3/mcp/mcp_1", "mcp-protocol-version: 2026-07-28\r\n"),
    ] {
        let (status, text) = drip(&h, path, extra).await;
        assert!(status.contains(" 400 "), "{path}: {text}");
        assert!(text.contains("body_read_timeout"), "{path}: {text}");
    }
    h.assert_no_execution();
    assert_eq!(h.sandbox.count("POST", MCP), 0);
    assert_eq!(h.sandbox.count("POST", "/v3/mcp"), 0);
    h.shutdown().await;
}

/// A JSON-RPC body past `[limits] max_json_depth` or `max_json_keys_per_object` is refused
/// as a REST body is (413), before anything reaches Composio.
#[tokio::test]
async fn a_too_deep_or_too_wide_json_rpc_body_is_refused_before_upstream() {
    let h = harness("[limits]\nmax_json_depth = 5\nmax_json_keys_per_object = 8\n").await;
    let deep = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "SLACK_SEND_MESSAGE", "arguments": {"a": {"b": {"c": {}}}}}});
    let wide_args: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("k{i}"), json!(i))).collect();
    let wide = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "SLACK_SEND_MESSAGE", "arguments": wide_args}});
    for (body, slug) in [(deep, "body_too_deep"), (wide, "body_too_many_keys")] {
        for version in ["2026-07-28", "2025-03-26"] {
            // Bodies that pass every other check: only the limits refuse them.
            let body = if version == "2025-03-26" {
                json!([body.clone()])
            } else {
                let mut b = body.clone();
                b["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!(version);
                b
            };
            let mut req = Request::post(h.url("/v3/mcp/mcp_1"))
                .header("x-api-key", token("alice"))
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", version);
            if version == "2026-07-28" {
                req = req
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "SLACK_SEND_MESSAGE");
            }
            let r = h
                .raw(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
                .await;
            assert_eq!(
                r.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{slug}: {}",
                r.text()
            );
            assert_eq!(r.slug(), slug, "{}", r.text());
        }
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

// --- 15: a tool whose metadata cannot be learnt is not listed to a restricted caller ---

#[tokio::test]
async fn a_tool_whose_metadata_lookup_fails_is_removed_from_a_restricted_callers_list() {
    let sandbox = entitygate::sandbox::Sandbox::with_demo_data(API_KEY);
    sandbox.add_mcp_server("mcp_mix", "mix", &["github", "gmail"], &[]);
    let h = Harness::with(
        sandbox,
        "[[policy.rules]]\nname = \"no-mail\"\ndeny_toolkits = [\"gmail\"]\n",
    )
    .await;
    h.sandbox
        .set_fault_for("/api/v3.1/tools/GITHUB_CREATE_ISSUE", Fault::Status(500));
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let req = Request::post(h.url("/v3/mcp/mcp_mix"))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(Full::new(Bytes::from(list.to_string())))
        .unwrap();
    let r = h.raw(req).await;
    let names: Vec<String> = r.mcp_answer(1)["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text()))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("GITHUB_")),
        "the other tools stay: {names:?}"
    );
    assert!(
        !names.iter().any(|n| n == "GITHUB_CREATE_ISSUE"),
        "a tool whose toolkit cannot be learnt is removed: {names:?}"
    );
    assert!(!names.iter().any(|n| n.starts_with("GMAIL_")), "{names:?}");
    h.shutdown().await;
}

/// The code tools are listed only to callers a rule lets run them, whether the policy
/// otherwise restricts the caller or not: an unrestricted caller's `tools/list` never offers
/// `COMPOSIO_REMOTE_WORKBENCH` (a mutation check found that listing it to unrestricted callers
/// passed every test).
#[tokio::test]
async fn an_unrestricted_callers_list_offers_no_code_tool() {
    let code_sandbox = || {
        let sandbox = entitygate::sandbox::Sandbox::with_demo_data(API_KEY);
        sandbox.add_tool(entitygate::sandbox::Tool::new(
            "COMPOSIO_REMOTE_WORKBENCH",
            "composio",
            true,
        ));
        sandbox.add_mcp_server("mcp_code", "code", &["composio", "github"], &[]);
        sandbox
    };
    // No rules at all: nothing restricts the caller, and still no code tool.
    let h = Harness::with(code_sandbox(), "").await;
    let names = code_list(&h, token("alice")).await;
    assert!(names.iter().any(|n| n.starts_with("GITHUB_")), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "COMPOSIO_REMOTE_WORKBENCH"),
        "a code tool offered to an unrestricted caller: {names:?}"
    );
    h.shutdown().await;
    // A rule's allow_tools lists it to the callers it applies to.
    let h = Harness::with(
        code_sandbox(),
        "[[policy.rules]]\nname = \"coders\"\nwhen = { claim = \"role\", equals = \"coder\" }\nallow_tools = [\"COMPOSIO_REMOTE_WORKBENCH\"]\n",
    )
    .await;
    let coder = token_with(json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE,
        "role": "coder", "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600}));
    let names = code_list(&h, coder).await;
    assert!(
        names.iter().any(|n| n == "COMPOSIO_REMOTE_WORKBENCH"),
        "a rule's allow_tools lists it: {names:?}"
    );
    h.shutdown().await;
}

/// The tool names of `tools/list` on `mcp_code`, as the holder of `user_token`.
async fn code_list(h: &Harness, user_token: String) -> Vec<String> {
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
        "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let req = Request::post(h.url("/v3/mcp/mcp_code"))
        .header("x-api-key", user_token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .body(Full::new(Bytes::from(list.to_string())))
        .unwrap();
    let r = h.raw(req).await;
    r.mcp_answer(1)["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", r.text()))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect()
}
