//! Verification keys: static keys from `[[auth.keys]]` and keys taken from a JWKS.
//!
//! Every key carries exactly one [`Algorithm`], fixed when the key is loaded (from the config
//! for static keys, from the JWK's `alg`, the configured list or the family default for JWKS
//! keys). A token's `alg` header only *selects* among keys; it never changes how a key is used.
//! Symmetric (`oct`) keys are never taken from a remote JWKS.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use aws_lc_rs::signature::{self, VerificationAlgorithm};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use sha2::{Digest, Sha256};

use crate::config::{ConfigError, Env, KeyConfig};

/// Longest `kid` looked up; anything longer is refused without I/O.
pub(crate) const MAX_KID_LEN: usize = 256;
/// HMAC secrets shorter than this are accepted with a warning.
const MIN_HMAC_SECRET_LEN: usize = 32;
/// RSA moduli shorter than this are refused.
const MIN_RSA_BITS: usize = 2048;
/// RSA moduli longer than this cannot be verified by the backend and are refused.
const MAX_RSA_BITS: usize = 4096;

/// Where a key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// `[[auth.keys]]`.
    Static,
    /// The remote JWKS.
    Jwks,
}

/// One usable verification key with its pinned algorithm.
pub(crate) struct VerifyKey {
    /// The key id, if any.
    pub(crate) kid: Option<Arc<str>>,
    /// The one algorithm this key verifies.
    pub(crate) alg: Algorithm,
    /// The key material.
    pub(crate) key: DecodingKey,
    /// Static or JWKS.
    pub(crate) origin: Origin,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material deliberately absent.
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// A set of keys, indexed by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<Arc<VerifyKey>>,
    by_kid: HashMap<Arc<str>, Vec<Arc<VerifyKey>>>,
    /// SHA-256 over the canonical description of the keys (JWKS change detection).
    fingerprint: [u8; 32],
}

impl KeySet {
    /// Indexes `keys`; `fingerprint` identifies the material (all zeros for static sets).
    pub(crate) fn new(keys: Vec<Arc<VerifyKey>>, fingerprint: [u8; 32]) -> Self {
        let mut by_kid: HashMap<Arc<str>, Vec<Arc<VerifyKey>>> = HashMap::new();
        for k in &keys {
            if let Some(kid) = &k.kid {
                by_kid.entry(kid.clone()).or_default().push(k.clone());
            }
        }
        Self {
            keys,
            by_kid,
            fingerprint,
        }
    }

    /// Keys whose `kid` is exactly `kid`.
    pub(crate) fn with_kid(&self, kid: &str) -> &[Arc<VerifyKey>] {
        self.by_kid.get(kid).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Keys that carry no `kid`.
    pub(crate) fn without_kid(&self) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.keys.iter().filter(|k| k.kid.is_none())
    }

    /// All keys.
    pub(crate) fn all(&self) -> &[Arc<VerifyKey>] {
        &self.keys
    }

