//! `entitygate check-config [--live]`: validates a configuration as the gateway would load it
//! (secrets and key files included), and says what is wrong with its constraints on tool
//! arguments (issue 27) before a caller finds out.
//!
//! Offline, every constraint is compiled on its own, so that every broken one is reported
//! (name, field, line and column): syntax errors, unknown variables or functions, and a
//! constraint that names no tool; a constraint whose tools the policy denies to every caller
//! is a warning. With `--live`, the [`live_checks`] ask Composio (read-only) about the tools
//! the constraints name: [`constraint_schemas`] reads each tool's input schema and reports a
//! parameter the tool does not have (with the closest one it has) and a use the schema's type
//! rules out (a string method on an array parameter, iterating a string). Then
//! [`key_scope`] asks whether Composio refuses the key for something the configuration
//! needs ([`super::keyscope`]).

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::config::{Config, ConstraintConfig, ProcessEnv};
use crate::constraints::{self, Reference, Usage};
use crate::upstream::Upstream;

/// `EX_USAGE`: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;
/// `EX_UNAVAILABLE`: Composio could not be asked.
const EXIT_UNAVAILABLE: u8 = 69;

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    /// An error makes the check fail; a warning is printed only.
    pub(crate) error: bool,
    pub(crate) text: String,
}

impl Finding {
    fn error(text: String) -> Self {
        Self { error: true, text }
    }

    fn warning(text: String) -> Self {
        Self { error: false, text }
    }
}

/// Runs `entitygate check-config`: 0 when usable (warnings printed), 64 otherwise.
pub async fn run(path: &Path, live: bool) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entitygate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut findings = offline(&config);
    // Everything else the gateway checks at start (keys, secrets, files), unless the
    // constraints already failed (the build would report only the first of them).
    if !findings.iter().any(|f| f.error) {
        if let Err(e) = crate::Gateway::builder(config.clone()).build().await {
            findings.push(Finding::error(e.to_string()));
        }
    }
    if live && !findings.iter().any(|f| f.error) {
        match live_context(&config) {
            Ok(ctx) => findings.extend(live_checks(&ctx).await),
            Err(e) => findings.push(Finding::error(format!("--live: {e}"))),
        }
    }
    for f in &findings {
        let kind = if f.error { "error" } else { "warning" };
        eprintln!("{}: {kind}: {}", path.display(), f.text);
    }
    if findings.iter().any(|f| f.error) {
        return ExitCode::from(EXIT_CONFIG);
    }
    println!("{}: ok", path.display());
    if live {
        return key_scope(&config).await;
    }
    ExitCode::SUCCESS
}

/// `check-config --live`, the key's permissions: 64 when Composio refuses the key for
/// something the configuration needs, 69 (`EX_UNAVAILABLE`) when it could not be asked.
async fn key_scope(config: &Config) -> ExitCode {
    use super::keyscope::{self, Outcome};
    let findings = match keyscope::check(config, &ProcessEnv).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("entitygate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for f in &findings {
        println!("{}", keyscope::report_line(f));
    }
    println!(
        "live: not probed (a read cannot show them): {}",
        keyscope::WRITES_NOT_PROBED
    );
    if findings
        .iter()
        .any(|f| matches!(f.outcome, Outcome::Refused(_)))
    {
        eprintln!("entitygate: Composio refuses the key for something this configuration needs");
        ExitCode::from(EXIT_CONFIG)
    } else if findings
        .iter()
        .any(|f| matches!(f.outcome, Outcome::Unknown(_)))
    {
        ExitCode::from(EXIT_UNAVAILABLE)
    } else {
        ExitCode::SUCCESS
    }
}

/// The checks that need nothing but the file: every constraint compiled on its own.
pub(crate) fn offline(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for (i, c) in config.policy.constraints.iter().enumerate() {
        if let Err(e) = constraints::Constraints::compile(std::slice::from_ref(c)) {
            // Compiled alone, its index is 0: name the real one.
            out.push(Finding::error(e.to_string().replace(
                "policy.constraints[0]",
                &format!("policy.constraints[{i}]"),
            )));
            continue;
        }
        if let Some(w) = denied_to_everyone(config, c) {
            out.push(Finding::warning(format!(
                "policy.constraints[{i}]: constraint `{}` {w}",
                c.name
            )));
        }
    }
    // Names must be unique across the list (compiled together).
    if out.iter().all(|f| !f.error) {
        if let Err(e) = constraints::Constraints::compile(&config.policy.constraints) {
            out.push(Finding::error(e.to_string()));
        }
    }
    out
}

