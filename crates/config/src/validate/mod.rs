//! `gateway.toml` as written → the validated [`Config`], reporting every problem on the way.
//!
//! Each check names the key path and says what to do. Defaults live here, next to the check of
//! the value they stand in for, and are documented with the same numbers in `docs/config.md`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use tollgate_domain::{Decimal, ModelPrice, PriceBook, Rate, TokenRates};

mod access;
mod email;
mod ledger_key;
mod upgrade;

use crate::problem::FileProblems;
use crate::raw::{self, DecimalText};
use crate::settings::{
    AdminSettings, AlertDelivery, Config, CounterStore, Durability, LedgerFullPolicy,
    LedgerSettings, LogFormat, LogSettings, PricingSettings, ProxySettings, Secret,
    SqliteSynchronous, StorageSettings, UnpricedPolicy,
};
use access::{keys, plans, providers, unreachable_policy};

/// Looks an environment variable up; injected so tests need not touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(crate) fn gateway(
    p: &mut FileProblems,
    raw: raw::Gateway,
    config_path: &Path,
    prices: PriceBook,
    env: Env<'_>,
) -> Config {
    let base_dir = config_path.parent().unwrap_or(Path::new("."));
    let providers = providers(p, &raw.providers, env);
    let plans = plans(p, &raw.plans, &providers);
    if let Some(default) = &raw.default_plan
        && !plans.contains_key(default)
    {
        p.error(
            &["default_plan"],
            format!(
                "plan {default:?} is not defined (defined: {})",
                names(plans.keys())
            ),
        );
    }
    let keys = keys(p, &raw.keys, &plans);
    Config {
        path: config_path.to_path_buf(),
        proxy: proxy(p, &raw.proxy, base_dir),
        admin: admin(p, &raw.admin, base_dir),
        storage: storage(p, &raw.storage, base_dir),
        ledger: ledger(p, &raw.ledger, base_dir, env),
        pricing: pricing(p, &raw.pricing, base_dir),
        alert_thresholds: thresholds(p, raw.alerts.thresholds.as_deref()),
        alert_delivery: alert_delivery(p, &raw.alerts, base_dir, env),
        log: log(p, &raw.log),
        providers,
        default_plan: raw.default_plan,
        plans,
        keys,
        prices,
    }
}

/// The pricing directory named by the file, before the rest is validated (prices load first).
pub(crate) fn pricing_dir(raw: &raw::Gateway, config_path: &Path) -> PathBuf {
    let base_dir = config_path.parent().unwrap_or(Path::new("."));
    base_dir.join(raw.pricing.dir.as_deref().unwrap_or("pricing"))
}

fn proxy(p: &mut FileProblems, raw: &raw::Proxy, base_dir: &Path) -> ProxySettings {
    let at = |key| ["proxy", key];
    let listen = listen(p, &at("listen"), raw.listen.as_deref(), "0.0.0.0:8080");
    let (upgrade_socket, pid_file) = upgrade::paths(p, raw, base_dir, listen.port());
    ProxySettings {
        listen,
        threads: count(p, &at("threads"), raw.threads, 0, 0) as usize,
        max_request_header_bytes: count(
            p,
            &at("max_request_header_bytes"),
            raw.max_request_header_bytes,
            32 * 1024,
            1024,
        ),
        max_request_body_bytes: count(
            p,
            &at("max_request_body_bytes"),
            raw.max_request_body_bytes,
            32 * 1024 * 1024,
            1,
        ),
        header_read_timeout_ms: count(
            p,
            &at("header_read_timeout_ms"),
            raw.header_read_timeout_ms,
            10_000,
            1,
        ),
        body_read_timeout_ms: count(
            p,
            &at("body_read_timeout_ms"),
            raw.body_read_timeout_ms,
            60_000,
            1,
        ),
        upstream_connect_timeout_ms: count(
            p,
            &at("upstream_connect_timeout_ms"),
            raw.upstream_connect_timeout_ms,
            5_000,
            1,
        ),
        upstream_read_timeout_ms: count(
            p,
            &at("upstream_read_timeout_ms"),
            raw.upstream_read_timeout_ms,
            600_000,
            1,
        ),
        inject_stream_usage: raw.inject_stream_usage.unwrap_or(true),
        graceful_shutdown_secs: count(
            p,
            &at("graceful_shutdown_secs"),
            raw.graceful_shutdown_secs,
            // Long enough for the LLM streams of most applications; an idle gateway exits at
            // once whatever it is.
            120,
            0,
        ),
        key_cache_ttl_ms: count(p, &at("key_cache_ttl_ms"), raw.key_cache_ttl_ms, 1_000, 0),
        upgrade_socket,
        pid_file,
    }
}

