//! Tollgate's domain model: pure values and functions, no I/O.
//!
//! Providers, billing periods, plans and their limits, prices, normalized usage, the cost of a
//! call in integer nano-USD, and the admission rule that keeps every limit exact. Everything
//! here takes values and returns values, so the proxy, the counter stores, the ledger and the
//! admin API all agree on one definition of each.

pub mod admission;
pub mod alerts;
pub mod bound;
pub mod cost;
pub mod key_rules;
pub mod money;
pub mod period;
pub mod plan;
pub mod price;
pub mod provider;
pub mod usage;

pub use admission::{
    Amount, Decision, Denial, Limit, LimitKey, Measure, Standing, Window, decide, minute_window,
};
pub use alerts::{AlertSeverity, Crossing, amount, crossings, limit_phrase};
pub use bound::{
    BoundTerm, BoundUnit, CallBound, CallShape, DEFAULT_MAX_OUTPUT_TOKENS, Expect, FieldValue,
    MaxPerCall, RequestFields, output_bound, per_call_cost_bound, reservation_amount,
};
pub use cost::{Cost, cost, upper_bound, upper_bound_cost};
pub use key_rules::{KeyLimits, KeyRuleError, KeyRules, ModelPattern, parse_expiry};
pub use money::{Decimal, DecimalError, Rate, format_usd, round_div};
pub use period::{AnchorDay, BillingPeriod};
pub use plan::{
    DEFAULT_MIN_OUTPUT_TOKENS, NotInPlan, Plan, ProviderLimits, ShortBudget, Tier, UnknownTier,
    UnreachablePolicy,
};
pub use price::{
    ContextTier, ModelPrice, PriceBook, PriceMatch, ProviderPrices, TokenRates, UnitKind, UnitRate,
};
pub use provider::Provider;
pub use usage::Usage;
