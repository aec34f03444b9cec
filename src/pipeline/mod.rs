//! Pipeline: the one place that knows both the lake and the models. It plans
//! the table, scores row groups in parallel on one rayon pool, checks and
//! profiles them in the same pass, writes the output in input order, judges
//! the run by its contract, and commits it or publishes nothing.
//!
//! Work distribution: each worker of the pool takes the next row group in
//! output order (an atomic counter), and goes through it [`BATCH_ROWS`] rows at
//! a time: decode, features, checks, model, encode. The calling thread is the
//! single writer: it appends encoded row groups to their files strictly in
//! order. Workers never run more than [`IN_FLIGHT_PER_THREAD`] x threads row
//! groups ahead of the writer, which bounds memory whatever the table size.

use std::collections::{BTreeMap, HashMap};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use arrow::array::{Array, ArrayRef, BooleanArray, Float32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::{ArrowWriter, ProjectionMask};

use crate::cancel::CancelToken;
use crate::commit::{self, LedgerRecord, OutputFileRecord, PartitionRecord, RunStatus, Transaction, WriteMode};
use crate::contract::{self, Contract, Inspection, NULL_KEY, RowMarks, TableFacts};
use crate::drift::Status;
use crate::error::{Error, Result, error_chain};
use crate::features::{self, FeatureSource};
use crate::lock::OutputLock;
use crate::model::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores};
use crate::observe::RunIdentity;
use crate::package::{ColumnKind, Package};
use crate::plan::{self, ColumnRequest, FilePlan, IdColumns, TablePlan, WorkUnit};
use crate::profile::TableProfile;
use crate::report::rows_per_second;
use crate::report::{InputRecord, Judgement, Manifest, RunReport, StageSeconds, WallSeconds};
use crate::scan::{LeafReader, ParquetFile, leaves_of_root};
use crate::sink::{self, CopiedChunk, EncodedRowGroup, OutputLayout, SinkError, StagedFile};
use crate::sla::{Sla, SlaReport};
use crate::test_hooks;
use crate::util::{rfc3339_utc, sha256_hex};

mod block;
mod judging;
mod row_policies;

pub(crate) use block::BlockSteps;
pub(crate) use judging::{is_kind, judgement_of, newest_of_column};
pub(crate) use row_policies::row_keys;

use judging::{judge, rejected_by_schema, table_facts};
use row_policies::{append_side_table, finish_side_table, leaf_keys, quarantine_rows};

/// Rows decoded, turned into features and scored at a time within a row group.
/// The feature block (2048 rows x 34 features x 8 bytes = 557 KB) then stays in
/// the core's L2 cache from the feature pass to the model pass: the feature
/// stage runs at twice the speed it has with 8192-row blocks (`cargo bench
/// --bench scan`), and the buffers are reused batch after batch.
pub const BATCH_ROWS: usize = 2048;

/// How many row groups each worker may be ahead of the writer.
pub const IN_FLIGHT_PER_THREAD: usize = 2;

/// Settings shared by the commands.
#[derive(Clone)]
pub struct RunOptions {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub id_columns: IdColumns,
    /// Told how far each pass has got (the binary's progress bar).
    pub progress: Option<Arc<dyn crate::progress::Progress>>,
    /// Stops the run at its next row group, or before it publishes.
    pub cancel: CancelToken,
    /// The device the model was loaded on, for reports.
    pub device: String,
    /// The run's clock for freshness rules, seconds since the epoch (default: now).
    pub as_of: Option<i64>,
    /// The run's id and start time.
    pub identity: RunIdentity,
    /// Service levels `score` judges itself by.
    pub sla: Sla,
    /// Shadow scoring: only the judged score columns (a model set's
    /// champion's) are published; the rest (the challengers') go to the
    /// run's shadow table, `OUT/_lakescore/shadow/<run id>.parquet`.
    pub shadow: bool,
}

impl Default for RunOptions {
    /// One thread per core, the default id columns, on the CPU, a new run
    /// identity, no SLA, no progress, a token nobody has triggered.
    fn default() -> RunOptions {
        RunOptions {
            threads: 0,
            id_columns: IdColumns::Default,
            progress: None,
            cancel: CancelToken::new(),
            device: "cpu".into(),
            as_of: None,
            identity: RunIdentity::new(),
            sla: Sla::default(),
            shadow: false,
        }
    }
}

impl RunOptions {
    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    fn as_of(&self) -> i64 {
        self.as_of.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        })
    }
}

/// What a pass does besides decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PassKind {
    /// Run the model.
    predict: bool,
    /// Check the contract and profile features and scores.
    inspect: bool,
    /// Judge the rules (not for `profile`, which only profiles).
    rules: bool,
    /// Encode output row groups.
    encode: bool,
}

/// `lakescore score`: scores `input` into `output`, checks it against the
/// package's contract in the same pass, and commits it, or, when a rule or
/// guard says no, publishes nothing and reports why (status `rejected`).
/// `began` is called once the run holds OUT's lock and has opened its
/// transaction (for the lineage START event).
pub fn score(
    package: &Package,
    input: &Path,
    output: &Path,
    mode: WriteMode,
    options: &RunOptions,
    began: &dyn Fn(),
) -> Result<RunReport> {
    let start = Start::new(options)?;
    let identity = &options.identity;
    let mut ledger = LedgerRecord::starting(&identity.run_id, &identity.uuid, identity.started_at, mode, input);
    // A second run into an output lakescore has written before is refused
    // here, before planning (which reads every footer). A new output has no
    // lock folder yet: creating one would touch OUT before the input is
    // known to be good, so its lock is taken when the transaction begins.
    let meta = output.join(commit::META_DIR);
    let early_lock = match meta.is_dir() {
        true => Some(OutputLock::acquire(output, &meta, &ledger.holder())?),
        false => None,
    };
    let (started_at, run_id) = (identity.started_at, &identity.run_id);
    let (clock, pool) = (start.clock, &start.pool);
    let model = package.model.as_ref();
    let pass = PassKind {
        predict: true,
        inspect: true,
        rules: true,
        encode: true,
    };

    // Everything that can be checked before touching OUT is checked here, so
    // that bad input or a bad model leaves OUT exactly as it was.
    let (table, facts, mut report) = prepare_run(&start, "score", package, input, options, pass)?;
    commit::check_separate(input, output)?;
    let plan_seconds = clock.elapsed().as_secs_f64();
    report.output = Some(output.to_path_buf());
    if let Some(checks) = rejected_by_schema(&package.contract, &facts) {
        report.judgement.checks = Some(checks);
        return Ok(report.finish_rejected(clock));
    }
    let info = model.info();
    ledger.input_fingerprint = table_fingerprint(&table.plan);
    ledger.input_files = table.plan.files.len();
    ledger.model_name = info.name.clone();
    ledger.model_version = info.version.clone();
    ledger.model_sha256 = info.sha256.clone();
    let mut transaction = Transaction::begin(output, mode, ledger, early_lock)?;
    began();
    tracing::info!(input = %input.display(), output = %output.display(), "scoring");

    let outcome = stage_and_judge(pool, package, &table, &facts, &mut transaction, options)
        // The last moment a stop request is heard: publishing takes renames
        // only, and a run that has begun to publish finishes.
        .and_then(|done| options.cancel.check().map(|()| done).map_err(Error::from));
    let (scored, staged, reused) = match outcome {
        Ok(done) => done,
        Err(error) => return Err(abort(transaction, error)),
    };
    scored.record(&mut report, true);
    if report.judgement.rejects() {
        close_unpublished(transaction, RunStatus::Rejected, &report.judgement.rejection_summary());
        return Ok(report.finish_rejected(clock));
    }

    let published = publish(&scored, staged, &reused, &table, &mut transaction);
    let (partitions, side_outputs) = match published {
        Ok(done) => done,
        Err(error) => return Err(abort(transaction, error)),
    };
    let score_seconds = scored.seconds;
    let commit_seconds = clock.elapsed().as_secs_f64() - plan_seconds - score_seconds;
    let wall_seconds = WallSeconds {
        plan: plan_seconds,
        score: score_seconds,
        commit: commit_seconds,
        total: clock.elapsed().as_secs_f64(),
    };
    let outputs: Vec<OutputFileRecord> = partitions.iter().flat_map(|p| p.files.iter().cloned()).collect();
    let rows = table.plan.total_rows();
    let manifest = Manifest {
        run_id: run_id.clone(),
        lakescore_version: env!("CARGO_PKG_VERSION").into(),
        started_at: rfc3339_utc(started_at),
        finished_at: rfc3339_utc(SystemTime::now()),
        mode: mode.to_string(),
        model: info.clone(),
        input: input.to_path_buf(),
        id_columns: table.plan.id_columns.clone(),
        score_columns: table.score_columns.clone(),
        inputs: input_records(&table.plan),
        outputs: outputs.clone(),
        reused_partitions: reused.iter().map(|(partition, _)| partition.clone()).collect(),
        rows,
        rows_quarantined: report.rows_quarantined,
        quarantine: side_outputs.quarantine.clone(),
        profile: side_outputs.profile.clone(),
        shadow: side_outputs.shadow.clone(),
        models: report.models.clone(),
        wall_seconds,
    };
    // Judged before the commit's last step, so that the ledger has it; the
    // time the manifest takes to write is not worth a second judgement.
    let sla = options.sla.judge(
        started_at,
        SystemTime::now(),
        rows - report.rows_quarantined,
        rows_per_second(report.rows_scored, wall_seconds.total),
    );
    let outcome = commit::Published {
        rows,
        rows_quarantined: report.rows_quarantined,
        sla_missed: sla.as_ref().map(SlaReport::missed).unwrap_or_default(),
    };
    transaction.finish(&manifest, outcome)?;
    report.status = match sla.as_ref().is_some_and(|s| s.breached) {
        true => RunStatus::SlaMissed,
        false => RunStatus::Succeeded,
    };
    report.sla = sla;
    report.reused_partitions = reused.len();
    report.bytes_written = outputs.iter().map(|f| f.bytes).sum();
    report.quarantine = side_outputs.quarantine;
    report.profile = side_outputs.profile;
    report.shadow = side_outputs.shadow;
    report.wall_seconds = wall_seconds;
    Ok(report.finish(clock))
}

