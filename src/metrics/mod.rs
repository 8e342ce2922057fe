//! What the gateway tells its operator: the counters behind `/metrics`
//! (this module, encoded by `text`), the access log (`access_log`) and the
//! JSON log format. It leaves out serving `/metrics` (the router does) and
//! knows nothing of sockets or stages: the server hands every finished
//! request to `Metrics::finish`, and the pipeline fills the request's
//! `Tally` (its API, a response flag, an access-log entry).
//!
//! Counting takes no lock: per-API counter blocks (`ApiStats`) are made
//! when the registry loads, kept by `api_id` across reloads (counts never go
//! backwards), and are plain relaxed atomics; histograms are fixed arrays
//! of `AtomicU64`. Only loading an API and scraping take the map's lock.

pub mod access_log;
mod process;
pub mod text;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use access_log::{AccessLog, Entry};

/// The request methods counted by name; anything else is `OTHER`.
pub const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "OTHER",
];

/// A request method as an index into `METHODS`.
pub fn method_index(method: &str) -> u8 {
    let i = METHODS[..9].iter().position(|m| *m == method).unwrap_or(9);
    u8::try_from(i).unwrap_or(9)
}

/// Why a request did not get a plain upstream answer: Tyk's response flags
/// (`internal/errors/classification.go`), the ones Gatehouse can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// Upstream connection failure (refused, unreachable).
    Ucf,
    /// Upstream connection timeout.
    Uct,
    /// Upstream request timeout (no answer in time).
    Urt,
    /// Upstream reset or closed the connection.
    Urr,
    /// Upstream host name lookup failed.
    Dns,
    /// Upstream protocol error (a malformed answer).
    Upe,
    /// Upstream answered 5xx.
    Urs,
    /// Circuit breaker open.
    Cbo,
    /// Rate limited (429).
    Rlt,
    /// Quota exceeded (403).
    Qex,
    /// Client disconnected or timed out sending its body.
    Cdc,
    /// Request body too large.
    Btl,
    /// Request body invalid.
    Biv,
}

impl Flag {
    pub const ALL: [Flag; 13] = [
        Flag::Ucf,
        Flag::Uct,
        Flag::Urt,
        Flag::Urr,
        Flag::Dns,
        Flag::Upe,
        Flag::Urs,
        Flag::Cbo,
        Flag::Rlt,
        Flag::Qex,
        Flag::Cdc,
        Flag::Btl,
        Flag::Biv,
    ];

    /// The flags that are upstream errors (`gatehouse_upstream_errors_total`):
    /// the first seven.
    pub const UPSTREAM: &'static [Flag] = Flag::ALL.split_at(7).0;

