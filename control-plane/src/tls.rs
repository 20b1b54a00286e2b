//! HTTPS of the API's own listeners: the certificate chain and private key read from PEM files,
//! swapped in place when they are reloaded (SIGHUP), and a listener that completes TLS handshakes
//! off the accept loop so one slow client cannot hold up the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;
/// Finished handshakes waiting for the HTTP server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("{path} holds no usable PEM private key: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the key in {key} does not fit the certificate in {cert}: {source}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS settings: {0}")]
    Settings(#[source] rustls::Error),
}

/// Where the certificate chain (leaf first) and its private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The ring provider, named so that no process-wide default has to be installed.
#[expect(
    deprecated,
    reason = "ring, like the SSH side, keeps the build free of cmake; its only lack is post-quantum key exchange"
)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks both files: a certificate chain and a private key that belongs to its leaf.
pub fn load(files: &Files, provider: &CryptoProvider) -> Result<CertifiedKey, Error> {
    let chain = read_chain(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| Error::Key {
        path: files.key.clone(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| Error::Mismatch {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let read = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read)?;
    if chain.is_empty() {
        return Err(Error::NoCertificate(path.to_owned()));
    }
    Ok(chain)
}

/// SHA-256 of the leaf certificate, hex: what the logs name a certificate by.
pub fn fingerprint(key: &CertifiedKey) -> String {
    key.cert
        .first()
        .map(|leaf| hex::encode(Sha256::digest(leaf.as_ref())))
        .unwrap_or_default()
}

/// The certificate every handshake gets: the one loaded last that passed its checks.
#[derive(Debug)]
pub struct Certificate {
    files: Files,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Loads the files; an error here stops the start.
    pub fn open(files: Files) -> Result<Self, Error> {
        let provider = provider();
        let key = load(&files, &provider)?;
        Ok(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(key)),
        })
    }

    /// Reads the files again and serves them from the next handshake on; on an error the previous
    /// certificate stays. Connections already open keep the session they negotiated. Returns the
    /// new certificate's fingerprint.
    pub fn reload(&self) -> Result<String, Error> {
        let key = load(&self.files, &self.provider)?;
        let fingerprint = fingerprint(&key);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        Ok(fingerprint)
    }

    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Server settings that ask this certificate at every handshake, HTTP/1.1 over ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, Error> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(Error::Settings)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Reloads `certificate` on every SIGHUP until `stopping` is cancelled.
pub async fn reload_on_hangup(certificate: Arc<Certificate>, stopping: tokio_util::sync::CancellationToken) {
    let mut hangups = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch for SIGHUP: the TLS certificate will not be reloaded");
            return;
        }
    };
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            got = hangups.recv() => if got.is_none() { return },
        }
        match certificate.reload() {
            Ok(fingerprint) => tracing::info!(%fingerprint, "TLS certificate reloaded"),
            Err(e) => tracing::error!(
                error = %e,
                kept = %fingerprint(&certificate.current()),
                "TLS certificate not reloaded; still serving the previous one"
            ),
        }
    }
}

/// A TCP listener whose connections come out of a TLS handshake. Handshakes run in their own
/// tasks; those that fail or time out are dropped with a debug line.
pub struct TlsListener {
    accepted: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
        let accepting = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self {
            accepted,
            local,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        // The server stopped taking connections: stop accepting new ones too.
        self.accepting.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: give the process a moment to recover.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
            drop(slot);
            match handshake {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // Only when the accept loop is gone, which happens when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// One of the API's listeners, with or without TLS.
pub enum Listener {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Listener {
    /// `listener` as is, or behind TLS when a certificate is configured.
    pub fn new(listener: TcpListener, tls: Option<&Arc<rustls::ServerConfig>>) -> std::io::Result<Self> {
        Ok(match tls {
            Some(config) => Self::Tls(TlsListener::new(listener, config.clone())?),
            None => Self::Plain(listener),
        })
    }
}

impl axum::serve::Listener for Listener {
    type Io = Either<TcpStream, TlsStream<TcpStream>>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self {
            Self::Plain(l) => {
                let (io, addr) = axum::serve::Listener::accept(l).await;
                (Either::Left(io), addr)
            }
            Self::Tls(l) => {
                let (io, addr) = axum::serve::Listener::accept(l).await;
                (Either::Right(io), addr)
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        match self {
            Self::Plain(l) => l.local_addr(),
            Self::Tls(l) => Ok(l.local),
        }
    }
}

/// Serves `app` on `listener` until `until` resolves, with the client's address as
/// `ConnectInfo<SocketAddr>` whichever kind of listener it is.
pub async fn serve(
    listener: Listener,
    app: axum::Router,
    until: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // axum gives `SocketAddr` connect info to its own `TcpListener` and to tapped listeners; the
    // no-op tap is what lets our listener give it too.
    let listener = listener.tap_io(|_| {});
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(until)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (Files, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let files = Files {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        (files, hex::encode(Sha256::digest(cert.der())))
    }

    #[test]
    fn loads_a_pair_and_refuses_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let (a, a_print) = pair(dir.path(), "a");
        let (b, _) = pair(dir.path(), "b");
        let provider = provider();
        assert_eq!(fingerprint(&load(&a, &provider).unwrap()), a_print);
        let swapped = Files {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        assert!(matches!(load(&swapped, &provider), Err(Error::Mismatch { .. })));
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let no_cert = Files {
            cert: empty.clone(),
            key: a.key.clone(),
        };
        assert!(matches!(load(&no_cert, &provider), Err(Error::NoCertificate(_))));
        let no_key = Files {
            cert: a.cert.clone(),
            key: empty,
        };
        assert!(matches!(load(&no_key, &provider), Err(Error::Key { .. })));
        let missing = Files {
            cert: dir.path().join("missing.crt"),
            key: a.key,
        };
        assert!(matches!(load(&missing, &provider), Err(Error::Read { .. })));
    }

    #[test]
    fn reload_keeps_the_old_certificate_when_the_new_files_are_bad() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = pair(dir.path(), "live");
        let certificate = Certificate::open(files.clone()).unwrap();
        std::fs::write(&files.key, "garbage").unwrap();
        assert!(certificate.reload().is_err());
        assert_eq!(fingerprint(&certificate.current()), first);
        let (next, second) = pair(dir.path(), "next");
        std::fs::copy(&next.cert, &files.cert).unwrap();
        std::fs::copy(&next.key, &files.key).unwrap();
        assert_eq!(certificate.reload().unwrap(), second);
        assert_eq!(fingerprint(&certificate.current()), second);
    }
}