/// Ends a failed run's transaction, recording why, and hands the error back.
fn abort(transaction: Transaction, error: Error) -> Error {
    close_unpublished(transaction, error.run_status(), &error_chain(&error));
    error
}

/// Ends a run that publishes nothing: its staged files go, its ledger entry
/// says why.
fn close_unpublished(transaction: Transaction, status: RunStatus, why: &str) {
    if let Err(abort_error) = transaction.abort(status, why) {
        tracing::warn!(error = %abort_error, "could not clean up after the run");
    }
}

/// One digest for a whole input table: every file's path, size and footer.
pub(crate) fn table_fingerprint(plan: &TablePlan) -> String {
    let mut text = String::new();
    for file in &plan.files {
        text.push_str(&format!(
            "{} {} {}\n",
            file.relative_path.display(),
            file.file.size_bytes,
            file.file.footer_fingerprint
        ));
    }
    sha256_hex(text.as_bytes())
}

/// `lakescore bench`: the whole pipeline, timed per stage. With `write`, the
/// output goes to a scratch folder that is removed afterwards; without, the
/// scores are computed and dropped (no encode, no write). With `checks`, the
/// contract and profiles run as in `score` (and are reported, never acted on).
pub fn bench(package: &Package, input: &Path, write: bool, checks: bool, options: &RunOptions) -> Result<RunReport> {
    unpublished_pass("bench", package, input, write, checks, options)
}

/// One pass that decodes and scores, without checks and without writing: for
/// commands whose model set watches its own scores (`evaluate`).
pub fn score_only(package: &Package, input: &Path, command: &'static str, options: &RunOptions) -> Result<RunReport> {
    unpublished_pass(command, package, input, false, false, options)
}

/// A scoring pass that publishes nothing: with `write`, into a scratch
/// folder removed afterwards; with `checks`, the contract and profiles run
/// (reported, never acted on).
fn unpublished_pass(
    command: &'static str,
    package: &Package,
    input: &Path,
    write: bool,
    checks: bool,
    options: &RunOptions,
) -> Result<RunReport> {
    let start = Start::new(options)?;
    let (clock, run_id, pool) = (start.clock, &options.identity.run_id, &start.pool);
    let pass = PassKind {
        predict: true,
        inspect: checks,
        rules: checks,
        encode: write,
    };
    let (table, facts, mut report) = prepare_run(&start, command, package, input, options, pass)?;
    let plan_seconds = clock.elapsed().as_secs_f64();

    let scratch = std::env::temp_dir().join(format!("lakescore-bench-{run_id}"));
    let destination = |relative: &Path| scratch.join(relative);
    let all_files: Vec<usize> = (0..table.plan.files.len()).collect();
    let scored = score_files(
        pool,
        package,
        &table,
        &all_files,
        write.then_some(&destination),
        None,
        options,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let scored = judge(package, &table, &facts, scored?);
    report.status = RunStatus::Succeeded;
    scored.record(&mut report, true);
    report.bytes_written = scored.files.iter().map(|(_, bytes)| bytes).sum();
    report.wall_seconds = WallSeconds {
        plan: plan_seconds,
        score: scored.seconds,
        commit: 0.0,
        total: 0.0,
    };
    Ok(report.finish(clock))
}

/// `lakescore check`: the contract alone, in one streaming pass, no model run
/// and nothing written. Status `rejected` when a failing rule says stop.
pub fn check(package: &Package, input: &Path, options: &RunOptions) -> Result<RunReport> {
    let start = Start::new(options)?;
    let (clock, pool) = (start.clock, &start.pool);
    let pass = PassKind {
        predict: false,
        inspect: true,
        rules: true,
        encode: false,
    };
    let (table, facts, mut report) = prepare_run(&start, "check", package, input, options, pass)?;
    if let Some(checks) = rejected_by_schema(&package.contract, &facts) {
        report.judgement.checks = Some(checks);
        return Ok(report.finish_rejected(clock));
    }
    let all_files: Vec<usize> = (0..table.plan.files.len()).collect();
    let scored = score_files(pool, package, &table, &all_files, None, None, options)?;
    let scored = judge(package, &table, &facts, scored);
    scored.record(&mut report, false);
    Ok(match report.judgement.rejects() {
        true => report.finish_rejected(clock),
        false => {
            report.status = RunStatus::Succeeded;
            report.finish(clock)
        }
    })
}

/// `lakescore profile`: the profile of a table's model features (and, with
/// `scores`, of the model's scores), in one pass.
pub fn profile(package: &Package, input: &Path, scores: bool, options: &RunOptions) -> Result<TableProfile> {
    let pool = build_pool(options.thread_count())?;
    let pass = PassKind {
        predict: scores,
        inspect: true,
        rules: false,
        encode: false,
    };
    let table = pool.install(|| prepare(package, input, options, pass))?;
    let all_files: Vec<usize> = (0..table.plan.files.len()).collect();
    let scored = score_files(&pool, package, &table, &all_files, None, None, options)?;
    let inspection = scored.inspection.expect("profiling inspects");
    Ok(inspection.profile(
        &package.contract,
        package.model.features(),
        &input.display().to_string(),
        scores,
    ))
}

/// A stand-in model whose features are every numeric column of a table, for
/// profiling a table without a model.
#[derive(Debug)]
pub struct TableColumns {
    info: ModelInfo,
    features: Vec<Feature>,
}

impl TableColumns {
    /// The numeric top-level columns of the first file of `input` (string and
    /// nested columns are left out: they have no model categories to count by).
    pub fn of(input: &Path) -> Result<TableColumns> {
        let files = plan::find_data_files(input)?;
        let Some((path, _)) = files.first() else {
            return Err(Error::Usage(format!("`{}` holds no Parquet files", input.display())));
        };
        let file = ParquetFile::open(path)?;
        let features = file
            .metadata
            .schema()
            .fields()
            .iter()
            .filter(|f| features::is_numeric(f.data_type()))
            .map(|f| Feature {
                name: f.name().clone(),
                missing_value: f64::NAN,
                categories: None,
            })
            .collect();
        Ok(TableColumns {
            info: ModelInfo {
                name: "columns".into(),
                version: None,
                format: crate::model::ModelFormat::Linear,
                path: input.to_path_buf(),
                sha256: String::new(),
            },
            features,
        })
    }
}

impl Model for TableColumns {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn features(&self) -> &[Feature] {
        &self.features
    }

    fn n_outputs(&self) -> usize {
        0
    }

    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
        Ok(Scores {
            n_rows: block.n_rows,
            outputs: Vec::new(),
        })
    }
}

