//! Commit: make staged output visible atomically, record it, and let a re-run
//! pick up where a crashed one stopped.
//!
//! Layout of an output table `OUT`:
//!
//! ```text
//! OUT/dt=2026-11-25/part-00000.parquet   published data, mirroring the input
//! OUT/_SUCCESS                           JSON manifest, written last
//! OUT/_lakescore/runs/<run id>.json      the run ledger: one record per run
//! OUT/_lakescore/partitions/<hash>.json  one record per committed partition
//! OUT/_lakescore/staging/<run id>/       staged files of a running run
//! OUT/_lakescore/lock                    the running run's lock (see `lock`)
//! ```
//!
//! Architecture invariant: nothing becomes visible in `OUT` before it is
//! complete. Files are written and fsynced under `_lakescore/staging` (same
//! filesystem, so renames are atomic, and a name starting with `_` so that
//! readers skip it); a leaf partition folder is then moved into place with one
//! rename, or swapped with the old one by `renameat2(RENAME_EXCHANGE)`; files
//! directly in a folder that also holds partitions (such as `OUT` itself) are
//! renamed one by one. `_SUCCESS` is removed before the first change and
//! written after the last.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::lock::{Holder, LockError, OutputLock};
pub use summary::{DriftSummary, RunSummary, ScoreSummary};

#[cfg(feature = "delta")]
pub mod delta;
pub mod object;
mod summary;
use crate::test_hooks;
use crate::util::{fsync_dir, is_atomic_write_temporary, rfc3339_utc, sha256_hex, write_atomically};
pub use object::ObjectOutput;

/// Where a run publishes its table: what a new output (object storage, a
/// Delta or Iceberg table) implements, beside its [`Committer`].
pub trait OutputTable: Send + Sync {
    /// The output's location, for messages, reports and lineage.
    fn location(&self) -> &Path;

    /// Refuses an output that overlaps the input at `input`, or that one of
    /// the input's data `files` lies in (through a link): a run must never
    /// read its own output or publish over its input.
    fn check_separate(&self, input: &Path, files: &[&Path]) -> Result<(), CommitError>;

    /// Takes the output's lock now when the output was written by lakescore
    /// before, so that a second run is refused before it reads a footer; `None`
    /// for a new output, whose lock [`OutputTable::begin`] takes (creating the
    /// lock would touch the output before the input is known to be good).
    fn lock_if_known(&self, holder: &Holder) -> Result<Option<OutputLock>, CommitError>;

    /// Whether the output holds published data (a data file or folder, or a
    /// manifest), whatever its format.
    fn holds_published_output(&self) -> Result<bool, CommitError>;

    /// Begins the run's transaction: takes the lock (unless `lock` is it),
    /// checks the output against `mode`, clears what dead runs left, opens
    /// staging, and records the run as running. Nothing visible changes.
    fn begin(
        &self,
        mode: WriteMode,
        ledger: LedgerRecord,
        lock: Option<OutputLock>,
    ) -> Result<Box<dyn Committer>, CommitError>;
}

/// One run's transaction on an output: staging, publishing, aborting, the
/// resume records and the ledger, under the output's lock. Every
/// implementation keeps the invariants of ARCHITECTURE.md:
///
/// - **Nothing becomes visible before it is complete.** Staged files are
///   invisible to the table's readers until [`Committer::publish`]; a run that
///   aborts, or dies, leaves nothing visible (what it staged is removed, now
///   or by the next run's [`OutputTable::begin`]); the table's completion
///   marker (`_SUCCESS`, or a table format's commit) is written last, by
///   [`Committer::finish`], and removed before the first change.
/// - **Resume is exact.** [`Committer::reusable_partition`] answers only in
///   `--mode resume`, only for a partition published under the same key whose
///   files are all still there as recorded; a partition's old record goes
///   before its new files are published and the new one comes after, so a
///   crash in between costs a re-score, never a wrong skip.
/// - **One writer per output.** The lock taken at `begin` is held until the
///   committer is finished or aborted and its ledger entry closed; another
///   run's `begin` fails with [`CommitError::Locked`].
/// - **Publishing, once begun, finishes**: a stop is heard before `publish`,
///   not during it.
pub trait Committer: Send + Sync {
    fn run_id(&self) -> &str;

    /// Where the output file with this relative path is staged. (Staging is on
    /// a local disk: an output elsewhere uploads staged files when it
    /// publishes them.)
    fn staged_path(&self, relative: &Path) -> PathBuf;

    /// Where a side output (the quarantine table, the run profile) is staged.
    fn staged_side_path(&self, name: &str) -> PathBuf;

    /// In `--mode resume`, the record of a partition committed before with
    /// the same key whose files are intact.
    fn reusable_partition(&self, partition: &Path, key: &str) -> Option<PartitionRecord>;

