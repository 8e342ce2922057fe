//! Issue 9: policies. Loading them from `policies.policy_path` (one file
//! each) or `policies.policy_record_name` (one map), the `/tyk/policies`
//! admin API and `POST /tyk/keys/policy/{key}` (CONTRACT §1.6), and
//! applying a key's `apply_policies` on create and on every request:
//! access rights, rate limits, quotas, partitions, `per_api`, orgs,
//! `is_inactive` (CONTRACT §8), with the security tries one per test.

use std::path::PathBuf;

use serde_json::{Map, Value, json};

use crate::support::*;

const DENIED: &str = "Access to this API has been disallowed";
const QUOTA: &str = "Quota exceeded";
const RATE: &str = "Rate Limit Exceeded";
const INACTIVE: &str = "Key is inactive, please renew";
const BAD_ID: &str = "Invalid Policy ID: Allowed characters: a-z, A-Z, 0-9, ., _, -, ~";

/// An access_rights map granting each API (versions `["Default"]`).
fn rights(api_ids: &[&str]) -> Value {
    let mut m = Map::new();
    for id in api_ids {
        m.insert(
            id.to_string(),
            json!({"api_id": id, "api_name": id, "versions": ["Default"]}),
        );
    }
    Value::Object(m)
}

/// A policy of org `default` granting `api_ids`, unlimited quota, a rate
/// nothing here reaches.
fn policy(id: &str, api_ids: &[&str]) -> Value {
    json!({
        "id": id,
        "name": format!("Policy {id}"),
        "org_id": "default",
        "rate": 1000,
        "per": 1,
        "quota_max": -1,
        "quota_renewal_rate": 3600,
        "access_rights": rights(api_ids),
        "active": true
    })
}

/// A key of org `default` naming `policies`, with its own rights to
/// `own_apis`.
fn key_with(policies: &[&str], own_apis: &[&str]) -> Value {
    let mut s = session_for(own_apis);
    s["apply_policies"] = json!(policies);
    s
}

/// A gateway with `policy_path: policies` (the folder exists), token APIs
/// `a` (/a/) and `b` (/b/) of org `default`, and `policies` written as
/// `policies/<id>.json`.
fn builder(up: &Upstream, policies: &[Value]) -> GatewayBuilder {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let mut b = Gateway::builder()
        .dir(dir)
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .app("a", api_def("a", "/a/", &up.url("/")))
        .app("b", api_def("b", "/b/", &up.url("/")));
    for p in policies {
        let id = p["id"].as_str().expect("policy id");
        b = b.file(
            &format!("policies/{id}.json"),
            serde_json::to_vec_pretty(p).unwrap(),
        );
    }
    b
}

fn start(policies: &[Value]) -> (Gateway, Upstream) {
    let up = Upstream::start();
    let gw = builder(&up, policies).start();
    (gw, up)
}

fn policy_file(gw: &Gateway, id: &str) -> PathBuf {
    gw.dir().join("policies").join(format!("{id}.json"))
}

/// Rewrites `policies/<id>.json` behind the gateway's back.
fn write_policy(gw: &Gateway, p: &Value) {
    let id = p["id"].as_str().expect("policy id");
    std::fs::write(policy_file(gw, id), serde_json::to_vec_pretty(p).unwrap()).unwrap();
}

/// `n` GETs of `path` with `key`: their statuses.
fn statuses(gw: &Gateway, path: &str, key: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| gw.get_with_key(path, key).status).collect()
}

