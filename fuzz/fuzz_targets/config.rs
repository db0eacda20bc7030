//! Arbitrary `gateway.toml` and pricing-file text through the configuration loader: no panic,
//! every problem on a line of the file, the same result twice (see
//! `tollgate_config::fuzzing::check`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(finding) = tollgate_config::fuzzing::check(data) {
        panic!("{finding}");
    }
});
