//! `/tyk/apis…` in file mode (CONTRACT §1.5) and `/tyk/reload`,
//! `/tyk/reload/group` (§1.7).

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

fn start() -> (Gateway, Upstream) {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("one", keyless_api("one", "/one/", &up.url("/")))],
    );
    (gw, up)
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn apis_list_returns_loaded_definitions() {
    let (gw, _up) = start();
    let r = gw.admin("GET", "/tyk/apis", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["api_id"], "one");
    assert_eq!(list[0]["proxy"]["listen_path"], "/one/");
}

#[test]
fn apis_list_is_empty_array_with_no_apis() {
    let gw = Gateway::start(json!({}), &[]);
    let r = gw.admin("GET", "/tyk/apis", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([]));
}

#[test]
fn apis_get_one_returns_its_definition() {
    let (gw, _up) = start();
    let r = gw.admin("GET", "/tyk/apis/one", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["api_id"], "one");
    assert_eq!(r.json()["use_keyless"], true);
}

#[test]
fn apis_get_unknown_is_404_api_not_found() {
    let (gw, _up) = start();
    assert_admin_error(
        &gw.admin("GET", "/tyk/apis/nope", None),
        404,
        "API not found",
    );
}

#[test]
fn apis_post_writes_app_path_file_and_answers_added() {
    let (gw, up) = start();
    let def = keyless_api("two", "/two/", &up.url("/"));
    let r = gw.admin("POST", "/tyk/apis", Some(def));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("added", "two", None));
    let file = gw.dir().join("apps/two.json");
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("apps/two.json")).unwrap();
    assert_eq!(written["api_id"], "two");
    assert_eq!(written["proxy"]["listen_path"], "/two/");
}

#[test]
fn apis_post_without_api_id_gets_random_hex_id() {
    let (gw, up) = start();
    let mut def = keyless_api("x", "/anon/", &up.url("/"));
    def.as_object_mut().unwrap().remove("api_id");
    let r = gw.admin("POST", "/tyk/apis", Some(def));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(gw.dir().join(format!("apps/{id}.json")).exists());
}

#[test]
fn apis_post_does_not_serve_until_reload() {
    let (gw, up) = start();
    let r = gw.admin(
        "POST",
        "/tyk/apis",
        Some(keyless_api("two", "/two/", &up.url("/"))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let res = gw.get("/two/x", &[]);
    assert_eq!((res.status, res.text()), (404, "Not Found".to_string()));
}

#[test]
fn apis_post_with_path_traversal_id_is_400_invalid_api_id() {
    let (gw, up) = start();
    let before_root = files_in(gw.dir());
    let before_apps = files_in(&gw.dir().join("apps"));
    for bad in ["../evil", "..", "a/b", "..\\evil"] {
        let mut def = keyless_api("x", "/evil/", &up.url("/"));
        def["api_id"] = json!(bad);
        let r = gw.admin("POST", "/tyk/apis", Some(def));
        assert_admin_error(&r, 400, "Invalid API ID");
    }
    assert_eq!(files_in(gw.dir()), before_root);
    assert_eq!(files_in(&gw.dir().join("apps")), before_apps);
    assert!(!gw.dir().join("evil.json").exists());
}

#[test]
fn apis_post_bad_json_is_400_request_malformed() {
    let (gw, _up) = start();
    let r = gw.admin_raw("POST", "/tyk/apis", b"{\"api_id\": ");
    assert_admin_error(&r, 400, "Request malformed");
}

#[test]
fn apis_put_unknown_is_404_api_not_found() {
    let (gw, up) = start();
    let r = gw.admin(
        "PUT",
        "/tyk/apis/nope",
        Some(keyless_api("nope", "/nope/", &up.url("/"))),
    );
    assert_admin_error(&r, 404, "API not found");
    assert!(!gw.dir().join("apps/nope.json").exists());
}

#[test]
fn apis_put_mismatched_id_is_400() {
    let (gw, up) = start();
    let r = gw.admin(
        "PUT",
        "/tyk/apis/one",
        Some(keyless_api("other", "/one/", &up.url("/"))),
    );
    assert_admin_error(
        &r,
        400,
        "Request APIID does not match that in Definition! For Update operations these must match.",
    );
}

#[test]
fn apis_put_rewrites_file_and_answers_modified() {
    let (gw, up) = start();
    let r = gw.admin(
        "PUT",
        "/tyk/apis/one",
        Some(keyless_api("one", "/changed/", &up.url("/"))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("modified", "one", None));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(gw.dir().join("apps/one.json")).unwrap())
            .unwrap();
    assert_eq!(written["proxy"]["listen_path"], "/changed/");
}

#[test]
fn apis_delete_removes_file_and_answers_deleted() {
    let (gw, _up) = start();
    let r = gw.admin("DELETE", "/tyk/apis/one", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("deleted", "one", None));
    assert!(!gw.dir().join("apps/one.json").exists());
}

#[test]
fn apis_delete_unknown_is_404_api_not_found() {
    let (gw, _up) = start();
    assert_admin_error(
        &gw.admin("DELETE", "/tyk/apis/nope", None),
        404,
        "API not found",
    );
}

#[test]
fn reload_answers_ok_with_empty_message() {
    let (gw, _up) = start();
    let r = gw.admin("GET", "/tyk/reload", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"status\":\"ok\",\"message\":\"\"}\n");
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn reload_block_then_new_api_serves() {
    let (gw, up) = start();
    let r = gw.admin(
        "POST",
        "/tyk/apis",
        Some(keyless_api("two", "/two/", &up.url("/base/"))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.admin("GET", "/tyk/reload?block=true", None);
    assert_eq!(r.text(), "{\"status\":\"ok\",\"message\":\"\"}\n");
    let res = gw.get("/two/x", &[]);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.json()["path"], "/base/x");
    // The API just added is listed too.
    let ids: Vec<Value> = gw
        .admin("GET", "/tyk/apis", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["api_id"].clone())
        .collect();
    assert!(ids.contains(&json!("two")), "{ids:?}");
}

#[test]
fn reload_after_delete_stops_serving_the_api() {
    let (gw, _up) = start();
    assert_eq!(gw.get("/one/x", &[]).status, 200);
    assert_eq!(gw.admin("DELETE", "/tyk/apis/one", None).status, 200);
    // 0 files but 1 API loaded: the reload must swap in the empty set.
    gw.reload();
    let res = gw.get("/one/x", &[]);
    assert_eq!((res.status, res.text()), (404, "Not Found".to_string()));
}

#[test]
fn reload_group_answers_ok_and_reloads() {
    let (gw, up) = start();
    let r = gw.admin(
        "POST",
        "/tyk/apis",
        Some(keyless_api("two", "/two/", &up.url("/"))),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.admin("GET", "/tyk/reload/group", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"status\":\"ok\",\"message\":\"\"}\n");
    assert!(
        eventually(
            || gw.get("/two/x", &[]).status == 200,
            Duration::from_secs(5)
        ),
        "API two not served after /tyk/reload/group"
    );
}

#[test]
fn reload_picks_up_a_file_dropped_into_app_path() {
    let (gw, up) = start();
    std::fs::write(
        gw.dir().join("apps/three.json"),
        serde_json::to_vec(&keyless_api("three", "/three/", &up.url("/"))).unwrap(),
    )
    .unwrap();
    gw.reload();
    assert_eq!(gw.get("/three/y", &[]).status, 200);
    assert!(gw.saw_log("loaded API"));
}
