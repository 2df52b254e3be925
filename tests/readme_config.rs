#![allow(clippy::unwrap_used, unreachable_pub)]
//! The README's configuration is a contract that operators and tools outside this repository
//! write against: every TOML block in it must be a configuration the gateway accepts, and so
//! must every key shown commented out (`# key = value`, an option the reader may switch on).
//! A key renamed in the code but not in the README, or documented but never implemented, fails
//! here instead of at an operator's start-up.

use entitygate::Config;

/// Enough to make a fragment a whole configuration (fragments win where they overlap).
const BASE: &str = r#"
listen = "127.0.0.1:8080"
[upstream]
base_url = "https://backend.composio.dev"
[[auth.keys]]
alg = "HS256"
secret_env = "ENTITYGATE_JWT_SECRET"
"#;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// Every fenced `toml` block: (line number of its fence, text).
fn toml_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_start() == "```toml" => current = Some((i + 1, String::new())),
            None => {}
            Some(_) if line.trim_start().starts_with("```") => {
                blocks.extend(current.take());
            }
            Some((_, body)) => {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    blocks
}

/// `base` with `over` laid on top, table by table.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn accept(block: &str) -> Result<Config, String> {
    let over: toml::Table = toml::from_str(block).map_err(|e| format!("not TOML: {e}"))?;
    let mut whole: toml::Table = toml::from_str(BASE).unwrap();
    merge(&mut whole, over);
    let text = toml::to_string(&whole).map_err(|e| e.to_string())?;
    Config::from_toml(&text).map_err(|e| e.to_string())
}

/// A commented-out assignment (`# key = value  # why`), uncommented; `None` for prose.
fn uncommented(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('#')?.trim_start();
    let (key, _) = rest.split_once('=')?;
    let key = key.trim();
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
    is_key.then(|| rest.to_owned())
}

#[test]
fn every_configuration_in_the_readme_is_accepted() {
    let text = readme();
    let blocks = toml_blocks(&text);
    assert!(
        blocks.len() >= 3,
        "the README documents its configuration in toml blocks"
    );
    let mut failures = Vec::new();
    for (line, block) in &blocks {
        match accept(block) {
            Ok(c) => {
                if let Err(e) = entitygate::toolpolicy::check(&c) {
                    failures.push(format!("README.md:{line}: valid keys, invalid config: {e}"));
                }
            }
            Err(e) => failures.push(format!("README.md:{line}: {e}")),
        }
        // Each option shown commented out, switched on alone.
        let lines: Vec<&str> = block.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(on) = uncommented(l) else { continue };
            let mut variant = lines.clone();
            variant[i] = &on;
            if let Err(e) = accept(&variant.join("\n")) {
                failures.push(format!(
                    "README.md:{}: `{}` once uncommented: {e}",
                    line + 1 + i,
                    on.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_reference_block_covers_the_sections_a_deployment_sets() {
    // The configuration reference is the block that starts with `listen`; the sections an
    // operator sets must be shown there (a section missing from it is undocumented).
    let text = readme();
    let reference = toml_blocks(&text)
        .into_iter()
        .map(|(_, b)| b)
        .find(|b| b.starts_with("listen"))
        .expect("a full configuration reference");
    for section in [
        "[upstream]",
        "[auth]",
        "[auth.jwks]",
        "[policy]",
        "[connections]",
        "[limits]",
        "[admin]",
        "[audit]",
        "[mcp]",
    ] {
        assert!(
            reference.lines().any(|l| l.starts_with(section)),
            "{section} is missing from the README's configuration reference"
        );
    }
}

/// deploy/vector/entitygate-ocsf.toml cannot be run here (no Vector on the package
/// registries CI reaches): it is held to what can be checked without it. It parses; every
/// sink and transform reads components the file defines; the tail reads the file the README
/// configures; and the raw archive keeps each line byte for byte (`text` codec, newline
/// framing), which is what `entitygate audit-log verify` needs.
#[test]
fn the_vector_recipe_parses_and_its_graph_is_connected() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/vector/entitygate-ocsf.toml"
    ))
    .unwrap();
    let recipe: toml::Table = toml::from_str(&text).unwrap();
    let table = |name: &str| recipe[name].as_table().unwrap().clone();
    let (sources, transforms, sinks) = (table("sources"), table("transforms"), table("sinks"));
    let defined: Vec<&String> = sources.keys().chain(transforms.keys()).collect();
    for (name, c) in transforms.iter().chain(sinks.iter()) {
        let inputs = c["inputs"].as_array().unwrap();
        assert!(!inputs.is_empty(), "{name} reads nothing");
        for i in inputs {
            let i = i.as_str().unwrap().to_owned();
            assert!(
                defined.contains(&&i),
                "{name} reads {i}, which is not defined"
            );
        }
    }
    let tail = &sources["entitygate_audit"];
    assert_eq!(tail["type"].as_str(), Some("file"));
    let path = tail["include"][0].as_str().unwrap();
    assert!(
        readme().contains(&format!("path = \"{path}\"")),
        "the README configures the file the recipe tails ({path})"
    );
    let raw = &sinks["raw_archive"];
    assert_eq!(raw["encoding"]["codec"].as_str(), Some("text"));
    assert_eq!(raw["framing"]["method"].as_str(), Some("newline_delimited"));
    assert_eq!(
        raw["inputs"][0].as_str(),
        Some("entitygate_audit"),
        "not parsed first"
    );
    for s in ["raw_archive", "splunk", "elasticsearch"] {
        assert!(sinks.contains_key(s), "{s}");
        assert_eq!(
            sinks[s]["acknowledgements"]["enabled"].as_bool(),
            Some(true),
            "{s}: the file checkpoint must wait for the sink"
        );
    }
}
