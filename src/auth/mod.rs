//! Caller authentication: the token is found in the request ([`token_from_headers`]),
//! verified against static keys and/or a remote JWKS ([`Authenticator::authenticate`]), and
//! turned into an [`Identity`] whose `subject` is the only user id the gateway will ever use.
//!
//! Rules that hold on every path:
//! - the token's shape (at most 8 KiB, three non-empty base64url parts) is checked before
//!   anything else, and `alg: none` in any spelling is malformed;
//! - the algorithm is pinned by the key, never by the token: a key verifies exactly one
//!   algorithm and a header `alg` that differs is refused;
//! - `kid` is only a key into an in-memory map: never a path, a query or a URL, and `jku`,
//!   `x5u`, `jwk` and `x5c` headers are never followed or trusted;
//! - `exp` is required, `nbf` and `iat` are honoured, all with the configured leeway, against
//!   the gateway's own clock (a clock before the epoch refuses rather than panics);
//! - only fully verified tokens are cached, by SHA-256, and every hit re-checks `exp`.

mod cache;
mod jwks;
mod keys;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use self::cache::TokenCache;
use self::jwks::JwksSource;
use self::keys::{KeySet, Origin, VerifyKey, MAX_KID_LEN};
use crate::config::{AuthConfig, ConfigError, Env};
use crate::error::Error;
use crate::upstream::HttpClient;

/// Largest token accepted.
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Longest subject accepted (before the prefix).
const MAX_SUBJECT_LEN: usize = 256;

/// Who the caller is, as proved by a verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The configured prefix followed by the subject claim.
    pub subject: Arc<str>,
    /// Every claim of the token.
    pub claims: Arc<Map<String, Value>>,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: u64,
}

/// The source of "now"; the real clock except in tests.
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verifies callers' JWTs. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    static_keys: KeySet,
    jwks: Option<Arc<JwksSource>>,
    cache: Arc<TokenCache>,
    /// Template; `algorithms` is set to the one key's algorithm per attempt.
    validation: Validation,
    issuer: Option<String>,
    subject_claim: String,
    subject_prefix: String,
    leeway: u64,
    clock: Clock,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_keys", &self.inner.static_keys.len())
            .field("jwks", &self.inner.jwks)
            .field("cache", &self.inner.cache)
            .finish_non_exhaustive()
    }
}

/// Which keys a token may be checked against.
enum Pick {
    /// Keys with the token's `kid` (or no `kid`) and the token's `alg`.
    Keys(Vec<Arc<VerifyKey>>),
    /// Keys were found, but none is pinned to the token's `alg`.
    WrongAlg,
    /// No key at all.
    NoKey,
}

// === impl Authenticator ===

impl Authenticator {
    /// Loads static keys (HMAC secret from the variable named by `secret_env`, PEM public keys
    /// from files), and if `[auth.jwks]` is set, fetches the JWKS once. A failed first fetch is
    /// logged, not fatal: [`Authenticator::ready`] stays false and tokens that need JWKS keys
    /// get [`Error::KeysUnavailable`] until a fetch succeeds.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the offending key (`auth.keys[0].secret_env`, ...).
    pub async fn new(
        cfg: &AuthConfig,
        env: &dyn Env,
        client: HttpClient,
    ) -> Result<Self, ConfigError> {
        crypto_self_test()?;
        let static_keys = keys::load_static(&cfg.keys, env)?;
        if cfg.subject_claim.is_empty() {
            return Err(ConfigError::invalid("auth.subject_claim", "is empty"));
        }
        if static_keys.is_empty() && cfg.jwks.is_none() {
            return Err(ConfigError::invalid(
                "auth",
                "no verification key: set [[auth.keys]] or [auth.jwks]",
            ));
        }
        let cache = Arc::new(TokenCache::new(cfg.token_cache_entries, cfg.leeway_secs));
        let jwks = match &cfg.jwks {
            None => None,
            Some(j) => Some(Arc::new(JwksSource::new(j, client, cache.clone())?)),
        };
        let auth = Self {
            inner: Arc::new(Inner {
                static_keys,
                jwks,
                cache,
                validation: build_validation(cfg),
                issuer: cfg.issuer.clone(),
                subject_claim: cfg.subject_claim.clone(),
                subject_prefix: cfg.subject_prefix.clone(),
                leeway: cfg.leeway_secs,
                clock: Arc::new(SystemTime::now),
            }),
        };
        if let Some(j) = &auth.inner.jwks {
            if !j.refresh().await {
                tracing::warn!(
                    "the JWKS could not be loaded at start; tokens that need it are refused \
                     until a fetch succeeds"
                );
            }
        }
        Ok(auth)
    }

