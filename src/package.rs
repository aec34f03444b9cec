//! Model packages: a folder holding a model artifact and `lakescore.toml`
//! (the [`crate::manifest`]), which names the model, pins the artifact by
//! SHA-256, and carries its data contract, output columns, guards and drift
//! reference. A bare model file is a package with every setting at its
//! default. Opening one verifies the artifact, loads the model and compiles
//! the manifest into the model's [`Contract`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::contract::Contract;
use crate::drift::Thresholds;
use crate::mlflow::{Flavor, MlflowError, MlflowModel};
use crate::model::{self, LoadOptions, Model, ModelError};
use crate::profile::{Role, TableProfile};
use crate::util::sha256_hex;

/// The manifest's file name inside a package.
pub use crate::manifest::*;

/// A loaded package: the model, its manifest compiled into a contract, its
/// reference.
pub struct Package {
    pub model: Box<dyn Model>,
    pub manifest: Manifest,
    pub contract: Contract,
    /// The folder, or `None` for a bare model file.
    pub folder: Option<PathBuf>,
    pub reference: Option<TableProfile>,
    /// Digest of everything in the package that can change a published byte
    /// or whether a run may publish; `--mode resume` reuses a partition only
    /// under the same one. See [`output_identity`].
    pub output_identity: String,
    /// For an MLflow model folder: what its `MLmodel` says (flavor, run).
    pub mlflow: Option<MlflowModel>,
}

/// The digest of what a package makes of a table: the model's bytes, how it
/// was loaded (`--output-margin`), the manifest as read (every rule and its
/// policy, ranges, output columns, guards, drift thresholds: which rows are
/// published, with what scores and flags, and whether the run may publish)
/// and the reference profile's bytes. The artifact's path is left out: the
/// bytes are what count, and a model moved is the same model.
pub fn output_identity(
    model_sha256: &str,
    options: &LoadOptions,
    manifest: &Manifest,
    reference_sha256: &str,
) -> String {
    let mut manifest = manifest.clone();
    manifest.artifact = PathBuf::new();
    let manifest = serde_json::to_string(&manifest).expect("manifests serialize");
    sha256_hex(
        format!(
            "model {model_sha256}\noutput_margin {}\nmanifest {manifest}\nreference {reference_sha256}\n",
            options.output_margin
        )
        .as_bytes(),
    )
}

impl Package {
    /// How reports name the reference profile.
    pub fn reference_name(&self) -> String {
        match (&self.folder, &self.manifest.reference) {
            (Some(folder), Some(relative)) => folder.join(relative).display().to_string(),
            _ => String::new(),
        }
    }
}

impl std::fmt::Debug for Package {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Package")
            .field("model", &self.model.info().name)
            .field("folder", &self.folder)
            .finish()
    }
}

/// How a package's model is named in score columns: `score_<name>`, or
/// `score_<name>_<k>` for a model of several outputs.
pub fn set_score_columns(name: &str, n_outputs: usize) -> Vec<String> {
    match n_outputs {
        1 => vec![format!("score_{name}")],
        n => (0..n).map(|k| format!("score_{name}_{k}")).collect(),
    }
}

/// The score columns package `k` of a set writes: its own for a champion
/// that keeps them (`--shadow`), `score_<name>` otherwise.
fn written_columns(k: usize, package: &Package, champion_columns: bool) -> Vec<String> {
    match k == 0 && champion_columns {
        true => package.contract.score_columns.clone(),
        false => set_score_columns(&package.model.info().name, package.model.n_outputs()),
    }
}

/// The output a model's scores are compared (and evaluated) by: its only
/// one, or the positive class of two.
pub fn compared_output(n_outputs: usize) -> usize {
    usize::from(n_outputs == 2)
}

