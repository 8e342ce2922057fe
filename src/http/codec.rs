//! HTTP/1.1 message heads, both directions, strictly per RFC 9112: parsing
//! request heads (downstream) and response heads (upstream) with `httparse`,
//! the framing decision for the body, and encoding heads we send. Bodies and
//! buffering live in `body`; nothing outside `http/` parses HTTP.

use std::fmt;
use std::mem::MaybeUninit;
use std::net::SocketAddr;

use super::message::{Framing, Headers, Request, Version, reason, split_target};

/// Size limits on a head. Each is a setting (`gatehouse.limits` in tyk.conf).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, bytes (414 past it).
    pub max_request_line: usize,
    /// Longest header line, bytes (431 past it).
    pub max_header_line: usize,
    /// Largest whole head, bytes (431 past it).
    pub max_head: usize,
    /// Most header fields (431 past it).
    pub max_headers: usize,
    /// Longest chunk extension, bytes (400 past it).
    pub max_chunk_ext: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_line: 8 * 1024,
            max_header_line: 8 * 1024,
            max_head: 64 * 1024,
            max_headers: 100,
            max_chunk_ext: 4 * 1024,
        }
    }
}

/// Why a head was refused. Each maps to one status; the connection closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// The request line is longer than allowed (414).
    UriTooLong,
    /// A header line, the whole head or the field count is over its limit (431).
    HeadersTooLarge,
    /// The head breaks the grammar or the framing rules (400).
    Malformed(&'static str),
    /// A well-formed request line with a version other than 1.0 or 1.1 (505).
    Version,
    /// A transfer coding we do not implement (501).
    UnknownCoding,
}

impl HeadError {
    /// The status a client gets for this error.
    pub fn status(&self) -> u16 {
        match self {
            HeadError::UriTooLong => 414,
            HeadError::HeadersTooLarge => 431,
            HeadError::Malformed(_) => 400,
            HeadError::Version => 505,
            HeadError::UnknownCoding => 501,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeadError::UriTooLong => write!(f, "request line too long"),
            HeadError::HeadersTooLarge => write!(f, "header section too large"),
            HeadError::Malformed(why) => write!(f, "malformed head: {why}"),
            HeadError::Version => write!(f, "unsupported HTTP version"),
            HeadError::UnknownCoding => write!(f, "unknown transfer coding"),
        }
    }
}

/// A parsed request head and what it says about the connection.
#[derive(Debug)]
pub struct RequestHead {
    pub request: Request,
    /// The client wants the connection kept open after the response.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// A parsed upstream response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    pub version: Version,
    pub headers: Headers,
    pub framing: Framing,
    /// The upstream connection may be reused after the body.
    pub keep_alive: bool,
}

/// Length of leading empty lines (RFC 9112 §2.2 lets a server skip them).
pub fn leading_blank(buf: &[u8]) -> usize {
    let mut i = 0;
    while buf[i..].starts_with(b"\r\n") {
        i += 2;
    }
    i
}

/// Index just past the blank line ending the head, if the head is complete.
/// Bare-LF endings count here so that `parse_*` can refuse them.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr(b'\n', &buf[from..]) {
        let at = from + i;
        match buf.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if buf.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => from = at + 1,
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// True when `buf` holds enough to answer: a whole head, or proof that the
/// head is over a limit. The waiting room hands the connection to a worker then.
pub fn head_ready(buf: &[u8], limits: &Limits) -> bool {
    let buf = &buf[leading_blank(buf)..];
    if head_end(buf).is_some() || buf.len() >= limits.max_head {
        return true;
    }
    let line_limit = limits.max_request_line.max(limits.max_header_line);
    let last_line = buf.rsplit(|&b| b == b'\n').next().unwrap_or(buf);
    last_line.len() > line_limit
}

