//! What a found key may do: expiry and `is_inactive` (KeyExpired), and
//! access rights to the API and its version (AccessRights). Limits are
//! `limit`'s.

use super::{Exchange, Flow};

pub fn key_expired(x: &mut Exchange<'_>) -> Flow {
    let Some(s) = &x.session else {
        return Flow::Continue;
    };
    if s.is_inactive {
        return x.reject(403, "Key is inactive, please renew");
    }
    if s.is_expired(x.now) {
        return x.reject(401, "Key has expired, please renew");
    }
    Flow::Continue
}

pub fn rights(x: &mut Exchange<'_>) -> Flow {
    let Some(s) = &x.session else {
        return Flow::Continue;
    };
    if s.access_rights.is_empty() {
        return Flow::Continue;
    }
    let Some(access) = s.access_rights.get(x.api.id()) else {
        return x.reject(403, "Access to this API has been disallowed");
    };
    if !x.api.versioning.not_versioned {
        let version = x.version.as_deref().unwrap_or_default();
        if !access.versions.iter().any(|v| v == version) {
            return x.reject(403, "Access to this API has been disallowed");
        }
    }
    Flow::Continue
}
