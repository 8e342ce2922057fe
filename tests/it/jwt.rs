//! Issue 9, item 3: JWT (CONTRACT §10 and §4). Centralised APIs
//! (`jwt_source`: an HMAC secret, an RSA or EC public key) whose tokens
//! name a policy and get a session created and kept in the store; APIs
//! without `jwt_source` whose tokens name a key (`kid`, else `sub`) that
//! holds their secret; time claims with skews; and the tries to get
//! around it (`alg: none`, algorithm confusion, a key from another pair).

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use md5::Digest;
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &[u8] = b"jwt-test-secret";

fn data(name: &str) -> Vec<u8> {
    std::fs::read(test_data(&format!("data/jwt/{name}"))).expect("test key")
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET).unwrap(),
        None,
        claims,
    )
}

fn rs256(private: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&data(private)).unwrap();
    sign(Algorithm::RS256, &key, None, claims)
}

/// A JWT API `jwt` on `/jwt/` (org `default`).
fn jwt_api(up: &Upstream, method: &str, source: &str, extra: Value) -> Value {
    let mut d = api_def("jwt", "/jwt/", &up.url("/"));
    d["enable_jwt"] = json!(true);
    d["jwt_signing_method"] = json!(method);
    d["jwt_source"] = json!(source);
    d["jwt_policy_field_name"] = json!("pol");
    for (k, v) in extra.as_object().unwrap() {
        d[k] = v.clone();
    }
    d
}

fn policy(id: &str, quota_max: i64) -> Value {
    json!({
        "id": id, "org_id": "default", "rate": 1000, "per": 1,
        "quota_max": quota_max, "quota_renewal_rate": 3600,
        "access_rights": {"jwt": {"api_id": "jwt", "versions": ["Default"]}}
    })
}

/// A gateway with `api` and policies `gold` (unlimited) and `two` (quota 2).
fn start(api: Value) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    Gateway::builder()
        .dir(dir)
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .file("policies/gold.json", policy("gold", -1).to_string())
        .file("policies/two.json", policy("two", 2).to_string())
        .app("jwt", api)
        .start()
}

fn hmac_gateway(up: &Upstream, extra: Value) -> Gateway {
    start(jwt_api(up, "hmac", &STANDARD.encode(SECRET), extra))
}

fn call(gw: &Gateway, token: &str) -> Resp {
    gw.get("/jwt/x", &[("Authorization", &format!("Bearer {token}"))])
}

fn claims(sub: &str, pol: &str) -> Value {
    json!({"sub": sub, "pol": pol, "exp": now() + 600})
}

#[test]
fn hs256_token_naming_a_policy_reaches_the_upstream_and_gets_a_session() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let r = call(&gw, &hs256(&claims("ann", "gold")));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);
    // The session Tyk would create: org + md5(identity), alias, policy.
    let id = format!("default{:x}", md5::Md5::digest(b"ann"));
    let s = gw.admin("GET", &format!("/tyk/keys/{id}"), None).json();
    assert_eq!(s["alias"], "ann");
    assert_eq!(s["apply_policies"], json!(["gold"]));
    assert_eq!(s["meta_data"]["TykJWTSessionID"], json!(id));
}

#[test]
fn no_token_is_400() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    assert_proxy_error(&gw.get("/jwt/x", &[]), 400, "Authorization field missing");
}

#[test]
fn a_token_signed_with_another_secret_is_403() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let other = EncodingKey::from_secret(b"not-the-secret").unwrap();
    let t = sign(Algorithm::HS256, &other, None, &claims("ann", "gold"));
    assert_proxy_error(&call(&gw, &t), 403, "Key not authorized");
    assert_proxy_error(&call(&gw, "not.a.token"), 403, "Key not authorized");
    assert_eq!(up.hits(), 0);
}

#[test]
fn alg_none_and_other_families_are_unexpected_signing_methods() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims("ann", "gold").to_string());
    let unsigned = format!("{head}.{body}.");
    let message = "Key not authorized: Unexpected signing method";
    assert_proxy_error(&call(&gw, &unsigned), 403, message);
    let rs = rs256("rsa-private.pem", &claims("ann", "gold"));
    assert_proxy_error(&call(&gw, &rs), 403, message);
    assert_eq!(up.hits(), 0);
}

