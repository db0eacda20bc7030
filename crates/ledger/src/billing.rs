//! Closing billing periods into `billing_history`, without a scheduler.
//!
//! [`close_periods`] writes one row per (user, period) for every period that has ended: each
//! period with usage, and each period of an active subscription (whose base price is owed even
//! without usage). No scheduler is needed: the writer calls it at start and on the first flush of
//! every UTC day (every anchor-day boundary is a UTC midnight), a grace period after the
//! boundary and only with an empty spool, through [`PeriodCloser`], which keeps that schedule.
//! `UNIQUE (user_id, billing_period)` with `ON CONFLICT DO NOTHING` makes the row exactly-once
//! even if several gateways close at the same moment.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;
use tollgate_domain::{AnchorDay, BillingPeriod};

use crate::db::{Db, on_db};
use crate::error::{LedgerError, Result};
use crate::event::from_db;

/// Safety bound on how many periods back a subscription is billed in one pass.
const MAX_PERIODS_BACK: usize = 120;

#[derive(Debug, sqlx::FromRow)]
struct SummaryRow {
    user_id: String,
    billing_period: String,
    total_calls: i64,
    total_tokens: i64,
    total_cost_nanousd: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct SubscriptionRow {
    user_id: String,
    plan_id: String,
    billing_cycle: String,
    anchor_day: i64,
    status: String,
    created_at: DateTime<Utc>,
}

#[derive(Debug, sqlx::FromRow)]
struct PlanRow {
    id: String,
    name: String,
    price_monthly_nanousd: i64,
    price_yearly_nanousd: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct ProviderRow {
    provider: String,
    calls: i64,
    tokens: i64,
    cost_nanousd: i64,
}

/// The writer's schedule for closing periods: once per UTC day, `grace` after midnight, so that
/// calls made just before a boundary have been flushed before their period's bill is written.
#[derive(Debug)]
pub(crate) struct PeriodCloser {
    grace: chrono::Duration,
    /// The day whose periods were last closed.
    closed_day: Option<NaiveDate>,
}

impl PeriodCloser {
    pub fn new(grace_ms: u64) -> PeriodCloser {
        PeriodCloser {
            grace: chrono::Duration::milliseconds(i64::try_from(grace_ms).unwrap_or(i64::MAX / 2)),
            closed_day: None,
        }
    }

    /// Closes the periods that ended `grace` before `now`, unless that was done already today;
    /// returns how many rows were written. A failure leaves the day to be tried again.
    pub async fn close_if_due(&mut self, db: &Db, now: DateTime<Utc>) -> Result<usize> {
        let cutoff = now - self.grace;
        let day = cutoff.date_naive();
        if self.closed_day == Some(day) {
            return Ok(0);
        }
        let closed = close_periods(db, cutoff).await?;
        self.closed_day = Some(day);
        Ok(closed)
    }
}

/// Writes the billing_history rows of every period that ended at or before `now`; returns how
/// many rows were written by this call.
pub async fn close_periods(db: &Db, now: DateTime<Utc>) -> Result<usize> {
    let latest_key = BillingPeriod::containing(now, AnchorDay::CALENDAR_MONTH).key();
    let (open_summaries, subscriptions, plans, last_billed) = on_db!(db, pool => {
        let summaries: Vec<SummaryRow> = sqlx::query_as(
            "SELECT s.user_id, s.billing_period, s.total_calls, s.total_tokens, \
             s.total_cost_nanousd FROM usage_summaries s \
             LEFT JOIN billing_history b \
               ON b.user_id = s.user_id AND b.billing_period = s.billing_period \
             WHERE b.user_id IS NULL AND s.billing_period <= $1")
            .bind(&latest_key)
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing unbilled periods"))?;
        let subscriptions: Vec<SubscriptionRow> = sqlx::query_as(
            "SELECT user_id, plan_id, billing_cycle, anchor_day, status, created_at \
             FROM user_subscriptions")
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing subscriptions"))?;
        let plans: Vec<PlanRow> = sqlx::query_as(
            "SELECT id, name, price_monthly_nanousd, price_yearly_nanousd FROM subscription_plans")
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing plans"))?;
        let last_billed: Vec<(String, String)> = sqlx::query_as(
            "SELECT user_id, MAX(billing_period) FROM billing_history GROUP BY user_id")
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("listing billed periods"))?;
        (summaries, subscriptions, plans, last_billed)
    });
    let subscriptions: HashMap<String, SubscriptionRow> = subscriptions
        .into_iter()
        .map(|s| (s.user_id.clone(), s))
        .collect();
    let plans: HashMap<String, PlanRow> = plans.into_iter().map(|p| (p.id.clone(), p)).collect();
    let last_billed: HashMap<String, String> = last_billed.into_iter().collect();

    // (user, period key) → usage totals (zero for a subscription period without usage).
    let mut to_close: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for s in open_summaries {
        to_close.insert(
            (s.user_id, s.billing_period),
            (s.total_calls, s.total_tokens, s.total_cost_nanousd),
        );
    }
    for sub in subscriptions.values().filter(|s| s.status == "active") {
        let anchor = anchor_of(sub.anchor_day);
        let first = BillingPeriod::containing(sub.created_at, anchor);
        let last_ended = BillingPeriod::containing(now, anchor).previous();
        let mut p = last_ended;
        for _ in 0..MAX_PERIODS_BACK {
            if p < first || last_billed.get(&sub.user_id).is_some_and(|k| *k >= p.key()) {
                break;
            }
            to_close
                .entry((sub.user_id.clone(), p.key()))
                .or_insert((0, 0, 0));
            p = p.previous();
        }
    }

