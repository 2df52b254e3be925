//! Connected accounts, triggers and MCP URL generation: user-scoped objects other than tool
//! executions.
//!
//! Every rule here decides ownership by what Composio lists for the subject (through the
//! cached lookups of [`crate::connections::Connections`], or a trigger listing filtered by
//! `user_ids=<subject>`), never by what one replica remembers:
//! - listings have their user filter forced to the subject alone, and their answers filtered
//!   again (items of other users are dropped);
//! - objects addressed by path must be the subject's, else 404 (ids cannot be probed);
//! - bodies have every spelling of the user id removed and the route's one spelling set to the
//!   subject; every connected-account id they name must be the subject's;
//! - shared-account options (`experimental`, `account_type`) are refused unless the policy
//!   allows shared accounts.

use std::collections::BTreeMap;

use http::{Method, Response, StatusCode};
use serde_json::value::RawValue;
use serde_json::Value;

use super::Ctx;
use crate::audit::Audit;
use crate::body::{RequestBody, ResponseBody};
use crate::constraints::Carrier;
use crate::error::Error;
use crate::invocation;
use crate::rewrite::{self, folded_eq, is_identity_key, query_base_key as base_key, JsonObject};
use crate::routes::Api;
use crate::upstream::TimeoutClass;

/// Folded names of query parameters that list connected-account ids (trigger listing).
const QUERY_ACCOUNT_KEYS: &[&str] = &["connectedaccountids", "deprecatedconnectedaccountuuids"];

/// `GET /api/{v3}/connected_accounts` and `GET /api/v1/connectedAccounts`: the user filter is
/// the subject alone, whatever was sent (without one Composio lists every user's accounts).
pub(super) async fn list(
    ctx: &Ctx<'_>,
    api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    refuse_shared_query(ctx)?;
    let (canonical, owner_fields): (&str, &[&str]) = match api {
        Api::V3 => ("user_ids", &["user_id"]),
        Api::Legacy => ("user_uuid", &["clientUniqueUserId", "entityId"]),
    };
    let query = scoped_query(ctx, Some(canonical), audit)?;
    let resp = ctx
        .forward(query.as_deref(), None, TimeoutClass::Default, audit)
        .await?;
    ctx.relay_filtered(resp, |v| drop_foreign(v, owner_fields, ctx.subject()))
        .await
}

/// One connected account addressed by path (param 0): only if Composio lists it for the
/// subject. Bodies lose every user id; a successful change forgets the cached status.
pub(super) async fn owned(
    ctx: &Ctx<'_>,
    body: RequestBody,
    _api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let id = ctx.matched.param(0).ok_or(Error::Internal)?;
    audit.account(id);
    let account = ctx
        .shared
        .connections
        .owned_account(&ctx.identity.subject, id)
        .await?
        .ok_or(Error::NotFound)?;
    audit.toolkit(&account.toolkit);
    let query = scoped_query(ctx, None, audit)?;
    let method = &ctx.parts.method;
    let body = if *method == Method::POST || *method == Method::PATCH {
        let mut obj = ctx.json_body(body, true).await?;
        refuse_experimental(ctx, &obj)?;
        refuse_other_account(&obj, id)?;
        let mut mismatch = obj.strip_identity(ctx.subject());
        mismatch |= scope_connection(ctx, &mut obj, false)?;
        ctx.on_mismatch(mismatch, audit)?;
        Some(obj.to_vec())
    } else {
        None
    };
    let resp = ctx
        .forward(query.as_deref(), body, TimeoutClass::Default, audit)
        .await?;
    if *method != Method::GET && resp.status().is_success() {
        ctx.shared.connections.invalidate_subject(ctx.subject());
        ctx.shared.broken.clear_subject(ctx.subject());
    }
    ctx.relay(resp)
}

/// `POST /api/{v3}/connected_accounts[/link]` and `POST /api/v1/connectedAccounts`: the new
/// account is created for the subject.
pub(super) async fn create(
    ctx: &Ctx<'_>,
    body: RequestBody,
    api: Api,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let query = scoped_query(ctx, None, audit)?;
    let mut obj = ctx.json_body(body, false).await?;
    refuse_experimental(ctx, &obj)?;
    let subject = ctx.subject();
    let mismatch = match api {
        Api::Legacy => {
            let m = obj.pin_identity("userUuid", subject, false)?;
            obj.set_str("entityId", subject)?;
            m
        }
        Api::V3 if ctx.matched.route.pattern.ends_with("/link") => {
            obj.pin_identity("user_id", subject, false)?
        }
        Api::V3 => {
            // `{auth_config: {id}, connection: {user_id, ...}}`: the user lives in `connection`.
            let top = obj.iter().any(|(k, _)| is_identity_key(k));
            let m = top && obj.pin_identity("user_id", subject, false)?;
            scope_connection(ctx, &mut obj, true)? || m
        }
    };
    ctx.on_mismatch(mismatch, audit)?;
    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Default, audit)
        .await?;
    if resp.status().is_success() {
        ctx.shared.connections.invalidate_subject(subject);
        ctx.shared.broken.clear_subject(subject);
    }
    ctx.relay(resp)
}

