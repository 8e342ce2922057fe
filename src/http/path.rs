//! Canonical request paths (PATHS.md §3): the routing key an API is chosen
//! by, the path sent upstream, and the switches that decide what is refused.
//! Pure functions on the path part of a request target (the query is never
//! touched). Choosing an API is `registry`'s job; applying the switches and
//! `path_cleaning` to a routed request is `router`'s.
//!
//! The routing key `K` collapses a path at least as far as any upstream
//! plausibly would: escaped unreserved characters decoded, other escapes
//! upper-cased, raw non-ASCII bytes escaped, `%2F`/`%5C` and `\` read as `/`,
//! `;params` dropped from each segment, `//` merged, dot segments removed
//! (clamped at the root). `K` does not depend on any switch; the switches
//! only decide whether a path holding one of those spellings is refused,
//! and how the forwarded form `F` spells it.
//!
//! A path that is already canonical (the usual case) is recognised in one
//! scan and nothing is allocated.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// Why a path was refused with 400. The name is what logs, bodies and
/// metrics call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// `%` not followed by two hex digits.
    BadEscape,
    /// `%00`.
    Nul,
    /// A raw byte below 0x21 or 0x7F.
    ControlByte,
    /// A raw `#`.
    Fragment,
    /// The path does not start with `/`.
    NotAbsolute,
    /// `%2F` or `%5C`, under `escaped_slashes_action: reject`.
    EscapedSlash,
    /// A raw `\`, under `backslash_action: reject`.
    Backslash,
    /// A `;` in a segment, under `path_params_action: reject`.
    PathParams,
    /// `%25` followed by two hex digits, under `reject_double_encoding`.
    DoubleEncoding,
    /// The forwarded path's segments do not line up with the listen path.
    AmbiguousPath,
}

impl Reject {
    pub const ALL: [Reject; 10] = [
        Reject::BadEscape,
        Reject::Nul,
        Reject::ControlByte,
        Reject::Fragment,
        Reject::NotAbsolute,
        Reject::EscapedSlash,
        Reject::Backslash,
        Reject::PathParams,
        Reject::DoubleEncoding,
        Reject::AmbiguousPath,
    ];

    /// The reason's name: `escaped_slash`, `ambiguous_path`, ...
    pub fn name(self) -> &'static str {
        match self {
            Reject::BadEscape => "bad_escape",
            Reject::Nul => "nul",
            Reject::ControlByte => "control_byte",
            Reject::Fragment => "fragment",
            Reject::NotAbsolute => "not_absolute",
            Reject::EscapedSlash => "escaped_slash",
            Reject::Backslash => "backslash",
            Reject::PathParams => "path_params",
            Reject::DoubleEncoding => "double_encoding",
            Reject::AmbiguousPath => "ambiguous_path",
        }
    }

    /// What the client is told, after the name.
    pub fn message(self) -> &'static str {
        match self {
            Reject::BadEscape => "a % is not followed by two hex digits",
            Reject::Nul => "an encoded NUL (%00) is not allowed",
            Reject::ControlByte => "a control character is not allowed",
            Reject::Fragment => "a fragment (#) is not allowed",
            Reject::NotAbsolute => "the path must start with /",
            Reject::EscapedSlash => "an encoded slash (%2F or %5C) is not allowed",
            Reject::Backslash => "a backslash is not allowed",
            Reject::PathParams => "a path parameter (;) is not allowed",
            Reject::DoubleEncoding => {
                "double percent-encoding (%25 and two hex digits) is not allowed"
            }
            Reject::AmbiguousPath => "the path does not line up with the API's listen path",
        }
    }

    /// Position in `ALL`, for counters.
    pub fn index(self) -> usize {
        Reject::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// `%2F` and `%5C`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// 400.
    #[default]
    Reject,
    /// `/` in the routing key and in the forwarded path.
    Decode,
    /// `/` in the routing key; the escape is forwarded as sent.
    Keep,
}

/// A raw `\`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backslashes {
    /// 400.
    #[default]
    Reject,
    /// `/` in the routing key and in the forwarded path.
    AsSlash,
}

