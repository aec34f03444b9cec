#!/usr/bin/env bash
# Minimises each fuzz target's working corpus (fuzz/corpus/<target>/, grown
# by fuzz/run.sh) with `cargo fuzz cmin` and packs it into the committed
# archive fuzz/corpora/<target>.tar.xz, which fuzz/run.sh unpacks when the
# working corpus is missing. Thousands of small files would weigh on every
# clone; one archive per target does not.
#
#   bash fuzz/pack.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(onnx ubjson xgboost_json lightgbm manifest policy parquet)
mkdir -p fuzz/corpora
for target in "${TARGETS[@]}"; do
  [ -d "fuzz/corpus/$target" ] || { echo "no fuzz/corpus/$target to pack" >&2; exit 1; }
  cargo +nightly fuzz cmin -s none "$target" "fuzz/corpus/$target" -- -rss_limit_mb=2048 -timeout=10 > /dev/null 2>&1
  # Sorted names and fixed metadata: the same corpus packs to the same bytes.
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C fuzz/corpus -cf - "$target" \
    | xz -9 -T1 > "fuzz/corpora/$target.tar.xz"
  echo "$target: $(ls "fuzz/corpus/$target" | wc -l) inputs, $(du -h "fuzz/corpora/$target.tar.xz" | cut -f1) packed"
done
