//! Events for unit tests.

use chrono::{TimeZone, Utc};
use tollgate_domain::{Cost, Provider, Usage};

use crate::event::UsageEvent;

pub(crate) fn event(id: &str, user: &str) -> UsageEvent {
    UsageEvent {
        event_id: id.to_owned(),
        user_id: user.to_owned(),
        key_id: Some("key-1".into()),
        provider: Provider::OpenAi,
        model: "gpt-4o".into(),
        endpoint: "/v1/chat/completions".into(),
        method: "POST".into(),
        status: 200,
        usage: Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        },
        cost: Cost {
            input_nanousd: 250_000,
            output_nanousd: 200_000,
            other_nanousd: 0,
            total_nanousd: 450_000,
        },
        price_version: "2026-08-21".into(),
        estimated: false,
        latency_ms: 120,
        request_bytes: 900,
        response_bytes: 1_500,
        billing_period: "2026-11".into(),
        occurred_at: Utc.with_ymd_and_hms(2026, 11, 3, 10, 0, 0).unwrap(),
        error_message: None,
        request_id: None,
        refusal_reason: None,
    }
}
