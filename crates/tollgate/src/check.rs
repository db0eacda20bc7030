//! `tollgate check`, `describe` and `migrate`: the configuration without serving it.

use std::path::Path;
use std::process::ExitCode;

use tollgate_config::{Config, CounterStore, Loaded};
use tollgate_domain::{LimitKey, Provider, format_usd};

/// Loads and validates; prints every problem; fails on any error (or warning, when denied).
pub fn run(config: &Path, deny_warnings: bool) -> anyhow::Result<ExitCode> {
    match tollgate_config::load(config) {
        Ok(Loaded { config, warnings }) => {
            eprint!("{warnings}");
            // Not a warning of the configuration itself, which `run` and every reload would
            // repeat: a fact about the deployment that `check` is where operators look.
            let unencrypted = crate::encryption::unencrypted_warning(&config);
            if let Some(warning) = &unencrypted {
                eprintln!("{warning}");
            }
            let warning_count = warnings.problems.len() + usize::from(unencrypted.is_some());
            println!(
                "{}: ok — {} providers, {} plans, {} priced models{}",
                config.path.display(),
                config.providers.len(),
                config.plans.len(),
                priced_models(&config),
                match warning_count {
                    0 => String::new(),
                    n => format!(", {n} warning(s)"),
                }
            );
            if deny_warnings && warning_count > 0 {
                Ok(ExitCode::FAILURE)
            } else {
                Ok(ExitCode::SUCCESS)
            }
        }
        Err(report) => {
            eprint!("{report}");
            let errors = report.errors().count();
            eprintln!("{}: {errors} error(s)", config.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Validates, then describes what the gateway serves with this configuration.
pub fn serve_preview(path: &Path) -> anyhow::Result<ExitCode> {
    let Loaded { config, warnings } = match tollgate_config::load(path) {
        Ok(loaded) => loaded,
        Err(report) => {
            eprint!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    eprint!("{warnings}");
    print!("{}", describe(&config));
    Ok(ExitCode::SUCCESS)
}

fn priced_models(config: &Config) -> usize {
    config
        .prices
        .providers
        .values()
        .map(|p| p.models.len() + usize::from(p.fallback.is_some()))
        .sum()
}

fn describe(config: &Config) -> String {
    let mut out = String::new();
    let counters = match &config.storage.counters {
        CounterStore::Memory => "in-process".to_owned(),
        CounterStore::Redis { url, .. } => format!("redis {url}"),
    };
    out.push_str(&format!(
        "proxy   http://{}/<provider>/...\nadmin   http://{}/api/subscription/...\n\
         counters {counters}; ledger {}\n\nproviders:\n",
        config.proxy.listen, config.admin.listen, config.storage.database_url
    ));
    for (provider, settings) in &config.providers {
        let key = if settings.key.is_some() {
            "key set"
        } else {
            "NO KEY"
        };
        out.push_str(&format!(
            "  /{:<10} → {:<45} {} ({key})\n",
            provider.as_str(),
            settings.base_url,
            settings.key_env
        ));
    }
    out.push_str("\nplans:\n");
    let mut plans: Vec<_> = config.plans.values().collect();
    plans.sort_by_key(|p| (p.price_monthly_nanousd, p.id.clone()));
    for plan in plans {
        let limits: Vec<String> = plan
            .all_limits()
            .into_iter()
            .chain(plan.minute_limits())
            .map(|l| match l.key {
                LimitKey::Cost => format!("cost ${}", format_usd(l.max)),
                key => format!("{key} {}", l.max),
            })
            .collect();
        let excluded: Vec<&str> = Provider::ALL
            .into_iter()
            .filter(|p| !plan.includes(*p))
            .map(Provider::as_str)
            .collect();
        out.push_str(&format!(
            "  {} ({}, ${}/month): {}{}\n",
            plan.name,
            plan.id,
            format_usd(plan.price_monthly_nanousd),
            limits.join(", "),
            if excluded.is_empty() {
                String::new()
            } else {
                format!("; not included: {}", excluded.join(", "))
            }
        ));
    }
    out
}

/// Applies the ledger's migrations to the configured database (or the one given).
/// An encrypted ledger is opened with the configuration's key.
pub fn migrate(config: &Path, database_url: Option<String>) -> anyhow::Result<ExitCode> {
    let loaded = match tollgate_config::load(config) {
        Ok(loaded) => Some(loaded.config),
        // The configuration is needed only for what the command line does not give.
        Err(_) if database_url.is_some() => None,
        Err(report) => {
            eprint!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let key = match &loaded {
        Some(config) => crate::encryption::ledger_key(config)?,
        None => None,
    };
    let url = match (database_url, &loaded) {
        (Some(url), _) => url,
        (None, Some(config)) => config.storage.database_url.clone(),
        (None, None) => anyhow::bail!("no database URL"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tollgate_ledger::migrate_with_key(&url, key))?;
    println!("migrations applied to {}", redact(&url));
    Ok(ExitCode::SUCCESS)
}

/// A database URL with its password hidden.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if scheme < at => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
