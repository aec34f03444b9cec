//! OpenLineage run events (spec 2-0-2): START when a run begins, COMPLETE,
//! FAIL or (stopped by a signal) ABORT when it ends, naming the job, the input table and the output table,
//! with the run's data-quality facets (row counts, per-column null counts,
//! min, max, sum and quantiles from the run's profile, and every contract rule
//! as an assertion). Written one event per line to a file (as OpenLineage's
//! own file transport does) or posted to an HTTP endpoint such as Marquez's
//! `/api/v1/lineage`.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::http::{self, Endpoint};
use super::{RunEnd, RunStart};
use crate::commit::RunStatus;
use crate::drift::Status;
use crate::util::rfc3339_millis;

/// The spec version the events follow, and the schema they validate against.
pub const SPEC: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json";
/// Who produced the events, as the spec asks (a URI naming the producer).
pub const PRODUCER: &str = concat!(
    "https://github.com/lakescore/lakescore/tree/v",
    env!("CARGO_PKG_VERSION")
);

/// Where lineage events go and what the job is called.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    pub file: Option<PathBuf>,
    pub url: Option<Endpoint>,
    /// The job's namespace (`--lineage-namespace`).
    pub namespace: String,
    /// The job's name (`--job-name`; default: `score` and the output folder).
    pub job: String,
}

impl Lineage {
    pub fn start_event(&self, start: &RunStart<'_>) -> Value {
        let mut run_facets = Map::new();
        run_facets.insert(
            "processing_engine".into(),
            facet(
                "1-1-1",
                "ProcessingEngineRunFacet",
                json!({"name": "lakescore", "version": env!("CARGO_PKG_VERSION")}),
            ),
        );
        let inputs = vec![dataset(start.input)];
        let outputs = start.output.map(dataset).into_iter().collect();
        self.event("START", start.identity.started_at, start, run_facets, inputs, outputs)
    }

    pub fn end_event(&self, end: &RunEnd<'_>) -> Value {
        let start = &end.start;
        let mut run_facets = Map::new();
        if let Some(error) = &end.error {
            run_facets.insert(
                "errorMessage".into(),
                facet(
                    "1-0-1",
                    "ErrorMessageRunFacet",
                    json!({"message": error, "programmingLanguage": "Rust"}),
                ),
            );
        }
        // The data-quality facets are input facets (their schemas say so):
        // what this run saw in this input.
        let mut input_facets = Map::new();
        let mut output_statistics = None;
        if let Some(report) = end.report {
            input_facets.insert("dataQualityMetrics".into(), quality_metrics(report));
            input_facets.insert(
                "inputStatistics".into(),
                facet(
                    "1-0-0",
                    "InputStatisticsInputDatasetFacet",
                    json!({"rowCount": report.rows, "size": report.bytes_read, "fileCount": report.files}),
                ),
            );
            if let Some(checks) = &report.judgement.checks {
                let assertions: Vec<Value> = checks
                    .rules
                    .iter()
                    .map(|rule| {
                        let mut assertion = json!({"assertion": rule.id, "success": rule.status != Status::Fail});
                        if rule.target != "table" {
                            assertion["column"] = rule.target.clone().into();
                        }
                        assertion
                    })
                    .collect();
                input_facets.insert(
                    "dataQualityAssertions".into(),
                    facet(
                        "1-1-0",
                        "DataQualityAssertionsDatasetFacet",
                        json!({"assertions": assertions}),
                    ),
                );
            }
            if end.status.published() {
                output_statistics = Some(facet(
                    "1-0-2",
                    "OutputStatisticsOutputDatasetFacet",
                    json!({
                        "rowCount": report.rows - report.rows_quarantined,
                        "size": report.bytes_written,
                        "fileCount": report.files,
                    }),
                ));
            }
        }
        let mut input = dataset(start.input);
        if !input_facets.is_empty() {
            input["inputFacets"] = input_facets.into();
        }
        let outputs = start
            .output
            .map(|o| {
                let mut output = dataset(o);
                if let Some(statistics) = output_statistics.take() {
                    output["outputFacets"] = json!({ "outputStatistics": statistics });
                }
                output
            })
            .into_iter()
            .collect();
        if let Some(registry) = end.model.and_then(|m| m.registry.as_ref()) {
            run_facets.insert("tags".into(), registry_tags(registry));
        }
        let kind = match end.status {
            _ if end.status.published() => "COMPLETE",
            RunStatus::Interrupted => "ABORT",
            _ => "FAIL",
        };
        self.event(kind, end.finished_at, start, run_facets, vec![input], outputs)
    }

    fn event(
        &self,
        kind: &str,
        at: std::time::SystemTime,
        start: &RunStart<'_>,
        run_facets: Map<String, Value>,
        inputs: Vec<Value>,
        outputs: Vec<Value>,
    ) -> Value {
        let job_facets = json!({
            "jobType": facet(
                "2-0-4", "JobTypeJobFacet",
                json!({"processingType": "BATCH", "integration": "LAKESCORE", "jobType": "JOB"}),
            )
        });
        json!({
            "eventType": kind,
            "eventTime": rfc3339_millis(at),
            "producer": PRODUCER,
            "schemaURL": format!("{SPEC}#/$defs/RunEvent"),
            "run": {"runId": start.identity.uuid, "facets": run_facets},
            "job": {"namespace": self.namespace, "name": self.job, "facets": job_facets},
            "inputs": inputs,
            "outputs": outputs,
        })
    }

