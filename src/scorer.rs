//! Scoring in memory: Arrow record batches in, ids + scores (+ flags) out,
//! with no file, folder or commit, for a program that already holds the data
//! (a Spark or Ray worker, a Python process). Each batch goes through the
//! same steps as a block of the command line's pass
//! ([`crate::pipeline`]'s `BlockSteps`: the contract's look at the features,
//! fill values, quarantine, the model, the look at the scores, the output
//! columns), [`BATCH_ROWS`] rows at a time, so its scores are the command
//! line's, bit for bit.
//!
//! What the contract saw comes back as an [`Inspected`]: counts, rule
//! tallies with example ids, the profile of every feature and score, the
//! unique columns' keys, the column types and the newest freshness value. It
//! merges exactly and serialises to JSON, so many workers' inspections can
//! be gathered, merged and judged in one place ([`Scorer::judge`]): the
//! same rules, guards and drift as a command-line run, over the whole data.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Float64Array, Int64Array, RecordBatch};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use lakescore::model::LoadOptions;
//! use lakescore::scorer::{Scorer, ScorerOptions};
//!
//! // A logistic model over two features, as a bare model file.
//! let dir = tempfile::tempdir().unwrap();
//! let model = dir.path().join("model.json");
//! std::fs::write(&model, r#"{"format": "linear", "features": ["age", "spend"],
//!     "weights": [0.02, -0.001], "intercept": -1.0, "link": "logistic"}"#).unwrap();
//! let package = lakescore::package::open(&model, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap();
//! let scorer = Scorer::new(package, ScorerOptions::default());
//!
//! let schema = Arc::new(Schema::new(vec![
//!     Field::new("customer_id", DataType::Int64, false),
//!     Field::new("age", DataType::Float64, true),
//!     Field::new("spend", DataType::Float64, true),
//! ]));
//! let batch = RecordBatch::try_new(schema, vec![
//!     Arc::new(Int64Array::from(vec![1, 2, 3])),
//!     Arc::new(Float64Array::from(vec![Some(30.0), None, Some(61.0)])),
//!     Arc::new(Float64Array::from(vec![120.0, 0.0, 35.5])),
//! ]).unwrap();
//!
//! // Two workers' batches, scored apart; their inspections merged and judged.
//! let first = scorer.score(&batch).unwrap();
//! let second = scorer.score(&batch.slice(1, 2)).unwrap();
//! assert_eq!(first.scores.num_rows(), 3);
//! assert_eq!(first.scores.schema().field(0).name(), "customer_id");
//! assert_eq!(first.scores.schema().field(1).name(), "score");
//! let mut seen = lakescore::scorer::Inspected::from_json(&first.inspected.to_json()).unwrap();
//! seen.merge(&second.inspected);
//! assert_eq!(seen.rows, 5);
//! let judgement = scorer.judge(&seen);
//! assert!(!judgement.rejects());
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::contract::{self, EXAMPLES, FreshnessSource, Inspection, RowMarks, TableFacts};
use crate::error::{Error, Result};
use crate::features::{self, FeatureSource};
use crate::model::Feature;
use crate::package::Package;
use crate::pipeline::{
    BATCH_ROWS, BlockFeatures, BlockSteps, is_kind, judgement_of, newest_fact, newest_of_column, row_keys,
};
use crate::plan::{self, DEFAULT_ID_COLUMN, IdColumns};
use crate::profile::TableProfile;
use crate::report::Judgement;

/// The version of [`Inspected`]'s JSON form.
pub const INSPECTED_FORMAT: &str = "lakescore-inspected/1";

/// How batches are read.
#[derive(Debug, Clone)]
pub struct ScorerOptions {
    /// The columns carried from input to output. `Default`: `customer_id`
    /// when a batch has it, else none.
    pub id_columns: IdColumns,
    /// Names the batches in error messages (`batch 3 of {source}`).
    pub source: String,
    /// The clock freshness rules judge by, seconds since the epoch (default: now).
    pub as_of: Option<i64>,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        ScorerOptions {
            id_columns: IdColumns::Default,
            source: "the in-memory input".into(),
            as_of: None,
        }
    }
}

/// A model or package, ready to score Arrow batches. Shared freely between
/// threads: [`Scorer::score`] takes `&self`.
pub struct Scorer {
    package: Package,
    options: ScorerOptions,
    block: BlockFeatures,
}

