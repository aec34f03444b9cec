//! MLflow model folders (an `MLmodel` file and its artifacts, as
//! `mlflow.<flavor>.log_model` writes them): which flavor holds a model
//! lakescore reads, its file, and the signature's input columns as feature
//! names and type rules. [`crate::package::open`] turns a folder into a
//! package through [`MlflowModel::manifest`] or, beside a `lakescore.toml`,
//! [`MlflowModel::merge_into`].
//!
//! Flavors read: `xgboost` (JSON or UBJSON), `lightgbm` (the booster's text
//! file, or a skops file whose booster text is taken out of it, see
//! [`skops`]), `onnx`, and `python_function` when its loader is one of
//! those. Anything else (`sklearn`, `pytorch`, pickles) is refused with the
//! way to an ONNX copy: lakescore never runs Python or unpickles.

pub mod registry;
pub mod skops;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::{ColumnKind, Manifest};

/// The file that makes a folder an MLflow model.
pub const MLMODEL_FILE: &str = "MLmodel";

#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{}` is not an MLflow `MLmodel` file: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A flavor lakescore does not read, with what to do instead.
    #[error("`{}`: {problem}", path.display())]
    Unsupported { path: PathBuf, problem: String },
    /// The signature and a `lakescore.toml` (or the model itself) disagree.
    #[error("`{}` and `{}` disagree: {problem}", mlmodel.display(), other.display())]
    Disagree {
        mlmodel: PathBuf,
        other: PathBuf,
        problem: String,
    },
    #[error("the skops file `{}` {problem}", path.display())]
    Skops { path: PathBuf, problem: String },
}

/// A model flavor lakescore reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Xgboost,
    Lightgbm,
    Onnx,
}

impl Flavor {
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Xgboost => "xgboost",
            Flavor::Lightgbm => "lightgbm",
            Flavor::Onnx => "onnx",
        }
    }
}

/// One named input column of a model's signature.
#[derive(Debug, Clone, PartialEq)]
pub struct SignatureColumn {
    pub name: String,
    /// MLflow's type name (`double`, `long`, …).
    pub mlflow_type: String,
    /// The type rule it becomes.
    pub kind: ColumnKind,
}

/// An MLflow model folder, read.
#[derive(Debug, Clone)]
pub struct MlflowModel {
    /// The `MLmodel` file.
    pub mlmodel: PathBuf,
    pub flavor: Flavor,
    /// The model file, relative to the folder.
    pub artifact: PathBuf,
    /// The signature's input columns, when it names them (a tensor
    /// signature does not).
    pub inputs: Option<Vec<SignatureColumn>>,
    /// The MLflow run that logged the model.
    pub run_id: Option<String>,
    /// MLflow 3's logged-model id (`m-…`), or the model's UUID.
    pub model_id: Option<String>,
    /// Whether a `lakescore.toml` beside `MLmodel` pins the artifact's
    /// checksum.
    pub pinned: bool,
}

/// `MLmodel` as far as lakescore reads it.
#[derive(Deserialize)]
struct MlmodelFile {
    #[serde(default)]
    flavors: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    signature: Option<SignatureFile>,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    model_uuid: Option<String>,
}

/// The signature: each part a JSON document in a YAML string.
#[derive(Deserialize)]
struct SignatureFile {
    #[serde(default)]
    inputs: Option<String>,
}

/// A signature input as MLflow writes it (`ColSpec` or `TensorSpec`).
#[derive(Deserialize)]
struct InputSpec {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
}

