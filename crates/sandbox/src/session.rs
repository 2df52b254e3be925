//! Tool-router sessions (`/tool_router/session...`): a session is created for one user and
//! afterwards its id stands for that user.

use serde_json::{json, Map, Value};

use crate::answers::{self, list_reply, paginate_vec, Outcome};
use crate::exec::{self, field, Who};
use crate::http::{Ctx, Reply};
use crate::model::{Account, Tool};
use crate::shapes::{self, TOOL_VERSION};
use crate::store::{now_rfc3339, now_secs, SessionRec, Store};

/// The meta tools every session offers.
const ROUTER_TOOLS: &[&str] = &[
    "COMPOSIO_SEARCH_TOOLS",
    "COMPOSIO_MULTI_EXECUTE_TOOL",
    "COMPOSIO_MANAGE_CONNECTIONS",
    "COMPOSIO_GET_TOOL_SCHEMAS",
];

pub(crate) fn route(ctx: &Ctx, s: &mut Store) -> Outcome {
    if ctx.at("POST", &["tool_router", "session"]).is_some() {
        return create(ctx, s);
    }
    let Some(id) = (match ctx.segs.as_slice() {
        [_, session, id, ..] if session == "session" => Some(id.clone()),
        _ => None,
    }) else {
        return Err(ctx.not_found_route());
    };
    let Some(session) = s.session(&id).cloned() else {
        return Err(if ctx.segs.len() <= 4 {
            ctx.not_found(
                "ToolRouter_SessionNotFound",
                &format!("Session {id} not found"),
            )
        } else {
            ctx.not_found_route()
        });
    };
    let action = ctx.segs.get(3).map(String::as_str);
    match (ctx.method.as_str(), action) {
        ("GET", None) => Ok(Reply::ok(session_json(ctx, &session))),
        ("PATCH", None) => patch(ctx, s, session),
        ("DELETE", None) => {
            s.remove_session(&id);
            Ok(Reply::ok(json!({"session_id": id, "deleted": true})))
        }
        ("POST", Some("execute")) => execute(ctx, s, &session, false),
        ("POST", Some("execute_meta")) => execute(ctx, s, &session, true),
        ("POST", Some("proxy_execute")) => proxy_execute(ctx, s, &session),
        ("POST", Some("link")) => link(ctx, s, &session),
        ("POST", Some("search")) => search(ctx, s, &session),
        ("GET", Some("tools")) => tools(ctx, s, &session),
        ("GET", Some("toolkits")) => toolkits(ctx, s, &session),
        _ => Err(ctx.not_found_route()),
    }
}

/// `toolkits` as the SDKs send it (`{"enable": [...]}`, `{"disable": [...]}` or a list),
/// normalised to the response form (`{"enabled": [...]}` / `{"disabled": [...]}`).
fn normalise_toolkits(v: &Value) -> Option<Value> {
    let lower = |a: &Value| -> Vec<String> {
        a.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default()
    };
    if v.is_array() {
        return Some(json!({"enabled": lower(v)}));
    }
    if let Some(e) = v.get("enable").or_else(|| v.get("enabled")) {
        return Some(json!({"enabled": lower(e)}));
    }
    if let Some(d) = v.get("disable").or_else(|| v.get("disabled")) {
        return Some(json!({"disabled": lower(d)}));
    }
    None
}

