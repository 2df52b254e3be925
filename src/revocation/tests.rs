use super::*;

fn dead(status: u16, body: Value) -> Option<(&'static str, &'static str)> {
    dead_connection(
        StatusCode::from_u16(status).expect("status"),
        body.to_string().as_bytes(),
    )
}

#[test]
fn composio_connected_account_errors_are_dead_connections() {
    assert!(dead(
        400,
        json!({"error": {"message": "No connected account found", "code": 1803, "status": 400}})
    )
    .is_some());
    assert!(dead(403, json!({"error": {"message": "x", "code": 1803, "slug": "ActionExecute_ConnectedAccountNotFound"}})).is_some());
    assert!(dead(
        422,
        json!({"error": {"message": "x", "code": 1, "slug": "ConnectedAccount_Expired"}})
    )
    .is_some());
    assert!(dead(
        400,
        json!({"error": {"message": "x", "code": 1, "slug": "ConnectedAccountRevoked"}})
    )
    .is_some());
    // Another error is not.
    assert!(dead(
        400,
        json!({"error": {"message": "bad arguments", "code": 10400}})
    )
    .is_none());
    assert!(dead(400, json!({"error": {"message": "x", "code": 1812, "slug": "ActionExecute_ConnectedAccountEntityIdMismatch"}})).is_none());
    assert!(dead(502, json!("not json at all")).is_none());
}

fn failed(data: Value, error: &str) -> Option<(&'static str, &'static str)> {
    dead(
        200,
        json!({"data": data, "error": error, "successful": false}),
    )
}

#[test]
fn a_provider_401_status_or_a_revoked_token_code_is_a_dead_connection() {
    assert!(failed(json!({"status_code": 401}), "Unauthorized").is_some());
    assert!(failed(json!({"http_status": 401}), "").is_some());
    for code in REVOKED_CODES {
        for field in ["error", "error_code", "code"] {
            assert!(
                failed(json!({ field: code }), "").is_some(),
                "{field}: {code}"
            );
        }
    }
    assert!(failed(json!({"ok": false, "error": "TOKEN_REVOKED"}), "").is_some());
    // A 403 on one resource is a permission, not a dead connection.
    assert!(failed(
        json!({"status_code": 403, "message": "Resource not accessible by integration"}),
        ""
    )
    .is_none());
    assert!(failed(json!({"status_code": 404}), "Not Found").is_none());
    // A success is never one.
    assert!(dead(
        200,
        json!({"data": {"status_code": 401}, "successful": true})
    )
    .is_none());
}

/// Issue 25: provider messages echo the request, so a caller can write anything into
/// them. No message, error string or URL decides, whatever it says.
#[test]
fn free_text_alone_never_makes_a_dead_connection() {
    let texts = [
        "401 Client Error: Unauthorized for url: https://slack.com/api/chat.postMessage?channel=C401-unauthorized",
        "401 unauthorized",
        "Unauthorized (401): token revoked",
        "Token has been expired or revoked.",
        "invalid_grant: the token was revoked",
        "token_revoked",
        "invalid token",
    ];
    for text in texts {
        for status in [None, Some(403u64), Some(404), Some(400), Some(500)] {
            let mut data = json!({"message": text, "url": text, "detail": text});
            if let Some(s) = status {
                data["status_code"] = s.into();
            }
            assert!(failed(data.clone(), text).is_none(), "{status:?}: {text}");
            // Codes are matched whole: one inside a sentence is text.
            data["error"] = text.into();
            if !REVOKED_CODES.contains(&text) {
                assert!(failed(data, text).is_none(), "{status:?}: {text}");
            }
        }
    }
    // Nor through MCP, as structured content or as JSON text.
    let answer = json!({"data": {"message": texts[0]}, "error": texts[0], "successful": false});
    let result = json!({"content": [{"type": "text", "text": answer.to_string()}],
        "structuredContent": answer, "isError": false});
    assert_eq!(dead_in_tool_result(&result), None);
}

#[test]
fn the_byte_filter_lets_every_dead_shape_through() {
    // Spacing, case and escapes Composio (or a proxy in between) might use.
    for body in [
        r#"{"successful" : false, "data": {"status_code": 401}, "error": "x"}"#,
        "{\"successful\":\n\tfalse,\"data\":{\"status_code\":401}}",
        r#"{"error": {"code": 1803}}"#,
        r#"{"error": {"code": 1, "slug": "CONNECTEDACCOUNT_EXPIRED"}}"#,
        r#"{"error": {"code": 1, "slug": "\u0043onnectedAccountRevoked"}}"#,
        r#"{"succe\u0073sful": false, "data": {"status_code": 401}}"#,
        r#"{"successful": false, "data": {"ok": false, "error": "invalid_auth"}}"#,
    ] {
        assert!(might_be_dead(body.as_bytes()), "{body}");
        assert!(
            dead_connection(StatusCode::OK, body.as_bytes()).is_some()
                || dead_connection(StatusCode::BAD_REQUEST, body.as_bytes()).is_some(),
            "{body}"
        );
    }
    // A plain success is never parsed.
    let ok = br#"{"data":{"id":1,"draft":false},"error":null,"successful":true}"#;
    assert!(!might_be_dead(ok));
}

