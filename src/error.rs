//! Every decision the gateway can refuse with, as one enum.
//!
//! [`Error`] is the table of decisions: each variant has a stable `slug`, a numeric `code`, an
//! HTTP status and a suggested fix, all by exhaustive matches so that adding a variant without
//! deciding its wire form does not compile. Responses use Composio's own envelope
//! `{"error": {"message", "code", "slug", "status", "request_id", "suggested_fix"}}` so that the
//! SDKs surface them like Composio's errors.
//!
//! Codes: Composio's own where one fits (1803 "no usable connected account", 1812 "account does
//! not belong to the user"), otherwise the gateway's range 9100–9199 (documented in README.md).
//! Deterministic refusals never use 408, 409, 429 or 5xx, because the SDKs retry those.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::json;

/// Why a connection gate refused (issue: connection gating).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateRefusal {
    /// Which decision.
    pub kind: GateKind,
    /// The toolkit slug.
    pub toolkit: String,
    /// The best status seen among the subject's accounts for the toolkit (`NONE` if none).
    pub connection_status: String,
    /// The user-facing message, already rendered from the deployment's template.
    pub message: String,
}

/// The kinds of gating refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    /// No connected account for the toolkit.
    NotConnected,
    /// Only expired, failed, revoked or disabled accounts.
    Expired,
    /// Only inactive accounts (may recover).
    Inactive,
    /// Only accounts whose authorisation has not completed.
    Pending,
}

