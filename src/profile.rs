//! Profiles: compact, mergeable summaries of a table's columns (features and
//! scores), built in the scoring pass and stored as the drift reference.
//!
//! A numeric column keeps exact counts, min, max and sum, and a quantile
//! sketch: a histogram over the column's values keyed by the top 16 bits of
//! each value's total-order bit pattern (sign, exponent, 4 mantissa bits), so
//! every bucket spans 1/16 of a power of two (a quantile is within 3.2% of
//! its true value), and values nearer zero than 2^-20 share zero's bucket
//! (which bounds the buckets a column can fill). The key is one shift, which
//! keeps profiling cheap enough to run on every row, and buckets of two
//! profiles line up exactly, so merging is adding counts: the profile of a
//! table's parts merged equals the profile of the whole.
//!
//! The drift bins are derived from the sketch: edges at bucket boundaries near
//! the deciles, so the count of any profile's values in a bin is exact, and a
//! run's sketch gives its counts in the reference's bins without another pass.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a profile file says it is.
pub const PROFILE_FORMAT: &str = "lakescore-profile/1";

/// Bits of the 64-bit order key dropped to form a bucket key.
const KEY_SHIFT: u32 = 48;
/// Values nearer zero than this count as zero.
const TINY: f64 = 1.0 / (1u64 << 20) as f64;
/// Number of distinct bucket keys.
const KEY_SPACE: u32 = 1 << (64 - KEY_SHIFT);
/// Distinct categories kept per column; the rest are counted as `other`.
pub const MAX_CATEGORIES: usize = 1000;
/// Drift bins a numeric reference aims for (deciles).
const TARGET_BINS: usize = 10;

/// The bucket key of `x` (finite): monotone in `x`.
#[inline]
pub fn key_of(x: f64) -> u32 {
    key_of_bits(x.to_bits())
}

/// [`key_of`] on a value's bits, branch-free so that it vectorises; a NaN
/// or infinite value gets [`NO_KEY`].
///
/// A bucket is the value's sign with the top bits of its magnitude (exponent
/// and 4 mantissa bits). Magnitudes below [`TINY`] all fall in zero's bucket
/// and the others count up from it on each side, so that the keys of a
/// column's values are a short range even when they cross zero.
#[inline(always)]
fn key_of_bits(bits: u64) -> u32 {
    let magnitude = bits & !(1 << 63);
    let negative = bits >> 63 == 1;
    // (Wrapping: the lanes of tiny and non-finite values are replaced below.)
    let steps = ((magnitude >> KEY_SHIFT) as u32)
        .wrapping_sub(TINY_STEP)
        .wrapping_add(1);
    let steps = if magnitude < TINY.to_bits() { 0 } else { steps };
    let key = if negative {
        ZERO_KEY.wrapping_sub(steps)
    } else {
        ZERO_KEY.wrapping_add(steps)
    };
    if magnitude >= f64::INFINITY.to_bits() {
        NO_KEY
    } else {
        key
    }
}

/// The magnitude bucket of [`TINY`], the first one with a key of its own.
const TINY_STEP: u32 = (TINY.to_bits() >> KEY_SHIFT) as u32;
/// The key of 0.0 (and of every value nearer zero than [`TINY`]); it sits
/// in the middle of the key space.
const ZERO_KEY: u32 = KEY_SPACE / 2;

/// The smallest value whose bucket key is `key`.
pub fn key_lower_bound(key: u32) -> f64 {
    let steps = key.abs_diff(ZERO_KEY);
    if steps == 0 {
        return (-TINY).next_up();
    }
    let bucket = u64::from(steps - 1 + TINY_STEP);
    if key > ZERO_KEY {
        f64::from_bits(bucket << KEY_SHIFT)
    } else {
        // The most negative value of the bucket: its largest magnitude.
        -f64::from_bits(((bucket + 1) << KEY_SHIFT) - 1)
    }
}

/// Counts of values per bucket key over a window of keys.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(into = "StoredSketch", try_from = "StoredSketch")]
pub struct Sketch {
    /// The key of `counts[0]`.
    offset: u32,
    counts: Vec<u64>,
}

/// A sketch as stored: counts from `offset` on, each run of `n` empty
/// buckets written as `-n`, so that a sketch is a few kilobytes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredSketch {
    offset: u32,
    counts: Vec<i64>,
}

