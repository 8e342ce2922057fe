//! Forwarding a request that passed its API's stages (CONTRACT §3.2–3.3):
//! the upstream URL (strip listen path, join with the target), the headers
//! we send (hop-by-hop removed, X-Forwarded-For, Host, User-Agent), and the
//! client's response (upstream status, headers and streamed body, plus the
//! headers the stages asked for). Upstream faults become Tyk's errors.

use std::cell::Cell;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::apidef::{ApiSpec, Balancer, Breaker, Target};
use crate::error::proxy_error;
use crate::http::codec::{RequestHeadWriter, ResponseHead};
use crate::http::path::{self, Reject};
use crate::http::{Body, Framing, Headers, Response, Upgraded};
use crate::metrics::{ApiStats, Flag, Tally};
use crate::pipeline::Exchange;
use crate::upstream::tls::TlsTo;
use crate::upstream::{Outgoing, Upstream, UpstreamError};

/// Headers that belong to one connection (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Headers a `Connection` field may never remove.
const PROTECTED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "user-agent",
];

/// The path after the API's listen path, or after its `/<api_id>` alias.
pub fn rest_of_path<'a>(api: &ApiSpec, path: &'a str) -> &'a str {
    if let Some(n) = api.listen.covers(path) {
        return &path[n..];
    }
    let alias = format!("/{}", api.id());
    path.strip_prefix(alias.as_str()).unwrap_or(path)
}

/// The canonical path to forward: without the listen path when the API
/// strips it (CONTRACT §3.2).
pub fn listen_stripped<'a>(api: &ApiSpec, key: &'a str) -> &'a str {
    match api.listen.covers(key) {
        Some(n) if api.def.proxy.strip_listen_path => &key[n..],
        _ => key,
    }
}

/// `sent` (the forwarded form of the canonical path `key`) without the
/// listen path's segments, counted on the canonical form (PATHS.md §3 step
/// 5): never a byte prefix of `sent`. Err when the segments do not line up:
/// one that is empty or a dot segment once canonical, an escaped slash that
/// the listen path would split, or a rest that no longer means the rest of
/// `key`.
pub fn strip_aligned<'a>(api: &ApiSpec, key: &str, sent: &'a str) -> Result<&'a str, Reject> {
    let Some(n) = api.listen.covers(key) else {
        return Ok(sent);
    };
    if !sent.starts_with('/') {
        return Err(Reject::AmbiguousPath);
    }
    let head = key[..n].trim_end_matches('/');
    let canonical = |s: &str| -> Result<String, Reject> {
        let slashed = if s.starts_with('/') {
            s.to_string()
        } else {
            format!("/{s}")
        };
        path::canonicalize(&slashed).map(|c| c.key.into_owned())
    };
    let mut acc = String::new();
    let mut cut = 0;
    let mut start = 1;
    while acc.len() < head.len() {
        if start > sent.len() {
            return Err(Reject::AmbiguousPath);
        }
        let end = sent[start..].find('/').map_or(sent.len(), |i| start + i);
        let seg = &sent[start..end];
        let k = canonical(seg)?;
        if k == "/" {
            return Err(Reject::AmbiguousPath);
        }
        let before = acc.len();
        acc.push_str(&k);
        cut = end;
        if !head.starts_with(acc.as_str()) {
            // The listen path ends inside this segment (`/app` on `/apple`):
            // cut there when the segment is one plain segment spelled so.
            let partial = &head[before..];
            let single = !k[1..].contains('/');
            if acc.starts_with(head) && single && seg.starts_with(&partial[1..]) {
                cut = start + partial.len() - 1;
                break;
            }
            return Err(Reject::AmbiguousPath);
        }
        start = end + 1;
    }
    let rest = &sent[cut..];
    if canonical(rest)? != canonical(&key[n..])? {
        return Err(Reject::AmbiguousPath);
    }
    Ok(rest)
}

