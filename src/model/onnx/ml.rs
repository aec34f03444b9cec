//! The ONNX-ML operators (`ai.onnx.ml`) scikit-learn models become through
//! skl2onnx, with onnxruntime's semantics (its CPU kernels are the
//! reference every exporter tests against): linear models, scalers,
//! imputers, normalizers, binarizers, ZipMap, and tree ensembles, which
//! compile into the same evaluator as XGBoost and LightGBM models.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use super::dense::Dense;
use super::node::{Attributes, Compiler, NodeError};
use super::proto::NodeProto;
use crate::model::Feature;
use crate::model::trees::eval::{self, Compiled};
use crate::model::trees::objective::Transform;
use crate::model::trees::{Aggregate, Ensemble, FileNode, Library, OnnxRule, Test, Tree, breadth_first};

/// `post_transform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    fn parse(text: &str) -> Option<PostTransform> {
        Some(match text {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            _ => return None,
        })
    }

    /// The opset-5 `TreeEnsemble` numbering as onnxruntime reads it (1.22
    /// to 1.32): 1 is LOGISTIC and 2 SOFTMAX, where the ONNX spec says the
    /// reverse. lakescore follows the runtime the models are tested with.
    fn from_code(code: i64) -> Option<PostTransform> {
        Some(match code {
            0 => PostTransform::None,
            1 => PostTransform::Logistic,
            2 => PostTransform::Softmax,
            3 => PostTransform::SoftmaxZero,
            4 => PostTransform::Probit,
            _ => return None,
        })
    }

    /// Whether every output is a probability in [0, 1].
    fn bounds_to_unit(self) -> bool {
        matches!(
            self,
            PostTransform::Logistic | PostTransform::Softmax | PostTransform::SoftmaxZero
        )
    }
}

/// onnxruntime's `ComputeLogistic` (ml_common.h), float32.
pub fn logistic(v: f32) -> f32 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - e } else { e }
}

/// onnxruntime's `ErfInv` approximation (ml_common.h), float32.
fn erf_inv(x: f32) -> f32 {
    let sgn = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let v = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let v2 = 1.0 / 0.147 * log;
    let v3 = -v + (v * v - v2).sqrt();
    sgn * v3.sqrt()
}

/// onnxruntime's `ComputeProbit`.
pub fn probit(v: f32) -> f32 {
    std::f32::consts::SQRT_2 * erf_inv(2.0 * v - 1.0)
}

/// onnxruntime's `ComputeSoftmax`, in place.
fn softmax(values: &mut [f32]) {
    let max = values.iter().copied().fold(-f32::MAX, f32::max);
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    values.iter_mut().for_each(|v| *v /= sum);
}

/// onnxruntime's `ComputeSoftmaxZero`: zeros stay zero.
fn softmax_zero(values: &mut [f32]) {
    let max = values.iter().copied().fold(-f32::MAX, f32::max);
    let exp_neg_max = (-max).exp();
    let mut sum = 0.0f32;
    for v in values.iter_mut() {
        if *v > 0.0000001 || *v < -0.0000001 {
            *v = (*v - max).exp();
            sum += *v;
        } else {
            *v *= exp_neg_max;
        }
    }
    values.iter_mut().for_each(|v| *v /= sum);
}

/// How a one-score binary classifier's second column is made
/// (onnxruntime's `add_second_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecondClass {
    /// Already as many scores as classes.
    No,
    /// Weights all positive: `[1 - s, s]`.
    Complement,
    /// Mixed weights: `[-s, s]`, or with LOGISTIC `[logistic(-s), logistic(s)]`.
    Negation,
}

/// onnxruntime's `write_scores`: the post transform over one row's scores,
/// adding the second class of a one-score binary model.
fn write_scores(scores: &mut Vec<f32>, post: PostTransform, second: SecondClass) {
    if scores.len() >= 2 {
        match post {
            PostTransform::Probit => scores.iter_mut().for_each(|s| *s = probit(*s)),
            PostTransform::Logistic => scores.iter_mut().for_each(|s| *s = logistic(*s)),
            PostTransform::Softmax => softmax(scores),
            PostTransform::SoftmaxZero => softmax_zero(scores),
            PostTransform::None => {}
        }
    } else if scores.len() == 1 {
        if post == PostTransform::Probit {
            scores[0] = probit(scores[0]);
        } else {
            match second {
                SecondClass::No => {}
                SecondClass::Complement => {
                    // onnxruntime 1.28 and later apply LOGISTIC first.
                    let s = if post == PostTransform::Logistic {
                        logistic(scores[0])
                    } else {
                        scores[0]
                    };
                    scores.clear();
                    scores.extend([1.0 - s, s]);
                }
                SecondClass::Negation => {
                    let s = scores[0];
                    scores.clear();
                    if post == PostTransform::Logistic {
                        scores.extend([logistic(-s), logistic(s)]);
                    } else {
                        scores.extend([-s, s]);
                    }
                }
            }
        }
    }
}

/// A compiled tree ensemble and what onnxruntime does after the trees.
#[derive(Debug)]
pub struct TreeOp {
    compiled: Arc<Compiled>,
    n_features: usize,
    /// Targets (regressor) or classes (classifier).
    n_targets: usize,
    base_values: Vec<f32>,
    aggregate: OnnxAggregate,
    n_trees: usize,
    post: PostTransform,
    /// For a classifier: the binary case (two classes, weights for one).
    classifier: Option<ClassifierKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnnxAggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Debug, Clone, Copy)]
struct ClassifierKind {
    /// Two class labels with weights for one class only.
    binary_case: bool,
    weights_all_positive: bool,
}

impl TreeOp {
    /// Which CPU kernels its trees run on.
    pub fn cpu_kernels(&self) -> String {
        self.compiled.cpu_kernels()
    }
}

/// One ONNX-ML operator, compiled.
#[derive(Debug)]
pub enum MlOp {
    Trees(Box<TreeOp>),
    /// `LinearRegressor` and `LinearClassifier`: `x W^T + b` (a dense
    /// layer), then the post transform; `binary` for a classifier with one
    /// coefficient row and two labels.
    Linear {
        layer: Dense,
        post: PostTransform,
        binary: bool,
        classifier: bool,
    },
    /// `(x - offset) * scale`.
    Scaler {
        offset: Tensor,
        scale: Tensor,
    },
    /// Values equal to `replaced` (or NaN when `replaced` is NaN) become `imputed`.
    Imputer {
        imputed: Vec<f32>,
        replaced: f32,
    },
    Normalizer {
        norm: Norm,
    },
    Binarizer {
        threshold: f32,
    },
    /// The probabilities it maps are the scores (one column per class).
    ZipMap,
    ArrayFeatureExtractor,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    Max,
    L1,
    L2,
}

