//! The piecewise-quadratic spline transformer (Müller et al. 2019, "Neural Importance Sampling",
//! section 3.2).

use candle_core::Tensor;

use super::spline_knots::{
    bin_sizes, knots, next, pick, search, validate, with_identity_tails, MIN_BIN,
};
use super::transformer::{check_raw_shape, Transformer};
use crate::ops::softplus;
use crate::Result;

/// Piecewise-quadratic monotone spline on `[-B, B]`, identity outside: `P = 2K - 1` raw
/// parameters per element, `K` unnormalized bin widths then `K - 1` unnormalized heights of the
/// density at the inner knots.
///
/// On `u = (x + B) / 2B` in `[0, 1]` the map is the CDF of a continuous piecewise-linear density
/// `rho` with knots `x_k` and vertex values `h_k` (Müller et al. 2019):
///
/// ```text
/// w = MIN_BIN + (1 - K MIN_BIN) softmax(raw[..K]),   x_k = w_0 + ... + w_{k-1}
/// h_0 = h_K = 1,   h_k = s (softplus(raw[K + k - 1]) + MIN_BIN)  for 0 < k < K
/// s chosen so that  sum_k w_k (h_k + h_{k+1}) / 2 = 1   (rho integrates to 1)
/// bin b holds u, a = (u - x_b) / w_b:
/// v = c_b + w_b (a h_b + a^2 (h_{b+1} - h_b) / 2),    c_b = sum_{k<b} w_k (h_k + h_{k+1}) / 2
/// log|dy/dx| = log rho(u) = log((1 - a) h_b + a h_{b+1})
/// ```
///
/// **Boundary choice.** Müller et al. learn all `K + 1` vertex values; here the two end values
/// are pinned to 1, so `dy/dx = 1` at `+-B` from inside as from the identity tails: the map is
/// continuously differentiable on the whole real line. The inner values keep the density
/// normalized: `s = (1 - (w_0 + w_{K-1}) / 2) / sum_{0<k<K} h_k (w_{k-1} + w_k) / 2`, positive
/// because two bins never take more than the whole interval.
///
/// The inverse solves the quadratic of `v`'s bin with the root that does not cancel,
/// `a = 2 dv / (w_b h_b + sqrt((w_b h_b)^2 + 2 w_b (h_{b+1} - h_b) dv))`, `dv = v - c_b`.
/// All-zero `raw` gives equal widths and every `h_k = 1`: the identity.
///
/// # Shapes
/// `x, y: (B, D)`, `raw: (B, D, 2K - 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuadraticSpline {
    bins: usize,
    bound: f64,
}

/// The spline's knots and density on `[0, 1]`, from the raw parameters.
struct Knots {
    /// Bin widths `(B, D, K)`.
    widths: Tensor,
    /// Knots `x_k`, `(B, D, K + 1)`.
    xs: Tensor,
    /// Density at the knots `h_k`, `(B, D, K + 1)`.
    density: Tensor,
    /// CDF at the knots `c_k`, `(B, D, K + 1)`.
    cdf: Tensor,
}

impl QuadraticSpline {
    /// `bins` (2 to 500) bins on `[-bound, bound]` (`bound > 0`).
    pub fn new(bins: usize, bound: f64) -> Result<Self> {
        validate(bins, bound)?;
        Ok(Self { bins, bound })
    }

    fn knots(&self, raw: &Tensor) -> Result<Knots> {
        let k = self.bins;
        let widths = bin_sizes(&raw.narrow(2, 0, k)?)?;
        let xs = knots(&widths)?;
        let inner = (softplus(&raw.narrow(2, k, k - 1)?)? + MIN_BIN)?;
        // Each inner vertex carries half of each neighbouring bin.
        let share = ((widths.narrow(2, 0, k - 1)? + widths.narrow(2, 1, k - 1)?)? * 0.5)?;
        let inner_mass = (&inner * share)?.sum_keepdim(2)?;
        let end_mass = ((widths.narrow(2, 0, 1)? + widths.narrow(2, k - 1, 1)?)? * 0.5)?;
        let scale = (end_mass.neg()? + 1.0)?.div(&inner_mass)?;
        let end = end_mass.ones_like()?;
        let density = Tensor::cat(&[&end, &inner.broadcast_mul(&scale)?, &end], 2)?;
        let masses =
            ((density.narrow(2, 0, k)? + density.narrow(2, 1, k)?)? * 0.5)?.mul(&widths)?;
        let cdf = knots(&masses)?;
        Ok(Knots { widths, xs, density, cdf })
    }
}

