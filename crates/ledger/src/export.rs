//! A user's data out (JSON lines) and erased (GDPR).

use std::collections::BTreeMap;

use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::Ledger;
use crate::accounts::{
    ALERT_COLUMNS, Alert, ApiKey, KEY_COLUMNS, SUBSCRIPTION_COLUMNS, Subscription, User,
};
use crate::billing::BillingRecord;
use crate::db::on_db;
use crate::error::{LedgerError, Result};
use crate::queries::{
    LOG_COLUMNS, PROVIDER_COLUMNS, ProviderRow, SUMMARY_COLUMNS, SummaryRow, UsageLog,
};

/// Usage log rows read per query while exporting.
const EXPORT_PAGE: i64 = 1_000;

/// The tables holding a user's rows, children first (the order erasing goes in).
const USER_TABLES: [&str; 8] = [
    "api_usage_logs",
    "usage_summary_providers",
    "usage_summaries",
    "usage_alerts",
    "billing_history",
    "api_keys",
    "user_subscriptions",
    "users",
];

#[derive(Serialize)]
struct Line<'a, T: Serialize> {
    table: &'a str,
    row: &'a T,
}

async fn write_rows<W, T>(out: &mut W, table: &str, rows: &[T]) -> Result<u64>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    for row in rows {
        let mut line = serde_json::to_vec(&Line { table, row })?;
        line.push(b'\n');
        out.write_all(&line).await.map_err(LedgerError::Export)?;
    }
    Ok(rows.len() as u64)
}

impl Ledger {
    /// Writes every row the ledger holds about `user_id` to `out`, one JSON object a line:
    /// `{"table": "...", "row": {...}}`. Key hashes are left out. Returns the number of lines.
    pub async fn export_user<W>(&self, user_id: &str, out: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin,
    {
        let mut lines = 0;
        let (users, keys, subs, summaries, providers, alerts, bills) = on_db!(&self.db, pool => {
            let users: Vec<User> = sqlx::query_as(
                "SELECT id, display_name, email, created_at, disabled_at FROM users WHERE id = $1")
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting users"))?;
            let keys: Vec<ApiKey> = sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting API keys"))?;
            let subs: Vec<Subscription> = sqlx::query_as(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM user_subscriptions WHERE user_id = $1"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting subscriptions"))?;
            let summaries: Vec<SummaryRow> = sqlx::query_as(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM usage_summaries WHERE user_id = $1 \
                 ORDER BY billing_period"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting usage summaries"))?;
            let providers: Vec<ProviderRow> = sqlx::query_as(&format!(
                "SELECT {PROVIDER_COLUMNS} FROM usage_summary_providers WHERE user_id = $1 \
                 ORDER BY billing_period, provider"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting provider summaries"))?;
            let alerts: Vec<Alert> = sqlx::query_as(&format!(
                "SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE user_id = $1 ORDER BY id"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting alerts"))?;
            let bills: Vec<BillingRecord> = sqlx::query_as(
                "SELECT user_id, billing_period, period_start, period_end, plan_id, plan_name, \
                 base_cost_nanousd, usage_cost_nanousd, overage_cost_nanousd, total_cost_nanousd, \
                 total_calls, total_tokens, usage_details, payment_status, created_at \
                 FROM billing_history WHERE user_id = $1 ORDER BY billing_period")
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting billing history"))?;
            (users, keys, subs, summaries, providers, alerts, bills)
        });
        let users = users
            .into_iter()
            .map(|u| self.opened(u))
            .collect::<Result<Vec<_>>>()?;
        lines += write_rows(out, "users", &users).await?;
        lines += write_rows(out, "api_keys", &keys).await?;
        lines += write_rows(out, "user_subscriptions", &subs).await?;
        lines += write_rows(out, "usage_summaries", &summaries).await?;
        lines += write_rows(out, "usage_summary_providers", &providers).await?;
        lines += write_rows(out, "usage_alerts", &alerts).await?;
        lines += write_rows(out, "billing_history", &bills).await?;

        // Usage logs can be many: page through them by id.
        let mut after = 0i64;
        loop {
            let page: Vec<UsageLog> = on_db!(&self.db, pool => sqlx::query_as(&format!(
                "SELECT {LOG_COLUMNS} FROM api_usage_logs WHERE user_id = $1 AND id > $2 \
                 ORDER BY id LIMIT $3"))
                .bind(user_id)
                .bind(after)
                .bind(EXPORT_PAGE)
                .fetch_all(pool)
                .await
                .map_err(LedgerError::db("exporting usage logs"))?);
            let Some(last) = page.last() else { break };
            after = last.id;
            lines += write_rows(out, "api_usage_logs", &page).await?;
        }
        out.flush().await.map_err(LedgerError::Export)?;
        Ok(lines)
    }

    /// Deletes every row about `user_id`, in one transaction; returns rows deleted per table.
    /// Events of the user still queued or spooled are written afterwards: stop the user's keys
    /// first (revoke them) and erase once the queue has been flushed.
    pub async fn erase_user(&self, user_id: &str) -> Result<BTreeMap<&'static str, u64>> {
        let mut deleted = BTreeMap::new();
        on_db!(&self.db, pool => {
            let mut tx = pool.begin().await.map_err(LedgerError::db("beginning an erase"))?;
            for table in USER_TABLES {
                let column = if table == "users" { "id" } else { "user_id" };
                let done = sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await
                    .map_err(LedgerError::db("erasing a user"))?;
                deleted.insert(table, done.rows_affected());
            }
            tx.commit().await.map_err(LedgerError::db("committing an erase"))?;
        });
        Ok(deleted)
    }
}
