//! Logs: one line per event on stderr, through `tracing`, readable on a
//! terminal or one JSON object per line (`--log-format json`). Every line
//! carries the run's identity (run id, model name and version) once the run
//! knows it, whichever thread logs it: the identity is the fields of the
//! run's span ([`run_span`]), which the command enters and the library's
//! worker pools enter on each of their threads. Nothing here is global but
//! the subscriber itself, so two runs in one process each name their own.

use std::fmt::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use lakescore::util::rfc3339_millis;

/// The variable with `tracing` filter directives that override `-q`/`-v`
/// (`LAKESCORE_LOG=lakescore=debug,parquet=warn`).
pub const FILTER_VARIABLE: &str = "LAKESCORE_LOG";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The run span's target: always enabled (whatever `LAKESCORE_LOG` says), so
/// that every line names the run.
const RUN_SPAN_TARGET: &str = "lakescore::run";

/// The span a command's run logs in: every line inside it names the run, and
/// the model once [`set_model`] has said which.
pub fn run_span(run_id: &str) -> tracing::Span {
    // At ERROR level, so that it is enabled whenever any line is written.
    tracing::error_span!(
        target: RUN_SPAN_TARGET,
        "run",
        run_id = run_id,
        model = tracing::field::Empty,
        model_version = tracing::field::Empty
    )
}

/// From now on, every line of the run names this model.
pub fn set_model(span: &tracing::Span, name: &str, version: Option<&str>) {
    span.record("model", name);
    if let Some(version) = version {
        span.record("model_version", version);
    }
}

/// The run's identity as its span's fields, kept in the span's extensions.
#[derive(Default, Clone)]
struct RunContext {
    run_id: Option<String>,
    model: Option<String>,
    model_version: Option<String>,
}

impl Visit for RunContext {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            "run_id" => &mut self.run_id,
            "model" => &mut self.model,
            "model_version" => &mut self.model_version,
            _ => return,
        };
        *slot = Some(value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Keeps each `run` span's fields where the line format finds them.
struct RunContextLayer;

impl<S> Layer<S> for RunContextLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "run" {
            return;
        }
        let mut context = RunContext::default();
        attrs.record(&mut context);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(context);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(context) = span.extensions_mut().get_mut::<RunContext>()
        {
            values.record(context);
        }
    }
}

/// Installs the logger: `level` is `error`, `info`, `debug` or `trace`, unless
/// [`FILTER_VARIABLE`] says otherwise.
pub fn init(format: LogFormat, level: &str) {
    // delta_kernel logs each snapshot it builds at info; the run's own log
    // says which version it read. Its messages stay a level below ours.
    let libraries = match level {
        "info" => ",delta_kernel=warn,delta_kernel_default_engine=warn",
        "debug" => ",delta_kernel=info,delta_kernel_default_engine=info",
        _ => "",
    };
    let filter = EnvFilter::try_from_env(FILTER_VARIABLE)
        .unwrap_or_else(|_| EnvFilter::new(format!("{level}{libraries}")))
        .add_directive(format!("{RUN_SPAN_TARGET}=error").parse().expect("a valid directive"));
    tracing_subscriber::registry()
        .with(filter)
        .with(RunContextLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .event_format(LineFormat { format }),
        )
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
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let level = event.metadata().level().as_str();
        let time = rfc3339_millis(SystemTime::now());
        // The innermost run span around the event (or the current thread's).
        let context = ctx
            .event_scope()
            .into_iter()
            .flatten()
            .find_map(|span| span.extensions().get::<RunContext>().cloned())
            .unwrap_or_default();
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
