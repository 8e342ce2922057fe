//! Issue 12: cluster mode. Several gateways share keys, quotas and rate
//! limits through one real `redis-server`, in Tyk's key layout; notices
//! on `tyk.cluster.notifications` evict cached sessions at once. Then the
//! tries to get around it: many clients racing a quota over three nodes,
//! a forged cluster message, Redis killed mid-run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::redis::RedisServer;
use crate::support::*;

const NODE_SECRET: &str = "cluster-secret";

fn cluster_conf(redis: &RedisServer, extra: Value) -> Value {
    let mut conf = json!({
        "storage": {"type": "redis", "host": "127.0.0.1", "port": redis.port},
        "node_secret": NODE_SECRET,
        "hash_keys": true,
        "hash_key_function": "murmur64",
    });
    for (k, v) in extra.as_object().unwrap() {
        conf[k] = v.clone();
    }
    conf
}

/// `n` gateways on `redis`, each with the keyed API `c` on `/c/` and the
/// keyless `open` on `/open/`.
fn nodes(n: usize, redis: &RedisServer, up: &Upstream, extra: Value) -> Vec<Gateway> {
    (0..n)
        .map(|_| {
            Gateway::start(
                cluster_conf(redis, extra.clone()),
                &[
                    ("c", api_def("c", "/c/", &up.url("/"))),
                    ("open", keyless_api("open", "/open/", &up.url("/"))),
                ],
            )
        })
        .collect()
}

fn status(gw: &Gateway, key: &str) -> u16 {
    gw.get("/c/x", &[("Authorization", key)]).status
}

fn eventually_status(gw: &Gateway, key: &str, want: u16, within: Duration) -> bool {
    eventually(|| status(gw, key) == want, within)
}

#[test]
fn a_key_made_on_one_node_works_on_all_and_a_delete_reaches_them_within_a_second() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(3, &redis, &up, json!({}));
    let key = gws[0].create_key(session_for(&["c"]));
    for gw in &gws {
        assert!(eventually_status(gw, &key, 200, Duration::from_secs(1)));
    }
    // Every node has it cached now; a delete on B reaches A and C.
    let r = gws[1].admin("DELETE", &format!("/tyk/keys/{key}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    for gw in [&gws[0], &gws[2]] {
        assert!(
            eventually_status(gw, &key, 403, Duration::from_secs(1)),
            "a deleted key still works on another node: {:?}",
            gw.logs()
        );
    }
    // An update (a lower quota) reaches them the same way.
    let key = gws[0].create_key(session_for(&["c"]));
    for gw in &gws {
        assert_eq!(status(gw, &key), 200);
    }
    let mut s = session_for(&["c"]);
    s["quota_max"] = json!(1);
    s["quota_remaining"] = json!(1);
    let r = gws[2].admin("PUT", &format!("/tyk/keys/{key}"), Some(s));
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(300));
    let allowed: usize = gws.iter().filter(|gw| status(gw, &key) == 200).count();
    assert_eq!(allowed, 1, "quota 1 across three nodes");
}

