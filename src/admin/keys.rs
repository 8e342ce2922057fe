//! `/tyk/keys…` (CONTRACT §1.3–1.4): creating, reading, updating, deleting
//! and listing keys, with Tyk's write rules (reset of `last_updated` and
//! `quota_renews`, kept `date_created`, past `expires`, policies applied
//! before storing, §8) and exact errors; and `/tyk/keys/policy/{key}`.

use std::sync::Arc;

use crate::auth::apply::{ApplyError, apply, policy_ids};
use crate::auth::basic::hash_password;
use crate::error::admin_error;
use crate::gateway::unix_now;
use crate::http::Response;
use crate::keys::{self, Found, NewKey};
use crate::lifetime::{self, ApiLifetime};
use crate::quota::{counter_name, scope_for};
use crate::router::store_failure;
use crate::session::Session;

use super::{Call, json, ok};

const SECURITY: &str = "Failed to create key, ensure security settings are correct.";

fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Tyk's write rules, unless `suppress_reset=1`.
fn reset_counters(s: &mut Session, now: i64) {
    s.last_updated = now.to_string();
    s.quota_renews = now + s.quota_renewal_rate;
}

fn parse_session(bytes: &[u8]) -> Option<Session> {
    serde_json::from_slice(bytes).ok()
}

/// A basic-auth user's clear password, hashed as tyk.conf says (Tyk's
/// `setBasicAuthSessionPassword`); a session without one is left as is.
fn hash_basic_password(call: &Call<'_>, s: &mut Session) -> Result<(), Response> {
    if s.basic_auth_data.password.is_empty() {
        return Ok(());
    }
    let function = &call.gw.config.basic_auth_hash_key_function;
    match hash_password(function, &s.basic_auth_data.password) {
        Ok(data) => {
            s.basic_auth_data = data;
            Ok(())
        }
        Err(e) => {
            log::error!("admin: cannot hash a basic-auth password: {e}");
            Err(admin_error(500, SECURITY))
        }
    }
}

/// The session with its policies applied, as Tyk stores it: applied once
/// for the key's org (a failure there leaves the session as sent), then
/// checked against the org of every loaded API it grants.
fn with_policies(call: &Call<'_>, session: Session) -> Result<Session, ApplyError> {
    if policy_ids(&session).is_empty() {
        return Ok(session);
    }
    let set = call.gw.policies();
    let applied = apply(&session, &set, None).unwrap_or(session);
    let registry = call.gw.registry();
    for api_id in applied.access_rights.keys() {
        if let Some(api) = registry.get(api_id) {
            apply(&applied, &set, Some(&api.def.org_id))?;
        }
    }
    Ok(applied)
}

/// Stores a new key under a fresh or custom id.
fn store_new(call: &Call<'_>, key: &NewKey, session: Session, action: &str) -> Response {
    // With hashing, a basic-auth user's key is not shown (Tyk).
    let basic = !session.basic_auth_data.password.is_empty();
    // A random id has no quota counters to start over.
    let counters = !key.random;
    if let Err(e) = save(call, &key.stored_id, session, false, counters) {
        return store_failure(&e, SECURITY);
    }
    log::info!(
        "admin: key {action} (stored as {})",
        obfuscate(&key.stored_id)
    );
    let hash_keys = call.gw.config.hash_keys;
    let shown = if basic && hash_keys { "" } else { &key.key_id };
    ok(action, shown, hash_keys.then_some(key.stored_id.as_str()))
}

/// Writes a session for as long as it lives; unless `suppress_reset=1`,
/// its quota counters start over (Tyk deletes them on every such write;
/// `counters` false: it has none). `existing`: it replaces a stored
/// session, and must not bring back one deleted meanwhile (then false,
/// nothing written).
fn save(
    call: &Call<'_>,
    stored: &str,
    session: Session,
    existing: bool,
    counters: bool,
) -> Result<bool, crate::error::Error> {
    if counters && call.query("suppress_reset") != "1" {
        call.gw.counters.reset_quotas(stored)?;
    }
    let (ttl, sessions) = (lifetime_of(call, &session), &call.gw.sessions);
    if existing {
        sessions.replace(stored, Arc::new(session), ttl)
    } else {
        sessions.put(stored, Arc::new(session), ttl).map(|()| true)
    }
}

