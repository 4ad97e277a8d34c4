//! Fuzz target `cel_compile`: see `ringress::fuzzing::cel_compile` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::allow_contained_cel_panics();
    ringress::fuzzing::cel_compile(data);
});
