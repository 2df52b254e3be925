//! The configuration contract: TOML in, a validated [`Config`] out.
//!
//! Keys documented in the README are a stable contract that tools outside this repository
//! write against, so unknown keys are refused (`deny_unknown_fields`) rather than ignored: a
//! typo in a security setting must never fall back to a default silently.
//!
//! Secrets never live in the file. The file names environment variables, and they are read
//! through the [`Env`] trait so that tests and embedders can supply them without touching
//! the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where secrets named by the configuration are read from.
pub trait Env: Send + Sync {
    /// The value of the variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// A configuration problem found at start-up or reload. The message names the key or file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or did not match the contract.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value is present but not acceptable.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The dotted key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A secret environment variable named by the config is not set or empty.
    #[error("environment variable `{var}` named by `{key}` is not set or empty")]
    MissingEnv {
        /// The dotted key naming the variable.
        key: String,
        /// The variable.
        var: String,
    },
    /// A key or certificate file could not be read or parsed.
    #[error("cannot load `{key}` from {path}: {reason}")]
    File {
        /// The dotted key naming the file.
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Reads a secret from a file (a mounted Kubernetes secret): the contents, trimmed of the
/// surrounding whitespace a `kubectl create secret` or an editor adds.
///
/// # Errors
/// When the file is unreadable or holds only whitespace.
pub fn read_secret_file(path: &Path, key: &str) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        key: key.to_owned(),
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(ConfigError::File {
            key: key.to_owned(),
            path: path.to_owned(),
            reason: "the file is empty".into(),
        });
    }
    Ok(trimmed.to_owned())
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The origin agents reach the gateway at (`https://gateway.example`): every Composio MCP
    /// URL in a relayed answer is rewritten onto it. Absent: derived from each request, which
    /// is allowed only on a loopback listener.
    pub public_url: Option<String>,
    /// Address of the proxy listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// TLS termination; absent means plain HTTP.
    pub tls: Option<TlsConfig>,
    /// The Composio upstream.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Caller authentication.
    pub auth: AuthConfig,
    /// Identity rewriting policy.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Connection gating.
    #[serde(default)]
    pub connections: ConnectionsConfig,
    /// Server limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// The admin listener (health, readiness, metrics, reload).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where audit events go.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The expired-connections audit job and Composio's expiry webhook (issue 7).
    #[serde(default)]
    pub audit_job: Option<AuditJobConfig>,
    /// MCP through the gateway ([`crate::proxy::mcp`]).
    #[serde(default)]
    pub mcp: McpConfig,
    /// OpenTelemetry export of the gateway's spans.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Several replicas sharing state on Redis ([`crate::shared`]); absent: single node.
    #[serde(default)]
    pub shared: Option<SharedConfig>,
    /// The embedded store (the kill switch's rules, approvals).
    #[serde(default)]
    pub state: StateConfig,
    /// The tool-definition lock ([`crate::toollock`]); absent: no lock.
    #[serde(default)]
    pub tools_lock: Option<ToolsLockConfig>,
    /// Approvals by a named operator before some calls run (`[[policy.approvals]]` says which;
    /// [`crate::approvals`]).
    #[serde(default)]
    pub approvals: ApprovalsConfig,
}

/// `[tools_lock]`: the reviewed tool definitions and pinned toolkit versions
/// ([`crate::toollock`]).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolsLockConfig {
    /// The lock file (`entitygate tools lock` writes it), relative to the config file.
    pub path: PathBuf,
    /// A definition that differs from the lock: refused (dropped from listings, executions
    /// refused) or only reported.
    #[serde(default)]
    pub on_drift: OnDrift,
    /// A tool of a locked toolkit that the lock does not have.
    #[serde(default)]
    pub on_unlisted: OnUnlisted,
    /// Flag hidden characters and injection markers in descriptions.
    #[serde(default = "default_true")]
    pub scan: bool,
    /// Seconds between two scheduled comparisons of the lock with Composio (0: never).
    #[serde(default = "default_lock_check_secs")]
    pub check_interval_secs: u64,
    /// A caller's execute `version` (or `toolkit_versions`) other than the locked one.
    #[serde(default)]
    pub on_version_mismatch: OnVersionMismatch,
    /// Hosts (and their subdomains) the scan accepts in description URLs besides
    /// `composio.dev` and hosts named after the toolkit.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_lock_check_secs() -> u64 {
    900
}

fn default_true() -> bool {
    true
}

/// `[tools_lock] on_drift`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnDrift {
    /// Dropped from listings, executions refused (`tool_definition_changed`).
    #[default]
    Refuse,
    /// Logged, counted and audited; still served.
    Warn,
}

/// `[tools_lock] on_unlisted`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnUnlisted {
    /// Treated as drift.
    #[default]
    Refuse,
    /// Served (and still reported).
    Allow,
}

/// `[tools_lock] on_version_mismatch`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnVersionMismatch {
    /// Refused (`tool_version_not_allowed`).
    #[default]
    Refuse,
    /// Rewritten to the locked version (logged).
    Rewrite,
}

/// `[approvals]`: how long requests and grants live, the bound on pending requests, and the
/// signed notification of each new request.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// A pending request expires unanswered after this long; a denial answers the agent's
    /// identical calls for as long.
    #[serde(default = "default_request_ttl_secs")]
    pub request_ttl_secs: u64,
    /// An approved call may be made once within this long after the approval.
    #[serde(default = "default_grant_ttl_secs")]
    pub grant_ttl_secs: u64,
    /// Pending requests one subject may have; past it a new one is refused with 429 (nothing
    /// stored).
    #[serde(default = "default_max_pending_per_subject")]
    pub max_pending_per_subject: usize,
    /// Largest arguments (canonical JSON, bytes) a request may hold: approvers see every byte
    /// of what they approve, so a larger call is refused rather than shown cut.
    #[serde(default = "default_max_argument_bytes")]
    pub max_argument_bytes: usize,
    /// Where approvers follow a request (`{console_url}/approvals#{id}` is named in the
    /// refusal); absent: the admin listener's console.
    pub console_url: Option<String>,
    /// A signed POST per new request (https, or http on loopback).
    pub notify_url: Option<String>,
    /// The environment variable holding the notification's HMAC secret.
    pub notify_secret_env: Option<String>,
}

impl Default for ApprovalsConfig {
    fn default() -> Self {
        Self {
            request_ttl_secs: default_request_ttl_secs(),
            grant_ttl_secs: default_grant_ttl_secs(),
            max_pending_per_subject: default_max_pending_per_subject(),
            max_argument_bytes: default_max_argument_bytes(),
            console_url: None,
            notify_url: None,
            notify_secret_env: None,
        }
    }
}

