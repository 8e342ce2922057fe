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
        // The bucket named with its generation, built in a reused buffer:
        // no allocation per request.
        thread_local!(static NAME: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) });
        Ok(NAME.with(|name| {
            let mut name = name.borrow_mut();
            name.clear();
            name.push_str(bucket);
            name.push(':');
            name.push_str(generation);
            self.rate.check(&name, rate, now_ms)
        }))
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
    /// `enable_fixed_window_rate_limiter`: Tyk's fixed window instead of
    /// the sliding log.
    fixed_window: bool,
    /// Makes this gateway's log entries unique within a nanosecond.
    node: String,
    seq: AtomicU64,
}

impl Shared {
    pub fn new(redis: Arc<Redis>, fixed_window: bool) -> Shared {
        let mut id = [0u8; 4];
        getrandom::getrandom(&mut id).ok();
        Shared {
            redis,
            quota: redis::Script::new(QUOTA_LUA),
            sliding: redis::Script::new(RATE_LUA),
            fixed_window,
            node: id.iter().map(|b| format!("{b:02x}")).collect(),
            seq: AtomicU64::new(0),
        }
    }
}

/// Seconds from Go's zero time (0001-01-01 UTC) to the Unix epoch.
const YEAR_ONE_TO_UNIX_S: u128 = 62_135_596_800;

/// The start (Unix ns) of the fixed window holding `now_ns`: Go's
/// `time.Truncate(per)`, which counts whole periods from year 1, not from
/// 1970 (the same only when `per` divides 62135596800 s).
pub fn window_start_ns(now_ns: u64, per_ns: u64) -> u64 {
    let offset = YEAR_ONE_TO_UNIX_S * 1_000_000_000;
    let since_year_one = u128::from(now_ns) + offset;
    let start = since_year_one - since_year_one % u128::from(per_ns.max(1));
    u64::try_from(start.saturating_sub(offset)).unwrap_or(0)
}

impl Shared {
    /// Tyk's fixed window: `INCR {bucket}/{window start ns}` and the rest
    /// of the window as its TTL; blocked once the count passes the rate
    /// (blocked requests count too).
    fn fixed(&self, bucket: &str, limit: u64, per_ns: u64, now_ms: u64) -> Result<Decision, Error> {
        let now_ns = now_ms.saturating_mul(1_000_000);
        let start = window_start_ns(now_ns, per_ns);
        let end = start + per_ns;
        let key = format!("{bucket}/{start}");
        let left_ms = (end - now_ns).div_ceil(1_000_000).max(1);
        let (count,): (u64,) = self.redis.run(|c| {
            redis::pipe()
                .cmd("INCR")
                .arg(&key)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(left_ms)
                .ignore()
                .query(c)
        })?;
        Ok(Decision {
            allowed: count <= limit,
            limit,
            remaining: limit.saturating_sub(count),
            reset_ms: end / 1_000_000,
        })
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
        if self.fixed_window {
            return self.fixed(bucket, limit, per_ns, now_ms).map(Some);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_windows_align_to_year_one_as_go_does() {
        let s = 1_000_000_000u64;
        // 60 s divides 62135596800 s: the same as Unix alignment.
        assert_eq!(
            window_start_ns(1_700_000_030 * s, 60 * s),
            1_699_999_980 * s
        );
        // 7 s does not: 62135596800 % 7 == 4, so Unix windows start at
        // 3 mod 7 (Unix alignment would give 0 mod 7).
        assert_eq!(62_135_596_800u64 % 7, 4);
        let start = window_start_ns(1_700_000_000 * s, 7 * s);
        assert_eq!(start, 1_699_999_997 * s);
        assert_eq!((start / s) % 7, 3);
        assert!(start <= 1_700_000_000 * s && 1_700_000_000 * s < start + 7 * s);
    }
}
