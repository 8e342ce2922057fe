//! Issue 8: canonical requests. With a keyless API on `/users/` and a keyed
//! one on `/users/protected/`, no spelling of a path reaches the keyless
//! upstream with a protected resource (PATHS.md §4 and §5), each through a
//! real socket against the real binary and two counting upstreams. Then
//! the switches, `path_cleaning`, and reserved listen paths.

use serde_json::{Value, json};

use crate::support::*;

/// The two APIs of PATHS.md §4, each in front of its own echo upstream.
/// Listen paths are not stripped, so an upstream sees the whole path.
struct Pair {
    gw: Gateway,
    keyless: Upstream,
    protected: Upstream,
}

fn pair(conf: Value) -> Pair {
    pair_with(conf, |_| {})
}

fn pair_with(conf: Value, edit: impl Fn(&mut Value)) -> Pair {
    let keyless = Upstream::start();
    let protected = Upstream::start();
    let mut open = keyless_api("users", "/users/", &keyless.url(""));
    let mut keyed = api_def("protected", "/users/protected/", &protected.url(""));
    for def in [&mut open, &mut keyed] {
        def["proxy"]["strip_listen_path"] = json!(false);
        edit(def);
    }
    let gw = Gateway::start(conf, &[("users", open), ("protected", keyed)]);
    Pair {
        gw,
        keyless,
        protected,
    }
}

impl Pair {
    fn get(&self, path: &str) -> Resp {
        request(self.gw.port(), "GET", path, &[], None)
    }

    fn get_keyed(&self, path: &str) -> Resp {
        let key = self.gw.create_key(session_for(&["protected"]));
        request(
            self.gw.port(),
            "GET",
            path,
            &[("Authorization", &key)],
            None,
        )
    }

    /// No request has reached the keyless upstream.
    #[track_caller]
    fn assert_keyless_untouched(&self, path: &str) {
        assert_eq!(
            self.keyless.hits(),
            0,
            "{path:?} reached the keyless upstream as {:?}",
            self.keyless.last_request().map(|r| r.target)
        );
    }
}

/// Tyk's 400 body naming the reason.
#[track_caller]
fn assert_path_refused(r: &Resp, reason: &str) {
    assert_eq!(r.status, 400, "{}", r.text());
    let error = r.json()["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with(&format!("invalid request path ({reason}): ")),
        "{error:?} does not name {reason}"
    );
    assert_eq!(r.header("x-generator"), Some("tyk.io"));
}

/// Without a key: 401 from the protected API, nothing at the keyless
/// upstream. With a key: the protected upstream receives `forwarded`.
#[track_caller]
fn assert_protected(path: &str, forwarded: &str) {
    let p = pair(json!({}));
    let r = p.get(path);
    assert_proxy_error(&r, 401, "Authorization field missing");
    let r = p.get_keyed(path);
    assert_eq!(r.status, 200, "{path:?} with a key: {}", r.text());
    let got = p
        .protected
        .last_request()
        .expect("protected upstream reached");
    assert_eq!(got.target, forwarded, "{path:?} forwarded");
    p.assert_keyless_untouched(path);
}

/// 400 naming `reason`, nothing at either upstream, with or without a key.
#[track_caller]
fn assert_refused(path: &str, reason: &str) {
    let p = pair(json!({}));
    assert_path_refused(&p.get(path), reason);
    assert_path_refused(&p.get_keyed(path), reason);
    p.assert_keyless_untouched(path);
    assert_eq!(
        p.protected.hits(),
        0,
        "{path:?} reached the protected upstream"
    );
}

// ---- the twelve requests of the issue (PATHS.md §4) ----

#[test]
fn regression_8_double_slash_routes_to_the_protected_api() {
    assert_protected("/users//protected/s", "/users/protected/s");
}

#[test]
fn regression_8_dot_segment_routes_to_the_protected_api() {
    assert_protected("/users/./protected/s", "/users/protected/s");
}

#[test]
fn regression_8_dot_dot_segment_routes_to_the_protected_api() {
    assert_protected("/users/x/../protected/s", "/users/protected/s");
}

#[test]
fn regression_8_encoded_dot_dot_routes_to_the_protected_api() {
    assert_protected("/users/%2e%2e/users/protected/s", "/users/protected/s");
}

#[test]
fn regression_8_encoded_dot_routes_to_the_protected_api() {
    assert_protected("/users/%2E/protected/s", "/users/protected/s");
}

