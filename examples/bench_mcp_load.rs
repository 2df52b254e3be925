//! The MCP load generator of `bench/run.sh --only mcp` (BENCHMARKS.md, "MCP tools/call"): one
//! binary for every target (the upstream directly, entitygate, agentgateway, ContextForge), so
//! that the same client drives each the way the target recommends.
//!
//! ```sh
//! cargo run --release --example bench_mcp_load -- --url http://127.0.0.1:18080/mcp \
//!     --header "Authorization: Bearer $TOKEN" --connections 50 --duration 10 [--rate 3000]
//! ```
//!
//! Each of `--connections` keeps one HTTP/1.1 connection (hyper's own client connection, no
//! pool), reconnecting after an error. Modes (`--mode`):
//! - `calls` (default): `tools/call` of `--tool` with `--args` in a loop. Without `--session`
//!   every POST is a stateless 2026-07-28 request (`Mcp-Method`/`Mcp-Name` headers, the version
//!   in `params._meta`; no `initialize`); with `--session` each connection first runs
//!   `initialize` + `notifications/initialized` (`--protocol`, default 2025-06-18) and carries
//!   the `Mcp-Session-Id` it got (a target that gives none is called with the negotiated
//!   version only, as the SDK clients do).
//! - `sessions`: each iteration is a whole new session (`initialize` + `initialized`, + `DELETE`
//!   with `--delete`); the latency is the session's.
//! - `hold-sessions` / `hold-streams` with `--count N`: open N sessions (over the connections)
//!   or N `GET` event streams (one connection each, after a session with `--session`), print
//!   one JSON line with `"ready":true`, and hold them until stdin closes or `--duration` ends.
//!
//! `--rate 0` is saturation: each connection sends its next request when the last answer is
//! read. `--rate R` is open-loop: request k of connection i is due at `(i + k * N) / R` seconds,
//! and its latency runs from when it was due if the connection was still busy with the one
//! before (so a stall of the target is not hidden: coordinated omission), else from when it was
//! sent (the timer's own lateness, up to a millisecond on tokio, is the generator's, not the
//! target's). A call due in the measured window but not sent before it ends is `missed` (a
//! target slower than the rate): its latency is unknown, and the report says so.
//!
//! Answers may be JSON or an event stream (the last event's data is the answer); a non-2xx
//! status, a JSON-RPC error or a result with `isError: true` counts as an error (the first few
//! are printed on stderr). Latencies go into an HDR histogram (microseconds). One JSON line on
//! stdout: calls, errors, secs, rps, p50/p90/p99/p999/max ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http::header::{HeaderName, HeaderValue};
use http::{header, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Calls,
    Sessions,
    HoldSessions,
    HoldStreams,
}

#[derive(Parser)]
#[command(about = "MCP load generator for bench/run.sh (see the module docs)")]
struct Opts {
    /// The MCP endpoint, e.g. http://127.0.0.1:18080/mcp (plain HTTP/1.1).
    #[arg(long)]
    url: Uri,
    /// A request header "Name: value" (repeatable): the token, the API key.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value = "GITHUB_GET_THE_AUTHENTICATED_USER")]
    tool: String,
    /// The tool's arguments (a JSON object).
    #[arg(long, default_value = "{}")]
    args: String,
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Measured seconds (hold modes: the longest hold).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the same load before measuring.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Requests (sessions) per second over all connections; 0 = as fast as answered.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Initialize a session per connection first and carry its Mcp-Session-Id.
    #[arg(long)]
    session: bool,
    /// The protocol version of `initialize` (stateful).
    #[arg(long, default_value = "2025-06-18")]
    protocol: String,
    /// `sessions` mode: end each session with DELETE.
    #[arg(long)]
    delete: bool,
    #[arg(long, value_enum, default_value_t = Mode::Calls)]
    mode: Mode,
    /// Sessions or streams to hold.
    #[arg(long, default_value_t = 1000)]
    count: usize,
}

