//! Issue 12, item 5: `gatehouse import --from-redis` and `export
//! --to-redis` move every key and its quota counter between a Redis in
//! Tyk's layout and the embedded store: 10,000 keys both ways, re-runnable,
//! lifetimes kept, and the keys work on a gateway afterwards.

use serde_json::{Value, json};

use crate::support::redis::RedisServer;
use crate::support::*;

const N: usize = 10_000;

fn session(i: usize) -> Value {
    json!({
        "org_id": "default", "rate": 1000, "per": 1, "expires": 0,
        "quota_max": 100, "quota_remaining": 100, "quota_renewal_rate": 3600,
        "access_rights": {"c": {"api_id": "c", "api_name": "API c", "versions": ["Default"]}},
        "alias": format!("user-{i}"), "tyk_only_field": {"n": i}
    })
}

fn connect(r: &RedisServer) -> ::redis::Connection {
    ::redis::Client::open(format!("redis://127.0.0.1:{}/", r.port))
        .unwrap()
        .get_connection()
        .unwrap()
}

/// N sessions and their quota counters (used: i % 50) as `key{i}` in Tyk's layout.
fn seed(r: &RedisServer) {
    let mut c = connect(r);
    for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = ::redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("apikey-key{i}"))
                .arg(session(*i).to_string())
                .ignore();
            pipe.cmd("SET")
                .arg(format!("quota-key{i}"))
                .arg(i % 50)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        pipe.query::<()>(&mut c).unwrap();
    }
    // One session with a lifetime, which both ways keep.
    ::redis::cmd("EXPIRE")
        .arg("apikey-key0")
        .arg(3600)
        .query::<()>(&mut c)
        .unwrap();
    // Noise a migration must leave out.
    ::redis::cmd("SET")
        .arg("quota-key1-lock")
        .arg("x")
        .query::<()>(&mut c)
        .unwrap();
    ::redis::cmd("SET")
        .arg("quota-nobody")
        .arg(5)
        .query::<()>(&mut c)
        .unwrap();
}

#[test]
fn ten_thousand_keys_go_to_the_embedded_store_and_back_with_their_quotas() {
    let from = RedisServer::start();
    seed(&from);
    let up = Upstream::start();
    // Tyk's layout for keys stored as written (hash_keys off).
    let gw = Gateway::builder()
        .conf(json!({"hash_keys": false}))
        .app("c", api_def("c", "/c/", &up.url("/")))
        .start();
    let mut gw = gw;
    gw.stop();
    let (dir, conf) = (gw.dir().to_path_buf(), gw.conf_path().to_path_buf());
    let conf = conf.to_str().unwrap();
    let url = format!("redis://127.0.0.1:{}", from.port);
    let want = format!("imported {N} keys and {N} quota counters from {url} to the embedded store");
    for _ in 0..2 {
        let (status, out, err) = run_cli(&["import", "--from-redis", &url, "--conf", conf], &dir);
        assert!(status.success(), "{out}{err}");
        assert_eq!(out.trim(), want, "{err}");
        assert!(
            err.contains(&format!("import: sessions: {N} of {N} entries")),
            "{err}"
        );
    }
    // The keys work, with their counters.
    gw.restart();
    let r = gw.get_with_key("/c/x", "key7");
    assert_eq!(r.status, 200, "{} {:?}", r.text(), gw.logs());
    let k7 = gw.admin("GET", "/tyk/keys/key7", None).json();
    assert_eq!(k7["quota_remaining"], 100 - 7 - 1, "{k7}");
    assert_eq!(k7["alias"], "user-7");
    assert_eq!(k7["tyk_only_field"]["n"], 7, "unknown fields kept");
    gw.stop();
    // And back, into an empty Redis.
    let to = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", to.port);
    let (status, out, err) = run_cli(&["export", "--to-redis", &url, "--conf", conf], &dir);
    assert!(status.success(), "{out}{err}");
    assert_eq!(
        out.trim(),
        format!("exported {N} keys and {N} quota counters from the embedded store to {url}")
    );
    assert_eq!(to.cli(&["DBSIZE"]), (2 * N).to_string());
    assert_eq!(
        to.cli(&["GET", "quota-key7"]),
        "8",
        "7 imported, one request since"
    );
    assert_eq!(to.cli(&["GET", "quota-key9999"]), (9999 % 50).to_string());
    let ttl: i64 = to.cli(&["TTL", "quota-key42"]).parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "{ttl}");
    let ttl: i64 = to.cli(&["TTL", "apikey-key0"]).parse().unwrap();
    assert!((3000..=3600).contains(&ttl), "session lifetime kept: {ttl}");
    assert_eq!(to.cli(&["TTL", "apikey-key42"]), "-1");
    let back: Value = serde_json::from_str(&to.cli(&["GET", "apikey-key42"])).unwrap();
    assert_eq!(back["alias"], "user-42");
    assert_eq!(back["tyk_only_field"]["n"], 42);
}

#[test]
fn bad_urls_and_a_running_gateway_are_refused_clearly() {
    let gw = Gateway::builder().start();
    let dir = gw.dir().to_path_buf();
    let conf = gw.conf_path().to_str().unwrap().to_string();
    let (status, _, err) = run_cli(&["import", "--conf", &conf], &dir);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--from-redis URL is required"), "{err}");
    let (status, _, err) = run_cli(
        &["import", "--from-redis", "http://x", "--conf", &conf],
        &dir,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not a redis:// URL"), "{err}");
    // The store is the running gateway's: sled's lock says so.
    let r = RedisServer::start();
    let url = format!("redis://127.0.0.1:{}", r.port);
    let (status, _, err) = run_cli(&["import", "--from-redis", &url, "--conf", &conf], &dir);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("locked by another process"), "{err}");
}