#[test]
fn an_rsa_public_key_is_never_used_as_an_hmac_secret() {
    // Algorithm confusion: HS256 signed with the bytes of the API's RSA
    // public key must not pass as RS256.
    let up = Upstream::start();
    let public = data("rsa-public.pem");
    let gw = start(jwt_api(&up, "rsa", &STANDARD.encode(&public), json!({})));
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&public).unwrap(),
        None,
        &claims("ann", "gold"),
    );
    let r = call(&gw, &forged);
    assert_proxy_error(&r, 403, "Key not authorized: Unexpected signing method");
    assert_eq!(up.hits(), 0);
}

#[test]
fn rs256_and_es256_tokens_verify_with_their_public_keys() {
    let up = Upstream::start();
    let rsa = data("rsa-public.pem");
    let gw = start(jwt_api(&up, "rsa", &STANDARD.encode(&rsa), json!({})));
    assert_eq!(
        call(&gw, &rs256("rsa-private.pem", &claims("r", "gold"))).status,
        200
    );
    let wrong = rs256("rsa2-private.pem", &claims("r", "gold"));
    assert_proxy_error(&call(&gw, &wrong), 403, "Key not authorized");
    drop(gw);
    let ec = data("ec-public.pem");
    let gw = start(jwt_api(&up, "ecdsa", &STANDARD.encode(&ec), json!({})));
    let key = EncodingKey::from_ec_pem(&data("ec-private.pem")).unwrap();
    let t = sign(Algorithm::ES256, &key, None, &claims("e", "gold"));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(up.hits(), 2);
}

#[test]
fn time_claims_are_checked_with_their_skews() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let t = now();
    let with = |extra: Value| {
        let mut c = claims("ann", "gold");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        hs256(&c)
    };
    let expired = with(json!({"exp": t - 30}));
    assert_proxy_error(
        &call(&gw, &expired),
        401,
        "Key not authorized: token has expired",
    );
    let future_iat = with(json!({"iat": t + 300}));
    let r = call(&gw, &future_iat);
    assert_proxy_error(&r, 401, "Key not authorized: token used before issued");
    let future_nbf = with(json!({"nbf": t + 300}));
    let r = call(&gw, &future_nbf);
    assert_proxy_error(&r, 401, "Key not authorized: token is not valid yet");
    drop(gw);
    let gw = hmac_gateway(&up, json!({"jwt_expires_at_validation_skew": 120}));
    assert_eq!(call(&gw, &expired).status, 200);
}

#[test]
fn a_token_without_a_known_policy_is_refused() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let no_claim = hs256(&json!({"sub": "ann", "exp": now() + 600}));
    let r = call(&gw, &no_claim);
    assert_proxy_error(&r, 403, "key not authorized: no matching policy found");
    let unknown = hs256(&claims("ann", "nope"));
    assert_proxy_error(
        &call(&gw, &unknown),
        403,
        "key not authorized: no matching policy",
    );
    // A policy id differing only in case is another policy.
    let upper = hs256(&claims("ann", "GOLD"));
    assert_proxy_error(
        &call(&gw, &upper),
        403,
        "key not authorized: no matching policy",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn default_policies_apply_without_a_policy_claim() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({"jwt_default_policies": ["gold"]}));
    let t = hs256(&json!({"sub": "ann", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200);
}

#[test]
fn a_jwt_identitys_quota_survives_a_restart() {
    let up = Upstream::start();
    let mut gw = hmac_gateway(&up, json!({}));
    let t = hs256(&claims("ann", "two"));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(call(&gw, &t).status, 200);
    assert_proxy_error(&call(&gw, &t), 403, "Quota exceeded");
    gw.stop();
    gw.restart();
    assert_proxy_error(&call(&gw, &t), 403, "Quota exceeded");
    assert_eq!(up.hits(), 2);
}

#[test]
fn another_identity_has_its_own_session_and_quota() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let ann = hs256(&claims("ann", "two"));
    let bob = hs256(&claims("bob", "two"));
    for _ in 0..2 {
        assert_eq!(call(&gw, &ann).status, 200);
    }
    assert_proxy_error(&call(&gw, &ann), 403, "Quota exceeded");
    assert_eq!(call(&gw, &bob).status, 200);
}

