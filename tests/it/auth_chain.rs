//! Issue 9, item 4: several auth methods on one API, as Tyk chains them.
//! Every method the API enables must accept the request (basic auth, then
//! JWT, then the key with `use_standard_auth`), each reading its own
//! `auth_configs` entry; `base_identity_provided_by` names the method whose
//! session (rights, rate, quota) the request is held to, else the last
//! method's. Then the tries to get around it: one credential instead of
//! two, a credential in the other method's header.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &[u8] = b"chain-secret";

/// API `chain` on `/chain/`: basic auth on `Authorization`, JWT on
/// `X-Jwt`, plus `extra`.
fn chain_api(up: &Upstream, extra: Value) -> Value {
    let mut d = api_def("chain", "/chain/", &up.url("/"));
    d["use_basic_auth"] = json!(true);
    d["enable_jwt"] = json!(true);
    d["jwt_signing_method"] = json!("hmac");
    d["jwt_source"] = json!(STANDARD.encode(SECRET));
    d["jwt_policy_field_name"] = json!("pol");
    d["auth_configs"] = json!({"jwt": {"auth_header_name": "X-Jwt"}});
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

/// Policy `open`: no quota; the basic user has a quota of 2.
fn start(up: &Upstream, extra: Value) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    let open = json!({
        "id": "open", "org_id": "default", "rate": 1000, "per": 1, "quota_max": -1,
        "access_rights": {"chain": {"api_id": "chain", "versions": ["Default"]}}
    });
    let gw = Gateway::builder()
        .dir(dir)
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .file("policies/open.json", open.to_string())
        .app("chain", chain_api(up, extra))
        .start();
    let mut user = session_for(&["chain"]);
    user["basic_auth_data"] = json!({"password": "pw"});
    user["quota_max"] = json!(2);
    user["quota_remaining"] = json!(2);
    user["quota_renewal_rate"] = json!(3600);
    let r = gw.admin("POST", "/tyk/keys/ann", Some(user));
    assert_eq!(r.status, 200, "{}", r.text());
    gw
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "pol": "open", "exp": now() + 600});
    let key = EncodingKey::from_secret(SECRET).unwrap();
    encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
}

fn both(gw: &Gateway) -> Resp {
    gw.get(
        "/chain/x",
        &[
            ("Authorization", &basic("ann", "pw")),
            ("X-Jwt", &token("jay")),
        ],
    )
}

#[test]
fn every_method_must_accept_the_request() {
    let up = Upstream::start();
    let gw = start(&up, json!({}));
    assert_eq!(both(&gw).status, 200, "{:?}", gw.logs());
    // Basic alone: the JWT stage finds no token.
    let r = gw.get("/chain/x", &[("Authorization", &basic("ann", "pw"))]);
    assert_proxy_error(&r, 400, "Authorization field missing");
    // JWT alone: basic auth challenges.
    let r = gw.get("/chain/x", &[("X-Jwt", &token("jay"))]);
    assert_proxy_error(&r, 401, "Authorization field missing");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Basic realm=\"API chain\"")
    );
    // A good token does not make up for a wrong password, nor the reverse.
    let r = gw.get(
        "/chain/x",
        &[
            ("Authorization", &basic("ann", "nope")),
            ("X-Jwt", &token("jay")),
        ],
    );
    assert_proxy_error(&r, 401, "User not authorised");
    let r = gw.get(
        "/chain/x",
        &[
            ("Authorization", &basic("ann", "pw")),
            ("X-Jwt", "not.a.token"),
        ],
    );
    assert_proxy_error(&r, 403, "Key not authorized");
    // The token in basic auth's header is no basic credential.
    let r = gw.get(
        "/chain/x",
        &[("Authorization", &format!("Bearer {}", token("jay")))],
    );
    assert_proxy_error(
        &r,
        400,
        "Attempted access with malformed header, auth data not encoded correctly",
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn without_a_base_identity_the_last_methods_session_counts() {
    let up = Upstream::start();
    let gw = start(&up, json!({}));
    // The JWT identity's policy has no quota: the basic user's 2 does not bind.
    for _ in 0..4 {
        assert_eq!(both(&gw).status, 200);
    }
}

#[test]
fn base_identity_provided_by_names_the_session_that_counts() {
    let up = Upstream::start();
    let gw = start(&up, json!({"base_identity_provided_by": "basic_auth_user"}));
    assert_eq!(both(&gw).status, 200);
    assert_eq!(both(&gw).status, 200);
    assert_proxy_error(&both(&gw), 403, "Quota exceeded");
    // And the JWT identity when it is named.
    let up = Upstream::start();
    let gw = start(&up, json!({"base_identity_provided_by": "jwt_claim"}));
    for _ in 0..4 {
        assert_eq!(both(&gw).status, 200);
    }
}

#[test]
fn a_base_identity_no_method_provides_is_warned_about_and_ignored() {
    let up = Upstream::start();
    let gw = start(&up, json!({"base_identity_provided_by": "Basic_Auth_User"}));
    assert!(
        gw.saw_log("base_identity_provided_by \"Basic_Auth_User\" names no auth method"),
        "{:?}",
        gw.logs()
    );
    for _ in 0..3 {
        assert_eq!(both(&gw).status, 200);
    }
}

#[test]
fn standard_auth_joins_the_chain_with_its_own_header() {
    let up = Upstream::start();
    let gw = start(
        &up,
        json!({
            "enable_jwt": false,
            "use_standard_auth": true,
            "auth_configs": {"authToken": {"auth_header_name": "X-Key"}},
            "base_identity_provided_by": "auth_token",
        }),
    );
    let key = gw.create_key(session_for(&["chain"]));
    let creds = basic("ann", "pw");
    let r = gw.get("/chain/x", &[("Authorization", &creds), ("X-Key", &key)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = gw.get("/chain/x", &[("Authorization", &creds)]);
    assert_proxy_error(&r, 401, "Authorization field missing");
    let r = gw.get("/chain/x", &[("Authorization", &creds), ("X-Key", "wrong")]);
    assert_proxy_error(&r, 403, "Access to this API has been disallowed");
    // The key in basic auth's header is not a key.
    let r = gw.get("/chain/x", &[("Authorization", &key)]);
    assert_eq!(r.status, 400, "{}", r.text());
    // The key's session counts (no quota): more than the user's 2 pass.
    for _ in 0..3 {
        let r = gw.get("/chain/x", &[("Authorization", &creds), ("X-Key", &key)]);
        assert_eq!(r.status, 200);
    }
}

#[test]
fn strip_auth_data_strips_every_methods_credentials() {
    let up = Upstream::start();
    let gw = start(&up, json!({"strip_auth_data": true}));
    assert_eq!(both(&gw).status, 200);
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-jwt"), None);
}

#[test]
fn a_keyless_api_ignores_every_other_auth_flag() {
    let up = Upstream::start();
    let gw = start(&up, json!({"use_keyless": true}));
    assert_eq!(gw.get("/chain/x", &[]).status, 200);
}
