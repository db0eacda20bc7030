//! Every fixture under `tests/fixtures/`, written from the providers' documented formats, scanned
//! whole, one byte at a time, at every single split point (small fixtures), in random splits
//! (property test), with every line-ending style, and compressed with every supported coding.

mod common;

use common::{Case, cases, scan_chunks, scan_splits};
use proptest::prelude::*;

#[test]
fn every_fixture_reads_as_documented() {
    for case in cases() {
        let got = scan_chunks(&case, &case.body(), None, 0);
        assert_eq!(got, case.want, "{}", case.file);
    }
}

#[test]
fn byte_at_a_time_matches_whole() {
    for case in cases() {
        assert_eq!(
            scan_chunks(&case, &case.body(), None, 1),
            case.want,
            "{}",
            case.file
        );
    }
}

#[test]
fn every_single_split_matches_whole() {
    for case in cases() {
        let body = case.body();
        if body.len() > 8 * 1024 {
            continue;
        }
        for cut in 0..=body.len() {
            let got = scan_splits(&case, &body, None, &[cut]);
            assert_eq!(got, case.want, "{} split at {cut}", case.file);
        }
    }
}

#[test]
fn line_endings_do_not_matter() {
    for case in cases().into_iter().filter(Case::is_sse) {
        let body = case.body();
        for ending in [&b"\r\n"[..], b"\r", b"\n"] {
            let mut converted = Vec::with_capacity(body.len() * 2);
            let mut i = 0;
            while i < body.len() {
                match body[i] {
                    b'\r' if body.get(i + 1) == Some(&b'\n') => {
                        converted.extend_from_slice(ending);
                        i += 2;
                        continue;
                    }
                    b'\r' | b'\n' => converted.extend_from_slice(ending),
                    b => converted.push(b),
                }
                i += 1;
            }
            for chunk in [0, 1, 7] {
                let got = scan_chunks(&case, &converted, None, chunk);
                assert_eq!(
                    got, case.want,
                    "{} with {ending:?}, chunk {chunk}",
                    case.file
                );
            }
        }
    }
}

#[test]
fn compressed_bodies_read_the_same() {
    for case in cases() {
        let body = case.body();
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let packed = common::compress(coding, &body);
            for chunk in [0, 1, 13, 4096] {
                let got = scan_chunks(&case, &packed, Some(coding), chunk);
                assert_eq!(got, case.want, "{} as {coding}, chunk {chunk}", case.file);
            }
        }
    }
}

#[test]
fn gzip_without_a_content_encoding_is_sniffed() {
    for case in cases().into_iter().filter(|c| !c.file.ends_with(".png")) {
        let packed = common::compress("gzip", &case.body());
        for chunk in [0, 1, 2, 3] {
            assert_eq!(
                scan_chunks(&case, &packed, None, chunk),
                case.want,
                "{}",
                case.file
            );
        }
    }
}

