//! Who the request is: token auth (CONTRACT §3.4: the key from the
//! header, query parameter or cookie the API names) or basic auth (§10: a
//! user and password, the user's session found like a custom key), then
//! the key's policies (§8), applied by `auth`. Expiry and access rights are
//! `access`'s.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::apidef::{AuthMethod, AuthSource};
use crate::auth::basic::{self, Credentials};
use crate::http::Request;
use crate::keys;
use crate::session::Session;

use super::{Exchange, Flow};

const DISALLOWED: &str = "Access to this API has been disallowed";

pub fn token(x: &mut Exchange<'_>) -> Flow {
    let Some(key) = read_key(x.api.auth.source(AuthMethod::Token), &x.req) else {
        return x.reject(401, "Authorization field missing");
    };
    if shorter_than(&key, x.gw.config.min_token_length) {
        return x.reject(403, DISALLOWED);
    }
    match find_key(x, &key) {
        Err(flow) => flow,
        Ok(Some(found)) => {
            x.identified(AuthMethod::Token, found.session, found.stored_id);
            Flow::Continue
        }
        Ok(None) => {
            log::debug!("api {}: unknown key", x.api.id());
            x.reject(403, DISALLOWED)
        }
    }
}

/// What the stages need of a key found for a request.
pub(super) struct Identity {
    pub session: Arc<Session>,
    /// The id it is stored under.
    pub stored_id: String,
}

impl From<keys::Found> for Identity {
    fn from(f: keys::Found) -> Identity {
        Identity {
            session: f.session,
            stored_id: f.stored_id,
        }
    }
}

/// The session of key id `id` in the API's org (CONTRACT §1.4). Err is the
/// flow to return: a deferral on the event loop when finding it would read
/// the store, a 500 when the store fails.
pub(super) fn find_key(x: &Exchange<'_>, id: &str) -> Result<Option<Identity>, Flow> {
    let (cfg, ids, sessions) = (&x.gw.config, &x.gw.key_ids, &x.gw.sessions);
    let org = &x.api.def.org_id;
    let candidates = ids.resolve(cfg, id, org);
    if let Some((session, c)) = keys::first_if_cached(sessions, &candidates) {
        let stored_id = c.stored_id.clone();
        return Ok(Some(Identity { session, stored_id }));
    }
    // A shared store is never read on the event loop, not even for the
    // rare earlier candidate that is stored but not cached.
    let in_memory = !x.gw.store.remote() && keys::any_cached(sessions, &candidates);
    if x.nonblocking && !in_memory {
        return Err(Flow::Defer);
    }
    match keys::find_in(sessions, &candidates) {
        Ok(found) => Ok(found.map(Identity::from)),
        Err(e) => Err(store_failure(x, &e)),
    }
}

/// Whether `key` has fewer than `min` characters. A char is one to four
/// bytes, so the byte length settles it without counting unless it lies
/// between `min` and `4 * min`.
fn shorter_than(key: &str, min: usize) -> bool {
    key.len() < min || (key.len() < min.saturating_mul(4) && key.chars().count() < min)
}

/// A store failure while authorising: logged, 500.
pub(super) fn store_failure(x: &Exchange<'_>, e: &crate::error::Error) -> Flow {
    log::error!("api {}: cannot read keys: {e}", x.api.id());
    x.reject(500, "There was a problem authorising the key")
}

/// Basic auth (CONTRACT §10): 401 with `WWW-Authenticate` for missing or
/// wrong credentials, 400 for a malformed header. A bcrypt check runs on a
/// worker unless the password was verified lately.
pub fn basic(x: &mut Exchange<'_>) -> Flow {
    let source = x.api.auth.source(AuthMethod::Basic);
    let header = source.header.as_deref().unwrap_or("Authorization");
    let (user, password) = match (basic::read(x.req.headers.get(header)), &x.api.basic_body) {
        (Credentials::Given { user, password }, _) => (user, password),
        // No usable header: the body, when the API reads credentials there
        // (on a worker: the body is read before the stages).
        (_, Some(_)) if x.nonblocking => return Flow::Defer,
        (_, Some(from_body)) => match from_body.extract(x.body.as_deref().unwrap_or_default()) {
            Ok(found) => found,
            Err(why) => return x.reject(400, why),
        },
        (Credentials::Malformed(why), None) => return x.reject(400, why),
        (Credentials::Missing, None) => return challenge(x, "Authorization field missing"),
    };
    let found = match find_key(x, &user) {
        Err(flow) => return flow,
        Ok(None) => {
            log::debug!("api {}: unknown basic-auth user", x.api.id());
            return challenge(x, "User not authorised");
        }
        Ok(Some(found)) => found,
    };
    let data = &found.session.basic_auth_data;
    let verified = &x.gw.verified;
    let good = match verified.quick_check(data, &password) {
        Some(answer) => answer,
        None if x.nonblocking => return Flow::Defer,
        None => {
            let meta = &x.api.def.basic_auth;
            let ttl = match meta.cache_ttl {
                _ if meta.disable_caching => None,
                t if t > 0 => Some(Duration::from_secs(t.unsigned_abs())),
                _ => Some(Duration::from_secs(60)),
            };
            verified.check(data, &password, ttl)
        }
    };
    if !good {
        log::debug!("api {}: basic-auth password check failed", x.api.id());
        return challenge(x, "User not authorised");
    }
    x.identified(AuthMethod::Basic, found.session, found.stored_id);
    Flow::Continue
}