    /// Publishes a staged side output as `_lakescore/<folder>/<target_name>`.
    fn publish_side(&self, name: &str, folder: &str, target_name: &str) -> Result<PathBuf, CommitError>;

    /// Publishes staged partitions, each with its record. `all_partitions`
    /// lists every partition folder of the run, reused ones included.
    fn publish(&mut self, partitions: &[PartitionRecord], all_partitions: &[&Path]) -> Result<(), CommitError>;

    /// Puts the staged files of `partitions` into OUT under names no earlier
    /// run used ([`placed_path`] with `suffix`), replacing nothing, each
    /// partition recorded (for resume) with the names its files got, which
    /// the returned records carry. For a table format, whose commit (not the
    /// files' presence) makes them part of the table: files of the versions
    /// before stay, as its readers may still need them.
    fn place(&mut self, partitions: &[PartitionRecord], suffix: &str) -> Result<Vec<PartitionRecord>, CommitError>;

    /// Writes the manifest (JSON bytes), the last step that makes the table
    /// complete, and closes the run in the ledger. A table format passes no
    /// manifest: its commit, made before, is the last step. Returns the
    /// table version the run's output is, for a table format
    /// (`"delta version 3"`).
    fn finish(self: Box<Self>, manifest: Option<&[u8]>, published: Published) -> Result<Option<String>, CommitError>;

    /// Ends a run that publishes nothing: removes what it staged and records
    /// why. `status` is `failed`, `rejected` or `interrupted`.
    fn abort(self: Box<Self>, status: RunStatus, error: &str) -> Result<(), CommitError>;

    /// Keeps the run's numbers for the trend across runs in its ledger
    /// record, written when the run ends ([`Committer::finish`] or
    /// [`Committer::abort`]).
    fn record_summary(&mut self, summary: RunSummary);
}

/// A table in a local folder, published by renames: the first [`OutputTable`].
#[derive(Debug, Clone)]
pub struct LocalOutput {
    root: PathBuf,
}

impl LocalOutput {
    pub fn new(root: impl Into<PathBuf>) -> LocalOutput {
        LocalOutput { root: root.into() }
    }
}

impl OutputTable for LocalOutput {
    fn location(&self) -> &Path {
        &self.root
    }

    fn check_separate(&self, input: &Path, files: &[&Path]) -> Result<(), CommitError> {
        if crate::store::is_remote(&input.to_string_lossy()) {
            // An input on object storage cannot be, or link into, a local folder.
            return Ok(());
        }
        check_separate(input, &self.root)?;
        let output_abs = resolve_missing(&self.root).map_err(io_error("resolve", &self.root))?;
        for file in files {
            let target = fs::canonicalize(file).map_err(io_error("resolve", file))?;
            if target.starts_with(&output_abs) {
                return Err(CommitError::LinkIntoOutput {
                    file: file.to_path_buf(),
                    target,
                    output: self.root.clone(),
                });
            }
        }
        Ok(())
    }

    fn lock_if_known(&self, holder: &Holder) -> Result<Option<OutputLock>, CommitError> {
        let meta = self.root.join(META_DIR);
        match meta.is_dir() {
            true => Ok(Some(OutputLock::acquire(&self.root, &meta, holder)?)),
            false => Ok(None),
        }
    }

    fn holds_published_output(&self) -> Result<bool, CommitError> {
        holds_published_output(&self.root)
    }

    fn begin(
        &self,
        mode: WriteMode,
        ledger: LedgerRecord,
        lock: Option<OutputLock>,
    ) -> Result<Box<dyn Committer>, CommitError> {
        Ok(Box::new(Transaction::begin(&self.root, mode, ledger, lock)?))
    }
}