impl From<Sketch> for StoredSketch {
    fn from(sketch: Sketch) -> StoredSketch {
        let sketch = sketch.trimmed();
        let mut counts = Vec::new();
        let mut zeros = 0i64;
        for &n in &sketch.counts {
            if n == 0 {
                zeros += 1;
                continue;
            }
            if zeros > 0 {
                counts.push(-zeros);
                zeros = 0;
            }
            counts.push(n as i64);
        }
        StoredSketch {
            offset: sketch.offset,
            counts,
        }
    }
}

impl TryFrom<StoredSketch> for Sketch {
    type Error = String;

    fn try_from(stored: StoredSketch) -> Result<Sketch, String> {
        let mut counts = Vec::new();
        for n in stored.counts {
            match n {
                n if n >= 0 => counts.push(n as u64),
                gap => counts.extend(std::iter::repeat_n(0, gap.unsigned_abs() as usize)),
            }
        }
        if u64::from(stored.offset) + counts.len() as u64 > u64::from(KEY_SPACE) {
            return Err(format!("a sketch runs past the last bucket ({KEY_SPACE})"));
        }
        Ok(Sketch {
            offset: stored.offset,
            counts,
        })
    }
}

impl Sketch {
    /// Grows the window to hold `key`, with room to spare so that growing is
    /// rare, then counts it.
    #[cold]
    fn add_outside(&mut self, key: u32, n: u64) {
        const SLACK: u32 = 64;
        if self.counts.is_empty() {
            self.offset = key.saturating_sub(SLACK);
            self.counts = vec![0; ((key - self.offset) + SLACK).min(KEY_SPACE - self.offset) as usize];
        } else if key < self.offset {
            let new_offset = key.saturating_sub(SLACK);
            let mut counts = vec![0; (self.offset - new_offset) as usize];
            counts.extend_from_slice(&self.counts);
            self.offset = new_offset;
            self.counts = counts;
        } else {
            let end = (key + SLACK).min(KEY_SPACE - 1) + 1;
            self.counts.resize((end - self.offset) as usize, 0);
        }
        self.counts[(key - self.offset) as usize] += n;
    }

    pub fn merge(&mut self, other: &Sketch) {
        for (i, &n) in other.counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let key = other.offset + i as u32;
            match self.counts.get_mut(key.wrapping_sub(self.offset) as usize) {
                Some(count) => *count += n,
                None => self.add_outside(key, n),
            }
        }
    }

    /// (key, count) of every non-empty bucket, in key order.
    pub fn buckets(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (self.offset + i as u32, *n))
    }

    /// Counts in the bins `[-inf, edges[0]), [edges[0], edges[1]), ..,
    /// [edges[last], inf)`, `edges` being bucket keys in increasing order.
    pub fn counts_in_bins(&self, edge_keys: &[u32]) -> Vec<u64> {
        let mut counts = vec![0; edge_keys.len() + 1];
        for (key, n) in self.buckets() {
            counts[edge_keys.partition_point(|&edge| edge <= key)] += n;
        }
        counts
    }

    /// The key of the bucket that holds the `rank`-th value (0-based).
    fn key_at_rank(&self, rank: u64) -> Option<u32> {
        let mut seen = 0;
        self.buckets().find_map(|(key, n)| {
            seen += n;
            (seen > rank).then_some(key)
        })
    }

    /// Drops zero counts at both ends, so the stored form is short.
    fn trimmed(mut self) -> Sketch {
        let first = self.counts.iter().position(|&n| n > 0).unwrap_or(self.counts.len());
        let last = self.counts.iter().rposition(|&n| n > 0).map_or(first, |i| i + 1);
        self.counts = self.counts[first..last].to_vec();
        self.offset = if self.counts.is_empty() {
            0
        } else {
            self.offset + first as u32
        };
        self
    }
}

/// What a column is to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A model feature, read from `column`.
    Feature,
    /// A score column the model writes.
    Score,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Feature => "feature",
            Role::Score => "score",
        }
    }
}

