//! The built-in echo upstream (httpbin-style): answers any request with its
//! method, path, query, headers and body as JSON, so the sample APIs work
//! on a machine with no network. On when tyk.conf has an `echo_upstream`
//! block. It is an upstream like any other: it never sees gateway state.
//! A body-less request is answered on the event loop, never by a worker:
//! the workers may all be waiting on this very upstream.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::{Value, json};

use crate::http::message::query_pairs;
use crate::http::{Framing, Request, Response};
use crate::pipeline::Prepared;
use crate::server::Handler;

/// Largest body echoed back; the rest is counted, not kept.
const MAX_ECHO: u64 = 1024 * 1024;

pub struct Echo;

impl Handler for Echo {
    fn prepare(&self, req: Request) -> Prepared {
        if req.framing != Framing::None {
            return Prepared::Defer(req);
        }
        Prepared::Respond(self.handle(req, &mut std::io::empty()))
    }

    fn handle(&self, req: Request, body: &mut dyn Read) -> Response {
        // An upstream, not API traffic: never in the gateway's metrics.
        let mut res = reply(req, body);
        res.tally.skip = true;
        res
    }
}

fn reply(req: Request, body: &mut dyn Read) -> Response {
    let mut kept = Vec::new();
    if body.take(MAX_ECHO).read_to_end(&mut kept).is_err() {
        return Response::text(400, "bad body").with_close();
    }
    let rest = std::io::copy(body, &mut std::io::sink()).unwrap_or(0);
    let mut headers = BTreeMap::new();
    for (name, value) in req.headers.iter() {
        headers.insert(
            name.to_string(),
            Value::from(String::from_utf8_lossy(value).into_owned()),
        );
    }
    let args: BTreeMap<String, String> = query_pairs(&req.query).collect();
    let reply = json!({
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "args": args,
        "headers": headers,
        "body": String::from_utf8_lossy(&kept),
        "body_bytes": kept.len() as u64 + rest,
        "origin": req.peer.ip().to_string(),
    });
    let mut text = serde_json::to_vec_pretty(&reply).unwrap_or_default();
    text.push(b'\n');
    Response::bytes(200, "application/json", text)
}
