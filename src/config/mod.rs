//! tyk.conf: the raw serde structs that mirror Tyk's JSON (or the same names
//! in TOML), with Tyk's defaults, and `validate()` into a typed `Config`
//! whose errors name the file and the field. Unknown fields are collected
//! and warned about once; they are never an error. Reading API definitions
//! is `apidef`'s job.

pub mod env;
mod env_table;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::warn;
use serde::Deserialize;
use serde_json::Value;

use crate::apidef::{Cidr, PathMatching};
use crate::auth::policy::PolicySource;
use crate::error::Error;
use crate::http::Limits;
use crate::http::path::{Cleaning, PathRules, RawPathRules};
use crate::http::tls::{CertSource, ListenerTls, Versions};
use crate::keyid::HashAlg;
use crate::store::{RedisOptions, RedisTls};
use crate::upstream::tls::ClientTls;
pub use env::Env;

/// Tyk's published sample secret: with it the admin API is loopback-only.
pub const SAMPLE_SECRET: &str = "352d20ee67be67f6340b4c0605b044b7";

/// tyk.conf as written. Field names are Tyk's; absent fields take Tyk's
/// zero values, which `validate` turns into defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawConfig {
    pub listen_address: String,
    pub listen_port: Option<i64>,
    pub control_api_port: i64,
    pub secret: String,
    pub app_path: Option<String>,
    pub use_db_app_configs: bool,
    pub hash_keys: bool,
    pub hash_key_function: String,
    pub ignore_endpoint_case: bool,
    pub enable_hashed_keys_listing: bool,
    pub disable_key_actions_by_username: bool,
    pub hash_key_function_fallback: Vec<String>,
    pub basic_auth_hash_key_function: String,
    pub min_token_length: i64,
    pub allow_master_keys: bool,
    /// Session lifetimes (`lifetime`).
    pub force_global_session_lifetime: bool,
    pub global_session_lifetime: i64,
    pub session_lifetime_respects_key_expiration: bool,
    pub close_connections: bool,
    pub proxy_default_timeout: f64,
    pub http_server_options: RawHttpServerOptions,
    pub rate_limit_response_headers: String,
    pub health_check_endpoint_name: String,
    pub reload_interval: i64,
    pub hide_generator_header: bool,
    pub storage: RawStorage,
    /// Signs cluster messages (Tyk's `node_secret`).
    pub node_secret: String,
    /// Cluster mode's rate limiter: Tyk's fixed window (else the rolling
    /// sliding log, which `enable_redis_rolling_limiter` also names).
    pub enable_fixed_window_rate_limiter: bool,
    pub enable_redis_rolling_limiter: bool,
    pub policies: RawPolicies,
    pub jwks: RawJwks,
    // TLS to upstreams (`upstream::tls`).
    pub proxy_ssl_insecure_skip_verify: bool,
    pub proxy_ssl_min_version: i64,
    pub proxy_ssl_max_version: i64,
    pub proxy_ssl_ciphers: Vec<String>,
    /// Ours: milliseconds between background writes of counters.
    pub quota_persist_interval: Option<i64>,
    /// Ours: the built-in echo upstream; absent = off.
    pub echo_upstream: Option<RawListen>,
    /// Ours: server tunables.
    pub gatehouse: RawServer,
    /// Tyk 5.8's access logs (`enabled`, `template`).
    pub access_logs: crate::metrics::access_log::RawAccessLogs,
    /// `text` (default) or `json`, for every log line.
    pub log_format: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawHttpServerOptions {
    pub read_timeout: i64,
    pub write_timeout: i64,
    pub enable_strict_routes: bool,
    pub enable_path_prefix_matching: bool,
    pub enable_path_suffix_matching: bool,
    pub enable_websockets: Option<bool>,
    pub max_request_body_size: i64,
    /// Tyk's switch for forwarding raw paths: `gatehouse.paths.path_cleaning: off`.
    pub skip_url_cleaning: bool,
    // TLS on the listeners (`http::tls`).
    pub use_ssl: bool,
    pub certificates: Vec<RawCertData>,
    pub ssl_certificates: Vec<String>,
    pub min_version: i64,
    pub max_version: i64,
    pub ssl_ciphers: Vec<String>,
}

/// `http_server_options.certificates[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCertData {
    pub domain_name: String,
    pub cert_file: String,
    pub key_file: String,
}

