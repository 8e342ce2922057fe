//! What an API version changes in a request and its response (CONTRACT
//! §3.5 step 7, §6), compiled at load: header transforms (global and per
//! endpoint, both ways, values with `$tyk_meta.*` / `$tyk_context.*`),
//! URL rewrites, method transforms, hard timeouts and size limits.
//!
//! As in Tyk, these per-endpoint entries need their exact method (an
//! empty `method` never matches), are tried on the path without the listen
//! path, and are case-sensitive unless the gateway's
//! `ignore_endpoint_case` says otherwise; the first matching entry of each
//! kind applies.

use std::sync::Arc;
use std::time::Duration;

use super::breaker::Breaker;
use super::endpoints::{Candidates, PathMatching, PathPattern, valid_field};
use super::rewrite::Rewrite;
use super::{HeaderTransformMeta, PerEndpoint, VersionInfo};

/// A header value with Tyk's variables, split once at load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(Vec<Part>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// `$tyk_meta.<key>`: the session's `meta_data`.
    Meta(String),
    /// `$tyk_context.<key>`: a request context variable.
    Context(String),
}

impl Template {
    pub fn parse(text: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = text;
        let labels = [("$tyk_meta.", true), ("$tyk_context.", false)];
        loop {
            let next = labels
                .iter()
                .filter_map(|(label, meta)| rest.find(label).map(|at| (at, *label, *meta)))
                .min_by_key(|(at, _, _)| *at);
            let Some((at, label, meta)) = next else {
                break;
            };
            let name_start = at + label.len();
            let name_len = rest[name_start..]
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || b"_-.".contains(b))
                .count();
            if name_len == 0 {
                parts.push(Part::Text(rest[..name_start].to_string()));
                rest = &rest[name_start..];
                continue;
            }
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_string()));
            }
            let name = rest[name_start..name_start + name_len].to_string();
            parts.push(if meta {
                Part::Meta(name)
            } else {
                Part::Context(name)
            });
            rest = &rest[name_start + name_len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Template(parts)
    }

    /// The value with each variable looked up by `var` (unknown: empty).
    pub fn render(&self, var: impl Fn(&Part) -> Option<String>) -> String {
        let mut out = String::new();
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                other => out.push_str(&var(other).unwrap_or_default()),
            }
        }
        out
    }

    /// No variables: the value as written.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Text(t)] => Some(t),
            _ => None,
        }
    }
}

/// Headers to delete, then headers to set.
#[derive(Clone, Debug, Default)]
pub struct HeaderOps {
    pub delete: Vec<String>,
    pub add: Vec<(String, Template)>,
}

impl HeaderOps {
    fn new(delete: &[String], add: &std::collections::BTreeMap<String, String>) -> HeaderOps {
        HeaderOps {
            delete: delete.iter().filter(|h| !h.is_empty()).cloned().collect(),
            // A value with a control character could split the message.
            add: add
                .iter()
                .filter(|(k, v)| valid_field(k, v))
                .map(|(k, v)| (k.clone(), Template::parse(v)))
                .collect(),
        }
    }

    fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }

    /// Deletes `X-Forwarded-For`: then the proxy does not set it (Tyk).
    pub fn drops_forwarded_for(&self) -> bool {
        self.delete
            .iter()
            .any(|h| h.eq_ignore_ascii_case("x-forwarded-for"))
    }
}

/// One per-endpoint entry: its pattern, exact method, and what it does.
#[derive(Clone, Debug)]
pub struct Entry<T> {
    pub pattern: PathPattern,
    pub method: String,
    pub then: T,
}

fn first<'a, T>(entries: &'a [Entry<T>], method: &str, c: &Candidates<'_>) -> Option<&'a T> {
    entries
        .iter()
        .find(|e| e.method == method && e.pattern.matches(c))
        .map(|e| &e.then)
}

