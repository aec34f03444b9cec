//! Model packages, the data contract, profiles, drift and guards: every rule
//! and policy on generated tables with planted faults (an emptied column, a
//! shifted unit, duplicated ids, a stale partition), `check`, `profile`,
//! `model inspect` and `model package`, and the HTML report in a browser.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray};
use serde_json::Value;

use crate::browser::assert_renders_in_chromium;
use crate::common::model_package;
use crate::common::{customer_lake, ids, lakescore, linear_model, read_parquet, score, snapshot, write_parquet};

/// A logistic model over four of the generator's columns.
fn model(dir: &Path) -> PathBuf {
    linear_model(
        dir,
        "model.json",
        serde_json::json!({
            "format": "linear",
            "features": ["age", "tenure_days", "spend_30d", "orders_30d"],
            "weights": [0.01, -0.001, 0.002, 0.3],
            "intercept": -0.5,
            "link": "logistic",
            "fill": [40.0, 0.0, 0.0, 0.0]
        }),
    )
}

/// A package folder around `model.json` with the given manifest body (name,
/// version, artifact and checksum are filled in).
fn package(dir: &Path, body: &str) -> PathBuf {
    let folder = dir.join("pkg");
    std::fs::create_dir_all(&folder).unwrap();
    let artifact = model(&folder);
    let sha256 = lakescore::util::sha256_hex(&std::fs::read(&artifact).unwrap());
    let manifest =
        format!("name = \"propensity\"\nversion = \"2.1.0\"\nartifact = \"model.json\"\nsha256 = \"{sha256}\"\n{body}");
    std::fs::write(folder.join("lakescore.toml"), manifest).unwrap();
    folder
}

/// A lake of `rows` customers in two daily partitions, 2 files each.
fn lake(dir: &Path, rows: u64) -> PathBuf {
    customer_lake(&dir.join("lake"), rows, 2, 1000, &["2026-11-24", "2026-11-25"])
}

fn data_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = snapshot(dir)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet") && !p.starts_with("_lakescore"))
        .map(|p| dir.join(p))
        .collect();
    files.sort();
    files
}

/// Rewrites column `name` of every file of the lake with `change`.
pub(crate) fn plant(lake: &Path, name: &str, change: impl Fn(&ArrayRef) -> ArrayRef) {
    for path in data_files(lake) {
        let batch = read_parquet(&path);
        let columns: Vec<ArrayRef> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(field, column)| {
                if field.name() == name {
                    change(column)
                } else {
                    Arc::clone(column)
                }
            })
            .collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(
            batch
                .schema()
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| {
                    f.as_ref()
                        .clone()
                        .with_data_type(c.data_type().clone())
                        .with_nullable(true)
                })
                .collect::<Vec<_>>(),
        ));
        write_parquet(&path, &[RecordBatch::try_new(schema, columns).unwrap()], 1000);
    }
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn rule<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["checks"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no rule {id} in {}", report["checks"]))
}

fn guard<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["guards"]["guards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == id)
        .unwrap_or_else(|| panic!("no guard {id} in {}", report["guards"]))
}

