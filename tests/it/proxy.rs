//! The proxy path (CONTRACT §3): matching, the upstream URL, headers both
//! ways, keyless APIs, upstream faults, and streamed bodies.

use serde_json::{Value, json};

use crate::support::*;

fn keyless(up: &Upstream, listen: &str, target_path: &str, strip: bool) -> Gateway {
    let mut d = keyless_api("k1", listen, &up.url(target_path));
    d["proxy"]["strip_listen_path"] = json!(strip);
    Gateway::start(json!({}), &[("k1", d)])
}

fn upstream_saw(up: &Upstream) -> UpReq {
    up.last_request().expect("upstream got no request")
}

// ---- upstream URL (§3.2) ----

#[test]
fn strip_listen_path_joins_rest_onto_target_path() {
    let up = Upstream::start();
    let gw = keyless(&up, "/svc/", "/base/", true);
    let r = gw.get("/svc/x/y", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/base/x/y");
}

#[test]
fn without_strip_listen_path_the_full_path_is_joined() {
    let up = Upstream::start();
    let gw = keyless(&up, "/svc/", "/base/", false);
    let r = gw.get("/svc/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/base/svc/x");
}

#[test]
fn strip_listen_path_is_off_by_default() {
    let up = Upstream::start();
    let mut d = keyless_api("k1", "/svc/", &up.url(""));
    d["proxy"]
        .as_object_mut()
        .unwrap()
        .remove("strip_listen_path");
    let gw = Gateway::start(json!({}), &[("k1", d)]);
    let r = gw.get("/svc/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/svc/x");
}

#[test]
fn empty_rest_hits_target_path_without_trailing_slash() {
    let up = Upstream::start();
    let gw = keyless(&up, "/api/", "/base/", true);
    let r = gw.get("/api/", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/base");
}

#[test]
fn target_query_and_request_query_are_joined_with_ampersand() {
    let up = Upstream::start();
    let gw = keyless(&up, "/q/", "/?t=1", true);
    let r = gw.get("/q/get?q=2&r=3", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = upstream_saw(&up);
    assert_eq!(saw.path, "/get");
    assert_eq!(saw.query, "t=1&q=2&r=3");
}

#[test]
fn request_query_alone_is_forwarded() {
    let up = Upstream::start();
    let gw = keyless(&up, "/q/", "/", true);
    let r = gw.get("/q/get?a=b", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(upstream_saw(&up).target, "/get?a=b");
}

// ---- matching (§3.1) ----

#[test]
fn no_matching_api_is_404_not_found_text() {
    let up = Upstream::start();
    let gw = keyless(&up, "/svc/", "/", true);
    let r = gw.get("/elsewhere", &[]);
    assert_eq!((r.status, r.text()), (404, "Not Found".to_string()));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(up.hits(), 0);
}

#[test]
fn listen_path_is_a_plain_string_prefix() {
    let up = Upstream::start();
    let gw = keyless(&up, "/quickstart/", "/", true);
    assert_eq!(gw.get("/quickstart", &[]).status, 404);
    let up2 = Upstream::start();
    let gw2 = keyless(&up2, "/app", "/", false);
    assert_eq!(gw2.get("/apple", &[]).status, 200);
}

fn longest_wins(short_file: &str, long_file: &str) {
    let short_up = Upstream::start();
    let long_up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            (short_file, keyless_api("short", "/a/", &short_up.url("/"))),
            (long_file, keyless_api("long", "/a/b/", &long_up.url("/"))),
        ],
    );
    assert_eq!(gw.get("/a/b/c", &[]).status, 200);
    assert_eq!((short_up.hits(), long_up.hits()), (0, 1));
    assert_eq!(gw.get("/a/x", &[]).status, 200);
    assert_eq!((short_up.hits(), long_up.hits()), (1, 1));
}

#[test]
fn longest_listen_path_wins_when_loaded_first() {
    // Files load in name order: "1-long" before "2-short".
    longest_wins("2-short", "1-long");
}

#[test]
fn longest_listen_path_wins_when_loaded_last() {
    longest_wins("1-short", "2-long");
}

#[test]
fn api_id_alias_route_reaches_the_api_unstripped() {
    let up = Upstream::start();
    let gw = keyless(&up, "/svc/", "/", true);
    let r = gw.get("/k1/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // strip_listen_path does not strip the /<api_id>/ prefix.
    assert_eq!(r.json()["path"], "/k1/x");
}

#[test]
fn keyless_api_needs_no_key() {
    let up = Upstream::start();
    let gw = keyless(&up, "/open/", "/", true);
    let r = request(gw.port(), "POST", "/open/post", &[], Some(b"abc"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["method"], "POST");
    assert_eq!(r.json()["body"], "abc");
    assert_eq!(up.hits(), 1);
}

// ---- headers (§3.3) ----

#[test]
fn x_forwarded_for_is_set_to_client_ip() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    assert_eq!(gw.get("/h/", &[]).status, 200);
    assert_eq!(
        upstream_saw(&up).header("x-forwarded-for"),
        Some("127.0.0.1")
    );
}

#[test]
fn x_forwarded_for_is_appended_to_prior_values() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    let r = gw.get("/h/", &[("X-Forwarded-For", "10.0.0.1, 10.0.0.2")]);
    assert_eq!(r.status, 200);
    let saw = upstream_saw(&up);
    assert_eq!(
        saw.header_all("x-forwarded-for").join(", "),
        "10.0.0.1, 10.0.0.2, 127.0.0.1"
    );
}

#[test]
fn host_header_is_the_target_host() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    assert_eq!(gw.get("/h/", &[("Host", "client.example")]).status, 200);
    let saw = upstream_saw(&up);
    assert_eq!(
        saw.header_all("host"),
        vec![format!("127.0.0.1:{}", up.port())]
    );
}

#[test]
fn preserve_host_header_keeps_the_client_host() {
    let up = Upstream::start();
    let mut d = keyless_api("k1", "/h/", &up.url("/"));
    d["proxy"]["preserve_host_header"] = json!(true);
    let gw = Gateway::start(json!({}), &[("k1", d)]);
    assert_eq!(gw.get("/h/", &[("Host", "client.example")]).status, 200);
    assert_eq!(upstream_saw(&up).header("host"), Some("client.example"));
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    let r = gw.get(
        "/h/",
        &[
            ("Connection", "close, X-Hop-Custom"),
            ("X-Hop-Custom", "secret"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("TE", "gzip"),
            ("Trailer", "X-T"),
            ("Upgrade", "h2c"),
            ("X-End-To-End", "kept"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = upstream_saw(&up);
    for gone in [
        "x-hop-custom",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert_eq!(
            saw.header(gone),
            None,
            "{gone} was forwarded: {:?}",
            saw.headers
        );
    }
    // Only our own connection management may appear upstream.
    for v in saw.header_all("connection") {
        assert!(!v.to_ascii_lowercase().contains("x-hop-custom"), "{v}");
    }
    assert_eq!(saw.header("x-end-to-end"), Some("kept"));
}

#[test]
fn hop_by_hop_headers_from_upstream_are_not_returned() {
    let up = Upstream::with_handler(|_| {
        UpResp::new(200, "ok")
            .header("Connection", "X-Up-Hop")
            .header("X-Up-Hop", "1")
            .header("Keep-Alive", "timeout=9")
            .header("X-Up-Kept", "yes")
    });
    let gw = keyless(&up, "/h/", "/", true);
    let r = gw.get("/h/", &[]);
    assert_eq!((r.status, r.text()), (200, "ok".to_string()));
    assert_eq!(r.header("x-up-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("x-up-kept"), Some("yes"));
}

#[test]
fn upstream_status_and_headers_are_returned() {
    let up = Upstream::with_handler(|_| {
        UpResp::new(201, "made")
            .header("X-Custom", "v")
            .header("Content-Type", "text/x-made")
    });
    let gw = keyless(&up, "/h/", "/", true);
    let r = gw.get("/h/", &[]);
    assert_eq!((r.status, r.text()), (201, "made".to_string()));
    assert_eq!(r.header("x-custom"), Some("v"));
    assert_eq!(r.header("content-type"), Some("text/x-made"));
}

#[test]
fn user_agent_is_tyk_when_absent() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    assert_eq!(gw.get("/h/", &[]).status, 200);
    let ua = upstream_saw(&up).header("user-agent").map(str::to_string);
    assert!(
        ua.as_deref().is_some_and(|u| u.starts_with("Tyk/")),
        "User-Agent {ua:?}, CONTRACT §3.3 says Tyk/<version>"
    );
}

#[test]
fn client_user_agent_is_kept() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    assert_eq!(gw.get("/h/", &[("User-Agent", "curl/8.0")]).status, 200);
    assert_eq!(upstream_saw(&up).header("user-agent"), Some("curl/8.0"));
}

#[test]
fn credentials_are_forwarded_upstream() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("p", api_def("p", "/p/", &up.url("/")))]);
    let key = gw.create_key(session_for(&["p"]));
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
    assert_eq!(
        upstream_saw(&up).header("authorization"),
        Some(key.as_str())
    );
}

#[test]
fn no_x_real_ip_or_forwarded_proto_added() {
    let up = Upstream::start();
    let gw = keyless(&up, "/h/", "/", true);
    assert_eq!(gw.get("/h/", &[]).status, 200);
    let saw = upstream_saw(&up);
    assert_eq!(saw.header("x-real-ip"), None);
    assert_eq!(saw.header("x-forwarded-proto"), None);
}

// ---- keys on the proxy path (§3.4, §4) ----

#[test]
fn bearer_prefix_is_cut_from_the_key() {
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("p", api_def("p", "/p/", &up.url("/")))]);
    let key = gw.create_key(session_for(&["p"]));
    let r = gw.get("/p/x", &[("Authorization", &format!("Bearer {key}"))]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn custom_auth_header_name_is_read() {
    let up = Upstream::start();
    let mut d = api_def("p", "/p/", &up.url("/"));
    d["auth"]["auth_header_name"] = json!("X-Api-Key");
    let gw = Gateway::start(json!({}), &[("p", d)]);
    let key = gw.create_key(session_for(&["p"]));
    assert_eq!(gw.get("/p/x", &[("X-Api-Key", &key)]).status, 200);
    assert_eq!(gw.get("/p/x", &[("Authorization", &key)]).status, 401);
}

#[test]
fn master_key_passes_with_allow_master_keys() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({"allow_master_keys": true}),
        &[("p", api_def("p", "/p/", &up.url("/")))],
    );
    let mut s = session_for(&[]);
    s["access_rights"] = json!({});
    let key = gw.create_key(s);
    let r = gw.get_with_key("/p/x", &key);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.hits(), 1);
}

