//! TLS for PostgreSQL connections: a tokio-postgres connector over rustls (the TLS stack
//! the NATS and webhook sinks already use), with libpq's `sslmode` meanings.
//!
//! Written here rather than taken from `tokio-postgres-rustls` because libpq's modes need
//! two certificate verifiers that crate does not have: `require`/`prefer` encrypt without
//! checking the certificate, and `verify-ca` checks the chain but not the host name.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::Socket;

use crate::conninfo::{RootCert, SslMode};

/// What the connector needs to know, resolved from the URL, the environment and libpq's
/// default file locations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The effective mode (`require` with a root certificate is already `verify-ca`).
    pub mode: SslMode,
    /// Trusted roots when the mode verifies.
    pub root: Option<RootCert>,
    /// Client certificate and key (PEM files), when both are given.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Why TLS could not be set up or was refused. The messages name the setting involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A certificate or key file could not be read.
    #[error("{what} {path}: {reason}")]
    File {
        /// `sslrootcert`, `sslcert`, `sslkey`.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the settings (a key that does not fit the certificate …).
    #[error("TLS settings: {0}")]
    Config(String),
    /// The server's certificate did not pass the checks of the mode.
    #[error("the server's TLS certificate was refused (sslmode={mode}{roots}): {reason}")]
    CertificateRefused {
        /// The mode that checked it.
        mode: SslMode,
        /// `, sslrootcert=…` when roots were used.
        roots: String,
        /// What was wrong, in words.
        reason: String,
    },
    /// Any other handshake failure.
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    /// The host name cannot be checked against a certificate.
    #[error("{0:?} is not a host name a TLS certificate can name")]
    BadName(String),
}

/// Makes one TLS connector per connection attempt (tokio-postgres passes the host name).
#[derive(Clone)]
pub struct MakeRustls {
    config: Arc<ClientConfig>,
    settings: Arc<Settings>,
}

impl MakeRustls {
    /// A connector for `settings`, reading the certificate files now.
    pub fn new(settings: Settings) -> Result<MakeRustls, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(e.to_string()))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (&settings.root, settings.mode) {
            (Some(root), mode) if mode.verifies() => {
                let roots = Arc::new(roots(root)?);
                let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|e| Error::Config(e.to_string()))?;
                if mode == SslMode::VerifyFull {
                    webpki
                } else {
                    Arc::new(Lenient {
                        chain: Some(webpki),
                        provider,
                    })
                }
            }
            _ => Arc::new(Lenient {
                chain: None,
                provider,
            }),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let config = match &settings.client {
            Some((cert, key)) => {
                let chain = read_certs("sslcert", cert)?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| Error::File {
                    what: "sslkey",
                    path: key.display().to_string(),
                    reason: e.to_string(),
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| Error::Config(e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(MakeRustls {
            config: Arc::new(config),
            settings: Arc::new(settings),
        })
    }
}

/// The root certificates of `root`.
fn roots(root: &RootCert) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    let (certs, what) = match root {
        RootCert::File(path) => (read_certs("sslrootcert", path)?, path.display().to_string()),
        RootCert::System => {
            let certs = rustls_native_certs::load_native_certs().map_err(|e| Error::File {
                what: "sslrootcert",
                path: "system".to_owned(),
                reason: format!("cannot read the operating system's certificates: {e}"),
            })?;
            (certs, "system".to_owned())
        }
    };
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(Error::File {
            what: "sslrootcert",
            path: what,
            reason: "holds no usable certificate".to_owned(),
        });
    }
    Ok(store)
}

