//! The counters behind rate limits and quotas, behind one narrow
//! interface: `Local` (in memory, one gateway; quotas persisted in batches
//! to the store) or `Shared` (`shared`: Redis, exact across every gateway
//! sharing it, in Tyk's keys and with Tyk's Redis algorithms, REDIS.md
//! §5-6). The event loop never waits on `Shared`: it asks with
//! `count_later`; the requests it parks in one round are counted in one
//! script call on its own non-blocking connection (`link`), the workers'
//! and any the link cannot take by the counting thread (`batch`).

mod batch;
mod link;
mod shared;

pub use shared::Shared;

use crate::error::Error;
use crate::quota::{QuotaDecision, Quotas};
use crate::ratelimit::{Decision, Rate, RateLimiter};

/// Where `count_later` hands its answer (on another thread for shared
/// counters).
pub type Done = Box<dyn FnOnce(Result<Counted, Error>) + Send>;

/// One rate limit to count a request against.
#[derive(Clone, Copy, Debug)]
pub struct RateAsk<'a> {
    pub bucket: &'a str,
    /// Tells apart sessions rewritten since (the in-memory buckets restart
    /// with them, as Tyk's DRL keys do); "" for API-level buckets.
    pub generation: &'a str,
    pub rate: Rate,
}

/// One quota counter to count a request against.
#[derive(Clone, Copy, Debug)]
pub struct QuotaAsk<'a> {
    /// The counter, `quota-[scope-]{key}`.
    pub name: &'a str,
    /// The id the key is stored as.
    pub key: &'a str,
    pub max: i64,
    pub renewal_rate: i64,
}

/// What one request counts against, in the pipeline's order: the key's
/// rate limit, its quota, the API's rate limit. Counting stops at the
/// first that refuses (a request the key's rate limit refuses uses no
/// quota, as in Tyk, where the quota check never runs for it).
#[derive(Clone, Copy, Debug, Default)]
pub struct Ask<'a> {
    pub rate: Option<RateAsk<'a>>,
    pub quota: Option<QuotaAsk<'a>>,
    pub api_rate: Option<RateAsk<'a>>,
}

/// The answers to an `Ask`. Each is None when it was not asked, when its
/// rate sets no limit, or when an earlier one refused the request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counted {
    pub rate: Option<Decision>,
    pub quota: Option<QuotaDecision>,
    pub api_rate: Option<Decision>,
}

pub trait Counters: Send + Sync {
    /// Counts one request against everything `ask` names, in order, up to
    /// the first refusal (refused requests count too, in the counter that
    /// refused them). Shared counters do it in one round trip.
    fn count(&self, ask: &Ask<'_>, now_ms: u64) -> Result<Counted, Error>;
    /// Used count and renewal time (unix s, 0 = never) of a live counter.
    fn quota_used(&self, name: &str, now: i64) -> Result<Option<(i64, i64)>, Error>;
    /// Forgets every quota counter of the key stored as `key`.
    fn reset_quotas(&self, key: &str) -> Result<(), Error>;
    /// Background upkeep: persist, drop idle state.
    fn upkeep(&self, _now_ms: u64) {}
    /// Whether counting waits on the network (never on the event loop:
    /// there it uses `count_later`).
    fn remote(&self) -> bool {
        false
    }
    /// Counts as `count` does without waiting for the answer: `done` gets
    /// it, for remote counters on another thread once the counters answer.
    fn count_later(&self, ask: &Ask<'_>, now_ms: u64, done: Done) {
        done(self.count(ask, now_ms));
    }
    /// What an event loop drives so that its `count_later` calls need no
    /// other thread (None: they need none, or go to one).
    fn sidecar(&self) -> Option<Box<dyn crate::server::Sidecar>> {
        None
    }
}

/// Whether a rate decision refused the request.
fn refused(d: Option<Decision>) -> bool {
    d.is_some_and(|d| !d.allowed)
}

/// One gateway's counters, in memory.
pub struct Local {
    pub quotas: Quotas,
    pub rate: RateLimiter,
}

impl Local {
    fn rate(&self, ask: &RateAsk<'_>, now_ms: u64) -> Option<Decision> {
        // The bucket named with its generation, built in a reused buffer:
        // no allocation per request.
        thread_local!(static NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        NAME.with(|name| {
            let mut name = name.borrow_mut();
            name.clear();
            name.push_str(ask.bucket);
            name.push(':');
            name.push_str(ask.generation);
            self.rate.check(&name, ask.rate, now_ms)
        })
    }
}

impl Counters for Local {
    fn count(&self, ask: &Ask<'_>, now_ms: u64) -> Result<Counted, Error> {
        let mut out = Counted {
            rate: ask.rate.and_then(|r| self.rate(&r, now_ms)),
            ..Counted::default()
        };
        if refused(out.rate) {
            return Ok(out);
        }
        if let Some(q) = ask.quota {
            let now = i64::try_from(now_ms / 1000).unwrap_or(i64::MAX);
            let d = self.quotas.check(q.name, q.key, q.max, q.renewal_rate, now);
            out.quota = Some(d);
            if !d.allowed {
                return Ok(out);
            }
        }
        out.api_rate = ask.api_rate.and_then(|r| self.rate(&r, now_ms));
        Ok(out)
    }

    fn quota_used(&self, name: &str, now: i64) -> Result<Option<(i64, i64)>, Error> {
        Ok(self.quotas.get(name, now))
    }

    fn reset_quotas(&self, key: &str) -> Result<(), Error> {
        self.quotas.reset(key)
    }

    fn upkeep(&self, now_ms: u64) {
        if let Err(e) = self.quotas.persist() {
            log::error!("store: persisting quota counters failed: {e}");
        }
        self.rate.sweep(now_ms);
    }
}
