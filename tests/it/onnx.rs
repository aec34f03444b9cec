//! ONNX models against the libraries that made them: every fixture in
//! `tests/fixtures/onnx` (made by `make_fixtures.sh` with pinned torch,
//! scikit-learn, skl2onnx and onnxruntime) scored through lakescore's model
//! API, within 1e-5 of onnxruntime and of the original library; and the
//! errors a user meets.

use std::path::{Path, PathBuf};

use candle_core::Device;
use lakescore::model::{self, FeatureBlock, LoadOptions};
use serde::Deserialize;

use crate::common::{open_device, test_device};

#[derive(Deserialize)]
struct Expected {
    cases: Vec<Case>,
    errors: Vec<ErrorCase>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    model: String,
    features: Vec<String>,
    feature_names_from: String,
    rows: Vec<Vec<Option<f64>>>,
    onnxruntime: Vec<Vec<f64>>,
    library: Option<Vec<Vec<f64>>>,
}

#[derive(Deserialize)]
struct ErrorCase {
    model: String,
    features: Vec<String>,
    feature_names_from: String,
    expect: Vec<String>,
}

const TOLERANCE: f64 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx")
}

fn expected() -> Expected {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn options(features: &[String], from: &str) -> LoadOptions {
    LoadOptions {
        output_margin: false,
        feature_names: (from == "manifest").then(|| features.to_vec()),
    }
}

/// Scores of `rows` (row-major, None for NaN) as one row of outputs per row.
fn predict(model: &dyn model::Model, rows: &[Vec<Option<f64>>]) -> Vec<Vec<f64>> {
    let n_rows = rows.len();
    let n_features = model.features().len();
    let mut values = vec![0.0; n_rows * n_features];
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), n_features);
        for (j, v) in row.iter().enumerate() {
            values[j * n_rows + r] = v.unwrap_or(f64::NAN);
        }
    }
    let scores = model
        .predict(FeatureBlock {
            n_rows,
            n_features,
            values,
        })
        .unwrap();
    (0..n_rows)
        .map(|r| scores.outputs.iter().map(|column| column[r] as f64).collect())
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= TOLERANCE
}

test_device!(
    every_fixture,
    every_fixture_matches_onnxruntime_and_the_library,
    every_fixture_matches_onnxruntime_and_the_library_on_cuda
);

