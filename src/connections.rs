//! Connection gating: what Composio says about a subject's connected accounts, cached.
//!
//! Three questions are asked of Composio, each answer cached in a concurrent map with a TTL
//! and request coalescing (a burst of requests for one cold key makes one upstream lookup;
//! every waiter shares its answer, error included):
//! - which toolkit a tool belongs to (`GET /api/v3.1/tools/{slug}`; the same for every user,
//!   so cached long);
//! - the subject's accounts for a toolkit (`GET /api/v3.1/connected_accounts?user_ids=<subject>
//!   &toolkit_slugs=<toolkit>`, every page);
//! - whether one account id is the subject's (`...?user_ids=<subject>&connected_account_ids=<id>`).
//!
//! Ownership is always decided by what Composio returns for `user_ids=<subject>`, never by
//! reading a (deprecated) `user_id` back from an item. The caches only remember Composio's
//! answers for a while, so every replica behind a load balancer decides the same way. When a
//! lookup fails the gateway refuses (503), unless `serve_stale_secs` lets it use a recent
//! ACTIVE answer.
//!
//! Every slug and id a request supplies is checked against [`is_identifier`] before it
//! becomes part of a lookup URL (which carries the real project key), a cache key or a log
//! field: `../../V1/API_KEYS`, `X?user_ids=...` or escape codes never get that far.

use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::StatusCode;
use tokio::sync::OnceCell;

use crate::config::ConnectionsConfig;
use crate::error::{Error, GateKind, GateRefusal};
use crate::upstream::Upstream;

/// Pages followed at most for one (subject, toolkit) listing.
const MAX_PAGES: usize = 50;
/// Page size asked for.
const PAGE_LIMIT: usize = 100;

/// Longest slug or id accepted from a request.
pub const MAX_IDENTIFIER_LEN: usize = 128;

/// The grammar of every Composio slug and id the gateway passes on (tool and toolkit slugs,
/// connected account, session and trigger ids): 1 to 128 of `[A-Za-z0-9_-]`. Nothing that can
/// change a URL's path or query, or a log line, passes.
pub fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENTIFIER_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A printable stand-in for an identifier that failed [`is_identifier`], for messages: the
/// first 64 bytes with every byte outside the grammar replaced by `?`.
pub fn redact_identifier(s: &str) -> String {
    s.bytes()
        .take(64)
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

/// What the gateway knows of a tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolInfo {
    /// Toolkit slug, lower-case.
    pub toolkit: String,
    /// Display name of the toolkit, for messages.
    pub toolkit_name: String,
    /// The tool needs no connected account.
    pub no_auth: bool,
    /// The definition Composio answered (`GET /tools/{slug}`) with its hash, computed once
    /// when it was read, for the tool lock's verdict ([`crate::toollock`]); `None` when it
    /// was not read from there.
    pub definition: Option<Arc<crate::toollock::Hashed>>,
}

impl ToolInfo {
    /// The gate's view of a whole toolkit when no tool is named (a session's
    /// `proxy_execute`): the toolkit needs a connection.
    pub fn for_toolkit(toolkit: &str) -> Self {
        let toolkit = toolkit.to_ascii_lowercase();
        Self {
            toolkit_name: display_name(&toolkit),
            toolkit,
            no_auth: false,
            definition: None,
        }
    }
}

/// One connected account as Composio listed it for the subject.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Account {
    /// Account id.
    pub id: String,
    /// Toolkit slug, lower-case.
    pub toolkit: String,
    /// Composio status (`ACTIVE`, `EXPIRED`, ...).
    pub status: String,
    /// Disabled by the user or an admin.
    pub is_disabled: bool,
}

impl Account {
    /// Whether tools may run with this account.
    pub fn usable(&self) -> bool {
        self.status == "ACTIVE" && !self.is_disabled
    }
}

