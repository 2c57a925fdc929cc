//! Fused element-wise kernels of dense layers, as candle custom ops on the CPU: bias +
//! activation (`y = act(h + b)`) and ReLU, each with a one-pass hand-written backward.
//!
//! Unfused, candle spends five element-wise passes and two allocations on a ReLU's backward
//! (`ge`, `to_dtype`, `mul`, ...) and a strided column sum on a broadcast bias's backward; these
//! were a third of a MAF training step. The fused op makes one pass forward and one backward, and
//! takes the bias gradient as the small product `1^T g` (gemm). On devices other than the CPU,
//! and for dtypes other than f32/f64, [`bias_act`] runs the unfused composition, which is also
//! the reference the ops are tested against.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

use super::gemm::Real;
use super::host_op::{run1, run2, Kernel1, Kernel2};
use crate::Result;

/// Which activation follows the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FusedActivation {
    /// `y = h + b`.
    Identity,
    /// `y = max(0, h + b)`.
    Relu,
}

impl FusedActivation {
    #[inline]
    pub(crate) fn apply<T: Real>(self, v: T) -> T {
        match self {
            FusedActivation::Identity => v,
            FusedActivation::Relu => {
                if v > T::ZERO {
                    v
                } else {
                    T::ZERO
                }
            }
        }
    }
}

/// `act(h + b)` for `h: (B, N)` and `b: (N,)`.
pub fn bias_act(h: &Tensor, b: &Tensor, act: FusedActivation) -> Result<Tensor> {
    if !fusable(h) || h.rank() != 2 {
        return unfused(h, b, act);
    }
    Ok(h.contiguous()?.apply_op2(&b.contiguous()?, BiasAct(act))?)
}

/// Whether the fused CPU kernels can run on `t` (on the CPU, in f32 or f64).
pub(crate) fn fusable(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F64)
}

/// `grad * (y > 0)` in one pass: the backward of a ReLU whose output is `y`.
pub(crate) fn relu_grad(grad: &Tensor, y: &Tensor) -> candle_core::Result<Tensor> {
    grad.contiguous()?.apply_op2_no_bwd(&y.contiguous()?, &ReluGrad)
}

/// `max(0, x)`, element-wise, any shape.
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !fusable(x) {
        return Ok(x.relu()?);
    }
    Ok(x.contiguous()?.apply_op1(Relu)?)
}

struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "fused-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((run1("relu", self, s, l)?, l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)?))
    }
}

/// The unfused composition: the reference for tests and the path on other devices.
pub fn unfused(h: &Tensor, b: &Tensor, act: FusedActivation) -> Result<Tensor> {
    let pre = h.broadcast_add(b)?;
    Ok(match act {
        FusedActivation::Identity => pre,
        FusedActivation::Relu => pre.relu()?,
    })
}

impl Kernel1 for Relu {
    fn run<T: Real>(&self, x: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(x.iter().map(|&v| FusedActivation::Relu.apply(v)).collect())
    }
}

struct BiasAct(FusedActivation);

/// `act(h + b)` row by row, for rows of `cols`.
struct BiasActKernel {
    cols: usize,
    act: FusedActivation,
}

impl Kernel2 for BiasActKernel {
    fn run<T: Real>(&self, h: &[T], b: &[T]) -> candle_core::Result<Vec<T>> {
        let mut out = Vec::with_capacity(h.len());
        for row in h.chunks_exact(self.cols.max(1)) {
            out.extend(row.iter().zip(b).map(|(&v, &bias)| self.act.apply(v + bias)));
        }
        Ok(out)
    }
}

impl CustomOp2 for BiasAct {
    fn name(&self) -> &'static str {
        "bias-act"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols) = l1.shape().dims2()?;
        if l2.shape().dims() != [cols] {
            candle_core::bail!("bias_act: bias {:?} does not match ({rows}, {cols})", l2.shape());
        }
        let kernel = BiasActKernel { cols, act: self.0 };
        Ok((run2("bias_act", &kernel, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }

    fn bwd(
        &self,
        h: &Tensor,
        _b: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = match self.0 {
            FusedActivation::Identity => grad.clone(),
            FusedActivation::Relu => grad.contiguous()?.apply_op2_no_bwd(y, &ReluGrad)?,
        };
        let ones = Tensor::ones((1, h.dim(0)?), g.dtype(), g.device())?;
        let grad_b = ones.matmul(&g)?.squeeze(0)?;
        Ok((Some(g), Some(grad_b)))
    }
}

/// `g * (y > 0)` in one pass (the ReLU's backward, given its output `y`).
struct ReluGrad;

impl Kernel2 for ReluGrad {
    fn run<T: Real>(&self, g: &[T], y: &[T]) -> candle_core::Result<Vec<T>> {
        Ok(g.iter().zip(y).map(|(&g, &y)| if y > T::ZERO { g } else { T::ZERO }).collect())
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "relu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((run2("relu_grad", self, (s1, l1), (s2, l2))?, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use candle_core::{Device, Var};

    /// Values and gradients of the fused op equal the unfused composition.
    #[test]
    fn fused_matches_unfused_values_and_gradients() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            for act in [FusedActivation::Identity, FusedActivation::Relu] {
                let mut rng = crate::random::rng_from_seed(3);
                let dev = Device::Cpu;
                let h = Var::from_tensor(&crate::random::standard_normal(
                    (7, 5),
                    dtype,
                    &dev,
                    &mut rng,
                )?)?;
                let b =
                    Var::from_tensor(&crate::random::standard_normal(5, dtype, &dev, &mut rng)?)?;
                let w = crate::random::standard_normal((7, 5), dtype, &dev, &mut rng)?;
                let run =
                    |f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>| -> Result<Vec<Vec<f64>>> {
                        let y = f(h.as_tensor(), b.as_tensor())?;
                        let grads = (&y * &w)?.sum_all()?.backward()?;
                        let flat = |t: &Tensor| -> Result<Vec<f64>> {
                            Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
                        };
                        let gh =
                            grads.get(h.as_tensor()).ok_or_else(|| Error::Data("no dh".into()))?;
                        let gb =
                            grads.get(b.as_tensor()).ok_or_else(|| Error::Data("no db".into()))?;
                        Ok(vec![flat(&y)?, flat(gh)?, flat(gb)?])
                    };
                let fused = run(&|h, b| bias_act(h, b, act))?;
                // The stand-alone ReLU, composed with the identity bias op.
                let split = run(&|h, b| {
                    let pre = bias_act(h, b, FusedActivation::Identity)?;
                    match act {
                        FusedActivation::Identity => Ok(pre),
                        FusedActivation::Relu => relu(&pre),
                    }
                })?;
                let reference = run(&|h, b| unfused(h, b, act))?;
                for (f, r) in fused.iter().chain(&split).zip(reference.iter().cycle()) {
                    for (a, e) in f.iter().zip(r) {
                        assert!(
                            (a - e).abs() < 1e-5 * e.abs().max(1.0),
                            "{dtype:?} {act:?}: {a} vs {e}"
                        );
                    }
                }
            }
        }
        Ok(())
    }
}
