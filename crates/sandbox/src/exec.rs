//! Tool execution as Composio decides it, shared by v3.x execute, v2 execute and sessions:
//! which account a call runs with, or why it is refused.

use serde_json::{json, Value};

use crate::http::{Ctx, Reply};
use crate::model::{Account, Tool};
use crate::store::Store;

/// How a call names its account and user.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Who<'a> {
    /// The user the call is for (`user_id`, `entityId`, a session's user).
    pub(crate) user: Option<&'a str>,
    /// An explicit connected account id.
    pub(crate) account: Option<&'a str>,
    /// The call brings its own credentials (`custom_auth_params`, `custom_connection_data`,
    /// v2 `authConfig`): no connected account is needed.
    pub(crate) custom_auth: bool,
}

/// The literal Composio accepts for its "instant" accounts.
pub(crate) const INSTANT_ACCOUNT: &str = "instant_account";

/// The account `tool` runs with for `who`, `None` when it needs none.
///
/// # Errors
/// 400/1803 when no usable account exists (or the given one is not usable or unknown),
/// 400/1812 when the given account belongs to another user than `who.user`,
/// 400/1810 when it is of another toolkit.
pub(crate) fn resolve_account(
    ctx: &Ctx,
    s: &Store,
    tool: &Tool,
    who: Who<'_>,
) -> Result<Option<Account>, Reply> {
    match who.account {
        Some(INSTANT_ACCOUNT) => Ok(None),
        Some(id) => {
            let a = s
                .account(id)
                .ok_or_else(|| ctx.no_account(&format!("Connected account {id} not found")))?;
            if let Some(user) = who.user {
                if a.user_id != user {
                    return Err(ctx.wrong_owner(id, user));
                }
            }
            if !tool.no_auth && !a.toolkit.eq_ignore_ascii_case(&tool.toolkit) {
                return Err(ctx.wrong_toolkit(id, &a.toolkit, &tool.toolkit));
            }
            if !a.is_usable() && !tool.no_auth {
                return Err(ctx.no_account(&unusable_message(a)));
            }
            Ok(Some(a.clone()))
        }
        None if tool.no_auth || who.custom_auth => Ok(None),
        None => {
            let user = who.user.unwrap_or("default");
            s.usable_account(user, &tool.toolkit)
                .cloned()
                .map(Some)
                .ok_or_else(|| {
                    ctx.no_account(&format!(
                        "No connected account found for user {user} and toolkit {}",
                        tool.toolkit
                    ))
                })
        }
    }
}

/// Why an account cannot run tools.
pub(crate) fn unusable_message(a: &Account) -> String {
    if a.is_disabled {
        format!("Connected account {} is disabled", a.id)
    } else {
        format!(
            "Connected account {} is not active (status {})",
            a.id, a.status
        )
    }
}

/// The `data` of a successful sandbox execution: what ran, as whom, with which account.
pub(crate) fn result_data(
    ctx: &Ctx,
    tool: &Tool,
    who: Who<'_>,
    account: Option<&Account>,
    arguments: &Value,
    version: &str,
) -> Value {
    json!({
        "sandbox": true,
        "api": ctx.api.label(),
        "tool_slug": tool.slug,
        "toolkit": tool.toolkit,
        "user_id": account.map(|a| a.user_id.as_str()).or(who.user),
        "connected_account_id": account.map(|a| a.id.as_str()).or(who.account),
        "custom_auth": who.custom_auth,
        "arguments": arguments,
        "version": version,
    })
}

/// The `data` of Composio's own tools that do more than describe themselves: the
/// multi-execute and proxy meta tools. `None` for any other tool.
///
/// # Errors
/// As [`proxy_tool`].
pub(crate) fn run_meta(
    ctx: &Ctx,
    s: &Store,
    tool: &Tool,
    who: Who<'_>,
    arguments: &Value,
    version: &str,
) -> Result<Option<Value>, Reply> {
    match tool.slug.as_str() {
        "COMPOSIO_MULTI_EXECUTE_TOOL" => Ok(Some(multi_execute(ctx, s, who, arguments, version))),
        PROXY_TOOL => proxy_tool(ctx, s, who, arguments).map(Some),
        _ => Ok(None),
    }
}

/// The meta tool that makes a raw request through an account of a toolkit.
pub(crate) const PROXY_TOOL: &str = "COMPOSIO_PROXY_EXECUTE";

