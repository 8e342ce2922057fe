//! The embedded store: sled, with a sequence number that refuses to start
//! on a store that lost acknowledged writes. The only code in the project
//! that imports sled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::Store;
use crate::error::Error;

/// The embedded sled store.
///
/// sled recovers from a damaged log by silently dropping everything after
/// the first bad checksum. To never start on such a store, every write
/// also bumps a sequence number kept inside sled (`SEQ_KEY`, same batch)
/// and, once flushed, in a small file beside it (`SEQ_FILE`). At open, a
/// store whose sequence is behind the file lost acknowledged writes.
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
    /// The last sequence number written; its lock orders all writes.
    seq: Mutex<u64>,
    /// The last write failed.
    failing: AtomicBool,
    /// Failed writes, for the metrics.
    write_errors: AtomicU64,
}

const SEQ_KEY: &str = "gatehouse-seq";
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
const SEQ_FILE: &str = "gatehouse.seq";

impl SledStore {
    /// Opens (or creates) the store at `path`. A store locked by another
    /// process, or a corrupt one, is an error: we never start on a store
    /// that lost acknowledged writes.
    pub fn open(path: &Path) -> Result<SledStore, Error> {
        std::fs::create_dir_all(path).map_err(|e| Error::Store {
            path: path.to_path_buf(),
            message: format!("cannot create the store directory: {e}"),
        })?;
        // sled caches up to 1 GiB by default; the hot keys live in our own
        // session cache, so a small page cache keeps the process small.
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|e| open_error(path, e))?;
        let store = SledStore {
            db,
            path: path.to_path_buf(),
            seq: Mutex::new(0),
            failing: AtomicBool::new(false),
            write_errors: AtomicU64::new(0),
        };
        let inside = store.stored_seq()?;
        let acknowledged = read_seq_file(path);
        if acknowledged > inside {
            return Err(Error::Store {
                path: path.to_path_buf(),
                message: format!(
                    "corrupt: it holds writes up to #{inside} but #{acknowledged} was acknowledged; \
                     refusing to start with lost data (restore a backup, or move the directory away to start empty)"
                ),
            });
        }
        *store.seq.lock().unwrap_or_else(|e| e.into_inner()) = inside;
        Ok(store)
    }

    fn stored_seq(&self) -> Result<u64, Error> {
        let raw = self.db.get(SEQ_KEY).map_err(|e| self.fail(e))?;
        Ok(raw
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    fn fail(&self, e: sled::Error) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Applies `batch` with the next sequence number, flushes, then
    /// records the number beside the store.
    fn commit(&self, batch: sled::Batch) -> Result<(), Error> {
        let result = self.commit_batch(batch);
        self.failing.store(result.is_err(), Ordering::SeqCst);
        if result.is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn commit_batch(&self, mut batch: sled::Batch) -> Result<(), Error> {
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let next = *seq + 1;
        batch.insert(SEQ_KEY, &next.to_be_bytes());
        self.db.apply_batch(batch).map_err(|e| self.fail(e))?;
        self.db.flush().map_err(|e| self.fail(e))?;
        *seq = next;
        write_seq_file(&self.path, next).map_err(|e| Error::Store {
            path: self.path.clone(),
            message: format!("cannot record write #{next}: {e}"),
        })
    }
}

fn read_seq_file(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join(SEQ_FILE))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

fn write_seq_file(dir: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = dir.join(format!("{SEQ_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(seq.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(SEQ_FILE))
}

fn open_error(path: &Path, e: sled::Error) -> Error {
    let message = match &e {
        sled::Error::Io(io) if io.to_string().contains("lock") => {
            format!("locked by another process (is another gateway running on this store?): {io}")
        }
        other => format!("corrupt or unreadable, refusing to start: {other}"),
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
        let mut batch = sled::Batch::default();
        batch.insert(key, value);
        self.commit(batch)
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let mut batch = sled::Batch::default();
        for (k, v) in entries {
            batch.insert(k.as_str(), v.as_slice());
        }
        self.commit(batch)
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        let existed = self.db.contains_key(key).map_err(|e| self.fail(e))?;
        let mut batch = sled::Batch::default();
        batch.remove(key);
        self.commit(batch)?;
        Ok(existed)
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
        self.db.flush().map(drop).map_err(|e| self.fail(e))
    }

    fn healthy(&self) -> bool {
        !self.failing.load(Ordering::SeqCst)
    }

    fn write_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
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
    fn a_store_behind_its_acknowledged_writes_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            s.set("apikey-a", b"1").unwrap();
        }
        // Pretend a later write was acknowledged and then lost.
        write_seq_file(dir.path(), 5).unwrap();
        let err = SledStore::open(dir.path()).err().expect("refused");
        assert!(err.to_string().contains("corrupt"), "{err}");
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
