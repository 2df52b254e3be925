//! Tool execution and proxy execution: the routes that spend a user's credentials.

use http::Response;

use super::Ctx;
use crate::audit::Audit;
use crate::body::{RequestBody, ResponseBody};
use crate::constraints::Carrier;
use crate::error::Error;
use crate::invocation;
use crate::rewrite::{self, folded_eq, JsonObject};
use crate::routes::Api;
use crate::upstream::TimeoutClass;

/// `POST /api/v3[.1]/tools/execute/{tool}` and `POST /api/v{1,2}/actions/{action}/execute`:
/// identity pinned, then the call (its arguments under `arguments`, or `input` on the old
/// API) extracted into invocations and decided ([`crate::invocation`]).
pub(super) async fn execute(
    ctx: &Ctx<'_>,
    body: RequestBody,
    api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let tool = ctx.matched.param(0).ok_or(Error::Internal)?;
    audit.tool(tool);
    let (query, _) = rewrite::scope_query(ctx.parts.uri.query(), None, ctx.subject(), true)?;
    let mut obj = ctx.json_body(body, false).await?;
    obj.check_custom_auth(ctx.shared.policy.allow_custom_auth)?;
    let canonical = match api {
        Api::V3 => "user_id",
        Api::Legacy => "entityId",
    };
    ctx.pin(&mut obj, canonical, audit)?;
    let account = invocation::named_account(&obj)?;
    let carrier = match api {
        Api::V3 => Carrier::Rest,
        Api::Legacy => Carrier::Legacy,
    };
    let x = ctx.extract(carrier);
    let invocations = invocation::from_body(&x, tool, &obj, account.as_deref())?;
    let verdict = ctx.decide(&invocations, audit).await?;
    audit.tool_of_request(tool);
    if api == Api::Legacy {
        forward_decided_app(ctx, tool, &mut obj).await?;
    }
    pin_version(ctx, tool, &mut obj, true).await?;

    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Execute, audit)
        .await?;
    super::after::relay_execution(ctx, resp, &verdict.accounts).await
}

/// An execution of a tool of a locked toolkit runs at the locked toolkit version
/// ([`crate::toollock::ToolLock::pin`]): the body's `version` (any spelling) is set to it,
/// whatever the caller sent; a caller's other concrete version is refused or rewritten per
/// `[tools_lock] on_version_mismatch`. With `add = false` (a session's execute, whose
/// session was pinned when it was created) only a version the caller sent is pinned.
pub(crate) async fn pin_version(
    ctx: &Ctx<'_>,
    tool: &str,
    obj: &mut JsonObject,
    add: bool,
) -> Result<(), Error> {
    let Some(lock) = ctx.shared.tool_lock.as_deref() else {
        return Ok(());
    };
    let toolkit = match lock.toolkit_of(tool) {
        Some(tk) => tk.to_owned(),
        None if crate::toolpolicy::is_meta_tool(tool) || crate::toolpolicy::is_code_tool(tool) => {
            "composio".to_owned()
        }
        None => ctx.shared.connections.tool(tool).await?.toolkit,
    };
    if !lock.locks_toolkit(&toolkit) {
        return Ok(());
    }
    let mut asked: Vec<Option<String>> = Vec::new();
    for (k, v) in obj.iter() {
        if folded_eq(k, "version") {
            match serde_json::from_str::<Option<String>>(v.get()) {
                Ok(a) => asked.push(a),
                Err(_) => return Err(Error::BodyInvalid(format!("`{k}` must be a string"))),
            }
        }
    }
    if asked.is_empty() && !add {
        return Ok(());
    }
    let mut pinned = None;
    for a in asked
        .iter()
        .map(Option::as_deref)
        .chain(std::iter::once(None))
    {
        pinned = lock.pin(tool, &toolkit, a)?;
    }
    if let Some(version) = pinned {
        let raw = serde_json::value::to_raw_value(&version).map_err(|_| Error::Internal)?;
        obj.replace_folded("version", "version", raw);
    }
    Ok(())
}

/// The old API's `appName` is the caller's hint; what is forwarded names the app the decision
/// was made on (Composio's, already cached by the decision), so that the gateway and Composio
/// never disagree about which connection is meant.
async fn forward_decided_app(ctx: &Ctx<'_>, tool: &str, obj: &mut JsonObject) -> Result<(), Error> {
    let hinted: Vec<String> = obj
        .iter()
        .filter(|(k, v)| folded_eq(k, "appname") && v.get() != "null")
        .map(|(k, _)| k.to_owned())
        .collect();
    if hinted.is_empty() {
        return Ok(());
    }
    let app = ctx
        .shared
        .connections
        .tool(tool)
        .await?
        .toolkit
        .to_ascii_uppercase();
    for key in hinted {
        obj.set_str(&key, &app)?;
    }
    Ok(())
}

/// `POST /api/v3[.1]/tools/execute/proxy` and `POST /api/v2/actions/proxy`: a raw request
/// with a user's credentials. Only with an explicit account of the subject's: without one
/// Composio would fall back to the project's default account. Decided as a proxy execution
/// of the account's toolkit.
pub(super) async fn proxy_execute(
    ctx: &Ctx<'_>,
    body: RequestBody,
    api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    // The route does nothing but proxy: refused before the body is read or anything looked
    // up (the decision checks the switch again, for every other carrier of a proxy).
    if !ctx.shared.policy.allow_proxy_execute {
        return Err(Error::OperationDisabled("proxy_execute"));
    }
    let (query, _) = rewrite::scope_query(ctx.parts.uri.query(), None, ctx.subject(), true)?;
    let mut obj = ctx.json_body(body, false).await?;
    obj.check_custom_auth(ctx.shared.policy.allow_custom_auth)?;
    let mismatch = match api {
        Api::V3 => obj.pin_identity("user_id", ctx.subject(), false)?,
        // The old proxy body has no user field; any that is sent is removed.
        Api::Legacy => obj.strip_identity(ctx.subject()),
    };
    ctx.on_mismatch(mismatch, audit)?;
    let id = invocation::named_account(&obj)?.ok_or_else(|| {
        Error::BodyInvalid("proxy execute needs the user's connected_account_id".into())
    })?;
    let x = ctx.extract(Carrier::Proxy);
    let invocations = [x.proxy(None, Some(&id), || invocation::body_value(&obj))?];
    let verdict = ctx.decide(&invocations, audit).await?;
    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Execute, audit)
        .await?;
    // The account's toolkit was decided: its answer is read like any execution's.
    super::after::relay_execution(ctx, resp, &verdict.accounts).await
}