    /// How many keys.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The material fingerprint.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// Parses an algorithm name exactly as configured (`RS256`, `EdDSA`, ...). `none` is not one.
pub(crate) fn parse_alg(s: &str) -> Option<Algorithm> {
    Algorithm::from_str(s).ok()
}

const ALG_NAMES: &str =
    "HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA";

/// Loads `[[auth.keys]]`: HMAC secrets from the environment, public keys from PEM files.
///
/// # Errors
/// A [`ConfigError`] naming the key (`auth.keys[i]...`) for an unknown algorithm, a missing or
/// misplaced `secret_env`/`public_key_file`, an unset secret, or an unusable PEM file.
pub(crate) fn load_static(cfgs: &[KeyConfig], env: &dyn Env) -> Result<KeySet, ConfigError> {
    let mut keys = Vec::with_capacity(cfgs.len());
    for (i, k) in cfgs.iter().enumerate() {
        keys.push(Arc::new(load_one(i, k, env)?));
    }
    Ok(KeySet::new(keys, [0; 32]))
}

fn load_one(i: usize, k: &KeyConfig, env: &dyn Env) -> Result<VerifyKey, ConfigError> {
    let name = format!("auth.keys[{i}]");
    let alg = parse_alg(&k.alg).ok_or_else(|| {
        ConfigError::invalid(
            format!("{name}.alg"),
            format!("unknown algorithm `{}`; expected one of {ALG_NAMES}", k.alg),
        )
    })?;
    let kid = match &k.kid {
        None => None,
        Some(kid) if kid.is_empty() => {
            return Err(ConfigError::invalid(format!("{name}.kid"), "is empty"));
        }
        Some(kid) if kid.len() > MAX_KID_LEN => {
            return Err(ConfigError::invalid(
                format!("{name}.kid"),
                format!("is longer than {MAX_KID_LEN} bytes"),
            ));
        }
        Some(kid) => Some(Arc::<str>::from(kid.as_str())),
    };
    let key = if alg.family() == AlgorithmFamily::Hmac {
        if k.public_key_file.is_some() {
            return Err(ConfigError::invalid(
                format!("{name}.public_key_file"),
                format!("is not used with {alg:?}; set secret_env"),
            ));
        }
        let secret =
            match (&k.secret_env, &k.secret_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::invalid(
                        format!("{name}.secret_file"),
                        "set secret_env or secret_file, not both",
                    ));
                }
                (Some(var), None) => env.var(var).filter(|s| !s.is_empty()).ok_or_else(|| {
                    ConfigError::MissingEnv {
                        key: format!("{name}.secret_env"),
                        var: var.to_owned(),
                    }
                })?,
                (None, Some(path)) => {
                    crate::config::read_secret_file(path, &format!("{name}.secret_file"))?
                }
                (None, None) => {
                    return Err(ConfigError::invalid(
                        format!("{name}.secret_env"),
                        format!("is required for {alg:?} (or secret_file)"),
                    ));
                }
            };
        if secret.len() < MIN_HMAC_SECRET_LEN {
            tracing::warn!(
                key = %name,
                len = secret.len(),
                "HMAC secret is shorter than {MIN_HMAC_SECRET_LEN} bytes; use a longer random secret"
            );
        }
        DecodingKey::from_secret(secret.as_bytes())
    } else {
        if k.secret_env.is_some() || k.secret_file.is_some() {
            return Err(ConfigError::invalid(
                format!("{name}.secret_env"),
                format!("is only for HS* keys; {alg:?} needs public_key_file"),
            ));
        }
        let path = k.public_key_file.as_deref().ok_or_else(|| {
            ConfigError::invalid(
                format!("{name}.public_key_file"),
                format!("is required for {alg:?}"),
            )
        })?;
        let file_err = |reason: String| ConfigError::File {
            key: format!("{name}.public_key_file"),
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| file_err(e.to_string()))?;
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err(file_err(
                "holds a private key; configure the public key instead".into(),
            ));
        }
        let key = match alg.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(&pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(&pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(&pem),
            AlgorithmFamily::Hmac => return Err(file_err("HMAC keys take no file".into())),
        }
        .map_err(|e| file_err(format!("not a PEM public key for {alg:?}: {e}")))?;
        probe(&key, alg).map_err(|e| file_err(format!("unusable for {alg:?}: {e}")))?;
        key
    };
    Ok(VerifyKey {
        kid,
        alg,
        key,
        origin: Origin::Static,
    })
}