/// `connected_accounts` pins (`{toolkit: id}` or `{toolkit: [ids]}`), each checked to belong
/// to `user`, as Composio requires.
fn pinned_accounts(ctx: &Ctx, s: &Store, v: &Value, user: &str) -> Result<Value, Reply> {
    let mut out = Map::new();
    for (toolkit, ids) in v.as_object().into_iter().flatten() {
        let ids: Vec<&str> = match ids {
            Value::String(id) => vec![id.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for id in &ids {
            let a = s
                .account(id)
                .ok_or_else(|| answers::account_not_found(ctx, id))?;
            if a.user_id != user {
                return Err(ctx.wrong_owner(id, user));
            }
        }
        out.insert(toolkit.to_ascii_lowercase(), json!(ids));
    }
    Ok(Value::Object(out))
}

/// Applies the configurable fields of a create/patch body onto `config`.
fn apply_config(
    ctx: &Ctx,
    s: &Store,
    config: &mut Value,
    body: &Value,
    user: &str,
) -> Result<(), Reply> {
    if let Some(t) = body.get("toolkits").and_then(normalise_toolkits) {
        config["toolkits"] = t;
    }
    if let Some(ca) = body.get("connected_accounts") {
        config["connected_accounts"] = pinned_accounts(ctx, s, ca, user)?;
    }
    if let Some(ac) = body.get("auth_configs") {
        config["auth_configs"] = ac.clone();
    }
    if let Some(mc) = body.get("manage_connections") {
        let enabled = mc
            .as_bool()
            .or_else(|| mc.get("enable").and_then(Value::as_bool))
            .unwrap_or(true);
        config["manage_connections"] = json!({
            "enabled": enabled,
            "callback_url": mc.get("callback_url").cloned().unwrap_or(Value::Null),
        });
    }
    for key in ["tools", "tags", "workbench", "multi_account"] {
        if let Some(v) = body.get(key) {
            config[key] = v.clone();
        }
    }
    Ok(())
}

fn create(ctx: &Ctx, s: &mut Store) -> Outcome {
    let body = ctx.json()?;
    let Some(user) = field(&body, "user_id") else {
        return Err(ctx.validation("user_id is required"));
    };
    let mut config = json!({
        "manage_connections": {"enabled": true, "callback_url": null},
        "execute": {"enable_multi_execute": true},
        "preload": {"tools": []},
        "search": {"enable": true},
        "instant": false,
    });
    apply_config(ctx, s, &mut config, &body, user)?;
    let session = SessionRec {
        id: s.new_id("trs"),
        user_id: user.to_owned(),
        config,
        version: 1,
    };
    s.put_session(session.clone());
    Ok(Reply::created(session_json(ctx, &session)))
}

fn patch(ctx: &Ctx, s: &mut Store, mut session: SessionRec) -> Outcome {
    let body = ctx.json()?;
    let user = session.user_id.clone();
    apply_config(ctx, s, &mut session.config, &body, &user)?;
    session.version += 1;
    s.put_session(session.clone());
    Ok(Reply::ok(session_json(ctx, &session)))
}

/// The session as create / retrieve answer it.
fn session_json(ctx: &Ctx, session: &SessionRec) -> Value {
    let mut config = session.config.clone();
    if !config.is_object() {
        config = json!({});
    }
    config["user_id"] = json!(session.user_id);
    for (key, default) in [
        ("execute", json!({"enable_multi_execute": true})),
        ("preload", json!({"tools": []})),
        ("search", json!({"enable": true})),
        ("instant", json!(false)),
    ] {
        if config.get(key).is_none() {
            config[key] = default;
        }
    }
    json!({
        "session_id": session.id,
        "mcp": {"type": "http", "url": format!("{}/tool_router/{}/mcp", ctx.origin, session.id)},
        "tool_router_tools": ROUTER_TOOLS,
        "config": config,
        "config_version": session.version,
        "warnings": [],
    })
}

/// Whether the session lets tools of `toolkit` run (the `composio` meta toolkit always).
fn toolkit_enabled(session: &SessionRec, toolkit: &str) -> bool {
    if toolkit == "composio" {
        return true;
    }
    let list = |key: &str| {
        session.config["toolkits"][key].as_array().map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .any(|t| t.eq_ignore_ascii_case(toolkit))
        })
    };
    match (list("enabled"), list("disabled")) {
        (Some(found), _) => found,
        (None, Some(found)) => !found,
        (None, None) => true,
    }
}

fn not_enabled(ctx: &Ctx, session: &SessionRec, toolkit: &str) -> Reply {
    ctx.error(
        400,
        1813,
        "ToolRouter_ToolkitNotEnabled",
        &format!("Toolkit {toolkit} is not enabled in session {}", session.id),
        "Enable the toolkit in the session configuration.",
    )
}

/// The account a session call runs with: `account` (id or alias) if given, else the pinned
/// one, else the user's newest usable one.
fn session_account(
    ctx: &Ctx,
    s: &Store,
    session: &SessionRec,
    toolkit: &str,
    no_auth: bool,
    account: Option<&str>,
) -> Result<Option<Account>, Reply> {
    let user = session.user_id.as_str();
    let named = account.map(|want| {
        s.all_accounts()
            .into_iter()
            .find(|a| a.id == want)
            .or_else(|| {
                s.all_accounts().into_iter().find(|a| {
                    a.user_id == user
                        && s.account_rec(&a.id).and_then(|r| r.alias.as_deref()) == Some(want)
                })
            })
            .ok_or_else(|| answers::account_not_found(ctx, want))
    });
    let pinned = session.config["connected_accounts"][toolkit]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .and_then(|id| s.account(id).cloned());
    let chosen = match (named, pinned) {
        (Some(named), _) => Some(named?),
        (None, Some(p)) => Some(p),
        (None, None) if no_auth => None,
        (None, None) => Some(s.usable_account(user, toolkit).cloned().ok_or_else(|| {
            ctx.no_account(&format!(
                "No connected account found for user {user} and toolkit {toolkit}"
            ))
        })?),
    };
    if let Some(a) = &chosen {
        if a.user_id != user {
            return Err(ctx.wrong_owner(&a.id, user));
        }
        if !a.toolkit.eq_ignore_ascii_case(toolkit) && !no_auth {
            return Err(ctx.wrong_toolkit(&a.id, &a.toolkit, toolkit));
        }
        if !a.is_usable() && !no_auth {
            return Err(ctx.no_account(&exec::unusable_message(a)));
        }
    }
    Ok(chosen)
}

