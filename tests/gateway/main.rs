#![allow(unreachable_pub)]
#![allow(clippy::unwrap_used)]
//! Integration tests: the gateway and the sandbox Composio over real sockets on 127.0.0.1.
//! One binary (each `tests/*.rs` would relink the crate).

mod support;

/// Raw HTTP to the console, shared with `tests/console.rs`.
#[path = "../console/http.rs"]
mod console_http;

mod admin_console;
mod approvals;
mod carriers;
mod cli;
mod constraints;
mod controls;
mod core;
mod equivalence;
mod evidence;
mod explain;
mod gating;
mod invocations;
mod matrix;
mod mcp;
mod ocsf;
mod ops;
mod policy;
mod surface;
mod tls;
mod toollock;
