//! HTTPS under test: a certificate authority made at test time, server certificates it signs for
//! loopback, and a TLS client of our own that shows which certificate a server presents and keeps
//! one connection open across requests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

const IO_LIMIT: Duration = Duration::from_secs(20);

/// A certificate authority that lives for one test; its certificate is in [`TestCa::file`].
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub file: PathBuf,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("file", &self.file).finish()
    }
}

impl TestCa {
    /// A new CA, its certificate written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cloud-cli-proxy test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, issuer.pem()).unwrap();
        Self { issuer, file }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 with a fresh key, written to `cert` and
    /// `key`. Returns the certificate (DER).
    pub fn issue(&self, cert: &Path, key: &Path) -> Vec<u8> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key_pair = KeyPair::generate().unwrap();
        let issued = params.signed_by(&key_pair, &self.issuer).unwrap();
        std::fs::write(cert, issued.pem()).unwrap();
        std::fs::write(key, key_pair.serialize_pem()).unwrap();
        issued.der().to_vec()
    }
}

#[expect(
    deprecated,
    reason = "ring, as the control plane uses; its only lack is post-quantum key exchange"
)]
fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("a PEM CA"))
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One HTTPS connection to `addr` as `localhost`, verified against `ca_pem`.
pub struct Connection {
    tls: tokio_rustls::client::TlsStream<TcpStream>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and completes the handshake; panics when it fails.
    pub async fn open(addr: SocketAddr, ca_pem: &str) -> Self {
        match Self::try_open(addr, ca_pem).await {
            Ok(c) => c,
            Err(e) => panic!("TLS connection to {addr}: {e}"),
        }
    }

    pub async fn try_open(addr: SocketAddr, ca_pem: &str) -> std::io::Result<Self> {
        let connector = tokio_rustls::TlsConnector::from(client_config(ca_pem));
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(IO_LIMIT, connector.connect(name, tcp))
            .await
            .map_err(|_| std::io::Error::other("handshake timed out"))??;
        Ok(Self { tls })
    }

    /// The leaf certificate the server presented (DER).
    pub fn certificate(&self) -> Vec<u8> {
        let (_, session) = self.tls.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.as_ref().to_vec())
            .expect("the server presented a certificate")
    }

    /// `GET path` on this connection, kept open afterwards; returns the status code and the
    /// response head.
    pub async fn get(&mut self, path: &str) -> (u16, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n");
        self.tls.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(IO_LIMIT, self.tls.read(&mut chunk))
                .await
                .expect("a response within the limit")
                .expect("reading the response");
            assert!(n > 0, "the server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no Content-Length: {head}"));
        let mut body = buf.len() - head_end;
        while body < length {
            let mut chunk = vec![0u8; length - body];
            let n = tokio::time::timeout(IO_LIMIT, self.tls.read(&mut chunk))
                .await
                .expect("the body within the limit")
                .expect("reading the body");
            assert!(n > 0, "the server closed the connection mid-body");
            body += n;
        }
        (status, head)
    }
}