fn describe_table(report: &mut RunReport, plan: &TablePlan) {
    report.files = plan.files.len();
    report.row_groups = plan.total_row_groups();
    report.rows = plan.total_rows();
    report.bytes_read = plan.files.iter().map(|f| f.file.size_bytes).sum();
}

/// How the columns a run needs are read from one file.
struct FileScan {
    /// Columns decoded through Arrow: id columns that cannot be copied, and
    /// features without a fast leaf reader.
    arrow_projection: Option<ProjectionMask>,
    /// Where each id column comes from.
    id_sources: Vec<IdSource>,
    /// Where each model feature comes from.
    sources: Vec<FeatureSource>,
    /// The leaf column of each leaf reader.
    leaf_readers: Vec<usize>,
    /// The leaf reader of the one integer column the uniqueness rule keys on,
    /// when it is read that way (else keys come from the Arrow id columns).
    key_reader: Option<usize>,
    /// Every leaf column the workers read, for page advice.
    leaves: Vec<usize>,
    /// Leaf columns the writer copies to the output; it releases their pages
    /// once they are copied.
    copied_leaves: Vec<usize>,
    /// The other leaves of `leaves`, released by the worker that read them.
    released_by_workers: Vec<usize>,
}

/// How an id column reaches the output.
#[derive(Debug, Clone, Copy)]
enum IdSource {
    /// Its column chunks are copied byte for byte (leaf column `leaf`).
    Copy { leaf: usize },
    /// Decoded into column `position` of the Arrow batch, encoded again.
    Arrow { position: usize },
}

impl FileScan {
    /// `copy_ids`: id columns whose chunks can be copied are; otherwise (rows
    /// are dropped by quarantine) all are decoded. `unique_roots`: the id
    /// columns the uniqueness rule needs as values: one integer column is
    /// read by a leaf reader (and still copied), anything else through Arrow.
    fn new(file: &FilePlan, layout: &OutputLayout, copy_ids: bool, unique_roots: Option<&[usize]>) -> Self {
        let descriptor = file.file.metadata.parquet_schema();
        let schema = file.file.metadata.schema();
        let leaves_of = |root: usize| leaves_of_root(descriptor, root);
        let key_leaf = match unique_roots {
            Some(&[root]) => match leaves_of(root)[..] {
                [leaf]
                    if descriptor.column(leaf).max_rep_level() == 0
                        && matches!(
                            descriptor.column(leaf).physical_type(),
                            parquet::basic::Type::INT32 | parquet::basic::Type::INT64
                        ) =>
                {
                    Some(leaf)
                }
                _ => None,
            },
            _ => None,
        };
        let copy_ids = copy_ids && (unique_roots.is_none() || key_leaf.is_some());
        let row_groups = file.file.metadata.metadata().row_groups();
        let copyable = |id_idx: usize, root: usize| match leaves_of(root)[..] {
            [leaf]
                if copy_ids
                && layout.can_copy_into(id_idx, &descriptor.column(leaf))
                && descriptor.column(leaf).max_rep_level() == 0
                // A chunk kept in another file cannot be copied from this one.
                && row_groups.iter().all(|rg| rg.column(leaf).file_path().is_none()) =>
            {
                Some(leaf)
            }
            _ => None,
        };
        let copied: Vec<Option<usize>> = file
            .id_roots
            .iter()
            .enumerate()
            .map(|(id_idx, &root)| copyable(id_idx, root))
            .collect();
        let mut arrow_roots: Vec<usize> = file
            .id_roots
            .iter()
            .zip(&copied)
            .filter(|(_, copied)| copied.is_none())
            .map(|(root, _)| *root)
            .collect();
        let mut leaf_readers = Vec::new();
        let mut fast = Vec::with_capacity(file.feature_roots.len());
        for &root in &file.feature_roots {
            let conversion = match leaves_of(root)[..] {
                [leaf] => features::leaf_conversion(&descriptor.column(leaf), schema.field(root).data_type())
                    .map(|conversion| (leaf, conversion)),
                _ => None,
            };
            match conversion {
                Some((leaf, conversion)) => {
                    fast.push(Some(FeatureSource::Leaf {
                        reader: leaf_readers.len(),
                        conversion,
                    }));
                    leaf_readers.push(leaf);
                }
                None => {
                    fast.push(None);
                    arrow_roots.push(root);
                }
            }
        }
        let key_reader = key_leaf.filter(|_| copy_ids).map(|leaf| {
            leaf_readers.push(leaf);
            leaf_readers.len() - 1
        });
        arrow_roots.sort_unstable();
        arrow_roots.dedup();
        // An Arrow batch holds the projected root columns in file order.
        let position = |root: usize| arrow_roots.binary_search(&root).expect("projected");
        let sources = fast
            .into_iter()
            .zip(&file.feature_roots)
            .map(|(source, &root)| {
                source.unwrap_or_else(|| FeatureSource::Arrow {
                    position: position(root),
                })
            })
            .collect();
        let id_sources = file
            .id_roots
            .iter()
            .zip(&copied)
            .map(|(&root, copied)| match copied {
                Some(leaf) => IdSource::Copy { leaf: *leaf },
                None => IdSource::Arrow {
                    position: position(root),
                },
            })
            .collect();
        let copied_leaves: Vec<usize> = copied.iter().flatten().copied().collect();
        let mut leaves: Vec<usize> = arrow_roots.iter().flat_map(|&root| leaves_of(root)).collect();
        leaves.extend(&leaf_readers);
        leaves.extend(&copied_leaves);
        leaves.sort_unstable();
        leaves.dedup();
        FileScan {
            arrow_projection: (!arrow_roots.is_empty())
                .then(|| ProjectionMask::roots(descriptor, arrow_roots.iter().copied())),
            id_sources,
            sources,
            leaf_readers,
            key_reader,
            released_by_workers: leaves.iter().filter(|l| !copied_leaves.contains(l)).copied().collect(),
            leaves,
            copied_leaves,
        }
    }