/// One model's compared score in a set of `packages` (see [`combine`]):
/// (model name, its column, its position among the set's outputs).
pub fn compared_scores(packages: &[Package], champion_columns: bool) -> Vec<(String, String, usize)> {
    let mut offset = 0;
    packages
        .iter()
        .enumerate()
        .map(|(k, package)| {
            let output = compared_output(package.model.n_outputs());
            let column = written_columns(k, package, champion_columns).swap_remove(output);
            let compared = (package.model.info().name.clone(), column, offset + output);
            offset += package.model.n_outputs();
            compared
        })
        .collect()
}

/// Several packages run as one in a single pass (champion and challengers,
/// or an evaluation): a [`ModelSet`](model::set::ModelSet) of their models,
/// each reading the columns its own package maps its features to, plus
/// `extras`, watched by `tap`.
///
/// The first package is the champion: the set keeps its manifest, its
/// contract (rules, guards, score range, drift against its reference, as
/// `--output-margin` left them), which judges the champion's scores only (a
/// challenger's bad score never stops the champion's publication; profiles
/// name the champion's scores as its package does), and its name. Every model
/// writes `score_<name>` columns, except, with `champion_columns`, the
/// champion, which keeps its own columns (a shadow run publishes the
/// champion's scores under the names a run of it alone would).
pub fn combine(
    packages: Vec<Package>,
    extras: Vec<model::Feature>,
    tap: Option<std::sync::Arc<dyn model::set::ScoreTap>>,
    champion_columns: bool,
) -> Result<Package, PackageError> {
    let mut names: Vec<String> = Vec::new();
    let mut columns: Vec<String> = Vec::new();
    let invalid = |package: &Package, problem: String| PackageError::Invalid {
        path: package
            .folder
            .clone()
            .unwrap_or_else(|| package.manifest.artifact.clone()),
        field: "name".into(),
        problem,
    };
    for (k, package) in packages.iter().enumerate() {
        let name = &package.model.info().name;
        if names.contains(name) {
            return Err(invalid(
                package,
                format!(
                    "two models are named `{name}`; each model of a run needs its own name for its `score_<name>` \
                     column (package them with `model package --name`)"
                ),
            ));
        }
        names.push(name.clone());
        let own = written_columns(k, package, champion_columns);
        if let Some(clash) = own.iter().find(|c| columns.contains(c)) {
            return Err(invalid(
                package,
                format!("model `{name}` would write a second column `{clash}`; rename one of the models"),
            ));
        }
        columns.extend(own);
    }
    // The set publishes what its members make, in its columns.
    let mut identities = format!("set champion_columns {champion_columns}\n");
    for package in &packages {
        identities.push_str(&format!("member {}\n", package.output_identity));
    }
    for extra in &extras {
        identities.push_str(&format!("extra {}\n", extra.name));
    }
    let output_identity = sha256_hex(identities.as_bytes());
    let mut packages = packages.into_iter();
    let champion = packages.next().expect("at least one package");
    let mut models = vec![(champion.model, champion.contract.columns.clone())];
    models.extend(packages.map(|p| (p.model, p.contract.columns)));
    let set = model::set::ModelSet::new(models, extras, tap);
    let contract = champion
        .contract
        .for_model_set(set.columns().to_vec(), columns, champion.manifest.drift.global());
    Ok(Package {
        model: Box::new(set),
        manifest: champion.manifest,
        contract,
        folder: champion.folder,
        reference: champion.reference,
        output_identity,
        mlflow: champion.mlflow,
    })
}

/// Errors of [`open`]: the package's, or the model's.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An MLflow model folder lakescore cannot score as it is.
    #[error(transparent)]
    Mlflow(#[from] MlflowError),
}

