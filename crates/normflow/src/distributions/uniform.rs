//! Uniform distribution on a box.

use candle_core::{DType, Device, Shape, Tensor};
use rand::RngCore;

use super::{check_context, check_event_shape, Distribution};
use crate::random::{from_f64, uniform};
use crate::{Error, Result};

/// The uniform distribution on the box `[low_1, high_1] x ... x [low_D, high_D]`:
///
/// ```text
/// log p(x) = -sum_i log(high_i - low_i)   if low_i <= x_i <= high_i for every i (bounds included)
///          = -inf                          otherwise (also when some x_i is NaN)
/// ```
///
/// The value outside is exactly `-inf`, never NaN, so it can be compared and masked; its
/// gradient is zero everywhere. Not learnable. Unconditional: a context, if given, is ignored
/// by `log_prob` and only fixes `n` in `sample`.
///
/// # Shapes
/// `x: (B, D) -> log_prob (B,)`.
#[derive(Debug, Clone)]
pub struct UniformBox {
    low: Tensor,
    width: Tensor,
    high: Tensor,
    log_volume: f64,
    dim: usize,
}

impl UniformBox {
    /// The box with per-feature bounds `low[i] < high[i]` (finite, of equal length `D >= 1`);
    /// samples are drawn in `dtype` on `device`.
    pub fn new(low: &[f64], high: &[f64], dtype: DType, device: &Device) -> Result<Self> {
        if low.is_empty() || low.len() != high.len() {
            return Err(Error::config(
                "high",
                format!("{high:?}"),
                format!("low and high need the same, non-zero length (low has {})", low.len()),
            ));
        }
        for (i, (&l, &h)) in low.iter().zip(high).enumerate() {
            // `(h - l).is_finite()` also rejects boxes whose width overflows.
            if !(l.is_finite() && h.is_finite() && l < h && (h - l).is_finite()) {
                return Err(Error::config(
                    &format!("bounds[{i}]"),
                    format!("[{l}, {h}]"),
                    "bounds must be finite with low < high",
                ));
            }
        }
        let log_volume = low.iter().zip(high).map(|(l, h)| (h - l).ln()).sum();
        let widths: Vec<f64> = low.iter().zip(high).map(|(l, h)| h - l).collect();
        let vector = |v: Vec<f64>| from_f64(v, Shape::from(low.len()), dtype, device);
        Ok(Self {
            low: vector(low.to_vec())?,
            width: vector(widths)?,
            high: vector(high.to_vec())?,
            log_volume,
            dim: low.len(),
        })
    }

    /// The unit cube `[0, 1]^dim`.
    pub fn unit(dim: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::new(&vec![0.0; dim], &vec![1.0; dim], dtype, device)
    }

    /// `sum_i log(high_i - low_i)`: minus the log-density inside the box.
    pub fn log_volume(&self) -> f64 {
        self.log_volume
    }
}

impl Distribution for UniformBox {
    fn log_prob(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        let batch = check_event_shape(x, &[self.dim], "UniformBox::log_prob")?;
        let low = self.low.to_dtype(x.dtype())?;
        let high = self.high.to_dtype(x.dtype())?;
        // Comparisons with NaN are false, so a NaN feature counts as outside.
        let inside = x.broadcast_ge(&low)?.mul(&x.broadcast_le(&high)?)?.min(1)?;
        let device = x.device();
        let in_value = Tensor::full(-self.log_volume, batch, device)?.to_dtype(x.dtype())?;
        let out_value = Tensor::full(f64::NEG_INFINITY, batch, device)?.to_dtype(x.dtype())?;
        Ok(inside.where_cond(&in_value, &out_value)?)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        if let Some(c) = context {
            check_context(Some(c), n, true)?;
        }
        let u = uniform((n, self.dim), self.low.dtype(), self.low.device(), rng)?;
        let x = u.broadcast_mul(&self.width)?.broadcast_add(&self.low)?;
        // Rounding (of u to f32, of low + width * u) may land an ulp past `high`: clamp, so
        // every sample has a finite log-density.
        Ok(x.broadcast_minimum(&self.high)?.broadcast_maximum(&self.low)?)
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn event_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
}
