//! Scores published as a Delta table (`--output-format delta`): read back
//! through delta_kernel (lakescore's own Delta reader) they equal the
//! Parquet output; one commit per run; overwrite replaces only the run's
//! partitions; a kill before or after the commit and `--mode resume` make
//! exactly one new version; another writer's commit meanwhile is merged when
//! it touches other partitions and is a clear failure when it touches the
//! run's. (The Python `deltalake` package and Polars read the same tables
//! back in CI: `tests/python/test_delta_output.py`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use arrow::array::{Array, Float64Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use lakescore::source::delta::DeltaTable;
use lakescore::source::{MmapChoice, TableSource, TableVersion};

use crate::common::*;
use crate::delta::rows_by_partition;

fn sample_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/model.json")
}

fn sample_lake() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample/customers")
}

/// The rows of a Delta table's snapshot by partition, as delta_kernel lists
/// its files: `(customer_id, score bits)`, sorted.
pub fn delta_rows(table: &Path, version: TableVersion) -> BTreeMap<PathBuf, Vec<(i64, u64)>> {
    let delta = DeltaTable::open_local(table, version, MmapChoice::never()).expect("the log is valid");
    let mut rows: BTreeMap<PathBuf, Vec<(i64, u64)>> = BTreeMap::new();
    for file in delta.list().unwrap() {
        let batch = read_parquet(&file.location);
        let score = cast(batch.column_by_name("score").unwrap(), &DataType::Float64).unwrap();
        let score = score.as_any().downcast_ref::<Float64Array>().unwrap();
        let entry = rows
            .entry(file.relative_path.parent().unwrap().to_path_buf())
            .or_default();
        for (id, row) in ids(&batch).into_iter().zip(0..score.len()) {
            entry.push((id, score.value(row).to_bits()));
        }
    }
    for list in rows.values_mut() {
        list.sort_unstable();
    }
    rows
}

fn latest_version(table: &Path) -> u64 {
    DeltaTable::open_local(table, TableVersion::Latest, MmapChoice::never())
        .unwrap()
        .version()
}

/// The commit of `version`, one JSON value per action.
fn commit(table: &Path, version: u64) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(table.join(format!("_delta_log/{version:020}.json"))).unwrap();
    text.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn log_versions(table: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(table.join("_delta_log"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The sample lake, one of its partitions only.
fn one_partition(dir: &Path, date: &str) -> PathBuf {
    let lake = dir.join(format!("only-{date}"));
    let from = sample_lake().join(format!("dt={date}"));
    std::fs::create_dir_all(lake.join(format!("dt={date}"))).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), lake.join(format!("dt={date}")).join(entry.file_name())).unwrap();
    }
    lake
}

/// Scores `lake` with the sample model into `out`, `extra` added; asserts
/// success and returns the run's report.
fn score_reported(lake: &Path, out: &Path, extra: &[&str]) -> serde_json::Value {
    let report = out.with_extension("report.json");
    let report_text = report.to_string_lossy().into_owned();
    let args = [extra, &["--report", &report_text]].concat();
    score(&sample_model(), lake, out, &args).assert_ok();
    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap()
}