impl MlflowModel {
    /// The MLflow model in `folder`, or `None` when it has no `MLmodel`.
    pub fn read(folder: &Path) -> Result<Option<MlflowModel>, MlflowError> {
        let path = folder.join(MLMODEL_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MlflowError::Read { path, source }),
        };
        let parse = |message: String| MlflowError::Parse {
            path: path.clone(),
            message,
        };
        let file: MlmodelFile = serde_yaml_ng::from_str(&text).map_err(|e| parse(e.to_string()))?;
        let (flavor, artifact) = choose_flavor(&file.flavors).map_err(|problem| MlflowError::Unsupported {
            path: path.clone(),
            problem,
        })?;
        let inputs = match file.signature.and_then(|s| s.inputs) {
            Some(json) => signature_columns(&json).map_err(parse)?,
            None => None,
        };
        Ok(Some(MlflowModel {
            mlmodel: path,
            flavor,
            artifact,
            inputs,
            run_id: file.run_id,
            model_id: file.model_id.or(file.model_uuid),
            pinned: false,
        }))
    }

    /// The model's file as lakescore loads it: the artifact's bytes, or for
    /// a skops file the booster text inside it.
    pub fn model_bytes(&self, artifact_bytes: Vec<u8>) -> Result<Vec<u8>, MlflowError> {
        match (self.flavor, skops::is_skops(&artifact_bytes)) {
            (Flavor::Lightgbm, true) => {
                let path = self.mlmodel.with_file_name(&self.artifact);
                skops::lightgbm_booster_text(&artifact_bytes)
                    .map(String::into_bytes)
                    .map_err(|problem| MlflowError::Skops { path, problem })
            }
            _ => Ok(artifact_bytes),
        }
    }

    /// A package manifest for the folder alone: named `name` (a registry
    /// names it better), its artifact (the caller records its bytes'
    /// digest), the signature's columns as feature names (for an ONNX graph)
    /// and type rules.
    pub fn manifest(&self, name: &str) -> Manifest {
        let mut manifest = Manifest {
            name: name.to_string(),
            artifact: self.artifact.clone(),
            ..Manifest::default()
        };
        self.add_signature(&mut manifest);
        manifest
    }

    /// Adds the signature to a `lakescore.toml` found beside `MLmodel`: its
    /// artifact must be the flavor's file, its `feature_names` and `type`
    /// rules must agree with the signature; what it leaves out, the
    /// signature gives.
    pub fn merge_into(&self, manifest: &mut Manifest, manifest_path: &Path) -> Result<(), MlflowError> {
        let disagree = |problem: String| MlflowError::Disagree {
            mlmodel: self.mlmodel.clone(),
            other: manifest_path.to_path_buf(),
            problem,
        };
        if manifest.artifact != self.artifact {
            return Err(disagree(format!(
                "the `{}` flavor's model is `{}`, the package's artifact `{}`",
                self.flavor.name(),
                self.artifact.display(),
                manifest.artifact.display()
            )));
        }
        if let (Some(columns), Some(names)) = (&self.inputs, &manifest.feature_names) {
            let signature: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            if signature != names.iter().map(String::as_str).collect::<Vec<_>>() {
                return Err(disagree(format!(
                    "the signature's inputs are [{}], `feature_names` is [{}]",
                    signature.join(", "),
                    names.join(", ")
                )));
            }
        }
        for column in self.inputs.iter().flatten() {
            if let Some(kind) = manifest.features.get(&column.name).and_then(|f| f.kind)
                && kind != column.kind
            {
                return Err(disagree(format!(
                    "the signature types input `{}` as `{}` (a `{}` column), `features.{}.type` says `{}`",
                    column.name,
                    column.mlflow_type,
                    column.kind.name(),
                    column.name,
                    kind.name()
                )));
            }
        }
        self.add_signature(manifest);
        Ok(())
    }

    fn add_signature(&self, manifest: &mut Manifest) {
        let Some(columns) = &self.inputs else {
            return;
        };
        // Tree models name their own features (checked against the
        // signature once loaded); an ONNX graph may need the names.
        if self.flavor == Flavor::Onnx && manifest.feature_names.is_none() {
            manifest.feature_names = Some(columns.iter().map(|c| c.name.clone()).collect());
        }
        for column in columns {
            let spec = manifest.features.entry(column.name.clone()).or_default();
            spec.kind.get_or_insert(column.kind);
        }
    }

    /// Checks the loaded model reads the signature's columns, in its order.
    pub fn check_features(&self, model_features: &[&str]) -> Result<(), MlflowError> {
        let Some(columns) = &self.inputs else {
            return Ok(());
        };
        let signature: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        if signature == model_features {
            return Ok(());
        }
        Err(MlflowError::Disagree {
            mlmodel: self.mlmodel.clone(),
            other: self.mlmodel.with_file_name(&self.artifact),
            problem: format!(
                "the signature's inputs are [{}], the model's features [{}]",
                signature.join(", "),
                model_features.join(", ")
            ),
        })
    }
}

/// The flavor to read and its model file: `xgboost`, `lightgbm`, `onnx`, or
/// `python_function` when its loader is one of those; otherwise why not.
fn choose_flavor(flavors: &BTreeMap<String, serde_yaml_ng::Value>) -> Result<(Flavor, PathBuf), String> {
    let data = |flavor: &serde_yaml_ng::Value| flavor.get("data").and_then(|d| d.as_str()).map(PathBuf::from);
    for (key, flavor) in [
        ("xgboost", Flavor::Xgboost),
        ("lightgbm", Flavor::Lightgbm),
        ("onnx", Flavor::Onnx),
    ] {
        if let Some(spec) = flavors.get(key) {
            let file = data(spec).ok_or_else(|| format!("the `{key}` flavor names no model file (`data`)"))?;
            refuse_pickle(key, spec, &file)?;
            return Ok((flavor, file));
        }
    }
    if let Some(spec) = flavors.get("python_function") {
        let loader = spec.get("loader_module").and_then(|l| l.as_str()).unwrap_or("");
        let flavor = match loader {
            "mlflow.xgboost" => Some(Flavor::Xgboost),
            "mlflow.lightgbm" => Some(Flavor::Lightgbm),
            "mlflow.onnx" => Some(Flavor::Onnx),
            _ => None,
        };
        if let (Some(flavor), Some(file)) = (flavor, data(spec)) {
            refuse_pickle(flavor.name(), spec, &file)?;
            return Ok((flavor, file));
        }
    }
    let names: Vec<&str> = flavors.keys().map(String::as_str).collect();
    let advice = if flavors.contains_key("pytorch") {
        "export it with `torch.onnx.export(model, example, \"model.onnx\")`, log that with `mlflow.onnx.log_model`, and score the ONNX model"
    } else if flavors.contains_key("sklearn") {
        "convert it with skl2onnx (`skl2onnx.to_onnx(model, X[:1])`), log that with `mlflow.onnx.log_model`, and score the ONNX model"
    } else {
        "log it with the xgboost, lightgbm or onnx flavor (an ONNX export works for most libraries)"
    };
    Err(format!(
        "lakescore reads the xgboost, lightgbm and onnx flavors (or python_function over them); this model has [{}]: {advice}",
        names.join(", ")
    ))
}

