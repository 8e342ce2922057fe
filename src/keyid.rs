//! Key ids and key hashing (CONTRACT §2.2–2.3).
//!
//! Owns: building a key id from org + name (`token`), reading the org and the
//! hash algorithm back out of one (`token_org`, `hash_str`), the four hash
//! algorithms Tyk names (including its bug-compatible murmur32), and random
//! ids.
//!
//! Leaves out: which store key a hash is filed under (`apikey-…`,
//! `quota-…`), when hashing is switched on (`hash_keys`), and resolving an
//! admin path id to a stored key — callers decide those.

use std::io::Cursor;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

/// Hash algorithm named in tyk.conf `hash_key_function` / a token's `h` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    /// Tyk's fork of MurmurHash3 x86_32 (block loop only); 8 hex chars.
    Murmur32,
    /// h1 of MurmurHash3 x64_128; 16 hex chars.
    Murmur64,
    /// h1 then h2 of MurmurHash3 x64_128; 32 hex chars.
    Murmur128,
    /// SHA-256; 64 hex chars.
    Sha256,
}

impl HashAlg {
    /// "murmur32" | "murmur64" | "murmur128" | "sha256" -> Some; anything else None.
    pub fn parse(name: &str) -> Option<HashAlg> {
        match name {
            "murmur32" => Some(HashAlg::Murmur32),
            "murmur64" => Some(HashAlg::Murmur64),
            "murmur128" => Some(HashAlg::Murmur128),
            "sha256" => Some(HashAlg::Sha256),
            _ => None,
        }
    }

    /// The name Tyk uses in config and in a token's `h` field.
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Murmur32 => "murmur32",
            HashAlg::Murmur64 => "murmur64",
            HashAlg::Murmur128 => "murmur128",
            HashAlg::Sha256 => "sha256",
        }
    }
}

/// Length of a Mongo ObjectId in hex: the org prefix of legacy key ids.
const LEGACY_ORG_LEN: usize = 24;

/// Builds a key id (CONTRACT §2.2).
///
/// A leading `org` is dropped from `id`; an id left empty becomes a random
/// 32-hex id. With `alg_name` empty the id is the legacy `org + id`;
/// otherwise it is padded standard base64 of
/// `{"org":"<org>","id":"<id>","h":"<alg>"}`, where an unknown non-empty
/// algorithm name is written as `murmur64`.
pub fn token(org: &str, id: &str, alg_name: &str) -> String {
    new_token(org, id, alg_name).key
}

/// A key id just built, with what building it tells without decoding it.
pub struct Token {
    pub key: String,
    /// The algorithm `hash_str` finds in `key`; None when only decoding
    /// tells (a legacy id, or parts holding text JSON escapes).
    pub alg: Option<HashAlg>,
    /// Its id part was drawn at random (no key was ever stored under it).
    pub random: bool,
}

impl Token {
    /// `hash_str(&self.key)`, without decoding the key when its algorithm
    /// is known.
    pub fn hash(&self) -> String {
        match self.alg {
            Some(alg) => hash_with(alg, self.key.as_bytes()),
            None => hash_str(&self.key),
        }
    }
}

