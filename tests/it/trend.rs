//! `lakescore runs OUT --html/--json`: thirty nights of one output, made by
//! real runs: a drift that starts on night 20 (runs rejected until a model
//! retrained on the new data ships), a new model version on night 25, a run
//! that fails on night 12. The trend page names the drifted feature, marks
//! the version change and renders in a browser; the run report draws the
//! drifted feature's distribution against the reference's.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array};

use crate::browser::assert_renders_in_chromium;
use crate::common::*;

const NIGHTS: u32 = 30;
const DRIFT_FROM: u32 = 20;
const NEW_MODEL_FROM: u32 = 25;
const FAILING_NIGHT: u32 = 12;

fn night_lake(dir: &Path, night: u32) -> std::path::PathBuf {
    let lake = dir.join(format!("lake-{night:02}"));
    lakescore::datagen::generate_lake(
        &lake,
        &lakescore::datagen::LakeSpec {
            rows: 4_000,
            seed: 1000 + u64::from(night),
            dates: vec![format!("2026-11-{night:02}")],
            ..Default::default()
        },
    )
    .unwrap();
    if night >= DRIFT_FROM {
        // Spend recorded in cents from night 20 on.
        crate::contract::plant(&lake, "spend_30d", |c| {
            let values = c.as_any().downcast_ref::<Float64Array>().unwrap();
            Arc::new(values.iter().map(|v| v.map(|v| v * 100.0)).collect::<Float64Array>()) as ArrayRef
        });
    }
    lake
}

fn package(dir: &Path, name: &str, version: &str, spend_weight: f64, reference: &Path) -> std::path::PathBuf {
    let bare = linear_model(
        dir,
        &format!("{name}.json"),
        serde_json::json!({
            "format": "linear",
            "features": ["age", "tenure_days", "spend_30d", "orders_30d"],
            "weights": [0.01, -0.001, spend_weight, 0.3],
            "intercept": -0.5,
            "link": "logistic",
            "fill": [40.0, 0.0, 0.0, 0.0]
        }),
    );
    let folder = dir.join(name);
    model_package(&bare, reference, &folder, &["--name", "churn", "--version", version]);
    folder
}

