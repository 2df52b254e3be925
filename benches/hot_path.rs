#![allow(clippy::unwrap_used)]
//! The per-request work the gateway adds, piece by piece: path check and route lookup, body
//! parse + identity pinning + re-serialisation, JWT verification (cold and cached), and the
//! connection gate on a warm cache, and the worst-case 1 MiB body (the most keys the limits
//! allow). Run with `cargo bench --bench hot_path`; results and the
//! machine are recorded in BENCHMARKS.md.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use entitygate::auth::Authenticator;
use entitygate::config::Config;
use entitygate::rewrite::{JsonLimits, JsonObject};
use entitygate::sandbox::Sandbox;
use entitygate::upstream;
use http::Method;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "bench-only-hs256-secret-0123456789abcdef0123456789";
const BODY: &[u8] = br#"{"connected_account_id":"ca_alice_github","user_id":"bob","version":"20250909_00","arguments":{"owner":"acme","repo":"app","title":"Bug: login fails","body":"Steps to reproduce: open the app, click login, nothing happens.","labels":["bug","p1"]}}"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config(extra: &str) -> Config {
    let rsa = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/dev/jwt-rsa.pub");
    Config::from_toml(&format!(
        r#"
[upstream]
base_url = "http://127.0.0.1:9"
[auth]
issuer = "https://idp.test/"
audience = "entitygate"
{extra}
[[auth.keys]]
alg = "HS256"
kid = "hs"
secret_env = "JWT_SECRET"
[[auth.keys]]
alg = "RS256"
kid = "rs"
public_key_file = "{rsa}"
"#
    ))
    .unwrap()
}

fn env() -> HashMap<String, String> {
    [
        ("JWT_SECRET".into(), SECRET.into()),
        ("COMPOSIO_API_KEY".into(), "sk_bench".into()),
    ]
    .into()
}

fn token(alg: Algorithm, sub: &str) -> String {
    let claims =
        json!({"sub": sub, "iss": "https://idp.test/", "aud": "entitygate", "exp": now() + 3600});
    let (kid, key) = match alg {
        Algorithm::HS256 => ("hs", EncodingKey::from_secret(SECRET.as_bytes())),
        _ => (
            "rs",
            EncodingKey::from_rsa_pem(
                &std::fs::read(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/certs/dev/jwt-rsa.key"
                ))
                .unwrap(),
            )
            .unwrap(),
        ),
    };
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// One criterion row over the gateway's service: a fresh request per iteration (the service
/// consumes the body), the call awaited on `rt`.
fn bench_calls<B>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: &entitygate::proxy::Proxy,
    request: impl Fn() -> http::Request<B>,
) where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use tower::Service;
    c.bench_function(name, |b| {
        b.to_async(rt).iter_batched(
            &request,
            |req| {
                let mut svc = svc.clone();
                async move { svc.call(req).await.unwrap() }
            },
            BatchSize::SmallInput,
        )
    });
}

