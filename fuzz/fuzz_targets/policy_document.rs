//! Fuzz target `policy_document`: see `ringress::fuzzing::policy_document` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::allow_contained_cel_panics();
    ringress::fuzzing::policy_document(data);
});
