//! The admin listener's authentication and the console's sessions over real sockets (issue
//! 25): the live stream ends with its session, failed admin authentications are audited and
//! slowed per source without locking the right token out, and the console's explain page
//! consults the running kill switch as `POST /explain` does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use entitygate::sandbox::Sandbox;
use entitygate::{Config, Gateway, RunningGateway};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::console_http::*;
use crate::support::*;

struct World {
    _sandbox: Sandbox,
    gateway: RunningGateway,
    admin: SocketAddr,
    proxy: SocketAddr,
    dir: PathBuf,
    /// `[admin] token_file`: written again to rotate the admin token.
    token_file: PathBuf,
    audit: PathBuf,
}

/// A gateway started from a file (as `POST /explain` and the console's explain need), its
/// admin token in `token_file`, the console on.
async fn start() -> World {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.expect("sandbox starts");
    let dir = std::env::temp_dir().join(format!("eg-admin-console-{}", uuid_like()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).expect("token written");
    let audit = dir.join("audit.jsonl");
    let extra = format!(
        "[audit]\npath = {:?}\n[admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = {:?}\n",
        audit.display().to_string(),
        token_file.display().to_string(),
    );
    let path = dir.join("entitygate.toml");
    std::fs::write(&path, config_toml(upstream, &extra)).expect("config written");
    let gateway = Gateway::builder(Config::load(&path).expect("config loads"))
        .config_path(&path)
        .env(env())
        .build()
        .await
        .expect("gateway builds")
        .spawn("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("binds");
    World {
        _sandbox: sandbox,
        admin: gateway.admin_addr().expect("an admin listener"),
        proxy: gateway.local_addr(),
        gateway,
        dir,
        token_file,
        audit,
    }
}

impl World {
    async fn stop(self) {
        self.gateway.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// One proxied call as `user`: a decision in the console's feed naming them.
    async fn decision(&self, user: &str) {
        let call = format!(
            "GET /api/v3.1/toolkits HTTP/1.1\r\nHost: {}\r\nx-api-key: {}\r\nConnection: close\r\n\r\n",
            self.proxy,
            token(user)
        );
        assert!(status(&raw(self.proxy, &call).await) > 0);
    }

    /// The audit file's `event` lines of `kind`, once at least `n` are there.
    async fn events(&self, kind: &str, n: usize) -> Vec<Value> {
        let mut events = Vec::new();
        for _ in 0..100 {
            let text = std::fs::read_to_string(&self.audit).unwrap_or_default();
            events = text
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["event"] == kind)
                .collect();
            if events.len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        events
    }
}

/// An open `GET /ui/live/events` and what it has sent so far.
struct Stream {
    socket: TcpStream,
    seen: String,
}

impl Stream {
    async fn open(addr: SocketAddr, session: &str) -> Self {
        let mut socket = TcpStream::connect(addr).await.expect("connects");
        let request = get(addr, "/ui/live/events", Some(session), None);
        socket.write_all(request.as_bytes()).await.expect("writes");
        let mut s = Self {
            socket,
            seen: String::new(),
        };
        s.until("\r\n\r\n").await;
        assert_eq!(status(&s.seen), 200, "{}", s.seen);
        s
    }

    /// Reads until `what` has been sent.
    async fn until(&mut self, what: &str) {
        let mut buf = [0u8; 4096];
        while !self.seen.contains(what) {
            let n = tokio::time::timeout(Duration::from_secs(30), self.socket.read(&mut buf))
                .await
                .expect("the stream sends")
                .expect("reads");
            assert!(n > 0, "the stream ended before {what:?}: {}", self.seen);
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Everything else it sends, to its end (a stream that does not end fails the test).
    async fn rest(mut self) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), self.socket.read_to_end(&mut out))
            .await
            .expect("the stream ends")
            .expect("reads");
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[tokio::test]
async fn the_live_stream_ends_at_sign_out_and_sends_nothing_after() {
    let w = start().await;
    let a = w.admin;
    let (session, csrf) = sign_in(a, ADMIN_TOKEN).await;
    let mut stream = Stream::open(a, &session).await;
    w.decision("before-sign-out").await;
    stream.until("before-sign-out").await;

    let logout = raw(
        a,
        &post(a, "/ui/logout", Some(&session), &format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(status(&logout), 303, "{logout}");
    w.decision("after-sign-out").await;
    let rest = stream.rest().await;
    assert!(!rest.contains("after-sign-out"), "{rest}");
    assert!(rest.contains("event: ended"), "{rest}");
    w.stop().await;
}

#[tokio::test]
async fn the_live_stream_ends_when_the_admin_token_is_rotated() {
    let w = start().await;
    let a = w.admin;
    let (session, _) = sign_in(a, ADMIN_TOKEN).await;
    let mut stream = Stream::open(a, &session).await;
    w.decision("before-rotation").await;
    stream.until("before-rotation").await;

    std::fs::write(&w.token_file, "a-new-admin-token-9876543210").expect("rotated");
    w.decision("after-rotation").await;
    let rest = stream.rest().await;
    assert!(!rest.contains("after-rotation"), "{rest}");
    assert!(rest.contains("event: ended"), "{rest}");
    // The session ended with it: its pages send to the login page.
    let page = raw(a, &get(a, "/ui/live", Some(&session), None)).await;
    assert_eq!(status(&page), 303, "{page}");
    w.stop().await;
}

#[tokio::test]
async fn wrong_admin_tokens_are_audited_slowed_and_never_lock_the_right_one_out() {
    let w = start().await;
    let a = w.admin;
    // More wrong tokens than the old lockout allowed (5), through both doors.
    const WRONG: usize = 6;
    for i in 0..WRONG {
        let answer = raw(a, &get(a, "/deny", None, Some(&format!("wrong-guess-{i}")))).await;
        assert_eq!(status(&answer), 401, "{answer}");
    }
    let answer = raw(a, &get(a, "/deny", None, Some(ADMIN_TOKEN))).await;
    assert_eq!(
        status(&answer),
        200,
        "the right token still gets in: {answer}"
    );
    for i in 0..WRONG {
        let form = format!("token=wrong-guess-{i}");
        let answer = raw(a, &post(a, "/ui/login", None, &form)).await;
        assert_eq!(status(&answer), 401, "{answer}");
        assert!(header(&answer, "set-cookie").is_none());
    }
    sign_in(a, ADMIN_TOKEN).await;
    // Another source on the loopback network is a source of its own.
    let other: SocketAddr = "127.0.0.2:0".parse().expect("addr");
    let answer = raw_from(
        Some(other),
        a,
        &get(a, "/deny", None, Some("wrong-guess-x")),
    )
    .await;
    assert_eq!(status(&answer), 401, "{answer}");

    let events = w.events("admin_auth_failed", 2 * WRONG + 1).await;
    assert_eq!(events.len(), 2 * WRONG + 1, "{events:?}");
    let of = |via: &str, path: &str| {
        events
            .iter()
            .filter(|e| e["via"] == via && e["path"] == path && e["reason"] == "wrong")
            .count()
    };
    assert_eq!(of("api", "/deny"), WRONG + 1);
    assert_eq!(of("console", "/ui/login"), WRONG);
    let sources: Vec<_> = events.iter().map(|e| e["source"].as_str()).collect();
    assert_eq!(
        sources.iter().filter(|s| **s == Some("127.0.0.1")).count(),
        2 * WRONG
    );
    assert!(sources.contains(&Some("127.0.0.2")), "{sources:?}");
    // Never the presented token.
    let trail = std::fs::read_to_string(&w.audit).expect("audit file");
    assert!(!trail.contains("wrong-guess"), "{trail}");
    assert!(!trail.contains(ADMIN_TOKEN));

    let metrics = raw(a, &get(a, "/metrics", None, None)).await;
    let failures: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("entitygate_admin_auth_failures_total"))
        .filter(|l| l.contains("via=\"console\"") && l.contains("reason=\"wrong\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= WRONG as f64, "{metrics}");
    w.stop().await;
}

#[tokio::test]
async fn the_console_explains_with_the_running_kill_switch() {
    let w = start().await;
    let a = w.admin;
    let deny = r#"{"subject":"alice","reason":"INC-1"}"#;
    let add = format!(
        "POST /deny HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{deny}",
        deny.len()
    );
    assert_eq!(status(&raw(a, &add).await), 201);
    let (session, csrf) = sign_in(a, ADMIN_TOKEN).await;
    let form = format!(
        "request=GET+%2Fapi%2Fv3.1%2Ftoolkits&token={}&csrf={csrf}",
        token("alice")
    );
    let page = raw(a, &post(a, "/ui/policy/explain", Some(&session), &form)).await;
    assert_eq!(status(&page), 200, "{page}");
    assert!(page.contains("consulted (1 deny rules)"), "{page}");
    assert!(page.contains(">denied_by_kill_switch<"), "{page}");
    w.stop().await;
}
