//! ONNX models (`.onnx`, from scikit-learn through skl2onnx, PyTorch through
//! `torch.onnx.export`, or any exporter): decoded by our own protobuf reader
//! ([`proto`]), compiled into a graph of candle ops ([`graph`]) with the
//! ONNX-ML operators in [`ml`] (tree ensembles compile into the same
//! evaluator as XGBoost and LightGBM models), and run block by block.
//!
//! ```text
//! bytes --proto--> ModelProto --graph::compile--> Graph (needed nodes, constants folded)
//! FeatureBlock --Graph::run (candle tensors, tree evaluator)--> score output --> Scores
//! ```
//!
//! Features are named by the graph's inputs when each feature is its own
//! input, otherwise by the metadata property `feature_names` (a JSON array,
//! or names separated by commas), otherwise by the package manifest's
//! `feature_names`.

pub mod dense;
pub mod graph;
pub mod ml;
pub mod node;
pub mod proto;

use std::path::Path;

use candle_core::{DType, Device};

use super::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores, describe_device};
use graph::Graph;
use proto::{Dim, ElemType, ModelProto, TypeKind};

/// The default-domain opsets lakescore knows the semantics of.
pub const OPSETS: std::ops::RangeInclusive<i64> = 7..=23;
/// The `ai.onnx.ml` opsets.
pub const ML_OPSETS: std::ops::RangeInclusive<i64> = 1..=5;
/// The metadata property that names a wide input's features.
pub const FEATURE_NAMES_KEY: &str = "feature_names";

/// Whether `bytes` look like a serialized ONNX `ModelProto`: field 1
/// (`ir_version`) first, as every exporter writes it, then a model that
/// decodes with a graph.
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x08) && bytes.get(1).is_some_and(|&v| (1..=20).contains(&v))
}

#[derive(Debug)]
pub struct OnnxModel {
    info: ModelInfo,
    features: Vec<Feature>,
    graph: Graph,
    n_outputs: usize,
    output_range: Option<(f64, f64)>,
    device: Device,
}

