//! Retention of the usage log: rows of `api_usage_logs` older than `retain_usage_logs_months`
//! deleted in small batches, off the request path.
//!
//! A row goes once its billing period (`YYYY-MM`, the month the period starts in) is more than
//! N months before the current calendar month: with N = 3, on any day of December 2026, the
//! periods up to 2026-08. A user's current period starts in this month or the previous one
//! (an anchor day after today's), so every user keeps the current period and the N-1 before
//! it, whatever the anchor day, and a call being recorded now is never in a period that goes.
//!
//! Only log rows go: `usage_summaries`, the per-provider summaries and `billing_history` stay,
//! so a period's totals and bill are still answered after its rows are gone. Like
//! [`crate::billing::PeriodCloser`], no scheduler: the [`RetentionSweeper`] task beside the
//! writer sweeps at start and then every [`SWEEP_INTERVAL`]. Each statement deletes at most
//! [`BATCH_ROWS`] rows, with a pause between statements, so a sweep never holds a long lock
//! against the writer's batches.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tollgate_domain::{AnchorDay, BillingPeriod};
use tracing::{info, warn};

use crate::db::{Db, on_db};
use crate::error::{LedgerError, Result};
use crate::metrics::{Counters, add};

/// Rows deleted by one statement.
pub(crate) const BATCH_ROWS: i64 = 1_000;
/// The pause between two statements of a sweep, which lets the writer's batches in.
const BATCH_PAUSE: Duration = Duration::from_millis(50);
/// How often the task sweeps after the one at start.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// What one sweep did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSweep {
    /// Rows of periods before it were deleted (`YYYY-MM`).
    pub cutoff_period: String,
    pub deleted: u64,
    /// Statements that deleted rows, each at most 1,000.
    pub batches: u64,
    pub duration: Duration,
}

/// The first period kept at `now`: the calendar month `retain_months` before the current one.
pub fn cutoff_period(now: DateTime<Utc>, retain_months: NonZeroU32) -> BillingPeriod {
    let mut period = BillingPeriod::containing(now, AnchorDay::CALENDAR_MONTH);
    for _ in 0..retain_months.get() {
        period = period.previous();
    }
    period
}

/// Deletes the log rows whose billing period is before `cutoff_period(now, retain_months)`,
/// [`BATCH_ROWS`] per statement with [`BATCH_PAUSE`] between statements.
pub(crate) async fn sweep(
    db: &Db,
    now: DateTime<Utc>,
    retain_months: NonZeroU32,
) -> Result<RetentionSweep> {
    let started = Instant::now();
    let cutoff = cutoff_period(now, retain_months).key();
    let (mut deleted, mut batches) = (0, 0);
    // Rows are visited in id order from the last one deleted, so that each statement reads on
    // from where the previous stopped instead of from the start of the table.
    let mut after_id = 0_i64;
    loop {
        let ids: Vec<(i64,)> = on_db!(db, pool => sqlx::query_as(
            "DELETE FROM api_usage_logs WHERE id IN (\
               SELECT id FROM api_usage_logs WHERE id > $1 AND billing_period < $2 \
               ORDER BY id LIMIT $3) \
             RETURNING id")
            .bind(after_id)
            .bind(&cutoff)
            .bind(BATCH_ROWS)
            .fetch_all(pool)
            .await
            .map_err(LedgerError::db("deleting usage log rows past retention"))?);
        let Some(last) = ids.iter().map(|(id,)| *id).max() else {
            break;
        };
        after_id = last;
        deleted += ids.len() as u64;
        batches += 1;
        if (ids.len() as i64) < BATCH_ROWS {
            break;
        }
        tokio::time::sleep(BATCH_PAUSE).await;
    }
    Ok(RetentionSweep {
        cutoff_period: cutoff,
        deleted,
        batches,
        duration: started.elapsed(),
    })
}

/// The task that sweeps at start and every [`SWEEP_INTERVAL`] until the ledger shuts down.
pub(crate) struct RetentionSweeper {
    pub db: Db,
    pub retain_months: NonZeroU32,
    pub counters: Arc<Counters>,
    /// Turns true (or is dropped) when the ledger shuts down.
    pub stop: watch::Receiver<bool>,
}

impl RetentionSweeper {
    pub async fn run(self) {
        let mut stop = self.stop.clone();
        loop {
            // A sweep stopped at shutdown loses nothing: each statement is a transaction, and
            // the next start sweeps the rest.
            tokio::select! {
                () = self.sweep_once() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            tokio::select! {
                () = tokio::time::sleep(SWEEP_INTERVAL) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    }

    async fn sweep_once(&self) {
        match sweep(&self.db, Utc::now(), self.retain_months).await {
            Ok(done) => {
                add(&self.counters.retention_sweeps, 1);
                add(&self.counters.usage_logs_deleted, done.deleted);
                info!(
                    deleted = done.deleted,
                    cutoff_period = %done.cutoff_period,
                    duration_ms = u64::try_from(done.duration.as_millis()).unwrap_or(u64::MAX),
                    "usage log retention sweep"
                );
            }
            // The database may be away (its batches go to the spool meanwhile): the next sweep
            // deletes what this one could not.
            Err(e) => warn!(error = %e, "usage log retention sweep failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn months(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    #[test]
    fn the_cutoff_is_n_calendar_months_before_the_current_one() {
        let dec = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
        assert_eq!(cutoff_period(dec, months(1)).key(), "2026-11");
        assert_eq!(cutoff_period(dec, months(3)).key(), "2026-09");
        assert_eq!(cutoff_period(dec, months(12)).key(), "2025-12");
        let jan_first = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(cutoff_period(jan_first, months(1)).key(), "2026-12");
    }

    #[test]
    fn every_anchor_keeps_its_current_period_and_the_ones_before_it() {
        let now = Utc.with_ymd_and_hms(2026, 12, 6, 10, 0, 0).unwrap();
        for n in 1..=4 {
            let cutoff = cutoff_period(now, months(n));
            for day in 1..=31 {
                let anchor = AnchorDay::new(day).unwrap();
                let mut kept = BillingPeriod::containing(now, anchor);
                for _ in 0..n {
                    assert!(
                        kept.key() >= cutoff.key(),
                        "anchor {day}, {n} months: {kept} goes"
                    );
                    kept = kept.previous();
                }
            }
        }
    }
}
