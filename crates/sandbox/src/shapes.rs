//! JSON renderings, in the shapes the SDKs parse: `composio_client` 2.0 response types for
//! v3.x, `composio-core` 0.7 pydantic models for v1/v2.

use serde_json::{json, Value};

use crate::model::{Recorded, Tool};
use crate::store::{AccountRec, AuthConfigRec, ToolkitRec, TriggerRec, TriggerTypeRec};

/// The tool version the catalogue reports as current.
pub(crate) const TOOL_VERSION: &str = "20250909_00";
/// Timestamp used for catalogue records.
const CATALOGUE_TIME: &str = "2025-09-09T00:00:00.000Z";

fn logo(slug: &str) -> String {
    format!("https://logos.composio.dev/api/{slug}")
}

/// The auth scheme shown for accounts of a toolkit.
fn scheme_of(tk: Option<&ToolkitRec>, ac: Option<&AuthConfigRec>) -> String {
    ac.map(|a| a.auth_scheme.clone())
        .or_else(|| tk.and_then(|t| t.auth_scheme.clone()))
        .unwrap_or_else(|| "OAUTH2".into())
}

/// `state.val` / `connectionParams`: per status, with a fake token where Composio would
/// show a real one (so that tests can check that nothing leaks).
fn credential_val(rec: &AccountRec, scheme: &str) -> Value {
    let a = &rec.acc;
    let mut val = json!({ "status": a.status });
    let token = format!("sbx-secret-token-{}", a.id);
    match a.status.as_str() {
        "ACTIVE" | "INACTIVE" => {
            if scheme == "API_KEY" {
                val["api_key"] = json!(token);
                val["generic_api_key"] = json!(token);
            } else {
                val["access_token"] = json!(token);
                val["token_type"] = json!("bearer");
                val["refresh_token"] = json!(format!("sbx-refresh-token-{}", a.id));
                val["scope"] = json!("repo,user");
            }
        }
        "INITIATED" => {
            val["redirectUrl"] = json!(format!("https://connect.composio.dev/link/lk_{}", a.id));
            val["callbackUrl"] = json!("https://backend.composio.dev/api/v1/auth-apps/add");
        }
        "FAILED" => {
            val["error"] = json!("access_denied");
            val["error_description"] = json!("The user denied the request");
        }
        "EXPIRED" => val["expired_at"] = json!(rec.updated_at),
        "REVOKED" => val["revoked_at"] = json!(rec.updated_at),
        _ => {}
    }
    val
}

/// A v3 connected account (list item, or with `full` the `GET /connected_accounts/{id}`
/// shape).
pub(crate) fn account_v3(
    rec: &AccountRec,
    tk: Option<&ToolkitRec>,
    ac: Option<&AuthConfigRec>,
    full: bool,
) -> Value {
    let a = &rec.acc;
    let scheme = scheme_of(tk, ac);
    let val = credential_val(rec, &scheme);
    let mut v = json!({
        "id": a.id,
        "user_id": a.user_id,
        "status": a.status,
        "status_reason": a.status_reason,
        "is_disabled": a.is_disabled,
        "toolkit": { "slug": a.toolkit },
        "auth_config": {
            "id": a.auth_config_id,
            "auth_scheme": scheme,
            "is_composio_managed": ac.is_none_or(|c| c.managed),
            "is_disabled": ac.is_some_and(|c| !c.enabled),
            "deprecated": { "uuid": uuid_like(&a.auth_config_id) },
        },
        "state": { "authScheme": scheme, "val": val },
        "data": val,
        "alias": rec.alias,
        "word_id": format!("{}_{}", a.toolkit, a.id.trim_start_matches("ca_")),
        "created_at": a.created_at,
        "updated_at": rec.updated_at,
        "test_request_endpoint": tk.map(|t| format!("{}/user", t.base_url)),
        "deprecated": { "labels": [], "uuid": uuid_like(&a.id) },
        "experimental": { "account_type": "PRIVATE", "acl_config_for_shared": null },
    });
    if full {
        v["params"] = json!({});
        v["requested_scopes"] = json!([]);
        v["requested_user_scopes"] = json!([]);
    }
    v
}