#[test]
fn a_new_policy_claim_switches_the_identitys_session() {
    let up = Upstream::start();
    let gw = hmac_gateway(&up, json!({}));
    let limited = hs256(&claims("ann", "two"));
    for _ in 0..2 {
        assert_eq!(call(&gw, &limited).status, 200);
    }
    assert_proxy_error(&call(&gw, &limited), 403, "Quota exceeded");
    assert_eq!(call(&gw, &hs256(&claims("ann", "gold"))).status, 200);
}

#[test]
fn without_jwt_source_the_kid_names_the_key_holding_the_secret() {
    let up = Upstream::start();
    let gw = start(jwt_api(&up, "hmac", "", json!({})));
    let mut s = session_for(&["jwt"]);
    s["jwt_data"] = json!({"secret": "per-key-secret"});
    let r = gw.admin("POST", "/tyk/keys/ann-key", Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    let key = EncodingKey::from_secret(b"per-key-secret").unwrap();
    let c = json!({"sub": "whoever", "exp": now() + 600});
    let good = sign(Algorithm::HS256, &key, Some("ann-key"), &c);
    assert_eq!(call(&gw, &good).status, 200);
    // No kid: `sub` names the key.
    let by_sub = sign(Algorithm::HS256, &key, None, &json!({"sub": "ann-key"}));
    assert_eq!(call(&gw, &by_sub).status, 200);
    let other = EncodingKey::from_secret(b"guess").unwrap();
    let forged = sign(Algorithm::HS256, &other, Some("ann-key"), &c);
    assert_proxy_error(&call(&gw, &forged), 403, "Key not authorized");
    let unknown = sign(Algorithm::HS256, &key, Some("nobody"), &c);
    assert_proxy_error(&call(&gw, &unknown), 403, "Key not authorized");
    assert_eq!(up.hits(), 2);
}

/// A JWKS server: serves `doc` (changeable) and counts fetches.
struct JwksServer {
    up: Upstream,
    doc: std::sync::Arc<std::sync::Mutex<(u16, Value)>>,
}

impl JwksServer {
    fn start(doc: Value) -> JwksServer {
        let state = std::sync::Arc::new(std::sync::Mutex::new((200, doc)));
        let shared = state.clone();
        let up = Upstream::with_handler(move |_| {
            let (status, doc) = shared.lock().unwrap().clone();
            UpResp::json(status, &doc)
        });
        JwksServer { up, doc: state }
    }

    fn set(&self, status: u16, doc: Value) {
        *self.doc.lock().unwrap() = (status, doc);
    }

    fn url(&self) -> String {
        self.up.url("/.well-known/jwks.json")
    }

    fn fetches(&self) -> usize {
        self.up.hits()
    }
}

/// The test JWKS (`rsa-1`, `rsa-2`, `ec-1`), with only the keys named.
fn jwks(kids: &[&str]) -> Value {
    let all: Value = serde_json::from_slice(&data("jwks.json")).unwrap();
    let keys: Vec<Value> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| kids.contains(&k["kid"].as_str().unwrap()))
        .cloned()
        .collect();
    json!({ "keys": keys })
}

fn rs256_kid(private: &str, kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(&data(private)).unwrap();
    sign(Algorithm::RS256, &key, Some(kid), claims)
}

