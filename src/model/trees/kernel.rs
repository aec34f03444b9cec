//! The seam between the compiled evaluator ([`super::eval`]) and the kernels
//! it hands trees to: the float types it compares and sums in, the
//! comparison every walk makes, what the vector kernels ([`super::binned`],
//! [`super::simd`]) read of a program and of a block, and the flat arrays
//! the CUDA kernel (`cuda.rs`, with the `cuda` feature) uploads. The kernels
//! see only these, never the evaluator itself.

/// Rows per block: the block's views (rows x views x 4-8 bytes) stay in L1/L2
/// while every tree runs over it.
pub(crate) const BLOCK_ROWS: usize = 128;

/// The float type a library compares and sums in.
pub trait Scalar:
    Copy + PartialOrd + std::ops::Add<Output = Self> + std::ops::Neg<Output = Self> + Send + Sync
{
    const ZERO: Self;
    const INFINITY: Self;
    const NAN: Self;
    fn from_f64(x: f64) -> Self;
    fn to_f64(self) -> f64;
    /// The largest value below `self` (NaN stays NaN, -inf has none: NaN).
    fn next_down(self) -> Self;
    fn is_nan(self) -> bool;
    fn min(self, other: Self) -> Self;
    fn max(self, other: Self) -> Self;
}

macro_rules! scalar {
    ($t:ty, $bits:ty) => {
        impl Scalar for $t {
            const ZERO: Self = 0.0;
            const INFINITY: Self = <$t>::INFINITY;
            const NAN: Self = <$t>::NAN;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn next_down(self) -> Self {
                if self.is_nan() || self == <$t>::NEG_INFINITY {
                    <$t>::NAN
                } else if self == 0.0 {
                    -<$t>::from_bits(1)
                } else if self > 0.0 {
                    <$t>::from_bits(self.to_bits() - 1)
                } else {
                    <$t>::from_bits(self.to_bits() + 1)
                }
            }
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
            fn min(self, other: Self) -> Self {
                <$t>::min(self, other)
            }
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
        }
    };
}
scalar!(f32, u32);
scalar!(f64, u64);

/// `!(x <= threshold)`: true for NaN, which is how missing values reach the
/// second child. (`x > threshold` would be false for NaN.)
#[inline(always)]
#[allow(clippy::neg_cmp_op_on_partial_ord)]
pub(crate) fn goes_second<T: Scalar>(x: T, threshold: T) -> bool {
    !(x <= threshold)
}

/// One block of rows' views as the vector kernels read them.
#[derive(Debug, Clone, Copy)]
pub struct BlockViews<'a, T> {
    /// Row by row: view `v` of row `r` at `r * n_views + v`. Empty when
    /// [`SimdTrees::needs_row_major`] is false.
    pub rows: &'a [T],
    /// Column by column: view `v` of row `r` at `v * rows + r`, for the
    /// block's `rows` rows.
    pub columns: &'a [T],
    pub n_views: usize,
    /// The byte kernel's bins ([`SimdTrees::begin_block`]).
    pub bins: &'a [i8],
}

/// The vectorised kernels for some of a program's trees.
pub trait SimdTrees<T> {
    /// Whether some tree reads the row-major views (a tree no kernel takes,
    /// or the gather kernels'); when none does, the evaluator skips the
    /// transpose.
    fn needs_row_major(&self) -> bool;
    /// Room for a block's bins (empty without the byte kernel).
    fn bins_buffer(&self) -> Vec<i8>;
    /// Prepares a block for [`SimdTrees::run`]: bins its views.
    fn begin_block(&self, columns: &[T], n_rows: usize, bins: &mut [i8]);
    /// Adds tree `tree`'s leaf for each row of `block` to `sums`; false when
    /// no kernel takes this tree.
    fn run(&self, tree: usize, block: &BlockViews<T>, sums: &mut [T]) -> bool;
}

