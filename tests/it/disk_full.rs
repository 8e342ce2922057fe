//! Issue 4 item 6: a full disk. Admin writes fail with 500, the proxy
//! keeps serving, and `/hello` reports the store as failing (the gateway
//! does not recover by itself: a supervisor restarts it on `fail`, and it
//! starts cleanly once space returns). Needs root for a small tmpfs, as CI
//! and the developer machines run.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::support::{Gateway, Upstream, keyless_api, request, session_for};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
    _holder: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let holder = tempfile::tempdir().unwrap();
        let dir = holder.path().join("disk");
        std::fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a tmpfs needs root (CI and our machines run as root)"
        );
        SmallDisk {
            dir,
            _holder: holder,
        }
    }

    fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

#[test]
fn full_disk_fails_admin_writes_but_the_proxy_keeps_serving() {
    let disk = SmallDisk::mount("2m");
    let up = Upstream::start();
    let store = disk.path().join("data");
    let mut apps = vec![("open", keyless_api("open", "/open/", &up.url("/")))];
    apps.push(("p", crate::support::api_def("p", "/p/", &up.url("/"))));
    let gw = Gateway::start(json!({"storage": {"type": "sled", "path": store}}), &apps);
    let mut session = session_for(&["p"]);
    let first = gw.create_key(session.clone());
    session["meta_data"] = json!({"pad": "x".repeat(4000)});
    let mut refused = None;
    for _ in 0..2000 {
        let r = gw.admin("POST", "/tyk/keys/create", Some(session.clone()));
        if r.status != 200 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a 2 MiB disk fills up");
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.json()["status"], json!("error"));
    assert_eq!(request(gw.port(), "GET", "/open/x", &[], None).status, 200);
    assert_eq!(
        gw.get_with_key("/p/x", &first).status,
        200,
        "known keys keep working"
    );
    let hello = gw.get("/hello", &[]).json();
    assert_eq!(hello["status"], json!("fail"), "{hello}");
    assert_eq!(hello["details"]["redis"]["status"], json!("fail"));
}
