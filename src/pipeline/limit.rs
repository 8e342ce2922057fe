//! RateLimitAndQuota and the API-level rate limit (CONTRACT §5): which
//! bucket and counter a request counts against, throttling retries, the
//! 429/403 answers and the `X-RateLimit-*` headers. The counting itself is
//! `ratelimit` (windows) and `quota` (counters).

use std::time::Duration;

use crate::config::RateLimitHeaders;
use crate::gateway::unix_now_ms as now_ms;
use crate::keyid;
use crate::metrics::Flag;
use crate::quota::{counter_name, scope_for};
use crate::ratelimit::{Decision, Rate};
use crate::session::Limit;

use super::{Exchange, Flow};

/// `rate_limits` mode headers from a rate decision.
fn rate_headers(d: &Decision) -> [(&'static str, String); 3] {
    [
        ("X-RateLimit-Limit", d.limit.to_string()),
        ("X-RateLimit-Remaining", d.remaining.to_string()),
        ("X-RateLimit-Reset", d.reset_ms.div_ceil(1000).to_string()),
    ]
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
    // Shared counters wait on the network: never on the event loop.
    if x.nonblocking && x.gw.counters.remote() {
        return Flow::Defer;
    }
    if !x.api.def.disable_rate_limit {
        match check_rate(x, &limit, &scope) {
            Flow::Continue => {}
            other => return other,
        }
    }
    check_quota(x, &limit, &scope)
}

fn check_rate(x: &mut Exchange<'_>, limit: &Limit, scope: &str) -> Flow {
    let s = x.session.clone().expect("checked by caller");
    let scope = if scope.is_empty() {
        String::new()
    } else {
        format!("{scope}-")
    };
    let bucket = format!("rate-limit-{scope}{}", x.stored_id);
    let generation = s.last_updated.as_str();
    let rate = Rate {
        rate: limit.rate,
        per: limit.per,
    };
    let mut retries = limit.throttle_retry_limit.max(0);
    loop {
        let d = match x.gw.counters.rate(&bucket, generation, rate, now_ms()) {
            Ok(Some(d)) => d,
            Ok(None) => return Flow::Continue,
            Err(e) => return counters_down(x, &e),
        };
        let headers = (x.gw.config.rate_limit_headers == RateLimitHeaders::RateLimits)
            .then(|| rate_headers(&d));
        if d.allowed {
            for (n, v) in headers.into_iter().flatten() {
                x.response_headers.set(n, v);
            }
            return Flow::Continue;
        }
        if retries > 0 && limit.throttle_interval > 0.0 {
            if x.nonblocking {
                return Flow::Defer;
            }
            retries -= 1;
            std::thread::sleep(Duration::from_secs_f64(limit.throttle_interval.min(60.0)));
            continue;
        }
        let Flow::Respond(mut res) = x.reject(429, "Rate Limit Exceeded") else {
            unreachable!()
        };
        res.tally.flag = Some(Flag::Rlt);
        for (n, v) in headers.into_iter().flatten() {
            res.headers.set(n, v);
        }
        return Flow::Respond(res);
    }
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

fn check_quota(x: &mut Exchange<'_>, limit: &Limit, scope: &str) -> Flow {
    let quotas_mode = x.gw.config.rate_limit_headers == RateLimitHeaders::Quotas;
    let (max, mut remaining, mut renews) =
        (limit.quota_max, limit.quota_remaining, limit.quota_renews);
    if !x.api.def.disable_quota && max > 0 {
        let name = counter_name(scope, &x.stored_id);
        let counted =
            x.gw.counters
                .quota(&name, &x.stored_id, max, limit.quota_renewal_rate, x.now);
        let d = match counted {
            Ok(d) => d,
            Err(e) => return counters_down(x, &e),
        };
        if !d.allowed {
            return flagged(x.reject(403, "Quota exceeded"), Flag::Qex);
        }
        remaining = d.remaining;
        if d.renews != 0 {
            renews = d.renews;
        }
    }
    if quotas_mode {
        let h = &mut x.response_headers;
        h.set("X-RateLimit-Limit", max.to_string());
        h.set("X-RateLimit-Remaining", remaining.to_string());
        h.set("X-RateLimit-Reset", renews.to_string());
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

/// `global_rate_limit`: one bucket per API, keyless APIs included.
pub fn api_rate(x: &mut Exchange<'_>) -> Flow {
    let def = &x.api.def;
    if def.disable_rate_limit {
        return Flow::Continue;
    }
    // An endpoint with its own limit counts in its own bucket instead of
    // the API's (Tyk's RateLimitForAPI).
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
    let (bucket, rate) = match endpoint {
        Some(found) => found,
        None if g.disabled || g.rate <= 0.0 => return Flow::Continue,
        None => (
            api_limiter(x, ""),
            Rate {
                rate: g.rate,
                per: g.per,
            },
        ),
    };
    // Shared counters wait on the network: never on the event loop.
    if x.nonblocking && x.gw.counters.remote() {
        return Flow::Defer;
    }
    match x.gw.counters.rate(&bucket, "", rate, now_ms()) {
        Ok(Some(d)) if !d.allowed => flagged(x.reject(429, "API Rate Limit Exceeded"), Flag::Rlt),
        Ok(_) => Flow::Continue,
        Err(e) => counters_down(x, &e),
    }
}
