//! Bad input gets a clear error naming the file, row group, column or model
//! field, exit code 1 (2 for usage), and leaves the output as it was.

use std::path::{Path, PathBuf};

use crate::common::*;

struct Case {
    _dir: tempfile::TempDir,
    root: PathBuf,
    lake: PathBuf,
    out: PathBuf,
    model: PathBuf,
}

/// A small lake, a model that fits it, and an output folder that already holds
/// a file of someone else's (which must survive every failure).
fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let lake = customer_lake(&root.join("lake"), 3_000, 2, 1_000, &["2026-11-25"]);
    let model = linear_model(&root, "model.json", logistic_model_body(None));
    let out = root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("_keep.txt"), "the user's").unwrap();
    Case {
        _dir: dir,
        root,
        lake,
        out,
        model,
    }
}

/// Runs a score expected to fail and checks the code, the message, and that
/// OUT did not change at all.
#[track_caller]
fn assert_fails(case: &Case, model: &Path, input: &Path, extra: &[&str], code: i32, expected: &[String]) {
    let before = snapshot(&case.out);
    let run = score(model, input, &case.out, extra);
    assert_eq!(run.code, code, "stderr:\n{}", run.stderr);
    assert_eq!(run.error_lines(), expected, "stderr:\n{}", run.stderr);
    assert_eq!(snapshot(&case.out), before, "the output folder changed");
}

fn file0(case: &Case) -> PathBuf {
    case.lake.join("dt=2026-11-25/part-00000.parquet")
}

#[test]
fn missing_feature_column_suggests_the_close_name() {
    let case = case();
    let model = linear_model(
        &case.root,
        "typo.json",
        serde_json::json!({"format": "linear", "features": ["age", "tenure_day"], "weights": [1, 2], "intercept": 0}),
    );
    assert_fails(
        &case,
        &model,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: model feature `tenure_day` has no column in `{}`; did you mean `tenure_days`?",
            file0(&case).display()
        )],
    );
}

#[test]
fn a_string_column_cannot_be_a_numeric_feature() {
    let case = case();
    let model = linear_model(
        &case.root,
        "strings.json",
        serde_json::json!({"format": "linear", "features": ["region"], "weights": [1], "intercept": 0}),
    );
    assert_fails(
        &case,
        &model,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: column `region` of `{}` has type `Dictionary(Int32, Utf8)`, which cannot be a numeric model \
             feature (its dictionary values are not numbers)",
            file0(&case).display()
        )],
    );
}

#[test]
fn a_file_that_is_not_parquet() {
    let case = case();
    let junk = case.lake.join("dt=2026-11-25/part-00002.parquet");
    std::fs::write(&junk, "customer_id,age\n1,40\n").unwrap();
    assert_fails(
        &case,
        &case.model,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: input file `{}` is not a Parquet file: it does not end with the `PAR1` magic",
            junk.display()
        )],
    );
}

#[test]
fn an_empty_file() {
    let case = case();
    let empty = case.lake.join("dt=2026-11-25/part-00002.parquet");
    std::fs::write(&empty, "").unwrap();
    assert_fails(
        &case,
        &case.model,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: input file `{}` is empty (0 bytes), not a Parquet file",
            empty.display()
        )],
    );
}

#[test]
fn a_corrupt_footer() {
    let case = case();
    let bad = case.lake.join("dt=2026-11-25/part-00002.parquet");
    let mut bytes = b"PAR1".to_vec();
    bytes.extend_from_slice(&[0xAB; 64]);
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(b"PAR1");
    std::fs::write(&bad, bytes).unwrap();
    let run = score(&case.model, &case.lake, &case.out, &[]);
    assert_eq!(run.code, 1);
    let lines = run.error_lines();
    assert_eq!(
        lines[0],
        format!("error: cannot read the Parquet footer of `{}`", bad.display())
    );
    assert!(lines[1].starts_with("  Caused by: "), "{lines:?}");
}