/// `policies` (CONTRACT §8): file mode only.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPolicies {
    pub policy_source: String,
    pub policy_record_name: String,
    pub policy_path: String,
    pub allow_explicit_policy_id: bool,
}

/// `jwks.cache.timeout`: seconds a JWKS document is used before it is
/// fetched again (0: Tyk's 240).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJwks {
    pub cache: RawJwksCache,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawJwksCache {
    pub timeout: i64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawStorage {
    #[serde(rename = "type")]
    pub kind: String,
    pub path: String,
    // `type: "redis"` (cluster mode), Tyk's fields.
    pub host: String,
    pub port: i64,
    pub addrs: Vec<String>,
    pub username: String,
    pub password: String,
    pub database: i64,
    /// Seconds.
    pub timeout: i64,
    pub use_ssl: bool,
    pub ssl_insecure_skip_verify: bool,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawListen {
    pub listen_address: String,
    pub listen_port: i64,
}

/// Our own server settings, `"gatehouse": {...}` in tyk.conf; 0 = default.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawServer {
    pub workers: i64,
    /// Event loops serving the fast path (0 = one per available core).
    pub event_loops: i64,
    pub max_connections: i64,
    pub max_request_line: i64,
    pub max_header_line: i64,
    pub max_head: i64,
    pub max_headers: i64,
    pub max_chunk_ext: i64,
    pub head_timeout_secs: i64,
    pub idle_timeout_secs: i64,
    pub body_timeout_secs: i64,
    pub connect_timeout_secs: i64,
    pub admin_max_body: i64,
    pub max_pipelined: i64,
    pub linger_ms: Option<i64>,
    pub session_cache: i64,
    /// Request bodies up to this many bytes are read whole, and checked,
    /// before anything goes upstream.
    pub max_buffered_body: i64,
    /// How request paths are checked and normalised (PATHS.md).
    pub paths: RawPathRules,
    /// Proxies (addresses or CIDR ranges) whose `X-Real-IP` /
    /// `X-Forwarded-For` name the client for IP lists; nobody else's.
    pub trusted_proxies: Vec<String>,
    /// Reload by itself when `app_path` or the policy path changes.
    pub watch: bool,
    /// Count requests for `/metrics` (default on).
    pub metrics: Option<bool>,
}

/// Which `X-RateLimit-*` values responses carry (CONTRACT §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitHeaders {
    Quotas,
    RateLimits,
}

/// Listener and connection settings for `server`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub workers: usize,
    /// Event loops, each with its own connections and upstream pool.
    pub event_loops: usize,
    /// 0 = derive from the fd limit at start.
    pub max_connections: usize,
    pub limits: Limits,
    pub head_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_timeout: Duration,
    pub write_timeout: Duration,
    pub max_pipelined: usize,
    /// How long a worker waits for the next request on a connection it
    /// just answered, while no other connection waits (0 = never).
    pub linger: Duration,
    pub close_connections: bool,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    /// A separate admin listener, when `control_api_port` is set.
    pub control_listen: Option<SocketAddr>,
    pub secret: String,
    pub app_path: PathBuf,
    /// Where policies are read from.
    pub policies: PolicySource,
    /// Where `POST /tyk/policies` writes: `policy_path`, else the config's folder.
    pub policy_write_dir: PathBuf,
    pub store_path: PathBuf,
    /// `storage.type: "redis"`: the shared store of cluster mode.
    pub redis: Option<RedisOptions>,
    /// Signs and checks cluster messages.
    pub node_secret: String,
    /// `enable_fixed_window_rate_limiter` (cluster mode).
    pub fixed_window_rate_limiter: bool,
    pub hash_keys: bool,
    /// `hash_key_function` as written ("" = legacy ids).
    pub hash_key_function: String,
    pub enable_hashed_keys_listing: bool,
    pub disable_key_actions_by_username: bool,
    pub hash_key_function_fallback: Vec<String>,
    /// How basic-auth passwords are stored: "" (bcrypt), `bcrypt`, or a key hash.
    pub basic_auth_hash_key_function: String,
    pub min_token_length: usize,
    pub allow_master_keys: bool,
    /// How long stored sessions live (`force_global_session_lifetime`, ...).
    pub session_lifetime: crate::lifetime::Global,
    pub proxy_timeout: Duration,
    pub connect_timeout: Duration,
    pub enable_strict_routes: bool,
    /// How endpoint patterns are anchored and cased.
    pub path_matching: PathMatching,
    /// `gatehouse.trusted_proxies`.
    pub trusted_proxies: Vec<Cidr>,
    /// `http_server_options.enable_websockets` (default on).
    pub enable_websockets: bool,
    /// The gateway's path switches; an API may override them.
    pub paths: PathRules,
    /// Request bodies up to this size are read whole before going upstream.
    pub max_buffered_body: u64,
    /// 0 = unlimited.
    pub max_request_body_size: u64,
    pub admin_max_body: u64,
    pub rate_limit_headers: RateLimitHeaders,
    pub health_check_path: String,
    pub reload_interval: Duration,
    /// How long a fetched JWKS is used (`jwks.cache.timeout`).
    pub jwks_cache: Duration,
    pub hide_generator_header: bool,
    pub quota_persist_interval: Duration,
    /// Sessions kept decoded in memory (the rest are read from the store).
    pub session_cache: usize,
    pub echo_upstream: Option<SocketAddr>,
    pub server: ServerConfig,
    /// `use_ssl`: TLS on the proxy and admin listeners.
    pub listener_tls: Option<ListenerTls>,
    /// `proxy_ssl_*`: TLS to `https://` upstreams.
    pub upstream_tls: ClientTls,
    /// `gatehouse.watch`: reload when `app_path` or the policy path changes.
    pub watch: bool,
    /// `gatehouse.metrics` (default on): count requests for `/metrics`.
    pub metrics: bool,
    /// `access_logs`, when enabled, and `log_format`.
    pub access_log: Option<crate::metrics::access_log::AccessLogConfig>,
}

