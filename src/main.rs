//! The `entitygate` binary: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A fail-closed reverse proxy that pins every Composio call to the caller's verified identity.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration (secrets and key files included) and exit; report every
    /// broken constraint on tool arguments.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// Also ask Composio (read-only) for the input schema of each tool a constraint
        /// names, and report parameters the tools do not have and visible type mismatches;
        /// and whether it refuses the key for something the configuration needs (a scoped
        /// project key without a permission it uses).
        #[arg(long)]
        live: bool,
    },
    /// Run the gateway against a built-in sandbox Composio, with two demo users.
    #[cfg(feature = "sandbox")]
    Demo(entitygate::cli::demo::DemoArgs),
    /// Dry-run one request against a configuration: identity, route, invocations, the rule
    /// deciding each, the body after pinning; nothing is forwarded.
    Explain(entitygate::cli::explain::ExplainArgs),
    /// The kill switch of a running gateway, through its admin listener: add, list and
    /// lift deny rules. The admin token comes from $ENTITYGATE_ADMIN_TOKEN (--token-env) or
    /// --token-file.
    Deny(entitygate::cli::killswitch::DenyArgs),
    /// The tool-definition lock (`[tools_lock]`): `lock` reads the reviewed toolkits'
    /// definitions from Composio and writes the lock; `diff` prints the drift (exit 1).
    Tools(entitygate::cli::tools::ToolsArgs),
    /// Approval requests of a running gateway, through its admin listener: list them, approve
    /// or deny one as a named operator (token from $ENTITYGATE_ADMIN_TOKEN (--token-env) or
    /// --token-file).
    Approvals(entitygate::cli::approvals::ApprovalsArgs),
    /// Tools for the decision log (`[audit] path`).
    AuditLog {
        #[command(subcommand)]
        command: AuditLogCommand,
    },
    /// List connections that need their user's attention (JSON lines) and notify the app.
    Audit {
        /// The TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditLogCommand {
    /// Check the hash chain (and HMACs) of audit log files, oldest first; exits non-zero at
    /// the first line that breaks it.
    Verify(entitygate::cli::audit::VerifyArgs),
}

/// `EX_USAGE`: the configuration is unusable.
const EXIT_CONFIG: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config: path } => {
            let config = match entitygate::Config::load(&path) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            entitygate::logging::init(config.log.format);
            let gateway = match entitygate::Gateway::builder(config)
                .config_path(&path)
                .build()
                .await
            {
                Ok(g) => g,
                Err(e) => return config_error(&e),
            };
            let listener = match tokio::net::TcpListener::bind(gateway.listen_addr()).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!(
                        "entitygate: cannot listen on {}: {e}",
                        gateway.listen_addr()
                    );
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match gateway
                .serve(listener, entitygate::server::shutdown_signal())
                .await
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("entitygate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config, live } => entitygate::cli::check::run(&config, live).await,
        #[cfg(feature = "sandbox")]
        Command::Demo(args) => entitygate::cli::demo::run(args).await,
        Command::Explain(args) => entitygate::cli::explain::run(&args).await,
        Command::Deny(args) => entitygate::cli::killswitch::run(&args).await,
        Command::Approvals(args) => entitygate::cli::approvals::run(&args).await,
        Command::AuditLog {
            command: AuditLogCommand::Verify(args),
        } => entitygate::cli::audit::verify(&args),
        Command::Audit { config } => entitygate::cli::expiry::run(&config).await,
        Command::Tools(args) => entitygate::cli::tools::run(&args).await,
    }
}

fn config_error(e: &entitygate::config::ConfigError) -> ExitCode {
    eprintln!("entitygate: {e}");
    ExitCode::from(EXIT_CONFIG)
}
