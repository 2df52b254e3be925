//! The diff a reviewer reads: tools added, removed and changed between two sets of canonical
//! definitions, and for a changed one what changed (the description's text, each parameter
//! added, removed or changed, the name, the output schema).

use std::collections::BTreeMap;

use serde_json::Value;

/// One tool's difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// In the new set only.
    Added(String),
    /// In the old set only.
    Removed(String),
    /// In both, different: what changed, one line each.
    Changed(String, Vec<String>),
}

impl Change {
    /// The tool.
    pub fn tool(&self) -> &str {
        match self {
            Self::Added(t) | Self::Removed(t) | Self::Changed(t, _) => t,
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Added(t) => write!(f, "+ {t} (added)"),
            Self::Removed(t) => write!(f, "- {t} (removed)"),
            Self::Changed(t, what) => {
                write!(f, "~ {t} (changed)")?;
                for w in what {
                    write!(f, "\n    {w}")?;
                }
                Ok(())
            }
        }
    }
}

/// The changes from `old` to `new` (tool slug → canonical definition), by tool.
pub fn diff(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<Change> {
    let mut out = Vec::new();
    for (slug, o) in old {
        match new.get(slug) {
            None => out.push(Change::Removed(slug.clone())),
            Some(n) if n != o => out.push(Change::Changed(slug.clone(), what_changed(o, n))),
            Some(_) => {}
        }
    }
    for slug in new.keys() {
        if !old.contains_key(slug) {
            out.push(Change::Added(slug.clone()));
        }
    }
    out.sort_by(|a, b| a.tool().cmp(b.tool()));
    out
}

/// What changed between two canonical definitions, one line each.
pub(crate) fn what_changed(o: &Value, n: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for field in ["name", "description"] {
        if o[field] != n[field] {
            out.push(format!(
                "{field}: {} -> {}",
                shown(&o[field]),
                shown(&n[field])
            ));
        }
    }
    let (op, np) = (
        &o["input_parameters"]["properties"],
        &n["input_parameters"]["properties"],
    );
    let empty = serde_json::Map::new();
    let (om, nm) = (
        op.as_object().unwrap_or(&empty),
        np.as_object().unwrap_or(&empty),
    );
    for (k, v) in nm {
        match om.get(k) {
            None => out.push(format!("parameter added: {k} {}", shown(v))),
            Some(ov) if ov != v => {
                out.push(format!(
                    "parameter changed: {k} {} -> {}",
                    shown(ov),
                    shown(v)
                ));
            }
            Some(_) => {}
        }
    }
    for k in om.keys() {
        if !nm.contains_key(k) {
            out.push(format!("parameter removed: {k}"));
        }
    }
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Value::Object(m) = &mut v {
            m.remove("properties");
        }
        v
    };
    if strip(&o["input_parameters"]) != strip(&n["input_parameters"]) {
        out.push(format!(
            "input schema: {} -> {}",
            shown(&strip(&o["input_parameters"])),
            shown(&strip(&n["input_parameters"]))
        ));
    }
    if o["output_parameters"] != n["output_parameters"] {
        out.push(format!(
            "output schema: {} -> {}",
            shown(&o["output_parameters"]),
            shown(&n["output_parameters"])
        ));
    }
    if o["slug"] != n["slug"] {
        out.push(format!(
            "slug: {} -> {}",
            shown(&o["slug"]),
            shown(&n["slug"])
        ));
    }
    out
}

/// A value as a reviewer reads it: JSON, with every character the scan flags made visible
/// (`\u{E0041}`), so hidden text shows in a terminal.
pub(crate) fn shown(v: &Value) -> String {
    let s = serde_json::to_string(v).unwrap_or_default();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if super::scan::hidden_kind(c).is_some() {
            out.push_str(&format!("\\u{{{:X}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}
