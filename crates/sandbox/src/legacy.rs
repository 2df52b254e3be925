//! `/api/v1/...` and `/api/v2/...`, as `composio-core` 0.7 calls them. Every success is
//! exactly 200: that SDK treats anything else, 201 included, as a failure.

use serde_json::{json, Value};

use crate::answers::{account_not_found, tool_not_found, Outcome};
use crate::exec::{self, field, present, Who};
use crate::http::{Api, Ctx, Reply};
use crate::shapes;
use crate::store::{now_rfc3339, AccountFilter, AuthConfigRec, Store};

/// v1 page size when `pageSize` is absent.
const DEFAULT_PAGE_SIZE: usize = 20;

pub(crate) fn route(ctx: &Ctx, s: &mut Store) -> Reply {
    let outcome = match (ctx.api, ctx.segs.first().map(String::as_str)) {
        (Api::V1, Some("client"))
            if ctx.at("GET", &["client", "auth", "client_info"]).is_some() =>
        {
            Ok(client_info())
        }
        (Api::V1, Some("apps")) => apps(ctx, s),
        (Api::V1, Some("triggers")) => triggers(ctx, s),
        (Api::V1, Some("connectedAccounts")) => accounts(ctx, s),
        (Api::V1, Some("integrations")) => integrations(ctx, s),
        (Api::V1, Some("logs")) if ctx.method == "POST" => Ok(Reply::ok(json!({}))),
        (_, Some("actions")) => actions(ctx, s),
        _ => Err(ctx.not_found_route()),
    };
    outcome.unwrap_or_else(|e| e)
}

fn client_info() -> Reply {
    let now = now_rfc3339();
    Reply::ok(json!({
        "client": {
            "id": "client_sbx",
            "orgId": "org_sbx",
            "name": "Sandbox project",
            "email": "sandbox@example.invalid",
            "createdAt": now,
            "updatedAt": now,
            "apiKey": null,
            "webhookURL": null,
            "eventWebhookURL": null,
            "webhookSecret": null,
            "triggersEnabled": true,
            "lastSubscribedAt": null,
            "plan": "HOBBY",
        },
        "apiKey": {
            "id": "key_sbx",
            "name": "sandbox",
            "clientId": "client_sbx",
            "createdAt": now,
            "updatedAt": now,
            "key": "********",
            "isHidden": true,
            "lastUsed": null,
        },
    }))
}

fn apps(ctx: &Ctx, s: &Store) -> Outcome {
    if ctx.at("GET", &["apps"]).is_some() {
        let items: Vec<Value> = s.toolkits.values().map(shapes::app_v1).collect();
        return Ok(Reply::ok(json!({"items": items, "totalPages": 1})));
    }
    if let Some(v) = ctx.at("GET", &["apps", "*"]) {
        let tk = s
            .toolkits
            .get(&v[0].to_ascii_lowercase())
            .ok_or_else(|| ctx.not_found("App_NotFound", &format!("App {} not found", v[0])))?;
        return Ok(Reply::ok(shapes::app_v1(tk)));
    }
    Err(ctx.not_found_route())
}

fn triggers(ctx: &Ctx, s: &Store) -> Outcome {
    if ctx.at("GET", &["triggers"]).is_some() {
        let apps = ctx.q_list(&["appNames"]);
        let items: Vec<Value> = s
            .trigger_types
            .values()
            .filter(|t| {
                apps.as_ref()
                    .is_none_or(|a| a.iter().any(|x| x.eq_ignore_ascii_case(&t.toolkit)))
            })
            .map(shapes::trigger_v1)
            .collect();
        return Ok(Reply::ok(json!(items)));
    }
    Err(ctx.not_found_route())
}

// --- connected accounts ---

fn accounts(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("GET", &["connectedAccounts"]).is_some() {
        return list_accounts(ctx, s);
    }
    if ctx.at("POST", &["connectedAccounts"]).is_some() {
        return create_account(ctx, s);
    }
    let Some(id) = ctx.segs.get(1).cloned() else {
        return Err(ctx.not_found_route());
    };
    if s.account(&id).is_none() {
        return Err(account_not_found(ctx, &id));
    }
    if ctx.at("GET", &["connectedAccounts", "*"]).is_some() {
        return Ok(Reply::ok(account_v1(s, &id)));
    }
    if ctx.at("DELETE", &["connectedAccounts", "*"]).is_some() {
        s.remove_account(&id);
        return Ok(Reply::ok(json!({"status": "success"})));
    }
    if ctx
        .at("POST", &["connectedAccounts", "*", "disable"])
        .is_some()
    {
        s.set_disabled(&id, true);
        return Ok(Reply::ok(json!({"status": "success"})));
    }
    if ctx
        .at("POST", &["connectedAccounts", "*", "enable"])
        .is_some()
    {
        s.set_disabled(&id, false);
        return Ok(Reply::ok(json!({"status": "success"})));
    }
    Err(ctx.not_found_route())
}

