//! Keys' sessions as the request path sees them: a bounded in-memory cache
//! in front of the store. A hot key is answered from memory without
//! touching the disk or decoding JSON; a cold one is read from the store
//! once and cached. Writes go to the store first (durably), then to the
//! cache, so memory never holds a session the store does not. Memory stays
//! bounded however many keys the store holds. Which id a key is stored
//! under (raw or hashed) is the caller's business (`keys`), and so is how
//! long a session lives (`lifetime`): a cached session is dropped when its
//! stored copy's lifetime ends, never served past it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quick_cache::sync::Cache;

use crate::error::Error;
use crate::gateway::unix_now_ms;
use crate::keylocks::KeyLocks;
use crate::metrics::Striped;
use crate::session::Session;
use crate::store::{Store, Write};

/// Writer stripes: concurrent writes to different keys rarely share one
/// (a writer holds its stripe until its group commit is durable, so two
/// writers sharing a stripe cannot share a flush: with 16 writers, 64
/// stripes make that likely, 1024 rare).
const STRIPES: usize = 1024;

/// Store prefix of sessions, Tyk's.
pub const PREFIX: &str = "apikey-";

pub struct Sessions {
    store: Arc<dyn Store>,
    cache: Cache<String, Cached>,
    /// With a shared store, how long a cached session is believed (other
    /// gateways may change it; their notices evict it sooner).
    max_age: Option<Duration>,
    /// Bumped by every write. A reader that filled the cache from the store
    /// only inserts if no write happened meanwhile, so it never caches a
    /// session older than the store's.
    epoch: AtomicU64,
    /// Serialise writers of the same id, and cache fills against them
    /// (striped by id, so writers of different keys reach the store
    /// together and share its flushes).
    writers: KeyLocks<STRIPES>,
    /// Lookups answered from memory, and those that read the store.
    pub hits: Striped,
    pub misses: Striped,
}

/// A cached session, when it was cached, and when its stored copy goes
/// (unix ms; None, never).
#[derive(Clone)]
struct Cached {
    session: Arc<Session>,
    at: Instant,
    expires_at_ms: Option<u64>,
}

impl Cached {
    fn new(session: Arc<Session>, expires_at_ms: Option<u64>) -> Cached {
        Cached {
            session,
            at: Instant::now(),
            expires_at_ms,
        }
    }
}

fn store_key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

impl Sessions {
    /// Sessions over `store`, caching at most `capacity` of them, each
    /// for at most `max_age` (None: until changed here).
    pub fn new(store: Arc<dyn Store>, capacity: usize, max_age: Option<Duration>) -> Sessions {
        Sessions {
            store,
            cache: Cache::new(capacity.max(16)),
            max_age,
            epoch: AtomicU64::new(0),
            writers: KeyLocks::default(),
            hits: Striped::default(),
            misses: Striped::default(),
        }
    }

