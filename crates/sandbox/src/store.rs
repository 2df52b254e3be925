//! The sandbox's state and its queries: accounts (with filters and cursor pagination),
//! tools, toolkits, auth configs, sessions, trigger instances and MCP servers.

use std::collections::{BTreeMap, HashMap};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;

use crate::model::{Account, Tool};

/// Everything the fake API reads and writes.
#[derive(Debug, Default)]
pub(crate) struct Store {
    /// Ordering key for new records; list order and cursors are built on it.
    seq: u64,
    /// Counter for generated ids.
    ids: u64,
    accounts: BTreeMap<u64, AccountRec>,
    account_keys: HashMap<String, u64>,
    pub(crate) tools: BTreeMap<String, Tool>,
    pub(crate) toolkits: BTreeMap<String, ToolkitRec>,
    pub(crate) auth_configs: BTreeMap<String, AuthConfigRec>,
    sessions: HashMap<String, SessionRec>,
    pub(crate) triggers: BTreeMap<u64, TriggerRec>,
    pub(crate) trigger_types: BTreeMap<String, TriggerTypeRec>,
    pub(crate) mcp_servers: BTreeMap<String, McpServerRec>,
    /// Actions only the old API knows (`/api/v2/actions/{action}` answers; `v3.1/tools` does
    /// not), as some retired actions are.
    pub(crate) legacy_actions: BTreeMap<String, Tool>,
    /// Accounts whose token the provider revoked: still `ACTIVE` here, as at Composio, but
    /// every tool run with them fails with the provider's 401.
    pub(crate) revoked_at_provider: std::collections::HashSet<String>,
    /// Changes to tools' definitions (a test's or the demo's "rug pull"), by upper-case slug:
    /// an object of v3 fields (`description`, `input_parameters`, ...) laid over every
    /// rendering of the tool (v3, v2, MCP, session search).
    pub(crate) definition_patches: HashMap<String, serde_json::Value>,
}

/// An account and the fields only the API shows.
#[derive(Debug, Clone)]
pub(crate) struct AccountRec {
    pub(crate) acc: Account,
    pub(crate) updated_at: String,
    pub(crate) alias: Option<String>,
}

/// A toolkit of the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct ToolkitRec {
    pub(crate) slug: String,
    pub(crate) name: String,
    /// `None` for toolkits that need no connection.
    pub(crate) auth_scheme: Option<String>,
    pub(crate) base_url: String,
    pub(crate) category: String,
    pub(crate) description: String,
}

/// An auth config (v1 "integration").
#[derive(Debug, Clone)]
pub(crate) struct AuthConfigRec {
    pub(crate) id: String,
    pub(crate) toolkit: String,
    pub(crate) name: String,
    pub(crate) auth_scheme: String,
    pub(crate) managed: bool,
    pub(crate) enabled: bool,
    pub(crate) created_at: String,
}

/// A tool-router session.
#[derive(Debug, Clone)]
pub(crate) struct SessionRec {
    pub(crate) id: String,
    pub(crate) user_id: String,
    /// The normalised `config` object of the session responses (without `user_id`).
    pub(crate) config: Value,
    pub(crate) version: u64,
}

/// A trigger instance.
#[derive(Debug, Clone)]
pub(crate) struct TriggerRec {
    pub(crate) id: String,
    pub(crate) slug: String,
    pub(crate) user_id: String,
    pub(crate) connected_account_id: String,
    pub(crate) auth_config_id: String,
    pub(crate) config: Value,
    pub(crate) disabled: bool,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
}

/// A trigger type of the catalogue.
#[derive(Debug, Clone)]
pub(crate) struct TriggerTypeRec {
    pub(crate) slug: String,
    pub(crate) toolkit: String,
    pub(crate) name: String,
    pub(crate) description: String,
}

/// A hosted MCP server configuration.
#[derive(Debug, Clone)]
pub(crate) struct McpServerRec {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) toolkits: Vec<String>,
    pub(crate) auth_config_ids: Vec<String>,
    pub(crate) allowed_tools: Vec<String>,
    pub(crate) created_at: String,
    /// `(instance id, user id)`.
    pub(crate) instances: Vec<(String, String)>,
}

