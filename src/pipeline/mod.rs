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
use crate::commit::{
    self, Committer, LedgerRecord, OutputFileRecord, OutputTable, PartitionRecord, RunStatus, WriteMode,
};
use crate::contract::{self, Contract, Inspection, NULL_KEY, RowMarks, TableFacts};
use crate::drift::Status;
use crate::error::{Error, Result, error_chain};
use crate::features::{self, FeatureSource};
use crate::model::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores};
use crate::observe::RunIdentity;
use crate::package::{ColumnKind, Package};
use crate::plan::{self, ColumnRequest, FilePlan, IdColumns, TablePlan, WorkUnit};
use crate::profile::TableProfile;
use crate::report::rows_per_second;
use crate::report::{InputRecord, Judgement, Manifest, RunReport, StageSeconds, WallSeconds};
use crate::scan::{LeafReader, ParquetFile, ScanError, leaves_by_root};
use crate::sink::{self, CopiedChunk, EncodedRowGroup, OutputLayout, SinkError, StagedFile};
use crate::sla::{Sla, SlaReport};
use crate::source::TableSource;
use crate::test_hooks;
use crate::util::{rfc3339_utc, sha256_hex};

mod block;
mod judging;
mod pass;
mod publish;
mod row_policies;

pub(crate) use block::BlockSteps;
pub(crate) use judging::{is_kind, judgement_of, newest_fact, newest_of_column};
use pass::score_files;
pub(crate) use publish::{partitions_to_write, staged_records};
use publish::{publish, stage_and_judge};
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
    /// How long `score` waits for another run's lock on its output before
    /// failing with [`crate::Error::Locked`] (zero: not at all).
    pub lock_wait: std::time::Duration,
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
            lock_wait: std::time::Duration::ZERO,
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
        self.as_of.unwrap_or_else(crate::util::now_seconds)
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
    input: &dyn TableSource,
    output_table: &dyn OutputTable,
    mode: WriteMode,
    options: &RunOptions,
    began: &dyn Fn(),
) -> Result<RunReport> {
    let start = Start::new(options)?;
    let identity = &options.identity;
    let input_table = input;
    let input = input_table.location();
    let mut ledger = LedgerRecord::starting(&identity.run_id, &identity.uuid, identity.started_at, mode, input);
    // A second run into an output lakescore has written before is refused
    // here, before planning (which reads every footer). A new output has no
    // lock folder yet: creating one would touch OUT before the input is
    // known to be good, so its lock is taken when the transaction begins.
    let output = output_table.location();
    let holder = ledger.holder();
    let mut early_lock = waiting_for_lock(options, || output_table.lock_if_known(&holder))?;
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
    let (table, facts, mut report) = prepare_run(&start, "score", package, input_table, options, pass)?;
    let input_files: Vec<&Path> = table.plan.files.iter().map(|f| f.listed.location.as_path()).collect();
    output_table.check_separate(input, &input_files)?;
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
    ledger.model_registry = info.registry.clone();
    let mut transaction = waiting_for_lock(options, || output_table.begin(mode, ledger.clone(), early_lock.take()))?;
    began();
    tracing::info!(input = %input.display(), output = %output.display(), "scoring");

    let outcome = stage_and_judge(pool, package, &table, &facts, transaction.as_mut(), options)
        // The last moment a stop request is heard: publishing takes renames
        // only, and a run that has begun to publish finishes.
        .and_then(|done| options.cancel.check().map(|()| done).map_err(Error::from))
        // Scores of bytes an input no longer holds are never published.
        .and_then(|done| {
            pool.install(|| crate::plan::check_unchanged(&table.plan))
                .map(|()| done)
                .map_err(Error::from)
        });
    let (scored, staged, reused) = match outcome {
        Ok(done) => done,
        Err(error) => return Err(abort(transaction, error)),
    };
    scored.record(&mut report, true);
    if report.judgement.rejects() {
        transaction.record_summary(report.summary(&options.sla, clock.elapsed().as_secs_f64()));
        close_unpublished(transaction, RunStatus::Rejected, &report.judgement.rejection_summary());
        return Ok(report.finish_rejected(clock));
    }

    let published = publish(&scored, staged, &reused, &table, transaction.as_mut());
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
    transaction.record_summary(report.summary(&options.sla, wall_seconds.total));
    report.output_snapshot = transaction.finish(
        Some(&serde_json::to_vec_pretty(&manifest).expect("manifests serialize")),
        outcome,
    )?;
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

/// Runs `take`, a step that takes the output's lock, again while another
/// run holds it, until `options.lock_wait` has passed (then the step's
/// error stands); a stop request ends the wait.
fn waiting_for_lock<T>(
    options: &RunOptions,
    mut take: impl FnMut() -> std::result::Result<T, commit::CommitError>,
) -> Result<T> {
    use crate::lock::LockError;
    let deadline = std::time::Instant::now() + options.lock_wait;
    let mut told = false;
    loop {
        match take() {
            Err(commit::CommitError::Locked(LockError::Held { out, holder }))
                if std::time::Instant::now() < deadline =>
            {
                if !told {
                    let holder = holder.map(|h| h.to_string()).unwrap_or_else(|| "another run".into());
                    tracing::info!(output = %out.display(), "{holder} holds the output's lock; waiting for it");
                    told = true;
                }
                options.cancel.check()?;
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            other => return other.map_err(Error::from),
        }
    }
}

/// Ends a failed run's transaction, recording why, and hands the error back.
fn abort(transaction: Box<dyn Committer>, error: Error) -> Error {
    close_unpublished(transaction, error.run_status(), &error_chain(&error));
    error
}

/// Ends a run that publishes nothing: its staged files go, its ledger entry
/// says why.
fn close_unpublished(transaction: Box<dyn Committer>, status: RunStatus, why: &str) {
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
            file.listed.relative_path.display(),
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
pub fn bench(
    package: &Package,
    input: &dyn TableSource,
    write: bool,
    checks: bool,
    options: &RunOptions,
) -> Result<RunReport> {
    unpublished_pass("bench", package, input, write, checks, options)
}

/// One pass that decodes and scores, without checks and without writing: for
/// commands whose model set watches its own scores (`evaluate`).
pub fn score_only(
    package: &Package,
    input: &dyn TableSource,
    command: &'static str,
    options: &RunOptions,
) -> Result<RunReport> {
    unpublished_pass(command, package, input, false, false, options)
}

/// A scoring pass that publishes nothing: with `write`, into a scratch
/// folder removed afterwards; with `checks`, the contract and profiles run
/// (reported, never acted on).
fn unpublished_pass(
    command: &'static str,
    package: &Package,
    input: &dyn TableSource,
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
pub fn check(package: &Package, input: &dyn TableSource, options: &RunOptions) -> Result<RunReport> {
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
pub fn profile(package: &Package, input: &dyn TableSource, scores: bool, options: &RunOptions) -> Result<TableProfile> {
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
        &input.location().display().to_string(),
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
    pub fn of(input: &dyn TableSource) -> Result<TableColumns> {
        let files = input.list().map_err(plan::PlanError::from)?;
        let Some(first) = files.first() else {
            return Err(Error::Usage(format!(
                "`{}` holds no Parquet files",
                input.location().display()
            )));
        };
        let file = ParquetFile::read_listed(first, input.open(first).map_err(ScanError::from)?)?;
        let features = file
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
                path: input.location().to_path_buf(),
                sha256: String::new(),
                registry: None,
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
        let schema = file.file.schema();
        let by_root = leaves_by_root(descriptor);
        let leaves_of = |root: usize| by_root[root].clone();
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

fn prepare(package: &Package, input: &dyn TableSource, options: &RunOptions, pass: PassKind) -> Result<PreparedTable> {
    let model = package.model.as_ref();
    let contract = &package.contract;
    let request = ColumnRequest {
        features: contract.columns.clone(),
        id_columns: options.id_columns.clone(),
    };
    let plan = plan::plan_table(input, &request, &options.cancel)?;
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
            let field = file.file.schema().field(file.id_roots[positions[0]]).clone();
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
        let schema = file.file.schema();
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
        // A file with deleted rows has fewer output rows than its chunks hold:
        // its ids are decoded and filtered, not copied.
        let copy_these = copy_ids && file.listed.deleted_rows.is_none();
        scans.push(FileScan::new(file, &layout, copy_these, unique_roots.as_deref()));
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
                let found = file.file.schema().field(file.id_roots[i]).data_type().clone();
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
            let schema = file.file.schema();
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

/// Where a run stages its side tables.
struct SidePaths {
    quarantine: PathBuf,
    shadow: PathBuf,
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

fn input_records(plan: &TablePlan) -> Vec<InputRecord> {
    plan.files
        .iter()
        .map(|f| InputRecord {
            path: f.listed.relative_path.clone(),
            bytes: f.file.size_bytes,
            rows: f.live_rows(),
            row_groups: f.file.num_row_groups(),
            footer_sha256: f.file.footer_fingerprint.clone(),
            partition: f.listed.partition_values.clone(),
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
    input: &dyn TableSource,
    options: &RunOptions,
    pass: PassKind,
) -> Result<(PreparedTable, TableFacts, RunReport)> {
    let pool = &start.pool;
    let table = pool.install(|| prepare(package, input, options, pass))?;
    let facts = table_facts(pool, &table, &package.contract, options)?;
    let threads = pool.current_num_threads();
    let info = package.model.info();
    let mut report = RunReport::new(
        command,
        &options.identity,
        info,
        input.location(),
        &options.device,
        threads,
    );
    report.models = package.model.members().into_iter().cloned().collect();
    report.cpu_kernels = package.model.cpu_kernels();
    if let Some(kernels) = &report.cpu_kernels {
        tracing::info!(cpu_kernels = %kernels, "tree kernels chosen");
    }
    describe_table(&mut report, &table.plan);
    report.input_io = input.io_counters();
    report.input_snapshot = input.snapshot();
    Ok((table, facts, report))
}
