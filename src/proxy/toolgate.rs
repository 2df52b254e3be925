//! The tool policy ([`crate::toolpolicy`]) applied to what is not an invocation: a session's
//! toolkit allow-list and catalogue listings, with the one tool-visibility rule
//! ([`tool_visible`]) of every listing (REST tool listings and MCP `tools/list`). Executions,
//! whatever carries them, are decided by [`crate::invocation::decide`].

use http::Response;
use hyper::body::Incoming;
use serde_json::Value;

use super::{Ctx, Shared};
use crate::audit::Audit;
use crate::body::ResponseBody;
use crate::error::Error;
use crate::rewrite::{folded_eq, JsonObject, Raw};
use crate::toollock::{ToolLock, View};
use crate::toolpolicy::{self, Decision, Permitted, ToolPolicy};

/// The toolkit of Composio's own tools.
const META_TOOLKIT: &str = "composio";

/// The one tool-visibility rule of every listing (REST tool listings, MCP `tools/list`): a
/// caller is offered `slug` of `toolkit` only when the policy would let it run the tool, so a
/// model is never offered a tool it cannot call. Composio's own tools (code-running and
/// dispatching meta tools) are of toolkit `composio` whatever the listing says, as the
/// decision has them.
pub(crate) fn tool_visible(
    policy: &ToolPolicy,
    claims: &serde_json::Map<String, Value>,
    toolkit: &str,
    slug: &str,
) -> bool {
    let own = toolpolicy::is_code_tool(slug) || toolpolicy::is_meta_tool(slug);
    let toolkit = if own { META_TOOLKIT } else { toolkit };
    policy.decide(claims, toolkit, slug).allowed
}

/// [`tool_visible`] for a listing that does not say the toolkit (MCP `tools/list`): the
/// toolkit is Composio's, looked up only when the policy could refuse the tool; a tool whose
/// toolkit cannot be learnt is hidden (fail closed).
pub(crate) async fn tool_visible_unlisted(
    shared: &Shared,
    claims: &serde_json::Map<String, Value>,
    slug: &str,
) -> bool {
    let policy = &shared.tool_policy;
    if toolpolicy::is_code_tool(slug) || toolpolicy::is_meta_tool(slug) {
        return tool_visible(policy, claims, META_TOOLKIT, slug);
    }
    if !policy.restricts(claims) {
        return true;
    }
    match shared.connections.tool(slug).await {
        Ok(info) => tool_visible(policy, claims, &info.toolkit, slug),
        Err(_) => false,
    }
}

/// The tool lock's verdict on one definition a listing carries ([`crate::toollock`]): `true`
/// to offer it. Every listing carrier (REST v3 and v2, session tool lists and searches, MCP
/// `tools/list`) asks here, beside [`tool_visible`]. A view that does not say its toolkit and
/// whose tool is not locked gets Composio's (cached), so a tool of a locked toolkit that the
/// lock does not have is caught on MCP too.
pub(crate) async fn definition_passes(shared: &Shared, mut view: View) -> bool {
    let Some(lock) = shared.tool_lock.as_deref() else {
        return true;
    };
    if view.toolkit.is_none() && lock.toolkit_of(&view.slug).is_none() {
        view.toolkit =
            if toolpolicy::is_code_tool(&view.slug) || toolpolicy::is_meta_tool(&view.slug) {
                Some(META_TOOLKIT.to_owned())
            } else {
                shared
                    .connections
                    .tool(&view.slug)
                    .await
                    .ok()
                    .map(|i| i.toolkit)
            };
    }
    lock.observe(&view)
}

/// [`definition_passes`] for a view that says its toolkit (REST listings): no lookup.
fn listed_passes(lock: Option<&ToolLock>, view: Option<View>) -> bool {
    match (lock, view) {
        (Some(lock), Some(view)) => lock.observe(&view),
        _ => true,
    }
}

fn record(ctx: &Ctx<'_>, d: Decision, what: &str, audit: &mut Audit) -> Result<(), Error> {
    let policy = &ctx.shared.tool_policy;
    audit.rule(policy.label(d.by));
    if d.allowed {
        Ok(())
    } else {
        tracing::info!(subject = %ctx.subject(), tool = what, rule = %policy.label(d.by),
            "tool policy refused");
        Err(policy.refusal(what, d))
    }
}

