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

use regex::{Regex, RegexSet};

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

/// An entry's path pattern, compiled.
#[derive(Clone, Debug)]
pub struct PathPattern(Regex);

impl PathPattern {
    /// The regex as compiled (Tyk's pattern after rewriting).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
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
        Regex::new(&p)
            .map(PathPattern)
            .map_err(|e| format!("path {path:?} is not a valid pattern: {e}"))
    }

    /// Tyk's order: without the version segment (when that differs), then
    /// without the listen path, then the whole path.
    pub fn matches(&self, c: &Candidates<'_>) -> bool {
        c.no_version.is_some_and(|p| self.0.is_match(p))
            || self.0.is_match(c.clean)
            || self.0.is_match(c.full)
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

/// The access rules of one version, in Tyk's order: mock replies, ignored,
/// black list, white list; the first entry that matches decides.
#[derive(Clone, Debug, Default)]
pub struct Access {
    rules: Vec<(PathPattern, Rule)>,
    /// Every rule's pattern in one automaton: a path is scanned once per
    /// form, however many entries (an API with 50 white-list entries would
    /// otherwise run 150 regexes per request).
    set: Option<RegexSet>,
    /// Any white-list entry: everything not allowed is forbidden.
    white_mode: bool,
}

impl Access {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn verdict(&self, method: &str, c: &Candidates<'_>) -> Verdict<'_> {
        let hits = self.hits(c);
        for (i, (pattern, rule)) in self.rules.iter().enumerate() {
            let matched = match &hits {
                Some(h) => h[i],
                None => pattern.matches(c),
            };
            if !matched {
                continue;
            }
            match rule {
                Rule::Mock { method: m, reply } => {
                    if m == method {
                        return Verdict::Reply(reply);
                    }
                }
                Rule::List {
                    list,
                    method: m,
                    actions: None,
                } => {
                    if m.is_empty() || m == method {
                        return list.verdict();
                    }
                }
                Rule::List {
                    list,
                    actions: Some(actions),
                    ..
                } => match actions.get(method) {
                    None => {}
                    Some(MethodRule::Proceed) => return list.verdict(),
                    Some(MethodRule::Reply(r)) => return Verdict::Reply(r),
                    Some(MethodRule::Block) => return Verdict::Forbidden,
                },
            }
        }
        if self.white_mode {
            Verdict::Forbidden
        } else {
            Verdict::Pass
        }
    }

    /// Which rules' patterns match any form of the path, by rule index.
    fn hits(&self, c: &Candidates<'_>) -> Option<Vec<bool>> {
        let set = self.set.as_ref()?;
        let mut hits = vec![false; self.rules.len()];
        let forms = [
            c.no_version,
            Some(c.clean),
            (c.full != c.clean).then_some(c.full),
        ];
        for form in forms.into_iter().flatten() {
            set.matches_read_at(&mut hits, form, 0);
        }
        Some(hits)
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
        // Each pattern compiled alone already; together they can only fail
        // on size, and then each is tried in turn.
        let set = (rules.len() > 1)
            .then(|| RegexSet::new(rules.iter().map(|(p, _)| p.as_str())).ok())
            .flatten();
        Ok(Access {
            rules,
            set,
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