fn default_request_ttl_secs() -> u64 {
    3600
}
fn default_grant_ttl_secs() -> u64 {
    900
}
fn default_max_pending_per_subject() -> usize {
    20
}
fn default_max_argument_bytes() -> usize {
    64 * 1024
}

impl ApprovalsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, v) in [
            ("approvals.request_ttl_secs", self.request_ttl_secs),
            ("approvals.grant_ttl_secs", self.grant_ttl_secs),
            (
                "approvals.max_pending_per_subject",
                self.max_pending_per_subject as u64,
            ),
            (
                "approvals.max_argument_bytes",
                self.max_argument_bytes as u64,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be > 0"));
            }
        }
        if let Some(url) = &self.notify_url {
            check_webhook_url("approvals.notify_url", url)?;
            if self
                .notify_secret_env
                .as_deref()
                .is_none_or(|v| v.trim().is_empty())
            {
                return Err(ConfigError::invalid(
                    "approvals.notify_secret_env",
                    "is required when notify_url is set",
                ));
            }
        }
        if let Some(url) = &self.console_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(ConfigError::invalid(
                    "approvals.console_url",
                    "must be an http(s):// URL",
                ));
            }
        }
        Ok(())
    }
}

/// A webhook target: https, or plain http on loopback only, with a host.
fn check_webhook_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ConfigError::invalid(key, format!("{e}")))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(uri.host().unwrap_or("")) => {}
        _ => {
            return Err(ConfigError::invalid(
                key,
                "must be https:// (plain http only on loopback)",
            ))
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(key, "has no host"));
    }
    Ok(())
}

/// `[shared]`: the Redis (or Valkey) that several replicas share rate limits, invalidations,
/// single-flight status lookups, the audit job's lease and its dedup through. Fixed at start:
/// a reload keeps the running connection (a changed section is logged, not applied).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SharedConfig {
    /// `redis://host:port/db`, `rediss://` for TLS.
    pub redis_url: String,
    /// The environment variable holding the Redis password (overrides one in the URL).
    pub password_env: Option<String>,
    /// Prefix of every key and channel the gateway uses.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    /// The longest a request waits for Redis (one command); past it the replica decides
    /// alone (local rate limit, own status lookup) and marks Redis down.
    #[serde(default = "default_shared_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a (re)connection attempt may take.
    #[serde(default = "default_shared_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// How often Redis is probed (and, while down, retried).
    #[serde(default = "default_shared_probe_ms")]
    pub probe_interval_ms: u64,
    /// The audit job's lease: another replica takes over within this long after the holder
    /// dies.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// How long a status answer fetched by one replica stays in Redis for the others (the
    /// cross-replica single-flight; each replica then caches it locally as usual).
    #[serde(default = "default_status_share_ms")]
    pub status_share_ms: u64,
}

fn default_key_prefix() -> String {
    "entitygate:".to_owned()
}
fn default_shared_timeout_ms() -> u64 {
    50
}
fn default_shared_connect_timeout_ms() -> u64 {
    1000
}
fn default_shared_probe_ms() -> u64 {
    500
}
fn default_lease_secs() -> u64 {
    15
}
fn default_status_share_ms() -> u64 {
    2000
}

impl SharedConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.redis_url.as_str();
        if !["redis://", "rediss://", "valkey://", "valkeys://"]
            .iter()
            .any(|s| url.starts_with(s))
        {
            return Err(ConfigError::invalid(
                "shared.redis_url",
                "must be a redis:// or rediss:// URL",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return Err(ConfigError::invalid(
                "shared.key_prefix",
                "must be 1 to 64 characters",
            ));
        }
        for (key, v) in [
            ("shared.timeout_ms", self.timeout_ms),
            ("shared.connect_timeout_ms", self.connect_timeout_ms),
            ("shared.probe_interval_ms", self.probe_interval_ms),
            ("shared.lease_secs", self.lease_secs),
            ("shared.status_share_ms", self.status_share_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be > 0"));
            }
        }
        Ok(())
    }
}

/// `[state]`: the gateway's embedded store (redb), holding the kill switch's deny rules so
/// they survive a restart. Absent: the rules live in memory only (and a warning says so).
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// The redb file; one process at a time may hold it.
    pub path: Option<PathBuf>,
}

/// `[telemetry]`: where the gateway's spans go. Trace context is propagated (and recorded in
/// the audit trail) whether or not spans are exported.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP (protobuf) endpoint of a collector, e.g. `http://127.0.0.1:4318` (the
    /// traces path `/v1/traces` is added when the URL has no path). Absent: no export.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Extra CA certificates (PEM) for an https collector.
    pub ca_file: Option<PathBuf>,
    /// How long the exporter waits between batches.
    #[serde(default = "default_export_interval_ms")]
    pub export_interval_ms: u64,
    /// How long one export may take.
    #[serde(default = "default_export_timeout_ms")]
    pub export_timeout_ms: u64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: default_service_name(),
            ca_file: None,
            export_interval_ms: default_export_interval_ms(),
            export_timeout_ms: default_export_timeout_ms(),
        }
    }
}

fn default_service_name() -> String {
    "entitygate".into()
}
fn default_export_interval_ms() -> u64 {
    5_000
}
fn default_export_timeout_ms() -> u64 {
    10_000
}

/// `[mcp]`: the Streamable HTTP endpoints the gateway serves for Composio's hosted MCP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Browser origins allowed to call the MCP endpoints (besides `public_url`'s own); a
    /// request with any other `Origin` is refused with 403 (DNS-rebinding guard).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Authorization servers published in the RFC 9728 metadata; empty: `[auth] issuer`.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// Serve `POST/GET/DELETE /mcp` as the subject's own MCP endpoint (a tool router session
    /// the gateway creates for the subject).
    #[serde(default)]
    pub front_door: bool,
    /// A relayed MCP stream (SSE) that stays silent this long is closed.
    #[serde(default = "default_mcp_stream_idle_secs")]
    pub stream_idle_timeout_secs: u64,
    /// How long a front-door session is reused before a fresh one is created.
    #[serde(default = "default_mcp_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// Extra fields of the tool router session the front door creates (`[mcp.session]`,
    /// e.g. `manage_connections = { enable = false }`); `user_id` is always the subject and
    /// `toolkits` is intersected with what the policy permits.
    #[serde(default)]
    pub session: serde_json::Map<String, serde_json::Value>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            authorization_servers: Vec::new(),
            front_door: false,
            stream_idle_timeout_secs: default_mcp_stream_idle_secs(),
            session_ttl_secs: default_mcp_session_ttl_secs(),
            session: serde_json::Map::new(),
        }
    }
}

