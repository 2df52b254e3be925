//! TLS termination with the test-only dev certificate, over HTTP/1.1 and HTTP/2.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::support::*;

fn certs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("certs/dev")
}

pub(crate) fn client_tls() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types_certs(&certs().join("ca.crt")) {
        roots.add(cert).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn rustls_pki_types_certs(
    path: &std::path::Path,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

#[tokio::test]
async fn tls_terminates_with_h1_and_h2() {
    let c = certs();
    let extra = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"",
        c.join("server.crt").display(),
        c.join("server.key").display()
    );
    // `[tls]` must precede the other tables' keys; the harness appends extra at the end,
    // which TOML allows for a new table.
    let h = Harness::with_config(&extra).await;
    for http2 in [false, true] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls())
            .https_only();
        let https = if http2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client = Client::builder(TokioExecutor::new())
            .http2_only(http2)
            .build::<_, Full<Bytes>>(https);
        let req = Request::post(format!(
            "https://localhost:{}/api/v3.1/tools/execute/GITHUB_CREATE_ISSUE",
            h.addr.port()
        ))
        .header("x-api-key", token("alice"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"user_id":"bob","arguments":{}}"#,
        )))
        .unwrap();
        let resp = client.request(req).await.expect("TLS request");
        assert_eq!(
            resp.version(),
            if http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            }
        );
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!String::from_utf8_lossy(&body).contains(API_KEY));
    }
    let sent = h.upstream("/api/v3.1/tools/execute/");
    assert_eq!(sent.len(), 2);
    for s in sent {
        assert_eq!(s.json().unwrap()["user_id"], "alice");
    }
    // Plain HTTP to a TLS listener gets nothing useful.
    let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = Request::get(format!("http://127.0.0.1:{}/api/v3.1/tools", h.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert!(plain.request(req).await.is_err());
    h.shutdown().await;
}
