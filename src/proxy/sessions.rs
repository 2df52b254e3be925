//! Tool router sessions: created for the subject, then usable only by the subject.
//!
//! A session id stands for its user at Composio, so every call under
//! `/tool_router/session/{id}` is allowed only when Composio says the session was created for
//! the subject ([`crate::connections::Connections::session_owner`], cached; a session the
//! gateway just created is remembered). Executions inside a session (`execute`,
//! `execute_meta`, `proxy_execute`) are carriers like any other: extracted into invocations
//! and decided by [`crate::invocation::decide`].

use http::{Method, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;

use super::accounts::{require_owned, scoped_query};
use super::Ctx;
use crate::audit::Audit;
use crate::body::{Redact, RequestBody, ResponseBody};
use crate::constraints::Carrier;
use crate::error::Error;
use crate::headers;
use crate::invocation;
use crate::rewrite::{folded_eq, JsonObject};
use crate::routes::SessionCall;
use crate::upstream::TimeoutClass;

/// `POST /api/{v3}/tool_router/session`: created for the subject, with the subject's accounts.
pub(super) async fn create(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let query = scoped_query(ctx, None, audit)?;
    let mut obj = ctx.json_body(body, false).await?;
    ctx.pin(&mut obj, "user_id", audit)?;
    // The session's settings carry no tool arguments: a user id nested in them (`config`)
    // is one more place Composio could read the user from.
    let nested = obj.strip_nested_identity(ctx.subject())?;
    ctx.on_mismatch(nested, audit)?;
    require_owned(ctx, &pinned_accounts(&obj)?, audit).await?;
    super::toolgate::session_toolkits(ctx, &mut obj, true, audit).await?;
    super::toolgate::pin_toolkit_versions(ctx, &mut obj)?;
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
    crate::proxy::mcp::rewrite_location_for(
        ctx.shared,
        ctx.parts,
        ctx.subject(),
        &mut parts.headers,
    );
    // `mcp.url` points at Composio: the client gets the gateway's instead.
    let bytes = crate::proxy::mcp::rewrite_answer(ctx.shared, ctx.parts, ctx.subject(), bytes)?;
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
    // What an execution was decided on, for the step after it
    // ([`super::after::after_execution`]).
    let mut decided = Vec::new();
    let body = if *method == Method::POST || *method == Method::PATCH {
        let mut obj = ctx.json_body(body, true).await?;
        let mismatch = obj.strip_identity(ctx.subject());
        ctx.on_mismatch(mismatch, audit)?;
        obj.check_custom_auth(ctx.shared.policy.allow_custom_auth)?;
        require_owned(ctx, &pinned_accounts(&obj)?, audit).await?;
        match call {
            SessionCall::Execute | SessionCall::ExecuteMeta => {
                decided = gate_execute(ctx, &mut obj, audit).await?;
            }
            SessionCall::ProxyExecute => {
                decided = gate_proxy_execute(ctx, &obj, audit).await?;
            }
            SessionCall::Other => {
                // Settings, not tool arguments: no user id at any depth (`config.user_id`).
                let nested = obj.strip_nested_identity(ctx.subject())?;
                ctx.on_mismatch(nested, audit)?;
                if *method == Method::PATCH {
                    super::toolgate::session_toolkits(ctx, &mut obj, false, audit).await?;
                }
            }
        }
        Some(obj.to_vec())
    } else {
        None
    };
    let class = match call {
        SessionCall::Execute | SessionCall::ExecuteMeta | SessionCall::ProxyExecute => {
            TimeoutClass::Execute
        }
        SessionCall::Other => TimeoutClass::Default,
    };
    let resp = ctx.forward(query.as_deref(), body, class, audit).await?;
    if call == SessionCall::Other && ctx.matched.route.pattern.ends_with("/session/{id}") {
        // The session itself (read, update) carries its `mcp.url`.
        return ctx.relay_mcp_urls(resp).await;
    }
    if call == SessionCall::Other
        && (ctx.matched.route.pattern.ends_with("/session/{id}/tools")
            || ctx.matched.route.pattern.ends_with("/session/{id}/search"))
    {
        // Definitions pass the tool lock like any listing's.
        return super::toolgate::relay_session_listing(ctx, resp).await;
    }
    if !decided.is_empty() {
        return super::after::relay_execution(ctx, resp, &decided).await;
    }
    ctx.relay(resp)
}

/// `execute` and `execute_meta`: the call (`tool_slug`, or `slug` for a meta tool, with its
/// `arguments` and `account`) extracted into invocations and decided like a direct execution.
/// Both slug fields are read on both routes: which one Composio falls back to is not the
/// gateway's to guess, so every slug named is decided.
async fn gate_execute(
    ctx: &Ctx<'_>,
    obj: &mut JsonObject,
    audit: &mut Audit,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let mut slugs = obj_strings(obj, "toolslug")?;
    for s in obj_strings(obj, "slug")? {
        if !slugs.contains(&s) {
            slugs.push(s);
        }
    }
    if slugs.is_empty() {
        return Err(Error::BodyInvalid("`tool_slug` is required".into()));
    }
    let account = invocation::named_account(obj)?;
    let x = ctx.extract(Carrier::Session);
    let mut invocations = Vec::new();
    for slug in &slugs {
        invocations.extend(invocation::from_body(&x, slug, obj, account.as_deref())?);
    }
    let verdict = ctx.decide(&invocations, audit).await?;
    audit.tool_of_request(&slugs[0]);
    for slug in &slugs {
        super::execute::pin_version(ctx, slug, obj, false).await?;
    }
    Ok(verdict.accounts)
}

/// `proxy_execute`: a proxy execution of `toolkit_slug` (with the named account, if any);
/// answers what was decided, as [`gate_execute`] does.
async fn gate_proxy_execute(
    ctx: &Ctx<'_>,
    obj: &JsonObject,
    audit: &mut Audit,
) -> Result<Vec<(String, Option<String>)>, Error> {
    let toolkits = obj_strings(obj, "toolkitslug")?;
    let [toolkit] = toolkits.as_slice() else {
        return Err(Error::BodyInvalid(
            "exactly one `toolkit_slug` is required".into(),
        ));
    };
    let account = invocation::named_account(obj)?;
    let x = ctx.extract(Carrier::Session);
    let invocations = [x.proxy(Some(toolkit), account.as_deref(), || {
        invocation::body_value(obj)
    })?];
    let verdict = ctx.decide(&invocations, audit).await?;
    Ok(verdict.accounts)
}

/// The distinct string values of every key of `obj` whose folded name is `folded`.
fn obj_strings(obj: &JsonObject, folded: &str) -> Result<Vec<String>, Error> {
    strings(
        obj.iter()
            .filter(|(k, _)| folded_eq(k, folded))
            .map(|(k, v)| (k, serde_json::from_str(v.get()).ok())),
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
