//! The trace a refused call leaves. A request the gateway answered itself after it knew the
//! caller — a provider outside the plan, a limit reached, an unpriced model, the counter store
//! away, a body too large, the provider unreachable before anything was sent — is logged as a
//! usage event with the answer's status and code, no usage and no cost. The ledger counts it in
//! no summary, so it consumes no limit and is in no total; it is there so that a user (and an
//! operator) can see every call, refused ones included. An unknown key has no user: its
//! refusal is only counted in the metrics.

use chrono::Utc;
use tollgate_domain::{BillingPeriod, Cost, Usage};
use tollgate_ledger::UsageEvent;
use tollgate_usage::{RequestFacts, priced_name};

use crate::context::RequestCtx;
use crate::gateway::Gateway;
use crate::pricing;

impl Gateway {
    /// Records the refusal the request was answered with, if it was refused after its key
    /// resolved to a user and no admitted call of it was recorded.
    pub(crate) async fn record_refusal(&self, ctx: &RequestCtx) {
        let Some(event) = refusal_event(ctx) else {
            return;
        };
        if let Err(e) = self.ledger.record(event).await {
            tracing::error!(error = %e, "refusal not recorded");
        }
    }
}

/// The usage event of a request the gateway answered with its own error, `ctx.answered_with`;
/// none when it was not answered so, or its caller is not known.
pub fn refusal_event(ctx: &RequestCtx) -> Option<UsageEvent> {
    let (Some(error), Some(identity), Some(provider)) =
        (&ctx.answered_with, &ctx.identity, ctx.provider)
    else {
        return None;
    };
    // A refusal from the head has no facts from the body yet; the path may name the model.
    let model = ctx
        .facts
        .model
        .clone()
        .or_else(|| RequestFacts::of_path(provider, &ctx.path).model);
    let model = priced_name(provider, &ctx.path, model.as_deref());
    let config = &ctx.snapshot.config;
    let now = Utc::now();
    Some(UsageEvent {
        event_id: UsageEvent::new_id(),
        user_id: identity.user.clone(),
        key_id: Some(identity.key_id.clone()),
        provider,
        price_version: pricing::resolve(config, provider, &model).version(),
        model,
        endpoint: ctx.path.clone(),
        method: ctx.method.as_str().to_owned(),
        status: error.status(),
        usage: Usage::default(),
        cost: Cost::default(),
        estimated: false,
        latency_ms: u64::try_from(ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        request_bytes: ctx.request_bytes,
        response_bytes: 0,
        billing_period: BillingPeriod::containing(now, identity.anchor_day).key(),
        occurred_at: now,
        error_message: Some(error.to_string()),
        request_id: Some(ctx.request_id.clone()),
        // The code the answer's body carries as `tollgate.code`.
        refusal_reason: Some(error.code().to_owned()),
    })
}
