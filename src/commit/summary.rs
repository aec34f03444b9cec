//! The numbers a judged run leaves in its ledger record for the trend across
//! runs (`lakescore runs OUT --html`): aggregates the run already computed
//! (its report's judgement, its profile's score sketch), a few hundred
//! bytes, so that drawing a year of nights reads the ledger and nothing
//! else. [`crate::report::RunReport::summary`] makes one.

use serde::{Deserialize, Serialize};

use crate::drift::Status;

/// A judged run in numbers (`summary` in a ledger record).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Rows this run scored (a resumed run's reused partitions excluded).
    pub rows_scored: u64,
    /// Rows scored with flags in `lakescore_flags`.
    pub rows_flagged: u64,
    /// Wall time of the run, to the millisecond (the ledger's instants are
    /// whole seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_seconds: Option<f64>,
    /// The run's `--max-duration` SLA, which the trend draws wall time against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_seconds: Option<u64>,
    /// The first score column's mean and deciles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<ScoreSummary>,
    /// The drift verdict and the feature that matters most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSummary>,
    /// Ids of the contract's rules that failed, then of those that warned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_failed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules_warned: Vec<String>,
    /// Ids of the score guards that failed or warned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards_failed: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards_warned: Vec<String>,
}

/// A score column's distribution, from the run's profile sketch (each
/// quantile within 3.2% of its true value, see [`crate::profile`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSummary {
    pub column: String,
    pub mean: Option<f64>,
    /// The 10th, 20th, …, 90th percentiles (nine values); empty when no
    /// score was finite.
    pub deciles: Vec<f64>,
}

/// The drift of a run, in one line of the trend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftSummary {
    /// The run's drift verdict: the worst status of any column, the score
    /// included.
    pub verdict: Status,
    /// The feature whose drift status is worst, the largest PSI among
    /// equals.
    pub column: String,
    /// That feature's PSI and status, and its thresholds.
    pub psi: f64,
    pub status: Status,
    pub psi_warn: Option<f64>,
    pub psi_fail: Option<f64>,
    /// Every column whose drift warned or failed (the score included), most
    /// drifted first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
}
