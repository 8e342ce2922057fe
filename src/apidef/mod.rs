//! Tyk Classic API definitions (`apps/*.json`): `ApiDefinition` as read
//! (`definition`) and `ApiSpec`, the compiled form the request path uses:
//! parsed target and listen path (`routing`), version table (`versions`),
//! auth chain and JWT settings (`auth`), stage list. Loading a folder and
//! routing between APIs is `registry`'s job; running the stages is
//! `pipeline`'s.

mod auth;
mod breaker;
mod cors;
mod definition;
mod endpoints;
mod glob;
mod ip;
mod prefilter;
mod rewrite;
mod routing;
mod transforms;
mod versions;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use versions::compile_versions;

use crate::auth::basic::BodyCredentials;
use crate::error::Error;
use crate::http::tls::Versions;
use crate::pipeline::{self, Step};
use crate::upstream::tls::ClientTls;

pub use auth::{AuthChain, AuthMethod, AuthSource, JwtKeys, JwtSpec};
pub use breaker::Breaker;
pub use cors::Cors;
pub use definition::*;
pub use endpoints::{Access, Candidates, PathMatching, PathPattern, Reply, Verdict, valid_field};
pub use ip::{Cidr, IpLists};
pub use rewrite::{Captures, Inputs as RewriteInputs, Rewrite, captured};
pub use routing::{Balancer, ListenPath, Target, canonical_listen_path, reserved_listen_path};
pub use transforms::{HeaderOps, Part, Template, Transforms};
pub use versions::{Expiry, VersionLocation, Versioning, non_versioned_default};

/// A loaded API, ready for the request path.
pub struct ApiSpec {
    pub def: ApiDefinition,
    /// The definition as loaded, for `GET /tyk/apis`.
    pub raw: Value,
    pub listen: ListenPath,
    pub target: Target,
    /// `proxy.transport`: TLS to `https://` targets, over the gateway's.
    pub transport: ClientTls,
    pub auth: AuthChain,
    /// With `basic_auth.extract_from_body`: how credentials are read from
    /// a body when the header has none.
    pub basic_body: Option<BodyCredentials>,
    /// With `enable_jwt`: how tokens are verified.
    pub jwt: Option<JwtSpec>,
    pub versioning: Versioning,
    pub expiration: Expiry,
    /// With `proxy.enable_load_balancing`: the targets, taken in turn.
    pub balancer: Option<std::sync::Arc<Balancer>>,
    /// With `CORS.enable`.
    pub cors: Option<Cors>,
    /// `allowed_ips` / `blacklisted_ips`.
    pub ip: IpLists,
    /// Per-endpoint rules by version name; only versions that have some.
    pub endpoints: HashMap<String, Endpoints>,
    /// Stages run in order before the proxy, built once at load.
    pub stages: Vec<Step>,
    /// Its counters; the registry gives it the block its `api_id` had
    /// before a reload.
    pub stats: std::sync::Arc<crate::metrics::ApiStats>,
}

/// The compiled endpoint rules of one version.
#[derive(Debug, Default)]
pub struct Endpoints {
    pub access: Access,
    pub transforms: Transforms,
}

/// `extended_paths` lists that restrict access, which Gatehouse does not
/// build yet: an API using one is refused at load rather than served with
/// the restriction silently gone.
const UNBUILT_RESTRICTIONS: [&str; 3] = ["internal", "validate_json", "validate_request"];

impl Endpoints {
    fn compile(
        file: &Path,
        name: &str,
        v: &VersionInfo,
        m: PathMatching,
    ) -> Result<Endpoints, (String, String)> {
        if v.use_extended_paths {
            let used = |x: &Value| match x {
                Value::Array(a) => !a.is_empty(),
                Value::Object(o) => !o.is_empty(),
                _ => false,
            };
            for (list, _) in v.extended_paths.other.iter().filter(|(_, x)| used(x)) {
                let field = format!("version_data.versions.{name}.extended_paths.{list}");
                if UNBUILT_RESTRICTIONS.contains(&list.as_str()) {
                    return Err((
                        field,
                        "is not supported yet; the API is not served without it".into(),
                    ));
                }
                log::warn!(
                    "{}: {field} is not supported yet and is ignored",
                    file.display()
                );
            }
        }
        Ok(Endpoints {
            access: Access::compile(name, v, m)?,
            transforms: Transforms::compile(name, v, m)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.access.is_empty()
            && !self.transforms.changes_requests()
            && !self.transforms.limits_size()
            && self.transforms.rate_limits.is_empty()
    }
}

impl ApiSpec {
    /// The API's `api_id` (not the Mongo `id`).
    #[allow(clippy::misnamed_getters)]
    pub fn id(&self) -> &str {
        &self.def.api_id
    }

    /// Parses and compiles one definition. `file` names it in errors.
    pub fn from_json(file: &Path, text: &str, m: PathMatching) -> Result<ApiSpec, Error> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::config(file, "", e))?;
        ApiSpec::from_value(file, raw, m)
    }

