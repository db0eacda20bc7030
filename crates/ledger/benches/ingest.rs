//! The ledger's writer alone: events per second from `record` to committed rows, into SQLite
//! as shipped (plain), SQLite encrypted with SQLCipher, and PostgreSQL (`DATABASE_URL`, or the
//! local server; skipped with a note when none answers). Each iteration records a burst of
//! events with unique ids and waits for `flush`, so what is timed is batching, the insert and
//! summary transaction and, for SQLite, the sync on every commit (`synchronous = FULL`).
//! The summary printed at the end gives events/s and the encrypted/plain ratio, measured in
//! the same run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // bench code

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput};
use tollgate_domain::{Cost, Provider, Usage};
use tollgate_ledger::test_database::TestDatabase;
use tollgate_ledger::{Ledger, LedgerConfig, LedgerHandle, LedgerKey, UsageEvent};

/// Events per iteration: 20 batches of the default 500.
const BURST: u64 = 10_000;
const KEY: &str = "4f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn event(n: u64) -> UsageEvent {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    UsageEvent {
        event_id: format!("bench-{id:012}"),
        user_id: format!("user-{}", n % 50),
        key_id: Some(format!("key-{}", n % 50)),
        provider: Provider::ALL[(n % 9) as usize],
        model: "gpt-4o-mini".into(),
        endpoint: "/v1/chat/completions".into(),
        method: "POST".into(),
        status: 200,
        usage: Usage {
            input_tokens: 120 + n % 1_000,
            output_tokens: 40 + n % 300,
            ..Usage::default()
        },
        cost: Cost {
            input_nanousd: 18_000,
            output_nanousd: 24_000,
            other_nanousd: 0,
            total_nanousd: 42_000,
        },
        price_version: "2026-08-21".into(),
        estimated: false,
        latency_ms: 350,
        request_bytes: 1_200,
        response_bytes: 2_400,
        billing_period: "2026-12".into(),
        occurred_at: Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap(),
        error_message: None,
        request_id: Some(format!("req-{id}")),
        refusal_reason: None,
    }
}

async fn ingest(handle: &LedgerHandle, events: u64) -> Duration {
    let burst: Vec<UsageEvent> = (0..events).map(event).collect();
    let started = Instant::now();
    for e in burst {
        handle.record(e).await.unwrap();
    }
    handle.flush().await.unwrap();
    started.elapsed()
}

struct Target {
    name: &'static str,
    handle: LedgerHandle,
    _ledger: Ledger,
    _dir: tempfile::TempDir,
    _pg: Option<TestDatabase>,
}

async fn open(
    name: &'static str,
    url: String,
    dir: tempfile::TempDir,
    key: Option<LedgerKey>,
    pg: Option<TestDatabase>,
) -> Target {
    let mut config = LedgerConfig::new(url, dir.path().join("spool"));
    config.key = key;
    let (ledger, handle) = Ledger::open(config).await.unwrap();
    Target {
        name,
        handle,
        _ledger: ledger,
        _dir: dir,
        _pg: pg,
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = LedgerKey::from_hex(KEY).unwrap();
    let targets: Vec<Target> = runtime.block_on(async {
        let mut targets = Vec::new();
        for (name, key) in [
            ("sqlite-plain", None),
            ("sqlite-encrypted", Some(key.clone())),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
            targets.push(open(name, url, dir, key, None).await);
        }
        match std::panic::catch_unwind(|| TestDatabase::create("bench")) {
            Ok(pg) => {
                let url = pg.url.clone();
                let dir = tempfile::tempdir().unwrap();
                targets.push(open("postgres", url, dir, None, Some(pg)).await);
            }
            Err(_) => println!("no PostgreSQL answers: the postgres target is skipped"),
        }
        targets
    });

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(2));
    let mut group = c.benchmark_group("ledger-ingest-10k-events");
    group.throughput(Throughput::Elements(BURST));
    for target in &targets {
        group.bench_function(target.name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += ingest(&target.handle, BURST).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
    c.final_summary();

    // Interleaved rounds, so that a machine busy with something else slows every target alike.
    let rounds = 5;
    let mut best = vec![Duration::MAX; targets.len()];
    runtime.block_on(async {
        for _ in 0..rounds {
            for (i, target) in targets.iter().enumerate() {
                best[i] = best[i].min(ingest(&target.handle, BURST).await);
            }
        }
    });
    let rate = |d: Duration| BURST as f64 / d.as_secs_f64();
    println!("\nsummary (best of {rounds} interleaved bursts of {BURST} events each, same run):");
    for (target, time) in targets.iter().zip(&best) {
        println!("  {:17} {:>9.0} events/s", target.name, rate(*time));
    }
    println!(
        "  sqlite encrypted / plain: {:.2}x",
        rate(best[1]) / rate(best[0])
    );
    runtime.block_on(async {
        for target in &targets {
            let metrics = target.handle.metrics();
            assert_eq!(metrics.dropped, 0, "{}", target.name);
            target.handle.shutdown().await.unwrap();
        }
    });
}
