//! Issue 11 item 6: Tyk 5.8's access logs (`access_logs: {enabled,
//! template}`) with Tyk's field names and the key masked, and `log_format:
//! "json"` making every log line a JSON object.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::gateway::merge;
use crate::support::{
    Conn, Gateway, SECRET, Upstream, api_def, default_conf, eventually, free_port, keyless_api,
    request, session_for,
};

const WAIT: Duration = Duration::from_secs(5);

fn access_lines(gw: &Gateway) -> Vec<String> {
    gw.logs()
        .into_iter()
        .filter(|l| l.contains("prefix=access-log"))
        .collect()
}

#[test]
fn access_log_lines_have_tyk_fields_and_masked_key() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({"access_logs": {"enabled": true}}),
        &[("al", api_def("al", "/al/", &up.url("/")))],
    );
    let key = gw.create_key(session_for(&["al"]));
    let r = request(
        gw.port(),
        "GET",
        "/al/some/path?q=1",
        &[("Authorization", &key), ("User-Agent", "probe/1")],
        None,
    );
    assert_eq!(r.status, 200);
    assert!(eventually(|| access_lines(&gw).len() == 1, WAIT));
    let line = access_lines(&gw).remove(0);
    let tail = &key[key.len() - 4..];
    for field in [
        "level=info".to_string(),
        "msg=\"\"".into(),
        "api_id=al".into(),
        "api_name=\"API al\"".into(),
        "org_id=default".into(),
        format!("api_key=****{tail}"),
        "client_ip=127.0.0.1".into(),
        format!("host=127.0.0.1:{}", gw.port()),
        "method=GET".into(),
        "path=/al/some/path".into(),
        "original_path=/al/some/path".into(),
        "protocol=HTTP/1.1".into(),
        "remote_addr=127.0.0.1:".into(),
        "status=200".into(),
        format!("upstream_addr={}", up.url("").trim_end_matches('/')),
        "user_agent=probe/1".into(),
        "latency_total=".into(),
        "latency_gateway=".into(),
        "upstream_latency=".into(),
    ] {
        assert!(line.contains(&format!(" {field}")), "{field} in {line}");
    }
    // A rejection is logged too, with no key to mask.
    assert_eq!(gw.get("/al/x", &[]).status, 401);
    assert!(eventually(|| access_lines(&gw).len() == 2, WAIT));
    let line = access_lines(&gw).remove(1);
    assert!(line.contains(" status=401"), "{line}");
    assert!(line.contains(" api_key=--"), "{line}");
    assert!(!line.contains("upstream_addr=http"), "{line}");
    // The key itself is never logged, by any line.
    let logs = gw.logs();
    assert!(!logs.iter().any(|l| l.contains(&key)), "{logs:#?}");
}

#[test]
fn access_log_is_off_by_default() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    assert_eq!(gw.get("/open/x", &[]).status, 200);
    assert_eq!(gw.get("/open/x", &[]).status, 200);
    thread::sleep(Duration::from_millis(200));
    assert!(access_lines(&gw).is_empty());
}

#[test]
fn access_log_unknown_template_field_stops_the_start() {
    let exited = Gateway::builder()
        .conf(json!({"access_logs": {"enabled": true, "template": ["status", "Path"]}}))
        .try_start()
        .err()
        .expect("the start fails");
    assert_ne!(exited.code(), Some(0));
    let text = exited.stderr_text();
    assert!(text.contains("access_logs.template[1]"), "{text}");
}

/// A gateway started by hand: the support's start reads text log lines.
struct JsonGateway {
    _child: Reap,
    lines: Arc<Mutex<Vec<String>>>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl JsonGateway {
    fn start(conf: Value, apps: &[(&str, Value)]) -> JsonGateway {
        JsonGateway::start_env(conf, apps, &[])
    }

    fn start_env(conf: Value, apps: &[(&str, Value)], env: &[(&str, &str)]) -> JsonGateway {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("apps")).unwrap();
        for (name, def) in apps {
            let path = dir.path().join("apps").join(format!("{name}.json"));
            std::fs::write(path, def.to_string()).unwrap();
        }
        let conf_path = dir.path().join("tyk.conf");
        std::fs::write(&conf_path, merge(default_conf(), &conf).to_string()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--conf")
            .arg(&conf_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stderr = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push(line);
            }
        });
        let mut gw = JsonGateway {
            _child: Reap(child),
            lines,
            port: 0,
            _dir: dir,
        };
        let found = eventually(
            || {
                gw.port = gw.listening_port().unwrap_or(0);
                gw.port != 0
            },
            Duration::from_secs(10),
        );
        assert!(found, "no listening line: {:#?}", gw.lines());
        gw
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The port of the "listening on ADDR (proxy and admin)" message.
    fn listening_port(&self) -> Option<u16> {
        self.lines().iter().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            let msg = v["message"].as_str()?;
            let rest = msg.strip_prefix("listening on ")?;
            let (addr, what) = rest.split_once(' ')?;
            (what == "(proxy and admin)").then_some(())?;
            addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
        })
    }
}

