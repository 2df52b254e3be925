//! Finding broken connections before users do (issue 7).
//!
//! - [`scan`]: a project-wide listing of connected accounts that need the user's attention
//!   (`statuses=EXPIRED,FAILED,INACTIVE,REVOKED`, plus `ACTIVE` accounts that are disabled),
//!   cursor-paginated, with backoff on 429/5xx. Reading `user_id` from the items is deliberate
//!   here: the scan only informs, it never authorises anything.
//! - [`Expiry::run`]: one pass: scan, invalidate the gateway's connection cache for the
//!   affected (user, toolkit) pairs, and notify the app once per user ([`notify`]), deduplicated
//!   across restarts by a small embedded store ([`dedup`]).
//! - [`inbound`]: Composio's own `composio.connected_account.expired` webhook, verified
//!   Standard-Webhooks style, acted on at once.
//! - [`audit_once`] (`entitygate audit`, see [`crate::cli::expiry`]) and [`spawn_schedule`]
//!   (`[audit_job] every_secs` in `serve`).

pub mod dedup;
pub mod inbound;
pub mod notify;

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OnceCell, Semaphore};

use crate::config::{AuditJobConfig, Config, ConfigError, Env};
use crate::connections::Connections;
use crate::upstream::{self, HttpClient, Upstream};

use self::dedup::{StateStore, StoreError};
use self::notify::{Event, Notifier};

/// The statuses that always need the user's attention.
pub const ATTENTION_STATUSES: &[&str] = &["EXPIRED", "FAILED", "INACTIVE", "REVOKED"];
/// The status reported for an `ACTIVE` account that is disabled.
pub const DISABLED: &str = "DISABLED";
/// Pages followed at most in one listing (a guard against a cursor that never ends).
const MAX_PAGES: usize = 100_000;

pub(crate) use crate::clock::{unix_now, unix_now_ms};

/// One connected account that needs its user's attention. Serialised as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The app's user id (Composio's `user_id`).
    pub user_id: String,
    /// Toolkit slug, lower-case.
    pub toolkit: String,
    /// The connected account.
    pub connected_account_id: String,
    /// Composio's status, or `DISABLED` for an `ACTIVE` account that is disabled.
    pub status: String,
    /// Composio's reason, when it gave one.
    pub status_reason: Option<String>,
    /// When the account last changed (`updated_at`, else `created_at`).
    pub since: Option<String>,
}

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Ceiling.
    pub max: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
}

impl Backoff {
    /// From the `[audit_job]` settings.
    pub fn from_config(cfg: &AuditJobConfig) -> Self {
        Self {
            base: Duration::from_millis(cfg.retry_base_ms),
            max: Duration::from_millis(cfg.retry_max_ms),
            max_attempts: cfg.max_attempts.max(1),
        }
    }

    /// The delay after failed attempt number `attempt` (1-based): `base * 2^(attempt-1)`,
    /// capped, then scaled by a random factor in [0.5, 1) so that many clients do not retry
    /// in lockstep.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
            .min(self.max);
        let r = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        exp.mul_f64(0.5) + exp.mul_f64(0.5) * r / 1000
    }
}

/// Why a scan could not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// Composio kept answering 429/5xx or could not be reached.
    #[error("Composio did not answer the listing after {attempts} attempts (last: {last})")]
    GaveUp {
        /// Attempts made for the page.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// Composio refused the listing.
    #[error("Composio refused the listing with HTTP {status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Composio's message.
        message: String,
    },
    /// The answer was not a listing, or its cursor went round in circles.
    #[error("unexpected listing from Composio: {0}")]
    Malformed(String),
}

/// Counters of a scan in progress, readable from another task (the progress indicator).
#[derive(Debug, Default)]
pub struct Progress {
    /// Pages received.
    pub pages: AtomicUsize,
    /// Items received.
    pub listed: AtomicUsize,
    /// Items Composio announced in all (`total_items` of each listing's first page).
    pub expected: AtomicUsize,
    /// Accounts found needing attention (before deduplication across listings).
    pub found: AtomicUsize,
    /// Pages retried after a 429/5xx/timeout.
    pub retries: AtomicUsize,
}

