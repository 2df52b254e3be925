use super::*;

const MINIMAL: &str = r#"
    [[auth.keys]]
    alg = "HS256"
    secret_env = "S"
"#;

#[test]
fn minimal_config_gets_safe_defaults() {
    let c = Config::from_toml(MINIMAL).unwrap();
    c.validate().unwrap();
    assert_eq!(c.policy.on_identity_mismatch, OnIdentityMismatch::Rewrite);
    assert!(!c.policy.allow_custom_auth);
    assert!(c.connections.gate);
    assert_eq!(c.upstream.base_url, "https://backend.composio.dev");
    assert_eq!(c.policy.max_body_bytes, 1 << 20);
}

#[test]
fn limits_that_bound_resources_are_validated() {
    let c = Config::from_toml(MINIMAL).unwrap();
    assert_eq!(c.limits.max_request_head_bytes, 16 * 1024);
    assert_eq!(c.limits.keepalive_idle_secs, 75);
    // The older name still configures it.
    let old = Config::from_toml(&format!("{MINIMAL}\n[limits]\nidle_timeout_secs = 40")).unwrap();
    assert_eq!(old.limits.keepalive_idle_secs, 40);
    assert_eq!(c.auth.token_cache_bytes, 32 * 1024 * 1024);
    for (extra, key) in [
        (
            "[limits]\nmax_request_head_bytes = 4096",
            "limits.max_request_head_bytes",
        ),
        (
            "[limits]\nmax_request_headers = 0",
            "limits.max_request_headers",
        ),
        (
            "[limits]\nmax_streams_per_connection = 0",
            "limits.max_streams_per_connection",
        ),
        (
            "[limits]\nkeepalive_idle_secs = 0",
            "limits.keepalive_idle_secs",
        ),
        (
            "[limits]\nheader_read_timeout_secs = 0",
            "limits.header_read_timeout_secs",
        ),
    ] {
        let c = Config::from_toml(&format!("{MINIMAL}\n{extra}")).unwrap();
        assert!(
            matches!(c.validate(), Err(ConfigError::Invalid { key: k, .. }) if k == key),
            "{extra}"
        );
    }
}

#[test]
fn unknown_keys_are_refused() {
    let err =
        Config::from_toml(&format!("{MINIMAL}\n[policy]\nallow_custom_atuh = true")).unwrap_err();
    assert!(err.to_string().contains("allow_custom_atuh"), "{err}");
}

#[test]
fn no_keys_is_an_error() {
    let c = Config::from_toml("[auth]\nissuer = \"x\"").unwrap();
    assert!(matches!(c.validate(), Err(ConfigError::Invalid { key, .. }) if key == "auth"));
}

#[test]
fn audience_accepts_string_or_list() {
    let one = Config::from_toml(&format!("[auth]\naudience = \"a\"\n{MINIMAL}")).unwrap();
    assert_eq!(one.auth.audience, Some(OneOrMany::One("a".into())));
    let many = Config::from_toml(&format!("[auth]\naudience = [\"a\", \"b\"]\n{MINIMAL}")).unwrap();
    assert_eq!(many.auth.audience.unwrap().to_vec(), vec!["a", "b"]);
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = std::env::temp_dir().join(format!("eg-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gw.toml");
    std::fs::write(
        &file,
        format!("[tls]\ncert = \"c.pem\"\nkey = \"/abs/k.pem\"\n{MINIMAL}"),
    )
    .unwrap();
    let c = Config::load(&file).unwrap();
    let tls = c.tls.unwrap();
    assert_eq!(tls.cert, dir.join("c.pem"));
    assert_eq!(tls.key, PathBuf::from("/abs/k.pem"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plain_http_jwks_only_on_loopback() {
    let bad = Config::from_toml(&format!(
        "{MINIMAL}\n[auth.jwks]\nurl = \"http://idp.example.com/jwks\""
    ))
    .unwrap();
    assert!(bad.validate().is_err());
    let ok = Config::from_toml(&format!(
        "{MINIMAL}\n[auth.jwks]\nurl = \"http://127.0.0.1:9/jwks\""
    ))
    .unwrap();
    ok.validate().unwrap();
}
