//! Fuzz target `muxado_frame`: see `ringress::fuzzing::muxado_frame` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::muxado_frame(data);
});
