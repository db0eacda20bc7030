//! Users, their hashed API keys, subscriptions, the plan mirror, and alerts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

use tollgate_domain::{AnchorDay, KeyLimits, KeyRules, ModelPattern, Provider};

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct User {
    pub id: String,
    pub display_name: Option<String>,
    pub email: Option<String>,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

/// A stored API key: only its hash (never the key) and a short prefix to recognise it by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    #[serde(skip)]
    pub key_hash: String,
    pub prefix: String,
    pub name: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The providers the key may call, a JSON array of ids (`None`: every provider of the plan).
    pub providers: Option<String>,
    /// Per provider, the model patterns the key may call, a JSON object (`None`: any model).
    pub models: Option<String>,
    /// The key's own limits (`None`: none of its own).
    pub budget_nanousd: Option<i64>,
    pub budget_tokens: Option<i64>,
    pub calls_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
}

impl ApiKey {
    /// The key's own rules, read from their stored form; a value that does not read is
    /// `Corrupt` rather than no rule, so that a damaged row never widens what a key may do.
    pub fn rules(&self) -> Result<KeyRules> {
        let providers = match &self.providers {
            None => None,
            Some(text) => {
                let names: Vec<String> =
                    serde_json::from_str(text).map_err(corrupt("providers"))?;
                let parsed = names
                    .iter()
                    .map(|n| n.parse::<Provider>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(corrupt("providers"))?;
                Some(parsed)
            }
        };
        let mut models = BTreeMap::new();
        if let Some(text) = &self.models {
            let stored: BTreeMap<String, Vec<String>> =
                serde_json::from_str(text).map_err(corrupt("models"))?;
            for (provider, patterns) in stored {
                let provider = provider.parse::<Provider>().map_err(corrupt("models"))?;
                let patterns = patterns
                    .iter()
                    .map(|p| ModelPattern::parse(p))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(corrupt("models"))?;
                models.insert(provider, patterns);
            }
        }
        let count = |column: &'static str, v: Option<i64>| {
            v.map(|v| u64::try_from(v).map_err(corrupt(column)))
                .transpose()
        };
        Ok(KeyRules {
            expires_at: self.expires_at,
            providers,
            models,
            limits: KeyLimits {
                cost_budget_nanousd: count("budget_nanousd", self.budget_nanousd)?,
                token_budget: count("budget_tokens", self.budget_tokens)?,
                calls_per_minute: count("calls_per_minute", self.calls_per_minute)?,
                tokens_per_minute: count("tokens_per_minute", self.tokens_per_minute)?,
            },
        })
    }
}

fn corrupt<E: std::fmt::Display>(column: &'static str) -> impl Fn(E) -> LedgerError {
    move |e| LedgerError::Corrupt {
        column,
        detail: e.to_string(),
    }
}

/// The stored form of a key's rules (the `api_keys` columns `expires_at`, `providers`,
/// `models`, and its own limits).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoredRules {
    pub expires_at: Option<DateTime<Utc>>,
    pub providers: Option<String>,
    pub models: Option<String>,
    pub budget_nanousd: Option<i64>,
    pub budget_tokens: Option<i64>,
    pub calls_per_minute: Option<i64>,
    pub tokens_per_minute: Option<i64>,
}

