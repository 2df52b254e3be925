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
    // The parameters of Composio's real tools (names, types, required), as its tool catalogue
    // lists them, so that a gateway's checks against schemas meet what production has.
    let string = |d: &str| json!({"type": "string", "description": d});
    let strings = |d: &str| json!({"type": "array", "items": {"type": "string"}, "description": d});
    let boolean =
        |d: &str, default: bool| json!({"type": "boolean", "description": d, "default": default});
    let integer = |d: &str| json!({"type": "integer", "description": d});
    let (props, required): (Value, &[&str]) = match slug {
        "GITHUB_CREATE_ISSUE" | "GITHUB_CREATE_AN_ISSUE" => (
            json!({
                "owner": string("The account owner of the repository. The name is not case sensitive."),
                "repo": string("The name of the repository without the `.git` extension. The name is not case sensitive."),
                "title": string("The title of the issue."),
                "body": string("The contents of the issue."),
                "assignee": string("Login for the user that this issue should be assigned to (deprecated: use `assignees`)."),
                "assignees": strings("Logins for Users to assign to this issue."),
                "labels": strings("Labels to associate with this issue."),
                "milestone": string("The number of the milestone to associate this issue with."),
            }),
            &["owner", "repo", "title"],
        ),
        "GITHUB_GET_THE_AUTHENTICATED_USER" => (json!({}), &[]),
        "GITHUB_STAR_A_REPOSITORY_FOR_THE_AUTHENTICATED_USER" => (
            json!({
                "owner": string("The account owner of the repository. The name is not case sensitive."),
                "repo": string("The name of the repository without the `.git` extension. The name is not case sensitive."),
            }),
            &["owner", "repo"],
        ),
        "SLACK_SEND_MESSAGE" => (
            json!({
                "channel": string("ID or name of the channel, private group, or IM channel to send the message to."),
                "text": string("Plain text of the message (a fallback when `blocks` are given)."),
                "markdown_text": string("The message in Markdown; not together with `text` or `blocks`."),
                "blocks": string("A JSON-encoded array of structured Block Kit blocks."),
                "attachments": string("A JSON-encoded array of structured attachments."),
                "thread_ts": string("Timestamp of the parent message: the message is a reply in its thread."),
                "reply_broadcast": boolean("With `thread_ts`, also post the reply to the channel.", false),
                "as_user": boolean("Post as the authenticated user instead of as a bot.", false),
                "username": string("The bot's user name for this message."),
                "icon_emoji": string("Emoji to use as the icon for this message."),
                "icon_url": string("URL of an image to use as the icon for this message."),
                "link_names": boolean("Find and link user groups and channel names.", false),
                "mrkdwn": boolean("Whether to interpret Slack markup in `text`.", true),
                "parse": string("How the message is treated: `none` or `full`."),
                "unfurl_links": boolean("Enable unfurling of primarily text-based content.", true),
                "unfurl_media": boolean("Enable unfurling of media content.", true),
            }),
            &["channel"],
        ),
        "SLACK_LIST_ALL_CHANNELS" => (
            json!({
                "exclude_archived": boolean("Exclude archived channels.", false),
                "types": string("Comma-separated channel types: public_channel, private_channel, mpim, im."),
                "limit": integer("Most channels to return per page (1-1000)."),
                "cursor": string("Pagination cursor from a previous answer's `next_cursor`."),
                "team_id": string("Encoded team id to list channels in (org-wide apps)."),
            }),
            &[],
        ),
        "GMAIL_SEND_EMAIL" => (
            json!({
                "recipient_email": string("The primary recipient's email address."),
                "extra_recipients": strings("Additional recipients' email addresses (To)."),
                "cc": strings("Email addresses to carbon copy."),
                "bcc": strings("Email addresses to blind carbon copy."),
                "subject": string("Subject line of the email."),
                "body": string("Body of the email (plain text, or HTML when `is_html`)."),
                "is_html": boolean("Whether `body` is HTML.", false),
                "attachment": {"type": "object", "description": "A file to attach.", "properties": {
                    "name": {"type": "string"}, "mimetype": {"type": "string"}, "s3key": {"type": "string"}}},
                "user_id": {"type": "string", "description": "The user's email address, or `me` for the authenticated user.", "default": "me"},
            }),
            &["body"],
        ),
        "GMAIL_REPLY_TO_THREAD" => (
            json!({
                "thread_id": string("Id of the thread to reply in."),
                "message_body": string("Content of the reply (plain text, or HTML when `is_html`)."),
                "recipient_email": string("The primary recipient's email address."),
                "extra_recipients": strings("Additional recipients' email addresses (To)."),
                "cc": strings("Email addresses to carbon copy."),
                "bcc": strings("Email addresses to blind carbon copy."),
                "is_html": boolean("Whether `message_body` is HTML.", false),
                "attachment": {"type": "object", "description": "A file to attach.", "properties": {
                    "name": {"type": "string"}, "mimetype": {"type": "string"}, "s3key": {"type": "string"}}},
                "user_id": {"type": "string", "description": "The user's email address, or `me` for the authenticated user.", "default": "me"},
            }),
            &["thread_id", "message_body"],
        ),
        "GMAIL_FETCH_EMAILS" => (
            json!({
                "query": string("A Gmail search query (`from:`, `is:unread`, ...)."),
                "label_ids": strings("Only messages with all of these label ids."),
                "max_results": integer("Most messages to return (1-500)."),
                "page_token": string("Token of the page to fetch, from a previous answer."),
                "include_payload": boolean("Include the full message payload.", true),
                "include_spam_trash": boolean("Include messages from SPAM and TRASH.", false),
                "verbose": boolean("Parse every message fully.", true),
                "user_id": {"type": "string", "description": "The user's email address, or `me` for the authenticated user.", "default": "me"},
            }),
            &[],
        ),
        "NOTION_CREATE_PAGE" => (
            json!({
                "parent_id": string("Id of the parent page (or database) of the new page."),
                "title": string("Title of the new page."),
                "icon": string("An emoji to use as the page icon."),
                "cover": string("URL of an image to use as the page cover."),
            }),
            &["parent_id", "title"],
        ),
        "NOTION_SEARCH_NOTION_PAGE" => (
            json!({
                "query": string("Text to search page and database titles for."),
                "filter_value": string("`page` or `database`."),
                "filter_property": string("The property to filter on (`object`)."),
                "direction": string("Sort direction: `ascending` or `descending`."),
                "timestamp": string("Sort timestamp: `last_edited_time`."),
                "page_size": integer("Most results per page (1-100)."),
                "start_cursor": string("Cursor of the page to fetch, from a previous answer."),
            }),
            &[],
        ),
        "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH" => {
            (json!({"query": string("The search query.")}), &["query"])
        }
        "TEXT_TO_PDF_CONVERT_TEXT_TO_PDF" => (
            json!({"text": string("The text to convert to a PDF.")}),
            &["text"],
        ),
        "HACKERNEWS_GET_FRONTPAGE" => (
            json!({"min_points": {"type": "integer", "description": "Minimum points.", "default": 0}}),
            &[],
        ),
        "HACKERNEWS_GET_USER" => (
            json!({"username": string("The Hacker News user name.")}),
            &["username"],
        ),
        "COMPOSIO_MULTI_EXECUTE_TOOL" => (
            json!({
                "tools": {"type": "array", "description": "The tools to run, each with its `tool_slug` and `arguments`.", "items": {"type": "object", "properties": {
                    "tool_slug": {"type": "string"}, "arguments": {"type": "object"}}, "required": ["tool_slug", "arguments"]}},
                "sync_response_to_workbench": boolean("Also save the answers in the remote workbench.", false),
                "thought": string("Why these tools are run."),
            }),
            &["tools"],
        ),
        "COMPOSIO_SEARCH_TOOLS" => (
            json!({
                "queries": {"type": "array", "description": "Use cases to find tools for.", "items": {"type": "object", "properties": {
                    "use_case": {"type": "string"}, "known_fields": {"type": "string"}}, "required": ["use_case"]}},
                "session": {"type": "object", "description": "The session to search in (`id`, `generate_id`)."},
            }),
            &["queries"],
        ),
        "COMPOSIO_MANAGE_CONNECTIONS" => (
            json!({
                "toolkits": strings("Toolkit slugs to connect or check."),
                "reinitiate_all": boolean("Start new connections even for toolkits already connected.", false),
            }),
            &["toolkits"],
        ),
        "COMPOSIO_GET_TOOL_SCHEMAS" => (
            json!({"tool_slugs": strings("Slugs of the tools whose input schemas to return.")}),
            &["tool_slugs"],
        ),
        "COMPOSIO_PROXY_EXECUTE" => (
            json!({
                "toolkit_slug": string("The toolkit whose connected account makes the request."),
                "endpoint": string("The API path (or full URL) to call."),
                "method": {"type": "string", "enum": ["GET", "POST", "PUT", "DELETE", "PATCH"], "description": "The HTTP method."},
                "body": {"type": "object", "description": "The JSON request body."},
                "parameters": {"type": "array", "description": "Headers and query parameters (`name`, `value`, `type`).", "items": {"type": "object"}},
            }),
            &["toolkit_slug", "endpoint", "method"],
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
