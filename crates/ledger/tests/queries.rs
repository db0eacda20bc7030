//! The read side against both databases: period usage, trends, daily series, logs, alerts,
//! accounts and billing close-out (export and erasure: `privacy.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

use chrono::{TimeZone, Utc};
use common::*;
use tollgate_domain::{
    AnchorDay, BillingPeriod, KeyLimits, KeyRules, LimitKey, ModelPattern, Provider,
};
use tollgate_ledger::{
    Ledger, LogFilter, NewAlert, NewApiKey, NewSubscription, PlanRecord, StoredRules, UsageEvent,
};

async fn seeded(backend: &str) -> (TestDb, Ledger) {
    let db = TestDb::of(backend).await;
    let ledger = Ledger::connect(&db.url, Default::default()).await.unwrap();
    (db, ledger)
}

fn call(
    id: &str,
    user: &str,
    provider: Provider,
    period: &str,
    day: u32,
    cost: u64,
    status: u16,
) -> UsageEvent {
    let mut e = event(id, 1);
    e.user_id = user.into();
    e.provider = provider;
    e.billing_period = period.into();
    let (y, m) = period.split_once('-').unwrap();
    e.occurred_at = Utc
        .with_ymd_and_hms(y.parse().unwrap(), m.parse().unwrap(), day, 12, 0, 0)
        .unwrap();
    e.cost.total_nanousd = cost;
    e.status = status;
    e.latency_ms = 100;
    e
}

