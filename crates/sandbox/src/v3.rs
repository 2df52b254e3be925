//! `/api/v3/...` and `/api/v3.1/...`, answered identically except for the default tool
//! version (`00000000_00` under v3, the current one under v3.1).

use serde_json::{json, Value};

use crate::answers::{
    account_not_found, limit, link_reply, list_reply, paginate_vec, tool_not_found, Outcome,
    DEFAULT_LIMIT,
};
use crate::exec::{self, field, present, Who};
use crate::http::{Api, Ctx, Reply};
use crate::session;
use crate::shapes::{self, TOOL_VERSION};
use crate::store::{self, now_rfc3339, AccountFilter, AuthConfigRec, Store, TriggerRec};

pub(crate) fn route(ctx: &Ctx, s: &mut Store) -> Reply {
    let outcome = match ctx.segs.first().map(String::as_str) {
        Some("tools") => tools(ctx, s),
        Some("toolkits") => toolkits(ctx, s),
        Some("triggers_types") => trigger_types(ctx, s),
        Some("connected_accounts") => accounts(ctx, s),
        Some("trigger_instances") => trigger_instances(ctx, s),
        Some("mcp") => mcp(ctx, s),
        Some("tool_router") => session::route(ctx, s),
        Some("auth_configs") => auth_configs(ctx, s),
        Some("files") => files(ctx),
        _ => Err(ctx.not_found_route()),
    };
    outcome.unwrap_or_else(|e| e)
}

// --- helpers ---

/// The tool version a request means: `version`, else `toolkit_versions[toolkit]` (or a plain
/// `toolkit_versions`), else the API's default.
fn requested_version(ctx: &Ctx, body: Option<&Value>, toolkit: &str) -> String {
    let given = body
        .and_then(|b| field(b, "version"))
        .map(str::to_owned)
        .or_else(|| ctx.q("version").map(str::to_owned))
        .or_else(|| {
            ctx.q(&format!("toolkit_versions[{toolkit}]"))
                .map(str::to_owned)
        })
        .or_else(|| ctx.q("toolkit_versions").map(str::to_owned));
    match given.as_deref() {
        Some("latest") => TOOL_VERSION.to_owned(),
        Some(v) => v.to_owned(),
        None if ctx.api == Api::V3 => "00000000_00".to_owned(),
        None => TOOL_VERSION.to_owned(),
    }
}

// --- tools ---

fn tools(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("GET", &["tools"]).is_some() {
        return list_tools(ctx, s);
    }
    if ctx.at("GET", &["tools", "enum"]).is_some() {
        return Ok(Reply::ok(json!(s.tools.keys().collect::<Vec<_>>())));
    }
    if let Some(v) = ctx.at("GET", &["tools", "*"]) {
        let tool = s.tool(v[0]).ok_or_else(|| tool_not_found(ctx, v[0]))?;
        let version = requested_version(ctx, None, &tool.toolkit);
        return Ok(Reply::ok(shapes::patched(
            shapes::tool_v3(tool, s.toolkits.get(&tool.toolkit), &version),
            s.definition_patches.get(&tool.slug),
            shapes::Shape::V3,
        )));
    }
    if ctx.at("POST", &["tools", "execute", "proxy"]).is_some() {
        return proxy(ctx, s);
    }
    if let Some(v) = ctx.at("POST", &["tools", "execute", "*"]) {
        return execute(ctx, s, v[0]);
    }
    if ctx
        .at("POST", &["tools", "execute", "*", "input"])
        .is_some()
    {
        return Ok(Reply::ok(json!({"arguments": {}, "error": null})));
    }
    if ctx.at("POST", &["tools", "scopes", "required"]).is_some() {
        return Ok(Reply::ok(
            json!({"scopes_required": [], "per_tool_requirements": []}),
        ));
    }
    Err(ctx.not_found_route())
}

