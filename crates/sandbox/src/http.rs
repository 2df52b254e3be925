//! The per-request context the routes read, and the reply they produce.

use bytes::Bytes;
use http::{header, HeaderValue, StatusCode};
use http_body_util::Full;
use hyper::Response;
use serde_json::{json, Value};

use crate::model::Recorded;

/// Which API family a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/api/v1/...` (old SDK).
    V1,
    /// `/api/v2/...` (old SDK).
    V2,
    /// `/api/v3/...`: the previous version; omitted tool versions mean `00000000_00`.
    V3,
    /// `/api/v3.1/...`: the current version; omitted tool versions mean `latest`.
    V31,
    /// Composio's hosted MCP endpoints (`/tool_router/{session}/mcp`, `/v3/mcp/{server}`):
    /// Streamable HTTP, see `mcp`. `segs` holds every path segment.
    Mcp,
    /// Anything else: 404.
    Other,
}

/// What a route sees of a request.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) api: Api,
    /// Upper-case method.
    pub(crate) method: String,
    /// Decoded path segments after `/api/<version>/`.
    pub(crate) segs: Vec<String>,
    /// The request's path as sent (a scoped key's refusals match on it).
    pub(crate) path: String,
    pub(crate) request_id: String,
    /// `scheme://host` the request was addressed to: hosted URLs in responses (MCP) point
    /// there, as Composio's point at Composio.
    pub(crate) origin: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Bytes,
}

/// A reply before it becomes a hyper response.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    body: ReplyBody,
}

#[derive(Debug, Clone)]
enum ReplyBody {
    Json(Value),
    Raw(&'static str, Bytes),
}

// === impl Api ===

impl Api {
    /// The version label echoed in execution results.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
            Api::V3 => "v3",
            Api::V31 => "v3.1",
            Api::Mcp => "mcp",
            Api::Other => "",
        }
    }
}

// === impl Ctx ===

impl Ctx {
    pub(crate) fn new(r: &Recorded, request_id: String, origin: String) -> Self {
        let trimmed = r.path.trim_end_matches('/');
        let mut raw = trimmed.split('/').skip(1);
        let api = match (raw.next(), raw.next()) {
            (Some("api"), Some("v1")) => Api::V1,
            (Some("api"), Some("v2")) => Api::V2,
            (Some("api"), Some("v3")) => Api::V3,
            (Some("api"), Some("v3.1")) => Api::V31,
            _ => Api::Other,
        };
        let mut segs: Vec<String> = raw.map(percent_decode).collect();
        let mut api = api;
        // A JSON-RPC POST to `/api/{v3}/mcp/{server_id}` is the server's MCP endpoint too (GET
        // and DELETE there are the REST retrieve and delete of the server's configuration).
        let api_server_post = matches!(api, Api::V3 | Api::V31)
            && r.method.eq_ignore_ascii_case("POST")
            && matches!(segs.as_slice(), [m, id] if m == "mcp" && id != "servers");
        if api == Api::Other || api_server_post {
            let all: Vec<String> = trimmed.split('/').skip(1).map(percent_decode).collect();
            if is_endpoint(&all) {
                api = Api::Mcp;
                segs = all;
            }
        }
        Self {
            api,
            method: r.method.to_ascii_uppercase(),
            segs,
            path: r.path.clone(),
            request_id,
            origin,
            query: r.query_pairs(),
            headers: r.headers.clone(),
            body: r.body.clone(),
        }
    }

    /// Matches the method and the path segments against `pattern`, where `*` matches any one
    /// segment; answers the segments matched by `*`, in order.
    pub(crate) fn at(&self, method: &str, pattern: &[&str]) -> Option<Vec<&str>> {
        if self.method != method || self.segs.len() != pattern.len() {
            return None;
        }
        let mut captured = Vec::new();
        for (seg, pat) in self.segs.iter().zip(pattern) {
            if *pat == "*" {
                captured.push(seg.as_str());
            } else if !seg.eq_ignore_ascii_case(pat) {
                return None;
            }
        }
        Some(captured)
    }