/// Answers shaped as Composio's: a tool result or an error object, with the values that
/// matter drawn often and noise around them.
fn arb_answer() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let text = prop_oneof![
        Just("401 Client Error: Unauthorized".to_owned()),
        Just("Token has been expired or revoked.".to_owned()),
        Just("Not Found".to_owned()),
        "[a-zA-Z0-9 ]{0,16}",
    ];
    let slug = (
        prop_oneof![
            Just("ConnectedAccount_Expired"),
            Just("ActionExecute_ConnectedAccountNotFound"),
            Just("ConnectedAccountRevoked"),
            Just("ActionExecute_ConnectedAccountEntityIdMismatch"),
            Just("Validation_Failed"),
        ],
        proptest::collection::vec(any::<bool>(), 48),
    )
        .prop_map(|(s, upper)| {
            s.chars()
                .zip(upper)
                .map(|(c, u)| {
                    if u {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect::<String>()
        });
    let status = prop_oneof![Just(401u64), Just(403), Just(404), Just(200)];
    let code = (
        prop_oneof![Just("error"), Just("error_code"), Just("code")],
        prop_oneof![
            Just("token_revoked"),
            Just("INVALID_GRANT"),
            Just("account_inactive"),
            Just("channel_not_found"),
        ],
    );
    let data = (
        prop_oneof![Just("status_code"), Just("status"), Just("http_status")],
        proptest::option::of(status),
        proptest::option::of(text.clone()),
        proptest::option::of(code),
    )
        .prop_map(|(k, st, msg, code)| {
            let mut d = serde_json::Map::new();
            if let Some(st) = st {
                d.insert(k.into(), st.into());
            }
            if let Some(m) = msg {
                d.insert("message".into(), m.into());
            }
            if let Some((k, c)) = code {
                d.insert(k.into(), c.into());
            }
            Value::Object(d)
        });
    let error = prop_oneof![
        Just(Value::Null),
        text.clone().prop_map(Value::String),
        (
            prop_oneof![Just(1803u64), Just(1), Just(10400)],
            proptest::option::of(slug)
        )
            .prop_map(|(code, slug)| json!({"code": code, "slug": slug, "message": "x"})),
    ];
    (
        proptest::option::of(any::<bool>()),
        data,
        error,
        "[a-z]{0,6}",
    )
        .prop_map(|(successful, data, error, noise)| {
            let mut m = serde_json::Map::new();
            m.insert(noise, json!([1, false, "x"]));
            m.insert("data".into(), data);
            m.insert("error".into(), error);
            if let Some(b) = successful {
                m.insert("successful".into(), b.into());
            }
            Value::Object(m)
        })
}

proptest::proptest! {
    /// The filter never hides a dead connection: whatever `dead_connection` would find in
    /// the parsed answer, the bytes let through (compact or pretty-printed).
    #[test]
    fn the_byte_filter_never_hides_a_dead_connection(
        v in arb_answer(),
        status in proptest::prop_oneof![proptest::strategy::Just(200u16), proptest::strategy::Just(400u16), proptest::strategy::Just(403u16)],
    ) {
        let status = StatusCode::from_u16(status).expect("status");
        for body in [serde_json::to_vec(&v).expect("json"), serde_json::to_vec_pretty(&v).expect("json")] {
            let found = dead_in_answer(status, &v);
            proptest::prop_assert!(found.is_none() || might_be_dead(&body));
        }
    }
}

/// A mark refuses for `HOLD`, then stops and is dropped, so that a reconnection made outside
/// the gateway is seen by a fresh lookup. (A mutation check found nothing tested the end.)
#[test]
fn a_broken_mark_refuses_for_its_hold_and_then_is_dropped() {
    let cfg = crate::config::UpstreamConfig {
        base_url: "http://127.0.0.1:9".into(),
        ..crate::config::UpstreamConfig::default()
    };
    let env: std::collections::HashMap<String, String> =
        [("COMPOSIO_API_KEY".to_owned(), "sk_test".to_owned())].into();
    let client = crate::upstream::build_client(&cfg).expect("client");
    let upstream = crate::upstream::Upstream::new(&cfg, &env, client).expect("upstream");
    let conns =
        crate::connections::Connections::new(upstream, crate::config::ConnectionsConfig::default());
    let alice: Arc<str> = Arc::from("alice");
    let github = ToolInfo::for_toolkit("github");
    let broken = Broken::default();
    broken.mark(&alice, "github", "ca_1");
    let refusal = broken
        .refusal(&conns, &alice, &github)
        .expect("refused while held");
    assert_eq!(refusal.slug(), "connection_expired");
    assert!(broken
        .refusal(&conns, &alice, &ToolInfo::for_toolkit("slack"))
        .is_none());
    // The same mark, older than the hold.
    let key = (alice.clone(), "github".to_owned());
    if let Some(mut m) = broken.marks.get_mut(&key) {
        m.at = Instant::now()
            .checked_sub(HOLD + Duration::from_secs(1))
            .expect("the clock is past the hold");
    }
    assert!(broken.refusal(&conns, &alice, &github).is_none());
    assert!(broken.marks.is_empty(), "an expired mark is dropped");
}
