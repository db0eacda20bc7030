//! The JSON the admin API sends: the seed's shapes (alwrity-api.md §1.2, §1.4) as the superset
//! of §7.3 that both of ALwrity's dashboard generations accept. Optional fields that are absent
//! are left out rather than sent as `null` (zod's `.optional()` refuses `null`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{"success": true, "data": …}`, the seed's envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    pub success: bool,
    pub data: T,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Envelope<T> {
        Envelope {
            success: true,
            data,
        }
    }
}

/// `{"success": true, "message": …}` (mark-read).
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub success: bool,
    pub message: String,
}

/// The seed's 14 limit keys (`0` = no limit, the seed's convention), HEAD's extra keys, and the
/// plan-wide limits Tollgate adds.
#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct SeedLimits {
    pub gemini_calls: u64,
    pub openai_calls: u64,
    pub anthropic_calls: u64,
    pub mistral_calls: u64,
    pub tavily_calls: u64,
    pub serper_calls: u64,
    pub metaphor_calls: u64,
    pub firecrawl_calls: u64,
    pub stability_calls: u64,
    pub gemini_tokens: u64,
    pub openai_tokens: u64,
    pub anthropic_tokens: u64,
    pub mistral_tokens: u64,
    /// Dollars per period; 0 = no cap.
    pub monthly_cost: f64,
    /// HEAD's shared LLM call limit; Tollgate has none (0).
    pub ai_text_generation_calls: u64,
    /// HEAD's name for Exa (the seed's `metaphor`): the same limit.
    pub exa_calls: u64,
    pub video_calls: u64,
    pub image_edit_calls: u64,
    pub audio_calls: u64,
    pub wavespeed_calls: u64,
    /// Calls across all providers per period; 0 = no limit.
    pub total_calls: u64,
    /// Tokens across all providers per period; 0 = no limit.
    pub total_tokens: u64,
}

/// [`SeedLimits`] with HEAD's `_zero_means` map: which zeros mean "disabled" (the provider is
/// not in the plan) and which "unlimited".
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FlatLimits {
    #[serde(flatten)]
    pub limits: SeedLimits,
    #[serde(rename = "_zero_means")]
    pub zero_means: BTreeMap<String, String>,
}

/// A plan's limits as the dashboard reads them.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LimitsBlock {
    pub plan_id: String,
    pub plan_name: String,
    /// `free`, `basic`, `pro` or `enterprise`.
    pub tier: String,
    pub limits: SeedLimits,
    pub features: Vec<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PlanOut {
    /// The plan's id in gateway.toml (`pro`); send it back to `/subscribe`.
    pub id: String,
    pub name: String,
    pub tier: String,
    pub price_monthly: f64,
    pub price_yearly: f64,
    pub description: String,
    pub features: Vec<String>,
    pub limits: FlatLimits,
    pub is_free: bool,
    pub is_active: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlansData {
    pub total: usize,
    pub plans: Vec<PlanOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PriceOut {
    /// The seed's provider name (`metaphor` for Exa).
    pub provider: String,
    pub model_name: String,
    /// USD per input token (the seed's unit, not per million).
    pub cost_per_input_token: f64,
    pub cost_per_output_token: f64,
    pub cost_per_request: f64,
    pub cost_per_search: f64,
    pub cost_per_image: f64,
    pub cost_per_page: f64,
    /// USD per credit (Tavily, Firecrawl).
    pub cost_per_credit: f64,
    /// Rates as published, USD per million tokens, exact decimal text.
    pub input_per_million: String,
    pub output_per_million: String,
    pub description: String,
    pub effective_date: String,
    pub source: String,
    /// USD: what the gateway reserves for a call with the provider's default options (a
    /// token-billed model: an empty prompt without an output cap), by the bound admission uses.
    pub max_cost_per_call: f64,
    /// Why a call is taken to cost at most `max_cost_per_call`, where its request does not
    /// bound the charge (`max_per_call` in `pricing/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PricingData {
    pub total: usize,
    pub pricing: Vec<PriceOut>,
}

/// An alert in the full form, everywhere (also inside usage and dashboard answers).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AlertOut {
    pub id: i64,
    #[serde(rename = "type")]
    pub alert_type: String,
    pub user_id: String,
    /// Which limit: `tavily_calls`, `gemini_tokens`, `monthly_cost`, `total_calls`, …
    pub limit_key: String,
    pub threshold_percentage: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub title: String,
    pub message: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub is_sent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    pub is_read: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_at: Option<String>,
    pub billing_period: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlertsData {
    /// All of the user's alerts (not only this page).
    pub total: u64,
    /// All of the user's unread alerts.
    pub unread_count: u64,
    pub alerts: Vec<AlertOut>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, ToSchema)]
pub struct ProviderStats {
    pub calls: u64,
    pub tokens: u64,
    /// Dollars.
    pub cost: f64,
}

/// The seed's UsageStats, with all 12 keys always present.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageStats {
    pub billing_period: String,
    /// `active`, `warning` (≥ 80 % of some limit) or `limit_reached` (≥ 100 %).
    pub usage_status: String,
    pub total_calls: u64,
    pub total_tokens: u64,
    /// Dollars.
    pub total_cost: f64,
    /// Seconds.
    pub avg_response_time: f64,
    /// Percent of calls that failed (0–100).
    pub error_rate: f64,
    pub limits: LimitsBlock,
    /// All nine providers under the seed's names.
    pub provider_breakdown: BTreeMap<String, ProviderStats>,
    /// Unread alerts of this period, newest first, at most 10.
    pub alerts: Vec<AlertOut>,
    /// `{provider}_calls` for all nine, `cost`, and the token and plan-wide limits.
    pub usage_percentages: BTreeMap<String, f64>,
    pub last_updated: String,
    pub period_start: String,
    pub period_end: String,
    /// Calls the gateway refused in the period after it knew the caller (a limit reached, a
    /// provider outside the plan, ...): in none of the counts above and in no limit.
    pub refused_calls: u64,
    /// `refused_calls` by refusal code (`usage_limit_exceeded`, `provider_not_in_plan`, ...);
    /// empty when there were none.
    pub refused_by_reason: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, ToSchema)]
