//! Models: load a model file (its format detected from the content) onto a
//! device, and turn blocks of feature values into scores.
//!
//! Architecture invariant: nothing here knows about Arrow or Parquet. A model
//! sees a [`FeatureBlock`] of plain numbers, in the order of its own feature
//! list, and returns [`Scores`].

pub mod linear;
pub mod onnx;
pub mod set;
pub mod trees;
pub mod ubjson;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::util::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model file `{}` is not a format lakescore knows{hint}", path.display())]
    UnknownFormat { path: PathBuf, hint: String },
    #[error("cannot parse model file `{}` as {what}", path.display())]
    Parse {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("model file `{}` is invalid: {field} {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    /// An evaluation's label that is neither 0 nor 1 (nor missing).
    #[error(
        "label column `{column}` holds `{value}`; labels must be 0 or 1 (false or true), or null to leave the row out"
    )]
    Label { column: String, value: f64 },
    #[error("model `{model}` failed to compute scores on {device}")]
    Compute {
        model: String,
        device: String,
        #[source]
        source: Box<candle_core::Error>,
    },
}

/// The model formats lakescore reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelFormat {
    /// `{"format": "linear", ...}`: linear and logistic regression.
    Linear,
    /// XGBoost `save_model` JSON.
    XgboostJson,
    /// XGBoost `save_model` UBJSON (`.ubj`).
    XgboostUbjson,
    /// LightGBM text model.
    LightgbmText,
    /// An ONNX graph (`.onnx`): scikit-learn through skl2onnx, PyTorch, ...
    Onnx,
}

impl ModelFormat {
    /// The stable name manifests, reports and errors use.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Linear => "linear",
            ModelFormat::XgboostJson => "xgboost-json",
            ModelFormat::XgboostUbjson => "xgboost-ubjson",
            ModelFormat::LightgbmText => "lightgbm-text",
            ModelFormat::Onnx => "onnx",
        }
    }
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// candle runs an element-wise op of this many elements or more on the CPU
/// on a thread pool of its own: one per process, sized once from the
/// `CANDLE_NUM_THREADS` variable (candle has no other way to set it). Its
/// threads would compete with the run's pool, and their number is not the
/// engine's to choose, so lakescore runs every element-wise op below this
/// size, in chunks of rows: exact, since each output element depends on its
/// own inputs only. (Matrix products are gemm's, on the calling thread.)
pub const CANDLE_PARALLEL_ELEMENTS: usize = 64 * 1024;

/// Float32 or float64 sigmoid on the tensor's device, `1 / (1 + exp(-x))`
/// (linear models, ONNX graphs).
pub(crate) fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    x.neg()?.exp()?.affine(1.0, 1.0)?.recip()
}

/// Softmax along `axis`, with the maximum subtracted first.
pub(crate) fn softmax(x: &Tensor, axis: usize) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(axis)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(axis)?;
    e.broadcast_div(&sum)
}

/// The most features a model may declare (a count beyond any real table is a
/// corrupt file, and would otherwise size allocations).
pub const MAX_FEATURES: usize = 1 << 20;

/// The most outputs (score columns) a model may have: each is a column of
/// every output file and a value per row in every block, so a count from a
/// corrupt or hostile file would size the run's memory and work.
pub const MAX_OUTPUTS: usize = 1 << 12;

/// A device as errors name it (`cpu`, or candle's description).
pub(crate) fn describe_device(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".to_string(),
        other => format!("{other:?}"),
    }
}

/// How a model is loaded.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Produce the raw margin instead of the transformed prediction (tree
    /// ensembles: XGBoost's `output_margin`, LightGBM's `raw_score`).
    pub output_margin: bool,
    /// The model's feature names in input order, for a model file that does
    /// not name them (an ONNX graph with one wide input): a package
    /// manifest's `feature_names`.
    pub feature_names: Option<Vec<String>>,
}

/// What identifies a model in reports, manifests and logs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: Option<String>,
    pub format: ModelFormat,
    pub path: PathBuf,
    /// SHA-256 of the model file's bytes.
    pub sha256: String,
    /// Where it came from in an MLflow registry (`--model models:/…`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryModel>,
}

/// Where a run's model came from in the registry: what reports, the
/// manifest, the ledger and lineage name.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RegistryModel {
    /// The URI as given (`models:/churn@champion`).
    pub uri: String,
    /// The tracking server, without credentials or query.
    pub tracking_uri: String,
    /// The registered model and version (not for `runs:/`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The alias it was resolved through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The MLflow run that logged the model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Where the model's files are (`mlflow-artifacts:/…`, `s3://…`).
    pub artifacts: String,
    /// SHA-256 over the model folder's files (path and bytes of each).
    pub digest: String,
}

/// One model input, in the model's own order.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// The column the feature is read from.
    pub name: String,
    /// The value a missing entry (null or NaN) takes; NaN keeps it missing for
    /// models that handle missing values themselves.
    pub missing_value: f64,
    /// For a categorical feature whose model knows its training categories:
    /// the category -> code mapping that string (or dictionary) columns are
    /// read through. Unknown categories and nulls become missing.
    pub categories: Option<Arc<Categories>>,
}

