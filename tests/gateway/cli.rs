//! The `entitygate serve` binary: SIGHUP reloads the file, SIGTERM drains in-flight requests.

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
