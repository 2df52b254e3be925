//! Approval requests in the fleet's Redis ([`crate::shared`], which knows nothing of
//! approvals): the only copy when `[shared]` is configured, so every replica sees one set and
//! a grant used on one replica is gone on all.
//!
//! Keys under the configured prefix: `approvals:req:{id}`, a hash holding the immutable request
//! as JSON (`meta`, arguments included, never re-encoded by Redis) and the fields that change
//! (`status`, `expires_at`, `grant_expires_at`, `approver`, `reason`, `decided_at`,
//! `used_at`); `approvals:key:{binding}` → the id of the latest request for a binding;
//! `approvals:pending:{subject}`, a set of the subject's pending ids (the bound);
//! `approvals:ids`, a sorted set of ids by creation time (the listing). Each key expires on
//! its own after the retention time.
//!
//! Every step that reads and then changes a request is one Lua script, which Redis runs
//! atomically: of two identical calls on two replicas racing for one grant, exactly one uses
//! it; of two replicas sweeping, exactly one marks a request expired (and audits it). Time
//! comes from the gateway's clock, as an argument. Redis down or slow: the step fails and the
//! caller refuses (no local copy could be trusted).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::{store_err, AskOutcome, Asked, DecideError, Request, Status, StoreError, Verdict};
use crate::shared::Cluster;

/// The one step of a call (module docs of [`super`]). KEYS: binding, subject's pending set,
/// listing. ARGV: now, request key prefix, new id, new meta, new expiry, max pending,
/// retention seconds.
const ASK: &str = r"
local now = tonumber(ARGV[1])
local rp = ARGV[2]
local expired = ''
local id = redis.call('GET', KEYS[1])
if id then
  local rk = rp .. id
  local f = redis.call('HMGET', rk, 'status', 'expires_at', 'grant_expires_at')
  local st = f[1]
  if st then
    local exp = tonumber(f[2]) or 0
    local gexp = tonumber(f[3]) or 0
    if st == 'approved' and now < gexp then
      redis.call('HSET', rk, 'status', 'used', 'used_at', ARGV[1])
      return {'granted', id, expired}
    elseif st == 'pending' and now < exp then
      return {'pending', id, expired}
    elseif st == 'denied' and now < exp then
      return {'denied', id, expired}
    elseif st == 'pending' or st == 'approved' then
      redis.call('HSET', rk, 'status', 'expired')
      redis.call('SREM', KEYS[2], id)
      expired = id
    end
  end
end
local live = 0
for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local f = redis.call('HMGET', rp .. pid, 'status', 'expires_at')
  if f[1] == 'pending' then
    if now < (tonumber(f[2]) or 0) then live = live + 1 end
  else
    redis.call('SREM', KEYS[2], pid)
  end
end
if live >= tonumber(ARGV[6]) then
  return {'full', '', expired}
end
local nid = ARGV[3]
local nk = rp .. nid
local keep = tonumber(ARGV[7])
redis.call('HSET', nk, 'meta', ARGV[4], 'status', 'pending', 'expires_at', ARGV[5])
redis.call('EXPIRE', nk, keep)
redis.call('SET', KEYS[1], nid, 'EX', keep)
redis.call('SADD', KEYS[2], nid)
redis.call('EXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[3], now, nid)
redis.call('EXPIRE', KEYS[3], keep)
return {'created', nid, expired}
";

/// An operator's decision. KEYS: the request, the subject's pending set. ARGV: now, new
/// status, approver, reason, grant expiry, id.
const DECIDE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if not f[1] then return {'missing', ''} end
if f[1] ~= 'pending' then return {'not_pending', f[1]} end
if tonumber(ARGV[1]) >= (tonumber(f[2]) or 0) then return {'expired', ''} end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'approver', ARGV[3], 'reason', ARGV[4],
  'decided_at', ARGV[1])
