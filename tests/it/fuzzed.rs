//! The fuzz targets' harness (`fuzz/src/lib.rs`, included here) on every
//! seed (`fuzz/seeds/<target>/`) and on every input a fuzzer once failed on
//! (`tests/fixtures/fuzz/<target>/<what it did>`): each must return without
//! a panic. `bash fuzz/run.sh` runs the fuzzers themselves.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

/// A fuzz target: what it is called, and what it runs on an input.
type Target = (&'static str, fn(&[u8]));

const TARGETS: [Target; 7] = [
    ("onnx", |d| harness::load_model("fuzz.onnx", d)),
    ("ubjson", harness::ubjson),
    ("xgboost_json", |d| harness::load_model("fuzz.json", d)),
    ("lightgbm", |d| harness::load_model("fuzz.txt", d)),
    ("manifest", harness::manifest),
    ("policy", harness::policy),
    ("parquet", harness::parquet),
];

fn inputs(folder: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .map(|entries| entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_input_fuzzers_failed_on_is_handled() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (target, run) in TARGETS {
        let seeds = inputs(&root.join("fuzz/seeds").join(target));
        assert!(!seeds.is_empty(), "fuzz/seeds/{target} has seeds");
        for input in seeds
            .iter()
            .chain(&inputs(&root.join("tests/fixtures/fuzz").join(target)))
        {
            let bytes = std::fs::read(input).unwrap();
            if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                panic!("{target}: `{}` panics", input.display());
            }
        }
    }
}
