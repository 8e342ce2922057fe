//! Issue 3: rate limits and quotas (CONTRACT §5), exact under concurrency
//! and across restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Gateway, Upstream, api_def, keyless_api, request, session_for};

const BODY_RATE: &str = "{\n    \"error\": \"Rate Limit Exceeded\"\n}";
const BODY_QUOTA: &str = "{\n    \"error\": \"Quota exceeded\"\n}";

fn gateway(conf: Value, up: &Upstream) -> Gateway {
    Gateway::start(
        conf,
        &[("limited", api_def("limited", "/limited/", &up.url("/")))],
    )
}

fn session(rate: f64, per: f64, quota_max: i64) -> Value {
    let mut s = session_for(&["limited"]);
    s["rate"] = json!(rate);
    s["per"] = json!(per);
    s["quota_max"] = json!(quota_max);
    s["quota_renewal_rate"] = json!(3600);
    s
}

fn statuses(gw: &Gateway, key: &str, n: usize) -> Vec<u16> {
    (0..n)
        .map(|_| gw.get_with_key("/limited/x", key).status)
        .collect()
}

#[test]
fn rate_limit_allows_rate_requests_then_429() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(3.0, 60.0, -1));
    assert_eq!(statuses(&gw, &key, 3), [200, 200, 200]);
    let r = gw.get_with_key("/limited/x", &key);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), BODY_RATE);
    assert_eq!(
        up.hits(),
        3,
        "a rate-limited request never reaches the upstream"
    );
}

#[test]
fn rate_window_reopens_after_per_seconds() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1.0, 1.0, -1));
    assert_eq!(statuses(&gw, &key, 2), [200, 429]);
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(statuses(&gw, &key, 1), [200]);
}

#[test]
fn quota_exhausted_returns_403_with_tyk_body() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1000.0, 1.0, 3));
    let remaining: Vec<String> = (0..3)
        .map(|_| {
            let r = gw.get_with_key("/limited/x", &key);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("X-RateLimit-Limit"), Some("3"));
            r.header("X-RateLimit-Remaining").unwrap().to_string()
        })
        .collect();
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = gw.get_with_key("/limited/x", &key);
    assert_eq!(r.status, 403);
    assert_eq!(r.text(), BODY_QUOTA);
    assert!(
        r.header("X-RateLimit-Limit").is_none(),
        "no quota headers on 403"
    );
}

#[test]
fn quota_headers_carry_renewal_time() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1000.0, 1.0, 5));
    let before = crate::support::now();
    let r = gw.get_with_key("/limited/x", &key);
    let reset: i64 = r.header("X-RateLimit-Reset").unwrap().parse().unwrap();
    assert!(
        (before + 3600..=before + 3602).contains(&reset),
        "reset {reset}"
    );
}

#[test]
fn unlimited_quota_headers_show_stored_values() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1000.0, 1.0, -1));
    let r = gw.get_with_key("/limited/x", &key);
    assert_eq!(r.header("X-RateLimit-Limit"), Some("-1"));
    assert_eq!(r.header("X-RateLimit-Remaining"), Some("-1"));
}

#[test]
fn keyless_api_has_zero_quota_headers() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    let r = request(gw.port(), "GET", "/open/x", &[], None);
    assert_eq!(r.status, 200);
    let h: Vec<_> = [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ]
    .iter()
    .map(|n| r.header(n))
    .collect();
    assert_eq!(h, [Some("0"), Some("0"), Some("0")]);
}

