//! The remote JWKS: fetched at start, refreshed periodically, and refetched (single-flight and
//! rate-limited) when a token names an unknown `kid` or a known `kid` fails its signature.
//!
//! A failed fetch (non-200, garbage, no usable key, timeout, oversized body) keeps the last good
//! set. The set lives behind a `std::sync::RwLock` that is only held to clone an `Arc`; the
//! single-flight gate is a `tokio::sync::Mutex`, the one lock held across `.await`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::Algorithm;

use super::cache::TokenCache;
use super::keys::{self, KeySet};
use crate::config::{ConfigError, JwksConfig};
use crate::upstream::HttpClient;

/// Whole-exchange timeout for one JWKS fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS body read.
const MAX_JWKS_BODY: usize = 1024 * 1024;
/// Floor of the refetch rate limit.
const MIN_REFETCH_FLOOR_SECS: u64 = 1;

/// The state of the single-flight gate.
#[derive(Debug, Default)]
struct Gate {
    /// When the last fetch (of any kind) finished.
    last_done: Option<Instant>,
}

/// A remote key set.
pub(crate) struct JwksSource {
    uri: Uri,
    client: HttpClient,
    configured: Vec<Algorithm>,
    refresh: Duration,
    min_refetch: Duration,
    fetch_timeout: Duration,
    keys: RwLock<Arc<KeySet>>,
    loaded: AtomicBool,
    generation: AtomicU64,
    next_delay_ms: AtomicU64,
    gate: tokio::sync::Mutex<Gate>,
    /// A background refetch is running.
    fetching: AtomicBool,
    /// Woken when a background refetch ends.
    fetched: tokio::sync::Notify,
    cache: Arc<TokenCache>,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("uri", &self.uri)
            .field("loaded", &self.is_loaded())
            .field("keys", &self.keys().len())
            .finish_non_exhaustive()
    }
}

impl JwksSource {
    /// Validates `[auth.jwks]`. Nothing is fetched yet.
    pub(crate) fn new(
        cfg: &JwksConfig,
        client: HttpClient,
        cache: Arc<TokenCache>,
    ) -> Result<Self, ConfigError> {
        let uri: Uri = cfg
            .url
            .parse()
            .map_err(|e| ConfigError::invalid("auth.jwks.url", format!("{e}")))?;
        match (uri.scheme_str(), uri.host()) {
            (Some("https"), Some(_)) => {}
            (Some("http"), Some(host)) if is_loopback(host) => {}
            _ => {
                return Err(ConfigError::invalid(
                    "auth.jwks.url",
                    "must be https:// (plain http only on loopback)",
                ))
            }
        }
        let mut configured = Vec::with_capacity(cfg.algorithms.len());
        for (i, name) in cfg.algorithms.iter().enumerate() {
            let key = format!("auth.jwks.algorithms[{i}]");
            let alg = keys::parse_alg(name)
                .ok_or_else(|| ConfigError::invalid(&key, format!("unknown algorithm `{name}`")))?;
            if alg.family() == jsonwebtoken::AlgorithmFamily::Hmac {
                return Err(ConfigError::invalid(
                    key,
                    "HMAC keys are never taken from a JWKS",
                ));
            }
            configured.push(alg);
        }
        if cfg.refresh_secs == 0 {
            return Err(ConfigError::invalid(
                "auth.jwks.refresh_secs",
                "must be > 0",
            ));
        }
        let refresh = Duration::from_secs(cfg.refresh_secs);
        Ok(Self {
            uri,
            client,
            configured,
            refresh,
            min_refetch: Duration::from_secs(cfg.min_refetch_secs.max(MIN_REFETCH_FLOOR_SECS)),
            fetch_timeout: FETCH_TIMEOUT,
            keys: RwLock::new(Arc::new(KeySet::default())),
            loaded: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            next_delay_ms: AtomicU64::new(duration_ms(refresh)),
            gate: tokio::sync::Mutex::new(Gate::default()),
            fetching: AtomicBool::new(false),
            fetched: tokio::sync::Notify::new(),
            cache,
        })
    }