    /// `m`: how the gateway anchors endpoint patterns.
    pub fn from_value(file: &Path, raw: Value, m: PathMatching) -> Result<ApiSpec, Error> {
        // A null is Go's zero value (Tyk's own exports are full of them).
        let mut plain = raw.clone();
        definition::strip_nulls(&mut plain);
        let def: ApiDefinition = serde_path_to_error::deserialize(&plain)
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
        let balanced = def.proxy.enable_load_balancing && !def.proxy.target_list.is_empty();
        let target = if balanced && def.proxy.target_url.is_empty() {
            Target::parse(&def.proxy.target_list[0])
        } else {
            Target::parse(&def.proxy.target_url)
        }
        .map_err(|m| Error::config(file, "proxy.target_url", m))?;
        let balancer = if balanced {
            let targets = def
                .proxy
                .target_list
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    Target::parse(url)
                        .map_err(|m| Error::config(file, &format!("proxy.target_list[{i}]"), m))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Some(std::sync::Arc::new(Balancer::new(targets)))
        } else {
            None
        };
        let transport = compile_transport(file, &def.proxy.transport)?;
        let versioning = compile_versions(&def);
        let mut endpoints = HashMap::new();
        for (name, v) in &def.version_data.versions {
            let e = Endpoints::compile(file, name, v, m)
                .map_err(|(field, why)| Error::config(file, &field, why))?;
            if !e.is_empty() {
                endpoints.insert(name.clone(), e);
            }
        }
        let ip = IpLists::compile(&def).map_err(|(field, why)| Error::config(file, &field, why))?;
        let cors = def.cors.enable.then(|| Cors::compile(&def.cors));
        let auth = AuthChain::compile(file, &def);
        let stages = pipeline::stages_for(&def, &auth, &endpoints, cors.is_some(), !ip.is_empty());
        Ok(ApiSpec {
            listen: ListenPath::new(&listen),
            auth,
            jwt: def.enable_jwt.then(|| JwtSpec::compile(file, &def)),
            basic_body,
            balancer,
            cors,
            ip,
            endpoints,
            expiration: Expiry::parse(&def.expiration),
            target,
            transport,
            versioning,
            stages,
            stats: std::sync::Arc::new(crate::metrics::ApiStats::new(&def.api_id)),
            def,
            raw,
        })
    }
}

/// `proxy.transport`'s TLS settings; what is not built is warned about.
fn compile_transport(file: &Path, t: &TransportMeta) -> Result<ClientTls, Error> {
    let versions =
        Versions::new(t.ssl_min_version, t.ssl_max_version).map_err(|(field, why)| {
            let field = format!("proxy.transport.ssl_{field}");
            Error::config(file, &field, why)
        })?;
    if t.ssl_force_common_name_check {
        log::warn!(
            "{}: proxy.transport.ssl_force_common_name_check has no effect: certificates are checked against their subject alternative names",
            file.display()
        );
    }
    if !t.proxy_url.is_empty() {
        log::warn!(
            "{}: proxy.transport.proxy_url is not supported yet: upstreams are reached directly",
            file.display()
        );
    }
    Ok(ClientTls {
        insecure: t.ssl_insecure_skip_verify,
        versions,
        ciphers: t.ssl_ciphers.clone(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_ids_that_escape_app_path_are_refused() {
        for bad in ["../x", "a/b", "", "..", "a\\b"] {
            assert!(check_api_id(bad).is_err(), "{bad}");
        }
        assert!(check_api_id("my-api_1.v2").is_ok());
    }
}