#[test]
fn regression_8_encoded_slash_is_400() {
    assert_refused("/users/protected%2fs", "escaped_slash");
}

#[test]
fn regression_8_encoded_unreserved_letter_routes_to_the_protected_api() {
    assert_protected("/users/%70rotected/s", "/users/protected/s");
}

#[test]
fn regression_8_path_parameter_routes_to_the_protected_api() {
    assert_protected("/users/protected;x/s", "/users/protected;x/s");
}

#[test]
fn regression_8_empty_path_parameter_routes_to_the_protected_api() {
    assert_protected("/users/protected;/s", "/users/protected;/s");
}

#[test]
fn regression_8_backslash_is_400() {
    assert_refused("/users/protected\\s", "backslash");
}

#[test]
fn regression_8_encoded_backslash_is_400() {
    assert_refused("/users/protected%5cs", "escaped_slash");
}

#[test]
fn regression_8_encoded_nul_is_400() {
    assert_refused("/users/protected%00/s", "nul");
}

// ---- the further vectors of PATHS.md §5 ----

#[test]
fn bare_listen_path_goes_to_the_protected_api_and_longer_names_do_not() {
    let p = pair(json!({}));
    assert_proxy_error(
        &p.get("/users/protected"),
        401,
        "Authorization field missing",
    );
    assert_eq!(p.get("/users/protectedX/s").status, 200);
    assert_eq!(
        p.keyless.last_request().unwrap().target,
        "/users/protectedX/s"
    );
    assert_eq!(p.protected.hits(), 0);
}

#[test]
fn dot_dot_above_the_root_is_clamped() {
    assert_protected("/../users/protected/s", "/users/protected/s");
}

#[test]
fn encoded_dot_dot_slash_is_400_and_401_when_slashes_are_decoded() {
    assert_refused("/users/%2e%2e%2fusers/protected/s", "escaped_slash");
    let p = pair(json!({"gatehouse": {"paths": {"escaped_slashes_action": "decode"}}}));
    assert_proxy_error(
        &p.get("/users/%2e%2e%2fusers/protected/s"),
        401,
        "Authorization field missing",
    );
    p.assert_keyless_untouched("decode");
}

#[test]
fn double_encoding_is_400_unless_allowed_then_forwarded_as_is() {
    assert_refused("/users/%252e%252e/protected/s", "double_encoding");
    let p = pair(json!({"gatehouse": {"paths": {"reject_double_encoding": false}}}));
    let r = p.get("/users/%252e%252e/protected/s");
    assert_eq!(r.status, 200, "{}", r.text());
    let got = p.keyless.last_request().unwrap();
    assert_eq!(got.target, "/users/%252e%252e/protected/s");
    // A lone %25 is never double encoding.
    let r = p.get("/users/100%25off");
    assert_eq!(r.status, 200);
}

#[test]
fn dot_dot_with_a_parameter_acts_as_dot_dot_and_is_forwarded_as_sent() {
    assert_protected("/users/x/..;/protected/s", "/users/x/..;/protected/s");
}

#[test]
fn encoded_letter_then_dot_dot_routes_to_the_protected_api() {
    assert_protected("/users/p%72otected/../protected/s", "/users/protected/s");
}

#[test]
fn query_is_never_normalised() {
    let p = pair(json!({}));
    let r = p.get("/users/a?x=/../protected");
    assert_eq!(r.status, 200);
    let got = p.keyless.last_request().unwrap();
    assert_eq!(
        (got.path.as_str(), got.query.as_str()),
        ("/users/a", "x=/../protected")
    );
    assert_eq!(p.protected.hits(), 0);
}

#[test]
fn fragment_is_400() {
    assert_refused("/users/s#x", "fragment");
}

#[test]
fn escapes_are_decoded_or_upper_cased_once() {
    let p = pair(json!({}));
    assert_eq!(p.get("/users/%7Euser").status, 200);
    assert_eq!(p.keyless.last_request().unwrap().target, "/users/~user");
    assert_eq!(p.get("/users/%c3%a9").status, 200);
    assert_eq!(p.keyless.last_request().unwrap().target, "/users/%C3%A9");
}

#[test]
fn bad_escape_is_400() {
    assert_refused("/users/%zz", "bad_escape");
    assert_refused("/users/%4", "bad_escape");
}

// ---- path_cleaning ----

