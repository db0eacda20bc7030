//! `tollgate users …`, `tollgate keys …` and `tollgate usage …`: the admin API's user, plan
//! and key operations from the command line, against the ledger of gateway.toml. Output is
//! JSON, as the API answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;
use tollgate_admin::key_rules::{self, KeyChange, NewKeyRequest};
use tollgate_admin::lifecycle;
use tollgate_admin::model::PlanRef;
use tollgate_admin::ops::{self, NewUserRequest};
use tollgate_config::{Config, CounterStore};
use tollgate_counters::{RedisConfig, RedisStore};
use tollgate_ledger::{DbOptions, Ledger};

#[derive(Debug, clap::Subcommand)]
pub enum UsersCommand {
    /// Create a user, optionally on a plan.
    Create {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// A plan id of gateway.toml.
        #[arg(long)]
        plan: Option<String>,
        /// Day of the month (1–31) the user's billing periods start on.
        #[arg(long)]
        anchor_day: Option<u8>,
    },
    /// List users in order of creation.
    List {
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Assign or change a user's plan (creates the user if needed).
    SetPlan {
        id: String,
        plan: String,
        #[arg(long)]
        anchor_day: Option<u8>,
        /// `monthly` or `yearly`.
        #[arg(long)]
        cycle: Option<String>,
    },
    /// Disable a user: the gateway refuses their calls (403 `user_disabled`) once its cached key
    /// lookups expire (`proxy.key_cache_ttl_ms`). Keys, plan and usage are kept.
    Disable { id: String },
    /// Enable a disabled user again, with the keys they had.
    Enable { id: String },
    /// Erase a user (GDPR): every row about them (keys, subscription, alerts and their pending
    /// deliveries, usage rows, summaries, billing history, job credits) and, with Redis
    /// counters, their keys in Redis. The erasure is recorded as done by `cli`, without the
    /// user. A running gateway with in-process counters keeps the user's until it restarts:
    /// erase through its admin API instead (`DELETE /api/admin/users/{id}`).
    Delete { id: String },
    /// Write everything Tollgate holds about a user as one JSON document (docs/privacy.md).
    Export {
        id: String,
        /// Write it to FILE (created, or replaced) rather than to standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// A key's own rules on the command line.
#[derive(Debug, clap::Args)]
pub struct RuleFlags {
    /// When the key stops working: an RFC 3339 time or a date (its start, UTC).
    #[arg(long)]
    expires: Option<String>,
    /// A provider the key may call (repeat for several); default: every provider of the plan.
    #[arg(long = "provider", value_name = "PROVIDER", id = "providers")]
    providers: Vec<String>,
    /// A model the key may call, as PROVIDER=PATTERN with `*` for any characters
    /// (`openai=gpt-4o*`; repeat for several); a provider not named: any model.
    #[arg(long = "model", value_name = "PROVIDER=PATTERN", id = "models")]
    models: Vec<String>,
    /// The key's cost budget per billing period, in US dollars (`25.00`).
    #[arg(long, value_name = "USD")]
    max_budget: Option<String>,
    /// The key's token budget per billing period.
    #[arg(long, value_name = "TOKENS")]
    token_budget: Option<i64>,
    /// Calls the key may make per minute.
    #[arg(long = "rpm", value_name = "CALLS")]
    rpm_limit: Option<i64>,
    /// Tokens the key may use per minute.
    #[arg(long = "tpm", value_name = "TOKENS")]
    tpm_limit: Option<i64>,
}

impl RuleFlags {
    fn max_budget(&self) -> Option<serde_json::Value> {
        self.max_budget.clone().map(serde_json::Value::String)
    }

    fn providers(&self) -> Option<Vec<String>> {
        (!self.providers.is_empty()).then(|| self.providers.clone())
    }

    fn models(&self) -> anyhow::Result<Option<BTreeMap<String, Vec<String>>>> {
        if self.models.is_empty() {
            return Ok(None);
        }
        let mut lists: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for entry in &self.models {
            let (provider, pattern) = entry.split_once('=').with_context(|| {
                format!("--model {entry:?}: write PROVIDER=PATTERN, e.g. openai=gpt-4o*")
            })?;
            lists
                .entry(provider.to_owned())
                .or_default()
                .push(pattern.to_owned());
        }
        Ok(Some(lists))
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Issue a key for a user; it is printed once and stored only as its SHA-256.
    Issue {
        user: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        rules: RuleFlags,
    },
    /// Change a key's name or rules; rules not named are kept. Other gateway instances apply
    /// the change once their cached key lookups expire (`proxy.key_cache_ttl_ms`).
    Change {
        key_id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        rules: RuleFlags,
        /// Remove the key's expiry.
        #[arg(long, conflicts_with = "expires")]
        no_expiry: bool,
        /// Let the key call every provider of its user's plan again.
        #[arg(long, conflicts_with = "providers")]
        all_providers: bool,
        /// Let the key call any model again.
        #[arg(long, conflicts_with = "models")]
        any_model: bool,
        /// Remove the key's own budgets and per-minute limits (its plan's still apply).
        #[arg(long, conflicts_with_all = ["max_budget", "token_budget", "rpm_limit", "tpm_limit"])]
        no_limits: bool,
    },
    /// List a user's keys (never the keys themselves).
    List { user: String },
    /// Revoke a key by its id.
    Revoke { key_id: String },
}

/// Print a user's usage in a billing period, as the API's UsageStats.
#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    pub user: String,
    /// `YYYY-MM`; default: the user's current period.
    #[arg(long)]
    pub period: Option<String>,
}

fn print(value: &impl Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(ExitCode::SUCCESS)
}

/// Loads the configuration and connects to its ledger, then runs `f` on a small runtime.
fn with_ledger<F, Fut>(config_path: &Path, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Ledger, Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let config = match tollgate_config::load(config_path) {
        Ok(loaded) => loaded.config,
        Err(report) => {
            eprint!("{report}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    runtime.block_on(async move {
        let options = DbOptions {
            key: crate::encryption::ledger_key(&config)?,
            ..DbOptions::default()
        };
        let ledger = Ledger::connect(&config.storage.database_url, options)
            .await
            .with_context(|| format!("opening the ledger at {}", config.storage.database_url))?;
        let result = f(ledger.clone(), config).await;
        ledger.close().await;
        result
    })
}

pub fn users(config: &Path, command: UsersCommand) -> anyhow::Result<ExitCode> {
    with_ledger(config, |ledger, config| async move {
        match command {
            UsersCommand::Create {
                id,
                name,
                email,
                plan,
                anchor_day,
            } => {
                let req = NewUserRequest {
                    id,
                    display_name: name,
                    email,
                    plan_id: plan,
                    anchor_day,
                    billing_cycle: None,
                };
                print(&ops::create_user(&ledger, &config, &req).await?)
            }
            UsersCommand::List { limit, offset } => print(&ledger.users(limit, offset).await?),
            UsersCommand::SetPlan {
                id,
                plan,
                anchor_day,
                cycle,
            } => {
                let (sub, _) = ops::set_plan(
                    &ledger,
                    &config,
                    &id,
                    &PlanRef::Id(plan),
                    cycle.as_deref(),
                    anchor_day,
                )
                .await?;
                print(&sub)
            }
            UsersCommand::Disable { id } => {
                print(&lifecycle::set_disabled(&ledger, &config, &id, true).await?)
            }
            UsersCommand::Enable { id } => {
                print(&lifecycle::set_disabled(&ledger, &config, &id, false).await?)
            }
            UsersCommand::Delete { id } => {
                let mut deleted = lifecycle::delete(&ledger, &config, &id, "cli").await?;
                deleted.counters = forget_counters(&config, &id).await;
                print(&deleted)
            }
            UsersCommand::Export { id, out } => {
                lifecycle::check_exists(&ledger, &config, &id).await?;
                let rows = match &out {
                    Some(path) => {
                        let mut file = tokio::fs::File::create(path)
                            .await
                            .with_context(|| format!("creating {}", path.display()))?;
                        let rows = ledger.export_user(&id, &mut file).await?;
                        file.sync_all()
                            .await
                            .with_context(|| format!("writing {}", path.display()))?;
                        rows
                    }
                    None => ledger.export_user(&id, &mut tokio::io::stdout()).await?,
                };
                if let Some(path) = out {
                    eprintln!("{rows} rows about {id:?} written to {}", path.display());
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

/// Deletes an erased user's counters from the counter store the configuration names, when
/// this process can reach it (Redis); answers what became of them, for the command's output.
async fn forget_counters(config: &Config, user: &str) -> String {
    let CounterStore::Redis {
        url,
        timeout_ms,
        key_prefix,
        cluster,
    } = &config.storage.counters
    else {
        return "not deleted: in-process counters live in the running gateway, which forgets \
                them when it restarts (or erase through its admin API)"
            .to_owned();
    };
    let store = RedisStore::new(RedisConfig {
        key_prefix: key_prefix.clone(),
        cluster: *cluster,
        ..RedisConfig::new(url.as_str(), *timeout_ms)
    });
    match store {
        Ok(store) => match store.forget_user(user, chrono::Utc::now()).await {
            Ok(_) => "forgotten".to_owned(),
            Err(e) => format!("not deleted: {e}"),
        },
        Err(e) => format!("not deleted: {e}"),
    }
}

pub fn keys(config: &Path, command: KeysCommand) -> anyhow::Result<ExitCode> {
    with_ledger(config, |ledger, config| async move {
        match command {
            KeysCommand::Issue { user, name, rules } => {
                let req = NewKeyRequest {
                    name,
                    expires: rules.expires.clone(),
                    providers: rules.providers(),
                    models: rules.models()?,
                    max_budget: rules.max_budget(),
                    token_budget: rules.token_budget,
                    rpm_limit: rules.rpm_limit,
                    tpm_limit: rules.tpm_limit,
                };
                let issued = ops::issue_key(&ledger, &config, &user, &req).await?;
                eprintln!("The key is shown only now; it is stored as its SHA-256.");
                print(&issued)
            }
            KeysCommand::List { user } => print(&ops::list_keys(&ledger, &config, &user).await?),
            KeysCommand::Revoke { key_id } => print(&ops::revoke_key(&ledger, &key_id).await?),
            KeysCommand::Change {
                key_id,
                name,
                rules,
                no_expiry,
                all_providers,
                any_model,
                no_limits,
            } => {
                // Each limit named is set; with --no-limits, all four are cleared.
                let limit = |value: Option<i64>| {
                    if no_limits {
                        Some(None)
                    } else {
                        value.map(Some)
                    }
                };
                let change = KeyChange {
                    name: name.map(Some),
                    expires: if no_expiry {
                        Some(None)
                    } else {
                        rules.expires.clone().map(Some)
                    },
                    providers: if all_providers {
                        Some(None)
                    } else {
                        rules.providers().map(Some)
                    },
                    models: if any_model {
                        Some(None)
                    } else {
                        rules.models()?.map(Some)
                    },
                    max_budget: if no_limits {
                        Some(None)
                    } else {
                        rules.max_budget().map(Some)
                    },
                    token_budget: limit(rules.token_budget),
                    rpm_limit: limit(rules.rpm_limit),
                    tpm_limit: limit(rules.tpm_limit),
                };
                print(&key_rules::change_key(&ledger, &key_id, &change).await?)
            }
        }
    })
}

pub fn usage(config: &Path, args: UsageArgs) -> anyhow::Result<ExitCode> {
    with_ledger(config, |ledger, config| async move {
        print(&ops::usage_stats(&ledger, &config, &args.user, args.period.as_deref()).await?)
    })
}
