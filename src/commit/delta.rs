//! An output published as a Delta Lake table: one commit per run.
//!
//! ```text
//! OUT/_delta_log/00000000000000000003.json      the run's commit, put if absent
//! OUT/dt=2026-11-25/part-00000-<run id>.parquet  its files, under names no other run writes
//! OUT/_lakescore/delta/<hash>.json               each placed partition's add actions (resume)
//! OUT/_lakescore/...                             lock or lease, ledger, partition records
//! ```
//!
//! The run stages and judges as for any output, through the committer of
//! the folder or bucket underneath (`inner`: local renames, or multipart
//! uploads). Publishing then *places* the files under fresh names (a Delta
//! reader ignores files its log does not name, and the files of earlier
//! versions stay for readers of those versions), and the commit is the one
//! step that makes them the table: `_delta_log/<version>.json`, written only
//! if absent (a hard link locally, `If-None-Match: *` on object storage).
//! It holds `commitInfo` (lakescore, its version, the run id), on a new
//! table `protocol` (1, 2) and `metaData`, a `txn` for the run's output key,
//! `remove` actions for the files of the partitions the run replaces, and
//! an `add` per file with its statistics (numRecords, min/max, nullCount
//! from the file's footer).
//!
//! Every version another writer committed after the one the run began
//! from is read: a commit of this same run (a retried request) is success;
//! one that changed the table's schema or protocol, or added or removed
//! files in a partition this run writes, is a conflict, and the run fails
//! naming it; any other is harmless and the commit is tried again at the
//! next version.
//!
//! Every tenth version (or the table's `delta.checkpointInterval`) is
//! checkpointed by delta_kernel after the commit, so readers of a table
//! written nightly replay a checkpoint and a few commits.
//!
//! Resume: a partition placed by an earlier run under the same key is
//! reused (its record and its add actions are under `_lakescore/`); the
//! commit adds whatever of the run's files the table does not yet hold and
//! removes the others of its partitions, so a run killed before its commit
//! commits once, and one killed after it commits nothing more.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::datatypes::{DataType, TimeUnit};
use object_store::ObjectStoreExt;
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    CommitError, Committer, LedgerRecord, OutputTable, PartitionRecord, Published, RunStatus, RunSummary, WriteMode,
    io_error,
};
use crate::lock::{Holder, OutputLock};
use crate::source::SourceError;
use crate::source::delta::{KernelTable, LiveFile, WriteTarget, percent_decode, schema_columns};
use crate::store::{self, Remote};
use crate::test_hooks;
use crate::util::{fsync_dir, sha256_hex};

/// The folder of a Delta table's log.
const LOG: &str = crate::source::DELTA_LOG;
/// Where each placed partition's add actions wait for the commit.
const ACTIONS: &str = "_lakescore/delta";
/// How many versions other writers may take before this run gives up.
const COMMIT_ATTEMPTS: usize = 20;
/// The longest string a file's statistics give a minimum or maximum for
/// (longer ones would need truncation rules: they get none, which readers
/// take as "unknown").
const LONGEST_STAT_STRING: usize = 32;
/// The Hive folder name of a null partition value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// Where the table's bytes are: a local folder or a location on object
/// storage. Only the log, the add actions and the checks go through here;
/// data files go through the inner committer.
#[derive(Debug, Clone)]
pub enum TableStore {
    Local(PathBuf),
    Remote(Remote),
}

impl TableStore {
    fn location(&self) -> String {
        match self {
            TableStore::Local(path) => path.display().to_string(),
            TableStore::Remote(remote) => remote.url.clone(),
        }
    }

    fn error(&self, problem: impl Into<String>) -> CommitError {
        CommitError::Delta {
            location: self.location(),
            problem: problem.into(),
        }
    }

    fn remote_error(&self, operation: &'static str, relative: &str, error: object_store::Error) -> CommitError {
        match self {
            TableStore::Remote(remote) => CommitError::Remote {
                operation,
                url: remote.join(relative).url,
                message: store::message_of(&error),
            },
            TableStore::Local(_) => self.error(format!("{operation} {relative}: {error}")),
        }
    }

