//! Version check (CONTRACT §7, and API expiry §4): which version a request
//! is for, whether it exists and has not expired, and the
//! `X-Tyk-Api-Expires` header. Whether the key may use that version is
//! `access`'s question.

use crate::apidef::{Expiry, VersionLocation, Versioning};
use crate::http::Request;

use super::{Exchange, Flow};

pub fn check(x: &mut Exchange<'_>) -> Flow {
    let api = x.api;
    if api.expiration.expired(x.now) {
        return x.reject(
            403,
            "API has expired, please check documentation or contact administrator",
        );
    }
    let v = &api.versioning;
    let (name, expiry) = if v.not_versioned {
        match &v.unversioned {
            Ok((name, expiry)) => (name.clone(), *expiry),
            Err(message) => return x.reject(403, message),
        }
    } else {
        match requested_version(v, &x.req, &x.rest) {
            Ok((name, expiry, strip)) => {
                if expiry.expired(x.now) {
                    return x.reject(403, "Api Version has expired, please check documentation or contact administrator");
                }
                x.strip_version = strip;
                (name, expiry)
            }
            Err(message) => return x.reject(403, message),
        }
    };
    if let Some(at) = future_expiry(api.expiration, expiry, x.now) {
        x.response_headers.set("X-Tyk-Api-Expires", http_date(at));
    }
    x.rules = api.endpoints.get(&name);
    x.version = Some(name);
    Flow::Continue
}

/// The version named by the request, with the path segment to strip.
fn requested_version(
    v: &Versioning,
    req: &Request,
    rest: &str,
) -> Result<(String, Expiry, Option<String>), &'static str> {
    let (mut name, segment) = match v.location {
        VersionLocation::Header => (
            req.headers.get(&v.key).unwrap_or_default().to_string(),
            None,
        ),
        VersionLocation::UrlParam => (req.query_param(&v.key).unwrap_or_default(), None),
        VersionLocation::Url => {
            let seg = rest
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or_default();
            (seg.to_string(), Some(seg.to_string()))
        }
    };
    if name.is_empty() {
        name = v.default_version.clone();
    }
    if name.is_empty() {
        return Err("Version information not found");
    }
    let strip = segment.filter(|s| v.strip_path && !s.is_empty() && *s == name);
    if let Some(e) = v.versions.get(&name) {
        return Ok((name, *e, strip));
    }
    match v.versions.get(&v.default_version) {
        Some(e) if v.fallback_to_default => Ok((v.default_version.clone(), *e, None)),
        _ => Err("This API version does not seem to exist"),
    }
}

fn future_expiry(api: Expiry, version: Expiry, now: i64) -> Option<i64> {
    [api, version]
        .into_iter()
        .filter_map(|e| match e {
            Expiry::At(t) if t > now => Some(t),
            _ => None,
        })
        .min()
}

/// RFC 1123 with `UTC`, as Go's `time.RFC1123` prints it.
pub fn http_date(unix: i64) -> String {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] UTC"
    );
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apidef::non_versioned_default;

    fn versioning(names: &[&str]) -> Versioning {
        Versioning {
            not_versioned: true,
            location: VersionLocation::Header,
            key: "version".into(),
            strip_path: false,
            default_version: String::new(),
            fallback_to_default: false,
            versions: names
                .iter()
                .map(|n| (n.to_string(), Expiry::Never))
                .collect::<crate::FastMap<_, _>>(),
            unversioned: Err("computed by non_versioned_default"),
        }
    }

    #[test]
    fn non_versioned_default_rules() {
        assert_eq!(non_versioned_default(&versioning(&["v1"])).unwrap().0, "v1");
        assert_eq!(
            non_versioned_default(&versioning(&["v1", "Default"]))
                .unwrap()
                .0,
            "Default"
        );
        assert_eq!(
            non_versioned_default(&versioning(&["Default", "default"])).unwrap_err(),
            "Ambiguous default API version for this non-versioned API"
        );
        assert_eq!(
            non_versioned_default(&versioning(&["a", "b"])).unwrap_err(),
            "No default API version for this non-versioned API found"
        );
    }

    #[test]
    fn versioned_lookup_rules() {
        let mut v = versioning(&["v1", "v2"]);
        v.not_versioned = false;
        let req = |h: &str| Request::fake("GET", "/x", &[("version", h)]);
        assert_eq!(requested_version(&v, &req("v2"), "/").unwrap().0, "v2");
        assert_eq!(
            requested_version(&v, &req(""), "/").unwrap_err(),
            "Version information not found"
        );
        assert_eq!(
            requested_version(&v, &req("v9"), "/").unwrap_err(),
            "This API version does not seem to exist"
        );
        v.default_version = "v1".into();
        assert_eq!(requested_version(&v, &req(""), "/").unwrap().0, "v1");
        v.fallback_to_default = true;
        assert_eq!(requested_version(&v, &req("v9"), "/").unwrap().0, "v1");
    }

    #[test]
    fn http_date_matches_go_rfc1123() {
        assert_eq!(http_date(32503820640), "Thu, 02 Jan 3000 15:04:00 UTC");
    }
}