/// Counters for observability.
#[derive(Debug, Default)]
pub struct Stats {
    /// Answers served from cache.
    pub hits: AtomicU64,
    /// Lookups sent upstream.
    pub misses: AtomicU64,
    /// Requests that waited on another request's lookup.
    pub coalesced: AtomicU64,
    /// Entries evicted to respect the bound.
    pub evictions: AtomicU64,
    /// Stale answers served during an outage.
    pub stale: AtomicU64,
}

impl From<&Stats> for crate::metrics::CacheCounts {
    fn from(s: &Stats) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        Self {
            hits: s.hits.load(Relaxed),
            misses: s.misses.load(Relaxed),
            coalesced: s.coalesced.load(Relaxed),
            evictions: s.evictions.load(Relaxed),
            stale: s.stale.load(Relaxed),
        }
    }
}

type Accounts = Arc<[Account]>;
type StatusKey = (Arc<str>, String);

/// The gate.
pub struct Connections {
    upstream: Upstream,
    cfg: ConnectionsConfig,
    tools: Cache<String, Option<ToolInfo>>,
    status: Cache<StatusKey, Accounts>,
    owned: Cache<StatusKey, Option<Account>>,
    sessions: Cache<String, Option<String>>,
    stats: Arc<Stats>,
    /// `entitygate explain` without `--live`: Composio is not asked; what the decision would
    /// have asked is assumed satisfied and noted as a requirement.
    assume: Option<Assume>,
    /// The fleet (`[shared]`): invalidations are broadcast, cold status lookups single-flown.
    cluster: std::sync::OnceLock<Arc<crate::shared::Cluster>>,
}

/// The assumptions of an offline dry run, and the requirements they stand for.
struct Assume {
    subject: Arc<str>,
    notes: std::sync::Mutex<Vec<String>>,
    last_toolkit: std::sync::Mutex<Option<String>>,
}

impl Assume {
    fn note(&self, s: String) {
        let mut notes = self
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !notes.contains(&s) {
            notes.push(s);
        }
    }

    fn tool(&self, slug: &str, what: &str) -> ToolInfo {
        let toolkit = slug
            .split('_')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.note(format!(
            "the toolkit of {what} {slug} is Composio's; assumed `{toolkit}` from the slug (--live asks)"
        ));
        *self
            .last_toolkit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(toolkit.clone());
        ToolInfo {
            toolkit_name: display_name(&toolkit),
            // Composio's own tools need no connection.
            no_auth: toolkit == "composio",
            toolkit,
            definition: None,
        }
    }

    fn account(&self, id: &str, toolkit: &str) -> Account {
        Account {
            id: id.to_owned(),
            toolkit: toolkit.to_owned(),
            status: "ACTIVE".into(),
            is_disabled: false,
        }
    }
}

// === impl Connections ===