/// A tool router session's `toolkits` (creation or update): what the caller asked for,
/// intersected with what the policy permits, so that Composio enforces the policy inside the
/// session too. Left alone when the policy permits every toolkit.
pub(crate) async fn session_toolkits(
    ctx: &Ctx<'_>,
    obj: &mut JsonObject,
    creating: bool,
    audit: &mut Audit,
) -> Result<(), Error> {
    let policy = &ctx.shared.tool_policy;
    let claims = &ctx.identity.claims;
    let (permitted, by) = policy.permitted(claims);
    if matches!(&permitted, Permitted::AllExcept(e) if e.is_empty()) {
        return Ok(());
    }
    let asked = match obj.iter().find(|(k, _)| *k == "toolkits") {
        Some((_, raw)) => Asked::parse(raw)?,
        None => Asked::Nothing,
    };
    // On an update that does not touch the toolkits, the session keeps the ones it was
    // created with (already restricted).
    if !creating && matches!(asked, Asked::Nothing) {
        return Ok(());
    }
    let value = match (asked, permitted) {
        (Asked::Enable(list), _) if !list.is_empty() => {
            let mut kept = Vec::new();
            let mut refused = None;
            for t in list {
                let d = policy.decide_toolkit(claims, &t);
                if d.allowed {
                    kept.push(t);
                } else {
                    refused.get_or_insert((t, d));
                }
            }
            if kept.is_empty() {
                if let Some((t, d)) = refused {
                    return record(ctx, d, &t, audit);
                }
            }
            serde_json::json!({ "enable": kept })
        }
        (Asked::Disable(mut off), Permitted::AllExcept(except)) => {
            for t in except {
                if !off.contains(&t) {
                    off.push(t);
                }
            }
            serde_json::json!({ "disable": off })
        }
        (Asked::Nothing | Asked::Enable(_), Permitted::AllExcept(except)) => {
            serde_json::json!({ "disable": except })
        }
        (
            asked,
            Permitted::Only {
                toolkits,
                tools,
                except,
            },
        ) => {
            let mut on = toolkits;
            for tool in tools {
                if let Ok(info) = ctx.shared.connections.tool(&tool).await {
                    if !on.contains(&info.toolkit) && !except.contains(&info.toolkit) {
                        on.push(info.toolkit);
                    }
                }
            }
            if let Asked::Disable(off) = &asked {
                on.retain(|t| !off.iter().any(|o| o.eq_ignore_ascii_case(t)));
            }
            if on.is_empty() {
                let d = Decision { allowed: false, by };
                return record(ctx, d, "toolkits", audit);
            }
            serde_json::json!({ "enable": on })
        }
    };
    audit.rule(policy.label(by));
    let raw = serde_json::value::to_raw_value(&value).map_err(|_| Error::Internal)?;
    obj.set_raw("toolkits", raw);
    Ok(())
}

/// A session body's `toolkits`, as the SDKs send it.
enum Asked {
    Nothing,
    Enable(Vec<String>),
    Disable(Vec<String>),
}

impl Asked {
    fn parse(raw: Raw<'_>) -> Result<Self, Error> {
        let invalid = || {
            Error::BodyInvalid(
                "`toolkits` must be a list or {\"enable\"|\"disable\": [...]}".into(),
            )
        };
        let v: Value = serde_json::from_str(raw.get()).map_err(|_| invalid())?;
        let list = |v: &Value| -> Result<Vec<String>, Error> {
            let Value::Array(a) = v else {
                return Err(invalid());
            };
            a.iter()
                .map(|t| t.as_str().map(str::to_ascii_lowercase).ok_or_else(invalid))
                .collect()
        };
        match &v {
            Value::Null => Ok(Self::Nothing),
            Value::Array(_) => Ok(Self::Enable(list(&v)?)),
            Value::Object(m) if m.len() == 1 => {
                if let Some(e) = m.get("enable").or_else(|| m.get("enabled")) {
                    Ok(Self::Enable(list(e)?))
                } else if let Some(d) = m.get("disable").or_else(|| m.get("disabled")) {
                    Ok(Self::Disable(list(d)?))
                } else {
                    Err(invalid())
                }
            }
            _ => Err(invalid()),
        }
    }
}

