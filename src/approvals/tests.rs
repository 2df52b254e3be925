use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::clock::ManualClock;

const T0: u64 = 1_800_000_000;

fn rules(extra: &str) -> Rules {
    let text = format!(
        r#"
[[auth.keys]]
alg = "HS256"
secret_env = "S"
[[policy.approvals]]
name = "outside mail"
tools = ["GMAIL_SEND_*"]
message = "Mail needs approval."
[[policy.approvals]]
name = "payments"
toolkits = ["Stripe"]
{extra}
"#
    );
    let config = Config::from_toml(&text).expect("parses");
    config.validate().expect("valid");
    compile(&config).expect("compiles")
}

/// Compiles `config`'s approval rules with no secrets and a default client (the invocation
/// tests use it too).
pub(crate) fn compile(config: &Config) -> Result<Rules, ConfigError> {
    let env: std::collections::HashMap<String, String> = Default::default();
    let client =
        crate::client::build_client(&crate::config::UpstreamConfig::default()).expect("client");
    Rules::compile(config, &env, client)
}

fn store(clock: &Arc<ManualClock>) -> Store {
    Store::local(None, clock.clone()).expect("in-memory store")
}

fn call<'a>(subject: &'a str, args: &'a Value) -> Call<'a> {
    Call {
        subject,
        tool: "GMAIL_SEND_EMAIL",
        toolkit: Some("gmail"),
        account: Some("ca_1"),
        carrier: "rest",
        arguments: Some(args),
        trace_id: None,
    }
}

fn first_rule(r: &Rules) -> &Rule {
    r.covering("GMAIL_SEND_EMAIL", Some("gmail"))
        .next()
        .expect("a rule covers it")
}

/// Asks alice's call with `args` under the first rule: the request it leaves pending.
async fn pending(s: &Store, r: &Rules, args: &Value) -> Request {
    let Asked::Pending { request, .. } = s
        .ask(&call("alice", args), first_rule(r), r)
        .await
        .unwrap()
        .asked
    else {
        panic!("pending");
    };
    request
}

/// The same, then approved by dana: the request, now granted.
async fn granted(s: &Store, r: &Rules, args: &Value) -> Request {
    let request = pending(s, r, args).await;
    s.decide(&request.id, Verdict::Approve, "dana", "ok", &r.settings)
        .await
        .unwrap()
}

