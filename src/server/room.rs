//! The waiting room: one mio event loop that accepts connections, holds
//! idle ones and those still sending a head, and answers the fast path
//! itself - a body-less request that the handler can `prepare` without
//! blocking, and whose upstream exchange (an IP target, an in-memory
//! response) the loop drives with non-blocking sockets. Anything else goes
//! to a worker as a `Job`. Nothing here blocks.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{debug, error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::http::codec::{self, head_ready, leading_blank};
use crate::http::{Body, Framing, Response, Wire};
use crate::pipeline::Prepared;
use crate::proxy::Forward;
use crate::upstream::UpstreamError;

use super::worker::encode_whole;
use super::{Conn, ConnCount, GRACE, Job, Listener, Meta, Shared, TICK, WAKER};

/// Largest upstream response body the loop buffers; larger ones stream
/// from a worker.
const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// An upstream connection the loop is using. Idle ones live in the
/// upstream pool shared with the workers, in blocking mode.
struct Up {
    wire: Wire<TcpStream>,
    /// Still connecting (else the request is sent).
    connecting: bool,
    ex: Exchange,
}

/// A request the loop is forwarding.
struct Exchange {
    client: Token,
    plan: Box<Forward>,
    meta: Meta,
    deadline: Instant,
    /// On a reused connection (a dead one may be retried by a worker).
    reused: bool,
}

pub(super) struct WaitingRoom {
    poll: Poll,
    listeners: Vec<Listener>,
    conns: HashMap<Token, Conn>,
    ups: HashMap<Token, Up>,
    next_token: usize,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    back: Receiver<Conn>,
    max_open: usize,
    accept_paused_until: Option<Instant>,
}

impl WaitingRoom {
    pub(super) fn new(
        poll: Poll,
        listeners: Vec<Listener>,
        shared: Arc<Shared>,
        jobs: Sender<Job>,
        back: Receiver<Conn>,
        max_open: usize,
    ) -> WaitingRoom {
        WaitingRoom {
            next_token: listeners.len(),
            poll,
            listeners,
            conns: HashMap::new(),
            ups: HashMap::new(),
            shared,
            jobs,
            back,
            max_open,
            accept_paused_until: None,
        }
    }

    pub(super) fn run(&mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.socket.as_raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
        let mut events = Events::with_capacity(1024);
        let mut last_sweep = Instant::now();
        let mut stop_by: Option<Instant> = None;
        loop {
            if self.shared.shutdown.load(Ordering::SeqCst) && stop_by.is_none() {
                stop_by = Some(Instant::now() + GRACE);
                self.stop_accepting();
            }
            if let Some(deadline) = stop_by
                && (!self.conns.values().any(|c| c.busy || !c.pending.is_empty())
                    || Instant::now() >= deadline)
            {
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, Some(TICK))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            let ready: Vec<(Token, bool, bool)> = events
                .iter()
                .map(|e| {
                    (
                        e.token(),
                        e.is_readable() || e.is_read_closed() || e.is_error(),
                        e.is_writable(),
                    )
                })
                .collect();
            for (token, readable, writable) in ready {
                match token {
                    WAKER => self.take_back(),
                    Token(i) if i < self.listeners.len() => self.accept(i),
                    t if self.ups.contains_key(&t) => self.upstream_event(t, readable, writable),
                    t => self.client_event(t, readable, writable),
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
            "server: stopped; closing {} idle connections",
            self.conns.len()
        );
        Ok(())
    }

    fn stop_accepting(&mut self) {
        for l in &self.listeners {
            let fd = l.socket.as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.busy && c.pending.is_empty())
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.remove(t);
        }
    }

    fn token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(self.listeners.len());
        t
    }

