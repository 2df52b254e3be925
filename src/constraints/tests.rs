use serde_json::{json, Map, Value};

use super::*;

fn claims() -> Map<String, Value> {
    match json!({"plan": "free", "channels": ["C1", "C2"], "org": "acme"}) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn scope<'a>(claims: &'a Map<String, Value>, args: &'a Value) -> Scope<'a> {
    Scope {
        subject: "user-1",
        claims,
        tool: "GMAIL_SEND_EMAIL",
        toolkit: Some("gmail"),
        account: None,
        carrier: Carrier::Rest,
        args: Some(args),
        proxy: None,
    }
}

fn eval(src: &str, args: Value) -> Result<bool, EvalError> {
    let c = claims();
    let e = compile(src).expect("compiles");
    let r = e.eval(&scope(&c, &args).bind());
    r
}

const MAIL: &str = r#"args.recipient_email.endsWith("@acme.com")
             && args.?cc.orValue([]).all(a, a.endsWith("@acme.com"))"#;

#[test]
fn the_issue_example_holds_and_fails_as_written() {
    assert_eq!(
        eval(MAIL, json!({"recipient_email": "bob@acme.com"})),
        Ok(true)
    );
    assert_eq!(
        eval(
            MAIL,
            json!({"recipient_email": "bob@acme.com", "cc": ["c@acme.com", "d@acme.com"]})
        ),
        Ok(true)
    );
    assert_eq!(
        eval(
            MAIL,
            json!({"recipient_email": "bob@acme.com", "cc": ["c@acme.com", "eve@evil.io"]})
        ),
        Ok(false)
    );
    assert_eq!(
        eval(MAIL, json!({"recipient_email": "eve@acme.com.evil.io"})),
        Ok(false)
    );
    // `endsWith` is exact, byte for byte: an upper-case domain does not end with the
    // lower-case one (refused, the safe side); `lowerAscii()` folds it first.
    assert_eq!(
        eval(MAIL, json!({"recipient_email": "bob@ACME.com"})),
        Ok(false)
    );
    assert_eq!(
        eval(
            r#"args.recipient_email.lowerAscii().endsWith("@acme.com")"#,
            json!({"recipient_email": "bob@ACME.com"})
        ),
        Ok(true)
    );
}

#[test]
fn missing_and_mistyped_fields_are_errors_not_false_passes() {
    assert!(matches!(eval(MAIL, json!({})), Err(EvalError::Failed(_))));
    assert!(matches!(
        eval(MAIL, json!({"recipient_email": ["bob@acme.com"]})),
        Err(EvalError::Failed(_))
    ));
    assert!(matches!(
        eval(
            MAIL,
            json!({"recipient_email": "bob@acme.com", "cc": "x@acme.com"})
        ),
        Err(EvalError::Failed(_))
    ));
    assert!(matches!(
        eval("args.n + 1", json!({"n": 1})),
        Err(EvalError::NotBool(_))
    ));
}

#[test]
fn every_variable_is_bound() {
    let c = claims();
    let args = json!({"channel": "C2"});
    let proxy = json!({"method": "GET", "endpoint": "/x"});
    let mut s = scope(&c, &args);
    s.proxy = Some(&proxy);
    s.account = Some("ca_1");
    s.carrier = Carrier::Mcp;
    let vars = s.bind();
    for src in [
        r#"subject == "user-1""#,
        r#"claims.plan == "free""#,
        r#"tool == "GMAIL_SEND_EMAIL""#,
        r#"toolkit == "gmail""#,
        r#"account == "ca_1""#,
        r#"carrier == "mcp""#,
        "args.channel in claims.channels",
        r#"proxy.method == "GET""#,
        r#"has(args.channel) && !has(args.other)"#,
        r#"args.channel.matches("^C[0-9]+$")"#,
        // The README's anchored pattern.
        r#"!"eve@acme.com.evil.io".matches("^[^@]+@acme[.]com$") && "bob@acme.com".matches("^[^@]+@acme[.]com$")"#,
    ] {
        assert_eq!(compile(src).expect(src).eval(&vars), Ok(true), "{src}");
    }
    // Absent ones are null, and a call without arguments has `{}`.
    let mut s = scope(&c, &args);
    s.args = None;
    s.toolkit = None;
    let vars = s.bind();
    for src in [
        "toolkit == null",
        "account == null",
        "proxy == null",
        "size(args) == 0",
    ] {
        assert_eq!(compile(src).expect(src).eval(&vars), Ok(true), "{src}");
    }
}

#[test]
fn compile_refuses_with_a_position() {
    let e = compile("args.a ==").expect_err("syntax");
    assert_eq!(e.line, 1);
    assert!(e.column > 1, "{e}");
    let e = compile("args.a == \"x\"\n  && nope.b").expect_err("unknown variable");
    assert_eq!((e.line, e.column), (2, 6), "{e}");
    assert!(e.message.contains("unknown variable `nope`"), "{e}");
    // A macro's variable is known inside it, not outside.
    assert!(compile("args.cc.all(a, a != \"\")").is_ok());
    assert!(compile("args.cc.all(a, a != \"\") && a == 1").is_err());
    assert!(compile("args.a.replace(\"\", args.a) == \"\"")
        .expect_err("replace")
        .message
        .contains("replace"));
    assert!(compile("args.a.matches(args.b)")
        .expect_err("non-literal pattern")
        .message
        .contains("literal"));
    assert!(compile("").is_err());
    assert!(compile(&"1 + ".repeat(2000)).is_err());
    let deep = "args.a.all(x, x.all(y, y.all(z, z)))";
    assert!(compile(deep)
        .expect_err("nesting")
        .message
        .contains("nested"));
}

#[test]
fn references_say_what_is_read_and_how() {
    let e = compile(MAIL).expect("compiles");
    let paths: Vec<(String, bool)> = e
        .references()
        .iter()
        .map(|r| (r.path(), r.optional))
        .collect();
    assert_eq!(
        paths,
        [
            ("args.recipient_email".into(), false),
            ("args.cc".into(), true)
        ]
    );
    assert_eq!(e.references()[0].usage, Usage::Method("endsWith".into()));
    let e = compile("args.cc.endsWith(\"x\") && args.to.all(a, a == claims.org)").expect("ok");
    let usages: Vec<(String, Usage)> = e
        .references()
        .iter()
        .map(|r| (r.path(), r.usage.clone()))
        .collect();
    assert_eq!(
        usages,
        [
            ("args.cc".into(), Usage::Method("endsWith".into())),
            ("args.to".into(), Usage::Iterated),
            ("claims.org".into(), Usage::Read),
        ]
    );
    assert!(e.reads("claims") && !e.reads("proxy"));
}

#[test]
fn lookup_returns_the_values_read() {
    let c = claims();
    let args = json!({"recipient_email": "bob@acme.com"});
    let s = scope(&c, &args);
    let e = compile(MAIL).expect("compiles");
    let read: Vec<Option<Value>> = e.references().iter().map(|r| s.lookup(r)).collect();
    assert_eq!(read, [Some(json!("bob@acme.com")), None]);
}

#[test]
fn cost_over_the_bound_is_refused_before_evaluating() {
    let big: Vec<Value> = (0..4000).map(|i| json!(format!("a{i}@acme.com"))).collect();
    let args = json!({"cc": big});
    // One level of macro over 4000 values is well inside the bound...
    assert_eq!(
        eval("args.cc.all(a, a.endsWith(\"@acme.com\"))", args.clone()),
        Ok(true)
    );
    // ...two nested levels are not (4000² × nodes).
    assert!(matches!(
        eval("args.cc.all(a, args.cc.exists(b, a == b))", args),
        Err(EvalError::Cost { .. })
    ));
}

fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        "[a-z]{0,6}@(acme|ACME|evil)\\.(com|io)(\\.evil\\.io)?".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("recipient_email".to_owned()),
                    Just("cc".to_owned()),
                    Just("owner".to_owned()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest::proptest! {
    /// Random arguments never panic the evaluation, and whatever is evaluated was within the
    /// cost bound (over it, nothing is evaluated).
    #[test]
    fn random_arguments_never_panic_and_stay_within_the_bound(args in arb_json()) {
        let c = claims();
        let vars = scope(&c, &args).bind();
        for src in [
            MAIL,
            "args.owner == claims.org",
            "args.?cc.orValue([]).all(a, a.lowerAscii().endsWith(\"@acme.com\"))",
            "args.all(k, args[k] != null)",
            "args.cc.exists(a, args.cc.exists(b, a == b + \"x\"))",
            "size(args) < 5 || args.recipient_email.split(\"@\").size() == 2",
            "args.recipient_email.matches(\"^[^@]+@acme\\\\.com$\")",
        ] {
            let e = compile(src).expect(src);
            match e.eval(&vars) {
                Err(EvalError::Cost { estimate }) => proptest::prop_assert!(estimate > MAX_COST),
                _ => proptest::prop_assert!(e.cost(&vars) <= MAX_COST),
            }
        }
    }
}
