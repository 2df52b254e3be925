//! The security team's controls (issue 15): admin authentication, the kill switch,
//! revocation on the response path, secrets from files and the rotation window.

use http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"ADMIN_TOKEN\"\n";

#[tokio::test]
async fn admin_state_changes_need_the_token() {
    let h = Harness::with_config(ADMIN).await;
    for bearer in [None, Some("wrong"), Some("test-admin-token-012345678")] {
        for (method, path) in [(Method::POST, "/reload"), (Method::POST, "/explain")] {
            let r = h.admin(method, path, bearer, Some(json!({}))).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {bearer:?}");
        }
    }
    // The right token gets through to the endpoint (this gateway has no file to reload).
    let r = h
        .admin(Method::POST, "/reload", Some(ADMIN_TOKEN), None)
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["reloaded"], false);
    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/metrics"] {
        let r = h.admin(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    h.assert_nothing_forwarded();
    h.shutdown().await;
}

#[tokio::test]
async fn without_a_token_state_changes_are_disabled_not_open() {
    let h = Harness::with_config("[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    for bearer in [None, Some(""), Some(ADMIN_TOKEN)] {
        let r = h.admin(Method::POST, "/reload", bearer, None).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{bearer:?}");
        assert!(r.text().contains("disabled"), "{}", r.text());
    }
    let r = h.admin(Method::GET, "/healthz", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    h.shutdown().await;
}