/// A v1 connected account (`ConnectedAccountModel` of `composio-core` 0.7).
pub(crate) fn account_v1(
    rec: &AccountRec,
    tk: Option<&ToolkitRec>,
    ac: Option<&AuthConfigRec>,
) -> Value {
    let a = &rec.acc;
    let scheme = scheme_of(tk, ac);
    let mut params = credential_val(rec, &scheme);
    if let Some(obj) = params.as_object_mut() {
        obj.remove("status");
        if let Some(t) = tk {
            obj.insert("base_url".into(), json!(t.base_url));
        }
    }
    json!({
        "id": a.id,
        "integrationId": a.auth_config_id,
        "clientUniqueUserId": a.user_id,
        "entityId": a.user_id,
        "status": a.status,
        "appUniqueId": a.toolkit,
        "appName": a.toolkit,
        "connectionParams": params,
        "isDisabled": a.is_disabled,
        "enabled": !a.is_disabled,
        "deleted": false,
        "invocationCount": 0,
        "createdAt": a.created_at,
        "updatedAt": rec.updated_at,
        "logo": logo(&a.toolkit),
        "authConfig": { "id": a.auth_config_id, "authScheme": scheme },
        "member": { "id": "member_sbx", "name": "Sandbox", "email": "sandbox@example.invalid" },
        "labels": [],
        "data": {},
    })
}

/// A stable UUID-looking string derived from an id (Composio's `deprecated.uuid`).
pub(crate) fn uuid_like(id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let hex = format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15);
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The JSON schema of a tool's inputs: known for the demo tools, open otherwise.
pub(crate) fn input_parameters(slug: &str) -> Value {
    let (props, required): (Value, &[&str]) = match slug {
        "GITHUB_CREATE_ISSUE" | "GITHUB_CREATE_AN_ISSUE" => (
            json!({
                "owner": {"type": "string", "description": "The account owner of the repository."},
                "repo": {"type": "string", "description": "The name of the repository."},
                "title": {"type": "string", "description": "The title of the issue."},
                "body": {"type": "string", "description": "The contents of the issue."},
            }),
            &["owner", "repo", "title"],
        ),
        "SLACK_SEND_MESSAGE" => (
            json!({
                "channel": {"type": "string", "description": "Channel id or name."},
                "text": {"type": "string", "description": "Message text."},
            }),
            &["channel", "text"],
        ),
        "GMAIL_SEND_EMAIL" => (
            json!({
                "recipient_email": {"type": "string", "description": "Recipient address."},
                "subject": {"type": "string", "description": "Subject line."},
                "body": {"type": "string", "description": "Message body."},
            }),
            &["recipient_email", "body"],
        ),
        "NOTION_CREATE_PAGE" => (
            json!({
                "parent_id": {"type": "string", "description": "Parent page id."},
                "title": {"type": "string", "description": "Page title."},
            }),
            &["parent_id", "title"],
        ),
        "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH" => (
            json!({"query": {"type": "string", "description": "Search query."}}),
            &["query"],
        ),
        "TEXT_TO_PDF_CONVERT_TEXT_TO_PDF" => (
            json!({"text": {"type": "string", "description": "Text to convert."}}),
            &["text"],
        ),
        "HACKERNEWS_GET_FRONTPAGE" => (
            json!({"min_points": {"type": "integer", "description": "Minimum points.", "default": 0}}),
            &[],
        ),
        "COMPOSIO_MULTI_EXECUTE_TOOL" => (
            json!({"tools": {"type": "array", "description": "Tools to run.", "items": {"type": "object"}}}),
            &["tools"],
        ),
        "COMPOSIO_SEARCH_TOOLS" => (
            json!({"queries": {"type": "array", "description": "Use cases.", "items": {"type": "object"}}}),
            &["queries"],
        ),
        _ => (json!({}), &[]),
    };
    json!({
        "type": "object",
        "title": format!("{}Request", slug),
        "properties": props,
        "required": required,
        "additionalProperties": true,
    })
}