    /// The output chunks of this row group that are copied, one entry per
    /// output field (ids, then the score columns, which never are).
    fn copied_chunks(&self, file: &ParquetFile, row_group: usize, n_outputs: usize) -> Vec<Option<CopiedChunk>> {
        let ids = self.id_sources.iter().map(|source| match *source {
            IdSource::Copy { leaf } => {
                let (source, metadata) = file.column_chunk(row_group, leaf);
                Some(CopiedChunk { source, metadata })
            }
            IdSource::Arrow { .. } => None,
        });
        ids.chain(std::iter::repeat_with(|| None).take(n_outputs)).collect()
    }
}

/// A planned table with everything checked that can be checked from footers.
struct PreparedTable {
    plan: TablePlan,
    pass: PassKind,
    /// How to read each input file.
    scans: Vec<FileScan>,
    /// One output layout per input file.
    layouts: Vec<OutputLayout>,
    score_columns: Vec<String>,
    /// The model's features as the feature block is built: with NaN for
    /// missing values when the pass inspects them (rules see every null).
    block_features: Vec<Feature>,
    /// (feature, fill value) of features whose missing value is not NaN,
    /// filled in after inspection.
    fills: Vec<(usize, f64)>,
    /// (feature, missing value) of categorical features: the missing value
    /// replaces [`features::UNKNOWN_CATEGORY`] after inspection.
    unknown_fills: Vec<(usize, f64)>,
    /// Positions among the id columns of the columns that must be unique.
    unique_ids: Option<Vec<usize>>,
    /// The unique column, when it is one integer column, whose keys are then
    /// its values.
    exact_key_column: Option<String>,
    /// The contract can quarantine rows or flag them.
    quarantines: bool,
    flags: bool,
    /// The schema of the quarantine table.
    quarantine_schema: SchemaRef,
    /// The schema of the shadow table (ids, then the challengers' scores),
    /// when the run shadows.
    shadow_schema: Option<SchemaRef>,
}

/// The model's features as a pass builds its feature blocks.
pub(crate) struct BlockFeatures {
    /// With NaN for missing values when the pass inspects them (rules see
    /// every null); else with the model's own missing values.
    pub features: Vec<Feature>,
    /// (feature, fill value) of features whose missing value is not NaN,
    /// filled in after inspection.
    pub fills: Vec<(usize, f64)>,
    /// (feature, missing value) of categorical features: the missing value
    /// replaces [`features::UNKNOWN_CATEGORY`] after inspection.
    pub unknown_fills: Vec<(usize, f64)>,
}

impl BlockFeatures {
    pub(crate) fn of(model: &dyn Model, inspect: bool) -> BlockFeatures {
        let features = model.features();
        let after_inspection = |keep: fn(&Feature) -> bool| -> Vec<(usize, f64)> {
            match inspect {
                true => features
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| keep(f))
                    .map(|(j, f)| (j, f.missing_value))
                    .collect(),
                false => Vec::new(),
            }
        };
        BlockFeatures {
            features: features
                .iter()
                .map(|f| Feature {
                    missing_value: if inspect { f64::NAN } else { f.missing_value },
                    ..f.clone()
                })
                .collect(),
            fills: after_inspection(|f| !f.missing_value.is_nan()),
            unknown_fills: after_inspection(|f| f.categories.is_some()),
        }
    }
}

impl PreparedTable {
    /// The steps every block of this pass goes through after decoding.
    fn block_steps<'a>(&'a self, package: &'a Package) -> BlockSteps<'a> {
        BlockSteps {
            contract: &package.contract,
            model: package.model.as_ref(),
            fills: &self.fills,
            unknown_fills: &self.unknown_fills,
            flags: self.flags,
            published_scores: self.score_columns.len(),
        }
    }
}

/// Columns of the quarantine table after the id columns.
const QUARANTINE_COLUMNS: [&str; 4] = [
    "lakescore_file",
    "lakescore_row_group",
    "lakescore_row",
    "lakescore_reasons",
];

fn prepare(package: &Package, input: &Path, options: &RunOptions, pass: PassKind) -> Result<PreparedTable> {
    let model = package.model.as_ref();
    let contract = &package.contract;
    let request = ColumnRequest {
        features: contract.columns.clone(),
        id_columns: options.id_columns.clone(),
    };
    let plan = plan::plan_table(input, &request)?;
    let score_columns = match pass.predict {
        true => contract.written_score_columns.clone(),
        false => Vec::new(),
    };
    // With shadow scoring, the output has the champion's columns; the shadow
    // table has the rest.
    let published_scores = match options.shadow && pass.predict && pass.encode {
        true => contract.score_columns.len(),
        false => score_columns.len(),
    };
    let shadow_columns = score_columns[published_scores..].to_vec();
    if !shadow_columns.is_empty() && plan.id_columns.is_empty() {
        return Err(Error::Usage(
            "`--shadow` writes the challengers' scores with the rows' ids, and this table has none: name them with \
             `--id-column`"
                .into(),
        ));
    }
    let score_columns = score_columns[..published_scores].to_vec();
    let mut output_columns = score_columns.clone();
    output_columns.extend(shadow_columns.iter().cloned());
    let flags = pass.inspect && pass.predict && contract.flags();
    if flags {
        output_columns.push(sink::FLAGS_COLUMN.to_string());
    }
    if let Some(clash) = plan.id_columns.iter().find(|c| output_columns.contains(c)) {
        return Err(Error::Usage(format!(
            "id column `{clash}` has the name of an output column; rename it or leave it out of `--id-column`"
        )));
    }
    let unique_ids =
        match (&contract.unique, pass.inspect) {
            (Some((_, columns)), true) => {
                Some(
                    columns
                        .iter()
                        .map(|column| {
                            plan.id_columns.iter().position(|c| c == column).ok_or_else(|| {
                        Error::Usage(format!(
                            "the contract's `table.unique` names `{column}`, which is not an id column of this run \
                             (id columns: {}); add `--id-column {column}`",
                            if plan.id_columns.is_empty() { "none".to_string() } else { plan.id_columns.join(", ") }
                        ))
                    })
                        })
                        .collect::<Result<Vec<usize>>>()?,
                )
            }
            _ => None,
        };
    let exact_key_column = match (&unique_ids, plan.files.first()) {
        (Some(positions), Some(file)) if positions.len() == 1 => {
            let field = file.file.metadata.schema().field(file.id_roots[positions[0]]).clone();
            matches!(field.data_type(), DataType::Int32 | DataType::Int64).then(|| field.name().clone())
        }
        _ => None,
    };
    let quarantines = pass.inspect && pass.predict && contract.quarantines();
    // Rows of side tables need their ids decoded, not copied.
    let copy_ids = !quarantines && shadow_columns.is_empty();
    let mut layouts = Vec::with_capacity(plan.files.len());
    let mut scans = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let schema = file.file.metadata.schema();
        for ((feature, &root), column) in model.features().iter().zip(&file.feature_roots).zip(&contract.columns) {
            let as_read = Feature {
                name: column.clone(),
                ..feature.clone()
            };
            features::check_feature_column(&file.file.path, &as_read, schema.field(root).data_type())?;
        }
        let id_fields: Vec<_> = file
            .id_roots
            .iter()
            .map(|&root| Arc::new(schema.field(root).clone()))
            .collect();
        let layout = OutputLayout::new(&file.file.path, id_fields, &score_columns, flags)?;
        let unique_roots: Option<Vec<usize>> = unique_ids
            .as_ref()
            .map(|positions| positions.iter().map(|&i| file.id_roots[i]).collect());
        scans.push(FileScan::new(file, &layout, copy_ids, unique_roots.as_deref()));
        layouts.push(layout);
    }
    // Keys and the quarantine table need one type per id column across files.
    if let Some(first) = plan.files.first() {
        let must_match: Vec<usize> = match (quarantines || !shadow_columns.is_empty(), &unique_ids) {
            (true, _) => (0..plan.id_columns.len()).collect(),
            (false, Some(positions)) => positions.clone(),
            (false, None) => Vec::new(),
        };
        for file in &plan.files[1..] {
            for &i in &must_match {
                let expected = first
                    .file
                    .metadata
                    .schema()
                    .field(first.id_roots[i])
                    .data_type()
                    .clone();
                let found = file.file.metadata.schema().field(file.id_roots[i]).data_type().clone();
                if found != expected {
                    return Err(Error::Usage(format!(
                        "id column `{}` is {found} in `{}` but {expected} in `{}`; the contract's uniqueness rule, the \
                         quarantine table and the shadow table need one type",
                        plan.id_columns[i],
                        file.file.path.display(),
                        first.file.path.display()
                    )));
                }
            }
        }
    }
    let id_fields: Vec<Field> = match plan.files.first() {
        Some(file) => {
            let schema = file.file.metadata.schema();
            file.id_roots
                .iter()
                .map(|&root| schema.field(root).clone().with_nullable(true))
                .collect()
        }
        None => Vec::new(),
    };
    let mut shadow_fields = id_fields.clone();
    shadow_fields.extend(
        shadow_columns
            .iter()
            .map(|name| Field::new(name, DataType::Float32, false)),
    );
    let mut quarantine_fields = id_fields;
    quarantine_fields.extend([
        Field::new(QUARANTINE_COLUMNS[0], DataType::Utf8, false),
        Field::new(QUARANTINE_COLUMNS[1], DataType::Int32, false),
        Field::new(QUARANTINE_COLUMNS[2], DataType::Int64, false),
        Field::new(QUARANTINE_COLUMNS[3], DataType::Utf8, false),
    ]);
    let BlockFeatures {
        features: block_features,
        fills,
        unknown_fills,
    } = BlockFeatures::of(model, pass.inspect);
    Ok(PreparedTable {
        plan,
        pass,
        scans,
        layouts,
        score_columns,
        block_features,
        fills,
        unknown_fills,
        unique_ids,
        exact_key_column,
        quarantines,
        flags,
        quarantine_schema: Arc::new(Schema::new(quarantine_fields)),
        shadow_schema: (!shadow_columns.is_empty()).then(|| Arc::new(Schema::new(shadow_fields))),
    })
}

