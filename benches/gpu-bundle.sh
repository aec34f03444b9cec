#!/usr/bin/env bash
# Builds what the GPU check (benches/gpu-check.sh) runs, on a machine with no
# GPU: every binary with `--features cuda`, stripped and packed with the
# benchmark models into .gpu/bundle.tar.xz (about 40 MB), which the device
# machine receives as a carried path.
#
#   bash benches/gpu-bundle.sh [--models DIR]
#
# DIR holds the benchmark models of benches/side_by_side.sh (logreg.json,
# xgb.json and lgbm.txt from ../shared/bench/train_models.py; rf.onnx and
# mlp.onnx from benches/onnx_models.py), default
# /tmp/lakescore-side-by-side/{models,onnx-models}; a missing one is left
# out of the end-to-end table (the sample models in datasets/ stand in).
#
# The CUDA toolchain comes from kernels/setup-cuda-build.sh (PyPI wheels, no
# GPU or CUDA install needed). A clean build takes about 10 minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
MODELS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --models) MODELS=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# shellcheck source=../kernels/setup-cuda-build.sh
source kernels/setup-cuda-build.sh > /dev/null

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/bin" "$STAGE/models"

echo "== building with --features cuda (release)"
cargo build --release --features cuda --bin lakescore --bin gen-lake
# The test and bench executables' paths, from cargo's own report.
executables() {
  cargo "$@" --features cuda --no-run --message-format=json 2> "$STAGE/cargo.log" |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in sys.argv[1:]:
        print(m["target"]["kind"][0], m["target"]["name"], m["executable"])
' lakescore it cuda_trees
}
{ executables test --release --lib --test it; executables bench --bench cuda_trees; } > "$STAGE/executables" ||
  { cat "$STAGE/cargo.log" >&2; exit 1; }
cat "$STAGE/executables"
while read -r kind name path; do
  case "$kind/$name" in
    lib/lakescore) strip -o "$STAGE/bin/lib-tests" "$path" ;;
    test/it) strip -o "$STAGE/bin/it-tests" "$path" ;;
    bench/cuda_trees) strip -o "$STAGE/bin/cuda_trees" "$path" ;;
  esac
done < "$STAGE/executables"
strip -o "$STAGE/bin/lakescore" target/release/lakescore
strip -o "$STAGE/bin/gen-lake" target/release/gen-lake
for b in lakescore gen-lake lib-tests it-tests cuda_trees; do
  [ -x "$STAGE/bin/$b" ] || { echo "missing executable: $b" >&2; exit 1; }
done

BENCH=/tmp/lakescore-side-by-side
for m in logreg.json xgb.json lgbm.txt rf.onnx mlp.onnx; do
  for dir in $MODELS "$BENCH/models" "$BENCH/onnx-models"; do
    if [ -f "$dir/$m" ]; then cp "$dir/$m" "$STAGE/models/"; break; fi
  done
done
echo "== models: $(ls "$STAGE/models" | tr '\n' ' ')"

# The integration tests find the binary and the fixtures by the paths they
# were built at; the check links those to wherever the repository lands.
cat > "$STAGE/BUILD" <<EOF
build_dir=$REPO
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo "+changes")
built=$(date -u +%Y-%m-%dT%H:%MZ)
nvcc=$(nvcc --version | tail -1)
EOF
mkdir -p .gpu
tar -C "$STAGE" -cJf .gpu/bundle.tar.xz BUILD bin models
ls -la .gpu/bundle.tar.xz
echo "carry .gpu, then on the GPU machine: bash benches/gpu-check.sh"
