//! entitygate: a fail-closed reverse proxy that pins every Composio call to the caller's
//! verified identity.
//!
//! # Layout
//! By layer, lowest first (`ARCHITECTURE.md` has the table; `tests/layers.rs` fails the build
//! on an import into a higher layer or any import circle):
//! 0. Foundation: [`error`] (every refusal as one enum, in Composio's error envelope),
//!    [`clock`], [`path`] and [`routes`] (strict paths, the route table: deny by default),
//!    [`rewrite`] (strict JSON and identity pinning in bodies and queries), [`headers`] and
//!    [`body`] (what crosses the gateway, one body reader's limits, key redaction on the way
//!    back), `conn` (per-connection deadlines), [`metrics`], [`limits`].
//! 1. Contract: [`config`] (the TOML contract, structural validation only), [`logging`],
//!    [`tls`] and [`client`] (rustls configurations, the pooled HTTP client).
//! 2. Services: [`trace`] (W3C trace context, OTLP export), [`upstream`] (Composio, which
//!    alone gets the key), [`auth`] (JWT verification, JWKS, the token cache), [`toolpolicy`],
//!    `constraints` (CEL over a tool call's arguments: compile, bind, evaluate with a bound),
//!    [`killswitch`] (deny rules, kept in the embedded store), [`audit`] (one hash-chained
//!    event per decision, and the console's live feed), [`shared`] (Redis for a fleet; knows
//!    no domain type: the kill switch and the caches attach to it as listeners), [`toollock`]
//!    (the reviewed tool definitions, pinned versions, the poisoning scan).
//! 3. State: [`connections`] (connection status and tool metadata, coalesced and cached),
//!    [`expiry`] (the audit job, Composio's expiry webhook), [`revocation`] (dead connections
//!    learnt from answers, refused before Composio is asked), [`approvals`] (calls that wait
//!    for a named operator's yes, bound to the exact call; their store, local or on Redis).
//! 4. Decision: `invocation`: every carrier's tool call as invocations, and the one ordered
//!    `decide` over a narrow `Decider`, returning its trace.
//! 5. Carriers: [`proxy`] (the request pipeline: one body reader, one upstream request, one
//!    after-execution step; one handler module per route family; `proxy::mcp`, MCP as a
//!    carrier; `proxy::build`, the rules snapshot built from a config), `accept` (one
//!    connection from accept to close).
//! 6. Control: `control` (the handle the admin side gets instead of the server), [`admin`]
//!    (health, readiness, metrics, reload, the kill switch API, and [`console`], the security
//!    team's web console under `/ui`), [`secrets`] (secret files rotated without a restart),
//!    [`explain`] (a dry run through the real flow).
//! 7. Assembly: [`server`], the [`Gateway`] builder, listeners, tasks, graceful shutdown.
//! 8. Entry points: [`cli`] (the subcommands' arguments, printing and exit statuses) and
//!    `cli::demo`.
//!
//! `sandbox` (cargo feature `sandbox`, on by default) is the fake Composio the tests and the
//! demo run against: its own crate (`crates/sandbox`, `entitygate-sandbox`, re-exported here)
//! depending on nothing of this one; an embedder builds with `default-features = false` and
//! never compiles it.
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
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod body;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
mod conn;
pub mod connections;
pub(crate) mod constraints;
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
pub mod toollock;
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
