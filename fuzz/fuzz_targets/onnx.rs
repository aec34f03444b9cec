//! ONNX protobuf files through the model loader: parsing, graph checks,
//! compiling, and scoring a few rows.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lakescore_fuzz::load_model("fuzz.onnx", data));
