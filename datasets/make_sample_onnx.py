#!/usr/bin/env python3
"""Regenerates the ONNX models of the committed sample data in datasets/sample/:

  rf.onnx                 scikit-learn RandomForestClassifier (20 trees, depth 6), NaN kept
                          as missing, converted by skl2onnx (TreeEnsembleClassifier,
                          zipmap off: `label` and `probabilities` [N, 2] outputs)
  mlp.onnx                torch MLP 34-32-16-1 (ReLU, ReLU, Sigmoid) with the training
                          lake's standardisation inside the graph and NaN set to 0 after
                          it, exported by torch.onnx.export (TorchScript exporter, opset 17)
  expected_scores_rf.parquet  (customer_id, score_0, score_1 as float32) and
  expected_scores_mlp.parquet (customer_id, score as float32): onnxruntime (CPU, 1 thread)
                          on the float32 features of customers/ (NaN for nulls), sorted
                          by customer_id

Both models are trained on the same labelled 200,000-row lake as make_sample.py (gen-lake
seed 1, label `converted`) over the same 34 features, have one float input
`features` [N, 34] with a dynamic batch dimension and name their features in
metadata_props["feature_names"] (a JSON array). Everything is seeded and single-threaded,
and nothing in the files depends on the machine's paths, so a rerun with the pins of
requirements-onnx.txt (Python 3.11, linux x86_64) writes byte-identical files.
customers/ is read, never written: make_sample.py makes it.

usage (from the repository root; needs target/release/gen-lake):
  cargo build --release --bin gen-lake
  python3.11 -m venv /tmp/onnx-venv && /tmp/onnx-venv/bin/pip install -r datasets/requirements-onnx.txt
  /tmp/onnx-venv/bin/python datasets/make_sample_onnx.py
"""
import glob, io, json, os, subprocess, sys, tempfile, warnings

# skl2onnx orders opset_import entries by set iteration: pin the hash seed (re-exec).
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ.update(PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    os.execv(sys.executable, [sys.executable] + sys.argv)

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import skl2onnx  # noqa: E402
import sklearn  # noqa: E402
import torch  # noqa: E402
from skl2onnx import convert_sklearn  # noqa: E402
from skl2onnx.common.data_types import FloatTensorType  # noqa: E402
from sklearn.ensemble import RandomForestClassifier  # noqa: E402

FEATURES = (["age", "tenure_days", "orders_30d", "orders_90d", "orders_365d",
             "spend_30d", "spend_90d", "spend_365d", "avg_basket", "email_opens_30d",
             "email_clicks_30d", "days_since_last_order", "app_user", "loyalty_tier"]
            + [f"b{j:02d}" for j in range(20)])
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SAMPLE = os.path.join(HERE, "sample")
GEN_LAKE = os.path.join(ROOT, "target", "release", "gen-lake")
TOL = 1e-5  # max |library - onnxruntime| allowed

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=FutureWarning)
torch.manual_seed(0)
torch.use_deterministic_algorithms(True)
torch.set_num_threads(1)


def gen_lake(out, *args):
    if not os.access(GEN_LAKE, os.X_OK):
        sys.exit(f"{GEN_LAKE} not found: build it first with `cargo build --release --bin gen-lake`")
    subprocess.run([GEN_LAKE, out, *args], cwd=ROOT, check=True)


def features(table):
    # float32, NaN for nulls: what an ONNX model with a float input is given
    cols = [pc.cast(table[c], pa.float64()).to_numpy(zero_copy_only=False) for c in FEATURES]
    return np.ascontiguousarray(np.column_stack(cols).astype(np.float32))


def ort_run(model, X):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"features": X})


def finish(model, name):
    """Name the features, check the graph, write it deterministically; returns the reloaded model."""
    onnx.helper.set_model_props(model, {"feature_names": json.dumps(FEATURES)})
    assert [i.name for i in model.graph.input] == ["features"]
    assert not model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value"), "static batch"
    onnx.checker.check_model(model, full_check=True)
    data = model.SerializeToString(deterministic=True)
    for bad in (b"site-packages", ROOT.encode()):
        assert bad not in data, (name, bad)
    with open(os.path.join(SAMPLE, name), "wb") as f:
        f.write(data)
    return onnx.load_from_string(data)


