//! The running gateway's shared state: configuration, store, sessions, the
//! current API registry and policy snapshots and the upstream pool, plus
//! the reload queue that swaps them (CONTRACT §1.7). Passed around as
//! `Arc<Gateway>`; there are no globals.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arc_swap::ArcSwap;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{error, info, warn};

use crate::auth::Applied;
use crate::auth::basic::Verified;
use crate::auth::jwks::Jwks;
use crate::auth::jwt::VerifiedTokens;
use crate::auth::policy::PolicySet;
use crate::config::Config;
use crate::counters::{Counters, Local, Shared};
use crate::error::Error;
use crate::http::path::Reject;
use crate::keys::KeyIds;
use crate::metrics::Metrics;
use crate::metrics::access_log::AccessLog;
use crate::quota::Quotas;
use crate::ratelimit::RateLimiter;
use crate::registry::Registry;
use crate::sessions::Sessions;
use crate::store::signals::{self, Signal};
use crate::store::{Redis, RedisStore, SledStore, Store};
use crate::upstream::Upstream;

pub struct Gateway {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub sessions: Sessions,
    /// Candidate and stored ids of recently seen key ids.
    pub key_ids: KeyIds,
    pub upstream: Arc<Upstream>,
    /// Rate-limit buckets and quota counters.
    pub counters: Box<dyn Counters>,
    /// Cluster mode: the shared Redis.
    redis: Option<Arc<Redis>>,
    /// Paths refused with 400, by `Reject::index` (for the metrics).
    pub path_rejects: [AtomicU64; Reject::ALL.len()],
    /// Sessions with their policies applied.
    pub applied: Applied,
    /// Basic-auth passwords verified lately.
    pub verified: Verified,
    /// JWT signatures verified.
    pub tokens: VerifiedTokens,
    /// JWKS documents fetched for JWT APIs, per API.
    pub jwks: Jwks,
    /// Counters for `/metrics`, and the access log.
    pub metrics: Arc<Metrics>,
    registry: ArcSwap<Registry>,
    policies: ArcSwap<PolicySet>,
    /// The last policy snapshot's generation.
    policy_generation: AtomicU64,
    reloads: ReloadQueue,
}

/// How often the store is swept of entries whose lifetime passed (reads
/// already ignore them).
const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// How long a gateway of a cluster believes a cached session (Tyk's 10 s).
pub const CLUSTER_SESSION_AGE: Duration = Duration::from_secs(10);

