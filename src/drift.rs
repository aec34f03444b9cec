//! Drift: how far a run's column profiles moved from the reference's, as the
//! population stability index (PSI) and the Jensen–Shannon distance over the
//! reference's bins, judged against warn and fail thresholds.
//!
//! Numeric bins are the reference's decile bins (see [`crate::profile`]) plus
//! one bin for null or non-finite values; categorical bins are the
//! reference's categories, one for every other value and one for nulls. Both
//! measures use shares floored at [`SHARE_FLOOR`] so that an empty bin on one
//! side gives a large, finite PSI rather than infinity. With ten bins, two
//! samples of a million rows from one distribution give a PSI near 1e-5,
//! four orders of magnitude under the customary 0.1 warning.

use serde::{Deserialize, Serialize};

use crate::profile::{ColumnProfile, Role};
use crate::util::short_number;

/// The smallest share a bin is given in PSI and JS (the customary 1e-4).
pub const SHARE_FLOOR: f64 = 1e-4;

/// Warn and fail thresholds for one column (any may be absent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub psi_warn: Option<f64>,
    pub psi_fail: Option<f64>,
    pub js_warn: Option<f64>,
    pub js_fail: Option<f64>,
}

impl Thresholds {
    /// The customary PSI bands: above 0.1 look, above 0.25 act.
    pub const DEFAULT: Thresholds = Thresholds {
        psi_warn: Some(0.1),
        psi_fail: Some(0.25),
        js_warn: Some(0.1),
        js_fail: None,
    };

    /// `self`, with each threshold it leaves out taken from `fallback`.
    pub fn or(self, fallback: Thresholds) -> Thresholds {
        Thresholds {
            psi_warn: self.psi_warn.or(fallback.psi_warn),
            psi_fail: self.psi_fail.or(fallback.psi_fail),
            js_warn: self.js_warn.or(fallback.js_warn),
            js_fail: self.js_fail.or(fallback.js_fail),
        }
    }
}

/// pass, warn or fail: the outcome of a rule, a guard or a drift measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One row of the drift table.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnDrift {
    pub name: String,
    /// `feature` or `score`.
    pub kind: Role,
    pub psi: f64,
    pub js: f64,
    pub status: Status,
    pub psi_warn: Option<f64>,
    pub psi_fail: Option<f64>,
    pub js_warn: Option<f64>,
    pub js_fail: Option<f64>,
    pub reference_mean: Option<f64>,
    pub current_mean: Option<f64>,
    pub reference_null_share: f64,
    pub current_null_share: f64,
    /// How many bins the measures were taken over (the null bin included).
    pub bins: usize,
    /// The two distributions side by side, for the report's charts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distribution: Option<Distribution>,
}

/// The reference's and the run's shares of rows over the same bins, as a
/// chart draws them: a numeric column's drift bins (and nulls), or a
/// categorical column's most frequent categories on either side (then every
/// other value, and nulls).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Distribution {
    /// What each bin holds, for people: `< 12.5`, `12.5–20`, `>= 80`,
    /// `null or ±inf`; a category's name, `other`, `null`.
    pub labels: Vec<String>,
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Categories a chart shows (the rest count as `other`).
const CHART_CATEGORIES: usize = 12;

/// The distributions of `reference` and `current` a chart compares: the
/// bins the measures use for a numeric column; for a categorical one, the
/// [`CHART_CATEGORIES`] categories with the largest share on either side (so
/// that a category the reference never saw shows by name).
pub fn distribution(reference: &ColumnProfile, current: &ColumnProfile) -> Option<Distribution> {
    if let Some(categories) = &reference.categories {
        return Some(category_distribution(reference, categories, current));
    }
    let (reference_shares, current_shares) = bin_shares(reference, current)?;
    let labels = match &reference.bins {
        Some(bins) => {
            let mut labels = Vec::with_capacity(bins.edges.len() + 2);
            for i in 0..=bins.edges.len() {
                labels.push(match (i.checked_sub(1).map(|j| bins.edges[j]), bins.edges.get(i)) {
                    (None, Some(hi)) => format!("< {}", short_number(*hi)),
                    (Some(lo), Some(hi)) => format!("{}–{}", short_number(lo), short_number(*hi)),
                    (Some(lo), None) => format!(">= {}", short_number(lo)),
                    (None, None) => "all values".to_string(),
                });
            }
            labels.push("null or ±inf".into());
            labels
        }
        // A reference of nulls only.
        None => vec!["values".into(), "null or ±inf".into()],
    };
    Some(Distribution {
        labels,
        reference: reference_shares,
        current: current_shares,
    })
}

