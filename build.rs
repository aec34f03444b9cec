//! Compiles the CUDA kernels in `kernels/` to PTX when the `cuda` feature is
//! on (loaded lazily at run time, `src/model/trees/cuda.rs`). Without the
//! feature it does nothing, so default builds need no CUDA toolchain.

use std::path::PathBuf;
use std::process::Command;

/// Kernel sources, each compiled to `$OUT_DIR/<name>.ptx`.
const KERNELS: &[&str] = &["trees"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=kernels");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    println!("cargo::rerun-if-env-changed=NVCC");
    println!("cargo::rerun-if-env-changed=CUDA_COMPUTE_CAP");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    // PTX for this compute capability or newer: the driver compiles it for
    // the GPU it runs on (once, then from its cache). 7.5 (Turing) is the
    // oldest CUDA 13 supports; candle's own kernels read the same variable.
    let compute_cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "75".into());
    for kernel in KERNELS {
        let source = format!("kernels/{kernel}.cu");
        let ptx = out_dir.join(format!("{kernel}.ptx"));
        // No fast-math: the kernels compare and add in IEEE arithmetic, the
        // same as the CPU evaluator, bit for bit.
        let status = Command::new(&nvcc)
            .args([
                "--ptx",
                "-O3",
                "-std=c++17",
                &format!("-arch=compute_{compute_cap}"),
                "-o",
            ])
            .arg(&ptx)
            .arg(&source)
            .status()
            .unwrap_or_else(|error| {
                panic!(
                    "the `cuda` feature compiles {source} with `{nvcc}`, which could not run ({error}); \
                     install CUDA, or on a machine without a GPU `source kernels/setup-cuda-build.sh` first"
                )
            });
        assert!(status.success(), "`{nvcc}` failed to compile {source} ({status})");
    }
}
