//! Where an API is reached and where it forwards to: its listen path
//! (canonical, with `{name}` segments) and its parsed `target_url`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::http::path;

/// An upstream, parsed from `target_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub address: String,
    /// The same as a socket address, when the host is an IP literal (no
    /// name lookup needed).
    pub socket: Option<std::net::SocketAddr>,
    /// The Host header value, as written in the URL.
    pub authority: String,
    pub path: String,
    pub query: String,
    /// `https://`: TLS, with `host` as the name the certificate must have.
    pub tls: bool,
    /// The host without port or brackets.
    pub host: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, tls) = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (rest, false),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (rest, true),
            _ => return Err(format!("not an http:// or https:// URL: {url:?}")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("no usable host in {url:?}"));
        }
        let after = rest[end..].split('#').next().unwrap_or_default();
        let (path, query) = after.split_once('?').unwrap_or((after, ""));
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let address = match (has_port, tls) {
            (true, _) => authority.to_string(),
            (false, false) => format!("{authority}:80"),
            (false, true) => format!("{authority}:443"),
        };
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None if has_port => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
            None => authority,
        };
        Ok(Target {
            socket: address.parse().ok(),
            address,
            authority: authority.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            tls,
            host: host.to_string(),
        })
    }
}

/// `proxy.enable_load_balancing` over `proxy.target_list`: round robin
/// (Tyk's), except that a target that refused a connection is skipped for
/// `DOWN_FOR`, then tried again. When every target is down the next one in
/// turn is tried anyway: a refusal costs one request, never the API.
#[derive(Debug)]
pub struct Balancer {
    targets: Vec<Target>,
    next: AtomicUsize,
    /// Unix milliseconds until which each target is skipped.
    down_until: Vec<AtomicU64>,
}

/// How long a target that refused a connection is skipped.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

impl Balancer {
    pub fn new(targets: Vec<Target>) -> Balancer {
        let down_until = targets.iter().map(|_| AtomicU64::new(0)).collect();
        Balancer {
            targets,
            next: AtomicUsize::new(0),
            down_until,
        }
    }

    /// The target for the next request, and its index.
    pub fn pick(&self, now_ms: u64) -> (usize, &Target) {
        let n = self.targets.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let live = (0..n)
            .map(|k| (start + k) % n)
            .find(|i| self.down_until[*i].load(Ordering::Relaxed) <= now_ms);
        let i = live.unwrap_or(start % n);
        if live.is_some_and(|i| i != start % n) {
            // Keep the turn order: the next request starts after this one.
            self.next.store(i + 1, Ordering::Relaxed);
        }
        (i, &self.targets[i])
    }

    pub fn target(&self, i: usize) -> &Target {
        &self.targets[i % self.targets.len()]
    }

    /// Target `i` refused a connection.
    pub fn refused(&self, i: usize, now_ms: u64) {
        let until = now_ms + DOWN_FOR.as_millis() as u64;
        if let Some(d) = self.down_until.get(i) {
            d.store(until, Ordering::Relaxed);
        }
        log::warn!(
            "upstream {}: connection refused; skipped for {} s",
            self.targets.get(i).map_or("?", |t| t.address.as_str()),
            DOWN_FOR.as_secs()
        );
    }
}

/// A listen path: a plain prefix, or segments where `{name}` matches any one.
#[derive(Clone, Debug)]
pub struct ListenPath {
    pub text: String,
    segments: Option<Vec<String>>,
}

impl ListenPath {
    /// A listen path in its canonical form (`canonical_listen_path`); one
    /// that cannot be made canonical is kept as written, and never matches.
    pub fn new(text: &str) -> ListenPath {
        let text = canonical_listen_path(text).unwrap_or_else(|_| text.to_string());
        let segments = text
            .contains('{')
            .then(|| text.split('/').map(str::to_string).collect());
        ListenPath { text, segments }
    }

    /// Length for ordering: `{x}` segments do not count.
    pub fn sort_len(&self) -> usize {
        match &self.segments {
            None => self.text.len(),
            Some(segs) => segs
                .iter()
                .filter(|s| !s.starts_with('{'))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("/")
                .len(),
        }
    }

    /// Bytes of `path` this listen path covers: a prefix match, or `path`
    /// is the listen path without its trailing `/` (PATHS.md §3 step 4).
    pub fn covers(&self, path: &str) -> Option<usize> {
        self.matches(path)
            .or_else(|| self.is_bare(path).then_some(path.len()))
    }

    /// `path` is this listen path without its trailing `/`.
    pub fn is_bare(&self, path: &str) -> bool {
        if !self.text.ends_with('/') || path.ends_with('/') {
            return false;
        }
        match &self.segments {
            None => self.text.len() == path.len() + 1 && self.text.starts_with(path),
            Some(_) => self.matches(&format!("{path}/")) == Some(path.len() + 1),
        }
    }

    /// Bytes of `path` this listen path covers, when it is a prefix.
    pub fn matches(&self, path: &str) -> Option<usize> {
        let Some(segs) = &self.segments else {
            return path.starts_with(&self.text).then_some(self.text.len());
        };
        let mut used = 0;
        let mut parts = path.split('/');
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let part = parts.next()?;
            let ok = if seg.starts_with('{') {
                !part.is_empty()
            } else if last {
                part.starts_with(seg.as_str())
            } else {
                part == seg
            };
            if !ok {
                return None;
            }
            used += if last && !seg.starts_with('{') {
                seg.len()
            } else {
                part.len()
            };
            if !last {
                used += 1;
            }
        }
        Some(used.min(path.len()))
    }
}

