//! Policies (CONTRACT §8): the JSON shape of one policy, and the set the
//! gateway has loaded, read from `policies.policy_path` (one policy per
//! `*.json` file, what `POST /tyk/policies` writes) or else from
//! `policies.policy_record_name` (one file holding `{"<id>": policy}`, the
//! format of Tyk's `examples/policies/`). A key finds its policies by its
//! org and the policy id, as in Tyk; the admin API by id alone (the last
//! loaded of that id). A `PolicySet` is an immutable snapshot with a
//! generation number; reload swaps whole snapshots.
//!
//! Applying policies to a session is `apply`'s job.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::list_json;
use crate::error::Error;
use crate::session::AccessDefinition;

/// Which parts of a key a policy sets; none set means all of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Partitions {
    #[serde(deserialize_with = "null_default")]
    pub quota: bool,
    #[serde(deserialize_with = "null_default")]
    pub rate_limit: bool,
    #[serde(deserialize_with = "null_default")]
    pub complexity: bool,
    #[serde(deserialize_with = "null_default")]
    pub acl: bool,
    #[serde(deserialize_with = "null_default")]
    pub per_api: bool,
}

impl Partitions {
    /// Any of quota, rate limit, ACL or complexity is partitioned.
    pub fn enabled(&self) -> bool {
        self.quota || self.rate_limit || self.acl || self.complexity
    }
}

/// One policy, with Tyk's field names. Fields Gatehouse does not act on are
/// kept in `extra` and written back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    #[serde(rename = "_id", deserialize_with = "null_default")]
    pub mid: String,
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub org_id: String,
    #[serde(deserialize_with = "null_default")]
    pub rate: f64,
    #[serde(deserialize_with = "null_default")]
    pub per: f64,
    #[serde(deserialize_with = "null_default")]
    pub quota_max: i64,
    #[serde(deserialize_with = "null_default")]
    pub quota_renewal_rate: i64,
    #[serde(deserialize_with = "null_default")]
    pub throttle_interval: f64,
    #[serde(deserialize_with = "null_default")]
    pub throttle_retry_limit: i64,
    #[serde(deserialize_with = "null_default")]
    pub max_query_depth: i64,
    #[serde(deserialize_with = "null_default")]
    pub access_rights: BTreeMap<String, AccessDefinition>,
    #[serde(deserialize_with = "null_default")]
    pub hmac_enabled: bool,
    #[serde(deserialize_with = "null_default")]
    pub enable_http_signature_validation: bool,
    #[serde(deserialize_with = "null_default")]
    pub active: bool,
    #[serde(deserialize_with = "null_default")]
    pub is_inactive: bool,
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub key_expires_in: i64,
    #[serde(deserialize_with = "null_default")]
    pub partitions: Partitions,
    #[serde(deserialize_with = "null_default")]
    pub last_updated: String,
    #[serde(deserialize_with = "null_default")]
    pub meta_data: Map<String, Value>,
    /// Every other field (`smoothing`, `post_expiry_*`, GraphQL fields...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl Policy {
    /// Parses one policy; `file` and `at` name it in errors.
    pub fn from_value(file: &Path, at: &str, raw: Value) -> Result<Policy, Error> {
        let named = |inner: &str| match (at.is_empty(), inner == ".") {
            (true, _) => inner.to_string(),
            (false, true) => at.to_string(),
            (false, false) => format!("{at}.{inner}"),
        };
        let p: Policy = serde_path_to_error::deserialize(raw)
            .map_err(|e| Error::config(file, &named(&e.path().to_string()), e.inner()))?;
        p.check_kept_fields().map_err(|(field, want)| {
            Error::config(file, &named(&field), format!("must be {want}"))
        })?;
        Ok(p)
    }

    /// The fields kept as sent (`extra`) must still have Tyk's Go types:
    /// Go's decoder refuses a policy whose `post_expiry_action` is an
    /// object, and so do we, rather than store and serve it back.
    fn check_kept_fields(&self) -> Result<(), (String, &'static str)> {
        check_fields(&self.extra, POLICY_KEPT, "")?;
        for (api, rights) in &self.access_rights {
            let at = format!("access_rights.{api}");
            check_fields(&rights.extra, ACCESS_KEPT, &at)?;
            if let Some(sm) = rights.limit.as_ref().and_then(|l| l.smoothing.as_ref()) {
                check_shape(sm, &Shape::Map(SMOOTHING), &format!("{at}.limit.smoothing"))?;
            }
        }
        Ok(())
    }
}

