//! Composio's hosted MCP endpoints over Streamable HTTP, faithful enough for the official MCP
//! clients (Python `mcp`, TypeScript `@modelcontextprotocol/sdk`) and for the gateway's MCP
//! relay tests.
//!
//! # Endpoints (the URLs the REST answers hand out)
//! - `/tool_router/{session_id}/mcp` (also `/tool_router/v3/{session_id}/mcp`): a tool-router
//!   session. `tools/list` shows the meta tools, then the session's `config.preload.tools`;
//!   `tools/call` runs any tool the session enables, as the session's user, through
//!   [`crate::session::run_tool`], the code behind `POST .../session/{id}/execute`.
//! - `/v3/mcp/{server_id}` (also `/v3/mcp/{server_id}/mcp`, and `POST /api/{v3}/mcp/{server_id}`
//!   whose GET and DELETE stay the REST configuration routes) with `user_id` and/or
//!   `connected_account_id` in the query (as `mcp/servers/generate` hands them out): the
//!   server's toolkits' tools (its `allowed_tools` when set), run like `tools/execute` with that
//!   user / account.
//!
//! Credentials are those of the REST API (exactly one `x-api-key`, checked by the caller).
//!
//! # Transport
//! Both protocol generations on the same endpoint:
//! - stateful (2024-11-05 ... 2025-11-25): `initialize` mints an `Mcp-Session-Id` bound to the
//!   endpoint and its user; every later POST needs it (missing: 400, unknown or bound to
//!   another endpoint or user: 404). `GET` opens the server-to-client SSE stream (keep-alive
//!   comments until the client leaves or the session ends; 405 when
//!   [`McpConfig::get_stream`] is off), `DELETE` ends the session. Batches only on 2025-03-26,
//!   the one version that had them.
//! - stateless (2026-07-28): no `initialize`, no session; `server/discover`; every POST carries
//!   `MCP-Protocol-Version`, `Mcp-Method` and, for `tools/call`, `Mcp-Name`, which must agree
//!   with the body (else 400, JSON-RPC -32020); an unknown method is 404 with -32601; an
//!   unsupported version 400 with -32022; GET and DELETE without a session are 405.
//!
//! A request is answered as `application/json` or as a `text/event-stream` whose last event is
//! the response: [`McpConfig::answer`] picks, the per-request header `x-sandbox-mcp-answer:
//! json|sse` overrides, and an `Accept` naming only one of the two wins. A `tools/call` whose
//! arguments hold `sandbox_delay_ms` (at most 60 s) answers that much later; on an SSE answer
//! the stream opens at once (a progress event when the request has a `progressToken`), so a
//! client can leave mid-stream. A client that leaves before the answer cancels the call (it
//! never runs) and is counted in [`McpStats::cancelled`].
//!
//! Duplicate JSON keys are parsed the way JavaScript's `JSON.parse` does (the last wins), as a
//! real server would: whatever a relay decides on, this is what runs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::exec::{self, Who};
use crate::http::{endpoint, Ctx, EndpointKind};
use crate::model::{lock, Tool};
use crate::session;
use crate::shapes::{self, TOOL_VERSION};
use crate::store::{self, Store};

/// The body of every sandbox response: a full buffer or an SSE stream.
pub(crate) type SandboxBody = UnsyncBoxBody<Bytes, Infallible>;

/// The stateless protocol revision.
pub const MODERN_VERSION: &str = "2026-07-28";
/// The stateful (`initialize`) revisions, newest first; `initialize` with another version is
/// answered with the first.
pub const LEGACY_VERSIONS: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// The one revision that allowed JSON-RPC batches.
const BATCH_VERSION: &str = "2025-03-26";
/// The 2026-07-28 methods whose results carry caching hints (`ttlMs`, `cacheScope`).
const CACHEABLE: &[&str] = &["server/discover", "tools/list"];
/// The longest `sandbox_delay_ms` honoured.
const MAX_DELAY: Duration = Duration::from_secs(60);

const RPC_PARSE_ERROR: i64 = -32700;
const RPC_INVALID_REQUEST: i64 = -32600;
const RPC_METHOD_NOT_FOUND: i64 = -32601;
const RPC_INVALID_PARAMS: i64 = -32602;
const RPC_SERVER_ERROR: i64 = -32000;
const RPC_SESSION_NOT_FOUND: i64 = -32001;
const RPC_HEADER_MISMATCH: i64 = -32020;
const RPC_UNSUPPORTED_VERSION: i64 = -32022;

