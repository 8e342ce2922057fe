//! `url_rewrites` (Tyk's URLRewrite), compiled at load: `match_pattern`,
//! `rewrite_to` with `$N` groups and variables, and triggers, which pick
//! another `rewrite_to` when the request's headers, query values, path
//! parts, session metadata or context variables match.
//!
//! Tyk's rules kept: triggers are tried in order and the first that fires
//! wins; `on: any` fires on the first option group with a match, `on: all`
//! (or no `on`) needs every non-empty group; `reverse` fires when the value
//! is present and does not match; a trigger's matches are context variables
//! `$tyk_context.trigger-{n}-{name}-{i}` (and `-{g}` for each group),
//! readable in `rewrite_to` with or without `enable_context_vars`.
//!
//! Ours: in a group under `all`, every named option must match a value;
//! Tyk counts matching values, so a header sent twice could stand in for
//! one that is missing. An `on` other than `any`/`all` is refused at load
//! (Tyk reads a typo as `all`). `payload_matches` (the body) is refused at
//! load: not built yet.

use regex::Regex;

use super::definition::{StringRegexMap, UrlRewriteMeta};
use super::glob::{Found, Glob};
use super::transforms::Template;

/// A `url_rewrites` entry.
#[derive(Clone, Debug)]
pub struct Rewrite {
    pub pattern: Regex,
    /// The pattern without a regex engine, when it has the usual shape.
    glob: Option<Glob>,
    pub to: Template,
    pub triggers: Vec<Trigger>,
}

#[derive(Clone, Debug)]
pub struct Trigger {
    any: bool,
    groups: Vec<Group>,
    pub to: Template,
}

/// One option map of a trigger (`header_matches`, ...).
#[derive(Clone, Debug)]
struct Group {
    source: Source,
    matchers: Vec<Matcher>,
}

#[derive(Clone, Copy, Debug)]
enum Source {
    Header,
    Query,
    PathPart,
    SessionMeta,
    Context,
}

#[derive(Clone, Debug)]
struct Matcher {
    /// The option's name (a header's in Go's canonical form, as Tyk names
    /// its context variables).
    name: String,
    rx: Regex,
    reverse: bool,
}

/// What triggers read from a request.
pub trait Inputs {
    fn header(&self, name: &str) -> Vec<String>;
    fn query(&self, name: &str) -> Vec<String>;
    fn path(&self) -> &str;
    /// A string `meta_data` value of the session.
    fn meta(&self, key: &str) -> Option<String>;
    /// A `$tyk_context` variable.
    fn context(&self, key: &str) -> Option<String>;
}

/// Trigger matches by context-variable name (`trigger-0-X-Foo-0`).
pub type Captures = Vec<(String, String)>;

impl Rewrite {
    /// Errors name the field below the entry (`triggers[0].on`).
    pub fn compile(meta: &UrlRewriteMeta) -> Result<Rewrite, (String, String)> {
        let pattern = Regex::new(&meta.match_pattern)
            .map_err(|e| ("match_pattern".to_string(), e.to_string()))?;
        let mut triggers = Vec::new();
        for (n, t) in meta.triggers.iter().enumerate() {
            let at = |field: &str| format!("triggers[{n}].{field}");
            let any = match t.on.as_str() {
                "any" => true,
                "all" | "" => false,
                other => {
                    return Err((
                        at("on"),
                        format!("{other:?} is neither \"any\" nor \"all\""),
                    ));
                }
            };
            let o = &t.options;
            if !o.payload_matches.match_rx.is_empty() {
                return Err((
                    at("options.payload_matches"),
                    "payload triggers are not supported yet; remove the trigger".into(),
                ));
            }
            let lists = [
                ("header_matches", Source::Header, &o.header_matches),
                ("query_val_matches", Source::Query, &o.query_val_matches),
                ("path_part_matches", Source::PathPart, &o.path_part_matches),
                (
                    "session_meta_matches",
                    Source::SessionMeta,
                    &o.session_meta_matches,
                ),
                (
                    "request_context_matches",
                    Source::Context,
                    &o.request_context_matches,
                ),
            ];
            let mut groups = Vec::new();
            for (list, source, map) in lists.into_iter().filter(|(_, _, m)| !m.is_empty()) {
                let matchers = map
                    .iter()
                    .map(|(name, m)| Matcher::compile(source, name, m))
                    .collect::<Result<_, _>>()
                    .map_err(|(name, why)| (at(&format!("options.{list}.{name}.match_rx")), why))?;
                groups.push(Group { source, matchers });
            }
            triggers.push(Trigger {
                any,
                groups,
                to: Template::parse(&t.rewrite_to),
            });
        }
        Ok(Rewrite {
            glob: Glob::parse(pattern.as_str()),
            pattern,
            to: Template::parse(&meta.rewrite_to),
            triggers,
        })
    }

