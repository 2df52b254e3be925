//! Strict request-path checking.
//!
//! The gateway classifies the path it will forward, and forwards exactly the path it
//! classified. Rather than normalising (and risking a different reading than Composio's), any
//! path that is not already canonical is refused: empty segments (`//`), dot segments (`/./`,
//! `/../`), percent-encoding of any kind (`%2F`, `%2e%2e`, `%5C`), matrix parameters (`;`),
//! backslashes, a trailing `/`, and any byte outside a conservative set. Composio's paths
//! (versions, slugs, nano ids, UUIDs) never need anything else.

use crate::error::Error;

/// Longest path accepted.
pub const MAX_PATH_LEN: usize = 2048;

/// Returns `path` if it is canonical, else [`Error::PathNotCanonical`].
///
/// # Errors
/// When any rule in the module docs is broken.
pub fn check(path: &str) -> Result<&str, Error> {
    if path == "/" {
        return Ok(path);
    }
    if path.len() > MAX_PATH_LEN || !path.starts_with('/') {
        return Err(Error::PathNotCanonical);
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(Error::PathNotCanonical);
        }
        if !segment.bytes().all(is_segment_byte) {
            return Err(Error::PathNotCanonical);
        }
    }
    Ok(path)
}

/// Unreserved characters of RFC 3986: the only ones Composio paths use.
fn is_segment_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_paths_pass() {
        for p in [
            "/api/v3/tools/execute/GITHUB_CREATE_ISSUE",
            "/api/v3.1/connected_accounts/ca_abc-123",
            "/api/v2/actions/GITHUB_CREATE_AN_ISSUE/execute",
            "/api/v1/connectedAccounts/6f1c0b8e-1d2a-4b7e-9a8e-000000000000",
        ] {
            assert_eq!(check(p), Ok(p));
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "",
            "api/v3/tools",
            "//api/v3/tools",
            "/api//v3/tools",
            "/api/v3/tools/",
            "/api/./v3/tools",
            "/api/v3/../v1/api_keys",
            "/api/v3/%2e%2e/v1/api_keys",
            "/api/v3/tools%2Fexecute",
            "/api/v3/tools%2fexecute",
            "/api/v3/tools;jsessionid=1/execute",
            "/api/v3/tools\\execute",
            "/api/v3/tools/execute/SLACK SEND",
            "/api/v3/tools/execute/SL\u{0130}CK",
            "/api/v3/tools/execute/a\0b",
        ] {
            assert_eq!(check(p), Err(Error::PathNotCanonical), "{p:?}");
        }
        assert!(check(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }

    proptest! {
        /// Whatever is accepted has no segment a server could reinterpret.
        #[test]
        fn accepted_paths_have_no_reinterpretable_segment(p in "(/[a-zA-Z0-9._~%;/\\\\-]{0,12}){1,6}") {
            if check(&p).is_ok() {
                prop_assert!(p == "/" || (!p.contains("//") && !p.ends_with('/')));
                prop_assert!(!p.contains('%') && !p.contains(';') && !p.contains('\\'));
                prop_assert!(p.split('/').all(|s| s != "." && s != ".."));
            }
        }
    }
}
