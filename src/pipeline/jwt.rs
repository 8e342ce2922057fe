//! The JWT stage (`enable_jwt`, CONTRACT §10): which session a verified
//! token stands for. With `jwt_source` (centralised) the token is checked
//! against that one key and its identity claim names a session, created
//! from its policy on first use and kept in the store (so its quota
//! survives restarts); without, the token names an existing key (`kid`,
//! else the identity claim, else `sub`) whose `jwt_data.secret` verifies
//! it. Verifying is `auth::jwt`'s; applying the policies is the next stage's.

use std::borrow::Cow;
use std::sync::Arc;

use md5::{Digest, Md5};
use serde_json::{Map, Value};

use crate::apidef::{AuthMethod, JwtKeys, JwtSpec};
use crate::auth::jwks;
use crate::auth::jwt::{self, Choice, JwtError, Memo, PolicyClaims, Verified, VerifyKey};
use crate::gateway::unix_now;
use crate::keyid;
use crate::keys;
use crate::lifetime::{self, ApiLifetime};
use crate::session::Session;

use super::auth::{find_key, read_key, store_failure};
use super::{Exchange, Flow};

pub fn jwt(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    let Some(spec) = api.jwt.as_ref() else {
        return Flow::Continue;
    };
    // Owned: the stages below write to the exchange.
    let Some(token) = read_key(api.auth.source(AuthMethod::Jwt), &x.req).map(Cow::into_owned)
    else {
        return refuse(x, JwtError::Missing);
    };
    match &spec.keys {
        JwtKeys::PerKey => by_key(x, spec, &token),
        JwtKeys::Static(key) => centralised(x, spec, &token, key),
        JwtKeys::Jwks(url) => match jwks_key(x, spec, &token, url) {
            Ok(key) => centralised(x, spec, &token, &key),
            Err(flow) => flow,
        },
    }
}

fn refuse(x: &Exchange<'_>, e: JwtError) -> Flow {
    log::debug!("api {}: token refused: {}", x.api.id(), e.message());
    x.reject(e.status(), e.message())
}

/// The JWKS key the token's `kid` names; fetching the set (or a fresher
/// one, for a `kid` it lacks) defers to a worker.
fn jwks_key(
    x: &Exchange<'_>,
    spec: &JwtSpec,
    token: &str,
    url: &str,
) -> Result<Arc<VerifyKey>, Flow> {
    let header = jwt::header(token, spec.family).map_err(|e| refuse(x, e))?;
    let Some(kid) = header.kid else {
        log::debug!("api {}: token has no kid to pick a JWKS key", x.api.id());
        return Err(refuse(x, JwtError::Invalid));
    };
    let (jwks, api) = (&x.gw.jwks, x.api.id());
    let found = match jwks.cached(api, url, &kid) {
        Some(found) => found,
        None if x.nonblocking => return Err(Flow::Defer),
        None => {
            let upstream = &x.gw.upstream;
            jwks.key(api, url, spec.family, &kid, |u| {
                upstream.fetch(u, jwks::MAX_JWKS_BYTES)
            })
        }
    };
    found.map_err(|e| {
        log::debug!("api {api}: no JWKS key with kid {kid:?}");
        refuse(x, e)
    })
}

/// A verified token (the signature checked once per token and key), its
/// time claims checked on every request.
fn verified(
    x: &Exchange<'_>,
    spec: &JwtSpec,
    token: &str,
    key: &VerifyKey,
) -> Result<Arc<Verified>, JwtError> {
    let v = x.gw.tokens.verify(token, spec.family, key)?;
    jwt::check_times(&v.claims, x.now, spec.skews)?;
    Ok(v)
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
    let key = VerifyKey::new(spec.family, found.session.jwt_data.secret.as_bytes());
    if let Err(e) = verified(x, spec, token, &key) {
        return refuse(x, e);
    }
    x.identified(AuthMethod::Jwt, found.session, found.stored_id);
    Flow::Continue
}

