//! `ApiDefinition` as read from `apps/*.json`: serde structs with Tyk's
//! field names; unknown fields are ignored, missing ones are zero.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::http::path::RawPathRules;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct AuthConfig {
    pub auth_header_name: String,
    pub use_param: bool,
    pub param_name: String,
    pub use_cookie: bool,
    pub cookie_name: String,
    pub disable_header: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VersionDefinition {
    pub location: String,
    pub key: String,
    pub strip_path: bool,
    pub strip_versioning_data: bool,
    pub fallback_to_default: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VersionInfo {
    pub name: String,
    pub expires: String,
    pub use_extended_paths: bool,
    /// Legacy lists of path patterns, used when `use_extended_paths` is off.
    pub paths: LegacyPaths,
    pub extended_paths: ExtendedPaths,
    pub ignore_endpoint_case: bool,
    pub global_headers: BTreeMap<String, String>,
    pub global_headers_remove: Vec<String>,
    pub global_headers_disabled: bool,
    pub global_response_headers: BTreeMap<String, String>,
    pub global_response_headers_remove: Vec<String>,
    pub global_response_headers_disabled: bool,
    pub global_size_limit: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct LegacyPaths {
    pub ignored: Vec<String>,
    pub white_list: Vec<String>,
    pub black_list: Vec<String>,
}

/// `extended_paths`: per-endpoint rules, each naming a path pattern and a
/// method.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ExtendedPaths {
    pub ignored: Vec<EndpointMeta>,
    pub white_list: Vec<EndpointMeta>,
    pub black_list: Vec<EndpointMeta>,
    pub mock_response: Vec<MockResponseMeta>,
    pub transform_headers: Vec<HeaderTransformMeta>,
    pub transform_response_headers: Vec<HeaderTransformMeta>,
    pub url_rewrites: Vec<UrlRewriteMeta>,
    pub hard_timeouts: Vec<HardTimeoutMeta>,
    pub size_limits: Vec<SizeLimitMeta>,
    pub method_transforms: Vec<MethodTransformMeta>,
    pub circuit_breakers: Vec<CircuitBreakerMeta>,
    pub rate_limit: Vec<RateLimitMeta>,
    /// Every other `extended_paths` list (`rate_limit`, `internal`,
    /// `cache`, ...): not built; see `Endpoints::compile`.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// An endpoint's own API-wide rate limit (not per key).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimitMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    pub rate: f64,
    pub per: f64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CircuitBreakerMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    /// 0..1: the share of failed requests that trips the breaker.
    pub threshold_percent: f64,
    pub samples: i64,
    /// Seconds.
    pub return_to_service_after: i64,
    pub disable_half_open_state: bool,
}

/// An `ignored`, `white_list` or `black_list` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct EndpointMeta {
    pub path: String,
    pub method: String,
    pub ignore_case: bool,
    pub disabled: bool,
    /// Deprecated, but what older definitions use: when present (even
    /// empty) it replaces `method`.
    pub method_actions: Option<BTreeMap<String, MethodAction>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MethodAction {
    /// `no_action` or `reply`.
    pub action: String,
    pub code: i64,
    pub data: String,
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MockResponseMeta {
    pub path: String,
    pub method: String,
    pub ignore_case: bool,
    pub disabled: bool,
    pub code: i64,
    pub body: String,
    pub headers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct HeaderTransformMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    pub delete_headers: Vec<String>,
    pub add_headers: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct UrlRewriteMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    pub match_pattern: String,
    pub rewrite_to: String,
    pub triggers: Vec<RoutingTrigger>,
}

/// A `url_rewrites` trigger: when its options match (`on`: `any` or
/// `all`), its `rewrite_to` replaces the entry's.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct RoutingTrigger {
    pub on: String,
    pub options: TriggerOptions,
    pub rewrite_to: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TriggerOptions {
    pub header_matches: BTreeMap<String, StringRegexMap>,
    pub query_val_matches: BTreeMap<String, StringRegexMap>,
    pub path_part_matches: BTreeMap<String, StringRegexMap>,
    pub session_meta_matches: BTreeMap<String, StringRegexMap>,
    pub request_context_matches: BTreeMap<String, StringRegexMap>,
    pub payload_matches: StringRegexMap,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct StringRegexMap {
    pub match_rx: String,
    pub reverse: bool,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct HardTimeoutMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    /// Seconds.
    pub timeout: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct SizeLimitMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    pub size_limit: i64,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MethodTransformMeta {
    pub path: String,
    pub method: String,
    pub disabled: bool,
    pub to_method: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct VersionData {
    pub not_versioned: bool,
    pub default_version: String,
    pub versions: BTreeMap<String, VersionInfo>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ProxyConfig {
    pub listen_path: String,
    pub target_url: String,
    pub strip_listen_path: bool,
    pub preserve_host_header: bool,
    pub disable_strip_slash: bool,
    pub enable_load_balancing: bool,
    pub target_list: Vec<String>,
    pub transport: TransportMeta,
}

/// `proxy.transport`: TLS to the upstream, over the gateway's settings.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct TransportMeta {
    pub ssl_insecure_skip_verify: bool,
    pub ssl_ciphers: Vec<String>,
    pub ssl_min_version: i64,
    pub ssl_max_version: i64,
    pub ssl_force_common_name_check: bool,
    pub proxy_url: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct GlobalRateLimit {
    pub rate: f64,
    pub per: f64,
    pub disabled: bool,
}

/// `basic_auth`: how verified credentials are cached, and body extraction.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BasicAuthMeta {
    pub disable_caching: bool,
    /// Seconds a verified bcrypt password is remembered; 0 = 60.
    pub cache_ttl: i64,
    pub extract_from_body: bool,
    pub body_user_regexp: String,
    pub body_password_regexp: String,
}

/// `CORS`: rs/cors options, as Tyk passes them.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CorsConfig {
    pub enable: bool,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    pub allowed_headers: Vec<String>,
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age: i64,
    pub options_passthrough: bool,
    pub debug: bool,
}

/// `scopes`: which claim holds a token's scopes, and the policy each
/// scope grants.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Scopes {
    pub jwt: ScopeClaim,
    pub oidc: ScopeClaim,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ScopeClaim {
    pub scope_claim_name: String,
    pub scope_to_policy: BTreeMap<String, String>,
}

impl ScopeClaim {
    pub fn is_empty(&self) -> bool {
        self.scope_claim_name.is_empty() && self.scope_to_policy.is_empty()
    }
}

/// Ours: `"gatehouse": {...}` in an API definition.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiExtensions {
    /// Path switches for this API, over the gateway's (`gatehouse.paths`).
    pub paths: RawPathRules,
}

/// The fields of a Tyk Classic API definition that Gatehouse acts on.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ApiDefinition {
    pub id: String,
    pub name: String,
    pub api_id: String,
    pub org_id: String,
    pub active: bool,
    pub use_keyless: bool,
    pub use_basic_auth: bool,
    pub basic_auth: BasicAuthMeta,
    pub enable_jwt: bool,
    pub jwt_signing_method: String,
    pub jwt_source: String,
    pub jwt_identity_base_field: String,
    pub jwt_policy_field_name: String,
    pub jwt_client_base_field: String,
    pub jwt_default_policies: Vec<String>,
    pub jwt_skip_kid: bool,
    pub jwt_expires_at_validation_skew: u64,
    pub jwt_issued_at_validation_skew: u64,
    pub jwt_not_before_validation_skew: u64,
    pub jwt_scope_to_policy_mapping: BTreeMap<String, String>,
    pub jwt_scope_claim_name: String,
    pub scopes: Scopes,
    pub base_identity_provided_by: String,
    pub use_standard_auth: bool,
    pub use_openid: bool,
    pub use_oauth2: bool,
    pub enable_signature_checking: bool,
    pub enable_coprocess_auth: bool,
    pub use_go_plugin_auth: bool,
    pub auth: AuthConfig,
    pub auth_configs: BTreeMap<String, AuthConfig>,
    pub strip_auth_data: bool,
    pub enable_context_vars: bool,
    #[serde(rename = "CORS")]
    pub cors: CorsConfig,
    pub enable_ip_whitelisting: bool,
    pub allowed_ips: Vec<String>,
    pub enable_ip_blacklisting: bool,
    pub blacklisted_ips: Vec<String>,
    pub ip_access_control_disabled: bool,
    pub definition: VersionDefinition,
    pub version_data: VersionData,
    pub proxy: ProxyConfig,
    pub disable_rate_limit: bool,
    pub disable_quota: bool,
    pub global_rate_limit: GlobalRateLimit,
    pub expiration: String,
    /// Seconds a key's stored session lives when the key sets none
    /// (`lifetime`); 0 = until deleted.
    pub session_lifetime: i64,
    pub session_lifetime_respects_key_expiration: bool,
    pub gatehouse: ApiExtensions,
}

/// Removes every null object member, recursively: with `#[serde(default)]`
/// a removed member reads as its zero value, which is what Go makes of a
/// null.
pub fn strip_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// What every per-endpoint entry has: a path pattern, a method, a switch.
pub trait PerEndpoint {
    fn path(&self) -> &str;
    fn method(&self) -> &str;
    fn disabled(&self) -> bool;
}

macro_rules! per_endpoint {
    ($($t:ty),*) => {$(
        impl PerEndpoint for $t {
            fn path(&self) -> &str { &self.path }
            fn method(&self) -> &str { &self.method }
            fn disabled(&self) -> bool { self.disabled }
        }
    )*};
}

per_endpoint!(
    EndpointMeta,
    MockResponseMeta,
    HeaderTransformMeta,
    UrlRewriteMeta,
    HardTimeoutMeta,
    SizeLimitMeta,
    MethodTransformMeta,
    CircuitBreakerMeta,
    RateLimitMeta
);
