//! Champion against challengers: how the scores of models run side by side
//! compare, for the report of a run with several `--model`s.
//!
//! Quantiles and agreements come from a sample of the rows' score tuples,
//! kept in bounded memory: every row while there are at most
//! [`SAMPLE_ROWS`], then the [`SAMPLE_ROWS`] rows with the smallest hash (a
//! bottom-k sample). A row's hash mixes its scores, its place in its block
//! and a digest of the whole block, so tied tuples are told apart and the
//! sample is the same rows whatever the thread count or the order blocks
//! arrive in. Counts, means, minima and maxima are over every row (their
//! last bits depend on that order). Rows where a model's score is NaN are
//! left out and counted.

use std::sync::Mutex;

use serde::Serialize;

use crate::model::ModelError;
use crate::model::set::ScoreTap;

/// The most score tuples the comparison keeps.
pub const SAMPLE_ROWS: usize = 1 << 21;

/// The distribution of one model's scores.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreDistribution {
    pub model: String,
    pub column: String,
    pub rows: u64,
    pub mean: f64,
    pub std_dev: f64,
    pub min: f64,
    pub max: f64,
    /// At 1, 5, 10, 25, 50, 75, 90, 95 and 99%, of the sample.
    pub quantiles: Vec<Quantile>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Quantile {
    pub quantile: f64,
    pub score: f64,
}

/// A challenger against the champion.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Agreement {
    pub champion: String,
    pub challenger: String,
    /// Spearman's rank correlation (ties take their average rank).
    pub rank_correlation: Option<f64>,
    /// Of the rows in the champion's top decile (score at or above its 90th
    /// percentile), the share also in the challenger's.
    pub top_decile_agreement: Option<f64>,
    /// Mean of challenger minus champion.
    pub mean_difference: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Comparison {
    pub rows: u64,
    /// Rows left out because a model's score was NaN.
    pub rows_with_nan: u64,
    /// Rows the distributions' quantiles and the agreements were computed on.
    pub sample_rows: usize,
    /// Whether the sample is every row.
    pub exact: bool,
    pub distributions: Vec<ScoreDistribution>,
    pub agreements: Vec<Agreement>,
}

const QUANTILES: [f64; 9] = [0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99];

