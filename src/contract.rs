//! The data contract and guards, compiled from a package's manifest for one
//! model, and the per-thread [`Inspection`] that checks rows and profiles
//! features and scores in the scoring pass itself.
//!
//! Rules come in two kinds. Row rules (`null`, `range`, `categories`) judge
//! each row and carry a [`RowPolicy`]: `fail` (nothing is published),
//! `warn`, `quarantine` (the row is not scored and goes to the quarantine
//! table) or `flag` (scored, its rule ids in `lakescore_flags`). Table rules
//! (`type`, `null_share`, `min_rows`, `unique`, `freshness`) judge the table
//! and are `fail` or `warn`. Guards judge the scores and always fail.
//!
//! Every value is checked before a feature's fill value replaces nulls: the
//! feature block reaching the inspection holds NaN for every missing value.

use serde::Serialize;

use crate::drift::{self, ColumnDrift, Status, Thresholds};
use crate::manifest::{CategoryValue, ColumnKind, Manifest, PackageError, RowPolicy, TablePolicy};
use crate::model::{Feature, FeatureBlock};
use crate::profile::{
    BatchSummary, CategoryAccumulator, ColumnProfile, NumericAccumulator, PROFILE_FORMAT, Role, TableProfile,
};

/// Example rows kept per rule.
pub const EXAMPLES: usize = 5;

/// A rule's identity and settings, as the report shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSpec {
    /// `age.range`, `table.unique`, ...
    pub id: String,
    pub kind: &'static str,
    /// The feature (or `table`).
    pub target: String,
    pub policy: Policy,
    /// What the rule requires, in words.
    pub requirement: String,
}

/// How a row rule tests a value (NaN is missing).
#[derive(Debug, Clone)]
enum RowTest {
    NotNull,
    /// Non-missing values must be within `[min, max]`.
    Range {
        min: f64,
        max: f64,
    },
    /// Non-missing values (category codes, or numbers) must be one of these.
    OneOf(Vec<f64>),
}

#[derive(Debug, Clone)]
struct RowRule {
    rule: usize,
    feature: usize,
    test: RowTest,
    policy: RowPolicy,
}

/// Where a table's freshness is read.
#[derive(Debug, Clone, PartialEq)]
pub enum FreshnessSource {
    /// The newest value of a date or timestamp column.
    Column(String),
    /// The newest value of a Hive partition key.
    Partition(String),
}

#[derive(Debug, Clone)]
pub struct FreshnessRule {
    pub rule: usize,
    pub source: FreshnessSource,
    pub max_age_seconds: u64,
}

/// A compiled contract for one model.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The table column each model feature reads, in feature order.
    pub columns: Vec<String>,
    /// Every rule, in the order reports list them.
    pub rules: Vec<RuleSpec>,
    row_rules: Vec<RowRule>,
    /// (rule, feature, allowed kind)
    pub type_rules: Vec<(usize, usize, ColumnKind)>,
    /// (rule, feature, largest share)
    null_share_rules: Vec<(usize, usize, f64)>,
    pub min_rows: Option<(usize, u64)>,
    /// (rule, columns)
    pub unique: Option<(usize, Vec<String>)>,
    pub freshness: Option<FreshnessRule>,
    /// Names of the score columns the contract judges (profiles, the range,
    /// guards, score drift): the model's, or a model set's champion's.
    pub score_columns: Vec<String>,
    /// Names of every score column the output gets, in order: the judged
    /// ones, then (for a model set) the challengers', never judged.
    pub written_score_columns: Vec<String>,
    /// How many of the features (the first) the contract judges: profiles,
    /// the missing-share guard and drift. All of one model's; a model set's
    /// champion's (the challengers' are decoded and filled, never judged).
    pub judged_features: usize,
    /// Every score must lie in this range.
    pub score_range: Option<(f64, f64)>,
    pub max_missing_share: Option<f64>,
    pub max_mean_shift: Option<f64>,
    pub max_positive_rate_shift: Option<f64>,
    /// Whether scores are compared with the reference's (not for margins).
    pub compare_scores: bool,
    /// Drift thresholds per feature (feature order), and for scores.
    feature_thresholds: Vec<Thresholds>,
    score_thresholds: Thresholds,
}

/// What a broken rule does: a row rule's [`RowPolicy`] or a table rule's
/// [`TablePolicy`], in one type for reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    Fail,
    Warn,
    Quarantine,
    Flag,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Fail => "fail",
            Policy::Warn => "warn",
            Policy::Quarantine => "quarantine",
            Policy::Flag => "flag",
        }
    }
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<RowPolicy> for Policy {
    fn from(policy: RowPolicy) -> Policy {
        match policy {
            RowPolicy::Fail => Policy::Fail,
            RowPolicy::Warn => Policy::Warn,
            RowPolicy::Quarantine => Policy::Quarantine,
            RowPolicy::Flag => Policy::Flag,
        }
    }
}