/// One batch scored.
#[derive(Debug, Clone)]
pub struct ScoredBatch {
    /// The id columns, the score columns and (when the contract flags rows)
    /// `lakescore_flags`, for every row not quarantined, in input order.
    pub scores: RecordBatch,
    /// The quarantined rows: their ids and the rules they broke
    /// (`lakescore_reasons`); `None` when the contract quarantines nothing.
    pub quarantined: Option<RecordBatch>,
    /// What the contract saw in this batch.
    pub inspected: Inspected,
}

/// A rule's failing rows, as [`Inspected`] keeps them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub failing: u64,
    /// The first few failing rows, named by their ids (`customer_id=17`) or,
    /// without ids, by their place (`batch of 2048 rows, row 12`).
    pub examples: Vec<String>,
}

/// What the contract saw in one or more batches: mergeable (counts add,
/// profiles merge exactly, keys append) and serialisable, so that workers'
/// inspections can be judged together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inspected {
    pub format: String,
    pub rows: u64,
    pub rows_with_missing: u64,
    pub rows_quarantined: u64,
    pub rows_flagged: u64,
    pub scores_out_of_range: u64,
    /// One per contract rule, in the contract's order.
    pub tallies: Vec<Tally>,
    /// The features' and scores' profiles.
    pub profile: TableProfile,
    /// The unique columns' key of every row (when the contract has a
    /// uniqueness rule): the value itself for one integer column, else a hash.
    pub keys: Vec<u64>,
    /// The keys are the values of one integer column (duplicates are then
    /// named by value).
    pub keys_are_values: bool,
    /// Per type rule (in the contract's order of type rules), the first
    /// column type seen that breaks it.
    pub type_mismatches: Vec<Option<String>>,
    /// The newest value of the freshness column, seconds since the epoch.
    pub newest: Option<i64>,
}

impl Inspected {
    /// Adds `other`'s rows: counts, tallies (examples up to the first few),
    /// profiles, keys; the first type mismatch and the newest value win.
    pub fn merge(&mut self, other: &Inspected) {
        self.rows += other.rows;
        self.rows_with_missing += other.rows_with_missing;
        self.rows_quarantined += other.rows_quarantined;
        self.rows_flagged += other.rows_flagged;
        self.scores_out_of_range += other.scores_out_of_range;
        for (mine, theirs) in self.tallies.iter_mut().zip(&other.tallies) {
            mine.failing += theirs.failing;
            let room = EXAMPLES.saturating_sub(mine.examples.len());
            mine.examples.extend(theirs.examples.iter().take(room).cloned());
        }
        self.profile.merge(&other.profile);
        self.keys.extend_from_slice(&other.keys);
        self.keys_are_values &= other.keys_are_values;
        for (mine, theirs) in self.type_mismatches.iter_mut().zip(&other.type_mismatches) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self.newest = self.newest.max(other.newest);
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an inspection serialises")
    }

    /// An inspection written by [`Inspected::to_json`] (of this format).
    pub fn from_json(text: &str) -> Result<Inspected> {
        let inspected: Inspected =
            serde_json::from_str(text).map_err(|e| Error::Usage(format!("not a lakescore inspection: {e}")))?;
        if inspected.format != INSPECTED_FORMAT {
            return Err(Error::Usage(format!(
                "an inspection of format `{}`; this lakescore reads `{INSPECTED_FORMAT}`",
                inspected.format
            )));
        }
        Ok(inspected)
    }
}

/// Where a batch's columns are.
struct BatchColumns {
    /// The batch column of each model feature.
    features: Vec<usize>,
    /// The batch column of each id column.
    ids: Vec<usize>,
    /// The output's schema: ids, scores, flags.
    schema: SchemaRef,
    quarantine_schema: Option<SchemaRef>,
}

impl Scorer {
    /// A model set's every model is scored: its scores are all columns of
    /// the output (there is no shadow table in memory).
    pub fn new(package: Package, options: ScorerOptions) -> Scorer {
        let block = BlockFeatures::of(package.model.as_ref(), true);
        Scorer {
            package,
            options,
            block,
        }
    }

    pub fn package(&self) -> &Package {
        &self.package
    }

    /// The names of the score columns the output has (every model's, for a
    /// model set).
    pub fn output_score_columns(&self) -> &[String] {
        &self.package.contract.written_score_columns
    }

    /// An inspection of no rows, to merge others into.
    pub fn empty_inspection(&self) -> Inspected {
        let contract = &self.package.contract;
        let inspection = contract.inspection(self.package.model.features(), contract.score_columns.len());
        self.inspected(inspection, Vec::new(), true, &BTreeMap::new(), Vec::new(), None)
    }

