//! "Same" 2-D convolution (stride 1, odd square kernel, zero padding `k / 2`) as one CPU op
//! with a hand-written backward, by im2col and matrix products.
//!
//! # Why
//! candle 0.11's CPU `conv2d` runs a direct tiled loop and its backward for the input a direct
//! transposed convolution built on dot products: on a Glow training step (28x28 MNIST, 32
//! channels) the two took about 70% of the time (`perf`). Written as matrix products the
//! convolution runs at the gemm rate:
//!
//! ```text
//! col_b  = im2col(x_b)               (C k k, H W)   row (c, ki, kj), column (i, j):
//!                                                   x_b[c, i + ki - k/2, j + kj - k/2] or 0
//! y_b    = W col_b + b               (O, H W)       W viewed as (O, C k k), b per row
//! dW     = Σ_b dy_b col_bᵀ           (O, C k k)
//! db     = Σ_b Σ_pixels dy_b         (O,)
//! dx_b   = col2im(Wᵀ dy_b)           (C, H, W)      the adjoint of im2col (scatter-add)
//! ```
//!
//! Batch items run in parallel (one im2col buffer per worker); a 1x1 kernel skips im2col.
//! Other devices fall back to candle's `conv2d`. Tests compare values and both gradients with
//! candle's composition.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, Parallelism, Real, View};
use super::host_op::{run2, run3, Kernel2, Kernel3};
use crate::{Error, Result};

/// `conv2d(x, w) + b` with stride 1 and "same" zero padding.
///
/// The bias is part of the op: added as a broadcast tensor, its forward pass and the reduction
/// of its gradient cost about as much as the convolution itself at these sizes.
///
/// # Shapes
/// `x: (B, C, H, W)`, `w: (O, C, k, k)` with `k` odd, `b: (O,)` `-> (B, O, H, W)`.
pub fn conv2d_same(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let geometry = Geometry::of(x.dims(), w.dims())?;
    if b.dims() != [geometry.outputs] {
        return Err(Error::shape("conv2d_same bias", format!("({},)", geometry.outputs), b.dims()));
    }
    if !x.device().is_cpu() {
        let y = x.conv2d(w, geometry.kernel / 2, 1, 1, 1)?;
        return Ok(y.broadcast_add(&b.reshape((1, (), 1, 1))?)?);
    }
    let (x, w, b) = (x.contiguous()?, w.contiguous()?, b.contiguous()?);
    Ok(x.apply_op3(&w, &b, Conv2dSame { geometry })?)
}

/// The sizes of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    outputs: usize,
    kernel: usize,
}

impl Geometry {
    fn of(x: &[usize], w: &[usize]) -> Result<Self> {
        let (&[batch, channels, height, width], &[outputs, w_channels, kh, kw]) = (x, w) else {
            return Err(Error::shape(
                "conv2d_same",
                "x (batch, channels, height, width) and w (out, channels, k, k)",
                &[x, w].concat(),
            ));
        };
        if w_channels != channels || kh != kw || kh % 2 == 0 {
            return Err(Error::shape(
                "conv2d_same weight",
                format!("(out, {channels}, k, k) with k odd"),
                w,
            ));
        }
        Ok(Self { batch, channels, height, width, outputs, kernel: kh })
    }

    /// Pixels per channel, `H W`.
    fn pixels(&self) -> usize {
        self.height * self.width
    }

