//! An event loop's own connection to Redis (its `Sidecar`): the requests
//! the loop parks during one round are counted in one script call, written
//! on a non-blocking socket at the end of the round, and their answers are
//! read when the socket is readable; no thread and no wake-up in between.
//!
//! What the link cannot do goes to the counting thread (`batch`), which
//! owns retries and failure answers: requests parked while the link is
//! down or reconnecting, and a batch Redis refused because it does not know
//! the script (it did not run; the thread loads it). A batch that was
//! written and then lost with its connection may have been counted, so it
//! is not sent again: its requests are refused (fail closed).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use redis::{Parser, Script, Value};

use super::batch::{self, Job};
use super::shared::COUNT_LUA;
use crate::server::Sidecar;
use crate::store::Redis;

/// Longest wait before a failed link connects again.
const RETRY: Duration = Duration::from_secs(1);

thread_local! {
    /// Requests parked on this thread's loop during the current round;
    /// Some while the loop's link is up (or connecting).
    static PARKED: RefCell<Option<Vec<Job>>> = const { RefCell::new(None) };
}

/// Queues `job` on this thread's loop link; gives it back when the thread
/// has none (a worker) or the link is down.
pub(super) fn queue(job: Job) -> Option<Job> {
    PARKED.with(|p| match p.borrow_mut().as_mut() {
        Some(q) => {
            q.push(job);
            None
        }
        None => Some(job),
    })
}

/// Turns this thread's queue on (with the jobs already in it kept) or off
/// (returning them).
fn set_queue(on: bool) -> Vec<Job> {
    PARKED.with(|p| {
        let mut p = p.borrow_mut();
        match (on, p.is_some()) {
            (true, false) => {
                *p = Some(Vec::new());
                Vec::new()
            }
            (false, true) => p.take().unwrap_or_default(),
            _ => Vec::new(),
        }
    })
}

fn take_queued() -> Vec<Job> {
    PARKED.with(|p| {
        p.borrow_mut()
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    })
}

pub(super) struct Link {
    addr: SocketAddr,
    /// Sent first on every connection (AUTH, SELECT).
    hello: Vec<redis::Cmd>,
    script: Script,
    redis: Arc<Redis>,
    /// The counting thread.
    fallback: Sender<Job>,
    conn: Option<Conn>,
    retry_at: Instant,
}

struct Conn {
    stream: TcpStream,
    connected: bool,
    /// Commands not yet written, from `out[sent..]`.
    out: Vec<u8>,
    sent: usize,
    /// Bytes ever queued on this connection, and written.
    queued_total: u64,
    written_total: u64,
    /// Commands written or queued, oldest first, whose replies are due.
    flights: VecDeque<Flight>,
    parser: Parser,
    /// WRITABLE interest is registered.
    writable: bool,
}

struct Flight {
    /// Where its command starts in the connection's output.
    start: u64,
    what: What,
}

enum What {
    Hello,
    Count(Vec<Job>),
}

impl Link {
    pub(super) fn new(
        addr: SocketAddr,
        hello: Vec<redis::Cmd>,
        redis: Arc<Redis>,
        fallback: Sender<Job>,
    ) -> Link {
        Link {
            addr,
            hello,
            script: Script::new(COUNT_LUA),
            redis,
            fallback,
            conn: None,
            retry_at: Instant::now(),
        }
    }

