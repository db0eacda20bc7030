//! Arbitrary request bodies through the request-facts reader: no panic, and the same facts as
//! the full parse its shortcut stands in for (see `tollgate_usage::fuzzing::check_request`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = tollgate_usage::fuzzing::check_request(data) {
        panic!("{disagreement}");
    }
});
