#![allow(clippy::unwrap_used, unreachable_pub)]
//! Property tests and a fuzz-style harness over the two pure parsers an attacker feeds
//! directly: the body rewriter ([`entitygate::rewrite::JsonObject`]) and the path classifier
//! ([`entitygate::path::check`] + [`entitygate::routes::classify`]).
//!
//! CI runs a short default. For a long run (stable toolchain, no cargo-fuzz needed):
//!
//! ```sh
//! ENTITYGATE_FUZZ_CASES=1000000 cargo test --release --test adversarial_fuzz
//! ```
//!
//! `ENTITYGATE_FUZZ_CASES` sets the number of cases of every property below.

use entitygate::path;
use entitygate::rewrite::JsonObject;
use entitygate::routes::{self, Policy, ROUTES};
use http::Method;
use proptest::prelude::*;
use serde_json::Value;

/// An independent oracle (not the gateway's own function): every spelling Composio or a lenient
/// binder could read as a user id, compared on ASCII letters and digits only.
fn is_identity_key(k: &str) -> bool {
    let folded: String = k
        .bytes()
        .filter(u8::is_ascii_alphanumeric)
        .map(|b| char::from(b.to_ascii_lowercase()))
        .collect();
    [
        "userid",
        "userids",
        "entityid",
        "entityids",
        "useruuid",
        "clientuniqueuserid",
    ]
    .contains(&folded.as_str())
}

const SUBJECT: &str = "alice";