impl MlOp {
    pub fn compile(node: &NodeProto, inputs: &[Option<usize>], c: &mut Compiler<'_>) -> Result<MlOp, NodeError> {
        let attrs = Attributes { node };
        let candle = |e: candle_core::Error| NodeError::new(node, e.to_string());
        Ok(match node.op_type.as_str() {
            "TreeEnsembleRegressor" | "TreeEnsembleClassifier" => MlOp::Trees(Box::new(compile_classic_trees(
                &attrs,
                node.op_type == "TreeEnsembleClassifier",
            )?)),
            "TreeEnsemble" => MlOp::Trees(Box::new(compile_trees_v5(&attrs)?)),
            "LinearRegressor" | "LinearClassifier" => {
                let classifier = node.op_type == "LinearClassifier";
                let coefficients = attrs.floats("coefficients");
                let mut intercepts = attrs.floats("intercepts");
                // onnxruntime: a classifier's intercepts give its class
                // count; a regressor's are used only when one per target.
                let labels = attrs
                    .ints("classlabels_ints")
                    .len()
                    .max(attrs.strings("classlabels_strings").len());
                let n_rows = if classifier {
                    if labels == 0 {
                        return Err(attrs.error("LinearClassifier without class labels"));
                    }
                    intercepts.len()
                } else {
                    let targets = attrs.int("targets", 1)?.max(1) as usize;
                    if targets > coefficients.len().max(1) {
                        return Err(attrs.error(format!("{targets} targets for {} coefficients", coefficients.len())));
                    }
                    if intercepts.len() != targets {
                        intercepts = vec![0.0; targets];
                    }
                    targets
                };
                if n_rows == 0 || coefficients.is_empty() || !coefficients.len().is_multiple_of(n_rows) {
                    return Err(attrs.error(format!(
                        "{} coefficients for {n_rows} outputs (one intercept each)",
                        coefficients.len()
                    )));
                }
                let n_features = coefficients.len() / n_rows;
                let binary = classifier && n_rows == 1;
                if binary && labels != 2 {
                    return Err(attrs.error(format!(
                        "one coefficient row needs exactly 2 class labels, has {labels}"
                    )));
                }
                // Coefficients are (outputs, features); the layer takes (features, outputs).
                let weights_kn = (0..n_features * n_rows)
                    .map(|i| coefficients[(i % n_rows) * n_features + i / n_rows])
                    .collect();
                MlOp::Linear {
                    layer: Dense::new(weights_kn, intercepts, n_features, n_rows, false),
                    post: parse_post_transform(&attrs)?,
                    binary,
                    classifier,
                }
            }
            "Scaler" => {
                let offset = attrs.floats("offset");
                let scale = attrs.floats("scale");
                let row = |v: Vec<f32>, default: f32| {
                    let v = if v.is_empty() { vec![default] } else { v };
                    let n = v.len();
                    Tensor::from_vec(v, (1, n), c.device)
                };
                MlOp::Scaler {
                    offset: row(offset, 0.0).map_err(candle)?,
                    scale: row(scale, 1.0).map_err(candle)?,
                }
            }
            "Imputer" => {
                let imputed = attrs.floats("imputed_value_floats");
                if imputed.is_empty() {
                    return Err(attrs.error("has no `imputed_value_floats` (integer imputation is not supported)"));
                }
                MlOp::Imputer {
                    imputed,
                    replaced: attrs.float("replaced_value_float", 0.0)?,
                }
            }
            "Normalizer" => MlOp::Normalizer {
                norm: match attrs.string("norm", "MAX")?.as_str() {
                    "MAX" => Norm::Max,
                    "L1" => Norm::L1,
                    "L2" => Norm::L2,
                    other => return Err(attrs.error(format!("unknown `norm` `{other}`"))),
                },
            },
            "Binarizer" => MlOp::Binarizer {
                threshold: attrs.float("threshold", 0.0)?,
            },
            "ZipMap" => MlOp::ZipMap,
            "ArrayFeatureExtractor" => {
                match c.constant(inputs.get(1).copied().flatten()) {
                    None => return Err(attrs.error("its indices are computed at run time; lakescore needs a constant")),
                    Some(t) if t.elem_count() == 0 => return Err(attrs.error("its indices are empty")),
                    Some(_) => {}
                }
                MlOp::ArrayFeatureExtractor
            }
            other => {
                return Err(NodeError::new(
                    node,
                    format!(
                        "operator `ai.onnx.ml.{other}` is not supported by lakescore (supported: {})",
                        super::node::SUPPORTED_OPS
                    ),
                ));
            }
        })
    }

    fn is_classifier(&self) -> bool {
        matches!(self, MlOp::Linear { classifier: true, .. })
    }

    /// The range every output falls in, where the op bounds it.
    pub fn output_range(&self) -> Option<(f64, f64)> {
        let unit = match self {
            // As `finalize`: one score is never transformed (but PROBIT);
            // a binary classifier's one score only by LOGISTIC.
            MlOp::Trees(t) => {
                t.post.bounds_to_unit()
                    && (t.n_targets > 2
                        || (t.n_targets == 2
                            && (t.post == PostTransform::Logistic || t.classifier.is_none_or(|k| !k.binary_case))))
            }
            // onnxruntime ignores LOGISTIC and SOFTMAX on one output, and a
            // one-row binary classifier is [1 - z, z] unless LOGISTIC.
            MlOp::Linear {
                post, binary, layer, ..
            } => match binary {
                true => *post == PostTransform::Logistic,
                false => post.bounds_to_unit() && layer.n > 1,
            },
            MlOp::Binarizer { .. } => true,
            _ => false,
        };
        unit.then_some((0.0, 1.0))
    }

