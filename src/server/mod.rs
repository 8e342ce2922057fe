//! Listeners, the event loop (the "waiting room") and the worker pool;
//! sockets end here.
//!
//! The waiting rooms (`room`, mio; `event_loops` of them, each on its own
//! thread) accept connections and hold every connection that is idle or still sending its head. When a whole
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

use log::{error, info, warn};
use mio::{Poll, Token, Waker};

use crate::config::ServerConfig;
use crate::http::codec::{RequestHead, ResponseHead};
use crate::http::{Request, Response, Stream, Version, Wire};
use crate::metrics::{Arrival, Metrics, method_index};
use crate::pipeline::{Parked, Prepared};
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

    /// What each event loop running this handler drives beside its
    /// connections (made on the loop's thread; the first handler of a
    /// server that offers one is used: they share one gateway).
    fn sidecar(&self) -> Option<Box<dyn Sidecar>> {
        None
    }
}

/// A client an event loop drives for the handlers it runs, so they can
/// use a remote service without blocking the loop (cluster mode's Redis
/// link). Every call is on the loop's thread.
pub trait Sidecar: Send {
    /// Connects, registering its socket with `token`.
    fn start(&mut self, registry: &mio::Registry, token: Token);
    /// Its socket is ready.
    fn ready(&mut self, registry: &mio::Registry, token: Token);
    /// The end of a loop round: sends what the handlers queued during it.
    fn flush(&mut self, registry: &mio::Registry, token: Token);
}

/// What the waiting room does with a request a worker did not handle.
pub(crate) enum Job {
    /// Parse and serve what the connection has buffered.
    Serve(Conn),
    /// A parsed request whose handling may block; with `stay`, the
    /// worker serves the connection's next requests too (`Prepared::Work`).
    Deferred(Conn, RequestHead, Meta, bool),
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
/// The loop's `Sidecar`.
const SIDECAR: Token = Token(usize::MAX - 1);
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

    /// The same listening socket for another event loop: every loop
    /// accepts on it.
    fn share(&self) -> io::Result<Listener> {
        Ok(Listener {
            socket: self.socket.try_clone()?,
            handler: self.handler.clone(),
            tls: self.tls.clone(),
        })
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
    /// The event loop that owns it (it goes back there from a worker).
    room: usize,
    /// When it last became idle (accepted, or handed back).
    idle_since: Instant,
    /// When the first byte of the current head arrived.
    head_started: Option<Instant>,
    /// Response bytes the event loop could not write yet.
    pending: Vec<u8>,
    /// Close once `pending` is written.
    close_after: bool,
    /// The event loop is waiting on this connection's upstream, or on
    /// the shared counters for its request.
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
    /// Each event loop's inbox, by index.
    rooms: Vec<RoomLink>,
    /// Which loop takes the next accepted connection (round robin).
    next_room: AtomicUsize,
    /// Upgraded connections (WebSockets), each on its own thread.
    tunnels: tunnel::Tunnels,
    /// Every answered request is counted here (`Metrics::finish`).
    metrics: Arc<Metrics>,
}

/// How connections reach an event loop from another thread.
struct RoomLink {
    inbox: Sender<Inbound>,
    waker: Waker,
    /// A wake is on its way: senders until the loop drains its inbox
    /// need not wake it again (a batch of answers costs one wake).
    woken: AtomicBool,
}

thread_local! {
    /// The event loop this thread runs, if it runs one.
    static ON_ROOM: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

/// A connection arriving at an event loop from another thread (or from
/// the loop itself: an answer its Redis link read, a connection it dealt
/// to itself).
pub(crate) enum Inbound {
    /// Handed back by a worker after a request.
    Back(Conn),
    /// Just accepted by another loop, assigned to this one.
    New(Conn),
    /// A request of the loop's connection `token` with the shared
    /// counters' answer (`Prepared::Count`); `body` bytes of it are still
    /// buffered on the connection.
    Counted {
        room: usize,
        token: mio::Token,
        parked: Box<Parked>,
        meta: Meta,
        body: usize,
    },
}

impl Shared {
    /// Puts `conn` in its loop's inbox and wakes the loop; false (the
    /// connection dropped, so closed) when the loop is gone.
    fn send_to_room(&self, inbound: Inbound) -> bool {
        let room = match &inbound {
            Inbound::Back(c) | Inbound::New(c) => c.room,
            Inbound::Counted { room, .. } => *room,
        };
        let link = &self.rooms[room];
        if link.inbox.send(inbound).is_err() {
            return false;
        }
        // The loop itself drains its inbox before it waits again.
        if ON_ROOM.get() == Some(room) {
            return true;
        }
        if !link.woken.swap(true, Ordering::SeqCst) {
            let _ = link.waker.wake();
        }
        true
    }
}

/// Runs until `shutdown` is set, then drains in-flight requests (at most
/// 10 s) and returns.
pub fn serve(
    cfg: ServerConfig,
    listeners: Vec<Listener>,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) -> io::Result<()> {
    let max_open = connection_cap(cfg.max_connections);
    let loops = cfg.event_loops.max(1);
    info!(
        "server: {loops} event loops, {} workers, at most {max_open} connections",
        cfg.workers
    );
    let mut polls = Vec::with_capacity(loops);
    let mut links = Vec::with_capacity(loops);
    let mut inboxes = Vec::with_capacity(loops);
    for _ in 0..loops {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let (inbox, rx) = crossbeam_channel::unbounded();
        polls.push(poll);
        links.push(RoomLink {
            inbox,
            waker,
            woken: AtomicBool::new(false),
        });
        inboxes.push(rx);
    }
    let shared = Arc::new(Shared {
        handlers: listeners.iter().map(|l| l.handler.clone()).collect(),
        tls: listeners.iter().map(|l| l.tls.clone()).collect(),
        cfg,
        shutdown,
        open: metrics.open.clone(),
        busy: AtomicUsize::new(0),
        queued: AtomicUsize::new(0),
        idle: AtomicUsize::new(0),
        rooms: links,
        next_room: AtomicUsize::new(0),
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
    // Loop 0 runs on this thread with the listeners as bound; the others
    // on their own threads, each with its own handle of the same sockets.
    let mut sets = vec![listeners];
    for _ in 1..loops {
        sets.push(
            sets[0]
                .iter()
                .map(Listener::share)
                .collect::<io::Result<_>>()?,
        );
    }
    let mut others = Vec::with_capacity(loops - 1);
    let mut first = None;
    for (i, ((poll, inbox), own)) in polls.into_iter().zip(inboxes).zip(sets).enumerate() {
        let room = WaitingRoom::new(
            i,
            poll,
            own,
            shared.clone(),
            job_tx.clone(),
            inbox,
            max_open,
        );
        if i == 0 {
            first = Some(room);
            continue;
        }
        let handle = thread::Builder::new()
            .name(format!("loop-{i}"))
            .spawn(move || {
                let mut room = room;
                if let Err(e) = room.run() {
                    error!("server: event loop {i} failed: {e}");
                }
            })?;
        others.push(handle);
    }
    drop(job_tx);
    let mut room = first.expect("at least one event loop");
    let result = room.run();
    drop(room);
    if result.is_err() {
        shared.shutdown.store(true, Ordering::SeqCst);
    }
    for handle in others {
        handle.join().ok();
    }
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
    result
}

/// The connection cap: configured, or half the fd limit (raised first).
fn connection_cap(configured: usize) -> usize {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if configured > 0 {
        return configured;
    }
    usize::try_from(limit / 2).unwrap_or(usize::MAX).max(16)
}