#[test]
fn rs256_and_es256_tokens_verify_against_a_jwks_fetched_once() {
    let up = Upstream::start();
    let idp = JwksServer::start(jwks(&["rsa-1", "ec-1"]));
    let gw = start(jwt_api(&up, "rsa", &idp.url(), json!({})));
    let t = rs256_kid("rsa-private.pem", "rsa-1", &claims("ann", "gold"));
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
    assert_eq!(call(&gw, &t).status, 200);
    let other = rs256_kid("rsa-private.pem", "rsa-1", &claims("bob", "gold"));
    assert_eq!(call(&gw, &other).status, 200);
    assert_eq!(idp.fetches(), 1, "the set is cached");
    assert_eq!(up.hits(), 3);
    // ES256 against the same kind of source (base64 of the URL, as Tyk
    // also accepts).
    let gw = start(jwt_api(
        &up,
        "ecdsa",
        &STANDARD.encode(idp.url()),
        json!({}),
    ));
    let ec = EncodingKey::from_ec_pem(&data("ec-private.pem")).unwrap();
    let t = sign(Algorithm::ES256, &ec, Some("ec-1"), &claims("ann", "gold"));
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
}

#[test]
fn a_jwks_token_must_name_a_key_of_the_set_that_signed_it() {
    let up = Upstream::start();
    let idp = JwksServer::start(jwks(&["rsa-1"]));
    let gw = start(jwt_api(&up, "rsa", &idp.url(), json!({})));
    // Signed by the other pair but naming rsa-1.
    let forged = rs256_kid("rsa2-private.pem", "rsa-1", &claims("ann", "gold"));
    assert_proxy_error(&call(&gw, &forged), 403, "Key not authorized");
    // No kid at all.
    let bare = rs256("rsa-private.pem", &claims("ann", "gold"));
    assert_proxy_error(&call(&gw, &bare), 403, "Key not authorized");
    // An HMAC token whose secret is the set's own JSON: another family.
    let hs = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&data("jwks.json")).unwrap(),
        Some("rsa-1"),
        &claims("ann", "gold"),
    );
    assert_proxy_error(
        &call(&gw, &hs),
        403,
        "Key not authorized: Unexpected signing method",
    );
    assert_eq!(up.hits(), 0);
}

#[test]
fn an_unknown_kid_refetches_the_set_at_most_once_per_few_seconds() {
    let up = Upstream::start();
    let idp = JwksServer::start(jwks(&["rsa-1"]));
    let gw = start(jwt_api(&up, "rsa", &idp.url(), json!({})));
    let one = rs256_kid("rsa-private.pem", "rsa-1", &claims("ann", "gold"));
    assert_eq!(call(&gw, &one).status, 200);
    assert_eq!(idp.fetches(), 1);
    // The identity provider rotates in rsa-2.
    idp.set(200, jwks(&["rsa-1", "rsa-2"]));
    let two = rs256_kid("rsa2-private.pem", "rsa-2", &claims("bob", "gold"));
    // Right after a fetch, an unknown kid does not fetch again: a stream of
    // made-up kids must not become a stream of fetches.
    for kid in ["rsa-2", "made-up-1", "made-up-2"] {
        let t = rs256_kid("rsa2-private.pem", kid, &claims("bob", "gold"));
        assert_proxy_error(&call(&gw, &t), 403, "Key not authorized");
    }
    assert_eq!(idp.fetches(), 1);
    std::thread::sleep(std::time::Duration::from_millis(6000));
    assert_eq!(call(&gw, &two).status, 200, "{:?}", gw.logs());
    assert_eq!(idp.fetches(), 2);
    assert_eq!(call(&gw, &one).status, 200);
    assert_eq!(idp.fetches(), 2);
}

#[test]
fn the_jwks_cache_can_be_invalidated_through_the_gateway_api() {
    let up = Upstream::start();
    let idp = JwksServer::start(jwks(&["rsa-1"]));
    let gw = start(jwt_api(&up, "rsa", &idp.url(), json!({})));
    let t = rs256_kid("rsa-private.pem", "rsa-1", &claims("ann", "gold"));
    assert_eq!(call(&gw, &t).status, 200);
    let ok = json!({"status": "ok", "message": "cache invalidated"});
    let r = gw.admin("DELETE", "/tyk/cache/jwks/jwt", None);
    assert_eq!((r.status, r.json()), (200, ok.clone()));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(idp.fetches(), 2);
    let r = gw.admin("DELETE", "/tyk/cache/jwks", None);
    assert_eq!((r.status, r.json()), (200, ok.clone()));
    // An API that never fetched: still fine (idempotent, as Tyk).
    let r = gw.admin("DELETE", "/tyk/cache/jwks/no-such-api", None);
    assert_eq!((r.status, r.json()), (200, ok));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(idp.fetches(), 3);
    let r = gw.admin("GET", "/tyk/cache/jwks", None);
    assert_eq!(r.status, 405);
}