    pub fn run(
        &self,
        values: &[Option<Tensor>],
        block: Option<&[f64]>,
        n_rows: usize,
        device: &Device,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let input = values.first().and_then(|v| v.as_ref());
        if let MlOp::Trees(trees) = self {
            // A graph input is read from the block itself (no tensor is made for it).
            let y = match (block, input) {
                (Some(block), _) => trees.run_block(block, n_rows, device)?,
                (None, Some(x)) => trees.run(x)?,
                (None, None) => candle_core::bail!("input 0 is missing"),
            };
            // Classifiers write (label, probabilities); the label is never the score.
            return Ok(match trees.classifier {
                Some(_) => vec![None, Some(y)],
                None => vec![Some(y)],
            });
        }
        let x = input.ok_or_else(|| candle_core::Error::Msg("input 0 is missing".into()))?;
        match self {
            MlOp::Trees(_) => unreachable!("handled above"),
            MlOp::Linear {
                layer, post, binary, ..
            } => {
                let x = if x.dtype() == DType::F32 {
                    x.clone()
                } else {
                    x.to_dtype(DType::F32)?
                };
                let scores = layer.forward(&x)?;
                let (n, k) = scores.dims2()?;
                let flat: Vec<f32> = scores.flatten_all()?.to_vec1()?;
                let mut out = Vec::with_capacity(n * (k + 1));
                let mut row = Vec::with_capacity(k + 1);
                for z in flat.chunks_exact(k.max(1)) {
                    if *binary {
                        // [1 - z, z]; with LOGISTIC [logistic(-z), logistic(z)] (onnxruntime 1.28+).
                        let z = z[0];
                        match post {
                            PostTransform::Logistic => out.extend([logistic(-z), logistic(z)]),
                            _ => out.extend([1.0 - z, z]),
                        }
                    } else {
                        row.clear();
                        row.extend_from_slice(z);
                        write_scores(&mut row, *post, SecondClass::No);
                        out.extend_from_slice(&row);
                    }
                }
                let width = out.len() / n.max(1);
                let y = Tensor::from_vec(out, (n, width.max(k)), x.device())?;
                // A classifier writes (label, scores); a regressor its values.
                Ok(match self.is_classifier() {
                    true => vec![None, Some(y)],
                    false => vec![Some(y)],
                })
            }
            MlOp::Scaler { offset, scale } => {
                let x = x.to_dtype(DType::F32)?;
                Ok(vec![Some(x.broadcast_sub(offset)?.broadcast_mul(scale)?)])
            }
            MlOp::Imputer { imputed, replaced } => {
                let x = x.to_dtype(DType::F32)?;
                let (n, k) = x.dims2()?;
                let mut flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
                for (i, v) in flat.iter_mut().enumerate() {
                    let hit = if replaced.is_nan() { v.is_nan() } else { *v == *replaced };
                    if hit {
                        // One value per column, or else the first for every column.
                        *v = if imputed.len() == k { imputed[i % k] } else { imputed[0] };
                    }
                }
                Ok(vec![Some(Tensor::from_vec(flat, (n, k), x.device())?)])
            }
            MlOp::Normalizer { norm } => {
                let x = x.to_dtype(DType::F32)?;
                let (n, k) = x.dims2()?;
                let mut flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
                for row in flat.chunks_exact_mut(k.max(1)) {
                    normalize(row, *norm);
                }
                Ok(vec![Some(Tensor::from_vec(flat, (n, k), x.device())?)])
            }
            MlOp::Binarizer { threshold } => {
                let dtype = x.dtype();
                let flat: Vec<f32> = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                if let Some(i) = flat.iter().position(|v| v.is_nan()) {
                    // As onnxruntime, which fails the run: a binarized NaN has no value.
                    candle_core::bail!(
                        "Binarizer input {} (row {}) is NaN; impute missing values before the Binarizer",
                        i,
                        i / x.dims().last().copied().unwrap_or(1).max(1)
                    );
                }
                let out: Vec<f32> = flat.iter().map(|&v| if v > *threshold { 1.0 } else { 0.0 }).collect();
                Ok(vec![Some(
                    Tensor::from_vec(out, x.shape(), x.device())?.to_dtype(dtype)?,
                )])
            }
            MlOp::ZipMap => Ok(vec![Some(x.to_dtype(DType::F32)?)]),
            MlOp::ArrayFeatureExtractor => {
                let indices = values
                    .get(1)
                    .and_then(|v| v.as_ref())
                    .ok_or_else(|| candle_core::Error::Msg("indices are missing".into()))?;
                let last = x.rank() - 1;
                let idx: Vec<i64> = indices.flatten_all()?.to_dtype(DType::I64)?.to_vec1()?;
                let width = x.dim(last)? as i64;
                let idx: Vec<u32> = idx
                    .iter()
                    .map(|&i| {
                        if (0..width).contains(&i) {
                            Ok(i as u32)
                        } else {
                            Err(candle_core::Error::Msg(format!(
                                "index {i} is out of range for {width} columns"
                            )))
                        }
                    })
                    .collect::<candle_core::Result<_>>()?;
                Ok(vec![Some(
                    x.index_select(&Tensor::new(idx.as_slice(), x.device())?, last)?,
                )])
            }
        }
    }
}

/// onnxruntime's Normalizer on one row: divides by the norm when it is not 0.
fn normalize(row: &mut [f32], norm: Norm) {
    let n = match norm {
        Norm::Max => row.iter().copied().fold(f32::MIN, f32::max),
        Norm::L1 => row.iter().map(|v| v.abs()).sum(),
        Norm::L2 => {
            // onnxruntime: sign(x) * sqrt(x² / Σx²), not x / sqrt(Σx²).
            let sum: f32 = row.iter().map(|v| v * v).sum();
            if sum != 0.0 {
                row.iter_mut()
                    .for_each(|v| *v = if *v < 0.0 { -1.0 } else { 1.0 } * (*v * *v / sum).sqrt());
            }
            return;
        }
    };
    if n != 0.0 {
        row.iter_mut().for_each(|v| *v /= n);
    }
}

/// One node of an ONNX tree, gathered from the node arrays.
#[derive(Debug, Clone)]
struct FlatNode {
    feature: usize,
    test: Option<(NodeMode, f64)>,
    missing_left: bool,
    /// Indices into the flat arrays.
    true_child: usize,
    false_child: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum NodeMode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member(Vec<f64>),
}

