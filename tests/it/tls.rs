//! Issue 11, items 1 and 2: TLS on the listener (SNI picks the
//! certificate, `*.` wildcards, Tyk's numeric versions, handshakes on the
//! event loop under the head timeout) and to `https://` upstreams
//! (refused without trust; accepted with the CA or the skip flag, per
//! gateway or per API; pooled). Then the tries to get around it: a wrong
//! SNI name, an old TLS version, plain HTTP on the TLS port, a client
//! that never finishes its handshake.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::support::tls::{Ca, TlsClient, TlsUpstream, client};
use crate::support::*;

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A TLS gateway with three certificates: `a.test` by `domain_name`,
/// `*.b.test` by a wildcard `domain_name`, `c.test` by the names in the
/// certificate (an `ssl_certificates` file holding key and chain).
struct Site {
    ca: Ca,
    pems: [String; 3],
    gw: Gateway,
}

fn site(extra: Value, apps: &[(&str, Value)]) -> Site {
    let ca = Ca::new("Gatehouse test CA");
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["*.b.test"]);
    let c = ca.leaf(&["c.test"]);
    let mut conf = json!({"http_server_options": {
        "use_ssl": true,
        "certificates": [
            {"domain_name": "a.test", "cert_file": "certs/a.pem", "key_file": "certs/a.key"},
            {"domain_name": "*.b.test", "cert_file": "certs/b.pem", "key_file": "certs/b.key"}
        ],
        "ssl_certificates": ["certs/c-combined.pem"]
    }});
    conf = merge_json(conf, &extra);
    let mut b_ = Gateway::builder()
        .conf(conf)
        .file("certs/a.pem", a.cert.clone())
        .file("certs/a.key", a.key.clone())
        .file("certs/b.pem", b.cert.clone())
        .file("certs/b.key", b.key.clone())
        .file("certs/c-combined.pem", c.combined());
    for (name, def) in apps {
        b_ = b_.app(name, def.clone());
    }
    let gw = b_.start();
    Site {
        ca,
        pems: [a.cert, b.cert, c.cert],
        gw,
    }
}

/// `over` merged into `base`, objects recursively.
fn merge_json(mut base: Value, over: &Value) -> Value {
    match (base.as_object_mut(), over.as_object()) {
        (Some(b), Some(o)) => {
            for (k, v) in o {
                let merged = match b.remove(k) {
                    Some(old) => merge_json(old, v),
                    None => v.clone(),
                };
                b.insert(k.clone(), merged);
            }
            base
        }
        _ => over.clone(),
    }
}

