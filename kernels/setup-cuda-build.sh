#!/bin/bash
# Prepares a CUDA 13.0 build toolchain on a machine without a GPU or a CUDA install, from
# PyPI's NVIDIA wheels, so that `cargo build --features cuda` (candle-core's cuda backend plus
# our kernels/) works here, and the binary can be carried to a machine with an H100/H200.
#
# usage: source kernels/setup-cuda-build.sh [DIR]     (DIR default /tmp/lakescore-cuda)
# then:  cargo build --release --features cuda
# (With a normal CUDA install, nvcc on the PATH and CUDA_COMPUTE_CAP set, or
# nvidia-smi present, the feature alone is enough; this is for machines
# without one. .ci/run uses it to lint the feature; benches/gpu-bundle.sh to
# build what the GPU check runs.)
#
# What it does and why:
# - pip installs cuda-toolkit 13.0.2 (nvcc, headers, cudart, cublas, curand, nvrtc); ~1.2 GB.
#   Stay on 13.0: the GPU machines' driver (580) loads PTX up to CUDA 13.0.
# - The wheels ship no unversioned .so names, so it links lib*.so -> lib*.so.13 for the linker.
# - candle-core forces cudarc's 'dynamic-linking', which needs libcuda.so at link time; no wheel
#   has it, so it builds a link-time-only stub (SONAME libcuda.so.1). On the GPU machine the
#   driver's real libcuda.so.1 is used.
# - CUDA_COMPUTE_CAP=90 (Hopper, sm_90a) because there is no nvidia-smi here to ask.
# On the GPU machine, cublas/curand/cudart come from the image's Python packages:
#   NV=$(python3 -c 'import nvidia,os;print(os.path.join(list(nvidia.__path__)[0],"cu13","lib"))')
#   LD_LIBRARY_PATH=$NV:$LD_LIBRARY_PATH ./lakescore ...   (else: find / -name libcublas.so.13)
# A clean build with the cuda feature takes about 8 minutes here (nvcc compiles candle's kernels).
D=${1:-/tmp/lakescore-cuda}
mkdir -p "$D"
if [ ! -x "$D/venv/bin/python" ]; then python3 -m venv "$D/venv" || return 1 2>/dev/null || exit 1; fi
# (Whatever python3 the machine has: the venv's site-packages by its version.)
C=$("$D/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia/cu13
if [ ! -x "$C/bin/nvcc" ]; then
  "$D/venv/bin/pip" install -q 'cuda-toolkit[nvcc,cudart,cublas,curand,nvrtc,cccl,crt,nvvm]==13.0.2' || return 1 2>/dev/null || exit 1
fi
S=$D/cudaroot; mkdir -p "$S/lib/stubs"
for l in cublas cublasLt cudart nvrtc; do ln -sf "$C/lib/lib$l.so.13" "$S/lib/lib$l.so"; done
ln -sf "$C/lib/libcurand.so.10" "$S/lib/libcurand.so"
if [ ! -f "$S/lib/stubs/libcuda.so" ]; then
  cargo fetch -q >/dev/null 2>&1
  grep -hoE '^pub unsafe fn cu[A-Za-z0-9_]+' ~/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs \
    | awk '{print $4}' | sort -u | sed 's/.*/int &(void){return 999;}/' > "$S/stub_cuda.c"
  [ -s "$S/stub_cuda.c" ] || { echo "no cudarc 0.19 sources in ~/.cargo/registry: run 'cargo fetch' with the cuda feature first"; return 1 2>/dev/null || exit 1; }
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$S/lib/stubs/libcuda.so" "$S/stub_cuda.c"
fi
# To run a cuda build here (no GPU): the stub as the driver's name, so the
# binary starts and `--device cuda` fails cleanly; the cpu device works.
mkdir -p "$S/run" && ln -sf "$S/lib/stubs/libcuda.so" "$S/run/libcuda.so.1"
export LAKESCORE_CUDA_RUN_LIBS=$S/run:$C/lib
export PATH=$C/bin:$PATH CUDA_HOME=$S CUDA_COMPUTE_CAP=90 CUDARC_CUDA_VERSION=13000
echo "CUDA build environment ready: nvcc $(nvcc --version | tail -1)"
echo "(to run a cuda build on this machine: LD_LIBRARY_PATH=\$LAKESCORE_CUDA_RUN_LIBS)"
