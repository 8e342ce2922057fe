//! Request-head parser (and the upstream response-head parser, which shares
//! its line scanner), fed hostile bytes the way `server::serve_conn` does.
//!
//! Properties, each under the default limits and under tight ones (so the
//! 414/431 paths are reachable within libFuzzer's `-max_len`):
//! - no panic, no allocation beyond the limits;
//! - liveness: when `head_ready` says a head can be answered, `parse_request`
//!   answers (`Ok(Some)` or `Err`), never `Ok(None)`: otherwise the worker
//!   hands the connection back and the waiting room re-dispatches it forever;
//! - a parsed head used between 1 and `buf.len()` bytes;
//! - framing is never ambiguous (the smuggling rules of RFC 9112 §6):
//!   chunked means no Content-Length, a length means exactly one
//!   Content-Length and no Transfer-Encoding, a request never reads until
//!   close, and HTTP/1.1 carries exactly one Host.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use gatehouse::http::codec::{head_ready, leading_blank, parse_request, parse_response};
use gatehouse::http::{Framing, Limits, Version};
use libfuzzer_sys::fuzz_target;

/// Limits small enough that a fuzz input can cross every one of them.
fn tight() -> Limits {
    Limits {
        max_request_line: 64,
        max_header_line: 48,
        max_head: 256,
        max_headers: 4,
        max_chunk_ext: 8,
    }
}

fn check_requests(data: &[u8], limits: &Limits) {
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
    let mut buf = data;
    // Pipelined heads, as serve_conn walks them (bodies are not skipped:
    // whatever follows a head is simply parsed as the next head).
    for _ in 0..8 {
        buf = &buf[leading_blank(buf)..];
        let ready = head_ready(buf, limits);
        match parse_request(buf, limits, peer) {
            Ok(None) => {
                assert!(
                    !ready,
                    "head_ready said yes but parse_request wants more bytes: the connection would spin"
                );
                return;
            }
            Err(e) => {
                assert!(matches!(e.status(), 400 | 414 | 431 | 501 | 505));
                return;
            }
            Ok(Some((head, used))) => {
                assert!(
                    used > 0 && used <= buf.len(),
                    "used {used} of {}",
                    buf.len()
                );
                let req = &head.request;
                let lengths = req.headers.get_all("content-length").count();
                let codings = req.headers.get_all("transfer-encoding").count();
                match req.framing {
                    Framing::Chunked => assert_eq!(lengths, 0, "chunked with Content-Length"),
                    Framing::Length(_) => {
                        assert_eq!(lengths, 1, "length framing from {lengths} Content-Length");
                        assert_eq!(codings, 0, "length framing with Transfer-Encoding");
                    }
                    Framing::None => assert_eq!(codings, 0, "Transfer-Encoding ignored"),
                    Framing::UntilClose => panic!("a request body read until close"),
                }
                if req.version == Version::Http11 {
                    assert_eq!(req.headers.get_all("host").count(), 1, "Host count");
                }
                assert!(
                    req.path.starts_with('/') || req.path == "*",
                    "path {:?}",
                    req.path
                );
                buf = &buf[used..];
            }
        }
    }
}

fn check_response(data: &[u8], limits: &Limits, head_request: bool) {
    if let Ok(Some((head, used))) = parse_response(data, limits, head_request) {
        assert!(used > 0 && used <= data.len());
        // Upstreams may repeat an identical Content-Length (RFC 9110 §8.6).
        let lengths: Vec<&[u8]> = head.headers.get_all("content-length").collect();
        match head.framing {
            Framing::Chunked => assert!(lengths.is_empty(), "chunked response with Content-Length"),
            Framing::Length(_) => {
                assert!(!lengths.is_empty(), "length framing without Content-Length");
                assert!(
                    lengths.iter().all(|l| *l == lengths[0]),
                    "conflicting Content-Length"
                );
            }
            Framing::None | Framing::UntilClose => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for limits in [Limits::default(), tight()] {
        check_requests(data, &limits);
        check_response(data, &limits, false);
        check_response(data, &limits, true);
    }
});