impl NodeMode {
    fn from_name(text: &str) -> Option<Option<NodeMode>> {
        Some(Some(match text {
            "BRANCH_LEQ" => NodeMode::Leq,
            "BRANCH_LT" => NodeMode::Lt,
            "BRANCH_GTE" => NodeMode::Gte,
            "BRANCH_GT" => NodeMode::Gt,
            "BRANCH_EQ" => NodeMode::Eq,
            "BRANCH_NEQ" => NodeMode::Neq,
            "LEAF" => return Some(None),
            _ => return None,
        }))
    }
}

/// The split of a float32 value against a threshold given in float or
/// double, as a float32 test that decides every float32 value alike.
fn onnx_test(mode: &NodeMode, threshold: f64, missing_left: bool) -> Result<Test, String> {
    if threshold.is_nan() && !matches!(mode, NodeMode::Member(_)) {
        return Err("a split's threshold is NaN".into());
    }
    Ok(onnx_test_of(mode, threshold, missing_left))
}

fn onnx_test_of(mode: &NodeMode, threshold: f64, missing_left: bool) -> Test {
    // The float32 values at or below / at or above the threshold.
    let down = round_f32(threshold, false);
    let up = round_f32(threshold, true);
    let exact = down as f64 == threshold;
    let compare = |rule, t: f32| Test::OnnxCompare {
        rule,
        threshold: t,
        missing_left,
    };
    match mode {
        NodeMode::Leq => compare(OnnxRule::Leq, down),
        NodeMode::Lt if exact => compare(OnnxRule::Lt, down),
        NodeMode::Lt => compare(OnnxRule::Leq, down),
        NodeMode::Gte => compare(OnnxRule::Gte, up),
        NodeMode::Gt if exact => compare(OnnxRule::Gt, up),
        NodeMode::Gt => compare(OnnxRule::Gte, up),
        NodeMode::Eq | NodeMode::Neq | NodeMode::Member(_) => {
            let values: Vec<f32> = match mode {
                NodeMode::Member(set) => set
                    .iter()
                    .filter(|v| (**v as f32) as f64 == **v)
                    .map(|&v| v as f32)
                    .collect(),
                _ if exact => vec![down],
                _ => Vec::new(),
            };
            Test::OnnxMember {
                values,
                member_left: *mode != NodeMode::Neq,
                // NaN != t is true: NEQ sends missing values to its true branch.
                missing_left: missing_left || *mode == NodeMode::Neq,
            }
        }
    }
}

/// The float32 nearest `x` from below (`up` false) or above.
fn round_f32(x: f64, up: bool) -> f32 {
    let f = x as f32;
    if f as f64 == x || x.is_nan() {
        return f;
    }
    let too_high = f as f64 > x;
    match (up, too_high) {
        (false, true) => f.next_down(),
        (true, false) => f.next_up(),
        _ => f,
    }
}

/// A tree's leaves: per flat index, its `(target, weight)` pairs.
type LeafWeights = HashMap<usize, Vec<(usize, f64)>>;

/// Builds the ensemble from flat node arrays: `roots` per tree, `nodes` by
/// flat index (`None` for a leaf), and the leaf weights.
#[allow(clippy::too_many_arguments)]
fn build(
    attrs: &Attributes<'_>,
    roots: &[usize],
    nodes: &[Option<FlatNode>],
    leaves: &LeafWeights,
    n_targets: usize,
    base_values: Vec<f32>,
    aggregate: OnnxAggregate,
    post: PostTransform,
    classifier: Option<ClassifierKind>,
) -> Result<TreeOp, NodeError> {
    let n_features = nodes.iter().flatten().map(|n| n.feature + 1).max().unwrap_or(1);
    if n_features > crate::model::MAX_FEATURES {
        return Err(attrs.error(format!("a split reads feature {}", n_features - 1)));
    }
    // A corrupt output count would size allocations.
    if n_targets > crate::model::MAX_OUTPUTS {
        return Err(attrs.error(format!(
            "declares {n_targets} outputs; lakescore writes at most {} score columns",
            crate::model::MAX_OUTPUTS
        )));
    }
    // A tree is built once per target its leaves weigh. A real ensemble
    // weighs k targets in every leaf, so that work is proportional to the
    // weights the file lists; a tree whose leaves each name another target
    // would cost its size squared from a small file.
    let weights: usize = leaves.values().map(Vec::len).sum();
    let budget = 4 * (nodes.len() + weights) + (1 << 16);
    let mut built = 0usize;
    // What a leaf without a weight for the target holds, and each sum
    // starts from: a value no weight changes it back to, so that a row's
    // untouched targets stay recognisable (onnxruntime's per-row
    // `has_score`). Sums start at -0.0 and such leaves add -0.0: a sum stays
    // -0.0 until a weight (even +0.0) reaches it.
    let neutral = match aggregate {
        OnnxAggregate::Min => f64::INFINITY,
        OnnxAggregate::Max => f64::NEG_INFINITY,
        _ => -0.0,
    };
    let mut trees = Vec::new();
    for (t, &root) in roots.iter().enumerate() {
        // Which targets this tree's leaves weigh.
        let mut targets: Vec<usize> = Vec::new();
        let mut stack = vec![root];
        let mut seen = std::collections::HashSet::new();
        while let Some(i) = stack.pop() {
            if !seen.insert(i) {
                continue;
            }
            match nodes.get(i) {
                Some(Some(n)) => stack.extend([n.true_child, n.false_child]),
                Some(None) => {
                    for &(target, _) in leaves.get(&i).map(Vec::as_slice).unwrap_or(&[]) {
                        if !targets.contains(&target) {
                            targets.push(target);
                        }
                    }
                }
                None => return Err(attrs.error(format!("tree {t} refers to node {i}, which does not exist"))),
            }
        }
        targets.sort_unstable();
        built = built.saturating_add(seen.len().saturating_mul(targets.len()));
        if built > budget {
            return Err(attrs.error(format!(
                "tree {t} of {} nodes weighs {} targets: the ensemble would grow past {budget} nodes, \
                 more than its {} nodes and {weights} leaf weights justify",
                seen.len(),
                targets.len(),
                nodes.len()
            )));
        }
        for target in targets {
            let tree_nodes = breadth_first(
                root,
                nodes.len(),
                |i| i,
                |i| -> Result<FileNode<usize>, String> {
                    match nodes.get(i) {
                        Some(None) => {
                            let weights = leaves.get(&i).map(Vec::as_slice).unwrap_or(&[]);
                            let mut value = neutral;
                            let mut any = false;
                            for &(tg, w) in weights.iter().filter(|(tg, _)| *tg == target) {
                                let _ = tg;
                                // Weights are float32 in onnxruntime's float kernels.
                                let w = w as f32 as f64;
                                value = if any || aggregate == OnnxAggregate::Sum || aggregate == OnnxAggregate::Average
                                {
                                    match aggregate {
                                        OnnxAggregate::Min => value.min(w),
                                        OnnxAggregate::Max => value.max(w),
                                        _ => (value as f32 + w as f32) as f64,
                                    }
                                } else {
                                    w
                                };
                                any = true;
                            }
                            Ok(FileNode::Leaf(value))
                        }
                        Some(Some(n)) => {
                            let (mode, threshold) = n.test.clone().expect("branch nodes carry a test");
                            Ok(FileNode::Split {
                                feature: n.feature,
                                test: onnx_test(&mode, threshold, n.missing_left)?,
                                left: n.true_child,
                                right: n.false_child,
                            })
                        }
                        None => Err(format!("node {i} does not exist")),
                    }
                },
            )
            .map_err(|p| attrs.error(format!("tree {t}: {p}")))?;
            trees.push(Tree {
                group: target,
                nodes: tree_nodes,
            });
        }
    }
    let ensemble = Ensemble {
        library: Library::Onnx,
        features: (0..n_features)
            .map(|j| Feature {
                name: format!("x{j}"),
                missing_value: f64::NAN,
                categories: None,
            })
            .collect(),
        trees,
        n_groups: n_targets,
        base_margin: vec![if neutral == 0.0 { -0.0 } else { 0.0 }; n_targets],
        average_over: None,
        transform: Transform::Identity,
        aggregate: match aggregate {
            OnnxAggregate::Min => Aggregate::Min,
            OnnxAggregate::Max => Aggregate::Max,
            _ => Aggregate::Sum,
        },
    };
    ensemble.validate().map_err(|p| attrs.error(p))?;
    Ok(TreeOp {
        compiled: Arc::new(Compiled::new(&ensemble)),
        n_features,
        n_targets,
        base_values,
        aggregate,
        n_trees: roots.len(),
        post,
        classifier,
    })
}

