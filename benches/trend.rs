//! The trend page of a year of nights: read 365 ledger records (each with
//! the summary a judged run leaves) from an output folder and draw the page,
//! as `lakescore runs OUT --html FILE --last 365` does. Target: well under a
//! second.
//!
//! cargo bench --bench trend

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use lakescore::commit::{DriftSummary, LedgerRecord, META_DIR, RunStatus, RunSummary, ScoreSummary, WriteMode};
use lakescore::drift::Status;

const NIGHTS: u64 = 365;

/// A ledger of `NIGHTS` nightly runs like a real one: a rejected night a
/// month, a new model version each quarter.
fn write_ledger(out: &Path) {
    let folder = out.join(META_DIR).join("runs");
    std::fs::create_dir_all(&folder).unwrap();
    for night in 0..NIGHTS {
        let start = UNIX_EPOCH + Duration::from_secs(1_733_540_400 + night * 86_400);
        let run_id = format!("night-{night:03}");
        let mut record = LedgerRecord::starting(
            &run_id,
            "",
            start,
            WriteMode::Overwrite,
            Path::new("s3://lake/customers"),
        );
        let rejected = night % 30 == 17;
        record.status = if rejected {
            RunStatus::Rejected
        } else {
            RunStatus::Succeeded
        };
        record.finished_at = Some(lakescore::util::rfc3339_utc(start + Duration::from_secs(540)));
        record.model_name = "churn".into();
        record.model_version = Some(format!("1.{}.0", night / 91));
        record.model_sha256 = format!("{:064x}", night / 91);
        record.input_fingerprint = "f".repeat(64);
        record.input_files = 240;
        record.rows = Some(10_000_000 + night * 1000);
        record.rows_quarantined = Some(night * 7 % 500);
        record.error = rejected.then(|| "drift of `spend_30d` (PSI 0.412, JS 0.301)".to_string());
        let psi = if rejected {
            0.412
        } else {
            0.01 + (night % 7) as f64 * 0.01
        };
        record.summary = Some(RunSummary {
            rows_scored: 10_000_000,
            rows_flagged: night % 40,
            wall_seconds: Some(520.0 + (night % 11) as f64 * 9.0),
            max_duration_seconds: Some(900),
            score: Some(ScoreSummary {
                column: "score".into(),
                mean: Some(0.21),
                deciles: (1..10).map(|d| f64::from(d) * 0.04).collect(),
            }),
            drift: Some(DriftSummary {
                verdict: if rejected { Status::Fail } else { Status::Pass },
                column: "spend_30d".into(),
                psi,
                status: if rejected { Status::Fail } else { Status::Pass },
                psi_warn: Some(0.1),
                psi_fail: Some(0.25),
                moved: if rejected {
                    vec!["spend_30d".into(), "score".into()]
                } else {
                    Vec::new()
                },
            }),
            rules_failed: Vec::new(),
            rules_warned: vec!["age.range".into(), "spend_30d.null_share".into()],
            guards_failed: Vec::new(),
            guards_warned: Vec::new(),
        });
        let bytes = serde_json::to_vec_pretty(&record).unwrap();
        std::fs::write(folder.join(format!("{run_id}.json")), bytes).unwrap();
    }
}

fn bench_trend(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores");
    write_ledger(&out);
    let mut group = c.benchmark_group("trend");
    group.bench_function("365 nights: read the ledger and draw the page", |b| {
        b.iter(|| {
            let runs = lakescore::runs::list(black_box(&out)).unwrap();
            assert_eq!(runs.len(), NIGHTS as usize);
            lakescore::runs::trend::render("s3://lake/scores", &runs, runs.len())
        })
    });
    let runs = lakescore::runs::list(&out).unwrap();
    group.bench_function("365 nights: draw the page", |b| {
        b.iter(|| lakescore::runs::trend::render("s3://lake/scores", black_box(&runs), runs.len()))
    });
    group.finish();
}

criterion_group!(benches, bench_trend);
criterion_main!(benches);