/// `;` parameters in a segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathParams {
    /// Dropped from the routing key, forwarded as sent.
    #[default]
    StripForRouting,
    /// 400.
    Reject,
}

/// What the upstream gets (Tyk's `skip_url_cleaning` is `Off`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cleaning {
    /// The normalised path.
    #[default]
    Normalize,
    /// 301 to the normalised path when merging slashes or removing dot
    /// segments changed it (Tyk's behaviour); otherwise the normalised path.
    Redirect,
    /// Like `Redirect`, with 308 (the method and body are kept).
    #[serde(rename = "redirect_308")]
    Redirect308,
    /// The path as sent; routing still uses the canonical key.
    Off,
}

/// The switches, as written in `gatehouse.paths` of tyk.conf or of an API
/// definition. Absent fields take the gateway's value (or the default).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPathRules {
    pub escaped_slashes_action: Option<EscapedSlashes>,
    pub backslash_action: Option<Backslashes>,
    pub path_params_action: Option<PathParams>,
    pub reject_double_encoding: Option<bool>,
    pub path_cleaning: Option<Cleaning>,
}

/// The switches in force for a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRules {
    pub escaped_slashes: EscapedSlashes,
    pub backslash: Backslashes,
    pub params: PathParams,
    pub reject_double_encoding: bool,
    pub cleaning: Cleaning,
}

impl Default for PathRules {
    fn default() -> PathRules {
        PathRules {
            escaped_slashes: EscapedSlashes::Reject,
            backslash: Backslashes::Reject,
            params: PathParams::StripForRouting,
            reject_double_encoding: true,
            cleaning: Cleaning::Normalize,
        }
    }
}

impl PathRules {
    /// These rules with `over`'s fields, where set, in their place.
    pub fn with(self, over: &RawPathRules) -> PathRules {
        PathRules {
            escaped_slashes: over.escaped_slashes_action.unwrap_or(self.escaped_slashes),
            backslash: over.backslash_action.unwrap_or(self.backslash),
            params: over.path_params_action.unwrap_or(self.params),
            reject_double_encoding: over
                .reject_double_encoding
                .unwrap_or(self.reject_double_encoding),
            cleaning: over.path_cleaning.unwrap_or(self.cleaning),
        }
    }

    /// The switch-controlled refusals for a path holding `found`.
    pub fn check(&self, found: Found) -> Result<(), Reject> {
        if found.escaped_slash && self.escaped_slashes == EscapedSlashes::Reject {
            return Err(Reject::EscapedSlash);
        }
        if found.backslash && self.backslash == Backslashes::Reject {
            return Err(Reject::Backslash);
        }
        if found.params && self.params == PathParams::Reject {
            return Err(Reject::PathParams);
        }
        if found.double_encoding && self.reject_double_encoding {
            return Err(Reject::DoubleEncoding);
        }
        Ok(())
    }
}

/// Spellings a path holds that a switch decides on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub escaped_slash: bool,
    pub backslash: bool,
    pub params: bool,
    pub double_encoding: bool,
}

/// A path that passed the always-400 checks, with its routing key.
#[derive(Debug)]
pub struct Canonical<'a> {
    /// The path as sent.
    pub raw: &'a str,
    /// The routing key `K`; borrowed when the path was already canonical.
    pub key: Cow<'a, str>,
    pub found: Found,
}

impl Canonical<'_> {
    /// The path was already canonical: `K`, `F` and the raw path are one.
    pub fn is_clean(&self) -> bool {
        matches!(self.key, Cow::Borrowed(_))
    }
}

/// The forwarded form `F` of a path.
#[derive(Debug, PartialEq, Eq)]
pub struct Forwarded {
    pub path: String,
    /// Merging slashes or removing dot segments changed it (a redirect is due).
    pub cleaned: bool,
}

/// Checks `raw` and computes its routing key (steps 1 and 3 of PATHS.md §3).
pub fn canonicalize(raw: &str) -> Result<Canonical<'_>, Reject> {
    if !raw.starts_with('/') {
        return Err(Reject::NotAbsolute);
    }
    if is_clean(raw.as_bytes()) {
        return Ok(Canonical {
            raw,
            key: Cow::Borrowed(raw),
            found: Found::default(),
        });
    }
    let mut found = Found::default();
    let decoded = decode(raw.as_bytes(), Mode::Route, &mut found)?;
    let (key, _) = remove_dots(&decoded);
    Ok(Canonical {
        raw,
        key: Cow::Owned(key),
        found,
    })
}

