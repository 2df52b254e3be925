//! entitygate: a fail-closed reverse proxy that pins every Composio call to the caller's
//! verified identity.
//!
//! # Layout
//! - [`config`]: the TOML contract and its validation.
//! - [`error`]: every refusal as one enum, mapped to Composio's error envelope.
//! - [`auth`]: JWT verification (static keys, JWKS) and the verified-token cache.
//! - [`tls`]: rustls configuration for the listener and for upstream.
//! - [`upstream`]: the pooled client to Composio, which alone injects the real key.
//! - [`sandbox`]: a faithful fake Composio, used by `entitygate demo` and the tests.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod error;
pub mod sandbox;
pub mod tls;
pub mod upstream;

pub use config::Config;
pub use error::Error;
