//! Issue 4, items 1, 2 and 4: hostile client bytes through a real socket.
//! Every refused request gets its status, a closed connection, nothing at
//! the (counting) upstream, and a gateway that still answers `/hello`; the
//! gateway's thread and fd counts return to their baseline afterwards.
//! Then forwarding safety: hop-by-hop abuse, re-framed bodies and listen
//! paths that must not shadow a keyed API (Tyk bug #155).

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::http::connect;
use crate::support::probe::{self, Usage, exchange, read_one, read_to_close};
use crate::support::scripted::Scripted;
use crate::support::*;

/// How long a refused request may take to be answered and closed.
const WITHIN: Duration = Duration::from_secs(3);

/// A gateway with a keyless `/open/` API in front of a counting upstream,
/// and its thread/fd counts once settled.
struct Edge {
    gw: Gateway,
    up: Upstream,
    base: Usage,
}

fn edge(conf: Value) -> Edge {
    let up = Upstream::start();
    let gw = Gateway::start(
        conf,
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    assert_eq!(gw.get("/hello", &[]).status, 200, "warm-up /hello");
    let base = probe::settled(pid(&gw));
    Edge { gw, up, base }
}

fn pid(gw: &Gateway) -> u32 {
    gw.pid().expect("gateway running")
}

/// Asserts (polling, at most 5 s) that threads are back to the baseline and
/// fds no higher than it.
#[track_caller]
fn assert_back_to_baseline(gw: &Gateway, base: Usage, what: &str) {
    let pid = pid(gw);
    let ok = eventually(
        || {
            let u = probe::usage(pid);
            u.threads == base.threads && u.fds <= base.fds
        },
        Duration::from_secs(5),
    );
    assert!(
        ok,
        "{what}: threads/fds did not return to baseline {base:?}; now {:?}",
        probe::usage(pid)
    );
    assert!(probe::alive(pid), "{what}: gateway died");
}

/// One hostile request and the status it must get.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, status: u16, bytes: impl Into<Vec<u8>>) -> Case {
    Case {
        name,
        bytes: bytes.into(),
        status,
    }
}

/// `GET /open/x HTTP/1.1`, `Host`, then `fields` (each ending in CRLF).
fn get_with(fields: &str) -> Vec<u8> {
    format!("GET /open/x HTTP/1.1\r\nHost: gw.test\r\n{fields}\r\n").into_bytes()
}

/// `POST /open/x HTTP/1.1`, `Host`, `fields`, then `body`.
fn post_with(fields: &str, body: &str) -> Vec<u8> {
    format!("POST /open/x HTTP/1.1\r\nHost: gw.test\r\n{fields}\r\n{body}").into_bytes()
}

/// A chunked POST whose body is `chunks` as written.
fn chunked_post(chunks: &str) -> Vec<u8> {
    post_with("Transfer-Encoding: chunked\r\n", chunks)
}

/// Sends the case on a fresh connection and asserts the whole contract:
/// status, close, upstream untouched, `/hello` still 200.
#[track_caller]
fn assert_refused(e: &Edge, c: &Case) {
    let hits = e.up.hits();
    let conns = e.up.connections();
    let out = exchange(e.gw.port(), &c.bytes, WITHIN);
    assert_eq!(
        out.status(),
        Some(c.status),
        "case {:?}: wrong status; got {:?}",
        c.name,
        out.text()
    );
    assert!(
        out.closed,
        "case {:?}: connection still open {:?} after the {} answer",
        c.name, WITHIN, c.status
    );
    let hello = e.gw.get("/hello", &[]);
    assert_eq!(hello.status, 200, "case {:?}: /hello afterwards", c.name);
    assert_eq!(
        e.up.hits(),
        hits,
        "case {:?}: a request reached the upstream",
        c.name
    );
    assert_eq!(
        e.up.connections(),
        conns,
        "case {:?}: the gateway connected to the upstream",
        c.name
    );
}

/// Runs every case on one gateway, then checks threads and fds.
fn run_table(cases: &[Case]) {
    let e = edge(json!({}));
    for c in cases {
        assert_refused(&e, c);
    }
    assert_back_to_baseline(&e.gw, e.base, "after the cases");
}

