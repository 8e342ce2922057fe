//! The `gatehouse` binary: arguments, logger, then `gatehouse::run`.
#![forbid(unsafe_code)]

use std::path::PathBuf;
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

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let conf = match parse_args(std::env::args().skip(1)) {
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
