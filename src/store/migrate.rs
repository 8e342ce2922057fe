//! `gatehouse import --from-redis URL` and `gatehouse export --to-redis
//! URL`: every session (`apikey-*`) with its quota counters, between a
//! Redis in Tyk's layout (Tyk's own, or Gatehouse's cluster mode) and the
//! embedded store. Sessions are copied as the bytes they are (both sides
//! hold Tyk's session JSON), with their lifetimes (Redis's TTL, sled's
//! deadline); quota counters are converted: Redis holds the used count
//! with a TTL until renewal, sled a small record of the same.
//! Writing the same data twice changes nothing, so either command can be
//! re-run after a failure.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::{Redis, SledStore, Store, Stored, glob_escape};
use crate::error::Error;
use crate::gateway::{unix_now, unix_now_ms};
use crate::quota;
use crate::sessions::PREFIX as SESSIONS;

/// Entries read or written per round trip (and per durable sled batch).
const CHUNK: usize = 1000;
/// How often a long run says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What a run copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    pub sessions: usize,
    pub quotas: usize,
}

/// Reports progress on stderr at most every 2 s (and at the end).
struct Progress {
    what: &'static str,
    total: usize,
    last: Instant,
}

impl Progress {
    fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total,
            last: Instant::now(),
        }
    }

    fn at(&mut self, done: usize) {
        if self.last.elapsed() >= PROGRESS_EVERY || done == self.total {
            eprintln!("{}: {done} of {} entries", self.what, self.total);
            self.last = Instant::now();
        }
    }
}

/// A client for `url` (`redis://[user:password@]host:port[/db]`).
pub fn redis_at(url: &str) -> Result<Redis, Error> {
    if !url.starts_with("redis://") {
        return Err(Error::Store {
            path: url.into(),
            message: "not a redis:// URL".into(),
        });
    }
    Redis::from_url(url, Duration::from_secs(10))
}

/// Every key of `redis` starting with `prefix`.
fn keys(redis: &Redis, prefix: &str) -> Result<Vec<String>, Error> {
    redis.keys_matching(&format!("{}*", glob_escape(prefix)))
}

/// The session id a quota counter belongs to: `quota-{id}` or
/// `quota-{scope}-{id}` (a scope may hold `-`, so the longest known id
/// wins).
fn owner<'a>(name: &'a str, ids: &HashSet<&str>) -> Option<&'a str> {
    let rest = name.strip_prefix(quota::PREFIX)?;
    if ids.contains(rest) {
        return Some(rest);
    }
    rest.match_indices('-')
        .map(|(i, _)| &rest[i + 1..])
        .find(|id| ids.contains(id))
}

/// Copies every session and quota counter of `redis` into `sled`.
pub fn import(redis: &Redis, sled: &SledStore) -> Result<Copied, Error> {
    let names = keys(redis, SESSIONS)?;
    let mut progress = Progress::new("import: sessions", names.len());
    let mut copied = Copied::default();
    for chunk in names.chunks(CHUNK) {
        let now_ms = unix_now_ms();
        let batch: Vec<(String, Stored)> = chunk
            .iter()
            .zip(with_pttl(redis, chunk)?)
            .filter_map(|(k, (value, pttl))| {
                let expires_at_ms = u64::try_from(pttl).ok().map(|ms| now_ms + ms);
                let value = value?;
                Some((
                    k.clone(),
                    Stored {
                        value,
                        expires_at_ms,
                    },
                ))
            })
            .collect();
        copied.sessions += batch.len();
        sled.set_many_stored(&batch)?;
        progress.at(copied.sessions);
    }
    let ids: HashSet<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(SESSIONS))
        .collect();
    let counters: Vec<String> = keys(redis, quota::PREFIX)?
        .into_iter()
        .filter(|n| !n.ends_with("-lock") && owner(n, &ids).is_some())
        .collect();
    let mut progress = Progress::new("import: quota counters", counters.len());
    let now = unix_now();
    for chunk in counters.chunks(CHUNK) {
        let raw = with_pttl::<i64>(redis, chunk)?;
        let mut batch = Vec::new();
        for (name, (used, pttl)) in chunk.iter().zip(raw) {
            let (Some(used), Some(key)) = (used, owner(name, &ids)) else {
                continue;
            };
            let expires_at = if pttl >= 0 {
                now + (pttl + 999) / 1000
            } else {
                0
            };
            batch.push((name.clone(), quota::record(used, expires_at, key)));
        }
        copied.quotas += batch.len();
        sled.set_many(&batch)?;
        progress.at(copied.quotas);
    }
    Ok(copied)
}

