//! Pipeline: the one place that knows both the lake and the models. It plans
//! the table, scores row groups in parallel on one rayon pool, writes the
//! output in input order, and commits it.
//!
//! Work distribution: each worker of the pool takes the next row group in
//! output order (an atomic counter), and goes through it [`BATCH_ROWS`] rows at
//! a time: decode, features, model, encode. The calling thread is the single
//! writer: it
//! appends encoded row groups to their files strictly in order. Workers never
//! run more than [`IN_FLIGHT_PER_THREAD`] x threads row groups ahead of the
//! writer, which bounds memory whatever the table size.

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use arrow::array::{Array, ArrayRef, Float32Array};
use parquet::arrow::ProjectionMask;

use crate::commit::{self, OutputFileRecord, PartitionRecord, Transaction, WriteMode};
use crate::error::{Error, Result};
use crate::features::{self, FeatureSource};
use crate::model::{FeatureBlock, Model};
use crate::plan::{self, ColumnRequest, FilePlan, IdColumns, TablePlan, WorkUnit};
use crate::progress::Progress;
use crate::report::{InputRecord, Manifest, RunReport, StageSeconds, WallSeconds};
use crate::scan::{LeafReader, ParquetFile, leaves_of_root};
use crate::sink::{self, CopiedChunk, EncodedRowGroup, OutputLayout, SinkError, StagedFile};
use crate::test_hooks;
use crate::util::{compact_utc, peak_rss_bytes, rfc3339_utc, sha256_hex};

/// Rows decoded, turned into features and scored at a time within a row group.
/// The feature block (2048 rows x 34 features x 8 bytes = 557 KB) then stays in
/// the core's L2 cache from the feature pass to the model pass: the feature
/// stage runs at twice the speed it has with 8192-row blocks (`cargo bench
/// --bench scan`), and the buffers are reused batch after batch.
pub const BATCH_ROWS: usize = 2048;

/// How many row groups each worker may be ahead of the writer.
pub const IN_FLIGHT_PER_THREAD: usize = 2;

/// Settings shared by `score` and `bench`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads; 0 means one per core.
    pub threads: usize,
    pub id_columns: IdColumns,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
    /// The device the model was loaded on, for reports.
    pub device: String,
}