/// A pickled model is refused: lakescore never unpickles.
fn refuse_pickle(flavor: &str, spec: &serde_yaml_ng::Value, file: &Path) -> Result<(), String> {
    let format = spec.get("serialization_format").and_then(|f| f.as_str()).unwrap_or("");
    let pickled =
        matches!(format, "pickle" | "cloudpickle") || file.extension().is_some_and(|e| e == "pkl" || e == "pickle");
    match pickled {
        true => Err(format!(
            "the `{flavor}` flavor's model `{}` is a pickle, which lakescore never loads: log it with \
             `serialization_format=\"skops\"` or log the booster itself (`model.booster_`)",
            file.display()
        )),
        false => Ok(()),
    }
}

/// The named columns of a signature's `inputs` (JSON), with their type
/// rules; `None` for a tensor signature.
fn signature_columns(json: &str) -> Result<Option<Vec<SignatureColumn>>, String> {
    let specs: Vec<InputSpec> =
        serde_json::from_str(json).map_err(|e| format!("`signature.inputs` is not MLflow's JSON: {e}"))?;
    if specs.iter().any(|s| s.kind == "tensor") {
        return Ok(None);
    }
    let mut columns = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let name = spec
            .name
            .ok_or_else(|| format!("`signature.inputs` entry {i} has no name"))?;
        // lakescore reads every feature as a float64; `double` and `float`
        // take any number (MLflow upcasts integers to them too), the
        // integer types need integers.
        let kind = match spec.kind.as_str() {
            "double" | "float" => ColumnKind::Numeric,
            "integer" | "long" => ColumnKind::Integer,
            "boolean" => ColumnKind::Boolean,
            "string" => ColumnKind::String,
            other => {
                return Err(format!(
                    "input `{name}` has type `{other}`, which lakescore cannot read as a feature \
                     (it reads double, float, integer, long, boolean and string columns)"
                ));
            }
        };
        columns.push(SignatureColumn {
            name,
            mlflow_type: spec.kind,
            kind,
        });
    }
    Ok(Some(columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavors(yaml: &str) -> BTreeMap<String, serde_yaml_ng::Value> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn the_first_flavor_lakescore_reads_is_chosen() {
        let chosen = choose_flavor(&flavors(
            "python_function: {data: model.ubj, loader_module: mlflow.xgboost}\nxgboost: {data: model.ubj}",
        ));
        assert_eq!(chosen, Ok((Flavor::Xgboost, PathBuf::from("model.ubj"))));
        let chosen = choose_flavor(&flavors("python_function: {data: m.onnx, loader_module: mlflow.onnx}"));
        assert_eq!(chosen, Ok((Flavor::Onnx, PathBuf::from("m.onnx"))));
    }

    #[test]
    fn sklearn_pytorch_and_pickles_are_refused_with_the_way_out() {
        let sklearn = choose_flavor(&flavors(
            "python_function: {data: model.pkl, loader_module: mlflow.sklearn}\nsklearn: {pickled_model: model.pkl}",
        ))
        .unwrap_err();
        assert!(
            sklearn.contains("[python_function, sklearn]") && sklearn.contains("skl2onnx"),
            "{sklearn}"
        );
        let torch = choose_flavor(&flavors("pytorch: {model_data: data}")).unwrap_err();
        assert!(torch.contains("torch.onnx.export"), "{torch}");
        let pickle = choose_flavor(&flavors("lightgbm: {data: model.pkl, serialization_format: pickle}")).unwrap_err();
        assert!(pickle.contains("never loads") && pickle.contains("skops"), "{pickle}");
    }

    #[test]
    fn signature_columns_become_type_rules() {
        let columns = signature_columns(
            r#"[{"type": "double", "name": "age", "required": false}, {"type": "long", "name": "n"},
                {"type": "boolean", "name": "app"}, {"type": "string", "name": "region"}]"#,
        )
        .unwrap()
        .unwrap();
        let kinds: Vec<(&str, ColumnKind)> = columns.iter().map(|c| (c.name.as_str(), c.kind)).collect();
        assert_eq!(
            kinds,
            [
                ("age", ColumnKind::Numeric),
                ("n", ColumnKind::Integer),
                ("app", ColumnKind::Boolean),
                ("region", ColumnKind::String)
            ]
        );
        assert_eq!(
            signature_columns(r#"[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 4]}}]"#),
            Ok(None)
        );
        let binary = signature_columns(r#"[{"type": "binary", "name": "photo"}]"#).unwrap_err();
        assert!(binary.contains("`photo`") && binary.contains("`binary`"), "{binary}");
    }
}