/// The upstream request target: `path` (already without the listen path
/// when the API strips it) joined with the target URL, and the query
/// (CONTRACT §3.2).
pub fn upstream_target(
    api: &ApiSpec,
    upstream: &Target,
    path: &str,
    query: &str,
    strip_version: Option<&str>,
) -> String {
    let stripped;
    let rest = match strip_version {
        Some(v) => {
            let mut rooted = path.to_string();
            if !rooted.starts_with('/') {
                rooted.insert(0, '/');
            }
            stripped = strip_segment(&rooted, v);
            stripped.as_str()
        }
        None => path,
    };
    let base = &upstream.path;
    let tail = rest.trim_start_matches('/');
    let tq = &upstream.query;
    let mut target = String::with_capacity(base.len() + tail.len() + tq.len() + query.len() + 3);
    if api.def.proxy.disable_strip_slash && tail.is_empty() {
        target.push_str(base);
    } else {
        target.push_str(base.trim_end_matches('/'));
        if !tail.is_empty() {
            target.push('/');
            target.push_str(tail);
        }
    }
    if target.is_empty() {
        target.push('/');
    }
    for (i, part) in [tq.as_str(), query]
        .into_iter()
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        target.push(if i == 0 { '?' } else { '&' });
        target.push_str(part);
    }
    target
}

/// `query` without the pairs named `param` (`strip_auth_data`); the other
/// pairs keep their spelling.
fn without_param<'a>(query: &'a str, param: &str) -> std::borrow::Cow<'a, str> {
    let named = |pair: &str| {
        let name = pair.split('=').next().unwrap_or_default();
        form_urlencoded::parse(name.as_bytes())
            .next()
            .is_some_and(|(n, _)| n == param)
    };
    if !query.split('&').any(named) {
        return std::borrow::Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query.split('&').filter(|p| !named(p)).collect();
    std::borrow::Cow::Owned(kept.join("&"))
}

/// Drops the first `/<segment>` of `path` when it is `segment`.
fn strip_segment(path: &str, segment: &str) -> String {
    let prefix = format!("/{segment}");
    match path.strip_prefix(prefix.as_str()) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
        _ => path.to_string(),
    }
}

/// Names listed in `Connection` that may be dropped, besides the
/// hop-by-hop fields that always are (so the usual `keep-alive` costs no
/// copy).
fn connection_listed<S: AsRef<str>>(headers: &Headers, keep: &[S]) -> Vec<String> {
    let among = |list: &[&str], t: &str| list.iter().any(|n| n.eq_ignore_ascii_case(t));
    let mut listed = Vec::new();
    for value in headers.get_all("connection") {
        let Ok(value) = std::str::from_utf8(value) else {
            continue;
        };
        for t in value.split(',').map(str::trim) {
            let skip = t.is_empty()
                || among(HOP_BY_HOP, t)
                || among(PROTECTED, t)
                || keep.iter().any(|k| k.as_ref().eq_ignore_ascii_case(t));
            if !skip {
                listed.push(t.to_ascii_lowercase());
            }
        }
    }
    listed
}

/// Whether `name` belongs to one connection: a hop-by-hop field, or one
/// of the names `Connection` listed (`listed`, from `connection_listed`).
fn is_hop_by_hop(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || listed.iter().any(|l| l.eq_ignore_ascii_case(name))
}

/// Removes hop-by-hop fields and those `Connection` names, except `keep`.
pub fn strip_hop_by_hop<S: AsRef<str>>(headers: &mut Headers, keep: &[S]) {
    let listed = connection_listed(headers, keep);
    headers.retain(|name, _| !is_hop_by_hop(name, &listed));
}