/// `POST /api/{v3}/trigger_instances/{slug}/upsert`: user pinned; a subscription through the
/// subject's connection, so decided as an invocation ([`crate::invocation`]): the trigger type
/// counts as a tool of its toolkit (Composio's) for the policy, a named account must be the
/// subject's and of that toolkit, and the toolkit needs a usable connection.
pub(super) async fn trigger_upsert(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let slug = ctx.matched.param(0).ok_or(Error::Internal)?;
    let query = scoped_query(ctx, None, audit)?;
    let mut obj = ctx.json_body(body, true).await?;
    ctx.pin(&mut obj, "user_id", audit)?;
    // Every id named is the subject's (in any spelling), before asking which one is meant.
    require_owned(ctx, &obj.account_ids()?, audit).await?;
    let account = invocation::named_account(&obj)?;
    let x = ctx.extract(Carrier::Trigger);
    let invocations = [x.trigger(slug, account.as_deref(), || {
        invocation::trigger_config(&obj)
    })?];
    let verdict = ctx.decide(&invocations, audit).await?;
    // A trigger of a locked toolkit subscribes at the locked version, like an execution.
    if let (Some(lock), Some(tk)) = (ctx.shared.tool_lock.as_deref(), verdict.toolkits.first()) {
        if lock.locks_toolkit(tk) {
            super::toolgate::pin_toolkit_versions(ctx, &mut obj)?;
            let mut asked = None;
            for (k, v) in obj.iter() {
                if folded_eq(k, "version") {
                    asked = Some(
                        serde_json::from_str::<Option<String>>(v.get())
                            .map_err(|_| Error::BodyInvalid(format!("`{k}` must be a string")))?,
                    );
                }
            }
            if let Some(asked) = asked {
                if let Some(v) = lock.pin(slug, tk, asked.as_deref())? {
                    let raw = serde_json::value::to_raw_value(&v).map_err(|_| Error::Internal)?;
                    obj.replace_folded("version", "version", raw);
                }
            }
        }
    }
    ctx.pass(query.as_deref(), &obj, TimeoutClass::Default, audit)
        .await
}

/// `GET /api/{v3}/trigger_instances/active`: user filter forced, account filters owned.
pub(super) async fn list_triggers(
    ctx: &Ctx<'_>,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let raw = ctx.parts.uri.query().unwrap_or("");
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let base = base_key(&k);
        if QUERY_ACCOUNT_KEYS.iter().any(|f| folded_eq(base, f)) {
            for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !ids.iter().any(|x| x == id) {
                    ids.push(id.to_owned());
                }
            }
        }
    }
    require_owned(ctx, &ids, audit).await?;
    let query = scoped_query(ctx, Some("user_ids"), audit)?;
    let resp = ctx
        .forward(query.as_deref(), None, TimeoutClass::Default, audit)
        .await?;
    ctx.relay_filtered(resp, |v| drop_foreign(v, &["user_id"], ctx.subject()))
        .await
}

/// `PATCH|DELETE /api/{v3}/trigger_instances/manage/{id}`: only a trigger Composio lists for
/// the subject.
pub(super) async fn owned_trigger(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let id = ctx.matched.param(0).ok_or(Error::Internal)?;
    if !trigger_is_subjects(ctx, id).await? {
        return Err(Error::NotFound);
    }
    let query = scoped_query(ctx, None, audit)?;
    let body = if ctx.parts.method == Method::PATCH {
        let mut obj = ctx.json_body(body, true).await?;
        ctx.pin(&mut obj, "user_id", audit)?;
        Some(obj.to_vec())
    } else {
        None
    };
    let resp = ctx
        .forward(query.as_deref(), body, TimeoutClass::Default, audit)
        .await?;
    ctx.relay(resp)
}

