//! Verified tokens, remembered until their expiry so a client that sends one token on every
//! call pays one signature check.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{Arc, Mutex},
};

use super::{Caller, verify::unix_now};

/// Verified tokens remembered per process. 100,000 entries of about 400 bytes: 40 MB at
/// worst, and a flash sale's active users each send one token many times.
pub const CACHE_CAPACITY: usize = 100_000;
/// Cache shards: each has its own lock, so replicas' worker threads rarely contend.
const CACHE_SHARDS: usize = 16;

/// One cache shard: token → (caller, unix second it stops being valid).
type CacheShard = HashMap<Box<str>, (Arc<Caller>, u64)>;

/// Verified tokens until their expiry, in [`CACHE_SHARDS`] locked maps.
pub(super) struct TokenCache {
    hasher: RandomState,
    shards: Vec<Mutex<CacheShard>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self { hasher: RandomState::new(), shards: (0..CACHE_SHARDS).map(|_| Mutex::default()).collect() }
    }
}

impl TokenCache {
    fn shard(&self, token: &str) -> std::sync::MutexGuard<'_, CacheShard> {
        let index = self.hasher.hash_one(token) as usize % CACHE_SHARDS;
        self.shards[index].lock().unwrap_or_else(|poison| poison.into_inner())
    }

    pub(super) fn get(&self, token: &str, now: u64) -> Option<Arc<Caller>> {
        let shard = self.shard(token);
        shard.get(token).filter(|(_, expires)| now < *expires).map(|(caller, _)| Arc::clone(caller))
    }

    pub(super) fn insert(&self, token: &str, caller: Arc<Caller>, expires: u64) {
        let mut shard = self.shard(token);
        if shard.len() >= CACHE_CAPACITY / CACHE_SHARDS {
            let now = unix_now();
            shard.retain(|_, (_, expires)| now < *expires);
            if shard.len() >= CACHE_CAPACITY / CACHE_SHARDS {
                // Full of live tokens: forget them all; each costs one more check next time.
                shard.clear();
            }
        }
        shard.insert(token.into(), (caller, expires));
    }

    pub(super) fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(|poison| poison.into_inner()).clear();
        }
    }
}
