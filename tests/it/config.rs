//! The binary and its configuration (issue 2 items 1–2): CLI, exit codes,
//! Tyk's example files, TOML, unknown fields, app loading, the store lock.

use serde_json::{Value, json};

use crate::support::*;

fn example_conf() -> Value {
    // tests/data/tyk.conf.example is an unmodified copy of
    // ../shared/tyk/examples/tyk.conf.example (see its LICENSE-NOTE.md).
    let text = std::fs::read_to_string(test_data("data/tyk.conf.example")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn example_app(name: &str) -> Vec<u8> {
    std::fs::read(test_data(&format!("it/data/apps/{name}"))).unwrap()
}

#[test]
fn tyk_conf_example_loads_with_unknown_fields_warned() {
    let mut conf = example_conf();
    // Only what a test must change: loopback, an ephemeral port, paths
    // inside the temp dir.
    conf["listen_address"] = json!("127.0.0.1");
    conf["listen_port"] = json!(0);
    conf["app_path"] = json!("apps");
    conf["storage"]["path"] = json!("data");
    // Its `storage.type: "redis"` is cluster mode: aimed at a port where no
    // Redis listens, never at one this machine may run.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let redis_port = closed.local_addr().unwrap().port();
    drop(closed);
    conf["storage"]["host"] = json!("127.0.0.1");
    conf["storage"]["port"] = json!(redis_port);
    let gw = Gateway::builder().conf_exact(conf).start();
    let warned: Vec<String> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains("WARN") && l.contains("dns_cache"))
        .collect();
    assert_eq!(
        warned.len(),
        1,
        "one warning listing unknown fields:\n{}",
        gw.logs().join("\n")
    );
    assert!(warned[0].contains("enable_analytics"), "{}", warned[0]);
    // storage.type redis with no Redis there: the gateway starts, and an
    // error names the address.
    let addr = format!("redis://127.0.0.1:{redis_port}");
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("ERROR") && l.contains(&addr)),
        "{}",
        gw.logs().join("\n")
    );
    // The sample secret makes the admin API loopback-only, with a warning.
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.to_lowercase().contains("loopback")),
        "{}",
        gw.logs().join("\n")
    );
    assert_eq!(gw.get("/hello", &[]).status, 200);
    // Loopback clients may still use it with the sample secret.
    assert_eq!(gw.admin("GET", "/tyk/apis", None).status, 200);
}

#[test]
fn tyk_example_apps_load() {
    let gw = Gateway::builder()
        .file("apps/app_sample.json", example_app("app_sample.json"))
        .file("apps/quickstart.json", example_app("quickstart.json"))
        .start();
    let lines: Vec<String> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains("loaded API"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", gw.logs().join("\n"));
    let apis = gw.admin("GET", "/tyk/apis", None).json();
    let mut ids: Vec<&str> = apis
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["api_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, vec!["1", "3"]);
    // app_sample.json is protected: no key → 401 (no network needed).
    assert_proxy_error(
        &gw.get("/tyk-api-test/get", &[]),
        401,
        "Authorization field missing",
    );
}

#[test]
fn broken_app_file_is_skipped_and_others_load() {
    let up = Upstream::start();
    let gw = Gateway::builder()
        .app("good", keyless_api("good", "/good/", &up.url("/")))
        .file("apps/broken.json", "{ this is not json")
        .file("apps/invalid.json", r#"{"api_id": "inv", "proxy": {"listen_path": "", "target_url": "http://127.0.0.1:1"}}"#)
        .start();
    let logs = gw.logs();
    assert!(
        logs.iter()
            .any(|l| l.contains("ERROR") && l.contains("broken.json")),
        "no error naming broken.json:\n{}",
        logs.join("\n")
    );
    assert!(
        logs.iter().any(|l| l.contains("ERROR")
            && l.contains("invalid.json")
            && l.contains("listen_path")),
        "no error naming invalid.json and its field:\n{}",
        logs.join("\n")
    );
    assert_eq!(gw.get("/good/x", &[]).status, 200);
    let apis = gw.admin("GET", "/tyk/apis", None).json();
    assert_eq!(apis.as_array().unwrap().len(), 1);
}

#[test]
fn invalid_conf_field_exits_2_naming_file_and_field() {
    let err = Gateway::builder()
        .conf(json!({"listen_port": "x"}))
        .try_start()
        .map(|_| ())
        .expect_err("gateway started with listen_port \"x\"");
    assert_eq!(err.code(), Some(2), "{err:?}");
    let line = err
        .error_line()
        .unwrap_or_else(|| panic!("no `error:` line: {err:?}"));
    assert!(line.contains("tyk.conf"), "{line}");
    assert!(line.contains("listen_port"), "{line}");
    assert_eq!(
        err.stderr
            .iter()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1,
        "{err:?}"
    );
}

#[test]
fn conf_that_is_not_json_exits_2() {
    let err = Gateway::builder()
        .raw_conf("tyk.conf", "{ \"listen_port\": 0, ")
        .try_start()
        .map(|_| ())
        .expect_err("gateway started with a truncated tyk.conf");
    assert_eq!(err.code(), Some(2), "{err:?}");
    assert!(
        err.error_line().is_some_and(|l| l.contains("tyk.conf")),
        "{err:?}"
    );
}

#[test]
fn missing_conf_file_fails_with_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _out, err) = run_cli(&["--conf", "does-not-exist.conf"], dir.path());
    assert!(!status.success(), "{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("error:") && l.contains("does-not-exist.conf")),
        "{err}"
    );
}

#[test]
fn version_flag_prints_version_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, _err) = run_cli(&["--version"], dir.path());
    assert_eq!(status.code(), Some(0));
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    assert!(out.starts_with("gatehouse"), "{out}");
}