fn admin(p: &mut FileProblems, raw: &raw::Admin, base_dir: &Path) -> AdminSettings {
    for (i, origin) in raw.cors_allowed_origins.iter().flatten().enumerate() {
        let ok = origin == "*"
            || ((origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.ends_with('/'));
        if !ok {
            p.error(
                &["admin", "cors_allowed_origins", &i.to_string()],
                format!(
                    "{origin:?} is not an origin (expected scheme://host[:port] without a \
                     trailing slash, e.g. \"https://app.example.com\", or \"*\")"
                ),
            );
        }
    }
    AdminSettings {
        listen: listen(
            p,
            &["admin", "listen"],
            raw.listen.as_deref(),
            "127.0.0.1:9090",
        ),
        token_env: raw
            .token_env
            .clone()
            .unwrap_or_else(|| "TOLLGATE_ADMIN_TOKEN".to_owned()),
        token_file: raw.token_file.as_deref().map(|f| base_dir.join(f)),
        cors_allowed_origins: raw.cors_allowed_origins.clone().unwrap_or_default(),
        metrics_public: raw.metrics_public.unwrap_or(false),
        metrics_per_plan: raw.metrics_per_plan.unwrap_or(false),
    }
}

fn alert_delivery(
    p: &mut FileProblems,
    raw: &raw::Alerts,
    base_dir: &Path,
    env: Env<'_>,
) -> AlertDelivery {
    let at = |key| ["alerts", key];
    let webhook_urls = raw.webhook_urls.clone().unwrap_or_default();
    for (i, url) in webhook_urls.iter().enumerate() {
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
            p.error(
                &["alerts", "webhook_urls", &i.to_string()],
                format!("{url:?} is not an http:// or https:// URL with a host"),
            );
        }
    }
    let webhook_secret_env = raw
        .webhook_secret_env
        .clone()
        .unwrap_or_else(|| "TOLLGATE_WEBHOOK_SECRET".to_owned());
    let webhook_secret = env(&webhook_secret_env)
        .filter(|s| !s.is_empty())
        .map(Secret::new);
    if !webhook_urls.is_empty() && webhook_secret.is_none() {
        p.warning(
            &at("webhook_secret_env"),
            format!(
                "environment variable {webhook_secret_env} is not set: webhook deliveries \
                 will carry no X-Tollgate-Signature, so receivers cannot verify them"
            ),
        );
    }
    let retry_backoff_initial_ms = count(
        p,
        &at("retry_backoff_initial_ms"),
        raw.retry_backoff_initial_ms,
        1_000,
        1,
    );
    let retry_backoff_max_ms = count(
        p,
        &at("retry_backoff_max_ms"),
        raw.retry_backoff_max_ms,
        600_000,
        1,
    );
    if retry_backoff_max_ms < retry_backoff_initial_ms {
        p.error(
            &at("retry_backoff_max_ms"),
            format!(
                "{retry_backoff_max_ms} is below retry_backoff_initial_ms \
                 ({retry_backoff_initial_ms}); raise it"
            ),
        );
    }
    let webhook_timeout_ms = count(
        p,
        &at("webhook_timeout_ms"),
        raw.webhook_timeout_ms,
        5_000,
        1,
    );
    let delivery_lease_ms = count(
        p,
        &at("delivery_lease_ms"),
        raw.delivery_lease_ms,
        60_000,
        1,
    );
    // A lease shorter than one attempt to every URL would let a second instance claim an
    // alert that is still being delivered, and deliver it twice.
    let one_attempt_ms = webhook_timeout_ms.saturating_mul(webhook_urls.len().max(1) as u64);
    if delivery_lease_ms <= one_attempt_ms {
        p.error(
            &at("delivery_lease_ms"),
            format!(
                "{delivery_lease_ms} ms is not longer than one delivery attempt \
                 (webhook_timeout_ms × webhook URLs = {one_attempt_ms} ms); raise it"
            ),
        );
    }
    let email = raw
        .email
        .as_ref()
        .map(|raw| email::email(p, raw, base_dir, env));
    if let Some(email) = &email
        && delivery_lease_ms <= email.timeout_ms
    {
        p.error(
            &at("delivery_lease_ms"),
            format!(
                "{delivery_lease_ms} ms is not longer than one e-mail attempt \
                 ([alerts.email] timeout_ms = {} ms); raise it",
                email.timeout_ms
            ),
        );
    }
    AlertDelivery {
        webhook_urls,
        webhook_secret_env,
        webhook_secret,
        webhook_timeout_ms,
        delivery_interval_ms: count(
            p,
            &at("delivery_interval_ms"),
            raw.delivery_interval_ms,
            1_000,
            1,
        ),
        delivery_lease_ms,
        retry_backoff_initial_ms,
        retry_backoff_max_ms,
        email,
    }
}

