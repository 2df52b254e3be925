//! CEL expressions over a tool call: the language of `[[policy.constraints]]` (issue 27) and
//! of approvals' `if` (issue 28), owned here so both read the same variables the same way.
//!
//! This module owns three things, and nothing about which constraint applies to which tool:
//! - [`compile`]: an expression is compiled once, at load and reload, with the `cel` crate
//!   (cel-rust). Compiling refuses, with the line and column: a syntax error, a variable that
//!   is not one of [`VARIABLES`] (nor bound by a macro such as `.all(x, ...)`), a function
//!   outside [`FUNCTIONS`] and [`STRING_METHODS`], a `matches` whose pattern is not a
//!   literal, and an expression over the static bounds ([`MAX_SOURCE`] bytes, [`MAX_NODES`] nodes, [`MAX_LOOP_DEPTH`]
//!   nested macros).
//! - [`Scope`]: the variables of one invocation (`subject`, `claims`, `tool`, `toolkit`,
//!   `account`, `carrier`, `args`, `proxy`), bound once into [`Vars`] and shared by every
//!   expression evaluated on that invocation.
//! - [`Expr::eval`]: evaluation to a boolean, fail closed: a result that is not a boolean,
//!   an evaluation error (a missing field, a wrong type) and a cost over [`MAX_COST`] are
//!   errors, which callers treat as a refusal.
//!
//! # Cost bound
//! cel-rust evaluates without a step counter, so the bound is computed before evaluating.
//! The functions allowed are linear in their inputs (no `replace`, `format` or `join`, which
//! can grow strings; `matches` only with a literal pattern, compiled by the linear-time
//! `regex` crate). Each node of the expression is evaluated at most once per iteration of
//! the macros it sits in, and a macro iterates over at most the `n` values of the variables
//! (or a list built from them); so `nodes × (n + 1)^depth` (times the bytes of the strings
//! when a `+` may concatenate inside a macro) bounds the work. [`Expr::eval`] refuses without
//! evaluating when that estimate is over [`MAX_COST`].

use std::fmt;
use std::sync::{Arc, OnceLock};

use cel::common::ast::{EntryExpr, Expr as Node, LiteralValue};
use cel::{Context, Env, IdedExpr, Program, Value as Cel};
use serde_json::{Map, Value};

use crate::config::{ConfigError, ConstraintConfig};
use crate::error::Error;
use crate::toolpolicy;

/// The variables an expression may read.
pub(crate) const VARIABLES: &[&str] = &[
    "subject", "claims", "tool", "toolkit", "account", "carrier", "args", "proxy",
];

/// The functions and operators an expression may call (macros — `all`, `exists`,
/// `exists_one`, `map`, `filter`, `has` — are expanded at compile time). All linear in their
/// inputs (module docs).
pub(crate) const FUNCTIONS: &[&str] = &[
    // operators
    "_&&_",
    "_||_",
    "!_",
    "-_",
    "_?_:_",
    "_==_",
    "_!=_",
    "_<_",
    "_<=_",
    "_>_",
    "_>=_",
    "_+_",
    "_-_",
    "_*_",
    "_/_",
    "_%_",
    "_[_]",
    "_[?_]",
    "_?._",
    "@in",
    "@not_strictly_false",
    // standard functions
    "size",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "type",
    "dyn",
    // optionals
    "orValue",
    "or",
    "hasValue",
    "value",
    "optional.of",
    "optional.none",
    "optional.ofNonZeroValue",
];

/// The string methods an expression may call, besides [`FUNCTIONS`]: the standard ones and
/// the strings extension (ASCII case folding, trimming, splitting); a receiver of another
/// type fails to evaluate. `check-config --live` reads this list too, to flag one called on a parameter that is not a string.
pub(crate) const STRING_METHODS: &[&str] = &[
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "lowerAscii",
    "upperAscii",
    "trim",
    "split",
    "indexOf",
    "lastIndexOf",
    "substring",
    "charAt",
];

/// Longest expression source accepted, in bytes.
pub(crate) const MAX_SOURCE: usize = 4096;
/// Most nodes in an expression, macros expanded.
pub(crate) const MAX_NODES: usize = 512;
/// Deepest nesting of macros (`a.all(x, x.b.exists(y, ...))` is 2).
pub(crate) const MAX_LOOP_DEPTH: u32 = 2;
/// Largest cost estimate evaluated (module docs); above it, the evaluation is refused.
pub(crate) const MAX_COST: u64 = 10_000_000;

