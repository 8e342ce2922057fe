//! A tiny HTTP/1.1 client over `std::net::TcpStream`. It sends exactly the
//! bytes it is given (so later tests can send hostile ones) and parses
//! responses framed by Content-Length, chunked encoding or connection close.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a client call may take before the test gives up.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Parses one complete response from the start of `raw` (a response to
    /// a non-HEAD request; a body without framing runs to the end of `raw`).
    pub fn parse(raw: &[u8]) -> Result<Resp, String> {
        match parse_response(raw, false, true)? {
            Some((resp, _)) => Ok(resp),
            None => Err(format!(
                "incomplete response: {:?}",
                String::from_utf8_lossy(&raw[..raw.len().min(400)])
            )),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses one response at the start of `buf`.
/// `Ok(None)`: more bytes are needed. `Ok(Some((resp, used)))`: a response
/// and how many bytes it took. With `eof`, a body without framing ends at
/// the end of `buf`. `head`: the response is to a HEAD request (no body).
pub fn parse_response(buf: &[u8], head: bool, eof: bool) -> Result<Option<(Resp, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if eof && !buf.is_empty() {
            return Err(format!(
                "no end of head in {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(400)])
            ));
        }
        return Ok(None);
    };
    let head_text = std::str::from_utf8(&buf[..end]).map_err(|e| format!("head not UTF-8: {e}"))?;
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let start = end + 4;
    let rest = &buf[start..];
    if head || status < 200 || status == 204 || status == 304 {
        return Ok(Some((resp, start)));
    }
    let chunked = resp
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return match decode_chunked(rest)? {
            Some((body, used)) => {
                resp.body = body;
                Ok(Some((resp, start + used)))
            }
            None if eof => Err("chunked body cut short".into()),
            None => Ok(None),
        };
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl
            .trim()
            .parse()
            .map_err(|_| format!("bad Content-Length {cl:?}"))?;
        if rest.len() < n {
            if eof {
                return Err(format!("body cut short: {} of {n} bytes", rest.len()));
            }
            return Ok(None);
        }
        resp.body = rest[..n].to_vec();
        return Ok(Some((resp, start + n)));
    }
    if !eof {
        return Ok(None);
    }
    resp.body = rest.to_vec();
    Ok(Some((resp, buf.len())))
}

/// Decodes a chunked body; `Ok(None)` when incomplete.
pub fn decode_chunked(mut buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let Some(eol) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..eol]).map_err(|_| "chunk size not UTF-8")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size line {line:?}"))?;
        buf = &buf[eol + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(eol) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                let empty = eol == 0;
                buf = &buf[eol + 2..];
                if empty {
                    return Ok(Some((body, total - buf.len())));
                }
            }
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        buf = &buf[size + 2..];
    }
}

/// Connects to 127.0.0.1:`port` with read/write timeouts.
pub fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connect 127.0.0.1:{port}: {e}"));
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s.set_nodelay(true).ok();
    s
}

/// Reads until the peer closes, an error, or `timeout` passes; returns what
/// arrived.
pub fn read_until_close(stream: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(500))))
            .ok();
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    out
}

/// Sends `bytes` as they are and returns everything the server sends back
/// until it closes the connection (or 5 s pass).
pub fn send_raw(port: u16, bytes: &[u8]) -> Vec<u8> {
    send_raw_timeout(port, bytes, Duration::from_secs(5))
}

/// `send_raw` with a custom overall timeout.
pub fn send_raw_timeout(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = connect(port);
    // The server may answer and close before it has read everything: keep
    // whatever it sent.
    let _ = s.write_all(bytes);
    let _ = s.flush();
    read_until_close(&mut s, timeout)
}

/// Builds the bytes of a request. Adds `Host` and `Connection: close`
/// unless given, and `Content-Length` for a body unless `Content-Length`
/// or `Transfer-Encoding` is given.
pub fn build_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    if !has("host") {
        out.extend_from_slice(format!("Host: 127.0.0.1:{port}\r\n").as_bytes());
    }
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if !has("connection") {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if let Some(b) = body
        && !has("content-length")
        && !has("transfer-encoding")
    {
        out.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        out.extend_from_slice(b);
    }
    out
}

/// Sends one request on a fresh connection and parses the response.
/// Panics (with what arrived) when no valid response arrives in time.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    let bytes = build_request(port, method, path, headers, body);
    let mut s = connect(port);
    s.write_all(&bytes)
        .unwrap_or_else(|e| panic!("{method} {path}: write failed: {e}"));
    let head = method.eq_ignore_ascii_case("HEAD");
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    loop {
        // A response framed by length is complete without waiting for close.
        if let Ok(Some((resp, _))) = parse_response(&buf, head, false) {
            let _ = s.shutdown(Shutdown::Both);
            return resp;
        }
        if Instant::now() > deadline {
            panic!(
                "{method} {path}: no complete response within {CLIENT_TIMEOUT:?}; got {:?}",
                String::from_utf8_lossy(&buf[..buf.len().min(400)])
            );
        }
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if buf.is_empty() => panic!("{method} {path}: read failed: {e}"),
            Err(_) => break,
        }
    }
    match parse_response(&buf, head, true) {
        Ok(Some((resp, _))) => resp,
        Ok(None) => panic!("{method} {path}: connection closed with no response"),
        Err(e) => panic!("{method} {path}: bad response: {e}"),
    }
}

/// A keep-alive connection for sending several requests in a row.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        Conn {
            stream: connect(port),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Reads the next response; None if the server closed first.
    pub fn read_response(&mut self, head: bool) -> Option<Resp> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut eof = false;
        loop {
            match parse_response(&self.buf, head, eof) {
                Ok(Some((resp, used))) => {
                    self.buf.drain(..used);
                    return Some(resp);
                }
                Ok(None) if eof => return None,
                Ok(None) => {}
                Err(e) => panic!("bad response: {e}"),
            }
            if Instant::now() > deadline {
                panic!("no response within {CLIENT_TIMEOUT:?}");
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => eof = true,
            }
        }
    }
}
