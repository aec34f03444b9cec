//! Binary-classifier metrics over (score, label) pairs, accumulated in one
//! streaming pass: AUC and the ROC curve, log loss, Brier score, confusion
//! counts at thresholds, the calibration table, lift and gain by decile.
//!
//! How AUC stays exact in bounded memory: every metric here depends on the
//! scores only through their order and their values, and a model's score is
//! an `f32`. A row is kept as one `u64`: the score's order-preserving bit
//! pattern and the label. Up to [`EXACT_ROWS`] rows are kept (8 bytes each,
//! 128 MiB), sorted once at the end, and every metric is computed from the
//! sorted runs of equal scores: exact, ties counted half as scikit-learn's
//! trapezoidal `roc_auc_score` counts them. Past that, the rows collapse into
//! a histogram of 2^20 buckets of that bit pattern (each bucket a 2^-11
//! relative width of score; 16 MiB), and AUC counts pairs within a bucket as
//! ties; the report then states the largest error that can cause (half the
//! share of positive-negative pairs that share a bucket), which it computes
//! exactly. The ROC curve and the deciles are then drawn on buckets too
//! (a bucket across a decile boundary splits its positives in proportion).
//! Log loss, Brier, calibration and confusion counts are exact in both modes
//! (summed block by block as the rows stream by once the keys are gone, so
//! their last bits depend on the order blocks arrive in).
//!
//! Memory: 8 bytes a row while exact, and as much again for the radix
//! sort's scratch at the end (256 MiB at most, per model evaluated); 16 MiB
//! for the histogram.

use serde::Serialize;

/// Rows kept exactly before the accumulator switches to a histogram.
pub const EXACT_ROWS: usize = 1 << 24;

/// Bits of the 32-bit score key dropped to form a histogram bucket.
const BUCKET_SHIFT: u32 = 12;
const BUCKETS: usize = 1 << (32 - BUCKET_SHIFT);

/// Calibration bins over [0, 1], as scikit-learn's `calibration_curve`
/// (`n_bins=10`, `strategy="uniform"`) makes them.
pub const CALIBRATION_BINS: usize = 10;

/// The most points of the ROC curve a report keeps (for the plot).
const ROC_POINTS: usize = 256;

/// The order-preserving key of a score: the unsigned order of keys is the
/// numeric order of scores (-0 is 0; NaN never gets here).
pub fn order_key(score: f32) -> u32 {
    let bits = if score == 0.0 { 0 } else { score.to_bits() };
    match bits >> 31 {
        1 => !bits,
        _ => bits | 0x8000_0000,
    }
}

/// The score a key stands for.
pub fn score_of(key: u32) -> f32 {
    f32::from_bits(match key >> 31 {
        1 => key & 0x7fff_ffff,
        _ => !key,
    })
}

/// Confusion counts at one threshold: a score at or above it predicts positive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Confusion {
    pub threshold: f64,
    /// Null without rows.
    pub accuracy: Option<f64>,
    pub true_positives: u64,
    pub false_positives: u64,
    pub true_negatives: u64,
    pub false_negatives: u64,
}

/// One calibration bin: `[lower, upper]` (a score on an inner edge belongs to
/// the bin below it, as in scikit-learn).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CalibrationBin {
    pub bin: usize,
    pub lower: f64,
    pub upper: f64,
    pub rows: u64,
    /// Mean score of the bin's rows (scikit-learn's `prob_pred`).
    pub mean_score: Option<f64>,
    /// Share of positives among them (`prob_true`).
    pub positive_rate: Option<f64>,
}

/// One decile of the rows ranked by score, highest first. Rows with a score
/// tied across a decile boundary are split in proportion, so the counts of
/// positives can be fractional.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decile {
    pub decile: usize,
    pub rows: u64,
    pub positives: f64,
    pub response_rate: f64,
    pub lift: f64,
    pub cumulative_gain: f64,
    pub cumulative_lift: f64,
    /// The highest and lowest score among the decile's rows (null past
    /// [`EXACT_ROWS`], where rows are counted by histogram bucket).
    pub score_max: Option<f64>,
    pub score_min: Option<f64>,
}

