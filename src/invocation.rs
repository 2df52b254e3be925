//! Tool invocations: what a request asks Composio to run with a user's credentials, whatever
//! carries it, and the one decision on it.
//!
//! A *carrier* is any request that makes Composio act through a connected account: REST
//! execute (v3/v3.1 `tools/execute/{tool}`, v1/v2 `actions/{action}/execute`), proxy execute
//! (`tools/execute/proxy`, `actions/proxy`), a tool router session's `execute`, `execute_meta`
//! and `proxy_execute`, trigger upsert, the meta tools nested in any of them
//! (`COMPOSIO_MULTI_EXECUTE_TOOL`, `COMPOSIO_PROXY_EXECUTE`, `COMPOSIO_MANAGE_CONNECTIONS`, the
//! code tools), and MCP `tools/call`. Carriers differ only in where they keep the tool slug,
//! its arguments and the account; what is decided is the same.
//!
//! So a carrier is a thin, **pure** extraction (no I/O) into a list of [`Invocation`]s:
//! [`from_tool_call`] for anything shaped as "tool slug + arguments (+ account)", recursing
//! through the meta tools with a depth bound and refusing any shape it does not understand
//! (fail closed); the proxy and trigger routes build their one invocation directly. Then
//! [`decide`] applies to every invocation, in one fixed order:
//! 0. the kill switch's tool-glob rules (by slug) and toolkit rules (once the toolkit is
//!    known) ([`crate::killswitch`]);
//! 1. the code-tool ban (a code-running meta tool needs an explicit `allow_tools` rule);
//! 2. the tool policy (a trigger type counts as a tool of its toolkit; a proxy execution is
//!    the pseudo-tool `PROXY_EXECUTE` of its toolkit; connecting a toolkit is a toolkit-level
//!    question); then the tool lock ([`crate::toollock`], "2b"): a tool whose definition
//!    drifted from the reviewed one, or a tool of a locked toolkit that the lock does not
//!    have, is refused (no hashing here: verdicts are made when definitions are read);
//!    2c. the constraints on arguments ([`crate::constraints`]): every one that applies to
//!    the tool (by glob, or by Composio's toolkit) must hold on the invocation's arguments,
//!    which a carrier keeps only when one may apply ([`Extract`]);
//! 3. account ownership (Composio must list the named account for the subject) and toolkit
//!    match (a named account of another toolkit than the tool's is refused);
//! 4. the proxy switch (`policy.allow_proxy_execute`);
//! 5. the connection gate (a usable connection of the toolkit, or the named account usable);
//! 6. approvals, last, once every invocation passed all of the above (a call refused anyway
//!    never creates a request): an invocation a `[[policy.approvals]]` rule covers passes only
//!    with a grant for its exact call, which it uses up ([`crate::approvals`]). With several
//!    such invocations in one request, every grant is checked before any is used.
//!
//! The toolkit of a tool or trigger is always Composio's (its metadata, cached), never the
//! caller's; only proxies and connection management state their toolkit, which is what they
//! act on.
//!
//! [`decide`] reads only a [`Decider`] (the tool policy, the kill switch, the connection
//! cache, the broken marks and the proxy switch), so it runs and is tested on its own, and it
//! returns its trace: one [`Traced`] record per invocation (each [`Step`] taken with its
//! outcome, the rule that decided, the reason of a refusal, the account used) that the audit
//! event and `entitygate explain` render.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::audit::Audit;
use crate::auth::Identity;
use crate::connections::{Account, Connections, ToolInfo};
use crate::constraints::{Carrier, Constraints, Scope};
use crate::error::Error;
use crate::killswitch::KillSwitch;
use crate::revocation::Broken;
use crate::rewrite::{
    folded_eq, is_account_key, is_account_list_key, is_identity_key, JsonObject, Raw,
};
use crate::toolpolicy::{self, Decision, ToolPolicy, PROXY_EXECUTE};

/// The meta tool that runs several tools in one call (`arguments.tools[]`).
pub(crate) const MULTI_EXECUTE: &str = "COMPOSIO_MULTI_EXECUTE_TOOL";
/// The meta tool that connects toolkits (`arguments.toolkits`).
pub(crate) const MANAGE_CONNECTIONS: &str = "COMPOSIO_MANAGE_CONNECTIONS";
/// The meta tool that makes a raw request through a toolkit's account
/// (`arguments.toolkit_slug`, `endpoint`, `method`, ...).
pub(crate) const PROXY_TOOL: &str = "COMPOSIO_PROXY_EXECUTE";
/// The literal that asks Composio for its shared "instant" account: never the subject's.
pub(crate) const INSTANT_ACCOUNT: &str = "instant_account";

/// The toolkit of Composio's meta tools.
const META_TOOLKIT: &str = "composio";
/// Nesting levels of tool calls read at most (a call at the top is level 1).
pub(crate) const MAX_DEPTH: usize = 4;
/// Composio's own tools that the extraction knows the arguments of, or that take no toolkit
/// or account (besides [`toolpolicy::META_TOOLS`] and [`toolpolicy::CODE_TOOLS`]).
const KNOWN_COMPOSIO_TOOLS: &[&str] = &[PROXY_TOOL, "COMPOSIO_SUBMIT_FEEDBACK"];
/// Folded names of an argument that names a toolkit (an unknown `COMPOSIO_*` tool with one is
/// refused: the gateway cannot tell what it would act on).
const TOOLKIT_KEYS: &[&str] = &[
    "toolkit",
    "toolkits",
    "toolkitslug",
    "toolkitslugs",
    "app",
    "apps",
    "appname",
    "appnames",
];
/// Folded names of a connected-account id besides the carriers' one list
/// ([`is_account_key`]): a session's and a multi-execute item's spelling.
const SESSION_ACCOUNT_KEYS: &[&str] = &["account", "accountid"];

/// Whether `k` names one connected account, in a carrier body or in arguments.
fn names_account(k: &str) -> bool {
    is_account_key(k) || SESSION_ACCOUNT_KEYS.iter().any(|f| folded_eq(k, f))
}

