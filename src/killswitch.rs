//! The kill switch: deny rules that operators add and lift at run time, without a reload.
//!
//! A rule refuses by subject, by `jti` (one token), everything, by toolkit, or by tool glob,
//! with a reason and an optional expiry. Subject, `jti` and "all" rules apply right after
//! authentication ([`KillSwitch::check_identity`]); toolkit and tool rules apply inside the
//! one decision on invocations ([`crate::invocation`]), so every carrier (REST, sessions,
//! nested meta tools, proxies, triggers, MCP `tools/call`) is covered by one check.
//!
//! The rule set is an immutable [`Snapshot`] behind an `ArcSwap`: a check is one lock-free
//! load and a few lookups, with no allocation; a change builds a new snapshot and swaps it
//! in. Rules are persisted in the embedded store (`[state] path`, redb) before they apply,
//! so they survive a restart; a rule stops applying at its expiry (and is dropped from the
//! store at the next change).
//!
//! # Sharing across replicas
//! The store is narrow on purpose: [`KillSwitch::add`], [`KillSwitch::remove`],
//! [`KillSwitch::replace_all`] and [`KillSwitch::subscribe`] (every local change, as a
//! [`Change`]). A shared backend (Redis) publishes what `subscribe` yields and calls
//! `replace_all` with the shared set whenever it learns one; `replace_all` persists the set
//! locally too, so a backend outage keeps the last known rules, and it does not notify
//! subscribers (no echo).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::error::Error;
use crate::toolpolicy::glob_matches;

pub(crate) mod shared;

/// Rule id -> the rule as JSON.
const RULES: TableDefinition<'_, &str, &str> = TableDefinition::new("deny_rules");

/// Longest reason kept.
const MAX_REASON: usize = 500;
/// Longest subject, toolkit, tool glob or jti.
const MAX_TARGET: usize = 512;
/// Most rules at once (a mass incident is handled with `all` or a toolkit rule).
pub const MAX_RULES: usize = 10_000;

/// What a rule refuses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Every request of this subject (as the audit trail names it, prefix included).
    Subject(String),
    /// Every request made with the token of this `jti`.
    Jti(String),
    /// Every tool invocation on this toolkit (Composio's toolkit of the tool).
    Toolkit(String),
    /// Every tool invocation whose slug matches this glob (`*` wildcard, case-insensitive).
    Tool(String),
    /// Every authenticated request.
    All(bool),
}

/// One deny rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Opaque id (`DELETE /deny/{id}`).
    pub id: String,
    /// What it refuses.
    #[serde(flatten)]
    pub target: Target,
    /// Why: shown to the refused caller and recorded in the audit trail.
    pub reason: String,
    /// Unix seconds when it was added.
    pub created_at: u64,
    /// Unix seconds when it stops applying, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

impl Rule {
    /// A new rule from an admin request body: exactly one of `subject`, `toolkit`, `tool`,
    /// `jti`, `all: true`, plus `reason` and optionally `expires_in_secs`.
    ///
    /// # Errors
    /// A message for the operator when the body is not such an object.
    pub fn from_request(body: &Value, now: u64) -> Result<Self, String> {
        let Value::Object(m) = body else {
            return Err("the body must be a JSON object".into());
        };
        let mut target = None;
        let mut reason = None;
        let mut expires_in = None;
        for (k, v) in m {
            let set = |t: Target, target: &mut Option<Target>| {
                if target.replace(t).is_some() {
                    Err("name exactly one of subject, toolkit, tool, jti, all".to_owned())
                } else {
                    Ok(())
                }
            };
            match (k.as_str(), v) {
                ("subject", Value::String(s)) => set(Target::Subject(text(k, s)?), &mut target)?,
                ("jti", Value::String(s)) => set(Target::Jti(text(k, s)?), &mut target)?,
                ("toolkit", Value::String(s)) => {
                    set(Target::Toolkit(toolkit(s)?), &mut target)?;
                }
                ("tool", Value::String(s)) => set(Target::Tool(tool_glob(s)?), &mut target)?,
                ("all", Value::Bool(true)) => set(Target::All(true), &mut target)?,
                ("reason", Value::String(s)) => reason = Some(s.trim().to_owned()),
                ("expires_in_secs", v) => {
                    expires_in =
                        Some(v.as_u64().filter(|n| *n > 0).ok_or(
                            "`expires_in_secs` must be a positive whole number of seconds",
                        )?);
                }
                _ => {
                    return Err(format!(
                        "unexpected field `{k}` (or a value of the wrong type)"
                    ))
                }
            }
        }
        let target = target.ok_or("name one of subject, toolkit, tool, jti, all: true")?;
        let reason = reason
            .filter(|r| !r.is_empty())
            .ok_or("a `reason` is required")?;
        if reason.len() > MAX_REASON || reason.chars().any(char::is_control) {
            return Err(format!(
                "`reason` must be one line of at most {MAX_REASON} bytes"
            ));
        }
        Ok(Self {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            target,
            reason,
            created_at: now,
            expires_at: expires_in.map(|s| now.saturating_add(s)),
        })
    }