fn output_parameters() -> Value {
    json!({
        "type": "object",
        "title": "Response",
        "properties": {
            "data": {"type": "object", "description": "Tool output."},
            "successful": {"type": "boolean", "description": "Whether the tool ran."},
            "error": {"type": "string", "description": "Error, if any.", "default": null},
        },
        "required": ["data", "successful"],
    })
}

fn tool_display_name(slug: &str) -> String {
    crate::store::title_case(&slug.to_ascii_lowercase())
}

/// A tool's description, the same on every API and in MCP (as Composio's is).
pub(crate) fn tool_description(t: &Tool) -> String {
    format!(
        "{} (sandbox tool of {}).",
        tool_display_name(&t.slug),
        t.toolkit
    )
}

/// Where a rendering keeps each field of a v3 definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `GET /tools`, `/tools/{slug}`, a session's tool list.
    V3,
    /// A v2 action.
    V2,
    /// An MCP tool.
    Mcp,
    /// A session search's `tool_schemas` entry.
    Search,
}

/// Lays a definition patch (v3 field names, [`crate::Sandbox::set_tool_definition`]) over a
/// rendering of the tool in `shape`.
pub(crate) fn patched(mut v: Value, patch: Option<&Value>, shape: Shape) -> Value {
    let Some(Value::Object(patch)) = patch else {
        return v;
    };
    for (k, val) in patch {
        let key = match (shape, k.as_str()) {
            (Shape::V3, k) => k,
            (_, "description") => "description",
            (Shape::V2, "input_parameters") => "parameters",
            (Shape::V2, "output_parameters") => "response",
            (Shape::V2, "name") => "display_name",
            (Shape::Mcp, "input_parameters") => "inputSchema",
            (Shape::Mcp, "output_parameters") => "outputSchema",
            (Shape::Mcp, "name") => "title",
            (Shape::Search, "input_parameters") => "input_schema",
            _ => continue,
        };
        if let Value::Object(m) = &mut v {
            m.insert(key.to_owned(), val.clone());
        }
    }
    v
}

/// A v3 tool (`GET /tools/{slug}` and list items).
pub(crate) fn tool_v3(t: &Tool, tk: Option<&ToolkitRec>, version: &str) -> Value {
    let tk_name = tk.map_or_else(|| t.toolkit.clone(), |k| k.name.clone());
    json!({
        "slug": t.slug,
        "name": tool_display_name(&t.slug),
        "description": tool_description(t),
        "human_description": null,
        "toolkit": { "slug": t.toolkit, "name": tk_name, "logo": logo(&t.toolkit) },
        "input_parameters": input_parameters(&t.slug),
        "output_parameters": output_parameters(),
        "no_auth": t.no_auth,
        "version": version,
        "available_versions": [TOOL_VERSION, "00000000_00"],
        "scopes": [],
        "scope_requirements": null,
        "tags": ["important"],
        "is_deprecated": false,
        "deprecated": {
            "available_versions": [TOOL_VERSION, "00000000_00"],
            "displayName": tool_display_name(&t.slug),
            "is_deprecated": false,
            "toolkit": { "logo": logo(&t.toolkit) },
            "version": version,
        },
    })
}

/// A v2 action (`ActionModel` of `composio-core` 0.7).
pub(crate) fn action_v2(t: &Tool) -> Value {
    let mut params = input_parameters(&t.slug);
    if let Some(obj) = params.as_object_mut() {
        obj.remove("additionalProperties");
    }
    json!({
        "name": t.slug,
        "display_name": tool_display_name(&t.slug),
        "description": tool_description(t),
        "parameters": params,
        "response": output_parameters(),
        "appName": t.toolkit,
        "appKey": t.toolkit,
        "appId": app_id(&t.toolkit),
        "version": "1.0.0",
        "available_versions": ["1.0.0", "latest"],
        "tags": ["important"],
        "logo": logo(&t.toolkit),
        "enabled": true,
        "no_auth": t.no_auth,
        "deprecated": false,
    })
}

/// The v1 app id of a toolkit.
pub(crate) fn app_id(toolkit: &str) -> String {
    uuid_like(&format!("app:{toolkit}"))
}

