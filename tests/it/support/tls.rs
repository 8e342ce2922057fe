//! TLS for the black-box tests: a test CA issuing certificates (rcgen), a
//! client that speaks HTTP over TLS to the gateway with a chosen SNI name,
//! and an `https://` upstream.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use super::http::{Resp, parse_response};

/// A certificate authority of our own.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Leaf {
    /// A rustls server configuration serving this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_slice(self.key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// Key and certificate in one file, as `ssl_certificates` takes.
    pub fn combined(&self) -> String {
        format!("{}{}", self.key, self.cert)
    }
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        roots
    }
}

/// A client configuration trusting `ca` (TLS 1.2 and 1.3, or only `version`).
pub fn client(
    ca: &Ca,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS12, &rustls::version::TLS13],
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to the gateway on `port` with SNI `name`.
pub struct TlsClient {
    pub stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects and completes the handshake; Err says why it failed.
    pub fn connect(
        port: u16,
        name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<TlsClient, String> {
        let sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        sock.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, server).map_err(|e| e.to_string())?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| e.to_string())?;
        }
        Ok(TlsClient { stream })
    }

    /// The certificate the server presented: its first PEM line's DER.
    pub fn peer_cert(&self) -> Vec<u8> {
        self.stream.conn.peer_certificates().unwrap()[0].to_vec()
    }

    /// One request on this connection (kept open).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        let mut out = format!("{method} {path} HTTP/1.1\r\nHost: gatehouse.test\r\n");
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            out.push_str(&format!("Content-Length: {}\r\n", b.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body.unwrap_or_default());
        self.stream.write_all(&bytes).unwrap();
        self.stream.flush().unwrap();
        let head = method.eq_ignore_ascii_case("HEAD");
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some((resp, _))) = parse_response(&buf, head, false) {
                return resp;
            }
            assert!(
                Instant::now() < deadline,
                "{method} {path}: no response over TLS"
            );
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("{method} {path}: TLS read failed: {e}"),
            }
        }
        match parse_response(&buf, head, true) {
            Ok(Some((resp, _))) => resp,
            other => panic!("{method} {path}: no response over TLS: {other:?}"),
        }
    }
}

/// An `https://` upstream answering every request with 200 and a JSON body
/// naming the path and the SNI name it was reached by.
pub struct TlsUpstream {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    hits: Arc<AtomicUsize>,
}

/// What a `TlsUpstream` answers: (status, JSON body) for (path, Host, SNI).
type Answer = Arc<dyn Fn(&str, &str, &str) -> (u16, String) + Send + Sync>;

impl TlsUpstream {
    /// Answers 200 with `{"path", "host", "sni"}`.
    pub fn start(leaf: &Leaf) -> TlsUpstream {
        TlsUpstream::with(leaf, |path, host, sni| {
            (
                200,
                serde_json::json!({"path": path, "host": host, "sni": sni}).to_string(),
            )
        })
    }

    pub fn with(
        leaf: &Leaf,
        answer: impl Fn(&str, &str, &str) -> (u16, String) + Send + Sync + 'static,
    ) -> TlsUpstream {
        let answer: Answer = Arc::new(answer);
        let config = leaf.server_config();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let hits = Arc::new(AtomicUsize::new(0));
        let (c, h) = (connections.clone(), hits.clone());
        thread::spawn(move || {
            for sock in listener.incoming() {
                let Ok(sock) = sock else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let (config, h, answer) = (config.clone(), h.clone(), answer.clone());
                thread::spawn(move || serve_tls(sock, config, h, answer));
            }
        });
        TlsUpstream {
            addr,
            connections,
            hits,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve_tls(
    sock: TcpStream,
    config: Arc<rustls::ServerConfig>,
    hits: Arc<AtomicUsize>,
    answer: Answer,
) {
    sock.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end + 4);
        hits.fetch_add(1, Ordering::SeqCst);
        let path = head.split(' ').nth(1).unwrap_or_default().to_string();
        let host = head
            .lines()
            .find_map(|l| {
                l.strip_prefix("Host: ")
                    .or_else(|| l.strip_prefix("host: "))
            })
            .unwrap_or_default()
            .to_string();
        let sni = s.conn.server_name().unwrap_or_default().to_string();
        let (status, body) = answer(&path, &host, &sni);
        let res = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if s.write_all(res.as_bytes())
            .and_then(|()| s.flush())
            .is_err()
        {
            return;
        }
    }
}
