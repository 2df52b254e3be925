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
    let clock: Clock = Arc::new(move || UNIX_EPOCH + Duration::from_secs(c.load(Ordering::SeqCst)));
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
    let t =
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &json!([1, 2]), &rsa_key()).unwrap();
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

#[tokio::test]
async fn identity_keeps_only_the_claims_decisions_read() {
    // Issue 19 (4): a cached identity must not carry the whole (attacker-sized) token.
    let auth = rs256_only("")
        .await
        .keep_claims(vec!["role".into(), "scope".into()]);
    let t = mint(
        Algorithm::RS256,
        &rsa_key(),
        None,
        &json!({"sub": "alice", "exp": now() + 600, "role": "admin", "scope": "a b",
            "junk": "x".repeat(5000), "org": "acme"}),
    );
    let id = auth.authenticate(&t).await.unwrap();
    let mut kept: Vec<&str> = id.claims.keys().map(String::as_str).collect();
    kept.sort_unstable();
    assert_eq!(kept, ["role", "scope"]);
    let (entries, bytes) = auth.cache_usage();
    assert_eq!(entries, 1);
    assert!(
        bytes < 1024,
        "a cached identity is counted small: {bytes} bytes"
    );
}

#[tokio::test]
async fn unknown_kid_waits_only_briefly_for_a_slow_identity_provider() {
    // Issue 19 (5): with the JWKS answering in 3 s, a token with an unknown kid is answered
    // after `unknown_kid_wait_ms` (503, retryable), not after the fetch; the fetch still
    // happens once in the background, and a kid it brings is then accepted.
    let srv = JwksServer::start(jwks_body(&[rsa_jwk(Some("a"), Some("RS256"))])).await;
    let cfg = auth_cfg(&format!(
        "[jwks]\nurl = \"{}\"\nmin_refetch_secs = 1\nunknown_kid_wait_ms = 200\n",
        srv.url()
    ));
    let auth = Authenticator::new(&cfg, &hmac_env(), client())
        .await
        .unwrap();
    srv.set_body(jwks_body(&[
        rsa_jwk(Some("a"), Some("RS256")),
        ec_jwk(Some("b"), Some("ES256")),
    ]));
    srv.set_delay(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let token = mint(Algorithm::ES256, &ec_key(), Some("b"), &claims("bob"));
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (auth, token) = (auth.clone(), token.clone());
        tasks.push(tokio::spawn(async move { auth.authenticate(&token).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err(), Error::KeysUnavailable);
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "requests waited {waited:?} for a 3 s IdP"
    );
    // The background fetch lands; the same token is then accepted.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(srv.hits(), 2, "one background refetch for the whole burst");
    assert_eq!(&*auth.authenticate(&token).await.unwrap().subject, "bob");
}

#[tokio::test]
async fn jti_is_text_or_an_integer_and_nothing_else() {
    let auth = rs256_only("").await;
    let exp = now() + 600;
    let tok = |jti: Value| {
        mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "alice", "exp": exp, "jti": jti}),
        )
    };
    // A number and its decimal text name the same token (a deny rule is text).
    for (jti, text) in [
        (json!(123), "123"),
        (json!("123"), "123"),
        (json!(-7), "-7"),
        (json!(u64::MAX), "18446744073709551615"),
        (json!("t-9"), "t-9"),
    ] {
        let id = auth.authenticate(&tok(jti.clone())).await.expect("valid");
        assert_eq!(id.jti().as_deref(), Some(text), "{jti}");
    }
    // No one text form: refused, never let past every jti rule.
    for jti in [
        json!(1.5),
        json!(true),
        json!(null),
        json!(["a"]),
        json!({"a": 1}),
    ] {
        assert_eq!(
            auth.authenticate(&tok(jti.clone())).await.unwrap_err(),
            Error::TokenClaimInvalid("jti"),
            "{jti}"
        );
    }
    let none = auth
        .authenticate(&mint(
            Algorithm::RS256,
            &rsa_key(),
            None,
            &json!({"sub": "alice", "exp": exp}),
        ))
        .await
        .expect("valid");
    assert_eq!(none.jti(), None);
}

