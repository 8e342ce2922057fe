//! Listeners, the event loop (the "waiting room") and the worker pool;
//! sockets end here.
//!
//! The waiting room (`room`, one thread, mio) accepts connections and holds
//! every connection that is idle or still sending its head. When a whole
//! head is buffered it asks the listener's handler to `prepare` it without
//! blocking: a body-less request to an API whose stages need no store read
//! and whose upstream is an IP address is answered right there, its
//! upstream exchange driven by the same loop (the fast path). Everything
//! else - admin calls, bodies, streamed or large responses, cold keys - goes
//! to a worker (`worker`), which handles it with blocking I/O, lingers for
//! the next request, and hands the connection back.

use crossbeam_channel::Sender;
use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::{Poll, Token, Waker};

use crate::config::ServerConfig;
use crate::http::codec::{RequestHead, ResponseHead};
use crate::http::{Request, Response, Stream, Version, Wire};
use crate::metrics::{Arrival, Metrics, method_index};
use crate::pipeline::Prepared;
use crate::proxy::Forward;

mod room;
mod tunnel;
mod worker;

use room::WaitingRoom;

/// Answers requests on one listener.
pub trait Handler: Send + Sync {
    /// Answers a request (blocking allowed; called on a worker).
    fn handle(&self, req: Request, body: &mut dyn Read) -> Response;

    /// Answers a body-less request without blocking, plans its upstream
    /// exchange, or defers it to `handle` (called on the event loop).
    fn prepare(&self, req: Request) -> Prepared {
        Prepared::Defer(req)
    }
}

/// What the waiting room does with a request a worker did not handle.
pub(crate) enum Job {
    /// Parse and serve what the connection has buffered.
    Serve(Conn),
    /// A parsed request whose handling may block.
    Deferred(Conn, RequestHead, Meta),
    /// A planned upstream exchange the event loop will not drive (name
    /// lookup, a dead pooled connection to retry).
    Forward(Conn, Meta, Box<Forward>),
    /// An upstream response whose body must be streamed.
    Stream(Conn, Meta, Box<Forward>, ResponseHead, Wire<Stream>),
}

/// What answering a request needs to know about it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Meta {
    pub keep_alive: bool,
    pub is_head: bool,
    pub version: Version,
    /// When the request arrived, its method, when it went upstream.
    pub arrival: Arrival,
}

impl Meta {
    /// `started`: when the head's first byte was read, if known.
    pub fn of(head: &RequestHead, started: Instant) -> Meta {
        Meta {
            keep_alive: head.keep_alive,
            is_head: head.request.method == "HEAD",
            version: head.request.version,
            arrival: Arrival {
                started,
                method: method_index(&head.request.method),
                sent: None,
            },
        }
    }

    /// Whether the connection closes after `res`.
    fn must_close(&self, shared: &Shared, res: &Response) -> bool {
        !self.keep_alive
            || res.close
            || shared.cfg.close_connections
            || shared.shutdown.load(Ordering::SeqCst)
    }
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
    /// TLS on this listener: every connection starts with a handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
        Ok(Listener {
            socket,
            handler,
            tls: None,
        })
    }

    /// Serves TLS with `config` (its certificates chosen by SNI).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Listener {
        self.tls = Some(config);
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("bound listener has an address")
    }
}

/// A client connection and what the waiting room knows of it.
pub(crate) struct Conn {
    wire: Wire<Stream>,
    peer: SocketAddr,
    listener: usize,
    /// When it last became idle (accepted, or handed back).
    idle_since: Instant,
    /// When the first byte of the current head arrived.
    head_started: Option<Instant>,
    /// Response bytes the event loop could not write yet.
    pending: Vec<u8>,
    /// Close once `pending` is written.
    close_after: bool,
    /// The event loop is waiting on this connection's upstream.
    busy: bool,
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
    /// Each listener's TLS, by listener index.
    tls: Vec<Option<Arc<rustls::ServerConfig>>>,
    shutdown: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    busy: AtomicUsize,
    /// Connections handed to workers and not yet picked up.
    queued: AtomicUsize,
    /// Workers waiting for a connection.
    idle: AtomicUsize,
    back: Sender<Conn>,
    waker: Waker,
    /// Upgraded connections (WebSockets), each on its own thread.
    tunnels: tunnel::Tunnels,
    /// Every answered request is counted here (`Metrics::finish`).
    metrics: Arc<Metrics>,
}

/// Runs until `shutdown` is set, then drains in-flight requests (at most
/// 10 s) and returns.
pub fn serve(
    cfg: ServerConfig,
    listeners: Vec<Listener>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
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
        tls: listeners.iter().map(|l| l.tls.clone()).collect(),
        cfg,
        shutdown,
        open: metrics.open.clone(),
        busy: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        back: back_tx,
        waker,
        tunnels: tunnel::Tunnels::default(),
        metrics,
    });
    let (job_tx, job_rx) = crossbeam_channel::unbounded::<Job>();
    let workers: Vec<_> = (0..shared.cfg.workers.max(1))
        .map(|i| {
            let (shared, jobs) = (shared.clone(), job_rx.clone());
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker::worker(&shared, &jobs))
        })
        .collect::<Result<_, _>>()?;
    let mut room = WaitingRoom::new(poll, listeners, shared.clone(), job_tx, back_rx, max_open);
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
