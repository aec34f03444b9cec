#!/usr/bin/env python3
"""Train the ONNX benchmark models on the synthetic training table.

usage: onnx_models.py TRAIN_DIR OUT_DIR [--epochs E] [--skl2onnx-missing]
Writes OUT_DIR/rf.onnx and OUT_DIR/mlp.onnx, each with one float input
"features" [N, 34] and metadata_props feature_names = JSON array of the columns.

rf.onnx   scikit-learn RandomForestClassifier (100 trees, depth 10) through
          skl2onnx, zipmap off: outputs "label" [N] and "probabilities" [N, 2]
          (ai.onnx.ml TreeEnsembleClassifier). scikit-learn routes NaN at each
          split to the side it learned in training (tree_.missing_go_to_left),
          but skl2onnx 1.20 drops that for random forests (every node gets
          nodes_missing_value_tracks_true = 0, so NaN goes to the false branch).
          This script copies missing_go_to_left into
          nodes_missing_value_tracks_true so that the graph scores NaN rows as
          scikit-learn does; --skl2onnx-missing keeps skl2onnx's graph as it is.
mlp.onnx  torch MLP 34 -> 256 -> 128 -> 1 (ReLU, ReLU, Sigmoid), output
          "probability" [N, 1]. The graph standardises its input (Sub, Div with
          the training mean and std) and then replaces NaN by 0, i.e. a missing
          value is imputed with the training mean (IsNaN + Where): the lake has
          nulls in 23 of the 34 columns, so the graph itself handles them.
Both print how far onnxruntime is from the training library on the training rows.
"""
import argparse, glob, json, os, time, warnings
import numpy as np
import pyarrow.parquet as pq

# Same columns and loading as ../shared/bench/train_models.py.
FEATURES = (["age", "tenure_days", "orders_30d", "orders_90d", "orders_365d",
             "spend_30d", "spend_90d", "spend_365d", "avg_basket", "email_opens_30d",
             "email_clicks_30d", "days_since_last_order", "app_user", "loyalty_tier"]
            + [f"b{j:02d}" for j in range(20)])


def load(d):
    t = pq.read_table(sorted(glob.glob(os.path.join(d, "**", "*.parquet"), recursive=True)))
    X = np.column_stack([t[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in FEATURES])
    y = t["converted"].to_numpy(zero_copy_only=False).astype(np.float32)
    return X, y


def auc(y, p):
    from sklearn.metrics import roc_auc_score
    return roc_auc_score(y, p)


def ort_run(path, X):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})


def set_feature_names(model):
    import onnx
    onnx.helper.set_model_props(model, {"feature_names": json.dumps(FEATURES)})


def random_forest(X, y, path, skl2onnx_missing):
    import onnx
    from sklearn.ensemble import RandomForestClassifier
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    t0 = time.time()
    rf = RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0, n_jobs=2).fit(X, y)
    fit_s = time.time() - t0
    model = convert_sklearn(rf, "lakescore_rf", initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
                            options={id(rf): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    if not skl2onnx_missing:
        # skl2onnx numbers the nodes of tree k as tree_.node ids, in tree order.
        missing = np.concatenate([e.tree_.missing_go_to_left.astype(np.int64) for e in rf.estimators_])
        (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier"]
        (attr,) = [a for a in node.attribute if a.name == "nodes_missing_value_tracks_true"]
        leaf = np.array([m == b"LEAF" for a in node.attribute if a.name == "nodes_modes" for m in a.strings])
        assert len(attr.ints) == len(missing) == len(leaf)
        missing[leaf] = 0
        del attr.ints[:]
        attr.ints.extend(int(v) for v in missing)
    set_feature_names(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    n = min(len(X), 100_000)
    p_sk = rf.predict_proba(X[:n])[:, 1]
    p_ort = ort_run(path, X[:n])[1][:, 1]
    print(f"rf.onnx: fit {fit_s:.1f} s, {sum(e.tree_.node_count for e in rf.estimators_)} nodes, "
          f"training AUC {auc(y, rf.predict_proba(X)[:, 1]):.4f}, "
          f"max |onnxruntime - sklearn| {np.max(np.abs(p_ort - p_sk)):.3g} on {n} rows")


def mlp(X, y, path, epochs):
    import onnx
    import torch
    from torch import nn
    torch.manual_seed(0)
    torch.set_num_threads(2)
    mean = np.nanmean(X, axis=0).astype(np.float32)
    std = (np.nanstd(X, axis=0) + 1e-6).astype(np.float32)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.from_numpy(mean))
            self.register_buffer("std", torch.from_numpy(std))
            self.body = nn.Sequential(nn.Linear(len(FEATURES), 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                                      nn.Linear(128, 1))

        def logits(self, x):
            z = (x - self.mean) / self.std
            z = z.masked_fill(torch.isnan(z), 0.0)  # missing -> training mean
            return self.body(z)

        def forward(self, x):
            return torch.sigmoid(self.logits(x))

    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y).unsqueeze(1)
    gen = torch.Generator().manual_seed(0)
    t0 = time.time()
    net.train()
    for epoch in range(epochs):
        total = 0.0
        for idx in torch.randperm(len(Xt), generator=gen).split(1024):
            opt.zero_grad()
            loss = loss_fn(net.logits(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        print(f"  mlp epoch {epoch + 1}/{epochs}: loss {total / len(Xt):.4f}")
    fit_s = time.time() - t0
    net.eval()
    with torch.no_grad():
        p_torch = net(Xt).numpy().ravel()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in torch 2.9, but asked for here
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (Xt[:2],), path, dynamo=False, opset_version=17, input_names=["features"],
                          output_names=["probability"],
                          dynamic_axes={"features": {0: "batch"}, "probability": {0: "batch"}})
    model = onnx.load(path)
    set_feature_names(model)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    p_ort = ort_run(path, X)[0].ravel()
    print(f"mlp.onnx: fit {fit_s:.1f} s, training AUC {auc(y, p_torch):.4f}, "
          f"max |onnxruntime - torch| {np.max(np.abs(p_ort - p_torch)):.3g} on {len(X)} rows")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train")
    ap.add_argument("out")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--skl2onnx-missing", action="store_true",
                    help="keep skl2onnx's NaN routing (always the false branch) in rf.onnx")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    X, y = load(a.train)
    random_forest(X, y, os.path.join(a.out, "rf.onnx"), a.skl2onnx_missing)
    mlp(X, y, os.path.join(a.out, "mlp.onnx"), a.epochs)


if __name__ == "__main__":
    main()
