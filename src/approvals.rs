//! Approvals: calls that wait for a named operator's yes, bound to the exact call.
//!
//! `[[policy.approvals]]` names the calls ([`Rules`]: tool globs or toolkits, an optional CEL
//! `if` over the same variables as constraints). The one decision
//! ([`crate::invocation::decide`]) asks here last, after every other step allowed the call,
//! so a call refused anyway never creates a request. A call that needs approval:
//! - with a live **grant** for the same (subject, tool, account, canonical argument hash)
//!   passes, and the grant is used up in the same atomic step (one redb write transaction,
//!   or one Redis script): single use, fleet-wide;
//! - with a pending request for that key is refused again with the same request's id;
//! - with a denied request for that key is refused with the reason until the request's TTL
//!   ends;
//! - otherwise a request is stored (subject, tool, toolkit, account, carrier, the arguments,
//!   their hash, the rule, the policy version, the trace id) and the call is refused with
//!   `approval_required` — unless the subject already has `max_pending_per_subject` pending,
//!   then 429 and nothing is stored.
//!
//! Operators decide through the admin API, the console or the CLI ([`Store::decide`]); the
//! approver's name is recorded, and deciding never forwards anything. Every step is an audit
//! event (`approval_requested`, `_granted`, `_denied`, `_expired`, `_used`) carrying the
//! arguments' SHA-256, never the arguments.
//!
//! The canonical form of the arguments ([`canonical_json`]) is what the hash covers: object
//! keys sorted (by their UTF-8 bytes) at every depth, no whitespace, strings re-escaped the
//! way `serde_json` writes them, numbers as parsed (an integer stays an integer, `1.0` stays a
//! float, so `1` and `1.0` are different calls). Absent or `null` arguments are `{}`.
//!
//! State lives in the `[state]` redb file (beside the kill switch's rules, in memory without
//! one) or, with `[shared]`, in Redis only ([`fleet`]): a replica never decides on a local
//! copy, and with Redis unreachable asking and deciding fail closed (503).

pub(crate) mod fleet;
pub(crate) mod local;
pub mod notify;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};

use crate::audit::Sink;
use crate::clock::Clock;
use crate::config::{ApprovalsConfig, Config, ConfigError, Env};
use crate::error::Error;
use crate::toolpolicy::glob_matches;

/// Requests listed at most (newest first).
pub const MAX_LISTED: usize = 1000;
/// Longest reason kept.
pub const MAX_REASON: usize = 500;

// === rules ===

/// One `[[policy.approvals]]` rule, compiled.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Its name (refusals, requests, the audit trail).
    pub(crate) name: Arc<str>,
    /// Tool globs split at their `*`s.
    tools: Vec<Vec<String>>,
    /// Toolkits, lower-case.
    toolkits: Vec<String>,
    /// What the agent reads while the call waits.
    pub(crate) message: Arc<str>,
    /// The CEL `if` (the variables of constraints); `None`: always.
    condition: Option<crate::constraints::Expr>,
}

impl Rule {
    /// Whether the rule asks for this call: its `if` holds, or fails to evaluate (fail
    /// closed: a condition that cannot be read is no reason to skip an approval).
    pub(crate) fn asks<'v>(&self, vars: impl FnOnce() -> &'v crate::constraints::Vars<'v>) -> bool {
        let Some(cond) = &self.condition else {
            return true;
        };
        match cond.eval(vars()) {
            Ok(holds) => holds,
            Err(e) => {
                tracing::warn!(rule = %self.name, error = %e,
                    "approval `if` did not evaluate; the call needs approval");
                true
            }
        }
    }

    /// Whether the rule covers `tool` of `toolkit` (before its `if`).
    fn covers(&self, tool: &str, toolkit: Option<&str>) -> bool {
        self.tools.iter().any(|g| glob_matches(g, tool))
            || toolkit.is_some_and(|tk| self.toolkits.iter().any(|t| t.eq_ignore_ascii_case(tk)))
    }
}

/// The approval rules and settings of one configuration (rebuilt on reload; the requests are
/// in the [`Store`], which a reload keeps).
#[derive(Debug, Default)]
pub(crate) struct Rules {
    rules: Vec<Rule>,
    /// `[approvals]`.
    pub(crate) settings: ApprovalsConfig,
    /// A digest of `[policy]` (the rules a request was made under).
    pub(crate) version: String,
    /// Where approvers follow requests (`{base}/approvals#{id}`).
    follow_base: String,
    /// The signed notification of each new request.
    pub(crate) notifier: Option<notify::Notifier>,
}

