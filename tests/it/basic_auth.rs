//! Issue 9, item 2: basic auth (CONTRACT §10 and §4). Users are created
//! with `POST /tyk/keys/{username}` and a clear password, stored hashed
//! (bcrypt by default), and checked on `use_basic_auth` APIs with Tyk's
//! statuses, messages and `WWW-Authenticate` challenge; then the tries to
//! get around it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::support::*;

const REALM: &str = "Basic realm=\"API basic\"";

/// A basic-auth API `basic` on `/basic/` (org `default`) in front of `up`.
fn basic_api(up: &Upstream) -> Value {
    let mut d = api_def("basic", "/basic/", &up.url("/"));
    d["use_basic_auth"] = json!(true);
    d
}

fn start(conf: Value) -> (Gateway, Upstream) {
    let up = Upstream::start();
    let gw = Gateway::start(conf, &[("basic", basic_api(&up))]);
    (gw, up)
}

/// Creates user `name` with `password` and access to `basic`.
fn add_user(gw: &Gateway, name: &str, password: &str) -> Resp {
    let mut s = session_for(&["basic"]);
    s["basic_auth_data"] = json!({"password": password});
    gw.admin("POST", &format!("/tyk/keys/{name}"), Some(s))
}

fn with_auth(gw: &Gateway, value: &str) -> Resp {
    gw.get("/basic/x", &[("Authorization", value)])
}

fn login(gw: &Gateway, user: &str, password: &str) -> Resp {
    with_auth(
        gw,
        &format!("Basic {}", STANDARD.encode(format!("{user}:{password}"))),
    )
}

#[track_caller]
fn assert_challenged(r: &Resp, message: &str) {
    assert_proxy_error(r, 401, message);
    assert_eq!(r.header("www-authenticate"), Some(REALM));
}

#[test]
fn basic_user_with_the_right_password_reaches_the_upstream() {
    let (gw, up) = start(json!({}));
    let r = add_user(&gw, "ann", "s3cret");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(login(&gw, "ann", "s3cret").status, 200);
    assert_eq!(up.hits(), 1);
    let seen = up.last_request().unwrap();
    assert!(
        seen.header("authorization").is_some(),
        "header forwarded as Tyk does"
    );
}

#[test]
fn no_credentials_is_401_with_a_challenge() {
    let (gw, up) = start(json!({}));
    assert_challenged(&gw.get("/basic/x", &[]), "Authorization field missing");
    assert_eq!(up.hits(), 0);
}

#[test]
fn wrong_password_or_unknown_user_is_401_user_not_authorised() {
    let (gw, up) = start(json!({}));
    add_user(&gw, "ann", "s3cret");
    assert_challenged(&login(&gw, "ann", "wrong"), "User not authorised");
    assert_challenged(&login(&gw, "bob", "s3cret"), "User not authorised");
    assert_challenged(&login(&gw, "ann", ""), "User not authorised");
    assert_eq!(up.hits(), 0);
}

#[test]
fn malformed_headers_are_400_with_tyks_messages() {
    let (gw, up) = start(json!({}));
    let prefix = "Attempted access with malformed header, ";
    for (value, why) in [
        ("Basic", "header not in basic auth format"),
        ("Basic a b", "header not in basic auth format"),
        ("Basic !!notbase64", "auth data not encoded correctly"),
        (
            &format!("Basic {}", STANDARD.encode("no-colon")) as &str,
            "values not in basic auth format",
        ),
        (
            &format!("Basic {}", STANDARD.encode("a:b:c")),
            "values not in basic auth format",
        ),
    ] {
        assert_proxy_error(&with_auth(&gw, value), 400, &format!("{prefix}{why}"));
    }
    assert_eq!(up.hits(), 0);
}

#[test]
fn the_password_is_stored_hashed_with_bcrypt_and_never_shown() {
    let (gw, _up) = start(json!({}));
    let r = add_user(&gw, "ann", "s3cret");
    let key = r.json()["key"].as_str().unwrap().to_string();
    let got = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert_eq!(
        got["basic_auth_data"],
        json!({"password": "", "hash_type": "bcrypt"})
    );
    let store = std::fs::read_dir(gw.dir().join("data")).unwrap();
    for entry in store.flatten() {
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cret"),
            "clear password in {}",
            entry.path().display()
        );
    }
}

