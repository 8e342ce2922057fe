//! The JWT stage (`enable_jwt`, CONTRACT §10): which session a verified
//! token stands for. With `jwt_source` (centralised) the token is checked
//! against that one key and its identity claim names a session, created
//! from its policy on first use and kept in the store (so its quota
//! survives restarts); without, the token names an existing key (`kid`,
//! else the identity claim, else `sub`) whose `jwt_data.secret` verifies
//! it. Verifying is `auth::jwt`'s; applying the policies is the next stage's.

use std::sync::Arc;

use md5::{Digest, Md5};
use serde_json::{Map, Value};

use crate::apidef::{JwtKeys, JwtSpec};
use crate::auth::jwt::{self, JwtError};
use crate::keyid;
use crate::keys;
use crate::session::Session;

use super::auth::{find_key, read_key, store_failure};
use super::{Exchange, Flow};

pub fn jwt(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    let Some(spec) = api.jwt.as_ref() else {
        return Flow::Continue;
    };
    let Some(token) = read_key(&x.api.auth, &x.req) else {
        return refuse(x, JwtError::Missing);
    };
    match &spec.keys {
        JwtKeys::PerKey => by_key(x, spec, &token),
        JwtKeys::Static(key) => centralised(x, spec, &token, key),
        JwtKeys::Jwks(_) => refuse(x, JwtError::Invalid),
    }
}

fn refuse(x: &Exchange<'_>, e: JwtError) -> Flow {
    log::debug!("api {}: token refused: {}", x.api.id(), e.message());
    x.reject(e.status(), e.message())
}

/// A verified token's claims (the signature checked once per token and
/// key), its time claims checked on every request.
fn verified(
    x: &Exchange<'_>,
    spec: &JwtSpec,
    token: &str,
    key: &[u8],
) -> Result<Arc<Value>, JwtError> {
    let claims = x.gw.tokens.verify(token, spec.family, key)?;
    jwt::check_times(&claims, x.now, spec.skews)?;
    Ok(claims)
}

/// No `jwt_source`: the token names its key.
fn by_key(x: &mut Exchange<'_>, spec: &JwtSpec, token: &str) -> Flow {
    let header = match jwt::header(token, spec.family) {
        Ok(h) => h,
        Err(e) => return refuse(x, e),
    };
    let def = &x.api.def;
    let named = match header.kid.filter(|_| !def.jwt_skip_kid) {
        Some(kid) => Some(kid),
        None => jwt::unverified_claims(token)
            .and_then(|c| jwt::identity(&c, &def.jwt_identity_base_field).ok()),
    };
    let Some(id) = named else {
        return refuse(x, JwtError::Invalid);
    };
    let found = match find_key(x, &id) {
        Ok(Some(found)) => found,
        Ok(None) => return refuse(x, JwtError::Invalid),
        Err(flow) => return flow,
    };
    let secret = found.session.jwt_data.secret.as_bytes();
    if let Err(e) = verified(x, spec, token, secret) {
        return refuse(x, e);
    }
    x.session = Some(found.session);
    x.stored_id = found.stored_id;
    Flow::Continue
}