/// The upstream request head: the client's fields, less hop-by-hop ones
/// (and the credentials' with `strip_auth_data`), then what the gateway
/// sets, in this order: the WebSocket handshake's `Connection`/`Upgrade`,
/// `X-Forwarded-For`, `Host`, `User-Agent` (when the client sent none).
/// Written straight into the head: no copy of the client's fields.
fn upstream_head(x: &Exchange<'_>, upstream: &Target, target: &str, out: &mut Vec<u8>) {
    let req = &x.req;
    // The credentials' own headers are never dropped as hop-by-hop.
    let auth_headers = &x.api.auth.headers;
    let listed = connection_listed(&req.headers, auth_headers);
    let strip_auth = x.api.def.strip_auth_data;
    // What survives hop-by-hop removal and `strip_auth_data`.
    let passes = |name: &str| {
        !(is_hop_by_hop(name, &listed)
            || (strip_auth && auth_headers.iter().any(|a| a.eq_ignore_ascii_case(name))))
    };
    let has = |name: &str| passes(name) && req.headers.contains(name);
    let forwarded_for = !x.edits.no_forwarded_for;
    let own_host = !x.api.def.proxy.preserve_host_header || !has("host");
    let mut head = RequestHeadWriter::start(out, &req.method, target);
    for (name, value) in req.headers.iter() {
        let replaced = (forwarded_for && name.eq_ignore_ascii_case("x-forwarded-for"))
            || (own_host && name.eq_ignore_ascii_case("host"));
        // We answer `Expect: 100-continue` ourselves and send the body at once.
        if passes(name) && !replaced && !name.eq_ignore_ascii_case("expect") {
            head.field(name, value);
        }
    }
    if x.websocket {
        // The handshake's own hop-by-hop fields go through (RFC 6455 §4.1).
        let asked = req.headers.get("upgrade").unwrap_or("websocket");
        head.field("Connection", b"Upgrade");
        head.field("Upgrade", asked.as_bytes());
    }
    if forwarded_for {
        let keep_prior = passes("x-forwarded-for");
        let prior = req.headers.get_all("x-forwarded-for");
        head.field_with("X-Forwarded-For", |out| {
            for value in prior.filter(|v| keep_prior && std::str::from_utf8(v).is_ok()) {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
            write_ip(out, req.peer.ip());
        });
    }
    if own_host {
        head.field("Host", upstream.authority.as_bytes());
    }
    if !has("user-agent") {
        // Tyk's product token, as upstreams behind Tyk expect (CONTRACT §3.3).
        head.field(
            "User-Agent",
            concat!("Tyk/v", env!("CARGO_PKG_VERSION")).as_bytes(),
        );
    }
    head.finish(req.framing);
}

/// Writes `ip` as text: IPv4 by hand (`Display` goes through the
/// formatter, a thousand instructions per request), IPv6 as `Display` does.
fn write_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                if octet >= 100 {
                    out.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    out.push(b'0' + octet / 10 % 10);
                }
                out.push(b'0' + octet % 10);
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = io::Write::write_fmt(out, format_args!("{v6}"));
        }
    }
}

/// A request ready for its upstream, and what the client's response needs.
pub struct Forward {
    pub upstream: Arc<Upstream>,
    pub address: String,
    /// The upstream as a socket address, when the target names an IP (and
    /// the event loop may connect to it: never for TLS).
    pub socket: Option<SocketAddr>,
    /// `https://`: how to speak TLS to it.
    pub tls: Option<TlsTo>,
    pub head: Vec<u8>,
    pub framing: Framing,
    /// Safe to send twice (idempotent method, no body).
    pub replayable: bool,
    pub head_request: bool,
    /// Headers the stages asked for on a successful response.
    extra: Headers,
    close: bool,
    hide: bool,
    max_body: u64,
    /// Bodies up to this size are read whole before the upstream is asked.
    max_buffered: u64,
    /// The API's counters; its id names the request in logs (`what`).
    api: Arc<ApiStats>,
    /// The part of the body a stage already read; sent before the rest.
    pub body_prefix: Option<Vec<u8>>,
    /// Response header changes from the transforms: delete (None) or set.
    response_edits: Vec<(String, Option<String>)>,
    /// `hard_timeouts`: the upstream's time to answer, for this request.
    timeout: Option<std::time::Duration>,
    /// A load-balanced API: its balancer and the target taken.
    picked: Option<(Arc<Balancer>, usize)>,
    /// The endpoint's circuit breaker: told of 5xx answers and failures.
    breaker: Option<Arc<Breaker>>,
    /// A WebSocket handshake: a `101` answer turns into a tunnel.
    pub websocket: bool,
    /// The request's API and access-log entry, moved onto its response.
    pub tally: Cell<Tally>,
}