/// A v3 toolkit (list item; with `full` the `GET /toolkits/{slug}` shape).
pub(crate) fn toolkit_v3(tk: &ToolkitRec, tools: usize, triggers: usize, full: bool) -> Value {
    let schemes: Vec<&str> = tk.auth_scheme.as_deref().into_iter().collect();
    let mut v = json!({
        "slug": tk.slug,
        "name": tk.name,
        "type": "native",
        "is_local_toolkit": false,
        "no_auth": tk.auth_scheme.is_none(),
        "auth_schemes": schemes,
        "composio_managed_auth_schemes": schemes,
        "auth_guide_url": null,
        "deprecated": { "toolkitId": uuid_like(&tk.slug) },
        "meta": {
            "description": tk.description,
            "logo": logo(&tk.slug),
            "app_url": tk.base_url,
            "categories": [{
                "id": tk.category,
                "slug": tk.category,
                "name": crate::store::title_case(&tk.category),
            }],
            "tools_count": tools,
            "triggers_count": triggers,
            "created_at": CATALOGUE_TIME,
            "updated_at": CATALOGUE_TIME,
            "version": TOOL_VERSION,
            "available_versions": [TOOL_VERSION, "00000000_00"],
        },
    });
    if full {
        v["enabled"] = json!(true);
        v["base_url"] = json!(tk.base_url);
        v["get_current_user_endpoint"] = json!("/user");
        v["composio_managed_auth"] = json!(schemes
            .iter()
            .map(|m| json!({"mode": m, "scopes": {"available": []}}))
            .collect::<Vec<_>>());
        v["auth_config_details"] = json!(schemes
            .iter()
            .map(|m| json!({
                "mode": m,
                "name": m,
                "required_scopes": [],
                "fields": {
                    "auth_config_creation": {"required": [], "optional": []},
                    "connected_account_initiation": {"required": [], "optional": []},
                },
            }))
            .collect::<Vec<_>>());
        v["deprecated"]["rawProxyInfoByAuthSchemes"] = json!([]);
    }
    v
}

/// A v1 app (`AppModel` of `composio-core` 0.7).
pub(crate) fn app_v1(tk: &ToolkitRec) -> Value {
    let schemes = tk.auth_scheme.as_deref().map(|s| {
        json!([{
            "scheme_name": s,
            "auth_mode": s,
            "fields": [],
            "proxy": { "base_url": tk.base_url },
        }])
    });
    json!({
        "name": tk.slug,
        "key": tk.slug,
        "appId": app_id(&tk.slug),
        "description": tk.description,
        "categories": [tk.category],
        "meta": { "is_custom_app": false, "triggersCount": 0, "actionsCount": 0 },
        "logo": logo(&tk.slug),
        "docs": null,
        "group": null,
        "status": null,
        "enabled": true,
        "no_auth": tk.auth_scheme.is_none(),
        "auth_schemes": schemes,
        "testConnectors": [],
    })
}

/// A v3 auth config list item.
pub(crate) fn auth_config_v3(ac: &AuthConfigRec, connections: usize) -> Value {
    json!({
        "id": ac.id,
        "uuid": uuid_like(&ac.id),
        "name": ac.name,
        "type": if ac.managed { "default" } else { "custom" },
        "status": if ac.enabled { "ENABLED" } else { "DISABLED" },
        "toolkit": { "slug": ac.toolkit, "logo": logo(&ac.toolkit) },
        "auth_scheme": ac.auth_scheme,
        "is_composio_managed": ac.managed,
        "no_of_connections": connections,
        "tool_access_config": { "tools_available_for_execution": [], "tools_for_connected_account_creation": [] },
        "created_at": ac.created_at,
        "last_updated_at": ac.created_at,
        "created_by": "sandbox",
        "expected_input_fields": [],
        "restrict_to_following_tools": [],
    })
}

