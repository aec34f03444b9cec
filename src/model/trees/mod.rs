//! Tree ensembles (XGBoost, LightGBM, ONNX-ML): each library's model file is read into
//! one [`Ensemble`] that states the library's prediction semantics exactly,
//! then compiled into the fast evaluator ([`eval`]), which runs as a candle
//! custom op: feature tensor in, margin tensor out.
//!
//! ```text
//! xgboost.rs / lightgbm.rs --(Ensemble)--> eval::Compiled --(candle op)--> margins --(objective)--> scores
//! ```

pub mod binned;
#[cfg(feature = "cuda")]
mod cuda;
pub mod dispatch;
pub mod eval;
pub mod kernel;
pub mod lightgbm;
pub mod objective;
pub mod simd;
pub mod synthetic;
pub mod xgboost;

use std::sync::Arc;

use candle_core::{Device, Tensor};

use super::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores};
use eval::Compiled;
use objective::Transform;

/// Whose arithmetic a model follows. The evaluator is generic over it: XGBoost
/// and ONNX-ML (onnxruntime on float input) compare and sum in float32,
/// LightGBM in float64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Library {
    XGBoost,
    LightGBM,
    Onnx,
}

/// How the trees' leaves combine into a group's margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregate {
    /// The base margin plus every tree's leaf (every library; ONNX `SUM`
    /// and `AVERAGE`).
    #[default]
    Sum,
    /// ONNX `MIN` / `MAX`: the smallest / largest leaf, starting from +inf /
    /// -inf (a group no leaf reaches stays infinite). The base margin must be 0.
    Min,
    Max,
}

/// A tree ensemble as its library defines it, before compilation.
#[derive(Debug, Clone)]
pub struct Ensemble {
    pub library: Library,
    pub features: Vec<Feature>,
    pub trees: Vec<Tree>,
    /// Outputs of the raw margin: classes or targets (1 for most models).
    pub n_groups: usize,
    /// Per group, the margin every row starts from (XGBoost's base score
    /// through the objective's link; 0 for LightGBM).
    pub base_margin: Vec<f64>,
    /// LightGBM's `average_output` (random-forest mode): the summed margin is
    /// divided by this many iterations before the transform (the raw score
    /// stays the sum, as LightGBM's `raw_score`).
    pub average_over: Option<usize>,
    /// Margin -> prediction.
    pub transform: Transform,
    pub aggregate: Aggregate,
}

/// One tree; its root is `nodes[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// The output group (class or target) the tree adds to.
    pub group: usize,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// The tree's value for rows reaching here, already scaled by the tree's
    /// weight (DART) in the library's precision.
    Leaf { value: f64 },
    Split {
        feature: usize,
        test: Test,
        left: usize,
        right: usize,
    },
}

/// A split's decision, one variant per library rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// XGBoost numeric: `(float)x < threshold` goes left; missing (NaN) goes
    /// to the default side.
    XgbLess { threshold: f32, default_left: bool },
    /// XGBoost categorical: the category (x truncated to an integer) in the
    /// set goes right; not in the set, negative or out of range goes left;
    /// missing goes to the default side.
    XgbCategory { right_set: Bitset, default_left: bool },
    /// LightGBM numeric: `x <= threshold` goes left, after the missing rule.
    LgbLessEq {
        threshold: f64,
        default_left: bool,
        missing: LgbMissing,
    },
    /// LightGBM categorical: the category in the set goes left; NaN, negative
    /// or not in the set goes right.
    LgbCategory { left_set: Bitset },
    /// ONNX-ML numeric: the float32 value compared with the threshold; true
    /// goes left (the node's true branch). Missing (NaN) goes left when
    /// `missing_left` (`missing_value_tracks_true`), else right.
    OnnxCompare {
        rule: OnnxRule,
        threshold: f32,
        missing_left: bool,
    },
    /// ONNX-ML `BRANCH_EQ`, `BRANCH_NEQ`, `BRANCH_MEMBER`: whether the float32
    /// value is one of `values`; a member goes left when `member_left`.
    /// Missing goes left when `missing_left`.
    OnnxMember {
        values: Vec<f32>,
        member_left: bool,
        missing_left: bool,
    },
}

/// An ONNX-ML comparison `value <rule> threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnnxRule {
    Leq,
    Lt,
    Gte,
    Gt,
}

/// LightGBM's missing-value type of a numeric split (`decision_type` bits 2-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LgbMissing {
    /// NaN is treated as 0.0.
    None,
    /// 0 (|x| <= 1e-35f) and NaN go to the default side.
    Zero,
    /// NaN goes to the default side.
    NaN,
}

/// Category set: bit `c` of word `c / 32`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bitset(pub Vec<u32>);

impl Bitset {
    pub fn from_categories(categories: impl IntoIterator<Item = u32>) -> Bitset {
        let mut words = Vec::new();
        for c in categories {
            let word = (c / 32) as usize;
            if words.len() <= word {
                words.resize(word + 1, 0);
            }
            words[word] |= 1 << (c % 32);
        }
        Bitset(words)
    }

