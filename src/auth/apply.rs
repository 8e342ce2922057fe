//! Applying a key's policies to its session (CONTRACT §8): the merge rules
//! Tyk's policy service follows, as a pure function from a stored session
//! and a policy snapshot to the session the request path and the admin API
//! use. Which policies exist is `policy`'s business; caching the result per
//! session and snapshot is the caller's.
//!
//! In short: any ACL from the policies replaces the key's `access_rights`;
//! without partitions a policy sets everything for its APIs, with
//! partitions only the flagged parts (the rest comes from the key's root
//! fields); several policies on one API union versions and URLs and keep
//! the most generous limits (-1 wins); `per_api` policies keep each API's
//! own limit and counters (`allowance_scope`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::session::{AccessDefinition, AccessSpec, ApiLimit, Session};

use super::policy::{Policy, PolicySet};

/// Why policies could not be applied; `Display` is Tyk's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyError {
    /// The key's only policy does not exist.
    NotFound(String),
    /// A policy belongs to another org than the API.
    OtherOrg,
    /// One policy is both `per_api` and partitioned.
    PerApiAndPartitions(String),
    /// Some policies are `per_api` and some partitioned.
    Mixed,
    /// Nothing granted any API.
    NoValidPolicies,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::NotFound(id) => write!(f, "policy not found: {id:?}"),
            ApplyError::OtherOrg => f.write_str(
                "attempting to apply policy from different organisation to key, skipping",
            ),
            ApplyError::PerApiAndPartitions(id) => write!(
                f,
                "cannot apply policy {id} which has per_api and any of partitions set"
            ),
            ApplyError::Mixed => f.write_str(
                "cannot apply multiple policies when some have per_api set and some are partitioned",
            ),
            ApplyError::NoValidPolicies => f.write_str("key has no valid policies to be applied"),
        }
    }
}

/// The policy ids a session names: `apply_policies`, else the legacy
/// `apply_policy_id`.
pub fn policy_ids(s: &Session) -> Vec<String> {
    if !s.apply_policies.is_empty() {
        s.apply_policies.clone()
    } else if !s.apply_policy_id.is_empty() {
        vec![s.apply_policy_id.clone()]
    } else {
        Vec::new()
    }
}

/// What the policies applied so far have set, per API id.
#[derive(Default)]
struct Done {
    acl: BTreeSet<String>,
    quota: BTreeSet<String>,
    rate: BTreeSet<String>,
    complexity: BTreeSet<String>,
    per_api: bool,
    partitioned: bool,
}

/// An API's rights while policies are merged, with the policy (or API)
/// that set its limit.
#[derive(Clone)]
struct Right {
    access: AccessDefinition,
    limit: ApiLimit,
    set_by: String,
}

