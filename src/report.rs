//! What a run tells the world: the `_SUCCESS` manifest, the `--report` JSON
//! (with the contract's judgement), the `bench` and `check` tables, and the
//! summary a judged run keeps in its ledger record.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::commit::{DriftSummary, OutputFileRecord, RunStatus, RunSummary, ScoreSummary};
use crate::contract::{Checks, Drift, Guards, ScoreHistogram};
use crate::drift::Status;
use crate::identity::RunIdentity;
use crate::model::ModelInfo;
use crate::profile::{Role, TableProfile};
use crate::sla::{Sla, SlaReport};
use crate::util::{group_thousands, peak_rss_bytes, rfc3339_utc};

/// Seconds spent in each stage of the per-row-group work, summed over the
/// worker threads (so they can add up to more than the wall time).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct StageSeconds {
    pub decode: f64,
    pub features: f64,
    /// Contract rules, profiles of features and scores, guards' counts (and keys for uniqueness).
    pub checks: f64,
    pub model: f64,
    pub encode: f64,
    pub write: f64,
}

impl StageSeconds {
    pub fn add(&mut self, other: &StageSeconds) {
        self.decode += other.decode;
        self.features += other.features;
        self.checks += other.checks;
        self.model += other.model;
        self.encode += other.encode;
        self.write += other.write;
    }

    pub fn rows(&self) -> [(&'static str, f64); 6] {
        [
            ("decode", self.decode),
            ("features", self.features),
            ("checks", self.checks),
            ("model", self.model),
            ("encode", self.encode),
            ("write", self.write),
        ]
    }
}

/// Wall-clock seconds of the phases of a run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct WallSeconds {
    pub plan: f64,
    pub score: f64,
    pub commit: f64,
    pub total: f64,
}

/// One input file as the manifest records it.
#[derive(Debug, Clone, Serialize)]
pub struct InputRecord {
    pub path: PathBuf,
    pub bytes: u64,
    pub rows: u64,
    pub row_groups: usize,
    /// SHA-256 of the Parquet footer.
    pub footer_sha256: String,
    pub partition: Vec<(String, String)>,
}

/// `OUT/_SUCCESS`: what was scored, with what, into what.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub run_id: String,
    pub lakescore_version: String,
    pub started_at: String,
    pub finished_at: String,
    pub mode: String,
    pub model: ModelInfo,
    pub input: PathBuf,
    pub id_columns: Vec<String>,
    pub score_columns: Vec<String>,
    pub inputs: Vec<InputRecord>,
    pub outputs: Vec<OutputFileRecord>,
    /// Partitions `--mode resume` found committed and kept.
    pub reused_partitions: Vec<PathBuf>,
    pub rows: u64,
    /// Rows the contract kept out of the output.
    pub rows_quarantined: u64,
    /// The quarantine table of this run, when rows were quarantined.
    pub quarantine: Option<PathBuf>,
    /// The profile of this run's features and scores.
    pub profile: Option<PathBuf>,
    /// The challengers' scores of the partitions this run scored (`--shadow`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<PathBuf>,
    /// With several models: every model of the run (`model` is the set: the
    /// champion's name, a digest of every model's bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    pub wall_seconds: WallSeconds,
}

/// What the contract, the guards and the drift measures said about a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Judgement {
    pub checks: Option<Checks>,
    pub guards: Option<Guards>,
    pub drift: Option<Drift>,
    pub score_histogram: Option<ScoreHistogram>,
}

impl Judgement {
    /// Whether anything says the output must not be published.
    pub fn rejects(&self) -> bool {
        self.checks.as_ref().is_some_and(|c| c.verdict == Status::Fail)
            || self.guards.as_ref().is_some_and(|g| g.verdict == Status::Fail)
            || self.drift.as_ref().is_some_and(|d| d.verdict == Status::Fail)
    }

    /// The failing rules, guards and drift measures, in one line.
    pub fn rejection_summary(&self) -> String {
        let mut failing: Vec<String> = Vec::new();
        if let Some(checks) = &self.checks {
            failing.extend(
                checks
                    .rules
                    .iter()
                    .filter(|r| r.status == Status::Fail)
                    .map(|r| format!("rule {} ({})", r.id, r.detail)),
            );
        }
        if let Some(guards) = &self.guards {
            failing.extend(
                guards
                    .guards
                    .iter()
                    .filter(|g| g.status == Status::Fail)
                    .map(|g| format!("guard {} ({})", g.id, g.detail)),
            );
        }
        if let Some(drift) = &self.drift {
            failing.extend(
                drift
                    .columns
                    .iter()
                    .filter(|c| c.status == Status::Fail)
                    .map(|c| format!("drift of `{}` (PSI {:.3}, JS {:.3})", c.name, c.psi, c.js)),
            );
        }
        failing.join("; ")
    }
}

