//! Export and erasure of a user against both databases: the export holds every row about the
//! user and nothing of anyone else's; the erase leaves no row that names the user in any table,
//! is recorded without naming them, and the usage of calls in flight, queued or spooled at
//! that moment never recreates their rows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use std::time::Duration;

use chrono::Utc;
use common::*;
use serde_json::Value;
use tollgate_domain::{AnchorDay, Provider};
use tollgate_ledger::{
    Db, EXPORT_FORMAT, Ledger, NewAlert, NewApiKey, NewSubscription, StoredRules, UsageEvent,
};

async fn connect(db: &TestDb) -> Ledger {
    Ledger::connect(&db.url, Default::default()).await.unwrap()
}

fn call_of(user: &str, id: &str, n: u64) -> UsageEvent {
    let mut e = event(id, n);
    e.user_id = user.into();
    e
}

/// Rows in any table with a text column equal to `value`, as `table.column` → rows: found
/// from the schema, so a table added later is checked too.
async fn rows_naming(ledger: &Ledger, value: &str) -> Vec<(String, i64)> {
    let columns: Vec<(String, String)> = match ledger.db() {
        Db::Sqlite(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx%'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let mut columns = Vec::new();
            for table in tables {
                let cols: Vec<(String, String)> = sqlx::query_as(&format!(
                    "SELECT name, type FROM pragma_table_info('{table}')"
                ))
                .fetch_all(pool)
                .await
                .unwrap();
                columns.extend(
                    cols.into_iter()
                        .filter(|(_, t)| t.eq_ignore_ascii_case("TEXT"))
                        .map(|(c, _)| (table.clone(), c)),
                );
            }
            columns
        }
        Db::Postgres(pool) => sqlx::query_as(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND data_type = 'text' \
             AND table_name NOT LIKE '_sqlx%'",
        )
        .fetch_all(pool)
        .await
        .unwrap(),
    };
    assert!(columns.len() > 20, "the schema was read: {columns:?}");
    let mut found = Vec::new();
    for (table, column) in columns {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
        let n: i64 = match ledger.db() {
            Db::Sqlite(pool) => sqlx::query_scalar(&sql).bind(value).fetch_one(pool).await,
            Db::Postgres(pool) => sqlx::query_scalar(&sql).bind(value).fetch_one(pool).await,
        }
        .unwrap();
        if n > 0 {
            found.push((format!("{table}.{column}"), n));
        }
    }
    found
}

async fn export(ledger: &Ledger, user: &str) -> (u64, Value) {
    let mut out = Vec::new();
    let rows = ledger.export_user(user, &mut out).await.unwrap();
    (
        rows,
        serde_json::from_slice(&out).expect("the export is one JSON document"),
    )
}

