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
//! (`api_key`, `token`, `secret`, ...) replaced by `[REDACTED]`. Of the token it records the
//! `jti` and issuer; of the client its socket address and `User-Agent` (capped).
//!
//! Each line is entitygate's own JSON, or with `[audit] format = "ocsf"` the OCSF event
//! [`ocsf::map`] makes of it on the writer thread; either way the writer chains it ([`chain`]).

mod chain;
pub mod feed;
pub mod ocsf;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};

pub use chain::{seal, seal_ocsf, verify, Break, Head, HmacKey, Report, GENESIS};

pub use crate::config::AuditFormat;
use crate::config::{AuditConfig, ConfigError, Env};
use crate::error::Error;

impl HmacKey {
    /// The key `[audit]` names, when it names one. Loading it is the audit sink's business:
    /// the config only says where the key lives.
    ///
    /// # Errors
    /// Both sources set, the variable unset, the file unreadable, or the key too short.
    pub fn from_config(cfg: &AuditConfig, env: &dyn Env) -> Result<Option<Self>, ConfigError> {
        match (&cfg.hmac_key_env, &cfg.hmac_key_file) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "audit.hmac_key_env",
                "set hmac_key_env or hmac_key_file, not both",
            )),
            (Some(var), None) => {
                let value = env.var(var).ok_or_else(|| {
                    ConfigError::invalid(
                        "audit.hmac_key_env",
                        format!("environment variable {var} is not set"),
                    )
                })?;
                Self::new(value.as_bytes())
                    .map(Some)
                    .map_err(|e| ConfigError::invalid("audit.hmac_key_env", e))
            }
            (None, Some(path)) => {
                Self::from_file(path)
                    .map(Some)
                    .map_err(|reason| ConfigError::File {
                        key: "audit.hmac_key_file".into(),
                        path: path.clone(),
                        reason,
                    })
            }
        }
    }
}

/// Longest query string recorded (the rest is cut, marked with `…`).
pub const MAX_QUERY: usize = 2048;

/// Longest `User-Agent` recorded (the rest is cut, marked with `…`).
pub const MAX_USER_AGENT: usize = 256;

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

/// Room for a typical event line (about 500 bytes), so that serialising it does not grow and
/// copy the buffer several times on the request's thread.
const LINE_CAPACITY: usize = 640;

/// How long the writer lets lines gather after a write (bounds how late a line is written).
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// How often an idle writer looks for a rotated or truncated file.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How often, at most, the writer logs where the chain stands ("audit checkpoint" on stderr,
/// a sink other than the file), so that an anchor for `verify --after` exists off the file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

/// What the request path hands the writer thread.
enum Msg {
    /// One serialised event (a JSON object, no newline).
    Event(String),
    /// Reopen the file (SIGHUP, reload), with this key and format from now on.
    Reopen(Option<HmacKey>, AuditFormat),
    /// Answer once everything queued before is written.
    Flush(mpsc::SyncSender<()>),
}

/// Where audit lines go: a bounded queue drained by a writer thread, so a slow disk never
/// stalls a request. The writer chains the lines ([`chain`]): it alone numbers and hashes
/// them, in the order it writes them.
#[derive(Clone, Debug)]
pub struct Sink {
    tx: mpsc::SyncSender<Msg>,
    path: Option<PathBuf>,
    key: Option<HmacKey>,
    format: AuditFormat,
    /// A copy of every line for the console ([`feed`]), off until it starts.
    feed: std::sync::Arc<feed::Feed>,
}

// === impl Sink ===

impl Sink {
    /// Opens `path` for appending (created if needed), or stdout when `None`, continuing the
    /// chain of what the file already holds, and authenticating every line with `key`.
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open(path: Option<&Path>, key: Option<HmacKey>) -> std::io::Result<Self> {
        Self::open_as(path, key, AuditFormat::Entitygate)
    }

