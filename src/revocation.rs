//! The step after every execution ([`Revoker::after_execution`]), whatever carried it: REST execute
//! (v1/v2/v3), session `execute`/`execute_meta`/`proxy_execute`, proxy executions, MCP
//! `tools/call` alone or in a batch. When Composio refuses an execution, the cached status of
//! every toolkit the call was decided on is forgotten (the next call looks it up again).
//!
//! Revocation on the response path: Composio's answer to an execution can show that the
//! user's connection is dead even when its status still says `ACTIVE` (the token was revoked
//! at the provider). When the answer can be attributed to one decided toolkit (one toolkit
//! decided; for an MCP batch, the call whose JSON-RPC id the answer carries), the gateway
//! 1. forgets what it cached about the connection,
//! 2. marks the (subject, toolkit) pair broken, so the user's next call gets the "please
//!    reconnect" refusal before Composio is asked anything,
//! 3. writes a `connection_broken` audit event, and
//! 4. hands the account to the expiry notifier ([`crate::expiry`]): the same signed webhook
//!    the audit job sends, deduplicated with it by (user, account).
//!
//! What counts as dead ([`dead_connection`]), read from structured fields only: Composio's
//! connected-account errors (code 1803, "no usable connected account", and the
//! `ConnectedAccount*` slugs for not found, expired, revoked, inactive or disabled accounts,
//! whatever the status), and a failed tool result whose provider status (`data.status_code`,
//! `status`, `http_status`) is 401 or whose `data.error`, `data.error_code` or `data.code` is
//! exactly a revoked-token code ([`REVOKED_CODES`]). No message or error text is ever read:
//! a provider's text echoes the request (a URL, a channel name), so a caller could write
//! "401 unauthorized" into it and revoke its own user's connection. A bare 403 is a
//! permission on one resource, not a dead connection.
//!
//! A mark lasts until the subject changes a connection through the gateway (creates,
//! refreshes, deletes one) or `HOLD` passes, so that a reconnection made elsewhere is
//! picked up by a fresh status lookup.
//!
//! This module owns the judgement and the marks, from narrow handles ([`Revoker`]: the
//! connection cache, the marks, the audit sink, the expiry notifier); relaying the answer to
//! the caller is the proxy's (`proxy::after`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::StatusCode;
use serde_json::{json, Value};

use crate::connections::{Account, Connections, ToolInfo};
use crate::error::Error;

/// How long a broken mark refuses without asking Composio.
pub const HOLD: Duration = Duration::from_secs(15 * 60);
/// Largest execution answer inspected (larger ones are relayed without a look).
pub(crate) const MAX_INSPECTED: u64 = 1024 * 1024;

/// One broken connection.
#[derive(Debug, Clone)]
struct Mark {
    account: String,
    at: Instant,
}

/// The (subject, toolkit) pairs whose connection Composio showed to be dead.
#[derive(Debug, Default)]
pub struct Broken {
    marks: DashMap<(Arc<str>, String), Mark>,
}

impl Broken {
    /// The refusal for `subject` on `info`'s toolkit, when its connection was seen dead.
    pub(crate) fn refusal(
        &self,
        conns: &crate::connections::Connections,
        subject: &Arc<str>,
        info: &ToolInfo,
    ) -> Option<Error> {
        if self.marks.is_empty() {
            return None;
        }
        let key = (subject.clone(), info.toolkit.clone());
        let mark = self.marks.get(&key)?.clone();
        if mark.at.elapsed() > HOLD {
            self.marks.remove(&key);
            return None;
        }
        let dead = Account {
            id: mark.account,
            toolkit: info.toolkit.clone(),
            status: "EXPIRED".into(),
            is_disabled: false,
        };
        Some(conns.refusal(info, std::slice::from_ref(&dead)))
    }

    /// Forgets the marks of `subject` (it changed a connection).
    pub(crate) fn clear_subject(&self, subject: &str) {
        if !self.marks.is_empty() {
            self.marks.retain(|(s, _), _| &**s != subject);
        }
    }

    pub(crate) fn mark(&self, subject: &Arc<str>, toolkit: &str, account: &str) {
        self.marks.insert(
            (subject.clone(), toolkit.to_owned()),
            Mark {
                account: account.to_owned(),
                at: Instant::now(),
            },
        );
    }
}

/// Why Composio's answer to an execution shows a dead connection, if it does: the status to
/// report (`EXPIRED` for Composio's connected-account errors, `REVOKED` for the provider's
/// 401/403) and the reason.
pub fn dead_connection(status: StatusCode, body: &[u8]) -> Option<(&'static str, &'static str)> {
    // Nearly every answer is a success: parsing each one into a `Value` to find that out was
    // a tenth of the gateway's CPU per execution (BENCHMARKS.md, issue 17).
    if !might_be_dead(body) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    dead_in_answer(status, &v)
}

