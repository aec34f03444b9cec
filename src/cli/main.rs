//! The `lakescore` binary: parse the command line, call the library, print
//! errors, and exit with the documented code. What only a process needs
//! lives beside this file: the settings' layers (`settings`), the log format
//! (`logging`), the progress bar (`progress`), signals (`signals`) and exit
//! codes (`exit_code`); the library has none of them.

mod exit_code;
mod logging;
mod progress;
mod settings;
mod signals;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use lakescore::cancel::CancelToken;
use lakescore::commit::RunStatus;
use lakescore::commit::{LocalOutput, WriteMode};
use lakescore::compare::ComparisonTap;
use lakescore::device::DeviceSpec;
use lakescore::error::{Error, causes, error_chain};
use lakescore::model::set::ScoreTap;
use lakescore::model::trees::dispatch::SimdLevel;
use lakescore::observe::http::Auth;
use lakescore::observe::{Endpoint, Lineage, Observers, RunEnd, RunIdentity, RunStart};
use lakescore::package::{self, Package};
use lakescore::pipeline::{self, RunOptions};
use lakescore::plan::IdColumns;
use lakescore::report::{FailureReport, RunReport};
use lakescore::sla::{Deadline, Sla};
use lakescore::source::{LocalTable, MmapChoice, TableVersion};

// Arrow decoding allocates and frees row-group-sized buffers all the time;
// mimalloc reuses them where glibc keeps returning them to the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit codes:
  0    done: the output is published
  1    failed: nothing was half-published (bad input, bad model, I/O error)
  2    usage: the command line or config file cannot be used as given
  3    a data contract, guard or drift threshold said no: nothing was published
       (`check`: a failing rule says stop)
  4    an SLA was missed (--max-duration, --deadline, --min-rows,
       --min-rows-per-second): the output IS published
  5    another run holds the output's lock: nothing was touched
  130  stopped by SIGINT, 143 by SIGTERM: staged files removed, nothing published

Every flag can also be set by a LAKESCORE_* environment variable (shown in
[env: ...]) or a key of the --config file (the flag's long name); precedence:
flag > environment > file > default. --print-config shows the result.";

#[derive(Parser)]
#[command(
    name = "lakescore",
    version,
    about = "Score Parquet tables in a data lake with ML models, committed atomically"
)]
#[command(after_help = EXIT_CODES)]
struct Cli {
    /// Print only errors (where -v is also set, the one from the stronger
    /// source wins: flag, environment, file).
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log line format on stderr: `text`, or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Read settings from this TOML file (keys are the long flag names).
    #[arg(long, global = true, value_name = "FILE", env = "LAKESCORE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective settings, and where each came from, then exit.
    #[arg(long, global = true)]
    print_config: bool,
    /// The widest instruction set the tree kernels may use: `avx512` (every
    /// kernel this CPU has: the default), `avx2` or `scalar`. Scores are the
    /// same on every path; this is for testing and timing the slower ones.
    #[arg(long, global = true, value_name = "LEVEL", value_parser = SimdLevel::parse)]
    simd: Option<SimdLevel>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Score a table and publish the scores atomically.
    #[command(after_help = EXIT_CODES)]
    Score(Box<ScoreArgs>),
    /// Time the whole pipeline on a table, per stage.
    #[command(after_help = EXIT_CODES)]
    Bench(BenchArgs),
    /// Check a table against a model package's data contract, without scoring.
    #[command(after_help = EXIT_CODES)]
    Check(CheckArgs),
    /// Write the profile of a table (or merge profiles of its parts).
    #[command(after_help = EXIT_CODES)]
    Profile(ProfileArgs),
    /// Inspect or build model packages.
    #[command(subcommand)]
    Model(ModelCommand),
    /// List the runs recorded in an output's ledger: when, which model,
    /// which input, how many rows, how each ended.
    Runs(RunsArgs),
    /// Measure models on a labelled table: AUC, log loss, Brier score,
    /// accuracy, calibration, lift and gain by decile.
    #[command(after_help = EXIT_CODES)]
    Evaluate(EvaluateArgs),
    /// Assign every customer one variant of a campaign (Thompson sampling
    /// over the policy's Beta posteriors, with floors and a holdout), and
    /// publish the assignments atomically.
    #[command(after_help = EXIT_CODES)]
    Allocate(AllocateArgs),
    /// Update a policy's posteriors from outcome tables, writing its next version.
    #[command(after_help = EXIT_CODES)]
    Feedback(FeedbackArgs),
    /// Estimate a candidate policy's conversion rate from logged assignments
    /// and their outcomes (IPS and self-normalised IPS).
    #[command(after_help = EXIT_CODES, name = "evaluate-policy")]
    EvaluatePolicy(EvaluatePolicyArgs),
}

#[derive(Args)]
struct AllocateArgs {
    /// The campaign's policy file (TOML, or JSON by its `.json` extension).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The customers: a Parquet file or folder with the policy's id column.
    #[arg(long, value_name = "IN")]
    input: PathBuf,
    /// Output folder: mirrors the input's relative paths.
    #[arg(long, value_name = "OUT")]
    output: PathBuf,
    /// What to do when OUT already holds a table.
    #[arg(long, default_value = "error-if-exists", value_parser = parse_mode)]
    mode: WriteMode,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the arms' models run: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceSpec,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
}

/// The outcome tables' columns.
#[derive(Args)]
#[command(next_help_heading = "Outcome columns")]
struct OutcomeColumnArgs {
    /// The id column (default: the policy's `id_column`).
    #[arg(long, value_name = "C")]
    id_column: Option<String>,
    /// The arm each customer got (null: the holdout).
    #[arg(long, value_name = "C", default_value = "arm")]
    arm_column: String,
    /// Whether the customer converted: boolean or 0/1.
    #[arg(long, value_name = "C", default_value = "converted")]
    converted_column: String,
    /// When the outcome was recorded: a timestamp or a date.
    #[arg(long, value_name = "C", default_value = "timestamp")]
    timestamp_column: String,
}

