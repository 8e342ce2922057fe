//! Issue 10, item 2: what an API version changes in requests and responses
//! (CONTRACT §3.5 step 7, §6): global and per-endpoint header transforms
//! both ways with `$tyk_meta` / `$tyk_context` values, URL rewrites,
//! method transforms, hard timeouts and size limits, with Tyk's statuses
//! and messages. Then the tries to get around them: header injection
//! through a variable, a forbidden method, a body without a length.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::*;

/// Keyed API `tx` on `/tx/`; `version` is merged into its Default version.
fn api(up: &Upstream, version: Value) -> Value {
    let mut d = api_def("tx", "/tx/", &up.url("/base"));
    let v = &mut d["version_data"]["versions"]["Default"];
    v["use_extended_paths"] = json!(true);
    for (k, val) in version.as_object().unwrap() {
        v[k] = val.clone();
    }
    d
}

/// A gateway with `def` and a key whose meta data holds `user` and `tier`.
fn start(def: Value) -> (Gateway, String) {
    let gw = Gateway::start(json!({}), &[("tx", def)]);
    let mut s = session_for(&["tx"]);
    s["meta_data"] = json!({"user": "ann", "tier": 3, "evil": "x\r\nX-Injected: 1"});
    let key = gw.create_key(s);
    (gw, key)
}

fn send(gw: &Gateway, method: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("Authorization", key)];
    headers.extend_from_slice(extra);
    request(gw.port(), method, path, &headers, None)
}

#[test]
fn request_headers_are_removed_then_added_globally_then_per_endpoint() {
    let up = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({
            "global_headers": {"X-Global": "g", "X-User": "$tyk_meta.user", "X-Tier": "t$tyk_meta.tier"},
            "global_headers_remove": ["X-Secret"],
            "extended_paths": {"transform_headers": [
                {"path": "/users", "method": "GET", "delete_headers": ["X-Global"],
                 "add_headers": {"X-Endpoint": "yes", "X-Missing": "[$tyk_meta.nope]", "X-Evil": "$tyk_meta.evil"}},
                {"path": "/any", "method": "", "add_headers": {"X-Never": "1"}}
            ]}
        }),
    ));
    let r = send(
        &gw,
        "GET",
        "/tx/users/1",
        &key,
        &[("X-Secret", "s"), ("X-Global", "client")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-secret"), None);
    assert_eq!(
        seen.header("x-global"),
        None,
        "the endpoint deletes it after the global add"
    );
    assert_eq!(seen.header("x-user"), Some("ann"));
    assert_eq!(seen.header("x-tier"), Some("t3"));
    assert_eq!(seen.header("x-endpoint"), Some("yes"));
    assert_eq!(seen.header("x-missing"), Some("[]"));
    // A CR LF in a variable never splits the request.
    assert_eq!(seen.header("x-evil"), Some("xX-Injected: 1"));
    assert_eq!(seen.header("x-injected"), None);
    // Another method: only the global headers.
    send(&gw, "POST", "/tx/users/1", &key, &[]);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-global"), Some("g"));
    assert_eq!(seen.header("x-endpoint"), None);
    // An entry with no method never applies (as Tyk).
    send(&gw, "GET", "/tx/any", &key, &[]);
    assert_eq!(up.last_request().unwrap().header("x-never"), None);
}

#[test]
fn context_variables_need_enable_context_vars() {
    let up = Upstream::start();
    let version = json!({"global_headers": {"X-Came-From": "$tyk_context.headers_X_Client|$tyk_context.path"}});
    let (gw, key) = start(api(&up, version.clone()));
    send(&gw, "GET", "/tx/a", &key, &[("X-Client", "c1")]);
    assert_eq!(up.last_request().unwrap().header("x-came-from"), Some("|"));
    let mut def = api(&up, version);
    def["enable_context_vars"] = json!(true);
    let (gw, key) = start(def);
    send(&gw, "GET", "/tx/a", &key, &[("X-Client", "c1")]);
    assert_eq!(
        up.last_request().unwrap().header("x-came-from"),
        Some("c1|/tx/a")
    );
}

#[test]
fn response_headers_are_changed_per_endpoint_then_globally() {
    let up = Upstream::with_handler(|_| {
        UpResp::new(200, "ok")
            .header("X-Upstream", "u")
            .header("Server", "internal/1.0")
    });
    let (gw, key) = start(api(
        &up,
        json!({
            "global_response_headers": {"X-Served-By": "gatehouse", "X-Who": "$tyk_meta.user"},
            "global_response_headers_remove": ["Server"],
            "extended_paths": {"transform_response_headers": [
                {"path": "/users", "method": "GET", "delete_headers": ["X-Upstream"], "add_headers": {"X-Users": "1"}}
            ]}
        }),
    ));
    let r = send(&gw, "GET", "/tx/users", &key, &[]);
    assert_eq!(r.header("server"), None);
    assert_eq!(r.header("x-served-by"), Some("gatehouse"));
    assert_eq!(r.header("x-who"), Some("ann"));
    assert_eq!(r.header("x-users"), Some("1"));
    assert_eq!(r.header("x-upstream"), None);
    let r = send(&gw, "GET", "/tx/other", &key, &[]);
    assert_eq!(r.header("x-upstream"), Some("u"));
    assert_eq!(r.header("x-users"), None);
}

#[test]
fn a_header_transform_can_drop_x_forwarded_for() {
    let up = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({"global_headers_remove": ["x-forwarded-for"]}),
    ));
    send(&gw, "GET", "/tx/a", &key, &[("X-Forwarded-For", "1.2.3.4")]);
    assert_eq!(up.last_request().unwrap().header("x-forwarded-for"), None);
}