if ARGV[2] == 'approved' then
  redis.call('HSET', KEYS[1], 'grant_expires_at', ARGV[5])
end
redis.call('SREM', KEYS[2], ARGV[6])
return {'ok', ''}
";

/// Marks one request expired if its time ended; 1 for the one replica that did. KEYS: the
/// request. ARGV: now.
const EXPIRE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'grant_expires_at')
local now = tonumber(ARGV[1])
if (f[1] == 'pending' and now >= (tonumber(f[2]) or 0))
  or (f[1] == 'approved' and now >= (tonumber(f[3]) or 0)) then
  redis.call('HSET', KEYS[1], 'status', 'expired')
  return 1
end
return 0
";

static ASK_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ASK));
static DECIDE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(DECIDE));
static EXPIRE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(EXPIRE));

/// The fleet's requests.
#[derive(Clone)]
pub(crate) struct Fleet {
    cluster: Arc<Cluster>,
}

fn unavailable() -> StoreError {
    StoreError("Redis did not answer; nothing was decided".into())
}

impl Fleet {
    pub(crate) fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    fn request_key(&self, id: &str) -> String {
        self.cluster.key(&["approvals", "req", id])
    }

    fn prefix(&self) -> String {
        self.cluster.key(&["approvals", "req", ""])
    }

    fn binding_key(&self, key: &str) -> String {
        self.cluster.key(&["approvals", "key", key])
    }

    fn pending_key(&self, subject: &str) -> String {
        self.cluster.key(&["approvals", "pending", subject])
    }

    fn ids_key(&self) -> String {
        self.cluster.key(&["approvals", "ids"])
    }

