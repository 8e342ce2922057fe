//! `gatehouse check` / `lint` (issue 11 item 4, OPS.md §3): the same
//! loading as start, offline; problems as `file: field: message` on stderr,
//! one result line on stdout; exit 0, 1 or 2.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::*;

/// A temp dir holding `tyk.conf` (`conf` over the test defaults) and files.
fn layout(conf: Value, files: &[(&str, String)]) -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let conf_path = dir.path().join("tyk.conf");
    let conf = gateway::merge(default_conf(), &conf);
    std::fs::write(&conf_path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    for (rel, text) in files {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    (dir, conf_path)
}

fn check(conf: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let cwd = conf.parent().unwrap();
    let (status, out, err) = run_cli_env(&["check", "--conf", conf.to_str().unwrap()], cwd, env);
    (status.code(), out, err)
}

fn app(id: &str, listen: &str) -> String {
    keyless_api(id, listen, "http://127.0.0.1:1").to_string()
}

/// Every path under `dir` with its size and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            }
            out.insert(entry.path(), (meta.len(), meta.modified().ok()));
        }
    }
    out
}

#[test]
fn check_passes_the_repo_config() {
    let conf = repo_root().join("tyk.conf");
    let before = snapshot(&repo_root().join("apps"));
    let (code, out, err) = check(&conf, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let want = format!("configuration {} is valid (", conf.display());
    assert!(out.starts_with(&want), "{out}");
    assert_eq!(out.lines().count(), 1, "one result line: {out}");
    assert_eq!(before, snapshot(&repo_root().join("apps")));
}

#[test]
fn check_names_each_broken_file_and_exits_1() {
    let mut bad_type = api_def("badtype", "/bt/", "http://127.0.0.1:1");
    bad_type["proxy"]["listen_path"] = json!(5);
    let (dir, conf) = layout(
        json!({"policies": {"policy_path": "policies"}}),
        &[
            ("apps/good.json", app("good", "/good/")),
            ("apps/broken.json", "{\"api_id\": ".into()),
            ("apps/badtype.json", bad_type.to_string()),
            ("apps/reserved.json", app("reserved", "/tyk/x/")),
            (
                "policies/p1.json",
                json!({"id": "p1", "rate": 1, "per": 1}).to_string(),
            ),
            (
                "policies/p2.json",
                json!({"id": "p2", "rate": "fast"}).to_string(),
            ),
        ],
    );
    let (code, out, err) = check(&conf, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let d = dir.path().display();
    for prefix in [
        format!("{d}/apps/broken.json: "),
        format!("{d}/apps/badtype.json: proxy.listen_path: "),
        format!("{d}/apps/reserved.json: proxy.listen_path: "),
        format!("{d}/policies/p2.json: rate: "),
    ] {
        assert!(
            err.lines().any(|l| l.starts_with(&prefix)),
            "{prefix}\n{err}"
        );
    }
    assert!(!err.contains("good.json"), "{err}");
    assert_eq!(
        out,
        format!("configuration {} test failed (4 errors)\n", conf.display())
    );
}

#[test]
fn check_reports_a_config_error_as_file_field_message() {
    let (_dir, conf) = layout(json!({"listen_address": "nope"}), &[]);
    let (code, out, err) = check(&conf, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let want = format!("{}: listen_address: not an IP address", conf.display());
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
    assert_eq!(
        out,
        format!("configuration {} test failed (1 errors)\n", conf.display())
    );
}

#[test]
fn check_counts_warnings_and_stays_valid() {
    let (_dir, conf) = layout(
        json!({"enable_analytics": true}),
        &[("apps/a.json", app("a", "/a/"))],
    );
    let (code, out, err) = check(&conf, &[("TYK_GW_NOSUCHSETTING", "1")]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        out,
        format!(
            "configuration {} is valid (1 APIs, 0 policies, 2 warnings)\n",
            conf.display()
        )
    );
    assert!(err.contains("enable_analytics"), "{err}");
    assert!(err.contains("TYK_GW_NOSUCHSETTING"), "{err}");
}

#[test]
fn check_applies_tyk_gw_overrides() {
    let (_dir, conf) = layout(json!({}), &[]);
    let (code, out, err) = check(&conf, &[("TYK_GW_LISTENPORT", "80a")]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.lines()
            .any(|l| l.starts_with("TYK_GW_LISTENPORT: listen_port: ")),
        "{err}"
    );
}

#[test]
fn check_exits_2_when_the_config_cannot_be_read_or_args_are_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf");
    let (code, out, err) = check(&missing, &[]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.starts_with(&format!("{}: cannot read", missing.display())),
        "{err}"
    );
    let (status, _, err) = run_cli(&["check", "--bogus"], dir.path());
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "no file written"
    );
}

#[test]
fn lint_is_an_alias_of_check() {
    let (dir, conf) = layout(json!({}), &[("apps/a.json", app("a", "/a/"))]);
    let (status, out, err) = run_cli(&["lint", "--conf", conf.to_str().unwrap()], dir.path());
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(out.contains("is valid (1 APIs"), "{out}");
}

#[test]
fn check_writes_no_file_and_binds_no_socket() {
    // The ports the config names are taken: a start would fail to bind.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let (dir, conf) = layout(
        json!({
            "listen_port": held.local_addr().unwrap().port(),
            "control_api_port": held_admin.local_addr().unwrap().port(),
            "policies": {"policy_path": "policies"},
        }),
        &[
            ("apps/a.json", app("a", "/a/")),
            ("policies/p.json", json!({"id": "p"}).to_string()),
        ],
    );
    let before = snapshot(dir.path());
    let (code, out, err) = check(&conf, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("(1 APIs, 1 policies"), "{out}");
    assert_eq!(before, snapshot(dir.path()), "check wrote something");
    assert!(!dir.path().join("data").exists(), "no store opened");
}

#[test]
fn check_works_beside_a_running_gateway_holding_the_store() {
    let gw = Gateway::start(
        json!({}),
        &[("a", keyless_api("a", "/a/", "http://127.0.0.1:1"))],
    );
    let (code, out, err) = check(gw.conf_path(), &[]);
    assert_eq!(code, Some(0), "sled's lock is not taken: {out}{err}");
    assert!(out.contains("is valid (1 APIs"), "{out}");
}

#[test]
fn check_reads_tls_certificates_as_start_does() {
    let ca = crate::support::tls::Ca::new("ca");
    let leaf = ca.leaf(&["a.test"]);
    let other = ca.leaf(&["a.test"]);
    let conf = |key: &str| {
        json!({"http_server_options": {"use_ssl": true, "certificates": [
            {"domain_name": "a.test", "cert_file": "a.pem", "key_file": key}
        ]}})
    };
    let files = [
        ("a.pem", leaf.cert.clone()),
        ("a.key", leaf.key.clone()),
        ("other.key", other.key.clone()),
    ];
    let (_dir, good) = layout(conf("a.key"), &files);
    let (code, out, err) = check(&good, &[]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (_dir, bad) = layout(conf("other.key"), &files);
    let (code, out, err) = check(&bad, &[]);
    assert_eq!(code, Some(1), "{out}{err}");
    let want = format!(
        "{}: http_server_options.certificates[0].key_file: ",
        bad.display()
    );
    assert!(err.lines().any(|l| l.starts_with(&want)), "{err}");
}
