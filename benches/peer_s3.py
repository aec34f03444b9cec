#!/usr/bin/env python3
"""What a user would write instead, reading from S3: pyarrow's S3FileSystem
reads each data file's customer_id and feature columns, xgboost scores them
(inplace_predict, float32, as ../shared/bench/peer_score.py does on a local
lake), and (customer_id, score) is written to a local folder, one file per
input file.

usage: peer_s3.py MODEL_DIR s3://BUCKET/PREFIX OUT_DIR --endpoint http://127.0.0.1:PORT [--threads T]
Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY from the environment.
"""
import argparse, os
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("inp")
    ap.add_argument("out")
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import xgboost as xgb
    feats = open(os.path.join(a.model, "features.txt")).read().split()
    bst = xgb.Booster(model_file=os.path.join(a.model, "xgb.json"))
    bst.set_param({"nthread": a.threads})
    scheme, rest = a.endpoint.split("://", 1)
    fs = pafs.S3FileSystem(endpoint_override=rest, scheme=scheme, region="us-east-1",
                           access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"])
    root = a.inp.removeprefix("s3://").rstrip("/")
    files = sorted(f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                   if f.type == pafs.FileType.File and f.path.endswith(".parquet"))
    rows = 0
    for f in files:
        t = pq.read_table(f, columns=["customer_id"] + feats, filesystem=fs)
        X = np.empty((t.num_rows, len(feats)), dtype=np.float32)
        for j, c in enumerate(feats):
            X[:, j] = t[c].to_numpy(zero_copy_only=False)
        s = np.asarray(bst.inplace_predict(X, missing=np.nan), dtype=np.float32)
        dst = os.path.join(a.out, os.path.relpath(f, root))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        pq.write_table(pa.table({"customer_id": t["customer_id"], "score": pa.array(s)}), dst, compression="snappy")
        rows += t.num_rows
    print(f"scored {rows} rows")


if __name__ == "__main__":
    main()