/// Why an expression was not compiled, and where (1-based line and column, in characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError {
    pub(crate) line: u32,
    pub(crate) column: u32,
    pub(crate) message: String,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Why an evaluation did not give a boolean. Every one is a refusal (fail closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EvalError {
    /// The cost estimate is over [`MAX_COST`]: not evaluated.
    Cost { estimate: u64 },
    /// CEL's evaluation failed (a missing field, a type with no such function, ...).
    Failed(String),
    /// The result is not a boolean (its CEL type).
    NotBool(String),
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cost { estimate } => write!(
                f,
                "evaluation would cost about {estimate} steps, over the bound of {MAX_COST}"
            ),
            Self::Failed(m) => write!(f, "evaluation failed: {m}"),
            Self::NotBool(t) => write!(f, "the expression gave a {t}, not a bool"),
        }
    }
}

/// How an expression uses a variable path (`args.cc`, `claims.channels`, `proxy.method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Usage {
    /// Read as a value (compared, passed to a function, ...).
    Read,
    /// The receiver of this method (`args.to.endsWith(...)`).
    Method(String),
    /// Iterated by a macro (`args.cc.all(...)`): a list or a map.
    Iterated,
}

/// A variable path an expression reads: `args.cc` is `("args", ["cc"])`. Only the leading
/// chain of field selections is kept (`args.a[0].b` is `args.a`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reference {
    pub(crate) variable: String,
    pub(crate) fields: Vec<String>,
    /// Selected with `.?` (or tested with `has`) somewhere on the path: absence is handled.
    pub(crate) optional: bool,
    pub(crate) usage: Usage,
    pub(crate) line: u32,
    pub(crate) column: u32,
}

impl Reference {
    /// `args.cc`.
    pub(crate) fn path(&self) -> String {
        let mut s = self.variable.clone();
        for f in &self.fields {
            s.push('.');
            s.push_str(f);
        }
        s
    }
}

/// A compiled expression.
pub(crate) struct Expr {
    source: Arc<str>,
    program: Program,
    nodes: u64,
    loop_depth: u32,
    concat_in_loop: bool,
    references: Vec<Reference>,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expr")
            .field("source", &self.source)
            .finish()
    }
}

/// The one CEL environment: the standard library, optionals, the strings extension.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        // The extension only adds overloads to a fresh environment: it cannot clash.
        if let Err(e) = env.add_extension(cel::extensions::strings) {
            tracing::error!(error = %e, "CEL strings extension not registered");
        }
        Arc::new(env)
    })
}

/// Compiles `source` (module docs: what is refused).
///
/// # Errors
/// [`CompileError`] with the position of the first problem.
pub(crate) fn compile(source: &str) -> Result<Expr, CompileError> {
    if source.len() > MAX_SOURCE {
        return Err(CompileError {
            line: 1,
            column: 1,
            message: format!("the expression is longer than {MAX_SOURCE} bytes"),
        });
    }
    if source.trim().is_empty() {
        return Err(CompileError {
            line: 1,
            column: 1,
            message: "the expression is empty".into(),
        });
    }
    let program = env().compile(source).map_err(|errs| {
        let first = errs.errors.first();
        CompileError {
            line: first.map_or(1, |e| u32::try_from(e.pos.0.max(1)).unwrap_or(1)),
            column: first.map_or(1, |e| u32::try_from(e.pos.1.max(1)).unwrap_or(1)),
            message: first.map_or_else(|| "syntax error".into(), |e| e.msg.clone()),
        }
    })?;
    let mut walk = Walk {
        program: &program,
        source,
        bound: Vec::new(),
        nodes: 0,
        loop_depth: 0,
        concat_in_loop: false,
        references: Vec::new(),
    };
    walk.node(program.expression(), 0, Usage::Read)?;
    if walk.nodes > MAX_NODES {
        return Err(CompileError {
            line: 1,
            column: 1,
            message: format!("the expression has more than {MAX_NODES} nodes"),
        });
    }
    let (nodes, loop_depth, concat_in_loop, references) = (
        walk.nodes as u64,
        walk.loop_depth,
        walk.concat_in_loop,
        walk.references,
    );
    Ok(Expr {
        source: source.into(),
        program,
        nodes,
        loop_depth,
        concat_in_loop,
        references,
    })
}

