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
//!
//! Three steps, three files: compiling the contract (here), inspecting the
//! pass's blocks ([`inspect`]), judging the merged inspections ([`judge`]).

mod inspect;
mod judge;

pub use inspect::{FeatureAccumulator, Inspection, RowMarks, RuleTally};
pub use judge::*;

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
