//! The extraction: every carrier shape into invocations, and every shape it does not
//! understand refused.

use serde_json::{json, Value};

use super::*;

fn call(tool: &str, args: Value, account: Option<&str>) -> Result<Vec<Invocation>, Error> {
    from_tool_call(tool, Some(&args), account)
}

fn tool(slug: &str, account: Option<&str>) -> Invocation {
    Invocation::tool(slug, account)
}

#[test]
fn an_ordinary_tool_is_one_invocation_and_its_arguments_are_not_read() {
    let got = call(
        "GMAIL_SEND_EMAIL",
        json!("not even an object"),
        Some("ca_1"),
    )
    .unwrap();
    assert_eq!(got, vec![tool("GMAIL_SEND_EMAIL", Some("ca_1"))]);
    assert_eq!(
        from_tool_call("GMAIL_SEND_EMAIL", None, None).unwrap(),
        vec![tool("GMAIL_SEND_EMAIL", None)]
    );
}

#[test]
fn code_tools_are_their_own_kind() {
    let got = call("composio_remote_workbench", json!({}), None).unwrap();
    assert_eq!(got[0].kind, Kind::Code);
}

#[test]
fn multi_execute_yields_itself_and_every_inner_tool_with_its_own_account() {
    let got = call(
        MULTI_EXECUTE,
        json!({"tools": [
            {"tool_slug": "COMPOSIO_REMOTE_WORKBENCH", "arguments": {"code": "x"}},
            {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {}, "connectedAccountId": "ca_g"},
            {"toolSlug": "SLACK_SEND_MESSAGE", "account": "ca_s"},
        ]}),
        None,
    )
    .unwrap();
    assert_eq!(
        got,
        vec![
            tool(MULTI_EXECUTE, None),
            Invocation {
                kind: Kind::Code,
                tool: "COMPOSIO_REMOTE_WORKBENCH".into(),
                toolkit: None,
                account: None
            },
            tool("GMAIL_SEND_EMAIL", Some("ca_g")),
            tool("SLACK_SEND_MESSAGE", Some("ca_s")),
        ]
    );
}

#[test]
fn meta_tools_recurse_to_the_depth_bound_and_no_further() {
    // Multi-execute -> proxy tool: two levels, both read.
    let got = call(
        MULTI_EXECUTE,
        json!({"tools": [{"tool_slug": PROXY_TOOL, "arguments": {"toolkit_slug": "github"}}]}),
        None,
    )
    .unwrap();
    assert_eq!(got.len(), 2);
    // Past the bound nothing is read: refused.
    let mut out = Vec::new();
    assert!(extract("GMAIL_SEND_EMAIL", None, None, MAX_DEPTH, &mut out).is_ok());
    assert!(matches!(
        extract("GMAIL_SEND_EMAIL", None, None, MAX_DEPTH + 1, &mut out),
        Err(Error::BodyInvalid(_))
    ));
    let args = json!({"tools": [{"tool_slug": "GMAIL_SEND_EMAIL"}]});
    assert!(extract(MULTI_EXECUTE, Some(&args), None, MAX_DEPTH, &mut out).is_err());
    // A multi-execute inside a multi-execute is never guessed at.
    let nested = json!({"tools": [{"tool_slug": MULTI_EXECUTE, "arguments": {"tools": []}}]});
    assert!(matches!(
        call(MULTI_EXECUTE, nested, None),
        Err(Error::ToolNotAllowed { .. })
    ));
}

#[test]
fn proxy_tool_is_a_proxy_of_the_toolkit_it_names() {
    let got = call(
        PROXY_TOOL,
        json!({"toolkit_slug": "GitHub", "endpoint": "/user", "method": "GET"}),
        None,
    )
    .unwrap();
    assert_eq!(got, vec![Invocation::proxy(Some("github"), None)]);
    let got = call(
        PROXY_TOOL,
        json!({"toolkitSlug": "github", "connected_account_id": "ca_x"}),
        None,
    )
    .unwrap();
    assert_eq!(got, vec![Invocation::proxy(Some("github"), Some("ca_x"))]);
    // Nested: the same invocation.
    let got = call(
        MULTI_EXECUTE,
        json!({"tools": [{"tool_slug": PROXY_TOOL, "arguments": {"toolkit": "github"}}]}),
        None,
    )
    .unwrap();
    assert_eq!(got[1], Invocation::proxy(Some("github"), None));
}

#[test]
fn manage_connections_yields_each_toolkit() {
    let got = call(
        MANAGE_CONNECTIONS,
        json!({"toolkits": ["Gmail", "slack"]}),
        None,
    )
    .unwrap();
    let tks: Vec<_> = got
        .iter()
        .filter(|i| i.kind == Kind::ManageConnections)
        .map(|i| i.toolkit.clone().unwrap())
        .collect();
    assert_eq!(tks, ["gmail", "slack"]);
    let got = call(MANAGE_CONNECTIONS, json!({"toolkit": "notion"}), None).unwrap();
    assert_eq!(got[1].toolkit.as_deref(), Some("notion"));
}

