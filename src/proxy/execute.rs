//! Tool execution and proxy execution: the routes that spend a user's credentials.

use http::Response;

use super::Ctx;
use crate::audit::Audit;
use crate::body::{RequestBody, ResponseBody};
use crate::connections::ToolInfo;
use crate::error::Error;
use crate::rewrite::{self, JsonObject};
use crate::routes::Api;
use crate::upstream::TimeoutClass;

/// The literal that asks Composio for its shared "instant" account: not the subject's.
const INSTANT_ACCOUNT: &str = "instant_account";

/// `POST /api/v3[.1]/tools/execute/{tool}` and `POST /api/v{1,2}/actions/{action}/execute`.
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
    let account = single_account(&obj, audit)?;

    super::toolgate::check_code_tool(ctx, tool, audit)?;
    let info = tool_info(ctx, tool, api, &obj).await?;
    audit.toolkit(&info.toolkit);
    super::toolgate::check_tool(ctx, &info.toolkit, tool, audit)?;
    ctx.shared
        .connections
        .check(&ctx.identity.subject, &info, account.as_deref())
        .await?;
    if tool.eq_ignore_ascii_case(super::sessions::MULTI_EXECUTE) {
        if let Some((_, raw)) = obj.iter().find(|(k, _)| *k == "arguments") {
            super::sessions::gate_multi_execute(ctx, raw, audit).await?;
        }
    }
    if tool.eq_ignore_ascii_case(super::toolgate::MANAGE_CONNECTIONS) {
        if let Some((_, raw)) = obj.iter().find(|(k, _)| *k == "arguments") {
            super::toolgate::check_manage_connections_raw(ctx, raw, audit)?;
        }
    }

    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Execute, audit)
        .await?;
    if !resp.status().is_success() {
        // Composio refused: whatever the gateway believed about this connection is suspect.
        ctx.shared
            .connections
            .invalidate(ctx.subject(), &info.toolkit);
    }
    ctx.relay(resp)
}

/// The tool's toolkit. Composio's tool metadata is authoritative; the old API's `appName` is
/// a caller-supplied hint used only when Composio does not know the action.
async fn tool_info(
    ctx: &Ctx<'_>,
    tool: &str,
    api: Api,
    obj: &JsonObject,
) -> Result<ToolInfo, Error> {
    match ctx.shared.connections.tool(tool).await {
        Err(Error::ToolNotFound(_)) if api == Api::Legacy => {
            let app = obj
                .get_str("appName")
                .filter(|a| !a.is_empty())
                .ok_or_else(|| Error::ToolNotFound(tool.to_owned()))?
                .to_ascii_lowercase();
            Ok(ToolInfo {
                toolkit_name: app.clone(),
                toolkit: app,
                no_auth: false,
            })
        }
        other => other,
    }
}

/// The one connected account a body names, if any. Several different ids are ambiguous
/// (which one would Composio use?) and refused; the shared instant account is never the
/// subject's.
fn single_account(obj: &JsonObject, audit: &mut Audit) -> Result<Option<String>, Error> {
    let mut ids = obj.account_ids()?;
    if ids.len() > 1 {
        return Err(Error::BodyInvalid(
            "the body names more than one connected account".into(),
        ));
    }
    let id = ids.pop();
    if let Some(id) = &id {
        audit.account(id);
        if id.eq_ignore_ascii_case(INSTANT_ACCOUNT) {
            return Err(Error::ConnectedAccountNotOwned);
        }
    }
    Ok(id)
}

/// `POST /api/v3[.1]/tools/execute/proxy` and `POST /api/v2/actions/proxy`: a raw request
/// with a user's credentials. Only with an explicit, ACTIVE account of the subject's: without
/// one Composio would fall back to the project's default account.
pub(super) async fn proxy_execute(
    ctx: &Ctx<'_>,
    body: RequestBody,
    api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
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
    let id = single_account(&obj, audit)?.ok_or_else(|| {
        Error::BodyInvalid("proxy execute needs the user's connected_account_id".into())
    })?;
    let account = ctx
        .shared
        .connections
        .owned_account(&ctx.identity.subject, &id)
        .await?
        .ok_or(Error::ConnectedAccountNotOwned)?;
    audit.toolkit(&account.toolkit);
    super::toolgate::check_proxy(ctx, &account.toolkit, audit)?;
    if !account.usable() {
        let info = ToolInfo {
            toolkit_name: account.toolkit.clone(),
            toolkit: account.toolkit.clone(),
            no_auth: false,
        };
        return Err(ctx
            .shared
            .connections
            .refusal(&info, std::slice::from_ref(&account)));
    }
    ctx.pass(query.as_deref(), &obj, TimeoutClass::Execute, audit)
        .await
}
