//! The byte kernel for float32 trees (XGBoost, ONNX) of depth 8 or less
//! (where a gather kernel is there, [`super::dispatch`] gives it depth 4 and
//! more): no gathers until the leaf, so it is fast on CPUs whose gathers are
//! slow (AMD) and on those without AVX-512.
//!
//! Two ideas make it exact and cheap:
//! - **Bins.** A view's thresholds, sorted and deduplicated, cut the number
//!   line into at most 255 bins. A value's bin is how many thresholds lie
//!   below it (NaN: past the last), so `x <= threshold k` is exactly
//!   `bin(x) <= k`. Each view value of a block is binned once per block, and
//!   every node of every tree then compares bytes: 32 rows per AVX2
//!   instruction instead of 8 floats. Models trained with XGBoost's `hist`
//!   method (its default: at most 256 bins per feature) usually fit; the
//!   trees that read a view with more take the gather kernels
//!   ([`super::simd`]).
//! - **Every node, no walk.** For 32 rows at once, every node of the tree
//!   (padded to a perfect tree) is compared, and each level's decision is
//!   picked out of its nodes' comparisons by a tree of byte blends on the
//!   decisions above it. A depth-6 tree costs 63 compares and 57 blends per
//!   32 rows, where a walk needs a gather of thresholds, view numbers and
//!   values per level. The leaf, a byte position, is gathered at the end.
//!
//! Codes are stored so that one signed byte compare decides: a value of bin
//! `b` is `(254 - b) ^ 0x80` and a threshold of index `k` is
//! `(254 - k) ^ 0x80`, so "goes second" (`b > k`) is `code(k) > code(x)`
//! with the value read straight from memory. Padding nodes always go first
//! (`i8::MIN`); a NaN threshold always sends a row second (`i8::MAX`).

use super::kernel::{BLOCK_ROWS, PerfectSource, by_depth, perfect_tree};

/// Deepest tree the byte kernel takes: positions are bytes, and a deeper tree
/// compares too many padded nodes per row.
pub const MAX_DEPTH: u32 = 8;

/// Most distinct thresholds of one view: bins 0..=254 and one code above
/// every value's for a NaN threshold.
pub const MAX_THRESHOLDS: usize = 254;

/// Rows per byte register.
const ROWS_PER_REGISTER: usize = 32;

/// A node that always goes first (padding below a leaf).
const ALWAYS_FIRST: i8 = i8::MIN;
/// A node every row leaves by its second child (`x <= NaN` fails).
const ALWAYS_SECOND: i8 = i8::MAX;

#[derive(Debug, Clone, Copy)]
struct BinnedTree {
    depth: u32,
    /// Offset of node 0 in `codes`/`offsets`; leaves at `leaf_offset`.
    offset: usize,
    leaf_offset: usize,
}

/// A view the kernel compares: its thresholds, for binning.
#[derive(Debug)]
struct BinnedView {
    view: usize,
    n_thresholds: usize,
    /// The sorted thresholds padded with +inf to 256: a value's bin is found
    /// with two 16-wide compares, one against every 16th (`slots[16 i +
    /// 15]`) for its group of 16, and one within the group.
    slots: Box<[f32; 256]>,
}

/// The byte layout of every tree the kernel takes.
#[derive(Debug)]
pub struct BinnedForest {
    trees: Vec<Option<BinnedTree>>,
    /// Per node: the code of its threshold.
    codes: Vec<i8>,
    /// Per node: where its view's bins start in a block (`view * BLOCK_ROWS`).
    offsets: Vec<u32>,
    leaves: Vec<f32>,
    views: Vec<BinnedView>,
    n_views: usize,
}

