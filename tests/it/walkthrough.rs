//! Tyk's "Access an API" walkthrough (seed/access-an-api.md, Open Source
//! tab), verbatim: create a key with `POST /tyk/keys/create`, then call the
//! API with it. Issue 2's "Done when".

use serde_json::{Value, json};

use crate::support::*;

const API_ID: &str = "walk-api";
const API_NAME: &str = "Walkthrough API";

fn walk_api(up: &Upstream) -> Value {
    let mut d = api_def(API_ID, "/walk/", &up.url("/"));
    d["name"] = json!(API_NAME);
    d
}

fn start(conf: Value, up: &Upstream) -> Gateway {
    Gateway::start(conf, &[("walk", walk_api(up))])
}

/// The walkthrough's curl: POST, `x-tyk-authorization`, JSON body.
fn curl_create(port: u16, secret: &str, body: &str) -> Resp {
    request(
        port,
        "POST",
        "/tyk/keys/create",
        &[
            ("x-tyk-authorization", secret),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    )
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[test]
fn walkthrough_create_key_answers_ok_create() {
    let up = Upstream::start();
    let gw = start(json!({}), &up);
    let r = curl_create(gw.port(), SECRET, &walkthrough_body(API_ID, API_NAME));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(r.text(), ok_body("create", &key, None));
    // Legacy key id: org "1" followed by 32 hex characters.
    assert_eq!(key.len(), 33, "{key}");
    assert!(key.starts_with('1') && is_lower_hex(&key), "{key}");
}

#[test]
fn walkthrough_create_key_with_hash_keys_adds_key_hash() {
    let up = Upstream::start();
    let gw = start(json!({"hash_keys": true}), &up);
    let r = curl_create(gw.port(), SECRET, &walkthrough_body(API_ID, API_NAME));
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let key = v["key"].as_str().unwrap().to_string();
    let hash = v["key_hash"].as_str().unwrap().to_string();
    assert_eq!(r.text(), ok_body("create", &key, Some(&hash)));
    // murmur32 (no hash_key_function): 8 lowercase hex characters.
    assert_eq!(hash.len(), 8, "{hash}");
    assert!(is_lower_hex(&hash), "{hash}");
}

#[test]
fn walkthrough_key_gets_200_from_the_upstream() {
    let up = Upstream::start();
    let gw = start(json!({}), &up);
    let key = curl_create(gw.port(), SECRET, &walkthrough_body(API_ID, API_NAME)).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw.get_with_key("/walk/get", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/get");
    assert_eq!(up.hits(), 1);
}

#[test]
fn walkthrough_hashed_key_gets_200_from_the_upstream() {
    let up = Upstream::start();
    let gw = start(
        json!({"hash_keys": true, "hash_key_function": "murmur64"}),
        &up,
    );
    let key = curl_create(gw.port(), SECRET, &walkthrough_body(API_ID, API_NAME)).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let r = gw.get_with_key("/walk/anything", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);
}

#[test]
fn walkthrough_no_key_is_401_authorization_field_missing() {
    let up = Upstream::start();
    let gw = start(json!({}), &up);
    let r = gw.get("/walk/get", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text(),
        "{\n    \"error\": \"Authorization field missing\"\n}"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-generator"), Some("tyk.io"));
    assert_eq!(up.hits(), 0);
}

#[test]
fn walkthrough_wrong_key_is_403_access_disallowed() {
    let up = Upstream::start();
    let gw = start(json!({}), &up);
    let r = gw.get_with_key("/walk/get", "c2cb92a78f944e9a46de793fe28e847e");
    assert_proxy_error(&r, 403, "Access to this API has been disallowed");
    assert_eq!(up.hits(), 0);
}

/// The repo's own tyk.conf and apps/, as `cargo run` uses them, with the
/// ports moved: the proxy to an ephemeral one, the echo upstream to a free
/// one written into both the config and the copied app files.
fn start_repo_default() -> (Gateway, Value) {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("tyk.conf")).expect("repo tyk.conf");
    let mut conf: Value = serde_json::from_str(&text).expect("repo tyk.conf is JSON");
    let old_echo = conf["echo_upstream"]["listen_port"]
        .as_u64()
        .expect("repo tyk.conf has echo_upstream.listen_port");
    let echo = free_port();
    conf["listen_port"] = json!(0);
    conf["echo_upstream"]["listen_port"] = json!(echo);
    let mut b = Gateway::builder().conf_exact(conf.clone());
    for entry in std::fs::read_dir(root.join("apps")).expect("repo apps/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap().replace(
                &format!("127.0.0.1:{old_echo}"),
                &format!("127.0.0.1:{echo}"),
            );
            let name = path.file_name().unwrap().to_str().unwrap();
            b = b.file(&format!("apps/{name}"), text);
        }
    }
    let gw = b.start();
    assert_eq!(gw.echo_port(), Some(echo));
    (gw, conf)
}

#[test]
fn repo_default_config_serves_the_walkthrough_offline() {
    let (gw, conf) = start_repo_default();
    let secret = conf["secret"].as_str().unwrap();
    let r = curl_create(
        gw.port(),
        secret,
        &walkthrough_body("sample-protected", "Sample Protected API"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    let key = v["key"].as_str().unwrap().to_string();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["action"], "create");

    let ok = gw.get_with_key("/sample/get?x=1", &key);
    assert_eq!(ok.status, 200, "{}", ok.text());
    let echo = ok.json();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/get");

    assert_proxy_error(
        &gw.get("/sample/get", &[]),
        401,
        "Authorization field missing",
    );
    assert_proxy_error(
        &gw.get_with_key("/sample/get", "c2cb92a78f944e9a46de793fe28e847e"),
        403,
        "Access to this API has been disallowed",
    );
}

#[test]
fn repo_default_config_keyless_sample_reaches_the_echo_upstream() {
    let (gw, _) = start_repo_default();
    let r = request(gw.port(), "POST", "/open/post?a=b", &[], Some(b"hello"));
    assert_eq!(r.status, 200, "{}", r.text());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/post");
    assert_eq!(echo["body"], "hello");
}

#[test]
fn a_cold_key_through_the_echo_upstream_needs_no_second_worker() {
    // With one worker, a cold key's request holds it while the gateway
    // calls its own echo upstream: the echo answers on the event loop, or
    // the worker would wait for itself until the upstream timeout.
    let (mut gw, conf) = start_repo_default();
    let secret = conf["secret"].as_str().unwrap().to_string();
    let body = walkthrough_body("sample-protected", "Sample Protected API");
    let key = curl_create(gw.port(), &secret, &body).json()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut conf_file: Value =
        serde_json::from_str(&std::fs::read_to_string(gw.conf_path()).unwrap()).unwrap();
    conf_file["gatehouse"] = json!({"workers": 1});
    conf_file["proxy_default_timeout"] = json!(3);
    std::fs::write(gw.conf_path(), conf_file.to_string()).unwrap();
    gw.stop();
    gw.restart();
    let started = std::time::Instant::now();
    let r = gw.get_with_key("/sample/get", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}
