//! The tree evaluator: an [`Ensemble`] compiled into flat node arrays and run
//! over blocks of rows with the trees as the outer loop, as a candle custom op
//! (`(n_features, n_rows)` f64 tensor in, `(n_rows, n_groups)` margins out).
//!
//! Compilation turns every numeric split, whatever its library's rule, into
//! one branch-free step, `next = first_child + !(view_value <= threshold)`:
//! - Each split reads a *view* of a feature, computed once per row: the value
//!   in the library's precision, negated, NaN -> 0 or 0 -> NaN. A NaN view
//!   value fails `<=` and so takes the second child.
//! - Which child comes first is chosen per split so that the missing rule
//!   holds: a default-left XGBoost split `x < t` becomes `-x <= -t` with its
//!   children swapped, since NaN must reach the original left child.
//! - XGBoost's `x < t` in float32 is `x <= next_down(t)`, exactly.
//! - Leaves loop to themselves (`0 <= +inf` on the constant-zero view), so
//!   every row takes the same number of steps, the tree's depth, and the
//!   steps of several rows interleave without branches.
//!
//! Categorical splits (and ONNX's equality and set-membership splits) need a
//! set lookup; trees that have them take a per-node checked path, the rest
//! the branch-free one. The arithmetic is the library's: float32 views and
//! sums for XGBoost and ONNX, float64 for LightGBM, summed per row in tree
//! order from the base margin (or, for ONNX `MIN`/`MAX`, the smallest or
//! largest leaf). (LightGBM's `average_output` is applied with the transform:
//! its raw score is the sum.)

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use super::dispatch::{CpuKernels, KernelChoice, describe_paths};
pub use super::kernel::Scalar;
use super::kernel::{BLOCK_ROWS, BlockViews, DeviceLayout, DeviceProgram, PerfectSource, SimdTrees, goes_second};
use super::{Aggregate, Ensemble, LGB_ZERO_THRESHOLD, LgbMissing, Library, Node, OnnxRule, Test, XGB_MAX_CATEGORY};
use crate::device::PerDevice;

/// Rows whose steps are interleaved: independent dependency chains that keep
/// the core busy while one row waits on a load.
const LANES: usize = 8;

/// Trees deeper than this check, after each step, whether all lanes have
/// reached their leaves.
const EARLY_EXIT_DEPTH: u32 = 8;

/// Marks a node whose `view` field indexes [`Program::categorical`].
const CATEGORICAL: u32 = 1 << 31;

/// How a view derives from its feature's f64 value. (The numbers are the
/// CUDA kernel's, `kernels/trees.cu`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
enum ViewKind {
    Value = 0,
    Negated = 1,
    /// LightGBM's value: its dense input is made sparse first, so |x| <=
    /// 1e-35 is 0.
    LgbValue,
    LgbNegated,
    /// LightGBM missing type None.
    NanToZero,
    /// LightGBM missing type Zero: 0 and NaN both become NaN.
    ZeroToNan,
    NegatedZeroToNan,
    /// The constant 0 that leaves loop on.
    Zero,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct View {
    feature: u32,
    kind: ViewKind,
}

impl View {
    #[inline]
    fn compute<T: Scalar>(self, x: f64) -> T {
        let is_zero = |x: f64| (-LGB_ZERO_THRESHOLD..=LGB_ZERO_THRESHOLD).contains(&x);
        let sparse = |x: f64| if is_zero(x) { 0.0 } else { x };
        match self.kind {
            ViewKind::Value => T::from_f64(x),
            ViewKind::Negated => -T::from_f64(x),
            ViewKind::LgbValue => T::from_f64(sparse(x)),
            ViewKind::LgbNegated => -T::from_f64(sparse(x)),
            ViewKind::NanToZero => T::from_f64(if x.is_nan() { 0.0 } else { sparse(x) }),
            ViewKind::ZeroToNan => T::from_f64(if is_zero(x) { f64::NAN } else { x }),
            ViewKind::NegatedZeroToNan => -T::from_f64(if is_zero(x) { f64::NAN } else { x }),
            ViewKind::Zero => T::ZERO,
        }
    }
}

/// Writes `compute` of each value of `column` to the next slot of `slots`
/// (a view's column of a block's row-major views).
#[inline(always)]
fn fill_view<'a, T: 'a>(column: &[f64], slots: impl Iterator<Item = &'a mut T>, compute: impl Fn(f64) -> T) {
    for (slot, &x) in slots.zip(column) {
        *slot = compute(x);
    }
}

/// One step of a tree: go to `first` if `view value <= threshold`, else to
/// `first + 1`. Leaves have `first` = themselves.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct Step<T> {
    threshold: T,
    view: u32,
    first: u32,
}

