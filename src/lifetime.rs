//! How long a stored session lives (REDIS.md §4.2): Tyk's `Lifetime` for
//! one API, and `ApplyLifetime`, the longest over the APIs a key grants.
//!
//! Owns: the arithmetic, pure (the caller passes the time, tyk.conf's
//! settings and the APIs' values). Leaves out: writing a session with that
//! lifetime (`sessions`, `store`) and logical expiry (`expires`, checked on
//! every request by `Session::is_expired`), which is a separate thing.
//!
//! A lifetime is in seconds: > 0 the store forgets the session that long
//! after the write; 0 or less it keeps it until deleted (-1 is Tyk's
//! "never delete", which wins over any other API's lifetime).

use serde_json::Value;

use crate::apidef::ApiDefinition;
use crate::session::Session;

/// tyk.conf's settings about session lifetimes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Global {
    /// `force_global_session_lifetime`: `global_session_lifetime` for every
    /// session, whatever the key or API say.
    pub forced: Option<i64>,
    /// `session_lifetime_respects_key_expiration`, for every API.
    pub respects_key_expiration: bool,
}

/// One API's say: its `session_lifetime` (for keys without their own) and
/// `session_lifetime_respects_key_expiration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApiLifetime {
    pub session_lifetime: i64,
    pub respects_key_expiration: bool,
}

impl ApiLifetime {
    pub fn of(def: &ApiDefinition) -> ApiLifetime {
        ApiLifetime {
            session_lifetime: def.session_lifetime,
            respects_key_expiration: def.session_lifetime_respects_key_expiration,
        }
    }
}

/// Tyk's `Lifetime`: seconds the session, written for `api`, lives.
pub fn lifetime(s: &Session, api: ApiLifetime, global: &Global, now: i64) -> i64 {
    if let Some(forced) = global.forced {
        return forced;
    }
    if let Some(ttl) = post_expiry(s, now) {
        return ttl;
    }
    let own = if s.session_lifetime > 0 {
        s.session_lifetime
    } else {
        api.session_lifetime
    };
    if own <= 0 {
        return 0;
    }
    let respects = global.respects_key_expiration || api.respects_key_expiration;
    bounded_by_expiry(respects, s.expires, own, now)
}

/// Tyk's `ApplyLifetime`: the longest lifetime over `apis` (the loaded
/// APIs the key grants); -1 (never delete) wins outright; no API, 0.
pub fn longest(
    s: &Session,
    apis: impl IntoIterator<Item = ApiLifetime>,
    global: &Global,
    now: i64,
) -> i64 {
    let mut longest = 0;
    for api in apis {
        match lifetime(s, api, global, now) {
            -1 => return -1,
            l => longest = longest.max(l),
        }
    }
    longest
}

/// Tyk's `calculateLifetime`: with `respects`, a key that expires later
/// than `lifetime` lives until it expires; one that never expires (`expires`
/// 0 or less) gets that value as its lifetime, that is, none.
fn bounded_by_expiry(respects: bool, expires: i64, lifetime: i64, now: i64) -> i64 {
    if !respects || lifetime <= 0 {
        return lifetime;
    }
    if expires <= 0 {
        return expires;
    }
    if expires > now.saturating_add(lifetime) {
        expires - now
    } else {
        lifetime
    }
}

/// The newer rule (`post_expiry_action`, Tyk's `calculatePostExpiryLifetime`),
/// when the session uses it: `delete` forgets the key when it expires,
/// `retain` with a grace period that long after (-1: never). A key already
/// past its time gets 1 s; one that never expires, no lifetime.
fn post_expiry(s: &Session, now: i64) -> Option<i64> {
    let action = s
        .extra
        .get("post_expiry_action")
        .and_then(Value::as_str)
        .unwrap_or("");
    let grace = s
        .extra
        .get("post_expiry_grace_period")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let grace = match action {
        "delete" => 0,
        "retain" if grace != 0 => grace,
        _ => return None,
    };
    if s.expires <= 0 {
        return Some(0);
    }
    if grace == -1 {
        return Some(-1);
    }
    let ttl = s.expires.saturating_sub(now).saturating_add(grace);
    Some(ttl.max(1))
}

#[cfg(test)]
mod tests {
    //! Tyk's cases: `user/session_test.go` (`TestSessionState_Lifetime`,
    //! `_PostExpiry`, `Test_calculateLifetime`) and `gateway/api_test.go`
    //! (`TestApplyLifetime`, `_PostExpiry`).
    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn session(session_lifetime: i64, expires: i64) -> Session {
        Session {
            session_lifetime,
            expires,
            ..Session::default()
        }
    }

    fn post_expiry_session(action: &str, grace: i64, expires: i64) -> Session {
        let mut s = session(0, expires);
        s.extra
            .insert("post_expiry_action".into(), Value::from(action));
        s.extra
            .insert("post_expiry_grace_period".into(), Value::from(grace));
        s
    }

    /// Tyk's `Lifetime(respect, fallback, force, global)`.
    fn tyk(s: &Session, respect: bool, fallback: i64, force: bool, global: i64) -> i64 {
        let api = ApiLifetime {
            session_lifetime: fallback,
            respects_key_expiration: respect,
        };
        let global = Global {
            forced: force.then_some(global),
            respects_key_expiration: false,
        };
        lifetime(s, api, &global, NOW)
    }

