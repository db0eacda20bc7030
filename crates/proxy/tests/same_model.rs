//! Admission and settlement price one call under one name: every provider's request, read once,
//! gives admission a model and a price, and the usage event of its recorded response is priced
//! at the same entry of `pricing/` (under the same model where the response names none).

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::path::{Path, PathBuf};

use chrono::Utc;
use tollgate_config::Config;
use tollgate_domain::{AnchorDay, BillingPeriod, Provider};
use tollgate_proxy::admission::plan_reservation;
use tollgate_proxy::metering::{CallRecord, settle_call};
use tollgate_proxy::{Identity, pricing};
use tollgate_usage::{RequestFacts, RequestInfo, scanner};

fn shipped_config() -> Config {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-test".to_owned());
    tollgate_config::load_with_env(&root.join("gateway.toml"), &env)
        .unwrap()
        .config
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../usage/tests/fixtures")
        .join(name)
}

/// A request to each provider as its SDK sends it, and the recorded response it gets.
struct Call {
    provider: Provider,
    path: &'static str,
    request: &'static str,
    response: &'static str,
    content_type: &'static str,
}

const CALLS: &[Call] = &[
    Call {
        provider: Provider::OpenAi,
        path: "/v1/chat/completions",
        request: r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        response: "openai-chat.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::OpenAi,
        path: "/v1/chat/completions",
        request: r#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#,
        response: "openai-chat-stream-usage.sse",
        content_type: "text/event-stream",
    },
    Call {
        provider: Provider::OpenAi,
        path: "/v1/responses",
        request: r#"{"model":"o3","input":"hi"}"#,
        response: "openai-responses.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::OpenAi,
        path: "/v1/embeddings",
        request: r#"{"model":"text-embedding-3-small","input":"hi"}"#,
        response: "openai-embeddings.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Anthropic,
        path: "/v1/messages",
        request: r#"{"model":"claude-sonnet-4-20250514","max_tokens":1024,"messages":[]}"#,
        response: "anthropic-messages.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Anthropic,
        path: "/v1/messages",
        request: r#"{"model":"claude-opus-4-1","max_tokens":1024,"stream":true}"#,
        response: "anthropic-messages-stream.sse",
        content_type: "text/event-stream",
    },
    Call {
        provider: Provider::Gemini,
        path: "/v1beta/models/gemini-2.5-pro:generateContent",
        request: r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        response: "gemini-generate.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Gemini,
        path: "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        request: r#"{"contents":[]}"#,
        response: "gemini-stream.sse",
        content_type: "text/event-stream",
    },
    Call {
        provider: Provider::Mistral,
        path: "/v1/chat/completions",
        request: r#"{"model":"mistral-small-latest","messages":[]}"#,
        response: "mistral-chat.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Tavily,
        path: "/search",
        request: r#"{"query":"q","search_depth":"advanced"}"#,
        response: "tavily-search.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Tavily,
        path: "/extract",
        request: r#"{"urls":["https://a.example","https://b.example"]}"#,
        response: "tavily-extract.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Serper,
        path: "/search",
        request: r#"{"q":"q"}"#,
        response: "serper-search.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Exa,
        path: "/search",
        request: r#"{"query":"q"}"#,
        response: "exa-search.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Firecrawl,
        path: "/v2/scrape",
        request: r#"{"url":"https://a.example"}"#,
        response: "firecrawl-scrape.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Firecrawl,
        path: "/v2/search",
        request: r#"{"query":"q"}"#,
        response: "firecrawl-search.json",
        content_type: "application/json",
    },
    Call {
        provider: Provider::Stability,
        path: "/v2beta/stable-image/generate/core",
        request: "",
        response: "stability-core.json",
        content_type: "application/json",
    },
];

#[test]
fn admission_and_settlement_resolve_the_same_model_and_price() {
    let config = shipped_config();
    let identity = Identity {
        user: "alice".into(),
        plan: "enterprise".into(),
        key_id: "k".into(),
        anchor_day: AnchorDay::default(),
        disabled: false,
        rules: Default::default(),
    };
    for call in CALLS {
        let what = format!("{} {}", call.provider, call.path);
        let facts = RequestFacts::read(call.provider, call.path, call.request.as_bytes()).unwrap();
        let plan = plan_reservation(
            &config,
            &identity,
            call.provider,
            call.path,
            &facts,
            Utc::now(),
        )
        .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        let admitted_price = pricing::resolve(&config, call.provider, &plan.model);
        assert!(
            admitted_price.price().is_some(),
            "{what}: {} has no price",
            plan.model
        );

        let mut scan = scanner(&RequestInfo {
            provider: call.provider,
            method: "POST",
            path: call.path,
            query: None,
            request: &facts,
            response_status: 200,
            response_content_type: Some(call.content_type),
            response_content_encoding: None,
        });
        let response = std::fs::read(fixture(call.response)).unwrap();
        scan.feed(&response);
        let scanned = scan.finish();
        let response_named_model = call.provider.is_token_billed()
            && call.provider != Provider::Gemini
            && scanned.model.is_some();
        let event = settle_call(
            &config,
            CallRecord {
                provider: call.provider,
                request_id: "req-same-model",
                identity: &identity,
                period: BillingPeriod::containing(Utc::now(), identity.anchor_day),
                method: "POST",
                path: call.path,
                facts: &facts,
                status: 200,
                scanned: Some(scanned),
                reserved: plan.amount,
                transport_error: None,
                request_bytes: call.request.len() as u64,
                response_bytes: response.len() as u64,
                latency_ms: 1,
            },
        )
        .event;
        assert_eq!(event.price_version, admitted_price.version(), "{what}");
        if !response_named_model {
            assert_eq!(event.model, plan.model, "{what}");
        }
    }
}