/// Whether `k` could name accounts in an unknown tool's arguments.
fn names_accounts(k: &str) -> bool {
    names_account(k) || is_account_list_key(k) || folded_eq(k, "accounts")
}

/// What an invocation does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Runs a tool of a toolkit (its toolkit from Composio's metadata). The dispatching meta
    /// tools themselves (search, multi-execute, ...) are tools of toolkit `composio` too.
    Tool,
    /// Runs a code-running meta tool (`COMPOSIO_REMOTE_WORKBENCH`, `COMPOSIO_REMOTE_BASH_TOOL`):
    /// banned unless a rule's `allow_tools` names it.
    Code,
    /// A raw request through an account of `toolkit` (or of the named account's toolkit).
    Proxy,
    /// Connects (or reconnects) `toolkit` for the subject (`COMPOSIO_MANAGE_CONNECTIONS`).
    ManageConnections,
    /// Subscribes to trigger type `tool` (of its toolkit, from Composio) through the
    /// subject's connection.
    Trigger,
}

/// One thing a request asks Composio to do with a user's credentials.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Invocation {
    /// What it does.
    pub(crate) kind: Kind,
    /// Tool slug (or trigger slug; `PROXY_EXECUTE` for proxies).
    pub(crate) tool: String,
    /// When the carrier states it (proxy, manage connections); else from Composio.
    pub(crate) toolkit: Option<String>,
    /// A connected account id named for this invocation.
    pub(crate) account: Option<String>,
    /// How it reached the gateway (the constraints' `carrier`).
    pub(crate) carrier: Carrier,
    /// Its arguments as Composio receives them (`{}` when none; a trigger's config; a proxy's
    /// request), kept only when a constraint may apply to the tool ([`Constraints::wants`]):
    /// `None` when not kept.
    pub(crate) args: Option<Arc<Value>>,
    /// A proxy execution's request (`method`, `endpoint`, `parameters`, `body`), when kept.
    pub(crate) proxy: Option<Arc<Value>>,
}

/// What an extraction needs besides the call: which tools' arguments to keep (those a
/// constraint may apply to) and the carrier.
#[derive(Clone, Copy)]
pub(crate) struct Extract<'a> {
    pub(crate) constraints: &'a Constraints,
    pub(crate) carrier: Carrier,
    /// `[[policy.approvals]]`: a covered call's arguments are what its grant binds to, so
    /// they are kept for it too.
    pub(crate) approvals: Option<&'a crate::approvals::Rules>,
}

impl<'a> Extract<'a> {
    pub(crate) fn new(constraints: &'a Constraints, carrier: Carrier) -> Self {
        Self {
            constraints,
            carrier,
            approvals: None,
        }
    }

    /// The same, keeping the arguments of the tools approval rules may cover as well.
    pub(crate) fn approving(self, rules: &'a crate::approvals::Rules) -> Self {
        Self {
            approvals: Some(rules),
            ..self
        }
    }

    /// Whether `tool`'s arguments are kept: a constraint or an approval rule may apply to it.
    fn wants(&self, tool: &str) -> bool {
        self.constraints.wants(tool) || self.approvals.is_some_and(|a| a.wants(tool))
    }

    /// The arguments of `tool` to keep, if a constraint may apply to it (`{}` for none).
    fn keep(&self, tool: &str, arguments: Option<&Value>) -> Option<Arc<Value>> {
        if !self.wants(tool) {
            return None;
        }
        Some(Arc::new(match arguments {
            Some(v) if !v.is_null() => v.clone(),
            _ => Value::Object(Map::new()),
        }))
    }

    /// The same from a carrier body's raw field.
    fn keep_raw(&self, tool: &str, raw: Option<Raw<'_>>) -> Result<Option<Arc<Value>>, Error> {
        if !self.wants(tool) {
            return Ok(None);
        }
        Ok(Some(Arc::new(match raw {
            Some(r) => parse_raw(r)?,
            None => Value::Object(Map::new()),
        })))
    }

    /// A proxy invocation through `toolkit` (or the account's) with its request `req` (the
    /// body as Composio receives it), kept when a constraint may apply to proxies.
    pub(crate) fn proxy(
        &self,
        toolkit: Option<&str>,
        account: Option<&str>,
        req: impl FnOnce() -> Result<Value, Error>,
    ) -> Result<Invocation, Error> {
        let mut inv = Invocation::proxy(toolkit, account);
        inv.carrier = self.carrier;
        if self.wants(PROXY_EXECUTE) {
            let req = Arc::new(req()?);
            inv.args = Some(req.clone());
            inv.proxy = Some(req);
        }
        Ok(inv)
    }

    /// A trigger subscription of `slug` with its config (read only when a constraint may
    /// apply to it).
    pub(crate) fn trigger(
        &self,
        slug: &str,
        account: Option<&str>,
        config: impl FnOnce() -> Result<Value, Error>,
    ) -> Result<Invocation, Error> {
        let mut inv = Invocation::trigger(slug, account);
        inv.carrier = self.carrier;
        if self.wants(slug) {
            inv.args = Some(Arc::new(config()?));
        }
        Ok(inv)
    }
}

/// A carrier body as a JSON object value (a proxy's request as Composio receives it).
pub(crate) fn body_value(obj: &JsonObject) -> Result<Value, Error> {
    let mut m = Map::new();
    for (k, v) in obj.iter() {
        m.insert(k.to_owned(), parse_raw(v)?);
    }
    Ok(Value::Object(m))
}

/// A trigger upsert's config (`trigger_config`, any spelling; `{}` without one).
pub(crate) fn trigger_config(obj: &JsonObject) -> Result<Value, Error> {
    match obj.get_folded("triggerconfig") {
        Some(raw) if raw.get() != "null" => parse_raw(raw),
        _ => Ok(Value::Object(Map::new())),
    }
}