fn read_certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, Error> {
    let fail = |reason: String| Error::File {
        what,
        path: path.display().to_string(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(pem_reason(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(pem_reason(e)))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file ({other:?})"),
    }
}

/// The verifier of the modes webpki alone does not cover: `verify-ca` (the chain must
/// lead to a trusted root, the host name is not compared) and `prefer`/`require` without
/// root certificates (any certificate, libpq's meaning). Either way the handshake's
/// signatures are checked, so the peer holds the key of the certificate it showed.
#[derive(Debug)]
struct Lenient {
    /// `Some` for `verify-ca`.
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki compares the name only after the chain checked out.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, Error> {
        // Called for Unix sockets too (with ""), where TLS never starts: a bad name is an
        // error only once a handshake needs it.
        let name = ServerName::try_from(domain.to_owned()).map_err(|_| domain.to_owned());
        Ok(RustlsConnect {
            config: self.config.clone(),
            settings: self.settings.clone(),
            name,
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    settings: Arc<Settings>,
    name: Result<ServerName<'static>, String>,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let name = self.name.map_err(Error::BadName)?;
            let connector = tokio_rustls::TlsConnector::from(self.config);
            connector
                .connect(name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| handshake_error(e, &self.settings))
        })
    }
}

/// Sorts a failed handshake: a refused certificate names the mode and roots that refused it.
fn handshake_error(e: io::Error, settings: &Settings) -> Error {
    let cert = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|r| match r {
            rustls::Error::InvalidCertificate(c) => Some(c.clone()),
            _ => None,
        });
    match cert {
        Some(c) => Error::CertificateRefused {
            mode: settings.mode,
            roots: settings
                .root
                .as_ref()
                .map(|r| format!(", sslrootcert={r}"))
                .unwrap_or_default(),
            reason: certificate_reason(&c),
        },
        None => Error::Handshake(e.to_string()),
    }
}

/// A certificate problem in an operator's words.
fn certificate_reason(c: &CertificateError) -> String {
    match c {
        CertificateError::UnknownIssuer => {
            "it is not signed by a trusted certificate authority (wrong sslrootcert?)".to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it does not name the host connected to (use the name the certificate is for, or sslmode=verify-ca)"
                .to_owned()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "it has expired".to_owned()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet (check the clocks)".to_owned()
        }
        CertificateError::Revoked => "it has been revoked".to_owned(),
        other => format!("{other:?}"),
    }
}

/// A TLS connection to the server.
pub struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for RustlsStream {
    /// SCRAM channel binding (`tls-server-end-point`, RFC 5929): the hash of the server's
    /// certificate, so a password exchange cannot be relayed through someone else's TLS
    /// session even when the mode does not check the certificate. None when the
    /// certificate's signature names no usable hash (the server cannot bind then either).
    fn channel_binding(&self) -> ChannelBinding {
        let cert = self
            .0
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first());
        match cert.and_then(|c| end_point_hash(c.as_ref())) {
            Some(hash) => ChannelBinding::tls_server_end_point(hash),
            None => ChannelBinding::none(),
        }
    }
}

/// The certificate's hash as `tls-server-end-point` wants it: with the hash of its
/// signature algorithm, SHA-256 for MD5 and SHA-1.
fn end_point_hash(der: &[u8]) -> Option<Vec<u8>> {
    use sha2::Digest as _;
    // Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm SEQUENCE { OID, … }, … }
    let (_, cert, _) = der_item(der)?;
    let (_, _tbs, rest) = der_item(cert)?;
    let (_, algorithm, _) = der_item(rest)?;
    let (tag, oid, _) = der_item(algorithm)?;
    if tag != 0x06 {
        return None;
    }
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let hash = match (oid.strip_prefix(RSA), oid.strip_prefix(ECDSA)) {
        // md5, sha1, sha256 WithRSAEncryption; ecdsa-with-SHA1, ecdsa-with-SHA256
        (Some([0x04 | 0x05 | 0x0b]), _) | (_, Some([0x01] | [0x03, 0x02])) => 256,
        (Some([0x0c]), _) | (_, Some([0x03, 0x03])) => 384,
        (Some([0x0d]), _) | (_, Some([0x03, 0x04])) => 512,
        _ => return None,
    };
    Some(match hash {
        256 => sha2::Sha256::digest(der).to_vec(),
        384 => sha2::Sha384::digest(der).to_vec(),
        _ => sha2::Sha512::digest(der).to_vec(),
    })
}

/// One DER item: its tag, its content and what follows it.
fn der_item(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_channel_binding_hash_follows_the_signature_algorithm() {
        use sha2::Digest as _;
        // rcgen signs with ECDSA P-256 and SHA-256 by default.
        let cert = rcgen::generate_simple_self_signed(vec!["h".to_owned()])
            .expect("rcgen")
            .cert;
        let der = cert.der().to_vec();
        assert_eq!(
            end_point_hash(&der),
            Some(sha2::Sha256::digest(&der).to_vec())
        );
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("key");
        let cert = rcgen::CertificateParams::new(vec!["h".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = cert.der().to_vec();
        assert_eq!(
            end_point_hash(&der),
            Some(sha2::Sha384::digest(&der).to_vec())
        );
        assert_eq!(end_point_hash(b"not a certificate"), None);
        assert_eq!(end_point_hash(&der[..10]), None);
    }
}