/// `[tls]`: certificate chain and private key in PEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[upstream]`: where Composio is and how to reach it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL; its path prefix is kept when forwarding.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Environment variable holding the real Composio project key.
    #[serde(default = "default_api_key_env")]
    pub api_key_env: String,
    /// A file holding the key (a mounted secret), instead of `api_key_env`: re-read on
    /// reload and when it changes; a file that fails to load keeps the key in use.
    pub api_key_file: Option<PathBuf>,
    /// The key being rotated out (`previous_api_key_env` or `previous_api_key_file`): when
    /// Composio answers 401 to a request that is safe to repeat (never an execution), the
    /// gateway retries it once with this key and reports it.
    pub previous_api_key_env: Option<String>,
    /// The same, from a file.
    pub previous_api_key_file: Option<PathBuf>,
    /// How often secret files (`api_key_file`, `previous_api_key_file`, `[[auth.keys]]`
    /// `secret_file` and `public_key_file`) are checked for a change.
    #[serde(default = "default_secret_poll_ms")]
    pub secret_poll_ms: u64,
    /// Extra PEM CA bundle trusted for the upstream (and JWKS), beside the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// TCP + TLS connect timeout.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Timeout for ordinary upstream requests, until the response head arrives.
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Timeout for tool executions, which can legitimately take long.
    #[serde(default = "default_execute_timeout_secs")]
    pub execute_timeout_secs: u64,
    /// Timeout for the gateway's own lookups (tool metadata, connection status, sessions).
    #[serde(default = "default_lookup_timeout_secs")]
    pub lookup_timeout_secs: u64,
}

/// `[auth]`: how callers' JWTs are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one value or any of several), when set.
    pub audience: Option<OneOrMany>,
    /// Claim that names the tenant's user.
    #[serde(default = "default_subject_claim")]
    pub subject_claim: String,
    /// Prefix put before the subject (e.g. `"acme:"`), to namespace users of one IdP.
    #[serde(default)]
    pub subject_prefix: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// Static verification keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// A JWKS endpoint.
    pub jwks: Option<JwksConfig>,
    /// How many verified tokens to remember (by hash, until `exp`).
    #[serde(default = "default_token_cache_entries")]
    pub token_cache_entries: usize,
    /// Upper bound of the verified-token cache's memory, in bytes (entries keep the subject,
    /// `exp` and only the claims the tool policy reads).
    #[serde(default = "default_token_cache_bytes")]
    pub token_cache_bytes: usize,
}

/// One string or a list of strings (`aud` may be either).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Any of several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `[[auth.keys]]`: one static key. The algorithm is pinned here, never read from tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// `HS256|HS384|HS512|RS256|RS384|RS512|PS256|PS384|PS512|ES256|ES384|EdDSA`.
    pub alg: String,
    /// Optional key id; a token naming a `kid` is only checked against keys with that id.
    pub kid: Option<String>,
    /// Environment variable holding an HMAC secret (HS*).
    pub secret_env: Option<String>,
    /// A file holding the HMAC secret (a mounted secret), instead of `secret_env`: re-read
    /// on reload and when it changes.
    pub secret_file: Option<PathBuf>,
    /// PEM public key file (RS*, PS*, ES*, EdDSA).
    pub public_key_file: Option<PathBuf>,
}

/// `[auth.jwks]`: a remote key set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    /// The JWKS URL (https, or http on loopback only).
    pub url: String,
    /// Periodic refresh interval; a `Cache-Control: max-age` from the IdP may shorten it.
    #[serde(default = "default_jwks_refresh_secs")]
    pub refresh_secs: u64,
    /// Minimum interval between refetches triggered by an unknown `kid`.
    #[serde(default = "default_jwks_min_refetch_secs")]
    pub min_refetch_secs: u64,
    /// How long a request with an unknown `kid` waits for the refetch it triggered; past it
    /// the request is answered from the current key set (503 while the fetch still runs, so
    /// that SDKs retry), and the fetch completes in the background.
    #[serde(default = "default_jwks_unknown_kid_wait_ms")]
    pub unknown_kid_wait_ms: u64,
    /// Algorithms accepted for JWKS keys that carry no `alg` of their own.
    #[serde(default)]
    pub algorithms: Vec<String>,
}

/// What to do when a caller names a user other than the token's subject.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnIdentityMismatch {
    /// Overwrite it with the subject (logged).
    #[default]
    Rewrite,
    /// Refuse the request with 403 `identity_mismatch`.
    Reject,
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Rewrite or reject a foreign user id.
    #[serde(default)]
    pub on_identity_mismatch: OnIdentityMismatch,
    /// Allow caller-supplied credentials (`custom_auth_params`, ...).
    #[serde(default)]
    pub allow_custom_auth: bool,
    /// Allow shared-account options (`account_type=SHARED`, `experimental` sharing).
    #[serde(default)]
    pub allow_shared_accounts: bool,
    /// Allow proxy execute (raw HTTP through a user's connected account).
    #[serde(default = "yes")]
    pub allow_proxy_execute: bool,
    /// Largest request body accepted on routes whose body is inspected.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Tool policy: what decides when no rule does (`allow` or `deny`).
    #[serde(default, rename = "default")]
    pub default_decision: PolicyDefault,
    /// Tool policy: the OAuth scope prefix that grants toolkits (`composio:slack`); empty: off.
    #[serde(default = "default_scope_prefix")]
    pub scope_prefix: String,
    /// Tool policy: rules on claims, evaluated in order ([`crate::toolpolicy`]).
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Constraints on tool arguments, in CEL ([`crate::constraints`]); every one that applies
    /// to an allowed invocation must hold.
    #[serde(default)]
    pub constraints: Vec<ConstraintConfig>,
    /// Calls that wait for a named operator's approval ([`crate::approvals`]).
    #[serde(default)]
    pub approvals: Vec<ApprovalRuleConfig>,
}

/// `[[policy.approvals]]`: calls that need an operator's approval before they run.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRuleConfig {
    /// Names the rule in the refusal, the request and the audit trail.
    pub name: String,
    /// Tool slug globs (`*`, case-insensitive) the rule covers.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Toolkits the rule covers (Composio's toolkit of the tool).
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// A CEL condition over the call (the variables of constraints); absent: always.
    #[serde(rename = "if")]
    pub condition: Option<String>,
    /// What the agent (and the user) reads while the call waits.
    pub message: Option<String>,
}

/// `[[policy.constraints]]`: a CEL condition on the arguments of the tools it names
/// ([`crate::constraints`] documents the variables and the semantics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConstraintConfig {
    /// Names the constraint in refusals, `explain` and the audit trail (unique).
    pub name: String,
    /// Tool slug globs it applies to (as in rules).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Toolkits it applies to (every tool of them, and proxy executions through them).
    #[serde(default)]
    pub toolkits: Vec<String>,
    /// CEL over the caller and the call: the constraint applies only when it holds; absent:
    /// always.
    pub when: Option<String>,
    /// CEL that must hold, or the call is refused.
    pub require: String,
    /// What a refusal says to the model and the user.
    pub message: Option<String>,
}

