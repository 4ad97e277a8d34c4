//! Fuzz target `chunked`: see `ringress::fuzzing::chunked` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::chunked(data);
});