/// A JSON type a Go field decodes from (null is always its zero value).
enum Shape {
    Str,
    Int,
    Bool,
    Num,
    List,
    Map(&'static [(&'static str, Shape)]),
}

const SMOOTHING: &[(&str, Shape)] = &[
    ("enabled", Shape::Bool),
    ("threshold", Shape::Int),
    ("trigger", Shape::Num),
    ("step", Shape::Int),
    ("delay", Shape::Int),
];

/// Tyk policy fields Gatehouse keeps as sent.
const POLICY_KEPT: &[(&str, Shape)] = &[
    ("post_expiry_action", Shape::Str),
    ("post_expiry_grace_period", Shape::Int),
    ("smoothing", Shape::Map(SMOOTHING)),
    ("graphql_access_rights", Shape::Map(&[])),
];

/// Tyk access-definition fields Gatehouse keeps as sent.
const ACCESS_KEPT: &[(&str, Shape)] = &[
    ("restricted_types", Shape::List),
    ("allowed_types", Shape::List),
    ("field_access_rights", Shape::List),
    ("endpoints", Shape::List),
    ("disable_introspection", Shape::Bool),
];

fn check_fields(
    obj: &Map<String, Value>,
    fields: &[(&str, Shape)],
    at: &str,
) -> Result<(), (String, &'static str)> {
    for (name, shape) in fields {
        if let Some(v) = obj.get(*name) {
            let path = if at.is_empty() {
                name.to_string()
            } else {
                format!("{at}.{name}")
            };
            check_shape(v, shape, &path)?;
        }
    }
    Ok(())
}

fn check_shape(v: &Value, shape: &Shape, at: &str) -> Result<(), (String, &'static str)> {
    let (ok, want) = match shape {
        _ if v.is_null() => (true, ""),
        Shape::Str => (v.is_string(), "a string"),
        Shape::Int => (v.as_i64().is_some(), "a 64-bit integer"),
        Shape::Bool => (v.is_boolean(), "true or false"),
        Shape::Num => (v.is_number(), "a number"),
        Shape::List => (v.is_array(), "a list"),
        Shape::Map(fields) => match v.as_object() {
            Some(o) => return check_fields(o, fields, at),
            None => (false, "an object"),
        },
    };
    if ok {
        Ok(())
    } else {
        Err((at.to_string(), want))
    }
}

/// Where policies come from (`tyk.conf` `policies`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicySource {
    /// `policy_path`: a folder of `<id>.json` files.
    pub dir: Option<PathBuf>,
    /// `policy_record_name`: one file of `{"<id>": policy}`.
    pub record: Option<PathBuf>,
    /// `policy_source` is `service` or `rpc`: policies are the Dashboard's.
    pub service: bool,
}

/// The loaded policies: an immutable snapshot.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// In load order.
    policies: Vec<Policy>,
    /// Org, then id.
    scoped: HashMap<String, HashMap<String, usize>>,
    /// By id alone: the last loaded.
    latest: HashMap<String, usize>,
    /// The policies each file gave, for a reload that must keep the last
    /// good version of a file (or record entry) that broke.
    files: BTreeMap<PathBuf, Vec<Policy>>,
    /// Distinct for every snapshot the gateway loads: a session with its
    /// policies applied is valid for one generation only.
    pub generation: u64,
}

impl PolicySet {
    /// Snapshot `generation` of `policies`, in order; a later policy with
    /// the same org and id replaces an earlier one; one without an id is
    /// dropped.
    pub fn new(policies: Vec<Policy>, generation: u64) -> PolicySet {
        let mut set = PolicySet {
            generation,
            ..PolicySet::default()
        };
        for p in policies {
            if p.id.is_empty() {
                warn!("policies: a policy without an id is skipped");
                continue;
            }
            let (org, id) = (p.org_id.clone(), p.id.clone());
            let at = match set.scoped.get(&org).and_then(|ids| ids.get(&id)) {
                Some(&i) => {
                    warn!(
                        "policies: duplicate id {:?} in org {:?}, keeping the last",
                        p.id, p.org_id
                    );
                    set.policies[i] = p;
                    i
                }
                None => {
                    set.policies.push(p);
                    set.policies.len() - 1
                }
            };
            set.latest.insert(id.clone(), at);
            set.scoped.entry(org).or_default().insert(id, at);
        }
        set
    }

