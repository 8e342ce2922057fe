//! The Tyk Gateway API under `/tyk/` (CONTRACT §1): the secret check,
//! routing by path and method, reading bounded JSON bodies, and the
//! reload endpoints. Keys and APIs have their own modules. The admin API
//! never proxies.

mod apis;
mod keys;
mod policies;

use std::io::{Read, Write};
use std::path::Path;

use log::warn;
use subtle::ConstantTimeEq;

use crate::error::admin_error;
use crate::gateway::Gateway;
use crate::http::{Framing, Request, Response};

/// What the admin handlers get: the request, its path segments after
/// `/tyk/`, and the body.
pub struct Call<'a> {
    pub gw: &'a Gateway,
    pub req: Request,
    pub body: &'a mut dyn Read,
}

impl Call<'_> {
    /// The body, at most `admin_max_body` bytes; Err is the response to send.
    pub fn read_body(&mut self) -> Result<Vec<u8>, Response> {
        let max = self.gw.config.admin_max_body;
        if matches!(self.req.framing, Framing::Length(n) if n > max) {
            return Err(admin_error(413, "Request body too large").with_close());
        }
        let mut buf = Vec::new();
        let read = self.body.take(max + 1).read_to_end(&mut buf);
        match read {
            Err(_) => Err(admin_error(400, "Request malformed").with_close()),
            Ok(_) if buf.len() as u64 > max => {
                Err(admin_error(413, "Request body too large").with_close())
            }
            Ok(_) => Ok(buf),
        }
    }

    pub fn query(&self, name: &str) -> String {
        self.req.query_param(name).unwrap_or_default()
    }
}

/// `{"key":k,"status":"ok","action":a}` plus newline (CONTRACT §1 `OK`).
pub fn ok(action: &str, key: &str, key_hash: Option<&str>) -> Response {
    let mut body = Vec::with_capacity(64 + key.len() + key_hash.map_or(0, str::len));
    body.extend_from_slice(b"{\"key\":");
    json_str(&mut body, key);
    body.extend_from_slice(b",\"status\":\"ok\",\"action\":");
    json_str(&mut body, action);
    if let Some(h) = key_hash {
        body.extend_from_slice(b",\"key_hash\":");
        json_str(&mut body, h);
    }
    body.extend_from_slice(b"}\n");
    Response::bytes(200, "application/json", body)
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Any serialisable value as a 200 JSON body.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            Response::bytes(200, "application/json", body)
        }
        Err(e) => {
            log::error!("admin: cannot encode response: {e}");
            admin_error(500, "Marshalling failed")
        }
    }
}

/// Writes a file so that it survives a crash once this returns: a temp
/// file, fsync, rename, then fsync of the folder.
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn not_found() -> Response {
    Response::text(404, "404 page not found\n")
}

fn method_not_supported() -> Response {
    admin_error(405, "Method not supported")
}

/// Checks the secret (constant time) and the loopback rule.
pub fn authorised(gw: &Gateway, req: &Request) -> bool {
    let cfg = &gw.config;
    if cfg.admin_loopback_only() && !req.peer.ip().is_loopback() {
        warn!(
            "admin: refused {} (admin API is loopback-only with an empty or sample secret)",
            req.peer
        );
        return false;
    }
    if cfg.secret.is_empty() {
        return true;
    }
    let given = req
        .headers
        .get_bytes("x-tyk-authorization")
        .unwrap_or_default();
    bool::from(given.ct_eq(cfg.secret.as_bytes()))
}

pub fn handle(gw: &Gateway, req: Request, body: &mut dyn Read) -> Response {
    if !authorised(gw, &req) {
        return admin_error(
            403,
            "Attempted administrative access with invalid or missing key!",
        );
    }
    let path = req.path.trim_end_matches('/').to_string();
    let segments: Vec<&str> = path
        .trim_start_matches("/tyk")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let method = req.method.clone();
    let mut call = Call { gw, req, body };
    match (segments.as_slice(), method.as_str()) {
        (["keys", "policy", id], "POST") => keys::set_policies(&mut call, id),
        (["keys", "policy", _], _) => method_not_supported(),
        (["keys"], "GET") => keys::list(&call),
        (["keys"], "POST") => keys::add(&mut call, None),
        (["keys", "create"], "POST") => keys::create(&mut call),
        (["keys", "preview"], "POST") => keys::preview(&mut call),
        (["keys", id], "GET") => keys::get(&call, id),
        (["keys", id], "POST") => keys::add(&mut call, Some(id)),
        (["keys", id], "PUT") => keys::update(&mut call, id),
        (["keys", id], "DELETE") => keys::delete(&call, id),
        (["keys"] | ["keys", _], _) => method_not_supported(),
        (["apis"], "GET") => apis::list(&call),
        (["apis"] | ["apis", _], "POST") => apis::add(&mut call),
        (["apis", id], "GET") => apis::get(&call, id),
        (["apis", id], "PUT") => apis::update(&mut call, id),
        (["apis", id], "DELETE") => apis::delete(&call, id),
        (["apis"] | ["apis", _], _) => method_not_supported(),
        (["policies"], "GET") => policies::list(&call),
        (["policies", id], "GET") => policies::get(&call, id),
        (["policies"] | ["policies", _], "POST") => policies::write(&mut call, None),
        (["policies", id], "PUT") => policies::write(&mut call, Some(id)),
        (["policies"], "PUT") => admin_error(400, "Must specify an apiID to update"),
        (["policies", id], "DELETE") => policies::delete(&call, id),
        (["policies"], "DELETE") => admin_error(400, "Must specify an apiID to delete"),
        (["policies"] | ["policies", _], _) => method_not_supported(),
        (["cache", "jwks"], "DELETE") => invalidate_jwks(&call, None),
        (["cache", "jwks", id], "DELETE") => invalidate_jwks(&call, Some(id)),
        (["cache", "jwks"] | ["cache", "jwks", _], _) => method_not_supported(),
        (["reload"], "GET") => reload(&call, true),
        (["reload", "group"], "GET") => reload(&call, false),
        (["reload"] | ["reload", "group"], _) => method_not_supported(),
        _ => not_found(),
    }
}

/// `DELETE /tyk/cache/jwks[/{apiID}]`: the next token fetches its JWKS
/// anew (idempotent, as Tyk: an unknown API id is fine).
fn invalidate_jwks(call: &Call<'_>, api: Option<&str>) -> Response {
    call.gw.jwks.invalidate(api);
    Response::bytes(
        200,
        "application/json",
        "{\"status\":\"ok\",\"message\":\"cache invalidated\"}\n",
    )
}

/// `GET /tyk/reload[?block=true]` and `/tyk/reload/group`.
fn reload(call: &Call<'_>, may_block: bool) -> Response {
    let block = may_block && call.query("block") == "true";
    // The group: every gateway on the shared store, this one included (it
    // hears its own message); without one, just this gateway.
    if may_block || !call.gw.store.reload_all() {
        call.gw.request_reload(block);
    }
    Response::bytes(
        200,
        "application/json",
        "{\"status\":\"ok\",\"message\":\"\"}\n",
    )
}
