//! The durable key-value store behind keys, quotas and anything else that
//! must survive a restart. `Store` is the narrow interface; `SledStore`
//! (`sled.rs`) is the embedded one, `RedisStore` (`redis.rs`) the shared
//! one of cluster mode, in Tyk's key layout. Keys use Tyk's names
//! (`apikey-…`, `quota-…`). Caching and meaning belong to the callers.

pub mod migrate;
mod redis;
pub mod signals;
mod sled;

pub use self::redis::{Notification, Redis, RedisOptions, RedisStore, RedisTls, glob_escape};
pub use self::sled::SledStore;

use crate::error::Error;

/// A durable map from string keys to bytes. Every write is durable before
/// it returns: an acknowledged admin write survives kill -9 (sled) or is in
/// Redis (which then owns durability).
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Writes one entry durably.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error>;
    /// Writes several entries in one durable batch.
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error>;
    /// Removes an entry durably; false when it was not there.
    fn delete(&self, key: &str) -> Result<bool, Error>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error>;
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