impl BinnedForest {
    /// The layout for the trees that fit (depth `min_depth` to
    /// [`MAX_DEPTH`], every view they read with at most [`MAX_THRESHOLDS`]
    /// thresholds), when this CPU has AVX2 and some tree fits.
    pub fn new(source: &dyn PerfectSource, min_depth: u32) -> Option<BinnedForest> {
        if !available() {
            return None;
        }
        let n_views = source.n_views();
        if n_views.saturating_mul(BLOCK_ROWS) > u32::MAX as usize {
            return None;
        }
        let perfect: Vec<_> = (0..source.n_trees())
            .map(|t| {
                source
                    .tree_shape(t)
                    .filter(|depth| (min_depth.max(1)..=MAX_DEPTH).contains(depth))
                    .map(|depth| perfect_tree(source, t, depth))
            })
            .collect();
        // Each view's distinct thresholds over the trees that fit; a view with
        // too many sends the trees that read it to the other kernels.
        let thresholds_of = |taken: &[bool]| {
            let mut per_view = vec![Vec::new(); n_views];
            for (tree, _) in perfect.iter().zip(taken).filter(|(_, taken)| **taken) {
                let tree = tree.as_ref().expect("only trees that fit are taken");
                for (&t, &v) in tree.thresholds.iter().zip(&tree.views) {
                    if v != source.zero_view() && !t.is_nan() {
                        per_view[v as usize].push(t);
                    }
                }
            }
            for cuts in &mut per_view {
                // No NaN here; -0.0 and 0.0 compare alike and dedup to one.
                cuts.sort_by(|a: &f32, b| a.partial_cmp(b).expect("no NaN thresholds"));
                cuts.dedup();
            }
            per_view
        };
        let mut taken: Vec<bool> = perfect.iter().map(Option::is_some).collect();
        let wide: Vec<bool> = thresholds_of(&taken)
            .iter()
            .map(|cuts| cuts.len() > MAX_THRESHOLDS)
            .collect();
        for (taken, tree) in taken.iter_mut().zip(&perfect) {
            if let Some(tree) = tree {
                *taken &= !tree.views.iter().any(|&v| wide[v as usize]);
            }
        }
        if !taken.iter().any(|&t| t) {
            return None;
        }
        let cuts = thresholds_of(&taken);
        let mut forest = BinnedForest {
            trees: Vec::with_capacity(perfect.len()),
            codes: Vec::new(),
            offsets: Vec::new(),
            leaves: Vec::new(),
            views: cuts
                .iter()
                .enumerate()
                .filter(|(_, cuts)| !cuts.is_empty())
                .map(|(view, cuts)| BinnedView::new(view, cuts))
                .collect(),
            n_views,
        };
        for (tree, taken) in perfect.iter().zip(&taken) {
            let tree = match (tree, taken) {
                (Some(tree), true) => tree,
                _ => {
                    forest.trees.push(None);
                    continue;
                }
            };
            forest.trees.push(Some(BinnedTree {
                depth: tree.depth,
                offset: forest.codes.len(),
                leaf_offset: forest.leaves.len(),
            }));
            for (&t, &v) in tree.thresholds.iter().zip(&tree.views) {
                let (code, view) = if v == source.zero_view() {
                    (ALWAYS_FIRST, 0)
                } else if t.is_nan() {
                    (ALWAYS_SECOND, 0)
                } else {
                    let k = cuts[v as usize].partition_point(|&c| c < t);
                    (code(k), v)
                };
                forest.codes.push(code);
                forest.offsets.push(view * BLOCK_ROWS as u32);
            }
            forest.leaves.extend_from_slice(&tree.leaves);
        }
        Some(forest)
    }

    /// How many trees run here.
    pub fn n_trees(&self) -> usize {
        self.trees.iter().flatten().count()
    }

    /// Whether tree `tree` runs here.
    pub fn takes(&self, tree: usize) -> bool {
        self.trees[tree].is_some()
    }

    /// Room for one block's bins: every view, [`BLOCK_ROWS`] bytes each.
    pub fn bins_buffer(&self) -> Vec<i8> {
        vec![ALWAYS_FIRST; self.n_views * BLOCK_ROWS]
    }