impl Rules {
    /// Compiles `config`'s approval rules.
    ///
    /// # Errors
    /// A missing notification secret.
    pub(crate) fn compile(
        config: &Config,
        env: &dyn Env,
        client: crate::upstream::HttpClient,
    ) -> Result<Self, ConfigError> {
        let mut rules = Vec::with_capacity(config.policy.approvals.len());
        for (i, r) in config.policy.approvals.iter().enumerate() {
            let condition = match &r.condition {
                Some(src) => Some(crate::constraints::compile(src).map_err(|e| {
                    ConfigError::invalid(format!("policy.approvals[{i}].if"), e.to_string())
                })?),
                None => None,
            };
            rules.push(Rule {
                condition,
                name: Arc::from(r.name.trim()),
                tools: r
                    .tools
                    .iter()
                    .map(|g| g.trim().split('*').map(str::to_owned).collect())
                    .collect(),
                toolkits: r
                    .toolkits
                    .iter()
                    .map(|t| t.trim().to_ascii_lowercase())
                    .collect(),
                message: Arc::from(
                    r.message
                        .as_deref()
                        .unwrap_or("This call needs an operator's approval."),
                ),
            });
        }
        let version = {
            let digest = Sha256::digest(format!("{:?}", config.policy).as_bytes());
            hex(&digest[..6])
        };
        let follow_base = match &config.approvals.console_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => match config.admin.listen {
                Some(addr) if addr.ip().is_unspecified() => {
                    format!("http://localhost:{}/ui", addr.port())
                }
                Some(addr) => format!("http://{addr}/ui"),
                None => "the gateway's console".to_owned(),
            },
        };
        let notifier = notify::Notifier::from_config(&config.approvals, env, client)?;
        Ok(Self {
            rules,
            settings: config.approvals.clone(),
            version,
            follow_base,
            notifier,
        })
    }

    /// The top-level claims the rules' `if` read (so the verified identity keeps them);
    /// `None`: all of them (an `if` reads `claims` as a whole, or by a computed key).
    pub(crate) fn claims_read(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for cond in self.rules.iter().filter_map(|r| r.condition.as_ref()) {
            for r in cond.references().iter().filter(|r| r.variable == "claims") {
                let first = r.fields.first()?;
                if !out.contains(first) {
                    out.push(first.clone());
                }
            }
        }
        Some(out)
    }

    /// Whether a carrier must keep `tool`'s arguments: some rule may cover it (by glob, or
    /// by toolkit, which is not known before the decision looks it up).
    pub(crate) fn wants(&self, tool: &str) -> bool {
        self.rules
            .iter()
            .any(|r| !r.toolkits.is_empty() || r.tools.iter().any(|g| glob_matches(g, tool)))
    }

    /// Whether no rule is configured (the step is skipped without a look).
    pub(crate) fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that cover `tool` of `toolkit`, in order (their `if` still to evaluate).
    pub(crate) fn covering<'r>(
        &'r self,
        tool: &'r str,
        toolkit: Option<&'r str>,
    ) -> impl Iterator<Item = &'r Rule> + 'r {
        self.rules.iter().filter(move |r| r.covers(tool, toolkit))
    }

    /// Where an approver follows request `id`.
    pub(crate) fn follow_url(&self, id: &str) -> String {
        format!("{}/approvals#{id}", self.follow_base)
    }
}

// === the canonical form ===

/// The canonical JSON text of `v` (module docs): sorted keys at every depth, no whitespace.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The arguments as one call's binding sees them: absent and `null` are `{}`.
pub fn normalised(arguments: Option<&Value>) -> Value {
    match arguments {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v) => v.clone(),
    }
}

