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
    let constraints = crate::constraints::Constraints::compile(&config.policy.constraints)?;
    let mut claims = tool_policy.claims_read();
    // The claims the constraints read are kept too (all of them when one reads `claims` as a
    // whole).
    let approval_rules = Arc::new(crate::approvals::Rules::compile(
        config,
        env,
        client.clone(),
    )?);
    // And those approvals' `if` reads.
    let read = constraints
        .claims_read()
        .zip(approval_rules.claims_read())
        .map(|(mut a, b)| {
            a.extend(b);
            a
        });
    let keep_all_claims = match read {
        Some(read) => {
            for c in read {
                if !claims.contains(&c) {
                    claims.push(c);
                }
            }
            false
        }
        None => true,
    };
    // The kill switch refuses by token id; the audit names the token by id and issuer.
    for kept in ["jti", "iss"] {
        if !claims.iter().any(|c| c == kept) {
            claims.push(kept.into());
        }
    }
    if keep_all_claims {
        // (Marks the fingerprint: the same list kept whole is another authenticator.)
        claims = vec!["*".into()];
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
            let auth = Authenticator::new(&config.auth, env, client.clone()).await?;
            let auth = if keep_all_claims {
                auth
            } else {
                auth.keep_claims(claims)
            };
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
            let next = crate::expiry::Expiry::new(job, upstream.clone(), client.clone(), env)?;
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
    let tool_lock = build_tool_lock(config, previous, &audit, cluster.as_ref())?;
    if let Some(lock) = &tool_lock {
        lock.start_schedule(upstream.clone(), cluster.clone());
    }
    let approvals = approvals_store(&cluster, &kill_switch, previous)?;
    let shared = Shared {
        tool_lock,
        kill_switch,
        approvals,
        approval_rules,
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
        constraints,
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

/// The tool lock of `[tools_lock]`: the running one when neither the settings nor the file
/// changed (it keeps the drift it found); else the file read again, keeping the drift that
/// still holds against it. A missing, corrupt or badly edited file fails the build (so a
/// reload is refused and the running lock stays).
fn build_tool_lock(
    config: &Config,
    previous: Option<&Shared>,
    audit: &crate::audit::Sink,
    cluster: Option<&Arc<crate::shared::Cluster>>,
) -> Result<Option<Arc<crate::toollock::ToolLock>>, ConfigError> {
    let Some(settings) = &config.tools_lock else {
        return Ok(None);
    };
    let sink = Arc::new(DriftFound {
        audit: audit.clone(),
        cluster: cluster.cloned(),
    });
    let running = previous.and_then(|p| p.tool_lock.as_ref());
    if let Some(lock) = running.filter(|l| l.same_as(settings)) {
        lock.set_sink(sink);
        return Ok(Some(lock.clone()));
    }
    let lock = crate::toollock::ToolLock::load(settings).map_err(|e| ConfigError::File {
        key: "tools_lock.path".into(),
        path: settings.path.clone(),
        reason: e.to_string(),
    })?;
    if let Some(old) = running {
        lock.inherit(old);
    }
    lock.set_sink(sink);
    let lock = Arc::new(lock);
    if let Some(c) = cluster {
        // Drift another replica found (its scheduled check, its listings) is learnt here.
        let listener: std::sync::Weak<dyn crate::shared::Listener> = Arc::downgrade(&lock) as _;
        c.listen(listener);
    }
    Ok(Some(lock))
}

/// Drift goes into the audit chain, once per tool and version, and to the other replicas.
struct DriftFound {
    audit: crate::audit::Sink,
    cluster: Option<Arc<crate::shared::Cluster>>,
}

impl crate::toollock::DriftSink for DriftFound {
    fn found(&self, d: &crate::toollock::Drift) {
        self.audit.record(
            "tool_drift",
            serde_json::json!({
                "tool": d.tool,
                "toolkit": d.toolkit,
                "version": d.version,
                "kind": d.kind(),
                "locked_hash": d.locked_hash,
                "seen_hash": d.seen_hash,
                "findings": d.findings,
                "carrier": d.carrier,
            }),
        );
        if let (Some(c), Ok(payload)) = (&self.cluster, serde_json::to_string(d)) {
            c.broadcast(crate::shared::Message::Note {
                topic: crate::toollock::DRIFT_TOPIC.to_owned(),
                payload,
            });
        }
    }
}

/// The approvals store: the fleet's Redis with `[shared]`, else the kill switch's `[state]`
/// file (in memory without one). Kept when what it is kept in is.
fn approvals_store(
    cluster: &Option<Arc<crate::shared::Cluster>>,
    kill_switch: &Arc<crate::killswitch::KillSwitch>,
    previous: Option<&Shared>,
) -> Result<Arc<crate::approvals::Store>, ConfigError> {
    use crate::approvals::Store;
    if let Some(p) = previous {
        let same = match cluster {
            Some(_) => p.approvals.is_shared(),
            None => !p.approvals.is_shared() && Arc::ptr_eq(&p.kill_switch, kill_switch),
        };
        if same {
            return Ok(p.approvals.clone());
        }
    }
    let clock: Arc<dyn crate::clock::Clock> = match previous {
        Some(p) => p.approvals.clock(),
        None => Arc::new(crate::clock::SystemClock),
    };
    let store = match cluster {
        Some(c) => Store::fleet(c.clone(), clock),
        None => Store::local(kill_switch.database(), clock).map_err(|e| ConfigError::File {
            key: "state.path".into(),
            path: kill_switch.path().map(Into::into).unwrap_or_default(),
            reason: e.to_string(),
        })?,
    };
    Ok(Arc::new(store))
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
