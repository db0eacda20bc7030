//! The gateway's own refusals, rendered in the shape of the provider the client was calling.
//!
//! An SDK pointed at Tollgate should surface a Tollgate refusal the way it surfaces the
//! provider's own errors: the status code drives the SDK's exception class, and the body has the
//! provider's field names. Every body also carries a `tollgate` object with a stable `code` and,
//! for limits, which limit, its value, its use and when it resets — the same in every shape.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use tollgate_domain::{Denial, LimitKey, Measure, Provider, format_usd};

/// Why the gateway cannot start (or take a new configuration): what setting is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("provider base URL {url:?}: {reason}")]
    BadUpstream { url: String, reason: &'static str },
    /// A metric the gateway could not register (two metrics of one name, a malformed name):
    /// a mistake in the code, found at start rather than on a scrape.
    #[error("registering the gateway's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Why the gateway answered instead of the provider.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    #[error("no API key: send your Tollgate key where the provider's key would go")]
    MissingKey,
    #[error("invalid API key")]
    UnknownKey,
    #[error("user {user:?} is disabled on this gateway; ask its operator to enable the user again")]
    UserDisabled { user: String },
    #[error(
        "API key {key_id} expired at {}; ask the gateway's operator for a new key",
        iso(*.expired_at)
    )]
    KeyExpired {
        key_id: String,
        expired_at: DateTime<Utc>,
    },
    #[error(
        "this API key may not call {} (it may call: {})",
        provider.display_name(),
        names(allowed.iter().map(|p| p.as_str()))
    )]
    ProviderNotAllowed {
        provider: Provider,
        allowed: Vec<Provider>,
    },
    #[error(
        "this API key may not call model {model:?} of {} (its models there: {})",
        provider.display_name(),
        names(allowed.iter().map(String::as_str))
    )]
    ModelNotAllowed {
        provider: Provider,
        model: String,
        allowed: Vec<String>,
    },
    #[error("{} is not included in your plan ({plan})", provider.display_name())]
    NotInPlan { provider: Provider, plan: String },
    #[error(
        "your plan ({plan}) is no longer offered on this gateway; ask its operator to move you \
         to another plan"
    )]
    PlanNotOffered { plan: String },
    #[error("{}", limit_message(.0))]
    LimitExceeded(Denial),
    #[error("model {model:?} has no price on this gateway, so calls to it are not accepted")]
    UnpricedModel { model: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("no such route: {0}")]
    UnknownRoute(String),
    #[error("request headers are larger than {max_bytes} bytes")]
    HeadersTooLarge { max_bytes: u64 },
    #[error("request headers did not arrive in time")]
    HeadersTimeout,
    #[error("request body did not arrive within {timeout_ms} ms")]
    BodyTimeout { timeout_ms: u64 },
    #[error("request body is larger than {max_bytes} bytes")]
    BodyTooLarge { max_bytes: u64 },
    #[error("{} is not configured on this gateway (no provider key)", .0.display_name())]
    ProviderNotConfigured(Provider),
    #[error("API keys cannot be checked right now; try again shortly")]
    KeyStoreUnavailable,
    #[error("usage limits cannot be checked right now; try again shortly")]
    CounterStoreUnavailable,
    #[error("could not connect to {}", .0.display_name())]
    UpstreamConnect(Provider),
    /// The connection was made, then closed (or reset) before the provider answered.
    #[error("{} closed the connection before answering", .0.display_name())]
    UpstreamClosed(Provider),
    #[error("{} did not answer in time", .0.display_name())]
    UpstreamTimeout(Provider),
    #[error("internal gateway error")]
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::MissingKey
            | GatewayError::UnknownKey
            | GatewayError::KeyExpired { .. } => 401,
            GatewayError::UserDisabled { .. }
            | GatewayError::ProviderNotAllowed { .. }
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::NotInPlan { .. }
            | GatewayError::PlanNotOffered { .. } => 403,
            GatewayError::LimitExceeded(_) => 429,
            GatewayError::UnpricedModel { .. } | GatewayError::BadRequest(_) => 400,
            GatewayError::UnknownRoute(_) => 404,
            GatewayError::HeadersTooLarge { .. } => 431,
            GatewayError::HeadersTimeout | GatewayError::BodyTimeout { .. } => 408,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::ProviderNotConfigured(_)
            | GatewayError::CounterStoreUnavailable
            | GatewayError::KeyStoreUnavailable => 503,
            GatewayError::UpstreamConnect(_) | GatewayError::UpstreamClosed(_) => 502,
            GatewayError::UpstreamTimeout(_) => 504,
            GatewayError::Internal => 500,
        }
    }

    /// A stable machine-readable code, the same whatever the provider's shape.
    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::MissingKey => "missing_api_key",
            GatewayError::UnknownKey => "invalid_api_key",
            GatewayError::UserDisabled { .. } => "user_disabled",
            GatewayError::KeyExpired { .. } => "key_expired",
            GatewayError::ProviderNotAllowed { .. } => "provider_not_allowed",
            GatewayError::ModelNotAllowed { .. } => "model_not_allowed",
            GatewayError::NotInPlan { .. } => "provider_not_in_plan",
            GatewayError::PlanNotOffered { .. } => "plan_not_offered",
            GatewayError::LimitExceeded(d) if d.limit.key.is_per_minute() => "rate_limit_exceeded",
            GatewayError::LimitExceeded(_) => "usage_limit_exceeded",
            GatewayError::UnpricedModel { .. } => "model_not_priced",
            GatewayError::BadRequest(_) => "invalid_request",
            GatewayError::UnknownRoute(_) => "unknown_route",
            GatewayError::HeadersTooLarge { .. } => "request_headers_too_large",
            GatewayError::HeadersTimeout | GatewayError::BodyTimeout { .. } => "request_timeout",
            GatewayError::BodyTooLarge { .. } => "request_too_large",
            GatewayError::ProviderNotConfigured(_) => "provider_not_configured",
            GatewayError::CounterStoreUnavailable => "limits_unavailable",
            GatewayError::KeyStoreUnavailable => "keys_unavailable",
            GatewayError::UpstreamConnect(_) => "upstream_unreachable",
            GatewayError::UpstreamClosed(_) => "upstream_closed",
            GatewayError::UpstreamTimeout(_) => "upstream_timeout",
            GatewayError::Internal => "internal_error",
        }
    }
}