    #[cfg(test)]
    pub(crate) fn set_fetch_timeout(&mut self, t: Duration) {
        self.fetch_timeout = t;
    }

    /// The current key set (empty until the first good fetch).
    pub(crate) fn keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Bumped every time the key set changes.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a fetch has ever succeeded.
    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// How long the refresh task should sleep before the next periodic fetch.
    pub(crate) fn next_delay(&self) -> Duration {
        Duration::from_millis(self.next_delay_ms.load(Ordering::Relaxed))
    }

    /// An unconditional fetch (start-up and periodic refresh), through the single-flight gate.
    pub(crate) async fn refresh(&self) -> bool {
        let mut gate = self.gate.lock().await;
        let ok = self.fetch_and_apply().await;
        gate.last_done = Some(Instant::now());
        ok
    }

    /// A refetch on behalf of a token: skipped when the key set changed since the caller read
    /// generation `seen`, when another caller's fetch finished while this one waited (they
    /// share it), or when the last fetch finished less than `min_refetch` ago.
    pub(crate) async fn refetch(&self, seen: u64) {
        let asked = Instant::now();
        let mut gate = self.gate.lock().await;
        if self.generation() != seen {
            return;
        }
        if let Some(done) = gate.last_done {
            if done >= asked || done.elapsed() < self.min_refetch {
                tracing::debug!("JWKS refetch skipped (shared or rate-limited)");
                return;
            }
        }
        self.fetch_and_apply().await;
        gate.last_done = Some(Instant::now());
    }

    /// A [`JwksSource::refetch`] run in the background (one at a time), waited for at most
    /// `wait`. True when it ended within `wait` (whether or not it fetched).
    pub(crate) async fn refetch_within(self: &Arc<Self>, seen: u64, wait: Duration) -> bool {
        let ended = self.fetched.notified();
        tokio::pin!(ended);
        ended.as_mut().enable();
        if !self.fetching.swap(true, Ordering::AcqRel) {
            let this = self.clone();
            tokio::spawn(async move {
                this.refetch(seen).await;
                this.fetching.store(false, Ordering::Release);
                this.fetched.notify_waiters();
            });
        }
        tokio::time::timeout(wait, ended).await.is_ok()
    }

    /// Fetches once; on success installs the set (clearing the token cache if it changed) and
    /// schedules the next refresh from `Cache-Control: max-age` clamped into
    /// `[min_refetch, refresh]`; on failure keeps the last good set and retries sooner.
    async fn fetch_and_apply(&self) -> bool {
        let fetched = self.fetch_once().await;
        crate::metrics::jwks_fetch(fetched.is_ok());
        match fetched {
            Ok((set, max_age)) => {
                self.install(set);
                let delay = next_delay(max_age, self.min_refetch, self.refresh);
                self.next_delay_ms
                    .store(duration_ms(delay), Ordering::Relaxed);
                true
            }
            Err(why) => {
                tracing::warn!(url = %self.uri, reason = %why, "JWKS fetch failed; keeping the last good key set");
                let delay = self.min_refetch.min(self.refresh);
                self.next_delay_ms
                    .store(duration_ms(delay), Ordering::Relaxed);
                false
            }
        }
    }