#[test]
fn thirty_nights_on_the_trend_page() {
    let dir = tempfile::tempdir().unwrap();
    let first = package(
        dir.path(),
        "v1",
        "1.0.0",
        0.002,
        &customer_lake(&dir.path().join("reference"), 20_000, 1, 5000, &["2026-10-31"]),
    );
    // Retrained on the new data (spend in cents), with its reference.
    let second = package(dir.path(), "v2", "2.0.0", 0.00002, &night_lake(dir.path(), DRIFT_FROM));
    let out = dir.path().join("scores");
    let mut reports = Vec::new();
    for night in 1..=NIGHTS {
        let lake = night_lake(dir.path(), night);
        let model = if night >= NEW_MODEL_FROM { &second } else { &first };
        let report = dir.path().join(format!("report-{night:02}.json"));
        let html = dir.path().join(format!("report-{night:02}.html"));
        let extra = [
            "--mode",
            "overwrite",
            "--max-duration",
            "1h",
            "--report",
            report.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ];
        let run = match night {
            FAILING_NIGHT => lakescore_with_env(
                score_args(model, &lake, &out, &extra),
                &[(lakescore::test_hooks::PANIC_IN_ROW_GROUP, "0")],
            ),
            _ => score(model, &lake, &out, &extra),
        };
        let expected = match night {
            FAILING_NIGHT => 1,
            n if (DRIFT_FROM..NEW_MODEL_FROM).contains(&n) => 3,
            _ => 0,
        };
        assert_eq!(run.code, expected, "night {night}: {}", run.stderr);
        reports.push((report, html));
    }

    // The run report of night 20 draws spend_30d against its reference.
    let (_, html) = &reports[DRIFT_FROM as usize - 1];
    let page = std::fs::read_to_string(html).unwrap();
    let moved = &page[page
        .find("id=\"distributions-section\"")
        .expect("moved distributions are drawn")..];
    assert!(moved.contains("<h3>spend_30d"), "the drifted feature is drawn");
    assert!(!moved.contains("<h3>age"), "features that did not move are not");
    assert_renders_in_chromium(html);

    // --json: every run with its summary.
    let listed = lakescore(["runs", out.to_str().unwrap(), "--json"]);
    listed.assert_ok();
    let runs: Vec<serde_json::Value> = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(runs.len(), NIGHTS as usize);
    let night = |n: u32| &runs[n as usize - 1];
    assert_eq!(night(FAILING_NIGHT)["status"], "failed");
    assert!(night(FAILING_NIGHT)["summary"].is_null(), "a failed run was not judged");
    assert_eq!(night(DRIFT_FROM)["status"], "rejected");
    assert_eq!(night(DRIFT_FROM)["summary"]["drift"]["column"], "spend_30d");
    assert_eq!(night(DRIFT_FROM)["summary"]["drift"]["status"], "fail");
    assert_eq!(night(DRIFT_FROM - 1)["summary"]["drift"]["status"], "pass");
    for n in [1, DRIFT_FROM - 1, NEW_MODEL_FROM, NIGHTS] {
        let summary = &night(n)["summary"];
        assert_eq!(summary["rows_scored"], 4000, "night {n}");
        assert_eq!(summary["max_duration_seconds"], 3600);
        let deciles: Vec<f64> = summary["score"]["deciles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_f64().unwrap())
            .collect();
        assert_eq!(deciles.len(), 9);
        assert!(deciles.windows(2).all(|w| w[0] <= w[1]), "night {n}: {deciles:?}");
        // The summary's mean is the report's profile mean, and inside the deciles' range.
        let mean = summary["score"]["mean"].as_f64().unwrap();
        assert!(
            deciles[0] <= mean && mean <= deciles[8],
            "night {n}: {mean} {deciles:?}"
        );
    }
    assert_eq!(night(NEW_MODEL_FROM)["model_version"], "2.0.0");
    assert_eq!(night(NEW_MODEL_FROM - 1)["model_version"], "1.0.0");
    // --last: the newest runs only.
    let last = lakescore(["runs", out.to_str().unwrap(), "--json", "--last", "3"]);
    let last: Vec<serde_json::Value> = serde_json::from_str(&last.stdout).unwrap();
    assert_eq!(last.len(), 3);
    assert_eq!(last[2]["run_id"], night(NIGHTS)["run_id"]);

    // --html: the trend page.
    let trend = dir.path().join("trend.html");
    let made = lakescore(["runs", out.to_str().unwrap(), "--html", trend.to_str().unwrap()]);
    made.assert_ok();
    assert!(made.stderr.contains("the last 30 of 30 runs"), "{}", made.stderr);
    let page = std::fs::read_to_string(&trend).unwrap();
    let row = |n: u32| {
        let id = night(n)["run_id"].as_str().unwrap();
        let start = page.find(&format!("data-run=\"{id}\"")).unwrap();
        let end = start + page[start..].find("</tr>").unwrap();
        &page[start..end]
    };
    // Night 20: rejected, and the drifted feature named, on its line and on the drift plot.
    let drifted = row(DRIFT_FROM);
    assert!(
        drifted.contains(">rejected<") && drifted.contains("<code>spend_30d</code>"),
        "{drifted}"
    );
    assert!(
        drifted.contains("drift of `spend_30d`"),
        "the reason names it: {drifted}"
    );
    let drift_plot = &page[page.find("id=\"drift\"").unwrap()..];
    let drift_plot = &drift_plot[..drift_plot.find("</svg>").unwrap()];
    assert!(drift_plot.contains("class=\"mark-label\"") && drift_plot.contains(">spend_30d, score<"));
    // Night 25: the version change, on its line and on every plot.
    let changed = &page[..page
        .find(&format!(
            "data-run=\"{}\"",
            night(NEW_MODEL_FROM)["run_id"].as_str().unwrap()
        ))
        .unwrap()];
    assert!(
        changed.ends_with("<tr class=\"version-change\" "),
        "the line of night 25 is marked"
    );
    assert!(row(NEW_MODEL_FROM).contains("churn 2.0.0"));
    let plots = page.matches("<svg class=\"trend\"").count();
    assert_eq!(plots, 6);
    assert_eq!(
        page.matches("data-version-changes=\"1\"").count(),
        plots,
        "marked on every plot"
    );
    assert_eq!(page.matches("<line class=\"version-change\"").count(), plots);
    // Night 12: failed, with its reason.
    let failed = row(FAILING_NIGHT);
    assert!(failed.contains(">failed<") && failed.contains("panicked"), "{failed}");
    assert!(!page.contains("http://") && !page.contains("https://"), "no network");
    assert_renders_in_chromium(&trend);
    // The README's screenshots are of these two pages.
    if let Some(keep) = std::env::var_os("LAKESCORE_KEEP_TREND_PAGES") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&trend, Path::new(&keep).join("trend.html")).unwrap();
        std::fs::copy(html, Path::new(&keep).join("report-drift.html")).unwrap();
    }

    // --last on the page: the newest ten, the version change among them.
    let trend = dir.path().join("trend-10.html");
    lakescore([
        "runs",
        out.to_str().unwrap(),
        "--html",
        trend.to_str().unwrap(),
        "--last",
        "10",
    ])
    .assert_ok();
    let page = std::fs::read_to_string(&trend).unwrap();
    assert_eq!(page.matches("<tr class=").count(), 10);
    assert!(page.contains("The last 10 of 30 runs"));
}