    fn connect(&mut self, registry: &Registry, token: Token) {
        if self.conn.is_some() || Instant::now() < self.retry_at {
            return;
        }
        let mut stream = match TcpStream::connect(self.addr) {
            Ok(s) => s,
            Err(e) => return self.down(registry, &format!("cannot connect: {e}")),
        };
        if let Err(e) =
            registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            return self.down(registry, &format!("cannot watch the socket: {e}"));
        }
        let mut conn = Conn {
            stream,
            connected: false,
            out: Vec::new(),
            sent: 0,
            queued_total: 0,
            written_total: 0,
            flights: VecDeque::new(),
            parser: Parser::new(),
            writable: true,
        };
        for cmd in &self.hello {
            conn.push(cmd, What::Hello);
        }
        self.conn = Some(conn);
        set_queue(true);
    }

    /// Gives up the connection: requests never written go to the counting
    /// thread, written ones are refused; the link connects again after
    /// `RETRY` (at once when nothing was lost: an idle connection closed).
    fn down(&mut self, registry: &Registry, why: &str) {
        let mut lost = 0;
        let mut unsent = set_queue(false);
        if let Some(mut conn) = self.conn.take() {
            let _ = registry.deregister(&mut conn.stream);
            for flight in conn.flights {
                let What::Count(jobs) = flight.what else {
                    continue;
                };
                if flight.start >= conn.written_total {
                    unsent.extend(jobs);
                } else {
                    lost += jobs.len();
                    let n = jobs.len();
                    let why = format!("the connection was lost: {why}");
                    batch::deliver(&self.redis, jobs, batch::failed(why, n));
                }
            }
        }
        let quiet = lost == 0 && unsent.is_empty();
        if quiet {
            log::debug!("redis: the event loop's link closed: {why}");
        } else {
            self.redis.failed(&self.redis.error(why));
            log::warn!(
                "redis: the event loop's link failed ({why}); {lost} request(s) refused, \
                 {} handed to the counting thread",
                unsent.len()
            );
        }
        self.retry_at = Instant::now() + if quiet { Duration::ZERO } else { RETRY };
        for job in unsent {
            self.to_thread(job);
        }
    }

    fn to_thread(&self, job: Job) {
        if let Err(gone) = self.fallback.send(job) {
            let job = gone.into_inner();
            (job.done)(Err(self.redis.error("the counting thread is gone")));
        }
    }

    /// Reads every complete reply and hands it to its command.
    fn read(&mut self, registry: &Registry) {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            let value = match conn.parser.parse_value(&mut conn.stream) {
                Ok(v) => v,
                Err(e) if e.is_timeout() => return,
                Err(e) => return self.down(registry, &e.to_string()),
            };
            let Some(flight) = conn.flights.pop_front() else {
                return self.down(registry, "a reply nobody asked for");
            };
            match (flight.what, value) {
                (What::Hello, Value::ServerError(e)) => {
                    log::error!("redis: the event loop's link was refused: {e}");
                    return self.down(registry, &e.to_string());
                }
                (What::Hello, _) => {}
                (What::Count(jobs), Value::BulkString(text)) => {
                    self.redis.answered();
                    let n = jobs.len();
                    let answers = match std::str::from_utf8(&text) {
                        Ok(text) => batch::answers(text, n),
                        Err(_) => batch::failed("the counting script answered bytes".into(), n),
                    };
                    batch::deliver(&self.redis, jobs, answers);
                }
                // Not run: the counting thread loads the script and sends
                // them again.
                (What::Count(jobs), Value::ServerError(e)) if e.code() == "NOSCRIPT" => {
                    for job in jobs {
                        self.to_thread(job);
                    }
                }
                (What::Count(jobs), other) => {
                    let n = jobs.len();
                    let why = match other {
                        Value::ServerError(e) => e.to_string(),
                        other => format!("the counting script answered {other:?}"),
                    };
                    batch::deliver(&self.redis, jobs, batch::failed(why, n));
                }
            }
        }
    }

    /// Writes what is queued; asks to hear when the socket takes more.
    fn write(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.connected {
            return;
        }
        while conn.sent < conn.out.len() {
            match conn.stream.write(&conn.out[conn.sent..]) {
                Ok(0) => return self.down(registry, "the socket takes no more"),
                Ok(n) => {
                    conn.sent += n;
                    conn.written_total += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.down(registry, &e.to_string()),
            }
        }
        if conn.sent == conn.out.len() {
            conn.out.clear();
            conn.sent = 0;
        }
        let want = conn.sent < conn.out.len();
        if want != conn.writable {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = registry.reregister(&mut conn.stream, token, interest) {
                return self.down(registry, &format!("cannot watch the socket: {e}"));
            }
            conn.writable = want;
        }
    }
}

impl Conn {
    fn push(&mut self, cmd: &redis::Cmd, what: What) {
        let start = self.queued_total;
        let before = self.out.len();
        cmd.write_packed_command(&mut self.out);
        self.queued_total += (self.out.len() - before) as u64;
        self.flights.push_back(Flight { start, what });
    }

    /// A non-blocking connect has finished: whether it succeeded.
    fn finish_connect(&mut self) -> Result<(), String> {
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(format!("cannot connect: {e}"));
        }
        match self.stream.peer_addr() {
            Ok(_) => {
                self.connected = true;
                let _ = self.stream.set_nodelay(true);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            Err(e) => Err(format!("cannot connect: {e}")),
        }
    }
}

impl Sidecar for Link {
    fn start(&mut self, registry: &Registry, token: Token) {
        self.connect(registry, token);
    }

    fn ready(&mut self, registry: &Registry, token: Token) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        if !conn.connected {
            if let Err(why) = conn.finish_connect() {
                return self.down(registry, &why);
            }
            if !conn.connected {
                return;
            }
        }
        self.write(registry, token);
        self.read(registry);
    }

    fn flush(&mut self, registry: &Registry, token: Token) {
        if self.conn.is_none() {
            self.connect(registry, token);
        }
        let jobs = take_queued();
        if jobs.is_empty() {
            return;
        }
        let Some(conn) = self.conn.as_mut() else {
            for job in jobs {
                self.to_thread(job);
            }
            return;
        };
        let cmd = batch::command(&self.script, &jobs);
        conn.push(&cmd, What::Count(jobs));
        self.write(registry, token);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Whatever is still queued on this thread is counted elsewhere.
        for job in set_queue(false) {
            self.to_thread(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, Read};

    use redis::{Parser, Value};

    /// Hands out its chunks one read at a time, "would block" between.
    struct Drip(Vec<&'static [u8]>, bool);

    impl Read for Drip {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = !self.1;
            if self.1 || self.0.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let chunk = self.0.remove(0);
            buf[..chunk.len()].copy_from_slice(chunk);
            Ok(chunk.len())
        }
    }

    /// The link reads replies as they trickle in: the parser must keep a
    /// half-read reply across "would block" and find the next one behind it.
    #[test]
    fn a_reply_split_across_reads_is_parsed_once_whole() {
        let mut drip = Drip(
            vec![b"$5\r\nhe", b"llo\r\n-NOSCRIPT no", b"\r\n+OK\r\n"],
            false,
        );
        let mut parser = Parser::new();
        let mut got = Vec::new();
        for _ in 0..20 {
            match parser.parse_value(&mut drip) {
                Ok(v) => got.push(v),
                Err(e) => assert!(e.is_timeout(), "{e}"),
            }
        }
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(got[0], Value::BulkString(b"hello".to_vec()));
        assert!(matches!(&got[1], Value::ServerError(e) if e.code() == "NOSCRIPT"));
        assert_eq!(got[2], Value::Okay);
    }
}
