//! Issue 10, items 3 and 4: CORS with rs/cors's rules as Tyk uses them
//! (preflights answered 204 before auth, headers on every answer,
//! `options_passthrough`) and IP allow and deny lists with CIDRs (403
//! "access from this IP has been disallowed"), where the client address
//! is the socket peer unless a trusted proxy names it. Then the tries to
//! get around them: a forged `X-Forwarded-For`, an origin that only looks
//! allowed, headers out of the browser's order.

use serde_json::{Value, json};

use crate::support::*;

const IP_DENIED: &str = "access from this IP has been disallowed";

fn api(up: &Upstream, extra: Value) -> Value {
    let mut d = api_def("cl", "/cl/", &up.url("/"));
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

fn cors_api(up: &Upstream, cors: Value) -> Value {
    let mut c = json!({"enable": true});
    for (k, v) in cors.as_object().unwrap() {
        c[k] = v.clone();
    }
    api(up, json!({ "CORS": c }))
}

fn preflight(gw: &Gateway, origin: &str, method: &str, headers: Option<&str>) -> Resp {
    let mut h = vec![
        ("Origin", origin),
        ("Access-Control-Request-Method", method),
    ];
    if let Some(v) = headers {
        h.push(("Access-Control-Request-Headers", v));
    }
    request(gw.port(), "OPTIONS", "/cl/x", &h, None)
}

#[test]
fn a_preflight_is_answered_before_auth() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[(
            "cl",
            cors_api(
                &up,
                json!({"allowed_origins": ["https://app.example"], "allowed_methods": ["GET", "PUT"],
                       "allowed_headers": ["Authorization", "Content-Type"], "max_age": 300, "allow_credentials": true}),
            ),
        )],
    );
    let r = preflight(
        &gw,
        "https://app.example",
        "PUT",
        Some("authorization,content-type"),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.text(), "");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(r.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("authorization,content-type")
    );
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(r.header("access-control-max-age"), Some("300"));
    // Refused preflights still get 204, without the allow headers.
    for (origin, method, headers) in [
        ("https://app.example.evil", "PUT", None),
        ("https://evil.example", "GET", None),
        ("https://app.example", "DELETE", None),
        (
            "https://app.example",
            "PUT",
            Some("content-type,authorization"),
        ),
        ("https://app.example", "PUT", Some("x-other")),
    ] {
        let r = preflight(&gw, origin, method, headers);
        assert_eq!(r.status, 204);
        assert_eq!(
            r.header("access-control-allow-origin"),
            None,
            "{origin} {method} {headers:?}"
        );
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn a_preflight_passes_endpoint_lists_that_would_forbid_the_path() {
    let up = Upstream::start();
    let mut def = cors_api(&up, json!({}));
    def["version_data"]["versions"]["Default"]["use_extended_paths"] = json!(true);
    def["version_data"]["versions"]["Default"]["extended_paths"] =
        json!({"white_list": [{"path": "/only", "method": "GET"}]});
    let gw = Gateway::start(json!({}), &[("cl", def)]);
    let r = preflight(&gw, "https://app.example", "GET", None);
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let r = gw.get("/cl/x", &[("Origin", "https://app.example")]);
    assert_proxy_error(&r, 403, "Requested endpoint is forbidden");
}

#[test]
fn actual_requests_and_their_errors_carry_cors_headers() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("cl", cors_api(&up, json!({"exposed_headers": ["x-total"]})))],
    );
    let key = gw.create_key(session_for(&["cl"]));
    let r = gw.get(
        "/cl/x",
        &[("Origin", "https://any.example"), ("Authorization", &key)],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("access-control-expose-headers"), Some("X-Total"));
    assert_eq!(r.header("vary"), Some("Origin"));
    // An auth error is answered with them too, so the browser can read it.
    let r = gw.get("/cl/x", &[("Origin", "https://any.example")]);
    assert_proxy_error(&r, 401, "Authorization field missing");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    // A plain OPTIONS (no preflight): 200, empty, as Tyk.
    let r = request(
        gw.port(),
        "OPTIONS",
        "/cl/x",
        &[("Origin", "https://a")],
        None,
    );
    assert_eq!((r.status, r.text()), (200, String::new()));
    assert_eq!(up.hits(), 1);
}