/// What to list.
#[derive(Debug, Clone, Copy)]
struct Listing {
    statuses: &'static str,
    disabled_only: bool,
}

/// Lists every connected account of the project that needs attention, each once, sorted by
/// user, toolkit and id. Listings run concurrently, at most `concurrency` at once.
///
/// # Errors
/// [`ScanError`] when a listing cannot be completed; nothing partial is returned, so a caller
/// never mistakes half a scan for the whole picture.
pub async fn scan(
    upstream: &Upstream,
    cfg: &AuditJobConfig,
    progress: &Arc<Progress>,
) -> Result<Vec<Finding>, ScanError> {
    let mut listings = vec![Listing {
        statuses: "EXPIRED,FAILED,INACTIVE,REVOKED",
        disabled_only: false,
    }];
    if cfg.include_disabled {
        listings.push(Listing {
            statuses: "ACTIVE",
            disabled_only: true,
        });
    }
    let permits = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
    let backoff = Backoff::from_config(cfg);
    let mut tasks = tokio::task::JoinSet::new();
    for listing in listings {
        let (upstream, progress, permits) = (upstream.clone(), progress.clone(), permits.clone());
        let limit = cfg.page_limit;
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            list(&upstream, listing, limit, backoff, &progress).await
        });
    }
    let mut by_id: BTreeMap<String, Finding> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let found = joined.map_err(|e| ScanError::Malformed(format!("listing task: {e}")))??;
        for f in found {
            // An account listed by both listings (its status changed mid-scan) counts once;
            // the attention status wins over DISABLED.
            match by_id.get(&f.connected_account_id) {
                Some(prev) if prev.status != DISABLED => {}
                _ => {
                    by_id.insert(f.connected_account_id.clone(), f);
                }
            }
        }
    }
    let mut out: Vec<Finding> = by_id.into_values().collect();
    out.sort_by(|a, b| {
        (&a.user_id, &a.toolkit, &a.connected_account_id).cmp(&(
            &b.user_id,
            &b.toolkit,
            &b.connected_account_id,
        ))
    });
    Ok(out)
}

/// Follows one listing's cursor to the end.
async fn list(
    upstream: &Upstream,
    listing: Listing,
    limit: usize,
    backoff: Backoff,
    progress: &Progress,
) -> Result<Vec<Finding>, ScanError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    let mut seen_cursors = HashSet::new();
    for page in 0..MAX_PAGES {
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("statuses", listing.statuses);
            q.append_pair("limit", &limit.to_string());
            if let Some(c) = &cursor {
                q.append_pair("cursor", c);
            }
            q.finish()
        };
        let path = format!("/api/v3.1/connected_accounts?{query}");
        let body = fetch(upstream, &path, backoff, progress).await?;
        let items = body
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| ScanError::Malformed("no `items` array".into()))?;
        if page == 0 {
            let total = body.get("total_items").and_then(Value::as_u64).unwrap_or(0);
            progress
                .expected
                .fetch_add(usize::try_from(total).unwrap_or(0), Ordering::Relaxed);
        }
        progress.pages.fetch_add(1, Ordering::Relaxed);
        progress.listed.fetch_add(items.len(), Ordering::Relaxed);
        for item in items {
            if let Some(f) = finding(item, listing) {
                progress.found.fetch_add(1, Ordering::Relaxed);
                out.push(f);
            }
        }
        match body.get("next_cursor").and_then(Value::as_str) {
            Some(next) if !next.is_empty() && !items.is_empty() => {
                if !seen_cursors.insert(next.to_owned()) {
                    return Err(ScanError::Malformed(format!(
                        "cursor {next:?} was returned twice"
                    )));
                }
                cursor = Some(next.to_owned());
            }
            _ => return Ok(out),
        }
    }
    Err(ScanError::Malformed(format!(
        "more than {MAX_PAGES} pages; stopped"
    )))
}

