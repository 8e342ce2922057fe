//! Quota counters (CONTRACT §5): one counter per key (and per API scope),
//! renewed `quota_renewal_rate` seconds after it started. Counting happens
//! in memory, check-and-count under a lock so concurrent requests never
//! over-allow; a background `persist` writes changed counters to the store
//! in one batch (never a store write per request), and `load` reads them
//! back at start. Stored as `quota-[scope-]<stored id>`, Tyk's names.

use std::hash::BuildHasher;

use crate::FastMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::session::AccessDefinition;
use crate::store::Store;

const SHARDS: usize = 32;
pub const PREFIX: &str = "quota-";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Counter {
    used: i64,
    /// Unix seconds at which the counter renews; 0 = never.
    expires_at: i64,
    /// The stored id of the key it belongs to.
    key: String,
    #[serde(skip)]
    dirty: bool,
}

/// A counter as the store keeps it (for `store::migrate`).
pub fn record(used: i64, expires_at: i64, key: &str) -> Vec<u8> {
    let c = Counter {
        used,
        expires_at,
        key: key.to_string(),
        dirty: false,
    };
    serde_json::to_vec(&c).unwrap_or_default()
}

/// (used, expires_at) of a stored counter.
pub fn read_record(bytes: &[u8]) -> Option<(i64, i64)> {
    let c: Counter = serde_json::from_slice(bytes).ok()?;
    Some((c.used, c.expires_at))
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuotaDecision {
    pub allowed: bool,
    /// Left after this request, at least 0.
    pub remaining: i64,
    /// Unix seconds of renewal; 0 = never.
    pub renews: i64,
}

pub struct Quotas {
    shards: Vec<Mutex<FastMap<String, Counter>>>,
    /// Picks a key's shard (its own seed: not the maps' hash).
    pick: foldhash::fast::RandomState,
    store: Arc<dyn Store>,
    /// Held while persisting or resetting, so a reset is never undone by
    /// a persist that read the counter before it.
    persisting: Mutex<()>,
}

/// The counter scope of a key's access to `api_id`: empty unless the
/// access has its own limit, then its `allowance_scope` or the API id.
pub fn scope_for(access: Option<&AccessDefinition>, api_id: &str) -> String {
    match access {
        Some(a) if a.limit.as_ref().is_some_and(|l| !l.is_empty()) => {
            if a.allowance_scope.is_empty() {
                api_id.to_string()
            } else {
                a.allowance_scope.clone()
            }
        }
        _ => String::new(),
    }
}

/// The counter name for a key's stored id and an optional API scope.
pub fn counter_name(scope: &str, stored_id: &str) -> String {
    // Concatenated, not formatted: this runs on every quota-counted request.
    if scope.is_empty() {
        [PREFIX, stored_id].concat()
    } else {
        [PREFIX, scope, "-", stored_id].concat()
    }
}

impl Quotas {
    /// Loads the persisted counters.
    pub fn load(store: Arc<dyn Store>) -> Result<Quotas, Error> {
        let q = Quotas {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pick: Default::default(),
            store,
            persisting: Mutex::new(()),
        };
        for (name, value) in q.store.scan(PREFIX)? {
            match serde_json::from_slice::<Counter>(&value) {
                Ok(c) => {
                    q.shard(&name)
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, c);
                }
                Err(e) => log::warn!("store: skipping unreadable quota counter {name}: {e}"),
            }
        }
        Ok(q)
    }

    fn shard(&self, name: &str) -> &Mutex<FastMap<String, Counter>> {
        &self.shards[usize::try_from(self.pick.hash_one(name) % SHARDS as u64).unwrap_or(0)]
    }

    /// Counts one request against counter `name` (refused ones count too).
    pub fn check(
        &self,
        name: &str,
        key: &str,
        max: i64,
        renewal_rate: i64,
        now: i64,
    ) -> QuotaDecision {
        let mut map = self.shard(name).lock().unwrap_or_else(|e| e.into_inner());
        let c = match map.get_mut(name) {
            Some(c) => c,
            // A new counter starts expired (-1), so the renewal below opens
            // its first period exactly as it opens every later one.
            None => map.entry(name.to_string()).or_insert(Counter {
                used: 0,
                expires_at: -1,
                key: key.to_string(),
                dirty: true,
            }),
        };
        let expired = c.expires_at != 0 && now >= c.expires_at;
        if expired {
            c.used = 0;
            c.expires_at = if renewal_rate > 0 {
                now + renewal_rate
            } else {
                0
            };
        }
        c.used += 1;
        c.dirty = true;
        QuotaDecision {
            allowed: c.used <= max,
            remaining: (max - c.used).max(0),
            renews: c.expires_at,
        }
    }

    /// Used count and renewal time of counter `name`, if it is live.
    pub fn get(&self, name: &str, now: i64) -> Option<(i64, i64)> {
        let map = self.shard(name).lock().unwrap_or_else(|e| e.into_inner());
        map.get(name)
            .filter(|c| c.expires_at == 0 || now < c.expires_at)
            .map(|c| (c.used, c.expires_at))
    }

    /// Deletes every counter of the key stored as `key`, durably.
    pub fn reset(&self, key: &str) -> Result<(), Error> {
        let _p = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        let mut gone = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|name, c| {
                let keep = c.key != key;
                if !keep {
                    gone.push(name.clone());
                }
                keep
            });
        }
        for name in gone {
            self.store.delete(&name)?;
        }
        Ok(())
    }

    /// Writes counters changed since the last call in one durable batch.
    pub fn persist(&self) -> Result<usize, Error> {
        let _p = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (name, c) in map.iter_mut().filter(|(_, c)| c.dirty) {
                c.dirty = false;
                if let Ok(bytes) = serde_json::to_vec(c) {
                    batch.push((name.clone(), bytes));
                }
            }
        }
        if !batch.is_empty() {
            self.store.set_many(&batch)?;
        }
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn quotas(dir: &std::path::Path) -> Quotas {
        Quotas::load(Arc::new(SledStore::open(dir).unwrap())).unwrap()
    }

    #[test]
    fn request_n_fails_when_n_minus_one_reaches_max() {
        let dir = tempfile::tempdir().unwrap();
        let q = quotas(dir.path());
        let allowed: Vec<bool> = (0..4)
            .map(|_| q.check("quota-k", "k", 2, 60, 100).allowed)
            .collect();
        assert_eq!(allowed, [true, true, false, false]);
        assert_eq!(q.check("quota-k", "k", 2, 60, 100).remaining, 0);
    }

    #[test]
    fn counter_renews_after_its_period() {
        let dir = tempfile::tempdir().unwrap();
        let q = quotas(dir.path());
        let first = q.check("quota-k", "k", 1, 60, 100);
        assert_eq!((first.allowed, first.renews), (true, 160));
        assert!(!q.check("quota-k", "k", 1, 60, 159).allowed);
        assert!(q.check("quota-k", "k", 1, 60, 160).allowed);
    }

    #[test]
    fn non_positive_renewal_never_renews() {
        let dir = tempfile::tempdir().unwrap();
        let q = quotas(dir.path());
        assert_eq!(q.check("quota-k", "k", 1, 0, 100).renews, 0);
        assert!(!q.check("quota-k", "k", 1, 0, 1_000_000).allowed);
    }

    #[test]
    fn persisted_counts_survive_reload_and_reset_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let q = quotas(dir.path());
            for _ in 0..3 {
                q.check("quota-a", "a", 10, 60, 100);
            }
            q.check("quota-b", "b", 10, 60, 100);
            assert_eq!(q.persist().unwrap(), 2);
            assert_eq!(q.persist().unwrap(), 0);
            q.reset("b").unwrap();
        }
        let q = quotas(dir.path());
        assert_eq!(q.get("quota-a", 100), Some((3, 160)));
        assert_eq!(q.get("quota-b", 100), None);
    }

    #[test]
    fn scoped_names() {
        assert_eq!(counter_name("", "h"), "quota-h");
        assert_eq!(counter_name("api1", "h"), "quota-api1-h");
    }
}
