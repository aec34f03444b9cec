//! Bandit policy files (TOML and JSON).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::policy(data));
