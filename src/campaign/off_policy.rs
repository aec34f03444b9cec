//! `lakescore evaluate-policy`: what conversion rate a candidate policy would
//! have had among the customers outside the holdout, estimated from the
//! assignments a logging policy made (the output of `allocate`, with each
//! row's propensity) and their outcomes, without sending a single email.
//! (The candidate's own holdout share does not enter: the holdout gets no
//! arm under any policy.) One night's assignments with that night's outcomes:
//! an id's first outcome counts, as in `feedback`; later ones, and ids
//! assigned twice, are counted and left out.
//!
//! Each logged row i (held-out rows aside) has its arm a_i, the logging
//! policy's propensity mu_i, its reward r_i (1 if the customer converted,
//! 0 otherwise, or without an outcome) and the candidate's probability
//! pi_i of the same arm (its share; 0 for an arm it lacks). With weights
//! w_i = pi_i / mu_i over n rows:
//! - IPS = sum(w_i r_i) / n, standard error sd(w_i r_i) / sqrt(n);
//! - self-normalised IPS = sum(w_i r_i) / sum(w_i), standard error by the
//!   delta method, sqrt(sum(w_i^2 (r_i - SNIPS)^2)) / sum(w_i) (with r in
//!   {0, 1}: sum(w^2 r) (1 - 2 SNIPS) + SNIPS^2 sum(w^2), in one pass);
//! - the effective sample size (sum w_i)^2 / sum(w_i^2);
//! - 95% intervals as estimate ± 1.96 standard errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::table::{self, Wanted};
use crate::bandit::IdKey;
use crate::bandit::policy::PolicyFile;
use crate::cancel::CancelToken;
use crate::error::{Error, Result};

/// The seed of the ids' hashes that find repeated assignments.
const ASSIGNMENT_SEED: u64 = 0x6f70_655f_6964_7321;

/// The two-sided 95% quantile of the standard normal.
const Z_95: f64 = 1.959_963_984_540_054;

/// An estimate with its standard error and 95% interval.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub std_error: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl Estimate {
    fn new(value: f64, std_error: f64) -> Estimate {
        Estimate {
            value,
            std_error,
            ci_low: value - Z_95 * std_error,
            ci_high: value + Z_95 * std_error,
        }
    }
}

/// What `evaluate-policy` estimated.
#[derive(Debug, Clone, Serialize)]
pub struct OffPolicyReport {
    pub command: &'static str,
    pub candidate: PathBuf,
    pub campaign: String,
    pub candidate_version: u64,
    /// The candidate's share of each arm.
    pub candidate_shares: Vec<(String, f64)>,
    pub assignments: PathBuf,
    /// Logged rows used (held-out rows left out).
    pub rows: u64,
    pub holdout_rows: u64,
    /// Logged rows with no outcome (reward 0).
    pub rows_without_outcome: u64,
    /// Ids assigned more than once (the first assignment counts).
    pub duplicate_assignments: u64,
    /// Logged rows whose arm the candidate lacks (weight 0).
    pub rows_arm_unknown_to_candidate: u64,
    pub duplicate_outcomes: u64,
    /// The logging policy's own conversion rate.
    pub logged_rate: f64,
    pub ips: Estimate,
    pub snips: Estimate,
    pub effective_sample_size: f64,
    pub max_weight: f64,
}

