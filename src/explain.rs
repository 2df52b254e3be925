//! `entitygate explain`: a dry run of one request against a configuration.
//!
//! The request goes through the gateway's real flow ([`crate::proxy`]): the same token
//! verification, route table, carrier extraction, one decision per invocation and identity
//! pinning. Nothing is forwarded: the flow stops where it would send the request to Composio,
//! and what it would have sent is shown. What the decision needs from Composio (a tool's
//! toolkit, the subject's connection status, who owns an account or a session) is asked
//! read-only with `--live`; without it, Composio is not contacted, each such answer is assumed
//! favourable and listed as a requirement, so the explanation shows what the call needs.
//!
//! The invocations come from the decision's own trace ([`crate::invocation::Traced`]), and
//! the request's other facts (route, identity pinning) from the audit record it writes
//! ([`crate::audit::Audit`]), kept in order for the dry run: the explanation cannot drift
//! from what the gateway decides.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde::Serialize;
use serde_json::Value;

use crate::audit::Audit;
use crate::config::{Config, ConfigError, Env};
use crate::proxy::{DryRun, Forwarded};

/// One request to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    /// The method.
    pub method: Method,
    /// The path and query, as the SDK would send it.
    pub target: String,
    /// The caller's JWT.
    pub token: String,
    /// The JSON body, if any.
    pub body: Option<Vec<u8>>,
    /// Ask Composio (read-only) what the decision needs, instead of assuming it.
    pub live: bool,
}

/// What the gateway would do with a request, step by step.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    /// `METHOD target`.
    pub request: String,
    /// Whether Composio was asked (read-only).
    pub live: bool,
    /// The verified subject, when the token verified.
    pub subject: Option<String>,
    /// The token's claims the policy reads (all of them), when it verified.
    pub claims: Option<Value>,
    /// The matched route pattern.
    pub route: Option<String>,
    /// The route's policy.
    pub policy: Option<String>,
    /// The invocations decided, in order (nested meta tools included), each with what
    /// decided it.
    pub invocations: Vec<InvocationOut>,
    /// Every fact the decision recorded, in order: `[what, value]`.
    pub steps: Vec<(String, String)>,
    /// `allow`, or the refusal's slug.
    pub decision: String,
    /// Composio's error code of the refusal (0 when allowed).
    pub code: u32,
    /// The HTTP status the caller would get (for an allowed request: Composio's to give).
    pub status: Option<u16>,
    /// The refusal's message.
    pub message: Option<String>,
    /// The request that would reach Composio, after pinning.
    pub forwarded: Option<ForwardedOut>,
    /// What the call needs from Composio that was not asked (without `--live`).
    pub requirements: Vec<String>,
    /// Whether the kill switch's deny rules were consulted, and how many there were.
    pub kill_switch: String,
    /// When the request named another user: what it asked for, where, and what the gateway
    /// forwards instead (`None` when it was refused).
    pub identity: Option<IdentityOut>,
}

/// The user a request asked for, against the user the gateway forwards.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityOut {
    /// Each user id the request named that the gateway did not forward as sent: where
    /// (`body /user_id`, `query user_ids`) and the value.
    pub asked: Vec<(String, Value)>,
    /// The subject every pinned field carries instead; `None` when the request was refused.
    pub forwarded_as: Option<String>,
}

impl IdentityOut {
    /// One line: "asked for `bob` (body /user_id); forwarded as `alice`".
    fn sentence(&self) -> String {
        let asked: Vec<String> = self
            .asked
            .iter()
            .map(|(at, v)| match v {
                Value::String(s) => format!("`{s}` ({at})"),
                other => format!("{other} ({at})"),
            })
            .collect();
        let asked = if asked.is_empty() {
            "another user".to_owned()
        } else {
            asked.join(", ")
        };
        match &self.forwarded_as {
            Some(sub) => format!("asked for {asked}; forwarded as `{sub}`"),
            None => format!("asked for {asked}; refused (on_identity_mismatch = \"reject\")"),
        }
    }
}

