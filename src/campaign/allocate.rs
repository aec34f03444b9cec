//! `lakescore allocate`: every customer of a table gets one arm of the
//! campaign, or the holdout; the assignments are published like scores (one
//! output file per input file, row groups mirrored, staged and committed
//! atomically under the output's lock, resumable).
//!
//! Output columns: the id column (as the input has it), `arm` (null for the
//! holdout), `propensity` (the probability this policy version gave that
//! arm to that customer: the arm's share among customers not held out),
//! `policy_version`, `holdout`, and `score_<arm>` for every arm with a model.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float32Array, Float64Array, Int16Array, Int64Array, RecordBatch,
    StringArray,
};
use arrow::datatypes::{DataType, Field, Int16Type, Schema, SchemaRef};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use serde::Serialize;

use crate::bandit::policy::{Policy, PolicyFile};
use crate::bandit::{hash_bytes, id_hashes, is_id_type, unit};
use crate::cancel::CancelToken;
use crate::commit::{self, LedgerRecord, OutputFileRecord, OutputTable, Published, WriteMode};
use crate::error::{Error, Result, error_chain};
use crate::features::{self, FeatureSource};
use crate::model::{Feature, Model};
use crate::observe::RunIdentity;
use crate::package::Package;
use crate::plan::{self, ColumnRequest, FilePlan, IdColumns, PlanError};
use crate::sink::SinkError;
use crate::source::TableSource;
use crate::util::rfc3339_utc;

/// Rows decoded and assigned at a time.
const BATCH_ROWS: usize = 8192;

/// How a customer's arm is decided, for one policy version.
#[derive(Debug, Clone)]
pub struct Assigner {
    holdout_seed: u64,
    draw_seed: u64,
    holdout_share: f64,
    /// Each arm's probability of being best (Thompson sampling).
    pub probability_best: Vec<f64>,
    /// Each arm's share among customers not held out, and their running sums.
    pub shares: Vec<f64>,
    cumulative: Vec<f64>,
}

impl Assigner {
    pub fn new(policy: &Policy) -> Assigner {
        let probability_best = policy.probability_best();
        let shares = policy.shares_of(&probability_best);
        let mut cumulative = Vec::with_capacity(shares.len());
        let mut sum = 0.0;
        for share in &shares {
            sum += share;
            cumulative.push(sum);
        }
        // The last arm takes whatever rounding leaves above the sum.
        *cumulative.last_mut().expect("a policy has arms") = f64::INFINITY;
        Assigner {
            holdout_seed: hash_bytes(&[policy.salt.as_bytes(), b"holdout"]),
            draw_seed: hash_bytes(&[policy.salt.as_bytes(), b"draw", &policy.version.to_le_bytes()]),
            holdout_share: policy.holdout_share,
            probability_best,
            shares,
            cumulative,
        }
    }

    /// The arm of a customer whose id hashes to these (from
    /// [`seeds`](Self::seeds)), or `None` for the holdout.
    pub fn arm(&self, holdout_hash: u64, draw_hash: u64) -> Option<usize> {
        if unit(holdout_hash) < self.holdout_share {
            return None;
        }
        let u = unit(draw_hash);
        Some(
            self.cumulative
                .iter()
                .position(|&c| u < c)
                .expect("the last bound is infinite"),
        )
    }

    /// The seeds ids are hashed with: for the holdout, for the draw.
    pub fn seeds(&self) -> (u64, u64) {
        (self.holdout_seed, self.draw_seed)
    }
}

/// One arm in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ArmAllocation {
    pub name: String,
    /// The probability that the arm is best (Thompson sampling).
    pub probability_best: f64,
    /// Its share among customers not held out (the floor applied).
    pub share: f64,
    pub rows: u64,
    /// Its share of the rows not held out, as assigned.
    pub realised_share: f64,
}

