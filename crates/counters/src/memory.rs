//! The in-process counter store: one gateway instance, no I/O.
//!
//! Counters are kept per (user, period) behind a lock of their own, so users never contend with
//! each other; the outer map is locked only to find or create a user's entry. Expired
//! reservations are returned lazily, on that user's next reservation.

use std::collections::HashMap;
use std::future::{Future, ready};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use tollgate_domain::{
    Amount, AnchorDay, BillingPeriod, Decision, LimitKey, Provider, Standing, decide, minute_window,
};

use crate::{
    CounterError, CounterStore, Hold, PeriodTotals, Reservation, ReserveRequest, Reserved,
    SettledUse, counted,
};

/// The counters of one scope (a user's plan, or one of the user's keys) in a period.
#[derive(Debug, Default)]
struct Scoped {
    period: HashMap<LimitKey, Standing>,
    /// The counters of the open minute window.
    minute: HashMap<LimitKey, Standing>,
}

impl Scoped {
    fn map(&self, key: LimitKey) -> &HashMap<LimitKey, Standing> {
        if key.is_per_minute() {
            &self.minute
        } else {
            &self.period
        }
    }

    fn map_mut(&mut self, key: LimitKey) -> &mut HashMap<LimitKey, Standing> {
        if key.is_per_minute() {
            &mut self.minute
        } else {
            &mut self.period
        }
    }
}

/// A user's counters in one period: their plan's, and each of their keys'.
#[derive(Debug, Default)]
struct Counters {
    plan: Scoped,
    keys: HashMap<String, Scoped>,
    /// The open minute window (see `tollgate_domain::minute_window`).
    window: i64,
    held: HashMap<u64, Held>,
}

#[derive(Clone, Debug)]
struct Held {
    provider: Provider,
    key: String,
    window: Option<i64>,
    amount: Amount,
    expires_at: DateTime<Utc>,
}

impl Held {
    fn counted(&self) -> impl Iterator<Item = LimitKey> + use<> {
        counted(self.provider, !self.key.is_empty(), self.window.is_some())
    }
}

impl Counters {
    /// Moves the open minute window forward to `window` (never back: a call that read the clock
    /// a moment before another counts in the later one's window), clearing every per-minute
    /// counter; answers the window now open.
    fn open_window(&mut self, window: i64) -> i64 {
        if window > self.window {
            self.window = window;
            self.plan.minute.clear();
            for scoped in self.keys.values_mut() {
                scoped.minute.clear();
            }
        }
        self.window
    }

    fn standing(&self, key_id: &str, key: LimitKey) -> Standing {
        let scoped = if key.is_keys() {
            self.keys.get(key_id)
        } else {
            Some(&self.plan)
        };
        scoped
            .and_then(|s| s.map(key).get(&key).copied())
            .unwrap_or_default()
    }

    /// The counter `key` of a call by `key_id` in `window`; `None` for a per-minute counter of a
    /// window that is over.
    fn counter(
        &mut self,
        key_id: &str,
        window: Option<i64>,
        key: LimitKey,
    ) -> Option<&mut Standing> {
        if key.is_per_minute() && window != Some(self.window) {
            return None;
        }
        let scoped = if key.is_keys() {
            if !self.keys.contains_key(key_id) {
                self.keys.insert(key_id.to_owned(), Scoped::default());
            }
            self.keys.get_mut(key_id)?
        } else {
            &mut self.plan
        };
        Some(scoped.map_mut(key).entry(key).or_default())
    }

    fn hold(&mut self, held: &Held, sign: Sign) {
        for key in held.counted() {
            let delta = held.amount.of(key.measure());
            if let Some(s) = self.counter(&held.key, held.window, key) {
                s.reserved = match sign {
                    Sign::Add => s.reserved.saturating_add(delta),
                    Sign::Subtract => s.reserved.saturating_sub(delta),
                };
            }
        }
    }

    fn use_amount(&mut self, reservation: &Reservation, amount: Amount) {
        for key in reservation.counted() {
            if let Some(s) = self.counter(&reservation.key, reservation.window, key) {
                s.used = s.used.saturating_add(amount.of(key.measure()));
            }
        }
    }

