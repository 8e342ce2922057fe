//! Running the real `gatehouse` binary: a temp dir with tyk.conf and apps,
//! the child process, its log lines, and its ports.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::http::{Resp, request};

/// The admin secret tests use unless their config says otherwise.
pub const SECRET: &str = "test-secret";

/// How long a gateway may take to print its listening lines.
pub const START_DEADLINE: Duration = Duration::from_secs(10);

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_gatehouse")
}

/// The config every test starts from; keys given by a test replace these.
pub fn default_conf() -> Value {
    json!({
        "listen_address": "127.0.0.1",
        "listen_port": 0,
        "secret": SECRET,
        "app_path": "apps",
        "storage": {"type": "sled", "path": "data"},
    })
}

/// Top-level keys of `over` replace those of `base`.
pub fn merge(mut base: Value, over: &Value) -> Value {
    if let (Some(b), Some(o)) = (base.as_object_mut(), over.as_object()) {
        for (k, v) in o {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

/// A gateway that exited instead of starting.
pub struct Exited {
    pub status: ExitStatus,
    pub stderr: Vec<String>,
    pub dir: TempDir,
}

impl Exited {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }

    /// The first stderr line starting with `error:`.
    pub fn error_line(&self) -> Option<&str> {
        self.stderr
            .iter()
            .map(String::as_str)
            .find(|l| l.starts_with("error:"))
    }
}

impl std::fmt::Debug for Exited {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exited with {:?}:\n{}", self.status, self.stderr_text())
    }
}

/// Which listeners to wait for besides the proxy one.
#[derive(Clone, Copy, Debug, Default)]
struct Expect {
    admin: bool,
    echo: bool,
}

/// Builds the temp dir and starts a gateway. `Gateway::start` covers the
/// common case.
pub struct GatewayBuilder {
    dir: Option<TempDir>,
    conf: Value,
    defaults: bool,
    conf_name: String,
    raw_conf: Option<String>,
    apps: Vec<(String, Value)>,
    files: Vec<(PathBuf, Vec<u8>)>,
    apps_dir: bool,
    cwd: Option<PathBuf>,
    nofile: Option<u64>,
    env: Vec<(String, String)>,
}

impl Default for GatewayBuilder {
    fn default() -> Self {
        GatewayBuilder {
            dir: None,
            conf: json!({}),
            defaults: true,
            conf_name: "tyk.conf".into(),
            raw_conf: None,
            apps: Vec::new(),
            files: Vec::new(),
            apps_dir: true,
            cwd: None,
            nofile: None,
            env: Vec::new(),
        }
    }
}

impl GatewayBuilder {
    /// Config keys merged over `default_conf()` (top level).
    pub fn conf(mut self, conf: Value) -> Self {
        self.conf = merge(self.conf, &conf);
        self
    }

    /// Use `conf` exactly as given, without the defaults.
    pub fn conf_exact(mut self, conf: Value) -> Self {
        self.conf = conf;
        self.defaults = false;
        self
    }

    /// Write the config verbatim to `name` (e.g. a TOML `tyk.toml`).
    pub fn raw_conf(mut self, name: &str, text: &str) -> Self {
        self.conf_name = name.into();
        self.raw_conf = Some(text.into());
        self
    }

    /// An app definition written as `apps/<name>.json`.
    pub fn app(mut self, name: &str, def: Value) -> Self {
        self.apps.push((name.into(), def));
        self
    }

    /// Any file, relative to the temp dir.
    pub fn file(mut self, rel: &str, bytes: impl Into<Vec<u8>>) -> Self {
        self.files.push((rel.into(), bytes.into()));
        self
    }

    /// Do not create `apps/` (unless an app is given).
    pub fn no_apps_dir(mut self) -> Self {
        self.apps_dir = false;
        self
    }

    /// Start in this existing dir (e.g. one a stopped gateway used).
    pub fn dir(mut self, dir: TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// The child's working directory (default: the temp dir).
    pub fn cwd(mut self, cwd: PathBuf) -> Self {
        self.cwd = Some(cwd);
        self
    }

    /// An environment variable for the child (e.g. a `TYK_GW_*` override).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Start the child under `sh -c 'ulimit -n N && exec …'` (soft and hard
    /// open-file limit N).
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    fn prepare(self) -> (TempDir, PathBuf, Option<PathBuf>, Expect) {
        let dir = self
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("temp dir"));
        let conf_path = dir.path().join(&self.conf_name);
        let expect;
        match &self.raw_conf {
            Some(text) => {
                std::fs::write(&conf_path, text).unwrap();
                expect = Expect {
                    admin: text.contains("control_api_port"),
                    echo: text.contains("echo_upstream"),
                };
            }
            None => {
                let conf = if self.defaults {
                    merge(default_conf(), &self.conf)
                } else {
                    self.conf.clone()
                };
                expect = Expect {
                    admin: conf["control_api_port"].as_i64().unwrap_or(0) != 0,
                    echo: conf.get("echo_upstream").is_some_and(|e| !e.is_null()),
                };
                std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
            }
        }
        let apps = dir.path().join("apps");
        if self.apps_dir || !self.apps.is_empty() {
            std::fs::create_dir_all(&apps).unwrap();
        }
        for (name, def) in &self.apps {
            let file = if name.ends_with(".json") {
                name.clone()
            } else {
                format!("{name}.json")
            };
            std::fs::write(apps.join(file), serde_json::to_vec_pretty(def).unwrap()).unwrap();
        }
        for (rel, bytes) in &self.files {
            let p = dir.path().join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).unwrap();
            }
            std::fs::write(p, bytes).unwrap();
        }
        (dir, conf_path, self.cwd, expect)
    }

    /// Starts the gateway; Err when the process exited before listening.
    pub fn try_start(self) -> Result<Gateway, Exited> {
        let secret = if self.raw_conf.is_none() {
            let conf = if self.defaults {
                merge(default_conf(), &self.conf)
            } else {
                self.conf.clone()
            };
            conf["secret"].as_str().unwrap_or_default().to_string()
        } else {
            SECRET.to_string()
        };
        let nofile = self.nofile;
        let env = self.env.clone();
        let (dir, conf_path, cwd, expect) = self.prepare();
        let mut gw = Gateway {
            child: None,
            dir: Some(dir),
            conf_path,
            cwd,
            secret,
            port: 0,
            admin_port: 0,
            echo_port: None,
            logs: Arc::new(Mutex::new(Vec::new())),
            stderr_thread: None,
            expect,
            nofile,
            env,
        };
        match gw.launch() {
            Ok(()) => Ok(gw),
            Err(status) => Err(Exited {
                status,
                stderr: gw.logs(),
                dir: gw.dir.take().unwrap(),
            }),
        }
    }

    /// Starts the gateway; panics with its output if it does not start.
    pub fn start(self) -> Gateway {
        match self.try_start() {
            Ok(gw) => gw,
            Err(e) => panic!("gateway did not start: {e:?}"),
        }
    }
}

