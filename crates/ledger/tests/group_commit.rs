//! `Durability::Sync`: a caller waiting on `record_durable` waits for one short group commit,
//! not for the batch interval, and callers waiting together share commits.

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