fn cases(default: u32) -> ProptestConfig {
    let n = std::env::var("ENTITYGATE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases: n,
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

// ============================================================================================
// bodies
// ============================================================================================

/// Word lists whose folded form is an identity key.
const IDENTITY_WORDS: &[&[&str]] = &[
    &["user", "id"],
    &["user", "ids"],
    &["entity", "id"],
    &["entity", "ids"],
    &["user", "uuid"],
    &["client", "unique", "user", "id"],
];

/// Any spelling of an identity key: case flips and any punctuation between (and around) the
/// words.
fn identity_key() -> impl Strategy<Value = String> {
    (
        prop::sample::select(IDENTITY_WORDS),
        prop::collection::vec(
            prop::sample::select(&["", "_", "-", ".", "__", " ", "[]", "$"][..]),
            5,
        ),
        any::<u64>(),
    )
        .prop_map(|(words, seps, caps)| {
            let mut k = String::new();
            if seps[4] == "$" {
                k.push('_');
            }
            for (i, w) in words.iter().enumerate() {
                if i > 0 {
                    k.push_str(seps[i % 4]);
                }
                k.push_str(w);
            }
            if seps[3] == "[]" {
                k.push_str("[]");
            }
            k.chars()
                .enumerate()
                .map(|(i, c)| {
                    if caps >> (i % 64) & 1 == 1 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect()
        })
}

/// Ordinary keys, some of them look-alikes that are *not* identity keys.
fn other_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,12}",
        prop::sample::select(
            &[
                "arguments",
                "text",
                "version",
                "connected_account_id",
                "user",
                "id",
                "userid_hint",
                "user_name",
                "entity",
                "users",
                "usr_id",
                "user_idx",
                "uid",
                "ユーザー",
                "user\u{200b}_id",
                "user_іd", // Cyrillic i: not an identity key, and not read as one by Composio
            ][..]
        )
        .prop_map(str::to_owned),
    ]
}

/// An arbitrary JSON value (nested objects may hold identity look-alikes too).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e300f64..1e300).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::from("bob")),
        Just(Value::from(SUBJECT)),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop_oneof![identity_key(), other_key()], inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Writes `s` as a JSON string, `\u`-escaping the characters selected by `mask`.
fn json_string(s: &str, mask: u64) -> String {
    let mut out = String::from("\"");
    for (i, c) in s.chars().enumerate() {
        let escape = mask >> (i % 64) & 1 == 1;
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || (escape && (c as u32) < 0x10000) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A body as raw text: top-level entries whose keys may be `\u`-escaped and may repeat.
#[derive(Debug, Clone)]
struct RawBody {
    entries: Vec<(String, u64, Value)>,
    ws: bool,
}

impl RawBody {
    fn text(&self) -> String {
        let sep = if self.ws { " \n\t" } else { "" };
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|(k, mask, v)| format!("{sep}{}{sep}:{sep}{v}", json_string(k, *mask)))
            .collect();
        format!("{{{}{sep}}}", parts.join(","))
    }
}

fn raw_body() -> impl Strategy<Value = RawBody> {
    let entry = (
        prop_oneof![2 => identity_key(), 3 => other_key()],
        any::<u64>(),
        json_value(),
    );
    (prop::collection::vec(entry, 0..8), any::<bool>())
        .prop_map(|(entries, ws)| RawBody { entries, ws })
}

/// Whether any object anywhere in `text` repeats a key (after unescaping).
fn has_duplicate(entries: &[(String, u64, Value)]) -> bool {
    let mut seen = std::collections::HashSet::new();
    entries.iter().any(|(k, _, _)| !seen.insert(k.clone()))
}

/// The invariants of a rewritten body: a JSON object with no repeated key whose only identity
/// field is `field` = the subject, and whose other top-level entries are the input's.
fn check_rewritten(input: &JsonObject, out: &[u8], field: &str) -> Result<(), TestCaseError> {
    let reparsed = JsonObject::parse(out);
    prop_assert!(
        reparsed.is_ok(),
        "output does not re-parse: {}",
        String::from_utf8_lossy(out)
    );
    let v: Value = serde_json::from_slice(out).unwrap();
    let obj = v.as_object().unwrap();
    let ids: Vec<(&String, &Value)> = obj.iter().filter(|(k, _)| is_identity_key(k)).collect();
    prop_assert_eq!(ids.len(), 1, "identity fields: {:?}", ids);
    prop_assert_eq!(ids[0].0.as_str(), field);
    prop_assert_eq!(ids[0].1, &Value::from(SUBJECT));
    for (k, raw) in input.iter() {
        if is_identity_key(k) {
            continue;
        }
        let want: Value = serde_json::from_str(raw.get()).unwrap();
        prop_assert_eq!(obj.get(k), Some(&want), "entry {} changed", k);
    }
    Ok(())
}

fn pin_and_check(body: &[u8]) -> Result<(), TestCaseError> {
    let Ok(obj) = JsonObject::parse(body) else {
        return Ok(()); // refused: nothing is forwarded
    };
    for field in ["user_id", "entityId"] {
        let mut o = JsonObject::parse(body).unwrap();
        o.pin_identity(field, SUBJECT, false).unwrap();
        check_rewritten(&obj, &o.to_vec(), field)?;
    }
    let mut o = JsonObject::parse(body).unwrap();
    o.strip_identity(SUBJECT);
    let v: Value = serde_json::from_slice(&o.to_vec()).unwrap();
    prop_assert!(v.as_object().unwrap().keys().all(|k| !is_identity_key(k)));
    Ok(())
}

proptest! {
    #![proptest_config(cases(512))]

    /// Identity fields in any spelling, escaped or not, at any position, beside arbitrary
    /// values: the rewritten body carries the subject as its only user id, the other entries
    /// unchanged; a repeated key (after unescaping) is always refused.
    #[test]
    fn rewritten_bodies_carry_only_the_subject(body in raw_body()) {
        let text = body.text();
        let parsed = JsonObject::parse(text.as_bytes());
        if has_duplicate(&body.entries) {
            prop_assert!(parsed.is_err(), "a duplicate key was accepted: {}", text);
        }
        pin_and_check(text.as_bytes())?;
    }

    /// Mutated bodies (bytes inserted, removed or replaced in a valid body): the parser never
    /// panics, and whatever it accepts is rewritten with the same guarantees.
    #[test]
    fn mutated_bodies_never_escape_the_rewriter(
        body in raw_body(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, prop::sample::select(
                &b"{}[]\",:\\u0a_Ie \xef\xbb\xbf\x00/*"[..])),
            1..6),
    ) {
        let mut bytes = body.text().into_bytes();
        for (at, op, b) in edits {
            let i = if bytes.is_empty() { 0 } else { at.index(bytes.len()) };
            match op {
                0 => bytes.insert(i, b),
                1 if !bytes.is_empty() => { bytes.remove(i); }
                _ if !bytes.is_empty() => bytes[i] = b,
                _ => bytes.push(b),
            }
        }
        pin_and_check(&bytes)?;
    }

    /// Arbitrary bytes: never a panic; accepted only as a JSON object.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if JsonObject::parse(&bytes).is_ok() {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            prop_assert!(v.is_object());
        }
        pin_and_check(&bytes)?;
    }
}

#[test]
fn deep_nesting_is_refused_not_a_stack_overflow() {
    for depth in [200, 10_000, 200_000] {
        let arr = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        assert!(JsonObject::parse(arr.as_bytes()).is_err(), "{depth}");
        let obj = format!(
            "{{\"a\":{}1{}}}",
            "{\"b\":".repeat(depth),
            "}".repeat(depth)
        );
        assert!(JsonObject::parse(obj.as_bytes()).is_err(), "{depth}");
    }
}

// ============================================================================================
// paths
// ============================================================================================

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PATCH,
    Method::DELETE,
    Method::PUT,
    Method::HEAD,
    Method::OPTIONS,
];