/// Fixed bins of a reference numeric column: bin `i` holds values whose
/// bucket key is in `[keys[i-1], keys[i])` (open at both ends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bins {
    /// The edges as values (the smallest value of each edge bucket), for people.
    pub edges: Vec<f64>,
    /// The edges as bucket keys, which is what binning uses.
    pub keys: Vec<u32>,
    /// Non-null, finite values per bin (`keys.len() + 1` bins).
    pub counts: Vec<u64>,
}

/// Approximate quantiles (bucket midpoints, clamped to min and max).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantiles {
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Counts per category value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryCounts {
    pub counts: BTreeMap<String, u64>,
    /// Values beyond the [`MAX_CATEGORIES`] most frequent.
    pub other: u64,
}

impl CategoryCounts {
    fn merge(&mut self, other: &CategoryCounts) {
        for (name, n) in &other.counts {
            *self.counts.entry(name.clone()).or_default() += n;
        }
        self.other += other.other;
        self.cap();
    }

    /// Keeps the most frequent categories (ties by name), counting the rest
    /// as other.
    fn cap(&mut self) {
        if self.counts.len() <= MAX_CATEGORIES {
            return;
        }
        let mut by_count: Vec<(String, u64)> = std::mem::take(&mut self.counts).into_iter().collect();
        by_count.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        self.other += by_count[MAX_CATEGORIES..].iter().map(|(_, n)| n).sum::<u64>();
        by_count.truncate(MAX_CATEGORIES);
        self.counts = by_count.into_iter().collect();
    }
}

/// The profile of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnProfile {
    /// The feature or score column name.
    pub name: String,
    pub role: Role,
    /// The table column a feature is read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// Rows seen, nulls included.
    pub rows: u64,
    /// Null or NaN values.
    pub nulls: u64,
    /// Infinite values (kept out of min, max, mean and the sketch).
    #[serde(default)]
    pub infinite: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Sum of the finite values, so that merged means are exact sums.
    pub sum: f64,
    pub mean: Option<f64>,
    /// Scores only: values >= 0.5 (the positive rate of a probability).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least_half: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantiles: Option<Quantiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bins: Option<Bins>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch: Option<Sketch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<CategoryCounts>,
}

impl ColumnProfile {
    pub fn null_share(&self) -> f64 {
        if self.rows == 0 {
            0.0
        } else {
            self.nulls as f64 / self.rows as f64
        }
    }

    /// Share of scores >= 0.5, when counted.
    pub fn positive_share(&self) -> Option<f64> {
        let finite = self.rows - self.nulls - self.infinite;
        self.at_least_half
            .filter(|_| finite > 0)
            .map(|n| n as f64 / finite as f64)
    }

    /// Adds `other` (the same column of another part of the table).
    pub fn merge(&mut self, other: &ColumnProfile) {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.infinite += other.infinite;
        self.min = min_of(self.min, other.min);
        self.max = max_of(self.max, other.max);
        self.sum += other.sum;
        if let (Some(a), Some(b)) = (self.at_least_half.as_mut(), other.at_least_half) {
            *a += b;
        }
        match (self.sketch.as_mut(), other.sketch.as_ref()) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.sketch = Some(b.clone()),
            _ => {}
        }
        match (self.categories.as_mut(), other.categories.as_ref()) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.categories = Some(b.clone()),
            _ => {}
        }
        self.derive();
    }

    /// Mean, quantiles and drift bins from the exact counts and the sketch.
    pub fn derive(&mut self) {
        let finite = self.finite();
        self.mean = (finite > 0).then(|| self.sum / finite as f64);
        let Some(sketch) = self.sketch.take() else {
            return;
        };
        self.sketch = Some(sketch.trimmed());
        let quantile = |q: f64| self.quantile(q).unwrap_or(f64::NAN);
        self.quantiles = (finite > 0).then(|| Quantiles {
            p01: quantile(0.01),
            p05: quantile(0.05),
            p25: quantile(0.25),
            p50: quantile(0.50),
            p75: quantile(0.75),
            p95: quantile(0.95),
            p99: quantile(0.99),
        });
        let sketch = self.sketch.as_ref().expect("put back above");
        self.bins = (finite > 0).then(|| {
            let keys = decile_edges(sketch, finite);
            Bins {
                edges: keys.iter().map(|&k| key_lower_bound(k)).collect(),
                counts: sketch.counts_in_bins(&keys),
                keys,
            }
        });
    }

    /// Values that are neither null nor infinite.
    fn finite(&self) -> u64 {
        self.rows - self.nulls - self.infinite
    }

    /// The `q` quantile from the sketch: the midpoint of the bucket that
    /// holds it, clamped to min and max (within 3.2% of the true value).
    /// `None` without a sketch or finite values.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let finite = self.finite();
        let sketch = self.sketch.as_ref().filter(|_| finite > 0)?;
        let (min, max) = (self.min?, self.max?);
        let rank = ((q * finite as f64) as u64).min(finite - 1);
        sketch.key_at_rank(rank).map(|key| {
            let mid = 0.5 * (key_lower_bound(key) + key_lower_bound(key + 1));
            mid.clamp(min, max)
        })
    }
}

