#!/usr/bin/env bash
# What the data contract costs: the whole pipeline (decode, score, encode,
# write to a scratch folder) with and without the contract's checks,
# profiles, drift and guards, on the same lake, runs interleaved, in one run.
#
#   benches/checks_overhead.sh [--rows N] [--repeat R] [--work DIR] [--model M]
#
# The model defaults to the XGBoost benchmark model that benches/side_by_side.sh
# trains ($WORK/models/xgb.json; run that script once first, or pass --model).
# `lakescore model package` packages it with a 200,000-row reference drawn
# from the generator with another seed: a starting contract of a null or
# null-share rule and a range rule per feature, drift over every feature and
# the score. A second package adds `unique = ["customer_id"]`, which also has
# to read every id. Prints the median wall seconds of each and the ratios
# (target: checks add at most 15%).
set -euo pipefail

DEFAULT_REPEAT=5
# shellcheck source=benches/common.sh
source "$(dirname "$0")/common.sh"
bench_arguments "$@"
bench_lake
PACKAGE=$WORK/package-checks
rm -rf "$PACKAGE" "$PACKAGE-unique"
"$BIN/lakescore" -q model package --model "$MODEL" --reference "$REFERENCE" --output "$PACKAGE" 2> /dev/null
cp -r "$PACKAGE" "$PACKAGE-unique"
sed -i 's/^\[table\]$/[table]\nunique = ["customer_id"]/' "$PACKAGE-unique/lakescore.toml"

# Interleaved: slow drifts of this shared machine hit all three alike.
declare -A SECONDS_OF
for _ in $(seq "$REPEAT"); do
  for variant in none contract unique; do
    case $variant in
      none) args=(--model "$PACKAGE" --no-checks) ;;
      contract) args=(--model "$PACKAGE") ;;
      unique) args=(--model "$PACKAGE-unique") ;;
    esac
    start=$(date +%s.%N)
    "$BIN/lakescore" -q bench "${args[@]}" --input "$LAKE" > /dev/null
    SECONDS_OF[$variant]+="$(echo "$(date +%s.%N) - $start" | bc) "
  done
done
none=$(echo "${SECONDS_OF[none]}" | median)
contract=$(echo "${SECONDS_OF[contract]}" | median)
unique=$(echo "${SECONDS_OF[unique]}" | median)
echo "rows $ROWS, model $MODEL, median of $REPEAT interleaved runs"
printf 'no checks (bench --no-checks)           %6.2f s\n' "$none"
printf 'contract, profiles, drift, guards       %6.2f s  x%.3f\n' "$contract" "$(echo "$contract / $none" | bc -l)"
printf '  ... and unique customer_id            %6.2f s  x%.3f\n' "$unique" "$(echo "$unique / $none" | bc -l)"
