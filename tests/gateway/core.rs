//! The gateway core: verified identity, pinned entity, injected key, deny by default.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn forged_user_id_arrives_as_the_token_subject() {
    let h = Harness::start().await;
    for prefix in ["/api/v3.1", "/api/v3"] {
        h.sandbox.clear();
        let r = h
            .send(
                Method::POST,
                &format!("{prefix}/tools/execute/GITHUB_CREATE_ISSUE"),
                Some(&token("alice")),
                Some(json!({"user_id": "bob", "entity_id": "bob", "arguments": {"title": "hi"}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let sent = h.upstream(&format!("{prefix}/tools/execute/"));
        assert_eq!(sent.len(), 1);
        let body = sent[0].json().unwrap();
        assert_eq!(body["user_id"], "alice");
        assert!(body.get("entity_id").is_none());
        assert_eq!(body["arguments"], json!({"title": "hi"}));
        assert_only_real_key(&sent[0]);
        assert!(r.headers.contains_key("x-request-id"));
    }
    h.shutdown().await;
}

#[tokio::test]
async fn old_sdk_execute_pins_entity_id() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::POST,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(&token("alice")),
            Some(json!({"entityId": "bob", "appName": "GITHUB", "input": {"title": "t"}, "authConfig": null})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v2/actions/");
    assert_eq!(sent.len(), 1);
    let body = sent[0].json().unwrap();
    assert_eq!(body["entityId"], "alice");
    assert_only_real_key(&sent[0]);
    h.shutdown().await;
}

#[tokio::test]
async fn bearer_token_works_and_disagreeing_tokens_are_refused() {
    let h = Harness::start().await;
    let req = |auth: Option<String>, key: Option<String>| {
        let mut b = Request::post(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
            .header("content-type", "application/json");
        if let Some(a) = auth {
            b = b.header("authorization", format!("Bearer {a}"));
        }
        if let Some(k) = key {
            b = b.header("x-api-key", k);
        }
        b.body(Full::new(Bytes::from_static(b"{\"arguments\":{}}")))
            .unwrap()
    };
    let r = h.raw(req(Some(token("alice")), None)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        h.upstream("/api/v3.1/tools/execute/")[0].json().unwrap()["user_id"],
        "alice"
    );
    h.sandbox.clear();
    let r = h.raw(req(Some(token("alice")), Some(token("bob")))).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.slug(), "token_conflict");
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn authentication_failures_are_401_with_www_authenticate_and_nothing_forwarded() {
    let h = Harness::start().await;
    let expired =
        token_with(json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now() - 3600}));
    let wrong_aud =
        token_with(json!({"sub": "alice", "iss": ISSUER, "aud": "other", "exp": now() + 600}));
    let wrong_iss = token_with(
        json!({"sub": "alice", "iss": "https://evil/", "aud": AUDIENCE, "exp": now() + 600}),
    );
    let no_exp = token_with(json!({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE}));
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "token_missing"),
        (Some(expired), "token_expired"),
        (Some(wrong_aud), "token_audience_mismatch"),
        (Some(wrong_iss), "token_issuer_mismatch"),
        (Some(no_exp), "token_claim_invalid"),
        (Some(API_KEY.to_owned()), "token_malformed"),
        (
            Some("ak_some_composio_project_key".to_owned()),
            "token_malformed",
        ),
    ];
    for (tok, slug) in cases {
        let r = h
            .send(
                Method::POST,
                "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
                tok.as_deref(),
                Some(json!({})),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{slug}: {}", r.text());
        assert_eq!(r.slug(), slug);
        assert_eq!(
            r.headers["www-authenticate"],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(
            r.json()["error"]["code"].as_u64().map(|c| c > 0),
            Some(true)
        );
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_are_denied_before_upstream() {
    let h = Harness::start().await;
    let t = token("alice");
    for (m, p) in [
        (Method::POST, "/api/v3.1/auth_configs"),
        (Method::GET, "/api/v3.1/api_keys"),
        (Method::GET, "/api/v3/internal/sdk/realtime/credentials"),
        (Method::POST, "/api/v3.1/webhook_subscriptions"),
        (Method::GET, "/api/v1/logs"),
        (Method::DELETE, "/api/v3.1/tools/GITHUB_CREATE_ISSUE"),
        (Method::GET, "/api/v3.1/org/project/config"),
        (Method::GET, "/"),
    ] {
        let r = h.send(m.clone(), p, Some(&t), None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{m} {p}");
        assert_eq!(r.slug(), "route_not_allowed");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn ambiguous_paths_are_refused() {
    let h = Harness::start().await;
    let t = token("alice");
    for p in [
        "/api/v3.1//tools/execute/X",
        "/api/v3.1/tools/execute/X/",
        "/api/v3.1/./tools/execute/X",
        "/api/v3.1/tools/../api_keys",
        "/api/v3.1/tools/execute/%2e%2e",
        "/api/v3.1/tools%2Fexecute/X",
        "/api/v3.1/tools/execute/X;a=b",
    ] {
        let r = h.send(Method::POST, p, Some(&t), Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{p}: {}", r.text());
        assert_eq!(r.slug(), "path_not_canonical");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn reject_mode_refuses_a_foreign_user_id() {
    let h = Harness::with_config("[policy]\non_identity_mismatch = \"reject\"").await;
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"user_id": "bob", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.slug(), "identity_mismatch");
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"userId": "bob", "arguments": {}}),
        )
        .await;
    assert_eq!(r.slug(), "identity_mismatch");
    h.assert_no_execution();
    // The subject's own id is no mismatch.
    let r = h
        .execute(
            "alice",
            "GITHUB_CREATE_ISSUE",
            json!({"user_id": "alice", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn caller_supplied_credentials_are_refused_unless_allowed() {
    let h = Harness::start().await;
    for body in [
        json!({"arguments": {}, "custom_auth_params": {"base_url": "https://evil", "parameters": []}}),
        json!({"arguments": {}, "custom_connection_data": {"authScheme": "API_KEY", "val": {}}}),
    ] {
        let r = h.execute("alice", "GITHUB_CREATE_ISSUE", body).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.slug(), "custom_auth_not_allowed");
    }
    let r = h
        .send(
            Method::POST,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            Some(&token("alice")),
            Some(json!({"input": {}, "authConfig": {"parameters": []}})),
        )
        .await;
    assert_eq!(r.slug(), "custom_auth_not_allowed");
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_are_refused_before_upstream() {
    let h = Harness::start().await;
    let t = token("alice");
    let url = h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE");
    let cases: Vec<(&str, Option<&str>, Bytes, StatusCode, &str)> = vec![
        (
            "dup",
            Some("application/json"),
            Bytes::from_static(br#"{"user_id":"alice","user_id":"bob"}"#),
            StatusCode::BAD_REQUEST,
            "duplicate_key",
        ),
        (
            "array",
            Some("application/json"),
            Bytes::from_static(b"[]"),
            StatusCode::BAD_REQUEST,
            "body_invalid",
        ),
        (
            "trailing",
            Some("application/json"),
            Bytes::from_static(b"{} {}"),
            StatusCode::BAD_REQUEST,
            "body_invalid",
        ),
        (
            "empty",
            Some("application/json"),
            Bytes::new(),
            StatusCode::BAD_REQUEST,
            "body_invalid",
        ),
        (
            "text",
            Some("text/plain"),
            Bytes::from_static(b"{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "form",
            Some("application/x-www-form-urlencoded"),
            Bytes::from_static(b"user_id=bob"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "none",
            None,
            Bytes::from_static(b"{}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "big",
            Some("application/json"),
            Bytes::from(vec![b' '; 2 * 1024 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (name, ct, body, status, slug) in cases {
        let mut b = Request::post(&url).header("x-api-key", &t);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let r = h.raw(b.body(Full::new(body)).unwrap()).await;
        assert_eq!(r.status, status, "{name}: {}", r.text());
        assert_eq!(r.slug(), slug, "{name}");
    }
    let gz = Request::post(&url)
        .header("x-api-key", &t)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from_static(b"\x1f\x8b\x08\x00")))
        .unwrap();
    assert_eq!(h.raw(gz).await.slug(), "unsupported_content_encoding");
    h.assert_no_execution();
    h.shutdown().await;
}

#[tokio::test]
async fn identity_query_parameters_are_refused_on_execute() {
    let h = Harness::start().await;
    for q in [
        "user_id=bob",
        "entity_id=bob",
        "user%5Fid=bob",
        "userId=bob",
    ] {
        let r = h
            .send(
                Method::POST,
                &format!("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE?{q}"),
                Some(&token("alice")),
                Some(json!({"arguments": {}})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}");
        assert_eq!(r.slug(), "query_not_allowed");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn neutral_reads_pass_and_their_identity_is_pinned() {
    let h = Harness::start().await;
    let t = token("alice");
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/tools/GITHUB_CREATE_ISSUE",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["toolkit"]["slug"], "github");
    let r = h
        .send(
            Method::GET,
            "/api/v3.1/toolkits?user_id=bob&limit=5",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v3.1/toolkits");
    assert_eq!(sent[0].query_param("user_id").as_deref(), Some("alice"));
    assert_eq!(
        sent[0]
            .query_pairs()
            .iter()
            .filter(|(k, _)| k.starts_with("user"))
            .count(),
        1
    );
    assert_eq!(sent[0].query_param("limit").as_deref(), Some("5"));
    for s in h.sandbox.requests() {
        assert_only_real_key(&s);
    }
    let r = h
        .send(
            Method::GET,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    h.shutdown().await;
}

#[tokio::test]
async fn the_old_sdk_key_check_is_answered_locally() {
    let h = Harness::start().await;
    let r = h
        .send(
            Method::GET,
            "/api/v1/client/auth/client_info",
            Some(&token("alice")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["client"]["id"], "alice");
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn credentials_and_spoofed_headers_never_reach_upstream() {
    let h = Harness::start().await;
    let req = Request::post(h.url("/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE"))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .header("connection", "x-api-key, x-request-id")
        .header("cookie", "session=abc")
        .header("x-user-api-key", "uak_x")
        .header("x-org-api-key", "oak_x")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-forwarded-user", "bob")
        .header("forwarded", "for=1.2.3.4;host=evil")
        .header("x-user-id", "bob")
        .header("x-request-id", "trace-123")
        .body(Full::new(Bytes::from_static(b"{\"arguments\":{}}")))
        .unwrap();
    let r = h.raw(req).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.headers["x-request-id"], "trace-123");
    let sent = &h.upstream("/api/v3.1/tools/execute/")[0];
    assert_only_real_key(sent);
    for hdr in [
        "x-forwarded-for",
        "x-forwarded-user",
        "forwarded",
        "x-user-id",
        "connection",
    ] {
        assert!(sent.header(hdr).is_none(), "{hdr} forwarded");
    }
    assert_eq!(sent.header("x-request-id"), Some("trace-123"));
    h.shutdown().await;
}

#[tokio::test]
async fn method_override_headers_are_refused() {
    let h = Harness::start().await;
    for hdr in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ] {
        let req = Request::get(h.url("/api/v3.1/tools"))
            .header("x-api-key", token("alice"))
            .header(hdr, "DELETE")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = h.raw(req).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert_eq!(r.slug(), "method_override_not_allowed");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn the_key_never_comes_back_even_from_an_echoing_upstream() {
    let h = Harness::start().await;
    h.sandbox.set_fault(entitygate::sandbox::Fault::EchoHeaders);
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.text().contains("[REDACTED]"),
        "the echo carried the key, redacted: {}",
        r.text()
    );
    // `Harness::raw` already asserted the key is absent from headers and body.
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_are_clear_5xx() {
    use entitygate::sandbox::Fault;
    let h = Harness::with_config("[connections]\ngate = false").await;
    h.sandbox.set_fault(Fault::Reset);
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.slug(), "upstream_unavailable");
    h.sandbox.set_fault(Fault::None);
    let r = h
        .send(Method::GET, "/api/v3.1/tools", Some(&token("alice")), None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "recovers when the fault ends");
    h.shutdown().await;
}

#[tokio::test]
async fn upstream_that_is_down_gives_502() {
    let sandbox = entitygate::sandbox::Sandbox::with_demo_data(API_KEY);
    // A port nothing listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config =
        entitygate::Config::from_toml(&config_toml(dead, "[connections]\ngate = false")).unwrap();
    let gw = entitygate::Gateway::builder(config)
        .env(env())
        .build()
        .await
        .unwrap();
    let running = gw.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://{}/api/v3.1/tools", running.local_addr()))
        .header("x-api-key", token("alice"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    running.shutdown().await;
    drop(sandbox);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    use entitygate::sandbox::Fault;
    let h = Harness::with_config("[connections]\ngate = false").await;
    h.sandbox
        .set_fault(Fault::Delay(std::time::Duration::from_millis(500)));
    let url = h.url("/api/v3.1/tools");
    let t = token("alice");
    let in_flight = tokio::spawn(async move {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let req = Request::get(url)
            .header("x-api-key", t)
            .body(Full::new(Bytes::new()))
            .unwrap();
        client.request(req).await.map(|r| r.status())
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let addr = h.addr;
    h.shutdown().await;
    assert_eq!(in_flight.await.unwrap().unwrap(), StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener closed after shutdown"
    );
}

#[test]
fn check_config_refuses_a_bad_config_with_exit_64() {
    let dir = std::env::temp_dir().join(format!("eg-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"EG_TEST_UNSET_SECRET_VAR\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .env_remove("EG_TEST_UNSET_SECRET_VAR")
        .env("COMPOSIO_API_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("EG_TEST_UNSET_SECRET_VAR"), "{err}");
    let typo = dir.join("typo.toml");
    std::fs::write(
        &typo,
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S\"\n[policy]\nallow_custom_atuh = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["check-config", "--config"])
        .arg(&typo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_custom_atuh"));
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"EG_TEST_SECRET\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["check-config", "--config"])
        .arg(&good)
        .env("EG_TEST_SECRET", "0123456789abcdef0123456789abcdef")
        .env("COMPOSIO_API_KEY", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `Config::validate` is structural only (the config module compiles nothing): a policy that
/// does not compile must still stop `check-config` (and so start-up) with exit 64.
#[test]
fn check_config_refuses_a_policy_that_does_not_compile() {
    let dir = std::env::temp_dir().join(format!("eg-check-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad-policy.toml");
    // Nothing listens on port 1: an audit that got past the policy would fail reaching it
    // (exit 1), not refuse the file (exit 64).
    let extra = format!(
        "[audit_job]\nstate_path = {:?}\n\
         [[policy.rules]]\nwhen = {{ claim = \"plan\", equals = \"free\" }}\n",
        dir.join("state").display().to_string()
    );
    std::fs::write(&bad, config_toml("127.0.0.1:1".parse().unwrap(), &extra)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .env("JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("COMPOSIO_API_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.rules[0]"), "{err}");
    // `entitygate audit` refuses the same file before it asks Composio anything.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_entitygate"))
        .args(["audit", "--config"])
        .arg(&bad)
        .env("JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("COMPOSIO_API_KEY", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("policy.rules[0]"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn file_upload_requests_pass_without_any_user_id() {
    let h = Harness::start().await;
    let body = json!({"toolkit_slug": "github", "tool_slug": "GITHUB_CREATE_ISSUE", "filename": "a.txt",
        "mimetype": "text/plain", "md5": "d41d8cd98f00b204e9800998ecf8427e", "user_id": "bob"});
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/files/upload/request",
            Some(&token("alice")),
            Some(body),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let sent = h.upstream("/api/v3.1/files/upload/request");
    assert_eq!(sent.len(), 1);
    let forwarded = sent[0].json().unwrap();
    assert!(
        forwarded.get("user_id").is_none(),
        "no user id upstream: {forwarded}"
    );
    assert_eq!(forwarded["tool_slug"], "GITHUB_CREATE_ISSUE");
    assert_only_real_key(&sent[0]);
    h.sandbox.clear();
    let r = h
        .send(
            Method::POST,
            "/api/v3.1/files/upload/request?user_id=bob",
            Some(&token("alice")),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.slug(), "query_not_allowed");
    h.assert_nothing_forwarded();
    h.shutdown().await;
}
