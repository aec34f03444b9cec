//! Delta Lake tables as input: the data files of one snapshot of the table,
//! as its log (`_delta_log/`) says, not as the folder lists them (a file an
//! overwrite removed is still on disk, and must not be scored). The log is
//! replayed by `delta_kernel` with its default engine, over the same
//! object_store lakescore reads with, locally or on object storage; the
//! files are then read like any other (memory-mapped, or with coalesced
//! range requests).
//!
//! Each file's partition values come from the log, and its output path is
//! built from them Hive-style (`dt=2026-11-25/<file name>`), whatever
//! folder the writer put it in. Under column mapping (mode `name`) the files
//! store columns under physical names; each file is listed with the
//! table's names ([`DataFile::column_names`]), so features and id columns
//! are found, and written, by the names users know. What lakescore cannot
//! read exactly yet is refused with an error naming the Delta feature
//! (column mapping mode `id`). Deletion vectors (rows a file still holds
//! but the table no longer does) are read with the log and handed on as
//! [`DataFile::deleted_rows`]: the pass drops those rows as it decodes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use delta_kernel::Engine;
use delta_kernel::snapshot::{Snapshot, SnapshotRef};
use delta_kernel::table_features::ColumnMappingMode;
use delta_kernel_default_engine::DefaultEngineBuilder;

use super::{
    ColumnNames, DataFile, FileBytes, LocalTable, MmapChoice, ObjectTable, SourceError, TableSource, TableVersion,
};
use crate::store::{IoCounters, Remote};

/// Where delta_kernel finds a table: its root URL (a folder URL, ending in
/// `/`) in `store`, and the location messages name it by.
#[derive(Clone)]
pub struct KernelTable {
    location: PathBuf,
    root: url::Url,
    store: Arc<dyn object_store::ObjectStore>,
}

impl KernelTable {
    /// The local folder `path`, and its absolute form.
    pub fn local(path: &Path) -> Result<(KernelTable, PathBuf), SourceError> {
        let absolute = std::fs::canonicalize(path).map_err(|source| SourceError::Inspect {
            path: path.to_path_buf(),
            source,
        })?;
        let root = url::Url::from_directory_path(&absolute).map_err(|()| SourceError::Delta {
            path: path.to_path_buf(),
            problem: format!("`{}` is not a folder URL", absolute.display()),
        })?;
        let store = Arc::new(object_store::local::LocalFileSystem::new());
        let table = KernelTable {
            location: path.to_path_buf(),
            root,
            store,
        };
        Ok((table, absolute))
    }

    /// The table at `remote`, in its store.
    pub fn remote(remote: &Remote) -> Result<KernelTable, SourceError> {
        let location = PathBuf::from(&remote.url);
        let root = url::Url::parse(&format!("{}/", remote.url)).map_err(|error| SourceError::Delta {
            path: location.clone(),
            problem: format!("not a table URL: {error}"),
        })?;
        Ok(KernelTable {
            location,
            root,
            store: Arc::clone(&remote.store),
        })
    }

    fn failed(&self, problem: impl Into<String>) -> SourceError {
        SourceError::Delta {
            path: self.location.clone(),
            problem: problem.into(),
        }
    }

    fn engine(&self) -> impl Engine + use<> {
        DefaultEngineBuilder::new(Arc::clone(&self.store)).build()
    }

    /// The snapshot at version `at`, or the latest.
    fn snapshot(&self, engine: &dyn Engine, at: Option<u64>) -> Result<SnapshotRef, SourceError> {
        let builder = Snapshot::builder_for(self.root.as_str());
        let builder = match at {
            Some(version) => builder.at_version(version),
            None => builder,
        };
        builder.build(engine).map_err(|error| self.failed(error.to_string()))
    }
}

/// How the files of a Delta table are read.
#[derive(Debug)]
enum Files {
    /// Each at its `DataFile::location`.
    Local(MmapChoice),
    /// Each at its `DataFile::location`, a URL below the table's.
    Remote(ObjectTable),
}

/// One snapshot of a Delta table, its files listed from the log.
#[derive(Debug)]
pub struct DeltaTable {
    location: PathBuf,
    version: u64,
    files: Vec<DataFile>,
    reader: Files,
}