    fn install(&self, set: KeySet) {
        let changed = {
            let mut cur = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            let changed = !self.is_loaded() || cur.fingerprint() != set.fingerprint();
            if changed {
                *cur = Arc::new(set);
            }
            changed
        };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            // A key may have been revoked: forget every token verified with the old set.
            self.cache.clear();
            tracing::info!(url = %self.uri, keys = self.keys().len(), "JWKS key set installed");
        }
        self.loaded.store(true, Ordering::Release);
    }

    async fn fetch_once(&self) -> Result<(KeySet, Option<u64>), String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(header::ACCEPT, "application/json")
            .header(header::ACCEPT_ENCODING, "identity")
            .header(
                header::USER_AGENT,
                concat!("entitygate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| format!("cannot build request: {e}"))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            if resp.status() != StatusCode::OK {
                return Err(format!("status {}", resp.status()));
            }
            if let Some(enc) = resp.headers().get(header::CONTENT_ENCODING) {
                if !enc.as_bytes().eq_ignore_ascii_case(b"identity") {
                    return Err("compressed response".to_owned());
                }
            }
            let max_age = cache_control_max_age(resp.headers());
            let body = Limited::new(resp.into_body(), MAX_JWKS_BODY)
                .collect()
                .await
                .map_err(|e| format!("cannot read body: {e}"))?
                .to_bytes();
            Ok((body, max_age))
        };
        let (body, max_age) = tokio::time::timeout(self.fetch_timeout, exchange)
            .await
            .map_err(|_| format!("timed out after {:?}", self.fetch_timeout))??;
        let set = parse_jwks(&body, &self.configured)?;
        Ok((set, max_age))
    }
}

/// Parses a JWKS body into usable keys. Each JWK is parsed on its own so that one odd entry
/// (an unknown key type, a `kid` that is not a string) does not discard the whole set.
pub(crate) fn parse_jwks(body: &[u8], configured: &[Algorithm]) -> Result<KeySet, String> {
    #[derive(serde::Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut jwks = Vec::with_capacity(raw.keys.len());
    for (i, v) in raw.keys.into_iter().enumerate() {
        match serde_json::from_value::<Jwk>(v) {
            Ok(j) => jwks.push(j),
            Err(e) => tracing::debug!(index = i, error = %e, "JWKS entry is not a JWK; skipped"),
        }
    }
    let set = keys::jwks_set(&jwks, configured);
    if set.is_empty() {
        return Err("the JWKS holds no usable signing key".into());
    }
    Ok(set)
}

/// The smallest `max-age` in `Cache-Control` (`no-store`/`no-cache` count as 0).
pub(crate) fn cache_control_max_age(headers: &HeaderMap) -> Option<u64> {
    let mut best: Option<u64> = None;
    for v in headers.get_all(header::CACHE_CONTROL) {
        let Ok(s) = v.to_str() else { continue };
        for d in s.split(',') {
            let d = d.trim();
            let age = if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
                Some(0)
            } else {
                match d.split_once('=') {
                    Some((k, v)) if k.trim().eq_ignore_ascii_case("max-age") => {
                        v.trim().trim_matches('"').parse::<u64>().ok()
                    }
                    _ => None,
                }
            };
            if let Some(a) = age {
                best = Some(best.map_or(a, |b| b.min(a)));
            }
        }
    }
    best
}