/// Bucket keys that split the sketch's values near its deciles: each edge is
/// the key of the bucket that holds the decile, so that bucket starts the
/// next bin and no bucket is ever split. Repeated edges (few distinct
/// values) collapse, and an edge at the first bucket (an empty first bin) is
/// left out.
fn decile_edges(sketch: &Sketch, finite: u64) -> Vec<u32> {
    let first = sketch.buckets().next().map(|(k, _)| k);
    let mut edges: Vec<u32> = (1..TARGET_BINS)
        .filter_map(|i| {
            let rank = (i as u64 * finite) / TARGET_BINS as u64;
            sketch.key_at_rank(rank)
        })
        .filter(|&k| Some(k) != first)
        .collect();
    edges.dedup();
    edges
}

fn min_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_of(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The profile of a table: its features, then its scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableProfile {
    /// [`PROFILE_FORMAT`].
    pub format: String,
    /// What was profiled (a path, or several joined by `+` after a merge).
    pub source: String,
    pub rows: u64,
    pub columns: Vec<ColumnProfile>,
}

impl TableProfile {
    pub fn column(&self, name: &str, role: Role) -> Option<&ColumnProfile> {
        self.columns.iter().find(|c| c.name == name && c.role == role)
    }

    /// Adds the profile of another part of the same table. Columns are
    /// matched by name and role; a column only one side has is kept as is.
    pub fn merge(&mut self, other: &TableProfile) {
        self.rows += other.rows;
        self.source = format!("{} + {}", self.source, other.source);
        for column in &other.columns {
            match self
                .columns
                .iter_mut()
                .find(|c| c.name == column.name && c.role == column.role)
            {
                Some(mine) => mine.merge(column),
                None => self.columns.push(column.clone()),
            }
        }
    }

    /// Reads a profile file written by [`TableProfile::to_json`].
    pub fn from_json(bytes: &[u8]) -> Result<TableProfile, String> {
        let profile: TableProfile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if profile.format != PROFILE_FORMAT {
            return Err(format!("`format` is `{}`, expected `{PROFILE_FORMAT}`", profile.format));
        }
        Ok(profile)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("profiles serialize")
    }
}

/// Accumulates a numeric column's profile, batch by batch, on one thread.
///
/// This runs on every value of every feature of a scoring run, so it is
/// written for the CPU: moments in [`LANES`] independent accumulators (which
/// the compiler turns into vector instructions), bucket keys computed a
/// block at a time, and counts kept in four interleaved copies so that runs
/// of equal values (integer features) do not wait on each other's stores.
#[derive(Debug, Clone)]
pub struct NumericAccumulator {
    rows: u64,
    nulls: u64,
    infinite: u64,
    min: f64,
    max: f64,
    sum: f64,
    at_least_half: Option<u64>,
    counts: LaneSketch,
}

/// Independent accumulators of the moments loop.
const LANES: usize = 8;
/// Values whose keys are computed before they are counted.
const KEY_BLOCK: usize = 256;
/// Stands for "no key" (a null or infinite value) in a block of keys.
const NO_KEY: u32 = u32::MAX;

/// A [`Sketch`] whose counts are split over four lanes (value `i` of a block
/// counts in lane `i % 4`), summed when the accumulator finishes.
#[derive(Debug, Clone, Default)]
struct LaneSketch {
    offset: u32,
    counts: Vec<[u64; 4]>,
}

impl LaneSketch {
    fn add_keys(&mut self, keys: &[u32]) {
        // Value `i` counts in lane `i % 4`. [`NO_KEY`] lies outside every
        // window, so it costs no test of its own here.
        let mut chunks = keys.chunks_exact(4);
        for chunk in &mut chunks {
            for (lane, &key) in chunk.iter().enumerate() {
                match self.counts.get_mut(key.wrapping_sub(self.offset) as usize) {
                    Some(lanes) => lanes[lane] += 1,
                    None => self.add_outside(key),
                }
            }
        }
        for &key in chunks.remainder() {
            match self.counts.get_mut(key.wrapping_sub(self.offset) as usize) {
                Some(lanes) => lanes[0] += 1,
                None => self.add_outside(key),
            }
        }
    }

    #[cold]
    fn add_outside(&mut self, key: u32) {
        if key == NO_KEY {
            return;
        }
        let mut sketch = self.to_sketch();
        sketch.add_outside(key, 1);
        // Keep the window the plain sketch grew to (with its slack).
        let mut counts = vec![[0; 4]; sketch.counts.len()];
        for (lanes, n) in counts.iter_mut().zip(&sketch.counts) {
            lanes[0] = *n;
        }
        self.offset = sketch.offset;
        self.counts = counts;
    }

    fn merge(&mut self, other: &LaneSketch) {
        let mut sketch = self.to_sketch();
        sketch.merge(&other.to_sketch());
        self.offset = sketch.offset;
        self.counts = sketch.counts.iter().map(|&n| [n, 0, 0, 0]).collect();
    }

    fn to_sketch(&self) -> Sketch {
        Sketch {
            offset: self.offset,
            counts: self.counts.iter().map(|lanes| lanes.iter().sum()).collect(),
        }
    }
}

/// What [`NumericAccumulator::add`] saw in one batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchSummary {
    pub nulls: u64,
    pub infinite: u64,
    /// Smallest and largest finite value (infinities when there is none).
    pub min: f64,
    pub max: f64,
}

