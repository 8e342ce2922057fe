//! TLS settings as Tyk writes them (`http_server_options.use_ssl`,
//! `certificates`, `ssl_certificates`, `min_version`, `max_version`,
//! `ssl_ciphers`, and the `proxy_ssl_*` / `proxy.transport` fields for
//! upstreams), turned into rustls configurations.
//!
//! Listener: each certificate is `{domain_name, cert_file, key_file}` or a
//! PEM file holding both (`ssl_certificates`); the client's SNI picks one:
//! its `domain_name` (`*.` wildcards one label), or, without one, the
//! names the certificate itself is valid for. No match, or no SNI: the
//! first certificate, as Go's `crypto/tls` does. Versions are Go's numbers
//! (769 = 1.0 ... 772 = 1.3); rustls speaks 1.2 and 1.3 only, so 1.0 and
//! 1.1 read as 1.2 with a warning. Cipher names are Go's; only AEAD
//! suites exist in rustls, the others are warned about and skipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::SupportedProtocolVersion;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A certificate for the listener, as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSource {
    /// `domain_name`; empty: the names in the certificate.
    pub domain: String,
    pub cert_file: PathBuf,
    /// The same file as `cert_file` for `ssl_certificates` entries.
    pub key_file: PathBuf,
    /// The config field, for errors (`http_server_options.certificates[0]`).
    pub field: String,
}

/// TLS versions as Go numbers; 0 = no bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Versions {
    pub min: u16,
    pub max: u16,
}

/// The listener's TLS (`http_server_options` with `use_ssl`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerTls {
    pub certs: Vec<CertSource>,
    pub versions: Versions,
    pub ciphers: Vec<String>,
}

/// Go's TLS version constants.
pub const TLS10: u16 = 0x0301;
pub const TLS12: u16 = 0x0303;
pub const TLS13: u16 = 0x0304;

impl Versions {
    /// Checks Go numbers: 0, or 769..=772.
    pub fn new(min: i64, max: i64) -> Result<Versions, (&'static str, String)> {
        let one = |field: &'static str, v: i64| match u16::try_from(v) {
            Ok(0) => Ok(0),
            Ok(v) if (TLS10..=TLS13).contains(&v) => Ok(v),
            _ => Err((
                field,
                format!("{v} is not a TLS version (771 = TLS 1.2, 772 = TLS 1.3, or 0)"),
            )),
        };
        let v = Versions {
            min: one("min_version", min)?,
            max: one("max_version", max)?,
        };
        if v.min != 0 && v.max != 0 && v.min > v.max {
            return Err((
                "min_version",
                format!("{} is above max_version {}", v.min, v.max),
            ));
        }
        Ok(v)
    }

    /// The rustls versions within the bounds, and a warning when a bound
    /// asked for a version rustls does not speak.
    pub fn rustls(self) -> (Vec<&'static SupportedProtocolVersion>, Option<String>) {
        let asked_min = if self.min == 0 { TLS12 } else { self.min };
        let asked_max = if self.max == 0 { TLS13 } else { self.max };
        let warning = (asked_min < TLS12 || asked_max < TLS12).then(|| {
            format!(
                "TLS versions below 1.2 ({}) are not supported: TLS 1.2 is the oldest served",
                asked_min.min(asked_max)
            )
        });
        let (min, max) = (asked_min.max(TLS12), asked_max.max(TLS12));
        let mut out = Vec::new();
        if min <= TLS12 {
            out.push(&rustls::version::TLS12);
        }
        if max >= TLS13 {
            out.push(&rustls::version::TLS13);
        }
        (out, warning)
    }
}

/// The ring provider with only the TLS 1.2 suites `names` allows (Go's
/// names, any case; TLS 1.3 suites are always on, as in Go). Returns the
/// names no suite matched.
pub fn provider(names: &[String]) -> (CryptoProvider, Vec<String>) {
    let mut p = rustls::crypto::ring::default_provider();
    if names.is_empty() {
        return (p, Vec::new());
    }
    let wanted: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_ascii_uppercase())
        .collect();
    let name_of = |s: &rustls::SupportedCipherSuite| format!("{:?}", s.suite());
    let matches = |suite: &str, go: &str| suite == go || suite == format!("{go}_SHA256");
    let unknown = wanted
        .iter()
        .filter(|w| !p.cipher_suites.iter().any(|s| matches(&name_of(s), w)))
        .cloned()
        .collect();
    p.cipher_suites.retain(|s| {
        s.version() == &rustls::version::TLS13 || wanted.iter().any(|w| matches(&name_of(s), w))
    });
    (p, unknown)
}

/// Why the listener's TLS could not be set up: the field and the reason.
#[derive(Debug)]
pub struct TlsError {
    pub field: String,
    pub why: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.why)
    }
}

fn err(field: &str, why: impl fmt::Display) -> TlsError {
    TlsError {
        field: field.to_string(),
        why: why.to_string(),
    }
}

