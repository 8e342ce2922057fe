//! Versioning (CONTRACT §7) and `X-Tyk-Api-Expires` (§3.3).

use serde_json::{Value, json};

use crate::support::*;

const EXPIRES_3000: &str = "Thu, 02 Jan 3000 15:04:00 UTC";

fn not_versioned(up: &Upstream, versions: Value) -> Gateway {
    let mut d = keyless_api("nv", "/nv/", &up.url("/"));
    d["version_data"] = json!({"not_versioned": true, "versions": versions});
    Gateway::start(json!({}), &[("nv", d)])
}

/// A protected API versioned by header `x-api-version`: v1 (never
/// expires), old (expired), v3 (expires 3000-01-02 15:04).
fn versioned(up: &Upstream, extra: Value) -> Gateway {
    let mut d = api_def("ver", "/ver/", &up.url("/"));
    d["definition"] = json!({"location": "header", "key": "x-api-version"});
    d["version_data"] = json!({
        "not_versioned": false,
        "versions": {
            "v1": {"name": "v1", "expires": ""},
            "old": {"name": "old", "expires": "2000-01-01 00:00"},
            "v3": {"name": "v3", "expires": "3000-01-02 15:04"}
        }
    });
    if let Some(obj) = extra.as_object() {
        for (k, v) in obj {
            d["version_data"][k] = v.clone();
        }
    }
    Gateway::start(json!({}), &[("ver", d)])
}

fn key_for_versions(gw: &Gateway, versions: &[&str]) -> String {
    let mut s = session_for(&["ver"]);
    s["access_rights"]["ver"]["versions"] = json!(versions);
    gw.create_key(s)
}

fn get_version(gw: &Gateway, key: &str, version: Option<&str>) -> Resp {
    let mut h = vec![("Authorization", key)];
    if let Some(v) = version {
        h.push(("x-api-version", v));
    }
    gw.get("/ver/x", &h)
}

// ---- not_versioned ----

#[test]
fn not_versioned_single_version_is_used_whatever_its_name() {
    let up = Upstream::start();
    let gw = not_versioned(&up, json!({"only": {"name": "only"}}));
    assert_eq!(gw.get("/nv/x", &[]).status, 200);
}

#[test]
fn not_versioned_two_defaults_is_403_ambiguous() {
    let up = Upstream::start();
    let gw = not_versioned(
        &up,
        json!({"Default": {"name": "Default"}, "default": {"name": "default"}}),
    );
    assert_proxy_error(
        &gw.get("/nv/x", &[]),
        403,
        "Ambiguous default API version for this non-versioned API",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn not_versioned_without_default_is_403_no_default() {
    let up = Upstream::start();
    let gw = not_versioned(&up, json!({"a": {"name": "a"}, "b": {"name": "b"}}));
    assert_proxy_error(
        &gw.get("/nv/x", &[]),
        403,
        "No default API version for this non-versioned API found",
    );
}

#[test]
fn not_versioned_ignores_the_keys_versions() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("p", api_def("p", "/p/", &up.url("/")))]);
    let mut s = session_for(&["p"]);
    s["access_rights"]["p"]["versions"] = json!(["something-else"]);
    let key = gw.create_key(s);
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
}

#[test]
fn not_versioned_future_expiry_sets_x_tyk_api_expires() {
    let up = Upstream::start();
    let gw = not_versioned(
        &up,
        json!({"Default": {"name": "Default", "expires": "3000-01-02 15:04"}}),
    );
    let r = gw.get("/nv/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tyk-api-expires"), Some(EXPIRES_3000));
}

#[test]
fn no_expiry_means_no_x_tyk_api_expires() {
    let up = Upstream::start();
    let gw = not_versioned(&up, json!({"Default": {"name": "Default"}}));
    let r = gw.get("/nv/x", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-tyk-api-expires"), None);
}

// ---- versioned by header ----

#[test]
fn versioned_without_version_is_403_version_information_not_found() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["v1"]);
    assert_proxy_error(
        &get_version(&gw, &key, None),
        403,
        "Version information not found",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn versioned_version_check_runs_before_auth() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    // No key at all: the version error comes first (§3.5 step 1).
    assert_proxy_error(&gw.get("/ver/x", &[]), 403, "Version information not found");
}