/// `--report FILE`: the run in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `score`, `check` or `bench`.
    pub command: &'static str,
    pub run_id: String,
    /// The UUID OpenLineage events know this run by.
    pub run_uuid: String,
    /// `succeeded`; `sla_missed` (published, late or short); or `rejected`
    /// when a rule, guard or drift threshold said no (nothing was published).
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: String,
    pub model: ModelInfo,
    pub input: PathBuf,
    /// The version of a table format's input that was read (`delta
    /// version 7`); absent for a folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_snapshot: Option<String>,
    /// The version of the output table the run made, for a table format
    /// (`"delta version 3"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_snapshot: Option<String>,
    pub output: Option<PathBuf>,
    pub device: String,
    /// Which CPU kernels the model's trees ran on (`"avx2 bytes 300 of 300
    /// trees"`; `LAKESCORE_SIMD` caps them); absent without trees or on a GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_kernels: Option<String>,
    pub threads: usize,
    pub files: usize,
    pub row_groups: usize,
    pub rows: u64,
    /// Rows scored by this run (reused partitions excluded).
    pub rows_scored: u64,
    /// Rows not scored, sent to the quarantine table by the contract.
    pub rows_quarantined: u64,
    /// Rows scored with flags in `lakescore_flags`.
    pub rows_flagged: u64,
    pub reused_partitions: usize,
    /// Bytes of input read: the data files' sizes for a local table (what a
    /// mapping may touch), the bytes fetched for one on object storage.
    pub bytes_read: u64,
    /// Requests made to object storage for the input (none for a local one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<u64>,
    /// The input's request counters, read when the report is finished.
    #[serde(skip)]
    pub input_io: Option<std::sync::Arc<crate::store::IoCounters>>,
    pub bytes_written: u64,
    pub rows_per_second: f64,
    pub wall_seconds: WallSeconds,
    pub stage_seconds: StageSeconds,
    pub peak_rss_bytes: u64,
    pub quarantine: Option<PathBuf>,
    pub profile: Option<PathBuf>,
    /// The challengers' scores of a `--shadow` run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<PathBuf>,
    /// With several models: champion against challengers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<crate::compare::Comparison>,
    /// With several models: each of them (`model` is then the set: the
    /// champion's name, a digest of every model's bytes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelInfo>,
    /// The SLA limits given, judged (`score` only).
    pub sla: Option<SlaReport>,
    #[serde(flatten)]
    pub judgement: Judgement,
    /// The run's profile itself, for lineage facets (not in the JSON: the
    /// profile file is).
    #[serde(skip)]
    pub table_profile: Option<std::sync::Arc<TableProfile>>,
}

impl RunReport {
    /// A report of a run that has just started.
    pub fn new(
        command: &'static str,
        identity: &RunIdentity,
        model: &ModelInfo,
        input: &Path,
        device: &str,
        threads: usize,
    ) -> RunReport {
        RunReport {
            command,
            run_id: identity.run_id.clone(),
            run_uuid: identity.uuid.clone(),
            status: RunStatus::Running,
            started_at: rfc3339_utc(identity.started_at),
            finished_at: String::new(),
            model: model.clone(),
            input: input.to_path_buf(),
            input_snapshot: None,
            output_snapshot: None,
            output: None,
            device: device.to_string(),
            cpu_kernels: None,
            threads,
            files: 0,
            row_groups: 0,
            rows: 0,
            rows_scored: 0,
            rows_quarantined: 0,
            rows_flagged: 0,
            reused_partitions: 0,
            bytes_read: 0,
            requests: None,
            input_io: None,
            bytes_written: 0,
            rows_per_second: 0.0,
            wall_seconds: WallSeconds::default(),
            stage_seconds: StageSeconds::default(),
            peak_rss_bytes: 0,
            quarantine: None,
            profile: None,
            shadow: None,
            comparison: None,
            models: Vec::new(),
            sla: None,
            judgement: Judgement::default(),
            table_profile: None,
        }
    }

