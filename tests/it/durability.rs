//! The store and shutdown (issue 2 items 1 and 4): an acknowledged admin
//! write survives kill -9; SIGTERM is a clean exit.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn start(up: &Upstream, conf: serde_json::Value) -> Gateway {
    Gateway::start(conf, &[("p", api_def("p", "/p/", &up.url("/")))])
}

#[test]
fn key_created_before_kill9_works_after_restart() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let key = gw.create_key(session_for(&["p"]));
    gw.kill9();
    gw.restart();
    let r = gw.get_with_key("/p/x", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        gw.admin("GET", &format!("/tyk/keys/{key}"), None).status,
        200
    );
}

#[test]
fn hashed_key_created_before_kill9_works_after_restart() {
    let up = Upstream::start();
    let mut gw = start(
        &up,
        json!({"hash_keys": true, "hash_key_function": "murmur64"}),
    );
    let key = gw.create_key(session_for(&["p"]));
    gw.kill9();
    gw.restart();
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
}

#[test]
fn many_keys_created_before_kill9_all_survive() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let keys: Vec<String> = (0..20)
        .map(|_| gw.create_key(session_for(&["p"])))
        .collect();
    gw.kill9();
    gw.restart();
    for key in &keys {
        assert_eq!(gw.get_with_key("/p/x", key).status, 200, "key {key} lost");
    }
}

#[test]
fn deleted_key_stays_deleted_after_kill9() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let key = gw.create_key(session_for(&["p"]));
    let r = gw.admin("DELETE", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    gw.kill9();
    gw.restart();
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        403,
        "Access to this API has been disallowed",
    );
    assert_eq!(
        gw.admin("GET", &format!("/tyk/keys/{key}"), None).status,
        404
    );
}

#[test]
fn updated_key_keeps_update_after_kill9() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let key = gw.create_key(session_for(&["p"]));
    let mut s = session_for(&["p"]);
    s["is_inactive"] = json!(true);
    assert_eq!(
        gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(s)).status,
        200
    );
    gw.kill9();
    gw.restart();
    assert_proxy_error(
        &gw.get_with_key("/p/x", &key),
        403,
        "Key is inactive, please renew",
    );
}

#[test]
fn new_gateway_on_the_same_dir_sees_the_keys() {
    let up = Upstream::start();
    let gw = start(&up, json!({}));
    let key = gw.create_key(session_for(&["p"]));
    let dir = gw.into_dir();
    let gw2 = Gateway::builder()
        .dir(dir)
        .app("p", api_def("p", "/p/", &up.url("/")))
        .start();
    assert_eq!(gw2.get_with_key("/p/x", &key).status, 200);
}

#[test]
fn sigterm_exits_0() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let _ = gw.create_key(session_for(&["p"]));
    let status = gw.stop();
    assert_eq!(
        status.code(),
        Some(0),
        "{status:?}\n{}",
        gw.logs().join("\n")
    );
}

#[test]
fn sigint_exits_0() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let status = gw.signal_and_wait("INT", Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn key_survives_sigterm_and_restart() {
    let up = Upstream::start();
    let mut gw = start(&up, json!({}));
    let key = gw.create_key(session_for(&["p"]));
    assert_eq!(gw.stop().code(), Some(0));
    gw.restart();
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
}

#[test]
fn sigterm_lets_in_flight_request_finish() {
    let up = Upstream::with_handler(|_| {
        std::thread::sleep(Duration::from_millis(800));
        UpResp::new(200, "slow but done")
    });
    let mut gw = Gateway::start(json!({}), &[("s", keyless_api("s", "/s/", &up.url("/")))]);
    let port = gw.port();
    let client = std::thread::spawn(move || request(port, "GET", "/s/x", &[], None));
    assert!(
        eventually(|| up.hits() == 1, Duration::from_secs(5)),
        "request never reached upstream"
    );
    let status = gw.stop();
    let r = client.join().unwrap();
    assert_eq!((r.status, r.text()), (200, "slow but done".to_string()));
    assert_eq!(status.code(), Some(0));
}