fn get_key(gw: &Gateway, key: &str) -> Value {
    let r = gw.admin("GET", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// The sorted keys of a JSON object.
fn object_keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

/// The sorted ids of `GET /tyk/policies`.
fn listed_ids(gw: &Gateway) -> Vec<String> {
    let r = gw.admin("GET", "/tyk/policies", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut ids: Vec<String> = r
        .json()
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {}", r.text()))
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

// ---- loading (§8) ----

#[test]
fn policy_path_loads_each_file_named_by_its_id_field() {
    let up = Upstream::start();
    let gw = builder(&up, &[])
        .file(
            "policies/file-name.json",
            serde_json::to_vec_pretty(&policy("gold", &["a"])).unwrap(),
        )
        .start();
    let r = gw.admin("GET", "/tyk/policies/gold", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "gold");
    assert_eq!(r.json()["access_rights"]["a"]["api_id"], "a");
    assert_admin_error(
        &gw.admin("GET", "/tyk/policies/file-name", None),
        404,
        "Policy not found",
    );
}

#[test]
fn policy_path_skips_a_file_that_does_not_parse() {
    let up = Upstream::start();
    let gw = builder(&up, &[policy("gold", &["a"])])
        .file("policies/broken.json", "{\"id\": \"broken\", \"rate\": ")
        .start();
    assert_eq!(listed_ids(&gw), ["gold"]);
}

#[test]
fn policy_record_name_loads_map_keys_as_ids() {
    let up = Upstream::start();
    let mut silver = policy("not-the-key", &["a"]);
    silver["rate"] = json!(5);
    let gw = Gateway::builder()
        .conf(json!({"policies": {"policy_record_name": "policies.json"}}))
        .app("a", api_def("a", "/a/", &up.url("/")))
        .file(
            "policies.json",
            serde_json::to_vec_pretty(&json!({ "silver": silver })).unwrap(),
        )
        .start();
    let r = gw.admin("GET", "/tyk/policies/silver", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "silver");
    assert_eq!(r.json()["rate"].as_f64(), Some(5.0));
    assert_eq!(listed_ids(&gw), ["silver"]);
}

#[test]
fn tyk_example_policies_file_loads_via_policy_record_name() {
    let up = Upstream::start();
    let example = std::fs::read(test_data("data/policies.json.example")).unwrap();
    let gw = Gateway::builder()
        .conf(json!({"policies": {"policy_record_name": "policies.json"}}))
        .app("a", api_def("a", "/a/", &up.url("/")))
        .file("policies.json", example)
        .start();
    let r = gw.admin("GET", "/tyk/policies/default", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_eq!(p["id"], "default");
    assert_eq!(p["_id"], "");
    assert_eq!(p["org_id"], "54de205930c55e15bd000001");
    assert_eq!(p["rate"].as_f64(), Some(1000.0));
    assert_eq!(p["per"].as_f64(), Some(1.0));
    assert_eq!(p["quota_max"], 100);
    assert_eq!(p["quota_renewal_rate"], 60);
    assert_eq!(
        object_keys(&p["access_rights"]),
        ["41433797848f41a558c1573d3e55a410"]
    );
    assert_eq!(
        p["access_rights"]["41433797848f41a558c1573d3e55a410"]["versions"],
        json!(["Default"])
    );
}

#[test]
fn policy_path_wins_over_policy_record_name() {
    let up = Upstream::start();
    let gw = builder(&up, &[policy("fromdir", &["a"])])
        .conf(json!({"policies": {
            "policy_path": "policies",
            "policy_record_name": "policies.json"
        }}))
        .file(
            "policies.json",
            serde_json::to_vec_pretty(&json!({"fromrecord": policy("fromrecord", &["a"])}))
                .unwrap(),
        )
        .start();
    assert_eq!(listed_ids(&gw), ["fromdir"]);
}

#[test]
fn no_policy_config_loads_no_policies() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("a", api_def("a", "/a/", &up.url("/")))]);
    let r = gw.admin("GET", "/tyk/policies", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([]));
}

// ---- GET /tyk/policies (§1.6) ----

#[test]
fn list_policies_returns_loaded_policies_with_tyk_fields() {
    let (gw, _up) = start(&[policy("alpha", &["a"]), policy("beta", &["b"])]);
    let r = gw.admin("GET", "/tyk/policies", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let list = r.json();
    let list = list.as_array().expect("array");
    assert_eq!(list.len(), 2, "{}", r.text());
    for p in list {
        let id = p["id"].as_str().expect("id");
        let api = if id == "alpha" { "a" } else { "b" };
        assert_eq!(p["_id"], "", "{p}");
        assert_eq!(p["org_id"], "default", "{p}");
        assert_eq!(p["rate"].as_f64(), Some(1000.0), "{p}");
        assert_eq!(p["per"].as_f64(), Some(1.0), "{p}");
        assert_eq!(p["quota_max"], -1, "{p}");
        assert_eq!(object_keys(&p["access_rights"]), [api], "{p}");
        assert_eq!(
            object_keys(&p["partitions"]),
            ["acl", "complexity", "per_api", "quota", "rate_limit"],
            "{p}"
        );
    }
    assert_eq!(listed_ids(&gw), ["alpha", "beta"]);
}

#[test]
fn get_unknown_policy_is_404_policy_not_found() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("GET", "/tyk/policies/silver", None);
    assert_admin_error(&r, 404, "Policy not found");
}

#[test]
fn policies_admin_without_secret_is_403() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = request(gw.admin_port(), "GET", "/tyk/policies", &[], None);
    assert_admin_error(
        &r,
        403,
        "Attempted administrative access with invalid or missing key!",
    );
    let r = request(gw.admin_port(), "GET", "/tyk/policies/gold", &[], None);
    assert_admin_error(
        &r,
        403,
        "Attempted administrative access with invalid or missing key!",
    );
}

#[test]
fn patch_policy_is_405_method_not_supported() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("PATCH", "/tyk/policies/gold", Some(policy("gold", &["a"])));
    assert_admin_error(&r, 405, "Method not supported");
}

