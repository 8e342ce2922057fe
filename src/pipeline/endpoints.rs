//! Endpoint access (CONTRACT §3.5 step 1, §6): the version's `ignored`,
//! `white_list`, `black_list` and `mock_response` entries, before auth, as
//! Tyk. A mock or `reply` action answers here, so it needs no key. Then
//! size limits (step 3), also before auth.

use std::borrow::Cow;

use crate::apidef::{Candidates, Cors, Reply, Verdict};
use crate::http::{Framing, Response};

use super::{Exchange, Flow};

pub fn access(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    let Some(rules) = x.rules else {
        return Flow::Continue;
    };
    // A CORS preflight is the CORS stage's to answer, whatever the lists.
    if api.cors.is_some() && Cors::is_preflight(&x.req) {
        return Flow::Continue;
    }
    let forms = Forms::of(x);
    match rules.access.verdict(&x.req.method, &forms.candidates(true)) {
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
                forms.full
            );
            x.reject(403, "Requested endpoint is forbidden")
        }
        Verdict::Reply(r) => Flow::Respond(reply(r)),
    }
}

/// `size_limits` and `global_size_limit` (step 3, before auth, as Tyk): a
/// request with a body must say how long it is, and be within the limit.
/// GET, DELETE, TRACE, OPTIONS and HEAD are never checked.
pub fn size_limit(x: &mut Exchange<'_>) -> Flow {
    let Some(rules) = x.rules else {
        return Flow::Continue;
    };
    let t = &rules.transforms;
    if !t.limits_size()
        || matches!(
            x.req.method.as_str(),
            "GET" | "DELETE" | "TRACE" | "OPTIONS" | "HEAD"
        )
    {
        return Flow::Continue;
    }
    let forms = Forms::of(x);
    let entry = t.size_limit_for(&x.req.method, &forms.candidates(false));
    let limits = [
        (t.global_size_limit > 0).then_some(t.global_size_limit),
        entry,
    ];
    for limit in limits.into_iter().flatten() {
        let Framing::Length(n) = x.req.framing else {
            return x.reject(411, "Content length is required for this request");
        };
        if n > limit {
            return x.reject(400, "Request is too large");
        }
    }
    Flow::Continue
}

/// The forms of the request path that endpoint patterns are tried on.
pub(super) struct Forms<'a> {
    pub full: &'a str,
    /// Without the listen path, with a leading `/`.
    pub clean: Cow<'a, str>,
    /// Without the version segment too, when the API strips it.
    pub no_version: Option<String>,
}

impl<'a> Forms<'a> {
    pub fn of(x: &'a Exchange<'_>) -> Forms<'a> {
        let api = x.api;
        let full = x.path();
        let rest = x.rest.as_str();
        // The rest is nearly always the tail of the path after a `/`: then
        // the clean form is a slice of it, no copy.
        let tail_at = full.len().checked_sub(rest.len() + 1);
        let clean = match tail_at {
            _ if api.listen.text == "/" => Cow::Borrowed(full),
            _ if rest.starts_with('/') => Cow::Borrowed(rest),
            Some(at) if full.ends_with(rest) && full.as_bytes()[at] == b'/' => {
                Cow::Borrowed(&full[at..])
            }
            _ => Cow::Owned(format!("/{rest}")),
        };
        let d = &api.def.definition;
        let no_version = (d.strip_path || d.strip_versioning_data)
            .then(|| without_version(&clean))
            .flatten();
        Forms {
            full,
            clean,
            no_version,
        }
    }

    /// `with_full`: also the whole path, listen path included (the access
    /// lists); the transforms see only the path without it (Tyk).
    pub fn candidates(&self, with_full: bool) -> Candidates<'_> {
        Candidates {
            no_version: self.no_version.as_deref(),
            clean: &self.clean,
            full: if with_full { self.full } else { &self.clean },
        }
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
