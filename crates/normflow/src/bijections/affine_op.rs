//! The conditioned affine transform of MAF and RealNVP as one CPU op with a one-pass backward.
//!
//! ```text
//! s = r / (1 + |r| / b)         (soft clamp, b = LOG_SCALE_BOUND)
//! z = x exp(s) + t,   ladj = sum_j s_j
//! ```
//! for `x: (B, K)` and the conditioner's `params: (B, K, 2)` (`t = params[.., 0]`,
//! `r = params[.., 1]`). Composed, that is ten candle ops forward (two selects, the clamp's
//! three, exp, mul, add, sum) and more backward, each allocating, on small `(B, K)` tensors where
//! the fixed cost per op dominates: about a tenth of a MAF training step. Here forward is one
//! pass writing `[z | ladj]` into one `(B, K + 1)` buffer, and backward one pass:
//!
//! ```text
//! dx = dz e^s,   dt = dz,   dr = (dz x e^s + dladj) s'(r),   s'(r) = 1 / (1 + |r| / b)^2
//! ```
//! Other devices and dtypes take the composition, which the op is tested against.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::affine_params::{log_scale, LOG_SCALE_BOUND};
use crate::nn::fused::fusable;
use crate::nn::gemm::Real;
use crate::nn::host_op::{run2, run3, Kernel2, Kernel3};
use crate::Result;

/// `(z, ladj)` of the affine transform (module docs) of `x: (B, K)` by `params: (B, K, 2)`.
pub(crate) fn affine_forward(x: &Tensor, params: &Tensor) -> Result<(Tensor, Tensor)> {
    let (batch, k) = x.dims2()?;
    if !fusable(x) || params.dims() != [batch, k, 2] || params.dtype() != x.dtype() {
        return composed(x, params);
    }
    let packed = x.contiguous()?.apply_op2(&params.contiguous()?, AffineOp)?;
    let z = packed.narrow(1, 0, k)?;
    let ladj = packed.narrow(1, k, 1)?.squeeze(1)?;
    Ok((z, ladj))
}

/// The candle composition: other devices and dtypes, and the reference of the tests.
fn composed(x: &Tensor, params: &Tensor) -> Result<(Tensor, Tensor)> {
    let t = params.narrow(2, 0, 1)?.squeeze(2)?;
    let s = log_scale(&params.narrow(2, 1, 1)?.squeeze(2)?)?;
    let z = ((x * s.exp()?)? + t)?;
    Ok((z, s.sum(1)?))
}

/// `s(r)` and `s'(r)` of the soft clamp, in `T` (as [`crate::ops::soft_clamp`] computes `s`:
/// `r / (|r| / b + 1)`).
#[inline]
fn clamp<T: Real>(r: T, inv_bound: T) -> (T, T) {
    let abs = if r < T::ZERO { T::ZERO - r } else { r };
    let denominator = abs * inv_bound + T::ONE;
    (r / denominator, T::ONE / (denominator * denominator))
}

struct AffineOp;

/// The forward kernel on `x (B, K)` and `params (B, K, 2)`: `[z | ladj]` rows of `K + 1`.
struct Forward {
    k: usize,
}

impl Kernel2 for Forward {
    fn run<T: Real>(&self, x: &[T], p: &[T]) -> candle_core::Result<Vec<T>> {
        let k = self.k.max(1);
        let inv_bound = T::from_f64(1.0 / LOG_SCALE_BOUND);
        let mut out = Vec::with_capacity(x.len() / k * (self.k + 1));
        for (x, p) in x.chunks_exact(k).zip(p.chunks_exact(2 * k)) {
            let mut ladj = T::ZERO;
            for (&xj, tr) in x.iter().zip(p.chunks_exact(2)) {
                let (s, _) = clamp(tr[1], inv_bound);
                out.push(xj * s.exp() + tr[0]);
                ladj += s;
            }
            out.push(ladj);
        }
        Ok(out)
    }
}

impl CustomOp2 for AffineOp {
    fn name(&self) -> &'static str {
        "affine"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, k) = l1.shape().dims2()?;
        let out = run2("affine", &Forward { k }, (s1, l1), (s2, l2))?;
        Ok((out, Shape::from((batch, k + 1))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (batch, k) = x.dims2()?;
        let packed = grad.contiguous()?.apply_op3_no_bwd(x, params, &AffineGrad)?;
        let dx = packed.narrow(0, 0, batch * k)?.reshape((batch, k))?;
        let dparams = packed.narrow(0, batch * k, batch * k * 2)?.reshape((batch, k, 2))?;
        Ok((Some(dx), Some(dparams)))
    }
}