    /// One round trip, bounded: the request path's timeout for a call, a reconnect's for the
    /// admin side. A failure marks nothing up; the caller fails closed.
    async fn run<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let cfg = self.cluster.config();
        let limit = Duration::from_millis(cfg.timeout_ms.max(cfg.connect_timeout_ms));
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "approvals: Redis refused");
                Err(unavailable())
            }
            Err(_) => Err(unavailable()),
        }
    }

    /// A request from its hash (`None` when it is gone or unreadable).
    fn assemble(fields: &HashMap<String, String>) -> Option<Request> {
        let mut r: Request = serde_json::from_str(fields.get("meta")?).ok()?;
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        r.status = Status::parse(fields.get("status")?)?;
        r.expires_at = num("expires_at")?;
        r.grant_expires_at = num("grant_expires_at");
        r.decided_at = num("decided_at");
        r.used_at = num("used_at");
        r.approver = fields.get("approver").cloned();
        r.reason = fields.get("reason").cloned();
        Some(r)
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<Request>, StoreError> {
        let mut conn = self.cluster.conn();
        let key = self.request_key(id);
        let fields: HashMap<String, String> = self
            .run(redis::cmd("HGETALL").arg(&key).query_async(&mut conn))
            .await?;
        Ok(Self::assemble(&fields))
    }

    async fn found(&self, id: &str) -> Result<Request, StoreError> {
        self.get(id)
            .await?
            .ok_or_else(|| StoreError("a request vanished while it was read".into()))
    }

    pub(crate) async fn peek(&self, key: &str) -> Result<Option<Request>, StoreError> {
        let mut conn = self.cluster.conn();
        let id: Option<String> = self
            .run(
                redis::cmd("GET")
                    .arg(self.binding_key(key))
                    .query_async(&mut conn),
            )
            .await?;
        match id {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    pub(crate) async fn list(&self) -> Result<Vec<Request>, StoreError> {
        let mut conn = self.cluster.conn();
        let ids: Vec<String> = self
            .run(
                redis::cmd("ZREVRANGE")
                    .arg(self.ids_key())
                    .arg(0)
                    .arg(super::MAX_LISTED as i64 - 1)
                    .query_async(&mut conn),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.request_key(id));
        }
        let all: Vec<HashMap<String, String>> = self.run(pipe.query_async(&mut conn)).await?;
        Ok(all.iter().filter_map(Self::assemble).collect())
    }

    pub(crate) async fn ask(
        &self,
        fresh: Request,
        max_pending: usize,
        now: u64,
        retain: u64,
    ) -> Result<AskOutcome, StoreError> {
        let meta = serde_json::to_string(&fresh).map_err(store_err)?;
        let mut conn = self.cluster.conn();
        let mut call = ASK_SCRIPT.key(self.binding_key(&fresh.key));
        call.key(self.pending_key(&fresh.subject))
            .key(self.ids_key())
            .arg(now)
            .arg(self.prefix())
            .arg(&fresh.id)
            .arg(meta)
            .arg(fresh.expires_at)
            .arg(max_pending)
            .arg(retain);
        let (what, id, expired): (String, String, String) =
            self.run(call.invoke_async(&mut conn)).await?;
        let expired = if expired.is_empty() {
            None
        } else {
            self.get(&expired).await.ok().flatten()
        };
        let asked = match what.as_str() {
            "granted" => Asked::Granted(self.found(&id).await?),
            "pending" => Asked::Pending {
                request: self.found(&id).await?,
                created: false,
            },
            "denied" => Asked::Denied(self.found(&id).await?),
            "created" => Asked::Pending {
                request: fresh,
                created: true,
            },
            "full" => Asked::Full,
            other => return Err(StoreError(format!("unexpected answer `{other}`"))),
        };
        Ok(AskOutcome { asked, expired })
    }

    pub(crate) async fn decide(
        &self,
        id: &str,
        verdict: Verdict,
        approver: &str,
        reason: &str,
        now: u64,
        grant_until: u64,
    ) -> Result<Request, DecideError> {
        let Some(current) = self.get(id).await? else {
            return Err(DecideError::NotFound);
        };
        let mut conn = self.cluster.conn();
        let mut call = DECIDE_SCRIPT.key(self.request_key(id));
        call.key(self.pending_key(&current.subject))
            .arg(now)
            .arg(verdict.status().as_str())
            .arg(approver)
            .arg(reason)
            .arg(grant_until)
            .arg(id);
        let (what, detail): (String, String) = self.run(call.invoke_async(&mut conn)).await?;
        match what.as_str() {
            "ok" => self.get(id).await?.ok_or(DecideError::NotFound),
            "missing" => Err(DecideError::NotFound),
            "expired" => Err(DecideError::Expired),
            _ => Err(DecideError::NotPending(
                Status::parse(&detail).map_or("unknown", Status::as_str),
            )),
        }
    }

    pub(crate) async fn sweep(&self, now: u64, retain: u64) -> Result<Vec<Request>, StoreError> {
        let mut conn = self.cluster.conn();
        let ids_key = self.ids_key();
        // Ids older than the retention point at requests Redis has dropped already.
        let oldest = now.saturating_sub(retain);
        let _: i64 = self
            .run(
                redis::cmd("ZREMRANGEBYSCORE")
                    .arg(&ids_key)
                    .arg("-inf")
                    .arg(format!("({oldest}"))
                    .query_async(&mut conn),
            )
            .await?;
        let mut expired = Vec::new();
        for r in self.list().await? {
            if !matches!(r.live(now), super::Live::Over(true)) {
                continue;
            }
            let mut call = EXPIRE_SCRIPT.key(self.request_key(&r.id));
            call.arg(now);
            let flipped: i64 = self.run(call.invoke_async(&mut conn)).await?;
            if flipped == 1 {
                let _: i64 = self
                    .run(
                        redis::cmd("SREM")
                            .arg(self.pending_key(&r.subject))
                            .arg(&r.id)
                            .query_async(&mut conn),
                    )
                    .await?;
                expired.push(Request {
                    status: Status::Expired,
                    ..r
                });
            }
        }
        Ok(expired)
    }
}