/// Builds the upstream request; Err is the response for a refused body.
pub fn plan(x: &mut Exchange<'_>) -> Result<Forward, Response> {
    let cfg = &x.gw.config;
    let max = cfg.max_request_body_size;
    if max > 0 && matches!(x.req.framing, Framing::Length(n) if n > max) {
        return Err(proxy_error(413, TOO_LARGE, cfg.hide_generator_header).with_close());
    }
    let path = match &x.routed.upstream {
        Some(p) => p.as_str(),
        None => listen_stripped(x.api, x.path()),
    };
    let mut query = std::borrow::Cow::Borrowed(x.edits.query.as_deref().unwrap_or(&x.req.query));
    if x.api.def.strip_auth_data {
        for (_, source) in &x.api.auth.methods {
            if let Some(param) = source.param.as_deref() {
                query = std::borrow::Cow::Owned(without_param(&query, param).into_owned());
            }
        }
    }
    // A rewrite to an absolute URL names the whole request target; else
    // the API's target, or the balancer's turn.
    let picked = match (&x.edits.target, &x.api.balancer) {
        (None, Some(b)) => Some((b.clone(), b.pick(crate::gateway::unix_now_ms()).0)),
        _ => None,
    };
    let upstream = match (&x.edits.target, &picked) {
        (Some(t), _) => t,
        (None, Some((b, i))) => b.target(*i),
        (None, None) => &x.api.target,
    };
    let target = match &x.edits.target {
        Some(t) => {
            let path = if t.path.is_empty() { "/" } else { &t.path };
            match t.query.as_str() {
                "" => path.to_string(),
                q => format!("{path}?{q}"),
            }
        }
        None => upstream_target(x.api, upstream, path, &query, x.strip_version.as_deref()),
    };
    let tls = match upstream.tls {
        false => None,
        true => match x.gw.upstream.tls_to(&x.api.transport, &upstream.host) {
            Ok(t) => Some(t),
            Err(why) => {
                log::error!("api {}: upstream {}: {why}", x.api.id(), upstream.address);
                return Err(proxy_error(
                    500,
                    "There was a problem proxying the request",
                    cfg.hide_generator_header,
                ));
            }
        },
    };
    let mut head = Vec::with_capacity(512);
    upstream_head(x, upstream, &target, &mut head);
    let method = x.req.method.as_str();
    let idempotent = matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    );
    Ok(Forward {
        upstream: x.gw.upstream.clone(),
        address: upstream.address.clone(),
        socket: upstream.socket.filter(|_| tls.is_none()),
        tls,
        head,
        framing: x.req.framing,
        replayable: idempotent && x.req.framing == Framing::None,
        head_request: method == "HEAD",
        extra: std::mem::take(&mut x.response_headers),
        close: cfg.server.close_connections,
        hide: cfg.hide_generator_header,
        max_body: max,
        max_buffered: cfg.max_buffered_body,
        api: x.api.stats.clone(),
        body_prefix: None,
        response_edits: std::mem::take(&mut x.edits.response),
        timeout: x.edits.timeout,
        picked,
        breaker: x.edits.breaker.clone(),
        websocket: x.websocket,
        tally: Cell::default(),
    })
}