impl DeltaTable {
    /// The local Delta table at `path`, at `version`.
    pub fn open_local(path: &Path, version: TableVersion, mmap: MmapChoice) -> Result<DeltaTable, SourceError> {
        let (table, absolute) = KernelTable::local(path)?;
        let replayed = replay(&table, version)?;
        let snapshot = replayed.version;
        // A file's version is its modification time, as a folder's.
        let files = replayed.data_files(path, |relative| {
            let location = absolute.join(relative);
            let metadata = std::fs::metadata(&location).map_err(|source| SourceError::Open {
                path: location.clone(),
                source,
            })?;
            let version = super::local::version_of(&metadata);
            Ok((location, version))
        })?;
        Ok(DeltaTable {
            location: path.to_path_buf(),
            version: snapshot,
            files,
            reader: Files::Local(mmap),
        })
    }

    /// The Delta table at `remote`, at `version`.
    pub fn open_remote(remote: Remote, version: TableVersion) -> Result<DeltaTable, SourceError> {
        let location = PathBuf::from(&remote.url);
        let replayed = replay(&KernelTable::remote(&remote)?, version)?;
        let snapshot = replayed.version;
        // A Delta data file is never rewritten in place: the log pins the
        // file set, and every read asks for its size; no version to check.
        let files = replayed.data_files(&location, |relative| {
            Ok((PathBuf::from(remote.join(relative).url), None))
        })?;
        Ok(DeltaTable {
            location,
            version: snapshot,
            files,
            reader: Files::Remote(ObjectTable::new(remote)),
        })
    }

    /// The table version read.
    pub fn version(&self) -> u64 {
        self.version
    }
}

impl TableSource for DeltaTable {
    fn location(&self) -> &Path {
        &self.location
    }

    fn snapshot(&self) -> Option<String> {
        Some(format!("delta version {}", self.version))
    }

    fn list(&self) -> Result<Vec<DataFile>, SourceError> {
        if self.files.is_empty() {
            return Err(SourceError::NoDataFiles {
                path: self.location.clone(),
            });
        }
        Ok(self.files.clone())
    }

    fn open(&self, file: &DataFile) -> Result<Arc<dyn FileBytes>, SourceError> {
        match &self.reader {
            Files::Local(mmap) => LocalTable::open_file(&file.location, *mmap),
            Files::Remote(table) => {
                let remote = table.remote();
                let url = file.location.to_string_lossy();
                let relative = url
                    .strip_prefix(&format!("{}/", remote.url))
                    .ok_or_else(|| SourceError::Delta {
                        path: self.location.clone(),
                        problem: format!("`{url}` is not a file of the table"),
                    })?;
                Ok(table.open_object(remote.join(relative).path, file))
            }
        }
    }

    fn io_counters(&self) -> Option<Arc<IoCounters>> {
        match &self.reader {
            Files::Local(_) => None,
            Files::Remote(table) => Some(table.counters()),
        }
    }
}

/// A data file as the log names it.
struct LoggedFile {
    /// Its path in the log: relative to the table, URL-encoded.
    log_path: String,
    size: u64,
    /// In the order of the table's schema.
    partition_values: Vec<(String, String)>,
    /// Where its scores go below OUT: `k=v/` folders, then its file name.
    output_path: PathBuf,
    /// Its deletion vector's rows, ascending.
    deleted_rows: Option<Arc<Vec<u64>>>,
}