/// 64 threads, each sending `per_thread` requests on its own connections.
fn hammer(gw: &Gateway, key: &str, threads: usize, per_thread: usize) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let port = gw.port();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (ok, refused, key) = (ok.clone(), refused.clone(), key.to_string());
            thread::spawn(move || {
                for _ in 0..per_thread {
                    match request(port, "GET", "/limited/x", &[("Authorization", &key)], None)
                        .status
                    {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        _ => refused.fetch_add(1, Ordering::SeqCst),
                    };
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    (ok.load(Ordering::SeqCst), refused.load(Ordering::SeqCst))
}

#[test]
fn concurrent_quota_allows_exactly_quota_max() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    for _ in 0..3 {
        let key = gw.create_key(session(1_000_000.0, 1.0, 50));
        let (ok, refused) = hammer(&gw, &key, 64, 2);
        assert_eq!((ok, refused), (50, 78));
    }
}

#[test]
fn concurrent_rate_allows_exactly_rate_per_window() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    for _ in 0..3 {
        let key = gw.create_key(session(40.0, 600.0, -1));
        let (ok, refused) = hammer(&gw, &key, 64, 2);
        assert_eq!((ok, refused), (40, 88));
    }
}

fn remaining_on_key(gw: &Gateway, key: &str) -> i64 {
    let r = gw.admin("GET", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["quota_remaining"].as_i64().unwrap()
}

#[test]
fn get_key_shows_live_quota_remaining() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1000.0, 1.0, 10));
    statuses(&gw, &key, 4);
    assert_eq!(remaining_on_key(&gw, &key), 6);
}

#[test]
fn quota_continues_after_clean_restart() {
    let up = Upstream::start();
    let mut gw = gateway(json!({}), &up);
    let key = gw.create_key(session(1000.0, 1.0, 10));
    statuses(&gw, &key, 5);
    assert!(gw.stop().success());
    gw.restart();
    assert_eq!(remaining_on_key(&gw, &key), 5);
    let r = gw.get_with_key("/limited/x", &key);
    assert_eq!(r.header("X-RateLimit-Remaining"), Some("4"));
}

#[test]
fn quota_loss_after_kill9_is_at_most_one_persist_interval() {
    let up = Upstream::start();
    let mut gw = gateway(json!({"quota_persist_interval": 200}), &up);
    let key = gw.create_key(session(1000.0, 1.0, 100));
    statuses(&gw, &key, 5);
    // Wait past several intervals: these five are on disk.
    thread::sleep(Duration::from_millis(700));
    let started = Instant::now();
    statuses(&gw, &key, 3);
    gw.kill9();
    let unpersisted_window = started.elapsed();
    gw.restart();
    let remaining = remaining_on_key(&gw, &key);
    assert!(
        (92..=95).contains(&remaining),
        "remaining {remaining} after kill -9 ({unpersisted_window:?})"
    );
}

#[test]
fn delete_resets_the_quota_counter() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let s = session(1000.0, 1.0, 2);
    // suppress_reset=1 on the re-create: only the delete can have reset it.
    let create = || {
        let r = gw.admin(
            "POST",
            "/tyk/keys/custom-key-1?suppress_reset=1",
            Some(s.clone()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["key"].as_str().unwrap().to_string()
    };
    let key = create();
    assert_eq!(statuses(&gw, &key, 3), [200, 200, 403]);
    assert_eq!(
        gw.admin("DELETE", &format!("/tyk/keys/{key}"), None).status,
        200
    );
    let again = create();
    assert_eq!(again, key);
    assert_eq!(statuses(&gw, &again, 2), [200, 200]);
}

#[test]
fn admin_write_resets_quota_unless_suppress_reset() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let s = session(1000.0, 1.0, 2);
    let key = gw.create_key(s.clone());
    assert_eq!(statuses(&gw, &key, 3), [200, 200, 403]);
    let kept = gw.admin(
        "PUT",
        &format!("/tyk/keys/{key}?suppress_reset=1"),
        Some(s.clone()),
    );
    assert_eq!(kept.status, 200, "{}", kept.text());
    assert_eq!(statuses(&gw, &key, 1), [403]);
    let reset = gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(s));
    assert_eq!(reset.status, 200);
    assert_eq!(statuses(&gw, &key, 1), [200]);
}