    /// Bins the block's values of every view the kernel reads. `view_major`
    /// holds the block's views column by column, `rows` each.
    pub fn bin_block(&self, view_major: &[f32], rows: usize, bins: &mut [i8]) {
        assert!(rows <= BLOCK_ROWS && bins.len() == self.n_views * BLOCK_ROWS);
        for view in &self.views {
            let column = &view_major[view.view * rows..][..rows];
            let out = &mut bins[view.view * BLOCK_ROWS..][..rows];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `new` only builds a forest on a CPU with AVX2 and popcnt.
            unsafe {
                avx2::bin_column(view, column, out)
            };
            #[cfg(not(target_arch = "x86_64"))]
            for (slot, &x) in out.iter_mut().zip(column) {
                *slot = code(view.bin(x));
            }
        }
    }

    /// Adds tree `tree`'s leaf for each of the block's rows to `sums`, from
    /// the bins [`Self::bin_block`] wrote; false when the kernel does not
    /// take this tree.
    pub fn run(&self, tree: usize, bins: &[i8], sums: &mut [f32]) -> bool {
        let Some(tree) = self.trees[tree] else {
            return false;
        };
        assert!(sums.len() <= BLOCK_ROWS && bins.len() == self.n_views * BLOCK_ROWS);
        #[cfg(target_arch = "x86_64")]
        {
            // One register of 32 rows per pass: two, sharing each node's
            // threshold and offset, were 8% faster in a standalone kernel
            // but 17% slower in whole runs of the benchmark model (Zen 4).
            let kernel = by_depth!(tree.depth, avx2::run, [1, 2, 3, 4, 5, 6, 7], 8);
            // SAFETY: `new` only builds a forest on a CPU with AVX2; every
            // offset is a view's start in a block of `n_views * BLOCK_ROWS`
            // bytes, and 32-row chunks of a block stay inside it; positions
            // are below 2^depth, inside the tree's leaves.
            unsafe {
                kernel(
                    &self.codes[tree.offset..],
                    &self.offsets[tree.offset..],
                    &self.leaves[tree.leaf_offset..][..1 << tree.depth],
                    bins,
                    sums,
                )
            };
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (bins, sums);
            unreachable!("a byte forest is only built on x86-64")
        }
    }
}

/// Whether this CPU runs the byte kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The code of bin (or threshold index) `b`.
fn code(b: usize) -> i8 {
    debug_assert!(b <= MAX_THRESHOLDS);
    ((MAX_THRESHOLDS - b) as u8 ^ 0x80) as i8
}

impl BinnedView {
    fn new(view: usize, cuts: &[f32]) -> BinnedView {
        // The binning's loads stay inside `slots` only while slot 255 is
        // +inf (at most 15 groups of 16 close below a value).
        assert!(cuts.len() <= MAX_THRESHOLDS, "{} thresholds", cuts.len());
        let mut slots = Box::new([f32::INFINITY; 256]);
        slots[..cuts.len()].copy_from_slice(cuts);
        BinnedView {
            view,
            n_thresholds: cuts.len(),
            slots,
        }
    }

