//! The kill switch's admin API (`[admin]` token required, checked by the router):
//! - `POST /deny` with one of `{"subject"}`, `{"toolkit"}`, `{"tool": GLOB}`, `{"jti"}`,
//!   `{"all": true}`, plus `"reason"` and optional `"expires_in_secs"`: `201 {"id", "rule"}`;
//! - `GET /deny`: `{"rules": [...]}` (the rules that apply now);
//! - `DELETE /deny/{id}`: `{"removed": rule}`, or 404.
//!
//! Every change is an audit event (`deny_added`, `deny_removed`) in the hash-chained trail.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use serde_json::json;

use super::json_response;
use crate::control::Control;
use crate::killswitch::Rule;

/// Largest `POST /deny` body read.
const MAX_BODY: usize = 16 * 1024;

/// Answers a `/deny` request, or `None` when the path is not one of them.
pub(super) async fn handle(
    control: &dyn Control,
    req: Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let path = req.uri().path();
    let id = match path.strip_prefix("/deny") {
        Some("") => None,
        Some(rest) => Some(rest.strip_prefix('/')?.to_owned()),
        None => return None,
    };
    let shared = control.rules().load_full();
    let ks = &shared.kill_switch;
    Some(match (req.method().clone(), id) {
        (Method::GET, None) => json_response(
            StatusCode::OK,
            &json!({"rules": crate::killswitch::to_json(&ks.rules())}),
        ),
        (Method::POST, None) => {
            let bad = |why: &str| json_response(StatusCode::BAD_REQUEST, &json!({"error": why}));
            let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
            else {
                return Some(bad("unreadable or too large body"));
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
                return Some(bad("the body must be a JSON object"));
            };
            let rule = match Rule::from_request(&v, crate::clock::unix_now()) {
                Ok(r) => r,
                Err(why) => return Some(bad(&why)),
            };
            match ks.add(rule.clone()).await {
                Ok(()) => {
                    tracing::warn!(id = %rule.id, rule = %rule.describe(), reason = %rule.reason,
                        "kill switch: deny rule added");
                    shared.audit.record("deny_added", rule.audit_fields());
                    json_response(StatusCode::CREATED, &json!({"id": rule.id, "rule": rule}))
                }
                Err(e) => {
                    tracing::error!(error = %e, "kill switch: deny rule not stored");
                    json_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &json!({"error": e.to_string()}),
                    )
                }
            }
        }
        (Method::DELETE, Some(id)) => match ks.remove(&id).await {
            Ok(Some(rule)) => {
                tracing::warn!(id = %rule.id, rule = %rule.describe(), "kill switch: deny rule lifted");
                shared.audit.record("deny_removed", rule.audit_fields());
                json_response(StatusCode::OK, &json!({"removed": rule}))
            }
            Ok(None) => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "no such deny rule (or it expired)"}),
            ),
            Err(e) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": e.to_string()}),
            ),
        },
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "GET /deny, POST /deny, DELETE /deny/{id}"}),
        ),
    })
}