/// What the request asked for, found by comparing it with what is forwarded: every user-id
/// field of the request (query, and body at any depth) that does not reach Composio as sent.
/// Read from the two requests themselves, not from the pinning code, so it shows what
/// happened rather than what was meant to. Without a forwarded request (a refusal) the
/// request's own user ids that are not the subject are listed.
fn identity_asked(
    req: &ExplainRequest,
    forwarded: Option<&ForwardedOut>,
    subject: &str,
) -> Vec<(String, Value)> {
    let mut asked = Vec::new();
    let query = |target: &str| -> Vec<(String, String)> {
        target
            .split_once('?')
            .map(|(_, q)| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default()
    };
    let sent_query = forwarded.map(|f| query(&f.target));
    for (k, v) in query(&req.target) {
        if !crate::rewrite::is_identity_key(crate::rewrite::query_base_key(&k)) {
            continue;
        }
        let kept = match &sent_query {
            Some(sent) => sent.iter().any(|(sk, sv)| *sk == k && *sv == v),
            None => v == subject,
        };
        if !kept {
            asked.push((format!("query {k}"), Value::String(v)));
        }
    }
    let body = req
        .body
        .as_deref()
        .and_then(|b| serde_json::from_slice::<Value>(b).ok());
    if let Some(body) = body {
        let sent = forwarded.map(|f| f.body.clone().unwrap_or(Value::Null));
        let mut at = String::new();
        collect_identity(&body, &mut at, &mut |pointer, v| {
            let kept = match &sent {
                Some(sent) => sent.pointer(pointer) == Some(v),
                // Refused: the request's own word, top level only (deeper user ids are
                // tool arguments, which no decision reads as the caller's identity).
                None => {
                    pointer.matches('/').count() > 1 || crate::rewrite::names_only_value(v, subject)
                }
            };
            if !kept {
                asked.push((format!("body {pointer}"), v.clone()));
            }
        });
    }
    asked
}

/// Calls `f` with the JSON pointer and value of every user-id field in `v`.
fn collect_identity(v: &Value, at: &mut String, f: &mut dyn FnMut(&str, &Value)) {
    let len = at.len();
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push('/');
                at.push_str(&k.replace('~', "~0").replace('/', "~1"));
                if crate::rewrite::is_identity_key(k) {
                    f(at, child);
                } else {
                    collect_identity(child, at, f);
                }
                at.truncate(len);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                at.push('/');
                at.push_str(&i.to_string());
                collect_identity(child, at, f);
                at.truncate(len);
            }
        }
        _ => {}
    }
}

/// One invocation as the decision saw it: its trace ([`crate::invocation::Traced`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct InvocationOut {
    /// The tool (or trigger type, or `PROXY_EXECUTE`).
    pub tool: String,
    /// Its toolkit, once known.
    pub toolkit: Option<String>,
    /// The connected account it names.
    pub connected_account_id: Option<String>,
    /// The tool-policy rules consulted, in order (the last one decided).
    pub rules: Vec<String>,
    /// Each step of the decision taken, in order, with its outcome (`passed`, `refused`).
    pub steps: Vec<(String, String)>,
    /// Why it was refused; `None` when allowed.
    pub refusal: Option<String>,
    /// The account the connection gate found usable, when it looked one up.
    pub forwarded_account: Option<String>,
    /// Each constraint on arguments that applied, in order, with its result and the values
    /// it read (shown to the operator here; never audited).
    pub constraints: Vec<ConstraintOut>,
}

/// One constraint on arguments checked for an invocation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConstraintOut {
    /// The constraint's name.
    pub name: String,
    /// `held` or `refused`.
    pub result: String,
    /// Why its evaluation failed (a missing field, a wrong type, the cost bound), if it did.
    pub error: Option<String>,
    /// The variable paths its expressions read and their values (`null`: absent).
    pub read: Vec<(String, Value)>,
}

impl ConstraintOut {
    fn new(
        t: &crate::invocation::Traced,
        c: &crate::constraints::Constraint,
        passed: bool,
        identity: Option<&crate::auth::Identity>,
    ) -> Self {
        let empty = serde_json::Map::new();
        let scope = crate::constraints::Scope {
            subject: identity.map_or("", |i| &i.subject),
            claims: identity.map_or(&empty, |i| &i.claims),
            tool: &t.tool,
            toolkit: t.toolkit.as_deref(),
            account: t.account.as_deref(),
            carrier: t.carrier,
            args: t.args.as_deref(),
            proxy: t.proxy.as_deref(),
        };
        let mut read: Vec<(String, Value)> = Vec::new();
        for r in c
            .when
            .iter()
            .chain(std::iter::once(&c.require))
            .flat_map(|e| e.references())
        {
            let path = r.path();
            if !read.iter().any(|(p, _)| *p == path) {
                read.push((path, scope.lookup(r).unwrap_or(Value::Null)));
            }
        }
        Self {
            name: c.name.to_string(),
            result: if passed { "held" } else { "refused" }.to_owned(),
            error: if passed {
                None
            } else {
                t.constraint_error.clone()
            },
            read,
        }
    }
}

