//! Scores equal a direct f64 computation from the input, for each link, with
//! fill values for missing features, and with several outputs.

use crate::common::*;

/// sum_j w_j * x_j + b over the input read independently (arrow's cast),
/// with `fill[j]` for nulls.
fn direct_margins(
    input: &arrow::array::RecordBatch,
    features: &[String],
    weights: &[f64],
    intercept: f64,
    fill: &[f64],
) -> Vec<f64> {
    let columns: Vec<Vec<Option<f64>>> = features.iter().map(|f| column_f64(input, f)).collect();
    (0..input.num_rows())
        .map(|row| {
            let mut z = intercept;
            for (j, column) in columns.iter().enumerate() {
                z += weights[j] * column[row].filter(|v| !v.is_nan()).unwrap_or(fill[j]);
            }
            z
        })
        .collect()
}

#[test]
fn logistic_scores_equal_a_direct_computation() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 20_000, 2, 3_000, &["2026-11-25"]);
    let features = lakescore::datagen::benchmark_features();
    let fill: Vec<f64> = (0..features.len()).map(|j| j as f64 * 0.5).collect();
    let body = logistic_model_body(Some(fill.clone()));
    let weights: Vec<f64> = serde_json::from_value(body["weights"].clone()).unwrap();
    let model = linear_model(dir.path(), "model.json", body);
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();

    let mut checked = 0;
    for relative in parquet_files(&lake) {
        let input = read_parquet(&lake.join(&relative));
        let output = read_parquet(&out.join(&relative));
        let expected = direct_margins(&input, &features, &weights, -0.75, &fill);
        let got = scores(&output, "score");
        assert_eq!(got.len(), expected.len());
        for (row, (g, z)) in got.iter().zip(&expected).enumerate() {
            let p = 1.0 / (1.0 + (-z).exp());
            assert!(
                (f64::from(*g) - p).abs() <= 1e-6,
                "row {row} of {relative:?}: {g} vs {p}"
            );
        }
        checked += got.len();
    }
    assert_eq!(checked, 20_000);
}

#[test]
fn identity_link_with_default_fill_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 5_000, 1, 1_000, &["2026-11-25"]);
    let features = vec!["age".to_string(), "avg_basket".to_string(), "b03".to_string()];
    let weights = vec![0.5, -2.0, 3.25];
    let model = linear_model(
        dir.path(),
        "m.json",
        serde_json::json!({"format": "linear", "features": features, "weights": weights, "intercept": 1.5, "link": "identity"}),
    );
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let relative = &parquet_files(&lake)[0];
    let input = read_parquet(&lake.join(relative));
    let output = read_parquet(&out.join(relative));
    let expected = direct_margins(&input, &features, &weights, 1.5, &[0.0; 3]);
    assert!(
        column_f64(&input, "age").iter().any(Option::is_none),
        "the lake has nulls to fill"
    );
    for (g, z) in scores(&output, "score").iter().zip(&expected) {
        // Summation order may differ from ours by an ulp of f64, which can
        // move the f32 rounding by one f32 ulp, never more.
        assert!((g - *z as f32).abs() <= f32::EPSILON * (*z as f32).abs(), "{g} vs {z}");
    }
}

#[test]
fn softmax_gives_one_score_column_per_class() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 3_000, 1, 1_000, &["2026-11-25"]);
    let features = vec!["orders_30d".to_string(), "app_user".to_string()];
    let weights = [[0.4, -1.0], [0.0, 0.5], [-0.3, 0.2]];
    let intercepts = [0.1, -0.2, 0.3];
    let model = linear_model(
        dir.path(),
        "classes.json",
        serde_json::json!({"format": "linear", "features": features, "weights": weights, "intercept": intercepts, "link": "softmax"}),
    );
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let relative = &parquet_files(&lake)[0];
    let input = read_parquet(&lake.join(relative));
    let output = read_parquet(&out.join(relative));
    let names: Vec<String> = output.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["customer_id", "score_0", "score_1", "score_2"]);
    let margins: Vec<Vec<f64>> = (0..3)
        .map(|k| direct_margins(&input, &features, &weights[k], intercepts[k], &[0.0, 0.0]))
        .collect();
    let got: Vec<Vec<f32>> = (0..3).map(|k| scores(&output, &format!("score_{k}"))).collect();
    for row in 0..input.num_rows() {
        let max = (0..3).map(|k| margins[k][row]).fold(f64::MIN, f64::max);
        let total: f64 = (0..3).map(|k| (margins[k][row] - max).exp()).sum();
        for k in 0..3 {
            let p = (margins[k][row] - max).exp() / total;
            assert!((f64::from(got[k][row]) - p).abs() <= 1e-6, "row {row} class {k}");
        }
    }
}

#[test]
fn thread_count_does_not_change_a_byte() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(
        &dir.path().join("lake"),
        12_000,
        3,
        1_500,
        &["2026-11-24", "2026-11-25"],
    );
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let one = dir.path().join("one");
    let four = dir.path().join("four");
    score(&model, &lake, &one, &["--threads", "1"]).assert_ok();
    score(&model, &lake, &four, &["--threads", "4"]).assert_ok();
    assert_eq!(data_files(&one), data_files(&four));
    assert_eq!(data_files(&one).len(), 6);
}