#[test]
fn redirect_mode_sends_301_to_the_cleaned_path_with_its_query() {
    let p = pair(json!({"gatehouse": {"paths": {"path_cleaning": "redirect"}}}));
    let r = p.get("/users//protected/s?q=1");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/users/protected/s?q=1"));
    // Clean once decoded: no redirect, as in Tyk, and still the keyed API.
    assert_proxy_error(
        &p.get("/users/%70rotected/s"),
        401,
        "Authorization field missing",
    );
    assert_eq!(p.keyless.hits() + p.protected.hits(), 0);
}

#[test]
fn redirect_308_mode_keeps_the_method() {
    let p = pair(json!({"gatehouse": {"paths": {"path_cleaning": "redirect_308"}}}));
    let r = request(p.gw.port(), "POST", "/users/./a", &[], Some(b"x"));
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("/users/a"));
}

#[test]
fn off_mode_forwards_the_raw_path_but_routes_on_the_canonical_one() {
    let p = pair(json!({"gatehouse": {"paths": {"path_cleaning": "off"}}}));
    assert_proxy_error(
        &p.get("/users//protected/s"),
        401,
        "Authorization field missing",
    );
    let r = p.get_keyed("/users//protected/s");
    assert_eq!(r.status, 200);
    assert_eq!(
        p.protected.last_request().unwrap().target,
        "/users//protected/s"
    );
    p.assert_keyless_untouched("off");
}

#[test]
fn tyk_skip_url_cleaning_is_off_mode() {
    let p = pair(json!({"http_server_options": {"skip_url_cleaning": true}}));
    let r = p.get_keyed("/users/./protected/s");
    assert_eq!(r.status, 200);
    assert_eq!(
        p.protected.last_request().unwrap().target,
        "/users/./protected/s"
    );
    p.assert_keyless_untouched("skip_url_cleaning");
}

#[test]
fn off_mode_with_stripping_refuses_a_path_that_does_not_line_up() {
    let strip = |d: &mut Value| d["proxy"]["strip_listen_path"] = json!(true);
    let p = pair_with(
        json!({"gatehouse": {"paths": {"path_cleaning": "off"}}}),
        strip,
    );
    assert_path_refused(&p.get("/users//protected/s"), "ambiguous_path");
    let r = p.get_keyed("/users/protected/s");
    assert_eq!(r.status, 200);
    assert_eq!(p.protected.last_request().unwrap().target, "/s");
}

#[test]
fn stripping_removes_listen_path_segments_not_bytes() {
    let strip = |d: &mut Value| d["proxy"]["strip_listen_path"] = json!(true);
    let p = pair_with(json!({}), strip);
    let r = p.get_keyed("/users/protected;v=1/s;x");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.protected.last_request().unwrap().target, "/s;x");
    assert_path_refused(&p.get("/users/protected/..;/protected/s"), "ambiguous_path");
}

// ---- the switches, and trying to get around them ----

#[test]
fn switches_can_allow_what_the_defaults_refuse() {
    let conf = json!({"gatehouse": {"paths": {
        "escaped_slashes_action": "decode",
        "backslash_action": "as_slash"
    }}});
    let p = pair(conf);
    for path in [
        "/users/protected%2fs",
        "/users/protected%5Cs",
        "/users/protected\\s",
    ] {
        assert_proxy_error(&p.get(path), 401, "Authorization field missing");
        let r = p.get_keyed(path);
        assert_eq!(r.status, 200, "{path:?}");
        assert_eq!(
            p.protected.last_request().unwrap().target,
            "/users/protected/s"
        );
    }
    p.assert_keyless_untouched("decode");
}

#[test]
fn path_params_can_be_refused() {
    let p = pair(json!({"gatehouse": {"paths": {"path_params_action": "reject"}}}));
    assert_path_refused(&p.get("/users/protected;x/s"), "path_params");
    assert_path_refused(&p.get("/users/a;b"), "path_params");
    assert_eq!(p.keyless.hits() + p.protected.hits(), 0);
    assert_eq!(p.get("/users/a%3Bb").status, 200, "an escaped ; is data");
}

#[test]
fn an_api_may_keep_escaped_slashes_and_only_that_api() {
    let up = Upstream::start();
    let keep = json!({"paths": {"escaped_slashes_action": "keep"}});
    let mut repos = keyless_api("repos", "/repos/", &up.url(""));
    repos["gatehouse"] = keep;
    let other = keyless_api("other", "/other/", &up.url(""));
    let gw = Gateway::start(json!({}), &[("repos", repos), ("other", other)]);
    let r = gw.get("/repos/group%2fproject/tree", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().unwrap().target, "/group%2Fproject/tree");
    assert_path_refused(&gw.get("/other/a%2Fb", &[]), "escaped_slash");
    // The override follows the canonical route, not the spelling.
    assert_path_refused(&gw.get("/repos/../other/a%2Fb", &[]), "escaped_slash");
    assert_eq!(up.hits(), 1);
}