    fn locate(&self, schema: &Schema) -> Result<BatchColumns> {
        let contract = &self.package.contract;
        let source = Path::new(&self.options.source);
        let id_names: Vec<String> = match &self.options.id_columns {
            IdColumns::Named(names) => names.clone(),
            IdColumns::Default => match schema.index_of(DEFAULT_ID_COLUMN) {
                Ok(_) => vec![DEFAULT_ID_COLUMN.to_string()],
                Err(_) => Vec::new(),
            },
        };
        let (features, ids) = plan::column_roots(schema, source, &contract.columns, &id_names)?;
        for ((feature, column), &index) in self
            .package
            .model
            .features()
            .iter()
            .zip(&contract.columns)
            .zip(&features)
        {
            let as_read = Feature {
                name: column.clone(),
                ..feature.clone()
            };
            features::check_feature_column(source, &as_read, schema.field(index).data_type())?;
        }
        if let Some(clash) = id_names.iter().find(|c| self.output_score_columns().contains(c)) {
            return Err(Error::Usage(format!(
                "id column `{clash}` has the name of an output column; rename it or leave it out of the id columns"
            )));
        }
        let id_fields: Vec<FieldRef> = ids.iter().map(|&i| Arc::new(schema.field(i).clone())).collect();
        let quarantine_schema = contract.quarantines().then(|| {
            let mut fields: Vec<Field> = ids
                .iter()
                .map(|&i| schema.field(i).clone().with_nullable(true))
                .collect();
            fields.push(Field::new("lakescore_reasons", DataType::Utf8, false));
            Arc::new(Schema::new(fields))
        });
        Ok(BatchColumns {
            features,
            ids,
            schema: crate::sink::output_schema(id_fields, self.output_score_columns(), contract.flags()),
            quarantine_schema,
        })
    }

