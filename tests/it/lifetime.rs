//! Issue 12, item 1: session lifetimes (REDIS.md §4.2–3). A key's stored
//! session is forgotten `session_lifetime` seconds after it was written
//! (the key's, else its API's, or tyk.conf's forced global one), in the
//! embedded store as in Redis, where it is Tyk's `SET … EX`. A rewrite of
//! a session read from Redis is `SET … XX`: it never brings back a key
//! deleted meanwhile.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::redis::RedisServer;
use crate::support::*;

/// Long enough for a 2 s lifetime to pass on a loaded machine, short
/// enough to fail fast.
const GONE_WITHIN: Duration = Duration::from_secs(8);

fn status(gw: &Gateway, api: &str, key: &str) -> u16 {
    gw.get(&format!("/{api}/x"), &[("Authorization", key)])
        .status
}

fn admin_get(gw: &Gateway, key: &str) -> u16 {
    gw.admin("GET", &format!("/tyk/keys/{key}"), None).status
}

fn lifetime_api(up: &Upstream, id: &str, session_lifetime: i64) -> Value {
    let mut def = api_def(id, &format!("/{id}/"), &up.url("/"));
    def["session_lifetime"] = json!(session_lifetime);
    def
}

/// Waits until the key is refused on `api` and unknown to the admin API;
/// returns how long after `since` that was, None if it never was.
fn gone_after(gw: &Gateway, api: &str, key: &str, since: Instant) -> Option<Duration> {
    if !eventually(|| status(gw, api, key) == 403, GONE_WITHIN) {
        return None;
    }
    let gone = since.elapsed();
    assert_eq!(admin_get(gw, key), 404, "refused, yet the admin API has it");
    Some(gone)
}

#[test]
fn a_key_with_a_session_lifetime_works_then_is_gone() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({"enable_hashed_keys_listing": true}),
        &[("l", lifetime_api(&up, "l", 0))],
    );
    let mut s = session_for(&["l"]);
    s["session_lifetime"] = json!(2);
    let written = Instant::now();
    let key = gw.create_key(s);
    let forever = gw.create_key(session_for(&["l"]));
    assert_eq!(status(&gw, "l", &key), 200);
    assert_eq!(admin_get(&gw, &key), 200);
    let gone = gone_after(&gw, "l", &key, written).expect("the key outlived its lifetime");
    assert!(gone >= Duration::from_secs(1), "gone after {gone:?}");
    // Gone everywhere: not listed, not updatable, while a key without a
    // lifetime stays.
    let list = gw.admin("GET", "/tyk/keys", None).json();
    assert!(!list.to_string().contains(&key), "{list}");
    let r = gw.admin(
        "PUT",
        &format!("/tyk/keys/{key}"),
        Some(session_for(&["l"])),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(status(&gw, "l", &forever), 200);
    assert_eq!(admin_get(&gw, &forever), 200);
}

#[test]
fn an_apis_session_lifetime_applies_to_keys_without_their_own() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            ("short", lifetime_api(&up, "short", 2)),
            ("plain", lifetime_api(&up, "plain", 0)),
        ],
    );
    let written = Instant::now();
    let key = gw.create_key(session_for(&["short"]));
    let forever = gw.create_key(session_for(&["plain"]));
    assert_eq!(status(&gw, "short", &key), 200);
    assert!(gone_after(&gw, "short", &key, written).is_some());
    assert_eq!(status(&gw, "plain", &forever), 200);
}

#[test]
fn a_forced_global_lifetime_overrides_the_keys_own() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({"force_global_session_lifetime": true, "global_session_lifetime": 2}),
        &[("l", lifetime_api(&up, "l", 3600))],
    );
    let mut s = session_for(&["l"]);
    s["session_lifetime"] = json!(3600);
    let written = Instant::now();
    let key = gw.create_key(s);
    assert_eq!(status(&gw, "l", &key), 200);
    assert!(gone_after(&gw, "l", &key, written).is_some());
}

fn redis_conf(redis: &RedisServer) -> Value {
    json!({
        "storage": {"type": "redis", "host": "127.0.0.1", "port": redis.port},
        "node_secret": "lifetime-secret",
        "hash_keys": true,
        "hash_key_function": "murmur64",
    })
}