    /// How many thresholds lie below `x`; NaN is past them all. (The
    /// reference the vector binning is tested against.)
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    fn bin(&self, x: f32) -> usize {
        match x.is_nan() {
            true => self.n_thresholds,
            false => self.slots[..self.n_thresholds].partition_point(|&c| c < x),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

    use super::{BLOCK_ROWS, BinnedView, ROWS_PER_REGISTER, code};

    /// The bins of one view's column of a block (`out[r]` for `column[r]`).
    #[target_feature(enable = "avx2,popcnt")]
    pub(super) unsafe fn bin_column(view: &BinnedView, column: &[f32], out: &mut [i8]) {
        unsafe {
            let slots = view.slots.as_ptr();
            // The last threshold of each group of 16, once per column.
            let pivot = |i: usize| view.slots[16 * i + 15];
            let pivots = [
                _mm256_setr_ps(
                    pivot(0),
                    pivot(1),
                    pivot(2),
                    pivot(3),
                    pivot(4),
                    pivot(5),
                    pivot(6),
                    pivot(7),
                ),
                _mm256_setr_ps(
                    pivot(8),
                    pivot(9),
                    pivot(10),
                    pivot(11),
                    pivot(12),
                    pivot(13),
                    pivot(14),
                    pivot(15),
                ),
            ];
            // The number of the 16 floats at `p` below `x`.
            let below = |p: [__m256; 2], x: __m256| {
                let low = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(p[0], x)) as u32;
                let high = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LT_OQ>(p[1], x)) as u32;
                (low | high << 8).count_ones() as usize
            };
            for (slot, &value) in out.iter_mut().zip(column) {
                let x = _mm256_set1_ps(value);
                // Every pivot below x closes a group of 16 thresholds below it.
                // (Slot 255 is +inf, so at most 15 groups close.)
                let group = 16 * below(pivots, x);
                let within = below(
                    [_mm256_loadu_ps(slots.add(group)), _mm256_loadu_ps(slots.add(group + 8))],
                    x,
                );
                let bin = match value.is_nan() {
                    true => view.n_thresholds,
                    false => group + within,
                };
                *slot = code(bin);
            }
        }
    }

    /// The decision of one level for 32 rows: the comparison of the node the
    /// decisions above (`above[0]` the root's) lead to, picked from the
    /// level's nodes by byte blends. Each level of nesting is one type, so
    /// the whole selection unrolls and keeps one partial result per level.
    trait Select {
        unsafe fn select(compare: &impl Fn(usize) -> __m256i, above: &[__m256i], node: usize) -> __m256i;
    }

    /// A node's own comparison.
    struct Node;
    /// One decision more above.
    struct Blend<Below>(PhantomData<Below>);

    impl Select for Node {
        #[inline(always)]
        unsafe fn select(compare: &impl Fn(usize) -> __m256i, _: &[__m256i], node: usize) -> __m256i {
            compare(node)
        }
    }

    impl<Below: Select> Select for Blend<Below> {
        #[inline(always)]
        unsafe fn select(compare: &impl Fn(usize) -> __m256i, above: &[__m256i], node: usize) -> __m256i {
            unsafe {
                let first = Below::select(compare, &above[1..], 2 * node);
                let second = Below::select(compare, &above[1..], 2 * node + 1);
                _mm256_blendv_epi8(first, second, above[0])
            }
        }
    }