// ---- POST /tyk/policies ----

#[test]
fn post_policy_writes_a_pretty_file_and_answers_added() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("POST", "/tyk/policies", Some(policy("gold", &["a"])));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("added", "gold", None));
    let text = std::fs::read_to_string(policy_file(&gw, "gold")).expect("policies/gold.json");
    assert!(
        text.starts_with("{\n  \""),
        "not 2-space pretty JSON: {text}"
    );
    let written: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(written["id"], "gold");
    assert_eq!(written["access_rights"]["a"]["api_id"], "a");
}

#[test]
fn posted_policy_is_served_only_after_reload() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("POST", "/tyk/policies", Some(policy("gold", &["a"])));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_admin_error(
        &gw.admin("GET", "/tyk/policies/gold", None),
        404,
        "Policy not found",
    );
    gw.reload();
    let r = gw.admin("GET", "/tyk/policies/gold", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], "gold");
}

#[test]
fn post_policy_to_a_path_id_uses_the_body_id() {
    let (gw, _up) = start(&[]);
    let r = gw.admin(
        "POST",
        "/tyk/policies/anything",
        Some(policy("gold", &["a"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("added", "gold", None));
    assert!(policy_file(&gw, "gold").exists());
    assert!(!policy_file(&gw, "anything").exists());
}

#[test]
fn post_policy_over_an_existing_id_overwrites_it() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let mut p = policy("gold", &["b"]);
    p["rate"] = json!(5);
    let r = gw.admin("POST", "/tyk/policies", Some(p));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("added", "gold", None));
    gw.reload();
    let got = gw.admin("GET", "/tyk/policies/gold", None).json();
    assert_eq!(got["rate"].as_f64(), Some(5.0));
    assert_eq!(object_keys(&got["access_rights"]), ["b"]);
}

#[test]
fn post_policy_with_bad_json_is_400_request_malformed() {
    let (gw, _up) = start(&[]);
    let r = gw.admin_raw("POST", "/tyk/policies", b"{not json");
    assert_admin_error(&r, 400, "Request malformed");
    let r = gw.admin_raw("POST", "/tyk/policies", br#"{"id": "gold", "rate": "x"}"#);
    assert_admin_error(&r, 400, "Request malformed");
    // Fields Gatehouse keeps as sent still need Tyk's types (found by
    // replaying schemathesis's bodies: they were stored and served back).
    for body in [
        json!({"id": "gold", "post_expiry_action": {}}),
        json!({"id": "gold", "smoothing": {"threshold": "high"}}),
        json!({"id": "gold", "access_rights": {"a": {"api_id": "a", "allowed_types": "all"}}}),
    ] {
        let r = gw.admin("POST", "/tyk/policies", Some(body));
        assert_admin_error(&r, 400, "Request malformed");
    }
    assert!(!policy_file(&gw, "gold").exists());
}

#[test]
fn post_policy_with_a_slash_in_its_id_is_400() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("POST", "/tyk/policies", Some(policy("a/b", &["a"])));
    assert_admin_error(&r, 400, BAD_ID);
}

#[test]
fn post_policy_with_a_space_in_its_id_is_400() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("POST", "/tyk/policies", Some(policy("a b", &["a"])));
    assert_admin_error(&r, 400, BAD_ID);
}

