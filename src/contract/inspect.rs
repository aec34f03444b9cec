//! Inspecting a pass: each worker's [`Inspection`] checks the row rules on
//! every block, counts and profiles features and scores, and marks the rows
//! quarantine and flag rules act on; inspections merge after the pass.

use super::*;

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
    pub(super) batch: Vec<BatchSummary>,
    /// Which rows of the batch miss a feature (a buffer kept between batches).
    pub(super) missing: Vec<bool>,
    /// The batch's scores as f64, for the score accumulators (likewise kept).
    pub(super) widened: Vec<f64>,
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