impl Invocation {
    /// A tool call (or a code tool), toolkit from Composio.
    fn tool(tool: &str, account: Option<&str>) -> Self {
        let kind = if toolpolicy::is_code_tool(tool) {
            Kind::Code
        } else {
            Kind::Tool
        };
        Self {
            kind,
            tool: tool.to_owned(),
            toolkit: None,
            account: account.map(str::to_owned),
            carrier: Carrier::Rest,
            args: None,
            proxy: None,
        }
    }

    /// A proxy execution through `toolkit` (or, without one, the account's toolkit).
    pub(crate) fn proxy(toolkit: Option<&str>, account: Option<&str>) -> Self {
        Self {
            kind: Kind::Proxy,
            tool: PROXY_EXECUTE.to_owned(),
            toolkit: toolkit.map(str::to_ascii_lowercase),
            account: account.map(str::to_owned),
            carrier: Carrier::Proxy,
            args: None,
            proxy: None,
        }
    }

    /// A trigger subscription of trigger type `slug`.
    pub(crate) fn trigger(slug: &str, account: Option<&str>) -> Self {
        Self {
            kind: Kind::Trigger,
            tool: slug.to_owned(),
            toolkit: None,
            account: account.map(str::to_owned),
            carrier: Carrier::Trigger,
            args: None,
            proxy: None,
        }
    }
}

/// What was decided: allowed, on these toolkits (to forget their cached status when
/// Composio refuses after all).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// The toolkits whose connections the invocations use, lower-case, each once.
    pub(crate) toolkits: Vec<String>,
    /// The same, each with the account the decision saw usable (when it looked one up).
    pub(crate) accounts: Vec<(String, Option<String>)>,
}

// --- extraction (pure) ---

/// Pure extraction of one tool call (slug + its arguments, as any carrier holds them),
/// recursing through meta tools (`COMPOSIO_MULTI_EXECUTE_TOOL`, `COMPOSIO_PROXY_EXECUTE`,
/// `COMPOSIO_MANAGE_CONNECTIONS`, code tools) with a depth bound; refuses shapes it does not
/// understand (fail closed).
///
/// `account` is the account the carrier names for this call. The arguments of an ordinary
/// tool are read only when a constraint may apply to it (then kept in the invocation); those
/// of Composio's own tools are always read.
///
/// # Errors
/// [`Error::BodyInvalid`] for an unreadable meta-tool call, too deep a nesting, or an unknown
/// `COMPOSIO_*` tool that names a toolkit or an account.
pub(crate) fn from_tool_call(
    x: &Extract<'_>,
    tool: &str,
    arguments: Option<&Value>,
    account: Option<&str>,
) -> Result<Vec<Invocation>, Error> {
    let mut out = Vec::new();
    extract(x, tool, arguments, account, 1, &mut out)?;
    Ok(out)
}

/// Whether [`from_tool_call`] reads `tool`'s arguments (Composio's own tools), so that a
/// carrier parses them only then.
pub(crate) fn reads_arguments(tool: &str) -> bool {
    // Bytes, not a `str` slice: a slug is client input and need not be ASCII.
    tool.as_bytes()
        .get(..9)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"COMPOSIO_"))
}

/// [`from_tool_call`] for a carrier body: the tool's arguments are its `arguments` or (old
/// API) `input` field, in any spelling; both at once are ambiguous and refused. An ordinary
/// tool's are parsed only when a constraint may apply to it.
///
/// # Errors
/// As [`from_tool_call`]; also unreadable arguments and several argument fields.
pub(crate) fn from_body(
    x: &Extract<'_>,
    tool: &str,
    obj: &JsonObject,
    account: Option<&str>,
) -> Result<Vec<Invocation>, Error> {
    let raw = body_arguments(obj)?;
    if !reads_arguments(tool) {
        let mut out = from_tool_call(x, tool, None, account)?;
        if let Some(inv) = out.first_mut() {
            inv.args = x.keep_raw(tool, raw)?;
        }
        return Ok(out);
    }
    let arguments = raw.map(parse_raw).transpose()?;
    from_tool_call(x, tool, arguments.as_ref(), account)
}

/// The raw `arguments` (or `input`) of a carrier body, `null` counting as absent.
fn body_arguments(obj: &JsonObject) -> Result<Option<Raw<'_>>, Error> {
    let mut found = None;
    for (k, v) in obj.iter() {
        if (folded_eq(k, "arguments") || folded_eq(k, "input")) && v.get() != "null" {
            if found.is_some() {
                return Err(Error::BodyInvalid(
                    "the body carries the tool's arguments twice (`arguments` and `input`)".into(),
                ));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

fn parse_raw(raw: Raw<'_>) -> Result<Value, Error> {
    serde_json::from_str(raw.get())
        .map_err(|_| Error::BodyInvalid("the tool's arguments are not readable JSON".into()))
}

/// The one connected account a carrier body names at its top level (`connected_account_id`,
/// `account`, any spelling), if any. Several different ids are ambiguous and refused.
///
/// # Errors
/// [`Error::BodyInvalid`] for a non-string id or several ids.
pub(crate) fn named_account(obj: &JsonObject) -> Result<Option<String>, Error> {
    let mut found: Option<String> = None;
    for (k, v) in obj.iter() {
        if !names_account(k) {
            continue;
        }
        let Ok(id) = serde_json::from_str::<Option<String>>(v.get()) else {
            return Err(Error::BodyInvalid(format!("`{k}` must be a string")));
        };
        merge_account(&mut found, id)?;
    }
    Ok(found)
}

/// The same for a parsed object (arguments, a multi-execute item).
fn map_account(m: &Map<String, Value>) -> Result<Option<String>, Error> {
    let mut found: Option<String> = None;
    for (k, v) in m {
        if !names_account(k) {
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) => merge_account(&mut found, Some(s.clone()))?,
            _ => return Err(Error::BodyInvalid(format!("`{k}` must be a string"))),
        }
    }
    Ok(found)
}

fn merge_account(found: &mut Option<String>, id: Option<String>) -> Result<(), Error> {
    // An empty id is still an id: it is decided (and owned by nobody), not ignored.
    let Some(id) = id else {
        return Ok(());
    };
    match found {
        Some(f) if *f != id => Err(Error::BodyInvalid(
            "the call names more than one connected account".into(),
        )),
        Some(_) => Ok(()),
        None => {
            *found = Some(id);
            Ok(())
        }
    }
}

fn invalid(tool: &str, what: &str) -> Error {
    Error::BodyInvalid(format!("`{tool}`: {what}"))
}

/// The arguments of a meta tool: an object, or the call is refused.
fn meta_arguments<'v>(
    tool: &str,
    arguments: Option<&'v Value>,
) -> Result<&'v Map<String, Value>, Error> {
    match arguments {
        Some(Value::Object(m)) => Ok(m),
        Some(Value::Null) | None => Err(invalid(tool, "the meta tool needs its `arguments`")),
        Some(_) => Err(invalid(tool, "`arguments` must be an object")),
    }
}

