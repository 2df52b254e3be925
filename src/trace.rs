//! Traces across the hop: W3C Trace Context in, through, and out of the gateway, and the
//! OpenTelemetry export of the gateway's own spans.
//!
//! Every request gets a [`Trace`]: the caller's `traceparent` continued when it is exactly
//! valid (parsed strictly; anything else starts a new trace, and the caller's header is never
//! forwarded as such), else a fresh one. Its trace id goes into the audit event, and the
//! request sent to Composio carries a `traceparent` naming the gateway's span (plus the
//! caller's `tracestate`, when valid). This costs two random ids and one header per request.
//!
//! With `[telemetry] otlp_endpoint` the gateway also exports spans over OTLP/HTTP (protobuf),
//! through the same rustls client stack it uses for Composio: `entitygate.request` (server)
//! with children `authenticate`, `decide`, `connection_status` (each of Composio lookups the
//! decision needed) and `upstream` (client). Attributes say who (the verified subject), what
//! (route, tool) and the decision; never a token, a key or a tool argument. Without an
//! endpoint nothing is built: no provider, no exporter thread, no span objects.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use crate::config::{ConfigError, TelemetryConfig, UpstreamConfig};

/// The caller's trace context, when its `traceparent` is exactly valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The caller's span.
    pub span_id: [u8; 8],
    /// The caller's `sampled` flag.
    pub sampled: bool,
    /// The caller's `tracestate`, when it is valid too.
    pub state: Option<String>,
}

/// Parses `traceparent` (and `tracestate`) strictly, per W3C Trace Context level 1: one
/// header, lowercase hex, version `00` exactly 55 characters (a later version at least that,
/// followed by `-`), neither id all zeros, version `ff` refused.
pub fn parse(headers: &HeaderMap) -> Option<Parent> {
    let mut all = headers.get_all("traceparent").iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    let v = value.as_bytes();
    if v.len() < 55 {
        return None;
    }
    let version = hex_bytes::<1>(&v[0..2])?[0];
    if version == 0xff || (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return None;
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace_id = hex_bytes::<16>(&v[3..35])?;
    let span_id = hex_bytes::<8>(&v[36..52])?;
    let flags = hex_bytes::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        state: tracestate(headers),
    })
}

/// `tracestate` (all its headers joined), when every member is well formed: at most 32
/// members of `key=value`, 512 characters in all.
fn tracestate(headers: &HeaderMap) -> Option<String> {
    let mut joined = String::new();
    for v in headers.get_all("tracestate") {
        let s = v.to_str().ok()?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(s);
    }
    let members: Vec<&str> = joined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() || members.len() > 32 {
        return None;
    }
    let out = members.join(",");
    if out.len() > 512 || !members.iter().all(|m| member_ok(m)) {
        return None;
    }
    Some(out)
}

fn member_ok(m: &str) -> bool {
    let Some((key, value)) = m.split_once('=') else {
        return false;
    };
    let key_ok = !key.is_empty()
        && key.len() <= 256
        && key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && key.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'_' | b'-' | b'*' | b'/' | b'@')
        })
        && key.matches('@').count() <= 1;
    let value_ok = !value.is_empty()
        && value.len() <= 256
        && !value.ends_with(' ')
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
    key_ok && value_ok
}

fn hex_bytes<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

fn random_ids() -> ([u8; 16], [u8; 8]) {
    let a = uuid::Uuid::new_v4().into_bytes();
    let b = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&b[..8]);
    if span == [0; 8] {
        span[7] = 1;
    }
    (a, span)
}

/// One request's place in a trace.
pub struct Trace {
    trace_id: [u8; 16],
    /// The gateway's span: what Composio sees as its parent when nothing is exported.
    span_id: [u8; 8],
    sampled: bool,
    state: Option<HeaderValue>,
    /// When exporting: the context holding the request span, and the open `decide` span.
    otel: Option<Exporting>,
}

struct Exporting {
    cx: Context,
    tracer: SdkTracer,
    decide: Mutex<Option<opentelemetry_sdk::trace::Span>>,
}

/// The tracer, carried in the request's context so that lookups made deep inside the
/// decision (the connection cache) can record their spans.
#[derive(Clone)]
struct TracerInContext(SdkTracer);

// === impl Trace ===