    fn is_table(&self) -> Result<bool, CommitError> {
        match self {
            // A log folder with nothing but a hidden temporary file is what
            // a run killed while writing a table's first commit leaves: no
            // table yet.
            TableStore::Local(path) => Ok(std::fs::read_dir(path.join(LOG)).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|entry| !entry.file_name().to_string_lossy().starts_with('.'))
            })),
            TableStore::Remote(remote) => crate::source::is_delta_table(Path::new(&remote.url), Some(remote))
                .map_err(|error| self.error(format!("cannot be listed: {error}"))),
        }
    }

    /// Whether a lakescore run began a Delta table here: the add actions it
    /// keeps under `_lakescore/delta/` (a run killed before the table's
    /// first commit leaves its files, and no log, behind).
    fn has_placed_actions(&self) -> Result<bool, CommitError> {
        match self {
            TableStore::Local(root) => {
                Ok(std::fs::read_dir(root.join(ACTIONS)).is_ok_and(|mut entries| entries.next().is_some()))
            }
            TableStore::Remote(remote) => {
                store::any_object_below(remote, ACTIONS).map_err(|error| self.remote_error("LIST", ACTIONS, error))
            }
        }
    }

    /// A source error about the table as a commit error naming it.
    fn source_error(&self, error: SourceError) -> CommitError {
        match error {
            SourceError::Delta { problem, .. } => self.error(problem),
            other => self.error(format!("cannot be read: {other}")),
        }
    }

    /// The table as delta_kernel reads it.
    fn kernel_table(&self) -> Result<KernelTable, SourceError> {
        match self {
            TableStore::Local(path) => KernelTable::local(path).map(|(table, _)| table),
            TableStore::Remote(remote) => KernelTable::remote(remote),
        }
    }

    /// The table at version `at` (or its latest) as a writer sees it;
    /// `None` when there is no table yet.
    fn target(&self, at: Option<u64>) -> Result<Option<WriteTarget>, CommitError> {
        if !self.is_table()? {
            return Ok(None);
        }
        self.kernel_table()
            .and_then(|table| crate::source::delta::for_writing(&table, at))
            .map(Some)
            .map_err(|error| self.source_error(error))
    }

    /// The table's latest version; `None` when there is no table yet.
    fn version(&self) -> Result<Option<u64>, CommitError> {
        if !self.is_table()? {
            return Ok(None);
        }
        self.kernel_table()
            .and_then(|table| crate::source::delta::latest_version(&table))
            .map(Some)
            .map_err(|error| self.source_error(error))
    }

    /// A checkpoint at `version`, when one is due; a failure is only a
    /// warning (the commit stands, and readers replay more commits).
    fn checkpoint_if_due(&self, version: u64) {
        let written = self
            .kernel_table()
            .and_then(|table| crate::source::delta::checkpoint_if_due(&table, version));
        match written {
            Ok(true) => tracing::info!(version, "Delta checkpoint written"),
            Ok(false) => {}
            Err(error) => tracing::warn!(error = %error, "the commit stands, but its checkpoint was not written"),
        }
    }

    /// The object or file at `relative`, if there.
    fn read(&self, relative: &str) -> Result<Option<Vec<u8>>, CommitError> {
        match self {
            TableStore::Local(root) => {
                let path = root.join(relative);
                match std::fs::read(&path) {
                    Ok(bytes) => Ok(Some(bytes)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(io_error("read", &path)(error)),
                }
            }
            TableStore::Remote(remote) => {
                let (store, path) = (Arc::clone(&remote.store), remote.join(relative).path);
                match store::block_on(async move { store.get(&path).await?.bytes().await }) {
                    Ok(bytes) => Ok(Some(bytes.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(error) => Err(self.remote_error("GET", relative, error)),
                }
            }
        }
    }

    /// Writes `bytes` at `relative`, replacing what is there.
    fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<(), CommitError> {
        match self {
            TableStore::Local(root) => {
                let path = root.join(relative);
                let parent = path.parent().expect("a file has a parent");
                std::fs::create_dir_all(parent).map_err(io_error("create folder", parent))?;
                crate::util::write_atomically(&path, &bytes).map_err(io_error("write", &path))
            }
            TableStore::Remote(remote) => {
                let (store, path) = (Arc::clone(&remote.store), remote.join(relative).path);
                store::block_on(async move { store.put(&path, bytes.into()).await })
                    .map(|_| ())
                    .map_err(|error| self.remote_error("PUT", relative, error))
            }
        }
    }

    /// Writes `bytes` at `relative` only if nothing is there: `false` when
    /// something was. Locally a hard link of a synced temporary file, which
    /// fails if the name exists; on object storage a put with
    /// `If-None-Match: *`.
    fn put_if_absent(&self, relative: &str, bytes: Vec<u8>) -> Result<bool, CommitError> {
        match self {
            TableStore::Local(root) => {
                use std::io::Write;
                let target = root.join(relative);
                let folder = target.parent().expect("a file has a parent");
                std::fs::create_dir_all(folder).map_err(io_error("create folder", folder))?;
                let name = target.file_name().expect("a file has a name").to_string_lossy();
                // A hidden name: a Delta reader lists only `<version>.json`.
                let temporary = folder.join(format!(".{name}.tmp-{}", std::process::id()));
                let write = || -> std::io::Result<()> {
                    let mut file = std::fs::File::create(&temporary)?;
                    file.write_all(&bytes)?;
                    file.sync_all()
                };
                write().map_err(io_error("write", &temporary))?;
                let linked = std::fs::hard_link(&temporary, &target);
                let _ = std::fs::remove_file(&temporary);
                match linked {
                    Ok(()) => {
                        fsync_dir(folder).map_err(io_error("sync folder", folder))?;
                        Ok(true)
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(error) => Err(io_error("write", &target)(error)),
                }
            }
            TableStore::Remote(remote) => {
                use object_store::{PutMode, PutOptions};
                let (store, path) = (Arc::clone(&remote.store), remote.join(relative).path);
                let put = store::block_on(async move {
                    store
                        .put_opts(&path, bytes.into(), PutOptions::from(PutMode::Create))
                        .await
                });
                match put {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                        Ok(false)
                    }
                    Err(error) => Err(self.remote_error("PUT", relative, error)),
                }
            }
        }
    }
}

/// An output table in Delta format, over the folder or bucket (`inner`,
/// the same location as `table`) that stages, places and records its files.
pub struct DeltaOutput {
    inner: Box<dyn OutputTable>,
    table: TableStore,
    /// The table's version when the run first looked (`Some(None)`: no
    /// table), before any wait for another run's lock: the version the run
    /// commits against, so that a commit made while it waited is checked.
    first_look: Mutex<Option<Option<u64>>>,
}

impl DeltaOutput {
    /// The Delta output at `table`, over the folder's or the bucket's own
    /// output for staging, placing and the run's records.
    pub fn new(table: TableStore) -> DeltaOutput {
        let inner: Box<dyn OutputTable> = match &table {
            TableStore::Local(path) => Box::new(super::LocalOutput::new(path)),
            TableStore::Remote(remote) => Box::new(super::ObjectOutput::new(remote.clone())),
        };
        DeltaOutput {
            inner,
            table,
            first_look: Mutex::new(None),
        }
    }

    /// The version the run's first look found, read now if this is it.
    fn base_version(&self) -> Result<Option<u64>, CommitError> {
        let mut look = self.first_look.lock().expect("not poisoned");
        if let Some(version) = *look {
            return Ok(version);
        }
        let version = self.table.version()?;
        *look = Some(version);
        Ok(version)
    }

    /// Whether OUT already is a Delta table (a log with a commit), or one a
    /// lakescore run began and did not commit (its add actions are kept).
    pub fn exists(table: &TableStore) -> Result<bool, CommitError> {
        Ok(table.is_table()? || table.has_placed_actions()?)
    }
}

impl OutputTable for DeltaOutput {
    fn location(&self) -> &Path {
        self.inner.location()
    }

    fn check_separate(&self, input: &Path, files: &[&Path]) -> Result<(), CommitError> {
        self.inner.check_separate(input, files)
    }

    fn lock_if_known(&self, holder: &Holder) -> Result<Option<OutputLock>, CommitError> {
        self.base_version()?;
        self.inner.lock_if_known(holder)
    }

    fn holds_published_output(&self) -> Result<bool, CommitError> {
        Ok(self.table.target(None)?.is_some_and(|table| !table.files.is_empty()))
    }

    fn begin(
        &self,
        mode: WriteMode,
        ledger: LedgerRecord,
        lock: Option<OutputLock>,
    ) -> Result<Box<dyn Committer>, CommitError> {
        let base = self.base_version()?;
        let existing = self.table.target(None)?;
        if existing.is_none() && self.inner.holds_published_output()? && !self.table.has_placed_actions()? {
            return Err(self.table.error(
                "holds files but no Delta log (`_delta_log/`): lakescore creates a Delta table only in a new or empty location; \
                 write the scores elsewhere, or pass `--output-format parquet`",
            ));
        }
        if let Some(table) = &existing {
            if mode == WriteMode::ErrorIfExists && !table.files.is_empty() {
                return Err(CommitError::OutputExists {
                    path: self.location().to_path_buf(),
                });
            }
            if mode != WriteMode::ErrorIfExists && table.append_only {
                return Err(self.table.error(
                    "is append-only (`delta.appendOnly`): replacing partitions would remove files; \
                     write with `--mode error-if-exists` to a table without data, or elsewhere",
                ));
            }
        }
        let run_uuid = ledger.run_uuid.clone();
        let inner = self.inner.begin(mode, ledger, lock)?;
        Ok(Box::new(DeltaCommitter {
            inner: Some(inner),
            table: self.table.clone(),
            mode,
            run_uuid,
            base,
            // Read already: the commit plans against it, unless the run
            // waited and the table moved between its first look and now.
            base_table: existing.filter(|table| Some(table.version) == base),
            txn_version: now_ms(),
            placed: Vec::new(),
            reused: Mutex::new(Vec::new()),
        }))
    }
}

/// The add actions of one placed partition, kept under `_lakescore/delta/`
/// until (and after) the commit that adds them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlacedPartition {
    partition: PathBuf,
    key: String,
    run_id: String,
    /// The files' columns: name and Delta type.
    columns: Vec<(String, Value)>,
    files: Vec<PlacedFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlacedFile {
    /// As the log writes it (a relative URL).
    path: String,
    size: u64,
    rows: u64,
    /// The `stats` JSON of the add action.
    stats: String,
}

/// A run's transaction on a Delta output.
struct DeltaCommitter {
    /// `None` once finished or aborted.
    inner: Option<Box<dyn Committer>>,
    table: TableStore,
    mode: WriteMode,
    run_uuid: String,
    /// The version the run began from (`None`: no table yet). Every commit
    /// after it is checked for conflicts, as Delta's snapshot isolation has
    /// it: another writer's change to a partition while this run scored it
    /// fails the run rather than being silently replaced.
    base: Option<u64>,
    /// The table at `base`, when `begin` read that version.
    base_table: Option<WriteTarget>,
    /// The `txn` version of the run's commit: when it began (ms).
    txn_version: i64,
    placed: Vec<PlacedPartition>,
    /// The records `reusable_partition` handed out (resume).
    reused: Mutex<Vec<PartitionRecord>>,
}

impl DeltaCommitter {
    fn inner(&self) -> &dyn Committer {
        self.inner.as_deref().expect("the transaction is open")
    }

    fn actions_path(partition: &Path) -> String {
        let digest = sha256_hex(partition.as_os_str().as_encoded_bytes());
        format!("{ACTIONS}/{}.json", &digest[..24])
    }

    /// The placed partitions of a reused record: its add actions as an
    /// earlier run kept them, when they name exactly its files.
    fn reused_actions(&self, record: &PartitionRecord) -> Result<PlacedPartition, CommitError> {
        let missing = || {
            self.table.error(format!(
                "partition `{}` was placed by run {} but its add actions are missing or do not match its files; \
                 run again with `--mode overwrite`",
                record.partition.display(),
                record.run_id
            ))
        };
        let bytes = self
            .table
            .read(&Self::actions_path(&record.partition))?
            .ok_or_else(missing)?;
        let placed: PlacedPartition = serde_json::from_slice(&bytes).map_err(|_| missing())?;
        let recorded: Vec<String> = record.files.iter().map(|f| log_path(&f.path)).collect();
        let kept: Vec<String> = placed.files.iter().map(|f| f.path.clone()).collect();
        match placed.key == record.key && recorded == kept {
            true => Ok(placed),
            false => Err(missing()),
        }
    }

    /// Writes the commit. Returns the version that holds the run's files:
    /// its commit's, or, when the table already holds exactly them (a
    /// resume after a commit that landed), the version it began from.
    fn commit(&mut self, partitions: &[PlacedPartition]) -> Result<u64, CommitError> {
        let run_id = self.inner().run_id().to_string();
        let mut known = self.base;
        let mut base_table = self.base_table.take();
        for _ in 0..COMMIT_ATTEMPTS {
            let existing = match known {
                Some(version) => match base_table.take().filter(|table| table.version == version) {
                    Some(table) => Some(table),
                    None => self.table.target(Some(version))?,
                },
                None => None,
            };
            let Some(commit) = plan_commit(
                existing.as_ref(),
                partitions,
                self.mode,
                &run_id,
                &self.run_uuid,
                self.txn_version,
            )
            .map_err(|problem| self.table.error(problem))?
            else {
                let version = existing.map(|t| t.version).expect("a new table always gets a commit");
                tracing::info!(
                    version,
                    "the Delta table already holds this run's files: nothing to commit"
                );
                return Ok(version);
            };
            test_hooks::before_delta_commit();
            let name = format!("{LOG}/{:020}.json", commit.version);
            if self.table.put_if_absent(&name, commit.bytes.clone())? {
                test_hooks::after_delta_commit();
                self.table.checkpoint_if_due(commit.version);
                tracing::info!(
                    version = commit.version,
                    adds = commit.adds,
                    removes = commit.removes,
                    "Delta commit written"
                );
                return Ok(commit.version);
            }
            // Another writer took the version: read what it and any later
            // one did before trying again.
            let mut version = commit.version;
            while let Some(bytes) = self.table.read(&format!("{LOG}/{version:020}.json"))? {
                match judge_winner(&bytes, &commit, self.mode, &run_id) {
                    Winner::Ours => return Ok(version),
                    Winner::Conflict(what) => {
                        return Err(CommitError::DeltaConflict {
                            location: self.table.location(),
                            version,
                            what,
                        });
                    }
                    Winner::Harmless => version += 1,
                }
            }
            if version > commit.version {
                known = Some(version - 1);
            }
            tracing::info!(
                version,
                "another writer committed meanwhile, without conflict; committing again"
            );
        }
        Err(self.table.error(format!(
            "other writers took {COMMIT_ATTEMPTS} versions in a row while this run committed; nothing was committed"
        )))
    }
}

impl Committer for DeltaCommitter {
    fn run_id(&self) -> &str {
        self.inner().run_id()
    }

    fn record_summary(&mut self, summary: RunSummary) {
        self.inner
            .as_mut()
            .expect("the transaction is open")
            .record_summary(summary);
    }

    fn staged_path(&self, relative: &Path) -> PathBuf {
        self.inner().staged_path(relative)
    }

    fn staged_side_path(&self, name: &str) -> PathBuf {
        self.inner().staged_side_path(name)
    }

    fn reusable_partition(&self, partition: &Path, key: &str) -> Option<PartitionRecord> {
        let record = self.inner().reusable_partition(partition, key)?;
        self.reused.lock().expect("not poisoned").push(record.clone());
        Some(record)
    }

    fn publish_side(&self, name: &str, folder: &str, target_name: &str) -> Result<PathBuf, CommitError> {
        self.inner().publish_side(name, folder, target_name)
    }

    /// Places the staged files; their add actions (statistics read from the
    /// staged footers) are kept first, so that a partition a resume reuses
    /// always has them.
    fn publish(&mut self, partitions: &[PartitionRecord], _all_partitions: &[&Path]) -> Result<(), CommitError> {
        let run_id = self.inner().run_id().to_string();
        let mut placed = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let mut files = Vec::with_capacity(partition.files.len());
            let mut columns = Vec::new();
            for file in &partition.files {
                let staged = self.inner().staged_path(&file.path);
                let facts = file_facts(&staged).map_err(|problem| {
                    self.table
                        .error(format!("cannot read the staged file `{}`: {problem}", staged.display()))
                })?;
                columns = facts.columns;
                files.push(PlacedFile {
                    path: log_path(&super::placed_path(&file.path, &run_id)),
                    size: file.bytes,
                    rows: facts.rows,
                    stats: facts.stats,
                });
            }
            let placed_partition = PlacedPartition {
                partition: partition.partition.clone(),
                key: partition.key.clone(),
                run_id: run_id.clone(),
                columns,
                files,
            };
            let bytes = serde_json::to_vec_pretty(&placed_partition).expect("actions serialize");
            self.table.put(&Self::actions_path(&partition.partition), bytes)?;
            placed.push(placed_partition);
        }
        self.inner
            .as_mut()
            .expect("the transaction is open")
            .place(partitions, &run_id)?;
        self.placed = placed;
        Ok(())
    }

    fn place(&mut self, partitions: &[PartitionRecord], suffix: &str) -> Result<Vec<PartitionRecord>, CommitError> {
        self.inner
            .as_mut()
            .expect("the transaction is open")
            .place(partitions, suffix)
    }

    /// The commit, then the ledger. A failed commit fails the run: what it
    /// placed stays, for `--mode resume` to commit.
    fn finish(
        mut self: Box<Self>,
        _manifest: Option<&[u8]>,
        published: Published,
    ) -> Result<Option<String>, CommitError> {
        let reused = std::mem::take(&mut *self.reused.lock().expect("not poisoned"));
        let mut partitions = std::mem::take(&mut self.placed);
        let committed = reused
            .iter()
            .map(|record| self.reused_actions(record))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|mut kept| {
                partitions.append(&mut kept);
                partitions.sort_by(|a, b| a.partition.cmp(&b.partition));
                self.commit(&partitions)
            });
        let inner = self.inner.take().expect("the transaction is open");
        match committed {
            Ok(version) => {
                inner.finish(None, published)?;
                Ok(Some(format!("delta version {version}")))
            }
            Err(error) => {
                let _ = inner.abort(RunStatus::Failed, &crate::util::error_chain(&error));
                Err(error)
            }
        }
    }

    fn abort(mut self: Box<Self>, status: RunStatus, error: &str) -> Result<(), CommitError> {
        self.inner.take().expect("the transaction is open").abort(status, error)
    }
}

