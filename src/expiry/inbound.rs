//! Composio's `composio.connected_account.expired` webhook, received on the proxy listener at
//! `[audit_job] composio_webhook_path` (no JWT: Composio signs it instead).
//!
//! Verification (Standard Webhooks, as Composio's SDK checks it): headers `webhook-id`,
//! `webhook-timestamp` (unix seconds, within the tolerance either way) and
//! `webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{raw body}")>`, several
//! space-separated entries allowed, compared in constant time. The secret is used verbatim as
//! UTF-8 bytes (no `whsec_` decoding). A `webhook-id` is acted on once (the ids are kept in the
//! state store, so a replay after a restart is refused too); a repeat is acknowledged with 200
//! so that Composio stops retrying, and does nothing.
//!
//! Bounded before it is authenticated: the path takes none of the proxy's in-flight slots but
//! a small pool of its own (`composio_webhook_max_in_flight`, else 503 and Composio retries);
//! the headers and the timestamp are checked before a byte of body is read; the body is read
//! under a deadline (`composio_webhook_read_timeout_secs`, else 408) and a cap
//! (`composio_webhook_max_body_bytes`, else 413). Every refusal is audited as itself.
//!
//! Acting on an expiry: the gateway drops its cached answer for (user, toolkit) at once, so
//! the next execution is gated on Composio's fresh answer, and the app is notified as by the
//! scan (same event, same dedup window) in the background.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{unix_now, Expiry, Finding};
use crate::audit::Audit;
use crate::body::{self, ResponseBody};
use crate::connections::Connections;
use crate::error::Error;

/// The event type acted on.
pub const EXPIRED_EVENT: &str = "composio.connected_account.expired";
/// The route name in decision audit events.
const ROUTE: &str = "composio_webhook";

/// The webhook's refusals: slug, audit code, HTTP status.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Busy,
    SignatureInvalid,
    BodyTimeout,
    BodyTooLarge,
    BodyUnreadable,
    BodyInvalid,
    Duplicate,
    StateUnavailable,
}

impl Refusal {
    fn slug(self) -> &'static str {
        match self {
            Self::Busy => "webhook_busy",
            Self::SignatureInvalid => "webhook_signature_invalid",
            Self::BodyTimeout => "webhook_body_timeout",
            Self::BodyTooLarge => "webhook_body_too_large",
            Self::BodyUnreadable => "webhook_body_unreadable",
            Self::BodyInvalid => "webhook_body_invalid",
            Self::Duplicate => "webhook_duplicate",
            Self::StateUnavailable => "state_unavailable",
        }
    }

    fn code(self) -> u32 {
        match self {
            Self::Busy => 9301,
            Self::SignatureInvalid => 9302,
            Self::BodyTimeout => 9303,
            Self::BodyTooLarge => 9304,
            Self::BodyUnreadable => 9305,
            Self::BodyInvalid => 9306,
            Self::Duplicate => 9307,
            Self::StateUnavailable => 9308,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::Busy | Self::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::SignatureInvalid => StatusCode::UNAUTHORIZED,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyUnreadable | Self::BodyInvalid => StatusCode::BAD_REQUEST,
            // Acknowledged so that Composio stops retrying; nothing is done.
            Self::Duplicate => StatusCode::OK,
        }
    }

    /// Records the refusal and answers it.
    fn answer(self, audit: &mut Audit, message: &str) -> Response<ResponseBody> {
        audit.refuse_as(self.slug(), self.code());
        let status = self.status();
        reply(
            status,
            &json!({"error": {"message": message, "slug": self.slug(), "status": status.as_u16()}}),
        )
    }
}

/// Why a delivery's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A required header is absent or not text.
    #[error("missing or unreadable `{0}` header")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a number of seconds.
    #[error("`webhook-timestamp` is not a unix time")]
    BadTimestamp,
    /// `webhook-timestamp` is outside the tolerance.
    #[error("`webhook-timestamp` is too far from now")]
    Stale,
    /// No `v1,` entry matches.
    #[error("no valid signature")]
    BadSignature,
}

/// What can be checked before the body is read: the three headers, the timestamp's window,
/// and at least one `v1,` entry of the right length. Returns (id, timestamp, signatures).
///
/// # Errors
/// [`VerifyError`].
pub fn precheck(
    headers: &HeaderMap,
    now: u64,
    tolerance_secs: u64,
) -> Result<(&str, &str, &str), VerifyError> {
    let text = |name: &'static str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(VerifyError::MissingHeader(name))
    };
    let id = text("webhook-id")?;
    let ts_text = text("webhook-timestamp")?;
    let signatures = text("webhook-signature")?;
    let ts: u64 = ts_text.parse().map_err(|_| VerifyError::BadTimestamp)?;
    if ts.abs_diff(now) > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    let plausible = signatures.split_ascii_whitespace().any(|entry| {
        entry
            .strip_prefix("v1,")
            .and_then(|b64| STANDARD.decode(b64).ok())
            .is_some_and(|tag| tag.len() == 32)
    });
    if !plausible {
        return Err(VerifyError::BadSignature);
    }
    Ok((id, ts_text, signatures))
}

