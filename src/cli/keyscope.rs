//! `check-config --live`, the key's half: whether Composio refuses the configured project key
//! for something the configuration will need. Composio's scoped project keys reach only the
//! permission areas chosen when they were created, and a refused area surfaces as a generic
//! 401 at the first request that needs it; this asks first, with read-only requests only (one
//! per capability the configuration uses), and answers findings for the caller to print.
//!
//! Writes (tool execution, proxy execute, creating sessions and connections) cannot be probed
//! without doing something: [`WRITES_NOT_PROBED`] names them for the report.

use http::StatusCode;

use crate::config::{Config, ConfigError, Env};
use crate::upstream::{build_client, Upstream};

/// A user id no tenant has: the probes that take a user filter ask about it, so that no
/// tenant's data is read to answer them.
const PROBE_USER: &str = "entitygate-check-config";

/// One read the gateway makes with the project key, and the request that shows whether the
/// key may make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// What the gateway uses it for.
    pub capability: &'static str,
    /// Composio's permission area and the access level it needs.
    pub permission: &'static str,
    /// The read-only request (path and query under the base URL).
    pub path: String,
}

/// What Composio answered a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Any answer but 401/403: the key may use the area (a 404 for the probe's absent
    /// resource comes after the key was accepted).
    Allowed,
    /// 401 or 403: the key is refused there.
    Refused(StatusCode),
    /// No answer to judge by (unreachable, timed out, a 5xx).
    Unknown(String),
}

/// A probe and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub probe: Probe,
    pub outcome: Outcome,
}

/// The permissions a key needs for writes, which no read-only request can check.
pub const WRITES_NOT_PROBED: &str = "Tool execution (write), Proxy execute (write, unless \
     [policy] allow_proxy_execute = false), Sessions (write: sessions and the MCP front door), \
     Connected accounts (write: agents linking accounts), Triggers (write: agents managing \
     triggers)";

/// The probes for what `config` uses, in a stable order.
pub fn probes(config: &Config) -> Vec<Probe> {
    let user = format!("user_ids={PROBE_USER}");
    let mut probes = vec![
        Probe {
            capability: "tool metadata (the toolkit of each tool executed)",
            permission: "Tools: read",
            path: "/api/v3.1/tools?limit=1".into(),
        },
        Probe {
            capability: if config.connections.gate {
                "connection status and account ownership"
            } else {
                "account ownership"
            },
            permission: "Connected accounts: read",
            path: format!("/api/v3.1/connected_accounts?{user}&limit=1"),
        },
        Probe {
            capability: "session ownership (tool router sessions, MCP sessions)",
            permission: "Sessions: read",
            path: format!("/api/v3.1/tool_router/session/{PROBE_USER}"),
        },
        Probe {
            capability: "trigger ownership",
            permission: "Triggers: read",
            path: format!("/api/v3.1/trigger_instances/active?{user}&limit=1"),
        },
        Probe {
            capability: "MCP servers (hosted MCP URLs relayed through the gateway)",
            permission: "MCP: read",
            path: "/api/v3.1/mcp/servers?limit=1".into(),
        },
    ];
    if config.audit_job.is_some() {
        probes.push(Probe {
            capability: "the audit job's scans ([audit_job])",
            permission: "Connected accounts: read",
            path: format!("/api/v3.1/connected_accounts?{user}&statuses=EXPIRED&limit=1"),
        });
    }
    probes
}

/// Runs [`probes`] against the configured Composio with the configured key (the current one
/// only: a previous key being rotated out is not asked, so it cannot hide a refusal).
///
/// # Errors
/// When the key or the base URL cannot be loaded (as `check-config` reports them).
pub async fn check(config: &Config, env: &dyn Env) -> Result<Vec<Finding>, ConfigError> {
    let mut cfg = config.upstream.clone();
    cfg.previous_api_key_env = None;
    cfg.previous_api_key_file = None;
    let upstream = Upstream::new(&cfg, env, build_client(&cfg)?)?;
    let mut findings = Vec::new();
    for probe in probes(config) {
        let outcome = match upstream.get_json(&probe.path).await {
            Ok((status, _)) => judge(status),
            // A body that is not JSON still came with a status, but get_json keeps only the
            // error; say so rather than guess.
            Err(e) => Outcome::Unknown(e.to_string()),
        };
        findings.push(Finding { probe, outcome });
    }
    Ok(findings)
}

fn judge(status: StatusCode) -> Outcome {
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Outcome::Refused(status),
        s if s.is_server_error() => Outcome::Unknown(format!("HTTP {}", s.as_u16())),
        _ => Outcome::Allowed,
    }
}