// ---- upstream faults (§4) ----

#[test]
fn upstream_refused_is_500_problem_proxying() {
    let port = closed_port();
    let d = keyless_api("k1", "/down/", &format!("http://127.0.0.1:{port}/"));
    let gw = Gateway::start(json!({}), &[("k1", d)]);
    let r = gw.get("/down/x", &[]);
    assert_proxy_error(&r, 500, "There was a problem proxying the request");
}

#[test]
fn upstream_closing_without_answer_is_500_problem_proxying() {
    let up = Upstream::closing();
    let gw = keyless(&up, "/down/", "/", true);
    let r = request(gw.port(), "POST", "/down/x", &[], Some(b"x"));
    assert_proxy_error(&r, 500, "There was a problem proxying the request");
}

// ---- streamed bodies ----

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b'a' + (i % 26) as u8).collect()
}

#[test]
fn five_mib_upload_passes_through_intact() {
    let up = Upstream::with_handler(|r: &UpReq| {
        UpResp::json(
            200,
            &json!({"len": r.body.len(), "ok": r.body == pattern(5 << 20)}),
        )
    });
    let gw = keyless(&up, "/up/", "/", true);
    let body = pattern(5 << 20);
    let r = request(gw.port(), "POST", "/up/file", &[], Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"len": 5 << 20, "ok": true}));
}