/// The account of a nested call: what its own arguments (or item) name, else what the
/// carrier named for the enclosing call; both and different is ambiguous.
fn nested_account(outer: Option<&str>, inner: Option<String>) -> Result<Option<String>, Error> {
    let mut found = outer.map(str::to_owned);
    merge_account(&mut found, inner)?;
    Ok(found)
}

fn extract(
    x: &Extract<'_>,
    tool: &str,
    arguments: Option<&Value>,
    account: Option<&str>,
    depth: usize,
    out: &mut Vec<Invocation>,
) -> Result<(), Error> {
    let push = |out: &mut Vec<Invocation>, tool: &str, account: Option<&str>| {
        let mut inv = Invocation::tool(tool, account);
        inv.carrier = x.carrier;
        inv.args = x.keep(tool, arguments);
        out.push(inv);
    };
    if depth > MAX_DEPTH {
        return Err(invalid(tool, "meta tools nested too deeply"));
    }
    if tool.is_empty() {
        return Err(Error::BodyInvalid("a tool call needs a tool slug".into()));
    }
    if !reads_arguments(tool) {
        push(out, tool, account);
        return Ok(());
    }
    if tool.eq_ignore_ascii_case(MULTI_EXECUTE) {
        push(out, tool, account);
        let m = meta_arguments(tool, arguments)?;
        let items = match m.get("tools") {
            Some(Value::Array(a)) => a,
            None | Some(Value::Null) => return Ok(()),
            Some(_) => return Err(invalid(tool, "`arguments.tools` must be a list")),
        };
        for item in items {
            let Value::Object(item) = item else {
                return Err(invalid(tool, "`arguments.tools` must hold objects"));
            };
            let mut slug: Option<&str> = None;
            for (k, v) in item {
                if folded_eq(k, "toolslug") || folded_eq(k, "tool") || folded_eq(k, "slug") {
                    match v {
                        Value::String(s) if slug.is_none_or(|x| x == s) => slug = Some(s),
                        _ => return Err(invalid(tool, "every item needs one `tool_slug`")),
                    }
                }
            }
            let slug = slug.ok_or_else(|| invalid(tool, "every item needs one `tool_slug`"))?;
            let mut args: Option<&Value> = None;
            for (k, v) in item {
                if (folded_eq(k, "arguments") || folded_eq(k, "input")) && !v.is_null() {
                    if args.is_some() {
                        return Err(invalid(tool, "an item carries its arguments twice"));
                    }
                    args = Some(v);
                }
            }
            // Composio does not nest multi-executes; one inside another is refused rather than
            // guessed at.
            if slug.eq_ignore_ascii_case(MULTI_EXECUTE) {
                return Err(Error::ToolNotAllowed {
                    tool: slug.to_owned(),
                    rule: "nested multi-execute".into(),
                });
            }
            // Items name no user: the call runs as the carrier's (pinned) user.
            if let Some(k) = item.keys().find(|k| is_identity_key(k)) {
                return Err(invalid(
                    tool,
                    &format!("an item may not name a user (`{k}`)"),
                ));
            }
            // An item's account is its own; the enclosing call's is not inherited (it was
            // decided for the meta tool itself).
            let inner = map_account(item)?;
            let item_x = Extract {
                carrier: Carrier::Multi,
                ..*x
            };
            extract(&item_x, slug, args, inner.as_deref(), depth + 1, out)?;
        }
        return Ok(());
    }
    if tool.eq_ignore_ascii_case(MANAGE_CONNECTIONS) {
        push(out, tool, account);
        let m = meta_arguments(tool, arguments)?;
        for (k, v) in m {
            if !TOOLKIT_KEYS.iter().any(|f| folded_eq(k, f)) {
                continue;
            }
            let list = match v {
                Value::Null => continue,
                Value::Array(a) => a.as_slice(),
                v @ Value::String(_) => std::slice::from_ref(v),
                _ => return Err(invalid(tool, "`toolkits` must be a list of toolkit slugs")),
            };
            for t in list {
                let Value::String(tk) = t else {
                    return Err(invalid(tool, "`toolkits` must be a list of toolkit slugs"));
                };
                out.push(Invocation {
                    kind: Kind::ManageConnections,
                    tool: MANAGE_CONNECTIONS.to_owned(),
                    toolkit: Some(tk.to_ascii_lowercase()),
                    account: None,
                    carrier: x.carrier,
                    args: None,
                    proxy: None,
                });
            }
        }
        return Ok(());
    }
    if tool.eq_ignore_ascii_case(PROXY_TOOL) {
        // Decided exactly as `tools/execute/proxy`: proxy execution of the named toolkit.
        let m = meta_arguments(tool, arguments)?;
        let mut toolkit: Option<&str> = None;
        for (k, v) in m {
            if TOOLKIT_KEYS.iter().any(|f| folded_eq(k, f)) {
                match v {
                    Value::Null => {}
                    Value::String(s) if !s.is_empty() && toolkit.is_none_or(|t| t == s) => {
                        toolkit = Some(s);
                    }
                    _ => return Err(invalid(tool, "`toolkit_slug` must be one toolkit slug")),
                }
            }
        }
        if let Some(k) = m.keys().find(|k| is_identity_key(k)) {
            return Err(invalid(
                tool,
                &format!("the proxy runs as the caller, not `{k}`"),
            ));
        }
        let own = map_account(m)?;
        let account = nested_account(account, own)?;
        if toolkit.is_none() && account.is_none() {
            return Err(invalid(tool, "a proxy execution needs its `toolkit_slug`"));
        }
        // Its arguments are the proxy request (`endpoint`, `method`, `parameters`, `body`).
        out.push(x.proxy(toolkit, account.as_deref(), || Ok(Value::Object(m.clone())))?);
        return Ok(());
    }
    let known = toolpolicy::META_TOOLS
        .iter()
        .chain(toolpolicy::CODE_TOOLS)
        .chain(KNOWN_COMPOSIO_TOOLS)
        .any(|t| t.eq_ignore_ascii_case(tool));
    if !known {
        // Another `COMPOSIO_*` tool: an ordinary tool (of `composio_search`, say) unless its
        // arguments name a toolkit or an account, which would be acting on something the
        // gateway cannot see.
        match arguments {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => {
                if names_target(m, 0) {
                    return Err(invalid(
                        tool,
                        "an unknown Composio tool that names a toolkit or an account",
                    ));
                }
            }
            Some(_) => return Err(invalid(tool, "`arguments` must be an object")),
        }
    }
    push(out, tool, account);
    Ok(())
}

