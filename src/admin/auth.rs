//! Admin authentication: the bearer token every state-changing admin endpoint requires, and
//! who it names ([`Actor`]).
//!
//! Two kinds of token are accepted: the shared `[admin]` token (the [`Actor::Admin`]), and each
//! `[[admin.operators]]` entry's own token, which authenticates as that named person
//! ([`Actor::Operator`]). Both reach every admin endpoint and the console; only an operator may
//! approve or deny an approval request (a decision must name a person).
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

/// The admin token's source, from `[admin]`, and the operators'. Cheap to clone; reads the
/// secrets on each check.
#[derive(Debug, Clone, Default)]
pub struct AdminToken {
    source: Option<Source>,
    operators: Vec<Operator>,
}

/// One `[[admin.operators]]` entry.
#[derive(Debug, Clone)]
struct Operator {
    name: String,
    source: Source,
    subject: Option<String>,
}

/// Who an authenticated admin request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The shared `[admin]` token: everything except deciding approvals.
    Admin,
    /// A named operator (`[[admin.operators]]`).
    Operator {
        /// Their name, recorded as the approver.
        name: String,
        /// Their own subject, if configured (they never approve its calls).
        subject: Option<String>,
    },
}

impl Actor {
    /// The name recorded for this actor (`admin` for the shared token).
    pub fn name(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::Operator { name, .. } => name,
        }
    }
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
        let operators = admin
            .operators
            .iter()
            .filter_map(|op| {
                let source = match (&op.token_file, &op.token_env) {
                    (Some(path), _) => Source::File(path.clone()),
                    (None, Some(var)) => Source::Env(var.clone()),
                    (None, None) => return None,
                };
                Some(Operator {
                    name: op.name.trim().to_owned(),
                    source,
                    subject: op.subject.as_ref().map(|s| s.trim().to_owned()),
                })
            })
            .collect();
        Self { source, operators }
    }

    /// Whether a token source (the admin token or an operator's) is configured at all.
    pub fn configured(&self) -> bool {
        self.source.is_some() || !self.operators.is_empty()
    }

    /// The current admin token, if its source is set and non-empty.
    fn current(&self, env: &dyn Env) -> Option<String> {
        read(self.source.as_ref()?, env)
    }

    /// Who `presented` authenticates as: every configured token is compared (in constant
    /// time each, all of them whatever matched), so the answer time does not tell which.
    fn who(&self, env: &dyn Env, presented: &str) -> Result<Actor, Refused> {
        let mut found = None;
        let mut any = false;
        if let Some(expected) = self.current(env) {
            any = true;
            if constant_time_eq(expected.as_bytes(), presented.as_bytes()) {
                found = Some(Actor::Admin);
            }
        }
        for op in &self.operators {
            let Some(expected) = read(&op.source, env) else {
                continue;
            };
            any = true;
            if constant_time_eq(expected.as_bytes(), presented.as_bytes()) && found.is_none() {
                found = Some(Actor::Operator {
                    name: op.name.clone(),
                    subject: op.subject.clone(),
                });
            }
        }
        match (found, any) {
            (Some(actor), _) => Ok(actor),
            (None, true) => Err(Refused::Wrong),
            (None, false) => Err(Refused::Disabled),
        }
    }
}

/// A token from its source, if set and non-empty.
fn read(source: &Source, env: &dyn Env) -> Option<String> {
    {
        let token = match source {
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
}

impl AdminToken {
    /// Who `presented` authenticates as (for a login form; headers go through
    /// [`AdminToken::check`]).
    ///
    /// # Errors
    /// [`Refused::Disabled`] without any token configured, else [`Refused::Wrong`].
    pub fn verify(&self, env: &dyn Env, presented: &str) -> Result<Actor, Refused> {
        self.who(env, presented)
    }

    /// Who the request's `Authorization: Bearer` header authenticates as.
    ///
    /// # Errors
    /// [`Refused`]: disabled, missing, or wrong.
    pub fn check(&self, env: &dyn Env, headers: &HeaderMap) -> Result<Actor, Refused> {
        if !self.configured() {
            return Err(Refused::Disabled);
        }
        let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(Refused::Missing);
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(bearer)
            .ok_or(Refused::Missing)?;
        self.who(env, presented)
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
        assert_eq!(
            t.check(&env, &headers(&["Bearer s3cret"])),
            Ok(Actor::Admin)
        );
        assert_eq!(
            t.check(&env, &headers(&["bearer s3cret"])),
            Ok(Actor::Admin)
        );
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
        assert_eq!(t.verify(&env, "first"), Ok(Actor::Admin));
        std::fs::write(&path, "second").expect("write");
        assert_eq!(t.verify(&env, "first"), Err(Refused::Wrong));
        assert_eq!(t.verify(&env, "second"), Ok(Actor::Admin));
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
        assert_eq!(t.verify(&env, "tok"), Ok(Actor::Admin));
    }

    #[test]
    fn an_operator_token_names_its_person() {
        let env: HashMap<String, String> = [
            ("ADMIN".to_owned(), "shared".to_owned()),
            ("DANA".to_owned(), "dana-token".to_owned()),
        ]
        .into();
        let t = AdminToken::from_config(&AdminConfig {
            token_env: Some("ADMIN".into()),
            operators: vec![crate::config::OperatorConfig {
                name: "dana".into(),
                token_env: Some("DANA".into()),
                token_file: None,
                subject: Some("dana@acme.com".into()),
            }],
            ..AdminConfig::default()
        });
        assert_eq!(
            t.check(&env, &headers(&["Bearer dana-token"])),
            Ok(Actor::Operator {
                name: "dana".into(),
                subject: Some("dana@acme.com".into())
            })
        );
        assert_eq!(t.verify(&env, "shared"), Ok(Actor::Admin));
        assert_eq!(t.verify(&env, "dana-token2"), Err(Refused::Wrong));
        // Operators alone enable the admin API (as themselves).
        let only: HashMap<String, String> = [("DANA".to_owned(), "dana-token".to_owned())].into();
        assert_eq!(t.verify(&only, "shared"), Err(Refused::Wrong));
        let none: HashMap<String, String> = HashMap::new();
        assert_eq!(t.verify(&none, "dana-token"), Err(Refused::Disabled));
    }
}