    /// The `rewrite_to` that applies (the first trigger that fires, else
    /// the entry's own) and every trigger match seen on the way.
    pub fn choose(&self, input: &dyn Inputs) -> (&Template, Captures) {
        let mut caps = Captures::new();
        for (n, t) in self.triggers.iter().enumerate() {
            if t.fires(n, input, &mut caps) {
                return (&t.to, caps);
            }
        }
        (&self.to, caps)
    }

    /// `to` (`rewrite_to` with its variables expanded) with `url`'s groups,
    /// if the pattern matches `url`.
    pub fn apply(&self, url: &str, to: &str) -> Option<String> {
        match self.glob.as_ref().map(|g| g.find(url)) {
            Some(Found::No) => None,
            Some(Found::Yes(spans)) => Some(substitute(to, |n| {
                spans.get(n).map_or("", |&(from, upto)| &url[from..upto])
            })),
            Some(Found::Unsure) | None => {
                let caps = self.pattern.captures(url)?;
                Some(substitute(to, |n| caps.get(n).map_or("", |m| m.as_str())))
            }
        }
    }
}

/// `to` with each `$N` replaced by group N (none: empty).
fn substitute<'a>(to: &str, group: impl Fn(usize) -> &'a str) -> String {
    let mut out = String::with_capacity(to.len() + 16);
    let mut rest = to;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push('$');
        } else {
            out.push_str(group(after[..digits].parse().unwrap_or(usize::MAX)));
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

impl Trigger {
    fn fires(&self, n: usize, input: &dyn Inputs, caps: &mut Captures) -> bool {
        let mut passed = 0;
        for g in &self.groups {
            if g.passes(self.any, n, input, caps) {
                if self.any {
                    return true;
                }
                passed += 1;
            }
        }
        // Tyk: `all` over no groups at all fires.
        !self.any && passed == self.groups.len()
    }
}

impl Group {
    fn passes(&self, any: bool, n: usize, input: &dyn Inputs, caps: &mut Captures) -> bool {
        let mut matched_options = 0;
        // Path parts are numbered across the group, as Tyk does.
        let mut part_no = 0;
        for m in &self.matchers {
            let values: Vec<String> = match self.source {
                Source::Header => input.header(&m.name),
                Source::Query => input.query(&m.name),
                Source::PathPart => input.path().split('/').map(str::to_string).collect(),
                Source::SessionMeta => input.meta(&m.name).into_iter().collect(),
                Source::Context => captured(caps, &m.name)
                    .or_else(|| input.context(&m.name))
                    .into_iter()
                    .collect(),
            };
            let indexed = matches!(self.source, Source::Header | Source::Query);
            let mut hit = false;
            for (i, v) in values.iter().enumerate() {
                let found = m.rx.captures(v);
                if found.is_some() == m.reverse {
                    continue;
                }
                hit = true;
                let key = match self.source {
                    _ if indexed => format!("trigger-{n}-{}-{i}", m.name),
                    Source::PathPart => format!("trigger-{n}-{}-{part_no}", m.name),
                    _ => format!("trigger-{n}-{}", m.name),
                };
                part_no += 1;
                if let Some(found) = found {
                    let mut groups = found.iter();
                    if let Some(whole) = groups.next().flatten() {
                        caps.push((key.clone(), whole.as_str().to_string()));
                    }
                    for (g, value) in groups.enumerate() {
                        let value = value.map_or("", |v| v.as_str()).to_string();
                        caps.push((format!("{key}-{g}"), value));
                    }
                }
            }
            if hit {
                matched_options += 1;
            }
        }
        if any {
            matched_options > 0
        } else {
            matched_options == self.matchers.len()
        }
    }
}

impl Matcher {
    fn compile(
        source: Source,
        name: &str,
        m: &StringRegexMap,
    ) -> Result<Matcher, (String, String)> {
        let rx = Regex::new(&m.match_rx).map_err(|e| (name.to_string(), e.to_string()))?;
        let name = match source {
            Source::Header => canonical_header(name),
            _ => name.to_string(),
        };
        Ok(Matcher {
            name,
            rx,
            reverse: m.reverse,
        })
    }
}

/// A trigger match recorded earlier in this request.
pub fn captured(caps: &Captures, name: &str) -> Option<String> {
    caps.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// Go's `CanonicalMIMEHeaderKey`: `x-api-version` → `X-Api-Version`.
fn canonical_header(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper {
            c.to_ascii_uppercase()
        } else {
            c.to_ascii_lowercase()
        });
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Default)]
    struct Fake {
        headers: Vec<(&'static str, &'static str)>,
        query: Vec<(&'static str, &'static str)>,
        path: &'static str,
        meta: Vec<(&'static str, &'static str)>,
    }

    impl Inputs for Fake {
        fn header(&self, name: &str) -> Vec<String> {
            let h = self
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(name));
            h.map(|(_, v)| v.to_string()).collect()
        }
        fn query(&self, name: &str) -> Vec<String> {
            let q = self.query.iter().filter(|(k, _)| *k == name);
            q.map(|(_, v)| v.to_string()).collect()
        }
        fn path(&self) -> &str {
            self.path
        }
        fn meta(&self, key: &str) -> Option<String> {
            let m = self.meta.iter().find(|(k, _)| *k == key);
            m.map(|(_, v)| v.to_string())
        }
        fn context(&self, key: &str) -> Option<String> {
            (key == "request_method").then(|| "GET".to_string())
        }
    }

    fn rewrite(triggers: serde_json::Value) -> Result<Rewrite, (String, String)> {
        let meta: UrlRewriteMeta = serde_json::from_value(json!({
            "path": "/x", "method": "GET", "match_pattern": "/x/(\\w+)",
            "rewrite_to": "/default/$1", "triggers": triggers,
        }))
        .unwrap();
        Rewrite::compile(&meta)
    }

    fn chosen(r: &Rewrite, input: &Fake) -> String {
        let (to, caps) = r.choose(input);
        to.render(|p| match p {
            super::super::Part::Context(k) => captured(&caps, k),
            _ => None,
        })
    }

    #[test]
    fn rewrites_substitute_groups() {
        let to = "/new/$2/$1?x=$3&cost=$";
        let r = Rewrite {
            pattern: Regex::new(r"/old/(\w+)/(\w+)").unwrap(),
            glob: None,
            to: Template::parse(to),
            triggers: vec![],
        };
        assert_eq!(
            r.apply("/api/old/a/b", to).as_deref(),
            Some("/new/b/a?x=&cost=$")
        );
        assert_eq!(r.apply("/api/other", to), None);
    }

    /// A pattern of the usual shape is matched without the regex, with
    /// the regex's groups.
    #[test]
    fn glob_rewrites_match_the_regex() {
        let urls = [
            "/real/items/42",
            "/real/items/42?x=1",
            "/api/real/items/7/x",
            "/real/items/",
            "/real/items/4\u{663}",
            "/real/items/x",
            "/items/a/b",
            "/items/%20/",
            "/other",
        ];
        for pattern in [
            "/real/items/(\\d+)",
            "^/items/([^/]+)/([^/]+)$",
            "/items/(.*)",
            "/real/(\\w+)",
        ] {
            let meta: UrlRewriteMeta = serde_json::from_value(json!({
                "path": "/x", "method": "GET", "match_pattern": pattern, "rewrite_to": "/to/$1/$2/$0/$",
            }))
            .unwrap();
            let r = Rewrite::compile(&meta).unwrap();
            let plain = Rewrite {
                glob: None,
                ..r.clone()
            };
            assert_eq!(r.glob.is_some(), !pattern.contains("\\w"), "{pattern}");
            for url in urls {
                let to = "/to/$1/$2/$0/$";
                assert_eq!(r.apply(url, to), plain.apply(url, to), "{pattern} on {url}");
            }
        }
    }

    #[test]
    fn any_fires_on_one_group_all_needs_every_option() {
        let r = rewrite(json!([
            {"on": "all", "rewrite_to": "/both",
             "options": {"header_matches": {"x-a": {"match_rx": "^1$"}, "X-B": {"match_rx": "^2$"}}}},
            {"on": "any", "rewrite_to": "/either",
             "options": {"header_matches": {"x-a": {"match_rx": "^1$"}},
                         "query_val_matches": {"q": {"match_rx": "yes"}}}},
        ]))
        .unwrap();
        let mut f = Fake::default();
        assert_eq!(chosen(&r, &f), "/default/$1");
        f.headers = vec![("X-A", "1"), ("X-A", "1")];
        // X-A twice does not stand in for X-B under `all`.
        assert_eq!(chosen(&r, &f), "/either");
        f.headers.push(("x-b", "2"));
        assert_eq!(chosen(&r, &f), "/both");
        let f = Fake {
            query: vec![("q", "oh yes")],
            ..Fake::default()
        };
        assert_eq!(chosen(&r, &f), "/either");
        let f = Fake {
            query: vec![("Q", "oh yes")],
            ..Fake::default()
        };
        assert_eq!(chosen(&r, &f), "/default/$1", "query names are exact");
    }

    #[test]
    fn reverse_needs_the_value_present_and_unmatched() {
        let r = rewrite(json!([{"on": "any", "rewrite_to": "/not-admin",
            "options": {"header_matches": {"X-Role": {"match_rx": "admin", "reverse": true}}}}]))
        .unwrap();
        let mut f = Fake::default();
        assert_eq!(
            chosen(&r, &f),
            "/default/$1",
            "an absent header never fires"
        );
        f.headers = vec![("X-Role", "admin")];
        assert_eq!(chosen(&r, &f), "/default/$1");
        f.headers = vec![("X-Role", "guest")];
        assert_eq!(chosen(&r, &f), "/not-admin");
    }

    #[test]
    fn matches_become_context_variables() {
        let r = rewrite(json!([{"on": "all",
            "rewrite_to": "/u/$tyk_context.trigger-0-X-User-Id-0-0/$tyk_context.trigger-0-seg-1/$tyk_context.trigger-0-tier",
            "options": {
                "header_matches": {"x-user-id": {"match_rx": "id-(\\d+)"}},
                "path_part_matches": {"seg": {"match_rx": "^v\\d$"}},
                "session_meta_matches": {"tier": {"match_rx": "gold|silver"}},
                "request_context_matches": {"request_method": {"match_rx": "GET"}}}}]))
        .unwrap();
        let f = Fake {
            headers: vec![("X-User-Id", "id-42")],
            path: "/x/v1/items/v2",
            meta: vec![("tier", "gold")],
            ..Fake::default()
        };
        assert_eq!(chosen(&r, &f), "/u/42/v2/gold");
        let f = Fake {
            meta: vec![("tier", "bronze")],
            ..f
        };
        assert_eq!(chosen(&r, &f), "/default/$1");
    }

    #[test]
    fn bad_triggers_are_refused_naming_the_field() {
        let e = rewrite(json!([{"on": "Any", "rewrite_to": "/x"}])).unwrap_err();
        assert_eq!(e.0, "triggers[0].on");
        let e = rewrite(json!([{"on": "any", "rewrite_to": "/x",
            "options": {"query_val_matches": {"q": {"match_rx": "("}}}}]))
        .unwrap_err();
        assert_eq!(e.0, "triggers[0].options.query_val_matches.q.match_rx");
        let e = rewrite(json!([{"on": "any", "rewrite_to": "/x",
            "options": {"payload_matches": {"match_rx": "a"}}}]))
        .unwrap_err();
        assert_eq!(e.0, "triggers[0].options.payload_matches");
        // `all` with no options fires (Tyk).
        let r = rewrite(json!([{"rewrite_to": "/always"}])).unwrap();
        assert_eq!(chosen(&r, &Fake::default()), "/always");
    }
}