#[test]
fn the_committed_gzip_stream_reads() {
    let case = cases()
        .into_iter()
        .find(|c| c.file == "anthropic-messages-stream.sse")
        .unwrap();
    let packed = std::fs::read(common::fixture("anthropic-messages-stream.sse.gz")).unwrap();
    for chunk in [0, 1, 10] {
        assert_eq!(scan_chunks(&case, &packed, Some("gzip"), chunk), case.want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_splits_match_whole(index in 0usize..1000, cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        let all = cases();
        let case = &all[index % all.len()];
        let body = case.body();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
        points.sort_unstable();
        prop_assert_eq!(scan_splits(case, &body, None, &points), case.want.clone(), "{}", case.file);
    }
}

#[test]
fn inspect_prints_one_report() {
    use tollgate_usage::inspect::{InspectOptions, inspect};
    let body = std::fs::read(common::fixture("anthropic-messages-stream.sse.gz")).unwrap();
    let opts = InspectOptions {
        provider: tollgate_domain::Provider::Anthropic,
        endpoint: "/v1/messages".into(),
        content_encoding: Some("gzip".into()),
        content_type: None,
        status: 200,
        chunk_size: Some(7),
        request_body: None,
    };
    let report = inspect(&opts, &mut &body[..]).unwrap();
    assert_eq!(
        report,
        serde_json::json!({
            "provider": "anthropic", "model": "claude-opus-4-1-20250805",
            "usage_found": true, "complete": true, "error": null,
            "input_tokens": 12500, "cached_input_tokens": 12000,
            "cache_creation_input_tokens": 0, "cache_creation_1h_input_tokens": 0,
            "output_tokens": 140, "reasoning_tokens": 0,
            "units": 0, "units_from_tariff": false,
        })
    );
    let exa = std::fs::read(common::fixture("exa-search.json")).unwrap();
    let opts = InspectOptions {
        provider: tollgate_domain::Provider::Exa,
        endpoint: "/search".into(),
        chunk_size: None,
        content_encoding: None,
        ..opts
    };
    let report = inspect(&opts, &mut &exa[..]).unwrap();
    assert_eq!(report["reported_cost_nanousd"], 7_000_000);
    assert_eq!(report["reported_cost_usd"], 0.007);
    let unknown = inspect(&opts, &mut &b"{}"[..]).unwrap();
    assert_eq!(unknown["usage_found"], false);
    assert!(unknown.get("input_tokens").is_none());
}

/// A long stream of every kind: memory stays at the caps however much is fed.
#[test]
fn memory_stays_bounded() {
    use tollgate_usage::{RequestInfo, scanner};
    let big_text = "x".repeat(300 * 1024);
    let mut events = String::new();
    events.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n");
    for _ in 0..20 {
        // Skipped by name, unnamed and huge, and a huge usage-carrying event.
        events.push_str(&format!(
            "event: content_block_delta\ndata: {{\"delta\":{{\"text\":\"{big_text}\"}}}}\n\n"
        ));
        events.push_str(&format!(
            "data: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"{big_text}\"}}}}\n\n"
        ));
        events.push_str(&format!(
            "event: message_delta\ndata: {{\"type\":\"message_delta\",\"pad\":\"{big_text}\",\"usage\":{{\"output_tokens\":7}}}}\n\n"
        ));
        events.push_str(&format!(": {big_text}\n\n"));
    }
    events.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    let info = RequestInfo {
        provider: tollgate_domain::Provider::Anthropic,
        method: "POST",
        path: "/v1/messages",
        query: None,
        request: tollgate_usage::RequestFacts::none(),
        response_status: 200,
        response_content_type: Some("text/event-stream"),
        response_content_encoding: None,
    };
    let mut s = scanner(&info);
    let mut peak = 0;
    for chunk in events.as_bytes().chunks(4096) {
        s.feed(chunk);
        peak = peak.max(s.buffered_capacity());
    }
    assert!(peak <= 2 * 64 * 1024 + 16 * 1024, "peak {peak}");
    let got = s.finish();
    assert_eq!(
        (
            got.usage.input_tokens,
            got.usage.output_tokens,
            got.complete
        ),
        (1, 7, true)
    );

    // A JSON body with a huge base64 image and usage at the end.
    let json = format!(
        "{{\"data\":[{{\"b64_json\":\"{}\"}}],\"usage\":{{\"input_tokens\":3,\"output_tokens\":4}}}}",
        "A".repeat(8 * 1024 * 1024)
    );
    let info = RequestInfo {
        provider: tollgate_domain::Provider::OpenAi,
        path: "/v1/images/generations",
        response_content_type: Some("application/json"),
        ..info
    };
    let mut s = scanner(&info);
    let mut peak = 0;
    for chunk in json.as_bytes().chunks(65536) {
        s.feed(chunk);
        peak = peak.max(s.buffered_capacity());
    }
    assert!(peak <= 16 * 1024, "peak {peak}");
    let got = s.finish();
    assert_eq!(
        (
            got.usage.input_tokens,
            got.usage.output_tokens,
            got.usage.units
        ),
        (3, 4, 1)
    );
}

/// Every file of the fuzz corpus through every scanner, as the fuzz target runs it.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/scanners");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        tollgate_usage::fuzzing::check(&data).unwrap();
        if let [_, coding, size, body @ ..] = &data[..] {
            for call in tollgate_usage::fuzzing::CALLS {
                for encoding in [None, Some("gzip")] {
                    let chunk = usize::from(*size) + 1;
                    let _ = coding;
                    tollgate_usage::fuzzing::check_call(call, encoding, body, chunk).unwrap();
                }
            }
        }
        files += 1;
    }
    assert!(files > 0, "no corpus in {}", dir.display());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// The fuzz check on random input and on fixtures with random bytes overwritten, so the
    /// property runs on every `cargo test` even where cargo-fuzz is not installed.
    #[test]
    fn random_and_mutated_bodies_never_panic_or_disagree(
        head in prop::collection::vec(any::<u8>(), 3),
        noise in prop::collection::vec(any::<u8>(), 0..512),
        index in 0usize..1000,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
    ) {
        let mut data = head.clone();
        data.extend_from_slice(&noise);
        prop_assert!(tollgate_usage::fuzzing::check(&data).is_ok());

        let all = cases();
        let case = &all[index % all.len()];
        let mut body = case.body();
        body.truncate(16 * 1024);
        for (at, byte) in &flips {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] = *byte;
            }
        }
        let calls = tollgate_usage::fuzzing::CALLS;
        let call = &calls[usize::from(head[0]) % calls.len()];
        let r = tollgate_usage::fuzzing::check_call(call, None, &body, usize::from(head[2]) + 1);
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}
