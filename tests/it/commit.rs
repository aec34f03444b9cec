//! The commit promises: modes `error-if-exists`, `overwrite` and `resume`; a
//! run stopped after k partitions resumes to byte-identical output; the same
//! inputs give the same bytes; the manifest and the run ledger tell the truth.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::common::*;

fn lake_and_model(root: &Path) -> (PathBuf, PathBuf) {
    let lake = customer_lake(
        &root.join("lake"),
        6_000,
        2,
        700,
        &["2026-11-23", "2026-11-24", "2026-11-25"],
    );
    let model = linear_model(root, "model.json", logistic_model_body(None));
    (lake, model)
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap()
}

#[test]
fn same_inputs_give_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    score(&model, &lake, &a, &[]).assert_ok();
    score(&model, &lake, &b, &[]).assert_ok();
    assert_eq!(data_files(&a).len(), 6);
    assert_eq!(data_files(&a), data_files(&b));
}

#[test]
fn error_if_exists_refuses_a_published_output() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let before = snapshot(&out);
    let run = score(&model, &lake, &out, &[]);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.error_lines(),
        [format!(
            "error: output `{}` already holds a table; pass `--mode overwrite` to replace its partitions or \
             `--mode resume` to finish an interrupted run",
            out.display()
        )]
    );
    assert_eq!(snapshot(&out), before);
}

#[test]
fn overwrite_replaces_the_partitions_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    // An extra partition from an earlier day, which this run does not write.
    std::fs::create_dir_all(out.join("dt=2026-11-01")).unwrap();
    std::fs::write(out.join("dt=2026-11-01/part-00000.parquet"), "older").unwrap();
    // A stale file inside a partition this run does write.
    std::fs::write(out.join("dt=2026-11-25/part-00009.parquet"), "stale").unwrap();

    let other = linear_model(
        dir.path(),
        "other.json",
        serde_json::json!({"format": "linear", "name": "other", "features": ["orders_30d"], "weights": [1.0], "intercept": 0.0}),
    );
    score(&other, &lake, &out, &["--mode", "overwrite"]).assert_ok();
    for relative in parquet_files(&lake) {
        let input = read_parquet(&lake.join(&relative));
        let output = read_parquet(&out.join(&relative));
        let expected: Vec<f32> = column_f64(&input, "orders_30d")
            .iter()
            .map(|v| v.unwrap() as f32)
            .collect();
        assert_eq!(scores(&output, "score"), expected);
    }
    assert!(
        !out.join("dt=2026-11-25/part-00009.parquet").exists(),
        "a replaced partition is replaced whole"
    );
    assert_eq!(
        std::fs::read(out.join("dt=2026-11-01/part-00000.parquet")).unwrap(),
        b"older"
    );
    assert_eq!(manifest(&out)["model"]["name"], "other");
}

#[test]
fn a_run_stopped_after_k_partitions_resumes_to_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let reference = dir.path().join("reference");
    score(&model, &lake, &reference, &[]).assert_ok();

    for k in 0..3 {
        let out = dir.path().join(format!("out-{k}"));
        let args = score_args(&model, &lake, &out, &[]);
        let crashed = lakescore_with_env(&args, &[("LAKESCORE_TEST_CRASH_BEFORE_PARTITION", &k.to_string())]);
        assert_eq!(crashed.code, 137, "the test hook stops the run: {}", crashed.stderr);
        // What is visible is k whole partitions and no manifest.
        assert!(!out.join("_SUCCESS").exists());
        let visible = parquet_files(&out);
        assert_eq!(visible.len(), 2 * k, "{visible:?}");
        for relative in &visible {
            assert_eq!(
                std::fs::read(out.join(relative)).unwrap(),
                std::fs::read(reference.join(relative)).unwrap()
            );
        }
        let inodes: Vec<u64> = visible
            .iter()
            .map(|p| std::fs::metadata(out.join(p)).unwrap().ino())
            .collect();

        // The default mode refuses a half-written table once it shows data.
        if k > 0 {
            assert_eq!(score(&model, &lake, &out, &[]).code, 1);
        }
        let resumed = score(&model, &lake, &out, &["--mode", "resume"]);
        resumed.assert_ok();
        assert_eq!(data_files(&out), data_files(&reference), "k = {k}");
        let kept: Vec<u64> = visible
            .iter()
            .map(|p| std::fs::metadata(out.join(p)).unwrap().ino())
            .collect();
        assert_eq!(kept, inodes, "committed partitions are skipped, not rewritten");
        assert_eq!(manifest(&out)["reused_partitions"].as_array().unwrap().len(), k);
        assert_eq!(std::fs::read_dir(out.join("_lakescore/staging")).unwrap().count(), 0);
    }
}