/// What `allocate` did; also the output's `_SUCCESS` manifest.
#[derive(Debug, Clone, Serialize)]
pub struct AllocationReport {
    pub command: &'static str,
    pub run_id: String,
    pub lakescore_version: &'static str,
    pub started_at: String,
    pub finished_at: String,
    pub campaign: String,
    pub policy: PathBuf,
    pub policy_version: u64,
    pub policy_sha256: String,
    pub input: PathBuf,
    pub output: PathBuf,
    pub mode: String,
    pub rows: u64,
    pub holdout_rows: u64,
    pub holdout_share: f64,
    pub arms: Vec<ArmAllocation>,
    pub outputs: Vec<OutputFileRecord>,
    pub reused_partitions: usize,
    pub threads: usize,
    pub wall_seconds: f64,
}

/// Settings of an allocation run.
#[derive(Debug, Clone)]
pub struct AllocateOptions {
    pub threads: usize,
    /// Stops the run at its next row group, or before it publishes.
    pub cancel: CancelToken,
    pub mode: WriteMode,
    pub identity: RunIdentity,
}

/// The arms' models as one set (their names the arms'), with its package.
pub struct ArmModels {
    pub package: Package,
    /// Per arm, its score column's position among the set's outputs.
    pub columns: Vec<Option<usize>>,
}