/// What a lenient server might make of `p`: percent-decoded, backslashes as slashes, matrix
/// parameters cut, empty and `.` segments dropped, `..` applied, no trailing slash.
fn normalise(p: &str) -> String {
    let decoded = percent_decode(p).replace('\\', "/");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn percent_decode(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn policy_of(m: &Method, p: &str) -> Option<Policy> {
    let p = path::check(p).ok()?;
    routes::classify(m, p).ok().map(|r| r.policy())
}

/// A concrete path for a route pattern, with `param` for every parameter.
fn instantiate(pattern: &str, v31: bool, param: &str) -> String {
    pattern
        .split('/')
        .map(|s| match s {
            "{v3}" if v31 => "v3.1",
            "{v3}" => "v3",
            s if s.starts_with('{') => param,
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A path-confusion trick applied at segment `at`.
fn trick(p: &str, kind: u8, at: usize) -> String {
    let segs: Vec<&str> = p.split('/').collect();
    let i = 1 + at % (segs.len() - 1).max(1);
    let mut s: Vec<String> = segs.iter().map(|x| (*x).to_owned()).collect();
    let i = i.min(s.len() - 1);
    match kind % 12 {
        0 => s.insert(i, String::new()),                   // //
        1 => s.insert(i, ".".into()),                      // /./
        2 => s.insert(i, "x/..".into()),                   // /x/../
        3 => s.insert(i, "%2e%2e".into()),                 // encoded ..
        4 => s[i] = s[i].replacen('/', "%2F", 1) + "%2Fx", // encoded slash
        5 => s[i].push_str(";jsessionid=1"),               // matrix parameter
        6 => s.push(String::new()),                        // trailing /
        7 => s[i] = s[i].to_ascii_uppercase(),             // case
        8 => {
            s[i] = format!(
                "%{:02X}{}",
                s[i].as_bytes().first().copied().unwrap_or(b'a'),
                s[i].get(1..).unwrap_or("")
            )
        } // encoded first byte
        9 => s.insert(i, "..".into()),                     // raw ..
        10 => s[i].push('\\'),                             // backslash
        _ => s.insert(i, "%2F".into()),                    // encoded empty segment
    }
    s.join("/")
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Classification is total over arbitrary input, and anything the checker accepts is
    /// already in normal form: the gateway classifies exactly what a lenient backend would
    /// route, never a different reading.
    #[test]
    fn accepted_paths_are_their_own_normal_form(
        p in "(/|//|\\.|\\.\\.|%2[eEfF]|%5[cC]|;|\\\\|[a-zA-Z0-9_~-]{1,8}|api|v3|v3\\.1|v1|v2|tools|execute|connected_accounts){0,10}",
        m in prop::sample::select(METHODS),
    ) {
        if let Ok(ok) = path::check(&p) {
            prop_assert_eq!(ok, p.as_str());
            prop_assert_eq!(normalise(&p), p.clone(), "accepted but not normal: {}", p);
            let _ = routes::classify(&m, ok);
        }
    }

    /// Every route, with every trick applied at every place: the tricked path is refused, or
    /// it classifies exactly as its normal form does (so it can never reach a more permissive
    /// policy than the path a lenient backend would see).
    #[test]
    fn tricks_never_reach_a_more_permissive_policy(
        row in any::<prop::sample::Index>(),
        v31 in any::<bool>(),
        param in prop_oneof![
            "[A-Za-z0-9_-]{1,16}",
            Just("proxy".to_owned()),
            Just("execute".to_owned()),
            Just("active".to_owned()),
            Just("..".to_owned()),
            Just("%2e%2e".to_owned()),
        ],
        kinds in prop::collection::vec((any::<u8>(), any::<usize>()), 1..4),
    ) {
        let route = &ROUTES[row.index(ROUTES.len())];
        let mut p = instantiate(route.pattern, v31, &param);
        for (k, at) in kinds {
            p = trick(&p, k, at);
        }
        if let Some(got) = policy_of(&route.method, &p) {
            let normal = normalise(&p);
            prop_assert_eq!(Some(got), policy_of(&route.method, &normal),
                "{} {} classifies as {:?}, its normal form {} does not", route.method, p, got, normal);
        }
    }

    /// Arbitrary strings, including non-ASCII and control characters: no panic, and only
    /// canonical ASCII paths pass the checker.
    #[test]
    fn arbitrary_paths_never_panic(p in "\\PC{0,64}|/[\\x00-\\x7f]{0,64}", m in prop::sample::select(METHODS)) {
        if let Ok(ok) = path::check(&p) {
            prop_assert!(ok.bytes().all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b)));
            let _ = routes::classify(&m, ok);
        }
    }
}
