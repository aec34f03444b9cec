# Shared by the overhead scripts (sourced, not run): their arguments, the
# release build, and the generated 10M-row lake and 200K-row reference that
# benches/side_by_side.sh also uses.
#
#   bench_arguments "$@"   sets ROWS, REPEAT (default $DEFAULT_REPEAT), WORK, MODEL
#   bench_lake             builds, generates what is missing; sets BIN, LAKE, REFERENCE
#   median                 the median of the numbers on stdin (spaces or lines)

bench_arguments() {
  ROWS=10000000
  REPEAT=${DEFAULT_REPEAT:-5}
  WORK=${WORK:-/tmp/lakescore-side-by-side}
  MODEL=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --rows) ROWS=$2; shift 2 ;;
      --repeat) REPEAT=$2; shift 2 ;;
      --work) WORK=$2; shift 2 ;;
      --model) MODEL=$2; shift 2 ;;
      *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
  done
  MODEL=${MODEL:-$WORK/models/xgb.json}
  [ -f "$MODEL" ] || { echo "no model at $MODEL: run benches/side_by_side.sh once, or pass --model" >&2; exit 2; }
}

bench_lake() {
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$repo"
  cargo build --release --quiet --bin lakescore --bin gen-lake
  BIN=${CARGO_TARGET_DIR:-$repo/target}/release
  mkdir -p "$WORK"
  LAKE=$WORK/customers-$ROWS
  if [ ! -f "$LAKE/.complete" ]; then
    rm -rf "$LAKE"
    "$BIN/gen-lake" "$LAKE" --rows "$ROWS" --files 8 --seed 7
    touch "$LAKE/.complete"
  fi
  REFERENCE=$WORK/reference-200000
  if [ ! -f "$REFERENCE/.complete" ]; then
    rm -rf "$REFERENCE"
    "$BIN/gen-lake" "$REFERENCE" --rows 200000 --files 1 --seed 3 --dates 2026-11-20
    touch "$REFERENCE/.complete"
  fi
  # Warm the page cache: every variant reads a warm lake.
  cat "$LAKE"/dt=*/*.parquet > /dev/null
}

median() {
  tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'
}