impl From<TablePolicy> for Policy {
    fn from(policy: TablePolicy) -> Policy {
        match policy {
            TablePolicy::Fail => Policy::Fail,
            TablePolicy::Warn => Policy::Warn,
        }
    }
}

impl Contract {
    /// Adds a rule `<target>.<kind>` to the report's list; returns its index.
    fn add_rule(&mut self, target: &str, kind: &'static str, policy: Policy, requirement: String) -> usize {
        self.rules.push(RuleSpec {
            id: format!("{target}.{kind}"),
            kind,
            target: target.to_string(),
            policy,
            requirement,
        });
        self.rules.len() - 1
    }

    /// Adds a row rule of feature `feature` (named `name`).
    fn add_row_rule(
        &mut self,
        feature: usize,
        name: &str,
        kind: &'static str,
        policy: RowPolicy,
        requirement: String,
        test: RowTest,
    ) {
        let rule = self.add_rule(name, kind, policy.into(), requirement);
        self.row_rules.push(RowRule {
            rule,
            feature,
            test,
            policy,
        });
    }

    /// Compiles the manifest's contract against the model's features.
    /// `manifest_path` names the file in errors.
    pub fn compile(
        manifest: &Manifest,
        manifest_path: &std::path::Path,
        features: &[Feature],
        n_outputs: usize,
        model_range: Option<(f64, f64)>,
    ) -> Result<Contract, PackageError> {
        let invalid = |field: String, problem: String| PackageError::Invalid {
            path: manifest_path.to_path_buf(),
            field,
            problem,
        };
        let mut contract = Contract {
            columns: features.iter().map(|f| f.name.clone()).collect(),
            rules: Vec::new(),
            row_rules: Vec::new(),
            type_rules: Vec::new(),
            null_share_rules: Vec::new(),
            min_rows: None,
            unique: None,
            freshness: None,
            score_columns: manifest
                .output
                .columns
                .clone()
                .unwrap_or_else(|| crate::sink::score_column_names(n_outputs)),
            written_score_columns: Vec::new(),
            judged_features: features.len(),
            score_range: manifest.output.range.map(|[lo, hi]| (lo, hi)).or(model_range),
            max_missing_share: manifest.guards.max_missing_share,
            max_mean_shift: manifest.guards.max_mean_shift,
            max_positive_rate_shift: manifest.guards.max_positive_rate_shift,
            compare_scores: true,
            feature_thresholds: vec![manifest.drift.global(); features.len()],
            score_thresholds: manifest.drift.score.unwrap_or_default().or(manifest.drift.global()),
        };
        contract.written_score_columns = contract.score_columns.clone();
        if let Some((lo, hi)) = contract.score_range
            && (lo.is_nan() || hi.is_nan() || lo > hi)
        {
            return Err(invalid("output.range".into(), format!("[{lo}, {hi}] is empty")));
        }
        for (index, feature) in features.iter().enumerate() {
            let Some(spec) = manifest.features.get(&feature.name) else {
                continue;
            };
            let name = &feature.name;
            let field = |key: &str| format!("features.{name}.{key}");
            if let Some(column) = &spec.column {
                contract.columns[index] = column.clone();
            }
            if let Some(thresholds) = spec.drift {
                contract.feature_thresholds[index] = thresholds.or(manifest.drift.global());
            }
            let default_policy = spec.policy.unwrap_or(RowPolicy::Fail);
            if let Some(kind) = spec.kind {
                let policy = spec.type_policy.unwrap_or(TablePolicy::Fail);
                let rule = contract.add_rule(
                    name,
                    "type",
                    Policy::from(policy),
                    format!("column `{}` is {}", contract.columns[index], kind.name()),
                );
                contract.type_rules.push((rule, index, kind));
            }
            if spec.nullable == Some(false) {
                let policy = spec.null_policy.unwrap_or(default_policy);
                contract.add_row_rule(index, name, "null", policy, "no nulls".into(), RowTest::NotNull);
            }
            if let Some(share) = spec.max_null_share {
                if !(0.0..=1.0).contains(&share) {
                    return Err(invalid(
                        field("max_null_share"),
                        format!("{share} is not a share in [0, 1]"),
                    ));
                }
                let policy = spec.null_share_policy.unwrap_or(TablePolicy::Fail);
                let rule = contract.add_rule(
                    name,
                    "null_share",
                    Policy::from(policy),
                    format!("at most {} nulls", percent(share)),
                );
                contract.null_share_rules.push((rule, index, share));
            }
            if spec.min.is_some() || spec.max.is_some() {
                let (min, max) = (spec.min.unwrap_or(f64::NEG_INFINITY), spec.max.unwrap_or(f64::INFINITY));
                if min.is_nan() || max.is_nan() || min > max {
                    return Err(invalid(field("min"), format!("min {min} is above max {max}")));
                }
                if feature.categories.is_some() {
                    return Err(invalid(
                        field("min"),
                        "a categorical feature has no range; list its allowed `categories`".into(),
                    ));
                }
                let policy = spec.range_policy.unwrap_or(default_policy);
                contract.add_row_rule(
                    index,
                    name,
                    "range",
                    policy,
                    format!("within [{min}, {max}]"),
                    RowTest::Range { min, max },
                );
            }
            if let Some(allowed) = &spec.categories {
                let codes = allowed
                    .iter()
                    .map(|value| category_code(feature, value))
                    .collect::<Result<Vec<f64>, String>>()
                    .map_err(|problem| invalid(field("categories"), problem))?;
                let policy = spec.categories_policy.unwrap_or(default_policy);
                let listed: Vec<String> = allowed.iter().map(category_text).collect();
                contract.add_row_rule(
                    index,
                    name,
                    "categories",
                    policy,
                    format!("one of {}", listed.join(", ")),
                    RowTest::OneOf(codes),
                );
            }
        }
        let table = &manifest.table;
        if let Some(min_rows) = table.min_rows {
            let policy = Policy::from(table.min_rows_policy.unwrap_or(TablePolicy::Fail));
            let rule = contract.add_rule(
                "table",
                "min_rows",
                policy,
                format!("at least {} rows", crate::util::group_thousands(min_rows)),
            );
            contract.min_rows = Some((rule, min_rows));
        }
        if let Some(columns) = &table.unique {
            if columns.is_empty() {
                return Err(invalid("table.unique".into(), "lists no columns".into()));
            }
            let policy = Policy::from(table.unique_policy.unwrap_or(TablePolicy::Fail));
            let rule = contract.add_rule("table", "unique", policy, format!("unique ({})", columns.join(", ")));
            contract.unique = Some((rule, columns.clone()));
        }
        if let Some(freshness) = &table.freshness {
            let source = match (&freshness.column, &freshness.partition) {
                (Some(column), None) => FreshnessSource::Column(column.clone()),
                (None, Some(key)) => FreshnessSource::Partition(key.clone()),
                _ => {
                    return Err(invalid(
                        "table.freshness".into(),
                        "needs exactly one of `column` and `partition`".into(),
                    ));
                }
            };
            let max_age_seconds = crate::manifest::parse_age(&freshness.max_age)
                .map_err(|problem| invalid("table.freshness.max_age".into(), problem))?;
            let what = match &source {
                FreshnessSource::Column(c) => format!("newest `{c}`"),
                FreshnessSource::Partition(k) => format!("newest partition `{k}`"),
            };
            let policy = Policy::from(freshness.policy.unwrap_or(TablePolicy::Fail));
            let rule = contract.add_rule(
                "table",
                "freshness",
                policy,
                format!("{what} at most {} old", freshness.max_age),
            );
            contract.freshness = Some(FreshnessRule {
                rule,
                source,
                max_age_seconds,
            });
        }
        Ok(contract)
    }