#[test]
fn post_policy_without_id_is_400() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("POST", "/tyk/policies", Some(policy("", &["a"])));
    assert_admin_error(&r, 400, "Unable to create policy without id.");
    let mut p = policy("x", &["a"]);
    p.as_object_mut().unwrap().remove("id");
    let r = gw.admin("POST", "/tyk/policies", Some(p));
    assert_admin_error(&r, 400, "Unable to create policy without id.");
}

#[test]
fn post_policy_without_the_policy_folder_is_500() {
    let up = Upstream::start();
    let gw = Gateway::builder()
        .conf(json!({"policies": {"policy_path": "missing"}}))
        .app("a", api_def("a", "/a/", &up.url("/")))
        .start();
    let r = gw.admin("POST", "/tyk/policies", Some(policy("gold", &["a"])));
    assert_admin_error(&r, 500, "Unable to access policy storage.");
}

// ---- PUT /tyk/policies/{id} ----

#[test]
fn put_policy_with_matching_id_answers_modified() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let mut p = policy("gold", &["a"]);
    p["rate"] = json!(5);
    let r = gw.admin("PUT", "/tyk/policies/gold", Some(p));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("modified", "gold", None));
    let written: Value =
        serde_json::from_slice(&std::fs::read(policy_file(&gw, "gold")).unwrap()).unwrap();
    assert_eq!(written["rate"].as_f64(), Some(5.0));
}

#[test]
fn put_policy_with_another_body_id_is_400() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("PUT", "/tyk/policies/gold", Some(policy("silver", &["a"])));
    assert_admin_error(
        &r,
        400,
        "Request ID does not match that in policy! For Update operations these must match.",
    );
    assert!(!policy_file(&gw, "silver").exists());
}

#[test]
fn put_policies_without_id_is_400() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("PUT", "/tyk/policies", Some(policy("gold", &["a"])));
    assert_admin_error(&r, 400, "Must specify an apiID to update");
}

// ---- DELETE /tyk/policies/{id} ----

#[test]
fn delete_policy_removes_its_file_and_answers_deleted() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("DELETE", "/tyk/policies/gold", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("deleted", "gold", None));
    assert!(!policy_file(&gw, "gold").exists());
    gw.reload();
    assert_admin_error(
        &gw.admin("GET", "/tyk/policies/gold", None),
        404,
        "Policy not found",
    );
}

#[test]
fn delete_policy_without_a_file_is_500_delete_failed() {
    let (gw, _up) = start(&[]);
    let r = gw.admin("DELETE", "/tyk/policies/gold", None);
    assert_admin_error(&r, 500, "Delete failed");
}

#[test]
fn delete_policies_without_id_is_400() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin("DELETE", "/tyk/policies", None);
    assert_admin_error(&r, 400, "Must specify an apiID to delete");
    assert!(policy_file(&gw, "gold").exists());
}

// ---- POST /tyk/keys/policy/{key} ----

