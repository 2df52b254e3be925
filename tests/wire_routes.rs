#![allow(clippy::unwrap_used, unreachable_pub)]
//! Every path of Composio's wire reference (`tests/sdk/composio-wire.md`, a copy of the
//! project's `composio-wire.md`) is either deliberately routed or refused.
//!
//! The reference is parsed here, not transcribed: every backticked or code-block path under
//! `/api/`, with its methods (all five when none is written), `…/` and `/x` shorthands resolved
//! against the paths before them, `[a|b]` and `{a|b}` alternatives expanded and `{param}`
//! placeholders filled with a harmless value. Then, for every (method, path):
//! - a path the gateway routes must have each of its route parameters fed by a placeholder or
//!   a concrete id, never by a name Composio uses for a collection or an action (the literal
//!   segments of the reference's endpoint catalogue, §2): `GET mcp/{id}` must not serve
//!   `GET mcp/servers`;
//! - a path of the catalogue's "project-wide data / admin" list must be refused.

use std::collections::BTreeSet;

use entitygate::routes::{self, Policy};
use entitygate::Error;
use http::Method;

const WIRE: &str = include_str!("sdk/composio-wire.md");
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
/// What a `{placeholder}` becomes: no collection or action name.
const FILL: &str = "p0x";

/// One path of the reference.
#[derive(Debug, Clone)]
struct WirePath {
    methods: Vec<&'static str>,
    /// With `{placeholders}` kept.
    template: String,
    /// `## 2.` (the endpoint catalogue).
    in_catalogue: bool,
    /// Listed under "Project-wide data / admin".
    admin: bool,
}

fn is_method_list(s: &str) -> Option<Vec<&'static str>> {
    let ms: Option<Vec<&'static str>> = s
        .split('/')
        .map(|m| METHODS.iter().copied().find(|x| *x == m))
        .collect();
    ms.filter(|v| !v.is_empty())
}

/// `[/a|/b]` (optional alternatives) and `{a|b}` (required alternatives) expanded.
fn expand(path: &str) -> Vec<String> {
    if let Some(open) = path.find('[') {
        let close = open + path[open..].find(']').unwrap();
        let (head, alts, tail) = (&path[..open], &path[open + 1..close], &path[close + 1..]);
        let mut out = expand(&format!("{head}{tail}"));
        for alt in alts.split('|') {
            out.extend(expand(&format!("{head}{alt}{tail}")));
        }
        return out;
    }
    let mut from = 0;
    while let Some(rel) = path[from..].find('{') {
        let open = from + rel;
        let close = open + path[open..].find('}').unwrap();
        let inner = &path[open + 1..close];
        if inner.contains('|') {
            let (head, tail) = (&path[..open], &path[close + 1..]);
            return inner
                .split('|')
                .flat_map(|alt| expand(&format!("{head}{alt}{tail}")))
                .collect();
        }
        from = close + 1;
    }
    vec![path.to_owned()]
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').skip(1).collect()
}

/// The `/api/vN` prefix of an absolute path.
fn version_prefix(path: &str) -> Option<String> {
    let s = segments(path);
    (s.len() >= 2 && s[0] == "api").then(|| format!("/api/{}", s[1]))
}

struct Parser {
    out: Vec<WirePath>,
    absolute: Vec<String>,
    /// The path an ellipsis last resolved to, up to and including its first segment.
    anchor: Option<String>,
    in_catalogue: bool,
    admin: bool,
}

impl Parser {
    /// Resolves a path as written (absolute, `/rel` or `…/rel`) to an absolute one.
    fn resolve(&mut self, written: &str, ellipsis_on_line: bool) -> Option<String> {
        let path = written.split('?').next().unwrap();
        let path = path.trim_end_matches([',', ';', '.', ')']);
        if path.contains('*') || path.contains("...") || path.contains(' ') {
            return None; // a wildcard or a prose placeholder, not a path
        }
        if path.starts_with("/api/v") {
            return Some(path.to_owned());
        }
        if let Some(rest) = path.strip_prefix('…') {
            let first = segments(rest).first().copied()?;
            let base = if first.starts_with('{') || !ellipsis_on_line {
                // The newest absolute path with this segment: `…/{session_id}/execute`.
                self.absolute.iter().rev().find_map(|p| {
                    let segs = segments(p);
                    let i = segs.iter().position(|s| *s == first)?;
                    Some(format!("/{}", segs[..i].join("/")))
                })
            } else {
                None
            };
            let full = match base {
                Some(b) => format!("{b}{rest}"),
                None => format!("{}{rest}", self.anchor.clone()?),
            };
            let n = segments(&full).len() - segments(rest).len() + 1;
            self.anchor = Some(format!("/{}", segments(&full)[..n].join("/")));
            return Some(full);
        }
        if path.starts_with('/') && self.in_catalogue && !path.starts_with("/v") {
            let prefix = self.absolute.last().and_then(|p| version_prefix(p))?;
            return Some(format!("{prefix}{path}"));
        }
        None
    }

    fn add(&mut self, methods: Vec<&'static str>, written: &str, ellipsis_on_line: bool) {
        let Some(path) = self.resolve(written, ellipsis_on_line) else {
            return;
        };
        self.absolute.push(path.clone());
        for template in expand(&path) {
            self.out.push(WirePath {
                methods: methods.clone(),
                template,
                in_catalogue: self.in_catalogue,
                admin: self.admin,
            });
        }
    }