#[test]
fn a_quota_is_exact_across_nodes_under_64_clients() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = Arc::new(nodes(3, &redis, &up, json!({})));
    let ports: Vec<u16> = gws.iter().map(Gateway::port).collect();
    for run in 0..5 {
        let mut s = session_for(&["c"]);
        s["quota_max"] = json!(300);
        s["quota_remaining"] = json!(300);
        s["quota_renewal_rate"] = json!(3600);
        let key = gws[run % 3].create_key(s);
        let ok = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..64)
            .map(|t| {
                let (ok, key, ports) = (ok.clone(), key.clone(), ports.clone());
                std::thread::spawn(move || {
                    for i in 0..6 {
                        let port = ports[(t + i) % ports.len()];
                        let r = request(port, "GET", "/c/x", &[("Authorization", &key)], None);
                        match r.status {
                            200 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            403 => {}
                            other => panic!("unexpected {other}: {}", r.text()),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ok.load(Ordering::SeqCst), 300, "run {run}");
        // Tyk's layout: the used count (384 requests, refused ones too).
        let stored = gatehouse_murmur64(&key);
        assert_eq!(redis.cli(&["GET", &format!("quota-{stored}")]), "384");
    }
}

/// The stored id of a key whose `h` says murmur64 (Tyk's HashStr): the
/// suffix of its `apikey-` and `quota-` keys in Redis.
fn gatehouse_murmur64(key: &str) -> String {
    gatehouse::keyid::hash_str(key)
}

#[test]
fn murmur64_matches_redis_md() {
    use gatehouse::keyid::{HashAlg, hash_with};
    assert_eq!(hash_with(HashAlg::Murmur64, b"hello"), "cbd8a7b341bd9b02");
    assert_eq!(
        gatehouse_murmur64("eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJhYmMxMjMiLCJoIjoibXVybXVyNjQifQ=="),
        "bc02d26e1f31f86b"
    );
}

#[test]
fn a_rate_limit_is_shared_across_nodes() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(3, &redis, &up, json!({}));
    let mut s = session_for(&["c"]);
    s["rate"] = json!(50);
    s["per"] = json!(5);
    let key = gws[0].create_key(s);
    let started = Instant::now();
    let mut allowed = 0;
    for i in 0..90 {
        match status(&gws[i % 3], &key) {
            200 => allowed += 1,
            429 => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert!(allowed <= 50, "{allowed} allowed of rate 50 per 5 s");
    if started.elapsed() < Duration::from_secs(5) {
        assert_eq!(allowed, 50);
    }
}

/// Many requests on one key share a script call: the log's size is
/// carried from one to the next and its TTL set once per call, which must
/// stay exact: every request logged, `rate` of them allowed, the log
/// expiring after `per`.
#[test]
fn a_sliding_log_counted_in_batches_stays_exact_and_expires() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(1, &redis, &up, json!({}));
    let gw = &gws[0];
    let mut s = session_for(&["c"]);
    s["rate"] = json!(100);
    s["per"] = json!(30);
    let key = gw.create_key(s);
    let port = gw.port();
    let allowed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (key, allowed) = (key.clone(), allowed.clone());
            std::thread::spawn(move || {
                for _ in 0..15 {
                    let r = request(port, "GET", "/c/x", &[("Authorization", &key)], None);
                    match r.status {
                        200 => {
                            allowed.fetch_add(1, Ordering::SeqCst);
                        }
                        429 => {}
                        other => panic!("unexpected {other}: {}", r.text()),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(allowed.load(Ordering::SeqCst), 100);
    let log = format!("rate-limit-{}", gatehouse_murmur64(&key));
    assert_eq!(redis.cli(&["ZCARD", &log]), "240");
    let ttl: i64 = redis.cli(&["TTL", &log]).parse().unwrap();
    assert!((1..=30).contains(&ttl), "TTL {ttl}");
}

#[test]
fn a_request_the_rate_limit_refuses_uses_no_quota() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(2, &redis, &up, json!({}));
    let mut s = session_for(&["c"]);
    s["rate"] = json!(2);
    s["per"] = json!(60);
    s["quota_max"] = json!(100);
    s["quota_remaining"] = json!(100);
    s["quota_renewal_rate"] = json!(3600);
    let key = gws[0].create_key(s);
    let codes: Vec<u16> = (0..5).map(|i| status(&gws[i % 2], &key)).collect();
    assert_eq!(codes, [200, 200, 429, 429, 429]);
    let stored = gatehouse_murmur64(&key);
    // Tyk: the quota is never checked for a rate-limited request; the
    // sliding log holds every request, refused ones too.
    assert_eq!(redis.cli(&["GET", &format!("quota-{stored}")]), "2");
    assert_eq!(redis.cli(&["ZCARD", &format!("rate-limit-{stored}")]), "5");
}

#[test]
fn an_api_rate_limit_counts_after_the_key_s_quota_in_the_same_order_across_nodes() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let mut def = api_def("c", "/c/", &up.url("/"));
    def["global_rate_limit"] = json!({"rate": 3, "per": 60});
    let gws: Vec<Gateway> = (0..2)
        .map(|_| Gateway::start(cluster_conf(&redis, json!({})), &[("c", def.clone())]))
        .collect();
    let mut s = session_for(&["c"]);
    s["quota_max"] = json!(5);
    s["quota_remaining"] = json!(5);
    s["quota_renewal_rate"] = json!(3600);
    let key = gws[0].create_key(s);
    let answers: Vec<(u16, String)> = (0..7)
        .map(|i| {
            let r = gws[i % 2].get("/c/x", &[("Authorization", &key)]);
            (r.status, r.text())
        })
        .collect();
    let codes: Vec<u16> = answers.iter().map(|a| a.0).collect();
    // 1-3 pass; 4-5 pass the quota (4, 5 of 5) and meet the API's limit;
    // 6-7 are over quota, so the API's limit never sees them.
    assert_eq!(codes, [200, 200, 200, 429, 429, 403, 403]);
    assert!(
        answers[3].1.contains("API Rate Limit Exceeded"),
        "{}",
        answers[3].1
    );
    assert!(answers[5].1.contains("Quota exceeded"), "{}", answers[5].1);
    let stored = gatehouse_murmur64(&key);
    assert_eq!(redis.cli(&["GET", &format!("quota-{stored}")]), "7");
    let api = gatehouse::keyid::hash_str("apilimiter-defaultc");
    assert_eq!(redis.cli(&["ZCARD", &format!("rate-limit-{api}")]), "5");
}

fn signed(command: &str, payload: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(format!("{command}{payload}{secret}").as_bytes());
    let sig: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    json!({"command": command, "payload": payload, "signature": sig, "algorithm": 5}).to_string()
}

#[test]
fn signed_group_reloads_reload_and_forged_messages_are_dropped() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gw = Gateway::start(cluster_conf(&redis, json!({})), &[]);
    assert!(gw.wait_for_log("cluster: listening", Duration::from_secs(5)));
    std::fs::write(
        gw.dir().join("apps/late.json"),
        keyless_api("late", "/late/", &up.url("/")).to_string(),
    )
    .unwrap();
    let forged = signed("GroupReload", "", "wrong-secret");
    redis.cli(&["PUBLISH", "tyk.cluster.notifications", &forged]);
    assert!(gw.wait_for_log("does not match node_secret", Duration::from_secs(5)));
    assert_eq!(gw.get("/late/x", &[]).status, 404);
    let good = signed("GroupReload", "", NODE_SECRET);
    redis.cli(&["PUBLISH", "tyk.cluster.notifications", &good]);
    assert!(eventually(
        || gw.get("/late/x", &[]).status == 200,
        Duration::from_secs(5)
    ));
}

#[test]
fn redis_down_fails_closed_and_every_node_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(2, &redis, &up, json!({}));
    let key = gws[0].create_key(session_for(&["c"]));
    for gw in &gws {
        assert_eq!(status(gw, &key), 200);
    }
    redis.kill();
    for gw in &gws {
        // Cached or not, a keyed request is never served uncounted.
        let r = gw.get("/c/x", &[("Authorization", &key)]);
        assert!(r.status >= 500, "served with Redis down: {}", r.status);
        assert_eq!(gw.get("/open/x", &[]).status, 200, "keyless keeps serving");
        // Tyk answers 200 either way; the body says the store fails.
        let hello = gw.get("/hello", &[]).text();
        assert!(hello.contains("\"status\":\"fail\""), "{hello}");
    }
    let hits = up.hits();
    redis.restart();
    let back = Instant::now();
    for gw in &gws {
        assert!(
            eventually_status(gw, &key, 200, Duration::from_secs(5)),
            "{:?}",
            gw.logs()
        );
        let hello = gw.get("/hello", &[]).text();
        assert!(
            hello.contains("\"status\":\"pass\""),
            "{hello} {:?}",
            gw.logs()
        );
    }
    assert!(back.elapsed() < Duration::from_secs(6));
    assert!(up.hits() > hits);
    for gw in &gws {
        assert!(!gw.logs_contain("panicked"), "{:?}", gw.logs());
    }
}

/// The event loops count through one thread that pipelines every waiting
/// request into one write. A script Redis forgot (SCRIPT FLUSH, as after a
/// restart) is loaded again: nothing lost, nothing counted twice. A script
/// error on one key's counter fails that key's requests only, though they
/// share writes with another key's.
#[test]
fn pipelined_counting_survives_a_script_flush_and_a_broken_counter_fails_only_its_key() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(1, &redis, &up, json!({}));
    let gw = &gws[0];
    let key = || {
        let mut s = session_for(&["c"]);
        s["quota_max"] = json!(1000);
        s["quota_remaining"] = json!(1000);
        s["quota_renewal_rate"] = json!(3600);
        gw.create_key(s)
    };
    let (a, b) = (key(), key());
    for _ in 0..3 {
        assert_eq!(status(gw, &a), 200);
    }
    assert_eq!(redis.cli(&["SCRIPT", "FLUSH"]), "OK");
    for _ in 0..3 {
        assert_eq!(status(gw, &a), 200, "{:?}", gw.logs());
    }
    let (sa, sb) = (gatehouse_murmur64(&a), gatehouse_murmur64(&b));
    assert_eq!(redis.cli(&["GET", &format!("quota-{sa}")]), "6");
    // a's sliding log becomes a string: its script fails with WRONGTYPE.
    redis.cli(&["DEL", &format!("rate-limit-{sa}")]);
    assert_eq!(redis.cli(&["SET", &format!("rate-limit-{sa}"), "x"]), "OK");
    let port = gw.port();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (a, b) = (a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for i in 0..20 {
                    let (name, key) = if (t + i) % 2 == 0 {
                        ("a", &a)
                    } else {
                        ("b", &b)
                    };
                    let r = request(port, "GET", "/c/x", &[("Authorization", key)], None);
                    seen.push((name, r.status, r.text()));
                }
                seen
            })
        })
        .collect();
    let mut served_b = 0;
    for t in threads {
        for (name, code, body) in t.join().unwrap() {
            match name {
                "a" => {
                    assert_eq!(code, 503, "{body}");
                    assert!(body.contains("Service temporarily unavailable."), "{body}");
                }
                _ => {
                    assert_eq!(code, 200, "{body}");
                    served_b += 1;
                }
            }
        }
    }
    assert_eq!(served_b, 80);
    assert_eq!(redis.cli(&["GET", &format!("quota-{sb}")]), "80");
    assert!(gw.saw_log("WRONGTYPE"), "{:?}", gw.logs());
    assert!(!gw.logs_contain("panicked"), "{:?}", gw.logs());
}

