//! Redis, the shared store of cluster mode (`storage.type: "redis"`), in
//! Tyk's layout (REDIS.md): sessions at `apikey-{id}` as Tyk's session
//! JSON, and cluster signals on `tyk.cluster.notifications`.
//!
//! `Redis` is the client: a small pool of blocking connections with
//! timeouts, and a backoff after a failure (a down Redis costs a request
//! one failed connect at most every backoff step, not one per request).
//! Callers run on workers and on the counting thread (`counters::batch`),
//! never on the event loop (`Store::remote`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis::{Connection, RedisResult};
use sha2::{Digest, Sha256};

use super::{Store, Stored, Write};
use crate::error::Error;
use crate::gateway::unix_now_ms;

/// Tyk's cluster channel.
pub const CHANNEL: &str = "tyk.cluster.notifications";
/// Idle connections kept.
const MAX_IDLE: usize = 64;
/// Longest wait before trying a failed Redis again.
const MAX_BACKOFF_MS: u64 = 1000;

/// How to reach Redis (Tyk's `storage` block).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// `host:port`.
    pub addr: String,
    pub username: String,
    pub password: String,
    pub database: i64,
    pub timeout: Duration,
    /// `use_ssl`: TLS to Redis.
    pub tls: Option<RedisTls>,
}

/// Tyk's `storage.use_ssl` and its companions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedisTls {
    /// `ssl_insecure_skip_verify`: any certificate, any name.
    pub insecure: bool,
    /// `ca_file`: trust this CA (else the system's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// `cert_file` and `key_file`: a client certificate (mutual TLS).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

pub struct Redis {
    client: redis::Client,
    addr: String,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// The last command failed (Redis down or unreachable).
    failing: AtomicBool,
    /// Unix ms before which no new connection is tried.
    retry_at: AtomicU64,
    backoff_ms: AtomicU64,
}

