#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Redis going away under load, against a private redis-server on a random port (never the
//! shared one): each policy's answers, that no call waits longer than the timeout, and that
//! limits are shared through Redis again soon after it returns.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Prefix, Server, calls, now, period_at, request};
use tollgate_counters::{
    CounterError, CounterStore, Hold, PeriodTotals, Reserved, ResilientConfig, ResilientStore,
    SeedFuture, Seeder,
};
use tollgate_domain::{Limit, LimitKey, Standing, UnreachablePolicy};

const TIMEOUT_MS: u64 = 100;
/// Scheduling on a busy machine, on top of the timeout.
const SLACK_MS: u64 = 150;

fn limits(max: u64) -> [Limit; 1] {
    [Limit {
        key: LimitKey::TotalCalls,
        max,
    }]
}

/// A seeder whose ledger says the user has used `used` calls.
fn seeder(used: u64) -> Seeder {
    Arc::new(move |_, _| -> SeedFuture {
        Box::pin(async move {
            Ok(PeriodTotals {
                plan: vec![(LimitKey::TotalCalls, used)],
                keys: Vec::new(),
            })
        })
    })
}

fn store(prefix: &Prefix, used_in_ledger: u64) -> ResilientStore {
    ResilientStore::new(
        prefix.store(TIMEOUT_MS),
        seeder(used_in_ledger),
        ResilientConfig {
            probe_interval_ms: 100,
            ..ResilientConfig::default()
        },
    )
}

/// One reserve, timed; admitted calls are settled at once with one call used.
async fn timed(
    store: &ResilientStore,
    policy: UnreachablePolicy,
    max: u64,
) -> (Duration, Result<Reserved, CounterError>) {
    let limits = limits(max);
    let started = Instant::now();
    let outcome = store
        .reserve_with(request("load", &limits, calls(1), now()), policy)
        .await;
    let took = started.elapsed();
    if let Ok(Reserved::Admitted(r)) = &outcome {
        store.settle(r, calls(1)).await.unwrap();
    }
    (took, outcome)
}

