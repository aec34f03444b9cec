//! The SIMD kernels for float32 trees (XGBoost, ONNX) of depth 10 or less:
//! each tree padded to a perfect tree, 16 rows walked at once with AVX-512,
//! 8 with AVX2.
//!
//! Node `i` of a perfect tree has children `2i+1` and `2i+2`, so a row's
//! position needs no child pointers: `pos = 2 * pos + (went second)`. The
//! thresholds and view numbers of the first six levels (63 nodes) live in
//! registers, looked up with one permute per level; deeper levels are
//! gathered. The only other memory access per level is the gather of each
//! row's view value. Comparison semantics are the scalar evaluator's
//! (`x <= threshold` goes first, NaN goes second), so results are identical.
//!
//! The AVX2 kernel is the same walk on 8 lanes: levels 0-3 (at most 8
//! nodes) are looked up with one register permute, deeper levels and the
//! leaves of trees deeper than 3 are gathered.
//!
//! Chosen at run time (`is_x86_feature_detected!`): the binary runs on any
//! x86-64 and uses AVX-512F where the CPU has it, else AVX2, else neither
//! (the scalar evaluator).

use super::kernel::{PerfectSource, SimdTrees};

/// Deepest tree the kernel pads (a depth-10 tree is 1,023 nodes and 1,024
/// leaves, 12 KB: a forest of 100 still fits in L2).
pub const MAX_DEPTH: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct PerfectTree {
    depth: u32,
    /// Offset of node 0 in `thresholds`/`views`; leaves at `leaf_offset`.
    offset: usize,
    leaf_offset: usize,
}

/// Which instruction set a [`PerfectForest`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
}

