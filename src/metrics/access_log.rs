//! Access logs as Tyk 5.8 writes them (`access_logs: {enabled, template}`,
//! OPS.md §6): one line per API request at info level with
//! `prefix=access-log` and Tyk's field names, the key masked, latencies in
//! integer milliseconds; and the JSON line format (`log_format: "json"`)
//! that the whole logger uses.
//!
//! The event loop never writes a log line: a finished request's entry goes
//! into a bounded channel, and a writer thread formats and writes it to
//! stderr. When the writer falls behind (a slow stderr), entries are
//! dropped and counted, never waited for.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Deserialize;

use super::Flag;
use crate::error::Error;

/// Entries waiting for the writer; more are dropped.
const QUEUE: usize = 8192;

/// `access_logs` in tyk.conf.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawAccessLogs {
    pub enabled: bool,
    pub template: Vec<String>,
}

/// Tyk's field names (`internal/httputil/accesslog/record.go`), in the
/// order they are written (alphabetical, as logrus writes them).
pub const FIELDS: [&str; 19] = [
    "api_id",
    "api_key",
    "api_name",
    "client_ip",
    "host",
    "latency_gateway",
    "latency_total",
    "method",
    "org_id",
    "original_path",
    "path",
    "protocol",
    "remote_addr",
    "response_flag",
    "status",
    "upstream_addr",
    "upstream_latency",
    "user_agent",
    "prefix",
];

/// Which fields a line carries: a bit per `FIELDS` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template(u32);

impl Template {
    /// `template` as written: empty means every field; an unknown name is
    /// an error naming it.
    pub fn parse(file: &Path, names: &[String]) -> Result<Template, Error> {
        if names.is_empty() {
            return Ok(Template(u32::MAX));
        }
        let mut bits = 0;
        for (i, name) in names.iter().enumerate() {
            let Some(at) = FIELDS.iter().position(|f| f == name) else {
                let why = format!(
                    "unknown field {name:?}; known: {}",
                    FIELDS[..FIELDS.len() - 1].join(", ")
                );
                return Err(Error::config(
                    file,
                    &format!("access_logs.template[{i}]"),
                    why,
                ));
            };
            bits |= 1 << at;
        }
        Ok(Template(bits))
    }

