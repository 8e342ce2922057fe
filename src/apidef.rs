//! Tyk Classic API definitions (`apps/*.json`): `ApiDefinition` as read
//! (serde, Tyk's names, unknown fields ignored) and `ApiSpec`, the compiled
//! form the request path uses (parsed target, listen-path matcher, version
//! table, auth source, stage list). Loading a folder and routing between
//! APIs is `registry`'s job; running the stages is `pipeline`'s.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::basic::BodyCredentials;
use crate::auth::jwt;
use crate::error::Error;
use crate::http::path::{self, RawPathRules};
use crate::pipeline::{self, Stage};

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
    fn is_empty(&self) -> bool {
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
    pub definition: VersionDefinition,
    pub version_data: VersionData,
    pub proxy: ProxyConfig,
    pub disable_rate_limit: bool,
    pub disable_quota: bool,
    pub global_rate_limit: GlobalRateLimit,
    pub expiration: String,
    pub gatehouse: ApiExtensions,
}

/// When something stops being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Unix seconds.
    At(i64),
    /// The date did not parse: Tyk treats that as already expired.
    Unparsable,
}

impl Expiry {
    /// `2006-01-02 15:04` (UTC); `""` and `-1` mean never.
    pub fn parse(text: &str) -> Expiry {
        let text = text.trim();
        if text.is_empty() || text == "-1" {
            return Expiry::Never;
        }
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        match time::PrimitiveDateTime::parse(text, format) {
            Ok(t) => Expiry::At(t.assume_utc().unix_timestamp()),
            Err(_) => Expiry::Unparsable,
        }
    }

    pub fn expired(self, now: i64) -> bool {
        match self {
            Expiry::Never => false,
            Expiry::At(t) => now > t,
            Expiry::Unparsable => true,
        }
    }
}

/// Where the version name is read from (`definition.location`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionLocation {
    Header,
    UrlParam,
    Url,
}

/// The compiled version table.
#[derive(Clone, Debug)]
pub struct Versioning {
    pub not_versioned: bool,
    pub location: VersionLocation,
    pub key: String,
    pub strip_path: bool,
    pub default_version: String,
    pub fallback_to_default: bool,
    pub versions: HashMap<String, Expiry>,
    /// For a non-versioned API: the version every request uses, or the
    /// 403 message; resolved at load, not per request.
    pub unversioned: Result<(String, Expiry), &'static str>,
}

/// Where a key is read from (CONTRACT §3.4).
#[derive(Clone, Debug)]
pub struct AuthSource {
    /// None when `disable_header`.
    pub header: Option<String>,
    pub param: Option<String>,
    pub cookie: Option<String>,
}

/// An upstream, parsed from `target_url`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to.
    pub address: String,
    /// The same as a socket address, when the host is an IP literal (no
    /// name lookup needed).
    pub socket: Option<std::net::SocketAddr>,
    /// The Host header value, as written in the URL.
    pub authority: String,
    pub path: String,
    pub query: String,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
                return Err("https upstreams are not supported yet".into());
            }
            _ => return Err(format!("not an http:// URL: {url:?}")),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("no usable host in {url:?}"));
        }
        let after = rest[end..].split('#').next().unwrap_or_default();
        let (path, query) = after.split_once('?').unwrap_or((after, ""));
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let address = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            socket: address.parse().ok(),
            address,
            authority: authority.to_string(),
            path: path.to_string(),
            query: query.to_string(),
        })
    }
}

/// A listen path: a plain prefix, or segments where `{name}` matches any one.
#[derive(Clone, Debug)]
pub struct ListenPath {
    pub text: String,
    segments: Option<Vec<String>>,
}

impl ListenPath {
    /// A listen path in its canonical form (`canonical_listen_path`); one
    /// that cannot be made canonical is kept as written, and never matches.
    pub fn new(text: &str) -> ListenPath {
        let text = canonical_listen_path(text).unwrap_or_else(|_| text.to_string());
        let segments = text
            .contains('{')
            .then(|| text.split('/').map(str::to_string).collect());
        ListenPath { text, segments }
    }

    /// Length for ordering: `{x}` segments do not count.
    pub fn sort_len(&self) -> usize {
        match &self.segments {
            None => self.text.len(),
            Some(segs) => segs
                .iter()
                .filter(|s| !s.starts_with('{'))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("/")
                .len(),
        }
    }

