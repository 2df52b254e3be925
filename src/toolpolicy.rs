//! Tool policy: which callers may run which toolkits and tools, decided from the token's claims
//! (issue 9).
//!
//! The operator writes `[[policy.rules]]` in the config; they are compiled once at load (and
//! at every reload) into a [`ToolPolicy`] that lives in the request snapshot
//! ([`crate::proxy::Shared`]). A decision walks the compiled rules without allocating.
//!
//! # Semantics
//! For an execution of `tool` in `toolkit`:
//! 1. **Rules**, in order. A rule *applies* when its `when` holds for the claims (a rule
//!    without `when` applies to every caller). An applying rule:
//!    - denies when `deny_toolkits` names the toolkit or `deny_tools` matches the tool;
//!    - otherwise, if it has `allow_toolkits` or `allow_tools`, it is an allowlist for the
//!      callers it applies to: it allows what those lists cover and **denies everything
//!      else**;
//!    - otherwise (a deny-only rule that does not name the tool) it does not decide, and
//!      evaluation continues with the next rule.
//!
//!    The first rule that decides wins.
//! 2. **Scopes** (`scope_prefix`, default `composio:`): when the token's `scope` claim (an
//!    OAuth space-separated string, or an array; `scp` is read too) holds at least one scope
//!    with the prefix, the token is limited to those toolkits: `composio:slack` allows the
//!    `slack` toolkit, `composio:*` every toolkit, and any other toolkit is denied.
//! 3. **Default** (`default`, `allow` unless configured).
//!
//! Special cases:
//! - The dispatching meta tools ([`META_TOOLS`]: search, multi-execute, manage connections,
//!   tool schemas) are not themselves subject to the rules; what they reach is (the gateway
//!   checks every nested tool slug and toolkit like a direct call).
//! - The code-running meta tools ([`CODE_TOOLS`]: remote workbench, remote bash) are allowed
//!   only when an applying rule's `allow_tools` matches them (a glob counts); toolkit lists,
//!   scopes and the default never allow them, since what they do cannot be inspected.
//! - Proxy execution is decided as the pseudo-tool [`PROXY_EXECUTE`] of the account's toolkit:
//!   `allow_toolkits` or a scope naming the toolkit allows it, an `allow_tools` glob on that
//!   toolkit's tools does not (raw API access is more than any one tool).
//! - Toolkit-level questions (listing toolkits, `COMPOSIO_MANAGE_CONNECTIONS`, a session's
//!   toolkit allow-list) ask whether the caller may run *something* in the toolkit: an
//!   `allow_tools` pattern counts for a toolkit when it can match a slug starting with
//!   `<TOOLKIT>_`; `deny_tools` does not deny a whole toolkit.
//!
//! # Claim conditions
//! `when = { claim = "...", <operator> }` with exactly one operator:
//! - `equals = <string | number | bool>`: the claim is that JSON value (types must agree:
//!   `"3"` is not `3`; `1` equals `1.0`). An array or object claim never equals.
//! - `contains = <string | number | bool>`: an array claim holds that value, or a string claim
//!   holds it as one of its space-separated words (`scope = "a b"` contains `"b"`).
//! - `exists = true | false`: the claim is present and not `null` (or not).
//!
//! `claim` names a top-level claim (`https://example.com/plan` is one name, dots included); a
//! claim starting with `/` is a JSON pointer into nested claims (`/realm_access/roles`).
//! A missing claim matches nothing but `exists = false`.
//!
//! # Patterns
//! `allow_tools` / `deny_tools` are tool slugs where `*` matches any run of characters,
//! compared ASCII case-insensitively (`GMAIL_*`, `*_DELETE_*`). `allow_toolkits` /
//! `deny_toolkits` are toolkit slugs or `*` alone.

use std::sync::Arc;

use serde_json::{Map, Number, Value};

use crate::config::{Config, ConfigError, PolicyConfig, PolicyDefault, RuleConfig, WhenConfig};
use crate::error::Error;