/// Checks that `key` can verify `alg` (right family, parseable material, sane RSA size), so
/// that a broken key is found at load time instead of failing every token.
pub(crate) fn probe(key: &DecodingKey, alg: Algorithm) -> Result<(), String> {
    if key.family() != alg.family() {
        return Err(format!("a {:?} key cannot verify {alg:?}", key.family()));
    }
    if alg.family() == AlgorithmFamily::Rsa {
        let jwk = Jwk::from_decoding_key(key, Some(alg)).map_err(|e| e.to_string())?;
        let AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            return Err("not an RSA key".into());
        };
        check_rsa_components(&rsa.n, &rsa.e)?;
    }
    if alg.family() == AlgorithmFamily::Ed {
        // jsonwebtoken 11.1 slices `[..32]` when building an EdDSA verifier: a shorter key
        // would panic, a longer one would be silently truncated. Only exact keys get through.
        let raw = key.try_get_as_bytes().map_err(|e| e.to_string())?;
        if raw.len() != 32 {
            return Err(format!("an Ed25519 key has 32 bytes, not {}", raw.len()));
        }
    }
    // aws-lc parses a key only when it verifies a signature: parse it now, so that a point
    // off its curve (or a P-256 key named ES384) is refused at load time, not per token.
    let parse_as: Option<&'static dyn VerificationAlgorithm> = match alg {
        Algorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED),
        Algorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED),
        Algorithm::EdDSA => Some(&signature::ED25519),
        _ => None,
    };
    if let Some(parse_as) = parse_as {
        let raw = key.try_get_as_bytes().map_err(|e| e.to_string())?;
        signature::ParsedPublicKey::new(parse_as, raw)
            .map_err(|e| format!("not a valid {alg:?} public key: {e}"))?;
    }
    // Builds the verifier; the empty signature never verifies.
    jsonwebtoken::crypto::verify("", b"", key, alg).map_err(|e| e.to_string())?;
    Ok(())
}

fn check_rsa_components(n_b64: &str, e_b64: &str) -> Result<(), String> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let n = b64
        .decode(n_b64.trim_end_matches('='))
        .map_err(|_| "RSA modulus is not base64url".to_owned())?;
    let e = b64
        .decode(e_b64.trim_end_matches('='))
        .map_err(|_| "RSA exponent is not base64url".to_owned())?;
    let n = strip_leading_zeros(&n);
    let e = strip_leading_zeros(&e);
    let bits = match n.first() {
        None => 0,
        Some(&first) => (n.len() - 1) * 8 + (8 - first.leading_zeros() as usize),
    };
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus has {bits} bits, fewer than {MIN_RSA_BITS}"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA modulus has {bits} bits, more than {MAX_RSA_BITS}"
        ));
    }
    if e.is_empty() || e.len() > 8 || e.last().is_some_and(|b| b & 1 == 0) {
        return Err("RSA exponent is unusable".into());
    }
    Ok(())
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[start..]
}

/// The algorithms a JWK of this shape can carry, best (default) first.
fn compatible(params: &AlgorithmParameters) -> Result<&'static [Algorithm], String> {
    match params {
        AlgorithmParameters::RSA(_) => Ok(&[
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ]),
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Ok(&[Algorithm::ES256]),
            EllipticCurve::P384 => Ok(&[Algorithm::ES384]),
            _ => Err("unsupported EC curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => Ok(&[Algorithm::EdDSA]),
            _ => Err("unsupported OKP curve".into()),
        },
        AlgorithmParameters::OctetKey(_) => {
            Err("symmetric (oct) keys are never taken from a JWKS".into())
        }
        _ => Err("unsupported key type".into()),
    }
}

/// Turns one JWK into a usable key, or says why it is skipped.
///
/// The algorithm is the JWK's own `alg` when present (it must fit the key type and curve);
/// otherwise the first of `configured` that fits; otherwise, only when `configured` is empty,
/// the family default (RSA: RS256, P-256: ES256, P-384: ES384, Ed25519: EdDSA).
pub(crate) fn from_jwk(jwk: &Jwk, configured: &[Algorithm]) -> Result<VerifyKey, String> {
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("not a signature key (`use`)".into()),
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("`key_ops` does not allow verify".into());
        }
    }
    let fits = compatible(&jwk.algorithm)?;
    let alg = match jwk.common.key_algorithm {
        Some(ka) => {
            let alg = Algorithm::try_from(ka)
                .map_err(|_| format!("`alg` {ka:?} is not a signature algorithm"))?;
            if !fits.contains(&alg) {
                return Err(format!("`alg` {alg:?} does not fit the key type"));
            }
            alg
        }
        None if configured.is_empty() => fits[0],
        None => *configured
            .iter()
            .find(|a| fits.contains(a))
            .ok_or_else(|| "no configured algorithm fits the key type".to_owned())?,
    };
    let kid = match &jwk.common.key_id {
        Some(kid) if kid.len() > MAX_KID_LEN => return Err("`kid` is too long".into()),
        Some(kid) => Some(Arc::<str>::from(kid.as_str())),
        None => None,
    };
    if let AlgorithmParameters::RSA(rsa) = &jwk.algorithm {
        check_rsa_components(&rsa.n, &rsa.e)?;
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key material: {e}"))?;
    probe(&key, alg)?;
    Ok(VerifyKey {
        kid,
        alg,
        key,
        origin: Origin::Jwks,
    })
}

