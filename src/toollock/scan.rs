//! The poisoning scan: what in a tool's descriptions (the tool's own and every parameter's, at
//! any depth) reads as hidden text or as instructions to the model rather than a description.
//!
//! The list is short on purpose (each entry is something no honest description needs):
//! - invisible or direction-changing characters: Unicode tags U+E0000–U+E007F (text a model
//!   reads and a reviewer does not see), bidi embeddings and overrides U+202A–U+202E and
//!   isolates U+2066–U+2069 (text shown in another order than it is read), zero-width
//!   characters U+200B–U+200D, U+2060 and U+FEFF;
//! - markers of an injected instruction, ASCII case-insensitive: `<important>`,
//!   `ignore previous`, `ignore all previous`, `do not tell the user`, `don't tell the user`;
//! - a URL (`http://`, `https://`) to a host that is neither Composio's (`composio.dev`), nor
//!   one whose name contains the tool's toolkit slug (`api.github.com` for `github`), nor
//!   one of `[tools_lock] allowed_hosts` (a host or any subdomain of it).

use serde_json::Value;

/// Markers of an instruction hidden in a description, lower-case.
const MARKERS: &[&str] = &[
    "<important>",
    "ignore previous",
    "ignore all previous",
    "do not tell the user",
    "don't tell the user",
];

/// Hosts every description may link to (and their subdomains).
const COMPOSIO_HOSTS: &[&str] = &["composio.dev"];

/// One thing the scan flagged, where it was found (`description`, or the JSON path of a
/// parameter's description: `input_parameters.properties.to.description`). Its rendering is
/// what `--accept` records in the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: `description` or a dotted path into the schemas.
    pub at: String,
    /// What: `U+E0041 (tag character)`, `marker "<important>"`, `URL to host evil.io`.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.what, self.at)
    }
}

/// Scans a canonical definition (`description`, `input_parameters`, `output_parameters`) of a
/// tool of `toolkit`; `allowed_hosts` are the deployment's own additions.
pub fn scan(definition: &Value, toolkit: &str, allowed_hosts: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(d) = definition.get("description").and_then(Value::as_str) {
        scan_text(d, "description", toolkit, allowed_hosts, &mut out);
    }
    if let Some(n) = definition.get("name").and_then(Value::as_str) {
        scan_text(n, "name", toolkit, allowed_hosts, &mut out);
    }
    for key in ["input_parameters", "output_parameters"] {
        if let Some(schema) = definition.get(key) {
            scan_schema(schema, key, toolkit, allowed_hosts, &mut out, 0);
        }
    }
    out
}

/// Every string of a schema a model reads: `description`s and `title`s at any depth, and
/// property names (a parameter named with hidden characters is as hidden as a description).
fn scan_schema(
    v: &Value,
    at: &str,
    toolkit: &str,
    hosts: &[String],
    out: &mut Vec<Finding>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let here = format!("{at}.{k}");
                scan_chars(k, &here, out);
                match child {
                    Value::String(s) if k == "description" || k == "title" => {
                        scan_text(s, &here, toolkit, hosts, out);
                    }
                    _ => scan_schema(child, &here, toolkit, hosts, out, depth + 1),
                }
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                scan_schema(child, &format!("{at}[{i}]"), toolkit, hosts, out, depth + 1);
            }
        }
        Value::String(s) => scan_chars(s, at, out),
        _ => {}
    }
}

fn scan_text(s: &str, at: &str, toolkit: &str, hosts: &[String], out: &mut Vec<Finding>) {
    scan_chars(s, at, out);
    let lower = s.to_ascii_lowercase();
    for m in MARKERS {
        if lower.contains(m) {
            out.push(Finding {
                at: at.to_owned(),
                what: format!("marker \"{m}\""),
            });
        }
    }
    for host in url_hosts(&lower) {
        if !host_expected(&host, toolkit, hosts) {
            let what = format!("URL to host {host}");
            if !out.iter().any(|f| f.at == at && f.what == what) {
                out.push(Finding {
                    at: at.to_owned(),
                    what,
                });
            }
        }
    }
}

/// Invisible and direction-changing characters, each kind once per place.
fn scan_chars(s: &str, at: &str, out: &mut Vec<Finding>) {
    let mut seen: Vec<&'static str> = Vec::new();
    for c in s.chars() {
        let Some(kind) = hidden_kind(c) else {
            continue;
        };
        if seen.contains(&kind) {
            continue;
        }
        seen.push(kind);
        out.push(Finding {
            at: at.to_owned(),
            what: format!("U+{:04X} ({kind})", u32::from(c)),
        });
    }
}

/// The kind of a character no description needs, if `c` is one.
pub(crate) fn hidden_kind(c: char) -> Option<&'static str> {
    match u32::from(c) {
        0xE0000..=0xE007F => Some("tag character"),
        0x202A..=0x202E => Some("bidi override"),
        0x2066..=0x2069 => Some("bidi isolate"),
        0x200B..=0x200D | 0x2060 | 0xFEFF => Some("zero-width character"),
        _ => None,
    }
}

/// The hosts of the `http://` and `https://` URLs in `lower` (already lower-case).
fn url_hosts(lower: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scheme in ["https://", "http://"] {
        let mut rest = lower;
        while let Some(i) = rest.find(scheme) {
            rest = &rest[i + scheme.len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '@' || c == ':')
                })
                .unwrap_or(rest.len());
            let authority = &rest[..end];
            // `user@host:port`: the host is what follows the last `@`, before any port.
            let host = authority.rsplit('@').next().unwrap_or(authority);
            let host = host.split(':').next().unwrap_or(host).trim_end_matches('.');
            if !host.is_empty() && !out.iter().any(|h| h == host) {
                out.push(host.to_owned());
            }
        }
    }
    out
}

fn host_expected(host: &str, toolkit: &str, allowed: &[String]) -> bool {
    let under = |h: &str, domain: &str| {
        let domain = domain.trim().trim_start_matches("*.").to_ascii_lowercase();
        !domain.is_empty()
            && (h == domain
                || h.strip_suffix(domain.as_str())
                    .is_some_and(|p| p.ends_with('.')))
    };
    if COMPOSIO_HOSTS.iter().any(|d| under(host, d)) || allowed.iter().any(|d| under(host, d)) {
        return true;
    }
    // The toolkit's own service: a label of the host names the toolkit (`github` in
    // `api.github.com`, `googlecalendar` is not matched by `google.com`: allow it by config).
    let tk = toolkit.to_ascii_lowercase().replace('_', "");
    !tk.is_empty() && host.split('.').any(|label| label.replace('-', "") == tk)
}