impl InvocationOut {
    fn from_trace(
        t: &crate::invocation::Traced,
        constraints: &crate::constraints::Constraints,
        identity: Option<&crate::auth::Identity>,
    ) -> Self {
        let constraints = t
            .steps
            .iter()
            .filter_map(|s| match &s.step {
                crate::invocation::Step::Constraint(name) => constraints
                    .get(name)
                    .map(|c| ConstraintOut::new(t, c, s.passed, identity)),
                _ => None,
            })
            .collect();
        Self {
            constraints,
            tool: t.tool.clone(),
            toolkit: t.toolkit.clone(),
            connected_account_id: t.account.clone(),
            rules: t.rules().map(|r| r.to_string()).collect(),
            steps: t
                .steps
                .iter()
                .map(|s| {
                    let outcome = if s.passed { "passed" } else { "refused" };
                    (s.step.name().to_owned(), outcome.to_owned())
                })
                .collect(),
            refusal: t.refusal.clone(),
            forwarded_account: t.forwarded_account.clone(),
        }
    }
}

/// The request that would be sent.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardedOut {
    /// The method.
    pub method: String,
    /// The path and query.
    pub target: String,
    /// The body after pinning.
    pub body: Option<Value>,
}

/// Explains `req` against `config`, with secrets from `env`.
///
/// # Errors
/// When the configuration does not build.
pub async fn explain(
    config: &Config,
    env: &dyn Env,
    req: &ExplainRequest,
) -> Result<Explanation, ConfigError> {
    // The CLI reads the kill switch's store when no gateway holds it (and never creates it).
    let kill_switch = match config.state.path.as_ref().filter(|p| p.is_file()) {
        Some(path) => match crate::killswitch::KillSwitch::open(path) {
            Ok(ks) => Some(Arc::new(ks)),
            Err(e) => {
                tracing::warn!(error = %e, "kill switch not consulted (ask the running gateway: POST /explain)");
                None
            }
        },
        None => None,
    };
    explain_with(config, env, req, kill_switch).await
}

/// [`explain`] with the running gateway's kill switch (`POST /explain`); `None`: none
/// consulted (said in the explanation).
///
/// # Errors
/// When the configuration does not build.
pub async fn explain_with(
    config: &Config,
    env: &dyn Env,
    req: &ExplainRequest,
    kill_switch: Option<Arc<crate::killswitch::KillSwitch>>,
) -> Result<Explanation, ConfigError> {
    // A dry run touches nothing the running gateway owns: no audit file (a second writer
    // would fork its chain), no exporter, no audit-job store.
    let mut config = config.clone();
    config.audit.path = None;
    config.audit.hmac_key_env = None;
    config.audit.hmac_key_file = None;
    config.telemetry.otlp_endpoint = None;
    config.audit_job = None;
    // The running gateway holds the store; the caller lends its rules (`explain_with`).
    config.state.path = None;
    let config = &config;
    let (mut shared, tasks) = crate::proxy::build::build_shared(config, env, None).await?;
    for t in tasks.into_iter().flatten() {
        t.abort();
    }
    let kill_switch_note = match kill_switch {
        Some(ks) => {
            let note = format!("consulted ({} deny rules)", ks.rules().len());
            shared.kill_switch = ks;
            note
        }
        None => "not consulted: the store is held by the running gateway or unset (POST /explain on its admin listener consults it)".to_owned(),
    };
    let identity = shared.auth.authenticate(&req.token).await.ok();
    if !req.live {
        let subject: Arc<str> = identity
            .as_ref()
            .map_or_else(|| Arc::from(""), |i| i.subject.clone());
        shared.connections = Arc::new(crate::connections::Connections::assuming(
            shared.upstream.clone(),
            config.connections.clone(),
            subject,
        ));
    }
    let mut builder = Request::builder()
        .method(req.method.clone())
        .uri(&req.target)
        .header("x-api-key", &req.token);
    if req.body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    let path = req.target.split('?').next().unwrap_or_default().to_owned();
    let mut audit = Audit::new(&req.method, &path);
    audit.keep_journal();
    let dry = DryRun::default();
    let shared = Arc::new(shared);
    let out = match builder.body(Full::new(Bytes::from(req.body.clone().unwrap_or_default()))) {
        Ok(r) => crate::proxy::dry_run(&shared, r, &mut audit, &dry).await,
        Err(_) => Err(crate::Error::RequestTargetInvalid),
    };
    let forwarded = dry
        .forwarded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let (decision, code, status, message) = match (&out, &forwarded) {
        (_, Some(_)) => ("allow".to_owned(), 0, None, None),
        (Ok(resp), None) => ("allow".to_owned(), 0, Some(resp.status().as_u16()), None),
        (Err(e), None) => (
            e.slug().to_owned(),
            e.code(),
            Some(e.status().as_u16()),
            Some(e.to_string()),
        ),
    };
    let invocations = dry
        .decided
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .map(|t| InvocationOut::from_trace(t, &shared.constraints, identity.as_ref()))
        .collect();
    let steps: Vec<(String, String)> = audit
        .journal()
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    let mut requirements = shared.connections.assumptions();
    if req.live {
        requirements.clear();
    }
    let forwarded = forwarded.map(forwarded_out);
    let mut steps = steps;
    let identity_out = match (steps.iter().any(|(k, _)| k == "identity"), &identity) {
        (true, Some(id)) => {
            let out = IdentityOut {
                asked: identity_asked(req, forwarded.as_ref(), &id.subject),
                forwarded_as: forwarded.as_ref().map(|_| id.subject.to_string()),
            };
            // The journal's one identity step says what was asked and what is forwarded.
            for (k, v) in &mut steps {
                if k == "identity" {
                    *v = out.sentence();
                }
            }
            Some(out)
        }
        _ => None,
    };
    let find = |what: &str| {
        steps
            .iter()
            .find(|(k, _)| k == what)
            .map(|(_, v)| v.clone())
    };
    Ok(Explanation {
        request: format!("{} {}", req.method, req.target),
        live: req.live,
        subject: identity.as_ref().map(|i| i.subject.to_string()),
        claims: identity.map(|i| Value::Object((*i.claims).clone())),
        route: find("route"),
        policy: find("policy"),
        invocations,
        steps,
        decision,
        code,
        status,
        message,
        forwarded,
        requirements,
        kill_switch: kill_switch_note,
        identity: identity_out,
    })
}

