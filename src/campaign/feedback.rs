//! `lakescore feedback`: outcome tables (id, arm, converted, timestamp) update
//! the policy's Beta posteriors (alpha += conversions, beta += sends without
//! one) into its next version, which records the update in its history.
//!
//! Nothing is dropped silently: outcomes of an id already seen (the first,
//! in table order, counts), of an arm the policy does not have, or with a
//! null id or `converted`, are counted and reported. Outcomes with a null arm
//! are the holdout's (customers who got no variant): their conversion rate is
//! reported as the baseline and leaves the posteriors alone. The same outcome
//! files are never applied twice: their digest is in the history.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::table::{self, Wanted};
use crate::bandit::IdKey;
use crate::bandit::policy::{HistoryEntry, Policy, PolicyFile};
use crate::cancel::CancelToken;
use crate::error::{Error, Result};
use crate::util::{rfc3339_from_epoch, rfc3339_utc};

/// The outcome tables' column names.
#[derive(Debug, Clone)]
pub struct OutcomeColumns {
    pub id: String,
    pub arm: String,
    pub converted: String,
    pub timestamp: String,
}

/// One arm's part of the update.
#[derive(Debug, Clone, Serialize)]
pub struct ArmFeedback {
    pub name: String,
    pub sends: u64,
    pub conversions: u64,
    pub conversion_rate: Option<f64>,
    pub alpha: f64,
    pub beta: f64,
    /// The posterior mean, alpha / (alpha + beta).
    pub posterior_mean: f64,
    pub share_before: f64,
    pub share_after: f64,
}

/// What `feedback` did.
#[derive(Debug, Clone, Serialize)]
pub struct FeedbackReport {
    pub command: &'static str,
    pub campaign: String,
    pub from_version: u64,
    pub to_version: u64,
    pub outcomes: Vec<PathBuf>,
    pub outcome_rows: u64,
    pub arms: Vec<ArmFeedback>,
    pub holdout_sends: u64,
    pub holdout_conversions: u64,
    pub duplicates: u64,
    pub unknown_arms: u64,
    /// The unknown arm names, with their counts (at most 20).
    pub unknown_arm_names: Vec<(String, u64)>,
    /// Rows whose id or `converted` is null.
    pub missing_values: u64,
    /// Rows whose timestamp is null (counted, not left out).
    pub missing_timestamps: u64,
    /// Rows whose `policy_version` (when the table has one) is not the
    /// policy's current version (counted, not left out: an arm's rate does
    /// not depend on the version that sent it).
    pub other_versions: u64,
    pub earliest: Option<String>,
    pub latest: Option<String>,
    pub written: PathBuf,
}

