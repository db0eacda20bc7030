//! A user's data out (GDPR access and portability): one JSON document holding every row the
//! ledger keeps about the user, written as it is read.
//!
//! The document is an object with `format`, `user_id` and `exported_at`, then one array per
//! table (`users`, `user_subscriptions`, `api_keys`, `usage_summaries`,
//! `usage_summary_providers`, `usage_alerts`, `billing_history`, `job_credits`,
//! `api_usage_logs`), each row as its columns. Key hashes are left out: a key appears by its id,
//! prefix, name, dates and rules. The usage log comes last and is read 1,000 rows a query, each
//! page written out before the next is read, so a user with millions of calls is exported in
//! bounded memory (`docs/privacy.md` describes the document).

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

/// The `format` of the export document; a change to its shape gets a new one.
pub const EXPORT_FORMAT: &str = "tollgate.user-export.v1";

/// Credits of an asynchronous job billed to the user so far (Firecrawl crawls and batches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct JobCredits {
    pub user_id: String,
    pub provider: String,
    pub job_id: String,
    pub billed: i64,
    pub previous: i64,
}

#[derive(Serialize)]
struct Header<'a> {
    format: &'a str,
    user_id: &'a str,
    exported_at: chrono::DateTime<chrono::Utc>,
}

/// Writes the document piece by piece: the header, then each table as an array.
struct Document<'w, W> {
    out: &'w mut W,
    rows: u64,
}

impl<W: AsyncWrite + Unpin> Document<'_, W> {
    async fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes).await.map_err(LedgerError::Export)
    }

    async fn open_table(&mut self, table: &str) -> Result<()> {
        self.write(format!(",\n\"{table}\":[").as_bytes()).await
    }

    /// Writes `rows` into the array opened last; `first` says whether the array is still
    /// empty.
    async fn rows<T: Serialize>(&mut self, rows: &[T], first: &mut bool) -> Result<()> {
        let mut text = Vec::new();
        for row in rows {
            text.extend_from_slice(if *first { b"\n" } else { b",\n" });
            serde_json::to_writer(&mut text, row)?;
            *first = false;
        }
        self.rows += rows.len() as u64;
        self.write(&text).await
    }

    async fn table<T: Serialize>(&mut self, table: &str, rows: &[T]) -> Result<()> {
        self.open_table(table).await?;
        self.rows(rows, &mut true).await?;
        self.write(b"]").await
    }
}

impl Ledger {
    /// Writes everything the ledger holds about `user_id` to `out` as one JSON document (see
    /// the module's documentation); returns the number of rows written. A user the ledger
    /// knows nothing of gives a document with every array empty.
    pub async fn export_user<W>(&self, user_id: &str, out: &mut W) -> Result<u64>
    where
        W: AsyncWrite + Unpin,
    {
        let (users, subs, keys, summaries, providers, alerts, bills, jobs) = on_db!(&self.db, pool => {
            let users: Vec<User> = sqlx::query_as(
                "SELECT id, display_name, email, created_at, disabled_at FROM users WHERE id = $1")
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting users"))?;
            let subs: Vec<Subscription> = sqlx::query_as(&format!(
                "SELECT {SUBSCRIPTION_COLUMNS} FROM user_subscriptions WHERE user_id = $1"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting subscriptions"))?;
            let keys: Vec<ApiKey> = sqlx::query_as(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at"))
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting API keys"))?;
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
            let jobs: Vec<JobCredits> = sqlx::query_as(
                "SELECT user_id, provider, job_id, billed, previous FROM job_credits \
                 WHERE user_id = $1 ORDER BY provider, job_id")
                .bind(user_id).fetch_all(pool).await
                .map_err(LedgerError::db("exporting job credits"))?;
            (users, subs, keys, summaries, providers, alerts, bills, jobs)
        });
        // Personal columns sealed on PostgreSQL are opened: the export is the user's to read.
        let users = users
            .into_iter()
            .map(|u| self.opened(u))
            .collect::<Result<Vec<_>>>()?;
        let mut doc = Document {
            out: &mut *out,
            rows: 0,
        };
        let header = serde_json::to_string(&Header {
            format: EXPORT_FORMAT,
            user_id,
            exported_at: chrono::Utc::now(),
        })?;
        // The header's closing brace is left off: the tables follow as more members.
        doc.write(header.trim_end_matches('}').as_bytes()).await?;
        doc.table("users", &users).await?;
        doc.table("user_subscriptions", &subs).await?;
        doc.table("api_keys", &keys).await?;
        doc.table("usage_summaries", &summaries).await?;
        doc.table("usage_summary_providers", &providers).await?;
        doc.table("usage_alerts", &alerts).await?;
        doc.table("billing_history", &bills).await?;
        doc.table("job_credits", &jobs).await?;

        // Usage logs can be many: page through them by id, writing each page out.
        doc.open_table("api_usage_logs").await?;
        let mut first = true;
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
            doc.rows(&page, &mut first).await?;
        }
        doc.write(b"]\n}\n").await?;
        let rows = doc.rows;
        out.flush().await.map_err(LedgerError::Export)?;
        Ok(rows)
    }
}
