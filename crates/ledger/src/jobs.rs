//! Asynchronous jobs whose status responses report their credits cumulatively (Firecrawl's
//! crawls and batch scrapes): each status poll is billed for the increase only, exactly once
//! over any number of polls and gateway instances.

use tollgate_domain::Provider;

use crate::Ledger;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::event::to_db;

impl Ledger {
    /// Records that job `job_id` of `user_id` at `provider` has used `reported` units so far, and
    /// answers how many of them no earlier call billed: `reported` the first time, the increase
    /// over the highest value seen since, 0 when it is not higher. One statement, so concurrent
    /// polls of the same job (from any instance) split the increase and never bill it twice.
    pub async fn unbilled_job_units(
        &self,
        user_id: &str,
        provider: Provider,
        job_id: &str,
        reported: u64,
    ) -> Result<u64> {
        let increase: Option<(i64,)> = on_db!(&self.db, pool => sqlx::query_as(
            "INSERT INTO job_credits (user_id, provider, job_id, billed, previous)
             VALUES ($1, $2, $3, $4, 0)
             ON CONFLICT (user_id, provider, job_id) DO UPDATE
                SET previous = job_credits.billed, billed = excluded.billed
                WHERE job_credits.billed < excluded.billed
             RETURNING billed - previous")
            .bind(user_id)
            .bind(provider.as_str())
            .bind(job_id)
            .bind(to_db(reported))
            .fetch_optional(pool)
            .await
            .map_err(LedgerError::db("recording a job's credits"))?);
        Ok(increase.map_or(0, |(n,)| u64::try_from(n).unwrap_or(0)))
    }
}