#[test]
fn five_mib_chunked_upload_passes_through_intact() {
    let up = Upstream::with_handler(|r: &UpReq| {
        UpResp::json(
            200,
            &json!({"len": r.body.len(), "ok": r.body == pattern(5 << 20)}),
        )
    });
    let gw = keyless(&up, "/up/", "/", true);
    let body = pattern(5 << 20);
    let mut chunked = Vec::new();
    for piece in body.chunks(100_000) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let r = request(
        gw.port(),
        "POST",
        "/up/file",
        &[("Transfer-Encoding", "chunked")],
        Some(&chunked),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"len": 5 << 20, "ok": true}));
}

#[test]
fn five_mib_download_passes_through_intact() {
    let up = Upstream::with_handler(|_| UpResp::new(200, pattern(5 << 20)));
    let gw = keyless(&up, "/down/", "/", true);
    let r = gw.get("/down/file", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5 << 20);
    assert!(r.body == pattern(5 << 20), "download corrupted");
}

#[test]
fn five_mib_chunked_download_passes_through_intact() {
    let up = Upstream::with_handler(|_| UpResp::new(200, pattern(5 << 20)).chunked());
    let gw = keyless(&up, "/down/", "/", true);
    let r = gw.get("/down/file", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 5 << 20);
    assert!(r.body == pattern(5 << 20), "download corrupted");
}