fn storage(p: &mut FileProblems, raw: &raw::Storage, base_dir: &Path) -> StorageSettings {
    let timeout_ms = count(
        p,
        &["storage", "redis_timeout_ms"],
        raw.redis_timeout_ms,
        50,
        1,
    );
    let redis_url = raw
        .redis_url
        .clone()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned());
    let counters = match raw.counters.as_deref().unwrap_or("memory") {
        "memory" => CounterStore::Memory,
        "redis" => {
            if !(redis_url.starts_with("redis://") || redis_url.starts_with("rediss://")) {
                p.error(
                    &["storage", "redis_url"],
                    format!("{redis_url:?} is not a Redis URL (expected redis://host:port)"),
                );
            }
            let key_prefix = raw
                .redis_key_prefix
                .clone()
                .unwrap_or_else(|| "tollgate:".to_owned());
            // Keys are hash-tagged by user (`{user}`) so that a user's keys share a Cluster
            // slot; a brace in the prefix would become the tag instead.
            if key_prefix.contains(['{', '}']) {
                p.error(
                    &["storage", "redis_key_prefix"],
                    format!("{key_prefix:?} contains a brace; keys are hash-tagged by user"),
                );
            }
            CounterStore::Redis {
                url: redis_url,
                timeout_ms,
                key_prefix,
                cluster: raw.redis_cluster.unwrap_or(false),
            }
        }
        other => {
            p.error(
                &["storage", "counters"],
                format!("unknown counter store {other:?} (expected \"memory\" or \"redis\")"),
            );
            CounterStore::Memory
        }
    };
    let on_counter_store_unreachable = unreachable_policy(
        p,
        &["storage", "on_counter_store_unreachable"],
        raw.on_counter_store_unreachable.as_deref(),
    )
    .unwrap_or_default();
    let database_url = match raw.database_url.as_deref() {
        None => format!("sqlite://{}", base_dir.join("tollgate.db").display()),
        Some(url) if url.starts_with("sqlite:") => {
            // A relative SQLite path is relative to the config file, like every other path.
            match url.strip_prefix("sqlite://") {
                Some(path) if !path.starts_with('/') && !path.starts_with(":memory:") => {
                    format!("sqlite://{}", base_dir.join(path).display())
                }
                _ => url.to_owned(),
            }
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            url.to_owned()
        }
        Some(url) => {
            p.error(
                &["storage", "database_url"],
                format!(
                    "{url:?} is neither a SQLite nor a PostgreSQL URL \
                     (expected sqlite://file.db or postgres://user@host/db)"
                ),
            );
            url.to_owned()
        }
    };
    StorageSettings {
        counters,
        on_counter_store_unreachable,
        database_url,
    }
}

