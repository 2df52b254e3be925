#![allow(clippy::unwrap_used)]

use serde_json::json;

use super::*;
use crate::config::Config;

const BASE: &str = "[[auth.keys]]\nalg = \"HS256\"\nsecret_env = \"S\"\n";

fn policy(toml: &str) -> ToolPolicy {
    let c = Config::from_toml(&format!("{BASE}{toml}")).unwrap();
    ToolPolicy::compile(&c.policy).unwrap().0
}

fn compile_err(toml: &str) -> String {
    match Config::from_toml(&format!("{BASE}{toml}")) {
        Err(e) => e.to_string(),
        Ok(c) => {
            let direct = ToolPolicy::compile(&c.policy).unwrap_err().to_string();
            // `check-config` and reload refuse it too.
            assert_eq!(check(&c).unwrap_err().to_string(), direct);
            direct
        }
    }
}

fn warnings(toml: &str) -> Vec<String> {
    let c = Config::from_toml(&format!("{BASE}{toml}")).unwrap();
    ToolPolicy::compile(&c.policy).unwrap().1
}

fn claims(v: serde_json::Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => panic!("claims must be an object"),
    }
}

fn allowed(p: &ToolPolicy, c: &Map<String, Value>, toolkit: &str, tool: &str) -> bool {
    p.decide(c, toolkit, tool).allowed
}

fn when(cond: &str) -> ToolPolicy {
    policy(&format!(
        "[[policy.rules]]\nwhen = {cond}\ndeny_toolkits = [\"github\"]\n"
    ))
}

/// Whether the `when` of [`when`] holds for `c` (the rule denies github when it does).
fn holds(p: &ToolPolicy, c: serde_json::Value) -> bool {
    !allowed(p, &claims(c), "github", "GITHUB_CREATE_ISSUE")
}

#[test]
fn no_rules_allows_everything_but_code_tools() {
    let p = policy("");
    let c = claims(json!({"sub": "alice"}));
    assert!(!p.restricts(&c));
    let d = p.decide(&c, "github", "GITHUB_CREATE_ISSUE");
    assert_eq!(
        d,
        Decision {
            allowed: true,
            by: By::Default
        }
    );
    assert!(p.decide_toolkit(&c, "gmail").allowed);
    assert_eq!(p.permitted(&c).0, Permitted::AllExcept(vec![]));
    let d = p.decide(&c, "composio", "COMPOSIO_REMOTE_WORKBENCH");
    assert_eq!(
        d,
        Decision {
            allowed: false,
            by: By::CodeTool
        }
    );
    assert!(!allowed(&p, &c, "composio", "composio_remote_bash_tool"));
}