/// What every worker shares: the fixed parts of each request.
struct Setup {
    authority: String,
    host: HeaderValue,
    path: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    tool: HeaderValue,
    call_stateless: Bytes,
    call_stateful: Bytes,
    initialize: Bytes,
    protocol: HeaderValue,
    printed: AtomicU64,
}

/// Errors printed in full; later ones are only counted.
const PRINT_ERRORS: u64 = 5;
const STATELESS: &str = "2026-07-28";
const ACCEPT: &str = "application/json, text/event-stream";
const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

type Sender = SendRequest<Full<Bytes>>;
type Failure = String;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = Opts::parse();
    let setup = Arc::new(setup(&o)?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match o.mode {
            Mode::Calls | Mode::Sessions => load(&o, setup).await,
            Mode::HoldSessions | Mode::HoldStreams => hold(&o, setup).await,
        }
    })
}

fn setup(o: &Opts) -> Result<Setup, Box<dyn std::error::Error>> {
    if o.url.scheme_str() != Some("http") {
        return Err("--url must be http://".into());
    }
    let authority = o.url.authority().ok_or("--url has no host")?.to_string();
    let path: Uri = o
        .url
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()?;
    let mut headers = Vec::new();
    for h in &o.headers {
        let (k, v) = h.split_once(':').ok_or("--header takes \"Name: value\"")?;
        headers.push((
            HeaderName::from_bytes(k.trim().as_bytes())?,
            HeaderValue::from_str(v.trim())?,
        ));
    }
    let args: serde_json::Value = serde_json::from_str(&o.args)?;
    if !args.is_object() {
        return Err("--args must be a JSON object".into());
    }
    let call = |meta: bool| {
        let mut params = serde_json::json!({"name": o.tool, "arguments": args});
        if meta {
            params["_meta"] =
                serde_json::json!({"io.modelcontextprotocol/protocolVersion": STATELESS});
        }
        let msg = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params});
        Bytes::from(msg.to_string())
    };
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": o.protocol,
            "capabilities": {},
            "clientInfo": {"name": "bench_mcp_load", "version": "1.0.0"},
        },
    });
    Ok(Setup {
        host: HeaderValue::from_str(&authority)?,
        authority,
        path,
        headers,
        tool: HeaderValue::from_str(&o.tool)?,
        call_stateless: call(true),
        call_stateful: call(false),
        initialize: Bytes::from(initialize.to_string()),
        protocol: HeaderValue::from_str(&o.protocol)?,
        printed: AtomicU64::new(0),
    })
}

impl Setup {
    async fn connect(&self) -> Result<Sender, Failure> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// A request to the endpoint with the fixed headers.
    fn request(
        &self,
        method: Method,
        body: Bytes,
        session: Option<&HeaderValue>,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = self.path.clone();
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        h.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (k, v) in &self.headers {
            h.append(k.clone(), v.clone());
        }
        if let Some(id) = session {
            h.insert("mcp-session-id", id.clone());
            h.insert("mcp-protocol-version", self.protocol.clone());
        }
        req
    }

    /// A `tools/call`: stateful (after `initialize`, with the session id if the target gave
    /// one) or a stateless 2026-07-28 request.
    fn call(&self, stateful: bool, session: Option<&HeaderValue>) -> Request<Full<Bytes>> {
        if stateful {
            let mut req = self.request(Method::POST, self.call_stateful.clone(), session);
            req.headers_mut()
                .insert("mcp-protocol-version", self.protocol.clone());
            return req;
        }
        let mut req = self.request(Method::POST, self.call_stateless.clone(), None);
        let h = req.headers_mut();
        h.insert("mcp-protocol-version", HeaderValue::from_static(STATELESS));
        h.insert("mcp-method", HeaderValue::from_static("tools/call"));
        h.insert("mcp-name", self.tool.clone());
        req
    }

    fn failed(&self, what: &str) {
        if self.printed.fetch_add(1, Ordering::Relaxed) < PRINT_ERRORS {
            eprintln!("bench_mcp_load: {what}");
        }
    }