    /// Bytes of `path` this listen path covers: a prefix match, or `path`
    /// is the listen path without its trailing `/` (PATHS.md §3 step 4).
    pub fn covers(&self, path: &str) -> Option<usize> {
        self.matches(path)
            .or_else(|| self.is_bare(path).then_some(path.len()))
    }

    /// `path` is this listen path without its trailing `/`.
    pub fn is_bare(&self, path: &str) -> bool {
        if !self.text.ends_with('/') || path.ends_with('/') {
            return false;
        }
        match &self.segments {
            None => self.text.len() == path.len() + 1 && self.text.starts_with(path),
            Some(_) => self.matches(&format!("{path}/")) == Some(path.len() + 1),
        }
    }

    /// Bytes of `path` this listen path covers, when it is a prefix.
    pub fn matches(&self, path: &str) -> Option<usize> {
        let Some(segs) = &self.segments else {
            return path.starts_with(&self.text).then_some(self.text.len());
        };
        let mut used = 0;
        let mut parts = path.split('/');
        for (i, seg) in segs.iter().enumerate() {
            let last = i + 1 == segs.len();
            let part = parts.next()?;
            let ok = if seg.starts_with('{') {
                !part.is_empty()
            } else if last {
                part.starts_with(seg.as_str())
            } else {
                part == seg
            };
            if !ok {
                return None;
            }
            used += if last && !seg.starts_with('{') {
                seg.len()
            } else {
                part.len()
            };
            if !last {
                used += 1;
            }
        }
        Some(used.min(path.len()))
    }
}

/// A listen path as the request paths it must match are made canonical
/// (`http::path`), with a leading `/` added; Err names the reason.
pub fn canonical_listen_path(p: &str) -> Result<String, path::Reject> {
    let with_slash;
    let p = if p.starts_with('/') {
        p
    } else {
        with_slash = format!("/{p}");
        &with_slash
    };
    path::canonicalize(p).map(|c| c.key.into_owned())
}

/// Why a listen path may not be served: it would shadow the admin API or
/// the health check, which the router answers first.
pub fn reserved_listen_path(listen: &str, health_check_path: &str) -> Option<String> {
    let bare = listen.trim_end_matches('/');
    let reserved = bare == "/tyk" || listen.starts_with("/tyk/") || bare == health_check_path;
    reserved.then(|| {
        format!("listen path {listen} is reserved for the Gateway API (/tyk/) and the health check ({health_check_path})")
    })
}

/// A loaded API, ready for the request path.
pub struct ApiSpec {
    pub def: ApiDefinition,
    /// The definition as loaded, for `GET /tyk/apis`.
    pub raw: Value,
    pub listen: ListenPath,
    pub target: Target,
    pub auth: AuthChain,
    /// With `basic_auth.extract_from_body`: how credentials are read from
    /// a body when the header has none.
    pub basic_body: Option<BodyCredentials>,
    /// With `enable_jwt`: how tokens are verified.
    pub jwt: Option<JwtSpec>,
    pub versioning: Versioning,
    pub expiration: Expiry,
    /// Stages run in order before the proxy, built once at load.
    pub stages: Vec<Stage>,
}

impl ApiSpec {
    /// The API's `api_id` (not the Mongo `id`).
    #[allow(clippy::misnamed_getters)]
    pub fn id(&self) -> &str {
        &self.def.api_id
    }