/// Checks the raw head bytes: only CRLF line ends, no control bytes, no
/// obs-fold, every line within its limit. One pass: line ends are found
/// with memchr, and each line's bytes are checked in a branch-free fold
/// the compiler vectorises (a head is a few short lines of plain bytes).
fn scan_lines(head: &[u8], limits: &Limits, request: bool) -> Result<(), HeadError> {
    const BAD: HeadError = HeadError::Malformed("bare CR, bare LF or control byte");
    // Visible ASCII, obs-text and tab: anything else is a control byte.
    let plain = |bytes: &[u8]| {
        bytes.iter().fold(true, |all, &b| {
            all & ((b >= 0x20 && b != 0x7f) | (b == b'\t'))
        })
    };
    // A line's length error (the first line is a request's request line;
    // a response's status line has no limit of its own).
    let over = |len: usize, first: bool| match (first, request) {
        (true, true) => (len > limits.max_request_line).then_some(HeadError::UriTooLong),
        (true, false) => None,
        _ => (len > limits.max_header_line).then_some(HeadError::HeadersTooLarge),
    };
    // A control byte anywhere wins over a long line, whatever their order.
    let mut too_long = None;
    let (mut start, mut first) = (0, true);
    for nl in memchr::memchr_iter(b'\n', head) {
        // The line with its CR; a line end without one is a bare LF.
        let Some((&b'\r', text)) = head[start..nl].split_last() else {
            return Err(BAD);
        };
        if !plain(text) {
            return Err(BAD);
        }
        too_long = too_long.or_else(|| over(nl - start, first));
        if matches!(head.get(nl + 1), Some(b' ' | b'\t')) {
            too_long = too_long.or(Some(HeadError::Malformed("obs-fold line")));
        }
        start = nl + 1;
        first = false;
    }
    // What follows the last line end (a head cut at the size limit): a CR
    // there has no LF after it.
    if !plain(&head[start..]) {
        return Err(BAD);
    }
    too_long = too_long.or_else(|| over(head.len() - start, first));
    too_long.map_or(Ok(()), Err)
}

/// One pass over `buf`'s lines: where the head ends (just past its blank
/// line, as `head_end` finds it), and whether every line of it keeps the
/// rules httparse does not enforce: it ends in CRLF (httparse also takes
/// a bare LF), it is within its limit, it is no obs-fold. The bytes inside
/// lines are httparse's to check: its byte classes refuse exactly what
/// `scan_lines` calls control bytes and bare CRs
/// (`httparse_refuses_what_the_line_scan_refuses`), so a head is not read
/// byte by byte twice. Not kept: `scan_lines` names the fault.
fn head_lines(buf: &[u8], limits: &Limits, request: bool) -> (Option<usize>, bool) {
    // A response's status line has no limit of its own.
    let mut limit = if request {
        limits.max_request_line
    } else {
        usize::MAX
    };
    let (mut start, mut kept) = (0, true);
    for nl in memchr::memchr_iter(b'\n', buf) {
        let line = &buf[start..nl];
        let crlf = line.last() == Some(&b'\r');
        if start > 0 && (line.is_empty() || line == b"\r") {
            return (Some(nl + 1), kept && crlf);
        }
        kept &= crlf && line.len() <= limit && !matches!(buf.get(nl + 1), Some(b' ' | b'\t'));
        (start, limit) = (nl + 1, limits.max_header_line);
    }
    (None, kept)
}

/// Bytes a head may take, or the error for a buffer that outgrew them.
fn complete_head(buf: &[u8], limits: &Limits, request: bool) -> Result<Option<usize>, HeadError> {
    let (end, kept) = head_lines(buf, limits, request);
    match end {
        Some(end) if end > limits.max_head => Err(HeadError::HeadersTooLarge),
        Some(end) => {
            if !kept {
                scan_lines(&buf[..end], limits, request)?;
            }
            Ok(Some(end))
        }
        None if buf.len() >= limits.max_head => {
            scan_lines(buf, limits, request)?;
            Err(HeadError::HeadersTooLarge)
        }
        None => {
            let first_line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
            if request && !buf.contains(&b'\n') && first_line.len() > limits.max_request_line {
                return Err(HeadError::UriTooLong);
            }
            let last = buf.rsplit(|&b| b == b'\n').next().unwrap_or(buf);
            if buf.contains(&b'\n') && last.len() > limits.max_header_line {
                return Err(HeadError::HeadersTooLarge);
            }
            Ok(None)
        }
    }
}