/// Folder of lakescore's own bookkeeping inside an output table.
pub const META_DIR: &str = "_lakescore";
/// The manifest, whose presence says the table is complete.
pub const SUCCESS_FILE: &str = "_SUCCESS";

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(
        "output `{}` already holds a table; pass `--mode overwrite` to replace its partitions \
         or `--mode resume` to finish an interrupted run",
        path.display()
    )]
    OutputExists { path: PathBuf },
    #[error("output `{}` exists and is not a folder", path.display())]
    OutputNotADirectory { path: PathBuf },
    #[error("input `{}` and output `{}` overlap; write the scores outside the input table", input.display(), output.display())]
    Overlap { input: PathBuf, output: PathBuf },
    #[error(
        "input file `{}` is a link to `{}`, inside the output `{}`: a run must not read its own output",
        file.display(),
        target.display(),
        output.display()
    )]
    LinkIntoOutput {
        file: PathBuf,
        target: PathBuf,
        output: PathBuf,
    },
    #[error("cannot {operation} `{}`", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot publish `{}`: `{}` exists and is not a folder", staged.display(), target.display())]
    TargetNotADirectory { staged: PathBuf, target: PathBuf },
    /// The output's lock could not be taken (`crate::Error::Locked` when it
    /// reaches the top: another run holds it, exit code 5).
    #[error(transparent)]
    Locked(#[from] LockError),
    /// A Delta output that cannot be written as asked.
    #[error("Delta table `{location}` {problem}")]
    Delta { location: String, problem: String },
    /// Another writer's commit to a Delta output conflicts with this run's.
    #[error(
        "Delta table `{location}`: version {version}, committed by another writer while this run scored, {what}; \
         this run committed nothing (its files stay, and `--mode resume` commits them when the partition is free)"
    )]
    DeltaConflict {
        location: String,
        version: u64,
        what: String,
    },
    /// A request to an output on object storage failed.
    #[error("{operation} `{url}` failed: {message}")]
    Remote {
        operation: &'static str,
        url: String,
        message: String,
    },
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CommitError + 'a {
    move |source| CommitError::Io {
        operation,
        path: path.to_path_buf(),
        source,
    }
}

/// What to do when the output already holds a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteMode {
    /// Refuse to write into an output that holds published data.
    #[default]
    ErrorIfExists,
    /// Replace the partitions this run writes; other partitions stay.
    Overwrite,
    /// Skip partitions already committed for the same model, options and
    /// inputs; write the rest.
    Resume,
}

impl FromStr for WriteMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "error-if-exists" => Ok(WriteMode::ErrorIfExists),
            "overwrite" => Ok(WriteMode::Overwrite),
            "resume" => Ok(WriteMode::Resume),
            other => Err(format!(
                "`{other}` is not a mode; expected `error-if-exists`, `overwrite` or `resume`"
            )),
        }
    }
}

impl std::fmt::Display for WriteMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WriteMode::ErrorIfExists => "error-if-exists",
            WriteMode::Overwrite => "overwrite",
            WriteMode::Resume => "resume",
        })
    }
}

/// One published output file, relative to the output root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFileRecord {
    pub path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
}

/// The output files of one partition folder (`""` is the output root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    pub partition: PathBuf,
    /// Digest of everything the partition's bytes depend on; see [`partition_key`].
    pub key: String,
    pub run_id: String,
    pub files: Vec<OutputFileRecord>,
}

/// The digest that decides whether a committed partition can be reused by
/// `--mode resume`: the lakescore version (it decides the encoding), the model
/// bytes, the output options, and each input file's path, size and footer.
pub fn partition_key(model_sha256: &str, options: &str, inputs: &[(&Path, u64, &str)]) -> String {
    let mut text = format!(
        "lakescore {}\nmodel {model_sha256}\noptions {options}\n",
        env!("CARGO_PKG_VERSION")
    );
    for (path, size, fingerprint) in inputs {
        text.push_str(&format!("input {} {size} {fingerprint}\n", path.display()));
    }
    sha256_hex(text.as_bytes())
}

/// Errors out when input and output overlap: a run must never read its own
/// output or publish over its input.
pub fn check_separate(input: &Path, output: &Path) -> Result<(), CommitError> {
    let input_abs = fs::canonicalize(input).map_err(io_error("resolve", input))?;
    let output_abs = resolve_missing(output).map_err(io_error("resolve", output))?;
    if output_abs.starts_with(&input_abs) || input_abs.starts_with(&output_abs) {
        return Err(CommitError::Overlap {
            input: input.to_path_buf(),
            output: output.to_path_buf(),
        });
    }
    Ok(())
}

/// Canonical form of a path that may not exist yet: its nearest existing
/// ancestor, canonicalized, plus the rest.
fn resolve_missing(path: &Path) -> io::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match fs::canonicalize(existing) {
            Ok(canonical) => {
                return Ok(rest.iter().rev().fold(canonical, |acc: PathBuf, part| match part {
                    Component::ParentDir => acc.parent().map(Path::to_path_buf).unwrap_or(acc),
                    Component::CurDir => acc,
                    other => acc.join(other),
                }));
            }
            Err(_) => {
                let Some(parent) = existing.parent() else {
                    return Ok(absolute);
                };
                rest.push(
                    existing
                        .components()
                        .next_back()
                        .expect("a path with a parent has a last component"),
                );
                existing = parent;
            }
        }
    }
}

