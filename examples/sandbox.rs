//! Runs the fake Composio with the demo data set, for manual tests and the SDK drivers.
//!
//! ```text
//! cargo run --example sandbox -- [--port 8765] [--api-key KEY] [--tls] [--log] [--mcp-sse]
//! ```
//!
//! `--log` prints every request (method, path, query, body) to stderr as it arrives.
//! `--mcp-sse` makes the hosted MCP endpoints answer requests as `text/event-stream` (default:
//! `application/json`; a request's `x-sandbox-mcp-answer: json|sse` header overrides).
//!
//! The key defaults to `$SANDBOX_API_KEY`, else `sbx_project_key`. `--tls` serves HTTPS with
//! `certs/dev/server.crt` (trust `certs/dev/ca.crt`). The first line on stdout is
//! `SANDBOX_ADDR=<ip:port>`; the server runs until Ctrl-C or SIGTERM.

use std::path::PathBuf;

use entitygate::sandbox::{McpAnswer, McpConfig, Sandbox};

fn usage() -> ! {
    eprintln!("usage: sandbox [--port N] [--api-key KEY] [--tls] [--log] [--mcp-sse]");
    std::process::exit(64)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut port: u16 = 0;
    let mut api_key = std::env::var("SANDBOX_API_KEY").unwrap_or_else(|_| "sbx_project_key".into());
    let mut tls = false;
    let mut log = false;
    let mut mcp_sse = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                port = args
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| usage())
            }
            "--api-key" => api_key = args.next().unwrap_or_else(|| usage()),
            "--tls" => tls = true,
            "--log" => log = true,
            "--mcp-sse" => mcp_sse = true,
            _ => usage(),
        }
    }
    let sandbox = Sandbox::with_demo_data(&api_key);
    if mcp_sse {
        sandbox.set_mcp_config(McpConfig {
            answer: McpAnswer::Sse,
            ..McpConfig::default()
        });
    }
    let addr = if tls {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/dev");
        sandbox
            .start_tls_on(port, &dir.join("server.crt"), &dir.join("server.key"))
            .await?
    } else {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let s = sandbox.clone();
        tokio::spawn(async move { s.serve(listener).await });
        addr
    };
    let scheme = if tls { "https" } else { "http" };
    println!("SANDBOX_ADDR={addr}");
    println!("sandbox (fake Composio) on {scheme}://{addr}  x-api-key: {api_key}");
    println!("  composio / @composio/core: COMPOSIO_BASE_URL={scheme}://{addr}");
    println!("  composio-core 0.7:         COMPOSIO_BASE_URL={scheme}://{addr}/api");
    println!("  hosted MCP (x-api-key):    {scheme}://{addr}/tool_router/trs_1/mcp (user-1's session), {scheme}://{addr}/v3/mcp/mcp_1?user_id=alice");
    if log {
        let s = sandbox.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                let all = s.requests();
                for r in all.iter().skip(seen) {
                    let query = r
                        .query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default();
                    eprintln!(
                        "{} {}{} {}",
                        r.method,
                        r.path,
                        query,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                seen = all.len();
            }
        });
    }
    shutdown_signal().await?;
    sandbox.stop();
    eprintln!("{} requests served", sandbox.requests().len());
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (background jobs of a non-interactive shell ignore SIGINT).
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