/// `jwt_source`: one key verifies every token; the identity names a
/// session, created from the token's policy on first use.
fn centralised(x: &mut Exchange<'_>, spec: &JwtSpec, token: &str, key: &[u8]) -> Flow {
    let claims = match verified(x, spec, token, key) {
        Ok(c) => c,
        Err(e) => return refuse(x, e),
    };
    let def = &x.api.def;
    let identity = match jwt::identity(&claims, &def.jwt_identity_base_field) {
        Ok(id) => id,
        Err(why) => return x.reject(403, why),
    };
    let cfg = &x.gw.config;
    let digest = Md5::digest(identity.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let session_id = keyid::token(&def.org_id, &hex, &cfg.hash_key_function);
    let stored_id = keys::stored_id(cfg, &session_id);
    let sessions = &x.gw.sessions;
    if x.nonblocking && !sessions.is_cached(&stored_id) {
        return Flow::Defer;
    }
    let existing = match sessions.get(&stored_id) {
        Ok(s) => s,
        Err(e) => return store_failure(x, &e),
    };
    let wanted = match wanted_policies(x, &claims) {
        Ok(p) => p,
        Err(res) => return res,
    };
    // The session lives as long as the token, its skew included (Tyk sets
    // `exp` alone, so a token accepted by the skew met an expired key).
    let exp = claims
        .get("exp")
        .and_then(Value::as_f64)
        .map(|e| (e as i64).saturating_add(spec.skews.expires_at));
    // A session is rewritten when the token asks for other policies or
    // outlives it; otherwise it is used as stored (and cached).
    let stale = |s: &Session| {
        wanted.iter().any(|p| !s.apply_policies.contains(p))
            || exp.is_some_and(|e| s.expires > 0 && e > s.expires)
    };
    let no_policy = "key not authorized: no matching policy found";
    let session = match existing {
        Some(s) if !stale(&s) => {
            if s.apply_policies.is_empty() {
                return x.reject(403, no_policy);
            }
            s
        }
        current => {
            let has_policies = current
                .as_ref()
                .is_some_and(|s| !s.apply_policies.is_empty());
            if wanted.is_empty() && !has_policies {
                return x.reject(403, no_policy);
            }
            if x.nonblocking {
                return Flow::Defer;
            }
            let mut s = current
                .map(|s| (*s).clone())
                .unwrap_or_else(|| new_session(&def.org_id, &identity, &session_id));
            if !wanted.is_empty() {
                s.apply_policies = wanted;
                s.apply_policy_id.clear();
            }
            if let Some(e) = exp
                && (s.expires == 0 || e > s.expires)
            {
                s.expires = e;
            }
            if let Err(e) = sessions.put(&stored_id, s) {
                log::error!("api {}: cannot store a JWT session: {e}", x.api.id());
                return x.reject(500, "There was a problem authorising the key");
            }
            match sessions.get(&stored_id) {
                Ok(Some(s)) => s,
                Ok(None) => return x.reject(500, "There was a problem authorising the key"),
                Err(e) => return store_failure(x, &e),
            }
        }
    };
    x.session = Some(session);
    x.stored_id = stored_id;
    Flow::Continue
}

/// The policies a token asks for: its policy claim (a policy of the API's
/// org), else the first policy of the key its client claim names, then
/// `jwt_default_policies`. Err is the 403.
fn wanted_policies(x: &Exchange<'_>, claims: &Value) -> Result<Vec<String>, Flow> {
    let def = &x.api.def;
    let mut base = None;
    if !def.jwt_policy_field_name.is_empty() {
        base = jwt::claim(claims, &def.jwt_policy_field_name);
    } else if !def.jwt_client_base_field.is_empty()
        && let Some(client) = claims
            .get(&def.jwt_client_base_field)
            .and_then(Value::as_str)
    {
        // On the event loop a client key not in memory defers: never a
        // store read there.
        base = find_key(x, client)?.and_then(|f| {
            crate::auth::apply::policy_ids(&f.session)
                .into_iter()
                .next()
        });
    }
    let set = x.gw.policies();
    let mut wanted: Vec<String> = Vec::new();
    if let Some(id) = base {
        if set.find(&def.org_id, &id).is_none() {
            return Err(x.reject(403, JwtError::NoPolicy.message()));
        }
        wanted.push(id);
    }
    for id in &def.jwt_default_policies {
        if !wanted.contains(id) {
            wanted.push(id.clone());
        }
    }
    Ok(wanted)
}

/// A JWT identity's first session (Tyk's fields).
fn new_session(org: &str, identity: &str, session_id: &str) -> Session {
    let mut meta = Map::new();
    meta.insert("TykJWTSessionID".into(), Value::from(session_id));
    Session {
        org_id: org.to_string(),
        alias: identity.to_string(),
        meta_data: meta,
        ..Session::default()
    }
}
