//! The waiting room: a mio event loop that accepts connections, holds
//! idle ones and those still sending a head, and answers the fast path
//! itself - a body-less request that the handler can `prepare` without
//! blocking, and whose upstream exchange (an IP target, an in-memory
//! response) the loop drives with non-blocking sockets. Anything else goes
//! to a worker as a `Job`. Nothing here blocks.
//!
//! There is one room per `event_loops`, each on its own thread with its
//! own connections and upstream pool. Every room accepts on the same
//! listening sockets and deals what it accepts round robin, so keep-alive
//! connections spread evenly; a connection stays with its room for life
//! (a worker hands it back there).

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

use crate::FastMap;
use crate::http::body::READ_CHUNK;
use crate::http::codec::{self, head_ready, leading_blank};
use crate::http::{Framing, Response, Stream, Wire};
use crate::pipeline::{Parked, Prepared};
use crate::upstream::UpstreamError;

mod relay;

/// What a handler that panicked on the loop prepared: a 500.
fn unwound(prepared: std::thread::Result<Prepared>) -> Prepared {
    prepared.unwrap_or_else(|_| {
        error!("server: handler panicked on the event loop; answering 500");
        Prepared::Respond(Response::text(500, "Internal Server Error").with_close())
    })
}

use relay::Up;

/// Largest request body the loop forwards itself (when all buffered).
const MAX_FAST_BODY: usize = 16 * 1024;

use super::worker::encode_whole;
use super::{
    Conn, ConnCount, GRACE, Inbound, Job, Listener, Meta, SIDECAR, Shared, Sidecar, TICK, WAKER,
};

pub(super) struct WaitingRoom {
    /// This room's index in `Shared::rooms`.
    index: usize,
    poll: Poll,
    listeners: Vec<Listener>,
    conns: FastMap<Token, Conn>,
    ups: FastMap<Token, Up>,
    /// The loop's idle upstream connections by address.
    pool: FastMap<SocketAddr, Vec<Token>>,
    next_token: usize,
    shared: Arc<Shared>,
    jobs: Sender<Job>,
    back: Receiver<Inbound>,
    max_open: usize,
    accept_paused_until: Option<Instant>,
    sidecar: Option<Box<dyn Sidecar>>,
}

impl WaitingRoom {
    pub(super) fn new(
        index: usize,
        poll: Poll,
        listeners: Vec<Listener>,
        shared: Arc<Shared>,
        jobs: Sender<Job>,
        back: Receiver<Inbound>,
        max_open: usize,
    ) -> WaitingRoom {
        WaitingRoom {
            index,
            next_token: listeners.len(),
            poll,
            listeners,
            conns: FastMap::default(),
            ups: FastMap::default(),
            pool: FastMap::default(),
            shared,
            jobs,
            back,
            max_open,
            accept_paused_until: None,
            sidecar: None,
        }
    }

