//! Logs: one line per event on stderr, through `tracing`, readable on a
//! terminal or one JSON object per line (`--log-format json`). Every line
//! carries the run's identity (run id, model name and version) once the run
//! knows it, whichever thread logs it: the identity is process-wide context
//! set by [`set_run`] and [`set_model`], not a span a worker thread could miss.

use std::fmt::Write as _;
use std::sync::RwLock;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::util::rfc3339_millis;

/// The variable with `tracing` filter directives that override `-q`/`-v`
/// (`LAKESCORE_LOG=lakescore=debug,parquet=warn`).
pub const FILTER_VARIABLE: &str = "LAKESCORE_LOG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Default)]
struct RunContext {
    run_id: Option<String>,
    model: Option<String>,
    model_version: Option<String>,
}

static CONTEXT: RwLock<RunContext> = RwLock::new(RunContext {
    run_id: None,
    model: None,
    model_version: None,
});

/// From now on, every line names this run.
pub fn set_run(run_id: &str) {
    CONTEXT.write().unwrap().run_id = Some(run_id.to_string());
}

/// From now on, every line names this model.
pub fn set_model(name: &str, version: Option<&str>) {
    let mut context = CONTEXT.write().unwrap();
    context.model = Some(name.to_string());
    context.model_version = version.map(str::to_string);
}

/// Installs the logger: `level` is `error`, `info`, `debug` or `trace`, unless
/// [`FILTER_VARIABLE`] says otherwise.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_env(FILTER_VARIABLE).unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(LineFormat { format })
        .init();
}

struct LineFormat {
    format: LogFormat,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str();
        let time = rfc3339_millis(SystemTime::now());
        let context = CONTEXT.read().unwrap();
        match self.format {
            LogFormat::Json => {
                // Written by hand to keep the order people scan for: time,
                // level, message, the run's identity, then the event's fields.
                let mut line = String::with_capacity(256);
                let mut field = |key: &str, value: &serde_json::Value| {
                    line.push(if line.is_empty() { '{' } else { ',' });
                    line.push_str(&serde_json::Value::from(key).to_string());
                    line.push(':');
                    line.push_str(&value.to_string());
                };
                field("timestamp", &time.into());
                field("level", &level.into());
                field("message", &fields.message.into());
                for (key, value) in [
                    ("run_id", &context.run_id),
                    ("model", &context.model),
                    ("model_version", &context.model_version),
                ] {
                    if let Some(value) = value {
                        field(key, &value.as_str().into());
                    }
                }
                field("target", &event.metadata().target().into());
                for (key, value) in &fields.values {
                    field(key, value);
                }
                writeln!(writer, "{line}}}")
            }
            LogFormat::Text => {
                write!(writer, "{time} {level:>5}")?;
                if let Some(run_id) = &context.run_id {
                    write!(writer, " run={run_id}")?;
                }
                if let Some(model) = &context.model {
                    write!(writer, " model={model}")?;
                    if let Some(version) = &context.model_version {
                        write!(writer, "@{version}")?;
                    }
                }
                write!(writer, ": {}", fields.message)?;
                for (key, value) in &fields.values {
                    match value {
                        serde_json::Value::String(text) => write!(writer, " {key}={text}")?,
                        other => write!(writer, " {key}={other}")?,
                    }
                }
                writeln!(writer)
            }
        }
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    values: Vec<(String, serde_json::Value)>,
}

impl Fields {
    fn push(&mut self, field: &Field, value: serde_json::Value) {
        match field.name() {
            "message" => {
                self.message = match value {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                }
            }
            name => self.values.push((name.to_string(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.push(field, text.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.into());
    }
}
