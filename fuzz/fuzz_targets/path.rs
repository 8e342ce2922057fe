//! Request paths through `http::path`: the always-400 checks, the routing
//! key, and the forwarded form under each escaped-slash switch.
//!
//! Properties:
//! - no panic, whatever the bytes (paths are UTF-8 once httparse has them;
//!   other inputs are tried lossily so byte mutations stay useful);
//! - the routing key starts with `/` and never holds a `.` or `..`
//!   segment, an empty segment (`//`), a `;`, a `\` or a raw non-ASCII byte;
//! - the key is a fixed point: making it canonical again changes nothing
//!   and it passes the checks (idempotent);
//! - a path found already canonical is its own key;
//! - a forwarded form, when one is given, routes exactly where the key does.
#![no_main]

use gatehouse::http::path::{EscapedSlashes, canonicalize, forwarded};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(c) = canonicalize(&text) else {
        return;
    };
    let key = c.key.as_ref();
    assert!(key.starts_with('/'), "key {key:?}");
    let last = key.split('/').count() - 1;
    for (i, seg) in key.split('/').enumerate().skip(1) {
        assert!(seg != "." && seg != "..", "dot segment in {key:?}");
        assert!(!seg.is_empty() || i == last, "empty segment in {key:?}");
    }
    assert!(
        key.bytes().all(|b| b.is_ascii() && b != b';' && b != b'\\'),
        "key {key:?}"
    );
    let again = canonicalize(key).expect("a key passes the checks");
    assert_eq!(again.key, key, "not idempotent");
    if c.is_clean() {
        assert_eq!(key, text.as_ref());
    }
    for slashes in [
        EscapedSlashes::Reject,
        EscapedSlashes::Decode,
        EscapedSlashes::Keep,
    ] {
        if let Ok(f) = forwarded(&c, slashes) {
            let routed = canonicalize(&f.path).expect("a forwarded path passes the checks");
            assert_eq!(routed.key, key, "forwarded {:?} routes elsewhere", f.path);
        }
    }
});
