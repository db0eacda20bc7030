//! Admitting a call: the reservation admission plans, asked of the counters, and the alerts of
//! counters that were just started from the ledger.

use chrono::Utc;
use tollgate_counters::{CounterError, ReserveRequest};

use crate::admission::{outcome, plan_reservation};
use crate::context::{Admitted, RequestCtx};
use crate::errors::GatewayError;
use crate::gateway::Gateway;

impl Gateway {
    /// Reserves the call's upper bound against every limit of the caller's plan that applies,
    /// from `ctx.facts`; on success the reservation is in `ctx.admitted`.
    pub(crate) async fn admit(&self, ctx: &mut RequestCtx) -> Result<(), GatewayError> {
        let (Some(provider), Some(identity)) = (ctx.provider, ctx.identity.as_ref()) else {
            return Err(GatewayError::Internal);
        };
        let config = &ctx.snapshot.config;
        let now = Utc::now();
        let plan = plan_reservation(config, identity, provider, &ctx.path, &ctx.facts, now)?;
        let request = ReserveRequest {
            user: &identity.user,
            period: plan.period,
            provider,
            limits: &plan.limits,
            amount: plan.amount,
            now,
            expires_at: plan.expires_at,
        };
        let answer = self.counters.reserve(request, plan.policy).await;
        let answer = match answer {
            Ok((reserved, seeded)) => {
                // Counters started from the ledger: raise what the use they start from reached.
                if let (Some(totals), Some(alerts)) = (seeded, &self.alerts)
                    && let Some(user_plan) = config.plans.get(&identity.plan)
                {
                    let limits = user_plan.all_limits();
                    let thresholds = &config.alert_thresholds;
                    alerts.raise_reached(&identity.user, plan.period, &limits, &totals, thresholds);
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
        let reservation = outcome(answer)?;
        ctx.admitted = Some(Admitted {
            reservation,
            period: plan.period,
            limits: plan.limits,
        });
        Ok(())
    }
}
