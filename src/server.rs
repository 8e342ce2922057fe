//! Listeners, the waiting room and the worker pool; sockets end here.
//! The waiting room (one thread, mio) accepts connections and holds every
//! connection that is idle or still sending its head; only when a whole
//! head is buffered does a connection go to a worker, so a worker never
//! waits on a slow client's head. The worker parses the head (`http`),
//! runs the listener's handler with a body reader, writes the response,
//! serves any pipelined requests, and hands the connection back.

use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::ServerConfig;
use crate::http::codec::{self, encode_response_head, head_ready, leading_blank};
use crate::http::{Body, BodyReader, ChunkedWriter, Framing, Request, Response, Version, Wire};

/// Answers requests on one listener.
pub trait Handler: Send + Sync {
    fn handle(&self, req: Request, body: &mut dyn Read) -> Response;
}

const WAKER: Token = Token(usize::MAX);
/// How often the waiting room checks timeouts and the shutdown flag.
const TICK: Duration = Duration::from_millis(100);
/// Unread request body we read and drop to keep a connection open.
const DRAIN_LIMIT: u64 = 64 * 1024;
/// Listen backlog asked of the kernel.
const BACKLOG: i32 = 4096;
/// How long shutdown waits for in-flight requests.
const GRACE: Duration = Duration::from_secs(10);

/// A bound listener and who answers on it.
pub struct Listener {
    pub socket: TcpListener,
    pub handler: Arc<dyn Handler>,
}

impl Listener {
    /// Binds `addr`; port 0 binds an ephemeral port.
    pub fn bind(addr: SocketAddr, handler: Arc<dyn Handler>) -> io::Result<Listener> {
        let raw = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        raw.set_reuse_address(true)?;
        raw.bind(&addr.into())?;
        // std's backlog is 128: a burst of connects past it waits for SYN
        // retries. The kernel caps this at somaxconn.
        raw.listen(BACKLOG)?;
        let socket: TcpListener = raw.into();
        socket.set_nonblocking(true)?;
        Ok(Listener { socket, handler })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("bound listener has an address")
    }
}

/// A client connection and what the waiting room knows of it.
struct Conn {
    wire: Wire<TcpStream>,
    peer: SocketAddr,
    listener: usize,
    /// When it last became idle (accepted, or handed back).
    idle_since: Instant,
    /// When the first byte of the current head arrived.
    head_started: Option<Instant>,
    _count: ConnCount,
}

/// Counts open connections; the count drops with the connection.
struct ConnCount(Arc<AtomicUsize>);

impl Drop for ConnCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// State shared by the waiting room and the workers.
struct Shared {
    cfg: ServerConfig,
    handlers: Vec<Arc<dyn Handler>>,
    shutdown: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    busy: AtomicUsize,
    /// Connections handed to workers and not yet picked up.
    queued: AtomicUsize,
    /// Workers waiting for a connection.
    idle: AtomicUsize,
    back: Sender<Conn>,
    waker: Waker,
}

/// Runs until `shutdown` is set, then drains in-flight requests (at most
/// 10 s) and returns.
pub fn serve(
    cfg: ServerConfig,
    listeners: Vec<Listener>,
    shutdown: Arc<AtomicBool>,
) -> io::Result<()> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let max_open = connection_cap(cfg.max_connections);
    info!(
        "server: {} workers, at most {max_open} connections",
        cfg.workers
    );
    let (back_tx, back_rx) = crossbeam_channel::unbounded();
    let shared = Arc::new(Shared {
        handlers: listeners.iter().map(|l| l.handler.clone()).collect(),
        cfg,
        shutdown,
        open: Arc::new(AtomicUsize::new(0)),
        busy: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        back: back_tx,
        waker,
    });
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Conn>();
    let workers: Vec<_> = (0..shared.cfg.workers.max(1))
        .map(|i| {
            let (shared, jobs) = (shared.clone(), job_rx.clone());
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(&shared, &jobs))
        })
        .collect::<Result<_, _>>()?;
    let mut room = WaitingRoom {
        poll,
        listeners,
        conns: HashMap::new(),
        next_token: 0,
        shared: shared.clone(),
        jobs: job_tx,
        back: back_rx,
        max_open,
        accept_paused_until: None,
    };
    room.run()?;
    drop(room);
    let deadline = Instant::now() + GRACE;
    while shared.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if shared.busy.load(Ordering::SeqCst) > 0 {
        warn!("server: shutting down with requests still in flight");
    } else {
        for w in workers {
            w.join().ok();
        }
    }
    Ok(())
}

