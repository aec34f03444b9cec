//! Experiments: `evaluate` against scikit-learn on the committed fixtures
//! (tests/fixtures/evaluate), champion and challenger in one pass and in
//! shadow, bandit allocation, feedback, off-policy evaluation against a
//! reference computed here, and a five-night simulated campaign.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Int16Type, Int64Type};
use serde_json::Value;

use crate::common::{customer_lake, data_files, lakescore, read_parquet, sample, scores, write_parquet};

/// Command-line arguments of mixed kinds.
fn os(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<std::ffi::OsString> {
    parts.iter().map(|p| p.as_ref().to_os_string()).collect()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evaluate")
}

#[track_caller]
fn close(got: &Value, expected: &Value, what: &str) {
    match (got.as_f64(), expected.as_f64()) {
        (Some(g), Some(e)) => assert!((g - e).abs() <= 1e-9, "{what}: lakescore {g}, scikit-learn {e}"),
        _ => assert_eq!(got, expected, "{what}"),
    }
}

#[test]
fn evaluate_matches_scikit_learn_on_every_fixture() {
    let cases: Vec<Value> = serde_json::from_slice(&std::fs::read(fixtures().join("cases.json")).unwrap()).unwrap();
    assert_eq!(cases.len(), 5);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let at = |key: &str| fixtures().join(case[key].as_str().unwrap());
        let run = lakescore(os(&[
            &"evaluate",
            &"--model",
            &at("model"),
            &"--input",
            &at("input"),
            &"--label",
            &case["label_column"].as_str().unwrap(),
            &"--threshold",
            &"0.5",
            &"--threshold",
            &"0.3",
            &"--json",
        ]));
        run.assert_ok();
        let report: Value = serde_json::from_str(&run.stdout).unwrap();
        let expected: Value = serde_json::from_slice(&std::fs::read(at("expected")).unwrap()).unwrap();
        let m = &report["models"][0]["metrics"];
        let what = |key: &str| format!("{name}: {key}");
        assert_eq!(m["auc_method"], "exact", "{name}");
        assert_eq!(report["rows_unlabeled"], expected["rows_unlabeled"], "{name}");
        for key in ["rows", "positives"] {
            assert_eq!(m[key], expected[key], "{}", what(key));
        }
        for key in ["auc", "log_loss", "brier"] {
            close(&m[key], &expected[key], &what(key));
        }
        for (k, threshold) in ["0.5", "0.3"].iter().enumerate() {
            close(
                &m["confusion"][k]["accuracy"],
                &expected["accuracy_at"][threshold],
                &what("accuracy"),
            );
        }
        let bins = expected["calibration"]["bins"].as_array().unwrap();
        assert_eq!(m["calibration"].as_array().unwrap().len(), bins.len(), "{name}");
        for (got, want) in m["calibration"].as_array().unwrap().iter().zip(bins) {
            for key in ["bin", "lower", "upper", "rows", "mean_score", "positive_rate"] {
                close(
                    &got[key],
                    &want[key],
                    &what(&format!("calibration bin {} {key}", want["bin"])),
                );
            }
        }
        assert_eq!(m["deciles"].as_array().unwrap().len(), 10, "{name}");
        for (got, want) in m["deciles"]
            .as_array()
            .unwrap()
            .iter()
            .zip(expected["deciles"].as_array().unwrap())
        {
            for key in [
                "decile",
                "rows",
                "positives",
                "response_rate",
                "lift",
                "cumulative_gain",
                "cumulative_lift",
                "score_max",
                "score_min",
            ] {
                close(
                    &got[key],
                    &want[key],
                    &what(&format!("decile {} {key}", want["decile"])),
                );
            }
        }
    }
}

fn evaluate_args(models: &[&Path], input: &Path, label: &str, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["evaluate".into()];
    for model in models {
        args.push("--model".into());
        args.push(model.into());
    }
    args.extend(["--input".into(), input.into(), "--label".into(), label.into()]);
    args.extend(extra.iter().map(Into::into));
    args
}

