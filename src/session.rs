//! A key's session: the JSON object Tyk stores per key (CONTRACT §2.1).
//!
//! Owns: the serde shape of a session and its access rights, tolerant
//! reading (ints or floats, `null` for anything, unknown fields kept and
//! echoed), and two pure questions about a session: is it expired, and which
//! rate/quota limits apply to an API.
//!
//! Leaves out: key ids and hashing (`keyid`), storing sessions, applying
//! policies, and the rate-limit/quota arithmetic itself. Output always
//! writes every named field (CONTRACT "Decision: write all fields").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A key's session as stored and as served by `GET /tyk/keys/{id}`.
///
/// Field names are Tyk's JSON names. Any field not named here lands in
/// `extra` and is written back unchanged (e.g. `smoothing`, `post_expiry_*`,
/// `mtls_static_certificate_bindings`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Session {
    #[serde(deserialize_with = "lenient::int")]
    pub last_check: i64,
    #[serde(with = "lenient::float")]
    pub allowance: f64,
    #[serde(with = "lenient::float")]
    pub rate: f64,
    #[serde(with = "lenient::float")]
    pub per: f64,
    #[serde(with = "lenient::float")]
    pub throttle_interval: f64,
    #[serde(deserialize_with = "lenient::int")]
    pub throttle_retry_limit: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub max_query_depth: i64,
    /// RFC 3339 create time; "" until the gateway sets it.
    #[serde(deserialize_with = "lenient::or_default")]
    pub date_created: String,
    /// Unix seconds; >= 1 means expired after it, <= 0 never.
    #[serde(deserialize_with = "lenient::int")]
    pub expires: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_max: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_renews: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_remaining: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_renewal_rate: i64,
    /// API id -> access; empty means a master key.
    #[serde(deserialize_with = "lenient::or_default")]
    pub access_rights: BTreeMap<String, AccessDefinition>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub org_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub oauth_client_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub oauth_keys: BTreeMap<String, String>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub certificate: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub basic_auth_data: BasicAuthData,
    #[serde(deserialize_with = "lenient::or_default")]
    pub jwt_data: JwtData,
    #[serde(deserialize_with = "lenient::or_default")]
    pub hmac_enabled: bool,
    #[serde(deserialize_with = "lenient::or_default")]
    pub enable_http_signature_validation: bool,
    #[serde(deserialize_with = "lenient::or_default")]
    pub hmac_string: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub rsa_certificate_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub is_inactive: bool,
    /// Legacy single policy; `apply_policies` is the current form.
    #[serde(deserialize_with = "lenient::or_default")]
    pub apply_policy_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub apply_policies: Vec<String>,
    #[serde(deserialize_with = "lenient::int")]
    pub data_expires: i64,
    #[serde(deserialize_with = "lenient::or_default")]
    pub monitor: Monitor,
    #[serde(deserialize_with = "lenient::or_default")]
    pub enable_detail_recording: bool,
    #[serde(deserialize_with = "lenient::or_default")]
    pub enable_detailed_recording: bool,
    #[serde(deserialize_with = "lenient::or_default")]
    pub meta_data: Map<String, Value>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub alias: String,
    /// Unix seconds as a string; a number is accepted and stored as text.
    #[serde(deserialize_with = "lenient::text")]
    pub last_updated: String,
    #[serde(deserialize_with = "lenient::int")]
    pub id_extractor_deadline: i64,
    /// Store TTL in seconds; 0 = forever.
    #[serde(deserialize_with = "lenient::int")]
    pub session_lifetime: i64,
    /// Every other field, stored and echoed.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One API in a session's `access_rights`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccessDefinition {
    #[serde(deserialize_with = "lenient::or_default")]
    pub api_name: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub api_id: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub versions: Vec<String>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub allowed_urls: Vec<AccessSpec>,
    /// Per-API limit; written only when present. All-zero counts as absent
    /// (see [`Session::limit_for`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<ApiLimit>,
    /// Set by the gateway when policies are applied.
    #[serde(deserialize_with = "lenient::or_default")]
    pub allowance_scope: String,
    /// Fields we only store and echo (`endpoints`, GraphQL/MCP fields, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An `allowed_urls` entry: a URL regex and the methods allowed on it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct AccessSpec {
    #[serde(deserialize_with = "lenient::or_default")]
    pub url: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub methods: Vec<String>,
}

