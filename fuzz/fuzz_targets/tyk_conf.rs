//! tyk.conf parsing and validation, JSON or TOML as `Config::load` picks by
//! the file name. The first input byte chooses: even = `tyk.conf` (JSON),
//! odd = `tyk.toml` (TOML); the rest is the file's text.
//!
//! Properties:
//! - neither `config::parse` nor `RawConfig::validate` panics;
//! - a config that validates gives a server that can take a request: the
//!   head limits it yields parse a minimal request without panicking or
//!   allocating absurdly (`parse_request` sizes its header table by
//!   `max_headers`).
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use gatehouse::config;
use gatehouse::http::codec::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&choice, text)) = data.split_first() else {
        return;
    };
    let path = if choice % 2 == 0 {
        Path::new("/etc/gatehouse/tyk.conf")
    } else {
        Path::new("/etc/gatehouse/tyk.toml")
    };
    // `Config::load` refuses non-UTF-8 files; lossy decoding keeps the
    // fuzzer's byte-level mutations useful instead of discarding them.
    let text = String::from_utf8_lossy(text);
    let Ok((raw, _unknown_fields)) = config::parse(path, &text) else {
        return;
    };
    let Ok(cfg) = raw.validate(path) else {
        return;
    };
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 40000));
    let _ = parse_request(
        b"GET /hello HTTP/1.1\r\nHost: gatehouse\r\n\r\n",
        &cfg.server.limits,
        peer,
    );
});
