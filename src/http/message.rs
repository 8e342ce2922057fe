//! Plain request and response values: what the rest of the gateway works on
//! once `codec` has turned bytes into a head. Nothing here reads or writes a
//! socket; bodies are either bytes in memory or a source the server streams.

use std::borrow::Cow;
use std::io::{self, Write};
use std::net::SocketAddr;

use smallvec::SmallVec;

/// HTTP version of a message; only the two HTTP/1.x versions exist here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: close by default.
    Http10,
    /// HTTP/1.1: keep-alive by default.
    Http11,
}

/// An ordered header list. Names keep the sender's spelling and compare
/// case-insensitively; values are bytes (obs-text is legal on the wire).
/// A well-known name in a usual spelling is kept as a static string, not
/// copied: every message carries several, and the copies were a quarter
/// of a proxied request's allocations. Values are inline up to 32 bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, Value)>);

/// A field value: inline when short, as most are.
pub type Value = SmallVec<[u8; 32]>;

/// A field value as a caller has it: copied (inline when short), or an
/// owned buffer moved in when long.
pub trait IntoValue {
    fn into_value(self) -> Value;
}

impl IntoValue for &[u8] {
    fn into_value(self) -> Value {
        Value::from_slice(self)
    }
}

impl<const N: usize> IntoValue for &[u8; N] {
    fn into_value(self) -> Value {
        Value::from_slice(self)
    }
}

impl IntoValue for &str {
    fn into_value(self) -> Value {
        Value::from_slice(self.as_bytes())
    }
}

impl IntoValue for &String {
    fn into_value(self) -> Value {
        Value::from_slice(self.as_bytes())
    }
}

impl IntoValue for &Vec<u8> {
    fn into_value(self) -> Value {
        Value::from_slice(self)
    }
}

impl IntoValue for Vec<u8> {
    fn into_value(self) -> Value {
        Value::from_vec(self)
    }
}

impl IntoValue for String {
    fn into_value(self) -> Value {
        Value::from_vec(self.into_bytes())
    }
}

impl IntoValue for Value {
    fn into_value(self) -> Value {
        self
    }
}

/// A field name as a caller has it: a borrowed one is copied unless it is
/// well known, an owned one is moved in.
pub trait IntoName {
    fn into_name(self) -> Cow<'static, str>;
}

impl IntoName for &str {
    fn into_name(self) -> Cow<'static, str> {
        known_name(self).map_or_else(|| Cow::Owned(self.to_string()), Cow::Borrowed)
    }
}

impl IntoName for &String {
    fn into_name(self) -> Cow<'static, str> {
        self.as_str().into_name()
    }
}

impl IntoName for String {
    fn into_name(self) -> Cow<'static, str> {
        known_name(&self).map_or(Cow::Owned(self), Cow::Borrowed)
    }
}

impl IntoName for Cow<'static, str> {
    fn into_name(self) -> Cow<'static, str> {
        self
    }
}

/// `name` as a static string when it is a well-known field name spelled
/// as clients, upstreams and the gateway itself usually spell it.
fn known_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "Host" => "Host",
        "host" => "host",
        "User-Agent" => "User-Agent",
        "user-agent" => "user-agent",
        "Accept" => "Accept",
        "accept" => "accept",
        "Accept-Encoding" => "Accept-Encoding",
        "accept-encoding" => "accept-encoding",
        "Authorization" => "Authorization",
        "authorization" => "authorization",
        "Connection" => "Connection",
        "connection" => "connection",
        "Content-Type" => "Content-Type",
        "content-type" => "content-type",
        "Content-Length" => "Content-Length",
        "content-length" => "content-length",
        "Transfer-Encoding" => "Transfer-Encoding",
        "Date" => "Date",
        "date" => "date",
        "Server" => "Server",
        "server" => "server",
        "Cache-Control" => "Cache-Control",
        "ETag" => "ETag",
        "Last-Modified" => "Last-Modified",
        "Vary" => "Vary",
        "X-Forwarded-For" => "X-Forwarded-For",
        "X-RateLimit-Limit" => "X-RateLimit-Limit",
        "X-RateLimit-Remaining" => "X-RateLimit-Remaining",
        "X-RateLimit-Reset" => "X-RateLimit-Reset",
        _ => return None,
    })
}

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }

    /// The first value of `name` as bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Appends a field, keeping any existing one of the same name.
    pub fn append(&mut self, name: impl IntoName, value: impl IntoValue) {
        self.0.push((name.into_name(), value.into_value()));
    }

    /// Replaces every field of `name` with one.
    pub fn set(&mut self, name: impl IntoName, value: impl IntoValue) {
        let name = name.into_name();
        // Usually there is none to replace: a scan is cheaper than retain.
        if self.contains(&name) {
            self.remove(&name);
        }
        self.0.push((name, value.into_value()));
    }

    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.0.retain(|(n, v)| keep(n, v));
    }

    /// Every field, owned, in order.
    pub fn into_fields(self) -> impl Iterator<Item = (Cow<'static, str>, Value)> {
        self.0.into_iter()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How a message body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the peer closes (responses only).
    UntilClose,
}

