//! MCP through the gateway: Composio's hosted MCP endpoints served over Streamable HTTP, with
//! every JSON-RPC message inspected in both directions.
//!
//! Paths (rows in [`crate::routes`]): a tool router session's `/tool_router/{id}/mcp`, an MCP
//! server's `/v3/mcp/{id}` (and `POST /api/{v3}/mcp/{id}`), and with `[mcp] front_door` the
//! subject's own `/mcp` ([`front_door`]). Each accepts `POST` (JSON-RPC in; the answer is
//! `application/json` or a `text/event-stream`), `GET` (the server's stream) and `DELETE` (end
//! the MCP session).
//!
//! A request goes through the same flow as any other (token from `x-api-key` or
//! `Authorization: Bearer`, never from the query; rate limits; the audit trail), then:
//! 1. the endpoint must be the subject's: a session Composio says is theirs, a server URL
//!    whose `user_id` is forced to the subject and whose `connected_account_id` (if any) is
//!    theirs — else 404 and nothing goes upstream;
//! 2. a POST body is read by the one body reader of every carrier
//!    ([`crate::proxy::Ctx::read_body`]) and parsed strictly within the same `[limits]` as a
//!    REST body ([`jsonrpc`]); the 2026-07-28 `Mcp-Method`/`Mcp-Name`
//!    headers must agree with it (else 400, `-32020`); methods outside a known list get
//!    `-32601`; every `tools/call` goes through the one decision of
//!    [`crate::invocation`] and a refusal is answered by the gateway as a tool result with
//!    `isError` (nothing upstream); each element of a batch is decided on its own;
//! 3. what is forwarded carries the real key only and the MCP headers (`Mcp-Session-Id`
//!    passes through: the older stateful transport);
//! 4. the answer is inspected: JSON answers whole, event streams event by event ([`sse`]);
//!    each `tools/call` answer goes through the after-execution step by its JSON-RPC id
//!    ([`Calls`], [`crate::proxy::after::after_execution`]);
//!    `tools/list` results keep only what the tool policy lets the caller run; the key is
//!    redacted; a stream has its own idle timeout and ends upstream when the client leaves.
//!
//! Outside the flow: `GET /.well-known/oauth-protected-resource` (RFC 9728) is answered
//! without a token, every 401 on an MCP path names it in `WWW-Authenticate`, and a browser
//! `Origin` other than the gateway's own or `[mcp] allowed_origins` is refused with 403.
//! Relayed REST answers that carry Composio MCP URLs have them moved onto `public_url`
//! ([`rewrite`]).

pub(crate) mod front_door;
pub(crate) mod jsonrpc;
pub(crate) mod rewrite;
mod session_id;
pub(crate) mod sse;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::audit::Audit;
use crate::auth::Identity;
use crate::body::{Redact, RequestBody, ResponseBody};
use crate::error::Error;
use crate::headers;
use crate::proxy::{Ctx, Shared};
use crate::rewrite::{folded_eq, is_account_key, is_account_list_key, is_identity_key};
use crate::routes::McpTarget;
use crate::upstream::TimeoutClass;

use jsonrpc::Invalid;

/// The RFC 9728 metadata path.
pub(crate) const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// The stateful transport's session header (bound to the subject, [`session_id`]).
const MCP_SESSION_ID: &str = "mcp-session-id";

/// MCP headers forwarded upstream (one value each; the session id as Composio issued it).
const FORWARD_HEADERS: &[&str] = &[
    "mcp-session-id",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
];

/// Ids Composio uses as collections or actions beside `/mcp/{id}`: never a server id.
const RESERVED_IDS: &[&str] = &["servers", "custom", "generate", "app", "list", "enum"];

/// Largest JSON answer inspected whole.
const MAX_JSON_ANSWER: usize = 32 * 1024 * 1024;

/// Query keys that carry a token: refused on MCP paths (tokens travel in headers only).
const TOKEN_QUERY_KEYS: &[&str] = &[
    "accesstoken",
    "token",
    "apikey",
    "xapikey",
    "authorization",
    "jwt",
    "idtoken",
    "bearer",
];