    /// Verifies `token` and returns who it proves the caller to be.
    ///
    /// # Errors
    /// One of the `Token*` variants for a token that is refused, [`Error::KeysUnavailable`]
    /// when the JWKS it needs has never loaded, [`Error::ClockUnavailable`] when the system
    /// clock is before the Unix epoch.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, Error> {
        check_shape(token)?;
        let inner = &*self.inner;
        let now = inner.now()?;
        let hash = TokenCache::key(token);
        if let Some(hit) = inner.cache.get(&hash, now) {
            return hit;
        }
        let header = read_header(token)?;
        if header.kid.as_ref().is_some_and(|k| k.len() > MAX_KID_LEN) {
            return Err(Error::TokenUnknownKey);
        }
        let generation = inner.cache.generation();
        let claims = self.verify(token, &header).await?;
        // A JWKS fetch may have taken a while: judge time against a fresh "now".
        let now = inner.now()?;
        let identity = inner.identity(claims, now)?;
        inner.cache.insert(hash, identity.clone(), generation, now);
        Ok(identity)
    }

    /// True when at least one key is usable (static keys loaded, or the JWKS fetched once).
    pub fn ready(&self) -> bool {
        !self.inner.static_keys.is_empty()
            || self.inner.jwks.as_ref().is_some_and(|j| j.is_loaded())
    }

    /// Spawns the periodic JWKS refresh (a task that ends at once when there is no JWKS). The
    /// caller aborts the handle at shutdown; the task also ends when the authenticator is
    /// dropped.
    pub fn spawn_refresh(&self) -> tokio::task::JoinHandle<()> {
        let Some(j) = &self.inner.jwks else {
            return tokio::spawn(async {});
        };
        let weak = Arc::downgrade(j);
        tokio::spawn(async move {
            loop {
                let delay = match weak.upgrade() {
                    Some(j) => j.next_delay(),
                    None => return,
                };
                tokio::time::sleep(delay).await;
                let Some(j) = weak.upgrade() else { return };
                j.refresh().await;
            }
        })
    }

    /// Finds the key(s) for the token and verifies it, refetching the JWKS at most once (the
    /// refetch itself is single-flight and rate-limited) when the `kid` is unknown or a known
    /// JWKS key fails the signature check.
    async fn verify(&self, token: &str, header: &Header) -> Result<Map<String, Value>, Error> {
        let inner = &*self.inner;
        let kid = header.kid.as_deref();
        let mut refetched = false;
        loop {
            let (set, seen) = match &inner.jwks {
                Some(j) => (Some(j.keys()), j.generation()),
                None => (None, 0),
            };
            let jwks_down = inner.jwks.as_ref().is_some_and(|j| !j.is_loaded());
            let (may_refetch, failure) = match inner.pick(kid, header.alg, set.as_deref()) {
                Pick::WrongAlg => return Err(Error::TokenAlgorithmNotAllowed),
                Pick::Keys(keys) => match inner.try_keys(token, header.alg, &keys) {
                    Ok(claims) => return Ok(claims),
                    Err(Some(e)) => return Err(e),
                    Err(None) => (
                        keys.iter().any(|k| k.origin == Origin::Jwks),
                        Error::TokenSignatureInvalid,
                    ),
                },
                Pick::NoKey if jwks_down => (true, Error::KeysUnavailable),
                Pick::NoKey => (kid.is_some(), Error::TokenUnknownKey),
            };
            if may_refetch && !refetched {
                if let Some(j) = &inner.jwks {
                    refetched = true;
                    j.refetch(seen).await;
                    if j.generation() != seen {
                        continue;
                    }
                }
            }
            return Err(failure);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
impl Authenticator {
    pub(crate) fn with_clock(mut self, clock: Clock) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.clock = clock;
        } else {
            panic!("with_clock on a shared authenticator");
        }
        self
    }

    pub(crate) fn jwks_source(&self) -> Arc<JwksSource> {
        self.inner.jwks.clone().unwrap()
    }

    pub(crate) fn jwks_mut(&mut self) -> &mut JwksSource {
        let inner = Arc::get_mut(&mut self.inner).unwrap();
        Arc::get_mut(inner.jwks.as_mut().unwrap()).unwrap()
    }

    pub(crate) fn cached_tokens(&self) -> usize {
        self.inner.cache.len()
    }
}

// === impl Inner ===

impl Inner {
    fn now(&self) -> Result<u64, Error> {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| Error::ClockUnavailable)
    }

    /// With a `kid`: only keys with that `kid`. Without: static keys without a `kid`, plus the
    /// JWKS key when the JWKS holds exactly one. Then only keys pinned to `alg`.
    fn pick(&self, kid: Option<&str>, alg: Algorithm, jwks: Option<&KeySet>) -> Pick {
        let mut found: Vec<&Arc<VerifyKey>> = Vec::new();
        match kid {
            Some(kid) => {
                found.extend(self.static_keys.with_kid(kid));
                if let Some(set) = jwks {
                    found.extend(set.with_kid(kid));
                }
            }
            None => {
                found.extend(self.static_keys.without_kid());
                if let Some(set) = jwks {
                    if set.len() == 1 {
                        found.extend(set.all());
                    }
                }
            }
        }
        if found.is_empty() {
            return Pick::NoKey;
        }
        let keys: Vec<Arc<VerifyKey>> = found
            .into_iter()
            .filter(|k| k.alg == alg)
            .cloned()
            .collect();
        if keys.is_empty() {
            Pick::WrongAlg
        } else {
            Pick::Keys(keys)
        }
    }

    /// Tries each key in turn. `Ok` on the first that verifies; `Err(Some(_))` for a refusal
    /// that no other key can change (a bad header, or claims refused after the signature
    /// verified); `Err(None)` when no key verified the signature.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        keys: &[Arc<VerifyKey>],
    ) -> Result<Map<String, Value>, Option<Error>> {
        for key in keys {
            // Our own assertion, beside jsonwebtoken's: the key's algorithm, and only it.
            if key.alg != alg {
                return Err(Some(Error::TokenAlgorithmNotAllowed));
            }
            let mut v = self.validation.clone();
            v.algorithms = vec![key.alg];
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::Json(_)) {
                        // The header parsed before, so this is the claims, and the signature
                        // has verified: say which claim is wrong.
                        return Err(Some(self.explain_claims(token)));
                    }
                    if let Some(refusal) = classify(&e) {
                        return Err(Some(refusal));
                    }
                }
            }
        }
        Err(None)
    }

    /// Why jsonwebtoken could not read the claims (a compound value where it expects a number
    /// or a string breaks its parse). Only ever a refusal.
    fn explain_claims(&self, token: &str) -> Error {
        use base64::Engine as _;
        let payload = token.split('.').nth(1).unwrap_or_default();
        let map = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let Some(Value::Object(map)) = map else {
            return Error::TokenMalformed("the claims are not a JSON object");
        };
        let compound =
            |name: &str| matches!(map.get(name), Some(Value::Array(_) | Value::Object(_)));
        for name in ["exp", "nbf"] {
            if compound(name) {
                return Error::TokenClaimInvalid(claim_name(name));
            }
        }
        if compound("sub") {
            return if self.subject_claim == "sub" {
                Error::TokenSubjectInvalid
            } else {
                Error::TokenClaimInvalid("sub")
            };
        }
        Error::TokenMalformed("the claims are not valid JSON")
    }

    /// Checks time claims, the issuer and the subject of verified claims.
    fn identity(&self, claims: Map<String, Value>, now: u64) -> Result<Identity, Error> {
        let exp = claims
            .get("exp")
            .and_then(|v| numeric_date(v, false))
            .ok_or(Error::TokenClaimInvalid("exp"))?;
        if cache::expired(exp, now, self.leeway) {
            return Err(Error::TokenExpired);
        }
        let limit = now.saturating_add(self.leeway);
        for name in ["nbf", "iat"] {
            if let Some(v) = claims.get(name) {
                let t = numeric_date(v, true).ok_or(Error::TokenClaimInvalid(name))?;
                if t > limit {
                    return Err(Error::TokenNotYetValid);
                }
            }
        }
        if let Some(want) = &self.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == want => {}
                Some(Value::String(_)) => return Err(Error::TokenIssuerMismatch),
                _ => return Err(Error::TokenClaimInvalid("iss")),
            }
        }
        let sub = match claims.get(&self.subject_claim) {
            Some(Value::String(s))
                if !s.is_empty()
                    && s.len() <= MAX_SUBJECT_LEN
                    && !s.chars().any(char::is_control)
                    // Composio splits `user_ids` filters on commas: a subject with one would
                    // widen every listing the gateway scopes to it.
                    && !s.contains(',') =>
            {
                s
            }
            _ => return Err(Error::TokenSubjectInvalid),
        };
        let subject: Arc<str> = if self.subject_prefix.is_empty() {
            Arc::from(sub.as_str())
        } else {
            Arc::from(format!("{}{sub}", self.subject_prefix))
        };
        Ok(Identity {
            subject,
            claims: Arc::new(claims),
            expires_at: exp,
        })
    }
}

