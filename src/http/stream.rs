//! `Stream`: a TCP connection, plain or wrapped in TLS (rustls), with the
//! same `Read`/`Write` whether its socket is blocking (workers, the
//! upstream client) or not (the event loop).
//!
//! rustls is sans-I/O: a TLS stream moves records between its socket and
//! the session here. Non-blocking, a `read` reads records until some
//! plaintext is ready or the socket would block; a `write` hands plaintext
//! to the session and sends what the socket takes, so ciphertext may stay
//! behind: `flush_pending` sends it, and `wants_write` says whether any is
//! left (the event loop then waits for the socket to become writable).
//! Unlike a plain socket, a short read does not mean the socket is
//! drained (`drains_on_short_read`).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// A client or upstream connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

/// A TLS session and its socket.
pub struct Tls {
    pub conn: rustls::Connection,
    pub sock: TcpStream,
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream::Plain(s)
    }
}

impl Stream {
    pub fn tls(conn: impl Into<rustls::Connection>, sock: TcpStream) -> Stream {
        Stream::Tls(Box::new(Tls {
            conn: conn.into(),
            sock,
        }))
    }

    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        self.tcp().set_nonblocking(on)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(t)
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Ends the connection: a TLS session says `close_notify` first (best
    /// effort, never blocking for long).
    pub fn shutdown(&mut self) {
        if let Stream::Tls(t) = self {
            t.conn.send_close_notify();
            let _ = t.conn.write_tls(&mut t.sock);
        }
        let _ = self.tcp().shutdown(Shutdown::Both);
    }

    /// Plain: a read shorter than asked means the socket is drained for
    /// now. TLS: never assume so; read until `WouldBlock`.
    pub fn drains_on_short_read(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    /// Whether decrypted bytes wait in the session (a poll on the socket
    /// would not see them).
    pub fn has_plaintext(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t
                .conn
                .process_new_packets()
                .is_ok_and(|s| s.plaintext_bytes_to_read() > 0),
        }
    }

    /// Whether TLS records wait to be sent.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.conn.wants_write(),
        }
    }

    /// Sends waiting TLS records; Ok(true) when none are left, Ok(false)
    /// when the (non-blocking) socket would block.
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        let Stream::Tls(t) = self else {
            return Ok(true);
        };
        while t.conn.wants_write() {
            match t.conn.write_tls(&mut t.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Drives a (blocking) handshake to its end: for clients, so that a
    /// certificate error is reported as such before any request is sent.
    pub fn handshake(&mut self) -> io::Result<()> {
        let Stream::Tls(t) = self else {
            return Ok(());
        };
        while t.conn.is_handshaking() {
            t.conn.complete_io(&mut t.sock)?;
        }
        Ok(())
    }
}

impl Tls {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed without close_notify: an end of stream,
                // as on a plain socket (HTTP frames its own messages).
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Handshake replies and alerts go out before waiting for more.
            self.send_some()?;
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (an alert), then fail.
                self.send_some()?;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            self.send_some()?;
        }
    }

    /// Sends what the socket takes now; a full socket is not an error.
    fn send_some(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Earlier records first; if the socket is still full, so is this
        // stream (non-blocking callers wait for writable).
        self.send_some()?;
        if self.conn.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.writer().write(buf)?;
        self.send_some()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        while self.conn.wants_write() {
            self.conn.write_tls(&mut self.sock)?;
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tcp().as_fd()
    }
}