#[test]
fn versioned_unknown_version_is_403_does_not_exist() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["v1"]);
    assert_proxy_error(
        &get_version(&gw, &key, Some("v9")),
        403,
        "This API version does not seem to exist",
    );
}

#[test]
fn versioned_expired_version_is_403_api_version_expired() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["old"]);
    assert_proxy_error(
        &get_version(&gw, &key, Some("old")),
        403,
        "Api Version has expired, please check documentation or contact administrator",
    );
}

#[test]
fn versioned_key_lacking_the_version_is_403_access_disallowed() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["v1"]);
    assert_proxy_error(
        &get_version(&gw, &key, Some("v3")),
        403,
        "Access to this API has been disallowed",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn versioned_key_with_the_version_passes() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["v1"]);
    let r = get_version(&gw, &key, Some("v1"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tyk-api-expires"), None);
}

#[test]
fn versioned_expiring_version_sets_x_tyk_api_expires() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({}));
    let key = key_for_versions(&gw, &["v3"]);
    let r = get_version(&gw, &key, Some("v3"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-tyk-api-expires"), Some(EXPIRES_3000));
}

#[test]
fn versioned_empty_version_uses_default_version() {
    let up = Upstream::start();
    let gw = versioned(&up, json!({"default_version": "v1"}));
    let key = key_for_versions(&gw, &["v1"]);
    assert_eq!(get_version(&gw, &key, None).status, 200);
}

#[test]
fn versioned_unknown_version_falls_back_to_default_when_enabled() {
    let up = Upstream::start();
    let mut d = api_def("ver", "/ver/", &up.url("/"));
    d["definition"] =
        json!({"location": "header", "key": "x-api-version", "fallback_to_default": true});
    d["version_data"] = json!({
        "not_versioned": false,
        "default_version": "v1",
        "versions": {"v1": {"name": "v1"}}
    });
    let gw = Gateway::start(json!({}), &[("ver", d)]);
    let key = key_for_versions(&gw, &["v1"]);
    assert_eq!(get_version(&gw, &key, Some("v9")).status, 200);
}

#[test]
fn versioned_by_url_param() {
    let up = Upstream::start();
    let mut d = keyless_api("vp", "/vp/", &up.url("/"));
    d["definition"] = json!({"location": "url-param", "key": "ver"});
    d["version_data"] = json!({"not_versioned": false, "versions": {"v1": {"name": "v1"}}});
    let gw = Gateway::start(json!({}), &[("vp", d)]);
    assert_eq!(gw.get("/vp/x?ver=v1", &[]).status, 200);
    assert_proxy_error(
        &gw.get("/vp/x?ver=v2", &[]),
        403,
        "This API version does not seem to exist",
    );
}

#[test]
fn versioned_by_url_segment_is_stripped_with_strip_path() {
    let up = Upstream::start();
    let mut d = keyless_api("vu", "/vu/", &up.url("/"));
    d["definition"] = json!({"location": "url", "key": "", "strip_path": true});
    d["version_data"] = json!({"not_versioned": false, "versions": {"v1": {"name": "v1"}}});
    let gw = Gateway::start(json!({}), &[("vu", d)]);
    let r = gw.get("/vu/v1/items", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/items");
}

/// Tyk's own quickstart-style definition (app_sample.json shape) with the
/// walkthrough key: `Default` expiring 3000-01-02 15:04.
#[test]
fn walkthrough_key_on_expiring_default_version_gets_x_tyk_api_expires() {
    let up = Upstream::start();
    let mut d = api_def("qs", "/qs/", &up.url("/"));
    d["version_data"]["versions"]["Default"]["expires"] = json!("3000-01-02 15:04");
    let gw = Gateway::start(json!({}), &[("qs", d)]);
    let r = gw.admin_raw(
        "POST",
        "/tyk/keys/create",
        walkthrough_body("qs", "Quickstart").as_bytes(),
    );
    let key = r.json()["key"].as_str().unwrap().to_string();
    let res = gw.get_with_key("/qs/get", &key);
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.header("x-tyk-api-expires"), Some(EXPIRES_3000));
}