/// One version's transforms.
#[derive(Clone, Debug, Default)]
pub struct Transforms {
    pub global_headers: HeaderOps,
    pub headers: Vec<Entry<HeaderOps>>,
    pub global_response_headers: HeaderOps,
    pub response_headers: Vec<Entry<HeaderOps>>,
    pub rewrites: Vec<Entry<Rewrite>>,
    pub methods: Vec<Entry<String>>,
    pub timeouts: Vec<Entry<Duration>>,
    /// `global_size_limit`; 0 = none.
    pub global_size_limit: u64,
    pub size_limits: Vec<Entry<u64>>,
    pub breakers: Vec<Entry<Arc<Breaker>>>,
    /// `extended_paths.rate_limit`: the endpoint's own API-wide limit, in
    /// a bucket of its own named by the entry.
    pub rate_limits: Vec<Entry<EndpointRate>>,
}

/// An endpoint's API-wide rate.
#[derive(Clone, Debug)]
pub struct EndpointRate {
    /// Names the entry's bucket: Tyk's `murmur32("METHOD:path")`, hex,
    /// worked out at load.
    pub bucket: String,
    pub rate: f64,
    pub per: f64,
}

/// The methods `method_transforms` may turn a request into (Tyk's list).
const TO_METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"];

impl Transforms {
    /// Anything that changes a request before it is proxied.
    pub fn changes_requests(&self) -> bool {
        !self.global_headers.is_empty()
            || !self.headers.is_empty()
            || !self.rewrites.is_empty()
            || !self.methods.is_empty()
            || !self.timeouts.is_empty()
            || !self.global_response_headers.is_empty()
            || !self.response_headers.is_empty()
            || !self.breakers.is_empty()
    }

    pub fn limits_size(&self) -> bool {
        self.global_size_limit > 0 || !self.size_limits.is_empty()
    }

    pub fn headers_for(&self, method: &str, c: &Candidates<'_>) -> Option<&HeaderOps> {
        first(&self.headers, method, c)
    }

    pub fn response_headers_for(&self, method: &str, c: &Candidates<'_>) -> Option<&HeaderOps> {
        first(&self.response_headers, method, c)
    }

    pub fn rewrite_for(&self, method: &str, c: &Candidates<'_>) -> Option<&Rewrite> {
        first(&self.rewrites, method, c)
    }

    /// The method to send instead; Err: not one Tyk allows (405).
    pub fn method_for(&self, method: &str, c: &Candidates<'_>) -> Option<&String> {
        first(&self.methods, method, c)
    }

    pub fn timeout_for(&self, method: &str, c: &Candidates<'_>) -> Option<Duration> {
        first(&self.timeouts, method, c).copied()
    }

    pub fn rate_limit_for(&self, method: &str, c: &Candidates<'_>) -> Option<&EndpointRate> {
        first(&self.rate_limits, method, c)
    }

    pub fn breaker_for(&self, method: &str, c: &Candidates<'_>) -> Option<&Arc<Breaker>> {
        first(&self.breakers, method, c)
    }

    pub fn size_limit_for(&self, method: &str, c: &Candidates<'_>) -> Option<u64> {
        first(&self.size_limits, method, c).copied()
    }

    pub fn is_allowed_method(to: &str) -> bool {
        TO_METHODS.contains(&to)
    }

