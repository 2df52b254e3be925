//! MCP end to end with the real clients (issue 13): the official MCP SDKs (Python `mcp` 2.3.0,
//! TypeScript `@modelcontextprotocol/sdk` 1.32.2) and the newest Composio SDKs' sessions with
//! `mcp=True` (Python `composio` 0.30.0, JS `@composio/core` 0.19.0), against the sandbox's
//! hosted MCP endpoints directly (to validate the drivers) and through a gateway started from
//! the library (both on 127.0.0.1:0).
//!
//! The drivers (`tests/sdk/mcp_py.py`, `tests/sdk/mcp_js.mjs`) run a JSON plan written here and
//! report what their SDK did, one JSON line per step; every judgement is made here, on their
//! reports and on what reached the sandbox. `tests/sdk/setup.sh` installs the SDKs once (a
//! no-op afterwards); like the SDK suite, this one never skips.

#![allow(unreachable_pub)]
#![allow(clippy::unwrap_used)]

#[path = "gateway/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use entitygate::sandbox::{McpAnswer, McpConfig, Recorded, Sandbox};
use http::Method;
use serde_json::{json, Value};
use support::*;

/// Longest a driver may run.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/sdk/setup.sh` once per test binary; every test fails loudly if it fails.
fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = SETUP.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(root().join("tests/sdk/setup.sh"))
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash tests/sdk/setup.sh: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{text}");
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("exit {}:\n{text}", out.status))
        }
    });
    if let Err(e) = outcome {
        panic!(
            "installing the SDKs failed (bash tests/sdk/setup.sh needs python3 with venv, node \
             20+, npm and the package registries the first time); this suite does not skip: {e}"
        );
    }
}

/// Which official MCP client runs the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Python `mcp` 2.3.0 with the initialize handshake (`mode="legacy"`).
    PyStateful,
    /// Python `mcp` 2.3.0 on the stateless 2026-07-28 revision (`mode="auto"`: it probes
    /// `server/discover` and adopts the version).
    PyStateless,
    /// `@modelcontextprotocol/sdk` 1.32.2 (stateful only; newest version 2025-11-25).
    Ts,
}

const CLIENTS: [Client; 3] = [Client::PyStateful, Client::PyStateless, Client::Ts];

impl Client {
    fn command(self) -> (PathBuf, PathBuf) {
        let sdk = root().join("tests/sdk");
        match self {
            Client::PyStateful | Client::PyStateless => {
                (root().join(".venv-sdk/bin/python"), sdk.join("mcp_py.py"))
            }
            Client::Ts => (PathBuf::from("node"), sdk.join("mcp_js.mjs")),
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Client::PyStateful | Client::Ts => "legacy",
            Client::PyStateless => "auto",
        }
    }

    /// The protocol version the client ends up speaking with the sandbox.
    fn version(self) -> &'static str {
        match self {
            Client::PyStateful | Client::Ts => "2025-11-25",
            Client::PyStateless => "2026-07-28",
        }
    }
}

/// One driver run: its step records.
struct Run {
    label: String,
    lines: Vec<Value>,
}