    /// The session stored under `id`: from memory when cached, else read
    /// from the store and cached. An unreadable entry counts as absent.
    pub fn get(&self, id: &str) -> Result<Option<Arc<Session>>, Error> {
        if let Some(s) = self.get_cached(id) {
            return Ok(Some(s));
        }
        self.misses.add(1);
        let before = self.epoch.load(Ordering::SeqCst);
        let Some(stored) = self.store.read(&store_key(id))? else {
            return Ok(None);
        };
        let session = match serde_json::from_slice::<Session>(&stored.value) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                log::warn!("store: unreadable session {PREFIX}…: {e}");
                return Ok(None);
            }
        };
        let _w = self.writers.lock(id);
        if self.epoch.load(Ordering::SeqCst) == before {
            let entry = Cached::new(session.clone(), stored.expires_at_ms);
            self.cache.insert(id.to_string(), entry);
        }
        Ok(Some(session))
    }

    /// The cached session, if young enough and its stored copy not gone.
    fn cached(&self, id: &str) -> Option<Arc<Session>> {
        let c = self.cache.get(id)?;
        if self.max_age.is_some_and(|max| c.at.elapsed() >= max) {
            return None;
        }
        if c.expires_at_ms.is_some_and(|at| unix_now_ms() >= at) {
            return None;
        }
        Some(c.session)
    }

    /// The session from the cache alone (counted as a hit), never the store.
    pub fn get_cached(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.cached(id)?;
        self.hits.add(1);
        Some(s)
    }

    /// Whether `id` is in memory (a `get` would not read the store).
    pub fn is_cached(&self, id: &str) -> bool {
        self.cached(id).is_some()
    }

    /// Forgets the cached copies of `ids` (another gateway changed them).
    pub fn evict(&self, ids: &[&str]) {
        for id in ids {
            let _w = self.writers.lock(id);
            self.cache.remove(*id);
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Forgets every cached session (cluster messages may have been lost).
    pub fn evict_all(&self) {
        let _all = self.writers.lock_all();
        self.cache.clear();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// Stores a new `session` under `id` durably (over any stored one), then
    /// makes it visible. It lives `ttl` seconds; 0 or less, until deleted.
    pub fn put(&self, id: &str, session: Arc<Session>, ttl: i64) -> Result<(), Error> {
        let how = Write {
            ttl,
            existing_only: false,
        };
        self.write(id, session, how).map(drop)
    }

    /// Rewrites the session stored under `id`, as `put` does, but only if
    /// one is still stored (Tyk's `SET … XX` for a session it read): false
    /// when it was deleted meanwhile, and then it stays deleted.
    pub fn replace(&self, id: &str, session: Arc<Session>, ttl: i64) -> Result<bool, Error> {
        let how = Write {
            ttl,
            existing_only: true,
        };
        self.write(id, session, how)
    }

    fn write(&self, id: &str, session: Arc<Session>, how: Write) -> Result<bool, Error> {
        let bytes = serde_json::to_vec(&*session).map_err(|e| Error::Store {
            path: Default::default(),
            message: format!("cannot encode session: {e}"),
        })?;
        // Taken before the write: the cache lets go no later than the store.
        let expires_at_ms = u64::try_from(how.ttl)
            .ok()
            .filter(|&ttl| ttl > 0)
            .map(|ttl| unix_now_ms().saturating_add(ttl.saturating_mul(1000)));
        let _w = self.writers.lock(id);
        let written = self.store.write(&store_key(id), &bytes, how)?;
        if written {
            let entry = Cached::new(session, expires_at_ms);
            self.cache.insert(id.to_string(), entry);
        } else {
            self.cache.remove(id);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
        drop(_w);
        if written {
            self.store.key_changed(id);
        }
        Ok(written)
    }

    /// Removes the session stored under `id`; false when there was none.
    pub fn remove(&self, id: &str) -> Result<bool, Error> {
        let _w = self.writers.lock(id);
        let existed = self.store.delete(&store_key(id))?;
        self.cache.remove(id);
        self.epoch.fetch_add(1, Ordering::SeqCst);
        drop(_w);
        self.store.key_changed(id);
        Ok(existed)
    }

    /// Every stored id, in order (read from the store).
    pub fn ids(&self) -> Result<Vec<String>, Error> {
        let entries = self.store.scan(PREFIX)?;
        Ok(entries
            .into_iter()
            .map(|(k, _)| k[PREFIX.len()..].to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    /// Opens the store in `dir`. sled's flusher thread can hold the
    /// directory lock for a moment after the previous handle is dropped, so
    /// a reopen is retried for a while.
    fn sessions(dir: &std::path::Path, capacity: usize) -> Sessions {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledStore::open(dir) {
                Ok(store) => return Sessions::new(Arc::new(store), capacity, None),
                Err(e) if std::time::Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }

    #[test]
    fn writes_are_read_back_past_the_cache_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), 16);
        for i in 0..100 {
            let session = Session {
                alias: format!("k{i}"),
                ..Session::default()
            };
            s.put(&format!("id{i}"), Arc::new(session), 0).unwrap();
        }
        for i in 0..100 {
            let got = s.get(&format!("id{i}")).unwrap().expect("stored");
            assert_eq!(got.alias, format!("k{i}"));
        }
        assert_eq!(s.ids().unwrap().len(), 100);
    }

    #[test]
    fn removed_sessions_are_gone_from_cache_and_store() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), 16);
        s.put("a", Arc::default(), 0).unwrap();
        assert!(s.get("a").unwrap().is_some());
        assert!(s.remove("a").unwrap());
        assert!(s.get("a").unwrap().is_none());
        assert!(!s.remove("a").unwrap());
    }

    /// Polls `f` until it holds, for at most 5 s.
    fn eventually(f: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    #[test]
    fn a_cached_session_goes_when_its_lifetime_ends() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), 16);
        s.put("a", Arc::default(), 1).unwrap();
        s.put("b", Arc::default(), 0).unwrap();
        assert!(s.is_cached("a"));
        assert!(s.get("a").unwrap().is_some());
        assert!(eventually(|| !s.is_cached("a")));
        assert!(s.get("a").unwrap().is_none());
        assert!(s.get("b").unwrap().is_some());
        assert_eq!(s.ids().unwrap(), vec!["b"]);
    }

    #[test]
    fn a_session_read_from_the_store_keeps_its_deadline_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = sessions(dir.path(), 16);
            s.put("a", Arc::default(), 1).unwrap();
        }
        let s = sessions(dir.path(), 16);
        assert!(s.get("a").unwrap().is_some());
        assert!(s.is_cached("a"));
        assert!(eventually(|| !s.is_cached("a")));
        assert!(s.get("a").unwrap().is_none());
    }

    #[test]
    fn a_replaced_session_deleted_meanwhile_stays_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = sessions(dir.path(), 16);
        s.put("a", Arc::default(), 0).unwrap();
        let read = s.get("a").unwrap().unwrap();
        assert!(s.remove("a").unwrap());
        assert!(!s.replace("a", read, 0).unwrap());
        assert!(s.get("a").unwrap().is_none());
        assert!(!s.is_cached("a"));
        s.put("a", Arc::default(), 0).unwrap();
        assert!(s.replace("a", Arc::default(), 0).unwrap());
    }

    #[test]
    fn a_new_instance_reads_what_an_old_one_wrote() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = sessions(dir.path(), 16);
            s.put("a", Arc::default(), 0).unwrap();
        }
        assert!(sessions(dir.path(), 16).get("a").unwrap().is_some());
    }
}