#[test]
fn url_rewrites_use_groups_and_keep_the_target() {
    let up = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"url_rewrites": [
            {"path": "/old/", "method": "GET", "match_pattern": "/tx/old/(\\w+)\\?(.*)", "rewrite_to": "/tx/new/$1?from=old&$2"},
            {"path": "/who", "method": "GET", "match_pattern": "/who", "rewrite_to": "/users/$tyk_meta.user"}
        ]}}),
    ));
    let r = send(&gw, "GET", "/tx/old/abc?q=1", &key, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        up.last_request().unwrap().target,
        "/base/new/abc?from=old&q=1"
    );
    // No match of match_pattern: no rewrite.
    send(&gw, "GET", "/tx/old/abc", &key, &[]);
    assert_eq!(up.last_request().unwrap().target, "/base/old/abc");
    // Variables in rewrite_to; the method must match.
    send(&gw, "GET", "/tx/who", &key, &[]);
    assert_eq!(up.last_request().unwrap().target, "/base/users/ann");
    send(&gw, "POST", "/tx/who", &key, &[]);
    assert_eq!(up.last_request().unwrap().target, "/base/who");
}

#[test]
fn a_rewrite_to_an_absolute_url_changes_the_upstream() {
    let up = Upstream::start();
    let other = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"url_rewrites": [
            {"path": "/elsewhere", "method": "GET", "match_pattern": "/elsewhere/(.*)",
             "rewrite_to": format!("{}/$1", other.url("/moved"))}
        ]}}),
    ));
    let r = send(&gw, "GET", "/tx/elsewhere/x%20y", &key, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 0);
    let seen = other.last_request().unwrap();
    assert_eq!(seen.target, "/moved/x%20y");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", other.port()).as_str())
    );
}

/// A rewrite of `/flag` to `/default` whose triggers pick other targets.
fn triggered(up: &Upstream, triggers: Value) -> (Gateway, String) {
    start(api(
        up,
        json!({"extended_paths": {"url_rewrites": [
            {"path": "/flag", "method": "GET", "match_pattern": "/tx/flag(.*)",
             "rewrite_to": "/default$1", "triggers": triggers}
        ]}}),
    ))
}

#[test]
fn rewrite_triggers_on_headers_query_and_path_parts_pick_the_target() {
    let up = Upstream::start();
    let (gw, key) = triggered(
        &up,
        json!([
            {"on": "all", "rewrite_to": "/beta/$tyk_context.trigger-0-X-Beta-0-0",
             "options": {"header_matches": {"x-beta": {"match_rx": "^on-(\\w+)$"}},
                         "query_val_matches": {"plan": {"match_rx": "^(pro|team)$"}}}},
            {"on": "any", "rewrite_to": "/by-query/$tyk_context.trigger-1-plan-0",
             "options": {"query_val_matches": {"plan": {"match_rx": ".+"}},
                         "path_part_matches": {"p": {"match_rx": "^flagged$"}}}},
            {"on": "any", "rewrite_to": "/tier/$tyk_context.trigger-2-user",
             "options": {"session_meta_matches": {"user": {"match_rx": "^ann$"}}}}
        ]),
    );
    let target = |path: &str, extra: &[(&str, &str)]| {
        let r = send(&gw, "GET", path, &key, extra);
        assert_eq!(r.status, 200, "{}", r.text());
        up.last_request().unwrap().target
    };
    // Header and query both match: the first trigger, with a header group.
    assert_eq!(
        target("/tx/flag?plan=pro", &[("X-BETA", "on-x1")]),
        "/base/beta/x1"
    );
    // The header alone is not `all`: the second trigger takes the query.
    assert_eq!(
        target("/tx/flag?plan=free", &[("X-Beta", "on-x1")]),
        "/base/by-query/free"
    );
    // A header of another name, or a value that misses, does not count.
    assert_eq!(
        target("/tx/flag?plan=pro", &[("X-Betaa", "on-x1")]),
        "/base/by-query/pro"
    );
    // A path part, matched whole.
    assert_eq!(target("/tx/flag/x/flagged", &[]), "/base/by-query/");
    assert_eq!(target("/tx/flag/x/unflagged", &[]), "/base/tier/ann");
    // No trigger for another key's session: the entry's own rewrite_to.
    let other = gw.create_key(session_for(&["tx"]));
    let r = send(&gw, "GET", "/tx/flag/z", &other, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().unwrap().target, "/base/default/z");
}