fn routing(c: &mut Criterion) {
    c.bench_function("path_check+classify", |b| {
        b.iter(|| {
            let p = entitygate::path::check(std::hint::black_box(
                "/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            ))
            .unwrap();
            entitygate::routes::classify(&Method::POST, p)
                .unwrap()
                .policy()
        })
    });
}

fn rewrite(c: &mut Criterion) {
    c.bench_function("body_parse+pin+serialise", |b| {
        b.iter(|| {
            let mut o = JsonObject::parse(std::hint::black_box(BODY)).unwrap();
            o.check_custom_auth(false).unwrap();
            o.pin_identity("user_id", "alice", false).unwrap();
            o.account_ids().unwrap();
            o.to_vec()
        })
    });
}

/// A body of at most `size` bytes holding as many keys as `limits` allow: objects of
/// `max_keys_per_object` short distinct keys (`"a0":0`), as many as fit. Returns the body and
/// its key count.
fn worst_case_body(size: usize, keys_per_object: usize) -> (Vec<u8>, usize) {
    let mut out = String::from("{\"arguments\":{");
    let mut keys = 0;
    for o in 0.. {
        let mut obj = format!("\"o{o}\":{{");
        let mut n = 0;
        while n < keys_per_object {
            // Room for this key, the closing braces of the object and the whole body.
            if out.len() + obj.len() + 16 > size {
                break;
            }
            if n > 0 {
                obj.push(',');
            }
            obj.push('"');
            key_name(n, &mut obj);
            obj.push_str("\":0");
            n += 1;
        }
        if n == 0 {
            break;
        }
        obj.push('}');
        if o > 0 {
            out.push(',');
        }
        out.push_str(&obj);
        keys += n + 1; // and the object's own key
        if n < keys_per_object {
            break;
        }
    }
    out.push_str("}}");
    (out.into_bytes(), keys)
}

/// A short distinct key name for `i` (base 62, at most 3 characters below 238,328).
fn key_name(mut i: usize, out: &mut String) {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    loop {
        out.push(char::from(DIGITS[i % 62]));
        i /= 62;
        if i == 0 {
            break;
        }
    }
}

/// Issue 12, finding 9: the worst body the default limits admit (1 MiB, 10,000 keys per object),
/// a 1 MiB body of 131,070 keys in one object (refused at the 10,001st key), and the same body
/// parsed with the key cap lifted (the duplicate check alone: linear, not quadratic).
fn worst_case(c: &mut Criterion) {
    const MIB: usize = 1 << 20;
    let limits = JsonLimits::default();
    let (body, keys) = worst_case_body(MIB, limits.max_keys_per_object);
    assert!(body.len() <= MIB);
    eprintln!("worst-case body: {} bytes, {keys} keys", body.len());
    JsonObject::parse_with(&body, limits).unwrap();
    let mut g = c.benchmark_group("worst_case_1mib");
    g.sample_size(20);
    g.bench_function("serde_json_ignored_any_baseline", |b| {
        b.iter(|| {
            serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body)).unwrap()
        })
    });
    g.bench_function("max_keys_allowed_parse", |b| {
        b.iter(|| JsonObject::parse_with(std::hint::black_box(&body), limits).unwrap())
    });
    let mut one = String::from("{\"arguments\":{");
    for i in 0..131_070 {
        if i > 0 {
            one.push(',');
        }
        one.push('"');
        key_name(i, &mut one);
        one.push_str("\":0");
    }
    one.push_str("}}");
    let one = one.into_bytes();
    eprintln!("one-object body: {} bytes, 131070 keys", one.len());
    g.bench_function("131070_keys_one_object_refused", |b| {
        b.iter(|| JsonObject::parse_with(std::hint::black_box(&one), limits).unwrap_err())
    });
    let lifted = JsonLimits {
        max_keys_per_object: usize::MAX,
        ..limits
    };
    g.bench_function("131070_keys_one_object_cap_lifted", |b| {
        b.iter(|| JsonObject::parse_with(std::hint::black_box(&one), lifted).unwrap())
    });
    g.finish();
}

fn auth(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = upstream::build_client(&Default::default()).unwrap();
    let uncached = rt
        .block_on(Authenticator::new(
            &config("token_cache_entries = 0").auth,
            &env(),
            client.clone(),
        ))
        .unwrap();
    let cached = rt
        .block_on(Authenticator::new(&config("").auth, &env(), client))
        .unwrap();
    for (name, alg) in [("hs256", Algorithm::HS256), ("rs256", Algorithm::RS256)] {
        let t = token(alg, "alice");
        c.bench_function(&format!("jwt_verify_{name}_uncached"), |b| {
            b.to_async(&rt)
                .iter(|| async { uncached.authenticate(&t).await.unwrap() })
        });
        rt.block_on(cached.authenticate(&t)).unwrap();
        c.bench_function(&format!("jwt_verify_{name}_cached"), |b| {
            b.to_async(&rt)
                .iter(|| async { cached.authenticate(&t).await.unwrap() })
        });
    }
}

