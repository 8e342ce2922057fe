//! Issue 4, item 5: upstreams that refuse, reset, stall, cut or lie. Each
//! fault gets Tyk's status and exact body (CONTRACT §4); a broken response
//! is never passed on as a complete one, and a dead pooled connection is
//! retried once, for idempotent requests only.

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::http::connect;
use crate::support::probe::{read_one, read_to_close};
use crate::support::scripted::Scripted;
use crate::support::*;

const PROBLEM: &str = "There was a problem proxying the request";
const HARD_TIMEOUT: &str = "Upstream service reached hard timeout.";

/// A gateway with one keyless API `/up/` in front of `target`.
fn gateway_to(target: &str) -> Gateway {
    gateway_with(json!({}), target)
}

fn gateway_with(conf: serde_json::Value, target: &str) -> Gateway {
    Gateway::start(conf, &[("up", keyless_api("up", "/up/", target))])
}

/// A keep-alive GET for `/up/<path>`.
fn keep_alive_get(path: &str) -> Vec<u8> {
    format!("GET /up/{path} HTTP/1.1\r\nHost: gw.test\r\n\r\n").into_bytes()
}

#[test]
fn upstream_refusing_connections_is_500_problem_proxying() {
    let port = closed_port();
    let gw = gateway_to(&format!("http://127.0.0.1:{port}/"));
    let r = gw.get("/up/x?secret=q-cred-7731", &[]);
    assert_proxy_error(&r, 500, PROBLEM);
    // The log names the API, the method and the upstream path, never the
    // query (it may carry credentials).
    let line = format!("api up GET /x: upstream 127.0.0.1:{port}: ");
    assert!(gw.saw_log(&line), "{:?}", gw.logs());
    assert!(!gw.logs_contain("q-cred-7731"), "{:?}", gw.logs());
}

#[test]
fn upstream_closing_after_reading_the_request_is_500_problem_proxying() {
    let up = Scripted::start(|c| {
        let _ = c.read_request();
        let _ = c.stream.shutdown(Shutdown::Both);
    });
    let gw = gateway_to(&up.url("/"));
    let r = gw.get("/up/x", &[]);
    assert_proxy_error(&r, 500, PROBLEM);
    assert_eq!(up.requests().len(), 1, "the upstream read the request");
}

#[test]
fn upstream_resetting_before_the_response_is_500_problem_proxying() {
    // Read one byte and close with the rest unread: the kernel sends RST.
    let up = Scripted::start(|c| {
        let mut one = [0u8; 1];
        let _ = std::io::Read::read(&mut c.stream, &mut one);
        thread::sleep(Duration::from_millis(50));
    });
    let gw = gateway_to(&up.url("/"));
    let r = gw.get("/up/x", &[]);
    assert_proxy_error(&r, 500, PROBLEM);
}

#[test]
fn upstream_closing_on_accept_is_500_problem_proxying() {
    let up = Upstream::closing();
    let gw = gateway_to(&up.url("/"));
    let r = gw.get("/up/x", &[]);
    assert_proxy_error(&r, 500, PROBLEM);
}

#[test]
fn upstream_sending_a_malformed_head_is_500_problem_proxying() {
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc");
        }
    });
    let gw = gateway_to(&up.url("/"));
    let r = gw.get("/up/x", &[]);
    assert_proxy_error(&r, 500, PROBLEM);
}

#[test]
fn no_response_head_within_proxy_default_timeout_is_504_hard_timeout() {
    let up = Upstream::silent();
    let gw = gateway_with(json!({"proxy_default_timeout": 1}), &up.url("/"));
    let start = Instant::now();
    let r = gw.get("/up/x", &[]);
    let took = start.elapsed();
    assert_proxy_error(&r, 504, HARD_TIMEOUT);
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(2500),
        "504 after {took:?}, want about 1 s"
    );
}

