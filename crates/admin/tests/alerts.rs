#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! Alerts under concurrency: many settles from two independent ledger handles on one database
//! cross 80/90/100 % of two limits, with every settle also re-raising everything reached so
//! far; exactly three alerts per limit are stored, and two deliverers running at once deliver
//! each exactly once, signed, to a webhook receiver that fails some first attempts.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use common::{TestDb, WEBHOOK_SECRET, load_config};
use tollgate_admin::{Deliverer, WebhookSigner};
use tollgate_domain::{LimitKey, Provider, crossings};
use tollgate_ledger::Ledger;

/// What the receiver saw: every request, and the accepted ones per delivery id.
#[derive(Default)]
struct Received {
    attempts: BTreeMap<String, u32>,
    accepted: BTreeMap<String, u32>,
    bad_signatures: u32,
}

async fn start_receiver(received: Arc<Mutex<Received>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let received = Arc::clone(&received);
            async move {
                let header = |n: &str| headers.get(n).unwrap().to_str().unwrap().to_owned();
                let ts: i64 = header("x-tollgate-timestamp").parse().unwrap();
                let id = header("x-tollgate-delivery");
                let signer = WebhookSigner::new(Some(WEBHOOK_SECRET));
                let mut r = received.lock().unwrap();
                if !signer.verify(ts, &body, &header("x-tollgate-signature"))
                    || (Utc::now().timestamp() - ts).abs() > 300
                {
                    r.bad_signatures += 1;
                    return StatusCode::UNAUTHORIZED;
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["delivery_id"], id.as_str());
                assert_eq!(v["type"], "usage_alert");
                // Every other alert, in the order they first arrive, fails its first attempt,
                // to exercise the retries. (Not by id: PostgreSQL's sequence may skip values,
                // so the ids can all be odd.)
                let first_seen = r.attempts.len();
                let attempts = r.attempts.entry(id.clone()).or_default();
                *attempts += 1;
                if *attempts == 1 && first_seen.is_multiple_of(2) {
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                *r.accepted.entry(id).or_default() += 1;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn exactly_once(db: TestDb) {
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver = start_receiver(Arc::clone(&received)).await;
    let config = load_config(
        db.dir.path(),
        &format!(
            r#"webhook_urls = ["http://{receiver}/hook"]
delivery_interval_ms = 20
delivery_lease_ms = 10000
webhook_timeout_ms = 2000
retry_backoff_initial_ms = 30
retry_backoff_max_ms = 200"#
        ),
    );
    // Two gateway instances: independent pools on the same database.
    let a = db.connect().await;
    let b = db.connect().await;
    let plan = config.plans["free"].clone();
    let limits: Vec<_> = plan
        .all_limits()
        .into_iter()
        .filter(|l| {
            matches!(
                l.key,
                LimitKey::ProviderCalls(Provider::Tavily) | LimitKey::Cost
            )
        })
        .collect();
    assert_eq!(limits.len(), 2);
    let period = tollgate_ledger::UsageEvent::calendar_period(Utc::now());

    // 40 settles of one Tavily call costing $0.05 each: 20 calls and $2.00 are both limits,
    // so every threshold of both is crossed (and passed). The counters move atomically, as the
    // counter store's do; each settle raises its own crossings and then, concurrently with
    // the others, everything reached so far, so the database sees many duplicates at once.
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let ledger: Ledger = if i % 2 == 0 { a.clone() } else { b.clone() };
        let (calls, limits, period) = (Arc::clone(&calls), limits.clone(), period.clone());
        tasks.push(tokio::spawn(async move {
            let after = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let standing = |n: u64| {
                move |key: LimitKey| match key {
                    LimitKey::Cost => n * 50_000_000,
                    _ => n,
                }
            };
            let mine = crossings(
                &limits,
                standing(after - 1),
                standing(after),
                &[80, 90, 100],
            );
            let everything = crossings(&limits, standing(0), standing(after), &[80, 90, 100]);
            let (x, y) = tokio::join!(
                ledger.raise("alice", &period, &mine),
                ledger.raise("alice", &period, &everything)
            );
            x.unwrap().len() + y.unwrap().len()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap();
    }
    assert_eq!(stored, 6, "each crossing stored by exactly one raise");
    let alerts = a.alerts("alice", false, 100).await.unwrap();
    let mut per_limit: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for alert in &alerts {
        per_limit
            .entry(alert.limit_key.clone())
            .or_default()
            .push(alert.threshold_percentage);
    }
    for thresholds in per_limit.values_mut() {
        thresholds.sort();
    }
    assert_eq!(
        per_limit,
        BTreeMap::from([
            ("monthly_cost".to_owned(), vec![80, 90, 100]),
            ("tavily_calls".to_owned(), vec![80, 90, 100]),
        ])
    );
    let reached = alerts
        .iter()
        .find(|a| a.limit_key == "monthly_cost" && a.threshold_percentage == 100)
        .unwrap();
    assert_eq!(reached.severity, "error");
    assert_eq!(reached.alert_type, "limit_reached");
    assert!(reached.message.contains("$2.00"), "{}", reached.message);

    // Two deliverers, one per instance, running at the same time.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut runners = Vec::new();
    for ledger in [a.clone(), b.clone()] {
        let config = Arc::clone(&config);
        let deliverer = Deliverer::new(ledger, Arc::new(move || Arc::clone(&config))).unwrap();
        let mut stop = stop_rx.clone();
        runners.push(tokio::spawn(deliverer.run(async move {
            let _ = stop.changed().await;
        })));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let unsent = a
            .alerts("alice", false, 100)
            .await
            .unwrap()
            .iter()
            .filter(|x| !x.is_sent)
            .count();
        if unsent == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{unsent} alerts still unsent"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Give a second delivery every chance to happen before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(true).unwrap();
    for r in runners {
        r.await.unwrap();
    }

    let accepted: Vec<String> = {
        let r = received.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        assert_eq!(r.accepted.len(), 6, "{:?}", r.accepted);
        assert!(
            r.accepted.values().all(|n| *n == 1),
            "each alert delivered exactly once: {:?}",
            r.accepted
        );
        assert!(
            r.attempts.values().any(|n| *n == 2),
            "some first attempts failed and were retried: {:?}",
            r.attempts
        );
        r.accepted.keys().cloned().collect()
    };
    for alert in a.alerts("alice", false, 100).await.unwrap() {
        assert!(alert.is_sent && alert.sent_at.is_some());
        assert!(accepted.contains(&format!("alert-{}", alert.id)));
    }
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thresholds_alert_and_deliver_exactly_once_on_sqlite() {
    exactly_once(TestDb::sqlite()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thresholds_alert_and_deliver_exactly_once_on_postgresql() {
    exactly_once(TestDb::postgres().await).await;
}