fn category_distribution(
    reference: &ColumnProfile,
    categories: &crate::profile::CategoryCounts,
    current: &ColumnProfile,
) -> Distribution {
    let empty = Default::default();
    let current_categories = current.categories.as_ref().unwrap_or(&empty);
    let total = |profile: &ColumnProfile| profile.rows.max(1) as f64;
    let (reference_total, current_total) = (total(reference), total(current));
    let mut names: Vec<(&String, f64)> = categories
        .counts
        .keys()
        .chain(current_categories.counts.keys())
        .map(|name| {
            let share = |counts: &crate::profile::CategoryCounts, total: f64| {
                counts.counts.get(name).copied().unwrap_or(0) as f64 / total
            };
            (
                name,
                share(categories, reference_total).max(share(current_categories, current_total)),
            )
        })
        .collect();
    names.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    names.dedup_by(|a, b| a.0 == b.0);
    names.truncate(CHART_CATEGORIES);
    let side = |profile: &ColumnProfile, counts: &crate::profile::CategoryCounts, total: f64| {
        let mut shares: Vec<f64> = names
            .iter()
            .map(|(name, _)| counts.counts.get(*name).copied().unwrap_or(0) as f64 / total)
            .collect();
        let nulls = profile.nulls as f64 / total;
        let shown: f64 = shares.iter().sum();
        shares.push((1.0 - shown - nulls).max(0.0));
        shares.push(nulls);
        shares
    };
    let mut labels: Vec<String> = names.iter().map(|(name, _)| (*name).clone()).collect();
    labels.extend(["other".to_string(), "null".to_string()]);
    Distribution {
        reference: side(reference, categories, reference_total),
        current: side(current, current_categories, current_total),
        labels,
    }
}

/// Bin shares of `reference` and `current` over the reference's bins, or
/// `None` when the reference has no bins to compare over (an empty column).
pub fn bin_shares(reference: &ColumnProfile, current: &ColumnProfile) -> Option<(Vec<f64>, Vec<f64>)> {
    let (reference_counts, current_counts) = if let Some(bins) = &reference.bins {
        let mut reference_counts = bins.counts.clone();
        reference_counts.push(reference.nulls + reference.infinite);
        let mut current_counts = match &current.sketch {
            Some(sketch) => sketch.counts_in_bins(&bins.keys),
            None => vec![0; bins.keys.len() + 1],
        };
        current_counts.push(current.nulls + current.infinite);
        (reference_counts, current_counts)
    } else if let Some(categories) = &reference.categories {
        let empty = Default::default();
        let current_categories = current.categories.as_ref().unwrap_or(&empty);
        let mut reference_counts: Vec<u64> = categories.counts.values().copied().collect();
        reference_counts.push(categories.other);
        reference_counts.push(reference.nulls);
        let mut current_counts: Vec<u64> = categories
            .counts
            .keys()
            .map(|name| current_categories.counts.get(name).copied().unwrap_or(0))
            .collect();
        let known: u64 = current_counts.iter().sum();
        let current_total: u64 = current_categories.counts.values().sum::<u64>() + current_categories.other;
        current_counts.push(current_total - known);
        current_counts.push(current.nulls);
        (reference_counts, current_counts)
    } else if reference.rows > 0 && reference.nulls + reference.infinite == reference.rows {
        // A reference column of nulls only: one bin of nulls, one of values.
        let current_values = current.rows - current.nulls - current.infinite;
        (
            vec![0, reference.rows],
            vec![current_values, current.nulls + current.infinite],
        )
    } else {
        return None;
    };
    Some((shares(&reference_counts), shares(&current_counts)))
}