/// Whether `out` holds published data: a data entry or a manifest.
pub fn holds_published_output(out: &Path) -> Result<bool, CommitError> {
    if !out.exists() {
        return Ok(false);
    }
    for entry in fs::read_dir(out).map_err(io_error("list", out))? {
        let name = entry.map_err(io_error("list", out))?.file_name();
        let name = name.to_string_lossy();
        if name == SUCCESS_FILE || !(name.starts_with('_') || name.starts_with('.')) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// How a run ended (or that it has not yet), in the ledger, the report, the
/// metrics and lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Published.
    Succeeded,
    /// Published, but an SLA was missed.
    SlaMissed,
    /// A contract, guard or drift threshold said no: nothing published.
    Rejected,
    Failed,
    /// Stopped by a signal.
    Interrupted,
    /// Refused: another run holds the output (never in the output's ledger).
    Locked,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::SlaMissed => "sla_missed",
            RunStatus::Rejected => "rejected",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Locked => "locked",
        }
    }

    /// Whether the run's output is published.
    pub fn published(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::SlaMissed)
    }
}

/// One line of the run ledger. Fields added after the first release have
/// defaults, so that `lakescore runs` reads every ledger it ever wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub run_id: String,
    #[serde(default)]
    pub run_uuid: String,
    /// `running`, then how the run ended. A record left at `running` by a
    /// run that died stays so; `lakescore runs` tells it apart.
    pub status: RunStatus,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub lakescore_version: String,
    pub pid: u32,
    pub host: String,
    pub mode: String,
    pub input: PathBuf,
    /// Digest of every input file's path, size and footer: equal digests, same
    /// input.
    #[serde(default)]
    pub input_fingerprint: String,
    #[serde(default)]
    pub input_files: usize,
    pub model_name: String,
    #[serde(default)]
    pub model_version: Option<String>,
    pub model_sha256: String,
    /// Where the model came from in an MLflow registry: the URI as given,
    /// alias, the run that logged it, the files' digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_registry: Option<crate::model::RegistryModel>,
    pub rows: Option<u64>,
    #[serde(default)]
    pub rows_quarantined: Option<u64>,
    /// The SLAs the run missed (its output is published all the same).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sla_missed: Vec<String>,
    pub error: Option<String>,
    /// What the trend page draws: rows flagged, the score's deciles, the
    /// largest drift, the rules that failed (for a run that was judged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<RunSummary>,
}

impl LedgerRecord {
    /// The run, as the holder of its output's lock.
    pub fn holder(&self) -> Holder {
        Holder {
            run_id: self.run_id.clone(),
            pid: self.pid,
            host: self.host.clone(),
            started_at: self.started_at.clone(),
        }
    }

    /// Records how a run that published its output went.
    pub fn record_published(&mut self, published: Published) {
        self.status = match published.sla_missed.is_empty() {
            true => RunStatus::Succeeded,
            false => RunStatus::SlaMissed,
        };
        self.rows = Some(published.rows);
        self.rows_quarantined = Some(published.rows_quarantined);
        self.sla_missed = published.sla_missed;
    }

    /// The record of a run that starts now, on this host, in this process.
    pub fn starting(run_id: &str, run_uuid: &str, started_at: SystemTime, mode: WriteMode, input: &Path) -> Self {
        LedgerRecord {
            run_id: run_id.to_string(),
            run_uuid: run_uuid.to_string(),
            status: RunStatus::Running,
            started_at: rfc3339_utc(started_at),
            finished_at: None,
            lakescore_version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            host: host_name(),
            mode: mode.to_string(),
            input: input.to_path_buf(),
            input_fingerprint: String::new(),
            input_files: 0,
            model_name: String::new(),
            model_version: None,
            model_sha256: String::new(),
            model_registry: None,
            rows: None,
            rows_quarantined: None,
            sla_missed: Vec::new(),
            error: None,
            summary: None,
        }
    }
}

/// How a run that published its output went, for the ledger.
#[derive(Debug, Clone, Default)]
pub struct Published {
    pub rows: u64,
    pub rows_quarantined: u64,
    pub sla_missed: Vec<String>,
}

/// An output table being written by one run.
pub struct Transaction {
    out_root: PathBuf,
    mode: WriteMode,
    run_id: String,
    staging_root: PathBuf,
    ledger_path: PathBuf,
    ledger: LedgerRecord,
    success_removed: bool,
    published_partitions: usize,
    closed: bool,
    /// Held until the transaction is dropped, after its ledger entry is closed.
    _lock: OutputLock,
}

