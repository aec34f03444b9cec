//! `lakescore.toml` files: parsing, checks, the compiled contract.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::manifest(data));
