//! What runs tell: `--report` JSON (also on failure), `lakescore bench` as a
//! table and as JSON, and the exit codes in `--help`.

use crate::common::*;

#[test]
fn the_run_report_counts_rows_files_and_stages() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 4_000, 2, 1_000, &["2026-11-25"]);
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let out = dir.path().join("out");
    let report_path = dir.path().join("report.json");
    score(
        &model,
        &lake,
        &out,
        &["--report", report_path.to_str().unwrap(), "--threads", "2"],
    )
    .assert_ok();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["rows"], 4_000);
    assert_eq!(report["rows_scored"], 4_000);
    assert_eq!(report["files"], 2);
    assert_eq!(report["row_groups"], 4);
    assert_eq!(report["threads"], 2);
    assert_eq!(report["device"], "cpu");
    assert_eq!(report["model"]["name"], "propensity");
    assert!(report["peak_rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(report["rows_per_second"].as_f64().unwrap() > 0.0);
    for stage in ["decode", "features", "model", "encode", "write"] {
        assert!(report["stage_seconds"][stage].as_f64().unwrap() > 0.0, "{stage}");
    }
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(report["run_id"], manifest["run_id"]);
}

#[test]
fn a_failed_run_still_writes_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 1_000, 1, 1_000, &["2026-11-25"]);
    let model = linear_model(
        dir.path(),
        "m.json",
        serde_json::json!({"format": "linear", "features": ["nope"], "weights": [1], "intercept": 0}),
    );
    let report_path = dir.path().join("report.json");
    let run = score(
        &model,
        &lake,
        &dir.path().join("out"),
        &["--report", report_path.to_str().unwrap()],
    );
    assert_eq!(run.code, 1);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["exit_code"], 1);
    assert!(
        report["error"][0]
            .as_str()
            .unwrap()
            .starts_with("model feature `nope` has no column")
    );
}

#[test]
fn a_model_that_does_not_load_still_gets_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 100, 1, 100, &["2026-11-25"]);
    let model = dir.path().join("model.json");
    std::fs::write(&model, "not json").unwrap();
    let report_path = dir.path().join("report.json");
    let run = score(
        &model,
        &lake,
        &dir.path().join("out"),
        &["--report", report_path.to_str().unwrap()],
    );
    assert_eq!(run.code, 1);
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report_path).unwrap()).unwrap();
    assert_eq!(report["status"], "failed");
    assert!(report["error"][0].as_str().unwrap().starts_with("model file `"));
}

#[test]
fn bench_prints_stages_as_a_table_and_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 3_000, 1, 1_000, &["2026-11-25"]);
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let base = [
        "bench",
        "--model",
        model.to_str().unwrap(),
        "--input",
        lake.to_str().unwrap(),
        "--threads",
        "1",
    ];

    let table = lakescore(base);
    table.assert_ok();
    assert!(
        table
            .stdout
            .starts_with("model propensity (linear), 3,000 rows, 1 files, 3 row groups, 1 threads"),
        "{}",
        table.stdout
    );
    for stage in ["decode", "features", "model", "encode", "write"] {
        assert!(
            table.stdout.lines().any(|l| l.starts_with(stage)),
            "{stage} in\n{}",
            table.stdout
        );
    }
    assert!(table.stdout.contains("rows/s"));

    let json = lakescore(base.iter().copied().chain(["--json", "--no-write"]));
    json.assert_ok();
    let report: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["rows"], 3_000);
    assert_eq!(report["threads"], 1);
    assert_eq!(report["stage_seconds"]["encode"], 0.0);
    assert_eq!(report["stage_seconds"]["write"], 0.0);
    assert_eq!(report["bytes_written"], 0);
    assert!(report["stage_seconds"]["decode"].as_f64().unwrap() > 0.0);
}

#[test]
fn help_documents_the_exit_codes() {
    for args in [vec!["--help"], vec!["score", "--help"]] {
        let run = lakescore(&args);
        run.assert_ok();
        for line in [
            "0    done",
            "1    failed",
            "2    usage",
            "3    a data contract, guard or drift threshold said no",
            "4    an SLA was missed",
            "5    another run holds the output's lock",
            "130  stopped by SIGINT, 143 by SIGTERM",
        ] {
            assert!(run.stdout.contains(line), "{args:?} lacks {line}");
        }
    }
    let run = lakescore(["score", "--model", "m.json"]);
    assert_eq!(run.code, 2, "a usage error");
}
