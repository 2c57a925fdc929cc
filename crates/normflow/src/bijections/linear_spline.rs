//! The piecewise-linear spline transformer (Müller et al. 2019, "Neural Importance Sampling",
//! section 3.1).

use candle_core::{DType, Tensor};

use super::spline_knots::{bin_sizes, knots, pick, search, validate, with_identity_tails};
use super::transformer::{check_raw_shape, Transformer};
use crate::Result;

/// Piecewise-linear monotone spline on `[-B, B]`, identity outside: `P = K` raw parameters per
/// element, the unnormalized log-masses of `K` bins of equal width.
///
/// On `u = (x + B) / 2B` in `[0, 1]`, the map is the CDF of a piecewise-constant density
/// (Müller et al. 2019):
///
/// ```text
/// q = MIN_BIN + (1 - K MIN_BIN) softmax(raw)          (bin masses, summing to 1)
/// c_k = q_0 + ... + q_{k-1}                            (c_0 = 0, c_K = 1)
/// b = floor(K u),   a = K u - b                        (bin and position in it)
/// v = c_b + a q_b,   y = 2B v - B,   log|dy/dx| = log(K q_b)
/// ```
///
/// The inverse finds the bin of `v` among the `c_k` and solves the linear piece:
/// `u = (b + (v - c_b) / q_b) / K`. All-zero `raw` gives equal masses: the identity (exactly, up
/// to rounding). The map is continuous everywhere, at `+-B` included; its derivative is
/// piecewise constant (`K q_b` inside, 1 in the tails), so it jumps at the knots and at `+-B`:
/// the family has no smoother form. `MIN_BIN = 1e-3` keeps `log(K q_b)` and the inverse finite.
///
/// # Shapes
/// `x, y: (B, D)`, `raw: (B, D, K)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSpline {
    bins: usize,
    bound: f64,
}

impl LinearSpline {
    /// `bins` (2 to 500) bins on `[-bound, bound]` (`bound > 0`).
    pub fn new(bins: usize, bound: f64) -> Result<Self> {
        validate(bins, bound)?;
        Ok(Self { bins, bound })
    }
}

impl Transformer for LinearSpline {
    fn params_per_feature(&self) -> usize {
        self.bins
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, self.bins)?;
        let k = self.bins as f64;
        with_identity_tails(x, self.bound, |u| {
            let masses = bin_sizes(raw)?;
            let cdf = knots(&masses)?;
            let scaled = (u * k)?;
            let bin = scaled.detach().floor()?.clamp(0.0, k - 1.0)?;
            let idx = bin.to_dtype(DType::U32)?.unsqueeze(2)?;
            let q = pick(&masses, &idx)?;
            let a = (scaled - bin)?.clamp(0.0, 1.0)?;
            let v = (pick(&cdf, &idx)? + (a * &q)?)?;
            Ok((v, (q.log()? + k.ln())?))
        })
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, self.bins)?;
        let k = self.bins as f64;
        // The inverse is itself a monotone map of [0, 1] onto itself: same tails, same rescaling.
        with_identity_tails(y, self.bound, |v| {
            let masses = bin_sizes(raw)?;
            let cdf = knots(&masses)?;
            let idx = search(&cdf, v)?;
            let q = pick(&masses, &idx)?;
            let a = ((v - pick(&cdf, &idx)?)? / &q)?.clamp(0.0, 1.0)?;
            let bin = idx.squeeze(2)?.to_dtype(v.dtype())?;
            let u = ((bin + a)? / k)?;
            Ok((u, (q.log()? + k.ln())?.neg()?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::spline_test_support::{check_identity, check_transformer};

    #[test]
    fn matches_its_reference_and_contract() -> Result<()> {
        check_transformer(&LinearSpline::new(5, 2.0)?, 2.0)
    }

    #[test]
    fn zero_parameters_are_the_identity() -> Result<()> {
        check_identity(&LinearSpline::new(7, 3.0)?, 1e-12)
    }
}