/// Parses a request head at the start of `buf` (after any blank lines the
/// caller skipped). `Ok(None)`: not complete yet. On success also returns the
/// number of bytes the head took.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    peer: SocketAddr,
) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let Some(end) = complete_head(buf, limits, true)? else {
        return Ok(None);
    };
    let mut slots = HeaderSlots::new(limits.max_headers);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(&buf[..end], slots.get()) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(httparse::Error::Version) => return Err(version_error(&buf[..end])),
        Err(_) => return Err(HeadError::Malformed("request line or header syntax")),
    }
    let version = match req.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HeadError::Version),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = origin_form(target, &method)?;
    let headers = collect_headers(req.headers);
    let fields = FieldSummary::read(&headers)?;
    if fields.hosts > 1 || (fields.hosts == 0 && version == Version::Http11) {
        return Err(HeadError::Malformed("exactly one Host is required"));
    }
    if fields.chunked && version == Version::Http10 {
        return Err(HeadError::Malformed(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let framing = fields.framing(Framing::None);
    let keep_alive = match version {
        Version::Http11 => !fields.close,
        Version::Http10 => fields.keep_alive && !fields.close,
    };
    let request = Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        version,
        headers,
        framing,
        peer,
    };
    let expect_continue = fields.expect_continue && version == Version::Http11;
    let head = RequestHead {
        request,
        keep_alive,
        expect_continue,
    };
    Ok(Some((head, end)))
}

/// Room for httparse's header slices: on the stack for the usual limits,
/// on the heap only for a configured limit above `STACK_SLOTS`. The size
/// difference is the point: this lives on the stack for one parse. Left
/// uninitialised: httparse writes a slot before it hands it back, and
/// filling 4 KiB of slots per head would cost more than the parse.
#[allow(clippy::large_enum_variant)]
enum HeaderSlots<'a> {
    Stack([MaybeUninit<httparse::Header<'a>>; STACK_SLOTS], usize),
    Heap(Vec<MaybeUninit<httparse::Header<'a>>>),
}

const STACK_SLOTS: usize = 128;

impl<'a> HeaderSlots<'a> {
    fn new(n: usize) -> HeaderSlots<'a> {
        if n <= STACK_SLOTS {
            HeaderSlots::Stack([const { MaybeUninit::uninit() }; STACK_SLOTS], n)
        } else {
            HeaderSlots::Heap(vec![MaybeUninit::uninit(); n])
        }
    }

    fn get(&mut self) -> &mut [MaybeUninit<httparse::Header<'a>>] {
        match self {
            HeaderSlots::Stack(slots, n) => &mut slots[..*n],
            HeaderSlots::Heap(v) => v,
        }
    }
}

/// 505 for `METHOD SP target SP HTTP/d.d`, 400 for anything else.
fn version_error(head: &[u8]) -> HeadError {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let well_formed = parts.len() == 3
        && parts[2].len() == 8
        && parts[2].starts_with(b"HTTP/")
        && parts[2][5].is_ascii_digit()
        && parts[2][6] == b'.'
        && parts[2][7].is_ascii_digit();
    if well_formed {
        HeadError::Version
    } else {
        HeadError::Malformed("request line")
    }
}

/// The path and query of a request target in origin, absolute or asterisk form.
fn origin_form<'a>(target: &'a str, method: &str) -> Result<(&'a str, &'a str), HeadError> {
    if target.starts_with('/') {
        return Ok(split_target(target));
    }
    if target == "*" && method == "OPTIONS" {
        return Ok(("*", ""));
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return Err(HeadError::Malformed("request target"));
    };
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => Ok(split_target(&rest[i..])),
        _ => Err(HeadError::Malformed("absolute-form target without a path")),
    }
}

