//! Issue 10, item 1: endpoint lists (`extended_paths` `ignored`,
//! `white_list`, `black_list`, `mock_response`, `method_actions` replies,
//! legacy `paths`), as Tyk evaluates them (CONTRACT §3.5, §6): before
//! auth, first matching entry in Tyk's order, unanchored patterns unless
//! the gateway anchors them. Then the tries to get around a deny rule:
//! case, escapes, dot segments, doubled slashes, `;params`, methods.

use serde_json::{Value, json};

use crate::support::*;

const FORBIDDEN: &str = "Requested endpoint is forbidden";

/// Keyed API `ep` on `/ep/` with `extended_paths` in its Default version.
fn api(up: &Upstream, extended: Value) -> Value {
    let mut d = api_def("ep", "/ep/", &up.url("/"));
    d["version_data"]["versions"]["Default"]["use_extended_paths"] = json!(true);
    d["version_data"]["versions"]["Default"]["extended_paths"] = extended;
    d
}

fn start(conf: Value, def: Value) -> (Gateway, String) {
    let gw = Gateway::start(conf, &[("ep", def)]);
    let key = gw.create_key(session_for(&["ep"]));
    (gw, key)
}

fn send(gw: &Gateway, method: &str, path: &str, key: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = key.map(|k| ("Authorization", k)).into_iter().collect();
    request(gw.port(), method, path, &headers, None)
}

