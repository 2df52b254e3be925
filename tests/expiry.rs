//! The audit job (issue 7) against the sandbox Composio over real sockets: the project-wide
//! scan over many pages, signed notifications with retries and a dedup window that survives
//! a restart, Composio's expiry webhook on the proxy listener, the scheduled scan inside
//! `serve`, and the example receiver.

#![allow(unreachable_pub)]
#![allow(clippy::unwrap_used)]

#[path = "gateway/support/mod.rs"]
mod support;

#[allow(dead_code)]
#[path = "../examples/webhook_receiver.rs"]
mod receiver;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use entitygate::expiry::{self, inbound, notify, Finding, Progress};
use entitygate::sandbox::{Fault, Sandbox};
use entitygate::{Config, Gateway};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use support::{config_toml, token, API_KEY};

const HOOK_SECRET: &str = "app-webhook-secret-for-tests";
const COMPOSIO_SECRET: &str = "composio-webhook-secret-for-tests";
const LIST: &str = "/api/v3.1/connected_accounts";

fn env() -> HashMap<String, String> {
    let mut e = support::env();
    e.insert("APP_HOOK_SECRET".into(), HOOK_SECRET.into());
    e.insert("COMPOSIO_HOOK_SECRET".into(), COMPOSIO_SECRET.into());
    e
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("eg-expiry-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// An `[audit_job]` table with fast retries.
fn job_toml(state: &std::path::Path, webhook: Option<SocketAddr>, extra: &str) -> String {
    let hook = webhook
        .map(|a| {
            format!("webhook_url = \"http://{a}/hooks/entitygate\"\nwebhook_secret_env = \"APP_HOOK_SECRET\"\n")
        })
        .unwrap_or_default();
    let attempts = if extra.contains("max_attempts") {
        ""
    } else {
        "max_attempts = 8\n"
    };
    format!(
        "[audit_job]\nstate_path = \"{}\"\nretry_base_ms = 2\nretry_max_ms = 20\n{attempts}\
         composio_webhook_secret_env = \"COMPOSIO_HOOK_SECRET\"\n{hook}{extra}\n",
        state.display()
    )
}

async fn run_audit(upstream: SocketAddr, job: &str) -> (expiry::Report, Vec<Finding>) {
    let config = Config::from_toml(&config_toml(upstream, job)).expect("config parses");
    config.validate().expect("config validates");
    let mut out = Vec::new();
    let progress = Arc::new(Progress::default());
    let report = expiry::audit_once(&config, &env(), &mut out, &progress)
        .await
        .expect("audit completes");
    let lines: Vec<Finding> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("each line is JSON");
            for k in [
                "user_id",
                "toolkit",
                "connected_account_id",
                "status",
                "status_reason",
                "since",
            ] {
                assert!(v.get(k).is_some(), "{k} missing in {l}");
            }
            Finding {
                user_id: v["user_id"].as_str().unwrap().into(),
                toolkit: v["toolkit"].as_str().unwrap().into(),
                connected_account_id: v["connected_account_id"].as_str().unwrap().into(),
                status: v["status"].as_str().unwrap().into(),
                status_reason: v["status_reason"].as_str().map(Into::into),
                since: v["since"].as_str().map(Into::into),
            }
        })
        .collect();
    (report, lines)
}

// --- a counting webhook receiver that can fail its first N deliveries ---

#[derive(Clone, Default)]
struct Hook {
    /// Every delivery: (timestamp header, signature header, body).
    deliveries: Arc<Mutex<Vec<(String, String, Bytes)>>>,
    /// Deliveries answered 503 before the receiver starts accepting.
    fail_first: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

impl Hook {
    async fn start(fail_first: usize) -> (Self, SocketAddr) {
        let hook = Self::default();
        hook.fail_first.store(fail_first, Ordering::SeqCst);
        let h = hook.clone();
        let addr = support::webhook_receiver(move |d| {
            let n = h.attempts.fetch_add(1, Ordering::SeqCst);
            let status = if n < h.fail_first.load(Ordering::SeqCst) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                h.deliveries
                    .lock()
                    .unwrap()
                    .push((d.timestamp, d.signature, d.body));
                StatusCode::NO_CONTENT
            };
            async move { status }
        })
        .await;
        (hook, addr)
    }

