//! Request transforms (CONTRACT §3.5 step 7, after auth and limits, as
//! Tyk's TransformHeaders, URLRewrite and TransformMethod): header changes
//! (global, then the endpoint's), the URL rewrite, the method transform and
//! the hard timeout; and the response header changes, worked out now (the
//! session's meta data is at hand) and applied by the proxy.

use std::borrow::Cow;

use crate::apidef::{HeaderOps, Part, RewriteInputs, Target, Transforms, captured};
use crate::http::Request;
use crate::http::message::query_pairs;
use crate::session::Session;

use super::endpoints::Forms;
use super::{Exchange, Flow};

pub fn request(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    let Some(rules) = x.rules else {
        return Flow::Continue;
    };
    let t: &Transforms = &rules.transforms;
    if !t.changes_requests() {
        return Flow::Continue;
    }
    let vars = Vars {
        session: x.session.as_deref(),
        req: &x.req,
        path: x.path(),
        context: api.def.enable_context_vars,
    };
    let forms = Forms::of(x);
    let c = forms.candidates(false);
    let method = x.req.method.as_str();
    let mut request_ops = vec![&t.global_headers];
    request_ops.extend(t.headers_for(method, &c));
    let mut response_ops: Vec<&HeaderOps> =
        t.response_headers_for(method, &c).into_iter().collect();
    response_ops.push(&t.global_response_headers);
    let set_request = rendered(&request_ops, &vars);
    let response = rendered(&response_ops, &vars);
    let response = response.into_iter().map(|(n, v)| (n.to_string(), v));
    let no_forwarded_for = request_ops.iter().any(|o| o.drops_forwarded_for());
    let rewritten = t.rewrite_for(method, &c).and_then(|rw| {
        let url = match x.req.query.as_str() {
            "" => forms.full.to_string(),
            q => format!("{}?{q}", forms.full),
        };
        let (to, caps) = rw.choose(&TriggerInputs {
            vars: &vars,
            path: forms.full,
        });
        let to = to.render(|p| {
            let trigger = match p {
                Part::Context(k) => captured(&caps, k),
                _ => None,
            };
            trigger.or_else(|| vars.get(p)).map(|v| query_escape(&v))
        });
        rw.apply(&url, &to)
    });
    let to_method = t.method_for(method, &c).cloned();
    let timeout = t.timeout_for(method, &c);
    let breaker = t.breaker_for(method, &c).cloned();
    drop(forms);
    if let Some(b) = &breaker
        && !b.ready(std::time::Instant::now())
    {
        log::debug!("api {}: circuit breaker open", api.id());
        let Flow::Respond(mut res) = x.reject(503, "Service temporarily unavailable.") else {
            unreachable!()
        };
        res.tally.flag = Some(crate::metrics::Flag::Cbo);
        return Flow::Respond(res);
    }
    x.edits.breaker = breaker;

    for (name, value) in set_request {
        match value {
            None => x.req.headers.remove(name),
            Some(v) => x.req.headers.set(name, v),
        }
    }
    x.edits.response = response.collect();
    x.edits.no_forwarded_for = no_forwarded_for;
    x.edits.timeout = timeout;
    if let Some(url) = rewritten
        && let Err(flow) = rewrite(x, &url)
    {
        return flow;
    }
    if let Some(to) = to_method {
        if !Transforms::is_allowed_method(&to) {
            return x.reject(405, "Method not allowed");
        }
        x.req.method = to;
    }
    Flow::Continue
}

/// The header changes of `ops` in order: deletions (None), then values.
fn rendered<'o>(ops: &[&'o HeaderOps], vars: &Vars<'_>) -> Vec<(&'o str, Option<String>)> {
    let mut out = Vec::new();
    for op in ops {
        out.extend(op.delete.iter().map(|h| (h.as_str(), None)));
        for (name, value) in &op.add {
            let v = match value.literal() {
                // Checked at load.
                Some(lit) => lit.to_string(),
                None => {
                    let v = value.render(|p| vars.get(p));
                    // A variable may hold a CR or LF: never into a header.
                    if v.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                        v.chars()
                            .filter(|c| !c.is_control() || *c == '\t')
                            .collect()
                    } else {
                        v
                    }
                }
            };
            out.push((name.as_str(), Some(v)));
        }
    }
    out
}

