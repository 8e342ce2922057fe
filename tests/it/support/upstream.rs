//! Mock upstreams on 127.0.0.1:0, std only, one thread per connection.
//! `Upstream::start()` echoes each request as JSON
//! (`{"method","path","query","headers":{lowercase name: value},"body","body_len"}`),
//! counts hits and keeps connections alive. `with_handler` answers with a
//! closure; `closing()` and `silent()` are faulty upstreams.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct UpReq {
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    pub path: String,
    pub query: String,
    pub version: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl UpReq {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The echo JSON for this request.
    pub fn echo(&self) -> Value {
        let mut headers = Map::new();
        for (n, v) in &self.headers {
            let key = n.to_ascii_lowercase();
            let joined = match headers.get(&key).and_then(Value::as_str) {
                Some(prev) => format!("{prev}, {v}"),
                None => v.clone(),
            };
            headers.insert(key, Value::from(joined));
        }
        json!({
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
            "body_len": self.body.len(),
        })
    }
}

/// What a handler answers.
#[derive(Clone, Debug)]
pub struct UpResp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked encoding instead of Content-Length.
    pub chunked: bool,
}

impl UpResp {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> UpResp {
        UpResp {
            status,
            headers: Vec::new(),
            body: body.into(),
            chunked: false,
        }
    }

    pub fn json(status: u16, v: &Value) -> UpResp {
        UpResp::new(status, serde_json::to_vec(v).unwrap())
            .header("Content-Type", "application/json")
    }

    pub fn header(mut self, name: &str, value: &str) -> UpResp {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn chunked(mut self) -> UpResp {
        self.chunked = true;
        self
    }
}

pub type Handler = Arc<dyn Fn(&UpReq) -> UpResp + Send + Sync>;

enum Mode {
    Serve(Handler),
    Close,
    Silent,
}

struct Shared {
    hits: AtomicUsize,
    connections: AtomicUsize,
    requests: Mutex<Vec<UpReq>>,
    stop: AtomicBool,
    held: Mutex<Vec<TcpStream>>,
}

pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Upstream {
    /// The JSON echo upstream.
    pub fn start() -> Upstream {
        Upstream::with_handler(|r: &UpReq| UpResp::json(200, &r.echo()))
    }

    /// An upstream answering every request with `f`.
    pub fn with_handler(f: impl Fn(&UpReq) -> UpResp + Send + Sync + 'static) -> Upstream {
        Upstream::spawn(Mode::Serve(Arc::new(f)))
    }

    /// Accepts each connection and closes it at once.
    pub fn closing() -> Upstream {
        Upstream::spawn(Mode::Close)
    }

    /// Accepts each connection and never answers (held until drop).
    pub fn silent() -> Upstream {
        Upstream::spawn(Mode::Silent)
    }

    fn spawn(mode: Mode) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            hits: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                sh.connections.fetch_add(1, Ordering::SeqCst);
                match &mode {
                    Mode::Close => {
                        sh.hits.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    Mode::Silent => {
                        sh.hits.fetch_add(1, Ordering::SeqCst);
                        sh.held.lock().unwrap().push(stream);
                    }
                    Mode::Serve(h) => {
                        let h = h.clone();
                        let sh = sh.clone();
                        thread::spawn(move || serve_conn(stream, h, sh));
                    }
                }
            }
        });
        Upstream { addr, shared }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// Requests received (for `closing`/`silent`: connections accepted).
    pub fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<UpReq> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn last_request(&self) -> Option<UpReq> {
        self.shared.requests.lock().unwrap().last().cloned()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for s in self.shared.held.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve_conn(stream: TcpStream, handler: Handler, sh: Arc<Shared>) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream.set_nodelay(true).ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(req) = read_request(&mut reader) else {
            return;
        };
        sh.hits.fetch_add(1, Ordering::SeqCst);
        let close = req
            .header_all("connection")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("close"))
            || req.version == "HTTP/1.0";
        let resp = handler(&req);
        let head_req = req.method == "HEAD";
        sh.requests.lock().unwrap().push(req);
        if write_response(&mut writer, &resp, head_req, close).is_err() || close {
            let _ = writer.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    let n = r
        .by_ref()
        .take(64 * 1024)
        .read_until(b'\n', &mut line)
        .ok()?;
    if n == 0 || !line.ends_with(b"\n") {
        return None;
    }
    let text = String::from_utf8_lossy(&line);
    Some(text.trim_end_matches(['\r', '\n']).to_string())
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<UpReq> {
    let mut first = read_line(r)?;
    // Tolerate empty lines between requests (RFC 9112 §2.2).
    while first.is_empty() {
        first = read_line(r)?;
    }
    let mut parts = first.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let version = parts.next().unwrap_or("HTTP/1.1").to_string();
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':')?;
        headers.push((n.to_string(), v.trim().to_string()));
        if headers.len() > 500 {
            return None;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let mut req = UpReq {
        method,
        target,
        path,
        query,
        version,
        headers,
        body: Vec::new(),
    };
    let chunked = req
        .header_all("transfer-encoding")
        .iter()
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let line = read_line(r)?;
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            r.read_exact(&mut req.body[start..]).ok()?;
            if !read_line(r)?.is_empty() {
                return None;
            }
        }
    } else if let Some(cl) = req.header("content-length") {
        let n: usize = cl.trim().parse().ok()?;
        req.body = vec![0; n];
        r.read_exact(&mut req.body).ok()?;
    }
    Some(req)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

fn write_response(
    w: &mut TcpStream,
    resp: &UpResp,
    head_req: bool,
    close: bool,
) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status)).into_bytes();
    for (n, v) in &resp.headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if resp.chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        out.extend_from_slice(format!("Content-Length: {}\r\n", resp.body.len()).as_bytes());
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    w.write_all(&out)?;
    if head_req || resp.status == 204 || resp.status == 304 {
        return w.flush();
    }
    if resp.chunked {
        for piece in resp.body.chunks(64 * 1024) {
            w.write_all(format!("{:x}\r\n", piece.len()).as_bytes())?;
            w.write_all(piece)?;
            w.write_all(b"\r\n")?;
        }
        w.write_all(b"0\r\n\r\n")?;
    } else {
        w.write_all(&resp.body)?;
    }
    w.flush()
}