/// Per-lane moments of a run of values.
#[derive(Clone, Copy)]
struct Lanes {
    lo: [f64; LANES],
    hi: [f64; LANES],
    sum: [f64; LANES],
    nulls: [u64; LANES],
    infinite: [u64; LANES],
    positive: [u64; LANES],
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            lo: [f64::INFINITY; LANES],
            hi: [f64::NEG_INFINITY; LANES],
            sum: [0.0; LANES],
            nulls: [0; LANES],
            infinite: [0; LANES],
            positive: [0; LANES],
        }
    }
}

/// Moments and bucket keys of a block of values, compiled for AVX-512 or
/// AVX2 where the CPU has them (the build targets baseline x86-64, whose SSE2
/// the compiler judges not worth vectorising this loop for).
fn scan(values: &[f64], keys: &mut [u32], lanes: &mut Lanes) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            unsafe { scan_avx512(values, keys, lanes) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { scan_avx2(values, keys, lanes) };
            return;
        }
    }
    scan_portable(values, keys, lanes);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn scan_avx512(values: &[f64], keys: &mut [u32], lanes: &mut Lanes) {
    scan_portable(values, keys, lanes);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_avx2(values: &[f64], keys: &mut [u32], lanes: &mut Lanes) {
    scan_portable(values, keys, lanes);
}

/// One pass over the values (they come from L2): keys and moments together.
#[inline(always)]
fn scan_portable(values: &[f64], keys: &mut [u32], lanes_out: &mut Lanes) {
    // A local copy, which the compiler keeps in registers: through the
    // reference, one build kept the lanes in memory and stored them every
    // step (`lakescore bench` checks stage 0.48 -> 0.75 thread-s).
    let mut lanes = *lanes_out;
    let mut chunks = values.chunks_exact(LANES);
    let mut key_chunks = keys.chunks_exact_mut(LANES);
    for (chunk, key_chunk) in (&mut chunks).zip(&mut key_chunks) {
        for i in 0..LANES {
            let v = chunk[i];
            key_chunk[i] = key_of_bits(v.to_bits());
            let finite = v.is_finite();
            lanes.nulls[i] += u64::from(v.is_nan());
            lanes.infinite[i] += u64::from(v.is_infinite());
            let kept = if finite { v } else { 0.0 };
            lanes.sum[i] += kept;
            let low = if finite { v } else { f64::INFINITY };
            let high = if finite { v } else { f64::NEG_INFINITY };
            lanes.lo[i] = if low < lanes.lo[i] { low } else { lanes.lo[i] };
            lanes.hi[i] = if high > lanes.hi[i] { high } else { lanes.hi[i] };
            lanes.positive[i] += u64::from(kept >= 0.5);
        }
    }
    for (&v, key) in chunks.remainder().iter().zip(key_chunks.into_remainder()) {
        *key = key_of_bits(v.to_bits());
        lanes.nulls[0] += u64::from(v.is_nan());
        lanes.infinite[0] += u64::from(v.is_infinite());
        if v.is_finite() {
            lanes.sum[0] += v;
            lanes.lo[0] = lanes.lo[0].min(v);
            lanes.hi[0] = lanes.hi[0].max(v);
            lanes.positive[0] += u64::from(v >= 0.5);
        }
    }
    *lanes_out = lanes;
}

impl NumericAccumulator {
    /// `count_positive`: also count values >= 0.5 (score columns).
    pub fn new(count_positive: bool) -> Self {
        NumericAccumulator {
            rows: 0,
            nulls: 0,
            infinite: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            at_least_half: count_positive.then_some(0),
            counts: LaneSketch::default(),
        }
    }

    /// Adds a batch of values; NaN is a null. Returns the batch's nulls,
    /// smallest and largest finite value, for the contract's rules.
    pub fn add(&mut self, values: &[f64]) -> BatchSummary {
        self.rows += values.len() as u64;
        let mut lanes = Lanes::new();
        let mut keys = [0u32; KEY_BLOCK];
        for block in values.chunks(KEY_BLOCK) {
            let keys = &mut keys[..block.len()];
            scan(block, keys, &mut lanes);
            self.counts.add_keys(keys);
        }
        let batch = BatchSummary {
            nulls: lanes.nulls.iter().sum::<u64>(),
            infinite: lanes.infinite.iter().sum::<u64>(),
            min: lanes.lo.iter().fold(f64::INFINITY, |a, &b| a.min(b)),
            max: lanes.hi.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b)),
        };
        self.nulls += batch.nulls;
        self.infinite += batch.infinite;
        self.sum += lanes.sum.iter().sum::<f64>();
        self.min = self.min.min(batch.min);
        self.max = self.max.max(batch.max);
        if let Some(n) = self.at_least_half.as_mut() {
            *n += lanes.positive.iter().sum::<u64>();
        }
        batch
    }

    pub fn merge(&mut self, other: &NumericAccumulator) {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.infinite += other.infinite;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
        if let (Some(a), Some(b)) = (self.at_least_half.as_mut(), other.at_least_half) {
            *a += b;
        }
        self.counts.merge(&other.counts);
    }

    pub fn finish(self, name: &str, role: Role, column: Option<&str>) -> ColumnProfile {
        let finite = self.rows - self.nulls - self.infinite;
        let mut profile = ColumnProfile {
            name: name.to_string(),
            role,
            column: column.map(str::to_string),
            rows: self.rows,
            nulls: self.nulls,
            infinite: self.infinite,
            min: (finite > 0).then_some(self.min),
            max: (finite > 0).then_some(self.max),
            sum: self.sum,
            mean: None,
            at_least_half: self.at_least_half,
            quantiles: None,
            bins: None,
            sketch: Some(self.counts.to_sketch()),
            categories: None,
        };
        profile.derive();
        profile
    }
}

