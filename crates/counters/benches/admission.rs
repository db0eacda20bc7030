//! Admission in the in-process store: one reserve and its settle, as every call makes them,
//! with a plan's limits only, and with a key's own budgets and per-minute windows besides (the
//! key's and the plan's). The summary printed at the end gives each case's time per call and
//! what a key's limits and a minute window add, measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::Criterion;
use tollgate_counters::{MemoryStore, ReserveRequest, Reserved};
use tollgate_domain::{Amount, AnchorDay, BillingPeriod, Limit, LimitKey, Provider};

/// Room for every call the bench makes: admission is measured, not refusal.
const ROOMY: u64 = u64::MAX / 4;

fn plan_limits() -> Vec<Limit> {
    vec![
        Limit {
            key: LimitKey::ProviderCalls(Provider::OpenAi),
            max: ROOMY,
        },
        Limit {
            key: LimitKey::ProviderTokens(Provider::OpenAi),
            max: ROOMY,
        },
        Limit {
            key: LimitKey::Cost,
            max: ROOMY,
        },
    ]
}

fn with_key_and_minutes() -> Vec<Limit> {
    let mut limits = plan_limits();
    limits.extend([
        Limit {
            key: LimitKey::KeyCost,
            max: ROOMY,
        },
        Limit {
            key: LimitKey::KeyTokens,
            max: ROOMY,
        },
        Limit {
            key: LimitKey::CallsPerMinute(None),
            max: ROOMY,
        },
        Limit {
            key: LimitKey::KeyCallsPerMinute,
            max: ROOMY,
        },
        Limit {
            key: LimitKey::KeyTokensPerMinute,
            max: ROOMY,
        },
    ]);
    limits
}

const AMOUNT: Amount = Amount {
    calls: 1,
    tokens: 1_100,
    cost_nanousd: 3_500_000,
};

/// One call's reserve and settle.
fn admit(store: &MemoryStore, limits: &[Limit], key: &str, now: DateTime<Utc>) {
    let request = ReserveRequest {
        user: "bench-user",
        key,
        period: BillingPeriod::containing(now, AnchorDay::default()),
        provider: Provider::OpenAi,
        limits,
        amount: AMOUNT,
        now,
        expires_at: now + chrono::Duration::seconds(1_200),
    };
    // Every limit is roomy: a refusal would mean the bench measures the wrong path.
    let Reserved::Admitted(reservation) = store.reserve_now(black_box(request)) else {
        unreachable!("a roomy limit refused a call");
    };
    black_box(store.settle_now(&reservation, AMOUNT));
}

/// Nanoseconds per call over `n` calls.
fn per_call(n: u32, limits: &[Limit], key: &str) -> f64 {
    let store = MemoryStore::new();
    let now = Utc::now();
    let start = Instant::now();
    for _ in 0..n {
        admit(&store, limits, key, now);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    let plan = plan_limits();
    let keyed = with_key_and_minutes();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let mut group = c.benchmark_group("admission");
    for (name, limits, key) in [
        ("plan_only", &plan, ""),
        ("plan_key_and_minute_windows", &keyed, "key_0190abcdef"),
    ] {
        let store = MemoryStore::new();
        let now = Utc::now();
        group.bench_function(name, |b| b.iter(|| admit(&store, limits, key, now)));
    }
    group.finish();
    c.final_summary();

    // Alternated, so that both cases see the same machine.
    let (mut plain, mut keyed_ns) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        plain.push(per_call(200_000, &plan, ""));
        keyed_ns.push(per_call(200_000, &keyed, "key_0190abcdef"));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (p, k) = (median(&mut plain), median(&mut keyed_ns));
    println!(
        "admission, reserve + settle per call (median of 5 alternated runs): plan only {p:.0} ns; \
         with a key's budgets and minute windows {k:.0} ns (+{:.0} ns)",
        k - p
    );
}