#[test]
fn reverse_triggers_need_the_value_present_and_escape_what_they_capture() {
    let up = Upstream::start();
    let (gw, key) = triggered(
        &up,
        json!([
            {"on": "any", "rewrite_to": "/guest",
             "options": {"header_matches": {"X-Role": {"match_rx": "^admin$", "reverse": true}}}},
            {"on": "any", "rewrite_to": "/echo?v=$tyk_context.trigger-1-X-Val-0",
             "options": {"header_matches": {"X-Val": {"match_rx": ".+"}}}}
        ]),
    );
    send(&gw, "GET", "/tx/flag", &key, &[]);
    assert_eq!(up.last_request().unwrap().target, "/base/default");
    send(&gw, "GET", "/tx/flag", &key, &[("X-Role", "admin")]);
    assert_eq!(up.last_request().unwrap().target, "/base/default");
    send(&gw, "GET", "/tx/flag", &key, &[("X-Role", "Admin")]);
    assert_eq!(up.last_request().unwrap().target, "/base/guest");
    // A captured value cannot add path segments or query parameters.
    send(
        &gw,
        "GET",
        "/tx/flag",
        &key,
        &[("X-Val", "a b&admin=1/../x")],
    );
    assert_eq!(
        up.last_request().unwrap().target,
        "/base/echo?v=a+b%26admin%3D1%2F..%2Fx"
    );
}

#[test]
fn bad_rewrite_triggers_are_refused_at_load_naming_the_field() {
    let up = Upstream::start();
    let bad = |triggers: Value| {
        api(
            &up,
            json!({"extended_paths": {"url_rewrites": [
                {"path": "/a", "method": "GET", "match_pattern": "/a", "rewrite_to": "/b", "triggers": triggers}
            ]}}),
        )
    };
    let mut good = api(&up, json!({}));
    good["api_id"] = json!("ok");
    good["proxy"]["listen_path"] = json!("/ok/");
    let gw = Gateway::start(
        json!({}),
        &[
            ("typo", bad(json!([{"on": "Any", "rewrite_to": "/c"}]))),
            (
                "regex",
                bad(json!([{"on": "any", "rewrite_to": "/c",
                    "options": {"query_val_matches": {"q": {"match_rx": "("}}}}])),
            ),
            (
                "payload",
                bad(json!([{"on": "any", "rewrite_to": "/c",
                    "options": {"payload_matches": {"match_rx": "x"}}}])),
            ),
            ("ok", good),
        ],
    );
    let at = "version_data.versions.Default.extended_paths.url_rewrites[0].triggers[0]";
    for field in [
        format!("{at}.on"),
        format!("{at}.options.query_val_matches.q.match_rx"),
        format!("{at}.options.payload_matches"),
    ] {
        assert!(
            gw.logs()
                .iter()
                .any(|l| l.contains("ERROR") && l.contains(&field)),
            "{field}: {}",
            gw.logs().join("\n")
        );
    }
    assert_eq!(gw.get("/tx/a", &[]).status, 404);
    let key = gw.create_key(session_for(&["ok"]));
    assert_eq!(send(&gw, "GET", "/ok/a", &key, &[]).status, 200);
}

