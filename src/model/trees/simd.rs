//! The gather kernels for float32 trees (XGBoost, ONNX) of depth 10 or less
//! that the byte kernel ([`super::binned`]) does not take: each tree padded
//! to a perfect tree, 16 rows walked at once with AVX-512, 8 with AVX2.
//!
//! Node `i` of a perfect tree has children `2i+1` and `2i+2`, so a row's
//! position needs no child pointers: `pos = 2 * pos + (went second)`.
//! Levels 0-3 are walked without gathers ([`TOP_LEVELS`]); the thresholds
//! and view numbers of levels 4 and 5 live in registers, looked up with one
//! permute per level, and deeper levels' are gathered, as is each row's view
//! value below level 3. Comparison semantics are the scalar evaluator's
//! (`x <= threshold` goes first, NaN goes second), so results are identical.
//!
//! The AVX2 kernel is the same walk on 8 lanes: deeper levels and the
//! leaves of trees deeper than 3 are gathered.
//!
//! Chosen at run time by [`super::dispatch`] (`is_x86_feature_detected!`):
//! the binary runs on any x86-64 and uses AVX-512F where the CPU has it,
//! else AVX2, else neither (the scalar evaluator).

use super::kernel::{PerfectSource, by_depth, perfect_tree};

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
                    let nodes = perfect_tree(source, t, depth);
                    let tree = PerfectTree {
                        depth,
                        offset: forest.thresholds.len(),
                        leaf_offset: forest.leaves.len(),
                    };
                    forest.thresholds.extend_from_slice(&nodes.thresholds);
                    forest.views.extend(nodes.views.iter().map(|&v| v as i32));
                    forest.leaves.extend_from_slice(&nodes.leaves);
                    // Levels 0-4 load with masks and level 5 as nodes 31..63 of a
                    // tree of depth >= 6, all inside the tree; the padding is slack.
                    forest.thresholds.resize(forest.thresholds.len() + 16, f32::INFINITY);
                    forest.views.resize(forest.views.len() + 16, source.zero_view() as i32);
                    // The kernel loads 64 leaves into registers whatever the depth.
                    forest.leaves.resize(tree.leaf_offset + (1usize << depth).max(64), 0.0);
                    tree
                });
            forest.trees.push(tree);
        }
        forest.trees.iter().any(Option::is_some).then_some(forest)
    }

    /// Whether tree `tree` runs here.
    pub fn takes(&self, tree: usize) -> bool {
        self.trees[tree].is_some()
    }

    /// How many trees run here.
    pub fn n_trees(&self) -> usize {
        self.trees.iter().flatten().count()
    }

    /// The instruction set it runs on.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Adds tree `tree`'s leaf for each row of `views` to `sums`; false when
    /// the kernel does not take this tree.
    /// `view_major` holds the same views column by column (view `v` of row
    /// `r` at `v * sums.len() + r`).
    pub fn run(&self, tree: usize, views: &[f32], view_major: &[f32], n_views: usize, sums: &mut [f32]) -> bool {
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
                    Isa::Avx512 => (by_depth!(tree.depth, avx512::run, [1, 2, 3, 4, 5, 6, 7, 8, 9], 10), 16),
                    Isa::Avx2 => (by_depth!(tree.depth, avx2::run, [1, 2, 3, 4, 5, 6, 7, 8, 9], 10), 8),
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

/// Levels 0-3 (15 nodes) are walked without gathers: each node's view is
/// loaded for a register of rows at once from the view-major block,
/// compared, and kept for the rows at that node; AMD CPUs serve gathers
/// slowly enough that 15 loads beat 4 gathers.
#[cfg(target_arch = "x86_64")]
const TOP_LEVELS: usize = 4;

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::TOP_LEVELS;

    /// What every level step of one tree over one block reads.
    struct Walk {
        thr: *const f32,
        vix: *const i32,
        /// The block's views column by column, columns `column_len` long.
        view_major: *const f32,
        column_len: usize,
        /// The block's views row by row, rows `stride` long.
        block: *const f32,
        /// Levels 4 (16 nodes) and 5 (32 nodes: its first and second 16),
        /// looked up with one permute each.
        level_thr: [__m512; 3],
        level_view: [__m512i; 3],
        one: __m512i,
    }

    impl Walk {
        /// One level of 16 rows' walk (`row` the first, `row_offsets` each
        /// one's start in `block`): step to the first child (`x <= t`, NaN
        /// fails) or the second.
        #[inline(always)]
        unsafe fn step(&self, l: usize, pos: __m512i, row: usize, row_offsets: __m512i) -> __m512i {
            unsafe {
                let first = match l < TOP_LEVELS {
                    true => self.top_level(l, pos, row),
                    false => {
                        let (t, v) = match l {
                            4 => (
                                _mm512_permutexvar_ps(pos, self.level_thr[0]),
                                _mm512_permutexvar_epi32(pos, self.level_view[0]),
                            ),
                            5 => (
                                _mm512_permutex2var_ps(self.level_thr[1], pos, self.level_thr[2]),
                                _mm512_permutex2var_epi32(self.level_view[1], pos, self.level_view[2]),
                            ),
                            _ => {
                                let index = _mm512_add_epi32(pos, _mm512_set1_epi32((1 << l) - 1));
                                (
                                    _mm512_i32gather_ps::<4>(index, self.thr),
                                    _mm512_i32gather_epi32::<4>(index, self.vix),
                                )
                            }
                        };
                        let x = _mm512_i32gather_ps::<4>(_mm512_add_epi32(row_offsets, v), self.block);
                        _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, t)
                    }
                };
                let pos = _mm512_add_epi32(pos, pos);
                _mm512_mask_add_epi32(pos, !first, pos, self.one)
            }
        }

        /// Which of 16 rows at level `l` (< [`TOP_LEVELS`]) go first: each
        /// node's comparison for every row, kept for the rows at that node.
        #[inline(always)]
        unsafe fn top_level(&self, l: usize, pos: __m512i, row: usize) -> __mmask16 {
            unsafe {
                let base = (1usize << l) - 1;
                let mut first: __mmask16 = 0;
                for n in 0..(1usize << l) {
                    let node = base + n;
                    let x = _mm512_loadu_ps(
                        self.view_major
                            .add(*self.vix.add(node) as usize * self.column_len + row),
                    );
                    let goes_first = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, _mm512_set1_ps(*self.thr.add(node)));
                    let here = match l {
                        0 => 0xFFFF,
                        _ => _mm512_cmpeq_epi32_mask(pos, _mm512_set1_epi32(n as i32)),
                    };
                    first |= goes_first & here;
                }
                first
            }
        }
    }

    /// Adds one depth-`D` perfect tree's leaf to `sums[r]` for each row `r`
    /// (a multiple of 16 rows) of the block, given row by row (`views`) and
    /// column by column (`view_major`).
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
            let (thr, vix) = (thresholds.as_ptr(), view_of.as_ptr());
            let mut level_thr = [_mm512_setzero_ps(); 3];
            let mut level_view = [_mm512_setzero_si512(); 3];
            // (A tree of depth D has 2^D - 1 nodes: levels 4 and 5 are inside.)
            if D > 4 {
                level_thr[0] = _mm512_loadu_ps(thr.add(15));
                level_view[0] = _mm512_loadu_si512(vix.add(15) as *const _);
            }
            if D > 5 {
                level_thr[1] = _mm512_loadu_ps(thr.add(31));
                level_thr[2] = _mm512_loadu_ps(thr.add(47));
                level_view[1] = _mm512_loadu_si512(vix.add(31) as *const _);
                level_view[2] = _mm512_loadu_si512(vix.add(47) as *const _);
            }
            let walk = Walk {
                thr,
                vix,
                view_major: view_major.as_ptr(),
                // Columns are as long as the block, not only the full
                // registers this call walks.
                column_len: view_major.len() / n_views.max(1),
                block: views.as_ptr(),
                level_thr,
                level_view,
                one: _mm512_set1_epi32(1),
            };
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
            let row_offsets_at =
                |r: usize| _mm512_mullo_epi32(_mm512_add_epi32(lanes, _mm512_set1_epi32(r as i32)), stride);
            let (n_rows, out) = (sums.len(), sums.as_mut_ptr());
            let add_leaves = |r: usize, pos: __m512i| {
                let leaf = leaf_of::<D>(pos, &leaf_regs, lp);
                _mm512_storeu_ps(out.add(r), _mm512_add_ps(_mm512_loadu_ps(out.add(r)), leaf));
            };
            // `C` chunks of 16 rows walk together: a level's gathers take tens
            // of cycles to arrive, and independent chunks fill that wait.
            let mut r = 0;
            const C: usize = 8;
            while r + 16 * C <= n_rows {
                let row_offsets: [__m512i; C] = std::array::from_fn(|c| row_offsets_at(r + 16 * c));
                let mut pos = [_mm512_setzero_si512(); C];
                for l in 0..D {
                    for (c, p) in pos.iter_mut().enumerate() {
                        *p = walk.step(l, *p, r + 16 * c, row_offsets[c]);
                    }
                }
                for (c, &p) in pos.iter().enumerate() {
                    add_leaves(r + 16 * c, p);
                }
                r += 16 * C;
            }
            while r < n_rows {
                let row_offsets = row_offsets_at(r);
                let pos = (0..D).fold(_mm512_setzero_si512(), |pos, l| walk.step(l, pos, r, row_offsets));
                add_leaves(r, pos);
                r += 16;
            }
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

    use super::TOP_LEVELS;

    /// What every level step of one tree over one block reads.
    struct Walk {
        thr: *const f32,
        vix: *const i32,
        /// The block's views column by column, columns `column_len` long.
        view_major: *const f32,
        column_len: usize,
        /// The block's views row by row.
        block: *const f32,
        one: __m256i,
    }

    impl Walk {
        /// One level of 8 rows' walk (`row` the first, `row_offsets` each
        /// one's start in `block`): step to the first child (`x <= t`, NaN
        /// fails) or the second.
        #[inline(always)]
        unsafe fn step(&self, l: usize, pos: __m256i, row: usize, row_offsets: __m256i) -> __m256i {
            unsafe {
                // All ones where the row goes first.
                let first = match l < TOP_LEVELS {
                    true => self.top_level(l, pos, row),
                    false => {
                        let index = _mm256_add_epi32(pos, _mm256_set1_epi32((1 << l) - 1));
                        let t = _mm256_i32gather_ps::<4>(self.thr, index);
                        let v = _mm256_i32gather_epi32::<4>(self.vix, index);
                        let x = _mm256_i32gather_ps::<4>(self.block, _mm256_add_epi32(row_offsets, v));
                        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, t))
                    }
                };
                let pos = _mm256_add_epi32(pos, pos);
                _mm256_add_epi32(pos, _mm256_andnot_si256(first, self.one))
            }
        }

        /// Which of 8 rows at level `l` (< [`TOP_LEVELS`]) go first (all
        /// ones): each node's comparison for every row, kept for the rows at
        /// that node.
        #[inline(always)]
        unsafe fn top_level(&self, l: usize, pos: __m256i, row: usize) -> __m256i {
            unsafe {
                let base = (1usize << l) - 1;
                let mut first = _mm256_setzero_si256();
                for n in 0..(1usize << l) {
                    let node = base + n;
                    let x = _mm256_loadu_ps(
                        self.view_major
                            .add(*self.vix.add(node) as usize * self.column_len + row),
                    );
                    let goes_first =
                        _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(*self.thr.add(node))));
                    first = match l {
                        0 => goes_first,
                        _ => _mm256_or_si256(
                            first,
                            _mm256_and_si256(goes_first, _mm256_cmpeq_epi32(pos, _mm256_set1_epi32(n as i32))),
                        ),
                    };
                }
                first
            }
        }
    }

    /// Adds one depth-`D` perfect tree's leaf to `sums[r]` for each row `r`
    /// (a multiple of 8 rows) of the block, given row by row (`views`) and
    /// column by column (`view_major`).
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
            let walk = Walk {
                thr: thresholds.as_ptr(),
                vix: view_of.as_ptr(),
                view_major: view_major.as_ptr(),
                // Columns are as long as the block.
                column_len: view_major.len() / n_views.max(1),
                block: views.as_ptr(),
                one: _mm256_set1_epi32(1),
            };
            // The layout holds at least 64 leaves per tree.
            let lp = leaves.as_ptr();
            let leaf_reg = _mm256_loadu_ps(lp);
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let stride = _mm256_set1_epi32(n_views as i32);
            let row_offsets_at =
                |r: usize| _mm256_mullo_epi32(_mm256_add_epi32(lanes, _mm256_set1_epi32(r as i32)), stride);
            let (n_rows, out) = (sums.len(), sums.as_mut_ptr());
            let add_leaves = |r: usize, pos: __m256i| {
                let leaf = leaf_of::<D>(pos, leaf_reg, lp);
                _mm256_storeu_ps(out.add(r), _mm256_add_ps(_mm256_loadu_ps(out.add(r)), leaf));
            };
            // `C` chunks of 8 rows walk together, to fill the gathers' latency.
            let mut r = 0;
            const C: usize = 8;
            while r + 8 * C <= n_rows {
                let row_offsets: [__m256i; C] = std::array::from_fn(|c| row_offsets_at(r + 8 * c));
                let mut pos = [_mm256_setzero_si256(); C];
                for l in 0..D {
                    for (c, p) in pos.iter_mut().enumerate() {
                        *p = walk.step(l, *p, r + 8 * c, row_offsets[c]);
                    }
                }
                for (c, &p) in pos.iter().enumerate() {
                    add_leaves(r + 8 * c, p);
                }
                r += 8 * C;
            }
            while r < n_rows {
                let row_offsets = row_offsets_at(r);
                let pos = (0..D).fold(_mm256_setzero_si256(), |pos, l| walk.step(l, pos, r, row_offsets));
                add_leaves(r, pos);
                r += 8;
            }
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