/// What a pass did: counts, the writer's results, and the inspection.
struct Scored {
    rows: u64,
    /// (rows, bytes) per scored file, in the order asked for.
    files: Vec<(u64, u64)>,
    stages: StageSeconds,
    seconds: f64,
    /// The work units of the pass, in order (positions in examples index it).
    units: Vec<WorkUnit>,
    inspection: Option<Inspection>,
    /// The key of every row's unique columns, in table order.
    keys: Vec<u64>,
    /// Rows written to the staged quarantine table.
    quarantined_rows: u64,
    /// Rows written to the staged shadow table.
    shadow_rows: u64,
    judgement: Judgement,
    profile: Option<Arc<TableProfile>>,
}

impl Scored {
    fn inspection_rows(&self, count: impl Fn(&Inspection) -> u64) -> u64 {
        self.inspection.as_ref().map_or(0, count)
    }

    /// Puts what the pass did into the report: rows scored (when the model
    /// ran), quarantined and flagged, the judgement, the stage times.
    fn record(&self, report: &mut RunReport, predicted: bool) {
        report.rows_quarantined = self.inspection_rows(|i| i.rows_quarantined);
        report.rows_flagged = self.inspection_rows(|i| i.rows_flagged);
        if predicted {
            report.rows_scored = self.rows - report.rows_quarantined;
        }
        report.judgement = self.judgement.clone();
        report.stage_seconds = self.stages;
        report.table_profile = self.profile.clone();
    }
}

/// Partitions `--mode resume` keeps, with their records.
pub(crate) type ReusedPartitions = Vec<(PathBuf, PartitionRecord)>;

/// A partition to write: its folder, its resume key, and its files (indices
/// into the plan).
pub(crate) type PartitionToWrite = (PathBuf, String, Vec<usize>);

/// The table's partitions, split into those `--mode resume` keeps and those
/// to write. A partition's key digests lakescore's version, `identity` (the
/// bytes of the model, or of the policy), `options` and every input file's
/// path, size and footer.
pub(crate) fn partitions_to_write(
    plan: &TablePlan,
    transaction: &Transaction,
    identity: &str,
    options: &str,
) -> (ReusedPartitions, Vec<PartitionToWrite>) {
    let files_by_partition = commit::partitions_of(plan.files.iter().map(|f| f.relative_path.as_path()));
    let file_index: BTreeMap<&Path, usize> = plan
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.relative_path.as_path(), i))
        .collect();
    let mut reused = Vec::new();
    let mut to_write = Vec::new();
    for (partition, files) in &files_by_partition {
        let indices: Vec<usize> = files.iter().map(|f| file_index[f.as_path()]).collect();
        let inputs: Vec<(&Path, u64, &str)> = indices
            .iter()
            .map(|&i| {
                let f = &plan.files[i];
                (
                    f.relative_path.as_path(),
                    f.file.size_bytes,
                    f.file.footer_fingerprint.as_str(),
                )
            })
            .collect();
        let key = commit::partition_key(identity, options, &inputs);
        match transaction.reusable_partition(partition, &key) {
            Some(record) => {
                tracing::info!(partition = %partition.display(), "partition already committed; reusing it");
                reused.push((partition.clone(), record));
            }
            None => to_write.push((partition.clone(), key, indices)),
        }
    }
    (reused, to_write)
}

/// The records of the partitions a run staged, from each file's (rows,
/// bytes) as written.
pub(crate) fn staged_records(
    plan: &TablePlan,
    to_write: Vec<PartitionToWrite>,
    written: &BTreeMap<usize, (u64, u64)>,
    run_id: &str,
) -> Vec<PartitionRecord> {
    to_write
        .into_iter()
        .map(|(partition, key, indices)| PartitionRecord {
            partition,
            key,
            run_id: run_id.to_string(),
            files: indices
                .iter()
                .map(|i| OutputFileRecord {
                    path: plan.files[*i].relative_path.clone(),
                    rows: written[i].0,
                    bytes: written[i].1,
                })
                .collect(),
        })
        .collect()
}