/// Which accounts a listing wants. `None` means "no filter".
#[derive(Debug, Clone, Default)]
pub(crate) struct AccountFilter {
    pub(crate) user_ids: Option<Vec<String>>,
    pub(crate) toolkits: Option<Vec<String>>,
    pub(crate) statuses: Option<Vec<String>>,
    pub(crate) ids: Option<Vec<String>>,
    pub(crate) auth_config_ids: Option<Vec<String>>,
    /// v1 `showActiveOnly`: `ACTIVE` and enabled only.
    pub(crate) active_only: bool,
    /// v1 hides disabled accounts unless `showDisabled=true`; v3 shows them.
    pub(crate) hide_disabled: bool,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub(crate) struct Page<T> {
    pub(crate) items: Vec<T>,
    pub(crate) next_cursor: Option<String>,
    pub(crate) total_items: usize,
    pub(crate) total_pages: usize,
    pub(crate) current_page: usize,
}

// === impl AccountFilter ===

impl AccountFilter {
    fn matches(&self, a: &Account) -> bool {
        fn any(list: &Option<Vec<String>>, f: impl Fn(&str) -> bool) -> bool {
            list.as_ref().is_none_or(|l| l.iter().any(|v| f(v)))
        }
        any(&self.user_ids, |u| u == a.user_id)
            && any(&self.toolkits, |t| t.eq_ignore_ascii_case(&a.toolkit))
            && any(&self.statuses, |s| s.eq_ignore_ascii_case(&a.status))
            && any(&self.ids, |i| i == a.id)
            && any(&self.auth_config_ids, |i| i == a.auth_config_id)
            && (!self.active_only || a.is_usable())
            && (!self.hide_disabled || !a.is_disabled)
    }
}

// === impl Store ===

impl Store {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A fresh id `{prefix}_sbx{n}`.
    pub(crate) fn new_id(&mut self, prefix: &str) -> String {
        self.ids += 1;
        format!("{prefix}_sbx{:06}", self.ids)
    }

    // --- catalogue ---

    pub(crate) fn add_toolkit(&mut self, tk: ToolkitRec) {
        self.toolkits.insert(tk.slug.clone(), tk);
    }

    /// Adds (or replaces) a hosted MCP server serving `toolkits` (created if unknown), all
    /// their tools or only `allowed_tools` when not empty.
    pub(crate) fn add_mcp_server(
        &mut self,
        id: &str,
        name: &str,
        toolkits: &[&str],
        allowed_tools: &[&str],
    ) {
        for tk in toolkits {
            self.ensure_toolkit(tk);
        }
        self.mcp_servers.insert(
            id.to_owned(),
            McpServerRec {
                id: id.to_owned(),
                name: name.to_owned(),
                toolkits: toolkits.iter().map(|t| t.to_ascii_lowercase()).collect(),
                auth_config_ids: toolkits.iter().map(|t| format!("ac_{t}")).collect(),
                allowed_tools: allowed_tools
                    .iter()
                    .map(|t| t.to_ascii_uppercase())
                    .collect(),
                created_at: now_rfc3339(),
                instances: Vec::new(),
            },
        );
    }

    /// The toolkit, created with defaults when unknown.
    pub(crate) fn ensure_toolkit(&mut self, slug: &str) -> &ToolkitRec {
        let slug = slug.to_ascii_lowercase();
        self.toolkits
            .entry(slug.clone())
            .or_insert_with(|| ToolkitRec {
                name: title_case(&slug),
                auth_scheme: Some("OAUTH2".into()),
                base_url: format!("https://api.{slug}.example"),
                category: "productivity".into(),
                description: format!("The {slug} toolkit (sandbox)."),
                slug,
            })
    }

    pub(crate) fn add_tool(&mut self, t: Tool) {
        self.ensure_toolkit(&t.toolkit);
        self.tools.insert(t.slug.clone(), t);
    }

    pub(crate) fn tool(&self, slug: &str) -> Option<&Tool> {
        self.tools.get(&slug.to_ascii_uppercase())
    }

    pub(crate) fn add_legacy_action(&mut self, t: Tool) {
        self.ensure_toolkit(&t.toolkit);
        self.legacy_actions.insert(t.slug.clone(), t);
    }

