#!/usr/bin/env bash
# The GPU check (issue 8), one call of a few minutes on a machine with an
# NVIDIA GPU, from the bundle benches/gpu-bundle.sh built (carried as .gpu):
#
#   1. parity: the tree kernel against the CPU evaluator, bit for bit, on
#      fresh random ensembles and rows (every library, set splits, several
#      groups, ONNX MIN/MAX, every lane count); then the CUDA twin of every
#      model test (the XGBoost and LightGBM fixtures, the ONNX fixtures, the
#      five sample models), with LAKESCORE_TEST_REQUIRE_GPU=1 so that no GPU
#      is a failure, not a skip;
#   2. the tree kernel alone (benches/cuda_trees.rs): 300 trees of depth 6
#      and 8 over 34 features, 1M, 10M and 50M rows, row·trees per second,
#      beside the device's measured copy bandwidth;
#   3. end to end on a freshly generated 10M-row lake: each benchmark model
#      scored with `--device cpu` on every core and with `--device cuda`,
#      wall seconds and thread-seconds per stage, and the two outputs
#      compared per customer (1e-6 for linear and tree models, 1e-5 for the
#      MLP);
#   4. one table (also $LOGS/gpu-check.md), then exit 1 if any check failed.
#
#   bash benches/gpu-check.sh            (on the GPU machine, in the repository)
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_ROWS=200000 GPU_CHECK_KERNEL_ROWS=100000 bash benches/gpu-check.sh
#                                        (a rehearsal of the script itself on a machine without one:
#                                         `cuda` runs become `cpu`, GPU tests skip)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
OUT=${OUT:-/tmp/gpu-check-out}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
ROWS=${GPU_CHECK_ROWS:-10000000}
KERNEL_ROWS=${GPU_CHECK_KERNEL_ROWS:-1000000,10000000,50000000}
SEED=${GPU_CHECK_SEED:-$((RANDOM * 32768 + RANDOM))}
mkdir -p "$OUT" "$WORK"
rm -rf "${WORK:?}"/*
# Logs, reports and results go to LOGS; OUT gets the table, the results and
# one archive of the rest (the device tool returns at most 8 files).
LOGS=$WORK/logs
mkdir -p "$LOGS"
RESULTS=$LOGS/results.tsv
: > "$RESULTS"
started=$(date +%s)
say() { echo "== [$(($(date +%s) - started)) s] $*"; }
# What has been gathered so far, in OUT after each stage: a call cut off
# by its time limit still returns the stages it finished.
snapshot() {
  cp "$RESULTS" "$OUT/" 2> /dev/null
  tar -C "$WORK" -czf "$OUT/logs.tar.gz" logs $(cd "$WORK" && ls -d target/criterion 2> /dev/null)
}

say "unpacking .gpu/bundle.tar.xz"
python3 -c 'import tarfile, sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' .gpu/bundle.tar.xz "$WORK/bundle" || exit 1
BIN=$WORK/bundle/bin
MODELS=$WORK/bundle/models
cat "$WORK/bundle/BUILD"
# The integration tests run the binary and read the fixtures at the paths
# they were built at: put this repository there.
BUILD_DIR=$(sed -n 's/^build_dir=//p' "$WORK/bundle/BUILD")
if [ "$(cd "$BUILD_DIR" 2> /dev/null && pwd -P)" != "$REPO" ]; then
  if [ -e "$BUILD_DIR" ]; then
    echo "the tests were built in $BUILD_DIR, which exists here and is not this repository" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$BUILD_DIR")" && ln -s "$REPO" "$BUILD_DIR"
fi
mkdir -p target/release && cp "$BIN/lakescore" target/release/lakescore

# cuBLAS and cuRAND: from the image's Python packages (the driver brings libcuda).
# GPU_CHECK_LIBS: folders to search first (a rehearsal passes the stub's).
NV=$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2> /dev/null)
if [ ! -f "$NV/libcublas.so.13" ] && [ -z "${GPU_CHECK_LIBS:-}" ]; then
  NV=$(dirname "$(find /usr /opt /root /lib -name libcublas.so.13 2> /dev/null | head -1)")
fi
export LD_LIBRARY_PATH=${GPU_CHECK_LIBS:+$GPU_CHECK_LIBS:}$NV:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader > "$LOGS/gpu.txt" 2>&1 ||
  echo "no nvidia-smi" > "$LOGS/gpu.txt"
cat "$LOGS/gpu.txt"
THREADS=$(nproc)
echo "cores: $THREADS, seed: $SEED, libraries: $NV"

# ---- 1. parity
[ "$DEVICE" = cuda ] && export LAKESCORE_TEST_REQUIRE_GPU=1
say "parity: the kernel against the CPU evaluator"
timeout 300 "$BIN/lib-tests" trees::cuda:: > "$LOGS/parity-kernel.log" 2>&1
echo -e "parity\tkernel vs CPU evaluator (fresh random ensembles, every lane count)\t$?" >> "$RESULTS"
grep -E "^test |test result|seed" "$LOGS/parity-kernel.log"
say "parity: every model test's CUDA twin"
timeout 300 "$BIN/it-tests" on_cuda --test-threads 8 > "$LOGS/parity-models.log" 2>&1
echo -e "parity\tmodel tests on CUDA (tree and ONNX fixtures, 5 sample models)\t$?" >> "$RESULTS"
grep -E "^test |test result" "$LOGS/parity-models.log"
if [ "$DEVICE" = cuda ] && ! grep -q "test result: ok. [1-9]" "$LOGS/parity-models.log"; then
  echo -e "parity\tno CUDA model test ran\t1" >> "$RESULTS"
fi
snapshot

# ---- 2. the kernel alone
say "the tree kernel alone: rows $KERNEL_ROWS"
if [ "$DEVICE" = cuda ]; then
  # The device's copy bandwidth (bytes read + written), the floor for
  # reading the features once.
  python3 - > "$LOGS/bandwidth.txt" 2>&1 << 'EOF'
import torch
x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
for _ in range(3):
    y.copy_(x)
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
times = []
for _ in range(10):
    start.record(); y.copy_(x); end.record(); torch.cuda.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
times.sort()
print(f"{2 * x.numel() / times[len(times) // 2] / 1e12:.2f}")
EOF
  cat "$LOGS/bandwidth.txt"
  (cd "$WORK" && CRITERION_HOME=$WORK/target/criterion LAKESCORE_BENCH_ROWS=$KERNEL_ROWS \
    timeout 240 "$BIN/cuda_trees" --bench > "$LOGS/kernel.log" 2>&1)
  echo -e "kernel\tcriterion run\t$?" >> "$RESULTS"
  grep -E "^cuda_trees|thrpt" "$LOGS/kernel.log"
  snapshot
fi

# ---- 3. end to end
say "end to end: generating a $ROWS-row lake (seed $SEED)"
timeout 180 "$BIN/gen-lake" "$WORK/lake" --rows "$ROWS" --files 16 --seed "$SEED" > "$LOGS/gen-lake.log" 2>&1 || {
  cat "$LOGS/gen-lake.log"
  exit 1
}
cat "$WORK"/lake/*/*.parquet > /dev/null
for m in logreg.json xgb.json lgbm.txt rf.onnx mlp.onnx; do
  model=$MODELS/$m
  [ -f "$model" ] || { echo "no benchmark model $m: skipped"; continue; }
  for run in cpu:cpu "$DEVICE:gpu"; do
    dev=${run%%:*}
    tag=${m%%.*}-${run##*:}
    t0=$(date +%s.%N)
    timeout 120 "$BIN/lakescore" -q score --model "$model" --input "$WORK/lake" --output "$WORK/out-$tag" \
      --device "$dev" --threads "$THREADS" --report "$LOGS/report-$tag.json" > "$LOGS/score-$tag.log" 2>&1
    code=$?
    t1=$(date +%s.%N)
    echo -e "e2e\t$tag\t$code\t$(awk "BEGIN { print $t1 - $t0 }")" >> "$RESULTS"
    [ $code = 0 ] || tail -5 "$LOGS/score-$tag.log"
  done
  tolerance=1e-6
  [ "$m" = mlp.onnx ] && tolerance=1e-5
  # Every score column, per customer (benches/compare_scores.py).
  verdict=$(python3 benches/compare_scores.py "$WORK/out-${m%%.*}-cpu" "$WORK/out-${m%%.*}-gpu" "$DEVICE" \
    --same-columns --tolerance "$tolerance" 2>&1)
  code=$?
  echo -e "compare\t${m%%.*}\t$code\t$(echo "$verdict" | tr '\n' ' ')" >> "$RESULTS"
  snapshot
  rm -rf "$WORK/out-${m%%.*}-cpu" "$WORK/out-${m%%.*}-gpu"
done

# ---- 4. the table
say "done"
python3 benches/gpu_check_table.py "$LOGS" "$WORK" "$DEVICE" "$KERNEL_ROWS" | tee "$LOGS/gpu-check.md"
cp "$LOGS/gpu-check.md" "$OUT/"
snapshot
! cut -f3 "$RESULTS" | grep -qv '^0$'
