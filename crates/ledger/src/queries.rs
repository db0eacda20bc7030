//! The read side: per-period usage with its provider breakdown, trends, daily series, usage log
//! pages and the totals that rebuild the counters.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::QueryBuilder;
use tollgate_domain::{BillingPeriod, LimitKey, Provider};

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::event::from_db;

/// Appends `AND …` conditions for a [`LogFilter`] to a query builder of either backend.
macro_rules! push_log_filter {
    ($qb:ident, $f:expr) => {{
        let f: &LogFilter = $f;
        if let Some(v) = &f.user_id {
            $qb.push(" AND user_id = ").push_bind(v.clone());
        }
        if let Some(v) = &f.key_id {
            $qb.push(" AND key_id = ").push_bind(v.clone());
        }
        if let Some(v) = f.provider {
            $qb.push(" AND provider = ").push_bind(v.as_str());
        }
        if let Some(v) = &f.model {
            $qb.push(" AND model = ").push_bind(v.clone());
        }
        if let Some(v) = &f.billing_period {
            $qb.push(" AND billing_period = ").push_bind(v.clone());
        }
        if let Some(v) = f.status_code {
            $qb.push(" AND status_code = ").push_bind(i64::from(v));
        }
        if f.errors_only {
            $qb.push(" AND (status_code >= 400 OR error_message IS NOT NULL)");
        }
        match f.refused {
            Some(true) => {
                $qb.push(" AND refusal_reason IS NOT NULL");
            }
            Some(false) => {
                $qb.push(" AND refusal_reason IS NULL");
            }
            None => {}
        }
        if f.successes_only {
            $qb.push(" AND status_code < 400 AND error_message IS NULL");
        }
        if let Some(v) = f.from {
            $qb.push(" AND occurred_at >= ").push_bind(v);
        }
        if let Some(v) = f.to {
            $qb.push(" AND occurred_at < ").push_bind(v);
        }
    }};
}

/// Usage summed over a set of calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotals {
    pub calls: u64,
    pub tokens: u64,
    pub input_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub output_tokens: u64,
    pub reasoning_tokens: u64,
    pub units: u64,
    pub cost_nanousd: u64,
    pub error_calls: u64,
    pub estimated_calls: u64,
    pub latency_ms_sum: u64,
}

/// One provider's share of a period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProviderUsage {
    pub calls: u64,
    pub tokens: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub units: u64,
    pub cost_nanousd: u64,
    pub error_calls: u64,
    pub latency_ms_sum: u64,
}

/// A user's usage in one billing period. `per_provider` lists all nine providers, at zero
/// where unused; `updated_at` is `None` when the period has no usage at all.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeriodUsage {
    pub user_id: String,
    pub billing_period: String,
    pub totals: UsageTotals,
    pub per_provider: BTreeMap<Provider, ProviderUsage>,
    pub avg_latency_ms: f64,
    /// Failed calls as a percentage (0 to 100) of all calls.
    pub error_rate_pct: f64,
    pub updated_at: Option<DateTime<Utc>>,
}

impl PeriodUsage {
    /// A period without usage: every provider at zero.
    pub fn empty(user_id: &str, key: &str) -> PeriodUsage {
        empty_period(user_id, key)
    }

    /// The period's use per counter, in the shape the counter stores are seeded with: every
    /// provider's calls (and tokens, for token-billed providers), the plan-wide calls and
    /// tokens, and the cost. Calls are every recorded call, failed ones included, so a rebuilt
    /// counter may stand slightly above the live one (which counts only billed calls), never
    /// below.
    pub fn counter_totals(&self) -> Vec<(LimitKey, u64)> {
        let mut totals = Vec::with_capacity(2 * self.per_provider.len() + 3);
        for (provider, usage) in &self.per_provider {
            totals.push((LimitKey::ProviderCalls(*provider), usage.calls));
            if provider.is_token_billed() {
                totals.push((LimitKey::ProviderTokens(*provider), usage.tokens));
            }
        }
        totals.push((LimitKey::TotalCalls, self.totals.calls));
        totals.push((LimitKey::TotalTokens, self.totals.tokens));
        totals.push((LimitKey::Cost, self.totals.cost_nanousd));
        totals
    }
}

