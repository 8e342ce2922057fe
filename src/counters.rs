//! The counters behind rate limits and quotas, behind one narrow
//! interface: `Local` (in memory, one gateway; quotas persisted in batches
//! to the store) or `Shared` (Redis: exact across every gateway sharing
//! it, in Tyk's keys and with Tyk's Redis algorithms, REDIS.md §5-6).
//!
//! `Shared` in Tyk's terms: quotas are `quota-[scope-]{id}` holding the
//! used count, renewed by giving the key a TTL of `quota_renewal_rate`
//! when it has none (one Lua script: PTTL, SET 0 EX, INCR, so no lock is
//! needed); rate limits are the rolling limiter's sliding log
//! (`rate-limit-[scope-]{id}`, a sorted set of request times in ns, every
//! request logged, blocked ones too). Tyk's default in-memory DRL would let
//! N gateways each grant the whole rate, so it is not offered here.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Error;
use crate::quota::{QuotaDecision, Quotas};
use crate::ratelimit::{Decision, Rate, RateLimiter};
use crate::store::{Redis, glob_escape};

pub trait Counters: Send + Sync {
    /// Counts one request against quota counter `name` of the key stored
    /// as `key` (refused requests count too).
    fn quota(
        &self,
        name: &str,
        key: &str,
        max: i64,
        renewal_rate: i64,
        now: i64,
    ) -> Result<QuotaDecision, Error>;
    /// Used count and renewal time (unix s, 0 = never) of a live counter.
    fn quota_used(&self, name: &str, now: i64) -> Result<Option<(i64, i64)>, Error>;
    /// Forgets every quota counter of the key stored as `key`.
    fn reset_quotas(&self, key: &str) -> Result<(), Error>;
    /// Counts one request against rate bucket `bucket`. `generation` tells
    /// apart sessions rewritten since (the in-memory buckets restart with
    /// them, as Tyk's DRL keys do). None: `rate` sets no limit.
    fn rate(
        &self,
        bucket: &str,
        generation: &str,
        rate: Rate,
        now_ms: u64,
    ) -> Result<Option<Decision>, Error>;
    /// Background upkeep: persist, drop idle state.
    fn upkeep(&self, _now_ms: u64) {}
    /// Whether counting waits on the network (never on the event loop).
    fn remote(&self) -> bool {
        false
    }
}

/// One gateway's counters, in memory.
pub struct Local {
    pub quotas: Quotas,
    pub rate: RateLimiter,
}

impl Counters for Local {
    fn quota(
        &self,
        name: &str,
        key: &str,
        max: i64,
        renewal_rate: i64,
        now: i64,
    ) -> Result<QuotaDecision, Error> {
        Ok(self.quotas.check(name, key, max, renewal_rate, now))
    }

    fn quota_used(&self, name: &str, now: i64) -> Result<Option<(i64, i64)>, Error> {
        Ok(self.quotas.get(name, now))
    }

    fn reset_quotas(&self, key: &str) -> Result<(), Error> {
        self.quotas.reset(key)
    }

    fn rate(
        &self,
        bucket: &str,
        generation: &str,
        rate: Rate,
        now_ms: u64,
    ) -> Result<Option<Decision>, Error> {
        Ok(self
            .rate
            .check(&format!("{bucket}:{generation}"), rate, now_ms))
    }

    fn upkeep(&self, now_ms: u64) {
        if let Err(e) = self.quotas.persist() {
            log::error!("store: persisting quota counters failed: {e}");
        }
        self.rate.sweep(now_ms);
    }
}

/// Quota: renew a counter without a TTL, then count. Returns {used, pttl}.
const QUOTA_LUA: &str = r"
local ttl = redis.call('PTTL', KEYS[1])
local renewal = tonumber(ARGV[1])
if ttl < 0 and renewal > 0 then
  redis.call('SET', KEYS[1], 0, 'EX', renewal)
  ttl = renewal * 1000
