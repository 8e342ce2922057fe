//! JWKS (CONTRACT §10): the keys a JWT API's `jwt_source` URL publishes,
//! fetched through the upstream client and cached per API for
//! `jwks.cache.timeout` seconds (Tyk's 240 by default). A token names its
//! key by `kid`; a `kid` the cached set lacks refetches the set (a key
//! rotation), at most once per `REFETCH_GAP`, so a stream of made-up `kid`s
//! costs the identity provider one request every few seconds, not one per
//! token. A refresh that fails keeps the set it had: an identity provider
//! that is down for a minute does not lock every user out.
//!
//! Fetching blocks, so it runs on a worker: `cached` answers the event loop
//! without ever fetching, and says when it cannot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::Jwk;
use serde_json::Value;

use super::jwt::{Family, JwtError, VerifyKey};

/// The least time between two fetches of one API's set, whatever the
/// reason (unknown `kid`, failure).
pub const REFETCH_GAP: Duration = Duration::from_secs(5);

/// The largest JWKS document read.
pub const MAX_JWKS_BYTES: u64 = 1 << 20;

/// The JWKS sets of every API, by API id.
pub struct Jwks {
    ttl: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One API's set.
#[derive(Default)]
struct Slot {
    state: RwLock<State>,
    /// Held while fetching: one fetch per API at a time.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct State {
    /// The URL the keys came from (an API's URL may change on reload).
    url: String,
    keys: Option<Keys>,
    /// The last fetch attempt, successful or not.
    tried: Option<Instant>,
}

struct Keys {
    at: Instant,
    by_kid: HashMap<String, Arc<VerifyKey>>,
}

/// What the cached set can say without a fetch.
enum Cached {
    Answer(Result<Arc<VerifyKey>, JwtError>),
    /// A fetch is due (and allowed).
    Fetch,
}

impl Jwks {
    pub fn new(ttl: Duration) -> Jwks {
        Jwks {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, api: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(api.to_string()).or_default().clone()
    }

    /// The key for `kid` when answering needs no fetch; None: a fetch is
    /// due, which only `key` (on a worker) does.
    pub fn cached(
        &self,
        api: &str,
        url: &str,
        kid: &str,
    ) -> Option<Result<Arc<VerifyKey>, JwtError>> {
        match self.look(&self.slot(api), url, kid, Instant::now()) {
            Cached::Answer(a) => Some(a),
            Cached::Fetch => None,
        }
    }

    /// The key for `kid`, fetching the set with `fetch` when it is missing,
    /// stale, or lacks `kid` (blocking).
    pub fn key(
        &self,
        api: &str,
        url: &str,
        family: Family,
        kid: &str,
        fetch: impl FnOnce(&str) -> Result<Vec<u8>, String>,
    ) -> Result<Arc<VerifyKey>, JwtError> {
        let slot = self.slot(api);
        if let Cached::Answer(a) = self.look(&slot, url, kid, Instant::now()) {
            return a;
        }
        let _one = slot.fetching.lock().unwrap_or_else(|e| e.into_inner());
        // Another worker may have fetched while this one waited.
        if let Cached::Answer(a) = self.look(&slot, url, kid, Instant::now()) {
            return a;
        }
        let fetched = fetch(url).and_then(|body| parse(&body, family));
        let mut state = slot.state.write().unwrap_or_else(|e| e.into_inner());
        if state.url != url {
            *state = State {
                url: url.to_string(),
                ..State::default()
            };
        }
        let now = Instant::now();
        state.tried = Some(now);
        match fetched {
            Ok(by_kid) => {
                log::info!("api {api}: JWKS {url}: {} key(s) loaded", by_kid.len());
                state.keys = Some(Keys { at: now, by_kid });
            }
            Err(why) => match &state.keys {
                Some(k) => log::warn!(
                    "api {api}: JWKS {url} could not be refreshed ({why}); keeping the {} key(s) fetched {} s ago",
                    k.by_kid.len(),
                    k.at.elapsed().as_secs()
                ),
                None => log::error!("api {api}: JWKS {url} could not be fetched: {why}"),
            },
        }
        find(&state, kid)
    }

    fn look(&self, slot: &Slot, url: &str, kid: &str, now: Instant) -> Cached {
        let state = slot.state.read().unwrap_or_else(|e| e.into_inner());
        if state.url != url {
            return Cached::Fetch;
        }
        let may_fetch = state
            .tried
            .is_none_or(|t| now.duration_since(t) >= REFETCH_GAP);
        match &state.keys {
            Some(k) if now.duration_since(k.at) < self.ttl => {
                if k.by_kid.contains_key(kid) || !may_fetch {
                    Cached::Answer(find(&state, kid))
                } else {
                    Cached::Fetch
                }
            }
            // Stale or never fetched: fetch when allowed, else answer from
            // what there is (a stale set beats no set).
            _ if may_fetch => Cached::Fetch,
            _ => Cached::Answer(find(&state, kid)),
        }
    }

    /// Forgets `api`'s set (`DELETE /tyk/cache/jwks/{apiID}`), or every
    /// set. The next token fetches anew.
    pub fn invalidate(&self, api: Option<&str>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match api {
            Some(id) => {
                slots.remove(id);
            }
            None => slots.clear(),
        }
    }
}

fn find(state: &State, kid: &str) -> Result<Arc<VerifyKey>, JwtError> {
    state
        .keys
        .as_ref()
        .and_then(|k| k.by_kid.get(kid))
        .cloned()
        .ok_or(JwtError::Invalid)
}

/// A JWKS document's keys by `kid`. A key without `kid`, or of a kind we
/// cannot read, is skipped with a warning; a document with no usable key
/// is an error.
pub fn parse(body: &[u8], family: Family) -> Result<HashMap<String, Arc<VerifyKey>>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("no \"keys\" array".into());
    };
    let mut by_kid = HashMap::new();
    for (i, raw) in keys.iter().enumerate() {
        let Some(kid) = raw.get("kid").and_then(Value::as_str) else {
            log::warn!("JWKS key {i} has no \"kid\": skipped");
            continue;
        };
        let key = serde_json::from_value::<Jwk>(raw.clone())
            .map_err(|e| e.to_string())
            .and_then(|jwk| DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string()));
        match key {
            Ok(key) => {
                let material = serde_json::to_vec(raw).unwrap_or_default();
                by_kid.insert(
                    kid.to_string(),
                    Arc::new(VerifyKey::decoded(family, &material, key)),
                );
            }
            Err(why) => log::warn!("JWKS key {kid:?} cannot be used: {why}"),
        }
    }
    if by_kid.is_empty() {
        return Err("no usable key".into());
    }
    Ok(by_kid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const SET: &str =
        r#"{"keys":[{"kty":"oct","kid":"k1","k":"c2VjcmV0"},{"kty":"oct","k":"eA"}]}"#;

    #[test]
    fn keys_are_read_by_kid_and_keyless_entries_skipped() {
        let keys = parse(SET.as_bytes(), Family::Hmac).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys["k1"].is_usable());
        assert!(parse(b"{}", Family::Hmac).is_err());
        assert!(parse(b"[", Family::Hmac).is_err());
        assert!(
            parse(
                br#"{"keys":[{"kid":"x","kty":"RSA","n":"!"}]}"#,
                Family::Rsa
            )
            .is_err()
        );
    }

    #[test]
    fn an_unknown_kid_refetches_at_most_once_per_gap() {
        let jwks = Jwks::new(Duration::from_secs(240));
        let fetches = Cell::new(0);
        let fetch = |_: &str| {
            fetches.set(fetches.get() + 1);
            Ok(SET.as_bytes().to_vec())
        };
        assert!(jwks.cached("a", "u", "k1").is_none());
        assert!(jwks.key("a", "u", Family::Hmac, "k1", fetch).is_ok());
        assert!(matches!(jwks.cached("a", "u", "k1"), Some(Ok(_))));
        // Unknown kid right after a fetch: refused without fetching.
        assert_eq!(
            jwks.key("a", "u", Family::Hmac, "k2", fetch).err(),
            Some(JwtError::Invalid)
        );
        assert_eq!(fetches.get(), 1);
        // Another URL (a reload changed it) starts afresh.
        assert!(jwks.cached("a", "v", "k1").is_none());
        jwks.invalidate(Some("a"));
        assert!(jwks.cached("a", "u", "k1").is_none());
    }

    #[test]
    fn a_failed_refresh_keeps_the_old_set() {
        let jwks = Jwks::new(Duration::ZERO);
        let ok = |_: &str| Ok(SET.as_bytes().to_vec());
        assert!(jwks.key("a", "u", Family::Hmac, "k1", ok).is_ok());
        // The set is stale at once (ttl 0) but the gap forbids a refetch:
        // the stale set answers.
        assert!(matches!(jwks.cached("a", "u", "k1"), Some(Ok(_))));
        let slot = jwks.slot("a");
        slot.state.write().unwrap().tried = Some(Instant::now() - REFETCH_GAP);
        let down = |_: &str| Err::<Vec<u8>, _>("refused".to_string());
        assert!(jwks.key("a", "u", Family::Hmac, "k1", down).is_ok());
    }
}
