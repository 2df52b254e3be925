//! End-to-end through the real Composio SDKs (issue 4; issue 2's "an agent service that points
//! its Composio SDK at the gateway with the end user's JWT as its API key can execute tools").
//!
//! `tests/sdk/setup.sh` installs Python `composio` 0.30.0, `composio-core` 0.7.22 and JS
//! `@composio/core` 0.19.0 (once; a no-op afterwards). Each run starts the sandbox Composio and
//! the gateway in-process on 127.0.0.1:0 and runs one driver of `tests/sdk/` as a subprocess,
//! unchanged SDK code with only the base URL and the API key (the user's JWT) changed. It then
//! checks the driver's verdict and specific SDK outcomes (results carry the subject's data,
//! refusals surface as readable SDK errors), and walks every request that reached the sandbox:
//! only the real key, no JWT, and every identity field equal to the JWT's subject.
//!
//! The suite never skips: if the SDKs cannot be installed, every test fails and says why.

#![allow(unreachable_pub)]
#![allow(clippy::unwrap_used)]

#[path = "gateway/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use entitygate::sandbox::Recorded;
use serde_json::Value;
use support::*;

/// Longest a driver may run (they take a few seconds; the old SDK's first run builds a cache).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// Body keys that name a user, at any depth (snake and camel case, v1/v2 and v3 spellings).
const BODY_IDENTITY_KEYS: &[&str] = &[
    "user_id",
    "userId",
    "user_ids",
    "userIds",
    "entity_id",
    "entityId",
    "entity_ids",
    "entityIds",
    "user_uuid",
    "userUuid",
    "clientUniqueUserId",
];

