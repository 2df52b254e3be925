//! The connection to Composio: one pooled hyper-util client over rustls, the base URL (whose
//! path prefix is kept: the old SDK's base ends in `/api`), the real project key, and the
//! timeouts. Everything that leaves the gateway for Composio goes through [`Upstream`], so the
//! one credential header upstream is set in exactly one place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::clock::unix_now;
use crate::config::{ConfigError, Env, UpstreamConfig};
use crate::error::Error;

/// The client lives in [`crate::client`] (the OTLP exporter builds one too); the old paths
/// keep working.
pub use crate::client::{build_client, HttpClient};

/// Largest lookup response the gateway reads for its own decisions.
const MAX_LOOKUP_BODY: usize = 8 * 1024 * 1024;

/// Marks a response obtained with the previous key (`[upstream] previous_api_key_*`).
#[derive(Debug, Clone, Copy)]
pub struct PreviousKeyUsed;

/// Which timeout applies to a forwarded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutClass {
    /// Tool executions: long.
    Execute,
    /// Everything else forwarded for a caller.
    Default,
    /// The gateway's own lookups.
    Lookup,
}

/// Composio, as the gateway reaches it.
#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    prefix: String,
    api_key: HeaderValue,
    /// The key being rotated out, tried once on a 401 to a safe request.
    previous_key: Option<HeaderValue>,
    execute_timeout: Duration,
    request_timeout: Duration,
    lookup_timeout: Duration,
    /// Unix seconds of the last response head received, for readiness.
    last_answer: Arc<AtomicU64>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is deliberately absent.
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The project key: `api_key_file` when set, else `api_key_env`.
///
/// # Errors
/// When the file or variable is unset, unreadable or empty, or not a header value.
pub fn load_key(cfg: &UpstreamConfig, env: &dyn Env) -> Result<HeaderValue, ConfigError> {
    let (key, name) = match &cfg.api_key_file {
        Some(path) => (
            crate::config::read_secret_file(path, "upstream.api_key_file")?,
            "upstream.api_key_file",
        ),
        None => (
            env.var(&cfg.api_key_env)
                .filter(|k| !k.trim().is_empty())
                .ok_or_else(|| ConfigError::MissingEnv {
                    key: "upstream.api_key_env".into(),
                    var: cfg.api_key_env.clone(),
                })?,
            "upstream.api_key_env",
        ),
    };
    header_key(&key, name)
}

/// The previous key, when `previous_api_key_env` or `previous_api_key_file` is set.
///
/// # Errors
/// As [`load_key`].
pub fn load_previous_key(
    cfg: &UpstreamConfig,
    env: &dyn Env,
) -> Result<Option<HeaderValue>, ConfigError> {
    let key = match (&cfg.previous_api_key_file, &cfg.previous_api_key_env) {
        (Some(path), _) => crate::config::read_secret_file(path, "upstream.previous_api_key_file")?,
        (None, Some(var)) => env
            .var(var)
            .filter(|k| !k.trim().is_empty())
            .ok_or_else(|| ConfigError::MissingEnv {
                key: "upstream.previous_api_key_env".into(),
                var: var.clone(),
            })?,
        (None, None) => return Ok(None),
    };
    header_key(&key, "upstream.previous_api_key").map(Some)
}