impl Forward {
    /// `api <id> <method> <upstream path>`, for logs: read back from the
    /// upstream head when a line is written, not built for every request.
    /// The query is left out (it may carry credentials).
    fn what(&self) -> String {
        let line = self.head.split(|&b| b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default().split('?').next();
        format!("api {} {method} {}", self.api.id, path.unwrap_or_default())
    }

    /// (connect timeout, response timeout) for this request: the
    /// gateway's, or the endpoint's `hard_timeouts`.
    pub fn timeouts(&self) -> (std::time::Duration, std::time::Duration) {
        let (connect, respond) = self.upstream.timeouts();
        (connect, self.timeout.unwrap_or(respond))
    }

    /// Sends the request (blocking) and builds the client's response.
    ///
    /// A chunked body, or one whose length is within `max_buffered`, is read
    /// first: when it ends within that bound it is checked whole before the
    /// upstream is even connected to, so a malformed one is refused with
    /// nothing sent. A longer one is streamed, and if it turns out
    /// malformed the upstream connection is dropped before the last chunk
    /// (or the last byte of its length), so the upstream never sees a
    /// complete request.
    pub fn send(&mut self, body: &mut dyn Read) -> Response {
        let mut capped = Capped {
            inner: body,
            left: self.max_body,
            on: self.max_body > 0,
        };
        let first = match self.framing {
            Framing::Chunked => Some(self.max_buffered),
            Framing::Length(n) if n <= self.max_buffered => Some(n),
            _ => None,
        };
        let mut buffered = Vec::new();
        if let Some(limit) = first {
            let read = (&mut capped).take(limit + 1).read_to_end(&mut buffered);
            if let Err(e) = read {
                return self.fail(UpstreamError::ClientBody(e));
            }
        }
        let whole = first.is_some_and(|limit| buffered.len() as u64 <= limit);
        let prefix = io::Cursor::new(buffered);
        let (mut only, mut streamed);
        let body: &mut dyn Read = if whole {
            only = prefix;
            &mut only
        } else {
            streamed = prefix.chain(&mut capped);
            &mut streamed
        };
        let out = Outgoing {
            address: &self.address,
            head: &self.head,
            framing: self.framing,
            body,
            replayable: self.replayable,
            head_request: self.head_request,
            timeout: self.timeout,
            upgrade: false,
            tls: self.tls.as_ref(),
        };
        let sent = Instant::now();
        let mut res = match self.upstream.send(out) {
            Ok((head, body)) => {
                let len = body.declared_len();
                self.respond(
                    head,
                    Body::Stream {
                        len,
                        source: Box::new(body),
                    },
                )
            }
            Err(e) => self.fail(e),
        };
        res.tally.sent = Some(sent);
        res
    }

    /// Sends a WebSocket handshake. Only a `101` naming `websocket` becomes
    /// a tunnel (`Body::Upgrade`); any other answer is an ordinary
    /// response, and the connection stays HTTP.
    pub fn upgrade(&mut self) -> Response {
        let sent = Instant::now();
        let mut res = self.handshake();
        if res.tally.api.is_none() {
            res.tally = self.tally.take();
        }
        res.tally.sent = Some(sent);
        res
    }

    fn handshake(&mut self) -> Response {
        let out = Outgoing {
            address: &self.address,
            head: &self.head,
            framing: Framing::None,
            body: &mut io::empty(),
            replayable: false,
            head_request: false,
            timeout: self.timeout,
            upgrade: true,
            tls: self.tls.as_ref(),
        };
        let (head, body) = match self.upstream.send(out) {
            Ok(answer) => answer,
            Err(e) => return self.fail(e),
        };
        let agreed = head.status == 101
            && head
                .headers
                .get("upgrade")
                .is_some_and(|u| u.trim().eq_ignore_ascii_case("websocket"));
        if !agreed {
            if head.status == 101 {
                log::warn!(
                    "{}: upstream switched to something else than websocket; refused",
                    self.what()
                );
                return proxy_error(502, "There was a problem proxying the request", self.hide)
                    .with_close();
            }
            let len = body.declared_len();
            return self.respond(
                head,
                Body::Stream {
                    len,
                    source: Box::new(body),
                },
            );
        }
        let Some(wire) = body.into_wire() else {
            return self.fail(UpstreamError::BadResponse(
                "no connection to upgrade".into(),
            ));
        };
        if let Some(b) = &self.breaker {
            b.record(false, std::time::Instant::now());
        }
        let mut res = Response::new(101);
        res.headers = head.headers;
        res.headers.set("Connection", "Upgrade");
        res.headers.set("Upgrade", "websocket");
        for (name, value) in self.extra.iter() {
            res.headers.set(name, value);
        }
        res.tally = self.tally.take();
        res.body = Body::Upgrade(Box::new(Upgraded {
            buffered: wire.buffered().to_vec(),
            stream: wire.stream,
        }));
        res
    }

    /// The client's response to an upstream response.
    pub fn respond(&mut self, head: ResponseHead, body: Body) -> Response {
        if let Some(b) = &self.breaker {
            b.record(head.status >= 500, std::time::Instant::now());
        }
        let mut res = Response::new(head.status);
        res.tally = self.tally.take();
        if head.status >= 500 {
            res.tally.flag = Some(Flag::Urs);
        }
        res.headers = head.headers;
        strip_hop_by_hop::<&str>(&mut res.headers, &[]);
        for (name, value) in std::mem::take(&mut self.response_edits) {
            match value {
                None => res.headers.remove(&name),
                Some(v) => res.headers.set(name, v),
            }
        }
        for (name, value) in std::mem::take(&mut self.extra).into_fields() {
            res.headers.set(name, value);
        }
        res.close = self.close;
        res.body = body;
        res
    }

    /// Tyk's answer to an upstream fault.
    pub fn fail(&self, e: UpstreamError) -> Response {
        if let Some(b) = &self.breaker
            && !matches!(e, UpstreamError::ClientBody(_))
        {
            b.record(true, std::time::Instant::now());
        }
        if let (UpstreamError::Broken(io), Some((b, i))) = (&e, &self.picked)
            && io.kind() == io::ErrorKind::ConnectionRefused
        {
            b.refused(*i, crate::gateway::unix_now_ms());
        }
        let (status, message) = match &e {
            UpstreamError::ClientBody(b) => client_body_status(b),
            UpstreamError::Lookup(_) => (500, "Upstream host lookup failed"),
            UpstreamError::Timeout => (504, "Upstream service reached hard timeout."),
            UpstreamError::Broken(_) | UpstreamError::BadResponse(_) => {
                (500, "There was a problem proxying the request")
            }
        };
        let client_side = matches!(e, UpstreamError::ClientBody(_));
        let level = if client_side {
            log::Level::Debug
        } else {
            log::Level::Error
        };
        log::log!(level, "{}: upstream {}: {e}", self.what(), self.address);
        let mut res = proxy_error(status, message, self.hide);
        res.tally = self.tally.take();
        res.tally.flag = Some(flag_of(&e, status));
        if client_side { res.with_close() } else { res }
    }
}

const TOO_LARGE: &str = "Request is too large";

/// Tyk's response flag for an upstream fault answered with `status`.
fn flag_of(e: &UpstreamError, status: u16) -> Flag {
    use io::ErrorKind as K;
    match e {
        UpstreamError::ClientBody(_) => match status {
            413 => Flag::Btl,
            400 => Flag::Biv,
            _ => Flag::Cdc,
        },
        UpstreamError::Lookup(_) => Flag::Dns,
        UpstreamError::Timeout => Flag::Urt,
        UpstreamError::BadResponse(_) => Flag::Upe,
        UpstreamError::Broken(io) => match io.kind() {
            K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::NotFound => {
                Flag::Ucf
            }
            K::TimedOut | K::WouldBlock => Flag::Uct,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Flag::Urr
            }
            _ => Flag::Upe,
        },
    }
}

