//! Carrier equivalence (issue 12): for generated tools, toolkits, rules, claims, connection
//! statuses and account owners, one invocation gets one decision through every carrier that
//! can express it — direct v3, v2 legacy `input`, nested in a multi-execute on v3 and on v2,
//! through a session's `execute` (direct and nested), and as an MCP `tools/call`. A decision is what the gateway did:
//! forwarded the execution, or refused it with a slug. The invocation's arguments and a
//! constraint on them (issue 27: by tool, by toolkit, with a `when` on the claims) are part
//! of the case: every carrier reaches the same constraint check.

use entitygate::sandbox::{Account, Sandbox, Tool};
use http::Method;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::*;

const SESSION: &str = "trs_equivalence";
/// `(tool, toolkit, no_auth, known to the sandbox)`.
const TOOLS: &[(&str, &str, bool, bool)] = &[
    ("GITHUB_DO_THING", "github", false, true),
    ("SLACK_DO_THING", "slack", false, true),
    ("WEATHER_GET_TODAY", "weather", true, true),
    ("COMPOSIO_REMOTE_WORKBENCH", "composio", false, false),
    ("NOBODY_KNOWS_THIS", "nobody", false, false),
];
const STATUSES: &[Option<(&str, bool)>] = &[
    None,
    Some(("ACTIVE", false)),
    Some(("ACTIVE", true)),
    Some(("EXPIRED", false)),
    Some(("INITIATED", false)),
];

#[derive(Debug, Clone, Copy)]
enum Named {
    Nothing,
    Own,
    OtherUsers,
    OwnOfAnotherToolkit,
    Unknown,
}

#[derive(Debug, Clone)]
struct Case {
    tool: usize,
    status: usize,
    named: Named,
    default_deny: bool,
    rule: u8,
    roles: bool,
    scope: u8,
    /// 0: no constraint; 1: on the tool; 2: on its toolkit; 3: on the tool, for `eng` only.
    constraint: u8,
    /// Whether the arguments meet the constraint (`x == "ok"`).
    ok: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0..TOOLS.len(),
        0..STATUSES.len(),
        prop_oneof![
            3 => Just(Named::Nothing),
            3 => Just(Named::Own),
            1 => Just(Named::OtherUsers),
            1 => Just(Named::OwnOfAnotherToolkit),
            1 => Just(Named::Unknown),
        ],
        prop::bool::weighted(0.25),
        0u8..5,
        any::<bool>(),
        0u8..3,
        (0u8..4, any::<bool>()),
    )
        .prop_map(
            |(tool, status, named, default_deny, rule, roles, scope, (constraint, ok))| Case {
                tool,
                status,
                named,
                default_deny,
                rule,
                roles,
                scope,
                constraint,
                ok,
            },
        )
}

impl Case {
    fn tool(&self) -> (&'static str, &'static str) {
        let (t, tk, _, _) = TOOLS[self.tool];
        (t, tk)
    }

    fn policy(&self) -> String {
        let (tool, toolkit) = self.tool();
        let mut p = format!(
            "[policy]\ndefault = \"{}\"\n",
            if self.default_deny { "deny" } else { "allow" }
        );
        let when = "when = { claim = \"roles\", contains = \"eng\" }\n";
        match self.rule {
            1 => p += &format!("[[policy.rules]]\n{when}allow_toolkits = [\"{toolkit}\"]\n"),
            2 => p += &format!("[[policy.rules]]\n{when}deny_tools = [\"{tool}\"]\n"),
            3 => {
                p += &format!(
                    "[[policy.rules]]\n{when}allow_tools = [\"{}*\"]\n",
                    &tool[..4]
                )
            }
            4 => p += "[[policy.rules]]\ndeny_toolkits = [\"slack\"]\n",
            _ => {}
        }
        let require = "require = 'args.x == \"ok\"'\n";
        match self.constraint {
            1 => {
                p += &format!(
                    "[[policy.constraints]]\nname = \"c\"\ntools = [\"{tool}\"]\n{require}"
                )
            }
            // (A toolkit constraint on `composio` would apply to the multi-execute itself.)
            2 if toolkit != "composio" => {
                p += &format!(
                    "[[policy.constraints]]\nname = \"c\"\ntoolkits = [\"{toolkit}\"]\n{require}"
                )
            }
            2 | 3 => {
                p += &format!(
                    "[[policy.constraints]]\nname = \"c\"\ntools = [\"{tool}\"]\n\
                     when = 'claims.?roles.orValue([]).exists(r, r == \"eng\")'\n{require}"
                )
            }
            _ => {}
        }
        p
    }

    fn args(&self) -> Value {
        json!({"x": if self.ok { "ok" } else { "not ok" }, "n": 1})
    }

    fn token(&self) -> String {
        let mut claims = json!({"sub": "u1", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600});
        if self.roles {
            claims["roles"] = json!(["eng"]);
        }
        match self.scope {
            1 => claims["scope"] = json!(format!("openid composio:{}", self.tool().1)),
            2 => claims["scope"] = json!("composio:slack"),
            _ => {}
        }
        token_with(claims)
    }

    fn sandbox(&self) -> Sandbox {
        let sb = Sandbox::new(API_KEY);
        for (slug, toolkit, no_auth, known) in TOOLS {
            if *known {
                sb.add_tool(Tool::new(slug, toolkit, *no_auth));
            }
        }
        sb.add_tool(Tool::new("COMPOSIO_MULTI_EXECUTE_TOOL", "composio", true));
        let toolkit = self.tool().1;
        if let Some((status, disabled)) = STATUSES[self.status] {
            let mut a = Account::new("ca_u1_own", "u1", toolkit, status);
            a.is_disabled = disabled;
            sb.add_account(a);
        }
        sb.add_account(Account::new("ca_u2_other", "u2", toolkit, "ACTIVE"));
        let another = if toolkit == "github" {
            "slack"
        } else {
            "github"
        };
        sb.add_account(Account::new("ca_u1_another", "u1", another, "ACTIVE"));
        sb.add_session(SESSION, "u1");
        sb
    }

