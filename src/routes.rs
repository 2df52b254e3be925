//! The route table: the one place that maps (method, path) to a policy.
//!
//! Everything not listed is refused with 403 `route_not_allowed` before it reaches Composio.
//! Adding a Composio endpoint is one row in [`ROUTES`] plus a test. Patterns are literal
//! segments, `{v3}` (matches `v3` and `v3.1`, which share paths and shapes but must be kept
//! apart when forwarding, since they default to different tool versions) and `{name}`
//! (captures one canonical segment). Rows are tried in order and the first match wins, so a
//! literal row (`tools/execute/proxy`) must precede the parameter row it would otherwise match.
//!
//! A parameter never captures a name Composio uses for a collection or an action
//! ([`is_reserved`]): every literal segment of the table, and the names of [`RESERVED`] that
//! Composio's API uses but the table does not route. Without this, `GET mcp/{id}` would serve
//! `GET mcp/servers` (the project's MCP server configurations) to any user, and each new
//! Composio collection would be one more such hole.

use http::Method;

use crate::error::Error;

/// Which generation of the API a route belongs to: it decides the spelling of identity fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `/api/v3` and `/api/v3.1`: `user_id`, `connected_account_id`.
    V3,
    /// `/api/v1` and `/api/v2` (the old SDK): `entityId`, `connectedAccountId`, `appName`.
    Legacy,
}

/// What the gateway does with a request on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Tool execution: the body's user is pinned to the subject, custom credentials refused,
    /// a named connected account must be the subject's, and the tool's toolkit is gated on an
    /// ACTIVE connection. Param 0 is the tool slug.
    Execute(Api),
    /// Raw HTTP through a user's connected account: user pinned, an explicit ACTIVE account
    /// of the subject's required.
    ProxyExecute(Api),
    /// Connected-account listing: the user filter is forced to the subject alone.
    ListAccounts(Api),
    /// One connected account addressed by path (param 0): only if it is the subject's.
    OwnedAccount(Api),
    /// Connection creation: the body's user id is forced to the subject.
    CreateAccount(Api),
    /// Trigger instance upsert: body user forced, connected account owned.
    TriggerUpsert,
    /// Active trigger listing: user filter forced.
    ListTriggers,
    /// Trigger instance managed by id (param 0): only if it is the subject's.
    OwnedTrigger,
    /// MCP URL generation: `user_ids` forced, accounts owned.
    McpGenerate,
    /// Tool router session creation: `user_id` forced.
    SessionCreate,
    /// A tool router session call (param 0 is the session id): only the subject's sessions.
    OwnedSession(SessionCall),
    /// Tenant-neutral catalogue read: the same answer for every user.
    Neutral,
    /// Answered by the gateway itself: the old SDK's key check, which must not see the key.
    ClientInfo,
    /// MCP over Streamable HTTP: JSON-RPC inspected message by message ([`crate::proxy::mcp`]).
    Mcp(McpTarget),
    /// A presigned upload URL for a tool's file input (project storage, not a user's data):
    /// the JSON body is forwarded with any user id removed.
    FileUpload,
}

impl Policy {
    /// A stable short name, for metrics and the audit trail.
    pub fn name(self) -> &'static str {
        match self {
            Self::Execute(_) => "execute",
            Self::ProxyExecute(_) => "proxy_execute",
            Self::ListAccounts(_) => "list_accounts",
            Self::OwnedAccount(_) => "owned_account",
            Self::CreateAccount(_) => "create_account",
            Self::TriggerUpsert => "trigger_upsert",
            Self::ListTriggers => "list_triggers",
            Self::OwnedTrigger => "owned_trigger",
            Self::McpGenerate => "mcp_generate",
            Self::SessionCreate => "session_create",
            Self::OwnedSession(_) => "owned_session",
            Self::Neutral => "neutral",
            Self::ClientInfo => "client_info",
            Self::FileUpload => "file_upload",
            Self::Mcp(_) => "mcp",
        }
    }
}

