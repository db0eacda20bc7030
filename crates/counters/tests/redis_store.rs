#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The Redis store against a real Redis (`REDIS_URL`, default the local one), each test under a
//! random key prefix of its own that is deleted afterwards.

mod common;

use std::sync::Arc;

use common::{Prefix, calls, now, period_at, redis_url, request};
use tokio::sync::Barrier;
use tollgate_counters::{
    CounterError, CounterStore, PeriodTotals, RedisConfig, RedisStore, ReserveOutcome, Reserved,
    ResilientConfig, ResilientStore, SeedFuture, Seeder,
};
use tollgate_domain::{Amount, Limit, LimitKey, Provider, Standing};

/// Generous: these tests are about exactness under concurrency, not timeouts.
const TIMEOUT_MS: u64 = 5_000;

/// Seeds every user-period as new (no usage in the ledger).
fn zero_seeder() -> Seeder {
    Arc::new(|_, _| -> SeedFuture { Box::pin(async { Ok(PeriodTotals::default()) }) })
}

async fn seed_empty(store: &RedisStore, user: &str) {
    store.seed(user, period_at(now()), &[], &[]).await.unwrap();
}

/// 200 concurrent one-call reservations against a limit of 100 calls, spread over `stores`.
async fn two_hundred_against_one_hundred(stores: Vec<Arc<RedisStore>>) {
    let user = "racer";
    seed_empty(&stores[0], user).await;
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&stores[i % stores.len()]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [Limit {
                    key: LimitKey::ProviderCalls(Provider::OpenAi),
                    max: 100,
                }];
                barrier.wait().await;
                match store.reserve(request(user, &limits, calls(1), now())).await {
                    Ok(Reserved::Admitted(r)) => {
                        let settled = store.settle(&r, calls(1)).await.unwrap();
                        let used = settled.expect("an initialised user-period answers its use");
                        used.used(LimitKey::ProviderCalls(Provider::OpenAi))
                    }
                    Ok(Reserved::Denied(d)) => {
                        assert_eq!(d.limit.max, 100);
                        None
                    }
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut settled_at = Vec::new();
    for t in tasks {
        settled_at.extend(t.await.unwrap());
    }
    assert_eq!(settled_at.len(), 100);
    // Each settle saw the counter right after its own increment, whichever instance sent it:
    // every value from 1 to 100 exactly once (what makes each alert threshold crossed once).
    settled_at.sort_unstable();
    assert_eq!(settled_at, (1..=100).collect::<Vec<u64>>());
    let s = stores[0]
        .standing(
            user,
            period_at(now()),
            LimitKey::ProviderCalls(Provider::OpenAi),
        )
        .await
        .unwrap();
    assert_eq!(
        s,
        Standing {
            used: 100,
            reserved: 0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_hundred_of_two_hundred_with_one_store() {
    let prefix = Prefix::new(&redis_url());
    let store = Arc::new(prefix.store(TIMEOUT_MS));
    two_hundred_against_one_hundred(vec![store]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_hundred_of_two_hundred_with_three_instances() {
    let prefix = Prefix::new(&redis_url());
    let stores = (0..3).map(|_| Arc::new(prefix.store(TIMEOUT_MS))).collect();
    two_hundred_against_one_hundred(stores).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_budget_and_cost_cap_hold_while_calls_settle_below_their_bounds() {
    let prefix = Prefix::new(&redis_url());
    let store = Arc::new(prefix.store(TIMEOUT_MS));
    let user = "budget";
    seed_empty(&store, user).await;
    const TOKENS: u64 = 10_000;
    const COST: u64 = 900_000;
    let barrier = Arc::new(Barrier::new(50));
    let tasks: Vec<_> = (0..50u64)
        .map(|i| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [
                    Limit {
                        key: LimitKey::TotalTokens,
                        max: TOKENS,
                    },
                    Limit {
                        key: LimitKey::Cost,
                        max: COST,
                    },
                ];
                let bound = Amount {
                    calls: 1,
                    tokens: 500,
                    cost_nanousd: 40_000,
                };
                barrier.wait().await;
                let mut used = Amount::default();
                // Each client calls until refused, each call using between 20 % and 100 % of
                // its bound.
                for round in 0u64.. {
                    match store.reserve(request(user, &limits, bound, now())).await {
                        Ok(Reserved::Admitted(r)) => {
                            let actual = Amount {
                                calls: 1,
                                tokens: 100 + (i * 37 + round * 91) % 401,
                                cost_nanousd: 8_000 + (i * 7_919 + round * 104_729) % 32_001,
                            };
                            tokio::task::yield_now().await;
                            store.settle(&r, actual).await.unwrap();
                            used.calls += 1;
                            used.tokens += actual.tokens;
                            used.cost_nanousd += actual.cost_nanousd;
                        }
                        Ok(Reserved::Denied(_)) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                used
            })
        })
        .collect();
    let mut total = Amount::default();
    for t in tasks {
        let used = t.await.unwrap();
        total.calls += used.calls;
        total.tokens += used.tokens;
        total.cost_nanousd += used.cost_nanousd;
    }
    assert!(total.tokens <= TOKENS, "{total:?}");
    assert!(total.cost_nanousd <= COST, "{total:?}");
    // Calls used less than their bounds, so more fit than the bounds alone would allow.
    assert!(total.calls > 20, "{total:?}");
    let period = period_at(now());
    for (key, expected) in [
        (LimitKey::TotalTokens, total.tokens),
        (LimitKey::ProviderTokens(Provider::OpenAi), total.tokens),
        (LimitKey::Cost, total.cost_nanousd),
        (LimitKey::TotalCalls, total.calls),
    ] {
        let s = store.standing(user, period, key).await.unwrap();
        assert_eq!(
            s,
            Standing {
                used: expected,
                reserved: 0
            },
            "{key}"
        );
    }
}

#[tokio::test]
async fn unsettled_reservations_expire_and_give_their_amount_back() {
    let prefix = Prefix::new(&redis_url());
    let store = prefix.store(TIMEOUT_MS);
    let user = "lost";
    seed_empty(&store, user).await;
    let limits = [Limit {
        key: LimitKey::TotalCalls,
        max: 10,
    }];
    let t0 = now();
    let mut lost = Vec::new();
    for _ in 0..10 {
        let mut r = request(user, &limits, calls(1), t0);
        r.expires_at = t0 + chrono::Duration::seconds(30);
        let Ok(Reserved::Admitted(reservation)) = store.reserve(r).await else {
            panic!("fits");
        };
        lost.push(reservation);
    }
    let Ok(Reserved::Denied(denial)) = store.reserve(request(user, &limits, calls(1), t0)).await
    else {
        panic!("10 of 10 held");
    };
    assert_eq!(
        denial.standing,
        Standing {
            used: 0,
            reserved: 10
        }
    );
    assert_eq!(denial.limit.key, LimitKey::TotalCalls);
    assert_eq!(denial.resets_at, period_at(t0).end());
    // Once they expire, the whole limit is available again: no false denial.
    let later = t0 + chrono::Duration::seconds(30);
    let mut fresh = Vec::new();
    for _ in 0..10 {
        let Ok(Reserved::Admitted(r)) =
            store.reserve(request(user, &limits, calls(1), later)).await
        else {
            panic!("expired holds were given back");
        };
        fresh.push(r);
    }
    // A late settle of an expired call counts its use once and subtracts nothing.
    assert!(!store.settle_held(&lost[0], calls(1)).await.unwrap());
    assert!(!store.release_held(&lost[1]).await.unwrap());
    let s = store
        .standing(user, period_at(t0), LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(
        s,
        Standing {
            used: 1,
            reserved: 10
        }
    );
    // Settling a live one twice (a retry after a timeout): the second is ignored, and answers
    // no settled use (it moved nothing, so it crosses nothing).
    assert!(store.settle_held(&fresh[0], calls(1)).await.unwrap());
    assert!(!store.settle_held(&fresh[0], calls(1)).await.unwrap());
    assert_eq!(store.settle_used(&fresh[0], calls(1)).await.unwrap(), None);
    assert!(!store.release_held(&fresh[0]).await.unwrap());
    assert!(store.release_held(&fresh[1]).await.unwrap());
    assert!(!store.release_held(&fresh[1]).await.unwrap());
    let s = store
        .standing(user, period_at(t0), LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(
        s,
        Standing {
            used: 2,
            reserved: 8
        }
    );
    assert!(prefix.key_count() == 2, "one hash and one expiry set");
}

#[tokio::test]
async fn lost_counters_need_a_seed_and_are_rebuilt_from_the_ledgers_totals() {
    let prefix = Prefix::new(&redis_url());
    let store = prefix.store(TIMEOUT_MS);
    let user = "rebuilt";
    let limits = [Limit {
        key: LimitKey::ProviderTokens(Provider::OpenAi),
        max: 1_000,
    }];
    let bound = Amount {
        calls: 1,
        tokens: 300,
        cost_nanousd: 0,
    };
    // A user-period never seen needs a seed; nothing is written until then.
    assert_eq!(
        store
            .reserve_seen(request(user, &limits, bound, now()))
            .await
            .unwrap(),
        ReserveOutcome::NeedsSeed
    );
    assert!(matches!(
        store.reserve(request(user, &limits, bound, now())).await,
        Err(CounterError::NeedsSeed { .. })
    ));
    assert_eq!(prefix.key_count(), 0);
    seed_empty(&store, user).await;
    let Ok(Reserved::Admitted(r)) = store.reserve(request(user, &limits, bound, now())).await
    else {
        panic!()
    };
    let settled = store.settle(&r, bound).await.unwrap().unwrap();
    assert_eq!(
        settled.used(LimitKey::ProviderTokens(Provider::OpenAi)),
        Some(300)
    );
    // A counter the call did not move (no cost here) is read as it stands.
    assert_eq!(settled.used(LimitKey::Cost), Some(0));

    // Redis loses everything under the prefix.
    prefix.delete_keys();
    assert_eq!(
        store
            .reserve_seen(request(user, &limits, bound, now()))
            .await
            .unwrap(),
        ReserveOutcome::NeedsSeed
    );
    // A settle that arrives meanwhile writes nothing (the ledger's totals will include it) and
    // knows no settled use.
    assert_eq!(store.settle(&r, bound).await.unwrap(), None);
    assert_eq!(prefix.key_count(), 0);
    let totals = [
        (LimitKey::ProviderTokens(Provider::OpenAi), 800),
        (LimitKey::TotalTokens, 800),
        (LimitKey::Cost, 12_345),
    ];
    let period = period_at(now());
    assert!(store.seed(user, period, &totals, &[]).await.unwrap());
    // A second seeder (another instance) does not overwrite the live counters.
    assert!(!store.seed(user, period, &[], &[]).await.unwrap());
    let Ok(Reserved::Denied(d)) = store.reserve(request(user, &limits, bound, now())).await else {
        panic!("800 + 300 > 1,000");
    };
    assert_eq!(
        d.standing,
        Standing {
            used: 800,
            reserved: 0
        }
    );
    let cost = store.standing(user, period, LimitKey::Cost).await.unwrap();
    assert_eq!(cost.used, 12_345);

    // The resilient store seeds through its seeder by itself.
    prefix.delete_keys();
    let seeder: Seeder = Arc::new(|user, period| -> SeedFuture {
        assert_eq!(user, "rebuilt");
        assert_eq!(period, period_at(now()));
        Box::pin(async {
            Ok(PeriodTotals {
                plan: vec![(LimitKey::ProviderTokens(Provider::OpenAi), 600)],
                keys: Vec::new(),
            })
        })
    });
    let resilient =
        ResilientStore::new(prefix.store(TIMEOUT_MS), seeder, ResilientConfig::default());
    let Ok(Reserved::Admitted(_)) = resilient
        .reserve(request(user, &limits, bound, now()))
        .await
    else {
        panic!("600 + 300 fits");
    };
    let Ok(Reserved::Denied(_)) = resilient
        .reserve(request(user, &limits, bound, now()))
        .await
    else {
        panic!("600 + 300 held + 300 does not");
    };
    assert_eq!(resilient.stats().seeded, 1);
    assert!(!resilient.is_degraded());
}

#[tokio::test]
async fn one_round_trip_per_operation() {
    let prefix = Prefix::new(&redis_url());
    let store = prefix.store(TIMEOUT_MS);
    let resilient = ResilientStore::new(
        prefix.store(TIMEOUT_MS),
        zero_seeder(),
        ResilientConfig::default(),
    );
    let limits = [Limit {
        key: LimitKey::TotalCalls,
        max: 1_000,
    }];
    // The first reserve needs a seed: reserve, seed, reserve (and maybe a script load each).
    let Ok(Reserved::Admitted(r)) = resilient
        .reserve(request("rt", &limits, calls(1), now()))
        .await
    else {
        panic!()
    };
    resilient.settle(&r, calls(1)).await.unwrap();
    let before = resilient.redis().stats();
    for _ in 0..10 {
        let Ok(Reserved::Admitted(r)) = resilient
            .reserve(request("rt", &limits, calls(1), now()))
            .await
        else {
            panic!()
        };
        resilient.settle(&r, calls(1)).await.unwrap();
    }
    let after = resilient.redis().stats();
    assert_eq!(after.operations - before.operations, 20);
    assert_eq!(after.round_trips - before.round_trips, 20);
    assert_eq!(after.failures, 0);
    // The keys expire after the period plus the grace.
    let ttl: i64 = {
        let client = redis::Client::open(redis_url()).unwrap();
        let mut con = client.get_connection().unwrap();
        redis::cmd("TTL")
            .arg(format!("{}{{u:rt}}:{}", prefix.prefix, period_at(now())))
            .query(&mut con)
            .unwrap()
    };
    let expected = (period_at(now()).end() - now()).num_seconds() + 2 * 86_400;
    assert!((expected - 5..=expected + 5).contains(&ttl), "{ttl}");
    drop(store);
}

#[test]
fn a_prefix_with_braces_is_refused() {
    let mut config = tollgate_counters::RedisConfig::new("redis://127.0.0.1:6379", 50);
    config.key_prefix = "{x}".to_owned();
    assert!(matches!(
        RedisStore::new(config),
        Err(CounterError::Config(_))
    ));
}

/// 200 concurrent calls, spread over three stores, against a key's cost budget that allows 100:
/// exactly 100, with the plan's counters and the key's moved in the same step; a restart of
/// Redis rebuilds the key's budget from the seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_budget_admits_exactly_its_value_across_instances() {
    let prefix = Prefix::new(&redis_url());
    let stores: Vec<Arc<RedisStore>> = (0..3).map(|_| Arc::new(prefix.store(TIMEOUT_MS))).collect();
    let user = "keyed";
    seed_empty(&stores[0], user).await;
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&stores[i % 3]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [
                    Limit {
                        key: LimitKey::TotalCalls,
                        max: 1_000,
                    },
                    Limit {
                        key: LimitKey::KeyCost,
                        max: 100 * 1_000_000,
                    },
                ];
                let amount = Amount {
                    calls: 1,
                    tokens: 10,
                    cost_nanousd: 1_000_000,
                };
                barrier.wait().await;
                let request = tollgate_counters::ReserveRequest {
                    key: "key_a",
                    ..request(user, &limits, amount, now())
                };
                match store.reserve(request).await.unwrap() {
                    Reserved::Admitted(r) => {
                        assert_eq!(r.key, "key_a");
                        store.settle(&r, amount).await.unwrap();
                        true
                    }
                    Reserved::Denied(d) => {
                        assert_eq!(d.limit.key, LimitKey::KeyCost);
                        false
                    }
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 100);
    let period = period_at(now());
    let cost = stores[1]
        .key_standing(user, period, "key_a", LimitKey::KeyCost)
        .await
        .unwrap();
    assert_eq!(
        cost,
        Standing {
            used: 100_000_000,
            reserved: 0
        }
    );
    let tokens = stores[2]
        .key_standing(user, period, "key_a", LimitKey::KeyTokens)
        .await
        .unwrap();
    assert_eq!(tokens.used, 1_000);
    let total = stores[0]
        .standing(user, period, LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(total.used, 100);

    // Lost with Redis's data, rebuilt from the ledger's totals: the key's budget is still spent.
    prefix.delete_keys();
    let limits = [Limit {
        key: LimitKey::KeyCost,
        max: 100 * 1_000_000,
    }];
    let one = tollgate_counters::ReserveRequest {
        key: "key_a",
        ..request(user, &limits, calls(1), now())
    };
    assert!(matches!(
        stores[0].reserve_seen(one).await.unwrap(),
        ReserveOutcome::NeedsSeed
    ));
    let used = Amount {
        calls: 100,
        tokens: 1_000,
        cost_nanousd: 100_000_000,
    };
    let seeded = stores[0]
        .seed(
            user,
            period,
            &[(LimitKey::TotalCalls, 100)],
            &[("key_a".to_owned(), used)],
        )
        .await
        .unwrap();
    assert!(seeded);
    let costly = tollgate_counters::ReserveRequest {
        amount: Amount {
            calls: 1,
            tokens: 0,
            cost_nanousd: 1,
        },
        ..one
    };
    assert!(matches!(
        stores[0].reserve(costly).await.unwrap(),
        Reserved::Denied(_)
    ));
    // Another key of the same user is not held back by it.
    let other = tollgate_counters::ReserveRequest {
        key: "key_b",
        ..costly
    };
    assert!(matches!(
        stores[0].reserve(other).await.unwrap(),
        Reserved::Admitted(_)
    ));
}

/// A per-minute limit of 60 under 200 concurrent callers on three instances: exactly 60 in the
/// window, the others told the seconds to its end; the window's hash is gone with the minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minute_window_admits_exactly_its_limit_across_instances() {
    let prefix = Prefix::new(&redis_url());
    let stores: Vec<Arc<RedisStore>> = (0..3).map(|_| Arc::new(prefix.store(TIMEOUT_MS))).collect();
    let user = "minute";
    seed_empty(&stores[0], user).await;
    // One fixed instant for every call: the window is the same whenever the test runs.
    let at = now();
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&stores[i % 3]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [Limit {
                    key: LimitKey::KeyCallsPerMinute,
                    max: 60,
                }];
                barrier.wait().await;
                let request = tollgate_counters::ReserveRequest {
                    key: "key_m",
                    ..request(user, &limits, calls(1), at)
                };
                match store.reserve(request).await.unwrap() {
                    Reserved::Admitted(r) => {
                        assert_eq!(r.window, Some(tollgate_domain::minute_window(at)));
                        store.settle(&r, calls(1)).await.unwrap();
                        true
                    }
                    Reserved::Denied(d) => {
                        assert!((1..=60).contains(&d.retry_after_secs), "{d:?}");
                        assert_eq!(d.resets_at.timestamp() % 60, 0);
                        false
                    }
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 60);
    // The next minute opens a new window; a settle of the old one's call is not counted in it.
    let limits = [Limit {
        key: LimitKey::CallsPerMinute(None),
        max: 1,
    }];
    let next = at + chrono::Duration::seconds(60);
    // (The next minute may be in the next billing period.)
    stores[0]
        .seed(user, period_at(next), &[], &[])
        .await
        .unwrap();
    let first = stores[0]
        .reserve(request(user, &limits, calls(1), next))
        .await
        .unwrap();
    let Reserved::Admitted(first) = first else {
        panic!("a new window admits");
    };
    assert!(matches!(
        stores[1]
            .reserve(request(user, &limits, calls(1), next))
            .await
            .unwrap(),
        Reserved::Denied(_)
    ));
    // A clock a minute behind counts in the newer window: never reopens the old one.
    assert!(matches!(
        stores[2]
            .reserve(request(user, &limits, calls(1), at))
            .await
            .unwrap(),
        Reserved::Denied(_)
    ));
    stores[0].release(&first).await.unwrap();
    assert!(matches!(
        stores[1]
            .reserve(request(user, &limits, calls(1), next))
            .await
            .unwrap(),
        Reserved::Admitted(_)
    ));
    // Period counters saw every admitted call: 60 settled, one held.
    let total = stores[0]
        .standing(user, period_at(at), LimitKey::TotalCalls)
        .await
        .unwrap();
    let expected = if period_at(next) == period_at(at) {
        61
    } else {
        60
    };
    assert_eq!(total.used + total.reserved, expected);
}

/// Calls that start or finish close together reserve and settle in shared script calls: 200
/// concurrent calls through one store cost fewer round trips than calls, every reserve still
/// sees the holds before it, and every settle reads the counter right after its own increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_starting_or_finishing_together_share_round_trips() {
    let prefix = Prefix::new(&redis_url());
    let store = Arc::new(prefix.store(TIMEOUT_MS));
    let user = "batched";
    seed_empty(&store, user).await;
    let before = store.stats();
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = Arc::clone(&store);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [Limit {
                    key: LimitKey::TotalCalls,
                    max: 1_000,
                }];
                barrier.wait().await;
                let Reserved::Admitted(r) = store
                    .reserve(request(user, &limits, calls(1), now()))
                    .await
                    .unwrap()
                else {
                    panic!("room for every call");
                };
                let settled = store.settle(&r, calls(1)).await.unwrap().unwrap();
                settled.used(LimitKey::TotalCalls).unwrap()
            })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=200).collect::<Vec<u64>>());
    let stats = store.stats();
    let operations = stats.operations - before.operations;
    let round_trips = stats.round_trips - before.round_trips;
    assert_eq!(operations, 400);
    // Reserves and settles in batches (and a script load or two).
    assert!(
        round_trips < 100,
        "{round_trips} round trips for 200 reserves and 200 settles"
    );
    let total = store
        .standing(user, period_at(now()), LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(
        total,
        Standing {
            used: 200,
            reserved: 0
        }
    );
}

/// Erasing a user deletes their keys of every period still kept (this month's, last month's
/// within its grace) and no one else's; a call in flight at that moment settles into nothing,
/// and the user's next call starts from a fresh seed.
#[tokio::test]
async fn forgetting_a_user_deletes_their_keys_of_every_period_and_no_one_elses() {
    let prefix = Prefix::new(&redis_url());
    // Last month's keys are kept 40 days past its end, so that they are there to delete.
    let store = RedisStore::new(RedisConfig {
        keep_after_period_secs: 40 * 86_400,
        ..prefix.config(TIMEOUT_MS)
    })
    .unwrap();
    let at = now();
    let last_month = period_at(at - chrono::Duration::days(32));
    let this_month = period_at(at);
    let used = [(LimitKey::TotalCalls, 7)];
    for user in ["erased{1}", "kept"] {
        assert!(store.seed(user, this_month, &used, &[]).await.unwrap());
        assert!(store.seed(user, last_month, &used, &[]).await.unwrap());
    }
    let Ok(Reserved::Admitted(in_flight)) =
        store.reserve(request("erased{1}", &[], calls(1), at)).await
    else {
        panic!()
    };
    // Two keys per user-period (the hash, and the expiry set once something was held).
    let before = prefix.key_count();
    assert_eq!(before, 5, "4 hashes and 1 expiry set");

    let deleted = store.forget_user("erased{1}", at).await.unwrap();
    assert_eq!(deleted, 3);
    assert_eq!(prefix.key_count(), 2, "only kept's keys are left");
    assert_eq!(
        store
            .standing("kept", last_month, LimitKey::TotalCalls)
            .await
            .unwrap()
            .used,
        7
    );
    // The call in flight settles into nothing: no counter comes back.
    assert_eq!(store.settle(&in_flight, calls(1)).await.unwrap(), None);
    assert_eq!(prefix.key_count(), 2);
    assert_eq!(
        store
            .reserve_seen(request("erased{1}", &[], calls(1), at))
            .await
            .unwrap(),
        ReserveOutcome::NeedsSeed
    );
    // Forgetting a user with no keys deletes nothing.
    assert_eq!(store.forget_user("nobody", at).await.unwrap(), 0);
}