/// `session` with its policies from `set` applied. Policies are found by
/// the key's org (the API's when the key has none) and id; `api_org`, when
/// an API is involved, is its org: every policy must belong to it.
pub fn apply(
    session: &Session,
    set: &PolicySet,
    api_org: Option<&str>,
) -> Result<Session, ApplyError> {
    let ids = policy_ids(session);
    let mut s = session.clone();
    if ids.is_empty() {
        return Ok(s);
    }
    let org = if session.org_id.is_empty() {
        api_org.unwrap_or_default()
    } else {
        &session.org_id
    };
    let found: Vec<(&String, Option<&Policy>)> =
        ids.iter().map(|id| (id, set.find(org, id))).collect();
    clear(&mut s, found.iter().filter_map(|(_, p)| *p));
    // The key's own flag is ignored once policies apply.
    s.is_inactive = false;
    let mut rights: BTreeMap<String, Right> = BTreeMap::new();
    let mut done = Done::default();
    let mut tags: Vec<String> = Vec::new();
    for (id, p) in &found {
        let Some(p) = p else {
            log::debug!("policies: key names unknown policy {id:?}");
            if ids.len() > 1 {
                continue;
            }
            return Err(ApplyError::NotFound(id.to_string()));
        };
        if api_org.is_some_and(|org| p.org_id != org) {
            return Err(ApplyError::OtherOrg);
        }
        if p.partitions.per_api && p.partitions.enabled() {
            return Err(ApplyError::PerApiAndPartitions(p.id.clone()));
        }
        if p.partitions.per_api {
            apply_per_api(p, session, &mut rights, &mut done)?;
        } else {
            apply_partitions(p, &mut s, session, &mut rights, &mut done)?;
        }
        s.is_inactive |= p.is_inactive;
        push_missing(&mut tags, &p.tags);
        for (k, v) in &p.meta_data {
            s.meta_data.insert(k.clone(), v.clone());
        }
        if p.last_updated > s.last_updated {
            s.last_updated = p.last_updated.clone();
        }
    }
    push_missing(&mut tags, &session.tags);
    s.tags = tags;
    let rights = inherit_root(&s, rights, &done);
    update_root(&mut s, &rights, &done);
    if done.acl.is_empty() {
        return Err(ApplyError::NoValidPolicies);
    }
    s.access_rights = rights
        .into_iter()
        .map(|(api, r)| (api, with_limit(r)))
        .collect();
    Ok(s)
}

/// Zeroes the root limits each policy sets, so its values win.
fn clear<'a>(s: &mut Session, policies: impl Iterator<Item = &'a Policy>) {
    for p in policies {
        let all = !p.partitions.enabled();
        if all || p.partitions.quota {
            s.quota_max = 0;
            s.quota_remaining = 0;
        }
        if all || p.partitions.rate_limit {
            s.rate = 0.0;
            s.per = 0.0;
            s.throttle_retry_limit = 0;
            s.throttle_interval = 0.0;
            s.extra.remove("smoothing");
        }
        if all || p.partitions.complexity {
            s.max_query_depth = 0;
        }
    }
}

/// A `per_api` policy: each API keeps its own limit (the policy's when the
/// API names none) and its own counters.
fn apply_per_api(
    p: &Policy,
    stored: &Session,
    rights: &mut BTreeMap<String, Right>,
    done: &mut Done,
) -> Result<(), ApplyError> {
    if done.partitioned {
        return Err(ApplyError::Mixed);
    }
    for (api, access) in &p.access_rights {
        let own = access.limit.clone().unwrap_or_default();
        let (mut limit, scope) = if own.is_empty() {
            (policy_limit(p), p.id.clone())
        } else {
            (own, api.clone())
        };
        if let Some(l) = stored_limit(stored, api) {
            limit.quota_renews = l.quota_renews;
        }
        let mut r = Right {
            access: access.clone(),
            limit,
            set_by: scope.clone(),
        };
        r.access.allowance_scope = scope;
        if let Some(current) = rights.get(api) {
            r.limit = more_generous(r.limit, &current.limit);
        }
        rights.insert(api.clone(), r);
        for set in [
            &mut done.acl,
            &mut done.quota,
            &mut done.rate,
            &mut done.complexity,
        ] {
            set.insert(api.clone());
        }
    }
    done.per_api |= !p.access_rights.is_empty();
    Ok(())
}