    /// Whether rows can be quarantined (then id columns are decoded, so that
    /// the kept and the quarantined rows can be told apart).
    pub fn quarantines(&self) -> bool {
        self.row_rules.iter().any(|r| r.policy == RowPolicy::Quarantine)
    }

    /// Whether the output carries a `lakescore_flags` column.
    pub fn flags(&self) -> bool {
        self.row_rules.iter().any(|r| r.policy == RowPolicy::Flag)
    }

    /// The contract of a model set led by this contract's model: the set
    /// reads `columns` (this model's first, in order), and writes
    /// `written_score_columns`, of which only this model's are judged. The
    /// features that are not this model's get the default drift thresholds
    /// `thresholds` and no rules.
    pub fn for_model_set(
        &self,
        columns: Vec<String>,
        written_score_columns: Vec<String>,
        thresholds: Thresholds,
    ) -> Contract {
        debug_assert!(columns.len() >= self.columns.len() && columns[..self.columns.len()] == self.columns[..]);
        let mut contract = self.clone();
        contract.feature_thresholds.resize(columns.len(), thresholds);
        contract.columns = columns;
        contract.written_score_columns = written_score_columns;
        contract
    }

    /// A new, empty inspection for one worker thread.
    pub fn inspection(&self, features: &[Feature], n_outputs: usize) -> Inspection {
        Inspection {
            tallies: vec![RuleTally::default(); self.rules.len()],
            features: features
                .iter()
                .map(|f| match &f.categories {
                    Some(categories) => FeatureAccumulator::Categorical(CategoryAccumulator::new(categories.len())),
                    None => FeatureAccumulator::Numeric(NumericAccumulator::new(false)),
                })
                .collect(),
            scores: (0..n_outputs).map(|_| NumericAccumulator::new(true)).collect(),
            rows: 0,
            rows_with_missing: 0,
            rows_quarantined: 0,
            rows_flagged: 0,
            scores_out_of_range: 0,
            batch: Vec::with_capacity(features.len()),
            missing: Vec::new(),
            widened: Vec::new(),
        }
    }
}

fn percent(share: f64) -> String {
    format!("{}%", (share * 1e6).round() / 1e4)
}

fn category_text(value: &CategoryValue) -> String {
    match value {
        CategoryValue::Name(name) => format!("`{name}`"),
        CategoryValue::Number(number) => number.to_string(),
    }
}

