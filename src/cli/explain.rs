//! `entitygate explain`: the command line of [`crate::explain`]'s dry run.

use std::path::PathBuf;
use std::process::ExitCode;

use http::Method;

use crate::config::{Config, ProcessEnv};
use crate::explain::{explain, ExplainRequest};

/// `entitygate explain`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    /// The TOML configuration file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The caller's JWT.
    #[arg(long)]
    pub token: String,
    /// The request line: `"METHOD /path?query"`.
    #[arg(long)]
    pub request: String,
    /// The JSON body.
    #[arg(long, conflicts_with = "body_file")]
    pub body: Option<String>,
    /// A file holding the JSON body.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Ask Composio (read-only) for the tool's toolkit and the connection status.
    #[arg(long)]
    pub live: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Runs `entitygate explain`: 0 when the request would be allowed, 1 when refused, 64 when
/// the configuration or the arguments are unusable.
pub async fn run(args: &ExplainArgs) -> ExitCode {
    let usage = |e: String| {
        eprintln!("entitygate: {e}");
        ExitCode::from(64)
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => return usage(e.to_string()),
    };
    let Some((method, target)) = args.request.trim().split_once(' ') else {
        return usage("--request must be \"METHOD /path\"".into());
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return usage(format!("not a method: {method}"));
    };
    let body = match (&args.body, &args.body_file) {
        (Some(b), _) => Some(b.clone().into_bytes()),
        (None, Some(p)) => match std::fs::read(p) {
            Ok(b) => Some(b),
            Err(e) => return usage(format!("{}: {e}", p.display())),
        },
        (None, None) => None,
    };
    let req = ExplainRequest {
        method,
        target: target.trim().to_owned(),
        token: args.token.clone(),
        body,
        live: args.live,
    };
    let explained = match explain(&config, &ProcessEnv, &req).await {
        Ok(e) => e,
        Err(e) => return usage(e.to_string()),
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explained).unwrap_or_default()
        );
    } else {
        print!("{}", explained.to_text());
    }
    if explained.decision == "allow" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
