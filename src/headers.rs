//! Which headers cross the gateway, in each direction.
//!
//! Towards Composio the gateway forwards an *allowlist*: content negotiation and the SDKs'
//! informational headers. Everything else the caller sent (every credential header, cookies,
//! `x-org-id`, `Forwarded`/`X-Forwarded-*`, `Host`, hop-by-hop headers and whatever
//! `Connection` names) is dropped, and the upstream client then adds the one real credential.
//! An allowlist cannot be bypassed by a header nobody thought of.
//!
//! Back to the caller, hop-by-hop headers are dropped, and so is any header whose value
//! contains the real project key (an upstream that echoes request headers must not leak it).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Request headers forwarded upstream as they are.
const FORWARD: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "user-agent",
    "x-source",
    "x-runtime",
    "x-runtime-version",
    "x-framework",
    "x-sdk-version",
    "x-composio-version",
];

/// Prefixes of informational SDK headers forwarded upstream.
const FORWARD_PREFIXES: &[&str] = &["x-client-", "x-stainless-"];

/// Headers that describe a single connection, never forwarded in either direction.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Method-override headers: refused outright, since a backend honouring one would run a
/// method other than the one the gateway classified.
pub const METHOD_OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The headers to send upstream for a caller's request: the allowlist, minus anything the
/// caller's `Connection` header names, plus the request id. Content length is set by the
/// body; credentials by [`crate::upstream::Upstream::send`].
pub fn upstream_request_headers(incoming: &HeaderMap, request_id: &HeaderValue) -> HeaderMap {
    let named_by_connection = connection_named(incoming);
    let mut out = HeaderMap::with_capacity(12);
    for (name, value) in incoming {
        let n = name.as_str();
        let allowed = FORWARD.contains(&n) || FORWARD_PREFIXES.iter().any(|p| n.starts_with(p));
        if allowed && !named_by_connection.iter().any(|c| c == n) {
            out.append(name.clone(), value.clone());
        }
    }
    out.insert("x-request-id", request_id.clone());
    // Bodies that come back are inspected (key redaction), so they must not be compressed.
    out.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    out
}

/// Lower-cased header names listed in `Connection`.
fn connection_named(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Cleans upstream response headers in place: hop-by-hop headers, headers `Connection` names,
/// cookies, and any header whose value contains `secret` are removed.
pub fn clean_response_headers(headers: &mut HeaderMap, secret: &crate::body::Keys) {
    for name in connection_named(headers) {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove(header::SET_COOKIE);
    headers.remove(header::CONTENT_LENGTH);
    let leaking: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| secret.found_in(v.as_bytes()))
        .map(|(n, _)| n.clone())
        .collect();
    for name in leaking {
        headers.remove(&name);
    }
}

/// The request id to use: the caller's if it is short and plain, else a fresh one.
pub fn request_id(incoming: &HeaderMap) -> HeaderValue {
    if let Some(v) = incoming.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    // A UUID's hex form is always a valid header value.
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn credentials_and_spoofable_headers_never_go_upstream() {
        let h = map(&[
            ("x-api-key", "jwt"),
            ("authorization", "Bearer jwt"),
            ("x-user-api-key", "uak"),
            ("x-org-api-key", "oak"),
            ("x-org-id", "o"),
            ("x-project-id", "p"),
            ("cookie", "a=b"),
            ("proxy-authorization", "x"),
            ("host", "evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-user", "bob"),
            ("forwarded", "for=x"),
            ("x-user-id", "bob"),
            ("x-entity-id", "bob"),
            ("transfer-encoding", "chunked"),
            ("content-length", "5"),
            ("content-type", "application/json"),
            ("x-sdk-version", "0.30.0"),
            ("x-client-language", "python"),
        ]);
        let out = upstream_request_headers(&h, &HeaderValue::from_static("rid"));
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "content-type",
                "x-sdk-version",
                "x-client-language",
                "x-request-id",
                "accept-encoding"
            ]
        );
    }

    #[test]
    fn connection_named_headers_are_dropped() {
        let h = map(&[
            ("connection", "x-sdk-version, Content-Type"),
            ("x-sdk-version", "1"),
            ("content-type", "a"),
        ]);
        let out = upstream_request_headers(&h, &HeaderValue::from_static("rid"));
        assert!(out.get("x-sdk-version").is_none() && out.get("content-type").is_none());
    }

    #[test]
    fn response_headers_never_carry_the_key() {
        let mut h = map(&[
            ("x-echo", "prefix-sk_live_key-suffix"),
            ("content-type", "application/json"),
            ("set-cookie", "s=1"),
            ("connection", "x-internal"),
            ("x-internal", "1"),
        ]);
        clean_response_headers(
            &mut h,
            &crate::body::Keys::from(bytes::Bytes::from_static(b"sk_live_key")),
        );
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            vec!["content-type"]
        );
    }

    #[test]
    fn request_id_is_propagated_only_when_plain() {
        assert_eq!(request_id(&map(&[("x-request-id", "abc-123")])), "abc-123");
        let fresh = request_id(&map(&[("x-request-id", "a b\"<script>")]));
        assert_eq!(fresh.len(), 32);
        assert_eq!(request_id(&HeaderMap::new()).len(), 32);
    }
}
