//! A user as the admin API sees them: do they exist, which plan are they on, and which billing
//! period is theirs.
//!
//! The plan comes from the user's active subscription in the ledger; failing that from a
//! static `[[keys]]` entry of the configuration; failing that from `default_plan`. A
//! subscription to a plan that was removed from gateway.toml falls back the same way, so a
//! config edit can never leave a user without limits.

use chrono::{DateTime, Utc};
use tollgate_config::Config;
use tollgate_domain::{AnchorDay, BillingPeriod, Plan};
use tollgate_ledger::{Ledger, Subscription, User};

use crate::error::{AdminError, Result};

#[derive(Clone, Debug)]
pub struct Account {
    pub user: Option<User>,
    pub subscription: Option<Subscription>,
    pub plan: Plan,
    /// True when the plan is not the subscription's (no subscription, or it is not active).
    pub on_fallback_plan: bool,
    pub anchor: AnchorDay,
}

impl Account {
    pub fn period_at(&self, at: DateTime<Utc>) -> BillingPeriod {
        BillingPeriod::containing(at, self.anchor)
    }

    pub fn is_disabled(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.disabled_at.is_some())
    }
}

/// Whether anything knows this user: a user row, a subscription or a static key.
pub async fn exists(ledger: &Ledger, config: &Config, user_id: &str) -> Result<bool> {
    Ok(config.keys.iter().any(|k| k.user == user_id)
        || ledger.user(user_id).await?.is_some()
        || ledger.subscription(user_id).await?.is_some())
}

/// The user's account; 404 if no one knows the user.
pub async fn load(ledger: &Ledger, config: &Config, user_id: &str) -> Result<Account> {
    let user = ledger.user(user_id).await?;
    let subscription = ledger.subscription(user_id).await?;
    let static_key = config.keys.iter().find(|k| k.user == user_id);
    if user.is_none() && subscription.is_none() && static_key.is_none() {
        return Err(AdminError::not_found_user(user_id));
    }
    let subscribed = subscription
        .as_ref()
        .filter(|s| s.status == "active")
        .and_then(|s| config.plans.get(&s.plan_id));
    let fallback = static_key
        .and_then(|k| config.plans.get(&k.plan))
        .or_else(|| {
            config
                .default_plan
                .as_ref()
                .and_then(|id| config.plans.get(id))
        });
    let (plan, on_fallback_plan) = match (subscribed, fallback) {
        (Some(plan), _) => (plan.clone(), false),
        (None, Some(plan)) => (plan.clone(), true),
        (None, None) => {
            return Err(AdminError::NotFound(format!(
                "user {user_id:?} has no active subscription and gateway.toml sets no \
                 default_plan"
            )));
        }
    };
    let anchor = subscription
        .as_ref()
        .and_then(|s| u8::try_from(s.anchor_day).ok())
        .and_then(|d| AnchorDay::new(d).ok())
        .or_else(|| static_key.map(|k| k.anchor_day))
        .unwrap_or_default();
    Ok(Account {
        user,
        subscription,
        plan,
        on_fallback_plan,
        anchor,
    })
}
