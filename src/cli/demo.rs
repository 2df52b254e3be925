//! `entitygate demo`: the gateway in front of the built-in sandbox Composio, with two demo
//! users and ready-to-paste commands, so a newcomer sees user A's forged request arrive as
//! user A without a Composio account.

/// `println!` for the banner, through [`say`].
macro_rules! say_line {
    ($($arg:tt)*) => {
        say(format_args!("{}\n", format_args!($($arg)*)))
    };
}

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header};

use crate::config::{Config, LogFormat};
use crate::sandbox::Sandbox;

/// Options of `entitygate demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Serve TLS with the test-only dev certificate in this directory (`server.crt`,
    /// `server.key`), trusted through `ca.crt`. A relative path is looked up from the working
    /// directory, then from the source checkout (so `--tls-dir certs/dev` works anywhere).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Log every request that reaches the sandbox Composio (method, path, query, body).
    #[arg(long, short)]
    pub verbose: bool,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub for_secs: Option<u64>,
    /// The audit events printed below the banner: entitygate's JSON lines, or OCSF events
    /// (`[audit] format`).
    #[arg(long, value_parser = ["entitygate", "ocsf"], default_value = "entitygate")]
    pub audit_format: String,
}

/// Mints an HS256 demo token for `user`, valid for `ttl_secs`.
///
/// # Errors
/// Never in practice (HS256 signing of a small object).
pub fn mint(
    secret: &[u8],
    issuer: &str,
    audience: &str,
    user: &str,
    ttl_secs: u64,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let claims = serde_json::json!({
        "sub": user, "iss": issuer, "aud": audience, "iat": now, "exp": now + ttl_secs,
    });
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret),
    )
}