fn check(package: &Path, input: &Path, extra: &[&str]) -> (crate::common::Run, Value) {
    let json = package.parent().unwrap().join("check.json");
    let mut args: Vec<std::ffi::OsString> = vec![
        "check".into(),
        "--model".into(),
        package.into(),
        "--input".into(),
        input.into(),
        "--report".into(),
        json.clone().into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    let run = lakescore(args);
    let report = report(&json);
    (run, report)
}

/// Asserts a rejected score run published nothing: no data, no manifest, no
/// quarantine table or profile, nothing left in staging; only its ledger entry.
#[track_caller]
fn assert_nothing_published(out: &Path) {
    let left: Vec<PathBuf> = snapshot(out)
        .into_keys()
        .filter(|p| out.join(p).is_file() && !p.starts_with("_lakescore/runs"))
        .collect();
    assert!(left.is_empty(), "a rejected run left {left:?}");
}

#[test]
fn a_package_pins_its_artifact_by_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let folder = package(dir.path(), "");
    let input = lake(dir.path(), 2000);
    let out = dir.path().join("out");
    score(&folder, &input, &out, &[]).assert_ok();

    // A changed artifact is refused before it is read.
    let mut bytes = std::fs::read(folder.join("model.json")).unwrap();
    bytes.extend_from_slice(b"\n");
    std::fs::write(folder.join("model.json"), bytes).unwrap();
    let run = score(&folder, &input, &dir.path().join("out2"), &[]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let error = &run.error_lines()[0];
    assert!(
        error.contains("artifact `") && error.contains("model.json` does not match its package: its SHA-256 is"),
        "{error}"
    );
    assert!(error.contains("lakescore.toml` says"), "{error}");
    assert!(!dir.path().join("out2").exists());
}

#[test]
fn a_manifest_with_an_unknown_key_or_feature_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 100);
    let folder = package(dir.path(), "[features.age]\nmaxx = 3\n");
    let run = score(&folder, &input, &dir.path().join("out"), &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.error_lines()[0].ends_with("lakescore.toml` is not a valid package manifest"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("unknown field `maxx`"), "{}", run.stderr);

    let folder = package(dir.path(), "[features.agee]\nmax = 3\n");
    let run = score(&folder, &input, &dir.path().join("out"), &[]);
    assert_eq!(
        run.error_lines()[0],
        format!(
            "error: `{}`: features.agee: the model has no feature `agee`; did you mean `age`?",
            folder.join("lakescore.toml").display()
        )
    );
}

#[test]
fn model_inspect_shows_features_columns_and_their_contract() {
    let dir = tempfile::tempdir().unwrap();
    let folder = package(
        dir.path(),
        "[output]\ncolumns = [\"propensity\"]\n[table]\nmin_rows = 10\n[features.age]\ncolumn = \"age_years\"\nmin = 0\nmax = 120\npolicy = \"quarantine\"\n",
    );
    let run = lakescore(["model".as_ref(), "inspect".as_ref(), folder.as_os_str()]);
    run.assert_ok();
    let text = &run.stdout;
    for expected in [
        "model     propensity 2.1.0",
        "format    linear",
        "(sha256 ",
        "verified)",
        "outputs   propensity in [0, 1]",
        "within [0, 120] [quarantine]",
        "at least 10 rows [fail]",
        "guards: finite scores; scores in [0, 1]",
    ] {
        assert!(text.contains(expected), "lacks {expected:?}:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.contains("age ") && l.contains("age_years")),
        "the source column is shown:\n{text}"
    );
    // A bare model file is a package of defaults.
    let run = lakescore([
        "model".as_ref(),
        "inspect".as_ref(),
        folder.join("model.json").as_os_str(),
    ]);
    run.assert_ok();
    assert!(run.stdout.contains("a bare model file"), "{}", run.stdout);
}

#[test]
fn an_emptied_column_fails_check_and_score_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 4000);
    plant(&input, "age", |c| Arc::new(Int32Array::new_null(c.len())));
    let folder = package(dir.path(), "[features.age]\nnullable = false\n");

    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let age = rule(&report, "age.null");
    assert_eq!(age["status"], "fail");
    assert_eq!(age["failing"], 4000);
    assert_eq!(age["checked"], 4000);
    assert_eq!(age["examples"][0], "customer_id=1");
    assert_eq!(age["examples"].as_array().unwrap().len(), 5);
    assert!(run.stdout.contains("FAIL   age.null"), "{}", run.stdout);
    assert!(run.stdout.contains("a failing rule says stop"), "{}", run.stdout);

    let out = dir.path().join("out");
    let json = dir.path().join("score.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("rejected: nothing was published"), "{}", run.stderr);
    assert!(run.stderr.contains("rule age.null"), "{}", run.stderr);
    assert_nothing_published(&out);
    let report = crate::contract::report(&json);
    assert_eq!(report["status"], "rejected");
    assert_eq!(rule(&report, "age.null")["failing"], 4000);
    // The ledger records the rejection.
    let ledger: Vec<Value> = snapshot(&out.join("_lakescore/runs"))
        .into_values()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
        .collect();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0]["status"], "rejected");
    assert!(ledger[0]["error"].as_str().unwrap().starts_with("rule age.null"));
}

