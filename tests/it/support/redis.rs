//! A real `redis-server` of the test's own, on a free loopback port, with
//! its data in a temp dir (append-only, fsync always, so a restart keeps
//! it). `.ci/run` installs Debian's `redis-server` when missing.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
    /// TLS only (no plain port): the server's certificate files.
    tls: bool,
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            tls: false,
        };
        r.launch();
        r
    }

    /// A Redis speaking only TLS, with this certificate and key (PEM), and
    /// `ca` (PEM) for redis-cli to trust. Clients need no certificate.
    pub fn start_tls(cert: &str, key: &str, ca: &str) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [("server.pem", cert), ("server.key", key), ("ca.pem", ca)] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let mut r = RedisServer {
            child: None,
            port: free_port(),
            dir,
            tls: true,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        assert!(self.child.is_none());
        let mut command = Command::new("redis-server");
        if self.tls {
            let file = |n: &str| self.dir.path().join(n).to_string_lossy().into_owned();
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(["--tls-cert-file", &file("server.pem")])
                .args(["--tls-key-file", &file("server.key")])
                .args(["--tls-ca-cert-file", &file("ca.pem")])
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed (Debian package redis-server; .ci/run installs it)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]) != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: gone at once, data as fsynced.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same port and data.
    pub fn restart(&mut self) {
        self.launch();
    }

    /// `redis-cli -p PORT args...`, its stdout trimmed ("" on failure).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new("redis-cli");
        if self.tls {
            let ca = self.dir.path().join("ca.pem");
            command.args(["--tls", "--cacert"]).arg(ca);
        }
        let out = command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_string(),
            Err(_) => String::new(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