#[test]
fn upstream_connections_are_reused() {
    let up = Upstream::start();
    let gw = keyless(&up, "/r/", "/", true);
    for _ in 0..5 {
        assert_eq!(gw.get("/r/x", &[]).status, 200);
    }
    assert_eq!(up.hits(), 5);
    assert!(
        up.connections() < 5,
        "{} upstream connections for 5 sequential requests",
        up.connections()
    );
}

#[test]
fn keep_alive_client_gets_several_responses_on_one_connection() {
    let up = Upstream::start();
    let gw = keyless(&up, "/r/", "/", true);
    let mut c = Conn::open(gw.port());
    for i in 0..3 {
        let path = format!("/r/n{i}");
        c.send(&http_req(gw.port(), &path));
        let r = c
            .read_response(false)
            .expect("response on kept-alive connection");
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["path"], Value::from(format!("/n{i}")));
    }
}

fn http_req(port: u16, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").into_bytes()
}

#[test]
fn duplicate_listen_path_gets_api_id_suffix_on_the_later_api() {
    let up_a = Upstream::start();
    let up_b = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            ("a", keyless_api("a", "/same/", &up_a.url("/"))),
            ("b", keyless_api("b", "/same/", &up_b.url("/"))),
        ],
    );
    assert_eq!(gw.get("/same/x", &[]).status, 200);
    assert_eq!((up_a.hits(), up_b.hits()), (1, 0));
    assert_eq!(gw.get("/same/-b/x", &[]).status, 200);
    assert_eq!((up_a.hits(), up_b.hits()), (1, 1));
}

#[test]
fn strict_routes_do_not_fall_through_to_a_shorter_path() {
    let up_app = Upstream::start();
    let up_root = Upstream::start();
    let gw = Gateway::start(
        json!({"http_server_options": {"enable_strict_routes": true}}),
        &[
            ("app", keyless_api("app", "/app", &up_app.url("/"))),
            ("root", keyless_api("root", "/", &up_root.url("/"))),
        ],
    );
    assert_eq!(gw.get("/app/x", &[]).status, 200);
    assert_eq!(gw.get("/app", &[]).status, 200);
    let r = gw.get("/apple", &[]);
    assert_eq!((r.status, r.text()), (404, "Not Found".to_string()));
    assert_eq!((up_app.hits(), up_root.hits()), (2, 0));
}

