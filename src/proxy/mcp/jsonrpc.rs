//! JSON-RPC 2.0 as MCP uses it: strict parsing of what a client sends, the header/body
//! agreement of the 2026-07-28 transport, and the answers the gateway writes itself.
//!
//! Parsing is strict because a gateway and a server that read one message differently are a
//! bypass (batches past an authoriser, `Method` beside `method`, `name` twice). So:
//! - the body is exactly one JSON value, with no key repeated in any object at any depth
//!   ([`crate::rewrite::JsonObject::check_value`] does the checking), within the same
//!   `[limits]` depth and keys-per-object as a REST body;
//! - a message has only the keys JSON-RPC defines, spelled exactly (`Method` is refused, not
//!   ignored), `"jsonrpc": "2.0"`, an id that is a string or an integer;
//! - a batch is accepted only where the protocol version allows one (2025-03-26, the one
//!   revision with batches, and the version assumed when a client sends none), never holds
//!   `initialize`, and is decided element by element;
//! - `tools/call` params hold `name`, `arguments` (an object), `_meta` and `task` only.

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::rewrite::{JsonLimits, JsonObject};

/// The protocol revision that made Streamable HTTP stateless and added `Mcp-Method`.
pub(crate) const STATELESS_VERSION: &str = "2026-07-28";

/// JSON-RPC error codes the gateway answers with.
pub(crate) const PARSE_ERROR: i64 = -32700;
pub(crate) const INVALID_REQUEST: i64 = -32600;
pub(crate) const METHOD_NOT_FOUND: i64 = -32601;
pub(crate) const INTERNAL_ERROR: i64 = -32603;
/// MCP 2026-07-28: a header disagrees with the body.
pub(crate) const HEADER_MISMATCH: i64 = -32020;

/// Methods a client may send (requests and notifications). Anything else is answered with
/// `-32601` by the gateway and never forwarded.
const KNOWN_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// The method as a static label for metrics (bounded cardinality).
pub(crate) fn method_label(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("unknown")
}

/// What a client posted: one message or a batch.
#[derive(Debug)]
pub(crate) struct Posted {
    /// The messages, in order.
    pub(crate) messages: Vec<Message>,
    /// Whether they came as a JSON array.
    pub(crate) batch: bool,
}

/// One JSON-RPC message from the client.
#[derive(Debug)]
pub(crate) struct Message {
    /// The element exactly as received (forwarded byte for byte when allowed).
    pub(crate) raw: Box<RawValue>,
    /// What it is.
    pub(crate) kind: Kind,
}

/// The kinds of message a client sends.
#[derive(Debug)]
pub(crate) enum Kind {
    /// A request (has an id, expects an answer).
    Request {
        id: Value,
        method: String,
        params: Option<Map<String, Value>>,
    },
    /// A notification (no id, no answer).
    Notification {
        method: String,
        params: Option<Map<String, Value>>,
    },
    /// The client's answer to a request of the server (sampling, elicitation, roots).
    Response,
}

impl Message {
    /// The method, for requests and notifications.
    pub(crate) fn method(&self) -> Option<&str> {
        match &self.kind {
            Kind::Request { method, .. } | Kind::Notification { method, .. } => Some(method),
            Kind::Response => None,
        }
    }

    /// The params object, if any.
    pub(crate) fn params(&self) -> Option<&Map<String, Value>> {
        match &self.kind {
            Kind::Request { params, .. } | Kind::Notification { params, .. } => params.as_ref(),
            Kind::Response => None,
        }
    }

    /// The id of a request.
    pub(crate) fn id(&self) -> Option<&Value> {
        match &self.kind {
            Kind::Request { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the gateway knows this method.
    pub(crate) fn known(&self) -> bool {
        self.method().is_none_or(|m| KNOWN_METHODS.contains(&m))
    }

    /// The name the 2026-07-28 `Mcp-Name` header must repeat: a tool's or prompt's `name`,
    /// a resource's `uri`.
    fn name(&self) -> Option<&str> {
        let key = match self.method()? {
            "tools/call" | "prompts/get" => "name",
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => "uri",
            _ => return None,
        };
        self.params()?.get(key)?.as_str()
    }
}

/// A refusal of the message itself, answered as a JSON-RPC error with HTTP 400, or, for a
/// body past `[limits]` (`limit`), with that error as REST answers it.
#[derive(Debug)]
pub(crate) struct Invalid {
    pub(crate) code: i64,
    pub(crate) message: String,
    /// The JSON shape limit the body passed.
    pub(crate) limit: Option<Error>,
}

impl Invalid {
    pub(crate) fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            limit: None,
        }
    }

    fn request(message: impl Into<String>) -> Self {
        Self::new(INVALID_REQUEST, message)
    }

    /// The answer body: a JSON-RPC error with a null id (the message was not understood).
    pub(crate) fn body(&self) -> Value {
        json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": { "code": self.code, "message": self.message },
        })
    }
}