/// An access definition's `limit` object.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ApiLimit {
    #[serde(with = "lenient::float")]
    pub rate: f64,
    #[serde(with = "lenient::float")]
    pub per: f64,
    #[serde(with = "lenient::float")]
    pub throttle_interval: f64,
    #[serde(deserialize_with = "lenient::int")]
    pub throttle_retry_limit: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub max_query_depth: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_max: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_renews: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_remaining: i64,
    #[serde(deserialize_with = "lenient::int")]
    pub quota_renewal_rate: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<Value>,
    /// Fields we only store and echo.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `basic_auth_data`: the user's password (or its hash) and the hash type.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BasicAuthData {
    #[serde(deserialize_with = "lenient::or_default")]
    pub password: String,
    #[serde(deserialize_with = "lenient::or_default")]
    pub hash_type: String,
}

/// `jwt_data`: the key's own JWT secret.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct JwtData {
    #[serde(deserialize_with = "lenient::or_default")]
    pub secret: String,
}

/// `monitor`: quota trigger percentages, stored and echoed only. Typed so
/// that a default session writes `{"trigger_limits":[]}` rather than `null`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Monitor {
    #[serde(deserialize_with = "lenient::or_default")]
    pub trigger_limits: Vec<f64>,
}

/// The rate and quota settings that apply to one API for one session.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limit {
    pub rate: f64,
    pub per: f64,
    pub throttle_interval: f64,
    pub throttle_retry_limit: i64,
    pub quota_max: i64,
    pub quota_renewal_rate: i64,
    pub quota_remaining: i64,
    pub quota_renews: i64,
    /// True when these come from the API's own `limit`, not the session root.
    pub per_api: bool,
}

impl Session {
    /// True when `expires` is set (>= 1) and `now_unix` is past it.
    pub fn is_expired(&self, now_unix: i64) -> bool {
        self.expires >= 1 && now_unix > self.expires
    }

    /// The API's own `limit` if it has a non-empty one, else the root fields.
    pub fn limit_for(&self, api_id: &str) -> Limit {
        let own = self
            .access_rights
            .get(api_id)
            .and_then(|a| a.limit.as_ref());
        match own {
            Some(limit) if !limit.is_empty() => limit.to_limit(),
            _ => self.root_limit(),
        }
    }

    fn root_limit(&self) -> Limit {
        Limit {
            rate: self.rate,
            per: self.per,
            throttle_interval: self.throttle_interval,
            throttle_retry_limit: self.throttle_retry_limit,
            quota_max: self.quota_max,
            quota_renewal_rate: self.quota_renewal_rate,
            quota_remaining: self.quota_remaining,
            quota_renews: self.quota_renews,
            per_api: false,
        }
    }
}

impl ApiLimit {
    /// All numeric fields zero: Tyk treats such a limit as absent.
    pub fn is_empty(&self) -> bool {
        let floats = [self.rate, self.per, self.throttle_interval];
        let ints = [
            self.throttle_retry_limit,
            self.max_query_depth,
            self.quota_max,
            self.quota_renews,
            self.quota_remaining,
            self.quota_renewal_rate,
        ];
        floats.iter().all(|&f| f == 0.0) && ints.iter().all(|&i| i == 0)
    }

    fn to_limit(&self) -> Limit {
        Limit {
            rate: self.rate,
            per: self.per,
            throttle_interval: self.throttle_interval,
            throttle_retry_limit: self.throttle_retry_limit,
            quota_max: self.quota_max,
            quota_renewal_rate: self.quota_renewal_rate,
            quota_remaining: self.quota_remaining,
            quota_renews: self.quota_renews,
            per_api: true,
        }
    }
}

/// Tolerant serde helpers: Tyk clients send ints or floats interchangeably
/// and `null` for any field.
mod lenient {
    use std::fmt;

    use serde::Deserialize;
    use serde::de::{self, Deserializer, Unexpected, Visitor};

    /// `null` becomes the type's default.
    pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    /// An f64 field: read from any JSON number (or `null` = 0); written
    /// as an integer when it has no fraction, as Go's encoding/json does
    /// (`1000`, not `1000.0`).
    pub mod float {
        use serde::{Deserializer, Serializer};

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            super::or_default(d)
        }

        pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
            match super::whole(*v) {
                Some(i) => s.serialize_i64(i),
                None => s.serialize_f64(*v),
            }
        }
    }

    /// An integer, a float with no fraction, or `null` (= 0).
    pub fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        d.deserialize_any(IntVisitor)
    }

    /// A string, a number (stored as its text), or `null` (= "").
    pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        d.deserialize_any(TextVisitor)
    }

    /// `v` as i64 when it has no fraction and fits.
    fn whole(v: f64) -> Option<i64> {
        // 2^63: i64's range is [-2^63, 2^63).
        const BOUND: f64 = 9_223_372_036_854_775_808.0;
        let fits = v.fract() == 0.0 && (-BOUND..BOUND).contains(&v);
        // Checked just above: integral and in range, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        fits.then_some(v as i64)
    }

    struct IntVisitor;

    impl<'de> Visitor<'de> for IntVisitor {
        type Value = i64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer (or a float with no fraction, or null)")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            whole(v).ok_or_else(|| E::invalid_value(Unexpected::Float(v), &self))
        }

        fn visit_unit<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }

        fn visit_none<E: de::Error>(self) -> Result<i64, E> {
            Ok(0)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<i64, D::Error> {
            d.deserialize_any(self)
        }
    }

    struct TextVisitor;

    impl<'de> Visitor<'de> for TextVisitor {
        type Value = String;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a string, a number or null")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }

        /// Rust's Display already writes `1449051461.0` as `1449051461`.
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }

        fn visit_unit<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<String, E> {
            Ok(String::new())
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_any(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WALKTHROUGH: &str = r#"{"allowance":1000,"rate":1000,"per":1,"expires":-1,"quota_max":-1,"org_id":"1","quota_renews":1449051461,"quota_remaining":-1,"quota_renewal_rate":60,"access_rights":{"k":{"api_id":"k","api_name":"n","versions":["Default"]}},"meta_data":{}}"#;

    /// Every field CONTRACT §2.1 names, in Tyk's order.
    const NAMED_FIELDS: &str = "last_check allowance rate per throttle_interval throttle_retry_limit \
        max_query_depth date_created expires quota_max quota_renews quota_remaining \
        quota_renewal_rate access_rights org_id oauth_client_id oauth_keys certificate \
        basic_auth_data jwt_data hmac_enabled enable_http_signature_validation \
        hmac_string rsa_certificate_id is_inactive apply_policy_id apply_policies \
        data_expires monitor enable_detail_recording enable_detailed_recording meta_data \
        tags alias last_updated id_extractor_deadline session_lifetime";

    fn parse(json: &str) -> Session {
        serde_json::from_str(json).unwrap()
    }

    fn with_limit(limit: ApiLimit) -> Session {
        let access = AccessDefinition {
            api_id: "a1".into(),
            limit: Some(limit),
            ..AccessDefinition::default()
        };
        Session {
            rate: 10.0,
            per: 60.0,
            quota_max: 100,
            access_rights: BTreeMap::from([("a1".to_owned(), access)]),
            ..Session::default()
        }
    }

    #[test]
    fn walkthrough_body_parses() {
        let s = parse(WALKTHROUGH);
        assert_eq!(s.rate, 1000.0);
        assert_eq!(s.per, 1.0);
        assert_eq!(s.expires, -1);
        assert_eq!(s.quota_renews, 1_449_051_461);
        assert_eq!(s.org_id, "1");
        assert_eq!(s.access_rights["k"].versions, ["Default"]);
        assert!(s.extra.is_empty());
    }

    #[test]
    fn nulls_become_defaults() {
        let s = parse(
            r#"{"apply_policies":null,"meta_data":null,"tags":null,"alias":null,
                "access_rights":null,"rate":null,"expires":null,"last_updated":null,
                "basic_auth_data":null,"monitor":null,"hmac_enabled":null}"#,
        );
        assert_eq!(s, Session::default());
    }

    #[test]
    fn nulls_inside_access_rights_become_defaults() {
        let s = parse(
            r#"{"access_rights":{"a":{"versions":null,"limit":null,"allowed_urls":[{"url":"/x","methods":null}]}}}"#,
        );
        let a = &s.access_rights["a"];
        assert!(a.versions.is_empty() && a.limit.is_none());
        assert!(a.allowed_urls[0].methods.is_empty());
    }

    #[test]
    fn integral_floats_accepted_for_ints() {
        let s = parse(
            r#"{"expires":0.0,"quota_max":5.0,"access_rights":{"a":{"limit":{"quota_max":3.0}}}}"#,
        );
        assert_eq!((s.expires, s.quota_max), (0, 5));
        assert_eq!(s.access_rights["a"].limit.as_ref().unwrap().quota_max, 3);
    }

    #[test]
    fn fractional_int_is_rejected() {
        let err = serde_json::from_str::<Session>(r#"{"expires":1.5}"#).unwrap_err();
        assert!(err.to_string().contains("expected an integer"), "{err}");
    }

    #[test]
    fn float_rate_and_per_accepted() {
        let s = parse(r#"{"rate":2.5,"per":0.5}"#);
        assert_eq!((s.rate, s.per), (2.5, 0.5));
    }

    #[test]
    fn last_updated_accepts_string_or_number() {
        assert_eq!(
            parse(r#"{"last_updated":"1700000000"}"#).last_updated,
            "1700000000"
        );
        assert_eq!(
            parse(r#"{"last_updated":1700000000}"#).last_updated,
            "1700000000"
        );
        assert_eq!(
            parse(r#"{"last_updated":1700000000.0}"#).last_updated,
            "1700000000"
        );
    }

    #[test]
    fn round_trip_keeps_unknown_fields() {
        let input = json!({
            "rate": 5, "smoothing": {"enabled": true},
            "post_expiry_action": "delete",
            "access_rights": {"a": {"api_id": "a", "endpoints": [{"path": "/x"}],
                "limit": {"rate": 1, "set_by": "p1"}}}
        });
        let s: Session = serde_json::from_value(input).unwrap();
        let out = serde_json::to_value(&s).unwrap();
        assert_eq!(out["smoothing"], json!({"enabled": true}));
        assert_eq!(out["post_expiry_action"], "delete");
        assert_eq!(
            out["access_rights"]["a"]["endpoints"],
            json!([{"path": "/x"}])
        );
        assert_eq!(out["access_rights"]["a"]["limit"]["set_by"], "p1");
        assert_eq!(serde_json::from_value::<Session>(out).unwrap(), s);
    }

    #[test]
    fn output_contains_every_named_field() {
        let out = serde_json::to_value(Session::default()).unwrap();
        let obj = out.as_object().unwrap();
        let names: Vec<&str> = NAMED_FIELDS.split_whitespace().collect();
        for name in &names {
            assert!(obj.contains_key(*name), "missing {name}");
        }
        assert_eq!(obj.len(), names.len());
        assert_eq!(out["monitor"], json!({"trigger_limits": []}));
    }

    #[test]
    fn integral_floats_written_as_ints() {
        let out = serde_json::to_string(&parse(WALKTHROUGH)).unwrap();
        assert!(out.contains(r#""rate":1000,"#), "{out}");
        assert!(out.contains(r#""per":1,"#), "{out}");
        let half = serde_json::to_string(&parse(r#"{"per":0.5}"#)).unwrap();
        assert!(half.contains(r#""per":0.5,"#), "{half}");
    }

    #[test]
    fn limit_written_only_when_present() {
        let s = parse(WALKTHROUGH);
        let out = serde_json::to_value(&s).unwrap();
        assert!(out["access_rights"]["k"].get("limit").is_none());
        let limited = serde_json::to_value(with_limit(ApiLimit::default())).unwrap();
        assert!(limited["access_rights"]["a1"]["limit"].is_object());
    }

    #[test]
    fn is_expired_edges() {
        let at = |expires| Session {
            expires,
            ..Session::default()
        };
        assert!(!at(-1).is_expired(i64::MAX));
        assert!(!at(0).is_expired(i64::MAX));
        assert!(at(1).is_expired(2));
        assert!(!at(1).is_expired(1));
        assert!(at(1_000).is_expired(1_001), "past");
        assert!(!at(2_000).is_expired(1_001), "future");
    }

    #[test]
    fn limit_for_uses_root_without_per_api_limit() {
        let s = with_limit(ApiLimit::default());
        let l = s.limit_for("a1");
        assert!(!l.per_api);
        assert_eq!((l.rate, l.per, l.quota_max), (10.0, 60.0, 100));
        assert!(!s.limit_for("unknown").per_api);
    }

    #[test]
    fn limit_for_uses_non_zero_per_api_limit() {
        let s = with_limit(ApiLimit {
            rate: 3.0,
            per: 1.0,
            quota_max: 7,
            ..ApiLimit::default()
        });
        let l = s.limit_for("a1");
        assert!(l.per_api);
        assert_eq!((l.rate, l.per, l.quota_max), (3.0, 1.0, 7));
    }

    #[test]
    fn any_non_zero_field_makes_limit_non_empty() {
        assert!(ApiLimit::default().is_empty());
        let quota_only = ApiLimit {
            quota_renewal_rate: 60,
            ..ApiLimit::default()
        };
        assert!(!quota_only.is_empty());
    }
}