/// A categorical feature's training categories; a category's code is its
/// position.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Categories {
    by_name: HashMap<String, u32>,
    /// For categories that are numbers (a pandas category of ints): value
    /// bits -> code.
    by_number: HashMap<u64, u32>,
    /// Whether a category the model never saw is an error (XGBoost refuses
    /// such input) rather than a missing value (LightGBM).
    pub unknown_is_error: bool,
}

impl Categories {
    pub fn from_strings(names: Vec<String>) -> Categories {
        let by_name = names.into_iter().enumerate().map(|(i, n)| (n, i as u32)).collect();
        Categories {
            by_name,
            by_number: HashMap::new(),
            unknown_is_error: false,
        }
    }

    pub fn from_numbers(values: Vec<f64>) -> Categories {
        let by_number = values
            .iter()
            .enumerate()
            .map(|(i, v)| (number_key(*v), i as u32))
            .collect();
        Categories {
            by_name: HashMap::new(),
            by_number,
            unknown_is_error: false,
        }
    }

    /// Whether the categories are numbers (read from numeric columns by value).
    pub fn are_numbers(&self) -> bool {
        !self.by_number.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len() + self.by_number.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each code's category as text, in code order.
    pub fn names(&self) -> Vec<String> {
        let mut names = vec![String::new(); self.len()];
        for (name, &code) in &self.by_name {
            names[code as usize] = name.clone();
        }
        for (&bits, &code) in &self.by_number {
            names[code as usize] = f64::from_bits(bits).to_string();
        }
        names
    }

    /// The code of a string category, if the model knows it.
    pub fn code_of_name(&self, name: &str) -> Option<f64> {
        self.by_name.get(name).map(|&c| c as f64)
    }

    /// The code of a numeric category, if the model knows it.
    pub fn code_of_number(&self, value: f64) -> Option<f64> {
        self.by_number.get(&number_key(value)).map(|&c| c as f64)
    }
}

/// 1 and 1.0 (and 0 and -0) are the same category.
fn number_key(v: f64) -> u64 {
    if v == 0.0 { 0 } else { v.to_bits() }
}

/// Feature values for a run of rows, feature-major: the values of feature `j`
/// are `values[j * n_rows .. (j + 1) * n_rows]`. Missing values have already
/// been replaced by each feature's `missing_value`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FeatureBlock {
    pub n_rows: usize,
    pub n_features: usize,
    pub values: Vec<f64>,
}

/// Model outputs for a run of rows: one column per output.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub n_rows: usize,
    pub outputs: Vec<Vec<f32>>,
}

/// A loaded model, ready to score blocks on the device it was loaded onto.
pub trait Model: Send + Sync + std::fmt::Debug {
    fn info(&self) -> &ModelInfo;

    /// For a package to give the model its name and version.
    fn info_mut(&mut self) -> &mut ModelInfo;

    /// The features the model reads, in the order of [`FeatureBlock`] rows.
    fn features(&self) -> &[Feature];

    /// How many score columns the model produces (classes, or 1).
    fn n_outputs(&self) -> usize;

    /// Scores for every row of `block`. Takes the block by value so that a
    /// model can hand its buffer to the device without copying.
    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError>;

    /// The closed range every score falls in, when the model's output
    /// function bounds it (probabilities, classes, exponentials); a score
    /// outside it is a wrongly computed one.
    fn output_range(&self) -> Option<(f64, f64)> {
        None
    }

    /// The models a set is made of (none for a single model).
    fn members(&self) -> Vec<&ModelInfo> {
        Vec::new()
    }

    /// Which CPU kernels its trees run on, in words (`"avx2 bytes 300 of
    /// 300 trees"`), for the report and the log; `None` for a model without
    /// trees or on a GPU.
    fn cpu_kernels(&self) -> Option<String> {
        None
    }
}

/// Loads the model at `path` onto `device`, detecting its format from the
/// file's content.
pub fn load(path: &Path, device: &Device, options: &LoadOptions) -> Result<Box<dyn Model>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(path, &bytes, device, options)
}

/// Loads a model from its file's bytes (`path` names it in messages and
/// reports), detecting its format from the content: for models that are
/// not files on this machine, and for the fuzz targets.
pub fn load_bytes(
    path: &Path,
    bytes: &[u8],
    device: &Device,
    options: &LoadOptions,
) -> Result<Box<dyn Model>, ModelError> {
    let model = check_outputs(path, load_on(path, bytes, device, options)?)?;
    // candle queues each host thread's GPU work on that thread's own stream:
    // the weights uploaded here must have landed before the workers' threads
    // read them.
    device.synchronize().map_err(|source| ModelError::Compute {
        model: model.info().name.clone(),
        device: describe_device(device),
        source: Box::new(source),
    })?;
    Ok(model)
}