#[test]
fn help_flag_prints_usage_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let (status, out, _err) = run_cli(&["--help"], dir.path());
    assert_eq!(status.code(), Some(0));
    assert!(out.contains("--conf"), "{out}");
}

#[test]
fn unknown_argument_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _out, err) = run_cli(&["--bogus"], dir.path());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error:")), "{err}");
}

#[test]
fn toml_config_works() {
    let up = Upstream::start();
    let toml = format!(
        "listen_address = \"127.0.0.1\"\nlisten_port = 0\nsecret = \"{SECRET}\"\napp_path = \"apps\"\nhash_keys = true\n\n[storage]\ntype = \"sled\"\npath = \"data\"\n"
    );
    let gw = Gateway::builder()
        .raw_conf("tyk.toml", &toml)
        .app("p", api_def("p", "/p/", &up.url("/")))
        .start();
    let r = gw.admin("POST", "/tyk/keys/create", Some(session_for(&["p"])));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["key_hash"].is_string(),
        "hash_keys from TOML ignored: {}",
        r.text()
    );
    let key = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(gw.get_with_key("/p/x", &key).status, 200);
    assert!(gw.dir().join("data").is_dir());
}

#[test]
fn missing_apps_dir_is_a_warning_not_an_error() {
    let gw = Gateway::builder().no_apps_dir().start();
    let apps = gw.dir().join("apps");
    let lines: Vec<String> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains(&*apps.to_string_lossy()))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("WARN")),
        "no warning about {}:\n{}",
        apps.display(),
        gw.logs().join("\n")
    );
    assert!(
        !gw.logs().iter().any(|l| l.contains("ERROR")),
        "{}",
        gw.logs().join("\n")
    );
    assert_eq!(gw.get("/hello", &[]).status, 200);
}

#[test]
fn empty_apps_dir_is_a_warning_not_an_error() {
    let gw = Gateway::start(json!({}), &[]);
    assert!(
        gw.logs()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("apps")),
        "{}",
        gw.logs().join("\n")
    );
    assert!(
        !gw.logs().iter().any(|l| l.contains("ERROR")),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn relative_paths_resolve_against_the_config_dir() {
    let up = Upstream::start();
    let cwd = tempfile::tempdir().unwrap();
    let gw = Gateway::builder()
        .app("p", keyless_api("p", "/p/", &up.url("/")))
        .cwd(cwd.path().to_path_buf())
        .start();
    assert_eq!(gw.get("/p/x", &[]).status, 200);
    assert!(gw.dir().join("data").is_dir(), "store not beside tyk.conf");
    assert!(
        !cwd.path().join("data").exists(),
        "store created in the working dir"
    );
}

#[test]
fn second_gateway_on_same_store_exits_1_naming_the_lock() {
    let first = Gateway::start(json!({}), &[]);
    let store = first.dir().join("data");
    let err = Gateway::builder()
        .conf(json!({"storage": {"type": "sled", "path": store.to_string_lossy()}}))
        .try_start()
        .map(|_| ())
        .expect_err("second gateway started on a locked store");
    assert_eq!(err.code(), Some(1), "{err:?}");
    let line = err
        .error_line()
        .unwrap_or_else(|| panic!("no `error:` line: {err:?}"));
    assert!(line.contains(&*store.to_string_lossy()), "{line}");
    assert!(line.to_lowercase().contains("lock"), "{line}");
    // The first one is unaffected.
    assert_eq!(first.get("/hello", &[]).status, 200);
}

#[test]
fn logs_one_line_per_listener_and_per_api() {
    let up = Upstream::start();
    let gw = Gateway::start(
        json!({}),
        &[
            ("a", keyless_api("a", "/a/", &up.url("/"))),
            ("b", keyless_api("b", "/b/", &up.url("/"))),
        ],
    );
    let listening: Vec<String> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains("listening on"))
        .collect();
    assert_eq!(listening.len(), 1, "{listening:?}");
    assert!(listening[0].contains(&format!("listening on 127.0.0.1:{}", gw.port())));
    let loaded = gw
        .logs()
        .iter()
        .filter(|l| l.contains("loaded API"))
        .count();
    assert_eq!(loaded, 2, "{}", gw.logs().join("\n"));
}

