//! Arbitrary bytes, split arbitrarily, through every usage scanner: no panic, and the same
//! result whichever way the body is chunked (see `tollgate_usage::fuzzing`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = tollgate_usage::fuzzing::check(data) {
        panic!("{disagreement}");
    }
});