/// Estimates `candidate`'s conversion rate from the logged `assignments`
/// and the `outcomes` (id and converted columns).
pub fn evaluate_policy(
    candidate: &PolicyFile,
    assignments: &Path,
    outcomes: &[PathBuf],
    id_column: &str,
    converted_column: &str,
    cancel: &CancelToken,
) -> Result<OffPolicyReport> {
    let policy = &candidate.policy;
    let shares = policy.shares();
    let share_of: HashMap<&str, f64> = policy
        .arms
        .iter()
        .map(|a| a.name.as_str())
        .zip(shares.iter().copied())
        .collect();

    // Outcomes by id: the first outcome of an id counts, as in `feedback`.
    let mut rewards: HashMap<IdKey, bool> = HashMap::new();
    let mut duplicate_outcomes = 0u64;
    for path in outcomes {
        let files = table::open(path)?;
        let wanted = [
            Wanted {
                name: id_column,
                role: "outcome id",
                required: true,
            },
            Wanted {
                name: converted_column,
                role: "outcome",
                required: true,
            },
        ];
        table::for_each_batch(&files, &wanted, cancel, |at, batch| {
            let [Some(ids), Some(converted)] = batch else {
                unreachable!("required columns are there")
            };
            let ids = table::ids(ids, at, "outcome id", id_column)?;
            let converted = table::flags(converted, at, "outcome", converted_column)?;
            for (id, converted) in ids.into_iter().zip(converted) {
                if let (Some(id), Some(converted)) = (id, converted) {
                    match rewards.entry(id) {
                        std::collections::hash_map::Entry::Occupied(_) => duplicate_outcomes += 1,
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(converted);
                        }
                    }
                }
            }
            Ok(())
        })?;
    }

    let files = table::open(assignments)?;
    let wanted = [
        Wanted {
            name: id_column,
            role: "assignment id",
            required: true,
        },
        Wanted {
            name: "arm",
            role: "assignment",
            required: true,
        },
        Wanted {
            name: "propensity",
            role: "assignment",
            required: true,
        },
        Wanted {
            name: "holdout",
            role: "assignment",
            required: true,
        },
    ];
    let (mut n, mut holdout_rows, mut without_outcome, mut unknown_arm) = (0u64, 0u64, 0u64, 0u64);
    let (mut sum_wr, mut sum_wr2, mut sum_w, mut sum_w2, mut sum_r, mut max_weight) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0f64);
    // Ids seen, by a 64-bit hash (8 bytes a row; a collision would only
    // count one row as a repeat).
    let mut assigned: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut duplicate_assignments = 0u64;
    table::for_each_batch(&files, &wanted, cancel, |at, batch| {
        let [Some(ids), Some(arms), Some(propensities), Some(holdouts)] = batch else {
            unreachable!("required columns are there")
        };
        let ids = table::ids(ids, at, "assignment id", id_column)?;
        let arms = table::strings(arms, at, "assignment", "arm")?;
        let holdouts = table::flags(holdouts, at, "assignment", "holdout")?;
        let mu = table::numbers(propensities, at, "assignment", "propensity")?;
        for (i, (((id, arm), holdout), mu)) in ids.into_iter().zip(arms).zip(holdouts).zip(mu).enumerate() {
            if holdout == Some(true) {
                holdout_rows += 1;
                continue;
            }
            let (Some(id), Some(arm)) = (id, arm) else {
                return Err(Error::Usage(format!(
                    "assignment {} has no id or no arm but is not held out",
                    at.row(i)
                )));
            };
            if !(mu > 0.0 && mu <= 1.0) {
                return Err(Error::Usage(format!(
                    "assignment {} has propensity `{mu}`; propensities of logged arms are in (0, 1]",
                    at.row(i)
                )));
            }
            if !assigned.insert(id.hash_with(ASSIGNMENT_SEED)) {
                duplicate_assignments += 1;
                continue;
            }
            let r = match rewards.get(&id) {
                Some(&converted) => f64::from(u8::from(converted)),
                None => {
                    without_outcome += 1;
                    0.0
                }
            };
            let pi = match share_of.get(arm.as_str()) {
                Some(&share) => share,
                None => {
                    unknown_arm += 1;
                    0.0
                }
            };
            let w = pi / mu;
            n += 1;
            sum_r += r;
            sum_w += w;
            sum_w2 += w * w;
            sum_wr += w * r;
            sum_wr2 += (w * r) * (w * r);
            max_weight = max_weight.max(w);
        }
        Ok(())
    })?;
    if n == 0 {
        return Err(Error::Usage(format!(
            "`{}` holds no logged assignments outside the holdout",
            assignments.display()
        )));
    }
    let nf = n as f64;
    let ips = sum_wr / nf;
    let ips_variance = if n > 1 {
        (sum_wr2 - nf * ips * ips).max(0.0) / (nf - 1.0)
    } else {
        0.0
    };
    let snips = if sum_w > 0.0 { sum_wr / sum_w } else { 0.0 };
    // r is 0 or 1, so w^2 r^2 = w^2 r: sum(w^2 (r - s)^2) = sum(w^2 r) (1 - 2s) + s^2 sum(w^2).
    let snips_se = match sum_w > 0.0 {
        true => (sum_wr2 * (1.0 - 2.0 * snips) + snips * snips * sum_w2).max(0.0).sqrt() / sum_w,
        false => 0.0,
    };
    Ok(OffPolicyReport {
        command: "evaluate-policy",
        candidate: candidate.path.clone(),
        campaign: policy.campaign.clone(),
        candidate_version: policy.version,
        candidate_shares: policy.arms.iter().map(|a| a.name.clone()).zip(shares).collect(),
        assignments: assignments.to_path_buf(),
        rows: n,
        holdout_rows,
        rows_without_outcome: without_outcome,
        duplicate_assignments,
        rows_arm_unknown_to_candidate: unknown_arm,
        duplicate_outcomes,
        logged_rate: sum_r / nf,
        ips: Estimate::new(ips, (ips_variance / nf).sqrt()),
        snips: Estimate::new(snips, snips_se),
        effective_sample_size: if sum_w2 > 0.0 { sum_w * sum_w / sum_w2 } else { 0.0 },
        max_weight,
    })
}

/// The lines `evaluate-policy` prints.
pub fn render(report: &OffPolicyReport) -> String {
    let line = |name: &str, e: &Estimate| {
        format!(
            "{name:<6} {:.6}  (95% CI {:.6} .. {:.6}, standard error {:.6})\n",
            e.value, e.ci_low, e.ci_high, e.std_error
        )
    };
    let mut out = format!(
        "candidate `{}` version {} on {} logged rows ({} held out, {} without an outcome, {} with an arm the \
         candidate lacks)\nlogged conversion rate {:.6}\n",
        report.campaign,
        report.candidate_version,
        report.rows,
        report.holdout_rows,
        report.rows_without_outcome,
        report.rows_arm_unknown_to_candidate,
        report.logged_rate
    );
    out.push_str(&line("IPS", &report.ips));
    out.push_str(&line("SNIPS", &report.snips));
    out.push_str(&format!(
        "effective sample size {:.1} of {} (largest weight {:.3})\n",
        report.effective_sample_size, report.rows, report.max_weight
    ));
    out
}