/// Builds a JWKS key set from parsed JWKs, skipping (and logging) unusable ones.
pub(crate) fn jwks_set(jwks: &[Jwk], configured: &[Algorithm]) -> KeySet {
    let mut keys = Vec::new();
    let mut canon: Vec<Vec<u8>> = Vec::new();
    for (i, jwk) in jwks.iter().enumerate() {
        match from_jwk(jwk, configured) {
            Ok(k) => {
                let desc =
                    serde_json::json!([k.kid.as_deref(), format!("{:?}", k.alg), &jwk.algorithm]);
                canon.push(serde_json::to_vec(&desc).unwrap_or_default());
                keys.push(Arc::new(k));
            }
            Err(why) => {
                tracing::debug!(index = i, kid = ?jwk.common.key_id, reason = %why, "JWKS key skipped");
            }
        }
    }
    canon.sort();
    let mut h = Sha256::new();
    for c in &canon {
        h.update((c.len() as u64).to_be_bytes());
        h.update(c);
    }
    KeySet::new(keys, h.finalize().into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::test_support::*;
    use std::collections::HashMap as Map;

    fn key_cfg(toml_text: &str) -> Vec<KeyConfig> {
        #[derive(serde::Deserialize)]
        struct W {
            keys: Vec<KeyConfig>,
        }
        toml::from_str::<W>(toml_text).unwrap().keys
    }

    fn env(pairs: &[(&str, &str)]) -> Map<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn loads_every_static_family() {
        let cfg = key_cfg(&format!(
            r#"
            [[keys]]
            alg = "HS256"
            secret_env = "S"
            [[keys]]
            alg = "RS256"
            kid = "r"
            public_key_file = "{}"
            [[keys]]
            alg = "ES256"
            public_key_file = "{}"
            [[keys]]
            alg = "EdDSA"
            public_key_file = "{}"
            "#,
            cert("jwt-rsa.pub"),
            cert("jwt-ec.pub"),
            cert("jwt-ed25519.pub")
        ));
        let set = load_static(&cfg, &env(&[("S", HMAC_SECRET)])).unwrap();
        assert_eq!(set.len(), 4);
        assert_eq!(set.with_kid("r").len(), 1);
        assert_eq!(set.with_kid("r")[0].alg, Algorithm::RS256);
        assert_eq!(set.without_kid().count(), 3);
        assert!(set.all().iter().all(|k| k.origin == Origin::Static));
    }

    #[test]
    fn unknown_alg_is_invalid_and_named() {
        for alg in ["none", "rs256", "HS1", ""] {
            let cfg = key_cfg(&format!("[[keys]]\nalg = \"{alg}\"\nsecret_env = \"S\""));
            let err = load_static(&cfg, &env(&[("S", HMAC_SECRET)])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key, .. } if key == "auth.keys[0].alg"),
                "{err}"
            );
        }
    }

    #[test]
    fn hmac_needs_secret_env_and_a_set_variable() {
        let cfg = key_cfg("[[keys]]\nalg = \"HS256\"");
        assert!(matches!(
            load_static(&cfg, &env(&[])).unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth.keys[0].secret_env"
        ));
        let cfg = key_cfg("[[keys]]\nalg = \"HS256\"\nsecret_env = \"S\"");
        for e in [env(&[]), env(&[("S", "")])] {
            assert!(matches!(
                load_static(&cfg, &e).unwrap_err(),
                ConfigError::MissingEnv { key, var } if key == "auth.keys[0].secret_env" && var == "S"
            ));
        }
        // A short secret is accepted (with a warning).
        assert_eq!(load_static(&cfg, &env(&[("S", "short")])).unwrap().len(), 1);
    }

    #[test]
    fn hmac_with_a_public_key_file_is_invalid() {
        let cfg = key_cfg(&format!(
            "[[keys]]\nalg = \"HS256\"\nsecret_env = \"S\"\npublic_key_file = \"{}\"",
            cert("jwt-rsa.pub")
        ));
        assert!(matches!(
            load_static(&cfg, &env(&[("S", HMAC_SECRET)])).unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth.keys[0].public_key_file"
        ));
    }

    #[test]
    fn asymmetric_needs_a_public_key_file_and_no_secret() {
        let cfg = key_cfg("[[keys]]\nalg = \"RS256\"");
        assert!(matches!(
            load_static(&cfg, &env(&[])).unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth.keys[0].public_key_file"
        ));
        let cfg = key_cfg(&format!(
            "[[keys]]\nalg = \"RS256\"\nsecret_env = \"S\"\npublic_key_file = \"{}\"",
            cert("jwt-rsa.pub")
        ));
        assert!(matches!(
            load_static(&cfg, &env(&[("S", HMAC_SECRET)])).unwrap_err(),
            ConfigError::Invalid { key, .. } if key == "auth.keys[0].secret_env"
        ));
    }

    #[test]
    fn unreadable_or_wrong_pem_is_a_file_error() {
        let cases = [
            ("RS256", "/nonexistent/entitygate/key.pub".to_owned()),
            ("RS256", cert("README.md")),
            ("RS256", cert("jwt-ec.pub")),
            ("ES256", cert("jwt-rsa.pub")),
            ("EdDSA", cert("jwt-ec.pub")),
            ("ES384", cert("jwt-ec.pub")), // a P-256 key cannot verify ES384
            ("RS256", cert("jwt-rsa.key")), // a private key
            ("ES256", cert("jwt-ec.key")),
        ];
        for (i, (alg, path)) in cases.iter().enumerate() {
            let cfg = key_cfg(&format!(
                "[[keys]]\nalg = \"RS256\"\npublic_key_file = \"{}\"\n[[keys]]\nalg = \"{alg}\"\npublic_key_file = \"{path}\"",
                cert("jwt-rsa.pub")
            ));
            let err = load_static(&cfg, &env(&[])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::File { key, .. } if key == "auth.keys[1].public_key_file"),
                "case {i}: {err}"
            );
        }
    }

    #[test]
    fn short_ed25519_pem_is_a_file_error_not_a_panic() {
        use base64::Engine as _;
        // SubjectPublicKeyInfo { id-Ed25519, BIT STRING of 12 bytes }.
        let mut der = vec![
            0x30, 0x16, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x03, 0x0D, 0x00,
        ];
        der.extend([7u8; 12]);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        let path =
            std::env::temp_dir().join(format!("entitygate-short-ed-{}.pub", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        let cfg = key_cfg(&format!(
            "[[keys]]\nalg = \"EdDSA\"\npublic_key_file = \"{}\"",
            path.display()
        ));
        let err = load_static(&cfg, &env(&[])).unwrap_err();
        std::fs::remove_file(&path).ok();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
    }

    #[test]
    fn bad_kid_in_config_is_invalid() {
        for kid in [String::new(), "k".repeat(MAX_KID_LEN + 1)] {
            let cfg = key_cfg(&format!(
                "[[keys]]\nalg = \"HS256\"\nsecret_env = \"S\"\nkid = \"{kid}\""
            ));
            assert!(matches!(
                load_static(&cfg, &env(&[("S", HMAC_SECRET)])).unwrap_err(),
                ConfigError::Invalid { key, .. } if key == "auth.keys[0].kid"
            ));
        }
    }

    fn jwk(v: serde_json::Value) -> Jwk {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn jwk_alg_comes_from_the_key_then_config_then_family() {
        let mut rsa = rsa_jwk(Some("a"), None);
        assert_eq!(
            from_jwk(&jwk(rsa.clone()), &[]).unwrap().alg,
            Algorithm::RS256
        );
        assert_eq!(
            from_jwk(&jwk(rsa.clone()), &[Algorithm::ES256, Algorithm::PS384])
                .unwrap()
                .alg,
            Algorithm::PS384
        );
        // Configured list that does not fit: the key is not used.
        assert!(from_jwk(&jwk(rsa.clone()), &[Algorithm::ES256]).is_err());
        rsa["alg"] = "RS512".into();
        assert_eq!(
            from_jwk(&jwk(rsa.clone()), &[Algorithm::PS256])
                .unwrap()
                .alg,
            Algorithm::RS512
        );
        assert_eq!(
            from_jwk(&jwk(ec_jwk(Some("e"), None)), &[]).unwrap().alg,
            Algorithm::ES256
        );
        assert_eq!(
            from_jwk(&jwk(ed_jwk(Some("d"), None)), &[]).unwrap().alg,
            Algorithm::EdDSA
        );
    }

    #[test]
    fn jwk_alg_must_fit_the_key_type() {
        for (mut v, alg) in [
            (rsa_jwk(Some("a"), None), "ES256"),
            (rsa_jwk(Some("a"), None), "HS256"),
            (rsa_jwk(Some("a"), None), "RSA-OAEP"),
            (rsa_jwk(Some("a"), None), "XYZ"),
            (ec_jwk(Some("e"), None), "ES384"),
            (ec_jwk(Some("e"), None), "RS256"),
            (ed_jwk(Some("d"), None), "ES256"),
        ] {
            v["alg"] = alg.into();
            assert!(from_jwk(&jwk(v), &[]).is_err(), "{alg}");
        }
    }

    #[test]
    fn oct_and_encryption_keys_are_ignored() {
        let oct = jwk(
            serde_json::json!({"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256", "kid": "o"}),
        );
        assert!(from_jwk(&oct, &[Algorithm::HS256]).is_err());
        let mut enc = rsa_jwk(Some("a"), None);
        enc["use"] = "enc".into();
        assert!(from_jwk(&jwk(enc), &[]).is_err());
        let mut ops = rsa_jwk(Some("a"), None);
        ops["key_ops"] = serde_json::json!(["encrypt"]);
        assert!(from_jwk(&jwk(ops), &[]).is_err());
        let mut sig = rsa_jwk(Some("a"), None);
        sig["use"] = "sig".into();
        sig["key_ops"] = serde_json::json!(["verify"]);
        assert!(from_jwk(&jwk(sig), &[]).is_ok());
    }

    #[test]
    fn weak_or_broken_jwks_material_is_skipped() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut short = rsa_jwk(Some("a"), None);
        short["n"] = b64.encode([0xC5u8; 128]).into(); // 1024 bits
        assert!(from_jwk(&jwk(short), &[]).is_err());
        let mut even_e = rsa_jwk(Some("a"), None);
        even_e["e"] = "AAEAAA".into(); // 65536
        assert!(from_jwk(&jwk(even_e), &[]).is_err());
        let mut bad_ec = ec_jwk(Some("e"), None);
        bad_ec["x"] = b64.encode([1u8; 32]).into(); // not on the curve
        assert!(from_jwk(&jwk(bad_ec), &[]).is_err());
        let mut bad_ed = ed_jwk(Some("d"), None);
        for len in [0, 12, 31, 33, 64] {
            bad_ed["x"] = b64.encode(vec![1u8; len]).into();
            assert!(from_jwk(&jwk(bad_ed.clone()), &[]).is_err(), "{len}");
        }
        let mut long_kid = rsa_jwk(None, None);
        long_kid["kid"] = "k".repeat(MAX_KID_LEN + 1).into();
        assert!(from_jwk(&jwk(long_kid), &[]).is_err());
    }

    #[test]
    fn fingerprint_tracks_material_not_order() {
        let a = jwk(rsa_jwk(Some("a"), None));
        let e = jwk(ec_jwk(Some("e"), None));
        let s1 = jwks_set(&[a.clone(), e.clone()], &[]);
        let s3 = jwks_set(std::slice::from_ref(&a), &[]);
        let s2 = jwks_set(&[e, a], &[]);
        assert_eq!(s1.fingerprint(), s2.fingerprint());
        assert_ne!(s1.fingerprint(), s3.fingerprint());
        let renamed = jwk(rsa_jwk(Some("b"), None));
        assert_ne!(s3.fingerprint(), jwks_set(&[renamed], &[]).fingerprint());
    }
}
