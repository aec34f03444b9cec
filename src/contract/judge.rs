//! Judging a pass: the merged inspection, the run's profile and the table's
//! facts against the contract's rules, guards and drift thresholds.

use super::*;

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