/// A refusal or failure, mapped to one HTTP response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    // --- authentication (401) ---
    /// No token in `x-api-key` or `Authorization: Bearer`.
    #[error("no credential was presented")]
    TokenMissing,
    /// `x-api-key` and `Authorization` carry different tokens.
    #[error("two different credentials were presented")]
    TokenConflict,
    /// Not a well-formed JWT (or an unsupported/`none` algorithm).
    #[error("the token is malformed: {0}")]
    TokenMalformed(&'static str),
    /// The token's `alg` is not the algorithm pinned for its key.
    #[error("the token's algorithm is not allowed for its key")]
    TokenAlgorithmNotAllowed,
    /// No configured key matches the token's `kid`.
    #[error("the token's signing key is unknown")]
    TokenUnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    TokenSignatureInvalid,
    /// `exp` is in the past (beyond leeway).
    #[error("the token has expired")]
    TokenExpired,
    /// `nbf` is in the future (beyond leeway).
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    /// A required claim is absent or of the wrong type.
    #[error("the token lacks a valid `{0}` claim")]
    TokenClaimInvalid(&'static str),
    /// `iss` does not match.
    #[error("the token was issued by an untrusted issuer")]
    TokenIssuerMismatch,
    /// `aud` does not match.
    #[error("the token was not issued for this gateway")]
    TokenAudienceMismatch,
    /// The subject claim is missing, empty, too long, not a string or has control characters.
    #[error("the token's subject is not a valid user id")]
    TokenSubjectInvalid,

    // --- routing and request shape ---
    /// The path is not in canonical form (`//`, `..`, `%2F`, `;`, trailing `/`, ...).
    #[error("the request path is not canonical")]
    PathNotCanonical,
    /// The request target is in absolute form or otherwise unusable.
    #[error("the request target is not allowed")]
    RequestTargetInvalid,
    /// No route of the gateway allows this method and path.
    #[error("this route is not allowed through the gateway")]
    RouteNotAllowed,
    /// The route exists but the deployment's policy switched it off.
    #[error("this operation is disabled by the gateway's policy")]
    OperationDisabled(&'static str),
    /// A method-override header was sent.
    #[error("method override headers are not allowed")]
    MethodOverride,

    // --- body and query ---
    /// Body is not JSON, or not an object at the top.
    #[error("the request body is not a JSON object: {0}")]
    BodyInvalid(String),
    /// A key appears twice in one JSON object.
    #[error("the request body repeats the key `{0}`")]
    DuplicateKey(String),
    /// The body exceeds the configured limit.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// An object of the body has more keys than `[limits] max_json_keys_per_object`.
    #[error("an object in the request body has more than {0} keys")]
    TooManyKeys(usize),
    /// The body nests deeper than `[limits] max_json_depth`.
    #[error("the request body nests deeper than {0} levels")]
    TooDeep(usize),
    /// The client did not send the whole body within `[limits] body_read_timeout_secs`.
    #[error("the request body did not arrive in time")]
    BodyReadTimeout,
    /// Content type is not `application/json`.
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// `Content-Encoding` other than identity.
    #[error("compressed request bodies are not accepted")]
    UnsupportedEncoding,
    /// An identity-bearing query parameter where none is allowed, or repeated.
    #[error("the query parameter `{0}` is not allowed here")]
    QueryNotAllowed(String),
    /// The caller named a user other than the token's subject (reject mode).
    #[error("the request names a different user than the token")]
    IdentityMismatch,
    /// Caller-supplied credentials (`custom_auth_params`, ...).
    #[error("caller-supplied credentials (`{0}`) are not allowed")]
    CustomAuthNotAllowed(String),
    /// Shared-account options.
    #[error("shared connected accounts are not allowed")]
    SharedAccountsNotAllowed,
    /// The tool policy does not let this caller run the tool (or toolkit).
    #[error("the tool `{tool}` is not allowed for this user by the gateway's policy ({rule})")]
    ToolNotAllowed {
        /// The tool slug, toolkit or pseudo-tool refused.
        tool: String,
        /// What decided: `policy.rules[i] ...`, `scope`, `default (deny)`, ...
        rule: String,
    },

    /// The tool's definition is not the one the tool lock holds (changed upstream, flagged by
    /// the scan, or a tool of a locked toolkit the lock does not have).
    #[error("the definition of tool `{tool}` is not the reviewed one in the tool lock (locked {}, seen {})", .locked.as_deref().unwrap_or("none: not in the lock"), .seen.as_deref().unwrap_or("unknown"))]
    ToolDefinitionChanged {
        /// The tool slug.
        tool: String,
        /// The locked definition's SHA-256; `None`: the lock does not have the tool.
        locked: Option<String>,
        /// The seen definition's SHA-256, when known.
        seen: Option<String>,
    },
    /// The caller asked for another version of a locked toolkit than the locked one.
    #[error("tool `{tool}` is locked at version {locked}, not {asked}")]
    ToolVersionNotAllowed {
        /// The tool slug (or toolkit, for `toolkit_versions`).
        tool: String,
        /// The locked version.
        locked: String,
        /// The version asked for.
        asked: String,
    },
    /// A constraint on the tool's arguments (`[[policy.constraints]]`) does not hold for this
    /// call: false, an evaluation error or a cost overrun (fail closed).
    #[error("{message} (constraint `{constraint}`)")]
    ArgumentsNotAllowed {
        /// The constraint's name.
        constraint: String,
        /// The constraint's `message`, for the model and the user.
        message: String,
    },

    /// An operator's deny rule (the kill switch) refuses this request.
    #[error("suspended by the gateway's operators (deny rule {rule}): {reason}")]
    DeniedByKillSwitch {
        /// The rule's id.
        rule: String,
        /// The operator's reason.
        reason: String,
    },

    /// The call waits for a named operator's approval; request `id` was stored.
    #[error("{message} Approval {id} is pending: an operator must approve this exact call (follow it at {follow}); then make the same call again, once.")]
    ApprovalRequired {
        /// The request's id.
        id: String,
        /// The rule's message.
        message: String,
        /// Where approvers follow it (the console).
        follow: String,
    },
    /// An operator denied this exact call.
    #[error("an operator denied this call (approval {id}): {reason}")]
    ApprovalDenied {
        /// The request's id.
        id: String,
        /// The operator's reason.
        reason: String,
    },
    /// The subject already has this many approval requests pending; nothing was stored.
    #[error("too many approval requests pending for this user (at most {0})")]
    ApprovalsPending(usize),

    // --- ownership and gating ---
    /// A connected account that is not the subject's was named.
    #[error("the connected account does not belong to this user")]
    ConnectedAccountNotOwned,
    /// A path-addressed object (account, session, trigger) is not the subject's or does not
    /// exist; 404 either way so that other users' ids cannot be probed.
    #[error("not found")]
    NotFound,
    /// The subject has no usable connection for the toolkit.
    #[error("{}", .0.message)]
    Gate(Box<GateRefusal>),
    /// The tool is not known to Composio.
    #[error("the tool `{0}` does not exist")]
    ToolNotFound(String),

    // --- limits ---
    /// The subject exceeded its request rate; retry after this many seconds.
    #[error("too many requests for this user")]
    RateLimited(u64),
    /// The subject already has `[limits] max_in_flight_per_subject` requests in flight.
    #[error("too many requests in flight for this user")]
    SubjectBusy,
    /// The gateway is at its in-flight cap.
    #[error("the gateway is overloaded")]
    Overloaded,

    // --- faults (fail closed) ---
    /// Connection status could not be determined.
    #[error("the connection status could not be checked")]
    ConnectionStatusUnavailable,
    /// The JWKS could not be loaded, so the token cannot be checked.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
    /// Upstream refused, reset or answered garbage.
    #[error("Composio could not be reached")]
    UpstreamUnavailable,
    /// A browser `Origin` the MCP endpoints do not accept (DNS-rebinding guard).
    #[error("requests from this origin are not allowed")]
    OriginNotAllowed,
    /// Upstream did not answer in time.
    #[error("Composio did not answer in time")]
    UpstreamTimeout,
    /// The system clock is unusable.
    #[error("the gateway's clock is unusable")]
    ClockUnavailable,
    /// The approvals store (Redis with `[shared]`) could not be asked: the call is refused.
    #[error("the approvals store is unavailable")]
    ApprovalsUnavailable,
    /// An internal invariant failed; the request is refused.
    #[error("internal gateway error")]
    Internal,
}

// === impl Error ===

impl Error {
    /// The stable snake_case name of this decision.
    pub fn slug(&self) -> &'static str {
        match self {
            Self::TokenMissing => "token_missing",
            Self::TokenConflict => "token_conflict",
            Self::TokenMalformed(_) => "token_malformed",
            Self::TokenAlgorithmNotAllowed => "token_algorithm_not_allowed",
            Self::TokenUnknownKey => "token_unknown_key",
            Self::TokenSignatureInvalid => "token_signature_invalid",
            Self::TokenExpired => "token_expired",
            Self::TokenNotYetValid => "token_not_yet_valid",
            Self::TokenClaimInvalid(_) => "token_claim_invalid",
            Self::TokenIssuerMismatch => "token_issuer_mismatch",
            Self::TokenAudienceMismatch => "token_audience_mismatch",
            Self::TokenSubjectInvalid => "token_subject_invalid",
            Self::PathNotCanonical => "path_not_canonical",
            Self::RequestTargetInvalid => "request_target_invalid",
            Self::RouteNotAllowed => "route_not_allowed",
            Self::OperationDisabled(_) => "operation_disabled",
            Self::MethodOverride => "method_override_not_allowed",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::BodyInvalid(_) => "body_invalid",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::PayloadTooLarge => "payload_too_large",
            Self::TooManyKeys(_) => "body_too_many_keys",
            Self::TooDeep(_) => "body_too_deep",
            Self::BodyReadTimeout => "body_read_timeout",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnsupportedEncoding => "unsupported_content_encoding",
            Self::QueryNotAllowed(_) => "query_not_allowed",
            Self::IdentityMismatch => "identity_mismatch",
            Self::CustomAuthNotAllowed(_) => "custom_auth_not_allowed",
            Self::SharedAccountsNotAllowed => "shared_accounts_not_allowed",
            Self::ToolNotAllowed { .. } => "tool_not_allowed",
            Self::ToolDefinitionChanged { .. } => "tool_definition_changed",
            Self::ToolVersionNotAllowed { .. } => "tool_version_not_allowed",
            Self::ArgumentsNotAllowed { .. } => "arguments_not_allowed",
            Self::DeniedByKillSwitch { .. } => "denied_by_kill_switch",
            Self::ApprovalRequired { .. } => "approval_required",
            Self::ApprovalDenied { .. } => "approval_denied",
            Self::ApprovalsPending(_) => "too_many_pending_approvals",
            Self::ApprovalsUnavailable => "approvals_unavailable",
            Self::ConnectedAccountNotOwned => "connected_account_not_owned",
            Self::NotFound => "not_found",
            Self::Gate(g) => match g.kind {
                GateKind::NotConnected => "app_not_connected",
                GateKind::Expired => "connection_expired",
                GateKind::Inactive => "connection_inactive",
                GateKind::Pending => "connection_pending",
            },
            Self::ToolNotFound(_) => "tool_not_found",
            Self::RateLimited(_) => "rate_limited",
            Self::SubjectBusy => "too_many_in_flight",
            Self::Overloaded => "overloaded",
            Self::ConnectionStatusUnavailable => "connection_status_unavailable",
            Self::KeysUnavailable => "keys_unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::ClockUnavailable => "clock_unavailable",
            Self::Internal => "internal_error",
        }
    }

    /// The numeric code: Composio's own where one fits, else the gateway's 9100–9199 range.
    pub fn code(&self) -> u32 {
        match self {
            Self::TokenMissing => 9101,
            Self::TokenConflict => 9102,
            Self::TokenMalformed(_) => 9103,
            Self::TokenAlgorithmNotAllowed => 9104,
            Self::TokenUnknownKey => 9105,
            Self::TokenSignatureInvalid => 9106,
            Self::TokenExpired => 9107,
            Self::TokenNotYetValid => 9108,
            Self::TokenClaimInvalid(_) => 9109,
            Self::TokenIssuerMismatch => 9110,
            Self::TokenAudienceMismatch => 9111,
            Self::TokenSubjectInvalid => 9112,
            Self::PathNotCanonical => 9120,
            Self::RequestTargetInvalid => 9121,
            Self::RouteNotAllowed => 9122,
            Self::OperationDisabled(_) => 9123,
            Self::MethodOverride => 9124,
            Self::OriginNotAllowed => 9125,
            Self::BodyInvalid(_) => 9130,
            Self::DuplicateKey(_) => 9131,
            Self::PayloadTooLarge => 9132,
            Self::TooManyKeys(_) => 9136,
            Self::TooDeep(_) => 9137,
            Self::BodyReadTimeout => 9138,
            Self::UnsupportedMediaType => 9133,
            Self::UnsupportedEncoding => 9134,
            Self::QueryNotAllowed(_) => 9135,
            Self::IdentityMismatch => 9140,
            Self::CustomAuthNotAllowed(_) => 9141,
            Self::SharedAccountsNotAllowed => 9142,
            Self::ToolNotAllowed { .. } => 9143,
            Self::ToolDefinitionChanged { .. } => 9149,
            Self::ToolVersionNotAllowed { .. } => 9146,
            Self::ArgumentsNotAllowed { .. } => 9145,
            Self::DeniedByKillSwitch { .. } => 9144,
            Self::ApprovalRequired { .. } => 9147,
            Self::ApprovalDenied { .. } => 9148,
            Self::ApprovalsPending(_) => 9163,
            Self::ApprovalsUnavailable => 9195,
            Self::ConnectedAccountNotOwned => 1812,
            Self::NotFound => 9150,
            Self::Gate(_) => 1803,
            Self::ToolNotFound(_) => 9151,
            Self::RateLimited(_) => 9160,
            Self::SubjectBusy => 9162,
            Self::Overloaded => 9161,
            Self::ConnectionStatusUnavailable => 9190,
            Self::KeysUnavailable => 9191,
            Self::UpstreamUnavailable => 9192,
            Self::UpstreamTimeout => 9193,
            Self::ClockUnavailable => 9194,
            Self::Internal => 9199,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TokenMissing
            | Self::TokenConflict
            | Self::TokenMalformed(_)
            | Self::TokenAlgorithmNotAllowed
            | Self::TokenUnknownKey
            | Self::TokenSignatureInvalid
            | Self::TokenExpired
            | Self::TokenNotYetValid
            | Self::TokenClaimInvalid(_)
            | Self::TokenIssuerMismatch
            | Self::TokenAudienceMismatch
            | Self::TokenSubjectInvalid => StatusCode::UNAUTHORIZED,
            Self::RouteNotAllowed
            | Self::OriginNotAllowed
            | Self::OperationDisabled(_)
            | Self::IdentityMismatch
            | Self::CustomAuthNotAllowed(_)
            | Self::SharedAccountsNotAllowed
            | Self::ToolNotAllowed { .. }
            | Self::ToolDefinitionChanged { .. }
            | Self::ToolVersionNotAllowed { .. }
            | Self::ArgumentsNotAllowed { .. }
            | Self::DeniedByKillSwitch { .. }
            | Self::ApprovalRequired { .. }
            | Self::ApprovalDenied { .. }
            | Self::ConnectedAccountNotOwned => StatusCode::FORBIDDEN,
            Self::PathNotCanonical
            | Self::RequestTargetInvalid
            | Self::MethodOverride
            | Self::BodyInvalid(_)
            | Self::DuplicateKey(_)
            | Self::QueryNotAllowed(_)
            | Self::BodyReadTimeout
            | Self::Gate(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge | Self::TooManyKeys(_) | Self::TooDeep(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::UnsupportedMediaType | Self::UnsupportedEncoding => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::NotFound | Self::ToolNotFound(_) => StatusCode::NOT_FOUND,
            // Transient, not deterministic: it clears when the user's own requests finish.
            Self::RateLimited(_) | Self::SubjectBusy | Self::ApprovalsPending(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Self::ConnectionStatusUnavailable
            | Self::KeysUnavailable
            | Self::Overloaded
            | Self::ApprovalsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ClockUnavailable | Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the caller can do about it.
    pub fn suggested_fix(&self) -> &'static str {
        match self {
            Self::TokenMissing => {
                "Send the end user's JWT as the API key (x-api-key) or as Authorization: Bearer."
            }
            Self::TokenConflict => "Send one token only, in x-api-key or Authorization.",
            Self::TokenMalformed(_)
            | Self::TokenAlgorithmNotAllowed
            | Self::TokenUnknownKey
            | Self::TokenSignatureInvalid
            | Self::TokenClaimInvalid(_)
            | Self::TokenIssuerMismatch
            | Self::TokenAudienceMismatch
            | Self::TokenSubjectInvalid => {
                "Obtain a fresh token for this gateway from your identity provider."
            }
            Self::TokenExpired => "The token has expired: obtain a fresh one and retry.",
            Self::TokenNotYetValid => "Check the clock of the token issuer, or wait.",
            Self::PathNotCanonical | Self::RequestTargetInvalid => {
                "Send the request to the canonical Composio path."
            }
            Self::RouteNotAllowed | Self::OperationDisabled(_) => {
                "This operation is not available to end-user tokens; ask the gateway operator."
            }
            Self::MethodOverride => "Send the real HTTP method instead of an override header.",
            Self::OriginNotAllowed => {
                "Call the MCP endpoint from the gateway's own origin or one it allows."
            }
            Self::BodyInvalid(_) | Self::DuplicateKey(_) => {
                "Send a single well-formed JSON object with each key once."
            }
            Self::PayloadTooLarge => "Send a smaller request body.",
            Self::TooManyKeys(_) | Self::TooDeep(_) => {
                "Send a simpler body: fewer keys per object, less nesting."
            }
            Self::BodyReadTimeout => "Send the whole request body without pausing.",
            Self::UnsupportedMediaType => "Send the body as Content-Type: application/json.",
            Self::UnsupportedEncoding => "Send the body uncompressed.",
            Self::QueryNotAllowed(_) => {
                "Remove the parameter: the gateway sets the user from the token."
            }
            Self::IdentityMismatch => {
                "Omit the user id or send the token subject's own: the gateway sets it."
            }
            Self::CustomAuthNotAllowed(_) => {
                "Use the user's connected account instead of supplying credentials."
            }
            Self::SharedAccountsNotAllowed => "Use the user's own connected accounts.",
            Self::ToolNotAllowed { .. } => {
                "This user may not run this tool; use another tool or ask the gateway operator."
            }
            Self::ToolDefinitionChanged { .. } => {
                "The tool changed since its security review: ask the gateway operator to review \
                 the diff (`entitygate tools diff`) and accept it."
            }
            Self::ToolVersionNotAllowed { .. } => {
                "Omit the version (or send the locked one): the gateway runs the reviewed version."
            }
            Self::ArgumentsNotAllowed { .. } => {
                "Change the call's arguments so that they meet the constraint named in the message."
            }
            Self::DeniedByKillSwitch { .. } => {
                "The gateway's operators suspended this; contact them (retrying will not help)."
            }
            Self::ConnectedAccountNotOwned => {
                "Use one of your own connected accounts, or omit connected_account_id."
            }
            Self::NotFound => "Check the id: it must be one of your own.",
            Self::Gate(g) => match g.kind {
                GateKind::NotConnected | GateKind::Pending => {
                    "Connect the app for this user, then retry."
                }
                GateKind::Expired | GateKind::Inactive => {
                    "Reconnect the app for this user, then retry."
                }
            },
            Self::ToolNotFound(_) => "Check the tool slug.",
            Self::ApprovalRequired { .. } => {
                "Tell the user the call waits for an operator's approval; once approved, make the same call again (same arguments, once)."
            }
            Self::ApprovalDenied { .. } => {
                "An operator refused this exact call; do not retry it. Ask the operators if it must run."
            }
            Self::ApprovalsPending(_) => {
                "Wait until operators answer this user's pending approval requests (or they expire)."
            }
            Self::RateLimited(_) => "Slow down: retry after the time in Retry-After.",
            Self::SubjectBusy => {
                "Wait for this user's other requests to finish: retry after Retry-After."
            }
            Self::Overloaded => "The gateway is busy: retry shortly.",
            Self::ConnectionStatusUnavailable
            | Self::KeysUnavailable
            | Self::UpstreamUnavailable
            | Self::UpstreamTimeout
            | Self::ApprovalsUnavailable => "A transient fault: retry shortly.",
            Self::ClockUnavailable | Self::Internal => "Report this to the gateway operator.",
        }
    }

    /// Whether this is an authentication failure (401, with `WWW-Authenticate`).
    pub fn is_authentication(&self) -> bool {
        self.status() == StatusCode::UNAUTHORIZED
    }

    /// The Composio-shaped JSON body for this error.
    pub fn body(&self, request_id: &str) -> serde_json::Value {
        let mut inner = json!({
            "message": self.to_string(),
            "code": self.code(),
            "slug": self.slug(),
            "status": self.status().as_u16(),
            "request_id": request_id,
            "suggested_fix": self.suggested_fix(),
        });
        if let Self::Gate(g) = self {
            inner["toolkit"] = json!(g.toolkit);
            inner["connection_status"] = json!(g.connection_status);
        }
        // Each refusal's own fields, beside the shape every error has.
        match self {
            Self::ApprovalRequired { id, follow, .. } => {
                inner["approval_id"] = json!(id);
                inner["approval_url"] = json!(follow);
            }
            Self::ApprovalDenied { id, reason } => {
                inner["approval_id"] = json!(id);
                inner["reason"] = json!(reason);
            }
            Self::ArgumentsNotAllowed { constraint, .. } => {
                inner["constraint"] = json!(constraint);
            }
            Self::ToolNotAllowed { tool, rule } => {
                inner["tool"] = json!(tool);
                inner["rule"] = json!(rule);
            }
            Self::ToolDefinitionChanged { tool, locked, seen } => {
                inner["tool"] = json!(tool);
                inner["locked_hash"] = json!(locked);
                inner["seen_hash"] = json!(seen);
            }
            Self::ToolVersionNotAllowed {
                tool,
                locked,
                asked,
            } => {
                inner["tool"] = json!(tool);
                inner["locked_version"] = json!(locked);
                inner["version"] = json!(asked);
            }
            _ => {}
        }
        json!({ "error": inner })
    }

    /// The full HTTP response. `x-request-id` is added by the caller, which owns it.
    pub fn to_response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = serde_json::to_vec(&self.body(request_id)).unwrap_or_default();
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match self {
            Self::RateLimited(secs) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*secs));
            }
            Self::SubjectBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::ApprovalsPending(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            _ => {}
        }
        // The SDKs honour this hint; deterministic refusals must not be retried.
        let transient = matches!(
            self,
            Self::RateLimited(_) | Self::SubjectBusy | Self::ApprovalsPending(_)
        ) || self.status().is_server_error();
        if !transient {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if self.is_authentication() {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_refusals_never_use_retryable_statuses() {
        let all = [
            Error::TokenMissing,
            Error::RouteNotAllowed,
            Error::IdentityMismatch,
            Error::ToolDefinitionChanged {
                tool: "T".into(),
                locked: None,
                seen: None,
            },
            Error::ToolVersionNotAllowed {
                tool: "T".into(),
                locked: "1".into(),
                asked: "2".into(),
            },
            Error::PayloadTooLarge,
            Error::DuplicateKey("user_id".into()),
            Error::TooManyKeys(10),
            Error::TooDeep(10),
            Error::BodyReadTimeout,
            Error::ConnectedAccountNotOwned,
            Error::NotFound,
            Error::ApprovalRequired {
                id: "apr_1".into(),
                message: "m".into(),
                follow: "u".into(),
            },
            Error::ApprovalDenied {
                id: "apr_1".into(),
                reason: "r".into(),
            },
            Error::Gate(Box::new(GateRefusal {
                kind: GateKind::Expired,
                toolkit: "slack".into(),
                connection_status: "EXPIRED".into(),
                message: "m".into(),
            })),
        ];
        for e in all {
            let s = e.status().as_u16();
            assert!(
                !matches!(s, 408 | 409 | 429) && s < 500,
                "{} uses {s}",
                e.slug()
            );
        }
    }

    #[test]
    fn body_has_composio_shape() {
        let v = Error::RouteNotAllowed.body("rid");
        let e = &v["error"];
        assert_eq!(e["slug"], "route_not_allowed");
        assert_eq!(e["code"], 9122);
        assert_eq!(e["status"], 403);
        assert_eq!(e["request_id"], "rid");
        assert!(e["message"].is_string() && e["suggested_fix"].is_string());
    }

    #[test]
    fn unauthenticated_carries_www_authenticate() {
        let r = Error::TokenExpired.to_response("x");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
    }

    #[test]
    fn gate_refusal_uses_composio_code_and_carries_toolkit() {
        let e = Error::Gate(Box::new(GateRefusal {
            kind: GateKind::NotConnected,
            toolkit: "slack".into(),
            connection_status: "NONE".into(),
            message: "Please connect your Slack account first.".into(),
        }));
        let v = e.body("r");
        assert_eq!(v["error"]["code"], 1803);
        assert_eq!(v["error"]["status"], 400);
        assert_eq!(v["error"]["slug"], "app_not_connected");
        assert_eq!(v["error"]["toolkit"], "slack");
        assert_eq!(
            v["error"]["message"],
            "Please connect your Slack account first."
        );
    }
}
