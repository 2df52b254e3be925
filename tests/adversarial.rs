#![allow(clippy::unwrap_used, unreachable_pub)]
//! The adversarial suite: every known way around an identity-rewriting proxy, tried end to end
//! over real sockets against the gateway in front of the sandbox Composio. Each test asserts on
//! what the sandbox *received*: a refused attack never reaches it, a neutralised one arrives
//! carrying only the token's subject and only the gateway's key.
//!
//! Areas (see SECURITY.md for the index): tokens, bodies, requests (raw HTTP/1 and HTTP/2),
//! connected accounts, credential leaks, concurrency, faults. The concurrency test's size is
//! `ENTITYGATE_ADVERSARIAL_REQUESTS` (default 6000).

#[path = "gateway/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use entitygate::sandbox::{Fault, Recorded, Sandbox};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// An independent oracle (not the gateway's own function): every spelling Composio or a lenient
/// binder could read as a user id, compared on ASCII letters and digits only.
fn is_identity_key(k: &str) -> bool {
    let folded: String = k
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    [
        "userid",
        "userids",
        "entityid",
        "entityids",
        "useruuid",
        "clientuniqueuserid",
    ]
    .contains(&folded.as_str())
}

const EXEC: &str = "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE";
const EXEC_PREFIX: &str = "/api/v3.1/tools/execute/";

// ============================================================================================
// helpers
// ============================================================================================

/// Every log line the gateway writes in this test binary, for the credential-leak check.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("entitygate=debug"))
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Bounded: the concurrency test must not grow it without limit.
        if v.len() < 64 * 1024 * 1024 {
            v.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn start() -> Harness {
    logs();
    Harness::start().await
}

async fn start_with(extra: &str) -> Harness {
    logs();
    Harness::with_config(extra).await
}

fn exec_req(
    token: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    exec_req_to(EXEC, token, content_type, body)
}

fn exec_req_to(
    path: &str,
    token: &str,
    content_type: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut b = Request::post(path_url(path)).header("x-api-key", token);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(body.into())).unwrap()
}

/// The harness's client wants a full URL; the address is filled in by [`fix`].
fn path_url(path: &str) -> String {
    format!("http://gateway.invalid{path}")
}

/// Points a request built with [`path_url`] at the harness.
fn fix(h: &Harness, mut req: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let pq = req.uri().path_and_query().unwrap().as_str().to_owned();
    *req.uri_mut() = h.url(&pq).parse().unwrap();
    req
}

async fn send(h: &Harness, req: Request<Full<Bytes>>) -> Reply {
    h.raw(fix(h, req)).await
}

/// The identity-bearing top-level keys of a forwarded body (every spelling).
fn identity_keys(body: &Value) -> Vec<(String, Value)> {
    body.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| is_identity_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The one forwarded execution: its body names `subject` alone, with the real key alone.
fn assert_pinned(r: &Recorded, field: &str, subject: &str) -> Value {
    assert_only_real_key(r);
    let body = r.json().expect("forwarded body is JSON");
    assert_eq!(
        identity_keys(&body),
        vec![(field.to_owned(), Value::from(subject))],
        "forwarded {}",
        String::from_utf8_lossy(&r.body)
    );
    body
}

/// No execution reached the sandbox, and every request that did carried only the real key
/// (the gateway's own lookups).
fn assert_refused_before_upstream(h: &Harness) {
    h.assert_no_execution();
    for r in h.sandbox.requests() {
        assert_only_real_key(&r);
        assert_eq!(
            r.method, "GET",
            "only lookups may reach upstream: {} {}",
            r.method, r.path
        );
    }
}

/// Writes `bytes` on a fresh connection and reads until the gateway closes it or stays idle
/// for `idle`.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], idle: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(Ok(n)) = tokio::time::timeout(idle, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status codes of every response in a raw HTTP/1 exchange, in order.
fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter(|(i, _)| *i == 0 || raw[..*i].ends_with('\n'))
        .filter_map(|(i, _)| raw[i + 9..i + 12].parse().ok())
        .collect()
}

fn h2_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn collect(resp: Response<Incoming>) -> Reply {
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let reply = Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    };
    assert_no_key_leak(&reply);
    reply
}

fn b64(v: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn good_claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600})
}