#[test]
fn resume_rescores_partitions_of_another_model() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let other = linear_model(
        dir.path(),
        "other.json",
        serde_json::json!({"format": "linear", "features": ["orders_30d"], "weights": [1.0], "intercept": 0.0}),
    );
    score(&other, &lake, &out, &["--mode", "resume"]).assert_ok();
    assert_eq!(manifest(&out)["reused_partitions"].as_array().unwrap().len(), 0);
    let reference = dir.path().join("reference");
    score(&other, &lake, &reference, &[]).assert_ok();
    assert_eq!(data_files(&out), data_files(&reference));
}

#[test]
fn a_crash_between_files_and_record_never_reuses_the_wrong_scores() {
    // Model A commits every partition; a run of model B replaces the first
    // partition's files and dies before recording it. Resuming model A must
    // score that partition again, not trust A's old record for B's files.
    let dir = tempfile::tempdir().unwrap();
    let (lake, _) = lake_and_model(dir.path());
    // Constant scores: the two models' files differ in content, not in size.
    let constant = |name: &str, value: f64| {
        let body = serde_json::json!({"format": "linear", "features": ["age"], "weights": [0.0], "intercept": value});
        linear_model(dir.path(), name, body)
    };
    let (model_a, model_b) = (constant("a.json", 1.0), constant("b.json", 2.0));
    let reference = dir.path().join("reference");
    score(&model_a, &lake, &reference, &[]).assert_ok();

    let out = dir.path().join("out");
    score(&model_a, &lake, &out, &[]).assert_ok();
    let crashed = lakescore_with_env(
        score_args(&model_b, &lake, &out, &["--mode", "overwrite"]),
        &[("LAKESCORE_TEST_CRASH_BEFORE_RECORD", "0")],
    );
    assert_eq!(crashed.code, 137, "{}", crashed.stderr);
    let first = PathBuf::from("dt=2026-11-23/part-00000.parquet");
    assert_ne!(
        std::fs::read(out.join(&first)).unwrap(),
        std::fs::read(reference.join(&first)).unwrap()
    );
    assert_eq!(
        std::fs::metadata(out.join(&first)).unwrap().len(),
        std::fs::metadata(reference.join(&first)).unwrap().len(),
        "same sizes: only the record can tell the two apart"
    );

    score(&model_a, &lake, &out, &["--mode", "resume"]).assert_ok();
    assert_eq!(data_files(&out), data_files(&reference));
    assert_eq!(manifest(&out)["reused_partitions"].as_array().unwrap().len(), 2);
}

#[test]
fn overwrite_keeps_partitions_nested_below_the_ones_it_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let nested = out.join("dt=2026-11-25/hour=03/part-00000.parquet");
    std::fs::create_dir_all(nested.parent().unwrap()).unwrap();
    std::fs::write(&nested, "another job's").unwrap();
    score(&model, &lake, &out, &["--mode", "overwrite"]).assert_ok();
    assert_eq!(std::fs::read(&nested).unwrap(), b"another job's");
    let reference = dir.path().join("reference");
    score(&model, &lake, &reference, &[]).assert_ok();
    for relative in parquet_files(&reference) {
        assert_eq!(
            std::fs::read(out.join(&relative)).unwrap(),
            std::fs::read(reference.join(&relative)).unwrap()
        );
    }
}