/// The metrics of one score column against the labels.
#[derive(Debug, Clone, Serialize)]
pub struct BinaryMetrics {
    /// Rows with a label and a score.
    pub rows: u64,
    pub positives: u64,
    /// Rows left out because the model's score was NaN.
    pub rows_without_score: u64,
    /// Null when every row has the same label (AUC is undefined).
    pub auc: Option<f64>,
    /// `exact`, or `histogram` past [`EXACT_ROWS`] rows.
    pub auc_method: &'static str,
    /// The most the reported AUC can differ from the exact one (0 when exact).
    pub auc_error_bound: f64,
    /// Log loss, Brier score and calibration need probabilities: null when a
    /// score lies outside [0, 1].
    pub log_loss: Option<f64>,
    pub brier: Option<f64>,
    pub scores_outside_unit_interval: u64,
    pub confusion: Vec<Confusion>,
    pub calibration: Vec<CalibrationBin>,
    pub deciles: Vec<Decile>,
    /// (false positive rate, true positive rate), from (0, 0) to (1, 1).
    pub roc: Vec<(f64, f64)>,
    pub score_min: Option<f64>,
    pub score_max: Option<f64>,
}

/// Sums that need every row's exact score: kept from the keys in exact mode,
/// added row by row once the keys are gone (a block's, by the worker that
/// scored it, outside the accumulator's lock: [`BlockSums`]).
#[derive(Debug, Clone, Default)]
struct Sums {
    log_loss: f64,
    brier: f64,
    outside_unit: u64,
    /// (rows, positives, score sum) per calibration bin.
    calibration: [(u64, u64, f64); CALIBRATION_BINS],
    /// (true positives, false positives) per threshold.
    predicted_positive: Vec<(u64, u64)>,
}

impl Sums {
    fn new(n_thresholds: usize) -> Sums {
        Sums {
            predicted_positive: vec![(0, 0); n_thresholds],
            ..Sums::default()
        }
    }

    fn merge(&mut self, other: &Sums) {
        self.log_loss += other.log_loss;
        self.brier += other.brier;
        self.outside_unit += other.outside_unit;
        for (a, b) in self.calibration.iter_mut().zip(&other.calibration) {
            a.0 += b.0;
            a.1 += b.1;
            a.2 += b.2;
        }
        for (a, b) in self.predicted_positive.iter_mut().zip(&other.predicted_positive) {
            a.0 += b.0;
            a.1 += b.1;
        }
    }

    /// Adds `negatives` and `positives` rows of score `score`.
    fn add(&mut self, score: f32, negatives: u64, positives: u64, thresholds: &[f64]) {
        let p = f64::from(score);
        let rows = negatives + positives;
        if (0.0..=1.0).contains(&p) {
            if positives > 0 {
                self.log_loss += positives as f64 * row_log_loss(p, true);
            }
            if negatives > 0 {
                self.log_loss += negatives as f64 * row_log_loss(p, false);
            }
            self.brier += positives as f64 * (p - 1.0) * (p - 1.0) + negatives as f64 * p * p;
            let bin = calibration_bin(p);
            let slot = &mut self.calibration[bin];
            slot.0 += rows;
            slot.1 += positives;
            slot.2 += p * rows as f64;
        } else {
            self.outside_unit += rows;
        }
        for (slot, &threshold) in self.predicted_positive.iter_mut().zip(thresholds) {
            if p >= threshold {
                slot.0 += positives;
                slot.1 += negatives;
            }
        }
    }
}

/// scikit-learn's `log_loss` clips probabilities to [eps, 1 - eps] with the
/// machine epsilon of float64.
const LOG_LOSS_EPS: f64 = f64::EPSILON;

/// One row's log loss as scikit-learn 1.9 computes it: the columns
/// [1 - p, p], each clipped to [eps, 1 - eps], and minus the log of the
/// label's.
fn row_log_loss(p: f64, positive: bool) -> f64 {
    let clip = |q: f64| q.clamp(LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS);
    match positive {
        true => -clip(p).ln(),
        false => -clip(1.0 - p).ln(),
    }
}

/// The calibration bin of a probability: the number of inner edges
/// (`k / 10`, computed as numpy's `linspace` does) below it.
fn calibration_bin(p: f64) -> usize {
    let step = 1.0 / CALIBRATION_BINS as f64;
    (1..CALIBRATION_BINS).filter(|&k| k as f64 * step < p).count()
}

