//! Admin authentication: the one bearer token every state-changing admin endpoint requires.
//!
//! The token comes from `[admin] token_env` (an environment variable) or `[admin] token_file`
//! (a file, the Kubernetes-secret-volume convention; read on every check, so a rotated file
//! takes effect on the next request). `[admin] explain_token_env`, the older key, is an alias
//! of `token_env`. Without any of them the state-changing endpoints are *disabled*, never
//! open: reaching the admin port is not enough to change what the gateway does.
//!
//! Tokens are compared as SHA-256 digests with a constant-time fold, so neither the length
//! nor the first differing byte of the real token shows in the answer time.

use std::path::PathBuf;

use http::HeaderMap;

use crate::config::{AdminConfig, Env};

/// Where the admin token is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Env(String),
    File(PathBuf),
}

/// The admin token's source, from `[admin]`. Cheap to clone; reads the secret on each check.
#[derive(Debug, Clone, Default)]
pub struct AdminToken {
    source: Option<Source>,
}

/// Why a request was not authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No admin token is configured (or its source is empty or unreadable): the endpoint is off.
    Disabled,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not the admin token.
    Wrong,
}

impl Refused {
    /// The HTTP status to answer with: 403 when the endpoint is off, else 401.
    pub fn status(self) -> http::StatusCode {
        match self {
            Self::Disabled => http::StatusCode::FORBIDDEN,
            Self::Missing | Self::Wrong => http::StatusCode::UNAUTHORIZED,
        }
    }

    /// The reason as a label (metrics, audit events).
    pub fn slug(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Missing => "missing",
            Self::Wrong => "wrong",
        }
    }

    /// A one-line explanation for the operator.
    pub fn message(self) -> &'static str {
        match self {
            Self::Disabled => {
                "disabled: no admin token is configured ([admin] token_env or token_file)"
            }
            Self::Missing => "this endpoint needs Authorization: Bearer <admin token>",
            Self::Wrong => "wrong admin token",
        }
    }
}

impl AdminToken {
    /// The token source `[admin]` names (`token_env`, `token_file`, or the alias
    /// `explain_token_env`), if any.
    pub fn from_config(admin: &AdminConfig) -> Self {
        let source = if let Some(path) = &admin.token_file {
            Some(Source::File(path.clone()))
        } else {
            admin
                .token_env
                .as_ref()
                .or(admin.explain_token_env.as_ref())
                .map(|v| Source::Env(v.clone()))
        };
        Self { source }
    }

    /// Whether a token source is configured at all.
    pub fn configured(&self) -> bool {
        self.source.is_some()
    }

    /// The current token, if its source is set and non-empty.
    fn current(&self, env: &dyn Env) -> Option<String> {
        let token = match self.source.as_ref()? {
            Source::Env(name) => env.var(name)?,
            Source::File(path) => match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e,
                        "admin token file unreadable; state-changing admin endpoints are off");
                    return None;
                }
            },
        };
        let token = token.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }

    /// Whether `presented` is the admin token (for a login form; headers go through
    /// [`AdminToken::check`]).
    pub fn verify(&self, env: &dyn Env, presented: &str) -> Result<(), Refused> {
        let expected = self.current(env).ok_or(Refused::Disabled)?;
        if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }

    /// Whether the request's `Authorization: Bearer` header carries the admin token.
    pub fn check(&self, env: &dyn Env, headers: &HeaderMap) -> Result<(), Refused> {
        let expected = self.current(env).ok_or(Refused::Disabled)?;
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Refused::Missing);
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(bearer)
            .ok_or(Refused::Missing)?;
        if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
            Ok(())
        } else {
            Err(Refused::Wrong)
        }
    }
}

/// The credentials of a `Bearer` authorization value (scheme case-insensitive, RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| rest.trim())
        .filter(|t| !t.is_empty())
}

/// Equality of two secrets in time independent of where they differ and of their lengths:
/// both are hashed first, then every byte of the digests is compared.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::Digest as _;
    let (a, b) = (sha2::Sha256::digest(a), sha2::Sha256::digest(b));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn headers(auth: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in auth {
            h.append(
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(a).expect("test header"),
            );
        }
        h
    }

    fn token_env() -> AdminToken {
        AdminToken::from_config(&AdminConfig {
            token_env: Some("ADMIN".into()),
            ..AdminConfig::default()
        })
    }

    #[test]
    fn only_the_exact_token_passes() {
        let env: HashMap<String, String> = [("ADMIN".to_owned(), "s3cret".to_owned())].into();
        let t = token_env();
        assert_eq!(t.check(&env, &headers(&["Bearer s3cret"])), Ok(()));
        assert_eq!(t.check(&env, &headers(&["bearer s3cret"])), Ok(()));
        assert_eq!(
            t.check(&env, &headers(&["Bearer s3cre"])),
            Err(Refused::Wrong)
        );
        assert_eq!(
            t.check(&env, &headers(&["Bearer s3cret2"])),
            Err(Refused::Wrong)
        );
        assert_eq!(t.check(&env, &headers(&[])), Err(Refused::Missing));
        assert_eq!(
            t.check(&env, &headers(&["Basic s3cret"])),
            Err(Refused::Missing)
        );
        // Two headers: ambiguous, refused whatever they say.
        assert_eq!(
            t.check(&env, &headers(&["Bearer s3cret", "Bearer s3cret"])),
            Err(Refused::Missing)
        );
    }

    #[test]
    fn no_token_means_disabled_not_open() {
        let empty: HashMap<String, String> = HashMap::new();
        let none = AdminToken::from_config(&AdminConfig::default());
        assert!(!none.configured());
        assert_eq!(
            none.check(&empty, &headers(&["Bearer "])),
            Err(Refused::Disabled)
        );
        // Configured but the variable is unset or empty: also off.
        assert_eq!(
            token_env().check(&empty, &headers(&["Bearer x"])),
            Err(Refused::Disabled)
        );
        let blank: HashMap<String, String> = [("ADMIN".to_owned(), "  ".to_owned())].into();
        assert_eq!(token_env().verify(&blank, ""), Err(Refused::Disabled));
    }

    #[test]
    fn a_token_file_is_read_on_every_check() {
        let path = std::env::temp_dir().join(format!("eg-admin-token-{}", std::process::id()));
        std::fs::write(&path, "first\n").expect("write");
        let t = AdminToken::from_config(&AdminConfig {
            token_file: Some(path.clone()),
            ..AdminConfig::default()
        });
        let env: HashMap<String, String> = HashMap::new();
        assert_eq!(t.verify(&env, "first"), Ok(()));
        std::fs::write(&path, "second").expect("write");
        assert_eq!(t.verify(&env, "first"), Err(Refused::Wrong));
        assert_eq!(t.verify(&env, "second"), Ok(()));
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(t.verify(&env, "second"), Err(Refused::Disabled));
    }

    #[test]
    fn explain_token_env_is_an_alias() {
        let env: HashMap<String, String> = [("OLD".to_owned(), "tok".to_owned())].into();
        let t = AdminToken::from_config(&AdminConfig {
            explain_token_env: Some("OLD".into()),
            ..AdminConfig::default()
        });
        assert_eq!(t.verify(&env, "tok"), Ok(()));
    }
}
