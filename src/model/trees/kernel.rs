//! The seam between the compiled evaluator ([`super::eval`]) and the kernels
//! it hands trees to: the float types it compares and sums in, the
//! comparison every walk makes, what the AVX-512 kernel ([`super::simd`])
//! reads of a program, and the flat arrays the CUDA kernel (`cuda.rs`, with
//! the `cuda` feature) uploads. The kernels see only these, never the
//! evaluator itself.

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

/// A vectorised kernel for some of a program's trees.
pub trait SimdTrees<T> {
    /// Adds tree `tree`'s leaf for each row of `views` to `sums`; false when
    /// the kernel does not take this tree.
    /// `view_major` holds the same views column by column (view `v` of row
    /// `r` at `v * sums.len() + r`).
    fn run(&self, tree: usize, views: &[T], view_major: &[T], n_views: usize, sums: &mut [T]) -> bool;
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
