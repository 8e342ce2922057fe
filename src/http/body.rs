//! Buffered connections and message bodies: `Wire` owns a socket and the bytes
//! read ahead from it; `BodyReader` decodes one body (Content-Length, chunked
//! or until close) from a `Wire`; `ChunkedWriter` encodes one. Heads are in
//! `codec`; what a body means is the caller's business.

use std::cell::RefCell;
use std::io::{self, Read, Write};

use super::codec::Limits;
use super::message::Framing;

/// Most bytes one `fill` reads. A non-blocking `fill` that returns fewer
/// has drained the socket for now.
pub const READ_CHUNK: usize = 16 * 1024;
/// Buffer capacity an empty `Wire` keeps between messages.
const KEEP_CAPACITY: usize = 8 * 1024;

/// Bytes one `copy_body` step moves.
const COPY_CHUNK: usize = 32 * 1024;

thread_local! {
    /// Per-thread scratch buffers, zeroed once per thread rather than once
    /// per read (a 16 KiB memset per request is measurable). One for
    /// `Wire::fill`, one for body copies (whose reads may fill a `Wire`).
    static FILL_SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
    static COPY_SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; COPY_CHUNK]);
}

/// Runs `f` on a `len`-byte scratch buffer of `scratch` (a fresh one if the
/// thread's is in use).
fn with_scratch<R>(
    scratch: &'static std::thread::LocalKey<RefCell<Vec<u8>>>,
    len: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> R {
    scratch.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) if buf.len() >= len => f(&mut buf[..len]),
        _ => f(&mut vec![0; len]),
    })
}

/// A stream plus the bytes already read from it but not yet consumed.
pub struct Wire<S> {
    pub stream: S,
    buf: Vec<u8>,
    start: usize,
}