/// `(grad (B, K + 1), x (B, K), params (B, K, 2)) -> [dx | dparams]`, flat.
struct AffineGrad;

/// The backward kernel (module docs).
struct Backward {
    k: usize,
}

impl Kernel3 for Backward {
    fn run<T: Real>(&self, g: &[T], x: &[T], p: &[T]) -> candle_core::Result<Vec<T>> {
        let k = self.k;
        let inv_bound = T::from_f64(1.0 / LOG_SCALE_BOUND);
        let rows = x.len() / k.max(1);
        let mut dx = Vec::with_capacity(rows * k * 3);
        let mut dp = Vec::with_capacity(rows * k * 2);
        for ((g, x), p) in
            g.chunks_exact(k + 1).zip(x.chunks_exact(k.max(1))).zip(p.chunks_exact(2 * k.max(1)))
        {
            let dladj = g[k];
            for ((&dz, &xj), tr) in g.iter().zip(x).zip(p.chunks_exact(2)) {
                let (s, ds) = clamp(tr[1], inv_bound);
                let scale = s.exp();
                dx.push(dz * scale);
                dp.push(dz);
                dp.push((dz * xj * scale + dladj) * ds);
            }
        }
        dx.extend(dp);
        Ok(dx)
    }
}

impl CustomOp3 for AffineGrad {
    fn name(&self) -> &'static str {
        "affine-grad"
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
        let (batch, k1) = l1.shape().dims2()?;
        let k = k1.saturating_sub(1);
        if l2.shape().dims() != [batch, k] || l3.shape().dims() != [batch, k, 2] {
            candle_core::bail!(
                "affine-grad: shapes {:?}, {:?}, {:?}",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let out = run3("affine-grad", &Backward { k }, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from(batch * k * 3)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};

    use super::*;
    use crate::random::{rng_from_seed, standard_normal};

    /// Values and the gradients of `sum(w_z z) + sum(w_l ladj)` (random weights, so that every
    /// output's gradient matters) equal the composition's, for x and params, f32 and f64, with
    /// raw log-scales well past the clamp's knee.
    #[test]
    fn the_op_matches_the_composition_in_values_and_gradients() -> Result<()> {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::F64, 1e-12)] {
            let mut rng = rng_from_seed(4);
            let dev = Device::Cpu;
            let x = Var::from_tensor(&standard_normal((6, 5), dtype, &dev, &mut rng)?)?;
            let p = Var::from_tensor(&(standard_normal((6, 5, 2), dtype, &dev, &mut rng)? * 4.0)?)?;
            let wz = standard_normal((6, 5), dtype, &dev, &mut rng)?;
            let wl = standard_normal(6, dtype, &dev, &mut rng)?;
            let run = |fused: bool| -> Result<Vec<Vec<f64>>> {
                let (z, ladj) = if fused {
                    affine_forward(x.as_tensor(), p.as_tensor())?
                } else {
                    composed(x.as_tensor(), p.as_tensor())?
                };
                let loss = ((&z * &wz)?.sum_all()? + (&ladj * &wl)?.sum_all()?)?;
                let grads = loss.backward()?;
                let flat = |t: &Tensor| -> Result<Vec<f64>> {
                    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
                };
                let dx = grads.get(x.as_tensor()).expect("dx");
                let dp = grads.get(p.as_tensor()).expect("dparams");
                Ok(vec![flat(&z)?, flat(&ladj)?, flat(dx)?, flat(dp)?])
            };
            let (fused, reference) = (run(true)?, run(false)?);
            for (what, (a, b)) in
                ["z", "ladj", "dx", "dparams"].iter().zip(fused.iter().zip(&reference))
            {
                assert_eq!(a.len(), b.len(), "{what}");
                for (u, v) in a.iter().zip(b) {
                    assert!((u - v).abs() <= tol * (1.0 + v.abs()), "{dtype:?} {what}: {u} vs {v}");
                }
            }
        }
        Ok(())
    }
}