/// Reads `outcomes` and returns the policy's next version with the report
/// (whose `written` the caller fills in).
pub fn feedback(
    policy_file: &PolicyFile,
    outcomes: &[PathBuf],
    columns: &OutcomeColumns,
    now: SystemTime,
    cancel: &CancelToken,
) -> Result<(Policy, FeedbackReport)> {
    let policy = &policy_file.policy;
    let mut files = Vec::new();
    for path in outcomes {
        files.extend(table::open(path)?);
    }
    // A file is known by the digest of its bytes, whatever its name or
    // the order the tables are given in: one applied before is refused.
    let mut digests: Vec<String> = Vec::with_capacity(files.len());
    for file in &files {
        let digest = table::content_digest(file)?;
        if let Some(applied) = policy.history.iter().find(|h| h.outcome_files.contains(&digest)) {
            return Err(Error::Usage(format!(
                "outcome file `{}` was already applied: policy `{}` version {} counted it (its history says so); \
                 applying it again would count its conversions twice",
                file.path.display(),
                policy_file.path.display(),
                applied.version
            )));
        }
        if digests.contains(&digest) {
            return Err(Error::Usage(format!(
                "outcome file `{}` is given twice (the same content under two names)",
                file.path.display()
            )));
        }
        digests.push(digest);
    }
    digests.sort();
    let arm_index: BTreeMap<&str, usize> = policy
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let n = policy.arms.len();
    let (mut sends, mut conversions) = (vec![0u64; n], vec![0u64; n]);
    let (mut holdout_sends, mut holdout_conversions) = (0u64, 0u64);
    let (mut duplicates, mut missing_values, mut missing_timestamps, mut rows) = (0u64, 0u64, 0u64, 0u64);
    let mut other_versions = 0u64;
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut seen: HashSet<IdKey> = HashSet::new();
    let (mut earliest, mut latest): (Option<i64>, Option<i64>) = (None, None);
    let wanted = [
        Wanted {
            name: &columns.id,
            role: "outcome id",
            required: true,
        },
        Wanted {
            name: &columns.arm,
            role: "outcome arm",
            required: true,
        },
        Wanted {
            name: &columns.converted,
            role: "outcome",
            required: true,
        },
        Wanted {
            name: &columns.timestamp,
            role: "outcome timestamp",
            required: true,
        },
        // Outcome tables joined from `allocate`'s output carry the version.
        Wanted {
            name: "policy_version",
            role: "outcome",
            required: false,
        },
    ];
    table::for_each_batch(&files, &wanted, cancel, |at, batch| {
        let [Some(ids), Some(arms), Some(converted), Some(times), versions] = batch else {
            unreachable!("required columns are there")
        };
        // Counted when it is a number (null: unknown, not another version).
        if let Some(versions) = versions.as_ref().filter(|v| crate::features::is_numeric(v.data_type())) {
            let versions = table::numbers(versions, at, "outcome", "policy_version")?;
            other_versions += versions
                .iter()
                .filter(|&&v| !v.is_nan() && v != policy.version as f64)
                .count() as u64;
        }
        let ids = table::ids(ids, at, "outcome id", &columns.id)?;
        let arms = table::strings(arms, at, "outcome arm", &columns.arm)?;
        let converted = table::flags(converted, at, "outcome", &columns.converted)?;
        let times = table::seconds(times, at, "outcome timestamp", &columns.timestamp)?;
        for (((id, arm), converted), time) in ids.into_iter().zip(arms).zip(converted).zip(times) {
            rows += 1;
            match time {
                Some(t) => {
                    earliest = Some(earliest.map_or(t, |e| e.min(t)));
                    latest = Some(latest.map_or(t, |l| l.max(t)));
                }
                None => missing_timestamps += 1,
            }
            let (Some(id), Some(converted)) = (id, converted) else {
                missing_values += 1;
                continue;
            };
            if !seen.insert(id) {
                duplicates += 1;
                continue;
            }
            match arm {
                None => {
                    holdout_sends += 1;
                    holdout_conversions += u64::from(converted);
                }
                Some(name) => match arm_index.get(name.as_str()) {
                    Some(&k) => {
                        sends[k] += 1;
                        conversions[k] += u64::from(converted);
                    }
                    None => *unknown.entry(name).or_default() += 1,
                },
            }
        }
        Ok(())
    })?;
    let shares_before = policy.shares();
    let mut next = policy.clone();
    next.version += 1;
    for (k, arm) in next.arms.iter_mut().enumerate() {
        arm.alpha += conversions[k] as f64;
        arm.beta += (sends[k] - conversions[k]) as f64;
    }
    let shares_after = next.shares();
    let unknown_arms: u64 = unknown.values().sum();
    let outcomes_absolute: Vec<PathBuf> = outcomes
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    next.history.push(HistoryEntry {
        version: next.version,
        updated_at: rfc3339_utc(now),
        outcomes: outcomes_absolute.clone(),
        outcome_files: digests,
        sends: sends.clone(),
        conversions: conversions.clone(),
        holdout_sends,
        holdout_conversions,
        duplicates,
        unknown_arms,
        missing_values,
        posteriors: next.arms.iter().map(|a| (a.alpha, a.beta)).collect(),
        shares: shares_after.clone(),
    });
    let mut unknown_arm_names: Vec<(String, u64)> = unknown.into_iter().collect();
    unknown_arm_names.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    unknown_arm_names.truncate(20);
    let report = FeedbackReport {
        command: "feedback",
        campaign: policy.campaign.clone(),
        from_version: policy.version,
        to_version: next.version,
        outcomes: outcomes_absolute,
        outcome_rows: rows,
        arms: next
            .arms
            .iter()
            .enumerate()
            .map(|(k, arm)| ArmFeedback {
                name: arm.name.clone(),
                sends: sends[k],
                conversions: conversions[k],
                conversion_rate: (sends[k] > 0).then(|| conversions[k] as f64 / sends[k] as f64),
                alpha: arm.alpha,
                beta: arm.beta,
                posterior_mean: arm.alpha / (arm.alpha + arm.beta),
                share_before: shares_before[k],
                share_after: shares_after[k],
            })
            .collect(),
        holdout_sends,
        holdout_conversions,
        duplicates,
        unknown_arms,
        unknown_arm_names,
        missing_values,
        missing_timestamps,
        other_versions,
        earliest: earliest.map(rfc3339_from_epoch),
        latest: latest.map(rfc3339_from_epoch),
        written: PathBuf::new(),
    };
    Ok((next, report))
}

/// The table `feedback` prints.
pub fn render(report: &FeedbackReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "campaign `{}`: version {} -> {} from {} outcome rows, written to `{}`",
        report.campaign,
        report.from_version,
        report.to_version,
        report.outcome_rows,
        report.written.display()
    );
    let _ = writeln!(
        out,
        "{:<20} {:>9} {:>11} {:>8} {:>10} {:>10} {:>8} {:>8}",
        "arm", "sends", "conversions", "rate", "alpha", "beta", "share", "next"
    );
    for arm in &report.arms {
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>11} {:>8} {:>10} {:>10} {:>8.4} {:>8.4}",
            arm.name,
            arm.sends,
            arm.conversions,
            arm.conversion_rate.map_or("—".into(), |r| format!("{r:.4}")),
            arm.alpha,
            arm.beta,
            arm.share_before,
            arm.share_after
        );
    }
    let _ = writeln!(
        out,
        "holdout: {} sends, {} conversions; left out: {} duplicate ids, {} unknown arms{}, {} with a null id or outcome",
        report.holdout_sends,
        report.holdout_conversions,
        report.duplicates,
        report.unknown_arms,
        match report.unknown_arm_names.is_empty() {
            true => String::new(),
            false => format!(
                " ({})",
                report
                    .unknown_arm_names
                    .iter()
                    .map(|(n, c)| format!("`{n}` {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        report.missing_values
    );
    out
}
