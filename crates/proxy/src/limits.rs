//! The gateway's counters: in process for one instance, or shared through Redis.
//!
//! Either way a user-period's counters start from the ledger, the source of truth: the
//! in-process store reads a user's settled use the first time it meets that user in a period
//! (so a restarted gateway does not forget what was already used), and the Redis store does the
//! same whenever Redis has no totals for the user-period (new, or lost with Redis's data).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use tollgate_counters::{
    CounterError, CounterStore, MemoryStore, PeriodTotals, Reservation, ReserveRequest, Reserved,
    ResilientStore, SeedFuture, Seeder, SettledUse,
};
use tollgate_domain::{Amount, BillingPeriod, LimitKey, UnreachablePolicy};
use tollgate_ledger::{Ledger, LedgerError, LedgerHandle};

/// Where the gateway keeps its counters.
#[derive(Debug)]
pub enum Counters {
    Memory {
        store: Arc<MemoryStore>,
        ledger: Option<Ledger>,
        /// Per user, the periods (year, month they start in) whose counters were read from
        /// the ledger.
        seeded: Mutex<HashMap<String, HashSet<(i32, u32)>>>,
        /// After an upgrade, closed until the replaced process has exited: its calls are in
        /// the ledger only then, so no user is read from it before.
        gate: Option<tokio::sync::watch::Receiver<bool>>,
    },
    Shared(ResilientStore),
}

/// A user's settled use in a period, from the ledger: their plan's counters, and what each of
/// their keys used.
pub async fn ledger_totals(
    ledger: &Ledger,
    user: &str,
    period: BillingPeriod,
) -> Result<PeriodTotals, LedgerError> {
    let key = period.key();
    let plan = ledger.usage_for_period(user, &key).await?.counter_totals();
    let keys = ledger
        .key_usage_for_period(user, &key)
        .await?
        .into_iter()
        .map(|k| {
            let used = Amount {
                calls: k.calls,
                tokens: k.tokens,
                cost_nanousd: k.cost_nanousd,
            };
            (k.key_id, used)
        })
        .collect();
    Ok(PeriodTotals { plan, keys })
}

/// The seeder a Redis store rebuilds lost counters with. It first has `writer` commit what it
/// has queued: a call that settled just before the seed found nothing to count in Redis (the
/// user-period was not initialised) and left only its usage event, which must be in the totals
/// read, not waiting in the writer's batch.
pub fn ledger_seeder(ledger: Ledger, writer: LedgerHandle) -> Seeder {
    Arc::new(move |user: &str, period: BillingPeriod| -> SeedFuture {
        let ledger = ledger.clone();
        let writer = writer.clone();
        let user = user.to_owned();
        Box::pin(async move {
            // Stopped, or spooling while the database is down: the totals are read regardless
            // (docs/counters.md, the overshoot bound).
            if let Err(e) = writer.flush().await {
                tracing::debug!(error = %e, "ledger not flushed before seeding counters");
            }
            Ok(ledger_totals(&ledger, &user, period).await?)
        })
    })
}

// The futures of Redis calls and ledger reads are large (kilobytes) and are boxed where they
// are awaited: every future they would be inlined into — the gateway's hooks, which Pingora
// boxes on every call — would otherwise be that large, and be allocated and copied per
// request, also with in-process counters that never run them.
impl Counters {
    /// In-process counters, started from the ledger's totals when one is given.
    pub fn memory(store: Arc<MemoryStore>, ledger: Option<Ledger>) -> Counters {
        Counters::Memory {
            store,
            ledger,
            seeded: Mutex::new(HashMap::new()),
            gate: None,
        }
    }

    /// In-process counters wait, before starting any user's counters from the ledger, for
    /// `open` to turn true (a no-op for shared counters, which both processes of an upgrade
    /// share).
    pub fn with_seed_gate(mut self, open: tokio::sync::watch::Receiver<bool>) -> Counters {
        if let Counters::Memory { gate, .. } = &mut self {
            *gate = Some(open);
        }
        self
    }

    /// Reserves; also answers the user-period's totals from the ledger when this call started
    /// its counters from them (see [`ResilientStore::reserve_seeding`]).
    pub async fn reserve(
        &self,
        request: ReserveRequest<'_>,
        on_unreachable: UnreachablePolicy,
    ) -> Result<(Reserved, Option<Vec<(LimitKey, u64)>>), CounterError> {
        match self {
            Counters::Memory {
                store,
                ledger,
                seeded,
                gate,
            } => {
                let mut started = None;
                if let Some(ledger) = ledger {
                    let month = (request.period.year(), request.period.month());
                    let known = seeded
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(request.user)
                        .is_some_and(|months| months.contains(&month));
                    if !known {
                        if let Some(gate) = gate {
                            // Err: the sender is gone, which happens only once it was opened.
                            let _ = gate.clone().wait_for(|open| *open).await;
                        }
                        let totals = Box::pin(ledger_totals(ledger, request.user, request.period))
                            .await
                            .map_err(|e| CounterError::Unreachable(e.to_string()))?;
                        // Two first requests may race here: seeding sets (not adds), so the
                        // second writes the same values.
                        let mut seeded = seeded.lock().unwrap_or_else(PoisonError::into_inner);
                        let months = seeded.entry(request.user.to_owned()).or_default();
                        if months.insert(month) {
                            store.seed(request.user, request.period, &totals);
                            started = Some(totals.plan);
                        }
                    }
                }
                Ok((store.reserve_now(request), started))
            }
            Counters::Shared(store) => {
                Box::pin(store.reserve_seeding(request, on_unreachable)).await
            }
        }
    }

    /// Settles; answers the settled use of the call's counters as this settle left them, when
    /// the store knows it (for usage alerts).
    pub async fn settle(&self, reservation: &Reservation, actual: Amount) -> Option<SettledUse> {
        let outcome = match self {
            Counters::Memory { store, .. } => Ok(store.settle_now(reservation, actual)),
            Counters::Shared(store) => Box::pin(store.settle(reservation, actual)).await,
        };
        outcome.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "settling a reservation");
            None
        })
    }

    pub async fn release(&self, reservation: &Reservation) {
        let outcome = match self {
            Counters::Memory { store, .. } => {
                store.release_now(reservation);
                Ok(())
            }
            Counters::Shared(store) => Box::pin(store.release(reservation)).await,
        };
        if let Err(e) = outcome {
            tracing::warn!(error = %e, "releasing a reservation");
        }
    }

    /// Forgets every counter of `user`, for every period (the user was erased): their next call
    /// starts from the ledger afresh, and their calls still in flight are counted nowhere.
    pub async fn forget_user(&self, user: &str) -> Result<(), CounterError> {
        match self {
            Counters::Memory { store, seeded, .. } => {
                seeded
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(user);
                store.forget_user(user);
                Ok(())
            }
            Counters::Shared(store) => store.forget_user(user, chrono::Utc::now()).await.map(drop),
        }
    }

    /// Whether limits are enforced without the shared store right now.
    pub fn degraded(&self) -> bool {
        match self {
            Counters::Memory { .. } => false,
            Counters::Shared(store) => store.is_degraded(),
        }
    }
}
