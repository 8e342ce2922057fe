//! JWT (CONTRACT §10): which algorithms an API's `jwt_signing_method`
//! allows, what `jwt_source` holds, verifying a token's signature with the
//! `jsonwebtoken` crate, the time claims with Tyk's skews, and reading a
//! claim by a dotted path. Finding or creating the session a token stands
//! for is the pipeline stage's job (`pipeline::auth::jwt`).
//!
//! `alg: none` and algorithm confusion are refused by construction: the
//! token's algorithm must belong to the API's family, and the key is read
//! as that family's key type (an RSA public key is never an HMAC secret).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use quick_cache::{Equivalent, sync::Cache};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The algorithm family an API accepts (`jwt_signing_method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `hmac` (and empty): HS256/384/512.
    Hmac,
    /// `rsa`: RS256/384/512 and PS256/384/512.
    Rsa,
    /// `ecdsa`: ES256/384.
    Ecdsa,
}

impl Family {
    pub fn of(method: &str) -> Option<Family> {
        match method {
            "" | "hmac" => Some(Family::Hmac),
            "rsa" => Some(Family::Rsa),
            "ecdsa" => Some(Family::Ecdsa),
            _ => None,
        }
    }

    fn allows(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        match self {
            Family::Hmac => matches!(alg, HS256 | HS384 | HS512),
            Family::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            Family::Ecdsa => matches!(alg, ES256 | ES384),
        }
    }

    /// `bytes` as this family's verification key.
    pub fn key(self, bytes: &[u8]) -> Option<DecodingKey> {
        match self {
            Family::Hmac => DecodingKey::from_secret(bytes).ok(),
            Family::Rsa => DecodingKey::from_rsa_pem(bytes).ok(),
            Family::Ecdsa => DecodingKey::from_ec_pem(bytes).ok(),
        }
    }
}

/// Why a token was refused; `status` and `message` are Tyk's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtError {
    Missing,
    /// The token's algorithm is not the API's family (or is `none`).
    Method,
    /// Bad signature, bad token, unknown key.
    Invalid,
    Expired,
    UsedBeforeIssued,
    NotYetValid,
    NoPolicy,
}

impl JwtError {
    pub fn status(self) -> u16 {
        match self {
            JwtError::Missing => 400,
            JwtError::Expired | JwtError::UsedBeforeIssued | JwtError::NotYetValid => 401,
            JwtError::Method | JwtError::Invalid | JwtError::NoPolicy => 403,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            JwtError::Missing => "Authorization field missing",
            JwtError::Method => "Key not authorized: Unexpected signing method",
            JwtError::Invalid => "Key not authorized",
            JwtError::Expired => "Key not authorized: token has expired",
            JwtError::UsedBeforeIssued => "Key not authorized: token used before issued",
            JwtError::NotYetValid => "Key not authorized: token is not valid yet",
            JwtError::NoPolicy => "key not authorized: no matching policy",
        }
    }
}

/// A `jwt_source` or a key's `jwt_data.secret`, as key bytes: base64 of a
/// secret or PEM key is decoded; anything else is taken as written.
pub fn key_bytes(source: &str) -> Vec<u8> {
    let trimmed = source.trim();
    if trimmed.starts_with("-----BEGIN") {
        return trimmed.as_bytes().to_vec();
    }
    STANDARD
        .decode(trimmed)
        .unwrap_or_else(|_| source.as_bytes().to_vec())
}

/// The JWKS URL `jwt_source` names (plain or base64), if it names one.
pub fn jwks_url(source: &str) -> Option<String> {
    let is_url = |t: &str| {
        let lower = t.get(..8).unwrap_or(t).to_ascii_lowercase();
        lower.starts_with("http://") || lower.starts_with("https://")
    };
    let trimmed = source.trim();
    if is_url(trimmed) {
        return Some(trimmed.to_string());
    }
    let decoded = STANDARD.decode(trimmed).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    is_url(text.trim()).then(|| text.trim().to_string())
}

