//! Our error enum, and the two Tyk error bodies clients see: the proxy's
//! `{"error": …}` template (CONTRACT §4) and the admin API's
//! `{"status":"error","message":…}` (CONTRACT §1). Rejections are outcomes,
//! not `Err`s: handlers answer them with these bodies.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::http::Response;

/// A fatal or internal failure.
#[derive(Debug)]
pub enum Error {
    /// The configuration or an API definition is wrong: which file, which
    /// field, and why. Exit code 2 at startup.
    Config {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// The store could not be opened, read or written.
    Store { path: PathBuf, message: String },
    /// Any other I/O failure, with what we were doing.
    Io { context: String, source: io::Error },
}

impl Error {
    pub fn config(file: impl Into<PathBuf>, field: &str, message: impl fmt::Display) -> Error {
        Error::Config {
            file: file.into(),
            field: field.to_string(),
            message: message.to_string(),
        }
    }

    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// The process exit code for this error at startup.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config { .. } => 2,
            Error::Store { .. } | Error::Io { .. } => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                file,
                field,
                message,
            } if field.is_empty() => {
                write!(f, "{}: {message}", file.display())
            }
            Error::Config {
                file,
                field,
                message,
            } => {
                write!(f, "{}: field `{field}`: {message}", file.display())
            }
            Error::Store { path, message } => write!(f, "store {}: {message}", path.display()),
            Error::Io { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// JSON string literal for `s`, quotes included.
fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Tyk's proxy error body: `{\n    "error": "<message>"\n}` with
/// `X-Generator: tyk.io` unless `hide_generator_header`.
pub fn proxy_error(status: u16, message: &str, hide_generator: bool) -> Response {
    let body = format!("{{\n    \"error\": {}\n}}", json_string(message));
    let mut res = Response::bytes(status, "application/json", body);
    if !hide_generator {
        res.headers.set("X-Generator", "tyk.io");
    }
    res
}

/// Tyk's admin error body `{"status":"error","message":"…"}` plus newline.
pub fn admin_error(status: u16, message: &str) -> Response {
    let body = format!(
        "{{\"status\":\"error\",\"message\":{}}}\n",
        json_string(message)
    );
    Response::bytes(status, "application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_error_body_is_tyk_template() {
        let res = proxy_error(403, "Access to this API has been disallowed", false);
        assert_eq!(
            res.body_bytes(),
            b"{\n    \"error\": \"Access to this API has been disallowed\"\n}"
        );
        assert_eq!(res.headers.get("X-Generator"), Some("tyk.io"));
        assert!(
            proxy_error(403, "x", true)
                .headers
                .get("X-Generator")
                .is_none()
        );
    }

    #[test]
    fn messages_are_json_escaped() {
        let res = admin_error(500, "Failed to create key - policy not found: \"p1\"");
        assert_eq!(
            res.body_bytes(),
            b"{\"status\":\"error\",\"message\":\"Failed to create key - policy not found: \\\"p1\\\"\"}\n"
        );
    }

    #[test]
    fn config_errors_exit_2() {
        let e = Error::config("tyk.conf", "listen_port", "invalid type");
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "tyk.conf: field `listen_port`: invalid type");
    }
}