/// The tool policy's decision with 8 rules, the caller matching the sixth (claims as a
/// verified token carries them), plus the no-rules default.
fn policy(c: &mut Criterion) {
    use entitygate::toolpolicy::ToolPolicy;
    let cfg = config(
        r#"
[policy]
default = "deny"
[[policy.rules]]
when = { claim = "roles", contains = "admin" }
allow_toolkits = ["*"]
[[policy.rules]]
when = { claim = "plan", equals = "free" }
deny_toolkits = ["github", "notion"]
[[policy.rules]]
when = { claim = "/realm_access/roles", contains = "intern" }
allow_toolkits = ["slack"]
[[policy.rules]]
when = { claim = "tier", equals = 3 }
deny_tools = ["*_DELETE_*"]
[[policy.rules]]
when = { claim = "suspended", exists = true }
deny_toolkits = ["*"]
[[policy.rules]]
when = { claim = "roles", contains = "support" }
deny_tools = ["SLACK_DELETE_*"]
allow_tools = ["SLACK_SEND_MESSAGE", "GMAIL_*", "ZENDESK_*"]
[[policy.rules]]
when = { claim = "roles", contains = "engineer" }
allow_tools = ["COMPOSIO_REMOTE_WORKBENCH", "GITHUB_*"]
[[policy.rules]]
when = { claim = "org", equals = "acme" }
allow_toolkits = ["gmail", "slack", "github"]
"#,
    );
    let (compiled, _) = ToolPolicy::compile(&cfg.policy).unwrap();
    let claims = json!({"sub": "alice", "iss": "https://idp.test/", "aud": "entitygate",
        "exp": now() + 3600, "plan": "pro", "tier": 2, "org": "acme",
        "realm_access": {"roles": ["user"]}, "roles": ["user", "support"],
        "scope": "openid email composio:slack"});
    let claims = claims.as_object().unwrap().clone();
    c.bench_function("policy_decide_8_rules", |b| {
        b.iter(|| {
            compiled.decide(
                std::hint::black_box(&claims),
                std::hint::black_box("gmail"),
                std::hint::black_box("GMAIL_SEND_EMAIL"),
            )
        })
    });
    let (open, _) = ToolPolicy::compile(&config("").policy).unwrap();
    c.bench_function("policy_decide_no_rules", |b| {
        b.iter(|| {
            open.decide(
                std::hint::black_box(&claims),
                std::hint::black_box("gmail"),
                std::hint::black_box("GMAIL_SEND_EMAIL"),
            )
        })
    });
}