/// Runs calls until `until`, returning each call's time and outcome.
async fn load(
    store: &ResilientStore,
    policy: UnreachablePolicy,
    max: u64,
    until: Instant,
) -> Vec<(Duration, Result<Reserved, CounterError>)> {
    let mut out = Vec::new();
    while Instant::now() < until {
        out.push(timed(store, policy, max).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

fn assert_within_timeout(results: &[(Duration, Result<Reserved, CounterError>)]) {
    let slowest = results.iter().map(|(d, _)| *d).max().unwrap();
    assert!(
        slowest <= Duration::from_millis(TIMEOUT_MS + SLACK_MS),
        "a call took {slowest:?}"
    );
}

fn held(outcome: &Result<Reserved, CounterError>) -> Option<Hold> {
    match outcome {
        Ok(Reserved::Admitted(r)) => Some(r.held),
        _ => None,
    }
}

/// Kills Redis under load with `policy`, restarts it (empty) on the same port and returns what
/// the calls answered during the outage and how long recovery took.
async fn outage(
    policy: UnreachablePolicy,
    max: u64,
) -> (Vec<(Duration, Result<Reserved, CounterError>)>, Duration) {
    let mut server = Server::start();
    let prefix = Prefix::new(&server.url());
    let store = store(&prefix, 0);
    let before = load(
        &store,
        policy,
        max,
        Instant::now() + Duration::from_millis(200),
    )
    .await;
    assert!(before.iter().all(|(_, o)| held(o) == Some(Hold::Store)));
    assert_eq!(store.stats().seeded, 1);

    server.kill();
    let during = load(
        &store,
        policy,
        max,
        Instant::now() + Duration::from_millis(500),
    )
    .await;
    assert_within_timeout(&during);
    assert!(store.is_degraded());

    server.restart();
    let back = Instant::now();
    loop {
        let (took, outcome) = timed(&store, policy, max).await;
        assert!(
            took <= Duration::from_millis(TIMEOUT_MS + SLACK_MS),
            "{took:?}"
        );
        if held(&outcome) == Some(Hold::Store) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(2), "not back in 2 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let recovered = back.elapsed();
    assert!(!store.is_degraded());
    // The restarted Redis was empty: the counters were rebuilt from the ledger.
    assert_eq!(store.stats().seeded, 2);
    (during, recovered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_while_redis_is_down() {
    let (during, _) = outage(UnreachablePolicy::FailClosed, 1_000_000).await;
    assert!(!during.is_empty());
    assert!(
        during
            .iter()
            .all(|(_, o)| matches!(o, Err(CounterError::Unreachable(_)))),
        "{during:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_admits_while_redis_is_down() {
    let (during, _) = outage(UnreachablePolicy::FailOpen, 1_000_000).await;
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|(_, o)| held(o) == Some(Hold::Unheld)),
        "{during:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_enforces_from_the_last_values_seen() {
    let (during, _) = outage(UnreachablePolicy::Local, 1_000_000).await;
    assert!(!during.is_empty());
    assert!(
        during.iter().all(|(_, o)| held(o) == Some(Hold::Local)),
        "{during:?}"
    );

    // Exactly what is left of the limit, as last seen in Redis, is admitted locally.
    let mut server = Server::start();
    let prefix = Prefix::new(&server.url());
    let store = store(&prefix, 0);
    for _ in 0..5 {
        let (_, outcome) = timed(&store, UnreachablePolicy::Local, 20).await;
        assert_eq!(held(&outcome), Some(Hold::Store));
    }
    server.kill();
    let mut results = Vec::new();
    for _ in 0..20 {
        results.push(timed(&store, UnreachablePolicy::Local, 20).await);
    }
    assert_within_timeout(&results);
    let admitted = results
        .iter()
        .filter(|(_, o)| held(o) == Some(Hold::Local))
        .count();
    assert_eq!(admitted, 15, "5 of 20 were used before Redis went away");
    assert!(
        results[15..]
            .iter()
            .all(|(_, o)| matches!(o, Ok(Reserved::Denied(_))))
    );
}

/// Redis that stops answering but keeps its data: what was counted meanwhile is brought back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_counted_during_an_outage_is_brought_back_into_redis() {
    let server = Server::start();
    let prefix = Prefix::new(&server.url());
    let store = store(&prefix, 0);
    let period = period_at(now());
    let limits = limits(100);
    // Two calls in flight when Redis stops answering, one done before.
    let (_, first) = timed(&store, UnreachablePolicy::Local, 100).await;
    assert_eq!(held(&first), Some(Hold::Store));
    let Ok(Reserved::Admitted(settled_late)) = store
        .reserve_with(
            request("load", &limits, calls(1), now()),
            UnreachablePolicy::Local,
        )
        .await
    else {
        panic!()
    };
    let Ok(Reserved::Admitted(released_late)) = store
        .reserve_with(
            request("load", &limits, calls(1), now()),
            UnreachablePolicy::Local,
        )
        .await
    else {
        panic!()
    };

    server.command(&["CLIENT", "PAUSE", "1500", "ALL"]);
    let started = Instant::now();
    store.settle(&settled_late, calls(1)).await.unwrap();
    store.release(&released_late).await.unwrap();
    assert!(started.elapsed() <= Duration::from_millis(TIMEOUT_MS + SLACK_MS));
    assert!(store.is_degraded());
    let mut results = Vec::new();
    for policy in [
        UnreachablePolicy::Local,
        UnreachablePolicy::Local,
        UnreachablePolicy::FailOpen,
        UnreachablePolicy::FailClosed,
    ] {
        results.push(timed(&store, policy, 100).await);
    }
    assert_within_timeout(&results);
    assert_eq!(held(&results[0].1), Some(Hold::Local));
    assert_eq!(held(&results[1].1), Some(Hold::Local));
    assert_eq!(held(&results[2].1), Some(Hold::Unheld));
    assert!(results[3].1.is_err());
    assert!(store.stats().pending > 0);

    // Paused for 1.5 s; back within about a second after that.
    let deadline = Instant::now() + Duration::from_secs(4);
    while store.is_degraded() {
        assert!(Instant::now() < deadline, "still degraded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(store.stats().pending, 0);
    // 1 before + 1 settled late + 2 local + 1 open = 5 used; the released hold was given back.
    let s = store
        .redis()
        .standing("load", period, LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(
        s,
        Standing {
            used: 5,
            reserved: 0
        }
    );
    assert_eq!(store.stats().seeded, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_is_only_a_degraded_start() {
    let mut server = Server::start();
    let prefix = Prefix::new(&server.url());
    server.kill();
    let store = store(&prefix, 3);
    let (took, outcome) = timed(&store, UnreachablePolicy::FailClosed, 10).await;
    assert!(took <= Duration::from_millis(TIMEOUT_MS + SLACK_MS));
    assert!(matches!(outcome, Err(CounterError::Unreachable(_))));
    server.restart();
    let back = Instant::now();
    loop {
        let (_, outcome) = timed(&store, UnreachablePolicy::FailClosed, 10).await;
        if held(&outcome) == Some(Hold::Store) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(2), "not back in 2 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Seeded with the ledger's 3 calls, plus the one just made.
    let s = store
        .redis()
        .standing("load", period_at(now()), LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(s.used, 4);
    // A fresh server has no scripts: the first call also sent the source.
    let stats = store.redis().stats();
    assert!(stats.round_trips > stats.operations, "{stats:?}");
}
