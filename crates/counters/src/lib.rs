//! Counter stores: where each user's use of each limit stands in the current billing period,
//! and the atomic reserve → settle/release cycle that keeps limits exact.
//!
//! Every call to a provider is counted against the same five counters, whatever the caller's
//! plan limits (its provider's calls and tokens, the plan-wide calls and tokens, and cost), so a
//! plan edit applies on the next request without anyone's counters being reset. Only the limits
//! the plan sets are checked.
//!
//! This crate has the in-process store, for a single gateway instance; the Redis store, which
//! shares the same operations across instances; and the resilient store, which puts the Redis
//! store in front of in-process counters and applies a plan's policy while Redis cannot be
//! reached. `docs/counters.md` describes the Redis layout and the failure modes.

mod connection;
mod memory;
mod outage;
mod redis_store;
mod resilient;
mod scripts;

use std::future::Future;

use chrono::{DateTime, Utc};
use tollgate_domain::{
    Amount, BillingPeriod, Denial, Limit, LimitKey, Provider, Standing, UnreachablePolicy,
};

pub use memory::MemoryStore;
pub use redis_store::{RedisConfig, RedisStats, RedisStore, ReserveOutcome};
pub use resilient::{
    ReplayHook, Replayed, ResilientConfig, ResilientStats, ResilientStore, SeedError, SeedFuture,
    Seeder,
};

/// The counters a call to `provider` moves. Called on every reserve, settle and release, so it
/// allocates nothing.
pub fn counted_keys(provider: Provider) -> impl Iterator<Item = LimitKey> + Clone {
    let tokens = provider
        .is_token_billed()
        .then_some(LimitKey::ProviderTokens(provider));
    std::iter::once(LimitKey::ProviderCalls(provider))
        .chain(tokens)
        .chain([LimitKey::TotalCalls, LimitKey::TotalTokens, LimitKey::Cost])
}

/// The most plan counters one call moves (see [`counted_keys`]).
const MAX_COUNTED: usize = 5;

/// Every counter a call to `provider` moves: its plan's ([`counted_keys`]); with a key (`key`),
/// that key's token and cost budgets; and with per-minute limits among its limits (`minute`),
/// the minute window's calls and tokens — the plan's per provider and in total, and the key's.
/// Per-minute counters are counted only for calls that have a per-minute limit, so a per-minute
/// limit added to a plan counts from its first call on, which for a window of a minute is all
/// it needs.
pub fn counted(
    provider: Provider,
    key: bool,
    minute: bool,
) -> impl Iterator<Item = LimitKey> + Clone {
    let tokens = provider.is_token_billed();
    let key_period = [LimitKey::KeyTokens, LimitKey::KeyCost]
        .into_iter()
        .filter(move |_| key);
    let plan_minute = [
        Some(LimitKey::CallsPerMinute(Some(provider))),
        tokens.then_some(LimitKey::TokensPerMinute(Some(provider))),
        Some(LimitKey::CallsPerMinute(None)),
        Some(LimitKey::TokensPerMinute(None)),
    ]
    .into_iter()
    .flatten()
    .filter(move |_| minute);
    let key_minute = [LimitKey::KeyCallsPerMinute, LimitKey::KeyTokensPerMinute]
        .into_iter()
        .filter(move |_| key && minute);
    counted_keys(provider)
        .chain(key_period)
        .chain(plan_minute)
        .chain(key_minute)
}

/// The settled use of every counter a call moved, read in the same atomic step as its settle.
///
/// This is what usage alerts compare with the plan's limits: since each settle moves a counter
/// from one value to the next atomically, `used - actual` is the value just before this call,
/// so a threshold between the two is crossed by this call alone, however many calls settle at
/// once and on however many instances. Fixed size, so settling allocates nothing for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettledUse {
    provider: Provider,
    /// In the order of `counted_keys(provider)`.
    used: [u64; MAX_COUNTED],
}

impl SettledUse {
    /// Reads each counter a call to `provider` moves from `used`.
    pub fn new(provider: Provider, mut used: impl FnMut(LimitKey) -> u64) -> SettledUse {
        let mut values = [0; MAX_COUNTED];
        for (value, key) in values.iter_mut().zip(counted_keys(provider)) {
            *value = used(key);
        }
        SettledUse {
            provider,
            used: values,
        }
    }

    /// The settled use of `key` after the call; `None` for a counter the call did not move.
    pub fn used(&self, key: LimitKey) -> Option<u64> {
        counted_keys(self.provider)
            .position(|k| k == key)
            .and_then(|i| self.used.get(i).copied())
    }

    /// Every counter the call moved, with its settled use.
    pub fn iter(&self) -> impl Iterator<Item = (LimitKey, u64)> + '_ {
        counted_keys(self.provider).zip(self.used.iter().copied())
    }
}

/// A request to hold `amount` against `limits` for one call.
#[derive(Clone, Copy, Debug)]
pub struct ReserveRequest<'a> {
    pub user: &'a str,
    /// The calling key's id, whose own counters the call also moves; empty for none.
    pub key: &'a str,
    pub period: BillingPeriod,
    pub provider: Provider,
    /// The limits that apply to this call: its plan's (`Plan::limits_for`) and its key's.
    pub limits: &'a [Limit],
    /// The call's upper bound.
    pub amount: Amount,
    pub now: DateTime<Utc>,
    /// When an unsettled reservation gives its amount back (a crashed or lost call).
    pub expires_at: DateTime<Utc>,
}