    /// Whether the rule still applies at `now`.
    pub fn active(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// The fields of an audit event about this rule (`deny_added`, `deny_removed`,
    /// `deny_expired`).
    pub fn audit_fields(&self) -> Value {
        serde_json::json!({
            "rule_id": self.id,
            "rule": self.describe(),
            "reason": self.reason,
            "expires_at": self.expires_at,
        })
    }

    /// `kind=value`, for logs and audit lines.
    pub fn describe(&self) -> String {
        match &self.target {
            Target::Subject(s) => format!("subject={s}"),
            Target::Jti(s) => format!("jti={s}"),
            Target::Toolkit(s) => format!("toolkit={s}"),
            Target::Tool(s) => format!("tool={s}"),
            Target::All(_) => "all".to_owned(),
        }
    }
}

fn text(key: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_TARGET || s.chars().any(char::is_control) {
        return Err(format!("`{key}` must be 1 to {MAX_TARGET} printable bytes"));
    }
    Ok(s.to_owned())
}

fn toolkit(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > MAX_TARGET
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err("`toolkit` must be a toolkit slug (letters, digits, `_`, `-`)".into());
    }
    Ok(s.to_ascii_lowercase())
}

fn tool_glob(s: &str) -> Result<String, String> {
    if s.is_empty()
        || s.len() > MAX_TARGET
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '*')
    {
        return Err("`tool` must be a tool slug or glob (letters, digits, `_`, `*`)".into());
    }
    Ok(s.to_ascii_uppercase())
}

/// A local change to the rule set, for a shared backend to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A rule was added.
    Added(Rule),
    /// A rule was lifted.
    Removed(Rule),
}

/// The rules as the hot path reads them.
#[derive(Debug, Default)]
pub struct Snapshot {
    rules: Vec<Rule>,
    /// Index into `rules`.
    subjects: HashMap<String, usize>,
    jtis: HashMap<String, usize>,
    all: Option<usize>,
    toolkits: Vec<usize>,
    /// Index into `rules`, with the glob split at its `*`s.
    tools: Vec<(usize, Vec<String>)>,
    /// Whether any rule expires (else a check never reads the clock).
    any_expiry: bool,
}

impl Snapshot {
    fn new(mut rules: Vec<Rule>) -> Self {
        rules.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let mut s = Self {
            any_expiry: rules.iter().any(|r| r.expires_at.is_some()),
            ..Self::default()
        };
        for (i, r) in rules.iter().enumerate() {
            match &r.target {
                Target::Subject(v) => {
                    s.subjects.entry(v.clone()).or_insert(i);
                }
                Target::Jti(v) => {
                    s.jtis.entry(v.clone()).or_insert(i);
                }
                Target::All(_) => {
                    s.all.get_or_insert(i);
                }
                Target::Toolkit(_) => s.toolkits.push(i),
                Target::Tool(g) => s.tools.push((i, g.split('*').map(str::to_owned).collect())),
            }
        }
        s.rules = rules;
        s
    }

    /// The first active rule among `candidates`.
    fn first_active(&self, candidates: impl IntoIterator<Item = usize>) -> Option<&Rule> {
        let now = if self.any_expiry {
            crate::clock::unix_now()
        } else {
            0
        };
        candidates
            .into_iter()
            .filter_map(|i| self.rules.get(i))
            .find(|r| r.active(now))
    }
}