fn content_length_cases() -> Vec<Case> {
    vec![
        case(
            "Content-Length with Transfer-Encoding",
            400,
            post_with(
                "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "Transfer-Encoding before Content-Length",
            400,
            post_with(
                "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
                "3\r\nabc\r\n0\r\n\r\n",
            ),
        ),
        case(
            "two equal Content-Lengths",
            400,
            post_with("Content-Length: 3\r\nContent-Length: 3\r\n", "abc"),
        ),
        case(
            "two different Content-Lengths",
            400,
            post_with("Content-Length: 3\r\nContent-Length: 4\r\n", "abcd"),
        ),
        case(
            "Content-Length list `3, 3`",
            400,
            post_with("Content-Length: 3, 3\r\n", "abc"),
        ),
        case(
            "Content-Length `+3`",
            400,
            post_with("Content-Length: +3\r\n", "abc"),
        ),
        case(
            "Content-Length `0x3`",
            400,
            post_with("Content-Length: 0x3\r\n", "abc"),
        ),
        case(
            "empty Content-Length",
            400,
            post_with("Content-Length: \r\n", "abc"),
        ),
        case(
            "Content-Length `-1`",
            400,
            post_with("Content-Length: -1\r\n", "abc"),
        ),
        case(
            "Content-Length of 20 digits (small value)",
            400,
            post_with("Content-Length: 00000000000000000003\r\n", "abc"),
        ),
        case(
            "Content-Length of 20 digits (huge value)",
            400,
            post_with("Content-Length: 12345678901234567890\r\n", "abc"),
        ),
    ]
}

fn transfer_encoding_cases() -> Vec<Case> {
    let body = "3\r\nabc\r\n0\r\n\r\n";
    vec![
        case(
            "Transfer-Encoding `chunked, gzip`",
            400,
            post_with("Transfer-Encoding: chunked, gzip\r\n", body),
        ),
        case(
            "Transfer-Encoding `gzip`",
            400,
            post_with("Transfer-Encoding: gzip\r\n", body),
        ),
        case(
            "Transfer-Encoding `chunked, chunked`",
            400,
            post_with("Transfer-Encoding: chunked, chunked\r\n", body),
        ),
        case(
            "Transfer-Encoding `chunked` on two lines",
            400,
            post_with(
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                body,
            ),
        ),
        case(
            "Transfer-Encoding `chunked,` (empty element)",
            400,
            post_with("Transfer-Encoding: chunked,\r\n", body),
        ),
        case(
            "empty Transfer-Encoding",
            400,
            post_with("Transfer-Encoding: \r\n", body),
        ),
    ]
}

fn unknown_coding_cases() -> Vec<Case> {
    let body = "3\r\nabc\r\n0\r\n\r\n";
    vec![
        case(
            "Transfer-Encoding `foo`",
            501,
            post_with("Transfer-Encoding: foo\r\n", body),
        ),
        case(
            "Transfer-Encoding `foo, chunked`",
            501,
            post_with("Transfer-Encoding: foo, chunked\r\n", body),
        ),
        case(
            "Transfer-Encoding `xchunked`",
            501,
            post_with("Transfer-Encoding: xchunked\r\n", body),
        ),
    ]
}

fn field_syntax_cases() -> Vec<Case> {
    vec![
        case("obs-fold with a space", 400, get_with("X-A: a\r\n b\r\n")),
        case("obs-fold with a tab", 400, get_with("X-A: a\r\n\tb\r\n")),
        case("bare CR inside a value", 400, get_with("X-A: a\rb\r\n")),
        case(
            "bare CR ending a field line",
            400,
            get_with("X-A: a\rX-B: b\r\n"),
        ),
        case(
            "bare LF line ends throughout",
            400,
            &b"GET /open/x HTTP/1.1\nHost: gw.test\n\n"[..],
        ),
        case(
            "bare LF ending one field line",
            400,
            get_with("X-A: a\nX-B: b\r\n"),
        ),
        case(
            "bare LF ending the request line",
            400,
            &b"GET /open/x HTTP/1.1\nHost: gw.test\r\n\r\n"[..],
        ),
        case("NUL in a value", 400, get_with("X-A: a\0b\r\n")),
        case("SOH (0x01) in a value", 400, get_with("X-A: a\x01b\r\n")),
        case("VT (0x0b) in a value", 400, get_with("X-A: a\x0bb\r\n")),
        case("ESC (0x1b) in a value", 400, get_with("X-A: a\x1bb\r\n")),
        case("DEL (0x7f) in a value", 400, get_with("X-A: a\x7fb\r\n")),
        case("empty header name", 400, get_with(": v\r\n")),
        case(
            "space inside a header name",
            400,
            get_with("Bad Name: v\r\n"),
        ),
        case(
            "space between name and colon",
            400,
            get_with("Transfer-Encoding : chunked\r\n"),
        ),
        case("`(` in a header name", 400, get_with("X(a): v\r\n")),
        case("`\"` in a header name", 400, get_with("X\"a: v\r\n")),
        case(
            "control byte in a header name",
            400,
            get_with("X\x01A: v\r\n"),
        ),
        case("field line without a colon", 400, get_with("NoColon\r\n")),
    ]
}

fn host_cases() -> Vec<Case> {
    vec![
        case(
            "two Host fields",
            400,
            &b"GET /open/x HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n"[..],
        ),
        case(
            "no Host on HTTP/1.1",
            400,
            &b"GET /open/x HTTP/1.1\r\nX-A: a\r\n\r\n"[..],
        ),
        // Issue 8: RFC 9112 §3.2, a Host that is not `uri-host [":" port]`.
        case("Host `a b`", 400, get_host("a b")),
        case("Host `a/b`", 400, get_host("a/b")),
        case("Host `a@b`", 400, get_host("a@b")),
        case("Host `a:b`", 400, get_host("a:b")),
    ]
}

/// `GET /open/x` with `Host: host` as the only Host.
fn get_host(host: &str) -> Vec<u8> {
    format!("GET /open/x HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn request_line_cases() -> Vec<Case> {
    let with_host = |line: &str| format!("{line}\r\nHost: gw.test\r\n\r\n").into_bytes();
    vec![
        case(
            "extra token after the version",
            400,
            with_host("GET /open/x HTTP/1.1 extra"),
        ),
        case(
            "extra token in the target",
            400,
            with_host("GET /open/x y HTTP/1.1"),
        ),
        case(
            "two spaces after the method",
            400,
            with_host("GET  /open/x HTTP/1.1"),
        ),
        case(
            "trailing space after the version",
            400,
            with_host("GET /open/x HTTP/1.1 "),
        ),
        case("no version", 400, with_host("GET /open/x")),
        case(
            "lowercase protocol name",
            400,
            with_host("GET /open/x http/1.1"),
        ),
        case("tab as separator", 400, with_host("GET\t/open/x HTTP/1.1")),
    ]
}

fn version_cases() -> Vec<Case> {
    let with_host = |line: &str| format!("{line}\r\nHost: gw.test\r\n\r\n").into_bytes();
    vec![
        case(
            "HTTP/2.0 request line",
            505,
            with_host("GET /open/x HTTP/2.0"),
        ),
        case(
            "HTTP/0.9 request line",
            505,
            with_host("GET /open/x HTTP/0.9"),
        ),
        case(
            "HTTP/3.0 request line",
            505,
            with_host("GET /open/x HTTP/3.0"),
        ),
        case(
            "HTTP/2 connection preface",
            505,
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        ),
    ]
}

/// Issue 8: a body that arrives with its head is checked whole before the
/// upstream is connected to, so not even a connection is opened.
fn chunk_cases() -> Vec<Case> {
    vec![
        case(
            "chunk size `+3`",
            400,
            chunked_post("+3\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size `-3`",
            400,
            chunked_post("-3\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size `0x3`",
            400,
            chunked_post("0x3\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size of 17 hex digits",
            400,
            chunked_post("00000000000000003\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size of 17 hex digits (huge value)",
            400,
            chunked_post("fffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk extension over 4 KiB",
            400,
            chunked_post(&format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000))),
        ),
        case(
            "bare LF after a chunk size",
            400,
            chunked_post("3\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk data longer than its size",
            400,
            chunked_post("3\r\nabcdef\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size `-1`",
            400,
            chunked_post("-1\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "empty chunk size",
            400,
            chunked_post("\r\nabc\r\n0\r\n\r\n"),
        ),
        case(
            "chunk size `1_0`",
            400,
            chunked_post("1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
        ),
        case(
            "bad chunk after a good one",
            400,
            chunked_post("3\r\nabc\r\n+3\r\nabc\r\n0\r\n\r\n"),
        ),
    ]
}

// ---- item 1: head limits ----

#[test]
fn request_line_over_8_kib_is_414_and_closes() {
    let e = edge(json!({}));
    let line = format!("GET /open/{} HTTP/1.1", "a".repeat(9 * 1024));
    assert_refused(
        &e,
        &case(
            "9 KiB request line",
            414,
            format!("{line}\r\nHost: gw.test\r\n\r\n"),
        ),
    );
}

#[test]
fn request_line_over_8_kib_without_line_end_is_414_and_closes() {
    let e = edge(json!({}));
    let partial = format!("GET /open/{}", "a".repeat(9 * 1024));
    assert_refused(&e, &case("9 KiB request line, no CRLF yet", 414, partial));
}

#[test]
fn request_line_under_8_kib_is_served() {
    let e = edge(json!({}));
    let path = format!("/open/{}", "a".repeat(7 * 1024));
    let r = e.gw.get(&path, &[]);
    assert_eq!(r.status, 200, "a 7 KiB target is within the limit");
}

#[test]
fn header_line_over_8_kib_is_431_and_closes() {
    let e = edge(json!({}));
    let fields = format!("X-Big: {}\r\n", "v".repeat(9 * 1024));
    assert_refused(&e, &case("9 KiB header line", 431, get_with(&fields)));
}

#[test]
fn head_over_64_kib_is_431_and_closes() {
    let e = edge(json!({}));
    let fields: String = (0..10)
        .map(|i| format!("X-Part-{i}: {}\r\n", "v".repeat(7 * 1024)))
        .collect();
    assert_refused(
        &e,
        &case("70 KiB head of 7 KiB lines", 431, get_with(&fields)),
    );
}

#[test]
fn more_than_100_header_fields_is_431_and_closes() {
    let e = edge(json!({}));
    // Host plus 100 more: 101 fields.
    let fields: String = (0..100).map(|i| format!("X-F{i}: v\r\n")).collect();
    assert_refused(&e, &case("101 header fields", 431, get_with(&fields)));
}

#[test]
fn exactly_100_header_fields_are_served() {
    let e = edge(json!({}));
    // Host, 98 more, and Connection: 100 fields.
    let mut fields: String = (0..98).map(|i| format!("X-F{i}: v\r\n")).collect();
    fields.push_str("Connection: close\r\n");
    let out = exchange(e.gw.port(), &get_with(&fields), WITHIN);
    assert_eq!(out.status(), Some(200), "{}", out.text());
}

#[test]
fn head_incomplete_past_head_timeout_is_408_and_closes() {
    let e = edge(json!({"gatehouse": {"head_timeout_secs": 1}}));
    let out = exchange(
        e.gw.port(),
        b"GET /open/x HTTP/1.1\r\nHost: gw.test\r\n",
        Duration::from_secs(4),
    );
    assert_eq!(out.status(), Some(408), "{}", out.text());
    assert!(out.closed, "connection left open after 408");
    assert!(
        out.elapsed >= Duration::from_millis(900) && out.elapsed <= Duration::from_secs(3),
        "408 after {:?}, want about 1 s",
        out.elapsed
    );
    assert_eq!(e.up.connections(), 0);
    assert_eq!(e.gw.get("/hello", &[]).status, 200);
}

#[test]
fn head_dripped_byte_by_byte_is_408_after_head_timeout() {
    let e = edge(json!({"gatehouse": {"head_timeout_secs": 1}}));
    let mut s = connect(e.gw.port());
    s.write_all(b"GET /open/x HTTP/1.1\r\nHost: gw.test\r\nX-Slow: ")
        .unwrap();
    let mut w = s.try_clone().unwrap();
    // One byte every 100 ms: never idle, never complete.
    let dripper = thread::spawn(move || {
        for _ in 0..40 {
            if w.write_all(b"a").is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    });
    let out = read_to_close(&mut s, Duration::from_secs(4));
    assert_eq!(out.status(), Some(408), "{}", out.text());
    assert!(out.closed, "a dripping head was not cut off");
    assert!(
        out.elapsed <= Duration::from_secs(3),
        "408 after {:?}, want about 1 s from the first byte",
        out.elapsed
    );
    let _ = s.shutdown(std::net::Shutdown::Both);
    dripper.join().unwrap();
    assert_eq!(e.up.connections(), 0);
    assert_eq!(e.gw.get("/hello", &[]).status, 200);
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let e = edge(json!({"gatehouse": {"idle_timeout_secs": 1}}));
    let mut s = connect(e.gw.port());
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let r = read_one(&mut s, &mut buf, WITHIN).expect("a response");
    assert_eq!(r.status, 200);
    let out = read_to_close(&mut s, Duration::from_secs(4));
    assert!(out.closed, "idle keep-alive connection left open");
    assert!(
        out.elapsed >= Duration::from_millis(800) && out.elapsed <= Duration::from_secs(3),
        "closed after {:?}, want about 1 s",
        out.elapsed
    );
    assert!(
        out.bytes.is_empty(),
        "an idle connection is closed silently, got {:?}",
        out.text()
    );
}

#[test]
fn connection_that_never_sends_is_closed_after_idle_timeout() {
    let e = edge(json!({"gatehouse": {"idle_timeout_secs": 1}}));
    let mut s = connect(e.gw.port());
    let out = read_to_close(&mut s, Duration::from_secs(4));
    assert!(out.closed, "silent connection left open");
    assert!(
        out.elapsed <= Duration::from_secs(3),
        "closed after {:?}, want about 1 s",
        out.elapsed
    );
}

#[test]
fn body_stalled_past_body_timeout_closes_the_connection() {
    let e = edge(json!({"gatehouse": {"body_timeout_secs": 1}}));
    let mut s = connect(e.gw.port());
    s.write_all(&post_with("Content-Length: 100\r\n", "only ten b"))
        .unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(5));
    assert!(out.closed, "stalled body left the connection open");
    assert!(
        out.elapsed >= Duration::from_millis(900) && out.elapsed < Duration::from_millis(1800),
        "closed after {:?}, want about body_timeout_secs (1 s), not more",
        out.elapsed
    );
    if let Some(status) = out.status() {
        assert!(status >= 400, "a cut body must not succeed: {}", out.text());
    }
    assert_eq!(e.up.hits(), 0, "an incomplete request reached the upstream");
    assert_eq!(e.gw.get("/hello", &[]).status, 200);
    assert_back_to_baseline(&e.gw, e.base, "after the stalled body");
}

#[test]
fn admin_body_stalled_past_body_timeout_closes_the_connection() {
    let e = edge(json!({"gatehouse": {"body_timeout_secs": 1}}));
    let mut s = connect(e.gw.port());
    let head = format!(
        "POST /tyk/keys/create HTTP/1.1\r\nHost: gw.test\r\nx-tyk-authorization: {SECRET}\r\nContent-Length: 100\r\n\r\n{{\"rate\":"
    );
    s.write_all(head.as_bytes()).unwrap();
    let out = read_to_close(&mut s, Duration::from_secs(5));
    assert!(out.closed, "stalled admin body left the connection open");
    assert!(
        out.elapsed >= Duration::from_millis(900) && out.elapsed < Duration::from_millis(1800),
        "closed after {:?}, want about body_timeout_secs (1 s), not more",
        out.elapsed
    );
    if let Some(status) = out.status() {
        assert!(status >= 400, "a cut body must not succeed: {}", out.text());
    }
    assert_eq!(e.gw.get("/hello", &[]).status, 200);
}

// ---- item 2: framing, strictly RFC 9112 ----

#[test]
fn content_length_tricks_are_400_and_close() {
    run_table(&content_length_cases());
}

#[test]
fn transfer_encoding_other_than_exactly_chunked_is_400_and_closes() {
    run_table(&transfer_encoding_cases());
}

#[test]
fn unknown_transfer_coding_is_501_and_closes() {
    run_table(&unknown_coding_cases());
}

#[test]
fn field_line_syntax_violations_are_400_and_close() {
    run_table(&field_syntax_cases());
}

#[test]
fn host_missing_repeated_or_not_uri_host_is_400_and_closes() {
    run_table(&host_cases());
}

#[test]
fn request_line_violations_are_400_and_close() {
    run_table(&request_line_cases());
}

#[test]
fn http_2_0_and_0_9_request_lines_are_505_and_release_the_connection() {
    run_table(&version_cases());
}

#[test]
fn bad_chunk_framing_is_400_and_closes() {
    run_table(&chunk_cases());
}

#[test]
fn bad_chunk_past_the_buffered_bound_never_completes_a_request_upstream() {
    // Past `max_buffered_body` the body streams; a bad chunk then drops the
    // upstream connection before the last chunk, so the (counting) upstream
    // never sees a whole request.
    let e = edge(json!({"gatehouse": {"max_buffered_body": 1024}}));
    let big = "a".repeat(8 * 1024);
    for bad in ["+3", "1_0", "", "-1"] {
        let body = format!("{:x}\r\n{big}\r\n{bad}\r\nabc\r\n0\r\n\r\n", big.len());
        let out = exchange(e.gw.port(), &chunked_post(&body), WITHIN);
        assert_eq!(out.status(), Some(400), "{bad:?}: {}", out.text());
        assert!(out.closed, "{bad:?}: connection left open");
        assert_eq!(
            e.up.hits(),
            0,
            "{bad:?}: a whole request reached the upstream"
        );
    }
    // The same body, well formed, arrives whole.
    let body = format!("{:x}\r\n{big}\r\n3\r\nabc\r\n0\r\n\r\n", big.len());
    let out = exchange(e.gw.port(), &chunked_post(&body), WITHIN);
    assert_eq!(out.status(), Some(200), "{}", out.text());
    assert_eq!(e.up.last_request().unwrap().body.len(), big.len() + 3);
}

#[test]
fn every_hostile_case_leaves_threads_and_fds_at_baseline() {
    // Statuses are the other tests' business; this one is about resources.
    // A short body timeout bounds any case the gateway waits on.
    let e = edge(json!({"gatehouse": {"body_timeout_secs": 1}}));
    let all: Vec<Case> = [
        content_length_cases(),
        transfer_encoding_cases(),
        unknown_coding_cases(),
        field_syntax_cases(),
        host_cases(),
        request_line_cases(),
        version_cases(),
        chunk_cases(),
    ]
    .into_iter()
    .flatten()
    .collect();
    // Each case twice, on connections held open together, so a leak
    // per connection shows as many fds.
    let port = e.gw.port();
    let twice: Vec<&Case> = all.iter().chain(all.iter()).collect();
    let held: Vec<_> = twice
        .iter()
        .map(|c| {
            let mut s = connect(port);
            let _ = s.write_all(&c.bytes);
            s
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(6);
    for (mut s, c) in held.into_iter().zip(twice) {
        let left = deadline.saturating_duration_since(Instant::now());
        let out = read_to_close(&mut s, left);
        assert!(out.closed, "case {:?}: connection left open", c.name);
    }
    assert_eq!(e.up.hits(), 0, "a hostile request reached the upstream");
    assert_eq!(e.gw.get("/hello", &[]).status, 200);
    assert_back_to_baseline(&e.gw, e.base, "after every hostile case twice");
}

/// With WebSockets off (and for any `Upgrade` but `websocket`), an
/// upgrade request is plain HTTP: its `Upgrade` never reaches the upstream.
#[test]
fn connection_upgrade_is_not_tunnelled() {
    let e = edge(json!({"http_server_options": {"enable_websockets": false}}));
    upgrade_stays_http(&e, "websocket");
    let e = edge(json!({}));
    upgrade_stays_http(&e, "h2c");
}

/// With WebSockets on, a handshake goes upstream with its `Upgrade`; an
/// upstream that answers anything but 101 leaves the connection HTTP.
#[test]
fn a_handshake_the_upstream_refuses_stays_http() {
    let e = edge(json!({}));
    let mut s = connect(e.gw.port());
    s.write_all(&get_with(
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    ))
    .unwrap();
    let mut buf = Vec::new();
    let r = read_one(&mut s, &mut buf, WITHIN).expect("a response");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        e.up.last_request().unwrap().header("upgrade"),
        Some("websocket")
    );
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s, &mut buf, WITHIN).expect("a second response");
    assert_eq!(r.status, 200);
}

fn upgrade_stays_http(e: &Edge, protocol: &str) {
    let mut s = connect(e.gw.port());
    s.write_all(&get_with(&format!(
        "Connection: Upgrade\r\nUpgrade: {protocol}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )))
    .unwrap();
    let mut buf = Vec::new();
    let r = read_one(&mut s, &mut buf, WITHIN).expect("a response");
    assert_ne!(r.status, 101, "the gateway switched protocols");
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = e.up.last_request().expect("upstream got the request");
    assert_eq!(
        saw.header("upgrade"),
        None,
        "Upgrade forwarded: {:?}",
        saw.headers
    );
    for v in saw.header_all("connection") {
        assert!(
            !v.to_ascii_lowercase().contains("upgrade"),
            "Connection: {v} forwarded"
        );
    }
    // Still plain HTTP on the same connection.
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s, &mut buf, WITHIN).expect("a second response");
    assert_eq!(r.status, 200);
}

// ---- item 4: forwarding safety ----

fn one_api(def: Value) -> Gateway {
    Gateway::start(json!({}), &[("api", def)])
}

#[test]
fn connection_naming_host_does_not_remove_host() {
    let up = Upstream::start();
    let mut def = keyless_api("open", "/open/", &up.url("/"));
    def["proxy"]["preserve_host_header"] = json!(true);
    let gw = one_api(def);
    let r = gw.get(
        "/open/x",
        &[("Host", "client.example"), ("Connection", "Host")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header_all("host"), ["client.example"]);
}

#[test]
fn connection_naming_content_length_does_not_remove_it() {
    let up = Upstream::start();
    let gw = one_api(keyless_api("open", "/open/", &up.url("/")));
    let r = request(
        gw.port(),
        "POST",
        "/open/x",
        &[("Connection", "Content-Length")],
        Some(b"hello"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.body, b"hello");
    assert_eq!(saw.header("content-length"), Some("5"));
}

#[test]
fn connection_naming_transfer_encoding_does_not_break_a_chunked_body() {
    let up = Upstream::start();
    let gw = one_api(keyless_api("open", "/open/", &up.url("/")));
    let out = exchange(
        gw.port(),
        &post_with(
            "Transfer-Encoding: chunked\r\nConnection: Transfer-Encoding, close\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
        ),
        WITHIN,
    );
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.body, b"hello");
}

#[test]
fn connection_naming_authorization_does_not_hide_the_key() {
    let up = Upstream::start();
    let gw = one_api(api_def("keyed", "/keyed/", &up.url("/")));
    let key = gw.create_key(session_for(&["keyed"]));
    let r = gw.get(
        "/keyed/x",
        &[("Authorization", &key), ("Connection", "Authorization")],
    );
    assert_eq!(r.status, 200, "the key must still reach auth: {}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header("authorization"), Some(key.as_str()));
}

#[test]
fn connection_naming_a_custom_auth_header_does_not_hide_the_key() {
    let up = Upstream::start();
    let mut def = api_def("keyed", "/keyed/", &up.url("/"));
    def["auth"]["auth_header_name"] = json!("X-Api-Key");
    let gw = one_api(def);
    let key = gw.create_key(session_for(&["keyed"]));
    let r = gw.get(
        "/keyed/x",
        &[("X-Api-Key", &key), ("Connection", "x-api-key")],
    );
    assert_eq!(r.status, 200, "the key must still reach auth: {}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header("x-api-key"), Some(key.as_str()));
}

#[test]
fn connection_naming_x_forwarded_for_does_not_remove_it() {
    let up = Upstream::start();
    let gw = one_api(keyless_api("open", "/open/", &up.url("/")));
    let r = gw.get(
        "/open/x",
        &[
            ("X-Forwarded-For", "10.0.0.1"),
            ("Connection", "X-Forwarded-For"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header("x-forwarded-for"), Some("10.0.0.1, 127.0.0.1"));
}

#[test]
fn header_named_in_connection_is_removed() {
    let up = Upstream::start();
    let gw = one_api(keyless_api("open", "/open/", &up.url("/")));
    let r = gw.get(
        "/open/x",
        &[
            ("Connection", "close, X-Secret"),
            ("X-Secret", "s"),
            ("X-Kept", "k"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header("x-secret"), None, "{:?}", saw.headers);
    assert_eq!(saw.header("x-kept"), Some("k"));
}

#[test]
fn header_named_in_a_second_connection_field_is_removed() {
    let up = Upstream::start();
    let gw = one_api(keyless_api("open", "/open/", &up.url("/")));
    let out = exchange(
        gw.port(),
        &get_with("Connection: keep-alive\r\nConnection: X-Secret, close\r\nX-Secret: s\r\n"),
        WITHIN,
    );
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let saw = up.last_request().unwrap();
    assert_eq!(saw.header("x-secret"), None, "{:?}", saw.headers);
}

#[test]
fn chunked_client_body_is_reframed_towards_the_upstream() {
    let up = Scripted::start(|c| {
        while c.read_request().is_some() {
            c.respond("ok");
        }
    });
    let gw = Gateway::start(
        json!({}),
        &[("raw", keyless_api("raw", "/raw/", &up.url("/")))],
    );
    let out = exchange(
        gw.port(),
        &format!(
            "POST /raw/x HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            "3;ext=evil\r\nabc\r\n0002\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
        )
        .into_bytes(),
        WITHIN,
    );
    assert_eq!(out.status(), Some(200), "{}", out.text());
    let reqs = up.requests();
    assert_eq!(reqs.len(), 1, "one request upstream");
    let saw = &reqs[0];
    assert_eq!(saw.body, b"abcde", "the body arrives whole");
    let raw = String::from_utf8_lossy(&saw.raw);
    for client_only in ["ext=evil", "0002\r\n", "X-Trailer"] {
        assert!(
            !raw.contains(client_only),
            "client framing {client_only:?} passed through: {raw:?}"
        );
    }
    let te = saw.header("transfer-encoding");
    let cl = saw.header("content-length");
    assert!(
        te.is_some() != cl.is_some(),
        "exactly one framing field upstream: {raw:?}"
    );
    if let Some(te) = te {
        assert_eq!(te, "chunked");
    }
}

#[test]
fn content_length_client_body_is_sent_with_our_own_framing() {
    let up = Scripted::start(|c| {
        while c.read_request().is_some() {
            c.respond("ok");
        }
    });
    let gw = Gateway::start(
        json!({}),
        &[("raw", keyless_api("raw", "/raw/", &up.url("/")))],
    );
    let r = request(
        gw.port(),
        "POST",
        "/raw/x",
        &[("Content-Length", "0005")],
        Some(b"hello"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let saw = &up.requests()[0];
    assert_eq!(saw.body, b"hello");
    assert_eq!(saw.header("content-length").as_deref(), Some("5"));
    assert_eq!(saw.header("transfer-encoding"), None);
}

/// Tyk bug #155: a keyless `/` API must never serve a path of a keyed API
/// with a longer listen path, whichever loads first.
fn root_does_not_shadow_keyed(root_file: &str, secure_file: &str) {
    let open = Upstream::start();
    let secure = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            (root_file, keyless_api("everything", "/", &open.url("/"))),
            (secure_file, api_def("vault", "/secure/", &secure.url("/"))),
        ],
    );
    let r = gw.get("/secure/x", &[]);
    assert_proxy_error(&r, 401, "Authorization field missing");
    assert_eq!(open.hits(), 0, "the `/` API served /secure/x");
    assert_eq!(secure.hits(), 0);
    let key = gw.create_key(session_for(&["vault"]));
    assert_eq!(gw.get_with_key("/secure/x", &key).status, 200);
    assert_eq!(secure.hits(), 1);
    assert_eq!(gw.get("/elsewhere", &[]).status, 200);
    assert_eq!(open.hits(), 1);
}

#[test]
fn regression_tyk_155_root_api_loaded_first_does_not_shadow_keyed_api() {
    root_does_not_shadow_keyed("a-root", "b-secure");
}

#[test]
fn regression_tyk_155_root_api_loaded_last_does_not_shadow_keyed_api() {
    root_does_not_shadow_keyed("b-root", "a-secure");
}