impl Transaction {
    /// Takes the output's lock, checks the output against `mode`, then
    /// prepares staging and records the run in the ledger. Nothing in `out`
    /// changes when this fails (bar the empty `_lakescore` folder the lock
    /// lives in).
    /// `lock` is OUT's lock when the caller took it already.
    pub fn begin(
        out: &Path,
        mode: WriteMode,
        ledger: LedgerRecord,
        lock: Option<OutputLock>,
    ) -> Result<Self, CommitError> {
        if out.exists() && !out.is_dir() {
            return Err(CommitError::OutputNotADirectory {
                path: out.to_path_buf(),
            });
        }
        let meta = out.join(META_DIR);
        let lock = match lock {
            Some(lock) => lock,
            None => OutputLock::acquire(out, &meta, &ledger.holder())?,
        };
        if mode == WriteMode::ErrorIfExists && holds_published_output(out)? {
            return Err(CommitError::OutputExists {
                path: out.to_path_buf(),
            });
        }
        for dir in ["runs", "partitions", "staging"] {
            fs::create_dir_all(meta.join(dir)).map_err(io_error("create folder", &meta.join(dir)))?;
        }
        remove_leftover_staging(&meta.join("staging"));
        for dir in [out.to_path_buf(), meta.join("runs"), meta.join("partitions")] {
            remove_leftover_temporaries(&dir);
        }
        let run_id = ledger.run_id.clone();
        let staging_root = meta.join("staging").join(&run_id);
        let side = staging_root.join("side");
        fs::create_dir_all(&side).map_err(io_error("create folder", &side))?;
        let transaction = Transaction {
            out_root: out.to_path_buf(),
            mode,
            ledger_path: meta.join("runs").join(format!("{run_id}.json")),
            run_id,
            staging_root,
            ledger,
            success_removed: false,
            published_partitions: 0,
            closed: false,
            _lock: lock,
        };
        transaction.write_ledger()?;
        Ok(transaction)
    }

    /// A partition folder is published in one step when nothing else lives
    /// below it: no partition of this run, and no data folder already in OUT
    /// (which a swap would take away).
    fn is_leaf(&self, dir: &Path, all_partitions: &[&Path]) -> bool {
        if dir.as_os_str().is_empty()
            || all_partitions
                .iter()
                .any(|other| *other != dir && other.starts_with(dir))
        {
            return false;
        }
        let Ok(entries) = fs::read_dir(self.out_root.join(dir)) else {
            return true;
        };
        !entries.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            entry.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('_') && !name.starts_with('.')
        })
    }

    fn abort_in_place(&mut self, status: RunStatus, error: &str) -> Result<(), CommitError> {
        self.ledger.status = status;
        self.ledger.error = Some(error.to_string());
        self.close()
    }

    fn close(&mut self) -> Result<(), CommitError> {
        self.closed = true;
        self.ledger.finished_at = Some(rfc3339_utc(SystemTime::now()));
        let removed =
            remove_dir_if_exists(&self.staging_root).map_err(io_error("remove staging folder", &self.staging_root));
        self.write_ledger()?;
        removed
    }

    fn write_ledger(&self) -> Result<(), CommitError> {
        let bytes = serde_json::to_vec_pretty(&self.ledger).expect("ledger records serialize");
        write_atomically(&self.ledger_path, &bytes).map_err(io_error("write run ledger", &self.ledger_path))
    }

    fn remove_success(&mut self) -> Result<(), CommitError> {
        if self.success_removed {
            return Ok(());
        }
        let path = self.out_root.join(SUCCESS_FILE);
        match fs::remove_file(&path) {
            Ok(()) => fsync_dir(&self.out_root).map_err(io_error("sync folder", &self.out_root))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("remove old manifest", &path)(e)),
        }
        self.success_removed = true;
        Ok(())
    }

    fn partition_record_path(&self, partition: &Path) -> PathBuf {
        let digest = sha256_hex(partition.as_os_str().as_encoded_bytes());
        self.out_root
            .join(META_DIR)
            .join("partitions")
            .join(format!("{}.json", &digest[..24]))
    }

    /// Moves a staged leaf partition folder into place in one step.
    fn publish_folder(&self, relative: &Path) -> Result<(), CommitError> {
        let staged = self.staging_root.join("data").join(relative);
        let target = self.out_root.join(relative);
        let parent = target.parent().expect("a partition folder has a parent").to_path_buf();
        fs::create_dir_all(&parent).map_err(io_error("create folder", &parent))?;
        fsync_dir(&staged).map_err(io_error("sync folder", &staged))?;
        match fs::symlink_metadata(&target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::rename(&staged, &target).map_err(io_error("publish partition", &target))?;
            }
            Err(e) => return Err(io_error("inspect", &target)(e)),
            Ok(m) if !m.is_dir() => {
                return Err(CommitError::TargetNotADirectory { staged, target });
            }
            Ok(_) => {
                // An older version is in place: swap, so readers see the old
                // folder or the new one, never neither, never a mix.
                exchange_or_replace(&staged, &target, &self.staging_root.join("replaced").join(relative))?;
                // `staged` now holds the old version. The new one is in place:
                // failing to remove the old (a file held open on NFS, an
                // immutable file) must not fail a run that has begun to
                // publish. It stays in staging, which the next run removes.
                if let Err(error) = remove_dir_if_exists(&staged) {
                    tracing::warn!(
                        partition = %relative.display(),
                        path = %staged.display(),
                        error = %error,
                        "cannot remove the replaced version of a partition; the next run on this output removes it"
                    );
                }
            }
        }
        fsync_dir(&parent).map_err(io_error("sync folder", &parent))
    }

    /// Puts one partition's files in OUT (`put`, which returns the record
    /// to write), in the order resume relies on: the old record goes first,
    /// so that a death between the new files and the new record leaves no
    /// record, and resume scores again rather than trusting an old key for
    /// new files.
    fn replace_partition(
        &mut self,
        partition: &PartitionRecord,
        put: impl FnOnce(&Self) -> Result<PartitionRecord, CommitError>,
    ) -> Result<PartitionRecord, CommitError> {
        test_hooks::before_partition(self.published_partitions);
        let record_path = self.partition_record_path(&partition.partition);
        remove_file_durably(&record_path).map_err(io_error("remove old partition record", &record_path))?;
        let record = put(self)?;
        test_hooks::before_record(self.published_partitions);
        let bytes = serde_json::to_vec_pretty(&record).expect("records serialize");
        write_atomically(&record_path, &bytes).map_err(io_error("write partition record", &record_path))?;
        self.published_partitions += 1;
        Ok(record)
    }

    /// Moves one staged file into place (replacing an older one atomically).
    fn publish_file(&self, relative: &Path) -> Result<(), CommitError> {
        let staged = self.staging_root.join("data").join(relative);
        let target = self.out_root.join(relative);
        let parent = target.parent().expect("a file has a parent").to_path_buf();
        fs::create_dir_all(&parent).map_err(io_error("create folder", &parent))?;
        fs::rename(&staged, &target).map_err(io_error("publish file", &target))?;
        fsync_dir(&parent).map_err(io_error("sync folder", &parent))
    }
}