fn ledger(
    p: &mut FileProblems,
    raw: &raw::Ledger,
    base_dir: &Path,
    env: Env<'_>,
) -> LedgerSettings {
    let at = |key| ["ledger", key];
    let on_full = match raw.on_full.as_deref().unwrap_or("spool") {
        "block" => LedgerFullPolicy::Block,
        "spool" => LedgerFullPolicy::Spool,
        "drop" => LedgerFullPolicy::Drop,
        other => {
            p.error(
                &at("on_full"),
                format!("unknown policy {other:?} (expected \"block\", \"spool\" or \"drop\")"),
            );
            LedgerFullPolicy::Spool
        }
    };
    let durability = match raw.durability.as_deref().unwrap_or("batched") {
        "batched" => Durability::Batched,
        "sync" => Durability::Sync,
        other => {
            p.error(
                &at("durability"),
                format!("unknown durability {other:?} (expected \"batched\" or \"sync\")"),
            );
            Durability::Batched
        }
    };
    let sqlite_synchronous = match raw.sqlite_synchronous.as_deref().unwrap_or("full") {
        "full" => SqliteSynchronous::Full,
        "normal" => SqliteSynchronous::Normal,
        other => {
            p.error(
                &at("sqlite_synchronous"),
                format!("unknown setting {other:?} (expected \"full\" or \"normal\")"),
            );
            SqliteSynchronous::Full
        }
    };
    LedgerSettings {
        batch_max_events: count(p, &at("batch_max_events"), raw.batch_max_events, 500, 1),
        flush_interval_ms: count(p, &at("flush_interval_ms"), raw.flush_interval_ms, 200, 1),
        queue_capacity: count(p, &at("queue_capacity"), raw.queue_capacity, 100_000, 1),
        spool_dir: base_dir.join(raw.spool_dir.as_deref().unwrap_or("var/spool")),
        spool_max_bytes: count(
            p,
            &at("spool_max_bytes"),
            raw.spool_max_bytes,
            1024 * 1024 * 1024,
            1024,
        ),
        on_full,
        durability,
        group_commit_ms: count(p, &at("group_commit_ms"), raw.group_commit_ms, 1, 0),
        sqlite_synchronous,
        retain_usage_logs_months: retain_months(
            p,
            &at("retain_usage_logs_months"),
            raw.retain_usage_logs_months,
        ),
        database_key: ledger_key::database_key(p, raw, base_dir, env),
    }
}

/// The longest retention accepted, in months (a century).
const MAX_RETAIN_MONTHS: u32 = 1_200;

/// A retention in whole months: absent keeps everything; otherwise 1 to [`MAX_RETAIN_MONTHS`].
fn retain_months(p: &mut FileProblems, path: &[&str], raw: Option<i64>) -> Option<NonZeroU32> {
    let v = raw?;
    match u32::try_from(v).ok().and_then(NonZeroU32::new) {
        Some(months) if months.get() <= MAX_RETAIN_MONTHS => Some(months),
        _ => {
            p.error(
                path,
                format!(
                    "{v} is out of range (expected 1 to {MAX_RETAIN_MONTHS} months; omit it to \
                     keep every usage log row)"
                ),
            );
            None
        }
    }
}

fn log(p: &mut FileProblems, raw: &raw::Log) -> LogSettings {
    let format = match raw.format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            p.error(
                &["log", "format"],
                format!("unknown log format {other:?} (expected \"text\" or \"json\")"),
            );
            LogFormat::Text
        }
    };
    LogSettings { format }
}

