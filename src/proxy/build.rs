//! The rules snapshot built from a configuration: one [`Shared`] from one [`Config`], for the
//! gateway's start, every reload ([`crate::server`]) and the dry run ([`crate::explain`]), so
//! that what a dry run explains is built exactly as what the gateway serves.
//!
//! A rebuild keeps every piece of state whose meaning the new configuration does not change
//! ([`build_shared`]): caches, counters, the audit writer and job, the kill switch, the fleet.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use super::Shared;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, Env};
use crate::connections::Connections;
use crate::upstream::{self, Upstream};

/// Builds the reloadable part of the gateway. `previous` lends every piece of state whose
/// meaning the new config does not change: the authenticator (its verified-token cache and
/// JWKS, with the refetch rate limit), the rate limiter's buckets, the in-flight counter, the
/// connection cache, the audit sink and the audit job. The background tasks are returned
/// only when they must be replaced.
pub(crate) async fn build_shared(
    config: &Config,
    env: &dyn Env,
    previous: Option<&Shared>,
) -> Result<(Shared, Option<Vec<tokio::task::JoinHandle<()>>>), ConfigError> {
    config.validate()?;
    let client = upstream::build_client(&config.upstream)?;
    let upstream = Upstream::new(&config.upstream, env, client.clone())?;
    let (tool_policy, warnings) = crate::toolpolicy::ToolPolicy::compile(&config.policy)?;
    let mut claims = tool_policy.claims_read();
    // The kill switch refuses by token id; the audit names the token by id and issuer.
    for kept in ["jti", "iss"] {
        if !claims.iter().any(|c| c == kept) {
            claims.push(kept.into());
        }
    }
    let key_digest: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(upstream.api_key()).into()
    };
    let same_key = |p: &Shared| p.key_digest == key_digest;
    let auth_fingerprint = auth_fingerprint(config, env, &claims);
    let (auth, tasks) = match previous {
        Some(p) if p.auth_fingerprint == auth_fingerprint => (p.auth.clone(), None),
        _ => {
            let auth = Authenticator::new(&config.auth, env, client.clone())
                .await?
                .keep_claims(claims);
            let refresh = auth.spawn_refresh();
            (auth, Some(vec![refresh]))
        }
    };
    let tls = match &config.tls {
        Some(t) => Some(TlsAcceptor::from(crate::tls::server_config(t)?)),
        None => None,
    };
    let cluster = shared_cluster(config, env, previous)?;
    let connections = match previous {
        Some(p) if p.reuse_connections(config) && same_key(p) => p.connections.clone(),
        _ => Arc::new(Connections::new(
            upstream.clone(),
            config.connections.clone(),
        )),
    };
    let audit_key = crate::audit::HmacKey::from_config(&config.audit, env)?;
    let audit = match previous {
        // The same file: the running writer keeps it (and reopens it once the reload is in).
        Some(p) if p.audit.path() == config.audit.path.as_deref() => {
            p.audit.with_settings(audit_key, config.audit.format)
        }
        _ => crate::audit::Sink::open_as(
            config.audit.path.as_deref(),
            audit_key,
            config.audit.format,
        )
        .map_err(|e| ConfigError::File {
            key: "audit.path".into(),
            path: config.audit.path.clone().unwrap_or_default(),
            reason: e.to_string(),
        })?
        // The console keeps watching the same feed.
        .sharing_feed(previous.map(|p| &p.audit)),
    };
    let expiry = match &config.audit_job {
        None => None,
        Some(job) => {
            let next = crate::expiry::Expiry::new(job, upstream.clone(), client, env)?;
            // The running job is kept only when it would ask Composio the same way (same
            // cache, same key); its open store is handed over in any case (one lock per file).
            let old = previous.and_then(|p| p.expiry.as_ref().map(|e| (p, e)));
            match old {
                Some((p, old))
                    if p.reuse_connections(config) && same_key(p) && old.same_as(&next) =>
                {
                    Some(old.clone())
                }
                Some((_, old)) => {
                    old.hand_over_store(&next);
                    Some(Arc::new(next))
                }
                None => Some(Arc::new(next)),
            }
        }
    };
    if let Some(c) = &cluster {
        connections.attach(c);
        if let Some(job) = &expiry {
            job.attach(c);
        }
    }
    let telemetry = match previous.and_then(|p| p.telemetry.as_ref()) {
        Some(t) if t.same(&config.telemetry) => Some(t.clone()),
        _ => crate::trace::Telemetry::new(&config.telemetry)?.map(Arc::new),
    };
    for w in &warnings {
        tracing::warn!(warning = %w, "tool policy");
    }
    let (rate, burst) = (config.limits.per_subject_rps, config.limits.burst);
    let limiter = match previous {
        Some(p) if p.limiter.same_settings(rate, burst) => p.limiter.clone(),
        _ => Arc::new(crate::limits::RateLimiter::new(rate, burst)),
    };
    let in_flight = match previous {
        Some(p) if p.max_in_flight == config.limits.max_in_flight => p.in_flight.clone(),
        _ => Arc::new(Semaphore::new(config.limits.max_in_flight)),
    };
    let kill_switch = match previous {
        Some(p) if p.kill_switch.path() == config.state.path.as_deref() => p.kill_switch.clone(),
        _ => Arc::new(open_kill_switch(config)?),
    };
    if let Some(c) = &cluster {
        crate::killswitch::shared::attach(c, &kill_switch);
    }
    let shared = Shared {
        kill_switch,
        key_digest,
        broken: previous.map_or_else(Default::default, |p| p.broken.clone()),
        listen_port: previous.map_or_else(Default::default, |p| p.listen_port.clone()),
        secret: crate::body::Keys::new(
            std::iter::once(upstream.api_key())
                .chain(upstream.previous_api_key())
                .map(bytes::Bytes::copy_from_slice),
        ),
        connections,
        auth,
        upstream,
        policy: config.policy.clone(),
        tool_policy,
        limiter,
        in_flight,
        max_in_flight: config.limits.max_in_flight,
        auth_fingerprint,
        // Kept across reloads: requests in flight at a reload still count against the cap.
        subject_in_flight: previous.map_or_else(Default::default, |p| p.subject_in_flight.clone()),
        limits: config.limits.clone(),
        audit,
        tls,
        expiry,
        telemetry,
        fingerprint: Shared::fingerprint_of(config),
        public_url: config
            .public_url
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_owned()),
        mcp: config.mcp.clone(),
        issuer: config.auth.issuer.clone(),
        front_door: crate::proxy::mcp::front_door::Sessions::default(),
        cluster,
    };
    Ok((shared, tasks))
}

