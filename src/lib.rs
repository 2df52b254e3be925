//! entitygate: a fail-closed reverse proxy that pins every Composio call to the caller's
//! verified identity.
//!
//! # Layout
//! - [`config`]: the TOML contract and its validation.
//! - [`error`]: every refusal as one enum, mapped to Composio's error envelope.
//! - [`auth`]: JWT verification (static keys, JWKS) and the verified-token cache.
//! - [`path`], [`routes`]: strict path checking and the route table (deny by default).
//! - [`rewrite`]: strict JSON parsing and identity pinning in bodies and queries.
//! - [`headers`], [`body`]: what crosses the gateway, and key redaction on the way back.
//! - [`connections`]: connection-status gating with a coalescing cache.
//! - [`toolpolicy`]: which callers may run which toolkits and tools, from their claims.
//! - `invocation`: every carrier of a tool call extracted into invocations, and the one
//!   decision on them (code-tool ban, policy, account, proxy switch, connection gate).
//! - [`proxy`]: the request flow, one handler module per route family.
//! - [`upstream`], [`tls`]: the pooled rustls client to Composio, which alone injects the key.
//! - [`server`]: the [`Gateway`] builder, accept loop and graceful shutdown; `accept`: one
//!   connection from accept to close (TLS, protocol, HTTP/1 parked between requests);
//!   `conn`: the per-connection deadlines (first request head, later heads, keep-alive).
//! - [`audit`]: one structured event per decision, hash-chained; [`clock`]: Unix and RFC 3339
//!   time; [`trace`]: W3C trace context across the hop and OpenTelemetry export.
//! - [`explain`]: a dry run of one request through the real flow (`entitygate explain`).
//! - [`cli`]: the subcommands' arguments, printing and exit statuses (`audit-log verify`,
//!   `audit`, `explain`, `deny`, `demo`); the work stays in the modules they front.
//! - [`admin`], [`metrics`], [`limits`]: health, readiness, Prometheus metrics, reload, and
//!   per-subject rate limits; [`console`]: the security team's web console on the admin
//!   listener (`/ui`).
//! - `proxy::mcp`: MCP through the gateway (Streamable HTTP, JSON-RPC inspected both ways, the
//!   front door, RFC 9728 metadata, MCP URLs in answers moved onto `public_url`).
//! - [`killswitch`]: operators' deny rules (subject, jti, all, toolkit, tool glob), applied
//!   without a reload and kept in the embedded store (`[state] path`).
//! - [`revocation`]: a dead connection seen in Composio's answer to an execution refuses
//!   the user's next call before Composio is asked, and is reported.
//! - [`secrets`]: secret files (upstream key, HMAC secrets) watched and rotated without a
//!   restart.
//! - [`expiry`]: the audit job that finds broken connections, notifies the app, and takes
//!   Composio's expiry webhook.
//! - [`logging`]: the log set-up of the binary.
//! - [`shared`]: several replicas as one gateway on Redis (`[shared]`): global rate limits,
//!   the invalidation bus, cross-replica single-flight, the audit job's lease and dedup.
//! - `sandbox`, `cli::demo` (cargo feature `sandbox`, on by default): a faithful fake Composio
//!   and the demo that runs against it. The sandbox is its own crate (`crates/sandbox`,
//!   `entitygate-sandbox`, re-exported here), depending on nothing of this one; an embedder
//!   builds without either with `default-features = false` and never compiles it.
//!
//! # Embedding
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = entitygate::Config::load("entitygate.toml".as_ref())?;
//! let gateway = entitygate::Gateway::builder(config).build().await?;
//! let running = gateway.spawn("127.0.0.1:0".parse()?).await?;
//! println!("listening on {}", running.local_addr());
//! running.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod accept;
pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
mod conn;
pub mod connections;
mod control;
pub mod error;
pub mod expiry;
pub mod explain;
pub mod headers;
pub(crate) mod invocation;
pub mod killswitch;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod revocation;
pub mod rewrite;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod shared;
pub mod tls;
pub mod toolpolicy;
pub mod trace;
pub mod upstream;

/// The fake Composio, crate `entitygate-sandbox` (crates/sandbox), under its old path.
#[cfg(feature = "sandbox")]
pub use entitygate_sandbox as sandbox;

/// The console is served by the admin listener and lives under it ([`admin::console`]); its
/// old path keeps working.
pub use admin::console;

pub use config::Config;
pub use error::Error;
pub use server::{Gateway, GatewayBuilder, RunningGateway};