/// Verifies a Standard-Webhooks delivery and returns its `webhook-id`.
///
/// # Errors
/// [`VerifyError`].
pub fn verify(
    secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
    tolerance_secs: u64,
) -> Result<String, VerifyError> {
    let (id, ts_text, signatures) = precheck(headers, now, tolerance_secs)?;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts_text.as_bytes());
    mac.update(b".");
    mac.update(body);
    for entry in signatures.split_ascii_whitespace() {
        let Some(b64) = entry.strip_prefix("v1,") else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        // verify_slice compares in constant time.
        if mac.clone().verify_slice(&tag).is_ok() {
            return Ok(id.to_owned());
        }
    }
    Err(VerifyError::BadSignature)
}

/// `v1,<base64>` for a delivery (tests, tooling).
pub fn sign(secret: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn reply(status: StatusCode, body: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(body::full(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A connected account id safe to put in a path.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl Expiry {
    /// Whether a request is a Composio webhook delivery for this job.
    pub(crate) fn accepts(&self, method: &Method, path: &str) -> bool {
        self.composio_secret.is_some()
            && method == Method::POST
            && path == self.cfg.composio_webhook_path
    }

    /// Handles one Composio webhook delivery (see the module documentation).
    ///
    /// # Errors
    /// [`Error::UpstreamUnavailable`] when the account could not be looked up (Composio
    /// retries); every other refusal is answered directly and audited as itself.
    pub(crate) async fn receive(
        self: &Arc<Self>,
        cache: &Connections,
        req: Request<crate::body::RequestBody>,
        audit: &mut Audit,
    ) -> Result<Response<ResponseBody>, Error> {
        audit.route(ROUTE, ROUTE);
        let Some(secret) = &self.composio_secret else {
            return Err(Error::RouteNotAllowed);
        };
        // A pool of its own: never one of the proxy's slots, never more than a few at once.
        let Ok(_slot) = self.inbound.clone().try_acquire_owned() else {
            return Ok(Refusal::Busy.answer(audit, "too many deliveries at once; retry"));
        };
        let (parts, body) = req.into_parts();
        let now = unix_now();
        let tolerance = self.cfg.composio_webhook_tolerance_secs;
        // Nothing of the body is read for a delivery that cannot be genuine.
        if let Err(e) = precheck(&parts.headers, now, tolerance) {
            tracing::warn!(error = %e, "Composio webhook refused");
            return Ok(Refusal::SignatureInvalid.answer(audit, &e.to_string()));
        }
        let deadline = std::time::Duration::from_secs(self.cfg.composio_webhook_read_timeout_secs);
        let limit = self.cfg.composio_webhook_max_body_bytes;
        let raw =
            match tokio::time::timeout(deadline, body::read_limited(&parts.headers, body, limit))
                .await
            {
                Ok(Ok(raw)) => raw,
                Ok(Err(Error::PayloadTooLarge)) => {
                    return Ok(Refusal::BodyTooLarge.answer(audit, "the body is too large"));
                }
                Ok(Err(_)) => {
                    return Ok(Refusal::BodyUnreadable.answer(audit, "the body could not be read"));
                }
                Err(_) => {
                    return Ok(
                        Refusal::BodyTimeout.answer(audit, "the body did not arrive in time")
                    );
                }
            };
        let id = match verify(secret, &parts.headers, &raw, now, tolerance) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "Composio webhook refused");
                return Ok(Refusal::SignatureInvalid.answer(audit, &e.to_string()));
            }
        };
        let Ok(event) = serde_json::from_slice::<Value>(&raw) else {
            return Ok(Refusal::BodyInvalid.answer(audit, "the body is not JSON"));
        };
        let store = match self.dedup().await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "state store unavailable; Composio webhook deferred");
                return Ok(Refusal::StateUnavailable.answer(audit, "try again later"));
            }
        };
        let keep = tolerance.saturating_mul(2);
        let id_for_store = id.clone();
        match store.first_delivery(id_for_store, now, keep).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(webhook_id = %id, "Composio webhook replayed; ignored");
                audit.refuse_as(Refusal::Duplicate.slug(), Refusal::Duplicate.code());
                return Ok(reply(
                    StatusCode::OK,
                    &json!({"status": "duplicate", "id": id}),
                ));
            }
            Err(e) => {
                tracing::error!(error = %e, "state store unwritable; Composio webhook deferred");
                return Ok(Refusal::StateUnavailable.answer(audit, "try again later"));
            }
        }
        if event.get("type").and_then(Value::as_str) != Some(EXPIRED_EVENT) {
            return Ok(reply(
                StatusCode::OK,
                &json!({"status": "ignored", "id": id}),
            ));
        }
        let finding = match self.finding_from(&event).await {
            Ok(Some(f)) => f,
            Ok(None) => {
                tracing::warn!(webhook_id = %id,
                    "Composio expiry event names no user or toolkit; acknowledged, not acted on");
                return Ok(reply(
                    StatusCode::OK,
                    &json!({"status": "unattributed", "id": id}),
                ));
            }
            Err(e) => {
                // Nothing was done: let Composio's retry through.
                let id_for_store = id.clone();
                let _ = store.forget_delivery(id_for_store).await;
                tracing::warn!(error = %e, "could not look the expired account up; deferred");
                return Err(Error::UpstreamUnavailable);
            }
        };
        cache.invalidate(&finding.user_id, &finding.toolkit);
        audit.subject(&finding.user_id);
        audit.toolkit(&finding.toolkit);
        audit.account(&finding.connected_account_id);
        tracing::info!(user_id = %finding.user_id, toolkit = %finding.toolkit,
            connected_account_id = %finding.connected_account_id,
            "Composio reported an expired connection; cache entry dropped");
        let job = self.clone();
        tokio::spawn(async move {
            job.notify(std::slice::from_ref(&finding)).await;
        });
        Ok(reply(
            StatusCode::OK,
            &json!({"status": "accepted", "id": id}),
        ))
    }

    /// The finding an expiry event stands for. `user_id` in the payload is deprecated; when it
    /// (or the toolkit) is absent, the account is looked up by id.
    async fn finding_from(&self, event: &Value) -> Result<Option<Finding>, Error> {
        let data = event.get("data").cloned().unwrap_or(Value::Null);
        let s = |v: &Value, k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let Some(id) = s(&data, "id") else {
            return Ok(None);
        };
        let toolkit_of = |v: &Value| {
            v.pointer("/toolkit/slug")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_ascii_lowercase)
        };
        let mut user_id = s(&data, "user_id");
        let mut toolkit = toolkit_of(&data);
        if (user_id.is_none() || toolkit.is_none()) && plain_id(&id) {
            let (status, found) = self
                .upstream
                .get_json(&format!("/api/v3.1/connected_accounts/{id}"))
                .await?;
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                return Err(Error::UpstreamUnavailable);
            }
            if status.is_success() {
                user_id = user_id.or_else(|| s(&found, "user_id"));
                toolkit = toolkit.or_else(|| toolkit_of(&found));
            }
        }
        let (Some(user_id), Some(toolkit)) = (user_id, toolkit) else {
            return Ok(None);
        };
        Ok(Some(Finding {
            user_id,
            toolkit,
            connected_account_id: id,
            status: s(&data, "status")
                .map_or_else(|| "EXPIRED".to_owned(), |v| v.to_ascii_uppercase()),
            status_reason: s(&data, "status_reason"),
            since: s(&data, "updated_at").or_else(|| s(event, "timestamp")),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: u64, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.to_string().parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    #[test]
    fn known_vector() {
        // printf 'msg_1.1700000000.{"a":1}' | openssl dgst -sha256 -hmac whsec_test -binary | base64
        assert_eq!(
            sign(b"whsec_test", "msg_1", 1_700_000_000, br#"{"a":1}"#),
            "v1,z2zINen5ED0gAUiSqXmJZHfmpRBAjgAkmsV4m2INV1A="
        );
    }

    #[test]
    fn verify_accepts_any_listed_signature_and_refuses_the_rest() {
        let body = br#"{"type":"x"}"#;
        let good = sign(b"s", "m1", 1000, body);
        let h = headers("m1", 1000, &format!("v1,AAAA {good}"));
        assert_eq!(verify(b"s", &h, body, 1000, 300), Ok("m1".to_owned()));
        assert_eq!(verify(b"s", &h, body, 1300, 300), Ok("m1".to_owned()));
        assert_eq!(verify(b"s", &h, body, 1301, 300), Err(VerifyError::Stale));
        assert_eq!(verify(b"s", &h, body, 699, 300), Err(VerifyError::Stale));
        assert_eq!(
            verify(b"other", &h, body, 1000, 300),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(b"s", &h, br#"{"type":"y"}"#, 1000, 300),
            Err(VerifyError::BadSignature)
        );
        // The id and timestamp are signed.
        let h2 = headers("m2", 1000, &good);
        assert_eq!(
            verify(b"s", &h2, body, 1000, 300),
            Err(VerifyError::BadSignature)
        );
        let h3 = headers("m1", 1001, &good);
        assert_eq!(
            verify(b"s", &h3, body, 1000, 300),
            Err(VerifyError::BadSignature)
        );
        // Other schemes and garbage are ignored, not errors.
        let h4 = headers("m1", 1000, "v1a,xyz v2,abc v1,!!!");
        assert_eq!(
            verify(b"s", &h4, body, 1000, 300),
            Err(VerifyError::BadSignature)
        );
        let mut h5 = headers("m1", 1000, &good);
        h5.remove("webhook-id");
        assert_eq!(
            verify(b"s", &h5, body, 1000, 300),
            Err(VerifyError::MissingHeader("webhook-id"))
        );
        let h6 = headers("m1", 1000, &good);
        let mut h6 = h6;
        h6.insert("webhook-timestamp", "soon".parse().unwrap());
        assert_eq!(
            verify(b"s", &h6, body, 1000, 300),
            Err(VerifyError::BadTimestamp)
        );
    }
}
