//! The in-process counter store: one gateway instance, no I/O.
//!
//! Counters are kept per (user, period) behind a lock of their own, so users never contend with
//! each other; the outer map is locked only to find or create a user's entry. Expired
//! reservations are returned lazily, on that user's next reservation.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use tollgate_domain::{
    Amount, AnchorDay, BillingPeriod, Decision, LimitKey, Provider, Standing, decide,
};

use crate::{
    CounterError, CounterStore, Hold, Reservation, ReserveRequest, Reserved, SettledUse,
    counted_keys,
};

#[derive(Debug, Default)]
struct Counters {
    standing: HashMap<LimitKey, Standing>,
    held: HashMap<u64, Held>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    provider: Provider,
    amount: Amount,
    expires_at: DateTime<Utc>,
}

impl Counters {
    fn hold(&mut self, provider: Provider, amount: Amount, sign: Sign) {
        for key in counted_keys(provider) {
            let s = self.standing.entry(key).or_default();
            let delta = amount.of(key.measure());
            s.reserved = match sign {
                Sign::Add => s.reserved.saturating_add(delta),
                Sign::Subtract => s.reserved.saturating_sub(delta),
            };
        }
    }

    fn use_amount(&mut self, provider: Provider, amount: Amount) {
        for key in counted_keys(provider) {
            let s = self.standing.entry(key).or_default();
            s.used = s.used.saturating_add(amount.of(key.measure()));
        }
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        let expired: Vec<(u64, Held)> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires_at <= now)
            .map(|(id, h)| (*id, *h))
            .collect();
        for (id, held) in expired {
            self.held.remove(&id);
            self.hold(held.provider, held.amount, Sign::Subtract);
        }
    }
}

#[derive(Clone, Copy)]
enum Sign {
    Add,
    Subtract,
}

/// The month a billing period starts in (its `YYYY-MM` key, as numbers).
type Month = (i32, u32);

fn month(period: BillingPeriod) -> Month {
    (period.year(), period.month())
}

/// The month of a `YYYY-MM` key; `None` for anything else.
fn month_of_key(key: &str) -> Option<Month> {
    BillingPeriod::from_key(key, AnchorDay::CALENDAR_MONTH)
        .ok()
        .map(month)
}

/// A user's counters, by period.
type Periods = HashMap<Month, Arc<Mutex<Counters>>>;

/// Counters in this process's memory, by user and then by period, so that finding a user's
/// counters for a call allocates nothing once they exist.
#[derive(Debug, Default)]
pub struct MemoryStore {
    scopes: Mutex<HashMap<String, Periods>>,
    next_id: AtomicU64,
    /// Users whose counters were forgotten (erased), with the first reservation id made after:
    /// a reservation made before settles and releases into nothing.
    forgotten: Mutex<HashMap<String, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave counters half-updated (every update is a
    // few saturating additions), so a poisoned lock is still safe to use.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn counters(&self, user: &str, month: Month) -> Arc<Mutex<Counters>> {
        let mut scopes = lock(&self.scopes);
        if let Some(counters) = scopes.get(user).and_then(|periods| periods.get(&month)) {
            return Arc::clone(counters);
        }
        Arc::clone(
            scopes
                .entry(user.to_owned())
                .or_default()
                .entry(month)
                .or_default(),
        )
    }

