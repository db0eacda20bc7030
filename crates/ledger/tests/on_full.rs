//! The `on_full` policies under load with the database stalled. A real PostgreSQL, whose
//! `api_usage_logs` another connection holds `ACCESS EXCLUSIVE` in an open transaction, so that
//! every insert waits; a small queue fills, and the policy decides. `block` and `spool` lose
//! nothing once the stall ends; `drop` loses exactly what it counts; and under `spool` recording
//! neither waits for the database nor writes a file on the caller's thread.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::{Duration, Instant};

use common::*;
use sqlx::{Connection, Executor, PgConnection};
use tollgate_ledger::{LedgerConfig, LedgerError, LedgerHandle, OnFull};

const LONG: Duration = Duration::from_secs(60);
const TASKS: u64 = 40;
const CALLS_PER_TASK: u64 = 50;
const CALLS: u64 = TASKS * CALLS_PER_TASK;
const QUEUE_CAPACITY: usize = 16;
const BATCH_MAX_EVENTS: usize = 8;

/// `api_usage_logs` locked by another session until [`Stall::end`]: the writer's inserts wait.
struct Stall {
    conn: PgConnection,
}

impl Stall {
    async fn start(url: &str) -> Stall {
        let mut conn = PgConnection::connect(url).await.unwrap();
        conn.execute("BEGIN").await.unwrap();
        conn.execute("LOCK TABLE api_usage_logs IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Stall { conn }
    }

    async fn end(mut self) {
        self.conn.execute("ROLLBACK").await.unwrap();
        self.conn.close().await.unwrap();
    }
}

fn config(db: &TestDb, on_full: OnFull) -> LedgerConfig {
    let mut config = db.config();
    config.queue_capacity = QUEUE_CAPACITY;
    config.batch_max_events = BATCH_MAX_EVENTS;
    config.on_full = on_full;
    config
}

/// `CALLS` events recorded from `TASKS` concurrent tasks; each task returns its results.
fn record_concurrently(
    handle: &LedgerHandle,
    prefix: &'static str,
) -> Vec<tokio::task::JoinHandle<Vec<Result<(), LedgerError>>>> {
    (0..TASKS)
        .map(|t| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let mut results = Vec::new();
                for i in 0..CALLS_PER_TASK {
                    let n = t * CALLS_PER_TASK + i;
                    results.push(handle.record(event(format!("{prefix}-{n:05}"), n)).await);
                }
                results
            })
        })
        .collect()
}

/// Waits for every caller, failing after `LONG`.
async fn results_of(
    callers: Vec<tokio::task::JoinHandle<Vec<Result<(), LedgerError>>>>,
) -> Vec<Result<(), LedgerError>> {
    let mut all = Vec::new();
    for caller in callers {
        let results = tokio::time::timeout(LONG, caller)
            .await
            .expect("a caller still waits")
            .unwrap();
        all.extend(results);
    }
    all
}

/// `block`: callers wait for room while the database is stalled, and every call is stored once
/// it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_waits_for_room_and_loses_nothing() {
    let db = TestDb::postgres().await;
    let (ledger, handle) = open(config(&db, OnFull::Block)).await;
    let stall = Stall::start(&db.url).await;
    let callers = record_concurrently(&handle, "b");
    wait_until("the queue to fill", LONG, || async {
        handle.metrics().queue_full > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = handle.metrics();
    assert!(
        callers.iter().all(|c| !c.is_finished()),
        "every caller waits for room while the database is stalled: {during:?}"
    );
    assert!(during.accepted < CALLS, "{during:?}");

    stall.end().await;
    let results = results_of(callers).await;
    assert!(results.iter().all(Result::is_ok), "every call recorded");
    handle.shutdown().await.unwrap();

    let m = handle.metrics();
    eprintln!("{m:?}");
    assert_eq!((m.accepted, m.dropped, m.spooled), (CALLS, 0, 0), "{m:?}");
    assert_eq!(assert_summaries_match_logs(&ledger).await, CALLS as i64);
    ledger.close().await;
}

/// `spool`: every call returns while the database is still stalled, the overflow reaches the
/// spool meanwhile, and every call is stored once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_returns_during_the_stall_and_loses_nothing() {
    let db = TestDb::postgres().await;
    let (ledger, handle) = open(config(&db, OnFull::Spool)).await;
    let stall = Stall::start(&db.url).await;
    let results = results_of(record_concurrently(&handle, "s")).await;
    assert!(results.iter().all(Result::is_ok), "every call recorded");
    // At most the queue and the batch the writer holds wait for the database; the rest is on
    // disk before the stall ends.
    let on_disk = (CALLS as usize - QUEUE_CAPACITY - BATCH_MAX_EVENTS) as u64;
    wait_until("the overflow on disk", LONG, || async {
        handle.metrics().spooled >= on_disk
    })
    .await;
    let during = handle.metrics();
    assert_eq!(
        (during.accepted, during.written, during.dropped),
        (CALLS, 0, 0),
        "{during:?}"
    );
    assert!(during.queue_full > 0, "{during:?}");

    stall.end().await;
    handle.shutdown().await.unwrap();
    let m = handle.metrics();
    eprintln!("{m:?}");
    assert_eq!((m.dropped, m.spool_bytes), (0, 0), "{m:?}");
    assert!(m.replayed >= during.spooled, "{m:?}");
    assert_eq!(assert_summaries_match_logs(&ledger).await, CALLS as i64);
    ledger.close().await;
}

