//! Everything the request path derives from the configuration, as one immutable snapshot.
//!
//! Plans, prices, thresholds, proxy settings, each provider's upstream and the headers its
//! requests carry, and the static keys are built once from a validated [`Config`] and held
//! behind one atomically swappable pointer. A request loads the snapshot when it starts and
//! carries it in its context for its whole life, so a reload (a swap) never changes the rules in
//! the middle of a call, and nothing on the request path reads the configuration any other way.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tollgate_config::Config;
use tollgate_domain::Provider;

use crate::credentials::provider_credential;
use crate::errors::ProxyError;
use crate::keys::StaticKeys;
use crate::upstream::Upstream;

/// The configuration as the request path uses it.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    /// Enabled providers: where their requests go and the headers they carry.
    pub providers: BTreeMap<Provider, ProviderRoute>,
    pub keys: StaticKeys,
}

/// One provider's upstream and the headers every request to it carries, built once so that a
/// request copies reference-counted values instead of formatting them.
#[derive(Debug)]
pub struct ProviderRoute {
    pub upstream: Upstream,
    /// The upstream request's `Host`.
    pub host: http::HeaderValue,
    /// The provider's credential header; `None` when it has no key (the route answers 503).
    pub credential: Option<(http::HeaderName, http::HeaderValue)>,
}

impl Snapshot {
    /// Derives the snapshot from a validated configuration.
    pub fn build(config: Arc<Config>) -> Result<Snapshot, ProxyError> {
        let mut providers = BTreeMap::new();
        for (provider, settings) in &config.providers {
            let upstream = Upstream::parse(&settings.base_url)?;
            let host = http::HeaderValue::from_str(&upstream.authority).map_err(|_| {
                ProxyError::BadUpstream {
                    url: settings.base_url.clone(),
                    reason: "its host cannot be a Host header",
                }
            })?;
            let credential = settings
                .key
                .as_ref()
                .and_then(|key| provider_credential(*provider, key.expose()).ok());
            providers.insert(
                *provider,
                ProviderRoute {
                    upstream,
                    host,
                    credential,
                },
            );
        }
        Ok(Snapshot {
            keys: StaticKeys::new(&config.keys),
            providers,
            config,
        })
    }
}

/// The current snapshot, swapped whole.
#[derive(Debug)]
pub struct SnapshotCell(ArcSwap<Snapshot>);

impl SnapshotCell {
    pub fn new(snapshot: Snapshot) -> SnapshotCell {
        SnapshotCell(ArcSwap::from_pointee(snapshot))
    }

    /// The snapshot a request starts with; it keeps it until it ends.
    pub fn load(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    /// Makes `snapshot` the one new requests start with; requests already running keep theirs.
    pub fn store(&self, snapshot: Snapshot) {
        self.0.store(Arc::new(snapshot));
    }
}