/// [`dead_connection`] on the parsed answer.
fn dead_in_answer(status: StatusCode, v: &Value) -> Option<(&'static str, &'static str)> {
    if let Some(e) = v.get("error").filter(|e| e.is_object()) {
        let code = e.get("code").and_then(Value::as_u64);
        let slug = e.get("slug").and_then(Value::as_str).unwrap_or("");
        if code == Some(1803) {
            return Some(("EXPIRED", "composio: no usable connected account (1803)"));
        }
        let lower = slug.to_ascii_lowercase();
        if lower.contains("connectedaccount")
            && ["notfound", "expired", "revoked", "inactive", "disabled"]
                .iter()
                .any(|w| lower.contains(w))
        {
            return Some(("EXPIRED", "composio: connected account error"));
        }
        return None;
    }
    if !status.is_success() || v.get("successful") != Some(&Value::Bool(false)) {
        return None;
    }
    // A failed tool result: only structured fields decide. Messages are never read: a
    // provider's error text echoes the request (`?channel=C401-unauthorized`), so a caller
    // could write "401 unauthorized" or "token revoked" into it and revoke its own user.
    let data = v.get("data").unwrap_or(&Value::Null);
    let provider = ["status_code", "status", "http_status"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_u64));
    if provider == Some(401) {
        return Some(("REVOKED", "provider: 401 unauthorized"));
    }
    let revoked_code = ["error", "error_code", "code"].iter().any(|k| {
        data.get(*k)
            .and_then(Value::as_str)
            .is_some_and(|c| REVOKED_CODES.iter().any(|r| c.eq_ignore_ascii_case(r)))
    });
    revoked_code.then_some(("REVOKED", "provider: token revoked (error code)"))
}

/// Providers' error codes for a token that no longer works, matched whole against
/// `data.error`, `data.error_code` and `data.code` (never searched for in a message).
const REVOKED_CODES: &[&str] = &[
    "token_revoked",
    "invalid_grant",
    "token_expired",
    "invalid_token",
    "invalid_auth",
    "account_inactive",
];

/// A necessary condition for [`dead_connection`], on the raw bytes: every answer it reads
/// as dead contains `1803`, `connectedaccount` in some case, or `"successful"` set to
/// `false`, unless JSON escapes spell them otherwise, so any `\u` escape also says "look".
fn might_be_dead(body: &[u8]) -> bool {
    use memchr::memmem;
    memmem::find(body, b"\\u").is_some()
        || memmem::find(body, b"1803").is_some()
        || contains_ignore_case(body, b"connectedaccount")
        || memmem::find_iter(body, b"\"successful\"").any(|at| {
            let rest = &body[at + b"\"successful\"".len()..];
            let rest = skip_json_space(rest);
            rest.first() == Some(&b':') && skip_json_space(&rest[1..]).starts_with(b"false")
        })
}

fn skip_json_space(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &b[n..]
}

/// Whether `hay` contains `needle` (lowercase ASCII) in any ASCII case; linear: only the
/// positions of the needle's first letter are compared.
fn contains_ignore_case(hay: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    memchr::memchr2_iter(first, first.to_ascii_uppercase(), hay).any(|at| {
        hay.get(at..at + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(needle))
    })
}

/// Why an MCP tool result (`CallToolResult`) shows a dead connection, if it does: Composio
/// carries its execution answer (or error) as the structured content, or as JSON text.
pub(crate) fn dead_in_tool_result(result: &Value) -> Option<(&'static str, &'static str)> {
    let structured = result
        .get("structuredContent")
        .filter(|v| v.is_object())
        .and_then(|v| serde_json::to_vec(v).ok());
    let texts = result
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .filter(|t| t.len() as u64 <= MAX_INSPECTED && t.trim_start().starts_with('{'))
        .map(|t| t.as_bytes().to_vec());
    structured
        .into_iter()
        .chain(texts)
        .find_map(|bytes| dead_connection(StatusCode::OK, &bytes))
}

/// What an execution was decided on: each toolkit once, with the account the decision saw
/// usable (when it looked one up).
pub(crate) type DecidedAccounts = Vec<(String, Option<String>)>;

/// Composio's answer to an execution, as a carrier holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer<'a> {
    /// An HTTP answer: its status, and its body when it was read whole.
    Http(StatusCode, Option<&'a [u8]>),
    /// One JSON-RPC answer (a message with `result` or `error`) to an MCP `tools/call`.
    ToolCall(&'a Value),
}

/// What the step after an execution acts on: exactly these handles (the carrier builds them
/// from its rules: `proxy::Shared::revoker`).
#[derive(Clone, Copy)]
pub(crate) struct Revoker<'a> {
    /// The connection cache whose entries are forgotten.
    pub(crate) connections: &'a Connections,
    /// The broken marks.
    pub(crate) broken: &'a Broken,
    /// Where `connection_broken` events go.
    pub(crate) audit: &'a crate::audit::Sink,
    /// The expiry notifier (`[audit_job]`), when configured.
    pub(crate) expiry: Option<&'a Arc<crate::expiry::Expiry>>,
}

