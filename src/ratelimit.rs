//! The default rate limiter (CONTRACT §5): one fixed window per bucket,
//! opened by the first request; capacity floor(rate), at least 1; window
//! length `per` truncated to whole seconds. Buckets live in memory only
//! (as Tyk's in-process limiter), in sharded maps so that check-and-count
//! is one step under a lock: concurrent requests never over-allow. Which
//! bucket a request uses is the pipeline's business.

use std::hash::BuildHasher;

use crate::FastMap;
use std::sync::Mutex;

const SHARDS: usize = 32;
/// Buckets idle this long are dropped.
const IDLE_MS: u64 = 10 * 60 * 1000;

/// A rate: `rate` requests per `per` seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub rate: f64,
    pub per: f64,
}

impl Rate {
    /// Requests allowed per window; None when the limit does not apply.
    fn capacity(self) -> Option<(u64, u64)> {
        let per = self.per.trunc();
        if self.rate <= 0.0 || per < 1.0 || !self.rate.is_finite() || !per.is_finite() {
            return None;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let cap = (self.rate.floor() as u64).max(1);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let window_ms = (per as u64).saturating_mul(1000);
        Some((cap, window_ms))
    }
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests allowed per window.
    pub limit: u64,
    /// Left in the current window after this request.
    pub remaining: u64,
    /// Unix milliseconds at which the window ends.
    pub reset_ms: u64,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start_ms: u64,
    used: u64,
    last_ms: u64,
}

pub struct RateLimiter {
    shards: Vec<Mutex<FastMap<String, Window>>>,
    /// Picks a key's shard (its own seed: not the maps' hash).
    pick: foldhash::fast::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        RateLimiter {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            pick: Default::default(),
        }
    }
}

impl RateLimiter {
    fn shard(&self, bucket: &str) -> &Mutex<FastMap<String, Window>> {
        let i = usize::try_from(self.pick.hash_one(bucket) % SHARDS as u64).unwrap_or(0);
        &self.shards[i]
    }

    /// Counts one request against `bucket` at `now_ms`. None when `rate`
    /// sets no limit. A refused request does not count.
    pub fn check(&self, bucket: &str, rate: Rate, now_ms: u64) -> Option<Decision> {
        let (cap, window_ms) = rate.capacity()?;
        let mut map = self.shard(bucket).lock().unwrap_or_else(|e| e.into_inner());
        let w = match map.get_mut(bucket) {
            Some(w) => w,
            None => map.entry(bucket.to_string()).or_insert(Window {
                start_ms: now_ms,
                used: 0,
                last_ms: now_ms,
            }),
        };
        if now_ms >= w.start_ms.saturating_add(window_ms) {
            w.start_ms = now_ms;
            w.used = 0;
        }
        w.last_ms = now_ms;
        let allowed = w.used < cap;
        if allowed {
            w.used += 1;
        }
        Some(Decision {
            allowed,
            limit: cap,
            remaining: cap - w.used,
            reset_ms: w.start_ms + window_ms,
        })
    }

    /// Drops buckets idle for ten minutes.
    pub fn sweep(&self, now_ms: u64) {
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, w| now_ms.saturating_sub(w.last_ms) < IDLE_MS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const R: Rate = Rate {
        rate: 3.0,
        per: 1.0,
    };

    #[test]
    fn window_opens_on_first_request_and_caps() {
        let l = RateLimiter::default();
        let allowed: Vec<bool> = (0..5)
            .map(|i| l.check("b", R, 1000 + i).unwrap().allowed)
            .collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        let d = l.check("b", R, 1999).unwrap();
        assert_eq!((d.allowed, d.reset_ms), (false, 2000));
        assert!(l.check("b", R, 2000).unwrap().allowed);
    }

    #[test]
    fn capacity_is_floor_of_rate_at_least_one() {
        let l = RateLimiter::default();
        let d = l
            .check(
                "x",
                Rate {
                    rate: 0.5,
                    per: 10.0,
                },
                0,
            )
            .unwrap();
        assert_eq!(d.limit, 1);
        assert_eq!(
            l.check(
                "y",
                Rate {
                    rate: 2.9,
                    per: 1.0
                },
                0
            )
            .unwrap()
            .limit,
            2
        );
    }

    #[test]
    fn no_limit_for_zero_rate_or_sub_second_per() {
        let l = RateLimiter::default();
        assert!(
            l.check(
                "z",
                Rate {
                    rate: 0.0,
                    per: 1.0
                },
                0
            )
            .is_none()
        );
        assert!(
            l.check(
                "z",
                Rate {
                    rate: -1.0,
                    per: 1.0
                },
                0
            )
            .is_none()
        );
        assert!(
            l.check(
                "z",
                Rate {
                    rate: 5.0,
                    per: 0.5
                },
                0
            )
            .is_none()
        );
    }

    #[test]
    fn per_is_truncated_to_seconds() {
        let l = RateLimiter::default();
        let d = l
            .check(
                "t",
                Rate {
                    rate: 1.0,
                    per: 1.9,
                },
                0,
            )
            .unwrap();
        assert_eq!(d.reset_ms, 1000);
    }

    #[test]
    fn concurrent_requests_never_over_allow() {
        let l = Arc::new(RateLimiter::default());
        let ok = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (l, ok) = (l.clone(), ok.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        if l.check(
                            "hot",
                            Rate {
                                rate: 100.0,
                                per: 60.0,
                            },
                            5,
                        )
                        .unwrap()
                        .allowed
                        {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(ok.load(Ordering::SeqCst), 100);
    }

    #[test]
    fn idle_buckets_are_swept() {
        let l = RateLimiter::default();
        l.check("old", R, 0).unwrap();
        l.sweep(IDLE_MS + 1);
        // A fresh window: all three allowed again even within the old window's time.
        assert_eq!(l.check("old", R, 1).unwrap().remaining, 2);
    }
}