/// A token over `payload` exactly as written (duplicate keys and all), signed with the test
/// HMAC key.
fn hs256_raw(payload: &str) -> String {
    let message = format!(
        "{}.{}",
        B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        B64.encode(payload)
    );
    let sig =
        jsonwebtoken::crypto::sign(message.as_bytes(), &hmac_key(), Algorithm::HS256).unwrap();
    format!("{message}.{sig}")
}

#[tokio::test]
async fn a_claim_named_twice_is_refused() {
    // Parsers disagree on which of two values wins (first, last, error): a token that names a
    // judged claim twice could mean one thing to the IdP and another here. Refused, whichever
    // copy would pass.
    let auth = all_static("issuer = \"https://idp.example.com/\"\naudience = \"entitygate\"").await;
    let exp = now() + 600;
    let good =
        format!(r#""sub":"alice","exp":{exp},"iss":"https://idp.example.com/","aud":"entitygate""#);
    assert!(auth
        .authenticate(&hs256_raw(&format!("{{{good}}}")))
        .await
        .is_ok());
    for twice in [
        r#""sub":"mallory""#.to_owned(),
        format!(r#""exp":{exp}"#),
        r#""exp":1"#.to_owned(),
        r#""nbf":1,"nbf":2"#.to_owned(),
        r#""iat":1,"iat":2"#.to_owned(),
        r#""iss":"https://idp.example.com/""#.to_owned(),
        r#""aud":"entitygate""#.to_owned(),
        r#""jti":"a","jti":"b""#.to_owned(),
    ] {
        let t = hs256_raw(&format!("{{{good},{twice}}}"));
        assert_eq!(
            auth.authenticate(&t).await.unwrap_err(),
            Error::TokenMalformed("a claim appears twice"),
            "{twice}"
        );
    }
    // Claims no decision reads may repeat (the last is kept, as before).
    let t = hs256_raw(&format!(r#"{{{good},"org":"a","org":"b"}}"#));
    assert_eq!(auth.authenticate(&t).await.unwrap().claims["org"], "b");
    // Not one JSON object: malformed.
    for payload in ["[1,2]", "{\"sub\":\"alice\"", "{} {}", "\"alice\""] {
        assert_eq!(
            auth.authenticate(&hs256_raw(payload)).await.unwrap_err(),
            Error::TokenMalformed("the claims are not a JSON object"),
            "{payload}"
        );
    }
}

#[tokio::test]
async fn the_subject_claim_is_read_once_whatever_its_name() {
    // The subject from another claim: a compound registered `sub` is still refused (as
    // jsonwebtoken's validation did), and the subject claim named twice is ambiguous.
    let auth = rs256_only("subject_claim = \"email\"").await;
    let exp = now() + 600;
    let tok = |c: Value| mint(Algorithm::RS256, &rsa_key(), None, &c);
    assert_eq!(
        &*auth
            .authenticate(&tok(json!({"email": "a@b.c", "sub": 7, "exp": exp})))
            .await
            .unwrap()
            .subject,
        "a@b.c"
    );
    assert_eq!(
        auth.authenticate(&tok(json!({"email": "a@b.c", "sub": ["x"], "exp": exp})))
            .await
            .unwrap_err(),
        Error::TokenClaimInvalid("sub")
    );
    let t = hs256_raw(&format!(r#"{{"email":"a@b.c","exp":{exp}}}"#));
    let twice = hs256_raw(&format!(
        r#"{{"email":"a@b.c","email":"x@y.z","exp":{exp}}}"#
    ));
    let hs = all_static("subject_claim = \"email\"").await;
    assert!(hs.authenticate(&t).await.is_ok());
    assert_eq!(
        hs.authenticate(&twice).await.unwrap_err(),
        Error::TokenMalformed("a claim appears twice")
    );
}
