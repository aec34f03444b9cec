//! Linear and logistic regression: `{"format": "linear", ...}`, evaluated with
//! candle on the model's device, accumulating in f64.
//!
//! ```json
//! {"format": "linear", "name": "churn", "version": "3",
//!  "features": ["age", "tenure_days"], "weights": [0.1, -0.002],
//!  "intercept": -1.5, "link": "logistic", "fill": [40.0, 0.0]}
//! ```
//! `weights` is one number per feature (one output) or one such list per
//! output; `intercept` is a number or one per output; `link` is `identity`,
//! `logistic` (per output) or `softmax` (across outputs); `fill` gives the
//! value of a missing feature (default 0).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::{Feature, FeatureBlock, Model, ModelError, ModelInfo, Scores, describe_device};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Link {
    Identity,
    Logistic,
    Softmax,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinearFile {
    #[allow(dead_code)] // checked by format detection
    format: String,
    name: Option<String>,
    version: Option<String>,
    features: Vec<String>,
    weights: serde_json::Value,
    intercept: serde_json::Value,
    #[serde(default = "default_link")]
    link: Link,
    fill: Option<Vec<f64>>,
}

fn default_link() -> Link {
    Link::Identity
}

#[derive(Debug)]
pub struct LinearModel {
    info: ModelInfo,
    features: Vec<Feature>,
    link: Link,
    /// One (1, n_features) f64 row per output, on the device.
    weight_rows: Vec<Tensor>,
    /// (n_outputs, 1) f64, on the device.
    intercepts: Tensor,
    device: Device,
}