/// Whether `path` is one of the gateway's MCP endpoints.
pub(crate) fn is_mcp_path(path: &str) -> bool {
    path == "/mcp"
        || (path.starts_with("/tool_router/") && path.ends_with("/mcp"))
        || path.starts_with("/v3/mcp/")
        || (path.starts_with("/api/v3") && path.contains("/mcp/") && !path.contains("/servers"))
}

/// What happens on an MCP path before the token is read: the metadata document, the token
/// in the query, the `Origin` check. `Ok(Some)` is an answer; `Ok(None)` continues.
///
/// # Errors
/// [`Error::QueryNotAllowed`] for a token in the query, [`Error::OriginNotAllowed`].
pub(crate) fn before_auth(
    shared: &Shared,
    parts: &http::request::Parts,
    path: &str,
) -> Result<Option<Response<ResponseBody>>, Error> {
    if path == WELL_KNOWN || path.strip_prefix(WELL_KNOWN).is_some_and(is_mcp_path) {
        if parts.method != Method::GET {
            return Err(Error::RouteNotAllowed);
        }
        return Ok(Some(metadata(shared, parts, path)?));
    }
    if !is_mcp_path(path) {
        return Ok(None);
    }
    for (k, _) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        if TOKEN_QUERY_KEYS.iter().any(|t| folded_eq(&k, t)) {
            return Err(Error::QueryNotAllowed(k.chars().take(64).collect()));
        }
    }
    check_origin(shared, parts)?;
    Ok(None)
}

/// A browser request names its `Origin`: it must be the gateway's own or an allowed one
/// (DNS rebinding). Clients that are not browsers send none.
fn check_origin(shared: &Shared, parts: &http::request::Parts) -> Result<(), Error> {
    let mut all = parts.headers.get_all(header::ORIGIN).iter();
    let Some(origin) = all.next() else {
        return Ok(());
    };
    if all.next().is_some() {
        return Err(Error::OriginNotAllowed);
    }
    let origin = origin
        .to_str()
        .map_err(|_| Error::OriginNotAllowed)?
        .to_ascii_lowercase();
    let own = public_base(shared, &parts.uri, &parts.headers)
        .ok()
        .and_then(|b| crate::config::origin_of(&b).ok());
    if own.as_deref() == Some(origin.as_str()) || shared.mcp.allowed_origins.contains(&origin) {
        return Ok(());
    }
    tracing::warn!(origin, "MCP request from a foreign origin refused");
    Err(Error::OriginNotAllowed)
}

/// The gateway's public base URL: `public_url`, else (loopback listeners only, enforced at
/// start-up) the scheme and authority the request was sent to.
pub(crate) fn public_base(
    shared: &Shared,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Result<String, Error> {
    if let Some(p) = &shared.public_url {
        return Ok(p.clone());
    }
    let authority: http::uri::Authority = match uri.authority() {
        Some(a) => a.clone(),
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse().ok())
            .ok_or(Error::RequestTargetInvalid)?,
    };
    // Only a loopback name: a rebound DNS name (`Host: evil.example` reaching 127.0.0.1) must
    // neither become the gateway's origin in answers nor pass the `Origin` check as its own.
    if authority.as_str().contains('@') || !crate::config::is_loopback_host(authority.host()) {
        return Err(Error::RequestTargetInvalid);
    }
    // And only the port the request can have arrived on (or none: the scheme's default), so a
    // `Host: localhost:99999` is never handed back as the gateway's address.
    // Read as text: `http` parses no port from `:99999` and would let it pass unchecked.
    let port = authority
        .as_str()
        .strip_prefix(authority.host())
        .ok_or(Error::RequestTargetInvalid)?;
    if !port.is_empty() {
        let own = shared
            .listen_port
            .load(std::sync::atomic::Ordering::Relaxed);
        if own == 0 || port.strip_prefix(':') != Some(own.to_string().as_str()) {
            return Err(Error::RequestTargetInvalid);
        }
    }
    let scheme = if shared.tls.is_some() {
        "https"
    } else {
        "http"
    };
    Ok(format!("{scheme}://{authority}"))
}