/// The forwarded form of a checked path: escapes normalised as for the key,
/// `%2F`/`%5C` decoded or kept, `\` as `/`, `;params` kept, slashes merged,
/// dot segments removed. Err when that form would route elsewhere than the
/// key (`/a/.;x/..` is `/` as a key but `/a/` with its params kept).
pub fn forwarded(c: &Canonical<'_>, slashes: EscapedSlashes) -> Result<Forwarded, Reject> {
    if c.is_clean() {
        return Ok(Forwarded {
            path: c.raw.to_string(),
            cleaned: false,
        });
    }
    let mode = Mode::Forward {
        keep_escaped_slashes: slashes == EscapedSlashes::Keep,
    };
    let mut found = Found::default();
    let decoded = decode(c.raw.as_bytes(), mode, &mut found)?;
    let (path, cleaned) = remove_dots(&decoded);
    if canonicalize(&path)?.key != c.key {
        return Err(Reject::AmbiguousPath);
    }
    Ok(Forwarded { path, cleaned })
}

/// True when `path` is already canonical: only bytes that need no decoding
/// or escaping, no `//`, no `.` or `..` segment. One scan, no allocation.
fn is_clean(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        let b = path[i];
        if b == b'/' {
            let rest = &path[i + 1..];
            let dot_segment = (rest.starts_with(b".") && matches!(rest.get(1), None | Some(b'/')))
                || (rest.starts_with(b"..") && matches!(rest.get(2), None | Some(b'/')));
            if rest.first() == Some(&b'/') || dot_segment {
                return false;
            }
        } else if !(0x21..0x7f).contains(&b) || matches!(b, b'%' | b'\\' | b';' | b'#') {
            return false;
        }
        i += 1;
    }
    true
}

/// What `decode` builds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The routing key: every slash spelling is `/`, `;params` dropped.
    Route,
    /// The forwarded path.
    Forward { keep_escaped_slashes: bool },
}

/// RFC 3986 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_escape(out: &mut Vec<u8>, b: u8) {
    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
}

/// Step 1 checks and escape normalisation, byte by byte; notes in `found`
/// what a switch decides on.
fn decode(raw: &[u8], mode: Mode, found: &mut Found) -> Result<String, Reject> {
    let mut out = Vec::with_capacity(raw.len() + 8);
    // In `Route` mode: inside a `;param`, skipped up to the next separator.
    let mut in_param = false;
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        let piece: Piece = match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(Reject::BadEscape);
                };
                i += 2;
                let v = hi << 4 | lo;
                match v {
                    0 => return Err(Reject::Nul),
                    b'/' | b'\\' => {
                        found.escaped_slash = true;
                        match mode {
                            Mode::Forward {
                                keep_escaped_slashes: true,
                            } => Piece::Escape(v),
                            _ => Piece::Slash,
                        }
                    }
                    b'%' => {
                        let next_hex = raw.get(i + 1).copied().and_then(hex).is_some()
                            && raw.get(i + 2).copied().and_then(hex).is_some();
                        found.double_encoding |= next_hex;
                        Piece::Escape(v)
                    }
                    v if is_unreserved(v) => Piece::Byte(v),
                    v => Piece::Escape(v),
                }
            }
            0..=0x20 | 0x7f => return Err(Reject::ControlByte),
            b'#' => return Err(Reject::Fragment),
            b'\\' => {
                found.backslash = true;
                Piece::Slash
            }
            b'/' => Piece::Slash,
            b';' => {
                found.params = true;
                Piece::Param
            }
            0x80.. => Piece::Escape(b),
            b => Piece::Byte(b),
        };
        i += 1;
        match piece {
            Piece::Slash => {
                in_param = false;
                out.push(b'/');
            }
            Piece::Param if mode == Mode::Route => in_param = true,
            _ if in_param => {}
            Piece::Param => out.push(b';'),
            Piece::Byte(b) => out.push(b),
            Piece::Escape(b) => push_escape(&mut out, b),
        }
    }
    // Only ASCII was pushed.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// One decoded unit of a path.
