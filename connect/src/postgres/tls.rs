//! TLS to PostgreSQL, as libpq's `sslmode` has it: `disable`, `allow` and `prefer` (TLS when the
//! server offers it, the certificate unchecked; `allow` is taken as `prefer`), `require`
//! (always TLS, the certificate unchecked), `verify-ca` (the certificate must chain to
//! `sslrootcert`) and `verify-full` (and name the host). A client certificate (`sslcert`,
//! `sslkey`) is presented when given. The same settings serve the replication connection
//! (pgwire-replication's TLS) and ordinary ones (tokio-postgres through rustls), on `ring` as
//! the rest of the build.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::error::{ConnectError, Result};
use crate::properties::Properties;

/// How a connection uses TLS (`sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// When the server offers it; the certificate is not checked.
    Prefer,
    /// Always; the certificate is not checked.
    Require,
    /// Always, with a certificate that chains to the root certificate.
    VerifyCa,
    /// Always, with a certificate that chains to the root certificate and names the host.
    VerifyFull,
}

/// A connector's TLS settings for its database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `sslmode`.
    pub mode: SslMode,
    /// `sslrootcert`: the PEM CA certificates the server's must chain to.
    pub root_cert: Option<PathBuf>,
    /// `sslcert` and `sslkey`: a client certificate and its key, in PEM.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            mode: SslMode::Prefer,
            root_cert: None,
            client_cert: None,
        }
    }
}

impl Tls {
    /// Reads `<prefix>sslmode`, `<prefix>sslrootcert`, `<prefix>sslcert` and `<prefix>sslkey`
    /// (Debezium's `database.` keys, or a JDBC URL's parameters with no prefix).
    pub(crate) fn from_properties(props: &Properties<'_>, prefix: &str) -> Result<Tls> {
        let key = |name: &str| format!("{prefix}{name}");
        let mode = match props
            .choice(
                &key("sslmode"),
                "prefer",
                &[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ],
            )?
            .as_str()
        {
            "disable" => SslMode::Disable,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => SslMode::Prefer,
        };
        let path = |name: &str| props.get(&key(name)).map(PathBuf::from);
        let root_cert = path("sslrootcert");
        if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && root_cert.is_none() {
            return Err(ConnectError::Config(format!(
                "'{}' {} needs '{}', the CA certificates (PEM) the server's certificate must chain to",
                key("sslmode"),
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                },
                key("sslrootcert")
            )));
        }
        let client_cert = match (path("sslcert"), path("sslkey")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(ConnectError::Config(format!(
                    "'{}' and '{}' go together",
                    key("sslcert"),
                    key("sslkey")
                )));
            }
        };
        Ok(Tls {
            mode,
            root_cert,
            client_cert,
        })
    }

    /// The replication connection's TLS settings.
    pub(crate) fn replication(&self) -> pgwire_replication::config::TlsConfig {
        use pgwire_replication::config::{SslMode as Mode, TlsConfig};
        let mode = match self.mode {
            SslMode::Disable => Mode::Disable,
            SslMode::Prefer => Mode::Prefer,
            SslMode::Require => Mode::Require,
            SslMode::VerifyCa => Mode::VerifyCa,
            SslMode::VerifyFull => Mode::VerifyFull,
        };
        TlsConfig {
            mode,
            ca_pem_path: self.root_cert.clone(),
            sni_hostname: None,
            client_cert_pem_path: self.client_cert.as_ref().map(|(c, _)| c.clone()),
            client_key_pem_path: self.client_cert.as_ref().map(|(_, k)| k.clone()),
        }
    }

    /// tokio-postgres's `sslmode` for these settings.
    pub(crate) fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    /// The rustls configuration of an ordinary connection.
    pub(crate) fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (&self.root_cert, self.mode) {
            (Some(root), SslMode::VerifyCa | SslMode::VerifyFull) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in read_certs(root)? {
                    roots
                        .add(cert)
                        .map_err(|e| tls_error(root, &e.to_string()))?;
                }
                let webpki =
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| tls_error(root, &e.to_string()))?;
                Arc::new(Verifier {
                    webpki: Some(webpki),
                    check_name: self.mode == SslMode::VerifyFull,
                    provider: provider.clone(),
                })
            }
            _ => Arc::new(Verifier {
                webpki: None,
                check_name: false,
                provider: provider.clone(),
            }),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConnectError::Config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        match &self.client_cert {
            None => Ok(builder.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = read_certs(cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| tls_error(key, &e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| tls_error(cert, &e.to_string()))
            }
        }
    }
}

fn tls_error(path: &Path, why: &str) -> ConnectError {
    ConnectError::Config(format!("TLS: {}: {why}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| tls_error(path, &e.to_string()))?;
    if certs.is_empty() {
        return Err(tls_error(path, "no certificate in it"));
    }
    Ok(certs)
}

/// Checks the server's certificate as `sslmode` says: against the roots (and the host name
/// for `verify-full`), or not at all for `prefer` and `require`. The handshake's signatures
/// are always checked, so the server holds the certificate's key.
#[derive(Debug)]
struct Verifier {
    webpki: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(webpki) = &self.webpki else {
            return Ok(ServerCertVerified::assertion());
        };
        match webpki.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Ok(verified) => Ok(verified),
            // verify-ca: the chain is what counts, not the name.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(e),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::properties::tests::props;

    #[test]
    fn sslmode_and_its_files_are_read_and_checked() {
        let read = |pairs: &[(&str, &str)]| {
            let map = props(pairs);
            Tls::from_properties(&Properties::new(&map), "database.")
        };
        assert_eq!(read(&[]).unwrap(), Tls::default());
        let full = read(&[
            ("database.sslmode", "verify-full"),
            ("database.sslrootcert", "/ca.pem"),
            ("database.sslcert", "/c.pem"),
            ("database.sslkey", "/k.pem"),
        ])
        .unwrap();
        assert_eq!(full.mode, SslMode::VerifyFull);
        assert_eq!(full.replication().ca_pem_path, Some("/ca.pem".into()));
        assert!(full.replication().is_mtls());
        for (pairs, named) in [
            (vec![("database.sslmode", "always")], "database.sslmode"),
            (
                vec![("database.sslmode", "verify-ca")],
                "database.sslrootcert",
            ),
            (vec![("database.sslcert", "/c.pem")], "database.sslkey"),
        ] {
            let err = read(&pairs).unwrap_err().to_string();
            assert!(err.contains(named), "{pairs:?}: {err}");
        }
    }
}