#[test]
fn unreadable_meta_tool_calls_are_refused() {
    for (slug, args) in [
        (MULTI_EXECUTE, None),
        (MULTI_EXECUTE, Some(json!(null))),
        (MULTI_EXECUTE, Some(json!("{\"tools\": []}"))),
        (MULTI_EXECUTE, Some(json!({"tools": {"tool_slug": "X"}}))),
        (MULTI_EXECUTE, Some(json!({"tools": ["GMAIL_SEND_EMAIL"]}))),
        (MULTI_EXECUTE, Some(json!({"tools": [{"arguments": {}}]}))),
        (
            MULTI_EXECUTE,
            Some(json!({"tools": [{"tool_slug": "A", "tool": "B"}]})),
        ),
        (
            MULTI_EXECUTE,
            Some(json!({"tools": [{"tool_slug": "A", "arguments": {}, "input": {}}]})),
        ),
        (
            MULTI_EXECUTE,
            Some(json!({"tools": [{"tool_slug": "A", "account": 7}]})),
        ),
        (
            MULTI_EXECUTE,
            Some(
                json!({"tools": [{"tool_slug": "A", "account": "ca_1", "connected_account_id": "ca_2"}]}),
            ),
        ),
        (MANAGE_CONNECTIONS, None),
        (MANAGE_CONNECTIONS, Some(json!([]))),
        (MANAGE_CONNECTIONS, Some(json!({"toolkits": [1]}))),
        (PROXY_TOOL, None),
        (PROXY_TOOL, Some(json!({"endpoint": "/user"}))),
        (
            PROXY_TOOL,
            Some(json!({"toolkit_slug": "github", "toolkit": "slack"})),
        ),
        ("COMPOSIO_SOMETHING_NEW", Some(json!({"toolkit": "gmail"}))),
        (
            "COMPOSIO_SOMETHING_NEW",
            Some(json!({"nested": {"connected_account_id": "ca_1"}})),
        ),
        ("COMPOSIO_SOMETHING_NEW", Some(json!("text"))),
    ] {
        assert!(
            matches!(
                from_tool_call(slug, args.as_ref(), None),
                Err(Error::BodyInvalid(_))
            ),
            "{slug} {args:?}"
        );
    }
}

#[test]
fn an_unknown_composio_tool_without_a_target_is_an_ordinary_tool() {
    let got = call(
        "COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH",
        json!({"query": "x"}),
        None,
    )
    .unwrap();
    assert_eq!(got, vec![tool("COMPOSIO_SEARCH_DUCK_DUCK_GO_SEARCH", None)]);
}

#[test]
fn a_proxy_tool_account_must_agree_with_the_carriers() {
    assert!(call(
        PROXY_TOOL,
        json!({"toolkit_slug": "github", "connected_account_id": "ca_a"}),
        Some("ca_b")
    )
    .is_err());
    let got = call(PROXY_TOOL, json!({"toolkit_slug": "github"}), Some("ca_b")).unwrap();
    assert_eq!(got, vec![Invocation::proxy(Some("github"), Some("ca_b"))]);
}

#[test]
fn a_body_carries_arguments_under_arguments_or_input_never_both() {
    let obj = JsonObject::parse(
        br#"{"input": {"tools": [{"tool_slug": "COMPOSIO_REMOTE_WORKBENCH"}]}, "entityId": "x"}"#,
    )
    .unwrap();
    let got = from_body(MULTI_EXECUTE, &obj, None).unwrap();
    assert_eq!(got[1].kind, Kind::Code);
    let obj = JsonObject::parse(br#"{"Arguments": {"tools": []}}"#).unwrap();
    assert_eq!(from_body(MULTI_EXECUTE, &obj, None).unwrap().len(), 1);
    let obj = JsonObject::parse(br#"{"arguments": {"tools": []}, "input": {}}"#).unwrap();
    assert!(from_body(MULTI_EXECUTE, &obj, None).is_err());
    // A `text` field instead of arguments: the meta tool's arguments are missing.
    let obj = JsonObject::parse(br#"{"text": "run the workbench"}"#).unwrap();
    assert!(from_body(MULTI_EXECUTE, &obj, None).is_err());
    assert!(from_body("GMAIL_SEND_EMAIL", &obj, None).is_ok());
}

#[test]
fn a_body_names_at_most_one_account_in_any_spelling() {
    let obj = JsonObject::parse(br#"{"connectedAccountId": "ca_1", "account": "ca_1"}"#).unwrap();
    assert_eq!(named_account(&obj).unwrap().as_deref(), Some("ca_1"));
    let obj = JsonObject::parse(br#"{"connected_account_id": "ca_1", "Account": "ca_2"}"#).unwrap();
    assert!(named_account(&obj).is_err());
    let obj = JsonObject::parse(br#"{"account": {"id": "ca_1"}}"#).unwrap();
    assert!(named_account(&obj).is_err());
}
