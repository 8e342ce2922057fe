//! `TYK_GW_*` environment overrides (issue 11 item 5, OPS.md §1): Tyk's
//! names, envconfig's parsing, env over file, errors naming the variable.

use serde_json::json;

use crate::support::*;

fn with_env(pairs: &[(&str, &str)]) -> GatewayBuilder {
    pairs
        .iter()
        .fold(Gateway::builder(), |b, (k, v)| b.env(k, v))
}

fn refused(pairs: &[(&str, &str)]) -> Exited {
    match with_env(pairs).try_start() {
        Ok(gw) => panic!("started despite {pairs:?}:\n{}", gw.logs().join("\n")),
        Err(e) => e,
    }
}

/// Exit 2 and an `error:` line that starts with the variable's name.
#[track_caller]
fn assert_refused_naming(pairs: &[(&str, &str)], var: &str) {
    let e = refused(pairs);
    assert_eq!(e.code(), Some(2), "{e:?}");
    let line = e.error_line().unwrap_or_default();
    assert!(line.starts_with(&format!("error: {var}: ")), "{e:?}");
}

fn warned(gw: &Gateway, needle: &str) -> bool {
    gw.logs()
        .iter()
        .any(|l| l.contains("WARN") && l.contains(needle))
}

#[test]
fn listenport_env_moves_the_listener_over_the_file() {
    let port = free_port();
    let gw = with_env(&[("TYK_GW_LISTENPORT", &port.to_string())]).start();
    assert_eq!(gw.port(), port, "the file says 0, the variable wins");
    assert_eq!(request(port, "GET", "/hello", &[], None).status, 200);
}

#[test]
fn listenport_takes_go_base_prefixes() {
    let port = free_port();
    let gw = with_env(&[("TYK_GW_LISTENPORT", &format!("0x{port:x}"))]).start();
    assert_eq!(gw.port(), port);
    let port = free_port();
    let gw = with_env(&[("TYK_GW_LISTENPORT", &format!("0o{port:o}"))]).start();
    assert_eq!(gw.port(), port);
    // A leading 0 alone means octal too.
    let port = free_port();
    let gw = with_env(&[("TYK_GW_LISTENPORT", &format!("0{port:o}"))]).start();
    assert_eq!(gw.port(), port);
}

#[test]
fn bad_listenport_stops_the_start_naming_the_variable() {
    assert_refused_naming(&[("TYK_GW_LISTENPORT", "80a")], "TYK_GW_LISTENPORT");
    // Set but empty counts, and an int cannot be empty.
    assert_refused_naming(&[("TYK_GW_LISTENPORT", "")], "TYK_GW_LISTENPORT");
    // A value that parses but fails validation is blamed on the variable too.
    assert_refused_naming(&[("TYK_GW_LISTENPORT", "70000")], "TYK_GW_LISTENPORT");
}

#[test]
fn secret_env_replaces_the_file_secret() {
    let gw = with_env(&[("TYK_GW_SECRET", "from-env")]).start();
    let with = |s: &str| {
        request(
            gw.port(),
            "GET",
            "/tyk/apis",
            &[("x-tyk-authorization", s)],
            None,
        )
    };
    assert_eq!(
        with(SECRET).status,
        403,
        "the file's secret no longer works"
    );
    assert_eq!(with("from-env").status, 200);
}

#[test]
fn empty_secret_env_blanks_the_secret() {
    let gw = with_env(&[("TYK_GW_SECRET", "")]).start();
    assert!(warned(&gw, "loopback"), "{}", gw.logs().join("\n"));
    let r = request(gw.port(), "GET", "/tyk/apis", &[], None);
    assert_eq!(r.status, 200, "empty secret: loopback needs none");
}

#[test]
fn storage_env_names_reach_the_redis_settings() {
    // A port where no Redis listens: the error names the address the
    // variables made.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port().to_string();
    drop(closed);
    let gw = with_env(&[
        ("TYK_GW_STORAGE_TYPE", "redis"),
        ("TYK_GW_STORAGE_HOST", "127.0.0.1"),
        ("TYK_GW_STORAGE_PORT", &port),
    ])
    .start();
    let addr = format!("redis://127.0.0.1:{port}");
    assert!(gw.saw_log(&addr), "{}", gw.logs().join("\n"));
    assert!(!warned(&gw, "TYK_GW_STORAGE_HOST"), "a known name");
}

