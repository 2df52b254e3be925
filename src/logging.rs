//! Logging set-up shared by `serve`, `audit` and `demo`: `RUST_LOG` levels (default `info`),
//! human-readable text or JSON lines, on stderr (stdout is the audit trail's by default).

use crate::config::LogFormat;

/// Sets up logging once; later calls do nothing.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