    /// An action as the old API knows it: any tool, or a legacy-only action.
    pub(crate) fn action(&self, slug: &str) -> Option<&Tool> {
        let key = slug.to_ascii_uppercase();
        self.tools
            .get(&key)
            .or_else(|| self.legacy_actions.get(&key))
    }

    pub(crate) fn add_auth_config(&mut self, ac: AuthConfigRec) {
        self.ensure_toolkit(&ac.toolkit);
        self.auth_configs.insert(ac.id.clone(), ac);
    }

    /// The auth config `id`, created for `toolkit` when unknown.
    fn ensure_auth_config(&mut self, id: &str, toolkit: &str) {
        if !self.auth_configs.contains_key(id) {
            let scheme = self
                .ensure_toolkit(toolkit)
                .auth_scheme
                .clone()
                .unwrap_or_else(|| "NO_AUTH".into());
            self.add_auth_config(AuthConfigRec {
                id: id.to_owned(),
                toolkit: toolkit.to_owned(),
                name: format!("{toolkit} auth config"),
                auth_scheme: scheme,
                managed: true,
                enabled: true,
                created_at: now_rfc3339(),
            });
        }
    }

    /// The first auth config of a toolkit, created (`ac_<toolkit>`) when there is none.
    pub(crate) fn default_auth_config(&mut self, toolkit: &str) -> String {
        let toolkit = toolkit.to_ascii_lowercase();
        if let Some(ac) = self.auth_configs.values().find(|ac| ac.toolkit == toolkit) {
            return ac.id.clone();
        }
        let id = format!("ac_{toolkit}");
        self.ensure_auth_config(&id, &toolkit);
        id
    }

    pub(crate) fn add_trigger_type(&mut self, t: TriggerTypeRec) {
        self.ensure_toolkit(&t.toolkit);
        self.trigger_types.insert(t.slug.clone(), t);
    }

    // --- accounts ---

    pub(crate) fn add_account(&mut self, a: Account) {
        self.ensure_toolkit(&a.toolkit);
        self.ensure_auth_config(&a.auth_config_id, &a.toolkit);
        let rec = AccountRec {
            updated_at: a.created_at.clone(),
            alias: None,
            acc: a,
        };
        if let Some(key) = self.account_keys.get(&rec.acc.id) {
            self.accounts.insert(*key, rec);
        } else {
            let key = self.next_seq();
            self.account_keys.insert(rec.acc.id.clone(), key);
            self.accounts.insert(key, rec);
        }
    }

    pub(crate) fn account(&self, id: &str) -> Option<&Account> {
        self.account_rec(id).map(|r| &r.acc)
    }

    pub(crate) fn account_rec(&self, id: &str) -> Option<&AccountRec> {
        self.account_keys.get(id).and_then(|k| self.accounts.get(k))
    }

    pub(crate) fn account_rec_mut(&mut self, id: &str) -> Option<&mut AccountRec> {
        let key = self.account_keys.get(id)?;
        self.accounts.get_mut(key)
    }

    pub(crate) fn all_accounts(&self) -> Vec<Account> {
        self.accounts.values().map(|r| r.acc.clone()).collect()
    }

    pub(crate) fn remove_account(&mut self, id: &str) -> bool {
        match self.account_keys.remove(id) {
            Some(key) => self.accounts.remove(&key).is_some(),
            None => false,
        }
    }

    pub(crate) fn set_status(&mut self, id: &str, status: &str, reason: Option<&str>) -> bool {
        match self.account_rec_mut(id) {
            Some(r) => {
                r.acc.status = status.to_ascii_uppercase();
                r.acc.status_reason = reason.map(str::to_owned);
                r.updated_at = now_rfc3339();
                true
            }
            None => false,
        }
    }

    pub(crate) fn set_disabled(&mut self, id: &str, disabled: bool) -> bool {
        match self.account_rec_mut(id) {
            Some(r) => {
                r.acc.is_disabled = disabled;
                r.updated_at = now_rfc3339();
                true
            }
            None => false,
        }
    }

    /// Accounts matching `filter`, oldest first or newest first.
    pub(crate) fn filter_accounts(
        &self,
        filter: &AccountFilter,
        desc: bool,
    ) -> Vec<(u64, &AccountRec)> {
        let it = self
            .accounts
            .iter()
            .filter(|(_, r)| filter.matches(&r.acc))
            .map(|(k, r)| (*k, r));
        if desc {
            it.rev().collect()
        } else {
            it.collect()
        }
    }