/// An amount held for a call in flight, to be settled or released exactly once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub id: u64,
    pub user: String,
    /// The calling key's id; empty for none.
    pub key: String,
    /// The minute window the call's per-minute counters count in (`None`: it has none).
    pub window: Option<i64>,
    pub period: BillingPeriod,
    pub provider: Provider,
    pub amount: Amount,
    pub expires_at: DateTime<Utc>,
    /// Where the amount is held, so that settling and releasing go to the same place.
    pub held: Hold,
}

impl<'a> ReserveRequest<'a> {
    /// Whether the call moves per-minute counters: it does when one of its limits is per minute.
    pub fn counts_minutes(&self) -> bool {
        self.limits.iter().any(|l| l.key.is_per_minute())
    }

    /// The counters the call moves (see [`counted`]).
    pub fn counted(&self) -> impl Iterator<Item = LimitKey> + Clone + use<'a> {
        counted(self.provider, !self.key.is_empty(), self.counts_minutes())
    }
}

impl Reservation {
    /// The reservation `request` makes when admitted, under `id`, held in `held`, counting in
    /// minute window `window` if it has per-minute limits.
    pub fn of(
        request: &ReserveRequest<'_>,
        id: u64,
        held: Hold,
        window: Option<i64>,
    ) -> Reservation {
        Reservation {
            id,
            user: request.user.to_owned(),
            key: request.key.to_owned(),
            window,
            period: request.period,
            provider: request.provider,
            amount: request.amount,
            expires_at: request.expires_at,
            held,
        }
    }
}

impl Reservation {
    /// The counters the call moves (see [`counted`]).
    pub fn counted(&self) -> impl Iterator<Item = LimitKey> + use<> {
        counted(self.provider, !self.key.is_empty(), self.window.is_some())
    }
}

/// Where a reservation's amount is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hold {
    /// In the store that admitted it (the in-process store, or Redis).
    #[default]
    Store,
    /// In the in-process counters a resilient store enforces with while Redis is unreachable.
    Local,
    /// Nowhere: admitted without a hold while Redis was unreachable (`fail_open`); its use is
    /// counted when it settles.
    Unheld,
}

/// What a store's counters stood at for one user-period, counter by counter: what a store
/// saw while admitting or refusing a call.
pub type Standings = Vec<(LimitKey, Standing)>;

/// A user's settled use in a period, counter by counter (from the ledger): what rebuilds a
/// store's counters after they were lost. Counters not listed are zero.
pub type Totals = [(LimitKey, u64)];

/// A user's settled use in a period by each of their keys (from the ledger): what rebuilds the
/// keys' budget counters. Keys not listed used nothing.
pub type KeyTotals = [(String, Amount)];

/// A user's settled use in a period, from the ledger: their plan's counters and their keys'.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    pub plan: Vec<(LimitKey, u64)>,
    pub keys: Vec<(String, Amount)>,
}

/// The outcome of a reservation attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserved {
    Admitted(Reservation),
    Denied(Denial),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("the counter store is unreachable: {0}")]
    Unreachable(String),
    /// The store has no totals for this user-period (new, or lost with Redis's data): seed it
    /// from the ledger ([`RedisStore::seed`]) and retry. The resilient store does this itself.
    #[error("the counters of user {user:?} for {period} need seeding from the ledger")]
    NeedsSeed { user: String, period: String },
    #[error("counter store configuration: {0}")]
    Config(String),
    /// Redis answered a counter script with something this gateway cannot read (a script of
    /// another version, or a bug in one). Handled like [`CounterError::Unreachable`]: the
    /// plan's policy applies until Redis answers sensibly again.
    #[error("the counter store's {script} script answered {problem}")]
    BadReply {
        script: &'static str,
        problem: String,
    },
}

/// The operations every counter store provides, each atomic over all the counters it touches.
pub trait CounterStore: Send + Sync + 'static {
    /// Checks every limit and, if all admit the amount, holds it; otherwise names the first
    /// limit that denies.
    fn reserve(
        &self,
        request: ReserveRequest<'_>,
    ) -> impl Future<Output = Result<Reserved, CounterError>> + Send;

    /// [`CounterStore::reserve`] for a plan whose policy while the store is unreachable is
    /// `on_unreachable`. Stores that cannot be unreachable ignore it.
    fn reserve_with(
        &self,
        request: ReserveRequest<'_>,
        on_unreachable: UnreachablePolicy,
    ) -> impl Future<Output = Result<Reserved, CounterError>> + Send {
        let _ = on_unreachable;
        self.reserve(request)
    }

    /// Replaces the held amount with what the call actually used, and answers the settled use
    /// of each counter the call moved as this settle left it. `None` when the store cannot
    /// know it atomically: a duplicate settle, a user-period not initialised, or a settle
    /// deferred while the store is unreachable.
    fn settle(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> impl Future<Output = Result<Option<SettledUse>, CounterError>> + Send;

    /// Gives the held amount back (the call was never made).
    fn release(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<(), CounterError>> + Send;
}