/// `policy.default`: the tool policy's decision when no rule and no scope decides.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PolicyDefault {
    /// Allow (the behaviour without rules).
    #[default]
    Allow,
    /// Deny.
    Deny,
}

/// `[[policy.rules]]`: one tool-policy rule ([`crate::toolpolicy`] documents the semantics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// A name for refusals and the audit trail.
    pub name: Option<String>,
    /// The claim condition; absent: the rule applies to every caller.
    pub when: Option<WhenConfig>,
    /// Toolkits this rule allows (and, for the callers it applies to, only these).
    #[serde(default)]
    pub allow_toolkits: Vec<String>,
    /// Toolkits this rule denies.
    #[serde(default)]
    pub deny_toolkits: Vec<String>,
    /// Tool slug globs this rule allows (and, for the callers it applies to, only these).
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Tool slug globs this rule denies.
    #[serde(default)]
    pub deny_tools: Vec<String>,
}

/// `when = { claim = "...", equals | contains | exists = ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// A top-level claim name, or a JSON pointer (`/realm_access/roles`).
    pub claim: String,
    /// The claim is this string, number or boolean.
    pub equals: Option<serde_json::Value>,
    /// The array claim holds this value, or the string claim holds this word.
    pub contains: Option<serde_json::Value>,
    /// The claim is present (and not null), or absent.
    pub exists: Option<bool>,
}

/// `[connections]`: connection gating and its cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Refuse executions for toolkits without an ACTIVE connection.
    #[serde(default = "yes")]
    pub gate: bool,
    /// How long an answer from Composio is trusted.
    #[serde(default = "default_cache_ttl_secs")]
    pub cache_ttl_secs: u64,
    /// How long a "not connected" answer is trusted.
    #[serde(default = "default_negative_ttl_secs")]
    pub negative_ttl_secs: u64,
    /// How long tool metadata (tool -> toolkit) is trusted.
    #[serde(default = "default_tool_ttl_secs")]
    pub tool_ttl_secs: u64,
    /// Bound on cached (subject, toolkit) entries.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// During an upstream outage, accept a cached ACTIVE answer up to this old (0: never).
    #[serde(default)]
    pub serve_stale_secs: u64,
    /// Guess a tool's toolkit from the prefix before `_` when Composio cannot say.
    #[serde(default)]
    pub toolkit_prefix_fallback: bool,
    /// Hint appended to messages, e.g. "in Settings > Integrations".
    #[serde(default = "default_settings_hint")]
    pub settings_hint: String,
    /// Message templates; `{toolkit}` and `{settings}` are substituted.
    #[serde(default)]
    pub messages: MessageTemplates,
}

/// Message templates for gating decisions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplates {
    /// No connected account for the toolkit.
    #[serde(default = "default_msg_not_connected")]
    pub not_connected: String,
    /// Only expired/failed/revoked/disabled accounts.
    #[serde(default = "default_msg_expired")]
    pub expired: String,
    /// Only inactive accounts.
    #[serde(default = "default_msg_inactive")]
    pub inactive: String,
    /// Only accounts whose authorisation has not completed.
    #[serde(default = "default_msg_pending")]
    pub pending: String,
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time allowed from accept to the first complete request head, whatever the protocol
    /// and TLS included; and, for each later HTTP/1 request, from the first byte of its head
    /// to the last (the slowloris bound: it runs only while a head is arriving).
    #[serde(default = "default_header_read_timeout_secs")]
    pub header_read_timeout_secs: u64,
    /// A keep-alive connection with no request in flight and no request head arriving is
    /// closed after this long (nginx's `keepalive_timeout`, 75 s by default). The older name
    /// `idle_timeout_secs` is an alias.
    #[serde(default = "default_keepalive_idle_secs", alias = "idle_timeout_secs")]
    pub keepalive_idle_secs: u64,
    /// Largest request head (request line and headers; HTTP/2: the header list), bytes.
    /// HTTP/1 past it: 431. At least 8192 (hyper's smallest read buffer).
    #[serde(default = "default_max_request_head_bytes")]
    pub max_request_head_bytes: usize,
    /// Most header fields in an HTTP/1 request; past it: 431.
    #[serde(default = "default_max_request_headers")]
    pub max_request_headers: usize,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "default_max_streams_per_connection")]
    pub max_streams_per_connection: u32,
    /// Time allowed for a TLS handshake.
    #[serde(default = "default_tls_handshake_timeout_secs")]
    pub tls_handshake_timeout_secs: u64,
    /// Maximum concurrent client connections.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Grace period for in-flight requests at shutdown.
    #[serde(default = "default_shutdown_grace_secs")]
    pub shutdown_grace_secs: u64,
    /// Sustained requests per second allowed per subject (token bucket); 0: no limit.
    #[serde(default)]
    pub per_subject_rps: f64,
    /// Bucket size: requests a subject may send at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Requests processed at once across all clients; past it, 503 `overloaded`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Requests one subject may have in flight at once; past it, 429 `too_many_in_flight`
    /// with `Retry-After` for that subject only.
    #[serde(default = "default_max_in_flight_per_subject")]
    pub max_in_flight_per_subject: usize,
    /// Time allowed for a client to send a whole request body, once the gateway starts
    /// reading it; past it, 400 `body_read_timeout`.
    #[serde(default = "default_body_read_timeout_secs")]
    pub body_read_timeout_secs: u64,
    /// Keys allowed in any one object of a JSON body; past it, 413 `body_too_many_keys`.
    #[serde(default = "default_max_json_keys_per_object")]
    pub max_json_keys_per_object: usize,
    /// Nesting allowed in a JSON body (the top-level object is 1; at most 128); past it,
    /// 413 `body_too_deep`.
    #[serde(default = "default_max_json_depth")]
    pub max_json_depth: usize,
}

impl LimitsConfig {
    /// The JSON shape limits, as the parser takes them.
    pub fn json(&self) -> crate::rewrite::JsonLimits {
        crate::rewrite::JsonLimits {
            max_keys_per_object: self.max_json_keys_per_object,
            max_depth: self.max_json_depth,
        }
    }
}

