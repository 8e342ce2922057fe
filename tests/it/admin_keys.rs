//! The admin API's transport rules (CONTRACT §1.1) and `/tyk/keys…`
//! (§1.3–1.4), with every listed error byte-exact.

use serde_json::{Value, json};

use crate::support::*;

fn start(conf: Value) -> (Gateway, Upstream) {
    let up = Upstream::start();
    let gw = Gateway::start(conf, &[("a1", api_def("a1", "/a1/", &up.url("/")))]);
    (gw, up)
}

// ---- transport and auth (§1.1) ----

#[test]
fn admin_without_secret_is_403() {
    let (gw, _up) = start(json!({}));
    let r = request(gw.port(), "GET", "/tyk/keys", &[], None);
    assert_admin_error(
        &r,
        403,
        "Attempted administrative access with invalid or missing key!",
    );
}

#[test]
fn admin_with_wrong_secret_is_403() {
    let (gw, _up) = start(json!({}));
    let r = request(
        gw.port(),
        "GET",
        "/tyk/keys",
        &[("x-tyk-authorization", "test-secreT")],
        None,
    );
    assert_admin_error(
        &r,
        403,
        "Attempted administrative access with invalid or missing key!",
    );
}

#[test]
fn admin_secret_is_checked_before_routing() {
    let (gw, _up) = start(json!({}));
    let r = request(gw.port(), "GET", "/tyk/no-such-thing", &[], None);
    assert_admin_error(
        &r,
        403,
        "Attempted administrative access with invalid or missing key!",
    );
}

#[test]
fn admin_unknown_path_is_404_page_not_found() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("GET", "/tyk/no-such-thing", None);
    assert_eq!(
        (r.status, r.text()),
        (404, "404 page not found\n".to_string())
    );
}

#[test]
fn admin_wrong_method_is_405_method_not_supported() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("PATCH", "/tyk/keys/abc", None);
    assert_admin_error(&r, 405, "Method not supported");
    let r = gw.admin("DELETE", "/tyk/apis", None);
    assert_admin_error(&r, 405, "Method not supported");
}

#[test]
fn admin_trailing_slash_is_stripped() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let r = gw.admin("GET", "/tyk/keys/", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == &json!(key))
    );
    let r = gw.admin("GET", &format!("/tyk/keys/{key}/"), None);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn admin_paths_are_not_captured_by_a_root_listen_path() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("root", keyless_api("root", "/", &up.url("/")))],
    );
    let r = gw.admin("GET", "/tyk/keys", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["keys"].is_array());
    assert_eq!(up.hits(), 0);
}

// ---- POST /tyk/keys/create ----

#[test]
fn create_with_bad_json_is_500_unmarshalling_failed() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin_raw("POST", "/tyk/keys/create", b"{not json");
    assert_admin_error(&r, 500, "Unmarshalling failed");
}

#[test]
fn create_without_access_rights_is_400() {
    let (gw, _up) = start(json!({}));
    let mut s = session_for(&[]);
    s["access_rights"] = json!({});
    let r = gw.admin("POST", "/tyk/keys/create", Some(s));
    assert_admin_error(
        &r,
        400,
        "Failed to create key, keys must have at least one Access Rights record set.",
    );
}

#[test]
fn create_master_key_allowed_with_allow_master_keys() {
    let (gw, _up) = start(json!({"allow_master_keys": true}));
    let mut s = session_for(&[]);
    s["access_rights"] = json!({});
    let r = gw.admin("POST", "/tyk/keys/create", Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["action"], "create");
}

// ---- POST /tyk/keys and /tyk/keys/{name} ----

