use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn pin(body: &str, subject: &str) -> Result<(Value, bool), Error> {
    let mut o = JsonObject::parse(body.as_bytes())?;
    let mismatch = o.pin_identity("user_id", subject, false)?;
    Ok((serde_json::from_slice(&o.to_vec()).unwrap(), mismatch))
}

#[test]
fn user_id_is_set_and_entity_id_removed() {
    let (v, m) = pin(
        r#"{"user_id":"bob","entity_id":"bob","arguments":{"x":1}}"#,
        "alice",
    )
    .unwrap();
    assert_eq!(v, json!({"user_id": "alice", "arguments": {"x": 1}}));
    assert!(m);
    let (v, m) = pin(r#"{"arguments":{}}"#, "alice").unwrap();
    assert_eq!(v, json!({"arguments": {}, "user_id": "alice"}));
    assert!(!m);
    let (_, m) = pin(r#"{"user_id":"alice"}"#, "alice").unwrap();
    assert!(!m, "the subject's own id is not a mismatch");
}

#[test]
fn every_spelling_of_identity_is_removed() {
    for key in [
        "userId",
        "User_Id",
        "USER-ID",
        "entityId",
        "EntityID",
        "user_uuid",
        "userUuid",
        "user_ids",
        "clientUniqueUserId",
        "user\\u005fid",
    ] {
        let body = format!(r#"{{"{key}":"mallory","arguments":{{}}}}"#);
        let (v, m) = pin(&body, "alice").unwrap();
        assert_eq!(v, json!({"arguments": {}, "user_id": "alice"}), "{key}");
        assert!(m, "{key}");
    }
}

#[test]
fn nested_lookalikes_are_left_alone() {
    // A tool's own argument called user_id (a Slack user, say) is data, not identity.
    let (v, _) = pin(r#"{"arguments":{"user_id":"U123"}}"#, "alice").unwrap();
    assert_eq!(v["arguments"]["user_id"], "U123");
    assert_eq!(v["user_id"], "alice");
}

#[test]
fn duplicate_keys_are_refused_at_any_depth() {
    for body in [
        r#"{"user_id":"a","user_id":"b"}"#,
        r#"{"user_id":"a","user\u005fid":"b"}"#,
        r#"{"arguments":{"x":1,"x":2}}"#,
        r#"{"a":[{"k":1,"k":1}]}"#,
    ] {
        assert!(
            matches!(
                JsonObject::parse(body.as_bytes()),
                Err(Error::DuplicateKey(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn malformed_bodies_are_refused() {
    let deep = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    for body in [
        "",
        "[]",
        "\"x\"",
        "1",
        "null",
        "\u{feff}{}",
        "{} {}",
        "{}x",
        "{\"a\":1,}",
        "{'a':1}",
        "{\"a\":\"\\ud800\"}",
        "{\"n\":1e400}",
    ] {
        assert!(
            matches!(
                JsonObject::parse(body.as_bytes()),
                Err(Error::BodyInvalid(_))
            ),
            "{body:.40}"
        );
    }
    // Too deep is its own refusal (413 `body_too_deep`), not a malformed body.
    assert!(matches!(
        JsonObject::parse(deep.as_bytes()),
        Err(Error::TooDeep(_))
    ));
}

#[test]
fn values_are_forwarded_byte_for_byte() {
    let body = r#"{"arguments":{"big":123456789012345678901234567890,"f":1.10,"e":1e300},"user_id":"alice"}"#;
    let mut o = JsonObject::parse(body.as_bytes()).unwrap();
    o.pin_identity("user_id", "alice", false).unwrap();
    assert_eq!(String::from_utf8(o.to_vec()).unwrap(), body);
}

#[test]
fn custom_auth_is_refused_unless_allowed() {
    for body in [
        r#"{"custom_auth_params":{"base_url":"x"}}"#,
        r#"{"customConnectionData":{}}"#,
        r#"{"authConfig":{"parameters":[]}}"#,
    ] {
        let o = JsonObject::parse(body.as_bytes()).unwrap();
        assert!(
            matches!(
                o.check_custom_auth(false),
                Err(Error::CustomAuthNotAllowed(_))
            ),
            "{body}"
        );
        assert!(o.check_custom_auth(true).is_ok());
    }
    let o = JsonObject::parse(br#"{"authConfig":null}"#).unwrap();
    assert!(
        o.check_custom_auth(false).is_ok(),
        "the old SDK always sends authConfig: null"
    );
}

#[test]
fn account_ids_in_every_spelling() {
    let o = JsonObject::parse(
        br#"{"connected_account_id":"ca_1","connectedAccountId":"ca_2","connectedAuthId":null}"#,
    )
    .unwrap();
    assert_eq!(o.account_ids().unwrap(), vec!["ca_1", "ca_2"]);
    let o = JsonObject::parse(br#"{"connected_account_id":{"id":"ca_1"}}"#).unwrap();
    assert!(o.account_ids().is_err());
}

#[test]
fn query_identity_is_replaced_by_the_subject() {
    let (q, m) = scope_query(
        Some("user_ids=bob,carol&toolkit_slugs=github&user%5Fids=x"),
        Some("user_ids"),
        "alice",
        false,
    )
    .unwrap();
    assert_eq!(q.as_deref(), Some("toolkit_slugs=github&user_ids=alice"));
    assert!(m);
    let (q, m) = scope_query(None, Some("user_ids"), "a b", false).unwrap();
    assert_eq!(q.as_deref(), Some("user_ids=a+b"));
    assert!(!m);
    assert!(matches!(
        scope_query(Some("entityId=x"), None, "a", true),
        Err(Error::QueryNotAllowed(_))
    ));
    assert!(matches!(
        scope_query(Some("_method=DELETE"), None, "a", false),
        Err(Error::MethodOverride)
    ));
    let (q, _) = scope_query(Some("userId=x&USER_ID=y&limit=5"), None, "a", false).unwrap();
    assert_eq!(q.as_deref(), Some("limit=5"));
}

#[test]
fn indexed_or_bracketed_identity_query_keys_are_refused_on_every_route() {
    for key in [
        "user_id[0]",
        "user_ids[]",
        "user_ids%5B%5D",
        "user_id%5B0%5D",
        "entityId[x]",
        "user_id.0",
        "user_id0",
        "user_ids_1",
        "USER-ID[1]",
    ] {
        for refuse_identity in [false, true] {
            for canonical in [None, Some("user_ids")] {
                let q = format!("limit=5&{key}=bob");
                assert!(
                    matches!(
                        scope_query(Some(&q), canonical, "alice", refuse_identity),
                        Err(Error::QueryNotAllowed(_))
                    ),
                    "{key} passed (refuse_identity={refuse_identity}, canonical={canonical:?})"
                );
            }
        }
    }
    // Bracketed keys that are not identities pass unchanged (the SDKs' toolkit versions).
    let (q, _) = scope_query(
        Some("toolkit_versions%5Bgithub%5D=20250909_00"),
        None,
        "alice",
        true,
    )
    .unwrap();
    assert_eq!(
        q.as_deref(),
        Some("toolkit_versions%5Bgithub%5D=20250909_00")
    );
    for key in ["_method[]", "_METHOD", "%5Fmethod"] {
        assert!(matches!(
            scope_query(Some(&format!("{key}=DELETE")), None, "a", false),
            Err(Error::MethodOverride)
        ));
    }
}

#[test]
fn query_base_keys_cut_brackets_and_dots() {
    assert_eq!(query_base_key("user_ids[]"), "user_ids");
    assert_eq!(query_base_key("user_ids[0]"), "user_ids");
    assert_eq!(query_base_key("user_ids.0"), "user_ids");
    assert_eq!(query_base_key("user_ids"), "user_ids");
}

fn wide(n: usize, extra: &str) -> Vec<u8> {
    let keys: Vec<String> = (0..n).map(|i| format!("\"k{i}\":0")).collect();
    format!("{{\"a\":{{{}{extra}}}}}", keys.join(",")).into_bytes()
}

#[test]
fn shape_limits_are_enforced_at_any_depth() {
    let limits = JsonLimits {
        max_keys_per_object: 20,
        max_depth: 3,
    };
    assert!(JsonObject::parse_with(&wide(20, ""), limits).is_ok());
    assert_eq!(
        JsonObject::parse_with(&wide(21, ""), limits).unwrap_err(),
        Error::TooManyKeys(20)
    );
    assert!(JsonObject::parse_with(br#"{"a":[{"b":1}]}"#, limits).is_ok());
    assert_eq!(
        JsonObject::parse_with(br#"{"a":[{"b":[1]}]}"#, limits).unwrap_err(),
        Error::TooDeep(3)
    );
    // Past serde_json's own limit, the same refusal.
    let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
    assert!(matches!(
        JsonObject::parse(deep.as_bytes()),
        Err(Error::TooDeep(_))
    ));
}

#[test]
fn repeated_keys_are_found_in_small_and_large_objects() {
    for n in [2, SCAN_KEYS, SCAN_KEYS + 1, 500] {
        // The repeat comes first, in the middle and last, across the scan/hash boundary.
        for at in [0, n / 2, n - 1] {
            let body = wide(n, &format!(",\"k{at}\":1"));
            assert_eq!(
                JsonObject::parse(&body).unwrap_err(),
                Error::DuplicateKey(format!("k{at}")),
                "n={n} at={at}"
            );
        }
        assert!(JsonObject::parse(&wide(n, "")).is_ok());
    }
    // Escaped spellings of the same key are the same key on the hashed path too.
    let body = wide(100, r#","k\u0035":1"#);
    assert_eq!(
        JsonObject::parse(&body).unwrap_err(),
        Error::DuplicateKey("k5".into())
    );
}

fn identity_spelling() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("user_id".to_owned()),
        Just("entity_id".to_owned()),
        Just("userId".to_owned()),
        Just("entityId".to_owned()),
        Just("User_Id".to_owned()),
        Just("USER-ID".to_owned()),
        Just("user_ids".to_owned()),
        Just("user_uuid".to_owned()),
        Just("clientUniqueUserId".to_owned()),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z ]{0,8}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// For any object with identity fields inserted in any spelling and any value, the
    /// rewritten body carries the subject as its only top-level user id, and everything
    /// that is not an identity field is unchanged.
    #[test]
    fn forwarded_body_names_only_the_subject(
        base in prop::collection::btree_map("[a-zA-Z_]{1,10}", json_value(), 0..6),
        ids in prop::collection::vec((identity_spelling(), json_value()), 0..4),
        subject in "[a-zA-Z0-9:_@.-]{1,20}",
    ) {
        let mut obj = serde_json::Map::new();
        for (k, v) in &base { obj.insert(k.clone(), v.clone()); }
        for (k, v) in &ids { obj.insert(k.clone(), v.clone()); }
        let body = serde_json::to_vec(&Value::Object(obj.clone())).unwrap();
        let mut o = JsonObject::parse(&body).unwrap();
        o.pin_identity("user_id", &subject, false).unwrap();
        let out: serde_json::Map<String, Value> = serde_json::from_slice(&o.to_vec()).unwrap();
        let identity: Vec<_> = out.iter().filter(|(k, _)| is_identity_key(k)).collect();
        prop_assert_eq!(identity.len(), 1);
        prop_assert_eq!(identity[0].0.as_str(), "user_id");
        prop_assert_eq!(identity[0].1, &json!(subject));
        for (k, v) in &obj {
            if !is_identity_key(k) {
                prop_assert_eq!(out.get(k), Some(v));
            }
        }
    }

    /// Arbitrary bytes never panic the parser, and whatever parses re-serialises to JSON
    /// that parses again to the same entries.
    #[test]
    fn parser_is_total(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(o) = JsonObject::parse(&bytes) {
            let again = JsonObject::parse(&o.to_vec()).unwrap();
            prop_assert_eq!(again.to_vec(), o.to_vec());
        }
    }
}

/// Whitespace JSON allows between tokens, a different run at each position.
fn json_space() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![Just(' '), Just('\t'), Just('\n'), Just('\r')],
        0..3,
    )
    .prop_map(|v| v.into_iter().collect())
}

/// An object key as a client may write it: plain, or with a character escaped (which the
/// reader unescapes, so the key is no longer a span of the body).
fn written_key() -> impl Strategy<Value = (String, String)> {
    ("[a-z_]{1,8}", any::<bool>()).prop_map(|(k, escape)| {
        let written = if escape {
            format!("\"\\u{:04x}{}\"", u32::from(k.as_bytes()[0]), &k[1..])
        } else {
            format!("\"{k}\"")
        };
        (k, written)
    })
}

proptest! {
    /// The one-pass parse finds exactly the top-level entries a full second pass finds, raw
    /// text byte for byte, whatever the whitespace, value shapes and key escaping; bodies
    /// without escaped top-level keys are taken as spans of the body (no second pass).
    #[test]
    fn top_level_spans_match_a_full_parse(
        entries in prop::collection::btree_map(
            "[a-z_]{1,8}",
            (json_value(), any::<bool>(), json_space(), json_space(), json_space(), json_space()),
            0..6,
        ),
        escape in prop::collection::vec(written_key(), 0..2),
        lead in json_space(),
        trail in json_space(),
    ) {
        let mut text = format!("{lead}{{");
        let mut n = 0;
        let mut escaped = false;
        for (k, (v, pretty, s1, s2, s3, s4)) in &entries {
            if n > 0 { text.push(','); }
            let v = if *pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) }.unwrap();
            text.push_str(&format!("{s1}\"{k}\"{s2}:{s3}{v}{s4}"));
            n += 1;
        }
        for (k, written) in &escape {
            if entries.contains_key(k) { continue; }
            if n > 0 { text.push(','); }
            text.push_str(&format!("{written}:[1, {{\"x\" : \"y,}}\"}}]"));
            escaped |= written.contains('\\');
            n += 1;
        }
        text.push_str(&format!("}}{trail}"));

        let o = JsonObject::parse(text.as_bytes()).unwrap();
        let got: Vec<(String, String)> =
            o.iter().map(|(k, v)| (k.to_owned(), v.get().to_owned())).collect();
        let full: TopLevel = serde_json::from_str(&text).unwrap();
        let want: Vec<(String, String)> =
            full.0.iter().map(|(k, v)| (k.clone(), v.get().to_owned())).collect();
        prop_assert_eq!(&got, &want);
        let spans = o.entries.iter().all(|(_, s)| matches!(s, Slot::Span(..)));
        prop_assert_eq!(spans, !escaped);
    }
}

#[test]
fn a_body_read_whole_is_parsed_without_a_copy() {
    let body = bytes::Bytes::from(br#"{"arguments":{"a":[1,2]} , "user_id" :"x"}"#.to_vec());
    let ptr = body.as_ptr();
    let o = JsonObject::parse_owned(body, JsonLimits::default()).unwrap();
    assert_eq!(o.text.as_ptr(), ptr);
    assert_eq!(
        o.get_folded("arguments").map(Raw::get),
        Some(r#"{"a":[1,2]}"#)
    );
    assert_eq!(o.get_folded("userid").map(Raw::get), Some(r#""x""#));
    assert!(matches!(
        JsonObject::parse_owned(
            bytes::Bytes::from_static(b"{\"a\":\"\xff\"}"),
            JsonLimits::default()
        ),
        Err(Error::BodyInvalid(_))
    ));
}