    fn line(&mut self, line: &str, in_code: bool) {
        let mut ellipsis = false;
        if in_code {
            // `METHOD /api/...` tokens anywhere on a code line.
            let toks: Vec<&str> = line.split_whitespace().collect();
            for w in toks.windows(2) {
                if let Some(ms) = is_method_list(w[0]) {
                    if w[1].starts_with('/') || w[1].starts_with('…') {
                        self.add(ms, w[1], ellipsis);
                        ellipsis |= w[1].starts_with('…');
                    }
                }
            }
            return;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 0 {
                continue; // outside backticks
            }
            let (methods, path) = match span.split_once(' ') {
                Some((m, p)) => match is_method_list(m) {
                    Some(ms) => (ms, p),
                    None => continue,
                },
                None => (METHODS.to_vec(), span),
            };
            if path.starts_with('/') || path.starts_with('…') {
                self.add(methods, path, ellipsis);
                ellipsis |= path.starts_with('…');
            }
        }
    }
}

fn parse() -> Vec<WirePath> {
    let mut p = Parser {
        out: Vec::new(),
        absolute: Vec::new(),
        anchor: None,
        in_catalogue: false,
        admin: false,
    };
    let mut in_code = false;
    for line in WIRE.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code && line.starts_with("## ") {
            p.in_catalogue = line.starts_with("## 2.");
        }
        if !in_code && line.starts_with("#") {
            p.admin = p.in_catalogue && line.contains("admin");
        }
        p.line(line, in_code);
    }
    p.out
}

fn concrete(template: &str) -> String {
    segments(template)
        .iter()
        .map(|s| if s.starts_with('{') { FILL } else { s })
        .fold(String::new(), |acc, s| acc + "/" + s)
}

/// Names Composio uses for collections and actions: the literal segments of the catalogue.
fn collection_names(paths: &[WirePath]) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| p.in_catalogue)
        .flat_map(|p| segments(&p.template).into_iter().skip(2))
        .filter(|s| !s.starts_with('{'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_reference_is_parsed() {
    let paths = parse();
    let templates: BTreeSet<&str> = paths.iter().map(|p| p.template.as_str()).collect();
    // A parser that silently found nothing would make the walk below vacuous.
    assert!(
        templates.len() > 100,
        "only {} paths parsed",
        templates.len()
    );
    for expected in [
        "/api/v3.1/mcp/servers",
        "/api/v3.1/mcp/{id}",
        "/api/v3.1/mcp/servers/custom",
        "/api/v3.1/tool_router/session/{session_id}/execute_meta",
        "/api/v3.1/tool_router/session/{session_id}/mounts/{mount_id}/download_url",
        "/api/v3.1/triggers_types/list/enum",
        "/api/v1/connectedAccounts/{id}/info",
        "/api/v3.1/connected_accounts/ca_abc123/refresh",
        "/api/v3.1/logs/tool_execution/{id}",
    ] {
        assert!(templates.contains(expected), "{expected} not parsed");
    }
    let names = collection_names(&paths);
    for n in ["servers", "custom", "generate", "list", "enum", "instances"] {
        assert!(names.contains(n), "{n}");
    }
}

#[test]
fn every_wire_path_is_deliberately_routed_or_refused() {
    let paths = parse();
    let names = collection_names(&paths);
    let (mut routed, mut refused) = (BTreeSet::new(), BTreeSet::new());
    for wire in &paths {
        let path = concrete(&wire.template);
        for m in &wire.methods {
            let method = Method::from_bytes(m.as_bytes()).unwrap();
            match routes::classify(&method, &path) {
                Err(Error::RouteNotAllowed) => {
                    refused.insert(format!("{m} {}", wire.template));
                }
                Err(e) => panic!("{m} {path}: {e}"),
                Ok(matched) => {
                    assert!(
                        !wire.admin,
                        "{m} {} is project-wide or admin but routed as {}",
                        wire.template, matched.route.pattern
                    );
                    let pattern = segments(matched.route.pattern);
                    let written = segments(&wire.template);
                    for (p, w) in pattern.iter().zip(&written) {
                        if p.starts_with('{') && *p != "{v3}" {
                            assert!(
                                w.starts_with('{') || !names.contains(*w),
                                "{m} {}: route {} captures Composio's name `{w}` as {p}",
                                wire.template,
                                matched.route.pattern
                            );
                        }
                    }
                    if matched.policy() == Policy::Neutral {
                        assert_eq!(*m, "GET", "{m} {}: catalogue is read-only", wire.template);
                    }
                    routed.insert(format!(
                        "{m} {} -> {}",
                        wire.template, matched.route.pattern
                    ));
                }
            }
        }
    }
    assert!(refused.contains("GET /api/v3.1/mcp/servers"));
    assert!(refused.contains("GET /api/v3.1/mcp/servers/custom"));
    assert!(routed.contains("GET /api/v3.1/mcp/{id} -> /api/{v3}/mcp/{id}"));
    assert!(!routed.is_empty() && !refused.is_empty());
}
