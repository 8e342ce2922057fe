//! The set of loaded APIs: reading `app_path`, and routing a canonical
//! request path (`http::path`) to an API (longest listen path first,
//! CONTRACT §3.1; a listen path `/a/b/` also takes exactly `/a/b`, PATHS.md
//! §3 step 4). A `Registry` is an immutable snapshot; the gateway swaps
//! whole snapshots on reload, so a request in flight keeps the set it
//! started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{error, info, warn};

use crate::apidef::{ApiSpec, ListenPath, reserved_listen_path};
use crate::config::{Config, list_json};
use crate::error::Error;
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
    /// The file each API was loaded from, for a reload that must keep the
    /// last good version of a file that broke.
    sources: HashMap<PathBuf, Arc<ApiSpec>>,
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
        let (registry, errors) = Registry::read(config, None, Some(metrics)).unwrap_or_else(|e| {
            warn!("{e}; no APIs loaded");
            Default::default()
        });
        for e in errors {
            error!("apis: skipping {e}");
        }
        registry
    }

    /// Compiles every `*.json` in `app_path`; a file that fails is left out
    /// and its error returned, unless `previous` loaded an API from that
    /// file: then that version is kept (with a warning). `Err`: the folder
    /// itself could not be read. With `metrics`, each API counts into its
    /// id's block (the same across reloads).
    pub fn read(
        config: &Config,
        previous: Option<&Registry>,
        metrics: Option<&Metrics>,
    ) -> Result<(Registry, Vec<Error>), Error> {
        let dir = &config.app_path;
        let files = list_json(dir)
            .map_err(|e| Error::config(dir, "", format!("cannot read the app_path folder: {e}")))?;
        if files.is_empty() {
            warn!("apis: no API definitions in {}", dir.display());
        }
        let (mut specs, mut errors) = (Vec::new(), Vec::new());
        for file in files {
            match compile(config, &file) {
                Ok(spec) => specs.push((file, spec)),
                Err(e) => {
                    if let Some(old) = previous.and_then(|p| p.sources.get(&file)) {
                        keep_last_good(config, &file, old, &mut specs);
                    }
                    errors.push(e);
                }
            }
        }
        for (_, spec) in &mut specs {
            if let Some(m) = metrics {
                spec.stats = m.api(spec.id());
            }
            info!(
                "loaded API {:?} (api_id {}) on {} -> {}",
                spec.def.name, spec.def.api_id, spec.listen.text, spec.def.proxy.target_url
            );
        }
        let ids: Vec<(PathBuf, String)> = specs
            .iter()
            .map(|(f, s)| (f.clone(), s.id().to_string()))
            .collect();
        let mut reg = Registry::new(
            specs.into_iter().map(|(_, s)| s).collect(),
            config.enable_strict_routes,
        );
        // A duplicate api_id keeps the first file's API: only that file owns it.
        let mut owned = std::collections::HashSet::new();
        for (file, id) in ids {
            if let Some(api) = reg.by_id.get(&id).filter(|_| owned.insert(id.clone())) {
                reg.sources.insert(file, api.clone());
            }
        }
        Ok((reg, errors))
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

/// One definition file, compiled; a reserved listen path is an error.
fn compile(config: &Config, file: &Path) -> Result<ApiSpec, Error> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::config(file, "", e))?;
    let spec = ApiSpec::from_json(file, &text, config.path_matching)?;
    match reserved_listen_path(&spec.listen.text, &config.health_check_path) {
        Some(why) => Err(Error::config(file, "proxy.listen_path", why)),
        None => Ok(spec),
    }
}

/// Recompiles the definition `old` was loaded from (it compiled under this
/// config before, so it does again) in place of its broken file.
fn keep_last_good(
    config: &Config,
    file: &Path,
    old: &ApiSpec,
    specs: &mut Vec<(PathBuf, ApiSpec)>,
) {
    match ApiSpec::from_value(file, old.raw.clone(), config.path_matching) {
        Ok(spec) => {
            warn!(
                "apis: {} is broken; keeping the last good version of API {}",
                file.display(),
                spec.id()
            );
            specs.push((file.to_path_buf(), spec));
        }
        Err(e) => error!(
            "apis: the last good version of {} no longer loads: {e}",
            file.display()
        ),
    }
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