/// The accumulator of one score column; merge blocks into it with [`absorb`].
///
/// [`absorb`]: BinaryAccumulator::absorb
#[derive(Debug, Clone)]
pub struct BinaryAccumulator {
    thresholds: Vec<f64>,
    exact_rows: usize,
    /// `key << 1 | label` per row, while exact.
    keys: Vec<u64>,
    /// `[negatives, positives]` per bucket, once past `exact_rows`.
    histogram: Option<Vec<[u64; 2]>>,
    /// Exact while `histogram` is set.
    sums: Option<Sums>,
    rows_without_score: u64,
    min_key: u32,
    max_key: u32,
    rows: u64,
    positives: u64,
}

/// A block's sums, computed before taking the accumulator's lock once it
/// keeps a histogram (the `ln` of every row is the costly part).
pub struct BlockSums(Sums);

impl BlockSums {
    pub fn of(rows: &[u64], thresholds: &[f64]) -> BlockSums {
        let mut sums = Sums::new(thresholds.len());
        for &row in rows {
            let label = row & 1;
            sums.add(score_of((row >> 1) as u32), 1 - label, label, thresholds);
        }
        BlockSums(sums)
    }
}

/// One row for [`BinaryAccumulator::absorb`]: its key and label.
pub fn row_key(score: f32, positive: bool) -> u64 {
    (u64::from(order_key(score)) << 1) | u64::from(positive)
}

impl BinaryAccumulator {
    pub fn new(thresholds: Vec<f64>) -> BinaryAccumulator {
        BinaryAccumulator::with_exact_rows(thresholds, EXACT_ROWS)
    }

    /// As [`new`](Self::new), switching to the histogram past `exact_rows`
    /// rows (the tests make it small).
    pub fn with_exact_rows(thresholds: Vec<f64>, exact_rows: usize) -> BinaryAccumulator {
        BinaryAccumulator {
            thresholds,
            exact_rows,
            keys: Vec::new(),
            histogram: None,
            sums: None,
            rows_without_score: 0,
            min_key: u32::MAX,
            max_key: 0,
            rows: 0,
            positives: 0,
        }
    }

    /// Whether rows are still kept one by one (else: the histogram).
    pub fn is_exact(&self) -> bool {
        self.histogram.is_none()
    }

    /// Adds a block's rows (from [`row_key`]) and the count of its rows
    /// whose score was NaN.
    pub fn absorb(&mut self, rows: &[u64], without_score: u64) {
        self.absorb_with(rows, without_score, None);
    }

    /// As [`absorb`](Self::absorb), with the block's sums when the caller
    /// computed them (for a histogram; ignored while exact).
    pub fn absorb_with(&mut self, rows: &[u64], without_score: u64, block: Option<BlockSums>) {
        self.rows_without_score += without_score;
        self.rows += rows.len() as u64;
        for &row in rows {
            let key = (row >> 1) as u32;
            self.min_key = self.min_key.min(key);
            self.max_key = self.max_key.max(key);
            self.positives += row & 1;
        }
        if self.histogram.is_none() && self.keys.len() + rows.len() <= self.exact_rows {
            self.keys.extend_from_slice(rows);
            return;
        }
        if self.histogram.is_none() {
            self.switch_to_histogram();
        }
        let (histogram, sums) = (self.histogram.as_mut().unwrap(), self.sums.as_mut().unwrap());
        for &row in rows {
            let (key, label) = ((row >> 1) as u32, (row & 1) as usize);
            histogram[(key >> BUCKET_SHIFT) as usize][label] += 1;
        }
        match block {
            Some(BlockSums(block)) => sums.merge(&block),
            None => sums.merge(&BlockSums::of(rows, &self.thresholds).0),
        }
    }

    /// Moves the exact rows into the histogram and their sums.
    fn switch_to_histogram(&mut self) {
        let mut histogram = vec![[0u64; 2]; BUCKETS];
        let mut sums = Sums::new(self.thresholds.len());
        let mut keys = std::mem::take(&mut self.keys);
        radix_sort(&mut keys);
        for run in runs_descending(&keys) {
            histogram[(run.key >> BUCKET_SHIFT) as usize][0] += run.negatives;
            histogram[(run.key >> BUCKET_SHIFT) as usize][1] += run.positives;
            sums.add(score_of(run.key), run.negatives, run.positives, &self.thresholds);
        }
        self.histogram = Some(histogram);
        self.sums = Some(sums);
    }