/// Scores what resume cannot reuse into staging, and judges it. Returns the
/// pass, the staged partitions' records, and the reused partitions.
fn stage_and_judge(
    pool: &rayon::ThreadPool,
    package: &Package,
    table: &PreparedTable,
    facts: &TableFacts,
    transaction: &mut Transaction,
    options: &RunOptions,
) -> Result<(Scored, Vec<PartitionRecord>, ReusedPartitions)> {
    let plan = &table.plan;
    let output_options = format!(
        "ids={:?};scores={:?};flags={}",
        plan.id_columns, table.score_columns, table.flags
    );
    let (reused, to_score) = partitions_to_write(plan, transaction, &package.model.info().sha256, &output_options);

    let files: Vec<usize> = to_score
        .iter()
        .flat_map(|(_, _, indices)| indices.iter().copied())
        .collect();
    let destination = |relative: &Path| transaction.staged_path(relative);
    let side_paths = SidePaths {
        quarantine: transaction.staged_side_path("quarantine.parquet"),
        shadow: transaction.staged_side_path("shadow.parquet"),
    };
    let scored = score_files(
        pool,
        package,
        table,
        &files,
        Some(&destination),
        Some(&side_paths),
        options,
    )?;
    let mut scored = judge(package, table, facts, scored);
    if let Some(profile) = &scored.profile {
        let path = transaction.staged_side_path("profile.json");
        crate::util::write_atomically(&path, &profile.to_json()).map_err(|source| Error::Output {
            what: "run profile",
            path,
            source,
        })?;
    }
    let written: BTreeMap<usize, (u64, u64)> = files.iter().copied().zip(scored.files.iter().copied()).collect();
    let staged = staged_records(plan, to_score, &written, transaction.run_id());
    scored.files.clear();
    Ok((scored, staged, reused))
}

/// Where a run stages its side tables.
struct SidePaths {
    quarantine: PathBuf,
    shadow: PathBuf,
}

/// Side outputs a published run leaves in `OUT/_lakescore/`.
struct SideOutputs {
    quarantine: Option<PathBuf>,
    profile: Option<PathBuf>,
    shadow: Option<PathBuf>,
}

/// Publishes the staged partitions, then the side outputs. Returns every
/// partition's record (reused ones included) and where the side outputs went.
fn publish(
    scored: &Scored,
    staged: Vec<PartitionRecord>,
    reused: &[(PathBuf, PartitionRecord)],
    table: &PreparedTable,
    transaction: &mut Transaction,
) -> Result<(Vec<PartitionRecord>, SideOutputs)> {
    // Side outputs go first: once a partition is published, a crash and a
    // resume reuse it, so its quarantined rows must already be in OUT (in
    // this run's quarantine table, which its ledger entry names).
    let run_id = transaction.run_id().to_string();
    let quarantine = match scored.quarantined_rows {
        0 => None,
        _ => Some(transaction.publish_side("quarantine.parquet", "quarantine", &format!("{run_id}.parquet"))?),
    };
    let profile = match scored.profile {
        Some(_) => Some(transaction.publish_side("profile.json", "profiles", &format!("{run_id}.json"))?),
        None => None,
    };
    let shadow = match scored.shadow_rows {
        0 => None,
        _ => Some(transaction.publish_side("shadow.parquet", "shadow", &format!("{run_id}.parquet"))?),
    };
    let files_by_partition = commit::partitions_of(table.plan.files.iter().map(|f| f.relative_path.as_path()));
    let all_partitions: Vec<&Path> = files_by_partition.keys().map(PathBuf::as_path).collect();
    transaction.publish(&staged, &all_partitions)?;
    let mut records = staged;
    records.extend(reused.iter().map(|(_, record)| record.clone()));
    records.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok((
        records,
        SideOutputs {
            quarantine,
            profile,
            shadow,
        },
    ))
}

/// The writer's and workers' meeting point.
struct Exchange {
    state: Mutex<ExchangeState>,
    changed: Condvar,
}

struct ExchangeState {
    /// Finished units waiting for the writer, by unit index.
    ready: BTreeMap<usize, EncodedUnit>,
    /// Units the writer has consumed; workers stay within a window of it.
    written: usize,
    /// The first failure, by unit index; everyone stops when it is set.
    failure: Option<(usize, Error)>,
}

struct EncodedUnit {
    /// Rows in the output (quarantined rows left out).
    rows_out: usize,
    encoded: Option<EncodedRowGroup>,
    /// The unique-column key of every row, in order.
    keys: Vec<u64>,
    /// Quarantined rows, as rows of the quarantine table.
    quarantine: Vec<RecordBatch>,
    /// The challengers' scores, as rows of the shadow table.
    shadow: Vec<RecordBatch>,
}

impl Exchange {
    /// Waits for unit `unit_idx` and takes it; `None` once any unit failed.
    fn take_in_order(&self, unit_idx: usize) -> Option<EncodedUnit> {
        let mut state = self.state.lock().unwrap();
        loop {
            if state.failure.is_some() {
                return None;
            }
            if let Some(done) = state.ready.remove(&unit_idx) {
                return Some(done);
            }
            state = self.changed.wait(state).unwrap();
        }
    }

    /// Lets workers run up to a window past `units_written`.
    fn mark_written(&self, units_written: usize) {
        self.state.lock().unwrap().written = units_written;
        self.changed.notify_all();
    }

    fn fail(&self, unit_idx: usize, error: Error) {
        let mut state = self.state.lock().unwrap();
        if state.failure.as_ref().is_none_or(|(first, _)| unit_idx < *first) {
            state.failure = Some((unit_idx, error));
        }
        self.changed.notify_all();
    }
}

type Destination<'a> = &'a (dyn Fn(&Path) -> PathBuf + Sync);

/// Scores the files `file_indices` of the table, writing each to
/// `destination(relative path)` (or nowhere), and quarantined rows to
/// `quarantine` (or nowhere).
fn score_files(
    pool: &rayon::ThreadPool,
    package: &Package,
    table: &PreparedTable,
    file_indices: &[usize],
    destination: Option<Destination<'_>>,
    side_paths: Option<&SidePaths>,
    options: &RunOptions,
) -> Result<Scored> {
    let clock = Instant::now();
    let plan = &table.plan;
    let all_units = plan.work_units();
    let units: Vec<WorkUnit> = file_indices
        .iter()
        .flat_map(|&file_idx| all_units.iter().filter(move |u| u.file_idx == file_idx).copied())
        .collect();
    let total_rows: u64 = units.iter().map(|u| u.n_rows as u64).sum();
    let progress = options.progress.as_deref();
    if let Some(progress) = progress {
        progress.begin(total_rows);
    }

    let window = IN_FLIGHT_PER_THREAD * pool.current_num_threads();
    let exchange = Exchange {
        state: Mutex::new(ExchangeState {
            ready: BTreeMap::new(),
            written: 0,
            failure: None,
        }),
        changed: Condvar::new(),
    };
    let next_unit = AtomicUsize::new(0);
    let worker_stages = Mutex::new(StageSeconds::default());
    let inspected: Mutex<Option<Inspection>> = Mutex::new(None);
    let encode = destination.is_some() && table.pass.encode;

    let mut written = Written::default();
    pool.in_place_scope(|scope| {
        for _ in 0..pool.current_num_threads() {
            scope.spawn(|_| {
                let mut stages = StageSeconds::default();
                let mut inspection = table.pass.inspect.then(|| {
                    package
                        .contract
                        .inspection(package.model.features(), package.contract.score_columns.len())
                });
                let worker = Worker {
                    package,
                    table,
                    units: &units,
                    encode,
                    cancel: &options.cancel,
                };
                worker.run(&next_unit, &exchange, window, &mut stages, inspection.as_mut());
                worker_stages.lock().unwrap().add(&stages);
                if let Some(mine) = inspection {
                    let mut all = inspected.lock().unwrap();
                    match all.as_mut() {
                        Some(all) => all.merge(&mine),
                        None => *all = Some(mine),
                    }
                }
            });
        }
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
            write_in_order(
                table,
                file_indices,
                &units,
                &exchange,
                destination,
                side_paths,
                progress,
            )
        }))
        .unwrap_or_else(|payload| {
            Err(Error::Internal(format!(
                "the output writer panicked: {}",
                panic_message(&*payload)
            )))
        });
        match outcome {
            Ok(done) => written = done,
            Err(error) => exchange.fail(usize::MAX, error),
        }
    });
    if let Some(progress) = progress {
        progress.finish();
    }
    if let Some((_, error)) = exchange.state.into_inner().unwrap().failure {
        return Err(error);
    }
    let mut stages = worker_stages.into_inner().unwrap();
    stages.write = written.seconds;
    Ok(Scored {
        rows: total_rows,
        files: written.files,
        stages,
        seconds: clock.elapsed().as_secs_f64(),
        units,
        inspection: inspected.into_inner().unwrap(),
        keys: written.keys,
        quarantined_rows: written.quarantined_rows,
        shadow_rows: written.shadow_rows,
        judgement: Judgement::default(),
        profile: None,
    })
}