/// A policy without `per_api`: all of it, or only its partitions.
fn apply_partitions(
    p: &Policy,
    s: &mut Session,
    stored: &Session,
    rights: &mut BTreeMap<String, Right>,
    done: &mut Done,
) -> Result<(), ApplyError> {
    let parts = p.partitions;
    let partial = parts.enabled();
    if partial && done.per_api {
        return Err(ApplyError::Mixed);
    }
    for (api, access) in &p.access_rights {
        let mut r = Right {
            access: access.clone(),
            limit: access.limit.clone().unwrap_or_default(),
            set_by: String::new(),
        };
        if !partial || parts.acl {
            done.acl.insert(api.clone());
            if let Some(current) = rights.get(api) {
                r = merge_acl(current.clone(), access);
            }
            r.set_by = p.id.clone();
        }
        if !partial || parts.quota {
            done.quota.insert(api.clone());
            raise(p.quota_max, &mut r.limit.quota_max, &mut s.quota_max);
            if p.quota_renewal_rate > r.limit.quota_renewal_rate {
                r.limit.quota_renewal_rate = p.quota_renewal_rate;
                s.quota_renewal_rate = s.quota_renewal_rate.max(p.quota_renewal_rate);
            }
        }
        if !partial || parts.rate_limit {
            done.rate.insert(api.clone());
            apply_rate(p, s, &mut r.limit);
            if p.throttle_retry_limit > r.limit.throttle_retry_limit {
                r.limit.throttle_retry_limit = p.throttle_retry_limit;
                s.throttle_retry_limit = s.throttle_retry_limit.max(p.throttle_retry_limit);
            }
            if p.throttle_interval > r.limit.throttle_interval {
                r.limit.throttle_interval = p.throttle_interval;
                s.throttle_interval = s.throttle_interval.max(p.throttle_interval);
            }
        }
        if !partial || parts.complexity {
            done.complexity.insert(api.clone());
            raise(
                p.max_query_depth,
                &mut r.limit.max_query_depth,
                &mut s.max_query_depth,
            );
        }
        if let Some(l) = stored_limit(stored, api) {
            r.limit.quota_renews = l.quota_renews;
        }
        rights.insert(api.clone(), r);
    }
    if p.access_rights.is_empty() {
        // A policy for every API sets the root limits.
        if !partial || parts.rate_limit {
            s.rate = p.rate;
            s.per = p.per;
            s.throttle_interval = p.throttle_interval;
            s.throttle_retry_limit = p.throttle_retry_limit;
        }
        if !partial || parts.complexity {
            s.max_query_depth = p.max_query_depth;
        }
        if !partial || parts.quota {
            s.quota_max = p.quota_max;
            s.quota_renewal_rate = p.quota_renewal_rate;
        }
    }
    s.hmac_enabled |= p.hmac_enabled;
    s.enable_http_signature_validation |= p.enable_http_signature_validation;
    done.partitioned = partial;
    Ok(())
}

/// Two policies' ACLs for one API: versions and allowed URLs unioned.
fn merge_acl(mut current: Right, access: &AccessDefinition) -> Right {
    push_missing(&mut current.access.versions, &access.versions);
    for u in &access.allowed_urls {
        match current
            .access
            .allowed_urls
            .iter_mut()
            .find(|c| c.url == u.url)
        {
            Some(c) => push_missing(&mut c.methods, &u.methods),
            None => current.access.allowed_urls.push(AccessSpec {
                url: u.url.clone(),
                methods: u.methods.clone(),
            }),
        }
    }
    current
}

/// The policy's rate wins over the API's and the root's when it allows
/// more requests (or they have none).
fn apply_rate(p: &Policy, s: &mut Session, limit: &mut ApiLimit) {
    let policy = interval(p.rate, p.per);
    if policy == 0.0 {
        return;
    }
    let api = interval(limit.rate, limit.per);
    if api == 0.0 || api > policy {
        limit.rate = p.rate;
        limit.per = p.per;
    }
    let root = interval(s.rate, s.per);
    if root == 0.0 || root > policy {
        s.rate = p.rate;
        s.per = p.per;
    }
}

/// Seconds between requests; 0 for no limit.
fn interval(rate: f64, per: f64) -> f64 {
    if rate <= 0.0 || per <= 0.0 {
        0.0
    } else {
        per / rate
    }
}

/// `a` allows more than `b`; -1 (unlimited) beats everything.
fn greater(a: i64, b: i64) -> bool {
    if a == -1 {
        return b != -1;
    }
    b != -1 && a > b
}