#[test]
fn upstream_dripping_its_head_past_proxy_default_timeout_is_504() {
    // A byte every 200 ms for 3 s: the head never completes.
    let up = Scripted::start(|c| {
        if c.read_request().is_none() {
            return;
        }
        for b in b"HTTP/1.1 200 OK" {
            if c.stream.write_all(&[*b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
    });
    let gw = gateway_with(json!({"proxy_default_timeout": 1}), &up.url("/"));
    let start = Instant::now();
    let r = gw.get("/up/x", &[]);
    let took = start.elapsed();
    assert_proxy_error(&r, 504, HARD_TIMEOUT);
    assert!(
        took <= Duration::from_millis(2500),
        "504 after {took:?}, want about 1 s"
    );
}

#[test]
fn response_cut_mid_body_closes_the_client_connection_short() {
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
            thread::sleep(Duration::from_millis(50));
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    s.write_all(&keep_alive_get("x")).unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(5));
    assert!(out.closed, "client connection left open after a cut body");
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let end = out
        .bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let body = &out.bytes[end..];
    assert!(
        body.len() < 1000,
        "a cut body was padded to look complete ({} bytes)",
        body.len()
    );
    assert!(
        out.response().is_err(),
        "the client saw a complete-looking response: {}",
        out.text()
    );
}

#[test]
fn chunked_response_cut_before_the_last_chunk_has_no_terminator_and_closes() {
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n");
            thread::sleep(Duration::from_millis(50));
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    s.write_all(&keep_alive_get("x")).unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(5));
    assert!(out.closed, "client connection left open after a cut body");
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let text = out.text();
    assert!(
        !text.contains("\r\n0\r\n\r\n"),
        "the client got a terminating chunk: {text:?}"
    );
    assert!(
        out.response().is_err(),
        "the client saw a complete-looking response: {text:?}"
    );
}

#[test]
fn response_without_length_cut_by_close_is_passed_on_with_close() {
    // Framed by close upstream: the client must get it framed by close (or
    // chunked and terminated), never a Content-Length we invented.
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.write(b"HTTP/1.1 200 OK\r\n\r\nuntil close");
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    s.write_all(&keep_alive_get("x")).unwrap();
    let mut buf = Vec::new();
    let r = match read_one(&mut s, &mut buf, Duration::from_secs(5)) {
        Some(r) => r,
        // Framed by close towards the client too.
        None => http::Resp::parse(&buf).expect("a whole response framed by close"),
    };
    assert_eq!((r.status, r.text()), (200, "until close".to_string()));
}

/// An upstream that answers its first request with `Content-Length: 5`
/// but more bytes: a whole second response (`X-Smuggled`), in the same
/// write, or `delay` later. Every later request gets `real`.
fn lying_upstream(delay: Duration) -> Scripted {
    let first = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    Scripted::start(move |c| {
        while c.read_request().is_some() {
            if first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let lie = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
                let extra =
                    b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nsmuggled";
                if delay.is_zero() {
                    c.write(&[&lie[..], &extra[..]].concat());
                } else {
                    c.write(lie);
                    thread::sleep(delay);
                    c.write(extra);
                }
            } else {
                c.respond("real");
            }
        }
    })
}

fn assert_lie_not_passed_on(delay: Duration) {
    let up = lying_upstream(delay);
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    let mut buf = Vec::new();
    s.write_all(&keep_alive_get("first")).unwrap();
    let r1 = read_one(&mut s, &mut buf, Duration::from_secs(5)).expect("first response");
    assert_eq!((r1.status, r1.text()), (200, "hello".to_string()));
    // Let the extra bytes reach the gateway's pooled connection.
    thread::sleep(delay + Duration::from_millis(200));
    s.write_all(&keep_alive_get("second")).unwrap();
    let r2 = read_one(&mut s, &mut buf, Duration::from_secs(5)).expect("second response");
    assert_eq!(
        r2.header("x-smuggled"),
        None,
        "bytes past the upstream's Content-Length became the next response"
    );
    assert_eq!((r2.status, r2.text()), (200, "real".to_string()));
    assert!(
        buf.is_empty(),
        "extra bytes on the client connection: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

#[test]
fn bytes_past_upstream_content_length_in_the_same_write_never_reach_the_next_response() {
    assert_lie_not_passed_on(Duration::ZERO);
}

#[test]
fn bytes_past_upstream_content_length_arriving_later_never_reach_the_next_response() {
    assert_lie_not_passed_on(Duration::from_millis(100));
}

#[test]
fn dead_pooled_connection_is_retried_once_for_get() {
    // Answers one request per connection, then closes without saying so.
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.respond("fresh");
        }
    });
    let gw = gateway_to(&up.url("/"));
    assert_eq!(gw.get("/up/a", &[]).status, 200);
    assert!(
        eventually(|| up.closed() == 1, Duration::from_secs(3)),
        "upstream closed its first connection"
    );
    let r = gw.get("/up/b", &[]);
    assert_eq!((r.status, r.text()), (200, "fresh".to_string()));
    assert_eq!(up.requests().len(), 2, "each GET reached the upstream once");
}