fn cert(name: &str) -> String {
    format!("{}/certs/dev/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn mint(alg: Algorithm, key: &EncodingKey, header: Header, claims: &Value) -> String {
    let mut header = header;
    header.alg = alg;
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn with_kid(kid: &str) -> Header {
    Header {
        kid: Some(kid.to_owned()),
        ..Header::default()
    }
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(cert("jwt-rsa.key")).unwrap()).unwrap()
}

fn rsa_jwk(kid: &str) -> Value {
    let pubkey =
        jsonwebtoken::DecodingKey::from_rsa_pem(&std::fs::read(cert("jwt-rsa.pub")).unwrap())
            .unwrap();
    let mut v =
        serde_json::to_value(jsonwebtoken::jwk::Jwk::from_decoding_key(&pubkey, None).unwrap())
            .unwrap();
    v["kid"] = kid.into();
    v["alg"] = "RS256".into();
    v
}

/// A tiny HTTP server under the test's control: a JWKS endpoint, or an attacker's key host.
struct KeyServer {
    addr: SocketAddr,
    reply: Arc<Mutex<(u16, Vec<u8>)>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl KeyServer {
    async fn start(status: u16, body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new((status, body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, hh) = (reply.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, hh) = (r.clone(), hh.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let (r, hh) = (r.clone(), hh.clone());
                        async move {
                            hh.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = r.lock().unwrap().clone();
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            reply,
            hits,
            task,
        }
    }
    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn set(&self, status: u16, body: Vec<u8>) {
        *self.reply.lock().unwrap() = (status, body);
    }
}

impl Drop for KeyServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// Sends an execution with `token` in `x-api-key` and returns the reply.
async fn exec_as(h: &Harness, token: &str) -> Reply {
    h.send(
        Method::POST,
        EXEC,
        Some(token),
        Some(json!({"user_id": "bob", "arguments": {}})),
    )
    .await
}

async fn refused_401(h: &Harness, token: &str, slug: &str, what: &str) {
    let r = exec_as(h, token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text());
    assert_eq!(r.slug(), slug, "{what}: {}", r.text());
    assert!(r.headers.contains_key("www-authenticate"), "{what}");
}

// ============================================================================================
// tokens
// ============================================================================================

#[tokio::test]
async fn alg_none_in_any_case_and_empty_signatures_are_refused() {
    let h = start().await;
    let claims = b64(&good_claims("bob"));
    let real = token("bob");
    let real_sig = real.rsplit('.').next().unwrap();
    for alg in ["none", "None", "NONE", "nOnE"] {
        let head = b64(&json!({"alg": alg, "typ": "JWT"}));
        for sig in ["", "AAAA", real_sig] {
            let t = if sig.is_empty() {
                format!("{head}.{claims}.")
            } else {
                format!("{head}.{claims}.{sig}")
            };
            refused_401(&h, &t, "token_malformed", &format!("alg {alg} sig {sig:?}")).await;
        }
        // Two parts only (an "unsecured JWS" without the trailing dot).
        refused_401(&h, &format!("{head}.{claims}"), "token_malformed", alg).await;
    }
    // A valid HS256 header over the claims with the signature removed.
    let (hp, _) = real.rsplit_once('.').unwrap();
    refused_401(&h, &format!("{hp}."), "token_malformed", "empty signature").await;
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The gateway has an RS256 key (kid "idp-rsa") and the HS256 test key (no kid).
    let extra = format!(
        "[[auth.keys]]\nalg = \"RS256\"\nkid = \"idp-rsa\"\npublic_key_file = {:?}\n",
        cert("jwt-rsa.pub")
    );
    let h = start_with(&extra).await;
    let pem = std::fs::read(cert("jwt-rsa.pub")).unwrap();
    let confused = EncodingKey::from_secret(&pem);
    let claims = good_claims("bob");
    // With the RSA key's kid: the header asks for HS256, the key is pinned to RS256.
    let t = mint(Algorithm::HS256, &confused, with_kid("idp-rsa"), &claims);
    refused_401(&h, &t, "token_algorithm_not_allowed", "HS256 with RSA kid").await;
    // Without a kid: only the HS256 key (the real secret) is tried, and it does not verify.
    let t = mint(Algorithm::HS256, &confused, Header::default(), &claims);
    refused_401(&h, &t, "token_signature_invalid", "HS256 without kid").await;
    // The same bytes in DER-ish or trimmed form are no better.
    let trimmed = String::from_utf8(pem.clone()).unwrap().trim().to_owned();
    let t = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(trimmed.as_bytes()),
        with_kid("idp-rsa"),
        &claims,
    );
    refused_401(&h, &t, "token_algorithm_not_allowed", "trimmed PEM").await;
    // The genuine RS256 token works, so the key is really loaded.
    let t = mint(
        Algorithm::RS256,
        &rsa_key(),
        with_kid("idp-rsa"),
        &good_claims("alice"),
    );
    let r = exec_as(&h, &t).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_pinned(&h.upstream(EXEC_PREFIX)[0], "user_id", "alice");
    h.shutdown().await;
}

#[tokio::test]
async fn injected_kids_and_key_url_headers_are_never_followed() {
    // An attacker-hosted key set, serving the key the attacker signs with.
    let evil_enc = EncodingKey::from_ec_pem(&std::fs::read(cert("server.key")).unwrap()).unwrap();
    let evil_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&evil_enc, Algorithm::ES256).unwrap();
    let evil = KeyServer::start(200, jwks(&[serde_json::to_value(&evil_jwk).unwrap()])).await;
    // The legitimate JWKS (RS256, kid "good").
    let idp = KeyServer::start(200, jwks(&[rsa_jwk("good")])).await;
    let h = start_with(&format!(
        "[auth.jwks]\nurl = \"{}\"\nmin_refetch_secs = 1\n",
        idp.url()
    ))
    .await;
    let idp_hits = idp.hits();
    let claims = good_claims("bob");

    // jku / x5u / jwk / x5c headers pointing at (or embedding) the attacker's key.
    let mut header = with_kid("good");
    header.jku = Some(evil.url());
    header.x5u = Some(evil.url());
    header.jwk = Some(evil_jwk.clone());
    let t = mint(Algorithm::ES256, &evil_enc, header, &claims);
    refused_401(
        &h,
        &t,
        "token_algorithm_not_allowed",
        "ES256 with embedded jwk",
    )
    .await;
    let header = Header {
        jku: Some(evil.url()),
        jwk: Some(evil_jwk.clone()),
        ..Header::default()
    };
    let t = mint(Algorithm::ES256, &evil_enc, header, &claims);
    let r = exec_as(&h, &t).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    // A kid the attacker's set uses, under a jku: unknown here.
    let mut header = with_kid("attacker");
    header.jku = Some(evil.url());
    let t = mint(Algorithm::ES256, &evil_enc, header, &claims);
    refused_401(&h, &t, "token_unknown_key", "attacker kid with jku").await;

    // kid injection: paths, SQL, URLs, odd bytes. The HS256 signature is made with each
    // "key" the injection hopes to select (empty, /dev/null, the SQL literal).
    for (kid, secret) in [
        ("../../../../dev/null", &b""[..]),
        ("/dev/null", b""),
        ("' UNION SELECT 'k'--", b"k"),
        ("1' OR '1'='1", b""),
        ("file:///etc/passwd", b""),
        ("http://127.0.0.1:1/x", b""),
        ("good\0", b""),
        ("good/../good", b""),
        ("GOOD", b""),
    ] {
        let mut header = with_kid(kid);
        header.jku = Some(evil.url());
        let t = mint(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret),
            header,
            &claims,
        );
        let r = exec_as(&h, &t).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "kid {kid:?}: {}",
            r.text()
        );
        assert!(
            ["token_unknown_key", "token_algorithm_not_allowed"].contains(&r.slug().as_str()),
            "kid {kid:?}: {}",
            r.text()
        );
    }
    let long = "k".repeat(4000);
    let t = mint(Algorithm::RS256, &rsa_key(), with_kid(&long), &claims);
    refused_401(&h, &t, "token_unknown_key", "very long kid").await;

    assert_eq!(evil.hits(), 0, "an attacker-named key URL was fetched");
    // Unknown kids cause at most a rate-limited refetch of the configured JWKS, nothing else.
    assert!(
        idp.hits() <= idp_hits + 2,
        "refetches: {}",
        idp.hits() - idp_hits
    );
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn bad_claims_are_refused() {
    let h = start().await;
    let n = now();
    let base = |extra: Value| {
        let mut c = good_claims("bob");
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        token_with(c)
    };
    let cases = [
        (json!({"exp": n - 3600}), "token_expired"),
        (json!({"exp": n - 6}), "token_expired"), // leeway is 5 s in the harness
        (json!({"nbf": n + 3600}), "token_not_yet_valid"),
        (json!({"iat": n + 3600}), "token_not_yet_valid"),
        (
            json!({"iss": "https://evil.test/"}),
            "token_issuer_mismatch",
        ),
        (json!({"iss": "https://idp.test"}), "token_issuer_mismatch"),
        (json!({"aud": "another-api"}), "token_audience_mismatch"),
        (json!({"aud": ["another-api"]}), "token_audience_mismatch"),
        (json!({"exp": null}), "token_claim_invalid"),
        (json!({"exp": "9999999999"}), "token_claim_invalid"),
        (json!({"exp": [n + 600]}), "token_claim_invalid"),
        (json!({"nbf": "9999999999"}), "token_claim_invalid"),
        (json!({"aud": null}), "token_claim_invalid"),
        (json!({"iss": null}), "token_claim_invalid"),
        (json!({"sub": 42}), "token_subject_invalid"),
        (json!({"sub": ["bob"]}), "token_subject_invalid"),
        (json!({"sub": {"id": "bob"}}), "token_subject_invalid"),
        (json!({"sub": true}), "token_subject_invalid"),
        (json!({"sub": ""}), "token_subject_invalid"),
        (json!({"sub": null}), "token_subject_invalid"),
        (json!({"sub": "bob\u{0000}"}), "token_subject_invalid"),
        (json!({"sub": "alice\nbob"}), "token_subject_invalid"),
        (json!({"sub": "bob\u{007f}"}), "token_subject_invalid"),
        (json!({"sub": "alice,bob"}), "token_subject_invalid"),
        (json!({"sub": "a".repeat(257)}), "token_subject_invalid"),
    ];
    for (extra, slug) in cases {
        let what = extra.to_string();
        let what = &what[..what.len().min(80)];
        refused_401(&h, &base(extra), slug, what).await;
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn truncated_reencoded_and_foreign_credentials_are_refused() {
    let h = start().await;
    let t = token("bob");
    let (head, rest) = t.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let std_b64 = |s: &str| {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(raw)
    };
    let cases = [
        // A 43-character HS256 signature cut to 41: a length no base64url text can have. (Cut
        // to 42 it may still decode, depending on its last character, and fail as a signature.)
        (t[..t.len() - 2].to_owned(), "token_malformed"),
        (t[..t.len() - 11].to_owned(), "token_signature_invalid"),
        (format!("{head}.{payload}"), "token_malformed"),
        (format!("{head}.{payload}.{sig}.{sig}"), "token_malformed"),
        // Standard base64 (padding, `+` and `/`) instead of base64url.
        (format!("{head}.{payload}==.{sig}"), "token_malformed"),
        (
            format!("{}.{payload}.{sig}", std_b64(head) + "+/"),
            "token_malformed",
        ),
        (format!("{head}=.{payload}.{sig}"), "token_malformed"),
        (format!("{head}.{payload} .{sig}"), "token_malformed"),
        // Re-encoded claims (same JSON, different whitespace) keep the old signature.
        (
            format!("{head}.{}.{sig}", {
                use base64::Engine as _;
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap();
                let v: Value = serde_json::from_slice(&raw).unwrap();
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(serde_json::to_string_pretty(&v).unwrap())
            }),
            "token_signature_invalid",
        ),
        // The gateway's own Composio key, and other API-key shapes, are not JWTs.
        (API_KEY.to_owned(), "token_malformed"),
        ("ak_live_0123456789abcdef".to_owned(), "token_malformed"),
        ("x".repeat(9000), "token_malformed"),
    ];
    for (tok, slug) in cases {
        let what = format!(
            "len {} tail {}",
            tok.len(),
            &tok[tok.len().saturating_sub(50)..]
        );
        refused_401(&h, &tok, slug, &what).await;
    }
    // The real key as a bearer token.
    let req = Request::post(path_url(EXEC))
        .header("authorization", format!("Bearer {API_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let r = send(&h, req).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn two_tokens_that_disagree_are_refused() {
    let h = start().await;
    let (alice, bob) = (token("alice"), token("bob"));
    let build = |pairs: &[(&str, String)]| {
        let mut b = Request::post(path_url(EXEC)).header("content-type", "application/json");
        for (k, v) in pairs {
            b = b.header(*k, v.as_str());
        }
        b.body(Full::new(Bytes::from_static(b"{\"arguments\":{}}")))
            .unwrap()
    };
    for pairs in [
        vec![
            ("x-api-key", alice.clone()),
            ("authorization", format!("Bearer {bob}")),
        ],
        vec![
            ("x-api-key", bob.clone()),
            ("authorization", format!("bearer {alice}")),
        ],
        vec![("x-api-key", alice.clone()), ("x-api-key", bob.clone())],
        vec![("x-api-key", alice.clone()), ("x-api-key", alice.clone())],
        vec![
            ("authorization", format!("Bearer {alice}")),
            ("authorization", format!("Bearer {bob}")),
        ],
        vec![
            ("x-api-key", alice.clone()),
            ("authorization", format!("Bearer {API_KEY}")),
        ],
    ] {
        let r = send(&h, build(&pairs)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        assert_eq!(r.slug(), "token_conflict", "{}", r.text());
    }
    // A non-Bearer scheme is refused outright, not ignored in favour of x-api-key.
    let r = send(
        &h,
        build(&[
            ("x-api-key", alice.clone()),
            ("authorization", format!("Basic {bob}")),
        ]),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

// ============================================================================================
// bodies
// ============================================================================================

#[tokio::test]
async fn every_spelling_of_the_user_id_arrives_as_the_subject() {
    let h = start().await;
    let t = token("alice");
    let bodies: Vec<&[u8]> = vec![
        br#"{"User_Id":"bob","arguments":{}}"#,
        br#"{"userId":"bob","arguments":{}}"#,
        br#"{"USER-ID":"bob","arguments":{}}"#,
        br#"{"user.id":"bob","arguments":{}}"#,
        br#"{"entityId":"bob","arguments":{}}"#,
        br#"{"entity_id":"bob","user_id":"alice","arguments":{}}"#,
        br#"{"user_id":"alice","entity_id":"bob","arguments":{}}"#,
        br#"{"user\u005fid":"bob","arguments":{}}"#,
        br#"{"\u0075ser_id":"bob","arguments":{}}"#,
        br#"{"user_ids":["bob"],"arguments":{}}"#,
        br#"{"client_unique_user_id":"bob","user_uuid":"bob","arguments":{}}"#,
        br#"{"user_id":["alice","bob"],"arguments":{}}"#,
        br#"{"user_id":{"$ne":null},"arguments":{}}"#,
        br#"{"user_id":null,"arguments":{}}"#,
        br#"{"user_id":7,"arguments":{}}"#,
        br#"{"arguments":{}}"#,
    ];
    for body in bodies {
        h.sandbox.clear();
        let r = send(&h, exec_req(&t, Some("application/json"), body.to_vec())).await;
        let what = String::from_utf8_lossy(body);
        assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.text());
        assert_eq!(r.json()["data"]["user_id"], "alice", "{what}");
        let sent = h.upstream(EXEC_PREFIX);
        assert_eq!(sent.len(), 1, "{what}");
        assert_pinned(&sent[0], "user_id", "alice");
    }
    // v3 (not v3.1) and the old API, with its own spelling.
    for (path, body, field) in [
        (
            "/api/v3/tools/execute/GITHUB_CREATE_ISSUE",
            json!({"entityId": "bob", "entity_id": "bob", "arguments": {}}),
            "user_id",
        ),
        (
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"user_id": "bob", "entity_id": "bob", "EntityId": "bob", "appName": "github", "input": {}}),
            "entityId",
        ),
        (
            "/api/v1/actions/GITHUB_CREATE_AN_ISSUE/execute",
            json!({"userId": "bob", "appName": "github", "input": {}}),
            "entityId",
        ),
    ] {
        h.sandbox.clear();
        let r = h.send(Method::POST, path, Some(&t), Some(body)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        let sent = h.upstream(path);
        assert_eq!(sent.len(), 1);
        assert_pinned(&sent[0], field, "alice");
    }
    h.shutdown().await;
}

#[tokio::test]
async fn reject_mode_refuses_every_spelling() {
    let h = start_with("[policy]\non_identity_mismatch = \"reject\"").await;
    let t = token("alice");
    for body in [
        &br#"{"User_Id":"bob","arguments":{}}"#[..],
        br#"{"user\u005fid":"bob","arguments":{}}"#,
        br#"{"entityId":"bob","user_id":"alice","arguments":{}}"#,
        br#"{"user_ids":["alice","bob"],"arguments":{}}"#,
    ] {
        let r = send(&h, exec_req(&t, Some("application/json"), body.to_vec())).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert_eq!(r.slug(), "identity_mismatch");
    }
    assert_refused_before_upstream(&h);
    h.shutdown().await;
}

#[tokio::test]
async fn nested_look_alikes_are_arguments_and_stay_arguments() {
    let h = start().await;
    let t = token("alice");
    let body = br#"{"arguments":{"user_id":"bob","nested":{"entityId":"bob"},"big":123456789012345678901234567890,"f":1.000000000000000000001},"user_id":"bob"}"#;
    let r = send(&h, exec_req(&t, Some("application/json"), body.to_vec())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = &h.upstream(EXEC_PREFIX)[0];
    assert_pinned(sent, "user_id", "alice");
    // The tool's own arguments are forwarded byte for byte (no float rounding of big numbers),
    // and Composio reads only the top-level user id.
    let text = String::from_utf8_lossy(&sent.body);
    assert!(
        text.contains(r#"{"user_id":"bob","nested":{"entityId":"bob"},"big":123456789012345678901234567890,"f":1.000000000000000000001}"#),
        "{text}"
    );
    assert_eq!(r.json()["data"]["user_id"], "alice");
    h.shutdown().await;
}

#[tokio::test]
async fn ambiguous_json_is_refused_before_upstream() {
    let h = start().await;
    let t = token("alice");
    let deep = format!(
        "{{\"arguments\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_obj = format!(
        "{{\"arguments\":{}1{}}}",
        "{\"a\":".repeat(50_000),
        "}".repeat(50_000)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            br#"{"user_id":"alice","user_id":"bob"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            br#"{"user_id":"bob","user_id":"alice"}"#.to_vec(),
            "duplicate_key",
        ),
        (
            br#"{"user_id":"alice","user\u005fid":"bob"}"#.to_vec(),
            "duplicate_key",
        ),
        (br#"{"arguments":{"a":1,"a":2}}"#.to_vec(), "duplicate_key"),
        (
            br#"{"arguments":[{"x":{"y":1,"y":1}}]}"#.to_vec(),
            "duplicate_key",
        ),
        (
            br#"{"connected_account_id":"ca_alice_github","connected_account_id":"ca_bob_github"}"#
                .to_vec(),
            "duplicate_key",
        ),
        (b"\xEF\xBB\xBF{\"arguments\":{}}".to_vec(), "body_invalid"),
        (
            br#"{"arguments":{}}{"user_id":"bob"}"#.to_vec(),
            "body_invalid",
        ),
        (br#"{"arguments":{}} x"#.to_vec(), "body_invalid"),
        (br#"{"arguments":{}},"#.to_vec(), "body_invalid"),
        (br#"{"user_id\ud888":"bob"}"#.to_vec(), "body_invalid"),
        (br#"{"user_id":"\udc00"}"#.to_vec(), "body_invalid"),
        (b"{\"user_id\":\"b\xffob\"}".to_vec(), "body_invalid"),
        (br#"{"arguments":{} /* c */}"#.to_vec(), "body_invalid"),
        (br#"{'user_id':'bob'}"#.to_vec(), "body_invalid"),
        (br#"{"arguments":{"n":1E400}}"#.to_vec(), "body_invalid"),
        (br#"{"arguments":{"n":NaN}}"#.to_vec(), "body_invalid"),
        (br#"[{"user_id":"bob"}]"#.to_vec(), "body_invalid"),
        (br#""user_id""#.to_vec(), "body_invalid"),
        (b"42".to_vec(), "body_invalid"),
        (b"null".to_vec(), "body_invalid"),
        (b"".to_vec(), "body_invalid"),
        (b"   ".to_vec(), "body_invalid"),
        (deep.into_bytes(), "body_too_deep"),
        (deep_obj.into_bytes(), "body_too_deep"),
    ];
    for (body, slug) in cases {
        let what = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        let r = send(&h, exec_req(&t, Some("application/json"), body)).await;
        let status = if slug == "body_too_deep" {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.slug(), slug, "{what}: {}", r.text());
    }
    assert_refused_before_upstream(&h);
    // The gateway survived the deep nesting.
    let r = h
        .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test]
async fn non_json_and_compressed_bodies_are_refused() {
    let h = start().await;
    let t = token("alice");
    let json_body = br#"{"user_id":"bob","arguments":{}}"#.to_vec();
    for ct in [
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("text/plain"),
        Some("application/json-patch+json"),
        Some("application/jsonx"),
        Some("text/json"),
        None,
    ] {
        let body = match ct {
            Some(c) if c.starts_with("application/x-www") => {
                b"user_id=bob&arguments=%7B%7D".to_vec()
            }
            Some(c) if c.starts_with("multipart") => {
                b"--x\r\nContent-Disposition: form-data; name=\"user_id\"\r\n\r\nbob\r\n--x--\r\n"
                    .to_vec()
            }
            _ => json_body.clone(),
        };
        let r = send(&h, exec_req(&t, ct, body)).await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{ct:?}: {}",
            r.text()
        );
        assert_eq!(r.slug(), "unsupported_media_type");
    }
    for enc in ["gzip", "br", "deflate", "zstd", "identity, gzip", "GZIP"] {
        let mut req = exec_req(&t, Some("application/json"), json_body.clone());
        req.headers_mut()
            .insert("content-encoding", enc.parse().unwrap());
        let r = send(&h, req).await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{enc}: {}",
            r.text()
        );
        assert_eq!(r.slug(), "unsupported_content_encoding");
    }
    // A _method smuggled into a form or JSON body changes nothing: the body is refused or
    // the route is classified on the real method.
    let r = send(
        &h,
        exec_req(
            &t,
            Some("application/json"),
            br#"{"_method":"DELETE","arguments":{}}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream(EXEC_PREFIX);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, "POST");
    h.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_and_without_content_length() {
    let h = start_with("[policy]\nmax_body_bytes = 4096").await;
    let t = token("alice");
    let big = format!(
        "{{\"arguments\":{{\"pad\":\"{}\"}},\"user_id\":\"bob\"}}",
        "x".repeat(10_000)
    );
    // With Content-Length.
    let r = send(&h, exec_req(&t, Some("application/json"), big.clone())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text());
    // Chunked, no Content-Length, over raw HTTP/1.
    let mut chunked = Vec::new();
    for piece in big.as_bytes().chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST {EXEC} HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    let raw = raw_exchange(
        h.addr,
        &[head.as_bytes(), &chunked].concat(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(statuses(&raw), vec![413], "{raw}");
    // A lying small Content-Length with a bigger body: the rest is not a second request.
    let head = format!(
        "POST {EXEC} HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n"
    );
    let raw = raw_exchange(
        h.addr,
        &[head.as_bytes(), big.as_bytes()].concat(),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(statuses(&raw), vec![413], "{raw}");
    assert_refused_before_upstream(&h);
    // Just under the limit passes.
    let ok = format!("{{\"arguments\":{{\"pad\":\"{}\"}}}}", "x".repeat(3000));
    let r = send(&h, exec_req(&t, Some("application/json"), ok)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

// ============================================================================================
// requests
// ============================================================================================

#[tokio::test]
async fn identity_query_parameters_are_refused_or_pinned() {
    let h = start().await;
    let t = token("alice");
    for q in [
        "user_id=bob",
        "entity_id=bob",
        "user_id=alice&user_id=bob",
        "user%5Fid=bob",
        "%75ser_id=bob",
        "User-Id=bob",
        "userId=bob",
        "user_ids[]=bob",
        "entityId=bob",
        "user_uuid=bob",
        "a=1&user_id=bob",
    ] {
        let r = h
            .send(
                Method::POST,
                &format!("{EXEC}?{q}"),
                Some(&t),
                Some(json!({"arguments": {}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
        assert_eq!(r.slug(), "query_not_allowed", "{q}");
    }
    for q in ["_method=DELETE", "_METHOD=GET", "%5Fmethod=DELETE"] {
        let r = h
            .send(Method::GET, &format!("/api/v3.1/tools?{q}"), Some(&t), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
        assert_eq!(r.slug(), "method_override_not_allowed", "{q}");
    }
    assert_refused_before_upstream(&h);
    // On listings, every identity parameter collapses to the subject alone.
    for q in [
        "user_ids=bob&user_ids=alice",
        "user_ids=bob,alice",
        "user%5Fids=bob",
        "userIds=bob&user_id=carol",
        "entity_id=bob",
    ] {
        h.sandbox.clear();
        let r = h
            .send(
                Method::GET,
                &format!("/api/v3.1/connected_accounts?{q}"),
                Some(&t),
                None,
            )
            .await;
        if r.status == StatusCode::OK {
            let sent = h.upstream("/api/v3.1/connected_accounts");
            let last = sent.last().unwrap();
            let ids: Vec<_> = last
                .query_pairs()
                .into_iter()
                .filter(|(k, _)| is_identity_key(k))
                .collect();
            assert_eq!(
                ids,
                vec![("user_ids".to_owned(), "alice".to_owned())],
                "{q}"
            );
            for item in r.json()["items"].as_array().unwrap() {
                assert_eq!(item["user_id"], "alice", "{q}");
            }
        } else {
            assert!(r.status.is_client_error(), "{q}: {}", r.text());
            for s in h.sandbox.requests() {
                assert_eq!(s.query_param("user_ids").as_deref(), Some("alice"));
            }
        }
    }
    h.shutdown().await;
}

/// Issue 12, finding 7: bracketed, dotted or indexed identity keys (which lenient query parsers
/// read as the plain name) are refused on every route family, before any lookup upstream.
#[tokio::test]
async fn indexed_identity_query_keys_are_refused_on_every_route() {
    let h = start().await;
    let t = token("alice");
    let routes: &[(Method, &str, Option<Value>)] = &[
        (Method::GET, "/api/v3.1/tools", None),
        (Method::GET, "/api/v3.1/toolkits", None),
        (Method::GET, "/api/v3.1/tools/GITHUB_CREATE_ISSUE", None),
        (Method::GET, "/api/v2/actions", None),
        (Method::POST, EXEC, Some(json!({"arguments": {}}))),
        (
            Method::POST,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(json!({"input": {}})),
        ),
        (
            Method::POST,
            "/api/v3.1/tools/execute/proxy",
            Some(
                json!({"connected_account_id": "ca_alice_github", "endpoint": "/user", "method": "GET"}),
            ),
        ),
        (
            Method::POST,
            "/api/v2/actions/proxy",
            Some(
                json!({"connectedAccountId": "ca_alice_github", "endpoint": "/user", "method": "GET"}),
            ),
        ),
        (
            Method::POST,
            "/api/v3.1/files/upload/request",
            Some(
                json!({"toolkit_slug": "github", "tool_slug": "GITHUB_CREATE_ISSUE", "filename": "a.txt", "mimetype": "text/plain", "md5": "x"}),
            ),
        ),
        (Method::GET, "/api/v3.1/connected_accounts", None),
        (
            Method::GET,
            "/api/v3.1/connected_accounts/ca_alice_github",
            None,
        ),
        (Method::GET, "/api/v3.1/trigger_instances/active", None),
        (Method::GET, "/api/v3.1/tool_router/session/trs_1", None),
    ];
    for q in [
        "user_id[0]=bob",
        "user_ids[]=bob",
        "user_ids%5B%5D=bob",
        "entityId[x]=bob",
        "user_id.0=bob",
        "user_id0=bob",
        "limit=1&USER_IDS[1]=bob",
    ] {
        for (method, path, body) in routes {
            h.sandbox.clear();
            let r = h
                .send(
                    method.clone(),
                    &format!("{path}?{q}"),
                    Some(&t),
                    body.clone(),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{method} {path}?{q}: {}",
                r.text()
            );
            assert_eq!(r.slug(), "query_not_allowed", "{method} {path}?{q}");
            h.assert_nothing_forwarded();
        }
    }
    // Not identities: the SDKs' bracketed toolkit versions still pass.
    h.sandbox.clear();
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/tools/GITHUB_CREATE_ISSUE?toolkit_versions%5Bgithub%5D=20250909_00",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// Issue 12, finding 8: a route parameter never captures a name Composio uses for a
/// collection or an action, so `GET mcp/{id}` does not hand out `GET mcp/servers`.
#[tokio::test]
async fn collection_names_are_not_captured_as_ids() {
    let h = start().await;
    let t = token("alice");
    for path in [
        "/api/v3.1/mcp/servers",
        "/api/v3/mcp/servers",
        "/api/v3.1/mcp/Servers",
        "/api/v3.1/mcp/custom",
        "/api/v3.1/toolkits/multi",
        "/api/v3.1/triggers_types/list",
        "/api/v3.1/connected_accounts/link",
        "/api/v2/actions/list",
    ] {
        h.sandbox.clear();
        let r = h.send(Method::GET, path, Some(&t), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.text());
        assert_eq!(r.slug(), "route_not_allowed", "{path}");
        h.assert_nothing_forwarded();
    }
    // The server the SDK's `mcp.generate` reads by id is still served.
    let r = h
        .send(Method::GET, "/api/v3.1/mcp/mcp_1", Some(&t), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn path_tricks_over_raw_http1_are_refused() {
    let h = start().await;
    let t = token("alice");
    let cases = [
        "//api/v3.1/tools",
        "/api//v3.1/tools",
        "/api/v3.1/./tools",
        "/api/v3.1/x/../tools",
        "/api/v3.1/tools/../../v1/api_keys",
        "/api/v3.1/%2e%2e/v1/api_keys",
        "/api/v3.1/%2E%2E/v1/api_keys",
        "/api/v3.1/tools%2Fexecute%2FGITHUB_CREATE_ISSUE",
        "/api/v3.1/tools%2fexecute",
        "/api/v3.1/tools;jsessionid=1",
        "/api/v3.1/tools/",
        "/api/v3.1/tools\\..\\api_keys",
        "/api/v3.1/%74ools",
        "/API/V3.1/TOOLS",
        "/api/V3.1/tools",
        "/api/v3.1/Tools",
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE/",
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE;x",
        "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE/..",
        "/api/v3.1/tools/execute/%47ITHUB_CREATE_ISSUE",
        "/api/v3.2/tools",
        "/api/v3.1/auth_configs",
        "/api/v3.1/api_keys",
        "/api/v1/client/auth/client_info/../../../../v3.1/api_keys",
        "*",
        "http://127.0.0.1/api/v3.1/tools",
        "http://evil.example/api/v3.1/tools",
        "HTTP://x/api/v3.1/tools",
    ];
    let mut set = tokio::task::JoinSet::new();
    for (i, target) in cases.iter().enumerate() {
        let (addr, t) = (h.addr, t.clone());
        let target = (*target).to_owned();
        set.spawn(async move {
            let method = if i % 2 == 0 { "GET" } else { "POST" };
            let req = format!(
                "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {t}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            );
            let raw = raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
            (target, raw)
        });
    }
    while let Some(res) = set.join_next().await {
        let (target, raw) = res.unwrap();
        let st = statuses(&raw);
        assert_eq!(st.len(), 1, "{target}: {raw}");
        assert!(
            [400, 403, 404].contains(&st[0]),
            "{target} was not refused: {raw}"
        );
        assert!(!raw.contains(API_KEY));
    }
    // Only "POST .../tools/execute/..." style targets could execute; none may have reached
    // the sandbox, nor any route outside the table.
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn method_override_headers_and_params_are_refused() {
    let h = start().await;
    let t = token("alice");
    for hdr in [
        "x-http-method-override",
        "X-HTTP-Method-Override",
        "x-http-method",
        "x-method-override",
    ] {
        for (m, p) in [(Method::GET, "/api/v3.1/tools"), (Method::POST, EXEC)] {
            let req = Request::builder()
                .method(m.clone())
                .uri(path_url(p))
                .header("x-api-key", &t)
                .header("content-type", "application/json")
                .header(hdr, "DELETE")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let r = send(&h, req).await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{hdr} {m}");
            assert_eq!(r.slug(), "method_override_not_allowed");
        }
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn request_smuggling_is_never_relayed() {
    let h = start().await;
    let t = token("alice");
    let body = br#"{"user_id":"bob","arguments":{}}"#;
    // The smuggled request: bob's execution under alice's connection, unauthenticated.
    let smuggled = format!(
        "POST /api/v3.1/tools/execute/GMAIL_SEND_EMAIL HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let chunked_body = format!(
        "{:x}\r\n{}\r\n0\r\n\r\n",
        body.len(),
        String::from_utf8_lossy(body)
    );
    let head = |extra: &str| {
        format!("POST {EXEC} HTTP/1.1\r\nHost: x\r\nx-api-key: {t}\r\ncontent-type: application/json\r\n{extra}\r\n")
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "CL+TE",
            format!(
                "{}{chunked_body}{smuggled}",
                head(&format!(
                    "content-length: {}\r\ntransfer-encoding: chunked\r\n",
                    chunked_body.len()
                ))
            )
            .into_bytes(),
        ),
        (
            "TE+CL",
            format!(
                "{}{chunked_body}{smuggled}",
                head(&format!(
                    "transfer-encoding: chunked\r\ncontent-length: {}\r\n",
                    body.len()
                ))
            )
            .into_bytes(),
        ),
        (
            "duplicate CL",
            format!(
                "{}{}{smuggled}",
                head(&format!(
                    "content-length: {}\r\ncontent-length: 0\r\n",
                    body.len()
                )),
                String::from_utf8_lossy(body)
            )
            .into_bytes(),
        ),
        (
            "CL list",
            format!(
                "{}{}{smuggled}",
                head(&format!("content-length: {}, 0\r\n", body.len())),
                String::from_utf8_lossy(body)
            )
            .into_bytes(),
        ),
        (
            "TE tab",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding:\tchunked\t\r\n")
            )
            .into_bytes(),
        ),
        (
            "TE chunked, identity",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding: chunked, identity\r\n")
            )
            .into_bytes(),
        ),
        (
            "TE xchunked",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding: xchunked\r\n")
            )
            .into_bytes(),
        ),
        (
            "TE twice",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding: identity\r\ntransfer-encoding: chunked\r\n")
            )
            .into_bytes(),
        ),
        (
            "obs-fold",
            format!(
                "{}{chunked_body}{smuggled}",
                head("x-foo: a\r\n transfer-encoding: chunked\r\n")
            )
            .into_bytes(),
        ),
        (
            "space before colon",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding : chunked\r\n")
            )
            .into_bytes(),
        ),
        (
            "TE on HTTP/1.0",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding: chunked\r\n")
            )
            .replacen("HTTP/1.1", "HTTP/1.0", 1)
            .into_bytes(),
        ),
        (
            "negative CL",
            format!(
                "{}{}",
                head("content-length: -1\r\n"),
                String::from_utf8_lossy(body)
            )
            .into_bytes(),
        ),
        (
            "bare LF",
            format!(
                "{}{chunked_body}{smuggled}",
                head("transfer-encoding: chunked\r\n")
            )
            .replace("\r\n", "\n")
            .into_bytes(),
        ),
    ];
    let mut set = tokio::task::JoinSet::new();
    for (name, bytes) in cases {
        let addr = h.addr;
        set.spawn(async move {
            (
                name,
                raw_exchange(addr, &bytes, Duration::from_millis(1500)).await,
            )
        });
    }
    while let Some(res) = set.join_next().await {
        let (name, raw) = res.unwrap();
        let st = statuses(&raw);
        assert!(!st.is_empty(), "{name}: no answer");
        // The smuggled request is never answered as a request of its own with a 2xx, and at
        // most the first request can succeed.
        assert!(st.iter().skip(1).all(|s| *s >= 400), "{name}: {raw}");
        assert!(!raw.contains(API_KEY));
    }
    // Nothing but alice's own executions arrived, re-framed, each with its own Content-Length
    // and no client framing headers; the smuggled Gmail execution never did.
    assert_eq!(h.sandbox.count("POST", "/api/v3.1/tools/execute/GMAIL"), 0);
    for r in h.upstream(EXEC_PREFIX) {
        assert_eq!(r.path, EXEC);
        assert_pinned(&r, "user_id", "alice");
        assert!(r.header("transfer-encoding").is_none());
        assert_eq!(
            r.header("content-length")
                .map(|v| v.parse::<usize>().unwrap()),
            Some(r.body.len())
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn expect_100_continue_never_lets_a_refused_body_through() {
    let h = start().await;
    let t = token("alice");
    let body = br#"{"user_id":"bob","arguments":{}}"#;
    // No token: refused before the body is asked for.
    let head = format!(
        "POST {EXEC} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let raw = raw_exchange(h.addr, head.as_bytes(), Duration::from_secs(3)).await;
    assert_eq!(statuses(&raw), vec![401], "{raw}");
    h.assert_nothing_forwarded();
    // With a token: 100 Continue, then the body, then the pinned execution.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let head = head.replace("expect:", &format!("x-api-key: {t}\r\nexpect:"));
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 100"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let raw = String::from_utf8_lossy(&out);
    assert_eq!(statuses(&raw), vec![200], "{raw}");
    assert_pinned(&h.upstream(EXEC_PREFIX)[0], "user_id", "alice");
    h.shutdown().await;
}

#[tokio::test]
async fn hop_by_hop_and_spoofed_headers_never_reach_upstream() {
    let h = start().await;
    let t = token("alice");
    let spoofed = [
        ("host", "backend.composio.dev"),
        ("x-forwarded-for", "10.0.0.1"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-user", "bob"),
        ("x-forwarded-prefix", "/admin"),
        ("forwarded", "for=1.2.3.4;host=evil;proto=https"),
        ("x-real-ip", "10.0.0.2"),
        ("x-original-url", "/api/v3.1/api_keys"),
        ("x-rewrite-url", "/api/v3.1/api_keys"),
        ("x-user-id", "bob"),
        ("x-entity-id", "bob"),
        ("x-composio-user-id", "bob"),
        ("x-org-id", "org_evil"),
        ("x-project-id", "prj_evil"),
        ("x-user-api-key", "uak_evil"),
        ("x-org-api-key", "oak_evil"),
        ("cookie", "session=evil"),
        ("proxy-authorization", "Basic ZXZpbA=="),
        ("te", "trailers"),
        ("upgrade", "h2c"),
        ("keep-alive", "timeout=999"),
        (
            "connection",
            "x-api-key, x-request-id, content-type, keep-alive, te, upgrade",
        ),
    ];
    for (m, p, body) in [
        (Method::POST, EXEC, Some(r#"{"arguments":{}}"#)),
        (Method::GET, "/api/v3.1/tools", None),
        (Method::GET, "/api/v3.1/connected_accounts", None),
    ] {
        h.sandbox.clear();
        let mut b = Request::builder()
            .method(m.clone())
            .uri(h.url(p))
            .header("x-api-key", &t);
        for (k, v) in spoofed {
            b = b.header(k, v);
        }
        let req = match body {
            Some(s) => b
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(s))),
            None => b.body(Full::new(Bytes::new())),
        }
        .unwrap();
        let r = h.raw(req).await;
        assert!(r.status.is_success(), "{m} {p}: {}", r.text());
        let sent = h.upstream(p);
        assert!(!sent.is_empty(), "{m} {p}");
        for rec in &sent {
            // `Connection: x-api-key` did not strip the injected key.
            assert_only_real_key(rec);
            for (k, _) in spoofed {
                if k == "host" {
                    continue;
                }
                assert!(rec.header(k).is_none(), "{k} reached upstream on {m} {p}");
            }
            assert_eq!(
                rec.header_all("host"),
                vec![h.upstream_addr().to_string()],
                "{m} {p}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn http2_gets_the_same_treatment() {
    let h = start().await;
    let c = h2_client();
    let (alice, bob) = (token("alice"), token("bob"));
    let req = |m: Method, path: &str, hdrs: &[(&str, &str)], body: &'static [u8]| {
        let mut b = Request::builder()
            .method(m)
            .uri(format!("http://{}{path}", h.addr))
            .version(http::Version::HTTP_2);
        for (k, v) in hdrs {
            b = b.header(*k, *v);
        }
        b.body(Full::new(Bytes::from_static(body))).unwrap()
    };
    let json_ct = ("content-type", "application/json");
    // Forged identity, every spelling, is pinned.
    let resp = c
        .request(req(
            Method::POST,
            EXEC,
            &[
                ("x-api-key", &alice),
                json_ct,
                ("x-forwarded-user", "bob"),
                ("x-user-id", "bob"),
            ],
            br#"{"user_id":"bob","User_Id":"bob","user\u005fid2":"x","arguments":{}}"#,
        ))
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let r = collect(resp).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream(EXEC_PREFIX);
    assert_eq!(sent.len(), 1);
    assert_pinned(&sent[0], "user_id", "alice");
    assert!(sent[0].header("x-forwarded-user").is_none() && sent[0].header("x-user-id").is_none());
    assert_eq!(
        sent[0].header_all("host"),
        vec![h.upstream_addr().to_string()]
    );

    // Refusals, each with nothing forwarded.
    h.sandbox.clear();
    let bearer_bob = format!("Bearer {bob}");
    let cases: Vec<(Request<Full<Bytes>>, u16, &str)> = vec![
        (
            req(
                Method::POST,
                EXEC,
                &[
                    ("x-api-key", &alice),
                    ("authorization", &bearer_bob),
                    json_ct,
                ],
                b"{}",
            ),
            401,
            "token_conflict",
        ),
        (
            req(
                Method::POST,
                EXEC,
                &[("x-api-key", API_KEY), json_ct],
                b"{}",
            ),
            401,
            "token_malformed",
        ),
        (
            req(
                Method::POST,
                EXEC,
                &[("x-api-key", &alice), json_ct],
                br#"{"user_id":"a","user_id":"b"}"#,
            ),
            400,
            "duplicate_key",
        ),
        (
            req(
                Method::POST,
                EXEC,
                &[("x-api-key", &alice), json_ct, ("content-encoding", "gzip")],
                b"{}",
            ),
            415,
            "unsupported_content_encoding",
        ),
        (
            req(
                Method::POST,
                EXEC,
                &[("x-api-key", &alice), ("content-type", "text/plain")],
                b"{}",
            ),
            415,
            "unsupported_media_type",
        ),
        (
            req(
                Method::GET,
                "/api/v3.1/tools",
                &[("x-api-key", &alice), ("x-http-method-override", "DELETE")],
                b"",
            ),
            400,
            "method_override_not_allowed",
        ),
        (
            req(
                Method::POST,
                &format!("{EXEC}?user_id=bob"),
                &[("x-api-key", &alice), json_ct],
                b"{}",
            ),
            400,
            "query_not_allowed",
        ),
        (
            req(
                Method::GET,
                "/api/v3.1/x/../tools",
                &[("x-api-key", &alice)],
                b"",
            ),
            400,
            "path_not_canonical",
        ),
        (
            req(
                Method::GET,
                "/api/v3.1/%2e%2e/v1/apps",
                &[("x-api-key", &alice)],
                b"",
            ),
            400,
            "path_not_canonical",
        ),
        (
            req(
                Method::GET,
                "/api/v3.1/tools/",
                &[("x-api-key", &alice)],
                b"",
            ),
            400,
            "path_not_canonical",
        ),
        (
            req(
                Method::GET,
                "/API/v3.1/tools",
                &[("x-api-key", &alice)],
                b"",
            ),
            403,
            "route_not_allowed",
        ),
        (
            req(
                Method::GET,
                "/api/v3.1/api_keys",
                &[("x-api-key", &alice)],
                b"",
            ),
            403,
            "route_not_allowed",
        ),
        (
            req(
                Method::POST,
                EXEC,
                &[("x-api-key", &alice), json_ct],
                br#"{"connected_account_id":"ca_bob_github","arguments":{}}"#,
            ),
            403,
            "connected_account_not_owned",
        ),
    ];
    for (rq, status, slug) in cases {
        let what = format!("{} {}", rq.method(), rq.uri());
        let r = collect(c.request(rq).await.unwrap()).await;
        assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
        assert_eq!(r.slug(), slug, "{what}");
    }
    assert_refused_before_upstream(&h);

    // A spoofed :authority does not pick the upstream.
    h.sandbox.clear();
    let rq = Request::get(format!("http://{}/api/v3.1/tools", h.addr))
        .version(http::Version::HTTP_2)
        .header("x-api-key", &alice)
        .header("host", "evil.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = collect(c.request(rq).await.unwrap()).await;
    assert!(
        r.status.is_success() || r.status.is_client_error(),
        "{}",
        r.text()
    );
    for rec in h.sandbox.requests() {
        assert_eq!(rec.header_all("host"), vec![h.upstream_addr().to_string()]);
        assert_only_real_key(&rec);
    }
    h.shutdown().await;
}

// ============================================================================================
// connected accounts
// ============================================================================================

#[tokio::test]
async fn another_users_connected_account_is_refused_on_every_route() {
    let h = start().await;
    let t = token("alice");
    let bob_acc = "ca_bob_github";
    let calls: Vec<(Method, &str, Option<Value>)> = vec![
        (
            Method::POST,
            EXEC,
            Some(json!({"connected_account_id": bob_acc, "arguments": {}})),
        ),
        (
            Method::POST,
            EXEC,
            Some(json!({"connectedAccountId": bob_acc, "arguments": {}})),
        ),
        (
            Method::POST,
            EXEC,
            Some(json!({"Connected_Account_Id": bob_acc, "arguments": {}})),
        ),
        (
            Method::POST,
            EXEC,
            Some(json!({"connected_account_id": bob_acc, "user_id": "bob", "arguments": {}})),
        ),
        (
            Method::POST,
            "/api/v3/tools/execute/GITHUB_CREATE_ISSUE",
            Some(json!({"connected_account_id": bob_acc, "arguments": {}})),
        ),
        (
            Method::POST,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(json!({"connectedAccountId": bob_acc, "appName": "github", "input": {}})),
        ),
        (
            Method::POST,
            "/api/v1/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(json!({"connectedAccountId": bob_acc, "appName": "github", "input": {}})),
        ),
        (
            Method::POST,
            "/api/v3.1/tools/execute/proxy",
            Some(json!({"connected_account_id": bob_acc, "endpoint": "/user", "method": "GET"})),
        ),
        (
            Method::POST,
            "/api/v2/actions/proxy",
            Some(json!({"connectedAccountId": bob_acc, "endpoint": "/user", "method": "GET"})),
        ),
        (
            Method::POST,
            "/api/v3.1/trigger_instances/GITHUB_STAR_ADDED_EVENT/upsert",
            Some(json!({"connected_account_id": bob_acc, "trigger_config": {}})),
        ),
        (
            Method::POST,
            "/api/v3.1/mcp/servers/generate",
            Some(json!({"mcp_server_id": "mcp_1", "connected_account_ids": [bob_acc]})),
        ),
        (
            Method::POST,
            "/api/v3.1/tool_router/session",
            Some(
                json!({"toolkits": {"enable": ["github"]}, "connected_accounts": {"github": [bob_acc]}}),
            ),
        ),
        (
            Method::GET,
            "/api/v3.1/trigger_instances/active?connected_account_ids=ca_bob_github",
            None,
        ),
        // The shared "instant" account is nobody's own.
        (
            Method::POST,
            EXEC,
            Some(json!({"connected_account_id": "instant_account", "arguments": {}})),
        ),
        (
            Method::POST,
            EXEC,
            Some(json!({"connected_account_id": "INSTANT_ACCOUNT", "arguments": {}})),
        ),
        (
            Method::POST,
            "/api/v3.1/tools/execute/proxy",
            Some(
                json!({"connected_account_id": "instant_account", "endpoint": "/user", "method": "GET"}),
            ),
        ),
    ];
    for (m, p, body) in calls {
        let r = h.send(m.clone(), p, Some(&t), body.clone()).await;
        assert!(
            r.status == StatusCode::FORBIDDEN || r.status == StatusCode::NOT_FOUND,
            "{m} {p} {body:?}: {} {}",
            r.status,
            r.text()
        );
    }
    // Path-addressed: every verb on bob's account (and an id that does not exist) is 404.
    for (m, p) in [
        (Method::GET, "/api/v3.1/connected_accounts/ca_bob_github"),
        (Method::PATCH, "/api/v3.1/connected_accounts/ca_bob_github"),
        (Method::DELETE, "/api/v3.1/connected_accounts/ca_bob_github"),
        (
            Method::POST,
            "/api/v3.1/connected_accounts/ca_bob_github/refresh",
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_bob_github/status",
        ),
        (
            Method::POST,
            "/api/v3.1/connected_accounts/ca_bob_github/revoke",
        ),
        (Method::GET, "/api/v1/connectedAccounts/ca_bob_github"),
        (Method::DELETE, "/api/v1/connectedAccounts/ca_bob_github"),
    ] {
        let r = h.send(m.clone(), p, Some(&t), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{m} {p}: {}", r.text());
    }
    // Nothing but alice's own lookups reached Composio.
    for r in h.sandbox.requests() {
        assert_only_real_key(&r);
        assert_eq!(r.method, "GET", "{} {}", r.method, r.path);
        for (k, v) in r.query_pairs() {
            if is_identity_key(&k) {
                assert_eq!(v, "alice", "{} {k}", r.path);
            }
        }
    }
    let bob = h.sandbox.account(bob_acc).unwrap();
    assert!(!bob.is_disabled && bob.status == "ACTIVE");
    h.shutdown().await;
}

#[tokio::test]
async fn ids_that_disagree_are_refused() {
    let h = start().await;
    let t = token("alice");
    // Two spellings naming two accounts: which would Composio use? Refused.
    for body in [
        json!({"connected_account_id": "ca_alice_github", "connectedAccountId": "ca_bob_github", "arguments": {}}),
        json!({"connected_account_id": "ca_bob_github", "connectedAccountId": "ca_alice_github", "arguments": {}}),
        json!({"connected_account_id": "ca_alice_github", "connected_auth_id": "ca_bob_github", "arguments": {}}),
        json!({"connected_account_id": ["ca_alice_github"], "arguments": {}}),
        json!({"connected_account_id": {"id": "ca_bob_github"}, "arguments": {}}),
    ] {
        let r = h
            .send(Method::POST, EXEC, Some(&t), Some(body.clone()))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text());
    }
    // A path naming alice's account, a body naming another account (bob's, or alice's own
    // other one), at the top or inside `connection`: path and body disagree, refused.
    for (m, p, body) in [
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github",
            json!({"connection": {"connected_account_id": "ca_bob_github", "user_id": "bob"}}),
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github",
            json!({"connected_account_id": "ca_bob_github", "alias": "x"}),
        ),
        (
            Method::POST,
            "/api/v3.1/connected_accounts/ca_alice_github/refresh",
            json!({"connectedAccountId": "ca_alice_slack"}),
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github/status",
            json!({"enabled": false, "connection": {"connected_auth_id": "ca_bob_github"}}),
        ),
    ] {
        let r = h.send(m.clone(), p, Some(&t), Some(body.clone())).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{m} {p} {body}: {}",
            r.text()
        );
        assert_eq!(r.slug(), "body_invalid");
    }
    assert!(h.upstream("/api/v3.1/connected_accounts/").is_empty());
    // Naming the path's own account in the body is fine.
    let r = h
        .send(
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github",
            Some(&t),
            Some(json!({"connected_account_id": "ca_alice_github", "alias": "work"})),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    h.assert_no_execution();
    let bob = h.sandbox.account("ca_bob_github").unwrap();
    assert!(!bob.is_disabled && bob.status == "ACTIVE");
    h.shutdown().await;
}

#[tokio::test]
async fn shared_account_options_are_refused() {
    let h = start().await;
    let t = token("alice");
    for q in [
        "account_type=SHARED",
        "account_type=ALL",
        "account_type=shared",
        "accountType=ALL",
    ] {
        let r = h
            .send(
                Method::GET,
                &format!("/api/v3.1/connected_accounts?{q}"),
                Some(&t),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{q}: {}", r.text());
        assert_eq!(r.slug(), "shared_accounts_not_allowed", "{q}");
    }
    let shared =
        json!({"account_type": "SHARED", "acl_config_for_shared": {"allow_all_users": true}});
    for (m, p, body) in [
        (
            Method::POST,
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "connection": {"user_id": "alice"}, "experimental": shared.clone()}),
        ),
        (
            Method::POST,
            "/api/v3.1/connected_accounts",
            json!({"auth_config": {"id": "ac_github"}, "connection": {"user_id": "alice", "experimental": shared.clone()}}),
        ),
        (
            Method::PATCH,
            "/api/v3.1/connected_accounts/ca_alice_github",
            json!({"Experimental": shared.clone()}),
        ),
    ] {
        let r = h.send(m.clone(), p, Some(&t), Some(body)).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {p}: {}", r.text());
        assert_eq!(r.slug(), "shared_accounts_not_allowed");
    }
    for r in h.sandbox.requests() {
        assert_eq!(r.method, "GET");
        assert!(r.query_param("account_type").is_none());
    }
    h.shutdown().await;
}

// ============================================================================================
// credential leaks
// ============================================================================================

#[tokio::test]
async fn the_key_never_comes_back_in_responses_errors_or_logs() {
    let audit = std::env::temp_dir().join(format!(
        "entitygate-adversarial-audit-{}.jsonl",
        uuid_like()
    ));
    let h = start_with(&format!(
        "[audit]\npath = {:?}\n",
        audit.display().to_string()
    ))
    .await;
    let t = token("alice");
    let c = h2_client();
    for fault in [
        Fault::EchoHeaders,
        Fault::Status(500),
        Fault::Status(401),
        Fault::Garbage,
    ] {
        h.sandbox.set_fault(fault.clone());
        for (m, p, body) in [
            (
                Method::POST,
                EXEC,
                Some(json!({"arguments": {"echo": "me"}})),
            ),
            (Method::GET, "/api/v3.1/tools", None),
            (Method::GET, "/api/v3.1/connected_accounts", None),
            (
                Method::GET,
                "/api/v3.1/connected_accounts/ca_alice_github",
                None,
            ),
            (Method::GET, "/api/v2/actions", None),
        ] {
            // HTTP/1 (the harness asserts no key in headers or body) ...
            let r = h.send(m.clone(), p, Some(&t), body.clone()).await;
            if fault == Fault::EchoHeaders && r.status == StatusCode::OK {
                assert!(r.text().contains("[REDACTED]"), "{p}: {}", r.text());
            }
            // ... and HTTP/2.
            let rq = Request::builder()
                .method(m)
                .uri(format!("http://{}{p}", h.addr))
                .header("x-api-key", &t)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    body.map(|b| b.to_string()).unwrap_or_default(),
                )))
                .unwrap();
            collect(c.request(rq).await.unwrap()).await;
        }
    }
    h.sandbox.set_fault(Fault::None);
    h.shutdown().await;
    let trail = std::fs::read_to_string(&audit).unwrap_or_default();
    assert!(!trail.is_empty(), "the audit trail was written");
    assert!(!trail.contains(API_KEY), "the key is in the audit trail");
    assert!(!trail.contains(&t), "a token is in the audit trail");
    let _ = std::fs::remove_file(&audit);
    let logs = logs().lock().unwrap().clone();
    let logs = String::from_utf8_lossy(&logs);
    assert!(!logs.is_empty(), "logs were captured");
    assert!(!logs.contains(API_KEY), "the key is in the logs");
    assert!(!logs.contains(&t), "a token is in the logs");
    assert!(!logs.contains(SECRET), "the JWT secret is in the logs");
}

// ============================================================================================
// concurrency
// ============================================================================================

/// Many users interleaved on a few shared keep-alive HTTP/1 connections and one HTTP/2
/// connection, each request forging another user's id in a rotating spelling and carrying a
/// nonce. Afterwards, every execution the sandbox recorded names exactly the nonce's owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cross_tenant_delivery_under_concurrency() {
    const USERS: usize = 200;
    const H1_CONNS: usize = 6;
    const H2_STREAMS: usize = 48;
    let total: usize = std::env::var("ENTITYGATE_ADVERSARIAL_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let h = start().await;
    h.sandbox.add_bulk_accounts("u", USERS, &["github"]);
    let tokens: Arc<Vec<String>> = Arc::new((0..USERS).map(|u| token(&format!("u{u}"))).collect());
    let spellings = [
        "user_id",
        "userId",
        "User_Id",
        "entityId",
        "entity_id",
        "user\\u005fid",
    ];
    // Deterministic pseudo-random choice of (user, forged user, spelling) per request.
    let plan = move |i: usize| {
        let x = (i as u64)
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let user = (x >> 33) as usize % USERS;
        let forged = (user + 1 + (x >> 17) as usize % (USERS - 1)) % USERS;
        (user, forged, spellings[(x >> 7) as usize % spellings.len()])
    };
    let body_for = move |i: usize| {
        let (user, forged, spelling) = plan(i);
        let body = format!(
            "{{\"{spelling}\":\"u{forged}\",\"arguments\":{{\"nonce\":\"n{i}\",\"owner\":\"u{forged}\"}}}}"
        );
        (user, body)
    };
    let check = |i: usize, user: usize, status: StatusCode, body: &[u8]| {
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i}: {}",
            String::from_utf8_lossy(body)
        );
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            v["data"]["user_id"],
            format!("u{user}"),
            "request {i} answered for another user"
        );
        assert_eq!(
            v["data"]["arguments"]["nonce"],
            format!("n{i}"),
            "request {i} got another's answer"
        );
        assert!(!String::from_utf8_lossy(body).contains(API_KEY));
    };

    let half = total / 2;
    let mut set = tokio::task::JoinSet::new();
    // HTTP/1: a few shared keep-alive connections, each serving a strided share of requests.
    for c in 0..H1_CONNS {
        let (addr, tokens) = (h.addr, tokens.clone());
        set.spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut i = c;
            while i < half {
                let (user, body) = body_for(i);
                let req = Request::post(EXEC)
                    .header("host", addr.to_string())
                    .header("x-api-key", &tokens[user])
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                sender.ready().await.unwrap();
                let resp = sender.send_request(req).await.unwrap();
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                check(i, user, status, &bytes);
                i += H1_CONNS;
            }
        });
    }
    // HTTP/2: one connection, many concurrent streams.
    let stream = TcpStream::connect(h.addr).await.unwrap();
    let (h2, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for s in 0..H2_STREAMS {
        let (addr, tokens, mut h2) = (h.addr, tokens.clone(), h2.clone());
        set.spawn(async move {
            let mut i = half + s;
            while i < total {
                let (user, body) = body_for(i);
                let req = Request::post(format!("http://{addr}{EXEC}"))
                    .header("x-api-key", &tokens[user])
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                h2.ready().await.unwrap();
                let resp = h2.send_request(req).await.unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let status = resp.status();
                let bytes = resp.into_body().collect().await.unwrap().to_bytes();
                check(i, user, status, &bytes);
                i += H2_STREAMS;
            }
        });
    }
    while let Some(res) = set.join_next().await {
        res.unwrap();
    }

    // Per request, at the fake upstream: the nonce's owner and nobody else.
    let sent = h.upstream(EXEC_PREFIX);
    assert_eq!(sent.len(), total, "every request forwarded exactly once");
    let mut seen = vec![false; total];
    for r in &sent {
        let body = assert_pinned_fast(r);
        let nonce = body["arguments"]["nonce"].as_str().unwrap();
        let i: usize = nonce[1..].parse().unwrap();
        assert!(
            !std::mem::replace(&mut seen[i], true),
            "nonce {nonce} forwarded twice"
        );
        let (user, _, _) = plan(i);
        assert_eq!(
            body["user_id"],
            format!("u{user}"),
            "nonce {nonce} arrived as another user"
        );
    }
    assert!(seen.iter().all(|s| *s));
    h.shutdown().await;
}

/// [`assert_pinned`] without the subject (checked by the caller), for the big loop.
fn assert_pinned_fast(r: &Recorded) -> Value {
    assert_eq!(r.header_all("x-api-key"), vec![API_KEY]);
    assert!(r.header("authorization").is_none());
    let body = r.json().unwrap();
    let ids = identity_keys(&body);
    assert_eq!(ids.len(), 1, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ids[0].0, "user_id");
    body
}

// ============================================================================================
// faults
// ============================================================================================

/// A request that must finish (with any answer or error) well within `secs`.
async fn bounded<T>(secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("the gateway answered instead of hanging")
}

/// A gateway built from the harness config with `edit` applied to the TOML text.
async fn custom_gateway(
    upstream: SocketAddr,
    extra: &str,
    edit: impl Fn(String) -> String,
) -> entitygate::RunningGateway {
    logs();
    let toml = edit(config_toml(upstream, extra));
    let config = entitygate::Config::from_toml(&toml).unwrap();
    let gw = entitygate::Gateway::builder(config)
        .env(env())
        .build()
        .await
        .unwrap();
    gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn exec_at(addr: SocketAddr, user: &str) -> Reply {
    let req = Request::post(format!("http://{addr}{EXEC}"))
        .header("x-api-key", token(user))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"user_id":"bob","arguments":{}}"#,
        )))
        .unwrap();
    collect(client().request(req).await.unwrap()).await
}

#[tokio::test]
async fn upstream_faults_give_clear_5xx_and_recover() {
    let sandbox = Sandbox::with_demo_data(API_KEY);
    let upstream = sandbox.start().await.unwrap();
    let gw = custom_gateway(upstream, "", |t| {
        t.replace(
            "api_key_env = \"COMPOSIO_API_KEY\"",
            "api_key_env = \"COMPOSIO_API_KEY\"\nrequest_timeout_secs = 1\nexecute_timeout_secs = 1\nlookup_timeout_secs = 1",
        )
    })
    .await;
    let addr = gw.local_addr();

    // Slow past the timeout: a clear 504, never a hang.
    sandbox.set_fault_for(EXEC_PREFIX, Fault::Delay(Duration::from_secs(3)));
    let r = bounded(10, exec_at(addr, "alice")).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    // Reset: 502.
    sandbox.set_fault_for(EXEC_PREFIX, Fault::Reset);
    let r = bounded(10, exec_at(addr, "alice")).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    // Upstream error statuses are relayed as errors, with the key redacted.
    sandbox.set_fault_for(EXEC_PREFIX, Fault::Status(503));
    let r = bounded(10, exec_at(addr, "alice")).await;
    assert!(r.status.is_server_error(), "{}", r.text());
    sandbox.set_fault_for(EXEC_PREFIX, Fault::None);

    // The status lookup fails in every way: the execution is refused (fail closed), never
    // forwarded without the check. bob's github is ACTIVE, but his status is not cached yet.
    for fault in [
        Fault::Garbage,
        Fault::Reset,
        Fault::Status(500),
        Fault::Delay(Duration::from_secs(3)),
    ] {
        sandbox.set_fault_for("/api/v3.1/connected_accounts", fault.clone());
        let before = sandbox.count("POST", EXEC_PREFIX);
        let r = bounded(10, exec_at(addr, "bob")).await;
        assert!(r.status.is_server_error(), "{fault:?}: {}", r.text());
        assert_eq!(
            sandbox.count("POST", EXEC_PREFIX),
            before,
            "{fault:?}: forwarded"
        );
    }
    sandbox.set_fault_for("/api/v3.1/connected_accounts", Fault::None);
    // Tool metadata lookup failing is no weaker.
    sandbox.set_fault_for("/api/v3.1/tools/", Fault::Garbage);
    let before = sandbox.count("POST", EXEC_PREFIX);
    let req = Request::post(format!(
        "http://{addr}/api/v3.1/tools/execute/SLACK_SEND_MESSAGE"
    ))
    .header("x-api-key", token("alice"))
    .header("content-type", "application/json")
    .body(Full::new(Bytes::from_static(b"{\"arguments\":{}}")))
    .unwrap();
    let r = bounded(10, async {
        collect(client().request(req).await.unwrap()).await
    })
    .await;
    assert!(
        r.status.is_server_error() || r.status.is_client_error(),
        "{}",
        r.text()
    );
    assert_eq!(sandbox.count("POST", EXEC_PREFIX), before);
    sandbox.set_fault_for("/api/v3.1/tools/", Fault::None);

    // Recovery.
    let r = bounded(10, exec_at(addr, "bob")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = sandbox.requests_to(EXEC_PREFIX);
    assert_pinned(sent.last().unwrap(), "user_id", "bob");
    gw.shutdown().await;
    sandbox.stop();
}

#[tokio::test]
async fn upstream_refusing_connections_or_dying_mid_response() {
    // Refused connections.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = custom_gateway(dead, "[connections]\ngate = false", |t| t).await;
    let r = bounded(15, exec_at(gw.local_addr(), "alice")).await;
    // The tool lookup or the execution fails: either way a clear 5xx, nothing hangs.
    assert!(
        r.status == StatusCode::BAD_GATEWAY || r.status == StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        r.text()
    );
    let req = Request::get(format!("http://{}/api/v3.1/tools", gw.local_addr()))
        .header("x-api-key", token("alice"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = bounded(15, async {
        collect(client().request(req).await.unwrap()).await
    })
    .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text());
    gw.shutdown().await;

    // An upstream that sends a head and part of a body, then closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let s2 = served.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let s2 = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = s.read(&mut buf).await;
                s2.fetch_add(1, Ordering::SeqCst);
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"items\":[\"{API_KEY}"
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = s.shutdown().await;
            });
        }
    });
    let gw = custom_gateway(up, "[connections]\ngate = false", |t| t).await;
    for _ in 0..3 {
        let req = Request::get(format!("http://{}/api/v3.1/tools", gw.local_addr()))
            .header("x-api-key", token("alice"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let outcome = bounded(15, async {
            let resp = client().request(req).await?;
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|c| c.to_bytes());
            Ok::<_, hyper_util::client::legacy::Error>((status, body))
        })
        .await;
        // A truncated body must not be passed off as complete, and never has the key.
        if let Ok((status, Ok(b))) = outcome {
            assert!(
                status.is_server_error(),
                "{status}: {}",
                String::from_utf8_lossy(&b)
            );
            assert!(!String::from_utf8_lossy(&b).contains(API_KEY));
        }
    }
    assert!(served.load(Ordering::SeqCst) >= 1);
    gw.shutdown().await;
    task.abort();
}

#[tokio::test]
async fn jwks_down_or_garbage_fails_closed_and_recovers() {
    // Down at start: RS256 tokens get a clear 503, never a weaker check.
    let idp = KeyServer::start(500, b"down".to_vec()).await;
    let h = start_with(&format!(
        "[auth.jwks]\nurl = \"{}\"\nmin_refetch_secs = 1\n",
        idp.url()
    ))
    .await;
    let rs = |kid: &str, sub: &str| {
        mint(
            Algorithm::RS256,
            &rsa_key(),
            with_kid(kid),
            &good_claims(sub),
        )
    };
    let r = bounded(15, exec_as(&h, &rs("k1", "alice"))).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.slug(), "keys_unavailable");
    // A token without kid, and an HS256 token claiming the JWKS kid, are not let through.
    let r = bounded(
        15,
        exec_as(
            &h,
            &mint(
                Algorithm::RS256,
                &rsa_key(),
                Header::default(),
                &good_claims("alice"),
            ),
        ),
    )
    .await;
    assert!(
        r.status == StatusCode::SERVICE_UNAVAILABLE || r.status == StatusCode::UNAUTHORIZED,
        "{}",
        r.text()
    );
    h.assert_nothing_forwarded();

    // Recovery: the IdP comes back; after the refetch interval the token is accepted.
    idp.set(200, jwks(&[rsa_jwk("k1")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = bounded(15, exec_as(&h, &rs("k1", "alice"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_pinned(&h.upstream(EXEC_PREFIX)[0], "user_id", "alice");

    // Rotation while the IdP serves garbage: the last good set is kept; the new kid is
    // refused (401), never accepted by some fallback.
    for garbage in [
        (200, b"<html>oops</html>".to_vec()),
        (200, b"{\"keys\": []}".to_vec()),
        (
            200,
            b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\", \"kid\": \"k2\"}]}".to_vec(),
        ),
        (503, b"{}".to_vec()),
    ] {
        idp.set(garbage.0, garbage.1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        h.sandbox.clear();
        let r = bounded(15, exec_as(&h, &rs("k2", "bob"))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        // An HS256 token signed with the "oct" key the garbage set offered.
        let t = mint(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"secret"),
            with_kid("k2"),
            &good_claims("bob"),
        );
        let r = bounded(15, exec_as(&h, &t)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text());
        h.assert_nothing_forwarded();
        let r = bounded(15, exec_as(&h, &rs("k1", "alice"))).await;
        assert_eq!(r.status, StatusCode::OK, "last good set kept: {}", r.text());
    }
    // The rotation completes.
    idp.set(200, jwks(&[rsa_jwk("k1"), rsa_jwk("k2")]));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.sandbox.clear();
    let r = bounded(15, exec_as(&h, &rs("k2", "carol"))).await;
    // carol has no github connection: the token is accepted, the gate refuses.
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.slug(), "app_not_connected", "{}", r.text());
    let r = bounded(15, exec_as(&h, &rs("k2", "alice"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_pinned(&h.upstream(EXEC_PREFIX)[0], "user_id", "alice");
    h.shutdown().await;
}

// ============================================================================================
// availability (issue 12, finding 9)
// ============================================================================================

/// `{"arguments": {"k0":0,"k1":0,...}}` with `n` keys in the arguments object.
fn wide_body(n: usize, repeat_last: bool) -> Vec<u8> {
    let mut s = String::from("{\"arguments\":{");
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("\"k{i}\":0"));
    }
    if repeat_last && n > 0 {
        s.push_str(&format!(",\"k{}\":1", n / 2));
    }
    s.push_str("}}");
    s.into_bytes()
}

/// Objects with more keys than `[limits] max_json_keys_per_object`, bodies nested deeper than
/// `max_json_depth`, and a key repeated in an object large enough to be checked by hashing are
/// refused with 4xx, and nothing reaches Composio.
#[tokio::test]
async fn oversized_json_shapes_are_refused_before_upstream() {
    let h = start_with("[limits]\nmax_json_keys_per_object = 100\nmax_json_depth = 8\n").await;
    let t = token("alice");
    let cases: Vec<(Vec<u8>, StatusCode, &str)> = vec![
        (
            wide_body(101, false),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_many_keys",
        ),
        (
            format!("{{\"arguments\":{}1{}}}", "[".repeat(8), "]".repeat(8)).into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_deep",
        ),
        (
            format!(
                "{{\"arguments\":{}1{}}}",
                "{\"a\":".repeat(8),
                "}".repeat(8)
            )
            .into_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_deep",
        ),
        (
            wide_body(90, true),
            StatusCode::BAD_REQUEST,
            "duplicate_key",
        ),
    ];
    for (body, status, slug) in cases {
        for path in [EXEC, "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute"] {
            let r = send(
                &h,
                exec_req_to(path, &t, Some("application/json"), body.clone()),
            )
            .await;
            assert_eq!(r.status, status, "{path} {slug}: {}", r.text());
            assert_eq!(r.slug(), slug, "{path}");
        }
    }
    assert_refused_before_upstream(&h);
    // Exactly at the limits (the top-level object is depth 1), the body is forwarded.
    let r = send(
        &h,
        exec_req(&t, Some("application/json"), wide_body(100, false)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let deep = format!("{{\"arguments\":{}1{}}}", "[".repeat(7), "]".repeat(7));
    let r = send(&h, exec_req(&t, Some("application/json"), deep)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

/// A large body (parsed on the blocking pool) with the default limits: a repeated key deep in
/// a wide object is found, and a clean one is forwarded byte for byte.
#[tokio::test]
async fn large_bodies_are_checked_as_strictly_as_small_ones() {
    let h = start().await;
    let t = token("alice");
    let r = send(
        &h,
        exec_req(&t, Some("application/json"), wide_body(9_000, true)),
    )
    .await;
    assert_eq!(r.slug(), "duplicate_key", "{}", r.status);
    let r = send(
        &h,
        exec_req(&t, Some("application/json"), wide_body(10_001, false)),
    )
    .await;
    assert_eq!(r.slug(), "body_too_many_keys", "{}", r.status);
    assert_refused_before_upstream(&h);
    let r = send(
        &h,
        exec_req(&t, Some("application/json"), wide_body(10_000, false)),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let sent = h.upstream(EXEC);
    let args = sent[0].json().unwrap()["arguments"].clone();
    assert_eq!(args.as_object().unwrap().len(), 10_000);
    h.shutdown().await;
}

/// Sends the head of an execution with `Content-Length: 64` and only part of the body, then
/// keeps the connection open without sending more. Returns the stream (dropping it closes).
async fn stalled_execution(addr: SocketAddr, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {EXEC} HTTP/1.1\r\nhost: gw\r\nx-api-key: {token}\r\n\
         content-type: application/json\r\ncontent-length: 64\r\n\r\n{{\"argum"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Reads one response head from `s` (up to `wait`), returning its status.
async fn read_status(s: &mut TcpStream, wait: Duration) -> Option<u16> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    statuses(&String::from_utf8_lossy(&out)).first().copied()
}

/// A client that sends the head and part of the body, then stalls, is answered 400
/// `body_read_timeout` after `[limits] body_read_timeout_secs`, and nothing reaches Composio.
#[tokio::test]
async fn a_stalled_body_is_refused_after_the_read_deadline() {
    let h = start_with("[limits]\nbody_read_timeout_secs = 1\n").await;
    let mut s = stalled_execution(h.addr, &token("alice")).await;
    let status = read_status(&mut s, Duration::from_secs(10)).await;
    assert_eq!(
        status,
        Some(400),
        "the stalled request was not answered in time"
    );
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

/// One user cannot take every in-flight slot: past `[limits] max_in_flight_per_subject`, that
/// user's next request is 429 `too_many_in_flight` with `Retry-After` and does not reach
/// Composio, while another user is served; the slots come back when the requests end.
#[tokio::test]
async fn one_subject_cannot_take_every_in_flight_slot() {
    let h =
        start_with("[limits]\nmax_in_flight_per_subject = 2\nbody_read_timeout_secs = 30\n").await;
    let alice = token("alice");
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(stalled_execution(h.addr, &alice).await);
    }
    // Both stalled requests are in flight once the gateway has authenticated them.
    let mut refused = None;
    for _ in 0..100 {
        let r = h
            .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
            .await;
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            refused = Some(r);
            break;
        }
        h.sandbox.clear();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = refused.expect("alice's third concurrent request was not refused");
    assert_eq!(r.slug(), "too_many_in_flight");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(r.headers.get("x-should-retry").is_none());
    h.assert_nothing_forwarded();
    // Bob is served meanwhile.
    let r = h
        .execute("bob", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Alice's slots come back when her stalled clients go away.
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        let r = h
            .execute("alice", "GITHUB_CREATE_ISSUE", json!({"arguments": {}}))
            .await;
        if r.status == StatusCode::OK {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "alice's slots were not released");
    h.shutdown().await;
}
