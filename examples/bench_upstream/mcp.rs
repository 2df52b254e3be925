//! The MCP half of the stand-in: Composio's hosted MCP endpoints over Streamable HTTP, answered
//! as cheaply as possible (issue 32's MCP table), and the REST calls entitygate's MCP paths make
//! on Composio (the front door's tool router session, its owner lookup).
//!
//! Not a conformance double (the sandbox is that): every request is accepted with or without
//! an `Mcp-Session-Id`, stateful (2024-11-05 .. 2025-11-25) and stateless (2026-07-28) alike,
//! so that each gateway can be driven the way it recommends. Answers are built by copying fixed
//! bytes around the request's JSON-RPC id, without a JSON tree.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{Either, Full};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::Upstream;

/// What every handler answers with: a whole body, or a server stream that stays open.
pub(crate) type Answer = Response<Either<Full<Bytes>, OpenStream>>;

/// How POST answers are framed (`--mcp-answer`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Json,
    Sse,
}

/// Whether `path` is one of the MCP endpoints Composio hands out (and the plain `/mcp` a
/// gateway such as agentgateway or ContextForge is pointed at).
pub(crate) fn is_mcp_path(path: &str) -> bool {
    path == "/mcp"
        || path.starts_with("/v3/mcp/")
        || (path.starts_with("/tool_router/") && path.ends_with("/mcp"))
}

/// Protocol versions answered as asked; anything else gets the newest stateful one.
const VERSIONS: &[&str] = &[
    "2026-07-28",
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
];
const DEFAULT_VERSION: &str = "2025-06-18";

/// The `tools/list` result: the bench's GitHub tools ([`super::github_tools`], the definitions
/// the REST tool endpoints serve) as Composio's MCP servers list them, so that a gateway's tool
/// lock judging an MCP listing sees the same definitions it locked. Built once.
fn tools_list() -> &'static str {
    static LIST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LIST.get_or_init(|| {
        let tools: Vec<serde_json::Value> = super::github_tools()
            .into_iter()
            .map(|t| {
                serde_json::json!({
                    "name": t["slug"],
                    "description": t["description"],
                    "inputSchema": t["input_parameters"],
                    "outputSchema": t["output_parameters"],
                })
            })
            .collect();
        serde_json::json!({ "tools": tools }).to_string()
    })
}

/// What every `tools/call` answers: a small fixed result, as Composio's MCP servers shape it.
const CALL_RESULT: &str = r#"{"content":[{"type":"text","text":"{\"data\":{\"login\":\"octocat\",\"id\":583231,\"name\":\"The Octocat\"},\"successful\":true,\"error\":null}"}],"structuredContent":{"data":{"login":"octocat","id":583231,"name":"The Octocat"},"successful":true,"error":null},"isError":false}"#;

const CAPABILITIES: &str = r#""capabilities":{"tools":{"listChanged":false}},"serverInfo":{"name":"bench_upstream","version":"1.0.0"}"#;

/// The parts of a JSON-RPC message the stand-in reads; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "protocolVersion", borrow, default)]
    protocol_version: Option<&'a str>,
}

impl Upstream {
    /// One request on an MCP endpoint (`body`: the POST's, already read).
    pub(crate) fn mcp(self: &Arc<Self>, method: &Method, accept: &[u8], body: &[u8]) -> Answer {
        let s = &self.stats;
        match *method {
            Method::POST => {}
            Method::GET if contains(accept, b"text/event-stream") => {
                s.mcp_streams_opened.fetch_add(1, Ordering::Relaxed);
                s.mcp_streams_open.fetch_add(1, Ordering::Relaxed);
                let mut resp = Response::new(Either::Right(OpenStream {
                    up: self.clone(),
                    greeted: false,
                }));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                return resp;
            }
            Method::DELETE => {
                s.mcp_deletes.fetch_add(1, Ordering::Relaxed);
                return empty(StatusCode::OK);
            }
            _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
        }
        let Ok(msg) = serde_json::from_slice::<Message<'_>>(body) else {
            s.mcp_other.fetch_add(1, Ordering::Relaxed);
            return self.framed(rpc_error(None, -32700, "Parse error"), None);
        };
        let (Some(id), Some(method)) = (msg.id, msg.method) else {
            // A notification or a client's response: accepted, nothing to answer.
            s.mcp_notifications.fetch_add(1, Ordering::Relaxed);
            return empty(StatusCode::ACCEPTED);
        };
        match method {
            "tools/call" => {
                s.mcp_calls.fetch_add(1, Ordering::Relaxed);
                self.framed(rpc_result(id, CALL_RESULT), None)
            }
            "initialize" | "server/discover" => {
                s.mcp_initialize.fetch_add(1, Ordering::Relaxed);
                let asked = msg.params.and_then(|p| p.protocol_version);
                let version = asked
                    .filter(|v| VERSIONS.contains(v))
                    .unwrap_or(DEFAULT_VERSION);
                let result = format!(r#"{{"protocolVersion":"{version}",{CAPABILITIES}}}"#);
                let n = self.next_session.fetch_add(1, Ordering::Relaxed);
                let session = (method == "initialize")
                    .then(|| HeaderValue::from_str(&format!("bench-{n:016x}")))
                    .and_then(Result::ok);
                self.framed(rpc_result(id, &result), session)
            }
            "tools/list" => {
                s.mcp_lists.fetch_add(1, Ordering::Relaxed);
                self.framed(rpc_result(id, tools_list()), None)
            }
            "ping" => {
                s.mcp_other.fetch_add(1, Ordering::Relaxed);
                self.framed(rpc_result(id, "{}"), None)
            }
            _ => {
                s.mcp_other.fetch_add(1, Ordering::Relaxed);
                self.framed(rpc_error(Some(id), -32601, "Method not found"), None)
            }
        }
    }