/// One line per finding, for `check-config --live`.
pub fn report_line(f: &Finding) -> String {
    let Probe {
        capability,
        permission,
        ..
    } = &f.probe;
    match &f.outcome {
        Outcome::Allowed => format!("live: {permission}: ok ({capability})"),
        Outcome::Refused(s) => format!(
            "live: {permission}: REFUSED (HTTP {}) - the key cannot be used for {capability}; \
             create a project key with {permission} (README \"The Composio key\")",
            s.as_u16()
        ),
        Outcome::Unknown(why) => {
            format!("live: {permission}: could not check ({why}) - needed for {capability}")
        }
    }
}

#[cfg(all(test, feature = "sandbox"))]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sandbox::Sandbox;

    const KEY: &str = "sbx_keyscope";

    fn config(upstream: std::net::SocketAddr, extra: &str) -> Config {
        let toml = format!(
            "listen = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"http://{upstream}\"\n\
             api_key_env = \"KEY\"\n[auth]\n[[auth.keys]]\nalg = \"HS256\"\n\
             secret_env = \"JWT\"\n{extra}"
        );
        Config::from_toml(&toml).unwrap_or_else(|e| panic!("{e}"))
    }

    fn env(key: &str) -> HashMap<String, String> {
        [("KEY".to_owned(), key.to_owned())].into()
    }

    fn refused(findings: &[Finding]) -> Vec<&str> {
        findings
            .iter()
            .filter(|f| matches!(f.outcome, Outcome::Refused(_)))
            .map(|f| f.probe.capability)
            .collect()
    }

    #[tokio::test]
    async fn a_full_access_key_passes_every_probe() {
        let sandbox = Sandbox::with_demo_data(KEY);
        let addr = sandbox.start().await.unwrap();
        let findings = check(&config(addr, ""), &env(KEY)).await.unwrap();
        assert_eq!(findings.len(), 5);
        assert!(
            findings.iter().all(|f| f.outcome == Outcome::Allowed),
            "{findings:?}"
        );
        // Read-only, and about no tenant: every probe is a GET, any user filter the probe user.
        for r in sandbox.requests() {
            assert_eq!(r.method, "GET", "{r:?}");
            let query = r.query.unwrap_or_default();
            assert!(
                !query.contains("user_ids") || query.contains(PROBE_USER),
                "{query}"
            );
        }
        sandbox.stop();
    }

    #[tokio::test]
    async fn a_scoped_key_is_reported_where_it_is_refused() {
        let sandbox = Sandbox::with_demo_data(KEY);
        sandbox.set_key_refused_for(KEY, &["/api/v3.1/connected_accounts", "/api/v3.1/mcp"]);
        let addr = sandbox.start().await.unwrap();
        let audit_job = "[audit_job]\nevery_secs = 3600\nstate_path = \"/tmp/x.redb\"\n";
        let findings = check(&config(addr, audit_job), &env(KEY)).await.unwrap();
        assert_eq!(
            refused(&findings),
            [
                "connection status and account ownership",
                "MCP servers (hosted MCP URLs relayed through the gateway)",
                "the audit job's scans ([audit_job])",
            ]
        );
        let line = report_line(&findings[1]);
        assert!(line.contains("REFUSED (HTTP 401)"), "{line}");
        assert!(line.contains("Connected accounts: read"), "{line}");
        sandbox.stop();
    }

    #[tokio::test]
    async fn a_previous_key_does_not_hide_a_refusal() {
        let sandbox = Sandbox::with_demo_data(KEY);
        // The rotation window: both keys accepted, the old one with full access, the new one
        // scoped without connected accounts (the gateway would retry its reads with the old).
        sandbox.set_accepted_keys(&[KEY, "old"]);
        sandbox.set_key_refused_for(KEY, &["/api/v3.1/connected_accounts"]);
        let addr = sandbox.start().await.unwrap();
        let mut cfg = config(addr, "");
        cfg.upstream.previous_api_key_env = Some("OLD".into());
        let mut e = env(KEY);
        e.insert("OLD".into(), "old".into());
        let findings = check(&cfg, &e).await.unwrap();
        assert_eq!(
            refused(&findings),
            ["connection status and account ownership"]
        );
        sandbox.stop();
    }

    #[tokio::test]
    async fn an_unreachable_composio_is_unknown_not_allowed() {
        // A port nothing listens on any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let findings = check(&config(addr, ""), &env(KEY)).await.unwrap();
        assert!(
            findings
                .iter()
                .all(|f| matches!(f.outcome, Outcome::Unknown(_))),
            "{findings:?}"
        );
    }
}
