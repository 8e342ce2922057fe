//! The embedded store: sled, with a sequence number that refuses to start
//! on a store that lost acknowledged writes. The only code in the project
//! that imports sled.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

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
    /// Writes waiting for, and the state of, the group commit.
    group: Mutex<Group>,
    /// Signalled when a commit round ends.
    round_done: Condvar,
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
            group: Mutex::new(Group::default()),
            round_done: Condvar::new(),
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
        store.group.lock().unwrap_or_else(|e| e.into_inner()).seq = inside;
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

    /// Makes `ops` durable: returns once they are flushed with a sequence
    /// number recorded beside the store. Group commit: writers that arrive
    /// while a flush runs queue up, and the next flush takes them all, so
    /// many concurrent writers share one fsync instead of each waiting for
    /// its own. Each writer still answers only after its own ops are on
    /// disk, with that round's result.
    fn commit(&self, ops: Vec<Op>) -> Result<(), Error> {
        let result = self.commit_grouped(ops);
        self.failing.store(result.is_err(), Ordering::SeqCst);
        if result.is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        result.map_err(|message| Error::Store {
            path: self.path.clone(),
            message,
        })
    }

    fn commit_grouped(&self, ops: Vec<Op>) -> Result<(), String> {
        let mut g = self.group.lock().unwrap_or_else(|e| e.into_inner());
        g.queue.extend(ops);
        let mine = g.queued_round;
        if g.leading {
            while g.done_round < mine {
                g = self.round_done.wait(g).unwrap_or_else(|e| e.into_inner());
            }
            return g.result_of(mine);
        }
        // Lead: flush rounds until nobody waits.
        g.leading = true;
        while !g.queue.is_empty() {
            let round = g.queued_round;
            g.queued_round += 1;
            let ops = std::mem::take(&mut g.queue);
            let next = g.seq + 1;
            drop(g);
            let result = self.apply(ops, next);
            g = self.group.lock().unwrap_or_else(|e| e.into_inner());
            match &result {
                Ok(()) => g.seq = next,
                Err(why) => {
                    g.failed.push((round, why.clone()));
                    let excess = g.failed.len().saturating_sub(64);
                    g.failed.drain(..excess);
                }
            }
            g.done_round = round;
            self.round_done.notify_all();
        }
        g.leading = false;
        g.result_of(mine)
    }

    /// One durable round: the ops and sequence number `next` in one sled
    /// batch, flushed, then `next` in the file beside the store.
    fn apply(&self, ops: Vec<Op>, next: u64) -> Result<(), String> {
        let mut batch = sled::Batch::default();
        for (key, value) in ops {
            match value {
                Some(v) => batch.insert(key.as_bytes(), v),
                None => batch.remove(key.as_bytes()),
            }
        }
        batch.insert(SEQ_KEY, &next.to_be_bytes());
        self.db.apply_batch(batch).map_err(|e| e.to_string())?;
        self.db.flush().map_err(|e| e.to_string())?;
        write_seq_file(&self.path, next).map_err(|e| format!("cannot record write #{next}: {e}"))
    }
}

/// A key and its new value (None: removed).
type Op = (String, Option<Vec<u8>>);

/// The group commit's state. Rounds count from 1; a writer's ops belong
/// to the round that is queued when it arrives.
struct Group {
    /// The last durable sequence number.
    seq: u64,
    queue: Vec<Op>,
    queued_round: u64,
    done_round: u64,
    /// A writer is flushing rounds.
    leading: bool,
    /// Recent rounds that failed, and why.
    failed: Vec<(u64, String)>,
}

impl Default for Group {
    fn default() -> Group {
        Group {
            seq: 0,
            queue: Vec::new(),
            queued_round: 1,
            done_round: 0,
            leading: false,
            failed: Vec::new(),
        }
    }
}

impl Group {
    fn result_of(&self, round: u64) -> Result<(), String> {
        match self.failed.iter().find(|(r, _)| *r == round) {
            Some((_, why)) => Err(why.clone()),
            None => Ok(()),
        }
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
        self.commit(vec![(key.to_string(), Some(value.to_vec()))])
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let ops = entries
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect();
        self.commit(ops)
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        let existed = self.db.contains_key(key).map_err(|e| self.fail(e))?;
        self.commit(vec![(key.to_string(), None)])?;
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
    fn concurrent_writers_share_flushes_and_every_write_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
            let threads: Vec<_> = (0..16)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            s.set(&format!("apikey-{t}-{i}"), b"v").unwrap();
                        }
                        s.delete(&format!("apikey-{t}-0")).unwrap();
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let rounds = s.group.lock().unwrap().seq;
            assert!(rounds <= 16 * 51, "{rounds}");
            assert_eq!(read_seq_file(dir.path()), rounds);
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.scan("apikey-").unwrap().len(), 16 * 49);
        assert_eq!(s.get("apikey-3-0").unwrap(), None);
        assert_eq!(s.get("apikey-3-49").unwrap().as_deref(), Some(&b"v"[..]));
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
