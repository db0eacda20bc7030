//! Tollgate keys → who is calling. Keys are held only as SHA-256 hashes.
//!
//! A presented key is hashed and the hash looked up; any timing difference in the lookup can
//! only reveal something about a hash, never about a key, so no comparison of secrets happens
//! here at all.
//!
//! Keys come from two places: the static `[[keys]]` of gateway.toml, held in memory, and the
//! ledger's key table (keys issued through the admin API), read on first use and cached for a
//! short time, together with whether the key's user is disabled and the key's own rules. A revocation, or a user
//! disabled, enabled or deleted, through this gateway's admin API clears the cache at once;
//! other instances see it when their cached entry expires (`proxy.key_cache_ttl_ms`; 0 reads
//! the table on every request). The cache's lifetime and the plan of a user without a subscription
//! (`default_plan`) are read from the configuration snapshot of each request, so a reload
//! applies to them too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tollgate_config::{Config, StaticKey};
use tollgate_domain::{AnchorDay, KeyRules};
use tollgate_ledger::{Ledger, LedgerError};

/// More cached lookups than this (mostly unknown keys, under a guessing attack) clear the cache
/// rather than grow it.
const CACHE_MAX_ENTRIES: usize = 100_000;

/// Who a key belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub plan: String,
    /// The key's id as the admin API lists it, for the ledger and the access log: a stored
    /// key's id in the key table (`key_…`), a static key's `StaticKey::id` (`static_…`).
    pub key_id: String,
    pub anchor_day: AnchorDay,
    /// The user was disabled through the admin API: every call is refused (403
    /// `user_disabled`) until they are enabled again. Static keys are never disabled.
    pub disabled: bool,
    /// The key's own expiry, provider list and model patterns (none for a static key). Cached
    /// with the rest, so a change reaches other instances within `proxy.key_cache_ttl_ms`;
    /// the expiry itself is compared with the clock on every call.
    pub rules: KeyRules,
}

/// The static `[[keys]]` of gateway.toml, by hash: part of the configuration snapshot.
#[derive(Clone, Debug, Default)]
pub struct StaticKeys {
    by_hash: HashMap<[u8; 32], Arc<Identity>>,
}

impl StaticKeys {
    pub fn new(keys: &[StaticKey]) -> StaticKeys {
        let by_hash = keys
            .iter()
            .map(|k| {
                (
                    k.sha256,
                    Arc::new(Identity {
                        user: k.user.clone(),
                        plan: k.plan.clone(),
                        key_id: k.id(),
                        anchor_day: k.anchor_day,
                        disabled: false,
                        rules: KeyRules::default(),
                    }),
                )
            })
            .collect();
        StaticKeys { by_hash }
    }

    /// A static key's owner.
    pub fn lookup(&self, presented: &str) -> Option<&Identity> {
        self.by_hash.get(&hash(presented)).map(|i| &**i)
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// How a presented key is resolved: the snapshot's static keys first, then (when the gateway
/// has a ledger) the keys issued through the admin API, cached for a short time. Cheap to
/// clone; clones share the cache, so a revocation through one clears it for all.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    stored: Option<Arc<StoredKeys>>,
}

/// The SHA-256 of a key, as stored.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Keys issued through the admin API, read from the ledger's key table.
#[derive(Debug)]
struct StoredKeys {
    ledger: Ledger,
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

/// A looked-up key (`None`: unknown or revoked) and when it was read.
type Cached = (Option<Arc<Identity>>, Instant);

impl KeyRing {
    /// Also accept the keys in the ledger's key table.
    pub fn with_stored_keys(mut self, ledger: Ledger) -> KeyRing {
        self.stored = Some(Arc::new(StoredKeys {
            ledger,
            cache: Mutex::new(HashMap::new()),
        }));
        self
    }

    /// Who the presented key belongs to: `None` for an unknown or revoked key. `config` (the
    /// request's snapshot's) says how long a stored key is cached and the plan of a user
    /// without a subscription.
    pub async fn resolve(
        &self,
        config: &Config,
        statics: &StaticKeys,
        presented: &str,
    ) -> Result<Option<Arc<Identity>>, LedgerError> {
        let digest = hash(presented);
        if let Some(identity) = statics.by_hash.get(&digest) {
            return Ok(Some(Arc::clone(identity)));
        }
        let Some(stored) = &self.stored else {
            return Ok(None);
        };
        let ttl = Duration::from_millis(config.proxy.key_cache_ttl_ms);
        if let Some(cached) = stored.cached(&digest, ttl) {
            return Ok(cached);
        }
        let found = stored.read(&digest, config.default_plan.as_deref()).await?;
        stored.remember(digest, found.clone(), ttl);
        Ok(found)
    }