/// Raises an API's value, and the root's, to the policy's when it allows
/// more (-1 is unlimited).
fn raise(policy: i64, api: &mut i64, root: &mut i64) {
    if greater(policy, *api) {
        *api = policy;
        if greater(policy, *root) {
            *root = policy;
        }
    }
}

/// An API limit of two per-API policies: the more generous of each.
fn more_generous(mut new: ApiLimit, current: &ApiLimit) -> ApiLimit {
    if interval(new.rate, new.per) > interval(current.rate, current.per) {
        new.rate = current.rate;
        new.per = current.per;
    }
    if greater(current.quota_max, new.quota_max) {
        new.quota_max = current.quota_max;
    }
    if current.quota_renewal_rate > new.quota_renewal_rate {
        new.quota_renewal_rate = current.quota_renewal_rate;
    }
    if new.quota_max == -1 {
        new.quota_renewal_rate = 0;
    }
    new
}

/// A policy's root limits as an API limit.
fn policy_limit(p: &Policy) -> ApiLimit {
    ApiLimit {
        rate: p.rate,
        per: p.per,
        throttle_interval: p.throttle_interval,
        throttle_retry_limit: p.throttle_retry_limit,
        max_query_depth: p.max_query_depth,
        quota_max: p.quota_max,
        quota_renewal_rate: p.quota_renewal_rate,
        ..ApiLimit::default()
    }
}

/// The stored session's own non-empty limit for `api`.
fn stored_limit<'a>(s: &'a Session, api: &str) -> Option<&'a ApiLimit> {
    s.access_rights
        .get(api)
        .and_then(|a| a.limit.as_ref())
        .filter(|l| !l.is_empty())
}

/// APIs that got only an ACL take the rest from the root; with ACLs from
/// more than one policy each API counts against its own policy's scope.
fn inherit_root(
    s: &Session,
    rights: BTreeMap<String, Right>,
    done: &Done,
) -> BTreeMap<String, Right> {
    let setters: BTreeSet<&str> = rights
        .values()
        .map(|r| r.set_by.as_str())
        .filter(|b| !b.is_empty())
        .collect();
    let several = setters.len() > 1;
    rights
        .into_iter()
        .filter(|(api, _)| done.acl.contains(api))
        .map(|(api, mut r)| {
            if !done.rate.contains(&api) {
                r.limit.rate = s.rate;
                r.limit.per = s.per;
                r.limit.throttle_interval = s.throttle_interval;
                r.limit.throttle_retry_limit = s.throttle_retry_limit;
            }
            if !done.complexity.contains(&api) {
                r.limit.max_query_depth = s.max_query_depth;
            }
            if !done.quota.contains(&api) {
                r.limit.quota_max = s.quota_max;
                r.limit.quota_renewal_rate = s.quota_renewal_rate;
                r.limit.quota_renews = s.quota_renews;
            }
            if several && r.access.allowance_scope.is_empty() && !r.set_by.is_empty() {
                r.access.allowance_scope = r.set_by.clone();
            }
            (api, r)
        })
        .collect()
}

/// Policies for exactly one API copy its limits to the root (legacy).
fn update_root(s: &mut Session, rights: &BTreeMap<String, Right>, done: &Done) {
    let one = done.quota.len() == 1 && done.rate.len() == 1 && done.complexity.len() == 1;
    if !one {
        return;
    }
    for r in rights.values() {
        s.rate = r.limit.rate;
        s.per = r.limit.per;
        s.quota_max = r.limit.quota_max;
        s.quota_renews = r.limit.quota_renews;
        s.quota_renewal_rate = r.limit.quota_renewal_rate;
        s.max_query_depth = r.limit.max_query_depth;
    }
}

fn with_limit(r: Right) -> AccessDefinition {
    let mut access = r.access;
    access.limit = Some(r.limit);
    access
}

