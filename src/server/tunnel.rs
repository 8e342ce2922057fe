//! Upgraded connections (WebSockets): after a `101` the upstream agreed to,
//! bytes are relayed both ways until either side closes or nothing moves
//! for the idle timeout. Each tunnel has a thread of its own, so a
//! long-lived socket never holds a worker; their number is capped.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use log::debug;
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::http::{Stream, Upgraded};

/// Tunnels open at once, at most.
pub const MAX_TUNNELS: usize = 1024;

/// Open tunnels.
#[derive(Default)]
pub struct Tunnels {
    open: Arc<AtomicUsize>,
}

impl Tunnels {
    /// Relays between `client` (with `early` bytes it already sent) and
    /// `up` on a new thread. Err when the cap is reached or no thread
    /// could start; the caller closes both.
    pub fn start(
        &self,
        mut client: Stream,
        early: Vec<u8>,
        up: Upgraded,
        idle: Duration,
    ) -> io::Result<()> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= MAX_TUNNELS {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(io::Error::other("too many open tunnels"));
        }
        let open = self.open.clone();
        let Upgraded {
            stream: mut upstream,
            buffered,
        } = up;
        let spawned = std::thread::Builder::new()
            .name("gatehouse-tunnel".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Err(e) = relay(&mut client, &early, &mut upstream, &buffered, idle) {
                    debug!("tunnel: {e}");
                }
                client.shutdown();
                upstream.shutdown();
                open.fetch_sub(1, Ordering::SeqCst);
            });
        spawned.map(drop).inspect_err(|_| {
            self.open.fetch_sub(1, Ordering::SeqCst);
        })
    }
}

/// Copies bytes both ways until a side closes, an error, or `idle`.
fn relay(
    client: &mut Stream,
    early: &[u8],
    upstream: &mut Stream,
    late: &[u8],
    idle: Duration,
) -> io::Result<()> {
    // Reads only follow a poll, but a TLS record may arrive in parts: a
    // peer that stops mid-record is cut off after `idle`, not waited on.
    let bound = Some(idle.max(Duration::from_secs(1)));
    for s in [&*client, &*upstream] {
        s.set_nonblocking(false)?;
        s.set_read_timeout(bound)?;
        s.set_write_timeout(bound)?;
    }
    upstream.write_all(early)?;
    upstream.flush()?;
    client.write_all(late)?;
    client.flush()?;
    let timeout = Timespec::try_from(idle).ok();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Bytes a TLS session already decrypted never show up in a poll.
        let (c_ready, u_ready) = (client.has_plaintext(), upstream.has_plaintext());
        let (c, u) = if c_ready || u_ready {
            (c_ready, u_ready)
        } else {
            let mut fds = [
                PollFd::new(&*client, PollFlags::IN),
                PollFd::new(&*upstream, PollFlags::IN),
            ];
            let ready = poll(&mut fds, timeout.as_ref()).map_err(io::Error::from)?;
            if ready == 0 {
                debug!("tunnel: idle for {} s, closing", idle.as_secs());
                return Ok(());
            }
            let any = PollFlags::IN | PollFlags::HUP | PollFlags::ERR;
            (
                fds[0].revents().intersects(any),
                fds[1].revents().intersects(any),
            )
        };
        if c && !pump(client, upstream, &mut buf)? {
            return Ok(());
        }
        if u && !pump(upstream, client, &mut buf)? {
            return Ok(());
        }
    }
}

/// One read from `from`, written whole to `to`; false at end of stream.
fn pump(from: &mut Stream, to: &mut Stream, buf: &mut [u8]) -> io::Result<bool> {
    let n = from.read(buf)?;
    if n == 0 {
        return Ok(false);
    }
    to.write_all(&buf[..n])?;
    to.flush()?;
    Ok(true)
}
