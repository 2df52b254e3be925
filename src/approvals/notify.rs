//! The signed notification of each new approval request (`[approvals] notify_url`).
//!
//! One POST per request, signed and retried exactly like the audit job's notification
//! ([`crate::expiry::notify`]: `x-entitygate-timestamp`, `x-entitygate-signature: v1=<hex
//! HMAC-SHA256(secret, "<timestamp>.<body>")>`). The body:
//! `{"type":"entitygate.approval.requested","id","approval_id","subject","tool","toolkit",
//! "connected_account_id","rule","message","args_sha256","expires_at","url","text"}` — `text`
//! is a one-line summary, so the URL can be a Slack incoming webhook as it is. The arguments
//! are not sent (the approver reads them in the console).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::Request;
use crate::config::{ApprovalsConfig, ConfigError, Env};
use crate::expiry::notify::Notifier as Signed;
use crate::expiry::Backoff;
use crate::upstream::HttpClient;

/// `type` of the notification.
pub const EVENT_TYPE: &str = "entitygate.approval.requested";

/// Posts new requests to `notify_url`.
#[derive(Debug)]
pub(crate) struct Notifier {
    signed: Arc<Signed>,
}

impl Notifier {
    /// From `[approvals]`; `None` without `notify_url`.
    ///
    /// # Errors
    /// A URL that does not parse, a secret variable that is unset or empty.
    pub(crate) fn from_config(
        cfg: &ApprovalsConfig,
        env: &dyn Env,
        client: HttpClient,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(url) = &cfg.notify_url else {
            return Ok(None);
        };
        let uri = url
            .parse()
            .map_err(|e| ConfigError::invalid("approvals.notify_url", format!("{e}")))?;
        let var = cfg.notify_secret_env.as_deref().unwrap_or_default();
        let secret =
            env.var(var)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| ConfigError::MissingEnv {
                    key: "approvals.notify_secret_env".into(),
                    var: var.to_owned(),
                })?;
        let backoff = Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
            max_attempts: 5,
        };
        Ok(Some(Self {
            signed: Arc::new(Signed::new(
                client,
                uri,
                Bytes::from(secret.into_bytes()),
                backoff,
                Duration::from_secs(10),
            )),
        }))
    }

    /// The body for `request`, followed at `url`.
    pub(crate) fn body(request: &Request, url: &str) -> serde_json::Value {
        let account = request
            .account
            .as_deref()
            .map(|a| format!(" with account {a}"))
            .unwrap_or_default();
        json!({
            "type": EVENT_TYPE,
            "id": format!("evt_{}", request.id),
            "approval_id": request.id,
            "subject": request.subject,
            "tool": request.tool,
            "toolkit": request.toolkit,
            "connected_account_id": request.account,
            "rule": request.rule,
            "message": request.message,
            "args_sha256": request.args_sha256,
            "expires_at": request.expires_at,
            "url": url,
            "text": format!(
                "Approval needed ({}): {} wants to run {}{account}. {} Review: {url}",
                request.rule, request.subject, request.tool, request.message
            ),
        })
    }

    /// Delivers the notification of `request` in the background (the call that asked is
    /// answered at once; a failed delivery is logged, the request stays in the console).
    pub(crate) fn spawn(&self, request: &Request, url: &str) {
        let body = Bytes::from(Self::body(request, url).to_string());
        let signed = self.signed.clone();
        let id = request.id.clone();
        tokio::spawn(async move {
            if let Err(e) = signed.deliver_body(body, &id).await {
                tracing::warn!(approval_id = %id, error = %e, "approval notification not delivered");
            }
        });
    }
}
