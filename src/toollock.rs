//! The tool-definition lock: the tools a security team reviewed, held to what it reviewed.
//!
//! A tool's description and schemas are instructions to the model; when they change upstream
//! after a review (a new parameter, a description that tells the model to do more, hidden
//! Unicode), the agent does something nobody approved. This module owns:
//! - the **lock file** ([`LockFile`]): per toolkit the version to pin, per tool its toolkit, the
//!   version it was read at, its canonical definition and that definition's SHA-256; read
//!   strictly (an error names the file and line) and written sorted, for version control;
//! - the **canonical definition** ([`canonical`], [`digest`]): the tool's `slug`, `name`,
//!   `description`, `input_parameters` and `output_parameters` (every nested description
//!   included), object keys sorted at every depth, serialised compactly, hashed with SHA-256;
//! - the **views** carriers hold of a definition ([`View`]): Composio's v3 tool (the whole
//!   definition), a v2 action, an MCP tool, a session search result (description and the
//!   schemas' `properties` and `required`); a partial view is laid over the locked
//!   definition, so every carrier compares exactly what it shows;
//! - the **scan** ([`scan`]) for hidden characters and injected instructions;
//! - the **diff** ([`diff`]) a reviewer reads;
//! - the running lock ([`ToolLock`]): the verdict on each definition that passes (cached per
//!   tool, version and hash), the drift found (one audit event per tool and version, a
//!   metric), the refusal of a drifted or unlisted tool's executions, and the version every
//!   execution of a locked toolkit is pinned to;
//! - reading definitions from Composio ([`fetch_toolkit`], [`fetch_toolkits`]): paginated,
//!   read-only, for `entitygate tools lock|diff` and the scheduled check.

mod diff;
pub(crate) mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::{OnDrift, OnUnlisted, OnVersionMismatch, ToolsLockConfig};
use crate::error::Error;
use crate::upstream::{TimeoutClass, Upstream};

pub use diff::{diff, Change};
pub use scan::{scan, Finding};

/// The lock file format this gateway reads and writes.
pub const LOCK_VERSION: u32 = 1;

/// The fields of a tool that make its canonical definition, in Composio's v3 spelling.
pub const DEFINITION_FIELDS: &[&str] = &[
    "slug",
    "name",
    "description",
    "input_parameters",
    "output_parameters",
];

/// Versions a caller may send that choose no version at all: the gateway sets the locked one.
const UNCHOSEN_VERSIONS: &[&str] = &["latest", "latest:base", ""];

/// Drift records kept at most (a flood of changed definitions cannot grow memory unbounded).
const MAX_DRIFT: usize = 4096;
/// Cached verdicts kept at most; the cache is cleared when full.
const MAX_VERDICTS: usize = 65_536;

// --- the file ---

/// `tools.lock.json`: what a security team reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockFile {
    /// Always [`LOCK_VERSION`].
    pub lock_version: u32,
    /// Per toolkit (lower-case slug), the version executions are pinned to.
    pub toolkits: BTreeMap<String, LockedToolkit>,
    /// Per tool (Composio's slug), what was reviewed.
    pub tools: BTreeMap<String, LockedTool>,
}

/// One locked toolkit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedToolkit {
    /// The toolkit version (`20250909_00`) executions are pinned to.
    pub version: String,
}

/// One locked tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedTool {
    /// Its toolkit (lower-case), a key of [`LockFile::toolkits`].
    pub toolkit: String,
    /// The toolkit version the definition was read at.
    pub version: String,
    /// SHA-256 (hex) of the canonical definition.
    pub sha256: String,
    /// Scan findings a reviewer accepted (`entitygate tools lock --accept TOOL`), as rendered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accepted_findings: Vec<String>,
    /// The canonical definition ([`canonical`]).
    pub definition: Value,
}

