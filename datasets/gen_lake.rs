//! `gen-lake`: writes a synthetic, Hive-partitioned customer table. Seeded and
//! deterministic; see datasets/README.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use lakescore::datagen::{LakeSpec, generate_lake};

#[derive(Parser)]
#[command(
    name = "gen-lake",
    about = "Write a synthetic customer table: OUT/dt=<date>/part-NNNNN.parquet"
)]
struct Args {
    /// Output folder.
    out: PathBuf,
    /// Rows in all.
    #[arg(long)]
    rows: u64,
    /// Files per partition.
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Rows per row group.
    #[arg(long, default_value_t = 131_072)]
    row_group: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Add the `converted` label column (for training and evaluation).
    #[arg(long)]
    label: bool,
    /// `dt=` partitions, comma-separated dates.
    #[arg(long, value_delimiter = ',', default_value = "2026-11-25")]
    dates: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let spec = LakeSpec {
        rows: args.rows,
        files: args.files,
        row_group_rows: args.row_group,
        seed: args.seed,
        label: args.label,
        dates: args.dates,
    };
    let clock = Instant::now();
    match generate_lake(&args.out, &spec) {
        Ok(files) => {
            eprintln!(
                "wrote {} rows in {} files in {:.1} s",
                args.rows,
                files.len(),
                clock.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(cause) = std::error::Error::source(&error) {
                eprintln!("  Caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