#[test]
fn key_from_query_param_when_use_param() {
    let up = Upstream::start();
    let mut d = api_def("p", "/p/", &up.url("/"));
    d["auth"] =
        json!({"auth_header_name": "Authorization", "use_param": true, "param_name": "key"});
    let gw = Gateway::start(json!({}), &[("p", d)]);
    let key = gw.create_key(session_for(&["p"]));
    let r = gw.get(&format!("/p/x?key={key}"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn key_from_cookie_when_use_cookie() {
    let up = Upstream::start();
    let mut d = api_def("p", "/p/", &up.url("/"));
    d["auth"] =
        json!({"auth_header_name": "Authorization", "use_cookie": true, "cookie_name": "sess"});
    let gw = Gateway::start(json!({}), &[("p", d)]);
    let key = gw.create_key(session_for(&["p"]));
    let r = gw.get("/p/x", &[("Cookie", &format!("a=1; sess={key}"))]);
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn active_false_api_is_still_served() {
    let up = Upstream::start();
    let mut d = keyless_api("k1", "/inactive/", &up.url("/"));
    d["active"] = json!(false);
    let gw = Gateway::start(json!({}), &[("k1", d)]);
    assert_eq!(gw.get("/inactive/x", &[]).status, 200);
}

// ---- which path serves a request (event loop or worker) ----

#[test]
fn a_target_named_by_host_name_is_served_too() {
    // An IP target is forwarded by the event loop; a host name needs a
    // lookup, which a worker does. Both answer the same.
    let up = Upstream::start();
    let target = format!("http://localhost:{}/base/", up.port());
    let gw = Gateway::start(json!({}), &[("k1", keyless_api("k1", "/svc/", &target))]);
    for _ in 0..3 {
        let r = gw.get("/svc/x", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["path"], "/base/x");
    }
}

#[test]
fn keep_alive_requests_alternate_between_fast_and_worker_paths() {
    // GETs go through the event loop, a POST with a body through a worker,
    // on one connection, in order.
    let up = Upstream::start();
    let gw = keyless(&up, "/svc/", "/", true);
    let mut c = Conn::open(gw.port());
    for i in 0..3 {
        c.send(format!("GET /svc/get{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let r = c.read_response(false).expect("GET answered");
        assert_eq!(r.json()["path"], format!("/get{i}"));
        c.send(
            format!("POST /svc/post{i} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
                .as_bytes(),
        );
        let r = c.read_response(false).expect("POST answered");
        assert_eq!(r.json()["path"], format!("/post{i}"));
        assert_eq!(r.json()["body"], "hi");
    }
}

#[test]
fn strip_auth_data_keeps_the_key_from_the_upstream() {
    let up = Upstream::start();
    let mut def = api_def("strip", "/strip/", &up.url("/"));
    def["strip_auth_data"] = json!(true);
    def["auth"] = json!({"auth_header_name": "X-Key", "use_param": true, "param_name": "key"});
    let gw = Gateway::start(json!({}), &[("strip", def)]);
    let key = gw.create_key(session_for(&["strip"]));
    let r = gw.get("/strip/a?x=1", &[("X-Key", key.as_str())]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    assert_eq!(seen.header("x-key"), None, "auth header forwarded");
    let r = gw.get(&format!("/strip/a?x=%41&key={key}&y"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.last_request().unwrap();
    assert_eq!(seen.query, "x=%41&y", "auth param forwarded");
    assert!(!seen.target.contains(&key));
}

#[test]
fn without_strip_auth_data_the_key_is_forwarded_as_tyk_does() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("keep", api_def("keep", "/keep/", &up.url("/")))],
    );
    let key = gw.create_key(session_for(&["keep"]));
    assert_eq!(gw.get_with_key("/keep/a", &key).status, 200);
    assert_eq!(
        up.last_request().unwrap().header("authorization"),
        Some(key.as_str())
    );
}

/// Issue 10, item 5: `enable_load_balancing` over `target_list`.
fn balanced_api(targets: &[String]) -> serde_json::Value {
    let mut d = keyless_api("lb", "/lb/", "");
    d["proxy"]["enable_load_balancing"] = json!(true);
    d["proxy"]["target_list"] = json!(targets);
    d
}

#[test]
fn load_balancing_takes_the_targets_in_turn() {
    let ups = [Upstream::start(), Upstream::start(), Upstream::start()];
    let targets: Vec<String> = ups.iter().map(|u| u.url("/")).collect();
    let gw = Gateway::start(json!({}), &[("lb", balanced_api(&targets))]);
    for _ in 0..9 {
        assert_eq!(gw.get("/lb/x", &[]).status, 200);
    }
    let hits: Vec<usize> = ups.iter().map(Upstream::hits).collect();
    assert_eq!(hits, [3, 3, 3]);
    // Each target gets its own Host.
    let host = ups[0]
        .last_request()
        .unwrap()
        .header("host")
        .unwrap()
        .to_string();
    assert_eq!(host, format!("127.0.0.1:{}", ups[0].port()));
}

#[test]
fn a_target_that_refuses_connections_is_skipped() {
    let ups = [Upstream::start(), Upstream::start()];
    let closed = format!("http://127.0.0.1:{}/", closed_port());
    let targets = vec![ups[0].url("/"), closed, ups[1].url("/")];
    let gw = Gateway::start(json!({}), &[("lb", balanced_api(&targets))]);
    let statuses: Vec<u16> = (0..12).map(|_| gw.get("/lb/x", &[]).status).collect();
    // At most the request that found it down fails; then it is skipped.
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(failed <= 1, "{statuses:?}");
    assert_eq!(ups[0].hits() + ups[1].hits(), 12 - failed);
    assert!(
        ups[0].hits() >= 5 && ups[1].hits() >= 5,
        "{} {}",
        ups[0].hits(),
        ups[1].hits()
    );
    assert!(gw.saw_log("connection refused; skipped"), "{:?}", gw.logs());
}

#[test]
fn every_target_down_is_tyks_error() {
    let targets: Vec<String> = (0..2)
        .map(|_| format!("http://127.0.0.1:{}/", closed_port()))
        .collect();
    let gw = Gateway::start(json!({}), &[("lb", balanced_api(&targets))]);
    for _ in 0..3 {
        assert_proxy_error(
            &gw.get("/lb/x", &[]),
            500,
            "There was a problem proxying the request",
        );
    }
}