/// A whole execute request through the gateway's service, in process, on a warm cache:
/// token (cached), route, body parse and pin, extraction into invocations and the one
/// decision production runs (kill switch, policy, ownership, broken marks, connection gate;
/// the multi-execute's first five invocations pass the gate on cache hits). There is no
/// separate gate benchmark: a copy of the gate outside the decision measured code production
/// no longer ran. The last invocation is refused by the connection gate, so every invocation is
/// decided and nothing goes upstream: the cost is the gateway's alone. Direct call vs. the same
/// tool as the last of five in a multi-execute (six invocations).
fn carriers(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::Service;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = Sandbox::with_demo_data("sk_bench");
    let addr = rt.block_on(sandbox.start()).unwrap();
    let mut cfg = config("[audit]\npath = \"/dev/null\"");
    cfg.upstream.base_url = format!("http://{addr}");
    let gateway = rt
        .block_on(entitygate::Gateway::builder(cfg).env(env()).build())
        .unwrap();
    let svc = gateway.service();
    let token = token(Algorithm::HS256, "alice");
    let request = |path: &str, body: &serde_json::Value| {
        http::Request::builder()
            .method(Method::POST)
            .uri(path)
            .header("x-api-key", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap()
    };
    let direct = json!({"arguments": {"to": "a@example.com", "subject": "hi", "body": "x"}});
    let multi = json!({"arguments": {"tools": [
        {"tool_slug": "GITHUB_CREATE_ISSUE", "arguments": {"title": "t"}},
        {"tool_slug": "SLACK_SEND_MESSAGE", "arguments": {"text": "t"}},
        {"tool_slug": "GITHUB_GET_THE_AUTHENTICATED_USER", "arguments": {}},
        {"tool_slug": "SLACK_LIST_ALL_CHANNELS", "arguments": {}, "account": "ca_alice_slack"},
        {"tool_slug": "GMAIL_SEND_EMAIL", "arguments": {"to": "a@example.com"}},
    ]}});
    let cases = [
        (
            "carrier_v3_direct_refused_at_gate",
            "/api/v3.1/tools/execute/GMAIL_SEND_EMAIL",
            direct,
        ),
        (
            "carrier_v3_multi_execute_6_invocations",
            "/api/v3.1/tools/execute/COMPOSIO_MULTI_EXECUTE_TOOL",
            multi,
        ),
    ];
    for (name, path, body) in cases {
        let resp = rt.block_on(svc.clone().call(request(path, &body))).unwrap();
        assert_eq!(
            resp.status(),
            http::StatusCode::BAD_REQUEST,
            "{name} warms up to the gate"
        );
        sandbox.clear();
        bench_calls(c, &rt, name, &svc, || request(path, &body));
        assert_eq!(sandbox.count("POST", "/"), 0, "nothing was forwarded");
    }
    sandbox.stop();
}

/// The evidence trail's cost per decision (issue 16): the chain is sealed on the audit writer
/// thread (one SHA-256, and one HMAC when keyed, over a typical line); the trace context is
/// parsed and the upstream `traceparent` made on the request path.
fn evidence(c: &mut Criterion) {
    use entitygate::audit::{seal, Head, HmacKey};
    // A typical allowed execution's event, as `Audit::finish` serialises it (≈ 480 bytes).
    let event = r#"{"time":"2026-11-30T23:10:53.123Z","request_id":"7f1c2a9e5b3d4c6f8a0b1c2d3e4f5a6b","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","subject":"user_2NNEqL2nrIRdJ194ndJqAHwEfxC","method":"POST","path":"/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE","route":"/api/v3.1/tools/execute/{tool}","policy":"execute","tool":"GITHUB_CREATE_AN_ISSUE","toolkit":"github","connected_account_id":"ca_alice_github","decision":"allow","code":0,"identity_rewritten":false,"rule":null,"status":200,"upstream_status":200,"latency_ms":1.234}"#;
    let key = HmacKey::new(b"bench-only-hmac-key-0123456789abcdef0123").unwrap();
    let mut out = Vec::with_capacity(1 << 16);
    let mut head = Head::default();
    c.bench_function("audit_chain_seal", |b| {
        b.iter(|| {
            out.clear();
            seal(&mut head, None, event, &mut out);
        })
    });
    c.bench_function("audit_chain_seal_hmac", |b| {
        b.iter(|| {
            out.clear();
            seal(&mut head, Some(&key), event, &mut out);
        })
    });
    // `[audit] format = "ocsf"`: the event mapped to its OCSF class, then sealed (issue 30).
    c.bench_function("audit_ocsf_map+seal_hmac", |b| {
        b.iter(|| {
            out.clear();
            let (ocsf, unmapped) = entitygate::audit::ocsf::split(event).unwrap();
            entitygate::audit::seal_ocsf(&mut head, Some(&key), &ocsf, &unmapped, &mut out);
        })
    });
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        http::HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    c.bench_function("trace_context_continue+inject", |b| {
        b.iter(|| {
            let t = entitygate::trace::Trace::start(&headers, None);
            let mut up = http::HeaderMap::new();
            t.inject_into(&mut up);
            (t.trace_id(), up)
        })
    });
    c.bench_function("trace_context_fresh+inject", |b| {
        let empty = http::HeaderMap::new();
        b.iter(|| {
            let t = entitygate::trace::Trace::start(&empty, None);
            let mut up = http::HeaderMap::new();
            t.inject_into(&mut up);
            (t.trace_id(), up)
        })
    });
}

/// The console's feed (issue 18): what `Audit::finish` adds per decision with a console on
/// (one copy of the line and a `try_send`), what it adds with none (an atomic load), and what
/// the consumer task spends per decision off the request path (skim, ring, counts; and the
/// full read for an open Live decisions page).
/// Also prints the ring's memory for 2,000 typical and 2,000 worst-case decisions.
fn console_feed(c: &mut Criterion) {
    use entitygate::console::Feed;
    use std::sync::Arc;
    let event = r#"{"time":"2026-11-30T23:10:53.123Z","request_id":"7f1c2a9e5b3d4c6f8a0b1c2d3e4f5a6b","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","subject":"user_2NNEqL2nrIRdJ194ndJqAHwEfxC","method":"POST","path":"/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE","route":"/api/v3.1/tools/execute/{tool}","policy":"execute","tool":"GITHUB_CREATE_AN_ISSUE","toolkit":"github","connected_account_id":"ca_alice_github","decision":"allow","code":0,"identity_rewritten":false,"rule":null,"status":200,"upstream_status":200,"latency_ms":1.234}"#;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let off = Feed::new();
    c.bench_function("console_feed_offer_off", |b| b.iter(|| off.offer(event)));
    let on = Arc::new(Feed::new());
    {
        let _guard = rt.enter();
        on.start(2000);
    }
    c.bench_function("console_feed_offer_on", |b| b.iter(|| on.offer(event)));
    let (_, _, _, missed) = on.usage();
    println!("console_feed_offer_on: {missed} offers found the channel full (dropped, counted)");
    let ring = Feed::new();
    ring.set_capacity(2000);
    c.bench_function("console_feed_consume", |b| {
        b.iter(|| ring.consume(event, 1_800_000_000))
    });
    let _watching = ring.subscribe();
    c.bench_function("console_feed_consume_watched", |b| {
        b.iter(|| ring.consume(event, 1_800_000_000))
    });
    let typical = Feed::new();
    typical.set_capacity(2000);
    for _ in 0..2000 {
        typical.consume(event, 1_800_000_000);
    }
    let long = "x".repeat(4000);
    let worst = serde_json::json!({
        "time": long, "request_id": long, "trace_id": long, "subject": long, "method": long,
        "path": long, "query": long, "route": long, "policy": long, "tool": long,
        "toolkit": long, "connected_account_id": long, "decision": long, "rule": long,
        "code": 1, "identity_rewritten": true, "status": 403, "latency_ms": 1.0,
    })
    .to_string();
    let full = Feed::new();
    full.set_capacity(2000);
    for _ in 0..2000 {
        full.consume(&worst, 1_800_000_000);
    }
    let (n, bytes, _, _) = typical.usage();
    println!(
        "console ring, {n} typical decisions: {bytes} bytes ({} per decision)",
        bytes / n
    );
    let (n, bytes, _, _) = full.usage();
    println!(
        "console ring, {n} worst-case decisions: {bytes} bytes ({} per decision)",
        bytes / n
    );
}

/// The kill switch on the hot path (issue 15): the checks every request pays, with no rule
/// (the common case) and with 10,000 subject rules plus 100 tool globs and toolkit rules.
fn kill_switch(c: &mut Criterion) {
    use entitygate::killswitch::{KillSwitch, Rule};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let empty = KillSwitch::in_memory();
    c.bench_function("kill_switch_no_rules_identity_tool_toolkit", |b| {
        b.iter(|| {
            let a = empty.check_identity("acme:user-1234", Some("jti-5678"));
            let t = empty.check_tool("GITHUB_CREATE_ISSUE");
            let k = empty.check_toolkit("github");
            criterion::black_box((a.is_ok(), t.is_ok(), k.is_ok()))
        });
    });
    let full = KillSwitch::in_memory();
    let mut rules = Vec::new();
    for i in 0..10_000 {
        let body = json!({"subject": format!("acme:user-{i}x"), "reason": "bench"});
        rules.push(Rule::from_request(&body, now()).unwrap());
    }
    for i in 0..100 {
        for body in [
            json!({"tool": format!("TOOL{i}_*_X"), "reason": "bench"}),
            json!({"toolkit": format!("toolkit{i}"), "reason": "bench"}),
        ] {
            rules.push(Rule::from_request(&body, now()).unwrap());
        }
    }
    rt.block_on(full.replace_all(rules)).unwrap();
    c.bench_function(
        "kill_switch_10k_subjects_100_globs_100_toolkits_allowed",
        |b| {
            b.iter(|| {
                let a = full.check_identity("acme:user-1234", Some("jti-5678"));
                let t = full.check_tool("GITHUB_CREATE_ISSUE");
                let k = full.check_toolkit("github");
                criterion::black_box((a.is_ok(), t.is_ok(), k.is_ok()))
            });
        },
    );
}

/// The decision steps of issues 27-29, each against `constraints_none_configured`: the same
/// refused-at-the-gate GMAIL_SEND_EMAIL execute (typical mail arguments) through the service.
/// Constraints on arguments (issue 27): 20 for other tools (none applies: nothing may be parsed
/// or bound), and 20 that all apply and hold (the arguments parsed once, the variables bound
/// once, 20 `require`s evaluated). The tool lock (issue 29): gmail locked as the sandbox serves
/// it, warm (the verdict on the definition cached since the metadata read; an execution costs
/// a lookup and the version pin). The differences are what each step adds per invocation.
/// Approvals are asked after the gate, so they have rows of their own ([`approvals`]).
fn constraints(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::Service;

    const REQUIRES: [&str; 5] = [
        r#"args.recipient_email.lowerAscii().endsWith("@acme.com")"#,
        r#"args.?cc.orValue([]).all(a, a.lowerAscii().endsWith("@acme.com"))"#,
        r#"size(args.body) < 100000"#,
        r#"!args.subject.lowerAscii().contains("password")"#,
        r#"args.?bcc.orValue([]).size() == 0 && carrier in ["rest", "mcp"]"#,
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = Sandbox::with_demo_data("sk_bench");
    let addr = rt.block_on(sandbox.start()).unwrap();
    let token = token(Algorithm::HS256, "alice");
    let body = json!({"arguments": {
        "recipient_email": "bob@acme.com",
        "cc": ["carol@acme.com", "dan@Acme.com"],
        "subject": "Quarterly numbers",
        "body": "Hi Bob, please find the quarterly numbers below. Revenue is up, costs are flat, and the new region is ahead of plan. Let me know if you have questions before Thursday's review. Thanks, Alice",
        "is_html": false,
    }});
    let request = || {
        http::Request::builder()
            .method(Method::POST)
            .uri("/api/v3.1/tools/execute/GMAIL_SEND_EMAIL")
            .header("x-api-key", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap()
    };
    let twenty = |tool: &dyn Fn(usize) -> String| {
        (0..20)
            .map(|i| {
                format!(
                    "[[policy.constraints]]\nname = \"c{i}\"\ntools = [\"{}\"]\nrequire = '{}'\n",
                    tool(i),
                    REQUIRES[i % REQUIRES.len()]
                )
            })
            .collect::<String>()
    };
    // The tool lock's file: gmail as the sandbox serves it (its metadata lookups answer the
    // same definitions, so the lock holds).
    let lock_path = std::env::temp_dir().join(format!("hot_path-{}.lock.json", std::process::id()));
    let mut lock = entitygate::toollock::LockFile::new();
    for t in sandbox.tool_definitions("gmail") {
        lock.insert(&t, "gmail", "20250909_00", Vec::new());
    }
    lock.save(&lock_path).unwrap();
    let cases = [
        ("constraints_none_configured", String::new()),
        (
            "constraints_20_for_other_tools",
            twenty(&|i| format!("SLACK_TOOL_{i}")),
        ),
        (
            "constraints_20_applying_and_holding",
            twenty(&|_| "GMAIL_SEND_EMAIL".to_owned()),
        ),
        (
            "toollock_locked_tool_warm",
            format!(
                "[tools_lock]\npath = {:?}\ncheck_interval_secs = 0\n",
                lock_path.display().to_string()
            ),
        ),
    ];
    for (name, extra) in cases {
        let mut cfg = config(&format!("[audit]\npath = \"/dev/null\"\n[policy]\n{extra}"));
        cfg.upstream.base_url = format!("http://{addr}");
        let gateway = rt
            .block_on(entitygate::Gateway::builder(cfg).env(env()).build())
            .unwrap();
        let svc = gateway.service();
        let resp = rt.block_on(svc.clone().call(request())).unwrap();
        // Every constraint held: refused by the connection gate (alice's Gmail is expired).
        assert_eq!(resp.status(), http::StatusCode::BAD_REQUEST, "{name}");
        bench_calls(c, &rt, name, &svc, request);
        assert_eq!(sandbox.count("POST", "/"), 0, "nothing was forwarded");
    }
    sandbox.stop();
    let _ = std::fs::remove_file(&lock_path);
}

/// Approvals (issue 28) are the last step, asked only of calls every other step allowed: an
/// execute that passes the gate (alice's GitHub is ACTIVE) and is forwarded to the sandbox,
/// with no approval rule, with two rules for other tools, and with one on the tool whose `if`
/// is false for this call (bound and evaluated, then forwarded). An approval that holds waits
/// for a person, which no loop can measure.
fn approvals(c: &mut Criterion) {
    use bytes::Bytes;
    use http_body_util::Full;
    use tower::Service;

    let rt = tokio::runtime::Runtime::new().unwrap();
    let sandbox = Sandbox::with_demo_data("sk_bench");
    let addr = rt.block_on(sandbox.start()).unwrap();
    let token = token(Algorithm::HS256, "alice");
    let body = json!({"arguments": {"owner": "acme", "repo": "app", "title": "Bug: login fails",
        "body": "Steps to reproduce: open the app, click login, nothing happens.",
        "labels": ["bug", "p1"]}});
    let request = || {
        http::Request::builder()
            .method(Method::POST)
            .uri("/api/v3.1/tools/execute/GITHUB_CREATE_AN_ISSUE")
            .header("x-api-key", &token)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(serde_json::to_vec(&body).unwrap())))
            .unwrap()
    };
    let cases = [
        ("approvals_none_forwarded", ""),
        (
            "approvals_2_for_other_tools_forwarded",
            r#"[[policy.approvals]]
name = "repository deletion"
tools = ["GITHUB_DELETE_A_REPOSITORY"]
[[policy.approvals]]
name = "outside mail"
tools = ["GMAIL_SEND_EMAIL"]
if = '!args.recipient_email.lowerAscii().endsWith("@acme.com")'
"#,
        ),
        (
            "approvals_applying_if_false_forwarded",
            r#"[[policy.approvals]]
name = "issues outside acme"
tools = ["GITHUB_CREATE_AN_ISSUE"]
if = 'args.owner.lowerAscii() != "acme"'
"#,
        ),
    ];
    for (name, extra) in cases {
        let mut cfg = config(&format!("[audit]\npath = \"/dev/null\"\n[policy]\n{extra}"));
        cfg.upstream.base_url = format!("http://{addr}");
        let gateway = rt
            .block_on(entitygate::Gateway::builder(cfg).env(env()).build())
            .unwrap();
        let svc = gateway.service();
        let resp = rt.block_on(svc.clone().call(request())).unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK, "{name}: forwarded");
        bench_calls(c, &rt, name, &svc, request);
    }
    sandbox.stop();
}

criterion_group!(
    benches,
    routing,
    rewrite,
    worst_case,
    auth,
    policy,
    carriers,
    constraints,
    approvals,
    evidence,
    console_feed,
    kill_switch
);
criterion_main!(benches);
