//! What a run tells the systems around it, besides its exit code and report:
//! Prometheus metrics (a textfile for node_exporter, or a Pushgateway) and
//! OpenLineage run events (a file, or an HTTP endpoint such as Marquez).
//!
//! These are side channels: they are sent after the run has decided its
//! outcome and never change it. A metrics file that cannot be written or a
//! collector that does not answer is a warning in the log, not a failed run
//! (whose retry would score everything again for a monitoring hiccup).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::commit::RunStatus;
use crate::model::ModelInfo;
use crate::report::RunReport;

pub mod http;
pub mod lineage;
pub mod metrics;

pub use crate::identity::RunIdentity;
pub use http::Endpoint;
pub use lineage::Lineage;

/// How long a request to a collector may take once the run was asked to
/// stop: its end event is worth a moment, not a hang.
pub const STOPPING_DEADLINE: Duration = Duration::from_millis(500);

/// The command a run belongs to, as observers see it when it starts.
#[derive(Debug, Clone)]
pub struct RunStart<'a> {
    pub identity: &'a RunIdentity,
    pub command: &'static str,
    pub input: &'a Path,
    pub output: Option<&'a Path>,
}

/// A finished run, whatever its outcome.
#[derive(Debug, Clone)]
pub struct RunEnd<'a> {
    pub start: RunStart<'a>,
    pub finished_at: SystemTime,
    pub status: RunStatus,
    pub exit_code: i32,
    /// The error and its causes in one line, for failed runs.
    pub error: Option<String>,
    pub model: Option<&'a ModelInfo>,
    pub report: Option<&'a RunReport>,
}

/// Where a run's metrics and lineage go.
#[derive(Debug, Clone, Default)]
pub struct Observers {
    pub metrics_file: Option<PathBuf>,
    pub pushgateway: Option<Endpoint>,
    pub lineage: Option<Lineage>,
    /// The job's name: the Pushgateway's `instance` label, lineage's job.
    pub job: String,
    /// The run's stop token: a request waiting on a collector ends when it
    /// is triggered (the run goes on to stop; see `http`).
    pub cancel: crate::cancel::CancelToken,
}

impl Observers {
    /// Fails before the run starts when a file could never be written: its
    /// folder does not exist.
    pub fn check(&self) -> Result<(), String> {
        let files = [
            ("--metrics-file", self.metrics_file.as_deref()),
            ("--lineage-file", self.lineage.as_ref().and_then(|l| l.file.as_deref())),
        ];
        for (flag, path) in files {
            let Some(path) = path else { continue };
            let folder = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !folder.is_dir() {
                return Err(format!(
                    "{flag} `{}`: the folder `{}` does not exist",
                    path.display(),
                    folder.display()
                ));
            }
        }
        Ok(())
    }

    /// What bounds a request to a collector: the run's token and the usual
    /// deadline; once the run was asked to stop, a last word (the end
    /// event) still gets [`STOPPING_DEADLINE`], and no more.
    fn network(&self) -> (crate::cancel::CancelToken, Duration) {
        match self.cancel.is_cancelled() {
            true => (crate::cancel::CancelToken::new(), STOPPING_DEADLINE),
            false => (self.cancel.clone(), http::DEADLINE),
        }
    }

    pub fn run_started(&self, start: &RunStart<'_>) {
        if let Some(lineage) = &self.lineage {
            let (cancel, limit) = self.network();
            lineage.send(&lineage.start_event(start), &cancel, limit);
        }
    }

