//! Everything decided from the request head: the route, the provider enabled and keyed, the
//! declared body size, the caller's key → user → plan, the provider in the plan, and how the
//! body will be read.

use std::sync::Arc;

use pingora::http::RequestHeader;
use tollgate_config::Config;
use tollgate_domain::Provider;

use crate::context::RequestCtx;
use crate::credentials::{CredentialError, client_key, strip_query_key};
use crate::errors::GatewayError;
use crate::keys::{Identity, KeyRing};
use crate::route::{RouteError, route};

/// The largest request body read whole before the upstream request begins: Pingora's retry
/// buffer holds up to 64 KiB, and it is what Pingora replays as the body it forwards.
const READ_BEFORE_UPSTREAM_MAX: u64 = 64 * 1024;

/// How the request's body is read before (or while) it goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyPlan {
    /// No body, or one admission needs nothing from (Stability's uploads): admit now.
    PassThrough,
    /// A body of known length that fits Pingora's retry buffer: read it whole now, admit, and
    /// send it with its exact length.
    ReadNow,
    /// A larger or chunked body: held in `request_body_filter` until complete.
    Hold { chunked: bool },
}

/// Checks the head and fills in the context's provider, path, query and identity.
pub async fn check(
    keys: &KeyRing,
    header: &RequestHeader,
    ctx: &mut RequestCtx,
) -> Result<BodyPlan, GatewayError> {
    let target = header.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let route = route(target).map_err(|e| match e {
        RouteError::DotSegment => GatewayError::BadRequest(e.to_string()),
        _ => GatewayError::UnknownRoute(e.to_string()),
    })?;
    let provider = route.provider;
    ctx.provider = Some(provider);
    ctx.method = header.method.clone();
    ctx.path = route.path.to_owned();
    ctx.query = route.query.and_then(strip_query_key);
    let snapshot = Arc::clone(&ctx.snapshot);
    let Some(upstream) = snapshot.providers.get(&provider) else {
        return Err(GatewayError::UnknownRoute(format!(
            "{provider} is not enabled on this gateway"
        )));
    };
    if upstream.credential.is_none() {
        return Err(GatewayError::ProviderNotConfigured(provider));
    }
    let proxy = &snapshot.config.proxy;
    if content_length(header).is_some_and(|n| n > proxy.max_request_body_bytes) {
        return Err(GatewayError::BodyTooLarge {
            max_bytes: proxy.max_request_body_bytes,
        });
    }
    let identity = match client_key(&header.headers, route.query) {
        Ok(key) => keys
            .resolve(&snapshot.config, &snapshot.keys, key)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "the key table cannot be read");
                GatewayError::KeyStoreUnavailable
            })?,
        Err(CredentialError::Missing) => return Err(GatewayError::MissingKey),
        Err(e @ CredentialError::Conflicting) => {
            return Err(GatewayError::BadRequest(e.to_string()));
        }
    };
    let identity = identity.ok_or(GatewayError::UnknownKey)?;
    // Known from here on: a refusal below is recorded as the user's (`refused`).
    ctx.identity = Some(Arc::clone(&identity));
    if identity.disabled {
        let user = identity.user.clone();
        return Err(GatewayError::UserDisabled { user });
    }
    check_key_rules(&identity, provider)?;
    let identity = on_configured_plan(&snapshot.config, identity)?;
    ctx.identity = Some(Arc::clone(&identity));
    let plan = snapshot
        .config
        .plans
        .get(&identity.plan)
        .ok_or(GatewayError::Internal)?;
    if !plan.includes(provider) {
        let plan = plan.id.clone();
        return Err(GatewayError::NotInPlan { provider, plan });
    }
    let inject_usage = proxy.inject_stream_usage;
    Ok(body_plan(header, provider, &ctx.path, inject_usage))
}

/// The key's own expiry and provider list; its model patterns are checked at admission, where
/// the model is known. A key without rules costs one branch here.
fn check_key_rules(identity: &Identity, provider: Provider) -> Result<(), GatewayError> {
    let rules = &identity.rules;
    if let Some(expired_at) = rules.expired_at(chrono::Utc::now) {
        return Err(GatewayError::KeyExpired {
            key_id: identity.key_id.clone(),
            expired_at,
        });
    }
    if !rules.allows_provider(provider) {
        return Err(GatewayError::ProviderNotAllowed {
            provider,
            allowed: rules.providers.clone().unwrap_or_default(),
        });
    }
    Ok(())
}