    /// [`Sink::open`], writing each line in `format` (`[audit] format`).
    ///
    /// # Errors
    /// When the file cannot be opened or read.
    pub fn open_as(
        path: Option<&Path>,
        key: Option<HmacKey>,
        format: AuditFormat,
    ) -> std::io::Result<Self> {
        let mut writer = Writer::open(path.map(Path::to_owned), key.clone(), format)?;
        let (tx, rx) = mpsc::sync_channel::<Msg>(QUEUE);
        std::thread::Builder::new()
            .name("entitygate-audit".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Self {
            tx,
            path: path.map(Path::to_owned),
            key,
            format,
            feed: std::sync::Arc::default(),
        })
    }

    /// The console's copy of the decisions.
    pub fn feed(&self) -> &std::sync::Arc<feed::Feed> {
        &self.feed
    }

    /// This sink, feeding `previous`'s console (a reload that moved the file).
    pub(crate) fn sharing_feed(self, previous: Option<&Sink>) -> Self {
        match previous {
            Some(p) => Self {
                feed: p.feed.clone(),
                ..self
            },
            None => self,
        }
    }

    /// The file this sink appends to, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The same sink, authenticating lines with `key` and writing them in `format` once
    /// [`Sink::reopen`] is called (a reload: the chain goes on, across a change of format).
    pub(crate) fn with_settings(&self, key: Option<HmacKey>, format: AuditFormat) -> Self {
        Self {
            key,
            format,
            ..self.clone()
        }
    }

    /// Asks the writer to reopen its file (after `logrotate` moved it, on SIGHUP or reload)
    /// and to start a new file's chain with a `log_opened` record.
    pub fn reopen(&self) {
        if self
            .tx
            .try_send(Msg::Reopen(self.key.clone(), self.format))
            .is_err()
        {
            crate::metrics::audit_dropped();
        }
    }

    /// Waits (up to `timeout`) until every event queued before is written. Blocks the thread:
    /// for tests, shutdown and the CLI, never on the request path.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let (ack, done) = mpsc::sync_channel(1);
        if self.tx.send(Msg::Flush(ack)).is_err() {
            return false;
        }
        done.recv_timeout(timeout).is_ok()
    }

    /// Writes an operator event (a kill-switch change, a broken connection) into the chain:
    /// `{"time", "event": kind, ...fields}`. `fields` must be an object.
    pub fn record(&self, kind: &str, fields: serde_json::Value) {
        let mut line = serde_json::Map::new();
        line.insert("time".into(), crate::clock::now_rfc3339().into());
        line.insert("event".into(), kind.into());
        if let serde_json::Value::Object(m) = fields {
            line.extend(m);
        }
        tracing::info!(target: "entitygate::audit", event = kind, "operator event");
        self.write(serde_json::Value::Object(line).to_string());
    }

    fn write(&self, event: String) {
        if self.tx.try_send(Msg::Event(event)).is_err() {
            crate::metrics::audit_dropped();
        }
    }
}

/// The writer thread's state: the open file, where the chain stands, and the batch buffer.
struct Writer {
    path: Option<PathBuf>,
    out: Option<std::fs::File>,
    key: Option<HmacKey>,
    format: AuditFormat,
    head: chain::Head,
    /// Bytes in the file as far as this writer knows: less on disk means `copytruncate`.
    written: u64,
    /// The identity of the open file: another one at `path` means it was moved away.
    file_id: Option<(u64, u64)>,
    batch: Vec<u8>,
    events: Vec<String>,
    /// stdout's `log_opened` record waits for the first event, so a process that decides
    /// nothing (`explain`, `check-config`) prints nothing.
    opening: Option<&'static str>,
    /// A line cut short found on opening the file, for the next `log_opened` record.
    damage: Option<chain::Damage>,
    /// The last line known to be on disk: its `seq` and hash.
    on_disk: Option<(u64, String)>,
    checkpoints: Checkpoints,
}

