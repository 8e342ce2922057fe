//! Where a request goes: the health check, the admin API (`/tyk/…`, which
//! never proxies), or an API's pipeline. With a separate `control_api_port`
//! the admin listener serves only the first two and the proxy listener only
//! the last.
//!
//! Every decision is taken on the canonical path (`http::path`), never on
//! the bytes as sent: a path that can only be ambiguous is refused with 400
//! before routing, the API is chosen by its routing key, that API's path
//! switches (the gateway's, overridden by its `gatehouse.paths`) refuse or
//! allow what the path holds, and `path_cleaning` chooses what goes
//! upstream. All of this happens before any stage runs.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::admin;
use crate::apidef::ApiSpec;
use crate::error::{Error, admin_error, proxy_error};
use crate::gateway::Gateway;
use crate::http::path::{self, Canonical, Cleaning, PathRules, Reject};
use crate::http::{Request, Response};
use crate::metrics::text::{self, Gauges};
use crate::pipeline::{self, Prepared, Routed};
use crate::proxy;
use crate::registry::Lookup;
use crate::server::Handler;

pub struct Router {
    pub gw: Arc<Gateway>,
    /// Serve `/hello` and `/tyk/`.
    pub admin: bool,
    /// Serve APIs.
    pub proxy: bool,
}

/// Where a request is going.
enum Dest {
    Health,
    Admin,
    Metrics,
    Api(Arc<ApiSpec>, Routed),
}

impl Handler for Router {
    fn prepare(&self, req: Request) -> Prepared {
        match self.destination(&req) {
            Ok(Dest::Api(api, routed)) => pipeline::prepare(&self.gw, &api, req, routed),
            Ok(Dest::Health | Dest::Admin | Dest::Metrics) => Prepared::Work(req),
            Err(res) => Prepared::Respond(self.not_api(res)),
        }
    }

    fn sidecar(&self) -> Option<Box<dyn crate::server::Sidecar>> {
        self.gw.counters.sidecar()
    }

    fn handle(&self, req: Request, body: &mut dyn Read) -> Response {
        let res = match self.destination(&req) {
            Ok(Dest::Api(api, routed)) => {
                return pipeline::run(&self.gw, &api, req, routed, body);
            }
            Ok(Dest::Health) => health(&self.gw, &req),
            Ok(Dest::Admin) => admin::handle(&self.gw, req, body),
            Ok(Dest::Metrics) => self.metrics(&req),
            Err(res) => self.not_api(res),
        };
        let mut res = res;
        res.tally.skip = true;
        res
    }
}

impl Router {
    /// The admin API or an API for `req`; Err is the answer (400, 404, a
    /// redirect). The admin API gets the path as sent.
    fn destination(&self, req: &Request) -> Result<Dest, Response> {
        if req.path == "*" {
            return Err(not_found());
        }
        let canon = path::canonicalize(&req.path).map_err(|r| self.refuse(r, req))?;
        if self.admin && canon.key == self.gw.config.health_check_path {
            return Ok(Dest::Health);
        }
        if self.admin && (canon.key == "/tyk" || canon.key.starts_with("/tyk/")) {
            return Ok(Dest::Admin);
        }
        if self.admin && canon.key == "/metrics" {
            return Ok(Dest::Metrics);
        }
        let registry = self.gw.registry_now();
        let api = match registry.lookup(&canon.key) {
            Some(Lookup::Api(api)) if self.proxy => api.clone(),
            _ => {
                self.gw
                    .config
                    .paths
                    .check(canon.found)
                    .map_err(|r| self.refuse(r, req))?;
                return Err(not_found());
            }
        };
        let rules = self.gw.config.paths.with(&api.def.gatehouse.paths);
        let routed = self.routed(&api, &canon, rules, req)?;
        Ok(Dest::Api(api, routed))
    }

