//! `entitygate approvals list|approve|deny`: approvals from a shell, through a running
//! gateway's admin listener (`GET /approvals`, `POST /approvals/{id}/approve|deny`).
//!
//! Deciding needs a named operator's token (`[[admin.operators]]`), read like the kill
//! switch's from an environment variable (`--token-env`, default `ENTITYGATE_ADMIN_TOKEN`) or
//! a file (`--token-file`), never from the command line.

use std::process::ExitCode;

use http::Method;
use serde_json::json;

use super::killswitch::{admin_call, AdminConnection};

/// `entitygate approvals ...`.
#[derive(clap::Args, Debug)]
pub struct ApprovalsArgs {
    #[command(flatten)]
    pub conn: AdminConnection,
    #[command(subcommand)]
    pub command: ApprovalsCommand,
}

/// What to do with approval requests.
#[derive(clap::Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List requests, newest first, with their arguments (JSON).
    List {
        /// Only those in this state: pending, approved, denied, used, expired.
        #[arg(long)]
        status: Option<String>,
    },
    /// Approve a pending request: its exact call may run once within `grant_ttl_secs`.
    Approve {
        /// The request's id (`apr_...`).
        id: String,
        /// Why (recorded in the audit trail).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a pending request.
    Deny {
        /// The request's id (`apr_...`).
        id: String,
        /// Why (shown to the agent and recorded in the audit trail).
        #[arg(long)]
        reason: String,
    },
}

/// Runs `entitygate approvals`: 0 on success, 1 when the gateway refused or failed, 64 on a
/// usage error.
pub async fn run(args: &ApprovalsArgs) -> ExitCode {
    let token = match args.conn.token() {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let valid_id = |id: &str| {
        !id.is_empty()
            && id.len() <= 64
            && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let (method, path, body) = match &args.command {
        ApprovalsCommand::List { status } => {
            let path = match status {
                Some(s) if s.chars().all(|c| c.is_ascii_lowercase()) => {
                    format!("/approvals?status={s}")
                }
                Some(_) => {
                    return usage("--status is one of pending, approved, denied, used, expired")
                }
                None => "/approvals".to_owned(),
            };
            (Method::GET, path, None)
        }
        ApprovalsCommand::Approve { id, reason } | ApprovalsCommand::Deny { id, reason } => {
            if !valid_id(id) {
                return usage("an approval id is letters, digits and `_`");
            }
            let action = if matches!(args.command, ApprovalsCommand::Approve { .. }) {
                "approve"
            } else {
                "deny"
            };
            (
                Method::POST,
                format!("/approvals/{id}/{action}"),
                Some(json!({ "reason": reason })),
            )
        }
    };
    admin_call(&args.conn.admin, &token, method, &path, body, "approvals").await
}

fn usage(why: &str) -> ExitCode {
    eprintln!("entitygate approvals: {why}");
    ExitCode::from(64)
}
