//! The verified-token cache: SHA-256 of the token bytes to the [`Identity`] it proved, bounded
//! in entries and in bytes, re-checking `exp` on every hit.
//!
//! An entry's size is estimated when it is inserted (key, identity, subject, and the JSON size
//! of the claims it kept, plus map overhead), so the byte bound holds whatever tokens arrive:
//! the [`Identity`] keeps only the claims the tool policy reads, and an entry that alone would
//! take more than 1/64 of the budget is not cached at all.
//!
//! Only tokens that verified fully are inserted. Inserts and clears are serialised by a small
//! mutex (never held across `.await`) that also guards a generation number: a verification that
//! started before the key set changed cannot insert its result after the cache was cleared.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::Identity;
use crate::error::Error;

/// The cache key: SHA-256 of the token.
pub(crate) type TokenHash = [u8; 32];

/// Bytes counted per entry beyond its contents: the map's slot, the `Arc`s' counts, the
/// claims map's nodes.
const ENTRY_OVERHEAD: usize = 160;

/// One cached identity and the bytes it is counted for.
struct Entry {
    identity: Identity,
    size: usize,
}

/// A bounded map of verified tokens.
pub(crate) struct TokenCache {
    map: DashMap<TokenHash, Entry>,
    cap: usize,
    max_bytes: usize,
    /// Bytes of the entries in `map`.
    bytes: AtomicUsize,
    leeway: u64,
    /// Generation, bumped by [`TokenCache::clear`]; the lock also serialises inserts.
    write: Mutex<u64>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.map.len())
            .field("cap", &self.cap)
            .field("bytes", &self.bytes.load(Ordering::Relaxed))
            .field("max_bytes", &self.max_bytes)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `cap` entries and `max_bytes` bytes (either 0 disables caching).
    pub(crate) fn new(cap: usize, max_bytes: usize, leeway: u64) -> Self {
        Self {
            map: DashMap::new(),
            cap: if max_bytes == 0 { 0 } else { cap },
            max_bytes,
            bytes: AtomicUsize::new(0),
            leeway,
            write: Mutex::new(0),
        }
    }

    /// The key for `token`.
    pub(crate) fn key(token: &str) -> TokenHash {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The current generation; pass it back to [`TokenCache::insert`].
    pub(crate) fn generation(&self) -> u64 {
        *self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A cached identity for `key`: `None` on a miss, `Some(Err(TokenExpired))` (and the entry
    /// removed) when it has expired by `now`, beyond the leeway.
    pub(crate) fn get(&self, key: &TokenHash, now: u64) -> Option<Result<Identity, Error>> {
        let hit = self.map.get(key).map(|e| e.value().identity.clone())?;
        if expired(hit.expires_at, now, self.leeway) {
            // The guard from `get` is dropped above; removing now cannot deadlock.
            self.remove(key);
            return Some(Err(Error::TokenExpired));
        }
        Some(Ok(hit))
    }

    fn remove(&self, key: &TokenHash) {
        if let Some((_, e)) = self.map.remove(key) {
            self.bytes.fetch_sub(e.size, Ordering::Relaxed);
        }
    }

    /// The bytes an entry for `identity` is counted for.
    pub(crate) fn size_of(identity: &Identity) -> usize {
        let claims = serde_json::to_vec(&*identity.claims).map_or(0, |v| v.len());
        std::mem::size_of::<TokenHash>()
            + std::mem::size_of::<Entry>()
            + identity.subject.len()
            + claims
            + ENTRY_OVERHEAD * (1 + identity.claims.len())
    }

    /// Remembers a verified identity, unless the cache was cleared since `generation` was read.
    /// When full (in entries or bytes), expired entries are dropped first, then arbitrary ones.
    pub(crate) fn insert(&self, key: TokenHash, identity: Identity, generation: u64, now: u64) {
        if self.cap == 0 {
            return;
        }
        let size = Self::size_of(&identity);
        if size > self.max_bytes / 64 {
            return;
        }
        let guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if *guard != generation {
            return;
        }
        self.remove(&key);
        let full =
            |c: &Self| c.map.len() >= c.cap || c.bytes.load(Ordering::Relaxed) + size > c.max_bytes;
        if full(self) {
            let leeway = self.leeway;
            let mut freed = 0;
            self.map.retain(|_, e| {
                let keep = !expired(e.identity.expires_at, now, leeway);
                if !keep {
                    freed += e.size;
                }
                keep
            });
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
            if full(self) {
                // Evict an eighth at a time, so a full cache does not pay this on every insert.
                let n = (self.map.len() / 8).max(1);
                // Collect first: removing while iterating would deadlock a shard.
                let victims: Vec<TokenHash> = self.map.iter().take(n).map(|e| *e.key()).collect();
                for v in victims {
                    self.remove(&v);
                }
            }
        }
        while full(self) {
            let Some(victim) = self.map.iter().next().map(|e| *e.key()) else {
                break;
            };
            self.remove(&victim);
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.map.insert(key, Entry { identity, size });
        drop(guard);
    }

    /// Forgets everything (the key set changed: a key may have been revoked).
    pub(crate) fn clear(&self) {
        let mut guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = guard.wrapping_add(1);
        self.map.clear();
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// How many entries.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Bytes the entries are counted for.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// Whether `exp` has passed at `now`, beyond `leeway`.
pub(crate) fn expired(exp: u64, now: u64, leeway: u64) -> bool {
    now > exp.saturating_add(leeway)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ident(sub: &str, exp: u64) -> Identity {
        Identity {
            subject: Arc::from(sub),
            claims: Arc::new(serde_json::Map::new()),
            expires_at: exp,
        }
    }

    #[test]
    fn hit_returns_the_identity_and_expired_hit_is_refused_and_removed() {
        let c = TokenCache::new(10, 1 << 20, 5);
        let k = TokenCache::key("t");
        c.insert(k, ident("alice", 100), c.generation(), 50);
        assert_eq!(&*c.get(&k, 100).unwrap().unwrap().subject, "alice");
        assert_eq!(&*c.get(&k, 105).unwrap().unwrap().subject, "alice"); // within leeway
        assert_eq!(c.get(&k, 106).unwrap().unwrap_err(), Error::TokenExpired);
        assert_eq!(c.len(), 0);
        assert!(c.get(&k, 106).is_none());
    }

    #[test]
    fn never_grows_beyond_its_bound() {
        let c = TokenCache::new(16, 1 << 20, 0);
        for i in 0..1000u32 {
            c.insert(
                TokenCache::key(&i.to_string()),
                ident("u", 1_000),
                c.generation(),
                10,
            );
            assert!(c.len() <= 16);
        }
        // The newest entry is present after an eviction.
        assert!(c.get(&TokenCache::key("999"), 10).is_some());
    }

    #[test]
    fn expired_entries_are_evicted_first() {
        let c = TokenCache::new(4, 1 << 20, 0);
        let g = c.generation();
        for i in 0..3u32 {
            c.insert(TokenCache::key(&format!("old{i}")), ident("u", 10), g, 5);
        }
        c.insert(TokenCache::key("live"), ident("u", 1_000), g, 5);
        c.insert(TokenCache::key("new"), ident("u", 1_000), g, 500);
        assert!(c.get(&TokenCache::key("live"), 500).is_some());
        assert!(c.get(&TokenCache::key("new"), 500).is_some());
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn clear_forgets_and_blocks_stale_inserts() {
        let c = TokenCache::new(10, 1 << 20, 0);
        let g = c.generation();
        c.insert(TokenCache::key("a"), ident("a", 100), g, 1);
        c.clear();
        assert_eq!(c.len(), 0);
        // A verification that started before the clear must not repopulate the cache.
        c.insert(TokenCache::key("b"), ident("b", 100), g, 1);
        assert_eq!(c.len(), 0);
        c.insert(TokenCache::key("b"), ident("b", 100), c.generation(), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn bytes_are_bounded_and_accounted_whatever_the_claims() {
        let budget = 64 * 1024;
        let c = TokenCache::new(100_000, budget, 0);
        let fat = |i: u32| {
            let mut claims = serde_json::Map::new();
            claims.insert("scope".into(), serde_json::Value::String("x".repeat(300)));
            Identity {
                subject: Arc::from(format!("user-{i}")),
                claims: Arc::new(claims),
                expires_at: 1_000,
            }
        };
        for i in 0..10_000u32 {
            c.insert(TokenCache::key(&i.to_string()), fat(i), c.generation(), 10);
            assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
        }
        assert!(c.len() > 10, "the cache still caches: {}", c.len());
        let sum: usize = c.map.iter().map(|e| e.value().size).sum();
        assert_eq!(sum, c.bytes(), "the byte count matches the entries");
        // An entry too big for its share of the budget is not cached at all.
        let mut huge = serde_json::Map::new();
        huge.insert("scope".into(), serde_json::Value::String("y".repeat(4096)));
        let big = Identity {
            subject: Arc::from("big"),
            claims: Arc::new(huge),
            expires_at: 1_000,
        };
        c.insert(TokenCache::key("big"), big, c.generation(), 10);
        assert!(c.get(&TokenCache::key("big"), 10).is_none());
        c.clear();
        assert_eq!(c.bytes(), 0);
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let c = TokenCache::new(0, 1 << 20, 0);
        c.insert(TokenCache::key("a"), ident("a", 100), c.generation(), 1);
        assert_eq!(c.len(), 0);
    }
}