/// Why a lock file cannot be used; the message names the file and, when it can, the line.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read the tool lock {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a lock this gateway accepts.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The file could not be written.
    #[error("cannot write the tool lock {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl LockFile {
    /// An empty lock.
    pub fn new() -> Self {
        Self {
            lock_version: LOCK_VERSION,
            toolkits: BTreeMap::new(),
            tools: BTreeMap::new(),
        }
    }

    /// Reads and checks the lock at `path`.
    ///
    /// # Errors
    /// [`LockError`] naming the file and the line: unreadable, not JSON, unknown fields, a
    /// tool of a toolkit the lock does not pin, a definition that does not hash to its
    /// `sha256` (edited by hand).
    pub fn load(path: &Path) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| LockError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// [`LockFile::load`] on text already read (`path` names it in errors).
    ///
    /// # Errors
    /// As [`LockFile::load`].
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let invalid = |line: usize, reason: String| LockError::Invalid {
            path: path.to_owned(),
            line,
            reason,
        };
        let lock: Self =
            serde_json::from_str(text).map_err(|e| invalid(e.line(), e.to_string()))?;
        if lock.lock_version != LOCK_VERSION {
            return Err(invalid(
                line_of(text, "\"lock_version\"", 0),
                format!(
                    "lock_version {} is not {LOCK_VERSION}, the format this gateway reads",
                    lock.lock_version
                ),
            ));
        }
        for (tk, locked) in &lock.toolkits {
            if tk.is_empty() || *tk != tk.to_ascii_lowercase() || locked.version.is_empty() {
                return Err(invalid(
                    line_of(text, &format!("\"{tk}\""), 0),
                    format!("toolkit `{tk}` needs a lower-case slug and a version"),
                ));
            }
        }
        for (slug, tool) in &lock.tools {
            let line = line_of(text, &format!("\"{slug}\""), 0);
            if !lock.toolkits.contains_key(&tool.toolkit) {
                return Err(invalid(
                    line,
                    format!(
                        "tool `{slug}` is of toolkit `{}`, which `toolkits` does not pin",
                        tool.toolkit
                    ),
                ));
            }
            if tool.definition.get("slug").and_then(Value::as_str) != Some(slug.as_str()) {
                return Err(invalid(
                    line,
                    format!("the definition of `{slug}` names another slug"),
                ));
            }
            let hash = digest(&sorted(&tool.definition));
            if hash != tool.sha256 {
                return Err(invalid(
                    line,
                    format!(
                        "the definition of `{slug}` does not hash to its sha256 (edited by \
                         hand?): re-run `entitygate tools lock --accept {slug}` to review it"
                    ),
                ));
            }
        }
        Ok(lock)
    }

    /// The lock as written: pretty JSON, keys sorted, a final newline (diffs stay small).
    pub fn render(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v = sorted(&v);
        let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Writes the lock to `path` (through a temporary file and a rename: a reader never sees
    /// half a lock).
    ///
    /// # Errors
    /// [`LockError::Write`].
    pub fn save(&self, path: &Path) -> Result<(), LockError> {
        let tmp = path.with_extension("json.tmp");
        let write = |p: &Path| std::fs::write(p, self.render());
        write(&tmp)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| LockError::Write {
                path: path.to_owned(),
                source,
            })
    }

    /// Locks `tool` (a Composio v3 tool object) at toolkit `version`, with the findings a
    /// reviewer accepted.
    pub fn insert(&mut self, tool: &Value, toolkit: &str, version: &str, accepted: Vec<String>) {
        let definition = canonical(tool);
        let slug = definition["slug"].as_str().unwrap_or_default().to_owned();
        self.toolkits
            .entry(toolkit.to_owned())
            .or_insert_with(|| LockedToolkit {
                version: version.to_owned(),
            });
        self.tools.insert(
            slug,
            LockedTool {
                toolkit: toolkit.to_owned(),
                version: version.to_owned(),
                sha256: digest(&definition),
                accepted_findings: accepted,
                definition,
            },
        );
    }
}

impl Default for LockFile {
    fn default() -> Self {
        Self::new()
    }
}

/// The 1-based line of the first occurrence of `needle` at or after byte `from` (1 when it
/// is not found: the error still names the file).
fn line_of(text: &str, needle: &str, from: usize) -> usize {
    match text.get(from..).and_then(|t| t.find(needle)) {
        Some(i) => text[..from + i].matches('\n').count() + 1,
        None => 1,
    }
}

// --- canonical definitions ---

/// The canonical definition of a Composio v3 tool object: [`DEFINITION_FIELDS`] (absent ones
/// as `null`), keys sorted at every depth.
pub fn canonical(tool: &Value) -> Value {
    let mut m = Map::new();
    for f in DEFINITION_FIELDS {
        m.insert(
            (*f).to_owned(),
            tool.get(*f).cloned().unwrap_or(Value::Null),
        );
    }
    sorted(&Value::Object(m))
}

/// `v` with object keys sorted at every depth.
pub fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let mut out = Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// SHA-256 (hex) of a sorted value's compact JSON.
pub fn digest(sorted: &Value) -> String {
    let bytes = serde_json::to_vec(sorted).unwrap_or_default();
    let h = Sha256::digest(&bytes);
    let mut s = String::with_capacity(64);
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

// --- views ---

/// A carrier's view of one tool definition, in the canonical field names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// Tool slug.
    pub slug: String,
    /// The toolkit, when the carrier says it.
    pub toolkit: Option<String>,
    /// The version the definition is of, when the carrier says it.
    pub version: Option<String>,
    /// The fields the carrier shows.
    pub fields: Map<String, Value>,
    /// Whether the view is the whole v3 definition (else schemas are compared on their
    /// `properties` and `required`, what every carrier carries alike).
    pub whole: bool,
    /// Where it was seen (`rest`, `v2`, `mcp`, `session`, `scheduled`).
    pub carrier: &'static str,
}

