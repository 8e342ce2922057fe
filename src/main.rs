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

Commands:
  check         load tyk.conf, its TYK_GW_* overrides, every policy and API as
                start does, offline (no socket, no store, no file written);
                problems on stderr as `file: field: message`, one result line
                on stdout; exit 0 valid, 1 problems, 2 unreadable config

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
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut conf = PathBuf::from("tyk.conf");
    let mut check = false;
    let mut first = true;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "check" | "lint" if first => check = true,
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