/// Whether the policy lets no caller run anything the constraint names (then it can never
/// apply): every toolkit it names is denied by a rule for every caller, every exact tool is
/// denied likewise, and `PROXY_EXECUTE` with proxies switched off.
fn denied_to_everyone(config: &Config, c: &ConstraintConfig) -> Option<String> {
    let unconditional: Vec<_> = config
        .policy
        .rules
        .iter()
        .filter(|r| r.when.is_none())
        .collect();
    let toolkit_denied = |tk: &str| {
        unconditional
            .iter()
            .any(|r| r.deny_toolkits.iter().any(|d| d.eq_ignore_ascii_case(tk)))
    };
    let tool_denied = |t: &str| {
        (t.eq_ignore_ascii_case(crate::toolpolicy::PROXY_EXECUTE)
            && !config.policy.allow_proxy_execute)
            || unconditional.iter().any(|r| {
                r.deny_tools.iter().any(|d| d.eq_ignore_ascii_case(t))
                    || t.split('_').next().is_some_and(|tk| {
                        r.deny_toolkits.iter().any(|d| d.eq_ignore_ascii_case(tk))
                    })
            })
    };
    let all_exact = c.tools.iter().all(|t| !t.contains('*'));
    let none_allowed = all_exact
        && c.tools.iter().all(|t| tool_denied(t))
        && c.toolkits.iter().all(|t| t != "*" && toolkit_denied(t));
    none_allowed
        .then(|| "names only tools the policy denies to every caller: it never applies".to_owned())
}

/// What the live checks read: the configuration and a read-only client to Composio.
pub(crate) struct LiveContext<'a> {
    pub(crate) config: &'a Config,
    pub(crate) upstream: Upstream,
}

fn live_context(config: &Config) -> Result<LiveContext<'_>, crate::config::ConfigError> {
    let client = crate::upstream::build_client(&config.upstream)?;
    let upstream = Upstream::new(&config.upstream, &ProcessEnv, client)?;
    Ok(LiveContext { config, upstream })
}

/// The checks that ask Composio, in order (read-only GETs). Another live check is one more
/// line here.
pub(crate) async fn live_checks(ctx: &LiveContext<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    constraint_schemas(ctx, &mut out).await;
    out
}