impl Trace {
    /// Continues the caller's trace or starts one; with `telemetry`, opens the request span.
    pub fn start(headers: &HeaderMap, telemetry: Option<&Telemetry>) -> Self {
        let parent = parse(headers);
        let state = parent
            .as_ref()
            .and_then(|p| p.state.as_deref())
            .and_then(|s| HeaderValue::from_str(s).ok());
        let Some(t) = telemetry else {
            let (fresh_trace, span_id) = random_ids();
            return Self {
                trace_id: parent.as_ref().map_or(fresh_trace, |p| p.trace_id),
                span_id,
                // A new trace is sampled: the decision is the gateway's to make.
                sampled: parent.as_ref().is_none_or(|p| p.sampled),
                state,
                otel: None,
            };
        };
        let parent_cx = match &parent {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                opentelemetry::trace::TraceId::from_bytes(p.trace_id),
                opentelemetry::trace::SpanId::from_bytes(p.span_id),
                TraceFlags::new(u8::from(p.sampled)),
                true,
                p.state
                    .as_deref()
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default(),
            )),
            None => Context::new(),
        };
        let span = t
            .tracer
            .span_builder("entitygate.request")
            .with_kind(SpanKind::Server)
            .start_with_context(&t.tracer, &parent_cx);
        let sc = span.span_context().clone();
        let cx = parent_cx
            .with_span(span)
            .with_value(TracerInContext(t.tracer.clone()));
        Self {
            trace_id: sc.trace_id().to_bytes(),
            span_id: sc.span_id().to_bytes(),
            sampled: sc.is_sampled(),
            state,
            otel: Some(Exporting {
                cx,
                tracer: t.tracer.clone(),
                decide: Mutex::new(None),
            }),
        }
    }

    /// The trace id, as the 32 hex digits the audit event records.
    pub fn trace_id(&self) -> String {
        let mut s = String::with_capacity(32);
        push_hex(&mut s, &self.trace_id);
        s
    }

    /// The context to run the request in when exporting (lookups find their parent in it).
    pub(crate) fn context(&self) -> Option<Context> {
        self.otel.as_ref().map(|o| o.cx.clone())
    }

    /// A child span of the request, when exporting.
    pub(crate) fn child(&self, name: &'static str, kind: SpanKind) -> Option<ChildSpan> {
        let o = self.otel.as_ref()?;
        Some(ChildSpan(
            o.tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&o.tracer, &o.cx),
        ))
    }

    /// Authentication is over: the decision starts.
    pub(crate) fn deciding(&self) {
        if let Some(o) = &self.otel {
            let span = o
                .tracer
                .span_builder("decide")
                .start_with_context(&o.tracer, &o.cx);
            *o.decide.lock().unwrap_or_else(PoisonError::into_inner) = Some(span);
        }
    }

    /// The decision is made (`allow` when the request goes upstream, else the refusal).
    pub(crate) fn decided(&self, decision: &str, subject: Option<&str>) {
        if let Some(o) = &self.otel {
            let open = o
                .decide
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mut span) = open {
                span.set_attribute(KeyValue::new("entitygate.decision", decision.to_owned()));
                if let Some(s) = subject {
                    span.set_attribute(KeyValue::new("enduser.id", s.to_owned()));
                }
                if decision != "allow" {
                    span.set_status(Status::error(decision.to_owned()));
                }
                span.end();
            }
        }
    }

    /// Ends the request span with what the audit event says.
    pub(crate) fn finish(&self, event: &crate::audit::Audit, status: u16) {
        let Some(o) = &self.otel else { return };
        self.decided(event.decision(), event.subject_ref());
        let span = o.cx.span();
        if let Some(s) = event.subject_ref() {
            span.set_attribute(KeyValue::new("enduser.id", s.to_owned()));
        }
        span.set_attribute(KeyValue::new("entitygate.decision", event.decision()));
        span.set_attribute(KeyValue::new("entitygate.route", event.route_pattern()));
        if let Some(tool) = event.tool_ref() {
            span.set_attribute(KeyValue::new("entitygate.tool", tool.to_owned()));
        }
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(event.decision()));
        }
        span.end();
    }

    /// Sets `traceparent` (naming `span`, else the gateway's span) and `tracestate` on a
    /// request to Composio.
    pub(crate) fn inject(&self, headers: &mut HeaderMap, span: Option<&ChildSpan>) {
        let (span_id, sampled) = match span {
            Some(s) => {
                let sc = s.0.span_context();
                (sc.span_id().to_bytes(), sc.is_sampled())
            }
            None => (self.span_id, self.sampled),
        };
        headers.insert(
            "traceparent",
            traceparent(&self.trace_id, &span_id, sampled),
        );
        if let Some(state) = &self.state {
            headers.insert("tracestate", state.clone());
        }
    }
}

impl Trace {
    /// Sets `traceparent` naming the gateway's own span (and `tracestate`) on `headers`.
    pub fn inject_into(&self, headers: &mut HeaderMap) {
        self.inject(headers, None);
    }
}