impl OnnxModel {
    pub fn from_bytes(
        path: &Path,
        bytes: &[u8],
        identity: impl FnOnce(Option<String>, Option<String>) -> ModelInfo,
        feature_names: Option<&[String]>,
        device: &Device,
    ) -> Result<OnnxModel, ModelError> {
        let invalid = |field: String, problem: String| ModelError::Invalid {
            path: path.to_path_buf(),
            field,
            problem,
        };
        let model = ModelProto::decode(bytes).map_err(|e| invalid("the ONNX protobuf".into(), e.to_string()))?;
        let opset = model.opsets.get("").or_else(|| model.opsets.get("ai.onnx")).copied();
        let ml_opset = model.opsets.get("ai.onnx.ml").copied().unwrap_or(0);
        let opset = opset.unwrap_or(0);
        if opset != 0 && !OPSETS.contains(&opset) {
            return Err(invalid(
                "opset_import".into(),
                format!(
                    "default-domain opset {opset} is outside the opsets lakescore knows ({}..={}); export with \
                     `opset_version` in that range",
                    OPSETS.start(),
                    OPSETS.end()
                ),
            ));
        }
        if ml_opset != 0 && !ML_OPSETS.contains(&ml_opset) {
            return Err(invalid(
                "opset_import".into(),
                format!("ai.onnx.ml opset {ml_opset} is outside 1..=5"),
            ));
        }
        let g = &model.graph;
        if g.has_sparse_initializers {
            return Err(invalid("graph".into(), "sparse initializers are not supported".into()));
        }

        // The inputs features feed: graph inputs that are not initializers.
        let mut inputs = Vec::new();
        for input in &g.inputs {
            if g.initializers.iter().any(|i| i.name == input.name) {
                continue;
            }
            let field = format!("input `{}`", input.name);
            let TypeKind::Tensor { elem_type, shape } = &input.kind else {
                return Err(invalid(
                    field,
                    "is not a tensor; lakescore feeds tensors of features".into(),
                ));
            };
            let dtype = match elem_type {
                ElemType::Float => DType::F32,
                ElemType::Double => DType::F64,
                other => {
                    return Err(invalid(
                        field,
                        format!(
                            "is {other}; lakescore feeds float or double features (convert with a Cast in the model)"
                        ),
                    ));
                }
            };
            let (width, rank1) = match shape.as_deref() {
                Some([_batch]) => (1, true),
                Some([_batch, Dim::Size(k)]) if *k > 0 => (*k as usize, false),
                Some([_batch, _]) => {
                    return Err(invalid(
                        field,
                        "has no fixed feature count (its second dimension is symbolic)".into(),
                    ));
                }
                Some(dims) => {
                    return Err(invalid(
                        field,
                        format!("has rank {}; lakescore feeds [rows] or [rows, features]", dims.len()),
                    ));
                }
                None => return Err(invalid(field, "declares no shape".into())),
            };
            if let Some([Dim::Size(n), ..]) = shape.as_deref()
                && *n > 1
            {
                return Err(invalid(
                    field,
                    format!("has a fixed batch size of {n}; export with a dynamic batch axis"),
                ));
            }
            inputs.push((input.name.clone(), width, dtype, rank1));
        }
        if inputs.is_empty() {
            return Err(invalid("graph".into(), "has no inputs to feed features to".into()));
        }
        let n_features: usize = inputs.iter().map(|i| i.1).sum();
        if n_features > super::MAX_FEATURES {
            return Err(invalid("graph inputs".into(), format!("take {n_features} features")));
        }
        let names = feature_names_of(&model, &inputs, n_features, feature_names).map_err(|(f, p)| invalid(f, p))?;

        // The score output: the first float tensor (regressors, networks,
        // `zipmap=False` classifiers) or map sequence (ZipMap) output.
        let output = g
            .outputs
            .iter()
            .find(|o| match &o.kind {
                TypeKind::Tensor { elem_type, .. } => matches!(elem_type, ElemType::Float | ElemType::Double),
                TypeKind::Sequence(inner) => matches!(inner.as_ref(), TypeKind::Map { .. }),
                _ => false,
            })
            .ok_or_else(|| {
                let listed: Vec<&str> = g.outputs.iter().map(|o| o.name.as_str()).collect();
                invalid(
                    "graph outputs".into(),
                    format!(
                        "none is a float tensor or a ZipMap of probabilities (outputs: `{}`)",
                        listed.join("`, `")
                    ),
                )
            })?;
        let graph = Graph::compile(g, inputs, &output.name, opset.max(1), ml_opset, device)
            .map_err(|e| invalid(e.node, e.problem))?;

        let mut onnx = OnnxModel {
            info: identity(
                None,
                (model.model_version != 0).then(|| model.model_version.to_string()),
            ),
            features: names
                .into_iter()
                .map(|name| Feature {
                    name,
                    missing_value: f64::NAN,
                    categories: None,
                })
                .collect(),
            graph,
            n_outputs: 0,
            output_range: None,
            device: device.clone(),
        };
        // The output's width, from two rows of zeros (shapes in ONNX files
        // are often symbolic or absent; two rows, so that a Squeeze without
        // axes keeps the batch axis).
        let probe = onnx
            .run(&vec![0.0; 2 * n_features], 2)
            .map_err(|e| invalid(format!("output `{}`", output.name), format!("cannot be computed: {e}")))?;
        onnx.n_outputs = probe.len();
        if onnx.n_outputs == 0 {
            return Err(invalid(
                format!("output `{}`", output.name),
                "has no values per row".into(),
            ));
        }
        onnx.output_range = onnx.graph.output_range();
        Ok(onnx)
    }

    /// Runs the graph on `n_rows` rows of feature-major values: one column per output.
    fn run(&self, values: &[f64], n_rows: usize) -> candle_core::Result<Vec<Vec<f32>>> {
        let out = self.graph.run(values, n_rows, &self.device)?;
        let out = match out.rank() {
            // A Squeeze without axes of a one-row block.
            0 => out.reshape((1, 1))?,
            1 => out.unsqueeze(1)?,
            2 => out,
            r => {
                let rows = out.dim(0)?;
                let _ = r;
                out.reshape((rows, ()))?
            }
        };
        let (rows, k) = out.dims2()?;
        if rows != n_rows {
            candle_core::bail!("the output has {rows} rows for {n_rows} input rows");
        }
        let flat: Vec<f32> = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        Ok((0..k).map(|j| (0..rows).map(|r| flat[r * k + j]).collect()).collect())
    }
}

