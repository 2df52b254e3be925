//! The audit trail: one structured event per decision, written as a JSON line to the
//! configured sink (`[audit] path`, else stdout) by a writer thread, and also emitted on the
//! `entitygate::audit` tracing target for log pipelines.
//!
//! An event carries who (subject), what (method, route pattern, tool, toolkit, connected
//! account), the decision (`allow` or the refusal's slug and code), the upstream status and
//! the latency. It never carries a token, an API key, a cookie or a tool argument: only values
//! the gateway itself derived or validated are recorded, and the query string as the caller
//! sent it (identity parameters included: they are the evidence when a query is refused or
//! rewritten), capped at [`MAX_QUERY`] bytes, with the values of credential-named parameters
//! (`api_key`, `token`, `secret`, ...) replaced by `[REDACTED]`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};

use crate::error::Error;

/// Longest query string recorded (the rest is cut, marked with `…`).
pub const MAX_QUERY: usize = 2048;

/// Folded names of query parameters whose values are never recorded.
const SECRET_PARAMS: &[&str] = &[
    "apikey",
    "xapikey",
    "key",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "authorization",
    "secret",
    "clientsecret",
    "password",
];

/// Audit events queued before new ones are dropped (and counted) rather than block requests.
const QUEUE: usize = 65_536;

/// How long the writer lets lines gather after a write (bounds how late a line is written).
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Where audit lines go: a bounded queue drained by a writer thread, so a slow disk never
/// stalls a request.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::SyncSender<String>,
    path: Option<PathBuf>,
}

// === impl Sink ===

impl Sink {
    /// Opens `path` for appending (created if needed), or stdout when `None`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => Box::new(std::io::stdout()),
        };
        // One write per batch of lines, not one per line.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, out);
        let (tx, rx) = mpsc::sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("entitygate-audit".into())
            .spawn(move || {
                while let Ok(line) = rx.recv() {
                    let _ = out.write_all(line.as_bytes());
                    // Drain what is queued before flushing, so bursts cost one write.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(more.as_bytes());
                    }
                    let _ = out.flush();
                    // Let the next lines gather for a moment: a sender wakes this thread only
                    // while it waits in `recv`, so under load this turns one wake-up (a futex
                    // call and two context switches) per request into one per batch. At rest
                    // the first line is still written at once.
                    std::thread::sleep(BATCH_PAUSE);
                }
            })?;
        Ok(Self {
            tx,
            path: path.map(Path::to_owned),
        })
    }

    /// The file this sink appends to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn write(&self, line: String) {
        if self.tx.try_send(line).is_err() {
            crate::metrics::audit_dropped();
        }
    }
}

/// One audit line, in the order the keys are written.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: String,
    request_id: &'a str,
    subject: Option<&'a str>,
    method: &'a str,
    path: Option<&'a str>,
    query: Option<&'a str>,
    route: &'a str,
    policy: &'a str,
    tool: Option<&'a str>,
    toolkit: Option<&'a str>,
    connected_account_id: Option<&'a str>,
    session: Option<&'a str>,
    decision: &'a str,
    code: u32,
    identity_rewritten: bool,
    rule: Option<&'a str>,
    status: u16,
    upstream_status: Option<u16>,
    latency_ms: f64,
}

/// The audit record of one request, filled in as the request is processed.
#[derive(Debug, Default)]
pub struct Audit {
    method: String,
    path: Option<String>,
    query: Option<String>,
    route: &'static str,
    policy: &'static str,
    subject: Option<String>,
    tool: Option<String>,
    toolkit: Option<String>,
    account: Option<String>,
    session: Option<String>,
    decision: &'static str,
    /// Refused inside a successful HTTP answer (an MCP tool call answered with `isError`):
    /// the request's own `allow` must not overwrite it.
    in_band: bool,
    code: u32,
    upstream_status: Option<u16>,
    identity_rewritten: bool,
    rule: Option<std::sync::Arc<str>>,
}

// === impl Audit ===

impl Audit {
    /// Starts a record. The path is recorded only when canonical (anything else is refused
    /// as junk and may carry anything), so a refusal can still be traced to the SDK call.
    pub fn new(method: &Method, path: &str) -> Self {
        Self {
            method: method.as_str().to_owned(),
            path: crate::path::check(path).ok().map(str::to_owned),
            route: "-",
            policy: "none",
            // Until the request ends with a decision: a client that leaves first leaves this.
            decision: "abandoned",
            ..Self::default()
        }
    }

    /// The query string as sent (see the module docs for what is cut and redacted).
    pub fn query(&mut self, query: Option<&str>) {
        self.query = query.filter(|q| !q.is_empty()).map(recorded_query);
    }

    /// The verified subject.
    pub fn subject(&mut self, subject: &str) {
        self.subject = Some(subject.to_owned());
    }

    /// The matched route pattern and its policy's name.
    pub fn route(&mut self, pattern: &'static str, policy: &'static str) {
        self.route = pattern;
        self.policy = policy;
    }