/// Unix time in milliseconds.
pub fn unix_now_ms() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl Gateway {
    /// Opens the store, loads sessions and APIs.
    pub fn open(config: Config) -> Result<Arc<Gateway>, Error> {
        let (store, counters, redis): (Arc<dyn Store>, Box<dyn Counters>, _) = match &config.redis {
            None => {
                let store: Arc<dyn Store> = Arc::new(SledStore::open(&config.store_path)?);
                let local = Local {
                    quotas: Quotas::load(store.clone())?,
                    rate: RateLimiter::default(),
                };
                info!("store {}: opened", config.store_path.display());
                (store, Box::new(local), None)
            }
            Some(options) => {
                let redis = Arc::new(Redis::new(options)?);
                let store = RedisStore::new(redis.clone(), &config.node_secret);
                match store.redis.run(|c| redis::cmd("PING").query::<String>(c)) {
                    Ok(_) => info!("store: redis://{} (cluster mode)", options.addr),
                    Err(e) => {
                        log::error!("store: {e}; keyed requests are refused until it answers")
                    }
                }
                (
                    Arc::new(store),
                    Box::new(Shared::new(redis.clone(), config.fixed_window_rate_limiter)),
                    Some(redis),
                )
            }
        };
        // Tyk's session cache lives 10 s; notices evict sooner.
        let max_age = redis.as_ref().map(|_| CLUSTER_SESSION_AGE);
        let sessions = Sessions::new(store.clone(), config.session_cache, max_age);
        let policies = PolicySet::load(&config.policies, 1);
        let access_log = match config.access_log {
            Some(cfg) => {
                Some(AccessLog::start(cfg).map_err(|e| Error::io("starting the access log", e))?)
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new(config.metrics, access_log));
        let registry = Registry::load(&config, &metrics);
        info!(
            "apis: {} loaded from {}",
            registry.len(),
            config.app_path.display()
        );
        let upstream = Upstream::new(
            config.connect_timeout,
            config.proxy_timeout,
            config.server.limits.clone(),
            config.upstream_tls.clone(),
        );
        Ok(Arc::new(Gateway {
            store,
            sessions,
            upstream: Arc::new(upstream),
            counters,
            redis,
            key_ids: KeyIds::new(config.session_cache),
            path_rejects: Default::default(),
            applied: Applied::new(config.session_cache),
            verified: Verified::new(config.session_cache),
            tokens: VerifiedTokens::new(config.session_cache),
            jwks: Jwks::new(config.jwks_cache),
            metrics,
            registry: ArcSwap::from_pointee(registry),
            policies: ArcSwap::from_pointee(policies),
            policy_generation: AtomicU64::new(1),
            reloads: ReloadQueue::default(),
            config,
        }))
    }

    /// The current API set. A request keeps the snapshot it started with.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.load_full()
    }

    /// The current API set, for the length of one request: no reference
    /// count is taken (the request path's form of `registry`).
    pub fn registry_now(&self) -> arc_swap::Guard<Arc<Registry>> {
        self.registry.load()
    }

    /// The current policy set. A request keeps the snapshot it started with.
    pub fn policies(&self) -> Arc<PolicySet> {
        self.policies.load_full()
    }

    /// The current policy set, for the length of one request (see
    /// `registry_now`).
    pub fn policies_now(&self) -> arc_swap::Guard<Arc<PolicySet>> {
        self.policies.load()
    }

    /// Re-reads the policies, then `app_path`, and swaps each set in one
    /// step (policies first, as Tyk does). A file that fails is logged with
    /// its error; the version of it that was running stays, and a folder
    /// that cannot be read keeps everything that was loaded from it.
    pub fn reload_now(&self) {
        let generation = self.policy_generation.fetch_add(1, Ordering::Relaxed) + 1;
        let current = self.policies();
        let (policies, errors) = PolicySet::read(&self.config.policies, generation, Some(&current));
        for e in errors {
            error!("reload: policies: {e}");
        }
        self.policies.store(Arc::new(policies));
        let current = self.registry();
        let (fresh, errors) =
            match Registry::read(&self.config, Some(&current), Some(&self.metrics)) {
                Ok(loaded) => loaded,
                Err(e) => {
                    error!("reload: {e}; the {} APIs loaded stay", current.len());
                    return;
                }
            };
        for e in &errors {
            error!("reload: apis: {e}");
        }
        if fresh.is_empty() && current.is_empty() {
            return;
        }
        info!(
            "reload: {} APIs loaded, {} files with errors",
            fresh.len(),
            errors.len()
        );
        self.registry.store(Arc::new(fresh));
    }

    /// Queues a reload; with `wait`, returns once it has run.
    pub fn request_reload(&self, wait: bool) {
        let ticket = self.reloads.request();
        if wait {
            self.reloads.wait_for(ticket);
        }
    }

    /// Runs queued reloads, at most one per `reload_interval`, until `stop`.
    pub fn spawn_reloader(self: &Arc<Self>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let gw = self.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Some(ticket) = gw.reloads.next(Duration::from_millis(200)) else {
                    continue;
                };
                gw.reload_now();
                gw.reloads.done(ticket);
                thread::sleep(gw.config.reload_interval);
            }
        })
    }

    /// Writes changed quota counters every `quota_persist_interval` and
    /// drops idle rate buckets, and every `SWEEP_EVERY` removes stored
    /// entries whose lifetime passed, until `stop`.
    pub fn spawn_persister(self: &Arc<Self>, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
        let gw = self.clone();
        thread::spawn(move || {
            let tick = gw.config.quota_persist_interval;
            let (mut slept, mut unswept) = (Duration::ZERO, Duration::ZERO);
            while !stop.load(Ordering::SeqCst) {
                let step = Duration::from_millis(50).min(tick);
                thread::sleep(step);
                slept += step;
                unswept += step;
                if slept >= tick {
                    slept = Duration::ZERO;
                    gw.persist_counters();
                }
                if unswept >= SWEEP_EVERY {
                    unswept = Duration::ZERO;
                    gw.sweep();
                }
            }
        })
    }

    fn sweep(&self) {
        match self.store.sweep() {
            Ok(0) => {}
            Ok(n) => info!("store: removed {n} entries whose lifetime passed"),
            Err(e) => warn!("store: removing entries whose lifetime passed: {e}"),
        }
    }

    fn persist_counters(&self) {
        self.counters.upkeep(unix_now_ms());
    }

    /// Cluster mode: acts on other gateways' notices until `stop`.
    pub fn spawn_cluster_listener(
        self: &Arc<Self>,
        stop: Arc<AtomicBool>,
    ) -> Option<thread::JoinHandle<()>> {
        let redis = self.redis.clone()?;
        let gw = Arc::downgrade(self);
        let secret = self.config.node_secret.clone();
        Some(signals::listen(redis, secret, stop, move |signal| {
            let Some(gw) = gw.upgrade() else { return };
            match signal {
                Signal::KeysChanged(ids) => {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    gw.sessions.evict(&ids);
                }
                Signal::Reload(command) => {
                    info!("cluster: {command}: reloading APIs and policies");
                    gw.request_reload(false);
                }
                Signal::Subscribed => gw.sessions.evict_all(),
            }
        }))
    }

    /// Persists counters and flushes the store; called on shutdown.
    pub fn flush(&self) {
        self.persist_counters();
        if let Err(e) = self.store.flush() {
            warn!("store: final flush failed: {e}");
        }
    }
}

/// Reload requests as tickets: `requested` counts requests, `done` the
/// highest ticket a finished reload covered.
#[derive(Default)]
struct ReloadQueue {
    state: Mutex<(u64, u64)>,
    changed: Condvar,
}

impl ReloadQueue {
    fn request(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 += 1;
        self.changed.notify_all();
        s.0
    }

    /// The newest pending ticket, waiting up to `timeout` for one.
    fn next(&self, timeout: Duration) -> Option<u64> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.0 <= s.1)
            .unwrap_or_else(|e| e.into_inner());
        (s.0 > s.1).then_some(s.0)
    }

    fn done(&self, ticket: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = s.1.max(ticket);
        self.changed.notify_all();
    }

    fn wait_for(&self, ticket: u64) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.changed.wait_while(s, |s| s.1 < ticket));
    }
}