    /// Adds one depth-`D` perfect tree's leaf to `sums[r]` for each row of the
    /// block whose bins are in `bins` (view `v` of row `r` at
    /// `v * BLOCK_ROWS + r`).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run<const D: usize>(
        codes: &[i8],
        offsets: &[u32],
        leaves: &[f32],
        bins: &[i8],
        sums: &mut [f32],
    ) {
        unsafe {
            debug_assert!(codes.len() >= (1 << D) - 1 && leaves.len() == 1 << D);
            let n_rows = sums.len();
            let mut chunk = 0;
            while chunk < n_rows {
                let base = bins.as_ptr().add(chunk);
                // All ones where a row goes second, level by level.
                let mut decided = [_mm256_setzero_si256(); 8];
                let mut position = _mm256_setzero_si256();
                macro_rules! level {
                    ($l:literal, $select:ty) => {
                        if D > $l {
                            let first = (1usize << $l) - 1;
                            let compare = |n: usize| {
                                let node = first + n;
                                let x = _mm256_loadu_si256(base.add(*offsets.get_unchecked(node) as usize).cast());
                                _mm256_cmpgt_epi8(_mm256_set1_epi8(*codes.get_unchecked(node)), x)
                            };
                            decided[$l] = <$select>::select(&compare, &decided[..$l], 0);
                            // position = 2 * position + (went second)
                            position = _mm256_sub_epi8(_mm256_add_epi8(position, position), decided[$l]);
                        }
                    };
                }
                level!(0, Node);
                level!(1, Blend<Node>);
                level!(2, Blend<Blend<Node>>);
                level!(3, Blend<Blend<Blend<Node>>>);
                level!(4, Blend<Blend<Blend<Blend<Node>>>>);
                level!(5, Blend<Blend<Blend<Blend<Blend<Node>>>>>);
                level!(6, Blend<Blend<Blend<Blend<Blend<Blend<Node>>>>>>);
                level!(7, Blend<Blend<Blend<Blend<Blend<Blend<Blend<Node>>>>>>>);
                // The 32 positions (bytes) in four registers of 8 leaf indices.
                let low = _mm256_castsi256_si128(position);
                let high = _mm256_extracti128_si256::<1>(position);
                let quarters = [low, _mm_srli_si128::<8>(low), high, _mm_srli_si128::<8>(high)];
                let rows = (n_rows - chunk).min(ROWS_PER_REGISTER);
                for (q, quarter) in quarters.into_iter().enumerate() {
                    let leaf = _mm256_i32gather_ps::<4>(leaves.as_ptr(), _mm256_cvtepu8_epi32(quarter));
                    let at = chunk + 8 * q;
                    if at + 8 <= chunk + rows {
                        let out = sums.as_mut_ptr().add(at);
                        _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), leaf));
                    } else if at < chunk + rows {
                        // The block's last rows, fewer than a register.
                        let mut values = [0f32; 8];
                        _mm256_storeu_ps(values.as_mut_ptr(), leaf);
                        for (sum, value) in sums[at..chunk + rows].iter_mut().zip(values) {
                            *sum += value;
                        }
                    }
                }
                chunk += ROWS_PER_REGISTER;
            }
            debug_assert!(n_rows <= BLOCK_ROWS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_lands_in_the_bin_its_comparisons_give() {
        // Thresholds with duplicates' neighbours, ±0, ±inf, and enough of
        // them to need several groups of 16.
        let mut cuts: Vec<f32> = (0..200).map(|i| (i as f32 - 100.0) / 8.0).collect();
        cuts.extend([f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e-30]);
        cuts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        cuts.dedup();
        let view = BinnedView::new(0, &cuts);
        let mut values: Vec<f32> = cuts
            .iter()
            .flat_map(|&c| [c, c.next_up(), c.next_down()])
            .chain([f32::NAN, 0.0, -0.0, 1e38, -1e38, f32::MIN_POSITIVE])
            .collect();
        values.extend((0..500).map(|i| (i as f32 - 250.0) / 7.3));
        for &x in &values {
            let b = view.bin(x);
            for (k, &t) in cuts.iter().enumerate() {
                assert_eq!(x <= t, b <= k, "x {x} threshold {t} (index {k}) bin {b}");
            }
        }
        if available() {
            let mut out = vec![0i8; values.len()];
            #[cfg(target_arch = "x86_64")]
            for (column, out) in values.chunks(BLOCK_ROWS).zip(out.chunks_mut(BLOCK_ROWS)) {
                unsafe { avx2::bin_column(&view, column, out) };
            }
            for (&x, &got) in values.iter().zip(&out) {
                assert_eq!(got, code(view.bin(x)), "x {x}");
            }
        }
    }

    #[test]
    fn codes_compare_as_bins_do() {
        for b in 0..=MAX_THRESHOLDS {
            for k in 0..MAX_THRESHOLDS {
                assert_eq!(code(k) > code(b), b > k);
            }
            // A NaN threshold sends every value second; padding (`i8::MIN`)
            // sends none: `i8::MIN > code` never holds.
            assert!(ALWAYS_SECOND > code(b));
        }
    }
}
