//! The proxy service: one request in, one decision, at most one forwarded request out.
//!
//! Request flow, in order (each step refuses with an [`Error`] and nothing reaches Composio):
//! 1. request id (the caller's if plain, else fresh) — every response carries it;
//! 2. request shape: no method-override headers, no absolute-form target on HTTP/1, a
//!    canonical path ([`crate::path`]);
//! 3. authentication ([`crate::auth`]): the JWT's subject becomes the only identity;
//! 4. classification ([`crate::routes`]): unknown routes are refused;
//! 5. the route's policy (one handler module per family), which rewrites identity, checks
//!    ownership and gates on connection status;
//! 6. forwarding ([`crate::upstream`]) with an allowlist of headers ([`crate::headers`]), and
//!    relaying the answer with the real key redacted ([`crate::body::Redact`]);
//! 7. one audit event per decision ([`crate::audit`]).

mod accounts;
pub(crate) mod after;
pub(crate) mod build;
mod execute;
pub(crate) mod mcp;
mod sessions;
pub(crate) mod toolgate;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::audit::Audit;
use crate::auth::{Authenticator, Identity};
use crate::body::{self, Redact, RequestBody, ResponseBody};
use crate::config::PolicyConfig;
use crate::connections::Connections;
use crate::error::Error;
use crate::headers;
use crate::limits::RateLimiter;
use crate::rewrite::{self, JsonObject};
use crate::routes::{self, Matched, Policy};
use crate::upstream::{TimeoutClass, Upstream};

/// Everything a request needs, shared by all connections. Swapped whole on reload.
pub struct Shared {
    pub(crate) auth: Authenticator,
    pub(crate) upstream: Upstream,
    pub(crate) policy: PolicyConfig,
    /// The compiled tool policy (`[[policy.rules]]`).
    pub(crate) tool_policy: crate::toolpolicy::ToolPolicy,
    /// The compiled `[[policy.constraints]]`.
    pub(crate) constraints: crate::constraints::Constraints,
    pub(crate) connections: Arc<Connections>,
    /// The upstream keys redacted from every answer (current, and previous while rotating).
    pub(crate) secret: crate::body::Keys,
    pub(crate) limiter: Arc<RateLimiter>,
    pub(crate) in_flight: Arc<tokio::sync::Semaphore>,
    /// Requests in flight per subject (`[limits] max_in_flight_per_subject`).
    pub(crate) subject_in_flight: Arc<crate::limits::SubjectInFlight>,
    /// `[limits]`: body deadline, JSON shape limits, per-subject cap.
    pub(crate) limits: crate::config::LimitsConfig,
    /// The size `in_flight` was made with.
    pub(crate) max_in_flight: usize,
    /// What the authenticator (keys, claims kept, cache settings) was built from.
    pub(crate) auth_fingerprint: [u8; 32],
    pub(crate) audit: crate::audit::Sink,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// What the connection cache depends on, to keep it across reloads that do not touch it.
    pub(crate) fingerprint: String,
    /// The audit job and Composio's expiry webhook (`[audit_job]`), when configured.
    pub(crate) expiry: Option<Arc<crate::expiry::Expiry>>,
    /// `public_url`: where MCP URLs in answers point (else derived on loopback listeners).
    pub(crate) public_url: Option<String>,
    /// The proxy listener's port once bound (0 before, or when embedded as a service): the one
    /// port a `Host` may name when MCP URLs are derived from it. Kept across reloads.
    pub(crate) listen_port: Arc<std::sync::atomic::AtomicU16>,
    /// `[mcp]`.
    pub(crate) mcp: crate::config::McpConfig,
    /// `[auth] issuer`, published as the MCP authorization server by default.
    pub(crate) issuer: Option<String>,
    /// The front door's sessions ([`mcp::front_door`]).
    pub(crate) front_door: mcp::front_door::Sessions,
    /// The OTLP span exporter (`[telemetry] otlp_endpoint`), when configured.
    pub(crate) telemetry: Option<Arc<crate::trace::Telemetry>>,
    /// The fleet's shared state on Redis (`[shared]`); `None` on a single node.
    pub(crate) cluster: Option<Arc<crate::shared::Cluster>>,
    /// Operators' deny rules; kept across reloads (same `[state] path`).
    pub(crate) kill_switch: Arc<crate::killswitch::KillSwitch>,
    /// Approval requests and grants; kept across reloads (same store).
    pub(crate) approvals: Arc<crate::approvals::Store>,
    /// `[[policy.approvals]]` and `[approvals]` of this configuration.
    pub(crate) approval_rules: Arc<crate::approvals::Rules>,
    /// Connections Composio's answers showed dead ([`crate::revocation`]); kept across reloads.
    pub(crate) broken: Arc<crate::revocation::Broken>,
    /// SHA-256 of the upstream key: the caches that hold an [`Upstream`] are rebuilt when the
    /// key file rotates.
    pub(crate) key_digest: [u8; 32],
    /// The tool-definition lock (`[tools_lock]`); kept across reloads that do not change it.
    pub(crate) tool_lock: Option<Arc<crate::toollock::ToolLock>>,
}

