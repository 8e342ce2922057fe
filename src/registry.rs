//! The set of loaded APIs: reading `app_path`, and routing a canonical
//! request path (`http::path`) to an API (longest listen path first,
//! CONTRACT §3.1; a listen path `/a/b/` also takes exactly `/a/b`, PATHS.md
//! §3 step 4). A `Registry` is an immutable snapshot; the gateway swaps
//! whole snapshots on reload, so a request in flight keeps the set it
//! started with.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use log::{error, info, warn};

use crate::apidef::{ApiSpec, ListenPath, PathMatching, reserved_listen_path};
use crate::config::{Config, json_files};
use crate::metrics::Metrics;

/// One route: a prefix and the API it leads to.
struct Route {
    prefix: ListenPath,
    /// The API's own listen path (not its `/<api_id>/` alias).
    primary: bool,
    /// `/a/b/` also takes exactly `/a/b`, unless an API listens there.
    claims_bare: bool,
    api: Arc<ApiSpec>,
}

/// What a path resolved to.
pub enum Lookup<'a> {
    Api(&'a Arc<ApiSpec>),
    /// Strict routes: a near miss that must not fall through.
    NotFound,
}

#[derive(Default)]
pub struct Registry {
    routes: Vec<Route>,
    by_id: HashMap<String, Arc<ApiSpec>>,
    /// Definitions in load order, for `GET /tyk/apis`.
    order: Vec<Arc<ApiSpec>>,
    strict: bool,
}

impl Registry {
    /// Builds a registry from compiled specs, in file order.
    pub fn new(specs: Vec<ApiSpec>, strict: bool) -> Registry {
        let mut reg = Registry {
            strict,
            ..Registry::default()
        };
        let mut seen_paths: HashMap<String, ()> = HashMap::new();
        for mut spec in specs {
            if reg.by_id.contains_key(spec.id()) {
                warn!("apis: duplicate api_id {:?}, keeping the first", spec.id());
                continue;
            }
            if seen_paths.contains_key(&spec.listen.text) {
                let renamed = format!("{}-{}", spec.listen.text, spec.id());
                warn!(
                    "apis: listen path {} is taken; API {} listens on {renamed}",
                    spec.listen.text,
                    spec.id()
                );
                spec.listen = ListenPath::new(&renamed);
            }
            seen_paths.insert(spec.listen.text.clone(), ());
            let api = Arc::new(spec);
            reg.routes.push(Route {
                prefix: api.listen.clone(),
                primary: true,
                claims_bare: true,
                api: api.clone(),
            });
            reg.routes.push(Route {
                prefix: ListenPath::new(&format!("/{}/", api.id())),
                primary: false,
                claims_bare: true,
                api: api.clone(),
            });
            reg.by_id.insert(api.id().to_string(), api.clone());
            reg.order.push(api);
        }
        let texts: Vec<String> = reg.routes.iter().map(|r| r.prefix.text.clone()).collect();
        for route in &mut reg.routes {
            route.claims_bare = !texts.iter().any(|t| route.prefix.is_bare(t));
        }
        reg.routes
            .sort_by_key(|r| std::cmp::Reverse(r.prefix.sort_len()));
        reg
    }

    /// Reads every `*.json` in `app_path`, skipping (with an error naming
    /// the file) those that fail to parse or validate, or whose listen path
    /// is reserved.
    pub fn load(config: &Config, metrics: &Metrics) -> Registry {
        let specs = read_dir(&config.app_path, config.path_matching)
            .into_iter()
            .filter(|(file, spec)| {
                let reserved = reserved_listen_path(&spec.listen.text, &config.health_check_path);
                if let Some(why) = &reserved {
                    error!(
                        "apis: skipping {}: `proxy.listen_path`: {why}",
                        file.display()
                    );
                }
                reserved.is_none()
            })
            .map(|(_, mut spec)| {
                spec.stats = metrics.api(spec.id());
                info!(
                    "loaded API {:?} (api_id {}) on {} -> {}",
                    spec.def.name, spec.def.api_id, spec.listen.text, spec.def.proxy.target_url
                );
                spec
            })
            .collect();
        Registry::new(specs, config.enable_strict_routes)
    }

