//! `tollgate inspect-usage`: print what the gateway would meter for a saved response body.
//!
//! Wiring (in `main.rs`): add `mod inspect_usage;`, a subcommand variant
//! `InspectUsage(inspect_usage::InspectArgs)`, and print `inspect_usage::run(&args)?` as JSON;
//! the crate needs `tollgate-usage` as a dependency.

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use tollgate_domain::Provider;
use tollgate_usage::inspect::{InspectOptions, inspect};

/// Scan a response body (from FILE or stdin) as the proxy would and print the usage as JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// The provider that sent the body: openai, anthropic, gemini, mistral, tavily, serper, exa,
    /// firecrawl, stability.
    #[arg(long)]
    pub provider: Provider,
    /// The request path after the provider prefix, query included, e.g. `/v1/chat/completions`
    /// or `/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse`.
    #[arg(long)]
    pub endpoint: String,
    /// The response's Content-Encoding (gzip, deflate, br, zstd).
    #[arg(long)]
    pub content_encoding: Option<String>,
    /// The response's Content-Type; without it the framing is told by the body's first byte.
    #[arg(long)]
    pub content_type: Option<String>,
    /// The response's HTTP status.
    #[arg(long, default_value_t = 200)]
    pub status: u16,
    /// Feed the body in chunks of this many bytes (default: whole).
    #[arg(long)]
    pub chunk_size: Option<usize>,
    /// The request body (JSON), for the model, stream flag and search depth.
    #[arg(long)]
    pub request: Option<PathBuf>,
    /// The response body; stdin when absent or `-`.
    pub file: Option<PathBuf>,
}

/// Runs the command and returns the JSON object to print.
pub fn run(args: &InspectArgs) -> anyhow::Result<serde_json::Value> {
    let request_body = match &args.request {
        Some(path) => Some(
            std::fs::read(path).with_context(|| format!("reading --request {}", path.display()))?,
        ),
        None => None,
    };
    let opts = InspectOptions {
        provider: args.provider,
        endpoint: args.endpoint.clone(),
        content_encoding: args.content_encoding.clone(),
        content_type: args.content_type.clone(),
        status: args.status,
        chunk_size: args.chunk_size,
        request_body,
    };
    let mut body: Box<dyn Read> = match &args.file {
        Some(path) if path.as_os_str() != "-" => Box::new(
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
        ),
        _ => Box::new(std::io::stdin().lock()),
    };
    Ok(inspect(&opts, &mut body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_fixture_fed_in_small_chunks() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../usage/tests/fixtures");
        let args = InspectArgs {
            provider: Provider::OpenAi,
            endpoint: "/v1/chat/completions".into(),
            content_encoding: None,
            content_type: Some("text/event-stream".into()),
            status: 200,
            chunk_size: Some(5),
            request: None,
            file: Some(fixtures.join("openai-chat-stream-usage.sse")),
        };
        let out = run(&args).unwrap();
        assert_eq!(out["model"], "gpt-4o-mini-2024-07-18");
        assert_eq!(out["input_tokens"], 9);
        assert_eq!(out["output_tokens"], 12);
        assert_eq!(out["complete"], true);
    }
}
