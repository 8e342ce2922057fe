//! Errors seen by API clients (CONTRACT §4): Tyk's body template, its
//! headers, and the key checks of §3.5 step 5 (KeyExpired, AccessRights).

use serde_json::json;

use crate::support::*;

fn start(conf: serde_json::Value) -> (Gateway, Upstream) {
    let up = Upstream::start();
    let gw = Gateway::start(
        conf,
        &[
            ("p", api_def("p", "/p/", &up.url("/"))),
            ("q", api_def("q", "/q/", &up.url("/"))),
        ],
    );
    (gw, up)
}

#[test]
fn no_key_is_401_authorization_field_missing() {
    let (gw, up) = start(json!({}));
    assert_proxy_error(&gw.get("/p/x", &[]), 401, "Authorization field missing");
    assert_eq!(up.hits(), 0);
}

#[test]
fn empty_authorization_header_is_401_authorization_field_missing() {
    let (gw, _up) = start(json!({}));
    assert_proxy_error(
        &gw.get("/p/x", &[("Authorization", "")]),
        401,
        "Authorization field missing",
    );
}

#[test]
fn unknown_key_is_403_access_disallowed() {
    let (gw, up) = start(json!({}));
    assert_proxy_error(
        &gw.get_with_key("/p/x", "no-such-key-anywhere"),
        403,
        "Access to this API has been disallowed",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn key_shorter_than_min_token_length_is_403_access_disallowed() {
    let (gw, _up) = start(json!({}));
    assert_proxy_error(
        &gw.get_with_key("/p/x", "ab"),
        403,
        "Access to this API has been disallowed",
    );
}

#[test]
fn key_expired_is_401_key_has_expired() {
    let (gw, up) = start(json!({}));
    let mut s = session_for(&["p"]);
    s["expires"] = json!(now() - 3600);
    let key = gw.create_key(s);
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        401,
        "Key has expired, please renew",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn key_with_future_expiry_passes() {
    let (gw, _up) = start(json!({}));
    let mut s = session_for(&["p"]);
    s["expires"] = json!(now() + 3600);
    let key = gw.create_key(s);
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
}

#[test]
fn key_inactive_is_403_key_is_inactive() {
    let (gw, up) = start(json!({}));
    let mut s = session_for(&["p"]);
    s["is_inactive"] = json!(true);
    let key = gw.create_key(s);
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        403,
        "Key is inactive, please renew",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn key_without_this_api_is_403_access_disallowed() {
    let (gw, up) = start(json!({}));
    let key = gw.create_key(session_for(&["q"]));
    assert_eq!(gw.get_with_key("/q/x", &key).status, 200);
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        403,
        "Access to this API has been disallowed",
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn key_put_inactive_stops_working_at_once() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["p"]));
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
    let mut s = session_for(&["p"]);
    s["is_inactive"] = json!(true);
    assert_eq!(
        gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(s)).status,
        200
    );
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        403,
        "Key is inactive, please renew",
    );
}

#[test]
fn hide_generator_header_drops_x_generator() {
    let (gw, _up) = start(json!({"hide_generator_header": true}));
    let r = gw.get("/p/x", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.text(), proxy_error_body("Authorization field missing"));
    assert_eq!(r.header("x-generator"), None);
}

#[test]
fn api_expired_is_403() {
    let up = Upstream::start();
    let mut d = keyless_api("old", "/old/", &up.url("/"));
    d["expiration"] = json!("2000-01-01 00:00");
    let gw = Gateway::start(json!({}), &[("old", d)]);
    assert_proxy_error(
        &gw.get("/old/x", &[]),
        403,
        "API has expired, please check documentation or contact administrator",
    );
    assert_eq!(up.hits(), 0);
}