/// What one key used in a period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyUsage {
    pub key_id: String,
    pub calls: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
}

/// One day of a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DailyUsage {
    pub day: NaiveDate,
    pub calls: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
    pub error_calls: u64,
}

/// Which usage log rows to list. Every field narrows the selection; the default lists all.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    pub user_id: Option<String>,
    pub key_id: Option<String>,
    pub provider: Option<Provider>,
    pub model: Option<String>,
    pub billing_period: Option<String>,
    /// Only calls answered with this HTTP status.
    pub status_code: Option<u16>,
    /// Only calls that failed (status ≥ 400 or an error message).
    pub errors_only: bool,
    /// `Some(true)`: only calls the gateway refused; `Some(false)`: only calls it admitted;
    /// `None`: both.
    pub refused: Option<bool>,
    /// Only calls that succeeded (status < 400 and no error message).
    pub successes_only: bool,
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < to`.
    pub to: Option<DateTime<Utc>>,
}

/// One `api_usage_logs` row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct UsageLog {
    pub id: i64,
    pub event_id: String,
    pub user_id: String,
    pub key_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub endpoint: String,
    pub method: String,
    pub status_code: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub cache_creation_1h_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub total_tokens: i64,
    pub units: i64,
    pub reported_cost_nanousd: Option<i64>,
    pub cost_input_nanousd: i64,
    pub cost_output_nanousd: i64,
    pub cost_other_nanousd: i64,
    pub cost_total_nanousd: i64,
    pub price_version: String,
    pub estimated: bool,
    pub latency_ms: i64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub error_message: Option<String>,
    pub billing_period: String,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    /// The `x-request-id` the client was answered with (none on rows from before it was kept).
    pub request_id: Option<String>,
    /// The refusal's code when the gateway refused the call (`UsageEvent::refusal_reason`).
    pub refusal_reason: Option<String>,
}

/// A page of usage logs, newest first, with the number of rows the filter matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogPage {
    pub total: u64,
    pub rows: Vec<UsageLog>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct SummaryRow {
    pub user_id: String,
    pub billing_period: String,
    pub total_calls: i64,
    pub total_tokens: i64,
    pub input_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_creation_input_tokens: i64,
    pub output_tokens: i64,
    pub reasoning_tokens: i64,
    pub units: i64,
    pub total_cost_nanousd: i64,
    pub error_calls: i64,
    pub estimated_calls: i64,
    pub latency_ms_sum: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub(crate) struct ProviderRow {
    pub user_id: String,
    pub billing_period: String,
    pub provider: String,
    pub calls: i64,
    pub tokens: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub units: i64,
    pub cost_nanousd: i64,
    pub error_calls: i64,
    pub latency_ms_sum: i64,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const SUMMARY_COLUMNS: &str = "user_id, billing_period, total_calls, total_tokens, \
    input_tokens, cached_input_tokens, cache_creation_input_tokens, output_tokens, \
    reasoning_tokens, units, total_cost_nanousd, error_calls, estimated_calls, latency_ms_sum, \
    created_at, updated_at";
pub(crate) const PROVIDER_COLUMNS: &str = "user_id, billing_period, provider, calls, tokens, \
    input_tokens, output_tokens, units, cost_nanousd, error_calls, latency_ms_sum, updated_at";
pub(crate) const LOG_COLUMNS: &str = "id, event_id, user_id, key_id, provider, model, endpoint, \
    method, status_code, input_tokens, cached_input_tokens, cache_creation_input_tokens, \
    cache_creation_1h_input_tokens, output_tokens, reasoning_tokens, total_tokens, units, \
    reported_cost_nanousd, cost_input_nanousd, cost_output_nanousd, cost_other_nanousd, \
    cost_total_nanousd, price_version, estimated, latency_ms, request_bytes, response_bytes, \
    error_message, billing_period, occurred_at, recorded_at, request_id, refusal_reason";

fn empty_period(user_id: &str, key: &str) -> PeriodUsage {
    PeriodUsage {
        user_id: user_id.to_owned(),
        billing_period: key.to_owned(),
        totals: UsageTotals::default(),
        per_provider: Provider::ALL
            .into_iter()
            .map(|p| (p, ProviderUsage::default()))
            .collect(),
        avg_latency_ms: 0.0,
        error_rate_pct: 0.0,
        updated_at: None,
    }
}

fn apply_summary(usage: &mut PeriodUsage, s: &SummaryRow) {
    usage.totals = UsageTotals {
        calls: from_db(s.total_calls),
        tokens: from_db(s.total_tokens),
        input_tokens: from_db(s.input_tokens),
        cached_input_tokens: from_db(s.cached_input_tokens),
        cache_creation_input_tokens: from_db(s.cache_creation_input_tokens),
        output_tokens: from_db(s.output_tokens),
        reasoning_tokens: from_db(s.reasoning_tokens),
        units: from_db(s.units),
        cost_nanousd: from_db(s.total_cost_nanousd),
        error_calls: from_db(s.error_calls),
        estimated_calls: from_db(s.estimated_calls),
        latency_ms_sum: from_db(s.latency_ms_sum),
    };
    let calls = usage.totals.calls as f64;
    if calls > 0.0 {
        usage.avg_latency_ms = usage.totals.latency_ms_sum as f64 / calls;
        usage.error_rate_pct = usage.totals.error_calls as f64 * 100.0 / calls;
    }
    usage.updated_at = Some(s.updated_at);
}

fn apply_provider(usage: &mut PeriodUsage, p: &ProviderRow) {
    // A provider name the domain no longer knows is skipped rather than failing the page.
    let Ok(provider) = p.provider.parse::<Provider>() else {
        return;
    };
    usage.per_provider.insert(
        provider,
        ProviderUsage {
            calls: from_db(p.calls),
            tokens: from_db(p.tokens),
            input_tokens: from_db(p.input_tokens),
            output_tokens: from_db(p.output_tokens),
            units: from_db(p.units),
            cost_nanousd: from_db(p.cost_nanousd),
            error_calls: from_db(p.error_calls),
            latency_ms_sum: from_db(p.latency_ms_sum),
        },
    );
}

/// Groups summary and provider rows into one [`PeriodUsage`] per (user, period).
fn assemble(
    summaries: Vec<SummaryRow>,
    providers: Vec<ProviderRow>,
) -> BTreeMap<(String, String), PeriodUsage> {
    let mut out = BTreeMap::new();
    for s in &summaries {
        let usage = out
            .entry((s.user_id.clone(), s.billing_period.clone()))
            .or_insert_with(|| empty_period(&s.user_id, &s.billing_period));
        apply_summary(usage, s);
    }
    for p in &providers {
        let usage = out
            .entry((p.user_id.clone(), p.billing_period.clone()))
            .or_insert_with(|| empty_period(&p.user_id, &p.billing_period));
        apply_provider(usage, p);
    }
    out
}

impl Ledger {
    /// The user's usage in the period keyed `period` (`YYYY-MM`), zero if none.
    pub async fn usage_for_period(&self, user_id: &str, period: &str) -> Result<PeriodUsage> {
        let mut all = self.summaries_between(user_id, period, period).await?;
        Ok(all
            .remove(&(user_id.to_owned(), period.to_owned()))
            .unwrap_or_else(|| empty_period(user_id, period)))
    }

    /// What each of a user's keys used in a period, from the usage log (refusals count
    /// nothing): what rebuilds the counters of the keys' own budgets. Keys that used nothing
    /// are not listed.
    pub async fn key_usage_for_period(&self, user_id: &str, period: &str) -> Result<Vec<KeyUsage>> {
        let rows: Vec<(String, i64, i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT key_id, COUNT(*), CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT), \
                 CAST(COALESCE(SUM(cost_total_nanousd), 0) AS BIGINT) FROM api_usage_logs \
                 WHERE user_id = $1 AND billing_period = $2 AND refusal_reason IS NULL \
                 AND key_id IS NOT NULL GROUP BY key_id ORDER BY key_id")
                .bind(user_id)
                .bind(period)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading each key's usage"))?
        });
        Ok(rows
            .into_iter()
            .map(|(key_id, calls, tokens, cost)| KeyUsage {
                key_id,
                calls: from_db(calls),
                tokens: from_db(tokens),
                cost_nanousd: from_db(cost),
            })
            .collect())
    }

    /// One entry per period for the `months` periods ending with `end`, oldest first:
    /// consecutive calendar months, none skipped or repeated, zero where there was no usage.
    pub async fn monthly_trends(
        &self,
        user_id: &str,
        end: BillingPeriod,
        months: usize,
    ) -> Result<Vec<PeriodUsage>> {
        let periods = end.last_n(months);
        let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
            return Ok(Vec::new());
        };
        let mut found = self
            .summaries_between(user_id, &first.key(), &last.key())
            .await?;
        Ok(periods
            .iter()
            .map(|p| {
                found
                    .remove(&(user_id.to_owned(), p.key()))
                    .unwrap_or_else(|| empty_period(user_id, &p.key()))
            })
            .collect())
    }

    async fn summaries_between(
        &self,
        user_id: &str,
        first: &str,
        last: &str,
    ) -> Result<BTreeMap<(String, String), PeriodUsage>> {
        let (summaries, providers) = self
            .summary_rows(
                "user_id = $1 AND billing_period >= $2 AND billing_period <= $3",
                &[user_id, first, last],
                "reading usage summaries",
            )
            .await?;
        Ok(assemble(summaries, providers))
    }

    /// The summary rows matching `filter` (a condition on `user_id` and `billing_period`, its
    /// `$n` bound to `args` in order) and their per-provider rows, read in one snapshot: a batch
    /// committed between the two reads would otherwise be in the per-provider counts and not in
    /// the totals, and counters rebuilt from them would disagree with each other.
    async fn summary_rows(
        &self,
        filter: &str,
        args: &[&str],
        context: &'static str,
    ) -> Result<(Vec<SummaryRow>, Vec<ProviderRow>)> {
        let summaries_sql = format!("SELECT {SUMMARY_COLUMNS} FROM usage_summaries WHERE {filter}");
        let providers_sql =
            format!("SELECT {PROVIDER_COLUMNS} FROM usage_summary_providers WHERE {filter}");
        Ok(on_db!(&self.db, pool => {
            let mut tx = pool
                .begin_with(self.db.begin_snapshot())
                .await
                .map_err(LedgerError::db(context))?;
            let mut summaries = sqlx::query_as(&summaries_sql);
            let mut providers = sqlx::query_as(&providers_sql);
            for arg in args {
                summaries = summaries.bind(*arg);
                providers = providers.bind(*arg);
            }
            let summaries: Vec<SummaryRow> = summaries
                .fetch_all(&mut *tx)
                .await
                .map_err(LedgerError::db(context))?;
            let providers: Vec<ProviderRow> = providers
                .fetch_all(&mut *tx)
                .await
                .map_err(LedgerError::db(context))?;
            tx.commit().await.map_err(LedgerError::db(context))?;
            (summaries, providers)
        }))
    }

    /// Every day of `period` (from its start to its end, UTC), with the calls made that day.
    pub async fn daily_series(
        &self,
        user_id: &str,
        period: BillingPeriod,
    ) -> Result<Vec<DailyUsage>> {
        // Tokens and cost are summed in two halves (`x / 2^32` and `x % 2^32`), neither of which
        // can overflow a BIGINT over fewer than 2^31 rows, and joined in Rust with saturation: a
        // plain SUM of large values fails the query on both backends (SQLite's "integer
        // overflow", PostgreSQL's "bigint out of range" on the cast back).
        let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT occurred_day, COUNT(*), \
                 CAST(SUM(total_tokens / 4294967296) AS BIGINT), \
                 CAST(SUM(total_tokens % 4294967296) AS BIGINT), \
                 CAST(SUM(cost_total_nanousd / 4294967296) AS BIGINT), \
                 CAST(SUM(cost_total_nanousd % 4294967296) AS BIGINT), \
                 CAST(SUM(CASE WHEN status_code >= 400 OR error_message IS NOT NULL \
                          THEN 1 ELSE 0 END) AS BIGINT) \
                 FROM api_usage_logs WHERE user_id = $1 AND billing_period = $2 \
                 AND refusal_reason IS NULL GROUP BY occurred_day")
                .bind(user_id)
                .bind(period.key())
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading the daily series"))?
        });
        let mut by_day: BTreeMap<NaiveDate, DailyUsage> = BTreeMap::new();
        let mut day = period.start().date_naive();
        let end = period.end().date_naive();
        while day < end {
            by_day.insert(day, zero_day(day));
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        for (text, calls, tokens_high, tokens_low, cost_high, cost_low, errors) in rows {
            let (tokens, cost) = (joined(tokens_high, tokens_low), joined(cost_high, cost_low));
            let day = text
                .parse::<NaiveDate>()
                .map_err(|e| LedgerError::Corrupt {
                    column: "api_usage_logs.occurred_day",
                    detail: format!("{text:?}: {e}"),
                })?;
            // A call stamped outside its period's days (clock skew) still shows, on its day.
            let entry = by_day.entry(day).or_insert_with(|| zero_day(day));
            entry.calls += from_db(calls);
            entry.tokens += from_db(tokens);
            entry.cost_nanousd += from_db(cost);
            entry.error_calls += from_db(errors);
        }
        Ok(by_day.into_values().collect())
    }

    /// The calls the gateway refused the user in the period keyed `period`, by refusal code;
    /// empty when there were none. (Refusals are in no summary: they are counted from the log.)
    pub async fn refused_calls(
        &self,
        user_id: &str,
        period: &str,
    ) -> Result<BTreeMap<String, u64>> {
        let rows: Vec<(String, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT refusal_reason, COUNT(*) FROM api_usage_logs \
                 WHERE user_id = $1 AND billing_period = $2 AND refusal_reason IS NOT NULL \
                 GROUP BY refusal_reason")
                .bind(user_id)
                .bind(period)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("counting refused calls"))?
        });
        Ok(rows
            .into_iter()
            .map(|(reason, calls)| (reason, from_db(calls)))
            .collect())
    }

    /// A page of usage logs matching `filter`, newest first.
    pub async fn usage_logs(&self, filter: &LogFilter, limit: u32, offset: u64) -> Result<LogPage> {
        let limit = i64::from(limit);
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let (total, rows) = on_db!(&self.db, pool => {
            let mut count = QueryBuilder::new("SELECT COUNT(*) FROM api_usage_logs WHERE 1 = 1");
            push_log_filter!(count, filter);
            let (total,): (i64,) = count
                .build_query_as()
                .fetch_one(pool)
                .await
                .map_err(LedgerError::db("counting usage logs"))?;
            let mut page = QueryBuilder::new(format!(
                "SELECT {LOG_COLUMNS} FROM api_usage_logs WHERE 1 = 1"));
            push_log_filter!(page, filter);
            page.push(" ORDER BY occurred_at DESC, id DESC LIMIT ");
            page.push_bind(limit);
            page.push(" OFFSET ");
            page.push_bind(offset);
            let rows: Vec<UsageLog> = page
                .build_query_as()
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading usage logs"))?;
            (total, rows)
        });
        Ok(LogPage {
            total: from_db(total),
            rows,
        })
    }

    /// Every user's usage in the period keyed `period`, with the per-provider breakdown: what
    /// the counter store is rebuilt from.
    pub async fn current_period_totals(&self, period: &str) -> Result<Vec<PeriodUsage>> {
        let (summaries, providers) = self
            .summary_rows("billing_period = $1", &[period], "reading period totals")
            .await?;
        Ok(assemble(summaries, providers).into_values().collect())
    }
}

/// A sum read as its halves `Σ x / 2^32` and `Σ x % 2^32` (see `daily_series`), saturating at
/// `i64::MAX` as every amount the ledger stores does.
pub(crate) fn joined(high: i64, low: i64) -> i64 {
    let sum = (i128::from(high) << 32) + i128::from(low);
    i64::try_from(sum.max(0)).unwrap_or(i64::MAX)
}

fn zero_day(day: NaiveDate) -> DailyUsage {
    DailyUsage {
        day,
        calls: 0,
        tokens: 0,
        cost_nanousd: 0,
        error_calls: 0,
    }
}