fn execute(ctx: &Ctx, s: &mut Store, session: &SessionRec, meta: bool) -> Outcome {
    let body = ctx.json()?;
    let slug = field(&body, if meta { "slug" } else { "tool_slug" })
        .or_else(|| field(&body, "tool_slug"))
        .ok_or_else(|| ctx.validation("tool_slug is required"))?;
    let arguments = body.get("arguments").cloned().unwrap_or_else(|| json!({}));
    run_tool(ctx, s, session, slug, &arguments, field(&body, "account")).map(Reply::ok)
}

/// Runs one tool in `session` as its user: the session execute (REST) and the session's hosted
/// MCP endpoint (`tools/call`) both come here. Answers the execute response body.
pub(crate) fn run_tool(
    ctx: &Ctx,
    s: &mut Store,
    session: &SessionRec,
    slug: &str,
    arguments: &Value,
    account: Option<&str>,
) -> Result<Value, Reply> {
    let tool = s
        .tool(slug)
        .cloned()
        .ok_or_else(|| answers::tool_not_found(ctx, slug))?;
    if !toolkit_enabled(session, &tool.toolkit) {
        return Err(not_enabled(ctx, session, &tool.toolkit));
    }
    let who = Who {
        user: Some(session.user_id.as_str()),
        account: None,
        custom_auth: false,
    };
    let data = if tool.slug == "COMPOSIO_MULTI_EXECUTE_TOOL" {
        multi_execute(ctx, s, session, arguments)
    } else if tool.slug == exec::PROXY_TOOL {
        session_proxy_tool(ctx, s, session, who, arguments)?
    } else {
        let account = session_account(ctx, s, session, &tool.toolkit, tool.no_auth, account)?;
        if let Some(a) = account
            .as_ref()
            .filter(|a| s.revoked_at_provider.contains(&a.id))
        {
            let log_id = s.new_id("log");
            return Ok(exec::provider_unauthorized(&tool, a, log_id));
        }
        let mut d = exec::result_data(ctx, &tool, who, account.as_ref(), arguments, TOOL_VERSION);
        d["session_id"] = json!(session.id);
        d
    };
    Ok(json!({
        "data": data,
        "error": null,
        "log_id": s.new_id("log"),
        "result_type": "completed",
    }))
}

/// The tools a session's MCP endpoint lists: the meta tools, then the preloaded ones
/// (`config.preload.tools`) the session enables.
pub(crate) fn mcp_tools(s: &Store, session: &SessionRec) -> Vec<Tool> {
    let mut out: Vec<Tool> = ROUTER_TOOLS
        .iter()
        .map(|slug| {
            s.tool(slug)
                .cloned()
                .unwrap_or_else(|| Tool::new(slug, "composio", true))
        })
        .collect();
    let preload = session.config["preload"]["tools"].as_array();
    for slug in preload.into_iter().flatten().filter_map(Value::as_str) {
        if let Some(t) = s.tool(slug) {
            if toolkit_enabled(session, &t.toolkit) && !out.iter().any(|o| o.slug == t.slug) {
                out.push(t.clone());
            }
        }
    }
    out
}