/// `token`, and what it knows about the key it built.
pub fn new_token(org: &str, id: &str, alg_name: &str) -> Token {
    let id = id.strip_prefix(org).unwrap_or(id);
    let random = id.is_empty();
    let id = if random {
        random_hex_id()
    } else {
        id.to_owned()
    };
    if alg_name.is_empty() {
        return Token {
            key: format!("{org}{id}"),
            alg: None,
            random,
        };
    }
    let alg = HashAlg::parse(alg_name).unwrap_or(HashAlg::Murmur64);
    // Literal text, no escaping: this is the exact shape Tyk emits, and
    // parts that JSON would escape may make it read otherwise.
    let name = alg.name();
    let json = format!(r#"{{"org":"{org}","id":"{id}","h":"{name}"}}"#);
    Token {
        key: STANDARD.encode(json),
        alg: (plain(org) && plain(&id)).then_some(alg),
        random,
    }
}

/// Whether `s` reads back unchanged as a JSON string's text.
fn plain(s: &str) -> bool {
    !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
}

/// TokenOrg (CONTRACT §2.2): the org a key id was built for, or "".
///
/// A base64-JSON token gives its string `org`; otherwise a key longer than
/// 24 chars whose first 24 chars are hex gives those 24 chars.
pub fn token_org(key: &str) -> String {
    if let Some(org) = token_field(key, "org") {
        return org;
    }
    match key.get(..LEGACY_ORG_LEN) {
        Some(head) if key.len() > LEGACY_ORG_LEN && is_hex(head) => head.to_owned(),
        _ => String::new(),
    }
}

/// HashStr (CONTRACT §2.3): hashes a key id with the algorithm named in its
/// embedded `h` field, else murmur32. Lowercase hex.
pub fn hash_str(key: &str) -> String {
    let alg = token_field(key, "h")
        .and_then(|name| HashAlg::parse(&name))
        .unwrap_or(HashAlg::Murmur32);
    hash_with(alg, key.as_bytes())
}

/// Hashes `data` with one algorithm; lowercase hex.
pub fn hash_with(alg: HashAlg, data: &[u8]) -> String {
    match alg {
        HashAlg::Murmur32 => format!("{:08x}", tyk_murmur32(data)),
        HashAlg::Murmur64 => to_hex(&murmur_x64_128(data)[..8]),
        HashAlg::Murmur128 => to_hex(&murmur_x64_128(data)),
        HashAlg::Sha256 => to_hex(&Sha256::digest(data)),
    }
}

/// 32 lowercase hex random chars in UUIDv4 shape (version and variant bits
/// set); used for random key ids and api ids.
///
/// # Panics
/// Only if the OS random source fails, which we treat as fatal.
pub fn random_hex_id() -> String {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).expect("OS random source unavailable");
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    to_hex(&bytes)
}

/// A string field of a base64-JSON token (`ey…`), if `key` is one.
fn token_field(key: &str, field: &str) -> Option<String> {
    if !key.starts_with("ey") {
        return None;
    }
    let raw = STANDARD.decode(key).ok()?;
    let json: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    json.get(field)?.as_str().map(str::to_owned)
}

/// Tyk's murmur32: the x86_32 block loop over whole little-endian 4-byte
/// blocks, seed 0. Tail bytes, the length mix and the final avalanche are
/// skipped on purpose, so keys differing in 1–3 trailing bytes collide.
fn tyk_murmur32(data: &[u8]) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    data.chunks_exact(4).fold(0u32, |h, block| {
        let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        let k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64)
    })
}

