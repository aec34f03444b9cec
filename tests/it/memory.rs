//! Scoring in memory (`lakescore::scorer`): Arrow batches in, the command
//! line's scores out, bit for bit; inspections that merge and judge as a
//! command-line run judges its table.

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use lakescore::model::LoadOptions;
use lakescore::scorer::{Inspected, Scorer, ScorerOptions};

use crate::common::*;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample")
}

fn scorer(model: &Path, output_margin: bool) -> Scorer {
    let load = LoadOptions {
        output_margin,
        ..LoadOptions::default()
    };
    let package = lakescore::package::open(model, &candle_core::Device::Cpu, &load).expect("the model opens");
    Scorer::new(package, ScorerOptions::default())
}

/// A Parquet file's batches as a reader hands them out (one per row group
/// here: the reader's batch size is larger than any of them).
fn batches_of(path: &Path) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap())
        .unwrap()
        .with_batch_size(1 << 20)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

/// Asserts two output tables hold the same values, scores bit for bit.
fn assert_same_output(ours: &RecordBatch, cli: &RecordBatch, what: &str) {
    assert_eq!(
        ours.schema().fields(),
        cli.schema().fields(),
        "{what}: the same columns"
    );
    assert_eq!(ours.num_rows(), cli.num_rows(), "{what}: the same rows");
    for (i, field) in cli.schema().fields().iter().enumerate() {
        let (a, b) = (ours.column(i), cli.column(i));
        match field.data_type() {
            arrow::datatypes::DataType::Float32 => {
                let bits = |array: &dyn Array| -> Vec<u32> {
                    let values = array.as_any().downcast_ref::<arrow::array::Float32Array>().unwrap();
                    values.values().iter().map(|v| v.to_bits()).collect()
                };
                assert_eq!(
                    bits(a.as_ref()),
                    bits(b.as_ref()),
                    "{what}: `{}` bit for bit",
                    field.name()
                );
            }
            _ => assert_eq!(a.to_data(), b.to_data(), "{what}: `{}`", field.name()),
        }
    }
}

#[test]
fn in_memory_scores_are_the_cli_scores_on_the_sample_lake() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample().join("customers");
    for model in ["model.json", "xgb.ubj", "lgbm.txt", "rf.onnx", "mlp.onnx", "package"] {
        let model = sample().join(model);
        let out = dir.path().join(model.file_name().unwrap());
        score(&model, &lake, &out, &[]).assert_ok();
        let scorer = scorer(&model, false);
        let files = parquet_files(&lake);
        assert!(!files.is_empty());
        for relative in files {
            let batches = batches_of(&lake.join(&relative));
            let (scored, seen) = scorer.score_all(batches.clone()).expect("scores");
            let cli = read_parquet(&out.join(&relative));
            assert_same_output(
                &concat(&scored),
                &cli,
                &format!("{} on {}", model.display(), relative.display()),
            );
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(seen.rows, rows as u64);
        }
    }
}