/// Replays the table's log to `version`: the snapshot's
/// version and its files, in a stable order (by output path).
fn replay(table: &KernelTable, version: TableVersion) -> Result<Replayed, SourceError> {
    let failed = |problem: String| table.failed(problem);
    let root = &table.root;
    let engine = table.engine();
    let latest = table.snapshot(&engine, None)?;
    let snapshot = match version {
        TableVersion::Latest => latest,
        TableVersion::At(wanted) => {
            if wanted > latest.version() {
                return Err(failed(format!(
                    "has no version {wanted}: its latest is {}",
                    latest.version()
                )));
            }
            table.snapshot(&engine, Some(wanted))?
        }
        TableVersion::AsOf(seconds) => {
            use delta_kernel::history_manager::{HistoryCommitType, latest_version_as_of};
            let at = latest_version_as_of(
                &latest,
                &engine,
                seconds.saturating_mul(1000),
                HistoryCommitType::Recreatable,
            )
            .map_err(|error| {
                failed(format!(
                    "has no version as of {}: {error}",
                    crate::util::rfc3339_from_epoch(seconds)
                ))
            })?;
            table.snapshot(&engine, Some(at.version))?
        }
    };
    // Partition columns in the schema's order, by the name the log keys
    // their values with (the physical one, under column mapping).
    let schema_order = column_names(&snapshot).map_err(&failed)?;
    let names: ColumnNames = schema_order
        .iter()
        .filter(|(physical, logical)| physical != logical)
        .cloned()
        .collect();
    let snapshot_version = snapshot.version();
    let scan = snapshot
        .scan_builder()
        .build()
        .map_err(|error| failed(error.to_string()))?;
    let mut scanned: Vec<delta_kernel::scan::state::ScanFile> = Vec::new();
    for metadata in scan.scan_metadata(&engine).map_err(|error| failed(error.to_string()))? {
        scanned = metadata
            .map_err(|error| failed(error.to_string()))?
            .visit_scan_files(scanned, |files, file| files.push(file))
            .map_err(|error| failed(error.to_string()))?;
    }
    let mut files = Vec::with_capacity(scanned.len());
    for file in scanned {
        // The rows a deletion vector removes from the file (inline in the
        // log, or in a file of its own, read now: a few bytes per file).
        let deleted_rows = match file.dv_info.has_vector() {
            false => None,
            true => {
                let mut rows = file
                    .dv_info
                    .get_row_indexes(&engine, root)
                    .map_err(|error| failed(format!("cannot read the deletion vector of `{}`: {error}", file.path)))?
                    .unwrap_or_default();
                rows.sort_unstable();
                rows.dedup();
                Some(Arc::new(rows))
            }
        };
        let partition_values: Vec<(String, String)> = schema_order
            .iter()
            .filter_map(|(physical, logical)| {
                let value = file.partition_values.get(physical)?;
                Some((logical.clone(), value.clone()))
            })
            .collect();
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        let name = decode_log_path(name).map_err(&failed)?;
        let mut output_path = PathBuf::new();
        for (key, value) in &partition_values {
            output_path.push(format!("{}={}", hive_escape(key), hive_value(value)));
        }
        output_path.push(name);
        files.push(LoggedFile {
            deleted_rows,
            log_path: file.path.clone(),
            size: u64::try_from(file.size).map_err(|_| failed(format!("`{}` has a negative size", file.path)))?,
            partition_values,
            output_path,
        });
    }
    files.sort_by(|a, b| a.output_path.cmp(&b.output_path));
    if let Some(pair) = files.windows(2).find(|pair| pair[0].output_path == pair[1].output_path) {
        return Err(failed(format!(
            "two files would be scored to the same output path `{}` (`{}` and `{}`)",
            pair[0].output_path.display(),
            pair[0].log_path,
            pair[1].log_path
        )));
    }
    Ok(Replayed {
        version: snapshot_version,
        files,
        names: (!names.is_empty()).then(|| Arc::new(names)),
    })
}

/// What a writer must know of a Delta table it is about to commit to
/// (`commit::delta`): one version's columns, partition columns and live files.
#[derive(Debug, Clone)]
pub struct WriteTarget {
    pub version: u64,
    /// Each column's name and Delta type (`"long"`, `{"type": "decimal(…)"}`…),
    /// partition columns included, in the schema's order.
    pub columns: Vec<(String, serde_json::Value)>,
    pub partition_columns: Vec<String>,
    pub append_only: bool,
    pub files: Vec<LiveFile>,
}

/// A file of a Delta table's snapshot, as its add action said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFile {
    /// As the log writes it (a relative URL).
    pub path: String,
    pub size: i64,
    /// Partition column -> value (`None`: null).
    pub partition_values: std::collections::BTreeMap<String, Option<String>>,
    pub has_deletion_vector: bool,
}

/// The table's latest version (its log read to the snapshot, no file
/// listed).
pub fn latest_version(table: &KernelTable) -> Result<u64, SourceError> {
    Ok(table.snapshot(&table.engine(), None)?.version())
}