    /// Sends `req` and reads the whole answer: `Ok(session id)` when it is a success.
    async fn exchange(
        &self,
        send: &mut Sender,
        req: Request<Full<Bytes>>,
    ) -> Result<Option<HeaderValue>, Failure> {
        send.ready().await.map_err(|e| format!("connection: {e}"))?;
        let resp = send
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status();
        let sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
        let session = resp.headers().get("mcp-session-id").cloned();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        check(status, sse, &body)?;
        Ok(session)
    }

    /// `initialize` + `notifications/initialized`: the session id, if the target gave one.
    async fn open_session(&self, send: &mut Sender) -> Result<Option<HeaderValue>, Failure> {
        let session = self
            .exchange(
                send,
                self.request(Method::POST, self.initialize.clone(), None),
            )
            .await?;
        let mut note = self.request(
            Method::POST,
            Bytes::from_static(INITIALIZED.as_bytes()),
            session.as_ref(),
        );
        if session.is_none() {
            note.headers_mut()
                .insert("mcp-protocol-version", self.protocol.clone());
        }
        self.exchange(send, note).await?;
        Ok(session)
    }
}

/// Whether an answer is a success: 2xx and, when it carries a JSON-RPC message, neither an
/// error nor a tool result with `isError`.
fn check(status: StatusCode, sse: bool, body: &[u8]) -> Result<(), Failure> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    if !status.is_success() {
        return Err(format!("{status}: {}", text()));
    }
    let owned;
    let message: &[u8] = if sse {
        owned = last_event_data(body);
        &owned
    } else {
        body
    };
    if message.iter().all(u8::is_ascii_whitespace) {
        return if status == StatusCode::ACCEPTED || !sse && body.is_empty() && status.is_success() {
            Ok(())
        } else {
            Err(format!("{status}: no message"))
        };
    }
    #[derive(Deserialize)]
    struct Reply {
        #[serde(default)]
        error: Option<IgnoredAny>,
        #[serde(default)]
        result: Option<Outcome>,
    }
    #[derive(Deserialize)]
    struct Outcome {
        #[serde(rename = "isError", default)]
        is_error: Option<bool>,
    }
    match serde_json::from_slice::<Reply>(message) {
        Ok(Reply { error: Some(_), .. }) => Err(format!("JSON-RPC error: {}", text())),
        Ok(Reply {
            result: Some(Outcome {
                is_error: Some(true),
            }),
            ..
        }) => Err(format!("isError: {}", text())),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("unreadable answer ({e}): {}", text())),
    }
}

/// The data of an event stream's last event with data (lines joined by "\n"; CRLF allowed).
fn last_event_data(body: &[u8]) -> Vec<u8> {
    let mut last = Vec::new();
    let mut current: Vec<u8> = Vec::new();
    let mut has = false;
    for line in body.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if has {
                std::mem::swap(&mut last, &mut current);
                current.clear();
                has = false;
            }
            continue;
        }
        if let Some(data) = line.strip_prefix(b"data:") {
            if has {
                current.push(b'\n');
            }
            current.extend_from_slice(data.strip_prefix(b" ").unwrap_or(data));
            has = true;
        }
    }
    if has {
        last = current;
    }
    last
}

/// One worker's tally.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

async fn load(o: &Opts, setup: Arc<Setup>) -> Result<(), Box<dyn std::error::Error>> {
    let n = o.connections.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let end = measure_from + Duration::from_secs_f64(o.duration);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let w = Worker {
            setup: setup.clone(),
            index: i,
            connections: n,
            rate: o.rate,
            start,
            measure_from,
            end,
            sessions: o.mode == Mode::Sessions,
            stateful: o.session || o.mode == Mode::Sessions,
            delete: o.delete,
        };
        tasks.push(tokio::spawn(w.run()));
    }
    let mut hist = histogram();
    let mut errors = 0;
    for t in tasks {
        let tally = t.await?;
        hist.add(&tally.hist)?;
        errors += tally.errors;
    }
    let secs = o.duration;
    let calls = hist.len();
    // At a fixed rate: calls that were due in the measured window but never sent before it
    // ended (the target could not keep the rate; their latency is unknown, not small).
    let due = (o.rate * o.duration).round() as u64;
    let missed = if o.rate > 0.0 {
        due.saturating_sub(calls + errors)
    } else {
        0
    };
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let out = serde_json::json!({
        "mode": if o.mode == Mode::Sessions { "sessions" } else { "calls" },
        "calls": calls,
        "errors": errors,
        "secs": secs,
        "rps": calls as f64 / secs,
        "rate": o.rate,
        "due": if o.rate > 0.0 { due } else { calls + errors },
        "missed": missed,
        "connections": n,
        "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999),
        "max_ms": hist.max() as f64 / 1000.0,
        "mean_ms": hist.mean() / 1000.0,
    });
    println!("{out}");
    Ok(())
}

