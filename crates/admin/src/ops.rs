//! Operations on users, subscriptions and keys, shared by the admin API and the `tollgate`
//! CLI so that both check the same things (a plan must exist in gateway.toml, a key is shown
//! once and stored as its SHA-256).

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tollgate_config::Config;
use tollgate_domain::{AnchorDay, BillingPeriod, Plan, format_usd};
use tollgate_ledger::{
    ApiKey, Ledger, NewApiKey, NewSubscription, StoredRules, Subscription, User,
};
use utoipa::ToSchema;

use crate::account;
use crate::auth::sha256;
use crate::error::{AdminError, Result};
use crate::key_rules::{self, NewKeyRequest, RulesOut};
use crate::model::{PlanRef, UsageStats};
use crate::render::iso;
use crate::stats;

/// The plans in the order `/plans` lists them: by monthly price, then id.
pub fn plans_in_order(config: &Config) -> Vec<&Plan> {
    let mut plans: Vec<&Plan> = config.plans.values().collect();
    plans.sort_by(|a, b| (a.price_monthly_nanousd, &a.id).cmp(&(b.price_monthly_nanousd, &b.id)));
    plans
}

/// The plan a client names, by id (or name) or by its 1-based position in `/plans`.
pub fn resolve_plan<'c>(config: &'c Config, plan: &PlanRef) -> Result<&'c Plan> {
    let found = match plan {
        PlanRef::Id(id) => config.plans.get(id).or_else(|| {
            config
                .plans
                .values()
                .find(|p| p.name.eq_ignore_ascii_case(id))
        }),
        PlanRef::Position(n) => usize::try_from(*n)
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| plans_in_order(config).get(i).copied()),
    };
    found.ok_or_else(|| {
        AdminError::NotFound(format!(
            "plan {} not found (plans: {})",
            match plan {
                PlanRef::Id(id) => format!("{id:?}"),
                PlanRef::Position(n) => n.to_string(),
            },
            config.plans.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserRequest {
    /// The user's id, as the gateway will know it (1–100 characters).
    pub id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    /// Subscribe the new user to this plan at once.
    pub plan_id: Option<String>,
    pub anchor_day: Option<u8>,
    pub billing_cycle: Option<String>,
}

fn check_user_id(id: &str) -> Result<()> {
    let ok = (1..=100).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@' | ':'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "user id {id:?} must be 1 to 100 characters of letters, digits, - _ . @ :"
        )))
    }
}

/// An address alerts can be mailed to (`name@domain`), or a 400 saying what is wrong.
pub fn check_email(email: &str) -> Result<()> {
    email
        .parse::<lettre::Address>()
        .map(|_| ())
        .map_err(|e| AdminError::BadRequest(format!("email {email:?} is not an address: {e}")))
}

/// Creates a user (409 if the id is taken), optionally subscribed to a plan.
pub async fn create_user(ledger: &Ledger, config: &Config, req: &NewUserRequest) -> Result<User> {
    check_user_id(&req.id)?;
    if let Some(email) = &req.email {
        check_email(email)?;
    }
    if let Some(plan) = &req.plan_id {
        resolve_plan(config, &PlanRef::Id(plan.clone()))?;
    }
    if !ledger
        .create_user(&req.id, req.display_name.as_deref(), req.email.as_deref())
        .await?
    {
        return Err(AdminError::Conflict(format!(
            "user {:?} exists already",
            req.id
        )));
    }
    if let Some(plan) = &req.plan_id {
        set_plan(
            ledger,
            config,
            &req.id,
            &PlanRef::Id(plan.clone()),
            req.billing_cycle.as_deref(),
            req.anchor_day,
        )
        .await?;
    }
    ledger
        .user(&req.id)
        .await?
        .ok_or_else(|| AdminError::not_found_user(&req.id))
}