    /// Reads the policies `source` names; a file that does not parse is
    /// skipped with an error naming it.
    pub fn load(source: &PolicySource, generation: u64) -> PolicySet {
        let (set, errors) = PolicySet::read(source, generation, None);
        for e in errors {
            error!("policies: skipping {e}");
        }
        set
    }

    /// `load`, returning the errors of the files (or entries) that failed.
    /// Those are left out, unless `previous` loaded them: then their last
    /// good version is kept (with a warning).
    pub fn read(
        source: &PolicySource,
        generation: u64,
        previous: Option<&PolicySet>,
    ) -> (PolicySet, Vec<Error>) {
        let mut errors = Vec::new();
        let files = match (&source.dir, &source.record) {
            (Some(dir), _) => read_dir(dir, previous, &mut errors),
            (None, Some(file)) => read_record(file, previous, &mut errors),
            (None, None) => BTreeMap::new(),
        };
        let policies = files.values().flatten().cloned().collect();
        let mut set = PolicySet::new(policies, generation);
        set.files = files;
        if source.dir.is_some() || source.record.is_some() {
            info!("policies: {} loaded", set.len());
        }
        (set, errors)
    }

    /// The policy `id` of `org`, as a key finds it.
    pub fn find(&self, org: &str, id: &str) -> Option<&Policy> {
        let at = self.scoped.get(org)?.get(id)?;
        self.policies.get(*at)
    }

    /// The last loaded policy `id`, whatever its org (the admin API's view).
    pub fn get(&self, id: &str) -> Option<&Policy> {
        self.policies.get(*self.latest.get(id)?)
    }

    /// Policies in load order.
    pub fn all(&self) -> &[Policy] {
        &self.policies
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }
}

/// What each file gave.
type ByFile = BTreeMap<PathBuf, Vec<Policy>>;

/// Each `*.json` in `dir` is one policy (its `id` names it, not the file).
fn read_dir(dir: &Path, previous: Option<&PolicySet>, errors: &mut Vec<Error>) -> ByFile {
    let files = match (list_json(dir), previous) {
        (Ok(files), _) => files,
        (Err(e), None) => {
            warn!(
                "cannot read policy_path folder {}: {e}; none loaded",
                dir.display()
            );
            return ByFile::new();
        }
        (Err(e), Some(prev)) => {
            let why = format!("cannot read the policy_path folder: {e}; the policies loaded stay");
            errors.push(Error::config(dir, "", why));
            return prev.files.clone();
        }
    };
    let mut out = ByFile::new();
    for file in files {
        match read_json(&file).and_then(|raw| Policy::from_value(&file, "", raw)) {
            Ok(p) => {
                out.insert(file, vec![p]);
            }
            Err(e) => {
                errors.push(e);
                out.extend(last_good(previous, &file));
            }
        }
    }
    out
}

/// What `previous` loaded from `file`, announced as kept.
fn last_good(previous: Option<&PolicySet>, file: &Path) -> Option<(PathBuf, Vec<Policy>)> {
    let old = previous?.files.get(file)?;
    warn!(
        "policies: {} is broken; keeping its last good version",
        file.display()
    );
    Some((file.to_path_buf(), old.clone()))
}

