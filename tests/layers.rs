//! The house rules of `ARCHITECTURE.md`, enforced: the layer table there is read, every
//! `crate::` (and `super::`) path in `src/` outside test code is resolved to the module it
//! names, and the build fails on
//! - an import from a module into a module of a higher layer,
//! - a module missing from the table (a new module must be placed), and
//! - any import circle between source files.
//!
//! Read from the source text, like the people who maintain it read it: a module's child
//! modules are part of it (`mod child;` is not an import), so a parent reaching its children
//! by a relative path is no edge, and a child reaching its parent through `crate::` or
//! `super::` is one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file as a module path (`proxy::execute`) and its text.
struct Module {
    name: String,
    text: String,
}

fn modules(root: &Path) -> Vec<Module> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("read src")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            let name = parts.join("::");
            if name == "lib" || name == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            out.push(Module { name, text });
        }
    }
    out
}

/// A file that holds only tests (`tests.rs`, `chain_tests.rs`, `test_support.rs`).
fn is_test_file(name: &str) -> bool {
    let last = name.rsplit("::").next().unwrap_or(name);
    last == "tests" || last.ends_with("_tests") || last == "test_support"
}

/// The text without comments, string literals and `#[cfg(test)]` items.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        if rest.starts_with("//") {
            i += rest.find('\n').unwrap_or(rest.len());
        } else if rest.starts_with("/*") {
            i += rest.find("*/").map_or(rest.len(), |e| e + 2);
        } else if let Some(raw) = rest.strip_prefix("r#\"") {
            i += 3 + raw.find("\"#").map_or(raw.len(), |e| e + 2);
        } else if rest.starts_with('"') {
            let mut j = 1;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            i += (j + 1).min(rest.len());
            out.push_str("\"\"");
        } else if rest.starts_with("'\"'") {
            i += 3;
        } else if let Some(item) = rest.strip_prefix("#[cfg(test)]") {
            i += skip_item(item) + "#[cfg(test)]".len();
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The length of the item that starts `rest`: up to its `;` or its balanced `{ ... }`.
fn skip_item(rest: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in rest.char_indices() {
        match c {
            ';' if depth == 0 => return i + 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    rest.len()
}

/// Every module path a `crate::` or `super::` path in `code` names, as written (not yet
/// resolved), including each member of a `crate::{a, b::c}` group.
fn paths(code: &str, module: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let ident = |s: &str| -> Vec<String> {
        let mut segs = Vec::new();
        for seg in s.split("::") {
            let seg: String = seg
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if seg.is_empty() {
                break;
            }
            segs.push(seg);
        }
        segs
    };
    for prefix in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(prefix) {
            let start = from + at;
            from = start + prefix.len();
            // `$crate::` in macros, `my_crate::`, the second `super` of `super::super::`:
            // only a path that starts here counts.
            let before = code[..start].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == ':')
            {
                continue;
            }
            let base: Vec<String> = if prefix == "crate::" {
                Vec::new()
            } else {
                // `super` of `a::b` (a/b.rs or a/b/mod.rs) is `a`; each further `super` one up.
                let mut p: Vec<String> = module.split("::").map(str::to_owned).collect();
                p.pop();
                while code[from..].starts_with("super::") {
                    from += "super::".len();
                    p.pop();
                }
                p
            };
            let rest = &code[from..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = skip_item(rest).saturating_sub(1).min(group.len());
                let mut depth = 0;
                let mut item = String::new();
                for c in group[..end].chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            let mut p = base.clone();
                            p.extend(ident(&item));
                            out.push(p);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    // A nested group (`b::{y, z}`) counts as its head (`b`).
                    item.push(c);
                }
                let mut p = base.clone();
                p.extend(ident(&item));
                out.push(p);
            } else {
                let mut p = base.clone();
                p.extend(ident(rest));
                out.push(p);
            }
        }
    }
    out
}

/// The longest known module that `path` starts with, after the crate root's re-exports
/// (`pub use admin::console;` makes `crate::console::X` an import of `admin::console`).
fn resolve(
    path: &[String],
    known: &BTreeSet<String>,
    aliases: &BTreeMap<String, Vec<String>>,
) -> Option<String> {
    let mut path = path.to_vec();
    if let Some(real) = path.first().and_then(|head| aliases.get(head)) {
        path.splice(0..1, real.iter().cloned());
    }
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains(m))
}

/// The crate root's `pub use a::b::c;` lines: `c` -> `[a, b, c]` (groups: each member).
fn root_aliases(root: &Path) -> BTreeMap<String, Vec<String>> {
    let mut aliases = BTreeMap::new();
    let Ok(lib) = std::fs::read_to_string(root.join("lib.rs")) else {
        return aliases;
    };
    for stmt in code_only(&lib).split(';') {
        let Some(used) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let used = used.trim();
        let (base, members): (&str, Vec<&str>) = match used.split_once("::{") {
            Some((base, group)) => (base, group.trim_end_matches('}').split(',').collect()),
            None => match used.rsplit_once("::") {
                Some((base, last)) => (base, vec![last]),
                None => continue,
            },
        };
        for m in members {
            let m = m.trim();
            let (name, alias) = match m.split_once(" as ") {
                Some((n, a)) => (n.trim(), a.trim()),
                None => (m, m),
            };
            if alias.is_empty() {
                continue;
            }
            let mut real: Vec<String> = base.split("::").map(|x| x.trim().to_owned()).collect();
            real.push(name.to_owned());
            aliases.insert(alias.to_owned(), real);
        }
    }
    aliases
}

