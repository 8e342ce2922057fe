//! Unit-level benchmark of the shared maps a keyed request touches on the
//! hot path (issue 13): the `KeyIds` cache, the session cache (`Sessions`),
//! the rate limiter and the quota counters (both through `counters::Local`,
//! as the pipeline calls them), and all four in the pipeline's order
//! (`request`). Each runs from 1, 2 and 4 threads for a bounded time, over a
//! uniform mix of keys and over one hot key that every thread hits. It
//! prints total operations per second and the cost per operation per
//! thread: wall (the thread's elapsed time / its operations) and cpu (its
//! on-cpu time from /proc/thread-self/schedstat / its operations). With more
//! threads than cpus the wall figure includes waiting for a cpu; the cpu
//! figure does not, and is the one that shows contention. The last column
//! is the CPU other processes used during the run, to tell a disturbed
//! measurement.
//!
//! Not measured: the store (sessions and counters are all in memory before
//! timing starts; a session cache miss would read an in-memory store here),
//! HTTP, and formatting the counter names (built once per key, not per
//! operation as the pipeline does).
//!
//!     cargo run --release --example maps [-- --seconds S --keys N --threads 1,2,4]
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse::config::{self, Config};
use gatehouse::counters::{Ask, Counters, Local, QuotaAsk, RateAsk};
use gatehouse::error::Error;
use gatehouse::keyid;
use gatehouse::keys::KeyIds;
use gatehouse::quota::{Quotas, counter_name};
use gatehouse::ratelimit::{Rate, RateLimiter};
use gatehouse::session::Session;
use gatehouse::sessions::Sessions;
use gatehouse::store::{Store, Stored, Write};

/// The gateway binary's allocator, so that allocations (`KeyIds::resolve`
/// builds its cache key per call) cost here what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Operations between two looks at the clock.
const BATCH: u64 = 256;
/// A bound on any thread's operations in one run, whatever the time says.
const MAX_OPS: u64 = 2_000_000_000;
const ORG: &str = "1";
/// Never trips within a run: every operation takes the counting path.
const RATE: Rate = Rate {
    rate: 1e12,
    per: 1.0,
};
const QUOTA_MAX: i64 = 1_000_000_000_000;
const QUOTA_RENEWAL: i64 = 3600;

/// What one operation does.
#[derive(Clone, Copy, PartialEq)]
enum Op {
    /// `KeyIds::resolve`: the candidates and stored ids of a key id.
    KeyIds,
    /// `Sessions::get` of a cached session.
    Sessions,
    /// `Counters::rate` on `Local`: the sharded rate limiter.
    Rate,
    /// `Counters::quota` on `Local`: the sharded quota counters.
    Quota,
    /// All four, in the pipeline's order: one keyed request's map work.
    Request,
}

impl Op {
    const ALL: [Op; 5] = [Op::KeyIds, Op::Sessions, Op::Rate, Op::Quota, Op::Request];

    fn name(self) -> &'static str {
        match self {
            Op::KeyIds => "key_ids",
            Op::Sessions => "sessions",
            Op::Rate => "rate",
            Op::Quota => "quota",
            Op::Request => "request",
        }
    }
}

/// One key and the names the pipeline would build for it.
struct Key {
    id: String,
    stored: String,
    bucket: String,
    generation: String,
    quota: String,
}

/// The shared structures, as `Gateway` holds them.
struct Maps {
    cfg: Config,
    ids: KeyIds,
    sessions: Sessions,
    counters: Local,
}

/// A store in memory: a session cache miss reads it, nothing else does.
#[derive(Default)]
struct MemStore(Mutex<BTreeMap<String, Vec<u8>>>);

impl MemStore {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.map().get(key).cloned())
    }
    fn read(&self, key: &str) -> Result<Option<Stored>, Error> {
        Ok(self.map().get(key).map(|value| Stored {
            value: value.clone(),
            expires_at_ms: None,
        }))
    }
    /// Lifetimes are not kept: the benchmark's keys live for the run.
    fn write(&self, key: &str, value: &[u8], how: Write) -> Result<bool, Error> {
        let mut map = self.map();
        if how.existing_only && !map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_string(), value.to_vec());
        Ok(true)
    }
    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        let mut map = self.map();
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<bool, Error> {
        Ok(self.map().remove(key).is_some())
    }
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    fn healthy(&self) -> bool {
        true
    }
}