/// Hex SHA-256 of the canonical JSON of the arguments (absent: `{}`).
pub fn argument_hash(arguments: Option<&Value>) -> String {
    hex(&Sha256::digest(
        canonical_json(&normalised(arguments)).as_bytes(),
    ))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What a grant is bound to: (subject, tool, account, argument hash), as one hex digest. The
/// tool is compared case-insensitively (Composio's slugs are), the rest exactly.
pub fn binding_key(subject: &str, tool: &str, account: Option<&str>, args_hash: &str) -> String {
    let text = json!([subject, tool.to_ascii_uppercase(), account, args_hash]).to_string();
    hex(&Sha256::digest(text.as_bytes()))
}

// === requests ===

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an operator.
    Pending,
    /// Approved: the same call may be made once before `grant_expires_at`.
    Approved,
    /// Denied: the same call is answered with the reason until `expires_at`.
    Denied,
    /// The grant was used by the call it was bound to.
    Used,
    /// Unanswered past `expires_at`, or approved and unused past `grant_expires_at`.
    Expired,
}

impl Status {
    /// The wire name (`pending`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Used => "used",
            Self::Expired => "expired",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "denied" => Self::Denied,
            "used" => Self::Used,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// One approval request, as stored and as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Opaque id (`POST /approvals/{id}/approve`).
    pub id: String,
    /// The binding ([`binding_key`]).
    pub key: String,
    /// Whose call (as the gateway pins it, prefix included).
    pub subject: String,
    /// The tool slug (`PROXY_EXECUTE` for a proxy execution).
    pub tool: String,
    /// Composio's toolkit of the tool.
    pub toolkit: Option<String>,
    /// The connected account the call names.
    pub account: Option<String>,
    /// How the call arrived (`rest`, `legacy`, `multi`, `session`, `mcp`, `proxy`, ...).
    pub carrier: String,
    /// The arguments, as the call carried them (approvers only; never audited).
    pub arguments: Value,
    /// Hex SHA-256 of their canonical JSON.
    pub args_sha256: String,
    /// Size of their canonical JSON, in bytes.
    pub args_bytes: usize,
    /// The `[[policy.approvals]]` rule that asked.
    pub rule: String,
    /// Its message.
    pub message: String,
    /// A digest of the `[policy]` in force when asked.
    pub policy_version: String,
    /// The W3C trace id of the call that asked.
    pub trace_id: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
    /// A pending request expires then; a denial is answered until then.
    pub expires_at: u64,
    /// Where it stands.
    pub status: Status,
    /// The operator who decided.
    #[serde(default)]
    pub approver: Option<String>,
    /// Their reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// When they decided.
    #[serde(default)]
    pub decided_at: Option<u64>,
    /// An approved call may be made once before then.
    #[serde(default)]
    pub grant_expires_at: Option<u64>,
    /// When the grant was used.
    #[serde(default)]
    pub used_at: Option<u64>,
}

/// What a request means for the identical call at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    /// Approved, grant unused and not expired.
    Granted,
    /// Waiting, not expired.
    Pending,
    /// Denied, and the request's TTL not over.
    Denied,
    /// Over: a new call needs a new request. `true` when the request still has to be marked
    /// expired (pending or approved past its time).
    Over(bool),
}

impl Request {
    /// What this request means for the identical call at `now`.
    pub(crate) fn live(&self, now: u64) -> Live {
        match self.status {
            Status::Approved if self.grant_expires_at.is_some_and(|g| now < g) => Live::Granted,
            Status::Pending if now < self.expires_at => Live::Pending,
            Status::Denied if now < self.expires_at => Live::Denied,
            Status::Pending | Status::Approved => Live::Over(true),
            Status::Denied | Status::Used | Status::Expired => Live::Over(false),
        }
    }

    /// When the record may be dropped: a request TTL after everything about it ended (the
    /// console shows recent history; the audit trail keeps it for good).
    pub(crate) fn retain_until(&self, ttl: u64) -> u64 {
        let end = self
            .expires_at
            .max(self.grant_expires_at.unwrap_or(0))
            .max(self.used_at.unwrap_or(0));
        end.saturating_add(ttl)
    }

    /// The audit fields of an event about this request (the argument hash, never the
    /// arguments).
    pub fn audit_fields(&self) -> Value {
        json!({
            "approval_id": self.id,
            "subject": self.subject,
            "tool": self.tool,
            "toolkit": self.toolkit,
            "connected_account_id": self.account,
            "carrier": self.carrier,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "args_sha256": self.args_sha256,
            "approver": self.approver,
            "reason": self.reason,
            "trace_id": self.trace_id,
            "status": self.status.as_str(),
        })
    }
}