/// Catalogue listings: what the caller may not run is left out, so a model is never offered
/// a tool it cannot call. Other neutral routes are relayed unchanged.
pub(super) async fn relay_listing(
    ctx: &Ctx<'_>,
    resp: Response<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let policy = &ctx.shared.tool_policy;
    let claims = &*ctx.identity.claims;
    let restricts = policy.restricts(claims);
    let keep_tool = |toolkit: &str, slug: &str| tool_visible(policy, claims, toolkit, slug);
    let lock = ctx.shared.tool_lock.as_deref();
    match ctx.matched.route.pattern {
        // Tool listings always: the code-running meta tools are refused by default; a
        // definition that is not the locked one is left out.
        "/api/{v3}/tools" | "/api/v2/actions" => {
            let v2 = ctx.matched.route.pattern == "/api/v2/actions";
            let (slug_key, toolkit_of): (&str, fn(&Value) -> Option<&str>) = if v2 {
                ("name", |i| i["appName"].as_str())
            } else {
                ("slug", |i| i["toolkit"]["slug"].as_str())
            };
            ctx.relay_filtered(resp, |v| {
                retain_items(v, |item| match item[slug_key].as_str() {
                    Some(slug) => {
                        keep_tool(toolkit_of(item).unwrap_or_default(), slug)
                            && listed_passes(lock, view_of(item, v2, "rest"))
                    }
                    None => true,
                });
                0
            })
            .await
        }
        // One definition: refused as a whole when it is not the locked one (the SDKs read it
        // right before every execution).
        "/api/{v3}/tools/{tool_slug}" | "/api/v2/actions/{action}" if lock.is_some() => {
            let v2 = ctx.matched.route.pattern == "/api/v2/actions/{action}";
            relay_definition(ctx, resp, v2).await
        }
        "/api/{v3}/tools/enum" => {
            ctx.relay_filtered(resp, |v| {
                if let Value::Array(a) = v {
                    a.retain(|s| s.as_str().is_none_or(|s| !toolpolicy::is_code_tool(s)));
                }
                0
            })
            .await
        }
        "/api/{v3}/toolkits" | "/api/v1/apps" if restricts => {
            let key = if ctx.matched.route.pattern == "/api/v1/apps" {
                "key"
            } else {
                "slug"
            };
            ctx.relay_filtered(resp, |v| {
                retain_items(v, |item| {
                    item[key]
                        .as_str()
                        .is_none_or(|tk| policy.decide_toolkit(claims, tk).allowed)
                });
                0
            })
            .await
        }
        // An MCP server's configuration carries its hosted URL and setup commands.
        "/api/{v3}/mcp/{id}" => ctx.relay_mcp_urls(resp).await,
        _ => ctx.relay(resp),
    }
}

/// A v3 tool listing (`GET /tools`, `/tools/{slug}`) under a tool lock lists the locked
/// toolkits at their locked versions (`toolkit_versions[tk]=version`, the caller's own
/// `toolkit_versions` and `version` replaced), so that a model is shown the definitions of the
/// version that runs.
pub(super) fn pin_listing_versions(ctx: &Ctx<'_>, query: Option<String>) -> Option<String> {
    let Some(lock) = ctx.shared.tool_lock.as_deref() else {
        return query;
    };
    if !matches!(
        ctx.matched.route.pattern,
        "/api/{v3}/tools" | "/api/{v3}/tools/{tool_slug}"
    ) || lock.versions().next().is_none()
    {
        return query;
    }
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or_default().as_bytes()) {
        if k == "version" || k.starts_with("toolkit_versions") {
            continue;
        }
        out.append_pair(&k, &v);
    }
    for (tk, version) in lock.versions() {
        out.append_pair(&format!("toolkit_versions[{tk}]"), version);
    }
    Some(out.finish())
}

fn view_of(item: &Value, v2: bool, carrier: &'static str) -> Option<View> {
    if v2 {
        View::v2(item)
    } else {
        View::v3(item, carrier)
    }
}