fn forwarded_out(f: Forwarded) -> ForwardedOut {
    ForwardedOut {
        method: f.method,
        target: f.path_and_query,
        body: f.body.map(|b| {
            serde_json::from_slice(&b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned()))
        }),
    }
}

impl Explanation {
    /// The explanation for people.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "request      {}", self.request);
        match (&self.subject, &self.claims) {
            (Some(sub), Some(claims)) => {
                let _ = writeln!(s, "identity     {sub} (token verified)");
                let _ = writeln!(s, "claims       {claims}");
            }
            _ => {
                let _ = writeln!(s, "identity     none: the token did not verify");
            }
        }
        if let Some(route) = &self.route {
            let _ = writeln!(
                s,
                "route        {route} (policy {})",
                self.policy.as_deref().unwrap_or("-")
            );
        }
        if !self.invocations.is_empty() {
            let _ = writeln!(s, "invocations");
            for (i, inv) in self.invocations.iter().enumerate() {
                let _ = write!(s, "  {:>2}. {}", i + 1, inv.tool);
                if let Some(tk) = &inv.toolkit {
                    let _ = write!(s, " (toolkit {tk})");
                }
                if let Some(a) = &inv.connected_account_id {
                    let _ = write!(s, " account {a}");
                }
                if let Some(rule) = inv.rules.last() {
                    let _ = write!(s, ": rule {rule}");
                }
                if let Some(why) = &inv.refusal {
                    let _ = write!(s, ": refused: {why}");
                }
                let _ = writeln!(s);
                for c in &inv.constraints {
                    let _ = write!(s, "      constraint \"{}\": {}", c.name, c.result);
                    if let Some(e) = &c.error {
                        let _ = write!(s, " ({e})");
                    }
                    let _ = writeln!(s);
                    for (path, value) in &c.read {
                        let _ = writeln!(s, "        {path} = {value}");
                    }
                }
            }
        }
        let _ = writeln!(s, "kill switch  {}", self.kill_switch);
        let _ = writeln!(s, "steps");
        for (i, (what, value)) in self.steps.iter().enumerate() {
            let _ = writeln!(s, "  {:>2}. {what:<22} {value}", i + 1);
        }
        if self.decision == "allow" {
            let _ = writeln!(s, "decision     allow");
        } else {
            let _ = writeln!(
                s,
                "decision     refused: {} (code {}, HTTP {}): {}",
                self.decision,
                self.code,
                self.status.unwrap_or(0),
                self.message.as_deref().unwrap_or("")
            );
        }
        match &self.forwarded {
            Some(f) => {
                let _ = writeln!(s, "would send   {} {}", f.method, f.target);
                if let Some(body) = &f.body {
                    let _ = writeln!(s, "body         {body}");
                }
            }
            None => {
                let _ = writeln!(s, "would send   nothing to Composio");
            }
        }
        if self.live {
            let _ = writeln!(s, "composio     asked read-only (--live)");
        } else if !self.requirements.is_empty() {
            let _ = writeln!(
                s,
                "requires     (Composio not asked; run with --live to check)"
            );
            for r in &self.requirements {
                let _ = writeln!(s, "  - {r}");
            }
        }
        s
    }
}