/// Opens a package folder, or a bare model file as a package of defaults.
pub fn open(path: &Path, device: &Device, options: &LoadOptions) -> Result<Package, OpenError> {
    if !path.is_dir() {
        let model = model::load(path, device, options)?;
        let info = model.info();
        let manifest = Manifest {
            name: info.name.clone(),
            version: info.version.clone().unwrap_or_default(),
            format: Some(info.format.name().into()),
            feature_names: options.feature_names.clone(),
            artifact: path.to_path_buf(),
            sha256: info.sha256.clone(),
            ..Manifest::default()
        };
        let contract = Contract::compile(
            &manifest,
            path,
            model.features(),
            model.n_outputs(),
            model.output_range(),
        )?;
        let output_identity = output_identity(&info.sha256, options, &manifest, "");
        return Ok(Package {
            model,
            manifest,
            contract,
            folder: None,
            reference: None,
            output_identity,
            mlflow: None,
        });
    }
    let manifest_path = path.join(MANIFEST_FILE);
    // An MLflow model folder is a package too: its `MLmodel` names the file
    // and the signature the columns; a `lakescore.toml` beside it adds the
    // rest (and must agree).
    let mut mlflow = MlflowModel::read(path)?;
    let pinned = mlflow.is_none() || manifest_path.exists();
    let mut manifest = match (&mlflow, pinned) {
        (Some(mlflow), false) => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            mlflow.manifest(&name)
        }
        _ => read_manifest(&manifest_path)?,
    };
    // Problems of an MLflow folder alone are `MLmodel`'s to name.
    let manifest_path = match pinned {
        true => manifest_path,
        false => path.join(crate::mlflow::MLMODEL_FILE),
    };
    if let (Some(mlflow), true) = (mlflow.as_mut(), pinned) {
        mlflow.merge_into(&mut manifest, &manifest_path)?;
        mlflow.pinned = true;
    }
    let artifact = path.join(&manifest.artifact);
    let invalid = |field: &str, problem: String| PackageError::Invalid {
        path: manifest_path.clone(),
        field: field.into(),
        problem,
    };
    // A package is one folder: what it names must be in it, so that copying
    // or publishing the folder takes everything the run reads.
    for (field, relative) in [
        ("artifact", Some(&manifest.artifact)),
        ("reference", manifest.reference.as_ref()),
    ] {
        if let Some(relative) = relative
            && !is_inside(relative)
        {
            return Err(invalid(
                field,
                format!("`{}` must be a path inside the package folder", relative.display()),
            )
            .into());
        }
    }
    // The checksum is verified before the artifact is parsed: a swapped or
    // truncated file must never be interpreted as a model.
    let bytes = std::fs::read(&artifact).map_err(|source| PackageError::Read {
        path: artifact.clone(),
        source,
    })?;
    let actual = sha256_hex(&bytes);
    if !pinned {
        // Nothing pins an MLflow folder's file: its digest is what the run
        // records.
        manifest.sha256 = actual.clone();
    }
    if !actual.eq_ignore_ascii_case(manifest.sha256.trim()) {
        return Err(PackageError::Checksum {
            artifact,
            manifest: manifest_path,
            expected: manifest.sha256.clone(),
            actual,
        }
        .into());
    }
    let options = LoadOptions {
        feature_names: manifest.feature_names.clone(),
        ..options.clone()
    };
    // The model is parsed from the bytes just checked, so a file swapped
    // after the check is never read.
    let model_bytes = match &mlflow {
        Some(mlflow) => mlflow.model_bytes(bytes)?,
        None => bytes,
    };
    let mut model = model::load_bytes(&artifact, &model_bytes, device, &options)?;
    drop(model_bytes);
    // The artifact's digest names the model (for a skops file, not the
    // booster text inside it).
    model.info_mut().sha256 = actual.clone();
    if let Some(mlflow) = mlflow.as_ref().filter(|m| m.flavor != Flavor::Onnx) {
        let names: Vec<&str> = model.features().iter().map(|f| f.name.as_str()).collect();
        mlflow.check_features(&names)?;
    }
    let detected = model.info().format.name();
    if let Some(format) = &manifest.format
        && format != detected
    {
        return Err(invalid("format", format!("says `{format}` but the artifact is `{detected}`")).into());
    }
    let info = model.info_mut();
    info.name = manifest.name.clone();
    info.version = Some(manifest.version.clone()).filter(|v| !v.is_empty());
    if let Some(columns) = &manifest.output.columns
        && columns.len() != model.n_outputs()
    {
        return Err(invalid(
            "output.columns",
            format!(
                "names {} columns but the model writes {} outputs",
                columns.len(),
                model.n_outputs()
            ),
        )
        .into());
    }
    for name in manifest.features.keys() {
        if !model.features().iter().any(|f| &f.name == name) {
            let known: Vec<&str> = model.features().iter().map(|f| f.name.as_str()).collect();
            let hint = crate::util::Suggestion::closest(name, known.iter().copied());
            return Err(invalid(
                &format!("features.{name}"),
                format!("the model has no feature `{name}`{hint}"),
            )
            .into());
        }
    }
    let mut reference_sha256 = String::new();
    let reference = match &manifest.reference {
        Some(relative) => {
            let reference_path = path.join(relative);
            let bytes = std::fs::read(&reference_path).map_err(|source| PackageError::Read {
                path: reference_path.clone(),
                source,
            })?;
            reference_sha256 = sha256_hex(&bytes);
            Some(
                TableProfile::from_json(&bytes).map_err(|problem| PackageError::Invalid {
                    path: reference_path,
                    field: "the reference profile".into(),
                    problem,
                })?,
            )
        }
        None => None,
    };
    let mut contract = Contract::compile(
        &manifest,
        &manifest_path,
        model.features(),
        model.n_outputs(),
        model.output_range(),
    )?;
    if options.output_margin {
        // Margins are not the probabilities the range, the reference's scores
        // and the shift guards speak of.
        contract.score_range = None;
        contract.max_mean_shift = None;
        contract.max_positive_rate_shift = None;
        contract.compare_scores = false;
    }
    check_thresholds(&manifest).map_err(|(field, problem)| invalid(&field, problem))?;
    match &reference {
        Some(reference) => {
            let features = model.features().iter().map(|f| (f.name.as_str(), Role::Feature));
            let scores = contract
                .score_columns
                .iter()
                .filter(|_| contract.compare_scores)
                .map(|name| (name.as_str(), Role::Score));
            let missing: Vec<&str> = features
                .chain(scores)
                .filter(|(name, role)| reference.column(name, *role).is_none())
                .map(|(name, _)| name)
                .collect();
            if !missing.is_empty() {
                return Err(invalid(
                    "reference",
                    format!(
                        "the reference profile has no column `{}`; profile the reference again \
                         (`lakescore profile --model`) after renaming features or `output.columns`",
                        missing.join("`, `")
                    ),
                )
                .into());
            }
        }
        None if contract.max_mean_shift.is_some() || contract.max_positive_rate_shift.is_some() => {
            return Err(invalid(
                "guards",
                "`max_mean_shift` and `max_positive_rate_shift` compare with a `reference`, which the package lacks"
                    .into(),
            )
            .into());
        }
        None => {}
    }
    let output_identity = output_identity(&actual, &options, &manifest, &reference_sha256);
    Ok(Package {
        model,
        manifest,
        contract,
        folder: Some(path.to_path_buf()),
        reference,
        output_identity,
        mlflow,
    })
}

