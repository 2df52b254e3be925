//! The demo data set of [`crate::Sandbox::with_demo_data`].
//!
//! | user | github | slack | gmail | notion |
//! | --- | --- | --- | --- | --- |
//! | alice | `ca_alice_github` ACTIVE | `ca_alice_slack` ACTIVE | `ca_alice_gmail` EXPIRED | `ca_alice_notion` INITIATED |
//! | bob | `ca_bob_github` ACTIVE | `ca_bob_slack` FAILED | `ca_bob_gmail` ACTIVE, disabled | – |
//! | carol | – | – | – | – |
//! | user-1 | `ca_abc123`, `ca-uuid-1` ACTIVE | – | – | – |
//!
//! `user-1` and the ids `ca_abc123`, `ca-uuid-1`, `ac_xyz`, `int-1`, `trs_1`, `ti_1`, `mcp_1`
//! are those of the recorded SDK captures, so that replaying them gets real answers.
//!
//! `composio_search` and `text_to_pdf` need a connection here (API key scheme), so that
//! gating by the right toolkit is observable; the `composio` meta tools and `hackernews` are
//! `no_auth`.

use serde_json::json;

use crate::model::{Account, Tool};
use crate::store::{
    self, AuthConfigRec, McpServerRec, SessionRec, Store, ToolkitRec, TriggerRec, TriggerTypeRec,
};

/// Creation time of the n-th demo record (fixed, so listings are reproducible).
fn at(n: u64) -> String {
    // 2026-01-01T00:00:00Z plus n minutes.
    store::rfc3339(1_767_225_600 + n * 60, 0)
}

const TOOLKITS: &[(&str, &str, Option<&str>, &str, &str)] = &[
    (
        "github",
        "GitHub",
        Some("OAUTH2"),
        "https://api.github.com",
        "developer-tools",
    ),
    (
        "slack",
        "Slack",
        Some("OAUTH2"),
        "https://slack.com/api",
        "communication",
    ),
    (
        "gmail",
        "Gmail",
        Some("OAUTH2"),
        "https://gmail.googleapis.com",
        "communication",
    ),
    (
        "notion",
        "Notion",
        Some("OAUTH2"),
        "https://api.notion.com/v1",
        "productivity",
    ),
    (
        "composio_search",
        "Composio Search",
        Some("API_KEY"),
        "https://search.composio.dev",
        "search",
    ),
    (
        "text_to_pdf",
        "Text To PDF",
        Some("API_KEY"),
        "https://pdf.composio.dev",
        "documents",
    ),
    (
        "composio",
        "Composio",
        None,
        "https://backend.composio.dev",
        "meta",
    ),
    (
        "hackernews",
        "Hacker News",
        None,
        "https://hacker-news.firebaseio.com/v0",
        "news",
    ),
];

const TOOLS: &[(&str, &str, bool)] = &[
    ("GITHUB_CREATE_ISSUE", "github", false),
    ("GITHUB_CREATE_AN_ISSUE", "github", false),
    ("GITHUB_GET_THE_AUTHENTICATED_USER", "github", false),
    (
        "GITHUB_STAR_A_REPOSITORY_FOR_THE_AUTHENTICATED_USER",
        "github",
        false,
    ),
    ("SLACK_SEND_MESSAGE", "slack", false),
    ("SLACK_LIST_ALL_CHANNELS", "slack", false),
    ("GMAIL_SEND_EMAIL", "gmail", false),
    ("GMAIL_REPLY_TO_THREAD", "gmail", false),
    ("GMAIL_FETCH_EMAILS", "gmail", false),
    ("NOTION_CREATE_PAGE", "notion", false),
    ("NOTION_SEARCH_NOTION_PAGE", "notion", false),
    (
        "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH",
        "composio_search",
        false,
    ),
    ("TEXT_TO_PDF_CONVERT_TEXT_TO_PDF", "text_to_pdf", false),
    ("COMPOSIO_SEARCH_TOOLS", "composio", true),
    ("COMPOSIO_MULTI_EXECUTE_TOOL", "composio", true),
    ("COMPOSIO_MANAGE_CONNECTIONS", "composio", true),
    ("COMPOSIO_GET_TOOL_SCHEMAS", "composio", true),
    ("COMPOSIO_PROXY_EXECUTE", "composio", true),
    ("HACKERNEWS_GET_FRONTPAGE", "hackernews", true),
    ("HACKERNEWS_GET_USER", "hackernews", true),
];

/// `(id, user, toolkit, status, disabled, status_reason)`.
type DemoAccount = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    Option<&'static str>,
);