fn connect(r: &RedisServer) -> ::redis::Connection {
    ::redis::Client::open(format!("redis://127.0.0.1:{}/", r.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// Creates a key on `gw`; its Redis name (`apikey-{hash}`) and the key.
fn create(gw: &Gateway, session: Value) -> (String, String) {
    let r = gw.admin("POST", "/tyk/keys/create", Some(session));
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let hash = body["key_hash"].as_str().expect("key_hash").to_string();
    (
        format!("apikey-{hash}"),
        body["key"].as_str().unwrap().to_string(),
    )
}

fn ttl(c: &mut ::redis::Connection, name: &str) -> i64 {
    ::redis::cmd("TTL").arg(name).query(c).unwrap()
}

#[test]
fn redis_sessions_get_tyks_ttl_and_a_plain_rewrite_drops_it() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let apis = [
        ("l", lifetime_api(&up, "l", 0)),
        ("m", lifetime_api(&up, "m", 200)),
        ("n", lifetime_api(&up, "n", 300)),
    ];
    let gw = Gateway::start(redis_conf(&redis), &apis);
    let mut c = connect(&redis);
    // The longest over the key's APIs (an API without one adds none).
    let (name, _) = create(&gw, session_for(&["l", "m"]));
    let t = ttl(&mut c, &name);
    assert!((195..=200).contains(&t), "TTL {name} = {t}");
    let (name, _) = create(&gw, session_for(&["l", "m", "n"]));
    let t = ttl(&mut c, &name);
    assert!((295..=300).contains(&t), "TTL {name} = {t}");
    // The key's own beats its APIs', even when shorter.
    let mut s = session_for(&["l", "m"]);
    s["session_lifetime"] = json!(100);
    let (name, key) = create(&gw, s.clone());
    let t = ttl(&mut c, &name);
    assert!((95..=100).contains(&t), "TTL {name} = {t}");
    assert_eq!(status(&gw, "l", &key), 200);
    let (forever, _) = create(&gw, session_for(&["l"]));
    assert_eq!(ttl(&mut c, &forever), -1);
    // An update sets the new lifetime; one without drops the TTL.
    s["session_lifetime"] = json!(50);
    let r = gw.admin("PUT", &format!("/tyk/keys/{key}"), Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    let t = ttl(&mut c, &name);
    assert!((45..=50).contains(&t), "TTL {name} = {t}");
    let r = gw.admin(
        "PUT",
        &format!("/tyk/keys/{key}"),
        Some(session_for(&["l"])),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(ttl(&mut c, &name), -1);
}

#[test]
fn redis_sessions_expire_with_their_ttl_even_when_cached() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = Gateway::start(redis_conf(&redis), &[("l", lifetime_api(&up, "l", 2))]);
    let written = Instant::now();
    let (name, key) = create(&gw, session_for(&["l"]));
    assert_eq!(status(&gw, "l", &key), 200);
    // Redis forgets it by itself (no notice is sent); the gateway's cache
    // (10 s in cluster mode) must not outlive it.
    let gone = gone_after(&gw, "l", &key, written).expect("the key outlived its TTL");
    assert!(gone < Duration::from_secs(6), "gone only after {gone:?}");
    let exists: i64 = ::redis::cmd("EXISTS")
        .arg(&name)
        .query(&mut connect(&redis))
        .unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn an_update_of_a_key_deleted_meanwhile_does_not_resurrect_it() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = Gateway::start(redis_conf(&redis), &[("l", lifetime_api(&up, "l", 0))]);
    let mut c = connect(&redis);
    let (name, key) = create(&gw, session_for(&["l"]));
    assert_eq!(status(&gw, "l", &key), 200);
    // Deleted behind the gateway's back (no notice): its cache still holds
    // the session it read, as a gateway racing a delete would.
    let deleted: i64 = ::redis::cmd("DEL").arg(&name).query(&mut c).unwrap();
    assert_eq!(deleted, 1);
    let r = gw.admin(
        "PUT",
        &format!("/tyk/keys/{key}"),
        Some(session_for(&["l"])),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let exists: i64 = ::redis::cmd("EXISTS").arg(&name).query(&mut c).unwrap();
    assert_eq!(exists, 0, "the update brought the deleted key back");
    assert_eq!(status(&gw, "l", &key), 403);
}