/// One page, retried with backoff on 429, 5xx, timeouts and connection failures.
async fn fetch(
    upstream: &Upstream,
    path: &str,
    backoff: Backoff,
    progress: &Progress,
) -> Result<Value, ScanError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = match upstream.get_json(path).await {
            Ok((status, body)) if status.is_success() => return Ok(body),
            Ok((status, _))
                if status == http::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() =>
            {
                format!("HTTP {}", status.as_u16())
            }
            Ok((status, body)) => {
                let message = body
                    .pointer("/error/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                return Err(ScanError::Refused {
                    status: status.as_u16(),
                    message,
                });
            }
            Err(e) => e.to_string(),
        };
        if attempt >= backoff.max_attempts {
            return Err(ScanError::GaveUp {
                attempts: attempt,
                last,
            });
        }
        progress.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(attempt, %last, "connected account listing failed; backing off");
        tokio::time::sleep(backoff.delay(attempt)).await;
    }
}

/// The finding an item stands for, if it needs attention. Items without an id, a user or a
/// toolkit cannot be acted on and are skipped (with a warning).
fn finding(item: &Value, listing: Listing) -> Option<Finding> {
    let s = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_owned);
    let status = s("status")?.to_ascii_uppercase();
    let disabled = item
        .get("is_disabled")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let status = if ATTENTION_STATUSES.contains(&status.as_str()) {
        status
    } else if listing.disabled_only && status == "ACTIVE" && disabled {
        DISABLED.to_owned()
    } else {
        // The filter was not honoured, or the status changed: not for this listing.
        return None;
    };
    let id = s("id").filter(|v| !v.is_empty());
    let user_id = s("user_id").filter(|v| !v.is_empty());
    let toolkit = item
        .pointer("/toolkit/slug")
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
        .map(str::to_ascii_lowercase);
    let (Some(id), Some(user_id), Some(toolkit)) = (id, user_id, toolkit) else {
        let id = item.get("id").and_then(|v| v.as_str()).unwrap_or("?");
        tracing::warn!(
            id,
            "connected account without id, user_id or toolkit in the listing; skipped"
        );
        return None;
    };
    Some(Finding {
        user_id,
        toolkit,
        connected_account_id: id,
        status,
        status_reason: s("status_reason").filter(|v| !v.is_empty()),
        since: s("updated_at").or_else(|| s("created_at")),
    })
}

/// Outcome of notifying the app about a set of findings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NotifyOutcome {
    /// Users an event was delivered to.
    pub users_notified: usize,
    /// Connections named in delivered events.
    pub connections_notified: usize,
    /// Connections left out because the user was told within `renotify_secs`.
    pub suppressed: usize,
    /// Users whose event could not be delivered (they are tried again next time).
    pub users_failed: usize,
}

/// The result of one pass.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every connection that needs attention, sorted by user.
    pub findings: Vec<Finding>,
    /// Distinct users among them.
    pub users: usize,
    /// (user, toolkit) pairs whose cache entries were dropped (0 outside `serve`).
    pub invalidated: usize,
    /// Notification outcome (`None`: no `webhook_url`).
    pub notify: Option<NotifyOutcome>,
    /// Pages listed.
    pub pages: usize,
    /// Accounts listed.
    pub listed: usize,
    /// Pages retried.
    pub retries: usize,
    /// Wall time.
    pub elapsed: Duration,
}