/// Meta tools that search, describe, dispatch or connect: not subject to rules themselves.
pub const META_TOOLS: &[&str] = &[
    "COMPOSIO_SEARCH_TOOLS",
    "COMPOSIO_MULTI_EXECUTE_TOOL",
    "COMPOSIO_MANAGE_CONNECTIONS",
    "COMPOSIO_GET_TOOL_SCHEMAS",
    "COMPOSIO_WAIT_FOR_CONNECTIONS",
];

/// Meta tools that run caller-supplied code: refused unless an `allow_tools` entry allows them.
pub const CODE_TOOLS: &[&str] = &["COMPOSIO_REMOTE_WORKBENCH", "COMPOSIO_REMOTE_BASH_TOOL"];

/// The pseudo-tool name proxy executions are decided as.
pub const PROXY_EXECUTE: &str = "PROXY_EXECUTE";

/// The toolkit of the meta tools.
const META_TOOLKIT: &str = "composio";

/// Claims holding OAuth scopes, in the order they are read.
const SCOPE_CLAIMS: &[&str] = &["scope", "scp"];

/// What decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// `policy.rules[i]`.
    Rule(usize),
    /// The token's scopes.
    Scope,
    /// `policy.default`.
    Default,
    /// A dispatching meta tool (not subject to rules).
    MetaTool,
    /// A code-running meta tool that no rule allowed.
    CodeTool,
}

/// One decision: allowed or not, and what decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the tool may run.
    pub allowed: bool,
    /// What decided.
    pub by: By,
}

/// What a caller may run, as toolkits (for a session's toolkit allow-list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permitted {
    /// Every toolkit except these.
    AllExcept(Vec<String>),
    /// Only these toolkits; `tools` are exact tool slugs whose toolkits also count (the caller
    /// looks them up).
    Only {
        /// Toolkit slugs, lower-case.
        toolkits: Vec<String>,
        /// Exact tool slugs allowed by `allow_tools`.
        tools: Vec<String>,
        /// Toolkits the decision denied on the way (removed from the tools' toolkits).
        except: Vec<String>,
    },
}

/// The compiled policy.
#[derive(Debug)]
pub struct ToolPolicy {
    rules: Vec<Rule>,
    default_allow: bool,
    scope_prefix: Option<Box<str>>,
    labels: Vec<Arc<str>>,
    fixed: [Arc<str>; 4],
}

#[derive(Debug)]
struct Rule {
    when: Option<Cond>,
    allow_toolkits: Vec<Glob>,
    deny_toolkits: Vec<Glob>,
    allow_tools: Vec<Glob>,
    deny_tools: Vec<Glob>,
    exclusive: bool,
}

#[derive(Debug)]
struct Cond {
    claim: ClaimPath,
    op: Op,
}

#[derive(Debug)]
enum ClaimPath {
    Top(String),
    Pointer(Vec<String>),
}

#[derive(Debug)]
enum Op {
    Equals(Value),
    Contains(Value),
    Exists(bool),
}

/// A slug pattern: `*` matches any run of characters; ASCII case-insensitive.
#[derive(Debug, Clone)]
struct Glob {
    /// The pattern split on `*` (one part: no `*`).
    parts: Vec<Box<str>>,
}

/// Everything a configuration is refused for before anything is built: the structural
/// checks of [`Config::validate`], then the policy compile. `config` is a leaf that compiles
/// nothing, so the compile lives here, where the rules are; start-up and reload compile the
/// policy again when they build the rules, and `entitygate audit` calls this.
///
/// # Errors
/// The first problem found, naming its key.
pub fn check(config: &Config) -> Result<(), ConfigError> {
    config.validate()?;
    ToolPolicy::compile(&config.policy).map(|_| ())
}

// === impl ToolPolicy ===