fn every_fixture(device: &str) {
    let device = open_device(device);
    let expected = expected();
    assert!(expected.cases.len() >= 30, "the fixtures cover every exporter path");
    let mut failures = Vec::new();
    let mut largest = (0.0f64, String::new());
    for case in &expected.cases {
        let path = fixtures().join(&case.model);
        let loaded = model::load(&path, &device, &options(&case.features, &case.feature_names_from));
        let model = match loaded {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{}: does not load: {:#}", case.name, anyhow::Error::new(e)));
                continue;
            }
        };
        let names: Vec<&str> = model.features().iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, case.features, "{}: feature names", case.name);
        // Whole, and in blocks of one row: a matrix product may take another
        // kernel for one row, so the last bits may differ, no more.
        let got = predict(model.as_ref(), &case.rows);
        let one_by_one: Vec<Vec<f64>> = case
            .rows
            .iter()
            .flat_map(|row| predict(model.as_ref(), std::slice::from_ref(row)))
            .collect();
        for (r, (a, b)) in got.iter().zip(&one_by_one).enumerate() {
            if a.iter()
                .zip(b)
                .any(|(x, y)| !((x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-6))
            {
                failures.push(format!("{}: row {r} scores {a:?} in a block, {b:?} alone", case.name));
                break;
            }
        }
        for (reference, label) in [
            (Some(&case.onnxruntime), "onnxruntime"),
            (case.library.as_ref(), "library"),
        ] {
            let Some(reference) = reference else { continue };
            for (ours, theirs) in got.iter().zip(reference) {
                for (a, b) in ours.iter().zip(theirs) {
                    if (a - b).abs() > largest.0 {
                        largest = ((a - b).abs(), format!("{} against {label}", case.name));
                    }
                }
            }
            for (r, (ours, theirs)) in got.iter().zip(reference).enumerate() {
                if ours.len() != theirs.len() || ours.iter().zip(theirs).any(|(a, b)| !close(*a, *b)) {
                    failures.push(format!(
                        "{}: row {r} {:?}: lakescore {ours:?}, {label} {theirs:?}",
                        case.name, case.rows[r]
                    ));
                    break;
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("largest difference: {:e} ({})", largest.0, largest.1);
}

#[test]
fn unsupported_operators_are_named_with_their_node() {
    for case in expected().errors {
        let path = fixtures().join(&case.model);
        let error = model::load(&path, &Device::Cpu, &options(&case.features, &case.feature_names_from)).unwrap_err();
        let text = format!("{:#}", anyhow::Error::new(error));
        for needle in &case.expect {
            assert!(text.contains(needle.as_str()), "`{needle}` missing from: {text}");
        }
    }
}

/// A Parquet table of a fixture's rows: `customer_id` and one float32
/// column per feature (nulls where the fixture has NaN).
fn fixture_table(dir: &Path, case: &Case) -> PathBuf {
    use arrow::array::{ArrayRef, Float32Array, Int64Array, RecordBatch};
    let mut columns: Vec<(String, ArrayRef)> = vec![(
        "customer_id".into(),
        std::sync::Arc::new(Int64Array::from_iter_values(0..case.rows.len() as i64)),
    )];
    for (j, name) in case.features.iter().enumerate() {
        let values: Float32Array = case.rows.iter().map(|row| row[j].map(|v| v as f32)).collect();
        columns.push((name.clone(), std::sync::Arc::new(values)));
    }
    let table = dir.join("table");
    std::fs::create_dir_all(&table).unwrap();
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    crate::common::write_parquet(&table.join("part-0.parquet"), &[batch], 50);
    table
}

fn case(name: &str) -> Case {
    expected().cases.into_iter().find(|c| c.name == name).unwrap()
}

/// `lakescore score` on a skl2onnx random forest (names in its metadata,
/// NaN-free) and a HistGradientBoosting model fed nulls: every row's
/// probabilities as onnxruntime's.
#[test]
fn score_runs_onnx_models_on_tables() {
    for name in ["rf_classifier", "hgb_classifier_nan", "mlp_torchscript_op13"] {
        let case = case(name);
        let dir = tempfile::tempdir().unwrap();
        let table = fixture_table(dir.path(), &case);
        let out = dir.path().join("out");
        crate::common::score(&fixtures().join(&case.model), &table, &out, &[]).assert_ok();
        let batch = crate::common::read_parquet(&out.join(&crate::common::parquet_files(&out)[0]));
        let ids = crate::common::ids(&batch);
        let width = case.onnxruntime[0].len();
        let columns: Vec<Vec<f32>> = match width {
            1 => vec![crate::common::scores(&batch, "score")],
            k => (0..k)
                .map(|j| crate::common::scores(&batch, &format!("score_{j}")))
                .collect(),
        };
        for (i, id) in ids.iter().enumerate() {
            for (j, column) in columns.iter().enumerate() {
                let (ours, theirs) = (column[i] as f64, case.onnxruntime[*id as usize][j]);
                assert!(
                    close(ours, theirs),
                    "{name}: customer {id} output {j}: {ours} against {theirs}"
                );
            }
        }
    }
}

/// A graph whose one wide input names no features: refused bare, with what
/// to do; packaged with `--feature-names`, it scores, and the manifest keeps
/// the names. Names that do not fit are errors naming the count.
#[test]
fn unnamed_onnx_features_come_from_the_package() {
    let case = case("lr_multiclass");
    let dir = tempfile::tempdir().unwrap();
    let table = fixture_table(dir.path(), &case);
    let model = fixtures().join(&case.model);
    let bare = crate::common::score(&model, &table, &dir.path().join("bare"), &[]);
    assert_ne!(bare.code, 0);
    let text = bare.error_lines().join("\n");
    assert!(
        text.contains("does not name its") && text.contains("feature_names"),
        "{text}"
    );
    assert!(!dir.path().join("bare").join("_SUCCESS").exists());

    let short = crate::common::lakescore([
        "model".as_ref(),
        "package".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--reference".as_ref(),
        table.as_os_str(),
        "--output".as_ref(),
        dir.path().join("short").as_os_str(),
        "--feature-names".as_ref(),
        "a,b".as_ref(),
    ]);
    assert_ne!(short.code, 0);
    assert!(
        short.stderr.contains("names 2 features but the graph's inputs take"),
        "{}",
        short.stderr
    );

    let names = case.features.join(",");
    let package = dir.path().join("package");
    crate::common::model_package(&model, &table, &package, &["--feature-names", &names]);
    let manifest = std::fs::read_to_string(package.join("lakescore.toml")).unwrap();
    assert!(manifest.contains("feature_names = ["), "{manifest}");
    let out = dir.path().join("out");
    crate::common::score(&package, &table, &out, &[]).assert_ok();
    let batch = crate::common::read_parquet(&out.join(&crate::common::parquet_files(&out)[0]));
    let ids = crate::common::ids(&batch);
    let first = crate::common::scores(&batch, "score_0");
    for (i, id) in ids.iter().enumerate() {
        assert!(close(first[i] as f64, case.onnxruntime[*id as usize][0]));
    }
}

/// Bytes that are not a model, and a truncated graph: errors that say so.
#[test]
fn broken_onnx_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("rf_classifier.onnx")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let error = model::load(&truncated, &Device::Cpu, &LoadOptions::default()).unwrap_err();
    let text = format!("{:#}", anyhow::Error::new(error));
    assert!(text.contains("truncated.onnx") && text.contains("truncated"), "{text}");
}
