//! The HTTP/1.1 client to upstreams: a keep-alive connection pool per
//! upstream address, a timeout per phase (connect, response head, body
//! reads), one retry on a fresh connection when a pooled one turns out dead
//! for a request that is safe to replay. Framing goes through `http`; what
//! to send and how to answer the client is `proxy`'s. `tls` makes
//! `https://` connections.

pub mod tls;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::codec::{self, ResponseHead};
use crate::http::{
    BodyReader, BodySource, ChunkedWriter, Framing, Limits, Stream, Wire, copy_body, copy_sides,
};

use tls::{ClientTls, TlsClients, TlsTo};

/// Idle pooled connections per upstream address.
const MAX_IDLE_PER_HOST: usize = 256;
/// A pooled connection idle longer than this is dropped, not reused.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// Why an upstream exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// The host name did not resolve.
    Lookup(io::Error),
    /// Refused, reset, or broken before a response head arrived.
    Broken(io::Error),
    /// No connection or no response head in time.
    Timeout,
    /// The response head broke HTTP/1.1 rules.
    BadResponse(String),
    /// Reading the client's body failed (client gone or bad framing).
    ClientBody(io::Error),
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Lookup(e) => write!(f, "lookup failed: {e}"),
            UpstreamError::Broken(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Timeout => write!(f, "timed out"),
            UpstreamError::BadResponse(why) => write!(f, "bad response: {why}"),
            UpstreamError::ClientBody(e) => write!(f, "client body: {e}"),
        }
    }
}

struct Idle {
    wire: Wire<Stream>,
    since: Instant,
}

pub struct Upstream {
    pool: Mutex<HashMap<String, Vec<Idle>>>,
    connect_timeout: Duration,
    response_timeout: Duration,
    limits: Limits,
    tls: TlsClients,
}

/// What to send: a request head already encoded, and its body.
pub struct Outgoing<'a> {
    pub address: &'a str,
    pub head: &'a [u8],
    pub framing: Framing,
    pub body: &'a mut dyn Read,
    /// Safe to send twice (idempotent method, no body).
    pub replayable: bool,
    /// A HEAD request: the response has no body.
    pub head_request: bool,
    /// The time the upstream has to answer, when not the gateway's.
    pub timeout: Option<Duration>,
    /// An upgrade request: a `101` answer is the response, not an interim.
    pub upgrade: bool,
    /// `https://`: how to speak TLS to it.
    pub tls: Option<&'a TlsTo>,
}

impl Outgoing<'_> {
    /// The pool a connection for this request comes from: one per address,
    /// and per TLS configuration for `https://`.
    fn pool_key(&self) -> Cow<'_, str> {
        match self.tls {
            None => Cow::Borrowed(self.address),
            Some(t) => Cow::Owned(format!(
                "tls {:p} {:?} {}",
                Arc::as_ptr(&t.config),
                t.name,
                self.address
            )),
        }
    }
}