def rf_model(X, y):
    rf = RandomForestClassifier(n_estimators=20, max_depth=6, random_state=0, n_jobs=1).fit(X, y)
    model = convert_sklearn(rf, initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
                            target_opset={"": 17, "ai.onnx.ml": 3}, options={id(rf): {"zipmap": False}},
                            name="propensity_rf")
    # skl2onnx 1.20 writes nodes_missing_value_tracks_true = 0 for every node of a forest, so a NaN
    # would always take the false (right) branch; scikit-learn sends it where the tree learnt
    # (tree_.missing_go_to_left, left = `x <= threshold` = true). skl2onnx lists the nodes tree
    # by tree in node order: copy the flags in that order.
    (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
    attrs = {a.name: a for a in node.attribute}
    tree_ids = np.concatenate([np.full(e.tree_.node_count, t) for t, e in enumerate(rf.estimators_)])
    node_ids = np.concatenate([np.arange(e.tree_.node_count) for e in rf.estimators_])
    assert list(attrs["nodes_treeids"].ints) == tree_ids.tolist()
    assert list(attrs["nodes_nodeids"].ints) == node_ids.tolist()
    tracks = attrs["nodes_missing_value_tracks_true"]
    assert len(tracks.ints) == len(node_ids) and not any(tracks.ints)
    del tracks.ints[:]
    for e in rf.estimators_:
        tree = e.tree_
        leaf = tree.children_left == -1
        tracks.ints.extend(int(v) for v in np.where(leaf, 0, tree.missing_go_to_left.astype(np.int64)))
    return rf, model


class MLP(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("std", torch.from_numpy(std))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(len(FEATURES), 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(),
            torch.nn.Linear(16, 1), torch.nn.Sigmoid())

    def forward(self, x):
        z = (x - self.mean) / self.std
        return self.net(torch.where(torch.isnan(z), 0.0, z))


def mlp_model(X, y):
    mean = np.nanmean(X.astype(np.float64), axis=0)
    std = np.nanstd(X.astype(np.float64), axis=0) + 1e-9
    torch.manual_seed(0)
    mlp = MLP(mean.astype(np.float32), std.astype(np.float32))
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.float32))[:, None]
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCELoss()
    gen = torch.Generator().manual_seed(0)
    mlp.train()
    for epoch in range(4):
        perm = torch.randperm(len(Xt), generator=gen)
        total = 0.0
        for i in range(0, len(Xt), 256):
            idx = perm[i:i + 256]
            opt.zero_grad()
            loss = loss_fn(mlp(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        print(f"mlp epoch {epoch + 1}: log loss {total / len(Xt):.4f}")
    mlp.eval()
    buf = io.BytesIO()
    torch.onnx.export(mlp, (Xt[:2],), buf, dynamo=False, opset_version=17, input_names=["features"],
                      output_names=["probability"],
                      dynamic_axes={"features": {0: "batch"}, "probability": {0: "batch"}},
                      do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    model.graph.name = "propensity_mlp"
    for n in model.graph.node:  # exporter doc strings may carry source paths
        n.doc_string = ""
    return mlp, model


def ops(model):
    return sorted({f"{n.domain + ':' if n.domain else ''}{n.op_type}" for n in model.graph.node})


def main():
    with tempfile.TemporaryDirectory() as tmp:
        gen_lake(os.path.join(tmp, "train"), "--rows", "200000", "--files", "1", "--seed", "1", "--label")
        train = pq.read_table(glob.glob(os.path.join(tmp, "train", "**", "*.parquet"), recursive=True))
    X = features(train)
    y = train["converted"].to_numpy(zero_copy_only=False).astype(np.int64)
    customers = os.path.join(SAMPLE, "customers")
    table = pq.read_table(sorted(glob.glob(os.path.join(customers, "**", "*.parquet"), recursive=True)))
    order = np.argsort(table["customer_id"].to_numpy(), kind="stable")
    table = table.take(pa.array(order))
    Xs = features(table)
    ids = table["customer_id"].cast(pa.int64())

    rf, model = rf_model(X, y)
    model = finish(model, "rf.onnx")
    label, proba = ort_run(model, Xs)
    assert proba.dtype == np.float32 and proba.shape == (len(Xs), 2), (proba.dtype, proba.shape)
    diff_rf = float(np.abs(rf.predict_proba(Xs) - proba.astype(np.float64)).max())
    assert diff_rf <= TOL, f"rf: scikit-learn vs onnxruntime max abs diff {diff_rf:.3g}"
    pq.write_table(pa.table({"customer_id": ids, "score_0": pa.array(proba[:, 0], pa.float32()),
                             "score_1": pa.array(proba[:, 1], pa.float32())}),
                   os.path.join(SAMPLE, "expected_scores_rf.parquet"))
    print(f"rf.onnx: {os.path.getsize(os.path.join(SAMPLE, 'rf.onnx'))} bytes, ops {' '.join(ops(model))}, "
          f"max |scikit-learn - onnxruntime| {diff_rf:.3g}")

    mlp, model = mlp_model(X, y)
    model = finish(model, "mlp.onnx")
    (prob,) = ort_run(model, Xs)
    assert prob.dtype == np.float32 and prob.shape == (len(Xs), 1), (prob.dtype, prob.shape)
    with torch.no_grad():
        ref = mlp(torch.from_numpy(Xs)).numpy()
    diff_mlp = float(np.abs(ref.astype(np.float64) - prob.astype(np.float64)).max())
    assert diff_mlp <= TOL, f"mlp: torch vs onnxruntime max abs diff {diff_mlp:.3g}"
    pq.write_table(pa.table({"customer_id": ids, "score": pa.array(prob[:, 0], pa.float32())}),
                   os.path.join(SAMPLE, "expected_scores_mlp.parquet"))
    print(f"mlp.onnx: {os.path.getsize(os.path.join(SAMPLE, 'mlp.onnx'))} bytes, ops {' '.join(ops(model))}, "
          f"max |torch - onnxruntime| {diff_mlp:.3g}")
    print(f"sample: {table.num_rows} rows; scikit-learn {sklearn.__version__}, skl2onnx {skl2onnx.__version__}, "
          f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}")


if __name__ == "__main__":
    main()