impl Shared {
    pub(crate) fn fingerprint_of(config: &crate::config::Config) -> String {
        format!("{:?}|{:?}", config.upstream, config.connections)
    }

    /// Whether `config` leaves the connection cache's meaning unchanged.
    pub(crate) fn reuse_connections(&self, config: &crate::config::Config) -> bool {
        self.fingerprint == Self::fingerprint_of(config)
    }

    /// The connection cache (for the admin endpoint and the audit job).
    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// Whether verification keys are loaded.
    pub fn keys_ready(&self) -> bool {
        self.auth.ready()
    }

    /// The narrow handle [`crate::invocation::decide`] reads: these rules, nothing else.
    pub(crate) fn decider(&self) -> crate::invocation::Decider<'_> {
        crate::invocation::Decider {
            tool_policy: &self.tool_policy,
            kill_switch: &self.kill_switch,
            connections: &self.connections,
            broken: &self.broken,
            allow_proxy_execute: self.policy.allow_proxy_execute,
            tool_lock: self.tool_lock.as_deref(),
            constraints: &self.constraints,
            approvals: None,
        }
    }
}

/// The proxy as a tower/hyper service.
#[derive(Clone)]
pub struct Proxy {
    /// The rules in force, which a reload swaps; the server owns them, the proxy only reads.
    rules: Arc<arc_swap::ArcSwap<Shared>>,
}

impl Proxy {
    pub(crate) fn new(rules: Arc<arc_swap::ArcSwap<Shared>>) -> Self {
        Self { rules }
    }
}

impl<B> tower::Service<Request<B>> for Proxy
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // A snapshot of the rules for the whole request: a reload never changes them midway.
        let shared = self.rules.load_full();
        Box::pin(async move { Ok(handle(&shared, req).await) })
    }
}