/// The value (None: not there, or not a `T`) and `PTTL` (-1: no TTL, -2:
/// not there) of each of `names`, in one round trip.
fn with_pttl<T: redis::FromRedisValue>(
    redis: &Redis,
    names: &[String],
) -> Result<Vec<(Option<T>, i64)>, Error> {
    let mut pipe = redis::pipe();
    for name in names {
        pipe.cmd("GET").arg(name).cmd("PTTL").arg(name);
    }
    redis.run(|c| {
        let flat: Vec<redis::Value> = pipe.query(c)?;
        Ok(flat
            .chunks(2)
            .map(|p| {
                let value = redis::from_redis_value(p[0].clone()).ok();
                let ttl = redis::from_redis_value(p[1].clone()).unwrap_or(-2);
                (value, ttl)
            })
            .collect())
    })
}

/// Copies every session and live quota counter of `sled` into `redis`.
pub fn export(sled: &SledStore, redis: &Redis) -> Result<Copied, Error> {
    let sessions = sled.scan_stored(SESSIONS)?;
    let mut progress = Progress::new("export: sessions", sessions.len());
    let mut copied = Copied::default();
    for chunk in sessions.chunks(CHUNK) {
        let now_ms = unix_now_ms();
        redis.run(|c| {
            let mut pipe = redis::pipe();
            for (k, e) in chunk {
                let set = pipe.cmd("SET").arg(k).arg(&e.value);
                if let Some(at) = e.expires_at_ms {
                    set.arg("PX").arg(at.saturating_sub(now_ms).max(1));
                }
                set.ignore();
            }
            pipe.query::<()>(c)
        })?;
        copied.sessions += chunk.len();
        progress.at(copied.sessions);
    }
    let now = unix_now();
    let counters: Vec<(String, i64, i64)> = sled
        .scan(quota::PREFIX)?
        .into_iter()
        .filter_map(|(name, bytes)| {
            let (used, expires_at) = quota::read_record(&bytes)?;
            let live = expires_at == 0 || expires_at > now;
            live.then_some((name, used, expires_at))
        })
        .collect();
    let mut progress = Progress::new("export: quota counters", counters.len());
    for chunk in counters.chunks(CHUNK) {
        redis.run(|c| {
            let mut pipe = redis::pipe();
            for (name, used, expires_at) in chunk {
                if *expires_at > 0 {
                    pipe.cmd("SET")
                        .arg(name)
                        .arg(used)
                        .arg("EX")
                        .arg(expires_at - now)
                        .ignore();
                } else {
                    pipe.cmd("SET").arg(name).arg(used).ignore();
                }
            }
            pipe.query::<()>(c)
        })?;
        copied.quotas += chunk.len();
        progress.at(copied.quotas);
    }
    Ok(copied)
}

/// `gatehouse import` (`into_sled`) or `export`: the config's sled store
/// (`storage.path`, whatever `storage.type` says) and the Redis at `url`.
pub fn run(conf: &std::path::Path, url: &str, into_sled: bool) -> Result<Copied, Error> {
    let config = crate::config::Config::load(conf)?;
    let redis = redis_at(url)?;
    let sled = SledStore::open(&config.store_path)?;
    let copied = if into_sled {
        import(&redis, &sled)?
    } else {
        export(&sled, &redis)?
    };
    sled.flush()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counters_find_their_key_even_with_dashes() {
        let ids: HashSet<&str> = ["abc", "k-1"].into_iter().collect();
        assert_eq!(owner("quota-abc", &ids), Some("abc"));
        assert_eq!(owner("quota-api-1-abc", &ids), Some("abc"));
        assert_eq!(owner("quota-k-1", &ids), Some("k-1"));
        assert_eq!(owner("quota-pol-k-1", &ids), Some("k-1"));
        assert_eq!(owner("quota-other", &ids), None);
        assert_eq!(owner("apikey-abc", &ids), None);
    }

    #[test]
    fn urls_are_read() {
        assert!(redis_at("redis://127.0.0.1:6380/2").is_ok());
        assert!(redis_at("redis://u:p@h").is_ok());
        assert!(redis_at("http://h").is_err());
        assert!(redis_at("redis://h/x").is_err());
    }
}
