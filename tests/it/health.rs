//! `GET /hello` (CONTRACT §1.2).

use serde_json::json;

use crate::support::*;

#[test]
fn hello_is_200_pass_tyk_gw_without_secret() {
    let gw = Gateway::start(json!({}), &[]);
    let r = gw.get("/hello", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "pass");
    assert_eq!(v["description"], "Tyk GW");
    assert!(v["version"].is_string());
    if let Some(redis) = v["details"].get("redis") {
        assert_eq!(redis["componentType"], "datastore");
        assert_eq!(redis["status"], "pass");
    }
}

#[test]
fn hello_post_is_405_method_not_allowed() {
    let gw = Gateway::start(json!({}), &[]);
    let r = request(gw.port(), "POST", "/hello", &[], Some(b"{}"));
    assert_admin_error(&r, 405, "Method Not Allowed");
}

#[test]
fn hello_uses_health_check_endpoint_name() {
    let gw = Gateway::start(json!({"health_check_endpoint_name": "status"}), &[]);
    let r = gw.get("/status", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["description"], "Tyk GW");
}

#[test]
fn hello_is_not_captured_by_a_root_listen_path() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("root", keyless_api("root", "/", &up.url("/")))],
    );
    let r = gw.get("/hello", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["description"], "Tyk GW");
    assert_eq!(up.hits(), 0);
}
