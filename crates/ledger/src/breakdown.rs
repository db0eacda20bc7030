//! Usage per model in a billing period, for one user or for everyone: what the dashboard's
//! "spend by model" and the operators' "top models" show; and everyone's refused calls per
//! provider and reason, what the operators' traffic table shows. Read from `api_usage_logs`,
//! since the summaries keep providers but not models, and refused calls not at all.

use tollgate_domain::Provider;

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::event::from_db;
use crate::queries::joined;

/// The calls of one model in a period.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ModelSpend {
    pub provider: Provider,
    pub model: String,
    pub calls: u64,
    pub tokens: u64,
    pub cost_nanousd: u64,
    pub error_calls: u64,
}

type Row = (String, String, i64, i64, i64, i64, i64, i64);

/// The calls the gateway refused in a period through one provider's route, for one reason.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RefusalCount {
    pub provider: Provider,
    /// The refusal's code (`UsageEvent::refusal_reason`).
    pub reason: String,
    pub calls: u64,
}

impl Ledger {
    /// Every model used in the period keyed `period` (by `user_id`, or by anyone), costliest
    /// first. Rows of a provider this build does not know are left out.
    pub async fn model_spend(
        &self,
        user_id: Option<&str>,
        period: &str,
    ) -> Result<Vec<ModelSpend>> {
        // Sums in halves, as `daily_series` does, so that no SUM can overflow a BIGINT.
        let rows: Vec<Row> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT provider, model, COUNT(*), \
                 CAST(SUM(total_tokens / 4294967296) AS BIGINT), \
                 CAST(SUM(total_tokens % 4294967296) AS BIGINT), \
                 CAST(SUM(cost_total_nanousd / 4294967296) AS BIGINT), \
                 CAST(SUM(cost_total_nanousd % 4294967296) AS BIGINT), \
                 CAST(SUM(CASE WHEN status_code >= 400 OR error_message IS NOT NULL \
                          THEN 1 ELSE 0 END) AS BIGINT) \
                 FROM api_usage_logs WHERE billing_period = $1 AND refusal_reason IS NULL \
                 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) GROUP BY provider, model")
                .bind(period)
                .bind(user_id)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("reading usage per model"))?
        });
        let mut models: Vec<ModelSpend> = rows
            .into_iter()
            .filter_map(|(provider, model, calls, th, tl, ch, cl, errors)| {
                Some(ModelSpend {
                    provider: provider.parse().ok()?,
                    model,
                    calls: from_db(calls),
                    tokens: from_db(joined(th, tl)),
                    cost_nanousd: from_db(joined(ch, cl)),
                    error_calls: from_db(errors),
                })
            })
            .collect();
        models.sort_by(|a, b| {
            b.cost_nanousd
                .cmp(&a.cost_nanousd)
                .then(b.calls.cmp(&a.calls))
                .then_with(|| a.model.cmp(&b.model))
        });
        Ok(models)
    }

    /// Everyone's refused calls in the period keyed `period`, by provider and reason, in that
    /// order: one grouped read, so that every instance answers the same numbers. Rows of a
    /// provider this build does not know are left out.
    pub async fn refusals(&self, period: &str) -> Result<Vec<RefusalCount>> {
        let rows: Vec<(String, String, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT provider, refusal_reason, COUNT(*) FROM api_usage_logs \
                 WHERE billing_period = $1 AND refusal_reason IS NOT NULL \
                 GROUP BY provider, refusal_reason")
                .bind(period)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("counting refused calls by provider"))?
        });
        let mut refusals: Vec<RefusalCount> = rows
            .into_iter()
            .filter_map(|(provider, reason, calls)| {
                Some(RefusalCount {
                    provider: provider.parse().ok()?,
                    reason,
                    calls: from_db(calls),
                })
            })
            .collect();
        refusals.sort_by(|a, b| (a.provider, &a.reason).cmp(&(b.provider, &b.reason)));
        Ok(refusals)
    }
}