#[test]
fn an_identity_provider_that_fails_refuses_tokens_and_says_why_in_the_log() {
    let up = Upstream::start();
    let idp = JwksServer::start(json!({"error": "down"}));
    idp.set(500, json!({"error": "down"}));
    let gw = start(jwt_api(&up, "rsa", &idp.url(), json!({})));
    let t = rs256_kid("rsa-private.pem", "rsa-1", &claims("ann", "gold"));
    assert_proxy_error(&call(&gw, &t), 403, "Key not authorized");
    assert!(
        gw.wait_for_log(
            "could not be fetched: answered 500",
            std::time::Duration::from_secs(5)
        ),
        "{:?}",
        gw.logs()
    );
    assert!(gw.saw_log(&idp.url()));
    // A set with no usable key is as bad.
    idp.set(
        200,
        json!({"keys": [{"kty": "RSA", "kid": "x", "n": "!", "e": "AQAB"}]}),
    );
    // Tokens keep being refused; once the 5 s refetch gap has passed, a
    // token makes the gateway fetch again and log why the set is no good.
    // (Polled rather than slept: a loaded machine may run the call late.)
    let refused_and_said = || {
        assert_proxy_error(&call(&gw, &t), 403, "Key not authorized");
        gw.wait_for_log("no usable key", std::time::Duration::from_millis(200))
    };
    assert!(
        eventually(refused_and_said, std::time::Duration::from_secs(15)),
        "{:?}",
        gw.logs()
    );
    // Back up: after the refetch gap, tokens pass.
    idp.set(200, jwks(&["rsa-1"]));
    assert!(
        eventually(
            || call(&gw, &t).status == 200,
            std::time::Duration::from_secs(15)
        ),
        "{:?}",
        gw.logs()
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn an_https_jwks_source_is_fetched_over_tls_and_its_certificate_checked() {
    let up = Upstream::start();
    let ca = crate::support::tls::Ca::new("idp CA");
    let doc = jwks(&["rsa-1"]).to_string();
    let idp = crate::support::tls::TlsUpstream::with(&ca.leaf(&["localhost"]), move |_, _, _| {
        (200, doc.clone())
    });
    let t = rs256_kid("rsa-private.pem", "rsa-1", &claims("ann", "gold"));
    let trusting = |trust: bool| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let mut b = Gateway::builder()
            .dir(dir)
            .conf(json!({"policies": {"policy_path": "policies"}}))
            .file("policies/gold.json", policy("gold", -1).to_string())
            .app(
                "jwt",
                jwt_api(&up, "rsa", &idp.url("/jwks.json"), json!({})),
            );
        if trust {
            b = b
                .file("idp-ca.pem", ca.pem.clone())
                .env("SSL_CERT_FILE", "idp-ca.pem");
        }
        b.start()
    };
    // Not trusted: the identity provider is never believed.
    let gw = trusting(false);
    assert_proxy_error(&call(&gw, &t), 403, "Key not authorized");
    // The line may reach the log file just after the answer.
    assert!(
        gw.wait_for_log("TLS handshake", std::time::Duration::from_secs(3)),
        "{:?}",
        gw.logs()
    );
    assert_eq!(idp.hits(), 0);
    let gw = trusting(true);
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
    assert_eq!(idp.hits(), 1);
    assert_eq!(up.hits(), 1);
}

/// Policies `read` and `write` besides `gold` and `two`, and scopes
/// mapping to them.
fn scoped_gateway(up: &Upstream, extra: Value) -> Gateway {
    let mut api = jwt_api(up, "hmac", &STANDARD.encode(SECRET), extra);
    api["scopes"] = json!({"jwt": {"scope_to_policy": {"api:read": "read", "api:write": "write"}}});
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("policies")).unwrap();
    Gateway::builder()
        .dir(dir)
        .conf(json!({"policies": {"policy_path": "policies"}}))
        .file("policies/gold.json", policy("gold", -1).to_string())
        .file("policies/two.json", policy("two", 2).to_string())
        .file("policies/read.json", policy("read", 5).to_string())
        .file("policies/write.json", policy("write", 7).to_string())
        .app("jwt", api)
        .start()
}