fn account_v1(s: &Store, id: &str) -> Value {
    s.account_rec(id).map_or(Value::Null, |rec| {
        shapes::account_v1(
            rec,
            s.toolkits.get(&rec.acc.toolkit),
            s.auth_configs.get(&rec.acc.auth_config_id),
        )
    })
}

/// Both `user_uuid` and `entityId` filter when given (they must both match).
fn user_filter(ctx: &Ctx) -> Option<Vec<String>> {
    match (ctx.q_list(&["user_uuid"]), ctx.q_list(&["entityId"])) {
        (Some(a), Some(b)) => Some(a.into_iter().filter(|u| b.contains(u)).collect()),
        (a, b) => a.or(b),
    }
}

fn list_accounts(ctx: &Ctx, s: &Store) -> Outcome {
    let filter = AccountFilter {
        user_ids: user_filter(ctx),
        toolkits: ctx.q_list(&["appNames"]),
        statuses: ctx.q_list(&["status"]),
        ids: ctx.q_list(&["connectionId"]),
        auth_config_ids: ctx.q_list(&["integrationId"]),
        active_only: ctx.q_bool("showActiveOnly").unwrap_or(false),
        hide_disabled: !ctx.q_bool("showDisabled").unwrap_or(false),
    };
    let number = |key: &str, default: usize| match ctx.q(key) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ctx.validation(&format!("{key} must be a positive integer"))),
    };
    let page = number("page", 1)?;
    let size = number("pageSize", DEFAULT_PAGE_SIZE)?;
    let all = s.filter_accounts(&filter, true);
    let total = all.len();
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .map(|(_, rec)| {
            shapes::account_v1(
                rec,
                s.toolkits.get(&rec.acc.toolkit),
                s.auth_configs.get(&rec.acc.auth_config_id),
            )
        })
        .collect();
    Ok(Reply::ok(json!({
        "items": items,
        "page": page,
        "totalPages": total.div_ceil(size).max(1),
        "total": total,
    })))
}

fn create_account(ctx: &Ctx, s: &mut Store) -> Outcome {
    let body = ctx.json()?;
    let ac =
        field(&body, "integrationId").ok_or_else(|| ctx.validation("integrationId is required"))?;
    let user = match (field(&body, "userUuid"), field(&body, "entityId")) {
        (Some(a), Some(b)) if a != b => {
            return Err(ctx.validation("userUuid and entityId name different users"));
        }
        (a, b) => a.or(b).unwrap_or("default").to_owned(),
    };
    let scheme = s
        .auth_configs
        .get(ac)
        .map(|c| c.auth_scheme.clone())
        .ok_or_else(|| {
            ctx.not_found(
                "Integration_NotFound",
                &format!("Integration {ac} not found"),
            )
        })?;
    let has_data = body
        .get("data")
        .and_then(Value::as_object)
        .is_some_and(|d| !d.is_empty());
    let status = if has_data && !scheme.starts_with("OAUTH") {
        "ACTIVE"
    } else {
        "INITIATED"
    };
    let id = s
        .create_account(&user, ac, status)
        .ok_or_else(|| ctx.validation("integration vanished"))?;
    Ok(Reply::ok(json!({
        "connectionStatus": status,
        "connectedAccountId": id,
        "redirectUrl": (status == "INITIATED").then(|| format!("https://connect.composio.dev/link/lk_{id}")),
    })))
}

fn integrations(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("POST", &["integrations"]).is_some() {
        let body = ctx.json()?;
        let app_id = field(&body, "appId").unwrap_or_default();
        let name = field(&body, "name").unwrap_or_default();
        // appId as issued by GET /v1/apps, or a toolkit slug; else the "<app>_<timestamp>" name
        // the old SDK generates.
        let toolkit = s
            .toolkits
            .keys()
            .find(|k| shapes::app_id(k) == app_id || k.eq_ignore_ascii_case(app_id))
            .or_else(|| {
                let prefix = name.rsplit_once('_').map_or(name, |(p, _)| p);
                s.toolkits.keys().find(|k| k.eq_ignore_ascii_case(prefix))
            })
            .cloned()
            .ok_or_else(|| ctx.not_found("App_NotFound", &format!("App {app_id} not found")))?;
        let scheme = field(&body, "authScheme")
            .map(str::to_owned)
            .or_else(|| s.toolkits.get(&toolkit).and_then(|t| t.auth_scheme.clone()))
            .unwrap_or_else(|| "NO_AUTH".into());
        let ac = AuthConfigRec {
            id: s.new_id("ac"),
            toolkit: toolkit.clone(),
            name: if name.is_empty() {
                format!("{toolkit} integration")
            } else {
                name.to_owned()
            },
            auth_scheme: scheme,
            managed: body
                .get("useComposioAuth")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            enabled: true,
            created_at: now_rfc3339(),
        };
        let reply = shapes::integration_v1(&ac);
        s.add_auth_config(ac);
        return Ok(Reply::ok(reply));
    }
    if ctx.at("GET", &["integrations"]).is_some() {
        let items: Vec<Value> = s
            .auth_configs
            .values()
            .map(shapes::integration_v1)
            .collect();
        return Ok(Reply::ok(
            json!({"items": items, "page": 1, "totalPages": 1}),
        ));
    }
    if let Some(v) = ctx.at("GET", &["integrations", "*"]) {
        let ac = s.auth_configs.get(v[0]).ok_or_else(|| {
            ctx.not_found(
                "Integration_NotFound",
                &format!("Integration {} not found", v[0]),
            )
        })?;
        return Ok(Reply::ok(shapes::integration_v1(ac)));
    }
    Err(ctx.not_found_route())
}

