//! CORS (CONTRACT §3.5 step 2, §6) with the rules of rs/cors v1.11.1, the
//! library Tyk hands its `CORS` block to unchanged: origins (`*`, exact,
//! or one `*` wildcard; compared lowercased), methods (default GET, POST,
//! HEAD; OPTIONS always allowed), request headers (default `accept`,
//! `content-type`, `x-requested-with`; a preflight's list must be
//! lowercase, sorted and unique members, as browsers send it), exposed
//! headers, credentials and max age. Compiled at load; which headers a
//! request gets is decided here, when it is answered is the pipeline's.

use super::CorsConfig;
use crate::http::Request;

#[derive(Clone, Debug)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    /// (prefix, suffix) around one `*`.
    wildcards: Vec<(String, String)>,
    methods: Vec<String>,
    any_header: bool,
    /// Lowercase, sorted.
    headers: Vec<String>,
    exposed: Option<String>,
    credentials: bool,
    max_age: Option<String>,
}

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

impl Cors {
    pub fn compile(c: &CorsConfig) -> Cors {
        let mut any_origin = c.allowed_origins.is_empty();
        let (mut origins, mut wildcards) = (Vec::new(), Vec::new());
        for o in &c.allowed_origins {
            let o = o.to_ascii_lowercase();
            if o == "*" {
                any_origin = true;
                break;
            }
            match o.split_once('*') {
                Some((pre, post)) => wildcards.push((pre.to_string(), post.to_string())),
                None => origins.push(o),
            }
        }
        if any_origin {
            origins.clear();
            wildcards.clear();
        }
        let methods = if c.allowed_methods.is_empty() {
            vec!["GET".into(), "POST".into(), "HEAD".into()]
        } else {
            c.allowed_methods.clone()
        };
        let any_header = c.allowed_headers.iter().any(|h| h == "*");
        let mut headers: Vec<String> = if c.allowed_headers.is_empty() {
            vec![
                "accept".into(),
                "content-type".into(),
                "x-requested-with".into(),
            ]
        } else {
            c.allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect()
        };
        headers.sort();
        headers.dedup();
        let exposed = (!c.exposed_headers.is_empty()).then(|| {
            c.exposed_headers
                .iter()
                .map(|h| canonical(h))
                .collect::<Vec<_>>()
                .join(", ")
        });
        let max_age = match c.max_age {
            0 => None,
            n if n < 0 => Some("0".into()),
            n => Some(n.to_string()),
        };
        Cors {
            any_origin,
            origins,
            wildcards,
            methods,
            any_header,
            headers,
            exposed,
            credentials: c.allow_credentials,
            max_age,
        }
    }

    /// A preflight: `OPTIONS` with `Access-Control-Request-Method`.
    pub fn is_preflight(req: &Request) -> bool {
        req.method == "OPTIONS"
            && req
                .headers
                .get("access-control-request-method")
                .is_some_and(|m| !m.is_empty())
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        if self.any_origin {
            return true;
        }
        // Compared as lowercased, without lowercasing a copy (the allowed
        // ones are lowercase already).
        let o = origin.as_bytes();
        self.origins
            .iter()
            .any(|a| a.as_bytes().eq_ignore_ascii_case(o))
            || self.wildcards.iter().any(|(pre, post)| {
                o.len() >= pre.len() + post.len()
                    && o[..pre.len()].eq_ignore_ascii_case(pre.as_bytes())
                    && o[o.len() - post.len()..].eq_ignore_ascii_case(post.as_bytes())
            })
    }

    fn method_allowed(&self, method: &str) -> bool {
        !self.methods.is_empty()
            && (method == "OPTIONS" || self.methods.iter().any(|m| m == method))
    }

    /// rs/cors's `SortedSet.Accepts`: every name a member, in strictly
    /// increasing order, as browsers send them.
    fn headers_allowed(&self, lists: &[&str]) -> bool {
        let mut last: Option<usize> = None;
        for name in lists.iter().flat_map(|l| l.split(',')) {
            let name = name.trim_matches([' ', '\t']);
            if name.is_empty() {
                continue;
            }
            let Ok(pos) = self.headers.binary_search_by(|h| h.as_str().cmp(name)) else {
                return false;
            };
            if last.is_some_and(|l| pos <= l) {
                return false;
            }
            last = Some(pos);
        }
        true
    }

    fn allow_origin(&self, origin: &str) -> String {
        if self.any_origin {
            "*".into()
        } else {
            origin.to_string()
        }
    }