    /// The tool slug of an execution.
    pub fn tool(&mut self, tool: &str) {
        self.tool = Some(tool.to_owned());
    }

    /// The toolkit an execution was gated on.
    pub fn toolkit(&mut self, toolkit: &str) {
        self.toolkit = Some(toolkit.to_owned());
    }

    /// A connected account named by the request.
    pub fn account(&mut self, account: &str) {
        self.account = Some(account.to_owned());
    }

    /// The tool router session a call ran in (MCP session endpoints, the front door).
    pub fn session(&mut self, id: &str) {
        self.session = Some(id.to_owned());
    }

    /// The session recorded, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The tool-policy rule that decided (the refusing one, else the last allowing one).
    pub fn rule(&mut self, rule: &std::sync::Arc<str>) {
        self.rule = Some(rule.clone());
    }

    /// The caller named another user, and the gateway pinned or refused it.
    pub fn mismatch(&mut self) {
        self.identity_rewritten = true;
    }

    /// The upstream answered with `status`.
    pub fn upstream(&mut self, status: StatusCode) {
        self.upstream_status = Some(status.as_u16());
    }

    /// The request was allowed and forwarded (or answered locally).
    /// Does nothing when a handler already recorded a refusal that it answered in its own
    /// shape ([`Audit::refuse_as`]): a refusal is never audited as `allow`.
    pub fn allow(&mut self) {
        if self.in_band || self.code != 0 {
            return;
        }
        self.decision = "allow";
    }

    /// A refusal answered by the handler itself (the Composio webhook's own error shape).
    pub fn refuse_as(&mut self, slug: &'static str, code: u32) {
        self.decision = slug;
        self.code = code;
    }

    /// The request was refused.
    pub fn refuse(&mut self, e: &Error) {
        self.decision = e.slug();
        self.code = e.code();
    }

    /// The request was answered, but what it asked for was refused (the refusal is inside
    /// the answer, as an MCP tool result or JSON-RPC error).
    pub fn refuse_in_band(&mut self, e: &Error) {
        self.refuse(e);
        self.in_band = true;
    }

    /// Emits the event: a JSON line to `sink`, a tracing event, and the request metrics.
    pub fn finish(
        &self,
        sink: &Sink,
        request_id: &HeaderValue,
        status: StatusCode,
        latency: Duration,
    ) {
        let request_id = request_id.to_str().unwrap_or("-");
        crate::metrics::request(self.policy, self.decision, status.as_u16(), latency);
        let line = Line {
            time: crate::clock::now_rfc3339(),
            request_id,
            subject: self.subject.as_deref(),
            method: &self.method,
            path: self.path.as_deref(),
            query: self.query.as_deref(),
            route: self.route,
            policy: self.policy,
            tool: self.tool.as_deref(),
            toolkit: self.toolkit.as_deref(),
            connected_account_id: self.account.as_deref(),
            session: self.session.as_deref(),
            decision: self.decision,
            code: self.code,
            identity_rewritten: self.identity_rewritten,
            rule: self.rule.as_deref(),
            status: status.as_u16(),
            upstream_status: self.upstream_status,
            latency_ms: latency.as_micros() as f64 / 1000.0,
        };
        // A borrowed struct serialised straight into one buffer: no map, no copies.
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        sink.write(text);
        tracing::debug!(
            target: "entitygate::audit",
            request_id,
            subject = self.subject.as_deref().unwrap_or("-"),
            route = self.route,
            decision = self.decision,
            code = self.code,
            status = status.as_u16(),
            "decision"
        );
    }
}

/// `query` as sent, with credential-named values redacted and the whole cut at [`MAX_QUERY`].
fn recorded_query(query: &str) -> String {
    let mut out = String::with_capacity(query.len().min(MAX_QUERY + 4));
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_urlencoded::parse(key.as_bytes())
            .next()
            .map(|(k, _)| k.into_owned())
            .unwrap_or_default();
        let base = crate::rewrite::query_base_key(&name);
        if !value.is_empty()
            && SECRET_PARAMS
                .iter()
                .any(|f| crate::rewrite::folded_eq(base, f))
        {
            out.push_str(key);
            out.push_str("=[REDACTED]");
        } else {
            out.push_str(pair);
        }
        if out.len() > MAX_QUERY {
            break;
        }
    }
    if out.len() > MAX_QUERY {
        let mut cut = MAX_QUERY;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_recorded_with_identities_and_without_secrets() {
        assert_eq!(
            recorded_query("user_id%5B0%5D=bob&limit=5&api_key=sk_live_x&Token=t&x"),
            "user_id%5B0%5D=bob&limit=5&api_key=[REDACTED]&Token=[REDACTED]&x"
        );
        let long = "a=".to_owned() + &"b".repeat(5000);
        let q = recorded_query(&long);
        assert!(q.len() <= MAX_QUERY + '…'.len_utf8() && q.ends_with('…'));
    }
}
