//! From the id a client or an admin gives to the session stored for it
//! (CONTRACT §1.4, §2.2–2.3): which candidate ids to try for an org, and
//! the stored id of each (raw, or hashed with `hash_keys`). Storage is
//! `sessions`; the hash functions are `keyid`.

use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::config::Config;
use crate::error::Error;
use crate::keyid::{hash_str, new_token, token, token_org};
use crate::session::Session;
use crate::sessions::Sessions;

/// A key that was found.
pub struct Found {
    /// The key id that matched (what the client sent, or its org form).
    pub key_id: String,
    /// The id it is stored under (`apikey-<stored_id>`).
    pub stored_id: String,
    pub session: Arc<Session>,
}

/// The id a key id is stored under.
pub fn stored_id(cfg: &Config, key_id: &str) -> String {
    if cfg.hash_keys {
        hash_str(key_id)
    } else {
        key_id.to_string()
    }
}

/// A key about to be stored.
pub struct NewKey {
    pub key_id: String,
    /// The id it is stored under (`stored_id` of `key_id`).
    pub stored_id: String,
    /// Its id was drawn at random: nothing was ever stored or counted
    /// under it.
    pub random: bool,
}

/// The key id for `name` in `org` (random when empty, as `token`) and its
/// stored id, hashed without decoding the id again.
pub fn new_key(cfg: &Config, org: &str, name: &str) -> NewKey {
    let t = new_token(org, name, &cfg.hash_key_function);
    let stored_id = if cfg.hash_keys {
        t.hash()
    } else {
        t.key.clone()
    };
    NewKey {
        key_id: t.key,
        stored_id,
        random: t.random,
    }
}

/// Key ids to try for `id` in `org`, first match wins.
pub fn candidates(cfg: &Config, id: &str, org: &str) -> Vec<String> {
    if token_org(id) == org {
        return vec![id.to_string()];
    }
    let mut out = Vec::with_capacity(2 + cfg.hash_key_function_fallback.len());
    if !cfg.disable_key_actions_by_username {
        out.push(token(org, id, &cfg.hash_key_function));
    }
    out.push(id.to_string());
    for alg in &cfg.hash_key_function_fallback {
        out.push(token(org, id, alg));
    }
    out.dedup();
    out
}

/// One way a key id may be stored: the id tried and its stored id.
pub struct Candidate {
    pub key_id: String,
    pub stored_id: String,
}

/// Remembers each (org, key id)'s candidates and stored ids: computing
/// them decodes the token and hashes it, too much to repeat per request.
/// They depend only on the configuration, fixed for the process.
pub struct KeyIds {
    cache: Cache<IdKey, Arc<[Candidate]>>,
}

/// A cache key: (org, key id).
#[derive(Hash, PartialEq, Eq)]
struct IdKey {
    org: String,
    id: String,
}

/// An `IdKey` made of borrowed parts, to look one up without allocating
/// (hashes as `IdKey` does: `String` hashes as its `str`).
#[derive(Hash)]
struct IdRef<'a> {
    org: &'a str,
    id: &'a str,
}

impl quick_cache::Equivalent<IdKey> for IdRef<'_> {
    fn equivalent(&self, key: &IdKey) -> bool {
        self.org == key.org && self.id == key.id
    }
}

impl KeyIds {
    pub fn new(capacity: usize) -> KeyIds {
        KeyIds {
            cache: Cache::new(capacity.max(16)),
        }
    }

    /// The candidates for `id` in `org`, in the order to try them.
    pub fn resolve(&self, cfg: &Config, id: &str, org: &str) -> Arc<[Candidate]> {
        if let Some(found) = self.cache.get(&IdRef { org, id }) {
            return found;
        }
        let list: Arc<[Candidate]> = candidates(cfg, id, org)
            .into_iter()
            .map(|key_id| Candidate {
                stored_id: stored_id(cfg, &key_id),
                key_id,
            })
            .collect();
        let key = IdKey {
            org: org.to_string(),
            id: id.to_string(),
        };
        self.cache.insert(key, list.clone());
        list
    }
}

/// Finds the session for key id `id` in `org`. Err: the store failed.
pub fn find(
    cfg: &Config,
    ids: &KeyIds,
    sessions: &Sessions,
    id: &str,
    org: &str,
) -> Result<Option<Found>, Error> {
    find_in(sessions, &ids.resolve(cfg, id, org))
}

/// Finds the session of the first of `candidates` that is stored.
pub fn find_in(sessions: &Sessions, candidates: &[Candidate]) -> Result<Option<Found>, Error> {
    for c in candidates {
        if let Some(session) = sessions.get(&c.stored_id)? {
            return Ok(Some(Found {
                key_id: c.key_id.clone(),
                stored_id: c.stored_id.clone(),
                session,
            }));
        }
    }
    Ok(None)
}

/// Whether some of `candidates` is in the session cache. Then `find_in`
/// answers from memory, except in the rare case that an earlier candidate
/// is stored but not cached (one store read). An unknown key is never
/// cached, so looking it up always means a store read.
pub fn any_cached(sessions: &Sessions, candidates: &[Candidate]) -> bool {
    candidates.iter().any(|c| sessions.is_cached(&c.stored_id))
}

/// The first of `candidates` when its session is cached: what `find_in`
/// answers, with one cache lookup and no store access (a keyed request's
/// usual case), and nothing copied that the caller may not need.
pub fn first_if_cached<'c>(
    sessions: &Sessions,
    candidates: &'c [Candidate],
) -> Option<(Arc<Session>, &'c Candidate)> {
    let c = candidates.first()?;
    Some((sessions.get_cached(&c.stored_id)?, c))
}

/// Finds a session by its stored id (`?hashed=` on the admin API).
pub fn find_stored(sessions: &Sessions, stored_id: &str) -> Result<Option<Found>, Error> {
    Ok(sessions.get(stored_id)?.map(|session| Found {
        key_id: stored_id.to_string(),
        stored_id: stored_id.to_string(),
        session,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RawConfig;
    use std::path::Path;

    fn config(json: &str) -> Config {
        let raw: RawConfig = serde_json::from_str(json).unwrap();
        raw.validate(Path::new("/t/tyk.conf")).unwrap()
    }

    #[test]
    fn legacy_candidates_try_org_form_then_raw() {
        let c = config("{}");
        assert_eq!(candidates(&c, "abc", "default"), vec!["defaultabc", "abc"]);
        assert_eq!(candidates(&c, "abc", ""), vec!["abc"]);
    }

    #[test]
    fn username_actions_can_be_disabled() {
        let c = config(r#"{"disable_key_actions_by_username": true}"#);
        assert_eq!(candidates(&c, "abc", "default"), vec!["abc"]);
    }

    #[test]
    fn hashing_stores_under_the_hash() {
        let c = config(r#"{"hash_keys": true}"#);
        assert_eq!(stored_id(&c, "hello"), "ef13efcd");
        assert_eq!(stored_id(&config("{}"), "hello"), "hello");
    }
}