    pub fn name(self) -> &'static str {
        match self {
            Flag::Ucf => "UCF",
            Flag::Uct => "UCT",
            Flag::Urt => "URT",
            Flag::Urr => "URR",
            Flag::Dns => "DNS",
            Flag::Upe => "UPE",
            Flag::Urs => "URS",
            Flag::Cbo => "CBO",
            Flag::Rlt => "RLT",
            Flag::Qex => "QEX",
            Flag::Cdc => "CDC",
            Flag::Btl => "BTL",
            Flag::Biv => "BIV",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Histogram bounds in microseconds: the union of tyk-pump's millisecond
/// buckets and OTel's advised HTTP buckets (plus 30 s and 60 s), so one
/// array serves both `tyk_latency` (ms) and the `_seconds` histograms.
const BOUNDS_US: [u64; 31] = [
    1_000, 2_000, 5_000, 7_000, 10_000, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000,
    70_000, 75_000, 80_000, 90_000, 100_000, 200_000, 250_000, 300_000, 400_000, 500_000, 750_000,
    1_000_000, 2_000_000, 2_500_000, 5_000_000, 7_500_000, 10_000_000, 30_000_000, 60_000_000,
];

/// tyk-pump's buckets (`pumps/prometheus.go`), in ms.
pub const PUMP_BUCKETS_MS: [u64; 26] = [
    1, 2, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300, 400, 500, 1000, 2000,
    5000, 10000, 30000, 60000,
];

/// OTel's advised HTTP buckets plus 30 and 60, in ms.
pub const OTEL_BUCKETS_MS: [u64; 16] = [
    5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000,
];

/// A counter that threads on different cores bump without sharing a cache
/// line: one slot per thread (by a number each thread takes once), summed
/// when read. For counts taken on every request by every event loop.
pub struct Striped {
    slots: [Slot; STRIPES],
}

const STRIPES: usize = 16;

#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

impl Default for Striped {
    fn default() -> Striped {
        Striped {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl Striped {
    pub fn add(&self, n: u64) {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        let i = SLOT.with(|s| *s);
        self.slots[i].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

/// A latency histogram: a count per `BOUNDS_US` bucket (the last is +Inf)
/// and the sum in microseconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|b| *b < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Cumulative counts at each of `bounds_ms` (each one of `BOUNDS_US`),
    /// the total count and the sum in microseconds.
    pub fn snapshot(&self, bounds_ms: &[u64]) -> (Vec<u64>, u64, u64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let cumulative = bounds_ms
            .iter()
            .map(|ms| {
                let n = BOUNDS_US.partition_point(|b| *b <= ms * 1000);
                counts[..n].iter().sum()
            })
            .collect();
        (
            cumulative,
            counts.iter().sum(),
            self.sum_us.load(Ordering::Relaxed),
        )
    }
}

/// Slots for distinct (status, method) pairs per API; a pair past them is
/// counted in `overflow` only.
const CODE_SLOTS: usize = 64;

/// Request counts by (status, method), a lock-free open-addressed table:
/// a slot is claimed once with a compare-and-swap, then only incremented.
#[derive(Debug)]
struct CodeTable {
    keys: [AtomicU32; CODE_SLOTS],
    counts: [AtomicU64; CODE_SLOTS],
    overflow: AtomicU64,
}

impl Default for CodeTable {
    fn default() -> Self {
        CodeTable {
            keys: std::array::from_fn(|_| AtomicU32::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            overflow: AtomicU64::new(0),
        }
    }
}

impl CodeTable {
    fn add(&self, status: u16, method: u8) {
        if !(100..=999).contains(&status) {
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let key = (u32::from(status) << 4) | u32::from(method);
        let start = (usize::from(status) * 7 + usize::from(method)) % CODE_SLOTS;
        for step in 0..CODE_SLOTS {
            let i = (start + step) % CODE_SLOTS;
            let found = match self.keys[i].load(Ordering::Relaxed) {
                0 => match self.keys[i].compare_exchange(
                    0,
                    key,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => key,
                    Err(other) => other,
                },
                k => k,
            };
            if found == key {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// (status, method index, count) of every claimed slot, sorted.
    fn snapshot(&self) -> Vec<(u16, u8, u64)> {
        let mut out: Vec<(u16, u8, u64)> = (0..CODE_SLOTS)
            .filter_map(|i| {
                let key = self.keys[i].load(Ordering::Relaxed);
                let status = u16::try_from(key >> 4).ok()?;
                let method = u8::try_from(key & 0xf).ok()?;
                (key != 0).then(|| (status, method, self.counts[i].load(Ordering::Relaxed)))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// One API's counters (or the unrouted requests', with an empty id).
#[derive(Debug, Default)]
pub struct ApiStats {
    pub id: String,
    codes: CodeTable,
    total: Histogram,
    upstream: Histogram,
    gateway: Histogram,
    flags: [AtomicU64; Flag::ALL.len()],
}

impl ApiStats {
    pub fn new(id: &str) -> ApiStats {
        ApiStats {
            id: id.to_string(),
            ..ApiStats::default()
        }
    }

    pub fn flag_count(&self, flag: Flag) -> u64 {
        self.flags[flag.index()].load(Ordering::Relaxed)
    }
}

/// What the server needs to know about a request to count it: carried on
/// its `Response` (and on its `Forward` until the upstream answers).
#[derive(Debug, Default)]
pub struct Tally {
    /// The API that answered; None for unrouted requests.
    pub api: Option<Arc<ApiStats>>,
    /// Not API traffic (admin, health, `/metrics`): not counted.
    pub skip: bool,
    /// When the request went upstream.
    pub sent: Option<Instant>,
    pub flag: Option<Flag>,
    /// The access-log line being built, when access logs are on.
    pub log: Option<Box<Entry>>,
}

/// When and how a request arrived, as the server saw it.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    pub started: Instant,
    /// Index into `METHODS`.
    pub method: u8,
    /// When the event loop sent it upstream (its own exchanges).
    pub sent: Option<Instant>,
}

/// The gateway's counters, shared by the server, the router and the
/// pipeline.
pub struct Metrics {
    /// `gatehouse.metrics`: off, nothing is counted.
    pub enabled: bool,
    apis: Mutex<BTreeMap<String, Arc<ApiStats>>>,
    unrouted: Arc<ApiStats>,
    /// Open client connections (the server's own count).
    pub open: Arc<AtomicUsize>,
    pub accepted: AtomicU64,
    /// Refused at the connection cap.
    pub refused: AtomicU64,
    pub access_log: Option<AccessLog>,
    started: SystemTime,
}

impl Metrics {
    pub fn new(enabled: bool, access_log: Option<AccessLog>) -> Metrics {
        Metrics {
            enabled,
            apis: Mutex::new(BTreeMap::new()),
            unrouted: Arc::new(ApiStats::new("")),
            open: Arc::new(AtomicUsize::new(0)),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            access_log,
            started: SystemTime::now(),
        }
    }

    /// The counter block of `api_id`: the same one across reloads.
    pub fn api(&self, api_id: &str) -> Arc<ApiStats> {
        let mut apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        apis.entry(api_id.to_string())
            .or_insert_with(|| Arc::new(ApiStats::new(api_id)))
            .clone()
    }

    /// Every API block ever loaded, by id, then the unrouted one.
    fn blocks(&self) -> Vec<Arc<ApiStats>> {
        let apis = self.apis.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Arc<ApiStats>> = apis.values().cloned().collect();
        out.push(self.unrouted.clone());
        out
    }

    /// Counts a finished request (its response head is about to be
    /// written at `now`) and sends its access-log line. A handful of
    /// relaxed increments; no lock, no allocation.
    pub fn finish(&self, tally: &mut Tally, status: u16, arrival: &Arrival, now: Instant) {
        if tally.skip {
            return;
        }
        let total = now.saturating_duration_since(arrival.started);
        let upstream = tally
            .sent
            .or(arrival.sent)
            .map(|s| now.saturating_duration_since(s).min(total));
        if self.enabled {
            let api = tally.api.as_deref().unwrap_or(&self.unrouted);
            api.codes.add(status, arrival.method);
            api.total.observe(total);
            if let Some(up) = upstream {
                api.upstream.observe(up);
                api.gateway.observe(total.saturating_sub(up));
            }
            if let Some(flag) = tally.flag {
                api.flags[flag.index()].fetch_add(1, Ordering::Relaxed);
            }
        }
        if let (Some(log), Some(mut entry)) = (&self.access_log, tally.log.take()) {
            entry.finish(status, total, upstream, tally.flag);
            log.send(entry);
        }
    }

    /// Seconds since the epoch at which the process started.
    fn start_time(&self) -> f64 {
        self.started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_normalised() {
        assert_eq!(METHODS[method_index("GET") as usize], "GET");
        assert_eq!(METHODS[method_index("PATCH") as usize], "PATCH");
        assert_eq!(METHODS[method_index("get") as usize], "OTHER");
        assert_eq!(METHODS[method_index("PROPFIND") as usize], "OTHER");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_inclusive() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1_000)); // le 1 ms
        h.observe(Duration::from_micros(1_001)); // le 2 ms
        h.observe(Duration::from_millis(80)); // le 80 ms, OTel le 100 ms
        h.observe(Duration::from_secs(100)); // +Inf only
        let (pump, count, sum) = h.snapshot(&PUMP_BUCKETS_MS);
        assert_eq!(pump[0], 1);
        assert_eq!(pump[1], 2);
        assert_eq!(pump[12], 2); // 70 ms
        assert_eq!(pump[13], 3); // 80 ms
        assert_eq!(*pump.last().unwrap(), 3);
        assert_eq!(count, 4);
        assert_eq!(sum, 1_000 + 1_001 + 80_000 + 100_000_000);
        let (otel, _, _) = h.snapshot(&OTEL_BUCKETS_MS);
        assert_eq!(otel[4], 2); // 75 ms
        assert_eq!(otel[5], 3); // 100 ms
    }

    #[test]
    fn every_exported_bound_is_a_stored_bound() {
        for ms in PUMP_BUCKETS_MS.iter().chain(&OTEL_BUCKETS_MS) {
            assert!(BOUNDS_US.contains(&(ms * 1000)), "{ms}");
        }
        assert!(BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn code_table_counts_pairs_and_overflows_when_full() {
        let t = CodeTable::default();
        t.add(200, 0);
        t.add(200, 0);
        t.add(404, 2);
        assert_eq!(t.snapshot(), vec![(200, 0, 2), (404, 2, 1)]);
        for status in 100..200 {
            t.add(status, 1);
        }
        assert_eq!(t.snapshot().len(), CODE_SLOTS);
        assert!(t.overflow.load(Ordering::Relaxed) > 0);
        t.add(42, 0);
    }
}