/// What the command line asks for.
struct Args {
    seconds: f64,
    keys: usize,
    threads: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        seconds: 1.0,
        keys: 10_000,
        threads: vec![1, 2, 4],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--seconds" => a.seconds = value.parse().map_err(|e| bad(&e))?,
            "--keys" => a.keys = value.parse().map_err(|e| bad(&e))?,
            "--threads" => {
                a.threads = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(&e))?;
            }
            _ => {
                return Err(format!(
                    "unknown option {flag} (--seconds, --keys, --threads)"
                ));
            }
        }
    }
    if !(0.01..=60.0).contains(&a.seconds) {
        return Err("--seconds must be within 0.01..=60".into());
    }
    if !(1..=10_000_000).contains(&a.keys) {
        return Err("--keys must be within 1..=10000000".into());
    }
    if a.threads.is_empty() || a.threads.iter().any(|&t| !(1..=64).contains(&t)) {
        return Err("--threads: each count must be within 1..=64".into());
    }
    Ok(a)
}

/// The gateway's configuration for the bench's keys: hashed with murmur64.
fn bench_config() -> Result<Config, String> {
    let path = Path::new("maps-bench.conf");
    let text = r#"{"hash_keys": true, "hash_key_function": "murmur64"}"#;
    let (raw, _) = config::parse(path, text).map_err(|e| e.to_string())?;
    raw.validate(path).map_err(|e| e.to_string())
}

/// `n` keys made as `/tyk/keys/create` makes them, and their names.
fn make_keys(cfg: &Config, n: usize) -> Vec<Key> {
    (0..n)
        .map(|i| {
            let id = keyid::token(ORG, &format!("{i:032x}"), "murmur64");
            let stored = gatehouse::keys::stored_id(cfg, &id);
            Key {
                bucket: format!("rate-limit-{stored}"),
                quota: counter_name("", &stored),
                generation: "1700000000".to_string(),
                id,
                stored,
            }
        })
        .collect()
}

/// The maps with every key's session cached and counters opened. The
/// caches hold twice the keys (the gateway's default is 10,000), so what
/// is measured is a hit, not eviction.
fn fill(cfg: Config, keys: &[Key]) -> Result<Maps, String> {
    let store: Arc<dyn Store> = Arc::new(MemStore::default());
    let capacity = cfg.session_cache.max(2 * keys.len());
    let maps = Maps {
        ids: KeyIds::new(capacity),
        sessions: Sessions::new(store.clone(), capacity, None),
        counters: Local {
            quotas: Quotas::load(store).map_err(|e| e.to_string())?,
            rate: RateLimiter::default(),
        },
        cfg,
    };
    for k in keys {
        let session = Session {
            org_id: ORG.to_string(),
            last_updated: k.generation.clone(),
            ..Session::default()
        };
        maps.sessions
            .put(&k.stored, Arc::new(session), 0)
            .map_err(|e| e.to_string())?;
        one(&maps, Op::Request, k, now_ms());
    }
    Ok(maps)
}

fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// One operation on key `k`.
fn one(m: &Maps, op: Op, k: &Key, now_ms: u64) {
    match op {
        Op::KeyIds => {
            black_box(m.ids.resolve(&m.cfg, &k.id, ORG));
        }
        Op::Sessions => {
            black_box(m.sessions.get(&k.stored).ok());
        }
        Op::Rate => {
            let ask = Ask {
                rate: Some(rate_ask(&k.bucket, &k.generation)),
                ..Ask::default()
            };
            black_box(m.counters.count(&ask, now_ms).ok());
        }
        Op::Quota => {
            let ask = Ask {
                quota: Some(quota_ask(&k.quota, &k.stored)),
                ..Ask::default()
            };
            black_box(m.counters.count(&ask, now_ms).ok());
        }
        Op::Request => {
            let found = m.ids.resolve(&m.cfg, &k.id, ORG);
            let stored = &found.first().expect("one candidate").stored_id;
            let session = m.sessions.get(stored).ok().flatten().expect("cached");
            let generation = session.last_updated.as_str();
            // As the pipeline asks: the key's rate, then its quota.
            let ask = Ask {
                rate: Some(rate_ask(&k.bucket, generation)),
                quota: Some(quota_ask(&k.quota, stored)),
                api_rate: None,
            };
            black_box(m.counters.count(&ask, now_ms).ok());
        }
    }
}

fn rate_ask<'a>(bucket: &'a str, generation: &'a str) -> RateAsk<'a> {
    RateAsk {
        bucket,
        generation,
        rate: RATE,
    }
}

fn quota_ask<'a>(name: &'a str, key: &'a str) -> QuotaAsk<'a> {
    QuotaAsk {
        name,
        key,
        max: QUOTA_MAX,
        renewal_rate: QUOTA_RENEWAL,
    }
}

/// Nanoseconds this thread has run on a cpu, if the kernel says.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second in /proc (Linux's USER_HZ, 100 on every
/// architecture it exports to user space).
const USER_HZ: f64 = 100.0;

