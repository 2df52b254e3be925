//! TLS on both sides: the rustls server configuration that terminates client TLS, and the
//! client configuration used towards Composio and the JWKS endpoint (webpki roots plus an
//! optional extra CA, which is how tests trust the dev CA under `certs/`).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, TlsConfig};

/// The crypto provider used everywhere, chosen explicitly so that no process-wide default
/// has to be installed (and no second provider can be picked up by feature unification).
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server-side TLS configuration from `[tls]`, advertising h2 and http/1.1.
///
/// # Errors
/// When the certificate chain or key cannot be read or do not match.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = load_certs(&cfg.cert, "tls.cert")?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| ConfigError::File {
        key: "tls.key".into(),
        path: cfg.key.clone(),
        reason: e.to_string(),
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid("tls", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::File {
            key: "tls.key".into(),
            path: cfg.key.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Builds the client-side TLS configuration: webpki roots, plus every certificate in
/// `extra_ca` when given.
///
/// # Errors
/// When `extra_ca` cannot be read or holds no usable certificate.
pub fn client_config(
    extra_ca: Option<&Path>,
    key_name: &str,
) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in load_certs(path, key_name)? {
            roots.add(cert).map_err(|e| ConfigError::File {
                key: key_name.into(),
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::invalid(key_name, e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn load_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let err = |reason: String| ConfigError::File {
        key: key.into(),
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate found".into()));
    }
    Ok(certs)
}
