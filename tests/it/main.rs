//! Black-box tests: each starts the real `gatehouse` binary on an ephemeral
//! port with a fresh temp store, against local mock upstreams. One
//! behaviour per test, named for it. Run with
//! `cargo test --test it -- --test-threads=2`.

mod support;

mod access_log;
mod admin_apis;
mod admin_keys;
mod auth_chain;
mod basic_auth;
mod check;
mod client;
mod cluster;
mod config;
mod disk_full;
mod durability;
mod edge;
mod endpoints;
mod env;
mod errors;
mod health;
mod jwt;
mod lifetime;
mod limits;
mod metrics;
mod migrate;
mod paths;
mod policies;
mod proxy;
mod reload;
mod resources;
mod tls;
mod transforms;
mod upstream_faults;
mod versions;
mod walkthrough;
mod websocket;