fn list_tools(ctx: &Ctx, s: &Store) -> Outcome {
    let toolkits = ctx.q_list(&["toolkit_slug"]);
    let slugs = ctx.q_list(&["tool_slugs"]);
    let search = ctx.q("search").map(str::to_ascii_uppercase);
    let items: Vec<_> = s
        .tools
        .values()
        .filter(|t| {
            toolkits
                .as_ref()
                .is_none_or(|l| l.iter().any(|k| k.eq_ignore_ascii_case(&t.toolkit)))
        })
        .filter(|t| {
            slugs
                .as_ref()
                .is_none_or(|l| l.iter().any(|k| k.eq_ignore_ascii_case(&t.slug)))
        })
        .filter(|t| search.as_ref().is_none_or(|q| t.slug.contains(q.as_str())))
        .collect();
    let page = paginate_vec(ctx, items)?;
    Ok(list_reply(page, |t| {
        let version = requested_version(ctx, None, &t.toolkit);
        shapes::patched(
            shapes::tool_v3(t, s.toolkits.get(&t.toolkit), &version),
            s.definition_patches.get(&t.slug),
            shapes::Shape::V3,
        )
    }))
}

fn execute(ctx: &Ctx, s: &mut Store, slug: &str) -> Outcome {
    let body = ctx.json()?;
    let tool = s
        .tool(slug)
        .cloned()
        .ok_or_else(|| tool_not_found(ctx, slug))?;
    if present(&body, "text") && present(&body, "arguments") {
        return Err(ctx.validation(
            "Error in payload.text.arguments: Only one of 'text' or 'arguments' must be provided",
        ));
    }
    let who = Who {
        user: field(&body, "user_id").or_else(|| field(&body, "entity_id")),
        account: field(&body, "connected_account_id"),
        custom_auth: present(&body, "custom_auth_params")
            || present(&body, "custom_connection_data"),
    };
    let version = requested_version(ctx, Some(&body), &tool.toolkit);
    let arguments = body.get("arguments").cloned().unwrap_or_else(|| json!({}));
    let account = exec::resolve_account(ctx, s, &tool, who)?;
    if let Some(a) = account
        .as_ref()
        .filter(|a| s.revoked_at_provider.contains(&a.id))
    {
        let log_id = s.new_id("log");
        return Ok(Reply::ok(exec::provider_unauthorized(&tool, a, log_id)));
    }
    let data = if let Some(d) = exec::run_meta(ctx, s, &tool, who, &arguments, &version)? {
        d
    } else {
        let mut d = exec::result_data(ctx, &tool, who, account.as_ref(), &arguments, &version);
        if let Some(text) = field(&body, "text") {
            d["text"] = json!(text);
        }
        d
    };
    Ok(Reply::ok(json!({
        "data": data,
        "error": null,
        "successful": true,
        "log_id": s.new_id("log"),
        "session_info": null,
    })))
}

/// `POST tools/execute/proxy`: a raw call with an account's credentials. Without an account,
/// Composio uses "the default account for the project": here the newest usable account of
/// `user_id` if given, else of anyone.
fn proxy(ctx: &Ctx, s: &mut Store) -> Outcome {
    let body = ctx.json()?;
    let (Some(endpoint), Some(method)) = (field(&body, "endpoint"), field(&body, "method")) else {
        return Err(ctx.validation("endpoint and method are required"));
    };
    let user = field(&body, "user_id");
    let custom = present(&body, "custom_connection_data");
    let account = match field(&body, "connected_account_id") {
        Some(id) => {
            let a = s
                .account(id)
                .ok_or_else(|| ctx.no_account(&format!("Connected account {id} not found")))?;
            if let Some(u) = user.filter(|u| *u != a.user_id) {
                return Err(ctx.wrong_owner(id, u));
            }
            if !a.is_usable() {
                return Err(ctx.no_account(&exec::unusable_message(a)));
            }
            Some(a.clone())
        }
        None if custom => None,
        None => {
            let found = s
                .all_accounts()
                .into_iter()
                .rev()
                .find(|a| a.is_usable() && user.is_none_or(|u| u == a.user_id));
            Some(found.ok_or_else(|| {
                ctx.no_account("No connected account found for the proxy request")
            })?)
        }
    };
    let base = account
        .as_ref()
        .and_then(|a| s.toolkits.get(&a.toolkit))
        .map(|t| t.base_url.clone())
        .unwrap_or_default();
    Ok(Reply::ok(json!({
        "data": {
            "sandbox": true,
            "api": ctx.api.label(),
            "endpoint": endpoint,
            "method": method,
            "url": format!("{base}{endpoint}"),
            "user_id": account.as_ref().map(|a| a.user_id.as_str()).or(user),
            "connected_account_id": account.as_ref().map(|a| a.id.as_str()),
            "toolkit": account.as_ref().map(|a| a.toolkit.as_str()),
            "parameters": body.get("parameters").cloned().unwrap_or_else(|| json!([])),
            "body": body.get("body").cloned().unwrap_or(Value::Null),
            "custom_auth": custom,
        },
        "status": 200,
        "headers": { "content-type": "application/json" },
        "binary_data": null,
    })))
}

