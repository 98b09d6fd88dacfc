//! TLS for Eddy's listeners: a rustls server configuration from PEM files (a certificate chain
//! and its private key), with client certificates asked for or required against a CA file, as
//! Kafka's `ssl.client.auth` has them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::SecurityError;

/// How long a client has to finish the TLS handshake before the connection is closed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether clients present certificates (Kafka's `ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No client certificates.
    #[default]
    None,
    /// Asked for; a client without one is still served.
    Requested,
    /// A client without a certificate the CA signed is refused.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            _ => Err(format!(
                "expected none, requested or required, not {text:?}"
            )),
        }
    }
}

/// Where a listener's TLS material is.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// The PEM certificate chain, the server's own certificate first.
    pub certificate: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The PEM CA certificates client certificates must chain to.
    pub client_ca: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

impl TlsFiles {
    /// The acceptor for these files; says which file is wrong and how.
    pub fn acceptor(&self) -> Result<TlsAcceptor, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = certificates(&self.certificate)?;
        let key = private_key(&self.key)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::Tls(e.to_string()))?;
        let builder = match (self.client_auth, &self.client_ca) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => {
                return Err(SecurityError::Tls(
                    "client certificates need a CA file to check them against".into(),
                ));
            }
            (auth, Some(ca)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots(ca)?.into(), provider);
                let verifier = if auth == ClientAuth::Requested {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                let verifier = verifier
                    .build()
                    .map_err(|e| SecurityError::Tls(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            SecurityError::Tls(format!(
                "{} and {} do not make a usable certificate and key: {e}",
                self.certificate.display(),
                self.key.display()
            ))
        })?;
        // HTTP/2 when the client offers it, as the plaintext listener serves h2c.
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// Mutual TLS for the nodes of a replicated log: each node presents `certificate` (with `key`)
/// both when it accepts a peer and when it connects to one, and requires the peer's to chain
/// to `ca`. Returns how to accept peers and how to connect to them.
pub fn mutual(
    certificate: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(TlsAcceptor, tokio_rustls::TlsConnector), SecurityError> {
    let files = TlsFiles {
        certificate: certificate.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: Some(ca.to_path_buf()),
        client_auth: ClientAuth::Required,
    };
    let acceptor = files.acceptor()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecurityError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certificates(certificate)?, private_key(key)?)
        .map_err(|e| {
            SecurityError::Tls(format!(
                "{} cannot serve as a client certificate: {e}",
                certificate.display()
            ))
        })?;
    Ok((acceptor, tokio_rustls::TlsConnector::from(Arc::new(config))))
}

/// The CA certificates in `ca`, as roots to check a peer's certificate against.
fn roots(ca: &Path) -> Result<rustls::RootCertStore, SecurityError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert).map_err(|e| {
            SecurityError::Tls(format!("{} holds an unusable CA: {e}", ca.display()))
        })?;
    }
    Ok(roots)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        SecurityError::Tls(format!(
            "cannot read a private key from {}: {e}",
            path.display()
        ))
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            SecurityError::Tls(format!(
                "cannot read certificates from {}: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(SecurityError::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// The principal name Kafka gives a client certificate: its subject as RFC 2253 writes a
/// distinguished name (Java's `X500Principal.getName()`, Kafka's `DEFAULT` mapping rule), such
/// as `CN=alice,OU=eng,O=Acme,C=US`. `None` when the certificate does not parse.
pub fn subject_principal(certificate: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let rdns: Vec<String> = cert
        .subject()
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attribute| {
                    let oid = attribute.attr_type().to_id_string();
                    let value = match attribute.as_str() {
                        Ok(text) => escape_rfc2253(text),
                        // RFC 2253 writes a value it cannot show as text as # and its BER hex.
                        Err(_) => format!(
                            "#{}",
                            attribute
                                .as_slice()
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect::<String>()
                        ),
                    };
                    format!("{}={value}", rfc2253_keyword(&oid).unwrap_or(&oid))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    // RFC 2253 writes the most specific name first: the reverse of the certificate's order.
    Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
}

/// The keywords RFC 2253 (and Java) write for attribute types; others go as dotted OIDs.
fn rfc2253_keyword(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        _ => return None,
    })
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Makes `ring` the process's default rustls provider, if none is yet. Programs that build
/// `reqwest` clients without a TLS configuration of their own need it: the workspace builds
/// reqwest's rustls without a provider (the REPL brings its own `ring` configuration), and
/// reqwest refuses to build a client with none installed.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Runs the TLS handshake on `stream`, giving up after [`HANDSHAKE_TIMEOUT`].
pub async fn accept<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(accepted) => accepted,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the TLS handshake did not finish in time",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_subject_reads_as_kafka_names_the_principal() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CountryName, "US");
        name.push(rcgen::DnType::OrganizationName, "Acme, Inc.");
        name.push(rcgen::DnType::OrganizationalUnitName, "eng");
        name.push(rcgen::DnType::CommonName, "alice");
        params.distinguished_name = name;
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject_principal(cert.der()).as_deref(),
            Some("CN=alice,OU=eng,O=Acme\\, Inc.,C=US")
        );
        assert_eq!(subject_principal(b"not a certificate"), None);
    }

    #[test]
    fn files_that_are_not_a_certificate_and_key_say_which() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path, junk) = (
            dir.path().join("cert.pem"),
            dir.path().join("key.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not pem").unwrap();
        let files = TlsFiles {
            certificate: cert_path.clone(),
            key: key_path.clone(),
            ..TlsFiles::default()
        };
        assert!(files.acceptor().is_ok());
        for (files, says) in [
            (
                TlsFiles {
                    certificate: junk.clone(),
                    ..files.clone()
                },
                "holds no PEM certificate",
            ),
            (
                TlsFiles {
                    key: junk.clone(),
                    ..files.clone()
                },
                "cannot read a private key from",
            ),
            (
                TlsFiles {
                    key: dir.path().join("missing.pem"),
                    ..files.clone()
                },
                "missing.pem",
            ),
            (
                TlsFiles {
                    client_auth: ClientAuth::Required,
                    ..files.clone()
                },
                "need a CA file",
            ),
        ] {
            let Err(e) = files.acceptor() else {
                panic!("{files:?} was accepted")
            };
            assert!(e.to_string().contains(says), "{e}");
        }
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&junk, other.serialize_pem()).unwrap();
        let mismatched = TlsFiles { key: junk, ..files };
        assert!(mismatched.acceptor().is_err());
    }
}
