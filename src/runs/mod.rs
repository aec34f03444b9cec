//! `lakescore runs OUT`: the catalog of what was scored into an output, read
//! from its run ledger (`OUT/_lakescore/runs/`): when each run happened, with
//! which model, from which input (and its fingerprint), how many rows, and how
//! it ended. On object storage, the ledger is objects under the same names,
//! and a run's lease says whether it still runs.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::commit::{LedgerRecord, META_DIR, RunStatus};
use crate::lock::Holder;

pub mod trend;

#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error("`{}` has no run ledger (`{META_DIR}/runs`): lakescore has not written there", out.display())]
    NoLedger { out: PathBuf },
    #[error("cannot read the run ledger `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("run ledger entry `{}` is not a lakescore ledger record: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("cannot read the run ledger: {message}")]
    Remote { message: String },
}

/// One run as `lakescore runs` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RunEntry {
    #[serde(flatten)]
    pub record: LedgerRecord,
    /// The status to show: the ledger's, except that a run recorded as
    /// `running` that no longer holds the output's lock is `died` (killed, or
    /// its machine went down, before it could record its end).
    pub outcome: String,
    pub seconds: Option<f64>,
}

/// Every run recorded in `out` (a local folder, or a URL on object storage),
/// oldest first.
pub fn list(out: &Path) -> Result<Vec<RunEntry>, RunsError> {
    let text = out.to_string_lossy();
    if crate::store::is_remote(&text) {
        let remote = crate::store::Remote::parse(&text).map_err(|error| RunsError::Remote {
            message: error.to_string(),
        })?;
        let ledger = crate::commit::object::ledger(&remote).map_err(|error| RunsError::Remote {
            message: crate::util::error_chain(&error),
        })?;
        if ledger.records.is_empty() {
            return Err(RunsError::NoLedger { out: out.to_path_buf() });
        }
        return entries(ledger.records, ledger.holder.as_ref());
    }
    let folder = out.join(META_DIR).join("runs");
    let listing = fs::read_dir(&folder).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RunsError::NoLedger { out: out.to_path_buf() },
        _ => RunsError::Read {
            path: folder.clone(),
            source,
        },
    })?;
    let holder: Option<Holder> = crate::lock::holder_of(&out.join(META_DIR));
    let mut records = Vec::new();
    for entry in listing {
        let path = entry
            .map_err(|source| RunsError::Read {
                path: folder.clone(),
                source,
            })?
            .path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bytes = fs::read(&path).map_err(|source| RunsError::Read {
            path: path.clone(),
            source,
        })?;
        records.push((path, bytes));
    }
    entries(records, holder.as_ref())
}

/// The runs of these ledger records (where each was read, its bytes), given
/// who holds the output now.
fn entries(records: Vec<(PathBuf, Vec<u8>)>, holder: Option<&Holder>) -> Result<Vec<RunEntry>, RunsError> {
    let mut runs = Vec::new();
    for (path, bytes) in records {
        let record: LedgerRecord = serde_json::from_slice(&bytes).map_err(|e| RunsError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let outcome = match record.status {
            RunStatus::Running if !is_alive(&record, holder) => "died",
            status => status.as_str(),
        }
        .to_string();
        let seconds = record.finished_at.as_deref().and_then(|end| {
            let (start, end) = (
                crate::util::parse_instant(&record.started_at)?,
                crate::util::parse_instant(end)?,
            );
            Some((end - start) as f64)
        });
        runs.push(RunEntry {
            record,
            outcome,
            seconds,
        });
    }
    // Run ids sort by the second they started; their UUIDs (version 7) by the
    // millisecond.
    runs.sort_by(|a, b| {
        (&a.record.started_at, &a.record.run_uuid, &a.record.run_id).cmp(&(
            &b.record.started_at,
            &b.record.run_uuid,
            &b.record.run_id,
        ))
    });
    Ok(runs)
}

/// A run recorded as running is alive when it holds the output's lock now,
/// as the lock itself says ([`crate::lock::holder_of`]): not what the lock
/// file names, whose pid may have been reused and whose host may be another.
fn is_alive(record: &LedgerRecord, holder: Option<&Holder>) -> bool {
    holder.is_some_and(|h| h.run_id == record.run_id)
}

/// The runs as a table, one line each.
pub fn render(runs: &[RunEntry]) -> String {
    let mut rows = vec![[
        "run".to_string(),
        "started".into(),
        "secs".into(),
        "outcome".into(),
        "model".into(),
        "rows".into(),
        "quarantined".into(),
        "input".into(),
        "fingerprint".into(),
    ]];
    for run in runs {
        let r = &run.record;
        let model = match &r.model_version {
            Some(version) => format!("{} {version}", r.model_name),
            None => r.model_name.clone(),
        };
        let number = |n: Option<u64>| n.map_or("-".to_string(), |n| n.to_string());
        rows.push([
            r.run_id.clone(),
            r.started_at.clone(),
            run.seconds.map_or("-".into(), |s| format!("{s:.0}")),
            run.outcome.clone(),
            model,
            number(r.rows),
            number(r.rows_quarantined),
            format!("{} ({} files)", r.input.display(), r.input_files),
            r.input_fingerprint.get(..12).unwrap_or("-").to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        let _ = writeln!(text, "{}", cells.join("  ").trim_end());
    }
    for run in runs
        .iter()
        .filter(|r| r.record.error.is_some() || !r.record.sla_missed.is_empty())
    {
        let r = &run.record;
        if let Some(error) = &r.error {
            let _ = writeln!(text, "{}: {error}", r.run_id);
        }
        if !r.sla_missed.is_empty() {
            let _ = writeln!(text, "{}: missed SLA {}", r.run_id, r.sla_missed.join(", "));
        }
    }
    text
}
