//! The pooled HTTP(S) client: hyper-util over rustls, HTTP/1.1 and HTTP/2 by ALPN. One
//! construction for every outbound connection the gateway makes (Composio through
//! [`crate::upstream`], the JWKS endpoint, the OTLP collector through [`crate::trace`]); it
//! lives below both so that neither has to import the other for it. It holds no credential:
//! the key is set by `upstream` alone.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::{ConfigError, UpstreamConfig};

/// The pooled HTTP(S) client used for Composio and for the JWKS endpoint.
pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client: webpki roots plus `ca_file`, HTTP/1.1 and HTTP/2 by ALPN.
///
/// # Errors
/// When `ca_file` cannot be loaded.
pub fn build_client(cfg: &UpstreamConfig) -> Result<HttpClient, ConfigError> {
    let tls = crate::tls::client_config(cfg.ca_file.as_deref(), "upstream.ca_file")?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_millis(cfg.connect_timeout_ms)));
    http.set_nodelay(true);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(https))
}