    pub fn contains(&self, category: u32) -> bool {
        self.0
            .get((category / 32) as usize)
            .is_some_and(|w| w >> (category % 32) & 1 == 1)
    }
}

impl Ensemble {
    /// Checks the structure every loader must produce: node references in
    /// range, no cycles (children after parents), each node reached from one
    /// parent only, features in range.
    pub fn validate(&self) -> Result<(), String> {
        if self.aggregate != Aggregate::Sum && self.base_margin.iter().any(|&b| b != 0.0) {
            return Err("a MIN or MAX ensemble starts from no base margin".into());
        }
        if self.base_margin.len() != self.n_groups {
            return Err(format!(
                "{} base margins for {} output groups",
                self.base_margin.len(),
                self.n_groups
            ));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            if tree.group >= self.n_groups {
                return Err(format!("tree {t} adds to output {} of {}", tree.group, self.n_groups));
            }
            if tree.nodes.is_empty() {
                return Err(format!("tree {t} has no nodes"));
            }
            let mut parents = vec![0u8; tree.nodes.len()];
            for (i, node) in tree.nodes.iter().enumerate() {
                if let Node::Split {
                    feature, left, right, ..
                } = node
                {
                    if *feature >= self.features.len() {
                        return Err(format!(
                            "tree {t} node {i} splits on feature {feature}, but the model has {}",
                            self.features.len()
                        ));
                    }
                    for child in [left, right] {
                        if *child <= i || *child >= tree.nodes.len() {
                            return Err(format!(
                                "tree {t} node {i} has child {child}, which is not a later node"
                            ));
                        }
                        parents[*child] += 1;
                        if parents[*child] > 1 {
                            return Err(format!("tree {t} node {child} has two parents"));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The margins of one row, walking the trees node by node: the reference
    /// the compiled evaluator is tested against.
    pub fn reference_margins(&self, row: &[f64]) -> Vec<f64> {
        match self.library {
            Library::XGBoost | Library::Onnx => {
                let mut acc: Vec<f32> = match self.aggregate {
                    Aggregate::Sum => self.base_margin.iter().map(|&b| b as f32).collect(),
                    Aggregate::Min => vec![f32::INFINITY; self.n_groups],
                    Aggregate::Max => vec![f32::NEG_INFINITY; self.n_groups],
                };
                for tree in &self.trees {
                    let leaf = tree.reference_leaf(row) as f32;
                    let a = &mut acc[tree.group];
                    *a = match self.aggregate {
                        Aggregate::Sum => *a + leaf,
                        Aggregate::Min => a.min(leaf),
                        Aggregate::Max => a.max(leaf),
                    };
                }
                acc.into_iter().map(f64::from).collect()
            }
            Library::LightGBM => {
                let mut acc = self.base_margin.clone();
                for tree in &self.trees {
                    acc[tree.group] += tree.reference_leaf(row);
                }
                acc
            }
        }
    }
}

/// One node of a model file's tree, as a loader reads it: a leaf, or a split
/// and the file's references to its children.
pub enum FileNode<R> {
    Leaf(f64),
    Split {
        feature: usize,
        test: Test,
        left: R,
        right: R,
    },
}

/// A tree's nodes renumbered breadth-first from `root`, so that children
/// follow their parents and nodes no split reaches (XGBoost's deleted ones)
/// drop out. `read` turns a file reference into its node (and rejects
/// references out of range); `key` numbers references `0..n_keys` for the
/// cycle check.
pub fn breadth_first<R: Copy>(
    root: R,
    n_keys: usize,
    key: impl Fn(R) -> usize,
    mut read: impl FnMut(R) -> Result<FileNode<R>, String>,
) -> Result<Vec<Node>, String> {
    let mut nodes = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    let mut seen = vec![false; n_keys];
    // The slot of each queued node is its position in the output.
    let mut next_slot = 1;
    while let Some(reference) = queue.pop_front() {
        let k = key(reference);
        if k < n_keys && std::mem::replace(&mut seen[k], true) {
            return Err("a node is reached twice: the tree has a cycle".into());
        }
        match read(reference)? {
            FileNode::Leaf(value) => nodes.push(Node::Leaf { value }),
            FileNode::Split {
                feature,
                test,
                left,
                right,
            } => {
                nodes.push(Node::Split {
                    feature,
                    test,
                    left: next_slot,
                    right: next_slot + 1,
                });
                next_slot += 2;
                queue.push_back(left);
                queue.push_back(right);
            }
        }
    }
    Ok(nodes)
}

/// LightGBM's `kZeroThreshold` (a float literal, compared in double).
pub const LGB_ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

impl Tree {
    fn reference_leaf(&self, row: &[f64]) -> f64 {
        let mut i = 0;
        loop {
            match &self.nodes[i] {
                Node::Leaf { value } => return *value,
                Node::Split {
                    feature,
                    test,
                    left,
                    right,
                } => {
                    i = if test.goes_left(row[*feature]) { *left } else { *right };
                }
            }
        }
    }
}

impl Test {
    /// The library's decision for one value, written as directly as the
    /// library's own code.
    pub fn goes_left(&self, x: f64) -> bool {
        match self {
            Test::XgbLess {
                threshold,
                default_left,
            } => {
                let x = x as f32;
                if x.is_nan() { *default_left } else { x < *threshold }
            }
            Test::XgbCategory {
                right_set,
                default_left,
            } => {
                let x = x as f32;
                if x.is_nan() {
                    *default_left
                } else if !(0.0..XGB_MAX_CATEGORY).contains(&x) {
                    true
                } else {
                    !right_set.contains(x as u32)
                }
            }
            Test::LgbLessEq {
                threshold,
                default_left,
                missing,
            } => {
                // LightGBM makes dense input sparse first: |x| <= 1e-35 is 0.
                let mut x = if (-LGB_ZERO_THRESHOLD..=LGB_ZERO_THRESHOLD).contains(&x) {
                    0.0
                } else {
                    x
                };
                if x.is_nan() && *missing != LgbMissing::NaN {
                    x = 0.0;
                }
                let is_zero = (-LGB_ZERO_THRESHOLD..=LGB_ZERO_THRESHOLD).contains(&x);
                if (*missing == LgbMissing::Zero && is_zero) || (*missing == LgbMissing::NaN && x.is_nan()) {
                    *default_left
                } else {
                    x <= *threshold
                }
            }
            Test::LgbCategory { left_set } => {
                // C++ `static_cast<int>(fval)`: truncation, so -0.5 is
                // category 0; values beyond i32 are not in any set.
                let x = x.trunc();
                if x.is_nan() || x < 0.0 {
                    return false;
                }
                let c = x as i64;
                c <= i32::MAX as i64 && left_set.contains(c as u32)
            }
            Test::OnnxCompare {
                rule,
                threshold,
                missing_left,
            } => {
                let x = x as f32;
                if x.is_nan() {
                    return *missing_left;
                }
                match rule {
                    OnnxRule::Leq => x <= *threshold,
                    OnnxRule::Lt => x < *threshold,
                    OnnxRule::Gte => x >= *threshold,
                    OnnxRule::Gt => x > *threshold,
                }
            }
            Test::OnnxMember {
                values,
                member_left,
                missing_left,
            } => {
                let x = x as f32;
                if x.is_nan() {
                    *missing_left
                } else {
                    values.contains(&x) == *member_left
                }
            }
        }
    }
}

/// XGBoost treats category values at or beyond this as invalid (they go left):
/// the largest integer a float32 holds exactly, 2^24.
pub const XGB_MAX_CATEGORY: f32 = 16_777_216.0;

/// A compiled tree ensemble behind the [`Model`] trait.
#[derive(Debug)]
pub struct TreeModel {
    info: ModelInfo,
    ensemble: Arc<Ensemble>,
    compiled: Arc<Compiled>,
    output_margin: bool,
    device: Device,
}

impl TreeModel {
    pub fn new(
        info: ModelInfo,
        ensemble: Ensemble,
        output_margin: bool,
        device: &Device,
    ) -> Result<TreeModel, ModelError> {
        if let Err(problem) = ensemble.validate() {
            return Err(ModelError::Invalid {
                path: info.path.clone(),
                field: "the trees".into(),
                problem,
            });
        }
        let compiled = Arc::new(Compiled::new(&ensemble));
        Ok(TreeModel {
            info,
            ensemble: Arc::new(ensemble),
            compiled,
            output_margin,
            device: device.clone(),
        })
    }

    fn margins(&self, block: FeatureBlock) -> candle_core::Result<Vec<f64>> {
        let features = Tensor::from_vec(block.values, (block.n_features, block.n_rows), &self.device)?;
        let margins = eval::evaluate(&self.compiled, &features)?;
        margins
            .flatten_all()?
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()
    }
}

impl Model for TreeModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn features(&self) -> &[Feature] {
        &self.ensemble.features
    }

    fn n_outputs(&self) -> usize {
        if self.output_margin {
            self.ensemble.n_groups
        } else {
            self.ensemble.transform.n_outputs(self.ensemble.n_groups)
        }
    }

    fn cpu_kernels(&self) -> Option<String> {
        self.device.is_cpu().then(|| self.compiled.cpu_kernels())
    }

    fn output_range(&self) -> Option<(f64, f64)> {
        match self.output_margin {
            true => None,
            false => self.ensemble.transform.range(self.ensemble.n_groups),
        }
    }

    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
        let n_rows = block.n_rows;
        let margins = self.margins(block).map_err(|source| ModelError::Compute {
            model: self.info.name.clone(),
            device: super::describe_device(&self.device),
            source: Box::new(source),
        })?;
        let outputs = if self.output_margin {
            objective::margin_columns(&margins, n_rows, self.ensemble.n_groups)
        } else {
            let mut margins = margins;
            if let Some(n) = self.ensemble.average_over {
                margins.iter_mut().for_each(|m| *m /= n as f64);
            }
            self.ensemble.transform.apply(&margins, n_rows, self.ensemble.n_groups)
        };
        Ok(Scores { n_rows, outputs })
    }
}