    /// The metrics of everything absorbed.
    pub fn finish(mut self) -> BinaryMetrics {
        let rows = self.rows;
        let positives = self.positives;
        let negatives = rows - positives;
        let mut walk = Walk::new(rows, positives);
        let (sums, method) = match self.histogram.take() {
            None => {
                let mut keys = std::mem::take(&mut self.keys);
                radix_sort(&mut keys);
                let mut sums = Sums::new(self.thresholds.len());
                for run in runs_descending(&keys) {
                    sums.add(score_of(run.key), run.negatives, run.positives, &self.thresholds);
                    walk.step(run);
                }
                (sums, "exact")
            }
            Some(histogram) => {
                let buckets = histogram.iter().enumerate().rev().filter(|(_, [n, p])| n + p > 0);
                for (bucket, &[negatives, positives]) in buckets {
                    walk.step(Run {
                        key: (bucket as u32) << BUCKET_SHIFT,
                        negatives,
                        positives,
                    });
                }
                (self.sums.take().expect("kept with the histogram"), "histogram")
            }
        };
        let pairs_twice = 2 * u128::from(positives) * u128::from(negatives);
        let auc = (pairs_twice > 0).then(|| walk.auc_twice as f64 / pairs_twice as f64);
        let auc_error_bound = match method {
            "exact" => 0.0,
            _ if pairs_twice > 0 => walk.tied_pairs as f64 / pairs_twice as f64,
            _ => 0.0,
        };
        let probabilities = sums.outside_unit == 0 && rows > 0;
        let step = 1.0 / CALIBRATION_BINS as f64;
        let calibration = sums
            .calibration
            .iter()
            .enumerate()
            .map(|(bin, &(bin_rows, bin_positives, score_sum))| CalibrationBin {
                bin,
                lower: bin as f64 * step,
                upper: if bin + 1 == CALIBRATION_BINS {
                    1.0
                } else {
                    (bin + 1) as f64 * step
                },
                rows: bin_rows,
                mean_score: (bin_rows > 0).then(|| score_sum / bin_rows as f64),
                positive_rate: (bin_rows > 0).then(|| bin_positives as f64 / bin_rows as f64),
            })
            .collect();
        let confusion = self
            .thresholds
            .iter()
            .zip(&sums.predicted_positive)
            .map(|(&threshold, &(tp, fp))| {
                let (fn_, tn) = (positives - tp, negatives - fp);
                Confusion {
                    threshold,
                    accuracy: (rows > 0).then(|| (tp + tn) as f64 / rows as f64),
                    true_positives: tp,
                    false_positives: fp,
                    true_negatives: tn,
                    false_negatives: fn_,
                }
            })
            .collect();
        BinaryMetrics {
            rows,
            positives,
            rows_without_score: self.rows_without_score,
            auc,
            auc_method: method,
            auc_error_bound,
            log_loss: probabilities.then(|| sums.log_loss / rows as f64),
            brier: probabilities.then(|| sums.brier / rows as f64),
            scores_outside_unit_interval: sums.outside_unit,
            confusion,
            calibration: if probabilities { calibration } else { Vec::new() },
            deciles: walk.deciles(method == "exact"),
            roc: walk.roc,
            score_min: (rows > 0).then(|| f64::from(score_of(self.min_key))),
            score_max: (rows > 0).then(|| f64::from(score_of(self.max_key))),
        }
    }
}

/// Rows of one score (or one histogram bucket).
#[derive(Debug, Clone, Copy)]
struct Run {
    key: u32,
    negatives: u64,
    positives: u64,
}

/// Sorts row keys (33 significant bits) by three 11-bit LSD radix passes:
/// linear, and several times faster than a comparison sort at 10M rows.
fn radix_sort(keys: &mut Vec<u64>) {
    const BITS: u32 = 11;
    const MASK: u64 = (1 << BITS) - 1;
    let mut scratch = vec![0u64; keys.len()];
    for pass in 0..3 {
        let shift = pass * BITS;
        let mut starts = vec![0usize; 1 << BITS];
        for &key in keys.iter() {
            starts[((key >> shift) & MASK) as usize] += 1;
        }
        let mut sum = 0;
        for start in starts.iter_mut() {
            (*start, sum) = (sum, sum + *start);
        }
        for &key in keys.iter() {
            let digit = ((key >> shift) & MASK) as usize;
            scratch[starts[digit]] = key;
            starts[digit] += 1;
        }
        std::mem::swap(keys, &mut scratch);
    }
}

