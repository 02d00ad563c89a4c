//! Server identities: a certificate chain with its private key, and certificate hashes.
//!
//! An [`Identity`] comes either from PEM files ([`Identity::from_pem_files`]) or is generated on
//! the spot ([`Identity::self_signed`]): an ECDSA P-256 certificate valid for at most 14 days,
//! the only kind a browser accepts through WebTransport's `serverCertificateHashes`. A
//! [`CertificateHash`] is the SHA-256 of a certificate's DER bytes, the value such a page pins.
//!
//! This module does not verify certificates; see [`crate::trust`] for the client side.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{Error as PemError, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::crypto_provider;

/// The longest validity a browser accepts for a certificate pinned by hash: 14 days.
///
/// WebTransport's `serverCertificateHashes` option only accepts certificates whose whole
/// validity period (from `notBefore` to `notAfter`) is at most this long.
pub const MAX_PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How far a generated certificate's `notBefore` lies in the past, to absorb clock skew.
const BACKDATE: Duration = Duration::from_secs(60 * 60);

/// A certificate chain (leaf first) and the private key of its leaf, ready to serve TLS.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Generates a self-signed ECDSA P-256 certificate for `names`, valid for 14 days.
    ///
    /// Each name becomes a subject alternative name: an IP address if it parses as one, a DNS
    /// name otherwise. The validity starts one hour in the past (for clocks that lag) and spans
    /// exactly [`MAX_PINNED_VALIDITY`], so browsers accept it through `serverCertificateHashes`.
    pub fn self_signed<I, S>(names: I) -> Result<Self, CertificateError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::self_signed_valid_for(names, MAX_PINNED_VALIDITY)
    }

    /// Generates a self-signed ECDSA P-256 certificate for `names`, valid for `validity`.
    ///
    /// `validity` must be at most [`MAX_PINNED_VALIDITY`]: a longer one could not be pinned by a
    /// browser, which is the only reason to generate a certificate here.
    pub fn self_signed_valid_for<I, S>(
        names: I,
        validity: Duration,
    ) -> Result<Self, CertificateError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        if validity > MAX_PINNED_VALIDITY {
            return Err(CertificateError::ValidityTooLong(validity));
        }
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let generate = |error: rcgen::Error| CertificateError::Generate(error.to_string());
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "quay self-signed");
        let not_before = time::OffsetDateTime::now_utc() - BACKDATE;
        params.not_before = not_before;
        params.not_after = not_before + validity;
        let certificate = params.self_signed(&key).map_err(generate)?;
        Ok(Self {
            chain: vec![certificate.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        })
    }

    /// Loads a PEM certificate chain (leaf first) and its private key from two files.
    ///
    /// The key may be PKCS#8 (`BEGIN PRIVATE KEY`), SEC1 (`BEGIN EC PRIVATE KEY`) or PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`); the two files may be the same file. Errors name the file and
    /// say what is wrong with it, including a key that does not belong to the certificate.
    pub fn from_pem_files(
        certificate_path: impl AsRef<Path>,
        key_path: impl AsRef<Path>,
    ) -> Result<Self, CertificateError> {
        let certificate_path = certificate_path.as_ref();
        let key_path = key_path.as_ref();
        let chain = read_pem_certificates(certificate_path)?;
        let key_pem = read_file(key_path)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
            PemError::NoItemsFound if is_pem(&key_pem) => CertificateError::NoPrivateKey {
                path: key_path.to_owned(),
            },
            PemError::NoItemsFound => CertificateError::NotPem {
                path: key_path.to_owned(),
                detail: "no PEM block found".into(),
            },
            other => CertificateError::NotPem {
                path: key_path.to_owned(),
                detail: other.to_string(),
            },
        })?;
        // Parsing the key with the crypto provider also compares it with the leaf's public key.
        CertifiedKey::from_der(chain.clone(), key.clone_key(), &crypto_provider()).map_err(
            |error| match error {
                rustls::Error::InconsistentKeys(_) => CertificateError::KeyMismatch {
                    key_path: key_path.to_owned(),
                    certificate_path: certificate_path.to_owned(),
                },
                other => CertificateError::UnsupportedKey {
                    path: key_path.to_owned(),
                    detail: other.to_string(),
                },
            },
        )?;
        Ok(Self { chain, key })
    }

    /// The certificate chain, leaf first.
    pub fn certificate_chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf's private key.
    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The SHA-256 hash of the leaf certificate, the value a browser pins.
    pub fn certificate_hash(&self) -> CertificateHash {
        // The chain is never empty: both constructors put the leaf first.
        CertificateHash::of(&self.chain[0])
    }

    /// The SHA-256 of the leaf certificate's SubjectPublicKeyInfo, in base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes to accept this certificate for HTTP/3
    /// (a page's `serverCertificateHashes` pins [`Identity::certificate_hash`] instead). `None`
    /// if the leaf is not a certificate that can be parsed.
    pub fn spki_sha256_base64(&self) -> Option<String> {
        use base64::Engine as _;

        let (_, certificate) = x509_parser::parse_x509_certificate(&self.chain[0]).ok()?;
        let spki = certificate.tbs_certificate.subject_pki.raw;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki);
        Some(base64::engine::general_purpose::STANDARD.encode(digest.as_ref()))
    }

    /// The certificate chain in PEM, leaf first.
    pub fn certificate_pem(&self) -> String {
        let blocks: Vec<pem::Pem> = self
            .chain
            .iter()
            .map(|der| pem::Pem::new("CERTIFICATE", der.to_vec()))
            .collect();
        pem::encode_many(&blocks)
    }

    /// The private key in PEM, in the format it was loaded or generated in.
    pub fn private_key_pem(&self) -> String {
        let tag = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem::encode(&pem::Pem::new(tag, self.key.secret_der().to_vec()))
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("certificates", &self.chain.len())
            .field("leaf_hash", &self.certificate_hash())
            .finish_non_exhaustive()
    }
}