fn shares(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts
        .iter()
        .map(|&n| if total == 0 { 0.0 } else { n as f64 / total as f64 })
        .collect()
}

/// Population stability index: sum of (c - r) ln(c / r) over bins.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    reference
        .iter()
        .zip(current)
        .map(|(&r, &c)| {
            let (r, c) = (r.max(SHARE_FLOOR), c.max(SHARE_FLOOR));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen–Shannon distance with base-2 logarithms (in [0, 1]), as scipy's
/// `jensenshannon(p, q, base=2)` on the floored, renormalised shares.
pub fn js_distance(reference: &[f64], current: &[f64]) -> f64 {
    let floor = |v: &[f64]| {
        let floored: Vec<f64> = v.iter().map(|&x| x.max(SHARE_FLOOR)).collect();
        let total: f64 = floored.iter().sum();
        floored.into_iter().map(|x| x / total).collect::<Vec<f64>>()
    };
    let (p, q) = (floor(reference), floor(current));
    let kl_to_mean = |a: &[f64], b: &[f64]| -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| {
                let m = 0.5 * (x + y);
                if x > 0.0 { x * (x / m).log2() } else { 0.0 }
            })
            .sum()
    };
    let divergence = 0.5 * kl_to_mean(&p, &q) + 0.5 * kl_to_mean(&q, &p);
    divergence.max(0.0).sqrt()
}