/// Whether an object names a toolkit or an account at any depth.
fn names_target(m: &Map<String, Value>, depth: usize) -> bool {
    if depth > 64 {
        return true;
    }
    m.iter().any(|(k, v)| {
        TOOLKIT_KEYS.iter().any(|f| folded_eq(k, f))
            || names_accounts(k)
            || value_names_target(v, depth + 1)
    })
}

fn value_names_target(v: &Value, depth: usize) -> bool {
    match v {
        Value::Object(m) => names_target(m, depth),
        Value::Array(a) => a.iter().any(|x| value_names_target(x, depth + 1)),
        _ => false,
    }
}

// --- the one decision ---

/// Exactly what [`decide`] reads, and nothing else (the carrier builds it from its rules:
/// `proxy::Shared::decider`), so the decision can be run and tested on its own.
#[derive(Clone, Copy)]
pub(crate) struct Decider<'a> {
    /// The compiled tool policy (`[[policy.rules]]`).
    pub(crate) tool_policy: &'a ToolPolicy,
    /// Operators' deny rules (tool globs and toolkits).
    pub(crate) kill_switch: &'a KillSwitch,
    /// Tool metadata, account ownership and connection status.
    pub(crate) connections: &'a Connections,
    /// Connections Composio's answers showed dead.
    pub(crate) broken: &'a Broken,
    /// `[policy] allow_proxy_execute`.
    pub(crate) allow_proxy_execute: bool,
    /// The tool-definition lock (`[tools_lock]`), when configured.
    pub(crate) tool_lock: Option<&'a crate::toollock::ToolLock>,
    /// The compiled `[[policy.constraints]]`.
    pub(crate) constraints: &'a Constraints,
    /// The approval step's handles; `None`: no approval is asked (no rules, or a caller that
    /// only reads the decision).
    pub(crate) approvals: Option<Approver<'a>>,
}

/// What the approval step reads and writes ([`crate::approvals`]).
#[derive(Clone, Copy)]
pub(crate) struct Approver<'a> {
    /// `[[policy.approvals]]` and `[approvals]`.
    pub(crate) rules: &'a crate::approvals::Rules,
    /// The requests and grants.
    pub(crate) store: &'a crate::approvals::Store,
    /// Where approval events go (hash-chained).
    pub(crate) audit: &'a crate::audit::Sink,
    /// The request's W3C trace id.
    pub(crate) trace_id: Option<&'a str>,
    /// A dry run (`explain`): nothing is stored or used.
    pub(crate) dry_run: bool,
}

/// A step of [`decide`], in its order (module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// 0. The kill switch's tool-glob rules, by slug.
    KillSwitchTool,
    /// The named account is not Composio's shared instant account.
    NamedAccount,
    /// 1. The code-tool ban, decided by this tool-policy rule.
    CodeToolBan(Arc<str>),
    /// What the invocation acts on: Composio's toolkit of a tool or trigger, the carrier's for
    /// a proxy or connection management, or the named account's.
    Toolkit,
    /// 0. The kill switch's toolkit rules.
    KillSwitchToolkit,
    /// 2. The tool policy, decided by this rule.
    Policy(Arc<str>),
    /// 2b. The tool lock: the definition is the reviewed one.
    ToolLock,
    /// 2c. A constraint on the arguments (`[[policy.constraints]]`), by name.
    Constraint(Arc<str>),
    /// 3. Account ownership and toolkit match.
    Ownership,
    /// 4. The proxy switch (`allow_proxy_execute`).
    ProxySwitch,
    /// 5. A connection Composio's last answer showed dead.
    BrokenMark,
    /// 5. The connection gate.
    ConnectionGate,
    /// 6. Approval, asked by this `[[policy.approvals]]` rule.
    Approval(Arc<str>),
}

impl Step {
    /// The step's name, as `explain` and logs show it.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::KillSwitchTool => "kill switch (tool)",
            Self::NamedAccount => "named account",
            Self::CodeToolBan(_) => "code-tool ban",
            Self::Toolkit => "toolkit",
            Self::KillSwitchToolkit => "kill switch (toolkit)",
            Self::Policy(_) => "tool policy",
            Self::ToolLock => "tool lock",
            Self::Constraint(_) => "constraint",
            Self::Ownership => "account ownership",
            Self::ProxySwitch => "proxy switch",
            Self::BrokenMark => "broken connection",
            Self::ConnectionGate => "connection gate",
            Self::Approval(_) => "approval",
        }
    }
}

/// One step taken, and whether the invocation passed it (the last step of a refused
/// invocation is the one that refused it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) step: Step,
    pub(crate) passed: bool,
}

