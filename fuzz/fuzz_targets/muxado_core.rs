//! Fuzz target `muxado_core`: see `ringress::fuzzing::muxado_core` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::muxado_core(data);
});
