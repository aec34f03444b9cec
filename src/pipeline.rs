//! Pipeline: the one place that knows both the lake and the models. It plans
//! the table, scores row groups in parallel on one rayon pool, writes the
//! output in input order, and commits it.
//!
//! Work distribution: each worker of the pool takes the next row group in
//! output order (an atomic counter), decodes it, builds features in chunks of
//! [`CHUNK_ROWS`] rows (small enough to stay in the CPU cache), scores them,
//! and encodes its output columns. The calling thread is the single writer: it
//! appends encoded row groups to their files strictly in order. Workers never
//! run more than [`IN_FLIGHT_PER_THREAD`] x threads row groups ahead of the
//! writer, which bounds memory whatever the table size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Instant, SystemTime};

use arrow::array::{Array, ArrayRef, Float32Array, RecordBatch};

use crate::commit::{self, OutputFileRecord, PartitionRecord, Transaction, WriteMode};
use crate::error::{Error, Result};
use crate::features;
use crate::model::Model;
use crate::plan::{self, ColumnRequest, IdColumns, TablePlan, WorkUnit};
use crate::progress::Progress;
use crate::report::{InputRecord, Manifest, RunReport, StageSeconds, WallSeconds};
use crate::sink::{self, EncodedRowGroup, OutputLayout, SinkError, StagedFile};
use crate::util::{compact_utc, peak_rss_bytes, rfc3339_utc, sha256_hex};

/// Rows per feature block handed to the model: 4096 rows x 34 features of f64
/// is about 1 MiB, which stays in a core's L2 cache between the feature pass and
/// the model pass.
pub const CHUNK_ROWS: usize = 4096;

/// Rows decoded at a time within a row group: small enough that one thread's
/// decoded columns stay in cache and its buffers are reused batch after batch.
pub const BATCH_ROWS: usize = 8192;

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
        rows_per_second: rows as f64 / total.max(1e-9),
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
    /// One output layout per input file.
    layouts: Vec<OutputLayout>,
    score_columns: Vec<String>,
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
    for file in &plan.files {
        let schema = file.file.metadata.schema();
        for (feature, position) in request.features.iter().zip(&file.feature_positions) {
            let root = schema.index_of(feature).expect("planned features exist");
            debug_assert!(*position <= root);
            features::check_numeric(&file.file.path, feature, schema.field(root).data_type())?;
        }
        let id_fields = plan
            .id_columns
            .iter()
            .map(|c| Arc::new(schema.field_with_name(c).expect("planned").clone()))
            .collect();
        layouts.push(OutputLayout::new(&file.file.path, id_fields, &score_columns)?);
    }
    Ok(PreparedTable {
        plan,
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
        let written = write_in_order(table, file_indices, &units, &exchange, destination, &progress);
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
        match score_unit(model, table, units[unit_idx], encode, stages) {
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
    let file = &table.plan.files[unit.file_idx];
    let encode_error = |source| SinkError::Encode {
        path: file.file.path.clone(),
        row_group: unit.row_group,
        source,
    };
    let mut clock = Instant::now();
    let mut lap = |slot: &mut f64| {
        let now = Instant::now();
        *slot += (now - clock).as_secs_f64();
        clock = now;
    };
    let mut encoder = match encode {
        true => Some(table.layouts[unit.file_idx].start_row_group().map_err(encode_error)?),
        false => None,
    };
    let mut batches = file.file.read_row_group(unit.row_group, &file.projection, BATCH_ROWS)?;
    let mut n_rows = 0;
    loop {
        let batch = match batches.next() {
            Some(batch) => batch?,
            None => break,
        };
        lap(&mut stages.decode);
        let scores = score_batch(model, &batch, &file.feature_positions, stages, &mut lap)?;
        n_rows += batch.num_rows();
        if let Some(encoder) = encoder.as_mut() {
            let mut output: Vec<ArrayRef> = file.id_positions.iter().map(|&p| Arc::clone(batch.column(p))).collect();
            output.extend(scores.into_iter().map(|s| Arc::new(Float32Array::from(s)) as ArrayRef));
            encoder.write(&output).map_err(encode_error)?;
            lap(&mut stages.encode);
        }
    }
    file.file.release_row_group(unit.row_group, &file.projection);
    let Some(encoder) = encoder else {
        return Ok(EncodedUnit { n_rows, encoded: None });
    };
    let encoded = encoder.finish().map_err(encode_error)?;
    lap(&mut stages.encode);
    Ok(EncodedUnit {
        n_rows,
        encoded: Some(encoded),
    })
}

/// Features and model over one decoded batch, [`CHUNK_ROWS`] rows at a time.
fn score_batch(
    model: &dyn Model,
    batch: &RecordBatch,
    feature_positions: &[usize],
    stages: &mut StageSeconds,
    lap: &mut impl FnMut(&mut f64),
) -> Result<Vec<Vec<f32>>> {
    let n_rows = batch.num_rows();
    let features = model.features();
    let columns: Vec<&dyn Array> = feature_positions.iter().map(|&p| batch.column(p).as_ref()).collect();
    let mut scores: Vec<Vec<f32>> = vec![Vec::with_capacity(n_rows); model.n_outputs()];
    let mut offset = 0;
    while offset < n_rows {
        let chunk_rows = CHUNK_ROWS.min(n_rows - offset);
        let block = features::build_block(&columns, features, offset, chunk_rows);
        lap(&mut stages.features);
        let chunk_scores = model.predict(block)?;
        if chunk_scores.n_rows != chunk_rows
            || chunk_scores.outputs.len() != scores.len()
            || chunk_scores.outputs.iter().any(|o| o.len() != chunk_rows)
        {
            return Err(Error::Internal(format!(
                "model `{}` returned {} outputs of {:?} rows for {chunk_rows} rows",
                model.info().name,
                chunk_scores.outputs.len(),
                chunk_scores.outputs.iter().map(Vec::len).collect::<Vec<_>>()
            )));
        }
        for (column, chunk) in scores.iter_mut().zip(chunk_scores.outputs) {
            column.extend_from_slice(&chunk);
        }
        lap(&mut stages.model);
        offset += chunk_rows;
    }
    Ok(scores)
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
