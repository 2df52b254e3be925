//! `entitygate audit`: the command line of [`crate::expiry`]'s one-off scan.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ProcessEnv};
use crate::expiry::{audit_once, AuditError, Progress};

/// `entitygate audit --config FILE`: JSON lines on stdout, a progress indicator and a summary
/// on stderr. Exit 0 when the scan completed and every due notification was delivered, 1
/// otherwise, 64 for an unusable configuration.
pub async fn run(config_path: &Path) -> ExitCode {
    // The same refusals as `check-config`: `Config::load` checks the structure only, and a
    // file whose policy does not compile is no configuration to audit under.
    let config =
        match Config::load(config_path).and_then(|c| crate::toolpolicy::check(&c).map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("entitygate: {e}");
                return ExitCode::from(64);
            }
        };
    // Warnings only by default: stderr also carries the progress indicator and the summary.
    super::log_warnings_to_stderr();
    let progress = Arc::new(Progress::default());
    let ticker = tokio::spawn(show_progress(progress.clone()));
    let mut stdout = std::io::stdout().lock();
    let result = audit_once(&config, &ProcessEnv, &mut stdout, &progress).await;
    drop(stdout);
    ticker.abort();
    let _ = ticker.await;
    let tty = std::io::stderr().is_terminal();
    if tty {
        eprint!("\r\x1b[2K");
    }
    match result {
        Ok(report) => {
            eprint!("{}", report.summary());
            if report.notify.as_ref().is_some_and(|n| n.users_failed > 0) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(AuditError::Config(e)) => {
            eprintln!("entitygate: {e}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("entitygate: audit failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints scan progress on stderr: redrawn in place on a terminal, a line every few seconds
/// otherwise (logs). Runs until aborted.
async fn show_progress(p: Arc<Progress>) {
    let tty = std::io::stderr().is_terminal();
    let period = if tty {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    let spinner = ['|', '/', '-', '\\'];
    let mut n = 0usize;
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        n += 1;
        let listed = p.listed.load(Ordering::Relaxed);
        let expected = p.expected.load(Ordering::Relaxed);
        let line = format!(
            "scanning {} {listed}/{expected} account(s) listed, {} page(s), {} need attention, {} retried",
            spinner[n % spinner.len()],
            p.pages.load(Ordering::Relaxed),
            p.found.load(Ordering::Relaxed),
            p.retries.load(Ordering::Relaxed),
        );
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}