/// A certificate chain and key read from PEM files, checked to match.
pub fn load_pair(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, (&'static str, String)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| ("cert_file", format!("{}: {e}", cert.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| ("cert_file", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err((
            "cert_file",
            format!("{}: no certificate in it", cert.display()),
        ));
    }
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        (
            "key_file",
            format!("{}: no usable private key: {e}", key.display()),
        )
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|e| {
        (
            "key_file",
            format!("{} does not fit {}: {e}", key.display(), cert.display()),
        )
    })
}

/// The listener's rustls configuration. Warnings (versions, ciphers) are
/// logged; unusable certificates are errors naming their field.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (provider, unknown) = provider(&tls.ciphers);
    for name in unknown {
        log::warn!(
            "http_server_options.ssl_ciphers: {name} is not available (rustls offers AEAD suites only): skipped"
        );
    }
    if tls.certs.is_empty() {
        return Err(err(
            "http_server_options.use_ssl",
            "is true but no certificate is configured (certificates or ssl_certificates)",
        ));
    }
    let mut certs = Vec::new();
    for c in &tls.certs {
        let key = load_pair(&c.cert_file, &c.key_file, &provider)
            .map_err(|(field, why)| err(&format!("{}.{field}", c.field), why))?;
        certs.push((c.domain.to_ascii_lowercase(), Arc::new(key)));
    }
    let (versions, warning) = tls.versions.rustls();
    if let Some(w) = warning {
        log::warn!("http_server_options.min_version: {w}");
    }
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| err("http_server_options.min_version", e))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni { certs }));
    Ok(Arc::new(config))
}

/// Picks the listener's certificate by SNI.
#[derive(Debug)]
struct BySni {
    /// (lower-case `domain_name` or "", key), in configuration order.
    certs: Vec<(String, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = self.certs.first().map(|(_, k)| k.clone());
        let Some(sni) = hello.server_name() else {
            return first;
        };
        let sni = sni.to_ascii_lowercase();
        // `domain_name` first, as Tyk's map puts it over the SAN names.
        let by_domain = self
            .certs
            .iter()
            .find(|(d, _)| !d.is_empty() && domain_matches(d, &sni));
        let by_san = || {
            let name = ServerName::try_from(sni.as_str()).ok()?;
            self.certs.iter().find(|(d, k)| {
                d.is_empty()
                    && k.end_entity_cert().is_ok_and(|der| {
                        webpki::EndEntityCert::try_from(der)
                            .is_ok_and(|c| c.verify_is_valid_for_subject_name(&name).is_ok())
                    })
            })
        };
        by_domain.or_else(by_san).map(|(_, k)| k.clone()).or(first)
    }
}

/// `domain_name` against an SNI name: exact, or `*.example.com` for one
/// more label.
fn domain_matches(domain: &str, sni: &str) -> bool {
    match domain.strip_prefix("*.") {
        Some(base) => sni
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
        None => domain == sni,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_take_one_label() {
        assert!(domain_matches("*.example.com", "a.example.com"));
        assert!(!domain_matches("*.example.com", "a.b.example.com"));
        assert!(!domain_matches("*.example.com", "example.com"));
        assert!(!domain_matches("*.example.com", ".example.com"));
        assert!(domain_matches("api.example.com", "api.example.com"));
        assert!(!domain_matches("api.example.com", "xapi.example.com"));
    }

    #[test]
    fn versions_map_go_numbers() {
        let names = |v: Versions| {
            let (list, warn) = v.rustls();
            let l: Vec<_> = list.iter().map(|v| format!("{:?}", v.version)).collect();
            (l, warn.is_some())
        };
        let both = vec!["TLSv1_2".to_string(), "TLSv1_3".to_string()];
        assert_eq!(names(Versions::new(0, 0).unwrap()), (both.clone(), false));
        assert_eq!(names(Versions::new(769, 0).unwrap()), (both, true));
        assert_eq!(names(Versions::new(772, 0).unwrap()).0, vec!["TLSv1_3"]);
        assert_eq!(names(Versions::new(0, 771).unwrap()).0, vec!["TLSv1_2"]);
        assert_eq!(names(Versions::new(0, 770).unwrap()).0, vec!["TLSv1_2"]);
        assert!(Versions::new(0x0303, 0).is_ok());
        assert_eq!(Versions::new(12, 0).unwrap_err().0, "min_version");
        assert_eq!(Versions::new(772, 771).unwrap_err().0, "min_version");
    }

    #[test]
    fn ciphers_use_go_names_and_keep_tls13() {
        let (p, unknown) = provider(&[
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
            "tls_ecdhe_rsa_with_chacha20_poly1305".into(),
            "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
        ]);
        assert_eq!(unknown, vec!["TLS_RSA_WITH_AES_128_CBC_SHA"]);
        let names: Vec<String> = p
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()));
        assert!(names.contains(&"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".to_string()));
        assert!(!names.contains(&"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384".to_string()));
        assert!(names.contains(&"TLS13_AES_128_GCM_SHA256".to_string()));
    }
}
