//! Per-endpoint rules of one API version (CONTRACT §6, Tyk's
//! `extended_paths` and legacy `paths`), compiled at load: each entry's
//! path pattern becomes one regex, once. What the request path stages ask
//! of them: may this request pass, skip auth, or get a canned reply
//! (`access`); which header, path and method changes apply (the transform
//! rules, in later modules).
//!
//! Patterns follow Tyk exactly (`PreparePathRegexp`): `{name}` matches one
//! segment, `/*` anything, and the result is an unanchored regex unless
//! `enable_path_prefix_matching` / `_suffix_matching` anchor it. They are
//! tried on the canonical path without the listen path (and without the
//! version segment when the API strips it), then with it. An entry whose
//! pattern does not compile stops the API from loading: Tyk drops such an
//! entry silently, which turns a deny rule into nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use regex::Regex;

use super::glob::Glob;
use super::prefilter::Prefilter;
use super::{EndpointMeta, MethodAction, VersionInfo};

/// How patterns are anchored and cased, from `tyk.conf`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathMatching {
    /// `http_server_options.enable_path_prefix_matching`.
    pub prefix: bool,
    /// `http_server_options.enable_path_suffix_matching`.
    pub suffix: bool,
    /// `ignore_endpoint_case`.
    pub ignore_case: bool,
}

/// An entry's path pattern, compiled: a regex, and when the pattern has
/// the usual shape (`/items/{id}`) the same pattern matched without one.
#[derive(Clone, Debug)]
pub struct PathPattern {
    rx: Regex,
    glob: Option<Glob>,
}

impl PathPattern {
    /// The regex as compiled (Tyk's pattern after rewriting).
    pub fn as_str(&self) -> &str {
        self.rx.as_str()
    }

    fn is_match(&self, path: &str) -> bool {
        let glob = self.glob.as_ref().and_then(|g| g.is_match(path));
        glob.unwrap_or_else(|| self.rx.is_match(path))
    }
}

impl PathPattern {
    pub fn compile(path: &str, m: PathMatching, ignore_case: bool) -> Result<PathPattern, String> {
        let mut p = path.to_string();
        let (open, close) = (p.matches('{').count(), p.matches('}').count());
        if open > 0 && open == close {
            p = Regex::new(r"\{[^}]+\}")
                .map(|rx| rx.replace_all(&p, "([^/]+)").into_owned())
                .map_err(|e| e.to_string())?;
        }
        if p.contains("/*") {
            p = p.replace("/*/", "/[^/]+/").replace("/*", "/.*");
        }
        if m.prefix && p.starts_with('/') {
            p.insert(0, '^');
        }
        if m.suffix && !p.ends_with('$') {
            p.push('$');
        }
        if ignore_case || m.ignore_case {
            p.insert_str(0, "(?i)");
        }
        let rx =
            Regex::new(&p).map_err(|e| format!("path {path:?} is not a valid pattern: {e}"))?;
        let glob = Glob::parse(&p);
        Ok(PathPattern { rx, glob })
    }

    /// Tyk's order: without the version segment (when that differs), then
    /// without the listen path, then the whole path.
    pub fn matches(&self, c: &Candidates<'_>) -> bool {
        c.no_version.is_some_and(|p| self.is_match(p))
            || self.is_match(c.clean)
            || self.is_match(c.full)
    }
}

/// The forms of a request path patterns are tried on.
pub struct Candidates<'a> {
    pub no_version: Option<&'a str>,
    pub clean: &'a str,
    pub full: &'a str,
}

