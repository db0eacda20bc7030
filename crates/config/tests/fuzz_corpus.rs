//! The configuration fuzz check (`tollgate_config::fuzzing::check`) on every `cargo test`: its
//! corpus (the shipped `gateway.toml` and pricing files) replayed, then those files with lines
//! dropped, repeated and swapped and bytes overwritten — the edits an operator's slip makes — so
//! the loader's promises hold where cargo-fuzz is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use proptest::prelude::*;
use tollgate_config::fuzzing::check;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/config");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn config_corpus_replays_cleanly() {
    let corpus = corpus();
    assert!(corpus.len() >= 10, "the corpus holds every shipped file");
    for data in &corpus {
        check(data).unwrap();
    }
}

/// One slip: which line, and what happens to it.
#[derive(Clone, Debug)]
enum Edit {
    Drop(prop::sample::Index),
    Repeat(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Byte(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Drop),
        any::<prop::sample::Index>().prop_map(Edit::Repeat),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Edit::Swap(a, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    for e in edits {
        if lines.is_empty() {
            break;
        }
        match e {
            Edit::Drop(i) => {
                lines.remove(i.index(lines.len()));
            }
            Edit::Repeat(i) => {
                let at = i.index(lines.len());
                lines.insert(at, lines[at].clone());
            }
            Edit::Swap(a, b) => {
                let (a, b) = (a.index(lines.len()), b.index(lines.len()));
                lines.swap(a, b);
            }
            Edit::Byte(i, byte) => {
                let at = i.index(lines.len());
                let line = &mut lines[at];
                if !line.is_empty() {
                    let j = i.index(line.len());
                    line[j] = *byte;
                }
            }
            Edit::Truncate(i) => lines.truncate(i.index(lines.len()) + 1),
        }
    }
    lines.join(&b'\n')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn edited_shipped_files_load_or_are_refused_with_their_lines(
        pick in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let corpus = corpus();
        let data = &corpus[pick.index(corpus.len())];
        let mut input = vec![data[0]];
        input.extend(apply(&data[1..], &edits));
        let r = check(&input);
        prop_assert!(r.is_ok(), "{}", r.unwrap_err());
    }
}