#[test]
fn a_configured_hash_function_is_used() {
    let (gw, _up) = start(json!({"basic_auth_hash_key_function": "sha256"}));
    let key = add_user(&gw, "ann", "s3cret").json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let got = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    assert_eq!(got["basic_auth_data"]["hash_type"], json!("sha256"));
    assert_eq!(login(&gw, "ann", "s3cret").status, 200);
    assert_challenged(&login(&gw, "ann", "S3cret"), "User not authorised");
}

#[test]
fn an_unknown_hash_function_stops_the_start() {
    let out = Gateway::builder()
        .conf(json!({"basic_auth_hash_key_function": "md5"}))
        .try_start()
        .err()
        .expect("start refused");
    assert_eq!(out.code(), Some(2));
    let line = out.error_line().unwrap_or_default().to_string();
    assert!(line.contains("basic_auth_hash_key_function"), "{line}");
}

#[test]
fn a_changed_password_replaces_the_old_one_and_an_unchanged_one_is_kept() {
    let (gw, _up) = start(json!({}));
    let key = add_user(&gw, "ann", "one").json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    // Saving the key back as GET shows it (password blank) keeps it.
    let shown = gw.admin("GET", &format!("/tyk/keys/{key}"), None).json();
    let r = gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(shown.clone()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(login(&gw, "ann", "one").status, 200);
    let mut changed = shown;
    changed["basic_auth_data"] = json!({"password": "two"});
    assert_eq!(
        gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(changed))
            .status,
        200
    );
    assert_challenged(&login(&gw, "ann", "one"), "User not authorised");
    assert_eq!(login(&gw, "ann", "two").status, 200);
}

#[test]
fn a_verified_password_is_cached_but_a_wrong_one_never_passes() {
    let (gw, up) = start(json!({}));
    add_user(&gw, "ann", "s3cret");
    for _ in 0..3 {
        assert_eq!(login(&gw, "ann", "s3cret").status, 200);
        assert_challenged(&login(&gw, "ann", "s3creT"), "User not authorised");
    }
    assert_eq!(up.hits(), 3);
}

#[test]
fn a_token_key_is_never_a_basic_auth_user() {
    // A key without basic_auth_data has no password: an empty password
    // must not log in as it (Tyk would let it).
    let (gw, up) = start(json!({}));
    let r = gw.admin("POST", "/tyk/keys/plainkey", Some(session_for(&["basic"])));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_challenged(&login(&gw, "plainkey", ""), "User not authorised");
    assert_challenged(&login(&gw, "defaultplainkey", ""), "User not authorised");
    assert_eq!(up.hits(), 0);
}