#[test]
fn evaluate_writes_a_page_that_renders_and_compares_a_challenger() {
    let dir = tempfile::tempdir().unwrap();
    // Two bare files named alike would both be `model`: copies with names.
    let champion = dir.path().join("champion.json");
    let challenger = dir.path().join("challenger.json");
    std::fs::copy(fixtures().join("xgb_binary/model.json"), &champion).unwrap();
    std::fs::copy(fixtures().join("xgb_rare/model.json"), &challenger).unwrap();
    let input = fixtures().join("xgb_binary/input.parquet");
    let (report, page) = (dir.path().join("e.json"), dir.path().join("e.html"));
    let extra = ["--report", report.to_str().unwrap(), "--html", page.to_str().unwrap()];
    lakescore(evaluate_args(&[&champion, &challenger], &input, "converted", &extra)).assert_ok();
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["models"][0]["model"]["name"], "champion");
    assert_eq!(report["models"][1]["model"]["name"], "challenger");
    // The champion's metrics are those it has alone.
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("xgb_binary/expected.json")).unwrap()).unwrap();
    close(&report["models"][0]["metrics"]["auc"], &expected["auc"], "champion auc");
    let agreement = &report["comparison"]["agreements"][0];
    assert_eq!(agreement["challenger"], "challenger");
    let rho = agreement["rank_correlation"].as_f64().unwrap();
    assert!(rho > -1.0 && rho < 1.0, "{rho}");
    assert_eq!(report["comparison"]["rows"], 4000);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("ROC") && html.contains("Calibration") && html.contains("champion"));
    crate::browser::assert_renders_in_chromium(&page);

    // The same model twice is the same ranking.
    std::fs::copy(&champion, dir.path().join("twin.json")).unwrap();
    let run = lakescore(evaluate_args(
        &[&champion, &dir.path().join("twin.json")],
        &input,
        "converted",
        &["--json"],
    ));
    let report: Value = serde_json::from_str(&run.assert_ok().stdout).unwrap();
    assert_eq!(report["comparison"]["agreements"][0]["rank_correlation"], 1.0);
    assert_eq!(report["comparison"]["agreements"][0]["top_decile_agreement"], 1.0);
}

#[test]
fn evaluate_refuses_bad_labels_naming_the_column_and_row_group() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixtures().join("xgb_binary/model.json");
    let input = fixtures().join("xgb_binary/input.parquet");
    let run = lakescore(evaluate_args(&[&model], &input, "convertd", &[]));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("`convertd`") && run.stderr.contains("did you mean `converted`"),
        "{}",
        run.stderr
    );
    // A label of 2 in the second row group.
    let batch = read_parquet(&input);
    let labels: Vec<i64> = (0..batch.num_rows())
        .map(|i| if i == 3000 { 2 } else { (i % 2) as i64 })
        .collect();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let label_at = batch.schema().index_of("converted").unwrap();
    columns[label_at] = Arc::new(Int64Array::from(labels));
    let mut fields: Vec<arrow::datatypes::Field> = batch.schema().fields().iter().map(|f| (**f).clone()).collect();
    fields[label_at] = arrow::datatypes::Field::new("converted", DataType::Int64, false);
    let bad = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
    let bad_path = dir.path().join("bad.parquet");
    write_parquet(&bad_path, &[bad], 2000);
    let run = lakescore(evaluate_args(&[&model], &bad_path, "converted", &[]));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        run.error_lines(),
        [
            format!("error: cannot score row group 1 of `{}`", bad_path.display()),
            "  Caused by: label column `converted` holds `2`; labels must be 0 or 1 (false or true), or null to \
             leave the row out"
                .to_string(),
        ]
    );
    // A model of three classes is not a binary classifier.
    let softmax = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trees/xgb_multi_softprob/model.json");
    let run = lakescore(evaluate_args(&[&softmax], &input, "converted", &[]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("writes 4 scores; `evaluate` measures binary classifiers"),
        "{}",
        run.stderr
    );
}