// --- toolkits, trigger types ---

fn toolkits(ctx: &Ctx, s: &Store) -> Outcome {
    let counts = |slug: &str| {
        (
            s.tools.values().filter(|t| t.toolkit == slug).count(),
            s.trigger_types
                .values()
                .filter(|t| t.toolkit == slug)
                .count(),
        )
    };
    if ctx.at("GET", &["toolkits"]).is_some() {
        let category = ctx.q("category");
        let items: Vec<_> = s
            .toolkits
            .values()
            .filter(|t| category.is_none_or(|c| c.eq_ignore_ascii_case(&t.category)))
            .collect();
        let page = paginate_vec(ctx, items)?;
        return Ok(list_reply(page, |t| {
            let (tools, triggers) = counts(&t.slug);
            shapes::toolkit_v3(t, tools, triggers, false)
        }));
    }
    if ctx.at("GET", &["toolkits", "categories"]).is_some() {
        let mut cats: Vec<&str> = s.toolkits.values().map(|t| t.category.as_str()).collect();
        cats.sort_unstable();
        cats.dedup();
        let page = paginate_vec(ctx, cats)?;
        return Ok(list_reply(
            page,
            |c| json!({"id": c, "name": store::title_case(c)}),
        ));
    }
    if let Some(v) = ctx.at("GET", &["toolkits", "*"]) {
        let tk = s.toolkits.get(&v[0].to_ascii_lowercase()).ok_or_else(|| {
            ctx.not_found("Toolkit_NotFound", &format!("Toolkit {} not found", v[0]))
        })?;
        let (tools, triggers) = counts(&tk.slug);
        return Ok(Reply::ok(shapes::toolkit_v3(tk, tools, triggers, true)));
    }
    Err(ctx.not_found_route())
}

fn trigger_types(ctx: &Ctx, s: &Store) -> Outcome {
    if ctx.at("GET", &["triggers_types"]).is_some() {
        let toolkits = ctx.q_list(&["toolkit_slugs"]);
        let items: Vec<_> = s
            .trigger_types
            .values()
            .filter(|t| {
                toolkits
                    .as_ref()
                    .is_none_or(|l| l.iter().any(|k| k.eq_ignore_ascii_case(&t.toolkit)))
            })
            .collect();
        let page = paginate_vec(ctx, items)?;
        return Ok(list_reply(page, |t| {
            shapes::trigger_type_v3(t, s.toolkits.get(&t.toolkit))
        }));
    }
    if ctx.at("GET", &["triggers_types", "list", "enum"]).is_some() {
        return Ok(Reply::ok(json!(s.trigger_types.keys().collect::<Vec<_>>())));
    }
    if let Some(v) = ctx.at("GET", &["triggers_types", "*"]) {
        let t = s
            .trigger_types
            .get(&v[0].to_ascii_uppercase())
            .ok_or_else(|| trigger_type_not_found(ctx, v[0]))?;
        return Ok(Reply::ok(shapes::trigger_type_v3(
            t,
            s.toolkits.get(&t.toolkit),
        )));
    }
    Err(ctx.not_found_route())
}

fn trigger_type_not_found(ctx: &Ctx, slug: &str) -> Reply {
    ctx.not_found(
        "TriggerType_NotFound",
        &format!("Trigger type {slug} not found"),
    )
}

// --- connected accounts ---