/// The value a feature block holds for an allowed category.
fn category_code(feature: &Feature, value: &CategoryValue) -> Result<f64, String> {
    match (&feature.categories, value) {
        (Some(categories), CategoryValue::Name(name)) => categories
            .code_of_name(name)
            .ok_or_else(|| format!("`{name}` is not one of the model's {} categories", categories.len())),
        (Some(categories), CategoryValue::Number(number)) => categories
            .code_of_number(*number)
            .ok_or_else(|| format!("{number} is not one of the model's {} categories", categories.len())),
        (None, CategoryValue::Number(number)) => Ok(*number),
        (None, CategoryValue::Name(name)) => Err(format!(
            "`{name}` is a name, but the model reads this feature as a number: list numbers"
        )),
    }
}

/// Failing rows of one rule: how many, and the first few.
#[derive(Debug, Clone, Default)]
pub struct RuleTally {
    pub failing: u64,
    /// (work unit, row within it) of the first failing rows, in table order.
    pub examples: Vec<(usize, usize)>,
}

impl RuleTally {
    fn record(&mut self, unit: usize, row: usize) {
        self.failing += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push((unit, row));
        }
    }

    fn merge(&mut self, other: &RuleTally) {
        self.failing += other.failing;
        self.examples.extend_from_slice(&other.examples);
        self.examples.sort_unstable();
        self.examples.truncate(EXAMPLES);
    }
}

#[derive(Debug, Clone)]
pub enum FeatureAccumulator {
    Numeric(NumericAccumulator),
    Categorical(CategoryAccumulator),
}

/// What the row rules decided for the rows of one batch.
#[derive(Debug, Default)]
pub struct RowMarks {
    /// Rows that are not scored.
    pub quarantined: Vec<bool>,
    /// (row, rule) for each quarantine or flag rule a row broke, by row.
    pub reasons: Vec<(usize, usize)>,
    pub any_quarantined: bool,
    pub any_flagged: bool,
}

impl RowMarks {
    /// The ids of the rules of `policy` a row broke, comma-separated, from
    /// `reasons` (sorted).
    pub fn reason_text(&self, row: usize, rules: &[RuleSpec], policy: Policy) -> Option<String> {
        let start = self.reasons.partition_point(|&(r, _)| r < row);
        let ids: Vec<&str> = self.reasons[start..]
            .iter()
            .take_while(|&&(r, _)| r == row)
            .filter(|&&(_, rule)| rules[rule].policy == policy)
            .map(|&(_, rule)| rules[rule].id.as_str())
            .collect();
        (!ids.is_empty()).then(|| ids.join(","))
    }
}

/// One worker's share of the checks and profiles of a pass.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub tallies: Vec<RuleTally>,
    pub features: Vec<FeatureAccumulator>,
    pub scores: Vec<NumericAccumulator>,
    pub rows: u64,
    pub rows_with_missing: u64,
    pub rows_quarantined: u64,
    pub rows_flagged: u64,
    pub scores_out_of_range: u64,
    /// Nulls and range per feature in the batch being inspected.
    batch: Vec<BatchSummary>,
    /// Which rows of the batch miss a feature (a buffer kept between batches).
    missing: Vec<bool>,
    /// The batch's scores as f64, for the score accumulators (likewise kept).
    widened: Vec<f64>,
}