/// How long the stored session lives (Tyk's `ApplyLifetime`): the longest
/// over the loaded APIs it grants; for a master key, over every loaded API.
fn lifetime_of(call: &Call<'_>, s: &Session) -> i64 {
    let registry = call.gw.registry();
    let apis: Vec<ApiLifetime> = if s.access_rights.is_empty() {
        registry
            .all()
            .iter()
            .map(|a| ApiLifetime::of(&a.def))
            .collect()
    } else {
        let loaded = s.access_rights.keys().filter_map(|id| registry.get(id));
        loaded.map(|a| ApiLifetime::of(&a.def)).collect()
    };
    lifetime::longest(s, apis, &call.gw.config.session_lifetime, unix_now())
}

/// The last four characters only: never log raw keys.
fn obfuscate(id: &str) -> String {
    let tail: String = id
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("****{tail}")
}

/// `POST /tyk/keys/create`.
pub fn create(call: &mut Call<'_>) -> Response {
    let body = match call.read_body() {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(session) = parse_session(&body) else {
        return admin_error(500, "Unmarshalling failed");
    };
    let mut session = match with_policies(call, session) {
        Ok(s) => s,
        Err(e) => return admin_error(500, &format!("Failed to create key - {e}")),
    };
    if let Err(res) = hash_basic_password(call, &mut session) {
        return res;
    }
    if session.access_rights.is_empty() && !call.gw.config.allow_master_keys {
        return admin_error(
            400,
            "Failed to create key, keys must have at least one Access Rights record set.",
        );
    }
    let now = unix_now();
    reset_counters(&mut session, now);
    session.date_created = rfc3339_now();
    let key = keys::new_key(&call.gw.config, &session.org_id, "");
    store_new(call, &key, session, "create")
}

/// `POST /tyk/keys` (random id) and `POST /tyk/keys/{name}`.
pub fn add(call: &mut Call<'_>, name: Option<&str>) -> Response {
    let body = match call.read_body() {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(session) = parse_session(&body) else {
        return admin_error(400, "Request malformed");
    };
    let Ok(mut session) = with_policies(call, session) else {
        return admin_error(500, SECURITY);
    };
    if let Err(res) = hash_basic_password(call, &mut session) {
        return res;
    }
    let min = call.gw.config.min_token_length;
    if let Some(name) = name.filter(|n| n.chars().count() < min) {
        return admin_error(
            400,
            &format!(
                "custom key ID length {} is less than min_token_length ({min}); the key would be unreachable at auth time. Use an ID of at least min_token_length characters, or lower min_token_length in the gateway configuration.",
                name.chars().count()
            ),
        );
    }
    if session.access_rights.is_empty() && !call.gw.config.allow_master_keys {
        return admin_error(500, SECURITY);
    }
    let now = unix_now();
    if call.query("suppress_reset") != "1" {
        reset_counters(&mut session, now);
    }
    if session.expires > 1 && session.expires < now {
        session.expires = 0;
    }
    session.date_created = rfc3339_now();
    let key = keys::new_key(&call.gw.config, &session.org_id, name.unwrap_or(""));
    store_new(call, &key, session, "added")
}

/// Resolves the path id: by stored id with `?hashed=`, else §1.4.
/// Err is the response for a store failure; `missing` the 404 message.
fn lookup(call: &Call<'_>, id: &str, org: &str, missing: &str) -> Result<Found, Response> {
    let cfg = &call.gw.config;
    let sessions = &call.gw.sessions;
    let found = if !call.query("hashed").is_empty() {
        keys::find_stored(sessions, id)
    } else {
        match keys::find(cfg, &call.gw.key_ids, sessions, id, org) {
            Ok(None) if !cfg.hash_key_function.is_empty() => {
                keys::find_stored(sessions, &keys::stored_id(cfg, id))
            }
            other => other,
        }
    };
    match found {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err(admin_error(404, missing)),
        Err(e) => Err(store_failure(&e, "Failed to read the key")),
    }
}

/// The org a path id is resolved in: `org_id`, else the `api_id`'s org.
fn request_org(call: &Call<'_>) -> String {
    let org = call.query("org_id");
    if !org.is_empty() {
        return org;
    }
    let api_id = call.query("api_id");
    call.gw
        .registry()
        .get(&api_id)
        .map(|a| a.def.org_id.clone())
        .unwrap_or_default()
}

/// `PUT /tyk/keys/{id}`.
pub fn update(call: &mut Call<'_>, id: &str) -> Response {
    let body = match call.read_body() {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(session) = parse_session(&body) else {
        return admin_error(400, "Request malformed");
    };
    let found = match lookup(call, id, &session.org_id, "Key is not found") {
        Ok(f) => f,
        Err(res) => return res,
    };
    let Ok(mut session) = with_policies(call, session) else {
        return admin_error(500, SECURITY);
    };
    let old = &found.session;
    // Rehashed only when the password sent is not the one stored (Tyk);
    // none sent keeps the stored one (GET blanks it).
    let sent = &session.basic_auth_data.password;
    if sent.is_empty() || *sent == old.basic_auth_data.password {
        session.basic_auth_data = old.basic_auth_data.clone();
    } else if let Err(res) = hash_basic_password(call, &mut session) {
        return res;
    }
    session.date_created = old.date_created.clone();
    let now = unix_now();
    if call.query("suppress_reset") == "1" {
        session.quota_renews = old.quota_renews;
        session.last_updated = old.last_updated.clone();
        keep_limit_renewals(&mut session, old);
    } else {
        reset_counters(&mut session, now);
    }
    if session.expires > 1 && session.expires < now {
        session.expires = old.expires;
    }
    if session.access_rights.is_empty() && !call.gw.config.allow_master_keys {
        return admin_error(500, SECURITY);
    }
    match save(call, &found.stored_id, session, true, true) {
        Ok(true) => {}
        // Deleted since it was read: it stays deleted.
        Ok(false) => return admin_error(404, "Key is not found"),
        Err(e) => return store_failure(&e, SECURITY),
    }
    ok("modified", &found.key_id, None)
}

fn keep_limit_renewals(new: &mut Session, old: &Session) {
    for (api, access) in &mut new.access_rights {
        let old_limit = old.access_rights.get(api).and_then(|a| a.limit.as_ref());
        if let (Some(limit), Some(old_limit)) = (access.limit.as_mut(), old_limit)
            && !limit.is_empty()
            && !old_limit.is_empty()
        {
            limit.quota_renews = old_limit.quota_renews;
        }
    }
}

/// `GET /tyk/keys/{id}`.
pub fn get(call: &Call<'_>, id: &str) -> Response {
    if !call.query("hashed").is_empty() && !call.gw.config.hash_keys {
        return admin_error(400, "Key requested by hash but key hashing is not enabled");
    }
    let found = match lookup(call, id, &request_org(call), "Key not found") {
        Ok(f) => f,
        Err(res) => return res,
    };
    let mut session = (*found.session).clone();
    session.basic_auth_data.password.clear();
    overlay_quotas(call, &found.stored_id, &mut session);
    json(&session)
}

/// Shows live quota counters on the key, as Tyk's GET does.
fn overlay_quotas(call: &Call<'_>, stored: &str, s: &mut Session) {
    let (counters, now) = (&call.gw.counters, unix_now());
    // A counter that cannot be read (Redis away) shows the session as stored.
    let used = |name: &str| counters.quota_used(name, now).ok().flatten();
    if s.quota_max > 0
        && let Some((used, renews)) = used(&counter_name("", stored))
    {
        s.quota_remaining = (s.quota_max - used).max(0);
        if renews != 0 {
            s.quota_renews = renews;
        }
    }
    for (api_id, access) in &mut s.access_rights {
        let scope = scope_for(Some(access), api_id);
        let Some(limit) = access
            .limit
            .as_mut()
            .filter(|l| !l.is_empty() && l.quota_max > 0)
        else {
            continue;
        };
        match used(&counter_name(&scope, stored)) {
            Some((used, renews)) => {
                limit.quota_remaining = (limit.quota_max - used).max(0);
                if renews != 0 {
                    limit.quota_renews = renews;
                }
            }
            None => limit.quota_remaining = limit.quota_max,
        }
    }
}

/// `DELETE /tyk/keys/{id}`.
pub fn delete(call: &Call<'_>, id: &str) -> Response {
    let found = match lookup(call, id, &request_org(call), "There is no such key found") {
        Ok(f) => f,
        Err(res) => return res,
    };
    if let Err(e) = call.gw.counters.reset_quotas(&found.stored_id) {
        return store_failure(&e, "Failed to remove the key");
    }
    match call.gw.sessions.remove(&found.stored_id) {
        Ok(true) => {}
        Ok(false) => return admin_error(400, "Failed to remove the key"),
        Err(e) => return store_failure(&e, "Failed to remove the key"),
    }
    log::info!(
        "admin: key deleted (stored as {})",
        obfuscate(&found.stored_id)
    );
    if call.query("api_id") == "-1" {
        return Response::bytes(200, "application/json", "null\n");
    }
    ok("deleted", &found.key_id, None)
}

/// `GET /tyk/keys`.
pub fn list(call: &Call<'_>) -> Response {
    let cfg = &call.gw.config;
    if cfg.hash_keys && !cfg.enable_hashed_keys_listing {
        return admin_error(
            404,
            "Hashed key listing is disabled in config (enable_hashed_keys_listing)",
        );
    }
    let filter = call.query("filter");
    if !cfg.hash_keys && filter.is_empty() && !call.query("api_id").is_empty() {
        return admin_error(
            400,
            "The 'filter' parameter (Org ID) is required when filtering by 'api_id' in legacy mode",
        );
    }
    let ids = match call.gw.sessions.ids() {
        Ok(ids) => ids,
        Err(e) => return store_failure(&e, "Failed to list keys"),
    };
    let ids: Vec<String> = ids
        .into_iter()
        .filter(|id| {
            filter.is_empty() || id.starts_with(&filter) || crate::keyid::token_org(id) == filter
        })
        .collect();
    json(&serde_json::json!({ "keys": ids }))
}

/// `POST /tyk/keys/preview`: the session as it would be stored.
pub fn preview(call: &mut Call<'_>) -> Response {
    let body = match call.read_body() {
        Ok(b) => b,
        Err(res) => return res,
    };
    let Some(mut session) = parse_session(&body) else {
        return admin_error(500, "Unmarshalling failed");
    };
    session.last_updated = unix_now().to_string();
    session.date_created = rfc3339_now();
    json(&session)
}

/// `{"policy": id, "apply_policies": [ids]}` for `/tyk/keys/policy/{key}`.
#[derive(serde::Deserialize)]
struct PolicyUpdate {
    #[serde(default)]
    policy: String,
    #[serde(default)]
    apply_policies: Vec<String>,
}

/// `POST /tyk/keys/policy/{key}`: replaces the key's policies. The path id
/// is the stored id (hashed when `hash_keys` is on), as in Tyk; the
/// policies are neither checked nor applied here, and counters are kept.
pub fn set_policies(call: &mut Call<'_>, id: &str) -> Response {
    let body = match call.read_body() {
        Ok(b) => b,
        Err(res) => return res,
    };
    // A null field is an empty one, as Go decodes it.
    let parsed = serde_json::from_slice::<serde_json::Value>(&body).and_then(|mut v| {
        crate::apidef::strip_nulls(&mut v);
        serde_json::from_value::<PolicyUpdate>(v)
    });
    let Ok(update) = parsed else {
        return admin_error(400, "Couldn't decode instruction");
    };
    let found = match keys::find_stored(&call.gw.sessions, id) {
        Ok(Some(f)) => f,
        Ok(None) => return admin_error(404, "Key not found"),
        Err(e) => return store_failure(&e, "Could not write key data"),
    };
    let mut session = (*found.session).clone();
    session.apply_policies = update.apply_policies;
    if !update.policy.is_empty() {
        session.apply_policies.push(update.policy);
    }
    session.apply_policy_id.clear();
    session.last_updated = unix_now().to_string();
    // As Tyk: over the stored session only, and with no lifetime.
    match call
        .gw
        .sessions
        .replace(&found.stored_id, Arc::new(session), 0)
    {
        Ok(true) => {}
        Ok(false) => return admin_error(404, "Key not found"),
        Err(e) => return store_failure(&e, "Could not write key data"),
    }
    ok("updated", id, None)
}
