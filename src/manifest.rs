//! `lakescore.toml`, a package's manifest, as data: the model's name and
//! version, the artifact and its SHA-256, the data contract, output columns,
//! guards and drift thresholds, and the errors of reading one. Known to the
//! contract (which compiles it) and the package (which reads and writes it),
//! so that neither needs the other's code.
//!
//! ```toml
//! name = "churn"
//! version = "1.2.0"
//! format = "xgboost-json"          # optional: checked against the content
//! artifact = "model.json"
//! sha256 = "9f2c..."               # verified before the artifact is parsed
//! reference = "reference.json"     # a `lakescore profile`, for drift
//!
//! [output]
//! columns = ["churn_probability"]  # names of the score columns
//! range = [0.0, 1.0]               # default: the model's own output range
//!
//! [table]
//! min_rows = 100000
//! unique = ["customer_id"]
//! freshness = { column = "signup_date", max_age = "2d" }   # or partition = "dt"
//!
//! [features.age]
//! column = "age_years"             # the table column the feature reads
//! type = "integer"
//! nullable = false
//! min = 0
//! max = 120
//! policy = "quarantine"            # fail | warn | quarantine | flag
//!
//! [guards]
//! max_missing_share = 0.2
//! max_mean_shift = 0.05
//!
//! [drift]
//! psi_warn = 0.1
//! psi_fail = 0.25
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::drift::Thresholds;

pub const MANIFEST_FILE: &str = "lakescore.toml";

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not a valid package manifest", path.display())]
    Manifest {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("`{}`: {field}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error(
        "artifact `{}` does not match its package: its SHA-256 is {actual}, `{}` says {expected}",
        artifact.display(),
        manifest.display()
    )]
    Checksum {
        artifact: PathBuf,
        manifest: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `lakescore.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    /// `linear`, `xgboost-json`, `xgboost-ubjson`, `lightgbm-text` or `onnx`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// The model's feature names in input order, for an ONNX graph whose one
    /// wide input does not name them (checked against any names it has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_names: Option<Vec<String>>,
    /// The model file, relative to the package folder.
    pub artifact: PathBuf,
    pub sha256: String,
    /// The reference profile, relative to the package folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<PathBuf>,
    #[serde(default)]
    pub output: OutputSpec,
    #[serde(default)]
    pub table: TableSpec,
    #[serde(default)]
    pub features: BTreeMap<String, FeatureSpec>,
    #[serde(default)]
    pub guards: GuardSpec,
    #[serde(default)]
    pub drift: DriftSpec,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Score column names, one per model output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Every score must lie in `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<[f64; 2]>,
}

/// What happens to rows that break a row rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowPolicy {
    /// Nothing is published.
    Fail,
    /// Reported only.
    Warn,
    /// Not scored; written to the quarantine table with the rule's id.
    Quarantine,
    /// Scored, with the rule's id in the `lakescore_flags` column.
    Flag,
}

/// What happens when a table rule is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TablePolicy {
    Fail,
    Warn,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_rows_policy: Option<TablePolicy>,
    /// Columns whose values together must be unique (id columns of the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_policy: Option<TablePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freshness: Option<FreshnessSpec>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreshnessSpec {
    /// A date or timestamp column whose newest value is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Or a Hive partition key (`dt=2026-11-25`) whose newest value is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `90m`, `36h`, `2d`, `1w`.
    pub max_age: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<TablePolicy>,
}

/// The physical kinds a feature column may be required to have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Signed or unsigned integers of any width.
    Integer,
    /// Floating point of any width, or decimals.
    Float,
    /// Any number (integer, float, decimal, boolean).
    Numeric,
    Boolean,
    /// Strings or dictionaries of strings.
    String,
}

impl ColumnKind {
    /// The name the manifest uses (and messages repeat).
    pub fn name(self) -> &'static str {
        match self {
            ColumnKind::Integer => "integer",
            ColumnKind::Float => "float",
            ColumnKind::Numeric => "numeric",
            ColumnKind::Boolean => "boolean",
            ColumnKind::String => "string",
        }
    }
}

/// A category value in a contract: a name, or a number for numeric columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CategoryValue {
    Name(String),
    Number(f64),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    /// The table column the feature is read from (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ColumnKind>,
    /// `false`: every null is a broken row rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nullable: Option<bool>,
    /// A table rule: the share of nulls may not exceed this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_null_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<CategoryValue>>,
    /// The policy of this feature's row rules (default `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RowPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_policy: Option<RowPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_policy: Option<RowPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories_policy: Option<RowPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_share_policy: Option<TablePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub type_policy: Option<TablePolicy>,
    /// Drift thresholds for this feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<Thresholds>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardSpec {
    /// Rows with at least one missing feature may be at most this share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_missing_share: Option<f64>,
    /// The mean score may move at most this far from the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mean_shift: Option<f64>,
    /// The share of scores >= 0.5 may move at most this far from the reference's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_positive_rate_shift: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi_fail: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub js_warn: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub js_fail: Option<f64>,
    /// Thresholds for the score columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Thresholds>,
}

impl DriftSpec {
    /// The global thresholds, defaults filled in.
    pub fn global(&self) -> Thresholds {
        Thresholds {
            psi_warn: self.psi_warn,
            psi_fail: self.psi_fail,
            js_warn: self.js_warn,
            js_fail: self.js_fail,
        }
        .or(Thresholds::DEFAULT)
    }
}

/// Parses `90s`, `15m`, `36h`, `2d`, `1w` into seconds.
pub fn parse_age(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an age such as `36h` or `2d`"))?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h, d or w")),
    };
    number
        .checked_mul(unit_seconds)
        .filter(|&seconds| seconds <= i64::MAX as u64)
        .ok_or_else(|| format!("`{text}` is too long an age"))
}