impl Revoker<'_> {
    /// The one step after every execution, whatever carried it (REST execute, sessions, proxy
    /// executions, MCP `tools/call` alone or in a batch), given the (toolkit, account) pairs
    /// the decision allowed and Composio's answer:
    /// - Composio refused (a non-success status, a JSON-RPC error, a tool result with
    ///   `isError`) or showed a dead connection: the cached status of every decided toolkit is
    ///   forgotten, so the next call looks it up again;
    /// - a dead connection ([`dead_connection`]) is acted on ([`Revoker::broken`]) when the
    ///   answer can be attributed: exactly one toolkit was decided. An answer about several
    ///   toolkits does not say whose connection died; forgetting them all is the safe part of
    ///   the step.
    pub(crate) fn after_execution(
        &self,
        subject: &Arc<str>,
        decided: &[(String, Option<String>)],
        answer: Answer<'_>,
    ) {
        if decided.is_empty() {
            return;
        }
        let (refused, dead) = match answer {
            Answer::Http(status, body) => (
                !status.is_success(),
                body.and_then(|b| dead_connection(status, b)),
            ),
            Answer::ToolCall(message) => {
                let result = message.get("result");
                let refused = message.get("error").is_some()
                    || result.and_then(|r| r.get("isError")) == Some(&Value::Bool(true));
                (refused, result.and_then(dead_in_tool_result))
            }
        };
        if !refused && dead.is_none() {
            return;
        }
        for (toolkit, _) in decided {
            self.connections.invalidate(subject, toolkit);
        }
        match (dead, decided) {
            (Some(dead), [(toolkit, account)]) => {
                self.broken(subject, toolkit, account.as_deref(), dead);
            }
            (Some((_, reason)), _) => {
                tracing::info!(subject = %subject, reason, toolkits = decided.len(),
                    "an answer about several toolkits shows a dead connection; their cached \
                     statuses are forgotten");
            }
            (None, _) => {}
        }
    }

    /// Acts on a dead connection (module docs, steps 1 to 4).
    pub(crate) fn broken(
        &self,
        subject: &Arc<str>,
        toolkit: &str,
        account: Option<&str>,
        (status, reason): (&'static str, &'static str),
    ) {
        let account = account.map_or_else(|| format!("(any {toolkit} account)"), str::to_owned);
        self.connections.invalidate(subject, toolkit);
        self.broken.mark(subject, toolkit, &account);
        crate::metrics::connection_broken();
        tracing::warn!(subject = %subject, toolkit, account, reason,
            "Composio's answer shows a dead connection; the user must reconnect");
        self.audit.record(
            "connection_broken",
            json!({"subject": &**subject, "toolkit": toolkit,
                "connected_account_id": account, "status": status, "reason": reason}),
        );
        if let Some(job) = self.expiry.cloned() {
            let finding = crate::expiry::Finding {
                user_id: subject.to_string(),
                toolkit: toolkit.to_owned(),
                connected_account_id: account,
                status: status.into(),
                status_reason: Some(reason.to_owned()),
                since: Some(crate::clock::now_rfc3339()),
            };
            tokio::spawn(async move {
                job.notify(std::slice::from_ref(&finding)).await;
            });
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mcp_tests {
    use super::*;

    #[test]
    fn tool_results_carrying_a_dead_connection_are_read() {
        let result = json!({"content":[{"type":"text","text":"{\"data\":{\"status_code\":401,\"message\":\"github: 401 Unauthorized: the access token was revoked\"},\"error\":\"401 Client Error: Unauthorized\",\"successful\":false}"}],"structuredContent":{"data":{"status_code":401,"message":"github: 401 Unauthorized"},"error":"401 Client Error: Unauthorized","successful":false},"isError":false});
        assert_eq!(dead_in_tool_result(&result).map(|d| d.0), Some("REVOKED"));
        let text_only = json!({"content":[{"type":"text","text":"{\"error\":{\"code\":1803,\"message\":\"no account\"}}"}],"isError":true});
        assert_eq!(
            dead_in_tool_result(&text_only).map(|d| d.0),
            Some("EXPIRED")
        );
        let fine = json!({"content":[{"type":"text","text":"{\"data\":{},\"error\":null,\"successful\":true}"}],"isError":false});
        assert_eq!(dead_in_tool_result(&fine), None);
        assert_eq!(
            dead_in_tool_result(&json!({"content":[{"type":"text","text":"hello"}]})),
            None
        );
    }
}