    /// Appends the event to the file and posts it to the URL; failures are
    /// warnings (see the module notes of `observe`).
    pub fn send(&self, event: &Value, cancel: &crate::cancel::CancelToken, limit: std::time::Duration) {
        let line = format!("{event}\n");
        if let Some(path) = &self.file
            && let Err(error) = append_line(path, line.as_bytes())
        {
            tracing::warn!(path = %path.display(), error = %error, "cannot write the lineage event");
        }
        if let Some(url) = &self.url {
            match http::send("POST", url, "application/json", line.as_bytes(), cancel, limit) {
                Ok((200..=299, _)) => tracing::debug!(url = %url, "posted the lineage event"),
                Ok((status, body)) => {
                    let body = http::shown(&body);
                    tracing::warn!(url = %url, status, response = %body, "the lineage endpoint refused the event")
                }
                Err(error) => tracing::warn!(url = %url, error = %error, "cannot post the lineage event"),
            }
        }
    }
}

/// One write of a whole line with O_APPEND, so that concurrent writers (two
/// jobs sharing a lineage file) interleave lines, never bytes within a line.
fn append_line(path: &Path, line: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(line)?;
    file.sync_data()
}

/// Where the run's model came from in an MLflow registry, as the standard
/// tags run facet: registered name, version, alias, the run that logged
/// it, the URI as given and the digest of its files.
fn registry_tags(registry: &crate::model::RegistryModel) -> Value {
    let tags: Vec<Value> = [
        ("mlflow.registered_model", registry.name.as_deref()),
        ("mlflow.model_version", registry.version.as_deref()),
        ("mlflow.alias", registry.alias.as_deref()),
        ("mlflow.run_id", registry.run_id.as_deref()),
        ("mlflow.model_uri", Some(registry.uri.as_str())),
        ("lakescore.model_digest", Some(registry.digest.as_str())),
    ]
    .into_iter()
    .filter_map(|(key, value)| value.map(|v| json!({"key": key, "value": v, "source": "MLFLOW"})))
    .collect();
    facet("1-0-0", "TagsRunFacet", json!({ "tags": tags }))
}

/// A facet: its fields plus `_producer` and `_schemaURL`, which names the
/// facet's schema by the version the events follow.
fn facet(version: &str, name: &str, fields: Value) -> Value {
    let mut facet = fields;
    facet["_producer"] = PRODUCER.into();
    facet["_schemaURL"] = format!("https://openlineage.io/spec/facets/{version}/{name}.json#/$defs/{name}").into();
    facet
}

/// A dataset as OpenLineage names it: on object storage, namespace the
/// bucket or container's URL (`s3://bucket`), name the path in it; on the
/// local filesystem, namespace `file`, name its absolute path.
fn dataset(path: &Path) -> Value {
    let text = path.to_string_lossy();
    if crate::store::is_remote(&text)
        && let Some((scheme, rest)) = text.split_once("://")
    {
        let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
        return json!({"namespace": format!("{scheme}://{bucket}"), "name": name.trim_end_matches('/')});
    }
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    json!({"namespace": "file", "name": absolute.display().to_string()})
}

/// The input's `dataQualityMetrics`: row count, bytes, and per-column figures
/// from the run's profile.
fn quality_metrics(report: &crate::report::RunReport) -> Value {
    let mut columns = Map::new();
    if let Some(profile) = &report.table_profile {
        for column in profile
            .columns
            .iter()
            .filter(|c| c.role == crate::profile::Role::Feature)
        {
            let name = column.column.clone().unwrap_or_else(|| column.name.clone());
            let mut metrics = json!({"nullCount": column.nulls, "count": column.rows, "sum": column.sum});
            if let (Some(min), Some(max)) = (column.min, column.max) {
                metrics["min"] = min.into();
                metrics["max"] = max.into();
            }
            if let Some(q) = &column.quantiles {
                metrics["quantiles"] = json!({
                    "0.01": q.p01, "0.05": q.p05, "0.25": q.p25, "0.5": q.p50,
                    "0.75": q.p75, "0.95": q.p95, "0.99": q.p99,
                });
            }
            columns.insert(name, metrics);
        }
    }
    facet(
        "1-0-3",
        "DataQualityMetricsInputDatasetFacet",
        json!({"rowCount": report.rows, "bytes": report.bytes_read, "columnMetrics": columns}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datasets_on_object_storage_are_named_by_bucket_and_path() {
        assert_eq!(
            dataset(Path::new("s3://lake/customers/")),
            json!({"namespace": "s3://lake", "name": "customers"})
        );
        assert_eq!(
            dataset(Path::new("gs://lake/scores/churn")),
            json!({"namespace": "gs://lake", "name": "scores/churn"})
        );
        assert_eq!(dataset(Path::new("/data/lake"))["namespace"], "file");
    }
}