/// The local rename protocol (see the module's documentation).
impl Committer for Transaction {
    fn run_id(&self) -> &str {
        &self.run_id
    }

    fn record_summary(&mut self, summary: RunSummary) {
        self.ledger.summary = Some(summary);
    }

    /// Where the output file with this relative path is staged.
    fn staged_path(&self, relative: &Path) -> PathBuf {
        self.staging_root.join("data").join(relative)
    }

    /// Where a side output of the run (its quarantine table, its profile) is
    /// staged until [`Committer::publish_side`].
    fn staged_side_path(&self, name: &str) -> PathBuf {
        self.staging_root.join("side").join(name)
    }

    /// Moves a staged side output to `OUT/_lakescore/<folder>/<name>`, where
    /// it stays, named by the run id its ledger entry has. The pipeline
    /// publishes side outputs before the partitions, so that a partition a
    /// later resume reuses never lacks its quarantined rows.
    fn publish_side(&self, name: &str, folder: &str, target_name: &str) -> Result<PathBuf, CommitError> {
        let staged = self.staged_side_path(name);
        let dir = self.out_root.join(META_DIR).join(folder);
        fs::create_dir_all(&dir).map_err(io_error("create folder", &dir))?;
        let target = dir.join(target_name);
        fs::rename(&staged, &target).map_err(io_error("publish", &target))?;
        fsync_dir(&dir).map_err(io_error("sync folder", &dir))?;
        Ok(target)
    }

    /// In `--mode resume`, the record of a partition committed earlier with the
    /// same key whose files are all still there, unchanged in size.
    fn reusable_partition(&self, partition: &Path, key: &str) -> Option<PartitionRecord> {
        if self.mode != WriteMode::Resume {
            return None;
        }
        let text = fs::read(self.partition_record_path(partition)).ok()?;
        let record: PartitionRecord = serde_json::from_slice(&text).ok()?;
        let intact = record.partition == partition
            && record.key == key
            && record
                .files
                .iter()
                .all(|f| fs::metadata(self.out_root.join(&f.path)).is_ok_and(|m| m.is_file() && m.len() == f.bytes));
        intact.then_some(record)
    }

    /// Publishes staged partitions. `all_partitions` lists every partition
    /// folder of the run, reused ones included, to tell leaves from folders that
    /// also hold partitions.
    fn publish(&mut self, partitions: &[PartitionRecord], all_partitions: &[&Path]) -> Result<(), CommitError> {
        self.remove_success()?;
        for partition in partitions {
            self.replace_partition(partition, |transaction| {
                let dir = &partition.partition;
                if transaction.is_leaf(dir, all_partitions) {
                    transaction.publish_folder(dir)?;
                } else {
                    for file in &partition.files {
                        transaction.publish_file(&file.path)?;
                    }
                }
                Ok(partition.clone())
            })?;
        }
        Ok(())
    }