#[test]
fn scores_published_as_delta_read_back_like_the_parquet_output_one_commit_per_run() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    score(&sample_model(), &sample_lake(), &plain, &[]).assert_ok();
    let expected = rows_by_partition(&plain);

    let out = dir.path().join("delta");
    let report = score_reported(&sample_lake(), &out, &["--output-format", "delta"]);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);
    assert_eq!(log_versions(&out), vec!["00000000000000000000.json"]);
    assert_eq!(report["output_snapshot"], "delta version 0", "{report}");
    assert!(
        !out.join("_SUCCESS").exists(),
        "the log, not _SUCCESS, marks a Delta table complete"
    );

    // The commit: lakescore and the run named, a new table's protocol and
    // schema, one add per file with its statistics.
    let actions = commit(&out, 0);
    let info = &actions[0]["commitInfo"];
    assert_eq!(info["lakescore"]["runId"], report["run_id"], "{info}");
    assert!(info["engineInfo"].as_str().unwrap().starts_with("lakescore/"));
    let metadata = actions.iter().find_map(|a| a.get("metaData")).unwrap();
    assert_eq!(metadata["partitionColumns"], serde_json::json!(["dt"]));
    let schema: serde_json::Value = serde_json::from_str(metadata["schemaString"].as_str().unwrap()).unwrap();
    let columns: Vec<(&str, &str)> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["type"].as_str().unwrap()))
        .collect();
    assert_eq!(columns, [("customer_id", "long"), ("score", "float"), ("dt", "string")]);
    let adds: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("add")).collect();
    assert_eq!(adds.len(), 4);
    let mut rows = 0;
    for add in &adds {
        let path = add["path"].as_str().unwrap();
        let run_id = report["run_id"].as_str().unwrap();
        assert!(path.ends_with(&format!("-{run_id}.parquet")), "{path}");
        assert_eq!(add["size"], std::fs::metadata(out.join(path)).unwrap().len());
        let stats: serde_json::Value = serde_json::from_str(add["stats"].as_str().unwrap()).unwrap();
        let in_file = read_parquet(&out.join(path));
        assert_eq!(stats["numRecords"], in_file.num_rows());
        let ids = ids(&in_file);
        assert_eq!(stats["minValues"]["customer_id"], *ids.iter().min().unwrap());
        assert_eq!(stats["maxValues"]["customer_id"], *ids.iter().max().unwrap());
        assert_eq!(stats["nullCount"]["score"], 0);
        let scores = scores(&in_file, "score");
        let low = scores.iter().copied().fold(f32::INFINITY, f32::min);
        assert_eq!(stats["minValues"]["score"].as_f64().unwrap() as f32, low);
        rows += in_file.num_rows();
    }
    assert_eq!(rows as u64, report["rows"].as_u64().unwrap());

    // A second run into the table, without `--output-format`: the table is
    // found to be Delta, and error-if-exists refuses it.
    let again = score(&sample_model(), &sample_lake(), &out, &[]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already holds a table"), "{}", again.stderr);
    let parquet = score(
        &sample_model(),
        &sample_lake(),
        &out,
        &["--output-format", "parquet", "--mode", "overwrite"],
    );
    assert_eq!(parquet.code, 2, "{}", parquet.stderr);
    assert!(parquet.stderr.contains("is a Delta table"), "{}", parquet.stderr);
    assert_eq!(log_versions(&out).len(), 1);

    // Overwrite with one partition's input: version 1 replaces that
    // partition's files and keeps the other's.
    let lake = one_partition(dir.path(), "2026-11-25");
    score(&sample_model(), &lake, &out, &["--mode", "overwrite"]).assert_ok();
    assert_eq!(latest_version(&out), 1);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);
    let actions = commit(&out, 1);
    let removed: Vec<&str> = actions
        .iter()
        .filter_map(|a| a.get("remove"))
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert_eq!(removed.len(), 2);
    assert!(removed.iter().all(|p| p.starts_with("dt=2026-11-25/")), "{removed:?}");
    // Version 0 still reads as it was: its files stay on disk.
    assert_eq!(delta_rows(&out, TableVersion::At(0)), expected);
}

#[test]
fn a_kill_before_or_after_the_commit_then_resume_makes_exactly_one_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain");
    score(&sample_model(), &sample_lake(), &plain, &[]).assert_ok();
    let expected = rows_by_partition(&plain);
    // The run that would create the table, killed before its commit: no
    // table yet, its files placed; resume creates it, once.
    let out = dir.path().join("first");
    let killed = lakescore_with_env(
        score_args(&sample_model(), &sample_lake(), &out, &["--output-format", "delta"]),
        &[(lakescore::test_hooks::CRASH_AT_DELTA_COMMIT, "before")],
    );
    assert_eq!(killed.code, 137, "{}", killed.stderr);
    assert!(!out.join("_delta_log").exists());
    // (The table a run began is Delta without the flag.)
    score(&sample_model(), &sample_lake(), &out, &["--mode", "resume"]).assert_ok();
    assert_eq!(log_versions(&out), vec!["00000000000000000000.json"]);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);

    // Killed while placing files (the first partition placed and recorded,
    // the second not): resume reuses the first, scores the second, and
    // commits both, once.
    let out = dir.path().join("placing");
    let killed = lakescore_with_env(
        score_args(&sample_model(), &sample_lake(), &out, &["--output-format", "delta"]),
        &[(lakescore::test_hooks::CRASH_BEFORE_PARTITION, "1")],
    );
    assert_eq!(killed.code, 137, "{}", killed.stderr);
    let report = score_reported(&sample_lake(), &out, &["--mode", "resume"]);
    assert_eq!(report["reused_partitions"], 1, "{report}");
    assert_eq!(log_versions(&out), vec!["00000000000000000000.json"]);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);

    for moment in ["before", "after"] {
        let out = dir.path().join(moment);
        // A first, clean version, then an overwrite killed at the commit.
        score(&sample_model(), &sample_lake(), &out, &["--output-format", "delta"]).assert_ok();
        let killed = lakescore_with_env(
            score_args(&sample_model(), &sample_lake(), &out, &["--mode", "overwrite"]),
            &[(lakescore::test_hooks::CRASH_AT_DELTA_COMMIT, moment)],
        );
        assert_eq!(killed.code, 137, "{}", killed.stderr);
        let versions = match moment {
            "before" => 1,
            _ => 2,
        };
        assert_eq!(log_versions(&out).len(), versions, "{moment}");
        assert_eq!(delta_rows(&out, TableVersion::Latest), expected, "{moment}");

        let report = score_reported(&sample_lake(), &out, &["--mode", "resume"]);
        assert_eq!(report["reused_partitions"], 2, "{moment}: {report}");
        assert_eq!(report["output_snapshot"], "delta version 1", "{moment}: {report}");
        // Exactly one version more than the clean run's, whenever the kill came.
        assert_eq!(log_versions(&out).len(), 2, "{moment}: {:?}", log_versions(&out));
        assert_eq!(delta_rows(&out, TableVersion::Latest), expected, "{moment}");
        // The new version holds the killed run's files, not the first run's.
        let first: Vec<String> = commit(&out, 0)
            .iter()
            .filter_map(|a| a.get("add"))
            .map(|a| a["path"].as_str().unwrap().to_string())
            .collect();
        let live = DeltaTable::open_local(&out, TableVersion::Latest, MmapChoice::never())
            .unwrap()
            .list()
            .unwrap();
        assert!(
            live.iter().all(|f| !first.iter().any(|p| f.location.ends_with(p))),
            "{moment}"
        );
    }
}

