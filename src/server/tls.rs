//! Serving certificates are files (a mounted Secret): checked before binding, reloaded when
//! they change without a restart, and a broken new pair never replaces the last good one.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::metrics::{CallOutcome, Metrics};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("{cert} and {key} do not belong together: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The bytes a pair was loaded from, to notice changes cheaply.
type Fingerprint = (Vec<u8>, Vec<u8>);

/// The current certificate, swapped atomically on reload; handshakes never wait on a lock.
pub struct CertStore {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: ArcSwap<CertifiedKey>,
    loaded_from: std::sync::Mutex<Fingerprint>,
    /// The last pair that was rejected: reported once, not on every poll.
    rejected: std::sync::Mutex<Option<Fingerprint>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish()
    }
}

impl CertStore {
    /// Loads and checks the pair; an error here means the process must not start serving.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let (key, fingerprint) = load_pair(cert_path, key_path)?;
        Ok(Arc::new(CertStore {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: ArcSwap::from_pointee(key),
            loaded_from: std::sync::Mutex::new(fingerprint),
            rejected: std::sync::Mutex::new(None),
        }))
    }

    /// Re-reads the files; swaps in the new pair only when it changed and is valid.
    /// Returns Ok(true) when a new pair is now served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let cert = read(&self.cert_path)?;
        let key = read(&self.key_path)?;
        {
            let loaded = self.loaded_from.lock().unwrap_or_else(|p| p.into_inner());
            if loaded.0 == cert && loaded.1 == key {
                return Ok(false);
            }
        }
        {
            let rejected = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
            if rejected.as_ref().is_some_and(|r| r.0 == cert && r.1 == key) {
                return Ok(false);
            }
        }
        let certified = match certified_key(&self.cert_path, &self.key_path, &cert, &key) {
            Ok(c) => c,
            Err(e) => {
                *self.rejected.lock().unwrap_or_else(|p| p.into_inner()) = Some((cert, key));
                return Err(e);
            }
        };
        self.current.store(Arc::new(certified));
        *self.loaded_from.lock().unwrap_or_else(|p| p.into_inner()) = (cert, key);
        Ok(true)
    }

    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        // TLS 1.2 and 1.3 only (rustls supports nothing older); HTTP/1.1 is what the
        // apiserver speaks to webhooks.
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map(|b| b.with_no_client_auth().with_cert_resolver(self.clone()))
            .unwrap_or_else(|_| {
                ServerConfig::builder()
                    .with_no_client_auth()
                    .with_cert_resolver(self.clone())
            });
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }

    /// Polls the files (Secret volumes change by symlink swap, which inotify misses easily).
    pub async fn watch(self: Arc<Self>, every: Duration, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match self.reload() {
                Ok(true) => {
                    Metrics::count_call(&metrics.tls_reloads, "reload", CallOutcome::Success);
                    tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                }
                Ok(false) => {}
                Err(error) => {
                    Metrics::count_call(&metrics.tls_reloads, "reload", CallOutcome::Failure);
                    tracing::error!(%error, "new serving certificate rejected; still serving the last good one");
                }
            }
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, Fingerprint), TlsError> {
    let cert = read(cert_path)?;
    let key = read(key_path)?;
    let certified = certified_key(cert_path, key_path, &cert, &key)?;
    Ok((certified, (cert, key)))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    cert: &[u8],
    key: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::BadKey {
        path: key_path.to_path_buf(),
        reason: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_path_buf(),
        key: key_path.to_path_buf(),
        reason: e.to_string(),
    })
}
