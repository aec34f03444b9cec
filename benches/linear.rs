//! The linear model stage, in rows per second: a logistic model over the 34
//! benchmark features, one feature block of `BATCH_ROWS` rows at a time, on
//! candle's CPU device.
//!
//! cargo bench --bench linear

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakescore::datagen::benchmark_features;
use lakescore::model::{self, FeatureBlock};
use lakescore::pipeline::BATCH_ROWS;

fn bench_linear(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let features = benchmark_features();
    let k = features.len();
    let weights: Vec<f64> = (0..k).map(|j| (j as f64 * 0.37).sin() * 0.05).collect();
    let path = dir.path().join("logistic.json");
    let body = serde_json::json!({"format": "linear", "features": features, "weights": weights, "intercept": -0.75, "link": "logistic"});
    std::fs::write(&path, body.to_string()).unwrap();
    let model = model::load(&path, &candle_core::Device::Cpu, &Default::default()).unwrap();
    let values: Vec<f64> = (0..BATCH_ROWS * k).map(|i| (i % 97) as f64 * 0.5).collect();

    let mut group = c.benchmark_group("model");
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.bench_function("logistic, 34 features, one block", |b| {
        b.iter_batched(
            || FeatureBlock {
                n_rows: BATCH_ROWS,
                n_features: k,
                values: values.clone(),
            },
            |block| black_box(model.predict(block).unwrap()),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_linear);
criterion_main!(benches);