/// Subscribes the user to a plan (creating the user if needed), replacing any subscription. An
/// `anchor_day` not given keeps the subscription's (1 for a new one).
pub async fn set_plan(
    ledger: &Ledger,
    config: &Config,
    user_id: &str,
    plan: &PlanRef,
    billing_cycle: Option<&str>,
    anchor_day: Option<u8>,
) -> Result<(Subscription, Plan)> {
    check_user_id(user_id)?;
    let plan = resolve_plan(config, plan)?.clone();
    let billing_cycle = billing_cycle.unwrap_or("monthly");
    if !matches!(billing_cycle, "monthly" | "yearly") {
        return Err(AdminError::BadRequest(format!(
            "billing_cycle {billing_cycle:?} must be \"monthly\" or \"yearly\""
        )));
    }
    let anchor_day = match anchor_day {
        Some(d) => AnchorDay::new(d).map_err(|e| AdminError::BadRequest(e.to_string()))?,
        None => ledger
            .subscription(user_id)
            .await?
            .and_then(|s| u8::try_from(s.anchor_day).ok())
            .and_then(|d| AnchorDay::new(d).ok())
            .unwrap_or_default(),
    };
    ledger.create_user(user_id, None, None).await?;
    ledger
        .upsert_subscription(&NewSubscription {
            user_id: user_id.to_owned(),
            plan_id: plan.id.clone(),
            billing_cycle: billing_cycle.to_owned(),
            anchor_day,
            status: "active".to_owned(),
            auto_renew: true,
        })
        .await?;
    let sub = ledger
        .subscription(user_id)
        .await?
        .ok_or_else(|| AdminError::not_found_user(user_id))?;
    Ok((sub, plan))
}

/// A key as listed: never the key, only its prefix.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyOut {
    pub id: String,
    pub user_id: String,
    /// The key's first characters, to recognise it by.
    pub prefix: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// `ledger` (issued through the API or CLI) or `config` (a static `[[keys]]` entry).
    pub source: String,
    /// The key's own expiry, providers and models, when it has them.
    #[serde(flatten)]
    pub rules: RulesOut,
    /// What the key used in its user's current billing period (in key listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_use: Option<KeyPeriodUse>,
}

/// What one key used in a billing period: what its own budgets count.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyPeriodUse {
    pub billing_period: String,
    pub calls: u64,
    pub tokens: u64,
    /// US dollars, exact (`"0.10"`).
    pub cost: String,
    pub cost_nanousd: u64,
}

impl KeyOut {
    pub fn from_ledger(k: &ApiKey) -> Result<KeyOut> {
        Ok(KeyOut {
            id: k.id.clone(),
            user_id: k.user_id.clone(),
            prefix: k.prefix.clone(),
            name: k.name.clone(),
            created_at: iso(k.created_at),
            revoked_at: k.revoked_at.map(iso),
            source: "ledger".to_owned(),
            rules: RulesOut::of(&k.rules()?),
            period_use: None,
        })
    }
}

/// A newly issued key: the only time the key itself is shown.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IssuedKey {
    /// The key. It is stored only as its SHA-256 and cannot be shown again.
    pub key: String,
    #[serde(flatten)]
    pub info: KeyOut,
}

/// How many characters of a key are kept to recognise it by (`tg_` and six more).
const PREFIX_CHARS: usize = 9;

/// A fresh key: `tg_` and 48 hex digits (192 random bits).
fn new_key() -> Result<String> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)
        .map_err(|e| AdminError::Internal(format!("no randomness for a new key: {e}")))?;
    Ok(format!("tg_{}", hex::encode(bytes)))
}

/// The stored form of a key: the lowercase hex SHA-256 of its text, as the gateway hashes a
/// presented key.
pub fn key_hash(key: &str) -> String {
    hex::encode(sha256(key))
}