/// The sample lake and two of the sample models, as champion and challenger.
#[test]
fn champion_and_challenger_score_in_one_pass_and_shadow_publishes_the_champion_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (both, shadow, alone, other) = (
        dir.path().join("both"),
        dir.path().join("shadow"),
        dir.path().join("alone"),
        dir.path().join("other"),
    );
    let (champion, challenger, input) = (sample("model.json"), sample("xgb.ubj"), sample("customers"));
    let run_report = dir.path().join("both.json");
    let page = dir.path().join("both.html");
    let score = |models: &[&Path], out: &Path, extra: &[&str]| {
        let mut args: Vec<std::ffi::OsString> = vec!["score".into()];
        for m in models {
            args.extend(["--model".into(), m.into()]);
        }
        args.extend(["--input".into(), input.clone().into(), "--output".into(), out.into()]);
        args.extend(extra.iter().map(Into::into));
        lakescore(args).assert_ok();
    };
    score(
        &[&champion, &challenger],
        &both,
        &[
            "--report",
            run_report.to_str().unwrap(),
            "--html",
            page.to_str().unwrap(),
        ],
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("Champion and challengers") && html.contains("score_xgb"),
        "{html}"
    );
    crate::browser::assert_renders_in_chromium(&page);
    score(&[&champion, &challenger], &shadow, &["--shadow"]);
    score(&[&champion], &alone, &[]);
    score(&[&challenger], &other, &[]);

    let report: Value = serde_json::from_slice(&std::fs::read(&run_report).unwrap()).unwrap();
    let comparison = &report["comparison"];
    assert_eq!(comparison["rows"], 50_000);
    assert_eq!(comparison["exact"], true);
    assert_eq!(comparison["distributions"][1]["column"], "score_xgb");
    let rho = comparison["agreements"][0]["rank_correlation"].as_f64().unwrap();
    assert!(rho > 0.5 && rho < 1.0, "{rho}");

    for (relative, bytes) in data_files(&alone) {
        let file = relative.to_string_lossy().into_owned();
        let single = read_parquet(&alone.join(&relative));
        let single_other = read_parquet(&other.join(&relative));
        // One pass, two columns, each equal to its model's own run.
        let together = read_parquet(&both.join(&relative));
        let schema = together.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["customer_id", "score_propensity-sample", "score_xgb"], "{file}");
        assert_eq!(
            scores(&together, "score_propensity-sample"),
            scores(&single, "score"),
            "{file}"
        );
        assert_eq!(scores(&together, "score_xgb"), scores(&single_other, "score"), "{file}");
        // Shadow: the published file is the champion's own: its columns, its
        // scores (the ids decoded for the shadow table are encoded again, so
        // the bytes may differ).
        let published = read_parquet(&shadow.join(&relative));
        assert_eq!(published.schema(), single.schema(), "{file}");
        assert_eq!(published, single, "{file}");
        assert!(!bytes.is_empty());
    }
    let side: Vec<PathBuf> = std::fs::read_dir(shadow.join("_lakescore/shadow"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(side.len(), 1);
    let side = read_parquet(&side[0]);
    let schema = side.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["customer_id", "score_xgb"]);
    assert_eq!(side.num_rows(), 50_000);
    let mut expected: Vec<(i64, u32)> = Vec::new();
    for relative in data_files(&other).keys() {
        let batch = read_parquet(&other.join(relative));
        let ids = crate::common::ids(&batch);
        expected.extend(
            ids.into_iter()
                .zip(scores(&batch, "score").into_iter().map(f32::to_bits)),
        );
    }
    let got: Vec<(i64, u32)> = crate::common::ids(&side)
        .into_iter()
        .zip(scores(&side, "score_xgb").into_iter().map(f32::to_bits))
        .collect();
    assert_eq!(
        got, expected,
        "the shadow table holds the challenger's scores, in table order"
    );

    // Refused: a shadow without a challenger, two models of one name.
    let x = dir.path().join("x");
    let run = lakescore(os(&[
        &"score",
        &"--model",
        &champion,
        &"--input",
        &input,
        &"--output",
        &x,
        &"--shadow",
    ]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("`--shadow` needs a challenger"), "{}", run.stderr);
    let y = dir.path().join("y");
    let run = lakescore(os(&[
        &"score",
        &"--model",
        &champion,
        &"--model",
        &champion,
        &"--input",
        &input,
        &"--output",
        &y,
    ]));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("two models are named `propensity-sample`"),
        "{}",
        run.stderr
    );
}

// ---- bandits ----

/// A policy file of `arms` (name, alpha, beta).
fn write_policy(path: &Path, version: u64, arms: &[(&str, f64, f64)], holdout: f64, floor: f64) {
    let mut text = format!(
        "campaign = \"winter-email\"\nversion = {version}\nsalt = \"pepper-2026\"\nholdout_share = {holdout}\n\
         exploration_floor = {floor}\ndraws = 20000\n"
    );
    for (name, alpha, beta) in arms {
        text.push_str(&format!(
            "\n[[arms]]\nname = \"{name}\"\nalpha = {alpha:?}\nbeta = {beta:?}\n"
        ));
    }
    std::fs::write(path, text).unwrap();
}

/// id -> (arm, propensity, holdout, policy version).
type Assignments = BTreeMap<i64, (Option<String>, Option<f64>, bool, i64)>;

/// Every assignment of an allocation output.
fn assignments(out: &Path) -> Assignments {
    let mut all = BTreeMap::new();
    for relative in data_files(out).keys() {
        let batch = read_parquet(&out.join(relative));
        let ids = batch
            .column_by_name("customer_id")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        let arms = batch
            .column_by_name("arm")
            .unwrap()
            .as_dictionary::<Int16Type>()
            .clone();
        let names = arms.values().as_string::<i32>().clone();
        let propensity = batch
            .column_by_name("propensity")
            .unwrap()
            .as_primitive::<arrow::datatypes::Float64Type>()
            .clone();
        let holdout = batch.column_by_name("holdout").unwrap().as_boolean().clone();
        let version = batch
            .column_by_name("policy_version")
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone();
        for i in 0..batch.num_rows() {
            let arm = arms
                .is_valid(i)
                .then(|| names.value(arms.keys().value(i) as usize).to_string());
            let p = propensity.is_valid(i).then(|| propensity.value(i));
            all.insert(ids.value(i), (arm, p, holdout.value(i), version.value(i)));
        }
    }
    all
}

