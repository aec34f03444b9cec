#!/usr/bin/env bash
# Side-by-side benchmark: lakescore beside what a data team would run instead,
# in one run, on the same generated lake, on this machine.
#
#   benches/side_by_side.sh [--rows N] [--repeat R] [--work DIR] [--models "logreg xgb lgbm rf mlp"]
#                           [--lakescore-only] [--baseline BIN]
#
# --lakescore-only times lakescore alone, with no Python: the logistic model,
# or the tree models --models names when an earlier full run trained them.
#
# --baseline BIN also times another lakescore binary (an earlier build, kept
# aside) on every lakescore row, interleaved with this build run by run, and
# prints the two side by side: how a change to the engine moved its speed.
#
# Times (wall seconds, median of R runs; peak RSS of the median run):
#   logreg: lakescore score    logistic model, all cores
#           arrow-rs I/O floor examples/io_floor.rs: read the same 35 columns, write id + constant
#           DuckDB SQL         ../shared/bench/peer_duckdb_logreg.py
#           pyarrow + numpy    ../shared/bench/peer_score.py logreg
#           pyarrow I/O floor  ../shared/bench/peer_score.py io
#   xgb:    lakescore score and pyarrow + xgboost inplace_predict (peer_score.py xgb), 300 trees depth 6
#   lgbm:   lakescore score and pyarrow + lightgbm predict (peer_score.py lgbm), 300 trees 63 leaves
#   rf:     lakescore score and pyarrow + onnxruntime (benches/peer_onnx.py) on one ONNX file:
#           scikit-learn RandomForestClassifier, 100 trees of depth 10, through skl2onnx
#   mlp:    the same for a torch MLP 34 -> 256 -> 128 -> 1 (benches/onnx_models.py trains both)
# then checks lakescore's scores against each peer's per customer_id.
# The ONNX models need torch, scikit-learn, skl2onnx and onnxruntime (benches/requirements-onnx.txt,
# installed into a second venv under the work folder).
#
# Needs the peer scripts of ../shared/bench (PEERS=dir to point elsewhere) and
# Python 3 with pip; the peers' packages go to a venv under the work folder.
# The lake (about 1.6 GB per 10M rows) is generated once and reused.
set -euo pipefail

ROWS=10000000
REPEAT=3
WORK=${WORK:-/tmp/lakescore-side-by-side}
LAKESCORE_ONLY=0
MODEL_SET="logreg xgb lgbm rf mlp"
BASELINE=""
MODELS_GIVEN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODEL_SET=$2; MODELS_GIVEN=1; shift 2 ;;
    --rows) ROWS=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --lakescore-only) LAKESCORE_ONLY=1; shift ;;
    --baseline) BASELINE=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

REPO=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${PEERS:-$REPO/../shared/bench}
THREADS=$(nproc)
cd "$REPO"
cargo build --release --quiet --bin lakescore --bin gen-lake --example io_floor
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release
mkdir -p "$WORK"

LAKE=$WORK/customers-$ROWS
if [ ! -f "$LAKE/.complete" ]; then
  rm -rf "$LAKE"
  "$BIN/gen-lake" "$LAKE" --rows "$ROWS" --files 8 --seed 7
  touch "$LAKE/.complete"
fi

VENV=$WORK/venv
if [ "$LAKESCORE_ONLY" = 1 ]; then
  # The benchmark model's shape without training (no Python packages needed):
  # fixed weights, in a file of its own.
  MODEL=$WORK/logreg-fixed.json
  MODELS=$WORK/models
  python3 - "$MODEL" <<'PY'
import json, math, sys
features = ["age", "tenure_days", "orders_30d", "orders_90d", "orders_365d", "spend_30d", "spend_90d",
            "spend_365d", "avg_basket", "email_opens_30d", "email_clicks_30d", "days_since_last_order",
            "app_user", "loyalty_tier"] + [f"b{j:02d}" for j in range(20)]
json.dump({"format": "linear", "features": features, "weights": [math.sin(j * 0.37) * 0.05 for j in range(34)],
           "intercept": -0.75, "link": "logistic"}, open(sys.argv[1], "w"))
PY
else
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q -r "$PEERS/requirements.txt"; }
  MODELS=$WORK/models
  if [ ! -f "$MODELS/logreg.json" ]; then
    rm -rf "$WORK/train"
    "$BIN/gen-lake" "$WORK/train" --rows 400000 --files 1 --seed 1 --label
    "$VENV/bin/python" "$PEERS/train_models.py" "$WORK/train" "$MODELS"
  fi
  MODEL=$MODELS/logreg.json
fi
P=$VENV/bin/python

