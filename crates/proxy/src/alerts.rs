//! Usage alerts raised by traffic: which thresholds of the plan's limits a settled call crossed,
//! and handing those crossings to the ledger without making the call wait.
//!
//! The counter store answers each settle with the settled use of the call's counters as that
//! settle left them (read in the same atomic step), so `after - actual` is exactly where the
//! counters stood before this call and a threshold between the two was crossed by this call
//! alone — with any number of concurrent calls and gateway instances. The ledger's unique
//! (user, limit, threshold, period) constraint stores each alert once on top of that. Most calls
//! cross nothing: for them this is a few comparisons and no allocation.
//!
//! Storing is a database write, so it runs on a task of its own on the ledger's runtime, fed by
//! a bounded queue: the request path only queues. A write that fails, or a full queue, is
//! logged and counted (`tollgate_alert_raise_failures_total`); the call is never failed for it.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tollgate_counters::SettledUse;
use tollgate_domain::{Amount, BillingPeriod, Crossing, Limit, crossings};
use tollgate_ledger::Ledger;

use crate::metrics::Metrics;

/// Crossings waiting to be stored. Each threshold is crossed once per user-period, so the queue
/// only fills if the database stalls for a long time.
const QUEUE_CAPACITY: usize = 1024;

/// The thresholds (`thresholds_pct`, ascending) of `limits` that a call using `actual` crossed,
/// given the settled use its settle answered.
pub fn crossed(
    limits: &[Limit],
    settled: &SettledUse,
    actual: Amount,
    thresholds_pct: &[u8],
) -> Vec<Crossing> {
    let after = |key| settled.used(key).unwrap_or(0);
    crossings(
        limits,
        |key| after(key).saturating_sub(actual.of(key.measure())),
        after,
        thresholds_pct,
    )
}

enum Msg {
    Raise {
        user: String,
        period: String,
        crossings: Vec<Crossing>,
    },
    Drain(oneshot::Sender<()>),
}

/// Stores crossings in the ledger off the request path. Cheap to clone; clones feed one task.
#[derive(Clone, Debug)]
pub struct AlertRaiser {
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

impl AlertRaiser {
    /// Starts the task that writes alerts, on `runtime` (the ledger's, which outlives the
    /// proxy).
    pub fn start(
        ledger: Ledger,
        runtime: &tokio::runtime::Handle,
        metrics: Arc<Metrics>,
    ) -> AlertRaiser {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        runtime.spawn(store_alerts(ledger, rx, Arc::clone(&metrics)));
        AlertRaiser { tx, metrics }
    }

    /// Queues a call's crossings for storing, without waiting.
    pub fn raise(&self, user: &str, period: BillingPeriod, crossings: Vec<Crossing>) {
        let count = crossings.len();
        let msg = Msg::Raise {
            user: user.to_owned(),
            period: period.key(),
            crossings,
        };
        if let Err(e) = self.tx.try_send(msg) {
            self.metrics.alert_raise_failed(count);
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the alert queue is full",
                mpsc::error::TrySendError::Closed(_) => "alerts are no longer stored",
            };
            tracing::warn!(user, period = %period, crossings = count, "usage alert not raised: {why}");
        }
    }

    /// Returns once everything queued before the call has been stored (or has failed): what
    /// the gateway waits for at shutdown, after the last request has settled.
    pub async fn drain(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Drain(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn store_alerts(ledger: Ledger, mut rx: mpsc::Receiver<Msg>, metrics: Arc<Metrics>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Raise {
                user,
                period,
                crossings,
            } => match ledger.raise(&user, &period, &crossings).await {
                Ok(stored) => metrics.alerts_raised(stored.len()),
                Err(e) => {
                    metrics.alert_raise_failed(crossings.len());
                    tracing::warn!(
                        user,
                        period,
                        crossings = crossings.len(),
                        error = %e,
                        "usage alerts not stored"
                    );
                }
            },
            Msg::Drain(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::{AlertSeverity, LimitKey, Provider};

    const DEFAULT: [u8; 3] = [80, 90, 100];

    fn limits() -> [Limit; 2] {
        [
            Limit {
                key: LimitKey::ProviderCalls(Provider::OpenAi),
                max: 10,
            },
            Limit {
                key: LimitKey::ProviderTokens(Provider::OpenAi),
                max: 1_000,
            },
        ]
    }

    fn settled(calls: u64, tokens: u64) -> SettledUse {
        SettledUse::new(Provider::OpenAi, |key| match key {
            LimitKey::ProviderCalls(_) | LimitKey::TotalCalls => calls,
            LimitKey::ProviderTokens(_) | LimitKey::TotalTokens => tokens,
            LimitKey::Cost => 0,
        })
    }

    fn call(tokens: u64) -> Amount {
        Amount {
            calls: 1,
            tokens,
            cost_nanousd: 0,
        }
    }

    #[test]
    fn the_call_that_reaches_a_threshold_crosses_it() {
        // The eighth of ten calls, and the tokens going from 750 to 800.
        let c = crossed(&limits(), &settled(8, 800), call(50), &DEFAULT);
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.limit.key, c.threshold_pct, c.severity))
            .collect();
        assert_eq!(
            got,
            [
                (
                    LimitKey::ProviderCalls(Provider::OpenAi),
                    80,
                    AlertSeverity::Info
                ),
                (
                    LimitKey::ProviderTokens(Provider::OpenAi),
                    80,
                    AlertSeverity::Info
                ),
            ]
        );
        // The ninth call crosses 90 % of the calls only.
        let c = crossed(&limits(), &settled(9, 850), call(50), &DEFAULT);
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].threshold_pct, c[0].severity),
            (90, AlertSeverity::Warning)
        );
    }

    #[test]
    fn nothing_is_crossed_between_thresholds_or_by_an_unbilled_call() {
        assert!(crossed(&limits(), &settled(7, 700), call(50), &DEFAULT).is_empty());
        // A refused call bills nothing: the counters stand where they did.
        let unbilled = Amount::default();
        assert!(crossed(&limits(), &settled(8, 800), unbilled, &DEFAULT).is_empty());
        // Limits the call's counters do not cover never alert.
        let other = [Limit {
            key: LimitKey::ProviderCalls(Provider::Tavily),
            max: 1,
        }];
        assert!(crossed(&other, &settled(8, 800), call(50), &DEFAULT).is_empty());
    }

    #[test]
    fn calls_settled_one_after_another_cross_each_threshold_once() {
        let mut seen = Vec::new();
        for n in 1..=12 {
            for c in crossed(&limits()[..1], &settled(n, 0), call(0), &DEFAULT) {
                seen.push((n, c.threshold_pct));
            }
        }
        assert_eq!(seen, [(8, 80), (9, 90), (10, 100)]);
    }
}