/// The fleet's shared state: started with the first configuration that has `[shared]` and
/// kept for the life of the process (a changed or removed section needs a restart: a fleet
/// whose replicas disagree on where their state lives would not be one gateway).
fn shared_cluster(
    config: &Config,
    env: &dyn Env,
    previous: Option<&Shared>,
) -> Result<Option<Arc<crate::shared::Cluster>>, ConfigError> {
    match (previous, &config.shared) {
        (Some(p), wanted) => {
            let running = p.cluster.as_ref().map(|c| c.config());
            if running != wanted.as_ref() {
                tracing::warn!("[shared] changed; it takes effect at the next restart");
            }
            Ok(p.cluster.clone())
        }
        (None, Some(cfg)) => crate::shared::Cluster::start(cfg, env).map(Some),
        (None, None) => Ok(None),
    }
}

/// The kill switch of `[state] path` (in memory without one).
fn open_kill_switch(config: &Config) -> Result<crate::killswitch::KillSwitch, ConfigError> {
    match &config.state.path {
        Some(path) => crate::killswitch::KillSwitch::open(path).map_err(|e| ConfigError::File {
            key: "state.path".into(),
            path: path.clone(),
            reason: e.to_string(),
        }),
        None => {
            tracing::warn!(
                "no [state] path: kill-switch rules are kept in memory and lost on restart"
            );
            Ok(crate::killswitch::KillSwitch::in_memory())
        }
    }
}

/// A digest of everything the authenticator is built from: `[auth]`, the key material it
/// loads (secrets and key files, so a rotated file is picked up), and the claims it keeps.
fn auth_fingerprint(config: &Config, env: &dyn Env, claims: &[String]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(format!("{:?}\0{claims:?}\0", config.auth).as_bytes());
    for k in &config.auth.keys {
        if let Some(var) = &k.secret_env {
            h.update(env.var(var).unwrap_or_default().as_bytes());
        }
        h.update(b"\0");
        if let Some(path) = &k.secret_file {
            h.update(std::fs::read(path).unwrap_or_default());
        }
        h.update(b"\0");
        if let Some(path) = &k.public_key_file {
            h.update(std::fs::read(path).unwrap_or_default());
        }
        h.update(b"\0");
    }
    h.finalize().into()
}