/// What a call inside a tool router session does, for gating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionCall {
    /// `execute`: gated by the tool's toolkit.
    Execute,
    /// `execute_meta`: a meta tool (`slug`), decided like `execute`.
    ExecuteMeta,
    /// `proxy_execute`: gated by `toolkit_slug`.
    ProxyExecute,
    /// Anything else scoped to the session (read, link, search, patch, delete, mounts).
    Other,
}

/// Which MCP endpoint a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McpTarget {
    /// A tool router session's endpoint (param 0 is the session id): only the subject's.
    Session,
    /// An MCP server's endpoint (param 0 is the server id): `user_id` forced to the subject,
    /// a `connected_account_id` only if it is the subject's.
    Server,
    /// `/mcp`, the subject's own endpoint (`[mcp] front_door`).
    FrontDoor,
}

/// One row of the table.
#[derive(Debug)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path pattern.
    pub pattern: &'static str,
    /// What to do.
    pub policy: Policy,
}

/// A matched route and the segments it captured.
#[derive(Debug, Clone, Copy)]
pub struct Matched<'a> {
    /// The row.
    pub route: &'static Route,
    params: [&'a str; MAX_PARAMS],
    len: usize,
}

const MAX_PARAMS: usize = 3;

impl<'a> Matched<'a> {
    /// Captured segment `i` (in pattern order).
    pub fn param(&self, i: usize) -> Option<&'a str> {
        (i < self.len).then(|| self.params[i])
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.route.policy
    }
}

macro_rules! routes {
    ($($method:ident $pattern:literal => $policy:expr;)*) => {
        &[$(Route { method: Method::$method, pattern: $pattern, policy: $policy },)*]
    };
}

use Api::{Legacy, V3};
use Policy::*;