impl Report {
    /// The human summary printed on stderr (several lines).
    pub fn summary(&self) -> String {
        let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &self.findings {
            *by_status.entry(f.status.as_str()).or_default() += 1;
        }
        let statuses = by_status
            .iter()
            .map(|(s, n)| format!("{n} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut out = format!(
            "audit: {} connection(s) need attention across {} user(s){}\n\
             audit: listed {} account(s) in {} page(s), {} retried, in {:.1}s\n",
            self.findings.len(),
            self.users,
            if statuses.is_empty() {
                String::new()
            } else {
                format!(" ({statuses})")
            },
            self.listed,
            self.pages,
            self.retries,
            self.elapsed.as_secs_f64(),
        );
        match &self.notify {
            None => out.push_str("audit: no webhook_url configured; nobody notified\n"),
            Some(n) => out.push_str(&format!(
                "audit: notified {} user(s) about {} connection(s); {} suppressed (already \
                 notified within renotify_secs); {} user(s) failed\n",
                n.users_notified, n.connections_notified, n.suppressed, n.users_failed
            )),
        }
        if self.invalidated > 0 {
            out.push_str(&format!(
                "audit: dropped {} cached (user, toolkit) answer(s)\n",
                self.invalidated
            ));
        }
        out
    }
}

/// The audit job: configuration, upstream, notifier and the lazily opened store.
pub struct Expiry {
    cfg: AuditJobConfig,
    upstream: Upstream,
    notifier: Option<Notifier>,
    composio_secret: Option<Bytes>,
    /// Composio webhook deliveries in progress (`composio_webhook_max_in_flight`).
    inbound: Arc<Semaphore>,
    store: OnceCell<StateStore>,
    /// The fleet (`[shared]`): the dedup lives in Redis instead of `store`.
    cluster: std::sync::OnceLock<Arc<crate::shared::Cluster>>,
}

/// Where the job's and the webhook's dedup lives: the embedded store, or the fleet's Redis.
#[derive(Clone)]
pub(crate) enum Dedup {
    Local(StateStore),
    Shared(Arc<crate::shared::Cluster>),
}

impl Dedup {
    async fn due(
        &self,
        user: &str,
        ids: Vec<String>,
        now_ms: u64,
        window_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            Self::Local(s) => {
                let user = user.to_owned();
                s.run(move |s| s.due(&user, &ids, now_ms, window_ms)).await
            }
            Self::Shared(c) => c.due(user, &ids, now_ms, window_ms).await,
        }
    }

    async fn mark_notified(
        &self,
        user: String,
        ids: Vec<String>,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.run(move |s| s.mark_notified(&user, &ids, now_ms)).await,
            Self::Shared(c) => c.mark_notified(&user, &ids, now_ms).await,
        }
    }

    async fn prune(
        &self,
        present: HashSet<(String, String)>,
        scan_started_ms: u64,
        window_ms: u64,
    ) -> Result<usize, StoreError> {
        match self {
            Self::Local(s) => {
                s.run(move |s| s.prune(&present, scan_started_ms, unix_now_ms(), window_ms))
                    .await
            }
            Self::Shared(c) => {
                c.prune(&present, scan_started_ms, unix_now_ms(), window_ms)
                    .await
            }
        }
    }

    pub(crate) async fn first_delivery(
        &self,
        id: String,
        now: u64,
        keep_secs: u64,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Local(s) => s.run(move |s| s.first_delivery(&id, now, keep_secs)).await,
            Self::Shared(c) => c.first_delivery(&id, keep_secs).await,
        }
    }

    pub(crate) async fn forget_delivery(&self, id: String) -> Result<(), StoreError> {
        match self {
            Self::Local(s) => s.run(move |s| s.forget_delivery(&id)).await,
            Self::Shared(c) => c.forget_delivery(&id).await,
        }
    }
}

impl std::fmt::Debug for Expiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Expiry")
            .field("notifier", &self.notifier)
            .finish_non_exhaustive()
    }
}

fn secret(env: &dyn Env, key: &str, var: &str) -> Result<Bytes, ConfigError> {
    env.var(var)
        .filter(|v| !v.trim().is_empty())
        .map(|v| Bytes::from(v.into_bytes()))
        .ok_or_else(|| ConfigError::MissingEnv {
            key: key.into(),
            var: var.into(),
        })
}