fn accounts(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("GET", &["connected_accounts"]).is_some() {
        return list_accounts(ctx, s);
    }
    if ctx.at("POST", &["connected_accounts"]).is_some() {
        return create_account(ctx, s);
    }
    if ctx.at("POST", &["connected_accounts", "link"]).is_some() {
        return link_account(ctx, s);
    }
    let Some(id) = ctx.segs.get(1).cloned() else {
        return Err(ctx.not_found_route());
    };
    let known_path =
        ctx.path_is(&["connected_accounts", "*"]) || ctx.path_is(&["connected_accounts", "*", "*"]);
    if known_path && s.account(&id).is_none() {
        return Err(account_not_found(ctx, &id));
    }
    if ctx.at("GET", &["connected_accounts", "*"]).is_some() {
        return Ok(Reply::ok(account_json(s, &id, true)));
    }
    if ctx.at("PATCH", &["connected_accounts", "*"]).is_some() {
        let body = ctx.json()?;
        let rec = s
            .account_rec_mut(&id)
            .ok_or_else(|| account_not_found(ctx, &id))?;
        if let Some(alias) = body.get("alias") {
            rec.alias = alias.as_str().map(str::to_owned);
        }
        rec.updated_at = now_rfc3339();
        return Ok(Reply::ok(
            json!({"id": id, "status": rec.acc.status, "success": true}),
        ));
    }
    if ctx.at("DELETE", &["connected_accounts", "*"]).is_some() {
        s.remove_account(&id);
        return Ok(Reply::ok(json!({"success": true, "revoke_job_id": null})));
    }
    if ctx
        .at("POST", &["connected_accounts", "*", "refresh"])
        .is_some()
    {
        let status = s.account(&id).map(|a| a.status.clone()).unwrap_or_default();
        return Ok(Reply::ok(json!({
            "id": id,
            "status": status,
            "redirect_url": format!("https://connect.composio.dev/link/lk_refresh_{id}"),
        })));
    }
    if ctx
        .at("PATCH", &["connected_accounts", "*", "status"])
        .is_some()
    {
        let body = ctx.json()?;
        let Some(enabled) = body.get("enabled").and_then(Value::as_bool) else {
            return Err(ctx.validation("enabled (boolean) is required"));
        };
        s.set_disabled(&id, !enabled);
        return Ok(Reply::ok(json!({"success": true})));
    }
    if ctx
        .at("POST", &["connected_accounts", "*", "revoke"])
        .is_some()
    {
        s.set_status(
            &id,
            "REVOKED",
            Some("Revoked via user-initiated revoke endpoint"),
        );
        return Ok(Reply::ok(json!({
            "connected_account": {"id": id, "status": "REVOKED"},
            "revoked_tokens": ["access_token", "refresh_token"],
        })));
    }
    Err(ctx.not_found_route())
}

fn account_json(s: &Store, id: &str, full: bool) -> Value {
    s.account_rec(id).map_or(Value::Null, |rec| {
        shapes::account_v3(
            rec,
            s.toolkits.get(&rec.acc.toolkit),
            s.auth_configs.get(&rec.acc.auth_config_id),
            full,
        )
    })
}

fn list_accounts(ctx: &Ctx, s: &Store) -> Outcome {
    let filter = AccountFilter {
        user_ids: ctx.q_list(&["user_ids"]),
        toolkits: ctx.q_list(&["toolkit_slugs"]),
        statuses: ctx.q_list(&["statuses"]),
        ids: ctx.q_list(&["connected_account_ids"]),
        auth_config_ids: ctx.q_list(&["auth_config_ids"]),
        ..AccountFilter::default()
    };
    let desc = !ctx
        .q("order_direction")
        .is_some_and(|d| d.eq_ignore_ascii_case("asc"));
    let limit = limit(ctx, DEFAULT_LIMIT)?;
    let keyed = s.filter_accounts(&filter, desc);
    let page =
        store::paginate(keyed, ctx.q("cursor"), limit, desc).map_err(|e| ctx.validation(&e))?;
    Ok(list_reply(page, |rec| {
        shapes::account_v3(
            rec,
            s.toolkits.get(&rec.acc.toolkit),
            s.auth_configs.get(&rec.acc.auth_config_id),
            false,
        )
    }))
}

