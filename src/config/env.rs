//! `TYK_GW_*` environment overrides (OPS.md §1): Tyk's names (Go field
//! names upper-cased, joined by `_`; the table is `env_table.rs`, generated
//! from Tyk's `config/`), parsed as Tyk's envconfig parses them, and set
//! into the config's JSON tree before the typed deserialisation, so every
//! field, ours or a Tyk one we ignore, takes the same path. A bad value is
//! an error naming the variable; an unknown `TYK_GW_*` name is a warning;
//! `TYK_GW_OMITCONFIGFILE=true` starts from an empty file. What the values
//! mean is `config`'s job.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::env_table::FIELDS;
use crate::error::Error;

pub const PREFIX: &str = "TYK_GW_";
/// Not a field: Tyk reads it before the overlay (`config.go` `FillEnv`).
pub const OMIT: &str = "TYK_GW_OMITCONFIGFILE";
/// Read before anything else to set up logging (Tyk's `log/log.go`), so
/// not set into the config.
pub const LOGLEVEL: &str = "TYK_GW_LOGLEVEL";

/// How a Go type reads its value (envconfig `processField`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Str,
    /// `strconv.ParseInt(v, 0, bits)`.
    Int(u32),
    /// `strconv.ParseUint(v, 0, bits)`.
    Uint(u32),
    Float,
    /// `time.ParseDuration`, stored as nanoseconds (Go's JSON form).
    Duration,
    /// Split on `,` (no trim, no escape); blank means empty.
    List(&'static Kind),
    /// `k:v,k2:v2` into a `map[string]string`; blank means empty.
    Map,
    /// A type with a `Decode` method: JSON.
    Json,
}

/// One Tyk setting: its name after `TYK_GW_`, its JSON path, its type.
#[derive(Debug)]
pub struct Field {
    pub env: &'static str,
    pub path: &'static [&'static str],
    pub kind: Kind,
}

impl Field {
    pub const fn new(env: &'static str, path: &'static [&'static str], kind: Kind) -> Field {
        Field { env, path, kind }
    }

    /// The dotted JSON path, as `serde_path_to_error` and `validate` name fields.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The `TYK_GW_*` variables in effect, sorted by name. `from_process`
/// reads the environment; tests build one from pairs.
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: BTreeMap<String, Result<String, ()>>,
}

impl Env {
    /// The process's `TYK_GW_*` variables (a value that is not UTF-8 is
    /// kept as an error for `apply` to name).
    pub fn from_process() -> Env {
        let vars = std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok()?;
                k.starts_with(PREFIX)
                    .then(|| (k, v.into_string().map_err(|_| ())))
            })
            .collect();
        Env { vars }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Env {
        let vars = pairs
            .into_iter()
            .filter(|(k, _)| k.starts_with(PREFIX))
            .map(|(k, v)| (k.to_string(), Ok(v.to_string())))
            .collect();
        Env { vars }
    }

    /// `TYK_GW_OMITCONFIGFILE` is "true" in any case (Tyk's test; any other
    /// value keeps the file).
    pub fn omit_file(&self) -> bool {
        matches!(self.vars.get(OMIT), Some(Ok(v)) if v.eq_ignore_ascii_case("true"))
    }
}

/// What `apply` did: which variable set which dotted path, and warnings.
#[derive(Debug, Default)]
pub struct Applied {
    pub set: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

impl Applied {
    /// The variable that set `field` (or a field inside it), if any.
    pub fn source_of(&self, field: &str) -> Option<&str> {
        self.set.iter().find_map(|(path, var)| {
            let inside = field.strip_prefix(path.as_str());
            inside
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                .then_some(var.as_str())
        })
    }