#[test]
fn get_dying_on_a_pooled_connection_is_replayed_once_on_a_fresh_one() {
    // Connection 0 answers its first request, then reads the next one and
    // dies without answering; later connections answer.
    let up = Scripted::start(|c| {
        if c.read_request().is_none() {
            return;
        }
        c.respond("first");
        if c.index == 0 {
            let _ = c.read_request();
            return;
        }
        while c.read_request().is_some() {
            c.respond("fresh");
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    let mut buf = Vec::new();
    s.write_all(&keep_alive_get("a")).unwrap();
    let r = read_one(&mut s, &mut buf, Duration::from_secs(5)).unwrap();
    assert_eq!(r.text(), "first");
    s.write_all(&keep_alive_get("b")).unwrap();
    let r = read_one(&mut s, &mut buf, Duration::from_secs(5)).expect("second response");
    assert_eq!(r.status, 200, "{}", r.text());
    let b_sent = up
        .requests()
        .iter()
        .filter(|q| q.target.ends_with("/b"))
        .count();
    assert_eq!(b_sent, 2, "the GET was sent, then replayed exactly once");
    assert_eq!(up.connections(), 2);
}

#[test]
fn get_is_retried_only_once() {
    // Connection 0 answers once then dies on the next request; every later
    // connection dies on its first request.
    let up = Scripted::start(|c| {
        if c.read_request().is_none() {
            return;
        }
        if c.index == 0 {
            c.respond("first");
            let _ = c.read_request();
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    let mut buf = Vec::new();
    s.write_all(&keep_alive_get("a")).unwrap();
    assert_eq!(
        read_one(&mut s, &mut buf, Duration::from_secs(5))
            .unwrap()
            .text(),
        "first"
    );
    s.write_all(&keep_alive_get("b")).unwrap();
    let r = read_one(&mut s, &mut buf, Duration::from_secs(5)).expect("second response");
    assert_proxy_error(&r, 500, PROBLEM);
    assert_eq!(up.connections(), 2, "one retry on one fresh connection");
}

#[test]
fn post_on_a_dead_pooled_connection_is_not_replayed() {
    // Connection 0 answers its first request, then reads the POST and dies
    // without answering; later connections would answer.
    let up = Scripted::start(|c| {
        if c.read_request().is_none() {
            return;
        }
        c.respond("first");
        if c.index == 0 {
            let _ = c.read_request();
            return;
        }
        while c.read_request().is_some() {
            c.respond("replayed");
        }
    });
    let gw = gateway_to(&up.url("/"));
    let mut s = connect(gw.port());
    let mut buf = Vec::new();
    s.write_all(&keep_alive_get("a")).unwrap();
    assert_eq!(
        read_one(&mut s, &mut buf, Duration::from_secs(5))
            .unwrap()
            .text(),
        "first"
    );
    s.write_all(
        b"POST /up/pay HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 12\r\n\r\npay-me-once!",
    )
    .unwrap();
    let r = read_one(&mut s, &mut buf, Duration::from_secs(5)).expect("a response");
    assert_proxy_error(&r, 500, PROBLEM);
    let seen = up
        .requests()
        .iter()
        .filter(|q| q.body == b"pay-me-once!")
        .count();
    assert!(seen <= 1, "the POST body reached the upstream {seen} times");
    assert_eq!(up.connections(), 1, "no fresh connection for a POST");
}

#[test]
fn post_after_the_upstream_closed_a_pooled_connection_is_sent_at_most_once() {
    // The brief's shape: the upstream closes each keep-alive connection
    // after answering. The POST may fail (500) or be sent on a fresh
    // connection, but its body is never delivered twice.
    let up = Scripted::start(|c| {
        if c.read_request().is_some() {
            c.respond("ok");
        }
    });
    let gw = gateway_to(&up.url("/"));
    assert_eq!(gw.get("/up/a", &[]).status, 200);
    assert!(eventually(|| up.closed() == 1, Duration::from_secs(3)));
    let r = request(gw.port(), "POST", "/up/pay", &[], Some(b"pay-me-once!"));
    if r.status != 200 {
        assert_proxy_error(&r, 500, PROBLEM);
    }
    let seen = up
        .requests()
        .iter()
        .filter(|q| q.body == b"pay-me-once!")
        .count();
    assert!(seen <= 1, "the POST body reached the upstream {seen} times");
    assert_eq!(seen == 1, r.status == 200, "200 exactly when delivered");
}