/// A complete response: status, headers and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ErrorResponse {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

/// Renders `error` as `provider` would (OpenAI's shape when the provider is not known).
pub fn render(provider: Option<Provider>, error: &GatewayError) -> ErrorResponse {
    let status = error.status();
    let message = error.to_string();
    let details = tollgate_details(error);
    let body = match provider.unwrap_or(Provider::OpenAi) {
        Provider::OpenAi | Provider::Mistral => json!({
            "error": {
                "message": message,
                "type": openai_type(error),
                "param": null,
                "code": error.code(),
            },
            "tollgate": details,
        }),
        Provider::Anthropic => json!({
            "type": "error",
            "error": {"type": anthropic_type(error), "message": message},
            "tollgate": details,
        }),
        Provider::Gemini => {
            let mut body = json!({
                "error": {"code": status, "message": message, "status": google_status(error)},
                "tollgate": details,
            });
            // Google's own rate limits say when to retry in a RetryInfo detail.
            if let GatewayError::LimitExceeded(d) = error
                && d.limit.key.is_per_minute()
            {
                body["error"]["details"] = json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{}s", d.retry_after_secs),
                }]);
            }
            body
        }
        Provider::Tavily => json!({"detail": {"error": message}, "tollgate": details}),
        Provider::Serper => json!({"message": message, "statusCode": status, "tollgate": details}),
        Provider::Exa => json!({"error": message, "tollgate": details}),
        Provider::Firecrawl => json!({"success": false, "error": message, "tollgate": details}),
        Provider::Stability => json!({
            "id": error.code(),
            "name": error.code(),
            "errors": [message],
            "tollgate": details,
        }),
    };
    let mut headers = vec![("content-type", "application/json".to_owned())];
    match error {
        // A per-minute window: a retry once it resets succeeds, so the SDKs are told when, as
        // the providers' own rate limits tell them (`Retry-After`, which the openai, anthropic
        // and google SDKs honour, and the provider's rate-limit headers).
        GatewayError::LimitExceeded(denial) if denial.limit.key.is_per_minute() => {
            headers.push(("retry-after", denial.retry_after_secs.to_string()));
            headers.extend(minute_headers(provider, denial));
            headers.push(("x-tollgate-limit", denial.limit.key.name()));
        }
        // A limit of the billing period: no retry can succeed before it resets, days away, so
        // the SDKs are told not to retry (`x-should-retry`, honoured by the openai and anthropic
        // SDKs) and get no `Retry-After` (which some would sleep for, however long). When it
        // resets is in the message and the rate-limit headers.
        GatewayError::LimitExceeded(denial) => {
            let reset = match denial.limit.key.measure() {
                Measure::Calls => "x-ratelimit-reset-requests",
                Measure::Tokens => "x-ratelimit-reset-tokens",
                Measure::CostNanousd => "x-ratelimit-reset-cost",
            };
            headers.extend([
                ("x-should-retry", "false".to_owned()),
                ("x-ratelimit-limit", denial.limit.max.to_string()),
                ("x-ratelimit-remaining", denial.remaining().to_string()),
                ("x-ratelimit-reset", iso(denial.resets_at)),
                (reset, iso(denial.resets_at)),
                ("x-tollgate-limit", denial.limit.key.name()),
            ]);
        }
        // The store is away for moments (a Redis failover, a database restart): a retry in a
        // second or two can succeed, and SDKs retry 503s at their defaults.
        GatewayError::CounterStoreUnavailable | GatewayError::KeyStoreUnavailable => {
            headers.push(("retry-after", UNAVAILABLE_RETRY_AFTER_SECS.to_string()));
        }
        _ => {}
    }
    ErrorResponse {
        status,
        headers,
        body,
    }
}