/// A split that needs a set lookup: go to the node's `first` child when
/// [`Program::categorical_goes_first`].
#[derive(Debug, Clone)]
struct CategoricalStep {
    view: u32,
    /// Into [`Program::words`] (category bitsets) or, for ONNX membership,
    /// [`Program::members`].
    words: std::ops::Range<usize>,
    rule: SetRule,
    /// Where a missing value goes (XGBoost's default side, ONNX's
    /// `missing_value_tracks_true`; LightGBM's NaN goes right).
    nan_first: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetRule {
    XgbCategory,
    LgbCategory,
    /// ONNX `BRANCH_EQ`/`NEQ`/`MEMBER`: a member goes first when `member_first`.
    OnnxMember {
        member_first: bool,
    },
}

#[derive(Debug, Clone, Copy)]
struct TreeCode {
    root: u32,
    depth: u32,
    group: u32,
    has_categorical: bool,
}

/// An ensemble compiled for arithmetic type `T`.
#[derive(Debug)]
struct Program<T> {
    n_features: usize,
    n_groups: usize,
    views: Vec<View>,
    steps: Vec<Step<T>>,
    leaf_values: Vec<T>,
    categorical: Vec<CategoricalStep>,
    words: Vec<u32>,
    /// ONNX membership values, as the view holds them.
    members: Vec<T>,
    trees: Vec<TreeCode>,
    base_margin: Vec<T>,
    aggregate: Aggregate,
    /// The constant-zero view that leaves loop on.
    zero_view: u32,
}

/// A compiled ensemble, in its library's precision.
#[derive(Debug)]
pub struct Compiled {
    precision: Precision,
    /// Its copies on GPUs, made on first use (opaque here: only
    /// `src/model/trees/cuda.rs` knows what it stores).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) uploads: PerDevice<dyn std::any::Any + Send + Sync>,
}

#[derive(Debug)]
enum Precision {
    /// XGBoost and ONNX, with the vector kernels this CPU has.
    F32(Program<f32>, Option<Box<CpuKernels>>),
    F64(Program<f64>),
}

impl PerfectSource for Program<f32> {
    fn n_trees(&self) -> usize {
        self.trees.len()
    }
    fn tree_shape(&self, tree: usize) -> Option<u32> {
        let tree = &self.trees[tree];
        (!tree.has_categorical).then_some(tree.depth)
    }
    fn root(&self, tree: usize) -> u32 {
        self.trees[tree].root
    }
    fn step(&self, slot: u32) -> Option<(f32, u32, u32)> {
        let step = self.steps[slot as usize];
        (step.first != slot).then_some((step.threshold, step.view, step.first))
    }
    fn leaf_value(&self, slot: u32) -> f32 {
        self.leaf_values[slot as usize]
    }
    fn zero_view(&self) -> u32 {
        self.zero_view
    }
    fn n_views(&self) -> usize {
        self.views.len()
    }
}

impl Compiled {
    /// Compiles a valid ensemble ([`Ensemble::validate`]; loaders and
    /// `TreeModel::new` check it), with the fastest kernels this CPU has
    /// that the SIMD cap allows ([`super::dispatch::level`]).
    pub fn new(ensemble: &Ensemble) -> Compiled {
        Compiled::with_kernels(ensemble, KernelChoice::best(super::dispatch::level()))
    }

    /// The same program with the kernels of `choice` this CPU has (tests
    /// and benches compare the kernels on one CPU).
    pub fn with_kernels(ensemble: &Ensemble, choice: KernelChoice) -> Compiled {
        debug_assert_eq!(ensemble.validate(), Ok(()));
        Compiled::with(match ensemble.library {
            Library::XGBoost | Library::Onnx => {
                let program: Program<f32> = Program::compile(ensemble);
                // The kernels sum; MIN and MAX take the scalar paths.
                let kernels = (program.aggregate == Aggregate::Sum)
                    .then(|| CpuKernels::new(&program, choice))
                    .flatten()
                    .map(Box::new);
                Precision::F32(program, kernels)
            }
            Library::LightGBM => Precision::F64(Program::compile(ensemble)),
        })
    }

    /// The same program without the vector kernels (for tests that compare).
    pub fn scalar_only(ensemble: &Ensemble) -> Compiled {
        Compiled::with_kernels(ensemble, KernelChoice::SCALAR)
    }

    /// The kernel each tree runs on on the CPU, in words:
    /// `"avx2 bytes 300 of 300 trees"`.
    pub fn cpu_kernels(&self) -> String {
        match &self.precision {
            Precision::F32(_, Some(kernels)) => kernels.describe(),
            Precision::F32(p, None) => describe_paths(p.trees.len(), &[]),
            Precision::F64(p) => describe_paths(p.trees.len(), &[]),
        }
    }

    fn with(precision: Precision) -> Compiled {
        Compiled {
            precision,
            uploads: PerDevice::default(),
        }
    }

    pub fn n_groups(&self) -> usize {
        match &self.precision {
            Precision::F32(p, _) => p.n_groups,
            Precision::F64(p) => p.n_groups,
        }
    }