    /// Moves each staged file to its placed name (a rename: staging is on
    /// OUT's filesystem), then records the partition.
    fn place(&mut self, partitions: &[PartitionRecord], suffix: &str) -> Result<Vec<PartitionRecord>, CommitError> {
        partitions
            .iter()
            .map(|partition| {
                self.replace_partition(partition, |transaction| {
                    let mut record = partition.clone();
                    let folder = transaction.out_root.join(&partition.partition);
                    fs::create_dir_all(&folder).map_err(io_error("create folder", &folder))?;
                    for file in &mut record.files {
                        let staged = transaction.staged_path(&file.path);
                        file.path = placed_path(&file.path, suffix);
                        let target = transaction.out_root.join(&file.path);
                        fs::rename(&staged, &target).map_err(io_error("place file", &target))?;
                    }
                    fsync_dir(&folder).map_err(io_error("sync folder", &folder))?;
                    Ok(record)
                })
            })
            .collect()
    }

    /// Writes the manifest, the last step that makes the table complete, and
    /// closes the run in the ledger.
    fn finish(
        mut self: Box<Self>,
        manifest: Option<&[u8]>,
        published: Published,
    ) -> Result<Option<String>, CommitError> {
        let path = self.out_root.join(SUCCESS_FILE);
        if let Some(manifest) = manifest
            && let Err(error) = self
                .remove_success()
                .and_then(|()| write_atomically(&path, manifest).map_err(io_error("write manifest", &path)))
        {
            let _ = self.abort_in_place(RunStatus::Failed, &crate::util::error_chain(&error));
            return Err(error);
        }
        self.ledger.record_published(published);
        // The table is published: failing to tidy up after it is not a failed run.
        if let Err(error) = self.close() {
            tracing::warn!(error = %crate::util::error_chain(&error), "the run succeeded but cleaning up after it failed");
        }
        Ok(None)
    }

    /// Ends a run that publishes nothing: removes what it staged and records
    /// why. `status` is `failed`, `rejected` or `interrupted`.
    fn abort(mut self: Box<Self>, status: RunStatus, error: &str) -> Result<(), CommitError> {
        self.abort_in_place(status, error)
    }
}

impl Drop for Transaction {
    /// A run that ends by a panic still leaves no staged files behind.
    fn drop(&mut self) {
        if !self.closed {
            let _ = remove_dir_if_exists(&self.staging_root);
        }
    }
}

/// Swaps two folders atomically (Linux `renameat2(RENAME_EXCHANGE)`). Where the
/// filesystem cannot, moves the old one aside first: readers may then briefly
/// see no partition, but never a partial one.
fn exchange_or_replace(staged: &Path, target: &Path, aside: &Path) -> Result<(), CommitError> {
    match exchange(staged, target) {
        Ok(()) => Ok(()),
        Err(_) => replace_via_aside(staged, target, aside),
    }
}