/// Handles one request; never fails (errors become Composio-shaped responses).
async fn handle<B>(shared: &Arc<Shared>, req: Request<B>) -> Response<ResponseBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = headers::request_id(req.headers());
    let trace = crate::trace::Trace::start(req.headers(), shared.telemetry.as_deref());
    let mut record = Record {
        audit: Audit::new(req.method(), req.uri().path()),
        sink: &shared.audit,
        request_id: request_id.clone(),
        started: Instant::now(),
        status: None,
        trace,
    };
    record.audit.query(req.uri().query());
    record.audit.client(
        req.extensions().get::<crate::conn::Peer>().map(|p| p.0),
        req.headers().get(header::USER_AGENT),
    );
    record.audit.trace(record.trace.trace_id());
    // A refusal may be answered before the request body was read (shape, token, route).
    // hyper then closes the connection after the answer, which a keep-alive HTTP/1 client
    // (urllib3 in composio-core 0.7, which sends the body after the headers) only discovers
    // when its next request on that connection fails. Saying `Connection: close` makes it
    // reconnect instead.
    // A 401 on an MCP endpoint names the RFC 9728 metadata (MCP authorization).
    let www_authenticate = mcp::is_mcp_path(req.uri().path())
        .then(|| mcp::www_authenticate(shared, req.uri(), req.headers()))
        .flatten();
    let close_on_refusal = req.version() < Version::HTTP_2
        && (req.headers().contains_key(header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"));
    let result = {
        let _in_flight = crate::metrics::InFlight::start();
        // Composio's own webhook carries no JWT: it is signed, verified by the audit job, and
        // bounded by a pool of its own, so it never takes one of the proxy's slots.
        match shared
            .expiry
            .as_ref()
            .filter(|job| job.accepts(req.method(), req.uri().path()))
        {
            Some(job) => {
                job.receive(&shared.connections, boxed(req), &mut record.audit)
                    .await
            }
            None => match shared.in_flight.clone().try_acquire_owned() {
                Ok(_permit) => {
                    let work = process(
                        shared,
                        req,
                        &request_id,
                        &record.trace,
                        &mut record.audit,
                        None,
                    );
                    match record.trace.context() {
                        // The lookups made while deciding find the request's span in it.
                        Some(cx) => opentelemetry::context::FutureExt::with_context(work, cx).await,
                        None => work.await,
                    }
                }
                Err(_) => Err(Error::Overloaded),
            },
        }
    };
    let mut resp = match result {
        Ok(resp) => {
            record.audit.allow();
            resp
        }
        Err(e) => {
            record.audit.refuse(&e);
            let rid = request_id.to_str().unwrap_or_default();
            let mut resp = e
                .to_response(rid)
                .map(|b| b.map_err(|never| match never {}).boxed());
            if close_on_refusal {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            if let (true, Some(v)) = (e.is_authentication(), www_authenticate) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            resp
        }
    };
    resp.headers_mut().insert("x-request-id", request_id);
    record.status = Some(resp.status());
    resp
}

/// The audit record of a request in progress. It is written when dropped, so a request whose
/// client went away mid-way (the future is dropped, perhaps after Composio already ran the
/// tool) is still audited, as `abandoned` with status 499.
struct Record<'a> {
    audit: Audit,
    sink: &'a crate::audit::Sink,
    request_id: HeaderValue,
    started: Instant,
    status: Option<StatusCode>,
    trace: crate::trace::Trace,
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        let status = self
            .status
            .unwrap_or_else(|| StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST));
        self.audit
            .finish(self.sink, &self.request_id, status, self.started.elapsed());
        self.trace.finish(&self.audit, status.as_u16());
    }
}

