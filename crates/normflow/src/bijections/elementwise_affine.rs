//! Element-wise affine bijection with learnable shift and log-scale.

use candle_core::Tensor;

use super::{sum_per_sample, Bijection};
use crate::params::{Init, Params};
use crate::Result;

/// `z = x * exp(s) + t`, element-wise, with learnable `s` (log-scale) and `t` (shift) of the
/// event shape; `log|det dz/dx| = sum(s)`. Starts as the identity (`s = t = 0`).
///
/// # Shapes
/// `x: (B, event...)`; `s`, `t`: `event` (e.g. `(D,)` or `(C, H, W)`).
#[derive(Debug, Clone)]
pub struct ElementwiseAffine {
    log_scale: Tensor,
    shift: Tensor,
}

impl ElementwiseAffine {
    /// Creates `log_scale` and `shift` of shape `event_shape` under `params`.
    pub fn new(params: &Params, event_shape: &[usize]) -> Result<Self> {
        let log_scale = params.param("log_scale", event_shape, Init::Const(0.0))?;
        let shift = params.param("shift", event_shape, Init::Const(0.0))?;
        Ok(Self { log_scale, shift })
    }

    fn ladj(&self, batch: usize) -> Result<Tensor> {
        let total = sum_per_sample(&self.log_scale.unsqueeze(0)?)?;
        Ok(total.broadcast_as(batch)?.contiguous()?)
    }
}

impl Bijection for ElementwiseAffine {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let z = x.broadcast_mul(&self.log_scale.exp()?)?.broadcast_add(&self.shift)?;
        Ok((z, self.ladj(x.dim(0)?)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let x = z.broadcast_sub(&self.shift)?.broadcast_mul(&self.log_scale.neg()?.exp()?)?;
        Ok((x, self.ladj(z.dim(0)?)?.neg()?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        Some((0..self.log_scale.elem_count()).collect())
    }
}