impl Upstream {
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        limits: Limits,
        tls: ClientTls,
    ) -> Upstream {
        Upstream {
            pool: Mutex::new(HashMap::new()),
            connect_timeout,
            response_timeout,
            limits,
            tls: TlsClients::new(tls),
        }
    }

    /// How to reach `host` over TLS under an API's `proxy.transport`.
    pub fn tls_to(&self, api: &ClientTls, host: &str) -> Result<TlsTo, String> {
        self.tls.to(api, host)
    }

    /// (connect timeout, response-head timeout).
    pub fn timeouts(&self) -> (Duration, Duration) {
        (self.connect_timeout, self.response_timeout)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Sends a request and reads the response head. The body comes back as
    /// a source that returns the connection to the pool once fully read.
    pub fn send(
        self: &Arc<Self>,
        mut out: Outgoing<'_>,
    ) -> Result<(ResponseHead, UpstreamBody), UpstreamError> {
        let key = out.pool_key().into_owned();
        if let Some(wire) = self.take_idle(&key) {
            match self.exchange(wire, &mut out) {
                Ok(done) => return Ok(done),
                Err((UpstreamError::Broken(e), false)) if out.replayable => {
                    log::debug!(
                        "upstream {}: pooled connection dead ({e}), retrying once",
                        out.address
                    );
                }
                Err((e, _)) => return Err(e),
            }
        }
        let wire = self.connect(out.address, out.tls)?;
        self.exchange(wire, &mut out).map_err(|(e, _)| e)
    }

    /// A pooled connection to `address` that is still usable, if any.
    pub fn take_idle(&self, address: &str) -> Option<Wire<Stream>> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.get_mut(address)?;
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < MAX_IDLE_AGE && is_quiet(conn.wire.stream.tcp()) {
                return Some(conn.wire);
            }
        }
        None
    }

    fn put_idle(&self, address: &str, wire: Wire<Stream>) {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let idle = pool.entry(address.to_string()).or_default();
        if idle.len() < MAX_IDLE_PER_HOST {
            idle.push(Idle {
                wire,
                since: Instant::now(),
            });
        }
    }

    fn connect(&self, address: &str, tls: Option<&TlsTo>) -> Result<Wire<Stream>, UpstreamError> {
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(UpstreamError::Lookup)?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).ok();
                    stream.set_read_timeout(Some(self.response_timeout)).ok();
                    stream.set_write_timeout(Some(self.response_timeout)).ok();
                    return Ok(Wire::new(Self::secure(stream, tls)?));
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(UpstreamError::Timeout);
                }
                Err(e) => last = e,
            }
        }
        Err(UpstreamError::Broken(last))
    }

    /// `stream`, after a TLS handshake when `tls` says so: a certificate
    /// the upstream cannot prove fails here, before any request is sent.
    fn secure(stream: TcpStream, tls: Option<&TlsTo>) -> Result<Stream, UpstreamError> {
        let Some(t) = tls else {
            return Ok(Stream::Plain(stream));
        };
        let session = rustls::ClientConnection::new(t.config.clone(), t.name.clone())
            .map_err(|e| UpstreamError::Broken(io::Error::other(e)))?;
        let mut stream = Stream::tls(session, stream);
        stream.handshake().map_err(|e| {
            if is_timeout(&e) {
                UpstreamError::Timeout
            } else {
                UpstreamError::Broken(io::Error::new(e.kind(), format!("TLS handshake: {e}")))
            }
        })?;
        Ok(stream)
    }

    /// One request/response on `wire`. The flag in the error says whether
    /// any response byte arrived (then a retry is never safe).
    fn exchange(
        self: &Arc<Self>,
        mut wire: Wire<Stream>,
        out: &mut Outgoing<'_>,
    ) -> Result<(ResponseHead, UpstreamBody), (UpstreamError, bool)> {
        send_request(&mut wire.stream, out.head, out.framing, out.body)?;
        let head = self.read_head(&mut wire, out.head_request, out.timeout, out.upgrade)?;
        let body = UpstreamBody::new(wire, &head, &out.pool_key(), self.clone());
        Ok((head, body))
    }

    fn read_head(
        &self,
        wire: &mut Wire<Stream>,
        head_request: bool,
        timeout: Option<Duration>,
        upgrade: bool,
    ) -> Result<ResponseHead, (UpstreamError, bool)> {
        // `proxy_default_timeout` (or the endpoint's hard timeout) bounds
        // the whole head, not each read: a head dripped byte by byte still
        // times out on time.
        let deadline = Instant::now() + timeout.unwrap_or(self.response_timeout);
        let mut shortened = false;
        if timeout.is_some() {
            wire.stream.set_read_timeout(timeout).ok();
            shortened = true;
        }
        let head = self.read_head_until(wire, head_request, deadline, &mut shortened, upgrade);
        if shortened {
            wire.stream
                .set_read_timeout(Some(self.response_timeout))
                .ok();
        }
        head
    }

    fn read_head_until(
        &self,
        wire: &mut Wire<Stream>,
        head_request: bool,
        deadline: Instant,
        shortened: &mut bool,
        upgrade: bool,
    ) -> Result<ResponseHead, (UpstreamError, bool)> {
        loop {
            match codec::parse_response(wire.buffered(), &self.limits, head_request) {
                Ok(Some((head, used))) => {
                    wire.consume(used);
                    if (100..200).contains(&head.status) && !(upgrade && head.status == 101) {
                        continue;
                    }
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err((UpstreamError::BadResponse(e.to_string()), true)),
            }
            let started = !wire.buffered().is_empty();
            if started {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err((UpstreamError::Timeout, true));
                }
                wire.stream.set_read_timeout(Some(left)).ok();
                *shortened = true;
            }
            match wire.fill(self.limits.max_head + 1) {
                Ok(0) => {
                    let e =
                        io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response");
                    return Err((UpstreamError::Broken(e), started));
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => return Err((UpstreamError::Timeout, true)),
                Err(e) => return Err((UpstreamError::Broken(e), started)),
            }
        }
    }
}

