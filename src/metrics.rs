//! Prometheus metrics, through the `metrics` facade and its Prometheus exporter.
//!
//! The recorder is process-wide and installed once; every gateway in the process (tests run
//! several) reports into it. Counters owned by other modules as plain atomics (the connection
//! cache's) are copied in at scrape time, so the hot path never touches a registry for them.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder (once per process). `None` when another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            const BUCKETS: &[f64] = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 180.0,
            ];
            PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .install_recorder()
                .map_err(|e| tracing::warn!(error = %e, "metrics recorder not installed"))
                .ok()
        })
        .as_ref()
}

/// The labels of a finished request: policy, decision, status.
type RequestLabels = (&'static str, &'static str, u16);

/// One request finished.
pub(crate) fn request(
    policy: &'static str,
    decision: &'static str,
    status: u16,
    elapsed: Duration,
) {
    thread_local! {
        /// The handles of the per-request series by label set, made once per thread: the
        /// facade would otherwise build, hash and look up a labelled key in the registry
        /// (and allocate for it) on every request. The label values are static, so the
        /// map stays as small as the set of routes, decisions and statuses seen.
        static SERIES: RefCell<HashMap<RequestLabels, (Counter, Histogram)>> =
            RefCell::new(HashMap::new());
    }
    SERIES.with_borrow_mut(|series| {
        let (count, duration) = series.entry((policy, decision, status)).or_insert_with(|| {
            (
                metrics::counter!("entitygate_requests_total",
                    "policy" => policy, "decision" => decision, "status" => status_label(status)),
                metrics::histogram!("entitygate_request_duration_seconds", "policy" => policy),
            )
        });
        count.increment(1);
        duration.record(elapsed.as_secs_f64());
    });
}

/// The statuses the gateway answers with, as static labels (no allocation per request).
fn status_label(status: u16) -> metrics::SharedString {
    let s: &'static str = match status {
        200 => "200",
        201 => "201",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        415 => "415",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return metrics::SharedString::from(other.to_string()),
    };
    metrics::SharedString::const_str(s)
}

/// One upstream exchange finished (until the response head).
pub(crate) fn upstream(elapsed: Duration) {
    thread_local! {
        static UPSTREAM: Histogram = metrics::histogram!("entitygate_upstream_duration_seconds");
    }
    UPSTREAM.with(|h| h.record(elapsed.as_secs_f64()));
}

thread_local! {
    static IN_FLIGHT: Gauge = metrics::gauge!("entitygate_in_flight_requests");
}

/// Counts a request as in progress until dropped, even if its future is dropped mid-way.
pub(crate) struct InFlight;

impl InFlight {
    pub(crate) fn start() -> Self {
        IN_FLIGHT.with(|g| g.increment(1.0));
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.with(|g| g.decrement(1.0));
    }
}

/// An HTTP request on an MCP endpoint (`POST`, `GET`, `DELETE`).
pub(crate) fn mcp_http(method: &str) {
    let m: &'static str = match method {
        "POST" => "POST",
        "GET" => "GET",
        "DELETE" => "DELETE",
        _ => "other",
    };
    metrics::counter!("entitygate_mcp_http_requests_total", "method" => m).increment(1);
}

/// One JSON-RPC message from an MCP client, by method (a fixed list) and decision (an error
/// slug or `allow`).
pub(crate) fn mcp_message(method: &'static str, decision: &'static str) {
    metrics::counter!("entitygate_mcp_messages_total",
        "method" => method, "decision" => decision)
    .increment(1);
}

/// A relayed MCP event stream ended (`done`, `idle`, `upstream_error`, `malformed`).
pub(crate) fn mcp_stream_end(reason: &'static str) {
    metrics::counter!("entitygate_mcp_streams_ended_total", "reason" => reason).increment(1);
}

/// A JWKS fetch ended.
pub(crate) fn jwks_fetch(ok: bool) {
    if ok {
        metrics::counter!("entitygate_jwks_refreshes_total").increment(1);
    } else {
        metrics::counter!("entitygate_jwks_refresh_failures_total").increment(1);
    }
}

/// A tool definition was found to differ from the tool lock (`changed`, `unlisted`,
/// `flagged`), once per tool and version.
pub(crate) fn tool_drift(kind: &'static str) {
    metrics::counter!("entitygate_tool_drift_total", "kind" => kind).increment(1);
}