#[test]
fn the_hash_ignores_key_order_and_whitespace_only() {
    let a: Value =
        serde_json::from_str(r#"{"to":"a@x.io","cc":["b","c"],"n":{"y":1,"x":2}}"#).unwrap();
    let b: Value = serde_json::from_str(
        "{ \"n\" : { \"x\" : 2 , \"y\" : 1 } ,\n \"cc\":[\"b\",\"c\"],\t\"to\":\"a@x.io\"}",
    )
    .unwrap();
    assert_eq!(argument_hash(Some(&a)), argument_hash(Some(&b)));
    assert_eq!(
        canonical_json(&a),
        r#"{"cc":["b","c"],"n":{"x":2,"y":1},"to":"a@x.io"}"#
    );
    // Array order, values, and number forms are part of the call.
    let c = json!({"to":"a@x.io","cc":["c","b"],"n":{"y":1,"x":2}});
    assert_ne!(argument_hash(Some(&a)), argument_hash(Some(&c)));
    assert_ne!(
        argument_hash(Some(&json!({"n": 1}))),
        argument_hash(Some(&json!({"n": 1.0})))
    );
    // Absent, null and {} are the same (empty) arguments.
    assert_eq!(argument_hash(None), argument_hash(Some(&json!({}))));
    assert_eq!(argument_hash(Some(&Value::Null)), argument_hash(None));
    // Escapes written differently are the same string.
    let e1: Value = serde_json::from_str(r#"{"s":"\u00e9\/"}"#).unwrap();
    let e2: Value = serde_json::from_str(r#"{"s":"é/"}"#).unwrap();
    assert_eq!(argument_hash(Some(&e1)), argument_hash(Some(&e2)));
}

#[test]
fn the_binding_names_subject_tool_account_and_arguments() {
    let h = argument_hash(Some(&json!({"a": 1})));
    let k = binding_key("alice", "GMAIL_SEND_EMAIL", Some("ca_1"), &h);
    assert_eq!(
        k,
        binding_key("alice", "gmail_send_email", Some("ca_1"), &h)
    );
    assert_ne!(k, binding_key("bob", "GMAIL_SEND_EMAIL", Some("ca_1"), &h));
    assert_ne!(
        k,
        binding_key("alice", "GMAIL_SEND_EMAIL", Some("ca_2"), &h)
    );
    assert_ne!(k, binding_key("alice", "GMAIL_SEND_EMAIL", None, &h));
    assert_ne!(k, binding_key("alice", "GMAIL_REPLY", Some("ca_1"), &h));
    let other = argument_hash(Some(&json!({"a": 2})));
    assert_ne!(
        k,
        binding_key("alice", "GMAIL_SEND_EMAIL", Some("ca_1"), &other)
    );
}

#[test]
fn rules_match_by_glob_or_toolkit() {
    let r = rules("");
    assert_eq!(&*first_rule(&r).name, "outside mail");
    assert!(r.covering("gmail_send_draft", None).next().is_some());
    assert!(r.covering("GMAIL_LIST", Some("gmail")).next().is_none());
    let pay: Vec<_> = r.covering("STRIPE_CHARGE", Some("stripe")).collect();
    assert_eq!(pay.len(), 1);
    assert_eq!(&*pay[0].message, "This call needs an operator's approval.");
}

#[tokio::test]
async fn a_grant_is_used_once_and_only_by_the_exact_call() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = store(&clock);
    let r = rules("");
    let rule = first_rule(&r);
    let args = json!({"recipient_email": "x@evil.io", "body": "hi"});
    let first = s.ask(&call("alice", &args), rule, &r).await.unwrap();
    let Asked::Pending {
        request,
        created: true,
    } = first.asked
    else {
        panic!("a new request: {first:?}");
    };
    // The same call again: the same request, nothing new stored.
    let again = s.ask(&call("alice", &args), rule, &r).await.unwrap();
    assert!(
        matches!(&again.asked, Asked::Pending { request: p, created: false } if p.id == request.id)
    );
    let approved = s
        .decide(&request.id, Verdict::Approve, "dana", "ok", &r.settings)
        .await
        .unwrap();
    assert_eq!(approved.status, Status::Approved);
    assert_eq!(approved.grant_expires_at, Some(T0 + 900));
    // Another argument, subject or account: no grant (each a new request).
    let changed = json!({"recipient_email": "y@evil.io", "body": "hi"});
    assert!(matches!(
        s.ask(&call("alice", &changed), rule, &r)
            .await
            .unwrap()
            .asked,
        Asked::Pending { created: true, .. }
    ));
    assert!(matches!(
        s.ask(&call("bob", &args), rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
    let mut other_account = call("alice", &args);
    other_account.account = Some("ca_2");
    assert!(matches!(
        s.ask(&other_account, rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
    // The same call, keys reordered: the grant, once.
    let reordered: Value =
        serde_json::from_str(r#"{ "body":"hi", "recipient_email":"x@evil.io" }"#).unwrap();
    let used = s.ask(&call("alice", &reordered), rule, &r).await.unwrap();
    assert!(matches!(&used.asked, Asked::Granted(g) if g.id == request.id));
    // A second time: a new request.
    assert!(matches!(
        s.ask(&call("alice", &args), rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
    let stored = s.get(&request.id).await.unwrap().unwrap();
    assert_eq!(stored.status, Status::Used);
    assert_eq!(stored.used_at, Some(T0));
}

#[tokio::test]
async fn concurrent_identical_calls_use_a_grant_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = Arc::new(store(&clock));
    let r = Arc::new(rules(""));
    let args = json!({"recipient_email": "x@evil.io"});
    granted(&s, &r, &args).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (s, r, args) = (s.clone(), r.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let outcome = s.ask(&call("alice", &args), first_rule(&r), &r).await;
            matches!(outcome.unwrap().asked, Asked::Granted(_))
        }));
    }
    let mut passed = 0;
    for t in tasks {
        passed += usize::from(t.await.unwrap());
    }
    assert_eq!(passed, 1);
}

#[tokio::test]
async fn requests_and_grants_expire_by_the_clock() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = store(&clock);
    let r = rules("[approvals]\nrequest_ttl_secs = 60\ngrant_ttl_secs = 30");
    let rule = first_rule(&r);
    let args = json!({"a": 1});
    let request = pending(&s, &r, &args).await;
    clock.advance(60);
    // Too late to approve; the sweep marks it expired once.
    assert_eq!(
        s.decide(&request.id, Verdict::Approve, "dana", "", &r.settings)
            .await,
        Err(DecideError::Expired)
    );
    let swept = s.sweep(&r.settings).await.unwrap();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].status, Status::Expired);
    assert!(s.sweep(&r.settings).await.unwrap().is_empty());
    // A grant unused past its TTL: gone, and the next call asks anew (marking it expired).
    let request = granted(&s, &r, &args).await;
    clock.advance(30);
    let next = s.ask(&call("alice", &args), rule, &r).await.unwrap();
    assert!(matches!(next.asked, Asked::Pending { created: true, .. }));
    assert_eq!(next.expired.map(|e| e.id), Some(request.id));
    // Records are dropped a request TTL after they ended.
    clock.advance(10_000);
    s.sweep(&r.settings).await.unwrap();
    assert!(s
        .list()
        .await
        .unwrap()
        .iter()
        .all(|x| x.status == Status::Expired));
    clock.advance(10_000);
    s.sweep(&r.settings).await.unwrap();
    assert!(s.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_denial_answers_until_the_request_ttl_ends() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = store(&clock);
    let r = rules("[approvals]\nrequest_ttl_secs = 100");
    let rule = first_rule(&r);
    let args = json!({"a": 1});
    let request = pending(&s, &r, &args).await;
    let denied = s
        .decide(
            &request.id,
            Verdict::Deny,
            "dana",
            "not to them",
            &r.settings,
        )
        .await
        .unwrap();
    assert_eq!(denied.reason.as_deref(), Some("not to them"));
    // Deciding twice is refused.
    assert_eq!(
        s.decide(&request.id, Verdict::Approve, "erin", "", &r.settings)
            .await,
        Err(DecideError::NotPending("denied"))
    );
    assert!(matches!(
        s.ask(&call("alice", &args), rule, &r).await.unwrap().asked,
        Asked::Denied(d) if d.reason.as_deref() == Some("not to them")
    ));
    clock.advance(100);
    assert!(matches!(
        s.ask(&call("alice", &args), rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
    assert_eq!(
        s.decide("apr_nope", Verdict::Deny, "dana", "x", &r.settings)
            .await,
        Err(DecideError::NotFound)
    );
}

#[tokio::test]
async fn pending_requests_per_subject_are_bounded() {
    let clock = Arc::new(ManualClock::new(T0));
    let s = store(&clock);
    let r = rules("[approvals]\nmax_pending_per_subject = 2");
    let rule = first_rule(&r);
    for i in 0..2 {
        let args = json!({ "i": i });
        assert!(matches!(
            s.ask(&call("alice", &args), rule, &r).await.unwrap().asked,
            Asked::Pending { created: true, .. }
        ));
    }
    let third = json!({"i": 3});
    assert_eq!(
        s.ask(&call("alice", &third), rule, &r).await.unwrap().asked,
        Asked::Full
    );
    assert_eq!(s.list().await.unwrap().len(), 2, "nothing stored");
    // Another subject is not affected; a decided request frees a place.
    assert!(matches!(
        s.ask(&call("bob", &third), rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
    let first = s
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.subject == "alice")
        .unwrap();
    s.decide(&first.id, Verdict::Deny, "dana", "no", &r.settings)
        .await
        .unwrap();
    assert!(matches!(
        s.ask(&call("alice", &third), rule, &r).await.unwrap().asked,
        Asked::Pending { created: true, .. }
    ));
}

#[tokio::test]
async fn requests_survive_reopening_the_state_file() {
    let path = std::env::temp_dir().join(format!(
        "eg-approvals-{}-{}.redb",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let clock = Arc::new(ManualClock::new(T0));
    let r = rules("");
    let args = json!({"a": 1});
    let id = {
        let ks = crate::killswitch::KillSwitch::open(&path).unwrap();
        let s = Store::local(ks.database(), clock.clone()).unwrap();
        let request = granted(&s, &r, &args).await;
        request.id
    };
    let ks = crate::killswitch::KillSwitch::open(&path).unwrap();
    let s = Store::local(ks.database(), clock).unwrap();
    assert!(matches!(
        s.ask(&call("alice", &args), first_rule(&r), &r).await.unwrap().asked,
        Asked::Granted(g) if g.id == id
    ));
    drop((s, ks));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn separation_of_duties_compares_every_spelling() {
    assert!(same_person("dana@acme.com", "dana@acme.com", ""));
    assert!(same_person("dana@acme.com", "acme:dana@acme.com", "acme:"));
    assert!(same_person("Dana@Acme.com", "acme:dana@acme.com", "acme:"));
    assert!(same_person(
        "acme:dana@acme.com",
        "acme:dana@acme.com",
        "acme:"
    ));
    assert!(!same_person("dana@acme.com", "erin@acme.com", "acme:"));
    assert!(!same_person("dana", "acme:dana@acme.com", "acme:"));
}

#[test]
fn the_notification_carries_slack_text_and_no_arguments() {
    let r = rules("");
    let args = json!({"recipient_email": "secret@evil.io"});
    let req = call("alice", &args).request(first_rule(&r), &r, T0);
    let body = notify::Notifier::body(&req, "https://console/approvals#x");
    assert_eq!(body["type"], notify::EVENT_TYPE);
    assert_eq!(body["approval_id"], req.id);
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("GMAIL_SEND_EMAIL") && text.contains("https://console/approvals#x"));
    assert!(!body.to_string().contains("secret@evil.io"));
    // Nor the audit fields.
    assert!(!req.audit_fields().to_string().contains("secret@evil.io"));
}

#[test]
fn the_if_decides_with_the_variables_of_constraints_and_fails_closed() {
    let r = rules(
        r#"[[policy.approvals]]
name = "outside"
tools = ["OUTLOOK_SEND"]
if = '!args.recipient_email.endsWith("@acme.com")'
"#,
    );
    let rule = r.covering("OUTLOOK_SEND", None).next().unwrap();
    let claims = Map::new();
    let asks = |args: Value| {
        let scope = crate::constraints::Scope {
            subject: "alice",
            claims: &claims,
            tool: "OUTLOOK_SEND",
            toolkit: None,
            account: None,
            carrier: crate::constraints::Carrier::Rest,
            args: Some(&args),
            proxy: None,
        };
        let vars = scope.bind();
        rule.asks(|| &vars)
    };
    assert!(asks(json!({"recipient_email": "eve@evil.io"})));
    assert!(!asks(json!({"recipient_email": "bob@acme.com"})));
    // Missing or mistyped: the condition cannot be read, so approval is asked.
    assert!(asks(json!({})));
    assert!(asks(json!({"recipient_email": ["bob@acme.com"]})));
    // A bad expression is a configuration error naming the rule's key.
    let bad = Config::from_toml(
        r#"
[[auth.keys]]
alg = "HS256"
secret_env = "S"
[[policy.approvals]]
name = "x"
tools = ["A"]
if = 'args.to.endsWith('
"#,
    )
    .unwrap();
    let e = compile(&bad).unwrap_err().to_string();
    assert!(e.contains("policy.approvals[0].if"), "{e}");
}