#[derive(Args)]
struct FeedbackArgs {
    /// The policy to update.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Outcome tables (repeatable): id, arm, converted, timestamp.
    #[arg(long = "outcomes", value_name = "TABLE", required = true)]
    outcomes: Vec<PathBuf>,
    /// Where to write the next version (default: over the policy file, atomically).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    #[command(flatten)]
    columns: OutcomeColumnArgs,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvaluatePolicyArgs {
    /// The candidate policy.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Logged assignments: the output of `allocate` (id, arm, propensity, holdout).
    #[arg(long, value_name = "TABLE")]
    assignments: PathBuf,
    /// Outcome tables (repeatable).
    #[arg(long = "outcomes", value_name = "TABLE", required = true)]
    outcomes: Vec<PathBuf>,
    /// The id column (default: the policy's `id_column`).
    #[arg(long, value_name = "C")]
    id_column: Option<String>,
    /// Whether the customer converted: boolean or 0/1.
    #[arg(long, value_name = "C", default_value = "converted")]
    converted_column: String,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report as JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct EvaluateArgs {
    /// Model package or bare model file (repeatable: the first is the
    /// champion, the others are compared with it).
    #[arg(long = "model", value_name = "M", required = true)]
    models: Vec<PathBuf>,
    /// The labelled table.
    #[arg(long, value_name = "IN")]
    input: PathBuf,
    /// The label column: 0/1, false/true; null rows are left out.
    #[arg(long, value_name = "COL")]
    label: String,
    /// Score at or above which a row is predicted positive, for accuracy
    /// (repeatable).
    #[arg(long = "threshold", value_name = "T", default_value = "0.5")]
    thresholds: Vec<f64>,
    /// Write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a static HTML page (metrics, ROC and calibration plots, deciles) to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Where the models run: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceSpec,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Log each model's metrics to the MLflow run that logged it (models
    /// given as `models:/…` or `runs:/…`).
    #[arg(long)]
    log_to_mlflow: bool,
}

#[derive(Args)]
struct RunsArgs {
    /// The output folder.
    #[arg(value_name = "OUT")]
    output: PathBuf,
    /// Print the runs as JSON.
    #[arg(long)]
    json: bool,
    /// Also write the trend page: plots over the runs and a line per run,
    /// one static HTML file.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Only the last N runs [default: all when listing, 30 on the page].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    last: Option<u64>,
}

#[derive(Subcommand)]
enum ModelCommand {
    /// Print a package (or bare model): identity, features and their contract,
    /// guards, drift thresholds, reference.
    Inspect(InspectArgs),
    /// Write a package from a bare model and a reference table.
    Package(PackageArgs),
}

#[derive(Args)]
struct ModelInput {
    /// Model package folder (with `lakescore.toml`) or a bare model file,
    /// whose format is detected from its content. `score` and `bench` take
    /// several: the first is the champion, each writes `score_<name>`.
    #[arg(long = "model", value_name = "M", required = true)]
    models: Vec<PathBuf>,
    /// A Parquet file, a folder (Hive `k=v/` partitions welcome) or a Delta
    /// table (a folder with `_delta_log/`), local or on object storage.
    #[arg(long, value_name = "IN")]
    input: PathBuf,
    /// A Delta input's version to read (default: the latest).
    #[arg(long, value_name = "N", conflicts_with = "input_as_of")]
    input_version: Option<u64>,
    /// A Delta input as it was at TIME (`2026-11-25` or
    /// `2026-11-25T06:00:00Z`): its latest version committed by then.
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    input_as_of: Option<i64>,
    /// Where the model runs: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceSpec,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
    /// Column carried from input to output (repeatable; default `customer_id` when present).
    #[arg(long = "id-column", value_name = "C")]
    id_columns: Vec<String>,
    /// Tree ensembles: write the raw margin (XGBoost `output_margin`, LightGBM
    /// `raw_score`) instead of the transformed prediction.
    #[arg(long)]
    output_margin: bool,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    model_input: ModelInput,
    /// Output folder: mirrors the input's relative paths.
    #[arg(long, value_name = "OUT")]
    output: PathBuf,
    /// What to do when OUT already holds a table.
    #[arg(long, default_value = "error-if-exists", value_parser = parse_mode)]
    mode: WriteMode,
    /// OUT's table format: `parquet` (Parquet files and `_SUCCESS`) or
    /// `delta` (a Delta Lake table, one commit per run). Default: `delta`
    /// when OUT already is a Delta table, else `parquet`.
    #[arg(long, value_name = "FORMAT", value_parser = ["parquet", "delta"])]
    output_format: Option<String>,
    /// When another run holds OUT's lock, wait for it up to DURATION (`90s`,
    /// `45m`) instead of failing at once (exit 5). A Delta output's version
    /// is read before the wait, so another run's commit meanwhile to the
    /// same partitions fails this one clearly.
    #[arg(long, value_name = "DURATION", value_parser = package::parse_age)]
    lock_wait: Option<u64>,
    /// Write a JSON run report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a static HTML run report to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// The clock freshness rules judge by (`2026-11-26T02:00:00Z`; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    as_of: Option<i64>,
    /// With several models: publish the champion's scores only (its own
    /// columns, as it alone would), and write the challengers' to the shadow
    /// table `OUT/_lakescore/shadow/<run id>.parquet`.
    #[arg(long)]
    shadow: bool,
    #[command(flatten)]
    monitoring: MonitoringArgs,
    #[command(flatten)]
    sla: SlaArgs,
}

#[derive(Args)]
#[command(next_help_heading = "Monitoring")]
struct MonitoringArgs {
    /// Write Prometheus metrics to FILE (atomically; for node_exporter's
    /// textfile collector, name it `*.prom`).
    #[arg(long, value_name = "FILE")]
    metrics_file: Option<PathBuf>,
    /// Push the same metrics to a Prometheus Pushgateway (`http://host:9091`;
    /// group `job="lakescore",instance=<job name>` unless the URL names one).
    // (Parsed by `observers_of`, not by clap, whose message would repeat the
    // URL, credentials and all.)
    #[arg(long, value_name = "URL")]
    pushgateway: Option<String>,
    /// Append OpenLineage run events (START, then COMPLETE or FAIL) to FILE,
    /// one JSON object per line.
    #[arg(long, value_name = "FILE")]
    lineage_file: Option<PathBuf>,
    /// Post OpenLineage run events to URL (Marquez: `http://host:5000/api/v1/lineage`).
    #[arg(long, value_name = "URL")]
    lineage_url: Option<String>,
    /// The OpenLineage job namespace.
    #[arg(long, value_name = "NS", default_value = "lakescore")]
    lineage_namespace: String,
    /// The job's name in lineage and in the Pushgateway's group (default:
    /// `score.` and the output folder's name).
    #[arg(long, value_name = "NAME")]
    job_name: Option<String>,
}

#[derive(Args)]
#[command(next_help_heading = "Service levels (a miss exits 4; the output is still published)")]
struct SlaArgs {
    /// The longest the run may take (`90s`, `45m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = package::parse_age)]
    max_duration: Option<u64>,
    /// The local time of day (`06:30`; the `TZ` variable applies) by which the
    /// run must be done: the occurrence nearest its start (within 12 hours).
    #[arg(long, value_name = "HH:MM")]
    deadline: Option<Deadline>,
    /// The fewest rows the run may publish.
    #[arg(long, value_name = "N")]
    min_rows: Option<u64>,
    /// The lowest rate, in rows scored per wall second.
    #[arg(long, value_name = "N")]
    min_rows_per_second: Option<f64>,
}

impl SlaArgs {
    fn sla(&self) -> Sla {
        Sla {
            max_duration_seconds: self.max_duration,
            deadline: self.deadline,
            min_rows: self.min_rows,
            min_rows_per_second: self.min_rows_per_second,
        }
    }
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    model_input: ModelInput,
    /// Write a JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Write a static HTML report to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// The clock freshness rules judge by (`2026-11-26T02:00:00Z`; default now).
    #[arg(long, value_name = "TIME", value_parser = parse_instant)]
    as_of: Option<i64>,
}

#[derive(Args)]
struct ProfileArgs {
    /// The table to profile.
    #[arg(long, value_name = "IN", required_unless_present = "merge", conflicts_with = "merge")]
    input: Option<PathBuf>,
    /// Profile the features this model (package or file) reads, and its
    /// scores; without it, every numeric column.
    #[arg(long, value_name = "M")]
    model: Option<PathBuf>,
    /// Merge these profiles (of parts of one table) instead.
    #[arg(long, value_name = "PROFILE", num_args = 1..)]
    merge: Vec<PathBuf>,
    /// Where to write the profile (JSON).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Where `--model` runs: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: DeviceSpec,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
}

#[derive(Args)]
struct InspectArgs {
    /// Package folder or bare model file.
    #[arg(value_name = "M")]
    model: PathBuf,
}

#[derive(Args)]
struct PackageArgs {
    /// The bare model file.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// A table the model is known to score well: its profile becomes the drift
    /// reference, and its ranges the starting contract.
    #[arg(long, value_name = "TABLE")]
    reference: PathBuf,
    /// The package folder to write.
    #[arg(long, value_name = "DIR")]
    output: PathBuf,
    /// Package name (default: the model file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Package version.
    #[arg(long, default_value = "0.1.0")]
    version: String,
    /// The model's feature names in input order (comma-separated), for an
    /// ONNX model whose one wide input names none; kept in the manifest as
    /// `feature_names`.
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    feature_names: Vec<String>,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    model_input: ModelInput,
    /// Compute the scores but leave out encoding and writing the output.
    #[arg(long)]
    no_write: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Leave out the contract's checks and the profiles (to measure what they cost).
    #[arg(long)]
    no_checks: bool,
}

fn parse_instant(text: &str) -> Result<i64, String> {
    lakescore::util::parse_instant(text)
        .ok_or_else(|| format!("`{text}` is not a date (`2026-11-26`) or an RFC 3339 time (`2026-11-26T02:00:00Z`)"))
}

fn parse_device(text: &str) -> Result<DeviceSpec, String> {
    text.parse().map_err(|e: lakescore::device::DeviceError| e.to_string())
}

fn parse_mode(text: &str) -> Result<WriteMode, String> {
    text.parse()
}

use crate::logging::LogFormat;

fn main() -> ExitCode {
    // A panic inside parquet's page decoders on a damaged file becomes an
    // error that names the file (`scan::decoding_now`); only others print.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !lakescore::scan::decoding_now() {
            default_hook(info);
        }
    }));
    let command = settings::with_environment(Cli::command());
    let unknown_variables = settings::unknown_variables(&command);
    let layered = match settings::parse(command, std::env::args_os().collect()) {
        Ok(Ok(layered)) => layered,
        Ok(Err(error)) => {
            eprintln!("error: {error}");
            return ExitCode::from(exit_code::USAGE as u8);
        }
        Err(error) => error.exit(),
    };
    let mut cli = Cli::from_arg_matches(&layered.matches).unwrap_or_else(|error| error.exit());
    // Where -q and -v are both set, the one from the stronger source wins;
    // from here on `cli.quiet` is the outcome (logging, the progress bar).
    let precedence = |key| layered.source_of(key).map_or(0, settings::Source::precedence);
    cli.quiet &= cli.verbose == 0 || precedence("quiet") >= precedence("verbose");
    init_logging(&cli);
    if let Some(level) = cli.simd {
        lakescore::model::trees::dispatch::cap(level);
    }
    for key in &layered.unused_keys {
        tracing::debug!(key = %key, "config file setting not used by this command");
    }
    for (name, hint) in &unknown_variables {
        tracing::warn!("environment variable `{name}` is not a lakescore setting and is ignored{hint}");
    }
    if cli.print_config {
        let name = layered.matches.subcommand_name().unwrap_or("lakescore");
        print!("{}", settings::render(name, &layered.settings));
        return ExitCode::SUCCESS;
    }
    // Commands with a pass stop cleanly at the next row group; the others are
    // quick and keep the default (end at once).
    let cancel = match cli.command {
        Command::Runs(_) | Command::Model(ModelCommand::Inspect(_)) => CancelToken::new(),
        _ => signals::install_handlers(),
    };
    // Every log line of a command that runs a pass names the run (and, once
    // loaded, the model): the lines are written inside the run's span.
    let identity = RunIdentity::new();
    let span = match cli.command {
        Command::Runs(_) | Command::Model(ModelCommand::Inspect(_)) | Command::Feedback(_) => tracing::Span::none(),
        Command::EvaluatePolicy(_) => tracing::Span::none(),
        _ => logging::run_span(&identity.run_id),
    };
    let _in_run = span.enter();
    let code = match run(&cli, &identity, &cancel) {
        Ok(status) => exit_code::of(status),
        Err(error) => {
            report_error(&cli, &error);
            exit_code::of_error(&error)
        }
    };
    ExitCode::from(code as u8)
}

