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
//! a bounded queue: the request path only queues. A write that fails (the database is down) is
//! kept and tried again, first after [`RETRY_FIRST`] and then at doubling intervals up to
//! [`RETRY_MAX`], in the order the crossings came, until it is stored; storing is idempotent, so
//! a retry never raises an alert twice. Crossings are given up only when the queue or the retry
//! list is full, or at shutdown while the database is still down: those are logged and counted
//! (`tollgate_alert_raise_failures_total`). The call is never failed for an alert.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tollgate_counters::{SettledUse, Totals};
use tollgate_domain::{Amount, BillingPeriod, Crossing, Limit, crossings};
use tollgate_ledger::Ledger;

use crate::metrics::Metrics;

/// Crossings waiting to be stored. Each threshold is crossed once per user-period, so the queue
/// only fills if the database stalls for a long time.
const QUEUE_CAPACITY: usize = 1024;
/// Calls' crossings kept for another try while the database cannot store them.
const RETRY_CAPACITY: usize = 10_000;
/// The first wait before storing failed crossings again; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(200);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

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

    /// Queues the thresholds of `limits` a settled call crossed (see [`crossed`]), if any.
    pub fn raise_crossed(
        &self,
        user: &str,
        period: BillingPeriod,
        limits: &[Limit],
        settled: &SettledUse,
        actual: Amount,
        thresholds_pct: &[u8],
    ) {
        self.raise(
            user,
            period,
            crossed(limits, settled, actual, thresholds_pct),
        );
    }

    /// Queues every threshold of `limits` that `totals` (a user-period's settled use, as its
    /// counters were started from the ledger) has reached. Use counted where no settle could
    /// report its crossings (deferred while Redis was away and lost with its data, or settled
    /// by an instance that stopped before storing the alert) is raised this way; thresholds
    /// raised before are stored once all the same.
    pub fn raise_reached(
        &self,
        user: &str,
        period: BillingPeriod,
        limits: &[Limit],
        totals: &Totals,
        thresholds_pct: &[u8],
    ) {
        let used = |key| {
            totals
                .iter()
                .find_map(|&(k, used)| (k == key).then_some(used))
                .unwrap_or(0)
        };
        self.raise(user, period, crossings(limits, |_| 0, used, thresholds_pct));
    }

    /// Queues a call's crossings for storing, without waiting; none, nothing to do.
    pub fn raise(&self, user: &str, period: BillingPeriod, crossings: Vec<Crossing>) {
        if crossings.is_empty() {
            return;
        }
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

    /// Returns once everything queued before the call has been stored, or given up on (with
    /// what waits for another try) if the database still cannot take it: what the gateway waits
    /// for at shutdown, after the last request has settled.
    pub async fn drain(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Drain(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// One call's crossings on their way to the ledger.
struct Raised {
    user: String,
    period: String,
    crossings: Vec<Crossing>,
}

/// Crossings that failed to be stored, and when to try them again.
struct Retries {
    waiting: VecDeque<Raised>,
    delay: Duration,
    next: Option<Instant>,
}

impl Retries {
    fn keep(&mut self, raised: Raised, metrics: &Metrics) {
        if self.waiting.len() >= RETRY_CAPACITY {
            give_up(&raised, metrics, "too many alerts wait for the database");
            return;
        }
        self.waiting.push_back(raised);
        self.next.get_or_insert_with(|| Instant::now() + self.delay);
    }

    /// Stores what waits, oldest first, stopping at the first failure (the database is still
    /// away) and trying again after a longer wait.
    async fn retry(&mut self, ledger: &Ledger, metrics: &Metrics) {
        while let Some(raised) = self.waiting.front() {
            if store(ledger, raised, metrics).await.is_err() {
                self.delay = (self.delay * 2).min(RETRY_MAX);
                self.next = Some(Instant::now() + self.delay);
                return;
            }
            self.waiting.pop_front();
        }
        self.delay = RETRY_FIRST;
        self.next = None;
    }
}

async fn store(ledger: &Ledger, raised: &Raised, metrics: &Metrics) -> Result<(), ()> {
    match ledger
        .raise(&raised.user, &raised.period, &raised.crossings)
        .await
    {
        Ok(stored) => {
            metrics.alerts_raised(stored.len());
            Ok(())
        }
        Err(e) => {
            tracing::warn!(
                user = raised.user,
                period = raised.period,
                crossings = raised.crossings.len(),
                error = %e,
                "usage alerts not stored yet: trying again"
            );
            Err(())
        }
    }
}

fn give_up(raised: &Raised, metrics: &Metrics, why: &str) {
    metrics.alert_raise_failed(raised.crossings.len());
    tracing::warn!(
        user = raised.user,
        period = raised.period,
        crossings = raised.crossings.len(),
        "usage alerts not stored: {why}"
    );
}

async fn store_alerts(ledger: Ledger, mut rx: mpsc::Receiver<Msg>, metrics: Arc<Metrics>) {
    let mut retries = Retries {
        waiting: VecDeque::new(),
        delay: RETRY_FIRST,
        next: None,
    };
    loop {
        let msg = match retries.next {
            Some(at) => tokio::select! {
                msg = rx.recv() => msg,
                () = tokio::time::sleep_until(at) => {
                    retries.retry(&ledger, &metrics).await;
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(msg) = msg else {
            return;
        };
        match msg {
            Msg::Raise {
                user,
                period,
                crossings,
            } => {
                let raised = Raised {
                    user,
                    period,
                    crossings,
                };
                // Behind earlier failures, wait with them: the database is likely still away,
                // and alerts keep their order.
                if !retries.waiting.is_empty() || store(&ledger, &raised, &metrics).await.is_err() {
                    retries.keep(raised, &metrics);
                }
            }
            Msg::Drain(done) => {
                retries.retry(&ledger, &metrics).await;
                for raised in retries.waiting.drain(..) {
                    give_up(
                        &raised,
                        &metrics,
                        "the database was still unavailable at shutdown",
                    );
                }
                retries.next = None;
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
            _ => 0,
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

    /// The alerts table is away (renamed) when a call crosses a threshold, and comes back: the
    /// crossing is stored once it can be, nothing is counted as lost, and a later crossing waits
    /// behind it and is stored too.
    #[tokio::test]
    async fn crossings_that_fail_to_be_stored_are_tried_again_until_they_are() {
        use sqlx::Connection;

        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("ledger.db").display()
        );
        let ledger = Ledger::connect(&url, tollgate_ledger::DbOptions::default())
            .await
            .unwrap();
        let mut admin = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let move_table = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
        sqlx::query(&move_table("usage_alerts", "usage_alerts_away"))
            .execute(&mut admin)
            .await
            .unwrap();

        let metrics = Arc::new(Metrics::new().unwrap());
        let raiser = AlertRaiser::start(
            ledger.clone(),
            &tokio::runtime::Handle::current(),
            Arc::clone(&metrics),
        );
        let period = BillingPeriod::containing(
            chrono::Utc::now(),
            tollgate_domain::AnchorDay::CALENDAR_MONTH,
        );
        raiser.raise(
            "u1",
            period,
            crossed(&limits(), &settled(8, 0), call(0), &DEFAULT),
        );
        tokio::time::sleep(RETRY_FIRST * 3).await;
        raiser.raise(
            "u1",
            period,
            crossed(&limits(), &settled(9, 0), call(0), &DEFAULT),
        );
        tokio::time::sleep(RETRY_FIRST).await;
        sqlx::query(&move_table("usage_alerts_away", "usage_alerts"))
            .execute(&mut admin)
            .await
            .unwrap();

        let deadline = Instant::now() + RETRY_MAX;
        let mut stored = Vec::new();
        while Instant::now() < deadline {
            stored = ledger.alerts("u1", false, 10).await.unwrap();
            if stored.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut thresholds: Vec<_> = stored.iter().map(|a| a.threshold_percentage).collect();
        thresholds.sort_unstable();
        assert_eq!(thresholds, [80, 90]);
        let text = metrics.render();
        assert!(
            text.contains("tollgate_alert_raise_failures_total 0"),
            "{text}"
        );
        raiser.drain().await;
    }
}