/// The jsonwebtoken validation template: claims presence, issuer and audience. Time claims are
/// judged by [`Inner::identity`] against our own clock, so `validate_exp`/`validate_nbf` are off
/// here (jsonwebtoken's own clock panics before the epoch); `exp` stays required, so a missing
/// or non-numeric `exp` is refused here as well.
fn build_validation(cfg: &AuthConfig) -> Validation {
    let mut v = Validation::new(Algorithm::RS256);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    let mut required = vec!["exp"];
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(&aud.to_vec());
            v.validate_aud = true;
            required.push("aud");
        }
        None => {
            v.aud = None;
            v.validate_aud = false;
        }
    }
    v.set_required_spec_claims(&required);
    v
}

/// Maps a jsonwebtoken failure to a refusal, or `None` when it only means "this key did not
/// verify the signature" (the next key may).
fn classify(e: &jsonwebtoken::errors::Error) -> Option<Error> {
    use jsonwebtoken::errors::ErrorKind as K;
    Some(match e.kind() {
        K::InvalidSignature
        | K::InvalidEcdsaKey
        | K::InvalidEddsaKey
        | K::InvalidRsaKey(_)
        | K::InvalidKeyFormat => return None,
        K::InvalidToken | K::Base64(_) | K::Utf8(_) => Error::TokenMalformed("not a valid JWT"),
        K::Json(_) => Error::TokenMalformed("the header or claims are not a JSON object"),
        K::MissingRequiredClaim(c) | K::InvalidClaimFormat(c) => {
            Error::TokenClaimInvalid(claim_name(c))
        }
        K::ExpiredSignature => Error::TokenExpired,
        K::ImmatureSignature => Error::TokenNotYetValid,
        K::InvalidIssuer => Error::TokenIssuerMismatch,
        K::InvalidAudience => Error::TokenAudienceMismatch,
        K::InvalidSubject => Error::TokenSubjectInvalid,
        K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
            Error::TokenAlgorithmNotAllowed
        }
        other => {
            tracing::warn!(error = ?other, "unexpected JWT verification failure");
            Error::Internal
        }
    })
}

fn claim_name(c: &str) -> &'static str {
    match c {
        "exp" => "exp",
        "nbf" => "nbf",
        "iss" => "iss",
        "aud" => "aud",
        "sub" => "sub",
        _ => "claims",
    }
}

/// A NumericDate: a non-negative JSON number (fractions rounded toward refusal).
fn numeric_date(v: &Value, round_up: bool) -> Option<u64> {
    let Value::Number(n) = v else { return None };
    if let Some(u) = n.as_u64() {
        return Some(u);
    }
    let f = n
        .as_f64()
        .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)?;
    let f = if round_up { f.ceil() } else { f.floor() };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Some(f as u64)
}

/// At most 8 KiB, exactly three non-empty base64url (unpadded) parts.
fn check_shape(token: &str) -> Result<(), Error> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Error::TokenMalformed("the token is longer than 8 KiB"));
    }
    let mut parts = 0;
    for part in token.split('.') {
        parts += 1;
        if parts > 3
            || part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::TokenMalformed(
                "not three base64url parts separated by dots",
            ));
        }
    }
    if parts != 3 {
        return Err(Error::TokenMalformed(
            "not three base64url parts separated by dots",
        ));
    }
    Ok(())
}