/// One call asking: what a new request is made of.
#[derive(Debug, Clone)]
pub(crate) struct Call<'a> {
    pub(crate) subject: &'a str,
    pub(crate) tool: &'a str,
    pub(crate) toolkit: Option<&'a str>,
    pub(crate) account: Option<&'a str>,
    pub(crate) carrier: &'a str,
    pub(crate) arguments: Option<&'a Value>,
    pub(crate) trace_id: Option<&'a str>,
}

impl Call<'_> {
    /// The pending request this call would store, with a fresh id.
    fn request(&self, rule: &Rule, rules: &Rules, now: u64) -> Request {
        let arguments = normalised(self.arguments);
        let canonical = canonical_json(&arguments);
        let args_sha256 = hex(&Sha256::digest(canonical.as_bytes()));
        Request {
            id: format!("apr_{}", uuid::Uuid::new_v4().simple()),
            key: binding_key(self.subject, self.tool, self.account, &args_sha256),
            subject: self.subject.to_owned(),
            tool: self.tool.to_owned(),
            toolkit: self.toolkit.map(str::to_owned),
            account: self.account.map(str::to_owned),
            carrier: self.carrier.to_owned(),
            arguments,
            args_sha256,
            args_bytes: canonical.len(),
            rule: rule.name.to_string(),
            message: rule.message.to_string(),
            policy_version: rules.version.clone(),
            trace_id: self.trace_id.map(str::to_owned),
            created_at: now,
            expires_at: now.saturating_add(rules.settings.request_ttl_secs),
            status: Status::Pending,
            approver: None,
            reason: None,
            decided_at: None,
            grant_expires_at: None,
            used_at: None,
        }
    }
}

/// What [`Store::ask`] found and did for a call's binding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Asked {
    /// A grant was there; it is used now (by this call only).
    Granted(Request),
    /// A pending request: made now (`created`) or already waiting.
    Pending { request: Request, created: bool },
    /// Denied; answered with the reason until the request's TTL ends.
    Denied(Request),
    /// The subject has `max_pending_per_subject` pending requests: nothing stored.
    Full,
}

/// [`Asked`], and a request this step found over its time and marked expired.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AskOutcome {
    pub(crate) asked: Asked,
    pub(crate) expired: Option<Request>,
}

/// An operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Approve: a single-use grant for the exact call.
    Approve,
    /// Deny.
    Deny,
}

impl Verdict {
    /// The status a pending request takes on this verdict.
    pub(crate) fn status(self) -> Status {
        match self {
            Self::Approve => Status::Approved,
            Self::Deny => Status::Denied,
        }
    }
}

