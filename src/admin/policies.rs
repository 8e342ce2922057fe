//! `/tyk/policies…` in file mode (CONTRACT §1.6): list and read the loaded
//! policies, and write or delete `<policy_path>/<id>.json` (the config's
//! folder when `policy_path` is unset). As in Tyk, nothing changes for
//! requests until a reload, and a written file is read back only when
//! `policy_path` is set.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::auth::policy::Policy;
use crate::error::admin_error;
use crate::http::Response;

use super::{Call, json, ok, write_durably};

/// `GET /tyk/policies`: the loaded policies, in load order.
pub fn list(call: &Call<'_>) -> Response {
    json(&call.gw.policies().all())
}

/// `GET /tyk/policies/{id}`.
pub fn get(call: &Call<'_>, id: &str) -> Response {
    match call.gw.policies().get(id) {
        Some(p) => json(p),
        None => admin_error(404, "Policy not found"),
    }
}

/// Tyk's policy id alphabet (`allow_unsafe_policy_ids` off).
fn valid_id(id: &str) -> bool {
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'~'))
}

/// `POST /tyk/policies[/{id}]` (the id comes from the body) and
/// `PUT /tyk/policies/{id}`.
pub fn write(call: &mut Call<'_>, put_id: Option<&str>) -> Response {
    if call.gw.config.policies.service {
        return admin_error(
            500,
            "Due to enabled service policy source, please use the Dashboard API",
        );
    }
    let policy = match read_policy(call) {
        Ok(p) => p,
        Err(res) => return res,
    };
    if !valid_id(&policy.id) {
        return admin_error(
            400,
            "Invalid Policy ID: Allowed characters: a-z, A-Z, 0-9, ., _, -, ~",
        );
    }
    if put_id.is_some_and(|id| id != policy.id) {
        return admin_error(
            400,
            "Request ID does not match that in policy! For Update operations these must match.",
        );
    }
    if policy.id.is_empty() {
        return admin_error(400, "Unable to create policy without id.");
    }
    let dir = &call.gw.config.policy_write_dir;
    if !dir.is_dir() {
        log::error!("admin: policy folder {} is not a folder", dir.display());
        return admin_error(500, "Unable to access policy storage.");
    }
    let Ok(text) = serde_json::to_string_pretty(&policy) else {
        return admin_error(500, "Marshalling failed");
    };
    let path = file_for(dir, &policy.id);
    if let Err(e) = write_durably(&path, text.as_bytes()) {
        log::error!("admin: cannot write {}: {e}", path.display());
        return admin_error(500, "Failed to create file!");
    }
    let action = if put_id.is_some() {
        "modified"
    } else {
        "added"
    };
    log::info!("admin: policy {} {action}: {}", policy.id, path.display());
    ok(action, &policy.id, None)
}

/// The body as a policy; Err is Tyk's 400.
fn read_policy(call: &mut Call<'_>) -> Result<Policy, Response> {
    let body = call.read_body()?;
    let malformed = || admin_error(400, "Request malformed");
    let raw: Value = serde_json::from_slice(&body).map_err(|_| malformed())?;
    if !raw.is_object() {
        return Err(malformed());
    }
    Policy::from_value(Path::new("request"), "", raw).map_err(|_| malformed())
}

fn file_for(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// `DELETE /tyk/policies/{id}`: a missing file is Tyk's 500.
pub fn delete(call: &Call<'_>, id: &str) -> Response {
    let path = file_for(&call.gw.config.policy_write_dir, id);
    let removed = if valid_id(id) {
        std::fs::remove_file(&path)
    } else {
        Err(std::io::Error::other("not a policy id"))
    };
    if let Err(e) = removed {
        log::error!("admin: cannot delete policy {}: {e}", path.display());
        return admin_error(500, "Delete failed");
    }
    ok("deleted", id, None)
}