/// Whether `relative` names a path inside the package folder: neither
/// absolute nor climbing out with `..`. A link inside the folder is the
/// folder's own business (DVC, git-annex and model hubs keep files as links
/// into a cache), and the artifact is checked by its SHA-256 in any case.
fn is_inside(relative: &Path) -> bool {
    !relative.is_absolute() && !relative.components().any(|c| c.as_os_str() == "..")
}

/// Thresholds and bounds must be numbers that can be exceeded: NaN never
/// is, a negative share always is.
fn check_thresholds(manifest: &Manifest) -> Result<(), (String, String)> {
    let mut bounds: Vec<(String, Option<f64>)> = vec![
        ("guards.max_missing_share".into(), manifest.guards.max_missing_share),
        ("guards.max_mean_shift".into(), manifest.guards.max_mean_shift),
        (
            "guards.max_positive_rate_shift".into(),
            manifest.guards.max_positive_rate_shift,
        ),
    ];
    let mut drift = |prefix: &str, t: &Thresholds| {
        bounds.push((format!("{prefix}psi_warn"), t.psi_warn));
        bounds.push((format!("{prefix}psi_fail"), t.psi_fail));
        bounds.push((format!("{prefix}js_warn"), t.js_warn));
        bounds.push((format!("{prefix}js_fail"), t.js_fail));
    };
    let global = Thresholds {
        psi_warn: manifest.drift.psi_warn,
        psi_fail: manifest.drift.psi_fail,
        js_warn: manifest.drift.js_warn,
        js_fail: manifest.drift.js_fail,
    };
    drift("drift.", &global);
    if let Some(score) = &manifest.drift.score {
        drift("drift.score.", score);
    }
    for (name, spec) in &manifest.features {
        if let Some(t) = &spec.drift {
            drift(&format!("features.{name}.drift."), t);
        }
    }
    for (field, value) in bounds {
        if let Some(v) = value
            && !(v.is_finite() && v >= 0.0)
        {
            return Err((field, format!("{v} is not a number >= 0")));
        }
    }
    if manifest.guards.max_missing_share.is_some_and(|v| v > 1.0) {
        return Err(("guards.max_missing_share".into(), "a share is at most 1".into()));
    }
    Ok(())
}

