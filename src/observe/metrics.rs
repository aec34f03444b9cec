//! Prometheus text format (version 0.0.4) for a run, in the shape
//! node_exporter's textfile collector reads: every family with `# HELP` and
//! `# TYPE`, gauges only (each file describes the last run; Prometheus keeps
//! the history), no timestamps, one file replaced atomically per run.

use std::fmt::Write as _;
use std::path::Path;

use super::RunEnd;
use crate::drift::Status;

/// The one metric a failed run carries over from the file it replaces.
pub const LAST_SUCCESS: &str = "lakescore_last_success_timestamp_seconds";

/// `lakescore_last_success_timestamp_seconds` of an earlier metrics file.
pub fn previous_success(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(LAST_SUCCESS)?.strip_prefix(' ')?.trim().parse().ok())
}

struct Families {
    text: String,
}

impl Families {
    /// Starts a family; `samples` are (labels, value).
    fn gauge(&mut self, name: &str, help: &str, samples: &[(Vec<(&str, &str)>, f64)]) {
        if samples.is_empty() {
            return;
        }
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in samples {
            self.text.push_str(name);
            if !labels.is_empty() {
                let labels: Vec<String> = labels
                    .iter()
                    .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
                    .collect();
                let _ = write!(self.text, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(self.text, " {}", number(*value));
        }
    }

    fn one(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, &[(Vec::new(), value)]);
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn number(value: f64) -> String {
    match value {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => format!("{v}"),
    }
}

fn status_value(status: Status) -> f64 {
    match status {
        Status::Pass => 0.0,
        Status::Warn => 1.0,
        Status::Fail => 2.0,
    }
}

/// The metrics of a finished run. `previous_success` is the last success time
/// of the file being replaced, kept when this run did not publish.
pub fn render(end: &RunEnd<'_>, previous_success: Option<f64>) -> String {
    let mut out = Families { text: String::new() };
    let model = end.model.map(|m| m.name.as_str()).unwrap_or("");
    let version = end.model.and_then(|m| m.version.as_deref()).unwrap_or("");
    // The registry alias the model was resolved through (`champion`).
    let alias = end
        .model
        .and_then(|m| m.registry.as_ref())
        .and_then(|r| r.alias.as_deref())
        .unwrap_or("");
    out.gauge(
        "lakescore_run_info",
        "The last run: its command, model (and the registry alias it was resolved through) and outcome (always 1; the run id is in the logs and the ledger).",
        &[(
            vec![
                ("command", end.start.command),
                ("model", model),
                ("model_version", version),
                ("model_alias", alias),
                ("status", end.status.as_str()),
            ],
            1.0,
        )],
    );
    let finished = crate::util::epoch_seconds(end.finished_at);
    out.one(
        "lakescore_last_run_start_timestamp_seconds",
        "When the last run started.",
        crate::util::epoch_seconds(end.start.identity.started_at),
    );
    out.one(
        "lakescore_last_run_timestamp_seconds",
        "When the last run ended.",
        finished,
    );
    out.one(
        "lakescore_last_run_success",
        "1 when the last run published its output, else 0.",
        f64::from(u8::from(end.status.published())),
    );
    let last_success = if end.status.published() {
        Some(finished)
    } else {
        previous_success
    };
    if let Some(at) = last_success {
        out.one(LAST_SUCCESS, "When a run last published its output.", at);
    }
    out.one(
        "lakescore_exit_code",
        "The exit code of the last run.",
        f64::from(end.exit_code),
    );
    out.one(
        "lakescore_run_duration_seconds",
        "Wall time of the last run.",
        finished - crate::util::epoch_seconds(end.start.identity.started_at),
    );
    let Some(report) = end.report else {
        return out.text;
    };
    out.one("lakescore_rows_input", "Rows in the input table.", report.rows as f64);
    out.one(
        "lakescore_rows_scored",
        "Rows this run scored (reused partitions excluded).",
        report.rows_scored as f64,
    );
    out.one(
        "lakescore_rows_quarantined",
        "Rows the contract kept out of the output.",
        report.rows_quarantined as f64,
    );
    out.one(
        "lakescore_rows_flagged",
        "Rows scored with contract flags.",
        report.rows_flagged as f64,
    );
    out.one(
        "lakescore_rows_per_second",
        "Rows scored per wall second.",
        report.rows_per_second,
    );
    out.one(
        "lakescore_read_bytes",
        "Bytes of Parquet input (fetched, for a table on object storage).",
        report.bytes_read as f64,
    );
    if let Some(requests) = report.requests {
        out.one(
            "lakescore_read_requests",
            "Requests made to object storage for the input.",
            requests as f64,
        );
    }
    out.one(
        "lakescore_written_bytes",
        "Bytes of Parquet output written.",
        report.bytes_written as f64,
    );
    out.one(
        "lakescore_reused_partitions",
        "Partitions a resume kept.",
        report.reused_partitions as f64,
    );
    out.one(
        "lakescore_peak_rss_bytes",
        "Peak resident memory.",
        report.peak_rss_bytes as f64,
    );
    let wall = &report.wall_seconds;
    out.gauge(
        "lakescore_phase_seconds",
        "Wall seconds per phase of the last run.",
        &[
            (vec![("phase", "plan")], wall.plan),
            (vec![("phase", "score")], wall.score),
            (vec![("phase", "commit")], wall.commit),
        ],
    );
    let stages: Vec<(Vec<(&str, &str)>, f64)> = report
        .stage_seconds
        .rows()
        .iter()
        .map(|(stage, seconds)| (vec![("stage", *stage)], *seconds))
        .collect();
    out.gauge(
        "lakescore_stage_thread_seconds",
        "Seconds per stage summed over worker threads.",
        &stages,
    );
    let judgement = &report.judgement;
    if let Some(checks) = &judgement.checks {
        let status: Vec<_> = checks
            .rules
            .iter()
            .map(|r| {
                (
                    vec![("rule", r.id.as_str()), ("policy", r.policy.as_str())],
                    status_value(r.status),
                )
            })
            .collect();
        out.gauge(
            "lakescore_rule_status",
            "Contract rule results: 0 pass, 1 warn, 2 fail.",
            &status,
        );
        let failing: Vec<_> = checks
            .rules
            .iter()
            .map(|r| (vec![("rule", r.id.as_str())], r.failing as f64))
            .collect();
        out.gauge(
            "lakescore_rule_failing",
            "Rows (or values) breaking each contract rule.",
            &failing,
        );
    }
    if let Some(guards) = &judgement.guards {
        let status: Vec<_> = guards
            .guards
            .iter()
            .map(|g| (vec![("guard", g.id)], status_value(g.status)))
            .collect();
        out.gauge(
            "lakescore_guard_status",
            "Output guard results: 0 pass, 1 warn, 2 fail.",
            &status,
        );
    }
    if let Some(drift) = &judgement.drift {
        let by = |value: fn(&crate::drift::ColumnDrift) -> f64| -> Vec<(Vec<(&str, &str)>, f64)> {
            drift
                .columns
                .iter()
                .map(|c| (vec![("column", c.name.as_str()), ("kind", c.kind.as_str())], value(c)))
                .collect()
        };
        out.gauge(
            "lakescore_drift_psi",
            "Population stability index against the reference.",
            &by(|c| c.psi),
        );
        out.gauge(
            "lakescore_drift_js",
            "Jensen-Shannon distance (base 2) against the reference.",
            &by(|c| c.js),
        );
        out.gauge(
            "lakescore_drift_status",
            "Drift verdicts: 0 pass, 1 warn, 2 fail.",
            &by(|c| status_value(c.status)),
        );
    }
    if let Some(sla) = &report.sla {
        let breached: Vec<_> = sla
            .checks
            .iter()
            .map(|c| (vec![("sla", c.name)], f64::from(u8::from(c.breached))))
            .collect();
        out.gauge(
            "lakescore_sla_breached",
            "1 when the last run missed this SLA.",
            &breached,
        );
    }
    out.text
}
