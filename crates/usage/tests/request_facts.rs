//! The request-facts fuzz check (`tollgate_usage::fuzzing::check_request`) on every `cargo test`:
//! its corpus replayed, then generated bodies — JSON objects built from the very keys the reader
//! looks for, with values of every type, nested, duplicated and escaped, some with bytes
//! overwritten — so the shortcut that skips the prompt is held to the full parse even where
//! cargo-fuzz is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use proptest::prelude::*;
use tollgate_usage::fuzzing::{REQUESTS, check_request};

#[test]
fn request_facts_corpus_replays_cleanly() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request_facts");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        for pick in 0..REQUESTS.len() {
            let mut input = vec![pick as u8];
            input.extend_from_slice(data.get(1..).unwrap_or_default());
            check_request(&input).unwrap();
        }
        files += 1;
    }
    assert!(files > 0, "no corpus in {}", dir.display());
}

/// The keys the reader takes facts from, a nested one, and keys it must skip.
const KEYS: &[&str] = &[
    "model",
    "max_completion_tokens",
    "max_tokens",
    "max_output_tokens",
    "stream",
    "generationConfig",
    "maxOutputTokens",
    "stream_options",
    "search_depth",
    "extract_depth",
    "urls",
    "messages",
    "content",
    "mod\\u0065l",
];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(|k| format!("\"{k}\""))
}

fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("1e3".to_owned()),
        Just("12.0".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("-0".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        Just("null".to_owned()),
        Just("\"gpt-4o\"".to_owned()),
        Just("\"advanced\"".to_owned()),
        Just("\"\\u00e9\\n\\\"q\\\"\"".to_owned()),
        Just("\"\\ud83d\\ude00\"".to_owned()),
        Just("\"\\ud800\"".to_owned()),
        Just("\"{\\\"model\\\":\\\"inner\\\"}\"".to_owned()),
        "[a-z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn value() -> impl Strategy<Value = String> {
    scalar().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn object() -> impl Strategy<Value = String> {
    (
        prop::collection::vec((key(), value()), 0..8),
        prop::sample::select(&["", " ", "\n\t"][..]),
    )
        .prop_map(|(fields, space)| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v)| format!("{k}{space}:{space}{v}"))
                .collect();
            format!("{space}{{{}}}{space}", fields.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn generated_bodies_read_as_the_full_parse_reads_them(
        pick in any::<u8>(),
        body in object(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    ) {
        let mut data = vec![pick];
        data.extend_from_slice(body.as_bytes());
        let r = check_request(&data);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
        for (at, byte) in &flips {
            let i = 1 + at.index(data.len() - 1);
            data[i] = *byte;
        }
        let r = check_request(&data);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
