//! HTTPS on the listener: the certificate chain and key (and, for mutual TLS, the authorities
//! client certificates must be signed by) read from PEM files. [`TlsSettings::reload`] reads
//! them again (on SIGHUP) without dropping a connection: every new handshake takes the
//! configuration current at that moment, and one that fails to load leaves the old in place.

use rustls::RootCertStore;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Where the listener's TLS material is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// Mutual TLS: client certificates are required, signed by these authorities.
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {detail}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{path} holds no {what} in PEM")]
    Empty { what: &'static str, path: PathBuf },
    #[error("the TLS configuration is refused: {0}")]
    Refused(String),
}

/// The listener's TLS configuration, reloadable.
#[derive(Clone)]
pub struct TlsSettings {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("files", &self.files)
            .finish()
    }
}

impl TlsSettings {
    pub fn load(files: TlsFiles) -> Result<TlsSettings, TlsError> {
        let config = server_config(&files)?;
        Ok(TlsSettings {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// Reads the files again; new handshakes use them, connections already open keep theirs.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// An acceptor with the current certificates (the xDS listener shares them).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }
}

fn certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let unreadable = |detail: String| TlsError::Unreadable {
        what,
        path: path.to_path_buf(),
        detail,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certificates)
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&files.cert_file, "certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(|e| TlsError::Unreadable {
        what: "private key",
        path: files.key_file.clone(),
        detail: e.to_string(),
    })?;
    let refused = |e: &dyn std::fmt::Display| TlsError::Refused(e.to_string());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(&e))?;
    let builder = match &files.client_ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for certificate in certificates(path, "client CA certificate")? {
                roots.add(certificate).map_err(|e| refused(&e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| refused(&e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| refused(&e))?;
    // HTTP/2 when the client offers it, HTTP/1.1 otherwise.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The name a verified client certificate stands for: its subject's common name, else its
/// first DNS name.
pub fn subject_name(certificate: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(certificate.as_ref()).ok()?;
    if let Some(common_name) = parsed
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
    {
        return Some(common_name.to_string());
    }
    let names = parsed.subject_alternative_name().ok()??;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
}