    /// Applies `rules` to a path routed to `api`: refusals, `path_cleaning`,
    /// and the path that goes upstream.
    fn routed(
        &self,
        api: &ApiSpec,
        canon: &Canonical<'_>,
        rules: PathRules,
        req: &Request,
    ) -> Result<Routed, Response> {
        if canon.is_clean() {
            return Ok(Routed::default());
        }
        rules.check(canon.found).map_err(|r| self.refuse(r, req))?;
        let sent = if rules.cleaning == Cleaning::Off {
            canon.raw.to_string()
        } else {
            let f =
                path::forwarded(canon, rules.escaped_slashes).map_err(|r| self.refuse(r, req))?;
            if f.cleaned && matches!(rules.cleaning, Cleaning::Redirect | Cleaning::Redirect308) {
                return Err(redirect(rules.cleaning, &f.path, &req.query));
            }
            f.path
        };
        let key = canon.key.to_string();
        let upstream = if !api.def.proxy.strip_listen_path {
            (sent != key).then_some(sent)
        } else if sent == key {
            None
        } else {
            let rest = proxy::strip_aligned(api, &key, &sent).map_err(|r| self.refuse(r, req))?;
            Some(rest.to_string())
        };
        Ok(Routed {
            key: Some(key),
            upstream,
        })
    }

    /// An answer no API gave (404, refused path, redirect): counted as
    /// unrouted on a proxy listener, not at all on the admin one.
    fn not_api(&self, mut res: Response) -> Response {
        res.tally.skip = !self.proxy;
        res
    }

    /// `GET /metrics`: the Prometheus text format. On a listener shared
    /// with the proxy it needs the admin secret, as `/tyk/` does.
    fn metrics(&self, req: &Request) -> Response {
        if self.proxy && !admin::authorised(&self.gw, req) {
            return admin_error(
                403,
                "Attempted administrative access with invalid or missing key!",
            );
        }
        if req.method != "GET" && req.method != "HEAD" {
            return admin_error(405, "Method Not Allowed");
        }
        let gw = &self.gw;
        let gauges = Gauges {
            path_rejects: Reject::ALL
                .iter()
                .map(|r| (r.name(), gw.path_rejects[r.index()].load(Ordering::Relaxed)))
                .collect(),
            store_write_errors: gw.store.write_errors(),
            session_hits: gw.sessions.hits.get(),
            session_misses: gw.sessions.misses.get(),
            apis_loaded: gw.registry().len(),
            policies_loaded: gw.policies().len(),
        };
        Response::bytes(200, text::CONTENT_TYPE, text::encode(&gw.metrics, &gauges))
    }

    /// A 400 for a refused path: logged at debug, counted, the reason named.
    fn refuse(&self, reason: Reject, req: &Request) -> Response {
        self.gw.path_rejects[reason.index()].fetch_add(1, Ordering::Relaxed);
        log::debug!(
            "router: {} {} from {}: path refused ({})",
            req.method,
            req.path.escape_debug(),
            req.peer,
            reason.name()
        );
        let message = format!(
            "invalid request path ({}): {}",
            reason.name(),
            reason.message()
        );
        proxy_error(400, &message, self.gw.config.hide_generator_header)
    }
}

fn not_found() -> Response {
    Response::text(404, "Not Found")
}

/// 301 (or 308) to the cleaned path, query kept (gorilla/mux's cleaning).
fn redirect(cleaning: Cleaning, path: &str, query: &str) -> Response {
    let status = if cleaning == Cleaning::Redirect308 {
        308
    } else {
        301
    };
    let location = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut res = Response::new(status);
    res.headers.set("Location", location);
    res
}

/// `GET /hello` (CONTRACT §1.2), with the store reported as `redis`.
fn health(gw: &Gateway, req: &Request) -> Response {
    if req.method != "GET" {
        return admin_error(405, "Method Not Allowed");
    }
    // Tyk answers 200 either way; probes read `status` (and `output`).
    let store_ok = gw.store.healthy() && gw.store.get("gatehouse-health").is_ok();
    let (status, output) = if store_ok {
        ("pass", "")
    } else {
        (
            "fail",
            ",\"output\":\"store writes are failing; see the log\"",
        )
    };
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    // Built by hand to keep Tyk's field order.
    let body = format!(
        "{{\"status\":\"{status}\",\"version\":\"v{}\",\"description\":\"Tyk GW\",\"details\":{{\"redis\":{{\"status\":\"{status}\"{output},\"componentType\":\"datastore\",\"time\":\"{now}\"}}}}}}",
        env!("CARGO_PKG_VERSION")
    );
    Response::bytes(200, "application/json", body + "\n")
}

/// A store failure on an admin write: logged, answered 500.
pub fn store_failure(e: &Error, message: &str) -> Response {
    log::error!("admin: {e}");
    admin_error(500, message)
}