/// Parses a POSTed body strictly, within `limits` (`[limits] max_json_depth` and
/// `max_json_keys_per_object`, as for a REST body). `version` is the negotiated protocol
/// version (the `MCP-Protocol-Version` header), which decides whether a batch is allowed.
pub(crate) fn parse(
    body: &[u8],
    version: Option<&str>,
    limits: JsonLimits,
) -> Result<Posted, Invalid> {
    // Exactly one JSON value, first, then the strict pass over that value.
    let raw: Box<RawValue> = serde_json::from_slice(body)
        .map_err(|e| Invalid::new(PARSE_ERROR, format!("the body is not one JSON value: {e}")))?;
    if let Err(e) = JsonObject::check_value(raw.get(), limits) {
        return Err(match e {
            Error::DuplicateKey(k) => Invalid::request(format!("the key `{k}` is repeated")),
            e @ (Error::TooDeep(_) | Error::TooManyKeys(_)) => Invalid {
                limit: Some(e),
                ..Invalid::new(PARSE_ERROR, "the body is past the JSON limits")
            },
            other => Invalid::new(PARSE_ERROR, other.to_string()),
        });
    }
    let text = raw.get();
    if text.starts_with('[') {
        if !batches_allowed(version) {
            return Err(Invalid::request(
                "batches are not allowed in this protocol version",
            ));
        }
        let elements: Vec<Box<RawValue>> = serde_json::from_str(text)
            .map_err(|_| Invalid::request("the batch is not a list of messages"))?;
        if elements.is_empty() {
            return Err(Invalid::request("the batch is empty"));
        }
        let messages = elements
            .into_iter()
            .map(message)
            .collect::<Result<Vec<_>, _>>()?;
        if messages.iter().any(|m| m.method() == Some("initialize")) {
            return Err(Invalid::request("`initialize` must not be part of a batch"));
        }
        return Ok(Posted {
            messages,
            batch: true,
        });
    }
    Ok(Posted {
        messages: vec![message(raw)?],
        batch: false,
    })
}

/// Batches exist only in the 2025-03-26 revision, which is also what a server assumes when a
/// client sends no version.
fn batches_allowed(version: Option<&str>) -> bool {
    matches!(version, None | Some("2025-03-26"))
}

/// Whether `version` is the stateless revision or later (versions are dates).
pub(crate) fn is_stateless(version: Option<&str>) -> bool {
    version.is_some_and(|v| v.len() == 10 && v >= STATELESS_VERSION)
}

fn message(raw: Box<RawValue>) -> Result<Message, Invalid> {
    let v: Value =
        serde_json::from_str(raw.get()).map_err(|_| Invalid::request("a message is not JSON"))?;
    let Value::Object(mut m) = v else {
        return Err(Invalid::request("a message must be a JSON object"));
    };
    if let Some(k) = m.keys().find(|k| {
        !matches!(
            k.as_str(),
            "jsonrpc" | "id" | "method" | "params" | "result" | "error"
        )
    }) {
        return Err(Invalid::request(format!(
            "unexpected key `{}` in a JSON-RPC message",
            k.chars().take(64).collect::<String>()
        )));
    }
    if m.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(Invalid::request("`jsonrpc` must be \"2.0\""));
    }
    let id = match m.remove("id") {
        None => None,
        Some(id @ Value::String(_)) => Some(id),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(Value::Number(n)),
        Some(_) => return Err(Invalid::request("`id` must be a string or an integer")),
    };
    let kind = match m.remove("method") {
        Some(Value::String(method)) => {
            if m.contains_key("result") || m.contains_key("error") {
                return Err(Invalid::request("a request carries no `result` or `error`"));
            }
            let params = match m.remove("params") {
                None => None,
                Some(Value::Object(p)) => Some(p),
                Some(_) => return Err(Invalid::request("`params` must be an object")),
            };
            if method == "tools/call" {
                check_tool_call(params.as_ref())?;
            }
            match id {
                Some(id) => Kind::Request { id, method, params },
                None => Kind::Notification { method, params },
            }
        }
        Some(_) => return Err(Invalid::request("`method` must be a string")),
        None => {
            if m.contains_key("params")
                || id.is_none()
                || m.contains_key("result") == m.contains_key("error")
            {
                return Err(Invalid::request(
                    "a response needs an `id` and exactly one of `result` and `error`",
                ));
            }
            Kind::Response
        }
    };
    Ok(Message { raw, kind })
}

/// `tools/call` params: `name` (a string), `arguments` (an object, when present), `_meta`,
/// `task`; nothing else, so no spelling of `name` can hide beside it.
fn check_tool_call(params: Option<&Map<String, Value>>) -> Result<(), Invalid> {
    let p = params.ok_or_else(|| Invalid::request("`tools/call` needs params"))?;
    if let Some(k) = p
        .keys()
        .find(|k| !matches!(k.as_str(), "name" | "arguments" | "_meta" | "task"))
    {
        return Err(Invalid::request(format!(
            "unexpected key `{}` in `tools/call` params",
            k.chars().take(64).collect::<String>()
        )));
    }
    match p.get("name") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err(Invalid::request("`tools/call` needs a `name`")),
    }
    match p.get("arguments") {
        None | Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err(Invalid::request("`arguments` must be an object")),
    }
}