    fn accept(&mut self, i: usize) {
        if self.accept_paused_until.is_some() || self.shared.shutdown.load(Ordering::SeqCst) {
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
            let _ = (&stream)
                .write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            return;
        }
        // Timeouts apply once a worker switches the socket to blocking.
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
            pending: Vec::new(),
            close_after: false,
            busy: false,
            _count: count,
        };
        self.wait(conn);
    }

    /// Registers a connection and serves whatever it has buffered.
    fn wait(&mut self, conn: Conn) {
        let token = self.token();
        let fd = conn.wire.stream.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest)
            .is_ok()
        {
            self.conns.insert(token, conn);
            self.try_serve(token);
        }
    }

    fn remove(&mut self, token: Token) -> Option<Conn> {
        let conn = self.conns.remove(&token)?;
        let fd = conn.wire.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(conn)
    }

    /// Hands a connection (out of the loop) to a worker.
    fn dispatch(&mut self, job: Job) {
        self.shared.busy.fetch_add(1, Ordering::SeqCst);
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        if self.jobs.send(job).is_err() {
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

    fn client_event(&mut self, token: Token, readable: bool, writable: bool) {
        if writable
            && self
                .conns
                .get(&token)
                .is_some_and(|c| !c.pending.is_empty())
            && !self.flush(token)
        {
            return;
        }
        if readable && !self.read_client(token) {
            return;
        }
        self.try_serve(token);
    }

    /// Reads what the client sent; false when the connection is gone.
    fn read_client(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        let cap = self.shared.cfg.limits.max_head + 1;
        loop {
            if conn.wire.buffered().len() >= cap {
                return true;
            }
            match conn.wire.fill(cap) {
                Ok(0) => break,
                Ok(_) => {
                    conn.head_started.get_or_insert_with(Instant::now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        // Closed. A client that half-closed after a whole head still gets
        // its answer from a worker; otherwise it is gone.
        let whole_head = head_ready(conn.wire.buffered(), &self.shared.cfg.limits);
        if whole_head && !conn.busy && conn.pending.is_empty() {
            let conn = self.remove(token).expect("present");
            self.dispatch(Job::Serve(conn));
        } else {
            self.remove(token);
        }
        false
    }

    /// Serves buffered requests on the fast path, or hands the connection
    /// to a worker.
    fn try_serve(&mut self, token: Token) {
        for _ in 0..self.shared.cfg.max_pipelined.max(1) {
            let Some(conn) = self.conns.get_mut(&token) else {
                return;
            };
            if conn.busy || !conn.pending.is_empty() {
                return;
            }
            let blank = leading_blank(conn.wire.buffered());
            conn.wire.consume(blank);
            if !head_ready(conn.wire.buffered(), &self.shared.cfg.limits) {
                return;
            }
            if !self.serve_fast(token) {
                return;
            }
        }
    }

    /// Serves one request; false when the loop is done with it for now.
    fn serve_fast(&mut self, token: Token) -> bool {
        let limits = &self.shared.cfg.limits;
        let conn = self.conns.get_mut(&token).expect("present");
        let parsed = codec::parse_request(conn.wire.buffered(), limits, conn.peer);
        let Ok(Some((head, used))) = parsed else {
            // Errors are answered (and logged) by a worker.
            let conn = self.remove(token).expect("present");
            self.dispatch(Job::Serve(conn));
            return false;
        };
        if head.request.framing != Framing::None || head.expect_continue {
            let conn = self.remove(token).expect("present");
            self.dispatch(Job::Serve(conn));
            return false;
        }
        conn.wire.consume(used);
        conn.head_started = None;
        let meta = Meta::of(&head);
        let handler = self.shared.handlers[conn.listener].clone();
        let prepared = catch_unwind(AssertUnwindSafe(|| handler.prepare(head.request)));
        let prepared = prepared.unwrap_or_else(|_| {
            error!("server: handler panicked on the event loop; answering 500");
            Prepared::Respond(Response::text(500, "Internal Server Error").with_close())
        });
        match prepared {
            Prepared::Respond(res) => self.respond(token, res, meta),
            Prepared::Defer(request) => {
                let conn = self.remove(token).expect("present");
                let head = codec::RequestHead {
                    request,
                    keep_alive: meta.keep_alive,
                    expect_continue: false,
                };
                self.dispatch(Job::Deferred(conn, head));
                false
            }
            Prepared::Forward(plan) => {
                self.forward(token, plan, meta);
                false
            }
        }
    }

    /// Writes a response without blocking; true when the connection is
    /// free for its next request.
    fn respond(&mut self, token: Token, res: Response, meta: Meta) -> bool {
        let close = meta.must_close(&self.shared, &res);
        let Some(bytes) = encode_whole(&res, meta.is_head, close) else {
            unreachable!("the fast path builds responses in memory")
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        conn.pending = bytes;
        conn.close_after = close;
        conn.idle_since = Instant::now();
        self.flush(token)
    }

    /// Writes pending bytes; true when all are written and the connection
    /// stays open.
    fn flush(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        while !conn.pending.is_empty() {
            match (&conn.wire.stream).write(&conn.pending) {
                Ok(0) => {
                    self.remove(token);
                    return false;
                }
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.remove(token);
                    return false;
                }
            }
        }
        if conn.close_after {
            self.remove(token);
            return false;
        }
        true
    }

    /// Starts an upstream exchange on a pooled or new connection.
    fn forward(&mut self, client: Token, plan: Box<Forward>, meta: Meta) {
        let Some(socket) = plan.socket else {
            let conn = self.remove(client).expect("present");
            self.dispatch(Job::Forward(conn, meta, plan));
            return;
        };
        if let Some(conn) = self.conns.get_mut(&client) {
            conn.busy = true;
        }
        let (connect, respond) = plan.upstream.timeouts();
        let now = Instant::now();
        let (stream, connecting, reused) = match plan.upstream.take_idle(&plan.address) {
            Some(wire) if wire.stream.set_nonblocking(true).is_ok() => {
                (Ok(wire.stream), false, true)
            }
            _ => (connect_nonblocking(socket, respond), true, false),
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) => return self.fail(client, &plan, meta, UpstreamError::Broken(e)),
        };
        if !connecting && let Err(e) = (&stream).write_all(&plan.head) {
            return self.fail(client, &plan, meta, UpstreamError::Broken(e));
        }
        let token = self.token();
        let fd = stream.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest)
        {
            return self.fail(client, &plan, meta, UpstreamError::Broken(e));
        }
        let deadline = now + if connecting { connect } else { respond };
        let ex = Exchange {
            client,
            plan,
            meta,
            deadline,
            reused,
        };
        self.ups.insert(
            token,
            Up {
                wire: Wire::new(stream),
                connecting,
                ex,
            },
        );
    }

    /// Answers the client with Tyk's error for an upstream fault.
    fn fail(&mut self, client: Token, plan: &Forward, meta: Meta, e: UpstreamError) {
        let res = plan.fail(e);
        self.finish_client(client, res, meta);
    }

    /// Ends a client's wait on its upstream with `res`.
    fn finish_client(&mut self, client: Token, res: Response, meta: Meta) {
        let Some(conn) = self.conns.get_mut(&client) else {
            return;
        };
        conn.busy = false;
        if self.respond(client, res, meta) {
            self.try_serve(client);
        }
    }

    fn drop_up(&mut self, token: Token) -> Option<Up> {
        let up = self.ups.remove(&token)?;
        let fd = up.wire.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        Some(up)
    }

    fn upstream_event(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(up) = self.ups.get(&token) else {
            return;
        };
        if up.connecting {
            if readable || writable {
                self.connected(token);
            }
        } else if readable {
            self.response_ready(token);
        }
    }

    fn connected(&mut self, token: Token) {
        let up = self.ups.get_mut(&token).expect("present");
        let stream = &up.wire.stream;
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        let error = error.or_else(|| {
            stream.set_nodelay(true).ok();
            (&up.wire.stream).write_all(&up.ex.plan.head).err()
        });
        if let Some(e) = error {
            return self.upstream_failed(token, UpstreamError::Broken(e));
        }
        let (_, respond) = up.ex.plan.upstream.timeouts();
        up.connecting = false;
        up.ex.deadline = Instant::now() + respond;
    }

    fn response_ready(&mut self, token: Token) {
        let up = self.ups.get_mut(&token).expect("present");
        let limits = up.ex.plan.upstream.limits().clone();
        let cap = limits.max_head + MAX_BUFFERED_BODY + 1;
        let mut eof = false;
        loop {
            match up.wire.fill(cap) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) if up.wire.buffered().len() >= cap => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let head_request = up.ex.plan.head_request;
        let parsed = loop {
            match codec::parse_response(up.wire.buffered(), &limits, head_request) {
                Ok(Some((head, used))) if (100..200).contains(&head.status) => {
                    up.wire.consume(used)
                }
                other => break other,
            }
        };
        let (head, used) = match parsed {
            Ok(None) if !eof => return,
            Ok(None) => return self.upstream_gone(token),
            Err(e) => {
                return self.upstream_failed(token, UpstreamError::BadResponse(e.to_string()));
            }
            Ok(Some(found)) => found,
        };
        up.wire.consume(used);
        let whole = match head.framing {
            Framing::None => Some(0),
            Framing::Length(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= up.wire.buffered().len()),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let Some(len) = whole else {
            return self.stream_from_worker(token, head);
        };
        let body = up.wire.buffered()[..len].to_vec();
        up.wire.consume(len);
        let reusable = head.keep_alive && !eof && up.wire.buffered().is_empty();
        let Up { wire, ex, .. } = self.drop_up(token).expect("present");
        if reusable && wire.stream.set_nonblocking(false).is_ok() {
            ex.plan.upstream.put_idle(&ex.plan.address, wire);
        }
        let res = ex.plan.respond(head, Body::Bytes(body));
        self.finish_client(ex.client, res, ex.meta);
    }

    /// The upstream closed before a whole response head.
    fn upstream_gone(&mut self, token: Token) {
        let Some(Up { wire, ex, .. }) = self.drop_up(token) else {
            return;
        };
        if ex.reused && ex.plan.replayable && wire.buffered().is_empty() {
            // A pooled connection the upstream had closed: a worker retries
            // once on a fresh one, as the blocking path does.
            if let Some(mut conn) = self.remove(ex.client) {
                conn.busy = false;
                self.dispatch(Job::Forward(conn, ex.meta, ex.plan));
            }
            return;
        }
        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response");
        self.fail(ex.client, &ex.plan, ex.meta, UpstreamError::Broken(e));
    }

    fn upstream_failed(&mut self, token: Token, e: UpstreamError) {
        if let Some(Up { ex, .. }) = self.drop_up(token) {
            self.fail(ex.client, &ex.plan, ex.meta, e);
        }
    }

    /// A response whose body is not all here: a worker streams it.
    fn stream_from_worker(&mut self, token: Token, head: crate::http::codec::ResponseHead) {
        let Some(Up { wire, ex, .. }) = self.drop_up(token) else {
            return;
        };
        match self.remove(ex.client) {
            Some(mut conn) => {
                conn.busy = false;
                self.dispatch(Job::Stream(conn, ex.meta, ex.plan, head, wire));
            }
            None => drop(wire),
        }
    }

    /// Closes connections whose head is too slow or that idled too long,
    /// and fails upstream exchanges past their deadline.
    fn sweep(&mut self) {
        let cfg = &self.shared.cfg;
        let now = Instant::now();
        let expired: Vec<(Token, bool)> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.busy && c.pending.is_empty())
            .filter_map(|(t, c)| match c.head_started {
                Some(s) if now.duration_since(s) > cfg.head_timeout => Some((*t, true)),
                None if now.duration_since(c.idle_since) > cfg.idle_timeout => Some((*t, false)),
                _ => None,
            })
            .collect();
        for (token, slow_head) in expired {
            let Some(conn) = self.remove(token) else {
                continue;
            };
            if slow_head {
                debug!("server: {} sent no complete head in time", conn.peer);
                let _ = (&conn.wire.stream)
                    .write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
        let late: Vec<Token> = self
            .ups
            .iter()
            .filter(|(_, u)| now >= u.ex.deadline)
            .map(|(t, _)| *t)
            .collect();
        for token in late {
            self.upstream_failed(token, UpstreamError::Timeout);
        }
    }
}

/// Starts a non-blocking connect. Read/write timeouts are set for a worker
/// that may take the connection over.
fn connect_nonblocking(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_nonblocking(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INPROGRESS.raw_os_error()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}
