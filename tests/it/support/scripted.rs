//! Scripted upstreams for fault tests: each accepted connection runs a
//! closure that reads requests and writes whatever bytes it likes (cut
//! bodies, lying lengths, resets). Counts connections accepted and closed
//! and records every request read, raw and decoded.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::http::decode_chunked;

/// A request as a scripted upstream read it.
#[derive(Clone, Debug)]
pub struct RawReq {
    /// Which connection it came on (0-based, accept order).
    pub conn: usize,
    pub method: String,
    pub target: String,
    /// The head as sent, request line and fields, without the blank line.
    pub head: String,
    /// The bytes of the request exactly as they arrived (head and body).
    pub raw: Vec<u8>,
    /// The body with its framing removed.
    pub body: Vec<u8>,
}

impl RawReq {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

struct Shared {
    connections: AtomicUsize,
    closed: AtomicUsize,
    requests: Mutex<Vec<RawReq>>,
    stop: AtomicBool,
}

/// One accepted connection, handed to the script.
pub struct ScriptConn {
    pub stream: TcpStream,
    /// 0-based accept order.
    pub index: usize,
    buf: Vec<u8>,
    shared: Arc<Shared>,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl ScriptConn {
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
    }

    /// Reads one whole request (Content-Length or chunked body) and
    /// records it; None when the peer closed or stalled (10 s) first.
    pub fn read_request(&mut self) -> Option<RawReq> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let mut req = RawReq {
            conn: self.index,
            method: head.split(' ').next().unwrap_or_default().to_string(),
            target: head.split(' ').nth(1).unwrap_or_default().to_string(),
            head,
            raw: Vec::new(),
            body: Vec::new(),
        };
        let start = end + 4;
        let chunked = req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let used = if chunked {
            loop {
                match decode_chunked(&self.buf[start..]) {
                    Ok(Some((body, used))) => {
                        req.body = body;
                        break start + used;
                    }
                    Ok(None) => {
                        if !self.fill() {
                            return None;
                        }
                    }
                    Err(_) => return None,
                }
            }
        } else {
            let n: usize = req
                .header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            while self.buf.len() < start + n {
                if !self.fill() {
                    return None;
                }
            }
            req.body = self.buf[start..start + n].to_vec();
            start + n
        };
        req.raw = self.buf.drain(..used).collect();
        self.shared.requests.lock().unwrap().push(req.clone());
        Some(req)
    }

    /// Writes bytes as they are (errors ignored: the peer may be gone).
    pub fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// Writes a 200 response with a Content-Length body.
    pub fn respond(&mut self, body: &str) {
        self.write(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
}

pub type Script = Arc<dyn Fn(&mut ScriptConn) + Send + Sync>;

/// A listener on 127.0.0.1:0 running `script` on each connection in its
/// own thread; the connection closes when the script returns.
pub struct Scripted {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Scripted {
    pub fn start(script: impl Fn(&mut ScriptConn) + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind scripted upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            connections: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let script: Script = Arc::new(script);
        let sh = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let index = sh.connections.fetch_add(1, Ordering::SeqCst);
                stream.set_read_timeout(Some(Duration::from_secs(10))).ok();
                stream.set_write_timeout(Some(Duration::from_secs(10))).ok();
                stream.set_nodelay(true).ok();
                let (script, sh) = (script.clone(), sh.clone());
                thread::spawn(move || {
                    let mut conn = ScriptConn {
                        stream,
                        index,
                        buf: Vec::new(),
                        shared: sh.clone(),
                    };
                    script(&mut conn);
                    drop(conn);
                    sh.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Scripted { addr, shared }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Connections whose script returned (so we closed them).
    pub fn closed(&self) -> usize {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Every whole request read so far, in order.
    pub fn requests(&self) -> Vec<RawReq> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}
