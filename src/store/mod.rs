//! The durable key-value store behind keys, quotas and anything else that
//! must survive a restart. `Store` is the narrow interface; `SledStore`
//! (`sled.rs`) is the embedded one, `RedisStore` (`redis.rs`) the shared
//! one of cluster mode, in Tyk's key layout. Keys use Tyk's names
//! (`apikey-…`, `quota-…`). Caching and meaning belong to the callers.
//!
//! An entry may have a lifetime (Redis's TTL; sled keeps a deadline with
//! the value): once it passes, the entry reads as absent everywhere.

pub mod migrate;
mod redis;
pub mod signals;
mod sled;

pub use self::redis::{Notification, Redis, RedisOptions, RedisStore, RedisTls, glob_escape};
pub use self::sled::SledStore;

use crate::error::Error;

/// How a write treats the entry's lifetime, and an entry that is not
/// there (Tyk's session writes, REDIS.md §4.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Write {
    /// Seconds until the entry is gone; 0 or less, until deleted (a
    /// lifetime the entry had is dropped, as a plain Redis `SET` does).
    pub ttl: i64,
    /// Only replace an entry that exists (Redis `SET … XX`): one deleted
    /// meanwhile stays deleted.
    pub existing_only: bool,
}

/// An entry as read, with when it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub value: Vec<u8>,
    /// Unix milliseconds at which the entry is gone; None, never.
    pub expires_at_ms: Option<u64>,
}

/// A durable map from string keys to bytes. Every write is durable before
/// it returns: an acknowledged admin write survives kill -9 (sled) or is in
/// Redis (which then owns durability). An entry past its lifetime is
/// absent.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// The entry with its deadline.
    fn read(&self, key: &str) -> Result<Option<Stored>, Error>;
    /// Writes one entry durably, with no lifetime.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.write(key, value, Write::default()).map(drop)
    }
    /// Writes one entry durably as `how` says; false when
    /// `how.existing_only` found no entry (nothing was written).
    fn write(&self, key: &str, value: &[u8], how: Write) -> Result<bool, Error>;
    /// Writes several entries in one durable batch, with no lifetime.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error>;
    /// Removes an entry durably; false when it was not there.
    fn delete(&self, key: &str) -> Result<bool, Error>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;
    /// Removes entries whose lifetime passed, when the store does not do
    /// it itself (Redis does); how many.
    fn sweep(&self) -> Result<usize, Error> {
        Ok(0)
    }
    /// Waits until everything written is on disk.
    fn flush(&self) -> Result<(), Error>;
    /// False after a write failed (disk full, I/O error, Redis down) until
    /// one succeeds.
    fn healthy(&self) -> bool;
    /// Writes that failed since the store was opened.
    fn write_errors(&self) -> u64 {
        0
    }
    /// Tells other gateways sharing the store that a key's session changed
    /// (Tyk's `KeySpaceUpdateNotification`); nothing to tell for a store of
    /// one gateway.
    fn key_changed(&self, _stored_id: &str) {}
    /// Asks every gateway sharing the store to reload (Tyk's
    /// `GroupReload`, which this one hears too); false when there is no
    /// one to ask, and the caller reloads itself.
    fn reload_all(&self) -> bool {
        false
    }
    /// Whether calls wait on the network (never on the event loop, then).
    fn remote(&self) -> bool {
        false
    }
}