    /// Rows of the im2col matrix, `C k k`.
    fn patch(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Writes `im2col(x_b)`, `(C k k, H W)` row-major, into `col`.
    fn im2col<T: Real>(&self, x_b: &[T], col: &mut [T]) {
        let (h, w, k, n) = (self.height, self.width, self.kernel, self.pixels());
        let pad = (k / 2) as isize;
        for (row, col_row) in col.chunks_exact_mut(n).enumerate() {
            let (c, ki, kj) = (row / (k * k), (row / k) % k, row % k);
            let (dy, dx) = (ki as isize - pad, kj as isize - pad);
            let channel = &x_b[c * n..(c + 1) * n];
            // Output columns j whose source column j + dx lies inside the image.
            let j0 = (-dx).max(0) as usize;
            let j1 = (w as isize - dx).min(w as isize).max(j0 as isize) as usize;
            for (i, out) in col_row.chunks_exact_mut(w).enumerate() {
                let si = i as isize + dy;
                if si < 0 || si >= h as isize {
                    out.fill(T::ZERO);
                    continue;
                }
                let src = &channel[si as usize * w..(si as usize + 1) * w];
                out[..j0].fill(T::ZERO);
                out[j1..].fill(T::ZERO);
                let s0 = (j0 as isize + dx) as usize;
                out[j0..j1].copy_from_slice(&src[s0..s0 + (j1 - j0)]);
            }
        }
    }

    /// `dx_b += col2im(col)`: the adjoint of [`Self::im2col`].
    fn col2im_add<T: Real>(&self, col: &[T], dx_b: &mut [T]) {
        let (h, w, k, n) = (self.height, self.width, self.kernel, self.pixels());
        let pad = (k / 2) as isize;
        for (row, col_row) in col.chunks_exact(n).enumerate() {
            let (c, ki, kj) = (row / (k * k), (row / k) % k, row % k);
            let (dy, dx) = (ki as isize - pad, kj as isize - pad);
            let channel = &mut dx_b[c * n..(c + 1) * n];
            let j0 = (-dx).max(0) as usize;
            let j1 = (w as isize - dx).min(w as isize).max(j0 as isize) as usize;
            for (i, grad) in col_row.chunks_exact(w).enumerate() {
                let si = i as isize + dy;
                if si < 0 || si >= h as isize {
                    continue;
                }
                let s0 = si as usize * w + (j0 as isize + dx) as usize;
                for (dst, &g) in channel[s0..s0 + (j1 - j0)].iter_mut().zip(&grad[j0..j1]) {
                    *dst += g;
                }
            }
        }
    }

    /// `y = conv(x, w) + b`.
    fn forward<T: Real>(&self, x: &[T], w: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let (n, kk, o) = (self.pixels(), self.patch(), self.outputs);
        let mut y = vec![T::ZERO; self.batch * o * n];
        let wv = View::row_major(kk, 0, o, 0, kk);
        let yv = View::row_major(n, 0, o, 0, n);
        y.par_chunks_mut(o * n).zip(x.par_chunks(self.channels * n)).try_for_each_init(
            || Vec::new(),
            |col, (y_b, x_b)| {
                let source = if self.kernel == 1 {
                    x_b
                } else {
                    col.resize(kk * n, T::ZERO);
                    self.im2col(x_b, col);
                    col.as_slice()
                };
                for (row, &bias) in y_b.chunks_exact_mut(n).zip(b) {
                    row.fill(bias);
                }
                let cv = View::row_major(n, 0, kk, 0, n);
                matmul(y_b, yv, true, w, wv, source, cv, Parallelism::None)
            },
        )?;
        Ok(y)
    }

    /// `dx = col2im(Wᵀ dy)` per batch item.
    fn input_grad<T: Real>(&self, dy: &[T], w: &[T]) -> candle_core::Result<Vec<T>> {
        let (n, kk, o, c) = (self.pixels(), self.patch(), self.outputs, self.channels);
        let mut dx = vec![T::ZERO; self.batch * c * n];
        let wtv = View::row_major(kk, 0, o, 0, kk).t();
        let gv = View::row_major(n, 0, o, 0, n);
        let cv = View::row_major(n, 0, kk, 0, n);
        dx.par_chunks_mut(c * n).zip(dy.par_chunks(o * n)).try_for_each_init(
            || Vec::new(),
            |dcol, (dx_b, dy_b)| {
                if self.kernel == 1 {
                    return matmul(dx_b, cv, false, w, wtv, dy_b, gv, Parallelism::None);
                }
                dcol.resize(kk * n, T::ZERO);
                matmul(dcol, cv, false, w, wtv, dy_b, gv, Parallelism::None)?;
                self.col2im_add(dcol, dx_b);
                Ok(())
            },
        )?;
        Ok(dx)
    }

    /// `[dW | db]` flat, `dW = Σ_b dy_b col_bᵀ`, `db = Σ_b Σ_pixels dy_b`: one partial sum per
    /// run of [`WEIGHT_GRAD_ITEMS`] batch items, in parallel, added in order. The runs do not
    /// depend on the thread count, so neither does the rounding of the sum.
    fn weight_grad<T: Real>(&self, x: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        let (n, kk, o, c) = (self.pixels(), self.patch(), self.outputs, self.channels);
        let dwv = View::row_major(kk, 0, o, 0, kk);
        let gv = View::row_major(n, 0, o, 0, n);
        let colt = View::row_major(n, 0, kk, 0, n).t();
        let partials = x
            .par_chunks(WEIGHT_GRAD_ITEMS * c * n)
            .zip(dy.par_chunks(WEIGHT_GRAD_ITEMS * o * n))
            .map(|(xs, dys)| {
                let mut dw = vec![T::ZERO; o * kk + o];
                let mut col = vec![T::ZERO; if self.kernel == 1 { 0 } else { kk * n }];
                for (x_b, dy_b) in xs.chunks_exact(c * n).zip(dys.chunks_exact(o * n)) {
                    let source = if self.kernel == 1 {
                        x_b
                    } else {
                        self.im2col(x_b, &mut col);
                        col.as_slice()
                    };
                    matmul(&mut dw, dwv, true, dy_b, gv, source, colt, Parallelism::None)?;
                    for (db, row) in dw[o * kk..].iter_mut().zip(dy_b.chunks_exact(n)) {
                        *db += row.iter().fold(T::ZERO, |acc, &v| acc + v);
                    }
                }
                Ok(dw)
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let mut total = vec![T::ZERO; o * kk + o];
        for partial in partials {
            for (t, p) in total.iter_mut().zip(partial) {
                *t += p;
            }
        }
        Ok(total)
    }
}

/// Batch items per partial weight gradient: enough to amortize a partial's buffer (`o (c k² +
/// 1)` values), few enough that a 16-image training slice still splits over two cores.
const WEIGHT_GRAD_ITEMS: usize = 8;

/// `(x, w, b) -> y`.
struct Conv2dSame {
    geometry: Geometry,
}

impl Kernel3 for Conv2dSame {
    fn run<T: Real>(&self, x: &[T], w: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        self.geometry.forward(x, w, b)
    }
}

impl Kernel2 for InputGrad {
    fn run<T: Real>(&self, dy: &[T], w: &[T]) -> candle_core::Result<Vec<T>> {
        self.geometry.input_grad(dy, w)
    }
}

impl Kernel2 for WeightGrad {
    fn run<T: Real>(&self, x: &[T], dy: &[T]) -> candle_core::Result<Vec<T>> {
        self.geometry.weight_grad(x, dy)
    }
}

impl CustomOp3 for Conv2dSame {
    fn name(&self) -> &'static str {
        "conv2d-same"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let y = run3("conv2d-same", self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((y, Shape::from((g.batch, g.outputs, g.height, g.width))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let g = self.geometry;
        let dx = grad.apply_op2_no_bwd(w, &InputGrad { geometry: g })?;
        let packed = x.apply_op2_no_bwd(&grad, &WeightGrad { geometry: g })?;
        let weights = g.outputs * g.patch();
        let dw =
            packed.narrow(0, 0, weights)?.reshape((g.outputs, g.channels, g.kernel, g.kernel))?;
        let db = packed.narrow(0, weights, g.outputs)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `(dy, w) -> dx`.
struct InputGrad {
    geometry: Geometry,
}

impl CustomOp2 for InputGrad {
    fn name(&self) -> &'static str {
        "conv2d-same-input-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let dx = run2("conv2d-same-input-grad", self, (s1, l1), (s2, l2))?;
        Ok((dx, Shape::from((g.batch, g.channels, g.height, g.width))))
    }
}

/// `(x, dy) -> [dW | db]` (flat; the caller takes views).
struct WeightGrad {
    geometry: Geometry,
}

impl CustomOp2 for WeightGrad {
    fn name(&self) -> &'static str {
        "conv2d-same-weight-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = self.geometry;
        let dw = run2("conv2d-same-weight-grad", self, (s1, l1), (s2, l2))?;
        Ok((dw, Shape::from(g.outputs * g.patch() + g.outputs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// Values and both gradients (through a random probe) of `conv2d_same` and candle's conv2d.
    fn compare(x: &[usize; 4], outputs: usize, kernel: usize, dtype: DType) -> Result<()> {
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(11);
        let mut normal = |shape: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(&crate::random::standard_normal(shape, dtype, &dev, &mut rng)?)?)
        };
        let xv = normal(x)?;
        let wv = normal(&[outputs, x[1], kernel, kernel])?;
        let bv = normal(&[outputs])?;
        let probe = normal(&[x[0], outputs, x[2], x[3]])?;
        let run = |y: Tensor| -> Result<[Vec<f64>; 4]> {
            let grads = (&y * probe.as_tensor())?.sum_all()?.backward()?;
            let flat = |t: &Tensor| -> Result<Vec<f64>> {
                Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
            };
            let grad = |v: &Var| grads.get(v.as_tensor()).map(flat).expect("gradient");
            Ok([flat(&y)?, grad(&xv)?, grad(&wv)?, grad(&bv)?])
        };
        let (x, w, b) = (xv.as_tensor(), wv.as_tensor(), bv.as_tensor());
        let ours = run(conv2d_same(x, w, b)?)?;
        let candle =
            x.conv2d(w, kernel / 2, 1, 1, 1)?.broadcast_add(&b.reshape((1, (), 1, 1))?)?;
        let reference = run(candle)?;
        let tol = if dtype == DType::F64 { 1e-10 } else { 1e-3 };
        for (part, (a, b)) in ["y", "dx", "dw", "db"].iter().zip(ours.iter().zip(&reference)) {
            assert_eq!(a.len(), b.len(), "{part}");
            for (u, v) in a.iter().zip(b) {
                assert!(
                    (u - v).abs() <= tol * (1.0 + v.abs()),
                    "{part} {x:?} k={kernel}: {u} vs {v}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn matches_candle_conv2d_values_and_gradients() -> Result<()> {
        for dtype in [DType::F64, DType::F32] {
            compare(&[3, 2, 5, 4], 4, 3, dtype)?;
            compare(&[2, 3, 4, 7], 2, 1, dtype)?;
            compare(&[1, 1, 6, 6], 3, 5, dtype)?;
            compare(&[5, 4, 1, 3], 2, 3, dtype)?;
        }
        Ok(())
    }

    #[test]
    fn gradients_do_not_depend_on_the_thread_count() -> Result<()> {
        // 19 images: two full runs of WEIGHT_GRAD_ITEMS and a ragged one.
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(12);
        let mut normal = |shape: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(&crate::random::standard_normal(
                shape,
                DType::F32,
                &dev,
                &mut rng,
            )?)?)
        };
        let (xv, wv, bv) = (normal(&[19, 3, 6, 5])?, normal(&[4, 3, 3, 3])?, normal(&[4])?);
        let probe = normal(&[19, 4, 6, 5])?;
        let gradients = |threads: usize| -> Result<Vec<Vec<f32>>> {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let y = conv2d_same(xv.as_tensor(), wv.as_tensor(), bv.as_tensor())?;
                let grads = (&y * probe.as_tensor())?.sum_all()?.backward()?;
                [&xv, &wv, &bv]
                    .iter()
                    .map(|v| {
                        Ok(grads.get(v.as_tensor()).expect("gradient").flatten_all()?.to_vec1()?)
                    })
                    .collect()
            })
        };
        let one = gradients(1)?;
        for threads in [2, 3] {
            // Bit for bit: the partial sums follow fixed runs of images, not the workers.
            assert_eq!(gradients(threads)?, one, "{threads} threads");
        }
        Ok(())
    }

    #[test]
    fn rejects_even_kernels_and_mismatched_channels_or_bias() -> Result<()> {
        let x = Tensor::zeros((1, 2, 4, 4), DType::F32, &Device::Cpu)?;
        let even = Tensor::zeros((3, 2, 2, 2), DType::F32, &Device::Cpu)?;
        let wrong = Tensor::zeros((3, 1, 3, 3), DType::F32, &Device::Cpu)?;
        let bias = Tensor::zeros(3, DType::F32, &Device::Cpu)?;
        assert!(matches!(conv2d_same(&x, &even, &bias), Err(Error::Shape { .. })));
        assert!(matches!(conv2d_same(&x, &wrong, &bias), Err(Error::Shape { .. })));
        let right = Tensor::zeros((3, 2, 3, 3), DType::F32, &Device::Cpu)?;
        let short_bias = Tensor::zeros(2, DType::F32, &Device::Cpu)?;
        assert!(matches!(conv2d_same(&x, &right, &short_bias), Err(Error::Shape { .. })));
        Ok(())
    }
}
