#!/usr/bin/env bash
# Delta input against the same files as a plain Parquet folder: the
# benchmark lake of benches/side_by_side.sh, hard-linked into a second
# folder and made a Delta table there (deltalake's convert_to_deltalake:
# one commit adding every file, partitions from the dt= folders), scored by
# the same lakescore binary from both, runs interleaved.
#
#   benches/delta.sh [--repeat R] [--work DIR] [--models "logreg xgb"]
#
# Prints, per model, the median wall seconds of R runs from the folder and
# from the Delta table, and their ratio (target: within 5%).
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
while [ $# -gt 0 ]; do
  case "$1" in
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
cargo build --release --quiet --bin lakescore
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
printf '%-8s %12s %12s %8s\n' model "folder s" "delta s" ratio
for model in $MODEL_SET; do
  folder=() delta=()
  for _ in $(seq "$REPEAT"); do
    for input in "$LAKE" "$DELTA"; do
      rm -rf "$OUT"
      /usr/bin/time -f "%e" -o "$WORK/time.txt" "$BIN" score -q --model "$(model_of "$model")" \
        --input "$input" --output "$OUT" > /dev/null
      case "$input" in
        "$LAKE") folder+=("$(cat "$WORK/time.txt")") ;;
        *) delta+=("$(cat "$WORK/time.txt")") ;;
      esac
    done
  done
  f=$(echo "${folder[@]}" | median) d=$(echo "${delta[@]}" | median)
  printf '%-8s %12s %12s %8s\n' "$model" "$f" "$d" "$(awk -v f="$f" -v d="$d" 'BEGIN { printf "%.3f", d / f }')"
done