/// `COMPOSIO_PROXY_EXECUTE`: a raw request (`endpoint`, `method`, `body`, `parameters`)
/// through the user's account of `arguments.toolkit_slug` (or the account named in the
/// arguments or by the call), as Composio runs it: the account must be the user's, of that
/// toolkit, and usable.
///
/// # Errors
/// 400/10400 without a toolkit or endpoint; 1803, 1812, 1810 as [`resolve_account`].
pub(crate) fn proxy_tool(
    ctx: &Ctx,
    s: &Store,
    who: Who<'_>,
    arguments: &Value,
) -> Result<Value, Reply> {
    let toolkit = field(arguments, "toolkit_slug")
        .or_else(|| field(arguments, "toolkit"))
        .map(str::to_ascii_lowercase);
    let named = field(arguments, "connected_account_id").or(who.account);
    let toolkit = match (toolkit, named) {
        (Some(t), _) => t,
        (None, Some(id)) => s
            .account(id)
            .map(|a| a.toolkit.clone())
            .ok_or_else(|| ctx.no_account(&format!("Connected account {id} not found")))?,
        (None, None) => return Err(ctx.validation("toolkit_slug is required")),
    };
    let endpoint =
        field(arguments, "endpoint").ok_or_else(|| ctx.validation("endpoint is required"))?;
    let as_tool = Tool::new(PROXY_TOOL, &toolkit, false);
    let account = resolve_account(
        ctx,
        s,
        &as_tool,
        Who {
            account: named,
            ..who
        },
    )?;
    let base = s
        .toolkits
        .get(&toolkit)
        .map(|t| t.base_url.clone())
        .unwrap_or_default();
    Ok(json!({
        "sandbox": true,
        "api": ctx.api.label(),
        "tool_slug": PROXY_TOOL,
        "toolkit": toolkit,
        "endpoint": endpoint,
        "method": field(arguments, "method").unwrap_or("GET"),
        "url": format!("{base}{endpoint}"),
        "user_id": account.as_ref().map(|a| a.user_id.as_str()).or(who.user),
        "connected_account_id": account.as_ref().map(|a| a.id.as_str()),
        "status": 200,
    }))
}

/// Runs `COMPOSIO_MULTI_EXECUTE_TOOL`'s inner tools (`arguments.tools[]`), each decided on its
/// own; failures are reported per tool, as Composio does.
pub(crate) fn multi_execute(
    ctx: &Ctx,
    s: &Store,
    who: Who<'_>,
    arguments: &Value,
    version: &str,
) -> Value {
    let inner = arguments
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let results: Vec<Value> = inner
        .iter()
        .map(|t| {
            let slug = t.get("tool_slug").and_then(Value::as_str).unwrap_or_default();
            let args = t.get("arguments").cloned().unwrap_or_else(|| json!({}));
            let Some(tool) = s.tool(slug) else {
                return json!({"tool_slug": slug, "successful": false, "error": format!("Tool {slug} not found"), "data": {}});
            };
            let inner_who = Who { account: t.get("account").and_then(Value::as_str), ..who };
            if tool.slug == PROXY_TOOL {
                return match proxy_tool(ctx, s, inner_who, &args) {
                    Ok(data) => json!({"tool_slug": slug, "successful": true, "error": null, "data": data}),
                    Err(reply) => json!({"tool_slug": slug, "successful": false, "error": reply_message(&reply), "data": {}}),
                };
            }
            match resolve_account(ctx, s, tool, inner_who) {
                Ok(acc) => json!({
                    "tool_slug": slug,
                    "successful": true,
                    "error": null,
                    "data": result_data(ctx, tool, inner_who, acc.as_ref(), &args, version),
                }),
                Err(reply) => json!({
                    "tool_slug": slug,
                    "successful": false,
                    "error": reply_message(&reply),
                    "data": {},
                }),
            }
        })
        .collect();
    json!({
        "sandbox": true,
        "tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL",
        "user_id": who.user,
        "results": results,
    })
}

fn reply_message(r: &Reply) -> String {
    r.message().unwrap_or_else(|| "refused".into())
}

/// A string field of a JSON object, ignoring empty strings.
pub(crate) fn field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Whether a JSON field is present and not null.
pub(crate) fn present(v: &Value, key: &str) -> bool {
    v.get(key).is_some_and(|x| !x.is_null())
}

/// The answer to a tool run with an account whose token the provider revoked: Composio
/// relays the provider's failure as a failed tool result (HTTP 200, `successful: false`).
pub(crate) fn provider_unauthorized(tool: &Tool, account: &Account, log_id: String) -> Value {
    json!({
        "data": {
            "status_code": 401,
            "message": format!("{}: 401 Unauthorized: the access token was revoked", tool.toolkit),
            "connected_account_id": account.id,
        },
        "error": "401 Client Error: Unauthorized (token revoked at the provider)",
        "successful": false,
        "log_id": log_id,
    })
}