/// Query parameters that name a user (values may be comma-separated lists).
const QUERY_IDENTITY_KEYS: &[&str] = &[
    "user_id",
    "user_ids",
    "user_ids[]",
    "userId",
    "userIds",
    "user_uuid",
    "userUuid",
    "entity_id",
    "entityId",
    "entity_ids",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/sdk/setup.sh` once per test binary; every test fails loudly if it fails.
fn setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let outcome = SETUP.get_or_init(|| {
        let started = Instant::now();
        let out = std::process::Command::new("bash")
            .arg(root().join("tests/sdk/setup.sh"))
            .current_dir(root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run bash tests/sdk/setup.sh: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprint!("{text}");
        eprintln!("sdk setup: {:.1}s", started.elapsed().as_secs_f64());
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("exit {}:\n{text}", out.status))
        }
    });
    if let Err(e) = outcome {
        panic!(
            "installing the Composio SDKs failed (bash tests/sdk/setup.sh needs python3 with \
             venv, node 20+, npm and the package registries the first time); the SDK suite does \
             not skip: {e}"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    /// `composio` 0.30.0, API v3.1.
    Py,
    /// `composio-core` 0.7.22, API v1/v2.
    PyOld,
    /// `@composio/core` 0.19.0, API v3.1.
    Js,
}

impl Sdk {
    fn name(self) -> &'static str {
        match self {
            Sdk::Py => "composio 0.30 (py_current.py)",
            Sdk::PyOld => "composio-core 0.7 (py_old.py)",
            Sdk::Js => "@composio/core 0.19 (js_current.mjs)",
        }
    }

    fn command(self) -> (PathBuf, PathBuf) {
        let r = root();
        let sdk = r.join("tests/sdk");
        match self {
            Sdk::Py => (r.join(".venv-sdk/bin/python"), sdk.join("py_current.py")),
            Sdk::PyOld => (r.join(".venv-sdk-old/bin/python"), sdk.join("py_old.py")),
            Sdk::Js => (PathBuf::from("node"), sdk.join("js_current.mjs")),
        }
    }
}

/// One driver run: its JSON lines (steps, then the summary).
struct Run {
    label: String,
    lines: Vec<Value>,
}

impl Run {
    fn step(&self, name: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["step"] == name)
            .unwrap_or_else(|| panic!("{}: no step {name:?} in the driver output", self.label))
    }

    /// The step failed inside the SDK; returns the driver's error record.
    fn error(&self, name: &str) -> &Value {
        let s = self.step(name);
        assert_eq!(s["outcome"], "error", "{}: {name}: {s}", self.label);
        &s["error"]
    }

    /// The step succeeded; returns the SDK's result.
    fn result(&self, name: &str) -> &Value {
        let s = self.step(name);
        assert_eq!(s["outcome"], "success", "{}: {name}: {s}", self.label);
        &s["result"]
    }

    /// The step raised `ty` whose message contains `text` (what an agent developer reads).
    fn assert_error(&self, name: &str, ty: &str, text: &str) -> &Value {
        let e = self.error(name);
        assert_eq!(e["type"], ty, "{}: {name}: {e}", self.label);
        assert!(
            e["message"].as_str().unwrap_or("").contains(text),
            "{}: {name}: message lacks {text:?}: {e}",
            self.label
        );
        e
    }

    fn assert_api_code(&self, name: &str, code: i64) {
        let e = self.error(name);
        assert_eq!(e["api_code"], code, "{}: {name}: {e}", self.label);
    }
}

/// Where and as whom a driver runs.
struct Target<'a> {
    /// The gateway's base URL, without `/api`.
    base: String,
    /// The JWT used as the API key.
    token: &'a str,
    /// The user id the SDK is told to use.
    user: &'a str,
    /// The JWT's subject: what every call must run as.
    subject: &'a str,
    /// Extra environment (CA bundles for TLS).
    env: Vec<(&'static str, String)>,
}

/// A fresh, empty directory for one run's HOME and caches.
fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "entitygate-sdk-e2e-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join(".composio")).unwrap();
    // composio-core 0.7: no Sentry DSN (and no api_key here: it would override the env's).
    std::fs::write(
        dir.join(".composio/user_data.json"),
        r#"{"sentry": {"dsn": ""}}"#,
    )
    .unwrap();
    dir
}

/// Runs `sdk`'s driver against `t` with the offline recipe of `tests/sdk/README.md`; panics
/// with its output unless it exits successfully with a passing summary.
async fn drive(sdk: Sdk, t: &Target<'_>) -> Run {
    setup();
    let label = format!("{} user={} token-subject={}", sdk.name(), t.user, t.subject);
    let (program, script) = sdk.command();
    let home = scratch_dir();
    let base = match sdk {
        Sdk::PyOld => format!("{}/api", t.base),
        Sdk::Py | Sdk::Js => t.base.clone(),
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg(&script)
        .current_dir(root().join("tests/sdk"))
        // Nothing from the developer's shell (COMPOSIO_*, proxies, a real HOME) leaks in.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("COMPOSIO_CACHE_DIR", home.join(".composio-cache"))
        .env("COMPOSIO_BASE_URL", &base)
        .env("COMPOSIO_API_KEY", t.token)
        .env("USER_ID", t.user)
        .env("USER", t.user)
        .env("EXPECT_SUBJECT", t.subject)
        .env("COMPOSIO_DISABLE_SENTRY", "true")
        .env("COMPOSIO_DISABLE_VERSION_CHECK", "true")
        .env("COMPOSIO_LOGGING_LEVEL", "warning")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NODE_NO_WARNINGS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in &t.env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: cannot start {}: {e}", program.display()));
    let out = match tokio::time::timeout(DRIVER_TIMEOUT, child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => panic!("{label}: driver still running after {DRIVER_TIMEOUT:?} (killed)"),
    };
    let _ = std::fs::remove_dir_all(&home);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .filter(Value::is_object)
        .collect();
    let summary = lines.iter().rev().find(|l| l["summary"] == true);
    let passed = out.status.success() && summary.is_some_and(|s| s["ok"] == true);
    eprintln!(
        "{label}: {} steps, {} in {:.1}s",
        lines.len().saturating_sub(1),
        if passed { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    assert!(
        passed,
        "{label}: driver failed ({}); summary: {}\nfailing steps:\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status,
        summary.map_or("none".into(), Value::to_string),
        lines
            .iter()
            .filter(|l| l["ok"] == false)
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(summary.unwrap()["subject"], t.subject, "{label}");
    Run { label, lines }
}

/// Every identity value in `v` (at any depth), with the key that carried it.
fn body_identities(v: &Value, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                if BODY_IDENTITY_KEYS.contains(&k.as_str()) {
                    out.push((k.clone(), val.clone()));
                }
                body_identities(val, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| body_identities(i, out)),
        _ => {}
    }
}

fn describe(r: &Recorded) -> String {
    format!(
        "{} {}{}",
        r.method,
        r.path,
        r.query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    )
}

/// Walks every request that reached the sandbox: only the real key, no JWT anywhere, every
/// identity field exactly `subject`, and none of `foreign` anywhere. Returns how many identity
/// fields were checked.
fn assert_pinned(h: &Harness, label: &str, subject: &str, token: &str, foreign: &[&str]) -> usize {
    let seen = h.sandbox.requests();
    assert!(!seen.is_empty(), "{label}: nothing reached the sandbox");
    let mut checked = 0;
    for r in &seen {
        let what = describe(r);
        assert_only_real_key(r);
        for (name, value) in &r.headers {
            assert!(
                !value.contains(token) && !value.contains("eyJ"),
                "{label}: a JWT reached Composio in header {name} of {what}"
            );
        }
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains(token) && !what.contains(token),
            "{label}: the JWT reached Composio in {what}"
        );
        for (k, v) in r.query_pairs() {
            if QUERY_IDENTITY_KEYS.contains(&k.as_str()) {
                for one in v.split(',') {
                    assert_eq!(one, subject, "{label}: query {k}={v} on {what}");
                    checked += 1;
                }
            }
        }
        if let Some(json) = r.json() {
            let mut ids = Vec::new();
            body_identities(&json, &mut ids);
            for (k, v) in ids {
                let values: Vec<&Value> = match &v {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                assert!(!values.is_empty(), "{label}: empty {k} on {what}: {json}");
                for one in values {
                    assert_eq!(
                        one.as_str(),
                        Some(subject),
                        "{label}: body {k}={v} on {what}: {json}"
                    );
                    checked += 1;
                }
            }
        }
        // The forged user's name appears nowhere, except as the account id in the gateway's
        // own ownership lookup (`GET connected_accounts?user_ids=<subject>&
        // connected_account_ids=ca_bob_github`: "is this one of the subject's?").
        let query: Vec<String> = r
            .query_pairs()
            .into_iter()
            .filter(|(k, _)| !(r.method == "GET" && k == "connected_account_ids"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let headers: Vec<String> = r.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        for f in foreign {
            assert!(
                !r.path.contains(f)
                    && !query.iter().any(|q| q.contains(f))
                    && !body.contains(f)
                    && !headers.iter().any(|h| h.contains(f)),
                "{label}: {f:?} reached Composio in {what}\n{headers:?}\n{body}"
            );
        }
    }
    eprintln!(
        "{label}: {} upstream requests, {checked} identity fields, all {subject:?}",
        seen.len()
    );
    checked
}

/// Prints the gateway routes the SDK's own requests took (those the gateway forwarded; its
/// own status lookups carry no user-agent), for the README's support matrix.
fn print_routes(h: &Harness, label: &str) {
    let mut routes: Vec<String> = h
        .sandbox
        .requests()
        .iter()
        .filter(|r| r.header("user-agent").is_some())
        .map(|r| {
            let method = http::Method::from_bytes(r.method.as_bytes()).unwrap();
            match entitygate::routes::classify(&method, &r.path) {
                Ok(m) => format!("{} {}", r.method, m.route.pattern),
                Err(_) => format!("{} {} (not a route!)", r.method, r.path),
            }
        })
        .collect();
    routes.sort();
    routes.dedup();
    eprintln!("{label}: routes forwarded:\n  {}", routes.join("\n  "));
}

/// `POST path` reached the sandbox with body field `field` = `subject`.
fn assert_reached(h: &Harness, label: &str, path: &str, field: &str, subject: &str) {
    let hits: Vec<Recorded> = h
        .sandbox
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .collect();
    assert!(
        !hits.is_empty(),
        "{label}: POST {path} never reached Composio"
    );
    for r in hits {
        assert_eq!(
            r.json().unwrap()[field],
            subject,
            "{label}: POST {path} {field}"
        );
    }
}

/// Runs one SDK as `user` with `subject`'s token against a fresh gateway and checks the wire.
async fn pinned_run(sdk: Sdk, user: &str, subject: &str) -> Run {
    let h = Harness::start().await;
    let token = token(subject);
    let run = drive(
        sdk,
        &Target {
            base: format!("http://127.0.0.1:{}", h.addr.port()),
            token: &token,
            user,
            subject,
            env: Vec::new(),
        },
    )
    .await;
    let foreign: Vec<&str> = if user == subject { vec![] } else { vec![user] };
    let checked = assert_pinned(&h, &run.label, subject, &token, &foreign);
    print_routes(&h, &run.label);
    assert!(
        checked >= 5,
        "{}: only {checked} identity fields reached Composio",
        run.label
    );
    match sdk {
        Sdk::Py | Sdk::Js => {
            assert_reached(
                &h,
                &run.label,
                "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
                "user_id",
                subject,
            );
            assert_reached(
                &h,
                &run.label,
                "/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE",
                "user_id",
                subject,
            );
            assert_reached(
                &h,
                &run.label,
                "/api/v3.1/connected_accounts/link",
                "user_id",
                subject,
            );
            assert_reached(
                &h,
                &run.label,
                "/api/v3.1/tool_router/session",
                "user_id",
                subject,
            );
        }
        Sdk::PyOld => {
            assert_reached(
                &h,
                &run.label,
                "/api/v2/actions/HACKERNEWS_GET_FRONTPAGE/execute",
                "entityId",
                subject,
            );
            assert_reached(
                &h,
                &run.label,
                "/api/v1/connectedAccounts",
                "entityId",
                subject,
            );
            if user == subject {
                assert_reached(
                    &h,
                    &run.label,
                    "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
                    "entityId",
                    subject,
                );
            }
        }
    }
    h.shutdown().await;
    run
}

/// What the current SDKs (py 0.30, js 0.19) show, for `subject`'s demo data.
fn check_current(sdk: Sdk, run: &Run, user: &str, subject: &str) {
    let py = sdk == Sdk::Py;
    // Executions run as the subject, through the subject's own account.
    let data = &run.result("tools.execute GITHUB_CREATE_ISSUE")["data"];
    assert_eq!(data["user_id"], subject, "{}", run.label);
    assert_eq!(
        data["connected_account_id"],
        format!("ca_{subject}_github"),
        "{}",
        run.label
    );
    let no_auth = &run.result("tools.execute HACKERNEWS_GET_FRONTPAGE (no_auth)")["data"];
    assert_eq!(no_auth["user_id"], subject, "{}", run.label);

    // Gmail: alice's account expired, bob's is disabled. The gateway refuses with code 1803,
    // which each SDK surfaces readably.
    let gmail = "tools.execute GMAIL_SEND_EMAIL";
    let expired = "Your Gmail connection has expired. Please reconnect";
    if py {
        run.assert_error(gmail, "BadRequestError", expired);
        run.assert_api_code(gmail, 1803);
    } else {
        run.assert_error(gmail, "ComposioConnectedAccountNotFoundError", expired);
    }

    // Slack: alice's is ACTIVE, bob's FAILED.
    let slack = "tools.execute SLACK_SEND_MESSAGE";
    if subject == "alice" {
        assert_eq!(
            run.result(slack)["data"]["connected_account_id"],
            "ca_alice_slack",
            "{}",
            run.label
        );
    } else {
        let ty = if py {
            "BadRequestError"
        } else {
            "ComposioConnectedAccountNotFoundError"
        };
        run.assert_error(slack, ty, "Slack connection");
    }

    // Auth-config administration is refused by design, readably.
    let authorize = "toolkits.authorize(github)";
    if py {
        run.assert_error(authorize, "PermissionDeniedError", "not allowed");
        run.assert_api_code(authorize, 9122);
    } else {
        run.assert_error(authorize, "Error", "route_not_allowed");
    }

    // Listings only ever hold the subject's accounts.
    let listed = &run.result(if py {
        "connected_accounts.list(user_ids=[USER])"
    } else {
        "connectedAccounts.list({userIds})"
    })["items"];
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&format!("ca_{subject}_github").as_str()),
        "{}: {ids:?}",
        run.label
    );
    let other = if subject == "alice" { "bob" } else { "alice" };
    assert!(
        !ids.iter().any(|i| i.contains(other)),
        "{}: {ids:?}",
        run.label
    );

    if user != subject {
        // Naming the forged user's own account is refused before Composio.
        let (name, ty) = if py {
            (
                format!("tools.execute with connected_account_id=ca_{user}_github"),
                "PermissionDeniedError",
            )
        } else {
            (
                format!("tools.execute with connectedAccountId=ca_{user}_github"),
                "ComposioToolExecutionError",
            )
        };
        run.assert_api_code(&name, 1812);
        assert_eq!(run.error(&name)["type"], ty, "{}", run.label);
    }
}