#[test]
fn user_names_are_case_sensitive_and_scoped_to_the_apis_org() {
    let up = Upstream::start();
    let mut other_org = basic_api(&up);
    other_org["api_id"] = json!("other");
    other_org["org_id"] = json!("elsewhere");
    other_org["proxy"]["listen_path"] = json!("/other/");
    let gw = Gateway::start(
        json!({}),
        &[("basic", basic_api(&up)), ("other", other_org)],
    );
    let mut s = session_for(&["basic", "other"]);
    s["basic_auth_data"] = json!({"password": "pw"});
    assert_eq!(gw.admin("POST", "/tyk/keys/ann", Some(s)).status, 200);
    assert_eq!(login(&gw, "ann", "pw").status, 200);
    assert_challenged(&login(&gw, "Ann", "pw"), "User not authorised");
    let auth = format!("Basic {}", STANDARD.encode("ann:pw"));
    let r = gw.get("/other/x", &[("Authorization", auth.as_str())]);
    assert_eq!(
        r.status, 401,
        "a user of org default on an API of another org"
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn a_basic_user_with_a_policy_gets_its_rights() {
    let up = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let policy = json!({
        "id": "basic-gold", "org_id": "default", "rate": 1000, "per": 1, "quota_max": 1,
        "quota_renewal_rate": 3600,
        "access_rights": {"basic": {"api_id": "basic", "versions": ["Default"]}}
    });
    let gw = Gateway::builder()
        .dir(dir)
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .file("policies/basic-gold.json", policy.to_string())
        .app("basic", basic_api(&up))
        .start();
    let s = json!({
        "org_id": "default", "apply_policies": ["basic-gold"],
        "basic_auth_data": {"password": "pw"}
    });
    let r = gw.admin("POST", "/tyk/keys/ann", Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(login(&gw, "ann", "pw").status, 200);
    assert_proxy_error(&login(&gw, "ann", "pw"), 403, "Quota exceeded");
}

/// A basic-auth API reading credentials from XML bodies when the header
/// has none.
fn body_api(up: &Upstream) -> Value {
    let mut d = basic_api(up);
    d["basic_auth"] = json!({
        "extract_from_body": true,
        "body_user_regexp": "<User>(.*)</User>",
        "body_password_regexp": "<Password>(.*)</Password>",
    });
    d
}

fn post(gw: &Gateway, headers: &[(&str, &str)], body: &str) -> Resp {
    request(
        gw.port(),
        "POST",
        "/basic/x",
        headers,
        Some(body.as_bytes()),
    )
}

#[test]
fn credentials_can_come_from_the_body_when_the_header_has_none() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("basic", body_api(&up))]);
    add_user(&gw, "ann", "s3:cret");
    let xml = "<Login><User>ann</User><Password>s3:cret</Password></Login>";
    let r = post(&gw, &[], xml);
    assert_eq!(r.status, 200, "{}", r.text());
    // The upstream gets the body whole, as sent.
    assert_eq!(up.last_request().unwrap().body, xml.as_bytes());
    // Chunked, the same.
    let (a, b) = xml.split_at(20);
    let body = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
    let chunked = post(&gw, &[("Transfer-Encoding", "chunked")], &body);
    assert_eq!(chunked.status, 200, "{}", chunked.text());
    let wrong = "<User>ann</User><Password>guess</Password>";
    assert_challenged(&post(&gw, &[], wrong), "User not authorised");
    assert_proxy_error(
        &post(&gw, &[], "<Password>s3:cret</Password>"),
        400,
        "Body do not contain username",
    );
    assert_proxy_error(
        &post(&gw, &[], "<User>ann</User>"),
        400,
        "Body do not contain password",
    );
    // No body at all: nothing to extract.
    assert_proxy_error(
        &gw.get("/basic/x", &[]),
        400,
        "Body do not contain username",
    );
    assert_eq!(up.hits(), 2);
}

#[test]
fn a_header_with_credentials_wins_over_the_body() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("basic", body_api(&up))]);
    add_user(&gw, "ann", "s3cret");
    add_user(&gw, "bob", "other");
    let bob = format!("Basic {}", STANDARD.encode("bob:wrong"));
    let ann = "<User>ann</User><Password>s3cret</Password>";
    // A wrong header password is not rescued by right body credentials.
    assert_challenged(
        &post(&gw, &[("Authorization", &bob)], ann),
        "User not authorised",
    );
    // A malformed header falls back to the body, as Tyk.
    assert_eq!(post(&gw, &[("Authorization", "Basic")], ann).status, 200);
}

#[test]
fn an_api_whose_body_regexp_does_not_compile_is_skipped_naming_it() {
    let up = Upstream::start();
    let mut api = body_api(&up);
    api["basic_auth"]["body_password_regexp"] = json!("<Password>(.*</Password>");
    let gw = Gateway::builder().app("basic", api).start();
    assert!(
        gw.logs().iter().any(|l| l.contains("ERROR")
            && l.contains("basic.json")
            && l.contains("basic_auth.body_password_regexp")),
        "no error naming the file and field:\n{}",
        gw.logs().join("\n")
    );
    assert_eq!(gw.get("/basic/x", &[]).status, 404);
}
