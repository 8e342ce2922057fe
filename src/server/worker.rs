//! The worker pool: blocking request handling. A worker takes a job from
//! the waiting room (a connection with a whole head buffered, or an
//! exchange the event loop could not finish without blocking), answers it,
//! lingers briefly for the next request, and hands the connection back.

use std::io::{self, BufWriter, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use log::{debug, error};

use crate::http::codec::{self, RequestHead, encode_response_head, head_ready, leading_blank};
use crate::http::{Body, BodyReader, ChunkedWriter, Framing, Response, Stream, Version};

use super::{Conn, DRAIN_LIMIT, Job, Meta, Shared};

pub(super) fn worker(shared: &Arc<Shared>, jobs: &Receiver<Job>) {
    loop {
        shared.idle.fetch_add(1, Ordering::SeqCst);
        let next = jobs.recv();
        shared.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(job) = next else { return };
        shared.queued.fetch_sub(1, Ordering::SeqCst);
        if let Some(conn) = run(shared, job) {
            hand_back(shared, conn);
        }
        shared.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Does one job; returns the connection when it may be kept open.
fn run(shared: &Shared, job: Job) -> Option<Conn> {
    match job {
        Job::Serve(conn) => serve_conn(shared, conn),
        Job::Deferred(mut conn, head, meta, stay) => {
            // The event loop deferred one request (a cold key, a bcrypt
            // check, a throttle wait); the next ones can take its fast path
            // again, so the connection goes straight back instead of
            // lingering here (under steady load it would never return).
            // A connection whose requests never have a fast path (`stay`:
            // the admin API) is served on here like a new one.
            conn.wire.stream.set_nonblocking(false).ok()?;
            if !serve_one(shared, &mut conn, Some((head, meta))) {
                return None;
            }
            if stay {
                return serve_conn(shared, conn);
            }
            Some(conn)
        }
        Job::Forward(conn, meta, mut plan) => {
            conn.wire.stream.set_nonblocking(false).ok()?;
            let res = plan.send(&mut io::empty());
            answer(shared, conn, res, meta)
        }
        Job::Stream(conn, meta, mut plan, head, wire) => {
            conn.wire.stream.set_nonblocking(false).ok()?;
            wire.stream.set_nonblocking(false).ok()?;
            let body = crate::upstream::UpstreamBody::new(
                wire,
                &head,
                &plan.address,
                plan.upstream.clone(),
            );
            let len = body.declared_len();
            let res = plan.respond(
                head,
                Body::Stream {
                    len,
                    source: Box::new(body),
                },
            );
            answer(shared, conn, res, meta)
        }
    }
}

/// Writes `res` for a request described by `meta`, then serves on.
fn answer(shared: &Shared, mut conn: Conn, mut res: Response, meta: Meta) -> Option<Conn> {
    let status = res.status;
    shared
        .metrics
        .finish(&mut res.tally, status, &meta.arrival, Instant::now());
    let close = meta.must_close(shared, &res);
    match write_response(
        &mut conn.wire.stream,
        res,
        meta.is_head,
        close,
        meta.version,
    ) {
        Ok(true) if !close => serve_conn(shared, conn),
        Ok(_) => None,
        Err(e) => {
            debug!("server: writing to {} failed: {e}", conn.peer);
            None
        }
    }
}

/// Returns a kept-alive connection to the waiting room (dropped, so
/// closed, during shutdown).
fn hand_back(shared: &Shared, conn: Conn) {
    if shared.shutdown.load(Ordering::SeqCst) || conn.wire.stream.set_nonblocking(true).is_err() {
        return;
    }
    shared.send_to_room(super::Inbound::Back(conn));
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
            if !serve_one(shared, &mut conn, None) {
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
            || !readable_within(&mut conn.wire.stream, cfg.linger)
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
fn readable_within(stream: &mut Stream, linger: Duration) -> bool {
    if stream.has_plaintext() {
        return true;
    }
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

/// Serves one request (parsed here, or already parsed by the event loop);
/// false when the connection must close.
fn serve_one(shared: &Shared, conn: &mut Conn, parsed: Option<(RequestHead, Meta)>) -> bool {
    let cfg = &shared.cfg;
    let (head, meta) = match parsed {
        Some(parsed) => parsed,
        None => match codec::parse_request(conn.wire.buffered(), &cfg.limits, conn.peer) {
            Ok(Some((head, used))) => {
                conn.wire.consume(used);
                // The loop noted when this head began (a request it could
                // not take); one read while lingering starts now.
                let started = conn.head_started.take().unwrap_or_else(Instant::now);
                let meta = Meta::of(&head, started);
                (head, meta)
            }
            Ok(None) => return true,
            Err(e) => {
                debug!("server: {} bad request head: {e}", conn.peer);
                let res = Response::text(e.status(), crate::http::message::reason(e.status()));
                let _ = write_response(&mut conn.wire.stream, res, false, true, Version::Http11);
                return false;
            }
        },
    };
    let handler = shared.handlers[conn.listener].clone();
    let mut body = BodyReader::new(&mut conn.wire, head.request.framing, &cfg.limits)
        .expect_continue(head.expect_continue);
    let outcome = catch_unwind(AssertUnwindSafe(|| handler.handle(head.request, &mut body)));
    let mut res = outcome.unwrap_or_else(|_| {
        error!("server: handler panicked; answering 500");
        Response::text(500, "Internal Server Error").with_close()
    });
    let status = res.status;
    shared
        .metrics
        .finish(&mut res.tally, status, &meta.arrival, Instant::now());
    if matches!(res.body, Body::Upgrade(_)) {
        // A handshake has no body: the reader is done with the wire.
        let _ = body;
        return switch(shared, conn, res);
    }
    let close = meta.must_close(shared, &res) || !body.may_drain(DRAIN_LIMIT);
    // Answer first: an unread body is drained afterwards, so a client that
    // never sends it does not delay the response.
    match write_response(body.stream(), res, meta.is_head, close, meta.version) {
        Ok(complete) => complete && !close && body.drain(DRAIN_LIMIT),
        Err(e) => {
            debug!("server: writing to {} failed: {e}", conn.peer);
            false
        }
    }
}

/// Sends a `101` the upstream agreed to, then hands both connections to a
/// tunnel; the client connection is never served as HTTP again (false).
fn switch(shared: &Shared, conn: &mut Conn, res: Response) -> bool {
    let Body::Upgrade(up) = res.body else {
        return false;
    };
    let mut head = Vec::with_capacity(256);
    encode_response_head(&mut head, 101, &res.headers, Framing::None, false);
    let written = conn.wire.stream.write_all(&head);
    if let Err(e) = written.and_then(|()| conn.wire.stream.flush()) {
        debug!("server: writing 101 to {} failed: {e}", conn.peer);
        return false;
    }
    let early = conn.wire.buffered().to_vec();
    // The tunnel takes the stream (and its TLS session); the connection,
    // dropped by the caller, keeps a duplicate of the socket's descriptor.
    let client = match conn.wire.stream.tcp().try_clone() {
        Ok(dup) => std::mem::replace(&mut conn.wire.stream, Stream::Plain(dup)),
        Err(e) => {
            error!("server: cannot keep {} for its tunnel: {e}", conn.peer);
            return false;
        }
    };
    if let Err(e) = shared
        .tunnels
        .start(client, early, *up, shared.cfg.idle_timeout)
    {
        error!("server: no tunnel for {}: {e}", conn.peer);
    }
    false
}

/// The head and the in-memory body of a response, ready to write, or None
/// for a streamed body.
pub(super) fn encode_whole(res: &Response, is_head: bool, close: bool) -> Option<Vec<u8>> {
    let no_body = res.status < 200 || res.status == 204 || res.status == 304;
    let mut out = Vec::with_capacity(256 + res.body_bytes().len());
    match &res.body {
        Body::Empty => {
            let framing = if no_body {
                Framing::None
            } else {
                Framing::Length(0)
            };
            encode_response_head(&mut out, res.status, &res.headers, framing, close);
        }
        Body::Bytes(bytes) => {
            let framing = Framing::Length(bytes.len() as u64);
            encode_response_head(&mut out, res.status, &res.headers, framing, close);
            if !is_head {
                out.extend_from_slice(bytes);
            }
        }
        Body::Stream { .. } | Body::Upgrade(_) => return None,
    }
    Some(out)
}

/// Writes a response; Ok(false) when the body could not be delimited
/// (the connection must close).
pub(super) fn write_response(
    stream: &mut Stream,
    res: Response,
    is_head: bool,
    close: bool,
    version: Version,
) -> io::Result<bool> {
    if let Some(bytes) = encode_whole(&res, is_head, close) {
        stream.write_all(&bytes)?;
        stream.flush()?;
        return Ok(true);
    }
    let Body::Stream { len, mut source } = res.body else {
        // An upgrade reaching here (not through `serve_one`) is refused.
        return Ok(false);
    };
    let mut out = BufWriter::with_capacity(16 * 1024, stream);
    let no_body = res.status < 200 || res.status == 204 || res.status == 304;
    let chunked = len.is_none() && version == Version::Http11;
    let framing = match len {
        Some(n) => Framing::Length(n),
        None if chunked => Framing::Chunked,
        None => Framing::UntilClose,
    };
    let mut head = Vec::with_capacity(256);
    let close = close || framing == Framing::UntilClose;
    encode_response_head(&mut head, res.status, &res.headers, framing, close);
    out.write_all(&head)?;
    let complete = if is_head || no_body {
        true
    } else if chunked {
        let mut enc = ChunkedWriter { inner: &mut out };
        source.copy_to(&mut enc)?;
        enc.finish()?;
        true
    } else {
        let copied = source.copy_to(&mut out)?;
        len.is_some_and(|n| n == copied)
    };
    out.flush()?;
    Ok(complete)
}
