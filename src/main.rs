//! The `lakescore` binary: parse the command line, call the library, print
//! errors, and exit with the documented code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lakescore::commit::WriteMode;
use lakescore::device::DeviceSpec;
use lakescore::error::{Error, exit_code};
use lakescore::pipeline::{self, RunOptions};
use lakescore::plan::IdColumns;
use lakescore::report::FailureReport;

// Arrow decoding allocates and frees row-group-sized buffers all the time;
// mimalloc reuses them where glibc keeps returning them to the kernel.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXIT_CODES: &str = "\
Exit codes:
  0  done: the output is published
  1  failed: nothing was half-published (bad input, bad model, I/O error)
  2  usage: the command line cannot be used as given
  3  a data contract or guard said no: nothing was published";

#[derive(Parser)]
#[command(
    name = "lakescore",
    version,
    about = "Score Parquet tables in a data lake with ML models, committed atomically"
)]
#[command(after_help = EXIT_CODES)]
struct Cli {
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log line format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Score a table and publish the scores atomically.
    #[command(after_help = EXIT_CODES)]
    Score(ScoreArgs),
    /// Time the whole pipeline on a table, per stage.
    #[command(after_help = EXIT_CODES)]
    Bench(BenchArgs),
}

#[derive(Args)]
struct ModelInput {
    /// Model file; its format is detected from its content.
    #[arg(long, value_name = "M")]
    model: PathBuf,
    /// A Parquet file or a folder (Hive `k=v/` partitions welcome).
    #[arg(long, value_name = "IN")]
    input: PathBuf,
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
    /// Write a JSON run report to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
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
}

fn parse_device(text: &str) -> Result<DeviceSpec, String> {
    text.parse().map_err(|e: lakescore::device::DeviceError| e.to_string())
}

fn parse_mode(text: &str) -> Result<WriteMode, String> {
    text.parse()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(&cli) {
        Ok(()) => ExitCode::from(exit_code::DONE as u8),
        Err(error) => {
            eprintln!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                eprintln!("  Caused by: {cause}");
                source = cause.source();
            }
            ExitCode::from(error.exit_code() as u8)
        }
    }
}

fn run(cli: &Cli) -> Result<(), Error> {
    match &cli.command {
        Command::Score(args) => {
            let outcome = load(&args.model_input, cli).and_then(|(model, options)| {
                pipeline::score(
                    model.as_ref(),
                    &args.model_input.input,
                    &args.output,
                    args.mode,
                    &options,
                )
            });
            let report = match outcome {
                Ok(report) => report,
                Err(error) => {
                    if let Some(path) = &args.report {
                        // The run's error matters more than the report's.
                        if let Err(report_error) = write_report(path, &FailureReport::new(&error)) {
                            tracing::warn!(error = %report_error, "cannot write the failure report");
                        }
                    }
                    return Err(error);
                }
            };
            tracing::info!(
                rows = report.rows,
                seconds = format!("{:.3}", report.wall_seconds.total),
                output = %args.output.display(),
                "published"
            );
            if let Some(path) = &args.report {
                write_report(path, &report)?;
            }
            Ok(())
        }
        Command::Bench(args) => {
            let (model, options) = load(&args.model_input, cli)?;
            let report = pipeline::bench(model.as_ref(), &args.model_input.input, !args.no_write, &options)?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
            } else {
                print!("{}", report.render_table());
            }
            Ok(())
        }
    }
}

fn load(args: &ModelInput, cli: &Cli) -> Result<(Box<dyn lakescore::model::Model>, RunOptions), Error> {
    let device = args.device.open()?;
    let load_options = lakescore::model::LoadOptions {
        output_margin: args.output_margin,
    };
    let model = lakescore::model::load(&args.model, &device, &load_options)?;
    let id_columns = match args.id_columns.is_empty() {
        true => IdColumns::Default,
        false => IdColumns::Named(args.id_columns.clone()),
    };
    let options = RunOptions {
        threads: args.threads,
        id_columns,
        progress: !cli.quiet,
        device: args.device.to_string(),
    };
    Ok((model, options))
}

fn write_report(path: &std::path::Path, report: &impl serde::Serialize) -> Result<(), Error> {
    let bytes = serde_json::to_vec_pretty(report).expect("reports serialize");
    lakescore::util::write_atomically(path, &bytes).map_err(|source| Error::Output {
        what: "report",
        path: path.to_path_buf(),
        source,
    })
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("LAKESCORE_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