fn auth_config_for_create<'a>(
    ctx: &Ctx,
    s: &'a Store,
    id: Option<&str>,
) -> Result<&'a AuthConfigRec, Reply> {
    let id = id.ok_or_else(|| ctx.validation("auth_config id is required"))?;
    let ac = s.auth_configs.get(id).ok_or_else(|| {
        ctx.not_found(
            "AuthConfig_NotFound",
            &format!("Auth config {id} not found"),
        )
    })?;
    if !ac.enabled {
        return Err(ctx.error(
            400,
            10400,
            "AuthConfig_Disabled",
            &format!("Auth config {id} is disabled"),
            "Enable the auth config.",
        ));
    }
    Ok(ac)
}

fn create_account(ctx: &Ctx, s: &mut Store) -> Outcome {
    let body = ctx.json()?;
    let conn = body.get("connection").cloned().unwrap_or_else(|| json!({}));
    let ac_id = body.get("auth_config").and_then(|a| field(a, "id"));
    let scheme = auth_config_for_create(ctx, s, ac_id)?.auth_scheme.clone();
    let user = field(&conn, "user_id").unwrap_or("default");
    let active = conn
        .pointer("/state/val/status")
        .and_then(Value::as_str)
        .is_some_and(|st| st.eq_ignore_ascii_case("ACTIVE"));
    let status = if active { "ACTIVE" } else { "INITIATED" };
    let ac_id = ac_id.unwrap_or_default().to_owned();
    let id = s
        .create_account(user, &ac_id, status)
        .ok_or_else(|| ctx.validation("auth config vanished"))?;
    if let Some(alias) = field(&conn, "alias") {
        if let Some(rec) = s.account_rec_mut(&id) {
            rec.alias = Some(alias.to_owned());
        }
    }
    let redirect = (!active).then(|| format!("https://connect.composio.dev/link/lk_{id}"));
    let mut val = json!({"status": status});
    if let Some(r) = &redirect {
        val["redirectUrl"] = json!(r);
        val["callbackUrl"] = json!(field(&conn, "callback_url"));
    }
    Ok(Reply::created(json!({
        "id": id,
        "status": status,
        "connectionData": {"authScheme": scheme, "val": val},
        "redirect_url": redirect,
        "redirect_uri": redirect,
        "deprecated": {"uuid": shapes::uuid_like(&id), "authConfigUuid": shapes::uuid_like(&ac_id)},
    })))
}

fn link_account(ctx: &Ctx, s: &mut Store) -> Outcome {
    let body = ctx.json()?;
    let Some(user) = field(&body, "user_id") else {
        return Err(ctx.validation("user_id is required"));
    };
    let ac_id = auth_config_for_create(ctx, s, field(&body, "auth_config_id"))?
        .id
        .clone();
    let id = s
        .create_account(user, &ac_id, "INITIATED")
        .ok_or_else(|| ctx.validation("auth config vanished"))?;
    if let Some(alias) = field(&body, "alias") {
        if let Some(rec) = s.account_rec_mut(&id) {
            rec.alias = Some(alias.to_owned());
        }
    }
    Ok(Reply::created(link_reply(s, &id)))
}

// --- trigger instances ---

fn trigger_instances(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("GET", &["trigger_instances", "active"]).is_some() {
        return list_triggers(ctx, s);
    }
    if let Some(v) = ctx.at("POST", &["trigger_instances", "*", "upsert"]) {
        return upsert_trigger(ctx, s, &v[0].to_ascii_uppercase());
    }
    let id = match ctx.segs.as_slice() {
        [_, manage, id] if manage == "manage" => id.clone(),
        _ => return Err(ctx.not_found_route()),
    };
    let not_found = || {
        ctx.not_found(
            "TriggerInstance_NotFound",
            &format!("Trigger instance {id} not found"),
        )
    };
    if ctx.method == "PATCH" {
        let body = ctx.json()?;
        let disabled = match field(&body, "status") {
            Some("enable") => false,
            Some("disable") => true,
            _ => return Err(ctx.validation("status must be \"enable\" or \"disable\"")),
        };
        let t = s.trigger_mut(&id).ok_or_else(not_found)?;
        if let Some(u) = field(&body, "user_id").filter(|u| *u != t.user_id) {
            return Err(ctx.wrong_owner(&t.connected_account_id, u));
        }
        t.disabled = disabled;
        t.updated_at = now_rfc3339();
        return Ok(Reply::ok(json!({"status": "success"})));
    }
    if ctx.method == "DELETE" {
        if !s.remove_trigger(&id) {
            return Err(not_found());
        }
        return Ok(Reply::ok(json!({"trigger_id": id})));
    }
    Err(ctx.not_found_route())
}

