//! Parity with the real libraries on the sample data shipped in `datasets/`:
//! the sample model was trained by scikit-learn and the expected scores were
//! computed by numpy, in float64 (`datasets/make_sample.py`).

use std::path::Path;

use crate::common::*;

#[test]
fn sample_scores_match_numpy_within_1e_6() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores");
    score(&root.join("model.json"), &root.join("customers"), &out, &[]).assert_ok();
    let expected = read_parquet(&root.join("expected_scores.parquet"));
    let expected_ids = ids(&expected);
    let expected_scores = column_f64(&expected, "score");

    let mut got: Vec<(i64, f32)> = Vec::new();
    for relative in parquet_files(&out) {
        let batch = read_parquet(&out.join(relative));
        got.extend(ids(&batch).into_iter().zip(scores(&batch, "score")));
    }
    got.sort_by_key(|(id, _)| *id);
    assert_eq!(got.len(), expected_ids.len());
    let mut worst = 0f64;
    for ((id, score), (expected_id, expected)) in got.iter().zip(expected_ids.iter().zip(&expected_scores)) {
        assert_eq!(id, expected_id);
        worst = worst.max((f64::from(*score) - expected.unwrap()).abs());
    }
    assert!(worst <= 1e-6, "worst difference {worst}");
}