/// `log((1 - a) h_left + a h_right)`: a convex combination of positive values, positive without
/// cancellation.
fn log_density(a: &Tensor, left: &Tensor, right: &Tensor) -> Result<Tensor> {
    let one_minus = (a.neg()? + 1.0)?;
    Ok(((one_minus * left)? + (a * right)?)?.log()?)
}

impl Transformer for QuadraticSpline {
    fn params_per_feature(&self) -> usize {
        2 * self.bins - 1
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, self.params_per_feature())?;
        with_identity_tails(x, self.bound, |u| {
            let s = self.knots(raw)?;
            let idx = search(&s.xs, u)?;
            let w = pick(&s.widths, &idx)?;
            let (left, right) = (pick(&s.density, &idx)?, pick(&s.density, &next(&idx)?)?);
            let a = ((u - pick(&s.xs, &idx)?)? / &w)?.clamp(0.0, 1.0)?;
            // v = c_b + w a (h_b + a (h_{b+1} - h_b) / 2)
            let slope_part = ((&right - &left)? * (&a * 0.5)?)?;
            let v = (pick(&s.cdf, &idx)? + ((&w * &a)? * (&left + slope_part)?)?)?;
            Ok((v, log_density(&a, &left, &right)?))
        })
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, self.params_per_feature())?;
        with_identity_tails(y, self.bound, |v| {
            let s = self.knots(raw)?;
            let idx = search(&s.cdf, v)?;
            let w = pick(&s.widths, &idx)?;
            let (left, right) = (pick(&s.density, &idx)?, pick(&s.density, &next(&idx)?)?);
            let dv = (v - pick(&s.cdf, &idx)?)?.relu()?;
            // w (h_{b+1} - h_b) / 2 a^2 + w h_b a - dv = 0, the root without cancellation.
            let linear = (&w * &left)?;
            let quadratic = ((&w * (&right - &left)?)? * 0.5)?;
            let discriminant = (linear.sqr()? + ((quadratic * &dv)? * 4.0)?)?;
            // The discriminant is (w rho(root))^2 >= (w min(h_b, h_{b+1}))^2 > 0: flooring it
            // there only absorbs rounding, and keeps the square root's gradient finite.
            let floor = (&w * left.minimum(&right)?)?.sqr()?;
            let root = discriminant.maximum(&floor)?.sqrt()?;
            let a = ((dv * 2.0)? / (linear + root)?)?.clamp(0.0, 1.0)?;
            let u = (pick(&s.xs, &idx)? + (&a * &w)?)?;
            Ok((u, log_density(&a, &left, &right)?.neg()?))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::spline_test_support::{
        check_identity, check_transformer, log_derivative_at,
    };

    #[test]
    fn matches_its_reference_and_contract() -> Result<()> {
        check_transformer(&QuadraticSpline::new(5, 2.0)?, 2.0)
    }

    #[test]
    fn zero_parameters_are_the_identity() -> Result<()> {
        check_identity(&QuadraticSpline::new(6, 3.0)?, 1e-12)
    }

    /// The pinned end densities: `dy/dx = 1` at `+-B`, as in the tails.
    #[test]
    fn derivative_is_one_at_the_bound() -> Result<()> {
        let spline = QuadraticSpline::new(4, 2.5)?;
        for x in [-2.5, 2.5] {
            for ld in log_derivative_at(&spline, x, 3)? {
                assert!(ld.abs() < 1e-12, "log dy/dx at {x}: {ld}");
            }
        }
        Ok(())
    }
}
