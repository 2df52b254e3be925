//! Test support shared by the tests of every auth file: keys, tokens, a JWKS server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{json, Value};

use super::Authenticator;
use crate::config::{AuthConfig, UpstreamConfig};
use crate::upstream::{build_client, HttpClient};

pub(crate) const HMAC_SECRET: &str = "test-only-hmac-secret-0123456789abcdef";

pub(crate) fn cert(name: &str) -> String {
    format!("{}/certs/dev/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn pem(name: &str) -> Vec<u8> {
    std::fs::read(cert(name)).unwrap()
}

pub(crate) fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&pem("jwt-rsa.key")).unwrap()
}

pub(crate) fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&pem("jwt-ec.key")).unwrap()
}

pub(crate) fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(&pem("jwt-ed25519.key")).unwrap()
}

pub(crate) fn hmac_key() -> EncodingKey {
    EncodingKey::from_secret(HMAC_SECRET.as_bytes())
}

/// The signing key for `alg` among the test keys.
pub(crate) fn key_for(alg: Algorithm) -> EncodingKey {
    match alg.family() {
        jsonwebtoken::AlgorithmFamily::Hmac => hmac_key(),
        jsonwebtoken::AlgorithmFamily::Rsa => rsa_key(),
        jsonwebtoken::AlgorithmFamily::Ec => ec_key(),
        jsonwebtoken::AlgorithmFamily::Ed => ed_key(),
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "iat": now()})
}

pub(crate) fn mint(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// A valid token for another payload, to graft its signature onto a different token.
pub(crate) fn other_token(alg: Algorithm, kid: Option<&str>) -> String {
    mint(alg, &key_for(alg), kid, &claims("someone-else"))
}

/// `token`'s header and payload with `donor`'s signature.
pub(crate) fn resign(token: &str, donor: &str) -> String {
    let (hp, _) = token.rsplit_once('.').unwrap();
    let (_, sig) = donor.rsplit_once('.').unwrap();
    format!("{hp}.{sig}")
}

pub(crate) fn client() -> HttpClient {
    build_client(&UpstreamConfig::default()).unwrap()
}

pub(crate) fn hmac_env() -> HashMap<String, String> {
    HashMap::from([("JWT_SECRET".to_owned(), HMAC_SECRET.to_owned())])
}

/// `[auth]` from TOML (top-level keys first, then `[[keys]]` / `[jwks]` tables).
pub(crate) fn auth_cfg(text: &str) -> AuthConfig {
    toml::from_str(text).unwrap()
}

/// One `[[keys]]` table using the test key of `alg`'s family.
pub(crate) fn static_key_toml(alg: &str, kid: Option<&str>) -> String {
    let a = super::keys::parse_alg(alg).unwrap();
    let source = match a.family() {
        jsonwebtoken::AlgorithmFamily::Hmac => "secret_env = \"JWT_SECRET\"".to_owned(),
        jsonwebtoken::AlgorithmFamily::Rsa => {
            format!("public_key_file = \"{}\"", cert("jwt-rsa.pub"))
        }
        jsonwebtoken::AlgorithmFamily::Ec => {
            format!("public_key_file = \"{}\"", cert("jwt-ec.pub"))
        }
        jsonwebtoken::AlgorithmFamily::Ed => {
            format!("public_key_file = \"{}\"", cert("jwt-ed25519.pub"))
        }
    };
    let kid = kid.map(|k| format!("kid = \"{k}\"\n")).unwrap_or_default();
    format!("[[keys]]\nalg = \"{alg}\"\n{kid}{source}\n")
}

fn jwk_value(key: &DecodingKey, kid: Option<&str>, alg: Option<&str>) -> Value {
    let mut v = serde_json::to_value(Jwk::from_decoding_key(key, None).unwrap()).unwrap();
    if let Some(kid) = kid {
        v["kid"] = kid.into();
    }
    if let Some(alg) = alg {
        v["alg"] = alg.into();
    }
    v
}

pub(crate) fn rsa_jwk(kid: Option<&str>, alg: Option<&str>) -> Value {
    jwk_value(
        &DecodingKey::from_rsa_pem(&pem("jwt-rsa.pub")).unwrap(),
        kid,
        alg,
    )
}

pub(crate) fn ec_jwk(kid: Option<&str>, alg: Option<&str>) -> Value {
    jwk_value(
        &DecodingKey::from_ec_pem(&pem("jwt-ec.pub")).unwrap(),
        kid,
        alg,
    )
}

pub(crate) fn ed_jwk(kid: Option<&str>, alg: Option<&str>) -> Value {
    jwk_value(
        &DecodingKey::from_ed_pem(&pem("jwt-ed25519.pub")).unwrap(),
        kid,
        alg,
    )
}

/// A P-256 key that is not the signing key (the dev server certificate's key).
pub(crate) fn other_ec_jwk(kid: Option<&str>) -> Value {
    let enc = EncodingKey::from_ec_pem(&pem("server.key")).unwrap();
    let mut v =
        serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
    if let Some(kid) = kid {
        v["kid"] = kid.into();
    }
    v
}

pub(crate) fn jwks_body(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

/// An authenticator using only `srv`'s JWKS.
pub(crate) async fn jwks_auth(
    srv: &JwksServer,
    min_refetch: u64,
    refresh: u64,
    top: &str,
) -> Authenticator {
    let cfg = auth_cfg(&format!(
        "{top}\n[jwks]\nurl = \"{}\"\nmin_refetch_secs = {min_refetch}\nrefresh_secs = {refresh}\n",
        srv.url()
    ));
    Authenticator::new(&cfg, &hmac_env(), client())
        .await
        .unwrap()
}

#[derive(Clone)]
struct Reply {
    status: u16,
    body: Vec<u8>,
    delay: Duration,
}

/// A local HTTP server answering every request with the current reply, counting requests.
pub(crate) struct JwksServer {
    addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(body: Vec<u8>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (r, h) = (reply.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, h) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                        let (r, h) = (r.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let reply = r.lock().unwrap().clone();
                            tokio::time::sleep(reply.delay).await;
                            let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
                            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                            resp.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
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

    pub(crate) fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub(crate) fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub(crate) fn set_body(&self, body: Vec<u8>) {
        self.reply.lock().unwrap().body = body;
    }

    pub(crate) fn set_status(&self, status: u16) {
        self.reply.lock().unwrap().status = status;
    }

    pub(crate) fn set_delay(&self, delay: Duration) {
        self.reply.lock().unwrap().delay = delay;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