fn traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], sampled: bool) -> HeaderValue {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    push_hex(&mut s, trace_id);
    s.push('-');
    push_hex(&mut s, span_id);
    s.push_str(if sampled { "-01" } else { "-00" });
    // Hex digits and dashes are always a valid header value.
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A span of the gateway's, ended when dropped.
pub(crate) struct ChildSpan(opentelemetry_sdk::trace::Span);

impl ChildSpan {
    /// Adds an attribute (never a secret).
    pub(crate) fn attr(&mut self, kv: KeyValue) {
        self.0.set_attribute(kv);
    }

    /// Marks the span failed.
    pub(crate) fn error(&mut self, why: &'static str) {
        self.0.set_status(Status::error(why));
    }
}

/// A span for one of the gateway's own lookups at Composio, as a child of the request being
/// decided (found in the current OpenTelemetry context), with its `traceparent` on `headers`.
/// Nothing when not exporting.
pub(crate) fn lookup_span(path: &str, headers: &mut HeaderMap) -> Option<ChildSpan> {
    let (tracer, cx) = Context::map_current(|cx| {
        cx.get::<TracerInContext>()
            .map(|t| (t.0.clone(), cx.clone()))
    })?;
    let mut span = tracer
        .span_builder("connection_status")
        .with_kind(SpanKind::Client)
        .start_with_context(&tracer, &cx);
    // The path without the query: the query names the user, which the span already does.
    let route = path.split('?').next().unwrap_or_default().to_owned();
    span.set_attribute(KeyValue::new("url.path", route));
    let sc = span.span_context();
    headers.insert(
        "traceparent",
        traceparent(
            &sc.trace_id().to_bytes(),
            &sc.span_id().to_bytes(),
            sc.is_sampled(),
        ),
    );
    Some(ChildSpan(span))
}

/// The OTLP exporter of one gateway: a tracer provider with a batch processor whose exports
/// run on a small runtime of their own, so a slow collector never touches the request path
/// and a shutdown never waits on the runtime it is called from.
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    runtime: Option<tokio::runtime::Runtime>,
    config: TelemetryConfig,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("endpoint", &self.config.otlp_endpoint)
            .finish_non_exhaustive()
    }
}

impl Telemetry {
    /// Builds the exporter for `config`, or `None` when no endpoint is set.
    ///
    /// # Errors
    /// An endpoint that is not an http(s) URL, or a CA file that cannot be read.
    pub fn new(config: &TelemetryConfig) -> Result<Option<Self>, ConfigError> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        if config.export_interval_ms == 0 || config.export_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "telemetry.export_interval_ms",
                "export_interval_ms and export_timeout_ms must be positive",
            ));
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|e| ConfigError::invalid("telemetry.otlp_endpoint", format!("{e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(ConfigError::invalid(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        // A collector's base address means its traces path.
        let endpoint = if matches!(uri.path(), "" | "/") {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        } else {
            endpoint.clone()
        };
        let client = crate::client::build_client(&UpstreamConfig {
            ca_file: config.ca_file.clone(),
            ..UpstreamConfig::default()
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("entitygate-otlp")
            .enable_all()
            .build()
            .map_err(|e| ConfigError::invalid("telemetry", format!("cannot start: {e}")))?;
        let timeout = Duration::from_millis(config.export_timeout_ms);
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .with_http_client(OtlpClient {
                client,
                runtime: runtime.handle().clone(),
                timeout,
            })
            .build()
            .map_err(|e| ConfigError::invalid("telemetry.otlp_endpoint", e.to_string()))?;
        let batch = opentelemetry_sdk::trace::BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
            .build();
        let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                opentelemetry_sdk::trace::Sampler::AlwaysOn,
            )))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("entitygate");
        Ok(Some(Self {
            provider,
            tracer,
            runtime: Some(runtime),
            config: config.clone(),
        }))
    }

    /// Whether `config` would build the same exporter (a reload keeps it then).
    pub(crate) fn same(&self, config: &TelemetryConfig) -> bool {
        self.config == *config
    }

    /// Exports what has ended so far. Blocks: not for the request path.
    pub fn flush_blocking(&self) {
        let _ = self.provider.force_flush();
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        // Export what is left; the exports run on the runtime stopped after.
        let _ = self.provider.shutdown_with_timeout(Duration::from_secs(5));
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// The OTLP exporter's HTTP client: the gateway's own hyper + rustls stack, driven on the
/// exporter's runtime whatever thread the batch processor calls it from.
struct OtlpClient {
    client: crate::client::HttpClient,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpClient")
    }
}

/// Collector answers are small; more is not read.
const MAX_COLLECTOR_ANSWER: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::BodyExt as _;
        let client = self.client.clone();
        let timeout = self.timeout;
        let request = request.map(http_body_util::Full::new);
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let resp = client.request(request).await?;
                let (parts, body) = resp.into_parts();
                let body = http_body_util::Limited::new(body, MAX_COLLECTOR_ANSWER)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(http::Response::from_parts(parts, body))
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| -> opentelemetry_http::HttpError { "OTLP export timed out".into() })?
        });
        task.await?
    }
}

#[cfg(test)]
mod tests;