/// Prints an error and its causes: for people on stderr, or as one JSON log
/// line with `--log-format json`.
fn report_error(cli: &Cli, error: &Error) {
    let chain = error_chain(error);
    match cli.log_format {
        LogFormat::Json => match error.hint() {
            Some(hint) => tracing::error!(exit_code = exit_code::of_error(error), hint, "{chain}"),
            None => tracing::error!(exit_code = exit_code::of_error(error), "{chain}"),
        },
        LogFormat::Text => {
            eprintln!("error: {}", lakescore::util::message_of(error));
            for cause in causes(error).skip(1) {
                eprintln!("  Caused by: {}", lakescore::util::message_of(cause));
            }
            if let Some(hint) = error.hint() {
                eprintln!("  hint: {hint}");
            }
        }
    }
}

/// Runs the command; how it ended (`succeeded`, or for `score` and `check`
/// also `rejected` and `sla_missed`) decides the exit code.
fn run(cli: &Cli, identity: &RunIdentity, cancel: &CancelToken) -> Result<RunStatus, Error> {
    let job = Job { cli, identity, cancel };
    match &cli.command {
        Command::Score(args) => score_job(&job, args),
        Command::Bench(args) => {
            let (package, options, comparison) = load(&args.model_input, &job, None, false)?;
            let mut report = pipeline::bench(
                &package,
                &*args.model_input.table()?,
                !args.no_write,
                !args.no_checks,
                &options,
            )?;
            report.comparison = comparison.map(|tap| tap.finish());
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
            } else {
                print!("{}", report.render_table());
            }
            Ok(RunStatus::Succeeded)
        }
        Command::Check(args) => {
            if args.model_input.models.len() > 1 {
                return Err(Error::Usage(
                    "`check` checks a table against one package's contract: give `--model` once".into(),
                ));
            }
            let outcome = load(&args.model_input, &job, args.as_of, false)
                .and_then(|(package, options, _)| pipeline::check(&package, &*args.model_input.table()?, &options));
            let report = outcome.inspect_err(|error| write_failure_report(args.report.as_deref(), error))?;
            write_reports(&report, args.report.as_deref(), args.html.as_deref())?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
            } else {
                print!("{}", report.render_checks());
            }
            Ok(report.status)
        }
        Command::Profile(args) => {
            let profile = if args.merge.is_empty() {
                let input = args.input.as_ref().expect("clap requires --input without --merge");
                let options = run_options(&job, args.threads, Vec::new(), args.device.to_string(), None);
                let (package, scores) = match &args.model {
                    Some(model) => (open_package(model, &args.device, false)?, true),
                    None => (columns_package(input)?, false),
                };
                let scores = scores && package.model.n_outputs() > 0;
                pipeline::profile(&package, &*input_table(input)?, scores, &options)?
            } else {
                merge_profiles(&args.merge)?
            };
            let json = profile.to_json();
            lakescore::util::write_atomically(&args.output, &json).map_err(|source| Error::Output {
                what: "profile",
                path: args.output.clone(),
                source,
            })?;
            eprintln!(
                "wrote the profile of {} rows, {} columns, to `{}` ({} bytes)",
                profile.rows,
                profile.columns.len(),
                args.output.display(),
                json.len()
            );
            Ok(RunStatus::Succeeded)
        }
        Command::Evaluate(args) => evaluate(&job, args),
        Command::Allocate(args) => allocate(&job, args),
        Command::Feedback(args) => feedback(args, cancel),
        Command::EvaluatePolicy(args) => evaluate_policy(args, cancel),
        Command::Runs(args) => {
            let runs = lakescore::runs::list(&args.output)?;
            let last = |default: usize| {
                let n = args.last.map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX));
                &runs[runs.len().saturating_sub(n)..]
            };
            if let Some(path) = &args.html {
                let shown = last(lakescore::runs::trend::DEFAULT_LAST);
                let page = lakescore::runs::trend::render(&args.output.to_string_lossy(), shown, runs.len());
                lakescore::util::write_atomically(path, page.as_bytes()).map_err(|source| Error::Output {
                    what: "trend page",
                    path: path.clone(),
                    source,
                })?;
                eprintln!(
                    "wrote the trend of the last {} of {} runs to `{}`",
                    shown.len(),
                    runs.len(),
                    path.display()
                );
            }
            let runs = last(usize::MAX);
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&runs).expect("ledger records serialize")
                );
            } else {
                print!("{}", lakescore::runs::render(runs));
            }
            Ok(RunStatus::Succeeded)
        }
        Command::Model(ModelCommand::Inspect(args)) => {
            let package = open_package(&args.model, &lakescore::device::DeviceSpec::Cpu, false)?;
            print!("{}", lakescore::package::describe(&package));
            Ok(RunStatus::Succeeded)
        }
        Command::Model(ModelCommand::Package(args)) => {
            if std::fs::read_dir(&args.output).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(Error::Usage(format!(
                    "`{}` exists and is not empty; `model package` writes a new folder",
                    args.output.display()
                )));
            }
            let names = (!args.feature_names.is_empty()).then(|| args.feature_names.clone());
            let bare = open_package_with(&args.model, &lakescore::device::DeviceSpec::Cpu, false, names)?;
            if bare.folder.is_some() {
                return Err(Error::Usage(format!(
                    "`{}` is already a package; `--model` takes a bare model file",
                    args.model.display()
                )));
            }
            let options = run_options(&job, args.threads, Vec::new(), "cpu".into(), None);
            let reference = pipeline::profile(
                &bare,
                &*input_table(&args.reference)?,
                bare.model.n_outputs() > 0,
                &options,
            )?;
            let manifest = package::starting_manifest(&bare, &args.model, args.name.clone(), &args.version, &reference);
            package::write(&args.output, &args.model, &manifest, Some(&reference))?;
            eprintln!(
                "wrote package `{}` ({} {}), reference of {} rows",
                args.output.display(),
                manifest.name,
                manifest.version,
                reference.rows
            );
            Ok(RunStatus::Succeeded)
        }
    }
}