impl Inspection {
    /// Checks and profiles the features of one batch (NaN = missing), rows
    /// `first_row..` of work unit `unit`, and marks the rows row rules act on.
    pub fn inspect_features(
        &mut self,
        contract: &Contract,
        block: &FeatureBlock,
        unit: usize,
        first_row: usize,
        marks: &mut RowMarks,
    ) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { self.inspect_features_avx2(contract, block, unit, first_row, marks) };
            return;
        }
        self.inspect_features_portable(contract, block, unit, first_row, marks);
    }

    /// The counting loops below vectorise with AVX2; the build targets
    /// baseline x86-64, so this copy is compiled for CPUs that have it.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn inspect_features_avx2(
        &mut self,
        contract: &Contract,
        block: &FeatureBlock,
        unit: usize,
        first_row: usize,
        marks: &mut RowMarks,
    ) {
        self.inspect_features_portable(contract, block, unit, first_row, marks);
    }

    #[inline(always)]
    fn inspect_features_portable(
        &mut self,
        contract: &Contract,
        block: &FeatureBlock,
        unit: usize,
        first_row: usize,
        marks: &mut RowMarks,
    ) {
        let n = block.n_rows;
        self.rows += n as u64;
        let column = |j: usize| &block.values[j * n..(j + 1) * n];
        // Profiling counts each feature's nulls and finds its range, which
        // the rules reuse: most batches need no rule to look at a value.
        self.batch.clear();
        for (j, accumulator) in self.features.iter_mut().enumerate() {
            self.batch.push(match accumulator {
                FeatureAccumulator::Numeric(acc) => acc.add(column(j)),
                FeatureAccumulator::Categorical(acc) => acc.add(column(j)),
            });
        }
        // Only the missing-share guard needs rows with any missing feature,
        // and only in batches where some feature has a null (NaN).
        let judged = &self.batch[..contract.judged_features.min(self.batch.len())];
        if contract.max_missing_share.is_some() && judged.iter().any(|b| b.nulls > 0) {
            self.missing.clear();
            self.missing.resize(n, false);
            for (j, _) in judged.iter().enumerate().filter(|(_, b)| b.nulls > 0) {
                for (m, v) in self.missing.iter_mut().zip(column(j)) {
                    *m |= v.is_nan();
                }
            }
            self.rows_with_missing += self.missing.iter().filter(|&&m| m).count() as u64;
        }

        marks.quarantined.clear();
        marks.quarantined.resize(n, false);
        marks.reasons.clear();
        marks.any_quarantined = false;
        marks.any_flagged = false;
        for rule in &contract.row_rules {
            let tally = &mut self.tallies[rule.rule];
            let values = column(rule.feature);
            let mut broken = |row: usize| {
                tally.record(unit, first_row + row);
                match rule.policy {
                    RowPolicy::Quarantine => {
                        marks.quarantined[row] = true;
                        marks.reasons.push((row, rule.rule));
                    }
                    RowPolicy::Flag => marks.reasons.push((row, rule.rule)),
                    RowPolicy::Fail | RowPolicy::Warn => {}
                }
            };
            // Counting vectorises; most batches break no rule and stop here.
            let batch = self.batch[rule.feature];
            let failing = match &rule.test {
                RowTest::NotNull => batch.nulls as usize,
                RowTest::Range { min, max } if batch.infinite == 0 && batch.min >= *min && batch.max <= *max => 0,
                RowTest::Range { min, max } => values.iter().filter(|&&v| v < *min || v > *max).count(),
                RowTest::OneOf(allowed) => values.iter().filter(|&&v| !v.is_nan() && !allowed.contains(&v)).count(),
            };
            if failing == 0 {
                continue;
            }
            match &rule.test {
                RowTest::NotNull => {
                    for (row, v) in values.iter().enumerate() {
                        if v.is_nan() {
                            broken(row);
                        }
                    }
                }
                RowTest::Range { min, max } => {
                    for (row, &v) in values.iter().enumerate() {
                        if v < *min || v > *max {
                            broken(row);
                        }
                    }
                }
                RowTest::OneOf(allowed) => {
                    for (row, &v) in values.iter().enumerate() {
                        if !v.is_nan() && !allowed.contains(&v) {
                            broken(row);
                        }
                    }
                }
            }
        }
        if marks.reasons.is_empty() {
            return;
        }
        marks.reasons.sort_unstable();
        let quarantined = marks.quarantined.iter().filter(|&&q| q).count();
        self.rows_quarantined += quarantined as u64;
        marks.any_quarantined = quarantined > 0;
        // Flagged: scored rows that broke a flag rule.
        let mut flagged = 0;
        let mut last = usize::MAX;
        for &(row, rule) in &marks.reasons {
            if row != last && !marks.quarantined[row] && contract.rules[rule].policy == Policy::Flag {
                flagged += 1;
                last = row;
            }
        }
        self.rows_flagged += flagged;
        marks.any_flagged = flagged > 0;
    }

    /// Nulls of feature `feature` in the batch last inspected.
    pub fn batch_nulls(&self, feature: usize) -> u64 {
        self.batch.get(feature).map_or(0, |b| b.nulls)
    }

    /// Profiles the scores of the scored rows of a batch.
    pub fn inspect_scores(&mut self, contract: &Contract, scores: &[Vec<f32>]) {
        for (acc, column) in self.scores.iter_mut().zip(scores) {
            self.widened.clear();
            self.widened.extend(column.iter().map(|&s| f64::from(s)));
            let batch = acc.add(&self.widened);
            // The batch's finite range settles most batches without a scan.
            if let Some((lo, hi)) = contract.score_range
                && (batch.infinite > 0 || batch.min < lo || batch.max > hi)
            {
                self.scores_out_of_range += self.widened.iter().filter(|&&s| s < lo || s > hi).count() as u64;
            }
        }
    }

    pub fn merge(&mut self, other: &Inspection) {
        for (a, b) in self.tallies.iter_mut().zip(&other.tallies) {
            a.merge(b);
        }
        for (a, b) in self.features.iter_mut().zip(&other.features) {
            match (a, b) {
                (FeatureAccumulator::Numeric(a), FeatureAccumulator::Numeric(b)) => a.merge(b),
                (FeatureAccumulator::Categorical(a), FeatureAccumulator::Categorical(b)) => a.merge(b),
                _ => unreachable!("workers inspect the same features"),
            }
        }
        for (a, b) in self.scores.iter_mut().zip(&other.scores) {
            a.merge(b);
        }
        self.rows += other.rows;
        self.rows_with_missing += other.rows_with_missing;
        self.rows_quarantined += other.rows_quarantined;
        self.rows_flagged += other.rows_flagged;
        self.scores_out_of_range += other.scores_out_of_range;
    }

    /// The table profile of this pass: features, then scores (when scored).
    pub fn profile(self, contract: &Contract, features: &[Feature], source: &str, scored: bool) -> TableProfile {
        let mut columns = Vec::with_capacity(features.len() + self.scores.len());
        let judged = features.iter().zip(self.features).zip(&contract.columns);
        for ((feature, accumulator), column) in judged.take(contract.judged_features) {
            let column = (column != &feature.name).then_some(column.as_str());
            columns.push(match accumulator {
                FeatureAccumulator::Numeric(acc) => acc.finish(&feature.name, Role::Feature, column),
                FeatureAccumulator::Categorical(acc) => {
                    let names = feature.categories.as_ref().map(|c| c.names()).unwrap_or_default();
                    acc.finish(&feature.name, column, &names)
                }
            });
        }
        if scored {
            for (acc, name) in self.scores.into_iter().zip(&contract.score_columns) {
                columns.push(acc.finish(name, Role::Score, None));
            }
        }
        TableProfile {
            format: PROFILE_FORMAT.into(),
            source: source.to_string(),
            rows: self.rows,
            columns,
        }
    }
}

