//! The `entitygate` subcommands other than `serve`: argument types and
//! the code that runs them, printing and choosing an exit status. The work itself stays in
//! the library modules they front; nothing in those modules parses arguments or prints.
//!
//! - [`approvals`]: `approvals list|approve|deny` (through a running gateway's admin listener);
//! - [`audit`]: `audit-log verify` (the decision log's hash chain, [`crate::audit`]);
//! - [`check`]: `check-config [--live]` (the configuration as the gateway loads it, every
//!   broken constraint, and with `--live` the constraints against Composio's tool schemas);
//! - [`expiry`]: `audit` (one scan for broken connections, [`crate::expiry`]);
//! - [`explain`]: `explain` (a dry run, [`crate::explain`]);
//! - [`keyscope`]: `check-config --live`'s read-only probes of the Composio key's permissions;
//! - [`killswitch`]: `deny add|list|remove` (through a running gateway's admin listener);
//! - [`tools`]: `tools lock|diff` (the tool-definition lock, [`crate::toollock`]);
//! - `demo` (cargo feature `sandbox`): `demo`, the gateway in front of the fake Composio.

pub mod approvals;
pub mod audit;
pub mod check;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod expiry;
pub mod explain;
pub mod keyscope;
pub mod killswitch;
pub mod tools;

/// Logs warnings and worse to stderr (`RUST_LOG` overrides the level), for the subcommands
/// whose stdout is their report.
fn log_warnings_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