impl View {
    /// A Composio v3 tool (`GET /tools`, `/tools/{slug}`, a session's tool list).
    pub fn v3(item: &Value, carrier: &'static str) -> Option<Self> {
        let slug = item.get("slug")?.as_str()?.to_owned();
        let mut fields = Map::new();
        for f in DEFINITION_FIELDS {
            fields.insert(
                (*f).to_owned(),
                item.get(*f).cloned().unwrap_or(Value::Null),
            );
        }
        Some(Self {
            slug,
            toolkit: item["toolkit"]["slug"]
                .as_str()
                .map(str::to_ascii_lowercase),
            version: item["version"].as_str().map(str::to_owned),
            fields,
            whole: true,
            carrier,
        })
    }

    /// A v2 action (`GET /api/v2/actions`, `/actions/{action}`): description, `parameters`,
    /// `response`; its version numbering is the old API's, not a toolkit version.
    pub fn v2(item: &Value) -> Option<Self> {
        let slug = item.get("name")?.as_str()?.to_owned();
        let mut fields = Map::new();
        copy(item, "description", "description", &mut fields);
        copy(item, "parameters", "input_parameters", &mut fields);
        copy(item, "response", "output_parameters", &mut fields);
        Some(Self {
            slug,
            toolkit: item["appName"].as_str().map(str::to_ascii_lowercase),
            version: None,
            fields,
            whole: false,
            carrier: "v2",
        })
    }

    /// An MCP tool (`tools/list`): `name` is the slug; `description`, `inputSchema`,
    /// `outputSchema`.
    pub fn mcp(item: &Value) -> Option<Self> {
        let slug = item.get("name")?.as_str()?.to_owned();
        let mut fields = Map::new();
        copy(item, "description", "description", &mut fields);
        copy(item, "inputSchema", "input_parameters", &mut fields);
        copy(item, "outputSchema", "output_parameters", &mut fields);
        Some(Self {
            slug,
            toolkit: None,
            version: None,
            fields,
            whole: false,
            carrier: "mcp",
        })
    }

    /// A tool router session's search result (`tool_slug`, `toolkit`, `description`,
    /// `input_schema`).
    pub fn session_search(item: &Value) -> Option<Self> {
        let slug = item
            .get("tool_slug")
            .or_else(|| item.get("slug"))?
            .as_str()?
            .to_owned();
        let mut fields = Map::new();
        copy(item, "description", "description", &mut fields);
        copy(item, "input_schema", "input_parameters", &mut fields);
        copy(item, "input_parameters", "input_parameters", &mut fields);
        copy(item, "output_schema", "output_parameters", &mut fields);
        let toolkit = item["toolkit"]
            .as_str()
            .or_else(|| item["toolkit"]["slug"].as_str())
            .map(str::to_ascii_lowercase);
        Some(Self {
            slug,
            toolkit,
            version: None,
            fields,
            whole: false,
            carrier: "session",
        })
    }

