//! The library inside another program: runs called in-process, not through
//! the binary. Two runs at once in one process keep to themselves (their
//! outputs, models, cancel tokens), and a cancelled run stops at its next
//! row group and publishes nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use lakescore::cancel::{CancelToken, StopReason, Stopped};
use lakescore::commit::{LocalOutput, RunStatus, WriteMode};
use lakescore::model::LoadOptions;
use lakescore::package::{self, Package};
use lakescore::pipeline::{self, IN_FLIGHT_PER_THREAD, RunOptions};
use lakescore::progress::Progress;
use lakescore::source::{LocalTable, MmapChoice};

use crate::common::*;

/// A local table, read without mapping (the library's default).
fn table(path: &Path) -> LocalTable {
    LocalTable::new(path, MmapChoice::never())
}

fn open(model: &Path) -> Package {
    package::open(model, &candle_core::Device::Cpu, &LoadOptions::default()).expect("the model opens")
}

#[test]
fn two_runs_in_one_process_at_once_each_score_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample");
    let lake = sample.join("customers");
    let (logistic, trees) = (sample.join("model.json"), sample.join("xgb.ubj"));

    // What the binary publishes for each model: the reference.
    let cli_out = |name: &str, model: &Path| {
        let out = dir.path().join(format!("cli-{name}"));
        score(model, &lake, &out, &["--threads", "2"]).assert_ok();
        parquet_rows(&out)
    };
    let expected_logistic = cli_out("logistic", &logistic);
    let expected_trees = cli_out("trees", &trees);

    let (logistic_pkg, trees_pkg) = (open(&logistic), open(&trees));
    let run = |package: &Package, out: &Path| {
        let options = RunOptions {
            threads: 2,
            ..RunOptions::default()
        };
        pipeline::score(
            package,
            &table(&lake),
            &LocalOutput::new(out),
            WriteMode::ErrorIfExists,
            &options,
            &|| {},
        )
    };
    let (out_logistic, out_trees) = (dir.path().join("embedded-logistic"), dir.path().join("embedded-trees"));
    std::thread::scope(|scope| {
        let a = scope.spawn(|| run(&logistic_pkg, &out_logistic));
        let b = scope.spawn(|| run(&trees_pkg, &out_trees));
        for report in [a.join().unwrap(), b.join().unwrap()] {
            let report = report.expect("each run succeeds");
            assert_eq!(report.status, RunStatus::Succeeded);
            assert!(report.rows_scored > 0);
        }
    });
    assert_eq!(
        parquet_rows(&out_logistic),
        expected_logistic,
        "the logistic run's output is the CLI's"
    );
    assert_eq!(
        parquet_rows(&out_trees),
        expected_trees,
        "the tree run's output is the CLI's"
    );
    assert!(out_logistic.join("_SUCCESS").is_file() && out_trees.join("_SUCCESS").is_file());
}

/// Triggers its token once the writer has taken `after_rows` rows, and
/// counts every row it is told about.
struct CancelAfter {
    token: CancelToken,
    after_rows: u64,
    rows: AtomicU64,
}

impl Progress for CancelAfter {
    fn begin(&self, _total_rows: u64) {
        if self.after_rows == 0 {
            self.token.cancel();
        }
    }
    fn advance(&self, rows: u64) {
        let seen = self.rows.fetch_add(rows, Ordering::SeqCst) + rows;
        if seen >= self.after_rows {
            self.token.cancel();
        }
    }
    fn finish(&self) {}
}

#[test]
fn a_cancelled_run_stops_at_the_next_row_group_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // 60 row groups of 1,000 rows.
    let lake = customer_lake(
        &dir.path().join("lake"),
        60_000,
        3,
        1_000,
        &["2026-11-24", "2026-11-25"],
    );
    let package = open(&linear_model(dir.path(), "m.json", logistic_model_body(None)));
    let threads = 2;
    for after_rows in [0, 1_000] {
        let token = CancelToken::new();
        let progress = Arc::new(CancelAfter {
            token: token.clone(),
            after_rows,
            rows: AtomicU64::new(0),
        });
        let options = RunOptions {
            threads,
            cancel: token,
            progress: Some(progress.clone()),
            ..RunOptions::default()
        };
        let out = dir.path().join(format!("out-{after_rows}"));
        let error = pipeline::score(
            &package,
            &table(&lake),
            &LocalOutput::new(&out),
            WriteMode::ErrorIfExists,
            &options,
            &|| {},
        )
        .expect_err("a cancelled run fails");
        assert!(
            matches!(error, lakescore::Error::Stopped(Stopped { by: StopReason::Caller })),
            "{error}"
        );
        assert_eq!(
            error.to_string(),
            "stopped by the caller: the run published nothing (its staged files are removed)"
        );
        // Workers look at the token before each row group: once it is
        // triggered, no worker starts another, so the writer sees at most the
        // row groups already under way or waiting for it.
        let written = progress.rows.load(Ordering::SeqCst);
        let bound = after_rows + (IN_FLIGHT_PER_THREAD * threads) as u64 * 1_000;
        assert!(
            written <= bound,
            "{written} rows written after a cancel at {after_rows} (bound {bound})"
        );
        assert!(parquet_files(&out).is_empty(), "nothing published");
        assert!(!out.join("_SUCCESS").exists());
        let staging = out.join("_lakescore/staging");
        assert!(
            !staging.exists() || std::fs::read_dir(&staging).unwrap().next().is_none(),
            "staged files removed"
        );
        let runs = lakescore::runs::list(&out).expect("the ledger reads");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].record.status, RunStatus::Interrupted);
    }
}