    /// Tyk's `TestSessionState_Lifetime` without a forced lifetime, for a
    /// key expiring in 5 s: (the key's lifetime, the API's, respecting
    /// expiry) and the lifetime wanted.
    #[test]
    fn key_lifetime_then_api_lifetime_then_none() {
        let cases = [
            ((1, 2, false), 1),
            ((0, 2, false), 2),
            ((0, 0, false), 0),
            ((0, -1, false), 0),
            ((0, 1, false), 1),
            // Respecting expiry stretches a lifetime to the expiry.
            ((1, 2, true), 5),
            ((0, 2, true), 5),
            ((0, 0, true), 0),
            ((0, -1, true), 0),
            ((0, 6, true), 6),
            ((0, 1, true), 5),
        ];
        for ((own, api, respect), want) in cases {
            let got = tyk(&session(own, NOW + 5), respect, api, false, 3);
            assert_eq!(got, want, "own {own}, api {api}, respect {respect}");
        }
        // A key that never expires, respecting expiry: no lifetime at all.
        assert_eq!(tyk(&session(0, 0), true, 2, false, 3), 0);
    }

    #[test]
    fn tyk_conf_can_ask_for_respecting_expiry_for_every_api() {
        let global = Global {
            forced: None,
            respects_key_expiration: true,
        };
        let api = ApiLifetime {
            session_lifetime: 2,
            respects_key_expiration: false,
        };
        assert_eq!(lifetime(&session(0, NOW + 5), api, &global, NOW), 5);
    }

    #[test]
    fn a_forced_global_lifetime_overrides_everything() {
        for respect in [false, true] {
            assert_eq!(tyk(&session(1, NOW + 5), respect, 2, true, 3), 3);
            assert_eq!(tyk(&session(0, NOW + 5), respect, 2, true, 3), 3);
            assert_eq!(tyk(&session(0, NOW + 5), respect, 0, true, 3), 3);
        }
        assert_eq!(tyk(&session(0, NOW + 5), false, 1, true, 0), 0);
        let s = post_expiry_session("delete", 0, NOW + 100);
        assert_eq!(tyk(&s, false, 0, true, 42), 42);
    }

    #[test]
    fn post_expiry_actions() {
        let got = |action, grace, expires| {
            tyk(
                &post_expiry_session(action, grace, expires),
                false,
                0,
                false,
                0,
            )
        };
        assert_eq!(got("delete", 0, NOW + 100), 100);
        assert_eq!(got("delete", 0, NOW - 50), 1);
        assert_eq!(got("delete", 0, 0), 0);
        assert_eq!(got("retain", -1, NOW + 100), -1);
        assert_eq!(got("retain", -1, 0), 0);
        assert_eq!(got("retain", 200, NOW + 100), 300);
        assert_eq!(got("retain", 10, NOW - 50), 1);
        // Retain without a grace period: the older rules.
        let mut s = post_expiry_session("retain", 0, NOW + 100);
        s.session_lifetime = 60;
        assert_eq!(tyk(&s, false, 0, false, 0), 60);
        let mut s = post_expiry_session("", 0, NOW + 100);
        s.session_lifetime = 60;
        assert_eq!(tyk(&s, false, 0, false, 0), 60);
    }

    #[test]
    fn bounded_by_expiry_is_tyks_calculate_lifetime() {
        let in2 = NOW + 2;
        for (lifetime, want) in [(3, 3), (2, 2), (1, 1), (0, 0), (-1, -1)] {
            assert_eq!(bounded_by_expiry(false, in2, lifetime, NOW), want);
        }
        assert_eq!(bounded_by_expiry(false, 0, 1, NOW), 1);
        assert_eq!(bounded_by_expiry(false, -1, 1, NOW), 1);
        for (lifetime, want) in [(3, 3), (2, 2), (1, 2), (0, 0), (-1, -1)] {
            assert_eq!(bounded_by_expiry(true, in2, lifetime, NOW), want);
        }
        assert_eq!(bounded_by_expiry(true, 0, 1, NOW), 0);
        assert_eq!(bounded_by_expiry(true, -1, 1, NOW), -1);
    }

    fn api(session_lifetime: i64) -> ApiLifetime {
        ApiLifetime {
            session_lifetime,
            respects_key_expiration: false,
        }
    }

    #[test]
    fn the_admin_api_takes_the_longest_over_the_apis() {
        let g = Global::default();
        let s = session(0, 0);
        assert_eq!(longest(&s, [api(0)], &g, NOW), 0);
        assert_eq!(longest(&s, [api(0), api(1000)], &g, NOW), 1000);
        assert_eq!(longest(&s, [api(1000), api(999)], &g, NOW), 1000);
        assert_eq!(longest(&s, [], &g, NOW), 0);
    }

    #[test]
    fn the_longest_with_post_expiry_actions() {
        let g = Global::default();
        let s = post_expiry_session("delete", 0, NOW + 300);
        assert_eq!(longest(&s, [api(60)], &g, NOW), 300);
        let s = post_expiry_session("retain", -1, NOW + 300);
        assert_eq!(longest(&s, [api(60), api(5000)], &g, NOW), -1);
        let s = post_expiry_session("retain", 600, NOW + 300);
        assert_eq!(longest(&s, [api(60)], &g, NOW), 900);
        assert_eq!(longest(&session(0, 0), [api(60)], &g, NOW), 60);
    }
}