#[test]
fn a_null_share_rule_and_warn_policies_report_without_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 3000);
    // The generator leaves 4% of ages null.
    let folder = package(
        dir.path(),
        "[features.age]\nmax_null_share = 0.01\nnull_share_policy = \"warn\"\nnullable = false\nnull_policy = \"warn\"\n",
    );
    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(report["checks"]["verdict"], "warn");
    let share = rule(&report, "age.null_share");
    assert_eq!(share["status"], "warn");
    assert!(
        share["detail"].as_str().unwrap().contains("nulls, at most 1% allowed"),
        "{share}"
    );
    let nulls = rule(&report, "age.null")["failing"].as_u64().unwrap();
    assert!((60..180).contains(&nulls), "{nulls}");

    let folder = package(dir.path(), "[features.age]\nmax_null_share = 0.01\n");
    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 3);
    assert_eq!(rule(&report, "age.null_share")["status"], "fail");
}

#[test]
fn a_shifted_unit_is_quarantined_and_the_rest_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 4000);
    // One partition's spend arrives in cents: 100 times too large.
    for path in data_files(&input)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("2026-11-25"))
    {
        let batch = read_parquet(&path);
        let spend = batch.column_by_name("spend_30d").unwrap();
        let spend = spend.as_any().downcast_ref::<Float64Array>().unwrap();
        let cents: Float64Array = spend.iter().map(|v| v.map(|v| v * 100.0)).collect();
        let mut columns = batch.columns().to_vec();
        columns[batch.schema().index_of("spend_30d").unwrap()] = Arc::new(cents);
        write_parquet(&path, &[RecordBatch::try_new(batch.schema(), columns).unwrap()], 1000);
    }
    let folder = package(
        dir.path(),
        "[features.spend_30d]\nmin = 0\nmax = 2000\npolicy = \"quarantine\"\n[features.age]\nmin = 18\nmax = 95\nrange_policy = \"quarantine\"\n",
    );
    let out = dir.path().join("out");
    let json = dir.path().join("score.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    run.assert_ok();
    let report = crate::contract::report(&json);
    let broken = rule(&report, "spend_30d.range");
    assert_eq!(broken["status"], "warn", "quarantine handles the rows");
    let quarantined = broken["failing"].as_u64().unwrap();
    assert!(quarantined > 100, "{broken}");
    assert_eq!(report["rows_quarantined"], quarantined);

    // The quarantined rows are out of the output and in the quarantine table.
    let mut published: Vec<i64> = Vec::new();
    for file in data_files(&out) {
        published.extend(ids(&read_parquet(&file)));
    }
    let table_path = PathBuf::from(report["quarantine"].as_str().unwrap());
    assert!(
        table_path.starts_with(out.join("_lakescore/quarantine")),
        "{table_path:?}"
    );
    let table = read_parquet(&table_path);
    let held = ids(&table);
    assert_eq!(held.len() as u64, quarantined);
    assert_eq!(published.len() as u64 + quarantined, 4000);
    assert!(held.iter().all(|id| !published.contains(id)));
    let reasons = table.column_by_name("lakescore_reasons").unwrap();
    let reasons = reasons.as_any().downcast_ref::<StringArray>().unwrap();
    assert!(reasons.iter().all(|r| r == Some("spend_30d.range")));
    let files = table.column_by_name("lakescore_file").unwrap();
    let files = files.as_any().downcast_ref::<StringArray>().unwrap();
    assert!(files.iter().all(|f| f.unwrap().starts_with("dt=2026-11-25/")));
    // The manifest points at it too.
    let manifest: Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(manifest["rows_quarantined"], quarantined);
    assert_eq!(manifest["quarantine"], report["quarantine"]);
}