/// The non-atomic swap: old out of the way, new in, old to where `staged` was.
/// When the new one cannot be moved in, the old one is put back.
fn replace_via_aside(staged: &Path, target: &Path, aside: &Path) -> Result<(), CommitError> {
    let aside_parent = aside.parent().expect("aside path has a parent");
    fs::create_dir_all(aside_parent).map_err(io_error("create folder", aside_parent))?;
    fs::rename(target, aside).map_err(io_error("move old partition aside", target))?;
    if let Err(error) = fs::rename(staged, target) {
        let _ = fs::rename(aside, target);
        return Err(io_error("publish partition", target)(error));
    }
    // Leave the old version where the caller expects it: at `staged`. The
    // new one is published already; an old one left aside is in staging,
    // which the next run removes.
    if let Err(error) = fs::rename(aside, staged) {
        tracing::warn!(path = %aside.display(), error = %error, "cannot move the replaced version of a partition away");
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    const RENAME_EXCHANGE: libc::c_uint = 1 << 1;
    // SAFETY: both paths are valid NUL-terminated strings for the whole call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Path, _b: &Path) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Removes a file, if there, and makes the removal durable.
fn remove_file_durably(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => fsync_dir(path.parent().expect("a file has a parent")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_dir_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Staging folders of runs that died without cleaning up. The caller holds
/// the output's lock, so anything there now is dead.
fn remove_leftover_staging(staging: &Path) {
    let Ok(entries) = fs::read_dir(staging) else {
        return;
    };
    for entry in entries.flatten() {
        tracing::warn!(path = %entry.path().display(), "removing staged files left by an earlier run");
        if let Err(error) = remove_dir_if_exists(&entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %error, "cannot remove staged files left by an earlier run");
        }
    }
}

/// Temporary files of atomic writes (`.name.tmp-<pid>`, hidden from readers)
/// that a killed run left; the caller holds the lock, so they are dead.
fn remove_leftover_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_atomic_write_temporary(&name) && entry.file_type().is_ok_and(|t| t.is_file()) {
            tracing::debug!(path = %entry.path().display(), "removing a temporary file left by an interrupted run");
            let _ = fs::remove_file(entry.path());
        }
    }
}

pub fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into the buffer.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

/// The name an output file gets when a table format's commit, not its
/// presence, publishes it: `dt=1/part-00000.parquet` with suffix `RUN`
/// becomes `dt=1/part-00000-RUN.parquet`, a name no other run writes, so
/// that the files of the table's earlier versions stay as they were.
pub fn placed_path(relative: &Path, suffix: &str) -> PathBuf {
    let name = relative
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let placed = match name.rsplit_once('.') {
        Some((stem, extension)) if !stem.is_empty() => format!("{stem}-{suffix}.{extension}"),
        _ => format!("{name}-{suffix}"),
    };
    relative.with_file_name(placed)
}

/// Groups output files by their folder: the partitions of a run.
pub fn partitions_of<'a>(relative_files: impl IntoIterator<Item = &'a Path>) -> BTreeMap<PathBuf, Vec<PathBuf>> {
    let mut partitions: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in relative_files {
        let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
        partitions.entry(dir).or_default().push(file.to_path_buf());
    }
    partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        for mode in [WriteMode::ErrorIfExists, WriteMode::Overwrite, WriteMode::Resume] {
            assert_eq!(mode.to_string().parse::<WriteMode>().unwrap(), mode);
        }
        assert!("append".parse::<WriteMode>().is_err());
    }

    #[test]
    fn exchange_swaps_folders() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir(&a).unwrap();
        fs::create_dir(&b).unwrap();
        fs::write(a.join("x"), "new").unwrap();
        fs::write(b.join("y"), "old").unwrap();
        exchange_or_replace(&a, &b, &dir.path().join("aside")).unwrap();
        assert!(b.join("x").exists() && a.join("y").exists());
    }

    #[test]
    fn the_fallback_swap_replaces_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let (staged, target, aside) = (
            dir.path().join("staged"),
            dir.path().join("target"),
            dir.path().join("x/aside"),
        );
        fs::create_dir(&staged).unwrap();
        fs::create_dir(&target).unwrap();
        fs::write(staged.join("new"), "").unwrap();
        fs::write(target.join("old"), "").unwrap();
        replace_via_aside(&staged, &target, &aside).unwrap();
        assert!(target.join("new").exists() && staged.join("old").exists() && !aside.exists());

        // The new folder is gone: moving it in fails, the old one stays.
        fs::remove_dir_all(&staged).unwrap();
        assert!(replace_via_aside(&staged, &target, &aside).is_err());
        assert!(target.join("new").exists(), "the published version was put back");
    }

    #[test]
    fn overlap_is_detected_even_for_missing_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("lake");
        fs::create_dir(&input).unwrap();
        assert!(check_separate(&input, &input.join("scored/x")).is_err());
        assert!(check_separate(&input.join("."), &dir.path().join("lake")).is_err());
        assert!(check_separate(&input, &dir.path().join("scores")).is_ok());
        assert!(check_separate(&input, &dir.path().join("lake2")).is_ok());
    }

    #[test]
    fn placed_names_keep_the_folder_and_extension() {
        assert_eq!(
            placed_path(Path::new("dt=1/part-00000.parquet"), "R"),
            Path::new("dt=1/part-00000-R.parquet")
        );
        assert_eq!(placed_path(Path::new("a.b.parquet"), "R"), Path::new("a.b-R.parquet"));
        assert_eq!(placed_path(Path::new("data"), "R"), Path::new("data-R"));
        assert_eq!(placed_path(Path::new(".hidden"), "R"), Path::new(".hidden-R"));
    }

    #[test]
    fn partition_key_depends_on_every_input() {
        let base = partition_key("m", "o", &[(Path::new("a"), 1, "f")]);
        assert_ne!(base, partition_key("m2", "o", &[(Path::new("a"), 1, "f")]));
        assert_ne!(base, partition_key("m", "o2", &[(Path::new("a"), 1, "f")]));
        assert_ne!(base, partition_key("m", "o", &[(Path::new("a"), 2, "f")]));
        assert_ne!(base, partition_key("m", "o", &[(Path::new("a"), 1, "g")]));
        assert_eq!(base, partition_key("m", "o", &[(Path::new("a"), 1, "f")]));
    }
}