/// Reads every certificate of a PEM file; used for server chains and for client trust roots.
pub(crate) fn read_pem_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertificateError::NotPem {
            path: path.to_owned(),
            detail: error.to_string(),
        })?;
    match chain.is_empty() {
        false => Ok(chain),
        true if is_pem(&bytes) => Err(CertificateError::NoCertificate {
            path: path.to_owned(),
        }),
        true => Err(CertificateError::NotPem {
            path: path.to_owned(),
            detail: "no PEM block found".into(),
        }),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertificateError> {
    std::fs::read(path).map_err(|source| CertificateError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Whether `bytes` hold at least one PEM block of any kind.
fn is_pem(bytes: &[u8]) -> bool {
    bytes.windows(11).any(|window| window == b"-----BEGIN ")
}

/// The SHA-256 hash of a DER-encoded certificate.
///
/// `Display` and [`CertificateHash::to_hex`] give 64 lowercase hex digits; [`FromStr`] accepts
/// that, upper case, and the colon-separated form (`AB:CD:…`) that `openssl x509 -fingerprint`
/// prints; [`CertificateHash::to_js_array`] gives the form a web page pastes into
/// `serverCertificateHashes`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertificateHash([u8; 32]);

impl CertificateHash {
    /// Hashes a DER-encoded certificate.
    pub fn of(certificate_der: &[u8]) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, certificate_der);
        let mut bytes = [0; 32];
        bytes.copy_from_slice(digest.as_ref());
        Self(bytes)
    }

    /// Wraps hash bytes computed elsewhere.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 hash bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.to_string()
    }

    /// A JavaScript array literal of the 32 bytes, e.g. `[0x1f, 0x8b, …]`, for
    /// `serverCertificateHashes: [{ algorithm: "sha-256", value: new Uint8Array(<this>) }]`.
    pub fn to_js_array(&self) -> String {
        let bytes: Vec<String> = self.0.iter().map(|byte| format!("0x{byte:02x}")).collect();
        format!("[{}]", bytes.join(", "))
    }
}

