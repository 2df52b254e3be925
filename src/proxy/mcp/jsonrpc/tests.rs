use super::*;

fn ok(body: &str, version: Option<&str>) -> Posted {
    parse(body.as_bytes(), version, JsonLimits::default()).unwrap()
}

fn refused(body: &str, version: Option<&str>) -> Invalid {
    parse(body.as_bytes(), version, JsonLimits::default()).unwrap_err()
}

#[test]
fn a_tool_call_parses() {
    let p = ok(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GMAIL_SEND_EMAIL","arguments":{"to":"a"}}}"#,
        None,
    );
    assert!(!p.batch);
    assert_eq!(p.messages[0].method(), Some("tools/call"));
    assert_eq!(p.messages[0].name(), Some("GMAIL_SEND_EMAIL"));
}

#[test]
fn duplicate_keys_are_refused_at_any_depth() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","name":"B"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","arguments":{"x":1,"x":2}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","nam\u0065":"B"}}"#,
    ] {
        assert_eq!(refused(body, None).code, INVALID_REQUEST, "{body}");
    }
}

#[test]
fn case_variant_keys_are_refused_not_ignored() {
    for body in [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","Method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","Name":"B"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","Arguments":{}}}"#,
        r#"{"JSONRPC":"2.0","jsonrpc":"2.0","id":1,"method":"ping"}"#,
    ] {
        assert_eq!(refused(body, None).code, INVALID_REQUEST, "{body}");
    }
}

#[test]
fn trailing_data_cannot_smuggle_keys_into_the_duplicate_check() {
    let e = refused(
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}, "m": {"x": 1}"#,
        None,
    );
    assert_eq!(e.code, PARSE_ERROR);
}

#[test]
fn the_json_limits_of_rest_bodies_apply_to_a_message_and_a_batch() {
    let limits = JsonLimits {
        max_keys_per_object: 4,
        max_depth: 4,
    };
    let parse = |body: &str| parse(body.as_bytes(), None, limits);
    // The message object is depth 1, as a REST body's top-level object is.
    let fits = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","arguments":{"a":{}}}}"#;
    assert!(parse(fits).is_ok());
    let deep = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","arguments":{"a":{"b":{}}}}}"#;
    assert!(matches!(
        parse(deep),
        Err(Invalid {
            limit: Some(Error::TooDeep(4)),
            ..
        })
    ));
    let batch = format!("[{fits}]");
    assert!(matches!(
        parse(&batch),
        Err(Invalid {
            limit: Some(Error::TooDeep(4)),
            ..
        })
    ));
    let wide = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","arguments":{"a":1,"b":2,"c":3,"d":4,"e":5}}}"#;
    assert!(matches!(
        parse(wide),
        Err(Invalid {
            limit: Some(Error::TooManyKeys(4)),
            ..
        })
    ));
}

#[test]
fn batches_only_where_the_version_allows_them() {
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    assert!(ok(batch, None).batch);
    assert_eq!(ok(batch, Some("2025-03-26")).messages.len(), 2);
    for v in ["2025-06-18", "2025-11-25", STATELESS_VERSION] {
        assert_eq!(refused(batch, Some(v)).code, INVALID_REQUEST, "{v}");
    }
    assert_eq!(refused("[]", None).code, INVALID_REQUEST);
    let with_init = r#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}]"#;
    assert_eq!(refused(with_init, None).code, INVALID_REQUEST);
}

#[test]
fn malformed_envelopes_are_refused() {
    for body in [
        r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"A","arguments":"{}"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0","method":"tools/call","result":{}}"#,
        r#""just a string""#,
    ] {
        assert!(
            parse(body.as_bytes(), None, JsonLimits::default()).is_err(),
            "{body}"
        );
    }
}

fn h<'a>(v: Option<&'a str>, m: Option<&'a str>, n: Option<&'a str>) -> McpHeaders<'a> {
    McpHeaders {
        version: v,
        method: m,
        name: n,
    }
}

#[test]
fn headers_must_agree_with_the_body() {
    let call = ok(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GMAIL_SEND_EMAIL","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
        Some(STATELESS_VERSION),
    );
    let v = Some(STATELESS_VERSION);
    // The Base64 form of the header names the same tool.
    assert!(check_headers(
        &h(
            v,
            Some("tools/call"),
            Some("=?base64?R01BSUxfU0VORF9FTUFJTA==?=")
        ),
        &call
    )
    .is_ok());
    assert!(check_headers(&h(v, Some("tools/call"), Some("GMAIL_SEND_EMAIL")), &call).is_ok());
    for hs in [
        h(v, Some("tools/list"), Some("GMAIL_SEND_EMAIL")),
        h(v, Some("tools/call"), Some("SLACK_SEND")),
        h(v, None, Some("GMAIL_SEND_EMAIL")),
        h(v, Some("tools/call"), None),
        // Whatever the version, a header that is sent must agree.
        h(None, Some("tools/list"), None),
        h(
            Some("2025-06-18"),
            Some("tools/call"),
            Some("GMAIL_SEND_EMAIL"),
        ),
        h(v, Some("tools/call"), Some("=?base64?U0xBQ0s=?=")),
    ] {
        assert_eq!(
            check_headers(&hs, &call).unwrap_err().code,
            HEADER_MISMATCH,
            "{hs:?}"
        );
    }
    // The older stateful transport sends none of them.
    let old = ok(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"GMAIL_SEND_EMAIL"}}"#,
        None,
    );
    assert!(check_headers(&h(Some("2025-06-18"), None, None), &old).is_ok());
    assert!(check_headers(
        &h(
            Some(STATELESS_VERSION),
            Some("tools/call"),
            Some("GMAIL_SEND_EMAIL")
        ),
        &old
    )
    .is_err());
}

#[test]
fn a_refused_call_is_a_tool_result_with_the_rest_message() {
    let e = Error::ToolNotAllowed {
        tool: "X".into(),
        rule: "r".into(),
    };
    let v = refused_call(&json!(7), &e, "rid");
    assert_eq!(v["id"], 7);
    assert_eq!(v["result"]["isError"], true);
    assert_eq!(v["result"]["content"][0]["text"], e.to_string());
    assert_eq!(
        v["result"]["structuredContent"]["error"]["slug"],
        "tool_not_allowed"
    );
    let t = refused_call(&json!(7), &Error::ConnectionStatusUnavailable, "rid");
    assert_eq!(t["error"]["code"], INTERNAL_ERROR);
}