/// Relays one tool definition (`GET /tools/{slug}`, `/actions/{action}`), refused with
/// [`Error::ToolDefinitionChanged`] when the lock does not let it pass.
async fn relay_definition(
    ctx: &Ctx<'_>,
    resp: Response<Incoming>,
    v2: bool,
) -> Result<Response<ResponseBody>, Error> {
    let Some(lock) = ctx.shared.tool_lock.as_deref() else {
        return ctx.relay(resp);
    };
    let mut refused = None;
    let out = ctx
        .relay_filtered(resp, |v| {
            if let Some(view) = view_of(v, v2, "rest") {
                if !lock.observe(&view) {
                    refused = Some(lock.refusal_for(&view.slug));
                }
            }
            0
        })
        .await?;
    match refused {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A session's tool list (`GET .../session/{id}/tools`, v3 tools) or search answer
/// (`POST .../session/{id}/search`: `tool_schemas` by slug, slugs in `results`): the tools
/// whose definition the lock does not let pass are left out.
pub(crate) async fn relay_session_listing(
    ctx: &Ctx<'_>,
    resp: Response<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    let Some(lock) = ctx.shared.tool_lock.as_deref() else {
        return ctx.relay(resp);
    };
    ctx.relay_filtered(resp, |v| {
        retain_items(v, |item| {
            listed_passes(Some(lock), View::v3(item, "session"))
        });
        let mut dropped: Vec<String> = Vec::new();
        if let Some(Value::Object(schemas)) = v.get_mut("tool_schemas") {
            schemas.retain(|slug, item| {
                let mut view = View::session_search(item);
                if let Some(view) = &mut view {
                    view.slug.clone_from(slug);
                }
                let ok = listed_passes(Some(lock), view);
                if !ok {
                    dropped.push(slug.clone());
                }
                ok
            });
        }
        if !dropped.is_empty() {
            if let Some(Value::Array(results)) = v.get_mut("results") {
                for r in results {
                    for key in ["primary_tool_slugs", "related_tool_slugs"] {
                        if let Some(Value::Array(slugs)) = r.get_mut(key) {
                            slugs.retain(|s| {
                                s.as_str().is_none_or(|s| !dropped.iter().any(|d| d == s))
                            });
                        }
                    }
                }
            }
        }
        0
    })
    .await
}

/// A session created through the gateway (and a trigger subscribed through it) runs every
/// locked toolkit at its locked version:
/// `toolkit_versions` gets each locked toolkit's version (the caller's entries for other
/// toolkits are kept; a caller's other concrete version of a locked toolkit is refused or
/// rewritten per `[tools_lock] on_version_mismatch`). Executions in the session, MCP
/// included, run at the versions the session was created with.
pub(super) fn pin_toolkit_versions(ctx: &Ctx<'_>, obj: &mut JsonObject) -> Result<(), Error> {
    let Some(lock) = ctx.shared.tool_lock.as_deref() else {
        return Ok(());
    };
    let mut versions = serde_json::Map::new();
    let mut global: Option<String> = None;
    for (k, raw) in obj.iter() {
        if !folded_eq(k, "toolkitversions") {
            continue;
        }
        let invalid = || Error::BodyInvalid(format!("`{k}` must be a version or a map of them"));
        match serde_json::from_str::<Value>(raw.get()).map_err(|_| invalid())? {
            Value::Null => {}
            Value::String(s) => global = Some(s),
            Value::Object(m) => {
                for (tk, v) in m {
                    let Value::String(v) = v else {
                        return Err(invalid());
                    };
                    versions.insert(tk.to_ascii_lowercase(), Value::String(v));
                }
            }
            _ => return Err(invalid()),
        }
    }
    for (tk, _) in lock.versions() {
        let asked = versions
            .get(tk)
            .and_then(Value::as_str)
            .or(global.as_deref())
            .map(str::to_owned);
        if let Some(v) = lock.pin(tk, tk, asked.as_deref())? {
            versions.insert(tk.to_owned(), Value::String(v));
        }
    }
    if versions.is_empty() {
        return Ok(());
    }
    let raw =
        serde_json::value::to_raw_value(&Value::Object(versions)).map_err(|_| Error::Internal)?;
    obj.replace_folded("toolkitversions", "toolkit_versions", raw);
    Ok(())
}

/// Keeps the items of `{"items": [...]}` (or of a bare array) for which `keep` holds.
fn retain_items(v: &mut Value, keep: impl Fn(&Value) -> bool) {
    let items = match v {
        Value::Array(a) => a,
        Value::Object(m) => match m.get_mut("items") {
            Some(Value::Array(a)) => a,
            _ => return,
        },
        _ => return,
    };
    items.retain(|i| keep(i));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> ToolPolicy {
        let cfg: crate::config::PolicyConfig = toml::from_str(toml).expect("policy");
        ToolPolicy::compile(&cfg).expect("compiles").0
    }

    /// REST listings and MCP `tools/list` share one rule: what the decision would refuse is
    /// not offered, and Composio's own tools are judged as Composio's whatever the listing
    /// says their toolkit is.
    #[test]
    fn a_listing_offers_exactly_what_the_decision_allows() {
        let p = policy("[[rules]]\nname = \"no notion\"\ndeny_toolkits = [\"notion\"]\n");
        let claims = serde_json::Map::new();
        assert!(tool_visible(&p, &claims, "gmail", "GMAIL_SEND_EMAIL"));
        assert!(!tool_visible(&p, &claims, "notion", "NOTION_CREATE_PAGE"));
        // A listing that files a meta tool under a denied toolkit does not hide it: the
        // decision runs it as Composio's (MCP has always judged it so; REST listings did not).
        assert!(tool_visible(
            &p,
            &claims,
            "notion",
            "COMPOSIO_MULTI_EXECUTE_TOOL"
        ));
        for listed in ["composio", "", "gmail"] {
            assert!(
                !tool_visible(&p, &claims, listed, "COMPOSIO_REMOTE_WORKBENCH"),
                "{listed}"
            );
            assert_eq!(
                tool_visible(&p, &claims, listed, "COMPOSIO_MULTI_EXECUTE_TOOL"),
                p.decide(&claims, META_TOOLKIT, "COMPOSIO_MULTI_EXECUTE_TOOL")
                    .allowed,
                "{listed}"
            );
        }
    }
}