    /// Whether the path (ignoring the method) matches `pattern`.
    pub(crate) fn path_is(&self, pattern: &[&str]) -> bool {
        self.segs.len() == pattern.len()
            && self
                .segs
                .iter()
                .zip(pattern)
                .all(|(s, p)| *p == "*" || s.eq_ignore_ascii_case(p))
    }

    /// Every value of a request header.
    pub(crate) fn headers(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first non-empty value of query parameter `key`.
    pub(crate) fn q(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A boolean query parameter (`true`/`false`, `1`/`0`).
    pub(crate) fn q_bool(&self, key: &str) -> Option<bool> {
        match self.q(key)?.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" => Some(false),
            _ => None,
        }
    }

    /// A list parameter under any of `keys`: comma lists, repeated parameters and the
    /// `key[]` / `key[n]` forms all add up. `None` when no non-empty value was given.
    pub(crate) fn q_list(&self, keys: &[&str]) -> Option<Vec<String>> {
        let mut out = Vec::new();
        for (k, v) in &self.query {
            let base = k.split('[').next().unwrap_or(k);
            if keys.contains(&base) {
                out.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
        }
        (!out.is_empty()).then_some(out)
    }

    /// The raw body.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON; an empty body is `{}`.
    ///
    /// # Errors
    /// A validation reply when the body is not JSON.
    pub(crate) fn json(&self) -> Result<Value, Reply> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| self.validation(&format!("The request body is not valid JSON: {e}")))
    }

    // --- errors ---

    /// An error in Composio's envelope; on v1/v2 paths the old flat fields are added too.
    pub(crate) fn error(
        &self,
        status: u16,
        code: u32,
        slug: &str,
        message: &str,
        fix: &str,
    ) -> Reply {
        let mut body = json!({
            "error": {
                "message": message,
                "code": code,
                "slug": slug,
                "status": status,
                "request_id": self.request_id,
                "suggested_fix": fix,
            }
        });
        if matches!(self.api, Api::V1 | Api::V2) {
            if let Some(obj) = body.as_object_mut() {
                obj.insert("type".into(), json!(legacy_type(status)));
                obj.insert("status".into(), json!(status));
                obj.insert("message".into(), json!(message));
                obj.insert("requestId".into(), json!(self.request_id));
            }
        }
        Reply::status(status, body)
    }

    /// 400, validation.
    pub(crate) fn validation(&self, message: &str) -> Reply {
        let mut reply = self.error(
            400,
            10400,
            "HTTP_ValidationError",
            "Validation error while processing request",
            "Please check the payload.",
        );
        if let ReplyBody::Json(body) = &mut reply.body {
            body["error"]["errors"] = json!([message]);
        }
        reply
    }

    /// 404 for a resource that does not exist.
    pub(crate) fn not_found(&self, slug: &str, message: &str) -> Reply {
        self.error(404, 10404, slug, message, "Check the identifier.")
    }

    /// 404 for a path the API does not have.
    pub(crate) fn not_found_route(&self) -> Reply {
        self.error(
            404,
            10404,
            "HTTP_NotFound",
            &format!("Cannot {} this path", self.method),
            "Check the API path and method.",
        )
    }

    /// 400 / 1803: no usable connected account.
    pub(crate) fn no_account(&self, message: &str) -> Reply {
        self.error(
            400,
            1803,
            "ActionExecute_ConnectedAccountNotFound",
            message,
            "Connect the user to the toolkit first, or pass an active connected_account_id.",
        )
    }