/// The next periodic refresh: `max_age` clamped into `[min, refresh]`, else `refresh`.
/// Never trusts an IdP asking to cache longer than configured.
pub(crate) fn next_delay(max_age: Option<u64>, min: Duration, refresh: Duration) -> Duration {
    match max_age {
        None => refresh,
        Some(secs) => Duration::from_secs(secs).min(refresh).max(min.min(refresh)),
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use crate::auth::Authenticator;
    use crate::error::Error;
    use http::HeaderValue;
    use jsonwebtoken::Algorithm;
    use serde_json::json;

    #[test]
    fn cache_control_is_parsed_and_clamped() {
        let mut h = HeaderMap::new();
        assert_eq!(cache_control_max_age(&h), None);
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=120"),
        );
        assert_eq!(cache_control_max_age(&h), Some(120));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("Max-Age=\"7\", must-revalidate"),
        );
        assert_eq!(cache_control_max_age(&h), Some(7));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(cache_control_max_age(&h), Some(0));
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=abc"),
        );
        assert_eq!(cache_control_max_age(&h), None);

        let (min, refresh) = (Duration::from_secs(30), Duration::from_secs(300));
        assert_eq!(next_delay(None, min, refresh), refresh);
        assert_eq!(next_delay(Some(5), min, refresh), min);
        assert_eq!(next_delay(Some(60), min, refresh), Duration::from_secs(60));
        assert_eq!(next_delay(Some(86_400), min, refresh), refresh);
        // A minimum above the refresh interval cannot panic or exceed the interval.
        assert_eq!(
            next_delay(Some(5), Duration::from_secs(600), refresh),
            refresh
        );
    }

    #[test]
    fn url_must_be_https_or_loopback_http() {
        let cache = Arc::new(TokenCache::new(1, 1 << 20, 0));
        for (url, ok) in [
            ("https://idp.example.com/.well-known/jwks.json", true),
            ("http://127.0.0.1:9/jwks", true),
            ("http://[::1]:9/jwks", true),
            ("http://localhost:9/jwks", true),
            ("http://idp.example.com/jwks", false),
            ("file:///etc/passwd", false),
            ("idp.example.com/jwks", false),
        ] {
            let cfg: JwksConfig = toml::from_str(&format!("url = \"{url}\"")).unwrap();
            assert_eq!(
                JwksSource::new(&cfg, client(), cache.clone()).is_ok(),
                ok,
                "{url}"
            );
        }
    }

    #[test]
    fn configured_algorithms_are_validated() {
        let cache = Arc::new(TokenCache::new(1, 1 << 20, 0));
        for (algs, ok) in [
            ("[\"RS256\", \"ES256\"]", true),
            ("[\"HS256\"]", false),
            ("[\"none\"]", false),
            ("[\"rs256\"]", false),
        ] {
            let cfg: JwksConfig = toml::from_str(&format!(
                "url = \"http://127.0.0.1:9/\"\nalgorithms = {algs}"
            ))
            .unwrap();
            let r = JwksSource::new(&cfg, client(), cache.clone());
            assert_eq!(r.is_ok(), ok, "{algs}");
            if let Err(e) = r {
                assert!(
                    matches!(e, ConfigError::Invalid { key, .. } if key.starts_with("auth.jwks.algorithms[0]"))
                );
            }
        }
    }

    #[test]
    fn one_odd_entry_does_not_discard_the_set() {
        let body = json!({"keys": [
            {"kty": "RSA", "kid": 5, "n": "x", "e": "AQAB"},
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "EC", "crv": "secp256k1", "kid": "k1", "x": "AA", "y": "AA"},
            rsa_jwk(Some("good"), Some("RS256")),
        ]});
        let set = parse_jwks(&serde_json::to_vec(&body).unwrap(), &[]).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.with_kid("good").len(), 1);
        assert!(set.with_kid("sym").is_empty());
        assert!(parse_jwks(b"{\"keys\": []}", &[]).is_err());
        assert!(parse_jwks(b"<html>", &[]).is_err());
        assert!(parse_jwks(
            b"{\"keys\": [{\"kty\": \"oct\", \"k\": \"c2VjcmV0\"}]}",
            &[]
        )
        .is_err());
    }

    // --- against a live local JWKS server ---

    #[tokio::test]
    async fn unknown_kid_triggers_one_refetch_under_a_burst() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let auth = jwks_auth(&srv, 1, 300, "").await;
        assert_eq!(srv.hits(), 1);
        assert!(auth.ready());
        // The IdP rotates in a new key; tokens with the new kid arrive all at once.
        srv.set_body(jwks_body(&[
            rsa_jwk(Some("a"), Some("RS256")),
            ec_jwk(Some("b"), Some("ES256")),
        ]));
        srv.set_delay(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let auth = auth.clone();
            let token = mint(
                Algorithm::ES256,
                &ec_key(),
                Some("b"),
                &claims(&format!("user{i}")),
            );
            tasks.push(tokio::spawn(async move { auth.authenticate(&token).await }));
        }
        for (i, t) in tasks.into_iter().enumerate() {
            let id = t.await.unwrap().unwrap();
            assert_eq!(&*id.subject, format!("user{i}"));
        }
        assert_eq!(srv.hits(), 2, "the burst shared one refetch");
    }

    #[tokio::test]
    async fn unknown_kid_burst_that_stays_unknown_fetches_once() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let auth = jwks_auth(&srv, 1, 300, "").await;
        srv.set_delay(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let auth = auth.clone();
            let token = mint(
                Algorithm::RS256,
                &rsa_key(),
                Some(&format!("nope{i}")),
                &claims("u"),
            );
            tasks.push(tokio::spawn(async move { auth.authenticate(&token).await }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap_err(), Error::TokenUnknownKey);
        }
        assert_eq!(srv.hits(), 2);
    }

    #[tokio::test]
    async fn refetch_is_rate_limited() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let auth = jwks_auth(&srv, 60, 300, "").await;
        for i in 0..5 {
            let t = mint(
                Algorithm::RS256,
                &rsa_key(),
                Some(&format!("x{i}")),
                &claims("u"),
            );
            assert_eq!(
                auth.authenticate(&t).await.unwrap_err(),
                Error::TokenUnknownKey
            );
        }
        assert_eq!(
            srv.hits(),
            1,
            "within min_refetch_secs of the start-up fetch"
        );

        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        // min_refetch_secs = 0 is floored at 1 s.
        let auth = jwks_auth(&srv, 0, 300, "").await;
        let t = mint(Algorithm::RS256, &rsa_key(), Some("x"), &claims("u"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        assert_eq!(srv.hits(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        assert_eq!(srv.hits(), 2);
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        assert_eq!(srv.hits(), 2);
    }

    #[tokio::test]
    async fn injected_kids_are_refused_without_extra_fetches() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let auth = jwks_auth(&srv, 60, 300, "").await;
        for kid in [
            "../../dev/null",
            "' OR 1=1--",
            "' UNION SELECT 'k'--",
            "http://evil/jwks",
            "/etc/passwd",
            "a\u{0}",
        ] {
            let t = mint(Algorithm::RS256, &rsa_key(), Some(kid), &claims("u"));
            assert_eq!(
                auth.authenticate(&t).await.unwrap_err(),
                Error::TokenUnknownKey,
                "{kid:?}"
            );
            let h = mint(
                Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(b""),
                Some(kid),
                &claims("u"),
            );
            assert!(auth.authenticate(&h).await.is_err(), "{kid:?}");
        }
        // An over-long kid is refused with no I/O at all, even past the rate limit.
        let srv2 = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let auth2 = jwks_auth(&srv2, 1, 300, "").await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let t = mint(
            Algorithm::RS256,
            &rsa_key(),
            Some(&"k".repeat(257)),
            &claims("u"),
        );
        assert_eq!(
            auth2.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        assert_eq!(srv.hits(), 1);
        assert_eq!(srv2.hits(), 1);
    }

    #[tokio::test]
    async fn jku_x5u_and_jwk_headers_are_never_followed() {
        let good = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        // The attacker's key set, holding the attacker's (EC) key under the attacker's kid.
        let evil = JwksServer::start(jwks_body(&[ec_jwk(Some("evil"), Some("ES256"))])).await;
        let auth = jwks_auth(&good, 60, 300, "").await;
        let evil_url = evil.url();
        for (kid, field) in [
            (Some("evil"), "jku"),
            (Some("evil"), "x5u"),
            (None, "jku"),
            (Some("a"), "jku"),
        ] {
            let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
            h.kid = kid.map(str::to_owned);
            match field {
                "jku" => h.jku = Some(evil_url.clone()),
                _ => h.x5u = Some(evil_url.clone()),
            }
            h.jwk = Some(serde_json::from_value(ec_jwk(kid, Some("ES256"))).unwrap());
            let t = jsonwebtoken::encode(&h, &claims("victim"), &ec_key()).unwrap();
            let err = auth.authenticate(&t).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::TokenUnknownKey | Error::TokenAlgorithmNotAllowed
                ),
                "{kid:?} {field}: {err:?}"
            );
        }
        // The same with an x5c chain.
        let mut h = jsonwebtoken::Header::new(Algorithm::ES256);
        h.x5c = Some(vec!["MIIB".into()]);
        let t = jsonwebtoken::encode(&h, &claims("victim"), &ec_key()).unwrap();
        assert!(auth.authenticate(&t).await.is_err());
        assert_eq!(evil.hits(), 0, "the attacker's server was never contacted");
    }

    #[tokio::test]
    async fn last_good_set_is_kept_on_500_garbage_timeout_and_huge_bodies() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        let mut auth = jwks_auth(&srv, 1, 300, "").await;
        auth.jwks_mut()
            .set_fetch_timeout(Duration::from_millis(300));
        let j = auth.jwks_source();
        let ok_token = |n: u32| {
            mint(
                Algorithm::RS256,
                &rsa_key(),
                Some("a"),
                &claims(&format!("u{n}")),
            )
        };
        assert!(auth.authenticate(&ok_token(0)).await.is_ok());

        srv.set_status(500);
        assert!(!j.refresh().await);
        assert!(auth.authenticate(&ok_token(1)).await.is_ok());

        srv.set_status(200);
        srv.set_body(b"{\"keys\": not json".to_vec());
        assert!(!j.refresh().await);
        assert!(auth.authenticate(&ok_token(2)).await.is_ok());

        srv.set_body(b"{\"keys\": []}".to_vec());
        assert!(!j.refresh().await);
        assert!(auth.authenticate(&ok_token(3)).await.is_ok());

        let mut huge = b"{\"keys\": [], \"pad\": \"".to_vec();
        huge.extend(std::iter::repeat_n(b'x', 2 * MAX_JWKS_BODY));
        huge.extend(b"\"}");
        srv.set_body(huge);
        assert!(!j.refresh().await);
        assert!(auth.authenticate(&ok_token(4)).await.is_ok());

        srv.set_body(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))]));
        srv.set_delay(Duration::from_secs(2));
        assert!(!j.refresh().await);
        assert!(auth.authenticate(&ok_token(5)).await.is_ok());
        assert!(auth.ready());
        assert_eq!(srv.hits(), 6, "start-up plus five refreshes");
    }

    #[tokio::test]
    async fn not_ready_until_a_fetch_succeeds_then_ready_after_refresh() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
        srv.set_status(503);
        let auth = jwks_auth(&srv, 1, 1, "").await;
        assert!(!auth.ready());
        let t = mint(Algorithm::RS256, &rsa_key(), Some("a"), &claims("alice"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::KeysUnavailable
        );
        let no_kid = mint(Algorithm::RS256, &rsa_key(), None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&no_kid).await.unwrap_err(),
            Error::KeysUnavailable
        );

        srv.set_status(200);
        let task = auth.spawn_refresh();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !auth.ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        assert!(auth.ready());
        assert_eq!(&*auth.authenticate(&t).await.unwrap().subject, "alice");
    }

    #[tokio::test]
    async fn static_keys_make_ready_even_when_jwks_is_down() {
        let srv = JwksServer::start(Vec::new()).await;
        srv.set_status(500);
        let cfg = auth_cfg(&format!(
            "{}\n[jwks]\nurl = \"{}\"\nmin_refetch_secs = 60",
            static_key_toml("HS256", None),
            srv.url()
        ));
        let auth = Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap();
        assert!(auth.ready());
        let hs = mint(Algorithm::HS256, &hmac_key(), None, &claims("alice"));
        assert_eq!(&*auth.authenticate(&hs).await.unwrap().subject, "alice");
    }

    #[tokio::test]
    async fn kid_reused_with_new_material_gets_one_refetch() {
        // kid "k" first names another P-256 key, then the IdP reuses it for the signing key.
        let srv = JwksServer::start(jwks_body(&[other_ec_jwk(Some("k"))])).await;
        let auth = jwks_auth(&srv, 1, 300, "").await;
        let t = mint(Algorithm::ES256, &ec_key(), Some("k"), &claims("alice"));
        // Within the rate limit: no refetch, the signature check fails.
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenSignatureInvalid
        );
        assert_eq!(srv.hits(), 1);
        srv.set_body(jwks_body(&[ec_jwk(Some("k"), Some("ES256"))]));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(&*auth.authenticate(&t).await.unwrap().subject, "alice");
        assert_eq!(srv.hits(), 2);
        // A genuinely bad signature on a known kid: at most one (rate-limited) refetch.
        let forged = resign(&t, &other_token(Algorithm::ES256, Some("k")));
        assert_eq!(
            auth.authenticate(&forged).await.unwrap_err(),
            Error::TokenSignatureInvalid
        );
        assert_eq!(
            auth.authenticate(&forged).await.unwrap_err(),
            Error::TokenSignatureInvalid
        );
        assert_eq!(srv.hits(), 2);
    }

    #[tokio::test]
    async fn key_set_change_clears_the_token_cache() {
        let srv = JwksServer::start(jwks_body(&[
            rsa_jwk(Some("a"), Some("RS256")),
            ec_jwk(Some("b"), Some("ES256")),
        ]))
        .await;
        let auth = jwks_auth(&srv, 1, 300, "").await;
        let t = mint(Algorithm::ES256, &ec_key(), Some("b"), &claims("alice"));
        assert!(auth.authenticate(&t).await.is_ok());
        assert_eq!(auth.cached_tokens(), 1);
        // Unchanged set: the cache survives.
        assert!(auth.jwks_source().refresh().await);
        assert_eq!(auth.cached_tokens(), 1);
        // "b" is revoked: the cached token must not outlive its key.
        srv.set_body(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))]));
        assert!(auth.jwks_source().refresh().await);
        assert_eq!(auth.cached_tokens(), 0);
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
    }

    #[tokio::test]
    async fn missing_kid_accepted_only_from_a_single_key_jwks() {
        let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), None)])).await;
        let auth = jwks_auth(&srv, 60, 300, "").await;
        let t = mint(Algorithm::RS256, &rsa_key(), None, &claims("alice"));
        assert_eq!(&*auth.authenticate(&t).await.unwrap().subject, "alice");
        // Family default RS256 pins the key: PS256 with the same key is refused.
        let ps = mint(Algorithm::PS256, &rsa_key(), None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&ps).await.unwrap_err(),
            Error::TokenAlgorithmNotAllowed
        );

        let srv = JwksServer::start(jwks_body(&[
            rsa_jwk(Some("a"), Some("RS256")),
            ec_jwk(Some("b"), Some("ES256")),
        ]))
        .await;
        let auth = jwks_auth(&srv, 60, 300, "").await;
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenUnknownKey
        );
    }

    #[tokio::test]
    async fn jwks_alg_pinning_and_configured_algorithms() {
        let srv = JwksServer::start(jwks_body(&[
            rsa_jwk(Some("a"), None),
            ed_jwk(Some("d"), None),
        ]))
        .await;
        let cfg = auth_cfg(&format!(
            "[jwks]\nurl = \"{}\"\nmin_refetch_secs = 60\nalgorithms = [\"PS256\", \"EdDSA\"]",
            srv.url()
        ));
        let auth = Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap();
        let ps = mint(Algorithm::PS256, &rsa_key(), Some("a"), &claims("alice"));
        assert_eq!(&*auth.authenticate(&ps).await.unwrap().subject, "alice");
        let rs = mint(Algorithm::RS256, &rsa_key(), Some("a"), &claims("alice"));
        assert_eq!(
            auth.authenticate(&rs).await.unwrap_err(),
            Error::TokenAlgorithmNotAllowed
        );
        let ed = mint(Algorithm::EdDSA, &ed_key(), Some("d"), &claims("bob"));
        assert_eq!(&*auth.authenticate(&ed).await.unwrap().subject, "bob");
        // HS256 signed with the JWK's RSA modulus (or the PEM) as a secret: refused.
        for secret in [
            rsa_jwk(None, None)["n"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
            pem("jwt-rsa.pub"),
        ] {
            let hs = mint(
                Algorithm::HS256,
                &jsonwebtoken::EncodingKey::from_secret(&secret),
                Some("a"),
                &claims("alice"),
            );
            assert_eq!(
                auth.authenticate(&hs).await.unwrap_err(),
                Error::TokenAlgorithmNotAllowed
            );
        }
    }
}
