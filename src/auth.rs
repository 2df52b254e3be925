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
//! - only fully verified tokens are cached, by SHA-256, and every hit re-checks `exp`;
//! - an [`Identity`] keeps the subject, `exp` and only the claims the tool policy reads
//!   ([`Authenticator::keep_claims`]), so the cache's bytes do not grow with token size;
//! - a token whose `kid` is unknown waits at most `unknown_kid_wait_ms` for the refetch it
//!   triggers, then is answered from the keys at hand: it never holds a request slot for the
//!   length of a slow identity provider's answer.

mod cache;
mod claims;
mod jwks;
mod keys;
mod provider;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, Header, Validation};
use serde_json::{Map, Value};

use self::cache::TokenCache;
use self::claims::{Claims, Loose, Reader};
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
    /// The claims of the token that decisions read (the tool policy's rules and scopes, the
    /// constraints on arguments).
    pub claims: Arc<Map<String, Value>>,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: u64,
}

impl Identity {
    /// The token's `jti` as text: a string as it is, an integer in decimal (`123` and `"123"`
    /// name the same token, so a deny rule for one stops the other).
    pub fn jti(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.claims.get("jti").and_then(jti_text)
    }
}

/// A `jti` claim's text form: strings and integers only.
fn jti_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            Some(std::borrow::Cow::Owned(n.to_string()))
        }
        _ => None,
    }
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
    issuer: Option<String>,
    /// `aud` must name one of these, when set.
    audience: Option<Box<[String]>>,
    subject_claim: String,
    subject_prefix: String,
    leeway: u64,
    /// Top-level claims an [`Identity`] keeps; `None`: all of them.
    keep: Option<Box<[String]>>,
    /// How long an unknown `kid` waits for its refetch.
    kid_wait: std::time::Duration,
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
        let cache = Arc::new(TokenCache::new(
            cfg.token_cache_entries,
            cfg.token_cache_bytes,
            cfg.leeway_secs,
        ));
        let jwks = match &cfg.jwks {
            None => None,
            Some(j) => Some(Arc::new(JwksSource::new(j, client, cache.clone())?)),
        };
        let auth = Self {
            inner: Arc::new(Inner {
                static_keys,
                jwks,
                cache,
                issuer: cfg.issuer.clone(),
                audience: cfg.audience.as_ref().map(|a| a.to_vec().into_boxed_slice()),
                subject_claim: cfg.subject_claim.clone(),
                subject_prefix: cfg.subject_prefix.clone(),
                leeway: cfg.leeway_secs,
                keep: None,
                kid_wait: std::time::Duration::from_millis(
                    cfg.jwks.as_ref().map_or(0, |j| j.unknown_kid_wait_ms),
                ),
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

    /// Keeps only `names` (top-level claims) in each [`Identity`]: what the tool policy reads.
    /// Call before the authenticator is shared (it is a no-op afterwards).
    #[must_use]
    pub fn keep_claims(mut self, names: Vec<String>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.keep = Some(names.into_boxed_slice());
        }
        self
    }

    /// Verified tokens cached, and the bytes they are counted for.
    pub fn cache_usage(&self) -> (usize, usize) {
        (self.inner.cache.len(), self.inner.cache.bytes())
    }

    /// True when at least one key is usable (static keys loaded, or the JWKS fetched once).
    pub fn ready(&self) -> bool {
        !self.inner.static_keys.is_empty()
            || self.inner.jwks.as_ref().is_some_and(|j| j.is_loaded())
    }

    /// With a JWKS: whether it was ever fetched, and its key set's generation.
    pub(crate) fn jwks_status(&self) -> Option<(bool, u64)> {
        self.inner
            .jwks
            .as_ref()
            .map(|j| (j.is_loaded(), j.generation()))
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
    async fn verify(&self, token: &str, header: &Header) -> Result<Claims, Error> {
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
                    let finished = j.refetch_within(seen, inner.kid_wait).await;
                    if j.generation() != seen {
                        continue;
                    }
                    if !finished {
                        // The IdP is slow: answer now (retryably) rather than hold a slot.
                        return Err(Error::KeysUnavailable);
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

    /// Tries each key in turn. `Ok` with the claims on the first that verifies the signature;
    /// `Err(Some(_))` for a refusal that no other key can change (a bad signature encoding,
    /// or claims refused after the signature verified); `Err(None)` when no key verified it.
    fn try_keys(
        &self,
        token: &str,
        alg: Algorithm,
        keys: &[Arc<VerifyKey>],
    ) -> Result<Claims, Option<Error>> {
        // `check_shape` made sure of three parts.
        let (message, signature) = token.rsplit_once('.').ok_or(Some(Error::Internal))?;
        for key in keys {
            // Our own assertion: the key's algorithm, and only it (the header's `alg` was
            // only used to pick the keys).
            if key.alg != alg {
                return Err(Some(Error::TokenAlgorithmNotAllowed));
            }
            match jsonwebtoken::crypto::verify(signature, message.as_bytes(), &key.key, key.alg) {
                Ok(true) => return self.read_claims(message).map_err(Some),
                Ok(false) => {}
                Err(e) => {
                    if let Some(refusal) = classify(&e) {
                        return Err(Some(refusal));
                    }
                }
            }
        }
        Err(None)
    }

    /// The claims of a token whose signature has verified: one pass over the payload, then
    /// what jsonwebtoken's validation used to judge, in its order (a compound `exp`, `nbf` or
    /// `sub` first, then the required claims, then issuer and audience).
    fn read_claims(&self, message: &str) -> Result<Claims, Error> {
        use base64::Engine as _;
        let payload = message.split_once('.').map_or("", |(_, p)| p);
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Error::TokenMalformed("not a valid JWT"))?;
        let reader = Reader {
            subject_claim: &self.subject_claim,
            keep: self.keep.as_deref(),
        };
        let claims = reader.read(&json)?;
        for (name, v) in [("exp", &claims.exp), ("nbf", &claims.nbf)] {
            if v.as_ref().is_some_and(Loose::is_compound) {
                return Err(Error::TokenClaimInvalid(name));
            }
        }
        if claims.sub_compound {
            return Err(if self.subject_claim == "sub" {
                Error::TokenSubjectInvalid
            } else {
                Error::TokenClaimInvalid("sub")
            });
        }
        if claims
            .exp
            .as_ref()
            .and_then(|v| v.numeric_date(false))
            .is_none()
        {
            return Err(Error::TokenClaimInvalid("exp"));
        }
        let iss = claims.iss.as_ref().and_then(Loose::str_or_list);
        let aud = claims.aud.as_ref().and_then(Loose::str_or_list);
        if self.issuer.is_some() && iss.is_none() {
            return Err(Error::TokenClaimInvalid("iss"));
        }
        if self.audience.is_some() && aud.is_none() {
            return Err(Error::TokenClaimInvalid("aud"));
        }
        if let (Some(want), Some(iss)) = (&self.issuer, iss) {
            // A list naming the issuer gets past here and is refused by `identity` (the
            // issuer must be one string).
            if !iss.iter().any(|i| i == want) {
                return Err(Error::TokenIssuerMismatch);
            }
        }
        if let (Some(want), Some(aud)) = (&self.audience, aud) {
            if !aud.iter().any(|a| want.contains(a)) {
                return Err(Error::TokenAudienceMismatch);
            }
        }
        Ok(claims)
    }

    /// Checks time claims, the issuer and the subject of verified claims.
    fn identity(&self, claims: Claims, now: u64) -> Result<Identity, Error> {
        let exp = claims
            .exp
            .as_ref()
            .and_then(|v| v.numeric_date(false))
            .ok_or(Error::TokenClaimInvalid("exp"))?;
        if cache::expired(exp, now, self.leeway) {
            return Err(Error::TokenExpired);
        }
        let limit = now.saturating_add(self.leeway);
        for (name, v) in [("nbf", &claims.nbf), ("iat", &claims.iat)] {
            if let Some(v) = v {
                let t = v.numeric_date(true).ok_or(Error::TokenClaimInvalid(name))?;
                if t > limit {
                    return Err(Error::TokenNotYetValid);
                }
            }
        }
        if let Some(want) = &self.issuer {
            match &claims.iss {
                Some(Loose::Str(iss)) if iss == want => {}
                Some(Loose::Str(_)) => return Err(Error::TokenIssuerMismatch),
                _ => return Err(Error::TokenClaimInvalid("iss")),
            }
        }
        let sub = match &claims.subject {
            Some(Loose::Str(s))
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
        // A kill switch rule names a token by its `jti` as text: a `jti` with no one text form
        // (a fraction, a boolean, an object) could never be matched, so such a token is refused
        // rather than let past every jti rule.
        if claims.jti.as_ref().is_some_and(|j| !j.is_jti()) {
            return Err(Error::TokenClaimInvalid("jti"));
        }
        let subject: Arc<str> = if self.subject_prefix.is_empty() {
            Arc::from(sub.as_str())
        } else {
            Arc::from(format!("{}{sub}", self.subject_prefix))
        };
        Ok(Identity {
            subject,
            // Only the kept claims were built as JSON at all ([`Authenticator::keep_claims`]).
            claims: Arc::new(claims.kept),
            expires_at: exp,
        })
    }
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
    use jsonwebtoken::crypto::CryptoProvider;
    // aws-lc, with RSA keys parsed once ([`provider`]): RS256 verification, which every new
    // user and every token refresh pays, is several times faster than with the pure-Rust
    // backend (BENCHMARKS.md, issue 17).
    // Err means a provider is already installed (by us earlier, or by the embedder): fine.
    let _ = CryptoProvider::install_default(provider::provider());
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
pub(crate) mod test_support;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