impl ToolPolicy {
    /// Compiles `[policy]`'s rules. Returns the policy and warnings worth logging.
    ///
    /// # Errors
    /// A rule that names nothing, a `when` with no or several operators or a non-scalar
    /// value, an empty claim, or a pattern that can never match a slug.
    pub fn compile(cfg: &PolicyConfig) -> Result<(Self, Vec<String>), ConfigError> {
        let mut warnings = Vec::new();
        let mut rules = Vec::with_capacity(cfg.rules.len());
        let mut labels = Vec::with_capacity(cfg.rules.len());
        let mut unconditional_allowlist: Option<usize> = None;
        for (i, rc) in cfg.rules.iter().enumerate() {
            let key = format!("policy.rules[{i}]");
            let rule = compile_rule(rc, &key, &mut warnings)?;
            if let Some(j) = unconditional_allowlist {
                warnings.push(format!(
                    "{key} is never reached: policy.rules[{j}] applies to every caller and decides every tool"
                ));
            }
            if rule.when.is_none() && rule.exclusive {
                unconditional_allowlist.get_or_insert(i);
            }
            labels.push(Arc::from(label(i, rc).as_str()));
            rules.push(rule);
        }
        let default_allow = cfg.default_decision == PolicyDefault::Allow;
        let scope_prefix = (!cfg.scope_prefix.is_empty()).then(|| cfg.scope_prefix.clone().into());
        if !default_allow && rules.is_empty() && scope_prefix.is_none() {
            warnings.push(
                "policy.default = \"deny\" with no rules and no scope_prefix refuses every tool execution"
                    .into(),
            );
        }
        let policy = Self {
            rules,
            default_allow,
            scope_prefix,
            labels,
            fixed: [
                Arc::from("scope"),
                Arc::from(if default_allow {
                    "default (allow)"
                } else {
                    "default (deny)"
                }),
                Arc::from("meta tool"),
                Arc::from("code-running meta tool (needs an allow_tools rule)"),
            ],
        };
        Ok((policy, warnings))
    }

