//! The proxy pipeline: an API's ordered stages, then the proxy. The order
//! is written once, here, in Tyk's order (CONTRACT §3.5): version check,
//! auth (the key or basic-auth user, then its policies), key expiry, access
//! rights, rate limit and quota, API rate limit, then forwarding. Each API's list is built when it loads (`stages_for`),
//! not per request. A stage either lets the request continue or answers it.

mod access;
mod auth;
mod client;
mod endpoints;
mod jwt;
mod limit;
mod transform;
mod version;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use crate::apidef::{ApiDefinition, ApiSpec, AuthChain, AuthMethod, Endpoints};
use crate::error::proxy_error;
use crate::gateway::Gateway;
use crate::http::{Headers, Request, Response, Version};
use crate::metrics::Tally;
use crate::metrics::access_log::{Entry, mask_key};
use crate::proxy::{self, Forward};
use crate::session::Session;

/// What a stage decided.
pub enum Flow {
    Continue,
    Respond(Response),
    /// Only when `Exchange::nonblocking`: this request needs a worker
    /// (a cold key, a throttle wait). Nothing has been counted yet.
    Defer,
}

/// One step of the pipeline.
pub type Stage = fn(&mut Exchange<'_>) -> Flow;

/// A stage in an API's list.
#[derive(Clone, Copy)]
pub struct Step {
    pub run: Stage,
    /// Part of finding and checking the key (auth, expiry, rights, rate
    /// and quota): skipped for an `ignored` endpoint.
    pub keyed: bool,
}

/// A request on its way through an API's pipeline, and what the stages
/// learned about it.
pub struct Exchange<'a> {
    pub gw: &'a Gateway,
    pub api: &'a ApiSpec,
    pub req: Request,
    /// The canonical path and what goes upstream, as the router found them.
    pub routed: Routed,
    /// The canonical path after the listen path (or the `/<api_id>` alias).
    pub rest: String,
    /// Unix seconds at the start of the request.
    pub now: i64,
    /// The key's session, once auth found it.
    pub session: Option<Arc<Session>>,
    /// The id the key is stored under (names its counters).
    pub stored_id: String,
    /// The version the request resolved to.
    pub version: Option<String>,
    /// That version's endpoint rules, if it has any.
    pub rules: Option<&'a Endpoints>,
    /// A `/<version>` segment to drop before forwarding (`url` location).
    pub strip_version: Option<String>,
    /// An `ignored` endpoint: the keyed stages are skipped.
    pub ignored: bool,
    /// What the transforms change in how the request is forwarded.
    pub edits: Edits,
    /// CORS headers for whatever answers this request.
    pub cors: Vec<(&'static str, String)>,
    /// A WebSocket handshake (`enable_websockets`): forwarded with its
    /// `Upgrade`, tunnelled only if the upstream answers `101`.
    pub websocket: bool,
    /// Headers to add to a successfully proxied response.
    pub response_headers: Headers,
    /// Run on the event loop: a stage that would block defers instead.
    pub nonblocking: bool,
    /// The API's rate limit was counted with the key's (one call to the
    /// counters): its own stage has nothing left to do.
    pub api_rate_counted: bool,
    /// The start of the body (up to `max_buffered_body` bytes), read before
    /// the stages only for an API that looks into bodies
    /// (`basic_auth.extract_from_body`); it is forwarded as read.
    pub body: Option<Vec<u8>>,
}

/// How the transforms change forwarding (`transform`).
#[derive(Debug, Default)]
pub struct Edits {
    /// Response header changes, in order: a name to delete (None) or set.
    pub response: Vec<(String, Option<String>)>,
    /// `hard_timeouts`: the upstream's time to answer.
    pub timeout: Option<std::time::Duration>,
    /// `X-Forwarded-For` is deleted by a header transform: not added.
    pub no_forwarded_for: bool,
    /// A rewritten query (the path goes in `Routed::upstream`).
    pub query: Option<String>,
    /// A rewrite to an absolute URL: the upstream for this request.
    pub target: Option<crate::apidef::Target>,
    /// The endpoint's circuit breaker, told how the upstream answered.
    pub breaker: Option<std::sync::Arc<crate::apidef::Breaker>>,
}

/// A request's path as the router resolved it (`router`, `http::path`).
#[derive(Debug, Default)]
pub struct Routed {
    /// The canonical path, when it is not the path as sent.
    pub key: Option<String>,
    /// The path to send upstream, the listen path already stripped when the
    /// API strips it; None: derived from the canonical path.
    pub upstream: Option<String>,
}

impl Exchange<'_> {
    /// The canonical request path: what routing, versions and endpoint
    /// matching read.
    pub fn path(&self) -> &str {
        self.routed.key.as_deref().unwrap_or(&self.req.path)
    }

    /// `method` found the request's session: it becomes the request's
    /// unless another method provides the identity
    /// (`base_identity_provided_by`).
    pub fn identified(&mut self, method: AuthMethod, session: Arc<Session>, stored_id: String) {
        if self.api.auth.keeps(method) {
            self.session = Some(session);
            self.stored_id = stored_id;
        }
    }

    /// Tyk's error body for this API's gateway settings.
    pub fn reject(&self, status: u16, message: &str) -> Flow {
        Flow::Respond(proxy_error(
            status,
            message,
            self.gw.config.hide_generator_header,
        ))
    }
}

