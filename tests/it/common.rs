//! Helpers: run the binary, write and read Parquet, make models, snapshot
//! folders.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::DataType;
use lakescore::datagen::{LakeSpec, generate_lake};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

/// One numeric test body for every device, as candle's `test_device!`:
/// `test_device!(body, cpu_test, cuda_test)` makes `cpu_test`, which runs
/// `body("cpu")`, and, built with the `cuda` feature, `cuda_test`, which
/// runs `body("cuda")` when a GPU is present ([`gpu_present`]).
macro_rules! test_device {
    ($body:ident, $cpu:ident, $cuda:ident) => {
        #[test]
        fn $cpu() {
            $body("cpu");
        }

        #[cfg(feature = "cuda")]
        #[test]
        fn $cuda() {
            if $crate::common::gpu_present() {
                $body("cuda");
            }
        }
    };
}
pub(crate) use test_device;

/// Whether a CUDA GPU opens ([`lakescore::device::gpu_for_tests`]: without
/// one a CUDA twin passes with a note, unless `LAKESCORE_TEST_REQUIRE_GPU`
/// is set).
#[cfg(feature = "cuda")]
pub fn gpu_present() -> bool {
    lakescore::device::gpu_for_tests().is_some()
}

/// The candle device a `--device` name opens.
pub fn open_device(name: &str) -> candle_core::Device {
    name.parse::<lakescore::device::DeviceSpec>()
        .and_then(|spec| spec.open())
        .unwrap_or_else(|error| panic!("device `{name}`: {error}"))
}

/// What a run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, got:\n{}", self.stderr);
        self
    }

    /// The `error:` line and its `Caused by:` lines, without log lines.
    pub fn error_lines(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with("error: ") || l.starts_with("  Caused by: "))
            .map(str::to_string)
            .collect()
    }
}

/// Whether the tests run under CI (`CI` set to anything but empty or
/// `false`), where tests that need an outside tool must not skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| !value.is_empty() && value != "false")
}

pub fn lakescore<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    lakescore_with_env(args, &[])
}

pub fn lakescore_with_env<I, S>(args: I, env: &[(&str, &str)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_lakescore"));
    command.args(args).env_remove("LAKESCORE_LOG");
    for (key, value) in env {
        command.env(key, value);
    }
    let output = run_with_deadline(command, std::time::Duration::from_secs(300));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs the command to its end; a run that outlives `deadline` is killed and
/// fails the test (a hang is a bug to report, not to wait for).
fn run_with_deadline(mut command: Command, deadline: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the lakescore binary runs");
    // Drain the pipes on threads so that a chatty child cannot block on them.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut buffer).map(|_| buffer)
    });
    let err = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut buffer).map(|_| buffer)
    });
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("lakescore ran longer than {deadline:?}: {command:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

/// `lakescore score --model M --input IN --output OUT` plus `extra`.
pub fn score(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Run {
    lakescore(score_args(model, input, output, extra))
}

/// The arguments of [`score`], for runs that need an environment.
pub fn score_args(model: &Path, input: &Path, output: &Path, extra: &[&str]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "score".into(),
        "--model".into(),
        model.into(),
        "--input".into(),
        input.into(),
        "--output".into(),
        output.into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    args
}

/// `lakescore model package`: `bare` with the profile of `reference`, into
/// `folder`, plus `extra` arguments (`--name`, `--version`).
pub fn model_package(bare: &Path, reference: &Path, folder: &Path, extra: &[&str]) {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "model".as_ref(),
        "package".as_ref(),
        "--model".as_ref(),
        bare.as_os_str(),
        "--reference".as_ref(),
        reference.as_os_str(),
        "--output".as_ref(),
        folder.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    lakescore(args).assert_ok();
}

/// A generated customer lake of `rows` rows under `dir`.
pub fn customer_lake(dir: &Path, rows: u64, files: usize, row_group_rows: usize, dates: &[&str]) -> PathBuf {
    let spec = LakeSpec {
        rows,
        files,
        row_group_rows,
        seed: 11,
        label: false,
        dates: dates.iter().map(|d| d.to_string()).collect(),
    };
    generate_lake(dir, &spec).expect("the generator writes the lake");
    dir.to_path_buf()
}

/// Writes a linear model file and returns its path.
pub fn linear_model(dir: &Path, name: &str, body: serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&body).unwrap()).unwrap();
    path
}

pub fn write_parquet(path: &Path, batches: &[RecordBatch], row_group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), batches[0].schema(), Some(properties)).unwrap();
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

