//! What asks for a reload besides the admin API (OPS.md §5): `SIGHUP`,
//! and, with `gatehouse.watch`, a change under `app_path` or the policy
//! path, found by polling their listings (names, sizes, modification
//! times) every 500 ms and debounced: the reload is queued once nothing
//! changed for a second, so an editor's or a deploy's burst of writes is
//! one reload. Polling needs no crate and sees changes on any file system
//! (inotify misses NFS and some container mounts). The reload itself is
//! `Gateway::reload_now`'s job.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use log::info;

use crate::gateway::Gateway;

/// How often the folders are listed.
const POLL: Duration = Duration::from_millis(500);
/// How long they must stay unchanged before the reload.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the SIGHUP flag is looked at.
const TICK: Duration = Duration::from_millis(100);

/// A folder's (or file's) entries as `(name, size, mtime)`, sorted; a path
/// that cannot be read is an empty listing (its reappearance is a change).
pub fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let stamp = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok()?;
        Some((p, meta.len(), meta.modified().ok()))
    };
    let mut out: Vec<_> = match std::fs::read_dir(path) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter_map(|e| stamp(e.path()))
            .collect(),
        Err(_) => stamp(path.to_path_buf()).into_iter().collect(),
    };
    out.sort();
    out
}

/// The paths whose changes reload: `app_path`, then the policy folder or file.
fn watched(gw: &Gateway) -> Vec<PathBuf> {
    let p = &gw.config.policies;
    let policies = p.dir.clone().or_else(|| p.record.clone());
    std::iter::once(gw.config.app_path.clone())
        .chain(policies)
        .collect()
}

/// Debounces listings: `changed` says whether a reload is due now.
#[derive(Debug)]
pub struct Debounce {
    last: Vec<Vec<(PathBuf, u64, Option<SystemTime>)>>,
    pending_since: Option<Instant>,
}

impl Debounce {
    pub fn new(first: Vec<Vec<(PathBuf, u64, Option<SystemTime>)>>) -> Debounce {
        Debounce {
            last: first,
            pending_since: None,
        }
    }

    /// Takes a new listing at `now`; true once a change has settled.
    pub fn changed(
        &mut self,
        listing: Vec<Vec<(PathBuf, u64, Option<SystemTime>)>>,
        now: Instant,
    ) -> bool {
        if listing != self.last {
            self.last = listing;
            self.pending_since = Some(now);
            return false;
        }
        match self.pending_since {
            Some(t) if now.duration_since(t) >= SETTLE => {
                self.pending_since = None;
                true
            }
            _ => false,
        }
    }
}

/// Turns `hup` (set by the SIGHUP handler) and, with `gatehouse.watch`,
/// settled changes into queued reloads, until `stop`.
pub fn spawn(
    gw: Arc<Gateway>,
    hup: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let paths = watched(&gw);
        let list = || paths.iter().map(|p| fingerprint(p)).collect::<Vec<_>>();
        let mut debounce = gw.config.watch.then(|| Debounce::new(list()));
        let mut next_poll = Instant::now() + POLL;
        while !stop.load(Ordering::SeqCst) {
            thread::sleep(TICK);
            if hup.swap(false, Ordering::SeqCst) {
                info!("SIGHUP: reloading APIs and policies");
                gw.request_reload(false);
            }
            let now = Instant::now();
            if let Some(d) = debounce.as_mut().filter(|_| now >= next_poll) {
                next_poll = now + POLL;
                if d.changed(list(), now) {
                    info!("watch: {} changed; reloading", describe(&paths));
                    gw.request_reload(false);
                }
            }
        }
    })
}

fn describe(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(size: u64) -> Vec<Vec<(PathBuf, u64, Option<SystemTime>)>> {
        vec![vec![(PathBuf::from("a.json"), size, None)]]
    }

    #[test]
    fn a_change_reloads_once_it_has_settled() {
        let t0 = Instant::now();
        let mut d = Debounce::new(listing(1));
        assert!(!d.changed(listing(1), t0), "nothing changed");
        assert!(!d.changed(listing(2), t0), "changed: wait");
        let half = t0 + Duration::from_millis(500);
        assert!(!d.changed(listing(3), half), "changed again: wait more");
        assert!(!d.changed(listing(3), half + Duration::from_millis(900)));
        assert!(d.changed(listing(3), half + SETTLE), "settled");
        assert!(!d.changed(listing(3), half + SETTLE * 3), "only once");
    }

    #[test]
    fn fingerprint_sees_new_and_resized_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = fingerprint(dir.path());
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        let one = fingerprint(dir.path());
        assert_ne!(empty, one);
        std::fs::write(dir.path().join("a.json"), "{ }").unwrap();
        assert_ne!(one, fingerprint(dir.path()));
        let file = dir.path().join("a.json");
        assert_eq!(fingerprint(&file).len(), 1, "a file is its own listing");
        assert!(fingerprint(&dir.path().join("gone")).is_empty());
    }
}