/// A listen path as the request paths it must match are made canonical
/// (`http::path`), with a leading `/` added; Err names the reason.
pub fn canonical_listen_path(p: &str) -> Result<String, path::Reject> {
    let with_slash;
    let p = if p.starts_with('/') {
        p
    } else {
        with_slash = format!("/{p}");
        &with_slash
    };
    path::canonicalize(p).map(|c| c.key.into_owned())
}

/// Why a listen path may not be served: it would shadow the admin API or
/// the health check, which the router answers first.
pub fn reserved_listen_path(listen: &str, health_check_path: &str) -> Option<String> {
    let bare = listen.trim_end_matches('/');
    let reserved = bare == "/tyk" || listen.starts_with("/tyk/") || bare == health_check_path;
    reserved.then(|| {
        format!("listen path {listen} is reserved for the Gateway API (/tyk/) and the health check ({health_check_path})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balancing_takes_turns_and_skips_a_refusing_target() {
        let t = |p: u16| Target::parse(&format!("http://127.0.0.1:{p}")).unwrap();
        let b = Balancer::new(vec![t(1), t(2), t(3)]);
        let picks: Vec<usize> = (0..6).map(|_| b.pick(0).0).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        b.refused(1, 1000);
        let picks: Vec<usize> = (0..4).map(|_| b.pick(2000).0).collect();
        assert!(!picks.contains(&1), "{picks:?}");
        // After DOWN_FOR it is tried again.
        let later = 1000 + DOWN_FOR.as_millis() as u64;
        assert!((0..3).any(|_| b.pick(later).0 == 1));
        // All down: still answers, in turn.
        for i in 0..3 {
            b.refused(i, 5000);
        }
        let picks: Vec<usize> = (0..3).map(|_| b.pick(5001).0).collect();
        let mut sorted = picks.clone();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2]);
    }

    #[test]
    fn target_urls_parse() {
        let t = Target::parse("http://httpbin.org").unwrap();
        assert_eq!(
            (t.address.as_str(), t.authority.as_str(), t.path.as_str()),
            ("httpbin.org:80", "httpbin.org", "")
        );
        let t = Target::parse("http://127.0.0.1:8091/base/?a=1").unwrap();
        assert_eq!(
            (t.address.as_str(), t.path.as_str(), t.query.as_str()),
            ("127.0.0.1:8091", "/base/", "a=1")
        );
        let t = Target::parse("http://[::1]:81/x").unwrap();
        assert_eq!(t.address, "[::1]:81");
        assert_eq!(Target::parse("http://[::1]/").unwrap().address, "[::1]:80");
        let t = Target::parse("https://x").unwrap();
        assert_eq!(
            (t.address.as_str(), t.host.as_str(), t.tls),
            ("x:443", "x", true)
        );
        let t = Target::parse("HTTPS://[::1]:8443/p").unwrap();
        assert_eq!((t.address.as_str(), t.host.as_str()), ("[::1]:8443", "::1"));
        let t = Target::parse("http://h.example:81").unwrap();
        assert_eq!((t.host.as_str(), t.tls), ("h.example", false));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("x.org").is_err());
    }

    #[test]
    fn listen_paths_are_made_canonical() {
        let c = |p| canonical_listen_path(p).unwrap();
        assert_eq!(c("quickstart/"), "/quickstart/");
        assert_eq!(c("/a/./b/../c"), "/a/c");
        assert_eq!(c("/a//%62/"), "/a/b/");
        assert_eq!(c("/"), "/");
        assert_eq!(c("/users/{id}/orders"), "/users/{id}/orders");
        assert!(canonical_listen_path("/a%00").is_err());
    }

    #[test]
    fn admin_and_health_paths_are_reserved() {
        for p in ["/tyk", "/tyk/", "/tyk/keys/", "/hello", "/hello/"] {
            assert!(reserved_listen_path(p, "/hello").is_some(), "{p}");
        }
        for p in ["/", "/tykx/", "/hello/x/", "/api/tyk/"] {
            assert!(reserved_listen_path(p, "/hello").is_none(), "{p}");
        }
    }

    #[test]
    fn plain_listen_path_is_a_string_prefix() {
        let lp = ListenPath::new("/app");
        assert_eq!(lp.matches("/apple"), Some(4));
        assert_eq!(ListenPath::new("/quickstart/").matches("/quickstart"), None);
        assert_eq!(
            ListenPath::new("/quickstart/").covers("/quickstart"),
            Some(11)
        );
        assert_eq!(ListenPath::new("/quickstart/").covers("/quickstar"), None);
        assert!(ListenPath::new("/u/{id}/").is_bare("/u/7"));
        assert!(!ListenPath::new("/u/{id}/").is_bare("/u"));
    }

    #[test]
    fn templated_listen_path_matches_any_segment() {
        let lp = ListenPath::new("/users/{id}/orders");
        assert_eq!(
            lp.matches("/users/42/orders/7"),
            Some("/users/42/orders".len())
        );
        assert_eq!(lp.matches("/users//orders"), None);
        assert_eq!(lp.sort_len(), ListenPath::new("/users/orders").sort_len());
    }
}