/// What the SIMD layout is built from: a compiled float32 program's trees.
pub trait PerfectSource {
    fn n_trees(&self) -> usize;
    /// The tree's depth, when it has no categorical split.
    fn tree_shape(&self, tree: usize) -> Option<u32>;
    fn root(&self, tree: usize) -> u32;
    /// `(threshold, view, first child)` of a split; `None` for a leaf.
    fn step(&self, slot: u32) -> Option<(f32, u32, u32)>;
    fn leaf_value(&self, slot: u32) -> f32;
    fn zero_view(&self) -> u32;
    fn n_views(&self) -> usize;
}

/// One tree padded to a perfect tree of its depth: node `i` has children
/// `2i+1` and `2i+2`, and leaf `j` is node `2^depth - 1 + j`.
#[derive(Debug)]
pub(crate) struct PerfectNodes {
    pub depth: u32,
    pub thresholds: Vec<f32>,
    pub views: Vec<u32>,
    pub leaves: Vec<f32>,
}

/// Tree `tree` of `source` (of depth `depth`) as a perfect tree. A leaf above
/// the last level fills its whole subtree: its padding nodes compare the
/// zero view with +inf and always go first.
pub(crate) fn perfect_tree(source: &dyn PerfectSource, tree: usize, depth: u32) -> PerfectNodes {
    let n_nodes = (1usize << depth) - 1;
    let mut nodes = PerfectNodes {
        depth,
        thresholds: vec![f32::INFINITY; n_nodes],
        views: vec![source.zero_view(); n_nodes],
        leaves: vec![0.0; 1 << depth],
    };
    fill(source, &mut nodes, 0, source.root(tree), 0);
    nodes
}

/// Places step `slot` at perfect node `node` (level `level`).
fn fill(source: &dyn PerfectSource, nodes: &mut PerfectNodes, node: usize, slot: u32, level: u32) {
    let step = source.step(slot);
    if level == nodes.depth {
        // The leaf under this slot (a leaf of the source tree).
        nodes.leaves[node - nodes.thresholds.len()] = source.leaf_value(slot);
        return;
    }
    let (left, right) = match step {
        Some((threshold, view, first)) => {
            nodes.thresholds[node] = threshold;
            nodes.views[node] = view;
            (first, first + 1)
        }
        None => (slot, slot),
    };
    fill(source, nodes, 2 * node + 1, left, level + 1);
    fill(source, nodes, 2 * node + 2, right, level + 1);
}

/// The kernel function for a tree of depth `$depth`: `$module::$kernel::<D>`
/// for each depth listed, the last also taking anything deeper (callers
/// only build layouts up to it).
macro_rules! by_depth {
    ($depth:expr, $module:ident :: $kernel:ident, [$($d:literal),*], $deepest:literal) => {
        match $depth {
            $($d => $module::$kernel::<$d>,)*
            _ => $module::$kernel::<$deepest>,
        }
    };
}
pub(crate) use by_depth;

/// A compiled program flattened into the arrays `kernels/trees.cu` reads
/// (its header describes them), ready to upload to a GPU once per model.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) struct DeviceLayout<T> {
    pub n_features: usize,
    pub n_views: usize,
    pub n_groups: usize,
    /// `(feature, kind)` per view.
    pub views: Vec<u32>,
    /// `Step<T>` per node slot, as the kernel's struct (`repr(C)`) bytes.
    pub steps: Vec<u8>,
    pub leaf_values: Vec<T>,
    /// `(root, depth, group, has_categorical)` per tree.
    pub trees: Vec<u32>,
    /// Tree indices group by group, each group in the model's tree order.
    pub tree_order: Vec<u32>,
    /// `n_groups + 1` offsets into `tree_order`.
    pub group_start: Vec<u32>,
    pub base_margin: Vec<T>,
    /// 0 sum, 1 min, 2 max.
    pub aggregate: u32,
    /// `(view, start, end, rule, nan_first)` per set split; `rule` 0 XGBoost
    /// category, 1 LightGBM category, 2 / 3 ONNX membership with members
    /// going first / second.
    pub categorical: Vec<u32>,
    pub words: Vec<u32>,
    pub members: Vec<T>,
}

/// The program in the precision the GPU runs it in.
#[derive(Debug)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) enum DeviceProgram {
    F32(DeviceLayout<f32>),
    F64(DeviceLayout<f64>),
}
