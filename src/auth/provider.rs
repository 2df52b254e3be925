//! The JWT crypto provider: jsonwebtoken's aws-lc backend, except that RSA public keys are
//! parsed once and kept.
//!
//! jsonwebtoken's aws-lc verifier hands aws-lc the key's bytes on every verification, so
//! aws-lc parses the key and sets up its Montgomery context for the modulus each time: work
//! that every token seen for the first time paid again (issue 17). Here a verifier for an
//! RSA key reuses one [`ParsedPublicKey`] per (algorithm, key bytes). The keys come from the
//! configuration and the JWKS, never from a token, and the cache is bounded all the same.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use aws_lc_rs::signature::{self, ParsedPublicKey, VerificationAlgorithm};
use jsonwebtoken::crypto::{aws_lc, CryptoProvider, JwtVerifier, KeyUtils};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// Parsed RSA keys kept at most; past it the cache starts over (keys rotate rarely).
const MAX_KEYS: usize = 64;

/// The provider, built once from aws-lc's with our verifier factory.
pub(crate) fn provider() -> &'static CryptoProvider {
    static PROVIDER: OnceLock<CryptoProvider> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        let base = &aws_lc::DEFAULT_PROVIDER;
        CryptoProvider {
            signer_factory: base.signer_factory,
            verifier_factory: new_verifier,
            key_utils: KeyUtils {
                rsa_pub_components_from_private_key: base
                    .key_utils
                    .rsa_pub_components_from_private_key,
                rsa_pub_components_from_public_key: base
                    .key_utils
                    .rsa_pub_components_from_public_key,
                ec_pub_components_from_private_key: base
                    .key_utils
                    .ec_pub_components_from_private_key,
                ed_pub_components_from_private_key: base
                    .key_utils
                    .ed_pub_components_from_private_key,
                compute_digest: base.key_utils.compute_digest,
            },
        }
    })
}

/// aws-lc's verification algorithm for an RSA JWT algorithm (as jsonwebtoken's own).
fn rsa_algorithm(alg: Algorithm) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match alg {
        Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn new_verifier(
    alg: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let parsed = match rsa_algorithm(*alg) {
        Some(params) if key.family() == AlgorithmFamily::Rsa => parsed_rsa(*alg, params, key),
        _ => None,
    };
    match parsed {
        Some(key) => Ok(Box::new(RsaVerifier { alg: *alg, key })),
        // Everything else, and a key aws-lc cannot parse (it then fails as it always did).
        None => (aws_lc::DEFAULT_PROVIDER.verifier_factory)(alg, key),
    }
}

type Cache = Mutex<Vec<(Algorithm, Vec<u8>, Arc<ParsedPublicKey>)>>;

/// The parsed form of `key` for `alg`, from the cache or parsed now.
fn parsed_rsa(
    alg: Algorithm,
    params: &'static dyn VerificationAlgorithm,
    key: &DecodingKey,
) -> Option<Arc<ParsedPublicKey>> {
    static CACHE: Cache = Mutex::new(Vec::new());
    let der = match key.kind() {
        DecodingKeyKind::SecretOrDer(der) => der.clone(),
        DecodingKeyKind::RsaModulusExponent { n, e } => rsa_public_key_der(n, e),
    };
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, _, k)) = cache.iter().find(|(a, d, _)| *a == alg && *d == der) {
        return Some(k.clone());
    }
    let parsed = Arc::new(ParsedPublicKey::new(params, &der).ok()?);
    if cache.len() >= MAX_KEYS {
        cache.clear();
    }
    cache.push((alg, der, parsed.clone()));
    Some(parsed)
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`, DER.
fn rsa_public_key_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn push_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|b| **b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }
    fn integer(out: &mut Vec<u8>, magnitude: &[u8]) {
        let skip = magnitude.iter().take_while(|b| **b == 0).count();
        let m = &magnitude[skip..];
        // A leading 1 bit would read as negative: DER puts a zero byte in front.
        let pad = m.first().is_none_or(|b| b & 0x80 != 0);
        out.push(0x02);
        push_len(out, m.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(m);
    }
    let mut body = Vec::with_capacity(n.len() + e.len() + 16);
    integer(&mut body, n);
    integer(&mut body, e);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    push_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// Verifies with a parsed key.
struct RsaVerifier {
    alg: Algorithm,
    key: Arc<ParsedPublicKey>,
}

impl ::signature::Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, msg: &[u8], sig: &Vec<u8>) -> Result<(), ::signature::Error> {
        self.key
            .verify_sig(msg, sig)
            .map_err(|_| ::signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(token: &str, key: &DecodingKey, alg: Algorithm) -> bool {
        let (message, sig) = token.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        let v = new_verifier(&alg, key).unwrap();
        ::signature::Verifier::verify(&*v, message.as_bytes(), &sig).is_ok()
    }

    #[test]
    fn cached_rsa_keys_verify_exactly_as_aws_lc_does() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/dev");
        let private = std::fs::read(dir.join("jwt-rsa.key")).unwrap();
        let public = std::fs::read(dir.join("jwt-rsa.pub")).unwrap();
        let signing = jsonwebtoken::EncodingKey::from_rsa_pem(&private).unwrap();
        let pem = DecodingKey::from_rsa_pem(&public).unwrap();
        // The same key as JWKS components (n, e): its DER is built here.
        let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&pem, Some(Algorithm::RS256)).unwrap();
        let jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) = &jwk.algorithm else {
            panic!("an RSA key");
        };
        let components = DecodingKey::from_rsa_components(&rsa.n, &rsa.e).unwrap();
        // Both forms parse here (a key aws-lc could not parse would fall back to its own
        // verifier and pass the checks below without the cache).
        for key in [&pem, &components] {
            let params = rsa_algorithm(Algorithm::RS256).unwrap();
            assert!(parsed_rsa(Algorithm::RS256, params, key).is_some());
        }
        let claims = serde_json::json!({"sub": "alice"});
        for alg in [
            Algorithm::RS256,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
        ] {
            let token =
                jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &signing).unwrap();
            for key in [&pem, &components] {
                // Twice: parsed, then from the cache.
                assert!(verify(&token, key, alg), "{alg:?}");
                assert!(verify(&token, key, alg), "{alg:?} cached");
                let (head, _) = token.rsplit_once('.').unwrap();
                let forged = format!("{head}.{}", "A".repeat(342));
                assert!(!verify(&forged, key, alg), "{alg:?} forged");
                let other = token.replacen("eyJ", "eyK", 1);
                assert!(!verify(&other, key, alg), "{alg:?} altered");
            }
        }
        // Another algorithm's key entry never answers for this one.
        let rs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::RS256),
            &claims,
            &signing,
        )
        .unwrap();
        assert!(!verify(&rs, &pem, Algorithm::PS256));
    }
}