impl Isa {
    /// The widest this CPU has.
    pub fn best() -> Option<Isa> {
        [Isa::Avx512, Isa::Avx2].into_iter().find(|isa| isa.available())
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// The perfect-tree layout of every tree the kernel takes.
#[derive(Debug)]
pub struct PerfectForest {
    isa: Isa,
    trees: Vec<Option<PerfectTree>>,
    thresholds: Vec<f32>,
    views: Vec<i32>,
    leaves: Vec<f32>,
}

impl PerfectForest {
    /// The layout for the widest kernel this CPU runs, when it has one and
    /// some tree fits it.
    pub fn new(source: &dyn PerfectSource) -> Option<PerfectForest> {
        PerfectForest::for_isa(source, Isa::best()?)
    }

    /// The layout for the kernel of `isa`, when this CPU has it and some
    /// tree fits (tests and benches compare the kernels on one CPU).
    pub fn for_isa(source: &dyn PerfectSource, isa: Isa) -> Option<PerfectForest> {
        // Gather offsets (row x views + view) are 32-bit.
        if !isa.available() || source.n_views().saturating_mul(super::kernel::BLOCK_ROWS) >= 1 << 31 {
            return None;
        }
        let mut forest = PerfectForest {
            isa,
            trees: Vec::with_capacity(source.n_trees()),
            thresholds: Vec::new(),
            views: Vec::new(),
            leaves: Vec::new(),
        };
        for t in 0..source.n_trees() {
            let tree = source
                .tree_shape(t)
                .filter(|&depth| (1..=MAX_DEPTH).contains(&depth))
                .map(|depth| {
                    let n_nodes = (1usize << depth) - 1;
                    let tree = PerfectTree {
                        depth,
                        offset: forest.thresholds.len(),
                        leaf_offset: forest.leaves.len(),
                    };
                    // Levels 0-4 load with masks and level 5 as nodes 31..63 of a
                    // tree of depth >= 6, all inside the tree; the padding is slack.
                    forest.thresholds.resize(tree.offset + n_nodes + 16, f32::INFINITY);
                    forest
                        .views
                        .resize(tree.offset + n_nodes + 16, source.zero_view() as i32);
                    // The kernel loads 64 leaves into registers whatever the depth.
                    forest.leaves.resize(tree.leaf_offset + (1usize << depth).max(64), 0.0);
                    forest.fill(source, &tree, 0, source.root(t), 0);
                    tree
                });
            forest.trees.push(tree);
        }
        forest.trees.iter().any(Option::is_some).then_some(forest)
    }

    /// Places step `slot` at perfect node `node` (level `level`); a leaf
    /// above the last level fills its whole subtree (padding nodes always go
    /// first: `0 <= +inf` on the zero view).
    fn fill(&mut self, source: &dyn PerfectSource, tree: &PerfectTree, node: usize, slot: u32, level: u32) {
        let step = source.step(slot);
        if level == tree.depth {
            // The leaf under this slot (a leaf of the source tree).
            let first_leaf = (1usize << tree.depth) - 1;
            self.leaves[tree.leaf_offset + node - first_leaf] = source.leaf_value(slot);
            return;
        }
        let (threshold, view, first) = match step {
            Some(step) => step,
            None => (f32::INFINITY, source.zero_view(), slot),
        };
        self.thresholds[tree.offset + node] = threshold;
        self.views[tree.offset + node] = view as i32;
        let (left, right) = if step.is_some() {
            (first, first + 1)
        } else {
            (slot, slot)
        };
        self.fill(source, tree, 2 * node + 1, left, level + 1);
        self.fill(source, tree, 2 * node + 2, right, level + 1);
    }
}

impl SimdTrees<f32> for PerfectForest {
    fn run(&self, tree: usize, views: &[f32], view_major: &[f32], n_views: usize, sums: &mut [f32]) -> bool {
        let Some(tree) = self.trees[tree] else {
            return false;
        };
        debug_assert_eq!(views.len(), sums.len() * n_views);
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: `for_isa` only builds a forest when the CPU has its
            // instruction set; the layout's offsets, padding and view numbers
            // (< n_views, as the scalar evaluator's) keep every load and
            // gather in bounds.
            unsafe {
                type Kernel = unsafe fn(&[f32], &[i32], &[f32], &[f32], &[f32], usize, &mut [f32]);
                let (kernel, lanes): (Kernel, usize) = match self.isa {
                    Isa::Avx512 => (
                        match tree.depth {
                            1 => avx512::run::<1>,
                            2 => avx512::run::<2>,
                            3 => avx512::run::<3>,
                            4 => avx512::run::<4>,
                            5 => avx512::run::<5>,
                            6 => avx512::run::<6>,
                            7 => avx512::run::<7>,
                            8 => avx512::run::<8>,
                            9 => avx512::run::<9>,
                            _ => avx512::run::<10>,
                        },
                        16,
                    ),
                    Isa::Avx2 => (
                        match tree.depth {
                            1 => avx2::run::<1>,
                            2 => avx2::run::<2>,
                            3 => avx2::run::<3>,
                            4 => avx2::run::<4>,
                            5 => avx2::run::<5>,
                            6 => avx2::run::<6>,
                            7 => avx2::run::<7>,
                            8 => avx2::run::<8>,
                            9 => avx2::run::<9>,
                            _ => avx2::run::<10>,
                        },
                        8,
                    ),
                };
                let full = sums.len() / lanes * lanes;
                debug_assert_eq!(view_major.len(), sums.len() * n_views);
                kernel(
                    &self.thresholds[tree.offset..],
                    &self.views[tree.offset..],
                    &self.leaves[tree.leaf_offset..],
                    views,
                    view_major,
                    n_views,
                    &mut sums[..full],
                );
                // The last rows, fewer than a register: the same walk, one at a time.
                for r in full..sums.len() {
                    let row = &views[r * n_views..][..n_views];
                    let mut node = 0usize;
                    for _ in 0..tree.depth {
                        let x = row[self.views[tree.offset + node] as usize];
                        let second = super::kernel::goes_second(x, self.thresholds[tree.offset + node]);
                        node = 2 * node + 1 + usize::from(second);
                    }
                    sums[r] += self.leaves[tree.leaf_offset + node - ((1 << tree.depth) - 1)];
                }
            }
            true
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (views, n_views, sums);
            false
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Registers holding levels 0-5: one per level up to 4, two for level 5.
    const LEVEL_REGISTERS: usize = 7;

    /// Adds one depth-`D` perfect tree's leaf to `sums[r]` for each row `r`
    /// (a multiple of 16 rows) of the row-major `views`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn run<const D: usize>(
        thresholds: &[f32],
        view_of: &[i32],
        leaves: &[f32],
        views: &[f32],
        view_major: &[f32],
        n_views: usize,
        sums: &mut [f32],
    ) {
        unsafe {
            // Columns of `view_major` are as long as the block (not only the
            // full registers this call walks).
            let (vm, column_len) = (view_major.as_ptr(), view_major.len() / n_views.max(1));
            let thr = thresholds.as_ptr();
            let vix = view_of.as_ptr();
            // Levels 0-4 (1-16 nodes): registers 0-4; level 5 (32 nodes):
            // registers 5 and 6 (its first and second 16 nodes).
            let mut level_thr = [_mm512_setzero_ps(); LEVEL_REGISTERS];
            let mut level_view = [_mm512_setzero_si512(); LEVEL_REGISTERS];
            for l in 0..D.min(5) {
                let (offset, mask) = ((1usize << l) - 1, ((1u32 << (1 << l)) - 1) as u16);
                level_thr[l] = _mm512_maskz_loadu_ps(mask, thr.add(offset));
                level_view[l] = _mm512_maskz_loadu_epi32(mask, vix.add(offset));
            }
            if D > 5 {
                level_thr[5] = _mm512_loadu_ps(thr.add(31));
                level_thr[6] = _mm512_loadu_ps(thr.add(47));
                level_view[5] = _mm512_loadu_si512(vix.add(31) as *const _);
                level_view[6] = _mm512_loadu_si512(vix.add(47) as *const _);
            }
            // Leaves: up to 64 in registers.
            let lp = leaves.as_ptr();
            let leaf_regs = [
                _mm512_loadu_ps(lp),
                _mm512_loadu_ps(lp.add(16)),
                _mm512_loadu_ps(lp.add(32)),
                _mm512_loadu_ps(lp.add(48)),
            ];
            let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let stride = _mm512_set1_epi32(n_views as i32);
            let one = _mm512_set1_epi32(1);
            let block = views.as_ptr();
            // `C` chunks of 16 rows walk together: a level's gathers take tens
            // of cycles to arrive, and independent chunks fill that wait.
            let row_offsets_at =
                |r: usize| _mm512_mullo_epi32(_mm512_add_epi32(lanes, _mm512_set1_epi32(r as i32)), stride);
            let mut r = 0;
            const C: usize = 8;
            while r + 16 * C <= sums.len() {
                let row_offsets: [__m512i; C] = std::array::from_fn(|c| row_offsets_at(r + 16 * c));
                let mut pos = [_mm512_setzero_si512(); C];
                for l in 0..D {
                    for (c, (p, &offsets)) in pos.iter_mut().zip(&row_offsets).enumerate() {
                        *p = match l < TOP_LEVELS {
                            true => top_level_step(l, *p, r + 16 * c, thr, vix, vm, column_len, one),
                            false => level_step::<D>(l, *p, offsets, &level_thr, &level_view, thr, vix, block, one),
                        };
                    }
                }
                for (c, &p) in pos.iter().enumerate() {
                    let leaf = leaf_of::<D>(p, &leaf_regs, lp);
                    let out = sums.as_mut_ptr().add(r + 16 * c);
                    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), leaf));
                }
                r += 16 * C;
            }
            while r < sums.len() {
                let mut pos = _mm512_setzero_si512();
                let row_offsets = row_offsets_at(r);
                for l in 0..D {
                    pos = match l < TOP_LEVELS {
                        true => top_level_step(l, pos, r, thr, vix, vm, column_len, one),
                        false => level_step::<D>(l, pos, row_offsets, &level_thr, &level_view, thr, vix, block, one),
                    };
                }
                let leaf = leaf_of::<D>(pos, &leaf_regs, lp);
                let out = sums.as_mut_ptr().add(r);
                _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), leaf));
                r += 16;
            }
        }
    }

    /// Levels walked by comparing every node's view, loaded for 16 rows at
    /// once from the view-major block, instead of gathering each row's:
    /// 15 loads for levels 0-3, against 4 gathers, which AMD CPUs serve
    /// slowly.
    const TOP_LEVELS: usize = 4;

    /// One of the top levels for 16 rows (`row` the first): each node's
    /// comparison for every row, kept for the rows at that node.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn top_level_step(
        l: usize,
        pos: __m512i,
        row: usize,
        thr: *const f32,
        vix: *const i32,
        view_major: *const f32,
        stride: usize,
        one: __m512i,
    ) -> __m512i {
        unsafe {
            let base = (1usize << l) - 1;
            let mut first: __mmask16 = 0;
            for n in 0..(1usize << l) {
                let node = base + n;
                let x = _mm512_loadu_ps(view_major.add(*vix.add(node) as usize * stride + row));
                let goes_first = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_set1_ps(*thr.add(node)));
                let here = match l {
                    0 => 0xFFFF,
                    _ => _mm512_cmpeq_epi32_mask(pos, _mm512_set1_epi32(n as i32)),
                };
                first |= goes_first & here;
            }
            let pos = _mm512_add_epi32(pos, pos);
            _mm512_mask_add_epi32(pos, !first, pos, one)
        }
    }

    /// One level of 16 rows' walk: look up each row's split, gather its view
    /// value, and step to the first child (`x <= t`, NaN fails) or second.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn level_step<const D: usize>(
        l: usize,
        pos: __m512i,
        row_offsets: __m512i,
        level_thr: &[__m512; LEVEL_REGISTERS],
        level_view: &[__m512i; LEVEL_REGISTERS],
        thr: *const f32,
        vix: *const i32,
        block: *const f32,
        one: __m512i,
    ) -> __m512i {
        unsafe {
            let (t, v) = match l {
                0..=4 => (
                    _mm512_permutexvar_ps(pos, level_thr[l]),
                    _mm512_permutexvar_epi32(pos, level_view[l]),
                ),
                5 => (
                    _mm512_permutex2var_ps(level_thr[5], pos, level_thr[6]),
                    _mm512_permutex2var_epi32(level_view[5], pos, level_view[6]),
                ),
                _ => {
                    let index = _mm512_add_epi32(pos, _mm512_set1_epi32((1 << l) - 1));
                    (
                        _mm512_i32gather_ps::<4>(index, thr),
                        _mm512_i32gather_epi32::<4>(index, vix),
                    )
                }
            };
            let x = _mm512_i32gather_ps::<4>(_mm512_add_epi32(row_offsets, v), block);
            let first = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, t);
            let pos = _mm512_add_epi32(pos, pos);
            _mm512_mask_add_epi32(pos, !first, pos, one)
        }
    }

    /// The leaf values at 16 rows' final positions.
    #[inline(always)]
    unsafe fn leaf_of<const D: usize>(pos: __m512i, leaf_regs: &[__m512; 4], leaves: *const f32) -> __m512 {
        unsafe {
            match D {
                0..=4 => _mm512_permutexvar_ps(pos, leaf_regs[0]),
                5 => _mm512_permutex2var_ps(leaf_regs[0], pos, leaf_regs[1]),
                6 => {
                    let low = _mm512_permutex2var_ps(leaf_regs[0], pos, leaf_regs[1]);
                    let high = _mm512_permutex2var_ps(leaf_regs[2], pos, leaf_regs[3]);
                    _mm512_mask_blend_ps(_mm512_test_epi32_mask(pos, _mm512_set1_epi32(32)), low, high)
                }
                _ => _mm512_i32gather_ps::<4>(pos, leaves),
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Adds one depth-`D` perfect tree's leaf to `sums[r]` for each row `r`
    /// (a multiple of 8 rows) of the row-major `views`.
    #[target_feature(enable = "avx2")]
    pub unsafe fn run<const D: usize>(
        thresholds: &[f32],
        view_of: &[i32],
        leaves: &[f32],
        views: &[f32],
        view_major: &[f32],
        n_views: usize,
        sums: &mut [f32],
    ) {
        unsafe {
            // Columns of `view_major` are as long as the block.
            let (vm, column_len) = (view_major.as_ptr(), view_major.len() / n_views.max(1));
            let thr = thresholds.as_ptr();
            let vix = view_of.as_ptr();
            // Levels 0-3 (1-8 nodes), one register each: the layout pads
            // every tree with 16 nodes of slack, so the loads stay inside.
            let mut level_thr = [_mm256_setzero_ps(); 4];
            let mut level_view = [_mm256_setzero_si256(); 4];
            for l in 0..D.min(4) {
                let offset = (1usize << l) - 1;
                level_thr[l] = _mm256_loadu_ps(thr.add(offset));
                level_view[l] = _mm256_loadu_si256(vix.add(offset) as *const __m256i);
            }
            // The layout holds at least 64 leaves per tree.
            let lp = leaves.as_ptr();
            let leaf_reg = _mm256_loadu_ps(lp);
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let stride = _mm256_set1_epi32(n_views as i32);
            let one = _mm256_set1_epi32(1);
            let block = views.as_ptr();
            let row_offsets_at =
                |r: usize| _mm256_mullo_epi32(_mm256_add_epi32(lanes, _mm256_set1_epi32(r as i32)), stride);
            // `C` chunks of 8 rows walk together, to fill the gathers' latency.
            let mut r = 0;
            const C: usize = 8;
            while r + 8 * C <= sums.len() {
                let row_offsets: [__m256i; C] = std::array::from_fn(|c| row_offsets_at(r + 8 * c));
                let mut pos = [_mm256_setzero_si256(); C];
                for l in 0..D {
                    for (c, (p, &offsets)) in pos.iter_mut().zip(&row_offsets).enumerate() {
                        *p = match l < TOP_LEVELS {
                            true => top_level_step(l, *p, r + 8 * c, thr, vix, vm, column_len, one),
                            false => level_step(l, *p, offsets, &level_thr, &level_view, thr, vix, block, one),
                        };
                    }
                }
                for (c, &p) in pos.iter().enumerate() {
                    let leaf = leaf_of::<D>(p, leaf_reg, lp);
                    let out = sums.as_mut_ptr().add(r + 8 * c);
                    _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), leaf));
                }
                r += 8 * C;
            }
            while r < sums.len() {
                let mut pos = _mm256_setzero_si256();
                let row_offsets = row_offsets_at(r);
                for l in 0..D {
                    pos = match l < TOP_LEVELS {
                        true => top_level_step(l, pos, r, thr, vix, vm, column_len, one),
                        false => level_step(l, pos, row_offsets, &level_thr, &level_view, thr, vix, block, one),
                    };
                }
                let leaf = leaf_of::<D>(pos, leaf_reg, lp);
                let out = sums.as_mut_ptr().add(r);
                _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), leaf));
                r += 8;
            }
        }
    }

    /// Levels walked by comparing every node's view, loaded for 8 rows at
    /// once from the view-major block, instead of gathering each row's.
    const TOP_LEVELS: usize = 4;

    /// One of the top levels for 8 rows (`row` the first): each node's
    /// comparison for every row, kept for the rows at that node.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn top_level_step(
        l: usize,
        pos: __m256i,
        row: usize,
        thr: *const f32,
        vix: *const i32,
        view_major: *const f32,
        stride: usize,
        one: __m256i,
    ) -> __m256i {
        unsafe {
            let base = (1usize << l) - 1;
            let mut first = _mm256_setzero_si256();
            for n in 0..(1usize << l) {
                let node = base + n;
                let x = _mm256_loadu_ps(view_major.add(*vix.add(node) as usize * stride + row));
                let goes_first = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(*thr.add(node))));
                first = match l {
                    0 => goes_first,
                    _ => _mm256_or_si256(
                        first,
                        _mm256_and_si256(goes_first, _mm256_cmpeq_epi32(pos, _mm256_set1_epi32(n as i32))),
                    ),
                };
            }
            let pos = _mm256_add_epi32(pos, pos);
            _mm256_add_epi32(pos, _mm256_andnot_si256(first, one))
        }
    }

    /// One level of 8 rows' walk: look up each row's split, gather its view
    /// value, and step to the first child (`x <= t`, NaN fails) or second.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn level_step(
        l: usize,
        pos: __m256i,
        row_offsets: __m256i,
        level_thr: &[__m256; 4],
        level_view: &[__m256i; 4],
        thr: *const f32,
        vix: *const i32,
        block: *const f32,
        one: __m256i,
    ) -> __m256i {
        unsafe {
            let (t, v) = match l {
                0..=3 => (
                    _mm256_permutevar8x32_ps(level_thr[l], pos),
                    _mm256_permutevar8x32_epi32(level_view[l], pos),
                ),
                _ => {
                    let index = _mm256_add_epi32(pos, _mm256_set1_epi32((1 << l) - 1));
                    (
                        _mm256_i32gather_ps::<4>(thr, index),
                        _mm256_i32gather_epi32::<4>(vix, index),
                    )
                }
            };
            let x = _mm256_i32gather_ps::<4>(block, _mm256_add_epi32(row_offsets, v));
            // All ones where the row goes first (`x <= t`, ordered: NaN fails).
            let first = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, t));
            let pos = _mm256_add_epi32(pos, pos);
            _mm256_add_epi32(pos, _mm256_andnot_si256(first, one))
        }
    }

    /// The leaf values at 8 rows' final positions.
    #[inline(always)]
    unsafe fn leaf_of<const D: usize>(pos: __m256i, leaf_reg: __m256, leaves: *const f32) -> __m256 {
        unsafe {
            match D {
                0..=3 => _mm256_permutevar8x32_ps(leaf_reg, pos),
                _ => _mm256_i32gather_ps::<4>(leaves, pos),
            }
        }
    }
}