#[test]
fn add_random_key_answers_added() {
    let (gw, up) = start(json!({}));
    let r = gw.admin("POST", "/tyk/keys", Some(session_for(&["a1"])));
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(r.text(), ok_body("added", &key, None));
    assert_eq!(gw.get_with_key("/a1/x", &key).status, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn add_custom_key_name_answers_added_with_org_prefixed_id() {
    let (gw, up) = start(json!({}));
    let r = gw.admin(
        "POST",
        "/tyk/keys/my-custom-key",
        Some(session_for(&["a1"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Legacy key ids: org + name (org "default" from the session).
    assert_eq!(r.text(), ok_body("added", "defaultmy-custom-key", None));
    // The plain name works at auth time (the API's org is "default").
    let res = gw.get_with_key("/a1/x", "my-custom-key");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(up.hits(), 1);
}

#[test]
fn add_custom_key_with_hashing_answers_key_hash() {
    let (gw, _up) = start(json!({"hash_keys": true}));
    let r = gw.admin(
        "POST",
        "/tyk/keys/my-custom-key",
        Some(session_for(&["a1"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let hash = v["key_hash"].as_str().expect("key_hash").to_string();
    assert_eq!(
        r.text(),
        ok_body("added", "defaultmy-custom-key", Some(&hash))
    );
}

#[test]
fn add_with_bad_json_is_400_request_malformed() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin_raw("POST", "/tyk/keys/somekey", b"[1,");
    assert_admin_error(&r, 400, "Request malformed");
    let r = gw.admin_raw("POST", "/tyk/keys", b"nope");
    assert_admin_error(&r, 400, "Request malformed");
}

#[test]
fn add_custom_key_shorter_than_min_token_length_is_400() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("POST", "/tyk/keys/ab", Some(session_for(&["a1"])));
    assert_admin_error(
        &r,
        400,
        "custom key ID length 2 is less than min_token_length (3); the key would be unreachable at auth time. Use an ID of at least min_token_length characters, or lower min_token_length in the gateway configuration.",
    );
}

#[test]
fn add_custom_key_respects_configured_min_token_length() {
    let (gw, _up) = start(json!({"min_token_length": 10}));
    let r = gw.admin("POST", "/tyk/keys/short-key", Some(session_for(&["a1"])));
    assert_admin_error(
        &r,
        400,
        "custom key ID length 9 is less than min_token_length (10); the key would be unreachable at auth time. Use an ID of at least min_token_length characters, or lower min_token_length in the gateway configuration.",
    );
}

#[test]
fn add_master_key_without_allow_master_keys_is_500() {
    let (gw, _up) = start(json!({}));
    let mut s = session_for(&[]);
    s["access_rights"] = json!({});
    let r = gw.admin("POST", "/tyk/keys/masterkey1", Some(s));
    assert_admin_error(
        &r,
        500,
        "Failed to create key, ensure security settings are correct.",
    );
}

// ---- GET /tyk/keys/{id} ----

#[test]
fn get_key_returns_the_session() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let r = gw.admin("GET", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let s = r.json();
    assert_eq!(s["access_rights"]["a1"]["api_id"], "a1");
    assert_eq!(s["org_id"], "default");
    assert!(s["rate"].as_f64() == Some(1000.0));
    // Write rules: last_updated is a string of unix seconds.
    let lu = s["last_updated"].as_str().expect("last_updated string");
    let lu: i64 = lu.parse().expect("unix seconds");
    assert!((lu - now()).abs() < 60);
}

#[test]
fn get_unknown_key_is_404_key_not_found() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("GET", "/tyk/keys/doesnotexist", None);
    assert_admin_error(&r, 404, "Key not found");
}

#[test]
fn get_hashed_with_hashing_off_is_400() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let r = gw.admin("GET", &format!("/tyk/keys/{key}?hashed=1"), None);
    assert_admin_error(
        &r,
        400,
        "Key requested by hash but key hashing is not enabled",
    );
}

#[test]
fn get_key_by_hash_with_hashing_on() {
    let (gw, _up) = start(json!({"hash_keys": true}));
    let r = gw.admin("POST", "/tyk/keys/create", Some(session_for(&["a1"])));
    let v = r.json();
    let key = v["key"].as_str().unwrap();
    let hash = v["key_hash"].as_str().unwrap();
    let by_hash = gw.admin("GET", &format!("/tyk/keys/{hash}?hashed=1"), None);
    assert_eq!(by_hash.status, 200, "{}", by_hash.text());
    assert_eq!(by_hash.json()["access_rights"]["a1"]["api_id"], "a1");
    let by_key = gw.admin("GET", &format!("/tyk/keys/{key}"), None);
    assert_eq!(by_key.status, 200, "{}", by_key.text());
}

// ---- PUT /tyk/keys/{id} ----

#[test]
fn put_key_answers_modified_and_changes_it() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let mut s = session_for(&["a1"]);
    s["rate"] = json!(5);
    let r = gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("modified", &key, None));
    let got = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert_eq!(got["rate"].as_f64(), Some(5.0));
}

#[test]
fn put_unknown_key_is_404_key_is_not_found() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("PUT", "/tyk/keys/doesnotexist", Some(session_for(&["a1"])));
    assert_admin_error(&r, 404, "Key is not found");
}

#[test]
fn put_with_bad_json_is_400_request_malformed() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let r = gw.admin_raw("PUT", &format!("/tyk/keys/{key}"), b"{oops");
    assert_admin_error(&r, 400, "Request malformed");
}

#[test]
fn put_keeps_date_created() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let before = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    let r = gw.admin(
        "PUT",
        &format!("/tyk/keys/{key}"),
        Some(session_for(&["a1"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let after = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert!(
        before["date_created"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
    assert_eq!(before["date_created"], after["date_created"]);
}

// ---- DELETE /tyk/keys/{id} ----

#[test]
fn delete_key_answers_deleted_and_key_stops_working() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    assert_eq!(gw.get_with_key("/a1/x", &key).status, 200);
    let r = gw.admin("DELETE", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("deleted", &key, None));
    assert_admin_error(
        &gw.admin("GET", &format!("/tyk/keys/{key}"), None),
        404,
        "Key not found",
    );
    assert_proxy_error(
        &gw.get_with_key("/a1/x", &key),
        403,
        "Access to this API has been disallowed",
    );
}

#[test]
fn delete_unknown_key_is_404_no_such_key() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("DELETE", "/tyk/keys/doesnotexist", None);
    assert_admin_error(&r, 404, "There is no such key found");
}

#[test]
fn delete_with_api_id_minus_one_answers_null() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let r = gw.admin("DELETE", &format!("/tyk/keys/{key}?api_id=-1"), None);
    assert_eq!((r.status, r.text()), (200, "null\n".to_string()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        gw.admin("GET", &format!("/tyk/keys/{key}"), None).status,
        404
    );
}

// ---- GET /tyk/keys ----

#[test]
fn list_keys_unhashed_returns_raw_ids() {
    let (gw, _up) = start(json!({}));
    let k1 = gw.create_key(session_for(&["a1"]));
    let k2 = gw.create_key(session_for(&["a1"]));
    let r = gw.admin("GET", "/tyk/keys", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let keys: Vec<String> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert!(keys.contains(&k1) && keys.contains(&k2), "{keys:?}");
    assert_eq!(keys.len(), 2);
}

#[test]
fn list_keys_filter_is_a_raw_prefix() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("POST", "/tyk/keys/alpha-key", Some(session_for(&["a1"])));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut s = session_for(&["a1"]);
    s["org_id"] = json!("other");
    let r = gw.admin("POST", "/tyk/keys/beta-key", Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.admin("GET", "/tyk/keys?filter=default", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["keys"], json!(["defaultalpha-key"]));
}

#[test]
fn list_keys_by_api_id_without_filter_is_400() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("GET", "/tyk/keys?api_id=a1", None);
    assert_admin_error(
        &r,
        400,
        "The 'filter' parameter (Org ID) is required when filtering by 'api_id' in legacy mode",
    );
}

#[test]
fn list_keys_hashed_without_listing_enabled_is_404() {
    let (gw, _up) = start(json!({"hash_keys": true}));
    let r = gw.admin("GET", "/tyk/keys", None);
    assert_admin_error(
        &r,
        404,
        "Hashed key listing is disabled in config (enable_hashed_keys_listing)",
    );
}

#[test]
fn list_keys_hashed_with_listing_enabled_returns_hashes() {
    let (gw, _up) = start(json!({"hash_keys": true, "enable_hashed_keys_listing": true}));
    let r = gw.admin("POST", "/tyk/keys/create", Some(session_for(&["a1"])));
    let v = r.json();
    let key = v["key"].as_str().unwrap();
    let hash = v["key_hash"].as_str().unwrap();
    let list = gw.admin("GET", "/tyk/keys", None);
    assert_eq!(list.status, 200, "{}", list.text());
    let keys = list.json()["keys"].clone();
    assert_eq!(keys, json!([hash]));
    assert!(
        !list.text().contains(key),
        "raw key listed: {}",
        list.text()
    );
}

#[test]
fn admin_success_bodies_end_with_newline_and_are_json() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("GET", "/tyk/keys", None);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.body.ends_with(b"\n"), "{:?}", r.text());
}

#[test]
fn raw_key_never_appears_in_logs() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let _ = gw.get_with_key("/a1/x", &key);
    let _ = gw.admin("DELETE", &format!("/tyk/keys/{key}"), None);
    assert!(
        !gw.logs().iter().any(|l| l.contains(&key)),
        "raw key logged:\n{}",
        gw.logs().join("\n")
    );
}

#[test]
fn hashed_query_any_non_empty_value_means_hash() {
    let (gw, _up) = start(json!({"hash_keys": true}));
    let r = gw.admin("POST", "/tyk/keys/create", Some(session_for(&["a1"])));
    let hash = r.json()["key_hash"].as_str().unwrap().to_string();
    // Tyk surprise: `hashed=false` counts as hashed.
    let got = gw.admin("GET", &format!("/tyk/keys/{hash}?hashed=false"), None);
    assert_eq!(got.status, 200, "{}", got.text());
}

#[test]
fn admin_404_is_plain_text() {
    let (gw, _up) = start(json!({}));
    let r = gw.admin("GET", "/tyk/nothing/here", None);
    assert_eq!(
        (r.status, r.text()),
        (404, "404 page not found\n".to_string())
    );
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
}

#[test]
fn empty_secret_lets_requests_without_header_in_with_a_warning() {
    let (gw, _up) = start(json!({"secret": ""}));
    let r = request(gw.port(), "GET", "/tyk/keys", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("loopback")),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn add_custom_key_with_past_expires_stores_never() {
    let (gw, up) = start(json!({}));
    let mut s = session_for(&["a1"]);
    s["expires"] = json!(now() - 3600);
    let r = gw.admin("POST", "/tyk/keys/past-expiry-key", Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    // Stored as org + name; the admin lookup needs the org (CONTRACT §1.4).
    let got = gw
        .admin("GET", "/tyk/keys/past-expiry-key?org_id=default", None)
        .json();
    assert_eq!(got["expires"].as_i64(), Some(0), "{got}");
    assert_eq!(gw.get_with_key("/a1/x", "past-expiry-key").status, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn put_with_suppress_reset_keeps_last_updated_and_quota_renews() {
    let (gw, _up) = start(json!({}));
    let key = gw.create_key(session_for(&["a1"]));
    let before = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    let mut s = session_for(&["a1"]);
    s["last_updated"] = json!("1");
    s["quota_renews"] = json!(5);
    let r = gw.admin("PUT", &format!("/tyk/keys/{key}?suppress_reset=1"), Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    let after = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert_eq!(after["last_updated"], before["last_updated"]);
    assert_eq!(after["quota_renews"], before["quota_renews"]);
}

#[test]
fn create_sets_quota_renews_from_renewal_rate() {
    let (gw, _up) = start(json!({}));
    let mut s = session_for(&["a1"]);
    s["quota_renewal_rate"] = json!(3600);
    s["quota_renews"] = json!(1449051461);
    let key = gw.create_key(s);
    let got = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    let renews = got["quota_renews"].as_i64().unwrap();
    assert!(
        (renews - (now() + 3600)).abs() < 60,
        "quota_renews {renews}"
    );
}
