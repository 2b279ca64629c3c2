//! The listeners axum serves: plain TCP ([`PlainListener`]) and TLS in the binary
//! (`--tls-cert`, `--tls-key`; [`TlsListener`]): `https://` and `wss://` on the one port, with
//! rustls (pure Rust, its `ring` provider: no OpenSSL, no C toolchain beyond what `ring` builds
//! itself).
//!
//! - [`Tls`] holds the certificate chain and key, read from PEM files at start-up (a missing,
//!   unreadable or mismatched pair stops the start with one line naming the flag), and reads
//!   them again on SIGHUP ([`reload_on_sighup`]): a renewed certificate is served to new
//!   connections without a restart, connected clients keep their sockets, and a bad new pair
//!   keeps the old one and logs why.
//! - [`TlsListener`] is what axum serves: a task accepts TCP connections and runs each TLS
//!   handshake in a task of its own, bounded in time and in number, so a client that never
//!   finishes its handshake holds up nobody.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; more TCP connections wait to be accepted.
const MAX_HANDSHAKES: usize = 1024;

/// Why a certificate or key could not be used; the text names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is missing, unreadable or holds no PEM certificate.
    #[error("--tls-cert {path}: {why}")]
    Cert {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The key file is missing, unreadable or holds no usable PEM private key.
    #[error("--tls-key {path}: {why}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
    /// The key is not the certificate's.
    #[error("--tls-key {key} is not the key of --tls-cert {cert}: {why}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        why: String,
    },
}

/// The server's certificate and key, replaceable while it runs.
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

/// The pair new handshakes get.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks the pair: the certificate chain, the key, and that they belong together.
fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_error = |why: String| TlsError::Cert {
        path: cert.to_path_buf(),
        why,
    };
    let key_error = |why: String| TlsError::Key {
        path: key.to_path_buf(),
        why,
    };
    let cert_pem = std::fs::read(cert).map_err(|e| cert_error(format!("cannot read it: {e}")))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(cert_error("no PEM certificate in it".into()));
    }
    let key_pem = std::fs::read(key).map_err(|e| key_error(format!("cannot read it: {e}")))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| key_error(format!("no PEM private key in it: {e}")))?;
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| key_error(format!("an unusable key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        why: e.to_string(),
    })?;
    Ok(Arc::new(certified))
}

impl Tls {
    /// The pair in `cert` and `key` (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let current = Arc::new(Current(RwLock::new(load(cert, key)?)));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Cert {
                path: cert.to_path_buf(),
                why: format!("no TLS version available: {e}"),
            })?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only: engine.io's websocket upgrade needs it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads the files again; new handshakes get the new pair. A bad pair changes nothing.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.cert, &self.key)?;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// Reloads `tls` on every SIGHUP until `stop`.
pub async fn reload_on_sighup(tls: Arc<Tls>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!("cannot watch for SIGHUP, certificates will not be reloaded: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            got = hangups.recv() => if got.is_none() { return },
            () = stop.cancelled() => return,
        }
        let reloading = tls.clone();
        match tokio::task::spawn_blocking(move || reloading.reload()).await {
            Ok(Ok(())) => {
                tracing::info!(cert = %tls.cert.display(), "SIGHUP: certificate reloaded")
            }
            Ok(Err(e)) => tracing::error!("SIGHUP: keeping the current certificate: {e}"),
            Err(e) => tracing::error!("SIGHUP: the reload failed: {e}"),
        }
    }
}

/// What axum serves without TLS: a TCP listener whose connections send small frames at once.
pub struct PlainListener(pub TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = axum::serve::Listener::accept(&mut self.0).await;
        // Small frames (acks, chat lines) must leave at once: Nagle would hold them ~40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// What axum serves over TLS: handshaken connections from a TCP listener.
pub struct TlsListener {
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` with `tls`'s pair until `stop`.
    pub fn new(tcp: TcpListener, tls: &Tls, stop: CancellationToken) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (ready, handshaken) = mpsc::channel(64);
        let acceptor = tls.acceptor.clone();
        tokio::spawn(accept_forever(tcp, acceptor, ready, stop));
        Ok(Self { handshaken, local })
    }
}

async fn accept_forever(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            accepted = tcp.accept() => accepted,
            () = stop.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::debug!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small frames (acks, chat lines) must leave at once: Nagle would hold them ~40 ms.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept task stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
