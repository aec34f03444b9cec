//! Delta tables as input (`tests/fixtures/delta/`, written by the Python
//! `deltalake` package; `make_fixtures.py` there regenerates them): the files
//! of a snapshot score exactly like the same rows as plain Parquet, versions
//! and time travel pick the snapshot, and what lakescore cannot read yet is
//! refused naming the Delta feature.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;

use crate::common::*;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/delta")
}

/// Each partition folder's `(customer_id, score)` rows of an output, sorted,
/// the score as f64 bits: what must be equal, whatever the files are named.
pub fn rows_by_partition(out: &Path) -> BTreeMap<PathBuf, Vec<(i64, u64)>> {
    let mut rows: BTreeMap<PathBuf, Vec<(i64, u64)>> = BTreeMap::new();
    for file in parquet_files(out) {
        let batch = read_parquet(&out.join(&file));
        let score = cast(
            batch.column_by_name("score").expect("a score column"),
            &DataType::Float64,
        )
        .unwrap();
        let score = score.as_any().downcast_ref::<Float64Array>().unwrap();
        let partition = file.parent().unwrap().to_path_buf();
        let entry = rows.entry(partition).or_default();
        for (id, row) in ids(&batch).into_iter().zip(0..score.len()) {
            entry.push((id, score.value(row).to_bits()));
        }
    }
    for list in rows.values_mut() {
        list.sort_unstable();
    }
    rows
}

#[test]
fn a_delta_table_scores_like_the_same_rows_as_plain_parquet_at_each_version() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/model.json");
    let table = fixtures().join("customers");
    let expected = |plain: &str| {
        let out = dir.path().join(format!("expected-{plain}"));
        score(&model, &fixtures().join(plain), &out, &[]).assert_ok();
        rows_by_partition(&out)
    };
    let scored = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let report = dir.path().join(format!("{name}.json"));
        let mut args = vec!["--report", report.to_str().unwrap()];
        args.extend_from_slice(extra);
        score(&model, &table, &out, &args).assert_ok();
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        (rows_by_partition(&out), report, out)
    };
    // The latest version: version 0's file of 2026-11-24 is still on disk,
    // removed by version 2, and must not be scored.
    let (latest, report, out) = scored("latest", &[]);
    assert_eq!(latest, expected("customers-plain"));
    assert_eq!(report["files"], 2, "{report}");
    assert_eq!(report["rows"], 1600, "{report}");
    assert_eq!(report["input_snapshot"], "delta version 2", "{report}");
    // Output paths are Hive partitions from the log's values, file names the table's.
    for file in parquet_files(&out) {
        let partition = file.parent().unwrap().to_string_lossy().into_owned();
        assert!(
            partition == "dt=2026-11-24" || partition == "dt=2026-11-25",
            "{}",
            file.display()
        );
        assert!(table.join(&file).exists(), "{}", file.display());
    }
    let (first, report, _) = scored("v0", &["--input-version", "0"]);
    assert_eq!(first, expected("customers-v0-plain"));
    assert_eq!(report["input_snapshot"], "delta version 0", "{report}");
    // As of a time after every commit: the latest.
    let (as_of, report, _) = scored("as-of", &["--input-as-of", "2999-01-01"]);
    assert_eq!(as_of, latest);
    assert_eq!(report["input_snapshot"], "delta version 2", "{report}");
}

