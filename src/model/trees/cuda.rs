//! The tree evaluator on a CUDA GPU: the compiled program's arrays
//! ([`DeviceLayout`]) uploaded once per model and device, and the kernel in
//! `kernels/trees.cu` (PTX made by build.rs, loaded on first use and cached
//! by candle's device) run as the CUDA half of the evaluator's candle op.

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, WrapErr};
use candle_core::{Layout, Shape};

use super::kernel::{DeviceLayout, DeviceProgram};
use crate::device::PerDevice;

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/trees.ptx"));
const MODULE: &str = "lakescore-trees";

/// Threads per block (a multiple of the warp).
const BLOCK_THREADS: u32 = 256;

/// Shared memory a block may take without opting in to more.
const SHARED_BYTES: usize = 48 * 1024;

/// Per block, at most this much shared memory, so that 8 blocks of 256
/// threads (the most an SM runs) fit in an H100's 228 KB: full occupancy.
const SHARED_BYTES_FOR_FULL_OCCUPANCY: usize = 28 * 1024;

/// A program's arrays on one device.
struct Uploaded<T> {
    views: CudaSlice<u32>,
    steps: CudaSlice<u8>,
    leaf_values: CudaSlice<T>,
    trees: CudaSlice<u32>,
    tree_order: CudaSlice<u32>,
    group_start: CudaSlice<u32>,
    base_margin: CudaSlice<T>,
    categorical: CudaSlice<u32>,
    words: CudaSlice<u32>,
    members: CudaSlice<T>,
    n_features: usize,
    n_views: usize,
    n_groups: usize,
    aggregate: u32,
}

/// A program on one device, in its library's precision.
enum OnDevice {
    F32(Uploaded<f32>),
    F64(Uploaded<f64>),
}

/// The float types the kernel has an instance for.
trait KernelFloat: DeviceRepr + CudaDType + Copy + Default + Send + Sync + 'static {
    const KERNEL: &'static str;
}

impl KernelFloat for f32 {
    const KERNEL: &'static str = "trees_f32";
}

impl KernelFloat for f64 {
    const KERNEL: &'static str = "trees_f64";
}

/// Copies `values` to the device; an empty array becomes one default
/// element (a zero-length allocation is an error in the driver, and the
/// kernel never reads past the lengths the other arrays give).
fn upload<T: DeviceRepr + Copy + Default>(device: &CudaDevice, values: &[T]) -> candle_core::Result<CudaSlice<T>> {
    let stream = device.cuda_stream();
    if values.is_empty() {
        stream.clone_htod(&[T::default()]).w()
    } else {
        stream.clone_htod(values).w()
    }
}

impl<T: KernelFloat> Uploaded<T> {
    fn new(device: &CudaDevice, layout: DeviceLayout<T>) -> candle_core::Result<Uploaded<T>> {
        Ok(Uploaded {
            views: upload(device, &layout.views)?,
            steps: upload(device, &layout.steps)?,
            leaf_values: upload(device, &layout.leaf_values)?,
            trees: upload(device, &layout.trees)?,
            tree_order: upload(device, &layout.tree_order)?,
            group_start: upload(device, &layout.group_start)?,
            base_margin: upload(device, &layout.base_margin)?,
            categorical: upload(device, &layout.categorical)?,
            words: upload(device, &layout.words)?,
            members: upload(device, &layout.members)?,
            n_features: layout.n_features,
            n_views: layout.n_views,
            n_groups: layout.n_groups,
            aggregate: layout.aggregate,
        })
    }
}

/// How many lanes share a row: the caller's choice (1, 2, 4, 8, 16 or 32;
/// the benchmarks compare them), else the fewest that keep the views of a
/// 256-thread block within the shared memory of full occupancy. Every
/// choice gives the same, exact, sums.
fn lanes_per_row(row_bytes: usize, chosen: Option<u32>) -> candle_core::Result<u32> {
    if let Some(split) = chosen {
        if !(split.is_power_of_two() && split <= 32) {
            candle_core::bail!("tree ensemble: {split} lanes per row; expected 1, 2, 4, 8, 16 or 32");
        }
        return Ok(split);
    }
    let mut split = 1;
    while split < 32 && (BLOCK_THREADS / split) as usize * row_bytes > SHARED_BYTES_FOR_FULL_OCCUPANCY {
        split *= 2;
    }
    Ok(split)
}

