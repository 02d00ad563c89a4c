//! What a client trusts: the system's roots, explicit roots, pinned certificate hashes, or
//! (by name only) nothing at all.
//!
//! Certificate-hash pinning follows the rules browsers apply to WebTransport's
//! `serverCertificateHashes`: the leaf's SHA-256 must equal a pinned hash, its key must be ECDSA,
//! it must be valid now, and its whole validity period must be at most 14 days. The TLS handshake
//! signature is still verified against the pinned certificate's key, so pinning proves the
//! server holds the key. See [`check_pinned`] for the rules on their own.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::identity::{CertificateError, CertificateHash, MAX_PINNED_VALIDITY};
use crate::{EndpointError, crypto_provider};

/// Which server certificates a client accepts.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Trust {
    /// Certificates that chain to the operating system's root store (and, with the
    /// `webpki-roots` feature, to Mozilla's roots as well). The default.
    #[default]
    SystemRoots,
    /// Certificates that chain to one of these roots (only these).
    Roots(Vec<CertificateDer<'static>>),
    /// A leaf certificate whose SHA-256 hash is one of these, under the browsers'
    /// `serverCertificateHashes` rules (see [`check_pinned`]).
    CertificateHashes(Vec<CertificateHash>),
    /// Any certificate at all: the connection is encrypted but the server is not authenticated.
    /// Anyone on the path can impersonate the server. For tests and debugging only.
    DangerAcceptAnyCertificate,
}

impl Trust {
    /// Trusts exactly the certificates in a PEM file (for a private CA or a self-signed server).
    pub fn roots_from_pem_file(path: impl AsRef<Path>) -> Result<Self, CertificateError> {
        crate::identity::read_pem_certificates(path.as_ref()).map(Self::Roots)
    }

    /// Builds the rustls client configuration (TLS 1.3 only, as QUIC requires) for this trust.
    pub(crate) fn client_crypto(&self) -> Result<rustls::ClientConfig, EndpointError> {
        let provider = crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?;
        let config = match self {
            Self::SystemRoots => builder
                .with_root_certificates(system_roots()?)
                .with_no_client_auth(),
            Self::Roots(roots) => {
                let mut store = RootCertStore::empty();
                for root in roots {
                    store.add(root.clone())?;
                }
                builder.with_root_certificates(store).with_no_client_auth()
            }
            Self::CertificateHashes(hashes) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(LeafVerifier {
                    rule: LeafRule::Pinned(hashes.clone()),
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
            Self::DangerAcceptAnyCertificate => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(LeafVerifier {
                    rule: LeafRule::DangerAny,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(config)
    }
}

/// Loads the operating system's root certificates (plus Mozilla's with `webpki-roots`).
fn system_roots() -> Result<RootCertStore, EndpointError> {
    let mut store = RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    #[cfg(feature = "webpki-roots")]
    store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if store.is_empty() {
        let detail = match loaded.errors.first() {
            Some(error) => error.to_string(),
            None => format!("{added} usable certificates found"),
        };
        return Err(EndpointError::NoRootCertificates(detail));
    }
    Ok(store)
}

/// Checks a leaf certificate against pinned hashes under the browsers' rules, at time `now`.
///
/// In order: the SHA-256 of `certificate_der` is one of `hashes`; the certificate parses; its
/// public key is ECDSA; its validity period is at most 14 days; `now` is inside it. The first
/// rule that fails is the error.
pub fn check_pinned(
    certificate_der: &[u8],
    hashes: &[CertificateHash],
    now: SystemTime,
) -> Result<(), PinningError> {
    let hash = CertificateHash::of(certificate_der);
    if !hashes.contains(&hash) {
        return Err(PinningError::HashMismatch(hash));
    }
    let (_, certificate) = x509_parser::parse_x509_certificate(certificate_der)
        .map_err(|error| PinningError::Malformed(error.to_string()))?;
    let algorithm = &certificate.public_key().algorithm.algorithm;
    if *algorithm != x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(PinningError::NotEcdsa(algorithm.to_id_string()));
    }
    let not_before = certificate.validity().not_before.timestamp();
    let not_after = certificate.validity().not_after.timestamp();
    let span = not_after.saturating_sub(not_before);
    if span < 0 || span.unsigned_abs() > MAX_PINNED_VALIDITY.as_secs() {
        return Err(PinningError::ValidityTooLong(Duration::from_secs(
            span.unsigned_abs(),
        )));
    }
    let now = match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since_epoch) => i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    if now < not_before {
        return Err(PinningError::NotYetValid);
    }
    if now > not_after {
        return Err(PinningError::Expired);
    }
    Ok(())
}

/// Which rule of certificate-hash pinning a server certificate broke.
///
/// `Debug` prints the variant and the message: rustls reports a custom verifier's error with
/// `Debug` inside the handshake failure a client sees, so the reason stays readable there.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PinningError {
    /// The leaf's SHA-256 is not one of the pinned hashes.
    #[error("certificate hash {0} is not one of the pinned hashes")]
    HashMismatch(CertificateHash),
    /// The leaf is not a well-formed X.509 certificate.
    #[error("pinned certificate cannot be parsed: {0}")]
    Malformed(String),
    /// The leaf's key is not ECDSA (the OID of its key algorithm is given); browsers refuse RSA.
    #[error("pinned certificate has a non-ECDSA key (algorithm {0}); hash pinning requires ECDSA")]
    NotEcdsa(String),
    /// The leaf's validity period (`notAfter - notBefore`) exceeds 14 days.
    #[error("pinned certificate validity period is {}s, longer than the 14 days hash pinning allows", .0.as_secs())]
    ValidityTooLong(Duration),
    /// The leaf's `notBefore` is in the future.
    #[error("pinned certificate is not valid yet")]
    NotYetValid,
    /// The leaf's `notAfter` is in the past.
    #[error("pinned certificate has expired")]
    Expired,
}

impl fmt::Debug for PinningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = match self {
            Self::HashMismatch(_) => "HashMismatch",
            Self::Malformed(_) => "Malformed",
            Self::NotEcdsa(_) => "NotEcdsa",
            Self::ValidityTooLong(_) => "ValidityTooLong",
            Self::NotYetValid => "NotYetValid",
            Self::Expired => "Expired",
        };
        write!(f, "{rule}: {self}")
    }
}

/// Which leaf certificates a [`LeafVerifier`] accepts.
#[derive(Debug)]
enum LeafRule {
    /// Only a leaf passing [`check_pinned`] for these hashes.
    Pinned(Vec<CertificateHash>),
    /// Any leaf at all.
    DangerAny,
}

/// Verifies the leaf alone (no chain to a root), as hash pinning and the insecure mode need.
/// The handshake signature is always checked against the leaf's key.
#[derive(Debug)]
struct LeafVerifier {
    rule: LeafRule,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for LeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let LeafRule::Pinned(hashes) = &self.rule {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
            check_pinned(end_entity, hashes, now).map_err(|error| {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                    rustls::OtherError(Arc::new(error)),
                ))
            })?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
