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
use crate::counters::Counted;
use crate::error::{Error, proxy_error};
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
    /// Only when `Exchange::nonblocking`: the stage set `waiting`, what
    /// to count in shared counters; the request waits for their answer
    /// off the loop (`Prepared::Count`) and comes back to the same stage
    /// with `counted` set.
    Park,
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
    /// What a parking stage asks the shared counters (`Flow::Park`).
    pub waiting: Option<limit::Waiting>,
    /// Their answer, when the request comes back to that stage.
    pub counted: Option<Result<Counted, Error>>,
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
    /// Needs a worker, and so will the connection's next requests (the
    /// admin API, health, metrics: no fast path), so the worker keeps it.
    Work(Request),
    /// Waits for the shared counters: `Parked::start`, then, once its
    /// `done` has it back, `Parked::resume`.
    Count(Box<Parked>),
}

/// Runs `api`'s stages on `req` without forwarding it and without
/// blocking (on the event loop): a stage that would block (store read,
/// throttle wait) defers, and one that counts in shared counters parks.
pub fn prepare(gw: &Arc<Gateway>, api: &Arc<ApiSpec>, req: Request, routed: Routed) -> Prepared {
    prepare_with(gw, api, req, routed, Some((gw, api)), None)
}

/// `nonblocking`: the gateway and API a parked request keeps (None: run
/// on a worker, blocking allowed).
type Loop<'a> = Option<(&'a Arc<Gateway>, &'a Arc<ApiSpec>)>;

fn prepare_with(
    gw: &Gateway,
    api: &ApiSpec,
    req: Request,
    routed: Routed,
    nonblocking: Loop<'_>,
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
        nonblocking: nonblocking.is_some(),
        api_rate_counted: false,
        body,
        waiting: None,
        counted: None,
    };
    x.websocket = gw.config.enable_websockets && is_websocket(&x.req);
    if x.websocket && x.nonblocking {
        // A tunnel is a worker's to set up.
        return Prepared::Defer(x.req);
    }
    proceed(x, 0, nonblocking)
}

/// Runs the stages from index `from` on, then plans the forward.
fn proceed(mut x: Exchange<'_>, from: usize, nonblocking: Loop<'_>) -> Prepared {
    // `CORS.options_passthrough`: every OPTIONS goes upstream untouched,
    // past every stage, auth included (Tyk).
    let passthrough = x.api.def.cors.options_passthrough && x.req.method == "OPTIONS";
    let stages = if passthrough {
        &[][..]
    } else {
        &x.api.stages[..]
    };
    for (i, step) in stages.iter().enumerate().skip(from) {
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
            Flow::Park => {
                let (Some((gw, api)), Some(waiting)) = (nonblocking, x.waiting.take()) else {
                    unreachable!("only a nonblocking stage parks, after saying what it waits for")
                };
                return Prepared::Count(Box::new(Parked {
                    gw: gw.clone(),
                    api: api.clone(),
                    stage: i,
                    waiting: Some(waiting),
                    held: Held::from(x),
                }));
            }
        }
    }
    for (name, value) in x.cors.drain(..) {
        x.response_headers.set(name, value);
    }
    match proxy::plan(&mut x) {
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

/// A request waiting for the shared counters' answer, off the event
/// loop: everything its stages learned so far, owned.
pub struct Parked {
    gw: Arc<Gateway>,
    api: Arc<ApiSpec>,
    /// The stage that parked it; it runs again with the answer.
    stage: usize,
    waiting: Option<limit::Waiting>,
    held: Held,
}

impl Parked {
    /// Asks the counters; `done` gets the request back, answer included,
    /// on whichever thread the answer arrives.
    pub fn start(mut self: Box<Self>, done: Box<dyn FnOnce(Box<Parked>) + Send>) {
        let waiting = self
            .waiting
            .take()
            .expect("a parked request waits for something");
        let gw = self.gw.clone();
        gw.counters.count_later(
            &waiting.ask(),
            crate::gateway::unix_now_ms(),
            Box::new(move |answer| {
                self.held.counted = Some(answer);
                done(self);
            }),
        );
    }

    /// Runs the rest of the stages, from the one that parked, with the
    /// counters' answer; never blocks (it may park again or defer).
    pub fn resume(self: Box<Self>) -> Prepared {
        let Parked {
            gw,
            api,
            stage,
            held,
            ..
        } = *self;
        let x = held.into_exchange(&gw, &api);
        proceed(x, stage, Some((&gw, &api)))
    }
}

/// An `Exchange` without its borrows (the gateway, the API and its
/// endpoint rules, found again from the version when it resumes).
struct Held {
    req: Request,
    routed: Routed,
    rest: String,
    now: i64,
    session: Option<Arc<Session>>,
    stored_id: String,
    version: Option<String>,
    strip_version: Option<String>,
    ignored: bool,
    edits: Edits,
    cors: Vec<(&'static str, String)>,
    websocket: bool,
    response_headers: Headers,
    api_rate_counted: bool,
    body: Option<Vec<u8>>,
    counted: Option<Result<Counted, Error>>,
}

impl From<Exchange<'_>> for Held {
    fn from(x: Exchange<'_>) -> Held {
        Held {
            req: x.req,
            routed: x.routed,
            rest: x.rest,
            now: x.now,
            session: x.session,
            stored_id: x.stored_id,
            version: x.version,
            strip_version: x.strip_version,
            ignored: x.ignored,
            edits: x.edits,
            cors: x.cors,
            websocket: x.websocket,
            response_headers: x.response_headers,
            api_rate_counted: x.api_rate_counted,
            body: x.body,
            counted: x.counted,
        }
    }
}

impl Held {
    fn into_exchange<'a>(self, gw: &'a Gateway, api: &'a ApiSpec) -> Exchange<'a> {
        Exchange {
            gw,
            api,
            rules: self.version.as_ref().and_then(|v| api.endpoints.get(v)),
            req: self.req,
            routed: self.routed,
            rest: self.rest,
            now: self.now,
            session: self.session,
            stored_id: self.stored_id,
            version: self.version,
            strip_version: self.strip_version,
            ignored: self.ignored,
            edits: self.edits,
            cors: self.cors,
            websocket: self.websocket,
            response_headers: self.response_headers,
            nonblocking: true,
            api_rate_counted: self.api_rate_counted,
            body: self.body,
            waiting: None,
            counted: self.counted,
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
        res.headers.set(*name, value.as_str());
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
    match prepare_with(gw, api, req, routed, None, prefix) {
        Prepared::Respond(res) => res,
        Prepared::Forward(mut f) if f.websocket => f.upgrade(),
        Prepared::Forward(mut f) => match f.body_prefix.take() {
            Some(read) => f.send(&mut std::io::Cursor::new(read).chain(body)),
            None => f.send(body),
        },
        Prepared::Defer(_) | Prepared::Work(_) | Prepared::Count(_) => {
            unreachable!("blocking stages never defer or park")
        }
    }
}
