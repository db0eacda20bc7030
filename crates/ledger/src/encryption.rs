//! The ledger's key and what it encrypts: the SQLite file (SQLCipher), the spool's frames and
//! PostgreSQL's personal columns (XChaCha20-Poly1305).
//!
//! One 256-bit key is configured; each use gets a key of its own derived from it with
//! HMAC-SHA-256 over a label, so that the SQLite key, the spool key and the column key are
//! unrelated to each other and a key check value can be stored without revealing any of them.
//! XChaCha20-Poly1305's 192-bit nonces are drawn at random for every sealed value: at that size
//! random nonces never repeat in practice, so no counter has to survive restarts.

use std::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::digest::generic_array::GenericArray;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{LedgerError, Result};

const NONCE_BYTES: usize = 24;
const TAG_BYTES: usize = 16;

/// The key usage data is encrypted with: 32 bytes, configured as 64 hex digits. `Debug` prints
/// `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerKey([u8; 32]);

impl fmt::Debug for LedgerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerKey(***)")
    }
}

impl LedgerKey {
    /// Reads a key written as 64 hex digits (`openssl rand -hex 32`), surrounding whitespace
    /// ignored.
    pub fn from_hex(text: &str) -> Result<LedgerKey> {
        let text = text.trim();
        let mut key = [0u8; 32];
        match hex::decode_to_slice(text, &mut key) {
            Ok(()) => Ok(LedgerKey(key)),
            Err(_) => Err(LedgerError::KeyFormat(text.len())),
        }
    }

    fn derive(&self, label: &str) -> [u8; 32] {
        // HMAC pads a key shorter than the hash's block (64 bytes) with zeros; padding it here
        // gives the same MAC through the constructor that cannot fail.
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.0);
        let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(&block));
        mac.update(label.as_bytes());
        let mut derived = [0u8; 32];
        derived.copy_from_slice(&mac.finalize().into_bytes());
        derived
    }

    /// SQLCipher's `PRAGMA key` value: a raw key (`x'…'`), which skips SQLCipher's passphrase
    /// derivation, so that opening a connection costs no PBKDF2 rounds.
    pub(crate) fn sqlcipher_pragma(&self) -> String {
        format!(
            "\"x'{}'\"",
            hex::encode(self.derive("tollgate ledger sqlcipher v1"))
        )
    }

    /// The spool's frames and the rejected events beside them.
    pub(crate) fn spool_sealer(&self) -> Sealer {
        Sealer::new(&self.derive("tollgate ledger spool v1"))
    }

    /// PostgreSQL's personal columns.
    pub(crate) fn column_sealer(&self) -> Sealer {
        Sealer::new(&self.derive("tollgate ledger columns v1"))
    }

    /// A value stored beside the data that tells whether a key is the one it was written with,
    /// and reveals nothing else about the key.
    pub(crate) fn check_value(&self) -> String {
        hex::encode(self.derive("tollgate ledger key check v1"))
    }
}

/// Seals and opens values with one derived key: `nonce (24 bytes) · ciphertext · tag (16)`.
#[derive(Clone)]
pub(crate) struct Sealer {
    aead: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    fn new(key: &[u8; 32]) -> Sealer {
        Sealer {
            aead: XChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// `plaintext` encrypted and authenticated together with `context` (which is not stored:
    /// opening needs the same), under a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).map_err(|e| LedgerError::Encryption(e.to_string()))?;
        let sealed = self
            .aead
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| LedgerError::Encryption("encrypting a value failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of a sealed value, or `None` if it was sealed with another key or another
    /// context, or has been altered.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_BYTES + TAG_BYTES {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.aead
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn keys_are_64_hex_digits_and_never_print() {
        let key = LedgerKey::from_hex(&format!(" {KEY}\n")).unwrap();
        assert_eq!(format!("{key:?}"), "LedgerKey(***)");
        let err = LedgerKey::from_hex("not a key").unwrap_err();
        assert!(err.to_string().contains("64 hex digits"), "{err}");
        assert!(LedgerKey::from_hex(&KEY[..62]).is_err());
    }

    #[test]
    fn each_use_has_a_key_of_its_own() {
        let key = LedgerKey::from_hex(KEY).unwrap();
        let sqlite = key.sqlcipher_pragma();
        let check = key.check_value();
        assert!(!sqlite.contains(KEY) && !check.contains(KEY));
        assert!(!sqlite.contains(&check));
        let sealed = key.spool_sealer().seal(b"alice@example.com", b"").unwrap();
        assert!(key.column_sealer().open(&sealed, b"").is_none());
    }

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = LedgerKey::from_hex(KEY).unwrap();
        let other = LedgerKey::from_hex(&KEY.replace("1f", "20")).unwrap();
        let sealer = key.column_sealer();
        let a = sealer
            .seal(b"alice@example.com", b"users.email:alice")
            .unwrap();
        let b = sealer
            .seal(b"alice@example.com", b"users.email:alice")
            .unwrap();
        assert_ne!(a, b, "a fresh nonce every time");
        assert_eq!(
            sealer.open(&a, b"users.email:alice").unwrap(),
            b"alice@example.com"
        );
        assert!(sealer.open(&a, b"users.email:bob").is_none());
        assert!(
            other
                .column_sealer()
                .open(&a, b"users.email:alice")
                .is_none()
        );
        let mut altered = a.clone();
        altered[30] ^= 1;
        assert!(sealer.open(&altered, b"users.email:alice").is_none());
        assert!(sealer.open(&a[..20], b"users.email:alice").is_none());
    }

    #[test]
    fn the_derived_keys_are_hmac_sha256_of_their_label() {
        // RFC 4231 test case 2's key is shorter than a block, like ours: the padded key gives
        // the published MAC.
        let mut block = [0u8; 64];
        block[..4].copy_from_slice(b"Jefe");
        let mut mac = <Hmac<Sha256> as KeyInit>::new(GenericArray::from_slice(&block));
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