    /// The headers of a preflight's answer (204, empty).
    pub fn preflight(&self, req: &Request) -> Vec<(&'static str, String)> {
        let mut out = vec![("Vary", PREFLIGHT_VARY.to_string())];
        let Some(origin) = req.headers.get("origin").filter(|o| !o.is_empty()) else {
            return out;
        };
        let method = req
            .headers
            .get("access-control-request-method")
            .unwrap_or_default();
        let asked: Vec<&str> = req
            .headers
            .get_all("access-control-request-headers")
            .filter_map(|v| std::str::from_utf8(v).ok())
            .collect();
        if !self.origin_allowed(origin)
            || !self.method_allowed(method)
            || (!asked.is_empty() && !self.any_header && !self.headers_allowed(&asked))
        {
            return out;
        }
        out.push(("Access-Control-Allow-Origin", self.allow_origin(origin)));
        out.push(("Access-Control-Allow-Methods", method.to_string()));
        if asked.first().is_some_and(|h| !h.is_empty()) {
            out.push(("Access-Control-Allow-Headers", asked.join(", ")));
        }
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".into()));
        }
        if let Some(age) = &self.max_age {
            out.push(("Access-Control-Max-Age", age.clone()));
        }
        out
    }

    /// The headers an actual (not preflight) request's answer gets.
    pub fn actual(&self, req: &Request) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(4);
        out.push(("Vary", "Origin".to_string()));
        let Some(origin) = req.headers.get("origin").filter(|o| !o.is_empty()) else {
            return out;
        };
        if !self.origin_allowed(origin) || !self.method_allowed(&req.method) {
            return out;
        }
        out.push(("Access-Control-Allow-Origin", self.allow_origin(origin)));
        if let Some(e) = &self.exposed {
            out.push(("Access-Control-Expose-Headers", e.clone()));
        }
        if self.credentials {
            out.push(("Access-Control-Allow-Credentials", "true".into()));
        }
        out
    }
}

/// Go's `CanonicalHeaderKey`: `x-my-header` → `X-My-Header`.
fn canonical(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            let out = if up {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            };
            up = c == '-';
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(v: serde_json::Value) -> Cors {
        Cors::compile(&serde_json::from_value(v).unwrap())
    }

    fn find<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflights_follow_rs_cors() {
        let c = cors(serde_json::json!({
            "allowed_origins": ["https://app.example", "https://*.example.org"],
            "allowed_methods": ["GET", "PUT"],
            "allowed_headers": ["Authorization", "Content-Type"],
            "allow_credentials": true,
            "max_age": 600
        }));
        let req = |origin: &str, method: &str, headers: &str| {
            let mut h = vec![
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
            ];
            if !headers.is_empty() {
                h.push(("Access-Control-Request-Headers", headers));
            }
            Request::fake("OPTIONS", "/", &h)
        };
        let ok = c.preflight(&req(
            "https://APP.example",
            "PUT",
            "authorization,content-type",
        ));
        assert_eq!(
            find(&ok, "Access-Control-Allow-Origin"),
            Some("https://APP.example")
        );
        assert_eq!(find(&ok, "Access-Control-Allow-Methods"), Some("PUT"));
        assert_eq!(
            find(&ok, "Access-Control-Allow-Headers"),
            Some("authorization,content-type")
        );
        assert_eq!(find(&ok, "Access-Control-Allow-Credentials"), Some("true"));
        assert_eq!(find(&ok, "Access-Control-Max-Age"), Some("600"));
        assert!(
            find(
                &c.preflight(&req("https://a.b.example.org", "GET", "")),
                "Access-Control-Allow-Origin"
            )
            .is_some()
        );
        for refused in [
            req("https://evil.example", "GET", ""),
            req("https://example.org", "GET", ""),
            req("https://app.example", "DELETE", ""),
            req("https://app.example", "GET", "x-other"),
            req("https://app.example", "GET", "content-type,authorization"),
            req("https://app.example", "GET", "Authorization"),
        ] {
            let h = c.preflight(&refused);
            assert_eq!(find(&h, "Access-Control-Allow-Origin"), None, "{h:?}");
            assert_eq!(find(&h, "Vary"), Some(PREFLIGHT_VARY));
        }
    }

    #[test]
    fn defaults_allow_any_origin_and_simple_methods() {
        let c = cors(serde_json::json!({"exposed_headers": ["x-total-count"]}));
        let get = Request::fake("GET", "/", &[("Origin", "https://x")]);
        let h = c.actual(&get);
        assert_eq!(find(&h, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(
            find(&h, "Access-Control-Expose-Headers"),
            Some("X-Total-Count")
        );
        let put = Request::fake("PUT", "/", &[("Origin", "https://x")]);
        assert_eq!(find(&c.actual(&put), "Access-Control-Allow-Origin"), None);
        assert_eq!(
            c.actual(&Request::fake("GET", "/", &[])),
            vec![("Vary", "Origin".to_string())]
        );
    }
}