impl Writer {
    fn open(
        path: Option<PathBuf>,
        key: Option<HmacKey>,
        format: AuditFormat,
    ) -> std::io::Result<Self> {
        let mut w = Self {
            path,
            out: None,
            key,
            format,
            head: chain::Head::default(),
            written: 0,
            file_id: None,
            batch: Vec::with_capacity(1 << 16),
            events: Vec::new(),
            opening: None,
            damage: None,
            on_disk: None,
            checkpoints: Checkpoints::default(),
        };
        let tail = w.open_file()?;
        let reason = if tail.head.is_some() || tail.damage.is_some() {
            "restart"
        } else {
            "start"
        };
        if let Some(head) = tail.head {
            w.head = head;
        }
        if w.path.is_some() {
            w.opened(reason);
            w.write_batch();
            w.checkpoint(false);
        } else {
            w.opening = Some(reason);
        }
        Ok(w)
    }

    /// Opens the file for appending and returns what its end holds (the chain there, a
    /// line cut short).
    fn open_file(&mut self) -> std::io::Result<chain::Tail> {
        let Some(p) = &self.path else {
            return Ok(chain::Tail::default());
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)?;
        let meta = f.metadata()?;
        self.written = meta.len();
        self.file_id = Some(file_id(&meta));
        self.out = Some(f);
        self.end_partial_line()
    }

    /// Ends a last line that a crash cut short with a newline, so the next line is not glued
    /// to it (which would hide it and everything after from `verify`), and keeps where it is
    /// for the next `log_opened` record.
    fn end_partial_line(&mut self) -> std::io::Result<chain::Tail> {
        let (Some(path), Some(out)) = (&self.path, &mut self.out) else {
            return Ok(chain::Tail::default());
        };
        let tail = chain::tail_of(path)?;
        if tail.unterminated {
            out.write_all(b"\n")?;
            self.written += 1;
        }
        if let Some(d) = tail.damage {
            tracing::warn!(
                offset = d.offset,
                bytes = d.bytes,
                "the audit log ends in a line cut short (a crash mid-write); recorded in log_opened"
            );
        }
        self.damage = tail.damage;
        Ok(tail)
    }