/// Outcomes for an allocation: each customer converts with its arm's true
/// rate (the holdout with `base`), by a seeded draw per night and id.
fn simulate_outcomes(assigned: &Assignments, rates: &HashMap<&str, f64>, base: f64, night: u64, path: &Path) {
    let mut ids = Vec::new();
    let mut arms: Vec<Option<String>> = Vec::new();
    let mut converted = Vec::new();
    for (&id, (arm, _, _, _)) in assigned {
        let rate = arm.as_deref().map_or(base, |a| rates[a]);
        let mut rng = lakescore::datagen::Rng::new((night * 1_000_003) ^ id as u64);
        ids.push(id);
        arms.push(arm.clone());
        converted.push(rng.uniform() < rate);
    }
    let n = ids.len();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("customer_id", DataType::Int64, false),
        arrow::datatypes::Field::new("arm", DataType::Utf8, true),
        arrow::datatypes::Field::new("converted", DataType::Boolean, false),
        arrow::datatypes::Field::new(
            "timestamp",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None),
            false,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(arms)),
            Arc::new(BooleanArray::from(converted)),
            Arc::new(arrow::array::TimestampSecondArray::from(vec![
                1_764_115_200
                    + night as i64
                        * 86_400;
                n
            ])),
        ],
    )
    .unwrap();
    write_parquet(path, &[batch], 8192);
}

fn allocate(policy: &Path, input: &Path, out: &Path) -> Value {
    let run = lakescore(os(&[
        &"allocate",
        &"--policy",
        &policy,
        &"--input",
        &input,
        &"--output",
        &out,
        &"--json",
    ]));
    serde_json::from_str(&run.assert_ok().stdout).unwrap()
}

fn feedback(policy: &Path, outcomes: &Path, extra: &[&str]) -> crate::common::Run {
    let mut args: Vec<std::ffi::OsString> = vec![
        "feedback".into(),
        "--policy".into(),
        policy.into(),
        "--outcomes".into(),
        outcomes.into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(Into::into));
    lakescore(args)
}

/// The simulated campaign: customers a night, and each arm's true rate (`b`
/// is best, by a margin five nights can learn but one cannot).
const CAMPAIGN_CUSTOMERS: u64 = 4_000;
const CAMPAIGN_RATES: [(&str, f64); 4] = [("a", 0.02), ("b", 0.05), ("c", 0.03), ("d", 0.025)];