impl Config {
    /// Reads, parses and validates the file at `path`, with the process's
    /// `TYK_GW_*` overrides.
    pub fn load(path: &Path) -> Result<Config, Error> {
        Config::load_with(path, &Env::from_process())
    }

    /// `load` with the overrides in `env`.
    pub fn load_with(path: &Path, env: &Env) -> Result<Config, Error> {
        let text = read(path, env)?;
        Config::from_source(path, text.as_deref(), env)
    }

    /// Parses and validates what `read` returned for `path` under `env`,
    /// warning about unknown fields and variables.
    pub fn from_source(path: &Path, text: Option<&str>, env: &Env) -> Result<Config, Error> {
        let (raw, unknown, applied) = parse_with(path, text, env)?;
        for warning in &applied.warnings {
            warn!("{warning}");
        }
        if !unknown.is_empty() {
            let list: Vec<&str> = unknown.iter().map(String::as_str).collect();
            warn!(
                "{}: fields with no effect in Gatehouse: {}",
                path.display(),
                list.join(", ")
            );
        }
        raw.validate(path).map_err(|e| applied.blame(e))
    }

    /// True when the admin API must answer loopback clients only.
    pub fn admin_loopback_only(&self) -> bool {
        self.secret.is_empty() || self.secret == SAMPLE_SECRET
    }
}

/// The `*.json` files of a folder that holds definitions (APIs, policies),
/// sorted by name; the caller judges a folder that cannot be read.
pub fn list_json(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// The config file's text; `None` when `TYK_GW_OMITCONFIGFILE=true` says to
/// start from an empty config (then the file need not exist). An `Err` here
/// means the file could not be read at all.
pub fn read(path: &Path, env: &Env) -> Result<Option<String>, Error> {
    if env.omit_file() {
        return Ok(None);
    }
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(|e| Error::config(path, "", format!("cannot read: {e}")))
}

/// Parses JSON, or TOML when the file name ends in `.toml`, without
/// overrides. Returns the raw config and the dotted paths of fields it did
/// not know.
pub fn parse(path: &Path, text: &str) -> Result<(RawConfig, BTreeSet<String>), Error> {
    let (raw, unknown, _) = parse_with(path, Some(text), &Env::default())?;
    Ok((raw, unknown))
}

/// `parse` with the `TYK_GW_*` overlay applied to the file's JSON tree
/// (`None`: an empty one) before the typed deserialisation.
pub fn parse_with(
    path: &Path,
    text: Option<&str>,
    env: &Env,
) -> Result<(RawConfig, BTreeSet<String>, env::Applied), Error> {
    let is_toml = path.extension().is_some_and(|e| e == "toml");
    let mut tree = match text {
        None => Value::Object(Default::default()),
        Some(t) if is_toml => toml::from_str(t).map_err(|e| Error::config(path, "", e))?,
        Some(t) => serde_json::from_str(t).map_err(|e| Error::config(path, "", e))?,
    };
    let applied = env::apply(env, &mut tree)?;
    let mut unknown = BTreeSet::new();
    let mut note = |p: serde_ignored::Path<'_>| {
        unknown.insert(p.to_string());
    };
    let raw = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(tree, &mut note))
        .map_err(|e| applied.blame(field_error(path, e.path(), e.inner())))?;
    Ok((raw, unknown, applied))
}