#[test]
fn flagged_rows_are_scored_with_their_rule_ids() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 2000);
    // Flag ages over 50; quarantine high spenders, so that the flags column
    // must stay aligned with the rows that remain.
    let folder = package(
        dir.path(),
        "[features.age]\nmax = 50\npolicy = \"flag\"\n[features.spend_30d]\nmax = 60\npolicy = \"quarantine\"\n",
    );
    let out = dir.path().join("out");
    let json = dir.path().join("score.json");
    score(&folder, &input, &out, &["--report", json.to_str().unwrap()]).assert_ok();
    let report = crate::contract::report(&json);
    let mut age_of = std::collections::HashMap::new();
    let mut spend_of = std::collections::HashMap::new();
    for file in data_files(&input) {
        let batch = read_parquet(&file);
        let ages = crate::common::column_f64(&batch, "age");
        let spends = crate::common::column_f64(&batch, "spend_30d");
        for ((id, age), spend) in ids(&batch).into_iter().zip(ages).zip(spends) {
            age_of.insert(id, age);
            spend_of.insert(id, spend.unwrap());
        }
    }
    let mut flagged = 0;
    let mut rows = 0;
    for file in data_files(&out) {
        let batch = read_parquet(&file);
        rows += batch.num_rows();
        let flags = batch.column_by_name("lakescore_flags").expect("a flags column");
        let flags = flags.as_any().downcast_ref::<StringArray>().unwrap();
        for (id, flag) in ids(&batch).into_iter().zip(flags.iter()) {
            assert!(spend_of[&id] <= 60.0, "customer {id} should be in quarantine");
            let over_50 = age_of[&id].is_some_and(|age| age > 50.0);
            assert_eq!(
                flag == Some("age.range"),
                over_50,
                "customer {id}, age {:?}: {flag:?}",
                age_of[&id]
            );
            flagged += usize::from(over_50);
        }
    }
    let quarantined = report["rows_quarantined"].as_u64().unwrap();
    assert!(quarantined > 50, "{quarantined}");
    assert_eq!(
        rows as u64 + quarantined,
        2000,
        "flagged rows are scored, quarantined ones are not"
    );
    assert_eq!(report["rows_scored"], rows as u64);
    assert!(flagged > 200, "{flagged}");
    assert_eq!(report["rows_flagged"], flagged as u64);
}