    /// Row-major margins of feature-major `features` (`n_features` x `n_rows`).
    fn margins_of(&self, features: &[f64], n_rows: usize) -> CpuStorage {
        match &self.precision {
            Precision::F32(p, simd) => {
                CpuStorage::F32(p.margins(features, n_rows, simd.as_deref().map(|s| s as &dyn SimdTrees<f32>)))
            }
            Precision::F64(p) => CpuStorage::F64(p.margins(features, n_rows, None)),
        }
    }
}

impl<T: Scalar> Program<T> {
    fn compile(ensemble: &Ensemble) -> Program<T> {
        let mut program = Program {
            n_features: ensemble.features.len(),
            n_groups: ensemble.n_groups,
            views: Vec::new(),
            steps: Vec::new(),
            leaf_values: Vec::new(),
            categorical: Vec::new(),
            words: Vec::new(),
            members: Vec::new(),
            trees: Vec::with_capacity(ensemble.trees.len()),
            base_margin: ensemble.base_margin.iter().map(|&b| T::from_f64(b)).collect(),
            aggregate: ensemble.aggregate,
            zero_view: 0,
        };
        let mut view_index = std::collections::HashMap::new();
        let mut view = |program: &mut Program<T>, feature: usize, kind: ViewKind| -> u32 {
            let view = View {
                feature: feature as u32,
                kind,
            };
            *view_index.entry(view).or_insert_with(|| {
                program.views.push(view);
                (program.views.len() - 1) as u32
            })
        };
        let zero_view = view(&mut program, 0, ViewKind::Zero);
        program.zero_view = zero_view;

        for tree in &ensemble.trees {
            let root = program.steps.len() as u32;
            let mut has_categorical = false;
            let mut depth = 0;
            // Breadth-first, so each split's two children sit side by side.
            // Queue entries: (node in the source tree, its slot, its depth).
            let mut queue = std::collections::VecDeque::from([(0usize, root, 0u32)]);
            program.steps.push(leaf_step(root, zero_view));
            program.leaf_values.push(T::ZERO);
            while let Some((node, slot, level)) = queue.pop_front() {
                let (first, second, step) = match &tree.nodes[node] {
                    Node::Leaf { value } => {
                        program.leaf_values[slot as usize] = T::from_f64(*value);
                        depth = depth.max(level);
                        continue;
                    }
                    Node::Split {
                        feature,
                        test,
                        left,
                        right,
                    } => {
                        let (left, right) = (*left, *right);
                        match test {
                            Test::XgbLess {
                                threshold,
                                default_left: false,
                            } => (
                                left,
                                right,
                                (
                                    view(&mut program, *feature, ViewKind::Value),
                                    next_down_f32::<T>(*threshold),
                                ),
                            ),
                            Test::XgbLess {
                                threshold,
                                default_left: true,
                            } => (
                                right,
                                left,
                                (
                                    view(&mut program, *feature, ViewKind::Negated),
                                    T::from_f64(-*threshold as f64),
                                ),
                            ),
                            Test::LgbLessEq {
                                threshold,
                                default_left,
                                missing,
                            } => {
                                let (kind, negated) = match (missing, default_left) {
                                    (LgbMissing::None, _) => (ViewKind::NanToZero, false),
                                    (LgbMissing::NaN, false) => (ViewKind::LgbValue, false),
                                    (LgbMissing::NaN, true) => (ViewKind::LgbNegated, true),
                                    (LgbMissing::Zero, false) => (ViewKind::ZeroToNan, false),
                                    (LgbMissing::Zero, true) => (ViewKind::NegatedZeroToNan, true),
                                };
                                let v = view(&mut program, *feature, kind);
                                if negated {
                                    // -x <= next_down(-t)  <=>  x > t: the right child comes first.
                                    (right, left, (v, T::from_f64(-*threshold).next_down()))
                                } else {
                                    (left, right, (v, T::from_f64(*threshold)))
                                }
                            }
                            Test::XgbCategory {
                                right_set,
                                default_left,
                            } => {
                                has_categorical = true;
                                let v = view(&mut program, *feature, ViewKind::Value);
                                let index =
                                    program.push_categorical(v, &right_set.0, SetRule::XgbCategory, *default_left);
                                (left, right, (index, T::ZERO))
                            }
                            Test::LgbCategory { left_set } => {
                                has_categorical = true;
                                let v = view(&mut program, *feature, ViewKind::LgbValue);
                                let index = program.push_categorical(v, &left_set.0, SetRule::LgbCategory, false);
                                (left, right, (index, T::ZERO))
                            }
                            Test::OnnxCompare {
                                rule,
                                threshold,
                                missing_left,
                            } => {
                                // `x <rule> t`, true left; NaN to the left when
                                // `missing_left`. Each becomes `view <= t'` with
                                // NaN failing it, so the side NaN takes is second.
                                let t = *threshold;
                                let (kind, first_is_left, t) = match (rule, missing_left) {
                                    // x <= t
                                    (OnnxRule::Leq, false) => (ViewKind::Value, true, T::from_f64(t as f64)),
                                    // !(x > t) = !(-x <= next_down(-t))
                                    (OnnxRule::Leq, true) => (ViewKind::Negated, false, next_down_f32::<T>(-t)),
                                    // x <= next_down(t)
                                    (OnnxRule::Lt, false) => (ViewKind::Value, true, next_down_f32::<T>(t)),
                                    // !(x >= t) = !(-x <= -t)
                                    (OnnxRule::Lt, true) => (ViewKind::Negated, false, T::from_f64(-t as f64)),
                                    // -x <= -t
                                    (OnnxRule::Gte, false) => (ViewKind::Negated, true, T::from_f64(-t as f64)),
                                    // !(x < t) = !(x <= next_down(t))
                                    (OnnxRule::Gte, true) => (ViewKind::Value, false, next_down_f32::<T>(t)),
                                    // -x <= next_down(-t)
                                    (OnnxRule::Gt, false) => (ViewKind::Negated, true, next_down_f32::<T>(-t)),
                                    // !(x <= t)
                                    (OnnxRule::Gt, true) => (ViewKind::Value, false, T::from_f64(t as f64)),
                                };
                                let v = view(&mut program, *feature, kind);
                                if first_is_left {
                                    (left, right, (v, t))
                                } else {
                                    (right, left, (v, t))
                                }
                            }
                            Test::OnnxMember {
                                values,
                                member_left,
                                missing_left,
                            } => {
                                has_categorical = true;
                                let v = view(&mut program, *feature, ViewKind::Value);
                                let start = program.members.len();
                                program.members.extend(values.iter().map(|&x| T::from_f64(x as f64)));
                                program.categorical.push(CategoricalStep {
                                    view: v,
                                    words: start..program.members.len(),
                                    rule: SetRule::OnnxMember {
                                        member_first: *member_left,
                                    },
                                    nan_first: *missing_left,
                                });
                                let index = CATEGORICAL | (program.categorical.len() - 1) as u32;
                                (left, right, (index, T::ZERO))
                            }
                        }
                    }
                };
                let first_slot = program.steps.len() as u32;
                for _ in 0..2 {
                    let s = program.steps.len() as u32;
                    program.steps.push(leaf_step(s, zero_view));
                    program.leaf_values.push(T::ZERO);
                }
                program.steps[slot as usize] = Step {
                    threshold: step.1,
                    view: step.0,
                    first: first_slot,
                };
                queue.push_back((first, first_slot, level + 1));
                queue.push_back((second, first_slot + 1, level + 1));
            }
            program.trees.push(TreeCode {
                root,
                depth,
                group: tree.group as u32,
                has_categorical,
            });
        }
        program
    }

    fn push_categorical(&mut self, view: u32, words: &[u32], rule: SetRule, nan_first: bool) -> u32 {
        let start = self.words.len();
        self.words.extend_from_slice(words);
        self.categorical.push(CategoricalStep {
            view,
            words: start..self.words.len(),
            rule,
            nan_first,
        });
        CATEGORICAL | (self.categorical.len() - 1) as u32
    }