# Warm the page cache so that every tool reads from memory.
cat "$LAKE"/dt=*/*.parquet > /dev/null

RESULTS=$WORK/results.tsv
: > "$RESULTS"
# run_once FILE COMMAND...: one timed run ("seconds peak-KB" into FILE).
run_once() {
  local file=$1; shift
  /usr/bin/time -f "%e %M" -o "$file" "$@" > /dev/null 2> "$WORK/stderr.txt" \
    || { cat "$WORK/stderr.txt" >&2; echo "$* failed" >&2; exit 1; }
}
# median_of NAME: the median of "seconds peak-KB" lines on stdin, as a results row.
median_of() {
  sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p" | awk -v name="$1" '{ printf "%s\t%.2f\t%.0f\n", name, $1, $2 / 1024 }'
}
# time_it NAME OUTDIR COMMAND...: median wall seconds of $REPEAT runs, and that run's peak RSS.
time_it() {
  local name=$1 out=$2; shift 2
  local runs=()
  for _ in $(seq "$REPEAT"); do
    rm -rf "$out"
    run_once "$WORK/time.txt" "$@"
    runs+=("$(cat "$WORK/time.txt")")
  done
  printf '%s\n' "${runs[@]}" | median_of "$name" >> "$RESULTS"
}
BASELINE_RESULTS=$WORK/baseline.tsv
: > "$BASELINE_RESULTS"
# time_lakescore NAME OUTDIR ARGS...: this build's lakescore (and, with
# --baseline, the other binary, interleaved run by run) on ARGS.
time_lakescore() {
  local name=$1 out=$2; shift 2
  if [ -z "$BASELINE" ]; then
    time_it "$name" "$out" "$BIN/lakescore" "$@"
    return
  fi
  local ours=() theirs=()
  for _ in $(seq "$REPEAT"); do
    rm -rf "$out"; run_once "$WORK/time.txt" "$BIN/lakescore" "$@"; ours+=("$(cat "$WORK/time.txt")")
    rm -rf "$out"; run_once "$WORK/time.txt" "$BASELINE" "$@"; theirs+=("$(cat "$WORK/time.txt")")
  done
  # The baseline's output last: put this build's back for the score checks.
  rm -rf "$out"; run_once "$WORK/time.txt" "$BIN/lakescore" "$@"
  printf '%s\n' "${ours[@]}" | median_of "$name" >> "$RESULTS"
  paste <(printf '%s\n' "${ours[@]}" | median_of "$name") <(printf '%s\n' "${theirs[@]}" | median_of "$name") \
    | cut -f1-3,5-6 >> "$BASELINE_RESULTS"
}

OUT=$WORK/out
has() { [[ " $MODEL_SET " == *" $1 "* ]]; }
if [ "$LAKESCORE_ONLY" = 1 ] && [ "$MODELS_GIVEN" = 0 ]; then MODEL_SET=logreg; fi
if has logreg; then
time_lakescore "lakescore score (logistic)" "$OUT/lakescore" \
  -q score --model "$MODEL" --input "$LAKE" --output "$OUT/lakescore"
fi
if [ "$LAKESCORE_ONLY" = 0 ] && has logreg; then
  time_it "arrow-rs I/O floor (read 35 cols, write id+score)" "$OUT/floor" "$BIN/examples/io_floor" "$LAKE" "$OUT/floor"
  time_it "DuckDB SQL logistic regression" "$OUT/duckdb" \
    "$P" "$PEERS/peer_duckdb_logreg.py" "$MODELS" "$LAKE" "$OUT/duckdb" --threads "$THREADS"
  time_it "pyarrow + numpy logistic regression" "$OUT/numpy" \
    "$P" "$PEERS/peer_score.py" logreg "$MODELS" "$LAKE" "$OUT/numpy" --threads "$THREADS"
  time_it "pyarrow read + write only (I/O floor, Python)" "$OUT/pyio" \
    "$P" "$PEERS/peer_score.py" io "$MODELS" "$LAKE" "$OUT/pyio" --threads "$THREADS"
fi

# Tree models: lakescore and the library on the same lake, back to back.
TREES=$WORK/trees.tsv
: > "$TREES"
for m in xgb lgbm; do
  has "$m" || continue
  [ "$m" = xgb ] && file=xgb.json || file=lgbm.txt
  [ -f "$MODELS/$file" ] || { echo "missing $MODELS/$file: run once without --lakescore-only to train it" >&2; exit 1; }
  RESULTS=$TREES
  time_lakescore "lakescore $m" "$OUT/lakescore-$m" \
    -q score --model "$MODELS/$file" --input "$LAKE" --output "$OUT/lakescore-$m"
  [ "$LAKESCORE_ONLY" = 1 ] || time_it "pyarrow + $m" "$OUT/peer-$m" "$P" "$PEERS/peer_score.py" "$m" "$MODELS" \
    "$LAKE" "$OUT/peer-$m" --threads "$THREADS"
done
# ONNX models: lakescore and pyarrow + onnxruntime on the same file.
if [ "$LAKESCORE_ONLY" = 0 ] && { has rf || has mlp; }; then
  ONNX_VENV=$WORK/venv-onnx
  [ -x "$ONNX_VENV/bin/python" ] || { python3 -m venv "$ONNX_VENV" && "$ONNX_VENV/bin/pip" install -q -r "$REPO/benches/requirements-onnx.txt"; }
  ONNX_MODELS=$WORK/onnx-models
  if [ ! -f "$ONNX_MODELS/mlp.onnx" ]; then
    [ -d "$WORK/train" ] || "$BIN/gen-lake" "$WORK/train" --rows 400000 --files 1 --seed 1 --label
    "$ONNX_VENV/bin/python" "$REPO/benches/onnx_models.py" "$WORK/train" "$ONNX_MODELS"
  fi
  for m in rf mlp; do
    has "$m" || continue
    RESULTS=$TREES
    time_lakescore "lakescore $m" "$OUT/lakescore-$m" \
      -q score --model "$ONNX_MODELS/$m.onnx" --input "$LAKE" --output "$OUT/lakescore-$m"
    # Each at onnxruntime's fastest batch on this lake (benches/peer_onnx.py):
    # 65,536 rows for the forest (8,192 takes 1.8x as long), 8,192 for the MLP.
    [ "$m" = rf ] && batch=65536 || batch=8192
    time_it "pyarrow + onnxruntime $m" "$OUT/peer-$m" "$ONNX_VENV/bin/python" "$REPO/benches/peer_onnx.py" \
      "$ONNX_MODELS/$m.onnx" "$LAKE" "$OUT/peer-$m" --threads "$THREADS" --batch "$batch"
  done
fi
RESULTS=$WORK/results.tsv

echo
echo "side by side: $ROWS rows, $THREADS cores, median of $REPEAT runs ($(date -u +%Y-%m-%dT%H:%MZ))"
if [ -s "$RESULTS" ]; then
  echo
  awk -F'\t' 'NR == 1 { base = $2 }
    BEGIN { printf "%-52s %8s %10s %12s\n", "pipeline", "wall s", "peak MB", "lakescore ÷" }
    { printf "%-52s %8.2f %10.0f %12s\n", $1, $2, $3, (NR == 1 ? "" : sprintf("%.2f", base / $2)) }' "$RESULTS"
fi
if [ "$LAKESCORE_ONLY" = 0 ] && [ -s "$TREES" ]; then
  echo
  # Rows come in pairs: lakescore, then its peer. Targets from issue 3.
  awk -F'\t' 'BEGIN { printf "%-8s %12s %10s %12s %10s %8s %8s\n", "model", "lakescore s", "peak MB", "library s", "peak MB", "ratio", "target"
                      target["xgb"] = "1/6"; target["lgbm"] = "1/10"; target["rf"] = "1/3"; target["mlp"] = "1/3" }
    NR % 2 == 1 { m = $1; sub("lakescore ", "", m); ours = $2; ours_mb = $3; next }
    { printf "%-8s %12.2f %10.0f %12.2f %10.0f %8.3f %8s\n", m, ours, ours_mb, $2, $3, ours / $2, target[m] }' "$TREES"
fi

if [ -s "$BASELINE_RESULTS" ]; then
  echo
  echo "this build against --baseline $BASELINE (interleaved, median of $REPEAT each):"
  awk -F'\t' 'BEGIN { printf "%-32s %10s %10s %12s %10s %8s\n", "run", "this s", "peak MB", "baseline s", "peak MB", "ratio" }
    { printf "%-32s %10.2f %10.0f %12.2f %10.0f %8.3f\n", $1, $2, $3, $4, $5, $2 / $4 }' "$BASELINE_RESULTS"
fi

if [ "$LAKESCORE_ONLY" = 0 ]; then
  echo
  status=0
  if has logreg; then
    "$P" "$REPO/benches/compare_scores.py" "$OUT/lakescore" "$OUT/duckdb" "DuckDB" || status=1
    "$P" "$REPO/benches/compare_scores.py" "$OUT/lakescore" "$OUT/numpy" "pyarrow + numpy" || status=1
  fi
  for m in xgb lgbm; do
    has "$m" || continue
    "$P" "$REPO/benches/compare_scores.py" "$OUT/lakescore-$m" "$OUT/peer-$m" "pyarrow + $m" || status=1
  done
  # The forest writes both classes' probabilities; the peer keeps class 1.
  has rf && { "$P" "$REPO/benches/compare_scores.py" "$OUT/lakescore-rf" "$OUT/peer-rf" "pyarrow + onnxruntime" \
    --column score_1 --tolerance 1e-5 || status=1; }
  has mlp && { "$P" "$REPO/benches/compare_scores.py" "$OUT/lakescore-mlp" "$OUT/peer-mlp" "pyarrow + onnxruntime" \
    --tolerance 1e-5 || status=1; }
  exit $status
fi
