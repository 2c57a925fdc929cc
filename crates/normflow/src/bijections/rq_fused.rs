//! The rational-quadratic spline as one fused candle custom op on the CPU, forward and backward.
//!
//! Unfused, one spline layer is some sixty tensor ops on `(B, D, K)` tensors (two softmaxes,
//! cumulative sums, a bin search, gathers, the rational function, a `where` for the tails), each
//! allocating, and as many again in the backward. The op makes one pass per element for the
//! forward, computing `(y, log|dy/dx|)` into a `(2, B, D)` tensor, and one pass for the
//! backward, recomputing the knots (cheaper than storing them) and applying the hand-derived
//! partial derivatives of [`rq_kernel`](super::rq_kernel). Both directions of the spline
//! (`inverse = true` is the analytic inverse) have the fused backward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};

use super::rq_kernel::{apply, backward, Geometry, Knots};
use crate::nn::gemm::Real;
use crate::nn::host_op::{run2, run3, Kernel2, Kernel3};
use crate::Result;

/// `(out, log|d out / d in|)`, both `(B, D)`, of the spline (or its inverse when `inverse`)
/// at `v (B, D)` with raw parameters `raw (B, D, P)`: f32/f64 CPU tensors only.
pub(crate) fn fused(
    geometry: &Geometry,
    v: &Tensor,
    raw: &Tensor,
    inverse: bool,
) -> Result<(Tensor, Tensor)> {
    let op = SplineOp { geometry: *geometry, inverse };
    // Stacked as (2, B, D): both halves are contiguous views.
    let out = v.contiguous()?.apply_op2(&raw.contiguous()?, op)?;
    Ok((out.get(0)?, out.get(1)?))
}

#[derive(Debug, Clone, Copy)]
struct SplineOp {
    geometry: Geometry,
    inverse: bool,
}

/// `(B, D)` and `P` of the input and parameters, checked against each other.
fn dims(g: &Geometry, l1: &Layout, l2: &Layout) -> candle_core::Result<(usize, usize)> {
    let (b, d) = l1.shape().dims2()?;
    let p = g.params_per_feature();
    if l2.shape().dims() != [b, d, p] {
        candle_core::bail!("rq spline: parameters {:?}, expected ({b}, {d}, {p})", l2.shape());
    }
    Ok((b, d))
}

fn forward_run<T: Real>(g: &Geometry, v: &[T], raw: &[T], inverse: bool) -> Vec<T> {
    let p = g.params_per_feature();
    let mut knots = Knots::new(g);
    let mut buf = vec![0.0; p];
    let n = v.len();
    let mut out = vec![T::from_f64(0.0); 2 * n];
    for (i, (vi, ri)) in v.iter().zip(raw.chunks_exact(p)).enumerate() {
        for (b, r) in buf.iter_mut().zip(ri) {
            *b = r.to_f64();
        }
        knots.fill(g, &buf);
        let (o, l) = apply(g, &knots, vi.to_f64(), inverse);
        out[i] = T::from_f64(o);
        out[n + i] = T::from_f64(l);
    }
    out
}

impl Kernel2 for SplineOp {
    fn run<T: Real>(&self, v: &[T], raw: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(forward_run(&self.geometry, v, raw, self.inverse))
    }
}

impl Kernel3 for SplineGradOp {
    fn run<T: Real>(&self, v: &[T], raw: &[T], grad: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(backward_run(&self.0.geometry, v, raw, grad, self.0.inverse))
    }
}

impl CustomOp2 for SplineOp {
    fn name(&self) -> &'static str {
        "rq-spline"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = &self.geometry;
        let (b, d) = dims(g, l1, l2)?;
        let out = run2("rq spline", self, (s1, l1), (s2, l2))?;
        Ok((out, Shape::from((2, b, d))))
    }

    fn bwd(
        &self,
        v: &Tensor,
        raw: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let p = self.geometry.params_per_feature();
        let packed = v.apply_op3_no_bwd(raw, &grad.contiguous()?, &SplineGradOp(*self))?;
        let g_v = packed.narrow(2, 0, 1)?.squeeze(2)?.contiguous()?;
        let g_raw = packed.narrow(2, 1, p)?.contiguous()?;
        Ok((Some(g_v), Some(g_raw)))
    }
}

/// The backward as an op of `(v, raw, grad (2, B, D))`: `(B, D, 1 + P)` holding the input's
/// gradient and then the `P` raw parameters' gradients of each element.
struct SplineGradOp(SplineOp);

fn backward_run<T: Real>(g: &Geometry, v: &[T], raw: &[T], grad: &[T], inverse: bool) -> Vec<T> {
    let p = g.params_per_feature();
    let mut knots = Knots::new(g);
    let mut buf = vec![0.0; p];
    let mut g_raw = vec![0.0; p];
    let n = v.len();
    let (grad_out, grad_l) = grad.split_at(n);
    let mut out = Vec::with_capacity(n * (p + 1));
    for (i, (vi, ri)) in v.iter().zip(raw.chunks_exact(p)).enumerate() {
        for (b, r) in buf.iter_mut().zip(ri) {
            *b = r.to_f64();
        }
        knots.fill(g, &buf);
        g_raw.iter_mut().for_each(|x| *x = 0.0);
        let g_v = backward(
            g,
            &knots,
            vi.to_f64(),
            inverse,
            grad_out[i].to_f64(),
            grad_l[i].to_f64(),
            &mut g_raw,
        );
        out.push(T::from_f64(g_v));
        out.extend(g_raw.iter().map(|&x| T::from_f64(x)));
    }
    out
}

impl CustomOp3 for SplineGradOp {
    fn name(&self) -> &'static str {
        "rq-spline-grad"
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
        let g = &self.0.geometry;
        let (b, d) = dims(g, l1, l2)?;
        if l3.shape().dims() != [2, b, d] {
            candle_core::bail!("rq spline: gradient {:?}, expected (2, {b}, {d})", l3.shape());
        }
        let out = run3("rq spline gradient", self, (s1, l1), (s2, l2), (s3, l3))?;
        Ok((out, Shape::from((b, d, g.params_per_feature() + 1))))
    }
}