enum Piece {
    /// A segment separator.
    Slash,
    /// A raw `;`.
    Param,
    Byte(u8),
    /// Written as `%XX`, upper case.
    Escape(u8),
}

/// Merges `//` and removes `.`/`..` segments (clamped at the root). A final
/// empty, `.` or `..` segment leaves a trailing `/`. Returns the path and
/// whether anything changed. (In the routing key `decode` already dropped
/// `;params`, so `..;x` is a dot segment there.)
fn remove_dots(path: &str) -> (String, bool) {
    let mut out: Vec<&str> = Vec::new();
    let mut changed = false;
    let mut trailing = false;
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        trailing = i == last && matches!(*seg, "" | "." | "..");
        match *seg {
            "" => changed |= i != last,
            "." => changed = true,
            ".." => {
                changed = true;
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut clean = String::with_capacity(path.len());
    for seg in &out {
        clean.push('/');
        clean.push_str(seg);
    }
    if trailing || clean.is_empty() {
        clean.push('/');
    }
    (clean, changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(raw: &str) -> Result<String, Reject> {
        canonicalize(raw).map(|c| c.key.into_owned())
    }

    fn fwd(raw: &str, slashes: EscapedSlashes) -> Forwarded {
        forwarded(&canonicalize(raw).unwrap(), slashes).unwrap()
    }

    #[test]
    fn clean_paths_are_borrowed() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/a.b/c..d/.e/",
            "/~x-y_z/:@!$&'()*+,=",
            "/a/..b",
        ] {
            let c = canonicalize(p).unwrap();
            assert!(c.is_clean(), "{p}");
            assert_eq!(c.key, p);
        }
    }

    #[test]
    fn the_twelve_requests_route_to_the_protected_api() {
        // PATHS.md §4, with the switch-controlled ones noted in `found`.
        for raw in [
            "/users//protected/s",
            "/users/./protected/s",
            "/users/x/../protected/s",
            "/users/%2e%2e/users/protected/s",
            "/users/%2E/protected/s",
            "/users/protected%2fs",
            "/users/%70rotected/s",
            "/users/protected;x/s",
            "/users/protected;/s",
            "/users/protected\\s",
            "/users/protected%5cs",
        ] {
            assert_eq!(key(raw).as_deref(), Ok("/users/protected/s"), "{raw}");
        }
        assert_eq!(key("/users/protected%00/s"), Err(Reject::Nul));
        let found = |raw| canonicalize(raw).unwrap().found;
        assert!(found("/users/protected%2fs").escaped_slash);
        assert!(found("/users/protected%5cs").escaped_slash);
        assert!(found("/users/protected\\s").backslash);
        assert!(found("/users/protected;x/s").params);
        assert_eq!(found("/users//protected/s"), Found::default());
    }

    #[test]
    fn always_refused() {
        assert_eq!(key("/a%2"), Err(Reject::BadEscape));
        assert_eq!(key("/a%zz"), Err(Reject::BadEscape));
        assert_eq!(key("/a%00"), Err(Reject::Nul));
        assert_eq!(key("/a\x01"), Err(Reject::ControlByte));
        assert_eq!(key("/a b"), Err(Reject::ControlByte));
        assert_eq!(key("/a\x7f"), Err(Reject::ControlByte));
        assert_eq!(key("/users/s#x"), Err(Reject::Fragment));
        assert_eq!(key("a/b"), Err(Reject::NotAbsolute));
        assert_eq!(key(""), Err(Reject::NotAbsolute));
    }

    #[test]
    fn more_vectors_of_paths_md() {
        assert_eq!(key("/../users/protected/s").unwrap(), "/users/protected/s");
        assert_eq!(
            key("/users/%2e%2e%2fusers/protected/s").unwrap(),
            "/users/protected/s"
        );
        let c = canonicalize("/users/%252e%252e/protected/s").unwrap();
        assert!(c.found.double_encoding);
        assert_eq!(c.key, "/users/%252e%252e/protected/s");
        assert!(!canonicalize("/100%25off").unwrap().found.double_encoding);
        assert_eq!(
            key("/users/x/..;/protected/s").unwrap(),
            "/users/protected/s"
        );
        assert_eq!(
            key("/users/p%72otected/../protected/s").unwrap(),
            "/users/protected/s"
        );
        assert_eq!(key("/users/%7Euser").unwrap(), "/users/~user");
        assert_eq!(key("/users/%c3%a9").unwrap(), "/users/%C3%A9");
        assert_eq!(key("/users/é").unwrap(), "/users/%C3%A9");
    }

    #[test]
    fn dot_segments_clamp_and_keep_the_trailing_slash() {
        assert_eq!(key("/a/b/..").unwrap(), "/a/");
        assert_eq!(key("/a/b/.").unwrap(), "/a/b/");
        assert_eq!(key("/..").unwrap(), "/");
        assert_eq!(key("/../..//").unwrap(), "/");
        assert_eq!(key("//").unwrap(), "/");
        assert_eq!(key("/a//").unwrap(), "/a/");
        assert_eq!(key("/a/.;x/b").unwrap(), "/a/b");
    }

    #[test]
    fn forwarded_form_keeps_params_and_chosen_slashes() {
        let f = fwd("/users/x/..;/protected/s", EscapedSlashes::Reject);
        assert_eq!(f.path, "/users/x/..;/protected/s");
        assert!(!f.cleaned);
        let f = fwd("/users//protected/s", EscapedSlashes::Reject);
        assert_eq!((f.path.as_str(), f.cleaned), ("/users/protected/s", true));
        let f = fwd("/users/%70rotected/s", EscapedSlashes::Reject);
        assert_eq!((f.path.as_str(), f.cleaned), ("/users/protected/s", false));
        let f = fwd("/users/%2e%2e/users/protected/s", EscapedSlashes::Reject);
        assert_eq!((f.path.as_str(), f.cleaned), ("/users/protected/s", true));
        assert_eq!(fwd("/a%2fb", EscapedSlashes::Decode).path, "/a/b");
        assert_eq!(fwd("/a%2fb%5c", EscapedSlashes::Keep).path, "/a%2Fb%5C");
        assert_eq!(fwd("/a\\b", EscapedSlashes::Keep).path, "/a/b");
        assert_eq!(fwd("/a;p=1/b", EscapedSlashes::Keep).path, "/a;p=1/b");
        // Dot removal that would differ once the params are dropped.
        let c = canonicalize("/a/.;x/..").unwrap();
        assert_eq!(c.key, "/");
        assert_eq!(
            forwarded(&c, EscapedSlashes::Reject),
            Err(Reject::AmbiguousPath)
        );
    }

    #[test]
    fn switches_refuse_what_they_name() {
        let d = PathRules::default();
        let found = |raw| canonicalize(raw).unwrap().found;
        assert_eq!(d.check(found("/a%2Fb")), Err(Reject::EscapedSlash));
        assert_eq!(d.check(found("/a\\b")), Err(Reject::Backslash));
        assert_eq!(d.check(found("/a;b")), Ok(()));
        assert_eq!(d.check(found("/%2541")), Err(Reject::DoubleEncoding));
        let open = d.with(&RawPathRules {
            escaped_slashes_action: Some(EscapedSlashes::Keep),
            backslash_action: Some(Backslashes::AsSlash),
            path_params_action: Some(PathParams::Reject),
            reject_double_encoding: Some(false),
            path_cleaning: None,
        });
        assert_eq!(open.check(found("/a%2Fb\\c")), Ok(()));
        assert_eq!(open.check(found("/%2541")), Ok(()));
        assert_eq!(open.check(found("/a;b")), Err(Reject::PathParams));
    }

    #[test]
    fn the_key_is_a_fixed_point() {
        for raw in [
            "/a/%2e%2E/b;c/%41%2f%5c\\//x/.",
            "/%C3%A9/%25/%2541;;/..;/",
            "/é/~/%7e/%3B/%3b",
        ] {
            let k = key(raw).unwrap();
            assert_eq!(key(&k).unwrap(), k, "{raw}");
            assert!(!k.contains("//") && !k.contains("/./") && !k.contains("/../"));
        }
    }
}