/// One rule's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RuleResult {
    pub id: String,
    pub kind: &'static str,
    pub target: String,
    pub policy: Policy,
    pub status: Status,
    /// Rows (or, for table rules, items) checked.
    pub checked: u64,
    pub failing: u64,
    pub detail: String,
    /// Ids of the first failing rows (`customer_id=17`).
    pub examples: Vec<String>,
}

/// The status a broken rule gets from its policy.
pub fn broken_status(policy: Policy) -> Status {
    match policy {
        Policy::Fail => Status::Fail,
        Policy::Warn | Policy::Quarantine | Policy::Flag => Status::Warn,
    }
}

/// Every rule's outcome, and the worst of them.
#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    pub verdict: Status,
    pub rules: Vec<RuleResult>,
}

/// One guard's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct GuardResult {
    pub id: &'static str,
    pub status: Status,
    pub value: Option<f64>,
    pub bound: String,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Guards {
    pub verdict: Status,
    pub guards: Vec<GuardResult>,
}

/// The drift table of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub verdict: Status,
    /// The reference profile compared against.
    pub reference: String,
    pub columns: Vec<ColumnDrift>,
}

/// Facts about the table gathered outside the pass (footers, one column).
#[derive(Debug, Clone)]
pub struct TableFacts {
    pub rows: u64,
    /// (rule, passed, detail) for each type rule, decided from the schema.
    pub types: Vec<(usize, bool, String)>,
    /// The newest instant of the freshness source, seconds since the epoch,
    /// and what it was (for the message); or why there is none.
    pub newest: Result<(i64, String), String>,
    /// The run's clock, seconds since the epoch.
    pub as_of: i64,
}

/// The key of a null id. Nulls are not duplicates of each other (as in
/// SQL's UNIQUE), so rows with this key never count as repeats.
pub const NULL_KEY: u64 = 0x9E37_79B9_7F4A_7C15;

/// Duplicated keys: how many rows repeat an earlier row's key, and the
/// positions (in `keys` order) of the first few rows whose key is shared.
pub fn duplicates(keys: &[u64]) -> (u64, Vec<usize>) {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    let repeats = sorted.windows(2).filter(|w| w[0] == w[1] && w[0] != NULL_KEY).count() as u64;
    if repeats == 0 {
        return (0, Vec::new());
    }
    let shared = |key: u64| {
        let start = sorted.partition_point(|&k| k < key);
        key != NULL_KEY && sorted.get(start + 1) == Some(&key)
    };
    let examples = keys
        .iter()
        .enumerate()
        .filter(|(_, k)| shared(**k))
        .map(|(i, _)| i)
        .take(EXAMPLES)
        .collect();
    (repeats, examples)
}

/// Duplicated keys that are the ids themselves (one integer id column):
/// sorts `keys` in place (no copy of a 10M-row column) and returns how many
/// rows repeat an earlier row's id, and the first few repeated ids.
pub fn duplicate_values(mut keys: Vec<u64>) -> (u64, Vec<u64>) {
    use rayon::slice::ParallelSliceMut;
    keys.par_sort_unstable();
    let mut repeats = 0;
    let mut examples = Vec::new();
    for pair in keys.windows(2) {
        if pair[0] == pair[1] && pair[0] != NULL_KEY {
            repeats += 1;
            if examples.len() < EXAMPLES && examples.last() != Some(&pair[0]) {
                examples.push(pair[0]);
            }
        }
    }
    (repeats, examples)
}