/// The token's header, without checking anything but its shape and that
/// its algorithm belongs to `family`.
pub fn header(token: &str, family: Family) -> Result<Header, JwtError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| {
        // An algorithm we have no verifier for (`none`) is Tyk's
        // "Unexpected signing method"; anything else is a bad token.
        let named = token
            .split('.')
            .next()
            .and_then(|h| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(h.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|h| h.get("alg").is_some_and(Value::is_string));
        if named {
            JwtError::Method
        } else {
            JwtError::Invalid
        }
    })?;
    if !family.allows(header.alg) {
        return Err(JwtError::Method);
    }
    Ok(header)
}

/// The claims of a token not yet verified: only to find which key verifies
/// it (`kid`-less tokens name their key by a claim). Never trusted as such.
pub fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The identity a verified token stands for: the `field` claim (dotted
/// paths allowed), else `sub`. Err is Tyk's 403 message.
pub fn identity(claims: &Value, field: &str) -> Result<String, &'static str> {
    if !field.is_empty() {
        match claims.get(field).or_else(|| dotted(claims, field)) {
            Some(Value::String(s)) if s.is_empty() => {
                return Err("found an empty user ID in predefined base field claim");
            }
            Some(Value::String(s)) => return Ok(s.clone()),
            _ => {}
        }
    }
    match claims.get("sub") {
        Some(Value::String(s)) if s.is_empty() => Err("found an empty user ID in sub claim"),
        Some(Value::String(s)) => Ok(s.clone()),
        _ => Err("no suitable claims for user ID were found"),
    }
}

fn dotted<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(claims, |at, part| at.get(part))
}

/// A key that verifies tokens, and its fingerprint: the verified-token
/// cache remembers a token per fingerprint, so a changed key (a reload, a
/// key's new secret, a rotated JWKS) never finds another key's entries.
pub struct VerifyKey {
    pub id: [u8; 32],
    /// None: the bytes are no key of the family; every token is refused.
    key: Option<DecodingKey>,
}

impl VerifyKey {
    /// `bytes` (an HMAC secret or a PEM public key) as a `family` key.
    pub fn new(family: Family, bytes: &[u8]) -> VerifyKey {
        VerifyKey {
            id: fingerprint(family, bytes),
            key: family.key(bytes),
        }
    }

    /// A key already decoded (a JWKS entry); `material` identifies it.
    pub fn decoded(family: Family, material: &[u8], key: DecodingKey) -> VerifyKey {
        VerifyKey {
            id: fingerprint(family, material),
            key: Some(key),
        }
    }

    pub fn is_usable(&self) -> bool {
        self.key.is_some()
    }
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyKey({:02x}{:02x}..)", self.id[0], self.id[1])
    }
}

/// The fingerprint of `family`'s key `bytes`.
pub fn fingerprint(family: Family, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([family as u8]);
    h.update(bytes);
    h.finalize().into()
}

/// Verifies `token`'s signature with `key` and returns its claims. Time
/// claims are `check_times`'s.
pub fn verify(token: &str, family: Family, key: &DecodingKey) -> Result<Value, JwtError> {
    let header = header(token, family)?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|_| JwtError::Invalid)
}

/// A token whose signature was verified: its claims, and the session id
/// its identity maps to, worked out once (`memo`).
pub struct Verified {
    pub claims: Value,
    memo: OnceLock<Memo>,
}

/// What a verified token stands for under one API's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memo {
    /// The settings it was worked out under: the API's org and identity
    /// field.
    pub org: String,
    pub field: String,
    pub identity: String,
    pub session_id: String,
    pub stored_id: String,
}

impl Verified {
    /// The memo for an API's `org` and identity `field`, made by `make` the
    /// first time (a token is nearly always used under one API's settings;
    /// under others it is made anew each time).
    pub fn memo(
        &self,
        org: &str,
        field: &str,
        make: impl FnOnce() -> Result<Memo, &'static str>,
    ) -> Result<Cow<'_, Memo>, &'static str> {
        if let Some(m) = self.memo.get() {
            if m.org == org && m.field == field {
                return Ok(Cow::Borrowed(m));
            }
            return make().map(Cow::Owned);
        }
        // Another thread may set it first: then ours is used this once.
        match self.memo.set(make()?) {
            Ok(()) => self.memo.get().map(Cow::Borrowed).ok_or("memo lost"),
            Err(m) => Ok(Cow::Owned(m)),
        }
    }
}

