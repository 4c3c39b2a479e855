//! Certificates made in the test that needs them: a certificate authority, and certificates it
//! signs for servers (loopback names) and clients (a subject name), written as PEM files.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use std::path::{Path, PathBuf};

/// A certificate authority of the test's own.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct Issued {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Authority {
    pub fn new(name: &str) -> Authority {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("a CA key");
        Authority {
            issuer: CertifiedIssuer::self_signed(params, key).expect("a CA certificate"),
        }
    }

    /// Writes the authority's certificate to `path` (what clients trust).
    pub fn write_certificate(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.issuer.pem()).expect("write the CA certificate");
        path.to_path_buf()
    }

    /// A certificate for `subject`, valid for the DNS names and IP addresses in `names`, for
    /// servers and clients alike; written to `<stem>.pem` and `<stem>-key.pem` in `dir`.
    pub fn issue(&self, dir: &Path, stem: &str, subject: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("certificate parameters");
        params.distinguished_name.push(DnType::CommonName, subject);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("a key");
        let certificate = params.signed_by(&key, &self.issuer).expect("a certificate");
        let issued = Issued {
            cert_file: dir.join(format!("{stem}.pem")),
            key_file: dir.join(format!("{stem}-key.pem")),
        };
        std::fs::write(&issued.cert_file, certificate.pem()).expect("write the certificate");
        std::fs::write(&issued.key_file, key.serialize_pem()).expect("write the key");
        issued
    }
}