/// `(name, type)` of each column of a Delta schema (its JSON form, as the
/// log's `schemaString` holds it), in order.
pub fn schema_columns(schema: &serde_json::Value) -> Vec<(String, serde_json::Value)> {
    schema["fields"]
        .as_array()
        .map(|fields| {
            fields
                .iter()
                .map(|field| {
                    (
                        field["name"].as_str().unwrap_or_default().to_string(),
                        field["type"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The table (version `at`, or the latest) as a writer sees it. Tables
/// lakescore cannot write exactly are refused, naming why: column mapping
/// (files would need physical column names), and whatever `delta_kernel`
/// itself cannot write (its check of the table's protocol and features).
pub fn for_writing(table: &KernelTable, at: Option<u64>) -> Result<WriteTarget, SourceError> {
    use delta_kernel::committer::FileSystemCommitter;
    use delta_kernel::transaction::UpdateTableOperation;
    let failed = |problem: String| table.failed(problem);
    let engine = table.engine();
    let snapshot = table.snapshot(&engine, at)?;
    if !matches!(
        snapshot.table_properties().column_mapping_mode,
        None | Some(ColumnMappingMode::None)
    ) {
        return Err(failed(
            "uses the Delta feature `columnMapping`, which lakescore does not write: write the scores to a new table"
                .into(),
        ));
    }
    let append_only = snapshot.table_properties().append_only.unwrap_or(false);
    let schema = serde_json::to_value(snapshot.schema().as_ref()).map_err(|error| failed(error.to_string()))?;
    let columns = schema_columns(&schema);
    // The kernel's own check that it could write this table (protocol
    // versions, table features), and the partition columns it reports.
    let transaction = Arc::clone(&snapshot)
        .update_table(UpdateTableOperation::Write, "lakescore", true)
        .build(&engine, Box::new(FileSystemCommitter::new()))
        .map_err(|error| failed(format!("cannot be written by lakescore: {error}")))?;
    let partition_columns = transaction.logical_partition_columns().to_vec();
    let version = snapshot.version();
    let scan = snapshot
        .scan_builder()
        .build()
        .map_err(|error| failed(error.to_string()))?;
    let mut files: Vec<LiveFile> = Vec::new();
    for metadata in scan.scan_metadata(&engine).map_err(|error| failed(error.to_string()))? {
        files = metadata
            .map_err(|error| failed(error.to_string()))?
            .visit_scan_files(files, |files, file| {
                files.push(LiveFile {
                    path: file.path,
                    size: file.size,
                    partition_values: file
                        .partition_values
                        .into_iter()
                        .map(|(key, value)| {
                            // The protocol: an empty value is a null.
                            let value = (!value.is_empty()).then_some(value);
                            (key, value)
                        })
                        .collect(),
                    has_deletion_vector: file.dv_info.has_vector(),
                })
            })
            .map_err(|error| failed(error.to_string()))?;
    }
    // A partition column the log gives no value for is null.
    for file in &mut files {
        for column in &partition_columns {
            file.partition_values.entry(column.clone()).or_insert(None);
        }
    }
    Ok(WriteTarget {
        version,
        columns,
        partition_columns,
        append_only,
        files,
    })
}

/// Writes a checkpoint of the table at `version` when the table's
/// checkpoint interval (`delta.checkpointInterval`, default 10) divides
/// it, so that readers replay a checkpoint and a few commits, not every
/// commit ever made. Returns whether one was written.
pub fn checkpoint_if_due(table: &KernelTable, version: u64) -> Result<bool, SourceError> {
    // The checkpoint writer needs a multi-threaded executor (it blocks on
    // writes from within the kernel's tasks): lakescore's I/O runtime.
    let executor =
        delta_kernel_default_engine::executor::tokio::TokioMultiThreadExecutor::new(crate::store::io_handle());
    let engine = DefaultEngineBuilder::new(Arc::clone(&table.store))
        .with_task_executor(Arc::new(executor))
        .build();
    let snapshot = table.snapshot(&engine, Some(version))?;
    let interval = snapshot
        .table_properties()
        .checkpoint_interval
        .map_or(CHECKPOINT_INTERVAL, |n| n.get());
    if version == 0 || !version.is_multiple_of(interval) {
        return Ok(false);
    }
    let (written, _) = snapshot
        .checkpoint(&engine, None)
        .map_err(|error| table.failed(format!("cannot write the checkpoint of version {version}: {error}")))?;
    Ok(matches!(
        written,
        delta_kernel::snapshot::CheckpointWriteResult::Written
    ))
}

/// Spark's default `delta.checkpointInterval`.
const CHECKPOINT_INTERVAL: u64 = 10;

/// What a snapshot of the table holds.
struct Replayed {
    version: u64,
    files: Vec<LoggedFile>,
    /// Under column mapping: physical -> logical name of each top-level column.
    names: Option<Arc<ColumnNames>>,
}

impl Replayed {
    /// The files as a source lists them, each located (and versioned) by
    /// `locate` from its decoded path relative to the table.
    fn data_files(
        self,
        table: &Path,
        locate: impl Fn(&str) -> Result<(PathBuf, Option<String>), SourceError>,
    ) -> Result<Vec<DataFile>, SourceError> {
        let names = self.names;
        self.files
            .into_iter()
            .map(|file| {
                let relative = decode_log_path(&file.log_path).map_err(|problem| SourceError::Delta {
                    path: table.to_path_buf(),
                    problem,
                })?;
                let (location, version) = locate(&relative)?;
                Ok(DataFile {
                    location,
                    relative_path: file.output_path,
                    size: file.size,
                    partition_values: file.partition_values,
                    version,
                    deleted_rows: file.deleted_rows,
                    column_names: names.clone(),
                })
            })
            .collect()
    }
}

/// `(physical, logical)` name of each top-level column, in the schema's
/// order: under column mapping mode `name` the physical one is the name the
/// files store the column under, and the log keys partition values with;
/// without column mapping the two are the same. Mode `id` (columns matched
/// by Parquet field id) is refused.
fn column_names(snapshot: &Snapshot) -> Result<Vec<(String, String)>, String> {
    use delta_kernel::schema::{ColumnMetadataKey, MetadataValue};
    let schema = snapshot.schema();
    match snapshot.table_properties().column_mapping_mode {
        None | Some(ColumnMappingMode::None) => {
            return Ok(schema.field_names().map(|name| (name.clone(), name.clone())).collect());
        }
        Some(ColumnMappingMode::Name) => {}
        Some(ColumnMappingMode::Id) => {
            return Err(
                "uses the Delta feature `columnMapping` in mode `id` (columns matched by Parquet field id), which lakescore does not read yet; mode `name` it does".into(),
            );
        }
    }
    schema
        .fields()
        .map(
            |field| match field.get_config_value(&ColumnMetadataKey::ColumnMappingPhysicalName) {
                Some(MetadataValue::String(physical)) => Ok((physical.clone(), field.name().clone())),
                _ => Err(format!(
                    "uses column mapping, and its column `{}` has no physical name",
                    field.name()
                )),
            },
        )
        .collect()
}

/// A path as the log writes it (a relative URL: `dt=2026-11-25/part-0%20a.parquet`)
/// as the relative path it names; absolute URLs (shallow clones) and `..`
/// are refused.
fn decode_log_path(text: &str) -> Result<String, String> {
    if text.contains("://") || text.starts_with('/') {
        return Err(format!(
            "names the data file `{text}` by an absolute path, outside the table: lakescore reads tables whose files are inside them"
        ));
    }
    let decoded = percent_decode(text)
        .ok_or_else(|| format!("names the data file `{text}`, which is not a valid relative URL"))?;
    if decoded
        .split('/')
        .any(|part| part == ".." || part == "." || part.is_empty())
    {
        return Err(format!("names the data file `{text}`, which is not inside the table"));
    }
    Ok(decoded)
}

pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A partition value as Hive writes it in a folder name: null (absent) as
/// `__HIVE_DEFAULT_PARTITION__`, the characters a path cannot hold escaped.
fn hive_value(value: &str) -> String {
    match value.is_empty() {
        true => "__HIVE_DEFAULT_PARTITION__".into(),
        false => hive_escape(value),
    }
}

/// Hive's escaping of path characters (`FileUtils.escapePathName`).
pub(crate) fn hive_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{01}'..='\u{1F}'
            | '"'
            | '#'
            | '%'
            | '\''
            | '*'
            | '/'
            | ':'
            | '='
            | '?'
            | '\\'
            | '\u{7F}'
            | '{'
            | '['
            | ']'
            | '^' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_decode_to_relative_paths_inside_the_table() {
        assert_eq!(
            decode_log_path("dt=2026-11-25/part-0%20a.parquet").unwrap(),
            "dt=2026-11-25/part-0 a.parquet"
        );
        assert!(decode_log_path("s3://other/part-0.parquet").is_err());
        assert!(decode_log_path("/abs/part-0.parquet").is_err());
        assert!(decode_log_path("../part-0.parquet").is_err());
        assert!(decode_log_path("a/%zz.parquet").is_err());
    }

    #[test]
    fn partition_values_become_hive_folder_names() {
        assert_eq!(hive_value("2026-11-25"), "2026-11-25");
        assert_eq!(hive_value(""), "__HIVE_DEFAULT_PARTITION__");
        assert_eq!(hive_value("a/b=c"), "a%2Fb%3Dc");
        assert_eq!(hive_value("2026-11-25 10:00:00"), "2026-11-25 10%3A00%3A00");
    }
}