fn collect_headers(raw: &[httparse::Header<'_>]) -> Headers {
    // Room for the few fields the gateway adds (the X-RateLimit-* trio on
    // a response) without growing the list.
    let mut headers = Headers::with_capacity(raw.len() + 4);
    for h in raw {
        headers.append(h.name, h.value);
    }
    headers
}

/// What the framing-related fields of a head say, checked once.
#[derive(Default)]
struct FieldSummary {
    hosts: usize,
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

/// Transfer codings that exist but that we do not decode.
const KNOWN_CODINGS: &[&str] = &[
    "gzip",
    "x-gzip",
    "deflate",
    "compress",
    "x-compress",
    "identity",
];

impl FieldSummary {
    fn read(headers: &Headers) -> Result<FieldSummary, HeadError> {
        let mut s = FieldSummary::default();
        let mut lengths = 0;
        let mut codings: Vec<String> = Vec::new();
        let mut encoded = false;
        for (name, value) in headers.iter() {
            if name.eq_ignore_ascii_case("host") {
                s.hosts += 1;
                if !valid_host(value) {
                    return Err(HeadError::Malformed("Host is not uri-host[:port]"));
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                s.length = Some(parse_length(value)?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                codings.extend(list_tokens(value));
            } else if name.eq_ignore_ascii_case("connection") {
                for token in list_elements(value) {
                    s.close |= token.eq_ignore_ascii_case(b"close");
                    s.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                s.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        if lengths > 1 {
            return Err(HeadError::Malformed("more than one Content-Length"));
        }
        if encoded {
            s.chunked = check_codings(&codings)?;
            if s.length.is_some() {
                return Err(HeadError::Malformed(
                    "Content-Length with Transfer-Encoding",
                ));
            }
        }
        Ok(s)
    }

    fn framing(&self, absent: Framing) -> Framing {
        match (self.chunked, self.length) {
            (true, _) => Framing::Chunked,
            (false, Some(0)) if absent == Framing::None => Framing::None,
            (false, Some(n)) => Framing::Length(n),
            (false, None) => absent,
        }
    }
}

/// A Host value is `uri-host [":" port]` (RFC 9112 §3.2, RFC 3986 §3.2.2);
/// empty is allowed.
fn valid_host(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        let ok = std::str::from_utf8(literal)
            .is_ok_and(|t| t.parse::<std::net::Ipv6Addr>().is_ok())
            || (matches!(literal.first(), Some(b'v' | b'V'))
                && literal.len() > 1
                && literal[1..]
                    .iter()
                    .all(|&b| is_reg_name_byte(b) || b == b':'));
        if !ok {
            return false;
        }
        (&value[..0], &value[close + 1..])
    } else {
        let colon = value.iter().position(|&b| b == b':').unwrap_or(value.len());
        (&value[..colon], &value[colon..])
    };
    let port_ok = port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    port_ok && reg_name(host)
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn reg_name(host: &[u8]) -> bool {
    let mut i = 0;
    while i < host.len() {
        if host[i] == b'%' {
            let hex = |j: usize| host.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_reg_name_byte(host[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Unreserved and sub-delims (RFC 3986 §2.2–2.3).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// Only exactly `chunked` is accepted; unknown codings are 501.
fn check_codings(codings: &[String]) -> Result<bool, HeadError> {
    if codings.iter().any(String::is_empty) {
        return Err(HeadError::Malformed("empty transfer coding"));
    }
    let unknown = codings
        .iter()
        .any(|c| c != "chunked" && !KNOWN_CODINGS.contains(&c.as_str()));
    if unknown {
        return Err(HeadError::UnknownCoding);
    }
    if codings.len() != 1 || codings[0] != "chunked" {
        return Err(HeadError::Malformed("Transfer-Encoding other than chunked"));
    }
    Ok(true)
}

/// A Content-Length value: 1 to 19 ASCII digits, nothing else.
fn parse_length(value: &[u8]) -> Result<u64, HeadError> {
    let ok = !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
    if !ok {
        return Err(HeadError::Malformed("Content-Length is not plain digits"));
    }
    let text = std::str::from_utf8(value).map_err(|_| HeadError::Malformed("Content-Length"))?;
    text.parse()
        .map_err(|_| HeadError::Malformed("Content-Length out of range"))
}

/// Comma-separated tokens of a list header, lowercased; empty elements kept
/// as empty strings so that `chunked,,` is refused.
fn list_tokens(value: &[u8]) -> Vec<String> {
    list_elements(value)
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect()
}

/// The elements of a list header as they are, without the spaces and tabs
/// around them (a parsed value holds no other whitespace: httparse refused
/// control bytes). No copy: `Connection` is read on every message.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Parses an upstream response head. 1xx heads are skipped by the caller
/// (`status < 200`); `head_request` marks a response to HEAD (no body).
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    head_request: bool,
) -> Result<Option<(ResponseHead, usize)>, HeadError> {
    let Some(end) = complete_head(buf, limits, false)? else {
        return Ok(None);
    };
    let mut slots = HeaderSlots::new(limits.max_headers);
    let mut res = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut res,
        &buf[..end],
        slots.get(),
    );
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(HeadError::Malformed("incomplete head")),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::HeadersTooLarge),
        Err(_) => return Err(HeadError::Malformed("status line or header syntax")),
    }
    let version = if res.version == Some(0) {
        Version::Http10
    } else {
        Version::Http11
    };
    let status = res.code.unwrap_or_default();
    let headers = collect_headers(res.headers);
    let fields = response_fields(&headers)?;
    let no_body = head_request || status < 200 || status == 204 || status == 304;
    let framing = if no_body {
        Framing::None
    } else {
        fields.framing(Framing::UntilClose)
    };
    let keep_alive = framing != Framing::UntilClose
        && match version {
            Version::Http11 => !fields.close,
            Version::Http10 => fields.keep_alive && !fields.close,
        };
    let head = ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    };
    Ok(Some((head, end)))
}

/// Response framing fields. Repeated identical Content-Length values are
/// tolerated from upstreams (RFC 9110 §8.6); differing ones are not.
fn response_fields(headers: &Headers) -> Result<FieldSummary, HeadError> {
    let mut lengths = headers.get_all("content-length");
    let (Some(first), Some(_)) = (lengths.next(), lengths.next()) else {
        // At most one: read as they are (no copy of the head).
        return FieldSummary::read(headers);
    };
    if headers.get_all("content-length").any(|l| l != first) {
        return Err(HeadError::Malformed("conflicting Content-Length"));
    }
    let mut single = headers.clone();
    single.set("Content-Length", first.to_vec());
    FieldSummary::read(&single)
}

/// Encodes a response head. `framing` decides the length headers; any
/// framing or `Connection` fields in `headers` are dropped in favour of ours.
pub fn encode_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &Headers,
    framing: Framing,
    close: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    encode_fields(out, headers, framing);
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Encodes a request head for an upstream.
pub fn encode_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    headers: &Headers,
    framing: Framing,
) {
    let mut head = RequestHeadWriter::start(out, method, target);
    for (name, value) in headers.iter() {
        head.field(name, value);
    }
    head.finish(framing);
}

/// Writes a request head field by field, straight into `out`: for a caller
/// that would otherwise build a `Headers` only to encode it. The framing
/// rules are `encode_request_head`'s.
pub struct RequestHeadWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> RequestHeadWriter<'a> {
    pub fn start(out: &'a mut Vec<u8>, method: &str, target: &str) -> RequestHeadWriter<'a> {
        out.extend_from_slice(method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        RequestHeadWriter { out }
    }

    /// One field; framing fields are dropped (`finish` writes the framing),
    /// except `Connection: Upgrade`.
    pub fn field(&mut self, name: &str, value: &[u8]) {
        encode_field(self.out, name, value);
    }

    /// A field whose value is written by `value` (no allocation); a
    /// framing field is dropped.
    pub fn field_with(&mut self, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
        if !is_framing_field(name) {
            put_field(self.out, name, value);
        }
    }

    pub fn finish(self, framing: Framing) {
        encode_framing(self.out, framing);
        self.out.extend_from_slice(b"\r\n");
    }
}

fn encode_fields(out: &mut Vec<u8>, headers: &Headers, framing: Framing) {
    for (name, value) in headers.iter() {
        encode_field(out, name, value);
    }
    encode_framing(out, framing);
}

fn encode_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    // `Connection: Upgrade` is the one connection option a handler may
    // send (a WebSocket handshake and its 101); hop-by-hop removal has
    // already dropped any the peer sent.
    let framing = is_framing_field(name);
    let upgrade = framing
        && name.eq_ignore_ascii_case("connection")
        && value.eq_ignore_ascii_case(b"upgrade");
    if !framing || upgrade {
        put_field(out, name, |out| out.extend_from_slice(value));
    }
}

/// `name: value` and its line end.
fn put_field(out: &mut Vec<u8>, name: &str, value: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    value(out);
    out.extend_from_slice(b"\r\n");
}

fn encode_framing(out: &mut Vec<u8>, framing: Framing) {
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
}

fn is_framing_field(name: &str) -> bool {
    // By length first: every field of every head we write passes here.
    match name.len() {
        10 => name.eq_ignore_ascii_case("connection"),
        14 => name.eq_ignore_ascii_case("content-length"),
        17 => name.eq_ignore_ascii_case("transfer-encoding"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// The byte-at-a-time scan `scan_lines` replaced, kept as its oracle.
    fn scan_lines_bytewise(head: &[u8], limits: &Limits, request: bool) -> Result<(), HeadError> {
        let plain = |b: u8| b >= 0x20 && b != 0x7f;
        let over = |len: usize, first: bool| match (first, request) {
            (true, true) => (len > limits.max_request_line).then_some(HeadError::UriTooLong),
            (true, false) => None,
            _ => (len > limits.max_header_line).then_some(HeadError::HeadersTooLarge),
        };
        let mut too_long = None;
        let (mut line_start, mut first) = (0, true);
        for i in 0..head.len() {
            let bad = match head[i] {
                b'\n' => {
                    too_long = too_long.or_else(|| over(i - line_start, first));
                    if matches!(head.get(i + 1), Some(b' ' | b'\t')) {
                        too_long = too_long.or(Some(HeadError::Malformed("obs-fold line")));
                    }
                    line_start = i + 1;
                    first = false;
                    i == 0 || head[i - 1] != b'\r'
                }
                b'\r' => head.get(i + 1) != Some(&b'\n'),
                b'\t' => false,
                b => !plain(b),
            };
            if bad {
                return Err(HeadError::Malformed("bare CR, bare LF or control byte"));
            }
        }
        too_long = too_long.or_else(|| over(head.len() - line_start, first));
        too_long.map_or(Ok(()), Err)
    }

    /// A fixed-seed xorshift: the same sequence every run.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    #[test]
    fn line_scan_agrees_with_the_bytewise_scan() {
        let limits = Limits {
            max_request_line: 12,
            max_header_line: 9,
            ..Limits::default()
        };
        let alphabet = [b'a', b' ', b'\t', b'\r', b'\n', 0x01, 0x7f, 0x80, b':'];
        // A fixed-seed xorshift: the same 200,000 heads every run.
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let len = next() % 40;
            let mut head = Vec::new();
            for _ in 0..len {
                match next() % 4 {
                    // Mostly CRLF line ends and text.
                    0 if !next().is_multiple_of(5) => head.extend_from_slice(b"\r\n"),
                    0 => head.push(b'\n'),
                    1 | 2 => head.push(b'a'),
                    _ => head.push(alphabet[(next() % alphabet.len() as u64) as usize]),
                }
            }
            for request in [true, false] {
                assert_eq!(
                    format!("{:?}", scan_lines(&head, &limits, request)),
                    format!("{:?}", scan_lines_bytewise(&head, &limits, request)),
                    "{:?} request={request}",
                    String::from_utf8_lossy(&head)
                );
                // The one-pass line check finds the same end, and keeps
                // only heads whose lines the full scan passes too (it may
                // keep one with a control byte: httparse refuses that).
                let (end, kept) = head_lines(&head, &limits, request);
                assert_eq!(end, head_end(&head), "{:?}", String::from_utf8_lossy(&head));
                if let (Some(end), true) = (end, kept) {
                    // Control bytes, and CRs that end no line, made
                    // plain: those are httparse's to refuse.
                    let head = &head[..end];
                    let lines_only: Vec<u8> = (0..end)
                        .map(|i| match (head[i], head.get(i + 1)) {
                            (b'\n', _) | (b'\r', Some(b'\n')) | (b'\t', _) => head[i],
                            (b, _) if b >= 0x20 && b != 0x7f => b,
                            _ => b'a',
                        })
                        .collect();
                    assert!(
                        scan_lines_bytewise(&lines_only, &limits, request).is_ok(),
                        "{:?} request={request}",
                        String::from_utf8_lossy(head)
                    );
                }
            }
        }
    }

    /// The fast path's premise: a whole head that passes
    /// `head_lines` and that httparse parses is clean by the
    /// byte-at-a-time rules, so nothing with a control byte or a bare CR
    /// is ever taken. Heads are well-formed ones with one to three bytes
    /// replaced by, or with inserted, control bytes, CR, LF, DEL, tab,
    /// space or obs-text, in every part (request and status lines, names,
    /// values, line ends).
    #[test]
    fn httparse_refuses_what_the_line_scan_refuses() {
        let limits = Limits::default();
        let nasty = [
            b'\r', b'\n', 0, 0x01, 0x0b, 0x1b, 0x7f, b'\t', b' ', 0x80, 0xff,
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let (mut refused_by_httparse, mut taken) = (0, 0);
        for i in 0..100_000 {
            let request = i % 2 == 0;
            let mut head: Vec<u8> = match request {
                true => b"GET /a/b?c=d HTTP/1.1\r\nHost: gw.test\r\n".to_vec(),
                false => b"HTTP/1.1 200 OK fine\r\nServer: up\r\n".to_vec(),
            };
            head.extend_from_slice(b"X-Name: some value\r\nAccept: */*\r\n\r\n");
            for _ in 0..1 + next() % 3 {
                let at = (next() % head.len() as u64) as usize;
                let byte = nasty[(next() % nasty.len() as u64) as usize];
                match next() % 2 {
                    0 => head[at] = byte,
                    _ => head.insert(at, byte),
                }
            }
            let Some(end) = head_end(&head) else { continue };
            let head = &head[..end];
            if head_lines(head, &limits, request) != (Some(end), true) {
                continue;
            }
            let mut slots = [httparse::EMPTY_HEADER; 16];
            let parsed = match request {
                true => httparse::Request::new(&mut slots).parse(head),
                false => httparse::Response::new(&mut slots).parse(head),
            };
            let clean = scan_lines_bytewise(head, &limits, request).is_ok();
            match parsed {
                Ok(httparse::Status::Complete(_)) => {
                    assert!(clean, "taken: {:?}", String::from_utf8_lossy(head));
                    taken += 1;
                }
                _ => refused_by_httparse += usize::from(!clean),
            }
        }
        // The premise was put to the test: many heads reached httparse with
        // a byte the line scan refuses, and many clean ones were taken.
        assert!(refused_by_httparse > 10_000, "{refused_by_httparse}");
        assert!(taken > 1_000, "{taken}");
    }

    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    fn parse(raw: &str) -> Result<Option<(RequestHead, usize)>, HeadError> {
        parse_request(raw.as_bytes(), &Limits::default(), peer())
    }

    fn status_of(raw: &str) -> u16 {
        match parse(raw) {
            Err(e) => e.status(),
            Ok(Some(_)) => 200,
            Ok(None) => 0,
        }
    }

    #[test]
    fn simple_get_parses() {
        let (head, used) = parse("GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\nrest")
            .unwrap()
            .unwrap();
        assert_eq!(used, "GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n".len());
        assert_eq!(head.request.path, "/a/b");
        assert_eq!(head.request.query, "x=1");
        assert_eq!(head.request.framing, Framing::None);
        assert!(head.keep_alive);
    }

    #[test]
    fn partial_head_waits() {
        assert!(parse("GET / HTTP/1.1\r\nHost: h\r\n").unwrap().is_none());
    }

    #[test]
    fn smuggling_variants_are_400() {
        let cases = [
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x3\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 12345678901234567890\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\nHost: h\n\n",
            "GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nBad Name: v\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1 extra\r\nHost: h\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for case in cases {
            assert_eq!(status_of(case), 400, "{case:?}");
        }
    }

    #[test]
    fn host_must_be_uri_host_and_port() {
        let with_host = |h: &str| status_of(&format!("GET / HTTP/1.1\r\nHost: {h}\r\n\r\n"));
        for bad in [
            "a b", "a/b", "a@b", "a:b", "[::1", "[zz]:80", "a%2", "a?b", "a#b", "h:80:80",
        ] {
            assert_eq!(with_host(bad), 400, "{bad:?}");
        }
        for good in [
            "a",
            "a.b:8080",
            "127.0.0.1:1",
            "[::1]:80",
            "[v1.x]",
            "xn--d-1a.b",
            "a%41",
            "h:",
        ] {
            assert!(
                parse(&format!("GET / HTTP/1.1\r\nHost: {good}\r\n\r\n")).is_ok(),
                "{good:?}"
            );
        }
        assert!(parse("GET / HTTP/1.1\r\nHost:\r\n\r\n").is_ok());
    }

    #[test]
    fn unknown_coding_is_501() {
        let raw = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: foo, chunked\r\n\r\n";
        assert_eq!(status_of(raw), 501);
    }

    #[test]
    fn other_versions_are_505() {
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of("GET / FOO/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn http10_needs_no_host_and_closes() {
        let (head, _) = parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let (head, _) = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(head.keep_alive);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(9000));
        assert_eq!(status_of(&long_target), 414);
        let long_header = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(status_of(&long_header), 431);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            status_of(&format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n")),
            431
        );
        let partial_long = format!("GET /{}", "a".repeat(9000));
        assert_eq!(status_of(&partial_long), 414);
    }

    #[test]
    fn chunked_and_length_framing() {
        let (h, _) = parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.framing, Framing::Chunked);
        let (h, _) = parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.request.framing, Framing::Length(12));
    }

    #[test]
    fn absolute_form_keeps_path() {
        let (h, _) = parse("GET http://x.test/p?q=1 HTTP/1.1\r\nHost: x.test\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            (h.request.path.as_str(), h.request.query.as_str()),
            ("/p", "q=1")
        );
    }

    #[test]
    fn head_ready_detects_complete_and_oversized() {
        let l = Limits::default();
        assert!(head_ready(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", &l));
        assert!(!head_ready(b"GET / HTTP/1.1\r\nHost: h\r\n", &l));
        assert!(head_ready("a".repeat(9000).as_bytes(), &l));
    }

    #[test]
    fn response_framing() {
        let l = Limits::default();
        let parse =
            |raw: &str, head: bool| parse_response(raw.as_bytes(), &l, head).unwrap().unwrap().0;
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false).framing,
            Framing::Length(5)
        );
        assert_eq!(
            parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true).framing,
            Framing::None
        );
        let close = parse("HTTP/1.1 200 OK\r\n\r\n", false);
        assert_eq!(
            (close.framing, close.keep_alive),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            parse("HTTP/1.1 204 No Content\r\n\r\n", false).framing,
            Framing::None
        );
        let bad = parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            &l,
            false,
        );
        assert!(bad.is_err());
        // Repeated identical values are one length (RFC 9110 §8.6).
        let same = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            false,
        );
        assert_eq!(same.framing, Framing::Length(5));
    }

    #[test]
    fn encoded_head_replaces_framing_fields() {
        let mut h = Headers::new();
        h.append("Content-Length", "99");
        h.append("X-A", "b");
        let mut out = Vec::new();
        encode_response_head(&mut out, 200, &h, Framing::Length(2), true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }
}
