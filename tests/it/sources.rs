//! Table sources (`lakescore::source`): a table read without memory mapping,
//! through byte-range reads as a remote source reads it, scores to the same
//! bytes as the mapped table the command line reads; the footer takes one
//! read and each row group one request.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

use lakescore::commit::{LocalOutput, WriteMode};
use lakescore::model::LoadOptions;
use lakescore::pipeline::{self, RunOptions};
use lakescore::source::{DataFile, FileBytes, LocalTable, MmapChoice, SourceError, TableSource};

use crate::common::*;

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sample")
}

fn open(model: &Path) -> lakescore::package::Package {
    lakescore::package::open(model, &candle_core::Device::Cpu, &LoadOptions::default()).unwrap()
}

/// Every file under `dir` (data and bookkeeping alike), with its bytes, but
/// for the files that name the run (ledger, manifest, profiles, reports).
fn data_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    parquet_files(dir)
        .into_iter()
        .map(|relative| {
            let bytes = std::fs::read(dir.join(&relative)).unwrap();
            (relative, bytes)
        })
        .collect()
}

#[test]
fn a_table_read_without_mapping_scores_to_the_cli_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let lake = sample().join("customers");
    // The package copies the id column's chunks from the input: through the
    // fetched chunks here, from the mapping on the command line.
    for model in ["package", "xgb.ubj"] {
        let model = sample().join(model);
        let cli = dir
            .path()
            .join(format!("cli-{}", model.file_name().unwrap().to_string_lossy()));
        score(&model, &lake, &cli, &[]).assert_ok();
        let read = dir
            .path()
            .join(format!("read-{}", model.file_name().unwrap().to_string_lossy()));
        let table = LocalTable::new(&lake, MmapChoice::never());
        pipeline::score(
            &open(&model),
            &table,
            &LocalOutput::new(&read),
            WriteMode::ErrorIfExists,
            &RunOptions::default(),
            &|| {},
        )
        .expect("scores");
        let (ours, theirs) = (data_bytes(&read), data_bytes(&cli));
        assert_eq!(ours.len(), 4);
        assert_eq!(
            ours.iter().map(|(p, _)| p).collect::<Vec<_>>(),
            theirs.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        for ((path, a), (_, b)) in ours.iter().zip(&theirs) {
            assert!(
                a == b,
                "{}: {} bytes read, {} bytes mapped",
                path.display(),
                a.len(),
                b.len()
            );
        }
    }
}

/// Counts what a run asks of each file.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn FileBytes>,
    suffixes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl FileBytes for Counting {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn suffix(&self, n: u64) -> std::io::Result<Bytes> {
        self.suffixes.fetch_add(1, Ordering::SeqCst);
        self.inner.suffix(n)
    }
    fn ranges(&self, ranges: &[Range<u64>]) -> std::io::Result<Vec<Bytes>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.ranges(ranges)
    }
}

struct CountingTable {
    inner: LocalTable,
    suffixes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl TableSource for CountingTable {
    fn location(&self) -> &Path {
        self.inner.location()
    }
    fn list(&self) -> Result<Vec<DataFile>, SourceError> {
        self.inner.list()
    }
    fn open(&self, file: &DataFile) -> Result<Arc<dyn FileBytes>, SourceError> {
        Ok(Arc::new(Counting {
            inner: self.inner.open(file)?,
            suffixes: Arc::clone(&self.suffixes),
            requests: Arc::clone(&self.requests),
        }))
    }
}

#[test]
fn the_footer_takes_one_read_and_each_row_group_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(
        &dir.path().join("lake"),
        12_000,
        3,
        1_000,
        &["2026-11-24", "2026-11-25"],
    );
    let table = CountingTable {
        inner: LocalTable::new(&lake, MmapChoice::never()),
        suffixes: Arc::default(),
        requests: Arc::default(),
    };
    let files = table.list().unwrap();
    assert_eq!(files.len(), 6);
    assert!(files.iter().all(|f| f.partition_values[0].0 == "dt"));
    let model = linear_model(dir.path(), "m.json", logistic_model_body(None));
    let out = dir.path().join("out");
    pipeline::score(
        &open(&model),
        &table,
        &LocalOutput::new(&out),
        WriteMode::ErrorIfExists,
        &RunOptions::default(),
        &|| {},
    )
    .expect("scores");
    // One suffix read per file to plan (the footers are far below the
    // hint) and one before publishing, to check it is unchanged; and one
    // request per row group: every projected chunk of it at once.
    assert_eq!(table.suffixes.load(Ordering::SeqCst), 2 * 6);
    assert_eq!(table.requests.load(Ordering::SeqCst), 12);
    assert_eq!(parquet_files(&out).len(), 6);
}