/// The route table. Order matters: first match wins.
pub static ROUTES: &[Route] = routes! {
    // --- tool execution ---
    POST "/api/{v3}/tools/execute/proxy"                   => ProxyExecute(V3);
    POST "/api/{v3}/tools/execute/{tool_slug}"             => Execute(V3);
    POST "/api/v2/actions/proxy"                           => ProxyExecute(Legacy);
    POST "/api/v2/actions/{action}/execute"                => Execute(Legacy);
    POST "/api/v1/actions/{action}/execute"                => Execute(Legacy);

    // --- connected accounts ---
    GET    "/api/{v3}/connected_accounts"                  => ListAccounts(V3);
    POST   "/api/{v3}/connected_accounts"                  => CreateAccount(V3);
    POST   "/api/{v3}/connected_accounts/link"             => CreateAccount(V3);
    GET    "/api/{v3}/connected_accounts/{id}"             => OwnedAccount(V3);
    PATCH  "/api/{v3}/connected_accounts/{id}"             => OwnedAccount(V3);
    DELETE "/api/{v3}/connected_accounts/{id}"             => OwnedAccount(V3);
    POST   "/api/{v3}/connected_accounts/{id}/refresh"     => OwnedAccount(V3);
    PATCH  "/api/{v3}/connected_accounts/{id}/status"      => OwnedAccount(V3);
    POST   "/api/{v3}/connected_accounts/{id}/revoke"      => OwnedAccount(V3);
    GET    "/api/v1/connectedAccounts"                     => ListAccounts(Legacy);
    POST   "/api/v1/connectedAccounts"                     => CreateAccount(Legacy);
    GET    "/api/v1/connectedAccounts/{id}"                => OwnedAccount(Legacy);
    DELETE "/api/v1/connectedAccounts/{id}"                => OwnedAccount(Legacy);

    // --- triggers ---
    POST   "/api/{v3}/trigger_instances/{slug}/upsert"     => TriggerUpsert;
    GET    "/api/{v3}/trigger_instances/active"            => ListTriggers;
    PATCH  "/api/{v3}/trigger_instances/manage/{id}"       => OwnedTrigger;
    DELETE "/api/{v3}/trigger_instances/manage/{id}"       => OwnedTrigger;

    // --- MCP ---
    POST "/api/{v3}/mcp/servers/generate"                  => McpGenerate;
    // Streamable HTTP on the hosted endpoints Composio hands out, and the front door. No
    // DELETE on `/api/{v3}/mcp/{id}`: there it deletes the project's server configuration.
    POST   "/tool_router/{id}/mcp"                         => Mcp(McpTarget::Session);
    GET    "/tool_router/{id}/mcp"                         => Mcp(McpTarget::Session);
    DELETE "/tool_router/{id}/mcp"                         => Mcp(McpTarget::Session);
    POST   "/v3/mcp/{id}"                                  => Mcp(McpTarget::Server);
    GET    "/v3/mcp/{id}"                                  => Mcp(McpTarget::Server);
    DELETE "/v3/mcp/{id}"                                  => Mcp(McpTarget::Server);
    POST   "/api/{v3}/mcp/{id}"                            => Mcp(McpTarget::Server);
    POST   "/mcp"                                          => Mcp(McpTarget::FrontDoor);
    GET    "/mcp"                                          => Mcp(McpTarget::FrontDoor);
    DELETE "/mcp"                                          => Mcp(McpTarget::FrontDoor);

    // --- tool router sessions ---
    POST   "/api/{v3}/tool_router/session"                         => SessionCreate;
    GET    "/api/{v3}/tool_router/session/{id}"                    => OwnedSession(SessionCall::Other);
    PATCH  "/api/{v3}/tool_router/session/{id}"                    => OwnedSession(SessionCall::Other);
    DELETE "/api/{v3}/tool_router/session/{id}"                    => OwnedSession(SessionCall::Other);
    POST   "/api/{v3}/tool_router/session/{id}/execute"            => OwnedSession(SessionCall::Execute);
    POST   "/api/{v3}/tool_router/session/{id}/proxy_execute"      => OwnedSession(SessionCall::ProxyExecute);
    POST   "/api/{v3}/tool_router/session/{id}/execute_meta"       => OwnedSession(SessionCall::ExecuteMeta);
    POST   "/api/{v3}/tool_router/session/{id}/link"               => OwnedSession(SessionCall::Other);
    POST   "/api/{v3}/tool_router/session/{id}/search"             => OwnedSession(SessionCall::Other);
    GET    "/api/{v3}/tool_router/session/{id}/tools"              => OwnedSession(SessionCall::Other);
    GET    "/api/{v3}/tool_router/session/{id}/toolkits"           => OwnedSession(SessionCall::Other);
    GET    "/api/{v3}/tool_router/session/{id}/mounts/{mount}/items" => OwnedSession(SessionCall::Other);

    // --- files: the SDKs ask for a presigned URL, then upload straight to storage ---
    POST "/api/{v3}/files/upload/request"                  => FileUpload;

    // --- tenant-neutral catalogue (same answer for every user) ---
    GET "/api/{v3}/tools"                                  => Neutral;
    GET "/api/{v3}/tools/enum"                             => Neutral;
    GET "/api/{v3}/tools/{tool_slug}"                      => Neutral;
    GET "/api/{v3}/toolkits"                               => Neutral;
    GET "/api/{v3}/toolkits/categories"                    => Neutral;
    GET "/api/{v3}/toolkits/{slug}"                        => Neutral;
    GET "/api/{v3}/triggers_types"                         => Neutral;
    GET "/api/{v3}/triggers_types/list/enum"               => Neutral;
    GET "/api/{v3}/triggers_types/{slug}"                  => Neutral;
    GET "/api/{v3}/mcp/{id}"                               => Neutral;
    GET "/api/v2/actions"                                  => Neutral;
    GET "/api/v2/actions/{action}"                         => Neutral;
    GET "/api/v1/actions/list/enums"                       => Neutral;
    GET "/api/v1/apps"                                     => Neutral;
    GET "/api/v1/apps/{app}"                               => Neutral;
    GET "/api/v1/triggers"                                 => Neutral;

    // --- answered locally ---
    GET "/api/v1/client/auth/client_info"                  => ClientInfo;
};