#[test]
fn per_api_limit_uses_its_own_counter() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let mut s = session(1000.0, 1.0, 100);
    s["access_rights"]["limited"]["limit"] =
        json!({"rate": 1000, "per": 1, "quota_max": 2, "quota_renewal_rate": 3600});
    let key = gw.create_key(s);
    let r = gw.get_with_key("/limited/x", &key);
    assert_eq!(r.header("X-RateLimit-Limit"), Some("2"));
    assert_eq!(statuses(&gw, &key, 2), [200, 403]);
    let got = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert_eq!(
        got["access_rights"]["limited"]["limit"]["quota_remaining"],
        json!(0)
    );
}

#[test]
fn disable_quota_and_disable_rate_limit_skip_the_checks() {
    let up = Upstream::start();
    let mut def = api_def("limited", "/limited/", &up.url("/"));
    def["disable_quota"] = json!(true);
    def["disable_rate_limit"] = json!(true);
    let gw = Gateway::start(json!({}), &[("limited", def)]);
    let key = gw.create_key(session(1.0, 60.0, 1));
    assert_eq!(statuses(&gw, &key, 4), [200, 200, 200, 200]);
}

#[test]
fn global_rate_limit_applies_to_keyless_apis() {
    let up = Upstream::start();
    let mut def = keyless_api("open", "/open/", &up.url("/"));
    def["global_rate_limit"] = json!({"rate": 2, "per": 60});
    let gw = Gateway::start(json!({}), &[("open", def)]);
    let codes: Vec<u16> = (0..3)
        .map(|_| request(gw.port(), "GET", "/open/x", &[], None).status)
        .collect();
    assert_eq!(codes, [200, 200, 429]);
    let r = request(gw.port(), "GET", "/open/x", &[], None);
    assert_eq!(r.text(), "{\n    \"error\": \"API Rate Limit Exceeded\"\n}");
}

#[test]
fn rate_limits_header_mode_reports_the_window() {
    let up = Upstream::start();
    let gw = gateway(json!({"rate_limit_response_headers": "rate_limits"}), &up);
    let key = gw.create_key(session(2.0, 60.0, -1));
    let first = gw.get_with_key("/limited/x", &key);
    assert_eq!(first.header("X-RateLimit-Limit"), Some("2"));
    assert_eq!(first.header("X-RateLimit-Remaining"), Some("1"));
    gw.get_with_key("/limited/x", &key);
    let refused = gw.get_with_key("/limited/x", &key);
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("X-RateLimit-Remaining"), Some("0"));
    let reset: i64 = refused
        .header("X-RateLimit-Reset")
        .unwrap()
        .parse()
        .unwrap();
    assert!(reset > crate::support::now() && reset <= crate::support::now() + 61);
}

#[test]
fn throttling_retries_a_rate_limited_request() {
    let up = Upstream::start();
    let gw = gateway(json!({}), &up);
    let mut s = session(1.0, 1.0, -1);
    s["throttle_interval"] = json!(1);
    s["throttle_retry_limit"] = json!(3);
    let key = gw.create_key(s);
    let started = Instant::now();
    assert_eq!(statuses(&gw, &key, 2), [200, 200]);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the second request waited for a window"
    );
}

/// Issue 13: every event loop counts into the same limits. `request` opens
/// a connection per request, and connections are dealt round robin, so
/// each key's requests arrive on all four loops at once.
#[test]
fn quota_and_rate_stay_exact_over_four_event_loops() {
    let up = Upstream::start();
    let gw = gateway(json!({"gatehouse": {"event_loops": 4}}), &up);
    assert!(gw.saw_log("4 event loops"), "{:?}", gw.logs());
    for _ in 0..2 {
        let key = gw.create_key(session(1_000_000.0, 1.0, 50));
        assert_eq!(hammer(&gw, &key, 64, 2), (50, 78), "quota");
        let key = gw.create_key(session(40.0, 600.0, -1));
        assert_eq!(hammer(&gw, &key, 64, 2), (40, 88), "rate");
    }
}
