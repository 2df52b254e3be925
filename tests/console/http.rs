//! Raw HTTP/1.1 to the admin listener's console, as a browser without the cookie or the CSRF
//! token would send it: shared by `tests/console.rs` and `tests/gateway/admin_console.rs`.
// Each of the two uses a part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 exchange, read to the connection's end.
pub(crate) async fn raw(addr: SocketAddr, request: &str) -> String {
    raw_from(None, addr, request).await
}

/// The same from the local address `from` (another source on the loopback network).
pub(crate) async fn raw_from(from: Option<SocketAddr>, addr: SocketAddr, request: &str) -> String {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    if let Some(from) = from {
        socket.bind(from).expect("binds the source address");
    }
    let mut s = socket.connect(addr).await.expect("connects");
    s.write_all(request.as_bytes()).await.expect("writes");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET path`, with the session cookie and a bearer token when given.
pub(crate) fn get(
    addr: SocketAddr,
    path: &str,
    cookie: Option<&str>,
    bearer: Option<&str>,
) -> String {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: eg_console={c}\r\n"));
    let bearer = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}{bearer}Connection: close\r\n\r\n")
}

/// `POST path` of a form, with the session cookie when given.
pub(crate) fn post(addr: SocketAddr, path: &str, cookie: Option<&str>, form: &str) -> String {
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: eg_console={c}\r\n"));
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
}

/// The answer's status code (0 when there is none).
pub(crate) fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A header of the answer, by name in any case.
pub(crate) fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Signs in with `token`; the session id and the CSRF token of its forms. The cookie must be
/// `HttpOnly`, `SameSite=Strict` and scoped to `/ui`.
pub(crate) async fn sign_in(addr: SocketAddr, token: &str) -> (String, String) {
    let answer = raw(
        addr,
        &post(addr, "/ui/login", None, &format!("token={token}")),
    )
    .await;
    assert_eq!(status(&answer), 303, "{answer}");
    let cookie = header(&answer, "set-cookie").expect("a session cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    let id = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("eg_console="))
        .expect("cookie value")
        .to_owned();
    let page = raw(addr, &get(addr, "/ui/policy", Some(&id), None)).await;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    (id, csrf)
}