/// Decodes the header; `alg: none` in any case, an unknown `alg`, or `crit` are malformed.
fn read_header(token: &str) -> Result<Header, Error> {
    let header = match jsonwebtoken::decode_header(token) {
        Ok(h) => h,
        Err(_) if alg_is_none(token) => {
            return Err(Error::TokenMalformed("alg none is not accepted"))
        }
        Err(_) => return Err(Error::TokenMalformed("unreadable header")),
    };
    if header.crit.is_some() {
        return Err(Error::TokenMalformed(
            "critical header extensions are not supported",
        ));
    }
    Ok(header)
}

fn alg_is_none(token: &str) -> bool {
    use base64::Engine as _;
    let Some(part) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part) else {
        return false;
    };
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("alg").and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|a| a.eq_ignore_ascii_case("none"))
}

/// Makes sure the JWT crypto backend is installed and works, so that no request can hit a
/// backend that panics (jsonwebtoken >= 10 panics on first use when no backend is selected).
fn crypto_self_test() -> Result<(), ConfigError> {
    use jsonwebtoken::crypto::{rust_crypto, CryptoProvider};
    // Err means a provider is already installed (by us earlier, or by the embedder): fine.
    let _ = CryptoProvider::install_default(&rust_crypto::DEFAULT_PROVIDER);
    let outcome = std::panic::catch_unwind(|| -> Result<bool, jsonwebtoken::errors::Error> {
        let secret = b"entitygate start-up self-test secret";
        let claims = serde_json::json!({"sub": "self-test", "exp": 4_102_444_800u64});
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )?;
        let mut v = Validation::new(Algorithm::HS256);
        v.validate_exp = false;
        let good = jsonwebtoken::decode::<Map<String, Value>>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(secret),
            &v,
        )
        .is_ok();
        let bad = jsonwebtoken::decode::<Map<String, Value>>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"a different self-test secret...."),
            &v,
        )
        .is_err();
        Ok(good && bad)
    });
    match outcome {
        Ok(Ok(true)) => Ok(()),
        _ => Err(ConfigError::invalid(
            "auth",
            "the JWT crypto backend failed its start-up self-test",
        )),
    }
}

// === token extraction ===

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Extracts the caller's token: the `x-api-key` value, or `Authorization: Bearer <t>` (scheme
/// case-insensitive). Both present and equal is accepted; both present and different is
/// [`Error::TokenConflict`], as is either header repeated. Neither (or only empty values) is
/// [`Error::TokenMissing`]. A token with anything but visible ASCII, or an `Authorization`
/// header with another scheme, is [`Error::TokenMalformed`].
///
/// # Errors
/// As above.
pub fn token_from_headers(headers: &HeaderMap) -> Result<&str, Error> {
    let api_key = match only_one(headers, &X_API_KEY)? {
        Some(v) => api_key_token(v)?,
        None => None,
    };
    let bearer = match only_one(headers, &header::AUTHORIZATION)? {
        Some(v) => bearer_token(v)?,
        None => None,
    };
    match (api_key, bearer) {
        (Some(a), Some(b)) if a == b => Ok(a),
        (Some(_), Some(_)) => Err(Error::TokenConflict),
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(Error::TokenMissing),
    }
}

fn only_one<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, Error> {
    let mut all = headers.get_all(name).iter();
    let first = all.next();
    if all.next().is_some() {
        return Err(Error::TokenConflict);
    }
    Ok(first)
}

fn api_key_token(v: &HeaderValue) -> Result<Option<&str>, Error> {
    let t = trim_ows(v.as_bytes());
    if t.is_empty() {
        return Ok(None);
    }
    visible(t).map(Some)
}

fn bearer_token(v: &HeaderValue) -> Result<Option<&str>, Error> {
    let b = trim_ows(v.as_bytes());
    if b.is_empty() {
        return Ok(None);
    }
    let (scheme, rest) = match b.iter().position(|&c| c == b' ') {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &b[b.len()..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Error::TokenMalformed(
            "the Authorization scheme must be Bearer",
        ));
    }
    let t = trim_ows(rest);
    if t.is_empty() {
        return Ok(None);
    }
    visible(t).map(Some)
}

fn visible(b: &[u8]) -> Result<&str, Error> {
    if !b.iter().all(|c| (0x21..=0x7e).contains(c)) {
        return Err(Error::TokenMalformed("the token must be visible ASCII"));
    }
    std::str::from_utf8(b).map_err(|_| Error::TokenMalformed("the token must be visible ASCII"))
}

fn trim_ows(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    &b[start..end.max(start)]
}

