#!/usr/bin/env bash
# Runs lakescore's fuzz targets (fuzz/fuzz_targets, one per parser of
# untrusted bytes), each for SECONDS (default 60) on its corpus
# (fuzz/corpus/<target>, unpacked from the committed fuzz/corpora/<target>.tar.xz
# when missing; fuzz/pack.sh packs it again) and seeds (fuzz/seeds/<target>: real files made by
# the libraries, from tests/fixtures and datasets/sample), under libFuzzer's
# limits: 2 GB of memory, 10 s per input. A panic, a hang or memory past the
# limit fails the run and leaves the input in fuzz/artifacts/<target>/;
# make it a case of tests/it/fuzzed.rs (tests/fixtures/fuzz/<target>/) once
# fixed.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]
#
# Needs a nightly toolchain and cargo-fuzz (installed here when missing).
# Built without a sanitizer (`-s none`): the code is safe Rust bar the few
# `unsafe` blocks the tests cover; what the targets look for is panics,
# hangs and unbounded memory, and an uninstrumented build runs many times
# more inputs per second.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(onnx ubjson xgboost_json lightgbm manifest policy parquet)

if ! rustup toolchain list | grep -q '^nightly' && ! rustup toolchain install nightly --profile minimal; then
  echo "WARNING: no nightly toolchain and none can be installed here: fuzz targets not run" >&2
  exit 0
fi
cargo fuzz --version > /dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2

cargo +nightly fuzz build -s none
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in "${TARGETS[@]}"; do
  if [ ! -d "fuzz/corpus/$target" ] && [ -f "fuzz/corpora/$target.tar.xz" ]; then
    mkdir -p fuzz/corpus
    xz -dc "fuzz/corpora/$target.tar.xz" | tar -C fuzz/corpus -xf -
  fi
  mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
  echo "== fuzz $target for ${SECONDS_EACH} s"
  status=0
  cargo +nightly fuzz run -s none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$target/" > "$log" 2>&1 || status=$?
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$log" || true
  if [ "$status" != 0 ]; then
    grep -E '^(==[0-9]+==|SUMMARY|thread .* panicked|Test unit written)' "$log" >&2 || tail -20 "$log" >&2
    echo "fuzz target $target failed (exit $status); an input that made it fail is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