    /// Parses and compiles one definition. `file` names it in errors.
    pub fn from_json(file: &Path, text: &str) -> Result<ApiSpec, Error> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::config(file, "", e))?;
        ApiSpec::from_value(file, raw)
    }

    pub fn from_value(file: &Path, raw: Value) -> Result<ApiSpec, Error> {
        let def: ApiDefinition = serde_path_to_error::deserialize(&raw)
            .map_err(|e| Error::config(file, &e.path().to_string(), e.inner()))?;
        let id_ok = def.id.is_empty()
            || (def.id.len() == 24 && def.id.bytes().all(|b| b.is_ascii_hexdigit()));
        if !id_ok {
            return Err(Error::config(
                file,
                "id",
                "must be empty or 24 hex characters",
            ));
        }
        if def.api_id.is_empty() {
            return Err(Error::config(file, "api_id", "is empty"));
        }
        let lp = &def.proxy.listen_path;
        if lp.is_empty() || lp.contains(' ') {
            return Err(Error::config(
                file,
                "proxy.listen_path",
                "must be non-empty and contain no spaces",
            ));
        }
        let listen = canonical_listen_path(lp).map_err(|r| {
            let why = format!("{lp:?} cannot be made canonical: {}", r.message());
            Error::config(file, "proxy.listen_path", why)
        })?;
        if listen != *lp && format!("/{lp}") != listen {
            log::warn!(
                "{}: proxy.listen_path {lp:?} is served as {listen:?}, its canonical form",
                file.display()
            );
        }
        let basic_body = match &def.basic_auth {
            b if def.use_basic_auth && b.extract_from_body => Some(
                BodyCredentials::compile(&b.body_user_regexp, &b.body_password_regexp)
                    .map_err(|(field, why)| Error::config(file, field, why))?,
            ),
            _ => None,
        };
        let target = Target::parse(&def.proxy.target_url)
            .map_err(|m| Error::config(file, "proxy.target_url", m))?;
        let versioning = compile_versions(&def);
        let auth = AuthChain::compile(file, &def);
        let stages = pipeline::stages_for(&def, &auth);
        Ok(ApiSpec {
            listen: ListenPath::new(&listen),
            auth,
            jwt: def.enable_jwt.then(|| JwtSpec::compile(file, &def)),
            basic_body,
            expiration: Expiry::parse(&def.expiration),
            target,
            versioning,
            stages,
            def,
            raw,
        })
    }
}

/// An `api_id` must be usable as a file name inside `app_path`.
pub fn check_api_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{id:?} is not a valid API id (allowed: a-z, A-Z, 0-9, ., _, -, ~)"
        ))
    }
}

/// An auth method an API chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Basic,
    Jwt,
    Token,
}

impl AuthMethod {
    /// Its `auth_configs` entry.
    pub fn config_name(self) -> &'static str {
        match self {
            AuthMethod::Basic => "basic",
            AuthMethod::Jwt => "jwt",
            AuthMethod::Token => "authToken",
        }
    }

    /// Its `base_identity_provided_by` value.
    pub fn identity_name(self) -> &'static str {
        match self {
            AuthMethod::Basic => "basic_auth_user",
            AuthMethod::Jwt => "jwt_claim",
            AuthMethod::Token => "auth_token",
        }
    }
}

/// How an API authenticates (CONTRACT §3.4, §10): every method it enables,
/// in Tyk's order (basic auth, JWT, then the key when `use_standard_auth`
/// or nothing else is on); each must accept the request.
#[derive(Clone, Debug, Default)]
pub struct AuthChain {
    /// The methods in the order they run, each with where it reads its
    /// credentials. Empty for a keyless API.
    pub methods: Vec<(AuthMethod, AuthSource)>,
    /// The method whose session the request keeps
    /// (`base_identity_provided_by`); None: each method's in turn, so the
    /// last one's.
    pub base: Option<AuthMethod>,
    /// The headers credentials are read from (kept from hop-by-hop
    /// removal; dropped by `strip_auth_data`).
    pub headers: Vec<String>,
}

