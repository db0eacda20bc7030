//! Loads what operators edit — `gateway.toml` and `pricing/*.toml` — into the domain types the
//! gateway runs on, and reports every problem in them with file, line and what to do.
//!
//! Loading is two-staged: serde structs mirror the files (`raw`), then validation turns them
//! into an immutable [`Config`] snapshot. Unknown keys are collected as problems rather than
//! aborting the parse at the first one, so `tollgate check` names every mistake at once.

mod bound;
pub mod fuzzing;
pub mod litellm;
mod pricing;
mod problem;
mod raw;
mod restart;
mod settings;
mod validate;

use std::path::Path;

pub use pricing::load_dir as load_pricing_dir;
pub use problem::{Problem, Report, Severity};
pub use restart::pending_restart;
pub use settings::{
    AdminSettings, AlertDelivery, CaFile, Config, CounterStore, Durability, EmailSettings,
    LedgerFullPolicy, LedgerSettings, LogFormat, LogSettings, PricingSettings, ProviderSettings,
    ProxySettings, Secret, SmtpCredentials, SmtpTls, SqliteSynchronous, StaticKey, StorageSettings,
    UnpricedPolicy, provider_defaults,
};
pub use validate::Env;

use problem::FileProblems;
use tollgate_domain::PriceBook;

/// A configuration that loaded, with the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Report,
}

/// Loads `gateway.toml` at `path` and the pricing directory it names, reading provider keys from
/// the process environment.
pub fn load(path: &Path) -> Result<Loaded, Report> {
    load_with_env(path, &|name| std::env::var(name).ok())
}

/// [`load`] with an explicit environment.
pub fn load_with_env(path: &Path, env: Env<'_>) -> Result<Loaded, Report> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            let mut p = FileProblems::new(path, String::new());
            p.error(&[], format!("cannot read the configuration: {e}"));
            return Err(p.report);
        }
    };
    load_text(path, text, &pricing::load_dir, env)
}

/// Loads `gateway.toml`'s `text` (read from `path`); `prices` loads the pricing directory the
/// text names. The file system is reached only through `prices`, so the fuzz check can load
/// text alone.
fn load_text(
    path: &Path,
    text: String,
    prices: &dyn Fn(&Path) -> (PriceBook, Report),
    env: Env<'_>,
) -> Result<Loaded, Report> {
    let mut p = FileProblems::new(path, text);
    let Some(raw) = p.parse::<raw::Gateway>() else {
        return Err(p.report);
    };
    let (prices, pricing_report) = prices(&validate::pricing_dir(&raw, path));
    let config = validate::gateway(&mut p, raw, path, prices, env);
    check_every_provider_priced(&mut p, &config);
    let mut report = p.report;
    report.extend(pricing_report);
    report
        .problems
        .sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    if report.has_errors() {
        Err(report)
    } else {
        Ok(Loaded {
            config,
            warnings: report,
        })
    }
}

/// With `unpriced_model = "reject"`, a provider without a pricing file would refuse every call.
fn check_every_provider_priced(p: &mut FileProblems, config: &Config) {
    if config.pricing.unpriced != UnpricedPolicy::Reject {
        return;
    }
    for provider in config.providers.keys() {
        if !config.prices.providers.contains_key(provider) {
            p.error(
                &["providers", provider.as_str()],
                format!(
                    "no pricing/{provider}.toml: with unpriced_model = \"reject\" every call to \
                     {provider} would be refused; add the file or disable the provider"
                ),
            );
        }
    }
}
