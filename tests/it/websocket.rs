//! Issue 10, item 6: WebSockets. A handshake is authenticated and counted
//! once, forwarded with its `Upgrade`, and only a `101` from the upstream
//! turns the connection into a tunnel, relayed both ways until a side
//! closes or the idle timeout passes. Real peers on both ends
//! (`tungstenite`). Then the tries to get around it: no key, a quota that
//! should stop a second socket, another `Upgrade`, an upstream that does
//! not switch.

use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use serde_json::json;
use tungstenite::{Message, client::IntoClientRequest};

use crate::support::*;

/// A WebSocket echo server on loopback: every text message comes back
/// prefixed with `echo: `. Returns its port.
pub(crate) fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                if let Ok(mut ws) = tungstenite::accept(stream) {
                    echo(&mut ws);
                }
            });
        }
    });
    port
}

/// Answers every text message with `echo: ` and the text, until close.
pub(crate) fn echo<S: std::io::Read + std::io::Write>(ws: &mut tungstenite::WebSocket<S>) {
    while let Ok(msg) = ws.read() {
        let answer = match msg {
            Message::Text(t) => Message::text(format!("echo: {t}")),
            Message::Close(_) => return,
            _ => continue,
        };
        if ws.send(answer).is_err() {
            return;
        }
    }
}

fn ws_api(port: u16) -> serde_json::Value {
    api_def("ws", "/ws/", &format!("http://127.0.0.1:{port}/"))
}

/// Opens a WebSocket through the gateway; Err is the HTTP status it got.
fn open(gw: &Gateway, key: Option<&str>) -> Result<tungstenite::WebSocket<TcpStream>, u16> {
    let mut req = format!("ws://127.0.0.1:{}/ws/chat", gw.port())
        .into_client_request()
        .unwrap();
    if let Some(k) = key {
        req.headers_mut()
            .insert("Authorization", k.parse().unwrap());
    }
    let stream = TcpStream::connect(("127.0.0.1", gw.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    match tungstenite::client(req, stream) {
        Ok((ws, res)) => {
            assert_eq!(res.status(), 101);
            Ok(ws)
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(res))) => {
            Err(res.status().as_u16())
        }
        Err(e) => panic!("handshake: {e}"),
    }
}

fn round_trip(ws: &mut tungstenite::WebSocket<TcpStream>, text: &str) -> String {
    ws.send(Message::text(text)).unwrap();
    match ws.read().unwrap() {
        Message::Text(t) => t.to_string(),
        other => panic!("got {other:?}"),
    }
}

#[test]
fn a_websocket_round_trips_through_the_gateway_with_a_key() {
    let gw = Gateway::start(json!({}), &[("ws", ws_api(echo_server()))]);
    let key = gw.create_key(session_for(&["ws"]));
    let mut ws = open(&gw, Some(&key)).unwrap_or_else(|s| panic!("{s}: {:?}", gw.logs()));
    assert_eq!(round_trip(&mut ws, "hello"), "echo: hello");
    // Many messages, both ways, on the one connection.
    for i in 0..50 {
        assert_eq!(round_trip(&mut ws, &format!("m{i}")), format!("echo: m{i}"));
    }
    let big = "x".repeat(200_000);
    assert_eq!(round_trip(&mut ws, &big), format!("echo: {big}"));
    ws.close(None).unwrap();
    // The gateway still serves HTTP.
    assert_eq!(gw.get("/hello", &[]).status, 200);
}

#[test]
fn a_websocket_without_a_key_is_refused_before_any_upgrade() {
    let gw = Gateway::start(json!({}), &[("ws", ws_api(echo_server()))]);
    assert_eq!(open(&gw, None).err(), Some(401));
    assert_eq!(open(&gw, Some("nope")).err(), Some(403));
}

#[test]
fn a_handshake_counts_once_against_the_quota() {
    let gw = Gateway::start(json!({}), &[("ws", ws_api(echo_server()))]);
    let mut s = session_for(&["ws"]);
    s["quota_max"] = json!(1);
    s["quota_remaining"] = json!(1);
    s["quota_renewal_rate"] = json!(3600);
    let key = gw.create_key(s);
    let mut ws = open(&gw, Some(&key)).expect("the first socket");
    // Messages on an open socket are not requests.
    for i in 0..5 {
        assert_eq!(round_trip(&mut ws, &format!("{i}")), format!("echo: {i}"));
    }
    assert_eq!(open(&gw, Some(&key)).err(), Some(403), "quota spent");
}

#[test]
fn an_upstream_that_does_not_switch_gets_no_tunnel() {
    // A plain HTTP upstream answers the handshake 200.
    let up = Upstream::start();
    let gw = Gateway::start(json!({}), &[("ws", api_def("ws", "/ws/", &up.url("/")))]);
    let key = gw.create_key(session_for(&["ws"]));
    assert_eq!(open(&gw, Some(&key)).err(), Some(200));
    let seen = up.last_request().unwrap();
    assert_eq!(
        seen.header("upgrade"),
        Some("websocket"),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.header("connection"), Some("Upgrade"));
}

#[test]
fn websockets_can_be_switched_off() {
    let gw = Gateway::start(
        json!({"http_server_options": {"enable_websockets": false}}),
        &[("ws", ws_api(echo_server()))],
    );
    let key = gw.create_key(session_for(&["ws"]));
    // Forwarded as plain HTTP without its Upgrade: the echo server cannot
    // answer that as a handshake.
    assert!(open(&gw, Some(&key)).is_err());
}

#[test]
fn an_idle_tunnel_is_closed() {
    let gw = Gateway::start(
        json!({"gatehouse": {"idle_timeout_secs": 1}}),
        &[("ws", ws_api(echo_server()))],
    );
    let key = gw.create_key(session_for(&["ws"]));
    let mut ws = open(&gw, Some(&key)).expect("101");
    assert_eq!(round_trip(&mut ws, "a"), "echo: a");
    thread::sleep(Duration::from_millis(2500));
    let after = ws.send(Message::text("late")).and_then(|_| ws.read());
    assert!(
        after.is_err(),
        "the tunnel outlived its idle timeout: {after:?}"
    );
}