    fn has(self, field: &str) -> bool {
        FIELDS
            .iter()
            .position(|f| *f == field)
            .is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// The access-log settings, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub template: Template,
    pub json: bool,
}

impl AccessLogConfig {
    /// None when access logs are off.
    pub fn from_raw(
        file: &Path,
        raw: &RawAccessLogs,
        log_format: &str,
    ) -> Result<Option<AccessLogConfig>, Error> {
        let json = json_format(file, log_format)?;
        if !raw.enabled {
            return Ok(None);
        }
        let template = Template::parse(file, &raw.template)?;
        Ok(Some(AccessLogConfig { template, json }))
    }
}

/// Whether `log_format` asks for JSON lines; `text`, `legacy` and empty
/// are text.
pub fn json_format(file: &Path, log_format: &str) -> Result<bool, Error> {
    match log_format {
        "json" => Ok(true),
        "" | "text" | "legacy" => Ok(false),
        other => Err(Error::config(
            file,
            "log_format",
            format!("expected \"text\" or \"json\", got {other:?}"),
        )),
    }
}

/// One request's access-log line, filled by the pipeline (the request
/// side) and by `Metrics::finish` (status and timings).
#[derive(Debug, Default)]
pub struct Entry {
    pub api_id: String,
    pub api_name: String,
    pub org_id: String,
    /// Already masked (`****` + last 4) or hashed.
    pub api_key: String,
    pub client_ip: String,
    pub host: String,
    pub method: String,
    pub path: String,
    pub original_path: String,
    pub protocol: &'static str,
    pub remote_addr: String,
    pub user_agent: String,
    pub upstream_addr: String,
    /// Set by `finish`, when the response head is written.
    pub status: u16,
    pub latency_total: u64,
    pub latency_gateway: u64,
    pub upstream_latency: u64,
    pub response_flag: Option<Flag>,
}

/// A key as Tyk logs it: `****` and its last four characters, or `--`
/// for a key of four characters or fewer.
pub fn mask_key(key: &str) -> String {
    let n = key.chars().count();
    if n <= 4 {
        return "--".to_string();
    }
    let tail: String = key.chars().skip(n - 4).collect();
    format!("****{tail}")
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Entry {
    pub(super) fn finish(
        &mut self,
        status: u16,
        total: Duration,
        upstream: Option<Duration>,
        flag: Option<Flag>,
    ) {
        self.status = status;
        self.latency_total = ms(total);
        let up = upstream.unwrap_or_default();
        self.upstream_latency = ms(up);
        self.latency_gateway = ms(total.saturating_sub(up));
        self.response_flag = flag;
    }

    /// (name, value) of every field, `FIELDS` order; numbers as numbers.
    fn fields(&self) -> Vec<(&'static str, Value<'_>)> {
        use Value::{Num, Str};
        let mut out = vec![
            ("api_id", Str(&self.api_id)),
            ("api_key", Str(&self.api_key)),
            ("api_name", Str(&self.api_name)),
            ("client_ip", Str(&self.client_ip)),
            ("host", Str(&self.host)),
            ("latency_gateway", Num(self.latency_gateway)),
            ("latency_total", Num(self.latency_total)),
            ("method", Str(&self.method)),
            ("org_id", Str(&self.org_id)),
            ("original_path", Str(&self.original_path)),
            ("path", Str(&self.path)),
            ("protocol", Str(self.protocol)),
            ("remote_addr", Str(&self.remote_addr)),
        ];
        if let Some(flag) = self.response_flag {
            out.push(("response_flag", Str(flag.name())));
        }
        out.extend([
            ("status", Num(u64::from(self.status))),
            ("upstream_addr", Str(&self.upstream_addr)),
            ("upstream_latency", Num(self.upstream_latency)),
            ("user_agent", Str(&self.user_agent)),
        ]);
        out
    }

    /// The line as written, without its newline.
    pub fn line(&self, cfg: AccessLogConfig, time: &str) -> String {
        let fields = self.fields();
        let kept = fields.iter().filter(|(n, _)| cfg.template.has(n));
        if cfg.json {
            let mut out = format!(
                "{{\"time\":{},\"level\":\"info\",\"message\":\"\",\"prefix\":\"access-log\"",
                json_str(time)
            );
            for (name, value) in kept {
                out.push_str(&format!(",\"{name}\":"));
                match value {
                    Value::Str(s) => out.push_str(&json_str(s)),
                    Value::Num(n) => out.push_str(&n.to_string()),
                }
            }
            out.push('}');
            out
        } else {
            let mut out = format!(
                "time={} level=info msg=\"\" prefix=access-log",
                quoted(time)
            );
            for (name, value) in kept {
                match value {
                    Value::Str(s) => out.push_str(&format!(" {name}={}", quoted(s))),
                    Value::Num(n) => out.push_str(&format!(" {name}={n}")),
                }
            }
            out
        }
    }
}

enum Value<'a> {
    Str(&'a str),
    Num(u64),
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A logfmt value: bare when it is plain, else quoted with escapes (so a
/// client's bytes can never start a new line or field).
fn quoted(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/@^+:*".contains(&b));
    if plain { s.to_string() } else { json_str(s) }
}

/// RFC 3339 time now, UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The writer: a bounded queue in front of a thread that writes stderr.
pub struct AccessLog {
    tx: Sender<Box<Entry>>,
    dropped: AtomicU64,
    written: Arc<AtomicU64>,
}

impl AccessLog {
    /// Starts the writer thread.
    pub fn start(cfg: AccessLogConfig) -> std::io::Result<AccessLog> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let written = Arc::new(AtomicU64::new(0));
        let count = written.clone();
        thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&rx, cfg, &count))?;
        Ok(AccessLog {
            tx,
            dropped: AtomicU64::new(0),
            written,
        })
    }

    /// Queues an entry; drops (and counts) it when the queue is full.
    pub fn send(&self, entry: Box<Entry>) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(entry)
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

fn write_lines(rx: &Receiver<Box<Entry>>, cfg: AccessLogConfig, written: &AtomicU64) {
    let mut batch = String::new();
    while let Ok(first) = rx.recv() {
        let time = now_rfc3339();
        batch.clear();
        let mut n = 0;
        for entry in std::iter::once(first).chain(rx.try_iter().take(255)) {
            batch.push_str(&entry.line(cfg, &time));
            batch.push('\n');
            n += 1;
        }
        if std::io::stderr().lock().write_all(batch.as_bytes()).is_ok() {
            written.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// env_logger's format for `log_format: "json"`: one JSON object a line
/// with `time`, `level`, `message` (Tyk's names) and `prefix` (the
/// module).
pub fn format_json(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    let level = match record.level() {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    let prefix = record.target().rsplit("::").next().unwrap_or_default();
    writeln!(
        buf,
        "{{\"time\":{},\"level\":\"{level}\",\"message\":{},\"prefix\":{}}}",
        json_str(&now_rfc3339()),
        json_str(&record.args().to_string()),
        json_str(prefix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_masked_as_tyk_does() {
        assert_eq!(mask_key("abcdef123456"), "****3456");
        assert_eq!(mask_key("abcd"), "--");
        assert_eq!(mask_key(""), "--");
    }

    #[test]
    fn template_keeps_only_named_fields() {
        let f = Path::new("tyk.conf");
        let t = Template::parse(f, &["status".into(), "path".into()]).unwrap();
        let mut e = Entry {
            path: "/a b".into(),
            ..Entry::default()
        };
        e.finish(200, Duration::from_millis(12), None, None);
        let cfg = AccessLogConfig {
            template: t,
            json: false,
        };
        assert_eq!(
            e.line(cfg, "T"),
            "time=T level=info msg=\"\" prefix=access-log path=\"/a b\" status=200"
        );
        let cfg = AccessLogConfig { json: true, ..cfg };
        let v: serde_json::Value = serde_json::from_str(&e.line(cfg, "T")).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["prefix"], "access-log");
        assert!(v.get("api_id").is_none());
        let err = Template::parse(f, &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("access_logs.template[0]"));
    }
}
