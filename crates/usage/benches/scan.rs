//! Scanning 1 MiB OpenAI and Anthropic streams fed in 4 KiB chunks, against a plain `memchr`
//! pass over the same chunks (the physical floor: every byte is looked at once). Criterion
//! reports throughput; the summary printed at the end gives GiB/s and the ratio to the floor,
//! measured in the same run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tollgate_domain::Provider;
use tollgate_usage::{RequestInfo, scanner};

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 4096;

/// An OpenAI chat stream with `include_usage`: every chunk has `"usage":null`, the last one the
/// totals.
fn openai_stream() -> Vec<u8> {
    let mut s = String::with_capacity(MIB + 1024);
    let mut i = 0;
    while s.len() < MIB {
        s.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_44709d6fcb\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" token{i} and some more\"}},\"logprobs\":null,\"finish_reason\":null}}],\"usage\":null,\"obfuscation\":\"aZ3k\"}}\n\n"
        ));
        i += 1;
    }
    s.push_str("data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1741570283,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":12000,\"total_tokens\":12009}}\n\ndata: [DONE]\n\n");
    s.into_bytes()
}

fn anthropic_stream() -> Vec<u8> {
    let mut s = String::with_capacity(MIB + 1024);
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-20250514\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    let mut i = 0;
    while s.len() < MIB {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\" token{i} and some more\"}}}}\n\n"
        ));
        if i % 100 == 0 {
            s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
        i += 1;
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":12000}}\n\n");
    s.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s.into_bytes()
}

fn info(provider: Provider, path: &'static str) -> RequestInfo<'static> {
    RequestInfo {
        provider,
        method: "POST",
        path,
        query: None,
        request: tollgate_usage::RequestFacts::none(),
        response_status: 200,
        response_content_type: Some("text/event-stream"),
        response_content_encoding: None,
    }
}

fn scan(req: &RequestInfo<'_>, body: &[u8]) -> u64 {
    let mut s = scanner(req);
    for chunk in body.chunks(CHUNK) {
        s.feed(chunk);
    }
    s.finish().usage.output_tokens
}

fn floor(body: &[u8]) -> usize {
    body.chunks(CHUNK)
        .map(|c| memchr::memchr_iter(b'\n', c).count())
        .sum()
}

/// Best-of-N wall time per pass, for the printed summary.
fn best(mut f: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..200 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
    }
    best
}

fn main() {
    let streams = [
        (
            "openai",
            info(Provider::OpenAi, "/v1/chat/completions"),
            openai_stream(),
        ),
        (
            "anthropic",
            info(Provider::Anthropic, "/v1/messages"),
            anthropic_stream(),
        ),
    ];
    for (name, req, body) in &streams {
        assert_eq!(scan(req, body), 12000, "{name}");
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    let mut group = c.benchmark_group("usage-scan-1MiB-4KiB-chunks");
    for (name, req, body) in &streams {
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(format!("{name}/scanner"), |b| {
            b.iter(|| scan(req, black_box(body)))
        });
        group.bench_function(format!("{name}/memchr-floor"), |b| {
            b.iter(|| floor(black_box(body)))
        });
    }
    group.finish();
    c.final_summary();

    println!("\nsummary (best of 200 passes each, same run):");
    for (name, req, body) in &streams {
        let gib = |d: Duration| body.len() as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
        let scanner_time = best(|| {
            black_box(scan(req, black_box(body)));
        });
        let floor_time = best(|| {
            black_box(floor(black_box(body)));
        });
        println!(
            "  {name:9} scanner {:6.2} GiB/s   memchr floor {:6.2} GiB/s   scanner/floor time ratio {:5.2}x",
            gib(scanner_time),
            gib(floor_time),
            scanner_time.as_secs_f64() / floor_time.as_secs_f64()
        );
    }
}