/// Damages the first page header of one column chunk in row group 1.
fn corrupt_row_group_1(file: &Path, column: &str) {
    let (start, _) = chunk_range(file, 1, column);
    let mut bytes = std::fs::read(file).unwrap();
    bytes[start..start + 16].fill(0xFF);
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn a_corrupt_row_group_is_named_and_nothing_is_published() {
    let case = case();
    let second = case.lake.join("dt=2026-11-25/part-00001.parquet");
    corrupt_row_group_1(&second, "age");
    let before = published(&case.out);
    let run = score(&case.model, &case.lake, &case.out, &["--threads", "2"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let lines = run.error_lines();
    assert_eq!(
        lines[0],
        format!(
            "error: cannot decode column `age` of row group 1 of `{}`",
            second.display()
        )
    );
    assert!(lines.len() >= 2, "the cause is printed: {lines:?}");
    // Nothing published, nothing staged left behind, the failure on record.
    assert_eq!(published(&case.out), before);
    let staging: Vec<_> = std::fs::read_dir(case.out.join("_lakescore/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "staged files were left behind");
    let runs: Vec<_> = std::fs::read_dir(case.out.join("_lakescore/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&runs[0]).unwrap()).unwrap();
    assert_eq!(record["status"], "failed");
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .contains("cannot decode column `age` of row group 1")
    );
}

#[test]
fn a_corrupt_id_column_is_named() {
    // Id columns are decoded through Arrow; with one such column, the error
    // still names it.
    let case = case();
    let first = file0(&case);
    corrupt_row_group_1(&first, "customer_id");
    let before = published(&case.out);
    let run = score(&case.model, &case.lake, &case.out, &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.error_lines()[0],
        format!(
            "error: cannot decode column `customer_id` of row group 1 of `{}`",
            first.display()
        )
    );
    assert_eq!(published(&case.out), before);
}

#[test]
fn a_panic_while_scoring_is_an_error_not_a_hang() {
    let case = case();
    let before = published(&case.out);
    let run = lakescore_with_env(
        score_args(&case.model, &case.lake, &case.out, &["--threads", "2"]),
        &[("LAKESCORE_TEST_PANIC_IN_ROW_GROUP", "1")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let first_line = &run.error_lines()[0];
    assert!(
        first_line.starts_with("error: internal error: scoring row group 1 of `")
            && first_line.contains("panicked: test hook LAKESCORE_TEST_PANIC_IN_ROW_GROUP=1")
            && first_line.ends_with("this is a bug in lakescore, please report it with the command you ran"),
        "{first_line}"
    );
    assert_eq!(published(&case.out), before);
    assert_eq!(
        std::fs::read_dir(case.out.join("_lakescore/staging")).unwrap().count(),
        0
    );
}

#[test]
fn a_dangling_link_in_the_input_is_named() {
    let case = case();
    let link = case.lake.join("dt=2026-11-25/part-00009.parquet");
    std::os::unix::fs::symlink(case.root.join("gone.parquet"), &link).unwrap();
    assert_fails(
        &case,
        &case.model,
        &case.lake,
        &[],
        1,
        &[
            format!("error: cannot read input `{}`", link.display()),
            "  Caused by: No such file or directory (os error 2)".to_string(),
        ],
    );
}

#[test]
fn model_files_that_do_not_parse() {
    let case = case();
    let broken = case.root.join("broken.json");
    std::fs::write(&broken, "{\"format\": \"linear\", \"features\": [").unwrap();
    let run = score(&broken, &case.lake, &case.out, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.error_lines(),
        [
            format!("error: cannot parse model file `{}` as JSON", broken.display()),
            "  Caused by: EOF while parsing a list at line 1 column 34".to_string()
        ]
    );

    let binary = case.root.join("model.bin");
    std::fs::write(&binary, [0u8, 159, 146, 150]).unwrap();
    assert_fails(
        &case,
        &binary,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: model file `{}` is not a format lakescore knows (supported: linear JSON, XGBoost JSON or UBJSON, LightGBM text, ONNX)",
            binary.display()
        )],
    );

    let other = linear_model(
        &case.root,
        "other.json",
        serde_json::json!({"format": "tree", "trees": []}),
    );
    assert_fails(
        &case,
        &other,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: model file `{}` is not a format lakescore knows: JSON with `\"format\": \"tree\"`; expected `\"linear\"`",
            other.display()
        )],
    );

    let typo = linear_model(
        &case.root,
        "typo.json",
        serde_json::json!({"format": "linear", "features": ["age"], "weight": [1], "intercept": 0}),
    );
    let run = score(&typo, &case.lake, &case.out, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.error_lines()[0],
        format!("error: cannot parse model file `{}` as a linear model", typo.display())
    );
    assert!(
        run.error_lines()[1].contains("unknown field `weight`"),
        "{:?}",
        run.error_lines()
    );

    let short = linear_model(
        &case.root,
        "short.json",
        serde_json::json!({"format": "linear", "features": ["age", "tenure_days", "b00"], "weights": [1, 2], "intercept": 0}),
    );
    assert_fails(
        &case,
        &short,
        &case.lake,
        &[],
        1,
        &[format!(
            "error: model file `{}` is invalid: `weights` has 2 values for 3 features",
            short.display()
        )],
    );

    let missing = case.root.join("nowhere.json");
    assert_fails(
        &case,
        &missing,
        &case.lake,
        &[],
        1,
        &[
            format!("error: cannot read model file `{}`", missing.display()),
            "  Caused by: No such file or directory (os error 2)".to_string(),
        ],
    );
}

#[test]
fn a_missing_id_column_suggests_the_close_name() {
    let case = case();
    assert_fails(
        &case,
        &case.model,
        &case.lake,
        &["--id-column", "customer_ids"],
        1,
        &[format!(
            "error: id column `customer_ids` does not exist in `{}`; did you mean `customer_id`?",
            file0(&case).display()
        )],
    );
}

#[test]
fn missing_input_and_overlapping_output() {
    let case = case();
    let nowhere = case.root.join("no-such-lake");
    assert_fails(
        &case,
        &case.model,
        &nowhere,
        &[],
        1,
        &[format!("error: input `{}` does not exist", nowhere.display())],
    );

    let inside = case.lake.join("scores");
    let run = score(&case.model, &case.lake, &inside, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.error_lines(),
        [format!(
            "error: input `{}` and output `{}` overlap; write the scores outside the input table",
            case.lake.display(),
            inside.display()
        )]
    );
    assert!(!inside.exists());

    let empty = case.root.join("empty-lake");
    std::fs::create_dir_all(empty.join("_temporary")).unwrap();
    assert_fails(
        &case,
        &case.model,
        &empty,
        &[],
        1,
        &[format!(
            "error: input `{}` holds no data files (names starting with `_` or `.` are not data)",
            empty.display()
        )],
    );
}

/// Built without the `cuda` feature, `--device cuda` is a usage error; built
/// with it, on a machine without a GPU, a failure to open the device.
#[test]
fn cuda_without_the_feature_is_a_usage_error() {
    let case = case();
    #[cfg(feature = "cuda")]
    if !gpu_present() {
        let run = score(&case.model, &case.lake, &case.out, &["--device", "cuda"]);
        assert_eq!(run.code, 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("error: cannot open CUDA device `cuda:0`"),
            "{}",
            run.stderr
        );
    }
    #[cfg(not(feature = "cuda"))]
    assert_fails(
        &case,
        &case.model,
        &case.lake,
        &["--device", "cuda"],
        2,
        &[
            "error: cannot use `cuda:0`: lakescore was built without CUDA support; rebuild with `--features cuda`"
                .to_string(),
        ],
    );
    let run = score(&case.model, &case.lake, &case.out, &["--device", "tpu"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains("`tpu` is not a device; expected `cpu`, `cuda` or `cuda:N`"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_id_column_named_like_a_score_column() {
    let case = case();
    let model = linear_model(
        &case.root,
        "m.json",
        serde_json::json!({"format": "linear", "features": ["age"], "weights": [1], "intercept": 0}),
    );
    let input = case.root.join("t.parquet");
    let batch =
        arrow::array::RecordBatch::try_from_iter([("age", array(vec![1.0])), ("score", array(vec![2.0]))]).unwrap();
    write_parquet(&input, &[batch], 10);
    assert_fails(
        &case,
        &model,
        &input,
        &["--id-column", "score"],
        2,
        &[
            "error: id column `score` has the name of an output column; rename it or leave it out of `--id-column`"
                .to_string(),
        ],
    );
}