async fn process<B>(
    shared: &Arc<Shared>,
    req: Request<B>,
    request_id: &HeaderValue,
    trace: &crate::trace::Trace,
    audit: &mut Audit,
    dry_run: Option<&DryRun>,
) -> Result<Response<ResponseBody>, Error>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = boxed(req).into_parts();
    if headers::METHOD_OVERRIDES
        .iter()
        .any(|h| parts.headers.contains_key(*h))
    {
        return Err(Error::MethodOverride);
    }
    // HTTP/2 always carries the authority in the URI; on HTTP/1 an absolute-form target is
    // something only a forward-proxy client sends, and the gateway is not one.
    if parts.version < Version::HTTP_2 && parts.uri.authority().is_some() {
        return Err(Error::RequestTargetInvalid);
    }
    let path = crate::path::check(parts.uri.path())?;
    if let Some(resp) = mcp::before_auth(shared, &parts, path)? {
        return Ok(resp);
    }
    let token = crate::auth::token_from_headers(&parts.headers)?;
    let identity = {
        let mut span = trace.child("authenticate", opentelemetry::trace::SpanKind::Internal);
        let verified = shared.auth.authenticate(token).await;
        if let (Some(span), Err(e)) = (&mut span, &verified) {
            span.error(e.slug());
        }
        verified?
    };
    audit.subject(&identity.subject);
    audit.token(
        identity.jti().as_deref(),
        identity
            .claims
            .get("iss")
            .and_then(serde_json::Value::as_str),
    );
    shared
        .kill_switch
        .check_identity(&identity.subject, identity.jti().as_deref())?;
    trace.deciding();
    crate::limits::global::check(
        shared.cluster.as_deref(),
        &shared.limiter,
        &identity.subject,
    )
    .await?;
    // Held until the answer's head is produced, so one user's slow or heavy requests take at
    // most this many of the gateway's in-flight slots.
    let _subject_permit = shared
        .subject_in_flight
        .acquire(&identity.subject, shared.limits.max_in_flight_per_subject)?;
    let matched = routes::classify(&parts.method, path)?;
    audit.route(matched.route.pattern, matched.policy().name());
    // Every route's query goes through `rewrite::scope_query`; what it refuses on every route
    // is refused here, before a handler looks anything up upstream.
    rewrite::check_query(parts.uri.query())?;
    let ctx = Ctx {
        shared,
        identity: &identity,
        parts: &parts,
        path,
        matched,
        request_id,
        trace,
        dry_run,
    };
    match matched.policy() {
        Policy::Execute(api) => execute::execute(&ctx, body, api, audit).await,
        Policy::ProxyExecute(api) => execute::proxy_execute(&ctx, body, api, audit).await,
        Policy::Neutral => neutral(&ctx, audit).await,
        Policy::ClientInfo => Ok(client_info(&identity)),
        Policy::FileUpload => file_upload(&ctx, body, audit).await,
        Policy::ListAccounts(api) => accounts::list(&ctx, api, audit).await,
        Policy::OwnedAccount(api) => accounts::owned(&ctx, body, api, audit).await,
        Policy::CreateAccount(api) => accounts::create(&ctx, body, api, audit).await,
        Policy::TriggerUpsert => accounts::trigger_upsert(&ctx, body, audit).await,
        Policy::ListTriggers => accounts::list_triggers(&ctx, audit).await,
        Policy::OwnedTrigger => accounts::owned_trigger(&ctx, body, audit).await,
        Policy::McpGenerate => accounts::mcp_generate(&ctx, body, audit).await,
        Policy::SessionCreate => sessions::create(&ctx, body, audit).await,
        Policy::OwnedSession(call) => sessions::owned(&ctx, body, call, audit).await,
        Policy::Mcp(target) => mcp::handle(&ctx, shared, body, target, audit).await,
    }
}

/// One concrete body type from here on, so handlers need no generic bounds.
fn boxed<B>(req: Request<B>) -> Request<RequestBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    req.map(|body| -> RequestBody {
        body.map_err(|e| -> crate::body::BoxError { Box::new(e) })
            .boxed_unsync()
    })
}

/// What a policy handler gets to see.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) identity: &'a Identity,
    pub(crate) parts: &'a http::request::Parts,
    pub(crate) path: &'a str,
    pub(crate) matched: Matched<'a>,
    pub(crate) request_id: &'a HeaderValue,
    pub(crate) trace: &'a crate::trace::Trace,
    /// `entitygate explain`: record what would be forwarded instead of sending it.
    pub(crate) dry_run: Option<&'a DryRun>,
}

/// What a dry run would have sent to Composio.
#[derive(Debug, Default)]
pub(crate) struct DryRun {
    pub(crate) forwarded: std::sync::Mutex<Option<Forwarded>>,
    /// The decision's trace of every invocation it decided, in order.
    pub(crate) decided: std::sync::Mutex<Vec<crate::invocation::Traced>>,
}

/// The request a dry run stopped before sending.
#[derive(Debug, Clone)]
pub(crate) struct Forwarded {
    pub(crate) method: String,
    pub(crate) path_and_query: String,
    pub(crate) body: Option<Vec<u8>>,
}