    /// Stamps the end of the run: total time, rate, memory.
    pub fn finish(mut self, clock: Instant) -> RunReport {
        let total = clock.elapsed().as_secs_f64();
        self.finished_at = rfc3339_utc(SystemTime::now());
        self.wall_seconds.total = total;
        self.rows_per_second = rows_per_second(self.rows_scored, total);
        self.peak_rss_bytes = peak_rss_bytes();
        if let Some(io) = &self.input_io {
            self.bytes_read = io.bytes();
            self.requests = Some(io.requests());
        }
        self
    }

    /// The end of a run the contract rejected: nothing was published.
    pub fn finish_rejected(mut self, clock: Instant) -> RunReport {
        self.status = RunStatus::Rejected;
        self.bytes_written = 0;
        self.finish(clock)
    }
}

/// The rate a run scored at: the rows it scored (on resume, reused partitions
/// took no time) per wall second.
pub fn rows_per_second(rows_scored: u64, seconds: f64) -> f64 {
    rows_scored as f64 / seconds.max(1e-9)
}

/// `--report FILE` of a run that failed: enough for a pipeline to say why.
#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    pub status: RunStatus,
    pub exit_code: i32,
    /// The error and its causes, outermost first.
    pub error: Vec<String>,
    pub peak_rss_bytes: u64,
}

impl FailureReport {
    /// The report of `error`, which ends the process with `exit_code`.
    pub fn new(error: &(dyn std::error::Error + 'static), exit_code: i32) -> Self {
        FailureReport {
            status: RunStatus::Failed,
            exit_code,
            error: crate::util::causes(error).map(|e| e.to_string()).collect(),
            peak_rss_bytes: crate::util::peak_rss_bytes(),
        }
    }
}

impl RunReport {
    /// The `lakescore bench` table.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "model {} ({}), {} rows, {} files, {} row groups, {} threads, device {}\n\n",
            self.model.name,
            self.model.format,
            group_thousands(self.rows),
            self.files,
            self.row_groups,
            self.threads,
            self.device,
        ));
        if let Some(kernels) = &self.cpu_kernels {
            out.push_str(&format!("tree kernels: {kernels}\n\n"));
        }
        let busy: f64 = self.stage_seconds.rows().iter().map(|(_, s)| s).sum();
        out.push_str(&format!(
            "{:<10} {:>10} {:>7} {:>14}\n",
            "stage", "thread-s", "share", "rows/thread-s"
        ));
        for (stage, seconds) in self.stage_seconds.rows() {
            let share = if busy > 0.0 { 100.0 * seconds / busy } else { 0.0 };
            let rate = if seconds > 0.0 {
                group_thousands((self.rows_scored as f64 / seconds) as u64)
            } else {
                "-".into()
            };
            out.push_str(&format!("{stage:<10} {seconds:>10.3} {share:>6.1}% {rate:>14}\n"));
        }
        out.push_str(&format!(
            "\nwall {:.3} s (plan {:.3}, score {:.3}, commit {:.3}), {} rows/s, peak RSS {:.0} MiB\n",
            self.wall_seconds.total,
            self.wall_seconds.plan,
            self.wall_seconds.score,
            self.wall_seconds.commit,
            group_thousands(self.rows_per_second as u64),
            self.peak_rss_bytes as f64 / (1024.0 * 1024.0),
        ));
        out
    }
}

