//! Watching the gateway from outside for the hardening tests (issue 4):
//! its thread, fd and memory counts from /proc, and exchanges that read a
//! socket to its end and say whether the server closed it.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::http::{Resp, connect, parse_response};

/// A `Key:  value kB` field of /proc/<pid>/status, as a number.
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Threads of process `pid`.
pub fn threads(pid: u32) -> usize {
    status_field(pid, "Threads").unwrap_or(0) as usize
}

/// Open file descriptors of process `pid`.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of `pid`, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_field(pid, "VmRSS").unwrap_or(0)
}

/// Virtual size of `pid`, KiB.
pub fn vm_size_kib(pid: u32) -> u64 {
    status_field(pid, "VmSize").unwrap_or(0)
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S …`: the state follows the last `)`.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Thread and fd counts at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    pub threads: usize,
    pub fds: usize,
}

pub fn usage(pid: u32) -> Usage {
    Usage {
        threads: threads(pid),
        fds: fds(pid),
    }
}

/// Thread and fd counts once three readings 50 ms apart agree (at most
/// 3 s), so that connections just closed by a client are gone.
pub fn settled(pid: u32) -> Usage {
    let mut last = usage(pid);
    let mut same = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while same < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        let now = usage(pid);
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    last
}

/// What came back on one connection.
#[derive(Debug)]
pub struct Outcome {
    pub bytes: Vec<u8>,
    /// The server closed (EOF or reset) before the deadline.
    pub closed: bool,
    /// From the end of our write to the close (or the deadline).
    pub elapsed: Duration,
}

impl Outcome {
    /// The status of the first response, if a status line arrived.
    pub fn status(&self) -> Option<u16> {
        let line = self.bytes.split(|&b| b == b'\n').next()?;
        let text = std::str::from_utf8(line).ok()?;
        let mut parts = text.split(' ');
        if !parts.next()?.starts_with("HTTP/1.") {
            return None;
        }
        parts.next()?.parse().ok()
    }

    /// The first response, parsed as if the connection ended here.
    pub fn response(&self) -> Result<Resp, String> {
        match parse_response(&self.bytes, false, true)? {
            Some((r, _)) => Ok(r),
            None => Err("no response".into()),
        }
    }

    /// Everything received, lossy UTF-8 (for messages).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.bytes.len().min(600)]).into_owned()
    }
}

/// Reads until the peer closes or `within` passes.
pub fn read_to_close(stream: &mut TcpStream, within: Duration) -> Outcome {
    let start = Instant::now();
    let deadline = start + within;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break false;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .ok();
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => break true,
        }
    };
    Outcome {
        bytes,
        closed,
        elapsed: start.elapsed(),
    }
}

/// Opens a connection, sends `bytes` (a write error is not fatal: the
/// server may answer and close first), and reads until close or `within`.
pub fn exchange(port: u16, bytes: &[u8], within: Duration) -> Outcome {
    let mut s = connect(port);
    let _ = s.write_all(bytes);
    let _ = s.flush();
    read_to_close(&mut s, within)
}

/// Reads one response from `stream` (bytes left over stay in `buf`);
/// None when the peer closed or `within` passed first.
pub fn read_one(stream: &mut TcpStream, buf: &mut Vec<u8>, within: Duration) -> Option<Resp> {
    let deadline = Instant::now() + within;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if let Ok(Some((resp, used))) = parse_response(buf, false, false) {
            buf.drain(..used);
            return Some(resp);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        stream
            .set_read_timeout(Some(left.min(Duration::from_millis(200))))
            .ok();
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
}