    /// The accepted events, each checked against its signature with the example receiver.
    fn events(&self) -> Vec<Value> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|(ts, sig, body)| {
                receiver::verify(
                    HOOK_SECRET.as_bytes(),
                    Some(ts),
                    Some(sig),
                    body,
                    support::now(),
                )
                .expect("every delivery is signed");
                serde_json::from_slice(body).unwrap()
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) {
        for _ in 0..500 {
            if self.deliveries.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "expected {n} deliveries, got {}",
            self.deliveries.lock().unwrap().len()
        );
    }
}

/// 3,000 accounts of 1,000 users, a few hundred of them broken in every way.
fn big_sandbox() -> (Sandbox, BTreeSet<(String, String)>) {
    let sandbox = Sandbox::new(API_KEY);
    assert_eq!(
        sandbox.add_bulk_accounts("user", 1000, &["gmail", "slack", "github"]),
        3000
    );
    let mut expected = BTreeSet::new();
    for u in 0..1000 {
        let (status, tk) = match u % 10 {
            0 => ("EXPIRED", "gmail"),
            3 => ("FAILED", "slack"),
            5 => ("INACTIVE", "github"),
            7 => ("REVOKED", "gmail"),
            9 => ("DISABLED", "slack"),
            _ => continue,
        };
        let id = format!("ca_user{u}_{tk}");
        if status == "DISABLED" {
            assert!(sandbox.set_account_disabled(&id, true));
        } else {
            assert!(sandbox.set_account_status(&id, status));
        }
        expected.insert((id, status.to_owned()));
    }
    // Pending and disabled-and-expired accounts: the first is not reported, the second once.
    sandbox.set_account_status("ca_user1_gmail", "INITIATED");
    sandbox.set_account_disabled("ca_user0_gmail", true);
    (sandbox, expected)
}