#[test]
fn key_policy_update_replaces_apply_policies_without_reload() {
    let (gw, up) = start(&[policy("pa", &["a"]), policy("pb", &["b"])]);
    let key = gw.create_key(key_with(&["pa"], &["a"]));
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    let r = gw.admin(
        "POST",
        &format!("/tyk/keys/policy/{key}"),
        Some(json!({"apply_policies": ["pb"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("updated", &key, None));
    assert_eq!(get_key(&gw, &key)["apply_policies"], json!(["pb"]));
    assert_eq!(gw.get_with_key("/b/x", &key).status, 200);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
    assert_eq!(up.hits(), 2);
}

#[test]
fn key_policy_update_with_policy_field_appends_it() {
    let (gw, _up) = start(&[policy("pa", &["a"]), policy("pb", &["b"])]);
    let key = gw.create_key(key_with(&["pa"], &["a"]));
    let r = gw.admin(
        "POST",
        &format!("/tyk/keys/policy/{key}"),
        Some(json!({"policy": "pb"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), ok_body("updated", &key, None));
    assert_eq!(get_key(&gw, &key)["apply_policies"], json!(["pb"]));
    assert_eq!(gw.get_with_key("/b/x", &key).status, 200);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
}

#[test]
fn key_policy_update_reads_nulls_as_empty_fields() {
    let (gw, _up) = start(&[policy("pa", &["a"]), policy("pb", &["b"])]);
    let key = gw.create_key(key_with(&["pa"], &["a"]));
    let r = gw.admin(
        "POST",
        &format!("/tyk/keys/policy/{key}"),
        Some(json!({"apply_policies": ["pb"], "policy": null})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_key(&gw, &key)["apply_policies"], json!(["pb"]));
    let r = gw.admin(
        "POST",
        &format!("/tyk/keys/policy/{key}"),
        Some(json!({"apply_policies": null, "policy": "pa"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get_key(&gw, &key)["apply_policies"], json!(["pa"]));
}

#[test]
fn key_policy_update_of_unknown_key_is_404() {
    let (gw, _up) = start(&[policy("pa", &["a"])]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/policy/defaultnosuchkey",
        Some(json!({"apply_policies": ["pa"]})),
    );
    assert_admin_error(&r, 404, "Key not found");
}

#[test]
fn key_policy_update_with_bad_json_is_400() {
    let (gw, _up) = start(&[policy("pa", &["a"])]);
    let key = gw.create_key(key_with(&["pa"], &["a"]));
    let r = gw.admin_raw("POST", &format!("/tyk/keys/policy/{key}"), b"{oops");
    assert_admin_error(&r, 400, "Couldn't decode instruction");
}

// ---- applying policies on key create ----

#[test]
fn create_key_stores_the_policy_rights_limits_tags_and_meta_data() {
    let mut gold = policy("gold", &["a"]);
    gold["rate"] = json!(7);
    gold["per"] = json!(3);
    gold["quota_max"] = json!(11);
    gold["tags"] = json!(["p-tag"]);
    gold["meta_data"] = json!({"tier": "gold", "shared": "policy"});
    let (gw, _up) = start(&[gold]);
    let mut s = key_with(&["gold"], &["b"]);
    s["tags"] = json!(["k-tag"]);
    s["meta_data"] = json!({"shared": "key", "own": "x"});
    let key = gw.create_key(s);
    let got = get_key(&gw, &key);
    assert_eq!(object_keys(&got["access_rights"]), ["a"], "{got}");
    assert_eq!(got["access_rights"]["a"]["versions"], json!(["Default"]));
    assert_eq!(got["rate"].as_f64(), Some(7.0), "{got}");
    assert_eq!(got["per"].as_f64(), Some(3.0), "{got}");
    assert_eq!(got["quota_max"], 11, "{got}");
    let mut tags: Vec<&str> = got["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["k-tag", "p-tag"]);
    assert_eq!(
        got["meta_data"],
        json!({"tier": "gold", "shared": "policy", "own": "x"})
    );
}

#[test]
fn create_key_with_a_missing_policy_is_500() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/create",
        Some(key_with(&["silver"], &["a"])),
    );
    assert_admin_error(
        &r,
        500,
        "Failed to create key - policy not found: \"silver\"",
    );
}

#[test]
fn add_named_key_with_a_missing_policy_is_500() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/my-policy-key",
        Some(key_with(&["silver"], &["a"])),
    );
    assert_admin_error(
        &r,
        500,
        "Failed to create key, ensure security settings are correct.",
    );
    assert_proxy_error(&gw.get_with_key("/a/x", "my-policy-key"), 403, DENIED);
}

#[test]
fn add_named_key_applies_its_policy() {
    let mut gold = policy("gold", &["a"]);
    gold["quota_max"] = json!(2);
    let (gw, _up) = start(&[gold]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/my-policy-key",
        Some(key_with(&["gold"], &["b"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        statuses(&gw, "/a/x", "my-policy-key", 2),
        [200, 200],
        "the policy grants a"
    );
    assert_proxy_error(&gw.get_with_key("/a/x", "my-policy-key"), 403, QUOTA);
    assert_proxy_error(&gw.get_with_key("/b/x", "my-policy-key"), 403, DENIED);
}

// ---- applying policies on requests ----

#[test]
fn key_with_a_policy_of_its_org_reaches_the_api_it_grants() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    let r = gw.get_with_key("/a/x", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);
}

#[test]
fn tyk_example_policy_applies_to_a_key_of_its_org() {
    let up = Upstream::start();
    let api = "41433797848f41a558c1573d3e55a410";
    let org = "54de205930c55e15bd000001";
    let mut def = api_def(api, "/ex/", &up.url("/"));
    def["org_id"] = json!(org);
    let gw = Gateway::builder()
        .conf(json!({"policies": {"policy_record_name": "policies.json"}}))
        .app("example", def)
        .file(
            "policies.json",
            std::fs::read(test_data("data/policies.json.example")).unwrap(),
        )
        .start();
    let mut s = key_with(&["default"], &[api]);
    s["org_id"] = json!(org);
    s["quota_max"] = json!(-1);
    let key = gw.create_key(s);
    assert_eq!(get_key(&gw, &key)["quota_max"], 100);
    let r = gw.get_with_key("/ex/x", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("X-RateLimit-Limit"), Some("100"));
}

#[test]
fn policy_quota_applies_to_a_key_with_apply_policies() {
    let mut gold = policy("gold", &["a"]);
    gold["quota_max"] = json!(2);
    let (gw, up) = start(&[gold]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 2), [200, 200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, QUOTA);
    assert_eq!(up.hits(), 2);
}

#[test]
fn policy_rate_limit_applies_to_a_key_with_apply_policies() {
    let mut gold = policy("gold", &["a"]);
    gold["rate"] = json!(1);
    gold["per"] = json!(60);
    let (gw, up) = start(&[gold]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 1), [200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 429, RATE);
    assert_eq!(up.hits(), 1);
}

#[test]
fn key_whose_policy_was_removed_is_refused_after_reload() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    std::fs::remove_file(policy_file(&gw, "gold")).unwrap();
    gw.reload();
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
    assert_eq!(up.hits(), 1);
}

#[test]
fn inactive_policy_makes_its_keys_inactive() {
    let mut gold = policy("gold", &["a"]);
    gold["is_inactive"] = json!(true);
    let (gw, up) = start(&[gold]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, INACTIVE);
    assert_eq!(up.hits(), 0);
}

#[test]
fn key_own_is_inactive_is_ignored_when_policies_apply() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let mut s = key_with(&["gold"], &["a"]);
    s["is_inactive"] = json!(true);
    let key = gw.create_key(s);
    let r = gw.get_with_key("/a/x", &key);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn partitioned_policies_keep_independent_quotas_per_api() {
    let parts = json!({"quota": true, "rate_limit": true, "acl": true});
    let mut pa = policy("pa", &["a"]);
    pa["quota_max"] = json!(2);
    pa["partitions"] = parts.clone();
    let mut pb = policy("pb", &["b"]);
    pb["quota_max"] = json!(3);
    pb["partitions"] = parts;
    let (gw, _up) = start(&[pa, pb]);
    let key = gw.create_key(key_with(&["pa", "pb"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 2), [200, 200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, QUOTA);
    assert_eq!(statuses(&gw, "/b/x", &key, 3), [200, 200, 200]);
    assert_proxy_error(&gw.get_with_key("/b/x", &key), 403, QUOTA);
}

#[test]
fn per_api_policy_limits_each_api_separately() {
    let mut p = policy("perapi", &["a", "b"]);
    p["partitions"] = json!({"per_api": true});
    p["quota_max"] = json!(5);
    p["access_rights"]["a"]["limit"] = json!({
        "rate": 1000,
        "per": 1,
        "quota_max": 1,
        "quota_renewal_rate": 3600
    });
    let (gw, _up) = start(&[p]);
    let key = gw.create_key(key_with(&["perapi"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 1), [200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, QUOTA);
    assert_eq!(statuses(&gw, "/b/x", &key, 5), [200; 5]);
    assert_proxy_error(&gw.get_with_key("/b/x", &key), 403, QUOTA);
}

#[test]
fn same_api_in_two_policies_takes_the_larger_quota() {
    let mut small = policy("small", &["a"]);
    small["quota_max"] = json!(2);
    let mut large = policy("large", &["a"]);
    large["quota_max"] = json!(4);
    let (gw, _up) = start(&[small, large]);
    let key = gw.create_key(key_with(&["small", "large"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 4), [200; 4]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, QUOTA);
}

#[test]
fn same_api_in_two_policies_unlimited_quota_wins() {
    let mut small = policy("small", &["a"]);
    small["quota_max"] = json!(2);
    let unlimited = policy("unlimited", &["a"]);
    let (gw, _up) = start(&[small, unlimited]);
    let key = gw.create_key(key_with(&["small", "unlimited"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 5), [200; 5]);
}

#[test]
fn policy_changed_on_disk_applies_to_existing_keys_after_reload() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    assert_proxy_error(&gw.get_with_key("/b/x", &key), 403, DENIED);
    write_policy(&gw, &policy("gold", &["b"]));
    gw.reload();
    assert_eq!(gw.get_with_key("/b/x", &key).status, 200);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
}

#[test]
fn policy_does_not_apply_on_an_api_of_another_org() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    let mut def = api_def("a", "/a/", &up.url("/"));
    def["org_id"] = json!("other");
    std::fs::write(
        gw.dir().join("apps/a.json"),
        serde_json::to_vec_pretty(&def).unwrap(),
    )
    .unwrap();
    gw.reload();
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
    assert_eq!(up.hits(), 1);
}

// ---- security tries ----

#[test]
fn key_cannot_grant_itself_an_api_its_policy_does_not_grant() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a", "b"]));
    assert_proxy_error(&gw.get_with_key("/b/x", &key), 403, DENIED);
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    assert_eq!(up.hits(), 1);
}

#[test]
fn policy_id_is_case_sensitive_on_create() {
    let (gw, _up) = start(&[policy("gold", &["a"])]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/create",
        Some(key_with(&["GOLD"], &["a"])),
    );
    assert_admin_error(&r, 500, "Failed to create key - policy not found: \"GOLD\"");
}

#[test]
fn policy_id_is_case_sensitive_on_requests() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    let r = gw.admin(
        "POST",
        &format!("/tyk/keys/policy/{key}"),
        Some(json!({"apply_policies": ["GOLD"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
    assert_eq!(up.hits(), 0);
}

#[test]
fn policy_of_another_org_is_not_found_on_create() {
    let mut gold = policy("gold", &["a"]);
    gold["org_id"] = json!("other");
    let (gw, _up) = start(&[gold]);
    let r = gw.admin(
        "POST",
        "/tyk/keys/create",
        Some(key_with(&["gold"], &["a"])),
    );
    assert_admin_error(&r, 500, "Failed to create key - policy not found: \"gold\"");
}

#[test]
fn policy_of_another_org_does_not_apply_on_requests() {
    let (gw, up) = start(&[policy("gold", &["a"])]);
    let key = gw.create_key(key_with(&["gold"], &["a"]));
    assert_eq!(gw.get_with_key("/a/x", &key).status, 200);
    let mut gold = policy("gold", &["a"]);
    gold["org_id"] = json!("other");
    write_policy(&gw, &gold);
    gw.reload();
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, DENIED);
    assert_eq!(up.hits(), 1);
}

#[test]
fn duplicate_policy_ids_do_not_double_the_quota() {
    let mut gold = policy("gold", &["a"]);
    gold["quota_max"] = json!(2);
    let (gw, up) = start(&[gold]);
    let key = gw.create_key(key_with(&["gold", "gold"], &["a"]));
    assert_eq!(get_key(&gw, &key)["quota_max"], 2);
    assert_eq!(statuses(&gw, "/a/x", &key, 2), [200, 200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 403, QUOTA);
    assert_eq!(up.hits(), 2);
}

#[test]
fn duplicate_policy_ids_do_not_double_the_rate() {
    let mut gold = policy("gold", &["a"]);
    gold["rate"] = json!(1);
    gold["per"] = json!(60);
    let (gw, up) = start(&[gold]);
    let key = gw.create_key(key_with(&["gold", "gold"], &["a"]));
    assert_eq!(statuses(&gw, "/a/x", &key, 1), [200]);
    assert_proxy_error(&gw.get_with_key("/a/x", &key), 429, RATE);
    assert_eq!(up.hits(), 1);
}