    /// The account a tool of `toolkit` runs with for `user`: the newest usable one.
    pub(crate) fn usable_account(&self, user: &str, toolkit: &str) -> Option<&Account> {
        self.accounts
            .values()
            .rev()
            .map(|r| &r.acc)
            .find(|a| a.user_id == user && a.toolkit.eq_ignore_ascii_case(toolkit) && a.is_usable())
    }

    /// Creates an account for `user` from auth config `ac`, answering its id.
    pub(crate) fn create_account(&mut self, user: &str, ac: &str, status: &str) -> Option<String> {
        let toolkit = self.auth_configs.get(ac)?.toolkit.clone();
        let id = self.new_id("ca");
        let mut a = Account::new(&id, user, &toolkit, status);
        a.auth_config_id = ac.to_owned();
        self.add_account(a);
        Some(id)
    }

    // --- sessions ---

    pub(crate) fn add_session(&mut self, id: &str, user: &str) {
        self.put_session(SessionRec {
            id: id.to_owned(),
            user_id: user.to_owned(),
            config: serde_json::json!({}),
            version: 1,
        });
    }

    pub(crate) fn put_session(&mut self, s: SessionRec) {
        self.sessions.insert(s.id.clone(), s);
    }

    pub(crate) fn session(&self, id: &str) -> Option<&SessionRec> {
        self.sessions.get(id)
    }

    pub(crate) fn remove_session(&mut self, id: &str) -> bool {
        self.sessions.remove(id).is_some()
    }

    pub(crate) fn session_user(&self, id: &str) -> Option<String> {
        self.sessions.get(id).map(|s| s.user_id.clone())
    }

    // --- triggers ---

    pub(crate) fn add_trigger(&mut self, t: TriggerRec) {
        let key = self.next_seq();
        self.triggers.insert(key, t);
    }

    pub(crate) fn trigger_mut(&mut self, id: &str) -> Option<&mut TriggerRec> {
        self.triggers.values_mut().find(|t| t.id == id)
    }

    pub(crate) fn remove_trigger(&mut self, id: &str) -> bool {
        let key = self
            .triggers
            .iter()
            .find(|(_, t)| t.id == id)
            .map(|(k, _)| *k);
        key.is_some_and(|k| self.triggers.remove(&k).is_some())
    }
}

// === pagination ===

/// Encodes a cursor pointing at the record with ordering key `key`.
pub(crate) fn encode_cursor(key: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("sbx:{key}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let raw = URL_SAFE_NO_PAD.decode(cursor.trim()).ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("sbx:")?
        .parse()
        .ok()
}

/// Cuts one page out of `keyed` (already in display order, keys ascending, or descending when
/// `desc`). A cursor points at the first record of its page; when that record is gone the
/// page starts at the next one in order, so no record is returned twice.
///
/// # Errors
/// When the cursor is not one this sandbox issued.
pub(crate) fn paginate<T>(
    keyed: Vec<(u64, T)>,
    cursor: Option<&str>,
    limit: usize,
    desc: bool,
) -> Result<Page<T>, String> {
    let limit = limit.max(1);
    let total_items = keyed.len();
    let start = match cursor {
        None => 0,
        Some(c) => {
            let at = decode_cursor(c).ok_or_else(|| format!("Invalid cursor: {c}"))?;
            keyed
                .iter()
                .position(|(k, _)| if desc { *k <= at } else { *k >= at })
                .unwrap_or(total_items)
        }
    };
    let next_cursor = keyed.get(start + limit).map(|(k, _)| encode_cursor(*k));
    let items = keyed
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(_, v)| v)
        .collect();
    Ok(Page {
        items,
        next_cursor,
        total_items,
        total_pages: total_items.div_ceil(limit),
        current_page: start / limit + 1,
    })
}

// === time and names ===

pub(crate) use crate::clock::{now_rfc3339, now_secs, rfc3339};

/// `github_app` -> `Github App` (how Composio names a toolkit it has no name for).
pub(crate) fn title_case(slug: &str) -> String {
    slug.split(['_', '-'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}
