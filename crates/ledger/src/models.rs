//! A user's usage in one billing period per (provider, model), for the recommendations that
//! ask what a model cost and what another would have cost for the same tokens.

use serde::Serialize;
use tollgate_domain::{Provider, Usage};

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::event::from_db;

/// One model's share of a period: its calls, their usage summed, and what they cost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModelUsage {
    pub provider: Provider,
    /// The model as the calls named it.
    pub model: String,
    pub calls: u64,
    pub usage: Usage,
    pub cost_nanousd: u64,
}

type Row = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
);

impl Ledger {
    /// The period's usage per (provider, model), the costliest first. Rows of a provider this
    /// build does not know are left out.
    pub async fn model_usage(&self, user_id: &str, period: &str) -> Result<Vec<ModelUsage>> {
        // Cost is summed in two halves, as the daily series does, so that no SUM can overflow
        // a BIGINT; a user's token counts in one period stay far below it.
        let rows: Vec<Row> = on_db!(&self.db, pool => sqlx::query_as(
            "SELECT provider, model, COUNT(*), \
             CAST(SUM(input_tokens) AS BIGINT), \
             CAST(SUM(cached_input_tokens) AS BIGINT), \
             CAST(SUM(cache_creation_input_tokens) AS BIGINT), \
             CAST(SUM(cache_creation_1h_input_tokens) AS BIGINT), \
             CAST(SUM(output_tokens) AS BIGINT), \
             CAST(SUM(reasoning_tokens) AS BIGINT), \
             CAST(SUM(units) AS BIGINT), \
             CAST(SUM(cost_total_nanousd / 4294967296) AS BIGINT), \
             CAST(SUM(cost_total_nanousd % 4294967296) AS BIGINT) \
             FROM api_usage_logs WHERE user_id = $1 AND billing_period = $2 AND refusal_reason IS NULL \
             GROUP BY provider, model")
            .bind(user_id)
            .bind(period)
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("reading the period's usage per model"))?);
        let mut models: Vec<ModelUsage> = rows
            .into_iter()
            .filter_map(
                |(
                    provider,
                    model,
                    calls,
                    input,
                    cached,
                    write,
                    write_1h,
                    output,
                    reasoning,
                    units,
                    cost_high,
                    cost_low,
                )| {
                    let cost = (i128::from(cost_high) << 32) + i128::from(cost_low);
                    Some(ModelUsage {
                        provider: provider.parse().ok()?,
                        model,
                        calls: from_db(calls),
                        usage: Usage {
                            input_tokens: from_db(input),
                            cached_input_tokens: from_db(cached),
                            cache_creation_input_tokens: from_db(write),
                            cache_creation_1h_input_tokens: from_db(write_1h),
                            output_tokens: from_db(output),
                            reasoning_tokens: from_db(reasoning),
                            units: from_db(units),
                            reported_cost_nanousd: None,
                        },
                        cost_nanousd: u64::try_from(cost.max(0)).unwrap_or(u64::MAX),
                    })
                },
            )
            .collect();
        models.sort_by(|a, b| {
            b.cost_nanousd
                .cmp(&a.cost_nanousd)
                .then_with(|| a.model.cmp(&b.model))
        });
        Ok(models)
    }
}