async fn period_usage_trends_and_daily_series(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let events = vec![
        call("a1", "alice", Provider::OpenAi, "2025-03", 31, 1_000, 200),
        call("a2", "alice", Provider::OpenAi, "2025-03", 31, 2_000, 500),
        call(
            "a3",
            "alice",
            Provider::Tavily,
            "2025-03",
            1,
            8_000_000,
            200,
        ),
        call("a4", "alice", Provider::Gemini, "2025-01", 15, 5, 200),
        call("b1", "bob", Provider::Exa, "2025-03", 2, 7, 200),
    ];
    ledger.insert_batch(&events).await.unwrap();

    let march = ledger.usage_for_period("alice", "2025-03").await.unwrap();
    assert_eq!(march.totals.calls, 3);
    assert_eq!(march.totals.cost_nanousd, 8_003_000);
    assert_eq!(march.totals.error_calls, 1);
    assert!((march.error_rate_pct - 100.0 / 3.0).abs() < 1e-9);
    assert!((march.avg_latency_ms - 100.0).abs() < 1e-9);
    assert_eq!(march.per_provider.len(), 9, "every provider listed");
    assert_eq!(march.per_provider[&Provider::OpenAi].calls, 2);
    assert_eq!(march.per_provider[&Provider::OpenAi].error_calls, 1);
    assert_eq!(
        march.per_provider[&Provider::Tavily].cost_nanousd,
        8_000_000
    );
    assert_eq!(
        march.per_provider[&Provider::Exa].calls,
        0,
        "bob's calls are bob's"
    );
    assert!(march.updated_at.is_some());
    // What the counters are rebuilt from after Redis lost them.
    let totals = march.counter_totals();
    assert!(totals.contains(&(LimitKey::ProviderCalls(Provider::OpenAi), 2)));
    assert!(totals.contains(&(LimitKey::ProviderCalls(Provider::Tavily), 1)));
    assert!(totals.contains(&(LimitKey::TotalCalls, 3)));
    assert!(totals.contains(&(LimitKey::Cost, 8_003_000)));
    assert!(
        !totals
            .iter()
            .any(|(k, _)| *k == LimitKey::ProviderTokens(Provider::Tavily)),
        "tavily is not token-billed"
    );
    let empty = ledger.usage_for_period("alice", "2024-01").await.unwrap();
    assert_eq!(empty.totals.calls, 0);
    assert!(empty.updated_at.is_none());

    // On 2025-03-31 the seed's trends skipped February and repeated March.
    let end = BillingPeriod::containing(
        Utc.with_ymd_and_hms(2025, 3, 31, 10, 0, 0).unwrap(),
        AnchorDay::CALENDAR_MONTH,
    );
    let trends = ledger.monthly_trends("alice", end, 6).await.unwrap();
    let keys: Vec<&str> = trends.iter().map(|t| t.billing_period.as_str()).collect();
    assert_eq!(
        keys,
        [
            "2024-10", "2024-11", "2024-12", "2025-01", "2025-02", "2025-03"
        ]
    );
    let calls: Vec<u64> = trends.iter().map(|t| t.totals.calls).collect();
    assert_eq!(calls, [0, 0, 0, 1, 0, 3]);

    let days = ledger
        .daily_series("alice", "2025-03".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(days.len(), 31);
    assert_eq!(days[0].day.to_string(), "2025-03-01");
    assert_eq!((days[0].calls, days[0].cost_nanousd), (1, 8_000_000));
    assert_eq!((days[30].calls, days[30].error_calls), (2, 1));
    assert_eq!(days.iter().map(|d| d.calls).sum::<u64>(), 3);

    let totals = ledger.current_period_totals("2025-03").await.unwrap();
    let users: Vec<(&str, u64)> = totals
        .iter()
        .map(|t| (t.user_id.as_str(), t.totals.calls))
        .collect();
    assert_eq!(users, [("alice", 3), ("bob", 1)]);
    assert_eq!(totals[1].per_provider[&Provider::Exa].calls, 1);
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_period_usage_trends_and_daily_series() {
    period_usage_trends_and_daily_series("sqlite").await;
}

#[tokio::test]
async fn postgres_period_usage_trends_and_daily_series() {
    period_usage_trends_and_daily_series("postgres").await;
}

/// A batch of many users' calls: their summary rows are written several hundred at a time
/// (in statements of up to 200 rows), new rows and increments of existing ones alike, and each
/// user's totals, per provider too, are exactly their own.
async fn many_users_in_one_batch(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let providers = [Provider::OpenAi, Provider::Anthropic, Provider::Serper];
    let batch = |round: u32| -> Vec<UsageEvent> {
        (0..450u64)
            .map(|n| {
                let provider = providers[(n % 3) as usize];
                call(
                    &format!("r{round}-{n}"),
                    &format!("u{n:03}"),
                    provider,
                    "2025-03",
                    1 + round,
                    1_000 + n,
                    200,
                )
            })
            .collect()
    };
    // The first batch makes every summary row; the second adds to each.
    ledger.insert_batch(&batch(0)).await.unwrap();
    ledger.insert_batch(&batch(1)).await.unwrap();
    for n in [0u64, 199, 200, 201, 399, 400, 449] {
        let usage = ledger
            .usage_for_period(&format!("u{n:03}"), "2025-03")
            .await
            .unwrap();
        assert_eq!(usage.totals.calls, 2, "u{n:03}");
        assert_eq!(usage.totals.cost_nanousd, 2 * (1_000 + n), "u{n:03}");
        let provider = providers[(n % 3) as usize];
        assert_eq!(usage.per_provider[&provider].calls, 2, "u{n:03}");
        assert_eq!(
            usage.per_provider.values().map(|p| p.calls).sum::<u64>(),
            2,
            "u{n:03}"
        );
    }
    let totals = ledger.current_period_totals("2025-03").await.unwrap();
    assert_eq!(totals.len(), 450);
    assert!(totals.iter().all(|t| t.totals.calls == 2));
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_many_users_in_one_batch() {
    many_users_in_one_batch("sqlite").await;
}

#[tokio::test]
async fn postgres_many_users_in_one_batch() {
    many_users_in_one_batch("postgres").await;
}

/// A refused call is logged and listed, and counted in nothing but the refusals: no summary,
/// per-provider count, daily series or counter total holds it.
async fn refused_calls_are_logged_and_counted_apart(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let refused = |id: &str, reason: &str, status: u16| {
        let mut e = call(id, "alice", Provider::OpenAi, "2025-03", 2, 0, status);
        e.usage = Default::default();
        e.error_message = Some("refused".into());
        e.refusal_reason = Some(reason.into());
        e
    };
    let events = vec![
        call("ok1", "alice", Provider::OpenAi, "2025-03", 2, 1_000, 200),
        refused("no1", "usage_limit_exceeded", 429),
        refused("no2", "usage_limit_exceeded", 429),
        refused("no3", "provider_not_in_plan", 403),
    ];
    let outcome = ledger.insert_batch(&events).await.unwrap();
    assert_eq!(outcome.inserted, 4);
    // Replayed: stored once, counted once.
    assert_eq!(ledger.insert_batch(&events).await.unwrap().duplicates, 4);

    let march = ledger.usage_for_period("alice", "2025-03").await.unwrap();
    assert_eq!(march.totals.calls, 1);
    assert_eq!(march.totals.error_calls, 0);
    assert_eq!(march.totals.latency_ms_sum, 100);
    assert_eq!(march.per_provider[&Provider::OpenAi].calls, 1);
    assert!(march.counter_totals().contains(&(LimitKey::TotalCalls, 1)));
    let days = ledger
        .daily_series("alice", "2025-03".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        days.iter()
            .map(|d| (d.calls, d.error_calls))
            .fold((0, 0), |a, d| (a.0 + d.0, a.1 + d.1)),
        (1, 0)
    );
    let reasons = ledger.refused_calls("alice", "2025-03").await.unwrap();
    assert_eq!(reasons.len(), 2);
    assert_eq!(reasons["usage_limit_exceeded"], 2);
    assert_eq!(reasons["provider_not_in_plan"], 1);
    assert!(
        ledger
            .refused_calls("alice", "2025-02")
            .await
            .unwrap()
            .is_empty()
    );
    let everyone = ledger.refusals("2025-03").await.unwrap();
    let everyone: Vec<(Provider, &str, u64)> = everyone
        .iter()
        .map(|r| (r.provider, r.reason.as_str(), r.calls))
        .collect();
    assert_eq!(
        everyone,
        [
            (Provider::OpenAi, "provider_not_in_plan", 1),
            (Provider::OpenAi, "usage_limit_exceeded", 2),
        ]
    );
    assert!(ledger.refusals("2025-02").await.unwrap().is_empty());

    let filter = |refused| LogFilter {
        user_id: Some("alice".into()),
        refused,
        ..LogFilter::default()
    };
    assert_eq!(
        ledger.usage_logs(&filter(None), 10, 0).await.unwrap().total,
        4
    );
    let only = ledger.usage_logs(&filter(Some(true)), 10, 0).await.unwrap();
    assert_eq!(only.total, 3);
    assert!(
        only.rows
            .iter()
            .all(|r| r.refusal_reason.is_some() && r.cost_total_nanousd == 0)
    );
    let admitted = ledger
        .usage_logs(&filter(Some(false)), 10, 0)
        .await
        .unwrap();
    assert_eq!(admitted.total, 1);
    assert_eq!(admitted.rows[0].refusal_reason, None);
    assert_eq!(assert_summaries_match_logs(&ledger).await, 4);
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_refused_calls_are_logged_and_counted_apart() {
    refused_calls_are_logged_and_counted_apart("sqlite").await;
}

#[tokio::test]
async fn postgres_refused_calls_are_logged_and_counted_apart() {
    refused_calls_are_logged_and_counted_apart("postgres").await;
}

/// Two calls of one user on one day at the largest amounts an event can carry, written in two
/// batches so that the second adds to the stored summary.
async fn amounts_beyond_bigint_saturate(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let huge = |id: &str| {
        let mut e = call(id, "alice", Provider::OpenAi, "2025-03", 31, u64::MAX, 200);
        e.usage.input_tokens = u64::MAX;
        e.usage.output_tokens = u64::MAX;
        e.usage.units = u64::MAX;
        e.latency_ms = u64::MAX;
        e
    };
    ledger.insert_batch(&[huge("h1")]).await.unwrap();
    ledger.insert_batch(&[huge("h2")]).await.unwrap();

    let max = i64::MAX as u64;
    let march = ledger.usage_for_period("alice", "2025-03").await.unwrap();
    let t = &march.totals;
    assert_eq!(t.calls, 2);
    assert_eq!(
        (t.tokens, t.input_tokens, t.output_tokens, t.units),
        (max, max, max, max)
    );
    assert_eq!((t.cost_nanousd, t.latency_ms_sum), (max, max));
    let openai = &march.per_provider[&Provider::OpenAi];
    assert_eq!(
        (openai.calls, openai.tokens, openai.cost_nanousd),
        (2, max, max)
    );
    let days = ledger
        .daily_series("alice", "2025-03".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (days[30].calls, days[30].tokens, days[30].cost_nanousd),
        (2, max, max)
    );
    let after = Utc.with_ymd_and_hms(2025, 4, 1, 0, 10, 0).unwrap();
    assert_eq!(ledger.close_periods(after).await.unwrap(), 1);
    let bill = &ledger.billing_history("alice").await.unwrap()[0];
    assert_eq!((bill.total_calls, bill.usage_cost_nanousd), (2, i64::MAX));

    if let tollgate_ledger::Db::Sqlite(pool) = ledger.db() {
        let types: Vec<(String, String)> = sqlx::query_as(
            "SELECT typeof(total_tokens), typeof(total_cost_nanousd) FROM usage_summaries",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        assert_eq!(types, [("integer".to_owned(), "integer".to_owned())]);
        // A sum an earlier version let overflow into REAL is repaired by the migration.
        sqlx::query("UPDATE usage_summaries SET total_tokens = 1.8e19")
            .execute(pool)
            .await
            .unwrap();
        assert!(ledger.usage_for_period("alice", "2025-03").await.is_err());
        sqlx::raw_sql(include_str!(
            "../migrations/sqlite/0004_summaries_stay_integer.sql"
        ))
        .execute(pool)
        .await
        .unwrap();
        let march = ledger.usage_for_period("alice", "2025-03").await.unwrap();
        assert_eq!(march.totals.tokens, max);
    }
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_amounts_beyond_bigint_saturate() {
    amounts_beyond_bigint_saturate("sqlite").await;
}

#[tokio::test]
async fn postgres_amounts_beyond_bigint_saturate() {
    amounts_beyond_bigint_saturate("postgres").await;
}

async fn usage_log_pages_and_filters(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let events: Vec<_> = (0..50u64).map(|n| event(format!("l-{n:02}"), n)).collect();
    ledger.insert_batch(&events).await.unwrap();

    let all = ledger
        .usage_logs(&LogFilter::default(), 10, 0)
        .await
        .unwrap();
    assert_eq!(all.total, 50);
    assert_eq!(all.rows.len(), 10);
    assert!(
        all.rows
            .windows(2)
            .all(|w| w[0].occurred_at >= w[1].occurred_at),
        "newest first"
    );
    let last_page = ledger
        .usage_logs(&LogFilter::default(), 10, 45)
        .await
        .unwrap();
    assert_eq!(last_page.rows.len(), 5);

    let user1 = LogFilter {
        user_id: Some("user-1".into()),
        provider: Some(Provider::OpenAi),
        ..LogFilter::default()
    };
    let page = ledger.usage_logs(&user1, 100, 0).await.unwrap();
    let expected = events
        .iter()
        .filter(|e| e.user_id == "user-1" && e.provider == Provider::OpenAi)
        .count();
    assert_eq!(page.total as usize, expected);
    assert!(
        page.rows
            .iter()
            .all(|r| r.user_id == "user-1" && r.provider == "openai")
    );

    let errors = LogFilter {
        errors_only: true,
        ..LogFilter::default()
    };
    let page = ledger.usage_logs(&errors, 100, 0).await.unwrap();
    assert_eq!(
        page.total as usize,
        events.iter().filter(|e| e.status >= 400).count()
    );

    let window = LogFilter {
        from: Some(nov(5, 0)),
        to: Some(nov(10, 0)),
        ..LogFilter::default()
    };
    let page = ledger.usage_logs(&window, 100, 0).await.unwrap();
    let expected = events
        .iter()
        .filter(|e| e.occurred_at >= nov(5, 0) && e.occurred_at < nov(10, 0))
        .count();
    assert_eq!(page.total as usize, expected);
    assert!(expected > 0);
    let row = &page.rows[0];
    let original = events.iter().find(|e| e.event_id == row.event_id).unwrap();
    assert_eq!(row.cost_total_nanousd as u64, original.cost.total_nanousd);
    assert_eq!(row.occurred_at, original.occurred_at);
    assert_eq!(row.key_id, original.key_id);
    assert!(original.request_id.is_some());
    assert_eq!(row.request_id, original.request_id);
    assert_eq!(row.price_version, "2026-08-21");
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_usage_log_pages_and_filters() {
    usage_log_pages_and_filters("sqlite").await;
}

#[tokio::test]
async fn postgres_usage_log_pages_and_filters() {
    usage_log_pages_and_filters("postgres").await;
}

fn alert(threshold: u32, limit_key: &str) -> NewAlert {
    NewAlert {
        user_id: "alice".into(),
        billing_period: "2026-11".into(),
        limit_key: limit_key.into(),
        threshold_percentage: threshold,
        alert_type: if threshold == 100 {
            "limit_reached"
        } else {
            "usage_warning"
        }
        .into(),
        provider: Some(Provider::Tavily),
        title: "API Usage Notice - Tavily".into(),
        message: "You have used 16 of 20 tavily API calls (80% of your limit).".into(),
        severity: "info".into(),
    }
}

async fn alerts_accounts_and_billing(backend: &str) {
    let (_db, ledger) = seeded(backend).await;

    // Alerts: once per (user, limit, threshold, period).
    assert!(
        ledger
            .insert_alert_once(&alert(80, "tavily_calls"))
            .await
            .unwrap()
    );
    assert!(
        !ledger
            .insert_alert_once(&alert(80, "tavily_calls"))
            .await
            .unwrap()
    );
    assert!(
        ledger
            .insert_alert_once(&alert(90, "tavily_calls"))
            .await
            .unwrap()
    );
    assert!(
        ledger
            .insert_alert_once(&alert(80, "monthly_cost"))
            .await
            .unwrap()
    );
    let alerts = ledger.alerts("alice", false, 50).await.unwrap();
    assert_eq!(alerts.len(), 3);
    assert!(ledger.mark_alert_read("alice", alerts[0].id).await.unwrap());
    assert!(
        !ledger
            .mark_alert_read("mallory", alerts[1].id)
            .await
            .unwrap(),
        "not her alert"
    );
    assert!(ledger.mark_alert_sent(alerts[1].id).await.unwrap());
    assert_eq!(ledger.alerts("alice", true, 50).await.unwrap().len(), 2);
    assert_eq!(ledger.unread_alert_count("alice").await.unwrap(), 2);
    assert_eq!(ledger.alerts("alice", false, 1).await.unwrap().len(), 1);

    // Users and hashed keys.
    assert!(
        ledger
            .create_user("alice", Some("Alice"), None)
            .await
            .unwrap()
    );
    assert!(!ledger.create_user("alice", None, None).await.unwrap());
    let key = NewApiKey {
        id: "k1".into(),
        user_id: "alice".into(),
        key_hash: "sha256:abcd".into(),
        prefix: "tg_ab12".into(),
        name: Some("ci".into()),
        rules: StoredRules::default(),
    };
    ledger.create_api_key(&key).await.unwrap();
    assert!(
        ledger.create_api_key(&key).await.is_err(),
        "key_hash is unique"
    );
    assert_eq!(
        ledger
            .api_key_by_hash("sha256:abcd")
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "alice"
    );
    assert_eq!(ledger.active_api_keys().await.unwrap().len(), 1);
    // A key's own rules are stored and changed, and read back as they were given.
    assert!(
        ledger
            .api_key("k1")
            .await
            .unwrap()
            .unwrap()
            .rules()
            .unwrap()
            .is_empty(),
        "no rules"
    );
    let rules = KeyRules {
        expires_at: Some("2027-01-01T00:00:00Z".parse().unwrap()),
        providers: Some(vec![Provider::OpenAi, Provider::Anthropic]),
        models: [(
            Provider::OpenAi,
            vec![ModelPattern::parse("gpt-4o*").unwrap()],
        )]
        .into(),
        limits: KeyLimits {
            cost_budget_nanousd: Some(25_000_000_000),
            calls_per_minute: Some(60),
            ..KeyLimits::default()
        },
    };
    assert!(
        ledger
            .update_api_key("k1", Some("ci"), &StoredRules::of(&rules))
            .await
            .unwrap()
    );
    let stored = ledger.api_key("k1").await.unwrap().unwrap();
    assert_eq!(stored.rules().unwrap(), rules);
    assert!(
        !ledger
            .update_api_key("k9", None, &StoredRules::default())
            .await
            .unwrap()
    );
    assert!(ledger.revoke_api_key("k1", Utc::now()).await.unwrap());
    assert!(
        !ledger
            .update_api_key("k1", None, &StoredRules::default())
            .await
            .unwrap(),
        "a revoked key does not change"
    );
    assert!(!ledger.revoke_api_key("k1", Utc::now()).await.unwrap());
    assert!(ledger.active_api_keys().await.unwrap().is_empty());
    assert_eq!(ledger.api_keys_of("alice").await.unwrap().len(), 1);

    // A subscription to a plan mirrored from the config, created in October 2026.
    ledger
        .upsert_plan(&PlanRecord {
            id: "pro".into(),
            name: "Pro".into(),
            tier: "pro".into(),
            price_monthly_nanousd: 49_000_000_000,
            price_yearly_nanousd: 490_000_000_000,
            limits_json: "{}".into(),
            features_json: "[]".into(),
            description: None,
            is_active: true,
        })
        .await
        .unwrap();
    let sub = NewSubscription {
        user_id: "alice".into(),
        plan_id: "pro".into(),
        billing_cycle: "monthly".into(),
        anchor_day: AnchorDay::CALENDAR_MONTH,
        status: "active".into(),
        auto_renew: true,
    };
    ledger.upsert_subscription(&sub).await.unwrap();
    assert_eq!(
        ledger.subscription("alice").await.unwrap().unwrap().plan_id,
        "pro"
    );

    ledger
        .insert_batch(&[
            call("n1", "alice", Provider::OpenAi, "2026-11", 3, 1_000, 200),
            call("n2", "alice", Provider::Tavily, "2026-11", 4, 2_000, 200),
            call("n3", "bob", Provider::OpenAi, "2026-11", 5, 30, 200),
            call("d1", "bob", Provider::OpenAi, "2026-12", 1, 40, 200),
        ])
        .await
        .unwrap();

    // Before the boundary nothing closes; after it, once per (user, period).
    let before = Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap();
    let after = Utc.with_ymd_and_hms(2026, 12, 1, 0, 10, 0).unwrap();
    assert_eq!(ledger.close_periods(before).await.unwrap(), 0);
    assert_eq!(ledger.close_periods(after).await.unwrap(), 2);
    assert_eq!(
        ledger.close_periods(after).await.unwrap(),
        0,
        "exactly once"
    );
    let bills = ledger.billing_history("alice").await.unwrap();
    assert_eq!(bills.len(), 1);
    let bill = &bills[0];
    assert_eq!(bill.billing_period, "2026-11");
    assert_eq!(bill.plan_name.as_deref(), Some("Pro"));
    assert_eq!(bill.base_cost_nanousd, 49_000_000_000);
    assert_eq!(bill.usage_cost_nanousd, 3_000);
    assert_eq!(bill.total_calls, 2);
    let details: serde_json::Value = serde_json::from_str(&bill.usage_details).unwrap();
    assert_eq!(details["tavily"]["cost_nanousd"], 2_000);
    let bob = ledger.billing_history("bob").await.unwrap();
    assert_eq!(bob.len(), 1, "December is still open");
    assert_eq!(
        bob[0].base_cost_nanousd, 0,
        "no subscription, no base price"
    );
    ledger.close().await;
}

#[tokio::test]
async fn sqlite_alerts_accounts_and_billing() {
    alerts_accounts_and_billing("sqlite").await;
}

#[tokio::test]
async fn postgres_alerts_accounts_and_billing() {
    alerts_accounts_and_billing("postgres").await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_rejects_unknown_urls() {
    let db = TestDb::sqlite().await;
    tollgate_ledger::migrate(&db.url).await.unwrap();
    tollgate_ledger::migrate(&db.url).await.unwrap();
    let pg = TestDb::postgres().await;
    tollgate_ledger::migrate(&pg.url).await.unwrap();
    tollgate_ledger::migrate(&pg.url).await.unwrap();
    let err = tollgate_ledger::migrate("mysql://x:pw@h/db")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mysql://x:***@h/db"), "{err}");
}

/// A job polled many times, from several tasks at once, bills each credit it reports once.
async fn job_credits_are_billed_once(backend: &str) {
    let (_db, ledger) = seeded(backend).await;
    let unbilled = |job: &'static str, reported: u64| {
        let ledger = ledger.clone();
        async move {
            ledger
                .unbilled_job_units("ana", Provider::Firecrawl, job, reported)
                .await
                .unwrap()
        }
    };
    assert_eq!(unbilled("crawl-1", 5).await, 5);
    assert_eq!(unbilled("crawl-1", 5).await, 0, "the same total again");
    assert_eq!(unbilled("crawl-1", 12).await, 7);
    assert_eq!(
        unbilled("crawl-1", 9).await,
        0,
        "a lower total bills nothing"
    );
    assert_eq!(unbilled("crawl-2", 3).await, 3, "jobs are apart");
    assert_eq!(
        ledger
            .unbilled_job_units("bob", Provider::Firecrawl, "crawl-1", 4)
            .await
            .unwrap(),
        4,
        "users are apart"
    );

    // Concurrent polls reporting rising totals split the increase between them exactly.
    let polls = (1..=40u64).map(|total| unbilled("crawl-3", total));
    let billed: u64 = futures_sum(polls).await;
    assert_eq!(billed, 40);
    ledger.close().await;
}

async fn futures_sum(
    polls: impl Iterator<Item = impl Future<Output = u64> + Send + 'static>,
) -> u64 {
    let tasks: Vec<_> = polls.map(tokio::spawn).collect();
    let mut sum = 0;
    for t in tasks {
        sum += t.await.unwrap();
    }
    sum
}

#[tokio::test]
async fn sqlite_job_credits_are_billed_once() {
    job_credits_are_billed_once("sqlite").await;
}

#[tokio::test]
async fn postgres_job_credits_are_billed_once() {
    job_credits_are_billed_once("postgres").await;
}