fn session_policies(gw: &Gateway, identity: &str) -> Value {
    let id = format!("default{:x}", md5::Md5::digest(identity.as_bytes()));
    gw.admin("GET", &format!("/tyk/keys/{id}"), None).json()["apply_policies"].clone()
}

#[test]
fn scopes_map_to_policies_added_to_the_base_policy() {
    let up = Upstream::start();
    let gw = scoped_gateway(&up, json!({}));
    let t =
        hs256(&json!({"sub": "ann", "pol": "gold", "scope": "api:read other", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
    assert_eq!(session_policies(&gw, "ann"), json!(["gold", "read"]));
    // A token with other scopes resets the list: scopes never accumulate.
    let t =
        hs256(&json!({"sub": "ann", "pol": "gold", "scope": ["api:write"], "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(session_policies(&gw, "ann"), json!(["gold", "write"]));
}

#[test]
fn scopes_alone_can_grant_policies_and_replace_the_defaults() {
    let up = Upstream::start();
    let gw = scoped_gateway(
        &up,
        json!({"jwt_policy_field_name": "", "jwt_default_policies": ["two"]}),
    );
    let t = hs256(&json!({"sub": "bob", "scope": "api:write", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
    assert_eq!(session_policies(&gw, "bob"), json!(["write"]));
    // Without a scope the defaults apply.
    let t = hs256(&json!({"sub": "cy", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200);
    assert_eq!(session_policies(&gw, "cy"), json!(["two"]));
}

#[test]
fn scopes_that_map_to_nothing_are_refused() {
    let up = Upstream::start();
    let gw = scoped_gateway(&up, json!({"jwt_policy_field_name": ""}));
    // Near misses: case, a prefix, the policy id itself as a scope.
    for scope in ["API:READ", "api:rea", "read", "api:read,api:write"] {
        let t = hs256(&json!({"sub": "dan", "scope": scope, "exp": now() + 600}));
        assert_proxy_error(
            &call(&gw, &t),
            403,
            "key not authorized: no matching policy found in scope claim",
        );
    }
    // No scope and nothing else: no policy.
    let t = hs256(&json!({"sub": "dan", "exp": now() + 600}));
    assert_proxy_error(
        &call(&gw, &t),
        403,
        "key not authorized: no matching policy found",
    );
    // Once the identity has a session, a token with neither scope nor
    // policy cannot reuse it.
    let t = hs256(&json!({"sub": "dan", "scope": "api:read", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200);
    let t = hs256(&json!({"sub": "dan", "exp": now() + 600}));
    assert_proxy_error(
        &call(&gw, &t),
        403,
        "key not authorized: no scope or policy in token",
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn the_scope_claim_name_and_the_legacy_fields_are_honoured() {
    let up = Upstream::start();
    let mut api = jwt_api(
        &up,
        "hmac",
        &STANDARD.encode(SECRET),
        json!({"jwt_policy_field_name": ""}),
    );
    api["jwt_scope_claim_name"] = json!("perms.list");
    api["jwt_scope_to_policy_mapping"] = json!({"p": "gold"});
    let gw = start(api);
    let t =
        hs256(&json!({"sub": "eve", "perms": {"list": ["p"]}, "scope": "q", "exp": now() + 600}));
    assert_eq!(call(&gw, &t).status, 200, "{:?}", gw.logs());
    assert_eq!(session_policies(&gw, "eve"), json!(["gold"]));
    let t = hs256(&json!({"sub": "eve", "scope": "p", "exp": now() + 600}));
    assert_proxy_error(
        &call(&gw, &t),
        403,
        "key not authorized: no scope or policy in token",
    );
}
