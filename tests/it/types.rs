//! Every Arrow type that can be a number is one: signed and unsigned integers,
//! floats of 16, 32 and 64 bits, decimals, booleans, dictionaries of numbers
//! and all-null columns; nulls are missing values.

use std::sync::Arc;

use arrow::array::*;
use arrow::datatypes::{DataType, Field, Int8Type, Int16Type, Schema, i256};
use half::f16;

use crate::common::*;

/// One row per case; the third row is null in every column.
fn every_numeric_type() -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("customer_id", Arc::new(Int64Array::from(vec![1, 2, 3]))),
        ("i8", Arc::new(Int8Array::from(vec![Some(-128), Some(7), None]))),
        ("i16", Arc::new(Int16Array::from(vec![Some(-32768), Some(300), None]))),
        (
            "i32",
            Arc::new(Int32Array::from(vec![Some(i32::MIN), Some(70_000), None])),
        ),
        (
            "i64",
            Arc::new(Int64Array::from(vec![Some(-(1 << 40)), Some(1 << 50), None])),
        ),
        ("u8", Arc::new(UInt8Array::from(vec![Some(255), Some(0), None]))),
        ("u16", Arc::new(UInt16Array::from(vec![Some(65535), Some(1), None]))),
        ("u32", Arc::new(UInt32Array::from(vec![Some(u32::MAX), Some(2), None]))),
        (
            "u64",
            Arc::new(UInt64Array::from(vec![Some(1u64 << 63), Some(3), None])),
        ),
        (
            "f16",
            Arc::new(Float16Array::from(vec![
                Some(f16::from_f32(1.5)),
                Some(f16::from_f32(-0.25)),
                None,
            ])),
        ),
        (
            "f32",
            Arc::new(Float32Array::from(vec![Some(3.25), Some(f32::NAN), None])),
        ),
        (
            "f64",
            Arc::new(Float64Array::from(vec![Some(-1e10), Some(0.125), None])),
        ),
        (
            "dec32",
            Arc::new(
                Decimal32Array::from(vec![Some(12345), Some(-5), None])
                    .with_precision_and_scale(9, 2)
                    .unwrap(),
            ),
        ),
        (
            "dec64",
            Arc::new(
                Decimal64Array::from(vec![Some(-987654), Some(1), None])
                    .with_precision_and_scale(18, 3)
                    .unwrap(),
            ),
        ),
        (
            "dec128",
            Arc::new(
                Decimal128Array::from(vec![Some(12345), Some(-2), None])
                    .with_precision_and_scale(30, 4)
                    .unwrap(),
            ),
        ),
        (
            "dec256",
            Arc::new(
                Decimal256Array::from(vec![Some(i256::from_i128(-250)), Some(i256::from_i128(7)), None])
                    .with_precision_and_scale(50, 1)
                    .unwrap(),
            ),
        ),
        (
            "flag",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
        ),
        (
            "dict_f64",
            Arc::new(
                DictionaryArray::<Int16Type>::try_new(
                    Int16Array::from(vec![Some(1), Some(0), None]),
                    Arc::new(Float64Array::from(vec![2.5, -4.0])),
                )
                .unwrap(),
            ),
        ),
        (
            "dict_i32",
            Arc::new(
                DictionaryArray::<Int8Type>::try_new(
                    Int8Array::from(vec![Some(0), Some(0), None]),
                    Arc::new(Int32Array::from(vec![42])),
                )
                .unwrap(),
            ),
        ),
        ("nothing", Arc::new(NullArray::new(3))),
    ];
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, a)| a).collect()).unwrap()
}

#[test]
fn every_numeric_arrow_type_is_a_feature() {
    let dir = tempfile::tempdir().unwrap();
    let batch = every_numeric_type();
    let input = dir.path().join("types.parquet");
    write_parquet(&input, std::slice::from_ref(&batch), 1024);
    let features: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .skip(1)
        .map(|f| f.name().clone())
        .collect();
    let k = features.len();
    // Identity weights: output j is feature j, so each type is checked alone.
    let weights: Vec<Vec<f64>> = (0..k)
        .map(|j| (0..k).map(|i| f64::from(u8::from(i == j))).collect())
        .collect();
    let model = linear_model(
        dir.path(),
        "identity.json",
        serde_json::json!({"format": "linear", "features": features, "weights": weights,
                           "intercept": vec![0.0; k], "link": "identity", "fill": vec![-1.0; k]}),
    );
    let out = dir.path().join("out");
    score(&model, &input, &out, &[]).assert_ok();
    let output = read_parquet(&out.join("types.parquet"));

    let expected: Vec<(&str, [f32; 2])> = vec![
        ("i8", [-128.0, 7.0]),
        ("i16", [-32768.0, 300.0]),
        ("i32", [i32::MIN as f32, 70_000.0]),
        ("i64", [-(1i64 << 40) as f32, (1i64 << 50) as f32]),
        ("u8", [255.0, 0.0]),
        ("u16", [65535.0, 1.0]),
        ("u32", [u32::MAX as f32, 2.0]),
        ("u64", [(1u64 << 63) as f32, 3.0]),
        ("f16", [1.5, -0.25]),
        ("f32", [3.25, -1.0]), // NaN is missing
        ("f64", [-1e10, 0.125]),
        ("dec32", [123.45, -0.05]),
        ("dec64", [-987.654, 0.001]),
        ("dec128", [1.2345, -0.0002]),
        ("dec256", [-25.0, 0.7]),
        ("flag", [1.0, 0.0]),
        ("dict_f64", [-4.0, 2.5]),
        ("dict_i32", [42.0, 42.0]),
        ("nothing", [-1.0, -1.0]),
    ];
    assert_eq!(expected.len(), k);
    for (j, (name, values)) in expected.iter().enumerate() {
        assert_eq!(features[j], *name);
        let got = scores(&output, &format!("score_{j}"));
        assert_eq!(got, vec![values[0], values[1], -1.0], "feature `{name}`");
    }
}

#[test]
fn an_all_null_table_scores_with_fill_values() {
    let dir = tempfile::tempdir().unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, true),
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Int32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![10, 11])),
            Arc::new(Float64Array::from(vec![None, None])),
            Arc::new(Int32Array::from(vec![None, None])),
        ],
    )
    .unwrap();
    let input = dir.path().join("nulls.parquet");
    write_parquet(&input, &[batch], 1024);
    let model = linear_model(
        dir.path(),
        "m.json",
        serde_json::json!({"format": "linear", "features": ["x", "y"], "weights": [2.0, 3.0],
                           "intercept": 0.5, "link": "identity", "fill": [1.0, -1.0]}),
    );
    let out = dir.path().join("out");
    score(&model, &input, &out, &[]).assert_ok();
    let output = read_parquet(&out.join("nulls.parquet"));
    assert_eq!(ids(&output), vec![10, 11]);
    assert_eq!(scores(&output, "score"), vec![2.0 - 3.0 + 0.5; 2]);
}