impl Run {
    fn step(&self, name: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["step"] == name)
            .unwrap_or_else(|| panic!("{}: no step {name:?} in {:#?}", self.label, self.lines))
    }

    fn ok(&self, name: &str) -> &Value {
        let s = self.step(name);
        assert_eq!(s["outcome"], "success", "{}: {name}: {s}", self.label);
        &s["result"]
    }

    fn failed(&self, name: &str) -> &Value {
        let s = self.step(name);
        assert_eq!(s["outcome"], "error", "{}: {name}: {s}", self.label);
        &s["error"]
    }

    /// The tool result of a successful `call` step.
    fn tool_ok(&self, name: &str) -> &Value {
        let r = self.ok(name);
        assert_eq!(r["isError"], false, "{}: {name}: {r}", self.label);
        &r["structuredContent"]
    }

    /// The error result of a `call` step: `(text, structured content)`.
    fn tool_error(&self, name: &str) -> (&str, &Value) {
        let r = self.ok(name);
        assert_eq!(r["isError"], true, "{}: {name}: {r}", self.label);
        (
            r["text"].as_str().unwrap_or_default(),
            &r["structuredContent"],
        )
    }

    fn tools(&self, name: &str) -> Vec<String> {
        self.ok(name)["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }
}

/// Runs `client` on `plan`; `composio` is the (base URL, API key) a `composio_session` connect
/// uses. Panics unless the driver finished with a passing summary.
async fn drive(client: Client, plan: Value, composio: Option<(&str, &str)>) -> Run {
    setup();
    let mut plan = plan;
    plan["connect"]["mode"] = json!(client.mode());
    let label = format!("{client:?}");
    let (program, script) = client.command();
    let home = std::env::temp_dir().join(format!(
        "entitygate-mcp-clients-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(&script)
        .current_dir(root().join("tests/sdk"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("COMPOSIO_CACHE_DIR", home.join(".composio-cache"))
        .env("COMPOSIO_DISABLE_VERSION_CHECK", "true")
        .env("COMPOSIO_LOGGING_LEVEL", "warning")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NODE_NO_WARNINGS", "1")
        .env("MCP_PLAN", plan.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((base, key)) = composio {
        cmd.env("COMPOSIO_BASE_URL", base)
            .env("COMPOSIO_API_KEY", key);
    }
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start {}: {e}", program.display()));
    let out = match tokio::time::timeout(DRIVER_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{label}: driver still running after {DRIVER_TIMEOUT:?} (killed)"),
    };
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .filter(Value::is_object)
        .collect();
    let passed = out.status.success()
        && lines
            .iter()
            .any(|l| l["summary"] == true && l["ok"] == true);
    eprintln!(
        "{label}: {} records in {:.1}s",
        lines.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        passed,
        "{label}: driver broke ({})\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    Run { label, lines }
}

fn connect(url: &str, headers: Value) -> Value {
    json!({"url": url, "headers": headers})
}

fn call(name: &str, tool: &str, arguments: Value) -> Value {
    json!({"name": name, "op": "call", "tool": tool, "arguments": arguments})
}

fn multi(name: &str, inner: &[&str]) -> Value {
    let tools: Vec<Value> = inner
        .iter()
        .map(|t| json!({"tool_slug": t, "arguments": {"owner": "acme", "repo": "app", "title": "hi"}}))
        .collect();
    call(name, "COMPOSIO_MULTI_EXECUTE_TOOL", json!({"tools": tools}))
}

const META_TOOLS: [&str; 4] = [
    "COMPOSIO_SEARCH_TOOLS",
    "COMPOSIO_MULTI_EXECUTE_TOOL",
    "COMPOSIO_MANAGE_CONNECTIONS",
    "COMPOSIO_GET_TOOL_SCHEMAS",
];

/// The user an MCP multi-execute result ran its first inner tool as.
fn multi_user(structured: &Value) -> &str {
    structured["data"]["results"][0]["data"]["user_id"]
        .as_str()
        .unwrap_or_default()
}

/// Every MCP request that reached the sandbox carried only the real key and no JWT.
fn assert_upstream_clean(seen: &[Recorded], label: &str) {
    assert!(
        !seen.is_empty(),
        "{label}: no MCP request reached the sandbox"
    );
    for r in seen {
        assert_only_real_key(r);
        for (name, value) in &r.headers {
            assert!(
                !value.contains("eyJ"),
                "{label}: a JWT reached Composio in {name} of {}",
                r.path
            );
        }
        assert!(
            !String::from_utf8_lossy(&r.body).contains("eyJ"),
            "{label}: a JWT reached Composio in the body of {}",
            r.path
        );
    }
}

/// A tool-router session for `as_user` created over REST through the gateway (naming `forged`
/// in the body); answers its MCP URL as the gateway handed it out.
async fn session_url(h: &Harness, as_user: &str, forged: &str) -> String {
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(&token(as_user)),
            Some(json!({"user_id": forged, "toolkits": {"enable": ["github", "gmail", "slack"]}})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    let url = r.json()["mcp"]["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&h.url("/tool_router/")),
        "the session's MCP URL is not on the gateway: {url}"
    );
    url
}

// --- the drivers against the sandbox itself (what Composio would answer) ---

#[tokio::test]
async fn the_official_clients_speak_to_the_sandbox_directly() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let addr = sandbox.start().await.unwrap();
    let base = format!("http://{addr}");
    for client in CLIENTS {
        for answer in [McpAnswer::Json, McpAnswer::Sse] {
            sandbox.set_mcp_config(McpConfig {
                answer,
                ..McpConfig::default()
            });
            let before = sandbox.mcp_stats();
            let plan = json!({
                "connect": {"composio_session": {"user_id": "alice", "toolkits": ["github", "gmail"]}},
                "steps": [
                    {"name": "list", "op": "list_tools"},
                    multi("ok", &["GITHUB_CREATE_ISSUE"]),
                    call("expired", "GMAIL_SEND_EMAIL", json!({})),
                    {"name": "leave", "op": "call_and_leave", "tool": "COMPOSIO_MULTI_EXECUTE_TOOL",
                     "arguments": {"tools": [], "sandbox_delay_ms": 10_000}, "after_ms": 400},
                    {"name": "after", "op": "list_tools"},
                ],
            });
            let run = drive(client, plan, Some((&base, API_KEY))).await;
            let label = format!("{client:?} {answer:?}");
            let session = run.ok("session");
            assert!(
                session["mcp_url"].as_str().unwrap().starts_with(&base),
                "{label}"
            );
            assert_eq!(session["header_names"], json!(["x-api-key"]), "{label}");
            assert_eq!(
                run.ok("connect")["protocol_version"],
                client.version(),
                "{label}"
            );
            assert_eq!(run.tools("list"), META_TOOLS, "{label}");
            assert_eq!(multi_user(run.tool_ok("ok")), "alice", "{label}");
            let (text, err) = run.tool_error("expired");
            assert!(text.contains("toolkit gmail"), "{label}: {text}");
            assert_eq!(err["error"]["code"], 1803, "{label}");
            assert_eq!(run.ok("leave")["left"], true, "{label}");
            assert_eq!(run.tools("after"), META_TOOLS, "{label}");
            // The client that left cancelled the call: it never ran.
            let after = sandbox.mcp_stats();
            assert_eq!(after.cancelled, before.cancelled + 1, "{label}: {after:?}");
            assert_eq!(
                after.tool_calls,
                before.tool_calls + 2,
                "{label}: {after:?}"
            );
        }
    }
    sandbox.stop();
}

// --- through the gateway ---

const POLICY: &str = "[[policy.rules]]\nname = \"no-slack\"\ndeny_toolkits = [\"slack\"]\n";

#[tokio::test]
async fn the_official_clients_run_session_tools_as_the_tokens_subject() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let h = Harness::with(sandbox.clone(), POLICY).await;
    let alice = token("alice");
    let denied_rest = h
        .execute("alice", "SLACK_SEND_MESSAGE", json!({"arguments": {}}))
        .await
        .json();
    let expired_rest = h
        .execute("alice", "GMAIL_SEND_EMAIL", json!({"arguments": {}}))
        .await
        .json();
    for (client, headers) in [
        (Client::PyStateful, json!({"x-api-key": alice})),
        (
            Client::PyStateless,
            json!({"authorization": format!("Bearer {alice}")}),
        ),
        (Client::Ts, json!({"x-api-key": alice})),
    ] {
        // Alice's agent asks for a session for bob: it is alice's.
        let url = session_url(&h, "alice", "bob").await;
        let path = url.strip_prefix(&h.url("")).unwrap().to_owned();
        sandbox.clear();
        let calls = sandbox.mcp_stats().tool_calls;
        let plan = json!({
            "connect": connect(&url, headers),
            "steps": [
                {"name": "list", "op": "list_tools"},
                multi("allowed", &["GITHUB_CREATE_ISSUE"]),
                multi("denied", &["SLACK_SEND_MESSAGE"]),
                call("denied-direct", "SLACK_SEND_MESSAGE", json!({"channel": "c", "text": "t"})),
                call("expired", "GMAIL_SEND_EMAIL", json!({})),
                multi("allowed-again", &["GITHUB_CREATE_ISSUE"]),
            ],
        });
        let run = drive(client, plan, None).await;
        let label = format!("{client:?}");
        assert_eq!(
            run.ok("connect")["protocol_version"],
            client.version(),
            "{label}"
        );
        let tools = run.tools("list");
        for meta in ["COMPOSIO_SEARCH_TOOLS", "COMPOSIO_MULTI_EXECUTE_TOOL"] {
            assert!(tools.iter().any(|t| t == meta), "{label}: {tools:?}");
        }
        assert_eq!(multi_user(run.tool_ok("allowed")), "alice", "{label}");
        assert_eq!(multi_user(run.tool_ok("allowed-again")), "alice", "{label}");

        // The denied and expired calls are error results carrying REST's message.
        for step in ["denied", "denied-direct"] {
            let (text, err) = run.tool_error(step);
            assert_eq!(text, denied_rest["error"]["message"], "{label}: {step}");
            assert_eq!(err["error"]["slug"], "tool_not_allowed", "{label}: {step}");
        }
        let (text, err) = run.tool_error("expired");
        assert_eq!(text, expired_rest["error"]["message"], "{label}");
        assert!(text.contains("Gmail"), "{label}: {text}");
        assert_eq!(err["error"]["slug"], "connection_expired", "{label}");

        // Only the two allowed calls reached the sandbox, with the real key and no JWT.
        assert_eq!(sandbox.mcp_stats().tool_calls, calls + 2, "{label}");
        let seen = sandbox.requests_to(&path);
        assert_upstream_clean(&seen, &label);
        for r in &seen {
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                !body.contains("SLACK_SEND") && !body.contains("GMAIL_SEND"),
                "{label}: {body}"
            );
        }
    }
}

#[tokio::test]
async fn another_users_session_is_refused_to_the_official_clients() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let h = Harness::with(sandbox.clone(), "").await;
    let bobs = session_url(&h, "bob", "bob").await;
    let path = bobs.strip_prefix(&h.url("")).unwrap().to_owned();
    for client in CLIENTS {
        sandbox.clear();
        let plan = json!({
            "connect": connect(&bobs, json!({"x-api-key": token("alice")})),
            "steps": [multi("steal", &["GITHUB_CREATE_ISSUE"])],
        });
        let run = drive(client, plan, None).await;
        run.failed("connect");
        assert!(
            run.lines.iter().all(|l| l["step"] != "steal"),
            "{client:?}: a call ran on bob's session"
        );
        assert!(
            sandbox.requests_to(&path).is_empty(),
            "{client:?}: alice's client reached bob's session upstream"
        );
    }
}

#[tokio::test]
async fn a_forged_user_id_on_a_server_url_is_pinned_for_the_official_clients() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.add_mcp_server("mcp_ws", "workspace", &["github", "gmail"], &[]);
    let h = Harness::with(sandbox.clone(), "").await;
    for client in CLIENTS {
        sandbox.clear();
        let plan = json!({
            "connect": connect(&h.url("/v3/mcp/mcp_ws?user_id=bob"), json!({"x-api-key": token("alice")})),
            "steps": [
                {"name": "list", "op": "list_tools"},
                call("run", "GITHUB_CREATE_ISSUE", json!({"owner": "acme", "repo": "app", "title": "hi"})),
            ],
        });
        let run = drive(client, plan, None).await;
        let label = format!("{client:?}");
        let tools = run.tools("list");
        assert!(
            tools.iter().any(|t| t == "GITHUB_CREATE_ISSUE"),
            "{label}: {tools:?}"
        );
        let data = &run.tool_ok("run")["data"];
        assert_eq!(data["user_id"], "alice", "{label}: {data}");
        assert_eq!(data["connected_account_id"], "ca_alice_github", "{label}");
        let seen = sandbox.requests_to("/v3/mcp/mcp_ws");
        assert_upstream_clean(&seen, &label);
        for r in &seen {
            assert_eq!(
                r.query_param("user_id").as_deref(),
                Some("alice"),
                "{label}: {:?}",
                r.query
            );
            assert!(
                !r.query.as_deref().unwrap_or("").contains("bob"),
                "{label}: {:?}",
                r.query
            );
        }
    }
    // The same server under `POST /api/v3.1/mcp/{id}` (POST only there: GET and DELETE are the
    // REST configuration routes), with the stateless client, which only ever POSTs.
    sandbox.clear();
    let plan = json!({
        "connect": connect(&h.url("/api/v3.1/mcp/mcp_ws?user_id=bob"), json!({"x-api-key": token("alice")})),
        "steps": [call("run", "GITHUB_CREATE_ISSUE", json!({"owner": "acme", "repo": "app", "title": "hi"}))],
    });
    let run = drive(Client::PyStateless, plan, None).await;
    assert_eq!(run.tool_ok("run")["data"]["user_id"], "alice");
    let seen = sandbox.requests_to("/api/v3.1/mcp/mcp_ws");
    assert_upstream_clean(&seen, "api path");
    assert!(seen
        .iter()
        .all(|r| r.query_param("user_id").as_deref() == Some("alice")));
}

#[tokio::test]
async fn sse_answers_relay_and_a_client_that_leaves_cancels_upstream() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    sandbox.set_mcp_config(McpConfig {
        answer: McpAnswer::Sse,
        ..McpConfig::default()
    });
    let h = Harness::with(sandbox.clone(), "").await;
    for client in CLIENTS {
        let url = session_url(&h, "alice", "alice").await;
        let before = sandbox.mcp_stats();
        let plan = json!({
            "connect": connect(&url, json!({"x-api-key": token("alice")})),
            "steps": [
                {"name": "list", "op": "list_tools"},
                multi("ok", &["GITHUB_CREATE_ISSUE"]),
                {"name": "leave", "op": "call_and_leave", "tool": "COMPOSIO_MULTI_EXECUTE_TOOL",
                 "arguments": {"tools": [], "sandbox_delay_ms": 10_000}, "after_ms": 500},
                multi("after", &["GITHUB_CREATE_ISSUE"]),
            ],
        });
        let run = drive(client, plan, None).await;
        let label = format!("{client:?}");
        assert_eq!(run.tools("list"), META_TOOLS, "{label}");
        assert_eq!(multi_user(run.tool_ok("ok")), "alice", "{label}");
        assert_eq!(run.ok("leave")["left"], true, "{label}");
        assert_eq!(multi_user(run.tool_ok("after")), "alice", "{label}");
        // The gateway dropped the upstream stream when the client left: the sandbox saw the
        // cancellation, and the slow call never ran.
        let deadline = Instant::now() + Duration::from_secs(10);
        while sandbox.mcp_stats().cancelled == before.cancelled {
            assert!(
                Instant::now() < deadline,
                "{label}: upstream call not cancelled: {:?}",
                sandbox.mcp_stats()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = sandbox.mcp_stats();
        assert_eq!(after.cancelled, before.cancelled + 1, "{label}: {after:?}");
        assert_eq!(
            after.tool_calls,
            before.tool_calls + 2,
            "{label}: {after:?}"
        );
    }
}

#[tokio::test]
async fn the_front_door_serves_each_official_client_its_subjects_tools() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let h = Harness::with(
        sandbox.clone(),
        &format!("{POLICY}[mcp]\nfront_door = true\n"),
    )
    .await;
    let bob = token("bob");
    for client in CLIENTS {
        sandbox.clear();
        let calls = sandbox.mcp_stats().tool_calls;
        // Only bob's JWT and the gateway's /mcp: no session id, no user id anywhere.
        let plan = json!({
            "connect": connect(&h.url("/mcp"), json!({"authorization": format!("Bearer {bob}")})),
            "steps": [
                {"name": "list", "op": "list_tools"},
                multi("github", &["GITHUB_CREATE_ISSUE"]),
                multi("slack", &["SLACK_SEND_MESSAGE"]),
                call("gmail", "GMAIL_SEND_EMAIL", json!({})),
            ],
        });
        let run = drive(client, plan, None).await;
        let label = format!("{client:?}");
        assert_eq!(
            run.ok("connect")["protocol_version"],
            client.version(),
            "{label}"
        );
        assert_eq!(run.tools("list"), META_TOOLS, "{label}");
        let github = run.tool_ok("github");
        assert_eq!(multi_user(github), "bob", "{label}");
        assert_eq!(
            github["data"]["results"][0]["data"]["connected_account_id"], "ca_bob_github",
            "{label}"
        );
        let (_, err) = run.tool_error("slack");
        assert_eq!(err["error"]["slug"], "tool_not_allowed", "{label}");
        // bob's Gmail account is disabled.
        let (text, _) = run.tool_error("gmail");
        assert!(text.contains("Gmail"), "{label}: {text}");
        assert_eq!(sandbox.mcp_stats().tool_calls, calls + 1, "{label}");
        // The session behind the door is bob's (created once, then reused).
        for c in sandbox.requests_to("/api/v3.1/tool_router/session") {
            let body = c.json().unwrap();
            assert_eq!(body["user_id"], "bob", "{label}: {body}");
        }
        assert_upstream_clean(&sandbox.requests_to("/tool_router/"), &label);
    }
}

// --- the Composio SDKs' sessions with mcp=True, through the gateway ---

#[tokio::test]
async fn composio_sessions_with_mcp_get_a_gateway_url_that_runs_as_the_subject() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let h = Harness::with(sandbox.clone(), "").await;
    let base = h.url("");
    let alice = token("alice");
    // Python: composio 0.30 sessions.create(user_id=..., mcp=True) + mcp 2.3 on exactly
    // session.mcp.url / session.mcp.headers; JS: @composio/core 0.19 composio.create(userId,
    // { mcp: true }) + the TypeScript MCP SDK.
    for client in [Client::PyStateful, Client::PyStateless, Client::Ts] {
        sandbox.clear();
        let plan = json!({
            "connect": {"composio_session": {"user_id": "bob", "toolkits": ["github"]}},
            "steps": [
                {"name": "list", "op": "list_tools"},
                multi("run", &["GITHUB_CREATE_ISSUE"]),
            ],
        });
        let run = drive(client, plan, Some((&base, &alice))).await;
        let label = format!("{client:?}");
        let session = run.ok("session");
        let url = session["mcp_url"].as_str().unwrap();
        assert!(
            url.starts_with(&h.url("/tool_router/trs_")),
            "{label}: {url}"
        );
        assert_eq!(session["header_names"], json!(["x-api-key"]), "{label}");
        assert_eq!(session["warnings"], json!([]), "{label}: {session}");
        assert_eq!(multi_user(run.tool_ok("run")), "alice", "{label}");
        // The session was created for the subject, and its MCP traffic crossed the gateway.
        let created = sandbox.requests_to("/api/v3.1/tool_router/session");
        assert_eq!(created[0].json().unwrap()["user_id"], "alice", "{label}");
        let path = url.strip_prefix(&base).unwrap();
        assert_upstream_clean(&sandbox.requests_to(path), &label);
    }
}

// --- the demo prints MCP commands that work as printed ---

/// Runs `entitygate demo`, waits for its banner, then runs the banner's MCP commands (section
/// 5, curl; section 7, composio + mcp in the SDK venv) with its exported tokens.
#[tokio::test]
async fn the_demo_banner_mcp_commands_work_as_printed() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    setup();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--for-secs", "60"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("Ctrl-C stops the demo") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the demo prints its banner");
    let section = |from: &str, to: &str| -> String {
        let start = banner
            .find(from)
            .unwrap_or_else(|| panic!("no {from:?} in\n{banner}"));
        let rest = &banner[start..];
        let end = rest.find(to).unwrap_or(rest.len());
        rest[..end].to_owned()
    };
    let exports: String = banner
        .lines()
        .filter(|l| l.starts_with("export "))
        .map(|l| format!("{l}\n"))
        .collect();
    let python = root().join(".venv-sdk/bin/python");
    let sdk = section("# 8.", "asyncio.run(main())").replacen(
        "python3 -c",
        &format!("{} -c", python.display()),
        1,
    );
    let script = format!(
        "set -eu\n{exports}{}\necho '=== sdk'\n{sdk}asyncio.run(main())'\n",
        section("# 6.", "# 7.")
    );
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("HOME", std::env::temp_dir())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .await
        .unwrap();
    let _ = demo.kill().await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    let (curls, sdk_out) = stdout.split_once("=== sdk").unwrap();
    let answers: Vec<Value> = curls
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    assert_eq!(answers.len(), 3, "{curls}");
    let names: Vec<&str> = answers[0]["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"COMPOSIO_MULTI_EXECUTE_TOOL"), "{names:?}");
    assert_eq!(
        multi_user(&answers[1]["result"]["structuredContent"]),
        "alice",
        "{curls}"
    );
    assert_eq!(answers[2]["result"]["isError"], true, "{curls}");
    assert!(answers[2]["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("Gmail"));
    let mut sdk_lines = sdk_out.lines().filter(|l| !l.trim().is_empty());
    let url = sdk_lines.next().unwrap_or_default();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{sdk_out}"
    );
    assert!(
        sdk_lines
            .next()
            .unwrap_or_default()
            .contains("COMPOSIO_MULTI_EXECUTE_TOOL"),
        "{sdk_out}"
    );
}
