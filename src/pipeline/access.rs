//! What a found key may do: expiry and `is_inactive` (KeyExpired), access
//! rights to the API and its version (AccessRights), and the quota headers
//! a proxied response carries. Counting quotas is not done here yet.

use crate::config::RateLimitHeaders;

use super::{Exchange, Flow};

pub fn key_expired(x: &mut Exchange<'_>) -> Flow {
    let Some(s) = &x.session else {
        return Flow::Continue;
    };
    if s.is_inactive {
        return x.reject(403, "Key is inactive, please renew");
    }
    if s.is_expired(x.now) {
        return x.reject(401, "Key has expired, please renew");
    }
    Flow::Continue
}

pub fn rights(x: &mut Exchange<'_>) -> Flow {
    let Some(s) = &x.session else {
        return Flow::Continue;
    };
    if s.access_rights.is_empty() {
        return Flow::Continue;
    }
    let Some(access) = s.access_rights.get(x.api.id()) else {
        return x.reject(403, "Access to this API has been disallowed");
    };
    if !x.api.versioning.not_versioned {
        let version = x.version.as_deref().unwrap_or_default();
        if !access.versions.iter().any(|v| v == version) {
            return x.reject(403, "Access to this API has been disallowed");
        }
    }
    Flow::Continue
}

/// `X-RateLimit-*` with quota values (`rate_limit_response_headers: quotas`).
pub fn quota_headers(x: &mut Exchange<'_>) -> Flow {
    if x.gw.config.rate_limit_headers != RateLimitHeaders::Quotas {
        return Flow::Continue;
    }
    let (limit, remaining, reset) = match &x.session {
        Some(s) => {
            let l = s.limit_for(x.api.id());
            (l.quota_max, l.quota_remaining, l.quota_renews)
        }
        None => (0, 0, 0),
    };
    let h = &mut x.response_headers;
    h.set("X-RateLimit-Limit", limit.to_string());
    h.set("X-RateLimit-Remaining", remaining.to_string());
    h.set("X-RateLimit-Reset", reset.to_string());
    Flow::Continue
}