/// How a POST carrying a JSON-RPC request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum McpAnswer {
    /// One `application/json` body.
    #[default]
    Json,
    /// A `text/event-stream` whose last event is the response.
    Sse,
}

/// The MCP endpoints' behaviour, see [`crate::Sandbox::set_mcp_config`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpConfig {
    /// The answer mode when the request does not pick one.
    pub answer: McpAnswer,
    /// Whether `GET` with a session opens the server-to-client stream (else 405, as many
    /// servers answer).
    pub get_stream: bool,
    /// How often an open GET stream sends a keep-alive comment.
    pub keepalive: Duration,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            answer: McpAnswer::Json,
            get_stream: true,
            keepalive: Duration::from_secs(15),
        }
    }
}

/// What the MCP endpoints have seen, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct McpStats {
    /// Live stateful sessions (`initialize`d, not `DELETE`d).
    pub sessions: usize,
    /// SSE response bodies still open (GET streams and streamed answers).
    pub open_streams: usize,
    /// Requests whose client left before the answer (the call did not run).
    pub cancelled: usize,
    /// `tools/call` requests that ran (refused ones included).
    pub tool_calls: usize,
}

/// What the MCP endpoints reach of the sandbox: the store they share with the REST API, and
/// their own state. The handle ([`crate::Sandbox`]) owns one and passes it in, so this module
/// never needs the handle itself.
#[derive(Debug, Default)]
pub(crate) struct Host {
    pub(crate) store: Mutex<Store>,
    pub(crate) state: Mutex<State>,
}