/// One pass over the compiled tree: checks, measures and records references.
struct Walk<'a> {
    program: &'a Program,
    source: &'a str,
    /// Variables bound by the enclosing macros.
    bound: Vec<String>,
    nodes: usize,
    loop_depth: u32,
    concat_in_loop: bool,
    references: Vec<Reference>,
}

impl Walk<'_> {
    fn at(&self, id: u64, message: String) -> CompileError {
        let (line, column) = self.position(id);
        CompileError {
            line,
            column,
            message,
        }
    }

    /// 1-based line and column (in characters) of node `id`.
    fn position(&self, id: u64) -> (u32, u32) {
        let Some((start, _)) = self.program.source_info().offset_for(id) else {
            return (1, 1);
        };
        let (mut line, mut column) = (1u32, 1u32);
        for c in self.source.chars().take(start as usize) {
            if c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        (line, column)
    }

    /// The variable path `e` is (`args.a.b`, `args.?a`), if it is one.
    fn path(&self, e: &IdedExpr) -> Option<(String, Vec<String>, bool)> {
        match &e.expr {
            Node::Ident(name) if !self.bound.contains(name) => Some((name.clone(), vec![], false)),
            Node::Select(s) => {
                let (v, mut fields, opt) = self.path(&s.operand)?;
                fields.push(s.field.clone());
                Some((v, fields, opt || s.test))
            }
            Node::Call(c) if c.func_name == "_?._" && c.target.is_none() && c.args.len() == 2 => {
                let (v, mut fields, _) = self.path(&c.args[0])?;
                let Node::Literal(LiteralValue::String(f)) = &c.args[1].expr else {
                    return None;
                };
                fields.push(f.inner().to_owned());
                Some((v, fields, true))
            }
            _ => None,
        }
    }

    fn reference(&mut self, e: &IdedExpr, usage: Usage) -> bool {
        let Some((variable, fields, optional)) = self.path(e) else {
            return false;
        };
        // Where the path starts (its variable), not where its last `.` is.
        let mut root = e;
        loop {
            match &root.expr {
                Node::Select(s) => root = &s.operand,
                Node::Call(c) if c.func_name == "_?._" && !c.args.is_empty() => root = &c.args[0],
                _ => break,
            }
        }
        let (line, column) = self.position(root.id);
        self.references.push(Reference {
            variable,
            fields,
            optional,
            usage,
            line,
            column,
        });
        true
    }

    fn node(&mut self, e: &IdedExpr, depth: u32, usage: Usage) -> Result<(), CompileError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.at(
                e.id,
                format!("the expression has more than {MAX_NODES} nodes"),
            ));
        }
        // A path is recorded once, as a whole, with how it is used; its parts are still
        // checked below (the variable must be known).
        let is_path = matches!(&e.expr, Node::Select(_))
            || matches!(&e.expr, Node::Call(c) if c.func_name == "_?._");
        if is_path {
            self.reference(e, usage);
        }
        match &e.expr {
            Node::Ident(name) => {
                if !self.bound.contains(name) && !VARIABLES.contains(&name.as_str()) {
                    return Err(self.at(
                        e.id,
                        format!(
                            "unknown variable `{name}` (the variables are {})",
                            VARIABLES.join(", ")
                        ),
                    ));
                }
                if !is_path && !self.bound.contains(name) {
                    self.reference(e, Usage::Read);
                }
            }
            Node::Select(s) => self.walk_quiet(&s.operand, depth)?,
            Node::Call(c) => {
                let func = c.func_name.as_str();
                if !FUNCTIONS.contains(&func) && !STRING_METHODS.contains(&func) {
                    return Err(self.at(
                        e.id,
                        format!("unknown or disallowed function `{}`", c.func_name),
                    ));
                }
                if c.func_name == "_+_" && depth > 0 {
                    self.concat_in_loop = true;
                }
                if c.func_name == "matches"
                    && !matches!(
                        c.args.last().map(|a| &a.expr),
                        Some(Node::Literal(LiteralValue::String(_)))
                    )
                {
                    return Err(self.at(
                        e.id,
                        "`matches` needs a literal pattern (a string in quotes)".into(),
                    ));
                }
                if let Some(t) = &c.target {
                    self.node(t, depth, Usage::Method(c.func_name.clone()))?;
                }
                if c.func_name == "_?._" {
                    // The field name is a literal; only the operand is an expression.
                    if let Some(first) = c.args.first() {
                        self.walk_quiet(first, depth)?;
                    }
                } else {
                    for a in &c.args {
                        self.node(a, depth, Usage::Read)?;
                    }
                }
            }
            Node::Comprehension(c) => {
                let inner = depth + 1;
                if inner > MAX_LOOP_DEPTH {
                    return Err(self.at(
                        e.id,
                        format!("macros nested more than {MAX_LOOP_DEPTH} deep"),
                    ));
                }
                self.loop_depth = self.loop_depth.max(inner);
                self.node(&c.iter_range, depth, Usage::Iterated)?;
                self.node(&c.accu_init, depth, Usage::Read)?;
                self.bound.push(c.iter_var.clone());
                self.bound.push(c.accu_var.clone());
                let r = self
                    .node(&c.loop_cond, inner, Usage::Read)
                    .and_then(|()| self.node(&c.loop_step, inner, Usage::Read))
                    .and_then(|()| self.node(&c.result, inner, Usage::Read));
                self.bound.pop();
                self.bound.pop();
                r?;
            }
            Node::List(l) => {
                for x in &l.elements {
                    self.node(x, depth, Usage::Read)?;
                }
            }
            Node::Map(m) => {
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.node(&me.key, depth, Usage::Read)?;
                        self.node(&me.value, depth, Usage::Read)?;
                    }
                }
            }
            Node::Struct(_) => {
                return Err(self.at(e.id, "message construction is not supported".into()));
            }
            Node::Literal(_) => {}
            Node::Unspecified => {
                return Err(self.at(e.id, "incomplete expression".into()));
            }
        }
        Ok(())
    }

    /// Walks the operand of a path already recorded: checks, without recording it again.
    fn walk_quiet(&mut self, e: &IdedExpr, depth: u32) -> Result<(), CompileError> {
        let before = self.references.len();
        self.node(e, depth, Usage::Read)?;
        // Keep what the operand references beyond the path itself (an index expression's
        // own variables), drop the path's own prefixes.
        if self.path(e).is_some() {
            self.references.truncate(before);
        }
        Ok(())
    }
}