#[test]
fn equals_on_every_json_type() {
    let p = when(r#"{ claim = "plan", equals = "free" }"#);
    assert!(holds(&p, json!({"plan": "free"})));
    assert!(!holds(&p, json!({"plan": "Free"})), "strings are exact");
    assert!(!holds(&p, json!({"plan": "pro"})));
    assert!(
        !holds(&p, json!({"plan": ["free"]})),
        "an array never equals"
    );
    assert!(!holds(&p, json!({"plan": {"free": true}})));
    assert!(!holds(&p, json!({"plan": null})));
    assert!(!holds(&p, json!({})), "missing claim");

    let n = when(r#"{ claim = "tier", equals = 3 }"#);
    assert!(holds(&n, json!({"tier": 3})));
    assert!(holds(&n, json!({"tier": 3.0})), "1 equals 1.0");
    assert!(!holds(&n, json!({"tier": "3"})), "types must agree");
    assert!(!holds(&n, json!({"tier": 4})));
    assert!(!holds(&n, json!({"tier": -3})));
    let f = when(r#"{ claim = "score", equals = 0.5 }"#);
    assert!(holds(&f, json!({"score": 0.5})));
    assert!(!holds(&f, json!({"score": 1})));
    let big = when(r#"{ claim = "n", equals = 9007199254740993 }"#);
    assert!(holds(&big, json!({"n": 9_007_199_254_740_993_u64})));
    assert!(!holds(&big, json!({"n": 9_007_199_254_740_992_u64})));

    let b = when(r#"{ claim = "trial", equals = true }"#);
    assert!(holds(&b, json!({"trial": true})));
    assert!(!holds(&b, json!({"trial": false})));
    assert!(!holds(&b, json!({"trial": "true"})));
    assert!(!holds(&b, json!({"trial": 1})));
}

#[test]
fn contains_on_arrays_and_space_separated_strings() {
    let p = when(r#"{ claim = "roles", contains = "support" }"#);
    assert!(holds(&p, json!({"roles": ["admin", "support"]})));
    assert!(!holds(&p, json!({"roles": ["supporter"]})));
    assert!(!holds(&p, json!({"roles": []})));
    assert!(
        holds(&p, json!({"roles": "admin support"})),
        "space-separated"
    );
    assert!(!holds(&p, json!({"roles": "admin supporter"})));
    assert!(!holds(&p, json!({"roles": {"support": true}})));
    assert!(!holds(&p, json!({"roles": 7})));
    assert!(!holds(&p, json!({})));

    let n = when(r#"{ claim = "groups", contains = 42 }"#);
    assert!(holds(&n, json!({"groups": [1, 42]})));
    assert!(!holds(&n, json!({"groups": ["42"]})));
    assert!(!holds(&n, json!({"groups": "42"})), "words are strings");
    let b = when(r#"{ claim = "flags", contains = true }"#);
    assert!(holds(&b, json!({"flags": [false, true]})));
    assert!(!holds(&b, json!({"flags": [false]})));
}

#[test]
fn exists_and_missing_claims() {
    let p = when(r#"{ claim = "org", exists = true }"#);
    assert!(holds(&p, json!({"org": "acme"})));
    assert!(holds(&p, json!({"org": []})));
    assert!(holds(&p, json!({"org": false})));
    assert!(!holds(&p, json!({"org": null})), "null is absent");
    assert!(!holds(&p, json!({})));
    let q = when(r#"{ claim = "org", exists = false }"#);
    assert!(holds(&q, json!({})));
    assert!(holds(&q, json!({"org": null})));
    assert!(!holds(&q, json!({"org": "acme"})));
}

#[test]
fn claim_names_with_dots_and_json_pointers() {
    let p = when(r#"{ claim = "https://acme.example/plan", equals = "free" }"#);
    assert!(holds(&p, json!({"https://acme.example/plan": "free"})));
    let q = when(r#"{ claim = "/realm_access/roles", contains = "intern" }"#);
    assert!(holds(&q, json!({"realm_access": {"roles": ["intern"]}})));
    assert!(!holds(&q, json!({"realm_access": {"roles": ["admin"]}})));
    assert!(!holds(&q, json!({"realm_access": "intern"})));
    assert!(!holds(&q, json!({"roles": ["intern"]})));
    let r = when(r#"{ claim = "/orgs/0", equals = "acme" }"#);
    assert!(holds(&r, json!({"orgs": ["acme", "other"]})));
    assert!(!holds(&r, json!({"orgs": ["other", "acme"]})));
    let s = when(r#"{ claim = "/a~1b/c~0d", equals = 1 }"#);
    assert!(holds(&s, json!({"a/b": {"c~d": 1}})));
}

#[test]
fn first_deciding_rule_wins_and_deny_only_rules_fall_through() {
    let p = policy(
        r#"
[[policy.rules]]
name = "admins"
when = { claim = "roles", contains = "admin" }
allow_toolkits = ["*"]
[[policy.rules]]
name = "free plan"
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github"]
deny_tools = ["SLACK_DELETE_*"]
[[policy.rules]]
name = "interns"
when = { claim = "roles", contains = "intern" }
allow_toolkits = ["slack"]
"#,
    );
    let admin_free = claims(json!({"roles": ["admin"], "plan": "free"}));
    assert_eq!(
        p.decide(&admin_free, "github", "GITHUB_CREATE_ISSUE"),
        Decision {
            allowed: true,
            by: By::Rule(0)
        }
    );
    let free = claims(json!({"plan": "free"}));
    assert_eq!(
        p.decide(&free, "github", "GITHUB_CREATE_ISSUE").by,
        By::Rule(1)
    );
    assert!(!allowed(&p, &free, "slack", "SLACK_DELETE_A_MESSAGE"));
    // Not named by the deny-only rule: on to the default.
    assert_eq!(
        p.decide(&free, "gmail", "GMAIL_SEND_EMAIL"),
        Decision {
            allowed: true,
            by: By::Default
        }
    );
    // The deny-only rule falls through to the interns' allowlist, which denies the rest.
    let free_intern = claims(json!({"plan": "free", "roles": ["intern"]}));
    assert_eq!(
        p.decide(&free_intern, "gmail", "GMAIL_SEND_EMAIL"),
        Decision {
            allowed: false,
            by: By::Rule(2)
        }
    );
    assert!(allowed(&p, &free_intern, "slack", "SLACK_SEND_MESSAGE"));
    assert!(!allowed(
        &p,
        &free_intern,
        "slack",
        "SLACK_DELETE_A_MESSAGE"
    ));
    assert_eq!(&**p.label(By::Rule(1)), "policy.rules[1] \"free plan\"");
    let e = p.refusal(
        "GITHUB_CREATE_ISSUE",
        p.decide(&free, "github", "GITHUB_CREATE_ISSUE"),
    );
    assert_eq!(e.slug(), "tool_not_allowed");
    assert_eq!(e.code(), 9143);
    assert_eq!(e.status(), 403);
    let msg = e.to_string();
    assert!(
        msg.contains("GITHUB_CREATE_ISSUE") && msg.contains("free plan"),
        "{msg}"
    );
}

#[test]
fn deny_wins_inside_one_rule() {
    let p = policy(
        r#"
[[policy.rules]]
allow_toolkits = ["github"]
deny_tools = ["GITHUB_DELETE_*"]
"#,
    );
    let c = claims(json!({}));
    assert!(allowed(&p, &c, "github", "GITHUB_CREATE_ISSUE"));
    assert!(!allowed(&p, &c, "github", "GITHUB_DELETE_A_REPOSITORY"));
    assert!(!allowed(&p, &c, "slack", "SLACK_SEND_MESSAGE"));
    assert_eq!(&**p.label(By::Rule(0)), "policy.rules[0] (every caller)");
}

#[test]
fn default_deny() {
    let p = policy(
        r#"
[policy]
default = "deny"
[[policy.rules]]
when = { claim = "roles", contains = "support" }
allow_tools = ["SLACK_SEND_MESSAGE", "GMAIL_*"]
"#,
    );
    let support = claims(json!({"roles": "support"}));
    assert!(allowed(&p, &support, "slack", "SLACK_SEND_MESSAGE"));
    assert!(allowed(&p, &support, "gmail", "gmail_send_email"));
    assert!(!allowed(&p, &support, "slack", "SLACK_LIST_ALL_CHANNELS"));
    let other = claims(json!({"roles": ["sales"]}));
    assert_eq!(
        p.decide(&other, "slack", "SLACK_SEND_MESSAGE"),
        Decision {
            allowed: false,
            by: By::Default
        }
    );
    assert_eq!(&**p.label(By::Default), "default (deny)");
    assert!(p.restricts(&claims(json!({}))));
    // Meta tools are not themselves subject to rules.
    assert!(allowed(
        &p,
        &other,
        "composio",
        "COMPOSIO_MULTI_EXECUTE_TOOL"
    ));
    assert!(allowed(&p, &other, "composio", "COMPOSIO_SEARCH_TOOLS"));
    // Toolkit-level: support may run something in gmail and slack, nothing in github.
    assert!(p.decide_toolkit(&support, "gmail").allowed);
    assert!(p.decide_toolkit(&support, "slack").allowed);
    assert!(!p.decide_toolkit(&support, "github").allowed);
    assert!(!p.decide_toolkit(&other, "gmail").allowed);
    assert!(p.decide_toolkit(&other, "composio").allowed);
}

#[test]
fn globs() {
    let g = Glob::new("GMAIL_*");
    assert!(g.matches("GMAIL_SEND_EMAIL"));
    assert!(g.matches("gmail_send_email"));
    assert!(g.matches("GMAIL_"));
    assert!(!g.matches("GMAIL"));
    assert!(!g.matches("XGMAIL_SEND"));
    let g = Glob::new("*_DELETE_*");
    assert!(g.matches("GITHUB_DELETE_A_REPO"));
    assert!(g.matches("SLACK_CHAT_DELETE_MESSAGE"));
    assert!(!g.matches("GITHUB_DELETED"));
    let g = Glob::new("*");
    assert!(g.matches("") && g.matches("ANYTHING"));
    let g = Glob::new("A*B*C");
    assert!(g.matches("ABC") && g.matches("AxxBxxC") && g.matches("abbc"));
    assert!(!g.matches("AC") && !g.matches("ACB") && !g.matches("ABCx"));
    let g = Glob::new("AB*BA");
    assert!(g.matches("ABBA") && g.matches("ABxBA"));
    assert!(!g.matches("ABA"), "prefix and suffix must not overlap");
    let g = Glob::new("SLACK_SEND_MESSAGE");
    assert!(g.matches("slack_send_message") && !g.matches("SLACK_SEND_MESSAGES"));
    let g = Glob::new("**X");
    assert!(g.matches("X") && g.matches("YX"));

    assert!(Glob::new("GMAIL_*").touches_toolkit("gmail"));
    assert!(Glob::new("GMAIL_SEND_EMAIL").touches_toolkit("gmail"));
    assert!(!Glob::new("GMAIL_*").touches_toolkit("gma"));
    assert!(!Glob::new("GMAILX_*").touches_toolkit("gmail"));
    assert!(Glob::new("G*").touches_toolkit("github"));
    assert!(Glob::new("*").touches_toolkit("github"));
    assert!(Glob::new("COMPOSIO_SEARCH_*").touches_toolkit("composio_search"));
    assert!(!Glob::new("GITHUB").touches_toolkit("github"));
}

#[test]
fn scopes_grant_toolkits() {
    let p = policy("");
    let scoped = claims(json!({"scope": "openid composio:slack composio:gmail"}));
    assert!(p.restricts(&scoped));
    assert_eq!(
        p.decide(&scoped, "slack", "SLACK_SEND_MESSAGE"),
        Decision {
            allowed: true,
            by: By::Scope
        }
    );
    assert_eq!(
        p.decide(&scoped, "github", "GITHUB_CREATE_ISSUE"),
        Decision {
            allowed: false,
            by: By::Scope
        }
    );
    assert!(p.decide(&scoped, "slack", PROXY_EXECUTE).allowed);
    assert!(!p.decide(&scoped, "github", PROXY_EXECUTE).allowed);
    // Arrays (`scp`) and `composio:*`.
    let all = claims(json!({"scp": ["openid", "composio:*"]}));
    assert!(allowed(&p, &all, "github", "GITHUB_CREATE_ISSUE"));
    assert_eq!(p.permitted(&all).0, Permitted::AllExcept(vec![]));
    // No prefixed scope: the default decides.
    let plain = claims(json!({"scope": "openid email"}));
    assert!(!p.restricts(&plain));
    assert_eq!(
        p.decide(&plain, "github", "GITHUB_CREATE_ISSUE").by,
        By::Default
    );
    assert_eq!(
        p.permitted(&scoped).0,
        Permitted::Only {
            toolkits: vec!["slack".into(), "gmail".into()],
            tools: vec![],
            except: vec![],
        }
    );
    // Scopes never grant code-running tools.
    assert!(!allowed(&p, &all, "composio", "COMPOSIO_REMOTE_WORKBENCH"));

    // Rules come first: a free plan loses github even when the token is scoped for it.
    let q = policy(
        r#"
[[policy.rules]]
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github"]
"#,
    );
    let free = claims(json!({"plan": "free", "scope": "composio:github composio:slack"}));
    assert_eq!(
        q.decide(&free, "github", "GITHUB_CREATE_ISSUE").by,
        By::Rule(0)
    );
    assert_eq!(q.decide(&free, "slack", "SLACK_SEND_MESSAGE").by, By::Scope);
    assert_eq!(
        q.permitted(&free).0,
        Permitted::Only {
            toolkits: vec!["slack".into()],
            tools: vec![],
            except: vec!["github".into()],
        }
    );

    // Disabled with an empty prefix; another prefix.
    let off = policy("[policy]\nscope_prefix = \"\"\n");
    assert!(allowed(&off, &scoped, "github", "GITHUB_CREATE_ISSUE"));
    let other = policy("[policy]\nscope_prefix = \"tools:\"\n");
    assert!(allowed(&other, &scoped, "github", "GITHUB_CREATE_ISSUE"));
    let t = claims(json!({"scope": "tools:github"}));
    assert!(!allowed(&other, &t, "slack", "SLACK_SEND_MESSAGE"));
}

#[test]
fn code_tools_need_an_explicit_allow_tools_entry() {
    let p = policy(
        r#"
[[policy.rules]]
when = { claim = "roles", contains = "engineer" }
allow_tools = ["COMPOSIO_REMOTE_*"]
allow_toolkits = ["*"]
[[policy.rules]]
when = { claim = "roles", contains = "admin" }
allow_toolkits = ["*", "composio"]
"#,
    );
    let eng = claims(json!({"roles": ["engineer"]}));
    assert!(allowed(&p, &eng, "composio", "COMPOSIO_REMOTE_WORKBENCH"));
    assert!(allowed(&p, &eng, "composio", "COMPOSIO_REMOTE_BASH_TOOL"));
    let admin = claims(json!({"roles": ["admin"]}));
    assert_eq!(
        p.decide(&admin, "composio", "COMPOSIO_REMOTE_WORKBENCH"),
        Decision {
            allowed: false,
            by: By::Rule(1)
        }
    );
    let nobody = claims(json!({}));
    assert_eq!(
        p.decide(&nobody, "composio", "COMPOSIO_REMOTE_WORKBENCH")
            .by,
        By::CodeTool
    );
}

#[test]
fn proxy_execute_needs_the_toolkit_not_a_tool_glob() {
    let p = policy(
        r#"
[[policy.rules]]
allow_tools = ["GMAIL_*"]
allow_toolkits = ["slack"]
"#,
    );
    let c = claims(json!({}));
    assert!(!p.decide(&c, "gmail", PROXY_EXECUTE).allowed);
    assert!(p.decide(&c, "slack", PROXY_EXECUTE).allowed);
}

#[test]
fn permitted_toolkits_for_sessions() {
    let p = policy(
        r#"
[[policy.rules]]
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github"]
[[policy.rules]]
when = { claim = "roles", contains = "support" }
allow_tools = ["SLACK_SEND_MESSAGE", "GMAIL_*", "GITHUB_*"]
allow_toolkits = ["notion"]
[[policy.rules]]
when = { claim = "roles", contains = "ops" }
allow_tools = ["*_LIST_*"]
[[policy.rules]]
when = { claim = "roles", contains = "none" }
deny_toolkits = ["*"]
"#,
    );
    assert_eq!(
        p.permitted(&claims(json!({"plan": "free"}))),
        (Permitted::AllExcept(vec!["github".into()]), By::Default)
    );
    assert_eq!(
        p.permitted(&claims(json!({"plan": "free", "roles": ["support"]}))),
        (
            Permitted::Only {
                toolkits: vec!["notion".into(), "gmail".into()],
                tools: vec!["SLACK_SEND_MESSAGE".into()],
                except: vec!["github".into()],
            },
            By::Rule(1)
        )
    );
    assert_eq!(
        p.permitted(&claims(json!({"roles": ["ops"]}))).0,
        Permitted::AllExcept(vec![])
    );
    assert_eq!(
        p.permitted(&claims(json!({"roles": ["none"]}))),
        (
            Permitted::Only {
                toolkits: vec![],
                tools: vec![],
                except: vec![],
            },
            By::Rule(3)
        )
    );
}

#[test]
fn validation_errors() {
    let rule = |body: &str| compile_err(&format!("[[policy.rules]]\n{body}\n"));
    let e = rule("when = { claim = \"plan\", equals = \"free\" }");
    assert!(
        e.contains("policy.rules[0]") && e.contains("names no toolkit"),
        "{e}"
    );
    let e = rule("when = { claim = \"plan\", matches = \"free\" }\ndeny_toolkits = [\"github\"]");
    assert!(e.contains("matches"), "unknown operator: {e}");
    let e = rule("when = { claim = \"plan\" }\ndeny_toolkits = [\"github\"]");
    assert!(e.contains("exactly one operator"), "{e}");
    let e = rule(
        "when = { claim = \"plan\", equals = \"a\", exists = true }\ndeny_toolkits = [\"github\"]",
    );
    assert!(e.contains("exactly one operator"), "{e}");
    let e = rule("when = { claim = \"\", exists = true }\ndeny_toolkits = [\"github\"]");
    assert!(e.contains("policy.rules[0].when.claim"), "{e}");
    let e = rule("when = { claim = \"plan\", equals = [\"a\"] }\ndeny_toolkits = [\"github\"]");
    assert!(e.contains("policy.rules[0].when.equals"), "{e}");
    let e = rule("when = { claim = \"plan\", contains = { a = 1 } }\ndeny_toolkits = [\"x\"]");
    assert!(e.contains("policy.rules[0].when.contains"), "{e}");
    let e = rule("deny_tools = [\"GMAIL SEND\"]");
    assert!(
        e.contains("policy.rules[0].deny_tools") && e.contains("never match"),
        "{e}"
    );
    let e = rule("allow_tools = [\"GMAIL-*\"]");
    assert!(e.contains("never match"), "{e}");
    let e = rule("allow_tools = [\"\"]");
    assert!(e.contains("empty"), "{e}");
    let e = rule("allow_toolkits = [\"g*\"]");
    assert!(e.contains("not a toolkit slug"), "{e}");
    let e = rule("deny_toolkits = [\"\"]");
    assert!(e.contains("not a toolkit slug"), "{e}");
    let e = rule("when = { claim = \"/a//b\", exists = true }\ndeny_toolkits = [\"x\"]");
    assert!(e.contains("empty segment"), "{e}");
    let e = rule("deny_toolkit = [\"github\"]");
    assert!(e.contains("deny_toolkit"), "unknown key: {e}");
    let e = compile_err("[policy]\ndefault = \"maybe\"\n");
    assert!(e.contains("maybe") || e.contains("default"), "{e}");
}

#[test]
fn validation_warnings() {
    let w = warnings("[[policy.rules]]\nallow_tools = [\"gmail\"]\n");
    assert!(
        w.iter()
            .any(|w| w.contains("`gmail`") && w.contains("allow_toolkits")),
        "{w:?}"
    );
    let w = warnings(
        "[[policy.rules]]\nallow_toolkits = [\"slack\"]\n[[policy.rules]]\ndeny_toolkits = [\"github\"]\n",
    );
    assert!(
        w.iter()
            .any(|w| w.contains("policy.rules[1] is never reached")),
        "{w:?}"
    );
    let w =
        warnings("[[policy.rules]]\nallow_toolkits = [\"slack\"]\ndeny_toolkits = [\"SLACK\"]\n");
    assert!(w.iter().any(|w| w.contains("deny wins")), "{w:?}");
    let w = warnings("[policy]\ndefault = \"deny\"\nscope_prefix = \"\"\n");
    assert!(w.iter().any(|w| w.contains("refuses every")), "{w:?}");
    assert!(warnings("").is_empty());
}