/// The runs of equal scores of sorted row keys, highest score first.
fn runs_descending(sorted: &[u64]) -> impl Iterator<Item = Run> + '_ {
    let mut end = sorted.len();
    std::iter::from_fn(move || {
        let key = (*sorted.get(end.checked_sub(1)?)? >> 1) as u32;
        let mut start = end;
        let mut positives = 0;
        while start > 0 && (sorted[start - 1] >> 1) as u32 == key {
            start -= 1;
            positives += sorted[start] & 1;
        }
        let run = Run {
            key,
            negatives: (end - start) as u64 - positives,
            positives,
        };
        end = start;
        Some(run)
    })
}

/// One walk down the runs, highest score first: AUC (as twice the count of
/// correctly ordered positive-negative pairs, ties counting one), the ROC
/// curve, and the positives above each decile boundary.
struct Walk {
    rows: u64,
    positives: u64,
    negatives: u64,
    auc_twice: u128,
    /// Positive-negative pairs within one run (ties, or a bucket's pairs).
    tied_pairs: u128,
    rows_above: u64,
    positives_above: u64,
    negatives_above: u64,
    roc: Vec<(f64, f64)>,
    next_roc_rows: u64,
    boundaries: Vec<u64>,
    /// Positives among the top `boundaries[d]` rows.
    positives_at: Vec<f64>,
    next_boundary: usize,
    /// Per decile (from 1), the highest and lowest score in it.
    score_range: Vec<(Option<u32>, Option<u32>)>,
}

impl Walk {
    fn new(rows: u64, positives: u64) -> Walk {
        Walk {
            rows,
            positives,
            negatives: rows - positives,
            auc_twice: 0,
            tied_pairs: 0,
            rows_above: 0,
            positives_above: 0,
            negatives_above: 0,
            roc: vec![(0.0, 0.0)],
            next_roc_rows: 0,
            boundaries: (0..=10).map(|d| d * rows / 10).collect(),
            positives_at: vec![0.0; 11],
            next_boundary: 1,
            score_range: vec![(None, None); 11],
        }
    }

    fn step(&mut self, run: Run) {
        let (p, n) = (run.positives, run.negatives);
        let in_run = p + n;
        let negatives_below = self.negatives - self.negatives_above - n;
        self.auc_twice += 2 * u128::from(p) * u128::from(negatives_below) + u128::from(p) * u128::from(n);
        self.tied_pairs += u128::from(p) * u128::from(n);
        // The deciles this run has rows in: (rows_above, rows_above + in_run]
        // meets (b[d - 1], b[d]]. Runs come highest first, so the first to
        // reach a decile holds its highest score, the last its lowest.
        for d in 1..=10 {
            let (lo, hi) = (self.boundaries[d - 1], self.boundaries[d]);
            if hi > lo && self.rows_above < hi && self.rows_above + in_run > lo {
                let range = &mut self.score_range[d];
                range.0.get_or_insert(run.key);
                range.1 = Some(run.key);
            }
        }
        // Decile boundaries inside (or at the end of) this run: a tied run
        // gives each side its share of the positives.
        while self.next_boundary <= 10 && self.boundaries[self.next_boundary] <= self.rows_above + in_run {
            let share = (self.boundaries[self.next_boundary] - self.rows_above) as f64 / in_run as f64;
            self.positives_at[self.next_boundary] = self.positives_above as f64 + share * p as f64;
            self.next_boundary += 1;
        }
        self.rows_above += in_run;
        self.positives_above += p;
        self.negatives_above += n;
        // The curve: a point each time another 1/ROC_POINTS of the rows is
        // passed, and at the end.
        if self.rows_above >= self.next_roc_rows || self.rows_above == self.rows {
            let rate = |count: u64, of: u64| if of == 0 { 0.0 } else { count as f64 / of as f64 };
            self.roc.push((
                rate(self.negatives_above, self.negatives),
                rate(self.positives_above, self.positives),
            ));
            self.next_roc_rows = self.rows_above + self.rows.div_ceil(ROC_POINTS as u64).max(1);
        }
    }