/// `COMPOSIO_MULTI_EXECUTE_TOOL` in a session: each inner tool is checked against the
/// session's toolkits and the user's accounts; failures are per tool.
fn multi_execute(ctx: &Ctx, s: &Store, session: &SessionRec, arguments: &Value) -> Value {
    let inner = arguments
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let results: Vec<Value> = inner
        .iter()
        .map(|t| {
            let slug = t
                .get("tool_slug")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let args = t.get("arguments").cloned().unwrap_or_else(|| json!({}));
            let outcome = s
                .tool(slug)
                .cloned()
                .ok_or_else(|| format!("Tool {slug} not found"))
                .and_then(|tool| {
                    if !toolkit_enabled(session, &tool.toolkit) {
                        return Err(format!(
                            "Toolkit {} is not enabled in this session",
                            tool.toolkit
                        ));
                    }
                    if tool.slug == exec::PROXY_TOOL {
                        let who = Who {
                            user: Some(session.user_id.as_str()),
                            account: t.get("account").and_then(Value::as_str),
                            custom_auth: false,
                        };
                        return session_proxy_tool(ctx, s, session, who, &args)
                            .map_err(|r| r.message().unwrap_or_default());
                    }
                    let account = session_account(
                        ctx,
                        s,
                        session,
                        &tool.toolkit,
                        tool.no_auth,
                        t.get("account").and_then(Value::as_str),
                    )
                    .map_err(|r| r.message().unwrap_or_default())?;
                    let who = Who {
                        user: Some(session.user_id.as_str()),
                        account: None,
                        custom_auth: false,
                    };
                    Ok(exec::result_data(
                        ctx,
                        &tool,
                        who,
                        account.as_ref(),
                        &args,
                        TOOL_VERSION,
                    ))
                });
            match outcome {
                Ok(data) => {
                    json!({"tool_slug": slug, "successful": true, "error": null, "data": data})
                }
                Err(e) => json!({"tool_slug": slug, "successful": false, "error": e, "data": {}}),
            }
        })
        .collect();
    json!({
        "sandbox": true,
        "tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL",
        "session_id": session.id,
        "user_id": session.user_id,
        "results": results,
    })
}

/// `COMPOSIO_PROXY_EXECUTE` in a session: its toolkit must be enabled in the session too.
fn session_proxy_tool(
    ctx: &Ctx,
    s: &Store,
    session: &SessionRec,
    who: Who<'_>,
    arguments: &Value,
) -> Result<Value, Reply> {
    if let Some(tk) = field(arguments, "toolkit_slug").or_else(|| field(arguments, "toolkit")) {
        if !toolkit_enabled(session, &tk.to_ascii_lowercase()) {
            return Err(not_enabled(ctx, session, &tk.to_ascii_lowercase()));
        }
    }
    let mut d = exec::proxy_tool(ctx, s, who, arguments)?;
    d["session_id"] = json!(session.id);
    Ok(d)
}

fn proxy_execute(ctx: &Ctx, s: &Store, session: &SessionRec) -> Outcome {
    let body = ctx.json()?;
    let toolkit = field(&body, "toolkit_slug")
        .ok_or_else(|| ctx.validation("toolkit_slug is required"))?
        .to_ascii_lowercase();
    let (Some(endpoint), Some(method)) = (field(&body, "endpoint"), field(&body, "method")) else {
        return Err(ctx.validation("endpoint and method are required"));
    };
    if !toolkit_enabled(session, &toolkit) {
        return Err(not_enabled(ctx, session, &toolkit));
    }
    let account = session_account(ctx, s, session, &toolkit, false, field(&body, "account"))?;
    let base = s
        .toolkits
        .get(&toolkit)
        .map(|t| t.base_url.clone())
        .unwrap_or_default();
    Ok(Reply::ok(json!({
        "data": {
            "sandbox": true,
            "session_id": session.id,
            "endpoint": endpoint,
            "method": method,
            "url": format!("{base}{endpoint}"),
            "toolkit": toolkit,
            "user_id": session.user_id,
            "connected_account_id": account.map(|a| a.id),
        },
        "status": 200,
        "headers": {"content-type": "application/json"},
        "binary_data": null,
        "result_type": "completed",
    })))
}

fn link(ctx: &Ctx, s: &mut Store, session: &SessionRec) -> Outcome {
    let body = ctx.json()?;
    let toolkit = field(&body, "toolkit")
        .ok_or_else(|| ctx.validation("toolkit is required"))?
        .to_ascii_lowercase();
    if !s.toolkits.contains_key(&toolkit) {
        return Err(ctx.not_found("Toolkit_NotFound", &format!("Toolkit {toolkit} not found")));
    }
    let ac = match session.config["auth_configs"][toolkit.as_str()].as_str() {
        Some(ac) if s.auth_configs.contains_key(ac) => ac.to_owned(),
        _ => s.default_auth_config(&toolkit),
    };
    let id = s
        .create_account(&session.user_id, &ac, "INITIATED")
        .ok_or_else(|| ctx.validation("auth config vanished"))?;
    Ok(Reply::ok(answers::link_reply(s, &id)))
}