    /// Forgets every cached stored key, so that a revocation applies to the next request.
    pub fn invalidate(&self) {
        if let Some(stored) = &self.stored {
            stored
                .cache
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

impl StoredKeys {
    fn cached(&self, digest: &[u8; 32], ttl: Duration) -> Option<Option<Arc<Identity>>> {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(digest)
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(identity, _)| identity.clone())
    }

    fn remember(&self, digest: [u8; 32], identity: Option<Arc<Identity>>, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(digest, (identity, Instant::now()));
    }

    async fn read(
        &self,
        digest: &[u8; 32],
        default_plan: Option<&str>,
    ) -> Result<Option<Arc<Identity>>, LedgerError> {
        let Some(key) = self.ledger.api_key_by_hash(&hex(digest)).await? else {
            return Ok(None);
        };
        if key.revoked_at.is_some() {
            return Ok(None);
        }
        let rules = key.rules()?;
        let disabled = self
            .ledger
            .user(&key.user_id)
            .await?
            .is_some_and(|u| u.disabled_at.is_some());
        let subscription = self.ledger.subscription(&key.user_id).await?;
        let (plan, anchor_day) = match subscription {
            Some(sub) => (
                sub.plan_id,
                u8::try_from(sub.anchor_day)
                    .ok()
                    .and_then(|d| AnchorDay::new(d).ok())
                    .unwrap_or_default(),
            ),
            None => match default_plan {
                Some(plan) => (plan.to_owned(), AnchorDay::default()),
                None => return Ok(None),
            },
        };
        Ok(Some(Arc::new(Identity {
            user: key.user_id,
            plan,
            key_id: key.id,
            anchor_day,
            disabled,
            rules,
        })))
    }
}

/// Lower-case hex, the form in which the key table stores hashes.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_found_by_hash_only() {
        let ring = StaticKeys::new(&[StaticKey {
            user: "alice".into(),
            plan: "pro".into(),
            sha256: hash("tg_alice"),
            name: None,
            anchor_day: AnchorDay::default(),
        }]);
        let id = ring.lookup("tg_alice").unwrap();
        assert_eq!((id.user.as_str(), id.plan.as_str()), ("alice", "pro"));
        assert!(id.key_id.starts_with("static_"), "{}", id.key_id);
        assert_eq!(id.key_id.len(), "static_".len() + 12);
        assert!(ring.lookup("tg_alicf").is_none());
        assert!(ring.lookup("").is_none());
    }

    #[tokio::test]
    async fn stored_keys_resolve_until_revoked() {
        use tollgate_ledger::{Ledger, LedgerConfig, NewApiKey, NewSubscription, StoredRules};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let (ledger, handle) = Ledger::open(LedgerConfig::new(url, dir.path().join("spool")))
            .await
            .unwrap();
        ledger.create_user("bob", None, None).await.unwrap();
        ledger
            .create_api_key(&NewApiKey {
                id: "k1".into(),
                user_id: "bob".into(),
                key_hash: hex(&hash("tg_bob")),
                prefix: "tg_bob".into(),
                name: None,
                rules: StoredRules::default(),
            })
            .await
            .unwrap();
        let none = StaticKeys::default();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        let mut config = tollgate_config::load_with_env(&path, &|_| None)
            .unwrap()
            .config;
        config.proxy.key_cache_ttl_ms = 60_000;
        config.default_plan = Some("free".into());
        let ring = KeyRing::default().with_stored_keys(ledger.clone());
        // No subscription yet: the default plan.
        let bob = ring
            .resolve(&config, &none, "tg_bob")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((bob.user.as_str(), bob.plan.as_str()), ("bob", "free"));
        // Rows and the admin API name the key alike.
        assert_eq!(bob.key_id, "k1");
        assert!(
            ring.resolve(&config, &none, "tg_nobody")
                .await
                .unwrap()
                .is_none()
        );

        ledger
            .upsert_subscription(&NewSubscription {
                user_id: "bob".into(),
                plan_id: "pro".into(),
                billing_cycle: "monthly".into(),
                anchor_day: AnchorDay::new(15).unwrap(),
                status: "active".into(),
                auto_renew: true,
            })
            .await
            .unwrap();
        ledger
            .revoke_api_key("k1", chrono::Utc::now())
            .await
            .unwrap();
        // Cached for the TTL, until the cache is cleared (as a revocation here does).
        assert!(
            ring.resolve(&config, &none, "tg_bob")
                .await
                .unwrap()
                .is_some()
        );
        ring.invalidate();
        assert!(
            ring.resolve(&config, &none, "tg_bob")
                .await
                .unwrap()
                .is_none()
        );

        // With no cache every request reads the table.
        ledger
            .create_api_key(&NewApiKey {
                id: "k2".into(),
                user_id: "bob".into(),
                key_hash: hex(&hash("tg_bob_2")),
                prefix: "tg_bob".into(),
                name: None,
                rules: StoredRules::default(),
            })
            .await
            .unwrap();
        let uncached = KeyRing::default().with_stored_keys(ledger.clone());
        config.proxy.key_cache_ttl_ms = 0;
        config.default_plan = None;
        let bob = uncached
            .resolve(&config, &none, "tg_bob_2")
            .await
            .unwrap()
            .unwrap();
        assert_eq!((bob.plan.as_str(), bob.anchor_day.get()), ("pro", 15));
        ledger
            .revoke_api_key("k2", chrono::Utc::now())
            .await
            .unwrap();
        assert!(
            uncached
                .resolve(&config, &none, "tg_bob_2")
                .await
                .unwrap()
                .is_none()
        );
        handle.shutdown().await.unwrap();
    }
}