impl RunReport {
    /// The `lakescore check` table: every rule, worst first.
    pub fn render_checks(&self) -> String {
        let mut out = format!(
            "{} against model {} {}: {} rows in {} files\n\n",
            self.input.display(),
            self.model.name,
            self.model.version.as_deref().unwrap_or(""),
            group_thousands(self.rows),
            self.files
        );
        let Some(checks) = &self.judgement.checks else {
            out.push_str("no rules were run\n");
            return out;
        };
        if checks.rules.is_empty() {
            out.push_str("the contract has no rules\n");
        }
        let mut rules: Vec<_> = checks.rules.iter().collect();
        rules.sort_by_key(|r| std::cmp::Reverse(r.status));
        out.push_str(&format!(
            "{:<6} {:<28} {:<10} {:>12}  detail\n",
            "status", "rule", "policy", "failing"
        ));
        for rule in rules {
            let status = match rule.status {
                Status::Pass => "pass",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            out.push_str(&format!(
                "{status:<6} {:<28} {:<10} {:>12}  {}\n",
                rule.id,
                rule.policy,
                group_thousands(rule.failing),
                rule.detail
            ));
            if !rule.examples.is_empty() {
                out.push_str(&format!("{:<58}e.g. {}\n", "", rule.examples.join("; ")));
            }
        }
        let verdict = match checks.verdict {
            Status::Pass => "all rules pass",
            Status::Warn => "rules warn; nothing says stop",
            Status::Fail => "a failing rule says stop",
        };
        out.push_str(&format!("\n{verdict}\n"));
        if let Some(drift) = &self.judgement.drift {
            let moved: Vec<String> = drift
                .columns
                .iter()
                .filter(|c| c.status != Status::Pass)
                .map(|c| {
                    let status = if c.status == Status::Fail { "fail" } else { "warn" };
                    format!("`{}` PSI {:.3} JS {:.3} ({status})", c.name, c.psi, c.js)
                })
                .collect();
            match (drift.verdict, moved.is_empty()) {
                (_, true) => out.push_str(&format!("drift: {} columns within thresholds\n", drift.columns.len())),
                (Status::Fail, false) => out.push_str(&format!("drift says stop: {}\n", moved.join("; "))),
                (_, false) => out.push_str(&format!("drift warns: {}\n", moved.join("; "))),
            }
        }
        out
    }
}

impl RunReport {
    /// What this judged run keeps in its ledger record for the trend,
    /// `wall_seconds` into it, under `sla`.
    pub fn summary(&self, sla: &Sla, wall_seconds: f64) -> RunSummary {
        let judgement = &self.judgement;
        let rules = judgement
            .checks
            .iter()
            .flat_map(|c| &c.rules)
            .map(|r| (r.id.as_str(), r.status));
        let guards = judgement
            .guards
            .iter()
            .flat_map(|g| &g.guards)
            .map(|g| (g.id, g.status));
        let (rules_failed, rules_warned) = failed_and_warned(rules);
        let (guards_failed, guards_warned) = failed_and_warned(guards);
        let score = self.table_profile.as_ref().and_then(|profile| {
            let column = profile.columns.iter().find(|c| c.role == Role::Score)?;
            Some(ScoreSummary {
                column: column.name.clone(),
                mean: column.mean,
                deciles: (1..10)
                    .map_while(|i| column.quantile(f64::from(i) / 10.0))
                    .filter(|d| d.is_finite())
                    .collect(),
            })
        });
        let drift = judgement.drift.as_ref().and_then(|drift| {
            // The feature that matters most: the worst status first (each
            // feature has its own thresholds, and JS alone can fail one),
            // then the largest PSI (the table is sorted by PSI).
            let features = drift
                .columns
                .iter()
                .filter(|c| c.kind == Role::Feature && c.psi.is_finite());
            let worst = features.fold(None::<&crate::drift::ColumnDrift>, |worst, c| match worst {
                Some(w) if w.status >= c.status => Some(w),
                _ => Some(c),
            })?;
            Some(DriftSummary {
                verdict: drift.verdict,
                column: worst.name.clone(),
                psi: worst.psi,
                status: worst.status,
                psi_warn: worst.psi_warn,
                psi_fail: worst.psi_fail,
                moved: drift
                    .columns
                    .iter()
                    .filter(|c| c.status != Status::Pass)
                    .map(|c| c.name.clone())
                    .collect(),
            })
        });
        RunSummary {
            rows_scored: self.rows_scored,
            rows_flagged: self.rows_flagged,
            wall_seconds: Some(wall_seconds),
            max_duration_seconds: sla.max_duration_seconds,
            score,
            drift,
            rules_failed,
            rules_warned,
            guards_failed,
            guards_warned,
        }
    }
}

/// The ids that failed, then those that warned.
fn failed_and_warned<'a>(items: impl Iterator<Item = (&'a str, Status)>) -> (Vec<String>, Vec<String>) {
    let (mut failed, mut warned) = (Vec::new(), Vec::new());
    for (id, status) in items {
        match status {
            Status::Fail => failed.push(id.to_string()),
            Status::Warn => warned.push(id.to_string()),
            Status::Pass => {}
        }
    }
    (failed, warned)
}
