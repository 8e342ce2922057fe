//! The version table an API compiles (CONTRACT §7) and the expiry dates of
//! APIs and versions. Choosing a request's version is `pipeline::version`'s.

use super::ApiDefinition;

/// When something stops being served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    Never,
    /// Unix seconds.
    At(i64),
    /// The date did not parse: Tyk treats that as already expired.
    Unparsable,
}

impl Expiry {
    /// `2006-01-02 15:04` (UTC); `""` and `-1` mean never.
    pub fn parse(text: &str) -> Expiry {
        let text = text.trim();
        if text.is_empty() || text == "-1" {
            return Expiry::Never;
        }
        let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
        match time::PrimitiveDateTime::parse(text, format) {
            Ok(t) => Expiry::At(t.assume_utc().unix_timestamp()),
            Err(_) => Expiry::Unparsable,
        }
    }

    pub fn expired(self, now: i64) -> bool {
        match self {
            Expiry::Never => false,
            Expiry::At(t) => now > t,
            Expiry::Unparsable => true,
        }
    }
}

/// Where the version name is read from (`definition.location`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionLocation {
    Header,
    UrlParam,
    Url,
}

/// The compiled version table.
#[derive(Clone, Debug)]
pub struct Versioning {
    pub not_versioned: bool,
    pub location: VersionLocation,
    pub key: String,
    pub strip_path: bool,
    pub default_version: String,
    pub fallback_to_default: bool,
    pub versions: crate::FastMap<String, Expiry>,
    /// For a non-versioned API: the version every request uses, or the
    /// 403 message; resolved at load, not per request.
    pub unversioned: Result<(String, Expiry), &'static str>,
}

pub(super) fn compile_versions(def: &ApiDefinition) -> Versioning {
    let d = &def.definition;
    let location = match d.location.as_str() {
        "url-param" => VersionLocation::UrlParam,
        "url" => VersionLocation::Url,
        _ => VersionLocation::Header,
    };
    let versions = def
        .version_data
        .versions
        .iter()
        .map(|(name, v)| (name.clone(), Expiry::parse(&v.expires)))
        .collect();
    let mut v = Versioning {
        not_versioned: def.version_data.not_versioned,
        location,
        key: d.key.clone(),
        strip_path: d.strip_path || d.strip_versioning_data,
        default_version: def.version_data.default_version.clone(),
        fallback_to_default: d.fallback_to_default,
        versions,
        unversioned: Err(""),
    };
    v.unversioned = non_versioned_default(&v);
    v
}

/// The one version a non-versioned API uses.
pub fn non_versioned_default(v: &Versioning) -> Result<(String, Expiry), &'static str> {
    if v.versions.len() == 1 {
        let (name, e) = v.versions.iter().next().expect("one version");
        return Ok((name.clone(), *e));
    }
    let defaults: Vec<_> = ["Default", "default", ""]
        .iter()
        .filter_map(|n| v.versions.get_key_value(*n))
        .collect();
    match defaults.as_slice() {
        [(name, e)] => Ok(((*name).clone(), **e)),
        [] => Err("No default API version for this non-versioned API found"),
        _ => Err("Ambiguous default API version for this non-versioned API"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_formats() {
        assert_eq!(Expiry::parse(""), Expiry::Never);
        assert_eq!(Expiry::parse("-1"), Expiry::Never);
        assert_eq!(Expiry::parse("3000-01-02 15:04"), Expiry::At(32503820640));
        assert!(Expiry::parse("soon").expired(0));
        assert!(Expiry::parse("2000-01-01 00:00").expired(1_000_000_000));
    }
}