/// Busy clock ticks of the whole machine (user, nice, system, irq,
/// softirq, steal) and of this process (utime + stime), if the kernel says.
fn busy_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let machine = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| cpu.get(i)).sum();
    let own = std::fs::read_to_string("/proc/self/stat").ok()?;
    let f: Vec<u64> = own
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    Some((machine, f.get(11)? + f.get(12)?))
}

/// What one thread did in one run.
struct Share {
    ops: u64,
    wall: Duration,
    cpu_ns: Option<u64>,
}

/// One thread's loop: operations on keys picked by a xorshift generator
/// (or the hot key), until its time is up or `MAX_OPS`.
fn hammer(m: &Maps, keys: &[Key], op: Op, hot: bool, seed: u64, run: Duration) -> Share {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n = keys.len() as u64;
    let cpu0 = thread_cpu_ns();
    let t0 = Instant::now();
    let mut ops = 0;
    while ops < MAX_OPS {
        let now = now_ms();
        for _ in 0..BATCH {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = if hot { 0 } else { x % n };
            one(m, op, &keys[usize::try_from(i).unwrap_or(0)], now);
        }
        ops += BATCH;
        if t0.elapsed() >= run {
            break;
        }
    }
    let wall = t0.elapsed();
    let cpu_ns = cpu0.zip(thread_cpu_ns()).map(|(a, b)| b.saturating_sub(a));
    Share { ops, wall, cpu_ns }
}

/// One run: what each thread did, and the CPU other processes used
/// meanwhile, in % of one cpu.
struct Run {
    shares: Vec<Share>,
    other_pct: Option<f64>,
}

/// Runs `op` from `threads` threads at once for `run`.
fn measure(m: &Maps, keys: &[Key], op: Op, hot: bool, threads: usize, run: Duration) -> Run {
    let start = Barrier::new(threads);
    let (before, t0) = (busy_ticks(), Instant::now());
    let shares = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    hammer(m, keys, op, hot, t as u64 + 1, run)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect()
    });
    let secs = t0.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let other_pct = before.zip(busy_ticks()).map(|((m0, p0), (m1, p1))| {
        let other = (m1 - m0).saturating_sub(p1 - p0) as f64;
        other * 100.0 / (USER_HZ * secs)
    });
    Run { shares, other_pct }
}

/// One line of the table: totals and per-thread means.
fn row(op: Op, mix: &str, threads: usize, run: &Run) -> String {
    let shares = &run.shares;
    let ops: u64 = shares.iter().map(|s| s.ops).sum();
    let wall = shares.iter().map(|s| s.wall).max().unwrap_or_default();
    #[allow(clippy::cast_precision_loss)]
    let per_s = ops as f64 / wall.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let mean = |f: &dyn Fn(&Share) -> f64| shares.iter().map(f).sum::<f64>() / shares.len() as f64;
    #[allow(clippy::cast_precision_loss)]
    let wall_ns = mean(&|s| s.wall.as_nanos() as f64 / s.ops as f64);
    let cpu = if shares.iter().all(|s| s.cpu_ns.is_some()) {
        #[allow(clippy::cast_precision_loss)]
        let ns = mean(&|s| s.cpu_ns.unwrap_or(0) as f64 / s.ops as f64);
        format!("{ns:.1}")
    } else {
        "-".to_string()
    };
    let other = run
        .other_pct
        .map_or_else(|| "-".to_string(), |p| format!("{p:.0}%"));
    format!(
        "{:<9} {mix:<8} {threads:>7} {:>14} {wall_ns:>12.1} {cpu:>11} {other:>9}",
        op.name(),
        group(per_s)
    )
}

/// `1234567.8` as `1,234,568`.
fn group(v: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let digits = (v.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let cfg = bench_config()?;
    let keys = make_keys(&cfg, args.keys);
    let maps = fill(cfg, &keys)?;
    let run = Duration::from_secs_f64(args.seconds);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "maps: {cpus} cpus; uniform = {} keys picked at random, hot = every thread on one key; {} s per run",
        args.keys, args.seconds
    );
    println!(
        "  ns/op per thread (mean over threads): wall = elapsed / ops, cpu = on-cpu time / ops"
    );
    println!(
        "  other = CPU used by other processes during the run, in % of one cpu (> 10%: disturbed)"
    );
    println!(
        "{:<9} {:<8} {:>7} {:>14} {:>12} {:>11} {:>9}",
        "structure", "keys", "threads", "total ops/s", "wall ns/op", "cpu ns/op", "other"
    );
    for op in Op::ALL {
        for (mix, hot) in [("uniform", false), ("hot", true)] {
            for &threads in &args.threads {
                let r = measure(&maps, &keys, op, hot, threads, run);
                println!("{}", row(op, mix, threads, &r));
            }
        }
    }
    let (hits, misses) = (maps.sessions.hits.get(), maps.sessions.misses.get());
    println!("session cache over all runs: {hits} hits, {misses} misses");
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
