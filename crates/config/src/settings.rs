//! The validated configuration: the immutable snapshot the gateway runs on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use tollgate_domain::{AnchorDay, ModelPrice, Plan, PriceBook, Provider, UnreachablePolicy};

/// A secret (a provider key) that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxySettings {
    pub listen: SocketAddr,
    /// Worker threads of the proxy service; 0: one per CPU the process may run on
    /// ([`ProxySettings::worker_threads`]).
    pub threads: usize,
    pub max_request_header_bytes: u64,
    pub max_request_body_bytes: u64,
    pub header_read_timeout_ms: u64,
    /// Total time a client has to send a request body, from when its headers have arrived.
    pub body_read_timeout_ms: u64,
    pub upstream_connect_timeout_ms: u64,
    pub upstream_read_timeout_ms: u64,
    pub inject_stream_usage: bool,
    pub graceful_shutdown_secs: u64,
    /// How long a key read from the ledger's key table is trusted before it is read again.
    pub key_cache_ttl_ms: u64,
    /// The Unix socket a new process (`tollgate run --upgrade`) receives the listening sockets
    /// on.
    pub upgrade_socket: PathBuf,
    /// Holds the running process's pid, locked for as long as it runs.
    pub pid_file: PathBuf,
}

impl ProxySettings {
    /// The proxy's worker threads: `threads`, or for 0 the CPUs this process may run on (its
    /// affinity mask and cgroup quota, as nginx's `worker_processes auto`), at least one.
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    pub listen: SocketAddr,
    /// Environment variable holding an admin bearer token.
    pub token_env: String,
    /// A file of admin tokens, one per line (blank lines and `#` comments ignored).
    pub token_file: Option<PathBuf>,
    pub cors_allowed_origins: Vec<String>,
    /// Whether `/metrics` answers without a token (for scrapers on a private network).
    pub metrics_public: bool,
    /// Whether requests, tokens and cost are also counted per plan (`tollgate_plan_*`): one
    /// series per plan and provider, so opt-in.
    pub metrics_per_plan: bool,
}

/// Where and how alerts are delivered once raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertDelivery {
    /// Every alert is POSTed to each of these; none means alerts are only stored.
    pub webhook_urls: Vec<String>,
    pub webhook_secret_env: String,
    /// The HMAC-SHA256 key for `X-Tollgate-Signature`, read from `webhook_secret_env`.
    pub webhook_secret: Option<Secret>,
    pub webhook_timeout_ms: u64,
    /// How often each instance looks for alerts to deliver.
    pub delivery_interval_ms: u64,
    /// How long a claimed alert stays with the instance that claimed it.
    pub delivery_lease_ms: u64,
    pub retry_backoff_initial_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// `[alerts.email]`; none means alerts are not mailed.
    pub email: Option<EmailSettings>,
}

/// How alerts are mailed: one message per alert, to the user's address (when they have one)
/// and to the operators'.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmailSettings {
    pub smtp_host: String,
    pub smtp_port: u16,
    pub tls: SmtpTls,
    /// Both or neither, read from the environment variables the file names.
    pub credentials: Option<SmtpCredentials>,
    /// The `From:` mailbox, `alerts@example.com` or `Tollgate <alerts@example.com>`.
    pub from: String,
    pub operator_addresses: Vec<String>,
    /// Whether the user whose limit it is gets the message (when the ledger has their address).
    pub send_to_users: bool,
    /// The dashboard the message links to.
    pub dashboard_url: String,
    /// One SMTP conversation at most (connect, greeting, TLS, login, send).
    pub timeout_ms: u64,
    /// An operator's own certificate authority, trusted beside the public roots.
    pub ca_file: Option<CaFile>,
}

/// A PEM file of CA certificates, as read when the configuration was loaded (a reload reads it
/// again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaFile {
    pub path: PathBuf,
    pub pem: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: Secret,
    pub password: Secret,
}

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No TLS: only for a relay on the same host or a closed network (port 25).
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CounterStore {
    /// In-process counters: one gateway instance.
    Memory,
    /// Shared through Redis: several instances enforce the same limits.
    Redis {
        url: String,
        timeout_ms: u64,
        /// Put before every key, so that several deployments can share one Redis.
        key_prefix: String,
        /// A single URL is a seed node of a Redis Cluster (several URLs always are).
        cluster: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageSettings {
    pub counters: CounterStore,
    pub on_counter_store_unreachable: UnreachablePolicy,
    pub database_url: String,
}

/// What the ledger does when its queue and spool are full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedgerFullPolicy {
    /// Wait for room (the request's logging phase waits; the response is already sent).
    Block,
    /// Write the event straight to the on-disk spool.
    Spool,
    /// Drop the event and count it (a metric that must stay 0).
    Drop,
}

/// When a call's usage event is made durable, relative to the end of its response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Events are written in batches after the response has gone; a SIGKILL loses what was
    /// not yet flushed (at most about `flush_interval_ms` of calls).
    #[default]
    Batched,
    /// A response's last bytes are released only once its event is committed (or synced to the
    /// spool), in group commits `group_commit_ms` wide: a SIGKILL loses no completed call.
    Sync,
}

