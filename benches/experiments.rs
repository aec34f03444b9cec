//! The experiment stages, in rows per second: the evaluation tap on one block
//! of scores and labels, the metrics of 1M scored rows (radix sort and one
//! walk), the comparison of two models' scores, and the bandit's assignment
//! of one block of customer ids.
//!
//! cargo bench --bench experiments

use std::hint::black_box;

use arrow::array::Int64Array;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakescore::bandit::id_hashes;
use lakescore::bandit::policy::{Arm, POLICY_FORMAT, Policy};
use lakescore::campaign::allocate::Assigner;
use lakescore::compare::ComparisonTap;
use lakescore::datagen::Rng;
use lakescore::evaluate::EvaluationTap;
use lakescore::evaluate::metrics::{BinaryAccumulator, row_key};
use lakescore::model::FeatureBlock;
use lakescore::model::set::ScoreTap;
use lakescore::pipeline::BATCH_ROWS;

/// Scores like a logistic model's (distinct f32 values) and labels drawn from them.
fn scored(n: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let scores: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    let labels = scores
        .iter()
        .map(|&s| f64::from(u8::from(rng.uniform() < f64::from(s))))
        .collect();
    (scores, labels)
}

fn bench_experiments(c: &mut Criterion) {
    let mut group = c.benchmark_group("experiments");

    let (scores, labels) = scored(BATCH_ROWS, 1);
    let extras = FeatureBlock {
        n_rows: BATCH_ROWS,
        n_features: 1,
        values: labels,
    };
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.bench_function("evaluation tap, one block", |b| {
        let tap = EvaluationTap::new("converted", vec![0], &[0.5], None);
        let outputs = vec![scores.clone()];
        b.iter(|| tap.tap(black_box(&extras), black_box(&outputs)).unwrap())
    });

    let rows = 1_000_000;
    let (many, many_labels) = scored(rows, 2);
    let keys: Vec<u64> = many
        .iter()
        .zip(&many_labels)
        .map(|(&s, &y)| row_key(s, y == 1.0))
        .collect();
    group.throughput(Throughput::Elements(rows as u64));
    group.sample_size(20);
    group.bench_function("metrics of 1M rows (sort and walk)", |b| {
        b.iter_batched(
            || {
                let mut acc = BinaryAccumulator::new(vec![0.5]);
                acc.absorb(&keys, 0);
                acc
            },
            |acc| black_box(acc.finish()),
            criterion::BatchSize::LargeInput,
        )
    });

    let (other, _) = scored(BATCH_ROWS, 3);
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    group.sample_size(100);
    group.bench_function("comparison of two models, one block", |b| {
        let tap = ComparisonTap::new(vec![("a".into(), "a".into()), ("b".into(), "b".into())], vec![0, 1]);
        let outputs = vec![scores.clone(), other.clone()];
        b.iter(|| tap.add(black_box(&outputs)))
    });

    let policy = Policy {
        format: POLICY_FORMAT.into(),
        campaign: "bench".into(),
        version: 7,
        salt: "bench-salt".into(),
        holdout_share: 0.1,
        exploration_floor: 0.05,
        id_column: "customer_id".into(),
        draws: 10_000,
        arms: (0..4)
            .map(|k| Arm {
                name: format!("arm{k}"),
                alpha: 100.0 + 10.0 * k as f64,
                beta: 4900.0,
                model: None,
            })
            .collect(),
        history: Vec::new(),
    };
    let assigner = Assigner::new(&policy);
    let (holdout_seed, draw_seed) = assigner.seeds();
    let ids = Int64Array::from_iter_values((0..BATCH_ROWS as i64).map(|i| 1_000_000 + i * 7));
    group.bench_function("assignment of one block of ids, 4 arms", |b| {
        let (mut holdout, mut draw) = (Vec::new(), Vec::new());
        b.iter(|| {
            id_hashes(&ids, holdout_seed, &mut holdout);
            id_hashes(&ids, draw_seed, &mut draw);
            let arms = holdout
                .iter()
                .zip(&draw)
                .filter_map(|(h, d)| assigner.arm(h.unwrap(), d.unwrap()));
            black_box(arms.count())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_experiments);
criterion_main!(benches);