    /// The definition this view shows, laid over `locked`: what is not shown is taken as
    /// locked; a partial view's schemas replace only `properties` and `required`.
    fn over(&self, locked: &Value) -> Value {
        if self.whole {
            let mut m = self.fields.clone();
            m.insert("slug".into(), Value::String(self.slug.clone()));
            return sorted(&Value::Object(m));
        }
        let mut out = locked.clone();
        for (k, v) in &self.fields {
            let schema = k == "input_parameters" || k == "output_parameters";
            match (schema, out.get_mut(k), v) {
                (true, Some(Value::Object(base)), Value::Object(seen)) => {
                    for part in ["properties", "required"] {
                        match seen.get(part) {
                            Some(p) => base.insert(part.to_owned(), p.clone()),
                            None => base.remove(part),
                        };
                    }
                }
                _ => {
                    if let Value::Object(m) = &mut out {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        sorted(&out)
    }
}

/// A whole v3 definition with its hash, computed once when it was read (the connection
/// cache's `GET /tools/{slug}`), so that an execution's verdict needs no hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// The view.
    pub view: View,
    /// [`digest`] of its canonical definition.
    pub hash: String,
}

impl Hashed {
    /// A Composio v3 tool object, hashed.
    pub fn of_v3(item: &Value) -> Option<Self> {
        let view = View::v3(item, "lookup")?;
        let hash = digest(&view.over(&Value::Null));
        Some(Self { view, hash })
    }
}

fn copy(item: &Value, from: &str, to: &str, into: &mut Map<String, Value>) {
    if let Some(v) = item.get(from) {
        into.insert(to.to_owned(), v.clone());
    }
}

// --- the running lock ---

/// One drift: a definition that is not what was locked, or a tool of a locked toolkit that the
/// lock does not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The tool.
    pub tool: String,
    /// Its toolkit, when known.
    pub toolkit: Option<String>,
    /// The version the definition was seen at, when the carrier says it.
    pub version: Option<String>,
    /// The locked definition's hash; `None`: the tool is not in the lock.
    pub locked_hash: Option<String>,
    /// The seen definition's hash (the locked one with what the carrier showed laid over it).
    pub seen_hash: String,
    /// The locked definition (canonical).
    pub locked: Option<Value>,
    /// The seen definition (canonical).
    pub seen: Value,
    /// What the scan flagged in the seen definition and the lock does not accept.
    pub findings: Vec<String>,
    /// Where it was first seen.
    pub carrier: String,
    /// When, in seconds since the Unix epoch.
    pub first_seen: u64,
}

impl Drift {
    /// `changed`, `unlisted` or `flagged` (the metric's label).
    pub fn kind(&self) -> &'static str {
        match (&self.locked_hash, self.findings.is_empty()) {
            (None, _) => "unlisted",
            (Some(h), false) if *h == self.seen_hash => "flagged",
            _ => "changed",
        }
    }

    /// What changed, one line each, as `entitygate tools diff` prints it (findings included).
    pub fn changes(&self) -> Vec<String> {
        let mut out = match &self.locked {
            Some(l) => diff::what_changed(l, &self.seen),
            None => vec!["not in the lock (a tool of a locked toolkit)".to_owned()],
        };
        out.extend(self.findings.iter().map(|f| format!("flagged: {f}")));
        out
    }

    /// A definition as a reviewer reads it: pretty JSON, hidden characters made visible.
    pub fn pretty(v: &Value) -> String {
        let s = serde_json::to_string_pretty(v).unwrap_or_default();
        s.chars()
            .map(|c| match scan::hidden_kind(c) {
                Some(_) => format!("\\u{{{:X}}}", u32::from(c)),
                None => c.to_string(),
            })
            .collect()
    }

    /// The refusal of this tool's executions.
    pub fn refusal(&self) -> Error {
        Error::ToolDefinitionChanged {
            tool: self.tool.clone(),
            locked: self.locked_hash.clone(),
            seen: Some(self.seen_hash.clone()),
        }
    }
}

/// What a drift is to do with: someone to tell (the audit sink, other replicas).
pub trait DriftSink: Send + Sync {
    /// A drift was found here (not learnt from another replica): record it once.
    fn found(&self, drift: &Drift);
}

/// The lock in force: the file, `[tools_lock]`'s settings, and the drift found so far.
pub struct ToolLock {
    file: LockFile,
    /// The file's bytes' digest, to tell a reload whether it changed.
    file_digest: String,
    settings: ToolsLockConfig,
    /// Locked tools the scan flags with findings the lock does not accept.
    unaccepted: HashMap<String, Vec<String>>,
    /// Drift by tool slug (upper-case).
    drift: Mutex<HashMap<String, Drift>>,
    /// Verdicts by (tool, version, seen hash): `true` = as locked.
    verdicts: Mutex<HashMap<(String, String, String), bool>>,
    /// (tool, version) pairs already audited.
    reported: Mutex<HashSet<(String, String)>>,
    sink: Mutex<Option<std::sync::Arc<dyn DriftSink>>>,
    /// The Composio client the scheduled check reads with (the newest build's: a rotated key
    /// is picked up).
    upstream: Mutex<Option<Upstream>>,
    /// The scheduled check ([`ToolLock::start_schedule`]), aborted when the lock is dropped.
    schedule: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for ToolLock {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.schedule).take() {
            t.abort();
        }
    }
}

/// The bus topic of drift shared between replicas.
pub const DRIFT_TOPIC: &str = "tool_drift";

/// The first scheduled check waits this long after the lock is built (a `check-config` or a
/// dry run never reads Composio), then runs every `check_interval_secs`.
const FIRST_CHECK_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

impl crate::shared::Listener for ToolLock {
    fn apply(&self, msg: &crate::shared::Message) {
        if let crate::shared::Message::Note { topic, payload } = msg {
            if topic == DRIFT_TOPIC {
                if let Ok(d) = serde_json::from_str::<Drift>(payload) {
                    self.learn(d);
                }
            }
        }
    }

    fn resync(&self) {}
}

impl std::fmt::Debug for ToolLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolLock")
            .field("tools", &self.file.tools.len())
            .field("toolkits", &self.file.toolkits.len())
            .finish_non_exhaustive()
    }
}

impl ToolLock {
    /// Loads `[tools_lock]`'s file.
    ///
    /// # Errors
    /// [`LockError`] (missing, corrupt, edited badly), naming the file and line.
    pub fn load(settings: &ToolsLockConfig) -> Result<Self, LockError> {
        let text = std::fs::read_to_string(&settings.path).map_err(|source| LockError::Read {
            path: settings.path.clone(),
            source,
        })?;
        let file = LockFile::parse(&text, &settings.path)?;
        Ok(Self::new(file, &sorted_digest_of(&text), settings))
    }