#[test]
fn the_manifest_and_the_ledger_describe_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model) = lake_and_model(dir.path());
    let out = dir.path().join("out");
    score(&model, &lake, &out, &[]).assert_ok();
    let m = manifest(&out);
    let model_bytes = std::fs::read(&model).unwrap();
    assert_eq!(m["model"]["sha256"], lakescore::util::sha256_hex(&model_bytes));
    assert_eq!(m["model"]["name"], "propensity");
    assert_eq!(m["model"]["version"], "7");
    assert_eq!(m["model"]["format"], "linear");
    assert_eq!(m["lakescore_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["rows"], 6_000);
    assert_eq!(m["id_columns"], serde_json::json!(["customer_id"]));
    assert_eq!(m["score_columns"], serde_json::json!(["score"]));
    let inputs = m["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 6);
    for input in inputs {
        let path = lake.join(input["path"].as_str().unwrap());
        assert_eq!(input["bytes"], std::fs::metadata(&path).unwrap().len());
        assert_eq!(input["footer_sha256"].as_str().unwrap().len(), 64);
        assert_eq!(input["partition"][0][0], "dt");
    }
    let outputs = m["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 6);
    let mut rows = 0;
    for output in outputs {
        let path = out.join(output["path"].as_str().unwrap());
        assert_eq!(output["bytes"], std::fs::metadata(&path).unwrap().len());
        assert_eq!(output["rows"], read_parquet(&path).num_rows());
        rows += output["rows"].as_u64().unwrap();
    }
    assert_eq!(rows, 6_000);

    let ledger: Vec<PathBuf> = std::fs::read_dir(out.join("_lakescore/runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(ledger.len(), 1);
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&ledger[0]).unwrap()).unwrap();
    assert_eq!(record["run_id"], m["run_id"]);
    assert_eq!(record["status"], "succeeded");
    assert_eq!(record["rows"], 6_000);
    assert!(record["finished_at"].as_str().unwrap().ends_with('Z'));
}

/// Crashes a run of `first` after its first partition is published, resumes
/// with `second`, and checks the output is that of a clean run of `second`,
/// with nothing reused.
fn assert_resume_rescores(root: &Path, first: (&Path, &[&str]), second: (&Path, &[&str])) {
    let lake = sample("customers");
    let out = root.join("out");
    let crashed = lakescore_with_env(
        score_args(first.0, &lake, &out, first.1),
        &[("LAKESCORE_TEST_CRASH_BEFORE_PARTITION", "1")],
    );
    assert_eq!(crashed.code, 137, "{}", crashed.stderr);
    assert_eq!(parquet_files(&out).len(), 2, "one partition of two files is published");
    let crashed_files = data_files(&out);

    let mut resume_args = second.1.to_vec();
    resume_args.extend(["--mode", "resume"]);
    score(second.0, &lake, &out, &resume_args).assert_ok();
    assert_eq!(manifest(&out)["reused_partitions"].as_array().unwrap().len(), 0);
    let clean = root.join("clean");
    score(second.0, &lake, &clean, second.1).assert_ok();
    let clean_files = data_files(&clean);
    assert_eq!(data_files(&out), clean_files);
    for (path, bytes) in &crashed_files {
        assert_ne!(
            &clean_files[path],
            bytes,
            "the change of options changes {}",
            path.display()
        );
    }
}

#[test]
fn resume_rescores_partitions_written_with_or_without_output_margin() {
    let model = sample("xgb.ubj");
    for (first, second) in [(&["--output-margin"][..], &[][..]), (&[][..], &["--output-margin"][..])] {
        let dir = tempfile::tempdir().unwrap();
        assert_resume_rescores(dir.path(), (&model, first), (&model, second));
    }
}

#[test]
fn resume_rescores_partitions_written_under_another_contract() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let folder = dir.path().join(name);
        std::fs::create_dir_all(&folder).unwrap();
        for entry in std::fs::read_dir(sample("package")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        folder
    };
    let before = copy("before");
    // The same model with a narrower quarantine range for `age`: other rows
    // are published.
    let after = copy("after");
    let manifest_path = after.join("lakescore.toml");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    assert!(text.contains("min = 18.0\nmax = 94.0"), "the sample's age rule moved");
    std::fs::write(
        &manifest_path,
        text.replace("min = 18.0\nmax = 94.0", "min = 18.0\nmax = 70.0"),
    )
    .unwrap();
    assert_resume_rescores(dir.path(), (&before, &[]), (&after, &[]));
}

/// `chattr +i` on `path`, or `false` where it cannot be done: a filesystem
/// without the flag (the test then says it is skipped), or, outside CI, a
/// user who is not root. CI runs as root, so there only the filesystem may
/// say no.
fn make_immutable(path: &Path) -> bool {
    let output = std::process::Command::new("chattr").arg("+i").arg(path).output();
    let Ok(output) = output else {
        assert!(!in_ci(), "CI has chattr (e2fsprogs)");
        return false;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let unsupported = stderr.contains("not supported") || stderr.contains("Inappropriate ioctl");
    assert!(
        output.status.success() || unsupported || !in_ci(),
        "CI runs as root: {stderr}"
    );
    output.status.success()
}

fn make_all_mutable(dir: &Path) {
    let status = std::process::Command::new("chattr")
        .args(["-R", "-i"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn overwrite_that_cannot_remove_a_replaced_partition_still_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (lake, model_a) = lake_and_model(dir.path());
    let model_b = linear_model(
        dir.path(),
        "b.json",
        serde_json::json!({"format": "linear", "features": ["orders_30d"], "weights": [1.0], "intercept": 0.0}),
    );
    let out = dir.path().join("out");
    score(&model_a, &lake, &out, &[]).assert_ok();
    let held = out.join("dt=2026-11-24/part-00000.parquet");
    if !make_immutable(&held) {
        eprintln!("skipped: chattr +i is not available here");
        return;
    }
    let run = score(&model_b, &lake, &out, &["--mode", "overwrite"]);
    make_all_mutable(&out);
    run.assert_ok();
    assert!(
        run.stderr.contains("cannot remove the replaced version of a partition"),
        "{}",
        run.stderr
    );
    let clean = dir.path().join("clean");
    score(&model_b, &lake, &clean, &[]).assert_ok();
    assert_eq!(
        data_files(&out),
        data_files(&clean),
        "every partition is the new model's"
    );
    assert_eq!(manifest(&out)["model"]["name"], "b");

    // The old copy waited in staging; the next run removes it.
    assert_ne!(std::fs::read_dir(out.join("_lakescore/staging")).unwrap().count(), 0);
    score(&model_b, &lake, &out, &["--mode", "overwrite"]).assert_ok();
    assert_eq!(std::fs::read_dir(out.join("_lakescore/staging")).unwrap().count(), 0);
    assert_eq!(data_files(&out), data_files(&clean));
}
