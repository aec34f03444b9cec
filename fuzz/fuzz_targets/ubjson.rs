//! XGBoost UBJSON files: the UBJSON decoder, then the model loader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::ubjson(data));