/// The decision's record of one invocation: what was asked, each step taken with its outcome,
/// the rule that decided, the reason of a refusal and what is forwarded. The audit event
/// ([`Traced::record`]) and `entitygate explain` render it; nothing rebuilds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Traced {
    /// What the invocation does.
    pub(crate) kind: Kind,
    /// The tool asked for (or trigger type, or `PROXY_EXECUTE`).
    pub(crate) tool: String,
    /// The toolkit decided on, once known.
    pub(crate) toolkit: Option<String>,
    /// The connected account the invocation names.
    pub(crate) account: Option<String>,
    /// The steps taken, in order.
    pub(crate) steps: Vec<Taken>,
    /// The tool-policy rule that decided (the last one consulted).
    pub(crate) rule: Option<Arc<str>>,
    /// Why it was refused; `None` when allowed.
    pub(crate) refusal: Option<String>,
    /// The account the connection gate saw usable (what Composio will use), when it looked.
    pub(crate) forwarded_account: Option<String>,
    /// How the invocation arrived, and its arguments and proxy request when kept (for
    /// `explain` to show what a constraint read; never audited).
    pub(crate) carrier: Carrier,
    pub(crate) args: Option<Arc<Value>>,
    pub(crate) proxy: Option<Arc<Value>>,
    /// Why a constraint's evaluation failed, when it did (for `explain`; it may quote
    /// argument values, so it is never audited).
    pub(crate) constraint_error: Option<String>,
}

impl Traced {
    fn new(inv: &Invocation) -> Self {
        Self {
            kind: inv.kind.clone(),
            tool: inv.tool.clone(),
            toolkit: inv.toolkit.clone(),
            account: inv.account.clone(),
            steps: Vec::new(),
            rule: None,
            refusal: None,
            forwarded_account: None,
            carrier: inv.carrier,
            args: inv.args.clone(),
            proxy: inv.proxy.clone(),
            constraint_error: None,
        }
    }

    /// Records `step` with the outcome of `r`; a refusal's reason is kept.
    fn step<T>(&mut self, step: Step, r: Result<T, Error>) -> Result<T, Error> {
        if let Step::CodeToolBan(rule) | Step::Policy(rule) = &step {
            self.rule = Some(rule.clone());
        }
        if let Err(e) = &r {
            self.refusal = Some(e.to_string());
        }
        self.steps.push(Taken {
            step,
            passed: r.is_ok(),
        });
        r
    }

    /// The rules consulted, in order (the last one decided).
    pub(crate) fn rules(&self) -> impl Iterator<Item = &Arc<str>> {
        self.steps.iter().filter_map(|t| match &t.step {
            Step::CodeToolBan(r) | Step::Policy(r) => Some(r),
            _ => None,
        })
    }

    /// Renders the record into the request's audit event, fact by fact in the order the
    /// steps learnt them: the tool, the named account, the rules, the toolkit.
    pub(crate) fn record(&self, audit: &mut Audit) {
        audit.tool(&self.tool);
        for taken in &self.steps {
            match &taken.step {
                Step::NamedAccount => {
                    if let Some(id) = &self.account {
                        audit.account(id);
                    }
                }
                Step::CodeToolBan(rule) | Step::Policy(rule) => audit.rule(rule),
                Step::Constraint(name) => audit.constraint(name, taken.passed),
                Step::Toolkit if taken.passed => {
                    if let Some(tk) = &self.toolkit {
                        audit.toolkit(tk);
                    }
                }
                _ => {}
            }
        }
    }
}

/// What [`decide`] returns: its record of every invocation it decided (in order, the refused
/// one last) and the outcome.
#[derive(Debug)]
pub(crate) struct Decided {
    pub(crate) trace: Vec<Traced>,
    pub(crate) outcome: Result<Verdict, Error>,
}

impl Decided {
    /// Renders the trace into the audit event ([`Traced::record`]).
    pub(crate) fn record(&self, audit: &mut Audit) {
        for t in &self.trace {
            t.record(audit);
        }
    }
}

/// The one decision, applied to every invocation in one fixed order: code-tool ban, tool
/// policy, constraints on arguments, account ownership and toolkit match, proxy switch (`allow_proxy_execute`),
/// connection gate. The first refusal wins; nothing is forwarded unless every invocation is
/// allowed. Returns the outcome with its trace.
///
/// The outcome's refusal is [`Error::ToolNotAllowed`], [`Error::ToolNotFound`],
/// [`Error::ConnectedAccountNotOwned`], [`Error::OperationDisabled`], [`Error::Gate`], ...;
/// lookups that fail as 503.
pub(crate) async fn decide(
    decider: &Decider<'_>,
    identity: &Identity,
    invocations: &[Invocation],
) -> Decided {
    let mut verdict = Verdict::default();
    let mut trace = Vec::with_capacity(invocations.len());
    for inv in invocations {
        let mut t = Traced::new(inv);
        let one = decide_one(decider, identity, inv, &mut t).await;
        if let (Ok(Some(used)), Some(tk)) = (&one, &t.toolkit) {
            t.forwarded_account.clone_from(used);
            if !verdict.toolkits.contains(tk) {
                verdict.toolkits.push(tk.clone());
                verdict.accounts.push((tk.clone(), used.clone()));
            }
        }
        trace.push(t);
        if let Err(e) = one {
            return Decided {
                trace,
                outcome: Err(e),
            };
        }
    }
    if let Some(a) = &decider.approvals {
        if let Err(e) = approve(a, identity, invocations, &mut trace).await {
            return Decided {
                trace,
                outcome: Err(e),
            };
        }
    }
    Decided {
        trace,
        outcome: Ok(verdict),
    }
}