    /// Scores one batch; its rows come back in order, less the quarantined
    /// ones. Errors name the column or model field at fault.
    pub fn score(&self, batch: &RecordBatch) -> Result<ScoredBatch> {
        let contract = &self.package.contract;
        let located = self.locate(&batch.schema())?;
        let steps = BlockSteps {
            contract,
            model: self.package.model.as_ref(),
            fills: &self.block.fills,
            unknown_fills: &self.block.unknown_fills,
            flags: contract.flags(),
            published_scores: self.output_score_columns().len(),
        };
        let mut inspection = contract.inspection(self.package.model.features(), contract.score_columns.len());
        let sources: Vec<FeatureSource> = (0..located.features.len())
            .map(|position| FeatureSource::Arrow { position })
            .collect();
        let ids_of = |slice: &RecordBatch| -> Vec<ArrayRef> {
            located.ids.iter().map(|&i| Arc::clone(slice.column(i))).collect()
        };
        let mut outputs: Vec<RecordBatch> = Vec::new();
        let mut quarantined: Vec<RecordBatch> = Vec::new();
        let mut keys = Vec::new();
        let keys_are_values = match &contract.unique {
            Some((_, columns)) => match &columns[..] {
                [column] => batch
                    .schema()
                    .field_with_name(column)
                    .is_ok_and(|f| matches!(f.data_type(), DataType::Int32 | DataType::Int64)),
                _ => false,
            },
            None => true,
        };
        let mut marks = RowMarks::default();
        let mut first_row = 0;
        while first_row < batch.num_rows() {
            let n_rows = BATCH_ROWS.min(batch.num_rows() - first_row);
            let slice = batch.slice(first_row, n_rows);
            let columns: Vec<&dyn Array> = located.features.iter().map(|&i| slice.column(i).as_ref()).collect();
            let mut block = features::build_block(
                &sources,
                &columns,
                &[],
                &self.block.features,
                n_rows,
                Some(features::UNKNOWN_CATEGORY),
            )
            .map_err(|unknown| unknown.in_batch(&self.options.source))?;
            steps.inspect_features(&mut block, &mut inspection, 0, first_row, &mut marks);
            let ids = ids_of(&slice);
            if let Some((_, unique)) = &contract.unique {
                let key_columns = unique
                    .iter()
                    .map(|name| {
                        slice.column_by_name(name).ok_or_else(|| {
                            Error::Usage(format!(
                                "the contract's `table.unique` names `{name}`, which is not a column of {}",
                                self.options.source
                            ))
                        })
                    })
                    .collect::<Result<Vec<&ArrayRef>>>()?;
                keys.extend(row_keys(&key_columns, n_rows).map_err(|problem| {
                    Error::Usage(format!(
                        "the unique columns of {} cannot be compared: {problem}",
                        self.options.source
                    ))
                })?);
            }
            let (block, keep) = steps.set_aside_quarantined(block, &marks);
            if let (Some(keep), Some(schema)) = (&keep, &located.quarantine_schema) {
                quarantined.push(quarantine_batch(schema, &ids, keep, &marks, contract)?);
            }
            let scores = steps.score(block)?;
            inspection.inspect_scores(contract, &scores);
            let output = steps
                .output(&ids, keep.as_ref(), scores, &marks, n_rows)
                .map_err(|e| Error::Internal(format!("cannot assemble the scores of a batch: {e}")))?;
            outputs.push(
                RecordBatch::try_new(Arc::clone(&located.schema), output.columns)
                    .map_err(|e| Error::Internal(format!("cannot assemble the scores of a batch: {e}")))?,
            );
            first_row += n_rows;
        }
        let scores = arrow::compute::concat_batches(&located.schema, &outputs)
            .map_err(|e| Error::Internal(format!("cannot assemble the scores of a batch: {e}")))?;
        let quarantined = match &located.quarantine_schema {
            Some(schema) => Some(
                arrow::compute::concat_batches(schema, &quarantined)
                    .map_err(|e| Error::Internal(format!("cannot assemble the quarantined rows: {e}")))?,
            ),
            None => None,
        };
        // Rule examples, named now while the batch is at hand.
        let wanted: Vec<usize> = inspection
            .tallies
            .iter()
            .flat_map(|t| t.examples.iter().map(|&(_, row)| row))
            .collect();
        let names = name_rows(batch, &located.ids, &wanted);
        let type_mismatches = contract
            .type_rules
            .iter()
            .map(|&(_, feature, kind)| {
                let data_type = batch.schema().field(located.features[feature]).data_type().clone();
                (!is_kind(&data_type, kind)).then(|| data_type.to_string())
            })
            .collect();
        let newest = match contract.freshness.as_ref().map(|f| &f.source) {
            Some(FreshnessSource::Column(column)) => match batch.column_by_name(column) {
                Some(values) => newest_of_column(values, column, &self.options.source)?,
                None => {
                    return Err(Error::Usage(format!(
                        "the contract's freshness column `{column}` is not in {}",
                        self.options.source
                    )));
                }
            },
            _ => None,
        };
        Ok(ScoredBatch {
            scores,
            quarantined,
            inspected: self.inspected(inspection, keys, keys_are_values, &names, type_mismatches, newest),
        })
    }

    /// Scores a stream of batches: their scores in order, and what the
    /// contract saw in all of them.
    pub fn score_all(&self, batches: impl IntoIterator<Item = RecordBatch>) -> Result<(Vec<RecordBatch>, Inspected)> {
        let mut scored = Vec::new();
        let mut seen = self.empty_inspection();
        for batch in batches {
            let done = self.score(&batch)?;
            seen.merge(&done.inspected);
            scored.push(done.scores);
        }
        Ok((scored, seen))
    }

    fn inspected(
        &self,
        inspection: Inspection,
        keys: Vec<u64>,
        keys_are_values: bool,
        names: &BTreeMap<usize, String>,
        type_mismatches: Vec<Option<String>>,
        newest: Option<i64>,
    ) -> Inspected {
        let contract = &self.package.contract;
        let tallies = inspection
            .tallies
            .iter()
            .map(|t| Tally {
                failing: t.failing,
                examples: t
                    .examples
                    .iter()
                    .map(|&(_, row)| names.get(&row).cloned().unwrap_or_default())
                    .collect(),
            })
            .collect();
        Inspected {
            format: INSPECTED_FORMAT.into(),
            rows: inspection.rows,
            rows_with_missing: inspection.rows_with_missing,
            rows_quarantined: inspection.rows_quarantined,
            rows_flagged: inspection.rows_flagged,
            scores_out_of_range: inspection.scores_out_of_range,
            tallies,
            keys,
            keys_are_values,
            type_mismatches,
            newest,
            // Last: the profile consumes the inspection.
            profile: inspection.profile(contract, self.package.model.features(), &self.options.source, true),
        }
    }