    /// A running lock of `file`.
    pub fn new(file: LockFile, file_digest: &str, settings: &ToolsLockConfig) -> Self {
        let mut unaccepted = HashMap::new();
        if settings.scan {
            for (slug, t) in &file.tools {
                let open: Vec<String> = scan(&t.definition, &t.toolkit, &settings.allowed_hosts)
                    .iter()
                    .map(ToString::to_string)
                    .filter(|f| !t.accepted_findings.contains(f))
                    .collect();
                if !open.is_empty() {
                    unaccepted.insert(slug.to_ascii_uppercase(), open);
                }
            }
        }
        let lock = Self {
            file,
            file_digest: file_digest.to_owned(),
            settings: settings.clone(),
            unaccepted,
            drift: Mutex::default(),
            verdicts: Mutex::default(),
            reported: Mutex::default(),
            sink: Mutex::default(),
            upstream: Mutex::default(),
            schedule: Mutex::default(),
        };
        // A locked definition the scan flags and nobody accepted is drift from the start.
        let flagged: Vec<(String, Vec<String>)> = lock
            .unaccepted
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (slug, findings) in flagged {
            if let Some(t) = lock.locked(&slug) {
                let d = Drift {
                    tool: slug.clone(),
                    toolkit: Some(t.toolkit.clone()),
                    version: Some(t.version.clone()),
                    locked_hash: Some(t.sha256.clone()),
                    seen_hash: t.sha256.clone(),
                    locked: Some(t.definition.clone()),
                    seen: t.definition.clone(),
                    findings,
                    carrier: "lock".into(),
                    first_seen: now(),
                };
                lock.insert_drift(d);
            }
        }
        lock
    }

    /// Whether `settings` and the file are what this lock was built from (a reload keeps the
    /// running lock, and the drift it found, then).
    pub fn same_as(&self, settings: &ToolsLockConfig) -> bool {
        if self.settings != *settings {
            return false;
        }
        std::fs::read_to_string(&settings.path)
            .is_ok_and(|t| sorted_digest_of(&t) == self.file_digest)
    }

    /// Carries over what `previous` found that still holds against this lock: drift of tools
    /// whose locked hash did not change (a new lock that accepts a drift clears it).
    pub fn inherit(&self, previous: &Self) {
        let old: Vec<Drift> = lock(&previous.drift).values().cloned().collect();
        for d in old {
            let still = match (self.locked(&d.tool), &d.locked_hash) {
                (Some(t), Some(h)) => t.sha256 == *h,
                (None, None) => d
                    .toolkit
                    .as_deref()
                    .is_some_and(|tk| self.file.toolkits.contains_key(tk)),
                _ => false,
            };
            if still && d.carrier != "lock" {
                self.insert_drift(d);
            }
        }
        *lock(&self.sink) = lock(&previous.sink).clone();
    }

    /// Starts the scheduled check (once per lock; `check_interval_secs = 0`: never): every
    /// interval, the locked toolkits are read from Composio at their locked versions
    /// ([`check_now`]), so drift is found when no agent lists tools. In a fleet only the
    /// holder of the audit job's lease checks (the others learn its drift from the bus).
    /// `upstream` replaces the client of an earlier call.
    pub fn start_schedule(
        self: &std::sync::Arc<Self>,
        upstream: Upstream,
        cluster: Option<std::sync::Arc<crate::shared::Cluster>>,
    ) {
        *lock(&self.upstream) = Some(upstream);
        let every = self.settings.check_interval_secs;
        let mut task = lock(&self.schedule);
        if every == 0 || task.is_some() {
            return;
        }
        let weak = std::sync::Arc::downgrade(self);
        *task = Some(tokio::spawn(scheduled(
            weak,
            std::time::Duration::from_secs(every),
            cluster,
        )));
    }

    /// Sets who hears of new drift (the audit sink, the fleet).
    pub fn set_sink(&self, sink: std::sync::Arc<dyn DriftSink>) {
        *lock(&self.sink) = Some(sink);
    }

    /// The lock file in force.
    pub fn file(&self) -> &LockFile {
        &self.file
    }

    /// `[tools_lock]`.
    pub fn settings(&self) -> &ToolsLockConfig {
        &self.settings
    }

    fn locked(&self, slug: &str) -> Option<&LockedTool> {
        self.file
            .tools
            .get(slug)
            .or_else(|| self.file.tools.get(&slug.to_ascii_uppercase()))
    }

    /// The toolkit the lock files `slug` under, if it locks it.
    pub fn toolkit_of(&self, slug: &str) -> Option<&str> {
        self.locked(slug).map(|t| t.toolkit.as_str())
    }

    /// Whether the lock pins `toolkit`.
    pub fn locks_toolkit(&self, toolkit: &str) -> bool {
        self.file
            .toolkits
            .contains_key(&toolkit.to_ascii_lowercase())
    }

