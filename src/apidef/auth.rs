//! How an API authenticates, compiled at load: the chain of auth methods
//! with where each reads its credentials (CONTRACT §3.4, §10), and a JWT
//! API's keys, skews and scope mapping.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::auth::jwt;

use super::{ApiDefinition, AuthConfig, ScopeClaim};

/// Where a key is read from (CONTRACT §3.4).
#[derive(Clone, Debug)]
pub struct AuthSource {
    /// None when `disable_header`.
    pub header: Option<String>,
    pub param: Option<String>,
    pub cookie: Option<String>,
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
    pub(super) fn compile(file: &Path, def: &ApiDefinition) -> AuthChain {
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
    pub(super) fn compile(file: &Path, def: &ApiDefinition) -> JwtSpec {
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

#[cfg(test)]
mod tests {
    use super::*;

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