/// `ARCHITECTURE.md`'s layer table: module (top-level name) -> layer number.
fn layer_table(doc: &str) -> BTreeMap<String, u32> {
    let mut table = BTreeMap::new();
    let mut in_table = false;
    for line in doc.lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').collect();
        if line.trim_start().starts_with("| layer") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        if !line.trim_start().starts_with('|') {
            if !table.is_empty() {
                break;
            }
            continue;
        }
        let Ok(layer) = cells[0].trim().parse::<u32>() else {
            continue;
        };
        for m in cells.get(2).copied().unwrap_or("").split(',') {
            let m = m.trim().trim_matches('`').trim();
            if !m.is_empty() {
                table.insert(m.to_owned(), layer);
            }
        }
    }
    table
}

struct Graph {
    /// File-level edges: module -> modules it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn graph(root: &Path) -> Graph {
    let mods = modules(root);
    let known: BTreeSet<String> = mods.iter().map(|m| m.name.clone()).collect();
    let aliases = root_aliases(root);
    let mut edges = BTreeMap::new();
    for m in &mods {
        if is_test_file(&m.name) {
            continue;
        }
        let code = code_only(&m.text);
        let mut deps = BTreeSet::new();
        for p in paths(&code, &m.name) {
            if let Some(target) = resolve(&p, &known, &aliases) {
                // A module's own children are part of it.
                let own_child = target.starts_with(&format!("{}::", m.name));
                if target != m.name && !own_child && !is_test_file(&target) {
                    deps.insert(target);
                }
            }
        }
        edges.insert(m.name.clone(), deps);
    }
    Graph { edges }
}

/// Strongly connected components with more than one module (Tarjan).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, n: &'a str) {
        t.index.insert(n, t.next);
        t.low.insert(n, t.next);
        t.next += 1;
        t.stack.push(n);
        t.on.insert(n);
        let g = t.g;
        for w in g.edges.get(n).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let ln = t.low.get_mut(n).expect("visited");
                *ln = (*ln).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let ln = t.low.get_mut(n).expect("visited");
                *ln = (*ln).min(iw);
            }
        }
        if t.low[n] == t.index[n] {
            let mut c = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                c.push(w.to_owned());
                if w == n {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for n in g.edges.keys() {
        if !t.index.contains_key(n.as_str()) {
            visit(&mut t, n);
        }
    }
    t.out
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap_or(m)
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every source root of the workspace: the gateway and its sandbox crate.
fn roots() -> Vec<PathBuf> {
    let mut roots = vec![manifest().join("src")];
    let crates = manifest().join("crates");
    if let Ok(dir) = std::fs::read_dir(&crates) {
        for e in dir.flatten() {
            let src = e.path().join("src");
            if src.is_dir() {
                roots.push(src);
            }
        }
    }
    roots
}

#[test]
fn no_import_circle_anywhere() {
    let mut found = Vec::new();
    for root in roots() {
        for c in circles(&graph(&root)) {
            found.push(format!("{}: {}", root.display(), c.join(" <-> ")));
        }
    }
    assert!(
        found.is_empty(),
        "import circles (break them as ARCHITECTURE.md says):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_import_points_down_the_layer_table() {
    let doc = std::fs::read_to_string(manifest().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let layers = layer_table(&doc);
    assert!(
        !layers.is_empty(),
        "no layer table found in ARCHITECTURE.md"
    );
    let g = graph(&manifest().join("src"));
    let mut problems = Vec::new();
    for (from, deps) in &g.edges {
        let Some(&lf) = layers.get(top(from)) else {
            problems.push(format!("`{}` is in no layer of ARCHITECTURE.md", top(from)));
            continue;
        };
        for to in deps {
            let Some(&lt) = layers.get(top(to)) else {
                continue;
            };
            if lt > lf {
                problems.push(format!(
                    "{from} (layer {lf}) imports {to} (layer {lt}): an upward import"
                ));
            }
        }
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker itself: a circle and an upward import written into a scratch tree are found,
/// so a green run means something.
#[test]
fn the_checker_finds_a_circle_and_reads_groups_and_super() {
    let dir = std::env::temp_dir().join(format!("eg-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).expect("mkdir");
    std::fs::write(
        dir.join("a.rs"),
        "use crate::{c::X, b::{y, z}};\n// crate::d in a comment\nfn f() { let s = \"crate::d\"; }\n",
    )
    .expect("write");
    std::fs::write(dir.join("b/mod.rs"), "mod y;\n").expect("write");
    std::fs::write(dir.join("b/y.rs"), "use super::super::a;\n").expect("write");
    std::fs::write(
        dir.join("c.rs"),
        "pub struct X;\n#[cfg(test)]\nmod tests { use crate::a; }\n",
    )
    .expect("write");
    std::fs::write(dir.join("d.rs"), "").expect("write");
    let g = graph(&dir);
    assert_eq!(
        g.edges["a"],
        ["b", "c"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
    );
    assert!(g.edges["c"].is_empty(), "test code is not an import");
    assert!(g.edges["b::y"].contains("a"));
    // a -> b (its child y is part of b) ... and b::y -> a: a circle of files.
    let found = circles(&g);
    assert_eq!(found.len(), 0, "a -> b is no edge to b::y: {found:?}");
    std::fs::write(dir.join("b/mod.rs"), "mod y;\nuse crate::a;\n").expect("write");
    let found = circles(&graph(&dir));
    assert_eq!(found, vec![vec!["a".to_owned(), "b".to_owned()]]);
    // A re-export at the root hides no edge: `crate::yy` is `b::y`.
    std::fs::write(dir.join("lib.rs"), "mod a;\nmod b;\npub use b::y as yy;\n").expect("write");
    std::fs::write(dir.join("d.rs"), "use crate::yy::Z;\n").expect("write");
    assert!(graph(&dir).edges["d"].contains("b::y"));
    let _ = std::fs::remove_dir_all(&dir);
}