/// The model's feature names, from its inputs, its metadata or the manifest.
fn feature_names_of(
    model: &ModelProto,
    inputs: &[(String, usize, DType, bool)],
    n_features: usize,
    manifest: Option<&[String]>,
) -> Result<Vec<String>, (String, String)> {
    // One `[N, 1]` input per feature names them, unless a single such input
    // has names in the metadata.
    let from_inputs = inputs.iter().all(|i| i.1 == 1)
        && inputs.len() == n_features
        && (n_features > 1 || !model.metadata.contains_key(FEATURE_NAMES_KEY));
    let from_metadata = match model.metadata.get(FEATURE_NAMES_KEY) {
        Some(text) => Some(parse_names(text).map_err(|p| (format!("metadata `{FEATURE_NAMES_KEY}`"), p))?),
        None => None,
    };
    let (names, source) = if from_inputs {
        (
            inputs.iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
            "the graph's inputs",
        )
    } else if let Some(names) = from_metadata.clone() {
        (names, "metadata `feature_names`")
    } else if let Some(names) = manifest {
        (names.to_vec(), "the package's `feature_names`")
    } else {
        let described: Vec<String> = inputs.iter().map(|i| format!("`{}` takes {}", i.0, i.1)).collect();
        return Err((
            "features".into(),
            format!(
                "the model does not name its {n_features} features (input {}); add the metadata property \
                 `{FEATURE_NAMES_KEY}` (a JSON array of column names) to the ONNX file, or package the model \
                 with `feature_names = [...]` in lakescore.toml",
                described.join(", ")
            ),
        ));
    };
    if names.len() != n_features {
        return Err((
            "features".into(),
            format!(
                "{source} names {} features but the graph's inputs take {n_features}",
                names.len()
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(("features".into(), format!("{source} names `{dup}` twice")));
    }
    // Every other source given must agree.
    for (other, label) in [
        (from_metadata.as_deref(), "metadata `feature_names`"),
        (manifest, "the package's `feature_names`"),
    ] {
        if let Some(other) = other
            && other != names.as_slice()
        {
            let first = names
                .iter()
                .zip(other)
                .position(|(a, b)| a != b)
                .unwrap_or(names.len().min(other.len()));
            return Err((
                "features".into(),
                format!(
                    "{label} disagrees with {source}: {} names against {}, first difference at position {first} \
                     (`{}` against `{}`)",
                    other.len(),
                    names.len(),
                    other.get(first).map(String::as_str).unwrap_or("-"),
                    names.get(first).map(String::as_str).unwrap_or("-"),
                ),
            ));
        }
    }
    Ok(names)
}

/// A JSON array of strings, or names separated by commas.
fn parse_names(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    let names: Vec<String> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| format!("is not a JSON array of strings: {e}"))?
    } else {
        trimmed.split(',').map(|s| s.trim().to_string()).collect()
    };
    if names.iter().any(|n| n.is_empty()) {
        return Err("holds an empty name".into());
    }
    Ok(names)
}

impl Model for OnnxModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn info_mut(&mut self) -> &mut ModelInfo {
        &mut self.info
    }

    fn features(&self) -> &[Feature] {
        &self.features
    }

    fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    fn output_range(&self) -> Option<(f64, f64)> {
        self.output_range
    }

    fn cpu_kernels(&self) -> Option<String> {
        if !self.device.is_cpu() {
            return None;
        }
        let trees: Vec<String> = self
            .graph
            .steps
            .iter()
            .filter_map(|step| match &step.op {
                graph::Op::Ml(ml) => match &**ml {
                    ml::MlOp::Trees(trees) => Some(trees.cpu_kernels()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        (!trees.is_empty()).then(|| trees.join("; "))
    }

    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
        let outputs = self
            .run(&block.values, block.n_rows)
            .map_err(|source| ModelError::Compute {
                model: self.info.name.clone(),
                device: describe_device(&self.device),
                source: Box::new(source),
            })?;
        Ok(Scores {
            n_rows: block.n_rows,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::graph::{ColumnOp, DENSE_TILE_ROWS, Op};
    use super::*;

    /// The sample MLP (torch: standardise, NaN to 0, three layers) compiles
    /// to its input's prelude and three dense layers with their ReLUs; the
    /// parity tests check the scores.
    fn sample(name: &str) -> OnnxModel {
        load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample").join(name)).unwrap()
    }

    /// The ONNX file at `path`, on the CPU, its features named by the file.
    fn load(path: &Path) -> Result<OnnxModel, ModelError> {
        let bytes = std::fs::read(path).unwrap();
        let identity = |name: Option<String>, version| ModelInfo {
            name: name.unwrap_or_default(),
            version,
            format: super::super::ModelFormat::Onnx,
            path: path.to_path_buf(),
            sha256: String::new(),
            registry: None,
        };
        OnnxModel::from_bytes(path, &bytes, identity, None, &Device::Cpu)
    }

    /// Element-wise steps run in row chunks below candle's parallel size
    /// with the whole block's scores, bit for bit: forced here with a limit
    /// of 50 values, on every ONNX model the tests have (the samples and the
    /// fixtures made by torch and skl2onnx).
    #[test]
    fn element_wise_steps_in_row_chunks_score_as_whole_blocks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut paths: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("tests/fixtures/onnx"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
            .collect();
        paths.extend(["mlp.onnx", "rf.onnx"].map(|name| root.join("datasets/sample").join(name)));
        paths.sort();
        let mut chunked_models = 0;
        for path in &paths {
            let Ok(mut model) = load(path) else {
                continue; // (a fixture that needs feature names from a package)
            };
            let n_features = model.features().len();
            let n_rows = 700;
            let values: Vec<f64> = (0..n_features * n_rows)
                .map(|i| match i % 37 {
                    0 => f64::NAN,
                    k => (k as f64 - 18.0) / 7.0,
                })
                .collect();
            let block = || FeatureBlock {
                n_rows,
                n_features,
                values: values.clone(),
            };
            let whole = model.predict(block());
            let steps_chunked = model.graph.steps.iter().any(|s| super::graph::is_row_wise_op(&s.op));
            model.graph.elementwise_limit = 50;
            let chunked = model.predict(block());
            let (whole, chunked) = match (whole, chunked) {
                (Ok(whole), Ok(chunked)) => (whole, chunked),
                // (A model that refuses the missing values: the same way.)
                (Err(a), Err(b)) if a.to_string() == b.to_string() => continue,
                (a, b) => panic!("{}: {:?} whole, {:?} chunked", path.display(), a.err(), b.err()),
            };
            let bits = |scores: &Scores| -> Vec<Vec<u32>> {
                scores
                    .outputs
                    .iter()
                    .map(|o| o.iter().map(|v| v.to_bits()).collect())
                    .collect()
            };
            assert_eq!(bits(&chunked), bits(&whole), "{}", path.display());
            chunked_models += usize::from(steps_chunked);
        }
        assert!(
            chunked_models >= 5,
            "only {chunked_models} models have element-wise steps"
        );
    }

    /// The sample forest reads the feature block itself: no input tensor.
    #[test]
    fn the_sample_forest_reads_the_block() {
        let model = sample("rf.onnx");
        assert!(model.graph.inputs[0].block_only);
        assert!(!model.graph.inputs[0].column_major);
        assert_eq!(model.graph.tile_rows, None);
    }

    #[test]
    fn the_sample_mlp_compiles_to_a_prelude_and_dense_layers() {
        let model = sample("mlp.onnx");
        let prelude = &model.graph.inputs[0].prelude;
        assert!(
            matches!(
                prelude.as_slice(),
                [ColumnOp::Sub(_), ColumnOp::Div(_), ColumnOp::NanTo(_)]
            ),
            "{prelude:?}"
        );
        let ops: Vec<String> = model
            .graph
            .steps
            .iter()
            .map(|s| match &s.op {
                Op::Dense(d) => format!("dense relu={}", d.relu),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ops,
            [
                "dense relu=true",
                "dense relu=true",
                "dense relu=false",
                "Unary(Sigmoid)"
            ]
        );
        assert_eq!(model.graph.tile_rows, Some(DENSE_TILE_ROWS));
        assert!(
            model.graph.inputs[0].column_major,
            "a dense layer alone reads the input"
        );
        assert!(!model.graph.inputs[0].block_only);
        assert_eq!(model.output_range(), Some((0.0, 1.0)));
    }
}
