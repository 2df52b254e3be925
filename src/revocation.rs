//! Revocation on the response path: Composio's answer to an execution can show that the
//! user's connection is dead even when its status still says `ACTIVE` (the token was revoked
//! at the provider). The gateway then
//! 1. forgets what it cached about the connection,
//! 2. marks the (subject, toolkit) pair broken, so the user's next call gets the "please
//!    reconnect" refusal before Composio is asked anything,
//! 3. writes a `connection_broken` audit event, and
//! 4. hands the account to the expiry notifier ([`crate::expiry`]): the same signed webhook
//!    the audit job sends, deduplicated with it by (user, account).
//!
//! What counts as dead ([`dead_connection`]): Composio's connected-account errors (code 1803,
//! "no usable connected account", and the `ConnectedAccount*` slugs for not found, expired,
//! revoked, inactive or disabled accounts, whatever the status), and a failed tool result
//! whose provider status is 401, or 403 with a revoked/expired-token message (a bare 403 is a
//! permission on one resource, not a dead connection).
//!
//! A mark lasts until the subject changes a connection through the gateway (creates,
//! refreshes, deletes one) or `HOLD` passes, so that a reconnection made elsewhere is
//! picked up by a fresh status lookup.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use crate::connections::{Account, ToolInfo};
use crate::error::Error;
use crate::proxy::Shared;

/// How long a broken mark refuses without asking Composio.
pub const HOLD: Duration = Duration::from_secs(15 * 60);
/// Largest execution answer inspected (larger ones are relayed without a look).
const MAX_INSPECTED: u64 = 1024 * 1024;

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

    fn mark(&self, subject: &Arc<str>, toolkit: &str, account: &str) {
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
    // A failed tool result: the provider's status, where Composio reports it.
    let data = v.get("data").unwrap_or(&Value::Null);
    let provider = ["status_code", "status", "http_status"]
        .iter()
        .find_map(|k| data.get(*k).and_then(Value::as_u64));
    let text = format!(
        "{} {}",
        v.get("error").and_then(Value::as_str).unwrap_or(""),
        data.get("message").and_then(Value::as_str).unwrap_or("")
    )
    .to_ascii_lowercase();
    let revoked_words = ["revoked", "invalid_grant", "expired", "invalid token"]
        .iter()
        .any(|w| text.contains(w));
    match provider {
        Some(401) => Some(("REVOKED", "provider: 401 unauthorized")),
        Some(403) if revoked_words => Some(("REVOKED", "provider: 403, token revoked")),
        None if text.contains("401") && text.contains("unauthorized") => {
            Some(("REVOKED", "provider: 401 unauthorized"))
        }
        _ => None,
    }
}

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

/// Relays an execution's answer after a look at it (when small enough to read whole): a dead
/// connection on one of the `decided` (toolkit, account) pairs is acted on (module docs).
/// The answer itself is relayed unchanged: this call already failed; the next one is refused.
pub(crate) async fn relay_execution(
    ctx: &crate::proxy::Ctx<'_>,
    resp: Response<Incoming>,
    decided: &[(String, Option<String>)],
) -> Result<Response<crate::body::ResponseBody>, Error> {
    let small = http_body::Body::size_hint(resp.body())
        .exact()
        .is_some_and(|n| n <= MAX_INSPECTED);
    // One toolkit only: an answer about a multi-toolkit call does not say whose it is.
    let [(toolkit, account)] = decided else {
        return ctx.relay(resp);
    };
    if !small {
        return ctx.relay(resp);
    }
    let (parts, body) = resp.into_parts();
    let bytes = body
        .collect()
        .await
        .map_err(|_| Error::UpstreamUnavailable)?
        .to_bytes();
    if let Some(dead) = dead_connection(parts.status, &bytes) {
        broken(
            ctx.shared,
            &ctx.identity.subject,
            toolkit,
            account.as_deref(),
            dead,
        );
    }
    let resp = Response::from_parts(parts, Full::new(bytes));
    ctx.relay_body(resp)
}

/// Acts on a dead connection (module docs, steps 1 to 4).
pub(crate) fn broken(
    shared: &Shared,
    subject: &Arc<str>,
    toolkit: &str,
    account: Option<&str>,
    (status, reason): (&'static str, &'static str),
) {
    let account = account.map_or_else(|| format!("(any {toolkit} account)"), str::to_owned);
    shared.connections.invalidate(subject, toolkit);
    shared.broken.mark(subject, toolkit, &account);
    crate::metrics::connection_broken();
    tracing::warn!(subject = %subject, toolkit, account, reason,
        "Composio's answer shows a dead connection; the user must reconnect");
    shared.audit.record(
        "connection_broken",
        json!({"subject": &**subject, "toolkit": toolkit,
            "connected_account_id": account, "status": status, "reason": reason}),
    );
    if let Some(job) = shared.expiry.clone() {
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

    #[test]
    fn provider_401_and_revoked_403_tool_results_are_dead_connections() {
        let failed = |data: Value, error: &str| {
            dead(
                200,
                json!({"data": data, "error": error, "successful": false}),
            )
        };
        assert!(failed(json!({"status_code": 401}), "Unauthorized").is_some());
        assert!(failed(json!({}), "401 Client Error: Unauthorized for url").is_some());
        assert!(failed(
            json!({"status_code": 403, "message": "Token has been expired or revoked."}),
            ""
        )
        .is_some());
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
        let data = (
            prop_oneof![Just("status_code"), Just("status"), Just("http_status")],
            proptest::option::of(status),
            proptest::option::of(text.clone()),
        )
            .prop_map(|(k, st, msg)| {
                let mut d = serde_json::Map::new();
                if let Some(st) = st {
                    d.insert(k.into(), st.into());
                }
                if let Some(m) = msg {
                    d.insert("message".into(), m.into());
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
