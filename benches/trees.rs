//! The tree evaluator alone, in nanoseconds per row·tree: 300 random trees
//! over 34 features (10% NaN), one feature block of `BATCH_ROWS` rows, on one
//! thread. XGBoost-style depth-wise trees of depth 3, 6 and 8 (float32, the
//! AVX-512 kernel where the CPU has it), the same without the SIMD kernel,
//! and LightGBM-style leaf-wise trees of 63 leaves (float64, deep and
//! unbalanced).
//!
//! cargo bench --bench trees
//! Criterion's "elements" are row·trees: ns per row·tree = 1e9 / (elem/s).

use std::hint::black_box;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakescore::model::trees::Library;
use lakescore::model::trees::eval::{Compiled, evaluate};
use lakescore::model::trees::simd::Isa;
use lakescore::model::trees::synthetic::{Shape, random_ensemble, random_rows};
use lakescore::pipeline::BATCH_ROWS;

const TREES: usize = 300;
const FEATURES: usize = 34;

fn bench_trees(c: &mut Criterion) {
    let values = random_rows(BATCH_ROWS, FEATURES, 0.1, 7);
    let features = Tensor::from_slice(&values, (FEATURES, BATCH_ROWS), &Device::Cpu).unwrap();
    let mut group = c.benchmark_group("trees");
    group.throughput(Throughput::Elements((BATCH_ROWS * TREES) as u64));
    let shape = |library, leaves, balanced| Shape {
        library,
        n_trees: TREES,
        n_features: FEATURES,
        n_groups: 1,
        leaves,
        balanced,
        categorical_share: 0.0,
        seed: 1,
    };
    let cases = [
        ("xgboost depth 3", shape(Library::XGBoost, 8, true), false),
        ("xgboost depth 6", shape(Library::XGBoost, 64, true), false),
        ("xgboost depth 8", shape(Library::XGBoost, 256, true), false),
        ("xgboost depth 6, avx2", shape(Library::XGBoost, 64, true), false),
        ("xgboost depth 8, avx2", shape(Library::XGBoost, 256, true), false),
        ("xgboost depth 6, scalar", shape(Library::XGBoost, 64, true), true),
        (
            "lightgbm 63 leaves, leaf-wise",
            shape(Library::LightGBM, 63, false),
            false,
        ),
    ];
    for (name, shape, scalar) in cases {
        let ensemble = random_ensemble(&shape);
        let compiled = Arc::new(if scalar {
            Compiled::scalar_only(&ensemble)
        } else if name.ends_with("avx2") {
            Compiled::with_isa(&ensemble, Isa::Avx2)
        } else {
            Compiled::new(&ensemble)
        });
        group.bench_function(name, |b| b.iter(|| black_box(evaluate(&compiled, &features).unwrap())));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_trees
}
criterion_main!(benches);