/// A v1 integration (`IntegrationModel` of `composio-core` 0.7).
pub(crate) fn integration_v1(ac: &AuthConfigRec) -> Value {
    json!({
        "id": ac.id,
        "name": ac.name,
        "authScheme": ac.auth_scheme,
        "createdAt": ac.created_at,
        "updatedAt": ac.created_at,
        "enabled": ac.enabled,
        "deleted": false,
        "appId": app_id(&ac.toolkit),
        "appName": ac.toolkit,
        "expectedInputFields": [],
        "_count": { "connections": 0 },
        "logo": logo(&ac.toolkit),
        "defaultConnectorId": null,
        "connections": [],
        "useComposioAuth": ac.managed,
    })
}

fn trigger_schemas(t: &TriggerTypeRec) -> (Value, Value) {
    let config = json!({
        "title": "TriggerConfig",
        "type": "object",
        "properties": {
            "owner": {"type": "string", "title": "Owner", "description": "Repository owner"},
            "repo": {"type": "string", "title": "Repo", "description": "Repository name"},
        },
        "required": [],
    });
    let payload = json!({
        "title": format!("{}Payload", t.slug),
        "type": "object",
        "properties": {
            "event": {"type": "string", "title": "Event", "description": "The event"},
        },
        "required": [],
    });
    (config, payload)
}

/// A v3 trigger type.
pub(crate) fn trigger_type_v3(t: &TriggerTypeRec, tk: Option<&ToolkitRec>) -> Value {
    let (config, payload) = trigger_schemas(t);
    json!({
        "slug": t.slug,
        "name": t.name,
        "description": t.description,
        "instructions": format!("Sandbox trigger {}.", t.slug),
        "type": "webhook",
        "toolkit": {
            "slug": t.toolkit,
            "name": tk.map_or_else(|| t.toolkit.clone(), |k| k.name.clone()),
            "logo": logo(&t.toolkit),
        },
        "config": config,
        "payload": payload,
        "version": TOOL_VERSION,
        "requires_webhook_endpoint_setup": false,
    })
}

/// A v1 trigger (`TriggerModel` of `composio-core` 0.7).
pub(crate) fn trigger_v1(t: &TriggerTypeRec) -> Value {
    let (config, payload) = trigger_schemas(t);
    json!({
        "name": t.slug,
        "display_name": t.name,
        "description": t.description,
        "payload": payload,
        "config": config,
        "instructions": format!("Sandbox trigger {}.", t.slug),
        "appId": app_id(&t.toolkit),
        "appKey": t.toolkit,
        "appName": t.toolkit,
        "count": 0,
        "enabled": true,
        "logo": logo(&t.toolkit),
    })
}

/// A v3 active trigger instance.
pub(crate) fn trigger_instance_v3(t: &TriggerRec) -> Value {
    json!({
        "id": t.id,
        "uuid": uuid_like(&t.id),
        "triggerName": t.slug,
        "trigger_name": t.slug,
        "user_id": t.user_id,
        "connectedAccountId": t.connected_account_id,
        "connected_account_id": t.connected_account_id,
        "connected_account_uuid": uuid_like(&t.connected_account_id),
        "auth_config_id": t.auth_config_id,
        "triggerConfig": t.config,
        "trigger_config": t.config,
        "state": {},
        "disabled_at": if t.disabled { json!(t.updated_at) } else { Value::Null },
        "disabledAt": if t.disabled { json!(t.updated_at) } else { Value::Null },
        "updated_at": t.updated_at,
        "updatedAt": t.updated_at,
        "version": TOOL_VERSION,
        "egress_url": null,
        "deprecated": { "createdAt": t.created_at },
    })
}

/// The [`crate::Fault::EchoHeaders`] body.
pub(crate) fn echo(r: &Recorded) -> Value {
    let mut headers = serde_json::Map::new();
    for (n, v) in &r.headers {
        headers
            .entry(n.clone())
            .and_modify(|e| {
                if let Some(s) = e.as_str() {
                    *e = json!(format!("{s}, {v}"));
                }
            })
            .or_insert_with(|| json!(v));
    }
    json!({
        "method": r.method,
        "path": r.path,
        "query": r.query,
        "headers": headers,
        "header_list": r.headers.iter().map(|(n, v)| json!([n, v])).collect::<Vec<_>>(),
        "body": String::from_utf8_lossy(&r.body),
        "body_json": r.json(),
    })
}