/// Alice with a row in every table that can hold one, and bob beside her.
async fn alice_everywhere(ledger: &Ledger) {
    ledger
        .create_user("alice", Some("Alice"), Some("alice@example.test"))
        .await
        .unwrap();
    ledger
        .upsert_subscription(&NewSubscription {
            user_id: "alice".into(),
            plan_id: "pro".into(),
            billing_cycle: "monthly".into(),
            anchor_day: AnchorDay::default(),
            status: "active".into(),
            auto_renew: true,
        })
        .await
        .unwrap();
    ledger
        .create_api_key(&NewApiKey {
            id: "k-alice".into(),
            user_id: "alice".into(),
            key_hash: "secret-hash-of-alices-key".into(),
            prefix: "tg_al1c".into(),
            name: Some("laptop".into()),
            rules: StoredRules::default(),
        })
        .await
        .unwrap();
    let mut events: Vec<UsageEvent> = (0..2_300u64)
        .map(|n| call_of("alice", &format!("a-{n}"), n))
        .collect();
    events.push(call_of("bob", "b-1", 1));
    ledger.insert_batch(&events).await.unwrap();
    ledger
        .insert_alert_once(&NewAlert {
            user_id: "alice".into(),
            billing_period: "2026-11".into(),
            limit_key: "openai_calls".into(),
            threshold_percentage: 80,
            alert_type: "usage_warning".into(),
            provider: Some(Provider::OpenAi),
            title: "API Usage Notice - OpenAI".into(),
            message: "You have used 80 of 100 openai API calls (80% of your limit).".into(),
            severity: "info".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        ledger
            .unbilled_job_units("alice", Provider::Firecrawl, "crawl-1", 7)
            .await
            .unwrap(),
        7
    );
    // November closed: a bill for each user.
    let december = "2026-12-03T00:00:00Z".parse().unwrap();
    assert!(ledger.close_periods(december).await.unwrap() >= 2);
}

async fn export_and_erase(backend: &str) {
    let db = TestDb::of(backend).await;
    let ledger = connect(&db).await;
    alice_everywhere(&ledger).await;

    let (rows, doc) = export(&ledger, "alice").await;
    assert_eq!(doc["format"], EXPORT_FORMAT);
    assert_eq!(doc["user_id"], "alice");
    for (table, n) in [
        ("users", 1),
        ("user_subscriptions", 1),
        ("api_keys", 1),
        ("usage_summaries", 1),
        ("usage_alerts", 1),
        ("billing_history", 1),
        ("job_credits", 1),
        ("api_usage_logs", 2_300),
    ] {
        assert_eq!(doc[table].as_array().unwrap().len(), n, "{table}");
    }
    assert!(
        !doc["usage_summary_providers"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let tables = doc.as_object().unwrap();
    let counted: usize = tables
        .values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum();
    assert_eq!(counted as u64, rows);
    assert_eq!(doc["users"][0]["email"], "alice@example.test");
    assert_eq!(doc["api_keys"][0]["prefix"], "tg_al1c");
    assert_eq!(doc["job_credits"][0]["billed"], 7);
    let text = doc.to_string();
    assert!(
        !text.contains("secret-hash"),
        "key hashes are never exported"
    );
    assert!(!text.contains("\"bob\""), "only alice's rows");
    // The log rows come out in order, over every page.
    let logs = doc["api_usage_logs"].as_array().unwrap();
    assert!(
        logs.windows(2)
            .all(|w| w[0]["id"].as_i64() < w[1]["id"].as_i64())
    );

    let before = Utc::now();
    let erasure = ledger
        .erase_user("alice", "admin:0123456789ab")
        .await
        .unwrap();
    assert_eq!(erasure.deleted_rows["api_usage_logs"], 2_300);
    assert_eq!(erasure.deleted_rows["job_credits"], 1);
    assert_eq!(erasure.deleted_rows["billing_history"], 1);
    assert_eq!(erasure.deleted_rows["users"], 1);
    assert!(erasure.erased_at >= before);
    assert_eq!(rows_naming(&ledger, "alice").await, vec![]);
    assert_eq!(rows_naming(&ledger, "alice@example.test").await, vec![]);
    assert!(
        !rows_naming(&ledger, "bob").await.is_empty(),
        "bob keeps his rows"
    );
    let (rows, doc) = export(&ledger, "alice").await;
    assert_eq!(rows, 0);
    assert_eq!(doc["api_usage_logs"], Value::Array(vec![]));

    // The erasure is recorded, by whom and when, without the user.
    assert_eq!(
        ledger.erased_at("alice").await.unwrap(),
        Some(erasure.erased_at)
    );
    assert_eq!(ledger.erased_at("bob").await.unwrap(), None);
    let recorded: Vec<(String, String, i64)> = match ledger.db() {
        Db::Sqlite(pool) => {
            sqlx::query_as("SELECT user_ref, erased_by, rows_deleted FROM user_erasures")
                .fetch_all(pool)
                .await
                .unwrap()
        }
        Db::Postgres(pool) => {
            sqlx::query_as("SELECT user_ref, erased_by, rows_deleted FROM user_erasures")
                .fetch_all(pool)
                .await
                .unwrap()
        }
    };
    let total: u64 = erasure.deleted_rows.values().sum();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].1, "admin:0123456789ab");
    assert_eq!(recorded[0].2 as u64, total);
    assert_eq!(recorded[0].0.len(), 64);

    // A call that began before the erase and is written after it leaves nothing; one that
    // began after it (the id taken again) is recorded as usual.
    let mut late = call_of("alice", "late-1", 3);
    late.latency_ms = 5_000;
    late.occurred_at = erasure.erased_at + chrono::Duration::milliseconds(1_000);
    let outcome = ledger
        .insert_batch(&[late, call_of("bob", "b-2", 2)])
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.erased), (1, 1));
    assert_eq!(rows_naming(&ledger, "alice").await, vec![]);
    let mut again = call_of("alice", "new-1", 4);
    again.latency_ms = 10;
    again.occurred_at = erasure.erased_at + chrono::Duration::milliseconds(1_000);
    let outcome = ledger.insert_batch(&[again]).await.unwrap();
    assert_eq!((outcome.inserted, outcome.erased), (1, 0));
    let (rows, _) = export(&ledger, "alice").await;
    assert!(rows >= 1, "a new alice is recorded");
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_export_and_erase() {
    export_and_erase("sqlite").await;
}