    /// Margins for `n_rows` rows of feature-major `features`, row-major out.
    /// `simd` runs the trees it has a kernel for.
    fn margins(&self, features: &[f64], n_rows: usize, simd: Option<&dyn SimdTrees<T>>) -> Vec<T> {
        assert_eq!(features.len(), n_rows * self.n_features, "feature block shape");
        let (n_views, n_groups) = (self.views.len(), self.n_groups);
        let mut out = Vec::with_capacity(n_rows * n_groups);
        // The scalar walk reads a row's views together (they share cache
        // lines); the vector kernels read each view for many rows at once.
        let row_major = simd.is_none_or(|k| k.needs_row_major());
        let mut rows_buffer = vec![T::ZERO; if row_major { BLOCK_ROWS * n_views } else { 0 }];
        let mut columns_buffer = vec![T::ZERO; simd.map_or(0, |_| BLOCK_ROWS * n_views)];
        let mut bins = simd.map_or_else(Vec::new, |k| k.bins_buffer());
        // Per block, group-major: each tree adds to one contiguous run.
        let mut sums = vec![T::ZERO; BLOCK_ROWS * n_groups];
        for start in (0..n_rows).step_by(BLOCK_ROWS) {
            let rows = BLOCK_ROWS.min(n_rows - start);
            if let Some(kernels) = simd {
                for (v, column) in columns_buffer.chunks_exact_mut(rows).take(n_views).enumerate() {
                    self.fill_view(v, features, n_rows, start, column.iter_mut());
                }
                if row_major {
                    for (v, column) in columns_buffer.chunks_exact(rows).take(n_views).enumerate() {
                        for (r, &value) in column.iter().enumerate() {
                            rows_buffer[r * n_views + v] = value;
                        }
                    }
                }
                kernels.begin_block(&columns_buffer[..rows * n_views], rows, &mut bins);
            } else {
                for v in 0..n_views {
                    let slots = rows_buffer.iter_mut().skip(v).step_by(n_views).take(rows);
                    self.fill_view(v, features, n_rows, start, slots);
                }
            }
            let block = BlockViews {
                rows: &rows_buffer[..if row_major { rows * n_views } else { 0 }],
                columns: &columns_buffer[..simd.map_or(0, |_| rows * n_views)],
                n_views,
                bins: &bins,
            };
            for (g, &base) in self.base_margin.iter().enumerate() {
                let start = match self.aggregate {
                    Aggregate::Sum => base,
                    Aggregate::Min => T::INFINITY,
                    Aggregate::Max => -T::INFINITY,
                };
                sums[g * rows..(g + 1) * rows].fill(start);
            }
            for (t, tree) in self.trees.iter().enumerate() {
                let group = &mut sums[tree.group as usize * rows..][..rows];
                if simd.is_some_and(|k| k.run(t, &block, group)) {
                    continue;
                }
                let views = block.rows;
                match self.aggregate {
                    Aggregate::Sum => self.run_tree(tree, views, n_views, group, |a, b| a + b),
                    Aggregate::Min => self.run_tree(tree, views, n_views, group, T::min),
                    Aggregate::Max => self.run_tree(tree, views, n_views, group, T::max),
                }
            }
            for r in 0..rows {
                out.extend((0..n_groups).map(|g| sums[g * rows + r]));
            }
        }
        out
    }

    /// Writes view `v` of the block's rows (`rows` from `start`) to `slots`.
    #[inline]
    fn fill_view<'a>(
        &self,
        v: usize,
        features: &[f64],
        n_rows: usize,
        start: usize,
        slots: impl Iterator<Item = &'a mut T>,
    ) where
        T: 'a,
    {
        let view = self.views[v];
        if view.kind == ViewKind::Zero {
            // Reads no feature (a model may have none).
            slots.for_each(|slot| *slot = T::ZERO);
            return;
        }
        let column = &features[view.feature as usize * n_rows + start..];
        // One loop per kind: a match on the kind per value compiled to an
        // indirect jump per value, about 5% of an XGBoost run's time, and
        // more or less depending on where the code landed.
        macro_rules! fill_as {
            ($($kind:ident),*) => {
                match view.kind {
                    $(ViewKind::$kind => {
                        let view = View { kind: ViewKind::$kind, ..view };
                        fill_view(column, slots, |x| view.compute(x))
                    })*
                }
            };
        }
        fill_as!(
            Value,
            Negated,
            LgbValue,
            LgbNegated,
            NanToZero,
            ZeroToNan,
            NegatedZeroToNan,
            Zero
        );
    }

    /// Combines each row's leaf of `tree` into `sums[row]`.
    #[inline(always)]
    fn run_tree(&self, tree: &TreeCode, views: &[T], n_views: usize, sums: &mut [T], combine: impl Fn(T, T) -> T) {
        if tree.has_categorical {
            self.run_checked(tree, views, n_views, sums, combine);
        } else {
            self.run_branch_free(tree, views, n_views, sums, combine);
        }
    }

    /// The branch-free walk of a tree without categorical splits, combining
    /// each row's leaf into `sums[row]`.
    fn run_branch_free(
        &self,
        tree: &TreeCode,
        views: &[T],
        n_views: usize,
        sums: &mut [T],
        combine: impl Fn(T, T) -> T,
    ) {
        let n_rows = views.len() / n_views;
        let steps = &self.steps[..];
        // SAFETY (for the unchecked reads below): compilation only writes
        // `first` values that index `steps` (both children were pushed before
        // the parent's step was written; leaves point at themselves), and view
        // numbers below `n_views`; `r + lane < n_rows` keeps row offsets in
        // `views`. Checked reads cost a fifth of the evaluator's time here.
        let step = |i: u32, row: &[T]| -> u32 {
            debug_assert!((i as usize) < steps.len());
            let s = unsafe { steps.get_unchecked(i as usize) };
            debug_assert!((s.view as usize) < row.len());
            let x = unsafe { *row.get_unchecked(s.view as usize) };
            s.first + u32::from(goes_second(x, s.threshold))
        };
        // Deep, unbalanced trees (LightGBM's leaf-wise growth) stop once
        // every lane sits on a leaf: most rows end far above the deepest leaf.
        let check_done = tree.depth > EARLY_EXIT_DEPTH;
        let mut r = 0;
        while r + LANES <= n_rows {
            let rows: [&[T]; LANES] = std::array::from_fn(|lane| &views[(r + lane) * n_views..][..n_views]);
            let mut at = [tree.root; LANES];
            for _ in 0..tree.depth {
                let mut moved = false;
                for lane in 0..LANES {
                    let next = step(at[lane], rows[lane]);
                    moved |= next != at[lane];
                    at[lane] = next;
                }
                if check_done && !moved {
                    break;
                }
            }
            for lane in 0..LANES {
                sums[r + lane] = combine(sums[r + lane], self.leaf_values[at[lane] as usize]);
            }
            r += LANES;
        }
        for r in r..n_rows {
            let row = &views[r * n_views..][..n_views];
            let mut at = tree.root;
            for _ in 0..tree.depth {
                at = step(at, row);
            }
            sums[r] = combine(sums[r], self.leaf_values[at as usize]);
        }
    }

