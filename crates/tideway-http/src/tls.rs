//! TLS on the listener: rustls, a certificate chain and key from PEM files, HTTP/2 and
//! HTTP/1.1 offered by ALPN, and the files read again when they change (cert-manager
//! and the like replace them in place before the old certificate expires).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

/// Where the listener's certificate chain and private key are, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why the certificate or key could not be used; each names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{0} holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error("{0} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    /// rustls refused the key or the pair.
    #[error("{path}: {reason}")]
    Refused {
        /// The key file.
        path: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// How often the files are checked for a change.
pub(crate) const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// The certificate in use, swapped when the files change.
#[derive(Debug)]
pub(crate) struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and lengths when last loaded.
    stamp: RwLock<Stamp>,
}

type Stamp = [(Option<SystemTime>, u64); 2];

fn stamp(files: &TlsFiles) -> Stamp {
    let of =
        |path: &Path| std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()));
    [of(&files.cert), of(&files.key)]
}

/// Reads and checks the pair: the chain, the key, and that rustls accepts them together.
fn load(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(files.cert.clone()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey(files.key.clone()))?;
    let provider = rustls::crypto::ring::default_provider();
    let refused = |err: rustls::Error| TlsError::Refused {
        path: files.key.clone(),
        reason: err.to_string(),
    };
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(refused)?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|err| TlsError::Refused {
        path: files.key.clone(),
        reason: format!("the key is not the certificate's ({err})"),
    })?;
    Ok(certified)
}

impl Certificates {
    /// Loads the pair once; fails with what is wrong.
    pub(crate) fn load(files: TlsFiles) -> Result<Arc<Self>, TlsError> {
        let stamp = stamp(&files);
        let certified = load(&files)?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(Arc::new(certified)),
            stamp: RwLock::new(stamp),
        }))
    }

    /// Loads the pair again if either file changed since the last load. A pair that
    /// fails to load (a half-written file, a key of another certificate) is logged and
    /// the one in use stays. Returns whether a new pair is in use.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        if *self.stamp.read().unwrap_or_else(|e| e.into_inner()) == now {
            return false;
        }
        match load(&self.files) {
            Ok(certified) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
                *self.stamp.write().unwrap_or_else(|e| e.into_inner()) = now;
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(err) => {
                // Not stamped: tried again at the next check, when the write may be done.
                tracing::warn!(error = %err, "TLS files changed but cannot be used; keeping the certificate in use");
                false
            }
        }
    }

    /// The rustls configuration: this certificate, HTTP/2 and HTTP/1.1 by ALPN.
    pub(crate) fn server_config(self: &Arc<Self>) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default TLS versions")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_not_a_pair_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("tideway-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let files = TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        };
        let missing = load(&files).unwrap_err().to_string();
        assert!(
            missing.contains("cannot read") && missing.contains("cert.pem"),
            "{missing}"
        );
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let empty = load(&files).unwrap_err().to_string();
        assert!(empty.contains("holds no PEM certificate"), "{empty}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