#[test]
fn five_nights_of_a_campaign_learn_the_best_arm() {
    let dir = tempfile::tempdir().unwrap();
    let customers = CAMPAIGN_CUSTOMERS;
    let lake = customer_lake(&dir.path().join("customers"), customers, 2, 4096, &["2026-11-25"]);
    let policy = dir.path().join("policy.toml");
    let arms = [("a", 1.0, 1.0), ("b", 1.0, 1.0), ("c", 1.0, 1.0), ("d", 1.0, 1.0)];
    write_policy(&policy, 1, &arms, 0.1, 0.05);
    let rates: HashMap<&str, f64> = CAMPAIGN_RATES.into_iter().collect();
    let mut best_shares = Vec::new();
    let mut holdout: Option<Vec<i64>> = None;
    for night in 1..=5u64 {
        let out = dir.path().join(format!("night-{night}"));
        let report = allocate(&policy, &lake, &out);
        // Reproducible: the same policy version gives the same bytes.
        let again = dir.path().join(format!("night-{night}-again"));
        allocate(&policy, &lake, &again);
        assert_eq!(data_files(&out), data_files(&again), "night {night} is reproducible");

        let assigned = assignments(&out);
        assert_eq!(assigned.len() as u64, customers);
        let held: Vec<i64> = assigned.iter().filter(|(_, a)| a.2).map(|(&id, _)| id).collect();
        match &holdout {
            None => holdout = Some(held.clone()),
            Some(first) => assert_eq!(&held, first, "night {night}: the holdout is permanent"),
        }
        let share = held.len() as f64 / customers as f64;
        assert!((share - 0.1).abs() < 0.01, "night {night}: holdout share {share}");
        assert_eq!(report["holdout_rows"], held.len());
        let shares: Vec<f64> = report["arms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["share"].as_f64().unwrap())
            .collect();
        for (id, (arm, propensity, is_held, version)) in &assigned {
            assert_eq!(*version, night as i64, "{id}");
            match (arm, propensity, is_held) {
                (Some(arm), Some(p), false) => {
                    let k = (arm.as_bytes()[0] - b'a') as usize;
                    assert_eq!(*p, shares[k], "{id}: propensity is the arm's share");
                }
                (None, None, true) => {}
                other => panic!("{id}: {other:?}"),
            }
        }
        best_shares.push(shares[1]);
        assert!(
            shares.iter().all(|&s| s >= 0.05 - 1e-12),
            "night {night}: floor kept: {shares:?}"
        );

        let outcomes = dir.path().join(format!("outcomes-{night}.parquet"));
        simulate_outcomes(&assigned, &rates, 0.01, night, &outcomes);
        let report: Value = serde_json::from_str(&feedback(&policy, &outcomes, &[]).assert_ok().stdout).unwrap();
        assert_eq!(report["to_version"], night + 1);
        assert_eq!(report["duplicates"], 0);
        assert_eq!(report["unknown_arms"], 0);
    }
    // The best arm's share grows night over night, up to its ceiling (every
    // other arm keeps its floor), where only the Monte Carlo error of the
    // probability that it is best (20,000 draws: under 0.001 there) moves it.
    let ceiling = 1.0 - 3.0 * 0.05;
    assert!(
        best_shares[1] > best_shares[0] && best_shares[2] > best_shares[1],
        "{best_shares:?}"
    );
    for pair in best_shares.windows(2) {
        let at_ceiling = ceiling - pair[1] < 0.002;
        assert!(
            pair[1] > pair[0] || at_ceiling,
            "the best arm's share must grow: {best_shares:?}"
        );
    }
    assert!(best_shares[4] > 0.8, "{best_shares:?}");
    let text = std::fs::read_to_string(&policy).unwrap();
    assert_eq!(text.matches("[[history]]").count(), 5, "{text}");
    assert!(text.contains("version = 6"));
}

#[test]
fn feedback_counts_what_it_leaves_out_and_never_applies_outcomes_twice() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        serde_json::to_vec_pretty(&serde_json::json!({
            "format": "lakescore-policy/1", "campaign": "c", "version": 3, "salt": "s", "holdout_share": 0.0,
            "exploration_floor": 0.1, "draws": 5000,
            "arms": [{"name": "a", "alpha": 2.0, "beta": 3.0}, {"name": "b", "alpha": 1.0, "beta": 1.0}]
        }))
        .unwrap(),
    )
    .unwrap();
    // ids 1..=6: 1 a converted, 2 a no, 3 b converted, 3 again (duplicate),
    // 4 arm `z` (unknown), 5 null converted, 6 the holdout (null arm) converted.
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("customer_id", DataType::Int64, true),
        arrow::datatypes::Field::new("arm", DataType::Utf8, true),
        arrow::datatypes::Field::new("converted", DataType::Int64, true),
        arrow::datatypes::Field::new("timestamp", DataType::Date32, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(2),
                Some(3),
                Some(3),
                Some(4),
                Some(5),
                Some(6),
            ])),
            Arc::new(StringArray::from(vec![
                Some("a"),
                Some("a"),
                Some("b"),
                Some("b"),
                Some("z"),
                Some("a"),
                None,
            ])),
            Arc::new(Int64Array::from(vec![
                Some(1),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                None,
                Some(1),
            ])),
            Arc::new(arrow::array::Date32Array::from(vec![
                Some(20_000),
                None,
                Some(20_002),
                None,
                None,
                None,
                None,
            ])),
        ],
    )
    .unwrap();
    let outcomes = dir.path().join("outcomes");
    write_parquet(&outcomes.join("day=1/part-0.parquet"), &[batch], 100);
    let next = dir.path().join("next.json");
    let run = feedback(&policy, &outcomes, &["--output", next.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&run.assert_ok().stdout).unwrap();
    assert_eq!(report["outcome_rows"], 7);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["unknown_arms"], 1);
    assert_eq!(report["unknown_arm_names"], serde_json::json!([["z", 1]]));
    assert_eq!(report["missing_values"], 1);
    assert_eq!(report["missing_timestamps"], 5);
    assert_eq!(
        (report["holdout_sends"].clone(), report["holdout_conversions"].clone()),
        (1.into(), 1.into())
    );
    assert_eq!(report["earliest"], "2024-10-04T00:00:00Z");
    assert_eq!(report["latest"], "2024-10-06T00:00:00Z");
    let written: Value = serde_json::from_slice(&std::fs::read(&next).unwrap()).unwrap();
    assert_eq!(written["version"], 4);
    assert_eq!(written["arms"][0]["alpha"], 3.0); // 2 + 1 conversion
    assert_eq!(written["arms"][0]["beta"], 4.0); // 3 + 1 without
    assert_eq!(written["arms"][1]["alpha"], 2.0);
    assert_eq!(written["arms"][1]["beta"], 1.0);
    assert_eq!(written["history"][0]["sends"], serde_json::json!([2, 1]));
    // The original is untouched; the new version refuses the same outcomes.
    assert!(std::fs::read_to_string(&policy).unwrap().contains("\"version\": 3"));
    let run = feedback(&next, &outcomes, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("was already applied: policy"), "{}", run.stderr);
    // Known by content: the same file renamed, beside a new one, is refused too.
    let renamed = dir.path().join("renamed");
    std::fs::create_dir_all(renamed.join("day=9")).unwrap();
    std::fs::copy(
        outcomes.join("day=1/part-0.parquet"),
        renamed.join("day=9/other-name.parquet"),
    )
    .unwrap();
    let run = feedback(&next, &renamed, &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("other-name.parquet` was already applied"),
        "{}",
        run.stderr
    );
    // Bad outcome tables name the file and the column.
    let run = feedback(&policy, &outcomes, &["--converted-column", "convertd"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("outcome column `convertd` does not exist in")
            && run.stderr.contains("did you mean `converted`"),
        "{}",
        run.stderr
    );
}