/// `[admin]`: a separate listener for operators. Keep it on loopback or a cluster-internal
/// address: it has no authentication of its own.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener; absent: no admin listener.
    pub listen: Option<SocketAddr>,
    /// `/readyz` fails when Composio has not answered anything for this long (and a probe
    /// fails).
    #[serde(default = "default_ready_window_secs")]
    pub ready_window_secs: u64,
    /// Concurrent admin connections; past it, new ones are closed at accept.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// `[admin.console]`: the web console under `/ui` ([`crate::console`]).
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Extra `Host` values the admin endpoints answer to (`name` or `name:port`), besides the
    /// address a connection arrived on (and `localhost` on loopback). Anything else, and any
    /// `Origin` that is not one of them, is refused (DNS rebinding, cross-site requests).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The environment variable holding the admin bearer token that every state-changing
    /// endpoint (`/reload`, `/deny`, `/explain`) requires. Without a token (this,
    /// `token_file` or `explain_token_env`) those endpoints are disabled, not open.
    pub token_env: Option<String>,
    /// A file holding the admin token (a mounted secret), read on every check so a rotated
    /// file applies at once. Instead of `token_env`.
    pub token_file: Option<PathBuf>,
    /// The older name of `token_env` (it used to guard `/explain` only); an alias.
    pub explain_token_env: Option<String>,
    /// Named people, each with a token of their own: it authenticates the admin API and the
    /// console as that person, and only an operator can approve a call.
    #[serde(default)]
    pub operators: Vec<OperatorConfig>,
}

/// `[[admin.operators]]`: one named person.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    /// Recorded as the approver.
    pub name: String,
    /// The environment variable holding this operator's token.
    pub token_env: Option<String>,
    /// A file holding it instead (read on every check).
    pub token_file: Option<PathBuf>,
    /// This person's own subject (as the subject claim names it; the gateway's
    /// `subject_prefix` is applied for the comparison): they can never approve their own calls.
    pub subject: Option<String>,
}

/// `[admin.console]`: the security console ([`crate::console`] serves it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Serve the console under `/ui` (it also needs an admin token).
    pub enabled: bool,
    /// Decisions kept in memory for the Live decisions page (the ring's size).
    pub recent: usize,
    /// A session unused for this long ends.
    pub session_idle_secs: u64,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            recent: 2000,
            session_idle_secs: 1800,
        }
    }
}

/// `[audit]`: the decision trail.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Append JSON lines to this file; absent: JSON lines on stdout.
    pub path: Option<PathBuf>,
    /// The environment variable holding the key that authenticates every line (HMAC-SHA256).
    pub hmac_key_env: Option<String>,
    /// A file holding that key instead (a trailing newline is not part of it).
    pub hmac_key_file: Option<PathBuf>,
    /// The shape of each line: entitygate's own JSON (the default) or OCSF events.
    #[serde(default)]
    pub format: AuditFormat,
}

/// `[audit] format`: how each chained line is shaped. The chain (seq, prev, hash, HMAC) is
/// the same in both; `entitygate audit-log verify` reads either, and a mix of both.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuditFormat {
    /// entitygate's own flat JSON lines.
    #[default]
    Entitygate,
    /// OCSF events (the version the README names), the chain under `unmapped`.
    Ocsf,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    #[serde(default)]
    pub format: LogFormat,
}

/// `[audit_job]`: the scan for connected accounts that need the user's attention, the
/// signed notification to the app, and the receiver of Composio's expiry webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditJobConfig {
    /// Scan every this many seconds inside `serve` (0: only `entitygate audit`).
    #[serde(default)]
    pub every_secs: u64,
    /// Where the app receives notifications (https, or http on loopback); none: no notification.
    pub webhook_url: Option<String>,
    /// Environment variable holding the HMAC secret of the notifications.
    pub webhook_secret_env: Option<String>,
    /// A user is not notified again for the same connection within this many seconds.
    #[serde(default = "default_renotify_secs")]
    pub renotify_secs: u64,
    /// The embedded store (redb) that remembers notifications and webhook ids across restarts.
    #[serde(default = "default_state_path")]
    pub state_path: PathBuf,
    /// Listings and deliveries in flight at once.
    #[serde(default = "default_audit_concurrency")]
    pub concurrency: usize,
    /// Page size asked of Composio's list endpoint.
    #[serde(default = "default_audit_page_limit")]
    pub page_limit: usize,
    /// Also report `ACTIVE` accounts that are disabled (a second, larger listing).
    #[serde(default = "yes")]
    pub include_disabled: bool,
    /// First retry delay after a 429, a 5xx or a failed delivery; doubled each attempt.
    #[serde(default = "default_audit_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Ceiling of the retry delay.
    #[serde(default = "default_audit_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Attempts per listing page and per delivery, the first included.
    #[serde(default = "default_audit_max_attempts")]
    pub max_attempts: u32,
    /// Timeout of one delivery to `webhook_url`.
    #[serde(default = "default_audit_webhook_timeout_secs")]
    pub webhook_timeout_secs: u64,
    /// Path on the proxy listener where Composio's webhooks arrive.
    #[serde(default = "default_composio_webhook_path")]
    pub composio_webhook_path: String,
    /// Environment variable holding the Composio webhook secret; none: the path is not served.
    pub composio_webhook_secret_env: Option<String>,
    /// Accepted age (either way) of a Composio webhook's `webhook-timestamp`.
    #[serde(default = "default_composio_webhook_tolerance_secs")]
    pub composio_webhook_tolerance_secs: u64,
    /// Largest Composio webhook body read (before its signature can be checked).
    #[serde(default = "default_composio_webhook_max_body_bytes")]
    pub composio_webhook_max_body_bytes: usize,
    /// Time allowed to receive a Composio webhook's body.
    #[serde(default = "default_composio_webhook_read_timeout_secs")]
    pub composio_webhook_read_timeout_secs: u64,
    /// Composio webhook deliveries handled at once; past it, 503 (Composio retries). They
    /// never take one of the proxy's `limits.max_in_flight` slots.
    #[serde(default = "default_composio_webhook_max_in_flight")]
    pub composio_webhook_max_in_flight: usize,
}

// === impl Config ===

impl Config {
    /// Reads and validates a configuration file.
    ///
    /// # Errors
    /// When the file cannot be read, does not parse, or fails [`Config::validate`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::from_toml(&text)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text. Relative paths stay relative to the working directory.
    ///
    /// # Errors
    /// When the text does not parse or does not match the contract.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Makes relative file paths relative to the directory of the config file, so a config
    /// means the same thing whatever directory the gateway is started from.
    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(tls) = &mut self.tls {
            fix(&mut tls.cert);
            fix(&mut tls.key);
        }
        if let Some(ca) = &mut self.upstream.ca_file {
            fix(ca);
        }
        if let Some(p) = &mut self.audit.path {
            fix(p);
        }
        if let Some(p) = &mut self.audit.hmac_key_file {
            fix(p);
        }
        if let Some(p) = &mut self.telemetry.ca_file {
            fix(p);
        }
        if let Some(job) = &mut self.audit_job {
            fix(&mut job.state_path);
        }
        if let Some(p) = &mut self.state.path {
            fix(p);
        }
        if let Some(lock) = &mut self.tools_lock {
            fix(&mut lock.path);
        }
        if let Some(p) = &mut self.admin.token_file {
            fix(p);
        }
        for op in &mut self.admin.operators {
            if let Some(p) = &mut op.token_file {
                fix(p);
            }
        }
        for p in [
            &mut self.upstream.api_key_file,
            &mut self.upstream.previous_api_key_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
        for key in &mut self.auth.keys {
            if let Some(p) = &mut key.public_key_file {
                fix(p);
            }
            if let Some(p) = &mut key.secret_file {
                fix(p);
            }
        }
    }