    /// The API serving the canonical `path`, if any. A path that is a
    /// listen path without its trailing `/` goes to that API rather than
    /// fall through to a shorter listen path (it stays unrouted when none
    /// would take it).
    pub fn lookup(&self, path: &str) -> Option<Lookup<'_>> {
        let mut claimant: Option<&Arc<ApiSpec>> = None;
        for route in &self.routes {
            let api = claimant.unwrap_or(&route.api);
            if self.strict && route.primary && is_strict_candidate(&route.prefix.text) {
                let Some(after) = path.strip_prefix(route.prefix.text.as_str()) else {
                    continue;
                };
                if after.is_empty() || after.starts_with('/') || claimant.is_some() {
                    return Some(Lookup::Api(api));
                }
                return Some(Lookup::NotFound);
            }
            if route.prefix.matches(path).is_some() {
                return Some(Lookup::Api(api));
            }
            if claimant.is_none() && route.claims_bare && route.prefix.is_bare(path) {
                claimant = Some(&route.api);
            }
        }
        None
    }

    pub fn get(&self, api_id: &str) -> Option<&Arc<ApiSpec>> {
        self.by_id.get(api_id)
    }

    /// Loaded APIs in load order.
    pub fn all(&self) -> &[Arc<ApiSpec>] {
        &self.order
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

fn is_strict_candidate(listen_path: &str) -> bool {
    !listen_path.ends_with('/') && !listen_path.contains('{')
}

/// Compiles every definition file in `dir`, sorted by file name.
fn read_dir(dir: &Path, m: PathMatching) -> Vec<(std::path::PathBuf, ApiSpec)> {
    let files = json_files(dir, "app_path");
    if files.is_empty() {
        warn!("apis: no API definitions in {}", dir.display());
    }
    let mut specs = Vec::new();
    for file in files {
        let loaded = std::fs::read_to_string(&file)
            .map_err(|e| crate::error::Error::config(&file, "", e))
            .and_then(|text| ApiSpec::from_json(&file, &text, m));
        match loaded {
            Ok(spec) => specs.push((file, spec)),
            Err(e) => error!("apis: skipping {e}"),
        }
    }
    specs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(id: &str, listen: &str) -> ApiSpec {
        let raw = json!({"api_id": id, "proxy": {"listen_path": listen, "target_url": "http://127.0.0.1:1"}});
        ApiSpec::from_value(Path::new("t.json"), raw, Default::default()).unwrap()
    }

    fn routed(reg: &Registry, path: &str) -> Option<String> {
        match reg.lookup(path)? {
            Lookup::Api(a) => Some(a.id().to_string()),
            Lookup::NotFound => Some("404".into()),
        }
    }

    #[test]
    fn longest_listen_path_wins_in_either_order() {
        for specs in [
            vec![spec("short", "/a/"), spec("long", "/a/b/")],
            vec![spec("long", "/a/b/"), spec("short", "/a/")],
        ] {
            let reg = Registry::new(specs, false);
            assert_eq!(routed(&reg, "/a/b/c").as_deref(), Some("long"));
            assert_eq!(routed(&reg, "/a/x").as_deref(), Some("short"));
        }
    }

    #[test]
    fn api_id_prefix_routes_too() {
        let reg = Registry::new(vec![spec("k1", "/svc/")], false);
        assert_eq!(routed(&reg, "/k1/x").as_deref(), Some("k1"));
        assert_eq!(routed(&reg, "/other"), None);
    }

    #[test]
    fn strict_routes_do_not_fall_through() {
        let reg = Registry::new(vec![spec("app", "/app"), spec("root", "/")], true);
        assert_eq!(routed(&reg, "/app/x").as_deref(), Some("app"));
        assert_eq!(routed(&reg, "/app").as_deref(), Some("app"));
        assert_eq!(routed(&reg, "/apple").as_deref(), Some("404"));
        let loose = Registry::new(vec![spec("app", "/app"), spec("root", "/")], false);
        assert_eq!(routed(&loose, "/apple").as_deref(), Some("app"));
    }

    #[test]
    fn trailing_slash_listen_path_takes_the_bare_path() {
        let reg = Registry::new(vec![spec("short", "/a/"), spec("long", "/a/b/")], false);
        assert_eq!(routed(&reg, "/a/b").as_deref(), Some("long"));
        assert_eq!(routed(&reg, "/a/bc").as_deref(), Some("short"));
        assert_eq!(routed(&reg, "/a"), None);
        // With no shorter listen path to fall through to, it stays unrouted.
        let reg = Registry::new(vec![spec("long", "/a/b/")], false);
        assert_eq!(routed(&reg, "/a/b"), None);
        let reg = Registry::new(vec![spec("long", "/a/b/"), spec("root", "/")], false);
        assert_eq!(routed(&reg, "/a/b").as_deref(), Some("long"));
        // An API listening on the bare path keeps it.
        let reg = Registry::new(vec![spec("slash", "/a/b/"), spec("bare", "/a/b")], false);
        assert_eq!(routed(&reg, "/a/b").as_deref(), Some("bare"));
        assert_eq!(routed(&reg, "/a/b/x").as_deref(), Some("slash"));
    }

    #[test]
    fn duplicate_listen_path_gets_api_id_suffix() {
        let reg = Registry::new(vec![spec("a", "/same/"), spec("b", "/same/")], false);
        assert_eq!(reg.get("b").unwrap().listen.text, "/same/-b");
    }
}
