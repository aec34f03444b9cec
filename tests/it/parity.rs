//! Parity with the real libraries on the sample data shipped in `datasets/`:
//! the sample models were trained by scikit-learn, xgboost and lightgbm, and
//! the expected scores computed by numpy (float64), xgboost (float32) and
//! lightgbm (float64) (`datasets/make_sample.py`); the ONNX samples by
//! scikit-learn through skl2onnx and by torch, scored by onnxruntime
//! (`datasets/make_sample_onnx.py`). The models' own fixtures, case by case,
//! are in `trees.rs` and `onnx.rs`.

use std::path::Path;

use crate::common::*;

// Each runs on the CPU, and on CUDA where built with it and a GPU is present
// (`test_device!`): the same tolerances on both.

fn logistic(device: &str) {
    assert_sample_scores(device, "model.json", "expected_scores.parquet", 1e-6);
}
test_device!(
    logistic,
    sample_scores_match_numpy_within_1e_6,
    sample_scores_match_numpy_within_1e_6_on_cuda
);

/// XGBoost is float32 math in a fixed order: the same bits.
fn xgboost(device: &str) {
    assert_sample_scores(device, "xgb.ubj", "expected_scores_xgb.parquet", 0.0);
}
test_device!(
    xgboost,
    sample_xgboost_scores_are_xgboosts_bit_for_bit,
    sample_xgboost_scores_are_xgboosts_bit_for_bit_on_cuda
);

fn lightgbm(device: &str) {
    assert_sample_scores(device, "lgbm.txt", "expected_scores_lgbm.parquet", 1e-6);
}
test_device!(
    lightgbm,
    sample_lightgbm_scores_match_lightgbm_within_1e_6,
    sample_lightgbm_scores_match_lightgbm_within_1e_6_on_cuda
);

/// A random forest through skl2onnx: both classes' probabilities.
fn onnx_forest(device: &str) {
    assert_sample_columns(
        device,
        "rf.onnx",
        "expected_scores_rf.parquet",
        &["score_0", "score_1"],
        1e-6,
    );
}
test_device!(
    onnx_forest,
    sample_onnx_forest_scores_match_onnxruntime_within_1e_6,
    sample_onnx_forest_scores_match_onnxruntime_within_1e_6_on_cuda
);

/// A torch MLP (NaN imputed inside the graph), with fused dense layers.
fn onnx_mlp(device: &str) {
    assert_sample_scores(device, "mlp.onnx", "expected_scores_mlp.parquet", 1e-6);
}
test_device!(
    onnx_mlp,
    sample_onnx_mlp_scores_match_onnxruntime_within_1e_6,
    sample_onnx_mlp_scores_match_onnxruntime_within_1e_6_on_cuda
);

fn assert_sample_scores(device: &str, model: &str, expected: &str, tolerance: f64) {
    assert_sample_columns(device, model, expected, &["score"], tolerance);
}

fn assert_sample_columns(device: &str, model: &str, expected: &str, columns: &[&str], tolerance: f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores");
    score(&root.join(model), &root.join("customers"), &out, &["--device", device]).assert_ok();
    let expected = read_parquet(&root.join(expected));
    let expected_ids = ids(&expected);
    for column in columns {
        let expected_scores = column_f64(&expected, column);
        let mut got: Vec<(i64, f32)> = Vec::new();
        for relative in parquet_files(&out) {
            let batch = read_parquet(&out.join(relative));
            got.extend(ids(&batch).into_iter().zip(scores(&batch, column)));
        }
        got.sort_by_key(|(id, _)| *id);
        assert_eq!(got.len(), expected_ids.len());
        let mut worst = 0f64;
        for ((id, score), (expected_id, expected)) in got.iter().zip(expected_ids.iter().zip(&expected_scores)) {
            assert_eq!(id, expected_id);
            worst = worst.max((f64::from(*score) - expected.unwrap()).abs());
        }
        assert!(worst <= tolerance, "{model} {column}: worst difference {worst}");
    }
}
