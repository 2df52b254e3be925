//! The control handle: what the admin side of the gateway (the admin listener and its console,
//! the secret-file watcher) may read of and do to the running gateway, instead of the server
//! itself. The server owns the state behind it ([`crate::server`] implements [`Control`]);
//! the admin side names only this trait, so it cannot reach the listeners, the background
//! tasks or anything else the assembly keeps.
//!
//! It gives the rules in force (the snapshot requests take), reloading (the configuration file
//! again, or a given configuration), where secrets come from, the configuration file and the
//! configuration in force, the `[admin]` settings, and what readiness reports besides the
//! rules (the last failed secret reload).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use arc_swap::ArcSwap;

use crate::config::{AdminConfig, Config, ConfigError, Env};
use crate::proxy::Shared;

/// A reload under way: resolves once the new rules are in force, or with why they were
/// refused (the rules in force then stay).
pub(crate) type Reloading<'a> = Pin<Box<dyn Future<Output = Result<(), ConfigError>> + Send + 'a>>;

/// The running gateway as the admin side sees it (module docs).
pub(crate) trait Control: Send + Sync {
    /// The rules in force. Load a snapshot and keep it for the whole answer, as requests do.
    fn rules(&self) -> &ArcSwap<Shared>;

    /// Where secrets (the admin token among them) come from.
    fn env(&self) -> &dyn Env;

    /// The configuration file the gateway was started from, if any.
    fn config_path(&self) -> Option<&Path>;

    /// `[admin]` as the gateway was started with it (a reload does not change it).
    fn admin(&self) -> &AdminConfig;

    /// The configuration in force (the secret-file watcher rebuilds from it).
    fn applied(&self) -> Config;

    /// Why the last reload prompted by a changed secret file failed, while it stands (a
    /// successful reload clears it).
    fn secrets_error(&self) -> Option<String>;

    /// Records that a reload prompted by a changed secret file failed, for readiness to say.
    fn secrets_failed(&self, error: String);

    /// Reads the configuration file again and swaps it in.
    fn reload(&self) -> Reloading<'_>;

    /// Swaps in `config`'s rules. An invalid config is refused and the current rules stay.
    fn reload_with<'a>(&'a self, config: &'a Config) -> Reloading<'a>;
}