    /// [`CounterStore::reserve`], synchronously.
    pub fn reserve_now(&self, request: ReserveRequest<'_>) -> Reserved {
        let counters = self.counters(request.user, month(request.period));
        let mut c = lock(&counters);
        c.expire(request.now);
        let decision = decide(
            request.limits,
            |key| c.standing.get(&key).copied().unwrap_or_default(),
            request.amount,
            request.period,
            request.now,
        );
        match decision {
            Decision::Deny(denial) => Reserved::Denied(denial),
            Decision::Admit => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                c.hold(request.provider, request.amount, Sign::Add);
                c.held.insert(
                    id,
                    Held {
                        provider: request.provider,
                        amount: request.amount,
                        expires_at: request.expires_at,
                    },
                );
                Reserved::Admitted(Reservation::of(&request, id, Hold::Store))
            }
        }
    }

    /// [`CounterStore::settle`], synchronously. Settling an expired reservation still counts
    /// the usage (the call happened) but no longer touches the hold it gave back. The settled
    /// use is read under the same lock as the update, so no other settle comes between. A
    /// reservation made before its user's counters were forgotten counts nothing (`None`).
    pub fn settle_now(&self, reservation: &Reservation, actual: Amount) -> Option<SettledUse> {
        if self.made_before_forgetting(reservation) {
            return None;
        }
        let counters = self.counters(&reservation.user, month(reservation.period));
        let mut c = lock(&counters);
        if c.held.remove(&reservation.id).is_some() {
            c.hold(reservation.provider, reservation.amount, Sign::Subtract);
        }
        c.use_amount(reservation.provider, actual);
        Some(SettledUse::new(reservation.provider, |key| {
            c.standing.get(&key).map_or(0, |s| s.used)
        }))
    }

    /// [`CounterStore::release`], synchronously; releasing twice is harmless.
    pub fn release_now(&self, reservation: &Reservation) {
        if self.made_before_forgetting(reservation) {
            return;
        }
        let counters = self.counters(&reservation.user, month(reservation.period));
        let mut c = lock(&counters);
        if c.held.remove(&reservation.id).is_some() {
            c.hold(reservation.provider, reservation.amount, Sign::Subtract);
        }
    }

    /// Forgets every counter of `user`, for every period (the user was erased). Calls of theirs
    /// still in flight settle and release into nothing: their use is not counted again.
    pub fn forget_user(&self, user: &str) {
        let mut forgotten = lock(&self.forgotten);
        lock(&self.scopes).remove(user);
        forgotten.insert(user.to_owned(), self.next_id.load(Ordering::SeqCst));
    }

    fn made_before_forgetting(&self, reservation: &Reservation) -> bool {
        lock(&self.forgotten)
            .get(&reservation.user)
            .is_some_and(|&first_after| reservation.id < first_after)
    }

    /// Where one limit stands for a user in a period.
    pub fn standing(&self, user: &str, period_key: &str, key: LimitKey) -> Standing {
        let scopes = lock(&self.scopes);
        month_of_key(period_key)
            .and_then(|month| scopes.get(user)?.get(&month).cloned())
            .and_then(|c| lock(&c).standing.get(&key).copied())
            .unwrap_or_default()
    }

    /// Sets a counter's settled use, e.g. rebuilt from the ledger at start.
    pub fn seed_used(&self, user: &str, period: BillingPeriod, key: LimitKey, used: u64) {
        let counters = self.counters(user, month(period));
        lock(&counters).standing.entry(key).or_default().used = used;
    }

    /// Reservations currently held, over all users.
    pub fn outstanding(&self) -> usize {
        let scopes = lock(&self.scopes);
        scopes
            .values()
            .flat_map(HashMap::values)
            .map(|c| lock(c).held.len())
            .sum()
    }
}

impl CounterStore for MemoryStore {
    fn reserve(
        &self,
        request: ReserveRequest<'_>,
    ) -> impl Future<Output = Result<Reserved, CounterError>> + Send {
        ready(Ok(self.reserve_now(request)))
    }