/// 401 with `WWW-Authenticate: Basic realm="<API name>"`.
fn challenge(x: &Exchange<'_>, message: &str) -> Flow {
    let Flow::Respond(mut res) = x.reject(401, message) else {
        unreachable!("reject always responds")
    };
    // The name is the API author's: no control character may end the field.
    let name: String = x
        .api
        .def
        .name
        .chars()
        .filter(|c| !c.is_control())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    let realm = format!("Basic realm=\"{name}\"");
    res.headers.set("WWW-Authenticate", realm);
    Flow::Respond(res)
}

/// A key with `apply_policies` gets the session its policies make, for
/// this API's org (cached per stored session and policy snapshot). A key
/// whose policies cannot be applied is unknown, as in Tyk.
pub fn policies(x: &mut Exchange<'_>) -> Flow {
    let Some(s) = &x.session else {
        return Flow::Continue;
    };
    if s.apply_policies.is_empty() && s.apply_policy_id.is_empty() {
        return Flow::Continue;
    }
    let set = x.gw.policies_now();
    match x.gw.applied.get(&x.stored_id, s, &set, &x.api.def.org_id) {
        Ok(applied) => {
            x.session = Some(applied);
            Flow::Continue
        }
        Err(e) => {
            log::debug!("api {}: key's policies not applied: {e}", x.api.id());
            x.reject(403, DISALLOWED)
        }
    }
}

/// The key from the configured sources; later sources win when non-empty.
pub fn read_key<'r>(src: &AuthSource, req: &'r Request) -> Option<Cow<'r, str>> {
    let mut key: Cow<'r, str> = src
        .header
        .as_deref()
        .and_then(|h| req.headers.get(h))
        .unwrap_or_default()
        .into();
    if let Some(v) = src
        .param
        .as_deref()
        .and_then(|p| req.query_param(p))
        .filter(|v| !v.is_empty())
    {
        key = v.into();
    }
    if let Some(v) = src
        .cookie
        .as_deref()
        .and_then(|c| cookie(req, c))
        .filter(|v| !v.is_empty())
    {
        key = v.into();
    }
    // A key from the header (the usual case) is not copied.
    let key = match key {
        Cow::Borrowed(k) => Cow::Borrowed(strip_bearer(k).trim()),
        Cow::Owned(k) => Cow::Owned(strip_bearer(&k).trim().to_string()),
    };
    (!key.is_empty()).then_some(key)
}

fn strip_bearer(v: &str) -> &str {
    match v.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("bearer ") => &v[7..],
        _ => v,
    }
}

pub(super) fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers
        .get_all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(param: bool, cookie: bool) -> AuthSource {
        AuthSource {
            header: Some("Authorization".into()),
            param: param.then(|| "key".into()),
            cookie: cookie.then(|| "sess".into()),
        }
    }

    #[test]
    fn a_key_is_short_by_its_characters_not_its_bytes() {
        for (key, min) in [
            ("", 0),
            ("abc", 3),
            ("ééé", 3),
            ("€€", 2),
            ("a", 0),
            ("😀😀", 2),
        ] {
            assert!(!shorter_than(key, min), "{key} {min}");
        }
        for (key, min) in [
            ("", 1),
            ("ab", 3),
            ("éé", 3),
            ("€€€", 4),
            ("😀😀", 3),
            ("😀", 2),
        ] {
            assert!(shorter_than(key, min), "{key} {min}");
        }
        assert!(shorter_than(&"k".repeat(40), usize::MAX));
    }

    #[test]
    fn bearer_prefix_is_cut_in_any_case() {
        let req = Request::fake("GET", "/", &[("authorization", "BEARER abc")]);
        assert_eq!(
            read_key(&source(false, false), &req).as_deref(),
            Some("abc")
        );
    }

    #[test]
    fn param_then_cookie_win_when_set() {
        let req = Request::fake(
            "GET",
            "/?key=p",
            &[("Authorization", "h"), ("Cookie", "a=1; sess=c")],
        );
        assert_eq!(read_key(&source(true, false), &req).as_deref(), Some("p"));
        assert_eq!(read_key(&source(true, true), &req).as_deref(), Some("c"));
        let empty = Request::fake("GET", "/?key=", &[("Authorization", "h")]);
        assert_eq!(read_key(&source(true, false), &empty).as_deref(), Some("h"));
    }

    #[test]
    fn missing_key_is_none() {
        assert!(read_key(&source(false, false), &Request::fake("GET", "/", &[])).is_none());
    }
}