/// Accumulates a categorical feature's profile from its category codes.
#[derive(Debug, Clone)]
pub struct CategoryAccumulator {
    rows: u64,
    nulls: u64,
    /// Values the model has no category for (counted as `other`).
    unknown: u64,
    /// Count per code.
    per_code: Vec<u64>,
}

impl CategoryAccumulator {
    pub fn new(n_categories: usize) -> Self {
        CategoryAccumulator {
            rows: 0,
            nulls: 0,
            unknown: 0,
            per_code: vec![0; n_categories],
        }
    }

    /// Adds a batch of codes: NaN is a null, a negative code
    /// ([`crate::features::UNKNOWN_CATEGORY`]) a value the model has no
    /// category for. Returns the batch's nulls.
    pub fn add(&mut self, codes: &[f64]) -> BatchSummary {
        self.rows += codes.len() as u64;
        let mut nulls = 0;
        for &code in codes {
            if code.is_nan() {
                nulls += 1;
                continue;
            }
            match self.per_code.get_mut(code as usize) {
                Some(n) if code >= 0.0 => *n += 1,
                _ => self.unknown += 1,
            }
        }
        self.nulls += nulls;
        // Codes are not ranged: a range rule on a categorical feature is refused.
        BatchSummary {
            nulls,
            infinite: 0,
            min: f64::NEG_INFINITY,
            max: f64::INFINITY,
        }
    }