/// Commits `version` as another writer would: one file (a copy of `source`)
/// added in partition `dt`.
fn commit_as_another_writer(table: &Path, version: u64, source: &Path, dt: &str) {
    let name = format!("dt={dt}/other-writer-{version}.parquet");
    std::fs::create_dir_all(table.join(format!("dt={dt}"))).unwrap();
    std::fs::copy(source, table.join(&name)).unwrap();
    let size = std::fs::metadata(table.join(&name)).unwrap().len();
    let actions = [
        serde_json::json!({"commitInfo": {"timestamp": 1, "operation": "WRITE", "engineInfo": "another-writer"}}),
        serde_json::json!({"add": {"path": name, "partitionValues": {"dt": dt}, "size": size,
            "modificationTime": 1, "dataChange": true}}),
    ];
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    let path = table.join(format!("_delta_log/{version:020}.json"));
    assert!(!path.exists(), "version {version} is free");
    std::fs::write(path, text).unwrap();
}

/// Waits until the slow run's log says it is about to commit.
fn wait_for_commit_attempt(child: &mut std::process::Child, table: &Path) {
    // Staged files placed means the commit is next (and delayed by the hook).
    let started = std::time::Instant::now();
    while !std::fs::read_dir(table.join("_lakescore/delta")).is_ok_and(|mut d| d.next().is_some())
        || std::fs::read_dir(table.join("_lakescore/partitions")).map_or(0, |d| d.count()) < 1
    {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before committing");
        assert!(started.elapsed().as_secs() < 120, "the run never reached its commit");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn another_writers_commit_meanwhile_is_merged_in_other_partitions_and_a_conflict_in_the_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table");
    let lake = one_partition(dir.path(), "2026-11-25");
    score(&sample_model(), &lake, &out, &["--output-format", "delta"]).assert_ok();
    let any_file = parquet_files(&out).into_iter().next().map(|f| out.join(f)).unwrap();
    let expected_run = delta_rows(&out, TableVersion::Latest);

    let slow = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lakescore"))
            .args(score_args(&sample_model(), &lake, &out, extra))
            .env(lakescore::test_hooks::DELTA_COMMIT_DELAY_MS, "1500")
            .env_remove("LAKESCORE_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let finish = |child: std::process::Child| {
        let output = child.wait_with_output().unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    // Another partition: both commits land, the run's at the next version.
    std::fs::remove_dir_all(out.join("_lakescore/delta")).unwrap();
    let mut child = slow(&["--mode", "overwrite"]);
    wait_for_commit_attempt(&mut child, &out);
    commit_as_another_writer(&out, 1, &any_file, "2030-01-01");
    let (code, stderr) = finish(child);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(latest_version(&out), 2);
    let rows = delta_rows(&out, TableVersion::Latest);
    assert_eq!(
        rows[Path::new("dt=2026-11-25")],
        expected_run[Path::new("dt=2026-11-25")]
    );
    assert!(
        rows.contains_key(Path::new("dt=2030-01-01")),
        "the other writer's file stays"
    );
    assert_eq!(
        commit(&out, 2)[0]["commitInfo"]["engineInfo"]
            .as_str()
            .unwrap()
            .split('/')
            .next(),
        Some("lakescore")
    );

    // The run's own partition: the run fails, naming the version and the
    // partition, and the log stays as the other writer left it.
    std::fs::remove_dir_all(out.join("_lakescore/delta")).unwrap();
    let mut child = slow(&["--mode", "overwrite"]);
    wait_for_commit_attempt(&mut child, &out);
    commit_as_another_writer(&out, 3, &any_file, "2026-11-25");
    let (code, stderr) = finish(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("version 3") && stderr.contains("dt=2026-11-25") && stderr.contains("committed nothing"),
        "{stderr}"
    );
    assert_eq!(latest_version(&out), 3);
    assert!(
        delta_rows(&out, TableVersion::Latest)[Path::new("dt=2026-11-25")].len()
            > expected_run[Path::new("dt=2026-11-25")].len()
    );
}

#[test]
fn what_a_delta_output_cannot_take_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    // A folder of plain Parquet output is not turned into a Delta table.
    let out = dir.path().join("plain");
    score(&sample_model(), &sample_lake(), &out, &[]).assert_ok();
    let before = snapshot(&out);
    let run = score(
        &sample_model(),
        &sample_lake(),
        &out,
        &["--output-format", "delta", "--mode", "overwrite"],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("no Delta log"), "{}", run.stderr);
    assert!(!out.join("_delta_log").exists());
    let after = snapshot(&out);
    assert_eq!(
        before
            .keys()
            .filter(|p| !p.starts_with("_lakescore"))
            .collect::<Vec<_>>(),
        after
            .keys()
            .filter(|p| !p.starts_with("_lakescore"))
            .collect::<Vec<_>>()
    );

    // A Delta table with other columns: refused naming both, nothing committed.
    let table = dir.path().join("other-columns");
    score(&sample_model(), &sample_lake(), &table, &["--output-format", "delta"]).assert_ok();
    let schema_of = |version| {
        let actions = commit(&table, version);
        actions.iter().find_map(|a| a.get("metaData")).cloned()
    };
    let mut actions = commit(&table, 0);
    for action in &mut actions {
        if let Some(metadata) = action.get_mut("metaData") {
            let text = metadata["schemaString"]
                .as_str()
                .unwrap()
                .replace("\"float\"", "\"double\"");
            metadata["schemaString"] = serde_json::Value::String(text);
        }
    }
    let text: String = actions.iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(table.join("_delta_log/00000000000000000000.json"), text).unwrap();
    assert!(schema_of(0).is_some());
    let run = score(&sample_model(), &sample_lake(), &table, &["--mode", "overwrite"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("score double") && run.stderr.contains("score float"),
        "{}",
        run.stderr
    );
    assert_eq!(log_versions(&table).len(), 1);

    // Column mapping on the target: refused naming the feature.
    let mapped = dir.path().join("mapped");
    copy_tree(&crate::delta::fixtures().join("column-mapping"), &mapped);
    let run = score(&sample_model(), &sample_lake(), &mapped, &["--mode", "overwrite"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("columnMapping"), "{}", run.stderr);
}

#[test]
fn two_lakescore_runs_at_once_both_commit_on_different_partitions_and_one_fails_on_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table");
    let first_day = one_partition(dir.path(), "2026-11-24");
    let second_day = one_partition(dir.path(), "2026-11-25");
    let plain = dir.path().join("plain");
    score(&sample_model(), &sample_lake(), &plain, &[]).assert_ok();
    let expected = rows_by_partition(&plain);
    // Each run's log goes to a file the test reads while it runs. The first
    // run holds the output's lock at its commit until the test says go (the
    // second run is waiting for that lock by then).
    let go = dir.path().join("go");
    let start = |name: &str, lake: &Path, extra: &[&str], gated: bool| {
        let log = dir.path().join(format!("{name}.log"));
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lakescore"));
        command
            .args(score_args(&sample_model(), lake, &out, extra))
            .env_remove("LAKESCORE_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if gated {
            command.env(lakescore::test_hooks::DELTA_COMMIT_WHEN_FILE, &go);
        }
        (command.spawn().unwrap(), log)
    };
    let finish = |(mut child, log): (std::process::Child, PathBuf)| {
        let status = child.wait().unwrap();
        (status.code().unwrap_or(-1), std::fs::read_to_string(log).unwrap())
    };
    let wait_until_waiting = |log: &Path| {
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("waiting for it")
        {
            assert!(
                started.elapsed().as_secs() < 120,
                "the second run never waited for the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };

    // Different partitions, the table new: the second run waits for the
    // first's lock (`--lock-wait`), then commits beside it.
    let mut first = start("a", &first_day, &["--output-format", "delta"], true);
    wait_for_commit_attempt(&mut first.0, &out);
    let overwrite_waiting = ["--output-format", "delta", "--mode", "overwrite", "--lock-wait", "2m"];
    let second = start("b", &second_day, &overwrite_waiting, false);
    wait_until_waiting(&second.1);
    std::fs::write(&go, "").unwrap();
    let ((code_a, log_a), (code_b, log_b)) = (finish(first), finish(second));
    assert_eq!(code_a, 0, "{log_a}");
    assert_eq!(code_b, 0, "{log_b}");
    assert_eq!(log_versions(&out).len(), 2);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);

    // The same partition: the run that began from version 1 finds the
    // other's commit to it, and fails naming it; the log stays valid.
    std::fs::remove_dir_all(out.join("_lakescore/delta")).unwrap();
    std::fs::remove_file(&go).unwrap();
    let mut first = start("c", &second_day, &["--mode", "overwrite"], true);
    wait_for_commit_attempt(&mut first.0, &out);
    let second = start("d", &second_day, &["--mode", "overwrite", "--lock-wait", "2m"], false);
    wait_until_waiting(&second.1);
    std::fs::write(&go, "").unwrap();
    let ((code_a, log_a), (code_b, log_b)) = (finish(first), finish(second));
    assert_eq!(code_a, 0, "{log_a}");
    assert_eq!(code_b, 1, "{log_b}");
    assert!(
        log_b.contains("version 2") && log_b.contains("dt=2026-11-25") && log_b.contains("committed nothing"),
        "{log_b}"
    );
    assert_eq!(latest_version(&out), 2);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);
}

#[test]
fn a_failed_run_commits_nothing_and_the_ledger_lists_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table");
    // The table's first run fails while scoring: no table.
    let failed = lakescore_with_env(
        score_args(&sample_model(), &sample_lake(), &out, &["--output-format", "delta"]),
        &[(lakescore::test_hooks::PANIC_IN_ROW_GROUP, "0")],
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert!(!out.join("_delta_log").exists());
    score(&sample_model(), &sample_lake(), &out, &["--output-format", "delta"]).assert_ok();
    let before = delta_rows(&out, TableVersion::Latest);
    // An overwrite that fails: the table stays at its version, its rows.
    let failed = lakescore_with_env(
        score_args(&sample_model(), &sample_lake(), &out, &["--mode", "overwrite"]),
        &[(lakescore::test_hooks::PANIC_IN_ROW_GROUP, "0")],
    );
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    assert_eq!(log_versions(&out).len(), 1);
    assert_eq!(delta_rows(&out, TableVersion::Latest), before);
    // `lakescore runs` reads a Delta output's ledger as any other's.
    let runs = lakescore(["runs".as_ref(), out.as_os_str()]);
    let text = &runs.assert_ok().stdout;
    assert_eq!(text.matches("failed").count(), 2, "{text}");
    assert_eq!(text.matches("succeeded").count(), 1, "{text}");
}

#[test]
fn every_tenth_version_gets_a_checkpoint_that_readers_use() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("table");
    let lake = one_partition(dir.path(), "2026-11-25");
    score(&sample_model(), &lake, &out, &["--output-format", "delta"]).assert_ok();
    let expected = delta_rows(&out, TableVersion::Latest);
    for _ in 0..10 {
        score(&sample_model(), &lake, &out, &["--mode", "overwrite"]).assert_ok();
    }
    assert_eq!(latest_version(&out), 10);
    let log = log_versions(&out);
    assert!(
        log.contains(&"00000000000000000010.checkpoint.parquet".to_string()),
        "{log:?}"
    );
    assert!(log.contains(&"_last_checkpoint".to_string()), "{log:?}");
    assert!(!log.iter().any(|name| name.starts_with("0000000000000000000")
        && name.contains("checkpoint")
        && !name.starts_with("00000000000000000010")));
    // The versions before the checkpoint can go: readers start from it.
    for version in 0..10 {
        std::fs::remove_file(out.join(format!("_delta_log/{version:020}.json"))).unwrap();
    }
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);
    score(&sample_model(), &lake, &out, &["--mode", "overwrite"]).assert_ok();
    assert_eq!(latest_version(&out), 11);
    assert_eq!(delta_rows(&out, TableVersion::Latest), expected);
}
