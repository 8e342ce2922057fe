//! `/tyk/apis…` in file mode (CONTRACT §1.5): list and read the loaded
//! definitions, and write or delete `<app_path>/<api_id>.json`. Nothing
//! changes until a reload. An `api_id` that could name a path outside
//! `app_path` is refused (Tyk bug #3390).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::apidef::{ApiSpec, check_api_id, reserved_listen_path};
use crate::error::admin_error;
use crate::http::Response;
use crate::keyid::random_hex_id;

use super::{Call, json, ok, write_durably};

/// `GET /tyk/apis`.
pub fn list(call: &Call<'_>) -> Response {
    let registry = call.gw.registry();
    let defs: Vec<&Value> = registry.all().iter().map(|a| &a.raw).collect();
    json(&defs)
}

/// `GET /tyk/apis/{id}`.
pub fn get(call: &Call<'_>, id: &str) -> Response {
    match call.gw.registry().get(id) {
        Some(api) => json(&api.raw),
        None => admin_error(404, "API not found"),
    }
}

/// Reads and validates a definition body; Err is the response.
fn read_definition(call: &mut Call<'_>) -> Result<Value, Response> {
    let body = call.read_body()?;
    let mut def: Value =
        serde_json::from_slice(&body).map_err(|_| admin_error(400, "Request malformed"))?;
    let Some(obj) = def.as_object_mut() else {
        return Err(admin_error(400, "Request malformed"));
    };
    let missing_id = obj
        .get("api_id")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty);
    if missing_id {
        obj.insert("api_id".into(), Value::from(random_hex_id()));
    }
    let id = obj["api_id"].as_str().unwrap_or_default().to_string();
    if check_api_id(&id).is_err() {
        return Err(admin_error(400, "Invalid API ID"));
    }
    let invalid = |reason: String| {
        admin_error(
            400,
            &format!("Validation of API Definition failed. Reason: {reason}."),
        )
    };
    let spec = ApiSpec::from_value(
        Path::new("request"),
        def.clone(),
        call.gw.config.path_matching,
    )
    .map_err(|e| match e {
        crate::error::Error::Config { field, message, .. } if !field.is_empty() => {
            invalid(format!("{field}: {message}"))
        }
        other => invalid(other.to_string()),
    })?;
    let health = &call.gw.config.health_check_path;
    if let Some(why) = reserved_listen_path(&spec.listen.text, health) {
        return Err(invalid(format!("proxy.listen_path: {why}")));
    }
    Ok(def)
}

fn file_for(call: &Call<'_>, id: &str) -> PathBuf {
    call.gw.config.app_path.join(format!("{id}.json"))
}

fn save(call: &Call<'_>, id: &str, def: &Value, action: &str) -> Response {
    let path = file_for(call, id);
    let written = serde_json::to_string_pretty(def)
        .map_err(std::io::Error::from)
        .and_then(|text| {
            std::fs::create_dir_all(&call.gw.config.app_path)?;
            write_durably(&path, text.as_bytes())
        });
    if let Err(e) = written {
        log::error!("admin: cannot write {}: {e}", path.display());
        return admin_error(500, "file object creation failed, write error");
    }
    log::info!("admin: API {id} {action}: {}", path.display());
    ok(action, id, None)
}

/// `POST /tyk/apis`.
pub fn add(call: &mut Call<'_>) -> Response {
    let def = match read_definition(call) {
        Ok(d) => d,
        Err(res) => return res,
    };
    let id = def["api_id"].as_str().unwrap_or_default().to_string();
    save(call, &id, &def, "added")
}

/// `PUT /tyk/apis/{id}`.
pub fn update(call: &mut Call<'_>, id: &str) -> Response {
    if call.gw.registry().get(id).is_none() {
        return admin_error(404, "API not found");
    }
    let def = match read_definition(call) {
        Ok(d) => d,
        Err(res) => return res,
    };
    if def["api_id"].as_str() != Some(id) {
        return admin_error(
            400,
            "Request APIID does not match that in Definition! For Update operations these must match.",
        );
    }
    save(call, id, &def, "modified")
}

/// `DELETE /tyk/apis/{id}`.
pub fn delete(call: &Call<'_>, id: &str) -> Response {
    if call.gw.registry().get(id).is_none() || check_api_id(id).is_err() {
        return admin_error(404, "API not found");
    }
    let path = file_for(call, id);
    if let Err(e) = std::fs::remove_file(&path) {
        log::error!("admin: cannot delete {}: {e}", path.display());
        return admin_error(500, "Delete failed");
    }
    ok("deleted", id, None)
}
