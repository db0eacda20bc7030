//! Retention of the usage log against both databases: old periods' rows deleted in batches,
//! their totals and bills kept, the sweep at start counted, and no current-period row lost to a
//! sweep running while calls are recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use tollgate_domain::{AnchorDay, BillingPeriod, Provider};
use tollgate_ledger::{Db, Ledger, UsageEvent};

fn months(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

/// A call of `user` in `period`, on the period's 10th day.
fn call(id: &str, user: &str, period: BillingPeriod, n: u64) -> UsageEvent {
    let mut e = event(id, n);
    e.user_id = user.into();
    e.provider = if n.is_multiple_of(2) {
        Provider::OpenAi
    } else {
        Provider::Anthropic
    };
    e.billing_period = period.key();
    e.occurred_at =
        period.start() + chrono::Duration::days(9) + chrono::Duration::seconds(n as i64);
    e
}

fn calendar(key: &str) -> BillingPeriod {
    BillingPeriod::from_key(key, AnchorDay::CALENDAR_MONTH).unwrap()
}

/// `count` calls in `period`, ids `{prefix}-{n}`, alternating between alice and bob.
fn calls(prefix: &str, period: BillingPeriod, count: u64) -> Vec<UsageEvent> {
    (0..count)
        .map(|n| {
            let user = if n.is_multiple_of(2) { "alice" } else { "bob" };
            call(&format!("{prefix}-{n}"), user, period, n)
        })
        .collect()
}

async fn insert(ledger: &Ledger, events: &[UsageEvent]) {
    for chunk in events.chunks(250) {
        ledger.insert_batch(chunk).await.unwrap();
    }
}

async fn count_sql(ledger: &Ledger, sql: &str) -> i64 {
    match ledger.db() {
        Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// Every row of the summaries and the bills, as text, to compare before and after a sweep.
async fn totals_and_bills(ledger: &Ledger) -> Vec<String> {
    let sqls = [
        "SELECT user_id || ' ' || billing_period || ' ' || CAST(total_calls AS TEXT) || ' ' || \
         CAST(total_tokens AS TEXT) || ' ' || CAST(total_cost_nanousd AS TEXT) \
         FROM usage_summaries ORDER BY user_id, billing_period",
        "SELECT user_id || ' ' || billing_period || ' ' || provider || ' ' || \
         CAST(calls AS TEXT) || ' ' || CAST(cost_nanousd AS TEXT) \
         FROM usage_summary_providers ORDER BY user_id, billing_period, provider",
        "SELECT user_id || ' ' || billing_period || ' ' || CAST(total_calls AS TEXT) || ' ' || \
         CAST(total_cost_nanousd AS TEXT) || ' ' || usage_details \
         FROM billing_history ORDER BY user_id, billing_period",
    ];
    let mut rows = Vec::new();
    for sql in sqls {
        let part: Vec<String> = match ledger.db() {
            Db::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
            Db::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await.unwrap(),
        };
        rows.extend(part);
    }
    rows
}

async fn old_periods_go_in_batches_and_their_totals_stay(backend: &str) {
    let db = TestDb::of(backend).await;
    let ledger = Ledger::connect(&db.url, Default::default()).await.unwrap();
    let now = Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap();
    // Three months kept before December: 2026-09 is the first period kept.
    let gone: Vec<UsageEvent> = [
        calls("aug", calendar("2026-08"), 2_495),
        calls("old", calendar("2025-01"), 10),
    ]
    .concat();
    let kept: Vec<UsageEvent> = [
        calls("sep", calendar("2026-09"), 30),
        calls("nov", calendar("2026-11"), 20),
        calls("dec", calendar("2026-12"), 20),
    ]
    .concat();
    insert(&ledger, &[gone.clone(), kept.clone()].concat()).await;
    ledger.close_periods(now).await.unwrap();
    let august_before = ledger.usage_for_period("alice", "2026-08").await.unwrap();
    assert_eq!(august_before.totals.calls, 1_248);
    let before = totals_and_bills(&ledger).await;
    assert!(before.len() > 10, "summaries and bills to keep: {before:?}");

    let sweep = ledger.sweep_usage_logs(now, months(3)).await.unwrap();
    assert_eq!(sweep.cutoff_period, "2026-09");
    assert_eq!(sweep.deleted, 2_505);
    assert_eq!(sweep.batches, 3, "1,000 rows a statement");

    let expected: BTreeSet<String> = kept.iter().map(|e| e.event_id.clone()).collect();
    let stored: BTreeSet<String> = stored_ids(&ledger).await.into_iter().collect();
    assert_eq!(stored, expected, "exactly the rows of 2026-09 onwards stay");
    assert_eq!(
        totals_and_bills(&ledger).await,
        before,
        "summaries and bills untouched"
    );
    let august_after = ledger.usage_for_period("alice", "2026-08").await.unwrap();
    assert_eq!(august_after.totals, august_before.totals);
    assert_eq!(august_after.per_provider, august_before.per_provider);
    let trend = ledger
        .monthly_trends("bob", calendar("2026-12"), 12)
        .await
        .unwrap();
    let aug = trend
        .iter()
        .find(|p| p.billing_period == "2026-08")
        .unwrap();
    assert_eq!(aug.totals.calls, 1_247, "trends still read the summaries");

    let again = ledger.sweep_usage_logs(now, months(3)).await.unwrap();
    assert_eq!((again.deleted, again.batches), (0, 0));
    ledger.close().await;
}

#[tokio::test]
async fn old_periods_go_in_batches_and_their_totals_stay_sqlite() {
    old_periods_go_in_batches_and_their_totals_stay("sqlite").await;
}

#[tokio::test]
async fn old_periods_go_in_batches_and_their_totals_stay_postgres() {
    old_periods_go_in_batches_and_their_totals_stay("postgres").await;
}

/// The calendar period of `now` and the one before: the current period of every user, whatever
/// their anchor day.
fn current_periods(now: DateTime<Utc>) -> [BillingPeriod; 2] {
    let this = BillingPeriod::containing(now, AnchorDay::CALENDAR_MONTH);
    [this, this.previous()]
}

async fn the_ledger_sweeps_at_start_and_counts_it(backend: &str) {
    let db = TestDb::of(backend).await;
    let reader = Ledger::connect(&db.url, Default::default()).await.unwrap();
    let [this, previous] = current_periods(Utc::now());
    let two_before = previous.previous();
    insert(&reader, &calls("old", two_before, 1_200)).await;
    let kept = [calls("this", this, 15), calls("prev", previous, 15)].concat();
    insert(&reader, &kept).await;

    let mut config = db.config();
    config.retain_usage_logs_months = Some(months(1));
    let (ledger, handle) = open(config).await;
    wait_until("the sweep at start", Duration::from_secs(20), || async {
        handle.metrics().retention_sweeps >= 1
    })
    .await;
    assert_eq!(handle.metrics().usage_logs_deleted, 1_200);
    assert_eq!(handle.metrics().retention_sweeps, 1, "then hourly");
    let expected: BTreeSet<String> = kept.iter().map(|e| e.event_id.clone()).collect();
    let stored: BTreeSet<String> = stored_ids(&ledger).await.into_iter().collect();
    assert_eq!(stored, expected);
    tokio::time::timeout(Duration::from_secs(10), handle.shutdown())
        .await
        .expect("the sweeper stops at shutdown")
        .unwrap();
    ledger.close().await;
    reader.close().await;
}

#[tokio::test]
async fn the_ledger_sweeps_at_start_and_counts_it_sqlite() {
    the_ledger_sweeps_at_start_and_counts_it("sqlite").await;
}

#[tokio::test]
async fn the_ledger_sweeps_at_start_and_counts_it_postgres() {
    the_ledger_sweeps_at_start_and_counts_it("postgres").await;
}

/// Calls of the current period are recorded by four tasks while sweeps run one after another
/// and old rows keep arriving for them to delete: every recorded call is still there at the end.
async fn retention_under_load_loses_no_current_period_row(backend: &str) {
    let db = TestDb::of(backend).await;
    let reader = Ledger::connect(&db.url, Default::default()).await.unwrap();
    let [this, previous] = current_periods(Utc::now());
    let old = previous.previous();
    insert(&reader, &calls("old-0", old, 2_500)).await;

    let mut config = db.config();
    config.retain_usage_logs_months = Some(months(1));
    let (ledger, handle) = open(config).await;
    let producers: Vec<_> = (0..4)
        .map(|p| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for n in 0..750_u64 {
                    // The previous calendar month is the current period of a user whose anchor
                    // day is later than today's.
                    let period = if n.is_multiple_of(3) { previous } else { this };
                    let e = call(&format!("live-{p}-{n}"), &format!("user-{p}"), period, n);
                    ids.push(e.event_id.clone());
                    handle.record(e).await.unwrap();
                    if n.is_multiple_of(10) {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                ids
            })
        })
        .collect();

    // Sweeps run until the writer has written every recorded call.
    let recording = |handle: &tollgate_ledger::LedgerHandle| {
        let m = handle.metrics();
        m.written + m.duplicates < 3_000
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut sweeps = 0;
    let mut deleted = 0;
    let mut round = 1;
    while !producers.iter().all(|p| p.is_finished()) || recording(&handle) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "calls still unwritten"
        );
        let sweep = ledger
            .sweep_usage_logs(Utc::now(), months(1))
            .await
            .unwrap();
        sweeps += 1;
        deleted += sweep.deleted;
        insert(&reader, &calls(&format!("old-{round}"), old, 300)).await;
        round += 1;
    }
    let mut recorded = BTreeSet::new();
    for p in producers {
        recorded.extend(p.await.unwrap());
    }
    handle.flush().await.unwrap();
    deleted += ledger
        .sweep_usage_logs(Utc::now(), months(1))
        .await
        .unwrap()
        .deleted;
    assert!(
        sweeps >= 2,
        "sweeps ran while calls were recorded: {sweeps}"
    );
    assert!(deleted > 0, "the sweeps deleted old rows");

    let stored: BTreeSet<String> = stored_ids(&ledger).await.into_iter().collect();
    let lost: Vec<&String> = recorded.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} of {} current-period rows lost: {:?}",
        lost.len(),
        recorded.len(),
        &lost[..lost.len().min(5)]
    );
    assert_eq!(
        stored, recorded,
        "every old row gone, every current one kept"
    );
    let old_rows = count_sql(
        &ledger,
        &format!(
            "SELECT COUNT(*) FROM api_usage_logs WHERE billing_period = '{}'",
            old.key()
        ),
    )
    .await;
    assert_eq!(old_rows, 0);
    handle.shutdown().await.unwrap();
    ledger.close().await;
    reader.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_under_load_loses_no_current_period_row_sqlite() {
    retention_under_load_loses_no_current_period_row("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_under_load_loses_no_current_period_row_postgres() {
    retention_under_load_loses_no_current_period_row("postgres").await;
}
