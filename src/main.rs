//! The `gatehouse` binary: arguments, logger, then `gatehouse::run`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: per-request allocations are many and small, and glibc's
/// malloc/free took about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
gatehouse: a Tyk-compatible API gateway (no Redis, embedded store)

Usage: gatehouse [--conf PATH]
       gatehouse check [--conf PATH]     (alias: lint)
       gatehouse import --from-redis URL [--conf PATH]
       gatehouse export --to-redis URL [--conf PATH]

Commands:
  check         load tyk.conf, its TYK_GW_* overrides, every policy and API as
                start does, offline (no socket, no store, no file written);
                problems on stderr as `file: field: message`, one result line
                on stdout; exit 0 valid, 1 problems, 2 unreadable config
  import        copy every key (apikey-*) and its quota counters from a Redis in
                Tyk's layout (redis://[user:password@]host:port[/db]) into
                the embedded store of tyk.conf's storage.path (the gateway
                must be stopped); export copies the other way. Re-runnable.

Options:
  --conf PATH   tyk.conf to load (JSON, or TOML when it ends in .toml) [default: ./tyk.conf]
  --help        print this help
  --version     print the version

Environment: TYK_GW_* overrides tyk.conf with Tyk's names (TYK_GW_LISTENPORT, ...).
Logging: RUST_LOG=debug|info|warn, else TYK_GW_LOGLEVEL (default info; warn for check).
Signals: SIGHUP reloads APIs and policies; SIGTERM/SIGINT stop.";

enum Args {
    Run(PathBuf),
    Check(PathBuf),
    /// (conf, Redis URL, into sled)
    Migrate(PathBuf, String, bool),
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut conf = PathBuf::from("tyk.conf");
    let mut check = false;
    let mut migrate: Option<(Option<String>, bool)> = None;
    let mut first = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "check" | "lint" if first => check = true,
            "import" if first => migrate = Some((None, true)),
            "export" if first => migrate = Some((None, false)),
            flag @ ("--from-redis" | "--to-redis") => {
                let url = args.next().ok_or(format!("{flag} needs a redis:// URL"))?;
                match &mut migrate {
                    Some((slot, into)) if *into == (flag == "--from-redis") => *slot = Some(url),
                    _ => {
                        return Err(format!(
                            "{flag} belongs to import (--from-redis) or export (--to-redis)"
                        ));
                    }
                }
            }
            "--help" | "-h" => return Ok(Args::Help),
            "--version" | "-V" => return Ok(Args::Version),
            "--conf" | "-c" => conf = args.next().ok_or("--conf needs a path")?.into(),
            other => match other.strip_prefix("--conf=") {
                Some(path) => conf = path.into(),
                None => return Err(format!("unknown argument {other:?} (see --help)")),
            },
        }
        first = false;
    }
    if let Some((url, into)) = migrate {
        let flag = if into { "--from-redis" } else { "--to-redis" };
        let url = url.ok_or(format!("{flag} URL is required"))?;
        return Ok(Args::Migrate(conf, url, into));
    }
    Ok(if check {
        Args::Check(conf)
    } else {
        Args::Run(conf)
    })
}

/// The logger: `RUST_LOG` when set, else Tyk's `TYK_GW_LOGLEVEL` or
/// `TYK_LOGLEVEL`, else `default`.
fn logger(default: &str) -> env_logger::Builder {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let filter = var("RUST_LOG").unwrap_or_else(|| {
        var(gatehouse::config::env::LOGLEVEL)
            .or_else(|| var("TYK_LOGLEVEL"))
            .map_or(default, |level| gatehouse::config::env::log_filter(&level))
            .to_string()
    });
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter);
    if let Some(style) = var("RUST_LOG_STYLE") {
        builder.parse_write_style(&style);
    }
    builder
}

/// `gatehouse import` / `export`: progress on stderr, the result on stdout.
fn migrate(conf: &Path, url: &str, into_sled: bool) -> ExitCode {
    logger("warn").init();
    let (verb, from, to) = if into_sled {
        (
            "imported",
            url.to_string(),
            "the embedded store".to_string(),
        )
    } else {
        (
            "exported",
            "the embedded store".to_string(),
            url.to_string(),
        )
    };
    match gatehouse::store::migrate::run(conf, url, into_sled) {
        Ok(c) => {
            println!(
                "{verb} {} keys and {} quota counters from {from} to {to}",
                c.sessions, c.quotas
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `gatehouse check`: warnings and errors the loaders log are counted.
fn check(conf: &Path) -> ExitCode {
    let inner = logger("warn")
        .format(|out, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(out, "{level}: {}", record.args())
        })
        .build();
    let counter: &'static gatehouse::check::Counter<_> =
        Box::leak(Box::new(gatehouse::check::Counter::new(inner)));
    if log::set_logger(counter).is_ok() {
        log::set_max_level(log::LevelFilter::Trace);
    }
    let env = gatehouse::config::Env::from_process();
    let report = match gatehouse::check::check(conf, &env) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}", gatehouse::check::problem_line(&e));
            println!(
                "configuration {} test failed (cannot read it)",
                conf.display()
            );
            return ExitCode::from(2);
        }
    };
    for e in &report.errors {
        eprintln!("{}", gatehouse::check::problem_line(e));
    }
    let errors = report.errors.len() + counter.errors();
    let line = gatehouse::check::result_line(conf, &report, counter.warnings(), errors);
    println!("{line}");
    ExitCode::from(u8::from(errors > 0))
}

/// JSON log lines: `TYK_GW_LOGFORMAT` / `TYK_LOGFORMAT` (as Tyk reads them,
/// before anything), else the config's `log_format` (read ahead of the
/// real load, whose errors are reported then).
fn json_logs(conf: &Path) -> bool {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if let Some(v) = var("TYK_GW_LOGFORMAT").or_else(|| var("TYK_LOGFORMAT")) {
        return v.eq_ignore_ascii_case("json");
    }
    std::fs::read_to_string(conf)
        .ok()
        .and_then(|text| gatehouse::config::parse(conf, &text).ok())
        .is_some_and(|(raw, _)| raw.log_format == "json")
}

fn main() -> ExitCode {
    let conf = match parse_args(std::env::args().skip(1)) {
        Ok(Args::Check(conf)) => return check(&conf),
        Ok(Args::Migrate(conf, url, into)) => return migrate(&conf, &url, into),
        Ok(Args::Run(conf)) => conf,
        Ok(Args::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Args::Version) => {
            println!("gatehouse {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = logger("info");
    if json_logs(&conf) {
        builder.format(gatehouse::metrics::access_log::format_json);
    }
    builder.init();
    match gatehouse::run(&conf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