/// Whether Composio lists trigger `id` among the subject's (disabled ones included, so that a
/// disabled trigger can be enabled again). Not cached: managing a trigger is rare.
async fn trigger_is_subjects(ctx: &Ctx<'_>, id: &str) -> Result<bool, Error> {
    let subject = ctx.subject();
    let url = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("user_ids", subject);
        q.append_pair("trigger_ids", id);
        q.append_pair("show_disabled", "true");
        format!("/api/v3.1/trigger_instances/active?{}", q.finish())
    };
    let (status, v) = ctx
        .shared
        .upstream
        .get_json(&url)
        .await
        .map_err(|_| Error::ConnectionStatusUnavailable)?;
    if status != StatusCode::OK {
        tracing::warn!(%status, "trigger ownership lookup answered an error");
        return Err(Error::ConnectionStatusUnavailable);
    }
    let items = v["items"]
        .as_array()
        .ok_or(Error::ConnectionStatusUnavailable)?;
    Ok(items.iter().any(|item| {
        item["id"].as_str() == Some(id)
            && item
                .get("user_id")
                .and_then(Value::as_str)
                .is_none_or(|u| u == subject)
    }))
}

/// `POST /api/{v3}/mcp/servers/generate`: `user_ids` is `[subject]`, accounts owned.
pub(super) async fn mcp_generate(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let query = scoped_query(ctx, None, audit)?;
    let mut obj = ctx.json_body(body, false).await?;
    let mismatch = obj.pin_identity("user_ids", ctx.subject(), true)?;
    ctx.on_mismatch(mismatch, audit)?;
    let mut ids = obj.account_ids()?;
    for (k, v) in obj.iter() {
        if !folded_eq(k, "connectedaccountids") {
            continue;
        }
        let list: Option<Vec<String>> = serde_json::from_str(v.get())
            .map_err(|_| Error::BodyInvalid(format!("`{k}` must be a list of strings")))?;
        for id in list.into_iter().flatten() {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    require_owned(ctx, &ids, audit).await?;
    let resp = ctx
        .forward_json(query.as_deref(), &obj, TimeoutClass::Default, audit)
        .await?;
    // `mcp_url`, `user_ids_url[]`, `connected_account_urls[]` move onto the gateway.
    ctx.relay_mcp_urls(resp).await
}

// --- shared by the handlers of this module and of sessions ---

/// Every account id must be one Composio lists for the subject.
pub(super) async fn require_owned(
    ctx: &Ctx<'_>,
    ids: &[String],
    audit: &mut Audit,
) -> Result<(), Error> {
    for id in ids {
        audit.account(id);
        let account = ctx
            .shared
            .connections
            .owned_account(&ctx.identity.subject, id)
            .await?
            .ok_or(Error::ConnectedAccountNotOwned)?;
        audit.toolkit(&account.toolkit);
    }
    Ok(())
}

/// The request's query through [`rewrite::scope_query`] (the one query-scoping function of
/// every route), with the identity-mismatch policy applied.
pub(super) fn scoped_query(
    ctx: &Ctx<'_>,
    canonical: Option<&str>,
    audit: &mut Audit,
) -> Result<Option<String>, Error> {
    let raw = ctx.parts.uri.query();
    let (query, mismatch) = rewrite::scope_query(raw, canonical, ctx.subject(), false)?;
    ctx.on_mismatch(mismatch, audit)?;
    Ok(query)
}

/// `account_type` other than `PRIVATE` asks for accounts shared by other users.
fn refuse_shared_query(ctx: &Ctx<'_>) -> Result<(), Error> {
    if ctx.shared.policy.allow_shared_accounts {
        return Ok(());
    }
    let raw = ctx.parts.uri.query().unwrap_or("");
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        if folded_eq(base_key(&k), "accounttype")
            && v.split(',')
                .any(|t| !t.trim().eq_ignore_ascii_case("PRIVATE"))
        {
            return Err(Error::SharedAccountsNotAllowed);
        }
    }
    Ok(())
}

/// `experimental` (account sharing options) at the top of a body, unless allowed.
pub(super) fn refuse_experimental(ctx: &Ctx<'_>, obj: &JsonObject) -> Result<(), Error> {
    if ctx.shared.policy.allow_shared_accounts {
        return Ok(());
    }
    if obj
        .iter()
        .any(|(k, v)| folded_eq(k, "experimental") && v.get() != "null")
    {
        return Err(Error::SharedAccountsNotAllowed);
    }
    Ok(())
}

/// A body on a route addressed to account `id` may name no other connected account (at the
/// top or inside `connection`): path and body must not disagree about which account is meant.
fn refuse_other_account(obj: &JsonObject, id: &str) -> Result<(), Error> {
    let mut named = obj.account_ids()?;
    if let Some((_, conn)) = obj.iter().find(|(k, _)| *k == "connection") {
        if let Ok(inner) = JsonObject::parse(conn.get().as_bytes()) {
            named.extend(inner.account_ids()?);
        }
    }
    if named.iter().any(|a| a != id) {
        return Err(Error::BodyInvalid(
            "the body names another connected account than the path".into(),
        ));
    }
    Ok(())
}

/// Scopes a body's `connection` object: every user-id spelling inside it removed, shared
/// options refused, and with `force` `connection.user_id` set to the subject (the object is
/// created when absent). Returns whether a removed id named someone else.
fn scope_connection(ctx: &Ctx<'_>, obj: &mut JsonObject, force: bool) -> Result<bool, Error> {
    let subject = ctx.subject();
    let current = obj
        .iter()
        .find(|(k, _)| *k == "connection")
        .map(|(_, v)| v.get().to_owned());
    let mut map: BTreeMap<String, Box<RawValue>> = match current.as_deref() {
        None | Some("null") if !force => return Ok(false),
        None | Some("null") => BTreeMap::new(),
        Some(text) => serde_json::from_str(text)
            .map_err(|_| Error::BodyInvalid("`connection` must be an object".into()))?,
    };
    if !ctx.shared.policy.allow_shared_accounts
        && map
            .iter()
            .any(|(k, v)| folded_eq(k, "experimental") && v.get() != "null")
    {
        return Err(Error::SharedAccountsNotAllowed);
    }
    let mut mismatch = false;
    map.retain(|k, v| {
        if is_identity_key(k) {
            mismatch |= !names_only(v, subject);
            false
        } else {
            true
        }
    });
    if force {
        let raw = serde_json::value::to_raw_value(subject).map_err(|_| Error::Internal)?;
        map.insert("user_id".to_owned(), raw);
    }
    let raw = serde_json::value::to_raw_value(&map).map_err(|_| Error::Internal)?;
    obj.set_raw("connection", raw);
    Ok(mismatch)
}

/// Whether a raw identity value names nobody but `subject` (`null` names nobody).
fn names_only(v: &RawValue, subject: &str) -> bool {
    match serde_json::from_str::<Value>(v.get()) {
        Ok(Value::Null) => true,
        Ok(Value::String(s)) => s == subject,
        Ok(Value::Array(a)) => a.iter().all(|x| x.as_str() == Some(subject)),
        _ => false,
    }
}

/// Second line of defence on listings: drops `items` whose owner field (any of `fields`) is
/// present and names someone other than `subject`. Returns how many were dropped.
fn drop_foreign(v: &mut Value, fields: &[&str], subject: &str) -> usize {
    let Some(items) = v.get_mut("items").and_then(Value::as_array_mut) else {
        return 0;
    };
    let before = items.len();
    items.retain(|item| {
        fields.iter().all(|f| match item.get(*f) {
            None | Some(Value::Null) => true,
            Some(Value::String(s)) => s == subject,
            Some(_) => false,
        })
    });
    before - items.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn foreign_items_are_dropped_from_listings() {
        let mut v = json!({"items": [
            {"id": "a", "user_id": "alice"},
            {"id": "b", "user_id": "bob"},
            {"id": "c"},
            {"id": "d", "user_id": null},
            {"id": "e", "user_id": ["alice"]},
        ], "total_items": 5});
        assert_eq!(drop_foreign(&mut v, &["user_id"], "alice"), 2);
        let ids: Vec<_> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "c", "d"]);
    }

    #[test]
    fn legacy_items_are_dropped_by_either_owner_field() {
        let mut v = json!({"items": [
            {"id": "1", "clientUniqueUserId": "alice", "entityId": "alice"},
            {"id": "2", "clientUniqueUserId": "bob"},
            {"id": "3", "clientUniqueUserId": "alice", "entityId": "bob"},
        ]});
        assert_eq!(
            drop_foreign(&mut v, &["clientUniqueUserId", "entityId"], "alice"),
            2
        );
        assert_eq!(v["items"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn non_listings_are_left_alone() {
        let mut v = json!({"error": {"message": "x"}, "user_id": "bob"});
        assert_eq!(drop_foreign(&mut v, &["user_id"], "alice"), 0);
        assert_eq!(v["user_id"], "bob");
    }
}
