//! The notification to the app: one signed POST per user, retried with exponential backoff.
//!
//! Body (`application/json`):
//! `{"type":"entitygate.connections.attention","id":"evt_..","user_id":"..","toolkits":[
//! {"toolkit","connected_account_id","status","status_reason","since"}],"sent_at":<unix secs>}`.
//!
//! Headers: `x-entitygate-timestamp: <unix secs>` and
//! `x-entitygate-signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`; a retry is
//! signed again with a fresh timestamp, over the same body (same `id`). The receiver
//! recomputes the HMAC over the raw body, compares in constant time and refuses timestamps
//! older than a few minutes (see `examples/webhook_receiver.rs`).

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use sha2::Sha256;

use super::{Backoff, Finding};
use crate::upstream::HttpClient;

/// `type` of the notification event.
pub const EVENT_TYPE: &str = "entitygate.connections.attention";
/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-entitygate-signature";
/// Header carrying the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "x-entitygate-timestamp";

/// One affected connection in a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventToolkit {
    /// Toolkit slug.
    pub toolkit: String,
    /// The connected account.
    pub connected_account_id: String,
    /// Its status (`EXPIRED`, ..., or `DISABLED`).
    pub status: String,
    /// Composio's reason, when it gave one.
    pub status_reason: Option<String>,
    /// When the status was last changed, as Composio reported it.
    pub since: Option<String>,
}

/// One notification: a user and the connections that need their attention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Always [`EVENT_TYPE`].
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Unique per event, stable across retries: receivers may deduplicate on it.
    pub id: String,
    /// The app's user id (the JWT subject).
    pub user_id: String,
    /// The affected connections.
    pub toolkits: Vec<EventToolkit>,
    /// Unix seconds when the event was built.
    pub sent_at: u64,
}

impl Event {
    /// The event for `user_id` about `findings` (all theirs).
    pub fn new(user_id: &str, findings: &[&Finding], now: u64) -> Self {
        Self {
            kind: EVENT_TYPE,
            id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
            user_id: user_id.to_owned(),
            toolkits: findings
                .iter()
                .map(|f| EventToolkit {
                    toolkit: f.toolkit.clone(),
                    connected_account_id: f.connected_account_id.clone(),
                    status: f.status.clone(),
                    status_reason: f.status_reason.clone(),
                    since: f.since.clone(),
                })
                .collect(),
            sent_at: now,
        }
    }
}

/// `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + tag.len() * 2);
    out.push_str("v1=");
    for b in tag {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Why a delivery finally failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered a 4xx that retrying will not change.
    #[error("the receiver refused the event with HTTP {0}")]
    Refused(u16),
    /// Every attempt failed.
    #[error("no attempt succeeded ({attempts} attempts; last: {last})")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last: String,
    },
}

/// Sends signed events to the app's webhook.
#[derive(Clone)]
pub struct Notifier {
    client: HttpClient,
    url: Uri,
    secret: Bytes,
    backoff: Backoff,
    timeout: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// What makes two notifiers the same: where they post and how they sign.
    pub(crate) fn fingerprint(&self) -> (&Uri, &Bytes) {
        (&self.url, &self.secret)
    }

    /// A notifier posting to `url`, signing with `secret`.
    pub fn new(
        client: HttpClient,
        url: Uri,
        secret: Bytes,
        backoff: Backoff,
        timeout: Duration,
    ) -> Self {
        Self {
            client,
            url,
            secret,
            backoff,
            timeout,
        }
    }

    /// Delivers `event`, retrying transport failures, timeouts, 408, 429 and 5xx with
    /// exponential backoff. Returns the number of attempts made.
    ///
    /// # Errors
    /// [`DeliveryError`] when the receiver refuses for good or every attempt failed.
    pub async fn deliver(&self, event: &Event) -> Result<u32, DeliveryError> {
        let body =
            Bytes::from(
                serde_json::to_vec(event).map_err(|e| DeliveryError::Exhausted {
                    attempts: 0,
                    last: e.to_string(),
                })?,
            );
        self.deliver_body(body, &event.user_id).await
    }

    /// Delivers a JSON `body` (another event type, such as an approval request), signed and
    /// retried as [`Notifier::deliver`]; `about` names its user in logs.
    ///
    /// # Errors
    /// As [`Notifier::deliver`].
    pub(crate) async fn deliver_body(
        &self,
        body: Bytes,
        about: &str,
    ) -> Result<u32, DeliveryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = match self.attempt(&body).await {
                Ok(status) if status.is_success() => return Ok(attempt),
                Ok(status)
                    if status.is_client_error()
                        && status != http::StatusCode::REQUEST_TIMEOUT
                        && status != http::StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(DeliveryError::Refused(status.as_u16()))
                }
                Ok(status) => format!("HTTP {}", status.as_u16()),
                Err(e) => e,
            };
            if attempt >= self.backoff.max_attempts {
                return Err(DeliveryError::Exhausted {
                    attempts: attempt,
                    last,
                });
            }
            tracing::debug!(user_id = %about, attempt, %last, "webhook delivery failed; retrying");
            tokio::time::sleep(self.backoff.delay(attempt)).await;
        }
    }

    async fn attempt(&self, body: &Bytes) -> Result<http::StatusCode, String> {
        let ts = super::unix_now();
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("entitygate/", env!("CARGO_PKG_VERSION")),
            )
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(&self.secret, ts, body))
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Drain (bounded by the timeout) so the connection can be reused.
            let _ = resp.into_body().collect().await;
            Ok(status)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| "timed out".to_owned())?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_over_timestamp_and_body() {
        // Reference value: printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac secret
        let sig = sign(b"secret", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            sig,
            "v1=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
        assert_ne!(sig, sign(b"secret", 1_700_000_001, br#"{"a":1}"#));
        assert_ne!(sig, sign(b"other", 1_700_000_000, br#"{"a":1}"#));
    }
}