#[test]
fn off_policy_estimates_match_a_reference_computed_here() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("customers"), 6_000, 1, 2048, &["2026-11-25"]);
    let logging = dir.path().join("logging.toml");
    write_policy(
        &logging,
        1,
        &[("a", 1.0, 1.0), ("b", 1.0, 1.0), ("c", 1.0, 1.0)],
        0.2,
        0.1,
    );
    let out = dir.path().join("assigned");
    allocate(&logging, &lake, &out);
    let assigned = assignments(&out);
    let rates: HashMap<&str, f64> = [("a", 0.05), ("b", 0.15), ("c", 0.10)].into_iter().collect();
    let simulated = dir.path().join("simulated.parquet");
    simulate_outcomes(&assigned, &rates, 0.02, 1, &simulated);
    // Every tenth customer has no outcome; five have a second, contrary one
    // (the first counts).
    let all = read_parquet(&simulated);
    let ids = crate::common::ids(&all);
    let keep = BooleanArray::from(ids.iter().map(|id| id % 10 != 0).collect::<Vec<_>>());
    let kept = arrow::compute::filter_record_batch(&all, &keep).unwrap();
    let again = arrow::compute::filter_record_batch(&kept.slice(0, 5), &BooleanArray::from(vec![true; 5])).unwrap();
    let flipped = arrow::compute::not(again.column_by_name("converted").unwrap().as_boolean()).unwrap();
    let mut columns = again.columns().to_vec();
    columns[2] = Arc::new(flipped);
    let again = RecordBatch::try_new(again.schema(), columns).unwrap();
    let outcomes = dir.path().join("outcomes.parquet");
    write_parquet(&outcomes, &[kept.clone(), again], 8192);
    let converted: HashMap<i64, bool> = crate::common::ids(&kept)
        .into_iter()
        .zip(
            kept.column_by_name("converted")
                .unwrap()
                .as_boolean()
                .iter()
                .map(|c| c.unwrap()),
        )
        .collect();

    let estimate = |policy: &Path| -> Value {
        let run = lakescore(os(&[
            &"evaluate-policy",
            &"--policy",
            &policy,
            &"--assignments",
            &out,
            &"--outcomes",
            &outcomes,
            &"--json",
        ]));
        serde_json::from_str(&run.assert_ok().stdout).unwrap()
    };
    // A candidate whose shares are known without Monte Carlo: a floor of 1/3
    // for 3 arms leaves nothing to the posteriors, so every share is 1/3.
    let uniform = dir.path().join("uniform.toml");
    write_policy(
        &uniform,
        7,
        &[("a", 5.0, 95.0), ("b", 30.0, 170.0), ("c", 12.0, 108.0)],
        0.2,
        1.0 / 3.0,
    );
    let report = estimate(&uniform);

    // The reference, from the definitions: logged rows outside the holdout,
    // w = 1/3 / propensity, r = the first outcome (none: 0).
    let rows: Vec<(f64, f64)> = assigned
        .iter()
        .filter(|(_, a)| !a.2)
        .map(|(id, (_, mu, _, _))| {
            (
                1.0 / 3.0 / mu.unwrap(),
                if converted.get(id) == Some(&true) { 1.0 } else { 0.0 },
            )
        })
        .collect();
    let without = assigned
        .iter()
        .filter(|(id, a)| !a.2 && !converted.contains_key(id))
        .count();
    let n = rows.len() as f64;
    let ips = rows.iter().map(|(w, r)| w * r).sum::<f64>() / n;
    let ips_var = rows.iter().map(|(w, r)| (w * r - ips).powi(2)).sum::<f64>() / (n - 1.0);
    let sum_w: f64 = rows.iter().map(|(w, _)| w).sum();
    let snips = rows.iter().map(|(w, r)| w * r).sum::<f64>() / sum_w;
    let snips_se = rows.iter().map(|(w, r)| (w * (r - snips)).powi(2)).sum::<f64>().sqrt() / sum_w;
    let ess = sum_w * sum_w / rows.iter().map(|(w, _)| w * w).sum::<f64>();
    let near = |got: &Value, want: f64, what: &str| {
        let got = got.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    };
    assert_eq!(report["rows"], rows.len());
    assert_eq!(report["rows_without_outcome"], without);
    assert!(without > 300, "{without}");
    assert_eq!(report["duplicate_outcomes"], 5);
    assert_eq!(report["duplicate_assignments"], 0);
    for pair in report["candidate_shares"].as_array().unwrap() {
        assert_eq!(pair[1].as_f64().unwrap(), 1.0 / 3.0);
    }
    near(&report["ips"]["value"], ips, "IPS");
    near(&report["ips"]["std_error"], (ips_var / n).sqrt(), "IPS standard error");
    near(
        &report["ips"]["ci_low"],
        ips - 1.959963984540054 * (ips_var / n).sqrt(),
        "IPS interval",
    );
    near(&report["snips"]["value"], snips, "SNIPS");
    near(&report["snips"]["std_error"], snips_se, "SNIPS standard error");
    near(
        &report["snips"]["ci_high"],
        snips + 1.959963984540054 * snips_se,
        "SNIPS interval",
    );
    near(&report["effective_sample_size"], ess, "ESS");

    // A candidate that favours b, the best arm, beats the logged rate.
    let favouring = dir.path().join("favouring.toml");
    write_policy(
        &favouring,
        7,
        &[("a", 5.0, 95.0), ("b", 30.0, 170.0), ("c", 12.0, 108.0)],
        0.2,
        0.1,
    );
    let report = estimate(&favouring);
    assert!(report["snips"]["value"].as_f64().unwrap() > report["logged_rate"].as_f64().unwrap());
    // On-policy, the estimate is the logged rate and every weight is 1.
    let report = estimate(&logging);
    near(
        &report["ips"]["value"],
        report["logged_rate"].as_f64().unwrap(),
        "on-policy IPS",
    );
    near(&report["effective_sample_size"], n, "on-policy ESS");
}