/// A configuration reload was attempted.
pub(crate) fn reload(ok: bool) {
    let outcome = if ok { "ok" } else { "rejected" };
    metrics::counter!("entitygate_reloads_total", "outcome" => outcome).increment(1);
}

/// A connection was closed because it sent no request head in time.
pub(crate) fn connection_timed_out() {
    metrics::counter!("entitygate_connections_timed_out_total").increment(1);
}

/// An idle HTTP/1 connection gave its buffers back ([`crate::accept`]).
pub(crate) fn connection_parked() {
    metrics::counter!("entitygate_connections_parked_total").increment(1);
}

/// A connection was refused at accept because the listener's cap was reached.
pub(crate) fn connection_refused(listener: &'static str) {
    metrics::counter!("entitygate_connections_refused_total", "listener" => listener).increment(1);
}

/// An audit event could not be written.
pub(crate) fn audit_dropped() {
    metrics::counter!("entitygate_audit_dropped_total").increment(1);
}

/// The audit writer put the line numbered `seq` on disk: a scraper that keeps the highest
/// value seen can tell when lines were later cut off the end of the log.
pub(crate) fn audit_last_seq(seq: u64) {
    // Exact up to 2^53 lines.
    metrics::gauge!("entitygate_audit_last_seq").set(seq as f64);
}

/// The connection cache's counters at one moment, for [`render`]. The cache fills it in
/// (`connections::Stats` converts into it), so this module knows no cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Answers served from cache.
    pub hits: u64,
    /// Lookups sent upstream.
    pub misses: u64,
    /// Requests that waited on another request's lookup.
    pub coalesced: u64,
    /// Entries evicted to respect the bound.
    pub evictions: u64,
    /// Stale answers served during an outage.
    pub stale: u64,
}

/// Renders the exposition text, with the connection cache's counters copied in.
pub fn render(cache: impl Into<CacheCounts>) -> String {
    let c = cache.into();
    let pairs = [
        ("entitygate_connection_cache_hits_total", c.hits),
        ("entitygate_connection_cache_misses_total", c.misses),
        ("entitygate_connection_cache_coalesced_total", c.coalesced),
        ("entitygate_connection_cache_evictions_total", c.evictions),
        ("entitygate_connection_cache_stale_total", c.stale),
    ];
    for (name, value) in pairs {
        metrics::counter!(name).absolute(value);
    }
    // Shown from the first scrape (as 0), not only after the first drop: a dashboard panel
    // over it reads "none dropped" rather than "no data".
    metrics::counter!("entitygate_audit_dropped_total").increment(0);
    install().map(PrometheusHandle::render).unwrap_or_default()
}

/// An admin request was refused for want of the admin token.
pub(crate) fn admin_refused() {
    metrics::counter!("entitygate_admin_refused_total").increment(1);
}

/// An admin authentication failed (`via`: `api` or `console`; `reason`: `missing` or
/// `wrong`).
pub(crate) fn admin_auth_failed(via: &'static str, reason: &'static str) {
    metrics::counter!("entitygate_admin_auth_failures_total", "via" => via, "reason" => reason)
        .increment(1);
}

/// An approval event: `requested`, `granted`, `denied`, `used`, `expired`
/// (`entitygate_approvals_total{event}`; decided = granted + denied).
pub(crate) fn approval(event: &'static str) {
    metrics::counter!("entitygate_approvals_total", "event" => event).increment(1);
}

/// Approval requests pending now (set by the sweep).
pub(crate) fn approvals_pending(n: usize) {
    metrics::gauge!("entitygate_approvals_pending").set(n as f64);
}

/// A request was refused by a kill-switch rule.
pub(crate) fn kill_switch_refused() {
    metrics::counter!("entitygate_kill_switch_refusals_total").increment(1);
}

/// A safe request was repeated with the previous upstream key after a 401 (`accepted`: the
/// previous key was not refused too).
pub(crate) fn previous_key_used(accepted: bool) {
    let outcome = if accepted { "accepted" } else { "refused" };
    metrics::counter!("entitygate_upstream_previous_key_total", "outcome" => outcome).increment(1);
}

/// Composio's answer to an execution showed a dead connection.
pub(crate) fn connection_broken() {
    metrics::counter!("entitygate_connections_broken_total").increment(1);
}

/// A reload prompted by a changed secret file.
pub(crate) fn secret_reload(ok: bool) {
    let outcome = if ok { "ok" } else { "rejected" };
    metrics::counter!("entitygate_secret_reloads_total", "outcome" => outcome).increment(1);
}
