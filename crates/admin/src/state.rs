//! What every handler shares: the ledger, the live configuration, the admin tokens and the
//! metrics renderer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tollgate_config::Config;
use tollgate_ledger::Ledger;

use crate::auth::{AdminTokens, sha256};
use crate::error::Result;
use crate::live::{ConfigControlRef, LogControlRef, Readiness};

/// Returns the configuration in force; a reload swaps what it returns.
pub type ConfigSource = Arc<dyn Fn() -> Arc<Config> + Send + Sync>;

/// Renders the Prometheus text exposition for `/metrics` (the binary supplies it: metrics are
/// produced by crates this one does not depend on).
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

/// Called after a key is revoked, or its user disabled, enabled or deleted, through this admin
/// server: the binary clears the proxy's key cache with it, so that this instance applies the
/// change from the very next request (this crate never depends on the proxy).
pub type OnKeyRevoked = Arc<dyn Fn() + Send + Sync>;

/// Forgets an erased user's counters in the running gateway's counter store (in-process or
/// Redis), answering why not when it could not. The binary supplies it, as it does
/// [`OnKeyRevoked`].
pub type ForgetCounters = Arc<dyn Fn(String) -> ForgetFuture + Send + Sync>;

/// What [`ForgetCounters`] answers: done, or why not.
pub type ForgetFuture = Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>>;

/// A [`ForgetCounters`] running `forget` for each erased user.
pub fn forget_counters_with<F, Fut>(forget: F) -> ForgetCounters
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    Arc::new(move |user| -> ForgetFuture { Box::pin(forget(user)) })
}

#[derive(Clone)]
pub struct AdminState {
    pub(crate) ledger: Ledger,
    pub(crate) config: ConfigSource,
    pub(crate) tokens: Arc<AdminTokens>,
    pub(crate) metrics: Option<MetricsRenderer>,
    pub(crate) on_key_revoked: Option<OnKeyRevoked>,
    /// None: the counters are not this server's to reach (a tool; tests).
    pub(crate) forget_counters: Option<ForgetCounters>,
    /// The running gateway's configuration and its reload; none: a fixed configuration.
    pub(crate) control: Option<ConfigControlRef>,
    pub(crate) readiness: Option<Readiness>,
    /// The running gateway's log level; none: `/api/admin/log-level` answers 404.
    pub(crate) log: Option<LogControlRef>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("ledger", &self.ledger)
            .field("admin_tokens", &self.tokens.is_empty().then_some("none"))
            .finish_non_exhaustive()
    }
}

impl AdminState {
    pub fn new(ledger: Ledger, config: ConfigSource, tokens: AdminTokens) -> AdminState {
        AdminState {
            ledger,
            config,
            tokens: Arc::new(tokens),
            metrics: None,
            on_key_revoked: None,
            forget_counters: None,
            control: None,
            readiness: None,
            log: None,
        }
    }

    /// A fixed configuration (tests, tools).
    pub fn with_fixed_config(ledger: Ledger, config: Arc<Config>, tokens: AdminTokens) -> Self {
        AdminState::new(ledger, Arc::new(move || Arc::clone(&config)), tokens)
    }

    pub fn with_metrics(mut self, renderer: MetricsRenderer) -> AdminState {
        self.metrics = Some(renderer);
        self
    }

    pub fn on_key_revoked(mut self, hook: OnKeyRevoked) -> AdminState {
        self.on_key_revoked = Some(hook);
        self
    }

    /// Forget an erased user's counters through `forget`.
    pub fn on_user_erased(mut self, forget: ForgetCounters) -> AdminState {
        self.forget_counters = Some(forget);
        self
    }

    /// Serve `/api/admin/config` and `/api/admin/reload` through `control`.
    pub fn with_config_control(mut self, control: ConfigControlRef) -> AdminState {
        self.control = Some(control);
        self
    }

    /// Answer `/readyz` with what `readiness` reports beside the database.
    pub fn with_readiness(mut self, readiness: Readiness) -> AdminState {
        self.readiness = Some(readiness);
        self
    }

    /// Serve `/api/admin/log-level` through `log`.
    pub fn with_log_control(mut self, log: LogControlRef) -> AdminState {
        self.log = Some(log);
        self
    }

    pub fn config(&self) -> Arc<Config> {
        (self.config)()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The user a Tollgate key belongs to: a key in the ledger that is not revoked, or a
    /// static `[[keys]]` entry of the configuration.
    pub async fn user_of_key(&self, key: &str) -> Result<Option<String>> {
        let hash = sha256(key);
        if let Some(stored) = self.ledger.api_key_by_hash(&hex::encode(hash)).await?
            && stored.revoked_at.is_none()
        {
            return Ok(Some(stored.user_id));
        }
        Ok(self
            .config()
            .keys
            .iter()
            .find(|k| k.sha256 == hash)
            .map(|k| k.user.clone()))
    }
}
