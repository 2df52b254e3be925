//! Tool router sessions: created for the subject, then usable only by the subject.
//!
//! A session id stands for its user at Composio, so every call under
//! `/tool_router/session/{id}` is allowed only when Composio says the session was created for
//! the subject ([`crate::connections::Connections::session_owner`], cached; a session the
//! gateway just created is remembered). Executions inside a session are gated like direct
//! executions: by the tool's toolkit (each inner tool of the multi-execute meta tool too), or
//! by `toolkit_slug` for proxy executions.

use http::{Method, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use super::accounts::{require_owned, scoped_query};
use super::Ctx;
use crate::audit::Audit;
use crate::body::{Redact, RequestBody, ResponseBody};
use crate::connections::ToolInfo;
use crate::error::Error;
use crate::headers;
use crate::rewrite::{folded_eq, JsonObject};
use crate::routes::SessionCall;
use crate::upstream::TimeoutClass;

/// The meta tool that runs several tools in one call (`arguments.tools[].tool_slug`).
pub(super) const MULTI_EXECUTE: &str = "COMPOSIO_MULTI_EXECUTE_TOOL";

/// `POST /api/{v3}/tool_router/session`: created for the subject, with the subject's accounts.
pub(super) async fn create(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let query = scoped_query(ctx, None, audit)?;
    let mut obj = ctx.json_body(body, false).await?;
    ctx.pin(&mut obj, "user_id", audit)?;
    require_owned(ctx, &pinned_accounts(&obj)?, audit).await?;
    super::toolgate::session_toolkits(ctx, &mut obj, true, audit).await?;
    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Default, audit)
        .await?;
    if !resp.status().is_success() {
        return ctx.relay(resp);
    }
    relay_remembering(ctx, resp).await
}

/// Relays a session creation's answer, remembering the new session as the subject's.
async fn relay_remembering(
    ctx: &Ctx<'_>,
    resp: Response<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let (mut parts, body) = resp.into_parts();
    super::refuse_encoded(&parts.headers)?;
    headers::clean_response_headers(&mut parts.headers, &ctx.shared.secret);
    let bytes = http_body_util::Limited::new(body, super::MAX_FILTERED_RESPONSE)
        .collect()
        .await
        .map_err(|_| Error::UpstreamUnavailable)?
        .to_bytes();
    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
        let id = v["session_id"].as_str().or_else(|| v["id"].as_str());
        // Composio's own word on the owner, when it gives one, must agree.
        let owner = v["config"]["user_id"]
            .as_str()
            .or_else(|| v["user_id"].as_str());
        match (id, owner) {
            (Some(id), None) => ctx.shared.connections.remember_session(id, ctx.subject()),
            (Some(id), Some(o)) if o == ctx.subject() => {
                ctx.shared.connections.remember_session(id, ctx.subject());
            }
            _ => {}
        }
    }
    crate::mcp::rewrite_location_for(ctx.shared, ctx.parts, ctx.subject(), &mut parts.headers);
    // `mcp.url` points at Composio: the client gets the gateway's instead.
    let bytes = crate::mcp::rewrite_answer(ctx.shared, ctx.parts, ctx.subject(), bytes);
    let body = Redact::new(Full::new(bytes), ctx.shared.secret.clone()).boxed();
    Ok(Response::from_parts(parts, body))
}