/// Step 6, approvals, for invocations every other step allowed (module docs); `trace[i]` is
/// the record of `invocations[i]`.
async fn approve(
    a: &Approver<'_>,
    identity: &Identity,
    invocations: &[Invocation],
    trace: &mut [Traced],
) -> Result<(), Error> {
    use crate::approvals::{self, Call, Live};
    if a.rules.is_empty() {
        return Ok(());
    }
    let mut asking = Vec::new();
    for (i, inv) in invocations.iter().enumerate() {
        let Some(t) = trace.get(i) else {
            continue;
        };
        let toolkit = t.toolkit.as_deref();
        let carrier = inv.carrier;
        let scope = crate::constraints::Scope {
            subject: &identity.subject,
            claims: &identity.claims,
            tool: &inv.tool,
            toolkit,
            account: inv.account.as_deref(),
            carrier,
            args: inv.args.as_deref(),
            proxy: inv.proxy.as_deref(),
        };
        // Bound once per invocation, and only when a covering rule has an `if`.
        let vars = std::cell::OnceCell::new();
        let found = a
            .rules
            .covering(&inv.tool, toolkit)
            .find(|rule| rule.asks(|| vars.get_or_init(|| scope.bind())));
        if let Some(rule) = found {
            let call = Call {
                subject: &identity.subject,
                tool: &inv.tool,
                toolkit,
                account: inv.account.as_deref(),
                carrier: carrier.as_str(),
                arguments: inv.args.as_deref(),
                trace_id: a.trace_id,
            };
            asking.push((i, rule, call));
        }
    }
    if asking.is_empty() {
        return Ok(());
    }
    let mut outcomes = Vec::with_capacity(asking.len());
    if a.dry_run {
        for (i, rule, call) in &asking {
            outcomes.push((
                *i,
                rule.name.clone(),
                approvals::explain(a.store, a.rules, rule, call).await,
            ));
        }
    } else {
        // Several grants in one request: all are checked before any is used, so a call
        // refused for one missing approval does not spend the others.
        let mut granted = vec![true; asking.len()];
        if asking.len() > 1 {
            let now = a.store.now();
            for (n, (_, _, call)) in asking.iter().enumerate() {
                let key = approvals::binding_key(
                    call.subject,
                    call.tool,
                    call.account,
                    &approvals::argument_hash(call.arguments),
                );
                granted[n] = match a.store.peek(&key).await {
                    Ok(found) => found.is_some_and(|r| r.live(now) == Live::Granted),
                    Err(_) => return Err(Error::ApprovalsUnavailable),
                };
            }
        }
        let all = granted.iter().all(|g| *g);
        for (n, (i, rule, call)) in asking.iter().enumerate() {
            if !all && granted[n] {
                continue;
            }
            let r = approvals::ask(a.store, a.rules, rule, call, a.audit).await;
            outcomes.push((*i, rule.name.clone(), r.map(|_| ())));
        }
    }
    let mut first = None;
    for (i, rule, r) in outcomes {
        if let Some(t) = trace.get_mut(i) {
            if let Err(e) = t.step(Step::Approval(rule), r) {
                first.get_or_insert(e);
            }
        }
    }
    first.map_or(Ok(()), Err)
}

/// A tool-policy decision as a step's outcome.
fn ruled(policy: &ToolPolicy, d: Decision, what: &str) -> (Arc<str>, Result<(), Error>) {
    let rule = policy.label(d.by);
    let r = if d.allowed {
        Ok(())
    } else {
        tracing::info!(tool = what, rule = %rule, "tool policy refused");
        Err(policy.refusal(what, d))
    };
    (rule.clone(), r)
}

/// 2b. The tool lock, on tools (code tools included) of a locked toolkit: a self-contained
/// step, after the tool policy, recorded in the trace.
fn tool_lock_step(
    d: &Decider<'_>,
    inv: &Invocation,
    toolkit: &str,
    definition: Option<&Arc<crate::toollock::Hashed>>,
    t: &mut Traced,
) -> Result<(), Error> {
    let Some(lock) = d.tool_lock else {
        return Ok(());
    };
    if !matches!(inv.kind, Kind::Tool | Kind::Code) {
        return Ok(());
    }
    if !lock.locks_toolkit(toolkit) && lock.toolkit_of(&inv.tool).is_none() {
        return Ok(());
    }
    // The definition Composio answered when the tool's toolkit was looked up (hashed then,
    // once per cache fill) is judged like a listing's, so a drift is caught even when no
    // listing showed it first.
    if let Some(h) = &definition {
        lock.observe_hashed(h);
    }
    t.step(Step::ToolLock, lock.check_execution(&inv.tool, toolkit))
}