    fn settle(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> impl Future<Output = Result<Option<SettledUse>, CounterError>> + Send {
        ready(Ok(self.settle_now(reservation, actual)))
    }

    fn release(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<(), CounterError>> + Send {
        self.release_now(reservation);
        ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;
    use tollgate_domain::{AnchorDay, BillingPeriod, Limit};

    fn now() -> DateTime<Utc> {
        "2026-11-28T12:00:00Z".parse().unwrap()
    }

    fn request<'a>(user: &'a str, limits: &'a [Limit], amount: Amount) -> ReserveRequest<'a> {
        ReserveRequest {
            user,
            period: BillingPeriod::containing(now(), AnchorDay::default()),
            provider: Provider::OpenAi,
            limits,
            amount,
            now: now(),
            expires_at: now() + chrono::Duration::seconds(60),
        }
    }

    fn one_call(tokens: u64, cost_nanousd: u64) -> Amount {
        Amount {
            calls: 1,
            tokens,
            cost_nanousd,
        }
    }

    #[test]
    fn two_hundred_concurrent_calls_against_a_limit_of_one_hundred() {
        let store = Arc::new(MemoryStore::new());
        let limits = [Limit {
            key: LimitKey::ProviderCalls(Provider::OpenAi),
            max: 100,
        }];
        let barrier = Arc::new(Barrier::new(200));
        let threads: Vec<_> = (0..200)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    match store.reserve_now(request("u", &limits, one_call(10, 5))) {
                        Reserved::Admitted(r) => {
                            let settled = store.settle_now(&r, one_call(7, 3)).unwrap();
                            settled.used(LimitKey::ProviderCalls(Provider::OpenAi))
                        }
                        Reserved::Denied(_) => None,
                    }
                })
            })
            .collect();
        let mut seen: Vec<u64> = threads
            .into_iter()
            .filter_map(|t| t.join().unwrap())
            .collect();
        assert_eq!(seen.len(), 100);
        // Each settle saw the counter right after its own step: every value exactly once.
        seen.sort_unstable();
        assert_eq!(seen, (1..=100).collect::<Vec<u64>>());
        let calls = store.standing("u", "2026-11", LimitKey::ProviderCalls(Provider::OpenAi));
        assert_eq!(
            calls,
            Standing {
                used: 100,
                reserved: 0
            }
        );
        let cost = store.standing("u", "2026-11", LimitKey::Cost);
        assert_eq!(
            cost,
            Standing {
                used: 300,
                reserved: 0
            }
        );
        assert_eq!(store.outstanding(), 0);
    }

    #[test]
    fn held_amounts_block_until_settled_or_released() {
        let store = MemoryStore::new();
        let limits = [Limit {
            key: LimitKey::TotalTokens,
            max: 1_000,
        }];
        let Reserved::Admitted(first) = store.reserve_now(request("u", &limits, one_call(800, 0)))
        else {
            panic!("first call fits");
        };
        let Reserved::Denied(denial) = store.reserve_now(request("u", &limits, one_call(300, 0)))
        else {
            panic!("800 held + 300 > 1,000");
        };
        assert_eq!(
            denial.standing,
            Standing {
                used: 0,
                reserved: 800
            }
        );
        // The call used far less than its bound.
        store.settle_now(&first, one_call(150, 0));
        assert!(matches!(
            store.reserve_now(request("u", &limits, one_call(300, 0))),
            Reserved::Admitted(_)
        ));
        // Other users are not affected.
        assert!(matches!(
            store.reserve_now(request("v", &limits, one_call(1_000, 0))),
            Reserved::Admitted(_)
        ));
    }

    #[test]
    fn an_unsettled_reservation_expires_and_gives_its_amount_back() {
        let store = MemoryStore::new();
        let limits = [Limit {
            key: LimitKey::ProviderCalls(Provider::OpenAi),
            max: 1,
        }];
        let Reserved::Admitted(lost) = store.reserve_now(request("u", &limits, one_call(0, 0)))
        else {
            panic!()
        };
        assert!(matches!(
            store.reserve_now(request("u", &limits, one_call(0, 0))),
            Reserved::Denied(_)
        ));
        let mut later = request("u", &limits, one_call(0, 0));
        later.now = lost.expires_at;
        later.expires_at = lost.expires_at + chrono::Duration::seconds(60);
        assert!(matches!(store.reserve_now(later), Reserved::Admitted(_)));
        // A late settle of the expired call still counts its use, once.
        let settled = store.settle_now(&lost, one_call(0, 0)).unwrap();
        let calls = LimitKey::ProviderCalls(Provider::OpenAi);
        assert_eq!(settled.used(calls), Some(1));
        let s = store.standing("u", "2026-11", LimitKey::ProviderCalls(Provider::OpenAi));
        assert_eq!(
            s,
            Standing {
                used: 1,
                reserved: 1
            }
        );
        store.release_now(&lost);
        assert_eq!(store.outstanding(), 1);
    }

    #[test]
    fn a_forgotten_user_starts_from_zero_and_their_calls_in_flight_count_nothing() {
        let store = MemoryStore::new();
        let limits = [Limit {
            key: LimitKey::TotalCalls,
            max: 2,
        }];
        let Reserved::Admitted(done) = store.reserve_now(request("u", &limits, one_call(5, 5)))
        else {
            panic!()
        };
        store.settle_now(&done, one_call(5, 5));
        let Reserved::Admitted(in_flight) =
            store.reserve_now(request("u", &limits, one_call(5, 5)))
        else {
            panic!()
        };
        let Reserved::Admitted(other) = store.reserve_now(request("v", &limits, one_call(5, 5)))
        else {
            panic!()
        };
        assert!(matches!(
            store.reserve_now(request("u", &limits, one_call(5, 5))),
            Reserved::Denied(_)
        ));

        store.forget_user("u");
        assert_eq!(
            store.standing("u", "2026-11", LimitKey::TotalCalls),
            Standing::default()
        );
        // The call in flight at the erase ends: nothing is counted for it.
        assert_eq!(store.settle_now(&in_flight, one_call(5, 5)), None);
        store.release_now(&in_flight);
        assert_eq!(
            store.standing("u", "2026-11", LimitKey::TotalCalls),
            Standing::default()
        );
        // The user's next calls count afresh; other users keep theirs.
        let Reserved::Admitted(next) = store.reserve_now(request("u", &limits, one_call(5, 5)))
        else {
            panic!("a forgotten user starts from zero")
        };
        assert!(store.settle_now(&next, one_call(5, 5)).is_some());
        assert_eq!(store.standing("u", "2026-11", LimitKey::TotalCalls).used, 1);
        assert_eq!(
            store
                .standing("v", "2026-11", LimitKey::TotalCalls)
                .reserved,
            1
        );
        assert!(store.settle_now(&other, one_call(5, 5)).is_some());
    }

    #[test]
    fn plan_edits_keep_counters() {
        let store = MemoryStore::new();
        // Under a plan without token limits, tokens are still counted...
        let Reserved::Admitted(r) = store.reserve_now(request("u", &[], one_call(500, 0))) else {
            panic!()
        };
        store.settle_now(&r, one_call(400, 0));
        // ...so a plan that adds a 500-token limit sees the 400 already used.
        let limits = [Limit {
            key: LimitKey::ProviderTokens(Provider::OpenAi),
            max: 500,
        }];
        assert!(matches!(
            store.reserve_now(request("u", &limits, one_call(101, 0))),
            Reserved::Denied(_)
        ));
        store.seed_used(
            "u",
            BillingPeriod::containing(now(), AnchorDay::default()),
            LimitKey::ProviderTokens(Provider::OpenAi),
            0,
        );
        assert!(matches!(
            store.reserve_now(request("u", &limits, one_call(101, 0))),
            Reserved::Admitted(_)
        ));
    }
}