impl Expr {
    /// The expression as written.
    #[allow(dead_code)] // part of the API approvals (issue 28) build on
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// The variable paths the expression reads, in order of appearance.
    pub(crate) fn references(&self) -> &[Reference] {
        &self.references
    }

    /// Whether the expression reads `variable` at all.
    #[allow(dead_code)] // part of the API approvals (issue 28) build on
    pub(crate) fn reads(&self, variable: &str) -> bool {
        self.references.iter().any(|r| r.variable == variable)
    }

    /// The cost estimate of evaluating on `vars` (module docs).
    pub(crate) fn cost(&self, vars: &Vars<'_>) -> u64 {
        let mut cost = self.nodes;
        for _ in 0..self.loop_depth {
            cost = cost.saturating_mul(vars.values.saturating_add(1));
        }
        if self.concat_in_loop {
            cost = cost.saturating_mul(vars.bytes.saturating_add(1));
        }
        cost
    }

    /// Evaluates to a boolean on `vars`.
    ///
    /// # Errors
    /// [`EvalError`]: over the cost bound (not evaluated), failed, or not a boolean.
    pub(crate) fn eval(&self, vars: &Vars<'_>) -> Result<bool, EvalError> {
        let estimate = self.cost(vars);
        if estimate > MAX_COST {
            return Err(EvalError::Cost { estimate });
        }
        match self.program.execute(&vars.context) {
            Ok(Cel::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError::NotBool(other.type_of().to_string())),
            Err(e) => Err(EvalError::Failed(e.to_string())),
        }
    }
}

/// How an invocation reached the gateway, as the `carrier` variable reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// v3/v3.1 `tools/execute/{tool}`.
    Rest,
    /// v1/v2 `actions/{action}/execute`.
    Legacy,
    /// A tool router session's `execute`, `execute_meta`, `proxy_execute`.
    Session,
    /// An item of `COMPOSIO_MULTI_EXECUTE_TOOL` (on any carrier).
    Multi,
    /// MCP `tools/call`.
    Mcp,
    /// A proxy route (`tools/execute/proxy`, `actions/proxy`).
    Proxy,
    /// A trigger upsert.
    Trigger,
}

impl Carrier {
    /// The value of `carrier`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Rest => "rest",
            Self::Legacy => "legacy",
            Self::Session => "session",
            Self::Multi => "multi",
            Self::Mcp => "mcp",
            Self::Proxy => "proxy",
            Self::Trigger => "trigger",
        }
    }
}

