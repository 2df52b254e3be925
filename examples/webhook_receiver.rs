//! An app-side receiver for entitygate's `entitygate.connections.attention` webhook: it
//! verifies the signature and prints the reconnect prompt the app would show each user.
//!
//! ```text
//! ENTITYGATE_WEBHOOK_SECRET=... cargo run --example webhook_receiver -- [--port 9000]
//! ```
//!
//! Verification, in any language:
//! 1. read `x-entitygate-timestamp` (unix seconds) and refuse it if it is more than 5 minutes
//!    from now (a replayed delivery);
//! 2. compute `hex(HMAC-SHA256(secret, "<timestamp>.<raw body>"))` over the raw bytes received,
//!    before any JSON parsing;
//! 3. compare it in constant time with `x-entitygate-signature` after its `v1=` prefix;
//! 4. answer 2xx quickly (entitygate retries anything else but 4xx), and deduplicate on the
//!    body's `id` if the app must act exactly once.
//!
//! It only prints: a real app would store the prompt and show it at the user's next visit.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

/// Accepted age of a delivery's timestamp.
pub const TOLERANCE_SECS: u64 = 300;

/// Why a delivery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A header is missing or malformed.
    Malformed,
    /// The timestamp is too old (or too far ahead).
    Stale,
    /// The signature does not match.
    BadSignature,
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies one delivery (steps 1 to 3 above).
pub fn verify(
    secret: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), Refused> {
    let timestamp = timestamp.ok_or(Refused::Malformed)?.trim();
    let ts: u64 = timestamp.parse().map_err(|_| Refused::Malformed)?;
    if ts.abs_diff(now) > TOLERANCE_SECS {
        return Err(Refused::Stale);
    }
    let hex = signature
        .and_then(|s| s.trim().strip_prefix("v1="))
        .ok_or(Refused::Malformed)?;
    let tag = hex_decode(hex).ok_or(Refused::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| Refused::Malformed)?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&tag).map_err(|_| Refused::BadSignature)
}

/// The reconnect prompts for a verified event, one per toolkit.
pub fn prompts(body: &[u8]) -> Vec<String> {
    let Ok(event) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let user = event["user_id"].as_str().unwrap_or("?");
    let toolkits = event["toolkits"].as_array().cloned().unwrap_or_default();
    toolkits
        .iter()
        .map(|t| {
            let toolkit = t["toolkit"].as_str().unwrap_or("?");
            let what = match t["status"].as_str().unwrap_or("") {
                "EXPIRED" => "has expired",
                "REVOKED" => "was revoked",
                "FAILED" => "failed",
                "INACTIVE" => "is inactive",
                "DISABLED" => "is disabled",
                _ => "needs attention",
            };
            let reason = t["status_reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("[{user}] Your {toolkit} connection {what}{reason}. Please reconnect it in Settings > Integrations.")
        })
        .collect()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn handle(
    req: Request<Incoming>,
    secret: Bytes,
    on_prompt: std::sync::Arc<dyn Fn(String) + Send + Sync>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (ts, sig) = (
        header("x-entitygate-timestamp"),
        header("x-entitygate-signature"),
    );
    let answer = |status: StatusCode, text: &str| {
        let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
        *r.status_mut() = status;
        Ok(r)
    };
    let Ok(body) = Limited::new(req.into_body(), 1024 * 1024).collect().await else {
        return answer(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
    };
    let body = body.to_bytes();
    if let Err(why) = verify(&secret, ts.as_deref(), sig.as_deref(), &body, now()) {
        eprintln!("refused a delivery: {why:?}");
        return answer(StatusCode::UNAUTHORIZED, "bad signature\n");
    }
    for p in prompts(&body) {
        on_prompt(p);
    }
    answer(StatusCode::OK, "ok\n")
}

/// Serves deliveries on `listener` forever, calling `on_prompt` for each prompt.
pub async fn serve(
    listener: tokio::net::TcpListener,
    secret: Bytes,
    on_prompt: std::sync::Arc<dyn Fn(String) + Send + Sync>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (secret, on_prompt) = (secret.clone(), on_prompt.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                handle(req, secret.clone(), on_prompt.clone())
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut port = 9000u16;
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|p| p.parse().ok())) {
            ("--port", Some(p)) => port = p,
            _ => {
                eprintln!("usage: webhook_receiver [--port N]");
                std::process::exit(64);
            }
        }
    }
    let Some(secret) = std::env::var("ENTITYGATE_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        eprintln!("set ENTITYGATE_WEBHOOK_SECRET");
        std::process::exit(64);
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{}", listener.local_addr()?);
    serve(
        listener,
        Bytes::from(secret.into_bytes()),
        std::sync::Arc::new(|p| println!("{p}")),
    )
    .await;
    Ok(())
}
