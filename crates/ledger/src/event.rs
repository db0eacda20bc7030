//! The usage event: everything a bill must be able to explain about one metered call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_domain::{AnchorDay, BillingPeriod, Cost, Provider, Usage};

/// One metered call, as the gateway hands it to the ledger. `event_id` is unique per call and
/// makes every write idempotent: recording, flushing or replaying the same event twice stores it
/// once. The key is identified by `key_id`, never by the key itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEvent {
    pub event_id: String,
    pub user_id: String,
    pub key_id: Option<String>,
    pub provider: Provider,
    pub model: String,
    pub endpoint: String,
    pub method: String,
    pub status: u16,
    pub usage: Usage,
    pub cost: Cost,
    /// The version of the price list the cost was computed with.
    pub price_version: String,
    /// True when the usage was estimated (a stream that ended without usage, say).
    pub estimated: bool,
    pub latency_ms: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// `YYYY-MM` of the subscription's billing period the call counts against.
    pub billing_period: String,
    pub occurred_at: DateTime<Utc>,
    pub error_message: Option<String>,
    /// The `x-request-id` the client was answered with. Events spooled before it existed have
    /// none, hence the default.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Set when the gateway refused the call after it knew the caller: the refusal's code (the
    /// `tollgate.code` of the answer's body, e.g. `usage_limit_exceeded`). Such an event has no
    /// usage and no cost, and counts in no summary, limit or total: it is there so that every
    /// call a user made can be found. Events spooled before it existed have none.
    #[serde(default)]
    pub refusal_reason: Option<String>,
}

impl UsageEvent {
    /// A fresh, time-ordered event id (UUID v7).
    pub fn new_id() -> String {
        // Encoded directly rather than through `Display`: one is made for every call.
        let mut text = uuid::Uuid::encode_buffer();
        uuid::Uuid::now_v7()
            .hyphenated()
            .encode_lower(&mut text)
            .to_owned()
    }

    /// The calendar-month period key of an instant, for callers without an anchor day.
    pub fn calendar_period(at: DateTime<Utc>) -> String {
        BillingPeriod::containing(at, AnchorDay::CALENDAR_MONTH).key()
    }

    /// Whether the gateway refused the call (and so it counts nowhere but in the log).
    pub fn is_refusal(&self) -> bool {
        self.refusal_reason.is_some()
    }

    /// Whether the call failed (status ≥ 400 or an error message), for error rates.
    pub fn is_error(&self) -> bool {
        self.status >= 400 || self.error_message.is_some()
    }
}

/// A `u64` count or amount as the `BIGINT` the tables store; values beyond `i64::MAX` (never
/// seen in practice) saturate rather than wrap into negative numbers.
pub(crate) fn to_db(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The inverse of [`to_db`]: a negative value (never written by the ledger) reads as 0.
pub(crate) fn from_db(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_spooled_before_request_ids_still_replays() {
        let mut event = crate::testing::event("e-1", "alice");
        event.request_id = Some("req-7".into());
        let mut json = serde_json::to_value(&event).unwrap();
        let back: UsageEvent = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, event);
        // A spool frame written by an earlier version has no `request_id` at all.
        json.as_object_mut().unwrap().remove("request_id");
        json.as_object_mut().unwrap().remove("refusal_reason");
        let old: UsageEvent = serde_json::from_value(json).unwrap();
        assert_eq!(old.request_id, None);
        assert_eq!(old.refusal_reason, None);
        assert_eq!(old.event_id, "e-1");
    }
}
