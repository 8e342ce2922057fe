//! Chunked body decoder (`BodyReader` with `Framing::Chunked`) over a fake
//! socket that yields the fuzz input and swallows writes.
//!
//! Properties:
//! - no panic, and memory bounded by the limits (a chunk-size line or a
//!   trailer line is never buffered past its limit);
//! - the decoded payload is never longer than the bytes on the wire, and the
//!   reader's `read` counter agrees with what it returned;
//! - on success the decoder says it is done;
//! - round trip: whatever `ChunkedWriter` encodes, in pieces of any size,
//!   decodes back to the same bytes.
#![no_main]

use std::io::{self, Cursor, Read, Write};

use gatehouse::http::{BodyReader, ChunkedWriter, Framing, Limits, Wire};
use libfuzzer_sys::fuzz_target;

/// A "socket": reads come from the input, at most `step` bytes at a time
/// (short reads are the norm on a real socket); writes (`100 Continue`) vanish.
struct FakeConn<'a> {
    input: Cursor<&'a [u8]>,
    step: usize,
}

impl Read for FakeConn<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = out.len().min(self.step);
        self.input.read(&mut out[..n])
    }
}

impl Write for FakeConn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn tight() -> Limits {
    Limits {
        max_request_line: 64,
        max_header_line: 48,
        max_head: 256,
        max_headers: 4,
        max_chunk_ext: 8,
    }
}

/// Decodes `wire` as one chunked body; the payload and whether it ended well.
fn decode(wire: &[u8], limits: &Limits, step: usize, expect_continue: bool) -> (Vec<u8>, bool) {
    let mut conn = Wire::new(FakeConn {
        input: Cursor::new(wire),
        step,
    });
    let mut body =
        BodyReader::new(&mut conn, Framing::Chunked, limits).expect_continue(expect_continue);
    let mut out = Vec::new();
    let ok = body.read_to_end(&mut out).is_ok();
    assert!(
        out.len() <= wire.len(),
        "decoded {} bytes from {} on the wire",
        out.len(),
        wire.len()
    );
    assert_eq!(body.read, out.len() as u64, "read counter");
    if ok {
        assert!(
            body.is_done(),
            "read_to_end succeeded before the last chunk"
        );
    }
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    // The whole input as a chunked body: in one read and in 7-byte reads,
    // under the default and tight limits. The outcome must not depend on how
    // the bytes were split into reads.
    for limits in [Limits::default(), tight()] {
        let whole = decode(data, &limits, usize::MAX, false);
        let split = decode(data, &limits, 7, true);
        assert_eq!(whole, split, "result depends on read boundaries");
    }

    // Round trip through the encoder, with piece sizes taken from the input.
    let mut encoded = ChunkedWriter { inner: Vec::new() };
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let n = (usize::from(data[i % data.len()]) % 64 + 1).min(rest.len());
        encoded.write_all(&rest[..n]).unwrap();
        rest = &rest[n..];
        i += 1;
    }
    let encoded = encoded.finish().unwrap();
    let (back, ok) = decode(&encoded, &Limits::default(), usize::MAX, false);
    assert!(ok, "our own chunked encoding was refused");
    assert_eq!(back, data, "round trip changed the payload");
});
