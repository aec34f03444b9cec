#!/usr/bin/env bash
# What the experiment commands cost beside scoring: on one labelled 10M-row
# lake, `lakescore score` with the logistic model (the yardstick), `lakescore
# allocate` with a 4-arm policy, and `lakescore evaluate` of the logistic
# model against the `converted` label. Interleaved runs, median of R.
# Targets (issue 6): allocate <= 1.2 x score, evaluate <= 1.5 x score.
#
#   benches/experiments.sh [--rows N] [--repeat R] [--work DIR] [--model M]
#
# The model defaults to $WORK/models/logreg.json (benches/side_by_side.sh
# trains it; run that once first, or pass --model).
set -euo pipefail

DEFAULT_REPEAT=5
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
WORK=${WORK:-/tmp/lakescore-side-by-side}
args=("$@")
[[ " ${args[*]} " == *" --model "* ]] || args+=(--model "$WORK/models/logreg.json")
bench_arguments "${args[@]}"
bench_lake
LABELLED=$WORK/customers-labelled-$ROWS
if [ ! -f "$LABELLED/.complete" ]; then
  rm -rf "$LABELLED"
  "$BIN/gen-lake" "$LABELLED" --rows "$ROWS" --files 8 --seed 7 --label
  touch "$LABELLED/.complete"
fi
cat "$LABELLED"/dt=*/*.parquet > /dev/null
SCRATCH=$(mktemp -d "$WORK/experiments-XXXX")
trap 'rm -rf "$SCRATCH"' EXIT
cat > "$SCRATCH/policy.toml" <<'EOF'
campaign = "bench"
version = 7
salt = "bench-salt"
holdout_share = 0.1
exploration_floor = 0.05

[[arms]]
name = "a"
alpha = 120.0
beta = 4880.0

[[arms]]
name = "b"
alpha = 150.0
beta = 4850.0

[[arms]]
name = "c"
alpha = 90.0
beta = 4910.0

[[arms]]
name = "d"
alpha = 140.0
beta = 4860.0
EOF

declare -A SECONDS_OF
for _ in $(seq "$REPEAT"); do
  for variant in score allocate evaluate; do
    rm -rf "$SCRATCH/out"
    case $variant in
      score) command=(score --model "$MODEL" --input "$LABELLED" --output "$SCRATCH/out") ;;
      allocate) command=(allocate --policy "$SCRATCH/policy.toml" --input "$LABELLED" --output "$SCRATCH/out") ;;
      evaluate) command=(evaluate --model "$MODEL" --input "$LABELLED" --label converted) ;;
    esac
    start=$(date +%s.%N)
    "$BIN/lakescore" -q "${command[@]}" > "$SCRATCH/$variant.txt"
    SECONDS_OF[$variant]+="$(echo "$(date +%s.%N) - $start" | bc) "
  done
done
score=$(echo "${SECONDS_OF[score]}" | median)
echo "rows $ROWS, model $MODEL, median of $REPEAT interleaved runs, $(nproc) cores"
printf 'score (logistic)         %6.3f s\n' "$score"
for variant in allocate evaluate; do
  seconds=$(echo "${SECONDS_OF[$variant]}" | median)
  printf '%-24s %6.3f s  x%.3f\n' "$variant" "$seconds" "$(echo "$seconds / $score" | bc -l)"
done
echo "evaluate's result:"
cat "$SCRATCH/evaluate.txt"