/// Any call under `/api/{v3}/tool_router/session/{id}` (param 0): only the subject's
/// sessions; executions gated.
pub(super) async fn owned(
    ctx: &Ctx<'_>,
    body: RequestBody,
    call: SessionCall,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let id = ctx.matched.param(0).ok_or(Error::Internal)?;
    let owner = ctx.shared.connections.session_owner(id).await?;
    if owner.as_deref() != Some(ctx.subject()) {
        return Err(Error::NotFound);
    }
    let query = scoped_query(ctx, None, audit)?;
    let method = &ctx.parts.method;
    let body = if *method == Method::POST || *method == Method::PATCH {
        let mut obj = ctx.json_body(body, true).await?;
        let mismatch = obj.strip_identity(ctx.subject());
        ctx.on_mismatch(mismatch, audit)?;
        obj.check_custom_auth(ctx.shared.policy.allow_custom_auth)?;
        require_owned(ctx, &pinned_accounts(&obj)?, audit).await?;
        match call {
            SessionCall::Execute => gate_execute(ctx, &obj, audit).await?,
            SessionCall::ProxyExecute => gate_proxy_execute(ctx, &obj, audit).await?,
            SessionCall::Other if *method == Method::PATCH => {
                super::toolgate::session_toolkits(ctx, &mut obj, false, audit).await?;
            }
            SessionCall::Other => {}
        }
        Some(obj.to_vec())
    } else {
        None
    };
    let class = match call {
        SessionCall::Execute | SessionCall::ProxyExecute => TimeoutClass::Execute,
        SessionCall::Other => TimeoutClass::Default,
    };
    let resp = ctx.forward(query.as_deref(), body, class, audit).await?;
    if call == SessionCall::Other && ctx.matched.route.pattern.ends_with("/session/{id}") {
        // The session itself (read, update) carries its `mcp.url`.
        return ctx.relay_mcp_urls(resp).await;
    }
    ctx.relay(resp)
}

/// `execute`: the tool's toolkit must have a usable connection of the subject's (with the
/// named account, if any). For the multi-execute meta tool, every inner tool is gated too.
async fn gate_execute(ctx: &Ctx<'_>, obj: &JsonObject, audit: &mut Audit) -> Result<(), Error> {
    let slugs = obj_strings(obj, "toolslug")?;
    if slugs.is_empty() {
        return Err(Error::BodyInvalid("`tool_slug` is required".into()));
    }
    let account = named_account(obj)?;
    for slug in &slugs {
        audit.tool(slug);
        gate_tool(ctx, slug, account.as_deref(), audit).await?;
        if slug.eq_ignore_ascii_case(super::toolgate::MANAGE_CONNECTIONS) {
            if let Some((_, raw)) = obj.iter().find(|(k, _)| *k == "arguments") {
                super::toolgate::check_manage_connections_raw(ctx, raw, audit)?;
            }
        }
        if !slug.eq_ignore_ascii_case(MULTI_EXECUTE) {
            continue;
        }
        if let Some((_, raw)) = obj.iter().find(|(k, _)| *k == "arguments") {
            gate_multi_execute(ctx, raw, audit).await?;
        }
    }
    Ok(())
}

/// The inner tools of the multi-execute meta tool (`arguments.tools[].tool_slug`), each gated
/// like a direct call: the meta tool itself needs no connection, but what it runs does.
pub(super) async fn gate_multi_execute(
    ctx: &Ctx<'_>,
    raw: &serde_json::value::RawValue,
    audit: &mut Audit,
) -> Result<(), Error> {
    let arguments: Value = serde_json::from_str(raw.get())
        .map_err(|_| Error::BodyInvalid("`arguments` is not JSON".into()))?;
    let tools = match &arguments {
        Value::Null => return Ok(()),
        Value::Object(m) => match m.get("tools") {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(Error::BodyInvalid(
                    "`arguments.tools` must be a list".into(),
                ))
            }
        },
        _ => return Err(Error::BodyInvalid("`arguments` must be an object".into())),
    };
    for tool in tools {
        let Value::Object(m) = tool else {
            return Err(Error::BodyInvalid(
                "`arguments.tools` must hold objects".into(),
            ));
        };
        let inner = map_strings(m, "toolslug")?;
        if inner.is_empty() {
            return Err(Error::BodyInvalid(
                "every `arguments.tools[]` needs a `tool_slug`".into(),
            ));
        }
        let inner_account = match m.get("account") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => {
                return Err(Error::BodyInvalid(
                    "`arguments.tools[].account` must be a string".into(),
                ))
            }
        };
        for inner_slug in &inner {
            // A meta tool nested in the multi-execute meta tool would hide its own targets.
            if inner_slug.eq_ignore_ascii_case(MULTI_EXECUTE) {
                return Err(Error::ToolNotAllowed {
                    tool: inner_slug.clone(),
                    rule: "nested multi-execute".into(),
                });
            }
            gate_tool(ctx, inner_slug, inner_account, audit).await?;
            if inner_slug.eq_ignore_ascii_case(super::toolgate::MANAGE_CONNECTIONS) {
                if let Some(args) = m.get("arguments") {
                    super::toolgate::check_manage_connections(ctx, args, audit)?;
                }
            }
        }
    }
    Ok(())
}

