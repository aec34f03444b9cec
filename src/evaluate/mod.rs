//! `lakescore evaluate`: how well models score a labelled table, before one
//! of them is promoted. One streaming pass: the features are decoded once,
//! every model scores the block, and the label rides along as an extra
//! column that only the evaluation reads (see [`crate::model::set`]).

pub mod html;
pub mod metrics;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::compare::{Comparison, ComparisonTap};
use crate::model::set::ScoreTap;
use crate::model::{Feature, FeatureBlock, ModelError, ModelInfo};
use metrics::{BinaryAccumulator, BinaryMetrics, BlockSums, row_key};

/// One model's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEvaluation {
    pub model: ModelInfo,
    /// Which of the model's outputs is the positive class's score.
    pub output: usize,
    pub metrics: BinaryMetrics,
}

/// The `evaluate` report.
#[derive(Debug, Clone, Serialize)]
pub struct EvaluationReport {
    pub command: &'static str,
    pub lakescore_version: &'static str,
    pub input: PathBuf,
    pub label: String,
    pub rows: u64,
    /// Rows whose label was null, left out of every metric.
    pub rows_unlabeled: u64,
    pub models: Vec<ModelEvaluation>,
    /// Champion (the first model) against the others, with several models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comparison: Option<Comparison>,
    /// The whole evaluation: the pass and the metrics' sort and walk.
    pub wall_seconds: f64,
    pub threads: usize,
}

/// Run metrics and tags for MLflow: (key, value) pairs.
pub type MlflowRunData = (Vec<(String, f64)>, Vec<(String, String)>);

/// A model's metrics as MLflow run metrics (`lakescore.auc`,
/// `lakescore.accuracy_0.5`, …) and tags naming what was evaluated, for
/// `evaluate --log-to-mlflow`.
pub fn mlflow_metrics(report: &EvaluationReport, evaluation: &ModelEvaluation) -> MlflowRunData {
    let m = &evaluation.metrics;
    let mut metrics: Vec<(String, f64)> = [
        ("auc", m.auc),
        ("log_loss", m.log_loss),
        ("brier", m.brier),
        ("rows", Some(m.rows as f64)),
        ("positives", Some(m.positives as f64)),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| (format!("lakescore.{key}"), v)))
    .collect();
    for confusion in &m.confusion {
        if let Some(accuracy) = confusion.accuracy {
            metrics.push((format!("lakescore.accuracy_{}", confusion.threshold), accuracy));
        }
    }
    let tags = vec![
        (
            "lakescore.evaluated_input".to_string(),
            report.input.display().to_string(),
        ),
        ("lakescore.label".to_string(), report.label.clone()),
        ("lakescore.version".to_string(), report.lakescore_version.to_string()),
    ];
    (metrics, tags)
}

/// The label as the pass reads it: a feature no model reads, missing as NaN.
pub fn label_feature(column: &str) -> Feature {
    Feature {
        name: column.to_string(),
        missing_value: f64::NAN,
        categories: None,
    }
}

/// Which output of a model is scored as the positive class: its only one, or
/// the second of two (class 1 of a two-class softmax).
pub fn positive_output(info: &ModelInfo, n_outputs: usize) -> Result<usize, String> {
    match n_outputs {
        1 | 2 => Ok(crate::package::compared_output(n_outputs)),
        n => Err(format!(
            "model `{}` writes {n} scores; `evaluate` measures binary classifiers (one score, or two classes)",
            info.name
        )),
    }
}

/// Watches the pass: per model, the positive class's scores against the
/// label; and with several models, how they compare.
pub struct EvaluationTap {
    label: String,
    /// Per model, its positive output among the set's outputs.
    outputs: Vec<usize>,
    accumulators: Vec<Mutex<BinaryAccumulator>>,
    thresholds: Vec<f64>,
    unlabeled: AtomicU64,
    comparison: Option<ComparisonTap>,
}

impl EvaluationTap {
    /// `outputs`: each model's positive output among all the set's outputs.
    pub fn new(label: &str, outputs: Vec<usize>, thresholds: &[f64], comparison: Option<ComparisonTap>) -> Self {
        let accumulators = outputs
            .iter()
            .map(|_| Mutex::new(BinaryAccumulator::new(thresholds.to_vec())))
            .collect();
        EvaluationTap {
            label: label.to_string(),
            outputs,
            accumulators,
            thresholds: thresholds.to_vec(),
            unlabeled: AtomicU64::new(0),
            comparison,
        }
    }

    /// Per model, its metrics; the rows without a label; the comparison.
    pub fn finish(&self) -> (Vec<BinaryMetrics>, u64, Option<Comparison>) {
        let metrics = self
            .accumulators
            .iter()
            .map(|acc| {
                let acc = std::mem::replace(&mut *acc.lock().unwrap(), BinaryAccumulator::new(Vec::new()));
                acc.finish()
            })
            .collect();
        (
            metrics,
            self.unlabeled.load(Ordering::Relaxed),
            self.comparison.as_ref().map(ComparisonTap::finish),
        )
    }
}