fn pricing(p: &mut FileProblems, raw: &raw::Pricing, base_dir: &Path) -> PricingSettings {
    let dir = base_dir.join(raw.dir.as_deref().unwrap_or("pricing"));
    let per_m = |p: &mut FileProblems, key: &str, value: Option<&DecimalText>, default: &str| {
        let text = value.map_or_else(|| default.to_owned(), DecimalText::text);
        Rate::per_million_from_decimal(&text).unwrap_or_else(|e| {
            p.error(&["pricing", key], e.to_string());
            Rate::ZERO
        })
    };
    let input = per_m(p, "unpriced_input", raw.unpriced_input.as_ref(), "10.00");
    let output = per_m(p, "unpriced_output", raw.unpriced_output.as_ref(), "30.00");
    let unpriced = match raw.unpriced_model.as_deref().unwrap_or("reject") {
        "reject" => UnpricedPolicy::Reject,
        "allow" => UnpricedPolicy::Allow(Box::new(ModelPrice {
            tokens: Some(TokenRates {
                input,
                output,
                ..TokenRates::default()
            }),
            tiers: vec![],
            per_request: None,
            per_unit: None,
            reported_cost: false,
            max_output_tokens: None,
            context_window: None,
            bound: None,
            max_per_call: None,
            source: "gateway.toml [pricing] unpriced_input/unpriced_output".to_owned(),
            effective: chrono::NaiveDate::default(),
        })),
        other => {
            p.error(
                &["pricing", "unpriced_model"],
                format!("unknown policy {other:?} (expected \"reject\" or \"allow\")"),
            );
            UnpricedPolicy::Reject
        }
    };
    PricingSettings { dir, unpriced }
}

fn thresholds(p: &mut FileProblems, raw: Option<&[i64]>) -> Vec<u8> {
    let Some(raw) = raw else {
        return vec![80, 90, 100];
    };
    let mut out: Vec<u8> = Vec::new();
    for (i, t) in raw.iter().enumerate() {
        let index = i.to_string();
        match u8::try_from(*t) {
            Ok(t) if (1..=100).contains(&t) && out.last().is_none_or(|last| *last < t) => {
                out.push(t)
            }
            _ => p.error(
                &["alerts", "thresholds", &index],
                format!("{t} is not a percentage above the previous one (expected ascending values from 1 to 100)"),
            ),
        }
    }
    out
}

pub(super) fn listen(
    p: &mut FileProblems,
    path: &[&str],
    raw: Option<&str>,
    default: &str,
) -> SocketAddr {
    let text = raw.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        p.error(
            path,
            format!("{text:?} is not an address to listen on (expected IP:port, e.g. {default})"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// A non-negative count with a default and a minimum.
fn count(p: &mut FileProblems, path: &[&str], raw: Option<i64>, default: u64, min: u64) -> u64 {
    match raw {
        None => default,
        Some(v) => match u64::try_from(v) {
            Ok(v) if v >= min => v,
            _ => {
                p.error(
                    path,
                    format!("{v} is out of range (expected at least {min})"),
                );
                default
            }
        },
    }
}

/// A limit: absent is unlimited; negative is an error.
pub(super) fn limit(p: &mut FileProblems, path: &[&str], raw: Option<i64>) -> Option<u64> {
    let v = raw?;
    match u64::try_from(v) {
        Ok(v) => Some(v),
        Err(_) => {
            p.error(
                path,
                format!("{v} is negative: a limit is a count (omit it for no limit)"),
            );
            None
        }
    }
}

/// An amount in USD as written (`"2.00"`), to nano-USD.
pub(super) fn usd(p: &mut FileProblems, path: &[&str], raw: Option<&DecimalText>) -> Option<u64> {
    let text = raw?.text();
    let parsed = Decimal::parse(&text).and_then(|d| d.to_scaled_exact(9));
    match parsed {
        Ok(v) => Some(v),
        Err(e) => {
            p.error(path, format!("{e} (expected US dollars, e.g. \"2.00\")"));
            None
        }
    }
}

pub(super) fn names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let list: Vec<&str> = names.map(String::as_str).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// A per-minute limit: a count of at least 1 (a window that admits nothing is a mistake; a
/// provider is left out of a plan with `calls = 0`).
pub(super) fn per_minute(p: &mut FileProblems, path: &[&str], raw: Option<i64>) -> Option<u64> {
    match limit(p, path, raw)? {
        0 => {
            p.error(
                path,
                "a per-minute limit of 0 refuses every call: omit it for no limit (to leave a \
                 provider out of the plan, set its calls = 0)",
            );
            None
        }
        v => Some(v),
    }
}
