//! Fuzz target `ngrok_messages`: see `ringress::fuzzing::ngrok_messages` for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ringress::fuzzing::ngrok_messages(data);
});