/// The metadata document's URL for an MCP path (RFC 9728 §3.1: the resource's path after
/// the well-known prefix).
pub(crate) fn metadata_url(
    shared: &Shared,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Option<String> {
    let base = public_base(shared, uri, headers).ok()?;
    Some(format!("{base}{WELL_KNOWN}"))
}

/// `WWW-Authenticate` for a 401 on an MCP path.
pub(crate) fn www_authenticate(
    shared: &Shared,
    uri: &http::Uri,
    headers: &HeaderMap,
) -> Option<HeaderValue> {
    let url = metadata_url(shared, uri, headers)?;
    HeaderValue::from_str(&format!(
        "Bearer error=\"invalid_token\", resource_metadata=\"{url}\""
    ))
    .ok()
}

/// RFC 9728 protected-resource metadata.
fn metadata(
    shared: &Shared,
    parts: &http::request::Parts,
    path: &str,
) -> Result<Response<ResponseBody>, Error> {
    let base = public_base(shared, &parts.uri, &parts.headers)?;
    let resource_path = path.strip_prefix(WELL_KNOWN).unwrap_or("");
    let servers: Vec<&str> = if shared.mcp.authorization_servers.is_empty() {
        shared.issuer.iter().map(String::as_str).collect()
    } else {
        shared
            .mcp
            .authorization_servers
            .iter()
            .map(String::as_str)
            .collect()
    };
    // The root document describes the whole gateway (every MCP path is under it); the
    // path-suffixed form (RFC 9728 §3.1) describes that one endpoint.
    let body = json!({
        "resource": format!("{base}{resource_path}"),
        "authorization_servers": servers,
        "bearer_methods_supported": ["header"],
        "resource_name": "entitygate",
    });
    let mut resp = Response::new(crate::body::full(
        serde_json::to_vec(&body).map_err(|_| Error::Internal)?,
    ));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// Where a request goes upstream, once the endpoint is known to be the subject's.
struct Target {
    path: String,
    query: Option<String>,
    /// The connected account the server URL is pinned to, for the decision.
    account: Option<String>,
}

/// Serves one request on an MCP endpoint.
pub(crate) async fn handle(
    ctx: &Ctx<'_>,
    shared: &Arc<Shared>,
    body: RequestBody,
    target: McpTarget,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let target = resolve(ctx, target, audit).await?;
    let method = ctx.parts.method.clone();
    crate::metrics::mcp_http(method.as_str());
    if method == Method::POST {
        post(ctx, shared, body, &target, audit).await
    } else {
        let resp = forward(ctx, &target, None, TimeoutClass::Default, audit).await?;
        relay(ctx, shared, resp, Vec::new(), false, Calls::default()).await
    }
}

/// Checks the endpoint is the subject's and works out the upstream path and query.
async fn resolve(ctx: &Ctx<'_>, target: McpTarget, audit: &mut Audit) -> Result<Target, Error> {
    let query = ctx.parts.uri.query();
    match target {
        McpTarget::Session | McpTarget::FrontDoor => {
            let id = if target == McpTarget::FrontDoor {
                if !ctx.shared.mcp.front_door {
                    return Err(Error::RouteNotAllowed);
                }
                front_door::session(ctx, audit).await?
            } else {
                ctx.matched.param(0).ok_or(Error::Internal)?.to_owned()
            };
            audit.session(&id);
            let owner = ctx.shared.connections.session_owner(&id).await?;
            if owner.as_deref() != Some(ctx.subject()) {
                return Err(Error::NotFound);
            }
            // A session URL names its user by the session alone.
            let (query, _) = crate::rewrite::scope_query(query, None, ctx.subject(), true)?;
            Ok(Target {
                path: format!("/tool_router/{id}/mcp"),
                query,
                account: None,
            })
        }
        McpTarget::Server => {
            let id = ctx.matched.param(0).ok_or(Error::Internal)?;
            if RESERVED_IDS.iter().any(|r| r.eq_ignore_ascii_case(id)) {
                return Err(Error::RouteNotAllowed);
            }
            let mut accounts = Vec::new();
            for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
                let base = k.split(['[', '.']).next().unwrap_or(&k);
                let names_account = |k: &str| is_account_key(k) || is_account_list_key(k);
                if base.len() != k.len() && (is_identity_key(base) || names_account(base)) {
                    return Err(Error::QueryNotAllowed(k.chars().take(64).collect()));
                }
                if names_account(&k) && !accounts.contains(&v.to_string()) {
                    accounts.push(v.into_owned());
                }
            }
            if accounts.len() > 1 {
                return Err(Error::QueryNotAllowed("connected_account_id".into()));
            }
            let account = accounts.pop();
            if let Some(a) = &account {
                audit.account(a);
                let owned = ctx
                    .shared
                    .connections
                    .owned_account(&ctx.identity.subject, a)
                    .await?
                    .ok_or(Error::ConnectedAccountNotOwned)?;
                audit.toolkit(&owned.toolkit);
            }
            let (query, mismatch) =
                crate::rewrite::scope_query(query, Some("user_id"), ctx.subject(), false)?;
            ctx.on_mismatch(mismatch, audit)?;
            let path = if ctx.path.starts_with("/api/") {
                ctx.path.to_owned()
            } else {
                format!("/v3/mcp/{id}")
            };
            Ok(Target {
                path,
                query,
                account,
            })
        }
    }
}

/// A POSTed JSON-RPC body: parsed, decided message by message, the allowed part forwarded.
async fn post(
    ctx: &Ctx<'_>,
    shared: &Arc<Shared>,
    body: RequestBody,
    target: &Target,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let h = &ctx.parts.headers;
    // The same reader and the same JSON limits as every REST body.
    let bytes = ctx.read_body(body, false).await?;
    let posted = match jsonrpc::headers(h).and_then(|mh| {
        let posted = jsonrpc::parse(&bytes, mh.version, ctx.json_limits())?;
        jsonrpc::check_headers(&mh, &posted)?;
        Ok(posted)
    }) {
        Ok(p) => p,
        // A shape limit is refused as on REST (413), not as a message the gateway misread.
        Err(Invalid { limit: Some(e), .. }) => return Err(e),
        Err(invalid) => return Ok(refuse_message(ctx, &invalid, audit)),
    };
    let mut forward_raw: Vec<&str> = Vec::with_capacity(posted.messages.len());
    let mut local: Vec<Value> = Vec::new();
    let mut calls = Calls::default();
    for msg in &posted.messages {
        let label = msg.method().map_or("response", jsonrpc::method_label);
        if !msg.known() {
            crate::metrics::mcp_message(label, "method_not_found");
            match msg.id() {
                Some(id) => local.push(jsonrpc::error_answer(
                    id,
                    jsonrpc::METHOD_NOT_FOUND,
                    "method not found",
                    None,
                )),
                None if !posted.batch => {
                    let invalid = Invalid::new(jsonrpc::METHOD_NOT_FOUND, "method not found");
                    return Ok(refuse_message(ctx, &invalid, audit));
                }
                None => {}
            }
            continue;
        }
        if msg.method() == Some("tools/call") {
            let decided = if posted.batch {
                let mut own = Audit::new(&ctx.parts.method, ctx.path);
                own.same_caller_as(audit);
                own.subject(ctx.subject());
                own.route(ctx.matched.route.pattern, "mcp_tool_call");
                if let Some(s) = audit.session_id() {
                    own.session(s);
                }
                let started = Instant::now();
                let r = decide_call(ctx, msg, target, &mut own).await;
                match &r {
                    Ok(_) => own.allow(),
                    Err(e) => own.refuse(e),
                }
                own.finish(
                    &shared.audit,
                    ctx.request_id,
                    StatusCode::OK,
                    started.elapsed(),
                );
                r
            } else {
                decide_call(ctx, msg, target, audit).await
            };
            let decided = match decided {
                Ok(accounts) => accounts,
                Err(e) => {
                    crate::metrics::mcp_message(label, e.slug());
                    if !posted.batch {
                        audit.refuse_in_band(&e);
                    }
                    if let Some(id) = msg.id() {
                        let rid = ctx.request_id.to_str().unwrap_or_default();
                        local.push(jsonrpc::refused_call(id, &e, rid));
                    }
                    continue;
                }
            };
            // Its answer is read against what it was decided on, by its id.
            calls.call(msg.id(), decided);
        } else if let Some(id) = msg.id().filter(|_| msg.method().is_some()) {
            calls.other(id);
        }
        crate::metrics::mcp_message(label, "allow");
        forward_raw.push(msg.raw.get());
    }
    if forward_raw.is_empty() {
        return Ok(local_answer(local, posted.batch));
    }
    let body = if posted.batch {
        let mut b = Vec::with_capacity(bytes.len());
        b.push(b'[');
        for (i, raw) in forward_raw.iter().enumerate() {
            if i > 0 {
                b.push(b',');
            }
            b.extend_from_slice(raw.as_bytes());
        }
        b.push(b']');
        Bytes::from(b)
    } else {
        Bytes::copy_from_slice(forward_raw[0].as_bytes())
    };
    let resp = forward(ctx, target, Some(body), TimeoutClass::Execute, audit).await?;
    relay(ctx, shared, resp, local, posted.batch, calls).await
}

/// One `tools/call`: its invocations, then the one decision.
async fn decide_call(
    ctx: &Ctx<'_>,
    msg: &jsonrpc::Message,
    target: &Target,
    audit: &mut Audit,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let params = msg.params().ok_or(Error::Internal)?;
    let name = params
        .get("name")
        .and_then(Value::as_str)
        .ok_or(Error::Internal)?;
    audit.tool(name);
    let arguments = params.get("arguments").filter(|a| !a.is_null());
    let account = call_account(target.account.as_deref(), arguments)?;
    let x = ctx.extract(crate::constraints::Carrier::Mcp);
    let invocations = crate::invocation::from_tool_call(&x, name, arguments, account.as_deref())?;
    let verdict = ctx.decide(&invocations, audit).await?;
    Ok(verdict.accounts)
}

/// The one connected account a call runs with: the server URL's, or one its arguments name
/// (`connected_account_id` in any spelling: a server may honour it, so it is decided like a
/// REST body's). Two different ones are ambiguous and refused.
fn call_account(pinned: Option<&str>, arguments: Option<&Value>) -> Result<Option<String>, Error> {
    let mut found = pinned.map(str::to_owned);
    let Some(Value::Object(args)) = arguments else {
        return Ok(found);
    };
    for (k, v) in args {
        if !is_account_key(k) {
            continue;
        }
        let id = match v {
            Value::Null => continue,
            Value::String(s) => s,
            _ => return Err(Error::BodyInvalid(format!("`{k}` must be a string"))),
        };
        match &found {
            Some(f) if f != id => {
                return Err(Error::BodyInvalid(
                    "the call names more than one connected account".into(),
                ))
            }
            _ => found = Some(id.clone()),
        }
    }
    Ok(found)
}

/// A message the gateway refuses as a whole: 400 with a JSON-RPC error.
fn refuse_message(ctx: &Ctx<'_>, invalid: &Invalid, audit: &mut Audit) -> Response<ResponseBody> {
    let e = Error::BodyInvalid(invalid.message.clone());
    audit.refuse_in_band(&e);
    crate::metrics::mcp_message("invalid", e.slug());
    tracing::info!(subject = %ctx.subject(), code = invalid.code, reason = %invalid.message,
        "MCP message refused");
    let mut resp = json_response(&invalid.body());
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp
}

/// The gateway's own answer when nothing was forwarded.
fn local_answer(mut local: Vec<Value>, batch: bool) -> Response<ResponseBody> {
    match (local.len(), batch) {
        (0, _) => {
            let mut resp = Response::new(crate::body::full(Bytes::new()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp
        }
        (1, false) => json_response(&local.remove(0)),
        _ => json_response(&Value::Array(local)),
    }
}

fn json_response(v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(crate::body::full(serde_json::to_vec(v).unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Sends the request to Composio's endpoint through the one upstream request
/// ([`Ctx::forward_to`]), with the MCP headers added and the session id unbound.
async fn forward(
    ctx: &Ctx<'_>,
    target: &Target,
    body: Option<Bytes>,
    class: TimeoutClass,
    audit: &mut Audit,
) -> Result<Response<Incoming>, Error> {
    let mut pq = target.path.clone();
    if let Some(q) = &target.query {
        pq.push('?');
        pq.push_str(q);
    }
    let mcp_headers = |out: &mut HeaderMap| {
        copy_mcp_headers(&ctx.parts.headers, out);
        if let Some(given) = out.get(MCP_SESSION_ID) {
            // Only an id issued to this subject goes upstream, as Composio's own id.
            let upstream_id = given
                .to_str()
                .ok()
                .and_then(|id| session_id::unbind(ctx.shared.secret.current(), ctx.subject(), id))
                .and_then(|id| HeaderValue::from_str(id).ok());
            match upstream_id {
                Some(v) => {
                    out.insert(MCP_SESSION_ID, v);
                }
                None => {
                    tracing::warn!("MCP session id not issued to this subject; refused");
                    return Err(Error::NotFound);
                }
            }
        }
        Ok(())
    };
    ctx.forward_to(pq, body, mcp_headers, class, audit).await
}

/// Composio's `Mcp-Session-Id` in an answer becomes one bound to `subject`
/// ([`session_id`]); an id that cannot be bound is not relayed.
fn bind_session_id(shared: &Shared, subject: &str, headers: &mut HeaderMap) {
    let Some(v) = headers.remove(MCP_SESSION_ID) else {
        return;
    };
    match v
        .to_str()
        .ok()
        .and_then(|id| session_id::bind(shared.secret.current(), subject, id))
        .and_then(|id| HeaderValue::from_str(&id).ok())
    {
        Some(bound) => {
            headers.insert(MCP_SESSION_ID, bound);
        }
        None => tracing::warn!("MCP upstream answered an unusable session id; not relayed"),
    }
}

fn copy_mcp_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in FORWARD_HEADERS {
        let mut all = from.get_all(*name).iter();
        if let (Some(v), None) = (all.next(), all.next()) {
            to.insert(*name, v.clone());
        }
    }
}

/// Relays Composio's answer: JSON inspected whole, an event stream event by event, anything
/// else (errors, `202 Accepted`) with the key redacted. `local` are the gateway's own answers
/// to messages it did not forward, merged in.
async fn relay(
    ctx: &Ctx<'_>,
    shared: &Arc<Shared>,
    resp: Response<Incoming>,
    local: Vec<Value>,
    batch: bool,
    calls: Calls,
) -> Result<Response<ResponseBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    if !parts.status.is_success() {
        // Composio refused the whole POST: every call in it is judged by that status.
        calls.after_status(shared, &ctx.identity.subject, parts.status);
    }
    if let Some(enc) = parts.headers.get(header::CONTENT_ENCODING) {
        if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
            tracing::warn!("MCP upstream answered with a content encoding; refused");
            return Err(Error::UpstreamUnavailable);
        }
    }
    headers::clean_response_headers(&mut parts.headers, &shared.secret);
    rewrite_location_for(shared, ctx.parts, ctx.subject(), &mut parts.headers);
    bind_session_id(shared, ctx.subject(), &mut parts.headers);
    let media = media_type(&parts.headers);
    if parts.status.is_success() && media == "text/event-stream" {
        let inspector = sse::Inspector {
            shared: shared.clone(),
            identity: ctx.identity.clone(),
            calls,
        };
        let idle = std::time::Duration::from_secs(shared.mcp.stream_idle_timeout_secs);
        parts
            .headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let body = sse::relay(body, inspector, idle, local).boxed();
        return Ok(Response::from_parts(parts, body));
    }
    if parts.status.is_success() && media == "application/json" {
        // One message or one batch: read whole (bounded), inspected, then relayed.
        let bytes = Limited::new(body, MAX_JSON_ANSWER)
            .collect()
            .await
            .map_err(|_| Error::UpstreamUnavailable)?
            .to_bytes();
        let Some(mut v) = strict_value(&bytes) else {
            tracing::warn!("MCP upstream JSON answer unreadable; refused");
            return Err(Error::UpstreamUnavailable);
        };
        calls.after_answers(shared, &ctx.identity.subject, &v);
        filter_tools(shared, ctx.identity, &mut v).await;
        if !local.is_empty() {
            let mut all = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            all.extend(local);
            v = Value::Array(all);
        }
        let out = serde_json::to_vec(&v).map_err(|_| Error::Internal)?;
        let out = sse::redact(Bytes::from(out), &shared.secret);
        return Ok(Response::from_parts(parts, crate::body::full(out)));
    }
    if !local.is_empty() && parts.status.is_success() {
        return Ok(local_answer(local, batch));
    }
    let body = Redact::new(body, shared.secret.clone()).boxed();
    Ok(Response::from_parts(parts, body))
}

/// The `tools/call`s one POST forwarded, each with the (toolkit, account) pairs it was decided
/// on, by JSON-RPC id: every answer is read against its own call
/// ([`crate::proxy::after::after_execution`]), so a batch's dead connection is attributed to
/// the call whose answer shows it.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    /// Calls with their ids (`None`: a call sent as a notification, never answered).
    calls: Vec<(Option<Value>, crate::revocation::DecidedAccounts)>,
    /// Ids of the other requests forwarded (`ping`, `tools/list`): their answers are not
    /// executions.
    others: Vec<Value>,
}

impl Calls {
    fn call(&mut self, id: Option<&Value>, decided: Vec<(String, Option<String>)>) {
        self.calls.push((id.cloned(), decided));
    }

    fn other(&mut self, id: &Value) {
        self.others.push(id.clone());
    }

    /// Every pair decided in the POST.
    fn all(&self) -> Vec<(String, Option<String>)> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for pair in self.calls.iter().flat_map(|(_, d)| d) {
            if !out.contains(pair) {
                out.push(pair.clone());
            }
        }
        out
    }

    /// The pairs an answer with `id` is about: its call's (merged, should a client repeat
    /// an id); every call's when the id names none of the forwarded requests (a `null` id:
    /// Composio could not tell which); nothing for the answer to another request.
    fn of(&self, id: Option<&Value>) -> Vec<(String, Option<String>)> {
        let Some(id) = id.filter(|id| !id.is_null()) else {
            return self.all();
        };
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        let mut found = false;
        for (_, decided) in self.calls.iter().filter(|(c, _)| c.as_ref() == Some(id)) {
            found = true;
            for pair in decided {
                if !out.contains(pair) {
                    out.push(pair.clone());
                }
            }
        }
        if found || self.others.contains(id) {
            return out;
        }
        self.all()
    }

    /// Reads the answers in `v` (one message or a batch) against their calls.
    pub(crate) fn after_answers(&self, shared: &Shared, subject: &Arc<str>, v: &Value) {
        if self.calls.is_empty() {
            return;
        }
        let messages = match v {
            Value::Array(a) => a.iter().collect(),
            one => vec![one],
        };
        for m in messages {
            let is_answer = m.get("method").is_none()
                && (m.get("result").is_some() || m.get("error").is_some());
            if !is_answer {
                continue;
            }
            let decided = self.of(m.get("id"));
            crate::proxy::after::after_execution(
                shared,
                subject,
                &decided,
                crate::revocation::Answer::ToolCall(m),
            );
        }
    }

    /// Judges every call by the status of an answer to the whole POST.
    fn after_status(&self, shared: &Shared, subject: &Arc<str>, status: StatusCode) {
        crate::proxy::after::after_execution(
            shared,
            subject,
            &self.all(),
            crate::revocation::Answer::Http(status, None),
        );
    }
}

/// One JSON value with no repeated key at any depth, or `None`.
pub(crate) fn strict_value(bytes: &[u8]) -> Option<Value> {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_slice(bytes).ok()?;
    let mut wrapped = Vec::with_capacity(bytes.len() + 8);
    wrapped.extend_from_slice(b"{\"m\":");
    wrapped.extend_from_slice(raw.get().as_bytes());
    wrapped.push(b'}');
    crate::rewrite::JsonObject::parse(&wrapped).ok()?;
    serde_json::from_str(raw.get()).ok()
}

/// Keeps, in every `tools/list` result of `v` (one message or a batch), only the tools the
/// caller may run; answers how many were removed. A tool whose toolkit cannot be learnt is
/// removed when the policy restricts the caller at all (fail closed).
pub(crate) async fn filter_tools(shared: &Shared, identity: &Identity, v: &mut Value) -> usize {
    let mut lists: Vec<&mut Vec<Value>> = Vec::new();
    let messages: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        one => vec![one],
    };
    for m in messages {
        let Some(Value::Object(result)) = m.get_mut("result") else {
            continue;
        };
        // A caching hint of the 2026-07-28 revision: what this answer holds depends on the
        // caller, so no shared cache may keep it for another.
        if let Some(scope) = result.get_mut("cacheScope") {
            *scope = Value::String("private".into());
        }
        if let Some(Value::Array(tools)) = result.get_mut("tools") {
            lists.push(tools);
        }
    }
    let mut removed = 0;
    for tools in lists {
        let mut keep = Vec::with_capacity(tools.len());
        for t in tools.iter() {
            let ok = match t.get("name").and_then(Value::as_str) {
                Some(name) => {
                    crate::proxy::toolgate::tool_visible_unlisted(shared, &identity.claims, name)
                        .await
                        && match crate::toollock::View::mcp(t) {
                            Some(view) => {
                                crate::proxy::toolgate::definition_passes(shared, view).await
                            }
                            None => false,
                        }
                }
                None => false,
            };
            keep.push(ok);
        }
        let mut it = keep.into_iter();
        let before = tools.len();
        tools.retain(|_| it.next().unwrap_or(false));
        removed += before - tools.len();
    }
    if removed > 0 {
        tracing::debug!(subject = %identity.subject, removed, "MCP tools/list filtered");
    }
    removed
}

