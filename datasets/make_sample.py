#!/usr/bin/env python3
"""Regenerates the committed sample data in datasets/sample/:

  customers/              50,000 synthetic customers, two dt= partitions (gen-lake)
  model.json              logistic regression trained by scikit-learn on a separate,
                          labelled 200,000-row table, in lakescore's linear format
  expected_scores.parquet (customer_id, score as float64) computed by numpy from
                          the sample table: the parity oracle of tests/it/parity.rs
  xgb.ubj, lgbm.txt       XGBoost (100 trees, depth 4, binary:logistic, UBJSON) and
                          LightGBM (100 trees, 15 leaves, binary) models trained on the
                          same labelled table, NaN kept as missing
  expected_scores_xgb.parquet, expected_scores_lgbm.parquet
                          (customer_id, score) by xgboost inplace_predict (float32) and
                          lightgbm predict (float64) on the sample's float64 features

usage (from the repository root):
  python3 -m venv /tmp/sample-venv && /tmp/sample-venv/bin/pip install -r datasets/requirements.txt
  /tmp/sample-venv/bin/python datasets/make_sample.py
"""
import json, os, shutil, subprocess, tempfile, glob
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.linear_model import LogisticRegression
import sklearn

FEATURES = (["age", "tenure_days", "orders_30d", "orders_90d", "orders_365d",
             "spend_30d", "spend_90d", "spend_365d", "avg_basket", "email_opens_30d",
             "email_clicks_30d", "days_since_last_order", "app_user", "loyalty_tier"]
            + [f"b{j:02d}" for j in range(20)])
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SAMPLE = os.path.join(HERE, "sample")


def gen_lake(out, *args):
    subprocess.run(["cargo", "run", "--quiet", "--release", "--bin", "gen-lake", "--", out, *args],
                   cwd=ROOT, check=True)


def features(table):
    # float64 throughout: the exact reference lakescore must match within 1e-6
    return np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(np.float64) for c in FEATURES])


def main():
    customers = os.path.join(SAMPLE, "customers")
    shutil.rmtree(customers, ignore_errors=True)
    gen_lake(customers, "--rows", "50000", "--files", "2", "--row-group", "8192",
             "--dates", "2026-11-24,2026-11-25", "--seed", "7")
    with tempfile.TemporaryDirectory() as tmp:
        gen_lake(os.path.join(tmp, "train"), "--rows", "200000", "--files", "1", "--seed", "1", "--label")
        train = pq.read_table(glob.glob(os.path.join(tmp, "train", "**", "*.parquet"), recursive=True))
    X = np.nan_to_num(features(train))
    y = train["converted"].to_numpy(zero_copy_only=False).astype(np.float64)
    mu, sd = X.mean(0), X.std(0) + 1e-9
    lr = LogisticRegression(max_iter=1000).fit((X - mu) / sd, y)
    weights = lr.coef_[0] / sd
    intercept = float(lr.intercept_[0] - (lr.coef_[0] * mu / sd).sum())
    model = {"format": "linear", "name": "propensity-sample", "version": "1",
             "features": FEATURES, "weights": [float(w) for w in weights],
             "intercept": intercept, "link": "logistic"}
    with open(os.path.join(SAMPLE, "model.json"), "w") as f:
        json.dump(model, f, indent=1)
        f.write("\n")

    table = pq.read_table(sorted(glob.glob(os.path.join(customers, "**", "*.parquet"), recursive=True)))
    z = np.nan_to_num(features(table)) @ weights + intercept
    scores = 1.0 / (1.0 + np.exp(-z))
    pq.write_table(pa.table({"customer_id": table["customer_id"], "score": pa.array(scores, pa.float64())}),
                   os.path.join(SAMPLE, "expected_scores.parquet"))
    # Tree models: trained on the raw features (NaN is missing for both).
    import xgboost as xgb
    import lightgbm as lgb
    Xraw, Xs = features(train), features(table)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 4, "eta": 0.2, "tree_method": "hist",
                         "nthread": 2, "seed": 1}, xgb.DMatrix(Xraw, label=y, feature_names=FEATURES), 100)
    booster.save_model(os.path.join(SAMPLE, "xgb.ubj"))
    reloaded = xgb.Booster(model_file=os.path.join(SAMPLE, "xgb.ubj"))
    pq.write_table(pa.table({"customer_id": table["customer_id"],
                             "score": pa.array(reloaded.inplace_predict(Xs), pa.float32())}),
                   os.path.join(SAMPLE, "expected_scores_xgb.parquet"))
    gbm = lgb.train({"objective": "binary", "num_leaves": 15, "learning_rate": 0.2, "num_threads": 2,
                     "verbose": -1, "seed": 1, "deterministic": True},
                    lgb.Dataset(Xraw, label=y, feature_name=FEATURES), 100)
    gbm.save_model(os.path.join(SAMPLE, "lgbm.txt"))
    reloaded = lgb.Booster(model_file=os.path.join(SAMPLE, "lgbm.txt"))
    pq.write_table(pa.table({"customer_id": table["customer_id"],
                             "score": pa.array(reloaded.predict(Xs), pa.float64())}),
                   os.path.join(SAMPLE, "expected_scores_lgbm.parquet"))
    print(f"sample: {table.num_rows} rows; models trained by scikit-learn {sklearn.__version__}, "
          f"xgboost {xgb.__version__}, lightgbm {lgb.__version__}")


if __name__ == "__main__":
    main()