    /// A JSON-RPC answer as `application/json` or as a one-event `text/event-stream`.
    fn framed(&self, message: Vec<u8>, session: Option<HeaderValue>) -> Answer {
        let (body, media) = match self.framing {
            Framing::Json => (message, "application/json"),
            Framing::Sse => {
                let mut b = Vec::with_capacity(message.len() + 24);
                b.extend_from_slice(b"event: message\ndata: ");
                b.extend_from_slice(&message);
                b.extend_from_slice(b"\n\n");
                (b, "text/event-stream")
            }
        };
        let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
        if let Some(id) = session {
            resp.headers_mut().insert("mcp-session-id", id);
        }
        resp
    }

    /// `POST /api/v3.1/tool_router/session`: a session for the body's `user_id`, whose id
    /// names the user so that the owner lookup needs no table.
    pub(crate) fn create_session(&self, body: &[u8]) -> Answer {
        #[derive(Deserialize)]
        struct Create<'a> {
            #[serde(borrow)]
            user_id: &'a str,
        }
        let user = match serde_json::from_slice::<Create<'_>>(body) {
            Ok(c) if is_identifier(c.user_id) => c.user_id,
            _ => return json_answer(StatusCode::BAD_REQUEST, r#"{"error":"user_id"}"#.into()),
        };
        self.stats.sessions_created.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "session_id": format!("trs_{user}"),
            "config": {"user_id": user},
            "mcp": {"type": "http", "url": format!("https://backend.composio.dev/tool_router/trs_{user}/mcp")},
        });
        json_answer(StatusCode::OK, body.to_string())
    }

    /// `GET /api/v3.1/tool_router/session/{id}`: the owner of a session `create_session` made.
    pub(crate) fn session_owner(&self, id: &str) -> Answer {
        self.stats.session_lookups.fetch_add(1, Ordering::Relaxed);
        match id.strip_prefix("trs_").filter(|u| is_identifier(u)) {
            Some(user) => json_answer(
                StatusCode::OK,
                serde_json::json!({"session_id": id, "config": {"user_id": user}}).to_string(),
            ),
            None => json_answer(
                StatusCode::NOT_FOUND,
                r#"{"error":{"message":"no such session"}}"#.into(),
            ),
        }
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn rpc_result(id: &RawValue, result: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(40 + id.get().len() + result.len());
    b.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    b.extend_from_slice(id.get().as_bytes());
    b.extend_from_slice(br#","result":"#);
    b.extend_from_slice(result.as_bytes());
    b.push(b'}');
    b
}

fn rpc_error(id: Option<&RawValue>, code: i32, message: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":{},"error":{{"code":{code},"message":"{message}"}}}}"#,
        id.map_or("null", RawValue::get)
    )
    .into_bytes()
}

pub(crate) fn json_answer(status: StatusCode, body: String) -> Answer {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn empty(status: StatusCode) -> Answer {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::new())));
    *resp.status_mut() = status;
    resp
}

/// A server-to-client event stream with nothing to say: one comment, then open until the
/// client leaves (hyper drops the body then, which counts the stream closed).
pub(crate) struct OpenStream {
    up: Arc<Upstream>,
    greeted: bool,
}

impl Body for OpenStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.greeted {
            // Never woken: nothing more is ever sent.
            return Poll::Pending;
        }
        self.greeted = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b": open\n\n")))))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.up
            .stats
            .mcp_streams_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}