    /// The walk of a tree with categorical splits, one row at a time.
    fn run_checked(&self, tree: &TreeCode, views: &[T], n_views: usize, sums: &mut [T], combine: impl Fn(T, T) -> T) {
        for (r, row) in views.chunks_exact(n_views).enumerate() {
            let mut at = tree.root as usize;
            for _ in 0..tree.depth {
                let s = &self.steps[at];
                let second = if s.view & CATEGORICAL != 0 {
                    let c = &self.categorical[(s.view & !CATEGORICAL) as usize];
                    !self.categorical_goes_first(c, row[c.view as usize])
                } else {
                    goes_second(row[s.view as usize], s.threshold)
                };
                let next = s.first as usize + usize::from(second);
                if next == at {
                    break;
                }
                at = next;
            }
            sums[r] = combine(sums[r], self.leaf_values[at]);
        }
    }

    /// Whether a categorical split sends `x` (already in the library's
    /// precision) to its first child, which is the original left child.
    fn categorical_goes_first(&self, c: &CategoricalStep, value: T) -> bool {
        if let SetRule::OnnxMember { member_first } = c.rule {
            if value.is_nan() {
                return c.nan_first;
            }
            let members = &self.members[c.words.clone()];
            return members.iter().any(|&m| m.to_f64() == value.to_f64()) == member_first;
        }
        let x = value.to_f64();
        let words = &self.words[c.words.clone()];
        let contains = |category: u64| {
            words
                .get((category / 32) as usize)
                .is_some_and(|w| w >> (category % 32) & 1 == 1)
        };
        match c.rule {
            // In the set goes right; missing to the default side; negative
            // or beyond float32's exact integers goes left.
            SetRule::XgbCategory => {
                if x.is_nan() {
                    c.nan_first
                } else if !(0.0..XGB_MAX_CATEGORY as f64).contains(&x) {
                    true
                } else {
                    !contains(x as u64)
                }
            }
            // In the set goes left; NaN and negative go right. The value is
            // truncated first (`static_cast<int>`), so -0.5 is category 0.
            SetRule::LgbCategory => {
                let x = x.trunc();
                if !(0.0..2_147_483_648.0).contains(&x) {
                    false
                } else {
                    contains(x as u64)
                }
            }
            SetRule::OnnxMember { .. } => unreachable!("handled above"),
        }
    }
}

fn leaf_step<T: Scalar>(slot: u32, zero_view: u32) -> Step<T> {
    Step {
        threshold: T::INFINITY,
        view: zero_view,
        first: slot,
    }
}

/// XGBoost's float32 `x < t` as `x <= next_down(t)`.
fn next_down_f32<T: Scalar>(t: f32) -> T {
    T::from_f64(Scalar::next_down(t) as f64)
}

impl<T: Scalar> Program<T> {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn device_layout(&self) -> DeviceLayout<T> {
        let mut steps = Vec::with_capacity(self.steps.len() * std::mem::size_of::<Step<T>>());
        for step in &self.steps {
            // SAFETY: `Step<T>` is `repr(C)` of a float and two u32s, with no
            // padding for f32 (12 bytes) or f64 (16 bytes): every byte is
            // initialised.
            let bytes = unsafe {
                std::slice::from_raw_parts((step as *const Step<T>).cast::<u8>(), std::mem::size_of::<Step<T>>())
            };
            steps.extend_from_slice(bytes);
        }
        let mut tree_order = Vec::with_capacity(self.trees.len());
        let mut group_start = vec![0u32];
        for g in 0..self.n_groups as u32 {
            tree_order.extend((0..self.trees.len() as u32).filter(|&t| self.trees[t as usize].group == g));
            group_start.push(tree_order.len() as u32);
        }
        DeviceLayout {
            n_features: self.n_features,
            n_views: self.views.len(),
            n_groups: self.n_groups,
            views: self.views.iter().flat_map(|v| [v.feature, v.kind as u32]).collect(),
            steps,
            leaf_values: self.leaf_values.clone(),
            trees: self
                .trees
                .iter()
                .flat_map(|t| [t.root, t.depth, t.group, u32::from(t.has_categorical)])
                .collect(),
            tree_order,
            group_start,
            base_margin: self.base_margin.clone(),
            aggregate: match self.aggregate {
                Aggregate::Sum => 0,
                Aggregate::Min => 1,
                Aggregate::Max => 2,
            },
            categorical: self
                .categorical
                .iter()
                .flat_map(|c| {
                    let rule = match c.rule {
                        SetRule::XgbCategory => 0,
                        SetRule::LgbCategory => 1,
                        SetRule::OnnxMember { member_first: true } => 2,
                        SetRule::OnnxMember { member_first: false } => 3,
                    };
                    [
                        c.view,
                        c.words.start as u32,
                        c.words.end as u32,
                        rule,
                        u32::from(c.nan_first),
                    ]
                })
                .collect(),
            words: self.words.clone(),
            members: self.members.clone(),
        }
    }
}

impl Compiled {
    /// The arrays the CUDA kernel reads.
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn device_program(&self) -> DeviceProgram {
        match &self.precision {
            Precision::F32(p, _) => DeviceProgram::F32(p.device_layout()),
            Precision::F64(p) => DeviceProgram::F64(p.device_layout()),
        }
    }
}

/// The evaluator as a candle op.
struct TreeOp {
    compiled: Arc<Compiled>,
    /// On CUDA, the lanes per row (`None`: the kernel's own choice).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    lanes_per_row: Option<u32>,
}

