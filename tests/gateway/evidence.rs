//! Evidence for investigators (issue 16): the hash-chained audit log through the real binary
//! (restart, rotation, SIGHUP, `audit-log verify`), and traces across the hop (W3C trace
//! context continued to Composio, recorded in the audit trail, exported over OTLP).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use entitygate::sandbox::Sandbox;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use serde_json::{json, Value};

use crate::support::*;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP collector that keeps every span it is sent (decoded with opentelemetry-proto).
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let kept = kept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let kept = kept.clone();
                        async move {
                            assert_eq!(req.uri().path(), "/v1/traces");
                            assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                            let body = BodyExt::collect(req.into_body()).await?.to_bytes();
                            let export = ExportTraceServiceRequest::decode(body).unwrap();
                            for rs in export.resource_spans {
                                for ss in rs.scope_spans {
                                    kept.lock().unwrap().extend(ss.spans);
                                }
                            }
                            Ok::<_, hyper::Error>(
                                Response::builder()
                                    .header("content-type", "application/x-protobuf")
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, spans, task }
    }

    /// Waits until a span named `name` of the caller's trace has arrived.
    async fn wait_for(&self, name: &str) -> Vec<Span> {
        for _ in 0..200 {
            let spans = self.spans.lock().unwrap().clone();
            if spans
                .iter()
                .any(|s| s.name == name && hex(&s.trace_id) == CALLER_TRACE)
            {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {name} span arrived");
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

async fn audit_lines(path: &Path, request_id: &str) -> Vec<Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(request_id) {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{request_id} was not audited");
}

fn audited<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["request_id"] == request_id)
        .unwrap()
}

fn traced(h: &Harness, rid: &str, traceparent: Option<&str>, user: &str) -> Request<Full<Bytes>> {
    let _ = h;
    let mut req = Request::post(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
        .header("x-api-key", token(user))
        .header("content-type", "application/json")
        .header("x-request-id", rid);
    if let Some(tp) = traceparent {
        req = req
            .header("traceparent", tp)
            .header("tracestate", "congo=t61rcWkgMzE");
    }
    req.body(Full::new(Bytes::from(
        json!({"arguments": {"title": "t"}}).to_string(),
    )))
    .unwrap()
}

#[tokio::test]
async fn the_callers_trace_reaches_composio_the_audit_log_and_the_collector() {
    let collector = Collector::start().await;
    let audit = std::env::temp_dir().join(format!("eg-trace-audit-{}.jsonl", uuid_like()));
    let h = Harness::with_config(&format!(
        "[audit]\npath = {:?}\n[telemetry]\notlp_endpoint = \"http://{}\"\nexport_interval_ms = 50\n",
        audit.display().to_string(),
        collector.addr
    ))
    .await;
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = h
        .raw(traced(&h, "trace-otlp-1", Some(&caller), "alice"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());

    // Composio received the gateway's upstream span as parent, in the caller's trace.
    let exec = h.upstream("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE");
    assert_eq!(exec.len(), 1);
    let tp = exec[0].header("traceparent").unwrap().to_owned();
    assert!(tp.starts_with(&format!("00-{CALLER_TRACE}-")), "{tp}");
    assert!(
        !tp.contains(CALLER_SPAN),
        "the gateway's span, not the caller's: {tp}"
    );
    assert_eq!(exec[0].header("tracestate"), Some("congo=t61rcWkgMzE"));
    let upstream_span_id = tp[36..52].to_owned();

    let spans = collector.wait_for("entitygate.request").await;
    let spans = {
        // The request span ends last; give the batch holding the others a moment too.
        let _ = collector.wait_for("upstream").await;
        let mut all = collector.spans.lock().unwrap().clone();
        all.extend(spans);
        all
    };
    let mine: Vec<&Span> = spans
        .iter()
        .filter(|s| hex(&s.trace_id) == CALLER_TRACE)
        .collect();
    let by_name = |n: &str| {
        *mine
            .iter()
            .find(|s| s.name == n)
            .unwrap_or_else(|| panic!("no {n} span"))
    };
    let request = by_name("entitygate.request");
    assert_eq!(
        hex(&request.parent_span_id),
        CALLER_SPAN,
        "continues the caller's span"
    );
    assert_eq!(attr(request, "enduser.id").as_deref(), Some("alice"));
    assert_eq!(
        attr(request, "entitygate.decision").as_deref(),
        Some("allow")
    );
    for child in ["authenticate", "decide", "upstream"] {
        assert_eq!(
            by_name(child).parent_span_id,
            request.span_id,
            "{child} is a child of the request span"
        );
    }
    assert_eq!(
        attr(by_name("decide"), "entitygate.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attr(by_name("decide"), "enduser.id").as_deref(),
        Some("alice")
    );
    assert_eq!(hex(&by_name("upstream").span_id), upstream_span_id);
    assert_eq!(
        attr(by_name("upstream"), "http.response.status_code").as_deref(),
        Some("200")
    );
    // The cold caches asked Composio for the tool and the connection: spans of this trace,
    // and the lookups carried their traceparent.
    let lookups: Vec<&&Span> = mine
        .iter()
        .filter(|s| s.name == "connection_status")
        .collect();
    assert!(!lookups.is_empty(), "status lookups are traced");
    let looked_up = h.upstream("/api/v3.1/connected_accounts");
    assert!(looked_up.iter().all(|r| r
        .header("traceparent")
        .is_some_and(|t| t.contains(CALLER_TRACE))));
    // Never a token or the key in what is exported.
    let t = token("alice");
    for s in &spans {
        for kv in &s.attributes {
            let v = format!("{:?}", kv.value);
            assert!(
                !v.contains(API_KEY) && !v.contains(&t),
                "{} leaks a secret",
                kv.key
            );
        }
    }

    let lines = audit_lines(&audit, "trace-otlp-1").await;
    assert_eq!(audited(&lines, "trace-otlp-1")["trace_id"], CALLER_TRACE);
    h.shutdown().await;
    collector.task.abort();
    let _ = std::fs::remove_file(&audit);
}

#[tokio::test]
async fn without_a_valid_traceparent_a_new_trace_starts_and_is_recorded() {
    let audit = std::env::temp_dir().join(format!("eg-trace-audit-{}.jsonl", uuid_like()));
    let h = Harness::with_config(&format!(
        "[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    let upper = format!("00-{}-{CALLER_SPAN}-01", CALLER_TRACE.to_uppercase());
    for (rid, tp) in [("trace-none", None), ("trace-bad", Some(upper.as_str()))] {
        let before = h.upstream("/api/v3.1/tools/execute").len();
        let r = h.raw(traced(&h, rid, tp, "alice")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let exec = h.upstream("/api/v3.1/tools/execute");
        assert_eq!(exec.len(), before + 1);
        let sent = exec.last().unwrap();
        let tp_sent = sent.header("traceparent").unwrap().to_owned();
        assert_eq!(tp_sent.len(), 55, "{tp_sent}");
        let trace_id = &tp_sent[3..35];
        assert_ne!(trace_id, CALLER_TRACE);
        assert_ne!(trace_id, "0".repeat(32));
        assert_eq!(sent.header_all("traceparent").len(), 1);
        // A tracestate without a valid traceparent means nothing.
        assert_eq!(sent.header("tracestate"), None);
        let lines = audit_lines(&audit, rid).await;
        assert_eq!(audited(&lines, rid)["trace_id"], trace_id, "{rid}");
    }
    // A refusal is in a trace too, and nothing reached Composio for it.
    let before = h.sandbox.requests().len();
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let req = Request::builder()
        .method(Method::POST)
        .uri(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
        .header("x-request-id", "trace-refused")
        .header("traceparent", caller)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(h.raw(req).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.sandbox.requests().len(), before);
    let lines = audit_lines(&audit, "trace-refused").await;
    assert_eq!(audited(&lines, "trace-refused")["trace_id"], CALLER_TRACE);
    h.shutdown().await;
    let _ = std::fs::remove_file(&audit);
}

// === the chained audit log through the real binary ===

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const HMAC_KEY: &str = "audit-hmac-test-only-0123456789abcdef0123";

fn serve(config: &Path) -> Killed {
    serve_logging(config, None)
}

/// The gateway, with its `entitygate::audit` info logs (checkpoints) in `stderr` if given.
fn serve_logging(config: &Path, stderr: Option<&Path>) -> Killed {
    let (filter, err) = match stderr {
        Some(p) => (
            "error,entitygate::audit=info",
            Stdio::from(std::fs::File::create(p).unwrap()),
        ),
        None => ("error", Stdio::null()),
    };
    Killed(
        Command::new(env!("CARGO_BIN_EXE_entitygate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("COMPOSIO_API_KEY", API_KEY)
            .env("JWT_SECRET", SECRET)
            .env("AUDIT_HMAC_KEY", HMAC_KEY)
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap(),
    )
}

async fn execute(port: u16, rid: &str) -> Option<StatusCode> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::post(format!(
        "http://127.0.0.1:{port}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"
    ))
    .header("x-api-key", token("alice"))
    .header("x-request-id", rid)
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(b"{\"user_id\":\"bob\"}")))
    .unwrap();
    client.request(req).await.ok().map(|r| r.status())
}

async fn until_up(port: u16) {
    for _ in 0..100 {
        if execute(port, "warmup").await.is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not come up");
}

async fn stop(mut child: Killed) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    for _ in 0..100 {
        if child.0.try_wait().unwrap().is_some() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not stop");
}

fn verify(files: &[&Path], key: bool) -> (bool, String) {
    verify_with(files, key, &[])
}

fn verify_with(files: &[&Path], key: bool, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_entitygate"));
    cmd.args(["audit-log", "verify"])
        .args(args)
        .env("AUDIT_HMAC_KEY", HMAC_KEY);
    if key {
        cmd.args(["--hmac-key-env", "AUDIT_HMAC_KEY"]);
    }
    let out = cmd.args(files).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_chains_its_log_across_a_restart_and_a_rotation_and_verify_catches_an_edit() {
    chains_across_a_restart_and_a_rotation(false).await;
}

/// The same with `[audit] format = "ocsf"` (issue 30): the chain's members end `unmapped`.
#[tokio::test]
async fn the_binary_chains_its_ocsf_log_across_a_restart_and_a_rotation_and_verify_catches_an_edit()
{
    chains_across_a_restart_and_a_rotation(true).await;
}

async fn chains_across_a_restart_and_a_rotation(ocsf: bool) {
    // Where each fact is in either format.
    let kind = |l: &Value| {
        if ocsf {
            l["metadata"]["event_code"].clone()
        } else {
            l["event"].clone()
        }
    };
    let reason = |l: &Value| {
        if ocsf {
            l["unmapped"]["reason"].clone()
        } else {
            l["reason"].clone()
        }
    };
    let request_id = |l: &Value| {
        if ocsf {
            l["metadata"]["uid"].clone()
        } else {
            l["request_id"].clone()
        }
    };
    let (subject, forged) = if ocsf {
        ("\"uid\":\"alice\"", "\"uid\":\"carol\"")
    } else {
        ("\"subject\":\"alice\"", "\"subject\":\"carol\"")
    };
    let format = if ocsf { "format = \"ocsf\"\n" } else { "" };
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("eg-chain-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("entitygate.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[upstream]\nbase_url = \"http://{upstream}\"\n[auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n[audit]\npath = \"audit.jsonl\"\nhmac_key_env = \"AUDIT_HMAC_KEY\"\n{format}"
        ),
    )
    .unwrap();
    let log = dir.join("audit.jsonl");
    let rotated = dir.join("audit.jsonl.1");

    let child = serve(&config);
    until_up(port).await;
    for i in 0..3 {
        assert_eq!(
            execute(port, &format!("before-{i}")).await,
            Some(StatusCode::OK)
        );
    }
    // logrotate's default: move the file away, then SIGHUP.
    std::fs::rename(&log, &rotated).unwrap();
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..2 {
        assert_eq!(
            execute(port, &format!("after-hup-{i}")).await,
            Some(StatusCode::OK)
        );
    }
    stop(child).await;
    // A restart continues the chain of the file it finds.
    let child = serve(&config);
    until_up(port).await;
    assert_eq!(execute(port, "after-restart").await, Some(StatusCode::OK));
    stop(child).await;

    let (ok, out) = verify(&[&rotated, &log], true);
    assert!(ok, "{out}");
    assert!(out.contains("every HMAC verified"), "{out}");
    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kind(&lines[0]), "log_opened");
    let reasons: Vec<Value> = lines
        .iter()
        .filter(|l| kind(l) == "log_opened")
        .map(reason)
        .collect();
    assert!(reasons.contains(&"restart".into()), "{reasons:?}");
    assert!(lines.iter().any(|l| request_id(l) == "after-restart"));
    if ocsf {
        assert!(lines.iter().all(|l| l["metadata"]["version"] == "1.8.0"));
    }
    // The rotated file alone verifies; the two in the wrong order do not.
    assert!(verify(&[&rotated], true).0);
    let (ok, out) = verify(&[&log, &rotated], true);
    assert!(!ok, "{out}");

    // An investigator's copy edited by hand: caught at that line, exit code non-zero.
    let text = std::fs::read_to_string(&rotated).unwrap();
    let target = text
        .lines()
        .position(|l| l.contains("\"before-1\""))
        .unwrap();
    let edited: Vec<String> = text
        .lines()
        .map(|l| {
            if l.contains("\"before-1\"") {
                assert!(l.contains(subject), "{l}");
                l.replace(subject, forged)
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&rotated, edited.join("\n") + "\n").unwrap();
    let (ok, out) = verify(&[&rotated, &log], false);
    assert!(!ok);
    assert!(
        out.contains(&format!("audit.jsonl.1:{}:", target + 1)),
        "reported at the edited line: {out}"
    );
    sandbox.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

fn read_log(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `entitygate_audit_last_seq` as the admin listener's `/metrics` shows it.
async fn last_seq_gauge(admin: u16) -> Option<f64> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let uri = format!("http://127.0.0.1:{admin}/metrics").parse().ok()?;
    let body = client
        .get(uri)
        .await
        .ok()?
        .into_body()
        .collect()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    text.lines()
        .find(|l| l.starts_with("entitygate_audit_last_seq "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn a_crash_mid_line_is_reported_and_a_cut_start_verifies_only_after_its_checkpoint() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("eg-crash-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("entitygate.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[upstream]\nbase_url = \"http://{upstream}\"\n[auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n[audit]\npath = \"audit.jsonl\"\nhmac_key_env = \"AUDIT_HMAC_KEY\"\n[log]\nformat = \"json\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n"
        ),
    )
    .unwrap();
    let log = dir.join("audit.jsonl");
    let stderr = dir.join("run1.stderr");

    let child = serve_logging(&config, Some(&stderr));
    until_up(port).await;
    for i in 0..2 {
        assert_eq!(
            execute(port, &format!("run1-{i}")).await,
            Some(StatusCode::OK)
        );
    }
    audit_lines(&log, "run1-1").await;
    // The gauge follows the writer to the last line on disk.
    let last_seq = read_log(&log).last().unwrap()["seq"].as_f64().unwrap();
    let mut gauge = None;
    for _ in 0..100 {
        gauge = last_seq_gauge(admin).await;
        if gauge == Some(last_seq) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gauge, Some(last_seq));
    stop(child).await;
    // A stopping gateway logs where its chain ends, on stderr (not in the file).
    let checkpoints: Vec<Value> = std::fs::read_to_string(&stderr)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "audit checkpoint")
        .collect();
    let end = checkpoints.last().expect("a checkpoint at the stop");
    let lines = read_log(&log);
    let last = lines.last().unwrap();
    assert_eq!(end["seq"], last["seq"]);
    assert_eq!(end["hash"], last["hash"]);
    let anchor = end["anchor"].as_str().unwrap().to_owned();
    assert_eq!(
        anchor,
        format!("{}:{}", last["seq"], last["hash"].as_str().unwrap())
    );

    // kill -9 in the middle of a line, then a restart.
    let partial = "{\"seq\":99,\"prev\":\"abc";
    let mut text = std::fs::read_to_string(&log).unwrap();
    let damaged_line = text.lines().count() + 1;
    text.push_str(partial);
    std::fs::write(&log, &text).unwrap();
    let child = serve(&config);
    until_up(port).await;
    assert_eq!(execute(port, "run2-0").await, Some(StatusCode::OK));
    stop(child).await;

    let (ok, out) = verify(&[&log], true);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "crash damage at {}:{damaged_line}, {} bytes",
            log.display(),
            partial.len()
        )),
        "{out}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let record: Value = serde_json::from_str(lines[damaged_line]).unwrap();
    assert_eq!(record["reason"], "restart");
    assert_eq!(record["crash_damage"]["bytes"], partial.len());
    // An edit after the damage is still found at its own line.
    let target = lines.iter().position(|l| l.contains("\"run2-0\"")).unwrap();
    assert!(target > damaged_line);
    let edited = text.replace("\"run2-0\"", "\"run2-X\"");
    std::fs::write(&log, &edited).unwrap();
    let (ok, out) = verify(&[&log], true);
    assert!(!ok);
    assert!(
        out.contains(&format!("audit.jsonl:{}:", target + 1)),
        "{out}"
    );

    // Everything before the latest restart cut: a chain that does not begin, until the
    // checkpoint logged off the file says what it follows.
    let cut = lines[damaged_line..].join("\n") + "\n";
    std::fs::write(&log, &cut).unwrap();
    let (ok, out) = verify(&[&log], true);
    assert!(!ok, "{out}");
    assert!(
        out.contains("audit.jsonl:1: does not begin the chain"),
        "{out}"
    );
    let (ok, out) = verify_with(&[&log], true, &["--after", &anchor]);
    assert!(ok, "{out}");
    sandbox.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