#[tokio::test]
async fn scan_finds_every_broken_account_exactly_once_across_pages() {
    let (sandbox, expected) = big_sandbox();
    let upstream = sandbox.start().await.unwrap();
    let dir = temp_dir();
    let (report, lines) = run_audit(
        upstream,
        &job_toml(&dir.join("s.redb"), None, "page_limit = 50"),
    )
    .await;

    let got: Vec<(String, String)> = lines
        .iter()
        .map(|f| (f.connected_account_id.clone(), f.status.clone()))
        .collect();
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique.len(), got.len(), "an account was reported twice");
    assert_eq!(unique, expected);
    assert_eq!(report.findings.len(), 500);
    assert_eq!(report.users, 500);
    // Grouped by user, with the listing's data.
    let mut sorted = lines.clone();
    sorted.sort_by(|a, b| a.user_id.cmp(&b.user_id));
    assert_eq!(sorted, lines);
    let f = lines
        .iter()
        .find(|f| f.connected_account_id == "ca_user10_gmail")
        .unwrap();
    assert_eq!(
        (f.user_id.as_str(), f.toolkit.as_str()),
        ("user10", "gmail")
    );
    assert!(f.since.is_some());

    // Project-wide listings, paginated, never one call per user.
    let calls = sandbox.requests_to(LIST);
    assert!(report.pages > 20, "{} pages", report.pages);
    assert_eq!(calls.len(), report.pages);
    for r in &calls {
        support::assert_only_real_key(r);
        assert_eq!(r.query_param("user_ids"), None);
        let statuses = r.query_param("statuses").unwrap();
        assert!(
            statuses == "EXPIRED,FAILED,INACTIVE,REVOKED" || statuses == "ACTIVE",
            "{statuses}"
        );
        assert_eq!(r.query_param("limit").as_deref(), Some("50"));
    }
    assert!(
        calls
            .iter()
            .filter(|r| r.query_param("cursor").is_some())
            .count()
            > 20
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn scan_backs_off_on_429_and_still_finds_everything() {
    let (sandbox, expected) = big_sandbox();
    let upstream = sandbox.start().await.unwrap();
    sandbox.set_fault_for(LIST, Fault::Status(429));
    // Lift the rate limit once Composio has refused a few pages.
    let s = sandbox.clone();
    tokio::spawn(async move {
        while s.count("GET", LIST) < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        s.set_fault_for(LIST, Fault::None);
    });
    let dir = temp_dir();
    let job = job_toml(
        &dir.join("s.redb"),
        None,
        "max_attempts = 1000\nconcurrency = 1",
    );
    let (report, lines) = run_audit(upstream, &job).await;
    assert!(report.retries >= 4, "{} retries", report.retries);
    let got: BTreeSet<_> = lines
        .iter()
        .map(|f| (f.connected_account_id.clone(), f.status.clone()))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(lines.len(), expected.len());

    // A persistent 429 ends the scan with an error, not a partial list.
    sandbox.set_fault_for(LIST, Fault::Status(429));
    let config = Config::from_toml(&config_toml(
        upstream,
        &job_toml(&dir.join("s2.redb"), None, "max_attempts = 3"),
    ))
    .unwrap();
    let mut out = Vec::new();
    let err = expiry::audit_once(&config, &env(), &mut out, &Arc::new(Progress::default()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    assert!(out.is_empty());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn small_sandbox(users: usize) -> Sandbox {
    let sandbox = Sandbox::new(API_KEY);
    sandbox.add_bulk_accounts("u", users, &["gmail", "slack"]);
    for u in 0..users {
        sandbox.set_account_status(&format!("ca_u{u}_gmail"), "EXPIRED");
        if u % 2 == 0 {
            sandbox.set_account_status(&format!("ca_u{u}_slack"), "REVOKED");
        }
    }
    sandbox
}

#[tokio::test]
async fn notifications_are_signed_retried_and_deduplicated_across_a_restart() {
    let sandbox = small_sandbox(40);
    let upstream = sandbox.start().await.unwrap();
    let (hook, hook_addr) = Hook::start(3).await;
    let dir = temp_dir();
    let state = dir.join("state.redb");
    let job = job_toml(&state, Some(hook_addr), "concurrency = 3");

    let (report, _) = run_audit(upstream, &job).await;
    let n = report.notify.clone().expect("webhook configured");
    assert_eq!(n.users_notified, 40);
    assert_eq!(n.connections_notified, 60);
    assert_eq!((n.suppressed, n.users_failed), (0, 0));
    // Three refused attempts were retried.
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 43);
    let events = hook.events();
    assert_eq!(events.len(), 40);
    let users: BTreeSet<&str> = events
        .iter()
        .map(|e| e["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users.len(), 40, "one event per user");
    let e0 = events.iter().find(|e| e["user_id"] == "u0").unwrap();
    assert_eq!(e0["type"], "entitygate.connections.attention");
    let tks: BTreeSet<&str> = e0["toolkits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["toolkit"].as_str().unwrap())
        .collect();
    assert_eq!(tks, BTreeSet::from(["gmail", "slack"]));
    for t in e0["toolkits"].as_array().unwrap() {
        for k in ["connected_account_id", "status", "status_reason", "since"] {
            assert!(t.get(k).is_some(), "{k}");
        }
    }
    assert!(e0["sent_at"].as_u64().is_some());

    // "Restart": a new run opens the same store; nobody is told twice.
    let (report, lines) = run_audit(upstream, &job).await;
    assert_eq!(lines.len(), 60);
    let n = report.notify.unwrap();
    assert_eq!((n.users_notified, n.suppressed), (0, 60));
    assert_eq!(hook.events().len(), 40);

    // A connection that breaks later is reported, alone; one that recovered is forgotten, so
    // breaking again reports it again.
    sandbox.set_account_status("ca_u1_slack", "FAILED");
    sandbox.set_account_status("ca_u3_gmail", "ACTIVE");
    let (report, _) = run_audit(upstream, &job).await;
    assert_eq!(report.notify.unwrap().users_notified, 1);
    let events = hook.events();
    let last = events.last().unwrap();
    assert_eq!(last["user_id"], "u1");
    assert_eq!(last["toolkits"].as_array().unwrap().len(), 1);
    assert_eq!(last["toolkits"][0]["connected_account_id"], "ca_u1_slack");
    sandbox.set_account_status("ca_u3_gmail", "EXPIRED");
    let (report, _) = run_audit(upstream, &job).await;
    assert_eq!(report.notify.unwrap().users_notified, 1);
    assert_eq!(hook.events().last().unwrap()["user_id"], "u3");

    // With a zero window everybody is told again.
    let job0 = job_toml(&state, Some(hook_addr), "renotify_secs = 0");
    let (report, _) = run_audit(upstream, &job0).await;
    assert_eq!(report.notify.unwrap().users_notified, 40);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_receiver_that_keeps_failing_is_retried_then_left_for_next_time() {
    let sandbox = small_sandbox(2);
    let upstream = sandbox.start().await.unwrap();
    let (hook, hook_addr) = Hook::start(usize::MAX).await;
    let dir = temp_dir();
    let job = job_toml(&dir.join("s.redb"), Some(hook_addr), "max_attempts = 3");
    let (report, _) = run_audit(upstream, &job).await;
    let n = report.notify.unwrap();
    assert_eq!((n.users_notified, n.users_failed), (0, 2));
    assert_eq!(hook.attempts.load(Ordering::SeqCst), 6);
    // Not recorded: the next run tries again and succeeds.
    hook.fail_first.store(0, Ordering::SeqCst);
    let (report, _) = run_audit(upstream, &job).await;
    assert_eq!(report.notify.unwrap().users_notified, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_example_receiver_prints_prompts_and_rejects_bad_signatures() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let prompts = Arc::new(Mutex::new(Vec::<String>::new()));
    let p = prompts.clone();
    tokio::spawn(receiver::serve(
        listener,
        Bytes::from_static(HOOK_SECRET.as_bytes()),
        Arc::new(move |line| p.lock().unwrap().push(line)),
    ));

    // End to end: the audit job delivers to the example receiver.
    let sandbox = small_sandbox(1);
    let upstream = sandbox.start().await.unwrap();
    let dir = temp_dir();
    let (report, _) = run_audit(upstream, &job_toml(&dir.join("s.redb"), Some(addr), "")).await;
    assert_eq!(report.notify.unwrap().users_notified, 1);
    let got = prompts.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got
        .iter()
        .any(|p| p.starts_with("[u0] Your gmail connection has expired")));
    assert!(got
        .iter()
        .any(|p| p.contains("slack connection was revoked")));

    // Forged or replayed deliveries are refused.
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = br#"{"type":"entitygate.connections.attention","id":"evt_x","user_id":"mallory","toolkits":[{"toolkit":"gmail","connected_account_id":"ca_x","status":"EXPIRED","status_reason":null,"since":null}],"sent_at":0}"#;
    let post = |ts: u64, sig: String, body: &'static [u8]| {
        let req = Request::post(format!("http://{addr}/"))
            .header("content-type", "application/json")
            .header(notify::TIMESTAMP_HEADER, ts.to_string())
            .header(notify::SIGNATURE_HEADER, sig)
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let client = client.clone();
        async move { client.request(req).await.unwrap().status() }
    };
    let now = support::now();
    let wrong_key = notify::sign(b"not-the-secret", now, body);
    assert_eq!(post(now, wrong_key, body).await, StatusCode::UNAUTHORIZED);
    let good = notify::sign(HOOK_SECRET.as_bytes(), now, body);
    let tampered: &'static [u8] = br#"{"type":"entitygate.connections.attention","user_id":"eve"}"#;
    assert_eq!(
        post(now, good.clone(), tampered).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(now + 1, good.clone(), body).await,
        StatusCode::UNAUTHORIZED
    );
    let stale = now - 3600;
    let stale_sig = notify::sign(HOOK_SECRET.as_bytes(), stale, body);
    assert_eq!(post(stale, stale_sig, body).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        prompts.lock().unwrap().len(),
        2,
        "nothing forged was printed"
    );
    assert_eq!(post(now, good, body).await, StatusCode::OK);
    assert_eq!(prompts.lock().unwrap().len(), 3);
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- Composio's webhook and the scheduled scan, through a running gateway ---

struct Running {
    sandbox: Sandbox,
    gateway: entitygate::RunningGateway,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
}

impl Running {
    async fn start(sandbox: Sandbox, job: &str) -> Self {
        let upstream = sandbox.start().await.unwrap();
        let extra =
            format!("[connections]\ncache_ttl_secs = 3600\nnegative_ttl_secs = 3600\n{job}");
        let config = Config::from_toml(&config_toml(upstream, &extra)).unwrap();
        let gateway = Gateway::builder(config)
            .env(env())
            .build()
            .await
            .unwrap()
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        Self {
            sandbox,
            gateway,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn request(&self, req: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    async fn execute(&self, user: &str, tool: &str) -> (StatusCode, Value) {
        let req = Request::post(format!(
            "http://{}/api/v3.1/tools/execute/{tool}",
            self.gateway.local_addr()
        ))
        .header("x-api-key", token(user))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"arguments":{}}"#)))
        .unwrap();
        self.request(req).await
    }

    async fn composio_hook(
        &self,
        id: &str,
        ts: u64,
        sig: Option<String>,
        body: &str,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(format!(
            "http://{}/webhooks/composio",
            self.gateway.local_addr()
        ))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string());
        if let Some(sig) = sig {
            req = req.header("webhook-signature", sig);
        }
        self.request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
    }
}

fn expired_event(id: &str, account: &str, user: &str, toolkit: &str) -> String {
    json!({
        "id": id, "timestamp": "2026-11-25T12:00:00.000Z",
        "type": "composio.connected_account.expired",
        "metadata": {"project_id": "pr_test", "org_id": "ok_test"},
        "data": {"id": account, "user_id": user, "status": "EXPIRED",
            "status_reason": "Permanent auth error during token refresh",
            "toolkit": {"slug": toolkit}, "is_disabled": false,
            "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-25T12:00:00Z"}
    })
    .to_string()
}

/// The gate's status lookups for (user, toolkit) that reached Composio.
fn lookups(sandbox: &Sandbox, user: &str, toolkit: &str) -> usize {
    sandbox
        .requests_to(LIST)
        .iter()
        .filter(|r| {
            r.query_param("user_ids").as_deref() == Some(user)
                && r.query_param("toolkit_slugs").as_deref() == Some(toolkit)
        })
        .count()
}

#[tokio::test]
async fn composio_expiry_webhook_is_verified_acted_on_at_once_and_only_once() {
    let (hook, hook_addr) = Hook::start(0).await;
    let dir = temp_dir();
    let gw = Running::start(
        Sandbox::with_demo_data(API_KEY),
        &job_toml(&dir.join("s.redb"), Some(hook_addr), ""),
    )
    .await;
    const TOOL: &str = "GITHUB_GET_THE_AUTHENTICATED_USER";
    // The gateway caches alice's ACTIVE github connection (for an hour, see the config).
    assert_eq!(gw.execute("alice", TOOL).await.0, StatusCode::OK);
    assert_eq!(gw.execute("alice", TOOL).await.0, StatusCode::OK);
    assert_eq!(lookups(&gw.sandbox, "alice", "github"), 1, "cached");

    let body = expired_event("msg_1", "ca_alice_github", "alice", "github");
    let secret = COMPOSIO_SECRET.as_bytes();
    let now = support::now();

    // Forged, unsigned, stale or tampered deliveries are refused and change nothing.
    let forged = inbound::sign(b"guess", "msg_1", now, body.as_bytes());
    let good = inbound::sign(secret, "msg_1", now, body.as_bytes());
    let stale = inbound::sign(secret, "msg_1", now - 301, body.as_bytes());
    let other = expired_event("msg_1", "ca_bob_github", "bob", "github");
    for (ts, sig, body) in [
        (now, Some(forged), body.as_str()),
        (now, None, body.as_str()),
        (now - 301, Some(stale), body.as_str()),
        (now, Some(good.clone()), other.as_str()),
        (now + 1, Some(good.clone()), body.as_str()),
    ] {
        let (status, err) = gw.composio_hook("msg_1", ts, sig, body).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{err}");
        assert_eq!(err["error"]["slug"], "webhook_signature_invalid");
    }
    assert_eq!(gw.execute("alice", TOOL).await.0, StatusCode::OK);
    assert_eq!(lookups(&gw.sandbox, "alice", "github"), 1, "still cached");

    // Composio expires the connection and says so; the genuine delivery (with a rotated-out
    // signature beside it) is accepted...
    assert!(gw.sandbox.set_account_status("ca_alice_github", "EXPIRED"));
    let executions = gw.sandbox.count("POST", "/api/v3.1/tools/execute");
    let both = format!("v1,bm90IGl0 {good}");
    let (status, ack) = gw
        .composio_hook("msg_1", now, Some(both.clone()), &body)
        .await;
    assert_eq!(
        (status, ack["status"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    // ...the cached answer is gone at once: the next call asks Composio again and is refused
    // by the gateway itself, without reaching the tool...
    let (status, err) = gw.execute("alice", TOOL).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["slug"], "connection_expired");
    assert_eq!(lookups(&gw.sandbox, "alice", "github"), 2);
    assert_eq!(
        gw.sandbox.count("POST", "/api/v3.1/tools/execute"),
        executions
    );
    // ...and the app hears about it.
    hook.wait_for(1).await;
    let events = hook.events();
    assert_eq!(events[0]["user_id"], "alice");
    assert_eq!(
        events[0]["toolkits"][0]["connected_account_id"],
        "ca_alice_github"
    );
    assert_eq!(events[0]["toolkits"][0]["status"], "EXPIRED");

    // A replay (even with a fresh, valid signature) is acknowledged and ignored.
    let (status, ack) = gw.composio_hook("msg_1", now, Some(both), &body).await;
    assert_eq!(
        (status, ack["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );
    let later = now + 5;
    let resigned = inbound::sign(secret, "msg_1", later, body.as_bytes());
    let (status, ack) = gw
        .composio_hook("msg_1", later, Some(resigned), &body)
        .await;
    assert_eq!(
        (status, ack["status"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    // Other event types are acknowledged and ignored; GET on the path is not the webhook.
    let trig = json!({"id": "msg_2", "type": "composio.trigger.message", "data": {}}).to_string();
    let sig = inbound::sign(secret, "msg_2", now, trig.as_bytes());
    let (status, ack) = gw.composio_hook("msg_2", now, Some(sig), &trig).await;
    assert_eq!(
        (status, ack["status"].as_str()),
        (StatusCode::OK, Some("ignored"))
    );
    let req = Request::builder()
        .method(Method::GET)
        .uri(format!(
            "http://{}/webhooks/composio",
            gw.gateway.local_addr()
        ))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(gw.request(req).await.0, StatusCode::UNAUTHORIZED);

    // The webhook made no project-wide listing: every listing is the gate's, for alice.
    for r in gw.sandbox.requests_to(LIST) {
        assert_eq!(r.query_param("user_ids").as_deref(), Some("alice"));
    }
    assert_eq!(hook.events().len(), 1, "one notification");
    gw.gateway.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn the_scheduled_scan_in_serve_drops_cached_answers_and_notifies() {
    let (hook, hook_addr) = Hook::start(0).await;
    let dir = temp_dir();
    let gw = Running::start(
        Sandbox::with_demo_data(API_KEY),
        &job_toml(&dir.join("s.redb"), Some(hook_addr), "every_secs = 1"),
    )
    .await;
    let told_about = |id: &str| {
        hook.events().iter().any(|e| {
            e["toolkits"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["connected_account_id"] == id)
        })
    };
    // The first pass runs at start and reports the demo data's broken connections.
    hook.wait_for(2).await;
    assert!(told_about("ca_alice_gmail") && told_about("ca_bob_slack"));

    // alice's ACTIVE slack connection is cached for an hour (see the config)...
    assert_eq!(
        gw.execute("alice", "SLACK_SEND_MESSAGE").await.0,
        StatusCode::OK
    );
    assert_eq!(lookups(&gw.sandbox, "alice", "slack"), 1);
    // ...Composio revokes it, and a later pass finds it, drops the cached answer (before it
    // notifies) and tells the app.
    assert!(gw.sandbox.set_account_status("ca_alice_slack", "REVOKED"));
    for _ in 0..500 {
        if told_about("ca_alice_slack") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        told_about("ca_alice_slack"),
        "the scheduled scan never reported it"
    );
    let executions = gw.sandbox.count("POST", "/api/v3.1/tools/execute");
    let (status, err) = gw.execute("alice", "SLACK_SEND_MESSAGE").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["slug"], "connection_expired");
    assert_eq!(
        lookups(&gw.sandbox, "alice", "slack"),
        2,
        "asked Composio again"
    );
    assert_eq!(
        gw.sandbox.count("POST", "/api/v3.1/tools/execute"),
        executions
    );
    gw.gateway.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn audit_job_config_is_validated() {
    let base = |job: &str| {
        let toml = config_toml("127.0.0.1:1".parse().unwrap(), job);
        Config::from_toml(&toml).and_then(|c| c.validate().map(|()| c))
    };
    let ok = base("[audit_job]\n").unwrap();
    let job = ok.audit_job.unwrap();
    assert_eq!(job.renotify_secs, 86_400);
    assert_eq!(job.composio_webhook_path, "/webhooks/composio");
    assert_eq!(job.composio_webhook_tolerance_secs, 300);
    assert_eq!(job.every_secs, 0);
    for (bad, key) in [
        (
            "webhook_url = \"http://example.com/x\"\nwebhook_secret_env = \"S\"",
            "audit_job.webhook_url",
        ),
        (
            "webhook_url = \"https://example.com/x\"",
            "audit_job.webhook_secret_env",
        ),
        ("concurrency = 0", "audit_job.concurrency"),
        (
            "composio_webhook_path = \"/api/v3/hook\"",
            "audit_job.composio_webhook_path",
        ),
        (
            "composio_webhook_path = \"hook\"",
            "audit_job.composio_webhook_path",
        ),
        (
            "composio_webhook_tolerance_secs = 0",
            "audit_job.composio_webhook_tolerance_secs",
        ),
        (
            "retry_base_ms = 10\nretry_max_ms = 5",
            "audit_job.retry_max_ms",
        ),
    ] {
        let err = base(&format!("[audit_job]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
    assert!(base(
        "[audit_job]\nwebhook_url = \"https://app.example/hooks\"\nwebhook_secret_env = \"S\"\n"
    )
    .is_ok());
    assert!(base(
        "[audit_job]\nwebhook_url = \"http://127.0.0.1:9/h\"\nwebhook_secret_env = \"S\"\n"
    )
    .is_ok());
    assert!(base("[audit_job]\nnot_a_key = 1\n").is_err());
}

#[tokio::test]
async fn missing_secrets_are_startup_errors() {
    let sandbox = Sandbox::new(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = temp_dir();
    let job = format!(
        "[audit_job]\nstate_path = \"{}\"\ncomposio_webhook_secret_env = \"NOPE\"\n",
        dir.join("s.redb").display()
    );
    let config = Config::from_toml(&config_toml(upstream, &job)).unwrap();
    let err = Gateway::builder(config)
        .env(env())
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains("audit_job.composio_webhook_secret_env"),
        "{err}"
    );
    let job = format!(
        "[audit_job]\nstate_path = \"{}/missing/dir/s.redb\"\n",
        dir.display()
    );
    let config = Config::from_toml(&config_toml(upstream, &job)).unwrap();
    let err = Gateway::builder(config)
        .env(env())
        .build()
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("audit_job.state_path"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

// --- revocation on the response path (issue 15) ---

#[tokio::test]
async fn a_dead_connection_in_an_answer_refuses_the_next_call_and_notifies_once() {
    let (hook, hook_addr) = Hook::start(0).await;
    let dir = temp_dir();
    let gw = Running::start(
        Sandbox::with_demo_data(API_KEY),
        &job_toml(&dir.join("s.redb"), Some(hook_addr), ""),
    )
    .await;
    const TOOL: &str = "GITHUB_GET_THE_AUTHENTICATED_USER";
    assert_eq!(gw.execute("alice", TOOL).await.0, StatusCode::OK);

    // The provider revokes alice's token; Composio still lists the account ACTIVE and relays
    // the provider's 401 as a failed tool result. That answer reaches alice unchanged...
    assert!(gw.sandbox.set_revoked_at_provider("ca_alice_github", true));
    let (status, body) = gw.execute("alice", TOOL).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["successful"], false);
    // ... and her next call is refused before Composio is asked anything.
    let seen = gw.sandbox.requests().len();
    for _ in 0..2 {
        let (status, body) = gw.execute("alice", TOOL).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["slug"], "connection_expired");
        assert_eq!(body["error"]["code"], 1803);
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(msg.contains("reconnect"), "{msg}");
    }
    assert_eq!(
        gw.sandbox.requests().len(),
        seen,
        "nothing reached Composio"
    );
    // One signed notification, for the account that broke.
    hook.wait_for(1).await;
    let events = hook.events();
    assert_eq!(events[0]["user_id"], "alice");
    assert_eq!(
        events[0]["toolkits"][0]["connected_account_id"],
        "ca_alice_github"
    );
    assert_eq!(events[0]["toolkits"][0]["status"], "REVOKED");
    // Bob's own github connection is untouched.
    assert_eq!(gw.execute("bob", TOOL).await.0, StatusCode::OK);

    // Composio's own connected-account error (the gateway's cache still says ACTIVE): the
    // same treatment.
    assert!(gw.sandbox.set_account_status("ca_bob_github", "EXPIRED"));
    let (status, body) = gw.execute("bob", TOOL).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], 1803, "Composio's own answer");
    let seen = gw.sandbox.requests().len();
    let (status, body) = gw.execute("bob", TOOL).await;
    assert_eq!(body["error"]["slug"], "connection_expired", "{body}");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        gw.sandbox.requests().len(),
        seen,
        "nothing reached Composio"
    );
    hook.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = hook.events();
    assert_eq!(events.len(), 2, "one notification per broken connection");
    assert_eq!(events[1]["user_id"], "bob");
    std::fs::remove_dir_all(&dir).unwrap();
}