/// Issues a key for an existing user, with the rules the request gives it.
pub async fn issue_key(
    ledger: &Ledger,
    config: &Config,
    user_id: &str,
    req: &NewKeyRequest,
) -> Result<IssuedKey> {
    let rules = key_rules::new_rules(req, Utc::now())?;
    if !account::exists(ledger, config, user_id).await? {
        return Err(AdminError::not_found_user(user_id));
    }
    // Static-key users may have no row yet; keys in the ledger belong to a row.
    ledger.create_user(user_id, None, None).await?;
    let key = new_key()?;
    let record = NewApiKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        user_id: user_id.to_owned(),
        key_hash: key_hash(&key),
        prefix: key.chars().take(PREFIX_CHARS).collect(),
        name: req.name.clone(),
        rules: StoredRules::of(&rules),
    };
    ledger.create_api_key(&record).await?;
    let stored = ledger
        .api_key(&record.id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("key {:?} vanished", record.id)))?;
    Ok(IssuedKey {
        key,
        info: KeyOut::from_ledger(&stored)?,
    })
}

/// The user's keys: those issued into the ledger, then the static ones of gateway.toml.
pub async fn list_keys(ledger: &Ledger, config: &Config, user_id: &str) -> Result<Vec<KeyOut>> {
    if !account::exists(ledger, config, user_id).await? {
        return Err(AdminError::not_found_user(user_id));
    }
    let mut keys: Vec<KeyOut> = ledger
        .api_keys_of(user_id)
        .await?
        .iter()
        .map(KeyOut::from_ledger)
        .collect::<Result<_>>()?;
    keys.extend(
        config
            .keys
            .iter()
            .filter(|k| k.user == user_id)
            .map(|k| KeyOut {
                id: k.id(),
                user_id: k.user.clone(),
                prefix: String::new(),
                name: k.name.clone(),
                created_at: String::new(),
                revoked_at: None,
                source: "config".to_owned(),
                rules: RulesOut::default(),
                period_use: None,
            }),
    );
    // What each key used this period, when the user has a plan (and so a period).
    if let Ok(account) = account::load(ledger, config, user_id).await {
        let period = account.period_at(Utc::now()).key();
        let used = ledger.key_usage_for_period(user_id, &period).await?;
        for key in &mut keys {
            let u = used.iter().find(|u| u.key_id == key.id);
            let (calls, tokens, cost) =
                u.map_or((0, 0, 0), |u| (u.calls, u.tokens, u.cost_nanousd));
            key.period_use = Some(KeyPeriodUse {
                billing_period: period.clone(),
                calls,
                tokens,
                cost: format_usd(cost),
                cost_nanousd: cost,
            });
        }
    }
    Ok(keys)
}

/// Revokes a key issued into the ledger; 404 if there is no such key, 409 if already revoked.
/// Static keys are revoked by removing them from gateway.toml.
pub async fn revoke_key(ledger: &Ledger, key_id: &str) -> Result<KeyOut> {
    let Some(key) = ledger.api_key(key_id).await? else {
        return Err(AdminError::NotFound(format!("key {key_id:?} not found")));
    };
    if !ledger.revoke_api_key(key_id, Utc::now()).await? {
        return Err(AdminError::Conflict(format!(
            "key {key_id:?} was revoked already at {}",
            key.revoked_at.map(iso).unwrap_or_default()
        )));
    }
    let key = ledger.api_key(key_id).await?.unwrap_or(key);
    KeyOut::from_ledger(&key)
}

/// The user's usage in `period` (default: the period containing now) as the seed's
/// UsageStats.
pub async fn usage_stats(
    ledger: &Ledger,
    config: &Config,
    user_id: &str,
    period: Option<&str>,
) -> Result<UsageStats> {
    let account = account::load(ledger, config, user_id).await?;
    let now = Utc::now();
    let period = match period {
        None => account.period_at(now),
        Some(key) => BillingPeriod::from_key(key, account.anchor)
            .map_err(|e| AdminError::BadRequest(e.to_string()))?,
    };
    let usage = ledger.usage_for_period(user_id, &period.key()).await?;
    let alerts = ledger
        .period_alerts(user_id, &period.key(), true, stats::USAGE_ALERTS_MAX)
        .await?;
    let refused = ledger.refused_calls(user_id, &period.key()).await?;
    Ok(stats::usage_stats(
        &account.plan,
        period,
        &usage,
        &alerts,
        refused,
        now,
    ))
}