fn read_manifest(path: &Path) -> Result<Manifest, PackageError> {
    let text = std::fs::read_to_string(path).map_err(|source| PackageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_manifest(path, &text)
}

/// A manifest from its text (`path` names it in messages), with the checks
/// that need no model: its thresholds and bounds.
pub fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, PackageError> {
    let manifest: Manifest = toml::from_str(text).map_err(|source| PackageError::Manifest {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    check_thresholds(&manifest).map_err(|(field, problem)| PackageError::Invalid {
        path: path.to_path_buf(),
        field,
        problem,
    })?;
    Ok(manifest)
}

/// Writes a package folder: the artifact copied in, the reference profile,
/// and a manifest with a starting contract derived from the reference (every
/// rule at `warn`, for a person to tighten).
pub fn write(
    folder: &Path,
    artifact: &Path,
    manifest: &Manifest,
    reference: Option<&TableProfile>,
) -> Result<(), PackageError> {
    let write_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackageError::Write { path, source }
    };
    std::fs::create_dir_all(folder).map_err(write_error(folder))?;
    let artifact_target = folder.join(&manifest.artifact);
    std::fs::copy(artifact, &artifact_target).map_err(write_error(&artifact_target))?;
    if let (Some(reference), Some(relative)) = (reference, &manifest.reference) {
        let path = folder.join(relative);
        crate::util::write_atomically(&path, &reference.to_json()).map_err(write_error(&path))?;
    }
    let path = folder.join(MANIFEST_FILE);
    let text = toml::to_string(manifest).map_err(|e| PackageError::Invalid {
        path: path.clone(),
        field: "manifest".into(),
        problem: e.to_string(),
    })?;
    crate::util::write_atomically(&path, text.as_bytes()).map_err(write_error(&path))
}

/// A starting manifest for `lakescore model package`: identity, the model's
/// output range, and per feature the reference's range and null rule, all at
/// `warn`, for a person to tighten into `fail`, `quarantine` or `flag`.
pub fn starting_manifest(
    bare: &Package,
    artifact: &Path,
    name: Option<String>,
    version: &str,
    reference: &TableProfile,
) -> Manifest {
    let info = bare.model.info();
    let artifact_name = artifact
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "model".into());
    let mut features = BTreeMap::new();
    for feature in bare.model.features() {
        let Some(profile) = reference.column(&feature.name, crate::profile::Role::Feature) else {
            continue;
        };
        let mut spec = FeatureSpec {
            policy: Some(RowPolicy::Warn),
            ..FeatureSpec::default()
        };
        if profile.nulls == 0 {
            spec.nullable = Some(false);
        } else {
            spec.max_null_share = Some((profile.null_share() * 2.0).min(1.0));
            spec.null_share_policy = Some(TablePolicy::Warn);
        }
        if feature.categories.is_none() {
            spec.min = profile.min.map(|v| round_outward(v, false));
            spec.max = profile.max.map(|v| round_outward(v, true));
        }
        features.insert(feature.name.clone(), spec);
    }
    let global = Thresholds::DEFAULT;
    Manifest {
        name: name.unwrap_or_else(|| info.name.clone()),
        version: version.to_string(),
        format: Some(info.format.name().into()),
        feature_names: bare.manifest.feature_names.clone(),
        artifact: artifact_name,
        sha256: info.sha256.clone(),
        reference: Some("reference.json".into()),
        output: OutputSpec {
            columns: None,
            range: bare
                .model
                .output_range()
                .map(|(lo, hi)| [lo, hi])
                .filter(|[_, hi]| hi.is_finite()),
        },
        table: TableSpec::default(),
        features,
        guards: GuardSpec::default(),
        drift: DriftSpec {
            psi_warn: global.psi_warn,
            psi_fail: global.psi_fail,
            js_warn: global.js_warn,
            js_fail: global.js_fail,
            score: None,
        },
    }
}

/// `v` rounded to 4 significant digits, away from the inside of a range
/// (down for a minimum, up for a maximum), so that a generated range reads
/// `[0, 498]` rather than `[0, 497.99351110664196]` and still holds `v`.
fn round_outward(v: f64, up: bool) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let exponent = v.abs().log10().floor() as i32 - 3;
    let scaled = v / 10f64.powi(exponent);
    let digits = if up { scaled.ceil() } else { scaled.floor() };
    // Through decimal text, so that the bound is the shortest such number.
    let rounded: f64 = format!("{digits}e{exponent}").parse().unwrap_or(v);
    match up {
        true if rounded < v => v,
        false if rounded > v => v,
        _ => rounded,
    }
}