    pub fn run_ended(&self, end: &RunEnd<'_>) {
        if self.metrics_file.is_some() || self.pushgateway.is_some() {
            let previous = self.metrics_file.as_deref().and_then(metrics::previous_success);
            let text = metrics::render(end, previous);
            if let Some(path) = &self.metrics_file {
                match crate::util::write_atomically(path, text.as_bytes()) {
                    Ok(()) => tracing::debug!(path = %path.display(), "wrote metrics"),
                    Err(error) => {
                        tracing::warn!(path = %path.display(), error = %error, "cannot write the metrics file")
                    }
                }
            }
            if let Some(endpoint) = &self.pushgateway {
                let (cancel, limit) = self.network();
                push(
                    &push_endpoint(endpoint, &self.job),
                    &text,
                    end.status.published(),
                    &cancel,
                    limit,
                );
            }
        }
        if let Some(lineage) = &self.lineage {
            let (cancel, limit) = self.network();
            lineage.send(&lineage.end_event(end), &cancel, limit);
        }
    }
}

/// The Pushgateway group of a job: `URL/metrics/job/lakescore/instance/<job>`
/// (the job name base64url-encoded, as the Pushgateway allows, so that any
/// name fits in a path), or the URL as given when it names a group itself.
pub fn push_endpoint(base: &Endpoint, job: &str) -> Endpoint {
    let mut endpoint = base.clone();
    if !endpoint.path.contains("/metrics/job/") {
        endpoint.path = format!(
            "{}/metrics/job/lakescore/instance@base64/{}",
            endpoint.path.trim_end_matches('/'),
            base64url(job.as_bytes())
        );
    }
    endpoint
}

/// Pushes a run's metrics. A published run replaces the whole group (PUT), so
/// that a metric the last run had and this one lacks does not linger; a
/// failed run replaces only the families it sends (POST), so that the
/// group keeps `lakescore_last_success_timestamp_seconds` and the figures of
/// the last success.
fn push(endpoint: &Endpoint, text: &str, published: bool, cancel: &crate::cancel::CancelToken, limit: Duration) {
    let method = if published { "PUT" } else { "POST" };
    match http::send(
        method,
        endpoint,
        "text/plain; version=0.0.4",
        text.as_bytes(),
        cancel,
        limit,
    ) {
        Ok((200..=299, _)) => tracing::debug!(url = %endpoint, "pushed metrics"),
        Ok((status, body)) => {
            let body = http::shown(&body);
            tracing::warn!(url = %endpoint, status, response = %body, "the Pushgateway refused the metrics")
        }
        Err(error) => tracing::warn!(url = %endpoint, error = %error, "cannot push metrics"),
    }
}

/// Base64 with the URL-safe alphabet, padded (the Pushgateway's `@base64`).
fn base64url(bytes: &[u8]) -> String {
    http::base64(
        bytes,
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_and_uuids_have_their_shapes() {
        let identity = RunIdentity::new();
        let uuid = identity.uuid.as_bytes();
        assert_eq!(uuid.len(), 36, "{}", identity.uuid);
        assert_eq!((uuid[8], uuid[13], uuid[18], uuid[23]), (b'-', b'-', b'-', b'-'));
        assert_eq!(uuid[14], b'7', "version 7: {}", identity.uuid);
        assert!(b"89ab".contains(&uuid[19]), "RFC 9562 variant: {}", identity.uuid);
        assert_eq!(identity.run_id.len(), "20261126T045300Z-1a2b3c4d".len());
        assert_ne!(RunIdentity::new().uuid, identity.uuid);
    }

    #[test]
    fn pushes_go_to_the_jobs_group() {
        let base: Endpoint = "http://gw:9091/".parse().unwrap();
        assert_eq!(
            push_endpoint(&base, "score.churn/eu").path,
            "/metrics/job/lakescore/instance@base64/c2NvcmUuY2h1cm4vZXU="
        );
        let named: Endpoint = "http://gw:9091/metrics/job/nightly/instance/a".parse().unwrap();
        assert_eq!(push_endpoint(&named, "x").path, "/metrics/job/nightly/instance/a");
        assert_eq!(base64url(b"\xfb\xff"), "-_8=");
        assert_eq!(base64url(b"ab"), "YWI=");
        assert_eq!(base64url(b""), "");
    }
}
