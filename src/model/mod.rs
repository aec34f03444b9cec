//! Models: load a model file (its format detected from the content) onto a
//! device, and turn blocks of feature values into scores.
//!
//! Architecture invariant: nothing here knows about Arrow or Parquet. A model
//! sees a [`FeatureBlock`] of plain numbers, in the order of its own feature
//! list, and returns [`Scores`].

pub mod linear;

use std::path::{Path, PathBuf};

use candle_core::Device;

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
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Linear => "linear",
        })
    }
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
}

/// One model input, in the model's own order.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    /// The column the feature is read from.
    pub name: String,
    /// The value a missing entry (null or NaN) takes; NaN keeps it missing for
    /// models that handle missing values themselves.
    pub missing_value: f64,
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

    /// The features the model reads, in the order of [`FeatureBlock`] rows.
    fn features(&self) -> &[Feature];

    /// How many score columns the model produces (classes, or 1).
    fn n_outputs(&self) -> usize;

    /// Scores for every row of `block`. Takes the block by value so that a
    /// model can hand its buffer to the device without copying.
    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError>;
}

/// Loads the model at `path` onto `device`, detecting its format from the
/// file's content.
pub fn load(path: &Path, device: &Device) -> Result<Box<dyn Model>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let sha256 = sha256_hex(&bytes);
    let format = detect_format(path, &bytes)?;
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
    };
    match format {
        ModelFormat::Linear => Ok(Box::new(linear::LinearModel::from_json(
            path, &bytes, identity, device,
        )?)),
    }
}

/// The format of a model file, from its content alone (extensions lie).
pub fn detect_format(path: &Path, bytes: &[u8]) -> Result<ModelFormat, ModelError> {
    let unknown = |hint: &str| ModelError::UnknownFormat {
        path: path.to_path_buf(),
        hint: hint.to_string(),
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(unknown(" (supported: linear JSON)"));
    }
    #[derive(serde::Deserialize)]
    struct FormatTag {
        format: Option<serde_json::Value>,
    }
    let tag: FormatTag = serde_json::from_slice(bytes).map_err(|source| ModelError::Parse {
        path: path.to_path_buf(),
        what: "JSON",
        source,
    })?;
    match tag.format.as_ref().and_then(|f| f.as_str()) {
        Some("linear") => Ok(ModelFormat::Linear),
        Some(other) => Err(unknown(&format!(
            ": JSON with `\"format\": \"{other}\"`; expected `\"linear\"`"
        ))),
        None => Err(unknown(
            ": JSON without a `format` field; a linear model has `\"format\": \"linear\"`",
        )),
    }
}