/// `{"<id>": policy, ...}`: the map key is the policy's id.
fn read_record(file: &Path, previous: Option<&PolicySet>, errors: &mut Vec<Error>) -> ByFile {
    let raw = match read_json(file) {
        Ok(Value::Object(map)) => map,
        Ok(_) => {
            let why = "expected an object of policies by id";
            errors.push(Error::config(file, "", why));
            return last_good(previous, file).into_iter().collect();
        }
        Err(e) => {
            errors.push(e);
            return last_good(previous, file).into_iter().collect();
        }
    };
    let before = previous.and_then(|p| p.files.get(file));
    let mut out = Vec::new();
    for (id, value) in raw {
        match Policy::from_value(file, &id, value) {
            Ok(mut p) => {
                p.id = id;
                out.push(p);
            }
            Err(e) => {
                errors.push(e);
                if let Some(old) = before.and_then(|ps| ps.iter().find(|p| p.id == id)) {
                    warn!(
                        "policies: {id} in {} is broken; keeping its last good version",
                        file.display()
                    );
                    out.push(old.clone());
                }
            }
        }
    }
    ByFile::from([(file.to_path_buf(), out)])
}

fn read_json(file: &Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::config(file, "", e))?;
    serde_json::from_str(&text).map_err(|e| Error::config(file, "", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tyk_example_record_loads_with_the_map_key_as_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policies.json");
        std::fs::write(
            &file,
            include_str!("../../tests/data/policies.json.example"),
        )
        .unwrap();
        let source = PolicySource {
            record: Some(file),
            ..PolicySource::default()
        };
        let set = PolicySet::load(&source, 1);
        let p = set.get("default").expect("policy `default`");
        assert_eq!((p.rate, p.per, p.quota_max), (1000.0, 1.0, 100));
        assert!(
            p.access_rights
                .contains_key("41433797848f41a558c1573d3e55a410")
        );
    }

    #[test]
    fn a_folder_holds_one_policy_per_file_and_bad_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p1.json"), r#"{"id": "p1", "rate": 5}"#).unwrap();
        std::fs::write(dir.path().join("x.json"), r#"{"id": "p2", "rate": 7}"#).unwrap();
        std::fs::write(dir.path().join("noid.json"), r#"{"rate": 9}"#).unwrap();
        std::fs::write(dir.path().join("bad.json"), r#"{"rate": "x"}"#).unwrap();
        let source = PolicySource {
            dir: Some(dir.path().to_path_buf()),
            ..PolicySource::default()
        };
        let set = PolicySet::load(&source, 1);
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("p2").unwrap().rate, 7.0);
    }

    #[test]
    fn keys_find_policies_by_org_and_id() {
        let p = |org: &str, rate: f64| Policy {
            id: "gold".into(),
            org_id: org.into(),
            rate,
            ..Policy::default()
        };
        let set = PolicySet::new(vec![p("a", 1.0), p("b", 2.0), p("a", 3.0)], 1);
        assert_eq!(set.len(), 2);
        assert_eq!(set.find("a", "gold").unwrap().rate, 3.0);
        assert_eq!(set.find("b", "gold").unwrap().rate, 2.0);
        assert!(set.find("c", "gold").is_none());
        assert_eq!(set.get("gold").unwrap().rate, 3.0);
    }

    #[test]
    fn unknown_fields_and_nulls_round_trip() {
        let raw = json!({"id": "a", "tags": null, "smoothing": {"enabled": true}});
        let p = Policy::from_value(Path::new("p.json"), "", raw).unwrap();
        assert!(p.tags.is_empty());
        let out = serde_json::to_value(&p).unwrap();
        assert_eq!(out["smoothing"], json!({"enabled": true}));
        assert_eq!(out["_id"], json!(""));
    }

    #[test]
    fn kept_fields_must_have_tyks_types() {
        let parse = |v: Value| Policy::from_value(Path::new("p.json"), "", v);
        assert!(parse(serde_json::json!({"id": "a", "post_expiry_action": "delete"})).is_ok());
        assert!(parse(serde_json::json!({"id": "a", "post_expiry_action": null})).is_ok());
        for bad in [
            serde_json::json!({"id": "a", "post_expiry_action": {}}),
            serde_json::json!({"id": "a", "post_expiry_grace_period": 1.5}),
            serde_json::json!({"id": "a", "post_expiry_grace_period": 1e19}),
            serde_json::json!({"id": "a", "smoothing": {"enabled": "yes"}}),
            serde_json::json!({"id": "a", "access_rights": {"x": {"api_id": "x", "endpoints": {}}}}),
            serde_json::json!({"id": "a", "access_rights": {"x": {"api_id": "x", "limit": {"smoothing": {"step": "1"}}}}}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