/// `jwt_source`: one key (or JWKS) verifies every token; the identity
/// names a session, created from the token's policies on first use.
fn centralised(x: &mut Exchange<'_>, spec: &JwtSpec, token: &str, key: &VerifyKey) -> Flow {
    let v = match verified(x, spec, token, key) {
        Ok(v) => v,
        Err(e) => return refuse(x, e),
    };
    let def = &x.api.def;
    let cfg = &x.gw.config;
    // Identity, session id and stored id: worked out once per token.
    let memo = v.memo(&def.org_id, &def.jwt_identity_base_field, || {
        let identity = jwt::identity(&v.claims, &def.jwt_identity_base_field)?;
        let digest = Md5::digest(identity.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let session_id = keyid::token(&def.org_id, &hex, &cfg.hash_key_function);
        Ok(Memo {
            org: def.org_id.clone(),
            field: def.jwt_identity_base_field.clone(),
            stored_id: keys::stored_id(cfg, &session_id),
            identity,
            session_id,
        })
    });
    let memo = match memo {
        Ok(m) => m,
        Err(why) => return x.reject(403, why),
    };
    let stored_id = &memo.stored_id;
    let sessions = &x.gw.sessions;
    if x.nonblocking && !sessions.is_cached(stored_id) {
        return Flow::Defer;
    }
    let existing = match sessions.get(stored_id) {
        Ok(s) => s,
        Err(e) => return store_failure(x, &e),
    };
    let (wanted, exact) = match wanted_policies(x, spec, &v.claims, existing.is_some()) {
        Ok(p) => p,
        Err(res) => return res,
    };
    // The session lives as long as the token, its skew included (Tyk sets
    // `exp` alone, so a token accepted by the skew met an expired key).
    let exp = v
        .claims
        .get("exp")
        .and_then(Value::as_f64)
        .map(|e| (e as i64).saturating_add(spec.skews.expires_at));
    // A session is rewritten when the token asks for other policies or
    // outlives it; otherwise it is used as stored (and cached).
    let stale = |s: &Session| {
        let has = |p: &String| s.apply_policies.contains(p);
        let differs = if exact {
            s.apply_policies.len() != wanted.len() || !wanted.iter().all(has)
        } else {
            !wanted.iter().all(has)
        };
        differs || exp.is_some_and(|e| s.expires > 0 && e > s.expires)
    };
    let session = match existing {
        Some(s) if !stale(&s) => s,
        _ if x.nonblocking => return Flow::Defer,
        current => {
            let stored = current.is_some();
            let mut s = current
                .map(|s| (*s).clone())
                .unwrap_or_else(|| new_session(&def.org_id, &memo.identity, &memo.session_id));
            s.apply_policies = wanted;
            s.apply_policy_id.clear();
            if let Some(e) = exp
                && (s.expires == 0 || e > s.expires)
            {
                s.expires = e;
            }
            let global = &x.gw.config.session_lifetime;
            let ttl = lifetime::lifetime(&s, ApiLifetime::of(def), global, unix_now());
            let s = Arc::new(s);
            // A stored session is rewritten only while it is still there
            // (Tyk's `SET … XX`); deleted meanwhile, it stays deleted and
            // this request still uses it, as in Tyk.
            let written = if stored {
                sessions.replace(stored_id, s.clone(), ttl).map(drop)
            } else {
                sessions.put(stored_id, s.clone(), ttl)
            };
            if let Err(e) = written {
                log::error!("api {}: cannot store a JWT session: {e}", x.api.id());
                return x.reject(500, "There was a problem authorising the key");
            }
            s
        }
    };
    let stored_id = stored_id.clone();
    x.identified(AuthMethod::Jwt, session, stored_id);
    Flow::Continue
}

/// The policies a token's session must have, and whether exactly those
/// (`jwt::PolicyClaims`): the base policy is its policy claim (a policy of
/// the API's org), else the first policy of the key its client claim
/// names. Err is the 403.
fn wanted_policies(
    x: &Exchange<'_>,
    spec: &JwtSpec,
    claims: &Value,
    existing: bool,
) -> Result<(Vec<String>, bool), Flow> {
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
    if let Some(id) = &base
        && x.gw.policies_now().find(&def.org_id, id).is_none()
    {
        return Err(x.reject(403, JwtError::NoPolicy.message()));
    }
    let scopes = if spec.scope_map.is_empty() {
        Vec::new()
    } else {
        jwt::scopes(claims, &spec.scope_claim)
    };
    let choice = PolicyClaims {
        base,
        defaults: &def.jwt_default_policies,
        scope_map: &spec.scope_map,
        scopes: &scopes,
        existing,
    }
    .choose();
    match choice {
        Choice::Policies { ids, exact } => Ok((ids, exact)),
        Choice::Refuse(why) => {
            log::debug!("api {}: token refused: {why}", x.api.id());
            Err(x.reject(403, why))
        }
    }
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