/// Judges every rule. `example_ids` turns a (unit, row) position into the
/// row's ids; `unique` is the duplicate count and example positions when
/// the table has a uniqueness rule.
pub fn judge_rules(
    contract: &Contract,
    inspection: &Inspection,
    profile: &TableProfile,
    facts: &TableFacts,
    unique: Option<(u64, Vec<String>)>,
    example_ids: &dyn Fn((usize, usize)) -> String,
) -> Checks {
    let mut results: Vec<Option<RuleResult>> = vec![None; contract.rules.len()];
    let result = |rule: usize, checked: u64, failing: u64, detail: String, examples: Vec<String>| {
        let spec = &contract.rules[rule];
        RuleResult {
            id: spec.id.clone(),
            kind: spec.kind,
            target: spec.target.clone(),
            policy: spec.policy,
            status: if failing > 0 {
                broken_status(spec.policy)
            } else {
                Status::Pass
            },
            checked,
            failing,
            detail,
            examples,
        }
    };
    for rule in &contract.row_rules {
        let tally = &inspection.tallies[rule.rule];
        let spec = &contract.rules[rule.rule];
        let detail = match tally.failing {
            0 => format!("{}: every row", spec.requirement),
            n => format!(
                "{}: {} of {} rows are not ({})",
                spec.requirement,
                crate::util::group_thousands(n),
                crate::util::group_thousands(inspection.rows),
                percent(n as f64 / inspection.rows.max(1) as f64)
            ),
        };
        let examples = tally.examples.iter().map(|&p| example_ids(p)).collect();
        results[rule.rule] = Some(result(rule.rule, inspection.rows, tally.failing, detail, examples));
    }
    for &(rule, feature, largest) in &contract.null_share_rules {
        // (No profile when the run stopped before the pass.)
        let Some(column) = profile.columns.get(feature) else {
            continue;
        };
        let share = column.null_share();
        let detail = format!("{} nulls, at most {} allowed", percent(share), percent(largest));
        results[rule] = Some(result(
            rule,
            column.rows,
            u64::from(share > largest),
            detail,
            Vec::new(),
        ));
    }
    for (rule, passed, detail) in &facts.types {
        results[*rule] = Some(result(*rule, 1, u64::from(!passed), detail.clone(), Vec::new()));
    }
    if let Some((rule, min_rows)) = contract.min_rows {
        let detail = format!(
            "{} rows, at least {} required",
            crate::util::group_thousands(facts.rows),
            crate::util::group_thousands(min_rows)
        );
        results[rule] = Some(result(rule, 1, u64::from(facts.rows < min_rows), detail, Vec::new()));
    }
    if let (Some((rule, columns)), Some((repeats, examples))) = (&contract.unique, unique) {
        let detail = match repeats {
            0 => format!("({}) unique in every row", columns.join(", ")),
            n => format!(
                "{} rows repeat the ({}) of an earlier row",
                crate::util::group_thousands(n),
                columns.join(", ")
            ),
        };
        results[*rule] = Some(result(*rule, facts.rows, repeats, detail, examples));
    }
    if let Some(freshness) = &contract.freshness {
        let (failing, detail) = match &facts.newest {
            Ok((newest, what)) => {
                let age = facts.as_of - newest;
                let stale = age > freshness.max_age_seconds as i64;
                (
                    u64::from(stale),
                    format!(
                        "newest is {what}, {} old at {}",
                        describe_age(age),
                        crate::util::rfc3339_from_epoch(facts.as_of)
                    ),
                )
            }
            Err(problem) => (1, problem.clone()),
        };
        results[freshness.rule] = Some(result(freshness.rule, 1, failing, detail, Vec::new()));
    }
    let rules: Vec<RuleResult> = results.into_iter().flatten().collect();
    Checks {
        verdict: rules.iter().map(|r| r.status).max().unwrap_or(Status::Pass),
        rules,
    }
}

fn describe_age(seconds: i64) -> String {
    match seconds {
        s if s < 0 => format!("{} in the future", describe_age(-s)),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 3 * 86_400 => format!("{:.1}h", s as f64 / 3600.0),
        s => format!("{:.1}d", s as f64 / 86_400.0),
    }
}

