//! The output mirrors the input: same relative paths, rows in input order,
//! one output row group per input row group; `_` and `.` entries are not
//! data; a single file is a table; empty tables give empty files.

use std::sync::Arc;

use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};

use crate::common::*;

#[test]
fn output_mirrors_partitions_and_keeps_row_order() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 9_000, 2, 1_000, &["2026-11-24", "2026-11-25"]);
    // Not data: bookkeeping files and folders of other tools.
    std::fs::write(lake.join("_SUCCESS"), "").unwrap();
    std::fs::write(lake.join("dt=2026-11-25/.part-00000.parquet.crc"), "crc").unwrap();
    std::fs::create_dir_all(lake.join("_temporary/0")).unwrap();
    std::fs::write(lake.join("_temporary/0/junk.parquet"), "not parquet").unwrap();
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();

    let expected_files: Vec<_> = [
        "dt=2026-11-24/part-00000.parquet",
        "dt=2026-11-24/part-00001.parquet",
        "dt=2026-11-25/part-00000.parquet",
        "dt=2026-11-25/part-00001.parquet",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .collect();
    assert_eq!(parquet_files(&out), expected_files);
    for relative in &expected_files {
        let input = read_parquet(&lake.join(relative));
        let output = read_parquet(&out.join(relative));
        assert_eq!(ids(&output), ids(&input), "{relative:?} keeps input order");
        assert_eq!(
            row_group_sizes(&out.join(relative)),
            row_group_sizes(&lake.join(relative))
        );
        let names: Vec<_> = output.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["customer_id", "score"]);
        assert_eq!(output.schema().field(1).data_type(), &DataType::Float32);
    }
    assert!(out.join("_SUCCESS").is_file());
    assert!(!out.join("_temporary").exists());
}

#[test]
fn a_single_file_is_a_table() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 2_000, 1, 500, &["2026-11-25"]);
    let file = lake.join("dt=2026-11-25/part-00000.parquet");
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let out = dir.path().join("out");
    score(&model, &file, &out, &[]).assert_ok();
    assert_eq!(
        parquet_files(&out),
        vec![std::path::PathBuf::from("part-00000.parquet")]
    );
    assert_eq!(
        ids(&read_parquet(&out.join("part-00000.parquet"))),
        (1..=2_000).collect::<Vec<i64>>()
    );
}

fn small_table(ids: Vec<i64>) -> RecordBatch {
    let n = ids.len();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("account", DataType::Utf8, false),
            Field::new("customer_id", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ])),
        vec![
            Arc::new(StringArray::from(
                (0..n).map(|i| format!("acct-{i}")).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(ids)),
            Arc::new(Float64Array::from((0..n).map(|i| i as f64).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

#[test]
fn named_id_columns_are_carried_untouched_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.parquet");
    write_parquet(&input, &[small_table(vec![5, 6, 7])], 2);
    let model = model_of_x(dir.path(), 1.0, 0.0);
    let out = dir.path().join("out");
    score(
        &model,
        &input,
        &out,
        &["--id-column", "customer_id", "--id-column", "account"],
    )
    .assert_ok();
    let output = read_parquet(&out.join("t.parquet"));
    let names: Vec<_> = output.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["customer_id", "account", "score"]);
    let accounts = output.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    assert_eq!(
        accounts.iter().flatten().collect::<Vec<_>>(),
        ["acct-0", "acct-1", "acct-2"]
    );
    assert_eq!(scores(&output, "score"), vec![0.0, 1.0, 2.0]);
}

#[test]
fn a_table_without_customer_id_gets_scores_only() {
    let dir = tempfile::tempdir().unwrap();
    let batch = small_table(vec![1, 2]);
    let without_id = batch.project(&[0, 2]).unwrap();
    let input = dir.path().join("t.parquet");
    write_parquet(&input, &[without_id], 10);
    let model = model_of_x(dir.path(), 2.0, 1.0);
    let out = dir.path().join("out");
    score(&model, &input, &out, &[]).assert_ok();
    let output = read_parquet(&out.join("t.parquet"));
    assert_eq!(output.num_columns(), 1);
    assert_eq!(scores(&output, "score"), vec![1.0, 3.0]);
}

#[test]
fn zero_rows_give_empty_output_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    // A file with no row group at all, and one with an empty batch written.
    write_parquet(&lake.join("a.parquet"), &[small_table(vec![])], 10);
    let empty_writer_file = lake.join("b.parquet");
    let schema = small_table(vec![]).schema();
    let writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&empty_writer_file).unwrap(), schema, None);
    writer.unwrap().close().unwrap();
    let model = model_of_x(dir.path(), 2.0, 1.0);
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    for name in ["a.parquet", "b.parquet"] {
        let output = read_parquet(&out.join(name));
        assert_eq!(output.num_rows(), 0, "{name}");
        let names: Vec<_> = output.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["customer_id", "score"], "{name}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(manifest["rows"], 0);
}

/// The bytes of one column chunk of one row group.
fn chunk_bytes(path: &std::path::Path, row_group: usize, column: &str) -> Vec<u8> {
    let (start, len) = chunk_range(path, row_group, column);
    std::fs::read(path).unwrap()[start..start + len].to_vec()
}

#[test]
fn id_columns_are_copied_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.parquet");
    write_parquet(&input, &[small_table((0..5000).collect())], 2000);
    let model = model_of_x(dir.path(), 1.0, 0.0);
    let out = dir.path().join("out");
    score(
        &model,
        &input,
        &out,
        &["--id-column", "customer_id", "--id-column", "account"],
    )
    .assert_ok();
    let output = out.join("t.parquet");
    for row_group in 0..3 {
        for column in ["customer_id", "account"] {
            assert_eq!(
                chunk_bytes(&output, row_group, column),
                chunk_bytes(&input, row_group, column),
                "{column}"
            );
        }
    }
    let batch = read_parquet(&output);
    assert_eq!(ids(&batch), (0..5000).collect::<Vec<i64>>());
    assert_eq!(scores(&batch, "score"), (0..5000).map(|i| i as f32).collect::<Vec<_>>());
}