#[test]
fn unknown_tyk_gw_name_is_warned_about() {
    let gw = with_env(&[("TYK_GW_USEDBAPPCONFIG", "false")]).start();
    assert!(
        warned(&gw, "TYK_GW_USEDBAPPCONFIG: not a Tyk gateway setting"),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn usessl_is_parsed_as_a_go_bool() {
    for ok in ["0", "f", "FALSE", "False"] {
        let gw = with_env(&[("TYK_GW_HTTPSERVEROPTIONS_USESSL", ok)]).start();
        drop(gw);
    }
    assert_refused_naming(
        &[("TYK_GW_HTTPSERVEROPTIONS_USESSL", "yes")],
        "TYK_GW_HTTPSERVEROPTIONS_USESSL",
    );
    assert_refused_naming(
        &[("TYK_GW_HTTPSERVEROPTIONS_USESSL", "")],
        "TYK_GW_HTTPSERVEROPTIONS_USESSL",
    );
}

#[test]
fn tls_versions_take_0x0303_and_771() {
    for v in ["0x0303", "771"] {
        with_env(&[
            ("TYK_GW_HTTPSERVEROPTIONS_MINVERSION", v),
            ("TYK_GW_PROXYSSLMINVERSION", v),
        ])
        .start();
    }
    // uint16: out of range, and no sign.
    assert_refused_naming(
        &[("TYK_GW_HTTPSERVEROPTIONS_MINVERSION", "0x10000")],
        "TYK_GW_HTTPSERVEROPTIONS_MINVERSION",
    );
    assert_refused_naming(
        &[("TYK_GW_PROXYSSLMINVERSION", "-771")],
        "TYK_GW_PROXYSSLMINVERSION",
    );
}

#[test]
fn slices_split_on_commas() {
    // hash_key_function_fallback is a list: a string there would not load.
    // Starting is the check: `RawConfig` refuses a non-list there.
    with_env(&[
        ("TYK_GW_HASHKEYFUNCTIONFALLBACK", "murmur32,sha256"),
        ("TYK_GW_HTTPSERVEROPTIONS_CIPHERS", "TLS_AES_128_GCM_SHA256"),
        ("TYK_GW_PROXYSSLCIPHERSUITES", ""),
    ])
    .start();
}

#[test]
fn maps_take_key_colon_value_pairs() {
    let gw = with_env(&[("TYK_GW_SECRETS", "key:value,key2:/value2")]).start();
    assert!(warned(&gw, "secrets"), "{}", gw.logs().join("\n"));
    assert_refused_naming(&[("TYK_GW_SECRETS", "url:http://x")], "TYK_GW_SECRETS");
}

#[test]
fn struct_slices_are_json() {
    let certs = r#"[{"domain_name":"a.example","cert_file":"a.pem","key_file":"a.key"}]"#;
    let gw = with_env(&[("TYK_GW_HTTPSERVEROPTIONS_CERTIFICATES", certs)]).start();
    drop(gw);
    assert_refused_naming(
        &[("TYK_GW_HTTPSERVEROPTIONS_CERTIFICATES", "a.pem,a.key")],
        "TYK_GW_HTTPSERVEROPTIONS_CERTIFICATES",
    );
}

#[test]
fn durations_and_floats_parse_as_go() {
    with_env(&[
        ("TYK_GW_LIVENESSCHECK_CHECKDURATION", "1m30s"),
        ("TYK_GW_PROXYDEFAULTTIMEOUT", "0.5"),
    ])
    .start();
    assert_refused_naming(
        &[("TYK_GW_LIVENESSCHECK_CHECKDURATION", "10")],
        "TYK_GW_LIVENESSCHECK_CHECKDURATION",
    );
    assert_refused_naming(
        &[("TYK_GW_PROXYDEFAULTTIMEOUT", "soon")],
        "TYK_GW_PROXYDEFAULTTIMEOUT",
    );
}

#[test]
fn bools_set_but_empty_fail() {
    assert_refused_naming(&[("TYK_GW_HASHKEYS", "")], "TYK_GW_HASHKEYS");
}

#[test]
fn omitconfigfile_ignores_the_file() {
    let port = free_port();
    // The file alone would not start (bad value); without it the env is all.
    let gw = Gateway::builder()
        .conf(json!({"rate_limit_response_headers": "bogus"}))
        .env("TYK_GW_OMITCONFIGFILE", "true")
        .env("TYK_GW_LISTENADDRESS", "127.0.0.1")
        .env("TYK_GW_LISTENPORT", &port.to_string())
        .start();
    assert_eq!(gw.port(), port);
    // The file's secret is gone too: the admin API is loopback-only.
    assert!(warned(&gw, "loopback"), "{}", gw.logs().join("\n"));
    // Any other value keeps the file (Tyk compares with "true").
    let Err(e) = Gateway::builder()
        .conf(json!({"rate_limit_response_headers": "bogus"}))
        .env("TYK_GW_OMITCONFIGFILE", "1")
        .try_start()
    else {
        panic!("the file is used, and it is wrong");
    };
    assert!(
        e.stderr_text().contains("rate_limit_response_headers"),
        "{e:?}"
    );
}

#[test]
fn names_are_go_field_names_not_json_keys() {
    let gw = with_env(&[
        ("TYK_GW_PROXYSSLCIPHERSUITES", "TLS_AES_128_GCM_SHA256"),
        ("TYK_GW_STORAGE_MAXIDLE", "100"),
        (
            "TYK_GW_PORTWHITELIST",
            r#"{"http":{"ranges":[{"from":8000,"to":9000}]}}"#,
        ),
        ("TYK_GW_TRACER_ENABLED", "false"),
        ("TYK_GW_DNSCACHE_ENABLED", "true"),
        (
            "TYK_GW_SECURITY_CERTIFICATEEXPIRYMONITOR_WARNINGTHRESHOLDDAYS",
            "30",
        ),
        ("TYK_GW_OPENTELEMETRY_ENABLED", "false"),
        ("TYK_GW_OPENTELEMETRY_TRACES_ENABLED", "false"),
        ("TYK_GW_USEDBAPPCONFIGS", "false"),
    ])
    .start();
    assert!(
        !warned(&gw, "not a Tyk gateway setting"),
        "{}",
        gw.logs().join("\n")
    );
    // Tyk settings Gatehouse does not implement land in the JSON, where
    // the unknown-field warning names them by their JSON path (a whole
    // unknown object by its top key).
    let line = gw
        .logs()
        .into_iter()
        .find(|l| l.contains("fields with no effect"))
        .unwrap_or_default();
    for path in [
        "storage.optimisation_max_idle",
        "ports_whitelist",
        "tracing",
        "dns_cache",
        "security",
        "opentelemetry",
    ] {
        assert!(line.contains(path), "{path}: {line}");
    }
}

#[test]
fn usedbappconfigs_reaches_its_field() {
    let e = refused(&[("TYK_GW_USEDBAPPCONFIGS", "true")]);
    assert_eq!(e.code(), Some(2), "{e:?}");
    let line = e.error_line().unwrap_or_default();
    assert!(
        line.starts_with(
            "error: TYK_GW_USEDBAPPCONFIGS: field `use_db_app_configs`: must be false"
        ),
        "{e:?}"
    );
}

#[test]
fn ignored_go_fields_have_no_variable() {
    // DnsCacheConfig.CheckInterval is `ignored:"true"` in Tyk.
    let gw = with_env(&[("TYK_GW_DNSCACHE_CHECKINTERVAL", "5")]).start();
    assert!(
        warned(
            &gw,
            "TYK_GW_DNSCACHE_CHECKINTERVAL: not a Tyk gateway setting"
        ),
        "{}",
        gw.logs().join("\n")
    );
}

#[test]
fn loglevel_env_sets_the_log_level_when_rust_log_is_unset() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("tyk.conf");
    let mut c = default_conf();
    c["enable_analytics"] = json!(true);
    std::fs::write(&conf, c.to_string()).unwrap();
    std::fs::create_dir_all(dir.path().join("apps")).unwrap();
    let app = keyless_api("a", "/a/", "http://127.0.0.1:1").to_string();
    std::fs::write(dir.path().join("apps/a.json"), app).unwrap();
    let args = ["check", "--conf", conf.to_str().unwrap()];
    let quiet = [("RUST_LOG", ""), ("TYK_GW_LOGLEVEL", "error")];
    let (status, out, err) = run_cli_env(&args, dir.path(), &quiet);
    assert_eq!(status.code(), Some(0), "{out}{err}");
    assert!(!err.contains("enable_analytics"), "warnings hidden: {err}");
    assert!(out.contains("1 warnings"), "but counted: {out}");
    let loud = [("RUST_LOG", ""), ("TYK_GW_LOGLEVEL", "Info")];
    let (_, _, err) = run_cli_env(&args, dir.path(), &loud);
    assert!(err.contains("info: loaded API"), "{err}");
}