struct Worker {
    setup: Arc<Setup>,
    index: usize,
    connections: usize,
    rate: f64,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    sessions: bool,
    stateful: bool,
    delete: bool,
}

impl Worker {
    async fn run(self) -> Tally {
        let s = &self.setup;
        let mut tally = Tally {
            hist: histogram(),
            errors: 0,
        };
        let mut conn: Option<Sender> = None;
        // `Some(id)` once initialized (`Some(None)`: a target that keeps no sessions).
        let mut session: Option<Option<HeaderValue>> = None;
        let mut k: u64 = 0;
        let mut prev_done = self.start;
        tokio::time::sleep_until(self.start).await;
        loop {
            let due = if self.rate > 0.0 {
                let at = (self.index as f64 + k as f64 * self.connections as f64) / self.rate;
                self.start + Duration::from_secs_f64(at)
            } else {
                Instant::now()
            };
            if due >= self.end {
                break;
            }
            k += 1;
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let sent = Instant::now();
            // Late because the connection was busy: the target's delay, counted from `due`.
            let from = if prev_done > due { due } else { sent };
            let result = self.one(&mut conn, &mut session).await;
            let done = Instant::now();
            prev_done = done;
            if due < self.measure_from {
                // A target slower than the rate must not turn the warm-up into the whole run.
                if done >= self.end {
                    break;
                }
                continue;
            }
            match result {
                Ok(()) => {
                    let us = (done - from).as_micros().max(1) as u64;
                    let _ = tally.hist.record(us.min(60_000_000));
                }
                Err(e) => {
                    tally.errors += 1;
                    s.failed(&e);
                    // Start over on a fresh connection (and session).
                    conn = None;
                    session = None;
                }
            }
            if Instant::now() >= self.end {
                break;
            }
        }
        tally
    }

    /// One iteration: a call, or (sessions mode) a whole new session.
    async fn one(
        &self,
        conn: &mut Option<Sender>,
        session: &mut Option<Option<HeaderValue>>,
    ) -> Result<(), Failure> {
        let s = &self.setup;
        if conn.is_none() {
            *conn = Some(s.connect().await?);
        }
        let Some(send) = conn.as_mut() else {
            return Err("no connection".into());
        };
        if self.sessions {
            let id = s.open_session(send).await?;
            if self.delete {
                if let Some(id) = &id {
                    let req = s.request(Method::DELETE, Bytes::new(), Some(id));
                    s.exchange(send, req).await?;
                }
            }
            return Ok(());
        }
        if self.stateful && session.is_none() {
            *session = Some(s.open_session(send).await?);
        }
        let id = session.as_ref().and_then(Option::as_ref);
        s.exchange(send, s.call(self.stateful, id)).await.map(drop)
    }
}