/// Path segments Composio uses as collection or action names (from its wire reference,
/// `composio-wire.md` §2) that the table does not route. With the table's own literal
/// segments they are never captured by a parameter. Compared ASCII case-insensitively.
pub static RESERVED: &[&str] = &[
    "actions",
    "active_triggers",
    "advanced",
    "api_key_revocation",
    "api_keys",
    "app",
    "apps",
    "attach",
    "auth",
    "auth_configs",
    "callback_url",
    "changelog",
    "cli",
    "client",
    "complete_auth",
    "config_history",
    "connectedAccounts",
    "connected_accounts",
    "custom",
    "data",
    "delete",
    "disable",
    "download_url",
    "enable",
    "entity",
    "enum",
    "enums",
    "execute",
    "execute_meta",
    "fields",
    "files",
    "generate",
    "get.inputs",
    "info",
    "initiateConnection",
    "input",
    "instance",
    "instances",
    "integrations",
    "internal",
    "items",
    "keyring",
    "labs",
    "link",
    "list",
    "log",
    "logs",
    "manage",
    "migration",
    "mounts",
    "multi",
    "org",
    "project",
    "proxy",
    "realtime",
    "refresh",
    "reinitiate",
    "request",
    "required",
    "revoke",
    "scopes",
    "search",
    "servers",
    "session",
    "session_configs",
    "set_callback_url",
    "status",
    "sync",
    "team",
    "tool_execution",
    "tool_router",
    "toolkits",
    "tools",
    "transfer_keys",
    "trigger",
    "trigger_instances",
    "triggers",
    "triggers_types",
    "upload",
    "upload_url",
    "upsert",
    "usage",
    "webhook_endpoints",
    "webhook_subscriptions",
];

/// Whether `segment` may not be captured by a parameter: a literal segment of [`ROUTES`] or
/// one of [`RESERVED`].
pub fn is_reserved(segment: &str) -> bool {
    static NAMES: std::sync::LazyLock<std::collections::HashSet<String>> =
        std::sync::LazyLock::new(|| {
            ROUTES
                .iter()
                .flat_map(|r| r.pattern.split('/'))
                .filter(|s| !s.is_empty() && !s.starts_with('{'))
                .chain(RESERVED.iter().copied())
                .map(str::to_ascii_lowercase)
                .collect()
        });
    // Lower-cased on the stack: this runs for every captured segment of every request.
    let mut buf = [0u8; 32];
    let Some(dst) = buf.get_mut(..segment.len()) else {
        return false; // longer than any reserved name
    };
    dst.copy_from_slice(segment.as_bytes());
    dst.make_ascii_lowercase();
    std::str::from_utf8(dst).is_ok_and(|s| NAMES.contains(s))
}

/// Finds the route for `method` and a canonical `path` (see [`crate::path::check`]).
///
/// # Errors
/// [`Error::RouteNotAllowed`] when no row matches: deny by default.
pub fn classify<'a>(method: &Method, path: &'a str) -> Result<Matched<'a>, Error> {
    for route in ROUTES {
        if route.method != *method {
            continue;
        }
        if let Some(m) = match_pattern(route, path) {
            return Ok(m);
        }
    }
    Err(Error::RouteNotAllowed)
}

fn match_pattern<'a>(route: &'static Route, path: &'a str) -> Option<Matched<'a>> {
    let mut params = [""; MAX_PARAMS];
    let mut len = 0;
    let mut pat = route.pattern.split('/');
    let mut seg = path.split('/');
    loop {
        match (pat.next(), seg.next()) {
            (None, None) => return Some(Matched { route, params, len }),
            (Some(p), Some(s)) => {
                if p == "{v3}" {
                    if s != "v3" && s != "v3.1" {
                        return None;
                    }
                } else if p.starts_with('{') {
                    if s.is_empty() || len == MAX_PARAMS || is_reserved(s) {
                        return None;
                    }
                    params[len] = s;
                    len += 1;
                } else if p != s {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests;