    fn account(&self) -> Option<&'static str> {
        match self.named {
            Named::Nothing => None,
            Named::Own => Some("ca_u1_own"),
            Named::OtherUsers => Some("ca_u2_other"),
            Named::OwnOfAnotherToolkit => Some("ca_u1_another"),
            Named::Unknown => Some("ca_nobody"),
        }
    }

    /// Every carrier of the invocation: `(name, path, body)`.
    fn carriers(&self) -> Vec<(&'static str, String, Value)> {
        let tool = self.tool().0;
        let acc = self.account();
        let with = |mut v: Value, key: &str| {
            if let Some(a) = acc {
                v[key] = json!(a);
            }
            v
        };
        let args = self.args();
        let item_v3 = with(
            json!({"tool_slug": tool, "arguments": args}),
            "connected_account_id",
        );
        let item_v2 = with(
            json!({"tool_slug": tool, "input": args}),
            "connectedAccountId",
        );
        let session = format!("/api/v3.1/tool_router/session/{SESSION}/execute");
        vec![
            (
                "v3 direct",
                format!("/api/v3.1/tools/execute/{tool}"),
                with(json!({"arguments": args}), "connected_account_id"),
            ),
            (
                "v2 input",
                format!("/api/v2/actions/{tool}/execute"),
                // The caller's `appName` lies: it must not matter.
                with(
                    json!({"input": args, "appName": "WEATHER"}),
                    "connectedAccountId",
                ),
            ),
            (
                "v3 multi",
                "/api/v3/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL".into(),
                json!({"arguments": {"tools": [item_v3]}}),
            ),
            (
                "v2 multi",
                "/api/v2/actions/COMPOSIO_MULTI_EXECUTE_TOOL/execute".into(),
                json!({"input": {"tools": [item_v2]}}),
            ),
            (
                "session",
                session.clone(),
                with(json!({"tool_slug": tool, "arguments": args}), "account"),
            ),
            (
                "session multi",
                session,
                json!({"tool_slug": "COMPOSIO_MULTI_EXECUTE_TOOL", "arguments": {"tools": [item_v3]}}),
            ),
        ]
    }
}

/// The same invocation as an MCP `tools/call` on the session's endpoint (the account, if any,
/// named in the arguments): forwarded, or the gateway's refusal (a tool result with
/// `isError`, or a JSON-RPC error for a transient one) as `status slug`.
async fn mcp_decision(h: &Harness, case: &Case, token: &str) -> String {
    let tool = case.tool().0;
    let mut args = case.args();
    if let Some(a) = case.account() {
        args["connected_account_id"] = json!(a);
    }
    let msg = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
        "name": tool, "arguments": args,
        "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}}});
    let req = http::Request::post(h.url(&format!("/tool_router/{SESSION}/mcp")))
        .header("x-api-key", token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            msg.to_string(),
        )))
        .unwrap();
    h.sandbox.clear();
    let r = h.raw(req).await;
    if h.sandbox.requests().iter().any(|r| r.method == "POST") {
        return "forwarded".to_owned();
    }
    let text = r.text();
    let answer: Value = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .chain(std::iter::once(text.as_str()))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|v| v["id"] == 7)
        .unwrap_or(Value::Null);
    let e = if answer["result"]["isError"] == true {
        &answer["result"]["structuredContent"]["error"]
    } else {
        &answer["error"]["data"]["error"]
    };
    format!("{} {}", e["status"], e["slug"].as_str().unwrap_or(""))
}

async fn decisions(case: &Case) -> Vec<(&'static str, String)> {
    let h = Harness::with(case.sandbox(), &case.policy()).await;
    let token = case.token();
    let mut out = Vec::new();
    for (name, path, body) in case.carriers() {
        h.sandbox.clear();
        let r = h.send(Method::POST, &path, Some(&token), Some(body)).await;
        // Lookups are GETs; anything POSTed is the execution itself.
        let forwarded = h.sandbox.requests().iter().any(|r| r.method == "POST");
        let decision = if forwarded {
            "forwarded".to_owned()
        } else {
            format!("{} {}", r.status.as_u16(), r.slug())
        };
        out.push((name, decision));
    }
    out.push(("mcp", mcp_decision(&h, case, &token).await));
    h.shutdown().await;
    out
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn one_invocation_one_decision_whatever_carries_it(case in case()) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let got = rt.block_on(decisions(&case));
        let (_, first) = &got[0];
        for (name, d) in &got {
            prop_assert_eq!(d, first, "{} disagrees with v3 direct for {:?}: {:?}", name, case, got);
        }
        // A few facts any correct decision has.
        let refused = first != "forwarded";
        if matches!(case.named, Named::OtherUsers | Named::Unknown | Named::OwnOfAnotherToolkit) {
            prop_assert!(refused, "a foreign or mismatched account was forwarded: {:?}", case);
        }
        if case.tool == 3 || case.tool == 4 {
            prop_assert!(refused, "{:?}", case);
        }
        let applies = match case.constraint {
            1 => true,
            2 => true,
            3 => case.roles,
            _ => false,
        };
        if applies && !case.ok {
            prop_assert!(refused, "arguments breaking a constraint were forwarded: {:?}", case);
        }
        if first.ends_with("arguments_not_allowed") {
            prop_assert!(applies && !case.ok, "{:?}", case);
        }
    }
}