fn search(ctx: &Ctx, s: &Store, session: &SessionRec) -> Outcome {
    let body = ctx.json()?;
    let queries: Vec<String> = body
        .get("queries")
        .and_then(Value::as_array)
        .map(|q| {
            q.iter()
                .filter_map(|q| {
                    q.get("use_case")
                        .and_then(Value::as_str)
                        .or_else(|| q.as_str())
                })
                .map(str::to_owned)
                .collect()
        })
        .or_else(|| field(&body, "use_case").map(|u| vec![u.to_owned()]))
        .unwrap_or_default();
    let candidates: Vec<_> = s
        .tools
        .values()
        .filter(|t| t.toolkit != "composio" && toolkit_enabled(session, &t.toolkit))
        .collect();
    let mut schemas = Map::new();
    let mut toolkits_seen: Vec<String> = Vec::new();
    let results: Vec<Value> = (1..)
        .zip(&queries)
        .map(|(i, q)| {
            let words: Vec<String> = q
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() >= 3)
                .map(str::to_ascii_uppercase)
                .collect();
            let hits: Vec<_> = candidates
                .iter()
                .filter(|t| words.iter().any(|w| t.slug.contains(w.as_str())))
                .collect();
            for t in &hits {
                schemas.insert(
                    t.slug.clone(),
                    shapes::patched(
                        json!({"tool_slug": t.slug, "toolkit": t.toolkit, "description": shapes::tool_description(t), "input_schema": shapes::input_parameters(&t.slug)}),
                        s.definition_patches.get(&t.slug),
                        shapes::Shape::Search,
                    ),
                );
                if !toolkits_seen.contains(&t.toolkit) {
                    toolkits_seen.push(t.toolkit.clone());
                }
            }
            json!({
                "index": i,
                "use_case": q,
                "primary_tool_slugs": hits.iter().map(|t| t.slug.clone()).collect::<Vec<_>>(),
                "related_tool_slugs": [],
                "toolkits": hits.iter().map(|t| t.toolkit.clone()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let statuses: Vec<Value> = toolkits_seen
        .iter()
        .map(|tk| {
            let active = s.usable_account(&session.user_id, tk).is_some();
            json!({
                "toolkit": tk,
                "description": format!("{tk} (sandbox)"),
                "has_active_connection": active,
                "status_message": if active { "Active connection found" } else { "No active connection" },
            })
        })
        .collect();
    Ok(Reply::ok(json!({
        "success": true,
        "error": null,
        "results": results,
        "tool_schemas": schemas,
        "toolkit_connection_statuses": statuses,
        "next_steps_guidance": [],
        "session": {"id": session.id, "generate_id": false, "instructions": ""},
        "time_info": {
            "current_time_utc": now_rfc3339(),
            "current_time_utc_epoch_seconds": now_secs(),
            "message": "sandbox time",
        },
    })))
}

fn tools(ctx: &Ctx, s: &Store, session: &SessionRec) -> Outcome {
    let items: Vec<_> = s
        .tools
        .values()
        .filter(|t| toolkit_enabled(session, &t.toolkit))
        .collect();
    let page = paginate_vec(ctx, items)?;
    Ok(list_reply(page, |t| {
        shapes::patched(
            shapes::tool_v3(t, s.toolkits.get(&t.toolkit), TOOL_VERSION),
            s.definition_patches.get(&t.slug),
            shapes::Shape::V3,
        )
    }))
}

fn toolkits(ctx: &Ctx, s: &Store, session: &SessionRec) -> Outcome {
    let wanted = ctx.q_list(&["toolkits"]);
    let connected = ctx.q_bool("is_connected");
    let items: Vec<Value> = s
        .toolkits
        .values()
        .filter(|t| t.slug != "composio" && toolkit_enabled(session, &t.slug))
        .filter(|t| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x.eq_ignore_ascii_case(&t.slug))))
        .filter_map(|t| {
            let account = s.usable_account(&session.user_id, &t.slug);
            if connected.is_some_and(|c| c != account.is_some()) {
                return None;
            }
            let schemes: Vec<&str> = t.auth_scheme.as_deref().into_iter().collect();
            Some(json!({
                "slug": t.slug,
                "name": t.name,
                "enabled": true,
                "is_no_auth": t.auth_scheme.is_none(),
                "composio_managed_auth_schemes": schemes,
                "meta": {"description": t.description, "logo": format!("https://logos.composio.dev/api/{}", t.slug)},
                "connected_account": account.map(|a| json!({
                    "id": a.id,
                    "status": a.status,
                    "user_id": a.user_id,
                    "created_at": a.created_at,
                    "auth_config": {"id": a.auth_config_id, "auth_scheme": schemes.first().copied().unwrap_or("NO_AUTH"), "is_composio_managed": true},
                })),
            }))
        })
        .collect();
    let page = paginate_vec(ctx, items)?;
    Ok(list_reply(page, |v| v))
}