/// The rate-limit headers `provider` sends with its own 429 for a window like `denial`'s:
/// Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` (reset as an RFC
/// 3339 time), and OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (reset as a
/// duration, `12s`) for the others, which have none of their own.
fn minute_headers(provider: Option<Provider>, denial: &Denial) -> Vec<(&'static str, String)> {
    let tokens = denial.limit.key.measure() == Measure::Tokens;
    let limit = denial.limit.max.to_string();
    let remaining = denial.remaining().to_string();
    if provider == Some(Provider::Anthropic) {
        let [l, r, t] = if tokens {
            [
                "anthropic-ratelimit-tokens-limit",
                "anthropic-ratelimit-tokens-remaining",
                "anthropic-ratelimit-tokens-reset",
            ]
        } else {
            [
                "anthropic-ratelimit-requests-limit",
                "anthropic-ratelimit-requests-remaining",
                "anthropic-ratelimit-requests-reset",
            ]
        };
        return vec![(l, limit), (r, remaining), (t, iso(denial.resets_at))];
    }
    let [l, r, t] = if tokens {
        [
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
        ]
    } else {
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ]
    };
    vec![
        (l, limit),
        (r, remaining),
        (t, format!("{}s", denial.retry_after_secs)),
    ]
}

/// Seconds a client is asked to wait before retrying a call refused because the counter or key
/// store could not be reached.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 2;

fn tollgate_details(error: &GatewayError) -> Value {
    match error {
        GatewayError::LimitExceeded(d) => json!({
            "code": error.code(),
            "limit": d.limit.key.name(),
            "limit_value": d.limit.max,
            "used": d.standing.used,
            "reserved": d.standing.reserved,
            "requested": d.requested,
            "remaining": d.remaining(),
            "unit": unit_name(d.limit.key),
            "resets_at": iso(d.resets_at),
            "seconds_until_reset": d.retry_after_secs,
        }),
        GatewayError::KeyExpired { expired_at, .. } => json!({
            "code": error.code(),
            "expired_at": iso(*expired_at),
        }),
        GatewayError::ProviderNotAllowed { provider, allowed } => json!({
            "code": error.code(),
            "provider": provider.as_str(),
            "allowed_providers": allowed.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        }),
        GatewayError::ModelNotAllowed {
            provider,
            model,
            allowed,
        } => json!({
            "code": error.code(),
            "provider": provider.as_str(),
            "model": model,
            "allowed_models": allowed,
        }),
        _ => json!({"code": error.code()}),
    }
}