fn field_error(path: &Path, at: &serde_path_to_error::Path, e: &dyn std::fmt::Display) -> Error {
    let field = at.to_string();
    let field = if field == "." { String::new() } else { field };
    Error::config(path, &field, e)
}

/// A setting that must be >= 0; 0 means `default`.
fn non_negative(file: &Path, field: &str, value: i64, default: u64) -> Result<u64, Error> {
    match u64::try_from(value) {
        Ok(0) => Ok(default),
        Ok(v) => Ok(v),
        Err(_) => Err(Error::config(
            file,
            field,
            format!("must be >= 0, got {value}"),
        )),
    }
}

/// A setting that must be >= 0 and at most `max`; 0 means `default`.
/// The cores this process may run on (its CPU affinity, so a pinned
/// gateway counts only its own).
fn available_cores() -> u64 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u64)
}

fn bounded(file: &Path, field: &str, value: i64, default: u64, max: u64) -> Result<u64, Error> {
    let n = non_negative(file, field, value, default)?;
    if n > max {
        return Err(Error::config(
            file,
            field,
            format!("must be at most {max}, got {n}"),
        ));
    }
    Ok(n)
}

fn port(file: &Path, field: &str, value: i64) -> Result<u16, Error> {
    u16::try_from(value)
        .map_err(|_| Error::config(file, field, format!("not a port number: {value}")))
}

fn ip(file: &Path, field: &str, value: &str) -> Result<IpAddr, Error> {
    if value.is_empty() {
        return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| Error::config(file, field, format!("not an IP address: {value:?}")))
}

/// The longest timeout or interval any setting may ask for: larger values
/// are certainly typos and would overflow deadline arithmetic.
const MAX_WAIT_SECS: u64 = 7 * 24 * 3600;

/// A timeout in whole seconds: >= 0, 0 means `default`, at most a week.
fn timeout(file: &Path, field: &str, value: i64, default: u64) -> Result<Duration, Error> {
    bounded(file, field, value, default, MAX_WAIT_SECS).map(Duration::from_secs)
}

