//! The front door: `/mcp` as the subject's own MCP endpoint (`[mcp] front_door = true`).
//!
//! The gateway creates a Composio tool router session for the subject (user pinned, toolkits
//! intersected with what the tool policy permits, the rest from `[mcp.session]`) and serves
//! it as if the client had been handed its URL. Sessions are reused per (subject, permitted
//! toolkits) for `[mcp] session_ttl_secs`, with concurrent first calls coalesced into one
//! creation. The cache only saves a creation: it never decides access (every message is still
//! decided as on any session URL), and a replica that does not know the subject's session
//! simply creates one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::audit::Audit;
use crate::error::Error;
use crate::proxy::Ctx;
use crate::rewrite::JsonObject;
use crate::upstream::TimeoutClass;

/// Bound on remembered sessions; past it the map is cleared (a miss only costs a creation).
const MAX_SESSIONS: usize = 100_000;

type Slot = Arc<OnceCell<(String, Instant)>>;

/// Front-door sessions by (subject, permitted toolkits).
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Slot>>,
}

impl Sessions {
    fn slot(&self, key: &str, ttl: Duration) -> Slot {
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = map.get(key) {
            let fresh = slot.get().is_none_or(|(_, at)| at.elapsed() < ttl);
            if fresh {
                return slot.clone();
            }
        }
        if map.len() >= MAX_SESSIONS {
            map.clear();
        }
        let slot = Slot::default();
        map.insert(key.to_owned(), slot.clone());
        slot
    }
}

/// The subject's front-door session id, created when none is known here.
pub(crate) async fn session(ctx: &Ctx<'_>, audit: &mut Audit) -> Result<String, Error> {
    let shared = ctx.shared;
    let (permitted, _) = shared.tool_policy.permitted(&ctx.identity.claims);
    let key = format!("{}\u{0}{permitted:?}", ctx.subject());
    let ttl = Duration::from_secs(shared.mcp.session_ttl_secs);
    let slot = shared.front_door.slot(&key, ttl);
    let (id, _) = slot
        .get_or_try_init(|| async {
            let id = create(ctx, audit).await?;
            Ok::<_, Error>((id, Instant::now()))
        })
        .await?;
    Ok(id.clone())
}

/// Creates a tool router session for the subject at Composio.
async fn create(ctx: &Ctx<'_>, audit: &mut Audit) -> Result<String, Error> {
    let shared = ctx.shared;
    let mut body = serde_json::Map::new();
    body.insert("user_id".into(), Value::String(ctx.subject().to_owned()));
    for (k, v) in &shared.mcp.session {
        body.insert(k.clone(), v.clone());
    }
    let bytes = serde_json::to_vec(&body).map_err(|_| Error::Internal)?;
    let mut obj = JsonObject::parse(&bytes)?;
    crate::proxy::toolgate::session_toolkits(ctx, &mut obj, true, audit).await?;
    let req = Request::builder()
        .method(Method::POST)
        .uri(shared.upstream.uri("/api/v3.1/tool_router/session")?)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .header(header::ACCEPT_ENCODING, "identity")
        .header("x-request-id", ctx.request_id.clone())
        .body(Full::new(Bytes::from(obj.to_vec())))
        .map_err(|_| Error::Internal)?;
    let resp = shared.upstream.send(req, TimeoutClass::Default).await?;
    let status = resp.status();
    let answer = Limited::new(resp.into_body(), 8 * 1024 * 1024)
        .collect()
        .await
        .map_err(|_| Error::UpstreamUnavailable)?
        .to_bytes();
    if status != StatusCode::OK && status != StatusCode::CREATED {
        tracing::warn!(%status, "front door: Composio refused the session");
        return Err(Error::UpstreamUnavailable);
    }
    let v: Value = serde_json::from_slice(&answer).map_err(|_| Error::UpstreamUnavailable)?;
    let id = v["session_id"]
        .as_str()
        .or_else(|| v["id"].as_str())
        .filter(|id| crate::path::check(&format!("/{id}")).is_ok())
        .ok_or(Error::UpstreamUnavailable)?;
    let owner = v["config"]["user_id"]
        .as_str()
        .or_else(|| v["user_id"].as_str());
    if owner.is_some_and(|o| o != ctx.subject()) {
        tracing::error!("front door: Composio created a session for another user; refused");
        return Err(Error::UpstreamUnavailable);
    }
    shared.connections.remember_session(id, ctx.subject());
    tracing::info!(subject = %ctx.subject(), session = id, "front door: session created");
    Ok(id.to_owned())
}
