//! Basic auth (CONTRACT §10): reading `user:password` from the header as
//! Tyk does, hashing a password when a key is written
//! (`basic_auth_hash_key_function`, bcrypt by default), and checking one,
//! with verified bcrypt credentials remembered for `cache_ttl` so that the
//! ~50 ms bcrypt cost is paid once per user, not per request.
//!
//! The cache never holds a clear password, and a wrong password is never
//! remembered as good: an entry is made only after bcrypt said yes, and it
//! holds a SHA-256 of the password, compared in constant time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use quick_cache::sync::Cache;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::keyid::{HashAlg, hash_with};
use crate::session::BasicAuthData;

/// Tyk's `hash_type` for bcrypt.
pub const BCRYPT: &str = "bcrypt";
/// bcrypt's cost, as Tyk's (Go's `bcrypt.DefaultCost`).
const COST: u32 = 10;

/// What the header says.
#[derive(Debug, PartialEq, Eq)]
pub enum Credentials {
    Missing,
    /// 400 with this message.
    Malformed(&'static str),
    Given {
        user: String,
        password: String,
    },
}

/// `basic_auth.extract_from_body`: the user and password as the first
/// capture group of two regexes (Go's RE2 syntax, which `regex` shares),
/// compiled at load. Used only when the header gives no credentials.
#[derive(Clone, Debug)]
pub struct BodyCredentials {
    user: regex::bytes::Regex,
    password: regex::bytes::Regex,
}

impl BodyCredentials {
    /// Err names the field at fault.
    pub fn compile(user: &str, password: &str) -> Result<BodyCredentials, (&'static str, String)> {
        let one = |field: &'static str, pattern: &str| {
            if pattern.is_empty() {
                return Err((field, "is empty, but extract_from_body is true".to_string()));
            }
            regex::bytes::Regex::new(pattern).map_err(|e| (field, e.to_string()))
        };
        Ok(BodyCredentials {
            user: one("basic_auth.body_user_regexp", user)?,
            password: one("basic_auth.body_password_regexp", password)?,
        })
    }

    /// The user and password in `body`; Err is Tyk's 400 message.
    pub fn extract(&self, body: &[u8]) -> Result<(String, String), &'static str> {
        let group = |rx: &regex::bytes::Regex,
                     missing: &'static str,
                     no_group: &'static str|
         -> Result<String, &'static str> {
            let caps = rx.captures(body).ok_or(missing)?;
            let m = caps.get(1).ok_or(no_group)?;
            Ok(String::from_utf8_lossy(m.as_bytes()).into_owned())
        };
        let user = group(
            &self.user,
            "Body do not contain username",
            "username should be inside regexp match group",
        )?;
        let password = group(
            &self.password,
            "Body do not contain password",
            "password should be inside regexp match group",
        )?;
        Ok((user, password))
    }
}

/// Reads `<scheme> <base64(user:password)>` with Tyk's checks: exactly two
/// space-separated parts (the scheme word is not checked), standard
/// base64, exactly one `:` (a password holding `:` never works, as in Tyk).
pub fn read(value: Option<&str>) -> Credentials {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Credentials::Missing;
    };
    let parts: Vec<&str> = value.split(' ').collect();
    if parts.len() != 2 {
        return Credentials::Malformed(
            "Attempted access with malformed header, header not in basic auth format",
        );
    }
    let Ok(decoded) = STANDARD.decode(parts[1]) else {
        return Credentials::Malformed(
            "Attempted access with malformed header, auth data not encoded correctly",
        );
    };
    let text = String::from_utf8_lossy(&decoded);
    let values: Vec<&str> = text.split(':').collect();
    if values.len() != 2 {
        return Credentials::Malformed(
            "Attempted access with malformed header, values not in basic auth format",
        );
    }
    Credentials::Given {
        user: values[0].to_string(),
        password: values[1].to_string(),
    }
}