/// One worker thread's view of the pass.
struct Worker<'a> {
    package: &'a Package,
    table: &'a PreparedTable,
    units: &'a [WorkUnit],
    encode: bool,
    cancel: &'a CancelToken,
}

impl Worker<'_> {
    fn run(
        &self,
        next_unit: &AtomicUsize,
        exchange: &Exchange,
        window: usize,
        stages: &mut StageSeconds,
        mut inspection: Option<&mut Inspection>,
    ) {
        loop {
            let unit_idx = next_unit.fetch_add(1, Ordering::Relaxed);
            if unit_idx >= self.units.len() {
                return;
            }
            {
                let mut state = exchange.state.lock().unwrap();
                while state.failure.is_none() && unit_idx >= state.written + window {
                    state = exchange.changed.wait(state).unwrap();
                }
                if state.failure.is_some() {
                    return;
                }
            }
            if let Err(stopped) = self.cancel.check() {
                exchange.fail(unit_idx, stopped.into());
                return;
            }
            let unit = self.units[unit_idx];
            // A panic (a bug here or in a decoder, on a file it did not expect)
            // becomes an error like any other, so that the writer and the other
            // workers stop instead of waiting forever for this unit.
            let scored = panic::catch_unwind(AssertUnwindSafe(|| {
                self.score_unit(unit_idx, stages, inspection.as_deref_mut())
            }))
            .unwrap_or_else(|payload| {
                let path = self.table.plan.files[unit.file_idx].file.path.display();
                Err(Error::Internal(format!(
                    "scoring row group {} of `{path}` panicked: {}",
                    unit.row_group,
                    panic_message(&*payload)
                )))
            });
            match scored {
                Ok(done) => {
                    let mut state = exchange.state.lock().unwrap();
                    state.ready.insert(unit_idx, done);
                    exchange.changed.notify_all();
                }
                Err(error) => {
                    exchange.fail(unit_idx, error);
                    return;
                }
            }
        }
    }

    /// Decode, features, checks, model and encode for one row group, a batch
    /// of [`BATCH_ROWS`] rows at a time.
    fn score_unit(
        &self,
        unit_idx: usize,
        stages: &mut StageSeconds,
        mut inspection: Option<&mut Inspection>,
    ) -> Result<EncodedUnit> {
        let (table, contract) = (self.table, &self.package.contract);
        let steps = table.block_steps(self.package);
        let unit = self.units[unit_idx];
        let file_plan = &table.plan.files[unit.file_idx];
        let file = &file_plan.file;
        let scan = &table.scans[unit.file_idx];
        let row_group = unit.row_group;
        let encode_error = |source| SinkError::Encode {
            path: file.path.clone(),
            row_group,
            source,
        };
        let mut clock = Instant::now();
        let mut lap = |slot: &mut f64| {
            let now = Instant::now();
            *slot += (now - clock).as_secs_f64();
            clock = now;
        };

        test_hooks::in_row_group(row_group);
        file.prefetch_row_group(row_group, &scan.leaves);
        let mut batches = match &scan.arrow_projection {
            Some(projection) => Some(file.read_row_group(row_group, projection, BATCH_ROWS)?),
            None => None,
        };
        // Copied chunks are not decoded, but their pages are read and
        // decompressed, so that a damaged chunk fails the run instead of being
        // copied into the output (no output, no copy: nothing to check).
        if self.encode {
            for &leaf in &scan.copied_leaves {
                file.check_column_chunk(row_group, leaf)?;
            }
        }
        let mut leaves: Vec<LeafReader> = scan
            .leaf_readers
            .iter()
            .map(|&leaf| file.leaf_reader(row_group, leaf))
            .collect::<Result<_, _>>()?;
        let n_values = table.layouts[unit.file_idx].schema.fields().len() - scan.id_sources.len();
        let mut encoder = match self.encode {
            true => {
                let copied = scan.copied_chunks(file, row_group, n_values);
                Some(
                    table.layouts[unit.file_idx]
                        .start_row_group(copied)
                        .map_err(encode_error)?,
                )
            }
            false => None,
        };
        let mut done = EncodedUnit {
            rows_out: 0,
            encoded: None,
            keys: Vec::new(),
            quarantine: Vec::new(),
            shadow: Vec::new(),
        };
        let mut marks = RowMarks::default();
        let mut rows_done = 0;
        while rows_done < unit.n_rows {
            let n_rows = BATCH_ROWS.min(unit.n_rows - rows_done);
            let batch = match batches.as_mut() {
                Some(batches) => Some(batches.read(n_rows)?),
                None => None,
            };
            for leaf in &mut leaves {
                leaf.read(n_rows)?;
            }
            lap(&mut stages.decode);

            let columns: Vec<&dyn Array> = batch.iter().flat_map(|b| b.columns()).map(|c| c.as_ref()).collect();
            let unknown_category = table.pass.inspect.then_some(features::UNKNOWN_CATEGORY);
            let mut block = features::build_block(
                &scan.sources,
                &columns,
                &leaves,
                &table.block_features,
                n_rows,
                unknown_category,
            )
            .map_err(|unknown| unknown.at(&file.path, row_group))?;
            lap(&mut stages.features);
            let ids: Vec<ArrayRef> = scan
                .id_sources
                .iter()
                .filter_map(|source| match *source {
                    IdSource::Arrow { position } => Some(Arc::clone(
                        batch.as_ref().expect("Arrow ids come with a batch").column(position),
                    )),
                    IdSource::Copy { .. } => None,
                })
                .collect();
            if let Some(inspection) = inspection.as_deref_mut() {
                steps.inspect_features(&mut block, inspection, unit_idx, rows_done, &mut marks);
                if let Some(unique) = &table.unique_ids {
                    match scan.key_reader {
                        Some(reader) => leaf_keys(&leaves[reader], &mut done.keys),
                        None => {
                            // Without a key reader every id column is an Arrow
                            // column (`FileScan::new` copies none), so `ids`
                            // holds them all, in id-column order.
                            let key_columns: Vec<&ArrayRef> = unique.iter().map(|&i| &ids[i]).collect();
                            let keys = row_keys(&key_columns, n_rows).map_err(|problem| {
                                Error::Usage(format!(
                                    "the unique columns of row group {row_group} of `{}` cannot be compared: {problem}",
                                    file.path.display()
                                ))
                            })?;
                            done.keys.extend(keys);
                        }
                    }
                }
                lap(&mut stages.checks);
            }
            if !table.pass.predict {
                rows_done += n_rows;
                continue;
            }
            let (block, keep) = steps.set_aside_quarantined(block, &marks);
            if let Some(keep) = &keep
                && table.quarantines
            {
                done.quarantine.push(quarantine_rows(
                    table, file_plan, row_group, rows_done, &ids, &marks, contract, keep,
                )?);
            }
            let rows_out = block.n_rows;
            // A model's error names the row group it was scoring.
            let located = |error| match error {
                Error::Model(source) => Error::InRowGroup {
                    path: file.path.clone(),
                    row_group,
                    source,
                },
                other => other,
            };
            let scores = steps.score(block, None).map_err(located)?;
            lap(&mut stages.model);
            if let Some(inspection) = inspection.as_deref_mut() {
                inspection.inspect_scores(contract, &scores);
                lap(&mut stages.checks);
            }

            if let Some(encoder) = encoder.as_mut() {
                let output = steps
                    .output(&ids, keep.as_ref(), scores, &marks, n_rows)
                    .map_err(|e| encode_error(e.into()))?;
                if let (Some(schema), Some(columns)) = (&table.shadow_schema, output.shadow) {
                    let batch =
                        RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| encode_error(e.into()))?;
                    done.shadow.push(batch);
                }
                encoder.write(&output.columns).map_err(encode_error)?;
                lap(&mut stages.encode);
            }
            done.rows_out += rows_out;
            rows_done += n_rows;
        }
        if let Some(batches) = batches {
            batches.finish()?;
        }
        file.release_row_group(row_group, &scan.released_by_workers);
        if let Some(encoder) = encoder {
            done.encoded = Some(encoder.finish().map_err(encode_error)?);
            lap(&mut stages.encode);
        }
        Ok(done)
    }
}

