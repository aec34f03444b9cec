//! A fully connected layer, `act(x W + b)`, as one candle custom op: the
//! bias and the activation are one pass over the product instead of two
//! (candle's matmul, then bias, then activation), and the matrix product
//! runs on the calling thread (the
//! pipeline already runs one block per core; candle's own matmul would fork
//! again inside each block and spin on the join).
//!
//! [`super::graph`] compiles a `Gemm` with constant weights and bias (and
//! the `Relu` that alone reads it) into this op. On a GPU the layer is
//! candle's CUDA matmul (cuBLAS), bias and ReLU, with the weights uploaded
//! once per device.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};

use crate::device::PerDevice;

/// Weights and bias of a layer, in float32.
#[derive(Debug)]
pub struct Dense {
    /// `(k, n)` row-major: input `k` to output `n`, alpha already applied.
    weights: Vec<f32>,
    /// `n` values, beta already applied (zeros without a bias).
    bias: Vec<f32>,
    pub k: usize,
    pub n: usize,
    pub relu: bool,
    /// `(k, n)` weights and `(1, n)` bias on a GPU, made on first use there.
    on_device: PerDevice<(Tensor, Tensor)>,
}

impl Dense {
    /// `weights_kn` is `(k, n)` row-major.
    pub fn new(weights_kn: Vec<f32>, bias: Vec<f32>, k: usize, n: usize, relu: bool) -> Dense {
        debug_assert_eq!(weights_kn.len(), k * n);
        debug_assert_eq!(bias.len(), n);
        Dense {
            weights: weights_kn,
            bias,
            k,
            n,
            relu,
            on_device: PerDevice::default(),
        }
    }

    /// `(m, k)` f32 in, any strides; `(m, n)` out.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() {
            return x.apply_op1_no_bwd(self);
        }
        let device = x.device();
        let on_device = self.on_device.get_or_upload(device, || {
            Ok(Arc::new((
                Tensor::from_slice(&self.weights, (self.k, self.n), device)?,
                Tensor::from_slice(&self.bias, (1, self.n), device)?,
            )))
        })?;
        let (weights, bias) = &*on_device;
        let y = x.contiguous()?.matmul(weights)?.broadcast_add(bias)?;
        if self.relu { y.relu() } else { Ok(y) }
    }
}

impl Dense {
    /// The bias and the activation, in one pass over the product.
    fn finish(&self, out: &mut [f32]) {
        for row in out.chunks_exact_mut(self.n.max(1)) {
            if self.relu {
                row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v = (*v + b).max(0.0));
            } else {
                row.iter_mut().zip(&self.bias).for_each(|(v, b)| *v += b);
            }
        }
    }
}

impl CustomOp1 for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(values) = storage else {
            candle_core::bail!("dense layer: the input must be float32");
        };
        let (m, k) = layout.shape().dims2()?;
        if k != self.k {
            candle_core::bail!("dense layer: input has {k} columns, the weights {}", self.k);
        }
        let stride = layout.stride();
        let (row_stride, col_stride) = (stride[0], stride[1]);
        let start = layout.start_offset();
        // The furthest element the strides reach must be inside the storage.
        let last = if m == 0 || k == 0 {
            start
        } else {
            start + (m - 1) * row_stride + (k - 1) * col_stride
        };
        if last >= values.len().max(1) && m > 0 && k > 0 {
            candle_core::bail!("dense layer: the input layout runs past its storage");
        }
        let n = self.n;
        if m == 0 || k == 0 || n == 0 {
            // No product: the bias alone (zeros for an empty matrix).
            let mut out = vec![0f32; m * n];
            self.finish(&mut out);
            return Ok((CpuStorage::F32(out), Shape::from((m, n))));
        }
        // Not zeroed first: with `read_dst` false the product writes every
        // element (zeroing was a twelfth of an MLP's time).
        let mut out: Vec<f32> = Vec::with_capacity(m * n);
        {
            // SAFETY: every pointer and stride describes memory checked above
            // (input), allocated here (`out`: capacity m x n, row-major) or
            // owned by `self` (`weights`: k x n row-major); `gemm` reads and
            // writes nothing else, and with `read_dst` false and k > 0 it
            // writes all m x n outputs, so the length may then be set.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    out.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
                    1,
                    n as isize,
                    false,
                    values.as_ptr().add(start),
                    col_stride as isize,
                    row_stride as isize,
                    self.weights.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                out.set_len(m * n);
            }
        }
        self.finish(&mut out);
        Ok((CpuStorage::F32(out), Shape::from((m, n))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Against the plain triple loop, on a transposed (strided) input as the
    /// graph feeds it, with and without the ReLU.
    #[test]
    fn dense_layers_match_the_definition() {
        let (m, k, n) = (37, 5, 3);
        let x_km: Vec<f32> = (0..k * m).map(|i| ((i * 7919) % 23) as f32 / 7.0 - 1.5).collect();
        let w: Vec<f32> = (0..k * n).map(|i| ((i * 31) % 11) as f32 / 5.0 - 1.0).collect();
        let b = vec![0.25, -0.5, 1.0];
        let x = Tensor::from_slice(&x_km, (k, m), &Device::Cpu).unwrap().t().unwrap();
        for relu in [false, true] {
            let y = Dense::new(w.clone(), b.clone(), k, n, relu).forward(&x).unwrap();
            let y: Vec<Vec<f32>> = y.to_vec2().unwrap();
            for r in 0..m {
                for c in 0..n {
                    let mut e = b[c] as f64;
                    for j in 0..k {
                        e += x_km[j * m + r] as f64 * w[j * n + c] as f64;
                    }
                    let e = if relu { e.max(0.0) } else { e };
                    assert!((y[r][c] as f64 - e).abs() < 1e-5, "row {r} col {c}: {} vs {e}", y[r][c]);
                }
            }
        }
    }
}
