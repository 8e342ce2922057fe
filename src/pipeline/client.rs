//! Who is asking, before auth (CONTRACT §3.5 steps 2–3): CORS (a preflight
//! is answered here, 204; other requests get their CORS headers on
//! whatever answers them) and the IP allow and deny lists.
//!
//! The client address is the socket peer. Tyk believes `X-Real-IP` and the
//! first `X-Forwarded-For` entry from anyone, which lets a client name its
//! own address past an IP list; we believe them only from a peer in
//! `gatehouse.trusted_proxies`, and then take the nearest address in
//! `X-Forwarded-For` that is not itself a trusted proxy.

use std::net::IpAddr;

use crate::apidef::{Cidr, Cors};
use crate::http::{Request, Response};

use super::{Exchange, Flow};

pub fn cors(x: &mut Exchange<'_>) -> Flow {
    let Some(cors) = &x.api.cors else {
        return Flow::Continue;
    };
    if Cors::is_preflight(&x.req) {
        let mut res = Response::new(204);
        for (name, value) in cors.preflight(&x.req) {
            res.headers.set(name, value);
        }
        return Flow::Respond(res);
    }
    x.cors = cors.actual(&x.req);
    if x.req.method == "OPTIONS" {
        // Tyk answers any other OPTIONS here too: 200, empty.
        return Flow::Respond(Response::new(200));
    }
    Flow::Continue
}

pub fn ip_lists(x: &mut Exchange<'_>) -> Flow {
    let ip = client_ip(&x.req, &x.gw.config.trusted_proxies);
    if x.api.ip.admits(ip) {
        return Flow::Continue;
    }
    log::debug!("api {}: client {ip} refused by its IP lists", x.api.id());
    x.reject(403, "access from this IP has been disallowed")
}

/// The client's address: the peer, or what a trusted proxy says.
pub fn client_ip(req: &Request, trusted: &[Cidr]) -> IpAddr {
    let peer = req.peer.ip();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = req
        .headers
        .get_all("x-forwarded-for")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse().ok())
        .collect();
    if let Some(ip) = forwarded.iter().rev().find(|ip| !is_trusted(**ip)) {
        return *ip;
    }
    req.headers
        .get("x-real-ip")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_headers_count_only_from_trusted_peers() {
        let trusted = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        let mut req = Request::fake(
            "GET",
            "/",
            &[
                ("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 10.0.0.5"),
                ("X-Real-IP", "3.3.3.3"),
            ],
        );
        assert_eq!(
            client_ip(&req, &trusted),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(&req, &[]), req.peer.ip());
        req.headers.remove("x-forwarded-for");
        assert_eq!(
            client_ip(&req, &trusted),
            "3.3.3.3".parse::<IpAddr>().unwrap()
        );
    }
}
