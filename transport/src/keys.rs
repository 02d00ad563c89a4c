//! Secrets every endpoint of one service shares, so that any of them can finish what another
//! started: [`ServiceKeys`].
//!
//! A QUIC server signs stateless resets (RFC 9000 §10.3) and seals address-validation tokens
//! (Retry and NEW_TOKEN, RFC 9000 §8.1) with keys of its own. quinn draws both at random per
//! endpoint, which is right for one endpoint; but when several serve one address (workers on one
//! port, machines behind a load balancer, a process replacing another), a packet can reach an
//! endpoint other than the one that issued the token or the connection ID. With one set of keys
//! derived from one secret, any endpoint of the service accepts the others' tokens and resets
//! the others' dead connections, and recognises their connection IDs as its own kind.
//!
//! This module only derives keys; [`crate::ServerBuilder::service_keys`] puts them into quinn's
//! configuration. Keeping the secret secret is the caller's job.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::{hkdf, hmac};
use quinn::crypto::{HandshakeTokenKey, HmacKey};

/// Keys shared by every endpoint of one service, derived from one secret with HKDF-SHA256
/// (RFC 5869).
///
/// Share them only among endpoints that the network reaches by connection ID (a QUIC-LB load
/// balancer, a [`crate::workers::WorkerGroup`]) or that take over one another's address, as a
/// restarted server does. RFC 9000 §21.9: if an attacker can send a connection's ID to another
/// endpoint with the same keys (past a balancer that routes by address, say), that endpoint
/// answers with a valid stateless reset and ends the connection. With QUIC-LB each endpoint
/// also resets only IDs of its own server ID, and its reset key is derived per configuration.
///
/// ```
/// use quay_transport::keys::ServiceKeys;
///
/// // In production, read the secret from a file or a secret store.
/// let keys = ServiceKeys::from_secret(&[0x5a; 32])?;
/// # let _ = keys;
/// # Ok::<(), quay_transport::keys::ServiceKeysError>(())
/// ```
#[derive(Clone)]
pub struct ServiceKeys {
    reset: [u8; 32],
    token: [u8; 32],
    connection_id: [u8; 32],
}

/// Why a secret cannot make [`ServiceKeys`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceKeysError {
    /// The secret is shorter than [`ServiceKeys::MIN_SECRET_LEN`] octets.
    #[error("a service secret needs at least 32 octets, this one has {0}")]
    SecretTooShort(usize),
}

impl ServiceKeys {
    /// The shortest secret accepted: 32 octets, the strength of the derived keys.
    pub const MIN_SECRET_LEN: usize = 32;

    /// Keys derived from `secret` (at least 32 random octets): the same secret gives the same
    /// keys on every machine.
    pub fn from_secret(secret: &[u8]) -> Result<Self, ServiceKeysError> {
        if secret.len() < Self::MIN_SECRET_LEN {
            return Err(ServiceKeysError::SecretTooShort(secret.len()));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"quay service keys").extract(secret);
        let expand = |label: &[u8], out: &mut [u8]| {
            prk.expand(&[label], hkdf::HKDF_SHA256)
                .and_then(|okm| okm.fill(out))
                // Every key is one hash length, which HKDF always gives.
                .expect("HKDF-SHA256 expands to 32 octets");
        };
        let mut keys = Self {
            reset: [0; 32],
            token: [0; 32],
            connection_id: [0; 32],
        };
        expand(b"stateless reset", &mut keys.reset);
        expand(b"address validation token", &mut keys.token);
        expand(b"connection id", &mut keys.connection_id);
        Ok(keys)
    }

    /// Keys from a fresh random secret: for tests, or for a group of workers in one process
    /// that never outlives it.
    pub fn generate() -> Self {
        let mut secret = [0; Self::MIN_SECRET_LEN];
        crate::quic_lb::random(&mut secret);
        Self::from_secret(&secret).expect("the secret has the minimum length")
    }

    /// The HMAC key that derives stateless reset tokens from connection IDs (RFC 9000 §10.3.2).
    pub(crate) fn reset_key(&self) -> Arc<dyn HmacKey> {
        Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &self.reset))
    }

    /// The reset key of endpoints issuing IDs of one QUIC-LB configuration, told apart by its
    /// `fingerprint`: when a codepoint gets a new configuration, its IDs may repeat older ones,
    /// and a fresh reset key keeps their tokens from repeating too
    /// (draft-ietf-quic-load-balancers-21 §9.5).
    pub(crate) fn reset_key_for(&self, fingerprint: &[u8]) -> Arc<dyn HmacKey> {
        let parent = hmac::Key::new(hmac::HMAC_SHA256, &self.reset);
        let derived = hmac::sign(&parent, fingerprint);
        Arc::new(hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref()))
    }

    /// The key that seals Retry and NEW_TOKEN tokens (RFC 9000 §8.1.3).
    pub(crate) fn token_key(&self) -> Arc<dyn HandshakeTokenKey> {
        Arc::new(hkdf::Salt::new(hkdf::HKDF_SHA256, &[]).extract(&self.token))
    }

    /// The key of quinn's hashed connection IDs, so endpoints recognise each other's IDs.
    pub(crate) fn connection_id_key(&self) -> u64 {
        let mut key = [0; 8];
        key.copy_from_slice(&self.connection_id[..8]);
        u64::from_be_bytes(key)
    }
}

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceKeys").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_secret_gives_one_set_of_keys() {
        let a = ServiceKeys::from_secret(&[0x01; 32]).unwrap();
        let b = ServiceKeys::from_secret(&[0x01; 32]).unwrap();
        let c = ServiceKeys::from_secret(&[0x02; 32]).unwrap();
        assert_eq!(
            (a.reset, a.token, a.connection_id),
            (b.reset, b.token, b.connection_id)
        );
        assert_ne!(a.reset, c.reset);
        // Each key is derived with its own label.
        assert_ne!(a.reset, a.token);
        assert_eq!(
            ServiceKeys::from_secret(&[0; 31]).err(),
            Some(ServiceKeysError::SecretTooShort(31))
        );
        // A reset token signed with one copy verifies with the other.
        let mut token = [0; 32];
        a.reset_key().sign(&[0xaa; 8], &mut token);
        assert!(b.reset_key().verify(&[0xaa; 8], &token).is_ok());
        assert!(c.reset_key().verify(&[0xaa; 8], &token).is_err());
        assert_eq!(format!("{a:?}"), "ServiceKeys { .. }");

        // One reset key per QUIC-LB configuration, the same on every endpoint that has it.
        let token_for = |keys: &ServiceKeys, fingerprint: &[u8]| {
            let mut token = [0; 32];
            keys.reset_key_for(fingerprint).sign(&[0xaa; 8], &mut token);
            token
        };
        assert_eq!(token_for(&a, &[0x01, 0x02]), token_for(&b, &[0x01, 0x02]));
        assert_ne!(token_for(&a, &[0x01, 0x02]), token_for(&a, &[0x01, 0x03]));
        assert_ne!(token_for(&a, &[0x01, 0x02]), token);
    }
}