#[test]
fn a_session_written_as_tyk_writes_it_is_served_and_ours_read_back_in_tyks_layout() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(1, &redis, &up, json!({}));
    let gw = &gws[0];
    // REDIS.md §2's example token: org "default", id "abc123", murmur64.
    let token = "eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJhYmMxMjMiLCJoIjoibXVybXVyNjQifQ==";
    let tyk_session = json!({
        "org_id": "default", "rate": 100, "per": 1, "expires": 0,
        "quota_max": -1, "quota_renews": 0, "quota_remaining": -1, "quota_renewal_rate": 0,
        "access_rights": {"c": {"api_id": "c", "api_name": "API c", "versions": ["Default"]}},
        "meta_data": {}, "tags": [], "alias": "from-tyk",
        "last_updated": "1700000000", "date_created": "2023-11-14T22:13:20Z",
        "apply_policies": [], "smoothing": null, "some_future_field": {"kept": true}
    });
    redis.cli(&["SET", "apikey-bc02d26e1f31f86b", &tyk_session.to_string()]);
    assert_eq!(status(gw, token), 200);
    // Ours, read back with redis-cli: Tyk's key, Tyk's JSON, the used count.
    let mut s = session_for(&["c"]);
    s["quota_max"] = json!(10);
    s["quota_remaining"] = json!(10);
    s["quota_renewal_rate"] = json!(3600);
    let key = gw.create_key(s);
    for _ in 0..3 {
        assert_eq!(status(gw, &key), 200);
    }
    let stored = gatehouse_murmur64(&key);
    let raw = redis.cli(&["GET", &format!("apikey-{stored}")]);
    let back: Value = serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert_eq!(back["org_id"], "default");
    assert_eq!(back["access_rights"]["c"]["api_id"], "c");
    assert_eq!(back["quota_max"], 10);
    assert_eq!(redis.cli(&["GET", &format!("quota-{stored}")]), "3");
    let ttl: i64 = redis
        .cli(&["TTL", &format!("quota-{stored}")])
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
    // Unknown fields of Tyk's session survive our read.
    let r = gw.admin("GET", &format!("/tyk/keys/{token}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["alias"], "from-tyk");
}

#[test]
fn the_fixed_window_limiter_counts_in_tyks_keys_across_nodes() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(
        2,
        &redis,
        &up,
        json!({"enable_fixed_window_rate_limiter": true}),
    );
    let mut s = session_for(&["c"]);
    s["rate"] = json!(10);
    s["per"] = json!(3600);
    let key = gws[0].create_key(s);
    let allowed = (0..15).filter(|i| status(&gws[i % 2], &key) == 200).count();
    assert_eq!(allowed, 10);
    // Tyk's key: the rate key, `/`, the window's start in Unix ns (whole
    // hours from year 1 are whole hours from 1970), holding every request.
    let stored = gatehouse_murmur64(&key);
    let keys = redis.cli(&["KEYS", &format!("rate-limit-{stored}/*")]);
    let window: u128 = keys.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!(window % 3_600_000_000_000, 0, "{keys}");
    assert_eq!(redis.cli(&["GET", &keys]), "15");
}