    /// Lift and gain by decile, highest scores first; with the score range
    /// when the runs were exact scores (not histogram buckets).
    fn deciles(&self, exact: bool) -> Vec<Decile> {
        if self.rows == 0 {
            return Vec::new();
        }
        let (rows, positives, b, at) = (self.rows, self.positives, &self.boundaries, &self.positives_at);
        let base_rate = positives as f64 / rows as f64;
        (1..=10)
            .map(|d| {
                let decile_rows = b[d] - b[d - 1];
                let decile_positives = at[d] - at[d - 1];
                let response_rate = if decile_rows > 0 {
                    decile_positives / decile_rows as f64
                } else {
                    0.0
                };
                let ratio = |rate: f64| if base_rate > 0.0 { rate / base_rate } else { 0.0 };
                Decile {
                    decile: d,
                    rows: decile_rows,
                    positives: decile_positives,
                    response_rate,
                    lift: ratio(response_rate),
                    cumulative_gain: if positives > 0 { at[d] / positives as f64 } else { 0.0 },
                    cumulative_lift: ratio(if b[d] > 0 { at[d] / b[d] as f64 } else { 0.0 }),
                    score_max: self.score_range[d].0.filter(|_| exact).map(|k| f64::from(score_of(k))),
                    score_min: self.score_range[d].1.filter(|_| exact).map(|k| f64::from(score_of(k))),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics_of(pairs: &[(f32, bool)], exact_rows: usize) -> BinaryMetrics {
        let mut acc = BinaryAccumulator::with_exact_rows(vec![0.5], exact_rows);
        for chunk in pairs.chunks(3) {
            let keys: Vec<u64> = chunk.iter().map(|&(s, y)| row_key(s, y)).collect();
            acc.absorb(&keys, 0);
        }
        acc.finish()
    }

    #[test]
    fn keys_keep_the_order_and_value_of_scores() {
        let values = [-3.5f32, -1e-30, -0.0, 0.0, 1e-30, 0.25, 0.5, 1.0, 7e20];
        for pair in values.windows(2) {
            assert!(order_key(pair[0]) <= order_key(pair[1]), "{pair:?}");
        }
        for v in values {
            assert_eq!(score_of(order_key(v)), if v == 0.0 { 0.0 } else { v });
        }
    }

    /// AUC as the share of positive-negative pairs in order, ties half: the
    /// definition, pair by pair.
    fn auc_by_pairs(pairs: &[(f32, bool)]) -> f64 {
        let (mut good, mut total) = (0.0, 0.0);
        for &(sp, yp) in pairs.iter().filter(|p| p.1) {
            let _ = yp;
            for &(sn, _) in pairs.iter().filter(|p| !p.1) {
                total += 1.0;
                good += if sp > sn {
                    1.0
                } else if sp == sn {
                    0.5
                } else {
                    0.0
                };
            }
        }
        good / total
    }

    fn sample(n: usize, distinct: u32) -> Vec<(f32, bool)> {
        let mut rng = crate::datagen::Rng::new(7);
        (0..n)
            .map(|_| {
                let s = rng.below(u64::from(distinct)) as f32 / distinct as f32;
                (s, rng.uniform() < f64::from(s))
            })
            .collect()
    }

    #[test]
    fn auc_counts_ties_half_and_the_histogram_states_its_bound() {
        let pairs = sample(900, 37);
        let exact = metrics_of(&pairs, usize::MAX);
        assert_eq!(exact.auc_method, "exact");
        assert!((exact.auc.unwrap() - auc_by_pairs(&pairs)).abs() < 1e-12);
        // Forced past the exact rows half way: the same rows, in buckets.
        let bucketed = metrics_of(&pairs, 450);
        assert_eq!(bucketed.auc_method, "histogram");
        // Here every bucket is one score, so the histogram is exact too; the
        // stated bound is the share of tied pairs, which is not zero.
        assert!((bucketed.auc.unwrap() - exact.auc.unwrap()).abs() < 1e-12);
        assert!(bucketed.auc_error_bound > 0.0);
        // Summed row by row rather than score by score: equal to rounding.
        assert!((bucketed.log_loss.unwrap() - exact.log_loss.unwrap()).abs() < 1e-12);
        assert!((bucketed.brier.unwrap() - exact.brier.unwrap()).abs() < 1e-12);
        assert_eq!(bucketed.confusion, exact.confusion);
        for (b, e) in bucketed.calibration.iter().zip(&exact.calibration) {
            assert_eq!((b.rows, b.positive_rate), (e.rows, e.positive_rate));
            assert!((b.mean_score.unwrap_or(0.0) - e.mean_score.unwrap_or(0.0)).abs() < 1e-12);
        }
    }

    #[test]
    fn histogram_auc_is_within_its_bound() {
        // Scores closer than a bucket's width, labels in order: exact AUC 1.
        let pairs: Vec<(f32, bool)> = (0..2000).map(|i| (0.5 + i as f32 * 1e-6, i >= 1000)).collect();
        let exact = metrics_of(&pairs, usize::MAX);
        assert_eq!(exact.auc, Some(1.0));
        let bucketed = metrics_of(&pairs, 10);
        let error = (bucketed.auc.unwrap() - 1.0).abs();
        assert!(
            error > 0.0 && error <= bucketed.auc_error_bound + 1e-15,
            "{error} vs {}",
            bucketed.auc_error_bound
        );
    }

    #[test]
    fn deciles_split_tied_scores_in_proportion() {
        // 20 rows: scores 1.0 (4 rows, 2 positive) then 0.0 (16 rows, 4 positive).
        let mut pairs = vec![(1.0f32, true), (1.0, true), (1.0, false), (1.0, false)];
        pairs.extend((0..16).map(|i| (0.0f32, i < 4)));
        let m = metrics_of(&pairs, usize::MAX);
        // Decile 1 = the top 2 rows, half of the 1.0 run: 1 positive.
        assert_eq!(m.deciles[0].rows, 2);
        assert!((m.deciles[0].positives - 1.0).abs() < 1e-12);
        // Decile 3 = rows 5-6, in the 0.0 run (4 of 16 positive): 0.5.
        assert!((m.deciles[2].positives - 0.5).abs() < 1e-12);
        assert!((m.deciles[9].cumulative_gain - 1.0).abs() < 1e-12);
        let base = 6.0 / 20.0;
        assert!((m.deciles[0].lift - 0.5 / base).abs() < 1e-12);
    }

    #[test]
    fn calibration_puts_edges_in_the_bin_below_and_one_in_the_last() {
        assert_eq!(calibration_bin(0.0), 0);
        assert_eq!(calibration_bin(0.1), 0);
        assert_eq!(calibration_bin(0.1000001), 1);
        // numpy's 3 * 0.1 is 0.30000000000000004: 0.3 is below that edge.
        assert_eq!(calibration_bin(0.3), 2);
        assert_eq!(calibration_bin(1.0), 9);
    }

    /// scikit-learn's own answers at the edges (tests/fixtures/evaluate/probes.json).
    #[test]
    fn edges_agree_with_scikit_learn_probes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/evaluate/probes.json");
        let probes: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let bins = probes["calibration_bin"].as_array().unwrap();
        assert!(bins.len() > 30);
        for probe in bins {
            let p = probe["p"].as_f64().unwrap();
            assert_eq!(calibration_bin(p) as u64, probe["bin"].as_u64().unwrap(), "p = {p:e}");
        }
        let losses = probes["log_loss_float64"].as_array().unwrap();
        assert!(losses.len() > 10);
        for probe in losses {
            let (p, y) = (probe["p"].as_f64().unwrap(), probe["y"].as_u64().unwrap() == 1);
            let want = probe["loss"].as_f64().unwrap();
            let got = row_log_loss(p, y);
            assert!(
                (got - want).abs() <= 1e-12 * want.max(1.0),
                "p = {p:e}, y = {y}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn scores_outside_the_unit_interval_leave_out_the_probability_metrics() {
        let m = metrics_of(&[(2.0, true), (-1.0, false), (0.5, true)], usize::MAX);
        assert_eq!(m.log_loss, None);
        assert_eq!(m.scores_outside_unit_interval, 2);
        assert_eq!(m.auc, Some(1.0));
    }

    #[test]
    fn one_class_has_no_auc() {
        let m = metrics_of(&[(0.2, true), (0.9, true)], usize::MAX);
        assert_eq!(m.auc, None);
        assert_eq!(m.deciles.len(), 10);
    }
}
