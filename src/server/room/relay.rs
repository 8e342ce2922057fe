//! The event loop's side of upstream exchanges: starting one on a pooled
//! or freshly connecting socket, reading the response, and either
//! answering the client from memory or handing the rest to a worker.
//! The loop keeps its own pool of idle upstream connections, registered
//! and non-blocking, so reusing one costs no syscall until the request is
//! written; an idle one that closes or speaks is dropped at once. Workers
//! keep theirs (blocking) in `Upstream`.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::http::body::READ_CHUNK;
use crate::http::codec::{self, ResponseHead};
use crate::http::{Body, Framing, Response, Stream, Wire};
use crate::proxy::Forward;
use crate::upstream::UpstreamError;

use super::super::{Job, Meta};
use super::WaitingRoom;

/// Largest upstream response body the loop buffers; larger ones stream
/// from a worker.
const MAX_BUFFERED_BODY: usize = 64 * 1024;
/// An idle upstream connection older than this is closed, not reused.
const IDLE_MAX: Duration = Duration::from_secs(30);

/// An upstream connection of the loop: in use, or idle in its pool.
pub(super) struct Up {
    pub(super) wire: Wire<Stream>,
    socket: SocketAddr,
    /// Still connecting (else the request is sent).
    connecting: bool,
    /// The exchange in progress; None while idle.
    pub(super) ex: Option<Exchange>,
    /// When it last became idle.
    idle_since: Instant,
}

impl Up {
    /// Past its deadline (in use) or idle too long.
    pub(super) fn expired(&self, now: Instant) -> bool {
        match &self.ex {
            Some(ex) => now >= ex.deadline,
            None => now.duration_since(self.idle_since) > IDLE_MAX,
        }
    }
}

/// A request the loop is forwarding.
pub(super) struct Exchange {
    client: Token,
    plan: Box<Forward>,
    meta: Meta,
    pub(super) deadline: Instant,
    /// On a reused connection (a dead one may be retried by a worker).
    reused: bool,
}

impl WaitingRoom {
    /// Starts an upstream exchange on a pooled or new connection.
    pub(super) fn forward(&mut self, client: Token, plan: Box<Forward>, mut meta: Meta) {
        let Some(socket) = plan.socket else {
            let conn = self.remove(client).expect("present");
            self.dispatch(Job::Forward(conn, meta, plan));
            return;
        };
        if let Some(conn) = self.conns.get_mut(&client) {
            conn.busy = true;
        }
        let (connect, respond) = plan.timeouts();
        let now = Instant::now();
        meta.arrival.sent = Some(now);
        while let Some(token) = self.pool.get_mut(&socket).and_then(Vec::pop) {
            let Some(up) = self.ups.get_mut(&token) else {
                continue;
            };
            let fresh = now.duration_since(up.idle_since) <= IDLE_MAX;
            if !fresh || up.wire.stream.write_all(&plan.head).is_err() {
                self.drop_up(token);
                continue;
            }
            let deadline = now + respond;
            up.ex = Some(Exchange {
                client,
                plan,
                meta,
                deadline,
                reused: true,
            });
            return;
        }
        // A connection a worker left idle (after streaming a response) is
        // as good as the loop's own: without this, every hand-off to a
        // worker cost the loop a fresh connection.
        if let Some(mut wire) = plan.upstream.take_idle(&plan.address) {
            let fd = wire.stream.as_raw_fd();
            let token = self.token();
            let ready = wire.stream.set_nonblocking(true).is_ok()
                && self
                    .poll
                    .registry()
                    .register(&mut SourceFd(&fd), token, Interest::READABLE)
                    .is_ok();
            if ready && wire.stream.write_all(&plan.head).is_ok() {
                let ex = Exchange {
                    client,
                    plan,
                    meta,
                    deadline: now + respond,
                    reused: true,
                };
                let up = Up {
                    wire,
                    socket,
                    connecting: false,
                    ex: Some(ex),
                    idle_since: now,
                };
                self.ups.insert(token, up);
                return;
            }
            if ready {
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            }
        }
        let stream = match connect_nonblocking(socket, respond) {
            Ok(s) => s,
            Err(e) => return self.fail(client, &plan, meta, UpstreamError::Broken(e)),
        };
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
        let ex = Exchange {
            client,
            plan,
            meta,
            deadline: now + connect,
            reused: false,
        };
        let up = Up {
            wire: Wire::new(Stream::Plain(stream)),
            socket,
            connecting: true,
            ex: Some(ex),
            idle_since: now,
        };
        self.ups.insert(token, up);
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

    pub(super) fn drop_up(&mut self, token: Token) -> Option<Up> {
        let up = self.ups.remove(&token)?;
        let fd = up.wire.stream.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if up.ex.is_none()
            && let Some(idle) = self.pool.get_mut(&up.socket)
        {
            idle.retain(|t| *t != token);
        }
        Some(up)
    }

    pub(super) fn upstream_event(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        closed: bool,
    ) {
        let Some(up) = self.ups.get(&token) else {
            return;
        };
        if up.ex.is_none() {
            // An idle upstream closed or sent bytes nobody asked for.
            self.drop_up(token);
        } else if up.connecting {
            if readable || writable {
                self.connected(token);
            }
        } else if readable {
            self.response_ready(token, closed);
        }
    }

    fn connected(&mut self, token: Token) {
        let up = self.ups.get_mut(&token).expect("present");
        let Some(ex) = up.ex.as_mut() else { return };
        let stream = up.wire.stream.tcp();
        let error = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        let error = error.or_else(|| {
            up.wire.stream.tcp().set_nodelay(true).ok();
            up.wire.stream.write_all(&ex.plan.head).err()
        });
        if let Some(e) = error {
            return self.upstream_failed(token, UpstreamError::Broken(e));
        }
        let (_, respond) = ex.plan.timeouts();
        ex.deadline = Instant::now() + respond;
        up.connecting = false;
    }

    /// Reads the response (to the end of what is there: see `read_client`)
    /// and answers the client when it is complete.
    fn response_ready(&mut self, token: Token, closed: bool) {
        let up = self.ups.get_mut(&token).expect("present");
        let Some(ex) = &up.ex else { return };
        let limits = ex.plan.upstream.limits().clone();
        let head_request = ex.plan.head_request;
        let cap = limits.max_head + MAX_BUFFERED_BODY + 1;
        let mut eof = false;
        loop {
            match up.wire.fill(cap) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(_) if up.wire.buffered().len() >= cap => break,
                Ok(n) if n < READ_CHUNK && !closed => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
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
        let mut ex = up.ex.take().expect("in use");
        if reusable {
            up.idle_since = Instant::now();
            self.pool.entry(up.socket).or_default().push(token);
        } else {
            self.drop_up(token);
        }
        let res = ex.plan.respond(head, Body::Bytes(body));
        self.finish_client(ex.client, res, ex.meta);
    }

    /// The upstream closed before a whole response head.
    fn upstream_gone(&mut self, token: Token) {
        let Some(Up {
            wire, ex: Some(ex), ..
        }) = self.drop_up(token)
        else {
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

    pub(super) fn upstream_failed(&mut self, token: Token, e: UpstreamError) {
        if let Some(Up { ex: Some(ex), .. }) = self.drop_up(token) {
            self.fail(ex.client, &ex.plan, ex.meta, e);
        }
    }

    /// A response whose body is not all here: a worker streams it.
    fn stream_from_worker(&mut self, token: Token, head: ResponseHead) {
        let Some(Up {
            wire, ex: Some(ex), ..
        }) = self.drop_up(token)
        else {
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