/// `lakescore model inspect`: the package in words.
pub fn describe(package: &Package) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let info = package.model.info();
    let manifest = &package.manifest;
    let _ = writeln!(out, "model     {} {}", info.name, info.version.as_deref().unwrap_or(""));
    let _ = writeln!(out, "format    {}", info.format.name());
    match &package.folder {
        Some(folder) => {
            let _ = writeln!(out, "package   {}", folder.display());
            let pinned = match &package.mlflow {
                Some(mlflow) if !mlflow.pinned => "MLflow pins no checksum",
                _ => "verified",
            };
            let _ = writeln!(
                out,
                "artifact  {} (sha256 {}, {pinned})",
                manifest.artifact.display(),
                info.sha256
            );
            if let Some(mlflow) = &package.mlflow {
                let _ = writeln!(
                    out,
                    "mlflow    {} flavor, run {}, model {}",
                    mlflow.flavor.name(),
                    mlflow.run_id.as_deref().unwrap_or("-"),
                    mlflow.model_id.as_deref().unwrap_or("-")
                );
            }
        }
        None => {
            let _ = writeln!(
                out,
                "artifact  {} (sha256 {}; a bare model file, every setting at its default)",
                info.path.display(),
                info.sha256
            );
        }
    }
    let contract = &package.contract;
    let range = match contract.score_range {
        Some((lo, hi)) => format!(" in [{lo}, {hi}]"),
        None => String::new(),
    };
    let _ = writeln!(out, "outputs   {}{range}", contract.score_columns.join(", "));
    match &package.reference {
        Some(reference) => {
            let _ = writeln!(
                out,
                "reference {} ({} rows, {} columns)",
                package.reference_name(),
                reference.rows,
                reference.columns.len()
            );
        }
        None => {
            let _ = writeln!(out, "reference none (no drift measures)");
        }
    }
    let _ = writeln!(out, "\nfeatures ({}):", package.model.features().len());
    let _ = writeln!(out, "  {:<24} {:<24} {:<12} contract", "feature", "column", "kind");
    for (feature, column) in package.model.features().iter().zip(&contract.columns) {
        let kind = match &feature.categories {
            Some(categories) => format!("{} categories", categories.len()),
            None => "number".into(),
        };
        let rules: Vec<String> = contract
            .rules
            .iter()
            .filter(|r| r.target == feature.name)
            .map(|r| format!("{} [{}]", r.requirement, r.policy))
            .collect();
        let rules = if rules.is_empty() {
            "-".to_string()
        } else {
            rules.join("; ")
        };
        let _ = writeln!(out, "  {:<24} {:<24} {:<12} {rules}", feature.name, column, kind);
    }
    let table_rules: Vec<String> = contract
        .rules
        .iter()
        .filter(|r| r.target == "table")
        .map(|r| format!("{} [{}]", r.requirement, r.policy))
        .collect();
    let _ = writeln!(
        out,
        "\ntable rules: {}",
        if table_rules.is_empty() {
            "none".into()
        } else {
            table_rules.join("; ")
        }
    );
    let mut guards = vec!["finite scores".to_string()];
    if let Some((lo, hi)) = contract.score_range {
        guards.push(format!("scores in [{lo}, {hi}]"));
    }
    if let Some(share) = contract.max_missing_share {
        guards.push(format!("rows missing a feature <= {share}"));
    }
    if let Some(shift) = contract.max_mean_shift {
        guards.push(format!("mean score within {shift} of the reference"));
    }
    if let Some(shift) = contract.max_positive_rate_shift {
        guards.push(format!("share of scores >= 0.5 within {shift} of the reference"));
    }
    let _ = writeln!(out, "guards: {}", guards.join("; "));
    let drift = manifest.drift.global();
    let bound = |b: Option<f64>| b.map_or("-".to_string(), |b| b.to_string());
    let _ = writeln!(
        out,
        "drift thresholds: PSI warn {} fail {}, JS warn {} fail {}",
        bound(drift.psi_warn),
        bound(drift.psi_fail),
        bound(drift.js_warn),
        bound(drift.js_fail)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ranges_round_outward() {
        assert_eq!(round_outward(497.99351110664196, true), 498.0);
        assert_eq!(round_outward(2.060662829560939, false), 2.06);
        assert_eq!(round_outward(-4.1277055740356445, false), -4.128);
        assert_eq!(round_outward(-4.1277055740356445, true), -4.127);
        assert_eq!(round_outward(6113.0, true), 6113.0);
        assert_eq!(round_outward(0.0, false), 0.0);
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("90s"), Ok(90));
        assert_eq!(parse_age("36h"), Ok(36 * 3600));
        assert_eq!(parse_age("2d"), Ok(172_800));
        assert!(parse_age("2 days").unwrap_err().contains("unit"));
        assert!(parse_age("h").is_err());
    }

    #[test]
    fn unknown_manifest_keys_are_errors() {
        let text = "name = \"m\"\nversion = \"1\"\nartifact = \"m.json\"\nsha256 = \"x\"\n[features.age]\nmaxx = 3\n";
        let error = toml::from_str::<Manifest>(text).unwrap_err().to_string();
        assert!(error.contains("maxx"), "{error}");
        let text =
            "name = \"m\"\nversion = \"1\"\nartifact = \"m.json\"\nsha256 = \"x\"\n[features.age]\npolicy = \"drop\"\n";
        assert!(toml::from_str::<Manifest>(text).is_err());
    }

    #[test]
    fn manifests_round_trip() {
        let mut manifest = Manifest {
            name: "churn".into(),
            version: "1.0.0".into(),
            artifact: "model.json".into(),
            sha256: "ab".into(),
            ..Manifest::default()
        };
        manifest.features.insert(
            "age".into(),
            FeatureSpec {
                min: Some(0.0),
                max: Some(120.0),
                categories: Some(vec![CategoryValue::Name("a".into()), CategoryValue::Number(3.0)]),
                policy: Some(RowPolicy::Quarantine),
                ..FeatureSpec::default()
            },
        );
        let text = toml::to_string(&manifest).unwrap();
        let back: Manifest = toml::from_str(&text).unwrap();
        assert_eq!(back.features["age"].policy, Some(RowPolicy::Quarantine));
        assert_eq!(back.features["age"].categories, manifest.features["age"].categories);
    }
}
