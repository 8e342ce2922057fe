//! JWT (CONTRACT §10): which algorithms an API's `jwt_signing_method`
//! allows, what `jwt_source` holds, verifying a token's signature with the
//! `jsonwebtoken` crate, the time claims with Tyk's skews, and reading a
//! claim by a dotted path. Finding or creating the session a token stands
//! for is the pipeline stage's job (`pipeline::auth::jwt`).
//!
//! `alg: none` and algorithm confusion are refused by construction: the
//! token's algorithm must belong to the API's family, and the key is read
//! as that family's key type (an RSA public key is never an HMAC secret).

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use quick_cache::sync::Cache;
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
    fn key(self, bytes: &[u8]) -> Option<DecodingKey> {
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

/// True when `jwt_source` names a JWKS URL (plain or base64).
pub fn is_jwks_url(source: &str) -> bool {
    let decoded = key_bytes(source);
    let text = String::from_utf8_lossy(&decoded);
    text.starts_with("http://") || text.starts_with("https://")
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

/// Verifies `token`'s signature with `key` (bytes of `family`'s key type)
/// and returns its claims. Time claims are `check_times`'s.
pub fn verify(token: &str, family: Family, key: &[u8]) -> Result<Value, JwtError> {
    let header = header(token, family)?;
    let key = family.key(key).ok_or(JwtError::Invalid)?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|_| JwtError::Invalid)
}

/// Tokens whose signature was verified, by a SHA-256 of the key and the
/// token: an RS256 check costs ~150 µs, a lookup ~1 µs. Only the signature
/// is remembered; the time claims are checked on every request, so an
/// expired token is refused whether cached or not, and a new key (a
/// reload, a key's new secret) never finds the old entries.
pub struct VerifiedTokens {
    cache: Cache<[u8; 32], Arc<Value>>,
}

impl VerifiedTokens {
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            cache: Cache::new(capacity.max(16)),
        }
    }

    /// `verify`, remembered.
    pub fn verify(&self, token: &str, family: Family, key: &[u8]) -> Result<Arc<Value>, JwtError> {
        let mut h = Sha256::new();
        h.update([family as u8]);
        h.update((key.len() as u64).to_be_bytes());
        h.update(key);
        h.update(token.as_bytes());
        let id: [u8; 32] = h.finalize().into();
        if let Some(claims) = self.cache.get(&id) {
            return Ok(claims);
        }
        let claims = Arc::new(verify(token, family, key)?);
        self.cache.insert(id, claims.clone());
        Ok(claims)
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

    #[test]
    fn hmac_tokens_verify_with_their_secret_only() {
        let t = hs256(b"secret", &json!({"sub": "ann"}));
        assert_eq!(verify(&t, Family::Hmac, b"secret").unwrap()["sub"], "ann");
        assert_eq!(verify(&t, Family::Hmac, b"other"), Err(JwtError::Invalid));
        assert_eq!(verify(&t, Family::Rsa, b"secret"), Err(JwtError::Method));
        assert_eq!(
            verify("not.a.jwt", Family::Hmac, b"secret"),
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
        assert_eq!(verify(&t, Family::Hmac, b""), Err(JwtError::Method));
    }

    #[test]
    fn an_rsa_public_key_is_never_an_hmac_secret() {
        let public = include_bytes!("../../tests/data/jwt/rsa-public.pem");
        // The classic confusion: HS256 signed with the public key's bytes.
        let t = hs256(public, &json!({"sub": "ann"}));
        assert_eq!(verify(&t, Family::Rsa, public), Err(JwtError::Method));
    }

    #[test]
    fn rsa_and_ecdsa_tokens_verify_with_their_public_keys() {
        let rsa = EncodingKey::from_rsa_pem(include_bytes!("../../tests/data/jwt/rsa-private.pem"))
            .unwrap();
        let t = encode(&Header::new(Algorithm::RS256), &json!({"sub": "r"}), &rsa).unwrap();
        let public = include_bytes!("../../tests/data/jwt/rsa-public.pem");
        assert!(verify(&t, Family::Rsa, public).is_ok());
        let other = include_bytes!("../../tests/data/jwt/rsa2-public.pem");
        assert_eq!(verify(&t, Family::Rsa, other), Err(JwtError::Invalid));
        let ec = EncodingKey::from_ec_pem(include_bytes!("../../tests/data/jwt/ec-private.pem"))
            .unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &json!({"sub": "e"}), &ec).unwrap();
        let public = include_bytes!("../../tests/data/jwt/ec-public.pem");
        assert!(verify(&t, Family::Ecdsa, public).is_ok());
    }

    #[test]
    fn a_cached_token_is_still_bound_to_its_key() {
        let v = VerifiedTokens::new(16);
        let t = hs256(b"secret", &json!({"sub": "ann"}));
        assert!(v.verify(&t, Family::Hmac, b"secret").is_ok());
        assert!(v.verify(&t, Family::Hmac, b"secret").is_ok());
        assert_eq!(v.verify(&t, Family::Hmac, b"other"), Err(JwtError::Invalid));
        assert_eq!(v.verify(&t, Family::Rsa, b"secret"), Err(JwtError::Method));
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
        assert!(is_jwks_url("https://idp.example/jwks.json"));
        assert!(is_jwks_url(&STANDARD.encode("http://127.0.0.1/jwks")));
        assert!(!is_jwks_url(&STANDARD.encode("secret")));
    }
}