impl Expiry {
    /// Builds the job, reading its secrets from `env`. The store is opened on first use (so
    /// that `check-config` beside a running gateway does not fight over its lock), but its
    /// directory must exist.
    ///
    /// # Errors
    /// A missing secret, an unusable URL, or a state directory that does not exist.
    pub fn new(
        cfg: &AuditJobConfig,
        upstream: Upstream,
        client: HttpClient,
        env: &dyn Env,
    ) -> Result<Self, ConfigError> {
        let notifier = match &cfg.webhook_url {
            None => None,
            Some(url) => {
                let uri = url
                    .parse()
                    .map_err(|e| ConfigError::invalid("audit_job.webhook_url", format!("{e}")))?;
                let var = cfg.webhook_secret_env.as_deref().unwrap_or_default();
                let key = secret(env, "audit_job.webhook_secret_env", var)?;
                Some(Notifier::new(
                    client,
                    uri,
                    key,
                    Backoff::from_config(cfg),
                    Duration::from_secs(cfg.webhook_timeout_secs),
                ))
            }
        };
        let composio_secret = match &cfg.composio_webhook_secret_env {
            None => None,
            Some(var) => Some(secret(env, "audit_job.composio_webhook_secret_env", var)?),
        };
        let dir = match cfg.state_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(ConfigError::File {
                key: "audit_job.state_path".into(),
                path: cfg.state_path.clone(),
                reason: "its directory does not exist".into(),
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            upstream,
            notifier,
            composio_secret,
            inbound: Arc::new(Semaphore::new(cfg.composio_webhook_max_in_flight.max(1))),
            store: OnceCell::new(),
            cluster: std::sync::OnceLock::new(),
        })
    }

    /// Joins the fleet: the dedup lives in Redis and the schedule runs under a lease.
    pub(crate) fn attach(&self, cluster: &Arc<crate::shared::Cluster>) {
        let _ = self.cluster.set(cluster.clone());
    }

    /// The fleet this job belongs to, if any.
    pub(crate) fn cluster(&self) -> Option<&Arc<crate::shared::Cluster>> {
        self.cluster.get()
    }

    /// The dedup: Redis with `[shared]`, else the embedded store (opened on first use).
    pub(crate) async fn dedup(&self) -> Result<Dedup, StoreError> {
        if let Some(c) = self.cluster.get() {
            return Ok(Dedup::Shared(c.clone()));
        }
        self.store().await.map(|s| Dedup::Local(s.clone()))
    }