#[test]
fn control_api_port_separates_admin_from_proxy() {
    let up = Upstream::start();
    let control = free_port();
    let gw = Gateway::start(
        json!({"control_api_port": control}),
        &[("root", keyless_api("root", "/", &up.url("/")))],
    );
    assert_eq!(gw.admin_port(), control);
    assert_eq!(gw.admin("GET", "/tyk/apis", None).status, 200);
    // On the proxy port /tyk/ is just a path the root API serves.
    let r = request(
        gw.port(),
        "GET",
        "/tyk/apis",
        &[("x-tyk-authorization", SECRET)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/tyk/apis");
}

#[test]
fn unreadable_store_refuses_to_start_naming_it() {
    let garbage: Vec<u8> = (0..64 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = Gateway::builder()
        .file("data/db", garbage.clone())
        .file("data/conf", garbage)
        .try_start()
        .map(|_| ())
        .expect_err("gateway started on a garbage store");
    assert_eq!(err.code(), Some(1), "{err:?}");
    let line = err
        .error_line()
        .unwrap_or_else(|| panic!("no `error:` line: {err:?}"));
    let store = err.dir.path().join("data");
    assert!(line.contains(&*store.to_string_lossy()), "{line}");
}

/// Acknowledged keys, a clean stop, then one flipped byte in the middle of
/// sled's log: the gateway must refuse to start rather than come up with
/// fewer (or no) keys (issue 2 item 4).
#[test]
fn corrupt_store_refuses_to_start_never_empty() {
    let up = Upstream::start();
    let mut gw = Gateway::start(json!({}), &[("p", api_def("p", "/p/", &up.url("/")))]);
    let keys: Vec<String> = (0..10)
        .map(|_| gw.create_key(session_for(&["p"])))
        .collect();
    assert_eq!(gw.stop().code(), Some(0));
    let db = gw.dir().join("data/db");
    let mut bytes = std::fs::read(&db).expect("sled's data/db");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();
    match gw.try_restart() {
        Err(status) => {
            assert_eq!(status.code(), Some(1), "{}", gw.logs().join("\n"));
            let line = gw
                .logs()
                .into_iter()
                .find(|l| l.starts_with("error:"))
                .unwrap_or_default();
            assert!(line.contains("data"), "{line}");
            assert!(line.to_lowercase().contains("corrupt"), "{line}");
        }
        Ok(()) => {
            let working = keys
                .iter()
                .filter(|k| gw.get_with_key("/p/x", k).status == 200)
                .count();
            panic!(
                "gateway started on a corrupted store with {working} of {} keys working:\n{}",
                keys.len(),
                gw.logs().join("\n")
            );
        }
    }
}

#[test]
fn event_loops_out_of_range_exits_2_naming_the_field() {
    for bad in [json!(-1), json!(1025), json!("two")] {
        let err = Gateway::builder()
            .conf(json!({"gatehouse": {"event_loops": bad}}))
            .try_start()
            .map(|_| ())
            .expect_err("gateway started with a bad event_loops");
        assert_eq!(err.code(), Some(2), "{err:?}");
        let line = err.error_line().unwrap_or_default();
        assert!(line.contains("event_loops"), "{bad}: {line}");
    }
}