// === test support (shared by the tests of every auth file) ===

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod test_support {
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

    pub(crate) fn mint(
        alg: Algorithm,
        key: &EncodingKey,
        kid: Option<&str>,
        claims: &Value,
    ) -> String {
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
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_support::*;
    use super::*;
    use base64::Engine as _;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// Static keys for every family (no kid), plus whatever `top` adds (top-level keys).
    async fn all_static(top: &str) -> Authenticator {
        let cfg = auth_cfg(&format!(
            "{top}\n{}{}{}{}",
            static_key_toml("HS256", None),
            static_key_toml("RS256", None),
            static_key_toml("ES256", None),
            static_key_toml("EdDSA", None),
        ));
        Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap()
    }

    async fn rs256_only(top: &str) -> Authenticator {
        let cfg = auth_cfg(&format!("{top}\n{}", static_key_toml("RS256", None)));
        Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap()
    }

    /// A clock fixed at the returned cell's value (Unix seconds), movable by the test.
    fn fixed_clock(at: u64) -> (Clock, Arc<AtomicU64>) {
        let cell = Arc::new(AtomicU64::new(at));
        let c = cell.clone();
        let clock: Clock =
            Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)));
        (clock, cell)
    }

    fn raw_token(header: &Value, claims: &Value, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            B64.encode(serde_json::to_vec(header).unwrap()),
            B64.encode(serde_json::to_vec(claims).unwrap())
        )
    }

    #[tokio::test]
    async fn every_static_family_verifies() {
        let auth = all_static("").await;
        assert!(auth.ready());
        for alg in [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let t = mint(alg, &key_for(alg), None, &claims("alice"));
            let id = auth.authenticate(&t).await.unwrap();
            assert_eq!(&*id.subject, "alice", "{alg:?}");
        }
    }

    #[tokio::test]
    async fn identity_carries_claims_and_expiry() {
        let auth = rs256_only("").await;
        let exp = now() + 600;
        let t = mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "alice", "exp": exp, "org": "acme"}),
        );
        let id = auth.authenticate(&t).await.unwrap();
        assert_eq!(id.expires_at, exp);
        assert_eq!(id.claims["org"], "acme");
    }

    #[tokio::test]
    async fn alg_none_in_any_case_is_malformed() {
        let auth = all_static("").await;
        for alg in ["none", "None", "NONE", "nOnE"] {
            let header = json!({"alg": alg, "typ": "JWT"});
            for sig in ["", "AAAA", "c2lnbmF0dXJl"] {
                let t = raw_token(&header, &claims("alice"), sig);
                assert!(
                    matches!(auth.authenticate(&t).await, Err(Error::TokenMalformed(_))),
                    "{alg} {sig:?}"
                );
            }
        }
        // A token with an unknown alg, or no alg, is malformed as well.
        for header in [
            json!({"alg": "HS1"}),
            json!({"typ": "JWT"}),
            json!({"alg": 5}),
        ] {
            let t = raw_token(&header, &claims("alice"), "AAAA");
            assert!(matches!(
                auth.authenticate(&t).await,
                Err(Error::TokenMalformed(_))
            ));
        }
    }

    #[tokio::test]
    async fn hs256_signed_with_the_rsa_public_key_is_refused() {
        let pubpem = pem("jwt-rsa.pub");
        let confused = jsonwebtoken::EncodingKey::from_secret(&pubpem);
        // Without kid: the RS256 key is not pinned to HS256.
        let auth = rs256_only("").await;
        let t = mint(Algorithm::HS256, &confused, None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenAlgorithmNotAllowed
        );
        // With the RSA key's kid.
        let cfg = auth_cfg(&static_key_toml("RS256", Some("rsa")));
        let auth = Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap();
        let t = mint(Algorithm::HS256, &confused, Some("rsa"), &claims("alice"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenAlgorithmNotAllowed
        );
        // And next to an HS256 key with another secret: still refused (signature).
        let cfg = auth_cfg(&format!(
            "{}{}",
            static_key_toml("RS256", None),
            static_key_toml("HS256", None)
        ));
        let auth = Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap();
        let t = mint(Algorithm::HS256, &confused, None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenSignatureInvalid
        );
    }

    #[tokio::test]
    async fn token_alg_must_equal_the_key_alg() {
        let auth = rs256_only("").await;
        for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
            let t = mint(alg, &rsa_key(), None, &claims("alice"));
            assert_eq!(
                auth.authenticate(&t).await.unwrap_err(),
                Error::TokenAlgorithmNotAllowed,
                "{alg:?}"
            );
        }
    }

    #[tokio::test]
    async fn kid_selects_only_keys_with_that_kid() {
        let cfg = auth_cfg(&format!(
            "{}{}",
            static_key_toml("RS256", Some("r1")),
            static_key_toml("ES256", None)
        ));
        let auth = Authenticator::new(&cfg, &hmac_env(), client())
            .await
            .unwrap();
        let ok = mint(Algorithm::RS256, &rsa_key(), Some("r1"), &claims("alice"));
        assert!(auth.authenticate(&ok).await.is_ok());
        let wrong = mint(Algorithm::RS256, &rsa_key(), Some("r2"), &claims("alice"));
        assert_eq!(
            auth.authenticate(&wrong).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        // No kid: keys that have a kid are not tried.
        let nokid = mint(Algorithm::RS256, &rsa_key(), None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&nokid).await.unwrap_err(),
            Error::TokenAlgorithmNotAllowed
        );
        // A kid on a token whose matching key has no kid: not found.
        let es = mint(Algorithm::ES256, &ec_key(), Some("e"), &claims("alice"));
        assert_eq!(
            auth.authenticate(&es).await.unwrap_err(),
            Error::TokenUnknownKey
        );
        for kid in ["../../dev/null", "' OR 1=1--", "http://evil/jwks", ""] {
            let t = mint(Algorithm::RS256, &rsa_key(), Some(kid), &claims("alice"));
            assert_eq!(
                auth.authenticate(&t).await.unwrap_err(),
                Error::TokenUnknownKey,
                "{kid:?}"
            );
        }
        let long = mint(
            Algorithm::RS256,
            &rsa_key(),
            Some(&"r".repeat(257)),
            &claims("alice"),
        );
        assert_eq!(
            auth.authenticate(&long).await.unwrap_err(),
            Error::TokenUnknownKey
        );
    }

    #[tokio::test]
    async fn static_rotation_tries_every_key_without_kid() {
        let mut env = hmac_env();
        env.insert(
            "OLD".into(),
            "an-old-rotated-out-hmac-secret-0123456789".into(),
        );
        let cfg = auth_cfg(&format!(
            "[[keys]]\nalg = \"HS256\"\nsecret_env = \"OLD\"\n{}",
            static_key_toml("HS256", None)
        ));
        let auth = Authenticator::new(&cfg, &env, client()).await.unwrap();
        let new = mint(Algorithm::HS256, &hmac_key(), None, &claims("alice"));
        assert!(auth.authenticate(&new).await.is_ok());
        let old_key =
            jsonwebtoken::EncodingKey::from_secret(b"an-old-rotated-out-hmac-secret-0123456789");
        let old = mint(Algorithm::HS256, &old_key, None, &claims("bob"));
        assert_eq!(&*auth.authenticate(&old).await.unwrap().subject, "bob");
        let other = jsonwebtoken::EncodingKey::from_secret(b"never-configured-secret-0123456789ab");
        let bad = mint(Algorithm::HS256, &other, None, &claims("eve"));
        assert_eq!(
            auth.authenticate(&bad).await.unwrap_err(),
            Error::TokenSignatureInvalid
        );
    }

    #[tokio::test]
    async fn shape_is_checked_first() {
        let auth = rs256_only("").await;
        let good = mint(Algorithm::RS256, &rsa_key(), None, &claims("alice"));
        let (h, rest) = good.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let cases = vec![
            String::new(),
            "abc".to_owned(),
            format!("{h}.{p}"),
            format!("{h}.{p}."),
            format!("{h}..{s}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}.{p}.{s}+/"),
            format!("{h}.{p}.{}", &s[..s.len() - 5]), // truncated
            format!("{h}.{p}.{s} "),
            format!("{}.{p}.{s}", "A".repeat(MAX_TOKEN_LEN)),
        ];
        for (i, t) in cases.iter().enumerate() {
            let err = auth.authenticate(t).await.unwrap_err();
            assert!(
                matches!(err, Error::TokenMalformed(_) | Error::TokenSignatureInvalid),
                "case {i}: {err:?}"
            );
        }
        // The size bound and the dot count are malformed, whatever the content.
        assert!(matches!(
            auth.authenticate(&format!("{}.{p}.{s}", "A".repeat(MAX_TOKEN_LEN)))
                .await,
            Err(Error::TokenMalformed(_))
        ));
        assert!(matches!(
            auth.authenticate(&format!("{h}.{p}")).await,
            Err(Error::TokenMalformed(_))
        ));
        // Truncating the signature never verifies.
        let truncated = format!("{h}.{p}.{}", &s[..s.len() - 4]);
        assert!(auth.authenticate(&truncated).await.is_err());
    }

    #[tokio::test]
    async fn signature_from_another_token_is_refused() {
        let auth = all_static("").await;
        for alg in [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ] {
            let t = mint(alg, &key_for(alg), None, &claims("victim"));
            let forged = resign(&t, &other_token(alg, None));
            assert_eq!(
                auth.authenticate(&forged).await.unwrap_err(),
                Error::TokenSignatureInvalid,
                "{alg:?}"
            );
            // Payload swapped under a valid signature.
            let donor = other_token(alg, None);
            let (dh, drest) = donor.split_once('.').unwrap();
            let (_, dsig) = drest.split_once('.').unwrap();
            let (_, trest) = t.split_once('.').unwrap();
            let (tp, _) = trest.split_once('.').unwrap();
            let swapped = format!("{dh}.{tp}.{dsig}");
            assert_eq!(
                auth.authenticate(&swapped).await.unwrap_err(),
                Error::TokenSignatureInvalid
            );
        }
    }

    #[tokio::test]
    async fn crit_header_is_refused() {
        let auth = rs256_only("").await;
        let mut h = Header::new(Algorithm::RS256);
        h.crit = Some(vec!["b64".into()]);
        let t = jsonwebtoken::encode(&h, &claims("alice"), &rsa_key()).unwrap();
        assert!(matches!(
            auth.authenticate(&t).await,
            Err(Error::TokenMalformed(_))
        ));
    }

    #[tokio::test]
    async fn expiry_and_not_before_with_leeway_boundaries() {
        let t0 = now();
        let (clock, _) = fixed_clock(t0);
        let auth = rs256_only("leeway_secs = 30").await.with_clock(clock);
        let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
        // exp: within leeway (inclusive) accepted, one second beyond refused.
        assert!(auth
            .authenticate(&tok(json!({"sub": "a", "exp": t0 - 30})))
            .await
            .is_ok());
        assert_eq!(
            auth.authenticate(&tok(json!({"sub": "a", "exp": t0 - 31})))
                .await
                .unwrap_err(),
            Error::TokenExpired
        );
        assert_eq!(
            auth.authenticate(&tok(json!({"sub": "a", "exp": t0 - 3600})))
                .await
                .unwrap_err(),
            Error::TokenExpired
        );
        // nbf and iat in the future: within leeway accepted, beyond refused.
        for claim in ["nbf", "iat"] {
            let mut ok = json!({"sub": "a", "exp": t0 + 600});
            ok[claim] = (t0 + 30).into();
            assert!(auth.authenticate(&tok(ok)).await.is_ok(), "{claim}");
            let mut bad = json!({"sub": "a", "exp": t0 + 600});
            bad[claim] = (t0 + 31).into();
            assert_eq!(
                auth.authenticate(&tok(bad)).await.unwrap_err(),
                Error::TokenNotYetValid,
                "{claim}"
            );
        }
        // Past nbf is fine; fractional dates are rounded toward refusal.
        assert!(auth
            .authenticate(&tok(json!({"sub": "a", "exp": t0 + 600, "nbf": t0 - 10})))
            .await
            .is_ok());
        assert_eq!(
            auth.authenticate(&tok(json!({"sub": "a", "exp": (t0 - 31) as f64 + 0.9})))
                .await
                .unwrap_err(),
            Error::TokenExpired
        );
    }

    #[tokio::test]
    async fn exp_is_required_and_numeric() {
        let auth = rs256_only("").await;
        let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
        for c in [
            json!({"sub": "a"}),
            json!({"sub": "a", "exp": "9999999999"}),
            json!({"sub": "a", "exp": null}),
            json!({"sub": "a", "exp": -5}),
            json!({"sub": "a", "exp": [9_999_999_999u64]}),
            json!({"sub": "a", "exp": true}),
        ] {
            assert_eq!(
                auth.authenticate(&tok(c.clone())).await.unwrap_err(),
                Error::TokenClaimInvalid("exp"),
                "{c}"
            );
        }
        for c in [
            json!({"sub": "a", "exp": now() + 600, "nbf": "9999999999"}),
            json!({"sub": "a", "exp": now() + 600, "nbf": {}}),
        ] {
            assert_eq!(
                auth.authenticate(&tok(c)).await.unwrap_err(),
                Error::TokenClaimInvalid("nbf")
            );
        }
        let c = json!({"sub": "a", "exp": now() + 600, "iat": "now"});
        assert_eq!(
            auth.authenticate(&tok(c)).await.unwrap_err(),
            Error::TokenClaimInvalid("iat")
        );
        // Claims that are not an object.
        let t = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!([1, 2]), &rsa_key())
            .unwrap();
        assert!(matches!(
            auth.authenticate(&t).await,
            Err(Error::TokenMalformed(_))
        ));
    }

    #[tokio::test]
    async fn issuer_is_checked_when_configured() {
        let auth = rs256_only("issuer = \"https://idp.example.com/\"").await;
        let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
        let exp = now() + 600;
        assert!(auth
            .authenticate(&tok(
                json!({"sub": "a", "exp": exp, "iss": "https://idp.example.com/"})
            ))
            .await
            .is_ok());
        for iss in [
            json!("https://evil.example.com/"),
            json!("https://idp.example.com"),
        ] {
            assert_eq!(
                auth.authenticate(&tok(json!({"sub": "a", "exp": exp, "iss": iss})))
                    .await
                    .unwrap_err(),
                Error::TokenIssuerMismatch
            );
        }
        // Missing, or not a single string: claim invalid.
        for c in [
            json!({"sub": "a", "exp": exp}),
            json!({"sub": "a", "exp": exp, "iss": 7}),
            json!({"sub": "a", "exp": exp, "iss": ["https://idp.example.com/", "x"]}),
        ] {
            assert_eq!(
                auth.authenticate(&tok(c.clone())).await.unwrap_err(),
                Error::TokenClaimInvalid("iss"),
                "{c}"
            );
        }
        // Not configured: any iss passes.
        let open = rs256_only("").await;
        assert!(open
            .authenticate(&tok(json!({"sub": "a", "exp": exp, "iss": "whoever"})))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn audience_is_checked_when_configured() {
        let auth = rs256_only("audience = [\"entitygate\", \"gw2\"]").await;
        let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
        let exp = now() + 600;
        for aud in [
            json!("entitygate"),
            json!("gw2"),
            json!(["other", "entitygate"]),
        ] {
            assert!(
                auth.authenticate(&tok(json!({"sub": "a", "exp": exp, "aud": aud})))
                    .await
                    .is_ok(),
                "{aud}"
            );
        }
        for aud in [json!("other"), json!(["other", "another"]), json!([])] {
            assert_eq!(
                auth.authenticate(&tok(json!({"sub": "a", "exp": exp, "aud": aud})))
                    .await
                    .unwrap_err(),
                Error::TokenAudienceMismatch,
                "{aud}"
            );
        }
        for c in [
            json!({"sub": "a", "exp": exp}),
            json!({"sub": "a", "exp": exp, "aud": 5}),
            json!({"sub": "a", "exp": exp, "aud": ["entitygate", 5]}),
        ] {
            assert_eq!(
                auth.authenticate(&tok(c.clone())).await.unwrap_err(),
                Error::TokenClaimInvalid("aud"),
                "{c}"
            );
        }
        let single = rs256_only("audience = \"entitygate\"").await;
        assert!(single
            .authenticate(&tok(json!({"sub": "a", "exp": exp, "aud": ["entitygate"]})))
            .await
            .is_ok());
        // Not configured: aud is not checked.
        let open = rs256_only("").await;
        assert!(open
            .authenticate(&tok(json!({"sub": "a", "exp": exp, "aud": "anything"})))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn subject_must_be_a_sane_string() {
        let auth = rs256_only("").await;
        let exp = now() + 600;
        let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
        for sub in [
            json!(null),
            json!(42),
            json!(["alice"]),
            json!({"id": "alice"}),
            json!(""),
            json!("a".repeat(257)),
            json!("alice\n"),
            json!("al\u{0}ice"),
            json!("alice\u{7f}"),
            json!("alice\u{85}"),
        ] {
            assert_eq!(
                auth.authenticate(&tok(json!({"sub": sub, "exp": exp})))
                    .await
                    .unwrap_err(),
                Error::TokenSubjectInvalid,
                "{sub}"
            );
        }
        assert_eq!(
            auth.authenticate(&tok(json!({"exp": exp})))
                .await
                .unwrap_err(),
            Error::TokenSubjectInvalid
        );
        let max = "a".repeat(256);
        assert_eq!(
            &*auth
                .authenticate(&tok(json!({"sub": max, "exp": exp})))
                .await
                .unwrap()
                .subject,
            max
        );
        assert!(auth
            .authenticate(&tok(json!({"sub": "zoë ü", "exp": exp})))
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn subject_claim_and_prefix_are_applied() {
        let auth = rs256_only("subject_claim = \"email\"\nsubject_prefix = \"acme:\"").await;
        let exp = now() + 600;
        let t = mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "x", "email": "a@b.c", "exp": exp}),
        );
        assert_eq!(&*auth.authenticate(&t).await.unwrap().subject, "acme:a@b.c");
        let t = mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "x", "exp": exp}),
        );
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenSubjectInvalid
        );
    }

    #[tokio::test]
    async fn cache_hit_returns_same_subject_and_expired_hit_is_refused() {
        let t0 = now();
        let (clock, cell) = fixed_clock(t0);
        let auth = rs256_only("leeway_secs = 5").await.with_clock(clock);
        let t = mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "alice", "exp": t0 + 60}),
        );
        let first = auth.authenticate(&t).await.unwrap();
        assert_eq!(auth.cached_tokens(), 1);
        let second = auth.authenticate(&t).await.unwrap();
        assert_eq!(first.subject, second.subject);
        assert!(
            Arc::ptr_eq(&first.claims, &second.claims),
            "served from the cache"
        );
        cell.store(t0 + 65, Ordering::SeqCst);
        assert!(auth.authenticate(&t).await.is_ok(), "within leeway");
        cell.store(t0 + 66, Ordering::SeqCst);
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenExpired
        );
        assert_eq!(auth.cached_tokens(), 0);
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenExpired
        );
        // Refused tokens are never cached.
        let bad = resign(
            &mint(Algorithm::RS256, &rsa_key(), None, &claims("eve")),
            &t,
        );
        assert!(auth.authenticate(&bad).await.is_err());
        assert_eq!(auth.cached_tokens(), 0);
    }

    #[tokio::test]
    async fn clock_before_epoch_is_clock_unavailable() {
        let clock: Clock = Arc::new(|| UNIX_EPOCH - Duration::from_secs(10));
        let auth = rs256_only("").await.with_clock(clock);
        let t = mint(Algorithm::RS256, &rsa_key(), None, &claims("alice"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::ClockUnavailable
        );
    }

    #[tokio::test]
    async fn construction_errors() {
        let cfg = auth_cfg("issuer = \"x\"");
        assert!(matches!(
            Authenticator::new(&cfg, &hmac_env(), client()).await.unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth"
        ));
        let cfg = auth_cfg(&format!(
            "subject_claim = \"\"\n{}",
            static_key_toml("RS256", None)
        ));
        assert!(matches!(
            Authenticator::new(&cfg, &hmac_env(), client()).await.unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth.subject_claim"
        ));
        let cfg = auth_cfg(&static_key_toml("HS256", None));
        assert!(matches!(
            Authenticator::new(&cfg, &HashMap::<String, String>::new(), client()).await.unwrap_err(),
            ConfigError::MissingEnv { key, .. } if key == "auth.keys[0].secret_env"
        ));
        // The crypto self-test passes (and is idempotent).
        crypto_self_test().unwrap();
        crypto_self_test().unwrap();
    }

    #[tokio::test]
    async fn spawn_refresh_without_jwks_ends_at_once() {
        let auth = rs256_only("").await;
        tokio::time::timeout(Duration::from_secs(5), auth.spawn_refresh())
            .await
            .unwrap()
            .unwrap();
    }

    // --- token_from_headers ---

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn token_from_either_header() {
        assert_eq!(
            token_from_headers(&headers(&[("x-api-key", b"abc.def.ghi")])),
            Ok("abc.def.ghi")
        );
        for auth in [
            &b"Bearer abc"[..],
            b"bearer abc",
            b"BEARER abc",
            b"Bearer   abc  ",
        ] {
            assert_eq!(
                token_from_headers(&headers(&[("authorization", auth)])),
                Ok("abc")
            );
        }
        assert_eq!(
            token_from_headers(&headers(&[
                ("x-api-key", b"abc"),
                ("authorization", b"Bearer abc")
            ])),
            Ok("abc")
        );
    }

    #[test]
    fn token_conflicts() {
        for h in [
            headers(&[("x-api-key", b"abc"), ("authorization", b"Bearer xyz")]),
            headers(&[("x-api-key", b"abc"), ("x-api-key", b"abc")]),
            headers(&[("x-api-key", b"abc"), ("x-api-key", b"xyz")]),
            headers(&[
                ("authorization", b"Bearer abc"),
                ("authorization", b"Bearer abc"),
            ]),
            headers(&[("X-Api-Key", b"abc"), ("x-api-key", b"xyz")]),
        ] {
            assert_eq!(token_from_headers(&h), Err(Error::TokenConflict), "{h:?}");
        }
    }

    #[test]
    fn token_missing() {
        for h in [
            headers(&[]),
            headers(&[("x-api-key", b"")]),
            headers(&[("x-api-key", b"   ")]),
            headers(&[("authorization", b"Bearer")]),
            headers(&[("authorization", b"Bearer   ")]),
            headers(&[("authorization", b"")]),
            headers(&[("cookie", b"token=abc")]),
        ] {
            assert_eq!(token_from_headers(&h), Err(Error::TokenMissing), "{h:?}");
        }
    }

    #[test]
    fn token_malformed() {
        for h in [
            headers(&[("x-api-key", b"ab c")]),
            headers(&[("x-api-key", b"abc\xc3\xa9")]),
            headers(&[("x-api-key", b"a\tb")]),
            headers(&[("authorization", b"Basic dXNlcjpwYXNz")]),
            headers(&[("authorization", b"Bearerabc")]),
            headers(&[("authorization", b"Bearer a b")]),
            headers(&[("authorization", b"Bearer abc\xff")]),
            headers(&[("authorization", b"Token abc")]),
        ] {
            assert!(
                matches!(token_from_headers(&h), Err(Error::TokenMalformed(_))),
                "{h:?}"
            );
        }
    }
}