/// Every node array has one entry per node, as `reference` has; an
/// `optional` array is empty or has one too.
fn check_lengths(
    attrs: &Attributes<'_>,
    reference: (&str, usize),
    required: &[(&str, usize)],
    optional: &[(&str, usize)],
) -> Result<(), NodeError> {
    let (reference, n) = reference;
    let optional = optional.iter().filter(|(_, len)| *len != 0);
    match required.iter().chain(optional).find(|(_, len)| *len != n) {
        Some((name, len)) => Err(attrs.error(format!("`{name}` has {len} entries, `{reference}` {n}"))),
        None => Ok(()),
    }
}

/// `post_transform` of the opset 1-3 operators (a name).
fn parse_post_transform(attrs: &Attributes<'_>) -> Result<PostTransform, NodeError> {
    let text = attrs.string("post_transform", "NONE")?;
    PostTransform::parse(&text).ok_or_else(|| attrs.error(format!("unknown `post_transform` `{text}`")))
}

fn parse_aggregate(attrs: &Attributes<'_>) -> Result<OnnxAggregate, NodeError> {
    Ok(match attrs.string("aggregate_function", "SUM")?.as_str() {
        "SUM" => OnnxAggregate::Sum,
        "AVERAGE" => OnnxAggregate::Average,
        "MIN" => OnnxAggregate::Min,
        "MAX" => OnnxAggregate::Max,
        other => return Err(attrs.error(format!("unknown `aggregate_function` `{other}`"))),
    })
}

