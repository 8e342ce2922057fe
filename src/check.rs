//! `gatehouse check` (alias `lint`, OPS.md §3): reads tyk.conf with its
//! `TYK_GW_*` overrides, every policy and every API definition through the
//! very functions start and reload use, and reports. Offline: it binds no
//! socket, opens no store and writes no file. Problems go to stderr as
//! `file: field: message`, one result line to stdout. Counting the
//! warnings the loaders log is `Counter`'s job; printing is `main`'s.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{Level, Log, Metadata, Record};

use crate::auth::policy::PolicySet;
use crate::config::{self, Config, Env};
use crate::error::Error;
use crate::registry::Registry;

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    pub apis: usize,
    pub policies: usize,
    /// Files, entries or settings that start would refuse or leave out.
    pub errors: Vec<Error>,
}

/// Checks the config at `conf`. `Err`: it cannot be read at all (exit 2).
pub fn check(conf: &Path, env: &Env) -> Result<Report, Error> {
    let text = config::read(conf, env)?;
    let config = match Config::from_source(conf, text.as_deref(), env) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Report {
                errors: vec![e],
                ..Report::default()
            });
        }
    };
    let (policies, mut errors) = PolicySet::read(&config.policies, 1, None);
    // Certificates are read and matched to their keys, as start does.
    if let Some(tls) = &config.listener_tls
        && let Err(e) = crate::http::tls::server_config(tls)
    {
        errors.push(Error::config(&config.file, &e.field, e.why));
    }
    let registry = match Registry::read(&config, None, None) {
        Ok((registry, api_errors)) => {
            errors.extend(api_errors);
            registry
        }
        Err(e) => {
            log::warn!("{e}; no APIs loaded");
            Registry::default()
        }
    };
    Ok(Report {
        apis: registry.len(),
        policies: policies.len(),
        errors,
    })
}

/// One problem as `file: field: message` (`file: message` without a field).
pub fn problem_line(e: &Error) -> String {
    match e {
        Error::Config {
            file,
            field,
            message,
        } if field.is_empty() => format!("{}: {message}", file.display()),
        Error::Config {
            file,
            field,
            message,
        } => format!("{}: {field}: {message}", file.display()),
        other => other.to_string(),
    }
}

/// The stdout line: valid with counts, or failed with the error count.
pub fn result_line(conf: &Path, report: &Report, warnings: usize, errors: usize) -> String {
    if errors == 0 {
        format!(
            "configuration {} is valid ({} APIs, {} policies, {warnings} warnings)",
            conf.display(),
            report.apis,
            report.policies
        )
    } else {
        format!(
            "configuration {} test failed ({errors} errors)",
            conf.display()
        )
    }
}

/// A logger that counts what the loaders warn about (and any error they
/// log) before handing each record to `inner`, which filters and prints.
pub struct Counter<L> {
    inner: L,
    warnings: AtomicUsize,
    errors: AtomicUsize,
}

impl<L: Log> Counter<L> {
    pub fn new(inner: L) -> Counter<L> {
        Counter {
            inner,
            warnings: AtomicUsize::new(0),
            errors: AtomicUsize::new(0),
        }
    }

    pub fn warnings(&self) -> usize {
        self.warnings.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }
}

impl<L: Log> Log for Counter<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Warn || self.inner.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        match record.level() {
            Level::Error => self.errors.fetch_add(1, Ordering::Relaxed),
            Level::Warn => self.warnings.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        if self.inner.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_read_file_field_message() {
        let e = Error::config("/a/tyk.conf", "listen_port", "not a port number: -1");
        assert_eq!(
            problem_line(&e),
            "/a/tyk.conf: listen_port: not a port number: -1"
        );
        let e = Error::config("/a/apps/x.json", "", "EOF while parsing");
        assert_eq!(problem_line(&e), "/a/apps/x.json: EOF while parsing");
    }

    #[test]
    fn result_line_counts() {
        let r = Report {
            apis: 2,
            policies: 1,
            errors: Vec::new(),
        };
        let conf = Path::new("tyk.conf");
        assert_eq!(
            result_line(conf, &r, 3, 0),
            "configuration tyk.conf is valid (2 APIs, 1 policies, 3 warnings)"
        );
        assert_eq!(
            result_line(conf, &r, 3, 2),
            "configuration tyk.conf test failed (2 errors)"
        );
    }
}