impl Connections {
    /// Builds the gate over `upstream`.
    pub fn new(upstream: Upstream, cfg: ConnectionsConfig) -> Self {
        let stats = Arc::new(Stats::default());
        Self {
            tools: Cache::new(cfg.max_entries, stats.clone()),
            status: Cache::new(cfg.max_entries, stats.clone()),
            owned: Cache::new(cfg.max_entries, stats.clone()),
            sessions: Cache::new(cfg.max_entries, stats.clone()),
            upstream,
            cfg,
            stats,
            assume: None,
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Joins the fleet: this cache's invalidations reach every replica, other replicas' reach
    /// it, and cold status lookups are made once for the fleet. Once per cache.
    pub fn attach(self: &Arc<Self>, cluster: &Arc<crate::shared::Cluster>) {
        if self.cluster.set(cluster.clone()).is_ok() {
            let weak: std::sync::Weak<Self> = Arc::downgrade(self);
            cluster.listen(weak);
        }
    }

    /// A gate that never asks Composio: for `entitygate explain` without `--live`, every
    /// lookup is assumed to succeed for `subject` and recorded as a requirement.
    pub(crate) fn assuming(upstream: Upstream, cfg: ConnectionsConfig, subject: Arc<str>) -> Self {
        let mut c = Self::new(upstream, cfg);
        c.assume = Some(Assume {
            subject,
            notes: std::sync::Mutex::new(Vec::new()),
            last_toolkit: std::sync::Mutex::new(None),
        });
        c
    }

    /// What an offline dry run assumed (empty for a live gate).
    pub(crate) fn assumptions(&self) -> Vec<String> {
        self.assume.as_ref().map_or_else(Vec::new, |a| {
            a.notes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether gating on connection status is on.
    pub fn gating(&self) -> bool {
        self.cfg.gate
    }

    fn positive_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.cache_ttl_secs)
    }

    fn negative_ttl(&self) -> Duration {
        Duration::from_secs(self.cfg.negative_ttl_secs)
    }

    /// The toolkit of `tool`, from Composio (cached long, the same for every user).
    ///
    /// # Errors
    /// [`Error::ToolNotFound`] when Composio does not know the tool;
    /// [`Error::ConnectionStatusUnavailable`] when it cannot be asked (unless the prefix
    /// fallback is configured).
    pub async fn tool(&self, tool: &str) -> Result<ToolInfo, Error> {
        if !is_identifier(tool) {
            return Err(Error::ToolNotFound(redact_identifier(tool)));
        }
        if let Some(a) = &self.assume {
            return Ok(a.tool(tool, "tool"));
        }
        let key = tool.to_ascii_uppercase();
        let long = Duration::from_secs(self.cfg.tool_ttl_secs);
        let neg = self.negative_ttl();
        let res = self
            .tools
            .get(
                key.clone(),
                |v| if v.is_some() { long } else { neg },
                || self.fetch_tool(key.clone()),
            )
            .await;
        match res {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(Error::ToolNotFound(tool.to_owned())),
            Err(e) if self.cfg.toolkit_prefix_fallback => {
                let prefix = tool
                    .split('_')
                    .next()
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if prefix.is_empty() {
                    return Err(e);
                }
                tracing::warn!(tool, toolkit = %prefix, "tool lookup failed; using prefix fallback");
                Ok(ToolInfo {
                    toolkit_name: display_name(&prefix),
                    toolkit: prefix,
                    no_auth: false,
                    definition: None,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch_tool(&self, slug: String) -> Result<Option<ToolInfo>, Error> {
        let (status, v) = self
            .upstream
            .get_json(&format!("/api/v3.1/tools/{slug}"))
            .await
            .map_err(|_| Error::ConnectionStatusUnavailable)?;
        if status == StatusCode::NOT_FOUND {
            // An action only the old API knows: its own metadata says which app it is of
            // (never the caller's `appName`).
            return self.fetch_legacy_action(&slug).await;
        }
        if status != StatusCode::OK {
            tracing::warn!(%status, tool = %slug, "tool lookup answered an error");
            return Err(Error::ConnectionStatusUnavailable);
        }
        let mut info = toolkit_of(&v, v["no_auth"].as_bool().unwrap_or(false))?;
        // Hashed here, once per cache fill (a definition read), never per execution.
        info.definition = crate::toollock::Hashed::of_v3(&v).map(Arc::new);
        Ok(Some(info))
    }

    /// `GET /api/v2/actions/{action}`: the old API's metadata of an action unknown to v3.1
    /// (`appKey`, else `appName`).
    async fn fetch_legacy_action(&self, slug: &str) -> Result<Option<ToolInfo>, Error> {
        let (status, v) = self
            .upstream
            .get_json(&format!("/api/v2/actions/{slug}"))
            .await
            .map_err(|_| Error::ConnectionStatusUnavailable)?;
        match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => return Ok(None),
            StatusCode::OK => {}
            _ => {
                tracing::warn!(%status, tool = %slug, "action lookup answered an error");
                return Err(Error::ConnectionStatusUnavailable);
            }
        }
        let toolkit = v["appKey"]
            .as_str()
            .or_else(|| v["appName"].as_str())
            .filter(|s| !s.is_empty())
            .ok_or(Error::ConnectionStatusUnavailable)?
            .to_ascii_lowercase();
        Ok(Some(ToolInfo {
            toolkit_name: display_name(&toolkit),
            toolkit,
            no_auth: v["no_auth"].as_bool().unwrap_or(false),
            definition: None,
        }))
    }

    /// The toolkit of trigger type `slug`, from Composio (`GET /api/v3.1/triggers_types/{slug}`,
    /// cached like tools). A trigger subscribes through a connection: never `no_auth`.
    ///
    /// # Errors
    /// [`Error::ToolNotFound`] when Composio does not know the trigger type;
    /// [`Error::ConnectionStatusUnavailable`] when it cannot be asked.
    pub async fn trigger(&self, slug: &str) -> Result<ToolInfo, Error> {
        if !is_identifier(slug) {
            return Err(Error::ToolNotFound(redact_identifier(slug)));
        }
        if let Some(a) = &self.assume {
            return Ok(a.tool(slug, "trigger type"));
        }
        // Tool keys are upper-cased whole, so this lower-case prefix never meets a tool's key.
        let key = format!("trigger:{}", slug.to_ascii_uppercase());
        let long = Duration::from_secs(self.cfg.tool_ttl_secs);
        let neg = self.negative_ttl();
        let upper = slug.to_ascii_uppercase();
        let res = self
            .tools
            .get(
                key,
                |v| if v.is_some() { long } else { neg },
                || async move {
                    let (status, v) = self
                        .upstream
                        .get_json(&format!("/api/v3.1/triggers_types/{upper}"))
                        .await
                        .map_err(|_| Error::ConnectionStatusUnavailable)?;
                    if status == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    if status != StatusCode::OK {
                        tracing::warn!(%status, trigger = %upper, "trigger type lookup answered an error");
                        return Err(Error::ConnectionStatusUnavailable);
                    }
                    // A trigger always subscribes through a connection: never `no_auth`.
                    toolkit_of(&v, false).map(Some)
                },
            )
            .await?;
        res.ok_or_else(|| Error::ToolNotFound(slug.to_owned()))
    }

    /// The subject's accounts for `toolkit`.
    ///
    /// # Errors
    /// [`Error::ConnectionStatusUnavailable`] when Composio cannot be asked and no stale
    /// answer is allowed.
    pub async fn accounts(&self, subject: &Arc<str>, toolkit: &str) -> Result<Accounts, Error> {
        if !is_identifier(toolkit) {
            return Err(Error::ToolNotFound(redact_identifier(toolkit)));
        }
        if let Some(a) = &self.assume {
            a.note(format!(
                "needs a usable (ACTIVE, enabled) connection of `{toolkit}` for {subject}"
            ));
            return Ok(vec![a.account("(assumed)", toolkit)].into());
        }
        let key = (subject.clone(), toolkit.to_ascii_lowercase());
        let (pos, neg) = (self.positive_ttl(), self.negative_ttl());
        let stale = Duration::from_secs(self.cfg.serve_stale_secs);
        self.status
            .get_or_stale(
                key.clone(),
                |v: &Accounts| {
                    if v.iter().any(Account::usable) {
                        pos
                    } else {
                        neg
                    }
                },
                |v: &Accounts, age| age < stale && v.iter().any(Account::usable),
                || async {
                    match self.cluster.get() {
                        None => {
                            self.fetch_accounts(key.0.clone(), key.1.clone(), None)
                                .await
                        }
                        Some(c) => {
                            let fetch = || async {
                                let v = self.fetch_accounts(key.0.clone(), key.1.clone(), None);
                                v.await.map(|a| a.to_vec())
                            };
                            crate::shared::flight::status(c, &key.0, &key.1, fetch)
                                .await
                                .map(Accounts::from)
                        }
                    }
                },
            )
            .await
    }

    /// The account `id` if it is the subject's, with its status.
    ///
    /// # Errors
    /// [`Error::ConnectionStatusUnavailable`] when Composio cannot be asked.
    pub async fn owned_account(
        &self,
        subject: &Arc<str>,
        id: &str,
    ) -> Result<Option<Account>, Error> {
        if !is_identifier(id) {
            // No such account can exist: nothing to ask Composio.
            return Ok(None);
        }
        if let Some(a) = &self.assume {
            let toolkit = a
                .last_toolkit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            a.note(format!(
                "needs connected account {id} to be {subject}'s, usable, and of toolkit `{toolkit}`"
            ));
            return Ok(Some(a.account(id, &toolkit)));
        }
        let key = (subject.clone(), id.to_owned());
        let (pos, neg) = (self.positive_ttl(), self.negative_ttl());
        self.owned
            .get(
                key.clone(),
                |v| if v.is_some() { pos } else { neg },
                || async {
                    let all = self
                        .fetch_accounts(key.0.clone(), String::new(), Some(key.1.clone()))
                        .await?;
                    Ok(all.iter().find(|a| a.id == key.1).cloned())
                },
            )
            .await
    }

    /// Who owns tool router session `id`, per Composio (`config.user_id`). Sessions never
    /// change owner, so a positive answer is kept for the tool TTL.
    ///
    /// # Errors
    /// [`Error::ConnectionStatusUnavailable`] when Composio cannot be asked.
    pub async fn session_owner(&self, id: &str) -> Result<Option<String>, Error> {
        if !is_identifier(id) {
            return Ok(None);
        }
        if let Some(a) = &self.assume {
            a.note(format!(
                "needs tool router session {id} to be {}'s",
                a.subject
            ));
            return Ok(Some(a.subject.to_string()));
        }
        let long = Duration::from_secs(self.cfg.tool_ttl_secs);
        let neg = self.negative_ttl();
        let id = id.to_owned();
        self.sessions
            .get(
                id.clone(),
                |v| if v.is_some() { long } else { neg },
                || async {
                    let (status, v) = self
                        .upstream
                        .get_json(&format!("/api/v3.1/tool_router/session/{id}"))
                        .await
                        .map_err(|_| Error::ConnectionStatusUnavailable)?;
                    match status {
                        StatusCode::OK => Ok(v["config"]["user_id"]
                            .as_str()
                            .or_else(|| v["user_id"].as_str())
                            .map(str::to_owned)),
                        StatusCode::NOT_FOUND => Ok(None),
                        _ => Err(Error::ConnectionStatusUnavailable),
                    }
                },
            )
            .await
    }

    /// Remembers a session that Composio just created for `subject`.
    pub fn remember_session(&self, id: &str, subject: &str) {
        if !is_identifier(id) {
            return;
        }
        self.sessions.put(id.to_owned(), Some(subject.to_owned()));
    }

    /// Every connected account of `subject`, as Composio lists it now (uncached; for the
    /// console's User page).
    ///
    /// # Errors
    /// [`Error::ConnectionStatusUnavailable`] when Composio cannot be asked.
    pub async fn list_accounts(&self, subject: &str) -> Result<Accounts, Error> {
        self.fetch_accounts(Arc::from(subject), String::new(), None)
            .await
    }

    async fn fetch_accounts(
        &self,
        subject: Arc<str>,
        toolkit: String,
        account: Option<String>,
    ) -> Result<Accounts, Error> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            // Built before the await: the serializer is not `Send`.
            let url = {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.append_pair("user_ids", &subject);
                if !toolkit.is_empty() {
                    q.append_pair("toolkit_slugs", &toolkit);
                }
                if let Some(id) = &account {
                    q.append_pair("connected_account_ids", id);
                }
                q.append_pair("limit", &PAGE_LIMIT.to_string());
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
                format!("/api/v3.1/connected_accounts?{}", q.finish())
            };
            let (status, v) = self
                .upstream
                .get_json(&url)
                .await
                .map_err(|_| Error::ConnectionStatusUnavailable)?;
            if status != StatusCode::OK {
                tracing::warn!(%status, "connection status lookup answered an error");
                return Err(Error::ConnectionStatusUnavailable);
            }
            let items = v["items"]
                .as_array()
                .ok_or(Error::ConnectionStatusUnavailable)?;
            for item in items {
                let Some(id) = item["id"].as_str() else {
                    continue;
                };
                out.push(Account {
                    id: id.to_owned(),
                    toolkit: item["toolkit"]["slug"]
                        .as_str()
                        .unwrap_or(&toolkit)
                        .to_ascii_lowercase(),
                    status: item["status"]
                        .as_str()
                        .unwrap_or("UNKNOWN")
                        .to_ascii_uppercase(),
                    is_disabled: item["is_disabled"].as_bool().unwrap_or(false),
                });
            }
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() && !items.is_empty() => cursor = Some(c.to_owned()),
                _ => return Ok(out.into()),
            }
        }
        tracing::warn!(subject = %subject, toolkit, "connected account listing did not end");
        Err(Error::ConnectionStatusUnavailable)
    }

    /// The refusal for a toolkit whose accounts are all unusable (or absent).
    pub fn refusal(&self, info: &ToolInfo, accounts: &[Account]) -> Error {
        let (kind, status) = classify(accounts);
        let m = &self.cfg.messages;
        let template = match kind {
            GateKind::NotConnected => &m.not_connected,
            GateKind::Expired => &m.expired,
            GateKind::Inactive => &m.inactive,
            GateKind::Pending => &m.pending,
        };
        let message = template
            .replace("{toolkit}", &info.toolkit_name)
            .replace("{settings}", &self.cfg.settings_hint);
        Error::Gate(Box::new(GateRefusal {
            kind,
            toolkit: info.toolkit.clone(),
            connection_status: status,
            message,
        }))
    }

    /// Forgets what is known of `subject`'s connection to `toolkit` (after Composio refused
    /// an execution, or an expiry event).
    /// With `[shared]`, every replica forgets it too.
    pub fn invalidate(&self, subject: &str, toolkit: &str) {
        let toolkit = toolkit.to_ascii_lowercase();
        self.forget_status(subject, &toolkit);
        if let Some(c) = self.cluster.get() {
            c.broadcast(crate::shared::Message::Status {
                subject: subject.to_owned(),
                toolkit,
            });
        }
    }

    /// Forgets everything known of `subject`'s connections (after a connection-changing call).
    /// With `[shared]`, every replica forgets it too.
    pub fn invalidate_subject(&self, subject: &str) {
        self.forget_subject(subject);
        if let Some(c) = self.cluster.get() {
            c.broadcast(crate::shared::Message::Subject {
                subject: subject.to_owned(),
            });
        }
    }

    /// Forgets what is known of `tool` (its toolkit). With `[shared]`, every replica forgets
    /// it too.
    pub fn invalidate_tool(&self, tool: &str) {
        self.forget_tool(tool);
        if let Some(c) = self.cluster.get() {
            c.broadcast(crate::shared::Message::Tool {
                slug: tool.to_owned(),
            });
        }
    }

    fn forget_status(&self, subject: &str, toolkit: &str) {
        self.status
            .retain(|(s, t)| !(&**s == subject && *t == toolkit));
        self.owned.retain(|(s, _)| &**s != subject);
    }

    fn forget_subject(&self, subject: &str) {
        self.status.retain(|(s, _)| &**s != subject);
        self.owned.retain(|(s, _)| &**s != subject);
    }

    fn forget_tool(&self, tool: &str) {
        let key = tool.to_ascii_uppercase();
        let trigger = format!("trigger:{key}");
        self.tools.retain(|k| *k != key && *k != trigger);
    }

    /// Forgets every cached answer (another replica's messages may have been missed).
    fn forget_everything(&self) {
        self.status.retain(|_| false);
        self.owned.retain(|_| false);
        self.tools.retain(|_| false);
        self.sessions.retain(|_| false);
    }
}

impl crate::shared::Listener for Connections {
    fn apply(&self, msg: &crate::shared::Message) {
        use crate::shared::Message;
        match msg {
            Message::Status { subject, toolkit } => {
                self.forget_status(subject, &toolkit.to_ascii_lowercase());
            }
            Message::Subject { subject } => self.forget_subject(subject),
            Message::Tool { slug } => self.forget_tool(slug),
            Message::Everything => self.forget_everything(),
            Message::DenyRulesChanged | Message::Note { .. } => {}
        }
    }

    fn resync(&self) {
        self.forget_everything();
    }
}

/// Which refusal a set of unusable accounts means, and the status to report.
fn classify(accounts: &[Account]) -> (GateKind, String) {
    if accounts.is_empty() {
        return (GateKind::NotConnected, "NONE".to_owned());
    }
    let pending = |a: &Account| matches!(a.status.as_str(), "INITIATED" | "INITIALIZING");
    if accounts.iter().all(|a| pending(a) && !a.is_disabled) {
        return (GateKind::Pending, accounts[0].status.clone());
    }
    if let Some(a) = accounts
        .iter()
        .find(|a| a.status == "INACTIVE" && !a.is_disabled)
    {
        if accounts
            .iter()
            .all(|b| b.status == "INACTIVE" || pending(b))
        {
            return (GateKind::Inactive, a.status.clone());
        }
    }
    let worst = accounts
        .iter()
        .find(|a| !pending(a))
        .map(|a| {
            if a.is_disabled && a.status == "ACTIVE" {
                "DISABLED".to_owned()
            } else {
                a.status.clone()
            }
        })
        .unwrap_or_else(|| "EXPIRED".to_owned());
    (GateKind::Expired, worst)
}

/// The toolkit a v3.1 tool or trigger type belongs to, from Composio's `toolkit` object; an
/// answer without one is unusable (the decision needs the toolkit).
fn toolkit_of(v: &serde_json::Value, no_auth: bool) -> Result<ToolInfo, Error> {
    let toolkit = v["toolkit"]["slug"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or(Error::ConnectionStatusUnavailable)?
        .to_ascii_lowercase();
    let toolkit_name = v["toolkit"]["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| display_name(&toolkit));
    Ok(ToolInfo {
        toolkit,
        toolkit_name,
        no_auth,
        definition: None,
    })
}

/// `slack` -> `Slack`, `composio_search` -> `Composio Search`.
pub(crate) fn display_name(slug: &str) -> String {
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

/// A concurrent cache with TTLs, a bound, and coalesced fills.
struct Cache<K, V> {
    map: DashMap<K, Arc<Slot<V>>>,
    max: usize,
    stats: Arc<Stats>,
}

struct Slot<V> {
    cell: OnceCell<Result<(V, Instant), Error>>,
    /// The previous good answer, for serve-stale.
    previous: Option<(V, Instant)>,
}

impl<V> Slot<V> {
    fn new(previous: Option<(V, Instant)>) -> Arc<Self> {
        Arc::new(Self {
            cell: OnceCell::new(),
            previous,
        })
    }

    /// Whether the slot serves as it is: a lookup still in flight, or a value within `ttl`.
    fn usable(&self, ttl: &impl Fn(&V) -> Duration) -> bool {
        match self.cell.get() {
            None => true,
            Some(Ok((v, at))) => at.elapsed() < ttl(v),
            Some(Err(_)) => false,
        }
    }
}

// === impl Cache ===

impl<K, V> Cache<K, V>
where
    K: Eq + Hash + Clone,
    V: Clone,
{
    fn new(max: usize, stats: Arc<Stats>) -> Self {
        Self {
            map: DashMap::new(),
            max,
            stats,
        }
    }

    async fn get<F, Fut>(&self, key: K, ttl: impl Fn(&V) -> Duration, fetch: F) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, Error>>,
    {
        self.get_or_stale(key, ttl, |_, _| false, fetch).await
    }

    async fn get_or_stale<F, Fut>(
        &self,
        key: K,
        ttl: impl Fn(&V) -> Duration,
        stale_ok: impl Fn(&V, Duration) -> bool,
        fetch: F,
    ) -> Result<V, Error>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, Error>>,
    {
        let (slot, inserted) = self.slot(&key, &ttl);
        if inserted && self.map.len() > self.max {
            self.evict(&ttl);
        }
        if let Some(Ok((v, _))) = slot.cell.get() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v.clone());
        }
        let mut led = false;
        let result = slot
            .cell
            .get_or_init(|| {
                led = true;
                self.stats.misses.fetch_add(1, Ordering::Relaxed);
                async { fetch().await.map(|v| (v, Instant::now())) }
            })
            .await;
        if !led {
            self.stats.coalesced.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok((v, _)) => Ok(v.clone()),
            Err(e) => {
                // Errors are shared by the burst that waited for them, never cached beyond it.
                self.map.remove_if(&key, |_, s| Arc::ptr_eq(s, &slot));
                if let Some((v, at)) = &slot.previous {
                    if stale_ok(v, at.elapsed()) {
                        self.stats.stale.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("status lookup failed; serving a recent ACTIVE answer");
                        return Ok(v.clone());
                    }
                }
                Err(e.clone())
            }
        }
    }

    /// The slot for `key`: the current one if fresh or still filling, else a new one.
    fn slot(&self, key: &K, ttl: &impl Fn(&V) -> Duration) -> (Arc<Slot<V>>, bool) {
        // The common case, a fresh entry or a lookup in flight, under the shard's read lock
        // and without cloning the key; replacing an entry takes the write lock below.
        if let Some(current) = self.map.get(key) {
            if current.usable(ttl) {
                return (current.clone(), false);
            }
        }
        match self.map.entry(key.clone()) {
            Entry::Occupied(mut e) => {
                let current = e.get();
                if current.usable(ttl) {
                    return (current.clone(), false);
                }
                // Stale or failed: a new slot, keeping the last good answer for serve-stale.
                let previous = match current.cell.get() {
                    Some(Ok((v, at))) => Some((v.clone(), *at)),
                    _ => current.previous.clone(),
                };
                let fresh = Slot::new(previous);
                e.insert(fresh.clone());
                (fresh, false)
            }
            Entry::Vacant(e) => {
                let fresh = Slot::new(None);
                e.insert(fresh.clone());
                (fresh, true)
            }
        }
    }

    /// Drops expired entries, then, if still over the bound, arbitrary ones down to 90%.
    fn evict(&self, ttl: &impl Fn(&V) -> Duration) {
        let before = self.map.len();
        self.map.retain(|_, s| match s.cell.get() {
            Some(Ok((v, at))) => at.elapsed() < ttl(v),
            Some(Err(_)) => false,
            None => true,
        });
        let target = self.max - self.max / 10;
        if self.map.len() > target {
            let excess = self.map.len() - target;
            let victims: Vec<K> = self
                .map
                .iter()
                .filter(|e| e.value().cell.initialized())
                .take(excess)
                .map(|e| e.key().clone())
                .collect();
            for k in victims {
                self.map.remove(&k);
            }
        }
        let evicted = before.saturating_sub(self.map.len());
        self.stats
            .evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
    }

    fn put(&self, key: K, v: V) {
        let slot = Slot::new(None);
        let _ = slot.cell.set(Ok((v, Instant::now())));
        self.map.insert(key, slot);
    }

    fn retain(&self, keep: impl Fn(&K) -> bool) {
        self.map.retain(|k, _| keep(k));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests;