/// A failure of the rule store.
#[derive(Debug, thiserror::Error)]
#[error("kill switch store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// The kill switch: the current snapshot, the store behind it, and its subscribers.
pub struct KillSwitch {
    current: ArcSwap<Snapshot>,
    db: Option<Arc<Database>>,
    path: Option<PathBuf>,
    changes: broadcast::Sender<Change>,
    /// Serialises changes (read-modify-write of the snapshot and the store).
    writing: tokio::sync::Mutex<()>,
    /// Rules dropped because their expiry passed, not yet handed to [`KillSwitch::lapsed`].
    lapsed: std::sync::Mutex<Vec<Rule>>,
    /// The cluster these rules are synced with ([`shared::attach`]); dangling when none.
    fleet: std::sync::Mutex<std::sync::Weak<crate::shared::Cluster>>,
}

impl std::fmt::Debug for KillSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KillSwitch")
            .field("path", &self.path)
            .field("rules", &self.current.load().rules.len())
            .finish_non_exhaustive()
    }
}

impl KillSwitch {
    /// A kill switch that keeps its rules in memory only.
    pub fn in_memory() -> Self {
        Self::with(None, None, Vec::new())
    }

    /// Opens (creating if needed) the store at `path` and loads its rules.
    ///
    /// # Errors
    /// When the file cannot be opened (another process holds it, not a redb file) or read.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another process (a running gateway?)",
                path.display()
            )),
            other => StoreError(format!("{}: {other}", path.display())),
        })?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(RULES).map_err(err)?;
        txn.commit().map_err(err)?;
        let rules = {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(RULES).map_err(err)?;
            let mut rules = Vec::new();
            for entry in table.iter().map_err(err)? {
                let (id, json) = entry.map_err(err)?;
                match serde_json::from_str::<Rule>(json.value()) {
                    Ok(r) => rules.push(r),
                    // Fail closed would lock everyone out on a format change; the rule is
                    // named so the operator can add it again.
                    Err(e) => tracing::error!(id = id.value(), error = %e,
                        "unreadable deny rule in the store; skipped"),
                }
            }
            rules
        };
        Ok(Self::with(Some(Arc::new(db)), Some(path.to_owned()), rules))
    }

    fn with(db: Option<Arc<Database>>, path: Option<PathBuf>, rules: Vec<Rule>) -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::new(rules)),
            db,
            path,
            changes: broadcast::channel(256).0,
            writing: tokio::sync::Mutex::new(()),
            lapsed: std::sync::Mutex::new(Vec::new()),
            fleet: std::sync::Mutex::new(std::sync::Weak::new()),
        }
    }

    /// The store's file, if persisted.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The open `[state]` database, for other state kept in the same file (approvals): one
    /// process may open a redb file once.
    pub fn database(&self) -> Option<Arc<Database>> {
        self.db.clone()
    }

    // --- the hot path ---

    /// Refuses a request by its subject or token (`jti`), or when everything is denied.
    ///
    /// # Errors
    /// [`Error::DeniedByKillSwitch`] naming the rule and its reason.
    pub fn check_identity(&self, subject: &str, jti: Option<&str>) -> Result<(), Error> {
        let s = self.current.load();
        if s.rules.is_empty() {
            return Ok(());
        }
        let candidates = s
            .all
            .into_iter()
            .chain(s.subjects.get(subject).copied())
            .chain(jti.and_then(|j| s.jtis.get(j).copied()));
        s.first_active(candidates).map_or(Ok(()), refusal)
    }

    /// Refuses an invocation of `tool` by a tool glob rule.
    ///
    /// # Errors
    /// [`Error::DeniedByKillSwitch`].
    pub fn check_tool(&self, tool: &str) -> Result<(), Error> {
        let s = self.current.load();
        if s.tools.is_empty() {
            return Ok(());
        }
        let hits = s
            .tools
            .iter()
            .filter(|(_, g)| glob_matches(g, tool))
            .map(|(i, _)| *i);
        s.first_active(hits).map_or(Ok(()), refusal)
    }

    /// Refuses an invocation on `toolkit` by a toolkit rule.
    ///
    /// # Errors
    /// [`Error::DeniedByKillSwitch`].
    pub fn check_toolkit(&self, toolkit: &str) -> Result<(), Error> {
        let s = self.current.load();
        if s.toolkits.is_empty() {
            return Ok(());
        }
        let hits = s.toolkits.iter().copied().filter(|i| {
            matches!(&s.rules[*i].target, Target::Toolkit(t) if t.eq_ignore_ascii_case(toolkit))
        });
        s.first_active(hits).map_or(Ok(()), refusal)
    }

    // --- management ---

    /// The rules that apply now.
    pub fn rules(&self) -> Vec<Rule> {
        let now = crate::clock::unix_now();
        self.current
            .load()
            .rules
            .iter()
            .filter(|r| r.active(now))
            .cloned()
            .collect()
    }

    /// Adds `rule` (persisted first), and tells subscribers.
    ///
    /// # Errors
    /// When the store cannot be written or [`MAX_RULES`] would be exceeded; nothing changes.
    pub async fn add(&self, rule: Rule) -> Result<(), StoreError> {
        let _one = self.writing.lock().await;
        let mut rules = self.rules();
        if rules.len() >= MAX_RULES {
            return Err(StoreError(format!("at most {MAX_RULES} deny rules")));
        }
        rules.retain(|r| r.id != rule.id);
        rules.push(rule.clone());
        self.store(rules).await?;
        let _ = self.changes.send(Change::Added(rule));
        Ok(())
    }

    /// Lifts the rule `id`; `None` when there is no such (active) rule.
    ///
    /// # Errors
    /// When the store cannot be written; nothing changes.
    pub async fn remove(&self, id: &str) -> Result<Option<Rule>, StoreError> {
        let _one = self.writing.lock().await;
        let mut rules = self.rules();
        let Some(pos) = rules.iter().position(|r| r.id == id) else {
            return Ok(None);
        };
        let removed = rules.remove(pos);
        self.store(rules).await?;
        let _ = self.changes.send(Change::Removed(removed.clone()));
        Ok(Some(removed))
    }

    /// Replaces the whole set (a shared backend's view), persisted locally; subscribers are
    /// not told (it is not a local change).
    ///
    /// # Errors
    /// When the store cannot be written; nothing changes.
    pub async fn replace_all(&self, rules: Vec<Rule>) -> Result<(), StoreError> {
        let _one = self.writing.lock().await;
        self.store(rules).await
    }

    /// The rules whose expiry passed since the last call, each handed out once (the server
    /// audits them as `deny_expired`). Drops them from the store first; a rule an earlier
    /// change already dropped (any change keeps only active rules) is handed out as well.
    pub async fn lapsed(&self) -> Vec<Rule> {
        let now = crate::clock::unix_now();
        let due = {
            let s = self.current.load();
            s.any_expiry && s.rules.iter().any(|r| !r.active(now))
        };
        if due {
            let _one = self.writing.lock().await;
            let rules = self.current.load().rules.clone();
            if let Err(e) = self.store(rules).await {
                tracing::error!(error = %e, "kill switch: lapsed deny rules not dropped from the store");
            }
        }
        std::mem::take(
            &mut *self
                .lapsed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Every local change from now on ([`KillSwitch::add`], [`KillSwitch::remove`]).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Writes `rules` as the whole store, then swaps them in.
    async fn store(&self, rules: Vec<Rule>) -> Result<(), StoreError> {
        let now = crate::clock::unix_now();
        let rules: Vec<Rule> = rules.into_iter().filter(|r| r.active(now)).collect();
        if let Some(db) = &self.db {
            let db = db.clone();
            let rows: Vec<(String, String)> = rules
                .iter()
                .map(|r| (r.id.clone(), serde_json::to_string(r).unwrap_or_default()))
                .collect();
            tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
                let txn = db.begin_write().map_err(err)?;
                {
                    let mut table = txn.open_table(RULES).map_err(err)?;
                    let old: Vec<String> = table
                        .iter()
                        .map_err(err)?
                        .filter_map(|e| e.ok().map(|(k, _)| k.value().to_owned()))
                        .collect();
                    for k in old {
                        table.remove(k.as_str()).map_err(err)?;
                    }
                    for (id, json) in &rows {
                        table.insert(id.as_str(), json.as_str()).map_err(err)?;
                    }
                }
                txn.commit().map_err(err)
            })
            .await
            .map_err(err)??;
        }
        let before = self.current.swap(Arc::new(Snapshot::new(rules)));
        // What this change dropped because it expired (never a rule lifted while active).
        let lapsed = before.rules.iter().filter(|r| !r.active(now)).cloned();
        self.lapsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(lapsed);
        Ok(())
    }
}

fn refusal(rule: &Rule) -> Result<(), Error> {
    crate::metrics::kill_switch_refused();
    Err(Error::DeniedByKillSwitch {
        rule: rule.id.clone(),
        reason: rule.reason.clone(),
    })
}

/// The rules as the admin API lists them.
pub fn to_json(rules: &[Rule]) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Object(Map::new())))
            .collect(),
    )
}

#[cfg(test)]
mod tests;