    pub fn merge(&mut self, other: &CategoryAccumulator) {
        self.rows += other.rows;
        self.nulls += other.nulls;
        self.unknown += other.unknown;
        for (a, b) in self.per_code.iter_mut().zip(&other.per_code) {
            *a += b;
        }
    }

    /// `names[code]` names each code.
    pub fn finish(self, name: &str, column: Option<&str>, names: &[String]) -> ColumnProfile {
        let mut categories = CategoryCounts {
            other: self.unknown,
            ..CategoryCounts::default()
        };
        for (code, &n) in self.per_code.iter().enumerate() {
            if n > 0 {
                let label = names.get(code).cloned().unwrap_or_else(|| code.to_string());
                *categories.counts.entry(label).or_default() += n;
            }
        }
        categories.cap();
        ColumnProfile {
            name: name.to_string(),
            role: Role::Feature,
            column: column.map(str::to_string),
            rows: self.rows,
            nulls: self.nulls,
            infinite: 0,
            min: None,
            max: None,
            sum: 0.0,
            mean: None,
            at_least_half: None,
            quantiles: None,
            bins: None,
            sketch: None,
            categories: Some(categories),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_of(values: &[f64]) -> ColumnProfile {
        let mut acc = NumericAccumulator::new(true);
        acc.add(values);
        acc.finish("x", Role::Feature, None)
    }

    #[test]
    fn keys_are_monotone_and_bounds_are_in_their_bucket() {
        let values = [
            -f64::MAX,
            -1e300,
            -3.5,
            -1.0,
            -1e-5,
            0.0,
            1e-5,
            0.75,
            1.0,
            1.01,
            2.0,
            1e300,
            f64::MAX,
        ];
        for non_finite in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(key_of(non_finite), NO_KEY);
        }
        for pair in values.windows(2) {
            assert!(key_of(pair[0]) <= key_of(pair[1]), "{pair:?}");
        }
        for &v in &values[1..values.len() - 1] {
            let key = key_of(v);
            let lower = key_lower_bound(key);
            assert_eq!(key_of(lower), key, "{v}");
            assert!(lower <= v, "{v}: lower bound {lower}");
            // (-0.0's bucket ends where +0.0's starts, and the two are equal.)
            assert!(key_lower_bound(key + 1) > v || v == 0.0, "{v}");
        }
        // Buckets are 1/16 of an octave: 1.0 and 1.05 share one, 1.07 does not.
        assert_eq!(key_of(1.0), key_of(1.05));
        assert_ne!(key_of(1.0), key_of(1.07));
        // Values nearer zero than 2^-20 are zero's.
        assert_eq!(key_of(1e-7), key_of(0.0));
        assert_eq!(key_of(-1e-7), key_of(0.0));
        assert_ne!(key_of(1e-5), key_of(0.0));
    }

    #[test]
    fn exact_moments_and_close_quantiles() {
        let values: Vec<f64> = (0..100_000).map(|i| i as f64 / 10.0).collect();
        let mut with_nulls = values.clone();
        with_nulls.extend([f64::NAN, f64::NAN, f64::INFINITY]);
        let p = profile_of(&with_nulls);
        assert_eq!((p.rows, p.nulls, p.infinite), (100_003, 2, 1));
        assert_eq!((p.min, p.max), (Some(0.0), Some(9999.9)));
        assert!((p.mean.unwrap() - 4999.95).abs() < 1e-6);
        let q = p.quantiles.as_ref().unwrap();
        for (got, want) in [(q.p01, 100.0), (q.p25, 2500.0), (q.p50, 5000.0), (q.p99, 9900.0)] {
            assert!((got - want).abs() / want < 0.035, "{got} vs {want}");
        }
        assert_eq!(p.at_least_half, Some(100_000 - 5));
    }

    #[test]
    fn decile_bins_hold_a_tenth_each_and_count_exactly() {
        let values: Vec<f64> = (0..50_000).map(|i| (i as f64 * 0.37).sin() * 100.0).collect();
        let p = profile_of(&values);
        let bins = p.bins.as_ref().unwrap();
        assert_eq!(bins.counts.iter().sum::<u64>(), 50_000);
        let exact: Vec<u64> = (0..=bins.keys.len())
            .map(|bin| {
                values
                    .iter()
                    .filter(|&&v| {
                        let key = key_of(v);
                        (bin == 0 || key >= bins.keys[bin - 1]) && (bin == bins.keys.len() || key < bins.keys[bin])
                    })
                    .count() as u64
            })
            .collect();
        assert_eq!(bins.counts, exact);
        assert!(bins.keys.len() >= 8, "{:?}", bins.keys);
        for &n in &bins.counts {
            assert!((3_000..8_000).contains(&n), "{:?}", bins.counts);
        }
    }

    #[test]
    fn few_distinct_values_collapse_to_few_bins() {
        let values: Vec<f64> = (0..1000).map(|i| (i % 2) as f64).collect();
        let bins = profile_of(&values).bins.unwrap();
        assert_eq!(bins.counts, vec![500, 500]);
    }

    #[test]
    fn merged_parts_equal_the_whole() {
        let values: Vec<f64> = (0..30_000).map(|i| ((i * 7919) % 10_007) as f64 - 5000.0).collect();
        let whole = profile_of(&values);
        let mut merged = profile_of(&values[..10_000]);
        merged.merge(&profile_of(&values[10_000..25_000]));
        merged.merge(&profile_of(&values[25_000..]));
        assert_eq!(merged.sketch, whole.sketch);
        assert_eq!(merged.bins, whole.bins);
        assert_eq!(merged.quantiles, whole.quantiles);
        assert_eq!(
            (merged.rows, merged.nulls, merged.min, merged.max),
            (whole.rows, whole.nulls, whole.min, whole.max)
        );
        assert!((merged.mean.unwrap() - whole.mean.unwrap()).abs() < 1e-9);
    }

    #[test]
    fn categories_count_codes_and_cap() {
        let mut acc = CategoryAccumulator::new(3);
        acc.add(&[0.0, 1.0, 1.0, f64::NAN, 2.0, crate::features::UNKNOWN_CATEGORY]);
        let names = ["a".to_string(), "b".to_string(), "c".to_string()];
        let p = acc.finish("colour", None, &names);
        assert_eq!(p.nulls, 1);
        let categories = p.categories.unwrap();
        assert_eq!(categories.counts["b"], 2);
        assert_eq!(categories.other, 1, "an unknown category is other, not null");

        let mut many = CategoryCounts::default();
        for i in 0..MAX_CATEGORIES + 5 {
            many.counts.insert(format!("c{i:05}"), 1 + (i % 3) as u64);
        }
        many.cap();
        assert_eq!(many.counts.len(), MAX_CATEGORIES);
        assert_eq!(many.other, 5);
    }

    #[test]
    fn profiles_round_trip_through_json() {
        let profile = TableProfile {
            format: PROFILE_FORMAT.into(),
            source: "t".into(),
            rows: 3,
            columns: vec![profile_of(&[1.0, 2.0, f64::NAN])],
        };
        let back = TableProfile::from_json(&profile.to_json()).unwrap();
        assert_eq!(back, profile);
        // Empty buckets are stored as runs: a sketch over a wide range stays small.
        let spread: Vec<f64> = (0..10_000).map(|i| if i % 2 == 0 { 1e-3 } else { 1e6 }).collect();
        let json = serde_json::to_string(&profile_of(&spread).sketch).unwrap();
        assert!(json.len() < 60, "{json}");
        let wrong = br#"{"format":"other","source":"t","rows":0,"columns":[]}"#;
        assert!(
            TableProfile::from_json(wrong)
                .unwrap_err()
                .contains("lakescore-profile/1")
        );
    }
}