    /// Seals the `log_opened` record that links this file to the line written before.
    fn opened(&mut self, reason: &str) {
        let mut record = serde_json::json!({
            "time": crate::clock::now_rfc3339(),
            "event": "log_opened",
            "reason": reason,
            "file": self.path.as_ref().map(|p| p.display().to_string()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        if let Some(d) = self.damage.take() {
            // Hashed and HMAC'd with the record: `verify` skips exactly this line, no other.
            record["crash_damage"] = serde_json::json!({"offset": d.offset, "bytes": d.bytes});
        }
        let text = record.to_string();
        self.seal(&text);
    }

    /// Chains one event (a JSON object) into the batch, in the configured format.
    fn seal(&mut self, event: &str) {
        let ocsf = match self.format {
            AuditFormat::Ocsf => ocsf::split(event),
            AuditFormat::Entitygate => None,
        };
        match ocsf {
            Some((event, unmapped)) => chain::seal_ocsf(
                &mut self.head,
                self.key.as_ref(),
                &event,
                &unmapped,
                &mut self.batch,
            ),
            // (OCSF: an event that is not a JSON object, which the gateway never writes, is
            // still chained as it is rather than lost.)
            None => chain::seal(&mut self.head, self.key.as_ref(), event, &mut self.batch),
        }
    }

    fn run(&mut self, rx: &mpsc::Receiver<Msg>) {
        let mut acks = Vec::new();
        loop {
            let first = match rx.recv_timeout(IDLE_CHECK) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.check_rotation();
                    self.write_batch();
                    self.checkpoint(false);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut reopen = None;
            // Drain what is queued, so bursts cost one write.
            for msg in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match msg {
                    Msg::Event(e) => self.events.push(e),
                    Msg::Reopen(key, format) => {
                        // Lines queued before the reopen belong to the file before it.
                        self.seal_events();
                        reopen = Some((key, format));
                    }
                    Msg::Flush(ack) => acks.push(ack),
                }
                if reopen.is_some() {
                    break;
                }
            }
            if reopen.is_none() {
                self.check_rotation();
            }
            self.seal_events();
            self.write_batch();
            if let Some((key, format)) = reopen {
                self.key = key;
                self.format = format;
                self.reopen("reopen");
                self.write_batch();
            }
            // A flush is how a stopping gateway says goodbye: the chain's end is logged then.
            self.checkpoint(!acks.is_empty());
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            // Let the next lines gather for a moment: a sender wakes this thread only while
            // it waits in `recv`, so under load this turns one wake-up (a futex call and two
            // context switches) per request into one per batch. At rest the first line is
            // still written at once.
            std::thread::sleep(BATCH_PAUSE);
        }
        self.seal_events();
        self.write_batch();
        self.checkpoint(true);
    }

    /// Logs the last line on disk as an anchor ("audit checkpoint", seq and hash) when the
    /// chain moved since the last one, at most every [`CHECKPOINT_EVERY`] unless `force`d.
    fn checkpoint(&mut self, force: bool) {
        let Some((seq, hash)) = &self.on_disk else {
            return;
        };
        if self.checkpoints.due(*seq, std::time::Instant::now(), force) {
            tracing::info!(
                target: "entitygate::audit",
                seq,
                hash = %hash,
                anchor = %format_args!("{seq}:{hash}"),
                file = %self.path.as_deref().map_or("-".into(), Path::to_string_lossy),
                "audit checkpoint"
            );
        }
    }

    fn seal_events(&mut self) {
        if !self.events.is_empty() {
            if let Some(reason) = self.opening.take() {
                self.opened(reason);
            }
        }
        // Taken and given back, so the vector keeps its room from one batch to the next.
        let mut events = std::mem::take(&mut self.events);
        for e in events.drain(..) {
            self.seal(&e);
        }
        self.events = events;
    }

    /// Notices a file moved away (`logrotate`'s default `create`) or truncated in place
    /// (`copytruncate`), and starts the new file with a `log_opened` record.
    fn check_rotation(&mut self) {
        let Some(path) = &self.path else { return };
        match std::fs::metadata(path) {
            Ok(meta) if Some(file_id(&meta)) != self.file_id => self.reopen("rotated"),
            Err(_) => self.reopen("rotated"),
            Ok(meta) if meta.len() < self.written => {
                self.written = meta.len();
                // Cut anywhere, even in the middle of a line.
                if let Err(e) = self.end_partial_line() {
                    tracing::error!(error = %e, "cannot read the end of the truncated audit log");
                }
                self.opened("truncated");
            }
            Ok(_) => {}
        }
    }

    fn reopen(&mut self, reason: &str) {
        match self.open_file() {
            // The chain goes on from this writer's last line, whatever the file holds.
            Ok(_) => self.opened(reason),
            Err(e) => {
                // Keep writing to the file still open rather than lose lines.
                tracing::error!(error = %e, "cannot reopen the audit log; still writing to the old file");
            }
        }
    }

    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let result = match &mut self.out {
            Some(f) => f.write_all(&self.batch),
            None => {
                let mut out = std::io::stdout().lock();
                out.write_all(&self.batch).and_then(|()| out.flush())
            }
        };
        match result {
            Ok(()) => {
                self.written += self.batch.len() as u64;
                // Everything sealed so far is on disk.
                if let Some(seq) = self.head.next_seq.checked_sub(1) {
                    crate::metrics::audit_last_seq(seq);
                    self.on_disk = Some((seq, self.head.last_hash.clone()));
                }
            }
            Err(e) => {
                crate::metrics::audit_dropped();
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
        self.batch.clear();
    }
}

/// When the writer last logged a checkpoint, and of which line.
#[derive(Debug, Default)]
struct Checkpoints {
    last: Option<(std::time::Instant, u64)>,
}

impl Checkpoints {
    /// Whether to log a checkpoint of line `seq` at `now`: the chain moved since the last
    /// one, and [`CHECKPOINT_EVERY`] has passed (or the end of the chain must be logged now).
    fn due(&mut self, seq: u64, now: std::time::Instant, force: bool) -> bool {
        match self.last {
            Some((_, last)) if last == seq => false,
            Some((at, _)) if !force && now.saturating_duration_since(at) < CHECKPOINT_EVERY => {
                false
            }
            _ => {
                self.last = Some((now, seq));
                true
            }
        }
    }
}

#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_: &std::fs::Metadata) -> (u64, u64) {
    (0, 0)
}

/// One audit line, in the order the keys are written.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: crate::clock::Rfc3339,
    request_id: &'a str,
    trace_id: Option<&'a str>,
    subject: Option<&'a str>,
    /// The token's `jti` and issuer (never the token itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: Option<&'a str>,
    method: &'a str,
    path: Option<&'a str>,
    query: Option<&'a str>,
    /// The peer's address (`ip:port`), as the gateway's socket saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_agent: Option<&'a str>,
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
    /// The constraint on arguments that refused (its name only, never the values read).
    #[serde(skip_serializing_if = "Option::is_none")]
    constraint: Option<&'a str>,
    status: u16,
    upstream_status: Option<u16>,
    /// `"previous"` when Composio refused the current key and the previous one was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_key: Option<&'static str>,
    latency_ms: f64,
}

/// The audit record of one request, filled in as the request is processed.
#[derive(Debug, Default)]
pub struct Audit {
    /// Every fact in the order it was recorded, for `entitygate explain` (off otherwise).
    journal: Option<Vec<(&'static str, String)>>,
    trace_id: Option<String>,
    method: Method,
    path: Option<String>,
    query: Option<String>,
    route: &'static str,
    policy: &'static str,
    subject: Option<String>,
    jti: Option<String>,
    issuer: Option<String>,
    source: Option<String>,
    user_agent: Option<String>,
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
    upstream_key: Option<&'static str>,
    identity_rewritten: bool,
    rule: Option<std::sync::Arc<str>>,
    constraint: Option<std::sync::Arc<str>>,
}

// === impl Audit ===

impl Audit {
    /// Starts a record. The path is recorded only when canonical (anything else is refused
    /// as junk and may carry anything), so a refusal can still be traced to the SDK call.
    pub fn new(method: &Method, path: &str) -> Self {
        Self {
            method: method.clone(),
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

    /// Where the request came from: the peer's socket address, and its `User-Agent` (visible
    /// ASCII only, cut at [`MAX_USER_AGENT`] bytes: the client chooses it).
    pub fn client(
        &mut self,
        source: Option<std::net::SocketAddr>,
        user_agent: Option<&HeaderValue>,
    ) {
        self.source = source.map(|a| a.to_string());
        self.user_agent = user_agent
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| match v.get(..MAX_USER_AGENT) {
                Some(cut) if cut.len() < v.len() => format!("{cut}…"),
                _ => v.to_owned(),
            });
    }

    /// The same caller as `request` (trace, client, token): the record of one item of a batch
    /// `request` carried.
    pub(crate) fn same_caller_as(&mut self, request: &Audit) {
        self.trace_id.clone_from(&request.trace_id);
        self.source.clone_from(&request.source);
        self.user_agent.clone_from(&request.user_agent);
        self.jti.clone_from(&request.jti);
        self.issuer.clone_from(&request.issuer);
    }

    /// The verified token's `jti` and issuer, for the actor of the event.
    pub fn token(&mut self, jti: Option<&str>, issuer: Option<&str>) {
        self.jti = jti.map(str::to_owned);
        self.issuer = issuer.map(str::to_owned);
    }

    /// Keeps every fact recorded from now on, in order (for a dry run).
    pub(crate) fn keep_journal(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// The facts recorded since [`Audit::keep_journal`]: (what, value).
    pub(crate) fn journal(&self) -> &[(&'static str, String)] {
        self.journal.as_deref().unwrap_or_default()
    }

    fn note(&mut self, what: &'static str, value: &str) {
        if let Some(j) = &mut self.journal {
            // A carrier names its tool before the decision names it again: one fact, once. (A
            // tool invoked twice is two facts: something was decided about the first.)
            let decided = |w: &&str| matches!(*w, "toolkit" | "rule" | "connected_account_id");
            let repeated = j
                .iter()
                .rev()
                .take_while(|(w, _)| !decided(w))
                .any(|(w, v)| *w == what && v == value);
            if repeated {
                return;
            }
            j.push((what, value.to_owned()));
        }
    }

    /// The trace this request belongs to (W3C trace id, 32 hex digits).
    pub fn trace(&mut self, trace_id: String) {
        self.trace_id = Some(trace_id);
    }

    /// The verified subject, once known.
    pub fn subject_ref(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// The decision so far (`abandoned` until one is made).
    pub fn decision(&self) -> &'static str {
        self.decision
    }

    /// The matched route pattern (`-` before one matched).
    pub fn route_pattern(&self) -> &'static str {
        self.route
    }

    /// The tool, when the request ran one.
    pub fn tool_ref(&self) -> Option<&str> {
        self.tool.as_deref()
    }

    /// The verified subject.
    pub fn subject(&mut self, subject: &str) {
        self.note("subject", subject);
        set(&mut self.subject, subject);
    }

    /// The matched route pattern and its policy's name.
    pub fn route(&mut self, pattern: &'static str, policy: &'static str) {
        self.note("route", pattern);
        self.note("policy", policy);
        self.route = pattern;
        self.policy = policy;
    }

    /// The tool slug of an execution.
    pub fn tool(&mut self, tool: &str) {
        self.note("tool", tool);
        set(&mut self.tool, tool);
    }

    /// The request's own tool again, after a decision on its invocations named theirs: the
    /// audit line names the request's tool; the journal already holds it.
    pub(crate) fn tool_of_request(&mut self, tool: &str) {
        set(&mut self.tool, tool);
    }

    /// The toolkit an execution was gated on.
    pub fn toolkit(&mut self, toolkit: &str) {
        self.note("toolkit", toolkit);
        set(&mut self.toolkit, toolkit);
    }

    /// A connected account named by the request.
    pub fn account(&mut self, account: &str) {
        self.note("connected_account_id", account);
        set(&mut self.account, account);
    }

    /// The tool router session a call ran in (MCP session endpoints, the front door).
    pub fn session(&mut self, id: &str) {
        set(&mut self.session, id);
    }

    /// The session recorded, if any.
    pub fn session_id(&self) -> Option<&str> {
        self.session.as_deref()
    }

    /// The tool-policy rule that decided (the refusing one, else the last allowing one).
    pub fn rule(&mut self, rule: &std::sync::Arc<str>) {
        self.note("rule", rule);
        self.rule = Some(rule.clone());
    }

    /// A constraint on arguments checked (`held`), or the one that refused; only a refusing
    /// one is kept for the audit line. Never the argument values.
    pub(crate) fn constraint(&mut self, name: &std::sync::Arc<str>, held: bool) {
        if self.journal.is_some() {
            let outcome = if held { "held" } else { "refused" };
            self.note("constraint", &format!("{name}: {outcome}"));
        }
        if !held {
            self.constraint = Some(name.clone());
        }
    }

    /// The caller named another user, and the gateway pinned or refused it.
    pub fn mismatch(&mut self) {
        self.note(
            "identity",
            "the request named another user: pinned to the subject",
        );
        self.identity_rewritten = true;
    }

    /// The upstream answered with `status`.
    pub fn upstream(&mut self, status: StatusCode) {
        self.upstream_status = Some(status.as_u16());
    }

    /// Composio refused the current key and the answer came with the previous one.
    pub fn previous_key_used(&mut self) {
        self.upstream_key = Some("previous");
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
            time: crate::clock::Rfc3339::now(),
            request_id,
            trace_id: self.trace_id.as_deref(),
            subject: self.subject.as_deref(),
            jti: self.jti.as_deref(),
            issuer: self.issuer.as_deref(),
            method: self.method.as_str(),
            path: self.path.as_deref(),
            query: self.query.as_deref(),
            source: self.source.as_deref(),
            user_agent: self.user_agent.as_deref(),
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
            constraint: self.constraint.as_deref(),
            status: status.as_u16(),
            upstream_status: self.upstream_status,
            upstream_key: self.upstream_key,
            latency_ms: latency.as_micros() as f64 / 1000.0,
        };
        // A borrowed struct serialised straight into one buffer: no map, no copies.
        // The writer thread numbers, chains and terminates it.
        // Sized for a typical line once, rather than grown (and copied) several times.
        let mut text = Vec::with_capacity(LINE_CAPACITY);
        let text = match serde_json::to_writer(&mut text, &line) {
            // serde_json writes only UTF-8.
            Ok(()) => String::from_utf8(text).unwrap_or_default(),
            Err(_) => String::new(),
        };
        sink.feed.offer(&text);
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

/// Sets a field, reusing its string when it was set before (a tool is named more than once).
fn set(slot: &mut Option<String>, value: &str) {
    match slot {
        Some(s) => {
            s.clear();
            s.push_str(value);
        }
        None => *slot = Some(value.to_owned()),
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
    fn the_key_named_by_audit_config_is_loaded_or_refused_naming_the_key() {
        let env: std::collections::HashMap<String, String> = [
            ("LONG".to_owned(), "k".repeat(32)),
            ("SHORT".to_owned(), "k".repeat(8)),
        ]
        .into();
        let cfg = |var: Option<&str>, file: Option<&str>| AuditConfig {
            hmac_key_env: var.map(str::to_owned),
            hmac_key_file: file.map(PathBuf::from),
            ..AuditConfig::default()
        };
        let key = |c: AuditConfig| HmacKey::from_config(&c, &env);
        assert!(key(cfg(None, None)).unwrap().is_none());
        assert!(key(cfg(Some("LONG"), None)).unwrap().is_some());
        let invalid = |r: Result<Option<HmacKey>, ConfigError>| match r {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("expected a refusal, got {:?}", other.map(|k| k.is_some())),
        };
        assert_eq!(
            invalid(key(cfg(Some("LONG"), Some("k")))),
            "audit.hmac_key_env"
        );
        assert_eq!(invalid(key(cfg(Some("UNSET"), None))), "audit.hmac_key_env");
        assert_eq!(invalid(key(cfg(Some("SHORT"), None))), "audit.hmac_key_env");
        match key(cfg(None, Some("/nonexistent/entitygate-audit.key"))) {
            Err(ConfigError::File { key, .. }) => assert_eq!(key, "audit.hmac_key_file"),
            other => panic!(
                "expected a file error, got {:?}",
                other.map(|k| k.is_some())
            ),
        }
    }

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

    #[test]
    fn checkpoints_are_logged_when_the_chain_moved_at_most_once_a_period() {
        let t0 = std::time::Instant::now();
        let mut c = Checkpoints::default();
        assert!(c.due(3, t0, false), "the first one at once");
        assert!(!c.due(3, t0 + CHECKPOINT_EVERY * 2, false), "not moved");
        assert!(
            !c.due(3, t0 + CHECKPOINT_EVERY * 2, true),
            "not moved, even forced"
        );
        assert!(!c.due(9, t0 + CHECKPOINT_EVERY / 2, false), "too soon");
        assert!(
            c.due(9, t0 + CHECKPOINT_EVERY / 2, true),
            "forced (flush, stop)"
        );
        assert!(
            !c.due(10, t0 + CHECKPOINT_EVERY, false),
            "a period after the last one"
        );
        assert!(c.due(10, t0 + CHECKPOINT_EVERY * 2, false));
    }
}
