//! Tollgate's ledger: every metered call recorded once, in batches, in SQLite or PostgreSQL.
//!
//! The gateway hands each call's [`UsageEvent`] to a [`LedgerHandle`], which puts it on a
//! bounded queue without I/O on the caller's thread. A background task writes the events in
//! batches; each batch inserts its log rows and adds them to the per-(user, period) summaries in
//! one transaction, idempotently on the event id. While the database is unreachable batches go
//! to an on-disk spool and are replayed in order when it is back; events that meet a full queue
//! go to the spool through a task of their own, or wait, or are dropped (`on_full`). The read side ([`Ledger`]) answers the admin API: usage of a period with its
//! provider breakdown, trends, daily series, logs, alerts, export and erasure. See
//! `docs/ledger.md` for the guarantees, including what a SIGKILL can lose.

mod accounts;
mod alerts;
mod backoff;
mod batcher;
mod billing;
mod breakdown;
mod config;
mod db;
mod encryption;
mod erase;
mod error;
mod event;
mod export;
mod jobs;
mod metrics;
mod models;
mod overflow;
mod personal;
mod queries;
mod queue;
mod rekey;
mod retention;
mod spool;
mod store;
mod writer;

#[cfg(feature = "test-support")]
pub mod test_database;
#[cfg(test)]
mod testing;

pub use accounts::{
    Alert, ApiKey, NewAlert, NewApiKey, NewSubscription, PlanRecord, StoredRules, Subscription,
    User,
};
pub use alerts::ClaimedAlert;
pub use billing::BillingRecord;
pub use breakdown::{ModelSpend, RefusalCount};
pub use config::{Durability, LedgerConfig, OnFull, OnSpoolFull, SqliteSync};
pub use db::{Db, DbOptions, migrate, migrate_with_key};
pub use encryption::LedgerKey;
pub use erase::Erasure;
pub use error::{LedgerError, Result};
pub use event::UsageEvent;
pub use export::{EXPORT_FORMAT, JobCredits};
pub use metrics::LedgerMetrics;
pub use models::ModelUsage;
pub use queries::{
    DailyUsage, KeyUsage, LogFilter, LogPage, PeriodUsage, ProviderUsage, UsageLog, UsageTotals,
};
pub use queue::LedgerHandle;
pub use rekey::{RekeyReport, rekey};
pub use retention::{RetentionSweep, cutoff_period};
pub use store::BatchOutcome;

use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::warn;

/// The read side of the ledger (queries, accounts, alerts). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    db: Db,
    /// How `users`' personal columns are stored (sealed on PostgreSQL with a key).
    columns: personal::Columns,
}

impl Ledger {
    /// Connects, applies migrations, opens the spool and starts the writer and the overflow
    /// task on the current runtime. With PostgreSQL
    /// unreachable the ledger still starts: events go to the spool and migrations are applied
    /// before the first write that reaches the database.
    ///
    /// With `config.key`, a key other than the one the database and the spool were written
    /// with, or none for an encrypted ledger, is refused here ([`LedgerError::KeyMismatch`]);
    /// on PostgreSQL, when the database is reachable at start.
    pub async fn open(config: LedgerConfig) -> Result<(Ledger, LedgerHandle)> {
        // The spool first: a key its frames refuse must stop the start before the database
        // records anything about the key.
        let spool = writer::open_spool(&config)?;
        let db = Db::connect(
            &config.database_url,
            DbOptions {
                timeout: Duration::from_millis(config.db_timeout_ms),
                max_connections: config.max_connections,
                sqlite_sync: config.sqlite_sync,
                key: config.key.clone(),
            },
        )
        .await?;
        let migrated = match db.migrate().await {
            Ok(()) => true,
            Err(e) if matches!(db, Db::Postgres(_)) => {
                warn!(error = %e, "ledger database unreachable at start; spooling until it is back");
                false
            }
            Err(e) => return Err(e),
        };
        if migrated {
            personal::check_key(&db, config.key.as_ref()).await?;
        }
        let handle = writer::start(db.clone(), spool, &config, migrated)?;
        let columns = personal::Columns::new(&db, config.key.as_ref());
        Ok((Ledger { db, columns }, handle))
    }

    /// The read side alone (no writer): connects, applies migrations and checks the key.
    pub async fn connect(database_url: &str, options: DbOptions) -> Result<Ledger> {
        let key = options.key.clone();
        let db = Db::connect(database_url, options).await?;
        db.migrate().await?;
        personal::check_key(&db, key.as_ref()).await?;
        let columns = personal::Columns::new(&db, key.as_ref());
        Ok(Ledger { db, columns })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Writes a batch directly, bypassing the queue (tools and tests; the gateway records).
    pub async fn insert_batch(&self, events: &[UsageEvent]) -> Result<BatchOutcome> {
        store::insert_batch(&self.db, events).await
    }

    /// Writes billing_history rows for every period that ended at or before `now`, once each;
    /// returns how many this call wrote. The writer calls it by itself at start and on the first
    /// flush of each UTC day, a grace period after the boundary (`docs/ledger.md`).
    pub async fn close_periods(&self, now: DateTime<Utc>) -> Result<usize> {
        billing::close_periods(&self.db, now).await
    }

    /// Deletes the usage log rows of periods more than `retain_months` months before the
    /// current month at `now`, in batches; summaries and bills stay. The ledger does so by
    /// itself at start and hourly when `retain_usage_logs_months` is set (`docs/ledger.md`).
    pub async fn sweep_usage_logs(
        &self,
        now: DateTime<Utc>,
        retain_months: NonZeroU32,
    ) -> Result<RetentionSweep> {
        retention::sweep(&self.db, now, retain_months).await
    }

    pub async fn billing_history(&self, user_id: &str) -> Result<Vec<BillingRecord>> {
        billing::billing_history(&self.db, user_id).await
    }

    /// A page of the user's billing history, newest period first, with the number of rows in
    /// all.
    pub async fn billing_history_page(
        &self,
        user_id: &str,
        limit: u32,
        offset: u64,
    ) -> Result<(Vec<BillingRecord>, u64)> {
        billing::billing_history_page(&self.db, user_id, limit, offset).await
    }

    pub async fn close(&self) {
        self.db.close().await;
    }
}