/// A redirect from Composio to one of its MCP URLs points at the gateway instead.
pub(crate) fn rewrite_location_for(
    shared: &Shared,
    parts: &http::request::Parts,
    subject: &str,
    headers: &mut HeaderMap,
) {
    let Some(loc) = headers.get(header::LOCATION).and_then(|l| l.to_str().ok()) else {
        return;
    };
    let Ok(base) = public_base(shared, &parts.uri, &parts.headers) else {
        return;
    };
    if let Some(url) = rewrite::gateway_url(loc, &base, subject) {
        if let Ok(v) = HeaderValue::from_str(&url) {
            headers.insert(header::LOCATION, v);
        }
    }
}

/// Rewrites the MCP URLs of a relayed JSON answer onto the public URL (session create, get
/// and update; MCP server generate and read).
pub(crate) fn rewrite_answer(
    shared: &Shared,
    parts: &http::request::Parts,
    subject: &str,
    bytes: Bytes,
) -> Result<Bytes, Error> {
    let Ok(mut v) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(bytes);
    };
    // Without a public origin for this request the answer may still go out, but never with
    // a Composio MCP URL in it.
    let base = public_base(shared, &parts.uri, &parts.headers);
    let n = rewrite::rewrite_json(&mut v, base.as_deref().unwrap_or("http://invalid"), subject);
    if n == 0 {
        return Ok(bytes);
    }
    base?;
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|_| Error::Internal)
}

fn media_type(h: &HeaderMap) -> String {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::rewrite::JsonObject;

    /// One list of account-id spellings: an MCP call's arguments, a REST body and the
    /// invocation extraction read the same names, and the same non-names.
    #[test]
    fn every_carrier_reads_the_same_account_spellings() {
        for (key, names) in [
            ("connected_account_id", true),
            ("connectedAccountId", true),
            ("connectedAuthId", true),
            ("CONNECTED-ACCOUNT-ID", true),
            ("connected_account", false),
            ("user_id", false),
        ] {
            let args = json!({ key: "ca_1" });
            let mcp = call_account(None, Some(&args)).expect("readable");
            let body = JsonObject::parse(args.to_string().as_bytes()).expect("json");
            let rest = body.account_ids().expect("readable");
            let invocation = crate::invocation::named_account(&body).expect("readable");
            assert_eq!(mcp.is_some(), names, "mcp: {key}");
            assert_eq!(!rest.is_empty(), names, "rest: {key}");
            assert_eq!(invocation.is_some(), names, "invocation: {key}");
            assert_eq!(crate::rewrite::is_account_key(key), names, "{key}");
        }
    }
}
