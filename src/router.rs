//! Where a request goes: the health check, the admin API (`/tyk/…`, which
//! never proxies), or an API's pipeline. With a separate `control_api_port`
//! the admin listener serves only the first two and the proxy listener only
//! the last.

use std::io::Read;
use std::sync::Arc;

use crate::admin;
use crate::error::{Error, admin_error};
use crate::gateway::Gateway;
use crate::http::{Request, Response};
use crate::pipeline::{self, Prepared};
use crate::registry::Lookup;
use crate::server::Handler;

pub struct Router {
    pub gw: Arc<Gateway>,
    /// Serve `/hello` and `/tyk/`.
    pub admin: bool,
    /// Serve APIs.
    pub proxy: bool,
}

impl Handler for Router {
    fn prepare(&self, req: Request) -> Prepared {
        let admin = self.admin
            && (req.path == self.gw.config.health_check_path
                || req.path == "/tyk"
                || req.path.starts_with("/tyk/"));
        if admin || !self.proxy {
            return Prepared::Defer(req);
        }
        let registry = self.gw.registry();
        match registry.lookup(&req.path) {
            Some(Lookup::Api(api)) => pipeline::prepare(&self.gw, api, req, true),
            _ => Prepared::Respond(Response::text(404, "Not Found")),
        }
    }

    fn handle(&self, req: Request, body: &mut dyn Read) -> Response {
        if self.admin {
            if req.path == self.gw.config.health_check_path {
                return health(&self.gw, &req);
            }
            if req.path == "/tyk" || req.path.starts_with("/tyk/") {
                return admin::handle(&self.gw, req, body);
            }
        }
        if self.proxy {
            let registry = self.gw.registry();
            if let Some(Lookup::Api(api)) = registry.lookup(&req.path) {
                let api = api.clone();
                return pipeline::run(&self.gw, &api, req, body);
            }
        }
        Response::text(404, "Not Found")
    }
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