/// Each constraint's `args.*` references against the input schema of each tool it names
/// (exact slugs, and the tools Composio lists for its toolkits and for the toolkit of a
/// `GMAIL_*`-style glob, filtered by the glob).
pub(crate) async fn constraint_schemas(ctx: &LiveContext<'_>, out: &mut Vec<Finding>) {
    for (i, cfg) in ctx.config.policy.constraints.iter().enumerate() {
        let Ok(compiled) = constraints::Constraints::compile(std::slice::from_ref(cfg)) else {
            continue;
        };
        let Some(c) = compiled.iter().next() else {
            continue;
        };
        let refs: Vec<&Reference> = c
            .when
            .iter()
            .chain(std::iter::once(&c.require))
            .flat_map(|e| e.references())
            .filter(|r| r.variable == "args" && !r.fields.is_empty())
            .collect();
        if refs.is_empty() {
            continue;
        }
        // `(slug, schema, named exactly)`: a wrong field on a tool named exactly is an error;
        // on a tool a glob or toolkit reaches, a warning that every call of it is refused.
        let mut tools: Vec<(String, Value, bool)> = Vec::new();
        let mut lists: Vec<String> = c.toolkits().to_vec();
        for p in &cfg.tools {
            if p.eq_ignore_ascii_case(crate::toolpolicy::PROXY_EXECUTE) {
                continue;
            }
            if !p.contains('*') {
                match fetch_tool(&ctx.upstream, p).await {
                    Ok(Some(schema)) => tools.push((p.to_ascii_uppercase(), schema, true)),
                    Ok(None) => out.push(Finding::warning(format!(
                        "policy.constraints[{i}] `{}`: Composio knows no tool `{p}`",
                        c.name
                    ))),
                    Err(e) => out.push(Finding::error(format!(
                        "policy.constraints[{i}] `{}`: cannot read `{p}` from Composio: {e}",
                        c.name
                    ))),
                }
            } else if let Some(tk) = p.split('_').next().filter(|t| !t.contains('*')) {
                let tk = tk.to_ascii_lowercase();
                if !lists.contains(&tk) {
                    lists.push(tk);
                }
            }
        }
        for tk in lists.iter().filter(|t| *t != "*") {
            match list_tools(&ctx.upstream, tk).await {
                Ok(list) => {
                    for (slug, schema) in list {
                        let named = c.toolkits().iter().any(|t| t == tk)
                            || c.tool_patterns().any(|p| glob(&p, &slug));
                        if named && !tools.iter().any(|(s, _, _)| *s == slug) {
                            tools.push((slug, schema, false));
                        }
                    }
                }
                Err(e) => out.push(Finding::error(format!(
                    "policy.constraints[{i}] `{}`: cannot list the tools of `{tk}` from Composio: {e}",
                    c.name
                ))),
            }
        }
        for (slug, schema, exact) in &tools {
            for r in &refs {
                let Some(problem) = check_reference(r, schema) else {
                    continue;
                };
                let missing = problem.starts_with("no such parameter");
                // `args.?x` or `has(args.x)` handles a tool without `x`.
                if missing && r.optional && !exact {
                    continue;
                }
                let text = format!(
                    "policy.constraints[{i}] `{}`, line {}, column {}: `{}` on {slug}: {problem}",
                    c.name,
                    r.line,
                    r.column,
                    r.path()
                );
                out.push(if *exact {
                    Finding::error(text)
                } else {
                    Finding::warning(format!(
                        "{text} (every call of {slug} is refused by this constraint)"
                    ))
                });
            }
        }
    }
}

/// `GET /api/v3.1/tools/{slug}`: its `input_parameters`, `None` when Composio has no such
/// tool.
async fn fetch_tool(upstream: &Upstream, slug: &str) -> Result<Option<Value>, String> {
    if !slug.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(None);
    }
    let (status, v) = upstream
        .get_json(&format!("/api/v3.1/tools/{slug}"))
        .await
        .map_err(|e| e.to_string())?;
    match status.as_u16() {
        200 => Ok(Some(v["input_parameters"].clone())),
        404 => Ok(None),
        s => Err(format!("HTTP {s}")),
    }
}

/// `GET /api/v3.1/tools?toolkit_slug=...`: every tool of a toolkit, with its input schema
/// (every page, up to a bound).
async fn list_tools(upstream: &Upstream, toolkit: &str) -> Result<Vec<(String, Value)>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..20 {
        let mut q = format!("/api/v3.1/tools?toolkit_slug={toolkit}&limit=200");
        if let Some(c) = &cursor {
            q.push_str("&cursor=");
            q.push_str(&form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>());
        }
        let (status, v) = upstream.get_json(&q).await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        for item in v["items"].as_array().into_iter().flatten() {
            if let Some(slug) = item["slug"].as_str() {
                out.push((slug.to_ascii_uppercase(), item["input_parameters"].clone()));
            }
        }
        match v["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = Some(c.to_owned()),
            _ => break,
        }
    }
    Ok(out)
}

fn glob(pattern: &str, slug: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    crate::toolpolicy::glob_matches(&parts, slug)
}

/// What is wrong with reading `r` (`args.<param>...`) given the tool's input `schema`.
pub(crate) fn check_reference(r: &Reference, schema: &Value) -> Option<String> {
    let props = schema.get("properties")?.as_object()?;
    let param = r.fields.first()?;
    let Some(prop) = props.get(param) else {
        let names: Vec<&str> = props.keys().map(String::as_str).collect();
        return Some(match closest(param, &names) {
            Some(near) => format!("no such parameter; did you mean `{near}`?"),
            None if names.is_empty() => "no such parameter (the tool takes none)".to_owned(),
            None => format!("no such parameter (it has {})", names.join(", ")),
        });
    };
    // Only the parameter itself is typed here (not fields below it).
    if r.fields.len() > 1 {
        return None;
    }
    let ty = prop.get("type").and_then(Value::as_str)?;
    match &r.usage {
        Usage::Method(m) if constraints::STRING_METHODS.contains(&m.as_str()) && ty != "string" => {
            Some(format!(
                "`{m}` is a string method but `{param}` is of type {ty}{}",
                if ty == "array" {
                    format!(" (check every item: `{}.all(x, x.{m}(...))`)", r.path())
                } else {
                    String::new()
                }
            ))
        }
        Usage::Iterated if ty != "array" && ty != "object" => Some(format!(
            "iterated by a macro (`all`, `exists`, ...) but `{param}` is of type {ty}"
        )),
        _ => None,
    }
}