end
local used = redis.call('INCR', KEYS[1])
return {used, ttl}
";

/// Sliding log (Tyk's rolling limiter): drop entries older than the
/// window, count, log this request. Returns the count before it.
const RATE_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return count
";

/// Counters in Redis, shared by every gateway using it.
pub struct Shared {
    redis: Arc<Redis>,
    quota: redis::Script,
    sliding: redis::Script,
    /// Makes this gateway's log entries unique within a nanosecond.
    node: String,
    seq: AtomicU64,
}

impl Shared {
    pub fn new(redis: Arc<Redis>) -> Shared {
        let mut id = [0u8; 4];
        getrandom::getrandom(&mut id).ok();
        Shared {
            redis,
            quota: redis::Script::new(QUOTA_LUA),
            sliding: redis::Script::new(RATE_LUA),
            node: id.iter().map(|b| format!("{b:02x}")).collect(),
            seq: AtomicU64::new(0),
        }
    }
}

impl Counters for Shared {
    fn quota(
        &self,
        name: &str,
        _key: &str,
        max: i64,
        renewal_rate: i64,
        now: i64,
    ) -> Result<QuotaDecision, Error> {
        let (used, pttl): (i64, i64) = self
            .redis
            .run(|c| self.quota.key(name).arg(renewal_rate).invoke(c))?;
        Ok(QuotaDecision {
            allowed: used <= max,
            remaining: (max - used).max(0),
            renews: if pttl >= 0 {
                now + (pttl + 999) / 1000
            } else {
                0
            },
        })
    }

    fn quota_used(&self, name: &str, now: i64) -> Result<Option<(i64, i64)>, Error> {
        let (used, pttl): (Option<i64>, i64) = self.redis.run(|c| {
            redis::pipe()
                .cmd("GET")
                .arg(name)
                .cmd("PTTL")
                .arg(name)
                .query(c)
        })?;
        Ok(used.map(|u| {
            (
                u,
                if pttl >= 0 {
                    now + (pttl + 999) / 1000
                } else {
                    0
                },
            )
        }))
    }

    fn reset_quotas(&self, key: &str) -> Result<(), Error> {
        // `quota-{key}` and every scoped `quota-{scope}-{key}`.
        let pattern = format!("quota-*{}", glob_escape(key));
        let mut names = vec![format!("quota-{key}")];
        let scoped = self.redis.keys_matching(&pattern)?;
        names.extend(
            scoped
                .into_iter()
                .filter(|n| n.ends_with(&format!("-{key}"))),
        );
        self.redis
            .run(|c| redis::cmd("DEL").arg(&names).query::<i64>(c))
            .map(drop)
    }

    fn rate(
        &self,
        bucket: &str,
        _generation: &str,
        rate: Rate,
        now_ms: u64,
    ) -> Result<Option<Decision>, Error> {
        if rate.rate <= 0.0 || rate.per <= 0.0 || !rate.rate.is_finite() || !rate.per.is_finite() {
            return Ok(None);
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (limit, per_ns, per_s) = (
            rate.rate.floor().max(1.0) as u64,
            (rate.per * 1e9) as u64,
            (rate.per.ceil() as u64).max(1),
        );
        let now_ns =
            now_ms.saturating_mul(1_000_000) + self.seq.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        let member = format!("{now_ns}-{}", self.node);
        let count: u64 = self.redis.run(|c| {
            self.sliding
                .key(bucket)
                .arg(now_ns.to_string())
                .arg(now_ns.saturating_sub(per_ns).to_string())
                .arg(&member)
                .arg(per_s)
                .invoke(c)
        })?;
        Ok(Some(Decision {
            allowed: count < limit,
            limit,
            remaining: limit.saturating_sub(count + 1),
            reset_ms: now_ms + per_s * 1000,
        }))
    }

    fn remote(&self) -> bool {
        true
    }
}
