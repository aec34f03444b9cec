//! The CUDA tree kernel alone, in row·trees per second: 300 random trees of
//! depth 6 and 8 (XGBoost-style, float32) over 34 standard-normal features,
//! 1M, 10M and 50M rows resident on the GPU, for the kernel's own choice of
//! lanes per row and for 1 and 4. Each timed iteration launches the kernel
//! and waits for the device (criterion's `iter_custom`), so the time is the
//! kernel's, not its queueing. Needs the `cuda` feature and a GPU:
//!
//! cargo bench --features cuda --bench cuda_trees
//!
//! Criterion's "elements" are row·trees. The target (issue 8) is 1e11
//! row·trees/s on an H100: 10M rows x 300 depth-6 trees in 30 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use lakescore::model::trees::Library;
use lakescore::model::trees::eval::{Compiled, evaluate_with};
use lakescore::model::trees::synthetic::{Shape, random_ensemble};

const TREES: usize = 300;
const FEATURES: usize = 34;

fn bench_cuda_trees(c: &mut Criterion) {
    let gpu = Device::new_cuda(0).expect("this benchmark needs a CUDA GPU");
    let mut group = c.benchmark_group("cuda_trees");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let row_counts: Vec<usize> = match std::env::var("LAKESCORE_BENCH_ROWS") {
        Ok(list) => list
            .split(',')
            .map(|n| n.trim().parse().expect("LAKESCORE_BENCH_ROWS: row counts"))
            .collect(),
        Err(_) => vec![1_000_000, 10_000_000, 50_000_000],
    };
    for depth in [6u32, 8] {
        let ensemble = random_ensemble(&Shape {
            library: Library::XGBoost,
            n_trees: TREES,
            n_features: FEATURES,
            n_groups: 1,
            leaves: 1 << depth,
            balanced: true,
            categorical_share: 0.0,
            distinct_thresholds: None,
            seed: u64::from(depth),
        });
        let compiled = Arc::new(Compiled::new(&ensemble));
        for &n_rows in &row_counts {
            // Drawn on the GPU: 50M rows x 34 features is 13.6 GB of f64.
            let features = Tensor::randn(0f64, 1f64, (FEATURES, n_rows), &gpu).unwrap();
            group.throughput(Throughput::Elements((n_rows * TREES) as u64));
            for lanes in [None, Some(1), Some(4)] {
                let label = match lanes {
                    None => format!("depth {depth}, auto lanes"),
                    Some(l) => format!("depth {depth}, {l} lanes per row"),
                };
                group.bench_with_input(BenchmarkId::new(label, n_rows), &n_rows, |b, _| {
                    b.iter_custom(|iterations| {
                        gpu.synchronize().unwrap();
                        let start = Instant::now();
                        for _ in 0..iterations {
                            let margins = evaluate_with(&compiled, &features, lanes).unwrap();
                            assert_eq!(margins.dtype(), DType::F32);
                        }
                        gpu.synchronize().unwrap();
                        start.elapsed()
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench_cuda_trees);
criterion_main!(benches);
