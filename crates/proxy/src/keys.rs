//! Tollgate keys → who is calling. Keys are held only as SHA-256 hashes.
//!
//! A presented key is hashed and the hash looked up; any timing difference in the lookup can
//! only reveal something about a hash, never about a key, so no comparison of secrets happens
//! here at all.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use tollgate_config::StaticKey;
use tollgate_domain::AnchorDay;

/// Who a key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub plan: String,
    /// A non-secret id of the key (the first 12 hex digits of its hash), for the ledger.
    pub key_id: String,
    pub anchor_day: AnchorDay,
}

/// Every key the gateway accepts.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    by_hash: HashMap<[u8; 32], Identity>,
}

impl KeyRing {
    pub fn from_static(keys: &[StaticKey]) -> KeyRing {
        let by_hash = keys
            .iter()
            .map(|k| {
                (
                    k.sha256,
                    Identity {
                        user: k.user.clone(),
                        plan: k.plan.clone(),
                        key_id: key_id(&k.sha256),
                        anchor_day: k.anchor_day,
                    },
                )
            })
            .collect();
        KeyRing { by_hash }
    }

    pub fn lookup(&self, presented: &str) -> Option<&Identity> {
        self.by_hash.get(&hash(presented))
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// The SHA-256 of a key, as stored.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn key_id(hash: &[u8; 32]) -> String {
    hash.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_hash_only() {
        let ring = KeyRing::from_static(&[StaticKey {
            user: "alice".into(),
            plan: "pro".into(),
            sha256: hash("tg_alice"),
            name: None,
            anchor_day: AnchorDay::default(),
        }]);
        let id = ring.lookup("tg_alice").unwrap();
        assert_eq!((id.user.as_str(), id.plan.as_str()), ("alice", "pro"));
        assert_eq!(id.key_id.len(), 12);
        assert!(ring.lookup("tg_alicf").is_none());
        assert!(ring.lookup("").is_none());
    }
}