impl fmt::Display for CertificateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for CertificateHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateHash({self})")
    }
}

impl FromStr for CertificateHash {
    type Err = ParseHashError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: Vec<u8> = text.bytes().filter(|&byte| byte != b':').collect();
        if digits.len() != 64 {
            return Err(ParseHashError);
        }
        let mut bytes = [0; 32];
        for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| ParseHashError)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| ParseHashError)?;
        }
        Ok(Self(bytes))
    }
}

/// A certificate hash that is not 64 hex digits (optionally separated by colons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a certificate hash is 64 hex digits (SHA-256), optionally separated by colons")]
pub struct ParseHashError;

/// Why a certificate or key could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// The file could not be read (missing, unreadable).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not PEM, or a PEM block in it is damaged.
    #[error("{path} is not a valid PEM file: {detail}")]
    NotPem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The file is PEM but holds no `CERTIFICATE` block.
    #[error("{path} holds no PEM certificate (expected a BEGIN CERTIFICATE block)")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The file is PEM but holds no private key block.
    #[error(
        "{path} holds no private key (expected a BEGIN PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY block)"
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key cannot be used (an algorithm the crypto provider does not support).
    #[error("{path}: unusable private key: {detail}")]
    UnsupportedKey {
        /// The key file.
        path: PathBuf,
        /// What the crypto provider said.
        detail: String,
    },
    /// The private key is not the one the leaf certificate was issued for.
    #[error("{key_path}: private key does not match the certificate in {certificate_path}")]
    KeyMismatch {
        /// The key file.
        key_path: PathBuf,
        /// The certificate file.
        certificate_path: PathBuf,
    },
    /// A self-signed certificate was asked for with a validity longer than 14 days.
    #[error("a pinnable certificate is valid for at most 14 days, not {0:?}")]
    ValidityTooLong(Duration),
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_text_forms() {
        let hash = CertificateHash::from_bytes(core::array::from_fn(|i| i as u8 * 7));
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("00070e151c"));
        assert_eq!(hex.parse::<CertificateHash>(), Ok(hash));
        assert_eq!(hex.to_uppercase().parse::<CertificateHash>(), Ok(hash));
        let colons: Vec<String> = hash.as_bytes().iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(colons.join(":").parse::<CertificateHash>(), Ok(hash));
        assert!(hash.to_js_array().starts_with("[0x00, 0x07, 0x0e,"));
        assert_eq!(hash.to_js_array().matches("0x").count(), 32);
        assert_eq!("abc".parse::<CertificateHash>(), Err(ParseHashError));
        assert_eq!(
            "zz".repeat(32).parse::<CertificateHash>(),
            Err(ParseHashError)
        );
    }

    #[test]
    fn sha256_of_known_input() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            CertificateHash::of(b"abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn self_signed_is_ecdsa_and_at_most_14_days() {
        let identity = Identity::self_signed(["localhost", "127.0.0.1"]).unwrap();
        let der = &identity.certificate_chain()[0];
        let (_, certificate) = x509_parser::parse_x509_certificate(der).unwrap();
        let validity = certificate.validity();
        let span = validity.not_after.timestamp() - validity.not_before.timestamp();
        assert_eq!(span, MAX_PINNED_VALIDITY.as_secs() as i64);
        assert!(validity.is_valid());
        assert_eq!(
            certificate.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        assert_eq!(identity.certificate_hash(), CertificateHash::of(der));
        assert!(
            identity
                .certificate_pem()
                .starts_with("-----BEGIN CERTIFICATE-----")
        );
        assert!(
            identity
                .private_key_pem()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        assert!(matches!(
            Identity::self_signed_valid_for(["x"], MAX_PINNED_VALIDITY + Duration::from_secs(1)),
            Err(CertificateError::ValidityTooLong(_))
        ));
    }
}