/// Judges the guards on the scores of a pass.
pub fn judge_guards(
    contract: &Contract,
    inspection: &Inspection,
    profile: &TableProfile,
    reference: Option<&TableProfile>,
) -> Guards {
    let mut guards = Vec::new();
    let scores: Vec<&ColumnProfile> = profile.columns.iter().filter(|c| c.role == Role::Score).collect();
    let non_finite: u64 = scores.iter().map(|c| c.nulls + c.infinite).sum();
    guards.push(GuardResult {
        id: "scores.finite",
        status: if non_finite > 0 { Status::Fail } else { Status::Pass },
        value: Some(non_finite as f64),
        bound: "0".into(),
        detail: format!("{} NaN or infinite scores", crate::util::group_thousands(non_finite)),
    });
    if let Some((lo, hi)) = contract.score_range {
        let n = inspection.scores_out_of_range;
        guards.push(GuardResult {
            id: "scores.range",
            status: if n > 0 { Status::Fail } else { Status::Pass },
            value: Some(n as f64),
            bound: format!("[{lo}, {hi}]"),
            detail: format!("{} scores outside [{lo}, {hi}]", crate::util::group_thousands(n)),
        });
    }
    if let Some(largest) = contract.max_missing_share {
        let share = inspection.rows_with_missing as f64 / inspection.rows.max(1) as f64;
        guards.push(GuardResult {
            id: "features.missing_share",
            status: if share > largest { Status::Fail } else { Status::Pass },
            value: Some(share),
            bound: format!("<= {}", percent(largest)),
            detail: format!("{} of rows miss at least one feature", percent(share)),
        });
    }
    let reference_score = |name: &str| reference.and_then(|r| r.column(name, Role::Score));
    let mut shift_guard = |id: &'static str, bound: Option<f64>, measure: &dyn Fn(&ColumnProfile) -> Option<f64>| {
        let Some(bound) = bound else { return };
        // A pass that scored no row (all reused, all quarantined) moved nothing.
        for column in scores.iter().filter(|c| c.rows > 0) {
            let current = measure(column);
            let base = reference_score(&column.name).and_then(measure);
            let (status, value, detail) = match (current, base) {
                (Some(c), Some(b)) => {
                    let shift = (c - b).abs();
                    let status = if shift > bound { Status::Fail } else { Status::Pass };
                    (
                        status,
                        Some(shift),
                        format!("`{}`: {c:.6} against the reference's {b:.6}", column.name),
                    )
                }
                (_, None) => (
                    Status::Fail,
                    None,
                    format!("`{}`: the package has no reference to compare with", column.name),
                ),
                (None, Some(_)) => (Status::Fail, None, format!("`{}`: no finite scores", column.name)),
            };
            guards.push(GuardResult {
                id,
                status,
                value,
                bound: format!("<= {bound}"),
                detail,
            });
        }
    };
    shift_guard("scores.mean_shift", contract.max_mean_shift, &|c| c.mean);
    shift_guard(
        "scores.positive_rate_shift",
        contract.max_positive_rate_shift,
        &ColumnProfile::positive_share,
    );
    Guards {
        verdict: guards.iter().map(|g| g.status).max().unwrap_or(Status::Pass),
        guards,
    }
}

/// The drift of every feature and score against the reference.
pub fn judge_drift(contract: &Contract, profile: &TableProfile, reference: &TableProfile, name: &str) -> Drift {
    let mut columns = Vec::new();
    // Features come first in a profile, in the model's order.
    for (index, column) in profile.columns.iter().enumerate() {
        let thresholds = match column.role {
            Role::Feature => contract
                .feature_thresholds
                .get(index)
                .copied()
                .unwrap_or(Thresholds::DEFAULT),
            Role::Score if contract.compare_scores => contract.score_thresholds,
            Role::Score => continue,
        };
        if let Some(base) = reference.column(&column.name, column.role)
            && let Some(drift) = drift::compare(base, column, thresholds)
        {
            columns.push(drift);
        }
    }
    columns.sort_by(|a, b| b.psi.total_cmp(&a.psi));
    Drift {
        verdict: columns.iter().map(|c| c.status).max().unwrap_or(Status::Pass),
        reference: name.to_string(),
        columns,
    }
}

/// The histogram of the first score column, current against reference: 20
/// equal-width bins over both ranges, counted from the sketches (exact to a
/// sketch bucket, 1/16 of an octave).
#[derive(Debug, Clone, Serialize)]
pub struct ScoreHistogram {
    pub column: String,
    pub edges: Vec<f64>,
    pub current: Vec<f64>,
    pub reference: Option<Vec<f64>>,
}

pub fn score_histogram(profile: &TableProfile, reference: Option<&TableProfile>) -> Option<ScoreHistogram> {
    const BINS: usize = 20;
    let current = profile.columns.iter().find(|c| c.role == Role::Score)?;
    let base = reference.and_then(|r| r.column(&current.name, Role::Score));
    let lo = [current.min, base.and_then(|b| b.min)]
        .into_iter()
        .flatten()
        .reduce(f64::min)?;
    let hi = [current.max, base.and_then(|b| b.max)]
        .into_iter()
        .flatten()
        .reduce(f64::max)?;
    let width = if hi > lo { (hi - lo) / BINS as f64 } else { 1.0 };
    let edges: Vec<f64> = (0..=BINS).map(|i| lo + width * i as f64).collect();
    let keys: Vec<u32> = edges[1..BINS].iter().map(|&e| crate::profile::key_of(e)).collect();
    let shares = |column: &ColumnProfile| {
        let counts = column.sketch.as_ref().map(|s| s.counts_in_bins(&keys))?;
        let total: u64 = counts.iter().sum();
        Some(
            counts
                .iter()
                .map(|&n| n as f64 / total.max(1) as f64)
                .collect::<Vec<f64>>(),
        )
    };
    Some(ScoreHistogram {
        column: current.name.clone(),
        edges,
        current: shares(current)?,
        reference: base.and_then(shares),
    })
}