/// What the old SDK (composio-core 0.7) shows.
fn check_old(run: &Run, user: &str, subject: &str) {
    let forged = user != subject;
    let noauth = &run.result("execute_action(HACKERNEWS_GET_FRONTPAGE) (no_auth)")["data"];
    assert_eq!(noauth["user_id"], subject, "{}", run.label);
    let accounts = run.result("get_entity(USER).get_connections()");
    for a in accounts.as_array().unwrap() {
        assert_eq!(a["clientUniqueUserId"], subject, "{}", run.label);
    }
    let github = "ComposioToolSet(entity_id=USER).execute_action(GITHUB_CREATE_AN_ISSUE)";
    let gmail = format!("execute_action(GMAIL_SEND_EMAIL, connected_account_id=ca_{user}_gmail)");
    if forged {
        // The SDK checks client-side that the entity (bob) has a github account among those
        // listed, and the gateway only lists alice's: it refuses before any execution.
        run.assert_error(github, "ConnectedAccountNotFoundError", "GITHUB");
        run.assert_error(&gmail, "ConnectedAccountNotFoundError", "GMAIL");
    } else {
        let data = &run.result(github)["data"];
        assert_eq!(data["user_id"], subject, "{}", run.label);
        assert_eq!(
            data["connected_account_id"],
            format!("ca_{subject}_github"),
            "{}",
            run.label
        );
        if subject == "alice" {
            // The gateway's 1803 surfaces as HTTPError carrying Composio's JSON envelope.
            run.assert_error(&gmail, "HTTPError", "Your Gmail connection has expired");
            run.assert_api_code(&gmail, 1803);
        } else {
            // bob's gmail account is disabled: not listed, so the SDK refuses by itself.
            run.assert_error(&gmail, "ConnectedAccountNotFoundError", "GMAIL");
        }
    }
    // initiate_connection creates an integration first (POST /v1/integrations): refused by
    // design, readably; connected_accounts.initiate with an existing integration works.
    let initiate = "entity.initiate_connection(github)";
    run.assert_error(initiate, "HTTPError", "route_not_allowed");
    run.assert_api_code(initiate, 9122);
    run.result("connected_accounts.initiate(integration_id=ac_github, entity_id=USER)");
}

