//! Scan and features stages, in rows per second, on one 131,072-row row group
//! of the generated customer table, memory-mapped:
//! - decoding the benchmark model's 34 feature columns through Arrow arrays
//!   (the general path) and through leaf readers (the fast path the pipeline
//!   uses for plain numeric columns),
//! - turning leaf-reader batches into f64 feature blocks,
//! - checking and profiling such a block as a scoring run does: every
//!   feature's moments and sketch, with a package's starting contract (a null
//!   or null-share rule and a range rule per feature) and without rules.
//!
//! cargo bench --bench scan

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::path::Path;

use lakescore::contract::{Contract, RowMarks};
use lakescore::datagen::{LakeSpec, benchmark_features, generate_lake};
use lakescore::features::{self, FeatureSource};
use lakescore::model::Feature;
use lakescore::pipeline::BATCH_ROWS;
use lakescore::scan::{LeafReader, ParquetFile, leaves_of_root};
use parquet::arrow::ProjectionMask;

const ROWS: usize = 131_072;

fn bench_scan(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let spec = LakeSpec {
        rows: ROWS as u64,
        files: 1,
        row_group_rows: ROWS,
        ..LakeSpec::default()
    };
    let path = generate_lake(dir.path(), &spec).unwrap().remove(0);
    // Mapped, as `lakescore score` reads a lake (the bench's own file does not change).
    // SAFETY: nothing writes the file while the bench reads it.
    let mapped = lakescore::source::LocalTable::open_file(&path, unsafe { lakescore::source::MmapChoice::auto() });
    let file = ParquetFile::read(&path, mapped.unwrap()).unwrap();
    let schema = file.metadata.schema().clone();
    let descriptor = file.metadata.parquet_schema();
    let names = benchmark_features();
    // In the generated table every feature is a top-level primitive column.
    let roots: Vec<usize> = names.iter().map(|n| schema.index_of(n).unwrap()).collect();
    let leaves: Vec<usize> = roots.iter().map(|&r| leaves_of_root(descriptor, r)[0]).collect();
    let projection = ProjectionMask::roots(descriptor, roots.iter().copied());
    let read_leaves = || -> Vec<LeafReader> { leaves.iter().map(|&l| file.leaf_reader(0, l).unwrap()).collect() };

    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    group.bench_function("decode 34 columns through Arrow", |b| {
        b.iter(|| {
            let mut batches = file.read_row_group(0, &projection, BATCH_ROWS).unwrap();
            let mut rows = 0;
            while rows < ROWS {
                let n = BATCH_ROWS.min(ROWS - rows);
                black_box(batches.read(n).unwrap());
                rows += n;
            }
            batches.finish().unwrap();
        })
    });
    group.bench_function("decode 34 columns through leaf readers", |b| {
        b.iter(|| {
            let mut readers = read_leaves();
            let mut rows = 0;
            while rows < ROWS {
                let n = BATCH_ROWS.min(ROWS - rows);
                for reader in &mut readers {
                    reader.read(n).unwrap();
                }
                rows += n;
            }
            black_box(rows)
        })
    });

    let sources: Vec<FeatureSource> = leaves
        .iter()
        .zip(&roots)
        .enumerate()
        .map(|(reader, (&leaf, &root))| FeatureSource::Leaf {
            reader,
            conversion: features::leaf_conversion(&descriptor.column(leaf), schema.field(root).data_type()).unwrap(),
        })
        .collect();
    let features_spec: Vec<Feature> = names
        .iter()
        .map(|n| Feature {
            name: n.clone(),
            missing_value: 0.0,
            categories: None,
        })
        .collect();
    let mut readers = read_leaves();
    for reader in &mut readers {
        reader.read(BATCH_ROWS).unwrap();
    }
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.bench_function("features: 34 leaf batches to one f64 block", |b| {
        b.iter(|| {
            black_box(features::build_block(
                &sources,
                &[],
                &readers,
                &features_spec,
                BATCH_ROWS,
                None,
            ))
        })
    });

    // The contract's view of the block: NaN for missing values.
    let block = features::build_block(&sources, &[], &readers, &features_spec, BATCH_ROWS, Some(-1.0)).unwrap();
    let mut manifest = lakescore::package::Manifest::default();
    let no_rules = Contract::compile(&manifest, Path::new("bench"), &features_spec, 1, Some((0.0, 1.0))).unwrap();
    for name in &names {
        let spec = lakescore::package::FeatureSpec {
            nullable: Some(false),
            min: Some(-1e9),
            max: Some(1e9),
            policy: Some(lakescore::package::RowPolicy::Warn),
            ..Default::default()
        };
        manifest.features.insert(name.clone(), spec);
    }
    let rules = Contract::compile(&manifest, Path::new("bench"), &features_spec, 1, Some((0.0, 1.0))).unwrap();
    manifest.guards.max_missing_share = Some(0.5);
    let guarded = Contract::compile(&manifest, Path::new("bench"), &features_spec, 1, Some((0.0, 1.0))).unwrap();
    for (label, contract) in [
        ("profile only", &no_rules),
        ("profile and 68 rules", &rules),
        ("profile, 68 rules and the missing-share guard", &guarded),
    ] {
        group.bench_function(format!("checks: {label}, one 2048-row block of 34 features"), |b| {
            let mut inspection = contract.inspection(&features_spec, 1);
            let mut marks = RowMarks::default();
            b.iter(|| inspection.inspect_features(contract, black_box(&block), 0, 0, &mut marks))
        });
    }
    // The score side: profile 2048 probabilities and count those outside
    // the model's range [0, 1].
    let scores = vec![
        (0..BATCH_ROWS)
            .map(|i| (i as f32 / BATCH_ROWS as f32).min(0.999))
            .collect::<Vec<f32>>(),
    ];
    group.bench_function("checks: scores, one 2048-row batch of probabilities", |b| {
        let mut inspection = no_rules.inspection(&features_spec, 1);
        b.iter(|| inspection.inspect_scores(&no_rules, black_box(&scores)))
    });
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