#[test]
fn keep_mode_refuses_a_listen_path_that_would_split_an_escaped_segment() {
    let up = Upstream::start();
    let mut api = keyless_api("a", "/a/", &up.url(""));
    api["gatehouse"] = json!({"paths": {"escaped_slashes_action": "keep"}});
    let gw = Gateway::start(json!({}), &[("a", api)]);
    assert_path_refused(&gw.get("/a%2Fb/c", &[]), "ambiguous_path");
    assert_eq!(up.hits(), 0);
    let r = gw.get("/a/b%2Fc", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.last_request().unwrap().target, "/b%2Fc");
}

#[test]
fn an_unknown_switch_value_stops_the_start_naming_the_field() {
    let out = Gateway::builder()
        .conf(json!({"gatehouse": {"paths": {"escaped_slashes_action": "allow"}}}))
        .try_start()
        .err()
        .expect("start refused");
    assert_eq!(out.code(), Some(2));
    let line = out.error_line().unwrap_or_default().to_string();
    assert!(
        line.contains("gatehouse.paths.escaped_slashes_action"),
        "{line}"
    );
}

#[test]
fn an_api_with_a_misspelt_switch_is_not_loaded() {
    let up = Upstream::start();
    let mut api = keyless_api("typo", "/typo/", &up.url(""));
    api["gatehouse"] = json!({"paths": {"escaped_slash_action": "keep"}});
    let gw = Gateway::start(json!({}), &[("typo", api)]);
    assert_eq!(gw.get("/typo/x", &[]).status, 404);
    assert!(gw.saw_log("typo.json"), "{:?}", gw.logs());
}

#[test]
fn a_spelling_of_the_admin_path_is_never_proxied() {
    let p = pair(json!({}));
    // Routed to the admin API by its canonical form, which answers on the
    // path as sent: only the plain spelling is a Gateway API call.
    let secret = [("x-tyk-authorization", SECRET)];
    let r = request(p.gw.port(), "GET", "/users/../tyk/apis", &secret, None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(p.get("/%74yk/apis").status, 403, "admin without the secret");
    assert_eq!(p.keyless.hits() + p.protected.hits(), 0);
}

// ---- listen paths ----

#[test]
fn listen_paths_are_made_canonical_at_load() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("odd", keyless_api("odd", "/a//%62/./c/", &up.url("")))],
    );
    assert_eq!(gw.get("/a/b/c/x", &[]).status, 200);
    assert!(gw.saw_log("canonical form"), "{:?}", gw.logs());
}

#[test]
fn reserved_listen_paths_are_refused_at_load() {
    let up = Upstream::start();
    let apps = [
        ("t1", keyless_api("t1", "/tyk/", &up.url(""))),
        ("t2", keyless_api("t2", "/tyk", &up.url(""))),
        ("t3", keyless_api("t3", "/tyk/x/", &up.url(""))),
        ("t4", keyless_api("t4", "/hello", &up.url(""))),
        ("t5", keyless_api("t5", "/%74yk/y/", &up.url(""))),
        ("fine", keyless_api("fine", "/fine/", &up.url(""))),
    ];
    let gw = Gateway::start(json!({}), &apps);
    let listed = gw.admin("GET", "/tyk/apis", None).json();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["api_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["fine"]);
    for file in ["t1.json", "t2.json", "t3.json", "t4.json", "t5.json"] {
        assert!(gw.saw_log(file), "no error naming {file}: {:?}", gw.logs());
    }
    assert_eq!(gw.get("/hello", &[]).status, 200);
}

#[test]
fn posting_an_api_on_a_reserved_listen_path_is_400() {
    let gw = Gateway::start(json!({}), &[]);
    for listen in ["/tyk/", "/tyk/keys/", "/hello", "/tyk"] {
        let def = keyless_api("bad", listen, "http://127.0.0.1:1");
        let r = gw.admin("POST", "/tyk/apis", Some(def.clone()));
        assert_eq!(r.status, 400, "{listen}: {}", r.text());
        let message = r.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("reserved"), "{message}");
    }
}