#[tokio::test]
async fn postgres_export_and_erase() {
    export_and_erase("postgres").await;
}

/// Events on the writer's queue when the user is erased are dropped when they reach the
/// database, and counted.
async fn queued_events_of_an_erased_user_are_dropped(backend: &str) {
    let db = TestDb::of(backend).await;
    let mut config = db.config();
    config.flush_interval_ms = 60_000; // nothing flushes until asked
    let (ledger, handle) = open(config).await;
    ledger.create_user("carol", None, None).await.unwrap();
    let now = Utc::now();
    for n in 0..50u64 {
        let mut e = call_of("carol", &format!("c-{n}"), n);
        e.occurred_at = now;
        handle.record(e).await.unwrap();
    }
    let mut dave = call_of("dave", "d-1", 1);
    dave.occurred_at = now;
    handle.record(dave).await.unwrap();
    ledger.erase_user("carol", "cli").await.unwrap();
    handle.flush().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.written, m.erased), (1, 50), "{m:?}");
    assert_eq!(rows_naming(&ledger, "carol").await, vec![]);
    handle.shutdown().await.unwrap();
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_queued_events_of_an_erased_user_are_dropped() {
    queued_events_of_an_erased_user_are_dropped("sqlite").await;
}

#[tokio::test]
async fn postgres_queued_events_of_an_erased_user_are_dropped() {
    queued_events_of_an_erased_user_are_dropped("postgres").await;
}

/// Events spooled while PostgreSQL was away, of a user erased meanwhile (through another
/// instance), are dropped when the spool is replayed; the rest are written.
#[tokio::test]
async fn postgres_spooled_events_of_an_erased_user_are_dropped_on_replay() {
    let db = TestDb::postgres().await;
    let direct = connect(&db).await;
    direct.create_user("erin", None, None).await.unwrap();
    let proxy = Proxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut config = db.config();
    config.database_url = db.url_via(proxy.addr);
    config.flush_interval_ms = 60_000;
    let (_, handle) = open(config.clone()).await;
    proxy.set_up(false);
    let now = Utc::now();
    for n in 0..200u64 {
        let user = if n % 2 == 0 { "erin" } else { "frank" };
        let mut e = call_of(user, &format!("s-{n}"), n);
        e.occurred_at = now;
        handle.record(e).await.unwrap();
    }
    handle.shutdown().await.unwrap();
    assert_eq!(handle.metrics().spooled, 200);
    drop(handle);

    direct
        .erase_user("erin", "admin:feedfacecafe")
        .await
        .unwrap();
    proxy.set_up(true);
    let (ledger, handle) = open(config).await;
    wait_until(
        "the spool to be replayed",
        Duration::from_secs(20),
        || async { handle.metrics().spool_bytes == 0 },
    )
    .await;
    handle.shutdown().await.unwrap();
    let m = handle.metrics();
    assert_eq!((m.replayed, m.written, m.erased), (200, 100, 100), "{m:?}");
    assert_eq!(rows_naming(&ledger, "erin").await, vec![]);
    assert_eq!(assert_summaries_match_logs(&ledger).await, 100);
    ledger.close().await;
    direct.close().await;
}
