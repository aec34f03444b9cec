#!/usr/bin/env bash
# What being a good pipeline citizen costs: `lakescore score` of the 10M-row
# lake with the XGBoost benchmark model and a starting contract (so that the
# metrics and lineage carry every rule, guard and drift figure), with text
# logs and nothing else, against JSON logs + a metrics file + a lineage file.
# Runs interleaved, median of R, in one run (target: at most 2% more).
#
#   benches/observability_overhead.sh [--rows N] [--repeat R] [--work DIR] [--model M]
#
# The model defaults to $WORK/models/xgb.json (benches/side_by_side.sh trains
# it; run that once first, or pass --model). `-v` makes each observed run log
# how long its observers took, in-process; the script prints those too.
set -euo pipefail

DEFAULT_REPEAT=7
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
bench_arguments "$@"
bench_lake
PACKAGE=$WORK/package-observed
rm -rf "$PACKAGE"
"$BIN/lakescore" -q model package --model "$MODEL" --reference "$REFERENCE" --output "$PACKAGE" 2> /dev/null
SCRATCH=$(mktemp -d "$WORK/observed-XXXX")
trap 'rm -rf "$SCRATCH"' EXIT

declare -A SECONDS_OF
OBSERVERS=""
for _ in $(seq "$REPEAT"); do
  for variant in plain observed; do
    case $variant in
      plain) args=() ;;
      observed) args=(--log-format json -v --metrics-file "$SCRATCH/lakescore.prom"
                      --lineage-file "$SCRATCH/lineage.ndjson") ;;
    esac
    start=$(date +%s.%N)
    "$BIN/lakescore" score --model "$PACKAGE" --input "$LAKE" --output "$SCRATCH/out" --mode overwrite \
      "${args[@]}" 2> "$SCRATCH/log" > /dev/null
    SECONDS_OF[$variant]+="$(echo "$(date +%s.%N) - $start" | bc) "
    if [ "$variant" = observed ]; then
      OBSERVERS+="$(grep -o '"message":"observers told","[^}]*' "$SCRATCH/log" | grep -o '"seconds":[0-9.e-]*' | cut -d: -f2) "
    fi
  done
done
plain=$(echo "${SECONDS_OF[plain]}" | median)
observed=$(echo "${SECONDS_OF[observed]}" | median)
inside=$(echo "$OBSERVERS" | median)
echo "rows $ROWS, model $MODEL, median of $REPEAT interleaved runs"
printf 'text logs only                                 %6.3f s\n' "$plain"
printf 'JSON logs (-v) + metrics file + lineage file   %6.3f s  x%.4f\n' "$observed" "$(echo "$observed / $plain" | bc -l)"
printf '  of which the metrics and lineage, in-process %9.6f s\n' "$inside"
printf 'metrics file %d bytes, %d lines; lineage file %d bytes for %d events; %d log lines\n' \
  "$(wc -c < "$SCRATCH/lakescore.prom")" "$(wc -l < "$SCRATCH/lakescore.prom")" \
  "$(wc -c < "$SCRATCH/lineage.ndjson")" "$(wc -l < "$SCRATCH/lineage.ndjson")" "$(wc -l < "$SCRATCH/log")"