    /// Whether `other` (built from a reloaded configuration) means exactly this job: same
    /// settings and secrets. Then the running job, its store and its schedule are kept.
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        format!("{:?}", self.cfg) == format!("{:?}", other.cfg)
            && self.composio_secret == other.composio_secret
            && self.notifier.as_ref().map(Notifier::fingerprint)
                == other.notifier.as_ref().map(Notifier::fingerprint)
    }

    /// Hands this job's open state store to `next` when both use the same file (the store is
    /// locked by whoever opened it first).
    pub(crate) fn hand_over_store(&self, next: &Self) {
        if self.cfg.state_path == next.cfg.state_path {
            if let Some(store) = self.store.get() {
                let _ = next.store.set(store.clone());
            }
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuditJobConfig {
        &self.cfg
    }

    /// The state store, opened on first use.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub async fn store(&self) -> Result<&StateStore, StoreError> {
        self.store
            .get_or_try_init(|| async {
                let path = self.cfg.state_path.clone();
                tokio::task::spawn_blocking(move || StateStore::open(&path))
                    .await
                    .map_err(|e| StoreError::from_display(&e))?
            })
            .await
    }

    /// One pass: scan, drop the affected cache entries (when `cache` is the running gateway's),
    /// notify. Prints nothing.
    ///
    /// # Errors
    /// When the scan cannot complete; failed deliveries are counted in the report instead.
    pub async fn run(
        &self,
        cache: Option<&Connections>,
        progress: &Arc<Progress>,
    ) -> Result<Report, ScanError> {
        let started = Instant::now();
        let scan_started = unix_now_ms();
        let findings = scan(&self.upstream, &self.cfg, progress).await?;
        let mut invalidated = 0;
        if let Some(cache) = cache {
            let pairs: HashSet<(&str, &str)> = findings
                .iter()
                .map(|f| (f.user_id.as_str(), f.toolkit.as_str()))
                .collect();
            for (user, toolkit) in &pairs {
                cache.invalidate(user, toolkit);
            }
            invalidated = pairs.len();
        }
        let notify = match &self.notifier {
            None => None,
            Some(_) => {
                let outcome = self.notify(&findings).await;
                self.prune(&findings, scan_started).await;
                Some(outcome)
            }
        };
        let users = findings
            .iter()
            .map(|f| f.user_id.as_str())
            .collect::<HashSet<_>>()
            .len();
        Ok(Report {
            users,
            findings,
            invalidated,
            notify,
            pages: progress.pages.load(Ordering::Relaxed),
            listed: progress.listed.load(Ordering::Relaxed),
            retries: progress.retries.load(Ordering::Relaxed),
            elapsed: started.elapsed(),
        })
    }

    async fn prune(&self, findings: &[Finding], scan_started: u64) {
        let present: HashSet<(String, String)> = findings
            .iter()
            .map(|f| (f.user_id.clone(), f.connected_account_id.clone()))
            .collect();
        let window = self.cfg.renotify_secs.saturating_mul(1000);
        let result = match self.dedup().await {
            Ok(dedup) => dedup.prune(present, scan_started, window).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not prune the audit job's state");
        }
    }

    /// Notifies each user once about their findings not already notified within
    /// `renotify_secs`; at most `concurrency` deliveries at once. A user is recorded as
    /// notified only after the app accepted the event. Without a `webhook_url` this does
    /// nothing.
    pub async fn notify(&self, findings: &[Finding]) -> NotifyOutcome {
        let mut outcome = NotifyOutcome::default();
        let Some(notifier) = &self.notifier else {
            return outcome;
        };
        let store = match self.dedup().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "audit job state store unavailable; nobody notified");
                outcome.users_failed = count_users(findings);
                return outcome;
            }
        };
        let mut by_user: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
        for f in findings {
            by_user.entry(&f.user_id).or_default().push(f);
        }
        let permits = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let window = self.cfg.renotify_secs.saturating_mul(1000);
        let mut tasks = tokio::task::JoinSet::new();
        for (user, fs) in by_user {
            let ids: Vec<String> = fs.iter().map(|f| f.connected_account_id.clone()).collect();
            let due = match store.due(user, ids, unix_now_ms(), window).await {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(error = %e, user_id = %user, "audit job state unreadable");
                    outcome.users_failed += 1;
                    continue;
                }
            };
            outcome.suppressed += fs.len() - due.len();
            if due.is_empty() {
                continue;
            }
            let due_set: HashSet<&String> = due.iter().collect();
            let selected: Vec<&Finding> = fs
                .into_iter()
                .filter(|f| due_set.contains(&f.connected_account_id))
                .collect();
            let event = Event::new(user, &selected, unix_now());
            let (notifier, store, permits) = (notifier.clone(), store.clone(), permits.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                match notifier.deliver(&event).await {
                    Ok(attempts) => {
                        let user = event.user_id.clone();
                        let n = due.len();
                        if let Err(e) = store.mark_notified(user, due, unix_now_ms()).await {
                            tracing::error!(error = %e, "could not record a notification");
                        }
                        tracing::info!(user_id = %event.user_id, connections = n, attempts,
                            "app notified of connections needing attention");
                        Some(n)
                    }
                    Err(e) => {
                        tracing::warn!(user_id = %event.user_id, error = %e,
                            "could not notify the app; will retry at the next scan");
                        None
                    }
                }
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Some(n)) => {
                    outcome.users_notified += 1;
                    outcome.connections_notified += n;
                }
                Ok(None) | Err(_) => outcome.users_failed += 1,
            }
        }
        outcome
    }
}