/// The connection cap: configured, or half the fd limit (raised first).
fn connection_cap(configured: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if configured > 0 {
        return configured;
    }
    usize::try_from(limit / 2).unwrap_or(usize::MAX).max(16)
}

struct WaitingRoom {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    shared: Arc<Shared>,
    jobs: Sender<Conn>,
    back: Receiver<Conn>,
    max_open: usize,
    accept_paused_until: Option<Instant>,
}

impl WaitingRoom {
    fn run(&mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.socket.as_raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
        self.next_token = self.listeners.len();
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        while !self.shared.shutdown.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, Some(TICK))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let ready: Vec<Token> = events.iter().map(|e| e.token()).collect();
            for token in ready {
                match token {
                    WAKER => self.take_back(),
                    Token(i) if i < self.listeners.len() => self.accept(i),
                    t => self.readable(t),
                }
            }
            self.take_back();
            if self
                .accept_paused_until
                .is_some_and(|t| Instant::now() >= t)
            {
                self.accept_paused_until = None;
                (0..self.listeners.len()).for_each(|i| self.accept(i));
            }
            if last_sweep.elapsed() >= TICK {
                self.sweep();
                last_sweep = Instant::now();
            }
        }
        info!(
            "server: stopped accepting; closing {} idle connections",
            self.conns.len()
        );
        Ok(())
    }

    fn accept(&mut self, i: usize) {
        if self.accept_paused_until.is_some() {
            return;
        }
        loop {
            match self.listeners[i].socket.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, i),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE/ENFILE and friends: back off, never die.
                    warn!("server: accept failed ({e}); pausing accepts for 100 ms");
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    fn admit(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) {
        let open = self.shared.open.fetch_add(1, Ordering::SeqCst) + 1;
        let count = ConnCount(self.shared.open.clone());
        if open > self.max_open {
            debug!("server: connection cap reached; refusing {peer}");
            let _ = (&stream).write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        // Timeouts apply once the worker switches the socket to blocking.
        let cfg = &self.shared.cfg;
        let ready = stream.set_nonblocking(true).is_ok()
            && stream.set_read_timeout(Some(cfg.body_timeout)).is_ok()
            && stream.set_write_timeout(Some(cfg.write_timeout)).is_ok();
        if !ready {
            return;
        }
        stream.set_nodelay(true).ok();
        let conn = Conn {
            wire: Wire::new(stream),
            peer,
            listener,
            idle_since: Instant::now(),
            head_started: None,
            _count: count,
        };
        self.wait(conn);
    }

    /// Puts a connection in the room, or straight to a worker if its next
    /// head is already buffered.
    fn wait(&mut self, conn: Conn) {
        if head_ready(conn.wire.buffered(), &self.shared.cfg.limits) {
            self.dispatch(conn);
            return;
        }
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(self.listeners.len());
        let fd = conn.wire.stream.as_raw_fd();
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, Interest::READABLE)
            .is_ok()
        {
            self.conns.insert(token, conn);
        }
    }

    fn dispatch(&mut self, conn: Conn) {
        self.shared.busy.fetch_add(1, Ordering::SeqCst);
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(conn).is_err() {
            self.shared.busy.fetch_sub(1, Ordering::SeqCst);
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn take_back(&mut self) {
        while let Ok(mut conn) = self.back.try_recv() {
            let now = Instant::now();
            conn.idle_since = now;
            // A partial head read while lingering is a head in progress.
            conn.head_started = (!conn.wire.buffered().is_empty()).then_some(now);
            self.wait(conn);
        }
    }

    fn readable(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let cap = self.shared.cfg.limits.max_head + 1;
        let mut closed = false;
        loop {
            match conn.wire.fill(cap) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {
                    conn.head_started.get_or_insert_with(Instant::now);
                    if conn.wire.buffered().len() >= cap {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let ready = head_ready(conn.wire.buffered(), &self.shared.cfg.limits);
        // A client that half-closed after a whole head still gets its answer.
        if ready {
            let conn = self.remove(token);
            self.dispatch(conn);
        } else if closed {
            self.remove(token);
        }
    }

    fn remove(&mut self, token: Token) -> Conn {
        let conn = self.conns.remove(&token).expect("token present");
        let fd = conn.wire.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        conn
    }

    /// Closes connections whose head is too slow or that idled too long.
    fn sweep(&mut self) {
        let cfg = &self.shared.cfg;
        let now = Instant::now();
        let expired: Vec<(Token, bool)> = self
            .conns
            .iter()
            .filter_map(|(t, c)| match c.head_started {
                Some(s) if now.duration_since(s) > cfg.head_timeout => Some((*t, true)),
                None if now.duration_since(c.idle_since) > cfg.idle_timeout => Some((*t, false)),
                _ => None,
            })
            .collect();
        for (token, slow_head) in expired {
            let conn = self.remove(token);
            if slow_head {
                debug!("server: {} sent no complete head in time", conn.peer);
                let _ = (&conn.wire.stream)
                    .write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
    }
}

fn worker(shared: &Arc<Shared>, jobs: &Receiver<Conn>) {
    loop {
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let next = jobs.recv();
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(conn) = next else { return };
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        if let Some(conn) = serve_conn(shared, conn) {
            hand_back(shared, conn);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Returns a kept-alive connection to the waiting room (dropped, so
/// closed, during shutdown).
fn hand_back(shared: &Shared, conn: Conn) {
    if shared.shutdown.load(Ordering::SeqCst) || conn.wire.stream.set_nonblocking(true).is_err() {
        return;
    }
    if shared.back.send(conn).is_ok() {
        let _ = shared.waker.wake();
    }
}

/// Serves the buffered request(s) of a connection. Returns it when it may
/// be kept open.
///
/// After answering, while no other connection waits for a worker, the
/// worker lingers briefly for the client's next request on this one: a
/// busy keep-alive connection then costs a poll and a read per request
/// instead of a round trip through the waiting room. Only an empty buffer
/// lingers, so a client dripping a head never holds a worker.
fn serve_conn(shared: &Shared, mut conn: Conn) -> Option<Conn> {
    let cfg = &shared.cfg;
    conn.wire.stream.set_nonblocking(false).ok()?;
    let mut pipelined = 0;
    loop {
        let blank = leading_blank(conn.wire.buffered());
        conn.wire.consume(blank);
        if head_ready(conn.wire.buffered(), &cfg.limits) {
            if pipelined >= cfg.max_pipelined.max(1) {
                return Some(conn);
            }
            if !serve_one(shared, &mut conn) {
                return None;
            }
            pipelined += 1;
            continue;
        }
        // Others wait when more connections are queued than workers are free.
        let others_wait = shared.queued.load(Ordering::SeqCst) > shared.idle.load(Ordering::SeqCst);
        let stopping = shared.shutdown.load(Ordering::SeqCst);
        if others_wait
            || stopping
            || !conn.wire.buffered().is_empty()
            || !readable_within(&conn.wire.stream, cfg.linger)
        {
            return Some(conn);
        }
        match conn.wire.fill(cfg.limits.max_head + 1) {
            Ok(0) | Err(_) => return None,
            Ok(_) => pipelined = 0,
        }
    }
}

/// Waits up to `linger` for `stream` to become readable (one poll).
fn readable_within(stream: &TcpStream, linger: Duration) -> bool {
    if linger.is_zero() {
        return false;
    }
    let timeout = rustix::event::Timespec::try_from(linger).ok();
    let mut fds = [rustix::event::PollFd::new(
        stream,
        rustix::event::PollFlags::IN,
    )];
    matches!(rustix::event::poll(&mut fds, timeout.as_ref()), Ok(n) if n > 0)
}

/// Serves one request; false when the connection must close.
fn serve_one(shared: &Shared, conn: &mut Conn) -> bool {
    let cfg = &shared.cfg;
    let head = match codec::parse_request(conn.wire.buffered(), &cfg.limits, conn.peer) {
        Ok(Some((head, used))) => {
            conn.wire.consume(used);
            head
        }
        Ok(None) => return true,
        Err(e) => {
            debug!("server: {} bad request head: {e}", conn.peer);
            let res = Response::text(e.status(), crate::http::message::reason(e.status()));
            let _ = write_response(&conn.wire.stream, res, false, true, Version::Http11);
            return false;
        }
    };
    let version = head.request.version;
    let is_head = head.request.method == "HEAD";
    let handler = shared.handlers[conn.listener].clone();
    let mut body = BodyReader::new(&mut conn.wire, head.request.framing, &cfg.limits)
        .expect_continue(head.expect_continue);
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(head.request, &mut body)));
    let res = outcome.unwrap_or_else(|_| {
        error!("server: handler panicked; answering 500");
        Response::text(500, "Internal Server Error").with_close()
    });
    let close = !head.keep_alive
        || res.close
        || !body.may_drain(DRAIN_LIMIT)
        || cfg.close_connections
        || shared.shutdown.load(Ordering::SeqCst);
    // Answer first: an unread body is drained afterwards, so a client that
    // never sends it does not delay the response.
    match write_response(body.stream(), res, is_head, close, version) {
        Ok(complete) => complete && !close && body.drain(DRAIN_LIMIT),
        Err(e) => {
            debug!("server: writing to {} failed: {e}", conn.peer);
            false
        }
    }
}

/// Writes a response; Ok(false) when the body could not be delimited
/// (the connection must close).
fn write_response(
    stream: &TcpStream,
    res: Response,
    is_head: bool,
    close: bool,
    version: Version,
) -> io::Result<bool> {
    let mut out = BufWriter::with_capacity(16 * 1024, stream);
    let no_body = res.status < 200 || res.status == 204 || res.status == 304;
    let mut head = Vec::with_capacity(256);
    let complete = match res.body {
        Body::Empty => {
            let framing = if no_body {
                Framing::None
            } else {
                Framing::Length(0)
            };
            encode_response_head(&mut head, res.status, &res.headers, framing, close);
            out.write_all(&head)?;
            true
        }
        Body::Bytes(bytes) => {
            encode_response_head(
                &mut head,
                res.status,
                &res.headers,
                Framing::Length(bytes.len() as u64),
                close,
            );
            out.write_all(&head)?;
            if !is_head {
                out.write_all(&bytes)?;
            }
            true
        }
        Body::Stream { len, mut source } => {
            let chunked = len.is_none() && version == Version::Http11;
            let framing = match len {
                Some(n) => Framing::Length(n),
                None if chunked => Framing::Chunked,
                None => Framing::UntilClose,
            };
            encode_response_head(
                &mut head,
                res.status,
                &res.headers,
                framing,
                close || framing == Framing::UntilClose,
            );
            out.write_all(&head)?;
            if is_head || no_body {
                true
            } else if chunked {
                let mut enc = ChunkedWriter { inner: &mut out };
                source.copy_to(&mut enc)?;
                enc.finish()?;
                true
            } else {
                let copied = source.copy_to(&mut out)?;
                len.is_some_and(|n| n == copied)
            }
        }
    };
    out.flush()?;
    Ok(complete)
}
