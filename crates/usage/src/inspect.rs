//! `tollgate inspect-usage`: scan a saved response body and print what the gateway would meter.
//!
//! The body is read from a file or stdin and fed in chunks of the given size, exactly as the
//! proxy would feed it, so the command also shows that a capture splits safely.

use std::io::Read;

use serde_json::{Map, Value, json};
use tollgate_domain::Provider;
use tollgate_domain::money::nanousd_to_usd_f64;

use crate::{RequestFacts, RequestInfo, Scanned, UsageError, scanner};

/// What to inspect. `endpoint` is the path after the provider prefix and may carry a query
/// (`/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse`).
#[derive(Clone, Debug)]
pub struct InspectOptions {
    pub provider: Provider,
    pub endpoint: String,
    pub content_encoding: Option<String>,
    /// The response's Content-Type; when absent the framing is told by the body's first byte.
    pub content_type: Option<String>,
    pub status: u16,
    /// Feed the body in chunks of this many bytes; `None` feeds it whole.
    pub chunk_size: Option<usize>,
    pub request_body: Option<Vec<u8>>,
}

/// Scans `body` and returns the report printed by the command.
pub fn inspect(opts: &InspectOptions, body: &mut impl Read) -> Result<Value, UsageError> {
    let (path, query) = match opts.endpoint.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (opts.endpoint.as_str(), None),
    };
    let facts = match &opts.request_body {
        Some(body) => RequestFacts::read(opts.provider, path, body).unwrap_or_default(),
        None => RequestFacts::default(),
    };
    let mut s = scanner(&RequestInfo {
        provider: opts.provider,
        method: "POST",
        path,
        query,
        request: &facts,
        response_status: opts.status,
        response_content_type: opts.content_type.as_deref(),
        response_content_encoding: opts.content_encoding.as_deref(),
    });
    match opts.chunk_size {
        Some(0) => return Err(UsageError::ZeroChunk),
        Some(n) => {
            let mut buf = vec![0; n];
            loop {
                let got = read_full(body, &mut buf).map_err(UsageError::Read)?;
                if got == 0 {
                    break;
                }
                s.feed(&buf[..got]);
            }
        }
        None => {
            let mut all = Vec::new();
            body.read_to_end(&mut all).map_err(UsageError::Read)?;
            s.feed(&all);
        }
    }
    Ok(report(opts.provider, &s.finish()))
}

/// Fills `buf` unless the input ends first, so chunks have the requested size even from a pipe.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The report as one JSON object; token counts are left out when the usage is unknown.
pub fn report(provider: Provider, s: &Scanned) -> Value {
    let mut out = Map::new();
    out.insert("provider".into(), json!(provider.as_str()));
    out.insert("model".into(), json!(s.model));
    out.insert("usage_found".into(), json!(s.usage_found));
    out.insert("complete".into(), json!(s.complete));
    out.insert("error".into(), json!(s.error));
    let u = &s.usage;
    if s.usage_found {
        for (key, value) in [
            ("input_tokens", u.input_tokens),
            ("cached_input_tokens", u.cached_input_tokens),
            ("cache_creation_input_tokens", u.cache_creation_input_tokens),
            (
                "cache_creation_1h_input_tokens",
                u.cache_creation_1h_input_tokens,
            ),
            ("output_tokens", u.output_tokens),
            ("reasoning_tokens", u.reasoning_tokens),
        ] {
            out.insert(key.into(), json!(value));
        }
        out.insert("units".into(), json!(u.units));
        out.insert("units_from_tariff".into(), json!(s.units_from_tariff));
    } else {
        out.insert("units".into(), Value::Null);
    }
    if let Some(nanousd) = u.reported_cost_nanousd {
        out.insert("reported_cost_nanousd".into(), json!(nanousd));
        out.insert(
            "reported_cost_usd".into(),
            json!(nanousd_to_usd_f64(nanousd)),
        );
    }
    if let Some(e) = &s.decode_error {
        out.insert("decode_error".into(), json!(e));
    }
    if let Some(count) = &s.unreadable_count {
        out.insert("unreadable_count".into(), json!(count));
    }
    Value::Object(out)
}