/// The cache key: a key's fingerprint and a token.
#[derive(PartialEq, Eq)]
struct TokenKey {
    key: [u8; 32],
    token: Box<str>,
}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        TokenRef {
            key: &self.key,
            token: &self.token,
        }
        .hash(h)
    }
}

/// A lookup of `TokenKey` without allocating one.
struct TokenRef<'a> {
    key: &'a [u8; 32],
    token: &'a str,
}

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write(self.key);
        h.write(self.token.as_bytes());
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, k: &TokenKey) -> bool {
        *self.key == k.key && self.token == &*k.token
    }
}

/// Tokens whose signature was verified, by key fingerprint and token: an
/// RS256 check costs ~150 µs, a lookup well under 1 µs. The token itself
/// is compared, so no hash collision can stand one token in for another.
/// Only the signature is remembered; the time claims are checked on every
/// request, so an expired token is refused whether cached or not.
pub struct VerifiedTokens {
    cache: Cache<TokenKey, Arc<Verified>>,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            cache: Cache::new(capacity.max(16)),
        }
    }

    /// `verify`, remembered.
    pub fn verify(
        &self,
        token: &str,
        family: Family,
        key: &VerifyKey,
    ) -> Result<Arc<Verified>, JwtError> {
        let probe = TokenRef {
            key: &key.id,
            token,
        };
        if let Some(v) = self.cache.get(&probe) {
            return Ok(v);
        }
        let decoding = key.key.as_ref().ok_or(JwtError::Invalid)?;
        let verified = Arc::new(Verified {
            claims: verify(token, family, decoding)?,
            memo: OnceLock::new(),
        });
        let entry = TokenKey {
            key: key.id,
            token: token.into(),
        };
        self.cache.insert(entry, verified.clone());
        Ok(verified)
    }
}

/// The scopes a token claims in claim `name` (a dotted path): a string is
/// split on spaces, an array's strings are taken as they are.
pub fn scopes(claims: &Value, name: &str) -> Vec<String> {
    match claims.get(name).or_else(|| dotted(claims, name)) {
        Some(Value::String(s)) => s
            .split(' ')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// What decides a centralised token's policies (Tyk's rules, CONTRACT §10).
pub struct PolicyClaims<'a> {
    /// The policy its policy claim names, or the first policy of the key its
    /// client claim names (already checked to exist in the API's org).
    pub base: Option<String>,
    /// `jwt_default_policies`, used when there is no base.
    pub defaults: &'a [String],
    /// Scope to policy id (`scopes.jwt.scope_to_policy`).
    pub scope_map: &'a BTreeMap<String, String>,
    /// The token's scopes.
    pub scopes: &'a [String],
    /// A session for this identity is already stored.
    pub existing: bool,
}

/// The policies a token's session must have.
#[derive(Debug, PartialEq, Eq)]
pub enum Choice {
    /// These, in this order. `exact`: the session's list must equal it
    /// (scopes and default policies); otherwise containing them is enough.
    Policies { ids: Vec<String>, exact: bool },
    /// Refused with this 403 message.
    Refuse(&'static str),
}

impl PolicyClaims<'_> {
    pub fn choose(&self) -> Choice {
        let from_defaults = self.base.is_none() && !self.defaults.is_empty();
        let mut ids: Vec<String> = Vec::new();
        let push = |id: &String, ids: &mut Vec<String>| {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        };
        if !self.scope_map.is_empty() && !self.scopes.is_empty() {
            // Scopes replace the default policies but keep the base one.
            if let Some(base) = &self.base {
                push(base, &mut ids);
            }
            for scope in self.scopes {
                if let Some(id) = self.scope_map.get(scope) {
                    push(id, &mut ids);
                }
            }
            if ids.is_empty() {
                return Choice::Refuse(
                    "key not authorized: no matching policy found in scope claim",
                );
            }
            return Choice::Policies { ids, exact: true };
        }
        if let Some(base) = &self.base {
            return Choice::Policies {
                ids: vec![base.clone()],
                exact: false,
            };
        }
        if from_defaults {
            for id in self.defaults {
                push(id, &mut ids);
            }
            return Choice::Policies { ids, exact: true };
        }
        if self.existing && !self.scope_map.is_empty() {
            return Choice::Refuse("key not authorized: no scope or policy in token");
        }
        Choice::Refuse("key not authorized: no matching policy found")
    }
}

/// The skews of `jwt_*_validation_skew`, in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Skews {
    pub expires_at: i64,
    pub issued_at: i64,
    pub not_before: i64,
}

