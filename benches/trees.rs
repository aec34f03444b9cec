//! The tree evaluator alone, in nanoseconds per row·tree: 300 random trees
//! over 34 features (10% NaN), one feature block of `BATCH_ROWS` rows, on one
//! thread, including the views and bins each block needs.
//! - XGBoost-style depth-wise trees of depth 3, 4, 6 and 8 (float32) whose
//!   thresholds come from 250 per feature, as XGBoost's `hist` method (its
//!   default, at most 256 bins) gives: the kernels this CPU chooses (the AVX2 byte
//!   kernel), then each kernel forced on the same trees. (A view with more
//!   than 254 thresholds sends the trees that read it to the gather kernels:
//!   their cases are those trees' speed.)
//! - LightGBM-style leaf-wise trees of 63 leaves (float64, deep and
//!   unbalanced), on the scalar evaluator.
//!
//! cargo bench --bench trees
//! Criterion's "elements" are row·trees: ns per row·tree = 1e9 / (elem/s).
//! Each case prints the kernels it ran on.

use std::hint::black_box;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakescore::model::trees::Library;
use lakescore::model::trees::dispatch::{KernelChoice, SimdLevel};
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
    let shape = |library, leaves, balanced, distinct_thresholds| Shape {
        library,
        n_trees: TREES,
        n_features: FEATURES,
        n_groups: 1,
        leaves,
        balanced,
        categorical_share: 0.0,
        distinct_thresholds,
        seed: 1,
    };
    let hist = |leaves| shape(Library::XGBoost, leaves, true, Some(250));
    let best = KernelChoice::best(SimdLevel::Avx512);
    let only = |bytes, gather| KernelChoice { bytes, gather };
    let cases = [
        ("xgboost depth 3", hist(8), best),
        ("xgboost depth 6", hist(64), best),
        ("xgboost depth 8", hist(256), best),
        ("xgboost depth 3, bytes", hist(8), only(true, None)),
        ("xgboost depth 4", hist(16), best),
        (
            "xgboost depth 4, avx512 gather",
            hist(16),
            only(false, Some(Isa::Avx512)),
        ),
        ("xgboost depth 4, avx2 gather", hist(16), only(false, Some(Isa::Avx2))),
        (
            "xgboost depth 3, avx512 gather",
            hist(8),
            only(false, Some(Isa::Avx512)),
        ),
        ("xgboost depth 3, avx2 gather", hist(8), only(false, Some(Isa::Avx2))),
        (
            "xgboost depth 6, avx512 gather",
            hist(64),
            only(false, Some(Isa::Avx512)),
        ),
        ("xgboost depth 6, avx2 gather", hist(64), only(false, Some(Isa::Avx2))),
        ("xgboost depth 6, scalar", hist(64), only(false, None)),
        (
            "xgboost depth 8, avx512 gather",
            hist(256),
            only(false, Some(Isa::Avx512)),
        ),
        ("xgboost depth 8, avx2 gather", hist(256), only(false, Some(Isa::Avx2))),
        (
            "lightgbm 63 leaves, leaf-wise",
            shape(Library::LightGBM, 63, false, Some(255)),
            best,
        ),
    ];
    for (name, shape, choice) in cases {
        let compiled = Arc::new(Compiled::with_kernels(&random_ensemble(&shape), choice));
        eprintln!("{name}: {}", compiled.cpu_kernels());
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