    /// The transforms of version `name`; Err is (field path, message).
    pub fn compile(
        name: &str,
        v: &VersionInfo,
        m: PathMatching,
    ) -> Result<Transforms, (String, String)> {
        let at = |list: &str, i: usize, field: &str| {
            format!("version_data.versions.{name}.extended_paths.{list}[{i}].{field}")
        };
        let mut t = Transforms::default();
        if !v.global_headers_disabled {
            t.global_headers = HeaderOps::new(&v.global_headers_remove, &v.global_headers);
        }
        if !v.global_response_headers_disabled {
            t.global_response_headers = HeaderOps::new(
                &v.global_response_headers_remove,
                &v.global_response_headers,
            );
        }
        t.global_size_limit = u64::try_from(v.global_size_limit).unwrap_or(0);
        if !v.use_extended_paths {
            return Ok(t);
        }
        let e = &v.extended_paths;
        // One list's enabled entries: each path compiled (only the
        // gateway's ignore_endpoint_case applies to these, as in Tyk), what
        // it does made by `then` (None: skip the entry).
        fn entries<M: PerEndpoint, T>(
            at: &dyn Fn(&str, usize, &str) -> String,
            m: PathMatching,
            list: &str,
            metas: &[M],
            mut then: impl FnMut(usize, &M) -> Result<Option<T>, (String, String)>,
        ) -> Result<Vec<Entry<T>>, (String, String)> {
            let mut out = Vec::new();
            for (i, meta) in metas.iter().enumerate().filter(|(_, x)| !x.disabled()) {
                let Some(done) = then(i, meta)? else { continue };
                out.push(Entry {
                    pattern: PathPattern::compile(meta.path(), m, false)
                        .map_err(|why| (at(list, i, "path"), why))?,
                    method: meta.method().to_string(),
                    then: done,
                });
            }
            Ok(out)
        }
        let headers = |_: usize, h: &HeaderTransformMeta| {
            Ok(Some(HeaderOps::new(&h.delete_headers, &h.add_headers)))
        };
        t.headers = entries(&at, m, "transform_headers", &e.transform_headers, headers)?;
        t.response_headers = entries(
            &at,
            m,
            "transform_response_headers",
            &e.transform_response_headers,
            headers,
        )?;
        t.rewrites = entries(&at, m, "url_rewrites", &e.url_rewrites, |i, r| {
            Rewrite::compile(r)
                .map(Some)
                .map_err(|(field, why)| (at("url_rewrites", i, &field), why))
        })?;
        t.methods = entries(&at, m, "method_transforms", &e.method_transforms, |_, x| {
            Ok(Some(x.to_method.to_ascii_uppercase()))
        })?;
        t.timeouts = entries(&at, m, "hard_timeouts", &e.hard_timeouts, |_, h| {
            Ok((h.timeout > 0).then(|| Duration::from_secs(h.timeout.unsigned_abs())))
        })?;
        // Tyk skips an entry whose rate or period is not positive.
        t.rate_limits = entries(&at, m, "rate_limit", &e.rate_limit, |_, r| {
            Ok((r.rate > 0.0 && r.per > 0.0).then(|| EndpointRate {
                bucket: crate::keyid::hash_with(
                    crate::keyid::HashAlg::Murmur32,
                    format!("{}:{}", r.method, r.path).as_bytes(),
                ),
                rate: r.rate,
                per: r.per,
            }))
        })?;
        t.breakers = entries(&at, m, "circuit_breakers", &e.circuit_breakers, |i, b| {
            if !(b.threshold_percent > 0.0 && b.threshold_percent <= 1.0) {
                return Err((
                    at("circuit_breakers", i, "threshold_percent"),
                    format!("must be in (0, 1], got {}", b.threshold_percent),
                ));
            }
            Ok(Some(Arc::new(Breaker::new(
                b.threshold_percent,
                b.samples,
                b.return_to_service_after,
                !b.disable_half_open_state,
            ))))
        })?;
        t.size_limits = entries(&at, m, "size_limits", &e.size_limits, |_, x| {
            Ok(Some(u64::try_from(x.size_limit).unwrap_or(0)))
        })?;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_split_variables_from_text() {
        let t = Template::parse("id=$tyk_meta.user-id;ip=$tyk_context.remote_addr$tyk_meta.");
        assert_eq!(
            t.0,
            vec![
                Part::Text("id=".into()),
                Part::Meta("user-id".into()),
                Part::Text(";ip=".into()),
                Part::Context("remote_addr".into()),
                Part::Text("$tyk_meta.".into()),
            ]
        );
        let out = t.render(|p| match p {
            Part::Meta(k) if k == "user-id" => Some("7".into()),
            _ => None,
        });
        assert_eq!(out, "id=7;ip=$tyk_meta.");
        assert_eq!(Template::parse("plain").literal(), Some("plain"));
    }
}