fn load_on(path: &Path, bytes: &[u8], device: &Device, options: &LoadOptions) -> Result<Box<dyn Model>, ModelError> {
    let sha256 = sha256_hex(bytes);
    let (format, parsed_json) = detect(path, bytes)?;
    let default_name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let identity = |name: Option<String>, version| ModelInfo {
        name: name.unwrap_or(default_name),
        version,
        format,
        path: path.to_path_buf(),
        sha256,
        registry: None,
    };
    if format == ModelFormat::Onnx {
        if options.output_margin {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                field: "`--output-margin`".into(),
                problem: "applies to XGBoost and LightGBM models; an ONNX graph computes what it computes".into(),
            });
        }
        return Ok(Box::new(onnx::OnnxModel::from_bytes(
            path,
            bytes,
            identity,
            options.feature_names.as_deref(),
            device,
        )?));
    }
    if let Some(names) = &options.feature_names
        && !names.is_empty()
    {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            field: "`feature_names`".into(),
            problem: format!("a {format} model names its own features; `feature_names` is for ONNX graphs that do not"),
        });
    }
    if format == ModelFormat::Linear {
        if options.output_margin {
            return Err(ModelError::Invalid {
                path: path.to_path_buf(),
                field: "`--output-margin`".into(),
                problem: "applies to tree ensembles; for a linear model set `\"link\": \"identity\"`".into(),
            });
        }
        return Ok(Box::new(linear::LinearModel::from_json(path, bytes, identity, device)?));
    }
    let ensemble = match format {
        ModelFormat::XgboostJson | ModelFormat::XgboostUbjson => {
            let document = if let Some(document) = parsed_json {
                document
            } else {
                ubjson::parse(bytes).map_err(|e| ModelError::Invalid {
                    path: path.to_path_buf(),
                    field: "the UBJSON document".into(),
                    problem: e.to_string(),
                })?
            };
            trees::xgboost::ensemble_from_document(path, &document)?
        }
        ModelFormat::LightgbmText => trees::lightgbm::ensemble_from_text(path, bytes)?,
        ModelFormat::Linear | ModelFormat::Onnx => unreachable!("handled above"),
    };
    Ok(Box::new(trees::TreeModel::new(
        identity(None, None),
        ensemble,
        options.output_margin,
        device,
    )?))
}

/// Refuses a model with more outputs than [`MAX_OUTPUTS`].
fn check_outputs(path: &Path, model: Box<dyn Model>) -> Result<Box<dyn Model>, ModelError> {
    if model.n_outputs() > MAX_OUTPUTS {
        return Err(ModelError::Invalid {
            path: path.to_path_buf(),
            field: "its outputs".into(),
            problem: format!(
                "the model has {} outputs; lakescore writes at most {MAX_OUTPUTS} score columns",
                model.n_outputs()
            ),
        });
    }
    Ok(model)
}

/// The format of a model file, from its content alone (extensions lie).
pub fn detect_format(path: &Path, bytes: &[u8]) -> Result<ModelFormat, ModelError> {
    detect(path, bytes).map(|(format, _)| format)
}

/// The format, and for JSON the parsed document (parsed once: XGBoost files
/// run to megabytes).
fn detect(path: &Path, bytes: &[u8]) -> Result<(ModelFormat, Option<serde_json::Value>), ModelError> {
    const SUPPORTED: &str = "linear JSON, XGBoost JSON or UBJSON, LightGBM text, ONNX";
    let unknown = |hint: String| ModelError::UnknownFormat {
        path: path.to_path_buf(),
        hint,
    };
    if trees::lightgbm::looks_like(bytes) {
        return Ok((ModelFormat::LightgbmText, None));
    }
    if onnx::looks_like(bytes) {
        return Ok((ModelFormat::Onnx, None));
    }
    let mut significant = bytes.iter().filter(|b| !b.is_ascii_whitespace());
    if significant.next() != Some(&b'{') {
        return Err(unknown(format!(" (supported: {SUPPORTED})")));
    }
    // UBJSON: `{` then a key length marker (`i`, `U`, `I`, `l`, `L`) or an
    // optimised-container marker (`$`, `#`), where JSON has `"` or `}`.
    if bytes[0] == b'{' && matches!(bytes.get(1), Some(b'i' | b'U' | b'I' | b'l' | b'L' | b'$' | b'#')) {
        return Ok((ModelFormat::XgboostUbjson, None));
    }
    // XGBoost's JSON may hold bare NaN, which strict JSON parsers reject.
    let document = trees::xgboost::parse_json(bytes).map_err(|source| ModelError::Parse {
        path: path.to_path_buf(),
        what: "JSON",
        source,
    })?;
    if document.get("learner").is_some() {
        return Ok((ModelFormat::XgboostJson, Some(document)));
    }
    match document.get("format").and_then(|f| f.as_str()) {
        Some("linear") => Ok((ModelFormat::Linear, None)),
        Some(other) => Err(unknown(format!(
            ": JSON with `\"format\": \"{other}\"`; expected `\"linear\"`"
        ))),
        None => Err(unknown(format!(
            ": JSON without a `format` field (a linear model) or a `learner` (an XGBoost model); supported: {SUPPORTED}"
        ))),
    }
}
