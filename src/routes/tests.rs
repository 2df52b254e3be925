use super::*;
use proptest::prelude::*;

fn policy(method: Method, path: &str) -> Result<Policy, Error> {
    classify(&method, path).map(|m| m.policy())
}

#[test]
fn execute_routes_for_every_api_version() {
    for v in ["v3", "v3.1"] {
        let path = format!("/api/{v}/tools/execute/GITHUB_CREATE_ISSUE");
        let m = classify(&Method::POST, &path).unwrap();
        assert_eq!(m.policy(), Execute(V3));
        assert_eq!(m.param(0), Some("GITHUB_CREATE_ISSUE"));
        assert_eq!(
            policy(Method::POST, &format!("/api/{v}/tools/execute/proxy")),
            Ok(ProxyExecute(V3))
        );
    }
    assert_eq!(
        policy(
            Method::POST,
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute"
        ),
        Ok(Execute(Legacy))
    );
}

#[test]
fn unknown_routes_and_methods_are_denied() {
    for (m, p) in [
        (Method::GET, "/api/v3/tools/execute/X"),
        (Method::POST, "/api/v3.1/api_keys"),
        (Method::POST, "/api/v3.2/tools/execute/X"),
        (Method::POST, "/api/v3/auth_configs"),
        (Method::DELETE, "/api/v3/tools/X"),
        (Method::GET, "/api/v3.1/webhook_subscriptions"),
        (Method::GET, "/api/v3/internal/sdk/realtime/credentials"),
        (Method::POST, "/api/v1/logs"),
        (Method::GET, "/API/v3/tools"),
        (Method::HEAD, "/api/v3/tools"),
        (Method::OPTIONS, "/api/v3/tools"),
        (Method::POST, "/api/v3/tools/execute/X/extra"),
    ] {
        assert_eq!(policy(m.clone(), p), Err(Error::RouteNotAllowed), "{m} {p}");
    }
}

#[test]
fn every_row_is_reachable() {
    // A row shadowed by an earlier one would be dead configuration.
    for (i, route) in ROUTES.iter().enumerate() {
        let path = route
            .pattern
            .replace("{v3}", "v3.1")
            .split('/')
            .map(|s| if s.starts_with('{') { "x1" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        let m = classify(&route.method, &path).unwrap();
        assert!(
            std::ptr::eq(m.route, &ROUTES[i]),
            "row {i} {} shadowed",
            route.pattern
        );
    }
}

#[test]
fn parameters_never_capture_collection_or_action_names() {
    for (m, p) in [
        (Method::GET, "/api/v3.1/mcp/servers"),
        (Method::GET, "/api/v3/mcp/SERVERS"),
        (Method::GET, "/api/v3.1/mcp/custom"),
        (Method::GET, "/api/v3.1/tools/execute"),
        (Method::GET, "/api/v3.1/toolkits/multi"),
        (Method::GET, "/api/v3.1/triggers_types/list"),
        (Method::GET, "/api/v3.1/connected_accounts/link"),
        (Method::DELETE, "/api/v3.1/connected_accounts/complete_auth"),
        (Method::GET, "/api/v3.1/tool_router/session/generate"),
        (Method::GET, "/api/v2/actions/list"),
        (Method::GET, "/api/v1/apps/list"),
    ] {
        assert_eq!(policy(m.clone(), p), Err(Error::RouteNotAllowed), "{m} {p}");
    }
    // Literal rows still win, and ordinary ids are still captured.
    assert_eq!(policy(Method::GET, "/api/v3.1/tools/enum"), Ok(Neutral));
    assert_eq!(policy(Method::GET, "/api/v3.1/mcp/mcp_1"), Ok(Neutral));
    assert!(RESERVED.iter().all(|r| r.len() <= 32));
}

proptest! {
    /// Classification is total (never panics) and only ever matches canonical paths'
    /// segment structure: a path that matches has exactly its pattern's segment count.
    #[test]
    fn classification_is_total(path in "(/[a-zA-Z0-9._~-]{0,10}|/api|/v3|/v3.1|/tools|/execute){0,7}") {
        if let Ok(m) = classify(&Method::POST, &path) {
            prop_assert_eq!(m.route.pattern.split('/').count(), path.split('/').count());
        }
    }
}