impl RawConfig {
    /// Turns the raw file into typed settings, applying Tyk's defaults.
    pub fn validate(self, file: &Path) -> Result<Config, Error> {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &str| {
            if Path::new(p).is_absolute() {
                PathBuf::from(p)
            } else {
                dir.join(p)
            }
        };
        let address = ip(file, "listen_address", &self.listen_address)?;
        let listen_port = match self.listen_port {
            Some(p) => port(file, "listen_port", p)?,
            None => {
                warn!("{}: no listen_port, using 8080", file.display());
                8080
            }
        };
        let control = port(file, "control_api_port", self.control_api_port)?;
        let control_listen = (control != 0).then(|| SocketAddr::new(address, control));
        let app_path = match &self.app_path {
            Some(p) if !p.is_empty() => resolve(p),
            _ => {
                warn!("{}: no app_path, using apps/", file.display());
                dir.join("apps")
            }
        };
        let policies = self.policy_source(file, &resolve)?;
        let policy_write_dir = policies.dir.clone().unwrap_or_else(|| dir.clone());
        self.check_storage(file)?;
        let store_path = resolve(if self.storage.path.is_empty() {
            "data"
        } else {
            &self.storage.path
        });
        self.check_hashing(file)?;
        if self.use_db_app_configs {
            return Err(Error::config(
                file,
                "use_db_app_configs",
                "must be false: Gatehouse reads apps from app_path",
            ));
        }
        let opts = &self.http_server_options;
        let proxy_timeout = match self.proxy_default_timeout {
            t if t > MAX_WAIT_SECS as f64 => {
                let why = format!("must be at most {MAX_WAIT_SECS} seconds, got {t}");
                return Err(Error::config(file, "proxy_default_timeout", why));
            }
            t if t > 0.0 => Duration::try_from_secs_f64(t)
                .map_err(|e| Error::config(file, "proxy_default_timeout", e))?,
            _ => Duration::from_secs(30),
        };
        let rate_limit_headers = match self.rate_limit_response_headers.as_str() {
            "" | "quotas" => RateLimitHeaders::Quotas,
            "rate_limits" => RateLimitHeaders::RateLimits,
            other => {
                return Err(Error::config(
                    file,
                    "rate_limit_response_headers",
                    format!("expected \"quotas\" or \"rate_limits\", got {other:?}"),
                ));
            }
        };
        let echo_upstream = match &self.echo_upstream {
            Some(e) => Some(SocketAddr::new(
                ip(file, "echo_upstream.listen_address", &e.listen_address)?,
                port(file, "echo_upstream.listen_port", e.listen_port)?,
            )),
            None => None,
        };
        let health = match self.health_check_endpoint_name.trim_matches('/') {
            "" => "hello".to_string(),
            name => name.to_string(),
        };
        let server = self.server_config(file)?;
        let (listener_tls, upstream_tls) = self.tls(file, &resolve)?;
        let g = &self.gatehouse;
        Ok(Config {
            file: file.to_path_buf(),
            listen: SocketAddr::new(address, listen_port),
            control_listen,
            secret: self.secret.clone(),
            app_path,
            policies,
            policy_write_dir,
            store_path,
            redis: self.redis_options(file, &resolve)?,
            node_secret: self.node_secret.clone(),
            fixed_window_rate_limiter: self.enable_fixed_window_rate_limiter,
            hash_keys: self.hash_keys,
            hash_key_function: self.hash_key_function.clone(),
            enable_hashed_keys_listing: self.enable_hashed_keys_listing,
            disable_key_actions_by_username: self.disable_key_actions_by_username,
            hash_key_function_fallback: self.hash_key_function_fallback.clone(),
            basic_auth_hash_key_function: self.basic_auth_hash_key_function.clone(),
            min_token_length: usize::try_from(non_negative(
                file,
                "min_token_length",
                self.min_token_length,
                3,
            )?)
            .unwrap_or(usize::MAX),
            allow_master_keys: self.allow_master_keys,
            session_lifetime: crate::lifetime::Global {
                forced: self
                    .force_global_session_lifetime
                    .then_some(self.global_session_lifetime),
                respects_key_expiration: self.session_lifetime_respects_key_expiration,
            },
            proxy_timeout,
            connect_timeout: timeout(
                file,
                "gatehouse.connect_timeout_secs",
                g.connect_timeout_secs,
                5,
            )?,
            enable_strict_routes: opts.enable_strict_routes,
            enable_websockets: opts.enable_websockets.unwrap_or(true),
            trusted_proxies: g
                .trusted_proxies
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    Cidr::parse(t).map_err(|why| {
                        Error::config(file, &format!("gatehouse.trusted_proxies[{i}]"), why)
                    })
                })
                .collect::<Result<_, _>>()?,
            path_matching: PathMatching {
                prefix: opts.enable_path_prefix_matching,
                suffix: opts.enable_path_suffix_matching,
                ignore_case: self.ignore_endpoint_case,
            },
            paths: self.path_rules(),
            max_buffered_body: bounded(
                file,
                "gatehouse.max_buffered_body",
                g.max_buffered_body,
                64 * 1024,
                16 * 1024 * 1024,
            )?,
            max_request_body_size: non_negative(
                file,
                "http_server_options.max_request_body_size",
                opts.max_request_body_size,
                0,
            )?,
            admin_max_body: non_negative(
                file,
                "gatehouse.admin_max_body",
                g.admin_max_body,
                1024 * 1024,
            )?,
            rate_limit_headers,
            health_check_path: format!("/{health}"),
            reload_interval: timeout(file, "reload_interval", self.reload_interval, 1)?,
            jwks_cache: Duration::from_secs(non_negative(
                file,
                "jwks.cache.timeout",
                self.jwks.cache.timeout,
                240,
            )?),
            hide_generator_header: self.hide_generator_header,
            quota_persist_interval: Duration::from_millis(
                non_negative(
                    file,
                    "quota_persist_interval",
                    self.quota_persist_interval.unwrap_or(0),
                    1000,
                )?
                .min(MAX_WAIT_SECS * 1000),
            ),
            echo_upstream,
            session_cache: usize::try_from(non_negative(
                file,
                "gatehouse.session_cache",
                g.session_cache,
                10_000,
            )?)
            .unwrap_or(usize::MAX),
            server,
            listener_tls,
            upstream_tls,
            watch: g.watch,
            metrics: g.metrics.unwrap_or(true),
            access_log: crate::metrics::access_log::AccessLogConfig::from_raw(
                file,
                &self.access_logs,
                &self.log_format,
            )?,
        })
    }

    /// Where policies come from: `policy_path` wins over `policy_record_name`.
    fn policy_source(
        &self,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<PolicySource, Error> {
        let p = &self.policies;
        let service = match p.policy_source.as_str() {
            "" | "file" => false,
            "service" | "rpc" => {
                warn!(
                    "{}: policies.policy_source {:?} needs a Dashboard or MDCB; no policies are loaded",
                    file.display(),
                    p.policy_source
                );
                true
            }
            other => {
                return Err(Error::config(
                    file,
                    "policies.policy_source",
                    format!("expected \"file\", \"service\" or \"rpc\", got {other:?}"),
                ));
            }
        };
        let path = |s: &str| (!s.is_empty() && !service).then(|| resolve(s));
        Ok(PolicySource {
            dir: path(&p.policy_path),
            record: path(&p.policy_record_name),
            service,
        })
    }

    /// `gatehouse.paths`, with Tyk's `skip_url_cleaning` as `path_cleaning:
    /// off` unless `path_cleaning` is set.
    fn path_rules(&self) -> PathRules {
        let mut raw = self.gatehouse.paths;
        if self.http_server_options.skip_url_cleaning && raw.path_cleaning.is_none() {
            raw.path_cleaning = Some(Cleaning::Off);
        }
        PathRules::default().with(&raw)
    }

    /// Tyk's `storage` block for Redis: `addrs[0]`, else `host:port`
    /// (localhost:6379 by default).
    fn redis_options(
        &self,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Option<RedisOptions>, Error> {
        let s = &self.storage;
        if s.kind != "redis" {
            return Ok(None);
        }
        let addr = match s.addrs.first() {
            Some(a) => {
                if s.addrs.len() > 1 {
                    warn!(
                        "{}: storage.addrs: only the first address is used (no Redis Cluster support yet)",
                        file.display()
                    );
                }
                a.clone()
            }
            None => {
                let host = if s.host.is_empty() {
                    "localhost"
                } else {
                    &s.host
                };
                let port = if s.port == 0 {
                    6379
                } else {
                    port(file, "storage.port", s.port)?
                };
                format!("{host}:{port}")
            }
        };
        if !(0..=15).contains(&s.database) {
            return Err(Error::config(file, "storage.database", "must be 0 to 15"));
        }
        let timeout = timeout(file, "storage.timeout", s.timeout, 5)?;
        let path = |p: &str| (!p.is_empty()).then(|| resolve(p));
        let tls = match (s.use_ssl, path(&s.cert_file), path(&s.key_file)) {
            (false, _, _) => None,
            (true, Some(cert), Some(key)) => Some(RedisTls {
                insecure: s.ssl_insecure_skip_verify,
                ca_file: path(&s.ca_file),
                client: Some((cert, key)),
            }),
            (true, None, None) => Some(RedisTls {
                insecure: s.ssl_insecure_skip_verify,
                ca_file: path(&s.ca_file),
                client: None,
            }),
            (true, _, _) => {
                return Err(Error::config(
                    file,
                    "storage.cert_file",
                    "a client certificate needs both cert_file and key_file",
                ));
            }
        };
        Ok(Some(RedisOptions {
            tls,
            addr,
            username: s.username.clone(),
            password: s.password.clone(),
            database: s.database,
            timeout,
        }))
    }

    fn check_storage(&self, file: &Path) -> Result<(), Error> {
        match self.storage.kind.as_str() {
            "" | "sled" | "redis" => Ok(()),
            other => Err(Error::config(
                file,
                "storage.type",
                format!("expected \"sled\" or \"redis\", got {other:?}"),
            )),
        }
    }

    fn check_hashing(&self, file: &Path) -> Result<(), Error> {
        let b = &self.basic_auth_hash_key_function;
        if !(b.is_empty() || b == "bcrypt" || HashAlg::parse(b).is_some()) {
            return Err(Error::config(
                file,
                "basic_auth_hash_key_function",
                format!("expected bcrypt, sha256, murmur32, murmur64 or murmur128, got {b:?}"),
            ));
        }
        let f = &self.hash_key_function;
        if !f.is_empty() && HashAlg::parse(f).is_none() {
            warn!(
                "{}: hash_key_function {f:?} is unknown; new keys will name murmur64",
                file.display()
            );
        }
        Ok(())
    }

    /// `http_server_options`' TLS fields (files resolved, not read yet:
    /// `http::tls` reads them when the listeners are bound) and the
    /// `proxy_ssl_*` ones.
    fn tls(
        &self,
        file: &Path,
        resolve: &dyn Fn(&str) -> PathBuf,
    ) -> Result<(Option<ListenerTls>, ClientTls), Error> {
        let o = &self.http_server_options;
        let versions = Versions::new(o.min_version, o.max_version).map_err(|(field, why)| {
            Error::config(file, &format!("http_server_options.{field}"), why)
        })?;
        let mut certs = Vec::new();
        for (i, c) in o.certificates.iter().enumerate() {
            let field = format!("http_server_options.certificates[{i}]");
            for (name, value) in [("cert_file", &c.cert_file), ("key_file", &c.key_file)] {
                if value.is_empty() {
                    return Err(Error::config(file, &format!("{field}.{name}"), "is empty"));
                }
            }
            certs.push(CertSource {
                domain: c.domain_name.clone(),
                cert_file: resolve(&c.cert_file),
                key_file: resolve(&c.key_file),
                field,
            });
        }
        for (i, path) in o.ssl_certificates.iter().enumerate() {
            // Tyk also takes Certificate Store ids here; Gatehouse has no
            // store: a path to one PEM file holding the key and the chain.
            certs.push(CertSource {
                domain: String::new(),
                cert_file: resolve(path),
                key_file: resolve(path),
                field: format!("http_server_options.ssl_certificates[{i}]"),
            });
        }
        let listener = o.use_ssl.then(|| ListenerTls {
            certs,
            versions,
            ciphers: o.ssl_ciphers.clone(),
        });
        let upstream_versions =
            Versions::new(self.proxy_ssl_min_version, self.proxy_ssl_max_version)
                .map_err(|(field, why)| Error::config(file, &format!("proxy_ssl_{field}"), why))?;
        let upstream = ClientTls {
            insecure: self.proxy_ssl_insecure_skip_verify,
            versions: upstream_versions,
            ciphers: self.proxy_ssl_ciphers.clone(),
        };
        Ok((listener, upstream))
    }

    fn server_config(&self, file: &Path) -> Result<ServerConfig, Error> {
        let g = &self.gatehouse;
        // Each size has a ceiling: some are allocated per request or thread.
        let size = |field: &str, v: i64, d: u64, max: u64| -> Result<usize, Error> {
            let n = bounded(file, &format!("gatehouse.{field}"), v, d, max)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        };
        const MIB: u64 = 1024 * 1024;
        let limits = Limits {
            max_request_line: size("max_request_line", g.max_request_line, 8 * 1024, MIB)?,
            max_header_line: size("max_header_line", g.max_header_line, 8 * 1024, MIB)?,
            max_head: size("max_head", g.max_head, 64 * 1024, 16 * MIB)?,
            max_headers: size("max_headers", g.max_headers, 100, 10_000)?,
            max_chunk_ext: size("max_chunk_ext", g.max_chunk_ext, 4 * 1024, MIB)?,
        };
        let opts = &self.http_server_options;
        Ok(ServerConfig {
            workers: size("workers", g.workers, 32, 4096)?,
            event_loops: size("event_loops", g.event_loops, available_cores(), 1024)?,
            max_connections: size("max_connections", g.max_connections, 0, 10_000_000)?,
            limits,
            head_timeout: timeout(file, "gatehouse.head_timeout_secs", g.head_timeout_secs, 10)?,
            idle_timeout: timeout(file, "gatehouse.idle_timeout_secs", g.idle_timeout_secs, 75)?,
            body_timeout: timeout(file, "gatehouse.body_timeout_secs", g.body_timeout_secs, 30)?,
            write_timeout: timeout(
                file,
                "http_server_options.write_timeout",
                opts.write_timeout,
                120,
            )?,
            max_pipelined: size("max_pipelined", g.max_pipelined, 8, 1024)?,
            linger: Duration::from_millis(match g.linger_ms {
                Some(ms) => non_negative(file, "gatehouse.linger_ms", ms, 0)?.min(1000),
                None => 2,
            }),
            close_connections: self.close_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(name: &str, text: &str) -> Result<(Config, BTreeSet<String>), Error> {
        let path = Path::new("/etc/gw").join(name);
        let (raw, unknown) = parse(&path, text)?;
        Ok((raw.validate(&path)?, unknown))
    }

    #[test]
    fn empty_object_takes_defaults() {
        let (c, _) = load_str("tyk.conf", "{}").unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.app_path, Path::new("/etc/gw/apps"));
        assert_eq!(c.store_path, Path::new("/etc/gw/data"));
        assert_eq!(c.min_token_length, 3);
        assert_eq!(c.proxy_timeout, Duration::from_secs(30));
        assert_eq!(c.health_check_path, "/hello");
        assert_eq!(c.rate_limit_headers, RateLimitHeaders::Quotas);
        assert!(c.admin_loopback_only());
        assert_eq!(c.server.limits, Limits::default());
    }

    #[test]
    fn explicit_port_zero_is_kept_for_ephemeral_listeners() {
        let (c, _) = load_str("tyk.conf", r#"{"listen_port": 0}"#).unwrap();
        assert_eq!(c.listen.port(), 0);
    }

    #[test]
    fn unknown_fields_are_collected_not_errors() {
        let (_, unknown) = load_str(
            "tyk.conf",
            r#"{"enable_analytics": true, "storage": {"type": "redis", "host": "r", "master_name": "m"}}"#,
        )
        .unwrap();
        assert!(unknown.contains("enable_analytics"));
        assert!(unknown.contains("storage.master_name"));
        assert!(!unknown.contains("storage.host"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let err = load_str(
            "tyk.conf",
            r#"{"http_server_options": {"read_timeout": "x"}}"#,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("http_server_options.read_timeout"), "{text}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn oversized_limits_are_refused_by_name() {
        let err = load_str(
            "tyk.conf",
            r#"{"gatehouse": {"max_headers": 100000000000}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("`gatehouse.max_headers`: must be at most 10000"),
            "{err}"
        );
        let err = load_str("tyk.conf", r#"{"proxy_default_timeout": 1e12}"#).unwrap_err();
        assert!(err.to_string().contains("`proxy_default_timeout`"), "{err}");
        let err = load_str(
            "tyk.conf",
            r#"{"gatehouse": {"head_timeout_secs": 99999999999}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`gatehouse.head_timeout_secs`"),
            "{err}"
        );
        let err = load_str(
            "tyk.conf",
            r#"{"gatehouse": {"max_buffered_body": 1000000000}}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`gatehouse.max_buffered_body`"),
            "{err}"
        );
    }

    #[test]
    fn session_lifetime_settings_are_read_from_the_file_and_tyk_gw_variables() {
        let (c, unknown) = load_str(
            "tyk.conf",
            r#"{"force_global_session_lifetime": true, "global_session_lifetime": 60,
                "session_lifetime_respects_key_expiration": true}"#,
        )
        .unwrap();
        assert!(unknown.is_empty(), "{unknown:?}");
        assert_eq!(c.session_lifetime.forced, Some(60));
        assert!(c.session_lifetime.respects_key_expiration);
        let (c, _) = load_str("tyk.conf", r#"{"global_session_lifetime": 60}"#).unwrap();
        assert_eq!(c.session_lifetime, crate::lifetime::Global::default());
        let env = Env::from_pairs([
            ("TYK_GW_FORCEGLOBALSESSIONLIFETIME", "true"),
            ("TYK_GW_GLOBALSESSIONLIFETIME", "7"),
        ]);
        let c = Config::from_source(Path::new("/etc/gw/tyk.conf"), Some("{}"), &env).unwrap();
        assert_eq!(c.session_lifetime.forced, Some(7));
    }

    #[test]
    fn bad_listen_address_names_the_field() {
        let err = load_str("tyk.conf", r#"{"listen_address": "nope"}"#).unwrap_err();
        assert!(err.to_string().contains("`listen_address`"));
    }

    #[test]
    fn toml_uses_the_same_names() {
        let (c, _) = load_str(
            "tyk.toml",
            "listen_port = 9000\nsecret = \"s\"\n[storage]\npath = \"db\"\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.secret, "s");
        assert_eq!(c.store_path, Path::new("/etc/gw/db"));
    }

    #[test]
    fn tyk_example_conf_loads() {
        let text = include_str!("../../tests/data/tyk.conf.example");
        let (c, unknown) = load_str("tyk.conf", text).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert!(c.hash_keys);
        assert!(unknown.contains("dns_cache"));
    }
}