/// Watches a model set's scores: one score column per model.
pub struct ComparisonTap {
    models: Vec<(String, String)>,
    /// The first output of each model among the set's outputs.
    columns: Vec<usize>,
    sample_rows: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rows: u64,
    rows_with_nan: u64,
    /// Per model: (sum, sum of squares, min, max), over every row.
    moments: Vec<(f64, f64, f64, f64)>,
    /// Sample hashes and, `models` values per row, the tuples.
    hashes: Vec<u64>,
    values: Vec<f32>,
    /// Rows hashing above this are not kept.
    limit: u64,
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl ComparisonTap {
    /// `models`: (model name, score column name) in set order; `columns`:
    /// the position of each one's compared score among the set's outputs.
    pub fn new(models: Vec<(String, String)>, columns: Vec<usize>) -> ComparisonTap {
        ComparisonTap::with_sample_rows(models, columns, SAMPLE_ROWS)
    }

    /// As [`new`](Self::new), keeping at most `sample_rows` tuples.
    pub fn with_sample_rows(models: Vec<(String, String)>, columns: Vec<usize>, sample_rows: usize) -> ComparisonTap {
        let n = models.len();
        ComparisonTap {
            models,
            columns,
            sample_rows: sample_rows.max(1),
            state: Mutex::new(State {
                moments: vec![(0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY); n],
                limit: u64::MAX,
                ..State::default()
            }),
        }
    }

    /// Adds a block of scores (every model's outputs).
    pub fn add(&self, scores: &[Vec<f32>]) {
        let n_rows = scores.first().map_or(0, Vec::len);
        let m = self.columns.len();
        let mut hashes = Vec::with_capacity(n_rows);
        let mut values = Vec::with_capacity(n_rows * m);
        let mut moments = vec![(0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY); m];
        let compared: Vec<&[f32]> = self.columns.iter().map(|&c| scores[c].as_slice()).collect();
        // The block's digest: identical tuples of different blocks (and of
        // one block, by position) hash apart.
        let mut block_seed = 0x6c61_6b65_7363_6f72u64;
        for column in &compared {
            for &s in column.iter() {
                block_seed = mix(block_seed ^ u64::from(s.to_bits()));
            }
        }
        let mut with_nan = 0;
        for row in 0..n_rows {
            if compared.iter().any(|c| c[row].is_nan()) {
                with_nan += 1;
                continue;
            }
            let mut hash = mix(block_seed ^ row as u64);
            for (k, (column, slot)) in compared.iter().zip(moments.iter_mut()).enumerate() {
                let s = column[row];
                hash = mix(hash ^ u64::from(s.to_bits()).wrapping_add(k as u64));
                let v = f64::from(s);
                slot.0 += v;
                slot.1 += v * v;
                slot.2 = slot.2.min(v);
                slot.3 = slot.3.max(v);
                values.push(s);
            }
            hashes.push(hash);
        }
        let mut state = self.state.lock().unwrap();
        state.rows += (n_rows - with_nan) as u64;
        state.rows_with_nan += with_nan as u64;
        for (all, block) in state.moments.iter_mut().zip(&moments) {
            all.0 += block.0;
            all.1 += block.1;
            all.2 = all.2.min(block.2);
            all.3 = all.3.max(block.3);
        }
        let limit = state.limit;
        for (row, &hash) in hashes.iter().enumerate() {
            if hash <= limit {
                state.hashes.push(hash);
                let tuple = &values[row * m..(row + 1) * m];
                state.values.extend_from_slice(tuple);
            }
        }
        if state.hashes.len() > 2 * self.sample_rows {
            state.shrink(m, self.sample_rows);
        }
    }

    /// The comparison of everything added.
    pub fn finish(&self) -> Comparison {
        let mut state = std::mem::take(&mut *self.state.lock().unwrap());
        let m = self.columns.len();
        let exact = state.limit == u64::MAX && state.hashes.len() <= self.sample_rows;
        if !exact {
            state.shrink(m, self.sample_rows);
        }
        // Sample order by hash (then tuple) so that sums are repeatable.
        let mut order: Vec<usize> = (0..state.hashes.len()).collect();
        let tuple = |i: usize| state.values[i * m..(i + 1) * m].iter().map(|v| v.to_bits());
        order.sort_by(|&a, &b| {
            state.hashes[a]
                .cmp(&state.hashes[b])
                .then_with(|| tuple(a).cmp(tuple(b)))
        });
        let columns: Vec<Vec<f64>> = (0..m)
            .map(|k| order.iter().map(|&i| f64::from(state.values[i * m + k])).collect())
            .collect();
        let rows = state.rows;
        let distributions = (0..m)
            .map(|k| {
                let (sum, squares, min, max) = state.moments[k];
                let mean = if rows > 0 { sum / rows as f64 } else { 0.0 };
                let variance = if rows > 1 {
                    ((squares - sum * mean) / (rows - 1) as f64).max(0.0)
                } else {
                    0.0
                };
                let mut sorted = columns[k].clone();
                sorted.sort_by(f64::total_cmp);
                ScoreDistribution {
                    model: self.models[k].0.clone(),
                    column: self.models[k].1.clone(),
                    rows,
                    mean,
                    std_dev: variance.sqrt(),
                    min: if rows > 0 { min } else { 0.0 },
                    max: if rows > 0 { max } else { 0.0 },
                    quantiles: QUANTILES
                        .iter()
                        .map(|&q| Quantile {
                            quantile: q,
                            score: quantile(&sorted, q),
                        })
                        .collect(),
                }
            })
            .collect::<Vec<_>>();
        let champion_ranks = ranks(&columns[0]);
        let agreements = (1..m)
            .map(|k| Agreement {
                champion: self.models[0].0.clone(),
                challenger: self.models[k].0.clone(),
                rank_correlation: pearson(&champion_ranks, &ranks(&columns[k])),
                top_decile_agreement: top_decile_agreement(&columns[0], &columns[k]),
                mean_difference: distributions[k].mean - distributions[0].mean,
            })
            .collect();
        Comparison {
            rows,
            rows_with_nan: state.rows_with_nan,
            sample_rows: columns.first().map_or(0, Vec::len),
            exact,
            distributions,
            agreements,
        }
    }
}

impl State {
    /// Keeps the `k` rows of smallest hash. Rows of equal hash have equal
    /// scores (the hash covers them), so which of the tied rows at the
    /// boundary stay does not change the sample's values.
    fn shrink(&mut self, m: usize, k: usize) {
        if self.hashes.len() <= k {
            return;
        }
        let mut order: Vec<usize> = (0..self.hashes.len()).collect();
        order.sort_unstable_by_key(|&i| self.hashes[i]);
        order.truncate(k);
        self.limit = self.limit.min(self.hashes[*order.last().expect("k > 0")]);
        let hashes = order.iter().map(|&i| self.hashes[i]).collect();
        let values = order
            .iter()
            .flat_map(|&i| self.values[i * m..(i + 1) * m].iter().copied())
            .collect();
        (self.hashes, self.values) = (hashes, values);
    }
}

impl ScoreTap for ComparisonTap {
    fn tap(&self, _extras: &crate::model::FeatureBlock, scores: &[Vec<f32>]) -> Result<(), ModelError> {
        self.add(scores);
        Ok(())
    }
}

/// numpy's default (linear) quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let position = q * (sorted.len() - 1) as f64;
    let (below, fraction) = (position.floor() as usize, position.fract());
    match sorted.get(below + 1) {
        Some(&above) => sorted[below] + fraction * (above - sorted[below]),
        None => sorted[below],
    }
}

