//! Endpoint access (CONTRACT §3.5 step 1, §6): the version's `ignored`,
//! `white_list`, `black_list` and `mock_response` entries, before auth, as
//! Tyk. A mock or `reply` action answers here, so it needs no key.

use crate::apidef::{Candidates, Reply, Verdict};
use crate::http::Response;

use super::{Exchange, Flow};

pub fn access(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    let Some(rules) = x.version.as_ref().and_then(|v| api.endpoints.get(v)) else {
        return Flow::Continue;
    };
    let full = x.path();
    let clean = if api.listen.text == "/" || x.rest.starts_with('/') {
        std::borrow::Cow::Borrowed(if api.listen.text == "/" {
            full
        } else {
            x.rest.as_str()
        })
    } else {
        std::borrow::Cow::Owned(format!("/{}", x.rest))
    };
    let d = &api.def.definition;
    let no_version = (d.strip_path || d.strip_versioning_data)
        .then(|| without_version(&clean))
        .flatten();
    let candidates = Candidates {
        no_version: no_version.as_deref(),
        clean: &clean,
        full,
    };
    match rules.access.verdict(&x.req.method, &candidates) {
        Verdict::Pass => Flow::Continue,
        Verdict::Ignore => {
            x.ignored = true;
            Flow::Continue
        }
        Verdict::Forbidden => {
            log::debug!(
                "api {}: {} {} is forbidden by its endpoint lists",
                api.id(),
                x.req.method,
                full
            );
            x.reject(403, "Requested endpoint is forbidden")
        }
        Verdict::Reply(r) => Flow::Respond(reply(r)),
    }
}

/// `path` without its first segment when a `/` follows it (Tyk's
/// `StripVersionPath`); None when nothing changes.
fn without_version(path: &str) -> Option<String> {
    let first = path.trim_matches('/').split('/').next().unwrap_or_default();
    let segment = format!("/{first}/");
    path.contains(&segment)
        .then(|| path.replacen(&segment, "/", 1))
        .filter(|p| p != path)
}

/// A canned answer, as written (Tyk sets no Content-Type of its own; Go
/// sniffs one for a body, so text is labelled as text).
fn reply(r: &Reply) -> Response {
    let mut res = Response::new(r.code);
    for (name, value) in &r.headers {
        res.headers.append(name, value.as_bytes().to_vec());
    }
    if !r.body.is_empty() && !res.headers.contains("content-type") {
        let kind = if std::str::from_utf8(&r.body).is_ok() {
            "text/plain; charset=utf-8"
        } else {
            "application/octet-stream"
        };
        res.headers.set("Content-Type", kind);
    }
    res.body = crate::http::Body::Bytes(r.body.clone());
    res
}