/// A commit ready to write.
#[derive(Debug)]
struct PlannedCommit {
    version: u64,
    bytes: Vec<u8>,
    adds: usize,
    removes: usize,
    /// The partitions it replaces (or fills): another writer's change to
    /// one of them is a conflict.
    partitions: BTreeSet<PartitionValues>,
    /// The table it expects: columns (Delta types) and partition columns.
    /// Another writer that created the table meanwhile with exactly these
    /// did not conflict.
    columns: BTreeMap<String, Value>,
    partition_columns: Vec<String>,
    /// Its `txn` action: the run's output key and start.
    txn: (String, i64),
}

type PartitionValues = BTreeMap<String, Option<String>>;

/// The actions that make `existing` (none: a new table) hold the run's
/// `partitions`: the files of theirs not yet in the table added, the other
/// files of those partitions removed. `None` when there is nothing to do.
fn plan_commit(
    existing: Option<&WriteTarget>,
    partitions: &[PlacedPartition],
    mode: WriteMode,
    run_id: &str,
    run_uuid: &str,
    txn_version: i64,
) -> Result<Option<PlannedCommit>, String> {
    let Some(first) = partitions.first() else {
        return Err("cannot be committed to: this run placed no files".into());
    };
    let columns = &first.columns;
    // Partition columns, the same in every folder, from its Hive names.
    let mut partition_columns: Option<Vec<String>> = None;
    let mut values_of: Vec<PartitionValues> = Vec::with_capacity(partitions.len());
    for partition in partitions {
        if partition.columns != *columns {
            return Err(format!(
                "cannot take this run's files: those of partition `{}` have other columns than those of `{}`",
                partition.partition.display(),
                first.partition.display()
            ));
        }
        let values = hive_values(&partition.partition)?;
        let names: Vec<String> = values.iter().map(|(name, _)| name.clone()).collect();
        match &partition_columns {
            None => partition_columns = Some(names),
            Some(known) if *known != names => {
                return Err(format!(
                    "cannot take this run's files: their folders name different partition columns (`{}` and `{}`), and a Delta table has one set",
                    first.partition.display(),
                    partition.partition.display()
                ));
            }
            Some(_) => {}
        }
        values_of.push(values.into_iter().collect());
    }
    let partition_columns = partition_columns.unwrap_or_default();
    if let Some(clash) = partition_columns
        .iter()
        .find(|name| columns.iter().any(|(column, _)| column == *name))
    {
        return Err(format!(
            "cannot take this run's files: `{clash}` is both a partition folder's key and a column of the files"
        ));
    }
    let mut schema: Vec<(String, Value)> = columns.clone();
    schema.extend(partition_columns.iter().map(|name| (name.clone(), json!("string"))));

    let now = now_ms();
    let wanted: BTreeSet<&str> = partitions
        .iter()
        .flat_map(|p| p.files.iter().map(|f| f.path.as_str()))
        .collect();
    let touched: BTreeSet<PartitionValues> = values_of.iter().cloned().collect();
    let mut lines: Vec<Value> = Vec::new();
    let (mut removes, mut live) = (Vec::new(), BTreeSet::new());
    match existing {
        Some(table) => {
            check_schema(table, &schema, &partition_columns)?;
            for file in &table.files {
                live.insert(file.path.as_str());
                if !touched.contains(&file.partition_values) || wanted.contains(file.path.as_str()) {
                    continue;
                }
                if mode == WriteMode::ErrorIfExists {
                    return Err("holds data now (another writer added it while this run scored); \
                                nothing was committed: pass `--mode overwrite` to replace its partitions"
                        .into());
                }
                if file.has_deletion_vector {
                    return Err(format!(
                        "has a file `{}`, in a partition this run replaces, with a deletion vector, which lakescore does not remove yet",
                        file.path
                    ));
                }
                removes.push(remove_action(file, now));
            }
        }
        None => {
            lines.push(json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}));
            let schema_string = json!({
                "type": "struct",
                "fields": schema.iter().map(|(name, kind)| json!({
                    "name": name, "type": kind, "nullable": true, "metadata": {}
                })).collect::<Vec<_>>(),
            })
            .to_string();
            lines.push(json!({"metaData": {
                "id": run_uuid,
                "format": {"provider": "parquet", "options": {}},
                "schemaString": schema_string,
                "partitionColumns": partition_columns,
                "configuration": {},
                "createdTime": now,
            }}));
        }
    }
    let mut adds = Vec::new();
    for (partition, values) in partitions.iter().zip(&values_of) {
        for file in partition.files.iter().filter(|f| !live.contains(f.path.as_str())) {
            adds.push(json!({"add": {
                "path": file.path,
                "partitionValues": values,
                "size": file.size,
                "modificationTime": now,
                "dataChange": true,
                "stats": file.stats,
            }}));
        }
    }
    if adds.is_empty() && removes.is_empty() && existing.is_some() {
        return Ok(None);
    }
    let rows: u64 = partitions.iter().flat_map(|p| &p.files).map(|f| f.rows).sum();
    let bytes_added: u64 = partitions
        .iter()
        .flat_map(|p| &p.files)
        .filter(|f| !live.contains(f.path.as_str()))
        .map(|f| f.size)
        .sum();
    let (adds_count, removes_count) = (adds.len(), removes.len());
    let mut commit_info = vec![json!({"commitInfo": {
        "timestamp": now,
        "operation": "WRITE",
        "operationParameters": {
            "mode": match removes.is_empty() { true => "Append", false => "Overwrite" },
            "partitionBy": serde_json::to_string(&partition_columns).expect("names serialize"),
        },
        "operationMetrics": {
            "numFiles": adds_count.to_string(),
            "numOutputRows": rows.to_string(),
            "numOutputBytes": bytes_added.to_string(),
            "numRemovedFiles": removes_count.to_string(),
        },
        "isBlindAppend": removes.is_empty() && existing.is_none(),
        "engineInfo": format!("lakescore/{}", env!("CARGO_PKG_VERSION")),
        "userMetadata": format!("lakescore run {run_id}"),
        "lakescore": {"runId": run_id, "version": env!("CARGO_PKG_VERSION"), "mode": mode.to_string()},
    }})];
    commit_info.append(&mut lines);
    // The run's output key (every partition's key) as the application id,
    // the run's start as its version: this run's commit, whichever attempt
    // wrote it, carries the same pair.
    let keys: Vec<&str> = partitions.iter().map(|p| p.key.as_str()).collect();
    let output_key = sha256_hex(keys.join("\n").as_bytes());
    let txn = (format!("lakescore-{}", &output_key[..32]), txn_version);
    commit_info.push(json!({"txn": {
        "appId": txn.0,
        "version": txn.1,
        "lastUpdated": now,
    }}));
    commit_info.extend(removes);
    commit_info.extend(adds);
    let mut bytes = Vec::new();
    for line in &commit_info {
        serde_json::to_writer(&mut bytes, line).expect("actions serialize");
        bytes.push(b'\n');
    }
    Ok(Some(PlannedCommit {
        version: existing.map_or(0, |table| table.version + 1),
        bytes,
        adds: adds_count,
        removes: removes_count,
        partitions: touched,
        columns: schema.into_iter().collect(),
        partition_columns,
        txn,
    }))
}