/// Runs the demo until Ctrl-C (or `--for-secs`).
pub async fn run(args: DemoArgs) -> ExitCode {
    crate::logging::init(LogFormat::Text);
    let api_key = format!("demo_project_key_{}", uuid::Uuid::new_v4().simple());
    let secret =
        uuid::Uuid::new_v4().simple().to_string() + &uuid::Uuid::new_v4().simple().to_string();
    let tls_dir = match args.tls_dir.as_deref().map(resolve_tls_dir).transpose() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("entitygate demo: --tls-dir: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sandbox = Sandbox::with_demo_data(&api_key);
    sandbox.set_verbose(args.verbose);
    // A long-running demo keeps the newest requests only.
    sandbox.set_record_limit(1_000);
    let upstream = match sandbox.start().await {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("entitygate demo: cannot start the sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tls = tls_dir.as_ref().map(|d| {
        format!(
            "[tls]\ncert = {:?}\nkey = {:?}\n",
            d.join("server.crt"),
            d.join("server.key")
        )
    });
    // The demo's files (its config, the sandbox's project key, the tool lock) live in a
    // directory of their own, so `entitygate tools diff|lock --config` works on them.
    let dir = std::env::temp_dir().join(format!("entitygate-demo-{}", std::process::id()));
    let toml = format!(
        r#"
listen = "{listen}"
{tls}
[upstream]
base_url = "http://{upstream}"
api_key_file = "composio.key"
[auth]
issuer = "https://demo.entitygate.localhost/"
audience = "entitygate"
[[auth.keys]]
alg = "HS256"
secret_env = "ENTITYGATE_JWT_SECRET"
[mcp]
front_door = true
[tools_lock]
path = "tools.lock.json"
[audit]
format = "{audit_format}"
"#,
        listen = args.listen,
        tls = tls.unwrap_or_default(),
        audit_format = args.audit_format,
    );
    let config_path = dir.join("entitygate.toml");
    let config = match write_demo_files(&dir, &toml, &api_key)
        .and_then(|()| lock_demo_toolkits(&sandbox, &dir.join("tools.lock.json")))
        .and_then(|()| Config::load(&config_path).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("entitygate demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env: HashMap<String, String> = [
        ("COMPOSIO_API_KEY".to_owned(), api_key.clone()),
        ("ENTITYGATE_JWT_SECRET".to_owned(), secret.clone()),
    ]
    .into();
    let gateway = match crate::Gateway::builder(config)
        .env(env)
        .config_path(&config_path)
        .build()
        .await
    {
        Ok(g) => g,
        Err(e) => {
            eprintln!("entitygate demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "entitygate demo: cannot listen on {}: {e} (try --listen 127.0.0.1:0)",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(args.listen);
    let tokens: Vec<(String, String)> = ["alice", "bob"]
        .iter()
        .filter_map(|u| {
            mint(
                secret.as_bytes(),
                "https://demo.entitygate.localhost/",
                "entitygate",
                u,
                24 * 3600,
            )
            .ok()
            .map(|t| ((*u).to_owned(), t))
        })
        .collect();
    print_banner(addr, upstream, tls_dir.as_deref(), &tokens);
    print_lock_banner(&format!("http://{addr}"), upstream, &config_path);
    let stop = async move {
        match args.for_secs {
            Some(s) => tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(s)) => {}
                () = crate::server::shutdown_signal() => {}
            },
            None => crate::server::shutdown_signal().await,
        }
    };
    let served = gateway.serve(listener, stop).await;
    sandbox.stop();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("entitygate demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The toolkits the demo's security team "reviewed": locked when the demo starts.
const DEMO_LOCKED: &[&str] = &["github", "hackernews"];

fn write_demo_files(dir: &Path, toml: &str, api_key: &str) -> Result<(), String> {
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("{}: {e}", dir.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write("entitygate.toml", toml)?;
    write("composio.key", api_key)
}

/// Locks [`DEMO_LOCKED`] as the sandbox serves them now (what `entitygate tools lock` would
/// write; read from the sandbox directly, before the gateway exists).
fn lock_demo_toolkits(sandbox: &Sandbox, path: &Path) -> Result<(), String> {
    let mut lock = crate::toollock::LockFile::new();
    for tk in DEMO_LOCKED {
        for t in sandbox.tool_definitions(tk) {
            let version = t["version"].as_str().unwrap_or("latest").to_owned();
            lock.insert(&t, tk, &version, Vec::new());
        }
    }
    lock.save(path).map_err(|e| e.to_string())
}

fn print_lock_banner(base: &str, upstream: SocketAddr, config: &Path) {
    let poison = crate::sandbox::POISON_PATH;
    let pid = std::process::id();
    let config = config.display();
    say_line!(
        r#"Tool lock: github and hackernews were locked at start ({config} -> tools.lock.json).

# 9. A rug pull: the sandbox "poisons" one tool upstream (an injected instruction in hidden
#    Unicode, a new bcc parameter). The gateway drops it from listings and refuses to run it:
curl -s -X POST http://{upstream}{poison}HACKERNEWS_GET_FRONTPAGE
curl -s {base}/api/v3.1/tools/execute/HACKERNEWS_GET_FRONTPAGE -H "x-api-key: $ALICE_TOKEN"   -H 'content-type: application/json' -d '{{"arguments":{{}}}}'
#    Review the diff (exit 1 while there is drift), accept the tool, reload the gateway:
entitygate tools diff --config {config}
entitygate tools lock --config {config} --accept HACKERNEWS_GET_FRONTPAGE && kill -HUP {pid}
#    (or restore it upstream: curl -s -X DELETE http://{upstream}{poison}HACKERNEWS_GET_FRONTPAGE)
"#
    );
}

/// The directory holding `server.crt` and `server.key`, absolute: `dir` as given (relative to
/// the working directory), else relative to the source checkout the binary was built from.
fn resolve_tls_dir(dir: &Path) -> Result<PathBuf, String> {
    let mut tried = vec![dir.to_path_buf()];
    if dir.is_relative() {
        tried.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(dir));
    }
    for candidate in &tried {
        if candidate.join("server.crt").is_file() && candidate.join("server.key").is_file() {
            return candidate
                .canonicalize()
                .map_err(|e| format!("{}: {e}", candidate.display()));
        }
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(format!(
        "no server.crt and server.key in {} (the dev certificate is in certs/dev)",
        tried.join(" or ")
    ))
}

/// The demo's auth config ids (one per toolkit that needs a connection): what
/// `connected_accounts.link(user_id, auth_config_id)` takes, the workaround for the refused
/// `toolkits.authorize`.
const AUTH_CONFIGS: &str =
    "ac_github, ac_slack, ac_gmail, ac_notion, ac_composio_search, ac_text_to_pdf";

fn print_banner(
    addr: SocketAddr,
    upstream: SocketAddr,
    tls_dir: Option<&Path>,
    tokens: &[(String, String)],
) {
    let scheme = if tls_dir.is_some() { "https" } else { "http" };
    let host = if tls_dir.is_some() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    let base = format!("{scheme}://{host}");
    let ca = tls_dir.map(|d| d.join("ca.crt"));
    let curl_ca = ca
        .as_ref()
        .map(|ca| format!(" --cacert {}", ca.display()))
        .unwrap_or_default();
    // httpx (composio 0.30) trusts the private CA through SSL_CERT_FILE.
    let py_ca = ca
        .as_ref()
        .map(|ca| format!("SSL_CERT_FILE={} ", ca.display()))
        .unwrap_or_default();
    let log = crate::sandbox::REQUEST_LOG_PATH;
    say_line!("\nentitygate demo: gateway {base}  ->  sandbox Composio http://{upstream}");
    say_line!(
        "The gateway holds the sandbox's project key; the agents below only hold their user's JWT."
    );
    say_line!("Demo auth config ids (for connected_accounts.link): {AUTH_CONFIGS}\n");
    for (user, token) in tokens {
        say_line!("export {}_TOKEN={token}", user.to_uppercase());
    }
    say_line!(
        r#"
# 1. Alice's agent executes a tool but forges Bob's user id: it runs as alice.
curl -s{curl_ca} {base}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE \
  -H "x-api-key: $ALICE_TOKEN" -H 'content-type: application/json' \
  -d '{{"user_id":"bob","arguments":{{"owner":"acme","repo":"app","title":"hi"}}}}'

# 2. Gmail: alice's connection has expired, so the gateway refuses before Composio sees it.
curl -s{curl_ca} {base}/api/v3.1/tools/execute/GMAIL_SEND_EMAIL \
  -H "x-api-key: $ALICE_TOKEN" -H 'content-type: application/json' -d '{{"arguments":{{}}}}'

# 3. Routes the gateway does not know are refused (here: project API keys).
curl -s{curl_ca} {base}/api/v3.1/api_keys -H "x-api-key: $ALICE_TOKEN"

# 4. The Python SDK, unchanged but for its base URL and key (pip install composio==0.30.0).
#    dangerously_skip_version_check: composio 0.30 itself refuses to execute a tool at toolkit
#    version "latest" unless told to (or given toolkit_versions=...); the gateway does not care.
{py_ca}COMPOSIO_BASE_URL={base} COMPOSIO_API_KEY=$BOB_TOKEN python3 -c '
from composio import Composio
c = Composio(allow_tracking=False)
print(c.tools.execute("GITHUB_CREATE_ISSUE", {{"owner": "acme", "repo": "app", "title": "hi"}},
                      user_id="alice", dangerously_skip_version_check=True))'

# 5. What reached the sandbox Composio (the newest 1000 requests; --verbose logs each one):
curl -s http://{upstream}{log}
"#
    );
    print_mcp_banner(&base, &curl_ca);
    say(format_args!(
        "Ctrl-C stops the demo. Audit events (one per decision) are logged below.\n"
    ));
}

/// The MCP half of the banner: the front door with curl (stateless 2026-07-28 requests, one
/// POST each), an MCP client's configuration, and a Composio session with `mcp=True`.
fn print_mcp_banner(base: &str, curl_ca: &str) {
    let h = "-H \"authorization: Bearer $ALICE_TOKEN\" -H 'content-type: application/json' \\\n  \
             -H 'accept: application/json, text/event-stream' -H 'mcp-protocol-version: 2026-07-28'";
    let meta = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    say_line!(
        r#"MCP: {base}/mcp is each user's own MCP endpoint (the JWT says whose).

# 6. Alice's tools over MCP; a tool call that runs as alice; one her expired Gmail refuses:
curl -s{curl_ca} {base}/mcp {h} \
  -H 'mcp-method: tools/list' -d '{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{{meta}}}}}'
for tool in GITHUB_CREATE_ISSUE GMAIL_SEND_EMAIL; do echo; curl -s{curl_ca} {base}/mcp {h} \
  -H 'mcp-method: tools/call' -H 'mcp-name: COMPOSIO_MULTI_EXECUTE_TOOL' \
  -d '{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"COMPOSIO_MULTI_EXECUTE_TOOL",
       "arguments":{{"tools":[{{"tool_slug":"'$tool'","arguments":{{"owner":"acme","repo":"app","title":"hi"}}}}]}},{meta}}}}}'
done

# 7. Any MCP client (Claude, Cursor, OpenAI Agents SDK, ...): a Streamable HTTP server with
#    the user's JWT as its bearer token, e.g. in an mcp.json:
{{"mcpServers": {{"composio": {{"url": "{base}/mcp", "headers": {{"Authorization": "Bearer <ALICE_TOKEN>"}}}}}}}}

# 8. Composio's own sessions over MCP (pip install composio==0.30.0 mcp==2.3.0): the session's
#    MCP URL is on the gateway, and the JWT header goes with it.
COMPOSIO_BASE_URL={base} COMPOSIO_API_KEY=$ALICE_TOKEN python3 -c '
import asyncio
from composio import Composio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
s = Composio(allow_tracking=False).sessions.create(user_id="alice", mcp=True)
print(s.mcp.url)
async def main():
    async with create_mcp_http_client(headers=s.mcp.headers) as http, \
            Client(streamable_http_client(s.mcp.url, http_client=http)) as c:
        print([t.name for t in (await c.list_tools()).tools])
asyncio.run(main())'
"#
    );
}

/// Writes a banner line. A closed stdout (the reader went away, e.g. `| head`) must not stop
/// a demo that is serving: the error is ignored rather than panicking as `println!` would.
fn say(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(args).and_then(|()| out.flush());
}
