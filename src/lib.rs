//! Gatehouse: a Tyk-compatible API gateway in one binary. See
//! ARCHITECTURE.md for the map; `run` is the whole program after argument
//! parsing.
#![forbid(unsafe_code)]

pub mod admin;
pub mod apidef;
pub mod auth;
pub mod check;
pub mod config;
pub mod counters;
pub mod echo;
pub mod error;
pub mod gateway;
pub mod http;
pub mod keyid;
pub mod keylocks;
pub mod keys;
pub mod lifetime;
pub mod metrics;
pub mod pipeline;
pub mod proxy;
pub mod quota;
pub mod ratelimit;
pub mod registry;
pub mod router;
pub mod server;
pub mod session;
pub mod sessions;
pub mod store;
pub mod upstream;
pub mod watch;

/// A hash map for the request path: foldhash, seeded per map, instead of
/// SipHash (which cost 6% of a proxied request's instructions). Its keys are
/// ours (tokens, addresses, bucket names of stored keys), never raw client
/// input.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use log::{info, warn};

use crate::config::Config;
use crate::error::Error;
use crate::gateway::Gateway;
use crate::router::Router;
use crate::server::{Handler, Listener};

/// Loads the config, opens the store, binds the listeners and serves until
/// SIGTERM or SIGINT; SIGHUP reloads APIs and policies.
pub fn run(conf: &Path) -> Result<(), Error> {
    let config = Config::load(conf)?;
    if config.admin_loopback_only() {
        warn!(
            "admin API: secret is empty or Tyk's published sample; /tyk/ answers loopback clients only. Set `secret` in {}",
            conf.display()
        );
    }
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, shutdown.clone())
            .map_err(|e| Error::io("installing signal handlers", e))?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .map_err(|e| Error::io("installing signal handlers", e))?;
    let gw = Gateway::open(config)?;
    let listeners = bind_all(&gw)?;
    let reloader = gw.spawn_reloader(shutdown.clone());
    let persister = gw.spawn_persister(shutdown.clone());
    let cluster = gw.spawn_cluster_listener(shutdown.clone());
    let watcher = watch::spawn(gw.clone(), hup, shutdown.clone());
    let served = server::serve(
        gw.config.server.clone(),
        listeners,
        shutdown.clone(),
        gw.metrics.clone(),
    );
    info!("shutting down: flushing the store");
    reloader.join().ok();
    watcher.join().ok();
    persister.join().ok();
    if let Some(c) = cluster {
        c.join().ok();
    }
    gw.flush();
    served.map_err(|e| Error::io("server", e))
}

fn bind(
    addr: std::net::SocketAddr,
    handler: Arc<dyn Handler>,
    what: &str,
    tls: Option<&Arc<rustls::ServerConfig>>,
) -> Result<Listener, Error> {
    let mut l = Listener::bind(addr, handler)
        .map_err(|e| Error::io(format!("cannot listen on {addr} ({what})"), e))?;
    info!("listening on {} ({what})", l.local_addr());
    if let Some(config) = tls {
        l = l.with_tls(config.clone());
        info!("{} ({what}) speaks TLS only", l.local_addr());
    }
    Ok(l)
}

fn bind_all(gw: &Arc<Gateway>) -> Result<Vec<Listener>, Error> {
    let cfg = &gw.config;
    // `use_ssl` covers the proxy and the admin listener, as in Tyk.
    let tls = match &cfg.listener_tls {
        Some(t) => Some(
            http::tls::server_config(t).map_err(|e| Error::config(&cfg.file, &e.field, e.why))?,
        ),
        None => None,
    };
    let separate = cfg.control_listen.is_some();
    let main = Router {
        gw: gw.clone(),
        admin: !separate,
        proxy: true,
    };
    let mut out = vec![bind(
        cfg.listen,
        Arc::new(main),
        if separate { "proxy" } else { "proxy and admin" },
        tls.as_ref(),
    )?];
    if let Some(addr) = cfg.control_listen {
        let admin = Router {
            gw: gw.clone(),
            admin: true,
            proxy: false,
        };
        out.push(bind(addr, Arc::new(admin), "admin", tls.as_ref())?);
    }
    if let Some(addr) = cfg.echo_upstream {
        out.push(bind(addr, Arc::new(echo::Echo), "echo upstream", None)?);
    }
    Ok(out)
}
