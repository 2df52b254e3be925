//! The audit trail: one structured event per decision, on the `entitygate::audit` tracing
//! target, so it can be routed to its own sink.
//!
//! An event carries who (subject), what (method, route pattern, tool, toolkit, connected
//! account), the decision (`allow` or the refusal's slug and code), the upstream status and
//! the latency. It never carries a token, an API key, a cookie or a tool argument: only values
//! the gateway itself derived or validated are recorded.

use std::time::Duration;

use http::{HeaderValue, Method, StatusCode};

use crate::error::Error;

/// The audit record of one request, filled in as the request is processed.
#[derive(Debug, Default)]
pub struct Audit {
    method: String,
    route: &'static str,
    subject: Option<String>,
    tool: Option<String>,
    toolkit: Option<String>,
    account: Option<String>,
    decision: &'static str,
    code: u32,
    upstream_status: Option<u16>,
    identity_rewritten: bool,
}

// === impl Audit ===

impl Audit {
    /// Starts a record. The raw path is not recorded (it may be junk); the route pattern is.
    pub fn new(method: &Method, _path: &str) -> Self {
        Self {
            method: method.as_str().to_owned(),
            route: "-",
            decision: "refuse",
            ..Self::default()
        }
    }

    /// The verified subject.
    pub fn subject(&mut self, subject: &str) {
        self.subject = Some(subject.to_owned());
    }

    /// The matched route pattern.
    pub fn route(&mut self, pattern: &'static str) {
        self.route = pattern;
    }

    /// The tool slug of an execution.
    pub fn tool(&mut self, tool: &str) {
        self.tool = Some(tool.to_owned());
    }

    /// The toolkit an execution was gated on.
    pub fn toolkit(&mut self, toolkit: &str) {
        self.toolkit = Some(toolkit.to_owned());
    }

    /// A connected account named by the request.
    pub fn account(&mut self, account: &str) {
        self.account = Some(account.to_owned());
    }

    /// The caller named another user, and the gateway pinned or refused it.
    pub fn mismatch(&mut self) {
        self.identity_rewritten = true;
    }

    /// The upstream answered with `status`.
    pub fn upstream(&mut self, status: StatusCode) {
        self.upstream_status = Some(status.as_u16());
    }

    /// The request was allowed and forwarded (or answered locally).
    pub fn allow(&mut self) {
        self.decision = "allow";
        self.code = 0;
    }

    /// The request was refused.
    pub fn refuse(&mut self, e: &Error) {
        self.decision = e.slug();
        self.code = e.code();
    }

    /// Emits the event.
    pub fn finish(&self, request_id: &HeaderValue, status: StatusCode, latency: Duration) {
        tracing::info!(
            target: "entitygate::audit",
            request_id = request_id.to_str().unwrap_or("-"),
            subject = self.subject.as_deref().unwrap_or("-"),
            method = %self.method,
            route = self.route,
            tool = self.tool.as_deref().unwrap_or("-"),
            toolkit = self.toolkit.as_deref().unwrap_or("-"),
            connected_account_id = self.account.as_deref().unwrap_or("-"),
            decision = self.decision,
            code = self.code,
            identity_rewritten = self.identity_rewritten,
            status = status.as_u16(),
            upstream_status = self.upstream_status.unwrap_or(0),
            latency_us = latency.as_micros() as u64,
            "decision"
        );
    }
}
