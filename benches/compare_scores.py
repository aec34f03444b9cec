#!/usr/bin/env python3
"""Compares two scored tables per customer_id: same ids, largest score difference.

usage: compare_scores.py LAKESCORE_OUT PEER_OUT PEER_NAME [--tolerance 1e-6] [--column score] [--same-columns]
--column names lakescore's score column (score_1: a classifier's class 1); the peer's is `score`.
--same-columns compares every `score*` column of the first table with the same column of the
second (two lakescore outputs, e.g. --device cpu against --device cuda).
A value NaN in both tables agrees. Exits 1 when the ids or the columns differ, or a score
differs by more than the tolerance.
"""
import argparse, glob, os, sys
import numpy as np
import pyarrow.parquet as pq


def files_of(folder):
    files = sorted(f for f in glob.glob(os.path.join(folder, "**", "*.parquet"), recursive=True)
                   if "/_" not in f[len(folder):])
    if not files:
        sys.exit(f"no Parquet files under {folder}")
    return files


def score_columns(folder):
    return [c for c in pq.read_schema(files_of(folder)[0]).names if c.startswith("score")]


def load(folder, column="score"):
    table = pq.ParquetDataset(files_of(folder)).read(columns=["customer_id", column])
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
    ap.add_argument("--same-columns", action="store_true")
    a = ap.parse_args()
    if a.same_columns:
        columns = score_columns(a.ours)
        if columns != score_columns(a.peer):
            print(f"scores vs {a.name}: the score columns differ ({columns} vs {score_columns(a.peer)})")
            sys.exit(1)
        pairs = [(c, c) for c in columns]
    else:
        pairs = [(a.column, "score")]
    ok = True
    for ours_column, peer_column in pairs:
        ids, scores = load(a.ours, ours_column)
        peer_ids, peer_scores = load(a.peer, peer_column)
        if not np.array_equal(ids, peer_ids):
            print(f"scores vs {a.name}: the customer ids differ ({len(ids)} vs {len(peer_ids)} rows)")
            sys.exit(1)
        diff = np.abs(scores - peer_scores)
        both_nan = np.isnan(scores) & np.isnan(peer_scores)
        diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
        worst = float(np.max(diff)) if len(ids) else 0.0
        beyond = int(np.sum(diff > a.tolerance))
        verdict = "ok" if worst <= a.tolerance else f"TOO FAR in {beyond} rows"
        label = f"{ours_column} vs {a.name}" if len(pairs) > 1 or a.same_columns else f"scores vs {a.name}"
        print(f"{label}: {len(ids)} customers, max |difference| {worst:.3g} ({verdict}, tolerance {a.tolerance:g})")
        if beyond:
            for i in np.argsort(-diff)[:3]:
                print(f"  customer_id {ids[i]}: lakescore {scores[i]:.9g}, {a.name} {peer_scores[i]:.9g}")
        ok = ok and worst <= a.tolerance
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
