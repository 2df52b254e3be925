//! The verified-token cache: SHA-256 of the token bytes to the [`Identity`] it proved, bounded
//! in size, re-checking `exp` on every hit.
//!
//! Only tokens that verified fully are inserted. Inserts and clears are serialised by a small
//! mutex (never held across `.await`) that also guards a generation number: a verification that
//! started before the key set changed cannot insert its result after the cache was cleared.

use std::sync::{Mutex, PoisonError};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::Identity;
use crate::error::Error;

/// The cache key: SHA-256 of the token.
pub(crate) type TokenHash = [u8; 32];

/// A bounded map of verified tokens.
pub(crate) struct TokenCache {
    map: DashMap<TokenHash, Identity>,
    cap: usize,
    leeway: u64,
    /// Generation, bumped by [`TokenCache::clear`]; the lock also serialises inserts.
    write: Mutex<u64>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.map.len())
            .field("cap", &self.cap)
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `cap` entries (0 disables caching).
    pub(crate) fn new(cap: usize, leeway: u64) -> Self {
        Self {
            map: DashMap::new(),
            cap,
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
        let hit = self.map.get(key).map(|e| e.value().clone())?;
        if expired(hit.expires_at, now, self.leeway) {
            // The guard from `get` is dropped above; removing now cannot deadlock.
            self.map.remove(key);
            return Some(Err(Error::TokenExpired));
        }
        Some(Ok(hit))
    }

    /// Remembers a verified identity, unless the cache was cleared since `generation` was read.
    /// When full, expired entries are dropped first, then arbitrary ones.
    pub(crate) fn insert(&self, key: TokenHash, identity: Identity, generation: u64, now: u64) {
        if self.cap == 0 {
            return;
        }
        let guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        if *guard != generation {
            return;
        }
        if self.map.len() >= self.cap && !self.map.contains_key(&key) {
            let leeway = self.leeway;
            self.map.retain(|_, v| !expired(v.expires_at, now, leeway));
            if self.map.len() >= self.cap {
                let excess = self.map.len() + 1 - self.cap;
                let n = excess.max(self.cap / 8).max(1);
                // Collect first: removing while iterating would deadlock a shard.
                let victims: Vec<TokenHash> = self.map.iter().take(n).map(|e| *e.key()).collect();
                for v in victims {
                    self.map.remove(&v);
                }
            }
        }
        if self.map.len() < self.cap || self.map.contains_key(&key) {
            self.map.insert(key, identity);
        }
        drop(guard);
    }

    /// Forgets everything (the key set changed: a key may have been revoked).
    pub(crate) fn clear(&self) {
        let mut guard = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        *guard = guard.wrapping_add(1);
        self.map.clear();
    }

    /// How many entries.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
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
        let c = TokenCache::new(10, 5);
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
        let c = TokenCache::new(16, 0);
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
        let c = TokenCache::new(4, 0);
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
        let c = TokenCache::new(10, 0);
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
    fn zero_capacity_disables_caching() {
        let c = TokenCache::new(0, 0);
        c.insert(TokenCache::key("a"), ident("a", 100), c.generation(), 1);
        assert_eq!(c.len(), 0);
    }
}