/// The stored form of a clear `password` under `function` (tyk.conf
/// `basic_auth_hash_key_function`, "" = bcrypt): the hash and its
/// `hash_type`.
pub fn hash_password(function: &str, password: &str) -> Result<BasicAuthData, String> {
    let (hash, kind) = match function {
        "" | BCRYPT => (
            bcrypt::hash(password, COST).map_err(|e| e.to_string())?,
            BCRYPT,
        ),
        other => match HashAlg::parse(other) {
            Some(alg) => (hash_with(alg, password.as_bytes()), alg.name()),
            None => return Err(format!("unknown basic_auth_hash_key_function {other:?}")),
        },
    };
    Ok(BasicAuthData {
        password: hash,
        hash_type: kind.to_string(),
    })
}

/// A bcrypt hash a password was checked against, and when that expires.
struct Good {
    digest: [u8; 32],
    until: Instant,
}

/// Verified bcrypt credentials, by stored hash.
pub struct Verified {
    cache: Cache<String, Arc<Good>>,
    /// One bcrypt at a time per stored hash: when a cached password
    /// expires under load, the concurrent checks of that user wait for the
    /// first instead of each paying ~50 ms (Tyk's singleflight).
    running: Cache<String, Arc<Mutex<()>>>,
    /// bcrypt checks run (for the metrics).
    pub bcrypt_runs: AtomicU64,
}

fn digest(password: &str) -> [u8; 32] {
    Sha256::digest(password.as_bytes()).into()
}

