//! Shared helpers for the black-box tests: the gateway process
//! (`gateway`), a raw HTTP/1.1 client (`http`), mock upstreams
//! (`upstream`), and builders for API definitions, sessions and Tyk's
//! exact error bodies.
#![allow(dead_code)]

pub mod gateway;
pub mod http;
pub mod probe;
pub mod redis;
pub mod scripted;
pub mod tls;
pub mod upstream;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

#[allow(unused_imports)]
pub use gateway::{Exited, Gateway, GatewayBuilder, SECRET, default_conf, run_cli, run_cli_env};
#[allow(unused_imports)]
pub use http::{Conn, Resp, request, send_raw, send_raw_timeout};
#[allow(unused_imports)]
pub use upstream::{UpReq, UpResp, Upstream};

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub fn eventually(mut cond: impl FnMut() -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A free port to hand to a config that cannot use 0.
pub fn free_port() -> u16 {
    closed_port()
}

/// The crate root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file under `tests/`.
pub fn test_data(rel: &str) -> PathBuf {
    repo_root().join("tests").join(rel)
}

/// A protected (token auth) Tyk Classic API, not versioned, listen path
/// stripped, org `default`.
pub fn api_def(api_id: &str, listen_path: &str, target_url: &str) -> Value {
    json!({
        "name": format!("API {api_id}"),
        "api_id": api_id,
        "org_id": "default",
        "use_keyless": false,
        "auth": {"auth_header_name": "Authorization"},
        "definition": {"location": "header", "key": "x-api-version"},
        "version_data": {
            "not_versioned": true,
            "versions": {"Default": {"name": "Default"}}
        },
        "proxy": {
            "listen_path": listen_path,
            "target_url": target_url,
            "strip_listen_path": true
        }
    })
}

/// Like `api_def`, keyless.
pub fn keyless_api(api_id: &str, listen_path: &str, target_url: &str) -> Value {
    let mut d = api_def(api_id, listen_path, target_url);
    d["use_keyless"] = json!(true);
    d
}

/// The exact session body of the "Access an API" walkthrough
/// (seed/access-an-api.md), with `{API-ID}` and `{API-NAME}` filled in.
pub fn walkthrough_body(api_id: &str, api_name: &str) -> String {
    r#"{
    "allowance": 1000,
    "rate": 1000,
    "per": 1,
    "expires": -1,
    "quota_max": -1,
    "org_id": "1",
    "quota_renews": 1449051461,
    "quota_remaining": -1,
    "quota_renewal_rate": 60,
    "access_rights": {
      "{API-ID}": {
        "api_id": "{API-ID}",
        "api_name": "{API-NAME}",
        "versions": ["Default"]
      }
    },
    "meta_data": {}
  }"#
    .replace("{API-ID}", api_id)
    .replace("{API-NAME}", api_name)
}

/// A session with access to each API (versions `["Default"]`).
pub fn session_for(api_ids: &[&str]) -> Value {
    let mut rights = serde_json::Map::new();
    for id in api_ids {
        rights.insert(
            id.to_string(),
            json!({"api_id": id, "api_name": id, "versions": ["Default"]}),
        );
    }
    json!({
        "allowance": 1000,
        "rate": 1000,
        "per": 1,
        "expires": -1,
        "quota_max": -1,
        "org_id": "default",
        "quota_remaining": -1,
        "quota_renewal_rate": 60,
        "access_rights": rights,
        "meta_data": {}
    })
}

/// Tyk's proxy error body (CONTRACT §4).
pub fn proxy_error_body(message: &str) -> String {
    format!(
        "{{\n    \"error\": {}\n}}",
        serde_json::Value::from(message)
    )
}

/// Tyk's admin error body (CONTRACT §1), trailing newline included.
pub fn admin_error_body(message: &str) -> String {
    format!(
        "{{\"status\":\"error\",\"message\":{}}}\n",
        serde_json::Value::from(message)
    )
}

/// Asserts a byte-exact Tyk proxy error: status, body, Content-Type and
/// `X-Generator: tyk.io`.
#[track_caller]
pub fn assert_proxy_error(r: &Resp, status: u16, message: &str) {
    assert_eq!(
        (r.status, r.text()),
        (status, proxy_error_body(message)),
        "proxy error"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-generator"), Some("tyk.io"));
}

/// Asserts a byte-exact admin error: status, body and Content-Type.
#[track_caller]
pub fn assert_admin_error(r: &Resp, status: u16, message: &str) {
    assert_eq!(
        (r.status, r.text()),
        (status, admin_error_body(message)),
        "admin error"
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

/// `{"key":k,"status":"ok","action":a}` plus optional `key_hash`, newline.
pub fn ok_body(action: &str, key: &str, key_hash: Option<&str>) -> String {
    let mut s = format!(
        "{{\"key\":{},\"status\":\"ok\",\"action\":{}",
        Value::from(key),
        Value::from(action)
    );
    if let Some(h) = key_hash {
        s.push_str(&format!(",\"key_hash\":{}", Value::from(h)));
    }
    s.push_str("}\n");
    s
}