/// The MCP headers of a request, as the 2026-07-28 transport defines them.
#[derive(Debug, Default)]
pub(crate) struct McpHeaders<'a> {
    pub(crate) version: Option<&'a str>,
    pub(crate) method: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
}

/// Reads the MCP headers; a repeated or non-text one is a mismatch (-32020).
pub(crate) fn headers(h: &http::HeaderMap) -> Result<McpHeaders<'_>, Invalid> {
    fn one<'a>(h: &'a http::HeaderMap, name: &str) -> Result<Option<&'a str>, Invalid> {
        let mut all = h.get_all(name).iter();
        let first = all.next();
        if all.next().is_some() {
            return Err(Invalid::new(
                HEADER_MISMATCH,
                format!("the `{name}` header is repeated"),
            ));
        }
        first
            .map(|v| {
                v.to_str().map_err(|_| {
                    Invalid::new(HEADER_MISMATCH, format!("the `{name}` header is not text"))
                })
            })
            .transpose()
    }
    Ok(McpHeaders {
        version: one(h, "mcp-protocol-version")?,
        method: one(h, "mcp-method")?,
        name: one(h, "mcp-name")?,
    })
}

/// The 2026-07-28 rule: `Mcp-Method` and `Mcp-Name` repeat the body's method and name, so a
/// router that reads only headers and a server that reads the body agree. They are required
/// from that revision on, and must agree whenever sent, whatever the version.
pub(crate) fn check_headers(h: &McpHeaders<'_>, posted: &Posted) -> Result<(), Invalid> {
    let mismatch = |what: &str| Invalid::new(HEADER_MISMATCH, what.to_owned());
    if posted.batch {
        if h.method.is_some() || h.name.is_some() {
            return Err(mismatch("`Mcp-Method`/`Mcp-Name` cannot describe a batch"));
        }
        return Ok(());
    }
    let Some(msg) = posted.messages.first() else {
        return Err(Invalid::request("no message"));
    };
    match (h.method, msg.method()) {
        (Some(hm), Some(bm)) if hm != bm => {
            return Err(mismatch("the `Mcp-Method` header does not match the body"))
        }
        (Some(_), None) => {
            return Err(mismatch("`Mcp-Method` sent with a response message"));
        }
        (None, Some(_)) if is_stateless(h.version) => {
            return Err(mismatch("the `Mcp-Method` header is required"));
        }
        _ => {}
    }
    // 2026-07-28 requests name their version in the body too (`params._meta`).
    let body_version = msg
        .params()
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get(VERSION_META));
    match (h.version, body_version) {
        (Some(hv), Some(bv)) if bv.as_str() != Some(hv) => {
            return Err(mismatch(
                "the `MCP-Protocol-Version` header does not match the body",
            ))
        }
        (None, Some(_)) => {
            return Err(mismatch("the `MCP-Protocol-Version` header is required"));
        }
        (Some(hv), None) if is_stateless(Some(hv)) && msg.id().is_some() => {
            return Err(mismatch("the body does not name its protocol version"));
        }
        _ => {}
    }
    let header_name = h.name.map(decode_header_value);
    let header_name = match &header_name {
        Some(None) => return Err(mismatch("the `Mcp-Name` header is not decodable")),
        Some(Some(n)) => Some(n.as_str()),
        None => None,
    };
    match (header_name, msg.name()) {
        (Some(hn), Some(bn)) if hn != bn => {
            Err(mismatch("the `Mcp-Name` header does not match the body"))
        }
        (Some(_), None) => Err(mismatch("`Mcp-Name` sent for a message without a name")),
        (None, Some(_)) if is_stateless(h.version) => {
            Err(mismatch("the `Mcp-Name` header is required"))
        }
        _ => Ok(()),
    }
}

/// Where a 2026-07-28 request names its protocol version in the body.
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// A header value, decoded from the transport's Base64 form (`=?base64?…?=`, used for names
/// that are not plain ASCII); `None` when that form does not decode to UTF-8.
fn decode_header_value(v: &str) -> Option<String> {
    use base64::Engine as _;
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

/// A JSON-RPC error answer to request `id`.
pub(crate) fn error_answer(id: &Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(d) = data {
        error["data"] = d;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

/// A refused tool call, as the model should read it: a `CallToolResult` with `isError`, whose
/// text is the message REST gives for the same refusal and whose structured content is the
/// Composio-shaped error. Transient faults (the gateway could not decide) stay JSON-RPC
/// errors, so a client retries them rather than showing them to the model as an answer.
pub(crate) fn refused_call(id: &Value, e: &Error, request_id: &str) -> Value {
    let body = e.body(request_id);
    if e.status().is_server_error() {
        return error_answer(id, INTERNAL_ERROR, &e.to_string(), Some(body));
    }
    json!({
        "jsonrpc": "2.0",
        "id": id,
        "result": {
            "content": [{ "type": "text", "text": e.to_string() }],
            "structuredContent": body,
            "isError": true,
            // 2026-07-28 clients require it on every result; older ones ignore it.
            "resultType": "complete",
        },
    })
}

#[cfg(test)]
mod tests;