/// A running `gatehouse` child process. Killed on drop.
pub struct Gateway {
    child: Option<Child>,
    dir: Option<TempDir>,
    conf_path: PathBuf,
    cwd: Option<PathBuf>,
    secret: String,
    port: u16,
    admin_port: u16,
    echo_port: Option<u16>,
    logs: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
    expect: Expect,
    /// `ulimit -n` for the child, when set.
    nofile: Option<u64>,
    /// Extra environment variables for the child.
    env: Vec<(String, String)>,
}

/// `listening on ADDR (WHAT)` → (addr, what).
fn parse_listening(line: &str) -> Option<(SocketAddr, String)> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let (addr, what) = rest.split_once(' ')?;
    let addr: SocketAddr = addr.parse().ok()?;
    let what = what.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some((addr, what.to_string()))
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder::default()
    }

    /// Starts a gateway with `conf` merged over `default_conf()` and the
    /// given apps (`apps/<name>.json`).
    pub fn start(conf: Value, apps: &[(&str, Value)]) -> Gateway {
        let mut b = Gateway::builder().conf(conf);
        for (name, def) in apps {
            b = b.app(name, def.clone());
        }
        b.start()
    }

    /// Spawns the child and waits for its listening lines. Err: it exited.
    fn launch(&mut self) -> Result<(), ExitStatus> {
        assert!(self.child.is_none(), "gateway already running");
        let dir = self.dir.as_ref().unwrap().path().to_path_buf();
        let mut command = match self.nofile {
            // `exec` keeps the pid, so `pid()` is the gateway's.
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = command
            .arg("--conf")
            .arg(&self.conf_path)
            .env("RUST_LOG", "info")
            .env("RUST_LOG_STYLE", "never")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.cwd.clone().unwrap_or(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn gatehouse");
        let logs = Arc::new(Mutex::new(Vec::new()));
        self.logs = logs.clone();
        let stderr = child.stderr.take().unwrap();
        self.stderr_thread = Some(thread::spawn(move || drain(stderr, logs)));
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let (mut main, mut admin, mut echo) = (None, None, None);
            for line in self.logs() {
                if let Some((addr, what)) = parse_listening(&line) {
                    match what.as_str() {
                        "proxy and admin" | "proxy" => main = main.or(Some((addr, what))),
                        "admin" => admin = admin.or(Some(addr)),
                        "echo upstream" => echo = echo.or(Some(addr)),
                        _ => {}
                    }
                }
            }
            if let Some((addr, what)) = &main {
                let admin_ok = !self.expect.admin || admin.is_some();
                let echo_ok = !self.expect.echo || echo.is_some();
                if admin_ok && echo_ok {
                    self.port = addr.port();
                    self.admin_port = match admin {
                        Some(a) => a.port(),
                        None if what == "proxy and admin" => addr.port(),
                        None => addr.port(),
                    };
                    self.echo_port = echo.map(|a| a.port());
                    return Ok(());
                }
            }
            let exited = self.child.as_mut().unwrap().try_wait().expect("try_wait");
            if let Some(status) = exited {
                self.child = None;
                if let Some(t) = self.stderr_thread.take() {
                    let _ = t.join();
                }
                return Err(status);
            }
            if Instant::now() > deadline {
                let logs = self.logs().join("\n");
                self.kill9();
                panic!("gateway printed no listening line within {START_DEADLINE:?}:\n{logs}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the process again on the same dir and config (after
    /// `kill9` or `stop`). Ports change.
    pub fn restart(&mut self) {
        if let Err(status) = self.launch() {
            panic!(
                "gateway did not restart ({status:?}):\n{}",
                self.logs().join("\n")
            );
        }
    }

    /// Like `restart`, but returns the exit status if it fails to start.
    pub fn try_restart(&mut self) -> Result<(), ExitStatus> {
        self.launch()
    }

    /// The proxy port (also the admin port unless `control_api_port`).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The built-in echo upstream's port, when configured.
    pub fn echo_port(&self) -> Option<u16> {
        self.echo_port
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf_path
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every stderr line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// True when some log line contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Whether a log line containing `needle` shows up within 3 s: lines
    /// reach us through a pipe and a reader thread, so one written just
    /// before an answer may arrive just after it. For positive checks;
    /// `logs_contain` for "never logged".
    pub fn saw_log(&self, needle: &str) -> bool {
        self.wait_for_log(needle, Duration::from_secs(3))
    }

    /// Waits (bounded) for a log line containing `needle`.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        super::eventually(|| self.logs_contain(needle), within)
    }

    /// SIGKILL, then wait for the process.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }

    /// Sends SIGTERM and waits (at most 15 s) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal_and_wait("TERM", Duration::from_secs(15))
    }

    /// Sends `kill -<sig>` and waits up to `within` for the exit status;
    /// panics (after SIGKILL) if it does not exit.
    pub fn signal_and_wait(&mut self, sig: &str, within: Duration) -> ExitStatus {
        self.signal(sig);
        let deadline = Instant::now() + within;
        let mut child = self.child.take().expect("gateway not running");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                if let Some(t) = self.stderr_thread.take() {
                    let _ = t.join();
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gateway did not exit within {within:?} of SIGTERM:\n{}",
                    self.logs().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`TERM`, `INT`, …) with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let pid = self.pid().expect("gateway not running");
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} {pid} failed");
    }

    /// Kills the process and hands back its directory (for a new gateway
    /// on the same store).
    pub fn into_dir(mut self) -> TempDir {
        self.kill9();
        self.dir.take().unwrap()
    }

    /// An admin API call with `x-tyk-authorization`.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        let bytes = body.map(|b| serde_json::to_vec(&b).unwrap());
        request(
            self.admin_port,
            method,
            path,
            &[
                ("x-tyk-authorization", self.secret.as_str()),
                ("Content-Type", "application/json"),
            ],
            bytes.as_deref(),
        )
    }

    /// An admin API call with a raw body.
    pub fn admin_raw(&self, method: &str, path: &str, body: &[u8]) -> Resp {
        request(
            self.admin_port,
            method,
            path,
            &[
                ("x-tyk-authorization", self.secret.as_str()),
                ("Content-Type", "application/json"),
            ],
            Some(body),
        )
    }

    /// `GET path` on the proxy port.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(self.port, "GET", path, headers, None)
    }

    /// `GET path` with `Authorization: key`.
    pub fn get_with_key(&self, path: &str, key: &str) -> Resp {
        request(self.port, "GET", path, &[("Authorization", key)], None)
    }

    /// Creates a key via `POST /tyk/keys/create`; panics unless 200.
    pub fn create_key(&self, session: Value) -> String {
        let r = self.admin("POST", "/tyk/keys/create", Some(session));
        assert_eq!(r.status, 200, "create key: {}", r.text());
        r.json()["key"]
            .as_str()
            .expect("key in response")
            .to_string()
    }

    /// `GET /tyk/reload?block=true`, asserting 200.
    pub fn reload(&self) {
        let r = self.admin("GET", "/tyk/reload?block=true", None);
        assert_eq!(r.status, 200, "reload: {}", r.text());
    }
}

fn drain(stderr: impl Read, logs: Arc<Mutex<Vec<String>>>) {
    let mut r = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line)
                    .trim_end_matches(['\r', '\n'])
                    .to_string();
                logs.lock().unwrap().push(text);
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the binary with `args` to completion (at most 10 s): status,
/// stdout, stderr.
pub fn run_cli(args: &[&str], cwd: &Path) -> (ExitStatus, String, String) {
    run_cli_env(args, cwd, &[])
}

/// `run_cli` with extra environment variables (set last: they may
/// replace `RUST_LOG`).
pub fn run_cli_env(
    args: &[&str],
    cwd: &Path,
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env("RUST_LOG", "info")
        .env("RUST_LOG_STYLE", "never")
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gatehouse");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("gatehouse {args:?} did not exit within 10 s");
        }
        thread::sleep(Duration::from_millis(10));
    };
    (status, t_out.join().unwrap(), t_err.join().unwrap())
}
