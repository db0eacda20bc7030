//! The running gateway as operators and orchestrators see it: which configuration is in force
//! and a reload of it (`/api/admin/config`, `/api/admin/reload`), and whether the instance is
//! ready for traffic (`/readyz`), and the log's level (`/api/admin/log-level`). The binary does the reloading and knows the counter store and
//! the shutdown; this crate, which never depends on the proxy, is handed them as a trait object
//! and a closure.

use std::sync::Arc;

use serde::Serialize;
use utoipa::ToSchema;

/// The configuration in force.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConfigStatus {
    /// A digest of `gateway.toml` and the pricing files as they were read (the same files give
    /// the same version on every instance).
    pub version: String,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// What loaded it: `start`, `admin`, `sighup` or `watch`.
    pub trigger: String,
    /// `gateway.toml`'s path.
    pub path: String,
    /// Settings changed in the files that take effect only after a restart (listen addresses,
    /// threads, counter store, ledger); until then the process keeps the ones it started with.
    pub pending_restart: Vec<String>,
    /// Warnings of the load (`file:line: warning: …`), and what a reload changed that affects
    /// users (a plan removed while users may be on it).
    pub warnings: Vec<String>,
    /// The latest reload that was refused after this configuration was loaded, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refused: Option<RefusedReload>,
}

/// A reload that was refused: the previous configuration kept serving.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RefusedReload {
    /// When (RFC 3339).
    pub at: String,
    pub trigger: String,
    /// Every problem, as `tollgate check` prints it: `file:line: error: key: what to do`.
    pub problems: Vec<String>,
}

/// How the binary reloads its configuration.
pub trait ConfigControl: Send + Sync {
    /// The configuration in force.
    fn status(&self) -> ConfigStatus;

    /// Reads and checks the files again, exactly as `tollgate check` does, and swaps the new
    /// configuration in; when they do not pass, every problem, and the old one stays. Blocking
    /// (file reads): call it off the async threads.
    fn reload(&self, trigger: &str) -> Result<ConfigStatus, Vec<String>>;
}

pub type ConfigControlRef = Arc<dyn ConfigControl>;

/// Why the instance should not get new traffic now, besides its database (which the admin API
/// probes itself): shutting down, the counter store away with calls refused. Empty: ready.
pub type Readiness = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// The log level the gateway writes at, and a change of it while the gateway runs.
pub trait LogControl: Send + Sync {
    /// The filter in force, as an `EnvFilter` directive (`info`, `warn,tollgate=debug`).
    fn level(&self) -> String;

    /// Writes at `directive` from now on: a level (`debug`) or `EnvFilter` directives
    /// (`warn,tollgate::access=info`). The old one stays when it does not parse.
    fn set_level(&self, directive: &str) -> Result<String, InvalidLogLevel>;
}

pub type LogControlRef = Arc<dyn LogControl>;

/// A log level that is not a level or a filter directive; says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidLogLevel(pub String);