/// `hold-sessions` / `hold-streams`: open, report, hold.
async fn hold(o: &Opts, setup: Arc<Setup>) -> Result<(), Box<dyn std::error::Error>> {
    let opened = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let mut keep = Vec::new();
    if o.mode == Mode::HoldSessions {
        // Sessions are the target's state, not connections: open them over a few.
        let n = o.connections.max(1);
        let mut tasks = Vec::new();
        for i in 0..n {
            let (setup, opened, failed) = (setup.clone(), opened.clone(), failed.clone());
            let mine = o.count / n + usize::from(i < o.count % n);
            tasks.push(tokio::spawn(async move {
                let mut send = match setup.connect().await {
                    Ok(s) => s,
                    Err(e) => {
                        setup.failed(&e);
                        failed.fetch_add(mine as u64, Ordering::Relaxed);
                        return None;
                    }
                };
                for _ in 0..mine {
                    match setup.open_session(&mut send).await {
                        Ok(_) => opened.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            setup.failed(&e);
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
                Some(send)
            }));
        }
        for t in tasks {
            keep.push(t.await?);
        }
    } else {
        let stateful = o.session;
        let mut tasks = Vec::new();
        for _ in 0..o.count {
            let (setup, opened, failed) = (setup.clone(), opened.clone(), failed.clone());
            tasks.push(tokio::spawn(async move {
                match open_stream(&setup, stateful).await {
                    Ok(()) => {
                        opened.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        setup.failed(&e);
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
            // Not all at once: a connect storm would measure the accept queue.
            if tasks.len() % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            t.await?;
        }
    }
    let ready = serde_json::json!({
        "ready": true,
        "mode": if o.mode == Mode::HoldSessions { "hold-sessions" } else { "hold-streams" },
        "wanted": o.count,
        "opened": opened.load(Ordering::Relaxed),
        "failed": failed.load(Ordering::Relaxed),
        "secs_to_open": began.elapsed().as_secs_f64(),
    });
    println!("{ready}");
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    let until_eof = async {
        while let Ok(n) = stdin.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    tokio::select! {
        () = until_eof => {}
        () = tokio::time::sleep(Duration::from_secs_f64(o.duration)) => {}
    }
    drop(keep);
    Ok(())
}

/// One `GET` event stream on its own connection, drained in the background until it ends.
async fn open_stream(setup: &Arc<Setup>, stateful: bool) -> Result<(), Failure> {
    let mut send = setup.connect().await?;
    let session = if stateful {
        setup.open_session(&mut send).await?
    } else {
        None
    };
    let mut req = setup.request(Method::GET, Bytes::new(), session.as_ref());
    req.headers_mut().insert(
        header::ACCEPT,
        HeaderValue::from_static("text/event-stream"),
    );
    req.headers_mut().remove(header::CONTENT_TYPE);
    send.ready().await.map_err(|e| format!("connection: {e}"))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("stream: {e}"))?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(format!(
            "stream: {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let mut body = resp.into_body();
    tokio::spawn(async move {
        // Keeps the connection (moved in) open as long as the stream is.
        let _send = send;
        while let Some(Ok(_)) = body.frame().await {}
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_streams_last_data_event_is_the_answer() {
        let body = b": open\r\n\r\nevent: message\r\ndata: {\"a\":1}\r\n\r\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1}\n\n";
        assert_eq!(last_event_data(body), b"{\"jsonrpc\":\"2.0\",\n\"id\":1}");
    }

    #[test]
    fn a_tool_error_or_a_jsonrpc_error_is_an_error_in_both_framings() {
        let ok = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":false}}"#;
        let tool = br#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#;
        let rpc = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32601,"message":"no"}}"#;
        assert!(check(StatusCode::OK, false, ok).is_ok());
        assert!(check(StatusCode::OK, false, tool).is_err());
        assert!(check(StatusCode::OK, false, rpc).is_err());
        let sse = |m: &[u8]| [&b"event: message\r\ndata: "[..], m, b"\r\n\r\n"].concat();
        assert!(check(StatusCode::OK, true, &sse(ok)).is_ok());
        assert!(check(StatusCode::OK, true, &sse(tool)).is_err());
        assert!(check(StatusCode::OK, true, &sse(rpc)).is_err());
        // Refusals by status, and an answer that says nothing.
        assert!(check(StatusCode::UNAUTHORIZED, false, b"{}").is_err());
        assert!(check(StatusCode::OK, true, b": keep-alive\n\n").is_err());
        assert!(check(StatusCode::ACCEPTED, false, b"").is_ok());
    }
}
