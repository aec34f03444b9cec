//! The arrow-rs I/O floor of the side-by-side benchmark: read the id column
//! and the model's 34 feature columns of every row group (files memory-mapped,
//! rayon over row groups), write `customer_id` plus a constant Float32 `score`,
//! one output file per input file, snappy. No scoring, no staging, no commit:
//! what any pipeline of this shape costs at least in arrow-rs.
//!
//! usage: cargo run --release --example io_floor -- IN OUT

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ParquetRecordBatchReaderBuilder};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (input, output) = (PathBuf::from(&args[1]), PathBuf::from(&args[2]));
    let mut files = Vec::new();
    collect(&input, &mut files);
    files.sort();
    let mut wanted = lakescore::datagen::benchmark_features();
    wanted.push("customer_id".into());
    let started = std::time::Instant::now();
    let rows: usize = files
        .iter()
        .map(|f| copy_file(f, &output.join(f.strip_prefix(&input).unwrap()), &wanted))
        .sum();
    eprintln!("io_floor: {rows} rows in {:.3} s", started.elapsed().as_secs_f64());
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "parquet") {
            files.push(path);
        }
    }
}

fn copy_file(input: &Path, output: &Path, wanted: &[String]) -> usize {
    let file = File::open(input).unwrap();
    let mmap = unsafe { memmap2::Mmap::map(&file) }.unwrap();
    let bytes = Bytes::from_owner(mmap);
    let metadata = ArrowReaderMetadata::load(&bytes, Default::default()).unwrap();
    let schema = metadata.schema().clone();
    let roots: Vec<usize> = wanted.iter().map(|c| schema.index_of(c).unwrap()).collect();
    let mask = ProjectionMask::roots(metadata.parquet_schema(), roots);
    let n_groups = metadata.metadata().num_row_groups();
    let batches: Vec<RecordBatch> = (0..n_groups)
        .into_par_iter()
        .map(|rg| {
            let rows = metadata.metadata().row_group(rg).num_rows() as usize;
            let mut reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                .with_row_groups(vec![rg])
                .with_projection(mask.clone())
                .with_batch_size(rows)
                .build()
                .unwrap();
            let batch = reader.next().unwrap().unwrap();
            let id = batch.column(batch.schema().index_of("customer_id").unwrap()).clone();
            let score: ArrayRef = Arc::new(Float32Array::from(vec![0.5f32; rows]));
            RecordBatch::try_new(out_schema(), vec![id, score]).unwrap()
        })
        .collect();
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut writer = ArrowWriter::try_new(File::create(output).unwrap(), out_schema(), Some(props)).unwrap();
    let mut rows = 0;
    for batch in &batches {
        rows += batch.num_rows();
        writer.write(batch).unwrap();
        writer.flush().unwrap();
    }
    writer.close().unwrap();
    rows
}

fn out_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Int64, true),
        Field::new("score", DataType::Float32, false),
    ]))
}