/// A list for a message: `a, b, c`, or `none` when empty.
fn names<'a>(list: impl Iterator<Item = &'a str>) -> String {
    let joined = list.collect::<Vec<_>>().join(", ");
    if joined.is_empty() {
        "none".to_owned()
    } else {
        joined
    }
}

fn limit_message(d: &Denial) -> String {
    let amount = |v: u64| match d.limit.key.measure() {
        Measure::CostNanousd => format!("${}", format_usd(v)),
        _ => v.to_string(),
    };
    let (kind, window) = match (d.limit.key.is_per_minute(), d.limit.key.is_keys()) {
        (true, _) => ("rate limit", "this minute"),
        (false, true) => ("key budget", "this billing period"),
        (false, false) => ("usage limit", "this billing period"),
    };
    format!(
        "{kind} {} reached: {} of {}{} used {window}{}, this request needs up to {}; \
         the limit resets at {}",
        d.limit.key.name(),
        amount(d.standing.used),
        amount(d.limit.max),
        match d.limit.key.measure() {
            Measure::CostNanousd => "",
            Measure::Calls => " calls",
            Measure::Tokens => " tokens",
        },
        if d.standing.reserved > 0 {
            format!(
                " ({} more held by calls in flight)",
                amount(d.standing.reserved)
            )
        } else {
            String::new()
        },
        amount(d.requested),
        iso(d.resets_at),
    )
}

fn unit_name(key: LimitKey) -> &'static str {
    match key.measure() {
        Measure::Calls => "calls",
        Measure::Tokens => "tokens",
        Measure::CostNanousd => "nanousd",
    }
}

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn openai_type(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::MissingKey | GatewayError::UnknownKey | GatewayError::KeyExpired { .. } => {
            "invalid_request_error"
        }
        // OpenAI's own types for its rate limits and for an exhausted quota.
        GatewayError::LimitExceeded(d) if d.limit.key.is_per_minute() => {
            match d.limit.key.measure() {
                Measure::Tokens => "tokens",
                _ => "requests",
            }
        }
        GatewayError::LimitExceeded(_) => "insufficient_quota",
        GatewayError::UserDisabled { .. }
        | GatewayError::ProviderNotAllowed { .. }
        | GatewayError::ModelNotAllowed { .. }
        | GatewayError::NotInPlan { .. }
        | GatewayError::PlanNotOffered { .. } => "permission_error",
        GatewayError::UnknownRoute(_) => "not_found_error",
        GatewayError::UnpricedModel { .. }
        | GatewayError::BadRequest(_)
        | GatewayError::HeadersTooLarge { .. }
        | GatewayError::HeadersTimeout
        | GatewayError::BodyTimeout { .. }
        | GatewayError::BodyTooLarge { .. } => "invalid_request_error",
        _ => "server_error",
    }
}

fn anthropic_type(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::MissingKey | GatewayError::UnknownKey | GatewayError::KeyExpired { .. } => {
            "authentication_error"
        }
        GatewayError::UserDisabled { .. }
        | GatewayError::ProviderNotAllowed { .. }
        | GatewayError::ModelNotAllowed { .. }
        | GatewayError::NotInPlan { .. }
        | GatewayError::PlanNotOffered { .. } => "permission_error",
        GatewayError::LimitExceeded(_) => "rate_limit_error",
        GatewayError::UnknownRoute(_) => "not_found_error",
        GatewayError::BodyTooLarge { .. } => "request_too_large",
        GatewayError::UnpricedModel { .. }
        | GatewayError::BadRequest(_)
        | GatewayError::HeadersTooLarge { .. }
        | GatewayError::HeadersTimeout
        | GatewayError::BodyTimeout { .. } => "invalid_request_error",
        GatewayError::ProviderNotConfigured(_)
        | GatewayError::CounterStoreUnavailable
        | GatewayError::KeyStoreUnavailable => "overloaded_error",
        _ => "api_error",
    }
}