    pub(super) fn run(&mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            let fd = l.socket.as_raw_fd();
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
        }
        super::ON_ROOM.set(Some(self.index));
        self.sidecar = self.shared.handlers.iter().find_map(|h| h.sidecar());
        if let Some(s) = &mut self.sidecar {
            s.start(self.poll.registry(), SIDECAR);
        }
        let mut events = Events::with_capacity(1024);
        // (token, readable, writable, peer closed or error); reused every round.
        let mut ready: Vec<(Token, bool, bool, bool)> = Vec::with_capacity(1024);
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
            // What the loop sent itself (unwoken) is taken before it waits.
            let wait = if self.back.is_empty() {
                TICK
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            ready.extend(events.iter().map(|e| {
                let closed = e.is_read_closed() || e.is_error();
                (
                    e.token(),
                    e.is_readable() || closed,
                    e.is_writable(),
                    closed,
                )
            }));
            for (token, readable, writable, closed) in ready.drain(..) {
                match token {
                    WAKER => self.take_back(),
                    SIDECAR => {
                        if let Some(s) = &mut self.sidecar {
                            s.ready(self.poll.registry(), SIDECAR);
                        }
                    }
                    Token(i) if i < self.listeners.len() => self.accept(i),
                    t if self.ups.contains_key(&t) => {
                        self.upstream_event(t, readable, writable, closed)
                    }
                    t => self.client_event(t, readable, writable, closed),
                }
            }
            self.take_back();
            // Requests parked this round go out together.
            if let Some(s) = &mut self.sidecar {
                s.flush(self.poll.registry(), SIDECAR);
            }
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
        let tls = self.shared.tls[listener].clone();
        if open > self.max_open {
            self.shared.metrics.refused.fetch_add(1, Ordering::Relaxed);
            debug!("server: connection cap reached; refusing {peer}");
            // A TLS client could not read a plain answer: it is just closed.
            if tls.is_none() {
                let _ = (&stream).write(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
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
        self.shared.metrics.accepted.fetch_add(1, Ordering::Relaxed);
        stream.set_nodelay(true).ok();
        let now = Instant::now();
        // A handshake counts as part of the first head: it must finish
        // within the head timeout.
        let (stream, head_started) = match tls {
            None => (Stream::Plain(stream), None),
            Some(config) => match rustls::ServerConnection::new(config) {
                Ok(session) => (Stream::tls(session, stream), Some(now)),
                Err(e) => {
                    error!("server: no TLS session for {peer}: {e}");
                    return;
                }
            },
        };
        let room = match self.shared.rooms.len() {
            1 => 0,
            n => self.shared.next_room.fetch_add(1, Ordering::Relaxed) % n,
        };
        let conn = Conn {
            wire: Wire::new(stream),
            peer,
            listener,
            room,
            idle_since: now,
            head_started,
            pending: Vec::new(),
            close_after: false,
            busy: false,
            _count: count,
        };
        if room == self.index {
            self.wait(conn);
        } else {
            self.shared.send_to_room(Inbound::New(conn));
        }
    }

    /// Registers a connection and serves whatever it has buffered.
    fn wait(&mut self, mut conn: Conn) {
        let token = self.token();
        let fd = conn.wire.stream.as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        // Bytes a TLS session already decrypted (a worker handed the
        // connection back mid-pipeline) will bring no readable event.
        let decrypted = conn.wire.stream.has_plaintext();
        if self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), token, interest)
            .is_ok()
        {
            self.conns.insert(token, conn);
            if decrypted && !self.read_client(token, false) {
                return;
            }
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
        // Cleared before draining: whatever arrives after this wakes the
        // loop again.
        self.shared.rooms[self.index]
            .woken
            .store(false, Ordering::SeqCst);
        while let Ok(inbound) = self.back.try_recv() {
            let mut conn = match inbound {
                Inbound::New(conn) => {
                    self.wait(conn);
                    continue;
                }
                Inbound::Counted {
                    token,
                    parked,
                    meta,
                    body,
                    ..
                } => {
                    self.counted(token, parked, meta, body);
                    continue;
                }
                Inbound::Back(conn) => conn,
            };
            let now = Instant::now();
            conn.idle_since = now;
            // A partial head read while lingering is a head in progress.
            conn.head_started = (!conn.wire.buffered().is_empty()).then_some(now);
            self.wait(conn);
        }
    }

    fn client_event(&mut self, token: Token, readable: bool, writable: bool, closed: bool) {
        if writable
            && self
                .conns
                .get(&token)
                .is_some_and(|c| !c.pending.is_empty() || c.wire.stream.wants_write())
            && !self.flush(token)
        {
            return;
        }
        if readable && !self.read_client(token, closed) {
            return;
        }
        self.try_serve(token);
    }

    /// Reads what the client sent; false when the connection is gone. A
    /// short read drained the socket (edge-triggered: new bytes bring a new
    /// event), unless the peer closed, which must be read to the end.
    fn read_client(&mut self, token: Token, closed: bool) -> bool {
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
                Ok(n) => {
                    conn.head_started.get_or_insert_with(Instant::now);
                    if n < READ_CHUNK && !closed && conn.wire.stream.drains_on_short_read() {
                        return true;
                    }
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
    /// Requests with a body over `MAX_FAST_BODY`, not all buffered, or
    /// chunked go to a worker, which streams it.
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
        // A body the loop may take: declared, small, and already here.
        let body = match head.request.framing {
            Framing::None => Some(0),
            Framing::Length(n) => usize::try_from(n).ok().filter(|n| *n <= MAX_FAST_BODY),
            Framing::Chunked | Framing::UntilClose => None,
        };
        let body = body.filter(|n| used + n <= conn.wire.buffered().len() && !head.expect_continue);
        let Some(body) = body else {
            let conn = self.remove(token).expect("present");
            self.dispatch(Job::Serve(conn));
            return false;
        };
        conn.wire.consume(used);
        // The time the head's first byte was read (already taken); a
        // pipelined head that was buffered before takes the time now.
        let started = conn.head_started.take().unwrap_or_else(Instant::now);
        let meta = Meta::of(&head, started);
        let handler = self.shared.handlers[conn.listener].clone();
        let prepared = unwound(catch_unwind(AssertUnwindSafe(|| {
            handler.prepare(head.request)
        })));
        self.proceed(token, prepared, meta, body)
    }

    /// A parked request's counters answered: the rest of its stages run,
    /// and then it goes on as any prepared request (the connection's next
    /// requests wait until it is answered).
    fn counted(&mut self, token: Token, parked: Box<Parked>, meta: Meta, body: usize) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return; // the client left meanwhile
        };
        conn.busy = false;
        let prepared = unwound(catch_unwind(AssertUnwindSafe(|| parked.resume())));
        if self.proceed(token, prepared, meta, body) {
            self.try_serve(token);
        }
    }

    /// Hands the connection and its parsed request to a worker (`stay`:
    /// for its next requests too); false, as the loop is done with it.
    fn defer(
        &mut self,
        token: Token,
        request: crate::http::Request,
        meta: Meta,
        stay: bool,
    ) -> bool {
        let conn = self.remove(token).expect("present");
        let head = codec::RequestHead {
            request,
            keep_alive: meta.keep_alive,
            expect_continue: false,
        };
        self.dispatch(Job::Deferred(conn, head, meta, stay));
        false
    }

    /// Acts on what the handler prepared for the connection's request,
    /// whose `body` bytes are still buffered; false when the loop is done
    /// with the connection for now.
    fn proceed(&mut self, token: Token, prepared: Prepared, meta: Meta, body: usize) -> bool {
        let conn = self.conns.get_mut(&token).expect("present");
        match prepared {
            Prepared::Respond(res) => {
                conn.wire.consume(body);
                self.respond(token, res, meta)
            }
            // The body stays buffered for the worker's body reader.
            Prepared::Defer(request) => self.defer(token, request, meta, false),
            Prepared::Work(request) => self.defer(token, request, meta, true),
            Prepared::Forward(mut plan) => {
                plan.head.extend_from_slice(&conn.wire.buffered()[..body]);
                conn.wire.consume(body);
                self.forward(token, plan, meta);
                false
            }
            // Counted off the loop; the answer comes back through the
            // inbox (`counted`).
            Prepared::Count(parked) => {
                conn.busy = true;
                let (shared, room) = (self.shared.clone(), self.index);
                parked.start(Box::new(move |parked| {
                    shared.send_to_room(Inbound::Counted {
                        room,
                        token,
                        parked,
                        meta,
                        body,
                    });
                }));
                false
            }
        }
    }

    /// Writes a response without blocking; true when the connection is
    /// free for its next request.
    fn respond(&mut self, token: Token, mut res: Response, meta: Meta) -> bool {
        let now = Instant::now();
        let (status, metrics) = (res.status, &self.shared.metrics);
        metrics.finish(&mut res.tally, status, &meta.arrival, now);
        let close = meta.must_close(&self.shared, &res);
        let Some(bytes) = encode_whole(&res, meta.is_head, close) else {
            unreachable!("the fast path builds responses in memory")
        };
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        conn.pending = bytes;
        conn.close_after = close;
        conn.idle_since = now;
        self.flush(token)
    }

    /// Writes pending bytes; true when all are written and the connection
    /// stays open.
    fn flush(&mut self, token: Token) -> bool {
        let Some(conn) = self.conns.get_mut(&token) else {
            return false;
        };
        while !conn.pending.is_empty() {
            match conn.wire.stream.write(&conn.pending) {
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
        // TLS records still to send: wait for the socket to take them.
        match conn.wire.stream.flush_pending() {
            Ok(true) => {}
            Ok(false) => return false,
            Err(_) => {
                self.remove(token);
                return false;
            }
        }
        if conn.close_after {
            self.remove(token);
            return false;
        }
        true
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
            let Some(mut conn) = self.remove(token) else {
                continue;
            };
            if slow_head {
                debug!("server: {} sent no complete head in time", conn.peer);
                let _ = conn
                    .wire
                    .stream
                    .write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        }
        let late: Vec<(Token, bool)> = self
            .ups
            .iter()
            .filter(|(_, u)| u.expired(now))
            .map(|(t, u)| (*t, u.ex.is_some()))
            .collect();
        for (token, in_use) in late {
            if in_use {
                self.upstream_failed(token, UpstreamError::Timeout);
            } else {
                self.drop_up(token);
            }
        }
    }
}