#[test]
fn method_transforms_change_the_method_within_tyks_list() {
    let up = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"method_transforms": [
            {"path": "/to-post", "method": "GET", "to_method": "post"},
            {"path": "/to-head", "method": "GET", "to_method": "HEAD"}
        ]}}),
    ));
    assert_eq!(send(&gw, "GET", "/tx/to-post", &key, &[]).status, 200);
    assert_eq!(up.last_request().unwrap().method, "POST");
    assert_proxy_error(
        &send(&gw, "GET", "/tx/to-head", &key, &[]),
        405,
        "Method not allowed",
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn a_hard_timeout_answers_504_on_its_endpoint_only() {
    let up = Upstream::with_handler(|req| {
        if req.path.contains("slow") {
            std::thread::sleep(Duration::from_millis(2500));
        }
        UpResp::new(200, "ok")
    });
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"hard_timeouts": [{"path": "/slow", "method": "GET", "timeout": 1}]}}),
    ));
    let t = Instant::now();
    let r = send(&gw, "GET", "/tx/slow", &key, &[]);
    assert_proxy_error(&r, 504, "Upstream service reached hard timeout.");
    assert!(
        t.elapsed() < Duration::from_millis(2300),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(send(&gw, "GET", "/tx/fast", &key, &[]).status, 200);
}

#[test]
fn size_limits_need_a_length_and_refuse_large_bodies() {
    let up = Upstream::start();
    let (gw, key) = start(api(
        &up,
        json!({
            "global_size_limit": 100,
            "extended_paths": {"size_limits": [{"path": "/small", "method": "POST", "size_limit": 10}]}
        }),
    ));
    let post = |path: &str, body: &[u8], extra: &[(&str, &str)]| {
        let mut headers = vec![("Authorization", key.as_str())];
        headers.extend_from_slice(extra);
        request(gw.port(), "POST", path, &headers, Some(body))
    };
    assert_eq!(post("/tx/small", b"0123456789", &[]).status, 200);
    assert_proxy_error(
        &post("/tx/small", b"0123456789!", &[]),
        400,
        "Request is too large",
    );
    assert_eq!(post("/tx/big", &[b'x'; 100], &[]).status, 200);
    assert_proxy_error(
        &post("/tx/big", &[b'x'; 101], &[]),
        400,
        "Request is too large",
    );
    let chunked = post(
        "/tx/big",
        b"1\r\nx\r\n0\r\n\r\n",
        &[("Transfer-Encoding", "chunked")],
    );
    assert_proxy_error(&chunked, 411, "Content length is required for this request");
    // Before auth, as Tyk: no key needed to be told.
    let r = request(gw.port(), "POST", "/tx/small", &[], Some(&[b'x'; 11]));
    assert_proxy_error(&r, 400, "Request is too large");
    // GET is never checked.
    let r = request(
        gw.port(),
        "GET",
        "/tx/big",
        &[("Authorization", &key)],
        Some(&[b'x'; 101]),
    );
    assert_eq!(r.status, 200);
}

/// An upstream answering 500 until `heal` is set.
fn flaky() -> (Upstream, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let healed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let h = healed.clone();
    let up = Upstream::with_handler(move |_| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            UpResp::new(200, "ok")
        } else {
            UpResp::new(500, "down")
        }
    });
    (up, healed)
}

#[test]
fn a_circuit_breaker_trips_on_failures_and_returns_to_service() {
    let (up, healed) = flaky();
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"circuit_breakers": [{"path": "/flaky", "method": "GET",
            "threshold_percent": 0.5, "samples": 4, "return_to_service_after": 2,
            "disable_half_open_state": true}]}}),
    ));
    for _ in 0..4 {
        assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 500);
    }
    let r = send(&gw, "GET", "/tx/flaky", &key, &[]);
    assert_proxy_error(&r, 503, "Service temporarily unavailable.");
    assert_eq!(up.hits(), 4, "an open breaker sends nothing upstream");
    // Other endpoints and methods are not behind it.
    assert_eq!(send(&gw, "GET", "/tx/other", &key, &[]).status, 500);
    assert_eq!(send(&gw, "POST", "/tx/flaky", &key, &[]).status, 500);
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 200);
    assert!(gw.saw_log("circuit breaker tripped"), "{:?}", gw.logs());
}

#[test]
fn a_half_open_breaker_lets_one_trial_through() {
    let (up, healed) = flaky();
    let (gw, key) = start(api(
        &up,
        json!({"extended_paths": {"circuit_breakers": [{"path": "/flaky", "method": "GET",
            "threshold_percent": 1.0, "samples": 2, "return_to_service_after": 60}]}}),
    ));
    for _ in 0..2 {
        assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 500);
    }
    assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 503);
    healed.store(true, std::sync::atomic::Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(700));
    // The trial succeeds and closes the breaker.
    assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 200);
    assert_eq!(send(&gw, "GET", "/tx/flaky", &key, &[]).status, 200);
    assert_eq!(up.hits(), 4);
}
