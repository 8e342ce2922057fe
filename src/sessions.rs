//! Keys' sessions as the request path sees them: an in-memory map loaded
//! from the store at start and updated by admin writes, so that looking up
//! a key never touches the disk. Writes go to the store first (durably),
//! then to the map. Which id a key is stored under (raw or hashed) is the
//! caller's business (`keys`); this module only maps stored ids to sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use log::warn;

use crate::error::Error;
use crate::session::Session;
use crate::store::Store;

/// Store prefix of sessions, Tyk's.
pub const PREFIX: &str = "apikey-";

pub struct Sessions {
    store: Arc<dyn Store>,
    map: RwLock<HashMap<String, Arc<Session>>>,
    /// Serialises writers so the store and the map agree.
    writer: Mutex<()>,
}

impl Sessions {
    /// Loads every stored session. An entry that does not parse is logged
    /// and skipped; a store failure is an error.
    pub fn load(store: Arc<dyn Store>) -> Result<Sessions, Error> {
        let mut map = HashMap::new();
        for (key, value) in store.scan(PREFIX)? {
            let id = &key[PREFIX.len()..];
            match serde_json::from_slice::<Session>(&value) {
                Ok(s) => {
                    map.insert(id.to_string(), Arc::new(s));
                }
                Err(e) => warn!("store: skipping unreadable session {key}: {e}"),
            }
        }
        Ok(Sessions {
            store,
            map: RwLock::new(map),
            writer: Mutex::new(()),
        })
    }

    /// The session stored under `id`, from memory.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `session` under `id` durably, then makes it visible.
    pub fn put(&self, id: &str, session: Session) -> Result<(), Error> {
        let bytes = serde_json::to_vec(&session).map_err(|e| Error::Store {
            path: Default::default(),
            message: format!("cannot encode session: {e}"),
        })?;
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.store.set(&format!("{PREFIX}{id}"), &bytes)?;
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), Arc::new(session));
        Ok(())
    }

    /// Removes the session stored under `id`; false when there was none.
    pub fn remove(&self, id: &str) -> Result<bool, Error> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let stored = self.store.delete(&format!("{PREFIX}{id}"))?;
        let cached = self
            .map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
            .is_some();
        Ok(stored || cached)
    }

    /// Stored ids, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}