/// Ranks from 1, ties given their average rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let average = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = average;
        }
        start = end;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len() as f64;
    if x.len() < 2 {
        return None;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

fn top_decile_agreement(champion: &[f64], challenger: &[f64]) -> Option<f64> {
    let cut = |values: &[f64]| {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        quantile(&sorted, 0.9)
    };
    let (a, b) = (cut(champion), cut(challenger));
    let top: Vec<usize> = (0..champion.len()).filter(|&i| champion[i] >= a).collect();
    (!top.is_empty()).then(|| top.iter().filter(|&&i| challenger[i] >= b).count() as f64 / top.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap_of(rows: &[(f32, f32)]) -> Comparison {
        tap_of_blocks(&rows.chunks(7).collect::<Vec<_>>())
    }

    fn tap_of_blocks(blocks: &[&[(f32, f32)]]) -> Comparison {
        let models = vec![("a".into(), "score_a".into()), ("b".into(), "score_b".into())];
        let tap = ComparisonTap::with_sample_rows(models, vec![0, 1], 1000);
        for block in blocks {
            tap.add(&[block.iter().map(|r| r.0).collect(), block.iter().map(|r| r.1).collect()]);
        }
        tap.finish()
    }

    #[test]
    fn identical_models_agree_and_reversed_ones_do_not() {
        let same: Vec<(f32, f32)> = (0..100).map(|i| (i as f32, i as f32)).collect();
        let c = tap_of(&same);
        assert!(c.exact);
        assert_eq!(c.agreements[0].rank_correlation, Some(1.0));
        assert_eq!(c.agreements[0].top_decile_agreement, Some(1.0));
        let reversed: Vec<(f32, f32)> = (0..100).map(|i| (i as f32, -(i as f32))).collect();
        let c = tap_of(&reversed);
        assert!((c.agreements[0].rank_correlation.unwrap() + 1.0).abs() < 1e-12);
        assert_eq!(c.agreements[0].top_decile_agreement, Some(0.0));
        assert_eq!(
            c.distributions[0].quantiles[4],
            Quantile {
                quantile: 0.5,
                score: 49.5
            }
        );
    }

    #[test]
    fn tied_tuples_stay_within_the_sample_and_nan_rows_are_counted() {
        // One score everywhere: every tuple ties, yet the sample is bounded.
        let constant = vec![(0.25f32, 0.5f32); 20_000];
        let c = tap_of(&constant);
        assert!(!c.exact);
        assert!(c.sample_rows <= 1100, "{}", c.sample_rows);
        assert_eq!(c.distributions[0].mean, 0.25);
        let with_nan = tap_of(&[(0.1, f32::NAN), (0.2, 0.3), (0.4, 0.5)]);
        assert_eq!((with_nan.rows, with_nan.rows_with_nan), (2, 1));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
    }

    #[test]
    fn the_sample_is_the_same_whatever_the_order_of_blocks() {
        let rows: Vec<(f32, f32)> = (0..25_000u32)
            .map(|i| ((i % 1013) as f32, (i % 997) as f32 + (i / 3) as f32 * 1e-3))
            .collect();
        let blocks: Vec<&[(f32, f32)]> = rows.chunks(64).collect();
        let forward = tap_of_blocks(&blocks);
        let backward = tap_of_blocks(&blocks.iter().rev().copied().collect::<Vec<_>>());
        assert!(!forward.exact);
        assert!((1000..1100).contains(&forward.sample_rows), "{}", forward.sample_rows);
        assert_eq!(forward.agreements, backward.agreements);
        assert_eq!(forward.distributions[0].quantiles, backward.distributions[0].quantiles);
    }
}