// --- actions ---

fn actions(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.api == Api::V2 && ctx.at("GET", &["actions"]).is_some() {
        let apps = ctx.q_list(&["apps", "appNames"]);
        let names = ctx.q_list(&["actions"]);
        let items: Vec<Value> = s
            .tools
            .values()
            .filter(|t| {
                apps.as_ref()
                    .is_none_or(|a| a.iter().any(|x| x.eq_ignore_ascii_case(&t.toolkit)))
            })
            .filter(|t| {
                names
                    .as_ref()
                    .is_none_or(|a| a.iter().any(|x| x.eq_ignore_ascii_case(&t.slug)))
            })
            .map(|t| {
                shapes::patched(
                    shapes::action_v2(t),
                    s.definition_patches.get(&t.slug),
                    shapes::Shape::V2,
                )
            })
            .collect();
        return Ok(Reply::ok(
            json!({"items": items, "page": 1, "totalPages": 1}),
        ));
    }
    if ctx.api == Api::V2 && ctx.at("POST", &["actions", "proxy"]).is_some() {
        return proxy(ctx, s);
    }
    if ctx.api == Api::V2 {
        if let Some(v) = ctx.at("GET", &["actions", "*"]) {
            let tool = s.action(v[0]).ok_or_else(|| tool_not_found(ctx, v[0]))?;
            return Ok(Reply::ok(shapes::patched(
                shapes::action_v2(tool),
                s.definition_patches.get(&tool.slug),
                shapes::Shape::V2,
            )));
        }
    }
    if let Some(v) = ctx.at("POST", &["actions", "*", "execute"]) {
        return execute(ctx, s, v[0]);
    }
    Err(ctx.not_found_route())
}

fn execute(ctx: &Ctx, s: &mut Store, action: &str) -> Outcome {
    let body = ctx.json()?;
    let tool = s
        .action(action)
        .cloned()
        .ok_or_else(|| tool_not_found(ctx, action))?;
    let who = Who {
        user: field(&body, "entityId"),
        account: field(&body, "connectedAccountId"),
        custom_auth: present(&body, "authConfig"),
    };
    let account = exec::resolve_account(ctx, s, &tool, who)?;
    if let Some(a) = account
        .as_ref()
        .filter(|a| s.revoked_at_provider.contains(&a.id))
    {
        let log_id = s.new_id("log");
        return Ok(Reply::ok(exec::provider_unauthorized(&tool, a, log_id)));
    }
    let input = body.get("input").cloned().unwrap_or_else(|| json!({}));
    let version = field(&body, "version").unwrap_or("latest").to_owned();
    // The old API runs Composio's meta tools too, their arguments under `input`.
    let mut data = match exec::run_meta(ctx, s, &tool, who, &input, &version)? {
        Some(d) => d,
        None => exec::result_data(ctx, &tool, who, account.as_ref(), &input, &version),
    };
    data["app_name"] = body.get("appName").cloned().unwrap_or(Value::Null);
    Ok(Reply::ok(json!({
        "data": data,
        "error": null,
        "successfull": true,
        "successful": true,
    })))
}

fn proxy(ctx: &Ctx, s: &Store) -> Outcome {
    let body = ctx.json()?;
    let id = field(&body, "connectedAccountId")
        .ok_or_else(|| ctx.validation("connectedAccountId is required"))?;
    let a = s.account(id).ok_or_else(|| account_not_found(ctx, id))?;
    if !a.is_usable() {
        return Err(ctx.no_account(&exec::unusable_message(a)));
    }
    let base = s
        .toolkits
        .get(&a.toolkit)
        .map(|t| t.base_url.clone())
        .unwrap_or_default();
    let endpoint = field(&body, "endpoint").unwrap_or("/");
    Ok(Reply::ok(json!({
        "data": {
            "sandbox": true,
            "api": ctx.api.label(),
            "endpoint": endpoint,
            "method": field(&body, "method").unwrap_or("GET"),
            "url": format!("{base}{endpoint}"),
            "user_id": a.user_id,
            "connected_account_id": a.id,
            "toolkit": a.toolkit,
            "parameters": body.get("parameters").cloned().unwrap_or_else(|| json!([])),
            "body": body.get("body").cloned().unwrap_or(Value::Null),
        },
        "status": 200,
        "headers": {"content-type": "application/json"},
    })))
}