impl Upstream {
    /// A GET of `url` for the gateway's own use (a JWKS document), through
    /// the same pool and timeouts as proxied requests: the body of a 200
    /// answer, at most `max` bytes.
    pub fn fetch(self: &Arc<Self>, url: &str, max: u64) -> Result<Vec<u8>, String> {
        let target = crate::apidef::Target::parse(url)?;
        let mut headers = crate::http::Headers::new();
        headers.set("Host", target.authority.as_str());
        headers.set("User-Agent", concat!("Tyk/v", env!("CARGO_PKG_VERSION")));
        headers.set("Accept", "application/json");
        let mut path = if target.path.is_empty() {
            "/".to_string()
        } else {
            target.path.clone()
        };
        if !target.query.is_empty() {
            path = format!("{path}?{}", target.query);
        }
        let mut head = Vec::with_capacity(256);
        codec::encode_request_head(&mut head, "GET", &path, &headers, Framing::None);
        let tls = match target.tls {
            true => Some(self.tls_to(&ClientTls::default(), &target.host)?),
            false => None,
        };
        let out = Outgoing {
            address: &target.address,
            head: &head,
            framing: Framing::None,
            body: &mut io::empty(),
            replayable: true,
            head_request: false,
            timeout: None,
            upgrade: false,
            tls: tls.as_ref(),
        };
        let (res, mut body) = self.send(out).map_err(|e| e.to_string())?;
        if res.status != 200 {
            return Err(format!("answered {}", res.status));
        }
        let mut sink = Capped {
            buf: Vec::new(),
            max,
        };
        body.copy_to(&mut sink).map_err(|e| format!("body: {e}"))?;
        Ok(sink.buf)
    }
}

/// A writer that refuses more than `max` bytes.
struct Capped {
    buf: Vec<u8>,
    max: u64,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if (self.buf.len() + data.len()) as u64 > self.max {
            return Err(io::Error::other(format!("larger than {} bytes", self.max)));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An idle connection is reusable only if the upstream has neither closed
/// it nor sent bytes nobody asked for (one non-blocking peek).
fn is_quiet(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
    matches!(rustix::net::recv(stream, &mut byte[..], flags), Err(e) if e == rustix::io::Errno::AGAIN)
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes the head and streams the body with the framing we chose.
fn send_request(
    stream: &mut Stream,
    head: &[u8],
    framing: Framing,
    body: &mut dyn Read,
) -> Result<(), (UpstreamError, bool)> {
    let broken = |e: io::Error| (UpstreamError::Broken(e), false);
    let sent = match framing {
        Framing::None | Framing::Length(0) => stream.write_all(head).map_err(broken),
        Framing::Length(_) | Framing::UntilClose => {
            stream.write_all(head).map_err(broken)?;
            copy_client_body(body, stream)
        }
        Framing::Chunked => {
            stream.write_all(head).map_err(broken)?;
            let mut chunked = ChunkedWriter {
                inner: &mut *stream,
            };
            copy_client_body(body, &mut chunked)?;
            chunked.finish().map(drop).map_err(broken)
        }
    };
    sent?;
    // TLS: records the session still holds go out now.
    stream.flush().map_err(broken)
}

/// Copies the client's body upstream, telling apart which side failed.
fn copy_client_body(body: &mut dyn Read, to: &mut dyn Write) -> Result<(), (UpstreamError, bool)> {
    copy_sides(body, to).map_err(|side| match side {
        Ok(read) => (UpstreamError::ClientBody(read), true),
        Err(write) => (UpstreamError::Broken(write), true),
    })
}

/// An upstream response body, streamed to the client by the server.
pub struct UpstreamBody {
    wire: Option<Wire<Stream>>,
    framing: Framing,
    keep_alive: bool,
    address: String,
    upstream: Arc<Upstream>,
}

impl UpstreamBody {
    /// The body of the response `head` on `wire` (a connection from the
    /// pool `address`), returned there once fully read.
    pub fn new(
        wire: Wire<Stream>,
        head: &ResponseHead,
        address: &str,
        upstream: Arc<Upstream>,
    ) -> UpstreamBody {
        UpstreamBody {
            wire: Some(wire),
            framing: head.framing,
            keep_alive: head.keep_alive,
            address: address.to_string(),
            upstream,
        }
    }

    /// The connection itself, for an upgraded exchange (never pooled).
    pub fn into_wire(mut self) -> Option<Wire<Stream>> {
        self.wire.take()
    }

    /// The body length, when the upstream declared one.
    pub fn declared_len(&self) -> Option<u64> {
        match self.framing {
            Framing::None => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose => None,
        }
    }
}

impl BodySource for UpstreamBody {
    fn copy_to(&mut self, out: &mut dyn Write) -> io::Result<u64> {
        let Some(mut wire) = self.wire.take() else {
            return Ok(0);
        };
        let limits = self.upstream.limits.clone();
        let mut reader = BodyReader::new(&mut wire, self.framing, &limits);
        let copied = copy_body(&mut reader, out)?;
        let reusable = reader.is_done() && self.keep_alive && wire.buffered().is_empty();
        if reusable {
            self.upstream.put_idle(&self.address, wire);
        }
        Ok(copied)
    }
}