impl StoredRules {
    pub fn of(rules: &KeyRules) -> StoredRules {
        let providers = rules.providers.as_ref().map(|list| {
            let names: Vec<&str> = list.iter().map(|p| p.as_str()).collect();
            serde_json::Value::from(names).to_string()
        });
        let models = (!rules.models.is_empty()).then(|| {
            let map: serde_json::Map<String, serde_json::Value> = rules
                .models
                .iter()
                .map(|(provider, patterns)| {
                    let list: Vec<&str> = patterns.iter().map(ModelPattern::as_str).collect();
                    (provider.as_str().to_owned(), serde_json::Value::from(list))
                })
                .collect();
            serde_json::Value::Object(map).to_string()
        });
        // Limits are validated to fit (at most 2^53) before they get here.
        let column = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let l = &rules.limits;
        StoredRules {
            expires_at: rules.expires_at,
            providers,
            models,
            budget_nanousd: column(l.cost_budget_nanousd),
            budget_tokens: column(l.token_budget),
            calls_per_minute: column(l.calls_per_minute),
            tokens_per_minute: column(l.tokens_per_minute),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiKey {
    pub id: String,
    pub user_id: String,
    pub key_hash: String,
    pub prefix: String,
    pub name: Option<String>,
    pub rules: StoredRules,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Subscription {
    pub user_id: String,
    pub plan_id: String,
    /// `monthly` or `yearly`.
    pub billing_cycle: String,
    pub anchor_day: i64,
    /// `active`, `cancelled`, `suspended`, ...
    pub status: String,
    pub auto_renew: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSubscription {
    pub user_id: String,
    pub plan_id: String,
    pub billing_cycle: String,
    pub anchor_day: AnchorDay,
    pub status: String,
    pub auto_renew: bool,
}

/// A plan as mirrored from gateway.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct PlanRecord {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub price_monthly_nanousd: i64,
    pub price_yearly_nanousd: i64,
    /// The plan's limits as JSON (the 14 seed keys and more).
    pub limits_json: String,
    pub features_json: String,
    pub description: Option<String>,
    pub is_active: bool,
}

/// An alert to raise once per (user, limit, threshold, period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    pub user_id: String,
    pub billing_period: String,
    /// Which limit: `openai_calls`, `monthly_cost`, `plan_tokens`, ...
    pub limit_key: String,
    /// 80, 90 or 100.
    pub threshold_percentage: u32,
    /// `usage_warning` or `limit_reached`.
    pub alert_type: String,
    pub provider: Option<Provider>,
    pub title: String,
    pub message: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Alert {
    pub id: i64,
    pub user_id: String,
    pub billing_period: String,
    pub limit_key: String,
    pub threshold_percentage: i64,
    pub alert_type: String,
    pub provider: Option<String>,
    pub title: String,
    pub message: String,
    pub severity: String,
    pub is_sent: bool,
    pub sent_at: Option<DateTime<Utc>>,
    pub is_read: bool,
    pub read_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

pub(crate) const ALERT_COLUMNS: &str = "id, user_id, billing_period, limit_key, \
    threshold_percentage, alert_type, provider, title, message, severity, is_sent, sent_at, \
    is_read, read_at, created_at";
pub(crate) const KEY_COLUMNS: &str = "id, user_id, key_hash, prefix, name, created_at, \
    revoked_at, expires_at, providers, models, budget_nanousd, budget_tokens, calls_per_minute, \
    tokens_per_minute";
pub(crate) const SUBSCRIPTION_COLUMNS: &str =
    "user_id, plan_id, billing_cycle, anchor_day, status, auto_renew, created_at, updated_at";

impl Ledger {
    /// Creates a user; false if the id exists already.
    pub async fn create_user(
        &self,
        id: &str,
        display_name: Option<&str>,
        email: Option<&str>,
    ) -> Result<bool> {
        let display_name = self.columns.seal(id, "display_name", display_name)?;
        let email = self.columns.seal(id, "email", email)?;
        let done = on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO users (id, display_name, email, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO NOTHING")
            .bind(id)
            .bind(&display_name)
            .bind(&email)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("creating a user"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// Sets (or, with `None`, clears) the address the user's alerts are mailed to; false if
    /// there is no such user.
    pub async fn set_user_email(&self, id: &str, email: Option<&str>) -> Result<bool> {
        let email = self.columns.seal(id, "email", email)?;
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE users SET email = $2 WHERE id = $1")
            .bind(id)
            .bind(&email)
            .execute(pool)
            .await
            .map_err(LedgerError::db("setting a user's e-mail address"))?
            .rows_affected());
        Ok(done == 1)
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>> {
        let user: Option<User> = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT id, display_name, email, created_at, disabled_at FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("reading a user"))?);
        user.map(|u| self.opened(u)).transpose()
    }

    /// A user as read from `users`, with their personal columns opened.
    pub(crate) fn opened(&self, user: User) -> Result<User> {
        Ok(User {
            display_name: self
                .columns
                .open(&user.id, "display_name", user.display_name)?,
            email: self.columns.open(&user.id, "email", user.email)?,
            ..user
        })
    }

    /// Disables the user (`Some(at)`) or enables them again (`None`); false if there is no such
    /// user. A disabled user's keys stay stored, so enabling them again restores every key.
    pub async fn set_user_disabled(&self, id: &str, at: Option<DateTime<Utc>>) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE users SET disabled_at = $2 WHERE id = $1")
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .map_err(LedgerError::db("disabling or enabling a user"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// Users in order of creation, a page at a time.
    pub async fn users(&self, limit: u32, offset: u64) -> Result<Vec<User>> {
        let users: Vec<User> = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT id, display_name, email, created_at, disabled_at FROM users \
             ORDER BY created_at, id LIMIT $1 OFFSET $2")
            .bind(i64::from(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing users"))?);
        users.into_iter().map(|u| self.opened(u)).collect()
    }

    /// One key by id, revoked or not.
    pub async fn api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("reading an API key"))?))
    }

    /// Stores a new key (its hash). Fails if the hash is already stored.
    pub async fn create_api_key(&self, key: &NewApiKey) -> Result<()> {
        on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO api_keys (id, user_id, key_hash, prefix, name, created_at, expires_at, \
             providers, models, budget_nanousd, budget_tokens, calls_per_minute, \
             tokens_per_minute) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)")
            .bind(&key.id)
            .bind(&key.user_id)
            .bind(&key.key_hash)
            .bind(&key.prefix)
            .bind(&key.name)
            .bind(Utc::now())
            .bind(key.rules.expires_at)
            .bind(&key.rules.providers)
            .bind(&key.rules.models)
            .bind(key.rules.budget_nanousd)
            .bind(key.rules.budget_tokens)
            .bind(key.rules.calls_per_minute)
            .bind(key.rules.tokens_per_minute)
            .execute(pool)
            .await
            .map_err(LedgerError::db("creating an API key"))?
            .rows_affected());
        Ok(())
    }

    /// The key with this hash, revoked or not.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"))
            .bind(key_hash)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("looking up an API key"))?))
    }

