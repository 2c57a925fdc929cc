//! The logistic sigmoid and its inverse, the logit, as bijections between the real line and the
//! unit interval.

use candle_core::{DType, Tensor};

use super::{sum_per_sample, Bijection};
use crate::ops::{log_sigmoid, sigmoid};
use crate::Result;

/// `log sigma(x) + log(1 - sigma(x)) = log sigma(x) + log sigma(-x)`, element-wise: the
/// log-derivative of the sigmoid, stable at both tails.
fn log_sigmoid_derivative(x: &Tensor) -> Result<Tensor> {
    Ok((log_sigmoid(x)? + log_sigmoid(&x.neg()?)?)?)
}

/// The smallest positive normal number and the largest number below 1 of `dtype`: the widest
/// interval on which `log y` and `log(1 - y)` are finite.
fn open_unit_interval(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::F16 => (6.103_515_625e-5, 1.0 - 2f64.powi(-11)),
        DType::BF16 => (1.175_494_350_822_287_5e-38, 1.0 - 2f64.powi(-8)),
        DType::F32 => (f32::MIN_POSITIVE as f64, 1.0 - 2f64.powi(-24)),
        _ => (f64::MIN_POSITIVE, 1.0 - f64::EPSILON / 2.0),
    }
}

/// `z = sigmoid(x) = 1 / (1 + e^{-x})`, element-wise, from the real line onto `(0, 1)`;
/// `log|det dz/dx| = sum(log sigma(x) + log(1 - sigma(x)))`, computed from `x` with
/// [`log_sigmoid`] so it stays finite where `sigma(x)` rounds to 0 or 1.
///
/// The inverse is the logit `x = log z - log(1 - z)`. Inputs are first clamped to the
/// widest interval of the dtype on which it is finite (`[smallest positive normal, largest
/// number below 1]`), which changes nothing but exact 0 and 1 (and subnormals): a latent sample
/// on the boundary then maps to a large finite `x` instead of ±∞ (about -708 at 0 and 37 at 1
/// in f64; -87 and 17 in f32), with a correspondingly large log-determinant.
///
/// Used in the forward direction to map onto a bounded domain, or wrapped in
/// [`super::Inverse`] as a logit preprocessing; see [`Logit`] for the RealNVP variant.
///
/// # Shapes
/// Any `(B, ...)`, element-wise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sigmoid;

impl Sigmoid {
    /// The (parameter-free) sigmoid bijection.
    pub fn new() -> Self {
        Self
    }
}

impl Bijection for Sigmoid {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        Ok((sigmoid(x)?, sum_per_sample(&log_sigmoid_derivative(x)?)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (lo, hi) = open_unit_interval(z.dtype());
        let y = z.clamp(lo, hi)?;
        let (log_y, log_1my) = (y.log()?, y.neg()?.affine(1.0, 1.0)?.log()?);
        let x = (&log_y - &log_1my)?;
        Ok((x, sum_per_sample(&(log_y + log_1my)?)?.neg()?))
    }

    fn forward(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        sigmoid(x)
    }
}

/// The logit preprocessing of RealNVP (Dinh et al. 2017, "Density estimation using Real NVP",
/// section 4.1), for data in `[0, 1]` (e.g. pixel intensities after dequantization):
///
/// ```text
/// y = alpha + (1 - 2 alpha) x,   z = logit(y) = log y - log(1 - y)
/// log|det dz/dx| = sum(log(1 - 2 alpha) - log y - log(1 - y))
/// ```
///
/// `alpha` in `[0, 0.5)` shrinks `[0, 1]` into `[alpha, 1 - alpha]` so that data on the bounds
/// maps to finite values; with `alpha = 0` the bounds map to ±∞ (no clamping: a density at the
/// boundary is infinite, and a silently finite one would be wrong). The inverse is
/// `x = (sigmoid(z) - alpha) / (1 - 2 alpha)`, with its log-determinant computed from `z` by
/// [`log_sigmoid`].
///
/// # Shapes
/// Any `(B, ...)`, element-wise.
#[derive(Debug, Clone, Copy)]
pub struct Logit {
    alpha: f64,
}

impl Logit {
    /// The logit preprocessing with margin `alpha` in `[0, 0.5)` (RealNVP uses 0.05).
    pub fn new(alpha: f64) -> Result<Self> {
        crate::ensure_config!((0.0..0.5).contains(&alpha), "alpha", alpha, "must be in [0, 0.5)");
        Ok(Self { alpha })
    }

    /// The margin `alpha`.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    fn log_shrink(&self) -> f64 {
        (1.0 - 2.0 * self.alpha).ln()
    }
}

impl Bijection for Logit {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let y = x.affine(1.0 - 2.0 * self.alpha, self.alpha)?;
        let (log_y, log_1my) = (y.log()?, y.neg()?.affine(1.0, 1.0)?.log()?);
        let z = (&log_y - &log_1my)?;
        let ladj = (log_y + log_1my)?.neg()?.affine(1.0, self.log_shrink())?;
        Ok((z, sum_per_sample(&ladj)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let scale = 1.0 - 2.0 * self.alpha;
        let x = sigmoid(z)?.affine(1.0 / scale, -self.alpha / scale)?;
        let ladj = log_sigmoid_derivative(z)?.affine(1.0, -self.log_shrink())?;
        Ok((x, sum_per_sample(&ladj)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use candle_core::Device;

    #[test]
    fn logit_validates_alpha() {
        for bad in [-0.1, 0.5, 0.7, f64::NAN] {
            assert!(matches!(Logit::new(bad), Err(Error::InvalidConfig { .. })), "{bad}");
        }
        assert!(Logit::new(0.0).is_ok());
    }

    #[test]
    fn sigmoid_inverse_is_finite_on_the_boundary_in_both_precisions() -> Result<()> {
        for dtype in [DType::F32, DType::F64] {
            let z = Tensor::new(&[[0f64, 1.0, 0.5]], &Device::Cpu)?.to_dtype(dtype)?;
            let (x, ladj) = Sigmoid.inverse_and_ladj(&z, None)?;
            let x = x.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
            assert!(x.iter().all(|v| v.is_finite()), "{dtype:?}: {x:?}");
            assert!(x[0] < -15.0 && x[1] > 15.0 && x[2] == 0.0, "{dtype:?}: {x:?}");
            assert!(ladj.to_dtype(DType::F64)?.to_vec1::<f64>()?[0].is_finite());
            // Far tails of the forward direction: the ladj stays finite where sigma rounds to 1.
            let far = Tensor::new(&[[-60f64, 60.0]], &Device::Cpu)?.to_dtype(dtype)?;
            let ladj = Sigmoid.forward_and_ladj(&far, None)?.1.to_dtype(DType::F64)?;
            let ladj = ladj.to_vec1::<f64>()?[0];
            assert!((ladj + 120.0).abs() < 1e-3, "{dtype:?}: {ladj}");
        }
        Ok(())
    }
}
