#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code
//! The same scripts on a Redis Cluster of three private nodes: every key of a user-period
//! carries the user's hash tag, so each script runs on the one node that owns it.

mod common;

use std::sync::Arc;

use common::{Cluster, Prefix, calls, now, period_at, request};
use tokio::sync::Barrier;
use tollgate_counters::{CounterStore, RedisConfig, RedisStore, Reserved};
use tollgate_domain::{Limit, LimitKey, Standing};

fn store(cluster: &Cluster, prefix: &Prefix) -> RedisStore {
    let mut config = RedisConfig::new(cluster.url(), 5_000);
    config.key_prefix = prefix.prefix.clone();
    RedisStore::new(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reserve_settle_release_and_exactly_one_hundred_on_a_cluster() {
    let cluster = Cluster::start();
    let prefix = Prefix::new(&cluster.nodes[0].url());
    let limits = [Limit {
        key: LimitKey::TotalCalls,
        max: 100,
    }];
    let period = period_at(now());

    // The cycle, for users whose keys land on different nodes.
    let first = store(&cluster, &prefix);
    for user in ["ann", "bob", "cyd", "dee", "eve", "fay"] {
        first.seed(user, period, &[], &[]).await.unwrap();
        let Ok(Reserved::Admitted(settled)) =
            first.reserve(request(user, &limits, calls(1), now())).await
        else {
            panic!()
        };
        let Ok(Reserved::Admitted(released)) =
            first.reserve(request(user, &limits, calls(1), now())).await
        else {
            panic!()
        };
        first.settle(&settled, calls(1)).await.unwrap();
        first.release(&released).await.unwrap();
        let s = first
            .standing(user, period, LimitKey::TotalCalls)
            .await
            .unwrap();
        assert_eq!(
            s,
            Standing {
                used: 1,
                reserved: 0
            },
            "{user}"
        );
    }

    // 200 concurrent calls from three instances against a limit of 100.
    let stores: Vec<Arc<RedisStore>> = (0..3).map(|_| Arc::new(store(&cluster, &prefix))).collect();
    stores[0].seed("racer", period, &[], &[]).await.unwrap();
    let barrier = Arc::new(Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&stores[i % 3]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let limits = [Limit {
                    key: LimitKey::TotalCalls,
                    max: 100,
                }];
                barrier.wait().await;
                match store
                    .reserve(request("racer", &limits, calls(1), now()))
                    .await
                {
                    Ok(Reserved::Admitted(r)) => {
                        store.settle(&r, calls(1)).await.unwrap();
                        true
                    }
                    Ok(Reserved::Denied(_)) => false,
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        admitted += usize::from(t.await.unwrap());
    }
    assert_eq!(admitted, 100);
    let s = stores[1]
        .standing("racer", period, LimitKey::TotalCalls)
        .await
        .unwrap();
    assert_eq!(
        s,
        Standing {
            used: 100,
            reserved: 0
        }
    );
    // The users' counters really are spread over the nodes.
    let nodes_with_keys = cluster
        .nodes
        .iter()
        .filter(|n| {
            let pattern = format!("{}*", prefix.prefix);
            !matches!(n.command(&["KEYS", &pattern]), redis::Value::Array(ref keys) if keys.is_empty())
        })
        .count();
    assert!(nodes_with_keys >= 2, "{nodes_with_keys}");
    // The nodes are shut down when `cluster` is dropped.
}