/// The drift of one column against its reference; `None` when either side
/// has no rows (a resumed run that reused every partition scores none: there
/// is nothing to compare, which is not a drift).
pub fn compare(reference: &ColumnProfile, current: &ColumnProfile, thresholds: Thresholds) -> Option<ColumnDrift> {
    if current.rows == 0 || reference.rows == 0 {
        return None;
    }
    let (r, c) = bin_shares(reference, current)?;
    let psi = psi(&r, &c);
    let js = js_distance(&r, &c);
    let over = |value: f64, bound: Option<f64>| bound.is_some_and(|b| value > b);
    let status = if over(psi, thresholds.psi_fail) || over(js, thresholds.js_fail) {
        Status::Fail
    } else if over(psi, thresholds.psi_warn) || over(js, thresholds.js_warn) {
        Status::Warn
    } else {
        Status::Pass
    };
    Some(ColumnDrift {
        name: current.name.clone(),
        kind: current.role,
        psi,
        js,
        status,
        psi_warn: thresholds.psi_warn,
        psi_fail: thresholds.psi_fail,
        js_warn: thresholds.js_warn,
        js_fail: thresholds.js_fail,
        reference_mean: reference.mean,
        current_mean: current.mean,
        reference_null_share: reference.null_share(),
        current_null_share: current.null_share(),
        bins: r.len(),
        distribution: distribution(reference, current),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datagen::Rng;
    use crate::profile::NumericAccumulator;

    fn normal_profile(seed: u64, n: usize, mean: f64, scale: f64) -> ColumnProfile {
        let mut rng = Rng::new(seed);
        let values: Vec<f64> = (0..n).map(|_| rng.normal(mean, 10.0) * scale).collect();
        let mut acc = NumericAccumulator::new(false);
        acc.add(&values);
        acc.finish("x", Role::Feature, None)
    }

    #[test]
    fn measures_match_hand_computed_values() {
        let r = [0.5, 0.5];
        let c = [0.25, 0.75];
        let expected_psi = (0.25 - 0.5) * (0.5f64).ln() + (0.75 - 0.5) * (1.5f64).ln();
        assert!((psi(&r, &c) - expected_psi).abs() < 1e-15);
        // scipy.spatial.distance.jensenshannon([.5,.5],[.25,.75], base=2)
        assert!((js_distance(&r, &c) - 0.22089576884901735).abs() < 1e-4);
        assert_eq!(psi(&r, &r), 0.0);
        assert_eq!(js_distance(&r, &r), 0.0);
        assert!(js_distance(&[1.0, 0.0], &[0.0, 1.0]) > 0.99);
    }

    #[test]
    fn same_distribution_does_not_fire_and_a_shift_does() {
        let reference = normal_profile(1, 200_000, 50.0, 1.0);
        let same = normal_profile(2, 2_000_000, 50.0, 1.0);
        let drift = compare(&reference, &same, Thresholds::DEFAULT).unwrap();
        assert_eq!(drift.status, Status::Pass, "{drift:?}");
        assert!(drift.psi < 1e-3 && drift.js < 1e-2, "{drift:?}");

        let shifted = normal_profile(3, 2_000_000, 56.0, 1.0);
        assert_eq!(
            compare(&reference, &shifted, Thresholds::DEFAULT).unwrap().status,
            Status::Fail
        );
        // A unit change (x100) is as far as it gets.
        let rescaled = normal_profile(4, 100_000, 50.0, 100.0);
        let drift = compare(&reference, &rescaled, Thresholds::DEFAULT).unwrap();
        assert!(drift.psi > 5.0 && drift.js > 0.8, "{drift:?}");
    }

    #[test]
    fn an_emptied_column_drifts_through_its_null_bin() {
        let reference = normal_profile(1, 10_000, 50.0, 1.0);
        let mut acc = NumericAccumulator::new(false);
        acc.add(&[f64::NAN; 10_000]);
        let emptied = acc.finish("x", Role::Feature, None);
        let drift = compare(&reference, &emptied, Thresholds::DEFAULT).unwrap();
        assert_eq!(drift.status, Status::Fail);
        assert_eq!(drift.current_null_share, 1.0);
    }

    #[test]
    fn a_numeric_distribution_shows_the_shift_over_the_drift_bins() {
        let reference = normal_profile(1, 100_000, 50.0, 1.0);
        let shifted = normal_profile(2, 100_000, 60.0, 1.0);
        let drift = compare(&reference, &shifted, Thresholds::DEFAULT).unwrap();
        let d = drift.distribution.expect("numeric columns have a distribution");
        assert_eq!(d.labels.len(), drift.bins);
        assert_eq!((d.reference.len(), d.current.len()), (drift.bins, drift.bins));
        assert!(d.labels[0].starts_with("< ") && d.labels[d.labels.len() - 2].starts_with(">= "));
        assert_eq!(d.labels.last().map(String::as_str), Some("null or ±inf"));
        // Deciles of the reference: about a tenth each; the shifted run piles into the top bin.
        assert!(
            d.reference[..d.reference.len() - 1]
                .iter()
                .all(|&s| s > 0.05 && s < 0.2),
            "{d:?}"
        );
        assert!(d.current[d.current.len() - 2] > 0.4, "{d:?}");
        for shares in [&d.reference, &d.current] {
            assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        }
    }

    #[test]
    fn a_category_only_the_run_has_shows_by_name() {
        use crate::profile::CategoryAccumulator;
        let names: Vec<String> = ["red", "green", "blue"].iter().map(|s| s.to_string()).collect();
        let profile = |codes: &[f64]| {
            let mut acc = CategoryAccumulator::new(names.len());
            acc.add(codes);
            acc.finish("colour", None, &names)
        };
        let reference = profile(&[0.0, 0.0, 1.0, 1.0, f64::NAN]);
        let current = profile(&[0.0, 2.0, 2.0, 2.0, 2.0, 2.0, 1.0, f64::NAN]);
        let d = distribution(&reference, &current).unwrap();
        assert_eq!(d.labels, ["blue", "green", "red", "other", "null"]);
        let close = |got: &[f64], want: &[f64]| got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-12);
        assert!(close(&d.reference, &[0.0, 0.4, 0.4, 0.0, 0.2]), "{d:?}");
        assert!(close(&d.current, &[0.625, 0.125, 0.125, 0.0, 0.125]), "{d:?}");
    }
}