impl CustomOp1 for TreeOp {
    fn name(&self) -> &'static str {
        "tree-ensemble"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, n_rows) = layout.shape().dims2()?;
        let CpuStorage::F64(values) = storage else {
            candle_core::bail!("tree ensemble: features must be f64");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("tree ensemble: features must be contiguous");
        };
        let margins = self.compiled.margins_of(&values[start..end], n_rows);
        Ok((margins, Shape::from((n_rows, self.compiled.n_groups()))))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        let compiled = &self.compiled;
        super::cuda::margins(
            &compiled.uploads,
            || compiled.device_program(),
            storage,
            layout,
            self.lanes_per_row,
        )
    }
}

/// Margins `(n_rows, n_groups)` of a `(n_features, n_rows)` f64 tensor.
pub fn evaluate(compiled: &Arc<Compiled>, features: &Tensor) -> candle_core::Result<Tensor> {
    evaluate_with(compiled, features, None)
}

/// [`evaluate`], with the CUDA kernel's lanes per row chosen (1 to 32, a
/// power of two; `None` for its own choice): for the tests and benchmarks
/// that compare them. The CPU ignores it.
pub fn evaluate_with(
    compiled: &Arc<Compiled>,
    features: &Tensor,
    lanes_per_row: Option<u32>,
) -> candle_core::Result<Tensor> {
    features.apply_op1_no_bwd(&TreeOp {
        compiled: compiled.clone(),
        lanes_per_row,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::trees::dispatch::SimdLevel;
    use crate::model::trees::simd::Isa;
    use crate::model::trees::synthetic::{Shape, random_ensemble, random_ensembles_every_aggregate, random_rows};

    fn margins(compiled: Compiled, values: &[f64], n_rows: usize) -> Vec<f64> {
        let features = Tensor::from_slice(values, (values.len() / n_rows, n_rows), &candle_core::Device::Cpu).unwrap();
        let out = evaluate(&Arc::new(compiled), &features).unwrap();
        out.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// Every shape the evaluator has a path for (every depth of the SIMD
    /// kernel, deep unbalanced trees, categorical splits, several groups),
    /// against the node-by-node reference, bit for bit, on rows with NaN,
    /// zeros, values on and one step beside thresholds, and category probes.
    /// (Each kernel runs alone; where the CPU lacks its instruction set,
    /// its trees take the scalar paths.)
    #[test]
    fn compiled_trees_match_the_reference_walk() {
        let mut shapes = Vec::new();
        for library in [Library::XGBoost, Library::LightGBM, Library::Onnx] {
            for (leaves, balanced) in [
                (1, true),
                (2, true),
                (8, true),
                (64, true),
                (256, true),
                (1024, true),
                (40, false),
                (300, false),
            ] {
                for categorical_share in [0.0, 0.2] {
                    for n_groups in [1, 3] {
                        shapes.push(Shape {
                            library,
                            n_trees: 12,
                            n_features: 11,
                            n_groups,
                            leaves,
                            balanced,
                            categorical_share,
                            distinct_thresholds: None,
                            seed: shapes.len() as u64,
                        });
                    }
                }
            }
        }
        // Not a multiple of the block, the lanes or the SIMD width.
        let n_rows = 2 * BLOCK_ROWS + 37;
        // ONNX ensembles also take the smallest and largest leaf.
        let ensembles: Vec<_> = shapes
            .iter()
            .flat_map(|shape| {
                random_ensembles_every_aggregate(shape)
                    .into_iter()
                    .map(move |e| (shape, e))
            })
            .collect();
        for (shape, ensemble) in &ensembles {
            let mut values = random_rows(n_rows, shape.n_features, 0.1, shape.seed + 100);
            values[3] = 0.0;
            values[4] = -0.0;
            values[5] = 1e-40;
            // Each kernel alone, whatever this CPU would choose (a kernel the
            // CPU lacks leaves its trees to the scalar paths).
            let runs: Vec<(String, Vec<f64>)> = kernel_choices()
                .into_iter()
                .map(|choice| {
                    let compiled = Compiled::with_kernels(ensemble, choice);
                    (compiled.cpu_kernels(), margins(compiled, &values, n_rows))
                })
                .collect();
            for r in 0..n_rows {
                let row: Vec<f64> = (0..shape.n_features).map(|j| values[j * n_rows + r]).collect();
                let expected = ensemble.reference_margins(&row);
                for g in 0..shape.n_groups {
                    for (kernels, margins) in &runs {
                        let got = margins[r * shape.n_groups + g];
                        assert!(
                            got.to_bits() == expected[g].to_bits(),
                            "{shape:?} {:?} row {r} group {g}: {got} with {kernels}, reference {}",
                            ensemble.aggregate,
                            expected[g]
                        );
                    }
                }
            }
        }
    }

    /// The byte kernel alone, whatever depth (no gather kernel to leave the
    /// shallow trees to).
    const BYTES_ONLY: KernelChoice = KernelChoice {
        bytes: true,
        gather: None,
    };

    /// Every kernel on its own, then all together as a run chooses them.
    fn kernel_choices() -> Vec<KernelChoice> {
        let mut choices = vec![BYTES_ONLY];
        for isa in [Isa::Avx512, Isa::Avx2] {
            choices.push(KernelChoice {
                bytes: false,
                gather: Some(isa),
            });
        }
        choices.push(KernelChoice::SCALAR);
        choices.push(KernelChoice::best(SimdLevel::Avx512));
        choices
    }

    /// The byte kernel takes trees whose views have few thresholds (as
    /// trained models' do) and leaves the others to the gather kernels; a
    /// tree with a NaN threshold (`x < -inf`) still scores exactly.
    #[test]
    fn the_byte_kernel_takes_the_trees_it_can_and_scores_them_exactly() {
        if !crate::model::trees::binned::available() {
            return;
        }
        let shape = |leaves, distinct| Shape {
            library: Library::XGBoost,
            n_trees: 40,
            n_features: 6,
            n_groups: 1,
            leaves,
            balanced: true,
            categorical_share: 0.0,
            distinct_thresholds: distinct,
            seed: 5,
        };
        // 40 trees of 63 splits over 6 features: hundreds of distinct
        // thresholds per feature unless they come from a grid.
        let few = Compiled::with_kernels(&random_ensemble(&shape(64, Some(32))), BYTES_ONLY);
        assert_eq!(few.cpu_kernels(), "avx2 bytes 40 of 40 trees");
        let many = Compiled::with_kernels(
            &random_ensemble(&Shape {
                n_features: 2,
                ..shape(64, None)
            }),
            BYTES_ONLY,
        );
        assert_eq!(many.cpu_kernels(), "scalar 40 of 40 trees");
        let deep = Compiled::with_kernels(&random_ensemble(&shape(512, Some(32))), BYTES_ONLY);
        assert_eq!(deep.cpu_kernels(), "scalar 40 of 40 trees");

        let mut ensemble = random_ensemble(&shape(8, Some(8)));
        if let Node::Split { test, .. } = &mut ensemble.trees[3].nodes[0] {
            *test = Test::XgbLess {
                threshold: f32::NEG_INFINITY,
                default_left: false,
            };
        }
        let n_rows = BLOCK_ROWS + 45;
        let values = random_rows(n_rows, 6, 0.1, 9);
        let got = margins(Compiled::with_kernels(&ensemble, BYTES_ONLY), &values, n_rows);
        for (r, got) in got.iter().enumerate() {
            let row: Vec<f64> = (0..6).map(|j| values[j * n_rows + r]).collect();
            assert_eq!(got.to_bits(), ensemble.reference_margins(&row)[0].to_bits(), "row {r}");
        }
    }

    /// The byte kernel's edges, on hand-made trees of every depth it takes:
    /// a view with 254 thresholds is binned; one with 255 sends the trees
    /// that read it elsewhere while the others stay; values on, beside and
    /// between thresholds score exactly.
    #[test]
    fn the_byte_kernel_at_254_and_255_thresholds_and_every_depth() {
        if !crate::model::trees::binned::available() {
            return;
        }
        // Perfect trees of `depth` on `feature`, thresholds taken in turn
        // from `thresholds` (XGBoost's `x < t`, missing to the right).
        let trees = |feature: usize, depth: u32, n_trees: usize, thresholds: &[f32], next: &mut usize| {
            (0..n_trees)
                .map(|t| {
                    let n_splits = (1usize << depth) - 1;
                    let mut nodes: Vec<Node> = (0..n_splits)
                        .map(|i| {
                            *next += 1;
                            Node::Split {
                                feature,
                                test: Test::XgbLess {
                                    threshold: thresholds[(*next - 1) % thresholds.len()],
                                    default_left: false,
                                },
                                left: 2 * i + 1,
                                right: 2 * i + 2,
                            }
                        })
                        .collect();
                    nodes.extend((0..=n_splits).map(|leaf| Node::Leaf {
                        value: ((leaf * 7 + t) % 13) as f64 / 16.0 - 0.4,
                    }));
                    super::super::Tree { group: 0, nodes }
                })
                .collect::<Vec<_>>()
        };
        let grid = |n: usize| (0..n).map(|i| i as f32 / 8.0 - 16.0).collect::<Vec<f32>>();
        let ensemble_of = |trees: Vec<super::super::Tree>| {
            let mut e = random_ensemble(&Shape {
                library: Library::XGBoost,
                n_trees: 1,
                n_features: 2,
                n_groups: 1,
                leaves: 2,
                balanced: true,
                categorical_share: 0.0,
                distinct_thresholds: None,
                seed: 1,
            });
            e.trees = trees;
            e
        };
        let n_rows = BLOCK_ROWS + 61;
        // Values on every threshold, one float step beside, and NaN.
        let column = |thresholds: &[f32], shift: usize| -> Vec<f64> {
            (0..n_rows)
                .map(|r| {
                    let t = thresholds[(r * 3 + shift) % thresholds.len()];
                    match r % 5 {
                        0 => f64::NAN,
                        1 => t.next_up() as f64,
                        2 => t.next_down() as f64,
                        _ => t as f64,
                    }
                })
                .collect()
        };
        for (name, wide, depths) in [
            ("254 thresholds", 254usize, vec![1u32, 2, 3, 4, 5, 6, 7, 8]),
            ("255 thresholds", 255, vec![4, 8]),
        ] {
            let mut next = 0;
            let mut all = Vec::new();
            for &depth in &depths {
                // Feature 0 reads `wide` thresholds; feature 1 a few.
                let n_trees = wide.div_ceil((1 << depth) - 1);
                all.extend(trees(0, depth, n_trees, &grid(wide), &mut next));
                all.extend(trees(1, depth, 2, &grid(9), &mut 0));
            }
            let ensemble = ensemble_of(all);
            let compiled = Compiled::with_kernels(&ensemble, BYTES_ONLY);
            let n_trees = ensemble.trees.len();
            let narrow = 2 * depths.len();
            let expected = match wide {
                254 => format!("avx2 bytes {n_trees} of {n_trees} trees"),
                _ => format!("avx2 bytes {narrow}, scalar {} of {n_trees} trees", n_trees - narrow),
            };
            assert_eq!(compiled.cpu_kernels(), expected, "{name}");
            let mut values = column(&grid(wide), 0);
            values.extend(column(&grid(9), 2));
            let got = margins(compiled, &values, n_rows);
            for (r, got) in got.iter().enumerate() {
                let row = [values[r], values[n_rows + r]];
                assert_eq!(
                    got.to_bits(),
                    ensemble.reference_margins(&row)[0].to_bits(),
                    "{name}: row {r} {row:?}"
                );
            }
        }
    }

    /// `kernels/trees.cu`'s algorithm, step for step, on the flat arrays it
    /// reads: the view kinds and set rules by the kernel's numbers, the
    /// trees group by group, `split` lanes per row adding each round's
    /// leaves in tree order. (What a GPU-less machine can check of the
    /// kernel: the layout and the order of the sums.)
    fn kernel_mirror<T: Scalar>(layout: &DeviceLayout<T>, features: &[f64], n_rows: usize, split: usize) -> Vec<T> {
        let kind_of = |k: u32| match k {
            0 => ViewKind::Value,
            1 => ViewKind::Negated,
            2 => ViewKind::LgbValue,
            3 => ViewKind::LgbNegated,
            4 => ViewKind::NanToZero,
            5 => ViewKind::ZeroToNan,
            6 => ViewKind::NegatedZeroToNan,
            7 => ViewKind::Zero,
            _ => panic!("view kind {k}"),
        };
        let step_size = std::mem::size_of::<Step<T>>();
        assert_eq!(step_size, if std::mem::size_of::<T>() == 4 { 12 } else { 16 });
        let step = |slot: u32| -> Step<T> {
            let bytes = &layout.steps[slot as usize * step_size..][..step_size];
            // SAFETY: the bytes of one `Step<T>`, as `device_layout` wrote them.
            unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Step<T>>()) }
        };
        let goes_first = |c: &[u32], value: T| -> bool {
            let (start, end, rule, nan_first) = (c[1] as usize, c[2] as usize, c[3], c[4] != 0);
            if rule >= 2 {
                if value.is_nan() {
                    return nan_first;
                }
                let member = layout.members[start..end].iter().any(|m| m.to_f64() == value.to_f64());
                return member == (rule == 2);
            }
            let words = &layout.words[start..end];
            let contains = |c: u64| words.get((c / 32) as usize).is_some_and(|w| w >> (c % 32) & 1 == 1);
            let x = value.to_f64();
            if rule == 0 {
                if x.is_nan() {
                    nan_first
                } else if !(0.0..16_777_216.0).contains(&x) {
                    true
                } else {
                    !contains(x as u64)
                }
            } else {
                let x = x.trunc();
                (0.0..2_147_483_648.0).contains(&x) && contains(x as u64)
            }
        };
        let mut out = vec![T::ZERO; n_rows * layout.n_groups];
        for r in 0..n_rows {
            let row: Vec<T> = layout
                .views
                .chunks_exact(2)
                .map(|v| match kind_of(v[1]) {
                    ViewKind::Zero => T::ZERO,
                    kind => View { feature: v[0], kind }.compute(features[v[0] as usize * n_rows + r]),
                })
                .collect();
            let walk = |t: usize| -> T {
                let tree = &layout.trees[4 * t..4 * t + 4];
                let mut at = tree[0];
                for _ in 0..tree[1] {
                    let s = step(at);
                    let second = if tree[3] != 0 && s.view & CATEGORICAL != 0 {
                        let c = &layout.categorical[5 * (s.view & !CATEGORICAL) as usize..][..5];
                        !goes_first(c, row[c[0] as usize])
                    } else {
                        goes_second(row[s.view as usize], s.threshold)
                    };
                    let next = s.first + u32::from(second);
                    if next == at {
                        break;
                    }
                    at = next;
                }
                layout.leaf_values[at as usize]
            };
            for g in 0..layout.n_groups {
                let (first, end) = (layout.group_start[g] as usize, layout.group_start[g + 1] as usize);
                let mut acc = match layout.aggregate {
                    0 => layout.base_margin[g],
                    1 => T::INFINITY,
                    _ => -T::INFINITY,
                };
                for round in (first..end).step_by(split) {
                    let leaves: Vec<T> = (0..split)
                        .map(|lane| {
                            if round + lane < end {
                                walk(layout.tree_order[round + lane] as usize)
                            } else {
                                T::ZERO
                            }
                        })
                        .collect();
                    for leaf in leaves.iter().take(end - round) {
                        acc = match layout.aggregate {
                            0 => acc + *leaf,
                            1 => acc.min(*leaf),
                            _ => acc.max(*leaf),
                        };
                    }
                }
                out[r * layout.n_groups + g] = acc;
            }
        }
        out
    }

    /// The arrays the CUDA kernel reads describe the same function as the
    /// CPU evaluator, for every library, set splits, several groups and the
    /// ONNX aggregates, bit for bit, whatever the lanes per row.
    #[test]
    fn the_device_layout_scores_like_the_evaluator() {
        let mut cases = 0;
        for library in [Library::XGBoost, Library::LightGBM, Library::Onnx] {
            for (leaves, balanced, categorical_share, n_groups) in [
                (64, true, 0.0, 1),
                (40, false, 0.2, 3),
                (1, true, 0.0, 2),
                (300, false, 0.2, 1),
            ] {
                let shape = Shape {
                    library,
                    n_trees: 9,
                    n_features: 7,
                    n_groups,
                    leaves,
                    balanced,
                    categorical_share,
                    distinct_thresholds: None,
                    seed: 7 + cases,
                };
                let ensembles = random_ensembles_every_aggregate(&shape);
                let n_rows = 301;
                let mut values = random_rows(n_rows, shape.n_features, 0.1, shape.seed);
                values[3] = 0.0;
                values[4] = -0.0;
                values[5] = 1e-40;
                for ensemble in &ensembles {
                    let compiled = Compiled::new(ensemble);
                    let expected = margins(Compiled::scalar_only(ensemble), &values, n_rows);
                    for split in [1, 4, 32] {
                        let got: Vec<f64> = match compiled.device_program() {
                            DeviceProgram::F32(l) => {
                                assert_ne!(library, Library::LightGBM, "float32 program");
                                kernel_mirror(&l, &values, n_rows, split)
                                    .iter()
                                    .map(|&x| x as f64)
                                    .collect()
                            }
                            DeviceProgram::F64(l) => kernel_mirror(&l, &values, n_rows, split),
                        };
                        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
                            assert_eq!(
                                g.to_bits(),
                                e.to_bits(),
                                "{shape:?} split {split} value {i}: {g} vs {e}"
                            );
                        }
                    }
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 20);
    }

    #[test]
    fn next_down_is_the_float_below() {
        assert_eq!(Scalar::next_down(1.0f32), 1.0f32 - f32::EPSILON / 2.0);
        assert_eq!(Scalar::next_down(0.0f32), -f32::from_bits(1));
        assert_eq!(Scalar::next_down(-1.0f64), -1.0 - f64::EPSILON);
        assert!(Scalar::next_down(f32::NEG_INFINITY).is_nan());
        assert_eq!(Scalar::next_down(f32::INFINITY), f32::MAX);
    }
}