impl LinearModel {
    pub fn from_json(
        path: &Path,
        bytes: &[u8],
        identity: impl FnOnce(Option<String>, Option<String>) -> ModelInfo,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let file: LinearFile = serde_json::from_slice(bytes).map_err(|source| ModelError::Parse {
            path: path.to_path_buf(),
            what: "a linear model",
            source,
        })?;
        let invalid = |field: &str, problem: String| ModelError::Invalid {
            path: path.to_path_buf(),
            field: format!("`{field}`"),
            problem,
        };
        let n_features = file.features.len();
        if n_features == 0 {
            return Err(invalid("features", "is empty".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(twice) = file.features.iter().find(|f| !seen.insert(f.as_str())) {
            return Err(invalid("features", format!("names `{twice}` twice")));
        }

        let weights: Vec<Vec<f64>> = match &file.weights {
            serde_json::Value::Array(items) if items.iter().all(|v| v.is_array()) && !items.is_empty() => {
                items.iter().map(numbers).collect::<Option<_>>()
            }
            other => numbers(other).map(|row| vec![row]),
        }
        .ok_or_else(|| {
            invalid(
                "weights",
                "must be a list of numbers, one per feature, or one such list per output".into(),
            )
        })?;
        for (output, row) in weights.iter().enumerate() {
            if row.len() != n_features {
                let which = if weights.len() == 1 {
                    String::new()
                } else {
                    format!(" for output {output}")
                };
                return Err(invalid(
                    "weights",
                    format!("has {} values{which} for {n_features} features", row.len()),
                ));
            }
        }
        let n_outputs = weights.len();
        let intercepts: Vec<f64> = match &file.intercept {
            serde_json::Value::Number(n) => n.as_f64().map(|b| vec![b; 1]),
            other => numbers(other),
        }
        .ok_or_else(|| {
            invalid(
                "intercept",
                "must be a number, or a list with one number per output".into(),
            )
        })?;
        if intercepts.len() != n_outputs {
            return Err(invalid(
                "intercept",
                format!("has {} values for {n_outputs} outputs", intercepts.len()),
            ));
        }
        if file.link == Link::Softmax && n_outputs < 2 {
            return Err(invalid(
                "link",
                "is `softmax`, which needs two or more outputs (one weight list per class)".into(),
            ));
        }
        let fill = file.fill.unwrap_or_else(|| vec![0.0; n_features]);
        if fill.len() != n_features {
            return Err(invalid(
                "fill",
                format!("has {} values for {n_features} features", fill.len()),
            ));
        }

        let compute_error = |source| ModelError::Compute {
            model: path.display().to_string(),
            device: describe_device(device),
            source: Box::new(source),
        };
        let weight_rows = weights
            .iter()
            .map(|row| Tensor::from_slice(row, (1, n_features), device))
            .collect::<Result<Vec<_>, _>>()
            .map_err(compute_error)?;
        let intercepts = Tensor::from_slice(&intercepts, (n_outputs, 1), device).map_err(compute_error)?;
        let features = file
            .features
            .into_iter()
            .zip(fill)
            .map(|(name, missing_value)| Feature {
                name,
                missing_value,
                categories: None,
            })
            .collect();
        Ok(LinearModel {
            info: identity(file.name, file.version),
            features,
            link: file.link,
            weight_rows,
            intercepts,
            device: device.clone(),
        })
    }

    fn margins_and_link(&self, block: FeatureBlock) -> candle_core::Result<Vec<Vec<f32>>> {
        let x = Tensor::from_vec(block.values, (block.n_features, block.n_rows), &self.device)?;
        // One (1, k) x (k, n) product per output: the gemv path, which runs on
        // this thread only (the pipeline already uses every core).
        let margins = self
            .weight_rows
            .iter()
            .map(|w| w.matmul(&x))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let z = Tensor::cat(&margins, 0)?;
        // The intercepts and the link are element-wise over (outputs, rows):
        // in column chunks below candle's own-thread-pool size (see
        // `super::CANDLE_PARALLEL_ELEMENTS`), exactly as whole.
        let n_outputs = z.dim(0)?;
        let chunk = ((super::CANDLE_PARALLEL_ELEMENTS - 1) / n_outputs.max(1)).max(1);
        let mut parts = Vec::with_capacity(block.n_rows.div_ceil(chunk));
        for start in (0..block.n_rows).step_by(chunk) {
            let z = z
                .narrow(1, start, chunk.min(block.n_rows - start))?
                .broadcast_add(&self.intercepts)?;
            parts.push(match self.link {
                Link::Identity => z,
                Link::Logistic => super::sigmoid(&z)?,
                Link::Softmax => super::softmax(&z, 0)?,
            });
        }
        let scores = match parts.len() {
            1 => parts.remove(0),
            _ => Tensor::cat(&parts, 1)?,
        };
        scores.to_dtype(DType::F32)?.to_vec2::<f32>()
    }
}

fn numbers(value: &serde_json::Value) -> Option<Vec<f64>> {
    value.as_array()?.iter().map(|v| v.as_f64()).collect()
}

impl Model for LinearModel {
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
        self.weight_rows.len()
    }

    fn output_range(&self) -> Option<(f64, f64)> {
        match self.link {
            Link::Identity => None,
            Link::Logistic | Link::Softmax => Some((0.0, 1.0)),
        }
    }

    fn predict(&self, block: FeatureBlock) -> Result<Scores, ModelError> {
        let n_rows = block.n_rows;
        if n_rows == 0 {
            return Ok(Scores {
                n_rows,
                outputs: vec![Vec::new(); self.n_outputs()],
            });
        }
        let outputs = self.margins_and_link(block).map_err(|source| ModelError::Compute {
            model: self.info.name.clone(),
            device: describe_device(&self.device),
            source: Box::new(source),
        })?;
        Ok(Scores { n_rows, outputs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A softmax over 40 outputs and 2,048 rows (81,920 values) runs in
    /// column chunks below candle's parallel size, with the scores of the
    /// same ops on the whole tensor, bit for bit.
    #[test]
    fn a_wide_link_in_chunks_gives_the_whole_tensors_scores() {
        let (n_features, n_outputs, n_rows) = (5, 40, 2_048);
        let weights: Vec<Vec<f64>> = (0..n_outputs)
            .map(|k| (0..n_features).map(|j| ((k * 7 + j * 3) as f64).sin()).collect())
            .collect();
        let intercepts: Vec<f64> = (0..n_outputs).map(|k| (k as f64 * 0.37).cos()).collect();
        let body = serde_json::json!({
            "format": "linear",
            "features": (0..n_features).map(|j| format!("x{j}")).collect::<Vec<_>>(),
            "weights": weights,
            "intercept": intercepts,
            "link": "softmax",
        });
        let path = Path::new("wide.json");
        let identity = |name: Option<String>, version| ModelInfo {
            name: name.unwrap_or_default(),
            version,
            format: crate::model::ModelFormat::Linear,
            path: path.to_path_buf(),
            sha256: String::new(),
            registry: None,
        };
        let model = LinearModel::from_json(path, body.to_string().as_bytes(), identity, &Device::Cpu).unwrap();
        let values: Vec<f64> = (0..n_features * n_rows)
            .map(|i| ((i * 13) % 101) as f64 / 17.0 - 3.0)
            .collect();
        assert!(n_outputs * n_rows >= crate::model::CANDLE_PARALLEL_ELEMENTS);
        let block = FeatureBlock {
            n_rows,
            n_features,
            values: values.clone(),
        };
        let chunked = model.margins_and_link(block).unwrap();
        // The same ops, on the whole (outputs, rows) tensor.
        let x = Tensor::from_vec(values, (n_features, n_rows), &Device::Cpu).unwrap();
        let margins: Vec<Tensor> = model.weight_rows.iter().map(|w| w.matmul(&x).unwrap()).collect();
        let z = Tensor::cat(&margins, 0)
            .unwrap()
            .broadcast_add(&model.intercepts)
            .unwrap();
        let whole = crate::model::softmax(&z, 0)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(chunked.len(), n_outputs);
        for (a, b) in chunked.iter().zip(&whole) {
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