impl<S: Read> Wire<S> {
    pub fn new(stream: S) -> Wire<S> {
        Wire {
            stream,
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Bytes read ahead and not consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Marks `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP_CAPACITY {
                self.buf.shrink_to(KEEP_CAPACITY);
            }
        }
    }

    /// Reads once more from the stream into the buffer, keeping at most
    /// `cap` buffered bytes. Returns how many bytes arrived (0 = EOF).
    pub fn fill(&mut self, cap: usize) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let room = cap.saturating_sub(self.buf.len()).min(READ_CHUNK);
        if room == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "read-ahead limit reached",
            ));
        }
        // Read into scratch and append: the buffer grows only by what
        // arrives, so a thousand idle connections stay small.
        let (stream, buf) = (&mut self.stream, &mut self.buf);
        with_scratch(&FILL_SCRATCH, room, |chunk| {
            let n = stream.read(chunk)?;
            buf.extend_from_slice(&chunk[..n]);
            Ok(n)
        })
    }

    /// Reads until `ready(buffered)` holds or EOF; false on EOF.
    pub fn fill_until(&mut self, cap: usize, ready: impl Fn(&[u8]) -> bool) -> io::Result<bool> {
        while !ready(self.buffered()) {
            if self.fill(cap)? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads into `out`, from the buffer first, else straight from the stream.
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let ahead = self.buffered();
        if !ahead.is_empty() {
            let n = ahead.len().min(out.len());
            out[..n].copy_from_slice(&ahead[..n]);
            self.consume(n);
            return Ok(n);
        }
        self.stream.read(out)
    }
}

/// Where a body decoder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Bytes left of a Content-Length body or of the current chunk.
    Data {
        left: u64,
        chunked: bool,
    },
    /// Expecting a chunk-size line.
    ChunkSize,
    /// Expecting the CRLF after chunk data.
    ChunkEnd,
    /// Reading the trailer section after the last chunk.
    Trailers,
    /// Until the peer closes.
    UntilClose,
    Done,
    /// A read failed (framing error, timeout, EOF): the body can never be
    /// finished and the connection must close.
    Failed,
}

/// Decodes one body from a wire. `Read` yields the payload; errors of kind
/// `InvalidData` are framing violations (the connection must close).
pub struct BodyReader<'a, S> {
    wire: &'a mut Wire<S>,
    state: State,
    limits: &'a Limits,
    /// Send `100 Continue` before the first read from the stream.
    continue_pending: bool,
    /// Payload bytes read so far.
    pub read: u64,
}

impl<'a, S: Read + Write> BodyReader<'a, S> {
    pub fn new(wire: &'a mut Wire<S>, framing: Framing, limits: &'a Limits) -> BodyReader<'a, S> {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Data {
                left: n,
                chunked: false,
            },
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        BodyReader {
            wire,
            state,
            limits,
            continue_pending: false,
            read: 0,
        }
    }

    /// Answers `Expect: 100-continue` when the body is first read.
    pub fn expect_continue(mut self, yes: bool) -> Self {
        self.continue_pending = yes && self.state != State::Done;
        self
    }

    /// The whole body has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The stream under the body, to answer on while the body is unread.
    pub fn stream(&mut self) -> &mut S {
        &mut self.wire.stream
    }

    /// Whether `drain(max)` can possibly finish: the body is done, or what
    /// is left is not known to be larger than `max` and may still be read.
    pub fn may_drain(&self, max: u64) -> bool {
        match self.state {
            State::Done => true,
            State::Failed | State::UntilClose => false,
            State::Data {
                left,
                chunked: false,
            } => left <= max && !self.continue_pending,
            _ => !self.continue_pending,
        }
    }

    /// Reads and drops what is left, up to `max` bytes; true if it finished.
    pub fn drain(&mut self, max: u64) -> bool {
        if self.is_done() {
            return true;
        }
        if self.continue_pending || self.state == State::Failed {
            return false;
        }
        let mut sink = [0u8; 8192];
        let start = self.read;
        while !self.is_done() && self.read - start <= max {
            match self.read(&mut sink) {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        self.is_done()
    }

    fn send_continue(&mut self) -> io::Result<()> {
        if self.continue_pending {
            self.continue_pending = false;
            if self.wire.buffered().is_empty() {
                self.wire
                    .stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
        }
        Ok(())
    }

    fn read_data(&mut self, out: &mut [u8], left: u64, chunked: bool) -> io::Result<usize> {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(out.len());
        let n = self.wire.read_some(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        let left = left - n as u64;
        self.state = match (left, chunked) {
            (0, true) => State::ChunkEnd,
            (0, false) => State::Done,
            (left, chunked) => State::Data { left, chunked },
        };
        Ok(n)
    }

    /// Reads one CRLF-terminated line, without the CRLF, within `max` bytes.
    fn line(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let cap = max + 2;
        let found = self
            .wire
            .fill_until(cap, |b| b.contains(&b'\n') || b.len() >= cap)?;
        let ahead = self.wire.buffered();
        let Some(nl) = ahead.iter().position(|&b| b == b'\n') else {
            let why = if found {
                "chunk line too long"
            } else {
                "body cut short"
            };
            return Err(invalid(why));
        };
        if nl > max + 1 {
            return Err(invalid("chunk line too long"));
        }
        if nl == 0 || ahead[nl - 1] != b'\r' || ahead[..nl - 1].contains(&b'\r') {
            return Err(invalid("bare LF or CR in chunked body"));
        }
        let line = ahead[..nl - 1].to_vec();
        self.wire.consume(nl + 1);
        Ok(line)
    }

    fn chunk_size(&mut self) -> io::Result<()> {
        let max = 16 + self.limits.max_chunk_ext;
        let line = self.line(max)?;
        let size = parse_chunk_line(&line, self.limits.max_chunk_ext)?;
        self.state = if size == 0 {
            State::Trailers
        } else {
            State::Data {
                left: size,
                chunked: true,
            }
        };
        Ok(())
    }

    fn chunk_end(&mut self) -> io::Result<()> {
        if !self.line(0)?.is_empty() {
            return Err(invalid("chunk data longer than its size"));
        }
        self.state = State::ChunkSize;
        Ok(())
    }

    fn trailers(&mut self) -> io::Result<()> {
        let mut total = 0;
        loop {
            let line = self.line(self.limits.max_header_line)?;
            if line.is_empty() {
                self.state = State::Done;
                return Ok(());
            }
            total += line.len();
            if total > self.limits.max_head || line.iter().any(|&b| b < 0x20 && b != b'\t') {
                return Err(invalid("bad trailer section"));
            }
        }
    }
}

impl<S: Read + Write> Read for BodyReader<'_, S> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let result = self.read_inner(out);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }
}

impl<S: Read + Write> BodyReader<'_, S> {
    fn read_inner(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.state == State::Failed {
            return Err(invalid("body already failed"));
        }
        self.send_continue()?;
        loop {
            let n = match self.state {
                State::Done => return Ok(0),
                State::Failed => return Err(invalid("body already failed")),
                State::Data { left, chunked } => self.read_data(out, left, chunked)?,
                State::UntilClose => {
                    let n = self.wire.read_some(out)?;
                    if n == 0 {
                        self.state = State::Done;
                    }
                    n
                }
                State::ChunkSize => {
                    self.chunk_size()?;
                    continue;
                }
                State::ChunkEnd => {
                    self.chunk_end()?;
                    continue;
                }
                State::Trailers => {
                    self.trailers()?;
                    continue;
                }
            };
            self.read += n as u64;
            return Ok(n);
        }
    }
}

fn invalid(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// A chunk-size line: 1 to 16 hex digits, then optionally `;` extensions of
/// at most `max_ext` bytes. Parsed by httparse after our stricter checks.
fn parse_chunk_line(line: &[u8], max_ext: usize) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(invalid("chunk size is not 1 to 16 hex digits"));
    }
    let ext = &line[digits..];
    let ext_ok = ext.is_empty()
        || (ext.trim_ascii_start().first() == Some(&b';')
            && ext.len() <= max_ext
            && ext.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
    if !ext_ok {
        return Err(invalid("bad chunk extension"));
    }
    let mut with_crlf = line.to_vec();
    with_crlf.extend_from_slice(b"\r\n");
    match httparse::parse_chunk_size(&with_crlf) {
        Ok(httparse::Status::Complete((_, size))) => Ok(size),
        _ => Err(invalid("chunk size line")),
    }
}

/// Encodes writes as chunks; `finish` writes the last chunk.
pub struct ChunkedWriter<W: Write> {
    pub inner: W,
}

impl<W: Write> ChunkedWriter<W> {
    pub fn finish(mut self) -> io::Result<W> {
        self.inner.write_all(b"0\r\n\r\n")?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ChunkedWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if data.is_empty() {
            return Ok(0);
        }
        let mut head = format!("{:x}\r\n", data.len()).into_bytes();
        head.extend_from_slice(data);
        head.extend_from_slice(b"\r\n");
        self.inner.write_all(&head)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies a body in fixed-size pieces: memory does not grow with the body.
pub fn copy_body(from: &mut dyn Read, to: &mut dyn Write) -> io::Result<u64> {
    with_scratch(&COPY_SCRATCH, COPY_CHUNK, |buf| {
        let mut total = 0u64;
        loop {
            let n = from.read(buf)?;
            if n == 0 {
                return Ok(total);
            }
            to.write_all(&buf[..n])?;
            total += n as u64;
        }
    })
}

/// Copies from `from` to `to` in `copy_body`'s pieces, telling apart which
/// side failed: Err(Ok(e)) reading, Err(Err(e)) writing.
pub fn copy_sides(
    from: &mut dyn Read,
    to: &mut dyn Write,
) -> Result<(), Result<io::Error, io::Error>> {
    with_scratch(&COPY_SCRATCH, COPY_CHUNK, |buf| {
        loop {
            let n = from.read(buf).map_err(Ok)?;
            if n == 0 {
                return Ok(());
            }
            to.write_all(&buf[..n]).map_err(Err)?;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A duplex for tests: reads from `input`, records writes.
    struct Duplex {
        input: Cursor<Vec<u8>>,
        written: Vec<u8>,
    }

    impl Read for Duplex {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl Write for Duplex {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wire(input: &str) -> Wire<Duplex> {
        Wire::new(Duplex {
            input: Cursor::new(input.as_bytes().to_vec()),
            written: Vec::new(),
        })
    }

    fn decode(input: &str, framing: Framing) -> io::Result<(Vec<u8>, String)> {
        let limits = Limits::default();
        let mut w = wire(input);
        let mut out = Vec::new();
        BodyReader::new(&mut w, framing, &limits).read_to_end(&mut out)?;
        let rest = String::from_utf8_lossy(w.buffered()).into_owned();
        Ok((out, rest))
    }

    #[test]
    fn length_body_stops_at_length() {
        let (body, _) = decode("hello world", Framing::Length(5)).unwrap();
        assert_eq!(body, b"hello");
    }

    #[test]
    fn length_body_cut_short_is_an_error() {
        assert!(decode("hel", Framing::Length(5)).is_err());
    }

    #[test]
    fn chunked_body_decodes_with_extensions_and_trailers() {
        let (body, rest) = decode(
            "3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nT: v\r\n\r\nNEXT",
            Framing::Chunked,
        )
        .unwrap();
        assert_eq!(body, b"abcde");
        assert_eq!(rest, "NEXT");
    }

    #[test]
    fn bad_chunk_sizes_are_refused() {
        for bad in [
            "+3\r\nabc\r\n0\r\n\r\n",
            " 3\r\nabc\r\n0\r\n\r\n",
            "0x3\r\nabc\r\n0\r\n\r\n",
            "11111111111111111\r\na\r\n0\r\n\r\n",
            "3\nabc\r\n0\r\n\r\n",
            "3\r\nabcd\r\n0\r\n\r\n",
            "3 x\r\nabc\r\n0\r\n\r\n",
        ] {
            assert!(decode(bad, Framing::Chunked).is_err(), "{bad:?}");
        }
        let long_ext = format!("3;{}\r\nabc\r\n0\r\n\r\n", "e".repeat(5000));
        assert!(decode(&long_ext, Framing::Chunked).is_err());
    }

    #[test]
    fn a_failed_body_stays_failed() {
        let limits = Limits::default();
        let mut w = wire("+3\r\nabc\r\n0\r\n\r\n");
        let mut body = BodyReader::new(&mut w, Framing::Chunked, &limits);
        let mut buf = [0u8; 16];
        assert!(body.read(&mut buf).is_err());
        assert!(body.read(&mut buf).is_err());
        assert!(!body.drain(1024));
    }

    #[test]
    fn continue_is_sent_on_first_read_only() {
        let limits = Limits::default();
        let mut w = wire("abc");
        let mut body = Vec::new();
        BodyReader::new(&mut w, Framing::Length(3), &limits)
            .expect_continue(true)
            .read_to_end(&mut body)
            .unwrap();
        assert_eq!(w.stream.written, b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn chunked_writer_round_trips() {
        let mut enc = ChunkedWriter { inner: Vec::new() };
        enc.write_all(b"hello").unwrap();
        let bytes = enc.finish().unwrap();
        let (body, _) = decode(std::str::from_utf8(&bytes).unwrap(), Framing::Chunked).unwrap();
        assert_eq!(body, b"hello");
    }
}