pub struct ProviderTrend {
    pub calls: Vec<u64>,
    pub cost: Vec<f64>,
    pub tokens: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageTrends {
    /// Consecutive periods, oldest first.
    pub periods: Vec<String>,
    pub total_calls: Vec<u64>,
    pub total_cost: Vec<f64>,
    pub total_tokens: Vec<u64>,
    pub provider_trends: BTreeMap<String, ProviderTrend>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Projections {
    /// Dollars, to the cent: the period's cost so far over the days elapsed, times the days of
    /// the period (the real month length).
    pub projected_monthly_cost: f64,
    /// Dollars; 0 = no cap.
    pub cost_limit: f64,
    /// Of the cap; 0 when there is no cap.
    pub projected_usage_percentage: f64,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Summary {
    pub total_api_calls_this_month: u64,
    pub total_cost_this_month: f64,
    pub usage_status: String,
    /// All of the user's unread alerts.
    pub unread_alerts: u64,
}

/// The dashboard: `current_usage` for v1.1, `total_usage` and `current_period_usage` for HEAD
/// (all three the requested period).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Dashboard {
    pub current_usage: UsageStats,
    pub total_usage: UsageStats,
    pub current_period_usage: UsageStats,
    pub trends: UsageTrends,
    pub limits: LimitsBlock,
    /// Unread alerts of any period, newest first, at most 5.
    pub alerts: Vec<AlertOut>,
    pub projections: Projections,
    pub summary: Summary,
    /// What to know or do about the period (`GET /recommendations/{user_id}`).
    pub recommendations: Vec<crate::recommend::Recommendation>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionOut {
    /// The user's id (one subscription per user).
    pub id: String,
    pub plan_id: String,
    /// `monthly` or `yearly`.
    pub billing_cycle: String,
    /// Day of the month the billing periods start on.
    pub anchor_day: i64,
    pub current_period_start: String,
    pub current_period_end: String,
    pub status: String,
    pub auto_renew: bool,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanBrief {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub price_monthly: f64,
    pub price_yearly: f64,
    pub description: String,
    pub is_free: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserSubscription {
    /// Absent when the user is on the default plan without a subscription.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionOut>,
    pub plan: PlanBrief,
    /// The subscription's status, or `free` on the default plan.
    pub status: String,
    pub limits: FlatLimits,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOut {
    pub active: bool,
    pub plan: String,
    pub tier: String,
    pub can_use_api: bool,
    pub limits: FlatLimits,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A plan id: the gateway.toml id (`"pro"`), or a number — the plan's 1-based position in
/// `/plans`, which is what a client that knows the seed's integer ids sends back.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum PlanRef {
    Id(String),
    Position(u64),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    pub plan_id: Option<PlanRef>,
    /// `monthly` (default) or `yearly`.
    pub billing_cycle: Option<String>,
    /// Day of the month (1–31) the billing periods start on; default 1.
    pub anchor_day: Option<u8>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribeData {
    pub subscription_id: String,
    pub plan_id: String,
    pub plan_name: String,
    pub billing_cycle: String,
    pub anchor_day: i64,
    pub current_period_start: String,
    pub current_period_end: String,
    pub status: String,
    pub limits: FlatLimits,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscribeResponse {
    pub success: bool,
    pub message: String,
    pub data: SubscribeData,
}
