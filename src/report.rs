//! What a run tells the world: the `_SUCCESS` manifest, the `--report` JSON,
//! and the `bench` table.

use std::path::PathBuf;

use serde::Serialize;

use crate::commit::OutputFileRecord;
use crate::model::ModelInfo;

/// Seconds spent in each stage of the per-row-group work, summed over the
/// worker threads (so they can add up to more than the wall time).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct StageSeconds {
    pub decode: f64,
    pub features: f64,
    pub model: f64,
    pub encode: f64,
    pub write: f64,
}

impl StageSeconds {
    pub fn add(&mut self, other: &StageSeconds) {
        self.decode += other.decode;
        self.features += other.features;
        self.model += other.model;
        self.encode += other.encode;
        self.write += other.write;
    }

    pub fn rows(&self) -> [(&'static str, f64); 5] {
        [
            ("decode", self.decode),
            ("features", self.features),
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
    pub wall_seconds: WallSeconds,
}

/// `--report FILE`: the run in numbers.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub run_id: String,
    pub status: &'static str,
    pub model: ModelInfo,
    pub input: PathBuf,
    pub output: Option<PathBuf>,
    pub device: String,
    pub threads: usize,
    pub files: usize,
    pub row_groups: usize,
    pub rows: u64,
    /// Rows scored by this run (reused partitions excluded).
    pub rows_scored: u64,
    pub reused_partitions: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub rows_per_second: f64,
    pub wall_seconds: WallSeconds,
    pub stage_seconds: StageSeconds,
    pub peak_rss_bytes: u64,
}

/// `--report FILE` of a run that failed: enough for a pipeline to say why.
#[derive(Debug, Clone, Serialize)]
pub struct FailureReport {
    pub status: &'static str,
    pub exit_code: i32,
    /// The error and its causes, outermost first.
    pub error: Vec<String>,
    pub peak_rss_bytes: u64,
}

impl FailureReport {
    pub fn new(error: &crate::Error) -> Self {
        let mut chain = vec![error.to_string()];
        let mut source = std::error::Error::source(error);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        FailureReport {
            status: "failed",
            exit_code: error.exit_code(),
            error: chain,
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

/// `12345678` -> `12,345,678`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group_thousands(0), "0");
        assert_eq!(super::group_thousands(999), "999");
        assert_eq!(super::group_thousands(1000), "1,000");
        assert_eq!(super::group_thousands(12345678), "12,345,678");
    }
}
