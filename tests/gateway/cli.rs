//! The `entitygate` binary: SIGHUP reloads the file, SIGTERM drains in-flight requests,
//! `check-config --live` reports a key Composio refuses for something the file needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use entitygate::sandbox::{Fault, Sandbox};
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(upstream: std::net::SocketAddr, port: u16, admin: u16, mismatch: &str) -> String {
    format!(
        "listen = \"127.0.0.1:{port}\"\n[upstream]\nbase_url = \"http://{upstream}\"\n[auth]\nissuer = \"{ISSUER}\"\naudience = \"{AUDIENCE}\"\n[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"JWT_SECRET\"\n[policy]\non_identity_mismatch = \"{mismatch}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n[audit]\npath = \"audit.jsonl\"\n[limits]\nshutdown_grace_secs = 10\n"
    )
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

async fn execute(port: u16, forged: bool) -> Option<StatusCode> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let body = if forged {
        json!({"user_id": "bob"})
    } else {
        json!({})
    };
    let req = Request::post(format!(
        "http://127.0.0.1:{port}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"
    ))
    .header("x-api-key", token("alice"))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(body.to_string())))
    .unwrap();
    client.request(req).await.ok().map(|r| r.status())
}

#[tokio::test]
async fn serve_reloads_on_sighup_and_drains_on_sigterm() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("eg-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("entitygate.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(&path, config(upstream, port, admin, "rewrite")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("COMPOSIO_API_KEY", API_KEY)
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut child = Killed(child);

    let mut up = None;
    for _ in 0..100 {
        up = execute(port, true).await;
        if up.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        up,
        Some(StatusCode::OK),
        "the gateway came up and rewrote the forged id"
    );

    // SIGHUP: the file now says reject.
    std::fs::write(&path, config(upstream, port, admin, "reject")).unwrap();
    signal(pid, "-HUP");
    let mut after = None;
    for _ in 0..50 {
        after = execute(port, true).await;
        if after == Some(StatusCode::FORBIDDEN) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        after,
        Some(StatusCode::FORBIDDEN),
        "SIGHUP reloaded the policy"
    );
    // The audit file path was relative to the config file.
    assert!(dir.join("audit.jsonl").exists());

    // SIGTERM with a request in flight: it completes, then the process exits cleanly.
    sandbox.set_fault(Fault::Delay(Duration::from_millis(700)));
    let in_flight = tokio::spawn(execute(port, false));
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(pid, "-TERM");
    assert_eq!(
        in_flight.await.unwrap(),
        Some(StatusCode::OK),
        "in-flight request finished"
    );
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.0.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "clean exit after SIGTERM: {exited:?}"
    );
    assert!(execute(port, false).await.is_none(), "no longer listening");
    sandbox.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `entitygate demo --tls-dir certs/dev` started outside the checkout finds the dev certificate,
/// prints a banner whose commands run as printed (absolute CA path for curl and Python, the
/// demo's auth config ids, why the SDK's version check is skipped), and shows what reached the
/// sandbox: on its request-log endpoint, and with `--verbose` in the log.
#[tokio::test]
async fn demo_runs_from_any_directory_and_shows_what_reached_the_sandbox() {
    use std::io::{BufRead, Read};
    let dir = std::env::temp_dir().join(format!("eg-demo-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_entitygate"))
            .args(["demo", "--listen", "127.0.0.1:0", "--tls-dir", "certs/dev"])
            .args(["--for-secs", "60", "--verbose"])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("Ctrl-C stops the demo") {
                break;
            }
        }
        text
    });
    let banner = tokio::time::timeout(Duration::from_secs(60), banner)
        .await
        .expect("the demo printed its banner")
        .unwrap();
    let field = |prefix: &str| -> String {
        let line = banner
            .lines()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {banner}"));
        line[line.find(prefix).unwrap() + prefix.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let gateway = field("gateway ");
    let sandbox = field("sandbox Composio ");
    let alice = field("export ALICE_TOKEN=");
    assert!(gateway.starts_with("https://localhost:"), "{banner}");
    let ca = PathBuf::from(field("SSL_CERT_FILE="));
    assert!(ca.is_absolute() && ca.is_file(), "{}", ca.display());
    assert!(banner.contains(&format!("--cacert {}", ca.display())));
    assert!(
        banner.contains("ac_github") && banner.contains("ac_gmail"),
        "{banner}"
    );
    assert!(banner.contains("dangerously_skip_version_check: composio 0.30"));

    // Alice's forged request, over TLS with the printed CA.
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::client_tls())
        .https_only()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(https);
    let req = Request::post(format!(
        "{gateway}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"
    ))
    .header("x-api-key", &alice)
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from(
        json!({"user_id": "bob", "arguments": {"title": "hi"}}).to_string(),
    )))
    .unwrap();
    assert_eq!(client.request(req).await.unwrap().status(), StatusCode::OK);

    // What reached the sandbox: alice, with the project key (never shown).
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let log_url = format!("{sandbox}{}", entitygate::sandbox::REQUEST_LOG_PATH);
    assert!(banner.contains(&format!("curl -s {log_url}")), "{banner}");
    let resp = plain.get(log_url.parse().unwrap()).await.unwrap();
    let text = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(
        !text.contains("demo_project_key_"),
        "the key is never shown"
    );
    let log: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exec = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["method"] == "POST")
        .expect("the execution reached the sandbox");
    assert_eq!(exec["path"], "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE");
    assert_eq!(exec["body"]["user_id"], "alice");
    assert_eq!(exec["project_key"], true);

    signal(child.0.id(), "-TERM");
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("reached the sandbox"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check-config --live` against a sandbox whose key is scoped: the status says whether the
/// key can do what the file needs, and the report names the refused permission.
#[tokio::test]
async fn check_config_live_reports_a_scoped_key() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("eg-cli-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("entitygate.toml");
    std::fs::write(
        &path,
        config(upstream, free_port(), free_port(), "rewrite").replace(
            "[audit]\npath = \"audit.jsonl\"\n",
            "[audit_job]\nevery_secs = 3600\nstate_path = \"audit-job.redb\"\n",
        ),
    )
    .unwrap();
    // tokio's Command: the sandbox answers on this test's own runtime meanwhile.
    let run = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
            .args(["check-config", "--live", "--config"])
            .arg(&path)
            .env("COMPOSIO_API_KEY", API_KEY)
            .env("JWT_SECRET", SECRET)
            .output()
    };

    let full = run().await.unwrap();
    let out = String::from_utf8_lossy(&full.stdout).into_owned();
    assert_eq!(full.status.code(), Some(0), "{out}");
    assert!(out.contains("live: Connected accounts: read: ok"), "{out}");
    assert!(out.contains("not probed"), "{out}");

    // A key without "Connected accounts": the gateway could not gate, nor run the audit job.
    sandbox.set_key_refused_for(API_KEY, &["/api/v3.1/connected_accounts"]);
    let scoped = run().await.unwrap();
    let out = String::from_utf8_lossy(&scoped.stdout).into_owned();
    assert_eq!(scoped.status.code(), Some(64), "{out}");
    let refused: Vec<&str> = out.lines().filter(|l| l.contains("REFUSED")).collect();
    assert_eq!(refused.len(), 2, "{out}");
    assert!(
        refused
            .iter()
            .all(|l| l.contains("Connected accounts: read")),
        "{out}"
    );
    assert!(refused.iter().any(|l| l.contains("audit job")), "{out}");
    // Only reads reached Composio.
    assert!(sandbox.requests().iter().all(|r| r.method == "GET"));
    sandbox.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
