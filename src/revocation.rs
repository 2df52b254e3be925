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
pub(crate) type Decided = Vec<(String, Option<String>)>;

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
mod tests {
    use super::*;

    fn dead(status: u16, body: Value) -> Option<(&'static str, &'static str)> {
        dead_connection(
            StatusCode::from_u16(status).expect("status"),
            body.to_string().as_bytes(),
        )
    }

    #[test]
    fn composio_connected_account_errors_are_dead_connections() {
        assert!(dead(
            400,
            json!({"error": {"message": "No connected account found", "code": 1803, "status": 400}})
        )
        .is_some());
        assert!(dead(403, json!({"error": {"message": "x", "code": 1803, "slug": "ActionExecute_ConnectedAccountNotFound"}})).is_some());
        assert!(dead(
            422,
            json!({"error": {"message": "x", "code": 1, "slug": "ConnectedAccount_Expired"}})
        )
        .is_some());
        assert!(dead(
            400,
            json!({"error": {"message": "x", "code": 1, "slug": "ConnectedAccountRevoked"}})
        )
        .is_some());
        // Another error is not.
        assert!(dead(
            400,
            json!({"error": {"message": "bad arguments", "code": 10400}})
        )
        .is_none());
        assert!(dead(400, json!({"error": {"message": "x", "code": 1812, "slug": "ActionExecute_ConnectedAccountEntityIdMismatch"}})).is_none());
        assert!(dead(502, json!("not json at all")).is_none());
    }

    fn failed(data: Value, error: &str) -> Option<(&'static str, &'static str)> {
        dead(
            200,
            json!({"data": data, "error": error, "successful": false}),
        )
    }

    #[test]
    fn a_provider_401_status_or_a_revoked_token_code_is_a_dead_connection() {
        assert!(failed(json!({"status_code": 401}), "Unauthorized").is_some());
        assert!(failed(json!({"http_status": 401}), "").is_some());
        for code in REVOKED_CODES {
            for field in ["error", "error_code", "code"] {
                assert!(
                    failed(json!({ field: code }), "").is_some(),
                    "{field}: {code}"
                );
            }
        }
        assert!(failed(json!({"ok": false, "error": "TOKEN_REVOKED"}), "").is_some());
        // A 403 on one resource is a permission, not a dead connection.
        assert!(failed(
            json!({"status_code": 403, "message": "Resource not accessible by integration"}),
            ""
        )
        .is_none());
        assert!(failed(json!({"status_code": 404}), "Not Found").is_none());
        // A success is never one.
        assert!(dead(
            200,
            json!({"data": {"status_code": 401}, "successful": true})
        )
        .is_none());
    }

    /// Issue 25: provider messages echo the request, so a caller can write anything into
    /// them. No message, error string or URL decides, whatever it says.
    #[test]
    fn free_text_alone_never_makes_a_dead_connection() {
        let texts = [
            "401 Client Error: Unauthorized for url: https://slack.com/api/chat.postMessage?channel=C401-unauthorized",
            "401 unauthorized",
            "Unauthorized (401): token revoked",
            "Token has been expired or revoked.",
            "invalid_grant: the token was revoked",
            "token_revoked",
            "invalid token",
        ];
        for text in texts {
            for status in [None, Some(403u64), Some(404), Some(400), Some(500)] {
                let mut data = json!({"message": text, "url": text, "detail": text});
                if let Some(s) = status {
                    data["status_code"] = s.into();
                }
                assert!(failed(data.clone(), text).is_none(), "{status:?}: {text}");
                // Codes are matched whole: one inside a sentence is text.
                data["error"] = text.into();
                if !REVOKED_CODES.contains(&text) {
                    assert!(failed(data, text).is_none(), "{status:?}: {text}");
                }
            }
        }
        // Nor through MCP, as structured content or as JSON text.
        let answer = json!({"data": {"message": texts[0]}, "error": texts[0], "successful": false});
        let result = json!({"content": [{"type": "text", "text": answer.to_string()}],
            "structuredContent": answer, "isError": false});
        assert_eq!(dead_in_tool_result(&result), None);
    }

