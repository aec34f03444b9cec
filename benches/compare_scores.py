#!/usr/bin/env python3
"""Compares two scored tables per customer_id: same ids, largest score difference.

usage: compare_scores.py LAKESCORE_OUT PEER_OUT PEER_NAME [--tolerance 1e-6] [--column score]
--column names lakescore's score column (score_1: a classifier's class 1); the peer's is `score`.
Exits 1 when the ids differ or a score differs by more than the tolerance.
"""
import argparse, glob, os, sys
import numpy as np
import pyarrow.parquet as pq


def load(folder, column="score"):
    files = sorted(f for f in glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True)
                   if "/_" not in f[len(folder):])
    if not files:
        sys.exit(f"no Parquet files under {folder}")
    table = pq.ParquetDataset(files).read(columns=["customer_id", column])
    ids = table["customer_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    return ids[order], table[column].to_numpy().astype(np.float64)[order]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ours")
    ap.add_argument("peer")
    ap.add_argument("name")
    ap.add_argument("--tolerance", type=float, default=1e-6)
    ap.add_argument("--column", default="score")
    a = ap.parse_args()
    ids, scores = load(a.ours, a.column)
    peer_ids, peer_scores = load(a.peer)
    if not np.array_equal(ids, peer_ids):
        print(f"scores vs {a.name}: the customer ids differ ({len(ids)} vs {len(peer_ids)} rows)")
        sys.exit(1)
    diff = np.abs(scores - peer_scores)
    worst = float(np.max(diff)) if len(ids) else 0.0
    beyond = int(np.sum(diff > a.tolerance))
    verdict = "ok" if worst <= a.tolerance else f"TOO FAR in {beyond} rows"
    print(f"scores vs {a.name}: {len(ids)} customers, max |difference| {worst:.3g} ({verdict}, tolerance {a.tolerance:g})")
    if beyond:
        for i in np.argsort(-diff)[:3]:
            print(f"  customer_id {ids[i]}: lakescore {scores[i]:.9g}, {a.name} {peer_scores[i]:.9g}")
    sys.exit(0 if worst <= a.tolerance else 1)


if __name__ == "__main__":
    main()
