//! The approvals admin API (a token required, checked by the router):
//! - `GET /approvals` (`?status=pending|approved|denied|used|expired`): `{"approvals": [...]}`,
//!   newest first, each with its arguments (approvers must see what they approve);
//! - `GET /approvals/{id}`: one request;
//! - `POST /approvals/{id}/approve` with `{"reason": ...}` (optional): a single-use grant for
//!   the exact call, valid `grant_ttl_secs`;
//! - `POST /approvals/{id}/deny` with `{"reason": ...}` (required).
//!
//! Deciding needs a named operator's token (`[[admin.operators]]`): the shared `[admin]`
//! token is refused with 403, and so is an operator deciding a request whose subject is their
//! own (separation of duties). Deciding never forwards anything. Each decision is an audit
//! event (`approval_granted`, `approval_denied`) naming the approver.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, Actor};
use crate::approvals::{self, DecideError, Status, Verdict};
use crate::control::Control;

/// Largest decision body read.
const MAX_BODY: usize = 16 * 1024;

/// Answers an `/approvals` request, or `None` when the path is not one of them.
pub(super) async fn handle(
    control: &dyn Control,
    actor: &Actor,
    req: Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path().to_owned();
    let rest = path.strip_prefix("/approvals")?;
    let parts: Vec<&str> = rest.split('/').skip(1).collect();
    let error = |status: StatusCode, why: &str| json_response(status, &json!({"error": why}));
    let shared = control.rules().load_full();
    let store = &shared.approvals;
    Some(match (req.method().clone(), parts.as_slice()) {
        (Method::GET, []) => {
            let wanted = req
                .uri()
                .query()
                .and_then(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "status")
                        .map(|(_, v)| v.into_owned())
                });
            if wanted.as_deref().is_some_and(|w| !known_status(w)) {
                return Some(error(
                    StatusCode::BAD_REQUEST,
                    "`status` is one of pending, approved, denied, used, expired",
                ));
            }
            match store.list().await {
                Ok(mut all) => {
                    if let Some(w) = wanted {
                        all.retain(|r| r.status.as_str() == w);
                    }
                    json_response(StatusCode::OK, &json!({"approvals": approvals::to_json(&all)}))
                }
                Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        (Method::GET, [id]) => match store.get(id).await {
            Ok(Some(r)) => json_response(StatusCode::OK, &json!({"approval": r})),
            Ok(None) => error(StatusCode::NOT_FOUND, "no such approval request"),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        },
        (Method::POST, [id, action @ ("approve" | "deny")]) => {
            let verdict = if *action == "approve" {
                Verdict::Approve
            } else {
                Verdict::Deny
            };
            let id = (*id).to_owned();
            let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            else {
                return Some(error(StatusCode::BAD_REQUEST, "unreadable or too large body"));
            };
            let bytes = body.to_bytes();
            let v = if bytes.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                match serde_json::from_slice::<Value>(&bytes) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => return Some(error(StatusCode::BAD_REQUEST, "the body must be a JSON object")),
                }
            };
            let reason = match &v["reason"] {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                _ => return Some(error(StatusCode::BAD_REQUEST, "`reason` must be a string")),
            };
            match decide(control, actor, &id, verdict, &reason).await {
                Ok(r) => json_response(StatusCode::OK, &json!({"approval": r})),
                Err((status, why)) => error(status, &why),
            }
        }
        _ => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET /approvals, GET /approvals/{id}, POST /approvals/{id}/approve, POST /approvals/{id}/deny",
        ),
    })
}

/// One decision, as the API and the console take it: only a named operator, never on their
/// own subject's call, audited with their name. The error is the status and message to show.
pub(crate) async fn decide(
    control: &dyn Control,
    actor: &Actor,
    id: &str,
    verdict: Verdict,
    reason: &str,
) -> Result<approvals::Request, (StatusCode, String)> {
    let Actor::Operator { name, subject } = actor else {
        return Err((
            StatusCode::FORBIDDEN,
            "deciding an approval needs a named operator's token ([[admin.operators]]); the shared admin token cannot approve or deny".into(),
        ));
    };
    let reason = approvals::check_reason(reason, verdict == Verdict::Deny)
        .map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    let shared = control.rules().load_full();
    let store = &shared.approvals;
    let unavailable = |e: &dyn std::fmt::Display| (StatusCode::SERVICE_UNAVAILABLE, e.to_string());
    let request = match store.get(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err((StatusCode::NOT_FOUND, "no such approval request".into())),
        Err(e) => return Err(unavailable(&e)),
    };
    if let Some(own) = subject {
        let prefix = &control.applied().auth.subject_prefix;
        if approvals::same_person(own, &request.subject, prefix) {
            tracing::warn!(operator = %name, approval_id = %id,
                "an operator tried to decide their own call's approval; refused");
            return Err((
                StatusCode::FORBIDDEN,
                "separation of duties: this request is your own call; another operator must decide it".into(),
            ));
        }
    }
    match store
        .decide(id, verdict, name, &reason, &shared.approval_rules.settings)
        .await
    {
        Ok(r) => {
            let event = match verdict {
                Verdict::Approve => "approval_granted",
                Verdict::Deny => "approval_denied",
            };
            tracing::warn!(approval_id = %id, operator = %name, event, "approval decided");
            approvals::record(&shared.audit, event, &r);
            Ok(r)
        }
        Err(DecideError::NotFound) => {
            Err((StatusCode::NOT_FOUND, "no such approval request".into()))
        }
        Err(e @ (DecideError::NotPending(_) | DecideError::Expired)) => {
            Err((StatusCode::BAD_REQUEST, e.to_string()))
        }
        Err(DecideError::Store(e)) => Err(unavailable(&e)),
    }
}

/// Whether `status` names a request state (for filters).
fn known_status(status: &str) -> bool {
    [
        Status::Pending,
        Status::Approved,
        Status::Denied,
        Status::Used,
        Status::Expired,
    ]
    .iter()
    .any(|s| s.as_str() == status)
}