/// What the writer did.
#[derive(Default)]
struct Written {
    /// (rows, bytes) per file, in the order asked for.
    files: Vec<(u64, u64)>,
    seconds: f64,
    /// Every row's unique-column key, in table order.
    keys: Vec<u64>,
    quarantined_rows: u64,
    shadow_rows: u64,
}

/// The writer: takes units in order and appends them to their files, and
/// quarantined rows to the quarantine table.
fn write_in_order(
    table: &PreparedTable,
    file_indices: &[usize],
    units: &[WorkUnit],
    exchange: &Exchange,
    destination: Option<Destination<'_>>,
    side_paths: Option<&SidePaths>,
    progress: Option<&dyn crate::progress::Progress>,
) -> Result<Written> {
    let quarantine_path = side_paths.map(|p| p.quarantine.as_path());
    let shadow_path = side_paths.map(|p| p.shadow.as_path());
    let mut writing = Stopwatch::default();
    let mut written = Written::default();
    if table.unique_ids.is_some() {
        written.keys.reserve_exact(units.iter().map(|u| u.n_rows).sum());
    }
    let mut quarantine: Option<ArrowWriter<std::fs::File>> = None;
    let mut shadow: Option<ArrowWriter<std::fs::File>> = None;
    let mut unit_idx = 0;
    for &file_idx in file_indices {
        let file = &table.plan.files[file_idx];
        let mut staged = match destination {
            Some(destination) if table.pass.encode => {
                Some(writing.time(|| StagedFile::create(&destination(&file.relative_path), &table.layouts[file_idx]))?)
            }
            _ => None,
        };
        let mut rows = 0;
        while unit_idx < units.len() && units[unit_idx].file_idx == file_idx {
            let Some(done) = exchange.take_in_order(unit_idx) else {
                // A worker failed; its error is the one to report.
                written.seconds = writing.seconds;
                return Ok(written);
            };
            rows += done.rows_out as u64;
            written.keys.extend_from_slice(&done.keys);
            if let (Some(staged), Some(encoded)) = (staged.as_mut(), done.encoded) {
                writing.time(|| staged.append(encoded))?;
                // Copying id chunks touched their input pages; let them go.
                file.file
                    .release_row_group(units[unit_idx].row_group, &table.scans[file_idx].copied_leaves);
            }
            if let Some(path) = quarantine_path {
                for batch in done.quarantine {
                    written.quarantined_rows += batch.num_rows() as u64;
                    writing.time(|| append_side_table(&mut quarantine, path, &table.quarantine_schema, &batch))?;
                }
            }
            if let (Some(path), Some(schema)) = (shadow_path, &table.shadow_schema) {
                for batch in done.shadow {
                    written.shadow_rows += batch.num_rows() as u64;
                    writing.time(|| append_side_table(&mut shadow, path, schema, &batch))?;
                }
            }
            if let Some(progress) = progress {
                progress.advance(units[unit_idx].n_rows as u64);
            }
            unit_idx += 1;
            exchange.mark_written(unit_idx);
        }
        let bytes = match staged {
            Some(staged) => writing.time(|| staged.finish())?.1,
            None => 0,
        };
        written.files.push((rows, bytes));
    }
    if let (Some(writer), Some(path)) = (quarantine, quarantine_path) {
        writing.time(|| finish_side_table(writer, path))?;
    }
    if let (Some(writer), Some(path)) = (shadow, shadow_path) {
        writing.time(|| finish_side_table(writer, path))?;
    }
    written.seconds = writing.seconds;
    Ok(written)
}

/// Adds up the time spent in the closures it runs.
#[derive(Default)]
struct Stopwatch {
    seconds: f64,
}

impl Stopwatch {
    fn time<T>(&mut self, work: impl FnOnce() -> T) -> T {
        let clock = Instant::now();
        let result = work();
        self.seconds += clock.elapsed().as_secs_f64();
        result
    }
}

fn input_records(plan: &TablePlan) -> Vec<InputRecord> {
    plan.files
        .iter()
        .map(|f| InputRecord {
            path: f.relative_path.clone(),
            bytes: f.file.size_bytes,
            rows: f.file.metadata.metadata().file_metadata().num_rows() as u64,
            row_groups: f.file.num_row_groups(),
            footer_sha256: f.file.footer_fingerprint.clone(),
            partition: f.partition_values.clone(),
        })
        .collect()
}

pub(crate) fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    // The pool is the run's own: its threads log inside the run's span (its
    // id and model), which the calling thread has entered, for their whole
    // life, whatever task they run.
    let span = tracing::Span::current();
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lakescore-worker-{i}"))
        .start_handler(move |_| RUN_SPAN.with(|entered| *entered.borrow_mut() = Some(span.clone().entered())))
        .exit_handler(|_| RUN_SPAN.with(|entered| drop(entered.borrow_mut().take())))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} worker threads: {e}")))
}

thread_local! {
    /// A worker thread's entered run span, left when the pool ends.
    static RUN_SPAN: std::cell::RefCell<Option<tracing::span::EnteredSpan>> = const { std::cell::RefCell::new(None) };
}

/// The start of a command: its clock and its worker pool (its id and start
/// time are `RunOptions::identity`).
struct Start {
    clock: Instant,
    pool: rayon::ThreadPool,
}

impl Start {
    fn new(options: &RunOptions) -> Result<Start> {
        Ok(Start {
            clock: Instant::now(),
            pool: build_pool(options.thread_count())?,
        })
    }
}

/// What `score`, `bench` and `check` do first: plan and check the table, gather
/// the contract's facts, and open the run's report.
fn prepare_run(
    start: &Start,
    command: &'static str,
    package: &Package,
    input: &Path,
    options: &RunOptions,
    pass: PassKind,
) -> Result<(PreparedTable, TableFacts, RunReport)> {
    let pool = &start.pool;
    let table = pool.install(|| prepare(package, input, options, pass))?;
    let facts = table_facts(pool, &table, &package.contract, options)?;
    let threads = pool.current_num_threads();
    let info = package.model.info();
    let mut report = RunReport::new(command, &options.identity, info, input, &options.device, threads);
    report.models = package.model.members().into_iter().cloned().collect();
    describe_table(&mut report, &table.plan);
    Ok((table, facts, report))
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}