/// MurmurHash3 x64_128, seed 0, as 16 bytes: h1 big-endian, then h2.
fn murmur_x64_128(data: &[u8]) -> [u8; 16] {
    let hash = murmur3::murmur3_x64_128(&mut Cursor::new(data), 0)
        .expect("reading from an in-memory cursor cannot fail");
    // The crate packs h1 in the low 64 bits and h2 in the high 64 bits.
    let be = hash.to_be_bytes();
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&be[8..]);
    out[8..].copy_from_slice(&be[..8]);
    out
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_vectors_for_hello() {
        assert_eq!(hash_with(HashAlg::Murmur32, b"hello"), "ef13efcd");
        assert_eq!(hash_with(HashAlg::Murmur64, b"hello"), "cbd8a7b341bd9b02");
        assert_eq!(
            hash_with(HashAlg::Murmur128, b"hello"),
            "cbd8a7b341bd9b025b1e906a48ae1d19"
        );
    }

    #[test]
    fn murmur32_ignores_trailing_partial_block() {
        assert_eq!(hash_with(HashAlg::Murmur32, b"1mysecretkey"), "9543002d");
        assert_eq!(hash_with(HashAlg::Murmur32, b"1mysecretkey123"), "9543002d");
    }

    #[test]
    fn murmur32_of_short_input_is_zero_state() {
        assert_eq!(hash_with(HashAlg::Murmur32, b""), "00000000");
        assert_eq!(hash_with(HashAlg::Murmur32, b"abc"), "00000000");
    }

    #[test]
    fn sha256_of_hello() {
        assert_eq!(
            hash_with(HashAlg::Sha256, b"hello"),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
    }

    #[test]
    fn alg_names_round_trip() {
        for alg in [
            HashAlg::Murmur32,
            HashAlg::Murmur64,
            HashAlg::Murmur128,
            HashAlg::Sha256,
        ] {
            assert_eq!(HashAlg::parse(alg.name()), Some(alg));
        }
        assert_eq!(HashAlg::parse("md5"), None);
        assert_eq!(HashAlg::parse(""), None);
    }

    #[test]
    fn token_murmur64_matches_contract() {
        assert_eq!(
            token("default", "mykey", "murmur64"),
            "eyJvcmciOiJkZWZhdWx0IiwiaWQiOiJteWtleSIsImgiOiJtdXJtdXI2NCJ9"
        );
    }

    #[test]
    fn token_unknown_alg_writes_murmur64() {
        assert_eq!(
            token("default", "mykey", "md5"),
            token("default", "mykey", "murmur64")
        );
    }

    #[test]
    fn token_legacy_is_org_plus_id() {
        assert_eq!(token("org1", "abc", ""), "org1abc");
        assert_eq!(token("org1", "org1abc", ""), "org1abc");
    }

    #[test]
    fn token_drops_leading_org_in_json_form() {
        let t = token("org1", "org1abc", "sha256");
        let json = String::from_utf8(STANDARD.decode(t).unwrap()).unwrap();
        assert_eq!(json, r#"{"org":"org1","id":"abc","h":"sha256"}"#);
    }

    #[test]
    fn token_empty_id_is_random() {
        let t = token("org1", "", "");
        assert_eq!(t.len(), 4 + 32);
        assert!(t.starts_with("org1"));
        assert_ne!(token("org1", "", ""), t);
    }

    #[test]
    fn random_hex_id_has_uuid_v4_shape() {
        let id = random_hex_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn token_org_of_base64_token() {
        assert_eq!(token_org(&token("default", "mykey", "murmur64")), "default");
    }

    #[test]
    fn token_org_of_legacy_hex_key() {
        let org = "5e9d9544a1dcd60001d0ed20";
        assert_eq!(token_org(&format!("{org}abc")), org);
        assert_eq!(token_org(org), "", "exactly 24 chars is not longer");
    }

    #[test]
    fn token_org_of_other_keys_is_empty() {
        assert_eq!(token_org("abc"), "");
        assert_eq!(token_org("zz9d9544a1dcd60001d0ed20abc"), "");
        assert_eq!(token_org("eyNotBase64!"), "");
    }

    #[test]
    fn hash_str_uses_embedded_alg() {
        let key = token("default", "mykey", "murmur64");
        let h = hash_str(&key);
        assert_eq!(h.len(), 16);
        assert_eq!(h, hash_with(HashAlg::Murmur64, key.as_bytes()));
        let sha = token("default", "mykey", "sha256");
        assert_eq!(hash_str(&sha).len(), 64);
    }

    #[test]
    fn a_new_tokens_hash_is_hash_str_of_it() {
        for (org, id, alg) in [
            ("default", "mykey", "murmur64"),
            ("default", "", "sha256"),
            ("org1", "org1abc", "murmur128"),
            ("o", "k", "md5"),
            ("o", "k", "murmur32"),
            ("org1", "abc", ""),
            // Text JSON escapes: the algorithm is read back by decoding.
            ("o\",\"h\":\"sha256", "k", "murmur64"),
            ("o", "k\\", "murmur64"),
            ("o", "k\n", "sha256"),
        ] {
            let t = new_token(org, id, alg);
            assert_eq!(t.hash(), hash_str(&t.key), "{org:?} {id:?} {alg:?}");
            if !t.random {
                assert_eq!(t.key, token(org, id, alg));
            }
        }
        assert!(new_token("o", "", "murmur64").random);
        assert!(new_token("o", "o", "murmur64").random);
        assert!(!new_token("o", "k", "murmur64").random);
        assert_eq!(new_token("o", "k", "").alg, None);
        assert_eq!(new_token("o\"", "k", "sha256").alg, None);
    }

    #[test]
    fn hex_is_lower_case_two_digits_a_byte() {
        assert_eq!(to_hex(&[0, 0x0f, 0xa0, 0xff]), "000fa0ff");
        assert_eq!(to_hex(&[]), "");
    }

    #[test]
    fn hash_str_defaults_to_murmur32() {
        assert_eq!(hash_str("1mysecretkey"), "9543002d");
        assert_eq!(hash_str("org1abc").len(), 8);
    }
}