    /// The version executions of `toolkit` are pinned to.
    pub fn version_of(&self, toolkit: &str) -> Option<&str> {
        self.file
            .toolkits
            .get(&toolkit.to_ascii_lowercase())
            .map(|t| t.version.as_str())
    }

    /// Every pinned toolkit with its version.
    pub fn versions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.file
            .toolkits
            .iter()
            .map(|(k, v)| (k.as_str(), v.version.as_str()))
    }

    /// The drift found so far, by tool.
    pub fn drift(&self) -> Vec<Drift> {
        let mut all: Vec<Drift> = lock(&self.drift).values().cloned().collect();
        all.sort_by(|a, b| a.tool.cmp(&b.tool));
        all
    }

    /// The verdict on a definition that passes a listing: `true` to serve it. A definition
    /// that is not the locked one (or a tool of a locked toolkit the lock does not have) is
    /// recorded as drift, and withheld unless `on_drift = "warn"` (`on_unlisted = "allow"`).
    /// A view whose toolkit is unknown and whose tool is not locked is served: the caller
    /// passes the toolkit when it can learn it.
    pub fn observe(&self, view: &View) -> bool {
        let Some(locked) = self.locked(&view.slug) else {
            let Some(tk) = view.toolkit.as_deref().filter(|tk| self.locks_toolkit(tk)) else {
                return true;
            };
            let seen = sorted(&Value::Object(view.fields.clone()));
            self.record(Drift {
                tool: view.slug.to_ascii_uppercase(),
                toolkit: Some(tk.to_ascii_lowercase()),
                version: view.version.clone(),
                locked_hash: None,
                seen_hash: digest(&seen),
                locked: None,
                seen,
                findings: Vec::new(),
                carrier: view.carrier.into(),
                first_seen: now(),
            });
            return self.settings.on_unlisted == OnUnlisted::Allow;
        };
        let seen = view.over(&locked.definition);
        let hash = digest(&seen);
        self.judge(view, locked, seen, hash)
    }

    /// [`ToolLock::observe`] of a definition hashed when it was read ([`Hashed`]): the
    /// execution step's check of the definition Composio answered for the tool's metadata.
    /// A definition of another version than the locked one is not what runs (executions are
    /// pinned): no verdict.
    pub fn observe_hashed(&self, h: &Hashed) -> bool {
        let Some(locked) = self.locked(&h.view.slug) else {
            return self.observe(&h.view);
        };
        if h.view
            .version
            .as_deref()
            .is_some_and(|v| self.version_of(&locked.toolkit).is_some_and(|l| l != v))
        {
            return true;
        }
        let key = (
            h.view.slug.to_ascii_uppercase(),
            h.view.version.clone().unwrap_or_default(),
            h.hash.clone(),
        );
        if let Some(v) = lock(&self.verdicts).get(&key).copied() {
            let clean = v && !self.unaccepted.contains_key(&key.0);
            return clean || self.settings.on_drift == OnDrift::Warn;
        }
        let seen = h.view.over(&locked.definition);
        self.judge(&h.view, locked, seen, h.hash.clone())
    }

    fn judge(&self, view: &View, locked: &LockedTool, seen: Value, hash: String) -> bool {
        let key = (
            view.slug.to_ascii_uppercase(),
            view.version.clone().unwrap_or_default(),
            hash.clone(),
        );
        let cached = lock(&self.verdicts).get(&key).copied();
        let as_locked = match cached {
            Some(v) => v,
            None => {
                let v = hash == locked.sha256;
                if !v {
                    let findings = if self.settings.scan {
                        scan(&seen, &locked.toolkit, &self.settings.allowed_hosts)
                            .iter()
                            .map(ToString::to_string)
                            .filter(|f| !locked.accepted_findings.contains(f))
                            .collect()
                    } else {
                        Vec::new()
                    };
                    self.record(Drift {
                        tool: key.0.clone(),
                        toolkit: Some(locked.toolkit.clone()),
                        version: view.version.clone(),
                        locked_hash: Some(locked.sha256.clone()),
                        seen_hash: hash,
                        locked: Some(locked.definition.clone()),
                        seen,
                        findings,
                        carrier: view.carrier.into(),
                        first_seen: now(),
                    });
                }
                let mut cache = lock(&self.verdicts);
                if cache.len() >= MAX_VERDICTS {
                    cache.clear();
                }
                cache.insert(key.clone(), v);
                v
            }
        };
        let clean = as_locked && !self.unaccepted.contains_key(&key.0);
        clean || self.settings.on_drift == OnDrift::Warn
    }

    /// The refusal for `slug` after [`ToolLock::observe`] withheld it: its drift, or the tool
    /// is not in the lock.
    pub fn refusal_for(&self, slug: &str) -> Error {
        let upper = slug.to_ascii_uppercase();
        match lock(&self.drift).get(&upper) {
            Some(d) => d.refusal(),
            None => Error::ToolDefinitionChanged {
                tool: upper,
                locked: self.locked(slug).map(|t| t.sha256.clone()),
                seen: None,
            },
        }
    }

    /// Records drift learnt from another replica (no audit event: the finder wrote it).
    pub fn learn(&self, drift: Drift) {
        let relevant = match (self.locked(&drift.tool), &drift.locked_hash) {
            (Some(t), Some(h)) => t.sha256 == *h,
            (None, None) => drift
                .toolkit
                .as_deref()
                .is_some_and(|tk| self.locks_toolkit(tk)),
            _ => false,
        };
        if relevant {
            self.insert_drift(drift);
        }
    }

    fn record(&self, d: Drift) {
        let version = d.version.clone().unwrap_or_default();
        let first = lock(&self.reported).insert((d.tool.clone(), version));
        if !first {
            // Already audited at this version; keep the first record.
            if !lock(&self.drift).contains_key(&d.tool) {
                self.insert_drift(d);
            }
            return;
        }
        tracing::warn!(tool = %d.tool, toolkit = ?d.toolkit, locked = ?d.locked_hash,
            seen = %d.seen_hash, carrier = %d.carrier, kind = d.kind(),
            "tool definition differs from the lock");
        crate::metrics::tool_drift(d.kind());
        let sink = lock(&self.sink).clone();
        if let Some(sink) = sink {
            sink.found(&d);
        }
        self.insert_drift(d);
    }

    fn insert_drift(&self, d: Drift) {
        let mut all = lock(&self.drift);
        if all.len() >= MAX_DRIFT && !all.contains_key(&d.tool) {
            return;
        }
        all.entry(d.tool.clone()).or_insert(d);
    }

    /// The execution step: a tool whose definition drifted (or that the scan flags unaccepted)
    /// is refused under `on_drift = "refuse"`; a tool of a locked toolkit that the lock does
    /// not have is refused under `on_unlisted = "refuse"`. No hashing: the verdicts were made
    /// when the definitions passed.
    ///
    /// # Errors
    /// [`Error::ToolDefinitionChanged`].
    pub fn check_execution(&self, tool: &str, toolkit: &str) -> Result<(), Error> {
        let slug = tool.to_ascii_uppercase();
        match self.locked(tool) {
            Some(locked) => {
                let drift = lock(&self.drift).get(&slug).cloned();
                match drift {
                    Some(d) if self.settings.on_drift == OnDrift::Refuse => {
                        tracing::info!(tool = %slug, locked = %locked.sha256, seen = %d.seen_hash,
                            "execution of a drifted tool refused");
                        Err(d.refusal())
                    }
                    _ => Ok(()),
                }
            }
            None if self.locks_toolkit(toolkit)
                && self.settings.on_unlisted == OnUnlisted::Refuse =>
            {
                tracing::info!(tool = %slug, toolkit, "execution of a tool the lock does not have refused");
                Err(Error::ToolDefinitionChanged {
                    tool: slug,
                    locked: None,
                    seen: lock(&self.drift)
                        .get(&tool.to_ascii_uppercase())
                        .map(|d| d.seen_hash.clone()),
                })
            }
            None => Ok(()),
        }
    }

    /// The version an execution of `tool` of `toolkit` is forwarded with, given the caller's
    /// `asked` one: the locked toolkit version (`None` when the toolkit is not locked). A
    /// caller's different version (other than `latest`, which chooses none) is refused or
    /// rewritten per `on_version_mismatch`, logged either way.
    ///
    /// # Errors
    /// [`Error::ToolVersionNotAllowed`].
    pub fn pin(
        &self,
        tool: &str,
        toolkit: &str,
        asked: Option<&str>,
    ) -> Result<Option<String>, Error> {
        let Some(locked) = self.version_of(toolkit) else {
            return Ok(None);
        };
        match asked {
            Some(a) if a != locked && !UNCHOSEN_VERSIONS.contains(&a) => {
                match self.settings.on_version_mismatch {
                    OnVersionMismatch::Refuse => {
                        tracing::info!(
                            tool,
                            toolkit,
                            asked = a,
                            locked,
                            "execution at another version than the locked one refused"
                        );
                        Err(Error::ToolVersionNotAllowed {
                            tool: tool.to_owned(),
                            locked: locked.to_owned(),
                            asked: a.to_owned(),
                        })
                    }
                    OnVersionMismatch::Rewrite => {
                        tracing::warn!(
                            tool,
                            toolkit,
                            asked = a,
                            locked,
                            "execution at another version than the locked one: rewritten"
                        );
                        Ok(Some(locked.to_owned()))
                    }
                }
            }
            _ => Ok(Some(locked.to_owned())),
        }
    }
}