fn count_users(findings: &[Finding]) -> usize {
    findings
        .iter()
        .map(|f| f.user_id.as_str())
        .collect::<HashSet<_>>()
        .len()
}

impl StoreError {
    fn from_display(e: &dyn std::fmt::Display) -> Self {
        Self::new(e.to_string())
    }
}

/// Starts the scheduled scan of a gateway whose config has `[audit_job] every_secs > 0`:
/// the first pass at once, then one every `every_secs` (a pass that overruns delays the next).
/// Each pass drops the gateway's cached answers for the affected (user, toolkit) pairs and
/// writes each finding into the audit trail (`expiry_finding`). A reload that replaces the
/// job or the cache aborts this task and starts another.
pub(crate) fn spawn_schedule(
    job: &Arc<Expiry>,
    connections: &Arc<Connections>,
    audit: &crate::audit::Sink,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = job.cfg.every_secs;
    if every == 0 {
        return None;
    }
    let (job, connections, audit) = (job.clone(), connections.clone(), audit.clone());
    Some(tokio::spawn(async move {
        let Some(cluster) = job.cluster().cloned() else {
            return run_schedule(&job, &connections, &audit, every).await;
        };
        // A fleet runs one schedule: the lease holder's. Another replica takes over within
        // the lease time when the holder dies; one that loses the lease stops mid-pass.
        let retry = Duration::from_secs(cluster.config().lease_secs) / 3;
        loop {
            while !cluster.take_lease().await {
                tokio::time::sleep(retry).await;
            }
            tracing::info!("audit job lease taken; this replica runs the schedule");
            tokio::select! {
                () = cluster.lease_lost() => {}
                () = run_schedule(&job, &connections, &audit, every) => {}
            }
        }
    }))
}

/// The schedule itself: a pass at once, then one every `every` seconds.
async fn run_schedule(
    job: &Arc<Expiry>,
    connections: &Arc<Connections>,
    audit: &crate::audit::Sink,
    every: u64,
) {
    {
        let mut ticks = tokio::time::interval(Duration::from_secs(every));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let progress = Arc::new(Progress::default());
            match job.run(Some(connections), &progress).await {
                Ok(report) => {
                    for line in report.summary().lines() {
                        tracing::info!("{line}");
                    }
                    // Evidence of what was found, whether or not anyone was notified (a
                    // finding still there at the next pass is written again: it still is).
                    for f in &report.findings {
                        audit.record(
                            "expiry_finding",
                            serde_json::json!({
                                "subject": f.user_id,
                                "toolkit": f.toolkit,
                                "connected_account_id": f.connected_account_id,
                                "status": f.status,
                                "status_reason": f.status_reason,
                                "since": f.since,
                            }),
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduled audit scan failed"),
            }
        }
    }
}

/// Why `entitygate audit` failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The configuration is unusable (exit 64).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The scan could not complete (exit 1).
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Writing the output failed (exit 1).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// One pass for `entitygate audit`: every finding as one JSON line on `out`.
///
/// # Errors
/// [`AuditError`].
pub async fn audit_once(
    config: &Config,
    env: &dyn Env,
    out: &mut dyn Write,
    progress: &Arc<Progress>,
) -> Result<Report, AuditError> {
    let cfg = config.audit_job.clone().unwrap_or_else(|| {
        // Without a section, scan with the defaults and notify nobody.
        toml::from_str("").unwrap_or_else(|_| unreachable!("every key has a default"))
    });
    let client = upstream::build_client(&config.upstream)?;
    let upstream = Upstream::new(&config.upstream, env, client.clone())?;
    let job = Expiry::new(&cfg, upstream, client, env)?;
    let report = job.run(None, progress).await?;
    for f in &report.findings {
        serde_json::to_writer(&mut *out, f).map_err(std::io::Error::from)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(report)
}