impl AuthChain {
    fn compile(file: &Path, def: &ApiDefinition) -> AuthChain {
        let unsupported = [
            (def.use_oauth2, "use_oauth2"),
            (def.use_openid, "use_openid"),
            (def.enable_signature_checking, "enable_signature_checking"),
            (def.enable_coprocess_auth, "enable_coprocess_auth"),
            (def.use_go_plugin_auth, "use_go_plugin_auth"),
        ];
        if def.use_keyless {
            return AuthChain::default();
        }
        for (on, field) in unsupported {
            if on {
                log::warn!(
                    "{}: {field} is not supported: that auth method is skipped, the others apply",
                    file.display()
                );
            }
        }
        let mut methods = Vec::new();
        if def.use_basic_auth {
            methods.push(AuthMethod::Basic);
        }
        if def.enable_jwt {
            methods.push(AuthMethod::Jwt);
        }
        if def.use_standard_auth || methods.is_empty() {
            methods.push(AuthMethod::Token);
        }
        let named = &def.base_identity_provided_by;
        let base = methods.iter().copied().find(|m| m.identity_name() == named);
        if !named.is_empty() && base.is_none() {
            log::warn!(
                "{}: base_identity_provided_by {named:?} names no auth method this API uses ({}): the last method's session is kept",
                file.display(),
                methods
                    .iter()
                    .map(|m| m.identity_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let methods: Vec<(AuthMethod, AuthSource)> = methods
            .into_iter()
            .map(|m| (m, auth_source(def, m)))
            .collect();
        let mut headers: Vec<String> = Vec::new();
        for name in methods.iter().filter_map(|(_, s)| s.header.as_ref()) {
            if !headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                headers.push(name.clone());
            }
        }
        AuthChain {
            methods,
            base,
            headers,
        }
    }

    /// Where `method` reads its credentials (a default source when the API
    /// does not use it).
    pub fn source(&self, method: AuthMethod) -> &AuthSource {
        static DEFAULT: std::sync::OnceLock<AuthSource> = std::sync::OnceLock::new();
        self.methods
            .iter()
            .find(|(m, _)| *m == method)
            .map(|(_, s)| s)
            .unwrap_or_else(|| {
                DEFAULT.get_or_init(|| AuthSource {
                    header: Some("Authorization".into()),
                    param: None,
                    cookie: None,
                })
            })
    }

    /// Whether a session found by `method` is the request's.
    pub fn keeps(&self, method: AuthMethod) -> bool {
        self.base.is_none_or(|b| b == method)
    }
}

/// Where a JWT API's tokens are verified against (`jwt_source`).
#[derive(Clone, Debug)]
pub enum JwtKeys {
    /// No `jwt_source`: each token names a key whose `jwt_data.secret`
    /// verifies it.
    PerKey,
    /// One secret or public key for every token (centralised).
    Static(Arc<jwt::VerifyKey>),
    /// The keys a JWKS URL publishes, chosen by the token's `kid`.
    Jwks(String),
}

/// A JWT API's settings, compiled at load.
#[derive(Clone, Debug)]
pub struct JwtSpec {
    pub family: jwt::Family,
    pub keys: JwtKeys,
    pub skews: jwt::Skews,
    /// The claim holding a token's scopes (`scope` unless set).
    pub scope_claim: String,
    /// Scope to policy id; empty: scopes grant nothing.
    pub scope_map: BTreeMap<String, String>,
}

impl JwtSpec {
    fn compile(file: &Path, def: &ApiDefinition) -> JwtSpec {
        let family = jwt::Family::of(&def.jwt_signing_method).unwrap_or_else(|| {
            log::warn!(
                "{}: jwt_signing_method {:?} is not hmac, rsa or ecdsa; HMAC is required, as in Tyk",
                file.display(),
                def.jwt_signing_method
            );
            jwt::Family::Hmac
        });
        let source = &def.jwt_source;
        let keys = if source.is_empty() {
            JwtKeys::PerKey
        } else if let Some(url) = jwt::jwks_url(source) {
            if url
                .get(..8)
                .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
            {
                log::warn!(
                    "{}: jwt_source {url} is an https JWKS URL, which needs TLS upstreams (not built yet): every token is refused",
                    file.display()
                );
            }
            JwtKeys::Jwks(url)
        } else {
            let key = jwt::VerifyKey::new(family, &jwt::key_bytes(source));
            if !key.is_usable() {
                log::warn!(
                    "{}: jwt_source is not a usable {family:?} key (a base64 secret or PEM public key): every token is refused",
                    file.display()
                );
            }
            JwtKeys::Static(Arc::new(key))
        };
        // The deprecated top-level fields count only when `scopes` is
        // empty; `use_openid` APIs read `scopes.oidc` (as Tyk).
        let scopes = if def.scopes.jwt.is_empty() && def.scopes.oidc.is_empty() {
            ScopeClaim {
                scope_claim_name: def.jwt_scope_claim_name.clone(),
                scope_to_policy: def.jwt_scope_to_policy_mapping.clone(),
            }
        } else if def.use_openid {
            def.scopes.oidc.clone()
        } else {
            def.scopes.jwt.clone()
        };
        let secs = |s: u64| i64::try_from(s).unwrap_or(i64::MAX);
        JwtSpec {
            family,
            keys,
            skews: jwt::Skews {
                expires_at: secs(def.jwt_expires_at_validation_skew),
                issued_at: secs(def.jwt_issued_at_validation_skew),
                not_before: secs(def.jwt_not_before_validation_skew),
            },
            scope_claim: if scopes.scope_claim_name.is_empty() {
                "scope".to_string()
            } else {
                scopes.scope_claim_name
            },
            scope_map: scopes.scope_to_policy,
        }
    }
}

/// Where `method` reads its credentials: its `auth_configs` entry, else
/// (for the key and JWT, as Tyk) the legacy `auth` block; basic auth has no
/// fallback and reads `Authorization`.
fn auth_source(def: &ApiDefinition, method: AuthMethod) -> AuthSource {
    let none = AuthConfig::default();
    let fallback = match method {
        AuthMethod::Basic => &none,
        AuthMethod::Jwt | AuthMethod::Token => &def.auth,
    };
    let cfg = def
        .auth_configs
        .get(method.config_name())
        .unwrap_or(fallback);
    let header = if cfg.auth_header_name.is_empty() {
        "Authorization".to_string()
    } else {
        cfg.auth_header_name.clone()
    };
    let or_header = |name: &str| {
        if name.is_empty() {
            header.clone()
        } else {
            name.to_string()
        }
    };
    AuthSource {
        param: cfg.use_param.then(|| or_header(&cfg.param_name)),
        cookie: cfg.use_cookie.then(|| or_header(&cfg.cookie_name)),
        header: (!cfg.disable_header).then_some(header.clone()),
    }
}

fn compile_versions(def: &ApiDefinition) -> Versioning {
    let d = &def.definition;
    let location = match d.location.as_str() {
        "url-param" => VersionLocation::UrlParam,
        "url" => VersionLocation::Url,
        _ => VersionLocation::Header,
    };
    let versions = def
        .version_data
        .versions
        .iter()
        .map(|(name, v)| (name.clone(), Expiry::parse(&v.expires)))
        .collect();
    let mut v = Versioning {
        not_versioned: def.version_data.not_versioned,
        location,
        key: d.key.clone(),
        strip_path: d.strip_path || d.strip_versioning_data,
        default_version: def.version_data.default_version.clone(),
        fallback_to_default: d.fallback_to_default,
        versions,
        unversioned: Err(""),
    };
    v.unversioned = non_versioned_default(&v);
    v
}

/// The one version a non-versioned API uses.
pub fn non_versioned_default(v: &Versioning) -> Result<(String, Expiry), &'static str> {
    if v.versions.len() == 1 {
        let (name, e) = v.versions.iter().next().expect("one version");
        return Ok((name.clone(), *e));
    }
    let defaults: Vec<_> = ["Default", "default", ""]
        .iter()
        .filter_map(|n| v.versions.get_key_value(*n))
        .collect();
    match defaults.as_slice() {
        [(name, e)] => Ok(((*name).clone(), **e)),
        [] => Err("No default API version for this non-versioned API found"),
        _ => Err("Ambiguous default API version for this non-versioned API"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_urls_parse() {
        let t = Target::parse("http://httpbin.org").unwrap();
        assert_eq!(
            (t.address.as_str(), t.authority.as_str(), t.path.as_str()),
            ("httpbin.org:80", "httpbin.org", "")
        );
        let t = Target::parse("http://127.0.0.1:8091/base/?a=1").unwrap();
        assert_eq!(
            (t.address.as_str(), t.path.as_str(), t.query.as_str()),
            ("127.0.0.1:8091", "/base/", "a=1")
        );
        let t = Target::parse("http://[::1]:81/x").unwrap();
        assert_eq!(t.address, "[::1]:81");
        assert_eq!(Target::parse("http://[::1]/").unwrap().address, "[::1]:80");
        assert!(Target::parse("https://x").is_err());
        assert!(Target::parse("x.org").is_err());
    }

    #[test]
    fn listen_paths_are_made_canonical() {
        let c = |p| canonical_listen_path(p).unwrap();
        assert_eq!(c("quickstart/"), "/quickstart/");
        assert_eq!(c("/a/./b/../c"), "/a/c");
        assert_eq!(c("/a//%62/"), "/a/b/");
        assert_eq!(c("/"), "/");
        assert_eq!(c("/users/{id}/orders"), "/users/{id}/orders");
        assert!(canonical_listen_path("/a%00").is_err());
    }

    #[test]
    fn admin_and_health_paths_are_reserved() {
        for p in ["/tyk", "/tyk/", "/tyk/keys/", "/hello", "/hello/"] {
            assert!(reserved_listen_path(p, "/hello").is_some(), "{p}");
        }
        for p in ["/", "/tykx/", "/hello/x/", "/api/tyk/"] {
            assert!(reserved_listen_path(p, "/hello").is_none(), "{p}");
        }
    }

    #[test]
    fn plain_listen_path_is_a_string_prefix() {
        let lp = ListenPath::new("/app");
        assert_eq!(lp.matches("/apple"), Some(4));
        assert_eq!(ListenPath::new("/quickstart/").matches("/quickstart"), None);
        assert_eq!(
            ListenPath::new("/quickstart/").covers("/quickstart"),
            Some(11)
        );
        assert_eq!(ListenPath::new("/quickstart/").covers("/quickstar"), None);
        assert!(ListenPath::new("/u/{id}/").is_bare("/u/7"));
        assert!(!ListenPath::new("/u/{id}/").is_bare("/u"));
    }

    #[test]
    fn templated_listen_path_matches_any_segment() {
        let lp = ListenPath::new("/users/{id}/orders");
        assert_eq!(
            lp.matches("/users/42/orders/7"),
            Some("/users/42/orders".len())
        );
        assert_eq!(lp.matches("/users//orders"), None);
        assert_eq!(lp.sort_len(), ListenPath::new("/users/orders").sort_len());
    }

    #[test]
    fn expiry_formats() {
        assert_eq!(Expiry::parse(""), Expiry::Never);
        assert_eq!(Expiry::parse("-1"), Expiry::Never);
        assert_eq!(Expiry::parse("3000-01-02 15:04"), Expiry::At(32503820640));
        assert!(Expiry::parse("soon").expired(0));
        assert!(Expiry::parse("2000-01-01 00:00").expired(1_000_000_000));
    }

    #[test]
    fn api_ids_that_escape_app_path_are_refused() {
        for bad in ["../x", "a/b", "", "..", "a\\b"] {
            assert!(check_api_id(bad).is_err(), "{bad}");
        }
        assert!(check_api_id("my-api_1.v2").is_ok());
    }

    #[test]
    fn auth_source_defaults_to_authorization() {
        let def = ApiDefinition::default();
        let a = auth_source(&def, AuthMethod::Token);
        assert_eq!(a.header.as_deref(), Some("Authorization"));
        assert!(a.param.is_none() && a.cookie.is_none());
    }

    #[test]
    fn basic_auth_never_falls_back_to_the_legacy_auth_block() {
        let mut def = ApiDefinition::default();
        def.auth.auth_header_name = "X-Key".into();
        assert_eq!(
            auth_source(&def, AuthMethod::Token).header.as_deref(),
            Some("X-Key")
        );
        assert_eq!(
            auth_source(&def, AuthMethod::Jwt).header.as_deref(),
            Some("X-Key")
        );
        assert_eq!(
            auth_source(&def, AuthMethod::Basic).header.as_deref(),
            Some("Authorization")
        );
    }

    #[test]
    fn auth_methods_chain_in_tyks_order() {
        let file = Path::new("api.json");
        let chain = |f: &dyn Fn(&mut ApiDefinition)| {
            let mut def = ApiDefinition::default();
            f(&mut def);
            let c = AuthChain::compile(file, &def);
            (
                c.methods.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
                c.base,
            )
        };
        use AuthMethod::*;
        assert_eq!(chain(&|_| {}), (vec![Token], None));
        assert_eq!(chain(&|d| d.use_keyless = true), (vec![], None));
        assert_eq!(
            chain(&|d| {
                d.enable_jwt = true;
                d.use_basic_auth = true;
            }),
            (vec![Basic, Jwt], None)
        );
        assert_eq!(
            chain(&|d| {
                d.enable_jwt = true;
                d.use_standard_auth = true;
                d.base_identity_provided_by = "auth_token".into();
            }),
            (vec![Jwt, Token], Some(Token))
        );
        // A base naming a method the API does not use is ignored.
        assert_eq!(
            chain(&|d| {
                d.use_basic_auth = true;
                d.base_identity_provided_by = "jwt_claim".into();
            }),
            (vec![Basic], None)
        );
    }
}