#[test]
fn inspections_merge_and_judge_as_the_cli_judges_the_table() {
    let dir = tempfile::tempdir().unwrap();
    // The sample lake, with every 7th customer of one day aged 150: out of
    // the sample package's range, which quarantines them.
    let lake = dir.path().join("lake");
    for relative in parquet_files(&sample().join("customers")) {
        let mut batch = read_parquet(&sample().join("customers").join(&relative));
        if relative.starts_with("dt=2026-11-25") {
            let at = batch.schema().index_of("age").unwrap();
            let age_type = batch.schema().field(at).data_type().clone();
            let age = arrow::compute::cast(batch.column(at), &arrow::datatypes::DataType::Float64).unwrap();
            let age = age.as_any().downcast_ref::<arrow::array::Float64Array>().unwrap();
            let aged: arrow::array::Float64Array = age
                .iter()
                .enumerate()
                .map(|(i, v)| if i % 7 == 0 { Some(150.0) } else { v })
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[at] = arrow::compute::cast(&aged, &age_type).unwrap();
            batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        }
        write_parquet(&lake.join(&relative), &[batch], 5_000);
    }
    let package = sample().join("package");
    let out = dir.path().join("out");
    let report_path = dir.path().join("report.json");
    score(&package, &lake, &out, &["--report", report_path.to_str().unwrap()]).assert_ok();
    let report: Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();

    // Each file on a worker of its own; their inspections travel as JSON.
    let scorer = scorer(&package, false);
    let mut merged = scorer.empty_inspection();
    let mut quarantined_ids: Vec<i64> = Vec::new();
    for relative in parquet_files(&lake) {
        for batch in batches_of(&lake.join(&relative)) {
            let scored = scorer.score(&batch).unwrap();
            let travelled = Inspected::from_json(&scored.inspected.to_json()).unwrap();
            assert_eq!(travelled, scored.inspected, "the JSON form keeps everything");
            merged.merge(&travelled);
            let held = scored.quarantined.expect("the package quarantines");
            quarantined_ids.extend(int64_column(&held, "customer_id"));
            let reasons = held.column_by_name("lakescore_reasons").unwrap();
            let reasons = reasons.as_any().downcast_ref::<StringArray>().unwrap();
            assert!(
                reasons.iter().all(|r| r.is_some_and(|r| r.contains("age"))),
                "{reasons:?}"
            );
        }
    }
    assert_eq!(merged.rows, report["rows"].as_u64().unwrap());
    assert_eq!(merged.rows_quarantined, report["rows_quarantined"].as_u64().unwrap());
    assert!(merged.rows_quarantined > 1_000, "{}", merged.rows_quarantined);
    assert_eq!(quarantined_ids.len() as u64, merged.rows_quarantined);
    let cli_quarantine = read_parquet(Path::new(report["quarantine"].as_str().unwrap()));
    let mut cli_ids = int64_column(&cli_quarantine, "customer_id");
    cli_ids.sort_unstable();
    quarantined_ids.sort_unstable();
    assert_eq!(quarantined_ids, cli_ids, "the same rows quarantined");

    let judgement = serde_json::to_value(scorer.judge(&merged)).unwrap();
    let cli = &report;
    let by_id = |checks: &Value, list: &str, key: &str| -> Vec<(String, Value, Value)> {
        checks[list]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["status"].clone(),
                    r[key].clone(),
                )
            })
            .collect()
    };
    assert_eq!(
        by_id(&judgement["checks"], "rules", "failing"),
        by_id(&cli["checks"], "rules", "failing"),
        "every rule: the same status and failing rows"
    );
    assert_eq!(judgement["checks"]["verdict"], cli["checks"]["verdict"]);
    let guards = |j: &Value| -> Vec<(String, Value)> {
        j["guards"]["guards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["id"].as_str().unwrap().to_string(), g["status"].clone()))
            .collect()
    };
    assert_eq!(guards(&judgement), guards(cli), "every guard: the same status");
    assert_eq!(judgement["drift"]["verdict"], cli["drift"]["verdict"]);
    let psi = |j: &Value| -> Vec<(String, f64)> {
        j["drift"]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["psi"].as_f64().unwrap()))
            .collect()
    };
    let (ours, theirs) = (psi(&judgement), psi(cli));
    assert_eq!(ours.len(), theirs.len());
    for ((name, a), (_, b)) in ours.iter().zip(&theirs) {
        // Bins count exactly; only the summation order of the logs differs.
        assert!(
            (a - b).abs() <= 1e-12,
            "{name}: PSI {a} in memory, {b} on the command line"
        );
    }
}

#[test]
fn in_memory_errors_name_the_column() {
    let scorer = scorer(&sample().join("model.json"), false);
    let file = parquet_files(&sample().join("customers")).remove(0);
    let batch = batches_of(&sample().join("customers").join(file)).remove(0);
    let without_age = batch.project(
        &(0..batch.num_columns())
            .filter(|&i| batch.schema().field(i).name() != "age")
            .collect::<Vec<_>>(),
    );
    let error = scorer.score(&without_age.unwrap()).unwrap_err().to_string();
    assert_eq!(error, "model feature `age` has no column in `the in-memory input`");
    // An empty batch scores to an empty batch, the model never called.
    let empty = scorer.score(&batch.slice(0, 0)).unwrap();
    assert_eq!(empty.scores.num_rows(), 0);
    assert_eq!(empty.scores.num_columns(), 2);
    assert_eq!(empty.inspected.rows, 0);
}
