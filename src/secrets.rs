//! Secrets from files (the Kubernetes secret-volume convention), rotated without a restart.
//!
//! `[upstream] api_key_file`, `previous_api_key_file` and `[[auth.keys]] secret_file` (and
//! `public_key_file`) are read when the rules are built, so `POST /reload` and SIGHUP pick up
//! a rotated file. Besides, [`watch`] polls them every `[upstream] secret_poll_ms` and rebuilds
//! the rules from the configuration in force when one changes. A rebuild is a reload: each
//! request keeps the rules (and the key) it started with, so requests in flight finish with
//! their key; new requests take the new one. A file that fails to load (missing, empty,
//! half-written) keeps the rules in force: the failure is logged, counted
//! (`entitygate_secret_reloads_total{outcome="rejected"}`) and shown by `/readyz` until a
//! later change loads.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use crate::config::Config;
use crate::server::State;

/// The secret files a configuration reads.
pub fn files(config: &Config) -> Vec<PathBuf> {
    let mut out = Vec::new();
    out.extend(config.upstream.api_key_file.clone());
    out.extend(config.upstream.previous_api_key_file.clone());
    for k in &config.auth.keys {
        out.extend(k.secret_file.clone());
        out.extend(k.public_key_file.clone());
    }
    out
}

/// What the files hold now (a digest; an unreadable file counts as its error).
fn fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut h = Sha256::new();
    for p in paths {
        match std::fs::read(p) {
            Ok(bytes) => h.update(&bytes),
            Err(e) => h.update(format!("\0error {e}").as_bytes()),
        }
        h.update(b"\0\0");
    }
    h.finalize().into()
}

/// Polls the secret files of the configuration in force and reloads when they change.
/// Runs until aborted (the server aborts it when it stops).
pub(crate) async fn watch(state: Arc<State>) {
    let mut last: Option<(Vec<PathBuf>, [u8; 32])> = None;
    loop {
        let (config, poll) = {
            let c = state.applied.lock().unwrap_or_else(PoisonError::into_inner);
            (
                c.clone(),
                Duration::from_millis(c.upstream.secret_poll_ms.max(50)),
            )
        };
        let paths = files(&config);
        if paths.is_empty() {
            last = None;
            tokio::time::sleep(poll).await;
            continue;
        }
        let now = {
            let p = paths.clone();
            tokio::task::spawn_blocking(move || fingerprint(&p))
                .await
                .unwrap_or_default()
        };
        match &last {
            // The first look, or the configuration named other files: only remember.
            None => last = Some((paths, now)),
            Some((seen, digest)) if *seen != paths || *digest == now => {
                last = Some((paths, now));
            }
            Some(_) => {
                last = Some((paths, now));
                tracing::info!("a secret file changed; rebuilding the rules");
                match state.reload_with(&config).await {
                    Ok(()) => crate::metrics::secret_reload(true),
                    Err(e) => {
                        crate::metrics::secret_reload(false);
                        tracing::error!(error = %e,
                            "a changed secret file did not load; the secrets in use stay");
                        *state
                            .secrets_error
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) = Some(e.to_string());
                    }
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}
