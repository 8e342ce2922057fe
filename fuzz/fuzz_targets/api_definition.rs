//! Tyk Classic API definitions (`apps/*.json`) through `ApiSpec::from_json`,
//! then the compiled listen path and target as the proxy uses them.
//!
//! Properties:
//! - `from_json` never panics, whatever the JSON;
//! - for a definition that loads, routing a request path to it never panics
//!   (`proxy::rest_of_path`, `listen_stripped`, `strip_aligned` and
//!   `upstream_target` slice the path at the matched length), a match never
//!   covers more of the path than there is nor ends inside a character, and
//!   the listen path matches its own text (an API unreachable at its own
//!   listen path is a routing bug).
//!
//! The request paths tried are fixed ones plus the definition's `name`, so
//! the fuzzer controls a path too without a second input format.
#![no_main]

use std::path::Path;

use gatehouse::apidef::ApiSpec;
use gatehouse::proxy::{listen_stripped, rest_of_path, strip_aligned, upstream_target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Apps are read with read_to_string; lossy decoding keeps byte-level
    // mutations useful.
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = ApiSpec::from_json(
        Path::new("/etc/gatehouse/apps/fuzz.json"),
        &text,
        Default::default(),
    ) else {
        return;
    };
    let _ = spec.listen.sort_len();
    let _ = spec.expiration.expired(0);
    let own = spec.listen.text.clone();
    let name = &spec.def.name;
    let probes = [
        own.clone(),
        format!("{own}/x"),
        format!("{own}x/y"),
        "/".to_string(),
        String::new(),
        spec.def.proxy.listen_path.clone(),
        name.clone(),
        format!("/{name}"),
        format!("{own}{name}"),
    ];
    let version = spec.versioning.default_version.as_str();
    for path in &probes {
        if let Some(used) = spec.listen.matches(path) {
            assert!(used <= path.len(), "match of {used} bytes in {path:?}");
            assert!(
                path.is_char_boundary(used),
                "match ends inside a character of {path:?}"
            );
        }
        if let Some(used) = spec.listen.covers(path) {
            assert!(used <= path.len() && path.is_char_boundary(used));
        }
        let _ = rest_of_path(&spec, path);
        let _ = strip_aligned(&spec, path, name);
        let _ = upstream_target(&spec, &spec.target, listen_stripped(&spec, path), "", None);
        let _ = upstream_target(&spec, &spec.target, path, "a=1", Some(version));
    }
    assert!(
        spec.listen.matches(&own).is_some(),
        "listen path {own:?} does not match itself"
    );
});