/// Runs one request through the real flow, deciding everything and forwarding nothing: the
/// request that would reach Composio is left in `dry`, and the answer is
/// [`Error::Internal`] when it got that far (so it can never be mistaken for a response).
pub(crate) async fn dry_run(
    shared: &Arc<Shared>,
    req: Request<Full<Bytes>>,
    audit: &mut Audit,
    dry: &DryRun,
) -> Result<Response<ResponseBody>, Error> {
    let request_id = headers::request_id(req.headers());
    let trace = crate::trace::Trace::start(req.headers(), None);
    process(shared, req, &request_id, &trace, audit, Some(dry)).await
}

// === impl Ctx ===

impl Ctx<'_> {
    pub(crate) fn subject(&self) -> &str {
        &self.identity.subject
    }

    /// The extraction of this carrier's invocations: their arguments are kept when a
    /// constraint or an approval rule may apply ([`crate::invocation::Extract`]).
    pub(crate) fn extract(
        &self,
        carrier: crate::constraints::Carrier,
    ) -> crate::invocation::Extract<'_> {
        crate::invocation::Extract::new(&self.shared.constraints, carrier)
            .approving(&self.shared.approval_rules)
    }

    /// The one decision on a carrier's invocations ([`crate::invocation::decide`]), its trace
    /// rendered into the audit event (and kept for a dry run's explanation).
    pub(crate) async fn decide(
        &self,
        invocations: &[crate::invocation::Invocation],
        audit: &mut Audit,
    ) -> Result<crate::invocation::Verdict, Error> {
        let trace_id = self.trace.trace_id();
        let mut decider = self.shared.decider();
        if !self.shared.approval_rules.is_empty() {
            decider.approvals = Some(crate::invocation::Approver {
                rules: &self.shared.approval_rules,
                store: &self.shared.approvals,
                audit: &self.shared.audit,
                trace_id: Some(&trace_id),
                dry_run: self.dry_run.is_some(),
            });
        }
        let decided = crate::invocation::decide(&decider, self.identity, invocations).await;
        decided.record(audit);
        if let Some(dry) = self.dry_run {
            dry.decided
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(decided.trace);
        }
        decided.outcome
    }

    /// The one request-body reader of every carrier (REST handlers, sessions, every MCP
    /// endpoint): the content encoding must be `identity`; the whole body must arrive within
    /// `[limits] body_read_timeout_secs` and `[policy] max_body_bytes`; a non-empty body must
    /// be `application/json` (one `Content-Type`). An empty body is returned as such when
    /// `empty_ok`. What reads the JSON applies [`Ctx::json_limits`].
    pub(crate) async fn read_body(
        &self,
        body: RequestBody,
        empty_ok: bool,
    ) -> Result<Bytes, Error> {
        let headers = &self.parts.headers;
        if let Some(enc) = headers.get(header::CONTENT_ENCODING) {
            if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
                return Err(Error::UnsupportedEncoding);
            }
        }
        let deadline = std::time::Duration::from_secs(self.shared.limits.body_read_timeout_secs);
        let read = body::read_limited(headers, body, self.shared.policy.max_body_bytes);
        let bytes = tokio::time::timeout(deadline, read)
            .await
            .map_err(|_| Error::BodyReadTimeout)??;
        if bytes.is_empty() && empty_ok {
            return Ok(bytes);
        }
        if !is_json(headers) {
            return Err(Error::UnsupportedMediaType);
        }
        Ok(bytes)
    }

    /// `[limits] max_json_depth` and `max_json_keys_per_object`, for every JSON body read.
    pub(crate) fn json_limits(&self) -> rewrite::JsonLimits {
        self.shared.limits.json()
    }

    /// Reads the request body ([`Ctx::read_body`]) as a strict JSON object. An empty body
    /// reads as `{}` when `empty_ok`.
    pub(crate) async fn json_body(
        &self,
        body: RequestBody,
        empty_ok: bool,
    ) -> Result<JsonObject, Error> {
        let bytes = self.read_body(body, empty_ok).await?;
        if bytes.is_empty() && empty_ok {
            return JsonObject::parse(b"{}");
        }
        let json = self.json_limits();
        if bytes.len() <= PARSE_INLINE_MAX {
            return JsonObject::parse_owned(bytes, json);
        }
        // A large body takes milliseconds of CPU to check: off the runtime threads that serve
        // every other request (the blocking pool is bounded by the in-flight caps above).
        tokio::task::spawn_blocking(move || JsonObject::parse_owned(bytes, json))
            .await
            .map_err(|_| Error::Internal)?
    }

    /// Sets `field` to the subject (every other spelling of a user id removed) and applies the
    /// identity-mismatch policy.
    pub(crate) fn pin(
        &self,
        obj: &mut JsonObject,
        field: &str,
        audit: &mut Audit,
    ) -> Result<(), Error> {
        let mismatch = obj.pin_identity(field, self.subject(), false)?;
        self.on_mismatch(mismatch, audit)
    }

    /// Applies the identity-mismatch policy: a foreign user id is logged, then either
    /// overwritten (the default) or refused.
    pub(crate) fn on_mismatch(&self, mismatch: bool, audit: &mut Audit) -> Result<(), Error> {
        if !mismatch {
            return Ok(());
        }
        audit.mismatch();
        tracing::warn!(subject = %self.subject(), route = self.matched.route.pattern,
            "request named another user; identity pinned to the token subject");
        match self.shared.policy.on_identity_mismatch {
            crate::config::OnIdentityMismatch::Rewrite => Ok(()),
            crate::config::OnIdentityMismatch::Reject => Err(Error::IdentityMismatch),
        }
    }

    /// Sends the request upstream on the same path, with `query` and `body`.
    pub(crate) async fn forward(
        &self,
        query: Option<&str>,
        body: Option<Vec<u8>>,
        class: TimeoutClass,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Error> {
        let mut pq = String::with_capacity(self.path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(self.path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        self.forward_to(pq, body.map(Bytes::from), |_| Ok(()), class, audit)
            .await
    }

    /// The one upstream request of every carrier: `path_and_query` on Composio with the
    /// caller's method, the allowlisted headers (then `add_headers`, a carrier's own additions:
    /// MCP's), `body` as JSON, the real key (added by [`crate::upstream`]), the trace context;
    /// or, in a dry run, what would have been sent.
    pub(crate) async fn forward_to(
        &self,
        pq: String,
        body: Option<Bytes>,
        add_headers: impl FnOnce(&mut http::HeaderMap) -> Result<(), Error>,
        class: TimeoutClass,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Error> {
        let mut req = Request::builder()
            .method(self.parts.method.clone())
            .uri(self.shared.upstream.uri(&pq)?)
            .body(Full::new(Bytes::new()))
            .map_err(|_| Error::Internal)?;
        let mut out = headers::upstream_request_headers(&self.parts.headers, self.request_id);
        add_headers(&mut out)?;
        *req.headers_mut() = out;
        if let Some(body) = body {
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            *req.body_mut() = Full::new(body);
        } else {
            req.headers_mut().remove(header::CONTENT_TYPE);
        }
        if let Some(dry) = self.dry_run {
            let body = req.body().clone().collect().await.map(|b| b.to_bytes());
            *dry.forwarded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Forwarded {
                method: self.parts.method.to_string(),
                path_and_query: pq,
                body: body.ok().filter(|b| !b.is_empty()).map(|b| b.to_vec()),
            });
            return Err(Error::Internal);
        }
        // Everything before this was the decision; what follows is the upstream call.
        self.trace.decided("allow", Some(self.subject()));
        let mut span = self
            .trace
            .child("upstream", opentelemetry::trace::SpanKind::Client);
        self.trace.inject(req.headers_mut(), span.as_ref());
        let started = Instant::now();
        let sent = self.shared.upstream.send(req, class).await;
        crate::metrics::upstream(started.elapsed());
        let resp = match (sent, &mut span) {
            (Ok(resp), Some(span)) => {
                let status = i64::from(resp.status().as_u16());
                span.attr(opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    status,
                ));
                resp
            }
            (Ok(resp), None) => resp,
            (Err(e), Some(span)) => {
                span.error(e.slug());
                return Err(e);
            }
            (Err(e), None) => return Err(e),
        };
        audit.upstream(resp.status());
        if resp
            .extensions()
            .get::<crate::upstream::PreviousKeyUsed>()
            .is_some()
        {
            audit.previous_key_used();
        }
        Ok(resp)
    }

    /// Forwards the rewritten JSON body, for handlers that look at the answer before relaying.
    pub(crate) async fn forward_json(
        &self,
        query: Option<&str>,
        obj: &JsonObject,
        class: TimeoutClass,
        audit: &mut Audit,
    ) -> Result<Response<Incoming>, Error> {
        self.forward(query, Some(obj.to_vec()), class, audit).await
    }

    /// Forwards the rewritten JSON body and relays the answer: the common end of a handler.
    pub(crate) async fn pass(
        &self,
        query: Option<&str>,
        obj: &JsonObject,
        class: TimeoutClass,
        audit: &mut Audit,
    ) -> Result<Response<ResponseBody>, Error> {
        let resp = self.forward_json(query, obj, class, audit).await?;
        self.relay(resp)
    }

    /// An upstream answer's headers as the caller gets them: no content encoding (the body
    /// must be readable to redact), cleaned, the key redacted, an MCP `Location` moved.
    fn relay_head(&self, head: &mut http::HeaderMap) -> Result<(), Error> {
        refuse_encoded(head)?;
        headers::clean_response_headers(head, &self.shared.secret);
        mcp::rewrite_location_for(self.shared, self.parts, self.subject(), head);
        Ok(())
    }

    /// Relays an upstream response to the caller with headers cleaned and the key redacted.
    pub(crate) fn relay(&self, resp: Response<Incoming>) -> Result<Response<ResponseBody>, Error> {
        self.relay_body(resp)
    }

    /// [`Ctx::relay`] for an answer already read whole (or any other body).
    pub(crate) fn relay_body<B>(&self, resp: Response<B>) -> Result<Response<ResponseBody>, Error>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let (mut parts, body) = resp.into_parts();
        self.relay_head(&mut parts.headers)?;
        let body = Redact::new(body, self.shared.secret.clone()).boxed();
        Ok(Response::from_parts(parts, body))
    }

    /// Relays an answer that may carry Composio MCP URLs, with them moved onto the gateway
    /// ([`mcp::rewrite`]); the answer is read whole (it is a small JSON object).
    pub(crate) async fn relay_mcp_urls(
        &self,
        resp: Response<Incoming>,
    ) -> Result<Response<ResponseBody>, Error> {
        let (mut parts, body) = resp.into_parts();
        self.relay_head(&mut parts.headers)?;
        let bytes = http_body_util::Limited::new(body, MAX_FILTERED_RESPONSE)
            .collect()
            .await
            .map_err(|_| Error::UpstreamUnavailable)?
            .to_bytes();
        let out = mcp::rewrite_answer(self.shared, self.parts, self.subject(), bytes)?;
        let body = Redact::new(Full::new(out), self.shared.secret.clone()).boxed();
        Ok(Response::from_parts(parts, body))
    }

    /// Relays a JSON response after `filter` has had a chance to edit it (second line of
    /// defence on listings). Non-JSON or error answers are relayed unchanged.
    pub(crate) async fn relay_filtered(
        &self,
        resp: Response<Incoming>,
        filter: impl FnOnce(&mut serde_json::Value) -> usize,
    ) -> Result<Response<ResponseBody>, Error> {
        if resp.status() != StatusCode::OK {
            return self.relay(resp);
        }
        let (mut parts, body) = resp.into_parts();
        refuse_encoded(&parts.headers)?;
        headers::clean_response_headers(&mut parts.headers, &self.shared.secret);
        let bytes = http_body_util::Limited::new(body, MAX_FILTERED_RESPONSE)
            .collect()
            .await
            .map_err(|_| Error::UpstreamUnavailable)?
            .to_bytes();
        let out = match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(mut v) => {
                let dropped = filter(&mut v);
                if dropped > 0 {
                    tracing::warn!(subject = %self.subject(), dropped,
                        route = self.matched.route.pattern,
                        "upstream listing held items of other users; dropped");
                }
                Bytes::from(serde_json::to_vec(&v).map_err(|_| Error::Internal)?)
            }
            Err(_) => bytes,
        };
        let body = Redact::new(Full::new(out), self.shared.secret.clone()).boxed();
        Ok(Response::from_parts(parts, body))
    }
}