#[test]
fn allocate_refuses_bad_policies_and_ids_before_touching_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("customers"), 1_000, 1, 1000, &["2026-11-25"]);
    let policy = dir.path().join("policy.toml");
    write_policy(&policy, 1, &[("a", 1.0, 1.0), ("b", 1.0, 1.0)], 0.1, 0.6);
    let out = dir.path().join("out");
    let args = |policy: &Path| os(&[&"allocate", &"--policy", &policy, &"--input", &lake, &"--output", &out]);
    let run = lakescore(args(&policy));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`exploration_floor` is 0.6; with 2 arms it must be in [0, 0.5]"),
        "{}",
        run.stderr
    );
    let text = std::fs::read_to_string(&policy).unwrap().replace("0.6", "0.1") + "id_column = \"custmer_id\"\n";
    // A key after the arms table belongs to the last arm: unknown there.
    std::fs::write(&policy, &text).unwrap();
    let run = lakescore(args(&policy));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("unknown field `id_column`"), "{}", run.stderr);
    let text = text
        .replace("id_column = \"custmer_id\"\n", "")
        .replace("draws", "id_column = \"custmer_id\"\ndraws");
    std::fs::write(&policy, text).unwrap();
    let run = lakescore(args(&policy));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("id column `custmer_id` does not exist") && run.stderr.contains("customer_id"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn allocate_refuses_null_ids_from_the_footer_and_resume_counts_the_whole_output() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.toml");
    write_policy(&policy, 3, &[("a", 2.0, 9.0), ("b", 3.0, 8.0)], 0.25, 0.05);
    // A table whose id column has a null in its second row group.
    let table = dir.path().join("ids.parquet");
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "customer_id",
        DataType::Int64,
        true,
    )]));
    let ids: Vec<Option<i64>> = (0..20).map(|i| (i != 13).then_some(i)).collect();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ids))]).unwrap();
    write_parquet(&table, &[batch], 10);
    let out = dir.path().join("out");
    let run = lakescore(os(&[
        &"allocate",
        &"--policy",
        &policy,
        &"--input",
        &table,
        &"--output",
        &out,
    ]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("id column `customer_id` has 1 nulls in row group 1 of"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "refused before the output is touched");

    // Resume reuses every partition, and still counts every customer.
    let lake = customer_lake(
        &dir.path().join("customers"),
        3_000,
        1,
        1000,
        &["2026-11-24", "2026-11-25"],
    );
    let first = allocate(&policy, &lake, &out);
    let run = lakescore(os(&[
        &"allocate",
        &"--policy",
        &policy,
        &"--input",
        &lake,
        &"--output",
        &out,
        &"--mode",
        &"resume",
        &"--json",
    ]));
    let resumed: Value = serde_json::from_str(&run.assert_ok().stdout).unwrap();
    assert_eq!(resumed["reused_partitions"], 2);
    for key in ["rows", "holdout_rows"] {
        assert_eq!(resumed[key], first[key], "{key}");
    }
    for (a, b) in resumed["arms"]
        .as_array()
        .unwrap()
        .iter()
        .zip(first["arms"].as_array().unwrap())
    {
        assert_eq!(a["rows"], b["rows"]);
    }
    let success: Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["holdout_rows"], first["holdout_rows"]);
}