/// `TreeEnsembleRegressor` / `TreeEnsembleClassifier`, ai.onnx.ml opsets 1 to 3.
fn compile_classic_trees(attrs: &Attributes<'_>, classifier: bool) -> Result<TreeOp, NodeError> {
    let tree_ids = attrs.ints("nodes_treeids");
    let node_ids = attrs.ints("nodes_nodeids");
    let features = attrs.ints("nodes_featureids");
    let modes = attrs.strings("nodes_modes");
    let (values, _) = attrs.numbers("nodes_values")?.unwrap_or_default();
    let true_ids = attrs.ints("nodes_truenodeids");
    let false_ids = attrs.ints("nodes_falsenodeids");
    let tracks = attrs.ints("nodes_missing_value_tracks_true");
    let n = tree_ids.len();
    check_lengths(
        attrs,
        ("nodes_treeids", n),
        &[
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_modes", modes.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
        ],
        &[
            ("nodes_values", values.len()),
            ("nodes_missing_value_tracks_true", tracks.len()),
        ],
    )?;
    let index: HashMap<(i64, i64), usize> = tree_ids
        .iter()
        .zip(&node_ids)
        .enumerate()
        .map(|(i, (&t, &n))| ((t, n), i))
        .collect();
    if index.len() != n {
        return Err(attrs.error("two nodes share a (tree id, node id)"));
    }
    let mut nodes = Vec::with_capacity(n);
    let mut referenced = vec![false; n];
    for i in 0..n {
        let mode = NodeMode::from_name(&modes[i])
            .ok_or_else(|| attrs.error(format!("node {i} has unknown mode `{}`", modes[i])))?;
        let Some(mode) = mode else {
            nodes.push(None);
            continue;
        };
        let child = |id: i64, which: &str| {
            index.get(&(tree_ids[i], id)).copied().ok_or_else(|| {
                attrs.error(format!(
                    "node {} of tree {} has {which} node {id}, which the tree does not have",
                    node_ids[i], tree_ids[i]
                ))
            })
        };
        let (true_child, false_child) = (child(true_ids[i], "true")?, child(false_ids[i], "false")?);
        referenced[true_child] = true;
        referenced[false_child] = true;
        if features[i] < 0 {
            return Err(attrs.error(format!("node {i} reads feature {}", features[i])));
        }
        nodes.push(Some(FlatNode {
            feature: features[i] as usize,
            test: Some((mode, values.get(i).copied().unwrap_or(0.0))),
            missing_left: tracks.get(i).is_some_and(|&t| t != 0),
            true_child,
            false_child,
        }));
    }
    // Roots: the first node of each tree id that no node points to.
    let mut roots = Vec::new();
    let mut tree_of_root: HashMap<i64, usize> = HashMap::new();
    for i in 0..n {
        if !referenced[i] {
            if tree_of_root.insert(tree_ids[i], i).is_some() {
                return Err(attrs.error(format!("tree {} has two roots", tree_ids[i])));
            }
            roots.push(i);
        }
    }
    let prefix = if classifier { "class" } else { "target" };
    let w_tree = attrs.ints(&format!("{prefix}_treeids"));
    let w_node = attrs.ints(&format!("{prefix}_nodeids"));
    let w_id = attrs.ints(&format!("{prefix}_ids"));
    let (w_value, _) = attrs.numbers(&format!("{prefix}_weights"))?.unwrap_or_default();
    if [w_node.len(), w_id.len(), w_value.len()]
        .iter()
        .any(|&l| l != w_tree.len())
    {
        return Err(attrs.error(format!("the `{prefix}_*` weight arrays differ in length")));
    }
    let (n_targets, class_kind) = if classifier {
        let labels = attrs
            .ints("classlabels_int64s")
            .len()
            .max(attrs.strings("classlabels_strings").len());
        if labels < 2 {
            return Err(attrs.error(format!(
                "TreeEnsembleClassifier with {labels} class labels (needs 2 or more)"
            )));
        }
        let distinct: std::collections::BTreeSet<i64> = w_id.iter().copied().collect();
        (
            labels,
            Some(ClassifierKind {
                binary_case: labels == 2 && distinct.len() == 1,
                weights_all_positive: w_value.iter().all(|&w| w >= 0.0),
            }),
        )
    } else {
        (attrs.int("n_targets", 1)?.max(1) as usize, None)
    };
    let mut leaves: LeafWeights = HashMap::new();
    for k in 0..w_tree.len() {
        let leaf = index.get(&(w_tree[k], w_node[k])).copied().ok_or_else(|| {
            attrs.error(format!(
                "a weight names node {} of tree {}, which does not exist",
                w_node[k], w_tree[k]
            ))
        })?;
        if nodes[leaf].is_some() {
            return Err(attrs.error(format!(
                "a weight names node {} of tree {}, which is not a leaf",
                w_node[k], w_tree[k]
            )));
        }
        let target = w_id[k];
        if target < 0 || target as usize >= n_targets {
            return Err(attrs.error(format!("a weight adds to {prefix} {target} of {n_targets}")));
        }
        leaves.entry(leaf).or_default().push((target as usize, w_value[k]));
    }
    let base_values: Vec<f32> = attrs
        .numbers("base_values")?
        .map(|(v, _)| v.iter().map(|&b| b as f32).collect())
        .unwrap_or_default();
    let post = parse_post_transform(attrs)?;
    if !classifier && !base_values.is_empty() && base_values.len() != n_targets {
        return Err(attrs.error(format!("{} base values for {n_targets} targets", base_values.len())));
    }
    build(
        attrs,
        &roots,
        &nodes,
        &leaves,
        n_targets,
        base_values,
        parse_aggregate(attrs)?,
        post,
        class_kind,
    )
}