#[test]
fn options_passthrough_sends_every_options_upstream_without_auth() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("cl", cors_api(&up, json!({"options_passthrough": true})))],
    );
    let r = preflight(&gw, "https://app.example", "GET", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().unwrap().method, "OPTIONS");
    // Anything but OPTIONS still needs a key.
    assert_proxy_error(&gw.get("/cl/x", &[]), 401, "Authorization field missing");
}

#[test]
fn ip_allow_lists_take_addresses_and_ranges() {
    let up = Upstream::start();
    let allow = |ips: Value| {
        Gateway::start(
            json!({}),
            &[(
                "cl",
                api(
                    &up,
                    json!({"use_keyless": true, "enable_ip_whitelisting": true, "allowed_ips": ips}),
                ),
            )],
        )
    };
    let gw = allow(json!(["10.0.0.0/8", "127.0.0.0/8"]));
    assert_eq!(gw.get("/cl/x", &[]).status, 200);
    let gw = allow(json!(["10.0.0.0/8", "::1"]));
    assert_proxy_error(&gw.get("/cl/x", &[]), 403, IP_DENIED);
    // A client cannot name its own address.
    let r = gw.get(
        "/cl/x",
        &[("X-Forwarded-For", "10.0.0.1"), ("X-Real-IP", "10.0.0.1")],
    );
    assert_proxy_error(&r, 403, IP_DENIED);
    let gw = allow(json!(["127.0.0.1"]));
    assert_eq!(gw.get("/cl/x", &[]).status, 200);
}

#[test]
fn ip_deny_lists_refuse_before_auth() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[(
            "cl",
            api(
                &up,
                json!({"enable_ip_blacklisting": true, "blacklisted_ips": ["127.0.0.0/24"]}),
            ),
        )],
    );
    assert_proxy_error(&gw.get("/cl/x", &[]), 403, IP_DENIED);
    // Tyk: a list applies without its flag unless ip_access_control_disabled.
    let gw = Gateway::start(
        json!({}),
        &[(
            "cl",
            api(
                &up,
                json!({"use_keyless": true, "blacklisted_ips": ["127.0.0.1"]}),
            ),
        )],
    );
    assert_proxy_error(&gw.get("/cl/x", &[]), 403, IP_DENIED);
    let gw = Gateway::start(
        json!({}),
        &[(
            "cl",
            api(
                &up,
                json!({"use_keyless": true, "blacklisted_ips": ["127.0.0.1"], "ip_access_control_disabled": true}),
            ),
        )],
    );
    assert_eq!(gw.get("/cl/x", &[]).status, 200);
}

#[test]
fn a_trusted_proxy_names_the_client() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({"gatehouse": {"trusted_proxies": ["127.0.0.1"]}}),
        &[(
            "cl",
            api(
                &up,
                json!({"use_keyless": true, "blacklisted_ips": ["203.0.113.0/24"]}),
            ),
        )],
    );
    assert_eq!(gw.get("/cl/x", &[]).status, 200);
    let r = gw.get("/cl/x", &[("X-Forwarded-For", "198.51.100.1, 203.0.113.9")]);
    assert_proxy_error(&r, 403, IP_DENIED);
    // The nearest untrusted address counts, not the leftmost.
    let r = gw.get("/cl/x", &[("X-Forwarded-For", "203.0.113.9, 198.51.100.1")]);
    assert_eq!(r.status, 200);
}

#[test]
fn a_bad_ip_entry_skips_the_api_naming_it() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[(
            "cl",
            api(&up, json!({"blacklisted_ips": ["10.0.0.1", "10.0.0.0/40"]})),
        )],
    );
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("blacklisted_ips[1]")),
        "{}",
        gw.logs().join("\n")
    );
    assert_eq!(gw.get("/cl/x", &[]).status, 404);
}