    /// Checks values that parse but make no sense. Secrets and files are checked when the
    /// components that use them are built, and so is the tool policy: this module compiles
    /// nothing, so [`crate::toolpolicy::check`] is this plus the policy compile (what
    /// `check-config` and start-up refuse before any listener is bound).
    ///
    /// # Errors
    /// The first problem found, naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let base: http::Uri = self
            .upstream
            .base_url
            .parse()
            .map_err(|e| ConfigError::invalid("upstream.base_url", format!("{e}")))?;
        match base.scheme_str() {
            Some("https") | Some("http") => {}
            _ => {
                return Err(ConfigError::invalid(
                    "upstream.base_url",
                    "must be an http:// or https:// URL",
                ))
            }
        }
        if base.authority().is_none() {
            return Err(ConfigError::invalid("upstream.base_url", "has no host"));
        }
        if base.query().is_some() {
            return Err(ConfigError::invalid(
                "upstream.base_url",
                "must not carry a query",
            ));
        }
        if self.upstream.api_key_env.trim().is_empty() {
            return Err(ConfigError::invalid("upstream.api_key_env", "is empty"));
        }
        let admin_sources = [
            self.admin.token_env.is_some(),
            self.admin.token_file.is_some(),
            self.admin.explain_token_env.is_some(),
        ];
        if admin_sources.iter().filter(|s| **s).count() > 1 {
            return Err(ConfigError::invalid(
                "admin.token_env",
                "set one of token_env, token_file and explain_token_env (an alias of token_env)",
            ));
        }
        if self.auth.keys.is_empty() && self.auth.jwks.is_none() {
            return Err(ConfigError::invalid(
                "auth",
                "no verification key: set [[auth.keys]] or [auth.jwks]",
            ));
        }
        if self.auth.subject_claim.is_empty() {
            return Err(ConfigError::invalid("auth.subject_claim", "is empty"));
        }
        if let Some(aud) = &self.auth.audience {
            if aud.to_vec().iter().any(String::is_empty) || aud.to_vec().is_empty() {
                return Err(ConfigError::invalid("auth.audience", "is empty"));
            }
        }
        if let Some(jwks) = &self.auth.jwks {
            let uri: http::Uri = jwks
                .url
                .parse()
                .map_err(|e| ConfigError::invalid("auth.jwks.url", format!("{e}")))?;
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if is_loopback_host(uri.host().unwrap_or("")) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "auth.jwks.url",
                        "must be https:// (plain http only on loopback)",
                    ))
                }
            }
            if jwks.refresh_secs == 0 {
                return Err(ConfigError::invalid(
                    "auth.jwks.refresh_secs",
                    "must be > 0",
                ));
            }
        }
        if self.policy.max_body_bytes == 0 {
            return Err(ConfigError::invalid("policy.max_body_bytes", "must be > 0"));
        }
        if self.connections.max_entries == 0 {
            return Err(ConfigError::invalid(
                "connections.max_entries",
                "must be > 0",
            ));
        }
        if !self.limits.per_subject_rps.is_finite() || self.limits.per_subject_rps < 0.0 {
            return Err(ConfigError::invalid(
                "limits.per_subject_rps",
                "must be >= 0",
            ));
        }
        if self.limits.per_subject_rps > 0.0 && self.limits.burst == 0 {
            return Err(ConfigError::invalid(
                "limits.burst",
                "must be > 0 with a rate limit",
            ));
        }
        if self.limits.max_in_flight == 0 {
            return Err(ConfigError::invalid("limits.max_in_flight", "must be > 0"));
        }
        if self.limits.max_in_flight_per_subject == 0 {
            return Err(ConfigError::invalid(
                "limits.max_in_flight_per_subject",
                "must be > 0",
            ));
        }
        if self.limits.body_read_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "limits.body_read_timeout_secs",
                "must be > 0",
            ));
        }
        if self.limits.max_json_keys_per_object == 0 {
            return Err(ConfigError::invalid(
                "limits.max_json_keys_per_object",
                "must be > 0",
            ));
        }
        if !(1..=crate::rewrite::JsonLimits::MAX_DEPTH).contains(&self.limits.max_json_depth) {
            return Err(ConfigError::invalid(
                "limits.max_json_depth",
                "must be between 1 and 128",
            ));
        }
        if self.limits.max_request_head_bytes < 8192 {
            return Err(ConfigError::invalid(
                "limits.max_request_head_bytes",
                "must be >= 8192",
            ));
        }
        for (key, v) in [
            (
                "limits.max_request_headers",
                self.limits.max_request_headers,
            ),
            (
                "limits.max_streams_per_connection",
                self.limits.max_streams_per_connection as usize,
            ),
            (
                "limits.header_read_timeout_secs",
                self.limits.header_read_timeout_secs as usize,
            ),
            (
                "limits.keepalive_idle_secs",
                self.limits.keepalive_idle_secs as usize,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be > 0"));
            }
        }
        if self.limits.max_connections == 0 {
            return Err(ConfigError::invalid(
                "limits.max_connections",
                "must be > 0",
            ));
        }
        if self.upstream.previous_api_key_env.is_some()
            && self.upstream.previous_api_key_file.is_some()
        {
            return Err(ConfigError::invalid(
                "upstream.previous_api_key_file",
                "set previous_api_key_env or previous_api_key_file, not both",
            ));
        }
        if let (Some(state), Some(job)) = (&self.state.path, &self.audit_job) {
            if *state == job.state_path {
                return Err(ConfigError::invalid(
                    "state.path",
                    "must differ from audit_job.state_path (one open per file)",
                ));
            }
        }
        if let Some(job) = &self.audit_job {
            job.validate()?;
        }
        if let Some(shared) = &self.shared {
            shared.validate()?;
        }
        self.approvals.validate()?;
        self.validate_approval_rules()?;
        self.validate_operators()?;
        self.validate_mcp()
    }

    /// `[[policy.approvals]]`: named, each name once, covering some tool. The `if` is compiled
    /// with the rest of the policy ([`crate::approvals`]).
    fn validate_approval_rules(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.policy.approvals.iter().enumerate() {
            let key = format!("policy.approvals[{i}]");
            let name = r.name.trim();
            if name.is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be 1 to 200 printable characters",
                ));
            }
            if !names.insert(name.to_owned()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("`{name}` names two approval rules"),
                ));
            }
            if r.tools.is_empty() && r.toolkits.is_empty() {
                return Err(ConfigError::invalid(
                    &key,
                    "names no tool: set `tools` (globs) or `toolkits`",
                ));
            }
            if r.tools
                .iter()
                .chain(&r.toolkits)
                .any(|t| t.trim().is_empty())
            {
                return Err(ConfigError::invalid(&key, "an empty tool or toolkit"));
            }
        }
        Ok(())
    }

    /// `[[admin.operators]]`: each named once, with exactly one token source, tokens of
    /// their own (never the shared admin token's source).
    fn validate_operators(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, op) in self.admin.operators.iter().enumerate() {
            let key = format!("admin.operators[{i}]");
            let name = op.name.trim();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be 1 to 100 printable characters",
                ));
            }
            if !names.insert(name.to_ascii_lowercase()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("`{name}` names two operators"),
                ));
            }
            if op.token_env.is_some() == op.token_file.is_some() {
                return Err(ConfigError::invalid(
                    &key,
                    "set exactly one of token_env and token_file",
                ));
            }
            let shared_env = self
                .admin
                .token_env
                .as_ref()
                .or(self.admin.explain_token_env.as_ref());
            if op.token_env.is_some() && op.token_env.as_ref() == shared_env
                || op.token_file.is_some() && op.token_file == self.admin.token_file
            {
                return Err(ConfigError::invalid(
                    &key,
                    "an operator's token must be their own, not the [admin] token",
                ));
            }
            if op.subject.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(ConfigError::invalid(format!("{key}.subject"), "is empty"));
            }
        }
        Ok(())
    }

    /// `public_url` and `[mcp]`. Without `public_url` the gateway could only hand out MCP URLs
    /// built from the request's `Host`, which on a non-loopback listener is the caller's word:
    /// that is a start-up error to configure, never a silent pass-through.
    fn validate_mcp(&self) -> Result<(), ConfigError> {
        match &self.public_url {
            Some(url) => {
                origin_of(url).map_err(|reason| ConfigError::invalid("public_url", reason))?;
            }
            None if !self.listen.ip().is_loopback() => {
                return Err(ConfigError::invalid(
                    "public_url",
                    "is required when the listener is not loopback: MCP URLs in answers are \
                     rewritten onto it (e.g. public_url = \"https://gateway.example\")",
                ));
            }
            None => {}
        }
        for (i, o) in self.mcp.allowed_origins.iter().enumerate() {
            let canonical = origin_of(o).map_err(|reason| {
                ConfigError::invalid(format!("mcp.allowed_origins[{i}]"), reason)
            })?;
            if canonical != o.to_ascii_lowercase() {
                return Err(ConfigError::invalid(
                    format!("mcp.allowed_origins[{i}]"),
                    "must be an origin: scheme://host[:port], no path",
                ));
            }
        }
        for (i, a) in self.mcp.authorization_servers.iter().enumerate() {
            origin_of(a).map_err(|reason| {
                ConfigError::invalid(format!("mcp.authorization_servers[{i}]"), reason)
            })?;
        }
        if self.mcp.stream_idle_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "mcp.stream_idle_timeout_secs",
                "must be > 0",
            ));
        }
        if let Some(k) = self
            .mcp
            .session
            .keys()
            .find(|k| crate::rewrite::is_identity_key(k))
        {
            return Err(ConfigError::invalid(
                format!("mcp.session.{k}"),
                "the session's user is always the token subject",
            ));
        }
        Ok(())
    }
}

