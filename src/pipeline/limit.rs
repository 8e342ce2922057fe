//! RateLimitAndQuota and the API-level rate limit (CONTRACT §5): which
//! bucket and counter a request counts against, throttling retries, the
//! 429/403 answers and the `X-RateLimit-*` headers. The counting itself is
//! `ratelimit` (windows) and `quota` (counters).

use std::time::Duration;

use crate::config::RateLimitHeaders;
use crate::counters::{Ask, Counted, QuotaAsk, RateAsk};
use crate::error::Error;
use crate::gateway::unix_now_ms as now_ms;
use crate::http::message::Value;
use crate::keyid;
use crate::metrics::Flag;
use crate::quota::{QuotaDecision, counter_name, scope_for};
use crate::ratelimit::{Decision, Rate};
use crate::session::Limit;

use super::{Exchange, Flow};

/// `rate_limits` mode headers from a rate decision.
fn rate_headers(d: &Decision) -> [(&'static str, u64); 3] {
    [
        ("X-RateLimit-Limit", d.limit),
        ("X-RateLimit-Remaining", d.remaining),
        ("X-RateLimit-Reset", d.reset_ms.div_ceil(1000)),
    ]
}

/// An integer header value, formatted without the formatter.
fn number(n: impl itoa::Integer) -> Value {
    Value::from_slice(itoa::Buffer::new().format(n).as_bytes())
}

/// The key's limit for this API and the scope its counters use.
fn limit_and_scope(x: &Exchange<'_>) -> Option<(Limit, String)> {
    let s = x.session.as_ref()?;
    let api_id = x.api.id();
    Some((
        s.limit_for(api_id),
        scope_for(s.access_rights.get(api_id), api_id),
    ))
}

pub fn rate_and_quota(x: &mut Exchange<'_>) -> Flow {
    let Some((limit, scope)) = limit_and_scope(x) else {
        return Flow::Continue;
    };
    // The API's own rate limit (the next stage) is counted in the same
    // call: one round trip to shared counters for the whole request.
    x.api_rate_counted = true;
    // A request resuming with its answer has no use for the names.
    let names = if x.counted.is_some() {
        Names::default()
    } else {
        key_names(x, &limit, &scope)
    };
    let mut retries = limit.throttle_retry_limit.max(0);
    loop {
        let counted = match count(x, &names, limit) {
            None => return Flow::Park,
            Some(Ok(c)) => c,
            Some(Err(e)) => return counters_down(x, &e),
        };
        match rate_answer(x, counted.rate) {
            Flow::Continue => {}
            // Refused: throttle and try again when the key allows it.
            Flow::Defer if retries > 0 && limit.throttle_interval > 0.0 => {
                if x.nonblocking {
                    return Flow::Defer;
                }
                retries -= 1;
                std::thread::sleep(Duration::from_secs_f64(limit.throttle_interval.min(60.0)));
                continue;
            }
            Flow::Defer => return rate_refused(x, counted.rate),
            other => return other,
        }
        if let Flow::Respond(res) = quota_answer(x, &limit, counted.quota) {
            return Flow::Respond(res);
        }
        return match counted.api_rate {
            Some(d) if !d.allowed => api_rate_refused(x),
            _ => Flow::Continue,
        };
    }
}

/// The counters a keyed request counts against: its rate bucket,
/// `rate-limit-[{scope}-]{stored id}`, its quota counter and the API's
/// bucket.
fn key_names(x: &Exchange<'_>, limit: &Limit, scope: &str) -> Names {
    let bucket = (!x.api.def.disable_rate_limit).then(|| {
        let mut name = String::with_capacity(12 + scope.len() + x.stored_id.len());
        name.push_str("rate-limit-");
        if !scope.is_empty() {
            name.push_str(scope);
            name.push('-');
        }
        name.push_str(&x.stored_id);
        name
    });
    let quota = (!x.api.def.disable_quota && limit.quota_max > 0)
        .then(|| counter_name(scope, &x.stored_id));
    Names {
        bucket,
        quota,
        api: api_limit(x),
    }
}

/// Counts `names`: at once, or, on the event loop with shared counters,
/// by parking the request (None) and, when it comes back to this stage,
/// with the answer that came.
fn count(x: &mut Exchange<'_>, names: &Names, limit: Limit) -> Option<Result<Counted, Error>> {
    if let Some(answer) = x.counted.take() {
        return Some(answer);
    }
    let generation = x.session.as_deref().map_or("", |s| s.last_updated.as_str());
    if x.nonblocking && x.gw.counters.remote() {
        x.waiting = Some(Waiting {
            names: names.clone(),
            limit,
            key: x.stored_id.clone(),
            generation: generation.to_owned(),
        });
        return None;
    }
    Some(
        x.gw.counters
            .count(&names.ask(&limit, &x.stored_id, generation), now_ms()),
    )
}

/// What a parked request asks the shared counters, owned: the stages
/// after it may change the exchange.
pub struct Waiting {
    names: Names,
    limit: Limit,
    key: String,
    generation: String,
}

impl Waiting {
    pub fn ask(&self) -> Ask<'_> {
        self.names.ask(&self.limit, &self.key, &self.generation)
    }
}