#[test]
fn reload_group_reloads_every_node() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let gws = nodes(2, &redis, &up, json!({}));
    for gw in &gws {
        assert!(gw.wait_for_log("cluster: listening", Duration::from_secs(5)));
        std::fs::write(
            gw.dir().join("apps/late.json"),
            keyless_api("late", "/late/", &up.url("/")).to_string(),
        )
        .unwrap();
        assert_eq!(gw.get("/late/x", &[]).status, 404);
    }
    let r = gws[0].admin("GET", "/tyk/reload/group", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "{\"status\":\"ok\",\"message\":\"\"}\n");
    for gw in &gws {
        assert!(
            eventually(
                || gw.get("/late/x", &[]).status == 200,
                Duration::from_secs(5)
            ),
            "{:?}",
            gw.logs()
        );
    }
}

#[test]
fn redis_over_tls_needs_its_ca_or_the_skip_flag() {
    let ca = crate::support::tls::Ca::new("redis CA");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"]);
    let redis = RedisServer::start_tls(&leaf.cert, &leaf.key, &ca.pem);
    let up = Upstream::start();
    let with = |storage: Value| {
        let mut conf = cluster_conf(&redis, json!({}));
        for (k, v) in storage.as_object().unwrap() {
            conf["storage"][k] = v.clone();
        }
        Gateway::builder()
            .conf(conf)
            .file("redis-ca.pem", ca.pem.clone())
            .app("c", api_def("c", "/c/", &up.url("/")))
            .start()
    };
    // Trusted through ca_file: keys work, and are in that Redis.
    let gw = with(json!({"use_ssl": true, "ca_file": "redis-ca.pem"}));
    let key = gw.create_key(session_for(&["c"]));
    assert_eq!(status(&gw, &key), 200);
    let stored = gatehouse_murmur64(&key);
    assert_eq!(redis.cli(&["EXISTS", &format!("apikey-{stored}")]), "1");
    // Not trusted: refused, and the log says why.
    let gw = with(json!({"use_ssl": true}));
    let refused = status(&gw, &key);
    assert!(refused >= 500, "{refused}");
    assert!(gw.saw_log("UnknownIssuer"), "{:?}", gw.logs());
    // The skip flag takes any certificate.
    let gw = with(json!({"use_ssl": true, "ssl_insecure_skip_verify": true}));
    assert_eq!(status(&gw, &key), 200);
}