/// `exp`, `iat` and `nbf` against `now` (Unix seconds), each with its skew.
pub fn check_times(claims: &Value, now: i64, skews: Skews) -> Result<(), JwtError> {
    let number = |name: &str| claims.get(name).and_then(Value::as_f64).map(|f| f as i64);
    if let Some(exp) = number("exp")
        && now > exp + skews.expires_at
    {
        return Err(JwtError::Expired);
    }
    if let Some(iat) = number("iat")
        && iat > now + skews.issued_at
    {
        return Err(JwtError::UsedBeforeIssued);
    }
    if let Some(nbf) = number("nbf")
        && nbf > now + skews.not_before
    {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

/// A claim by dotted path (`user.id`), as text: strings as they are,
/// numbers and booleans written out; None when absent, empty or an object.
pub fn claim(claims: &Value, path: &str) -> Option<String> {
    let mut at = claims;
    if let Some(whole) = claims.get(path) {
        at = whole;
    } else {
        for part in path.split('.') {
            at = at.get(part)?;
        }
    }
    match at {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, encode};
    use serde_json::json;

    fn hs256(secret: &[u8], claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    }

    /// Verifies with `bytes` read as a `family` key.
    fn check(token: &str, family: Family, bytes: &[u8]) -> Result<Value, JwtError> {
        let key = family.key(bytes).ok_or(JwtError::Invalid)?;
        verify(token, family, &key)
    }

    #[test]
    fn hmac_tokens_verify_with_their_secret_only() {
        let t = hs256(b"secret", &json!({"sub": "ann"}));
        assert_eq!(check(&t, Family::Hmac, b"secret").unwrap()["sub"], "ann");
        assert_eq!(check(&t, Family::Hmac, b"other"), Err(JwtError::Invalid));
        let hmac = Family::Hmac.key(b"secret").unwrap();
        assert_eq!(verify(&t, Family::Rsa, &hmac), Err(JwtError::Method));
        assert_eq!(
            check("not.a.jwt", Family::Hmac, b"secret"),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = STANDARD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = STANDARD.encode(r#"{"sub":"ann"}"#);
        let t = format!(
            "{}.{}.",
            header.trim_end_matches('='),
            body.trim_end_matches('=')
        );
        let key = Family::Hmac.key(b"k").unwrap();
        assert_eq!(verify(&t, Family::Hmac, &key), Err(JwtError::Method));
    }

    #[test]
    fn an_rsa_public_key_is_never_an_hmac_secret() {
        let public = include_bytes!("../../tests/data/jwt/rsa-public.pem");
        // The classic confusion: HS256 signed with the public key's bytes.
        let t = hs256(public, &json!({"sub": "ann"}));
        assert_eq!(check(&t, Family::Rsa, public), Err(JwtError::Method));
        // And an HMAC key never verifies an RS256 token.
        let rsa = EncodingKey::from_rsa_pem(include_bytes!("../../tests/data/jwt/rsa-private.pem"))
            .unwrap();
        let t = encode(&Header::new(Algorithm::RS256), &json!({"sub": "r"}), &rsa).unwrap();
        let hmac = Family::Hmac.key(public).unwrap();
        assert_eq!(verify(&t, Family::Rsa, &hmac), Err(JwtError::Invalid));
    }

    #[test]
    fn rsa_and_ecdsa_tokens_verify_with_their_public_keys() {
        let rsa = EncodingKey::from_rsa_pem(include_bytes!("../../tests/data/jwt/rsa-private.pem"))
            .unwrap();
        let t = encode(&Header::new(Algorithm::RS256), &json!({"sub": "r"}), &rsa).unwrap();
        let public = include_bytes!("../../tests/data/jwt/rsa-public.pem");
        assert!(check(&t, Family::Rsa, public).is_ok());
        let other = include_bytes!("../../tests/data/jwt/rsa2-public.pem");
        assert_eq!(check(&t, Family::Rsa, other), Err(JwtError::Invalid));
        let ec = EncodingKey::from_ec_pem(include_bytes!("../../tests/data/jwt/ec-private.pem"))
            .unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &json!({"sub": "e"}), &ec).unwrap();
        let public = include_bytes!("../../tests/data/jwt/ec-public.pem");
        assert!(check(&t, Family::Ecdsa, public).is_ok());
    }

    #[test]
    fn a_cached_token_is_still_bound_to_its_key() {
        let v = VerifiedTokens::new(16);
        let t = hs256(b"secret", &json!({"sub": "ann"}));
        let good = VerifyKey::new(Family::Hmac, b"secret");
        let first = v.verify(&t, Family::Hmac, &good).unwrap();
        let again = v.verify(&t, Family::Hmac, &good).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second check is the cache's"
        );
        let bad = VerifyKey::new(Family::Hmac, b"other");
        assert_eq!(
            v.verify(&t, Family::Hmac, &bad).err(),
            Some(JwtError::Invalid)
        );
        let unusable = VerifyKey::new(Family::Rsa, b"secret");
        assert!(!unusable.is_usable());
        assert_eq!(
            v.verify(&t, Family::Rsa, &unusable).err(),
            Some(JwtError::Invalid)
        );
        // A token differing in one byte is another entry, verified anew.
        let mut forged = t.clone();
        forged.push('x');
        assert_eq!(
            v.verify(&forged, Family::Hmac, &good).err(),
            Some(JwtError::Invalid)
        );
    }

    #[test]
    fn a_memo_is_kept_for_its_own_settings_only() {
        let v = Verified {
            claims: json!({"sub": "ann"}),
            memo: OnceLock::new(),
        };
        let made = std::cell::Cell::new(0);
        let make = |org: &str| {
            made.set(made.get() + 1);
            Ok(Memo {
                org: org.into(),
                field: String::new(),
                identity: "ann".into(),
                session_id: format!("{org}-id"),
                stored_id: format!("{org}-stored"),
            })
        };
        assert_eq!(
            v.memo("o1", "", || make("o1")).unwrap().stored_id,
            "o1-stored"
        );
        assert_eq!(
            v.memo("o1", "", || make("o1")).unwrap().stored_id,
            "o1-stored"
        );
        assert_eq!(made.get(), 1);
        assert_eq!(
            v.memo("o2", "", || make("o2")).unwrap().stored_id,
            "o2-stored"
        );
        assert_eq!(v.memo("o1", "x", || make("o1")).unwrap().field, "");
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn scopes_are_a_spaced_string_or_an_array() {
        let c = json!({"scope": "read  write", "perms": ["a b", 3, "c"], "n": {"s": "x"}});
        assert_eq!(scopes(&c, "scope"), ["read", "write"]);
        assert_eq!(scopes(&c, "perms"), ["a b", "c"]);
        assert_eq!(scopes(&c, "n.s"), ["x"]);
        assert!(scopes(&c, "missing").is_empty());
    }

    #[test]
    fn policies_follow_tyks_rules() {
        let map: BTreeMap<String, String> = [
            ("read".into(), "p-read".into()),
            ("write".into(), "p-write".into()),
        ]
        .into();
        let empty = BTreeMap::new();
        let defaults = vec!["d1".to_string(), "d2".to_string(), "d1".to_string()];
        let scopes = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ask = |base: Option<&str>,
                   defaults: &[String],
                   map: &BTreeMap<String, String>,
                   s: &[String],
                   existing| {
            PolicyClaims {
                base: base.map(str::to_string),
                defaults,
                scope_map: map,
                scopes: s,
                existing,
            }
            .choose()
        };
        let policies = |ids: &[&str], exact| Choice::Policies {
            ids: ids.iter().map(|x| x.to_string()).collect(),
            exact,
        };
        // The base policy alone, however many defaults.
        assert_eq!(
            ask(Some("b"), &defaults, &empty, &[], false),
            policies(&["b"], false)
        );
        // No base: the defaults, once each.
        assert_eq!(
            ask(None, &defaults, &empty, &[], true),
            policies(&["d1", "d2"], true)
        );
        // Scopes add to the base and replace the defaults.
        let rw = scopes(&["write", "read", "other"]);
        assert_eq!(
            ask(Some("b"), &defaults, &map, &rw, false),
            policies(&["b", "p-write", "p-read"], true)
        );
        assert_eq!(
            ask(None, &defaults, &map, &rw, false),
            policies(&["p-write", "p-read"], true)
        );
        // Scopes that map to nothing, with no base.
        assert_eq!(
            ask(None, &defaults, &map, &scopes(&["other"]), false),
            Choice::Refuse("key not authorized: no matching policy found in scope claim")
        );
        // No scope, no base, no defaults.
        assert_eq!(
            ask(None, &[], &map, &[], true),
            Choice::Refuse("key not authorized: no scope or policy in token")
        );
        assert_eq!(
            ask(None, &[], &map, &[], false),
            Choice::Refuse("key not authorized: no matching policy found")
        );
        assert_eq!(
            ask(None, &[], &empty, &[], true),
            Choice::Refuse("key not authorized: no matching policy found")
        );
        // Scopes without a mapping are ignored.
        assert_eq!(
            ask(Some("b"), &[], &empty, &rw, true),
            policies(&["b"], false)
        );
    }

    #[test]
    fn time_claims_honour_their_skews() {
        let s = Skews::default();
        assert_eq!(
            check_times(&json!({"exp": 99}), 100, s),
            Err(JwtError::Expired)
        );
        assert_eq!(check_times(&json!({"exp": 100}), 100, s), Ok(()));
        assert_eq!(
            check_times(&json!({"iat": 101}), 100, s),
            Err(JwtError::UsedBeforeIssued)
        );
        assert_eq!(
            check_times(&json!({"nbf": 101}), 100, s),
            Err(JwtError::NotYetValid)
        );
        let loose = Skews {
            expires_at: 5,
            issued_at: 5,
            not_before: 5,
        };
        assert_eq!(
            check_times(&json!({"exp": 96, "iat": 104, "nbf": 104}), 100, loose),
            Ok(())
        );
    }

    #[test]
    fn identity_is_the_base_field_else_sub() {
        let c = json!({"sub": "s", "user": {"email": "e"}, "blank": ""});
        assert_eq!(identity(&c, "user.email").unwrap(), "e");
        assert_eq!(identity(&c, "missing").unwrap(), "s");
        assert_eq!(identity(&c, "").unwrap(), "s");
        assert!(identity(&c, "blank").is_err());
        assert!(identity(&json!({}), "").is_err());
        let t = hs256(b"k", &json!({"sub": "ann"}));
        assert_eq!(unverified_claims(&t).unwrap()["sub"], "ann");
    }

    #[test]
    fn claims_are_read_by_dotted_path() {
        let c = json!({"sub": "a", "user": {"id": 7}, "a.b": "flat", "pol": ["p1", "p2"]});
        assert_eq!(claim(&c, "sub").as_deref(), Some("a"));
        assert_eq!(claim(&c, "user.id").as_deref(), Some("7"));
        assert_eq!(claim(&c, "a.b").as_deref(), Some("flat"));
        assert_eq!(claim(&c, "user"), None);
        assert_eq!(claim(&c, "pol"), None);
    }

    #[test]
    fn sources_are_decoded_from_base64_or_taken_as_written() {
        assert_eq!(key_bytes(&STANDARD.encode("secret")), b"secret");
        assert_eq!(key_bytes("not base64!"), b"not base64!");
        assert_eq!(
            jwks_url("HTTPS://idp.example/jwks.json").as_deref(),
            Some("HTTPS://idp.example/jwks.json")
        );
        assert_eq!(
            jwks_url(&STANDARD.encode("http://127.0.0.1/jwks")).as_deref(),
            Some("http://127.0.0.1/jwks")
        );
        assert_eq!(jwks_url(&STANDARD.encode("secret")), None);
    }
}