/// The variables of one invocation, borrowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scope<'a> {
    /// The pinned subject (`subject`).
    pub(crate) subject: &'a str,
    /// The verified claims the identity keeps (`claims`).
    pub(crate) claims: &'a Map<String, Value>,
    /// The tool slug (`tool`), or trigger slug, or `PROXY_EXECUTE`.
    pub(crate) tool: &'a str,
    /// The toolkit decided on (`toolkit`), lower-case; `null` when unknown.
    pub(crate) toolkit: Option<&'a str>,
    /// The named connected account (`account`), or `null`.
    pub(crate) account: Option<&'a str>,
    /// `carrier`.
    pub(crate) carrier: Carrier,
    /// The arguments as Composio receives them (`args`); `{}` when the call has none.
    pub(crate) args: Option<&'a Value>,
    /// A proxy execution's `method`, `endpoint`, `parameters`, `body` (`proxy`), else `null`.
    pub(crate) proxy: Option<&'a Value>,
}

/// A [`Scope`] bound for evaluation, with its size for the cost bound. Built once per
/// invocation, shared by every expression evaluated on it. Its strings borrow the scope's
/// (the arguments, the claims): binding copies no string, and reading `args.x` in an
/// expression copies a pointer, not the text.
pub(crate) struct Vars<'a> {
    context: Context<'a, 'a>,
    /// JSON values in the variables (each array element, object member, scalar).
    values: u64,
    /// Bytes of the strings in the variables (keys included).
    bytes: u64,
}

impl fmt::Debug for Vars<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vars")
            .field("values", &self.values)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// Counts while converting JSON to CEL values (built straight into the interpreter's own
/// value types, borrowing every string and key: no intermediate tree, no copied text).
#[derive(Default)]
struct Size {
    values: u64,
    bytes: u64,
}

type Val<'a> = Box<dyn cel::common::value::Val + 'a>;

impl Size {
    fn cel<'a>(&mut self, v: &'a Value) -> Val<'a> {
        use cel::common::types::{CelBool, CelDouble, CelInt, CelList, CelNull, CelUInt};
        self.values += 1;
        match v {
            Value::Null => Box::new(CelNull),
            Value::Bool(b) => Box::new(CelBool::from(*b)),
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Box::new(CelInt::from(i))
                } else if let Some(u) = n.as_u64() {
                    Box::new(CelUInt::from(u))
                } else {
                    Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN)))
                }
            }
            Value::String(s) => self.string(s),
            Value::Array(a) => Box::new(CelList::from(
                a.iter().map(|x| self.cel(x)).collect::<Vec<_>>(),
            )),
            Value::Object(m) => self.map(m),
        }
    }

    fn string<'a>(&mut self, s: &'a str) -> Val<'a> {
        self.bytes += s.len() as u64;
        Box::new(cel::common::types::CelString::from(s))
    }

    fn map<'a>(&mut self, m: &'a Map<String, Value>) -> Val<'a> {
        use cel::common::types::{CelMap, CelMapKey};
        let mut out = std::collections::HashMap::with_capacity(m.len());
        for (k, v) in m {
            self.bytes += k.len() as u64;
            out.insert(CelMapKey::from(k.as_str()), self.cel(v));
        }
        Box::new(CelMap::from(out))
    }
}

/// `{}`: the `args` of a call without arguments.
static NO_ARGS: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

impl<'a> Scope<'a> {
    /// Binds the variables for evaluation (borrowing them).
    pub(crate) fn bind(&self) -> Vars<'a> {
        let mut size = Size::default();
        let mut context = Context::with_env(Arc::clone(env()));
        let opt = |size: &mut Size, s: Option<&'a str>| -> Val<'a> {
            s.map_or_else(
                || -> Val<'a> { Box::new(cel::common::types::CelNull) },
                |s| size.string(s),
            )
        };
        let vars: [(&str, Val<'a>); 8] = [
            ("subject", size.string(self.subject)),
            ("claims", size.map(self.claims)),
            ("tool", size.string(self.tool)),
            ("toolkit", opt(&mut size, self.toolkit)),
            ("account", opt(&mut size, self.account)),
            (
                "carrier",
                Box::new(cel::common::types::CelString::from(self.carrier.as_str())),
            ),
            (
                "args",
                match self.args {
                    Some(a) => size.cel(a),
                    None => size.map(&NO_ARGS),
                },
            ),
            (
                "proxy",
                self.proxy.map_or_else(
                    || -> Val<'a> { Box::new(cel::common::types::CelNull) },
                    |p| size.cel(p),
                ),
            ),
        ];
        for (name, value) in vars {
            context.add_variable_as_val(name, value);
        }
        Vars {
            context,
            values: size.values,
            bytes: size.bytes,
        }
    }