fn push_missing(into: &mut Vec<String>, items: &[String]) {
    for i in items {
        if !into.contains(i) {
            into.push(i.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::path::Path;

    fn policy(raw: Value) -> Policy {
        Policy::from_value(Path::new("p.json"), "", raw).unwrap()
    }

    fn set(policies: Vec<Value>) -> PolicySet {
        PolicySet::new(policies.into_iter().map(policy).collect(), 1)
    }

    fn key(policies: &[&str]) -> Session {
        let mut s: Session = serde_json::from_value(json!({
            "rate": 1, "per": 60, "quota_max": 5, "org_id": "o",
            "access_rights": {"own": {"api_id": "own", "versions": ["Default"]}}
        }))
        .unwrap();
        s.apply_policies = policies.iter().map(|p| p.to_string()).collect();
        s
    }

    fn acl(api: &str) -> Value {
        json!({api: {"api_id": api, "versions": ["Default"]}})
    }

    #[test]
    fn a_policy_replaces_the_acl_and_sets_the_limits() {
        let set = set(vec![json!({
            "id": "gold", "org_id": "o", "rate": 100, "per": 1, "quota_max": 1000,
            "quota_renewal_rate": 3600, "access_rights": acl("a1"), "tags": ["t"],
            "meta_data": {"tier": "gold"}
        })]);
        let s = apply(&key(&["gold"]), &set, Some("o")).unwrap();
        assert_eq!(s.access_rights.keys().collect::<Vec<_>>(), vec!["a1"]);
        // One API: its limit is copied to the root.
        assert_eq!((s.rate, s.per, s.quota_max), (100.0, 1.0, 1000));
        let l = s.limit_for("a1");
        assert_eq!(
            (l.rate, l.quota_max, l.quota_renewal_rate),
            (100.0, 1000, 3600)
        );
        assert_eq!(s.tags, vec!["t"]);
        assert_eq!(s.meta_data["tier"], json!("gold"));
    }

    #[test]
    fn the_same_api_in_two_policies_gets_the_most_generous_limits() {
        let mut a = acl("a1");
        a["a1"]["versions"] = json!(["v1"]);
        a["a1"]["allowed_urls"] = json!([{"url": "/x", "methods": ["GET"]}]);
        let mut b = acl("a1");
        b["a1"]["versions"] = json!(["v2"]);
        b["a1"]["allowed_urls"] = json!([{"url": "/x", "methods": ["POST"]}]);
        let set = set(vec![
            json!({"id": "p1", "org_id": "o", "rate": 10, "per": 1, "quota_max": 100, "access_rights": a}),
            json!({"id": "p2", "org_id": "o", "rate": 50, "per": 1, "quota_max": -1, "access_rights": b}),
        ]);
        let s = apply(&key(&["p1", "p2"]), &set, Some("o")).unwrap();
        let a1 = &s.access_rights["a1"];
        assert_eq!(a1.versions, vec!["v1", "v2"]);
        assert_eq!(a1.allowed_urls[0].methods, vec!["GET", "POST"]);
        let l = s.limit_for("a1");
        assert_eq!((l.rate, l.quota_max), (50.0, -1));
    }

    #[test]
    fn partitioned_policies_for_two_apis_count_separately() {
        let set = set(vec![
            json!({"id": "pa", "org_id": "o", "quota_max": 10, "rate": 5, "per": 1,
                   "partitions": {"quota": true, "rate_limit": true, "acl": true},
                   "access_rights": acl("a")}),
            json!({"id": "pb", "org_id": "o", "quota_max": 20, "rate": 5, "per": 1,
                   "partitions": {"quota": true, "rate_limit": true, "acl": true},
                   "access_rights": acl("b")}),
        ]);
        let s = apply(&key(&["pa", "pb"]), &set, Some("o")).unwrap();
        assert_eq!(s.access_rights["a"].allowance_scope, "pa");
        assert_eq!(s.access_rights["b"].allowance_scope, "pb");
        assert_eq!(s.limit_for("a").quota_max, 10);
        assert_eq!(s.limit_for("b").quota_max, 20);
    }

    #[test]
    fn an_acl_only_partition_keeps_the_keys_limits() {
        let set = set(vec![json!({
            "id": "acl", "org_id": "o", "quota_max": 999, "rate": 999, "per": 1,
            "partitions": {"acl": true}, "access_rights": acl("a")
        })]);
        let s = apply(&key(&["acl"]), &set, Some("o")).unwrap();
        let l = s.limit_for("a");
        assert_eq!((l.rate, l.per, l.quota_max), (1.0, 60.0, 5));
    }

    #[test]
    fn per_api_policies_keep_each_apis_limit_and_scope() {
        let mut rights = acl("a");
        rights["a"]["limit"] = json!({"rate": 3, "per": 1, "quota_max": 7});
        rights["b"] = json!({"api_id": "b", "versions": ["Default"]});
        let set = set(vec![json!({
            "id": "pp", "org_id": "o", "rate": 9, "per": 1, "quota_max": 90,
            "partitions": {"per_api": true}, "access_rights": rights
        })]);
        let s = apply(&key(&["pp"]), &set, Some("o")).unwrap();
        assert_eq!(s.access_rights["a"].allowance_scope, "a");
        assert_eq!(s.limit_for("a").quota_max, 7);
        assert_eq!(s.access_rights["b"].allowance_scope, "pp");
        assert_eq!(s.limit_for("b").quota_max, 90);
    }

    #[test]
    fn errors_carry_tyks_messages() {
        let set = set(vec![
            json!({"id": "other", "org_id": "x", "access_rights": acl("a")}),
            json!({"id": "both", "org_id": "o", "partitions": {"per_api": true, "quota": true},
                   "access_rights": acl("a")}),
            json!({"id": "pp", "org_id": "o", "partitions": {"per_api": true}, "access_rights": acl("a")}),
            json!({"id": "part", "org_id": "o", "partitions": {"quota": true}, "access_rights": acl("b")}),
            json!({"id": "none", "org_id": "o"}),
        ]);
        let err = |ids: &[&str]| apply(&key(ids), &set, Some("o")).unwrap_err().to_string();
        assert_eq!(err(&["nope"]), "policy not found: \"nope\"");
        // Found by the key's org, refused for an API of another org.
        assert_eq!(err(&["other"]), "policy not found: \"other\"");
        assert_eq!(
            apply(&key(&["pp"]), &set, Some("elsewhere"))
                .unwrap_err()
                .to_string(),
            "attempting to apply policy from different organisation to key, skipping"
        );
        assert_eq!(
            err(&["both"]),
            "cannot apply policy both which has per_api and any of partitions set"
        );
        assert_eq!(
            err(&["pp", "part"]),
            "cannot apply multiple policies when some have per_api set and some are partitioned"
        );
        assert_eq!(err(&["none"]), "key has no valid policies to be applied");
        // A missing policy among several is skipped.
        assert!(apply(&key(&["nope", "pp"]), &set, Some("o")).is_ok());
    }

    #[test]
    fn inactive_is_the_policies_and_the_keys_own_flag_is_ignored() {
        let set = set(vec![
            json!({"id": "on", "org_id": "o", "access_rights": acl("a")}),
            json!({"id": "off", "org_id": "o", "is_inactive": true, "access_rights": acl("a")}),
        ]);
        let mut k = key(&["on"]);
        k.is_inactive = true;
        assert!(!apply(&k, &set, Some("o")).unwrap().is_inactive);
        assert!(
            apply(&key(&["on", "off"]), &set, Some("o"))
                .unwrap()
                .is_inactive
        );
    }

    #[test]
    fn unlimited_beats_every_number() {
        assert!(greater(-1, 100));
        assert!(!greater(100, -1));
        assert!(!greater(-1, -1));
        assert!(greater(5, 4));
    }
}