    fn expire(&mut self, now: DateTime<Utc>) {
        let expired: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, h)| h.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(held) = self.held.remove(&id) {
                self.hold(&held, Sign::Subtract);
            }
        }
    }

    /// Gives back the hold of reservation `id`, if it still has one.
    fn give_back(&mut self, id: u64) {
        if let Some(held) = self.held.remove(&id) {
            self.hold(&held, Sign::Subtract);
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
    /// Whether `forgotten` has anyone, so that settles skip its lock until someone is erased.
    any_forgotten: AtomicBool,
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
        let window = request
            .counts_minutes()
            .then(|| c.open_window(minute_window(request.now)));
        let decision = decide(
            request.limits,
            |key| c.standing(request.key, key),
            request.amount,
            request.period,
            request.now,
        );
        match decision {
            Decision::Deny(denial) => Reserved::Denied(denial),
            Decision::Admit => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let held = Held {
                    provider: request.provider,
                    key: request.key.to_owned(),
                    window,
                    amount: request.amount,
                    expires_at: request.expires_at,
                };
                c.hold(&held, Sign::Add);
                c.held.insert(id, held);
                Reserved::Admitted(Reservation::of(&request, id, Hold::Store, window))
            }
        }
    }

    /// [`CounterStore::settle`], synchronously. Settling an expired reservation still counts
    /// the usage (the call happened) but no longer touches the hold it gave back; per-minute
    /// counters count it only while its window is open. The settled use is read under the same
    /// lock as the update, so no other settle comes between. A reservation made before its
    /// user's counters were forgotten counts nothing (`None`).
    pub fn settle_now(&self, reservation: &Reservation, actual: Amount) -> Option<SettledUse> {
        if self.made_before_forgetting(reservation) {
            return None;
        }
        let counters = self.counters(&reservation.user, month(reservation.period));
        let mut c = lock(&counters);
        c.give_back(reservation.id);
        c.use_amount(reservation, actual);
        Some(SettledUse::new(reservation.provider, |key| {
            c.standing("", key).used
        }))
    }

    /// [`CounterStore::release`], synchronously; releasing twice is harmless.
    pub fn release_now(&self, reservation: &Reservation) {
        if self.made_before_forgetting(reservation) {
            return;
        }
        let counters = self.counters(&reservation.user, month(reservation.period));
        lock(&counters).give_back(reservation.id);
    }

    /// Forgets every counter of `user`, for every period (the user was erased). Calls of theirs
    /// still in flight settle and release into nothing: their use is not counted again.
    pub fn forget_user(&self, user: &str) {
        let mut forgotten = lock(&self.forgotten);
        self.any_forgotten.store(true, Ordering::SeqCst);
        lock(&self.scopes).remove(user);
        forgotten.insert(user.to_owned(), self.next_id.load(Ordering::SeqCst));
    }

    fn made_before_forgetting(&self, reservation: &Reservation) -> bool {
        if !self.any_forgotten.load(Ordering::SeqCst) {
            return false;
        }
        lock(&self.forgotten)
            .get(&reservation.user)
            .is_some_and(|&first_after| reservation.id < first_after)
    }

    /// Where one limit stands for a user in a period.
    pub fn standing(&self, user: &str, period_key: &str, key: LimitKey) -> Standing {
        let scopes = lock(&self.scopes);
        month_of_key(period_key)
            .and_then(|month| scopes.get(user)?.get(&month).cloned())
            .map(|c| lock(&c).standing("", key))
            .unwrap_or_default()
    }

    /// Where one of a key's own limits stands in a period.
    pub fn key_standing(
        &self,
        user: &str,
        period_key: &str,
        key_id: &str,
        key: LimitKey,
    ) -> Standing {
        let scopes = lock(&self.scopes);
        month_of_key(period_key)
            .and_then(|month| scopes.get(user)?.get(&month).cloned())
            .map(|c| lock(&c).standing(key_id, key))
            .unwrap_or_default()
    }

    /// Sets a user-period's settled use from the ledger: the plan's counters and each key's
    /// budget counters.
    pub fn seed(&self, user: &str, period: BillingPeriod, totals: &PeriodTotals) {
        for &(key, used) in &totals.plan {
            self.seed_used(user, period, key, used);
        }
        for (key_id, used) in &totals.keys {
            for key in [LimitKey::KeyTokens, LimitKey::KeyCost] {
                self.seed_key_used(user, period, key_id, key, used.of(key.measure()));
            }
        }
    }

    /// Sets a plan counter's settled use, e.g. rebuilt from the ledger at start.
    pub fn seed_used(&self, user: &str, period: BillingPeriod, key: LimitKey, used: u64) {
        self.seed_key_used(user, period, "", key, used);
    }

    /// Sets the settled use of a counter of key `key_id` (of the plan's, for a counter that is
    /// not a key's), e.g. rebuilt from the ledger at start. Per-minute counters are not seeded.
    pub fn seed_key_used(
        &self,
        user: &str,
        period: BillingPeriod,
        key_id: &str,
        key: LimitKey,
        used: u64,
    ) {
        let counters = self.counters(user, month(period));
        if let Some(s) = lock(&counters).counter(key_id, None, key) {
            s.used = used;
        }
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
            key: "",
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
    fn a_keys_budget_admits_exactly_its_value_together_with_the_plan() {
        let store = Arc::new(MemoryStore::new());
        // The plan allows 150 calls; the key's cost budget 100 calls of 5.
        let limits = [
            Limit {
                key: LimitKey::ProviderCalls(Provider::OpenAi),
                max: 150,
            },
            Limit {
                key: LimitKey::KeyCost,
                max: 500,
            },
        ];
        let barrier = Arc::new(Barrier::new(200));
        let threads: Vec<_> = (0..200)
            .map(|_| {
                let store = Arc::clone(&store);
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let request = ReserveRequest {
                        key: "k1",
                        ..request("u", &limits, one_call(10, 5))
                    };
                    match store.reserve_now(request) {
                        Reserved::Admitted(r) => {
                            store.settle_now(&r, one_call(7, 5));
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
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&a| a)
            .count();
        assert_eq!(admitted, 100);
        let key_cost = store.key_standing("u", "2026-11", "k1", LimitKey::KeyCost);
        assert_eq!(
            key_cost,
            Standing {
                used: 500,
                reserved: 0
            }
        );
        let key_tokens = store.key_standing("u", "2026-11", "k1", LimitKey::KeyTokens);
        assert_eq!(key_tokens.used, 700);
        // The plan counted the same calls; another key of the user has a budget of its own.
        let calls = store.standing("u", "2026-11", LimitKey::ProviderCalls(Provider::OpenAi));
        assert_eq!(calls.used, 100);
        let other = ReserveRequest {
            key: "k2",
            ..request("u", &limits, one_call(10, 5))
        };
        assert!(matches!(store.reserve_now(other), Reserved::Admitted(_)));
        // Seeded from the ledger: what the key used before a restart counts.
        let fresh = MemoryStore::new();
        let period = BillingPeriod::containing(now(), AnchorDay::default());
        fresh.seed_key_used("u", period, "k1", LimitKey::KeyCost, 500);
        let again = ReserveRequest {
            key: "k1",
            ..request("u", &limits, one_call(10, 5))
        };
        assert!(matches!(fresh.reserve_now(again), Reserved::Denied(_)));
    }

    #[test]
    fn a_minute_window_admits_its_limit_and_resets_on_the_minute() {
        let store = MemoryStore::new();
        let limits = [Limit {
            key: LimitKey::CallsPerMinute(None),
            max: 3,
        }];
        let at = |t: &str| -> DateTime<Utc> { t.parse().unwrap() };
        let call = |t: &str| {
            let mut r = request("u", &limits, one_call(10, 5));
            r.now = at(t);
            r.expires_at = at(t) + chrono::Duration::seconds(600);
            store.reserve_now(r)
        };
        let mut admitted = Vec::new();
        for _ in 0..3 {
            let Reserved::Admitted(r) = call("2026-11-28T12:00:10Z") else {
                panic!("3 per minute");
            };
            admitted.push(r);
        }
        let Reserved::Denied(denial) = call("2026-11-28T12:00:59.5Z") else {
            panic!("the fourth in the same minute");
        };
        assert_eq!(denial.resets_at, at("2026-11-28T12:01:00Z"));
        assert_eq!(denial.retry_after_secs, 1);
        // A call that settles in the next window does not count there.
        assert!(matches!(
            call("2026-11-28T12:01:00Z"),
            Reserved::Admitted(_)
        ));
        store.settle_now(&admitted[0], one_call(10, 5));
        assert!(matches!(
            call("2026-11-28T12:01:01Z"),
            Reserved::Admitted(_)
        ));
        assert!(matches!(
            call("2026-11-28T12:01:02Z"),
            Reserved::Admitted(_)
        ));
        assert!(matches!(call("2026-11-28T12:01:03Z"), Reserved::Denied(_)));
        // A clock a moment behind counts in the open window, never reopening an old one.
        assert!(matches!(call("2026-11-28T12:00:59Z"), Reserved::Denied(_)));
        // The period's counters saw every admitted call.
        let calls = store.standing("u", "2026-11", LimitKey::TotalCalls);
        assert_eq!(calls.used + calls.reserved, 6);
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