/// Decides one invocation into `t`. `Ok(Some(used))`: it uses a connection of `t.toolkit`
/// (with the account the gate saw usable, if it looked); `Ok(None)`: no connection
/// (connecting a toolkit).
async fn decide_one(
    d: &Decider<'_>,
    identity: &Identity,
    inv: &Invocation,
    t: &mut Traced,
) -> Result<Option<Option<String>>, Error> {
    let policy = d.tool_policy;
    let claims = &identity.claims;
    let subject = &identity.subject;
    let conns = d.connections;
    // 0. The kill switch's tool rules, before anything is looked up.
    t.step(Step::KillSwitchTool, d.kill_switch.check_tool(&inv.tool))?;
    if let Some(id) = &inv.account {
        let instant = id.eq_ignore_ascii_case(INSTANT_ACCOUNT);
        t.step(
            Step::NamedAccount,
            if instant {
                Err(Error::ConnectedAccountNotOwned)
            } else {
                Ok(())
            },
        )?;
    }

    // 1. Code-tool ban, by name, before anything is looked up.
    if inv.kind == Kind::Code || toolpolicy::is_code_tool(&inv.tool) {
        let (rule, r) = ruled(
            policy,
            policy.decide(claims, META_TOOLKIT, &inv.tool),
            &inv.tool,
        );
        t.step(Step::CodeToolBan(rule), r)?;
    }

    // What the invocation acts on: Composio's word for tools and triggers; the carrier's for
    // proxies and connection management (or the named account's toolkit).
    let mut owned: Option<Account> = None;
    let looked_up = match inv.kind {
        Kind::Tool | Kind::Code => conns.tool(&inv.tool).await,
        Kind::Trigger => conns.trigger(&inv.tool).await,
        Kind::Proxy | Kind::ManageConnections => match &inv.toolkit {
            Some(tk) => Ok(ToolInfo::for_toolkit(tk)),
            None => match inv.account.as_deref() {
                None => Err(Error::BodyInvalid(
                    "proxy execution needs the user's connected_account_id".into(),
                )),
                Some(id) => match conns.owned_account(subject, id).await {
                    Ok(Some(a)) => {
                        let info = ToolInfo::for_toolkit(&a.toolkit);
                        owned = Some(a);
                        Ok(info)
                    }
                    Ok(None) => Err(Error::ConnectedAccountNotOwned),
                    Err(e) => Err(e),
                },
            },
        },
    };
    if let Ok(info) = &looked_up {
        t.toolkit = Some(info.toolkit.clone());
    }
    let info = t.step(Step::Toolkit, looked_up)?;
    // The kill switch's toolkit rules, on Composio's toolkit of the tool.
    t.step(
        Step::KillSwitchToolkit,
        d.kill_switch.check_toolkit(&info.toolkit),
    )?;

    // 2. Tool policy.
    let (rule, r) = match inv.kind {
        Kind::Tool | Kind::Code | Kind::Trigger => ruled(
            policy,
            policy.decide(claims, &info.toolkit, &inv.tool),
            &inv.tool,
        ),
        Kind::Proxy => {
            let dec = policy.decide(claims, &info.toolkit, PROXY_EXECUTE);
            let what = if dec.allowed {
                PROXY_EXECUTE.to_owned()
            } else {
                format!("{PROXY_EXECUTE} ({})", info.toolkit)
            };
            ruled(policy, dec, &what)
        }
        Kind::ManageConnections => ruled(
            policy,
            policy.decide_toolkit(claims, &info.toolkit),
            &info.toolkit,
        ),
    };
    t.step(Step::Policy(rule), r)?;
    tool_lock_step(d, inv, &info.toolkit, info.definition.as_ref(), t)?;

    // 2c. Constraints on the arguments: every one that applies must hold (a rule's allow
    // never skips one). Nothing is bound unless one applies.
    if inv.kind != Kind::ManageConnections && !d.constraints.is_empty() {
        check_constraints(d, identity, inv, &info.toolkit, t)?;
    }

    // 3. Account ownership and toolkit match.
    if let Some(id) = &inv.account {
        let a = match owned.take() {
            Some(a) => Ok(a),
            None => match conns.owned_account(subject, id).await {
                Ok(Some(a)) => Ok(a),
                Ok(None) => Err(Error::ConnectedAccountNotOwned),
                Err(e) => Err(e),
            },
        };
        let a = a.and_then(|a| {
            if a.toolkit.eq_ignore_ascii_case(&info.toolkit) {
                Ok(a)
            } else {
                Err(Error::BodyInvalid(format!(
                    "connected account {id} is an account of {}, not of {}",
                    a.toolkit, info.toolkit
                )))
            }
        });
        owned = Some(t.step(Step::Ownership, a)?);
    }

    // 4. Proxy switch.
    if inv.kind == Kind::Proxy {
        let r = if d.allow_proxy_execute {
            Ok(())
        } else {
            Err(Error::OperationDisabled("proxy_execute"))
        };
        t.step(Step::ProxySwitch, r)?;
    }

    // 5. Connection gate.
    if inv.kind == Kind::ManageConnections {
        return Ok(None);
    }
    // A connection Composio's last answer showed dead is refused before Composio is asked.
    let gated = conns.gating() || inv.kind == Kind::Proxy;
    if gated && !info.no_auth {
        let r = match d.broken.refusal(conns, subject, &info) {
            Some(refusal) => Err(refusal),
            None => Ok(()),
        };
        t.step(Step::BrokenMark, r)?;
    }
    let used = match owned {
        Some(a) => {
            // A raw proxy request never runs with an unusable account, gating on or off.
            if gated && !info.no_auth {
                let r = if a.usable() {
                    Ok(())
                } else {
                    Err(conns.refusal(&info, std::slice::from_ref(&a)))
                };
                t.step(Step::ConnectionGate, r)?;
            }
            Some(a.id)
        }
        None if conns.gating() && !info.no_auth => {
            let r = match conns.accounts(subject, &info.toolkit).await {
                Ok(accounts) => match accounts.iter().find(|a| a.usable()) {
                    Some(a) => Ok(a.id.clone()),
                    None => Err(conns.refusal(&info, &accounts)),
                },
                Err(e) => Err(e),
            };
            Some(t.step(Step::ConnectionGate, r)?)
        }
        None => None,
    };
    Ok(Some(used))
}

/// Step 2c: the constraints that apply to `inv` (of `toolkit`), in order; the first that
/// does not hold (false, an evaluation error, a cost overrun) refuses.
fn check_constraints(
    d: &Decider<'_>,
    identity: &Identity,
    inv: &Invocation,
    toolkit: &str,
    t: &mut Traced,
) -> Result<(), Error> {
    let mut vars = None;
    for c in d.constraints.applying(&inv.tool, toolkit) {
        let outcome = match &inv.args {
            // A constraint applies to a tool whose arguments the carrier did not keep (its
            // slug does not start with the toolkit's name): refused rather than skipped.
            None => Err("the call's arguments were not read".to_owned()),
            Some(args) => {
                let vars = vars.get_or_insert_with(|| {
                    Scope {
                        subject: &identity.subject,
                        claims: &identity.claims,
                        tool: &inv.tool,
                        toolkit: Some(toolkit),
                        account: inv.account.as_deref(),
                        carrier: inv.carrier,
                        args: Some(args),
                        proxy: inv.proxy.as_deref(),
                    }
                    .bind()
                });
                c.check(vars).map_err(|e| e.to_string())
            }
        };
        let r = match outcome {
            Ok(true) => Ok(()),
            Ok(false) => Err(c.refusal()),
            Err(e) => {
                // The reason may quote argument values: kept for `explain`, not logged.
                t.constraint_error = Some(e);
                Err(c.refusal())
            }
        };
        if r.is_err() {
            tracing::info!(tool = %inv.tool, constraint = %c.name, "constraint refused");
        }
        t.step(Step::Constraint(c.name.clone()), r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