/// The caller on a plan the configuration has. A subscription can outlive its plan (a reload
/// removed it): its users fall back to `default_plan`, with a warning, rather than lose service;
/// without a default plan they are refused, told why. Their counters are the user's, not the
/// plan's, so what they used this period still counts under the plan they fall back to.
fn on_configured_plan(
    config: &Config,
    identity: Arc<Identity>,
) -> Result<Arc<Identity>, GatewayError> {
    if config.plans.contains_key(&identity.plan) {
        return Ok(identity);
    }
    match config
        .default_plan
        .as_ref()
        .filter(|d| config.plans.contains_key(*d))
    {
        Some(default) => {
            tracing::warn!(
                user = %identity.user,
                plan = %identity.plan,
                default_plan = %default,
                "the user's plan is no longer configured; serving them on default_plan \
                 (move them to a configured plan)"
            );
            Ok(Arc::new(Identity {
                plan: default.clone(),
                ..(*identity).clone()
            }))
        }
        None => Err(GatewayError::PlanNotOffered {
            plan: identity.plan.clone(),
        }),
    }
}

/// How a request's body is read: admission needs it whole, except for Stability's multipart
/// uploads (priced by their path; a legacy v1 JSON request is read for its `samples`).
fn body_plan(header: &RequestHeader, provider: Provider, path: &str, inject: bool) -> BodyPlan {
    let stability_upload = provider == Provider::Stability
        && !(tollgate_usage::reads_options(provider, path) && is_json(header));
    if !has_body(header) || stability_upload {
        return BodyPlan::PassThrough;
    }
    let chunked = header.headers.contains_key(http::header::TRANSFER_ENCODING);
    if !chunked && content_length(header).is_some_and(|n| n <= READ_BEFORE_UPSTREAM_MAX) {
        return BodyPlan::ReadNow;
    }
    BodyPlan::Hold {
        chunked: crate::request::may_rewrite(provider, path, inject),
    }
}

fn is_json(header: &RequestHeader) -> bool {
    header
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        })
}

pub fn content_length(header: &RequestHeader) -> Option<u64> {
    header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Expect: 100-continue` on an HTTP/1.1 request (RFC 9110, 10.1.1).
pub fn expects_continue(header: &RequestHeader) -> bool {
    header.version == http::Version::HTTP_11
        && header
            .headers
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

pub fn has_body(header: &RequestHeader) -> bool {
    content_length(header).is_some_and(|n| n > 0)
        || header.headers.contains_key(http::header::TRANSFER_ENCODING)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_gone_from_the_configuration_falls_back_to_the_default_plan() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        let mut config = tollgate_config::load_with_env(&path, &|_| None)
            .unwrap()
            .config;
        let caller = |plan: &str| {
            Arc::new(Identity {
                user: "ann".into(),
                plan: plan.into(),
                key_id: "k".into(),
                anchor_day: tollgate_domain::AnchorDay::default(),
                disabled: false,
                rules: Default::default(),
            })
        };
        let kept = on_configured_plan(&config, caller("pro")).unwrap();
        assert_eq!(kept.plan, "pro");
        let fallen = on_configured_plan(&config, caller("retired")).unwrap();
        assert_eq!(
            (fallen.user.as_str(), fallen.plan.as_str()),
            ("ann", "free")
        );
        config.default_plan = None;
        assert_eq!(
            on_configured_plan(&config, caller("retired")),
            Err(GatewayError::PlanNotOffered {
                plan: "retired".into()
            })
        );
    }

    fn head(headers: &[(&str, &str)]) -> RequestHeader {
        let mut h = RequestHeader::build("POST", b"/openai/v1/chat/completions", None).unwrap();
        for (name, value) in headers {
            h.insert_header(name.to_string(), *value).unwrap();
        }
        h
    }

    #[test]
    fn small_bodies_are_read_now_and_large_or_chunked_ones_held() {
        let chat = "/v1/chat/completions";
        let plan =
            |headers: &[(&str, &str)], provider| body_plan(&head(headers), provider, chat, true);
        assert_eq!(plan(&[], Provider::OpenAi), BodyPlan::PassThrough);
        assert_eq!(
            plan(&[("content-length", "0")], Provider::OpenAi),
            BodyPlan::PassThrough
        );
        assert_eq!(
            plan(&[("content-length", "65536")], Provider::OpenAi),
            BodyPlan::ReadNow
        );
        assert_eq!(
            plan(&[("content-length", "65537")], Provider::OpenAi),
            BodyPlan::Hold { chunked: true }
        );
        assert_eq!(
            plan(&[("transfer-encoding", "chunked")], Provider::Anthropic),
            BodyPlan::Hold { chunked: false }
        );
        assert_eq!(
            plan(&[("content-length", "900000")], Provider::Stability),
            BodyPlan::PassThrough
        );
        // A legacy v1 generation's JSON is read for its `samples`; its forms are not.
        let v1 = "/v1/generation/stable-diffusion-xl-1024-v1-0/text-to-image";
        let json = [
            ("content-length", "60"),
            ("content-type", "application/json"),
        ];
        let stability =
            |headers: &[(&str, &str)]| body_plan(&head(headers), Provider::Stability, v1, true);
        assert_eq!(stability(&json), BodyPlan::ReadNow);
        let form = [
            ("content-length", "60"),
            ("content-type", "multipart/form-data; boundary=b"),
        ];
        assert_eq!(stability(&form), BodyPlan::PassThrough);
    }
}