const MAX_FILTERED_RESPONSE: usize = 32 * 1024 * 1024;

/// Bodies up to this size are parsed on the runtime thread (tens of microseconds at most);
/// larger ones on the blocking pool.
const PARSE_INLINE_MAX: usize = 64 * 1024;

/// Responses are inspected for the key, so they must arrive uncompressed; the gateway asks
/// for `identity`, and an upstream that compresses anyway is refused rather than trusted.
fn refuse_encoded(headers: &http::HeaderMap) -> Result<(), Error> {
    match headers.get(header::CONTENT_ENCODING) {
        Some(v) if !v.as_bytes().eq_ignore_ascii_case(b"identity") => {
            tracing::warn!("upstream answered with a content encoding; refused");
            Err(Error::UpstreamUnavailable)
        }
        _ => Ok(()),
    }
}

/// Exactly one `Content-Type`, and it is `application/json` (parameters aside).
fn is_json(headers: &http::HeaderMap) -> bool {
    let mut all = headers.get_all(header::CONTENT_TYPE).iter();
    match (all.next(), all.next()) {
        (Some(v), None) => v
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")),
        _ => false,
    }
}

/// Catalogue reads: identity parameters are removed, or pinned to the subject when the caller
/// sent one (the SDK's `toolkits?user_id=` asks for per-user connection flags).
async fn neutral(ctx: &Ctx<'_>, audit: &mut Audit) -> Result<Response<ResponseBody>, Error> {
    let query = ctx.parts.uri.query();
    let canonical = (ctx.path.starts_with("/api/v3") && rewrite::query_has_identity(query))
        .then_some("user_id");
    let (query, _) = rewrite::scope_query(query, canonical, ctx.subject(), false)?;
    let query = toolgate::pin_listing_versions(ctx, query);
    let resp = ctx
        .forward(query.as_deref(), None, TimeoutClass::Default, audit)
        .await?;
    toolgate::relay_listing(ctx, resp).await
}

/// `files/upload/request`: the body names the tool and the file, never a user; any user id
/// is removed all the same, and identity query parameters are refused.
async fn file_upload(
    ctx: &Ctx<'_>,
    body: RequestBody,
    audit: &mut Audit,
) -> Result<Response<ResponseBody>, Error> {
    let (query, _) = rewrite::scope_query(ctx.parts.uri.query(), None, ctx.subject(), true)?;
    let mut obj = ctx.json_body(body, false).await?;
    let mismatch = obj.strip_identity(ctx.subject());
    ctx.on_mismatch(mismatch, audit)?;
    if let Some(tool) = obj.get_str("tool_slug") {
        audit.tool(&tool);
    }
    ctx.pass(query.as_deref(), &obj, TimeoutClass::Default, audit)
        .await
}

/// The old SDK validates its key with `client_info` before any call. Composio's answer
/// describes the project key, so the gateway answers for the caller instead.
fn client_info(identity: &Identity) -> Response<ResponseBody> {
    let body = serde_json::json!({
        "client": { "id": &*identity.subject, "name": &*identity.subject },
        "apiKey": null,
    });
    let mut resp = Response::new(body::full(serde_json::to_vec(&body).unwrap_or_default()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