    /// 400 / 1812: the account belongs to another user.
    pub(crate) fn wrong_owner(&self, account: &str, user: &str) -> Reply {
        self.error(
            400,
            1812,
            "ActionExecute_ConnectedAccountEntityIdMismatch",
            &format!(
                "Connected account user ID does not match the provided user ID. Connected account {account} does not belong to user {user}."
            ),
            "The connected_account_id you provided belongs to a different entity. Pass the user_id the account was created for.",
        )
    }

    /// 400 / 1810: the account is for another toolkit than the tool.
    pub(crate) fn wrong_toolkit(
        &self,
        account: &str,
        account_toolkit: &str,
        toolkit: &str,
    ) -> Reply {
        self.error(
            400,
            1810,
            "ActionExecute_ConnectedAccountToolkitMismatch",
            &format!("Connected account {account} is for toolkit {account_toolkit}, not {toolkit}"),
            "Pass a connected account of the tool's toolkit.",
        )
    }

    /// The reply for an injected [`crate::Fault::Status`].
    pub(crate) fn injected_status(&self, status: u16) -> Reply {
        self.error(
            status,
            10000 + u32::from(status),
            "Sandbox_InjectedFault",
            &format!("Injected fault: HTTP {status}"),
            "This status was injected by the test.",
        )
    }
}

fn legacy_type(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        401 => "UnauthorizedError",
        403 => "ForbiddenError",
        404 => "NotFoundError",
        _ => "HttpError",
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl Reply ===

impl Reply {
    /// 200 with JSON.
    pub(crate) fn ok(body: Value) -> Self {
        Self::status(200, body)
    }

    /// 201 with JSON (v3 creations; never on v1/v2, where the old SDK needs exactly 200).
    pub(crate) fn created(body: Value) -> Self {
        Self::status(201, body)
    }

    /// Any status with JSON.
    pub(crate) fn status(status: u16, body: Value) -> Self {
        Self {
            status,
            body: ReplyBody::Json(body),
        }
    }

    /// 200 whose body is not JSON.
    pub(crate) fn garbage() -> Self {
        Self {
            status: 200,
            body: ReplyBody::Raw(
                "text/html; charset=utf-8",
                Bytes::from_static(b"<html><body>502 Bad Gateway (not JSON)</body></html>"),
            ),
        }
    }

    /// The JSON body of a reply (`None` for a raw one).
    pub(crate) fn json_body(&self) -> Option<&Value> {
        match &self.body {
            ReplyBody::Json(v) => Some(v),
            ReplyBody::Raw(..) => None,
        }
    }

    /// The error message of an error reply.
    pub(crate) fn message(&self) -> Option<String> {
        match &self.body {
            ReplyBody::Json(v) => v["error"]["message"].as_str().map(str::to_owned),
            ReplyBody::Raw(..) => None,
        }
    }

    pub(crate) fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let (ctype, bytes) = match self.body {
            ReplyBody::Json(v) => (
                "application/json",
                Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
            ),
            ReplyBody::Raw(ctype, bytes) => (ctype, bytes),
        };
        let mut resp = Response::new(Full::new(bytes));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        resp
    }
}

// === MCP endpoints ===

/// Whether the path segments name an MCP endpoint.
pub(crate) fn is_endpoint(segs: &[String]) -> bool {
    endpoint(segs).is_some()
}

/// The two kinds of hosted MCP endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointKind {
    /// A tool-router session's (`/tool_router/{id}/mcp`).
    Session,
    /// A hosted MCP server's (`/v3/mcp/{id}`).
    Server,
}

/// The MCP endpoint the path segments name, and its session or server id.
pub(crate) fn endpoint(segs: &[String]) -> Option<(EndpointKind, &str)> {
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        ["tool_router", "v3", id, "mcp"] | ["tool_router", id, "mcp"] => {
            Some((EndpointKind::Session, id))
        }
        ["v3", "mcp", id] | ["v3", "mcp", id, "mcp"] | ["api", "v3" | "v3.1", "mcp", id] => {
            Some((EndpointKind::Server, id))
        }
        _ => None,
    }
}