/// The stages an API runs, in Tyk's order; an API pays only for what its
/// definition uses.
pub fn stages_for(
    def: &ApiDefinition,
    auth: &AuthChain,
    endpoints: &HashMap<String, Endpoints>,
    cors: bool,
    ip_lists: bool,
) -> Vec<Step> {
    let plain = |run: Stage| Step { run, keyed: false };
    let keyed = |run: Stage| Step { run, keyed: true };
    let mut stages = vec![plain(version::check)];
    if endpoints.values().any(|e| !e.access.is_empty()) {
        stages.push(plain(endpoints::access));
    }
    if cors {
        stages.push(plain(client::cors));
    }
    if ip_lists {
        stages.push(plain(client::ip_lists));
    }
    if endpoints.values().any(|e| e.transforms.limits_size()) {
        stages.push(plain(endpoints::size_limit));
    }
    if def.use_keyless {
        stages.push(plain(limit::keyless_headers));
    } else {
        stages.extend(auth.methods.iter().map(|(method, _)| {
            keyed(match method {
                AuthMethod::Basic => auth::basic,
                AuthMethod::Jwt => jwt::jwt,
                AuthMethod::Token => auth::token,
            })
        }));
        stages.extend(
            [
                auth::policies,
                access::key_expired,
                access::rights,
                limit::rate_and_quota,
            ]
            .map(keyed),
        );
    }
    stages.push(plain(limit::api_rate));
    if endpoints.values().any(|e| e.transforms.changes_requests()) {
        stages.push(plain(transform::request));
    }
    stages
}

/// What running the stages decided.
pub enum Prepared {
    /// Answered by a stage (or a 404).
    Respond(Response),
    /// Ready to forward.
    Forward(Box<Forward>),
    /// Needs a worker: run it again with `run`.
    Defer(Request),
}

/// Runs `api`'s stages on `req` without forwarding it. With `nonblocking`,
/// a stage that would block (store read, throttle wait) defers instead.
pub fn prepare(
    gw: &Gateway,
    api: &ApiSpec,
    req: Request,
    routed: Routed,
    nonblocking: bool,
) -> Prepared {
    prepare_with(gw, api, req, routed, nonblocking, None)
}

fn prepare_with(
    gw: &Gateway,
    api: &ApiSpec,
    req: Request,
    routed: Routed,
    nonblocking: bool,
    body: Option<Vec<u8>>,
) -> Prepared {
    let path = routed.key.as_deref().unwrap_or(&req.path);
    let rest = proxy::rest_of_path(api, path).to_string();
    let mut x = Exchange {
        gw,
        api,
        req,
        routed,
        rest,
        now: crate::gateway::unix_now(),
        session: None,
        stored_id: String::new(),
        version: None,
        rules: None,
        strip_version: None,
        ignored: false,
        edits: Edits::default(),
        cors: Vec::new(),
        websocket: false,
        response_headers: Headers::new(),
        nonblocking,
        api_rate_counted: false,
        body,
    };
    x.websocket = gw.config.enable_websockets && is_websocket(&x.req);
    if x.websocket && nonblocking {
        // A tunnel is a worker's to set up.
        return Prepared::Defer(x.req);
    }
    // `CORS.options_passthrough`: every OPTIONS goes upstream untouched,
    // past every stage, auth included (Tyk).
    let passthrough = api.def.cors.options_passthrough && x.req.method == "OPTIONS";
    for step in api.stages.iter().filter(|_| !passthrough) {
        if step.keyed && x.ignored {
            continue;
        }
        match (step.run)(&mut x) {
            Flow::Continue => {}
            Flow::Respond(res) => {
                let mut res = with_cors(res, &x.cors);
                tally(&x, &mut res.tally, "");
                return Prepared::Respond(res);
            }
            Flow::Defer => return Prepared::Defer(x.req),
        }
    }
    for (name, value) in x.cors.drain(..) {
        x.response_headers.set(name, value);
    }
    match proxy::plan(&x) {
        Ok(mut f) => {
            f.body_prefix = x.body.take();
            tally(&x, f.tally.get_mut(), &f.address);
            Prepared::Forward(Box::new(f))
        }
        Err(mut res) => {
            tally(&x, &mut res.tally, "");
            Prepared::Respond(res)
        }
    }
}

