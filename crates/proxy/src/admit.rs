//! Admitting a call: the reservation admission plans, asked of the counters (again with a lower
//! output cap when the plan clamps calls to what is left of a budget), and the alerts of
//! counters that were just started from the ledger.

use std::sync::Arc;

use chrono::Utc;
use tollgate_counters::{CounterError, ReserveRequest, Reserved};

use crate::admission::{clamp, outcome, plan_reservation};
use crate::context::{Admitted, RequestCtx};
use crate::errors::GatewayError;
use crate::gateway::Gateway;
use crate::inflight::{Progress, Running};

/// Reservations tried for one call: its bound, then at most two lower output caps (a second
/// clamp when another call took part of what was left in between).
const ATTEMPTS: usize = 3;

impl Gateway {
    /// Reserves the call's upper bound against every limit of the caller's plan that applies,
    /// from `ctx.facts`; on success the reservation is in `ctx.admitted`, and a cap lowered to
    /// fit a budget in `ctx.output_cap` (only when `can_cap`: the body is there to rewrite).
    pub(crate) async fn admit(
        &self,
        ctx: &mut RequestCtx,
        can_cap: bool,
    ) -> Result<(), GatewayError> {
        let (Some(provider), Some(identity)) = (ctx.provider, ctx.identity.clone()) else {
            return Err(GatewayError::Internal);
        };
        let snapshot = Arc::clone(&ctx.snapshot);
        let config = &snapshot.config;
        let now = Utc::now();
        let plan = plan_reservation(config, &identity, provider, &ctx.path, &ctx.facts, now)?;
        let (mut amount, mut cap) = (plan.amount, None);
        for attempt in 1..=ATTEMPTS {
            let request = ReserveRequest {
                user: &identity.user,
                key: &identity.key_id,
                period: plan.period,
                provider,
                limits: &plan.limits,
                amount,
                now,
                expires_at: plan.expires_at,
            };
            let answer = match self.counters.reserve(request, plan.policy).await {
                Ok((reserved, seeded)) => {
                    // Counters started from the ledger: raise what the use they start from
                    // reached.
                    if let (Some(totals), Some(alerts)) = (seeded, &self.alerts)
                        && let Some(user_plan) = config.plans.get(&identity.plan)
                    {
                        let limits = user_plan.all_limits();
                        let thresholds = &config.alert_thresholds;
                        alerts.raise_reached(
                            &identity.user,
                            plan.period,
                            &limits,
                            &totals,
                            thresholds,
                        );
                    }
                    Ok(reserved)
                }
                Err(e) => {
                    self.metrics.counter_store_error();
                    if !matches!(e, CounterError::Unreachable(_)) {
                        tracing::warn!(error = %e, "reserving");
                    }
                    Err(e)
                }
            };
            if let Ok(Reserved::Denied(denial)) = &answer
                && can_cap
                && attempt < ATTEMPTS
                && let Some((output, clamped)) = clamp(&plan, &ctx.facts, denial)
            {
                (amount, cap) = (clamped, Some(output));
                continue;
            }
            let reservation = outcome(answer)?;
            if let Some(output) = cap {
                ctx.facts.max_output_tokens = Some(output);
                ctx.output_cap = Some(output);
            }
            let progress = Arc::new(Progress::default());
            let call_id = self.inflight.enter(Running {
                reservation: reservation.clone(),
                request_id: ctx.request_id.clone(),
                identity: Arc::clone(&identity),
                period: plan.period,
                method: ctx.method.clone(),
                path: ctx.path.clone(),
                facts: ctx.facts.clone(),
                started: ctx.started,
                progress: Arc::clone(&progress),
            });
            ctx.progress = Some(progress);
            tracing::debug!(
                request_id = ctx.request_id.as_str(),
                user = identity.user.as_str(),
                provider = provider.as_str(),
                reserved_tokens = amount.tokens,
                reserved_cost_nanousd = amount.cost_nanousd,
                "call admitted"
            );
            ctx.admitted = Some(Admitted {
                call_id,
                reservation,
                period: plan.period,
                limits: plan.limits,
            });
            return Ok(());
        }
        Err(GatewayError::Internal)
    }
}
