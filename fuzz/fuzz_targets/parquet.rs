//! Parquet footers and pages through lakescore's readers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::parquet(data));
