//! ONNX models through lakescore's model API (`Model::predict` on one
//! feature block of `BATCH_ROWS` rows, one thread), in the shapes of the
//! issue's targets: the MLP 34 -> 256 -> 128 -> 1 (ReLU, ReLU, sigmoid;
//! fused dense layers) and a binary random forest of 100 trees of depth 10
//! (`TreeEnsembleClassifier` compiled into the tree evaluator). The ONNX
//! files are written here with seeded weights, by a minimal protobuf encoder.
//!
//! cargo bench --bench onnx
//! Criterion's "elements" are rows.

use std::hint::black_box;

use candle_core::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lakescore::datagen::Rng;
use lakescore::model::trees::synthetic::random_rows;
use lakescore::model::{FeatureBlock, LoadOptions, load};
use lakescore::pipeline::BATCH_ROWS;

const FEATURES: usize = 34;

/// Protobuf writing: just what an ONNX model needs.
#[derive(Default)]
struct Message(Vec<u8>);

impl Message {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn key(&mut self, field: u64, wire: u64) {
        self.varint(field << 3 | wire);
    }
    fn int(mut self, field: u64, v: i64) -> Self {
        self.key(field, 0);
        self.varint(v as u64);
        self
    }
    fn bytes(mut self, field: u64, b: &[u8]) -> Self {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn text(self, field: u64, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }
    fn message(self, field: u64, m: Message) -> Self {
        self.bytes(field, &m.0)
    }
    fn floats(self, field: u64, v: &[f32]) -> Self {
        let raw: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.bytes(field, &raw)
    }
    fn ints(mut self, field: u64, v: &[i64]) -> Self {
        let mut packed = Message::default();
        v.iter().for_each(|&x| packed.varint(x as u64));
        self.key(field, 2);
        self.varint(packed.0.len() as u64);
        self.0.extend_from_slice(&packed.0);
        self
    }
}

fn tensor(name: &str, dims: &[i64], values: &[f32]) -> Message {
    Message::default()
        .ints(1, dims)
        .int(2, 1)
        .text(8, name)
        .floats(9, values)
}

fn float_value(name: &str, width: Option<i64>) -> Message {
    let mut shape = Message::default().message(1, Message::default().text(2, "N"));
    if let Some(w) = width {
        shape = shape.message(1, Message::default().int(1, w));
    }
    let tensor_type = Message::default().int(1, 1).message(2, shape);
    Message::default()
        .text(1, name)
        .message(2, Message::default().message(1, tensor_type))
}

fn node(op: &str, domain: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<Message>) -> Message {
    let mut n = Message::default();
    for i in inputs {
        n = n.text(1, i);
    }
    for o in outputs {
        n = n.text(2, o);
    }
    n = n.text(3, &format!("{op}_{}", outputs[0])).text(4, op).text(7, domain);
    for a in attributes {
        n = n.message(5, a);
    }
    n
}

fn attr_int(name: &str, v: i64) -> Message {
    Message::default().text(1, name).int(20, 2).int(3, v)
}
fn attr_ints(name: &str, v: &[i64]) -> Message {
    Message::default().text(1, name).int(20, 7).ints(8, v)
}
fn attr_floats(name: &str, v: &[f32]) -> Message {
    Message::default().text(1, name).int(20, 6).floats(7, v)
}
fn attr_strings(name: &str, v: &[&str]) -> Message {
    let mut m = Message::default().text(1, name).int(20, 8);
    for s in v {
        m = m.text(9, s);
    }
    m
}

fn model(graph: Message, ml: bool) -> Vec<u8> {
    let names: Vec<String> = (0..FEATURES).map(|j| format!("f{j}")).collect();
    let mut m = Message::default()
        .int(1, 8)
        .text(2, "lakescore-bench")
        .message(7, graph)
        .message(8, Message::default().text(1, "").int(2, 17));
    if ml {
        m = m.message(8, Message::default().text(1, "ai.onnx.ml").int(2, 3));
    }
    m.message(
        14,
        Message::default()
            .text(1, "feature_names")
            .text(2, &serde_json::to_string(&names).unwrap()),
    )
    .0
}

fn mlp() -> Vec<u8> {
    let mut rng = Rng::new(3);
    let sizes = [FEATURES, 256, 128, 1];
    let mut graph = Message::default()
        .text(2, "mlp")
        .message(11, float_value("x", Some(FEATURES as i64)));
    let mut input = "x".to_string();
    for layer in 0..3 {
        let (k, n) = (sizes[layer], sizes[layer + 1]);
        let scale = (1.0 / k as f64).sqrt();
        let w: Vec<f32> = (0..k * n).map(|_| (rng.normal(0.0, 1.0) * scale) as f32).collect();
        let b: Vec<f32> = (0..n).map(|_| (rng.normal(0.0, 0.1)) as f32).collect();
        let (wn, bn, out) = (format!("w{layer}"), format!("b{layer}"), format!("h{layer}"));
        graph = graph
            .message(5, tensor(&wn, &[n as i64, k as i64], &w))
            .message(5, tensor(&bn, &[n as i64], &b))
            .message(
                1,
                node("Gemm", "", &[&input, &wn, &bn], &[&out], vec![attr_int("transB", 1)]),
            );
        let act = format!("a{layer}");
        let op = if layer < 2 { "Relu" } else { "Sigmoid" };
        graph = graph.message(1, node(op, "", &[&out], &[&act], vec![]));
        input = act;
    }
    model(graph.message(12, float_value(&input, Some(1))), false)
}

/// 100 random full trees of depth 10 on the 34 features, binary, one weight
/// column (skl2onnx's layout for a random forest).
fn forest() -> Vec<u8> {
    let mut rng = Rng::new(5);
    let (mut tree_ids, mut node_ids, mut features, mut modes, mut values, mut trues, mut falses) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut w_tree, mut w_node, mut w_class, mut w_value) = (vec![], vec![], vec![], vec![]);
    for t in 0..100i64 {
        let n_nodes = (1 << 11) - 1;
        for i in 0..n_nodes as i64 {
            tree_ids.push(t);
            node_ids.push(i);
            if i < (1 << 10) - 1 {
                features.push(rng.below(FEATURES as u64) as i64);
                modes.push("BRANCH_LEQ");
                values.push((rng.normal(0.0, 1.0) * 4.0).round() as f32 / 4.0);
                trues.push(2 * i + 1);
                falses.push(2 * i + 2);
            } else {
                features.push(0);
                modes.push("LEAF");
                values.push(0.0);
                trues.push(0);
                falses.push(0);
                w_tree.push(t);
                w_node.push(i);
                w_class.push(0);
                w_value.push(rng.uniform() as f32 / 100.0);
            }
        }
    }
    let attributes = vec![
        attr_ints("nodes_treeids", &tree_ids),
        attr_ints("nodes_nodeids", &node_ids),
        attr_ints("nodes_featureids", &features),
        attr_strings("nodes_modes", &modes),
        attr_floats("nodes_values", &values),
        attr_ints("nodes_truenodeids", &trues),
        attr_ints("nodes_falsenodeids", &falses),
        attr_ints("class_treeids", &w_tree),
        attr_ints("class_nodeids", &w_node),
        attr_ints("class_ids", &w_class),
        attr_floats("class_weights", &w_value),
        attr_ints("classlabels_int64s", &[0, 1]),
    ];
    let graph = Message::default()
        .text(2, "forest")
        .message(11, float_value("x", Some(FEATURES as i64)))
        .message(
            1,
            node(
                "TreeEnsembleClassifier",
                "ai.onnx.ml",
                &["x"],
                &["label", "probabilities"],
                attributes,
            ),
        )
        .message(12, float_value("probabilities", Some(2)));
    model(graph, true)
}

fn bench_onnx(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = random_rows(BATCH_ROWS, FEATURES, 0.0, 7);
    rows.iter_mut().for_each(|v| *v = (*v * 4.0).round() / 4.0);
    let mut group = c.benchmark_group("onnx");
    group.throughput(Throughput::Elements(BATCH_ROWS as u64));
    for (name, bytes) in [
        ("mlp 34-256-128-1", mlp()),
        ("random forest, 100 trees of depth 10", forest()),
    ] {
        let path = dir.path().join(format!("{}.onnx", name.split(' ').next().unwrap()));
        std::fs::write(&path, bytes).unwrap();
        let model = load(&path, &Device::Cpu, &LoadOptions::default()).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(
                    model
                        .predict(FeatureBlock {
                            n_rows: BATCH_ROWS,
                            n_features: FEATURES,
                            values: rows.clone(),
                        })
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_onnx
}
criterion_main!(benches);