/// `lakescore score`: the nightly job. Tells the observers (metrics, lineage)
/// that it began and how it ended, whatever the ending, except when another
/// run holds the output: that run's metrics, report and lineage are not this
/// one's to touch.
fn score_job(job: &Job, args: &ScoreArgs) -> Result<RunStatus, Error> {
    let (cli, identity) = (job.cli, job.identity.clone());
    let observers = observers_of(&args.monitoring, &args.output, job.cancel)?;
    let start = RunStart {
        identity: &identity,
        command: "score",
        input: &args.model_input.input,
        output: Some(&args.output),
    };
    let began = std::cell::Cell::new(false);
    let begin = || {
        observers.run_started(&start);
        began.set(true);
    };
    let failed = |error: Error, model: Option<&lakescore::model::ModelInfo>| -> Error {
        if matches!(error, Error::Locked(lakescore::lock::LockError::Held { .. })) {
            return error; // the holder's metrics, report and lineage
        }
        if !began.get() {
            begin(); // a run that failed before it began still starts, then fails
        }
        observers.run_ended(&RunEnd {
            start: start.clone(),
            finished_at: std::time::SystemTime::now(),
            status: error.run_status(),
            exit_code: exit_code::of_error(&error),
            error: Some(error_chain(&error)),
            model,
            report: None,
        });
        write_failure_report(args.report.as_deref(), &error);
        error
    };
    let tables = args
        .model_input
        .table()
        .and_then(|input| Ok((input, scores_table(&args.output, args.output_format.as_deref())?)));
    let (input, output) = match tables {
        Ok(tables) => tables,
        Err(error) => return Err(failed(error, None)),
    };
    let (package, mut options, comparison) = match load(&args.model_input, job, args.as_of, args.shadow) {
        Ok(loaded) => loaded,
        Err(error) => return Err(failed(error, None)),
    };
    options.sla = args.sla.sla();
    options.lock_wait = std::time::Duration::from_secs(args.lock_wait.unwrap_or(0));
    let model = package.model.info();
    let mut report = match pipeline::score(&package, input.as_ref(), output.as_ref(), args.mode, &options, &begin) {
        Ok(report) => report,
        Err(error) => return Err(failed(error, Some(model))),
    };
    report.comparison = comparison.map(|tap| tap.finish());
    if !began.get() {
        begin(); // rejected by a type rule before the transaction
    }
    let status = report.status;
    let mut exit_code = exit_code::of(status);
    let mut error =
        (status == RunStatus::Rejected).then(|| format!("rejected: {}", report.judgement.rejection_summary()));
    // The reports first, so that the metrics and lineage tell the exit code
    // the process ends with.
    let written = write_reports(&report, args.report.as_deref(), args.html.as_deref());
    if let Err(report_error) = &written {
        exit_code = exit_code::of_error(report_error);
        error = Some(error_chain(report_error));
    }
    let clock = std::time::Instant::now();
    observers.run_ended(&RunEnd {
        start: start.clone(),
        finished_at: std::time::SystemTime::now(),
        status,
        exit_code,
        error,
        model: Some(model),
        report: Some(&report),
    });
    // What monitoring costs, for benches/observability_overhead.sh.
    tracing::debug!(seconds = clock.elapsed().as_secs_f64(), "observers told");
    written?;
    match status {
        RunStatus::Rejected => {
            let why = report.judgement.rejection_summary();
            match cli.log_format {
                LogFormat::Text => eprintln!("rejected: nothing was published to `{}`: {why}", args.output.display()),
                LogFormat::Json => tracing::error!(exit_code, "rejected: nothing was published: {why}"),
            }
        }
        _ => {
            tracing::info!(
                rows = report.rows,
                quarantined = report.rows_quarantined,
                flagged = report.rows_flagged,
                seconds = format!("{:.3}", report.wall_seconds.total),
                output = %args.output.display(),
                "published"
            );
            warn_about(&report);
            if let Some(sla) = report.sla.as_ref().filter(|s| s.breached) {
                tracing::warn!(exit_code, "missed SLA: {}", sla.summary());
            }
        }
    }
    Ok(status)
}