    /// The top-level claims this policy reads (rule conditions, scopes): all that an
    /// identity needs to keep for its decisions.
    pub fn claims_read(&self) -> Vec<String> {
        let mut names: Vec<String> = SCOPE_CLAIMS.iter().map(|s| (*s).to_owned()).collect();
        for cond in self.rules.iter().filter_map(|r| r.when.as_ref()) {
            match &cond.claim {
                ClaimPath::Top(name) => names.push(name.clone()),
                ClaimPath::Pointer(segs) => names.extend(segs.first().cloned()),
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// Whether anything but a code-running meta tool may be refused for these claims. When
    /// not, listings of toolkits need no filtering.
    pub fn restricts(&self, claims: &Map<String, Value>) -> bool {
        !self.rules.is_empty() || !self.default_allow || self.has_scopes(claims)
    }

    /// The short name of what decided, for refusals and the audit trail.
    pub fn label(&self, by: By) -> &Arc<str> {
        match by {
            By::Rule(i) => &self.labels[i],
            By::Scope => &self.fixed[0],
            By::Default => &self.fixed[1],
            By::MetaTool => &self.fixed[2],
            By::CodeTool => &self.fixed[3],
        }
    }

    /// The refusal for `tool` (or toolkit) decided by `d`.
    pub fn refusal(&self, tool: &str, d: Decision) -> Error {
        Error::ToolNotAllowed {
            tool: tool.to_owned(),
            rule: self.label(d.by).to_string(),
        }
    }

    /// Whether the caller may run `tool` of `toolkit`.
    pub fn decide(&self, claims: &Map<String, Value>, toolkit: &str, tool: &str) -> Decision {
        if is_code_tool(tool) {
            return self.decide_code(claims, toolkit, tool);
        }
        if is_meta_tool(tool) && (toolkit.is_empty() || toolkit.eq_ignore_ascii_case(META_TOOLKIT))
        {
            return Decision {
                allowed: true,
                by: By::MetaTool,
            };
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies(claims) {
                continue;
            }
            if any(&rule.deny_toolkits, toolkit) || any(&rule.deny_tools, tool) {
                return deny(By::Rule(i));
            }
            if rule.exclusive {
                let ok = any(&rule.allow_toolkits, toolkit) || any(&rule.allow_tools, tool);
                return Decision {
                    allowed: ok,
                    by: By::Rule(i),
                };
            }
        }
        self.after_rules(claims, toolkit)
    }

    /// Whether the caller may run something in `toolkit` (listings, connections, sessions).
    pub fn decide_toolkit(&self, claims: &Map<String, Value>, toolkit: &str) -> Decision {
        if toolkit.eq_ignore_ascii_case(META_TOOLKIT) {
            return Decision {
                allowed: true,
                by: By::MetaTool,
            };
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies(claims) {
                continue;
            }
            if any(&rule.deny_toolkits, toolkit) {
                return deny(By::Rule(i));
            }
            if rule.exclusive {
                let ok = any(&rule.allow_toolkits, toolkit)
                    || rule.allow_tools.iter().any(|g| g.touches_toolkit(toolkit));
                return Decision {
                    allowed: ok,
                    by: By::Rule(i),
                };
            }
        }
        self.after_rules(claims, toolkit)
    }

    /// The toolkits the caller may run something in, for a session's toolkit allow-list.
    pub fn permitted(&self, claims: &Map<String, Value>) -> (Permitted, By) {
        let mut except: Vec<String> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies(claims) {
                continue;
            }
            for g in &rule.deny_toolkits {
                if g.is_star() {
                    return (
                        Permitted::Only {
                            toolkits: Vec::new(),
                            tools: Vec::new(),
                            except,
                        },
                        By::Rule(i),
                    );
                }
                push_unique(&mut except, g.literal());
            }
            if !rule.exclusive {
                continue;
            }
            if rule.allow_toolkits.iter().any(Glob::is_star)
                || rule.allow_tools.iter().any(|g| g.guess_toolkit().is_none())
            {
                return (Permitted::AllExcept(except), By::Rule(i));
            }
            let mut toolkits = Vec::new();
            let mut tools = Vec::new();
            for g in &rule.allow_toolkits {
                push_unique(&mut toolkits, g.literal());
            }
            for g in &rule.allow_tools {
                if g.parts.len() == 1 {
                    let slug = g.parts[0].to_ascii_uppercase();
                    if !tools.contains(&slug) {
                        tools.push(slug);
                    }
                } else if let Some(tk) = g.guess_toolkit() {
                    push_unique(&mut toolkits, &tk);
                }
            }
            toolkits.retain(|t| !except.contains(t));
            return (
                Permitted::Only {
                    toolkits,
                    tools,
                    except,
                },
                By::Rule(i),
            );
        }
        if let Some(prefix) = &self.scope_prefix {
            let mut toolkits = Vec::new();
            let mut saw = false;
            let mut all = false;
            for_each_scope(claims, |s| {
                if let Some(rest) = strip_prefix_ci(s, prefix) {
                    saw = true;
                    if rest == "*" {
                        all = true;
                    } else if !rest.is_empty() {
                        push_unique(&mut toolkits, rest);
                    }
                }
            });
            if all {
                return (Permitted::AllExcept(except), By::Scope);
            }
            if saw {
                toolkits.retain(|t| !except.contains(t));
                return (
                    Permitted::Only {
                        toolkits,
                        tools: Vec::new(),
                        except,
                    },
                    By::Scope,
                );
            }
        }
        if self.default_allow {
            (Permitted::AllExcept(except), By::Default)
        } else {
            (
                Permitted::Only {
                    toolkits: Vec::new(),
                    tools: Vec::new(),
                    except,
                },
                By::Default,
            )
        }
    }

    fn decide_code(&self, claims: &Map<String, Value>, toolkit: &str, tool: &str) -> Decision {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.applies(claims) {
                continue;
            }
            if any(&rule.deny_tools, tool) || any(&rule.deny_toolkits, toolkit) {
                return deny(By::Rule(i));
            }
            if any(&rule.allow_tools, tool) {
                return Decision {
                    allowed: true,
                    by: By::Rule(i),
                };
            }
            if rule.exclusive {
                return deny(By::Rule(i));
            }
        }
        deny(By::CodeTool)
    }

    fn after_rules(&self, claims: &Map<String, Value>, toolkit: &str) -> Decision {
        if let Some(allowed) = self.scope_grants(claims, toolkit) {
            return Decision {
                allowed,
                by: By::Scope,
            };
        }
        Decision {
            allowed: self.default_allow,
            by: By::Default,
        }
    }

    /// `Some(granted)` when the token carries scopes with the prefix, else `None`.
    fn scope_grants(&self, claims: &Map<String, Value>, toolkit: &str) -> Option<bool> {
        let prefix = self.scope_prefix.as_deref()?;
        let mut saw = false;
        let mut granted = false;
        for_each_scope(claims, |s| {
            if let Some(rest) = strip_prefix_ci(s, prefix) {
                saw = true;
                granted |= rest == "*" || rest.eq_ignore_ascii_case(toolkit);
            }
        });
        saw.then_some(granted)
    }

    fn has_scopes(&self, claims: &Map<String, Value>) -> bool {
        let Some(prefix) = self.scope_prefix.as_deref() else {
            return false;
        };
        let mut saw = false;
        for_each_scope(claims, |s| saw |= strip_prefix_ci(s, prefix).is_some());
        saw
    }
}

fn deny(by: By) -> Decision {
    Decision { allowed: false, by }
}

fn any(globs: &[Glob], s: &str) -> bool {
    globs.iter().any(|g| g.matches(s))
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    let s = s.to_ascii_lowercase();
    if !v.contains(&s) {
        v.push(s);
    }
}

/// Whether `tool` runs caller-supplied code.
pub fn is_code_tool(tool: &str) -> bool {
    CODE_TOOLS.iter().any(|t| t.eq_ignore_ascii_case(tool))
}

/// Whether `tool` is a dispatching meta tool.
pub fn is_meta_tool(tool: &str) -> bool {
    META_TOOLS.iter().any(|t| t.eq_ignore_ascii_case(tool))
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Calls `f` with every scope of the token (`scope`/`scp`: a space-separated string or an
/// array of strings).
fn for_each_scope(claims: &Map<String, Value>, mut f: impl FnMut(&str)) {
    for name in SCOPE_CLAIMS {
        match claims.get(*name) {
            Some(Value::String(s)) => s.split_ascii_whitespace().for_each(&mut f),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .flat_map(str::split_ascii_whitespace)
                .for_each(&mut f),
            _ => {}
        }
    }
}

fn label(i: usize, rc: &RuleConfig) -> String {
    if let Some(name) = rc.name.as_deref().filter(|n| !n.is_empty()) {
        return format!("policy.rules[{i}] \"{name}\"");
    }
    match &rc.when {
        None => format!("policy.rules[{i}] (every caller)"),
        Some(w) => {
            let op = if let Some(v) = &w.equals {
                format!("equals {v}")
            } else if let Some(v) = &w.contains {
                format!("contains {v}")
            } else {
                format!("exists = {}", w.exists.unwrap_or(true))
            };
            format!("policy.rules[{i}] ({} {op})", w.claim)
        }
    }
}

fn compile_rule(
    rc: &RuleConfig,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<Rule, ConfigError> {
    let when = rc
        .when
        .as_ref()
        .map(|w| compile_when(w, &format!("{key}.when")))
        .transpose()?;
    let tools = |field: &str, list: &[String]| -> Result<Vec<Glob>, ConfigError> {
        list.iter()
            .map(|p| compile_tool_glob(p, &format!("{key}.{field}")))
            .collect()
    };
    let allow_tools = tools("allow_tools", &rc.allow_tools)?;
    let deny_tools = tools("deny_tools", &rc.deny_tools)?;
    for (field, list) in [
        ("allow_tools", &rc.allow_tools),
        ("deny_tools", &rc.deny_tools),
    ] {
        for p in list.iter() {
            if !p.contains('*') && !p.contains('_') {
                warnings.push(format!(
                    "{key}.{field}: `{p}` matches no Composio tool slug (slugs are TOOLKIT_ACTION); \
                     did you mean {}?",
                    field.replace("tools", "toolkits")
                ));
            }
        }
    }
    let allow_toolkits = compile_toolkits(&rc.allow_toolkits, &format!("{key}.allow_toolkits"))?;
    let deny_toolkits = compile_toolkits(&rc.deny_toolkits, &format!("{key}.deny_toolkits"))?;
    if allow_tools.is_empty()
        && deny_tools.is_empty()
        && allow_toolkits.is_empty()
        && deny_toolkits.is_empty()
    {
        return Err(ConfigError::invalid(
            key,
            "the rule names no toolkit or tool: set allow_toolkits, deny_toolkits, allow_tools or deny_tools",
        ));
    }
    for a in rc.allow_toolkits.iter() {
        if rc.deny_toolkits.iter().any(|d| d.eq_ignore_ascii_case(a)) {
            warnings.push(format!(
                "{key}: toolkit `{a}` is both allowed and denied; deny wins"
            ));
        }
    }
    let exclusive = !allow_tools.is_empty() || !allow_toolkits.is_empty();
    Ok(Rule {
        when,
        allow_toolkits,
        deny_toolkits,
        allow_tools,
        deny_tools,
        exclusive,
    })
}

fn compile_when(w: &WhenConfig, key: &str) -> Result<Cond, ConfigError> {
    if w.claim.is_empty() {
        return Err(ConfigError::invalid(format!("{key}.claim"), "is empty"));
    }
    let claim = if let Some(ptr) = w.claim.strip_prefix('/') {
        let segs: Vec<String> = ptr
            .split('/')
            .map(|s| s.replace("~1", "/").replace("~0", "~"))
            .collect();
        if segs.iter().any(String::is_empty) {
            return Err(ConfigError::invalid(
                format!("{key}.claim"),
                "a JSON pointer with an empty segment",
            ));
        }
        ClaimPath::Pointer(segs)
    } else {
        ClaimPath::Top(w.claim.clone())
    };
    let set = usize::from(w.equals.is_some())
        + usize::from(w.contains.is_some())
        + usize::from(w.exists.is_some());
    if set != 1 {
        return Err(ConfigError::invalid(
            key,
            "needs exactly one operator: equals, contains or exists",
        ));
    }
    let scalar = |v: &Value, op: &str| -> Result<Value, ConfigError> {
        match v {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => Ok(v.clone()),
            _ => Err(ConfigError::invalid(
                format!("{key}.{op}"),
                "must be a string, a number or a boolean",
            )),
        }
    };
    let op = if let Some(v) = &w.equals {
        Op::Equals(scalar(v, "equals")?)
    } else if let Some(v) = &w.contains {
        Op::Contains(scalar(v, "contains")?)
    } else {
        Op::Exists(w.exists.unwrap_or(true))
    };
    Ok(Cond { claim, op })
}

fn compile_tool_glob(p: &str, key: &str) -> Result<Glob, ConfigError> {
    if p.is_empty() {
        return Err(ConfigError::invalid(key, "an empty tool pattern"));
    }
    if let Some(c) = p
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '*'))
    {
        return Err(ConfigError::invalid(
            key,
            format!("`{p}` can never match a tool slug (`{c}`: slugs are letters, digits and `_`; `*` is the only wildcard)"),
        ));
    }
    Ok(Glob::new(p))
}

fn compile_toolkits(list: &[String], key: &str) -> Result<Vec<Glob>, ConfigError> {
    list.iter()
        .map(|t| {
            if t == "*" {
                return Ok(Glob::new(t));
            }
            if t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "`{t}` is not a toolkit slug (letters, digits, `_`, `-`; or `*` alone)"
                    ),
                ));
            }
            Ok(Glob::new(t))
        })
        .collect()
}

