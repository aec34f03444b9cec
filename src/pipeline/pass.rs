//! One pass over a table: the workers on the run's pool, each taking the
//! next row group and putting it through the block steps, and the writer on
//! the calling thread, which appends the encoded row groups to their files
//! strictly in input order, never more than a window behind the workers.

use super::row_policies::drop_rows;
use super::*;

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

pub(super) struct EncodedUnit {
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

pub(super) type Destination<'a> = &'a (dyn Fn(&Path) -> PathBuf + Sync);

/// Scores the files `file_indices` of the table, writing each to
/// `destination(relative path)` (or nowhere), and quarantined rows to
/// `quarantine` (or nowhere).
pub(super) fn score_files(
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
    // The rows the table holds (deletion vectors' rows left out).
    let live_rows: u64 = file_indices.iter().map(|&i| plan.files[i].live_rows()).sum();
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
                    fetch_ahead: pool.current_num_threads(),
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
                crate::util::panic_message(&*payload)
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
        rows: live_rows,
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
    /// How far ahead of the unit it takes a worker asks for the next one's
    /// bytes: the pool's size, so each worker's next row group is on its way
    /// (from a source that fetches; a mapped file has them already).
    fetch_ahead: usize,
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
            if let Some(next) = self.units.get(unit_idx + self.fetch_ahead) {
                let leaves = &self.table.scans[next.file_idx].leaves;
                self.table.plan.files[next.file_idx]
                    .file
                    .fetch_ahead(next.row_group, leaves);
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
                    crate::util::panic_message(&*payload)
                )))
            });
            // Rows read from a file truncated under the run (zeros, where a
            // mapping's pages vanished) are its error, whatever came of them.
            let scored = self.table.plan.files[unit.file_idx]
                .file
                .check_intact()
                .map_err(Error::from)
                .and(scored);
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
        file.prefetch_row_group(row_group, &scan.leaves)?;
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
        // Rows the table deleted from the file (a Delta deletion vector).
        let deleted = file_plan.deleted_in(row_group);
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
            let mut ids: Vec<ArrayRef> = scan
                .id_sources
                .iter()
                .filter_map(|source| match *source {
                    IdSource::Arrow { position } => Some(Arc::clone(
                        batch.as_ref().expect("Arrow ids come with a batch").column(position),
                    )),
                    IdSource::Copy { .. } => None,
                })
                .collect();
            // Deleted rows go before anything looks at the block: they are not
            // checked, scored, written or counted.
            let mut n_live = n_rows;
            if let Some(gone) = crate::plan::deleted_mask(&deleted, rows_done, n_rows) {
                block = drop_rows(block, &gone);
                let keep = BooleanArray::from_iter(gone.iter().map(|&g| Some(!g)));
                for id in &mut ids {
                    *id = arrow::compute::filter(id, &keep).map_err(|e| encode_error(e.into()))?;
                }
                n_live = block.n_rows;
            }
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
                            let keys = row_keys(&key_columns, n_live).map_err(|problem| {
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
            let scores = steps.score(block).map_err(located)?;
            lap(&mut stages.model);
            if let Some(inspection) = inspection.as_deref_mut() {
                inspection.inspect_scores(contract, &scores);
                lap(&mut stages.checks);
            }

            if let Some(encoder) = encoder.as_mut() {
                let output = steps
                    .output(&ids, keep.as_ref(), scores, &marks, n_live)
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
        // The writer lets the copied chunks go once it has copied them; with
        // nothing to write, nobody copies them.
        let read_here = match self.encode {
            true => &scan.released_by_workers,
            false => &scan.leaves,
        };
        file.release_row_group(row_group, read_here);
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
            Some(destination) if table.pass.encode => Some(
                writing
                    .time(|| StagedFile::create(&destination(&file.listed.relative_path), &table.layouts[file_idx]))?,
            ),
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