/// `lakescore evaluate`: every model against the label, in one pass.
fn evaluate(job: &Job, args: &EvaluateArgs) -> Result<RunStatus, Error> {
    use lakescore::evaluate::{self, EvaluationReport, EvaluationTap, ModelEvaluation};
    if let Some(bad) = args.thresholds.iter().find(|t| !t.is_finite()) {
        return Err(Error::Usage(format!("`--threshold {bad}` is not a number")));
    }
    let options = run_options(job, args.threads, Vec::new(), args.device.to_string(), None);
    let packages = open_packages(&args.models, &args.device, false, job.cancel)?;
    let own_outputs = packages
        .iter()
        .map(|p| evaluate::positive_output(p.model.info(), p.model.n_outputs()).map_err(Error::Usage))
        .collect::<Result<Vec<usize>, Error>>()?;
    if args.log_to_mlflow
        && let Some(unregistered) = packages
            .iter()
            .find(|p| p.model.info().registry.as_ref().is_none_or(|r| r.run_id.is_none()))
    {
        return Err(Error::Usage(format!(
            "`--log-to-mlflow` logs to the MLflow run of each model: `{}` is not from the registry, or the \
             registry names no run that logged it (give it as `models:/NAME/VERSION`, `models:/NAME@ALIAS` \
             or `runs:/RUN_ID/PATH`)",
            unregistered.model.info().path.display()
        )));
    }
    let (compared, positives) = comparison_columns(&packages, false);
    let infos: Vec<_> = packages.iter().map(|p| p.model.info().clone()).collect();
    evaluate::check_label(&args.input, &args.label)?;
    let comparison = (packages.len() > 1).then(|| ComparisonTap::new(compared, positives.clone()));
    let tap = Arc::new(EvaluationTap::new(
        &args.label,
        positives.clone(),
        &args.thresholds,
        comparison,
    ));
    let label = evaluate::label_feature(&args.label);
    let set = package::combine(packages, vec![label], Some(tap.clone() as Arc<dyn ScoreTap>), false)?;
    logging::set_model(&tracing::Span::current(), &infos[0].name, infos[0].version.as_deref());
    let clock = std::time::Instant::now();
    let run = pipeline::score_only(&set, &*input_table(&args.input)?, "evaluate", &options)?;
    let (metrics, rows_unlabeled, comparison) = tap.finish();
    let wall_seconds = clock.elapsed().as_secs_f64();
    let report = EvaluationReport {
        command: "evaluate",
        lakescore_version: env!("CARGO_PKG_VERSION"),
        input: args.input.clone(),
        label: args.label.clone(),
        rows: run.rows,
        rows_unlabeled,
        models: infos
            .into_iter()
            .zip(metrics)
            .zip(own_outputs)
            .map(|((model, metrics), output)| ModelEvaluation { model, output, metrics })
            .collect(),
        comparison,
        wall_seconds,
        threads: run.threads,
    };
    evaluate::write_outputs(&report, args.report.as_deref(), args.html.as_deref())
        .map_err(|(what, path, source)| Error::Output { what, path, source })?;
    if args.log_to_mlflow {
        for evaluation in &report.models {
            let Some(registry) = &evaluation.model.registry else {
                continue;
            };
            let (metrics, tags) = evaluate::mlflow_metrics(&report, evaluation);
            let run = lakescore::mlflow::registry::log_to_run(registry, &metrics, &tags)?;
            eprintln!(
                "logged {} metrics of `{}` to MLflow run {run}",
                metrics.len(),
                registry.uri
            );
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
    } else {
        print!("{}", evaluate::render_table(&report));
    }
    Ok(RunStatus::Succeeded)
}

/// Reads a policy file.
fn read_policy(path: &std::path::Path) -> Result<lakescore::bandit::policy::PolicyFile, Error> {
    Ok(lakescore::bandit::policy::PolicyFile::read(path)?)
}

/// Prints a report (JSON or text) and writes it to `--report`.
fn present<T: serde::Serialize>(
    report: &T,
    path: Option<&std::path::Path>,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Error> {
    if let Some(path) = path {
        write_report(path, report)?;
    }
    match json {
        true => println!("{}", serde_json::to_string_pretty(report).expect("reports serialize")),
        false => print!("{}", text(report)),
    }
    Ok(())
}

/// `lakescore allocate`: one arm (or the holdout) per customer, published atomically.
fn allocate(job: &Job, args: &AllocateArgs) -> Result<RunStatus, Error> {
    use lakescore::campaign::allocate::{self, AllocateOptions, ArmModels};
    let policy = read_policy(&args.policy)?;
    let identity = job.identity.clone();
    logging::set_model(
        &tracing::Span::current(),
        &policy.policy.campaign,
        Some(&policy.policy.version.to_string()),
    );
    // The arms' models, named after their arms, as one set.
    let mut packages = Vec::new();
    let mut columns = Vec::new();
    for arm in &policy.policy.arms {
        match policy.model_path(arm) {
            Some(path) => {
                let mut package = open_package(&path, &args.device, false)?;
                if package.model.n_outputs() != 1 {
                    return Err(Error::Usage(format!(
                        "the model of arm `{}` (`{}`) writes {} scores; an arm's model writes one, its expected value",
                        arm.name,
                        path.display(),
                        package.model.n_outputs()
                    )));
                }
                package.model.info_mut().name = arm.name.clone();
                columns.push(Some(packages.len()));
                packages.push(package);
            }
            None => columns.push(None),
        }
    }
    let arm_models = match packages.is_empty() {
        true => None,
        false => Some(ArmModels {
            package: package::combine(packages, Vec::new(), None, false)?,
            columns,
        }),
    };
    let threads = match args.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let options = AllocateOptions {
        threads,
        cancel: job.cancel.clone(),
        mode: args.mode,
        identity,
    };
    let report = allocate::allocate(
        &policy,
        arm_models.as_ref(),
        &*input_table(&args.input)?,
        &*scores_table(&args.output, Some("parquet"))?,
        &options,
    )?;
    present(&report, args.report.as_deref(), args.json, |r| {
        let mut out = format!(
            "allocated {} customers of `{}` to {} arms of `{}` version {} ({} held out), {:.2} s\n",
            r.rows,
            r.input.display(),
            r.arms.len(),
            r.campaign,
            r.policy_version,
            r.holdout_rows,
            r.wall_seconds
        );
        for arm in &r.arms {
            out.push_str(&format!(
                "  {:<20} share {:.4} (best with probability {:.4})  {} customers ({:.4})\n",
                arm.name, arm.share, arm.probability_best, arm.rows, arm.realised_share
            ));
        }
        out
    })?;
    Ok(RunStatus::Succeeded)
}

/// `lakescore feedback`: the next version of a policy, from outcomes.
fn feedback(args: &FeedbackArgs, cancel: &CancelToken) -> Result<RunStatus, Error> {
    use lakescore::campaign::feedback::{self, OutcomeColumns};
    // Held until the next version is written: two updates take turns.
    let _lock = lakescore::bandit::policy::PolicyLock::acquire(&args.policy)?;
    let policy = read_policy(&args.policy)?;
    let columns = OutcomeColumns {
        id: args
            .columns
            .id_column
            .clone()
            .unwrap_or_else(|| policy.policy.id_column.clone()),
        arm: args.columns.arm_column.clone(),
        converted: args.columns.converted_column.clone(),
        timestamp: args.columns.timestamp_column.clone(),
    };
    let (next, mut report) =
        feedback::feedback(&policy, &args.outcomes, &columns, std::time::SystemTime::now(), cancel)?;
    let target = args.output.clone().unwrap_or_else(|| args.policy.clone());
    policy.write_next(&next, &target)?;
    report.written = target;
    present(&report, args.report.as_deref(), args.json, feedback::render)?;
    Ok(RunStatus::Succeeded)
}

/// `lakescore evaluate-policy`: a candidate policy, estimated off-policy.
fn evaluate_policy(args: &EvaluatePolicyArgs, cancel: &CancelToken) -> Result<RunStatus, Error> {
    use lakescore::campaign::off_policy;
    let policy = read_policy(&args.policy)?;
    let id_column = args
        .id_column
        .clone()
        .unwrap_or_else(|| policy.policy.id_column.clone());
    let report = off_policy::evaluate_policy(
        &policy,
        &args.assignments,
        &args.outcomes,
        &id_column,
        &args.converted_column,
        cancel,
    )?;
    present(&report, args.report.as_deref(), args.json, off_policy::render)?;
    Ok(RunStatus::Succeeded)
}

/// Where `score` sends metrics and lineage; refuses before the run what could
/// never work.
fn observers_of(args: &MonitoringArgs, output: &std::path::Path, cancel: &CancelToken) -> Result<Observers, Error> {
    let job = args.job_name.clone().unwrap_or_else(|| {
        let name = std::path::absolute(output)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "output".into());
        format!("score.{name}")
    });
    // Credentials come from the environment (see `observe::http::Auth`).
    let endpoint = |flag: &str, url: &Option<String>, auth: Option<Auth>| -> Result<Option<Endpoint>, Error> {
        let usage = |problem: String| Error::Usage(format!("`--{flag}`: {problem}"));
        url.as_deref()
            .map(|url| url.parse::<Endpoint>().and_then(|e| e.with_auth(auth)).map_err(usage))
            .transpose()
    };
    let pushgateway = endpoint(
        "pushgateway",
        &args.pushgateway,
        Auth::from_environment("LAKESCORE_PUSHGATEWAY", None),
    )?;
    let lineage_url = endpoint(
        "lineage-url",
        &args.lineage_url,
        Auth::from_environment("LAKESCORE_LINEAGE", Some("OPENLINEAGE_API_KEY")),
    )?;
    let lineage = (args.lineage_file.is_some() || lineage_url.is_some()).then(|| Lineage {
        file: args.lineage_file.clone(),
        url: lineage_url,
        namespace: args.lineage_namespace.clone(),
        job: job.clone(),
    });
    let observers = Observers {
        metrics_file: args.metrics_file.clone(),
        pushgateway,
        lineage,
        job,
        cancel: cancel.clone(),
    };
    observers.check().map_err(Error::Usage)?;
    Ok(observers)
}

/// Logs warnings the judgement raised on a published run.
fn warn_about(report: &RunReport) {
    use lakescore::drift::Status;
    if let Some(checks) = &report.judgement.checks {
        for rule in checks.rules.iter().filter(|r| r.status == Status::Warn) {
            tracing::warn!(rule = %rule.id, policy = %rule.policy, failing = rule.failing, "{}", rule.detail);
        }
    }
    if let Some(drift) = &report.judgement.drift {
        for column in drift.columns.iter().filter(|c| c.status == Status::Warn) {
            tracing::warn!(column = %column.name, psi = column.psi, js = column.js, "drift");
        }
    }
}

fn write_reports(
    report: &RunReport,
    json: Option<&std::path::Path>,
    html: Option<&std::path::Path>,
) -> Result<(), Error> {
    if let Some(path) = json {
        write_report(path, report)?;
    }
    if let Some(path) = html {
        let value = serde_json::to_value(report).expect("reports serialize");
        let page = lakescore::html::render(&value);
        lakescore::util::write_atomically(path, page.as_bytes()).map_err(|source| Error::Output {
            what: "HTML report",
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

fn merge_profiles(paths: &[PathBuf]) -> Result<lakescore::profile::TableProfile, Error> {
    let mut merged: Option<lakescore::profile::TableProfile> = None;
    for path in paths {
        let bytes = std::fs::read(path).map_err(|source| {
            Error::Package(lakescore::package::PackageError::Read {
                path: path.clone(),
                source,
            })
        })?;
        let profile = lakescore::profile::TableProfile::from_json(&bytes)
            .map_err(|problem| Error::Usage(format!("`{}` is not a lakescore profile: {problem}", path.display())))?;
        match merged.as_mut() {
            Some(merged) => merged.merge(&profile),
            None => merged = Some(profile),
        }
    }
    merged.ok_or_else(|| Error::Usage("`--merge` needs at least one profile".into()))
}

/// A package around the stand-in model of a table's numeric columns.
fn columns_package(input: &std::path::Path) -> Result<Package, Error> {
    let model = pipeline::TableColumns::of(&*input_table(input)?)?;
    let manifest = lakescore::package::Manifest::default();
    let contract =
        lakescore::contract::Contract::compile(&manifest, input, lakescore::model::Model::features(&model), 0, None)?;
    Ok(Package {
        model: Box::new(model),
        manifest,
        contract,
        folder: None,
        reference: None,
        // Writes nothing: profiles only.
        output_identity: String::new(),
        mlflow: None,
    })
}

fn open_package(path: &std::path::Path, device: &DeviceSpec, output_margin: bool) -> Result<Package, Error> {
    open_package_with(path, device, output_margin, None)
}

fn open_package_with(
    path: &std::path::Path,
    device: &DeviceSpec,
    output_margin: bool,
    feature_names: Option<Vec<String>>,
) -> Result<Package, Error> {
    let device = device.open()?;
    let load_options = lakescore::model::LoadOptions {
        output_margin,
        feature_names,
    };
    let text = path.to_string_lossy();
    if lakescore::mlflow::registry::is_model_uri(&text) {
        return open_registered(&text, &device, &load_options);
    }
    if !lakescore::store::is_remote(&text) {
        return Ok(package::open(path, &device, &load_options)?);
    }
    // A model on object storage is fetched into a folder of this process's
    // own, loaded (into memory), and the folder removed.
    let remote = lakescore::store::Remote::parse(&text)?;
    let models = std::env::temp_dir().join("lakescore-models");
    let local = lakescore::store::download_model(&remote, &models)?;
    let folder = match local.is_dir() {
        true => local.clone(),
        false => local
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_else(|| local.clone()),
    };
    let opened = package::open(&local, &device, &load_options);
    let _ = std::fs::remove_dir_all(&folder);
    let mut package = opened?;
    // Reports, lineage and the ledger name the model by its URL, not by the
    // folder it was fetched into and that is gone.
    let shown = |fetched: &std::path::Path| match (folder == local, fetched.strip_prefix(&local)) {
        (true, Ok(inside)) => path.join(inside),
        _ => path.to_path_buf(),
    };
    let info = package.model.info_mut();
    info.path = shown(&info.path);
    if package.manifest.artifact.is_absolute() {
        package.manifest.artifact = shown(&package.manifest.artifact);
    }
    if package.folder.is_some() {
        package.folder = Some(path.to_path_buf());
    }
    Ok(package)
}

/// A model from an MLflow registry (`models:/NAME/VERSION`,
/// `models:/NAME@ALIAS`, `runs:/RUN_ID/PATH`): fetched, opened, and named by
/// its registered name and version, with where it came from.
fn open_registered(
    uri: &str,
    device: &candle_core::Device,
    load_options: &lakescore::model::LoadOptions,
) -> Result<Package, Error> {
    let fetched = lakescore::mlflow::registry::fetch(uri)?;
    let mut package = package::open(&fetched.folder, device, load_options)?;
    let registry = fetched.registry;
    let info = package.model.info_mut();
    info.name = fetched.name;
    if registry.version.is_some() {
        info.version = registry.version.clone();
    }
    info.path = std::path::PathBuf::from(uri);
    info.registry = Some(registry);
    package.folder = Some(std::path::PathBuf::from(uri));
    Ok(package)
}

/// A command's context: its command line, its run's identity, and the
/// token SIGINT and SIGTERM trigger.
struct Job<'a> {
    cli: &'a Cli,
    identity: &'a RunIdentity,
    cancel: &'a CancelToken,
}

fn run_options(job: &Job, threads: usize, id_columns: Vec<String>, device: String, as_of: Option<i64>) -> RunOptions {
    let cli = job.cli;
    let progress = !cli.quiet && matches!(cli.log_format, LogFormat::Text);
    RunOptions {
        threads,
        id_columns: match id_columns.is_empty() {
            true => IdColumns::Default,
            false => IdColumns::Named(id_columns),
        },
        progress: progress
            .then(progress::Bar::for_terminal)
            .flatten()
            .map(|bar| Arc::new(bar) as Arc<dyn lakescore::progress::Progress>),
        cancel: job.cancel.clone(),
        device,
        as_of,
        identity: job.identity.clone(),
        sla: Sla::default(),
        shadow: false,
        lock_wait: std::time::Duration::ZERO,
    }
}

/// Opens the models of a run command and settles its options; every log
/// line from here on names the (champion) model. Several models become one
/// set, watched by the comparison the report carries.
fn load(
    args: &ModelInput,
    job: &Job,
    as_of: Option<i64>,
    shadow: bool,
) -> Result<(Package, RunOptions, Option<Arc<ComparisonTap>>), Error> {
    let mut options = run_options(
        job,
        args.threads,
        args.id_columns.clone(),
        args.device.to_string(),
        as_of,
    );
    let packages = open_packages(&args.models, &args.device, args.output_margin, job.cancel)?;
    if shadow && packages.len() < 2 {
        return Err(Error::Usage(
            "`--shadow` needs a challenger: give `--model` twice or more (the first is the champion)".into(),
        ));
    }
    let (package, comparison) = match packages.len() {
        1 => (packages.into_iter().next().expect("one"), None),
        _ => {
            let (compared, columns) = comparison_columns(&packages, shadow);
            let tap = Arc::new(ComparisonTap::new(compared, columns));
            let set = package::combine(packages, Vec::new(), Some(tap.clone() as Arc<dyn ScoreTap>), shadow)?;
            options.shadow = shadow;
            (set, Some(tap))
        }
    };
    let info = package.model.info();
    logging::set_model(&tracing::Span::current(), &info.name, info.version.as_deref());
    Ok((package, options, comparison))
}

/// What a comparison of `packages` watches: (model, column) per model, and
/// the position of each one's compared score among the set's outputs.
fn comparison_columns(packages: &[Package], champion_columns: bool) -> (Vec<(String, String)>, Vec<usize>) {
    package::compared_scores(packages, champion_columns)
        .into_iter()
        .map(|(model, column, position)| ((model, column), position))
        .unzip()
}

/// Opens every `--model`, or stops within a moment of a stop request:
/// parsing a large model has nowhere to look at the token, so the models
/// load on a thread of their own while this one watches the token. Nothing
/// is written yet; a stopped load is left to end with the process.
fn open_packages(
    models: &[PathBuf],
    device: &DeviceSpec,
    output_margin: bool,
    cancel: &CancelToken,
) -> Result<Vec<Package>, Error> {
    let (models, device) = (models.to_vec(), *device);
    let (sender, loaded) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("lakescore-load".into())
        .spawn(move || {
            let packages = models
                .iter()
                .map(|model| {
                    lakescore::test_hooks::before_load();
                    open_package(model, &device, output_margin)
                })
                .collect::<Result<Vec<Package>, Error>>();
            let _ = sender.send(packages);
        })
        .map_err(|error| Error::Internal(format!("cannot start the thread that loads models: {error}")))?;
    loop {
        match loaded.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(packages) => return packages.map(told_apart),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => cancel.check()?,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(Error::Internal("the thread that loads models panicked".into()));
            }
        }
    }
}

/// Models of one run that share a registered name (`models:/churn@champion
/// --model models:/churn@challenger`) are told apart by their alias, else
/// their version (`churn_challenger`, `churn_v7`): each writes a column of
/// its own name. The registry's own name stays in `registry.name`.
fn told_apart(mut packages: Vec<Package>) -> Vec<Package> {
    let names: Vec<String> = packages.iter().map(|p| p.model.info().name.clone()).collect();
    for (i, package) in packages.iter_mut().enumerate() {
        let info = package.model.info_mut();
        let shared = names.iter().filter(|n| **n == names[i]).count() > 1;
        if let (true, Some(registry)) = (shared, &info.registry) {
            let suffix = match (&registry.alias, &registry.version) {
                (Some(alias), _) => alias.clone(),
                (None, Some(version)) => format!("v{version}"),
                (None, None) => continue,
            };
            info.name = format!("{}_{suffix}", info.name);
        }
    }
    packages
}

/// `--report` of a failed run; the run's error matters more than the
/// report's, which is only logged.
fn write_failure_report(path: Option<&std::path::Path>, error: &Error) {
    if let Some(path) = path
        && let Err(report_error) = write_report(path, &FailureReport::new(error, exit_code::of_error(error)))
    {
        tracing::warn!(error = %report_error, "cannot write the failure report");
    }
}

fn write_report(path: &std::path::Path, report: &impl serde::Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(report).expect("reports serialize");
    lakescore::util::write_atomically(path, &bytes).map_err(|source| Error::Output {
        what: "report",
        path: path.to_path_buf(),
        source,
    })
}

/// The input table `path` names: a URL on object storage (`s3://`, `az://`,
/// `gs://`), or a local file or folder, memory-mapped.
fn input_table(path: &std::path::Path) -> Result<Box<dyn lakescore::source::TableSource>, Error> {
    input_table_at(path, TableVersion::Latest)
}

impl ModelInput {
    /// The input table, at the version `--input-version` or `--input-as-of`
    /// names.
    fn table(&self) -> Result<Box<dyn lakescore::source::TableSource>, Error> {
        let version = match (self.input_version, self.input_as_of) {
            (Some(version), _) => TableVersion::At(version),
            (None, Some(instant)) => TableVersion::AsOf(instant),
            (None, None) => TableVersion::Latest,
        };
        input_table_at(&self.input, version)
    }
}

/// The input table `path` names: a Delta table (a folder holding
/// `_delta_log/`), a URL on object storage, or a local file or folder.
fn input_table_at(
    path: &std::path::Path,
    version: TableVersion,
) -> Result<Box<dyn lakescore::source::TableSource>, Error> {
    let text = path.to_string_lossy();
    let remote = match lakescore::store::is_remote(&text) {
        true => Some(lakescore::store::Remote::parse(&text)?),
        false => None,
    };
    if lakescore::source::is_delta_table(path, remote.as_ref()).map_err(lakescore::scan::ScanError::from)? {
        return delta_table(path, remote, version);
    }
    if version != TableVersion::Latest {
        return Err(Error::Usage(format!(
            "`--input-version` and `--input-as-of` read a Delta table's history, and `{}` is not a Delta table (no `_delta_log/`)",
            path.display()
        )));
    }
    match remote {
        Some(remote) => Ok(Box::new(lakescore::source::ObjectTable::new(remote))),
        None => Ok(Box::new(local_table(path))),
    }
}

#[cfg(feature = "delta")]
fn delta_table(
    path: &std::path::Path,
    remote: Option<lakescore::store::Remote>,
    version: TableVersion,
) -> Result<Box<dyn lakescore::source::TableSource>, Error> {
    use lakescore::source::delta::DeltaTable;
    let table = match remote {
        Some(remote) => DeltaTable::open_remote(remote, version).map_err(lakescore::scan::ScanError::from)?,
        // SAFETY: as for `local_table`: Delta data files are never rewritten
        // in place.
        None => DeltaTable::open_local(path, version, unsafe { MmapChoice::auto() })
            .map_err(lakescore::scan::ScanError::from)?,
    };
    tracing::info!(input = %path.display(), version = table.version(), "reading a Delta table");
    Ok(Box::new(table))
}

#[cfg(not(feature = "delta"))]
fn delta_table(
    path: &std::path::Path,
    _remote: Option<lakescore::store::Remote>,
    _version: TableVersion,
) -> Result<Box<dyn lakescore::source::TableSource>, Error> {
    Err(Error::Usage(format!(
        "`{}` is a Delta table, and this lakescore was built without the `delta` feature",
        path.display()
    )))
}

/// The output table `path` names (a URL on object storage, or a local
/// folder), as a Delta table when `format` says so or (no format given)
/// when it already is one.
fn scores_table(
    path: &std::path::Path,
    format: Option<&str>,
) -> Result<Box<dyn lakescore::commit::OutputTable>, Error> {
    let text = path.to_string_lossy();
    let remote = match lakescore::store::is_remote(&text) {
        true => Some(lakescore::store::Remote::parse(&text)?),
        false => None,
    };
    #[cfg(feature = "delta")]
    {
        use lakescore::commit::delta::{DeltaOutput, TableStore};
        let table = match &remote {
            Some(remote) => TableStore::Remote(remote.clone()),
            None => TableStore::Local(path.to_path_buf()),
        };
        let is_delta = DeltaOutput::exists(&table)?;
        match (format, is_delta) {
            (Some("delta"), _) | (None, true) => return Ok(Box::new(DeltaOutput::new(table))),
            (Some(_), true) => {
                return Err(Error::Usage(format!(
                    "`{}` is a Delta table: Parquet files written into it would be invisible to its readers; \
                     drop `--output-format parquet`, or write elsewhere",
                    path.display()
                )));
            }
            _ => {}
        }
    }
    #[cfg(not(feature = "delta"))]
    if format == Some("delta") {
        return Err(Error::Usage(
            "`--output-format delta` needs the `delta` feature, which this lakescore was built without".into(),
        ));
    }
    Ok(match remote {
        Some(remote) => Box::new(lakescore::commit::ObjectOutput::new(remote)),
        None => Box::new(LocalOutput::new(path)),
    })
}

/// A local input table, memory-mapped.
fn local_table(path: &std::path::Path) -> LocalTable {
    // SAFETY: lake files are written once and replaced, never rewritten in
    // place, while a run reads them: the README's "Input data" makes this
    // the user's side of the contract. Should one change all the same, the
    // run fails naming it: a truncation is caught by the mapping's guard, a
    // rewrite by the check of sizes, times and footers before publishing.
    LocalTable::new(path, unsafe { MmapChoice::auto() })
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    logging::init(cli.log_format, level);
}