/// Assigns every customer of `input` and publishes the assignments to `output`.
pub fn allocate(
    policy_file: &PolicyFile,
    arm_models: Option<&ArmModels>,
    input_table: &dyn TableSource,
    output_table: &dyn OutputTable,
    options: &AllocateOptions,
) -> Result<AllocationReport> {
    let clock = Instant::now();
    let policy = &policy_file.policy;
    let assigner = Assigner::new(policy);
    let probability_best = assigner.probability_best.clone();
    let model = arm_models.map(|m| m.package.model.as_ref());
    let features: Vec<Feature> = model.map(|m| m.features().to_vec()).unwrap_or_default();
    let columns: Vec<String> = arm_models
        .map(|m| m.package.contract.columns.clone())
        .unwrap_or_default();
    let request = ColumnRequest {
        features: columns.clone(),
        id_columns: IdColumns::Named(vec![policy.id_column.clone()]),
    };
    let plan = plan::plan_table(input_table, &request, &options.cancel)?;
    let input = input_table.location();
    // (Reused partitions are counted by reading them back: a local output.)
    let output = output_table.location();
    let input_files: Vec<&Path> = plan.files.iter().map(|f| f.listed.location.as_path()).collect();
    output_table.check_separate(input, &input_files)?;
    let score_arms: Vec<(usize, usize)> = arm_models
        .map(|m| {
            m.columns
                .iter()
                .enumerate()
                .filter_map(|(arm, c)| c.map(|c| (arm, c)))
                .collect()
        })
        .unwrap_or_default();
    let score_names: Vec<String> = score_arms
        .iter()
        .map(|&(arm, _)| format!("score_{}", policy.arms[arm].name))
        .collect();
    let fixed = ["arm", "propensity", "policy_version", "holdout"];
    if let Some(clash) = fixed
        .iter()
        .map(|c| c.to_string())
        .chain(score_names.iter().cloned())
        .find(|c| *c == policy.id_column)
    {
        return Err(Error::Usage(format!(
            "the policy's id column `{clash}` has the name of an output column of `allocate`; rename it in the table"
        )));
    }
    let mut layouts = Vec::with_capacity(plan.files.len());
    for file in &plan.files {
        let schema = file.file.schema();
        let id_field = schema.field(file.id_roots[0]);
        if !is_id_type(id_field.data_type()) {
            return Err(PlanError::ColumnType {
                path: file.file.path.clone(),
                role: "id",
                column: policy.id_column.clone(),
                data_type: id_field.data_type().to_string(),
                expected: "ids must be integers or strings",
            }
            .into());
        }
        check_no_null_ids(file, &policy.id_column)?;
        for ((feature, &root), column) in features.iter().zip(&file.feature_roots).zip(&columns) {
            let as_read = Feature {
                name: column.clone(),
                ..feature.clone()
            };
            features::check_feature_column(&file.file.path, &as_read, schema.field(root).data_type())?;
        }
        let mut fields = vec![
            Field::new(id_field.name(), id_field.data_type().clone(), false),
            Field::new(
                "arm",
                DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8)),
                true,
            ),
            Field::new("propensity", DataType::Float64, true),
            Field::new("policy_version", DataType::Int64, false),
            Field::new("holdout", DataType::Boolean, false),
        ];
        fields.extend(
            score_names
                .iter()
                .map(|name| Field::new(name, DataType::Float32, false)),
        );
        layouts.push(Arc::new(Schema::new(fields)));
    }
    let pool = crate::pipeline::build_pool(options.threads)?;

    let mut ledger = LedgerRecord::starting(
        &options.identity.run_id,
        &options.identity.uuid,
        options.identity.started_at,
        options.mode,
        input,
    );
    ledger.model_name = policy.campaign.clone();
    ledger.model_version = Some(policy.version.to_string());
    ledger.model_sha256 = policy_file.sha256.clone();
    ledger.input_files = plan.files.len();
    ledger.input_fingerprint = crate::pipeline::table_fingerprint(&plan);
    let mut transaction = output_table.begin(options.mode, ledger, None)?;
    tracing::info!(
        campaign = %policy.campaign,
        version = policy.version,
        input = %input.display(),
        output = %output.display(),
        "allocating"
    );

    // A partition is reused when the policy's bytes, the arm models' and its
    // inputs are those it was written from.
    let model_digest = arm_models
        .map(|m| m.package.output_identity.clone())
        .unwrap_or_default();
    let (reused, to_write) = crate::pipeline::partitions_to_write(
        &plan,
        transaction.as_ref(),
        &policy_file.sha256,
        &format!("allocate;models={model_digest}"),
    );
    let by_partition = commit::partitions_of(plan.files.iter().map(|f| f.listed.relative_path.as_path()));
    let files: Vec<usize> = to_write.iter().flat_map(|(_, _, i)| i.iter().copied()).collect();
    let counts: Vec<AtomicU64> = (0..=policy.arms.len()).map(|_| AtomicU64::new(0)).collect();
    let written: Result<Vec<(u64, u64)>> = pool.install(|| {
        files
            .par_iter()
            .map(|&i| {
                let file = &plan.files[i];
                let path = transaction.staged_path(&file.listed.relative_path);
                let writer = FileAllocation {
                    file,
                    schema: &layouts[i],
                    assigner: &assigner,
                    policy,
                    model,
                    features: &features,
                    score_arms: &score_arms,
                    counts: &counts,
                    cancel: &options.cancel,
                };
                writer.write(&path)
            })
            .collect()
    });
    // The counts of reused partitions are read back from their files, so
    // that the report and `_SUCCESS` describe the whole output.
    let reused_counted = reused
        .iter()
        .flat_map(|(_, record)| record.files.iter())
        .try_for_each(|f| count_assignments(&output.join(&f.path), policy, &counts, &options.cancel));
    let written = match written
        .and_then(|w| reused_counted.map(|()| w))
        .and_then(|w| options.cancel.check().map(|()| w).map_err(Error::from))
        // Assignments of bytes an input no longer holds are never published.
        .and_then(|w| {
            pool.install(|| plan::check_unchanged(&plan))
                .map(|()| w)
                .map_err(Error::from)
        }) {
        Ok(written) => written,
        Err(error) => {
            if let Err(abort_error) = transaction.abort(error.run_status(), &error_chain(&error)) {
                tracing::warn!(error = %abort_error, "could not clean up after the run");
            }
            return Err(error);
        }
    };
    let sizes: std::collections::BTreeMap<usize, (u64, u64)> = files.iter().copied().zip(written).collect();
    let run_id = transaction.run_id().to_string();
    let staged = crate::pipeline::staged_records(&plan, to_write, &sizes, &run_id);
    let all_partitions: Vec<&Path> = by_partition.keys().map(PathBuf::as_path).collect();
    if let Err(error) = transaction.publish(&staged, &all_partitions) {
        let error = Error::from(error);
        let _ = transaction.abort(error.run_status(), &error_chain(&error));
        return Err(error);
    }
    let mut outputs: Vec<OutputFileRecord> = staged
        .iter()
        .chain(reused.iter().map(|(_, record)| record))
        .flat_map(|p| p.files.clone())
        .collect();
    outputs.sort_by(|a, b| a.path.cmp(&b.path));
    let rows = plan.total_rows();
    let holdout_rows = counts[policy.arms.len()].load(Ordering::Relaxed);
    let assigned: u64 = counts[..policy.arms.len()]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum();
    let report = AllocationReport {
        command: "allocate",
        run_id: run_id.clone(),
        lakescore_version: env!("CARGO_PKG_VERSION"),
        started_at: rfc3339_utc(options.identity.started_at),
        finished_at: rfc3339_utc(std::time::SystemTime::now()),
        campaign: policy.campaign.clone(),
        policy: policy_file.path.clone(),
        policy_version: policy.version,
        policy_sha256: policy_file.sha256.clone(),
        input: input.to_path_buf(),
        output: output.to_path_buf(),
        mode: options.mode.to_string(),
        rows,
        holdout_rows,
        holdout_share: policy.holdout_share,
        arms: policy
            .arms
            .iter()
            .enumerate()
            .map(|(k, arm)| {
                let arm_rows = counts[k].load(Ordering::Relaxed);
                ArmAllocation {
                    name: arm.name.clone(),
                    probability_best: probability_best[k],
                    share: assigner.shares[k],
                    rows: arm_rows,
                    realised_share: if assigned > 0 {
                        arm_rows as f64 / assigned as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect(),
        outputs,
        reused_partitions: reused.len(),
        threads: pool.current_num_threads(),
        wall_seconds: clock.elapsed().as_secs_f64(),
    };
    transaction.finish(
        Some(&serde_json::to_vec_pretty(&report).expect("reports serialize")),
        Published {
            rows,
            rows_quarantined: 0,
            sla_missed: Vec::new(),
        },
    )?;
    Ok(report)
}

/// Refuses a file whose footer says its id column has nulls (every customer
/// needs an id to be assigned); files without statistics are checked as
/// they are read.
fn check_no_null_ids(file: &FilePlan, id_column: &str) -> Result<()> {
    let descriptor = file.file.metadata.parquet_schema();
    let leaves = crate::scan::leaves_of_root(descriptor, file.id_roots[0]);
    for (row_group, metadata) in file.file.metadata.metadata().row_groups().iter().enumerate() {
        for &leaf in &leaves {
            let nulls = metadata.column(leaf).statistics().and_then(|s| s.null_count_opt());
            if nulls.is_some_and(|n| n > 0) {
                return Err(Error::Usage(format!(
                    "id column `{id_column}` has {} nulls in row group {row_group} of `{}`; every customer needs an \
                     id to be assigned an arm",
                    nulls.unwrap_or(0),
                    file.file.path.display()
                )));
            }
        }
    }
    Ok(())
}

/// Adds the arm and holdout counts of a published assignment file.
fn count_assignments(path: &Path, policy: &Policy, counts: &[AtomicU64], cancel: &CancelToken) -> Result<()> {
    let file = crate::scan::ParquetFile::open(path)?;
    let wanted = [super::table::Wanted {
        name: "arm",
        role: "assignment",
        required: true,
    }];
    let arms = policy.arms.len();
    let mut local = vec![0u64; arms + 1];
    super::table::for_each_batch(std::slice::from_ref(&file), &wanted, cancel, |at, batch| {
        let [Some(arm)] = batch else {
            unreachable!("required columns are there")
        };
        // By name: a dictionary read back need not keep the arms' order. Each
        // dictionary value is looked up once, then the keys are counted.
        use arrow::array::AsArray;
        let as_dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let dictionary = arrow::compute::cast(arm, &as_dictionary).map_err(|_| {
            super::table::type_error(at.path, "assignment", "arm", arm.data_type(), "expected arm names")
        })?;
        let dictionary = dictionary.as_dictionary::<arrow::datatypes::Int32Type>();
        let names = dictionary.values().as_string::<i32>();
        let arm_of: Vec<Option<usize>> = (0..names.len())
            .map(|v| policy.arms.iter().position(|a| a.name == names.value(v)))
            .collect();
        for (i, key) in dictionary.keys().iter().enumerate() {
            match key.map(|k| arm_of[k as usize]) {
                Some(Some(k)) => local[k] += 1,
                Some(None) => {
                    return Err(Error::Usage(format!(
                        "assignment {} names an arm the policy lacks",
                        at.row(i)
                    )));
                }
                None => local[arms] += 1,
            }
        }
        Ok(())
    })?;
    for (all, mine) in counts.iter().zip(&local) {
        all.fetch_add(*mine, Ordering::Relaxed);
    }
    Ok(())
}

/// How a file's decoded batches are read: where the id is, where each arm
/// model feature comes from, and the arms' names (the dictionary of `arm`).
struct Batches {
    id: usize,
    sources: Vec<FeatureSource>,
    arm_names: ArrayRef,
}

/// One input file's assignments, written to one staged file.
struct FileAllocation<'a> {
    file: &'a FilePlan,
    schema: &'a SchemaRef,
    assigner: &'a Assigner,
    policy: &'a Policy,
    model: Option<&'a dyn Model>,
    features: &'a [Feature],
    score_arms: &'a [(usize, usize)],
    /// Rows per arm, then the holdout's.
    counts: &'a [AtomicU64],
    cancel: &'a CancelToken,
}

impl FileAllocation<'_> {
    /// Writes the file; returns its rows and bytes. Row counts are added to
    /// the shared counts only for a file that was written whole (a re-run of
    /// a failed file counts nothing twice: the run fails).
    fn write(&self, path: &Path) -> Result<(u64, u64)> {
        let file = &self.file.file;
        let create_error = |source| {
            Error::Sink(SinkError::Create {
                path: path.to_path_buf(),
                source,
            })
        };
        let write_error = |source| {
            Error::Sink(SinkError::Write {
                path: path.to_path_buf(),
                source,
            })
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(create_error)?;
        }
        let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
        let out = std::fs::File::create(path).map_err(create_error)?;
        let mut writer = ArrowWriter::try_new(out, Arc::clone(self.schema), Some(properties)).map_err(write_error)?;
        // Columns to decode: the id and the features, in file order.
        let id_root = self.file.id_roots[0];
        let mut roots: Vec<usize> = self.file.feature_roots.clone();
        roots.push(id_root);
        roots.sort_unstable();
        roots.dedup();
        let position = |root: usize| roots.binary_search(&root).expect("selected");
        let sources: Vec<FeatureSource> = self
            .file
            .feature_roots
            .iter()
            .map(|&r| FeatureSource::Arrow { position: position(r) })
            .collect();
        let projection = ProjectionMask::roots(file.metadata.parquet_schema(), roots.iter().copied());
        let arm_names = StringArray::from_iter_values(self.policy.arms.iter().map(|a| a.name.as_str()));
        let batches = Batches {
            id: position(id_root),
            sources,
            arm_names: Arc::new(arm_names),
        };
        let mut counts = vec![0u64; self.counts.len()];
        let mut rows_written = 0u64;
        for row_group in 0..file.num_row_groups() {
            self.cancel.check()?;
            // Rows the table deleted (a Delta deletion vector) get no arm.
            let deleted = self.file.deleted_in(row_group);
            file.for_each_batch(row_group, &projection, BATCH_ROWS, |first_row, batch| {
                let batch = match crate::plan::deleted_mask(&deleted, first_row, batch.num_rows()) {
                    None => batch,
                    Some(gone) => {
                        let keep = arrow::array::BooleanArray::from_iter(gone.iter().map(|&g| Some(!g)));
                        arrow::compute::filter_record_batch(&batch, &keep).map_err(|error| write_error(error.into()))?
                    }
                };
                let out = self.assign(&batches, &batch, row_group, first_row, &mut counts)?;
                writer.write(&out).map_err(write_error)?;
                rows_written += out.num_rows() as u64;
                Ok::<(), Error>(())
            })?;
            // Output row groups mirror the input's.
            writer.flush().map_err(write_error)?;
        }
        let out = writer.into_inner().map_err(write_error)?;
        out.sync_all().map_err(|source| {
            Error::Sink(SinkError::Sync {
                path: path.to_path_buf(),
                source,
            })
        })?;
        let bytes = out.metadata().map(|m| m.len()).unwrap_or(0);
        for (all, mine) in self.counts.iter().zip(&counts) {
            all.fetch_add(*mine, Ordering::Relaxed);
        }
        Ok((rows_written, bytes))
    }

    /// The output rows of one decoded batch (starting at row `first_row` of
    /// `row_group`); adds each arm's rows, and the holdout's, to `counts`.
    fn assign(
        &self,
        read: &Batches,
        batch: &RecordBatch,
        row_group: usize,
        first_row: usize,
        counts: &mut [u64],
    ) -> Result<RecordBatch> {
        let path = &self.file.file.path;
        let n = batch.num_rows();
        let ids = batch.column(read.id);
        if let Some(row) = (0..n).find(|&i| ids.is_null(i)) {
            return Err(Error::Usage(format!(
                "id column `{}` is null in row {} of row group {row_group} of `{}`; every customer needs an id to be \
                 assigned an arm",
                self.policy.id_column,
                first_row + row,
                path.display()
            )));
        }
        let (holdout_seed, draw_seed) = self.assigner.seeds();
        let (mut holdout_hashes, mut draw_hashes) = (Vec::with_capacity(n), Vec::with_capacity(n));
        id_hashes(ids.as_ref(), holdout_seed, &mut holdout_hashes);
        id_hashes(ids.as_ref(), draw_seed, &mut draw_hashes);
        let mut keys = Vec::with_capacity(n);
        let mut propensity = Vec::with_capacity(n);
        let mut holdout = Vec::with_capacity(n);
        for (h, d) in holdout_hashes.iter().zip(&draw_hashes) {
            let arm = self.assigner.arm(h.expect("no nulls"), d.expect("no nulls"));
            counts[arm.unwrap_or(counts.len() - 1)] += 1;
            keys.push(arm.map(|k| k as i16));
            propensity.push(arm.map(|k| self.assigner.shares[k]));
            holdout.push(arm.is_none());
        }
        let encode_error = |e: arrow::error::ArrowError| {
            Error::Sink(SinkError::Write {
                path: path.clone(),
                source: e.into(),
            })
        };
        let arms = DictionaryArray::<Int16Type>::try_new(Int16Array::from(keys), Arc::clone(&read.arm_names))
            .map_err(encode_error)?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::clone(ids),
            Arc::new(arms),
            Arc::new(Float64Array::from(propensity)),
            Arc::new(Int64Array::from_value(self.policy.version as i64, n)),
            Arc::new(BooleanArray::from(holdout)),
        ];
        if let Some(model) = self.model {
            let arrays: Vec<&dyn Array> = batch.columns().iter().map(|c| c.as_ref()).collect();
            let block = features::build_block(&read.sources, &arrays, &[], self.features, n, None)
                .map_err(|unknown| unknown.at(path, row_group))?;
            let mut scores = model.predict(block).map_err(|source| Error::InRowGroup {
                path: path.clone(),
                row_group,
                source,
            })?;
            for &(_, column) in self.score_arms {
                columns.push(Arc::new(Float32Array::from(std::mem::take(
                    &mut scores.outputs[column],
                ))));
            }
        }
        RecordBatch::try_new(Arc::clone(self.schema), columns).map_err(encode_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holdout_is_the_salted_share_and_arms_follow_the_shares() {
        let mut policy = crate::bandit::policy::tests_support::policy(&[(10.0, 990.0), (30.0, 970.0)]);
        policy.holdout_share = 0.2;
        let assigner = Assigner::new(&policy);
        let (hs, ds) = assigner.seeds();
        let n = 100_000;
        let mut counts = [0u64; 3];
        for id in 0..n {
            let key = crate::bandit::IdKey::Int(id);
            match assigner.arm(key.hash_with(hs), key.hash_with(ds)) {
                Some(k) => counts[k] += 1,
                None => counts[2] += 1,
            }
        }
        let holdout = counts[2] as f64 / n as f64;
        assert!((holdout - 0.2).abs() < 0.01, "{holdout}");
        let share1 = counts[1] as f64 / (counts[0] + counts[1]) as f64;
        assert!(
            (share1 - assigner.shares[1]).abs() < 0.01,
            "{share1} vs {:?}",
            assigner.shares
        );
        // The next version keeps the holdout and draws anew.
        policy.version += 1;
        let next = Assigner::new(&policy);
        let (hs2, ds2) = next.seeds();
        assert_eq!(hs, hs2);
        assert_ne!(ds, ds2);
    }
}