impl ScoreTap for EvaluationTap {
    fn tap(&self, extras: &FeatureBlock, scores: &[Vec<f32>]) -> Result<(), ModelError> {
        let labels = &extras.values[..extras.n_rows];
        let mut unlabeled = 0;
        for &y in labels {
            if y.is_nan() {
                unlabeled += 1;
            } else if y != 0.0 && y != 1.0 {
                return Err(ModelError::Label {
                    column: self.label.clone(),
                    value: y,
                });
            }
        }
        self.unlabeled.fetch_add(unlabeled, Ordering::Relaxed);
        for (k, &output) in self.outputs.iter().enumerate() {
            let mut rows = Vec::with_capacity(labels.len());
            let mut without_score = 0;
            for (&y, &s) in labels.iter().zip(&scores[output]) {
                if y.is_nan() {
                    continue;
                }
                if s.is_nan() {
                    without_score += 1;
                    continue;
                }
                rows.push(row_key(s, y == 1.0));
            }
            let mut accumulator = self.accumulators[k].lock().unwrap();
            if accumulator.is_exact() {
                accumulator.absorb(&rows, without_score);
            } else {
                // A histogram needs every row's sums: computed unlocked.
                drop(accumulator);
                let block = BlockSums::of(&rows, &self.thresholds);
                self.accumulators[k]
                    .lock()
                    .unwrap()
                    .absorb_with(&rows, without_score, Some(block));
            }
        }
        if let Some(comparison) = &self.comparison {
            comparison.add(scores);
        }
        Ok(())
    }
}

/// Where an evaluation writes: the JSON report and the HTML page. A failure
/// says which, and where.
pub fn write_outputs(
    report: &EvaluationReport,
    json: Option<&Path>,
    html: Option<&Path>,
) -> Result<(), (&'static str, PathBuf, std::io::Error)> {
    if let Some(path) = json {
        let bytes = serde_json::to_vec_pretty(report).expect("reports serialize");
        crate::util::write_atomically(path, &bytes).map_err(|e| ("evaluation report", path.to_path_buf(), e))?;
    }
    if let Some(path) = html {
        crate::util::write_atomically(path, html::render(report).as_bytes())
            .map_err(|e| ("evaluation page", path.to_path_buf(), e))?;
    }
    Ok(())
}

/// Checks, from the footers, that every file of `input` has the label
/// column and that it can hold 0/1 (so that a typo is named as the label's,
/// not a model feature's).
pub fn check_label(input: &Path, label: &str) -> crate::Result<()> {
    let source = crate::source::LocalTable::new(input, crate::source::MmapChoice::never());
    for listed in crate::source::TableSource::list(&source).map_err(crate::plan::PlanError::from)? {
        let path = listed.location;
        let file = crate::scan::ParquetFile::open(&path)?;
        let schema = file.schema();
        let Ok(field) = schema.field_with_name(label) else {
            let names = schema.fields().iter().map(|f| f.name().as_str());
            return Err(crate::plan::PlanError::MissingColumn {
                path,
                role: "label",
                column: label.to_string(),
                suggestion: crate::util::Suggestion::closest(label, names),
            }
            .into());
        };
        if !crate::features::is_numeric(field.data_type()) {
            return Err(crate::plan::PlanError::ColumnType {
                path,
                role: "label",
                column: label.to_string(),
                data_type: field.data_type().to_string(),
                expected: "labels are booleans or 0/1 numbers",
            }
            .into());
        }
    }
    Ok(())
}

/// The table `evaluate` prints.
pub fn render_table(report: &EvaluationReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "evaluated {} rows of `{}` against label `{}` ({} without a label, left out), {:.2} s",
        report.rows,
        report.input.display(),
        report.label,
        report.rows_unlabeled,
        report.wall_seconds
    );
    let option = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.6}"));
    let _ = writeln!(
        out,
        "{:<24} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "model", "rows", "positive", "AUC", "log loss", "Brier", "accuracy", "lift@1"
    );
    for evaluation in &report.models {
        let m = &evaluation.metrics;
        let accuracy = m.confusion.first().and_then(|c| c.accuracy);
        let lift = m.deciles.first().map(|d| d.lift);
        let _ = writeln!(
            out,
            "{:<24} {:>10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>8}",
            evaluation.model.name,
            m.rows,
            m.positives,
            option(m.auc),
            option(m.log_loss),
            option(m.brier),
            option(accuracy),
            lift.map_or("—".to_string(), |l| format!("{l:.2}"))
        );
        if m.auc_method != "exact" {
            let _ = writeln!(out, "  AUC from a histogram: within {:.2e} of exact", m.auc_error_bound);
        }
    }
    if let Some(comparison) = &report.comparison {
        for a in &comparison.agreements {
            let _ = writeln!(
                out,
                "{} vs {}: rank correlation {}, top-decile agreement {}, mean difference {:+.6}",
                a.challenger,
                a.champion,
                option(a.rank_correlation),
                option(a.top_decile_agreement),
                a.mean_difference
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_other_than_zero_and_one_are_an_error_and_nulls_are_counted() {
        let tap = EvaluationTap::new("converted", vec![0], &[0.5], None);
        let extras = FeatureBlock {
            n_rows: 3,
            n_features: 1,
            values: vec![1.0, f64::NAN, 0.0],
        };
        tap.tap(&extras, &[vec![0.9, 0.1, 0.2]]).unwrap();
        let bad = FeatureBlock {
            n_rows: 1,
            n_features: 1,
            values: vec![2.0],
        };
        let error = tap.tap(&bad, &[vec![0.5]]).unwrap_err().to_string();
        assert!(error.contains("label column `converted` holds `2`"), "{error}");
        let (metrics, unlabeled, _) = tap.finish();
        assert_eq!(unlabeled, 1);
        assert_eq!(metrics[0].rows, 2);
        assert_eq!(metrics[0].auc, Some(1.0));
    }
}