/// The parameter name closest to `name`: within a third of its length in edit distance, or
/// one containing the other.
fn closest<'a>(name: &str, names: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    names
        .iter()
        .map(|n| (strsim::levenshtein(&lower, &n.to_ascii_lowercase()), *n))
        .filter(|(d, n)| {
            *d <= (name.len() / 3).max(2)
                || n.to_ascii_lowercase().contains(&lower)
                || lower.contains(&n.to_ascii_lowercase())
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "recipient_email": {"type": "string"},
            "cc": {"type": "array", "items": {"type": "string"}},
            "is_html": {"type": "boolean"},
        }})
    }

    fn problems(src: &str) -> Vec<String> {
        let e = constraints::compile(src).expect("compiles");
        e.references()
            .iter()
            .filter(|r| r.variable == "args")
            .filter_map(|r| check_reference(r, &schema()))
            .collect()
    }

    #[test]
    fn a_wrong_field_name_gets_a_did_you_mean() {
        assert_eq!(
            problems(r#"args.recipient.endsWith("@acme.com")"#),
            ["no such parameter; did you mean `recipient_email`?"]
        );
        assert_eq!(
            problems(r#"args.recipient_emial == "x""#),
            ["no such parameter; did you mean `recipient_email`?"]
        );
        assert_eq!(
            problems("args.?bc.orValue([]).size() == 0"),
            ["no such parameter; did you mean `cc`?"]
        );
        assert!(problems("args.zzzzzzzz == 1")[0].contains("it has recipient_email, cc, is_html"));
        assert!(problems(r#"args.recipient_email.endsWith("@acme.com")"#).is_empty());
    }

    #[test]
    fn offline_reports_every_broken_constraint_and_one_that_never_applies() {
        let config = Config::from_toml(
            r#"
[upstream]
base_url = "http://127.0.0.1:9"
[[auth.keys]]
alg = "HS256"
secret_env = "S"
[policy]
allow_proxy_execute = false
[[policy.rules]]
deny_toolkits = ["notion"]
[[policy.constraints]]
name = "a"
tools = ["GMAIL_SEND_EMAIL"]
require = 'args.x =='
[[policy.constraints]]
name = "b"
toolkits = ["gmail"]
require = 'nope'
[[policy.constraints]]
name = "never"
tools = ["NOTION_CREATE_PAGE", "PROXY_EXECUTE"]
toolkits = ["notion"]
require = 'true'
"#,
        )
        .expect("parses");
        let f = offline(&config);
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].error && f[0].text.contains("policy.constraints[0].require"));
        assert!(f[1].error && f[1].text.contains("policy.constraints[1].require"));
        assert!(f[1].text.contains("unknown variable `nope`"), "{f:?}");
        assert!(
            !f[2].error && f[2].text.contains("`never`") && f[2].text.contains("never applies")
        );
    }

    #[test]
    fn visible_type_mismatches_are_reported() {
        let p = problems(r#"args.cc.endsWith("@acme.com")"#);
        assert!(
            p[0].contains("string method") && p[0].contains("type array"),
            "{p:?}"
        );
        assert!(p[0].contains("args.cc.all(x, x.endsWith(...))"), "{p:?}");
        let p = problems(r#"args.recipient_email.all(a, a == "x")"#);
        assert!(p[0].contains("iterated"), "{p:?}");
        assert!(problems(r#"args.cc.all(a, a.endsWith("@acme.com"))"#).is_empty());
        assert!(problems("args.is_html == false").is_empty());
    }
}