/// An existing table must have the run's columns, with the same types, and
/// the same partition columns.
fn check_schema(table: &WriteTarget, schema: &[(String, Value)], partition_columns: &[String]) -> Result<(), String> {
    let show = |columns: &[(String, Value)]| {
        columns
            .iter()
            .map(|(name, kind)| {
                format!(
                    "{name} {}",
                    kind.as_str().map(str::to_string).unwrap_or(kind.to_string())
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let theirs: BTreeMap<&str, &Value> = table.columns.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let ours: BTreeMap<&str, &Value> = schema.iter().map(|(n, t)| (n.as_str(), t)).collect();
    if theirs != ours {
        return Err(format!(
            "has the columns ({}), and this run writes ({}): write the scores to a new table",
            show(&table.columns),
            show(schema)
        ));
    }
    if table.partition_columns != partition_columns {
        return Err(format!(
            "is partitioned by ({}), and this run's files are in folders of ({})",
            table.partition_columns.join(", "),
            partition_columns.join(", ")
        ));
    }
    Ok(())
}

fn remove_action(file: &LiveFile, now: i64) -> Value {
    json!({"remove": {
        "path": file.path,
        "deletionTimestamp": now,
        "dataChange": true,
        "extendedFileMetadata": true,
        "partitionValues": file.partition_values,
        "size": file.size,
    }})
}

/// What another writer's commit at a version this run wanted means for it.
#[derive(Debug, PartialEq, Eq)]
enum Winner {
    /// This run's own commit (a request that succeeded but looked failed).
    Ours,
    Conflict(String),
    Harmless,
}

fn judge_winner(bytes: &[u8], ours: &PlannedCommit, mode: WriteMode, run_id: &str) -> Winner {
    let partitions = &ours.partitions;
    let text = String::from_utf8_lossy(bytes);
    let mut conflict = None;
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let Ok(action) = serde_json::from_str::<Value>(line) else {
            return Winner::Conflict("wrote a commit lakescore cannot read".into());
        };
        let txn = &action["txn"];
        if action["commitInfo"]["lakescore"]["runId"].as_str() == Some(run_id)
            || (txn["appId"].as_str() == Some(ours.txn.0.as_str()) && txn["version"].as_i64() == Some(ours.txn.1))
        {
            return Winner::Ours;
        }
        if let Some(metadata) = action.get("metaData") {
            // A table created meanwhile as this run would create it is
            // one to commit to, not a conflict.
            let columns: Option<BTreeMap<String, Value>> = metadata["schemaString"]
                .as_str()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .map(|schema| schema_columns(&schema).into_iter().collect());
            let partition_columns: Vec<&str> = metadata["partitionColumns"]
                .as_array()
                .map(|names| names.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let configured = metadata["configuration"].as_object().is_some_and(|c| !c.is_empty());
            if columns.as_ref() != Some(&ours.columns) || partition_columns != ours.partition_columns || configured {
                conflict.get_or_insert_with(|| "changed the table's schema or properties".to_string());
            }
        }
        if let Some(protocol) = action.get("protocol") {
            let plain = protocol["minReaderVersion"].as_i64().is_some_and(|v| v <= 1)
                && protocol["minWriterVersion"].as_i64().is_some_and(|v| v <= 2);
            if !plain {
                conflict.get_or_insert_with(|| "changed the table's protocol".to_string());
            }
        }
        for kind in ["add", "remove"] {
            let Some(file) = action.get(kind) else { continue };
            if kind == "add" && mode == WriteMode::ErrorIfExists {
                conflict.get_or_insert_with(|| "added data to a table this run expected to hold none".to_string());
            }
            let values: PartitionValues = file["partitionValues"]
                .as_object()
                .map(|map| {
                    map.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().filter(|s| !s.is_empty()).map(str::to_string)))
                        .collect()
                })
                .unwrap_or_default();
            if partitions.contains(&values) {
                let verb = match kind {
                    "add" => "added",
                    _ => "removed",
                };
                conflict.get_or_insert_with(|| {
                    format!(
                        "{verb} files in a partition this run writes ({})",
                        values
                            .iter()
                            .map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null")))
                            .collect::<Vec<_>>()
                            .join("/")
                    )
                });
            }
        }
    }
    match conflict {
        Some(what) => Winner::Conflict(what),
        None => Winner::Harmless,
    }
}

/// `k=v/k2=v2` (Hive folder names, escaped) as partition values; the root
/// folder has none.
fn hive_values(partition: &Path) -> Result<Vec<(String, Option<String>)>, String> {
    let mut values = Vec::new();
    for part in partition.components() {
        let part = part.as_os_str().to_string_lossy();
        let Some((key, value)) = part.split_once('=') else {
            return Err(format!(
                "cannot take this run's files: their folder `{}` is not a Hive partition (`key=value`), as a Delta table's must be",
                partition.display()
            ));
        };
        let decode =
            |text: &str| percent_decode(text).ok_or_else(|| format!("`{part}` is not a valid Hive folder name"));
        let key = decode(key)?;
        let value = match value {
            HIVE_NULL => None,
            value => Some(decode(value)?),
        };
        values.push((key, value));
    }
    Ok(values)
}

/// A path relative to the table as the log writes it: a relative URL, each
/// byte outside `A-Z a-z 0-9 - . _ ~ / =` percent-encoded (a Hive folder's
/// `%3A` is `%253A` there, as Spark writes it).
fn log_path(relative: &Path) -> String {
    let text = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' | b'=' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a data file's footer says for its add action.
struct FileFacts {
    rows: u64,
    columns: Vec<(String, Value)>,
    stats: String,
}

/// Rows, columns (Delta types) and statistics of the Parquet file at
/// `path`: numRecords; per column the null count, when every row group
/// has one; min and max where every row group has exact ones and the type
/// has a JSON form readers compare safely (integers, finite floats, dates,
/// strings up to [`LONGEST_STAT_STRING`] characters).
fn file_facts(path: &Path) -> Result<FileFacts, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let metadata = parquet::file::metadata::ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(|e| e.to_string())?;
    let file_metadata = metadata.file_metadata();
    let arrow =
        parquet::arrow::parquet_to_arrow_schema(file_metadata.schema_descr(), file_metadata.key_value_metadata())
            .map_err(|e| e.to_string())?;
    let rows = u64::try_from(file_metadata.num_rows()).map_err(|_| "a negative row count".to_string())?;
    let mut columns = Vec::with_capacity(arrow.fields().len());
    let (mut minimum, mut maximum, mut nulls) =
        (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
    let descriptor = file_metadata.schema_descr();
    for field in arrow.fields() {
        let name = field.name();
        columns.push((
            name.clone(),
            delta_type(field.data_type()).map_err(|problem| format!("column `{name}` {problem}"))?,
        ));
        // A flat column is one leaf, named as the field.
        let Some(leaf) = (0..descriptor.num_columns()).find(|&i| {
            let path = descriptor.column(i).path().parts().to_vec();
            path.len() == 1 && path[0] == *name
        }) else {
            continue;
        };
        let chunks: Vec<Option<&Statistics>> = metadata
            .row_groups()
            .iter()
            .map(|group| group.column(leaf).statistics())
            .collect();
        let null_counts: Option<u64> = chunks
            .iter()
            .map(|s| s.and_then(|s| s.null_count_opt()))
            .sum::<Option<u64>>();
        if let Some(count) = null_counts {
            nulls.insert(name.clone(), json!(count));
        }
        if let Some((low, high)) = min_max(field.data_type(), &chunks) {
            minimum.insert(name.clone(), low);
            maximum.insert(name.clone(), high);
        }
    }
    let stats = json!({
        "numRecords": rows,
        "minValues": minimum,
        "maxValues": maximum,
        "nullCount": nulls,
    })
    .to_string();
    Ok(FileFacts { rows, columns, stats })
}

/// A column's Delta type, or why it has none.
fn delta_type(data_type: &DataType) -> Result<Value, String> {
    Ok(json!(match data_type {
        DataType::Int8 => "byte",
        DataType::Int16 => "short",
        DataType::Int32 => "integer",
        DataType::Int64 => "long",
        DataType::Float32 => "float",
        DataType::Float64 => "double",
        DataType::Boolean => "boolean",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp",
        DataType::Decimal128(precision, scale) if *scale >= 0 && *precision <= 38 => {
            return Ok(json!(format!("decimal({precision},{scale})")));
        }
        other =>
            return Err(format!(
                "is of Arrow type {other}, which a Delta table (reader version 1, writer version 2) has no type for"
            )),
    }))
}

/// The smallest minimum and largest maximum over a column's chunks, when
/// each chunk has exact ones and the type's JSON form is safe to compare.
fn min_max(data_type: &DataType, chunks: &[Option<&Statistics>]) -> Option<(Value, Value)> {
    let mut low: Option<Value> = None;
    let mut high: Option<Value> = None;
    let mut keys: Option<(Key, Key)> = None;
    for chunk in chunks {
        let (min, max) = chunk_min_max(data_type, (*chunk)?)?;
        keys = Some(match keys {
            None => {
                low = Some(min.1);
                high = Some(max.1);
                (min.0, max.0)
            }
            Some((known_low, known_high)) => {
                let new_low = match min.0.less_than(&known_low) {
                    true => {
                        low = Some(min.1);
                        min.0
                    }
                    false => known_low,
                };
                let new_high = match known_high.less_than(&max.0) {
                    true => {
                        high = Some(max.1);
                        max.0
                    }
                    false => known_high,
                };
                (new_low, new_high)
            }
        });
    }
    Some((low?, high?))
}

/// A value as compared, beside its JSON form.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Integer(i64),
    Float(f64),
    Text(Vec<u8>),
}

impl Key {
    fn less_than(&self, other: &Key) -> bool {
        match (self, other) {
            (Key::Integer(a), Key::Integer(b)) => a < b,
            (Key::Float(a), Key::Float(b)) => a < b,
            (Key::Text(a), Key::Text(b)) => a < b,
            _ => false,
        }
    }
}

fn chunk_min_max(data_type: &DataType, statistics: &Statistics) -> Option<((Key, Value), (Key, Value))> {
    fn integer(value: i64) -> (Key, Value) {
        (Key::Integer(value), json!(value))
    }
    fn float(value: f64) -> Option<(Key, Value)> {
        let number = serde_json::Number::from_f64(value)?;
        Some((Key::Float(value), Value::Number(number)))
    }
    fn date(days: i32) -> Option<(Key, Value)> {
        // (`rfc3339_from_epoch` starts at 1970: earlier dates get no bounds.)
        let day = crate::util::rfc3339_from_epoch((days >= 0).then_some(i64::from(days) * 86_400)?);
        Some((Key::Integer(days.into()), json!(day[..10])))
    }
    fn text(bytes: &[u8]) -> Option<(Key, Value)> {
        let text = std::str::from_utf8(bytes).ok()?;
        (text.chars().count() <= LONGEST_STAT_STRING).then(|| (Key::Text(bytes.to_vec()), json!(text)))
    }
    if !statistics.min_is_exact() || !statistics.max_is_exact() {
        return None;
    }
    match (data_type, statistics) {
        (DataType::Int8 | DataType::Int16 | DataType::Int32, Statistics::Int32(s)) => {
            Some((integer((*s.min_opt()?).into()), integer((*s.max_opt()?).into())))
        }
        (DataType::Int64, Statistics::Int64(s)) => Some((integer(*s.min_opt()?), integer(*s.max_opt()?))),
        (DataType::Date32, Statistics::Int32(s)) => Some((date(*s.min_opt()?)?, date(*s.max_opt()?)?)),
        (DataType::Float32, Statistics::Float(s)) => {
            Some((float((*s.min_opt()?).into())?, float((*s.max_opt()?).into())?))
        }
        (DataType::Float64, Statistics::Double(s)) => Some((float(*s.min_opt()?)?, float(*s.max_opt()?)?)),
        (DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View, Statistics::ByteArray(s)) => {
            Some((text(s.min_opt()?.data())?, text(s.max_opt()?.data())?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_folders_become_partition_values() {
        assert_eq!(hive_values(Path::new("")).unwrap(), vec![]);
        assert_eq!(
            hive_values(Path::new("dt=2026-11-25/region=e%3Du")).unwrap(),
            vec![
                ("dt".to_string(), Some("2026-11-25".to_string())),
                ("region".to_string(), Some("e=u".to_string()))
            ]
        );
        assert_eq!(
            hive_values(Path::new("dt=__HIVE_DEFAULT_PARTITION__")).unwrap(),
            vec![("dt".to_string(), None)]
        );
        assert!(
            hive_values(Path::new("2026/11"))
                .unwrap_err()
                .contains("not a Hive partition")
        );
    }

    #[test]
    fn log_paths_are_relative_urls() {
        assert_eq!(
            log_path(Path::new("dt=2026-11-25 10%3A00/part-0.parquet")),
            "dt=2026-11-25%2010%253A00/part-0.parquet"
        );
    }

    fn placed(partition: &str, key: &str, files: &[&str]) -> PlacedPartition {
        PlacedPartition {
            partition: PathBuf::from(partition),
            key: key.into(),
            run_id: "R".into(),
            columns: vec![("id".into(), json!("long")), ("score".into(), json!("double"))],
            files: files
                .iter()
                .map(|path| PlacedFile {
                    path: path.to_string(),
                    size: 10,
                    rows: 2,
                    stats: "{\"numRecords\":2}".into(),
                })
                .collect(),
        }
    }

    fn lines(commit: &PlannedCommit) -> Vec<Value> {
        String::from_utf8(commit.bytes.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn live(path: &str, dt: &str) -> LiveFile {
        LiveFile {
            path: path.into(),
            size: 5,
            partition_values: [("dt".to_string(), Some(dt.to_string()))].into(),
            has_deletion_vector: false,
        }
    }

    fn table(files: Vec<LiveFile>) -> WriteTarget {
        WriteTarget {
            version: 4,
            columns: vec![
                ("id".into(), json!("long")),
                ("score".into(), json!("double")),
                ("dt".into(), json!("string")),
            ],
            partition_columns: vec!["dt".into()],
            append_only: false,
            files,
        }
    }

    #[test]
    fn a_new_table_is_created_with_its_files_in_one_commit() {
        let partitions = [
            placed("dt=1", "k1", &["dt=1/a-R.parquet"]),
            placed("dt=2", "k2", &["dt=2/b-R.parquet"]),
        ];
        let commit = plan_commit(None, &partitions, WriteMode::ErrorIfExists, "R", "uuid", 7)
            .unwrap()
            .unwrap();
        let lines = lines(&commit);
        assert_eq!(commit.version, 0);
        assert_eq!(lines[0]["commitInfo"]["lakescore"]["runId"], "R");
        assert_eq!(lines[1]["protocol"]["minWriterVersion"], 2);
        assert_eq!(lines[2]["metaData"]["partitionColumns"], json!(["dt"]));
        let schema: Value = serde_json::from_str(lines[2]["metaData"]["schemaString"].as_str().unwrap()).unwrap();
        assert_eq!(schema["fields"][2]["name"], "dt");
        assert!(lines[3]["txn"]["appId"].as_str().unwrap().starts_with("lakescore-"));
        assert_eq!(lines[4]["add"]["partitionValues"], json!({"dt": "1"}));
        assert_eq!(lines[5]["add"]["path"], "dt=2/b-R.parquet");
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn overwrite_removes_only_the_other_files_of_the_partitions_it_writes() {
        let existing = table(vec![live("dt=1/old.parquet", "1"), live("dt=3/keep.parquet", "3")]);
        let partitions = [placed("dt=1", "k1", &["dt=1/a-R.parquet"])];
        let commit = plan_commit(Some(&existing), &partitions, WriteMode::Overwrite, "R", "uuid", 7)
            .unwrap()
            .unwrap();
        let lines = lines(&commit);
        assert_eq!(commit.version, 5);
        let removed: Vec<&Value> = lines.iter().filter_map(|l| l.get("remove")).collect();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0]["path"], "dt=1/old.parquet");
        assert!(
            lines
                .iter()
                .all(|l| l.get("metaData").is_none() && l.get("protocol").is_none())
        );
        assert_eq!(lines.iter().filter(|l| l.get("add").is_some()).count(), 1);

        // The table already holds exactly the run's files: nothing to commit.
        let done = table(vec![live("dt=1/a-R.parquet", "1"), live("dt=3/keep.parquet", "3")]);
        assert!(
            plan_commit(Some(&done), &partitions, WriteMode::Resume, "R", "uuid", 7)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn a_table_with_other_columns_is_refused_naming_them() {
        let mut existing = table(vec![]);
        existing.columns[1] = ("score".into(), json!("float"));
        let partitions = [placed("dt=1", "k1", &["dt=1/a-R.parquet"])];
        let error = plan_commit(Some(&existing), &partitions, WriteMode::Overwrite, "R", "uuid", 7).unwrap_err();
        assert!(
            error.contains("score float") && error.contains("score double"),
            "{error}"
        );
    }

    #[test]
    fn another_writers_commit_conflicts_only_when_it_touches_the_runs_partitions() {
        let partitions = [placed("dt=1", "k1", &["dt=1/a-R.parquet"])];
        let ours = plan_commit(None, &partitions, WriteMode::Overwrite, "R", "uuid", 7)
            .unwrap()
            .unwrap();
        let add = |dt: &str| format!("{{\"add\":{{\"path\":\"x\",\"partitionValues\":{{\"dt\":\"{dt}\"}}}}}}\n");
        assert_eq!(
            judge_winner(add("2").as_bytes(), &ours, WriteMode::Overwrite, "R"),
            Winner::Harmless
        );
        assert!(matches!(
            judge_winner(add("1").as_bytes(), &ours, WriteMode::Overwrite, "R"),
            Winner::Conflict(what) if what.contains("dt=1")
        ));
        assert!(matches!(
            judge_winner(add("2").as_bytes(), &ours, WriteMode::ErrorIfExists, "R"),
            Winner::Conflict(_)
        ));
        let metadata = b"{\"metaData\":{\"id\":\"x\"}}\n";
        assert!(matches!(
            judge_winner(metadata, &ours, WriteMode::Overwrite, "R"),
            Winner::Conflict(_)
        ));
        // Another run created the table as this one would have: harmless.
        let created = String::from_utf8(ours.bytes.clone())
            .unwrap()
            .replace("\"runId\":\"R\"", "\"runId\":\"S\"")
            .replace("dt=1/a-R", "dt=2/b-S")
            .replace("{\"dt\":\"1\"}", "{\"dt\":\"2\"}")
            .replace(&ours.txn.0, "lakescore-another-output");
        assert_eq!(
            judge_winner(created.as_bytes(), &ours, WriteMode::Overwrite, "R"),
            Winner::Harmless
        );
        let other_schema = created.replace("double", "float");
        assert!(matches!(
            judge_winner(other_schema.as_bytes(), &ours, WriteMode::Overwrite, "R"),
            Winner::Conflict(what) if what.contains("schema")
        ));
        let mine =
            b"{\"commitInfo\":{\"lakescore\":{\"runId\":\"R\"}}}\n{\"add\":{\"partitionValues\":{\"dt\":\"1\"}}}\n";
        assert_eq!(judge_winner(mine, &ours, WriteMode::Overwrite, "R"), Winner::Ours);
        // The same run's transaction, by its txn action alone.
        let txn = format!("{{\"txn\":{{\"appId\":\"{}\",\"version\":7}}}}\n", ours.txn.0);
        assert_eq!(
            judge_winner(txn.as_bytes(), &ours, WriteMode::Overwrite, "R"),
            Winner::Ours
        );
    }

    #[test]
    fn min_and_max_span_the_row_groups_and_skip_what_readers_cannot_compare() {
        use parquet::file::statistics::Statistics as S;
        let a = S::int64(Some(5), Some(9), None, Some(0), false);
        let b = S::int64(Some(-3), Some(7), None, Some(0), false);
        assert_eq!(
            min_max(&DataType::Int64, &[Some(&a), Some(&b)]),
            Some((json!(-3), json!(9)))
        );
        assert_eq!(min_max(&DataType::Int64, &[Some(&a), None]), None);
        let nan = S::double(Some(f64::NAN), Some(1.0), None, Some(0), false);
        assert_eq!(min_max(&DataType::Float64, &[Some(&nan)]), None);
        let day = S::int32(Some(0), Some(365), None, Some(0), false);
        assert_eq!(
            min_max(&DataType::Date32, &[Some(&day)]),
            Some((json!("1970-01-01"), json!("1971-01-01")))
        );
        assert!(delta_type(&DataType::UInt64).unwrap_err().contains("UInt64"));
    }
}
