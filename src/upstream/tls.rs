//! TLS to `https://` upstreams: the gateway's `proxy_ssl_*` settings,
//! overridden per API by `proxy.transport` (Tyk's merge: the API's
//! versions and ciphers when set, `ssl_insecure_skip_verify` if either
//! says so), the system's trusted roots (`SSL_CERT_FILE` / `SSL_CERT_DIR`
//! honoured, as Go does), and SNI from the target's host. A rustls client
//! configuration is built once per distinct setting and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::http::tls::{Versions, provider};

/// How to speak TLS to an upstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClientTls {
    /// Accept any certificate (`proxy_ssl_insecure_skip_verify`).
    pub insecure: bool,
    pub versions: Versions,
    pub ciphers: Vec<String>,
}

impl ClientTls {
    /// `api`'s settings over these (the gateway's).
    pub fn with(&self, api: &ClientTls) -> ClientTls {
        ClientTls {
            insecure: self.insecure || api.insecure,
            versions: Versions {
                min: if api.versions.min != 0 {
                    api.versions.min
                } else {
                    self.versions.min
                },
                max: if api.versions.max != 0 {
                    api.versions.max
                } else {
                    self.versions.max
                },
            },
            ciphers: if api.ciphers.is_empty() {
                self.ciphers.clone()
            } else {
                api.ciphers.clone()
            },
        }
    }
}

/// What a TLS connection to one upstream needs.
#[derive(Clone, Debug)]
pub struct TlsTo {
    pub config: Arc<rustls::ClientConfig>,
    pub name: ServerName<'static>,
}

/// The gateway's upstream TLS: its settings, the trusted roots, and the
/// configurations built so far.
pub struct TlsClients {
    global: ClientTls,
    roots: Arc<RootCertStore>,
    built: Mutex<HashMap<ClientTls, Arc<rustls::ClientConfig>>>,
}

impl TlsClients {
    /// Reads the system's trusted roots (once).
    pub fn new(global: ClientTls) -> TlsClients {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            log::warn!("upstream TLS: reading the system's trusted certificates: {e}");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            log::warn!(
                "upstream TLS: no trusted root certificates found (install ca-certificates or set SSL_CERT_FILE); https upstreams will be refused unless proxy_ssl_insecure_skip_verify is set"
            );
        } else {
            log::debug!("upstream TLS: {added} trusted roots ({ignored} unreadable)");
        }
        TlsClients {
            global,
            roots: Arc::new(roots),
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The connection settings for `host` under an API's `transport`.
    pub fn to(&self, api: &ClientTls, host: &str) -> Result<TlsTo, String> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("{host:?} is not a name TLS can check: {e}"))?;
        Ok(TlsTo {
            config: self.config(&self.global.with(api))?,
            name,
        })
    }

    fn config(&self, s: &ClientTls) -> Result<Arc<rustls::ClientConfig>, String> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = built.get(s) {
            return Ok(c.clone());
        }
        let (provider, unknown) = provider(&s.ciphers);
        for name in unknown {
            log::warn!(
                "upstream TLS: cipher {name} is not available (rustls offers AEAD suites only): skipped"
            );
        }
        let provider = Arc::new(provider);
        let (versions, warning) = s.versions.rustls();
        if let Some(w) = warning {
            log::warn!("upstream TLS: {w}");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| format!("upstream TLS settings: {e}"))?;
        let config = if s.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.roots.clone())
                .with_no_client_auth()
        };
        let config = Arc::new(config);
        built.insert(s.clone(), config.clone());
        Ok(config)
    }
}

/// `ssl_insecure_skip_verify`: any certificate for any name is taken; the
/// handshake's own signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_apis_transport_overrides_the_gateways() {
        let global = ClientTls {
            insecure: false,
            versions: Versions { min: 771, max: 0 },
            ciphers: vec!["A".into()],
        };
        let api = ClientTls {
            insecure: true,
            versions: Versions { min: 772, max: 0 },
            ciphers: vec![],
        };
        let merged = global.with(&api);
        assert!(merged.insecure);
        assert_eq!(merged.versions, Versions { min: 772, max: 0 });
        assert_eq!(merged.ciphers, vec!["A".to_string()]);
        // Skip-verify is OR-ed: an API cannot turn the gateway's off.
        let strict = ClientTls::default();
        assert!(
            ClientTls {
                insecure: true,
                ..strict.clone()
            }
            .with(&strict)
            .insecure
        );
    }
}