/// `TreeEnsemble`, ai.onnx.ml opset 5.
fn compile_trees_v5(attrs: &Attributes<'_>) -> Result<TreeOp, NodeError> {
    let features = attrs.ints("nodes_featureids");
    let n = features.len();
    let tensor_numbers = |name: &str| -> Result<Vec<f64>, NodeError> {
        match attrs.tensor(name) {
            Some(t) => t
                .data
                .to_f64()
                .ok_or_else(|| attrs.error(format!("`{name}` holds strings"))),
            None => Ok(Vec::new()),
        }
    };
    let splits = tensor_numbers("nodes_splits")?;
    let modes = tensor_numbers("nodes_modes")?;
    let true_ids = attrs.ints("nodes_truenodeids");
    let false_ids = attrs.ints("nodes_falsenodeids");
    let true_leafs = attrs.ints("nodes_trueleafs");
    let false_leafs = attrs.ints("nodes_falseleafs");
    let tracks = attrs.ints("nodes_missing_value_tracks_true");
    let members = tensor_numbers("membership_values")?;
    let roots_attr = attrs.ints("tree_roots");
    let leaf_targets = attrs.ints("leaf_targetids");
    let leaf_weights = tensor_numbers("leaf_weights")?;
    check_lengths(
        attrs,
        ("nodes_featureids", n),
        &[
            ("nodes_splits", splits.len()),
            ("nodes_modes", modes.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_trueleafs", true_leafs.len()),
            ("nodes_falseleafs", false_leafs.len()),
        ],
        &[("nodes_missing_value_tracks_true", tracks.len())],
    )?;
    if leaf_targets.len() != leaf_weights.len() {
        return Err(attrs.error("`leaf_targetids` and `leaf_weights` differ in length"));
    }
    if modes.iter().any(|m| m.fract() != 0.0 || m.is_nan()) {
        return Err(attrs.error("`nodes_modes` holds a value that is not a mode number"));
    }
    // Flat indices: splits 0..n, then leaves n..n+leaves.
    let n_leaves = leaf_weights.len();
    let n_targets = attrs.int("n_targets", 1)?.max(1) as usize;
    let mut member_sets = members.split(|v| v.is_nan()).map(|s| s.to_vec());
    let mut nodes: Vec<Option<FlatNode>> = Vec::with_capacity(n + n_leaves);
    for i in 0..n {
        let mode = match modes[i] as i64 {
            0 => NodeMode::Leq,
            1 => NodeMode::Lt,
            2 => NodeMode::Gte,
            3 => NodeMode::Gt,
            4 => NodeMode::Eq,
            5 => NodeMode::Neq,
            6 => NodeMode::Member(member_sets.next().ok_or_else(|| {
                attrs.error(format!(
                    "node {i} is BRANCH_MEMBER but `membership_values` has no set left for it"
                ))
            })?),
            _ => return Err(attrs.error(format!("node {i} has unknown mode {}", modes[i]))),
        };
        let child = |id: i64, leaf: i64| -> Result<usize, NodeError> {
            let limit = if leaf != 0 { n_leaves } else { n };
            if id < 0 || id as usize >= limit {
                return Err(attrs.error(format!(
                    "node {i} points to {} {id} of {limit}",
                    if leaf != 0 { "leaf" } else { "node" }
                )));
            }
            Ok(if leaf != 0 { n + id as usize } else { id as usize })
        };
        if features[i] < 0 {
            return Err(attrs.error(format!("node {i} reads feature {}", features[i])));
        }
        nodes.push(Some(FlatNode {
            feature: features[i] as usize,
            test: Some((mode, splits[i])),
            missing_left: tracks.get(i).is_some_and(|&t| t != 0),
            true_child: child(true_ids[i], true_leafs[i])?,
            false_child: child(false_ids[i], false_leafs[i])?,
        }));
    }
    let mut leaves: LeafWeights = HashMap::new();
    for k in 0..n_leaves {
        nodes.push(None);
        let target = leaf_targets[k];
        if target < 0 || target as usize >= n_targets {
            return Err(attrs.error(format!("leaf {k} adds to target {target} of {n_targets}")));
        }
        leaves.insert(n + k, vec![(target as usize, leaf_weights[k])]);
    }
    let roots: Vec<usize> = roots_attr
        .iter()
        .map(|&r| {
            if r < 0 || r as usize >= n {
                return Err(attrs.error(format!("tree root {r} is not a node")));
            }
            let r = r as usize;
            // A one-leaf tree: a root whose both sides are the same leaf.
            if true_ids[r] == false_ids[r] && true_leafs[r] != 0 && false_leafs[r] != 0 {
                return Ok(n + true_ids[r] as usize);
            }
            Ok(r)
        })
        .collect::<Result<_, _>>()?;
    let aggregate = match attrs.int("aggregate_function", 1)? {
        0 => OnnxAggregate::Average,
        1 => OnnxAggregate::Sum,
        2 => OnnxAggregate::Min,
        3 => OnnxAggregate::Max,
        other => return Err(attrs.error(format!("unknown `aggregate_function` {other}"))),
    };
    let post_code = attrs.int("post_transform", 0)?;
    let post = PostTransform::from_code(post_code)
        .ok_or_else(|| attrs.error(format!("unknown `post_transform` {post_code}")))?;
    build(
        attrs,
        &roots,
        &nodes,
        &leaves,
        n_targets,
        Vec::new(),
        aggregate,
        post,
        None,
    )
}

impl TreeOp {
    /// The ensemble over `x` (`(rows, features)`).
    fn run(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n_rows, width) = x.dims2()?;
        if x.dtype() == DType::F64 {
            // onnxruntime compares and sums in double for double input; the
            // evaluator's ONNX programs are float32.
            candle_core::bail!("tree ensembles on double (float64) input are not supported; export with float input");
        }
        if width < self.n_features {
            candle_core::bail!("the trees read feature {} of {width}", self.n_features - 1);
        }
        let feature_major = x
            .t()?
            .narrow(0, 0, self.n_features)?
            .to_dtype(DType::F32)?
            .to_dtype(DType::F64)?
            .contiguous()?;
        self.evaluate(&feature_major, n_rows)
    }

    /// The ensemble over a graph input's part of the feature-major block
    /// (its features, `n_rows` each): the features the trees read are a prefix.
    fn run_block(&self, block: &[f64], n_rows: usize, device: &Device) -> candle_core::Result<Tensor> {
        let width = block.len() / n_rows.max(1);
        if width < self.n_features {
            candle_core::bail!("the trees read feature {} of {width}", self.n_features - 1);
        }
        let feature_major = Tensor::from_slice(&block[..self.n_features * n_rows], (self.n_features, n_rows), device)?;
        self.evaluate(&feature_major, n_rows)
    }

    /// Margins of the `(features, rows)` f64 tensor, finalized per row.
    fn evaluate(&self, feature_major: &Tensor, n_rows: usize) -> candle_core::Result<Tensor> {
        let margins = eval::evaluate(&self.compiled, feature_major)?;
        let flat: Vec<f32> = margins.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
        let k = self.n_targets;
        let mut out = Vec::with_capacity(n_rows * k.max(2));
        let mut row = Vec::with_capacity(k.max(2));
        for r in 0..n_rows {
            row.clear();
            row.extend_from_slice(&flat[r * k..(r + 1) * k]);
            self.finalize(&mut row);
            out.extend_from_slice(&row);
        }
        let width = out.len() / n_rows.max(1);
        Tensor::from_vec(out, (n_rows, width.max(1)), feature_major.device())
    }

    /// After the trees: base values, averaging, the classifier's binary
    /// rules and the post transform, as onnxruntime's aggregators do.
    fn finalize(&self, scores: &mut Vec<f32>) {
        // A target no leaf of this row weighed (still at its start: ±inf
        // for MIN/MAX, -0.0 for sums) is onnxruntime's "no score": written
        // 0, without its base value when there are several targets.
        let untouched: Vec<bool> = scores
            .iter()
            .map(|s| match self.aggregate {
                OnnxAggregate::Min | OnnxAggregate::Max => s.is_infinite(),
                OnnxAggregate::Sum | OnnxAggregate::Average => *s == 0.0 && s.is_sign_negative(),
            })
            .collect();
        for (s, &u) in scores.iter_mut().zip(&untouched) {
            if u {
                *s = 0.0;
            }
        }
        let Some(kind) = self.classifier else {
            // One target: `base_values[0]` when there is one. Several: the
            // base values when there is one per target, and a target no
            // leaf weighs scores 0, its base value dropped (onnxruntime's
            // `has_score`).
            let per_target = self.base_values.len() == self.n_targets;
            for (t, s) in scores.iter_mut().enumerate() {
                let base = match (self.n_targets, self.base_values.len()) {
                    (1, 1) => self.base_values[0],
                    _ if per_target => self.base_values[t],
                    _ => 0.0,
                };
                if self.n_targets > 1 && untouched[t] {
                    *s = 0.0;
                    continue;
                }
                *s = if self.aggregate == OnnxAggregate::Average {
                    *s / self.n_trees as f32 + base
                } else {
                    *s + base
                };
            }
            write_scores(scores, self.post, SecondClass::No);
            return;
        };
        if self.n_targets > 2 {
            for (t, s) in scores.iter_mut().enumerate() {
                if let Some(&base) = self.base_values.get(t) {
                    *s += base;
                }
            }
            write_scores(scores, self.post, SecondClass::No);
            return;
        }
        // Two classes, as onnxruntime 1.28 to 1.32 (tree_ensemble_aggregator.h).
        let has_class_1 = !untouched[1];
        match self.base_values.len() {
            2 => {
                if has_class_1 {
                    // onnxruntime drops the class-1 sum here (its bug, kept:
                    // parity is with the runtime the model was tested on).
                    scores[1] = self.base_values[1] + scores[0];
                    scores[0] = -scores[1];
                } else {
                    // Class 1 has no score: written as 0.
                    scores[0] += self.base_values[0];
                    scores[1] = 0.0;
                }
            }
            1 => {
                scores[0] += self.base_values[0];
                if !has_class_1 {
                    scores.pop();
                }
            }
            _ => {
                if !has_class_1 {
                    scores.pop();
                }
            }
        }
        let second = if kind.binary_case {
            if kind.weights_all_positive {
                SecondClass::Complement
            } else {
                SecondClass::Negation
            }
        } else {
            SecondClass::No
        };
        write_scores(scores, self.post, second);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::onnx::proto::{AttributeProto, ElemType, TensorData, TensorProto};
    use candle_core::Device;

    fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            ints: v.to_vec(),
            ..Default::default()
        }
    }
    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            floats: v.to_vec(),
            ..Default::default()
        }
    }
    fn strings(name: &str, v: &[&str]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }
    fn text(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            s: Some(v.as_bytes().to_vec()),
            ..Default::default()
        }
    }
    fn tensor(name: &str, v: Vec<f32>) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            t: Some(TensorProto {
                name: name.into(),
                dims: vec![v.len() as i64],
                elem_type: ElemType::Float,
                data: TensorData::F32(v),
            }),
            ..Default::default()
        }
    }
    fn node(op: &str, attributes: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: "trees".into(),
            op_type: op.into(),
            domain: "ai.onnx.ml".into(),
            inputs: vec!["x".into()],
            outputs: vec!["y".into()],
            attributes,
        }
    }
    fn run(op: &TreeOp, rows: &[[f32; 1]]) -> Vec<Vec<f32>> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::from_vec(flat, (rows.len(), 1), &Device::Cpu).unwrap();
        op.run(&x).unwrap().to_vec2().unwrap()
    }

    /// One split on x0 <= 0: the true leaf weighs target 0 (3), the false
    /// leaf target 1 (5); base values [10, 20].
    fn two_target_regressor(aggregate: &str) -> NodeProto {
        node(
            "TreeEnsembleRegressor",
            vec![
                ints("nodes_treeids", &[0, 0, 0]),
                ints("nodes_nodeids", &[0, 1, 2]),
                ints("nodes_featureids", &[0, 0, 0]),
                strings("nodes_modes", &["BRANCH_LEQ", "LEAF", "LEAF"]),
                floats("nodes_values", &[0.0, 0.0, 0.0]),
                ints("nodes_truenodeids", &[1, 0, 0]),
                ints("nodes_falsenodeids", &[2, 0, 0]),
                ints("target_treeids", &[0, 0]),
                ints("target_nodeids", &[1, 2]),
                ints("target_ids", &[0, 1]),
                floats("target_weights", &[3.0, 5.0]),
                floats("base_values", &[10.0, 20.0]),
                ints("n_targets", &[]),
                AttributeProto {
                    name: "n_targets".into(),
                    i: Some(2),
                    ..Default::default()
                },
                text("aggregate_function", aggregate),
            ],
        )
    }

    /// onnxruntime writes 0 for a target no leaf of the row weighs, its base
    /// value dropped: with MAX, as with SUM.
    #[test]
    fn untouched_targets_score_zero() {
        for aggregate in ["SUM", "MAX", "MIN"] {
            let n = two_target_regressor(aggregate);
            let mut n = n;
            n.attributes.retain(|a| !(a.name == "n_targets" && a.i.is_none()));
            let op = compile_classic_trees(&Attributes { node: &n }, false).unwrap();
            assert_eq!(run(&op, &[[-1.0], [1.0]]), [[13.0, 0.0], [0.0, 25.0]], "{aggregate}");
        }
    }

    #[test]
    fn one_label_classifiers_and_nan_thresholds_are_refused() {
        let mut n = two_target_regressor("SUM");
        n.op_type = "TreeEnsembleClassifier".into();
        n.attributes
            .retain(|a| !a.name.starts_with("target_") && a.name != "n_targets");
        n.attributes.extend([
            ints("class_treeids", &[0]),
            ints("class_nodeids", &[1]),
            ints("class_ids", &[0]),
            floats("class_weights", &[1.0]),
            ints("classlabels_int64s", &[7]),
        ]);
        let e = compile_classic_trees(&Attributes { node: &n }, true).unwrap_err();
        assert!(e.problem.contains("1 class labels"), "{e:?}");

        let mut n = two_target_regressor("SUM");
        n.attributes.retain(|a| !(a.name == "n_targets" && a.i.is_none()));
        for a in n.attributes.iter_mut().filter(|a| a.name == "nodes_values") {
            a.floats[0] = f32::NAN;
        }
        let e = compile_classic_trees(&Attributes { node: &n }, false).unwrap_err();
        assert!(e.problem.contains("threshold is NaN"), "{e:?}");
    }

    /// Opset 5 writes a one-leaf tree as a root whose two sides are the same leaf.
    #[test]
    fn one_leaf_trees_of_opset_5_load() {
        let n = node(
            "TreeEnsemble",
            vec![
                ints("nodes_featureids", &[0, 0]),
                tensor("nodes_splits", vec![0.0, 0.0]),
                tensor("nodes_modes", vec![0.0, 0.0]),
                ints("nodes_truenodeids", &[0, 1]),
                ints("nodes_falsenodeids", &[0, 2]),
                ints("nodes_trueleafs", &[1, 1]),
                ints("nodes_falseleafs", &[1, 1]),
                ints("tree_roots", &[0, 1]),
                ints("leaf_targetids", &[0, 0, 0]),
                tensor("leaf_weights", vec![1.5, 2.0, 4.0]),
            ],
        );
        let op = compile_trees_v5(&Attributes { node: &n }).unwrap();
        assert_eq!(run(&op, &[[-1.0], [1.0]]), [[3.5], [5.5]]);
    }
}