/// A canned answer: `mock_response`, or a `reply` method action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    fn new(code: i64, body: &str, headers: &BTreeMap<String, String>) -> Reply {
        Reply {
            // Tyk writes code 0 as is, which Go refuses; 200 is meant.
            code: u16::try_from(code)
                .ok()
                .filter(|c| (100..=999).contains(c))
                .unwrap_or(200),
            body: body.as_bytes().to_vec(),
            headers: headers
                .iter()
                .filter(|(k, v)| valid_field(k, v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// A header an API author wrote that can be sent: a token name and a value
/// without control characters (a CR or LF would split the response).
pub fn valid_field(name: &str, value: &str) -> bool {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    !name.is_empty()
        && name.bytes().all(token)
        && value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// What the access rules say of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Pass,
    /// `ignored`: pass without auth, key checks, rate limits or quotas.
    Ignore,
    /// 403 "Requested endpoint is forbidden".
    Forbidden,
    Reply(&'a Reply),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Ignored,
    White,
    Black,
}

impl List {
    fn verdict<'a>(self) -> Verdict<'a> {
        match self {
            List::Ignored => Verdict::Ignore,
            List::White => Verdict::Pass,
            List::Black => Verdict::Forbidden,
        }
    }
}

#[derive(Clone, Debug)]
enum MethodRule {
    /// `no_action`: the list's own verdict.
    Proceed,
    Reply(Arc<Reply>),
    /// Any other action blocks, as in Tyk.
    Block,
}

#[derive(Clone, Debug)]
enum Rule {
    Mock {
        method: String,
        reply: Arc<Reply>,
    },
    List {
        list: List,
        /// "" = any method.
        method: String,
        /// `method_actions`, when present: only these methods match.
        actions: Option<BTreeMap<String, MethodRule>>,
    },
}

impl Rule {
    /// What this rule says of a request with `method` whose path it
    /// matches; None: nothing, the next rule is asked.
    fn decide(&self, method: &str) -> Option<Verdict<'_>> {
        match self {
            Rule::Mock { method: m, reply } => (m == method).then(|| Verdict::Reply(reply)),
            Rule::List {
                list,
                method: m,
                actions: None,
            } => (m.is_empty() || m == method).then(|| list.verdict()),
            Rule::List {
                list,
                actions: Some(actions),
                ..
            } => match actions.get(method)? {
                MethodRule::Proceed => Some(list.verdict()),
                MethodRule::Reply(r) => Some(Verdict::Reply(r)),
                MethodRule::Block => Some(Verdict::Forbidden),
            },
        }
    }
}

/// The access rules of one version, in Tyk's order: mock replies, ignored,
/// black list, white list; the first entry that matches decides.
#[derive(Clone, Debug, Default)]
pub struct Access {
    rules: Vec<(PathPattern, Rule)>,
    /// Every rule's required literals in one automaton: a path is scanned
    /// once per form, and only the few rules whose literals it holds run
    /// their regex (an API with 50 white-list entries would otherwise run
    /// 150 regexes per request).
    filter: Option<Prefilter>,
    /// Any white-list entry: everything not allowed is forbidden.
    white_mode: bool,
}

/// Rules a path's bit sets hold on the stack (more: on the heap).
const STACK_RULES: usize = 256;

impl Access {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn verdict(&self, method: &str, c: &Candidates<'_>) -> Verdict<'_> {
        let Some(filter) = &self.filter else {
            return self.fallback();
        };
        let words = filter.words();
        let mut stack = [0u64; 2 * STACK_RULES / 64];
        let mut heap = Vec::new();
        let bits = if 2 * words <= stack.len() {
            &mut stack[..2 * words]
        } else {
            heap.resize(2 * words, 0);
            &mut heap[..]
        };
        let (sure, maybe) = bits.split_at_mut(words);
        // The clean form is nearly always the tail of the full one: every
        // literal it holds, the full form holds too.
        let clean = (!c.full.ends_with(c.clean)).then_some(c.clean);
        let forms = [c.no_version, Some(c.full), clean].into_iter().flatten();
        let hits = filter.scan(forms, sure, maybe);
        for (i, sure) in hits.candidates() {
            let (pattern, rule) = &self.rules[i];
            // A rule that cannot apply to this method is not worth a regex.
            let Some(verdict) = rule.decide(method) else {
                continue;
            };
            if sure || pattern.matches(c) {
                return verdict;
            }
        }
        self.fallback()
    }

    /// When no rule decides.
    fn fallback(&self) -> Verdict<'_> {
        if self.white_mode {
            Verdict::Forbidden
        } else {
            Verdict::Pass
        }
    }

    /// The rules of `v`; Err is (field path, message).
    pub fn compile(
        name: &str,
        v: &VersionInfo,
        m: PathMatching,
    ) -> Result<Access, (String, String)> {
        let at = |list: &str, i: usize| format!("version_data.versions.{name}.{list}[{i}].path");
        let mut rules = Vec::new();
        let mut white_mode = false;
        if v.use_extended_paths {
            let e = &v.extended_paths;
            for (i, mock) in e.mock_response.iter().enumerate() {
                if mock.disabled {
                    continue;
                }
                let case = mock.ignore_case || v.ignore_endpoint_case;
                let pattern = PathPattern::compile(&mock.path, m, case)
                    .map_err(|why| (at("extended_paths.mock_response", i), why))?;
                let reply = Arc::new(Reply::new(mock.code, &mock.body, &mock.headers));
                let method = mock.method.clone();
                rules.push((pattern, Rule::Mock { method, reply }));
            }
            let lists = [
                ("ignored", &e.ignored, List::Ignored),
                ("black_list", &e.black_list, List::Black),
                ("white_list", &e.white_list, List::White),
            ];
            for (field, entries, list) in lists {
                for (i, entry) in entries.iter().enumerate() {
                    if entry.disabled {
                        continue;
                    }
                    let case = entry.ignore_case || v.ignore_endpoint_case;
                    let pattern = PathPattern::compile(&entry.path, m, case)
                        .map_err(|why| (at(&format!("extended_paths.{field}"), i), why))?;
                    white_mode |= list == List::White;
                    rules.push((pattern, list_rule(list, entry)));
                }
            }
        } else {
            let p = &v.paths;
            let lists = [
                ("ignored", &p.ignored, List::Ignored),
                ("black_list", &p.black_list, List::Black),
                ("white_list", &p.white_list, List::White),
            ];
            for (field, entries, list) in lists {
                for (i, path) in entries.iter().enumerate() {
                    let pattern = PathPattern::compile(path, m, false)
                        .map_err(|why| (at(&format!("paths.{field}"), i), why))?;
                    white_mode |= list == List::White;
                    let rule = Rule::List {
                        list,
                        method: String::new(),
                        actions: None,
                    };
                    rules.push((pattern, rule));
                }
            }
        }
        let filter =
            (!rules.is_empty()).then(|| Prefilter::new(rules.iter().map(|(p, _)| p.as_str())));
        Ok(Access {
            rules,
            filter,
            white_mode,
        })
    }
}

fn list_rule(list: List, entry: &EndpointMeta) -> Rule {
    let action = |a: &MethodAction| match a.action.as_str() {
        "no_action" => MethodRule::Proceed,
        "reply" => MethodRule::Reply(Arc::new(Reply::new(a.code, &a.data, &a.headers))),
        _ => MethodRule::Block,
    };
    Rule::List {
        list,
        method: entry.method.clone(),
        actions: entry
            .method_actions
            .as_ref()
            .map(|all| all.iter().map(|(k, a)| (k.clone(), action(a))).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn version(v: serde_json::Value) -> VersionInfo {
        serde_json::from_value(v).unwrap()
    }

    fn on(path: &str) -> Candidates<'_> {
        Candidates {
            no_version: None,
            clean: path,
            full: path,
        }
    }

    #[test]
    fn patterns_follow_tyks_rules() {
        let m = PathMatching::default();
        let p = PathPattern::compile("/users/{id}/posts", m, false).unwrap();
        assert!(p.matches(&on("/users/7/posts")));
        assert!(!p.matches(&on("/users/7/8/posts")));
        // Unanchored by default: a pattern matches anywhere.
        let p = PathPattern::compile("/admin", m, false).unwrap();
        assert!(p.matches(&on("/x/admin/y")));
        assert!(!p.matches(&on("/ADMIN")));
        assert!(
            PathPattern::compile("/admin", m, true)
                .unwrap()
                .matches(&on("/ADMIN"))
        );
        let anchored = PathMatching {
            prefix: true,
            suffix: true,
            ignore_case: false,
        };
        let p = PathPattern::compile("/admin", anchored, false).unwrap();
        assert!(p.matches(&on("/admin")));
        assert!(!p.matches(&on("/x/admin")) && !p.matches(&on("/admin/y")));
        let p = PathPattern::compile("/files/*", m, false).unwrap();
        assert!(p.matches(&on("/files/a/b")));
        assert!(PathPattern::compile("/a(", m, false).is_err());
    }

    #[test]
    fn first_matching_entry_decides_in_tyks_order() {
        let v = version(json!({
            "use_extended_paths": true,
            "extended_paths": {
                "white_list": [{"path": "/open", "method": "GET"}],
                "black_list": [{"path": "/open/secret", "method": ""}],
                "ignored": [{"path": "/open/health", "method": "GET"}],
                "mock_response": [{"path": "/mock", "method": "GET", "code": 418, "body": "tea"}]
            }
        }));
        let a = Access::compile("Default", &v, PathMatching::default()).unwrap();
        assert_eq!(a.verdict("GET", &on("/open/x")), Verdict::Pass);
        assert_eq!(a.verdict("POST", &on("/open/x")), Verdict::Forbidden);
        assert_eq!(a.verdict("GET", &on("/open/secret")), Verdict::Forbidden);
        assert_eq!(a.verdict("GET", &on("/open/health")), Verdict::Ignore);
        assert_eq!(a.verdict("GET", &on("/other")), Verdict::Forbidden);
        let Verdict::Reply(r) = a.verdict("GET", &on("/mock")) else {
            panic!("no reply")
        };
        assert_eq!((r.code, r.body.as_slice()), (418, b"tea".as_slice()));
        // A mock needs its exact method.
        assert_eq!(a.verdict("get", &on("/mock")), Verdict::Forbidden);
    }

    #[test]
    fn method_actions_replace_the_method_field() {
        let v = version(json!({
            "use_extended_paths": true,
            "extended_paths": {
                "black_list": [{"path": "/b", "method": "GET", "method_actions": {
                    "POST": {"action": "no_action"},
                    "PUT": {"action": "reply", "code": 201, "data": "made", "headers": {"X-A": "1", "Bad\r\n": "x"}}
                }}],
                "ignored": [{"path": "/i", "method_actions": {}}, {"path": "/d", "disabled": true}]
            }
        }));
        let a = Access::compile("v1", &v, PathMatching::default()).unwrap();
        assert_eq!(a.verdict("GET", &on("/b")), Verdict::Pass);
        assert_eq!(a.verdict("POST", &on("/b")), Verdict::Forbidden);
        let Verdict::Reply(r) = a.verdict("PUT", &on("/b")) else {
            panic!("no reply")
        };
        assert_eq!(r.headers, vec![("X-A".to_string(), "1".to_string())]);
        // An empty map matches no method; a disabled entry nothing.
        assert_eq!(a.verdict("GET", &on("/i")), Verdict::Pass);
        assert_eq!(a.verdict("GET", &on("/d")), Verdict::Pass);
    }

    /// Tyk's rule walk with every regex run, no prefilter and no glob.
    fn plain<'a>(a: &'a Access, method: &str, c: &Candidates<'_>) -> Verdict<'a> {
        let rx = |p: &PathPattern, path: &str| p.rx.is_match(path);
        for (pattern, rule) in &a.rules {
            let hit = c.no_version.is_some_and(|p| rx(pattern, p))
                || rx(pattern, c.clean)
                || rx(pattern, c.full);
            if let (true, Some(v)) = (hit, rule.decide(method)) {
                return v;
            }
        }
        a.fallback()
    }

    /// The prefilter and globs against the plain walk, on many rule sets
    /// (anchoring, case, methods, raw regexes) and paths.
    #[test]
    fn verdicts_match_running_every_regex() {
        let paths = [
            "/items/42",
            "/real/items/42",
            "/ITEMS/42",
            "/v1/items/42",
            "/resource7/x",
            "/resource7",
            "/x/resource17/y/",
            "/a/b",
            "/a",
            "/b/c",
            "/users/12/posts",
            "/files/a/b",
            "/",
            "/health",
            "/v2/health",
            "/caf\u{e9}/1",
            "/CAF\u{c9}/1",
            "/items/",
            "/x/items/42/raw",
        ];
        let methods = ["GET", "POST", ""];
        let mut seen = 0;
        for (n, (prefix, suffix, case)) in [
            (false, false, false),
            (true, false, false),
            (false, true, false),
            (true, true, true),
        ]
        .into_iter()
        .enumerate()
        {
            let mut white: Vec<serde_json::Value> = (0..50)
                .map(|i| json!({"path": format!("/resource{i}/{{id}}"), "method": methods[i % 3]}))
                .collect();
            white[24] = json!({"path": "/items/{id}", "method": "GET"});
            white[30] =
                json!({"path": "/caf\u{e9}/{id}", "method": "GET", "ignore_case": n % 2 == 0});
            let v = version(json!({
                "use_extended_paths": true,
                "ignore_endpoint_case": case,
                "extended_paths": {
                    "white_list": white,
                    "black_list": [{"path": "/a|/b/c", "method": ""}, {"path": "/users/\\d+", "method": "POST"}],
                    "ignored": [{"path": "/health", "method": "GET"}, {"path": "/files/*", "method": "GET", "disabled": n == 1}],
                    "mock_response": [{"path": "/items/{id}/raw", "method": "POST", "code": 418}]
                }
            }));
            let m = PathMatching {
                prefix,
                suffix,
                ignore_case: false,
            };
            let a = Access::compile("Default", &v, m).unwrap();
            for path in paths {
                let forms = [
                    Candidates {
                        no_version: None,
                        clean: path,
                        full: path,
                    },
                    Candidates {
                        no_version: Some("/items/42"),
                        clean: path,
                        full: "/api/v1/items/42",
                    },
                    Candidates {
                        no_version: None,
                        clean: path,
                        full: &format!("/api{path}"),
                    },
                ];
                for c in &forms {
                    for method in ["GET", "POST", "PUT"] {
                        assert_eq!(
                            a.verdict(method, c),
                            plain(&a, method, c),
                            "{n} {method} {path}"
                        );
                        seen += 1;
                    }
                }
            }
        }
        assert!(seen > 500);
    }

    #[test]
    fn legacy_paths_and_bad_patterns() {
        let v = version(json!({"paths": {"white_list": ["/a"], "ignored": ["/a/free"]}}));
        let a = Access::compile("Default", &v, PathMatching::default()).unwrap();
        assert_eq!(a.verdict("DELETE", &on("/a")), Verdict::Pass);
        assert_eq!(a.verdict("GET", &on("/a/free")), Verdict::Ignore);
        assert_eq!(a.verdict("GET", &on("/b")), Verdict::Forbidden);
        let bad = version(
            json!({"use_extended_paths": true, "extended_paths": {"black_list": [{"path": "/ok"}, {"path": "/x["}]}}),
        );
        let (field, why) = Access::compile("Default", &bad, PathMatching::default()).unwrap_err();
        assert_eq!(
            field,
            "version_data.versions.Default.extended_paths.black_list[1].path"
        );
        assert!(why.contains("/x["), "{why}");
    }
}
