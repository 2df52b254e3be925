//! `entitygate tools lock|diff`: the command line of [`crate::toollock`].
//!
//! Exit statuses: 0 done (`diff`: no drift); 1 `diff` found drift, or `lock` refused to lock
//! a flagged tool that was not accepted (nothing written); 2 Composio could not be read or the
//! existing lock is unusable; 64 the configuration is unusable (or has no `[tools_lock]`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

use crate::config::{Config, ProcessEnv, ToolsLockConfig};
use crate::toollock::{self, diff, scan, LockFile};
use crate::upstream::Upstream;

/// `entitygate tools ...`.
#[derive(Debug, clap::Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    command: ToolsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ToolsCommand {
    /// Read the tools' definitions from Composio (read-only) and write the lock
    /// (`[tools_lock] path`), showing the diff against the lock already there. A tool the
    /// scan flags is locked only with --accept.
    Lock(LockArgs),
    /// Print the drift between the lock and Composio now (at the locked versions); exit 1
    /// when there is any.
    Diff(DiffArgs),
}

#[derive(Debug, clap::Args)]
struct LockArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The toolkits to lock (comma-separated); default: the existing lock's, else every
    /// toolkit the policy can allow.
    #[arg(long, value_delimiter = ',')]
    toolkits: Vec<String>,
    /// Update only this tool (repeatable), accepting what the scan flags in it; the rest of
    /// the lock is kept.
    #[arg(long = "accept", value_name = "TOOL")]
    accept: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct DiffArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    config: PathBuf,
}

const EXIT_DRIFT: u8 = 1;
const EXIT_UNREADABLE: u8 = 2;
const EXIT_CONFIG: u8 = 64;

/// Runs `entitygate tools ...`.
pub async fn run(args: &ToolsArgs) -> ExitCode {
    super::log_warnings_to_stderr();
    let path = match &args.command {
        ToolsCommand::Lock(a) => &a.config,
        ToolsCommand::Diff(a) => &a.config,
    };
    let (config, settings, upstream) = match setup(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("entitygate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let r = match &args.command {
        ToolsCommand::Lock(a) => lock(&config, &settings, &upstream, a).await,
        ToolsCommand::Diff(_) => run_diff(&settings, &upstream).await,
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("entitygate: {e}");
            ExitCode::from(EXIT_UNREADABLE)
        }
    }
}

fn setup(path: &Path) -> Result<(Config, ToolsLockConfig, Upstream), String> {
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let settings = config.tools_lock.clone().ok_or_else(|| {
        format!(
            "{} has no [tools_lock] section (its `path` is where the lock is written)",
            path.display()
        )
    })?;
    let client = crate::upstream::build_client(&config.upstream).map_err(|e| e.to_string())?;
    let upstream =
        Upstream::new(&config.upstream, &ProcessEnv, client).map_err(|e| e.to_string())?;
    Ok((config, settings, upstream))
}

