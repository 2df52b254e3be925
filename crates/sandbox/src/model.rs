//! The sandbox's data types: what tests build ([`Account`], [`Tool`]), what they inspect
//! ([`Recorded`]) and what they inject ([`Fault`]); and [`lock`], the one way to take a lock.
//! The lowest module but `clock`: every other module may import it, it imports none of them.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use crate::clock;

/// One connected account, as the sandbox stores it (`ca_...` ids are used on every API
/// version; Composio's v1 UUIDs are not modelled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account id (`ca_...`).
    pub id: String,
    /// The owning user (Composio "entity").
    pub user_id: String,
    /// Lower-case toolkit slug.
    pub toolkit: String,
    /// `INITIALIZING`, `INITIATED`, `ACTIVE`, `FAILED`, `EXPIRED`, `INACTIVE` or `REVOKED`.
    pub status: String,
    /// Disabled accounts keep their status but cannot run tools.
    pub is_disabled: bool,
    /// The auth config (`ac_...`) the account was created from.
    pub auth_config_id: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// Why the status is what it is, when Composio says so.
    pub status_reason: Option<String>,
}

/// One tool (action) of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// Upper-case tool slug.
    pub slug: String,
    /// Lower-case slug of the owning toolkit (not necessarily the slug's prefix).
    pub toolkit: String,
    /// Runs without any connected account.
    pub no_auth: bool,
}

/// One request as it reached the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Every header, names lower-case, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Bytes,
}

/// A misbehaviour to inject, for fail-closed tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Behave normally (also clears a fault).
    None,
    /// Answer every request with this status, in Composio's error envelope.
    Status(u16),
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Answer 200 with a body that is not JSON.
    Garbage,
    /// Close the connection without answering (on HTTP/2: reset the stream).
    Reset,
    /// Answer 200 JSON echoing the method, path, query, every header and the body.
    EchoHeaders,
    /// Answer with this status and this JSON body, as given (a provider's failure relayed
    /// by Composio, a JSON-RPC answer of a hosted MCP endpoint).
    Json(u16, serde_json::Value),
}

/// Locks `m`, going on through a poisoned lock: a test that panicked while holding one must
/// not turn every later request into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl Account ===

impl Account {
    /// An account with the toolkit's default auth config (`ac_<toolkit>`), enabled, created
    /// now.
    pub fn new(id: &str, user_id: &str, toolkit: &str, status: &str) -> Self {
        let toolkit = toolkit.to_ascii_lowercase();
        Self {
            id: id.to_owned(),
            user_id: user_id.to_owned(),
            auth_config_id: format!("ac_{toolkit}"),
            toolkit,
            status: status.to_ascii_uppercase(),
            is_disabled: false,
            created_at: clock::now_rfc3339(),
            status_reason: None,
        }
    }

    /// Whether the account may run tools: `ACTIVE` and not disabled.
    pub fn is_usable(&self) -> bool {
        self.status == "ACTIVE" && !self.is_disabled
    }
}

// === impl Tool ===

impl Tool {
    /// A tool of `toolkit`.
    pub fn new(slug: &str, toolkit: &str, no_auth: bool) -> Self {
        Self {
            slug: slug.to_ascii_uppercase(),
            toolkit: toolkit.to_ascii_lowercase(),
            no_auth,
        }
    }
}

// === impl Recorded ===

impl Recorded {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The decoded query pairs, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.query
            .as_deref()
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of query parameter `key`.
    pub fn query_param(&self, key: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}