    /// Every key not revoked, for the gateway's in-memory key table.
    pub async fn active_api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL ORDER BY created_at"))
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing API keys"))?))
    }

    pub async fn api_keys_of(&self, user_id: &str) -> Result<Vec<ApiKey>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at"))
            .bind(user_id)
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing a user's API keys"))?))
    }

    /// Revokes a key; false if it does not exist or was already revoked.
    pub async fn revoke_api_key(&self, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(at)
            .execute(pool)
            .await
            .map_err(LedgerError::db("revoking an API key"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// Changes a key's name and rules; false if there is no such key or it is revoked.
    pub async fn update_api_key(
        &self,
        id: &str,
        name: Option<&str>,
        rules: &StoredRules,
    ) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE api_keys SET name = $2, expires_at = $3, providers = $4, models = $5, \
             budget_nanousd = $6, budget_tokens = $7, calls_per_minute = $8, \
             tokens_per_minute = $9 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(name)
            .bind(rules.expires_at)
            .bind(&rules.providers)
            .bind(&rules.models)
            .bind(rules.budget_nanousd)
            .bind(rules.budget_tokens)
            .bind(rules.calls_per_minute)
            .bind(rules.tokens_per_minute)
            .execute(pool)
            .await
            .map_err(LedgerError::db("changing an API key"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// Creates or replaces the user's subscription (one per user).
    pub async fn upsert_subscription(&self, sub: &NewSubscription) -> Result<()> {
        on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO user_subscriptions (user_id, plan_id, billing_cycle, anchor_day, status, \
             auto_renew, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (user_id) DO UPDATE SET plan_id = excluded.plan_id, \
             billing_cycle = excluded.billing_cycle, anchor_day = excluded.anchor_day, \
             status = excluded.status, auto_renew = excluded.auto_renew, \
             updated_at = excluded.updated_at")
            .bind(&sub.user_id)
            .bind(&sub.plan_id)
            .bind(&sub.billing_cycle)
            .bind(i64::from(sub.anchor_day.get()))
            .bind(&sub.status)
            .bind(sub.auto_renew)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("saving a subscription"))?
            .rows_affected());
        Ok(())
    }

    pub async fn subscription(&self, user_id: &str) -> Result<Option<Subscription>> {
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {SUBSCRIPTION_COLUMNS} FROM user_subscriptions WHERE user_id = $1"))
            .bind(user_id)
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("reading a subscription"))?))
    }

    /// Mirrors a plan from the config into `subscription_plans`.
    pub async fn upsert_plan(&self, plan: &PlanRecord) -> Result<()> {
        on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO subscription_plans (id, name, tier, price_monthly_nanousd, \
             price_yearly_nanousd, limits_json, features_json, description, is_active, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
             ON CONFLICT (id) DO UPDATE SET name = excluded.name, tier = excluded.tier, \
             price_monthly_nanousd = excluded.price_monthly_nanousd, \
             price_yearly_nanousd = excluded.price_yearly_nanousd, \
             limits_json = excluded.limits_json, features_json = excluded.features_json, \
             description = excluded.description, is_active = excluded.is_active, \
             updated_at = excluded.updated_at")
            .bind(&plan.id)
            .bind(&plan.name)
            .bind(&plan.tier)
            .bind(plan.price_monthly_nanousd)
            .bind(plan.price_yearly_nanousd)
            .bind(&plan.limits_json)
            .bind(&plan.features_json)
            .bind(&plan.description)
            .bind(plan.is_active)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("saving a plan"))?
            .rows_affected());
        Ok(())
    }

    /// Stores the alert unless the same (user, limit, threshold, period) was raised before;
    /// true when this call stored it (and so should deliver it).
    pub async fn insert_alert_once(&self, alert: &NewAlert) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "INSERT INTO usage_alerts (user_id, billing_period, limit_key, threshold_percentage, \
             alert_type, provider, title, message, severity, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (user_id, limit_key, threshold_percentage, billing_period) DO NOTHING")
            .bind(&alert.user_id)
            .bind(&alert.billing_period)
            .bind(&alert.limit_key)
            .bind(i64::from(alert.threshold_percentage))
            .bind(&alert.alert_type)
            .bind(alert.provider.map(|p| p.as_str()))
            .bind(&alert.title)
            .bind(&alert.message)
            .bind(&alert.severity)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("storing an alert"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// The user's alerts, newest first.
    pub async fn alerts(&self, user_id: &str, unread_only: bool, limit: u32) -> Result<Vec<Alert>> {
        let filter = if unread_only {
            " AND is_read = FALSE"
        } else {
            ""
        };
        Ok(on_db!(&self.db, pool => sqlx::query_as(&format!(
            "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE user_id = $1{filter} \
             ORDER BY created_at DESC, id DESC LIMIT $2"))
            .bind(user_id)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("reading alerts"))?))
    }

    /// How many of the user's alerts are unread (all of them, not one page).
    pub async fn unread_alert_count(&self, user_id: &str) -> Result<u64> {
        let (n,): (i64,) = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT COUNT(*) FROM usage_alerts WHERE user_id = $1 AND is_read = FALSE")
            .bind(user_id)
            .fetch_one(pool)
            .await
            .map_err(LedgerError::db("counting unread alerts"))?);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Marks an alert of `user_id` read; false if the user has no such alert.
    pub async fn mark_alert_read(&self, user_id: &str, alert_id: i64) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE usage_alerts SET is_read = TRUE, read_at = $3 \
             WHERE id = $1 AND user_id = $2 AND is_read = FALSE")
            .bind(alert_id)
            .bind(user_id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("marking an alert read"))?
            .rows_affected());
        Ok(done == 1)
    }

    /// Records that an alert was delivered (to the webhook).
    pub async fn mark_alert_sent(&self, alert_id: i64) -> Result<bool> {
        let done = on_db!(&self.db, pool => sqlx::query(
            "UPDATE usage_alerts SET is_sent = TRUE, sent_at = $2 WHERE id = $1 AND is_sent = FALSE")
            .bind(alert_id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map_err(LedgerError::db("marking an alert sent"))?
            .rows_affected());
        Ok(done == 1)
    }
}