impl Redis {
    pub fn new(o: &RedisOptions) -> Result<Redis, Error> {
        let (host, port) = o.addr.rsplit_once(':').unwrap_or((&o.addr, "6379"));
        let port: u16 = port.parse().map_err(|_| Error::Store {
            path: format!("redis://{}", o.addr).into(),
            message: "the port is not a number".into(),
        })?;
        let mut settings = redis::RedisConnectionInfo::default().set_db(o.database);
        if !o.username.is_empty() {
            settings = settings.set_username(&o.username);
        }
        if !o.password.is_empty() {
            settings = settings.set_password(&o.password);
        }
        let store_error = |message: String| Error::Store {
            path: format!("redis://{}", o.addr).into(),
            message,
        };
        let host = host.trim_matches(['[', ']']).to_string();
        let addr = match &o.tls {
            None => redis::ConnectionAddr::Tcp(host, port),
            Some(t) => redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure: t.insecure,
                tls_params: None,
            },
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map(|i| i.set_redis_settings(settings))
            .map_err(|e| store_error(e.to_string()))?;
        let client = match &o.tls {
            Some(t) if t.ca_file.is_some() || t.client.is_some() => {
                let read = |p: &std::path::Path, field: &str| {
                    std::fs::read(p)
                        .map_err(|e| store_error(format!("storage.{field} {}: {e}", p.display())))
                };
                let root_cert = match &t.ca_file {
                    Some(p) => Some(read(p, "ca_file")?),
                    None => None,
                };
                let client_tls = match &t.client {
                    Some((cert, key)) => Some(redis::ClientTlsConfig {
                        client_cert: read(cert, "cert_file")?,
                        client_key: read(key, "key_file")?,
                    }),
                    None => None,
                };
                let certs = redis::TlsCertificates {
                    client_tls,
                    root_cert,
                };
                redis::Client::build_with_tls(info, certs)
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| store_error(e.to_string()))?;
        Ok(Redis::with_client(client, o.timeout))
    }

    /// A client for `url` as the redis crate reads it
    /// (`redis://[user:password@]host:port[/db]`).
    pub fn from_url(url: &str, timeout: Duration) -> Result<Redis, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Store {
            path: url.into(),
            message: e.to_string(),
        })?;
        Ok(Redis::with_client(client, timeout))
    }

    fn with_client(client: redis::Client, timeout: Duration) -> Redis {
        Redis {
            addr: client.get_connection_info().addr().to_string(),
            client,
            timeout,
            idle: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            backoff_ms: AtomicU64::new(0),
        }
    }

    pub fn error(&self, message: impl std::fmt::Display) -> Error {
        Error::Store {
            path: format!("redis://{}", self.addr).into(),
            message: message.to_string(),
        }
    }

    /// Where a non-blocking client on an event loop connects, and the
    /// commands it sends first (AUTH, SELECT); None over TLS (that client
    /// speaks plain TCP only) or when the host does not resolve.
    pub fn plain_target(&self) -> Option<(std::net::SocketAddr, Vec<redis::Cmd>)> {
        use std::net::ToSocketAddrs as _;
        let info = self.client.get_connection_info();
        let redis::ConnectionAddr::Tcp(host, port) = info.addr() else {
            return None;
        };
        let addr = (host.as_str(), *port).to_socket_addrs().ok()?.next()?;
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        if let Some(password) = settings.password() {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = settings.username() {
                auth.arg(user);
            }
            hello.push(auth.arg(password).to_owned());
        }
        if settings.db() != 0 {
            hello.push(redis::cmd("SELECT").arg(settings.db()).to_owned());
        }
        Some((addr, hello))
    }

    /// A new connection with the configured timeouts.
    pub fn connect(&self) -> Result<Connection, Error> {
        let conn = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|e| self.error(e))?;
        conn.set_read_timeout(Some(self.timeout))
            .and_then(|()| conn.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.error(e))?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection. A failure that may have broken the
    /// connection drops it and starts the backoff; a success ends it.
    pub fn run<T>(&self, f: impl FnOnce(&mut Connection) -> RedisResult<T>) -> Result<T, Error> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                if unix_now_ms() < self.retry_at.load(Ordering::SeqCst) {
                    return Err(self.error("unreachable (retrying shortly)"));
                }
                match self.connect() {
                    Ok(c) => c,
                    Err(e) => {
                        self.failed(&e);
                        return Err(e);
                    }
                }
            }
        };
        match f(&mut conn) {
            Ok(v) => {
                self.answered();
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < MAX_IDLE {
                    idle.push(conn);
                }
                Ok(v)
            }
            Err(e) => {
                let broken = e.is_io_error() || e.is_timeout() || e.is_connection_dropped();
                let err = self.error(&e);
                if broken {
                    // Every pooled connection is suspect after a break.
                    self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    self.failed(&err);
                }
                Err(err)
            }
        }
    }

    /// Redis answered (here or on an event loop's own connection): it is
    /// reachable, whatever failed before.
    pub fn answered(&self) {
        // Called once per answered batch on every event loop: the shared
        // line is only written when there is something to clear.
        if !self.failing.load(Ordering::SeqCst)
            && self.backoff_ms.load(Ordering::SeqCst) == 0
            && self.retry_at.load(Ordering::SeqCst) == 0
        {
            return;
        }
        if self.failing.swap(false, Ordering::SeqCst) {
            log::info!("redis {}: reachable again", self.addr);
        }
        self.backoff_ms.store(0, Ordering::SeqCst);
        self.retry_at.store(0, Ordering::SeqCst);
    }

    /// Redis could not be reached (`e` says how): reported once, and new
    /// connections wait for a growing backoff.
    pub fn failed(&self, e: &Error) {
        if !self.failing.swap(true, Ordering::SeqCst) {
            log::error!("{e}: keyed requests are refused until Redis answers again");
        }
        let step = (self.backoff_ms.load(Ordering::SeqCst) * 2).clamp(50, MAX_BACKOFF_MS);
        self.backoff_ms.store(step, Ordering::SeqCst);
        self.retry_at.store(unix_now_ms() + step, Ordering::SeqCst);
    }

    /// Every key matching the SCAN `pattern`, sorted, once each (SCAN may
    /// repeat a key).
    pub fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, Error> {
        let (mut keys, mut cursor) = (Vec::new(), 0u64);
        loop {
            let (next, batch): (u64, Vec<String>) = self.run(|c| {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// A signed cluster message (REDIS.md §7).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Notification {
    pub command: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub algorithm: i64,
}

impl Notification {
    /// Signed with `node_secret` (`hex(sha256(command + payload + secret))`,
    /// algorithm 5: Go's crypto.SHA256).
    pub fn new(command: &str, payload: &str, secret: &str) -> Notification {
        Notification {
            command: command.to_string(),
            payload: payload.to_string(),
            signature: sign(command, payload, secret),
            algorithm: 5,
        }
    }

    /// Whether `secret` signed it.
    pub fn verify(&self, secret: &str) -> bool {
        self.algorithm == 5
            && subtle::ConstantTimeEq::ct_eq(
                self.signature.as_bytes(),
                sign(&self.command, &self.payload, secret).as_bytes(),
            )
            .into()
    }
}

fn sign(command: &str, payload: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(command.as_bytes());
    h.update(payload.as_bytes());
    h.update(secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Store` on Redis.
pub struct RedisStore {
    pub redis: std::sync::Arc<Redis>,
    /// Signs what this gateway publishes (`node_secret`).
    secret: String,
}

impl RedisStore {
    pub fn new(redis: std::sync::Arc<Redis>, secret: &str) -> RedisStore {
        RedisStore {
            redis,
            secret: secret.to_string(),
        }
    }

    /// Publishes a signed notification on Tyk's channel.
    pub fn publish(&self, command: &str, payload: &str) -> Result<(), Error> {
        let msg = Notification::new(command, payload, &self.secret);
        let text = serde_json::to_string(&msg).map_err(|e| self.redis.error(e))?;
        self.redis
            .run(|c| {
                redis::cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(&text)
                    .query::<i64>(c)
            })
            .map(drop)
    }
}

/// `s` with SCAN's pattern characters escaped, so a pattern matches it
/// literally.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store for RedisStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.redis.run(|c| redis::cmd("GET").arg(key).query(c))
    }

    /// `GET` and `PTTL` in one transaction, so the deadline is the value's.
    fn read(&self, key: &str) -> Result<Option<Stored>, Error> {
        let (value, pttl): (Option<Vec<u8>>, i64) = self.redis.run(|c| {
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(key)
                .cmd("PTTL")
                .arg(key)
                .query(c)
        })?;
        let expires_at_ms = u64::try_from(pttl)
            .ok()
            .map(|ms| unix_now_ms().saturating_add(ms));
        Ok(value.map(|value| Stored {
            value,
            expires_at_ms,
        }))
    }

    /// `SET key value [EX ttl] [XX]` (Tyk's `SetKey`/`SetKeyEx`): without
    /// `EX` the key loses any TTL it had.
    fn write(&self, key: &str, value: &[u8], how: Write) -> Result<bool, Error> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if how.ttl > 0 {
            cmd.arg("EX").arg(how.ttl);
        }
        if how.existing_only {
            cmd.arg("XX");
        }
        // "OK", or nil when XX found no key.
        let reply: Option<String> = self.redis.run(|c| cmd.query(c))?;
        Ok(reply.is_some())
    }

    fn set_many(&self, entries: &[(String, Vec<u8>)]) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        self.redis.run(|c| {
            let mut cmd = redis::cmd("MSET");
            for (k, v) in entries {
                cmd.arg(k).arg(v);
            }
            cmd.query::<()>(c)
        })
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        self.redis
            .run(|c| redis::cmd("DEL").arg(key).query::<i64>(c))
            .map(|n| n > 0)
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let keys = self
            .redis
            .keys_matching(&format!("{}*", glob_escape(prefix)))?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(500) {
            let values: Vec<Option<Vec<u8>>> =
                self.redis.run(|c| redis::cmd("MGET").arg(chunk).query(c))?;
            for (k, v) in chunk.iter().zip(values) {
                if let Some(v) = v {
                    out.push((k.clone(), v));
                }
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    fn healthy(&self) -> bool {
        !self.redis.failing()
    }

    fn key_changed(&self, stored_id: &str) {
        if let Err(e) = self.publish("KeySpaceUpdateNotification", stored_id) {
            log::error!("cluster: could not tell other gateways that a key changed: {e}");
        }
    }

    fn reload_all(&self) -> bool {
        match self.publish("GroupReload", "") {
            Ok(()) => true,
            Err(e) => {
                log::error!("cluster: could not ask the other gateways to reload: {e}");
                false
            }
        }
    }

    fn remote(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_tyks() {
        // REDIS.md §7: GroupReload, empty payload, empty secret.
        let n = Notification::new("GroupReload", "", "");
        assert_eq!(
            n.signature,
            "c134a53701d09e08578bac1654e83f854a5aba40158c1a63944b4f581e295168"
        );
        assert!(n.verify(""));
        assert!(!n.verify("other"));
        let forged = Notification {
            payload: "x".into(),
            ..Notification::new("KeySpaceUpdateNotification", "a", "s")
        };
        assert!(!forged.verify("s"));
    }

    #[test]
    fn scan_patterns_are_literal() {
        assert_eq!(glob_escape("apikey-"), "apikey-");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
