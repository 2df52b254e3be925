//! Secrets from files (the Kubernetes secret-volume convention), rotated without a restart.
//!
//! `[upstream] api_key_file`, `previous_api_key_file` and `[[auth.keys]] secret_file` (and
//! `public_key_file`) are read when the rules are built, so `POST /reload` and SIGHUP pick up
//! a rotated file. Besides, [`watch`] polls them every `[upstream] secret_poll_ms` and rebuilds
//! the rules from the configuration in force when one changes. A rebuild is a reload: each
//! request keeps the rules (and the key) it started with, so requests in flight finish with
//! their key; new requests take the new one.
//!
//! A file caught mid-write must not become the key: the watcher adopts new content only once
//! two consecutive polls read it identical, so a change takes effect one to two intervals
//! after it is complete. An atomic replace (a rename, as Kubernetes updates a secret volume)
//! is complete at once; a file written in place is adopted only after it stopped changing for
//! a whole interval. If the files change again while the rules are being rebuilt, the content
//! loaded is not taken as settled and is replaced within two more polls. `POST /reload` and
//! SIGHUP read the files once, as they are at that moment: an operator triggers them.
//! A file that fails to load (missing, empty, not a key) keeps the rules in force: the
//! failure is logged, counted (`entitygate_secret_reloads_total{outcome="rejected"}`) and
//! shown by `/readyz` until a later change loads.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::control::Control;

/// The secret files a configuration reads.
pub fn files_of(config: &Config) -> Vec<PathBuf> {
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

/// What the watcher knows of the files: what the rules in force were built from, and
/// new content seen once and waiting for a second identical read.
#[derive(Debug, Default)]
struct Settling {
    adopted: Option<(Vec<PathBuf>, [u8; 32])>,
    pending: Option<[u8; 32]>,
}

/// What to do after one poll.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing new (or new content seen for the first time: wait for it to settle).
    Wait,
    /// The same new content on two polls in a row: rebuild the rules from it.
    Reload([u8; 32]),
}

impl Settling {
    fn poll(&mut self, paths: &[PathBuf], now: [u8; 32]) -> Step {
        match &self.adopted {
            // The first look, or the configuration named other files: only remember.
            Some((seen, _)) if seen != paths => {}
            None => {}
            Some((_, digest)) if *digest == now => {
                self.pending = None;
                return Step::Wait;
            }
            Some(_) if self.pending == Some(now) => {
                self.pending = None;
                return Step::Reload(now);
            }
            Some(_) => {
                self.pending = Some(now);
                return Step::Wait;
            }
        }
        self.adopted = Some((paths.to_vec(), now));
        self.pending = None;
        Step::Wait
    }

    /// The rules were rebuilt (or refused) from content read as `settled`; `after` is what
    /// the files hold once the rebuild is done. A change during the rebuild is not adopted,
    /// so the next polls pick it up.
    fn rebuilt(&mut self, paths: &[PathBuf], settled: [u8; 32], after: [u8; 32]) {
        let adopted = if after == settled { settled } else { [0; 32] };
        self.adopted = Some((paths.to_vec(), adopted));
    }
}

/// Polls the secret files of the configuration in force and reloads when they change and
/// have settled (module docs). Runs until aborted (the server aborts it when it stops).
pub(crate) async fn watch(control: Arc<dyn Control>) {
    let mut files = Settling::default();
    loop {
        let config = control.applied();
        let poll = Duration::from_millis(config.upstream.secret_poll_ms.max(50));
        let paths = files_of(&config);
        if paths.is_empty() {
            files = Settling::default();
            tokio::time::sleep(poll).await;
            continue;
        }
        let now = read_fingerprint(&paths).await;
        if let Step::Reload(settled) = files.poll(&paths, now) {
            tracing::info!("a secret file changed and settled; rebuilding the rules");
            match control.reload_with(&config).await {
                Ok(()) => crate::metrics::secret_reload(true),
                Err(e) => {
                    crate::metrics::secret_reload(false);
                    tracing::error!(error = %e,
                        "a changed secret file did not load; the secrets in use stay");
                    control.secrets_failed(e.to_string());
                }
            }
            files.rebuilt(&paths, settled, read_fingerprint(&paths).await);
        }
        tokio::time::sleep(poll).await;
    }
}

async fn read_fingerprint(paths: &[PathBuf]) -> [u8; 32] {
    let p = paths.to_vec();
    tokio::task::spawn_blocking(move || fingerprint(&p))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_content_is_adopted_only_when_read_twice_alike() {
        let paths = vec![PathBuf::from("/run/secrets/key")];
        let (a, half, b) = ([1; 32], [2; 32], [3; 32]);
        let mut s = Settling::default();
        assert_eq!(
            s.poll(&paths, a),
            Step::Wait,
            "the first look only remembers"
        );
        assert_eq!(s.poll(&paths, a), Step::Wait);
        // Caught mid-write, then complete: the half-written content is never loaded.
        assert_eq!(s.poll(&paths, half), Step::Wait);
        assert_eq!(s.poll(&paths, b), Step::Wait);
        assert_eq!(s.poll(&paths, b), Step::Reload(b));
        s.rebuilt(&paths, b, b);
        assert_eq!(s.poll(&paths, b), Step::Wait, "adopted: no second reload");
        // A change that goes back before it settles is no change.
        assert_eq!(s.poll(&paths, half), Step::Wait);
        assert_eq!(s.poll(&paths, b), Step::Wait);
        assert_eq!(s.poll(&paths, b), Step::Wait);
    }

    #[test]
    fn a_change_during_the_rebuild_is_picked_up_again() {
        let paths = vec![PathBuf::from("/run/secrets/key")];
        let (a, b, c) = ([1; 32], [2; 32], [3; 32]);
        let mut s = Settling::default();
        s.poll(&paths, a);
        s.poll(&paths, b);
        assert_eq!(s.poll(&paths, b), Step::Reload(b));
        // The file changed while the rules were rebuilt: what was loaded is not trusted.
        s.rebuilt(&paths, b, c);
        assert_eq!(s.poll(&paths, c), Step::Wait);
        assert_eq!(s.poll(&paths, c), Step::Reload(c));
    }

    #[test]
    fn other_files_are_only_remembered() {
        let (one, two) = (
            vec![PathBuf::from("/a")],
            vec![PathBuf::from("/a"), PathBuf::from("/b")],
        );
        let mut s = Settling::default();
        s.poll(&one, [1; 32]);
        assert_eq!(s.poll(&two, [2; 32]), Step::Wait);
        assert_eq!(s.poll(&two, [2; 32]), Step::Wait);
    }
}
