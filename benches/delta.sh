#!/usr/bin/env bash
# Delta tables in and out against plain Parquet folders. In: the
# benchmark lake of benches/side_by_side.sh, hard-linked into a second
# folder and made a Delta table there (deltalake's convert_to_deltalake:
# one commit adding every file, partitions from the dt= folders), scored by
# the same lakescore binary from both. Out: the folder scored to a Parquet
# output and to a Delta table (`--output-format delta`). Runs interleaved.
# Then the commit of a table of 10,000 files (`--commit-files N`): a
# generated lake of N small files scored to each output format, the
# report's commit seconds (placing the files, their statistics, the log).
#
#   benches/delta.sh [--repeat R] [--work DIR] [--models "logreg xgb"] [--commit-files N]
#
# Prints, per model, the median wall seconds of R runs folder -> Parquet,
# Delta -> Parquet and folder -> Delta, and the ratios to the first
# (target: within 5%); then the median commit seconds of each output
# format for N files (target: under 2 s).
#
# Needs what benches/side_by_side.sh made in the work folder (the lake and
# the trained models): run it first once. deltalake goes to a venv of its
# own there.
set -euo pipefail
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
REPEAT=5
WORK=${WORK:-/tmp/lakescore-side-by-side}
ROWS=10000000
MODEL_SET="logreg xgb"
COMMIT_FILES=10000
while [ $# -gt 0 ]; do
  case "$1" in
    --commit-files) COMMIT_FILES=$2; shift 2 ;;
    --repeat) REPEAT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --models) MODEL_SET=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
LAKE=$WORK/customers-$ROWS
MODELS=$WORK/models
for need in "$LAKE/.complete" "$MODELS/xgb.json" "$WORK/logreg-fixed.json"; do
  [ -e "$need" ] || { echo "missing $need: run benches/side_by_side.sh first" >&2; exit 1; }
done
cargo build --release --quiet --bin lakescore --bin gen-lake
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/lakescore

DELTA=$WORK/customers-$ROWS-delta
if [ ! -d "$DELTA/_delta_log" ]; then
  VENV=$WORK/delta-venv
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q deltalake==1.6.6 pyarrow==26.0.1; }
  rm -rf "$DELTA"
  mkdir -p "$DELTA"
  (cd "$LAKE" && find . -name '*.parquet' | while read -r f; do mkdir -p "$DELTA/$(dirname "$f")"; ln "$f" "$DELTA/$f"; done)
  "$VENV/bin/python" -c '
import sys, deltalake
partitions = deltalake.Schema([deltalake.Field("dt", "string", nullable=True)])
deltalake.convert_to_deltalake(sys.argv[1], partition_by=partitions, partition_strategy="hive")
' "$DELTA"
fi

model_of() {
  case "$1" in
    logreg) echo "$WORK/logreg-fixed.json" ;;
    xgb) echo "$MODELS/xgb.json" ;;
    *) echo "unknown model $1" >&2; exit 2 ;;
  esac
}
cat "$LAKE"/dt=*/*.parquet > /dev/null
OUT=$WORK/out-delta
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) threads); median of $REPEAT runs each, interleaved"
printf '%-8s %14s %14s %14s %9s %9s\n' model "folder->pq s" "delta->pq s" "folder->delta" "in ratio" "out ratio"
for model in $MODEL_SET; do
  plain=() delta_in=() delta_out=()
  for _ in $(seq "$REPEAT"); do
    for case in plain delta_in delta_out; do
      rm -rf "$OUT"
      input=$LAKE format=parquet
      [ "$case" = delta_in ] && input=$DELTA
      [ "$case" = delta_out ] && format=delta
      /usr/bin/time -f "%e" -o "$WORK/time.txt" "$BIN" score -q --model "$(model_of "$model")" \
        --input "$input" --output "$OUT" --output-format "$format" > /dev/null
      case "$case" in
        plain) plain+=("$(cat "$WORK/time.txt")") ;;
        delta_in) delta_in+=("$(cat "$WORK/time.txt")") ;;
        delta_out) delta_out+=("$(cat "$WORK/time.txt")") ;;
      esac
    done
  done
  p=$(echo "${plain[@]}" | median) i=$(echo "${delta_in[@]}" | median) o=$(echo "${delta_out[@]}" | median)
  printf '%-8s %14s %14s %14s %9s %9s\n' "$model" "$p" "$i" "$o" \
    "$(awk -v p="$p" -v d="$i" 'BEGIN { printf "%.3f", d / p }')" \
    "$(awk -v p="$p" -v d="$o" 'BEGIN { printf "%.3f", d / p }')"
done

# The commit of many files: N files of 100 rows, in 10 partitions.
SMALL=$WORK/customers-$COMMIT_FILES-files
if [ ! -e "$SMALL/.complete" ]; then
  rm -rf "$SMALL"
  dates=$(seq -f "2026-11-%02g" 1 10 | paste -sd,)
  "${CARGO_TARGET_DIR:-$REPO/target}/release/gen-lake" "$SMALL" --rows $((COMMIT_FILES * 100)) \
    --files $((COMMIT_FILES / 10)) --row-group 100 --dates "$dates" > /dev/null
  touch "$SMALL/.complete"
fi
printf '%-8s %14s %14s\n' files "parquet s" "delta s"
commit_seconds() {
  local out=$WORK/out-commit
  local seconds=()
  for _ in $(seq "$REPEAT"); do
    rm -rf "$out"
    "$BIN" score -q --model "$WORK/logreg-fixed.json" --input "$SMALL" --output "$out" \
      --output-format "$1" --report "$WORK/commit.json" > /dev/null
    seconds+=("$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["wall_seconds"]["commit"])' "$WORK/commit.json")")
  done
  echo "${seconds[@]}" | median
}
printf '%-8s %14s %14s\n' "$COMMIT_FILES" "$(commit_seconds parquet)" "$(commit_seconds delta)"
