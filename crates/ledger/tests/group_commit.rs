//! `Durability::Sync`: a caller waiting on `record_durable` waits for one short group commit,
//! not for the batch interval, and callers waiting together share commits; an event handed over
//! with `hand_over_durable` is the ledger's at once, whether or not anyone waits for it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use common::*;
use tollgate_ledger::{Durability, LedgerConfig};

/// Far longer than the test may take: a batch cut by this interval would fail it.
const BATCH_INTERVAL_MS: u64 = 600_000;
const DEADLINE: Duration = Duration::from_secs(60);
const CALLERS: u64 = 64;

/// `db`'s ledger under `sync`, its batch interval out of reach.
fn sync_config(db: &TestDb, group_commit_ms: u64) -> LedgerConfig {
    let mut config = db.config();
    config.durability = Durability::Sync;
    config.flush_interval_ms = BATCH_INTERVAL_MS;
    config.group_commit_ms = group_commit_ms;
    config
}

async fn waiting_callers_share_commits(backend: &str) {
    let db = TestDb::of(backend).await;
    let (ledger, handle) = open(sync_config(&db, 20)).await;
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
    let (ledger, handle) = open(sync_config(&db, 1)).await;
    let mut waits = Vec::new();
    for n in 0..CALLERS {
        let wait = handle.hand_over_durable(event(format!("h-{n}"), n), 0);
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

/// With a group-commit window far longer than the test, a lone caller's event is committed at
/// once, and three calls running together are committed as soon as the third has joined.
async fn a_group_commit_waits_only_for_the_calls_that_may_join_it(backend: &str) {
    let db = TestDb::of(backend).await;
    let (ledger, handle) = open(sync_config(&db, BATCH_INTERVAL_MS)).await;
    let lone = handle.hand_over_durable(event("lone".to_owned(), 1), 0);
    tokio::time::timeout(DEADLINE, lone)
        .await
        .expect("a lone caller waited out the group-commit window")
        .unwrap();
    assert_eq!(handle.metrics().written, 1);

    // The writer takes the first event on its own, and learns that two more calls may join.
    let first = handle.hand_over_durable(event("t-1".to_owned(), 1), 2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = handle.hand_over_durable(event("t-2".to_owned(), 2), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        handle.metrics().written,
        1,
        "committed before the third call running beside them joined"
    );
    let third = handle.hand_over_durable(event("t-3".to_owned(), 3), 0);
    let together = async { tokio::try_join!(first, second, third) };
    tokio::time::timeout(DEADLINE, together)
        .await
        .expect("the group commit waited out its window once every call had joined")
        .unwrap();
    let m = handle.metrics();
    assert_eq!(m.written, 4, "{m:?}");
    assert_eq!(m.batches, 2, "the three shared one commit: {m:?}");
    handle.shutdown().await.unwrap();
    ledger.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_group_commit_waits_only_for_the_calls_that_may_join_it() {
    a_group_commit_waits_only_for_the_calls_that_may_join_it("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_group_commit_waits_only_for_the_calls_that_may_join_it() {
    a_group_commit_waits_only_for_the_calls_that_may_join_it("postgres").await;
}