/// What `$tyk_meta.*` and `$tyk_context.*` read.
struct Vars<'a> {
    session: Option<&'a Session>,
    req: &'a Request,
    path: &'a str,
    /// `enable_context_vars`: without it, context variables are empty.
    context: bool,
}

impl Vars<'_> {
    fn get(&self, p: &Part) -> Option<String> {
        match p {
            Part::Text(t) => Some(t.clone()),
            Part::Meta(key) => match self.session?.meta_data.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                serde_json::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            },
            Part::Context(_) if !self.context => None,
            Part::Context(key) => match key.as_str() {
                "path" => Some(self.path.to_string()),
                "remote_addr" => Some(self.req.peer.ip().to_string()),
                "request_method" => Some(self.req.method.clone()),
                k => {
                    if let Some(h) = k.strip_prefix("headers_") {
                        return self
                            .req
                            .headers
                            .get(&h.replace('_', "-"))
                            .map(str::to_string);
                    }
                    super::auth::cookie(self.req, k.strip_prefix("cookies_")?)
                }
            },
        }
    }
}

/// What rewrite triggers read: the request as the stage sees it.
struct TriggerInputs<'a> {
    vars: &'a Vars<'a>,
    /// The canonical path, listen path included.
    path: &'a str,
}

impl RewriteInputs for TriggerInputs<'_> {
    fn header(&self, name: &str) -> Vec<String> {
        let values = self.vars.req.headers.get_all(name);
        values
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    fn query(&self, name: &str) -> Vec<String> {
        let pairs = query_pairs(&self.vars.req.query);
        pairs.filter(|(k, _)| k == name).map(|(_, v)| v).collect()
    }

    fn path(&self) -> &str {
        self.path
    }

    fn meta(&self, key: &str) -> Option<String> {
        match self.vars.session?.meta_data.get(key)? {
            serde_json::Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }

    fn context(&self, key: &str) -> Option<String> {
        self.vars.get(&Part::Context(key.to_string()))
    }
}

/// Applies a rewritten URL: an absolute `http://` URL replaces the
/// upstream; anything else is the new path and query, whose listen path
/// is stripped when the API strips it.
fn rewrite(x: &mut Exchange<'_>, url: &str) -> Result<(), Flow> {
    let scheme = |s: &str| {
        url.as_bytes()
            .get(..s.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(s.as_bytes()))
    };
    if scheme("http://") || scheme("https://") {
        return match Target::parse(&encode_unsafe(url)) {
            Ok(target) => {
                x.edits.target = Some(target);
                Ok(())
            }
            Err(why) => {
                log::error!("api {}: url rewrite to {url:?}: {why}", x.api.id());
                Err(x.reject(500, "There was a problem proxying the request"))
            }
        };
    }
    let url = encode_unsafe(url);
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let mut path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if x.api.def.proxy.strip_listen_path
        && let Some(n) = x.api.listen.covers(&path)
    {
        path.drain(..n);
    }
    x.routed.upstream = Some(path);
    x.edits.query = Some(query.to_string());
    x.strip_version = None;
    Ok(())
}

/// `url` with every byte that may not appear in a request target
/// percent-encoded (a rewrite can put anything there).
fn encode_unsafe(url: &str) -> Cow<'_, str> {
    let safe = |b: u8| SAFE[usize::from(b)];
    if url.bytes().all(safe) {
        return Cow::Borrowed(url);
    }
    let mut out = String::with_capacity(url.len() + 8);
    for b in url.bytes() {
        if safe(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

/// The bytes `encode_unsafe` keeps: printable ASCII but `"<>\^`{|}#`.
const SAFE: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_graphic()
            && !matches!(
                c,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}' | b'#'
            );
        b += 1;
    }
    t
};

/// Go's `url.QueryEscape` for variable values in a rewrite, except that a
/// value starting with `http` is kept (Tyk).
fn query_escape(v: &str) -> String {
    if v.starts_with("http") {
        return v.to_string();
    }
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_bytes_are_encoded() {
        assert_eq!(encode_unsafe("/a b\r\nX: y"), "/a%20b%0D%0AX:%20y");
        assert_eq!(encode_unsafe("/a?b=1&c=%20"), "/a?b=1&c=%20");
        assert_eq!(query_escape("a b&c"), "a+b%26c");
        assert_eq!(query_escape("http://x/y z"), "http://x/y z");
    }
}