/// The toolkits `lock` reads by default: those of Composio's catalogue the policy lets a
/// caller without claims run something in (but `composio`, the meta tools), and every toolkit
/// a rule allows by name.
async fn default_toolkits(config: &Config, up: &Upstream) -> Result<Vec<String>, String> {
    let (policy, _) =
        crate::toolpolicy::ToolPolicy::compile(&config.policy).map_err(|e| e.to_string())?;
    let claims = serde_json::Map::new();
    let mut out: Vec<String> = toollock::fetch_toolkits(up)
        .await
        .map_err(|e| format!("cannot list Composio's toolkits: {e}"))?
        .into_iter()
        .filter(|tk| policy.decide_toolkit(&claims, tk).allowed)
        // Composio's own meta tools dispatch to other tools, each decided and checked on its
        // own; they are locked only when named with --toolkits.
        .filter(|tk| tk != "composio")
        .collect();
    for rule in &config.policy.rules {
        for tk in &rule.allow_toolkits {
            let tk = tk.to_ascii_lowercase();
            if !tk.contains('*') && !out.contains(&tk) {
                out.push(tk);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The version a toolkit's tools were read at: the one most of them report.
fn version_of(tools: &[Value]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for t in tools {
        if let Some(v) = t["version"].as_str() {
            *counts.entry(v).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or_else(|| "latest".to_owned(), |(v, _)| v.to_owned())
}

fn definitions(lock: &LockFile) -> BTreeMap<String, Value> {
    lock.tools
        .iter()
        .map(|(k, t)| (k.clone(), t.definition.clone()))
        .collect()
}

async fn lock(
    config: &Config,
    settings: &ToolsLockConfig,
    up: &Upstream,
    args: &LockArgs,
) -> Result<ExitCode, String> {
    let existing = if settings.path.exists() {
        Some(
            LockFile::load(&settings.path)
                .map_err(|e| format!("{e}\n(fix the file, or remove it to lock from scratch)"))?,
        )
    } else {
        None
    };
    let accept: Vec<String> = args.accept.iter().map(|t| t.to_ascii_uppercase()).collect();
    let old = existing.clone().unwrap_or_default();
    let mut new;
    let mut flagged: Vec<(String, Vec<String>)> = Vec::new();
    // What Composio answered, flagged tools included: the diff a reviewer reads.
    let mut read: BTreeMap<String, Value> = BTreeMap::new();
    if let (Some(existing), false) = (&existing, accept.is_empty()) {
        // Only the accepted tools change: each read again at its toolkit's locked version.
        new = existing.clone();
        for slug in &accept {
            let toolkit = match existing.tools.get(slug) {
                Some(t) => t.toolkit.clone(),
                None => match args.toolkits.first() {
                    Some(tk) => tk.to_ascii_lowercase(),
                    None => tool_toolkit(up, slug).await?,
                },
            };
            let pinned = existing.toolkits.get(&toolkit).map(|t| t.version.clone());
            let tools = toollock::fetch_toolkit(up, &toolkit, pinned.as_deref())
                .await
                .map_err(|e| format!("cannot read toolkit {toolkit}: {e}"))?;
            let version = pinned.unwrap_or_else(|| version_of(&tools));
            match tools.iter().find(|t| {
                t["slug"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(slug))
            }) {
                Some(t) => {
                    let findings = findings(t, &toolkit, settings);
                    new.insert(t, &toolkit, &version, findings);
                }
                None => {
                    eprintln!("{slug}: Composio no longer lists it; removed from the lock");
                    new.tools.remove(slug);
                }
            }
        }
    } else {
        let toolkits: Vec<String> = if !args.toolkits.is_empty() {
            args.toolkits
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect()
        } else if let Some(e) = existing.as_ref().filter(|e| !e.toolkits.is_empty()) {
            e.toolkits.keys().cloned().collect()
        } else {
            default_toolkits(config, up).await?
        };
        new = LockFile::new();
        for tk in &toolkits {
            let tools = toollock::fetch_toolkit(up, tk, None)
                .await
                .map_err(|e| format!("cannot read toolkit {tk}: {e}"))?;
            let version = version_of(&tools);
            new.toolkits.insert(
                tk.clone(),
                toollock::LockedToolkit {
                    version: version.clone(),
                },
            );
            for t in &tools {
                let Some(slug) = t["slug"].as_str().map(str::to_ascii_uppercase) else {
                    continue;
                };
                let found = findings(t, tk, settings);
                let definition = toollock::canonical(t);
                read.insert(slug.clone(), definition.clone());
                let reviewed = old.tools.get(&slug).is_some_and(|l| {
                    l.definition == definition
                        && found.iter().all(|f| l.accepted_findings.contains(f))
                });
                if found.is_empty() || accept.contains(&slug) || reviewed {
                    new.insert(t, tk, &version, found);
                } else {
                    flagged.push((slug, found));
                }
            }
        }
    }
    let mut shown = definitions(&new);
    shown.extend(read);
    let changes = diff(&definitions(&old), &shown);
    if existing.is_some() {
        if changes.is_empty() {
            println!("no change to the locked definitions");
        } else {
            println!("changes against {}:", settings.path.display());
            for c in &changes {
                println!("{c}");
            }
        }
    }
    if !flagged.is_empty() {
        eprintln!("refusing to lock tools the scan flags (nothing written):");
        for (slug, found) in &flagged {
            eprintln!("! {slug}");
            for f in found {
                eprintln!("    {f}");
            }
        }
        eprintln!("review them, then re-run with --accept TOOL for each one you accept");
        return Ok(ExitCode::from(EXIT_DRIFT));
    }
    new.save(&settings.path).map_err(|e| e.to_string())?;
    println!(
        "wrote {}: {} tools of {} toolkits",
        settings.path.display(),
        new.tools.len(),
        new.toolkits.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The toolkit Composio files `slug` under (`GET /tools/{slug}`), for `--accept` of a tool
/// the lock does not have yet.
async fn tool_toolkit(up: &Upstream, slug: &str) -> Result<String, String> {
    let conns = crate::connections::Connections::new(
        up.clone(),
        crate::config::ConnectionsConfig::default(),
    );
    conns
        .tool(slug)
        .await
        .map(|i| i.toolkit)
        .map_err(|e| format!("cannot find tool {slug}: {e} (name its toolkit with --toolkits)"))
}

fn findings(tool: &Value, toolkit: &str, settings: &ToolsLockConfig) -> Vec<String> {
    if !settings.scan {
        return Vec::new();
    }
    scan(&toollock::canonical(tool), toolkit, &settings.allowed_hosts)
        .iter()
        .map(ToString::to_string)
        .collect()
}

async fn run_diff(settings: &ToolsLockConfig, up: &Upstream) -> Result<ExitCode, String> {
    let lock = LockFile::load(&settings.path).map_err(|e| e.to_string())?;
    let mut now: BTreeMap<String, Value> = BTreeMap::new();
    let mut flagged: Vec<String> = Vec::new();
    for (tk, pinned) in &lock.toolkits {
        let tools = toollock::fetch_toolkit(up, tk, Some(&pinned.version))
            .await
            .map_err(|e| format!("cannot read toolkit {tk}: {e}"))?;
        for t in &tools {
            let Some(slug) = t["slug"].as_str().map(str::to_ascii_uppercase) else {
                continue;
            };
            let accepted = lock
                .tools
                .get(&slug)
                .map(|l| l.accepted_findings.clone())
                .unwrap_or_default();
            for f in findings(t, tk, settings) {
                if !accepted.contains(&f) {
                    flagged.push(format!("! {slug}: {f}"));
                }
            }
            now.insert(slug, toollock::canonical(t));
        }
    }
    let changes = diff(&definitions(&lock), &now);
    if changes.is_empty() && flagged.is_empty() {
        println!(
            "no drift: {} tools of {} toolkits as locked",
            lock.tools.len(),
            lock.toolkits.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("drift between {} and Composio:", settings.path.display());
    for c in &changes {
        println!("{c}");
    }
    for f in &flagged {
        println!("{f}");
    }
    println!("review it, then accept with `entitygate tools lock --config FILE --accept TOOL`");
    Ok(ExitCode::from(EXIT_DRIFT))
}