    /// `e`, blamed on the variable when it is about a field one set.
    pub fn blame(&self, e: Error) -> Error {
        match e {
            Error::Config {
                file,
                field,
                message,
            } => Error::Config {
                file: self.source_of(&field).map_or(file, PathBuf::from),
                field,
                message,
            },
            other => other,
        }
    }
}

/// Sets every known variable into `root` (the config as JSON). Errors name
/// the variable (as the "file") and the field it sets.
pub fn apply(env: &Env, root: &mut Value) -> Result<Applied, Error> {
    let mut applied = Applied::default();
    for (name, value) in &env.vars {
        if name == OMIT {
            if !matches!(value, Ok(v) if v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"))
            {
                applied.warnings.push(format!(
                    "{OMIT}: only \"true\" omits the config file (as Tyk); the file is used"
                ));
            }
            continue;
        }
        if name == LOGLEVEL {
            continue;
        }
        let Some(field) = lookup(name) else {
            applied.warnings.push(format!(
                "{name}: not a Tyk gateway setting (names are Tyk's Go field names, e.g. TYK_GW_LISTENPORT); ignored"
            ));
            continue;
        };
        let dotted = field.dotted();
        let fail = |why: String| Error::config(Path::new(name), &dotted, why);
        let text = value.as_ref().map_err(|_| fail("not valid UTF-8".into()))?;
        let parsed = parse(field.kind, text).map_err(|why| fail(format!("{text:?}: {why}")))?;
        set(root, field.path, parsed).map_err(fail)?;
        applied.set.insert(dotted, name.clone());
    }
    Ok(applied)
}

/// The table entry for a full variable name.
pub fn lookup(name: &str) -> Option<&'static Field> {
    let short = name.strip_prefix(PREFIX)?;
    FIELDS.iter().find(|f| f.env == short)
}

/// Puts `value` at `path`, making objects on the way (a null counts as
/// absent); anything else in the way is an error.
fn set(root: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let mut at = root;
    for (i, key) in path.iter().enumerate() {
        if at.is_null() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else {
            return Err(match i {
                0 => "the config is not a JSON object".to_string(),
                _ => format!("the config's `{}` is not an object", path[..i].join(".")),
            });
        };
        if i + 1 == path.len() {
            map.insert((*key).to_string(), value);
            return Ok(());
        }
        at = map.entry(*key).or_insert(Value::Null);
    }
    Ok(())
}

/// One value as envconfig reads it for `kind`, as JSON.
pub fn parse(kind: Kind, text: &str) -> Result<Value, String> {
    Ok(match kind {
        Kind::Str => Value::from(text),
        Kind::Bool => Value::from(parse_bool(text)?),
        Kind::Int(bits) => Value::from(parse_int(text, bits)?),
        Kind::Uint(bits) => Value::from(parse_uint(text, bits)?),
        Kind::Float => Value::from(parse_float(text)?),
        Kind::Duration => Value::from(parse_duration(text)?),
        Kind::List(_) if text.trim().is_empty() => Value::Array(Vec::new()),
        Kind::List(elem) => Value::Array(
            text.split(',')
                .map(|item| parse(*elem, item).map_err(|e| format!("item {item:?}: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Map => Value::Object(parse_map(text)?),
        Kind::Json => serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?,
    })
}

/// `k:v,k2:v2`; each pair must split on `:` into exactly two parts.
fn parse_map(text: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    if text.trim().is_empty() {
        return Ok(map);
    }
    for pair in text.split(',') {
        match pair.split(':').collect::<Vec<_>>().as_slice() {
            [k, v] => map.insert((*k).to_string(), Value::from(*v)),
            _ => return Err(format!("invalid map item {pair:?} (want key:value)")),
        };
    }
    Ok(map)
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err("not a boolean (Go's ParseBool: 1, t, true, 0, f, false, ...)".into()),
    }
}

/// Go's `strconv.ParseInt(s, 0, bits)`: a sign, then `0x`, `0o`, `0b` or
/// a leading `0` (octal) choose the base; `_` may separate digits.
pub fn parse_int(s: &str, bits: u32) -> Result<i64, String> {
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = unsigned(digits, s)?;
    let limit = 1u64 << (bits.clamp(1, 64) - 1);
    match (neg, magnitude) {
        (false, m) if m < limit => Ok(i64::try_from(m).unwrap_or(i64::MAX)),
        (true, m) if m <= limit => Ok(0i64.saturating_sub_unsigned(m)),
        _ => Err(format!("out of range for a {bits}-bit integer")),
    }
}

/// Go's `strconv.ParseUint(s, 0, bits)` (no sign).
pub fn parse_uint(s: &str, bits: u32) -> Result<u64, String> {
    let n = unsigned(s, s)?;
    let max = u64::MAX >> (64 - bits.clamp(1, 64));
    if n > max {
        return Err(format!("out of range for a {bits}-bit unsigned integer"));
    }
    Ok(n)
}

/// Digits after the sign, base from the prefix; `whole` is the text as
/// written, for Go's underscore rule.
fn unsigned(s: &str, whole: &str) -> Result<u64, String> {
    let bad = || "not an integer (Go's ParseInt, base 0: 771, 0x0303, 0o17, 0b1)".to_string();
    let lower = s.to_ascii_lowercase();
    let (radix, body) = match lower.as_bytes() {
        [b'0', b'x', _, ..] => (16, &lower[2..]),
        [b'0', b'o', _, ..] => (8, &lower[2..]),
        [b'0', b'b', _, ..] => (2, &lower[2..]),
        [b'0', _, ..] => (8, &lower[1..]),
        [] => return Err(bad()),
        _ => (10, lower.as_str()),
    };
    if body.contains('_') && !underscores_ok(whole) {
        return Err(bad());
    }
    let digits: String = body.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() && radix != 8 {
        return Err(bad());
    }
    if digits.is_empty() {
        return Ok(0);
    }
    if digits.starts_with(['+', '-']) {
        return Err(bad());
    }
    u64::from_str_radix(&digits, radix).map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow => "out of range".to_string(),
        _ => bad(),
    })
}

/// Go's `underscoreOK`: `_` only between digits, or after a base prefix.
fn underscores_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if s.len() >= 2 && s[0] == b'0' && matches!(s[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = s[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &s[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else {
            if saw == b'_' {
                return false;
            }
            saw = b'!';
        }
    }
    saw != b'_'
}

/// The `env_logger` filter for a Tyk log level (`debug`, `info`, `warn`,
/// `error`, any case; Tyk takes anything else as `info`).
pub fn log_filter(level: &str) -> &'static str {
    match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        _ => "info",
    }
}

/// `strconv.ParseFloat`, finite values only (JSON has no NaN or Inf).
pub fn parse_float(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(f),
        Ok(_) => Err("not a finite number".into()),
        Err(_) => Err("not a number".into()),
    }
}

/// Go's `time.ParseDuration` ("1h30m", "1.5s", "300ms", "-2us"), in ns.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || "not a duration (Go's ParseDuration: 300ms, 1.5s, 1h30m)".to_string();
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut part = whole.checked_mul(scale).ok_or_else(bad)?;
        if !frac.is_empty() {
            let f: f64 = format!("0.{frac}").parse().map_err(|_| bad())?;
            part += (f * scale as f64) as u128;
        }
        total = total.checked_add(part).ok_or_else(bad)?;
        rest = tail;
    }
    let limit = if neg { 1u128 << 63 } else { (1u128 << 63) - 1 };
    if total > limit {
        return Err("duration out of range".into());
    }
    let n = i128::try_from(total).map_err(|_| bad())?;
    i64::try_from(if neg { -n } else { n }).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ints_take_go_base_prefixes() {
        assert_eq!(parse_int("771", 64), Ok(771));
        assert_eq!(parse_int("0x0303", 64), Ok(771));
        assert_eq!(parse_int("0X0303", 64), Ok(771));
        assert_eq!(parse_int("0o17", 64), Ok(15));
        assert_eq!(parse_int("017", 64), Ok(15));
        assert_eq!(parse_int("0b101", 64), Ok(5));
        assert_eq!(parse_int("0", 64), Ok(0));
        assert_eq!(parse_int("-8", 64), Ok(-8));
        assert_eq!(parse_int("+8", 64), Ok(8));
        assert_eq!(parse_int("1_000", 64), Ok(1000));
        assert_eq!(parse_int("0x_ff", 64), Ok(255));
        for bad in [
            "", "abc", "08", "1_", "_1", "1__0", "0x", " 1", "1 ", "1.0", "--1",
        ] {
            assert!(parse_int(bad, 64).is_err(), "{bad:?}");
        }
        assert_eq!(parse_int("-9223372036854775808", 64), Ok(i64::MIN));
        assert!(parse_int("9223372036854775808", 64).is_err());
        assert!(parse_int("128", 8).is_err());
        assert_eq!(parse_int("-128", 8), Ok(-128));
    }

    #[test]
    fn uints_refuse_signs_and_overflow() {
        assert_eq!(parse_uint("0x0303", 16), Ok(771));
        assert_eq!(parse_uint("772", 16), Ok(772));
        assert_eq!(parse_uint("65535", 16), Ok(65535));
        assert!(parse_uint("65536", 16).is_err());
        assert!(parse_uint("-1", 16).is_err());
        assert!(parse_uint("+1", 16).is_err());
    }

    #[test]
    fn bools_are_go_parsebool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_bool(t), Ok(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_bool(f), Ok(false));
        }
        for bad in ["", "yes", "tRUE", "on", " true"] {
            assert!(parse_bool(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_are_go_parseduration() {
        assert_eq!(parse_duration("0"), Ok(0));
        assert_eq!(parse_duration("1s"), Ok(1_000_000_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_duration("300ms"), Ok(300_000_000));
        assert_eq!(parse_duration("-2us"), Ok(-2_000));
        assert_eq!(parse_duration("2µs"), Ok(2_000));
        assert_eq!(parse_duration(".5m"), Ok(30_000_000_000));
        for bad in ["", "1", "s", "1x", "1.2.3s", "-", "10"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn slices_split_on_commas_without_trim() {
        assert_eq!(
            parse(Kind::List(&Kind::Str), "a, b,c").unwrap(),
            json!(["a", " b", "c"])
        );
        assert_eq!(parse(Kind::List(&Kind::Str), "").unwrap(), json!([]));
        assert_eq!(parse(Kind::List(&Kind::Str), "  ").unwrap(), json!([]));
        assert_eq!(
            parse(Kind::List(&Kind::Int(64)), "1,0x2").unwrap(),
            json!([1, 2])
        );
        assert!(parse(Kind::List(&Kind::Int(64)), "1, 2").is_err());
    }

    #[test]
    fn maps_need_exactly_one_colon_per_pair() {
        assert_eq!(
            parse(Kind::Map, "key:value,key2:/value2").unwrap(),
            json!({"key": "value", "key2": "/value2"})
        );
        assert_eq!(parse(Kind::Map, "").unwrap(), json!({}));
        assert!(parse(Kind::Map, "url:http://x").is_err());
        assert!(parse(Kind::Map, "novalue").is_err());
    }

    #[test]
    fn empty_strings_blank_and_empty_ints_fail() {
        assert_eq!(parse(Kind::Str, "").unwrap(), json!(""));
        assert!(parse(Kind::Int(64), "").is_err());
        assert!(parse(Kind::Bool, "").is_err());
        assert!(parse(Kind::Json, "").is_err());
    }

    #[test]
    fn names_are_go_field_names() {
        let path = |n: &str| lookup(n).map(Field::dotted);
        assert_eq!(path("TYK_GW_LISTENPORT").as_deref(), Some("listen_port"));
        assert_eq!(
            path("TYK_GW_HTTPSERVEROPTIONS_CIPHERS").as_deref(),
            Some("http_server_options.ssl_ciphers")
        );
        assert_eq!(
            path("TYK_GW_PROXYSSLCIPHERSUITES").as_deref(),
            Some("proxy_ssl_ciphers")
        );
        assert_eq!(
            path("TYK_GW_STORAGE_MAXIDLE").as_deref(),
            Some("storage.optimisation_max_idle")
        );
        assert_eq!(
            path("TYK_GW_PORTWHITELIST").as_deref(),
            Some("ports_whitelist")
        );
        assert_eq!(
            path("TYK_GW_TRACER_ENABLED").as_deref(),
            Some("tracing.enabled")
        );
        assert_eq!(
            path("TYK_GW_USEDBAPPCONFIGS").as_deref(),
            Some("use_db_app_configs")
        );
        assert_eq!(
            path("TYK_GW_RATELIMITRESPONSEHEADERS").as_deref(),
            Some("rate_limit_response_headers")
        );
        assert_eq!(
            path("TYK_GW_SECURITY_CERTIFICATEEXPIRYMONITOR_WARNINGTHRESHOLDDAYS").as_deref(),
            Some("security.certificate_expiry_monitor.warning_threshold_days")
        );
        assert_eq!(path("TYK_GW_USEDBAPPCONFIG"), None);
        assert_eq!(
            path("TYK_GW_DNSCACHE_CHECKINTERVAL"),
            None,
            "ignored:\"true\""
        );
        let tls = lookup("TYK_GW_HTTPSERVEROPTIONS_MINVERSION").unwrap();
        assert_eq!(tls.kind, Kind::Uint(16));
    }

    #[test]
    fn apply_sets_paths_and_records_the_variable() {
        let env = Env::from_pairs([
            ("TYK_GW_LISTENPORT", "0x1F90"),
            ("TYK_GW_STORAGE_HOST", "redis"),
            ("TYK_GW_NOPE", "1"),
            ("OTHER", "x"),
        ]);
        let mut root = json!({"storage": {"type": "redis"}});
        let applied = apply(&env, &mut root).unwrap();
        assert_eq!(
            root,
            json!({"listen_port": 8080, "storage": {"type": "redis", "host": "redis"}})
        );
        assert_eq!(applied.source_of("listen_port"), Some("TYK_GW_LISTENPORT"));
        assert_eq!(applied.source_of("storage.type"), None);
        assert_eq!(applied.warnings.len(), 1);
        assert!(applied.warnings[0].starts_with("TYK_GW_NOPE:"));
    }

    #[test]
    fn the_overlay_serves_toml_and_json_alike() {
        let env = Env::from_pairs([
            ("TYK_GW_LISTENPORT", "9001"),
            ("TYK_GW_STORAGE_TYPE", "sled"),
        ]);
        for (name, text) in [
            ("tyk.toml", "listen_port = 1\n[storage]\ntype = \"redis\"\n"),
            (
                "tyk.conf",
                r#"{"listen_port": 1, "storage": {"type": "redis"}}"#,
            ),
        ] {
            let path = Path::new("/etc/gw").join(name);
            let (raw, _, applied) = crate::config::parse_with(&path, Some(text), &env).unwrap();
            assert_eq!(raw.listen_port, Some(9001), "{name}");
            assert_eq!(raw.storage.kind, "sled", "{name}");
            assert_eq!(
                applied.source_of("storage.type"),
                Some("TYK_GW_STORAGE_TYPE")
            );
        }
    }

    #[test]
    fn omitconfigfile_needs_true() {
        assert!(Env::from_pairs([(OMIT, "TRUE")]).omit_file());
        assert!(!Env::from_pairs([(OMIT, "1")]).omit_file());
        let mut root = json!({});
        let applied = apply(&Env::from_pairs([(OMIT, "1")]), &mut root).unwrap();
        assert_eq!(
            applied.warnings.len(),
            1,
            "a value other than true/false is warned about"
        );
        assert_eq!(root, json!({}), "not a field");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let env = Env::from_pairs([("TYK_GW_LISTENPORT", "80a")]);
        let err = apply(&env, &mut json!({})).unwrap_err().to_string();
        assert!(
            err.starts_with("TYK_GW_LISTENPORT: field `listen_port`"),
            "{err}"
        );
        let env = Env::from_pairs([("TYK_GW_STORAGE_HOST", "h")]);
        let err = apply(&env, &mut json!({"storage": 3})).unwrap_err();
        assert!(err.to_string().contains("TYK_GW_STORAGE_HOST"), "{err}");
    }
}
