//! A load generator for the ledger's crash tests: records usage events as fast as it can and
//! prints `ACK <event id>` for each event once the ledger has made it durable (committed, or
//! synced to the spool), after printing `REC <event id>` when it hands the event to the ledger.
//! Killing it at any moment must leave every acknowledged event in the
//! database exactly once after a restart over the same database and spool.
//!
//! Usage: `ledger-load DATABASE_URL SPOOL_DIR EVENTS PREFIX`

use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use tollgate_domain::{Cost, Provider, Usage};
use tollgate_ledger::{Ledger, LedgerConfig, LedgerHandle, UsageEvent};

const TASKS: u64 = 4;
const ROUND: u64 = 25;

fn event(id: String, n: u64) -> UsageEvent {
    let now = Utc::now();
    UsageEvent {
        event_id: id,
        user_id: format!("user-{}", n % 7),
        key_id: Some(format!("key-{}", n % 3)),
        provider: Provider::ALL[(n % 9) as usize],
        model: "model-x".into(),
        endpoint: "/v1/chat/completions".into(),
        method: "POST".into(),
        status: if n.is_multiple_of(50) { 500 } else { 200 },
        usage: Usage {
            input_tokens: n % 1_000,
            output_tokens: n % 100,
            ..Usage::default()
        },
        cost: Cost {
            total_nanousd: n * 10,
            input_nanousd: n * 10,
            ..Cost::default()
        },
        price_version: "test".into(),
        estimated: false,
        latency_ms: n % 300,
        request_bytes: 100,
        response_bytes: 200,
        billing_period: UsageEvent::calendar_period(now),
        occurred_at: now,
        error_message: None,
        request_id: None,
        refusal_reason: None,
    }
}

fn print(tag: &str, ids: &[String]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for id in ids {
        writeln!(out, "{tag} {id}")?;
    }
    out.flush()
}

fn ack(ids: &[String]) -> std::io::Result<()> {
    print("ACK", ids)
}

/// Records `ROUND` events, waits for the ledger to flush them, acknowledges them; repeats.
async fn batches(
    handle: LedgerHandle,
    next: Arc<AtomicU64>,
    total: u64,
    prefix: Arc<str>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    loop {
        let mut ids = Vec::new();
        for _ in 0..ROUND {
            let n = next.fetch_add(1, Ordering::Relaxed);
            if n >= total {
                break;
            }
            let id = format!("{prefix}-{n}");
            print("REC", std::slice::from_ref(&id))?;
            handle.record(event(id.clone(), n)).await?;
            ids.push(id);
        }
        if ids.is_empty() {
            return Ok(());
        }
        handle.flush().await?;
        ack(&ids)?;
    }
}

/// Records one event at a time with `record_durable`.
async fn one_by_one(
    handle: LedgerHandle,
    next: Arc<AtomicU64>,
    total: u64,
    prefix: Arc<str>,
) -> Result<(), Box<dyn Error + Send + Sync>> {
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return Ok(());
        }
        let id = format!("{prefix}-{n}");
        print("REC", std::slice::from_ref(&id))?;
        handle.record_durable(event(id.clone(), n)).await?;
        ack(&[id])?;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, spool, total, prefix] = args.as_slice() else {
        return Err("usage: ledger-load DATABASE_URL SPOOL_DIR EVENTS PREFIX".into());
    };
    let total: u64 = total.parse()?;
    let mut config = LedgerConfig::new(url.clone(), spool);
    config.batch_max_events = 50;
    config.flush_interval_ms = 5;
    config.db_timeout_ms = 300;
    config.retry_backoff_max_ms = 200;
    let (_ledger, handle) = Ledger::open(config).await?;
    let next = Arc::new(AtomicU64::new(0));
    let prefix: Arc<str> = Arc::from(prefix.as_str());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (h, n, p) = (handle.clone(), Arc::clone(&next), Arc::clone(&prefix));
        tasks.push(if t == 0 {
            tokio::spawn(one_by_one(h, n, total, p))
        } else {
            tokio::spawn(batches(h, n, total, p))
        });
    }
    for task in tasks {
        task.await??;
    }
    handle.shutdown().await?;
    println!("DONE");
    Ok(())
}