#[test]
fn a_white_list_forbids_every_other_endpoint() {
    let up = Upstream::start();
    let (gw, key) = start(
        json!({}),
        api(
            &up,
            json!({"white_list": [
                {"path": "/users/{id}", "method": "GET"},
                {"path": "/status", "method": ""}
            ]}),
        ),
    );
    let k = Some(key.as_str());
    assert_eq!(send(&gw, "GET", "/ep/users/7", k).status, 200);
    assert_eq!(send(&gw, "DELETE", "/ep/status", k).status, 200);
    assert_proxy_error(&send(&gw, "POST", "/ep/users/7", k), 403, FORBIDDEN);
    assert_proxy_error(&send(&gw, "GET", "/ep/other", k), 403, FORBIDDEN);
    assert_proxy_error(&send(&gw, "GET", "/ep/", k), 403, FORBIDDEN);
    // The list comes before auth: no key, a forbidden endpoint is still 403
    // forbidden, an allowed one asks for the key.
    assert_proxy_error(&send(&gw, "GET", "/ep/other", None), 403, FORBIDDEN);
    assert_proxy_error(
        &send(&gw, "GET", "/ep/users/7", None),
        401,
        "Authorization field missing",
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn a_black_list_entry_cannot_be_dodged_by_spelling() {
    let up = Upstream::start();
    let (gw, key) = start(
        json!({}),
        api(
            &up,
            json!({"black_list": [{"path": "/admin", "method": "", "ignore_case": true}]}),
        ),
    );
    let k = Some(key.as_str());
    for path in [
        "/ep/admin",
        "/ep/ADMIN",
        "/ep/%61dmin",
        "/ep/%41DMIN",
        "/ep//admin",
        "/ep/./admin",
        "/ep/x/../admin",
        "/ep/admin;x=1",
        "/ep/admin/",
        "/ep/admin?x=1",
        "/ep/%2Fadmin",
    ] {
        // 403 from the list, or 400 from the path rules (an escaped slash
        // is refused by default): never the upstream.
        let r = send(&gw, "GET", path, k);
        assert!(
            matches!(r.status, 400 | 403),
            "{path} got through: {} {}",
            r.status,
            r.text()
        );
    }
    // Unanchored, as Tyk: the pattern matches anywhere in the path.
    assert_eq!(send(&gw, "GET", "/ep/x/admin", k).status, 403);
    assert_eq!(send(&gw, "GET", "/ep/adm", k).status, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn case_matters_unless_an_entry_or_the_gateway_ignores_it() {
    let up = Upstream::start();
    let def = api(
        &up,
        json!({"black_list": [{"path": "/admin", "method": "GET"}]}),
    );
    let (gw, key) = start(json!({}), def.clone());
    let k = Some(key.as_str());
    assert_eq!(send(&gw, "GET", "/ep/admin", k).status, 403);
    assert_eq!(send(&gw, "GET", "/ep/Admin", k).status, 200);
    // Method-specific: another method passes.
    assert_eq!(send(&gw, "POST", "/ep/admin", k).status, 200);
    let (gw, key) = start(json!({"ignore_endpoint_case": true}), def);
    assert_eq!(send(&gw, "GET", "/ep/Admin", Some(&key)).status, 403);
}

#[test]
fn the_gateway_can_anchor_patterns_both_ways() {
    let up = Upstream::start();
    let def = api(
        &up,
        json!({"black_list": [{"path": "/admin", "method": ""}]}),
    );
    let conf = json!({"http_server_options": {
        "enable_path_prefix_matching": true,
        "enable_path_suffix_matching": true
    }});
    let (gw, key) = start(conf, def);
    let k = Some(key.as_str());
    assert_eq!(send(&gw, "GET", "/ep/admin", k).status, 403);
    assert_eq!(send(&gw, "GET", "/ep/x/admin", k).status, 200);
    assert_eq!(send(&gw, "GET", "/ep/admin/x", k).status, 200);
}

#[test]
fn ignored_endpoints_skip_auth_and_beat_the_black_list() {
    let up = Upstream::start();
    let (gw, key) = start(
        json!({}),
        api(
            &up,
            json!({
                "ignored": [{"path": "/health", "method": "GET"}],
                "black_list": [{"path": "/health", "method": ""}]
            }),
        ),
    );
    let r = send(&gw, "GET", "/ep/health", None);
    assert_eq!(r.status, 200, "{}", r.text());
    // Another method is not ignored: the black list applies.
    assert_proxy_error(&send(&gw, "POST", "/ep/health", Some(&key)), 403, FORBIDDEN);
    // Anything else still needs a key.
    assert_proxy_error(
        &send(&gw, "GET", "/ep/x", None),
        401,
        "Authorization field missing",
    );
    assert_eq!(send(&gw, "GET", "/ep/x", Some(&key)).status, 200);
}

#[test]
fn a_mock_response_answers_before_auth() {
    let up = Upstream::start();
    let (gw, key) = start(
        json!({}),
        api(
            &up,
            json!({
                "mock_response": [{"path": "/teapot", "method": "GET", "code": 418,
                    "body": "{\"short\":\"stout\"}", "headers": {"Content-Type": "application/json", "X-Mock": "yes"}}],
                "white_list": [{"path": "/x", "method": "GET"}]
            }),
        ),
    );
    let r = send(&gw, "GET", "/ep/teapot", None);
    assert_eq!(r.status, 418);
    assert_eq!(r.text(), "{\"short\":\"stout\"}");
    assert_eq!(r.header("x-mock"), Some("yes"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // A mock needs its exact method; POST falls to the white list.
    assert_proxy_error(&send(&gw, "POST", "/ep/teapot", Some(&key)), 403, FORBIDDEN);
    assert_eq!(up.hits(), 0);
}

#[test]
fn method_actions_reply_and_disabled_entries_do_nothing() {
    let up = Upstream::start();
    let (gw, key) = start(
        json!({}),
        api(
            &up,
            json!({
                "white_list": [
                    {"path": "/a", "method_actions": {
                        "GET": {"action": "no_action", "code": 200, "data": "", "headers": {}},
                        "PUT": {"action": "reply", "code": 202, "data": "queued", "headers": {"X-R": "1"}}
                    }},
                    {"path": "/b", "method": "GET", "disabled": true}
                ],
                "black_list": [{"path": "/a", "method": "GET", "disabled": true}]
            }),
        ),
    );
    let k = Some(key.as_str());
    assert_eq!(send(&gw, "GET", "/ep/a", k).status, 200);
    let r = send(&gw, "PUT", "/ep/a", None);
    assert_eq!((r.status, r.text()), (202, "queued".to_string()));
    assert_eq!(r.header("x-r"), Some("1"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    // POST has no action on /a; /b's only entry is disabled.
    assert_proxy_error(&send(&gw, "POST", "/ep/a", k), 403, FORBIDDEN);
    assert_proxy_error(&send(&gw, "GET", "/ep/b", k), 403, FORBIDDEN);
}

#[test]
fn legacy_path_lists_apply_without_extended_paths() {
    let up = Upstream::start();
    let mut def = api_def("ep", "/ep/", &up.url("/"));
    def["version_data"]["versions"]["Default"]["paths"] =
        json!({"ignored": ["/free"], "white_list": ["/free", "/a"], "black_list": null});
    let (gw, key) = start(json!({}), def);
    assert_eq!(send(&gw, "GET", "/ep/free", None).status, 200);
    assert_eq!(send(&gw, "PATCH", "/ep/a", Some(&key)).status, 200);
    assert_proxy_error(&send(&gw, "GET", "/ep/b", Some(&key)), 403, FORBIDDEN);
}

#[test]
fn an_api_without_lists_and_with_nulls_loads_and_passes() {
    let up = Upstream::start();
    let mut def = api(
        &up,
        json!({"white_list": null, "black_list": null, "ignored": null}),
    );
    def["version_data"]["versions"]["Default"]["global_headers"] = Value::Null;
    def["CORS"] = Value::Null;
    let (gw, key) = start(json!({}), def);
    assert_eq!(send(&gw, "GET", "/ep/anything", Some(&key)).status, 200);
}

#[test]
fn a_pattern_that_does_not_compile_skips_the_api_naming_the_entry() {
    let up = Upstream::start();
    let def = api(
        &up,
        json!({"black_list": [{"path": "/ok", "method": ""}, {"path": "/x[", "method": ""}]}),
    );
    let gw = Gateway::start(json!({}), &[("ep", def)]);
    let field = "version_data.versions.Default.extended_paths.black_list[1].path";
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains("ep.json") && l.contains(field)),
        "{}",
        gw.logs().join("\n")
    );
    assert_eq!(send(&gw, "GET", "/ep/ok", None).status, 404);
}

#[test]
fn an_unbuilt_restriction_skips_the_api_and_other_lists_are_warned_about() {
    let up = Upstream::start();
    let def = api(
        &up,
        json!({"internal": [{"path": "/secret", "method": "GET"}]}),
    );
    let gw = Gateway::start(json!({}), &[("ep", def)]);
    let field = "version_data.versions.Default.extended_paths.internal";
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains(field)),
        "{}",
        gw.logs().join("\n")
    );
    assert_eq!(send(&gw, "GET", "/ep/secret", None).status, 404);
    // An empty restriction list is nothing to enforce; a cache list is
    // only a warning.
    let def = api(&up, json!({"validate_json": [], "cache": ["/x"]}));
    let (gw, key) = start(json!({}), def);
    assert_eq!(send(&gw, "GET", "/ep/x", Some(&key)).status, 200);
    assert!(
        gw.saw_log("extended_paths.cache is not supported yet"),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn an_endpoint_rate_limit_has_its_own_api_wide_bucket() {
    let up = Upstream::start();
    let mut def = api(
        &up,
        json!({"rate_limit": [
            {"path": "/search", "method": "GET", "rate": 2, "per": 60},
            {"path": "/off", "method": "GET", "rate": 1, "per": 60, "disabled": true}
        ]}),
    );
    def["global_rate_limit"] = json!({"rate": 5, "per": 60});
    let (gw, key) = start(json!({}), def);
    let other = gw.create_key(session_for(&["ep"]));
    let k = Some(key.as_str());
    assert_eq!(send(&gw, "GET", "/ep/search", k).status, 200);
    // API-wide: another key shares the endpoint's bucket.
    assert_eq!(send(&gw, "GET", "/ep/search?q=1", Some(&other)).status, 200);
    assert_proxy_error(
        &send(&gw, "GET", "/ep/search", k),
        429,
        "API Rate Limit Exceeded",
    );
    // Other endpoints and methods count in the API's own bucket (5).
    for _ in 0..5 {
        assert_eq!(send(&gw, "GET", "/ep/off", k).status, 200);
    }
    assert_proxy_error(
        &send(&gw, "POST", "/ep/search", k),
        429,
        "API Rate Limit Exceeded",
    );
}