#[test]
fn versions_a_delta_table_does_not_have_are_refused_naming_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/model.json");
    let table = fixtures().join("customers");
    let run = score(&model, &table, &dir.path().join("a"), &["--input-version", "9"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("has no version 9: its latest is 2"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&*table.to_string_lossy()), "{}", run.stderr);
    let run = score(&model, &table, &dir.path().join("b"), &["--input-as-of", "2000-01-01"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("has no version as of 2000-01-01"), "{}", run.stderr);
    // A plain folder has no history.
    let plain = fixtures().join("customers-plain");
    let run = score(&model, &plain, &dir.path().join("c"), &["--input-version", "0"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is not a Delta table"), "{}", run.stderr);
    assert!(!dir.path().join("a").exists() && !dir.path().join("b").exists());
}

#[test]
fn column_mapping_and_deletion_vectors_score_like_the_rows_the_table_holds() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/model.json");
    for (table, plain, rows) in [
        // Files store columns as `col-<uuid>`; features and ids are found,
        // and written, by the table's names.
        ("column-mapping", "column-mapping-plain", 200),
        // 200 rows of one file deleted by a vector in a file, every 7th of
        // the other's 1,000 by an inline one.
        ("deletion-vectors", "deletion-vectors-plain", 2000 - 200 - 143),
    ] {
        let out = dir.path().join(table);
        let report = dir.path().join(format!("{table}.json"));
        score(
            &model,
            &fixtures().join(table),
            &out,
            &["--report", report.to_str().unwrap()],
        )
        .assert_ok();
        let expected = dir.path().join(plain);
        score(&model, &fixtures().join(plain), &expected, &[]).assert_ok();
        assert_eq!(rows_by_partition(&out), rows_by_partition(&expected), "{table}");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        assert_eq!(report["rows"], rows, "{table}: {report}");
        assert_eq!(report["rows_scored"], rows, "{table}: {report}");
        // The output's columns carry the table's names.
        for file in parquet_files(&out) {
            let batch = read_parquet(&out.join(&file));
            let names: Vec<&str> = batch.schema_ref().fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["customer_id", "score"], "{table}: {}", file.display());
        }
    }
    // `check` counts the rows the table holds too.
    let checked = lakescore([
        "check",
        "--model",
        model.to_str().unwrap(),
        "--input",
        fixtures().join("deletion-vectors").to_str().unwrap(),
        "--json",
    ]);
    checked.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&checked.stdout).unwrap();
    assert_eq!(report["rows"], 2000 - 200 - 143, "{report}");
    // A campaign assigns arms to the customers the table holds.
    // (A copy, with the model it names: a campaign locks its policy file
    // with a file beside it.)
    let policy = dir.path().join("policy.toml");
    for name in ["policy.toml", "model.json"] {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample").join(name);
        std::fs::copy(sample, dir.path().join(name)).unwrap();
    }
    let assigned = dir.path().join("assigned");
    let allocated = lakescore([
        "allocate",
        "--policy",
        policy.to_str().unwrap(),
        "--input",
        fixtures().join("deletion-vectors").to_str().unwrap(),
        "--output",
        assigned.to_str().unwrap(),
        "--json",
    ]);
    allocated.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&allocated.stdout).unwrap();
    assert_eq!(report["rows"], 2000 - 200 - 143, "{report}");
    let written: usize = parquet_files(&assigned)
        .iter()
        .map(|file| read_parquet(&assigned.join(file)).num_rows())
        .sum();
    assert_eq!(written, 2000 - 200 - 143);
    // Outcome tables are read as folders: a Delta one is refused, not
    // listed with the files its log removed.
    let feedback = lakescore([
        "feedback",
        "--policy",
        policy.to_str().unwrap(),
        "--outcomes",
        fixtures().join("customers").to_str().unwrap(),
    ]);
    assert_eq!(feedback.code, 2, "{}", feedback.stderr);
    assert!(feedback.stderr.contains("is a Delta table"), "{}", feedback.stderr);
}

#[test]
fn a_delta_feature_lakescore_does_not_read_yet_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/model.json");
    let table = fixtures().join("column-mapping-id");
    let out = dir.path().join("out");
    let run = score(&model, &table, &out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("`columnMapping` in mode `id`"), "{}", run.stderr);
    assert!(run.stderr.contains(&*table.to_string_lossy()), "{}", run.stderr);
    assert!(!out.exists());
}