#[test]
fn a_challenger_never_stops_the_champion_and_score_columns_never_clash() {
    let dir = tempfile::tempdir().unwrap();
    // The sample package judges scores in [0, 1]; this challenger's are near 100.
    let features = lakescore::datagen::benchmark_features();
    let wild = crate::common::linear_model(
        dir.path(),
        "wild.json",
        serde_json::json!({"format": "linear", "features": features, "weights": vec![0.0; features.len()],
                           "intercept": 100.0, "link": "identity"}),
    );
    let out = dir.path().join("out");
    let report = dir.path().join("report.json");
    let run = lakescore(os(&[
        &"score",
        &"--model",
        &sample("package"),
        &"--model",
        &wild,
        &"--shadow",
        &"--input",
        &sample("customers"),
        &"--output",
        &out,
        &"--report",
        &report,
    ]));
    run.assert_ok();
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["guards"]["verdict"], "pass", "{}", report["guards"]);
    let success: Value = serde_json::from_slice(&std::fs::read(out.join("_SUCCESS")).unwrap()).unwrap();
    assert_eq!(success["score_columns"], serde_json::json!(["score"]));
    assert_eq!(success["models"].as_array().unwrap().len(), 2);
    let shadow = read_parquet(Path::new(success["shadow"].as_str().unwrap()));
    assert!(scores(&shadow, "score_wild").iter().all(|&s| s == 100.0));

    // A challenger reading a column that is all null: the champion's
    // missing-share guard (at most half the rows with a missing feature)
    // counts the champion's features only, and its drift compares them only.
    let part = read_parquet(&sample("customers").join("dt=2026-11-25/part-00000.parquet"));
    let mut fields: Vec<arrow::datatypes::Field> = part.schema().fields().iter().map(|f| (**f).clone()).collect();
    fields.push(arrow::datatypes::Field::new("sparse", DataType::Float64, true));
    let mut columns = part.columns().to_vec();
    columns.push(arrow::array::new_null_array(&DataType::Float64, part.num_rows()));
    let sparse_table = dir.path().join("sparse/dt=2026-11-25/part-00000.parquet");
    let batch = RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap();
    write_parquet(&sparse_table, &[batch], 8192);
    let sparse = crate::common::linear_model(
        dir.path(),
        "sparse.json",
        serde_json::json!({"format": "linear", "features": ["sparse"], "weights": [1.0], "intercept": 0.0,
                           "link": "logistic"}),
    );
    let sparse_report = dir.path().join("sparse.json.report");
    let run = lakescore(os(&[
        &"score",
        &"--model",
        &sample("package"),
        &"--model",
        &sparse,
        &"--input",
        &dir.path().join("sparse"),
        &"--output",
        &dir.path().join("sparse-out"),
        &"--report",
        &sparse_report,
    ]));
    run.assert_ok();
    let report: Value = serde_json::from_slice(&std::fs::read(&sparse_report).unwrap()).unwrap();
    assert_eq!(report["guards"]["verdict"], "pass", "{}", report["guards"]);
    let drifted: Vec<&str> = report["drift"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(!drifted.contains(&"sparse"), "{drifted:?}");

    // A two-output model `a` writes score_a_0 and score_a_1; a model `a_1`
    // would write score_a_1 again.
    let two = serde_json::json!({"format": "linear", "features": ["age"], "weights": [[0.1], [0.2]],
                                 "intercept": [0.0, 0.0], "link": "softmax"});
    let a = crate::common::linear_model(dir.path(), "a.json", two);
    let a1 = crate::common::linear_model(
        dir.path(),
        "a_1.json",
        serde_json::json!({"format": "linear", "features": ["age"], "weights": [0.1], "intercept": 0.0, "link": "logistic"}),
    );
    let run = lakescore(os(&[
        &"score",
        &"--model",
        &a,
        &"--model",
        &a1,
        &"--input",
        &sample("customers"),
        &"--output",
        &dir.path().join("clash"),
    ]));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("model `a_1` would write a second column `score_a_1`"),
        "{}",
        run.stderr
    );
}