async fn suite(sdk: Sdk) {
    for (user, subject) in [("alice", "alice"), ("bob", "bob"), ("bob", "alice")] {
        let run = pinned_run(sdk, user, subject).await;
        match sdk {
            Sdk::Py | Sdk::Js => check_current(sdk, &run, user, subject),
            Sdk::PyOld => check_old(&run, user, subject),
        }
    }
}

/// `composio` 0.30 for alice, bob, and alice's token with the SDK told to act for bob.
#[tokio::test]
async fn python_sdk_current_is_pinned_to_the_subject() {
    suite(Sdk::Py).await;
}

/// `composio-core` 0.7 (the old `ComposioToolSet`, base URL with `/api`), same three runs.
#[tokio::test]
async fn python_sdk_old_is_pinned_to_the_subject() {
    suite(Sdk::PyOld).await;
}

/// `@composio/core` 0.19, same three runs.
#[tokio::test]
async fn js_sdk_is_pinned_to_the_subject() {
    suite(Sdk::Js).await;
}

/// A non-loopback deployment: the SDKs refuse plain http to anything but loopback, so the
/// gateway serves TLS (the test-only dev certificate, for `localhost`) and the SDKs trust its
/// CA through the environment: httpx (composio 0.30) honours `SSL_CERT_FILE`, node
/// `NODE_EXTRA_CA_CERTS`.
#[tokio::test]
async fn sdks_work_over_tls() {
    let certs = root().join("certs/dev");
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        certs.join("server.crt").display(),
        certs.join("server.key").display()
    );
    let ca = certs.join("ca.crt").display().to_string();
    for sdk in [Sdk::Py, Sdk::Js] {
        let h = Harness::with_config(&extra).await;
        let token = token("alice");
        let run = drive(
            sdk,
            &Target {
                base: format!("https://localhost:{}", h.addr.port()),
                token: &token,
                user: "alice",
                subject: "alice",
                env: vec![
                    ("SSL_CERT_FILE", ca.clone()),
                    ("REQUESTS_CA_BUNDLE", ca.clone()),
                    ("NODE_EXTRA_CA_CERTS", ca.clone()),
                ],
            },
        )
        .await;
        check_current(sdk, &run, "alice", "alice");
        assert_pinned(&h, &run.label, "alice", &token, &[]);
        h.shutdown().await;
    }
}

/// Sanity of the harness itself: the drivers' paths exist (a renamed script must fail here,
/// not silently run nothing).
#[test]
fn drivers_exist() {
    for sdk in [Sdk::Py, Sdk::PyOld, Sdk::Js] {
        let (_, script) = sdk.command();
        assert!(Path::new(&script).is_file(), "{}", script.display());
    }
}

/// The old SDK (urllib3) sends a POST's body after its headers and reuses connections. A
/// refusal answered before the body arrived (here: a route the gateway does not know) makes
/// hyper close the connection, so the answer must say `Connection: close`, or the SDK's next
/// request on that connection fails with "Remote end closed connection without response".
#[tokio::test]
async fn refusal_before_the_body_says_connection_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start().await;
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/integrations HTTP/1.1\r\nhost: localhost\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ncontent-length: 2\r\n\r\n",
        token("alice")
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 403"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    h.shutdown().await;
}