/// The whole file as one batch (schema kept even with no rows).
pub fn read_parquet(path: &Path) -> RecordBatch {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<RecordBatch> = builder.build().unwrap().collect::<Result<_, _>>().unwrap();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

pub fn row_group_sizes(path: &Path) -> Vec<i64> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    builder.metadata().row_groups().iter().map(|rg| rg.num_rows()).collect()
}

pub fn column_f64(batch: &RecordBatch, name: &str) -> Vec<Option<f64>> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    let as_f64 = arrow::compute::cast(column, &DataType::Float64).unwrap();
    let values = as_f64.as_any().downcast_ref::<Float64Array>().unwrap();
    (0..values.len())
        .map(|i| values.is_valid(i).then(|| values.value(i)))
        .collect()
}

pub fn scores(batch: &RecordBatch, name: &str) -> Vec<f32> {
    let column = batch.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
    column
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("scores are Float32")
        .values()
        .to_vec()
}

pub fn ids(batch: &RecordBatch) -> Vec<i64> {
    int64_column(batch, "customer_id")
}

pub fn int64_column(batch: &RecordBatch, name: &str) -> Vec<i64> {
    batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

/// Every file under `dir` with its bytes, by relative path.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    if dir.exists() {
        collect(dir, dir, &mut files);
    }
    files
}

fn collect(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.insert(path.strip_prefix(root).unwrap().join(""), Vec::new());
            collect(root, &path, files);
        } else {
            files.insert(
                path.strip_prefix(root).unwrap().to_path_buf(),
                std::fs::read(&path).unwrap(),
            );
        }
    }
}

/// The published view of an output table: data files and the manifest, not
/// lakescore's bookkeeping under `_lakescore/`.
pub fn published(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, _)| !path.starts_with("_lakescore"))
        .collect()
}

/// Data files only (no manifest), for byte-for-byte comparisons of runs.
pub fn data_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    published(dir)
        .into_iter()
        .filter(|(path, bytes)| path.as_os_str() != "_SUCCESS" && !bytes.is_empty())
        .collect()
}

/// The relative paths of the Parquet files under `dir`.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet") && !p.starts_with("_lakescore"))
        .collect()
}

pub fn array(values: Vec<f64>) -> ArrayRef {
    Arc::new(Float64Array::from(values))
}

/// The benchmark's 34 features with small made-up weights.
pub fn logistic_model_body(fill: Option<Vec<f64>>) -> serde_json::Value {
    let features = lakescore::datagen::benchmark_features();
    let weights: Vec<f64> = (0..features.len()).map(|j| ((j as f64) * 0.37).sin() * 0.05).collect();
    let mut body = serde_json::json!({
        "format": "linear", "name": "propensity", "version": "7",
        "features": features, "weights": weights, "intercept": -0.75, "link": "logistic",
    });
    if let Some(fill) = fill {
        body["fill"] = serde_json::json!(fill);
    }
    body
}

/// Where one column chunk of one row group lies in a file: (start, length).
pub fn chunk_range(path: &Path, row_group: usize, column: &str) -> (usize, usize) {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
    let metadata = reader.metadata().row_group(row_group);
    let chunk = metadata
        .columns()
        .iter()
        .find(|c| c.column_path().string() == column)
        .unwrap();
    let (start, len) = chunk.byte_range();
    (start as usize, len as usize)
}

/// `score = weight * x + intercept`, for tables with a column `x`.
pub fn model_of_x(dir: &Path, weight: f64, intercept: f64) -> PathBuf {
    let body = serde_json::json!({"format": "linear", "features": ["x"], "weights": [weight], "intercept": intercept});
    linear_model(dir, "x.json", body)
}

/// A `lakescore score` in the background, slowed down by a test hook so that
/// it is still running when the test acts.
pub fn slow_run(model: &Path, lake: &Path, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lakescore"))
        .args(score_args(model, lake, out, &[&["--threads", "1"], extra].concat()))
        .env(lakescore::test_hooks::ROW_GROUP_DELAY_MS, "150")
        .env_remove("LAKESCORE_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until `path` exists (the run got that far).
pub fn wait_for(path: &Path) {
    let started = Instant::now();
    while !path.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A file or folder of the sample data in `datasets/sample`.
pub fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample").join(name)
}

/// Every Parquet file under `out` with its rows, by relative path.
pub fn parquet_rows(out: &Path) -> Vec<(PathBuf, RecordBatch)> {
    parquet_files(out)
        .into_iter()
        .map(|relative| {
            let batch = read_parquet(&out.join(&relative));
            (relative, batch)
        })
        .collect()
}

/// Copies the folder `from`, and everything below it, to `to`.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        match entry.file_type().unwrap().is_dir() {
            true => copy_tree(&entry.path(), &target),
            false => {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
}
