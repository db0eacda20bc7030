//! The files as written: serde structs that mirror `gateway.toml` and `pricing/*.toml` key for
//! key. Enumerations and names stay strings here so that one misspelling does not hide every
//! other problem; `validate` and `pricing` turn these into domain types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A number an operator may write as a string (`"2.50"`, exact) or as a TOML number. A float is
/// read back through its shortest round-trip text, which is what the operator typed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DecimalText {
    Text(String),
    Int(i64),
    Float(f64),
}

impl DecimalText {
    pub fn text(&self) -> String {
        match self {
            DecimalText::Text(t) => t.clone(),
            DecimalText::Int(i) => i.to_string(),
            DecimalText::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct Gateway {
    #[serde(default)]
    pub proxy: Proxy,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub ledger: Ledger,
    #[serde(default)]
    pub pricing: Pricing,
    #[serde(default)]
    pub alerts: Alerts,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderEntry>,
    pub default_plan: Option<String>,
    #[serde(default)]
    pub plans: BTreeMap<String, PlanEntry>,
    #[serde(default)]
    pub keys: Vec<KeyEntry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Proxy {
    pub listen: Option<String>,
    pub threads: Option<i64>,
    pub max_request_header_bytes: Option<i64>,
    pub max_request_body_bytes: Option<i64>,
    pub header_read_timeout_ms: Option<i64>,
    pub body_read_timeout_ms: Option<i64>,
    pub upstream_connect_timeout_ms: Option<i64>,
    pub upstream_read_timeout_ms: Option<i64>,
    pub inject_stream_usage: Option<bool>,
    pub graceful_shutdown_secs: Option<i64>,
    pub key_cache_ttl_ms: Option<i64>,
    pub upgrade_socket: Option<String>,
    pub pid_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Admin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
    pub token_file: Option<String>,
    pub cors_allowed_origins: Option<Vec<String>>,
    pub metrics_public: Option<bool>,
    pub metrics_per_plan: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Storage {
    pub counters: Option<String>,
    pub redis_url: Option<String>,
    pub redis_timeout_ms: Option<i64>,
    pub redis_key_prefix: Option<String>,
    pub redis_cluster: Option<bool>,
    pub on_counter_store_unreachable: Option<String>,
    pub database_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Ledger {
    pub batch_max_events: Option<i64>,
    pub flush_interval_ms: Option<i64>,
    pub queue_capacity: Option<i64>,
    pub spool_dir: Option<String>,
    pub spool_max_bytes: Option<i64>,
    pub on_full: Option<String>,
    pub durability: Option<String>,
    pub group_commit_ms: Option<i64>,
    pub sqlite_synchronous: Option<String>,
    pub retain_usage_logs_months: Option<i64>,
    pub database_key_env: Option<String>,
    pub database_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Log {
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Pricing {
    pub dir: Option<String>,
    pub unpriced_model: Option<String>,
    pub unpriced_input: Option<DecimalText>,
    pub unpriced_output: Option<DecimalText>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Alerts {
    pub thresholds: Option<Vec<i64>>,
    pub webhook_urls: Option<Vec<String>>,
    pub webhook_secret_env: Option<String>,
    pub webhook_timeout_ms: Option<i64>,
    pub delivery_interval_ms: Option<i64>,
    pub delivery_lease_ms: Option<i64>,
    pub retry_backoff_initial_ms: Option<i64>,
    pub retry_backoff_max_ms: Option<i64>,
    pub email: Option<Email>,
}

/// `[alerts.email]`: SMTP delivery of alerts.
#[derive(Debug, Default, Deserialize)]
pub struct Email {
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i64>,
    pub tls: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub from: Option<String>,
    pub operator_addresses: Option<Vec<String>>,
    pub send_to_users: Option<bool>,
    pub dashboard_url: Option<String>,
    pub timeout_ms: Option<i64>,
    pub ca_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProviderEntry {
    pub base_url: Option<String>,
    pub key_env: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PlanEntry {
    pub name: Option<String>,
    pub tier: Option<String>,
    pub price_monthly: Option<DecimalText>,
    pub price_yearly: Option<DecimalText>,
    pub description: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
    pub cost_cap: Option<DecimalText>,
    pub total_calls: Option<i64>,
    pub total_tokens: Option<i64>,
    pub calls_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
    pub on_counter_store_unreachable: Option<String>,
    pub on_short_budget: Option<String>,
    pub min_output_tokens: Option<i64>,
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderLimitsEntry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProviderLimitsEntry {
    pub calls: Option<i64>,
    pub tokens: Option<i64>,
    pub calls_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct KeyEntry {
    pub user: Option<String>,
    pub plan: Option<String>,
    pub sha256: Option<String>,
    pub name: Option<String>,
    pub anchor_day: Option<i64>,
}

/// One `pricing/<provider>.toml`.
#[derive(Debug, Default, Deserialize)]
pub struct PriceFile {
    pub provider: Option<String>,
    #[serde(default)]
    pub defaults: PriceDefaults,
    #[serde(default)]
    pub models: BTreeMap<String, ModelEntry>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PriceDefaults {
    pub source: Option<String>,
    pub effective: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ModelEntry {
    pub input: Option<DecimalText>,
    pub cached_input: Option<DecimalText>,
    pub cache_write: Option<DecimalText>,
    pub cache_write_1h: Option<DecimalText>,
    pub output: Option<DecimalText>,
    pub reasoning: Option<DecimalText>,
    #[serde(default)]
    pub tiers: Vec<TierEntry>,
    pub unit: Option<String>,
    pub per_unit: Option<DecimalText>,
    pub per_request: Option<DecimalText>,
    pub reported_cost: Option<bool>,
    pub max_output_tokens: Option<i64>,
    pub context_window: Option<i64>,
    pub bound: Option<BoundEntry>,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub source: Option<String>,
    pub effective: Option<String>,
}

/// `[models."x".bound]`: the most one call can cost, by the provider's rule.
#[derive(Debug, Default, Deserialize)]
pub struct BoundEntry {
    /// What the amounts count: `usd`, `units` or `output_tokens`.
    #[serde(rename = "in")]
    pub unit: Option<String>,
    pub base: Option<DecimalText>,
    #[serde(default)]
    pub terms: Vec<TermEntry>,
    pub max_per_call: Option<DecimalText>,
    pub why: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TermEntry {
    pub add: Option<DecimalText>,
    pub per: Option<String>,
    pub times: Option<String>,
    pub default: Option<i64>,
    pub above: Option<i64>,
    pub every: Option<i64>,
    #[serde(default)]
    pub when: BTreeMap<String, ExpectEntry>,
    #[serde(default)]
    pub unless: BTreeMap<String, ExpectEntry>,
}

/// A condition's value: a text, `true`/`false` (set or not), or a list of texts (any of).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ExpectEntry {
    Flag(bool),
    Text(String),
    AnyOf(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct TierEntry {
    pub above_input_tokens: Option<i64>,
    pub input: Option<DecimalText>,
    pub cached_input: Option<DecimalText>,
    pub cache_write: Option<DecimalText>,
    pub cache_write_1h: Option<DecimalText>,
    pub output: Option<DecimalText>,
    pub reasoning: Option<DecimalText>,
}

/// The six token rates, which a model entry and each of its tiers both carry.
pub struct TokenRatesEntry<'a> {
    pub input: Option<&'a DecimalText>,
    pub cached_input: Option<&'a DecimalText>,
    pub cache_write: Option<&'a DecimalText>,
    pub cache_write_1h: Option<&'a DecimalText>,
    pub output: Option<&'a DecimalText>,
    pub reasoning: Option<&'a DecimalText>,
}

macro_rules! token_rates_of {
    ($t:ty) => {
        impl $t {
            pub fn rates(&self) -> TokenRatesEntry<'_> {
                TokenRatesEntry {
                    input: self.input.as_ref(),
                    cached_input: self.cached_input.as_ref(),
                    cache_write: self.cache_write.as_ref(),
                    cache_write_1h: self.cache_write_1h.as_ref(),
                    output: self.output.as_ref(),
                    reasoning: self.reasoning.as_ref(),
                }
            }
        }
    };
}
token_rates_of!(ModelEntry);
token_rates_of!(TierEntry);