/// The lower-case origin (`scheme://host[:port]`) of an http(s) URL with no query, or why not.
pub(crate) fn origin_of(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("{e}"))?;
    let Some(scheme @ ("https" | "http")) = uri.scheme_str() else {
        return Err("must be an http:// or https:// URL".into());
    };
    let authority = uri.authority().ok_or("has no host")?;
    if authority.as_str().contains('@') {
        return Err("must not carry credentials".into());
    }
    if uri.query().is_some() {
        return Err("must not carry a query".into());
    }
    Ok(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}

/// Whether `host` names the loopback interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

impl AuditJobConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("audit_job.concurrency", self.concurrency as u64),
            ("audit_job.page_limit", self.page_limit as u64),
            ("audit_job.max_attempts", u64::from(self.max_attempts)),
            ("audit_job.webhook_timeout_secs", self.webhook_timeout_secs),
            (
                "audit_job.composio_webhook_tolerance_secs",
                self.composio_webhook_tolerance_secs,
            ),
            (
                "audit_job.composio_webhook_max_body_bytes",
                self.composio_webhook_max_body_bytes as u64,
            ),
            (
                "audit_job.composio_webhook_read_timeout_secs",
                self.composio_webhook_read_timeout_secs,
            ),
            (
                "audit_job.composio_webhook_max_in_flight",
                self.composio_webhook_max_in_flight as u64,
            ),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::invalid(*key, "must be > 0"));
        }
        if self.page_limit > 1000 {
            return Err(ConfigError::invalid(
                "audit_job.page_limit",
                "must be <= 1000",
            ));
        }
        if self.retry_max_ms < self.retry_base_ms {
            return Err(ConfigError::invalid(
                "audit_job.retry_max_ms",
                "must be >= retry_base_ms",
            ));
        }
        if let Some(url) = &self.webhook_url {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| ConfigError::invalid("audit_job.webhook_url", format!("{e}")))?;
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if is_loopback_host(uri.host().unwrap_or("")) => {}
                _ => {
                    return Err(ConfigError::invalid(
                        "audit_job.webhook_url",
                        "must be https:// (plain http only on loopback)",
                    ))
                }
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(ConfigError::invalid("audit_job.webhook_url", "has no host"));
            }
            if self
                .webhook_secret_env
                .as_deref()
                .is_none_or(|v| v.trim().is_empty())
            {
                return Err(ConfigError::invalid(
                    "audit_job.webhook_secret_env",
                    "is required when webhook_url is set",
                ));
            }
        }
        let path = &self.composio_webhook_path;
        if crate::path::check(path).is_err() || path == "/" || path.starts_with("/api/") {
            return Err(ConfigError::invalid(
                "audit_job.composio_webhook_path",
                "must be a canonical absolute path outside /api/",
            ));
        }
        if self
            .composio_webhook_secret_env
            .as_deref()
            .is_some_and(|v| v.trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "audit_job.composio_webhook_secret_env",
                "is empty",
            ));
        }
        if self.state_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("audit_job.state_path", "is empty"));
        }
        Ok(())
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            base_url: default_base_url(),
            api_key_env: default_api_key_env(),
            api_key_file: None,
            previous_api_key_env: None,
            previous_api_key_file: None,
            secret_poll_ms: default_secret_poll_ms(),
            ca_file: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_secs: default_request_timeout_secs(),
            execute_timeout_secs: default_execute_timeout_secs(),
            lookup_timeout_secs: default_lookup_timeout_secs(),
        }
    }
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            on_identity_mismatch: OnIdentityMismatch::default(),
            allow_custom_auth: false,
            allow_shared_accounts: false,
            allow_proxy_execute: true,
            max_body_bytes: default_max_body_bytes(),
            default_decision: PolicyDefault::default(),
            scope_prefix: default_scope_prefix(),
            rules: Vec::new(),
            approvals: Vec::new(),
            constraints: Vec::new(),
        }
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            gate: true,
            cache_ttl_secs: default_cache_ttl_secs(),
            negative_ttl_secs: default_negative_ttl_secs(),
            tool_ttl_secs: default_tool_ttl_secs(),
            max_entries: default_max_entries(),
            serve_stale_secs: 0,
            toolkit_prefix_fallback: false,
            settings_hint: default_settings_hint(),
            messages: MessageTemplates::default(),
        }
    }
}