    /// The value at a reference's path in these variables, when it is JSON present there
    /// (what `explain` shows a constraint read).
    pub(crate) fn lookup(&self, r: &Reference) -> Option<Value> {
        let root = match r.variable.as_str() {
            "subject" => Value::String(self.subject.into()),
            "tool" => Value::String(self.tool.into()),
            "toolkit" => self
                .toolkit
                .map_or(Value::Null, |s| Value::String(s.into())),
            "account" => self
                .account
                .map_or(Value::Null, |s| Value::String(s.into())),
            "carrier" => Value::String(self.carrier.as_str().into()),
            "claims" if r.fields.is_empty() => Value::Object(self.claims.clone()),
            "claims" => return follow_map(self.claims, &r.fields).cloned(),
            "args" => {
                return match self.args {
                    Some(a) => follow(a, &r.fields).cloned(),
                    None => follow(&Value::Object(Map::new()), &r.fields).cloned(),
                }
            }
            "proxy" => return follow(self.proxy?, &r.fields).cloned(),
            _ => return None,
        };
        follow(&root, &r.fields).cloned()
    }
}

fn follow<'v>(v: &'v Value, fields: &[String]) -> Option<&'v Value> {
    match fields.split_first() {
        None => Some(v),
        Some(_) => match v {
            Value::Object(m) => follow_map(m, fields),
            _ => None,
        },
    }
}

fn follow_map<'v>(m: &'v Map<String, Value>, fields: &[String]) -> Option<&'v Value> {
    match fields.split_first() {
        None => None,
        Some((f, rest)) => follow(m.get(f)?, rest),
    }
}

// --- the compiled `[[policy.constraints]]` ---

/// The refusal message when a constraint has none.
const DEFAULT_MESSAGE: &str = "The arguments of this call are not allowed by the gateway's policy.";

/// One compiled `[[policy.constraints]]`.
#[derive(Debug)]
pub(crate) struct Constraint {
    pub(crate) name: Arc<str>,
    /// Tool globs, split at their `*`s ([`toolpolicy::glob_matches`]).
    tools: Vec<Vec<Box<str>>>,
    /// Toolkit slugs, lower-case (`*`: every toolkit).
    toolkits: Vec<String>,
    pub(crate) when: Option<Expr>,
    pub(crate) require: Expr,
    pub(crate) message: Arc<str>,
}

impl Constraint {
    /// Whether it applies to `tool` of `toolkit` (Composio's, lower-case).
    pub(crate) fn applies(&self, tool: &str, toolkit: &str) -> bool {
        self.tools.iter().any(|g| toolpolicy::glob_matches(g, tool))
            || self
                .toolkits
                .iter()
                .any(|t| t == "*" || t.eq_ignore_ascii_case(toolkit))
    }

    /// Whether it may apply to `tool` before its toolkit is known: a tool glob matches, the
    /// slug starts with `<TOOLKIT>_` of one of its toolkits (Composio's slugs do), or it is a
    /// proxy execution (of any toolkit, until the account is looked up).
    fn may_apply(&self, tool: &str) -> bool {
        self.tools.iter().any(|g| toolpolicy::glob_matches(g, tool))
            || !self.toolkits.is_empty() && tool == toolpolicy::PROXY_EXECUTE
            || self.toolkits.iter().any(|t| {
                t == "*"
                    || tool.len() > t.len()
                        && tool.as_bytes()[t.len()] == b'_'
                        && tool.as_bytes()[..t.len()].eq_ignore_ascii_case(t.as_bytes())
            })
    }

    /// The refusal for this constraint.
    pub(crate) fn refusal(&self) -> Error {
        Error::ArgumentsNotAllowed {
            constraint: self.name.to_string(),
            message: self.message.to_string(),
        }
    }

    /// Evaluates `when` then `require` on `vars`: `Ok(true)` when it does not apply or holds.
    ///
    /// # Errors
    /// As [`Expr::eval`], of either expression.
    pub(crate) fn check(&self, vars: &Vars<'_>) -> Result<bool, EvalError> {
        if let Some(w) = &self.when {
            if !w.eval(vars)? {
                return Ok(true);
            }
        }
        self.require.eval(vars)
    }