impl Verified {
    pub fn new(capacity: usize) -> Verified {
        Verified {
            cache: Cache::new(capacity.max(16)),
            running: Cache::new(capacity.max(16)),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// Whether `password` matches without any slow work: Some for every
    /// cheap hash type (an unknown one never matches) and for a bcrypt hash
    /// verified lately with this very password; None when only bcrypt can
    /// tell.
    pub fn quick_check(&self, data: &BasicAuthData, password: &str) -> Option<bool> {
        let same = |a: &[u8], b: &[u8]| bool::from(a.ct_eq(b));
        if data.password.is_empty() {
            // Not a basic-auth user (a token key has no password): never,
            // whatever was sent. Tyk would let an empty password in.
            return Some(false);
        }
        match data.hash_type.as_str() {
            "" => Some(same(data.password.as_bytes(), password.as_bytes())),
            BCRYPT => self.verified_lately(data, password).then_some(true),
            other => Some(HashAlg::parse(other).is_some_and(|alg| {
                same(
                    hash_with(alg, password.as_bytes()).as_bytes(),
                    data.password.as_bytes(),
                )
            })),
        }
    }

    fn verified_lately(&self, data: &BasicAuthData, password: &str) -> bool {
        self.cache.get(&data.password).is_some_and(|good| {
            bool::from(good.digest.ct_eq(&digest(password))) && Instant::now() < good.until
        })
    }

    /// Whether `password` matches `data`; a bcrypt success is remembered
    /// for `ttl` (None: not at all).
    pub fn check(&self, data: &BasicAuthData, password: &str, ttl: Option<Duration>) -> bool {
        if let Some(answer) = self.quick_check(data, password) {
            return answer;
        }
        let lock = self.running.get_or_insert_with(&data.password, || {
            Ok::<_, std::convert::Infallible>(Arc::new(Mutex::new(())))
        });
        let lock = lock.unwrap_or_else(|never| match never {});
        let _one_at_a_time = lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(answer) = self.quick_check(data, password) {
            return answer;
        }
        self.bcrypt_runs.fetch_add(1, Ordering::Relaxed);
        let ok = bcrypt::verify(password, &data.password).unwrap_or(false);
        if let (true, Some(ttl)) = (ok, ttl) {
            let good = Good {
                digest: digest(password),
                until: Instant::now() + ttl,
            };
            self.cache.insert(data.password.clone(), Arc::new(good));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn header_reading_follows_tyk() {
        assert_eq!(read(None), Credentials::Missing);
        assert_eq!(read(Some("")), Credentials::Missing);
        let given = |u: &str, p: &str| Credentials::Given {
            user: u.into(),
            password: p.into(),
        };
        assert_eq!(read(Some(&header("ann:pw"))), given("ann", "pw"));
        assert_eq!(read(Some(&header("ann:"))), given("ann", ""));
        assert!(
            matches!(read(Some("Basic")), Credentials::Malformed(m) if m.ends_with("header not in basic auth format"))
        );
        assert!(
            matches!(read(Some("Basic a b")), Credentials::Malformed(m) if m.ends_with("header not in basic auth format"))
        );
        assert!(
            matches!(read(Some("Basic !!!")), Credentials::Malformed(m) if m.ends_with("not encoded correctly"))
        );
        let colons = header("ann:p:w");
        assert!(
            matches!(read(Some(&colons)), Credentials::Malformed(m) if m.ends_with("values not in basic auth format"))
        );
    }

    #[test]
    fn bcrypt_success_is_cached_and_a_wrong_password_never_is() {
        let v = Verified::new(16);
        let data = BasicAuthData {
            password: bcrypt::hash("pw", 4).unwrap(),
            hash_type: BCRYPT.into(),
        };
        assert_eq!(v.quick_check(&data, "pw"), None);
        assert!(!v.check(&data, "nope", Some(Duration::from_secs(60))));
        assert_eq!(v.quick_check(&data, "nope"), None);
        assert!(v.check(&data, "pw", Some(Duration::from_secs(60))));
        assert_eq!(v.quick_check(&data, "pw"), Some(true));
        assert_eq!(
            v.quick_check(&data, "nope"),
            None,
            "a wrong password is never good from the cache"
        );
        assert!(!v.check(&data, "nope", Some(Duration::from_secs(60))));
        let uncached = Verified::new(16);
        assert!(uncached.check(&data, "pw", None));
        assert_eq!(uncached.quick_check(&data, "pw"), None);
    }

    #[test]
    fn concurrent_checks_of_one_user_run_bcrypt_once() {
        let v = std::sync::Arc::new(Verified::new(16));
        let data = BasicAuthData {
            password: bcrypt::hash("pw", 6).unwrap(),
            hash_type: BCRYPT.into(),
        };
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (v, data) = (v.clone(), data.clone());
                std::thread::spawn(move || v.check(&data, "pw", Some(Duration::from_secs(60))))
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
        assert_eq!(v.bcrypt_runs.load(Ordering::Relaxed), 1);
        assert_eq!(v.quick_check(&data, "pw"), Some(true));
    }

    #[test]
    fn cheap_hash_types_are_compared_directly() {
        let v = Verified::new(16);
        let plain = BasicAuthData {
            password: "pw".into(),
            hash_type: String::new(),
        };
        assert_eq!(v.quick_check(&plain, "pw"), Some(true));
        assert_eq!(v.quick_check(&plain, "px"), Some(false));
        let sha = hash_password("sha256", "pw").unwrap();
        assert_eq!(sha.hash_type, "sha256");
        assert!(v.check(&sha, "pw", None));
        assert!(!v.check(&sha, "px", None));
        let token_key = BasicAuthData::default();
        assert_eq!(v.quick_check(&token_key, ""), Some(false));
        let unknown = BasicAuthData {
            password: "pw".into(),
            hash_type: "rot13".into(),
        };
        assert_eq!(v.quick_check(&unknown, "pw"), Some(false));
        assert!(hash_password("rot13", "pw").is_err());
    }

    #[test]
    fn body_credentials_are_the_first_group_of_each_regex() {
        let b = BodyCredentials::compile(r"<user>(\w+)</user>", r"<pass>([^<]*)</pass>").unwrap();
        let body = b"<req><user>ann</user><pass>p:w d</pass></req>";
        assert_eq!(b.extract(body), Ok(("ann".into(), "p:w d".into())));
        assert_eq!(
            b.extract(b"<pass>x</pass>"),
            Err("Body do not contain username")
        );
        assert_eq!(
            b.extract(b"<user>ann</user>"),
            Err("Body do not contain password")
        );
        let ungrouped = BodyCredentials::compile(r"<user>\w+</user>", "(.)").unwrap();
        assert_eq!(
            ungrouped.extract(body),
            Err("username should be inside regexp match group")
        );
        assert_eq!(
            BodyCredentials::compile("", "x").unwrap_err().0,
            "basic_auth.body_user_regexp"
        );
        assert_eq!(
            BodyCredentials::compile("x", "(").unwrap_err().0,
            "basic_auth.body_password_regexp"
        );
    }
}
