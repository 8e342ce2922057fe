//! Who a request is and what it may do, beyond finding its key: basic-auth
//! credentials (`basic`), policies (`policy`: their shape and the loaded
//! set), applying them to a session (`apply`), and `Applied`, the cache
//! that makes applying cost nothing per request. The pipeline's auth
//! stages call in here; they decide the answers, this decides the sessions.

pub mod apply;
pub mod basic;
pub mod jwks;
pub mod jwt;
pub mod policy;

use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::session::Session;

use apply::ApplyError;
use policy::PolicySet;

/// A session with its policies applied, and what it was computed from.
struct Entry {
    /// The stored session it came from (the session cache's value).
    source: Arc<Session>,
    generation: u64,
    api_org: String,
    result: Result<Arc<Session>, ApplyError>,
}

/// Sessions with their policies applied, by stored id: computed once per
/// (stored session, policy snapshot, API org), not per request. A key
/// rewritten by the admin API is a new `Arc` in the session cache, and a
/// reload a new generation, so a stale entry is never used.
pub struct Applied {
    cache: Cache<String, Arc<Entry>>,
}

impl Applied {
    pub fn new(capacity: usize) -> Applied {
        Applied {
            cache: Cache::new(capacity.max(16)),
        }
    }

    /// `session` (stored as `stored_id`) with its policies from `set`
    /// applied, for an API of `api_org`.
    pub fn get(
        &self,
        stored_id: &str,
        session: &Arc<Session>,
        set: &PolicySet,
        api_org: &str,
    ) -> Result<Arc<Session>, ApplyError> {
        if let Some(e) = self.cache.get(stored_id)
            && Arc::ptr_eq(&e.source, session)
            && e.generation == set.generation
            && e.api_org == api_org
        {
            return e.result.clone();
        }
        let result = apply::apply(session, set, Some(api_org)).map(Arc::new);
        let entry = Entry {
            source: session.clone(),
            generation: set.generation,
            api_org: api_org.to_string(),
            result: result.clone(),
        };
        self.cache.insert(stored_id.to_string(), Arc::new(entry));
        result
    }
}