/// Why a decision was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// No such request (or it was dropped).
    #[error("no such approval request")]
    NotFound,
    /// It was decided already, used or expired.
    #[error("the request is not pending (it is {0})")]
    NotPending(&'static str),
    /// Its TTL ended unanswered.
    #[error("the request expired unanswered")]
    Expired,
    /// The store could not be read or written.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A failure of the approvals store (the redb file or Redis).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("approvals store: {0}")]
pub struct StoreError(pub(crate) String);

pub(crate) fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

// === the store ===

/// The requests: in the embedded store, or with `[shared]` in Redis only. Kept across
/// reloads.
pub struct Store {
    backend: Backend,
    clock: Arc<dyn Clock>,
}

#[derive(Clone)]
enum Backend {
    Local(local::Local),
    Fleet(fleet::Fleet),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field(
                "backend",
                &match self.backend {
                    Backend::Local(_) => "local",
                    Backend::Fleet(_) => "redis",
                },
            )
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Requests in `db` (the `[state]` file the kill switch opened) or, without one, in memory.
    ///
    /// # Errors
    /// When the tables cannot be created.
    pub fn local(
        db: Option<Arc<redb::Database>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Backend::Local(local::Local::open(db)?),
            clock,
        })
    }

    /// Requests in the fleet's Redis.
    pub fn fleet(cluster: Arc<crate::shared::Cluster>, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend: Backend::Fleet(fleet::Fleet::new(cluster)),
            clock,
        }
    }

    /// The same store read with `clock` (tests age requests without sleeping).
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        Self {
            backend: self.backend.clone(),
            clock,
        }
    }

    /// The clock this store reads.
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Whether this store is the fleet's (Redis).
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Fleet(_))
    }

    /// Unix seconds by this store's clock.
    pub fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// The request currently bound to `key`, if any (read only: the dry run, and a call with
    /// several approvals that checks them all before using any).
    pub(crate) async fn peek(&self, key: &str) -> Result<Option<Request>, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.peek(key).await,
            Backend::Fleet(f) => f.peek(key).await,
        }
    }

    /// The one atomic step of a call that needs approval (module docs).
    pub(crate) async fn ask(
        &self,
        call: &Call<'_>,
        rule: &Rule,
        rules: &Rules,
    ) -> Result<AskOutcome, StoreError> {
        let now = self.now();
        let fresh = call.request(rule, rules, now);
        let max = rules.settings.max_pending_per_subject;
        let retain = retention(&rules.settings);
        match &self.backend {
            Backend::Local(l) => l.ask(fresh, max, now).await,
            Backend::Fleet(f) => f.ask(fresh, max, now, retain).await,
        }
    }

    /// Every request kept, newest first (at most [`MAX_LISTED`]).
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn list(&self) -> Result<Vec<Request>, StoreError> {
        let mut all = match &self.backend {
            Backend::Local(l) => l.list().await?,
            Backend::Fleet(f) => f.list().await?,
        };
        all.sort_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        all.truncate(MAX_LISTED);
        Ok(all)
    }

    /// One request.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        match &self.backend {
            Backend::Local(l) => l.get(id).await,
            Backend::Fleet(f) => f.get(id).await,
        }
    }

    /// Approves or denies pending request `id` as `approver` (who the caller checked may).
    ///
    /// # Errors
    /// [`DecideError`]: not found, not pending, expired, or the store failed.
    pub async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        reason: &str,
        settings: &ApprovalsConfig,
    ) -> Result<Request, DecideError> {
        let now = self.now();
        let grant_until = now.saturating_add(settings.grant_ttl_secs);
        match &self.backend {
            Backend::Local(l) => {
                l.decide(id, verdict, approver, reason, now, grant_until)
                    .await
            }
            Backend::Fleet(f) => {
                f.decide(id, verdict, approver, reason, now, grant_until)
                    .await
            }
        }
    }

    /// Marks requests whose time ended as expired (each handed out once, fleet-wide) and
    /// drops records past their retention.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub async fn sweep(&self, settings: &ApprovalsConfig) -> Result<Vec<Request>, StoreError> {
        let now = self.now();
        let retain = retention(settings);
        match &self.backend {
            Backend::Local(l) => l.sweep(now, settings.request_ttl_secs).await,
            Backend::Fleet(f) => f.sweep(now, retain).await,
        }
    }
}

/// How long a record lives at most after it was made (Redis drops it then by itself).
fn retention(settings: &ApprovalsConfig) -> u64 {
    settings
        .request_ttl_secs
        .saturating_mul(2)
        .saturating_add(settings.grant_ttl_secs)
        .max(60)
}

// === the step, as the decision runs it ===

/// Records an approval event in the audit trail and the metrics.
pub(crate) fn record(audit: &Sink, event: &'static str, request: &Request) {
    let mut fields = request.audit_fields();
    match event {
        "approval_requested" => {
            fields["expires_at"] = json!(request.expires_at);
            crate::metrics::approval("requested");
        }
        "approval_granted" => {
            fields["grant_expires_at"] = json!(request.grant_expires_at);
            crate::metrics::approval("granted");
        }
        "approval_denied" => crate::metrics::approval("denied"),
        "approval_used" => crate::metrics::approval("used"),
        "approval_expired" => crate::metrics::approval("expired"),
        _ => {}
    }
    audit.record(event, fields);
}

