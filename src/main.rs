//! The `gatehouse` binary: arguments, logger, then `gatehouse::run`.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: per-request allocations are many and small, and glibc's
/// malloc/free took about a tenth of the gateway's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
gatehouse: a Tyk-compatible API gateway (no Redis, embedded store)

Usage: gatehouse [--conf PATH]

Options:
  --conf PATH   tyk.conf to load (JSON, or TOML when it ends in .toml) [default: ./tyk.conf]
  --help        print this help
  --version     print the version

Logging: RUST_LOG=debug|info|warn (default info).";

enum Args {
    Run(PathBuf),
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut conf = PathBuf::from("tyk.conf");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--help" | "-h" => return Ok(Args::Help),
            "--version" | "-V" => return Ok(Args::Version),
            "--conf" | "-c" => conf = args.next().ok_or("--conf needs a path")?.into(),
            other => match other.strip_prefix("--conf=") {
                Some(path) => conf = path.into(),
                None => return Err(format!("unknown argument {other:?} (see --help)")),
            },
        }
    }
    Ok(Args::Run(conf))
}

/// Starts the logger: JSON lines when the config asks for
/// `log_format: "json"` (read ahead of the real load, whose errors are
/// reported then), else env_logger's text.
fn init_logger(conf: Option<&Path>) {
    let mut logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    let json = conf
        .and_then(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            gatehouse::config::parse(path, &text).ok()
        })
        .is_some_and(|(raw, _)| raw.log_format == "json");
    if json {
        logger.format(gatehouse::metrics::access_log::format_json);
    }
    logger.init();
}

fn main() -> ExitCode {
    let args = parse_args(std::env::args().skip(1));
    init_logger(match &args {
        Ok(Args::Run(conf)) => Some(conf.as_path()),
        _ => None,
    });
    let conf = match args {
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
    match gatehouse::run(&conf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}