/// `drop`: every call returns during the stall, and the `dropped` metric is exactly the calls
/// that have no row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_counts_exactly_the_missing_rows() {
    let db = TestDb::postgres().await;
    let (ledger, handle) = open(config(&db, OnFull::Drop)).await;
    let stall = Stall::start(&db.url).await;
    let results = results_of(record_concurrently(&handle, "d")).await;
    let refused = results
        .iter()
        .filter(|r| match r {
            Ok(()) => false,
            Err(LedgerError::Dropped) => true,
            Err(e) => panic!("{e}"),
        })
        .count() as u64;
    assert!(refused > 0);
    stall.end().await;
    handle.shutdown().await.unwrap();

    let m = handle.metrics();
    eprintln!("{m:?}");
    let rows = assert_summaries_match_logs(&ledger).await as u64;
    assert!(rows > 0);
    assert_eq!(m.dropped, CALLS - rows, "{m:?}");
    assert_eq!(m.dropped, refused, "{m:?}");
    assert_eq!(m.spooled, 0, "{m:?}");
    ledger.close().await;
}

/// Bytes this thread has passed to `write` and the like, from `/proc/thread-self/io`.
fn bytes_written_by_this_thread() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|line| line.strip_prefix("wchar: "))
        .unwrap()
        .parse()
        .unwrap()
}

/// `spool` with a full queue, as the gateway meets it: the ledger on a runtime of its own, and
/// a proxy thread (a current-thread runtime, as Pingora's) recording while the database is
/// stalled. Every call completes within the stall, and the proxy thread writes nothing but the
/// few bytes that wake the ledger's thread — the spool's frames are written elsewhere.
#[test]
fn spool_on_a_full_queue_does_no_file_io_on_the_calling_thread() {
    let ledger_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let db = ledger_runtime.block_on(TestDb::postgres());
    let (ledger, handle) = ledger_runtime.block_on(open(config(&db, OnFull::Spool)));
    let stall = ledger_runtime.block_on(Stall::start(&db.url));

    let proxy_handle = handle.clone();
    let probe_file = db.dir.path().join("probe");
    let proxy_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The probe itself: a file write on this thread shows up in its count.
        let before = bytes_written_by_this_thread();
        std::fs::write(probe_file, [0u8; 4_096]).unwrap();
        assert!(bytes_written_by_this_thread() - before >= 4_096);

        let before = bytes_written_by_this_thread();
        let started = Instant::now();
        runtime.block_on(async {
            for n in 0..CALLS {
                proxy_handle
                    .record(event(format!("p-{n:05}"), n))
                    .await
                    .unwrap();
            }
        });
        (bytes_written_by_this_thread() - before, started.elapsed())
    });
    let deadline = Instant::now() + LONG;
    while !proxy_thread.is_finished() {
        assert!(
            Instant::now() < deadline,
            "recording waited for the database"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (written, elapsed) = proxy_thread.join().unwrap();

    ledger_runtime.block_on(async {
        let on_disk = (CALLS as usize - QUEUE_CAPACITY - BATCH_MAX_EVENTS) as u64;
        wait_until("the overflow on disk", LONG, || async {
            handle.metrics().spooled >= on_disk
        })
        .await;
        let during = handle.metrics();
        eprintln!(
            "{CALLS} calls in {elapsed:?}; the proxy thread wrote {written} bytes; {} bytes spooled",
            during.spool_bytes
        );
        assert_eq!(during.written, 0, "the database was stalled throughout");
        // An eventfd wake-up is 8 bytes; a spooled event takes hundreds.
        assert!(
            written <= 8 * CALLS && written < during.spool_bytes / 20,
            "the proxy thread wrote {written} bytes"
        );

        stall.end().await;
        handle.shutdown().await.unwrap();
        let m = handle.metrics();
        assert_eq!(m.dropped, 0, "{m:?}");
        assert_eq!(assert_summaries_match_logs(&ledger).await, CALLS as i64);
        ledger.close().await;
    });
    drop(db);
}
