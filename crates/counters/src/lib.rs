//! Counter stores: where each user's use of each limit stands in the current billing period,
//! and the atomic reserve → settle/release cycle that keeps limits exact.
//!
//! Every call to a provider is counted against the same five counters, whatever the caller's
//! plan limits (its provider's calls and tokens, the plan-wide calls and tokens, and cost), so a
//! plan edit applies on the next request without anyone's counters being reset. Only the limits
//! the plan sets are checked.
//!
//! This crate has the in-process store, for a single gateway instance; a Redis store shares the
//! same operations across instances.

mod memory;

use std::future::Future;

use chrono::{DateTime, Utc};
use tollgate_domain::{Amount, BillingPeriod, Denial, Limit, LimitKey, Provider};

pub use memory::MemoryStore;

/// The counters a call to `provider` moves. Called on every reserve, settle and release, so it
/// allocates nothing.
pub fn counted_keys(provider: Provider) -> impl Iterator<Item = LimitKey> {
    let tokens = provider
        .is_token_billed()
        .then_some(LimitKey::ProviderTokens(provider));
    std::iter::once(LimitKey::ProviderCalls(provider))
        .chain(tokens)
        .chain([LimitKey::TotalCalls, LimitKey::TotalTokens, LimitKey::Cost])
}

/// A request to hold `amount` against `limits` for one call.
#[derive(Clone, Copy, Debug)]
pub struct ReserveRequest<'a> {
    pub user: &'a str,
    pub period: BillingPeriod,
    pub provider: Provider,
    /// The limits the caller's plan sets for this call (from `Plan::limits_for`).
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
    pub period: BillingPeriod,
    pub provider: Provider,
    pub amount: Amount,
    pub expires_at: DateTime<Utc>,
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
}

/// The operations every counter store provides, each atomic over all the counters it touches.
pub trait CounterStore: Send + Sync + 'static {
    /// Checks every limit and, if all admit the amount, holds it; otherwise names the first
    /// limit that denies.
    fn reserve(
        &self,
        request: ReserveRequest<'_>,
    ) -> impl Future<Output = Result<Reserved, CounterError>> + Send;

    /// Replaces the held amount with what the call actually used.
    fn settle(
        &self,
        reservation: &Reservation,
        actual: Amount,
    ) -> impl Future<Output = Result<(), CounterError>> + Send;

    /// Gives the held amount back (the call was never made).
    fn release(
        &self,
        reservation: &Reservation,
    ) -> impl Future<Output = Result<(), CounterError>> + Send;
}