/// How far a SQLite ledger syncs each commit (SQLite's `synchronous`, in WAL mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// Each commit is fsynced: it survives a power loss.
    #[default]
    Full,
    /// Commits are fsynced at checkpoints only: each survives a crash of the process (what
    /// `durability = "sync"` promises), the latest may not survive a power loss.
    Normal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSettings {
    pub batch_max_events: u64,
    pub flush_interval_ms: u64,
    pub queue_capacity: u64,
    pub spool_dir: PathBuf,
    pub spool_max_bytes: u64,
    pub on_full: LedgerFullPolicy,
    pub durability: Durability,
    /// In `sync`, how long a commit waits for more events after its first (0: it takes only
    /// those already waiting).
    pub group_commit_ms: u64,
    pub sqlite_synchronous: SqliteSynchronous,
    /// Usage log rows of billing periods more than this many months before the current month
    /// are deleted (summaries and bills stay); `None` keeps them all.
    pub retain_usage_logs_months: Option<NonZeroU32>,
    /// The key the SQLite ledger, the spool and PostgreSQL's personal columns are encrypted
    /// with, as 64 hex digits, read from `database_key_env` or `database_key_file`; `None`
    /// stores usage data unencrypted.
    pub database_key: Option<Secret>,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (`key=value` fields).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub format: LogFormat,
}

/// What happens to a call whose model has no price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnpricedPolicy {
    /// Refuse with 400 before anything is sent upstream.
    Reject,
    /// Forward, bill at this price, and count it in a warning metric.
    Allow(Box<ModelPrice>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PricingSettings {
    pub dir: PathBuf,
    pub unpriced: UnpricedPolicy,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSettings {
    /// Scheme, host and optional path prefix, without a trailing slash.
    pub base_url: String,
    pub key_env: String,
    /// Read from `key_env` when the configuration was loaded; `None` if unset.
    pub key: Option<Secret>,
}

/// A key listed in `gateway.toml` for small set-ups; larger ones keep keys in the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticKey {
    pub user: String,
    pub plan: String,
    pub sha256: [u8; 32],
    pub name: Option<String>,
    pub anchor_day: AnchorDay,
}

impl StaticKey {
    /// The key's id: `static_` and the first 12 hex digits of its SHA-256. Derived from the
    /// configuration alone, so it is the same on every instance and across restarts and reloads;
    /// the admin API lists the key under it and the key's usage rows carry it as `key_id`.
    pub fn id(&self) -> String {
        let digits: String = self.sha256[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("static_{digits}")
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub proxy: ProxySettings,
    pub admin: AdminSettings,
    pub storage: StorageSettings,
    pub ledger: LedgerSettings,
    pub pricing: PricingSettings,
    /// Percentages of a limit at which alerts are raised, ascending.
    pub alert_thresholds: Vec<u8>,
    pub alert_delivery: AlertDelivery,
    pub log: LogSettings,
    /// Enabled providers only.
    pub providers: BTreeMap<Provider, ProviderSettings>,
    pub default_plan: Option<String>,
    pub plans: BTreeMap<String, Plan>,
    pub keys: Vec<StaticKey>,
    pub prices: PriceBook,
}

/// The provider's real upstream and the environment variable its SDKs read the key from.
pub fn provider_defaults(provider: Provider) -> (&'static str, &'static str) {
    match provider {
        Provider::OpenAi => ("https://api.openai.com", "OPENAI_API_KEY"),
        Provider::Anthropic => ("https://api.anthropic.com", "ANTHROPIC_API_KEY"),
        Provider::Gemini => (
            "https://generativelanguage.googleapis.com",
            "GEMINI_API_KEY",
        ),
        Provider::Mistral => ("https://api.mistral.ai", "MISTRAL_API_KEY"),
        Provider::Tavily => ("https://api.tavily.com", "TAVILY_API_KEY"),
        Provider::Serper => ("https://google.serper.dev", "SERPER_API_KEY"),
        Provider::Exa => ("https://api.exa.ai", "EXA_API_KEY"),
        Provider::Firecrawl => ("https://api.firecrawl.dev", "FIRECRAWL_API_KEY"),
        Provider::Stability => ("https://api.stability.ai", "STABILITY_API_KEY"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("sk-live-123".into());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "sk-live-123");
    }
}
