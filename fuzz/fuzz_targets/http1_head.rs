//! Fuzz target `http1_head`: see `ringress::fuzzing::http1_head` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::http1_head(data);
});