/// The MCP part of the sandbox's state.
#[derive(Debug, Default)]
pub(crate) struct State {
    config: McpConfig,
    sessions: HashMap<String, McpSession>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct McpSession {
    /// The endpoint and identity the session was initialized for.
    binding: String,
    /// The negotiated protocol version.
    version: String,
    /// Set to `true` when the session ends, closing its GET streams.
    ended: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Counters {
    open_streams: AtomicUsize,
    cancelled: AtomicUsize,
    tool_calls: AtomicUsize,
}

/// Who an endpoint acts for, resolved per request from the store.
#[derive(Debug, Clone)]
enum Target {
    Session(store::SessionRec),
    Server {
        tools: Vec<Tool>,
        server: String,
        user: Option<String>,
        account: Option<String>,
    },
}

impl Target {
    /// What a stateful session is bound to.
    fn binding(&self) -> String {
        match self {
            Target::Session(s) => format!("session {} user {}", s.id, s.user_id),
            Target::Server {
                server,
                user,
                account,
                ..
            } => format!(
                "server {server} user {} account {}",
                user.as_deref().unwrap_or("-"),
                account.as_deref().unwrap_or("-")
            ),
        }
    }
}

/// An HTTP-level answer before it becomes a response.
struct Answer {
    status: u16,
    body: AnswerBody,
    headers: Vec<(&'static str, String)>,
}

enum AnswerBody {
    Empty,
    Json(Value),
    Sse(Vec<Value>),
    Stream(StreamBody),
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: AnswerBody::Json(body),
            headers: Vec::new(),
        }
    }

    fn empty(status: u16) -> Self {
        Self {
            status,
            body: AnswerBody::Empty,
            headers: Vec::new(),
        }
    }

    /// An HTTP error whose body is a JSON-RPC error without an id.
    fn rpc(status: u16, code: i64, message: &str) -> Self {
        Self::json(status, rpc_error(&Value::Null, code, message, None))
    }

    /// A JSON-RPC response (or batch of them) in the chosen mode.
    fn reply(mode: McpAnswer, body: Value) -> Self {
        match mode {
            McpAnswer::Json => Self::json(200, body),
            McpAnswer::Sse => {
                let events = match body {
                    Value::Array(a) => a,
                    one => vec![one],
                };
                Self {
                    status: 200,
                    body: AnswerBody::Sse(events),
                    headers: Vec::new(),
                }
            }
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn into_response(self, request_id: &str) -> Response<SandboxBody> {
        let (ctype, body): (Option<&'static str>, SandboxBody) = match self.body {
            AnswerBody::Empty => (None, full(Bytes::new())),
            AnswerBody::Json(v) => (
                Some("application/json"),
                full(Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
            ),
            AnswerBody::Sse(events) => {
                let mut out = Vec::new();
                for e in &events {
                    out.extend_from_slice(&sse_event(e));
                }
                (Some("text/event-stream"), full(Bytes::from(out)))
            }
            AnswerBody::Stream(s) => (Some("text/event-stream"), s.boxed_unsync()),
        };
        let mut resp = Response::new(body);
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = resp.headers_mut();
        if let Some(ctype) = ctype {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
            if ctype == "text/event-stream" {
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                h.insert("x-accel-buffering", HeaderValue::from_static("no"));
            }
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(name, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(request_id) {
            h.insert("x-request-id", v);
        }
        resp
    }
}

pub(crate) fn full(b: Bytes) -> SandboxBody {
    Full::new(b).boxed_unsync()
}

fn sse_event(v: &Value) -> Vec<u8> {
    let mut out = b"event: message\ndata: ".to_vec();
    out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    out
}

fn rpc_error(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({"code": code, "message": message});
    if let Some(d) = data {
        error["data"] = d;
    }
    json!({"jsonrpc": "2.0", "id": id, "error": error})
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A streamed SSE body fed by a task; counts itself in `open_streams` while alive.
pub(crate) struct StreamBody {
    rx: mpsc::Receiver<Bytes>,
    counters: Arc<Counters>,
}

impl StreamBody {
    fn new(counters: &Arc<Counters>) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(16);
        counters.open_streams.fetch_add(1, Ordering::Relaxed);
        (
            tx,
            Self {
                rx,
                counters: Arc::clone(counters),
            },
        )
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.counters.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Counts a cancellation when dropped armed: the client left before the answer.
struct CancelGuard {
    counters: Arc<Counters>,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// === impl State ===

impl State {
    /// Sets how the endpoints answer from now on.
    pub(crate) fn set_config(&mut self, config: McpConfig) {
        self.config = config;
    }

    /// What the endpoints have seen so far.
    pub(crate) fn stats(&self) -> McpStats {
        McpStats {
            sessions: self.sessions.len(),
            open_streams: self.counters.open_streams.load(Ordering::Relaxed),
            cancelled: self.counters.cancelled.load(Ordering::Relaxed),
            tool_calls: self.counters.tool_calls.load(Ordering::Relaxed),
        }
    }
}

/// Serves one request to an MCP endpoint (credentials already checked).
pub(crate) async fn serve(sb: &Arc<Host>, ctx: &Ctx) -> Response<SandboxBody> {
    let answer = match ctx.method.as_str() {
        "POST" => post(sb, ctx).await,
        "GET" => get(sb, ctx),
        "DELETE" => delete(sb, ctx),
        _ => Answer::rpc(405, RPC_SERVER_ERROR, "Method not allowed.")
            .with("allow", "GET, POST, DELETE".into()),
    };
    answer.into_response(&ctx.request_id)
}

/// The single value of a request header, `None` when absent; repeated headers are refused by
/// the callers as malformed.
fn one_header<'c>(ctx: &'c Ctx, name: &str) -> Result<Option<&'c str>, Answer> {
    match ctx.headers(name).as_slice() {
        [] => Ok(None),
        [v] => Ok(Some(v)),
        _ => Err(Answer::rpc(
            400,
            RPC_INVALID_REQUEST,
            &format!("Bad Request: more than one {name} header"),
        )),
    }
}

/// Resolves the endpoint to its session or server and identity.
fn target(sb: &Arc<Host>, ctx: &Ctx) -> Result<Target, Answer> {
    let Some((kind, id)) = endpoint(&ctx.segs) else {
        return Err(Answer::rpc(404, RPC_SERVER_ERROR, "Not found"));
    };
    let store = lock(&sb.store);
    match kind {
        EndpointKind::Session => store
            .session(id)
            .cloned()
            .map(Target::Session)
            .ok_or_else(|| {
                Answer::json(
                    404,
                    rpc_error(
                        &Value::Null,
                        RPC_SERVER_ERROR,
                        &format!("Tool router session {id} not found"),
                        None,
                    ),
                )
            }),
        EndpointKind::Server => {
            let Some(server) = store.mcp_servers.get(id) else {
                return Err(Answer::rpc(
                    404,
                    RPC_SERVER_ERROR,
                    &format!("MCP server {id} not found"),
                ));
            };
            let user = ctx.q("user_id").map(str::to_owned);
            let account = ctx.q("connected_account_id").map(str::to_owned);
            if user.is_none() && account.is_none() {
                return Err(Answer::rpc(
                    400,
                    RPC_SERVER_ERROR,
                    "Bad Request: the MCP URL needs a user_id or connected_account_id query parameter",
                ));
            }
            let tools = server_tools(&store, server);
            Ok(Target::Server {
                tools,
                server: id.to_owned(),
                user,
                account,
            })
        }
    }
}

fn server_tools(s: &Store, server: &store::McpServerRec) -> Vec<Tool> {
    s.tools
        .values()
        .filter(|t| server.toolkits.iter().any(|tk| tk == &t.toolkit))
        .filter(|t| server.allowed_tools.is_empty() || server.allowed_tools.contains(&t.slug))
        .cloned()
        .collect()
}

/// Which answer mode a POST gets, `None` when its `Accept` allows neither.
fn answer_mode(ctx: &Ctx, config: &McpConfig) -> Option<McpAnswer> {
    let accept = ctx.headers("accept").join(",").to_ascii_lowercase();
    let any = accept.is_empty() || accept.contains("*/*");
    let json_ok = any || accept.contains("application/json") || accept.contains("application/*");
    let sse_ok = any || accept.contains("text/event-stream") || accept.contains("text/*");
    let asked = match ctx.headers("x-sandbox-mcp-answer").first().copied() {
        Some(m) if m.eq_ignore_ascii_case("sse") => Some(McpAnswer::Sse),
        Some(m) if m.eq_ignore_ascii_case("json") => Some(McpAnswer::Json),
        _ => None,
    };
    match (json_ok, sse_ok) {
        (false, false) => None,
        (true, false) => Some(McpAnswer::Json),
        (false, true) => Some(McpAnswer::Sse),
        (true, true) => Some(asked.unwrap_or(config.answer)),
    }
}

fn is_json_content_type(ctx: &Ctx) -> bool {
    match ctx.headers("content-type").as_slice() {
        [v] => v
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
        _ => false,
    }
}

/// The protocol version a 2026-07-28 request names in its body.
fn meta_version(msg: &Value) -> Option<&str> {
    msg.get("params")?
        .get("_meta")?
        .get("io.modelcontextprotocol/protocolVersion")?
        .as_str()
}

/// A header value in the Base64 sentinel form (`=?base64?...?=`) decoded.
fn decode_header_value(v: &str) -> Option<String> {
    match v
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        None => Some(v.to_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    Stateful,
    Stateless,
}

async fn post(sb: &Arc<Host>, ctx: &Ctx) -> Answer {
    match post_inner(sb, ctx).await {
        Ok(a) | Err(a) => a,
    }
}

async fn post_inner(sb: &Arc<Host>, ctx: &Ctx) -> Result<Answer, Answer> {
    if !is_json_content_type(ctx) {
        return Err(Answer::rpc(
            415,
            RPC_SERVER_ERROR,
            "Unsupported Media Type: Content-Type must be application/json",
        ));
    }
    let config = lock(&sb.state).config.clone();
    let mode = answer_mode(ctx, &config).ok_or_else(|| {
        Answer::rpc(
            406,
            RPC_SERVER_ERROR,
            "Not Acceptable: Client must accept application/json or text/event-stream",
        )
    })?;
    let msg: Value = serde_json::from_slice(ctx.body())
        .map_err(|e| Answer::rpc(400, RPC_PARSE_ERROR, &format!("Parse error: {e}")))?;
    let version_header = one_header(ctx, "mcp-protocol-version")?;
    if let Some(v) = version_header {
        if v != MODERN_VERSION && !LEGACY_VERSIONS.contains(&v) {
            return Err(unsupported_version(v));
        }
    }
    let target = target(sb, ctx)?;
    let stateless = version_header == Some(MODERN_VERSION) || meta_version(&msg).is_some();
    if stateless {
        let messages = stateless_check(ctx, &msg, version_header)?;
        return Ok(respond(sb, ctx, Era::Stateless, mode, messages, false).await);
    }

    // Stateful: initialize opens a session, everything else needs one.
    let is_init = msg.get("method").and_then(Value::as_str) == Some("initialize");
    if is_init {
        return initialize(sb, &msg, &target, mode);
    }
    if let Some(batch) = msg.as_array() {
        if batch
            .iter()
            .any(|m| m.get("method").and_then(Value::as_str) == Some("initialize"))
        {
            return Err(Answer::rpc(
                400,
                RPC_INVALID_REQUEST,
                "Invalid Request: initialize must not be part of a batch",
            ));
        }
    }
    let version = session_version(sb, ctx, &target)?;
    let (messages, batch) = match msg {
        Value::Array(a) if version == BATCH_VERSION && !a.is_empty() => (a, true),
        Value::Array(_) => {
            return Err(Answer::rpc(
                400,
                RPC_INVALID_REQUEST,
                &format!(
                    "Invalid Request: batches are not supported by protocol version {version}"
                ),
            ))
        }
        one => (vec![one], false),
    };
    for m in &messages {
        check_envelope(m)?;
    }
    Ok(respond(sb, ctx, Era::Stateful, mode, messages, batch).await)
}

fn unsupported_version(v: &str) -> Answer {
    let mut supported = vec![MODERN_VERSION];
    supported.extend_from_slice(LEGACY_VERSIONS);
    Answer::json(
        400,
        rpc_error(
            &Value::Null,
            RPC_UNSUPPORTED_VERSION,
            &format!("Unsupported protocol version: {v}"),
            Some(json!({"supported": supported, "requested": v})),
        ),
    )
}

/// The negotiated version of the request's stateful session.
fn session_version(sb: &Arc<Host>, ctx: &Ctx, target: &Target) -> Result<String, Answer> {
    let Some(sid) = one_header(ctx, "mcp-session-id")? else {
        return Err(Answer::rpc(
            400,
            RPC_SERVER_ERROR,
            "Bad Request: Mcp-Session-Id header is required",
        ));
    };
    let state = lock(&sb.state);
    match state.sessions.get(sid) {
        Some(s) if s.binding == target.binding() => Ok(s.version.clone()),
        _ => Err(Answer::rpc(404, RPC_SESSION_NOT_FOUND, "Session not found")),
    }
}

/// A message must be a JSON-RPC 2.0 object.
fn check_envelope(m: &Value) -> Result<(), Answer> {
    let ok = m.is_object() && m.get("jsonrpc").and_then(Value::as_str) == Some("2.0");
    if ok {
        Ok(())
    } else {
        Err(Answer::json(
            400,
            rpc_error(
                m.get("id").unwrap_or(&Value::Null),
                RPC_INVALID_REQUEST,
                "Invalid Request: not a JSON-RPC 2.0 message",
                None,
            ),
        ))
    }
}

/// The 2026-07-28 rules: one request per POST, headers agreeing with the body.
fn stateless_check(
    ctx: &Ctx,
    msg: &Value,
    version_header: Option<&str>,
) -> Result<Vec<Value>, Answer> {
    if msg.is_array() {
        return Err(Answer::rpc(
            400,
            RPC_INVALID_REQUEST,
            "Invalid Request: batches are not supported by protocol version 2026-07-28",
        ));
    }
    check_envelope(msg)?;
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let mismatch =
        |message: String| Answer::json(400, rpc_error(&id, RPC_HEADER_MISMATCH, &message, None));
    let Some(method) = msg.get("method").and_then(Value::as_str) else {
        return Err(Answer::rpc(
            400,
            RPC_INVALID_REQUEST,
            "Invalid Request: clients must not send responses",
        ));
    };
    let body_version = meta_version(msg);
    match (version_header, body_version) {
        (Some(h), Some(b)) if h == b => {}
        (Some(h), b) => {
            return Err(mismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value '{h}' does not match body value '{}'",
                b.unwrap_or("")
            )))
        }
        (None, _) => {
            return Err(mismatch(
                "Header mismatch: the MCP-Protocol-Version header is required".into(),
            ))
        }
    }
    match one_header(ctx, "mcp-method")? {
        Some(h) if h == method => {}
        Some(h) => {
            return Err(mismatch(format!(
            "Header mismatch: Mcp-Method header value '{h}' does not match body value '{method}'"
        )))
        }
        None => {
            return Err(mismatch(
                "Header mismatch: the Mcp-Method header is required".into(),
            ))
        }
    }
    let name_field = match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(field) = name_field {
        let body_name = msg
            .get("params")
            .and_then(|p| p.get(field))
            .and_then(Value::as_str);
        match (
            one_header(ctx, "mcp-name")?.map(decode_header_value),
            body_name,
        ) {
            (Some(Some(h)), Some(b)) if h == b => {}
            (Some(h), b) => {
                return Err(mismatch(format!(
                    "Header mismatch: Mcp-Name header value '{}' does not match body value '{}'",
                    h.unwrap_or_default(),
                    b.unwrap_or("")
                )))
            }
            (None, _) => {
                return Err(mismatch(
                    "Header mismatch: the Mcp-Name header is required".into(),
                ))
            }
        }
    }
    Ok(vec![msg.clone()])
}

fn initialize(
    sb: &Arc<Host>,
    msg: &Value,
    target: &Target,
    mode: McpAnswer,
) -> Result<Answer, Answer> {
    check_envelope(msg)?;
    let id = msg.get("id").cloned().unwrap_or(Value::Null);
    let requested = msg
        .get("params")
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let version = if LEGACY_VERSIONS.contains(&requested) {
        requested
    } else {
        LEGACY_VERSIONS[0]
    };
    let sid = format!("mcp-{}", uuid::Uuid::new_v4().simple());
    let (ended, _) = watch::channel(false);
    lock(&sb.state).sessions.insert(
        sid.clone(),
        McpSession {
            binding: target.binding(),
            version: version.to_owned(),
            ended,
        },
    );
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": server_info(),
        "instructions": instructions(target),
    });
    Ok(Answer::reply(mode, rpc_result(&id, result)).with("mcp-session-id", sid))
}

fn server_info() -> Value {
    json!({"name": "composio-sandbox", "version": env!("CARGO_PKG_VERSION")})
}

fn instructions(target: &Target) -> String {
    match target {
        Target::Session(s) => format!(
            "Composio tool router session {} (sandbox): search tools with COMPOSIO_SEARCH_TOOLS, run them with COMPOSIO_MULTI_EXECUTE_TOOL.",
            s.id
        ),
        Target::Server { server, .. } => format!("Composio MCP server {server} (sandbox)."),
    }
}

/// The requested delay of a `tools/call` (`arguments.sandbox_delay_ms`).
fn requested_delay(m: &Value) -> Option<Duration> {
    if m.get("method").and_then(Value::as_str) != Some("tools/call") {
        return None;
    }
    let ms = m
        .get("params")?
        .get("arguments")?
        .get("sandbox_delay_ms")?
        .as_u64()?;
    Some(Duration::from_millis(ms).min(MAX_DELAY))
}

/// Answers the messages of one POST: 202 when none is a request; otherwise the responses,
/// after the longest requested delay, streamed when the mode is SSE.
async fn respond(
    sb: &Arc<Host>,
    ctx: &Ctx,
    era: Era,
    mode: McpAnswer,
    messages: Vec<Value>,
    batch: bool,
) -> Answer {
    let requests = messages
        .iter()
        .filter(|m| m.get("method").is_some() && m.get("id").is_some())
        .count();
    if requests == 0 {
        // Notifications and responses: accepted, nothing to answer.
        return Answer::empty(202);
    }
    let delay = messages.iter().filter_map(requested_delay).max();
    let counters = Arc::clone(&lock(&sb.state).counters);
    match (delay, mode) {
        (None, _) => finish(sb, ctx, era, mode, &messages, batch),
        (Some(d), McpAnswer::Json) => {
            let mut guard = CancelGuard {
                counters,
                armed: true,
            };
            tokio::time::sleep(d).await;
            guard.armed = false;
            finish(sb, ctx, era, mode, &messages, batch)
        }
        (Some(d), McpAnswer::Sse) => {
            let (tx, body) = StreamBody::new(&counters);
            let (sb, ctx) = (Arc::clone(sb), ctx.clone());
            tokio::spawn(async move {
                for m in &messages {
                    let token = m
                        .get("params")
                        .and_then(|p| p.get("_meta"))
                        .and_then(|meta| meta.get("progressToken"));
                    let first = match token {
                        Some(t) => sse_event(&json!({
                            "jsonrpc": "2.0",
                            "method": "notifications/progress",
                            "params": {"progressToken": t, "progress": 0, "total": 1, "message": "sandbox: working"},
                        })),
                        None => b": sandbox: working\n\n".to_vec(),
                    };
                    if tx.send(Bytes::from(first)).await.is_err() {
                        counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    () = tx.closed() => {
                        counters.cancelled.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                let responses = run_all(&sb, &ctx, era, &messages);
                let events: Vec<u8> = match (batch, responses) {
                    (true, r) => sse_event(&Value::Array(r)),
                    (false, r) => r.iter().flat_map(sse_event).collect(),
                };
                let _ = tx.send(Bytes::from(events)).await;
            });
            Answer {
                status: 200,
                body: AnswerBody::Stream(body),
                headers: Vec::new(),
            }
        }
    }
}

fn finish(
    sb: &Arc<Host>,
    ctx: &Ctx,
    era: Era,
    mode: McpAnswer,
    messages: &[Value],
    batch: bool,
) -> Answer {
    let mut responses = run_all(sb, ctx, era, messages);
    if !batch && era == Era::Stateless {
        // 2026-07-28: an unknown method is HTTP 404.
        if let Some(code) = responses.first().and_then(|r| r["error"]["code"].as_i64()) {
            if code == RPC_METHOD_NOT_FOUND {
                return Answer::json(404, responses.remove(0));
            }
        }
    }
    let body = if batch {
        Value::Array(responses)
    } else {
        responses.into_iter().next().unwrap_or(Value::Null)
    };
    match (batch, mode) {
        (true, McpAnswer::Sse) => Answer {
            status: 200,
            body: AnswerBody::Sse(vec![body]),
            headers: Vec::new(),
        },
        _ => Answer::reply(mode, body),
    }
}

/// The responses to the requests among `messages` (notifications get none).
fn run_all(sb: &Arc<Host>, ctx: &Ctx, era: Era, messages: &[Value]) -> Vec<Value> {
    messages
        .iter()
        .filter(|m| m.get("method").is_some() && m.get("id").is_some())
        .map(|m| {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            match dispatch(sb, ctx, era, m) {
                Ok(mut result) => {
                    if era == Era::Stateless && result.is_object() {
                        result["resultType"] = json!("complete");
                        if CACHEABLE.contains(&m["method"].as_str().unwrap_or_default()) {
                            // Per-user answers: never to be reused for anyone else.
                            result["ttlMs"] = json!(0);
                            result["cacheScope"] = json!("private");
                        }
                    }
                    rpc_result(&id, result)
                }
                Err((code, message)) => rpc_error(&id, code, &message, None),
            }
        })
        .collect()
}

type RpcResult = Result<Value, (i64, String)>;

fn dispatch(sb: &Arc<Host>, ctx: &Ctx, era: Era, m: &Value) -> RpcResult {
    let method = m.get("method").and_then(Value::as_str).unwrap_or_default();
    let params = m.get("params").cloned().unwrap_or_else(|| json!({}));
    if !params.is_object() {
        return Err((
            RPC_INVALID_PARAMS,
            "Invalid params: params must be an object".into(),
        ));
    }
    // The target again: the session may have changed (or gone) since the POST arrived.
    let target = target(sb, ctx).map_err(|_| {
        (
            RPC_SERVER_ERROR,
            "The session or server of this endpoint no longer exists".to_owned(),
        )
    })?;
    match (method, era) {
        ("ping", _) => Ok(json!({})),
        ("initialize", Era::Stateful) => Err((
            RPC_INVALID_REQUEST,
            "Invalid Request: the session is already initialized".into(),
        )),
        ("server/discover", Era::Stateless) => Ok(json!({
            "supportedVersions": [MODERN_VERSION],
            "capabilities": {"tools": {"listChanged": false}},
            "_meta": {"io.modelcontextprotocol/serverInfo": server_info()},
            "instructions": instructions(&target),
        })),
        ("tools/list", _) => Ok(json!({"tools": list_tools(sb, &target)})),
        ("tools/call", _) => call_tool(sb, ctx, &target, &params),
        _ => Err((RPC_METHOD_NOT_FOUND, format!("Method not found: {method}"))),
    }
}

/// An MCP tool: the same description and input schema as the REST definition (Composio's
/// MCP servers list the tools' own definitions), with any definition patch laid over it.
fn tool_json(store: &crate::store::Store, t: &Tool) -> Value {
    let title = store::title_case(&t.slug.to_ascii_lowercase());
    shapes::patched(
        json!({
            "name": t.slug,
            "title": title,
            "description": shapes::tool_description(t),
            "inputSchema": shapes::input_parameters(&t.slug),
        }),
        store.definition_patches.get(&t.slug),
        shapes::Shape::Mcp,
    )
}

fn list_tools(sb: &Arc<Host>, target: &Target) -> Vec<Value> {
    let store = lock(&sb.store);
    match target {
        Target::Session(session) => session::mcp_tools(&store, session)
            .iter()
            .map(|t| tool_json(&store, t))
            .collect(),
        Target::Server { tools, .. } => tools.iter().map(|t| tool_json(&store, t)).collect(),
    }
}

fn call_tool(sb: &Arc<Host>, ctx: &Ctx, target: &Target, params: &Value) -> RpcResult {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((
            RPC_INVALID_PARAMS,
            "Invalid params: name is required".into(),
        ));
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => {
            return Err((
                RPC_INVALID_PARAMS,
                "Invalid params: arguments must be an object".into(),
            ))
        }
    };
    let unknown = || (RPC_INVALID_PARAMS, format!("Unknown tool: {name}"));
    lock(&sb.state)
        .counters
        .tool_calls
        .fetch_add(1, Ordering::Relaxed);
    let mut store = lock(&sb.store);
    let outcome = match target {
        Target::Session(session) => {
            if store.tool(name).is_none() {
                return Err(unknown());
            }
            session::run_tool(ctx, &mut store, session, name, &arguments, None)
        }
        Target::Server {
            tools,
            user,
            account,
            ..
        } => {
            let Some(tool) = tools.iter().find(|t| t.slug == name) else {
                return Err(unknown());
            };
            let who = Who {
                user: user.as_deref(),
                account: account.as_deref(),
                custom_auth: false,
            };
            exec::resolve_account(ctx, &store, tool, who).map(|acc| {
                let data = if tool.slug == "COMPOSIO_MULTI_EXECUTE_TOOL" {
                    exec::multi_execute(ctx, &store, who, &arguments, TOOL_VERSION)
                } else {
                    exec::result_data(ctx, tool, who, acc.as_ref(), &arguments, TOOL_VERSION)
                };
                json!({
                    "data": data,
                    "error": null,
                    "successful": true,
                    "log_id": store.new_id("log"),
                })
            })
        }
    };
    Ok(match outcome {
        Ok(body) => json!({
            "content": [{"type": "text", "text": body.to_string()}],
            "structuredContent": body,
            "isError": false,
        }),
        Err(reply) => {
            let message = reply
                .message()
                .unwrap_or_else(|| "Tool execution failed".into());
            let structured = reply.json_body().cloned().unwrap_or_else(|| json!({}));
            json!({
                "content": [{"type": "text", "text": message}],
                "structuredContent": structured,
                "isError": true,
            })
        }
    })
}

fn get(sb: &Arc<Host>, ctx: &Ctx) -> Answer {
    let sid = match one_header(ctx, "mcp-session-id") {
        Ok(Some(sid)) => sid,
        Ok(None) => {
            return Answer::rpc(405, RPC_SERVER_ERROR, "Method not allowed.")
                .with("allow", "POST".into())
        }
        Err(a) => return a,
    };
    let accept = ctx.headers("accept").join(",").to_ascii_lowercase();
    if !(accept.contains("text/event-stream") || accept.contains("*/*")) {
        return Answer::rpc(
            406,
            RPC_SERVER_ERROR,
            "Not Acceptable: Client must accept text/event-stream",
        );
    }
    let target = match target(sb, ctx) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let state = lock(&sb.state);
    let Some(session) = state
        .sessions
        .get(sid)
        .filter(|s| s.binding == target.binding())
    else {
        return Answer::rpc(404, RPC_SESSION_NOT_FOUND, "Session not found");
    };
    if !state.config.get_stream {
        return Answer::rpc(405, RPC_SERVER_ERROR, "Method not allowed.")
            .with("allow", "POST, DELETE".into());
    }
    let mut ended = session.ended.subscribe();
    let keepalive = state.config.keepalive;
    let (tx, body) = StreamBody::new(&state.counters);
    drop(state);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => break,
                changed = ended.changed() => if changed.is_err() || *ended.borrow() { break },
                () = tokio::time::sleep(keepalive) => {
                    if tx.send(Bytes::from_static(b": keepalive\n\n")).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Answer {
        status: 200,
        body: AnswerBody::Stream(body),
        headers: vec![("mcp-session-id", sid.to_owned())],
    }
}

fn delete(sb: &Arc<Host>, ctx: &Ctx) -> Answer {
    let sid = match one_header(ctx, "mcp-session-id") {
        Ok(Some(sid)) => sid,
        Ok(None) => {
            return Answer::rpc(405, RPC_SERVER_ERROR, "Method not allowed.")
                .with("allow", "POST".into())
        }
        Err(a) => return a,
    };
    let target = match target(sb, ctx) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let mut state = lock(&sb.state);
    match state.sessions.get(sid) {
        Some(s) if s.binding == target.binding() => {
            if let Some(s) = state.sessions.remove(sid) {
                s.ended.send_replace(true);
            }
            Answer::empty(200)
        }
        _ => Answer::rpc(404, RPC_SESSION_NOT_FOUND, "Session not found"),
    }
}
