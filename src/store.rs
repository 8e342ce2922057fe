//! The durable key-value store behind keys, quotas and anything else that
//! must survive a restart. `Store` is the narrow interface (a Redis backend
//! can implement it); `SledStore` is the embedded one and the only code in
//! the project that imports sled. Keys use Tyk's names (`apikey-…`,
//! `quota-…`). Caching and meaning belong to the callers.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// A durable map from string keys to bytes. Every write is flushed before
/// it returns: an acknowledged admin write survives kill -9.
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
}

/// The embedded sled store.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the store at `path`. A store locked by another
    /// process or a corrupt one is an error: we never start empty instead.
    pub fn open(path: &Path) -> Result<SledStore, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            message: format!("cannot create the store directory: {e}"),
        })?;
        let db = sled::Config::new()
            .path(path)
            .open()
            .map_err(|e| open_error(path, e))?;
        Ok(SledStore {
            db,
            path: path.to_path_buf(),
        })
    }

    fn fail(&self, e: sled::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn durable(&self) -> Result<(), Error> {
        self.db.flush().map(drop).map_err(|e| self.fail(e))
    }
}

fn open_error(path: &Path, e: sled::Error) -> Error {
    let message = match &e {
        sled::Error::Io(io) if io.to_string().contains("lock") => {
            format!("locked by another process (is another gateway running on this store?): {io}")
        }
        sled::Error::Corruption { .. } => {
            format!("corrupt, refusing to start with an empty store: {e}")
        }
        other => format!("cannot open: {other}"),
    };
    Error::Store {
        path: path.to_path_buf(),
        message,
    }
}

impl Store for SledStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let value = self.db.get(key).map_err(|e| self.fail(e))?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.db.insert(key, value).map_err(|e| self.fail(e))?;
        self.durable()
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_str(), v.as_slice());
        }
        self.db.apply_batch(batch).map_err(|e| self.fail(e))?;
        self.durable()
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        let old = self.db.remove(key).map_err(|e| self.fail(e))?;
        self.durable()?;
        Ok(old.is_some())
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        for item in self.db.scan_prefix(prefix) {
            let (k, v) = item.map_err(|e| self.fail(e))?;
            out.push((String::from_utf8_lossy(&k).into_owned(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), Error> {
        self.durable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.set("apikey-a", b"1").unwrap();
            s.set_many(&[
                ("apikey-b".into(), b"2".to_vec()),
                ("quota-x".into(), b"3".to_vec()),
            ])
            .unwrap();
            assert!(s.delete("apikey-a").unwrap());
            assert!(!s.delete("apikey-a").unwrap());
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.get("apikey-a").unwrap(), None);
        let keys: Vec<String> = s
            .scan("apikey-")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["apikey-b"]);
    }

    #[test]
    fn second_open_reports_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = SledStore::open(dir.path()).unwrap();
        // sled's lock is per process via flock; a second open in the same
        // process may succeed, so only check that any error is a store error.
        if let Err(e) = SledStore::open(dir.path()) {
            assert!(matches!(e, Error::Store { .. }));
        }
    }
}