const ACCOUNTS: &[DemoAccount] = &[
    ("ca_alice_github", "alice", "github", "ACTIVE", false, None),
    ("ca_alice_slack", "alice", "slack", "ACTIVE", false, None),
    (
        "ca_alice_gmail",
        "alice",
        "gmail",
        "EXPIRED",
        false,
        Some("Permanent auth error during token refresh"),
    ),
    (
        "ca_alice_notion",
        "alice",
        "notion",
        "INITIATED",
        false,
        None,
    ),
    ("ca_bob_github", "bob", "github", "ACTIVE", false, None),
    (
        "ca_bob_slack",
        "bob",
        "slack",
        "FAILED",
        false,
        Some("OAuth callback failed during token exchange"),
    ),
    (
        "ca_bob_gmail",
        "bob",
        "gmail",
        "ACTIVE",
        true,
        Some("Connection status updated by user"),
    ),
    ("ca_abc123", "user-1", "github", "ACTIVE", false, None),
    ("ca-uuid-1", "user-1", "github", "ACTIVE", false, None),
];

const TRIGGER_TYPES: &[(&str, &str, &str)] = &[
    ("GITHUB_COMMIT_EVENT", "github", "Commit Event"),
    ("GITHUB_STAR_ADDED_EVENT", "github", "Star Added Event"),
    ("SLACK_RECEIVE_MESSAGE", "slack", "Receive Message"),
    ("GMAIL_NEW_GMAIL_MESSAGE", "gmail", "New Gmail Message"),
];

/// The demo store.
pub(crate) fn store() -> Store {
    let mut s = Store::default();
    for (slug, name, scheme, base, category) in TOOLKITS {
        s.add_toolkit(ToolkitRec {
            slug: (*slug).into(),
            name: (*name).into(),
            auth_scheme: scheme.map(str::to_owned),
            base_url: (*base).into(),
            category: (*category).into(),
            description: format!("{name} (sandbox toolkit)."),
        });
        if let Some(scheme) = scheme {
            s.add_auth_config(auth_config(
                &format!("ac_{slug}"),
                slug,
                scheme,
                &format!("{name} (managed)"),
            ));
        }
    }
    // The captures' auth config and v1 integration, both GitHub.
    s.add_auth_config(auth_config(
        "ac_xyz",
        "github",
        "OAUTH2",
        "GitHub (captured)",
    ));
    s.add_auth_config(auth_config(
        "int-1",
        "github",
        "OAUTH2",
        "GitHub (captured v1)",
    ));
    for (slug, toolkit, no_auth) in TOOLS {
        s.add_tool(Tool::new(slug, toolkit, *no_auth));
    }
    for (n, (id, user, toolkit, status, disabled, reason)) in (1..).zip(ACCOUNTS) {
        let mut a = Account::new(id, user, toolkit, status);
        a.is_disabled = *disabled;
        a.status_reason = reason.map(str::to_owned);
        a.created_at = at(n);
        s.add_account(a);
    }
    for (slug, toolkit, name) in TRIGGER_TYPES {
        s.add_trigger_type(TriggerTypeRec {
            slug: (*slug).into(),
            toolkit: (*toolkit).into(),
            name: (*name).into(),
            description: format!("{name} (sandbox trigger)."),
        });
    }
    for (id, user, account) in [
        ("ti_1", "user-1", "ca_abc123"),
        ("ti_alice_commit", "alice", "ca_alice_github"),
    ] {
        s.add_trigger(TriggerRec {
            id: id.into(),
            slug: "GITHUB_COMMIT_EVENT".into(),
            user_id: user.into(),
            connected_account_id: account.into(),
            auth_config_id: "ac_github".into(),
            config: json!({"owner": "a", "repo": "b"}),
            disabled: false,
            created_at: at(100),
            updated_at: at(100),
        });
    }
    s.put_session(SessionRec {
        id: "trs_1".into(),
        user_id: "user-1".into(),
        config: json!({"toolkits": {"enabled": ["github"]}}),
        version: 1,
    });
    s.mcp_servers.insert(
        "mcp_1".into(),
        McpServerRec {
            id: "mcp_1".into(),
            name: "demo-github".into(),
            toolkits: vec!["github".into()],
            auth_config_ids: vec!["ac_github".into()],
            allowed_tools: vec![
                "GITHUB_CREATE_ISSUE".into(),
                "GITHUB_GET_THE_AUTHENTICATED_USER".into(),
            ],
            created_at: at(200),
            instances: Vec::new(),
        },
    );
    s
}

fn auth_config(id: &str, toolkit: &str, scheme: &str, name: &str) -> AuthConfigRec {
    AuthConfigRec {
        id: id.into(),
        toolkit: toolkit.into(),
        name: name.into(),
        auth_scheme: scheme.into(),
        managed: true,
        enabled: true,
        created_at: at(0),
    }
}
