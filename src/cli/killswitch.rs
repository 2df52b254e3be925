//! `entitygate deny add|list|remove`: the kill switch from a shell, through a running
//! gateway's admin listener (`POST /deny`, `GET /deny`, `DELETE /deny/{id}`).
//!
//! The admin token is read from an environment variable (`--token-env`, default
//! `ENTITYGATE_ADMIN_TOKEN`) or a file (`--token-file`), never from the command line, where
//! any local user could read it in the process list.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use serde_json::{json, Value};

/// Where a running gateway's admin listener is and where its token is read from (an
/// environment variable or a file, never the command line): `deny` and `approvals` alike.
#[derive(clap::Args, Debug)]
pub struct AdminConnection {
    /// The admin listener's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// The environment variable holding the token: the admin token (`[admin] token_env`), or
    /// your operator token to decide approvals.
    #[arg(long, global = true, default_value = "ENTITYGATE_ADMIN_TOKEN")]
    pub token_env: String,
    /// A file holding the token instead (`[admin] token_file`, or your operator token's).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
}

impl AdminConnection {
    /// The token, from `--token-file` if given, else from `--token-env`.
    ///
    /// # Errors
    /// When it is missing, unreadable or empty.
    pub(crate) fn token(&self) -> Result<String, String> {
        read_token(self.token_file.as_deref(), &self.token_env)
    }
}

/// `entitygate deny ...`.
#[derive(clap::Args, Debug)]
pub struct DenyArgs {
    #[command(flatten)]
    pub conn: AdminConnection,
    #[command(subcommand)]
    pub command: DenyCommand,
}

/// What to do with the deny rules.
#[derive(clap::Subcommand, Debug)]
pub enum DenyCommand {
    /// Add a deny rule (name exactly one target); prints the rule with its id.
    Add {
        /// Refuse every request of this subject (as audit lines name it).
        #[arg(long, group = "target")]
        subject: Option<String>,
        /// Refuse every tool invocation on this toolkit.
        #[arg(long, group = "target")]
        toolkit: Option<String>,
        /// Refuse every tool whose slug matches this glob (`GMAIL_*`).
        #[arg(long, group = "target")]
        tool: Option<String>,
        /// Refuse the token with this `jti`.
        #[arg(long, group = "target")]
        jti: Option<String>,
        /// Refuse everything.
        #[arg(long, group = "target")]
        all: bool,
        /// Why (shown to refused callers and recorded in the audit trail).
        #[arg(long)]
        reason: String,
        /// Lift the rule by itself after this many seconds.
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List the rules that apply now (JSON).
    List,
    /// Lift a rule by its id.
    Remove {
        /// The rule's id (from `add` or `list`).
        id: String,
    },
}

/// Runs `entitygate deny`: 0 on success, 1 when the gateway refused or failed, 64 on a
/// usage error (no token, bad URL).
pub async fn run(args: &DenyArgs) -> ExitCode {
    let token = match args.conn.token() {
        Ok(t) => t,
        Err(e) => return usage(&e),
    };
    let (method, path, body) = match &args.command {
        DenyCommand::Add {
            subject,
            toolkit,
            tool,
            jti,
            all,
            reason,
            expires_in_secs,
        } => {
            let mut rule = serde_json::Map::new();
            let targets = [
                ("subject", subject),
                ("toolkit", toolkit),
                ("tool", tool),
                ("jti", jti),
            ];
            for (k, v) in targets {
                if let Some(v) = v {
                    rule.insert(k.into(), json!(v));
                }
            }
            if *all {
                rule.insert("all".into(), json!(true));
            }
            if rule.is_empty() {
                return usage("name one of --subject, --toolkit, --tool, --jti, --all");
            }
            rule.insert("reason".into(), json!(reason));
            if let Some(s) = expires_in_secs {
                rule.insert("expires_in_secs".into(), json!(s));
            }
            (Method::POST, "/deny".to_owned(), Some(Value::Object(rule)))
        }
        DenyCommand::List => (Method::GET, "/deny".to_owned(), None),
        DenyCommand::Remove { id } => {
            if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
                return usage("a rule id is letters and digits");
            }
            (Method::DELETE, format!("/deny/{id}"), None)
        }
    };
    admin_call(&args.conn.admin, &token, method, &path, body, "deny").await
}

/// The admin token from a file or an environment variable (never the command line).
pub(crate) fn read_token(file: Option<&std::path::Path>, env: &str) -> Result<String, String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_owned())
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => std::env::var(env)
            .map(|t| t.trim().to_owned())
            .map_err(|_| format!("set {env} to the admin token"))?,
    };
    if token.is_empty() {
        return Err("the admin token is empty".into());
    }
    Ok(token)
}

/// One admin API call: prints the answer on success (0), the status and answer on stderr
/// otherwise (1); 64 for an unusable URL. `name` is the subcommand, for messages.
pub(crate) async fn admin_call(
    admin: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    name: &str,
) -> ExitCode {
    let url = format!("{}{path}", admin.trim_end_matches('/'));
    let mut req = Request::builder()
        .method(method)
        .uri(&url)
        .header("authorization", format!("Bearer {token}"));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
        eprintln!("entitygate {name}: not a usable URL: {url}");
        return ExitCode::from(64);
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let answer = async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok::<_, String>((status, bytes))
    };
    match tokio::time::timeout(std::time::Duration::from_secs(30), answer).await {
        Ok(Ok((status, bytes))) => {
            let text = String::from_utf8_lossy(&bytes);
            if status.is_success() {
                println!("{}", text.trim_end());
                ExitCode::SUCCESS
            } else {
                eprintln!("entitygate {name}: {status}: {}", text.trim_end());
                ExitCode::FAILURE
            }
        }
        Ok(Err(e)) => {
            eprintln!("entitygate {name}: {url}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("entitygate {name}: {url}: no answer in 30 s");
            ExitCode::FAILURE
        }
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("entitygate deny: {why}");
    ExitCode::from(64)
}