/// Margins `(n_rows, n_groups)` of a `(n_features, n_rows)` f64 tensor on a
/// CUDA device: [`super::eval::evaluate`]'s CUDA half.
pub(crate) fn margins(
    uploads: &PerDevice<dyn std::any::Any + Send + Sync>,
    device_program: impl FnOnce() -> DeviceProgram,
    storage: &CudaStorage,
    layout: &Layout,
    lanes_per_row: Option<u32>,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let device = storage.device();
    let on_device = uploads.get_or_upload(&candle_core::Device::Cuda(device.clone()), || {
        Ok(std::sync::Arc::new(match device_program() {
            DeviceProgram::F32(layout) => OnDevice::F32(Uploaded::new(device, layout)?),
            DeviceProgram::F64(layout) => OnDevice::F64(Uploaded::new(device, layout)?),
        }))
    })?;
    match on_device.downcast_ref::<OnDevice>() {
        Some(OnDevice::F32(program)) => run(program, device, storage, layout, lanes_per_row),
        Some(OnDevice::F64(program)) => run(program, device, storage, layout, lanes_per_row),
        None => candle_core::bail!("tree ensemble: another kind of upload is cached for this program"),
    }
}

fn run<T: KernelFloat>(
    program: &Uploaded<T>,
    device: &CudaDevice,
    storage: &CudaStorage,
    layout: &Layout,
    chosen_lanes_per_row: Option<u32>,
) -> candle_core::Result<(CudaStorage, Shape)> {
    let (n_features, n_rows) = layout.shape().dims2()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("tree ensemble: features must be contiguous");
    };
    let features = storage.as_cuda_slice::<f64>()?;
    let features = features.slice(start..end);
    if n_features != program.n_features {
        candle_core::bail!(
            "tree ensemble: {n_features} feature rows, the model has {}",
            program.n_features
        );
    }
    let n_groups = program.n_groups;
    // SAFETY: the kernel writes every one of the n_rows x n_groups values
    // (each row's lane 0, for each group) before anything reads them.
    let out = unsafe { device.alloc::<T>((n_rows * n_groups).max(1))? };
    if n_rows > 0 {
        // Odd strides keep the lanes reading one view of different rows in
        // different shared-memory banks.
        let stride = program.n_views | 1;
        let row_bytes = stride * std::mem::size_of::<T>();
        if row_bytes > SHARED_BYTES {
            candle_core::bail!(
                "tree ensemble: {} views per row need {row_bytes} bytes of shared memory, more than the CUDA \
                 kernel's {SHARED_BYTES}; score this model with `--device cpu`",
                program.n_views
            );
        }
        let split = lanes_per_row(row_bytes, chosen_lanes_per_row)?;
        // Whole warps, and rows that fit in shared memory.
        let rows_per_warp = 32 / split;
        if rows_per_warp as usize * row_bytes > SHARED_BYTES {
            candle_core::bail!(
                "tree ensemble: {split} lanes per row put {rows_per_warp} rows of {row_bytes} bytes in a warp, more \
                 than {SHARED_BYTES} bytes of shared memory; choose more lanes per row"
            );
        }
        let max_rows = (SHARED_BYTES / row_bytes) as u32;
        let rows_per_block = (BLOCK_THREADS / split).min(max_rows);
        let rows_per_block = (rows_per_block / rows_per_warp).max(1) * rows_per_warp;
        debug_assert!(rows_per_block as usize * row_bytes <= SHARED_BYTES);
        let threads = rows_per_block * split;
        let blocks = (n_rows as u64).div_ceil(u64::from(rows_per_block));
        let config = LaunchConfig {
            grid_dim: (
                u32::try_from(blocks).map_err(|_| candle_core::Error::Msg("too many rows".into()))?,
                1,
                1,
            ),
            block_dim: (threads, 1, 1),
            shared_mem_bytes: rows_per_block * row_bytes as u32,
        };
        let func = device.get_or_load_custom_func(T::KERNEL, MODULE, PTX)?;
        let mut builder = func.builder();
        let n_rows_arg = n_rows as u64;
        let n_views = program.n_views as u32;
        let n_groups_arg = n_groups as u32;
        let stride = stride as u32;
        builder.arg(&features);
        builder.arg(&n_rows_arg);
        builder.arg(&n_views);
        builder.arg(&program.views);
        builder.arg(&program.steps);
        builder.arg(&program.leaf_values);
        builder.arg(&program.trees);
        builder.arg(&program.tree_order);
        builder.arg(&program.group_start);
        builder.arg(&n_groups_arg);
        builder.arg(&program.base_margin);
        builder.arg(&program.aggregate);
        builder.arg(&program.categorical);
        builder.arg(&program.words);
        builder.arg(&program.members);
        builder.arg(&split);
        builder.arg(&stride);
        builder.arg(&out);
        // SAFETY: the arguments are the kernel's, in its order and types
        // (kernels/trees.cu, `TREES_KERNEL`); every array was built by
        // `device_layout` from one valid program, so the indices it holds
        // stay inside the arrays; `out` holds n_rows x n_groups values.
        unsafe { builder.launch(config) }.w()?;
    }
    let out = CudaStorage::wrap_cuda_slice(out, device.clone());
    Ok((out, Shape::from((n_rows, n_groups))))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use candle_core::{Device, Tensor};

    use crate::device::gpu_for_tests;
    use crate::model::trees::Library;
    use crate::model::trees::eval::{Compiled, evaluate_with};
    use crate::model::trees::synthetic::{Shape, random_ensemble, random_ensembles_every_aggregate, random_rows};

    fn margins(
        compiled: &Arc<Compiled>,
        values: &[f64],
        n_rows: usize,
        device: &Device,
        split: Option<u32>,
    ) -> Vec<f64> {
        let features = Tensor::from_slice(values, (values.len() / n_rows, n_rows), device).unwrap();
        let out = evaluate_with(compiled, &features, split).unwrap();
        out.flatten_all()
            .unwrap()
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The kernel against the CPU evaluator, bit for bit, for every library,
    /// set splits, deep unbalanced trees, several groups and the ONNX
    /// aggregates, at every lane count, on fresh random rows each run (the
    /// seed is printed) with NaN, zeros and a denormal.
    #[test]
    fn the_kernel_scores_like_the_cpu_bit_for_bit() {
        let Some(gpu) = gpu_for_tests() else { return };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        eprintln!("seed {seed}");
        let mut checked = 0;
        for library in [Library::XGBoost, Library::LightGBM, Library::Onnx] {
            for (leaves, balanced, categorical_share, n_groups) in [
                (64, true, 0.0, 1),
                (256, true, 0.0, 3),
                (300, false, 0.2, 1),
                (40, false, 0.2, 3),
                (1, true, 0.0, 1),
            ] {
                let shape = Shape {
                    library,
                    n_trees: 37,
                    n_features: 13,
                    n_groups,
                    leaves,
                    balanced,
                    categorical_share,
                    distinct_thresholds: None,
                    seed: seed.wrapping_add(checked),
                };
                let ensembles = random_ensembles_every_aggregate(&shape);
                // Not a multiple of any block's rows.
                let n_rows = 5003;
                let mut values = random_rows(n_rows, shape.n_features, 0.1, shape.seed ^ 0x5eed);
                values[3] = 0.0;
                values[4] = -0.0;
                values[5] = 1e-40;
                for ensemble in &ensembles {
                    let compiled = Arc::new(Compiled::new(ensemble));
                    let cpu = margins(&compiled, &values, n_rows, &Device::Cpu, None);
                    for split in [None, Some(1), Some(2), Some(4), Some(8), Some(32)] {
                        let cuda = margins(&compiled, &values, n_rows, &gpu, split);
                        assert_eq!(cuda.len(), cpu.len());
                        for (i, (c, e)) in cuda.iter().zip(&cpu).enumerate() {
                            assert_eq!(
                                c.to_bits(),
                                e.to_bits(),
                                "{shape:?} {:?} lanes {split:?} value {i}: cuda {c}, cpu {e}",
                                ensemble.aggregate
                            );
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 25);
    }

    /// An empty block, and a block of one row.
    #[test]
    fn tiny_blocks() {
        let Some(gpu) = gpu_for_tests() else { return };
        let shape = Shape {
            library: Library::XGBoost,
            n_trees: 5,
            n_features: 4,
            n_groups: 2,
            leaves: 16,
            balanced: true,
            categorical_share: 0.0,
            distinct_thresholds: None,
            seed: 1,
        };
        let compiled = Arc::new(Compiled::new(&random_ensemble(&shape)));
        let values = random_rows(1, 4, 0.0, 2);
        assert_eq!(
            margins(&compiled, &values, 1, &gpu, None),
            margins(&compiled, &values, 1, &Device::Cpu, None)
        );
        let empty = Tensor::zeros((4, 0), candle_core::DType::F64, &gpu).unwrap();
        assert_eq!(evaluate_with(&compiled, &empty, None).unwrap().dims(), &[0, 2]);
    }
}