fn sorted_digest_of(text: &str) -> String {
    let h = Sha256::digest(text.as_bytes());
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// --- reading Composio ---

/// Pages read at most per toolkit (100 tools a page): a catalogue that never ends is an error.
const MAX_PAGES: usize = 200;
/// The largest answer read.
const MAX_ANSWER: usize = 32 * 1024 * 1024;

/// GETs `pq` from Composio and reads the JSON answer.
async fn get_json(up: &Upstream, pq: &str) -> Result<Value, Error> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(up.uri(pq)?)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|_| Error::Internal)?;
    let resp = up.send(req, TimeoutClass::Default).await?;
    let status = resp.status();
    let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|_| Error::UpstreamUnavailable)?
        .to_bytes();
    if status != StatusCode::OK {
        tracing::warn!(%status, path = pq, "Composio refused a catalogue read");
        return Err(Error::UpstreamUnavailable);
    }
    serde_json::from_slice(&bytes).map_err(|_| Error::UpstreamUnavailable)
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Every tool of `toolkit` (Composio's v3 tool objects), at `version` (the locked one) or, with
/// `None`, Composio's latest; every page.
///
/// # Errors
/// [`Error::UpstreamUnavailable`] / [`Error::UpstreamTimeout`] when Composio cannot be read.
pub async fn fetch_toolkit(
    up: &Upstream,
    toolkit: &str,
    version: Option<&str>,
) -> Result<Vec<Value>, Error> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut pq = format!(
            "/api/v3.1/tools?toolkit_slug={}&limit=100&include_deprecated=false",
            encode(toolkit)
        );
        if let Some(v) = version {
            pq.push_str(&format!(
                "&{}={}",
                encode(&format!("toolkit_versions[{toolkit}]")),
                encode(v)
            ));
        }
        if let Some(c) = &cursor {
            pq.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = get_json(up, &pq).await?;
        if let Some(items) = page["items"].as_array() {
            out.extend(
                items
                    .iter()
                    .filter(|t| {
                        t["toolkit"]["slug"]
                            .as_str()
                            .is_none_or(|tk| tk.eq_ignore_ascii_case(toolkit))
                    })
                    .cloned(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return Ok(out),
        }
    }
    Err(Error::UpstreamUnavailable)
}

/// Every toolkit slug of Composio's catalogue (lower-case), every page.
///
/// # Errors
/// As [`fetch_toolkit`].
pub async fn fetch_toolkits(up: &Upstream) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut pq = "/api/v3.1/toolkits?limit=100".to_owned();
        if let Some(c) = &cursor {
            pq.push_str(&format!("&cursor={}", encode(c)));
        }
        let page = get_json(up, &pq).await?;
        let items = page["items"].as_array().or_else(|| page.as_array());
        for t in items.into_iter().flatten() {
            if let Some(s) = t["slug"].as_str() {
                let s = s.to_ascii_lowercase();
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => return Ok(out),
        }
    }
    Err(Error::UpstreamUnavailable)
}

async fn scheduled(
    weak: std::sync::Weak<ToolLock>,
    every: std::time::Duration,
    cluster: Option<std::sync::Arc<crate::shared::Cluster>>,
) {
    tokio::time::sleep(FIRST_CHECK_DELAY).await;
    loop {
        if let Some(c) = &cluster {
            // The audit job's leader checks; another replica tries again within a lease time.
            if !c.take_lease().await {
                let retry = std::time::Duration::from_secs(c.config().lease_secs) / 3;
                tokio::time::sleep(retry.min(every)).await;
                continue;
            }
        }
        let Some(tl) = weak.upgrade() else {
            return;
        };
        let up = lock(&tl.upstream).clone();
        if let Some(up) = up {
            match check_now(&tl, &up).await {
                Ok(n) => tracing::debug!(definitions = n, "tool lock: scheduled check done"),
                Err(e) => tracing::warn!(error = %e, "tool lock: scheduled check failed"),
            }
        }
        drop(tl);
        tokio::time::sleep(every).await;
    }
}

/// The scheduled check: reads every locked toolkit at its locked version and passes each
/// definition through [`ToolLock::observe`], so drift is found when no agent lists tools.
/// Answers how many definitions were read.
///
/// # Errors
/// As [`fetch_toolkit`].
pub async fn check_now(lock: &ToolLock, up: &Upstream) -> Result<usize, Error> {
    let mut read = 0;
    let toolkits: Vec<(String, String)> = lock
        .versions()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (tk, version) in toolkits {
        let tools = fetch_toolkit(up, &tk, Some(&version)).await?;
        let mut seen = HashSet::new();
        for t in &tools {
            if let Some(view) = View::v3(t, "scheduled") {
                seen.insert(view.slug.to_ascii_uppercase());
                lock.observe(&view);
                read += 1;
            }
        }
        // A locked tool Composio no longer lists is not drift (nothing can run it); it is
        // logged for the reviewer.
        for (slug, t) in &lock.file.tools {
            if t.toolkit == tk && !seen.contains(&slug.to_ascii_uppercase()) {
                tracing::info!(tool = %slug, toolkit = %tk, "a locked tool is no longer listed by Composio");
            }
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests;