    /// The tool globs as written (for check-config).
    pub(crate) fn tool_patterns(&self) -> impl Iterator<Item = String> + '_ {
        self.tools.iter().map(|parts| parts.join("*"))
    }

    /// The toolkits as written, lower-case.
    pub(crate) fn toolkits(&self) -> &[String] {
        &self.toolkits
    }
}

/// Every `[[policy.constraints]]`, compiled, in the rules snapshot.
#[derive(Debug, Default)]
pub(crate) struct Constraints {
    list: Vec<Constraint>,
}

impl Constraints {
    /// Compiles `[[policy.constraints]]`: every expression, every glob; names unique; each
    /// names at least one tool or toolkit.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key, the constraint and (for CEL) the position.
    pub(crate) fn compile(list: &[ConstraintConfig]) -> Result<Self, ConfigError> {
        let mut out = Vec::with_capacity(list.len());
        for (i, c) in list.iter().enumerate() {
            let key = format!("policy.constraints[{i}]");
            if c.name.trim().is_empty() {
                return Err(ConfigError::invalid(format!("{key}.name"), "is empty"));
            }
            if out.iter().any(|o: &Constraint| *o.name == *c.name) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("`{}` names another constraint too", c.name),
                ));
            }
            if c.tools.is_empty() && c.toolkits.is_empty() {
                return Err(ConfigError::invalid(
                    &key,
                    format!(
                        "constraint `{}` names no tool: give `tools` (globs) or `toolkits`",
                        c.name
                    ),
                ));
            }
            let mut tools = Vec::with_capacity(c.tools.len());
            for p in &c.tools {
                if p.is_empty()
                    || !p
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '*')
                {
                    return Err(ConfigError::invalid(
                        format!("{key}.tools"),
                        format!("`{p}` can never match a tool slug (letters, digits, `_`, `*`)"),
                    ));
                }
                tools.push(p.split('*').map(Box::from).collect());
            }
            let mut toolkits = Vec::with_capacity(c.toolkits.len());
            for t in &c.toolkits {
                if t.is_empty()
                    || t != "*"
                        && !t
                            .chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                {
                    return Err(ConfigError::invalid(
                        format!("{key}.toolkits"),
                        format!("`{t}` is not a toolkit slug"),
                    ));
                }
                toolkits.push(t.to_ascii_lowercase());
            }
            let expr = |field: &str, src: &str| {
                compile(src).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.{field}"),
                        format!("constraint `{}`: {e}", c.name),
                    )
                })
            };
            let when = c.when.as_deref().map(|w| expr("when", w)).transpose()?;
            let require = expr("require", &c.require)?;
            out.push(Constraint {
                name: c.name.as_str().into(),
                tools,
                toolkits,
                when,
                require,
                message: c.message.as_deref().unwrap_or(DEFAULT_MESSAGE).into(),
            });
        }
        Ok(Self { list: out })
    }

    /// Whether none is configured.
    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every constraint, in order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, Constraint> {
        self.list.iter()
    }

    /// The one named `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&Constraint> {
        self.list.iter().find(|c| &*c.name == name)
    }

    /// Whether a carrier must keep `tool`'s arguments for the decision: some constraint may
    /// apply to it. No allocation; `false` at once when none is configured.
    pub(crate) fn wants(&self, tool: &str) -> bool {
        self.list.iter().any(|c| c.may_apply(tool))
    }

    /// The ones that apply to `tool` of `toolkit`, in order.
    pub(crate) fn applying<'a>(
        &'a self,
        tool: &'a str,
        toolkit: &'a str,
    ) -> impl Iterator<Item = &'a Constraint> + 'a {
        self.list.iter().filter(move |c| c.applies(tool, toolkit))
    }

    /// The top-level claims the expressions read; `None`: all of them (an expression reads
    /// `claims` as a whole, or by a computed key).
    pub(crate) fn claims_read(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let exprs = self
            .list
            .iter()
            .flat_map(|c| c.when.iter().chain(std::iter::once(&c.require)));
        for e in exprs {
            for r in e.references().iter().filter(|r| r.variable == "claims") {
                let first = r.fields.first()?;
                if !out.contains(first) {
                    out.push(first.clone());
                }
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests;