    #[test]
    fn the_byte_filter_lets_every_dead_shape_through() {
        // Spacing, case and escapes Composio (or a proxy in between) might use.
        for body in [
            r#"{"successful" : false, "data": {"status_code": 401}, "error": "x"}"#,
            "{\"successful\":\n\tfalse,\"data\":{\"status_code\":401}}",
            r#"{"error": {"code": 1803}}"#,
            r#"{"error": {"code": 1, "slug": "CONNECTEDACCOUNT_EXPIRED"}}"#,
            r#"{"error": {"code": 1, "slug": "\u0043onnectedAccountRevoked"}}"#,
            r#"{"succe\u0073sful": false, "data": {"status_code": 401}}"#,
            r#"{"successful": false, "data": {"ok": false, "error": "invalid_auth"}}"#,
        ] {
            assert!(might_be_dead(body.as_bytes()), "{body}");
            assert!(
                dead_connection(StatusCode::OK, body.as_bytes()).is_some()
                    || dead_connection(StatusCode::BAD_REQUEST, body.as_bytes()).is_some(),
                "{body}"
            );
        }
        // A plain success is never parsed.
        let ok = br#"{"data":{"id":1,"draft":false},"error":null,"successful":true}"#;
        assert!(!might_be_dead(ok));
    }

    /// Answers shaped as Composio's: a tool result or an error object, with the values that
    /// matter drawn often and noise around them.
    fn arb_answer() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let text = prop_oneof![
            Just("401 Client Error: Unauthorized".to_owned()),
            Just("Token has been expired or revoked.".to_owned()),
            Just("Not Found".to_owned()),
            "[a-zA-Z0-9 ]{0,16}",
        ];
        let slug = (
            prop_oneof![
                Just("ConnectedAccount_Expired"),
                Just("ActionExecute_ConnectedAccountNotFound"),
                Just("ConnectedAccountRevoked"),
                Just("ActionExecute_ConnectedAccountEntityIdMismatch"),
                Just("Validation_Failed"),
            ],
            proptest::collection::vec(any::<bool>(), 48),
        )
            .prop_map(|(s, upper)| {
                s.chars()
                    .zip(upper)
                    .map(|(c, u)| {
                        if u {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    })
                    .collect::<String>()
            });
        let status = prop_oneof![Just(401u64), Just(403), Just(404), Just(200)];
        let code = (
            prop_oneof![Just("error"), Just("error_code"), Just("code")],
            prop_oneof![
                Just("token_revoked"),
                Just("INVALID_GRANT"),
                Just("account_inactive"),
                Just("channel_not_found"),
            ],
        );
        let data = (
            prop_oneof![Just("status_code"), Just("status"), Just("http_status")],
            proptest::option::of(status),
            proptest::option::of(text.clone()),
            proptest::option::of(code),
        )
            .prop_map(|(k, st, msg, code)| {
                let mut d = serde_json::Map::new();
                if let Some(st) = st {
                    d.insert(k.into(), st.into());
                }
                if let Some(m) = msg {
                    d.insert("message".into(), m.into());
                }
                if let Some((k, c)) = code {
                    d.insert(k.into(), c.into());
                }
                Value::Object(d)
            });
        let error = prop_oneof![
            Just(Value::Null),
            text.clone().prop_map(Value::String),
            (
                prop_oneof![Just(1803u64), Just(1), Just(10400)],
                proptest::option::of(slug)
            )
                .prop_map(|(code, slug)| json!({"code": code, "slug": slug, "message": "x"})),
        ];
        (
            proptest::option::of(any::<bool>()),
            data,
            error,
            "[a-z]{0,6}",
        )
            .prop_map(|(successful, data, error, noise)| {
                let mut m = serde_json::Map::new();
                m.insert(noise, json!([1, false, "x"]));
                m.insert("data".into(), data);
                m.insert("error".into(), error);
                if let Some(b) = successful {
                    m.insert("successful".into(), b.into());
                }
                Value::Object(m)
            })
    }

    proptest::proptest! {
        /// The filter never hides a dead connection: whatever `dead_connection` would find in
        /// the parsed answer, the bytes let through (compact or pretty-printed).
        #[test]
        fn the_byte_filter_never_hides_a_dead_connection(
            v in arb_answer(),
            status in proptest::prop_oneof![proptest::strategy::Just(200u16), proptest::strategy::Just(400u16), proptest::strategy::Just(403u16)],
        ) {
            let status = StatusCode::from_u16(status).expect("status");
            for body in [serde_json::to_vec(&v).expect("json"), serde_json::to_vec_pretty(&v).expect("json")] {
                let found = dead_in_answer(status, &v);
                proptest::prop_assert!(found.is_none() || might_be_dead(&body));
            }
        }
    }
}

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
