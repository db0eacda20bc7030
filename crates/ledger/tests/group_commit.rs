//! `Durability::Sync`: a caller waiting on `record_durable` waits for one short group commit,
//! not for the batch interval, and callers waiting together share commits; an event handed over
//! with `hand_over_durable` is the ledger's at once, whether or not anyone waits for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::*;
use tollgate_ledger::Durability;

/// Far longer than the test may take: a batch cut by this interval would fail it.
const BATCH_INTERVAL_MS: u64 = 600_000;
const DEADLINE: Duration = Duration::from_secs(60);
const CALLERS: u64 = 64;

async fn waiting_callers_share_commits(backend: &str) {
    let db = TestDb::of(backend).await;
    let mut config = db.config();
    config.durability = Durability::Sync;
    config.flush_interval_ms = BATCH_INTERVAL_MS;
    config.group_commit_ms = 20;
    let (ledger, handle) = open(config).await;
    let callers: Vec<_> = (0..CALLERS)
        .map(|n| {
            let handle = handle.clone();
            tokio::spawn(async move { handle.record_durable(event(format!("g-{n}"), n)).await })
        })
        .collect();
    for caller in callers {
        let durable = tokio::time::timeout(DEADLINE, caller).await;
        durable
            .expect("record_durable waited for the batch interval")
            .unwrap()
            .unwrap();
    }
    // Durable means written: every row is there before anything else is flushed.
    let m = handle.metrics();
    assert_eq!(m.written, CALLERS, "{m:?}");
    assert!(
        m.batches < CALLERS / 4,
        "few commits serve every caller: {m:?}"
    );
    assert_eq!(assert_summaries_match_logs(&ledger).await, CALLERS as i64);
    handle.shutdown().await.unwrap();
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_waiting_callers_share_group_commits() {
    waiting_callers_share_commits("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_waiting_callers_share_group_commits() {
    waiting_callers_share_commits("postgres").await;
}

/// Half the events are waited for, half are handed over and their waits dropped unpolled (a
/// client gone before the last bytes of its response): each wait ends with its event written,
/// and every event is written, the dropped ones included.
async fn events_handed_over_are_kept_unwaited(backend: &str) {
    let db = TestDb::of(backend).await;
    let mut config = db.config();
    config.durability = Durability::Sync;
    config.flush_interval_ms = BATCH_INTERVAL_MS;
    let (ledger, handle) = open(config).await;
    let mut waits = Vec::new();
    for n in 0..CALLERS {
        let wait = handle.hand_over_durable(event(format!("h-{n}"), n));
        if n % 2 == 0 {
            waits.push(wait);
        }
    }
    for wait in waits {
        tokio::time::timeout(DEADLINE, wait)
            .await
            .expect("the wait ended with a commit, not the batch interval")
            .unwrap();
    }
    handle.flush().await.unwrap();
    let m = handle.metrics();
    assert_eq!(m.written, CALLERS, "{m:?}");
    assert_eq!(assert_summaries_match_logs(&ledger).await, CALLERS as i64);
    handle.shutdown().await.unwrap();
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_events_handed_over_are_kept_unwaited() {
    events_handed_over_are_kept_unwaited("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_events_handed_over_are_kept_unwaited() {
    events_handed_over_are_kept_unwaited("postgres").await;
}
