//! `Shared`: the counters in Redis, in Tyk's terms. Quotas are
//! `quota-[scope-]{id}` holding the used count, renewed by giving the key
//! a TTL of `quota_renewal_rate` when it has none (PTTL, SET 0 EX, INCR
//! inside a script, so no lock is needed); rate limits are the rolling
//! limiter's sliding log (`rate-limit-[scope-]{id}`, a sorted set of
//! request times in ns, every request logged, blocked ones too) or Tyk's
//! fixed window. Everything a request counts against (the key's rate
//! limit, its quota, the API's rate limit) is one Lua script call: one
//! round trip per request, and on the event loop's behalf one pipelined
//! write for every request waiting (`batch`). Tyk's default in-memory DRL
//! would let N gateways each grant the whole rate, so it is not offered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::Sender;

use super::batch::{self, Job};
use super::link;
use super::{Ask, Counted, Counters, Done, QuotaAsk, RateAsk};
use crate::error::Error;
use crate::quota::QuotaDecision;
use crate::ratelimit::Decision;
use crate::store::{Redis, glob_escape};

/// Every counter of a batch of requests, in one script call. ARGV[1] is
/// the number of requests, then each request's number of counters, then
/// 6 values per counter; KEYS holds one per counter, in the same order.
/// A counter's values are its kind and limit, then
/// - `s` (Tyk's rolling limiter, a sliding log): now in ns, the score
///   before which entries are dropped, this entry, the log's TTL in s;
///   refused when the count before this request reaches the limit (the
///   request is logged either way);
/// - `f` (Tyk's fixed window): the window's remaining ms as the counter's
///   TTL; refused when the count passes the limit (counted either way);
/// - `q` (a quota): the renewal in s (a counter without a TTL is reset
///   and given it: no lock needed); refused when the count passes the
///   limit (counted either way).
///
/// A request's counting stops after its first counter that refuses.
///
/// Several requests of a batch on one key pay for the key's fixed costs
/// once (Redis's time stands still while a script runs, so this is
/// exact): a log's size is carried from one request to the next (the
/// count after the last `ZADD`, less what `ZREMRANGEBYSCORE` dropped:
/// no `ZCARD`), its TTL is set once after the whole batch, and a
/// quota's PTTL is read once.
///
/// Returns one line per request (one string: Redis's reply parser is
/// slow on many small values): two numbers per counter counted, separated
/// by spaces (the count, before this request for `s`, after it otherwise;
/// for `q`, the counter's PTTL), or, when a command failed (a key of the
/// wrong type), `!` and the error: the other requests are counted all the
/// same.
pub(super) const COUNT_LUA: &str = r"
local logged, expiring, ttls = {}, {}, {}
local function count(k, a, m)
  local out = {}
  for i = 1, m do
    local key, o = KEYS[k + i], a + (i - 1) * 6
    local kind, limit = ARGV[o + 1], tonumber(ARGV[o + 2])
    local count, ttl, refused = 0, 0, false
    if kind == 's' then
      local dropped = redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[o + 4])
      local size = logged[key]
      if size then
        count = size - dropped
      else
        count = redis.call('ZCARD', key)
      end
      redis.call('ZADD', key, ARGV[o + 3], ARGV[o + 5])
      logged[key] = count + 1
      expiring[key] = ARGV[o + 6]
      refused = count >= limit
    elseif kind == 'f' then
      count = redis.call('INCR', key)
      redis.call('PEXPIRE', key, ARGV[o + 3])
      refused = count > limit
    else
      ttl = ttls[key]
      if not ttl then
        ttl = redis.call('PTTL', key)
        local renewal = tonumber(ARGV[o + 3])
        if ttl < 0 and renewal > 0 then
          redis.call('SET', key, 0, 'EX', renewal)
          ttl = renewal * 1000
        end
      end
      count = redis.call('INCR', key)
      ttls[key] = ttl
      refused = count > limit
    end
    out[#out + 1] = count
    out[#out + 1] = ttl
    if refused then break end
  end
  return out
end
local n = tonumber(ARGV[1])
local answers, k, a = {}, 0, 1 + n
for j = 1, n do
  local m = tonumber(ARGV[1 + j])
  local ok, r = pcall(count, k, a, m)
  if ok then
    answers[j] = table.concat(r, ' ')
  else
    if type(r) == 'table' and r.err then r = r.err end
    answers[j] = '!' .. string.gsub(tostring(r), '\n', ' ')
  end
  k, a = k + m, a + 6 * m
end
for key, seconds in pairs(expiring) do
  redis.call('EXPIRE', key, seconds)
end
return table.concat(answers, '\n')
";

/// Counters in Redis, shared by every gateway using it.
pub struct Shared {
    redis: Arc<Redis>,
    /// `enable_fixed_window_rate_limiter`: Tyk's fixed window instead of
    /// the sliding log.
    fixed_window: bool,
    /// Makes this gateway's log entries unique within a nanosecond.
    node: String,
    seq: AtomicU64,
    /// The thread that counts for the event loops (`count_later`).
    batch: Sender<Job>,
}

impl Shared {
    pub fn new(redis: Arc<Redis>, fixed_window: bool) -> Shared {
        let mut id = [0u8; 4];
        getrandom::getrandom(&mut id).ok();
        Shared {
            batch: batch::spawn(redis.clone()),
            redis,
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

/// The counters of one request, in the order the script counts them.
pub(super) struct Slots {
    rate: Option<Slot>,
    quota: Option<Slot>,
    api_rate: Option<Slot>,
}

impl Slots {
    fn each(&self) -> impl Iterator<Item = &Slot> {
        [&self.rate, &self.quota, &self.api_rate]
            .into_iter()
            .flatten()
    }

    pub(super) fn len(&self) -> usize {
        self.each().count()
    }

    fn is_empty(&self) -> bool {
        self.each().next().is_none()
    }

    /// The script's keys, one per counter.
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.each().map(|s| s.key.as_str())
    }

    /// The script's arguments, six per counter.
    pub(super) fn args(&self) -> impl Iterator<Item = &str> {
        self.each().flat_map(|s| s.args.split(' '))
    }

    /// The decisions in the script's answer: two numbers per counter
    /// counted, in order, up to the first refusal.
    pub(super) fn read(&self, answers: &[i64]) -> Counted {
        let mut pairs = answers.chunks_exact(2).map(|p| (p[0], p[1]));
        let mut next =
            |slot: &Option<Slot>| slot.as_ref().and_then(|s| Some((s.read, pairs.next()?)));
        Counted {
            rate: next(&self.rate).and_then(|(r, (count, _))| r.rate(count)),
            quota: next(&self.quota).and_then(|(r, (used, pttl))| r.quota(used, pttl)),
            api_rate: next(&self.api_rate).and_then(|(r, (count, _))| r.rate(count)),
        }
    }
}

/// One counter of a script call: its key, its six arguments, and how to
/// read its answer.
struct Slot {
    key: String,
    /// Six, separated by spaces (no argument holds one).
    args: String,
    read: Read,
}

/// A slot's arguments as they are built: the kind, then numbers, written
/// without the formatter into one buffer.
struct Args(String);

impl Args {
    fn new(kind: char) -> Args {
        let mut s = String::with_capacity(72);
        s.push(kind);
        Args(s)
    }

    fn num(mut self, n: impl itoa::Integer) -> Args {
        self.0.push(' ');
        self.0.push_str(itoa::Buffer::new().format(n));
        self
    }

    /// `-{text}` appended to the last argument.
    fn glued(mut self, text: &str) -> Args {
        self.0.push('-');
        self.0.push_str(text);
        self
    }

    /// The arguments, empty ones added up to six.
    fn done(mut self) -> String {
        let given = 1 + self.0.bytes().filter(|&b| b == b' ').count();
        for _ in given..6 {
            self.0.push(' ');
        }
        self.0
    }
}

/// How a slot's (count, ttl) answer becomes a decision.
#[derive(Clone, Copy)]
enum Read {
    Sliding { limit: u64, reset_ms: u64 },
    Fixed { limit: u64, reset_ms: u64 },
    Quota { max: i64, now: i64 },
}

impl Read {
    fn rate(self, count: i64) -> Option<Decision> {
        let count = u64::try_from(count).unwrap_or(0);
        match self {
            // `count` was taken before this request was logged.
            Read::Sliding { limit, reset_ms } => Some(Decision {
                allowed: count < limit,
                limit,
                remaining: limit.saturating_sub(count + 1),
                reset_ms,
            }),
            Read::Fixed { limit, reset_ms } => Some(Decision {
                allowed: count <= limit,
                limit,
                remaining: limit.saturating_sub(count),
                reset_ms,
            }),
            Read::Quota { .. } => None,
        }
    }

    fn quota(self, used: i64, pttl: i64) -> Option<QuotaDecision> {
        let Read::Quota { max, now } = self else {
            return None;
        };
        Some(QuotaDecision {
            allowed: used <= max,
            remaining: (max - used).max(0),
            renews: if pttl >= 0 {
                now + (pttl + 999) / 1000
            } else {
                0
            },
        })
    }
}

impl Shared {
    /// The slot of a rate limit: Tyk's sliding log (every request logged
    /// as `{ns}-{node}`, blocked ones too) or, with
    /// `enable_fixed_window_rate_limiter`, its fixed window
    /// (`{bucket}/{window start ns}`). None: the rate sets no limit.
    fn rate_slot(&self, ask: &RateAsk<'_>, now_ms: u64) -> Option<Slot> {
        let rate = ask.rate;
        if rate.rate <= 0.0 || rate.per <= 0.0 || !rate.rate.is_finite() || !rate.per.is_finite() {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let (limit, per_ns, per_s) = (
            rate.rate.floor().max(1.0) as u64,
            (rate.per * 1e9) as u64,
            (rate.per.ceil() as u64).max(1),
        );
        let now_ns = now_ms.saturating_mul(1_000_000);
        if self.fixed_window {
            let start = window_start_ns(now_ns, per_ns);
            let end = start + per_ns;
            let left_ms = (end - now_ns).div_ceil(1_000_000).max(1);
            let mut key = String::with_capacity(ask.bucket.len() + 21);
            key.push_str(ask.bucket);
            key.push('/');
            key.push_str(itoa::Buffer::new().format(start));
            return Some(Slot {
                key,
                args: Args::new('f').num(limit).num(left_ms).done(),
                read: Read::Fixed {
                    limit,
                    reset_ms: end / 1_000_000,
                },
            });
        }
        let now_ns = now_ns + self.seq.fetch_add(1, Ordering::Relaxed) % 1_000_000;
        Some(Slot {
            key: ask.bucket.to_string(),
            args: Args::new('s')
                .num(limit)
                .num(now_ns)
                .num(now_ns.saturating_sub(per_ns))
                .num(now_ns)
                .glued(&self.node)
                .num(per_s)
                .done(),
            read: Read::Sliding {
                limit,
                reset_ms: now_ms + per_s * 1000,
            },
        })
    }
}

fn quota_slot(ask: &QuotaAsk<'_>, now_ms: u64) -> Slot {
    Slot {
        key: ask.name.to_string(),
        args: Args::new('q').num(ask.max).num(ask.renewal_rate).done(),
        read: Read::Quota {
            max: ask.max,
            now: i64::try_from(now_ms / 1000).unwrap_or(i64::MAX),
        },
    }
}

impl Shared {
    fn slots(&self, ask: &Ask<'_>, now_ms: u64) -> Slots {
        Slots {
            rate: ask.rate.and_then(|r| self.rate_slot(&r, now_ms)),
            quota: ask.quota.map(|q| quota_slot(&q, now_ms)),
            api_rate: ask.api_rate.and_then(|r| self.rate_slot(&r, now_ms)),
        }
    }
}

impl Counters for Shared {
    /// Through the counting thread too (one mechanism, and a worker's
    /// request shares its write with the event loops').
    fn count(&self, ask: &Ask<'_>, now_ms: u64) -> Result<Counted, Error> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.count_later(
            ask,
            now_ms,
            Box::new(move |answer| {
                let _ = tx.send(answer);
            }),
        );
        rx.recv()
            .unwrap_or_else(|_| Err(self.redis.error("the counting thread is gone")))
    }

    fn count_later(&self, ask: &Ask<'_>, now_ms: u64, done: Done) {
        let slots = self.slots(ask, now_ms);
        if slots.is_empty() {
            return done(Ok(Counted::default()));
        }
        let Some(job) = link::queue(Job { slots, done }) else {
            return;
        };
        if let Err(gone) = self.batch.send(job) {
            let job = gone.into_inner();
            (job.done)(Err(self.redis.error("the counting thread is gone")));
        }
    }

    fn sidecar(&self) -> Option<Box<dyn crate::server::Sidecar>> {
        let (addr, hello) = self.redis.plain_target()?;
        Some(Box::new(link::Link::new(
            addr,
            hello,
            self.redis.clone(),
            self.batch.clone(),
        )))
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

    fn remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gives_the_script_six_arguments() {
        let q = Args::new('q').num(5i64).num(60i64).done();
        assert_eq!(
            q.split(' ').collect::<Vec<_>>(),
            ["q", "5", "60", "", "", ""]
        );
        let s = Args::new('s')
            .num(10u64)
            .num(1_700_000_000_000_000_123u64)
            .num(0u64)
            .num(7u64)
            .glued("beef")
            .num(60u64)
            .done();
        assert_eq!(
            s.split(' ').collect::<Vec<_>>(),
            ["s", "10", "1700000000000000123", "0", "7-beef", "60"]
        );
    }

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