// === impl Rule ===

impl Rule {
    fn applies(&self, claims: &Map<String, Value>) -> bool {
        self.when.as_ref().is_none_or(|c| c.holds(claims))
    }
}

// === impl Cond ===

impl Cond {
    fn holds(&self, claims: &Map<String, Value>) -> bool {
        let value = match &self.claim {
            ClaimPath::Top(name) => claims.get(name),
            ClaimPath::Pointer(segs) => pointer(claims, segs),
        };
        let value = value.filter(|v| !v.is_null());
        match (&self.op, value) {
            (Op::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (Op::Equals(want), Some(v)) => scalar_eq(v, want),
            (Op::Contains(want), Some(Value::Array(items))) => {
                items.iter().any(|i| scalar_eq(i, want))
            }
            (Op::Contains(Value::String(want)), Some(Value::String(s))) => {
                s.split_ascii_whitespace().any(|w| w == want)
            }
            (Op::Contains(_), Some(_)) => false,
        }
    }
}

fn pointer<'a>(claims: &'a Map<String, Value>, segs: &[String]) -> Option<&'a Value> {
    let (first, rest) = segs.split_first()?;
    let mut v = claims.get(first)?;
    for seg in rest {
        v = match v {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// JSON equality of scalars; numbers compare by value (`1` equals `1.0`).
fn scalar_eq(v: &Value, want: &Value) -> bool {
    match (v, want) {
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Number(a), Value::Number(b)) => num_eq(a, b),
        _ => false,
    }
}

fn num_eq(a: &Number, b: &Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

// === impl Glob ===

impl Glob {
    fn new(p: &str) -> Self {
        Self {
            parts: p.split('*').map(Box::from).collect(),
        }
    }

    fn is_star(&self) -> bool {
        self.parts.len() == 2 && self.parts.iter().all(|p| p.is_empty())
    }

    /// The pattern without wildcards (meaningful when it has none).
    fn literal(&self) -> &str {
        &self.parts[0]
    }

    fn matches(&self, s: &str) -> bool {
        glob_matches(&self.parts, s)
    }

    /// Whether this tool pattern can match a slug starting with `<TOOLKIT>_`.
    fn touches_toolkit(&self, toolkit: &str) -> bool {
        let lit = self.parts[0].as_bytes();
        let tk = toolkit.as_bytes();
        let wild = self.parts.len() > 1;
        // The literal prefix starts with `TOOLKIT_`...
        if lit.len() > tk.len() && lit[..tk.len()].eq_ignore_ascii_case(tk) && lit[tk.len()] == b'_'
        {
            return true;
        }
        // ...or, with a wildcard after it, is itself a prefix of `TOOLKIT_`.
        wild && (lit.len() <= tk.len() && tk[..lit.len()].eq_ignore_ascii_case(lit)
            || lit.len() == tk.len() + 1
                && lit[..tk.len()].eq_ignore_ascii_case(tk)
                && lit[tk.len()] == b'_')
    }

    /// The toolkit a tool glob such as `GMAIL_*` is about (`gmail`): its literal prefix up to
    /// the first `_` (an exact slug is its own literal; its toolkit is looked up instead).
    /// `None` when the literal prefix holds no `_` (`*`, `G*`): it may reach any toolkit.
    fn guess_toolkit(&self) -> Option<String> {
        let lit = &*self.parts[0];
        if self.parts.len() == 1 {
            return Some(lit.to_owned());
        }
        let cut = lit.find('_')?;
        (cut > 0).then(|| lit[..cut].to_ascii_lowercase())
    }
}

/// Whether `s` matches the glob split at its `*`s into `parts` (ASCII case-insensitive): the
/// first part is a prefix, the last a suffix, the ones between appear in order. Shared by the
/// tool policy and the kill switch, so a pattern means the same in both.
pub(crate) fn glob_matches<P: AsRef<str>>(parts: &[P], s: &str) -> bool {
    let s = s.as_bytes();
    let (first, last) = match parts {
        [only] => return s.eq_ignore_ascii_case(only.as_ref().as_bytes()),
        [first, .., last] => (first.as_ref().as_bytes(), last.as_ref().as_bytes()),
        [] => return false,
    };
    if s.len() < first.len() + last.len()
        || !s[..first.len()].eq_ignore_ascii_case(first)
        || !s[s.len() - last.len()..].eq_ignore_ascii_case(last)
    {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        let mid = mid.as_ref().as_bytes();
        if mid.is_empty() {
            continue;
        }
        match rest
            .windows(mid.len())
            .position(|w| w.eq_ignore_ascii_case(mid))
        {
            Some(at) => rest = &rest[at + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