impl RunOptions {
    fn thread_count(&self) -> usize {
        if self.threads > 0 {
            self.threads
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

/// `lakescore score`: scores `input` into `output` and commits it.
pub fn score(
    model: &dyn Model,
    input: &Path,
    output: &Path,
    mode: WriteMode,
    options: &RunOptions,
) -> Result<RunReport> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    let run_id = new_run_id(started_at);
    let threads = options.thread_count();
    let pool = build_pool(threads)?;

    // Everything that can be checked before touching OUT is checked here, so
    // that bad input or a bad model leaves OUT exactly as it was.
    let table = pool.install(|| prepare(model, input, &options.id_columns))?;
    commit::check_separate(input, output)?;
    let plan_seconds = clock.elapsed().as_secs_f64();
    let info = model.info();
    let mut transaction = Transaction::begin(output, mode, &run_id, started_at, input, &info.name, &info.sha256)?;
    tracing::info!(run_id = %run_id, model = %info.name, input = %input.display(), output = %output.display(), "scoring");

    let outcome = score_and_publish(&pool, model, &table, &mut transaction, options);
    let (scored, partitions, reused) = match outcome {
        Ok(done) => done,
        Err(error) => {
            if let Err(abort_error) = transaction.abort(&error_chain(&error)) {
                tracing::warn!(error = %abort_error, "could not clean up after the failed run");
            }
            return Err(error);
        }
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
        reused_partitions: reused.clone(),
        rows,
        wall_seconds,
    };
    transaction.finish(&manifest, rows)?;
    let total = clock.elapsed().as_secs_f64();
    Ok(RunReport {
        run_id,
        status: "succeeded",
        model: info.clone(),
        input: input.to_path_buf(),
        output: Some(output.to_path_buf()),
        device: options.device.clone(),
        threads,
        files: table.plan.files.len(),
        row_groups: table.plan.total_row_groups(),
        rows,
        rows_scored: scored.rows,
        reused_partitions: reused.len(),
        bytes_read: table.plan.files.iter().map(|f| f.file.size_bytes).sum(),
        bytes_written: outputs.iter().map(|f| f.bytes).sum(),
        // Rows this run scored: on resume, reused partitions took no time.
        rows_per_second: scored.rows as f64 / total.max(1e-9),
        wall_seconds: WallSeconds { total, ..wall_seconds },
        stage_seconds: scored.stages,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// `lakescore bench`: the whole pipeline, timed per stage. With `write`, the
/// output goes to a scratch folder that is removed afterwards; without, the
/// scores are computed and dropped (no encode, no write).
pub fn bench(model: &dyn Model, input: &Path, write: bool, options: &RunOptions) -> Result<RunReport> {
    let started_at = SystemTime::now();
    let clock = Instant::now();
    let run_id = new_run_id(started_at);
    let threads = options.thread_count();
    let pool = build_pool(threads)?;
    let table = pool.install(|| prepare(model, input, &options.id_columns))?;
    let plan_seconds = clock.elapsed().as_secs_f64();

    let scratch = std::env::temp_dir().join(format!("lakescore-bench-{run_id}"));
    let destination = |relative: &Path| scratch.join(relative);
    let all_files: Vec<usize> = (0..table.plan.files.len()).collect();
    let scored = score_files(
        &pool,
        model,
        &table,
        &all_files,
        write.then_some(&destination),
        options.progress,
    );
    let _ = std::fs::remove_dir_all(&scratch);
    let scored = scored?;
    let total = clock.elapsed().as_secs_f64();
    Ok(RunReport {
        run_id,
        status: "succeeded",
        model: model.info().clone(),
        input: input.to_path_buf(),
        output: None,
        device: options.device.clone(),
        threads,
        files: table.plan.files.len(),
        row_groups: table.plan.total_row_groups(),
        rows: scored.rows,
        rows_scored: scored.rows,
        reused_partitions: 0,
        bytes_read: table.plan.files.iter().map(|f| f.file.size_bytes).sum(),
        bytes_written: scored.files.iter().map(|(_, bytes)| bytes).sum(),
        rows_per_second: scored.rows as f64 / total.max(1e-9),
        wall_seconds: WallSeconds {
            plan: plan_seconds,
            score: scored.seconds,
            commit: 0.0,
            total,
        },
        stage_seconds: scored.stages,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// A planned table with everything checked that can be checked from footers.
struct PreparedTable {
    plan: TablePlan,
    /// How to read each input file.
    scans: Vec<FileScan>,
    /// One output layout per input file.
    layouts: Vec<OutputLayout>,
    score_columns: Vec<String>,
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
    fn new(file: &FilePlan, layout: &OutputLayout) -> Self {
        let descriptor = file.file.metadata.parquet_schema();
        let schema = file.file.metadata.schema();
        let leaves_of = |root: usize| leaves_of_root(descriptor, root);
        let row_groups = file.file.metadata.metadata().row_groups();
        let copyable = |id_idx: usize, root: usize| match leaves_of(root)[..] {
            [leaf]
                if layout.can_copy_into(id_idx, &descriptor.column(leaf))
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

fn prepare(model: &dyn Model, input: &Path, id_columns: &IdColumns) -> Result<PreparedTable> {
    let request = ColumnRequest {
        features: model.features().iter().map(|f| f.name.clone()).collect(),
        id_columns: id_columns.clone(),
    };
    let plan = plan::plan_table(input, &request)?;
    let score_columns = sink::score_column_names(model.n_outputs());
    if let Some(clash) = plan.id_columns.iter().find(|c| score_columns.contains(c)) {
        return Err(Error::Usage(format!(
            "id column `{clash}` has the name of a score column; rename it or leave it out of `--id-column`"
        )));
    }
    let mut layouts = Vec::with_capacity(plan.files.len());
    let mut scans = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let schema = file.file.metadata.schema();
        for (feature, &root) in model.features().iter().zip(&file.feature_roots) {
            features::check_feature_column(&file.file.path, feature, schema.field(root).data_type())?;
        }
        let id_fields: Vec<_> = file
            .id_roots
            .iter()
            .map(|&root| Arc::new(schema.field(root).clone()))
            .collect();
        let layout = OutputLayout::new(&file.file.path, id_fields, &score_columns)?;
        scans.push(FileScan::new(file, &layout));
        layouts.push(layout);
    }
    Ok(PreparedTable {
        plan,
        scans,
        layouts,
        score_columns,
    })
}

/// Scores what resume cannot reuse, then publishes it. Returns what was
/// scored, every partition's record, and the reused partitions.
fn score_and_publish(
    pool: &rayon::ThreadPool,
    model: &dyn Model,
    table: &PreparedTable,
    transaction: &mut Transaction,
    options: &RunOptions,
) -> Result<(Scored, Vec<PartitionRecord>, Vec<PathBuf>)> {
    let plan = &table.plan;
    let output_options = format!("ids={:?};scores={:?}", plan.id_columns, table.score_columns);
    let files_by_partition = commit::partitions_of(plan.files.iter().map(|f| f.relative_path.as_path()));
    let file_index: BTreeMap<&Path, usize> = plan
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.relative_path.as_path(), i))
        .collect();

    let mut reused = Vec::new();
    let mut reused_records = Vec::new();
    let mut to_score = Vec::new(); // (partition, key, file indices)
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
        let key = commit::partition_key(&model.info().sha256, &output_options, &inputs);
        match transaction.reusable_partition(partition, &key) {
            Some(record) => {
                tracing::info!(partition = %partition.display(), "partition already committed; reusing it");
                reused.push(partition.clone());
                reused_records.push(record);
            }
            None => to_score.push((partition.clone(), key, indices)),
        }
    }

    let files: Vec<usize> = to_score
        .iter()
        .flat_map(|(_, _, indices)| indices.iter().copied())
        .collect();
    let destination = |relative: &Path| transaction.staged_path(relative);
    let scored = score_files(pool, model, table, &files, Some(&destination), options.progress)?;
    let written: BTreeMap<usize, (u64, u64)> = files.iter().copied().zip(scored.files.iter().copied()).collect();

    let run_id = transaction.run_id().to_string();
    let staged: Vec<PartitionRecord> = to_score
        .into_iter()
        .map(|(partition, key, indices)| PartitionRecord {
            partition,
            key,
            run_id: run_id.clone(),
            files: indices
                .iter()
                .map(|i| OutputFileRecord {
                    path: plan.files[*i].relative_path.clone(),
                    rows: written[i].0,
                    bytes: written[i].1,
                })
                .collect(),
        })
        .collect();
    let all_partitions: Vec<&Path> = files_by_partition.keys().map(PathBuf::as_path).collect();
    transaction.publish(&staged, &all_partitions)?;
    let mut records = staged;
    records.extend(reused_records);
    records.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok((scored, records, reused))
}

/// What [`score_files`] did.
struct Scored {
    rows: u64,
    /// (rows, bytes) per scored file, in the order asked for.
    files: Vec<(u64, u64)>,
    stages: StageSeconds,
    seconds: f64,
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
    n_rows: usize,
    encoded: Option<EncodedRowGroup>,
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
/// `destination(relative path)` (or nowhere).
fn score_files(
    pool: &rayon::ThreadPool,
    model: &dyn Model,
    table: &PreparedTable,
    file_indices: &[usize],
    destination: Option<Destination<'_>>,
    show_progress: bool,
) -> Result<Scored> {
    let clock = Instant::now();
    let plan = &table.plan;
    let all_units = plan.work_units();
    let units: Vec<WorkUnit> = file_indices
        .iter()
        .flat_map(|&file_idx| all_units.iter().filter(move |u| u.file_idx == file_idx).copied())
        .collect();
    let total_rows: u64 = units.iter().map(|u| u.n_rows as u64).sum();
    let progress = Progress::new(total_rows, show_progress);
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
    let encode = destination.is_some();

    let mut written_files = Vec::with_capacity(file_indices.len());
    let mut write_seconds = 0.0;
    pool.in_place_scope(|scope| {
        for _ in 0..pool.current_num_threads() {
            scope.spawn(|_| {
                let mut stages = StageSeconds::default();
                worker_loop(model, table, &units, &next_unit, &exchange, window, encode, &mut stages);
                worker_stages.lock().unwrap().add(&stages);
            });
        }
        let written = panic::catch_unwind(AssertUnwindSafe(|| {
            write_in_order(table, file_indices, &units, &exchange, destination, &progress)
        }))
        .unwrap_or_else(|payload| {
            Err(Error::Internal(format!(
                "the output writer panicked: {}",
                panic_message(&*payload)
            )))
        });
        match written {
            Ok((files, seconds)) => {
                written_files = files;
                write_seconds = seconds;
            }
            Err(error) => exchange.fail(usize::MAX, error),
        }
    });
    progress.finish();
    if let Some((_, error)) = exchange.state.into_inner().unwrap().failure {
        return Err(error);
    }
    let mut stages = worker_stages.into_inner().unwrap();
    stages.write = write_seconds;
    Ok(Scored {
        rows: total_rows,
        files: written_files,
        stages,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn worker_loop(
    model: &dyn Model,
    table: &PreparedTable,
    units: &[WorkUnit],
    next_unit: &AtomicUsize,
    exchange: &Exchange,
    window: usize,
    encode: bool,
    stages: &mut StageSeconds,
) {
    loop {
        let unit_idx = next_unit.fetch_add(1, Ordering::Relaxed);
        if unit_idx >= units.len() {
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
        let unit = units[unit_idx];
        // A panic (a bug here or in a decoder, on a file it did not expect)
        // becomes an error like any other, so that the writer and the other
        // workers stop instead of waiting forever for this unit.
        let scored = panic::catch_unwind(AssertUnwindSafe(|| score_unit(model, table, unit, encode, stages)))
            .unwrap_or_else(|payload| {
                let path = table.plan.files[unit.file_idx].file.path.display();
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

/// Decode, features, model and encode for one row group, a batch of
/// [`BATCH_ROWS`] rows at a time.
fn score_unit(
    model: &dyn Model,
    table: &PreparedTable,
    unit: WorkUnit,
    encode: bool,
    stages: &mut StageSeconds,
) -> Result<EncodedUnit> {
    let file = &table.plan.files[unit.file_idx].file;
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
    if encode {
        for &leaf in &scan.copied_leaves {
            file.check_column_chunk(row_group, leaf)?;
        }
    }
    let mut leaves: Vec<LeafReader> = scan
        .leaf_readers
        .iter()
        .map(|&leaf| file.leaf_reader(row_group, leaf))
        .collect::<Result<_, _>>()?;
    let mut encoder = match encode {
        true => {
            let copied = scan.copied_chunks(file, row_group, model.n_outputs());
            Some(
                table.layouts[unit.file_idx]
                    .start_row_group(copied)
                    .map_err(encode_error)?,
            )
        }
        false => None,
    };
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
        let block = features::build_block(&scan.sources, &columns, &leaves, model.features(), n_rows)
            .map_err(|unknown| unknown.at(&file.path, row_group))?;
        lap(&mut stages.features);
        let scores = predict_checked(model, block)?;
        lap(&mut stages.model);

        if let Some(encoder) = encoder.as_mut() {
            let mut output: Vec<ArrayRef> = Vec::with_capacity(scan.id_sources.len() + scores.len());
            for source in &scan.id_sources {
                if let IdSource::Arrow { position } = *source {
                    let batch = batch.as_ref().expect("Arrow id columns come with an Arrow batch");
                    output.push(Arc::clone(batch.column(position)));
                }
            }
            output.extend(scores.into_iter().map(|s| Arc::new(Float32Array::from(s)) as ArrayRef));
            encoder.write(&output).map_err(encode_error)?;
            lap(&mut stages.encode);
        }
        rows_done += n_rows;
    }
    if let Some(batches) = batches {
        batches.finish()?;
    }
    file.release_row_group(row_group, &scan.released_by_workers);
    let Some(encoder) = encoder else {
        return Ok(EncodedUnit {
            n_rows: rows_done,
            encoded: None,
        });
    };
    let encoded = encoder.finish().map_err(encode_error)?;
    lap(&mut stages.encode);
    Ok(EncodedUnit {
        n_rows: rows_done,
        encoded: Some(encoded),
    })
}

/// The model's scores for a block, checked to be one column per output of one
/// score per row.
fn predict_checked(model: &dyn Model, block: FeatureBlock) -> Result<Vec<Vec<f32>>> {
    let n_rows = block.n_rows;
    let scores = model.predict(block)?;
    if scores.n_rows != n_rows
        || scores.outputs.len() != model.n_outputs()
        || scores.outputs.iter().any(|o| o.len() != n_rows)
    {
        return Err(Error::Internal(format!(
            "model `{}` returned {} outputs of {:?} rows for {n_rows} rows",
            model.info().name,
            scores.outputs.len(),
            scores.outputs.iter().map(Vec::len).collect::<Vec<_>>()
        )));
    }
    Ok(scores.outputs)
}

/// The writer: takes units in order and appends them to their files. Returns
/// (rows, bytes) per file and the seconds spent writing.
fn write_in_order(
    table: &PreparedTable,
    file_indices: &[usize],
    units: &[WorkUnit],
    exchange: &Exchange,
    destination: Option<Destination<'_>>,
    progress: &Progress,
) -> Result<(Vec<(u64, u64)>, f64)> {
    let mut writing = Stopwatch::default();
    let mut results = Vec::with_capacity(file_indices.len());
    let mut unit_idx = 0;
    for &file_idx in file_indices {
        let file = &table.plan.files[file_idx];
        let mut staged = match destination {
            Some(destination) => {
                Some(writing.time(|| StagedFile::create(&destination(&file.relative_path), &table.layouts[file_idx]))?)
            }
            None => None,
        };
        let mut rows = 0;
        while unit_idx < units.len() && units[unit_idx].file_idx == file_idx {
            let Some(done) = exchange.take_in_order(unit_idx) else {
                // A worker failed; its error is the one to report.
                return Ok((results, writing.seconds));
            };
            rows += done.n_rows as u64;
            if let (Some(staged), Some(encoded)) = (staged.as_mut(), done.encoded) {
                writing.time(|| staged.append(encoded))?;
                // Copying id chunks touched their input pages; let them go.
                file.file
                    .release_row_group(units[unit_idx].row_group, &table.scans[file_idx].copied_leaves);
            }
            progress.add_rows(done.n_rows as u64);
            unit_idx += 1;
            exchange.mark_written(unit_idx);
        }
        let bytes = match staged {
            Some(staged) => writing.time(|| staged.finish())?.1,
            None => 0,
        };
        results.push((rows, bytes));
    }
    Ok((results, writing.seconds))
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

fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lakescore-worker-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("cannot start {threads} worker threads: {e}")))
}

/// `20261126T045300Z-1a2b3c4d`: sorts by start time, unique per process start.
fn new_run_id(started_at: SystemTime) -> String {
    let nanos = started_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let salt = sha256_hex(format!("{nanos}-{}", std::process::id()).as_bytes());
    format!("{}-{}", compact_utc(started_at), &salt[..8])
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// `error: caused by: ...` on one line, for the ledger.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
