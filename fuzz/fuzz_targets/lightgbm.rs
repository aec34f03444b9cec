//! LightGBM text models through the model loader.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::load_model("fuzz.txt", data));