impl Default for MessageTemplates {
    fn default() -> Self {
        Self {
            not_connected: default_msg_not_connected(),
            expired: default_msg_expired(),
            inactive: default_msg_inactive(),
            pending: default_msg_pending(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: default_header_read_timeout_secs(),
            keepalive_idle_secs: default_keepalive_idle_secs(),
            max_request_head_bytes: default_max_request_head_bytes(),
            max_request_headers: default_max_request_headers(),
            max_streams_per_connection: default_max_streams_per_connection(),
            tls_handshake_timeout_secs: default_tls_handshake_timeout_secs(),
            max_connections: default_max_connections(),
            shutdown_grace_secs: default_shutdown_grace_secs(),
            per_subject_rps: 0.0,
            burst: default_burst(),
            max_in_flight: default_max_in_flight(),
            max_in_flight_per_subject: default_max_in_flight_per_subject(),
            body_read_timeout_secs: default_body_read_timeout_secs(),
            max_json_keys_per_object: default_max_json_keys_per_object(),
            max_json_depth: default_max_json_depth(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_base_url() -> String {
    "https://backend.composio.dev".to_owned()
}
fn default_secret_poll_ms() -> u64 {
    2000
}

fn default_api_key_env() -> String {
    "COMPOSIO_API_KEY".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_request_timeout_secs() -> u64 {
    60
}
fn default_execute_timeout_secs() -> u64 {
    180
}
fn default_lookup_timeout_secs() -> u64 {
    10
}
fn default_subject_claim() -> String {
    "sub".to_owned()
}
fn default_leeway_secs() -> u64 {
    30
}
fn default_token_cache_entries() -> usize {
    100_000
}
fn default_token_cache_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_jwks_unknown_kid_wait_ms() -> u64 {
    500
}
fn default_jwks_refresh_secs() -> u64 {
    300
}
fn default_jwks_min_refetch_secs() -> u64 {
    30
}
fn default_max_body_bytes() -> usize {
    1024 * 1024
}
fn default_scope_prefix() -> String {
    "composio:".to_owned()
}
fn default_cache_ttl_secs() -> u64 {
    30
}
fn default_negative_ttl_secs() -> u64 {
    5
}
fn default_tool_ttl_secs() -> u64 {
    3600
}
fn default_max_entries() -> usize {
    100_000
}
fn default_settings_hint() -> String {
    "in Settings > Integrations".to_owned()
}
fn default_msg_not_connected() -> String {
    "Please connect your {toolkit} account first {settings}.".to_owned()
}
fn default_msg_expired() -> String {
    "Your {toolkit} connection has expired. Please reconnect {settings}.".to_owned()
}
fn default_msg_inactive() -> String {
    "Your {toolkit} connection is inactive. Please reconnect {settings}.".to_owned()
}
fn default_msg_pending() -> String {
    "Your {toolkit} connection is not finished yet. Please complete the authorisation {settings}."
        .to_owned()
}
fn default_renotify_secs() -> u64 {
    86_400
}
fn default_state_path() -> PathBuf {
    PathBuf::from("entitygate-state.redb")
}
fn default_audit_concurrency() -> usize {
    4
}
fn default_audit_page_limit() -> usize {
    100
}
fn default_audit_retry_base_ms() -> u64 {
    500
}
fn default_audit_retry_max_ms() -> u64 {
    30_000
}
fn default_audit_max_attempts() -> u32 {
    6
}
fn default_audit_webhook_timeout_secs() -> u64 {
    10
}
fn default_composio_webhook_path() -> String {
    "/webhooks/composio".to_owned()
}
fn default_composio_webhook_tolerance_secs() -> u64 {
    300
}
fn default_mcp_stream_idle_secs() -> u64 {
    300
}
fn default_mcp_session_ttl_secs() -> u64 {
    3600
}
fn default_composio_webhook_max_body_bytes() -> usize {
    64 * 1024
}
fn default_composio_webhook_read_timeout_secs() -> u64 {
    10
}
fn default_composio_webhook_max_in_flight() -> usize {
    8
}
fn default_header_read_timeout_secs() -> u64 {
    10
}
fn default_keepalive_idle_secs() -> u64 {
    75
}
fn default_max_request_head_bytes() -> usize {
    16 * 1024
}
fn default_max_request_headers() -> usize {
    64
}
fn default_max_streams_per_connection() -> u32 {
    100
}
fn default_tls_handshake_timeout_secs() -> u64 {
    10
}
fn default_max_connections() -> usize {
    20_000
}
fn default_shutdown_grace_secs() -> u64 {
    30
}
fn default_burst() -> u32 {
    20
}
fn default_max_in_flight() -> usize {
    10_000
}
fn default_max_in_flight_per_subject() -> usize {
    // Room for an agent's fan-out (a burst of parallel tool calls), a small share of
    // `max_in_flight`.
    256
}
fn default_body_read_timeout_secs() -> u64 {
    30
}
fn default_max_json_keys_per_object() -> usize {
    crate::rewrite::JsonLimits::default().max_keys_per_object
}
fn default_max_json_depth() -> usize {
    crate::rewrite::JsonLimits::default().max_depth
}
fn default_ready_window_secs() -> u64 {
    60
}
fn default_admin_max_connections() -> usize {
    32
}

#[cfg(test)]
mod tests;