/// What the decision does for one invocation a rule covers: the refusal, or the grant used.
///
/// # Errors
/// [`Error::ApprovalRequired`], [`Error::ApprovalDenied`], [`Error::ApprovalsPending`],
/// [`Error::ApprovalsUnavailable`], or [`Error::BodyInvalid`] for arguments too large to show.
pub(crate) async fn ask(
    store: &Store,
    rules: &Rules,
    rule: &Rule,
    call: &Call<'_>,
    audit: &Sink,
) -> Result<Request, Error> {
    let size = canonical_json(&normalised(call.arguments)).len();
    if size > rules.settings.max_argument_bytes {
        return Err(Error::BodyInvalid(format!(
            "the call needs approval (rule `{}`), and its arguments ({size} bytes) are larger \
             than an approver may be shown ([approvals] max_argument_bytes)",
            rule.name
        )));
    }
    let outcome = store.ask(call, rule, rules).await.map_err(|e| {
        tracing::error!(error = %e, "approvals: store unavailable; the call is refused");
        Error::ApprovalsUnavailable
    })?;
    if let Some(expired) = &outcome.expired {
        record(audit, "approval_expired", expired);
    }
    match outcome.asked {
        Asked::Granted(r) => {
            let mut fields = r.audit_fields();
            // The call that spent the grant (its decision line carries the same trace id).
            fields["used_trace_id"] = json!(call.trace_id);
            crate::metrics::approval("used");
            audit.record("approval_used", fields);
            Ok(r)
        }
        Asked::Pending { request, created } => {
            if created {
                record(audit, "approval_requested", &request);
                if let Some(n) = &rules.notifier {
                    n.spawn(&request, &rules.follow_url(&request.id));
                }
            }
            Err(required(rules, &request))
        }
        Asked::Denied(r) => Err(Error::ApprovalDenied {
            id: r.id.clone(),
            reason: r.reason.unwrap_or_default(),
        }),
        Asked::Full => Err(Error::ApprovalsPending(
            rules.settings.max_pending_per_subject,
        )),
    }
}

/// The refusal for a call waiting on `request`.
pub(crate) fn required(rules: &Rules, request: &Request) -> Error {
    Error::ApprovalRequired {
        id: request.id.clone(),
        message: request.message.clone(),
        follow: rules.follow_url(&request.id),
    }
}

/// What a dry run says for a call a rule covers, without storing or using anything.
///
/// # Errors
/// As [`ask`], for what the call would get.
pub(crate) async fn explain(
    store: &Store,
    rules: &Rules,
    rule: &Rule,
    call: &Call<'_>,
) -> Result<(), Error> {
    let key = binding_key(
        call.subject,
        call.tool,
        call.account,
        &argument_hash(call.arguments),
    );
    let now = store.now();
    match store.peek(&key).await {
        Ok(Some(r)) => match r.live(now) {
            Live::Granted => Ok(()),
            Live::Pending => Err(required(rules, &r)),
            Live::Denied => Err(Error::ApprovalDenied {
                id: r.id.clone(),
                reason: r.reason.unwrap_or_default(),
            }),
            Live::Over(_) => Err(dry_required(rules, rule)),
        },
        Ok(None) => Err(dry_required(rules, rule)),
        Err(_) => Err(Error::ApprovalsUnavailable),
    }
}

fn dry_required(rules: &Rules, rule: &Rule) -> Error {
    Error::ApprovalRequired {
        id: "(a new request)".into(),
        message: rule.message.to_string(),
        follow: rules.follow_url("..."),
    }
}

/// A reason as an operator may give it: trimmed, one line, bounded.
///
/// # Errors
/// A message for the operator.
pub fn check_reason(reason: &str, required: bool) -> Result<String, String> {
    let r = reason.trim();
    if required && r.is_empty() {
        return Err("a `reason` is required".into());
    }
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(format!(
            "`reason` must be one line of at most {MAX_REASON} bytes"
        ));
    }
    Ok(r.to_owned())
}

/// Whether `operator_subject` (as configured) names `request_subject` (as pinned, with the
/// gateway's `subject_prefix`): compared case-insensitively, with and without the prefix, so
/// that no spelling lets an operator approve their own call.
pub fn same_person(operator_subject: &str, request_subject: &str, prefix: &str) -> bool {
    let op = operator_subject.trim();
    let prefixed = format!("{prefix}{op}");
    request_subject.eq_ignore_ascii_case(op) || request_subject.eq_ignore_ascii_case(&prefixed)
}

/// The requests as the admin API lists them.
pub fn to_json(requests: &[Request]) -> Value {
    Value::Array(
        requests
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Object(Map::new())))
            .collect(),
    )
}

#[cfg(test)]
pub(crate) mod tests;