/// `proxy_execute`: `toolkit_slug` must have a usable connection of the subject's.
async fn gate_proxy_execute(
    ctx: &Ctx<'_>,
    obj: &JsonObject,
    audit: &mut Audit,
) -> Result<(), Error> {
    let toolkits = obj_strings(obj, "toolkitslug")?;
    if toolkits.is_empty() {
        return Err(Error::BodyInvalid("`toolkit_slug` is required".into()));
    }
    let account = named_account(obj)?;
    for toolkit in &toolkits {
        let info = ToolInfo::for_toolkit(toolkit);
        audit.toolkit(&info.toolkit);
        super::toolgate::check_proxy(ctx, &info.toolkit, audit)?;
        ctx.shared
            .connections
            .check(&ctx.identity.subject, &info, account.as_deref())
            .await?;
    }
    Ok(())
}

async fn gate_tool(
    ctx: &Ctx<'_>,
    slug: &str,
    account: Option<&str>,
    audit: &mut Audit,
) -> Result<(), Error> {
    super::toolgate::check_code_tool(ctx, slug, audit)?;
    let info = ctx.shared.connections.tool(slug).await?;
    audit.toolkit(&info.toolkit);
    super::toolgate::check_tool(ctx, &info.toolkit, slug, audit)?;
    ctx.shared
        .connections
        .check(&ctx.identity.subject, &info, account)
        .await
}

/// The one account a session call names (`account`, or a `connected_account_id`), if any.
/// An alias is not an account id the gateway can verify, so it is refused as not owned.
fn named_account(obj: &JsonObject) -> Result<Option<String>, Error> {
    let mut ids = obj_strings(obj, "account")?;
    for id in obj.account_ids()? {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.len() > 1 {
        return Err(Error::BodyInvalid(
            "the body names more than one connected account".into(),
        ));
    }
    Ok(ids.pop())
}

/// The distinct string values of every key of `obj` whose folded name is `folded`.
fn obj_strings(obj: &JsonObject, folded: &str) -> Result<Vec<String>, Error> {
    strings(
        obj.iter()
            .filter(|(k, _)| folded_eq(k, folded))
            .map(|(k, v)| (k, serde_json::from_str(v.get()).ok())),
    )
}

/// The same for a parsed object.
fn map_strings(m: &serde_json::Map<String, Value>, folded: &str) -> Result<Vec<String>, Error> {
    strings(
        m.iter()
            .filter(|(k, _)| folded_eq(k, folded))
            .map(|(k, v)| (k.as_str(), Some(v.clone()))),
    )
}

/// Distinct strings among `entries`; `null` is absent, any other non-string is refused.
fn strings<'a>(
    entries: impl Iterator<Item = (&'a str, Option<Value>)>,
) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    for (k, v) in entries {
        match v {
            Some(Value::Null) => {}
            Some(Value::String(s)) => {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            _ => return Err(Error::BodyInvalid(format!("`{k}` must be a string"))),
        }
    }
    Ok(out)
}

/// Every account id in `connected_accounts` (`{toolkit: id}` or `{toolkit: [ids]}`).
fn pinned_accounts(obj: &JsonObject) -> Result<Vec<String>, Error> {
    let mut out: Vec<String> = Vec::new();
    let invalid = |k: &str| {
        Error::BodyInvalid(format!(
            "`{k}` must map toolkits to an account id or a list of them"
        ))
    };
    for (k, raw) in obj.iter() {
        if !folded_eq(k, "connectedaccounts") {
            continue;
        }
        let v: Value = serde_json::from_str(raw.get()).map_err(|_| invalid(k))?;
        let map = match v {
            Value::Null => continue,
            Value::Object(m) => m,
            _ => return Err(invalid(k)),
        };
        for (_, ids) in map {
            let ids = match ids {
                Value::Null => Vec::new(),
                Value::String(s) => vec![Value::String(s)],
                Value::Array(a) => a,
                _ => return Err(invalid(k)),
            };
            for id in ids {
                let Value::String(id) = id else {
                    return Err(invalid(k));
                };
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
    }
    Ok(out)
}