fn google_status(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::MissingKey | GatewayError::UnknownKey | GatewayError::KeyExpired { .. } => {
            "UNAUTHENTICATED"
        }
        GatewayError::UserDisabled { .. }
        | GatewayError::ProviderNotAllowed { .. }
        | GatewayError::ModelNotAllowed { .. }
        | GatewayError::NotInPlan { .. }
        | GatewayError::PlanNotOffered { .. } => "PERMISSION_DENIED",
        GatewayError::LimitExceeded(_) => "RESOURCE_EXHAUSTED",
        GatewayError::UnknownRoute(_) => "NOT_FOUND",
        GatewayError::UnpricedModel { .. }
        | GatewayError::BadRequest(_)
        | GatewayError::HeadersTooLarge { .. }
        | GatewayError::BodyTooLarge { .. } => "INVALID_ARGUMENT",
        GatewayError::UpstreamTimeout(_)
        | GatewayError::HeadersTimeout
        | GatewayError::BodyTimeout { .. } => "DEADLINE_EXCEEDED",
        GatewayError::ProviderNotConfigured(_)
        | GatewayError::CounterStoreUnavailable
        | GatewayError::KeyStoreUnavailable
        | GatewayError::UpstreamConnect(_)
        | GatewayError::UpstreamClosed(_) => "UNAVAILABLE",
        GatewayError::Internal => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::{Limit, Standing};

    fn denial() -> GatewayError {
        GatewayError::LimitExceeded(Denial {
            limit: Limit {
                key: LimitKey::ProviderCalls(Provider::Tavily),
                max: 20,
            },
            standing: Standing {
                used: 19,
                reserved: 1,
            },
            requested: 1,
            resets_at: "2026-12-01T00:00:00Z".parse().unwrap(),
            retry_after_secs: 259_200,
        })
    }

    fn minute_denial(key: LimitKey) -> GatewayError {
        GatewayError::LimitExceeded(Denial {
            limit: Limit { key, max: 60 },
            standing: Standing {
                used: 58,
                reserved: 2,
            },
            requested: 1,
            resets_at: "2026-12-06T12:01:00Z".parse().unwrap(),
            retry_after_secs: 17,
        })
    }

    #[test]
    fn a_per_minute_429_says_when_to_retry_as_the_provider_would() {
        let header = |r: &ErrorResponse, n: &str| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        let r = render(
            Some(Provider::OpenAi),
            &minute_denial(LimitKey::CallsPerMinute(None)),
        );
        assert_eq!(r.status, 429);
        assert_eq!(header(&r, "retry-after").as_deref(), Some("17"));
        assert_eq!(header(&r, "x-should-retry"), None);
        assert_eq!(
            header(&r, "x-ratelimit-limit-requests").as_deref(),
            Some("60")
        );
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests").as_deref(),
            Some("0")
        );
        assert_eq!(
            header(&r, "x-ratelimit-reset-requests").as_deref(),
            Some("17s")
        );
        assert_eq!(r.body["error"]["code"], "rate_limit_exceeded");
        assert_eq!(r.body["error"]["type"], "requests");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(
                "rate limit calls_per_minute reached: 58 of 60 calls used this minute"
            ),
            "{message}"
        );

        let r = render(
            Some(Provider::Anthropic),
            &minute_denial(LimitKey::KeyTokensPerMinute),
        );
        assert_eq!(header(&r, "retry-after").as_deref(), Some("17"));
        assert_eq!(
            header(&r, "anthropic-ratelimit-tokens-reset").as_deref(),
            Some("2026-12-06T12:01:00Z")
        );
        assert_eq!(r.body["error"]["type"], "rate_limit_error");
        assert_eq!(r.body["tollgate"]["limit"], "key_tokens_per_minute");

        let r = render(
            Some(Provider::Gemini),
            &minute_denial(LimitKey::CallsPerMinute(Some(Provider::Gemini))),
        );
        assert_eq!(r.body["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(r.body["error"]["details"][0]["retryDelay"], "17s");
    }

    #[test]
    fn a_429_names_the_limit_and_when_it_resets() {
        let r = render(Some(Provider::Tavily), &denial());
        assert_eq!(r.status, 429);
        let header = |n| {
            r.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        // Not retryable before the period resets: no Retry-After, and SDKs told not to retry.
        assert_eq!(header("retry-after"), None);
        assert_eq!(header("x-should-retry"), Some("false"));
        assert_eq!(
            header("x-ratelimit-reset-requests"),
            Some("2026-12-01T00:00:00Z")
        );
        assert_eq!(header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(header("x-tollgate-limit"), Some("tavily_calls"));
        let t = &r.body["tollgate"];
        assert_eq!(t["code"], "usage_limit_exceeded");
        assert_eq!(t["limit"], "tavily_calls");
        assert_eq!(t["limit_value"], 20);
        assert_eq!(t["used"], 19);
        assert_eq!(t["resets_at"], "2026-12-01T00:00:00Z");
        let message = r.body["detail"]["error"].as_str().unwrap();
        assert!(message.contains("19 of 20 calls used"), "{message}");
        assert!(
            message.contains("resets at 2026-12-01T00:00:00Z"),
            "{message}"
        );
        // A store that is away for moments: retrying soon can succeed.
        let r = render(
            Some(Provider::OpenAi),
            &GatewayError::CounterStoreUnavailable,
        );
        assert!(r.headers.contains(&("retry-after", "2".to_owned())));
    }

    #[test]
    fn each_provider_gets_its_own_shape() {
        let e = GatewayError::UnknownKey;
        let openai = render(Some(Provider::OpenAi), &e).body;
        assert_eq!(openai["error"]["code"], "invalid_api_key");
        assert_eq!(openai["error"]["type"], "invalid_request_error");
        let anthropic = render(Some(Provider::Anthropic), &e).body;
        assert_eq!(anthropic["type"], "error");
        assert_eq!(anthropic["error"]["type"], "authentication_error");
        let gemini = render(Some(Provider::Gemini), &denial()).body;
        assert_eq!(gemini["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(gemini["error"]["code"], 429);
        assert_eq!(render(Some(Provider::Firecrawl), &e).body["success"], false);
        assert_eq!(render(Some(Provider::Serper), &e).body["statusCode"], 401);
        assert!(render(Some(Provider::Stability), &e).body["errors"].is_array());
        assert!(render(Some(Provider::Exa), &e).body["error"].is_string());
        assert_eq!(
            render(None, &GatewayError::UnknownRoute("/x".into())).status,
            404
        );
    }

    #[test]
    fn cost_limits_read_in_dollars() {
        let e = GatewayError::LimitExceeded(Denial {
            limit: Limit {
                key: LimitKey::Cost,
                max: 2_000_000_000,
            },
            standing: Standing {
                used: 1_999_000_000,
                reserved: 0,
            },
            requested: 1_500_000,
            resets_at: "2026-12-01T00:00:00Z".parse().unwrap(),
            retry_after_secs: 10,
        });
        let message = e.to_string();
        assert!(message.contains("$1.999 of $2.00 used"), "{message}");
        assert!(message.contains("up to $0.0015"), "{message}");
    }

    #[test]
    fn a_keys_own_refusals_name_what_it_may_do() {
        let model = GatewayError::ModelNotAllowed {
            provider: Provider::OpenAi,
            model: "o3".into(),
            allowed: vec!["gpt-4o*".into(), "gpt-4.1".into()],
        };
        let r = render(Some(Provider::OpenAi), &model);
        assert_eq!(r.status, 403);
        assert_eq!(r.body["error"]["type"], "permission_error");
        assert_eq!(r.body["error"]["code"], "model_not_allowed");
        assert_eq!(
            r.body["error"]["message"],
            "this API key may not call model \"o3\" of OpenAI (its models there: gpt-4o*, gpt-4.1)"
        );
        assert_eq!(r.body["tollgate"]["allowed_models"][1], "gpt-4.1");
        let provider = GatewayError::ProviderNotAllowed {
            provider: Provider::Gemini,
            allowed: vec![Provider::OpenAi],
        };
        let r = render(Some(Provider::Gemini), &provider);
        assert_eq!(r.body["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(r.body["tollgate"]["allowed_providers"][0], "openai");
        let expired = GatewayError::KeyExpired {
            key_id: "key_1".into(),
            expired_at: "2027-01-01T00:00:00Z".parse().unwrap(),
        };
        let r = render(Some(Provider::Anthropic), &expired);
        assert_eq!(r.status, 401);
        assert_eq!(r.body["error"]["type"], "authentication_error");
        assert_eq!(r.body["tollgate"]["code"], "key_expired");
        assert_eq!(r.body["tollgate"]["expired_at"], "2027-01-01T00:00:00Z");
    }
}