fn upsert_trigger(ctx: &Ctx, s: &mut Store, slug: &str) -> Outcome {
    let body = ctx.json()?;
    let toolkit = s
        .trigger_types
        .get(slug)
        .map(|t| t.toolkit.clone())
        .ok_or_else(|| trigger_type_not_found(ctx, slug))?;
    let user = field(&body, "user_id");
    let account_id =
        field(&body, "connected_account_id").or_else(|| field(&body, "connectedAuthId"));
    let account = match account_id {
        Some(id) => {
            let a = s.account(id).ok_or_else(|| account_not_found(ctx, id))?;
            if let Some(u) = user.filter(|u| *u != a.user_id) {
                return Err(ctx.wrong_owner(id, u));
            }
            if !a.toolkit.eq_ignore_ascii_case(&toolkit) {
                return Err(ctx.wrong_toolkit(id, &a.toolkit, &toolkit));
            }
            a.clone()
        }
        None => {
            let u = user.unwrap_or("default");
            s.usable_account(u, &toolkit).cloned().ok_or_else(|| {
                ctx.no_account(&format!(
                    "No active connection found for user {u} and toolkit {toolkit}"
                ))
            })?
        }
    };
    let config = body
        .get("trigger_config")
        .or_else(|| body.get("triggerConfig"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    let existing = s
        .triggers
        .values_mut()
        .find(|t| t.slug == slug && t.connected_account_id == account.id);
    let id = if let Some(t) = existing {
        t.config = config;
        t.disabled = false;
        t.updated_at = now_rfc3339();
        t.id.clone()
    } else {
        let id = s.new_id("ti");
        let now = now_rfc3339();
        s.add_trigger(TriggerRec {
            id: id.clone(),
            slug: slug.to_owned(),
            user_id: account.user_id.clone(),
            connected_account_id: account.id.clone(),
            auth_config_id: account.auth_config_id.clone(),
            config,
            disabled: false,
            created_at: now.clone(),
            updated_at: now,
        });
        id
    };
    Ok(Reply::ok(
        json!({"trigger_id": id, "deprecated": {"uuid": shapes::uuid_like(&id)}}),
    ))
}

fn list_triggers(ctx: &Ctx, s: &Store) -> Outcome {
    let users = ctx.q_list(&["user_ids"]);
    let accounts = ctx.q_list(&["connected_account_ids", "connectedAccountIds"]);
    let ids = ctx.q_list(&["trigger_ids", "triggerIds"]);
    let names = ctx.q_list(&["trigger_names", "triggerNames"]);
    let acs = ctx.q_list(&["auth_config_ids", "authConfigIds"]);
    let show_disabled = ctx
        .q_bool("show_disabled")
        .or_else(|| ctx.q_bool("showDisabled"))
        .unwrap_or(false);
    let has = |l: &Option<Vec<String>>, v: &str| {
        l.as_ref()
            .is_none_or(|l| l.iter().any(|x| x.eq_ignore_ascii_case(v)))
    };
    let items: Vec<&TriggerRec> = s
        .triggers
        .values()
        .filter(|t| has(&users, &t.user_id) && has(&accounts, &t.connected_account_id))
        .filter(|t| has(&ids, &t.id) && has(&names, &t.slug) && has(&acs, &t.auth_config_id))
        .filter(|t| show_disabled || !t.disabled)
        .collect();
    let page = paginate_vec(ctx, items)?;
    Ok(list_reply(page, shapes::trigger_instance_v3))
}

// --- MCP ---

fn mcp_url(ctx: &Ctx, id: &str) -> String {
    format!("{}/v3/mcp/{id}", ctx.origin)
}

fn mcp_json(ctx: &Ctx, s: &Store, id: &str) -> Value {
    let Some(m) = s.mcp_servers.get(id) else {
        return Value::Null;
    };
    let url = mcp_url(ctx, &m.id);
    json!({
        "id": m.id,
        "name": m.name,
        "toolkits": m.toolkits,
        "auth_config_ids": m.auth_config_ids,
        "allowed_tools": m.allowed_tools,
        "managed_auth_via_composio": true,
        "mcp_url": url,
        "commands": {
            "claude": format!("npx @composio/mcp@latest setup \"{url}\" \"{}\" --client claude", m.name),
            "cursor": format!("npx @composio/mcp@latest setup \"{url}\" \"{}\" --client cursor", m.name),
            "windsurf": format!("npx @composio/mcp@latest setup \"{url}\" \"{}\" --client windsurf", m.name),
        },
        "toolkit_icons": m.toolkits.iter().map(|t| (t.clone(), json!(format!("https://logos.composio.dev/api/{t}")))).collect::<serde_json::Map<_, _>>(),
        "server_instance_count": m.instances.len(),
        "created_at": m.created_at,
        "updated_at": m.created_at,
        "deleted": false,
    })
}

fn mcp(ctx: &Ctx, s: &mut Store) -> Outcome {
    let not_found =
        |id: &str| ctx.not_found("Mcp_ServerNotFound", &format!("MCP server {id} not found"));
    if ctx.at("GET", &["mcp", "servers"]).is_some() {
        let ids: Vec<String> = s.mcp_servers.keys().cloned().collect();
        let page = paginate_vec(ctx, ids)?;
        return Ok(Reply::ok(json!({
            "items": page.items.iter().map(|id| mcp_json(ctx, s, id)).collect::<Vec<_>>(),
            "current_page": page.current_page,
            "total_pages": page.total_pages,
        })));
    }
    if ctx.at("POST", &["mcp", "servers", "generate"]).is_some() {
        let body = ctx.json()?;
        let id = field(&body, "mcp_server_id")
            .ok_or_else(|| ctx.validation("mcp_server_id is required"))?;
        if !s.mcp_servers.contains_key(id) {
            return Err(not_found(id));
        }
        let url = mcp_url(ctx, id);
        let list = |key: &str| -> Vec<String> {
            body.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        return Ok(Reply::ok(json!({
            "mcp_url": url,
            "user_ids_url": list("user_ids").iter().map(|u| format!("{url}?user_id={}", enc(u))).collect::<Vec<_>>(),
            "connected_account_urls": list("connected_account_ids").iter().map(|c| format!("{url}?connected_account_id={}", enc(c))).collect::<Vec<_>>(),
        })));
    }
    if let Some(v) = ctx.at("POST", &["mcp", "servers", "*", "instances"]) {
        let server = v[0].to_owned();
        let body = ctx.json()?;
        let user = field(&body, "user_id")
            .ok_or_else(|| ctx.validation("user_id is required"))?
            .to_owned();
        let instance = s.new_id("mi");
        let m = s
            .mcp_servers
            .get_mut(&server)
            .ok_or_else(|| not_found(&server))?;
        m.instances.push((instance.clone(), user.clone()));
        let now = now_rfc3339();
        return Ok(Reply::ok(json!({
            "id": instance, "instance_id": user, "mcp_server_id": server, "created_at": now, "updated_at": now,
        })));
    }
    if let Some(v) = ctx.at("GET", &["mcp", "servers", "*", "instances"]) {
        let m = s.mcp_servers.get(v[0]).ok_or_else(|| not_found(v[0]))?;
        return Ok(Reply::ok(json!({
            "server_id": m.id,
            "server_name": m.name,
            "instances": m.instances.iter().map(|(id, user)| json!({
                "id": id, "instance_id": user, "mcp_server_id": m.id, "created_at": m.created_at, "updated_at": m.created_at,
            })).collect::<Vec<_>>(),
            "total_pages": 1,
            "current_page": 1,
        })));
    }
    if let Some(v) = ctx.at("GET", &["mcp", "*"]) {
        if !s.mcp_servers.contains_key(v[0]) {
            return Err(not_found(v[0]));
        }
        return Ok(Reply::ok(mcp_json(ctx, s, v[0])));
    }
    Err(ctx.not_found_route())
}

// --- auth configs, files ---

fn auth_configs(ctx: &Ctx, s: &mut Store) -> Outcome {
    let connections = |s: &Store, id: &str| {
        s.all_accounts()
            .iter()
            .filter(|a| a.auth_config_id == id)
            .count()
    };
    if ctx.at("GET", &["auth_configs"]).is_some() {
        let toolkit = ctx.q("toolkit_slug");
        let managed = ctx.q_bool("is_composio_managed");
        let items: Vec<_> = s
            .auth_configs
            .values()
            .filter(|ac| toolkit.is_none_or(|t| t.eq_ignore_ascii_case(&ac.toolkit)))
            .filter(|ac| managed.is_none_or(|m| m == ac.managed))
            .collect();
        let page = paginate_vec(ctx, items)?;
        return Ok(list_reply(page, |ac| {
            shapes::auth_config_v3(ac, connections(s, &ac.id))
        }));
    }
    if ctx.at("POST", &["auth_configs"]).is_some() {
        let body = ctx.json()?;
        let toolkit = body
            .get("toolkit")
            .and_then(|t| field(t, "slug"))
            .ok_or_else(|| ctx.validation("toolkit.slug is required"))?
            .to_ascii_lowercase();
        let cfg = body
            .get("auth_config")
            .cloned()
            .unwrap_or_else(|| json!({}));
        let managed = field(&cfg, "type") != Some("use_custom_auth");
        let scheme = field(&cfg, "auth_scheme")
            .map(str::to_owned)
            .or_else(|| s.ensure_toolkit(&toolkit).auth_scheme.clone())
            .unwrap_or_else(|| "NO_AUTH".into());
        let id = s.new_id("ac");
        s.add_auth_config(AuthConfigRec {
            id: id.clone(),
            toolkit: toolkit.clone(),
            name: field(&cfg, "name")
                .map_or_else(|| format!("{toolkit} auth config"), str::to_owned),
            auth_scheme: scheme.clone(),
            managed,
            enabled: true,
            created_at: now_rfc3339(),
        });
        return Ok(Reply::created(json!({
            "toolkit": {"slug": toolkit},
            "auth_config": {"id": id, "auth_scheme": scheme, "is_composio_managed": managed, "restrict_to_following_tools": []},
        })));
    }
    if let Some(v) = ctx.at("GET", &["auth_configs", "*"]) {
        let ac = s.auth_configs.get(v[0]).ok_or_else(|| {
            ctx.not_found(
                "AuthConfig_NotFound",
                &format!("Auth config {} not found", v[0]),
            )
        })?;
        return Ok(Reply::ok(shapes::auth_config_v3(
            ac,
            connections(s, &ac.id),
        )));
    }
    Err(ctx.not_found_route())
}

fn files(ctx: &Ctx) -> Outcome {
    if ctx.at("POST", &["files", "upload", "request"]).is_some() {
        let body = ctx.json()?;
        let name = field(&body, "filename").unwrap_or("file");
        let md5 = field(&body, "md5").unwrap_or("0");
        let key = format!(
            "sandbox/{}/{}/{md5}/{name}",
            field(&body, "toolkit_slug").unwrap_or("none"),
            field(&body, "tool_slug").unwrap_or("none")
        );
        let url = format!("https://storage.sandbox.invalid/{key}?signature=sbx");
        return Ok(Reply::ok(json!({
            "id": format!("file_{md5}"),
            "key": key,
            "type": "new",
            "newPresignedUrl": url,
            "new_presigned_url": url,
            "metadata": {"storage_backend": "s3"},
        })));
    }
    if ctx.at("GET", &["files", "list"]).is_some() {
        return Ok(Reply::ok(
            json!({"items": [], "next_cursor": null, "total_pages": 0, "current_page": 1, "total_items": 0}),
        ));
    }
    Err(ctx.not_found_route())
}
