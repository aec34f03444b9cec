//! MLflow model folders, as `mlflow.<flavor>.log_model` wrote them
//! (tests/fixtures/mlflow, made by its make_fixtures.sh): the xgboost,
//! lightgbm (skops) and onnx flavors score exactly like the raw models, the
//! signature's columns become type rules, a `lakescore.toml` beside
//! `MLmodel` must agree with it, and a sklearn model is refused with the way
//! to an ONNX copy.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int32Array};

use crate::common::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mlflow")
        .join(name)
}

fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample").join(name)
}

/// Every output file's rows (ids and scores), by path.
fn scored(out: &Path) -> Vec<(PathBuf, arrow::record_batch::RecordBatch)> {
    parquet_files(out)
        .into_iter()
        .map(|relative| {
            let batch = read_parquet(&out.join(&relative));
            (relative, batch)
        })
        .collect()
}

#[test]
fn xgboost_lightgbm_and_onnx_folders_score_exactly_like_their_raw_models() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample("customers");
    for (flavor, raw) in [
        ("xgboost", fixture("xgboost/model.ubj")),
        ("lightgbm", fixture("raw/lightgbm.txt")),
        ("onnx", sample("rf.onnx")),
    ] {
        let through_mlflow = dir.path().join(format!("{flavor}-mlflow"));
        let report = dir.path().join(format!("{flavor}.json"));
        score(
            &fixture(flavor),
            &lake,
            &through_mlflow,
            &["--report", report.to_str().unwrap()],
        )
        .assert_ok();
        let direct = dir.path().join(format!("{flavor}-raw"));
        score(&raw, &lake, &direct, &[]).assert_ok();
        let (a, b) = (scored(&through_mlflow), scored(&direct));
        assert_eq!(a.len(), 4, "{flavor}: both partitions, two files each");
        assert!(
            a.iter()
                .all(|(_, batch)| batch.num_rows() > 0 && batch.num_columns() >= 2)
        );
        assert!(
            a == b,
            "{flavor}: the MLflow folder scores differently from the raw model"
        );
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["model"]["name"], flavor, "named after its folder");
        // Every signature column is a type rule, and the lake passes them.
        let types: Vec<&serde_json::Value> = report["checks"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["kind"] == "type")
            .collect();
        assert!(
            types.len() >= 6 && types.iter().all(|r| r["status"] == "pass"),
            "{flavor}: {types:?}"
        );
    }
}

#[test]
fn a_sklearn_model_is_refused_with_the_way_to_an_onnx_copy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let run = score(&fixture("sklearn"), &sample("customers"), &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("sklearn/MLmodel"), "names the file: {}", run.stderr);
    assert!(
        run.stderr.contains("[python_function, sklearn]") && run.stderr.contains("skl2onnx"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn the_signature_types_the_columns() {
    let dir = tempfile::tempdir().unwrap();
    // tenure_days as a float column: the signature says integer.
    let lake = dir.path().join("lake");
    copy_dir(&sample("customers"), &lake);
    crate::contract::plant(&lake, "tenure_days", |c| {
        let values = c.as_any().downcast_ref::<Int32Array>().unwrap();
        Arc::new(values.iter().map(|v| v.map(f64::from)).collect::<Float64Array>()) as ArrayRef
    });
    let out = dir.path().join("out");
    let run = score(&fixture("xgboost"), &lake, &out, &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("tenure_days"), "{}", run.stderr);
    assert!(!out.exists());
}

#[test]
fn a_lakescore_toml_beside_mlmodel_adds_rules_and_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("churn");
    copy_dir(&fixture("xgboost"), &folder);
    let sha = lakescore::util::sha256_hex(&std::fs::read(folder.join("model.ubj")).unwrap());
    let manifest = |extra: &str| {
        format!("name = \"churn\"\nversion = \"7\"\nartifact = \"model.ubj\"\nsha256 = \"{sha}\"\n{extra}")
    };
    let toml = folder.join("lakescore.toml");
    std::fs::write(&toml, manifest("[output]\nrange = [0.0, 1.0]\n")).unwrap();
    let report = dir.path().join("report.json");
    let out = dir.path().join("out");
    score(
        &folder,
        &sample("customers"),
        &out,
        &["--report", report.to_str().unwrap()],
    )
    .assert_ok();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(
        (report["model"]["name"].as_str(), report["model"]["version"].as_str()),
        (Some("churn"), Some("7"))
    );
    assert!(
        report["checks"]["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == "tenure_days.type"),
        "the signature's type rules are added: {}",
        report["checks"]
    );

    // A type the signature contradicts: an error naming both files.
    std::fs::write(&toml, manifest("[features.tenure_days]\ntype = \"float\"\n")).unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out2"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("MLmodel") && run.stderr.contains("lakescore.toml") && run.stderr.contains("tenure_days"),
        "{}",
        run.stderr
    );
    // Another artifact than the flavor's file.
    std::fs::copy(folder.join("model.ubj"), folder.join("other.ubj")).unwrap();
    std::fs::write(&toml, manifest("").replace("model.ubj", "other.ubj")).unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out3"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`model.ubj`") && run.stderr.contains("`other.ubj`"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_pickled_lightgbm_model_and_a_broken_mlmodel_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pickled");
    copy_dir(&fixture("lightgbm"), &folder);
    let mlmodel = std::fs::read_to_string(folder.join("MLmodel")).unwrap();
    std::fs::write(
        folder.join("MLmodel"),
        mlmodel.replace("serialization_format: skops", "serialization_format: pickle"),
    )
    .unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("pickle") && run.stderr.contains("never loads"),
        "{}",
        run.stderr
    );

    std::fs::write(folder.join("MLmodel"), "flavors: [not, a, map\n").unwrap();
    let run = score(&folder, &sample("customers"), &dir.path().join("out"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("is not an MLflow `MLmodel` file"), "{}", run.stderr);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