/// The counters one keyed request counts against, named once per request.
#[derive(Clone, Default)]
struct Names {
    /// The key's rate bucket (None: the API disables rate limits).
    bucket: Option<String>,
    /// The key's quota counter (None: no quota counted).
    quota: Option<String>,
    /// The API's own bucket and rate, when it has one.
    api: Option<(String, Rate)>,
}

impl Names {
    /// What to count for the key stored as `key` (its session's
    /// `generation`), borrowed only for the call.
    fn ask<'a>(&'a self, limit: &Limit, key: &'a str, generation: &'a str) -> Ask<'a> {
        Ask {
            rate: self.bucket.as_deref().map(|bucket| RateAsk {
                bucket,
                generation,
                rate: Rate {
                    rate: limit.rate,
                    per: limit.per,
                },
            }),
            quota: self.quota.as_deref().map(|name| QuotaAsk {
                name,
                key,
                max: limit.quota_max,
                renewal_rate: limit.quota_renewal_rate,
            }),
            api_rate: self.api.as_ref().map(|(bucket, rate)| RateAsk {
                bucket,
                generation: "",
                rate: *rate,
            }),
        }
    }
}

/// The key's rate decision: Continue (with `rate_limits` headers) when
/// allowed or unlimited, Defer when refused (the caller decides between
/// throttling and refusing).
fn rate_answer(x: &mut Exchange<'_>, d: Option<Decision>) -> Flow {
    let Some(d) = d else {
        return Flow::Continue;
    };
    if !d.allowed {
        return Flow::Defer;
    }
    if x.gw.config.rate_limit_headers == RateLimitHeaders::RateLimits {
        for (n, v) in rate_headers(&d) {
            x.response_headers.set(n, number(v));
        }
    }
    Flow::Continue
}

/// 429 for a request the key's rate limit refused.
fn rate_refused(x: &Exchange<'_>, d: Option<Decision>) -> Flow {
    let Flow::Respond(mut res) = x.reject(429, "Rate Limit Exceeded") else {
        unreachable!()
    };
    res.tally.flag = Some(Flag::Rlt);
    if x.gw.config.rate_limit_headers == RateLimitHeaders::RateLimits {
        for (n, v) in d.iter().flat_map(rate_headers) {
            res.headers.set(n, number(v));
        }
    }
    Flow::Respond(res)
}

/// `flow`'s answer marked with a response flag for the metrics.
fn flagged(flow: Flow, flag: Flag) -> Flow {
    match flow {
        Flow::Respond(mut res) => {
            res.tally.flag = Some(flag);
            Flow::Respond(res)
        }
        other => other,
    }
}