#[test]
fn a_large_footer_takes_a_second_read() {
    // A footer beyond the first read's hint: 400 columns, 40 row groups.
    let dir = tempfile::tempdir().unwrap();
    let fields: Vec<arrow::datatypes::Field> = (0..400)
        .map(|i| {
            arrow::datatypes::Field::new(
                format!("a_rather_long_column_name_{i:03}"),
                arrow::datatypes::DataType::Int64,
                true,
            )
        })
        .collect();
    let schema = Arc::new(arrow::datatypes::Schema::new(fields));
    let columns: Vec<arrow::array::ArrayRef> = (0..400)
        .map(|i| Arc::new(arrow::array::Int64Array::from_iter_values((0..400).map(|r| r * i))) as _)
        .collect();
    let batch = arrow::array::RecordBatch::try_new(schema, columns).unwrap();
    let path = dir.path().join("wide.parquet");
    write_parquet(&path, &[batch], 10);
    let footer_len = {
        let bytes = std::fs::read(&path).unwrap();
        u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as u64
    };
    assert!(
        footer_len > lakescore::scan::FOOTER_READ_HINT,
        "footer of {footer_len} bytes"
    );
    let suffixes = Arc::new(AtomicUsize::new(0));
    let data = Arc::new(Counting {
        inner: LocalTable::open_file(&path, MmapChoice::never()).unwrap(),
        suffixes: Arc::clone(&suffixes),
        requests: Arc::default(),
    });
    let file = lakescore::scan::ParquetFile::read(&path, data).unwrap();
    assert_eq!(file.num_row_groups(), 40);
    assert_eq!(suffixes.load(Ordering::SeqCst), 2);
    // The same footer as the mapped file's.
    // SAFETY: nothing writes the file while the test reads it.
    let mapped = LocalTable::open_file(&path, unsafe { MmapChoice::auto() }).unwrap();
    let mapped = lakescore::scan::ParquetFile::read(&path, mapped).unwrap();
    assert_eq!(file.footer_fingerprint, mapped.footer_fingerprint);
}

#[test]
fn a_read_of_chunks_nobody_readied_is_an_error_not_a_fetch() {
    let dir = tempfile::tempdir().unwrap();
    let lake = customer_lake(&dir.path().join("lake"), 2_000, 1, 1_000, &["2026-11-24"]);
    let path = lake.join(&parquet_files(&lake)[0]);
    let data = LocalTable::open_file(&path, MmapChoice::never()).unwrap();
    let file = lakescore::scan::ParquetFile::read(&path, data).unwrap();
    let projection = parquet::arrow::ProjectionMask::roots(file.metadata.parquet_schema(), [0]);
    // Read through the one entry point that readies the chunks: fine.
    assert_eq!(file.read_columns(0, &projection).unwrap().num_rows(), 1_000);
    // Past a reader of our own that forgot to: an error naming the bug.
    let error = file
        .read_row_group(1, &projection, 1_000)
        .and_then(|mut batches| batches.read(1_000))
        .map(|_| ())
        .unwrap_err();
    assert!(
        lakescore::error::error_chain(&error).contains("before their row group was readied"),
        "{}",
        lakescore::error::error_chain(&error)
    );
}
