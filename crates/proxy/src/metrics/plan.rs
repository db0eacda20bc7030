//! Requests, tokens and cost by plan: `[admin] metrics_per_plan = true`.
//!
//! Plans are named by operators, not clients, so their series stay bounded (plans × providers,
//! × 4 status classes for requests). But a plan is a string that a reload can change, so its
//! series cannot be bound at start into a slice as the others are: each call finds them by a
//! label lookup in the library (a read lock and a hash of the label values), which is why they
//! are off unless asked for. docs/metrics.md gives the cost measured.

use prometheus::{IntCounterVec, Registry};
use tollgate_domain::{Provider, Usage};

use super::bind::counter_vec;

#[derive(Debug)]
pub(super) struct PerPlan {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    cost_nanousd: IntCounterVec,
}

impl PerPlan {
    pub(super) fn register(r: &Registry) -> prometheus::Result<PerPlan> {
        Ok(PerPlan {
            requests: counter_vec(
                r,
                "tollgate_plan_requests_total",
                "Requests answered, by the caller's plan, provider and status class (2xx, 3xx, 4xx, 5xx; none: no response was sent). Only with [admin] metrics_per_plan = true.",
                &["plan", "provider", "status_class"],
            )?,
            tokens: counter_vec(
                r,
                "tollgate_plan_tokens_total",
                "Tokens metered (input and output), by the caller's plan and provider. Only with [admin] metrics_per_plan = true.",
                &["plan", "provider"],
            )?,
            cost_nanousd: counter_vec(
                r,
                "tollgate_plan_cost_nanousd_total",
                "Cost metered, in nano-USD, by the caller's plan and provider. Only with [admin] metrics_per_plan = true.",
                &["plan", "provider"],
            )?,
        })
    }

    pub(super) fn request(&self, plan: &str, provider: Provider, status: u16) {
        let class = match status {
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            500..=599 => "5xx",
            _ => "none",
        };
        if let Ok(counter) =
            self.requests
                .get_metric_with_label_values(&[plan, provider.as_str(), class])
        {
            counter.inc();
        }
    }

    pub(super) fn usage(&self, plan: &str, provider: Provider, usage: &Usage, cost_nanousd: u64) {
        let labels = [plan, provider.as_str()];
        let tokens = usage.input_tokens.saturating_add(usage.output_tokens);
        if tokens > 0
            && let Ok(counter) = self.tokens.get_metric_with_label_values(&labels)
        {
            counter.inc_by(tokens);
        }
        if let Ok(counter) = self.cost_nanousd.get_metric_with_label_values(&labels) {
            counter.inc_by(cost_nanousd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plans_requests_tokens_and_cost_are_counted_under_its_name() {
        let registry = Registry::new();
        let per_plan = PerPlan::register(&registry).unwrap();
        per_plan.request("pro", Provider::OpenAi, 200);
        per_plan.request("pro", Provider::OpenAi, 429);
        per_plan.request("free", Provider::Gemini, 0);
        let usage = Usage {
            input_tokens: 100,
            output_tokens: 20,
            ..Usage::default()
        };
        per_plan.usage("pro", Provider::OpenAi, &usage, 1_500);
        let requests = |plan, provider, class| {
            per_plan
                .requests
                .with_label_values(&[plan, provider, class])
                .get()
        };
        assert_eq!(requests("pro", "openai", "2xx"), 1);
        assert_eq!(requests("pro", "openai", "4xx"), 1);
        assert_eq!(requests("free", "gemini", "none"), 1);
        assert_eq!(
            per_plan.tokens.with_label_values(&["pro", "openai"]).get(),
            120
        );
        assert_eq!(
            per_plan
                .cost_nanousd
                .with_label_values(&["pro", "openai"])
                .get(),
            1_500
        );
    }
}