/// A parsed request head plus where it came from. The body is read
/// separately, through the reader the server hands to the handler.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path part of the request target, as sent (not decoded).
    pub path: String,
    /// The query string without `?`, as sent; empty when absent.
    pub query: String,
    pub version: Version,
    pub headers: Headers,
    pub framing: Framing,
    pub peer: SocketAddr,
}

impl Request {
    /// A request for tests and internal calls, like rouille's `fake_http`.
    pub fn fake(method: &str, target: &str, headers: &[(&str, &str)]) -> Request {
        let (path, query) = split_target(target);
        let mut h = Headers::new();
        for (n, v) in headers {
            h.append(*n, v.as_bytes());
        }
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            version: Version::Http11,
            headers: h,
            framing: Framing::None,
            peer: SocketAddr::from(([127, 0, 0, 1], 40000)),
        }
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// Splits a request target into path and query (without `?`).
pub fn split_target(target: &str) -> (&str, &str) {
    match target.split_once('?') {
        Some((p, q)) => (p, q),
        None => (target, ""),
    }
}

/// Decoded `name=value` pairs of a query string, in order (`+` is a space).
pub fn query_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// A body the server streams to the client: an upstream response, say.
pub trait BodySource: Send {
    /// Copies the whole body into `out`, which frames it. An error means the
    /// body is incomplete and the connection must close.
    fn copy_to(&mut self, out: &mut dyn Write) -> io::Result<u64>;
}

/// A response body.
pub enum Body {
    Empty,
    Bytes(Vec<u8>),
    /// Streamed; `len` is known when the source declared it.
    Stream {
        len: Option<u64>,
        source: Box<dyn BodySource>,
    },
    /// A `101 Switching Protocols` the upstream agreed to: after the head,
    /// the server relays bytes between the client and this connection.
    Upgrade(Box<Upgraded>),
}

/// The upstream side of an upgraded connection, with any bytes it sent
/// after its `101` head.
pub struct Upgraded {
    pub stream: super::Stream,
    pub buffered: Vec<u8>,
}

/// A response as handlers build it; the server adds framing headers.
pub struct Response {
    pub status: u16,
    pub headers: Headers,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
    /// What the metrics and the access log need to know of this request.
    pub tally: crate::metrics::Tally,
}

impl Response {
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Headers::new(),
            body: Body::Empty,
            close: false,
            tally: crate::metrics::Tally::default(),
        }
    }

    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        let mut r = Response::new(status);
        r.headers.set("Content-Type", content_type);
        r.body = Body::Bytes(body.into());
        r
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response::bytes(status, "text/plain; charset=utf-8", body)
    }

    pub fn with_close(mut self) -> Response {
        self.close = true;
        self
    }

    /// The body as bytes, for tests and small bodies; a stream reads as empty.
    pub fn body_bytes(&self) -> &[u8] {
        match &self.body {
            Body::Bytes(b) => b,
            _ => &[],
        }
    }
}

/// The standard reason phrase for a status we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_senders_spelling_whether_well_known_or_not() {
        let mut h = Headers::new();
        h.append("Host", "a");
        h.append("HOST", "b");
        h.append(String::from("x-Custom"), "c");
        h.append("content-type", "d");
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "HOST", "x-Custom", "content-type"]);
        assert!(matches!(h.0[0].0, Cow::Borrowed(_)));
        assert!(matches!(h.0[1].0, Cow::Owned(_)));
        assert_eq!(h.get_all("host").collect::<Vec<_>>(), [b"a", b"b"]);
        assert_eq!(h.get("X-CUSTOM"), Some("c"));
        h.set("Content-Type", "e");
        h.set(String::from("HOST"), "f");
        let fields: Vec<(&str, &[u8])> = h.iter().collect();
        assert_eq!(
            fields,
            [
                ("x-Custom", &b"c"[..]),
                ("Content-Type", b"e"),
                ("HOST", b"f")
            ]
        );
    }

    #[test]
    fn values_of_any_length_and_bytes_read_back_as_given() {
        let long = "k".repeat(33);
        let mut h = Headers::new();
        h.append("A", &b"\xff obs-text"[..]);
        h.append("B", long.clone());
        h.append("C", "");
        h.set("D", long.as_bytes().to_vec());
        assert_eq!(h.get_bytes("a"), Some(&b"\xff obs-text"[..]));
        assert_eq!(h.get("A"), None);
        assert_eq!(h.get("b"), Some(long.as_str()));
        assert_eq!(h.get("c"), Some(""));
        assert_eq!(h.get("d"), Some(long.as_str()));
        let moved: Vec<_> = h.clone().into_fields().map(|(_, v)| v.len()).collect();
        assert_eq!(moved, [10, 33, 0, 33]);
    }
}
