//! Reload without risk (issue 11 item 7, OPS.md §5): SIGHUP, the
//! `gatehouse.watch` poller, broken files that keep the last good version,
//! in-flight requests on their snapshot.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

const WITHIN: Duration = Duration::from_secs(8);

fn write_app(gw: &Gateway, name: &str, def: &Value) {
    let path = gw.dir().join("apps").join(name);
    std::fs::write(path, serde_json::to_vec_pretty(def).unwrap()).unwrap();
}

fn write_raw(dir: &Path, rel: &str, text: &str) {
    std::fs::write(dir.join(rel), text).unwrap();
}

fn status(gw: &Gateway, path: &str) -> u16 {
    gw.get(path, &[]).status
}

#[test]
fn sighup_picks_up_a_new_app_file() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("a", keyless_api("a", "/a/", &up.url("")))]);
    assert_eq!(status(&gw, "/b/x"), 404);
    write_app(&gw, "b.json", &keyless_api("b", "/b/", &up.url("")));
    gw.signal("HUP");
    assert!(
        eventually(|| status(&gw, "/b/x") == 200, WITHIN),
        "{}",
        gw.logs().join("\n")
    );
    assert!(gw.saw_log("SIGHUP: reloading"));
    assert_eq!(status(&gw, "/a/x"), 200, "the old API still serves");
    assert_eq!(
        status(&gw, "/hello"),
        200,
        "SIGHUP does not stop the gateway"
    );
}

#[test]
fn reload_with_a_broken_file_keeps_the_others_and_its_last_good_version() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            ("a", keyless_api("a", "/a/", &up.url(""))),
            ("b", keyless_api("b", "/b/", &up.url(""))),
        ],
    );
    write_raw(gw.dir(), "apps/b.json", "{\"api_id\": \"b\", ");
    write_app(&gw, "c.json", &keyless_api("c", "/c/", &up.url("")));
    gw.reload();
    assert_eq!(status(&gw, "/c/x"), 200, "the new good file is loaded");
    assert_eq!(status(&gw, "/a/x"), 200, "the untouched one still serves");
    assert_eq!(status(&gw, "/b/x"), 200, "b keeps its last good version");
    let b_file = gw.dir().join("apps/b.json");
    let named = format!("reload: apis: {}: ", b_file.display());
    assert!(gw.saw_log(&named), "{}", gw.logs().join("\n"));
    assert!(gw.saw_log("keeping the last good version of API b"));
}

#[test]
fn a_new_broken_file_is_skipped_with_its_error() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("a", keyless_api("a", "/a/", &up.url("")))]);
    let mut bad = keyless_api("d", "/d/", &up.url(""));
    bad["proxy"]["listen_path"] = json!(["not", "a", "string"]);
    write_app(&gw, "d.json", &bad);
    gw.reload();
    assert_eq!(status(&gw, "/d/x"), 404);
    assert_eq!(status(&gw, "/a/x"), 200);
    let named = format!(
        "reload: apis: {}: field `proxy.listen_path`",
        gw.dir().join("apps/d.json").display()
    );
    assert!(gw.saw_log(&named), "{}", gw.logs().join("\n"));
}

#[test]
fn an_unreadable_app_path_keeps_every_api() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("a", keyless_api("a", "/a/", &up.url("")))]);
    std::fs::rename(gw.dir().join("apps"), gw.dir().join("apps.moved")).unwrap();
    gw.reload();
    assert_eq!(status(&gw, "/a/x"), 200);
    assert!(
        gw.saw_log("the 1 APIs loaded stay"),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn watch_reloads_by_itself_after_a_change() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({"gatehouse": {"watch": true}}), &[]);
    write_app(&gw, "w.json", &keyless_api("w", "/w/", &up.url("")));
    assert!(
        eventually(|| status(&gw, "/w/x") == 200, WITHIN),
        "{}",
        gw.logs().join("\n")
    );
    assert!(gw.saw_log("watch: "), "{}", gw.logs().join("\n"));
}

#[test]
fn without_watch_a_change_waits_for_a_reload() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[]);
    write_app(&gw, "w.json", &keyless_api("w", "/w/", &up.url("")));
    // Longer than the watcher's poll and settle time together.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status(&gw, "/w/x"), 404);
    gw.reload();
    assert_eq!(status(&gw, "/w/x"), 200);
}

#[test]
fn watch_follows_the_policy_path() {
    let gw = Gateway::builder()
        .conf(json!({"gatehouse": {"watch": true}, "policies": {"policy_path": "policies"}}))
        .file(
            "policies/p1.json",
            json!({"id": "p1", "rate": 5, "per": 1}).to_string(),
        )
        .start();
    assert_eq!(gw.admin("GET", "/tyk/policies/p2", None).status, 404);
    write_raw(
        gw.dir(),
        "policies/p2.json",
        &json!({"id": "p2", "rate": 5, "per": 1}).to_string(),
    );
    assert!(
        eventually(
            || gw.admin("GET", "/tyk/policies/p2", None).status == 200,
            WITHIN
        ),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn a_broken_policy_file_keeps_its_last_good_version() {
    let gw = Gateway::builder()
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .file(
            "policies/p1.json",
            json!({"id": "p1", "rate": 5, "per": 1}).to_string(),
        )
        .start();
    write_raw(
        gw.dir(),
        "policies/p1.json",
        "{\"id\": \"p1\", \"rate\": \"x\"}",
    );
    gw.reload();
    let r = gw.admin("GET", "/tyk/policies/p1", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rate"], json!(5.0));
    let named = format!(
        "reload: policies: {}: field `rate`",
        gw.dir().join("policies/p1.json").display()
    );
    assert!(gw.saw_log(&named), "{}", gw.logs().join("\n"));
}

#[test]
fn an_in_flight_request_finishes_on_the_snapshot_it_started_with() {
    let up = Upstream::with_handler(|_| {
        std::thread::sleep(Duration::from_millis(1500));
        UpResp::new(200, "slow")
    });
    let gw = Gateway::start(json!({}), &[("a", keyless_api("a", "/a/", &up.url("")))]);
    let port = gw.port();
    let inflight = std::thread::spawn(move || request(port, "GET", "/a/slow", &[], None));
    assert!(
        eventually(|| up.hits() == 1, WITHIN),
        "the request reached upstream"
    );
    std::fs::remove_file(gw.dir().join("apps/a.json")).unwrap();
    gw.reload();
    assert_eq!(status(&gw, "/a/x"), 404, "the API is gone for new requests");
    let r = inflight.join().unwrap();
    assert_eq!((r.status, r.text()), (200, "slow".to_string()));
}