/// Names the request's API for the metrics and, when access logs are on,
/// starts its access-log entry (Tyk's fields; the key masked, or its hash
/// with `hash_keys`, as Tyk logs it).
fn tally(x: &Exchange<'_>, t: &mut Tally, upstream: &str) {
    t.api = Some(x.api.stats.clone());
    if x.gw.metrics.access_log.is_none() {
        return;
    }
    let req = &x.req;
    let api_key = if x.stored_id.is_empty() || !x.gw.config.hash_keys {
        mask_key(&x.stored_id)
    } else {
        x.stored_id.clone()
    };
    let header = |name: &str| req.headers.get(name).unwrap_or_default().to_string();
    t.log = Some(Box::new(Entry {
        api_id: x.api.id().to_string(),
        api_name: x.api.def.name.clone(),
        org_id: x.api.def.org_id.clone(),
        api_key,
        client_ip: client::client_ip(req, &x.gw.config.trusted_proxies).to_string(),
        host: header("host"),
        method: req.method.clone(),
        path: x.path().to_string(),
        original_path: req.path.clone(),
        protocol: match req.version {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        },
        remote_addr: req.peer.to_string(),
        user_agent: header("user-agent"),
        upstream_addr: if upstream.is_empty() {
            String::new()
        } else {
            format!("http://{upstream}")
        },
        ..Entry::default()
    }));
}

/// A WebSocket handshake: a GET whose `Upgrade` is `websocket` and whose
/// `Connection` lists `upgrade` (RFC 6455 §4.1). Any other upgrade is an
/// ordinary request whose `Upgrade` is dropped as hop-by-hop.
fn is_websocket(req: &Request) -> bool {
    let listed = |name: &str, token: &str| {
        req.headers
            .get_all(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.method == "GET" && listed("upgrade", "websocket") && listed("connection", "upgrade")
}

/// `res` with the CORS headers of its request (an error is answered with
/// them too, as in Tyk).
fn with_cors(mut res: Response, cors: &[(&'static str, String)]) -> Response {
    for (name, value) in cors {
        res.headers.set(name, value.as_str());
    }
    res
}

/// Runs `api`'s stages on `req`, then forwards it upstream (blocking).
pub fn run(
    gw: &Gateway,
    api: &ApiSpec,
    req: Request,
    routed: Routed,
    body: &mut dyn Read,
) -> Response {
    let mut prefix = None;
    if api.basic_body.is_some() && req.framing != crate::http::Framing::None {
        let mut buf = Vec::new();
        let limit = gw.config.max_buffered_body;
        if let Err(e) = body.take(limit).read_to_end(&mut buf) {
            let mut res = proxy::client_body_failure(&e, gw.config.hide_generator_header);
            res.tally.api = Some(api.stats.clone());
            return res;
        }
        prefix = Some(buf);
    }
    match prepare_with(gw, api, req, routed, false, prefix) {
        Prepared::Respond(res) => res,
        Prepared::Forward(f) if f.websocket => f.upgrade(),
        Prepared::Forward(mut f) => match f.body_prefix.take() {
            Some(read) => f.send(&mut std::io::Cursor::new(read).chain(body)),
            None => f.send(body),
        },
        Prepared::Defer(_) => unreachable!("blocking stages never defer"),
    }
}
