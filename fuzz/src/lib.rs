//! What the fuzz targets run, one function per parser of untrusted bytes.
//! The integration tests include this file too (`tests/it/fuzzed.rs`) and
//! run every seed and every input a fuzzer once failed on through it, so a
//! fixed crash stays fixed under `cargo test`.
//!
//! Each function must return, whatever the bytes, without a panic, in
//! bounded time and memory: a bad file is an error value, ignored here.

use std::path::Path;
use std::sync::Arc;

use lakescore::model::{FeatureBlock, LoadOptions};

/// libFuzzer's hook aborts on any panic, before it unwinds; a panic that
/// lakescore catches and turns into an error (parquet's decoders on damaged
/// pages: `scan::decoding_now`) must reach its `catch_unwind`. Every other
/// panic still aborts: that is a finding.
fn let_caught_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !lakescore::scan::decoding_now() {
                previous(info);
            }
        }));
    });
}

/// Models with more features than this are loaded but not scored (the
/// block would cost more than the parse).
const MAX_SCORED_FEATURES: usize = 4096;

/// A model file (any format; `name`'s extension is a hint only): loaded,
/// then scored on four rows (missing, zero, negative, huge), so that the
/// compiled form runs too, not only the parser.
pub fn load_model(name: &str, data: &[u8]) {
    let device = candle_core::Device::Cpu;
    let Ok(model) = lakescore::model::load_bytes(Path::new(name), data, &device, &LoadOptions::default()) else {
        return;
    };
    let n_features = model.features().len();
    if n_features > MAX_SCORED_FEATURES {
        return;
    }
    let rows = [f64::NAN, 0.0, -1.0, 1e300];
    let mut values = Vec::with_capacity(n_features * rows.len());
    for _ in 0..n_features {
        values.extend_from_slice(&rows);
    }
    let block = FeatureBlock {
        n_rows: rows.len(),
        n_features,
        values,
    };
    if let Ok(scores) = model.predict(block) {
        assert_eq!(scores.n_rows, rows.len(), "a score per row");
        assert_eq!(scores.outputs.len(), model.n_outputs(), "a column per output");
    }
}

/// UBJSON: the decoder alone, then as an XGBoost model.
pub fn ubjson(data: &[u8]) {
    let _ = lakescore::model::ubjson::parse(data);
    load_model("fuzz.ubj", data);
}

/// `lakescore.toml`: parsing, threshold checks, and compiling the contract
/// against features named by the manifest itself.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("lakescore.toml");
    let Ok(manifest) = lakescore::package::parse_manifest(path, text) else {
        return;
    };
    let features: Vec<lakescore::model::Feature> = manifest
        .features
        .keys()
        .map(|name| lakescore::model::Feature {
            name: name.clone(),
            missing_value: f64::NAN,
            categories: None,
        })
        .collect();
    let outputs = manifest.output.columns.as_ref().map_or(1, Vec::len);
    let _ = lakescore::contract::Contract::compile(&manifest, path, &features, outputs, None);
}

/// A bandit policy: TOML or JSON (the first byte chooses), parsed,
/// validated, and the figures every command derives from it.
pub fn policy(data: &[u8]) {
    let Some((&format, data)) = data.split_first() else {
        return;
    };
    let path = Path::new(if format % 2 == 0 { "policy.toml" } else { "policy.json" });
    if let Ok(file) = lakescore::bandit::policy::PolicyFile::from_bytes(path, data) {
        let _ = file.policy.probability_best();
        let _ = file.policy.shares();
        let _ = file.policy.to_text(path);
    }
}

/// A Parquet file through lakescore's reader: the footer, then every row
/// group's columns through the leaf readers and the Arrow path, as a mapped
/// file (sliced) or as any other source (fetched): the first byte chooses.
pub fn parquet(data: &[u8]) {
    let_caught_panics_unwind();
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let file = lakescore::source::InMemoryFile {
        bytes: bytes::Bytes::copy_from_slice(data),
        whole: mode % 2 == 0,
    };
    let path = Path::new("fuzz.parquet");
    let Ok(parquet) = lakescore::scan::ParquetFile::read(path, Arc::new(file)) else {
        return;
    };
    let leaves: Vec<usize> = (0..parquet.metadata.parquet_schema().num_columns()).collect();
    // A footer may claim any number of rows: read at most this many of a
    // row group, as a pass's batches would.
    const ROWS: usize = 4096;
    for row_group in 0..parquet.num_row_groups() {
        if parquet.prefetch_row_group(row_group, &leaves).is_err() {
            continue;
        }
        for &leaf in &leaves {
            let _ = parquet.check_column_chunk(row_group, leaf);
            if let Ok(mut reader) = parquet.leaf_reader(row_group, leaf) {
                let _ = reader.read(parquet.row_group_rows(row_group).min(ROWS));
            }
        }
        parquet.release_row_group(row_group, &leaves);
        let all = parquet::arrow::ProjectionMask::all();
        let _ = parquet.for_each_batch(
            row_group,
            &all,
            1024,
            |_, _| -> Result<(), lakescore::scan::ScanError> { Ok(()) },
        );
    }
}