fn header_key(key: &str, name: &str) -> Result<HeaderValue, ConfigError> {
    let mut v = HeaderValue::from_str(key.trim())
        .map_err(|_| ConfigError::invalid(name, "the key is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream from config, reading the project key from `env`.
    ///
    /// # Errors
    /// When the key variable is unset or empty, or the base URL or CA file are unusable.
    pub fn new(
        cfg: &UpstreamConfig,
        env: &dyn Env,
        client: HttpClient,
    ) -> Result<Self, ConfigError> {
        let api_key = load_key(cfg, env)?;
        let previous_key = load_previous_key(cfg, env)?;
        let base: Uri = cfg
            .base_url
            .parse()
            .map_err(|e| ConfigError::invalid("upstream.base_url", format!("{e}")))?;
        let parts = base.into_parts();
        let scheme = parts
            .scheme
            .ok_or_else(|| ConfigError::invalid("upstream.base_url", "no scheme"))?;
        let authority = parts
            .authority
            .ok_or_else(|| ConfigError::invalid("upstream.base_url", "no host"))?;
        let prefix = parts
            .path_and_query
            .map(|p| p.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Self {
            client,
            scheme,
            authority,
            prefix,
            api_key,
            previous_key,
            execute_timeout: Duration::from_secs(cfg.execute_timeout_secs),
            request_timeout: Duration::from_secs(cfg.request_timeout_secs),
            lookup_timeout: Duration::from_secs(cfg.lookup_timeout_secs),
            last_answer: Arc::default(),
        })
    }

    /// The real project key, for redaction of anything that flows back to callers.
    pub(crate) fn api_key(&self) -> &[u8] {
        self.api_key.as_bytes()
    }

    /// The key being rotated out, if any: still live at Composio, so redacted as well.
    pub(crate) fn previous_api_key(&self) -> Option<&[u8]> {
        self.previous_key.as_ref().map(HeaderValue::as_bytes)
    }

    /// The upstream URI for a gateway-relative path and query (`/api/v3/...?...`).
    ///
    /// # Errors
    /// [`Error::Internal`] if the result is not a valid URI (the path was validated before).
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, Error> {
        let pq = format!("{}{}", self.prefix, path_and_query);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| Error::Internal)
    }

    fn timeout(&self, class: TimeoutClass) -> Duration {
        match class {
            TimeoutClass::Execute => self.execute_timeout,
            TimeoutClass::Default => self.request_timeout,
            TimeoutClass::Lookup => self.lookup_timeout,
        }
    }

    /// Sends `req` upstream with the real key as its only credential. The caller has already
    /// removed every credential header it received; this sets `Host` and `x-api-key`.
    ///
    /// # Errors
    /// [`Error::UpstreamTimeout`] when no response head arrives in time,
    /// [`Error::UpstreamUnavailable`] when the connection fails.
    pub async fn send(
        &self,
        mut req: Request<Full<Bytes>>,
        class: TimeoutClass,
    ) -> Result<Response<Incoming>, Error> {
        let headers = req.headers_mut();
        headers.remove(header::HOST);
        headers.insert("x-api-key", self.api_key.clone());
        // During a rotation window, a safe request (a read, never an execution) that the
        // current key is refused for is repeated once with the previous key.
        let safe = class != TimeoutClass::Execute
            && (req.method() == Method::GET || req.method() == Method::HEAD);
        let retry = match &self.previous_key {
            Some(previous) if safe => {
                let mut again = Request::new(req.body().clone());
                *again.method_mut() = req.method().clone();
                *again.uri_mut() = req.uri().clone();
                *again.headers_mut() = req.headers().clone();
                again.headers_mut().insert("x-api-key", previous.clone());
                Some(again)
            }
            _ => None,
        };
        let resp = self.send_once(req, class).await?;
        let Some(again) = retry.filter(|_| resp.status() == StatusCode::UNAUTHORIZED) else {
            return Ok(resp);
        };
        let path = again.uri().path().to_owned();
        let mut resp = self.send_once(again, class).await?;
        crate::metrics::previous_key_used(resp.status() != StatusCode::UNAUTHORIZED);
        tracing::warn!(
            path,
            status = resp.status().as_u16(),
            "Composio refused the current key (401); repeated with the previous key: \
             finish the key rotation"
        );
        resp.extensions_mut().insert(PreviousKeyUsed);
        Ok(resp)
    }

    async fn send_once(
        &self,
        req: Request<Full<Bytes>>,
        class: TimeoutClass,
    ) -> Result<Response<Incoming>, Error> {
        match tokio::time::timeout(self.timeout(class), self.client.request(req)).await {
            Err(_) => Err(Error::UpstreamTimeout),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "upstream request failed");
                Err(Error::UpstreamUnavailable)
            }
            Ok(Ok(resp)) => {
                self.last_answer.store(unix_now(), Ordering::Relaxed);
                Ok(resp)
            }
        }
    }

    /// Whether Composio answered anything within `window`; if not, asks it once (any HTTP
    /// answer, even a refusal, shows it is reachable).
    pub async fn reachable(&self, window: Duration) -> bool {
        let last = self.last_answer.load(Ordering::Relaxed);
        if last > 0 && unix_now().saturating_sub(last) <= window.as_secs() {
            return true;
        }
        // Any answer at all advances `last_answer`, whatever the probe's own outcome.
        let _ = self.get_json("/api/v3.1/toolkits?limit=1").await;
        self.last_answer.load(Ordering::Relaxed) > last
    }

    /// A GET for the gateway's own decisions, answering status and parsed JSON. The whole
    /// exchange, body included, is bounded by the lookup timeout.
    ///
    /// # Errors
    /// As [`Upstream::send`]; a body that is not JSON is [`Error::UpstreamUnavailable`].
    pub async fn get_json(
        &self,
        path_and_query: &str,
    ) -> Result<(StatusCode, serde_json::Value), Error> {
        // A last line of defence for URLs the gateway builds itself (they carry the real
        // key): a canonical path and at most one query, whatever a caller's slug held.
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        if crate::path::check(path).is_err() || query.contains(['?', '#']) {
            tracing::error!("refused to send a lookup with a non-canonical URL");
            return Err(Error::Internal);
        }
        let mut req = Request::builder()
            .method(Method::GET)
            .uri(self.uri(path_and_query)?)
            .header(header::ACCEPT, "application/json")
            .header(header::ACCEPT_ENCODING, "identity")
            .header("x-request-id", uuid::Uuid::new_v4().simple().to_string())
            .body(Full::new(Bytes::new()))
            .map_err(|_| Error::Internal)?;
        // A span (and its traceparent) when the request being decided is exported.
        let mut span = crate::trace::lookup_span(path_and_query, req.headers_mut());
        let fut = async {
            let resp = self.send(req, TimeoutClass::Lookup).await?;
            let status = resp.status();
            if let Some(span) = &mut span {
                span.attr(opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
            }
            let body = Limited::new(resp.into_body(), MAX_LOOKUP_BODY)
                .collect()
                .await
                .map_err(|_| Error::UpstreamUnavailable)?
                .to_bytes();
            let value = if body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&body).map_err(|_| Error::UpstreamUnavailable)?
            };
            Ok((status, value))
        };
        tokio::time::timeout(self.lookup_timeout, fut)
            .await
            .map_err(|_| Error::UpstreamTimeout)?
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn upstream(base: &str) -> Upstream {
        let cfg = UpstreamConfig {
            base_url: base.to_owned(),
            ..UpstreamConfig::default()
        };
        let env: HashMap<String, String> = [("COMPOSIO_API_KEY".to_owned(), "k".to_owned())].into();
        Upstream::new(&cfg, &env, build_client(&cfg).unwrap()).unwrap()
    }

    #[test]
    fn the_base_url_path_prefix_is_kept() {
        let u = upstream("https://proxy.example.com/composio/");
        assert_eq!(
            u.uri("/api/v1/connectedAccounts?user_uuid=a")
                .unwrap()
                .to_string(),
            "https://proxy.example.com/composio/api/v1/connectedAccounts?user_uuid=a"
        );
        let u = upstream("https://backend.composio.dev");
        assert_eq!(
            u.uri("/api/v3.1/tools").unwrap().to_string(),
            "https://backend.composio.dev/api/v3.1/tools"
        );
    }

    #[test]
    fn a_missing_key_is_a_startup_error_naming_the_variable() {
        let cfg = UpstreamConfig::default();
        let env: HashMap<String, String> = HashMap::new();
        let err = Upstream::new(&cfg, &env, build_client(&cfg).unwrap()).unwrap_err();
        assert!(err.to_string().contains("COMPOSIO_API_KEY"), "{err}");
    }
}