#[test]
fn json_log_format_makes_every_line_json_with_template_fields() {
    let up = Upstream::start();
    let gw = JsonGateway::start(
        json!({
            "log_format": "json",
            "access_logs": {"enabled": true, "template": ["api_key", "status", "path"]},
        }),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
    );
    let r = request(gw.port, "GET", "/open/j?x=1", &[], None);
    assert_eq!(r.status, 200);
    let access = || {
        gw.lines()
            .into_iter()
            .filter(|l| l.contains("\"access-log\""))
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(|| access().len() == 1, WAIT),
        "{:#?}",
        gw.lines()
    );
    for line in gw.lines() {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["time", "level", "message"] {
            assert!(v.get(key).is_some(), "{key} in {line}");
        }
        let time = v["time"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{time}"
        );
    }
    let v: Value = serde_json::from_str(&access()[0]).unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "api_key", "level", "message", "path", "prefix", "status", "time"
        ]
    );
    assert_eq!(v["status"], 200);
    assert_eq!(v["path"], "/open/j");
    assert_eq!(v["api_key"], "--");
    assert_eq!(v["level"], "info");
    assert_eq!(v["prefix"], "access-log");
}

#[test]
fn access_log_never_stalls_requests_when_stderr_is_stuck() {
    let up = Upstream::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("apps")).unwrap();
    let api = keyless_api("open", "/open/", &up.url("/"));
    std::fs::write(dir.path().join("apps/open.json"), api.to_string()).unwrap();
    let conf = merge(
        default_conf(),
        &json!({"listen_port": port, "access_logs": {"enabled": true}}),
    );
    std::fs::write(dir.path().join("tyk.conf"), conf.to_string()).unwrap();
    // stderr is a pipe nobody reads: once its buffer is full, every write
    // to it blocks.
    let mut child = Reap(
        Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .arg("--conf")
            .arg(dir.path().join("tyk.conf"))
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let _stuck = child.0.stderr.take();
    let up_at = eventually(
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        Duration::from_secs(10),
    );
    assert!(up_at, "gateway did not start");
    let mut conn = Conn::open(port);
    let started = std::time::Instant::now();
    let mut dropped = 0.0;
    // Far more lines than the pipe and the queue hold.
    for round in 0..40 {
        for _ in 0..500 {
            conn.send(b"GET /open/x HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(conn.read_response(false).unwrap().status, 200);
        }
        let text = request(
            port,
            "GET",
            "/metrics",
            &[("x-tyk-authorization", SECRET)],
            None,
        )
        .text();
        dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("gatehouse_access_log_dropped_total "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if dropped > 0.0 || started.elapsed() > Duration::from_secs(60) {
            eprintln!("dropped {dropped} after {} requests", (round + 1) * 500);
            break;
        }
    }
    assert!(dropped > 0.0, "lines were queued or written, never dropped");
}

/// A child process killed when the test ends, even by a panic.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tyk_gw_logformat_json_makes_every_line_json_without_the_file_saying_so() {
    let up = Upstream::start();
    let gw = JsonGateway::start_env(
        json!({"access_logs": {"enabled": true}}),
        &[("open", keyless_api("open", "/open/", &up.url("/")))],
        &[("TYK_GW_LOGFORMAT", "json")],
    );
    assert_eq!(request(gw.port, "GET", "/open/e", &[], None).status, 200);
    assert!(
        eventually(
            || gw.lines().iter().any(|l| l.contains("\"access-log\"")),
            WAIT
        ),
        "{:#?}",
        gw.lines()
    );
    for line in gw.lines() {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("message").is_some(), "{line}");
    }
}