#[test]
fn duplicated_ids_break_uniqueness() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 3000);
    // A bad join: the first file's ids appear again in the last file.
    let files = data_files(&input);
    let first_ids = ids(&read_parquet(&files[0]));
    let last = files.last().unwrap();
    let batch = read_parquet(last);
    let mut id_values = ids(&batch);
    id_values[..10].copy_from_slice(&first_ids[..10]);
    let mut columns = batch.columns().to_vec();
    columns[0] = Arc::new(Int64Array::from(id_values));
    write_parquet(last, &[RecordBatch::try_new(batch.schema(), columns).unwrap()], 1000);

    let folder = package(dir.path(), "[table]\nunique = [\"customer_id\"]\n");
    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let unique = rule(&report, "table.unique");
    assert_eq!(unique["failing"], 10);
    assert_eq!(unique["examples"][0], format!("customer_id={}", first_ids[0]));

    // As a warning the table is scored, ids decoded rather than copied.
    let folder = package(
        dir.path(),
        "[table]\nunique = [\"customer_id\"]\nunique_policy = \"warn\"\n",
    );
    let out = dir.path().join("out");
    score(&folder, &input, &out, &[]).assert_ok();
    let published: usize = data_files(&out).iter().map(|f| read_parquet(f).num_rows()).sum();
    assert_eq!(published, 3000);

    // A unique column that is not an id column of the run is a usage error.
    let folder = package(dir.path(), "[table]\nunique = [\"region\"]\n");
    let run = lakescore([
        "check",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    assert!(
        run.error_lines()[0].contains("`table.unique` names `region`, which is not an id column"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_stale_partition_fails_freshness() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 1000);
    let folder = package(dir.path(), "[table.freshness]\npartition = \"dt\"\nmax_age = \"36h\"\n");
    let (run, report) = check(&folder, &input, &["--as-of", "2026-11-26T06:00:00Z"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fresh = rule(&report, "table.freshness");
    assert_eq!(fresh["status"], "pass");
    assert!(
        fresh["detail"].as_str().unwrap().contains("partition dt=2026-11-25"),
        "{fresh}"
    );

    let (run, report) = check(&folder, &input, &["--as-of", "2026-11-28T06:00:00Z"]);
    assert_eq!(run.code, 3);
    let stale = rule(&report, "table.freshness");
    assert_eq!(stale["status"], "fail");
    assert!(
        stale["detail"]
            .as_str()
            .unwrap()
            .contains("3.2d old at 2026-11-28T06:00:00Z"),
        "{stale}"
    );

    // By a date column: the newest signup is days before the generator's `today`.
    let folder = package(
        dir.path(),
        "[table.freshness]\ncolumn = \"signup_date\"\nmax_age = \"4w\"\n",
    );
    let (run, report) = check(&folder, &input, &["--as-of", "2026-11-26"]);
    assert_eq!(
        run.code,
        0,
        "{}",
        serde_json::to_string_pretty(&report["checks"]).unwrap()
    );
    let (run, _) = check(&folder, &input, &["--as-of", "2027-01-01"]);
    assert_eq!(run.code, 3);
}

#[test]
fn min_rows_and_column_types_are_table_rules() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 500);
    let folder = package(dir.path(), "[table]\nmin_rows = 1000\n");
    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 3);
    assert_eq!(
        rule(&report, "table.min_rows")["detail"],
        "500 rows, at least 1,000 required"
    );

    // A type rule that fails stops the run before the pass.
    let folder = package(
        dir.path(),
        "[features.age]\ntype = \"float\"\n[features.spend_30d]\ntype = \"float\"\n",
    );
    let out = dir.path().join("out");
    let json = dir.path().join("score.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = crate::contract::report(&json);
    let age = rule(&report, "age.type");
    assert_eq!(age["status"], "fail");
    assert!(
        age["detail"]
            .as_str()
            .unwrap()
            .starts_with("`age` is Int32 in `dt=2026-11-24/part-00000.parquet`"),
        "{age}"
    );
    assert_eq!(rule(&report, "spend_30d.type")["status"], "pass");
    assert!(!out.exists(), "OUT is not touched");
}

#[test]
fn guards_stop_non_finite_out_of_range_and_missing_heavy_scores() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 1000);
    // Identity link with a huge weight: infinite scores.
    let folder = dir.path().join("inf");
    std::fs::create_dir_all(&folder).unwrap();
    let artifact = linear_model(
        &folder,
        "model.json",
        serde_json::json!({"format": "linear", "features": ["age"], "weights": [1e308], "intercept": 0, "link": "identity"}),
    );
    let sha256 = lakescore::util::sha256_hex(&std::fs::read(&artifact).unwrap());
    std::fs::write(
        folder.join("lakescore.toml"),
        format!("name = \"inf\"\nversion = \"1\"\nartifact = \"model.json\"\nsha256 = \"{sha256}\"\n"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let json = dir.path().join("inf.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    let finite = guard(&crate::contract::report(&json), "scores.finite").clone();
    assert_eq!(finite["status"], "fail");
    assert!(finite["value"].as_f64().unwrap() > 900.0, "{finite}");
    assert_nothing_published(&out);

    // A range narrower than the model's outputs.
    let folder = package(dir.path(), "[output]\nrange = [0.0, 0.4]\n");
    let json = dir.path().join("range.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    assert_eq!(run.code, 3);
    assert_eq!(guard(&crate::contract::report(&json), "scores.range")["status"], "fail");

    // Rows missing a feature: the generator leaves about 4% of ages null.
    let folder = package(dir.path(), "[guards]\nmax_missing_share = 0.01\n");
    let json = dir.path().join("missing.json");
    let run = score(&folder, &input, &out, &["--report", json.to_str().unwrap()]);
    assert_eq!(run.code, 3);
    let missing = guard(&crate::contract::report(&json), "features.missing_share").clone();
    assert_eq!(missing["status"], "fail");
    assert!((0.02..0.07).contains(&missing["value"].as_f64().unwrap()), "{missing}");
    let folder = package(dir.path(), "[guards]\nmax_missing_share = 0.2\n");
    score(&folder, &input, &out, &[]).assert_ok();
}

/// `model package` on a reference table, then runs on tables like it and
/// unlike it: drift and the mean-score guard.
#[test]
fn drift_and_score_shift_against_the_packaged_reference() {
    let dir = tempfile::tempdir().unwrap();
    let reference = customer_lake(&dir.path().join("reference"), 20_000, 1, 5000, &["2026-11-20"]);
    let bare = model(dir.path());
    let folder = dir.path().join("pkg");
    model_package(&bare, &reference, &folder, &[]);
    let size = std::fs::metadata(folder.join("reference.json")).unwrap().len();
    assert!(size < 64 * 1024, "the reference profile is {size} bytes");
    // Tighten the generated manifest: fail on a mean shift of 0.02.
    let manifest = std::fs::read_to_string(folder.join("lakescore.toml")).unwrap();
    let manifest = manifest.replace("[guards]\n", "[guards]\nmax_mean_shift = 0.02\n");
    std::fs::write(folder.join("lakescore.toml"), manifest).unwrap();

    // Another draw from the same generator (other seed): no drift.
    let same = dir.path().join("same");
    lakescore::datagen::generate_lake(
        &same,
        &lakescore::datagen::LakeSpec {
            rows: 30_000,
            seed: 99,
            dates: vec!["2026-11-25".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let out = dir.path().join("out");
    let json = dir.path().join("same.json");
    score(&folder, &same, &out, &["--report", json.to_str().unwrap()]).assert_ok();
    let report = crate::contract::report(&json);
    assert_eq!(report["drift"]["verdict"], "pass", "{}", report["drift"]);
    let columns = report["drift"]["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 5, "four features and the score");
    for column in columns {
        assert!(column["psi"].as_f64().unwrap() < 0.01, "{column}");
    }
    assert_eq!(guard(&report, "scores.mean_shift")["status"], "pass");
    // A resume that reuses every partition scores nothing: nothing drifts.
    let json = dir.path().join("resumed.json");
    score(
        &folder,
        &same,
        &out,
        &["--mode", "resume", "--report", json.to_str().unwrap()],
    )
    .assert_ok();
    let report = crate::contract::report(&json);
    assert_eq!(
        (report["rows_scored"].as_u64(), report["reused_partitions"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(report["drift"]["verdict"], "pass");

    // Spend in cents: the feature drifts, and so does the score.
    plant(&same, "spend_30d", |c| {
        let values = c.as_any().downcast_ref::<Float64Array>().unwrap();
        Arc::new(values.iter().map(|v| v.map(|v| v * 100.0)).collect::<Float64Array>())
    });
    let json = dir.path().join("shifted.json");
    let run = score(
        &folder,
        &same,
        &out,
        &["--mode", "overwrite", "--report", json.to_str().unwrap()],
    );
    assert_eq!(run.code, 3, "{}", run.stderr);
    let report = crate::contract::report(&json);
    assert_eq!(report["drift"]["verdict"], "fail");
    let first = &report["drift"]["columns"][0];
    assert!(
        first["name"] == "spend_30d" || first["name"] == "score",
        "sorted by PSI: {first}"
    );
    let spend = report["drift"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "spend_30d")
        .unwrap();
    assert_eq!(spend["status"], "fail");
    assert!(spend["psi"].as_f64().unwrap() > 1.0, "{spend}");
    assert_eq!(guard(&report, "scores.mean_shift")["status"], "fail");
    assert_eq!(
        rule(&report, "spend_30d.range")["status"],
        "warn",
        "packaged rules start at warn"
    );

    // The HTML report of the rejected run renders in a browser.
    let html = dir.path().join("report.html");
    let run = score(
        &folder,
        &same,
        &out,
        &["--mode", "overwrite", "--html", html.to_str().unwrap()],
    );
    assert_eq!(run.code, 3);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("spend_30d") && page.contains("<svg"),
        "the page has the drift table and histogram"
    );
    assert!(!page.contains("http://") && !page.contains("https://"), "no network");
    assert_renders_in_chromium(&html);
}

#[test]
fn profiles_of_parts_merge_into_the_profile_of_the_whole() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 6000);
    let run_profile = |input: &Path, name: &str| {
        let path = dir.path().join(name);
        lakescore([
            "profile",
            "--input",
            input.to_str().unwrap(),
            "--output",
            path.to_str().unwrap(),
        ])
        .assert_ok();
        let profile: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (path, profile)
    };
    let (_, whole) = run_profile(&input, "whole.json");
    let (a, _) = run_profile(&input.join("dt=2026-11-24"), "a.json");
    let (b, _) = run_profile(&input.join("dt=2026-11-25"), "b.json");
    let merged_path = dir.path().join("merged.json");
    lakescore([
        "profile",
        "--merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        merged_path.to_str().unwrap(),
    ])
    .assert_ok();
    let merged: Value = serde_json::from_slice(&std::fs::read(&merged_path).unwrap()).unwrap();
    assert_eq!(merged["rows"], 6000);
    let columns = whole["columns"].as_array().unwrap();
    assert!(columns.len() >= 30, "every numeric column: {}", columns.len());
    for (w, m) in columns.iter().zip(merged["columns"].as_array().unwrap()) {
        for key in ["name", "rows", "nulls", "min", "max", "quantiles", "bins", "sketch"] {
            assert_eq!(w[key], m[key], "{} {key}", w["name"]);
        }
        if let (Some(x), Some(y)) = (w["mean"].as_f64(), m["mean"].as_f64()) {
            assert!((x - y).abs() <= 1e-9 * x.abs().max(1.0), "{} mean {x} {y}", w["name"]);
        }
    }
    let age = columns.iter().find(|c| c["name"] == "age").unwrap();
    let p50 = age["quantiles"]["p50"].as_f64().unwrap();
    assert!((38.0..46.0).contains(&p50), "{p50}");
    assert!(std::fs::metadata(dir.path().join("whole.json")).unwrap().len() < 64 * 1024);
}

#[test]
fn the_html_report_of_a_check_renders_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 1000);
    let folder = package(dir.path(), "[features.age]\nmin = 20\nmax = 60\npolicy = \"warn\"\n");
    let html = dir.path().join("check.html");
    let (run, _) = check(&folder, &input, &["--html", html.to_str().unwrap()]);
    run.assert_ok();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("age.range"));
    assert_renders_in_chromium(&html);
}

/// At a million rows, sampling noise is far below the drift thresholds: a
/// table drawn from the reference's distribution (another seed, other days)
/// passes every feature and the score, with room to spare.
#[test]
fn drift_does_not_fire_on_a_million_rows_of_the_same_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let reference = customer_lake(&dir.path().join("reference"), 100_000, 1, 50_000, &["2026-11-01"]);
    let bare = model(dir.path());
    let folder = dir.path().join("pkg");
    model_package(&bare, &reference, &folder, &[]);
    let tonight = dir.path().join("tonight");
    lakescore::datagen::generate_lake(
        &tonight,
        &lakescore::datagen::LakeSpec {
            rows: 1_000_000,
            files: 2,
            seed: 2026,
            dates: vec!["2026-11-25".into(), "2026-11-26".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let run = lakescore([
        "check",
        "--model",
        folder.to_str().unwrap(),
        "--input",
        tonight.to_str().unwrap(),
        "--report",
        json.to_str().unwrap(),
    ]);
    run.assert_ok();
    let report = crate::contract::report(&json);
    assert_eq!(report["rows"], 1_000_000);
    let columns = report["drift"]["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 4, "check profiles features only");
    for column in columns {
        assert_eq!(column["status"], "pass", "{column}");
        assert!(column["psi"].as_f64().unwrap() < 0.002, "{column}");
        assert!(column["js"].as_f64().unwrap() < 0.02, "{column}");
    }
}

/// Categories a LightGBM model does not know are missing values to the
/// model, but the contract tells them from nulls.
#[test]
fn rules_tell_unknown_categories_from_nulls() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trees/lgb_cat_pandas");
    let folder = dir.path().join("pkg");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(fixture.join("model.txt"), folder.join("model.txt")).unwrap();
    let sha256 = lakescore::util::sha256_hex(&std::fs::read(folder.join("model.txt")).unwrap());
    let known = "[\"black\", \"blue\", \"café crème\", \"green\", \"grey\", \"orange\", \"purple\", \"red\", \"teal\", \"white\", \"yellow\", \"日本\"]";
    std::fs::write(
        folder.join("lakescore.toml"),
        format!(
            "name = \"shapes\"\nversion = \"1\"\nartifact = \"model.txt\"\nsha256 = \"{sha256}\"\n\
             [features.color]\nnullable = false\ncategories = {known}\npolicy = \"warn\"\n"
        ),
    )
    .unwrap();
    let input = fixture.join("input.parquet");
    let input_batch = read_parquet(&input);
    let colors = input_batch.column_by_name("color").unwrap();
    let colors = arrow::compute::cast(colors, &arrow::datatypes::DataType::Utf8).unwrap();
    let colors = colors.as_any().downcast_ref::<StringArray>().unwrap();
    let nulls = colors.null_count() as u64;
    let unknown = colors.iter().filter(|c| *c == Some("magenta")).count() as u64;
    assert!(nulls > 0 && unknown > 0);

    let (run, report) = check(&folder, &input, &["--id-column", "row_id"]);
    run.assert_ok();
    assert_eq!(rule(&report, "color.null")["failing"], nulls);
    assert_eq!(rule(&report, "color.categories")["failing"], unknown);

    // Scores are the model's all the same: unknown is missing to LightGBM.
    let out = dir.path().join("out");
    score(&folder, &input, &out, &["--id-column", "row_id"]).assert_ok();
    let bare = dir.path().join("bare");
    score(&folder.join("model.txt"), &input, &bare, &["--id-column", "row_id"]).assert_ok();
    let scores = |dir: &Path| crate::common::scores(&read_parquet(&dir.join("input.parquet")), "score");
    assert_eq!(scores(&out), scores(&bare));
}

#[test]
fn null_ids_are_not_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let input = lake(dir.path(), 1000);
    let first = data_files(&input)[0].clone();
    let batch = read_parquet(&first);
    let with_nulls: Int64Array = ids(&batch)
        .into_iter()
        .enumerate()
        .map(|(i, id)| (i >= 3).then_some(id))
        .collect();
    let mut columns = batch.columns().to_vec();
    columns[0] = Arc::new(with_nulls);
    let schema = Arc::new(arrow::datatypes::Schema::new(
        batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    ));
    write_parquet(&first, &[RecordBatch::try_new(schema, columns).unwrap()], 1000);
    let folder = package(dir.path(), "[table]\nunique = [\"customer_id\"]\n");
    let (run, report) = check(&folder, &input, &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(rule(&report, "table.unique")["failing"], 0);
}