#[test]
fn the_sni_name_picks_the_certificate_and_requests_are_served() {
    let up = Upstream::start();
    let s = site(
        json!({}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    let cfg = client(&s.ca, None);
    for (name, want) in [("a.test", 0), ("x.b.test", 1), ("c.test", 2), ("A.TEST", 0)] {
        let mut c = TlsClient::connect(s.gw.port(), name, cfg.clone())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.peer_cert(), der(&s.pems[want]), "{name}");
        // Keep-alive: two requests on one TLS connection.
        for i in 0..2 {
            let r = c.request("GET", &format!("/open/{i}"), &[], None);
            assert_eq!(r.status, 200, "{name}: {}", r.text());
        }
    }
    assert_eq!(up.hits(), 8);
    // A body through TLS reaches the upstream whole.
    let mut c = TlsClient::connect(s.gw.port(), "a.test", cfg).unwrap();
    let body = vec![b'z'; 100_000];
    let r = c.request("POST", "/open/body", &[], Some(&body));
    assert_eq!(r.status, 200);
    assert_eq!(up.last_request().unwrap().body.len(), 100_000);
}

#[test]
fn a_wrong_sni_name_gets_the_first_certificate_which_the_client_refuses() {
    let s = site(json!({}), &[]);
    let cfg = client(&s.ca, None);
    for name in ["evil.test", "b.test", "y.x.b.test", "aa.test"] {
        let e = TlsClient::connect(s.gw.port(), name, cfg.clone()).err();
        let e = e.unwrap_or_else(|| panic!("{name}: handshake should fail"));
        assert!(
            e.contains("NotValidForName") || e.contains("not valid for"),
            "{name}: {e}"
        );
    }
    // The gateway is unharmed.
    assert!(TlsClient::connect(s.gw.port(), "a.test", cfg).is_ok());
}

#[test]
fn admin_api_is_served_over_tls_and_plain_http_is_not() {
    let up = Upstream::start();
    let s = site(
        json!({}),
        &[("keyed", api_def("keyed", "/keyed/", &up.url("/")))],
    );
    let mut c = TlsClient::connect(s.gw.port(), "a.test", client(&s.ca, None)).unwrap();
    let body = session_for(&["keyed"]).to_string();
    let r = c.request(
        "POST",
        "/tyk/keys/create",
        &[
            ("x-tyk-authorization", SECRET),
            ("Content-Type", "application/json"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_string();
    let r = c.request("GET", "/keyed/x", &[("Authorization", &key)], None);
    assert_eq!(r.status, 200);
    // Plain HTTP on the TLS port never gets an HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", s.gw.port())).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    plain
        .write_all(
            format!("GET /keyed/x HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(up.hits(), 1);
}

#[test]
fn min_version_uses_tyks_numbers() {
    let s = site(json!({"http_server_options": {"min_version": 772}}), &[]);
    let old = client(&s.ca, Some(&rustls::version::TLS12));
    assert!(TlsClient::connect(s.gw.port(), "a.test", old).is_err());
    let new = client(&s.ca, Some(&rustls::version::TLS13));
    assert!(TlsClient::connect(s.gw.port(), "a.test", new).is_ok());
    // 769 (TLS 1.0) cannot be served: 1.2 is the floor, with a warning.
    let s = site(json!({"http_server_options": {"min_version": 769}}), &[]);
    assert!(s.gw.saw_log("below 1.2"), "{:?}", s.gw.logs());
    let tls12 = client(&s.ca, Some(&rustls::version::TLS12));
    assert!(TlsClient::connect(s.gw.port(), "a.test", tls12).is_ok());
}

#[test]
fn a_stalled_handshake_blocks_no_one_and_times_out() {
    let up = Upstream::start();
    let s = site(
        json!({"gatehouse": {"head_timeout_secs": 1}}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    // Half a ClientHello, then nothing.
    let mut stalled = TcpStream::connect(("127.0.0.1", s.gw.port())).unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let cfg = client(&s.ca, None);
    for _ in 0..5 {
        let mut c = TlsClient::connect(s.gw.port(), "a.test", cfg.clone()).unwrap();
        assert_eq!(c.request("GET", "/open/", &[], None).status, 200);
    }
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "stalled handshake kept open"
    );
}

#[test]
fn unusable_certificates_stop_the_start_naming_the_field() {
    let ca = Ca::new("ca");
    let a = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["a.test"]);
    let cases = [
        (
            json!({"use_ssl": true, "certificates": [{"domain_name": "a.test", "cert_file": "missing.pem", "key_file": "a.key"}]}),
            "http_server_options.certificates[0].cert_file",
        ),
        (
            json!({"use_ssl": true, "certificates": [{"cert_file": "a.pem", "key_file": "other.key"}]}),
            "http_server_options.certificates[0].key_file",
        ),
        (
            json!({"use_ssl": true, "ssl_certificates": ["a.pem"]}),
            "http_server_options.ssl_certificates[0].key_file",
        ),
        (json!({"use_ssl": true}), "http_server_options.use_ssl"),
        (
            json!({"use_ssl": true, "ssl_certificates": ["a.pem"], "min_version": 12}),
            "http_server_options.min_version",
        ),
    ];
    for (opts, field) in cases {
        let exited = Gateway::builder()
            .conf(json!({"http_server_options": opts}))
            .file("a.pem", a.cert.clone())
            .file("a.key", a.key.clone())
            .file("other.key", other.key.clone())
            .try_start()
            .err()
            .unwrap_or_else(|| panic!("{field}: started"));
        assert_eq!(exited.code(), Some(2), "{field}");
        assert!(
            exited.stderr_text().contains(field),
            "{field}: {}",
            exited.stderr_text()
        );
    }
}

fn https_api(id: &str, target: &str, transport: Value) -> Value {
    let mut d = keyless_api(id, &format!("/{id}/"), target);
    d["proxy"]["transport"] = transport;
    d
}

#[test]
fn an_https_upstream_is_refused_unless_trusted() {
    let ca = Ca::new("upstream CA");
    let up = TlsUpstream::start(&ca.leaf(&["localhost"]));
    let gw = Gateway::start(
        json!({}),
        &[
            ("strict", https_api("strict", &up.url("/s/"), json!({}))),
            (
                "skip",
                https_api(
                    "skip",
                    &up.url("/k/"),
                    json!({"ssl_insecure_skip_verify": true}),
                ),
            ),
        ],
    );
    assert_proxy_error(
        &gw.get("/strict/x", &[]),
        500,
        "There was a problem proxying the request",
    );
    // The line may reach the log file just after the answer.
    assert!(
        gw.wait_for_log("TLS handshake", std::time::Duration::from_secs(3)),
        "{:?}",
        gw.logs()
    );
    assert_eq!(
        up.hits(),
        0,
        "nothing is sent before the certificate is proven"
    );
    // The API's transport may skip the check; the gateway's stays on.
    let r = gw.get("/skip/x", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = r.json();
    assert_eq!(got["path"], "/k/x");
    assert_eq!(got["sni"], "localhost");
    assert_eq!(got["host"], format!("localhost:{}", up.addr.port()));
    assert_eq!(gw.get("/strict/x", &[]).status, 500);
}

#[test]
fn an_https_upstream_is_accepted_with_its_ca_and_pooled() {
    let ca = Ca::new("upstream CA");
    let up = TlsUpstream::start(&ca.leaf(&["localhost"]));
    let gw = Gateway::builder()
        .file("upstream-ca.pem", ca.pem.clone())
        .env("SSL_CERT_FILE", "upstream-ca.pem")
        .app("strict", https_api("strict", &up.url("/"), json!({})))
        .start();
    for _ in 0..3 {
        let r = gw.get("/strict/x", &[]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(up.hits(), 3);
    assert_eq!(up.connections(), 1, "keep-alive to the upstream");
    // A certificate for another name is refused even from the trusted CA.
    let wrong = TlsUpstream::start(&ca.leaf(&["other.test"]));
    let mut gw2 = Gateway::builder()
        .file("upstream-ca.pem", ca.pem.clone())
        .env("SSL_CERT_FILE", "upstream-ca.pem")
        .app("wrong", https_api("wrong", &wrong.url("/"), json!({})))
        .start();
    assert_eq!(gw2.get("/wrong/x", &[]).status, 500);
    assert_eq!(wrong.hits(), 0);
    gw2.stop();
}

#[test]
fn the_gateways_skip_flag_covers_every_api() {
    let ca = Ca::new("upstream CA");
    let up = TlsUpstream::start(&ca.leaf(&["localhost"]));
    let gw = Gateway::start(
        json!({"proxy_ssl_insecure_skip_verify": true, "proxy_ssl_min_version": 771}),
        &[(
            "a",
            https_api("a", &up.url("/"), json!({"ssl_min_version": 772})),
        )],
    );
    assert_eq!(gw.get("/a/x", &[]).status, 200);
}

#[test]
fn a_websocket_round_trips_over_the_tls_listener() {
    use tungstenite::{Message, client::IntoClientRequest};
    let echo = crate::websocket::echo_server();
    let ws_api = keyless_api("ws", "/ws/", &format!("http://127.0.0.1:{echo}/"));
    let s = site(json!({}), &[("ws", ws_api)]);
    let c = TlsClient::connect(s.gw.port(), "a.test", client(&s.ca, None)).unwrap();
    let req = "wss://a.test/ws/chat".into_client_request().unwrap();
    let (mut ws, res) = tungstenite::client(req, c.stream).expect("handshake over TLS");
    assert_eq!(res.status(), 101);
    // Small and large messages, several in flight: TLS records of every size.
    let big = "x".repeat(200_000);
    for text in ["one", big.as_str(), "two", "three"] {
        ws.send(Message::text(text)).unwrap();
    }
    for text in ["one", big.as_str(), "two", "three"] {
        match ws.read().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), format!("echo: {text}")),
            other => panic!("got {other:?}"),
        }
    }
    ws.close(None).unwrap();
}

/// A WebSocket echo server behind TLS (`wss://`): every text comes back
/// prefixed with `echo: `. Returns its port.
fn wss_echo(leaf: &crate::support::tls::Leaf) -> u16 {
    let config = leaf.server_config();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for sock in listener.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let stream = rustls::StreamOwned::new(conn, sock);
                if let Ok(mut ws) = tungstenite::accept(stream) {
                    crate::websocket::echo(&mut ws);
                }
            });
        }
    });
    port
}

#[test]
fn a_websocket_to_a_wss_upstream_round_trips() {
    use tungstenite::{Message, client::IntoClientRequest};
    let ca = Ca::new("upstream CA");
    let port = wss_echo(&ca.leaf(&["localhost"]));
    let target = format!("https://localhost:{port}/");
    let gw = Gateway::builder()
        .file("upstream-ca.pem", ca.pem.clone())
        .env("SSL_CERT_FILE", "upstream-ca.pem")
        .app("ws", https_api("ws", &target, json!({})))
        .start();
    let req = format!("ws://127.0.0.1:{}/ws/chat", gw.port())
        .into_client_request()
        .unwrap();
    let stream = TcpStream::connect(("127.0.0.1", gw.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, res) = tungstenite::client(req, stream).expect("handshake through the gateway");
    assert_eq!(res.status(), 101);
    let big = "y".repeat(100_000);
    for text in ["hello", big.as_str(), "bye"] {
        ws.send(Message::text(text)).unwrap();
        match ws.read().unwrap() {
            Message::Text(t) => assert_eq!(t.as_str(), format!("echo: {text}")),
            other => panic!("got {other:?}"),
        }
    }
    ws.close(None).unwrap();
}

#[test]
fn pipelined_requests_in_one_tls_record_are_all_answered() {
    let up = Upstream::start();
    let s = site(
        json!({}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    let mut c = TlsClient::connect(s.gw.port(), "a.test", client(&s.ca, None)).unwrap();
    // Three requests in one write (one record): the gateway must answer all
    // three though the socket has nothing more to say after the first read.
    let three: String = (0..3)
        .map(|i| format!("GET /open/{i} HTTP/1.1\r\nHost: a.test\r\n\r\n"))
        .collect();
    c.stream.write_all(three.as_bytes()).unwrap();
    c.stream.flush().unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.windows(15).filter(|w| *w == b"HTTP/1.1 200 OK").count() < 3 {
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&got)
        );
        let n = c.stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(up.hits(), 3);
}