/// The status and message for a client body that could not be read.
fn client_body_status(e: &io::Error) -> (u16, &'static str) {
    if e.to_string() == TOO_LARGE {
        return (413, TOO_LARGE);
    }
    match e.kind() {
        io::ErrorKind::InvalidData => (400, "Bad Request"),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => (408, "Request Timeout"),
        _ => (499, "Client closed request"),
    }
}

/// The answer to a client body that failed while a stage read it.
pub fn client_body_failure(e: &io::Error, hide: bool) -> Response {
    log::debug!("client body: {e}");
    let (status, message) = client_body_status(e);
    proxy_error(status, message, hide).with_close()
}

/// A client body reader that fails past `max_request_body_size`.
struct Capped<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    on: bool,
}

impl Read for Capped<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.on {
            self.left = self
                .left
                .checked_sub(n as u64)
                .ok_or_else(|| io::Error::other(TOO_LARGE))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.100.255",
            "255.255.255.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let mut out = Vec::new();
            super::write_ip(&mut out, ip);
            assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
        }
    }

    use super::*;
    use serde_json::json;
    use std::path::Path;

    fn api(listen: &str, target: &str, strip: bool) -> ApiSpec {
        let raw = json!({"api_id": "a1", "proxy": {"listen_path": listen, "target_url": target, "strip_listen_path": strip}});
        ApiSpec::from_value(Path::new("t.json"), raw, Default::default()).unwrap()
    }

    fn target(a: &ApiSpec, key: &str, query: &str, version: Option<&str>) -> String {
        upstream_target(a, &a.target, listen_stripped(a, key), query, version)
    }

    #[test]
    fn target_join_follows_tyk() {
        let a = api("/api/", "http://h/base/", true);
        assert_eq!(target(&a, "/api/", "", None), "/base");
        assert_eq!(target(&a, "/api", "", None), "/base");
        assert_eq!(target(&a, "/api/x/y", "", None), "/base/x/y");
        let a = api("/api/", "http://h", false);
        assert_eq!(target(&a, "/api/x", "q=1", None), "/api/x?q=1");
        let a = api("/q/", "http://h/?t=1", true);
        assert_eq!(target(&a, "/q/get", "q=2", None), "/get?t=1&q=2");
        assert_eq!(target(&a, "/q/", "", None), "/?t=1");
    }

    #[test]
    fn version_segment_is_stripped() {
        let a = api("/v/", "http://h", true);
        assert_eq!(target(&a, "/v/v1/items", "", Some("v1")), "/items");
    }

    #[test]
    fn strip_auth_data_drops_only_the_named_param() {
        assert_eq!(without_param("key=k&a=%41&b", "key"), "a=%41&b");
        assert_eq!(without_param("a=1&k%65y=k&key", "key"), "a=1");
        assert_eq!(without_param("a=1", "key"), "a=1");
        assert_eq!(without_param("keys=1", "key"), "keys=1");
    }

    #[test]
    fn stripping_counts_canonical_segments() {
        let a = api("/users/protected/", "http://h", true);
        let strip = |key, sent| strip_aligned(&a, key, sent);
        assert_eq!(
            strip("/users/protected/s", "/users/protected;x/s"),
            Ok("/s")
        );
        assert_eq!(
            strip("/users/protected/a/b", "/users/protected/a%2Fb"),
            Ok("/a%2Fb")
        );
        assert_eq!(strip("/users/protected", "/users/protected;x"), Ok(""));
        let ambiguous = Err(Reject::AmbiguousPath);
        // Path cleaning off: `//` inside the listen path.
        assert_eq!(
            strip("/users/protected/s", "/users//protected/s"),
            ambiguous
        );
        // `..;` climbing back into the listen path.
        assert_eq!(
            strip("/users/protected/s", "/users/x/..;/protected/s"),
            ambiguous
        );
        assert_eq!(
            strip("/users/protected/s", "/users/protected/..;/protected/s"),
            ambiguous
        );
        assert_eq!(
            strip("/users/protected/s", "/users%2Fprotected/s"),
            Ok("/s")
        );
        let a = api("/app", "http://h", true);
        assert_eq!(strip_aligned(&a, "/apple/x", "/apple;p/x"), Ok("le;p/x"));
        let a = api("/a/", "http://h", true);
        assert_eq!(strip_aligned(&a, "/a/b/c", "/a/b%2Fc"), Ok("/b%2Fc"));
        // An escaped slash the listen path would split.
        assert_eq!(
            strip_aligned(&a, "/a/b/c", "/a%2Fb/c"),
            Err(Reject::AmbiguousPath)
        );
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_go() {
        let mut h = Headers::new();
        for (n, v) in [
            ("Connection", "close, X-Secret, Host, Authorization"),
            ("X-Secret", "s"),
            ("Keep-Alive", "1"),
            ("Host", "h"),
            ("Authorization", "k"),
            ("X-Keep", "y"),
        ] {
            h.append(n, v);
        }
        strip_hop_by_hop(&mut h, &["Authorization"]);
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["Host", "Authorization", "X-Keep"]);
    }
}