/// The quota's decision (None: not counted): 403 when exhausted, else
/// Continue with the `quotas` mode headers.
fn quota_answer(x: &mut Exchange<'_>, limit: &Limit, d: Option<QuotaDecision>) -> Flow {
    let (max, mut remaining, mut renews) =
        (limit.quota_max, limit.quota_remaining, limit.quota_renews);
    if let Some(d) = d {
        if !d.allowed {
            return flagged(x.reject(403, "Quota exceeded"), Flag::Qex);
        }
        remaining = d.remaining;
        if d.renews != 0 {
            renews = d.renews;
        }
    }
    if x.gw.config.rate_limit_headers == RateLimitHeaders::Quotas {
        let h = &mut x.response_headers;
        h.set("X-RateLimit-Limit", number(max));
        h.set("X-RateLimit-Remaining", number(remaining));
        h.set("X-RateLimit-Reset", number(renews));
    }
    Flow::Continue
}

/// Tyk's name for an API-level bucket: `rate-limit-` and
/// `HashKey("apilimiter-" + org + api + suffix)`, shared with Tyk gateways
/// on the same Redis.
fn api_limiter(x: &Exchange<'_>, suffix: &str) -> String {
    let id = format!("apilimiter-{}{}{suffix}", x.api.def.org_id, x.api.id());
    if x.gw.config.hash_keys {
        format!("rate-limit-{}", keyid::hash_str(&id))
    } else {
        format!("rate-limit-{id}")
    }
}

/// Counters that cannot be reached (Redis down): the request is refused,
/// never served uncounted.
fn counters_down(x: &Exchange<'_>, e: &crate::error::Error) -> Flow {
    log::error!("api {}: limits cannot be checked: {e}", x.api.id());
    x.reject(503, "Service temporarily unavailable.")
}

/// Keyless APIs carry zero quota headers in `quotas` mode.
pub fn keyless_headers(x: &mut Exchange<'_>) -> Flow {
    if x.gw.config.rate_limit_headers == RateLimitHeaders::Quotas {
        for name in [
            "X-RateLimit-Limit",
            "X-RateLimit-Remaining",
            "X-RateLimit-Reset",
        ] {
            x.response_headers.set(name, "0");
        }
    }
    Flow::Continue
}

/// The API's own rate limit for this request: `global_rate_limit`, or
/// the endpoint's when it has one (it counts in its own bucket instead of
/// the API's, Tyk's RateLimitForAPI). None: no limit applies.
fn api_limit(x: &Exchange<'_>) -> Option<(String, Rate)> {
    let def = &x.api.def;
    if def.disable_rate_limit {
        return None;
    }
    let endpoint = x
        .rules
        .filter(|r| !r.transforms.rate_limits.is_empty())
        .and_then(|r| {
            let forms = super::endpoints::Forms::of(x);
            let e = r
                .transforms
                .rate_limit_for(&x.req.method, &forms.candidates(false))?;
            let bucket = api_limiter(x, &format!("-{}", e.bucket));
            Some((
                bucket,
                Rate {
                    rate: e.rate,
                    per: e.per,
                },
            ))
        });
    let g = &def.global_rate_limit;
    match endpoint {
        Some(found) => Some(found),
        None if g.disabled || g.rate <= 0.0 => None,
        None => Some((
            api_limiter(x, ""),
            Rate {
                rate: g.rate,
                per: g.per,
            },
        )),
    }
}

fn api_rate_refused(x: &Exchange<'_>) -> Flow {
    flagged(x.reject(429, "API Rate Limit Exceeded"), Flag::Rlt)
}

/// `global_rate_limit`: one bucket per API, keyless APIs included (for a
/// key, `rate_and_quota` already counted it).
pub fn api_rate(x: &mut Exchange<'_>) -> Flow {
    if x.api_rate_counted {
        return Flow::Continue;
    }
    let Some(api) = api_limit(x) else {
        return Flow::Continue;
    };
    let names = Names {
        api: Some(api),
        ..Names::default()
    };
    match count(x, &names, Limit::default()) {
        None => Flow::Park,
        Some(Ok(c)) if c.api_rate.is_some_and(|d| !d.allowed) => api_rate_refused(x),
        Some(Ok(_)) => Flow::Continue,
        Some(Err(e)) => counters_down(x, &e),
    }
}