    let mut closed = 0;
    for ((user_id, key), (calls, tokens, usage_cost)) in to_close {
        let sub = subscriptions.get(&user_id);
        let anchor = sub.map_or(AnchorDay::CALENDAR_MONTH, |s| anchor_of(s.anchor_day));
        let Ok(period) = BillingPeriod::from_key(&key, anchor) else {
            continue;
        };
        if period.end() > now {
            continue;
        }
        let plan = sub.and_then(|s| plans.get(&s.plan_id));
        let base = match (sub, plan) {
            (Some(s), Some(p)) if s.billing_cycle == "yearly" => p.price_yearly_nanousd / 12,
            (Some(_), Some(p)) => p.price_monthly_nanousd,
            _ => 0,
        };
        let written = on_db!(db, pool => {
            let providers: Vec<ProviderRow> = sqlx::query_as(
                "SELECT provider, calls, tokens, cost_nanousd FROM usage_summary_providers \
                 WHERE user_id = $1 AND billing_period = $2 ORDER BY provider")
                .bind(&user_id)
                .bind(&key)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading provider usage for a bill"))?;
            let details: serde_json::Map<String, serde_json::Value> = providers
                .iter()
                .map(|p| (p.provider.clone(), json!({
                    "calls": from_db(p.calls),
                    "tokens": from_db(p.tokens),
                    "cost_nanousd": from_db(p.cost_nanousd),
                })))
                .collect();
            sqlx::query(
                "INSERT INTO billing_history (user_id, billing_period, period_start, period_end, \
                 plan_id, plan_name, base_cost_nanousd, usage_cost_nanousd, overage_cost_nanousd, \
                 total_cost_nanousd, total_calls, total_tokens, usage_details, payment_status, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $7, $9, $10, $11, \
                 'pending', $12) ON CONFLICT (user_id, billing_period) DO NOTHING")
                .bind(&user_id)
                .bind(&key)
                .bind(period.start())
                .bind(period.end())
                .bind(sub.map(|s| s.plan_id.clone()))
                .bind(plan.map(|p| p.name.clone()))
                .bind(base)
                .bind(usage_cost)
                .bind(calls)
                .bind(tokens)
                .bind(serde_json::Value::Object(details).to_string())
                .bind(now)
                .execute(pool)
                .await
                .map_err(LedgerError::db("writing billing history"))?
                .rows_affected()
        });
        closed += usize::try_from(written).unwrap_or(0);
    }
    Ok(closed)
}

fn anchor_of(day: i64) -> AnchorDay {
    u8::try_from(day)
        .ok()
        .and_then(|d| AnchorDay::new(d).ok())
        .unwrap_or_default()
}

/// A `billing_history` row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct BillingRecord {
    pub user_id: String,
    pub billing_period: String,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub plan_id: Option<String>,
    pub plan_name: Option<String>,
    pub base_cost_nanousd: i64,
    /// What the period's calls cost at provider prices (covered by the plan).
    pub usage_cost_nanousd: i64,
    pub overage_cost_nanousd: i64,
    /// What the user owes: base plus overage.
    pub total_cost_nanousd: i64,
    pub total_calls: i64,
    pub total_tokens: i64,
    /// JSON object: provider → {calls, tokens, cost_nanousd}.
    pub usage_details: String,
    pub payment_status: String,
    pub created_at: DateTime<Utc>,
}

/// A page of a user's billing history, newest period first, and how many rows they have in all.
pub async fn billing_history_page(
    db: &Db,
    user_id: &str,
    limit: u32,
    offset: u64,
) -> Result<(Vec<BillingRecord>, u64)> {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    let (total, rows) = on_db!(db, pool => {
        let (total,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM billing_history WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(pool)
            .await
            .map_err(LedgerError::db("counting billing history"))?;
        let rows: Vec<BillingRecord> = sqlx::query_as(
            "SELECT user_id, billing_period, period_start, period_end, plan_id, plan_name, \
             base_cost_nanousd, usage_cost_nanousd, overage_cost_nanousd, total_cost_nanousd, \
             total_calls, total_tokens, usage_details, payment_status, created_at \
             FROM billing_history WHERE user_id = $1 \
             ORDER BY billing_period DESC LIMIT $2 OFFSET $3")
            .bind(user_id)
            .bind(i64::from(limit))
            .bind(offset)
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("reading billing history"))?;
        (total, rows)
    });
    Ok((rows, from_db(total)))
}

/// The billing history of a user, oldest first.
pub async fn billing_history(db: &Db, user_id: &str) -> Result<Vec<BillingRecord>> {
    Ok(on_db!(db, pool => sqlx::query_as(
        "SELECT user_id, billing_period, period_start, period_end, plan_id, plan_name, \
         base_cost_nanousd, usage_cost_nanousd, overage_cost_nanousd, total_cost_nanousd, \
         total_calls, total_tokens, usage_details, payment_status, created_at \
         FROM billing_history WHERE user_id = $1 ORDER BY billing_period")
        .bind(user_id)
        .fetch_all(pool)
        .await
        .map_err(LedgerError::db("reading billing history"))?))
}