    /// The contract's judgement of everything `inspected` saw: rules (types,
    /// nulls, ranges, row count, uniqueness, freshness), guards, drift against
    /// the package's reference, as a command-line run judges its table.
    /// A freshness rule by partition cannot be decided in memory (batches
    /// have no partitions) and fails with that reason.
    pub fn judge(&self, inspected: &Inspected) -> Judgement {
        let contract = &self.package.contract;
        let mut inspection = contract.inspection(self.package.model.features(), contract.score_columns.len());
        inspection.rows = inspected.rows;
        inspection.rows_with_missing = inspected.rows_with_missing;
        inspection.rows_quarantined = inspected.rows_quarantined;
        inspection.rows_flagged = inspected.rows_flagged;
        inspection.scores_out_of_range = inspected.scores_out_of_range;
        // Examples are already names: rule k's i-th is at position (k, i).
        for (k, (tally, seen)) in inspection.tallies.iter_mut().zip(&inspected.tallies).enumerate() {
            tally.failing = seen.failing;
            tally.examples = (0..seen.examples.len()).map(|i| (k, i)).collect();
        }
        let example = |(k, i): (usize, usize)| {
            inspected
                .tallies
                .get(k)
                .and_then(|t| t.examples.get(i))
                .cloned()
                .unwrap_or_default()
        };
        let as_of = self.options.as_of.unwrap_or_else(crate::util::now_seconds);
        let facts = TableFacts {
            rows: inspected.rows,
            types: contract
                .type_rules
                .iter()
                .zip(&inspected.type_mismatches)
                .map(|(&(rule, feature, kind), mismatch)| {
                    let column = &contract.columns[feature];
                    match mismatch {
                        None => (rule, true, format!("`{column}` is {} in every batch", kind.name())),
                        Some(found) => (
                            rule,
                            false,
                            format!("`{column}` is {found} in a batch; the contract says {}", kind.name()),
                        ),
                    }
                })
                .collect(),
            newest: match contract.freshness.as_ref().map(|f| &f.source) {
                None => Err("no freshness rule".into()),
                Some(FreshnessSource::Partition(key)) => Err(format!(
                    "freshness by partition `{key}` cannot be judged in memory: batches have no partitions"
                )),
                Some(FreshnessSource::Column(column)) => newest_fact(column, inspected.newest),
            },
            as_of,
        };
        let unique = contract.unique.as_ref().map(|(_, columns)| {
            let (repeats, values) = contract::duplicate_values(inspected.keys.clone());
            // Keys are the values themselves for one integer column.
            let examples = match inspected.keys_are_values {
                true => values.iter().map(|&v| format!("{}={}", columns[0], v as i64)).collect(),
                false => Vec::new(),
            };
            (repeats, examples)
        });
        judgement_of(
            &self.package,
            &inspection,
            &inspected.profile,
            &facts,
            unique,
            &example,
            true,
        )
    }
}

/// The quarantined rows of a block: their ids and the rules they broke.
fn quarantine_batch(
    schema: &SchemaRef,
    ids: &[ArrayRef],
    keep: &arrow::array::BooleanArray,
    marks: &RowMarks,
    contract: &contract::Contract,
) -> Result<RecordBatch> {
    let internal = |e: arrow::error::ArrowError| Error::Internal(format!("cannot set aside quarantined rows: {e}"));
    let dropped = arrow::compute::not(keep).map_err(internal)?;
    let mut columns: Vec<ArrayRef> = ids
        .iter()
        .map(|id| arrow::compute::filter(id, &dropped))
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    let reasons: StringArray = (0..marks.quarantined.len())
        .filter(|&row| marks.quarantined[row])
        .map(|row| marks.reason_text(row, &contract.rules, contract::Policy::Quarantine))
        .collect();
    columns.push(Arc::new(reasons));
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(internal)
}

/// `customer_id=17` (every id column), or the row's place without ids.
fn name_rows(batch: &RecordBatch, ids: &[usize], rows: &[usize]) -> BTreeMap<usize, String> {
    rows.iter()
        .map(|&row| {
            let name = match ids.is_empty() {
                true => format!("row {row} of a batch of {} rows", batch.num_rows()),
                false => ids
                    .iter()
                    .map(|&c| {
                        let value = arrow::util::display::array_value_to_string(batch.column(c), row)
                            .unwrap_or_else(|_| "?".into());
                        format!("{}={value}", batch.schema().field(c).name())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            };
            (row, name)
        })
        .collect()
}
