//! The monotone cubic spline transformer (Durkan et al. 2019, "Cubic-Spline Flows").

use candle_core::{DType, Device, Tensor};

use super::monotone_cubic::monotone_cubic_root;
use super::spline_knots::{bin_sizes, knots, next, pick, search, validate, with_identity_tails};
use super::transformer::{check_raw_shape, Transformer};
use crate::Result;

/// Monotone piecewise-cubic (Hermite) spline on `[-B, B]`, identity outside: `P = 2K` raw
/// parameters per element, `K` unnormalized bin widths then `K` unnormalized bin heights.
///
/// On `u = (x + B) / 2B` in `[0, 1]` (Durkan et al. 2019, with Steffen's 1990 knot derivatives):
///
/// ```text
/// w, h = MIN_BIN + (1 - K MIN_BIN) softmax(raw[..K]), softmax(raw[K..])   (widths, heights)
/// x_k, y_k: cumulative sums of w, h;   s_k = h_k / w_k                     (bin slopes)
/// d_k = min(2 s_{k-1}, 2 s_k, (s_{k-1} w_k + s_k w_{k-1}) / (w_{k-1} + w_k))   0 < k < K
/// d_0 = min(1, 3 s_0),   d_K = min(1, 3 s_{K-1})
/// bin b holds u, t = (u - x_b) / w_b,  alpha = d_b / s_b,  beta = d_{b+1} / s_b:
/// v = y_b + h_b P(t),   P(t) = (alpha + beta - 2) t^3 + (3 - 2 alpha - beta) t^2 + alpha t
/// log|dy/dx| = log(s_b P'(t)),  P'(t) = alpha (1-t)^2 + 2 (3 - alpha - beta) t (1-t) + beta t^2
/// ```
///
/// **Monotonicity.** Steffen's derivatives give `alpha, beta <= 2` in every inner bin, and the
/// end derivatives `alpha <= 3` (`beta <= 2`) in the end bins: inside the Fritsch-Carlson square
/// `[0, 3]^2` and away from the corners where `P'` touches zero, so `P' > 0` on every bin.
///
/// **Boundary choice.** Durkan et al. learn the two end derivatives; here they are 1 (the
/// identity tails' slope) whenever monotonicity allows, that is unless the end bin's slope is
/// below 1/3: the map is continuously differentiable at `+-B` in that common case and always
/// continuous. All-zero `raw` gives every slope and derivative 1: the identity.
///
/// **Inverse.** `v`'s bin, then the root in `[0, 1]` of `P(t) = (v - y_b) / h_b` in closed form
/// (Cardano / trigonometric, see `monotone_cubic`), polished by bracketed Newton in `f64` on the
/// host (candle has neither `acos` nor `cbrt`; this direction is the sampling one). The root
/// carries no gradient; one Newton step `t = t0 - (P(t0) - r) / P'(t0)` in the tensor's dtype
/// re-attaches the exact one (implicit function theorem: `dt = -(dP - dr) / P'`).
///
/// # Shapes
/// `x, y: (B, D)`, `raw: (B, D, 2K)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CubicSpline {
    bins: usize,
    bound: f64,
}

/// The spline's knots and knot derivatives on `[0, 1]`, from the raw parameters.
struct Knots {
    widths: Tensor,
    heights: Tensor,
    /// `x_k`, `(B, D, K + 1)`.
    xs: Tensor,
    /// `y_k`, `(B, D, K + 1)`.
    ys: Tensor,
    /// `d_k`, `(B, D, K + 1)`.
    derivatives: Tensor,
}

/// The Hermite cubic of one bin per element, `P(t) = a t^3 + b t^2 + c t` with `P(1) = 1`.
struct Bin {
    x: Tensor,
    width: Tensor,
    y: Tensor,
    height: Tensor,
    alpha: Tensor,
    beta: Tensor,
}

impl CubicSpline {
    /// `bins` (2 to 500) bins on `[-bound, bound]` (`bound > 0`).
    pub fn new(bins: usize, bound: f64) -> Result<Self> {
        validate(bins, bound)?;
        Ok(Self { bins, bound })
    }

    fn knots(&self, raw: &Tensor) -> Result<Knots> {
        let k = self.bins;
        let widths = bin_sizes(&raw.narrow(2, 0, k)?)?;
        let heights = bin_sizes(&raw.narrow(2, k, k)?)?;
        let slopes = (&heights / &widths)?;
        let (s_left, s_right) = (slopes.narrow(2, 0, k - 1)?, slopes.narrow(2, 1, k - 1)?);
        let (w_left, w_right) = (widths.narrow(2, 0, k - 1)?, widths.narrow(2, 1, k - 1)?);
        // Steffen: the slope of the parabola through the three neighbouring knots, limited to
        // twice either neighbouring bin slope.
        let parabola =
            ((((&s_left * &w_right)? + (&s_right * &w_left)?)?) / (&w_left + &w_right)?)?;
        let inner = (s_left.minimum(&s_right)? * 2.0)?.minimum(&parabola)?;
        let first = (slopes.narrow(2, 0, 1)? * 3.0)?.minimum(1.0)?;
        let last = (slopes.narrow(2, k - 1, 1)? * 3.0)?.minimum(1.0)?;
        let derivatives = Tensor::cat(&[&first, &inner, &last], 2)?;
        Ok(Knots { xs: knots(&widths)?, ys: knots(&heights)?, widths, heights, derivatives })
    }

    fn bin(knots: &Knots, idx: &Tensor) -> Result<Bin> {
        let width = pick(&knots.widths, idx)?;
        let height = pick(&knots.heights, idx)?;
        let slope = (&height / &width)?;
        Ok(Bin {
            x: pick(&knots.xs, idx)?,
            y: pick(&knots.ys, idx)?,
            alpha: (pick(&knots.derivatives, idx)? / &slope)?,
            beta: (pick(&knots.derivatives, &next(idx)?)? / &slope)?,
            width,
            height,
        })
    }
}

impl Bin {
    /// `(a, b, c)` of `P(t) = a t^3 + b t^2 + c t`.
    fn coefficients(&self) -> Result<(Tensor, Tensor, Tensor)> {
        let a = ((&self.alpha + &self.beta)? - 2.0)?;
        let b = ((3.0 - (&self.alpha * 2.0)?)? - &self.beta)?;
        Ok((a, b, self.alpha.clone()))
    }

    fn value(&self, t: &Tensor) -> Result<Tensor> {
        let (a, b, c) = self.coefficients()?;
        Ok((((((a * t)? + b)? * t)? + c)? * t)?)
    }

    /// `P'(t)` in Bernstein form: a sum of non-negative terms whenever `alpha + beta <= 3`, and
    /// bounded away from 0 otherwise; the floor only guards against rounding.
    fn derivative(&self, t: &Tensor) -> Result<Tensor> {
        let one_minus = (t.neg()? + 1.0)?;
        let middle = ((3.0 - (&self.alpha + &self.beta)?)? * 2.0)?;
        let p = (((&self.alpha * one_minus.sqr()?)? + (middle * (t * &one_minus)?)?)?
            + (&self.beta * t.sqr()?)?)?;
        Ok(p.maximum(f64::from(f32::MIN_POSITIVE))?)
    }

    fn log_derivative(&self, t: &Tensor) -> Result<Tensor> {
        let log_slope = (self.height.log()? - self.width.log()?)?;
        Ok((log_slope + self.derivative(t)?.log()?)?)
    }
}

/// [`monotone_cubic_root`] of every element, on detached values: `(B, D)` each.
fn roots(a: &Tensor, b: &Tensor, c: &Tensor, r: &Tensor) -> Result<Tensor> {
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.detach().to_device(&Device::Cpu)?.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
    };
    let (a, b, c, rv) = (host(a)?, host(b)?, host(c)?, host(r)?);
    let t: Vec<f64> = (0..rv.len()).map(|i| monotone_cubic_root(a[i], b[i], c[i], rv[i])).collect();
    Ok(Tensor::from_vec(t, r.shape(), &Device::Cpu)?.to_dtype(r.dtype())?.to_device(r.device())?)
}

impl Transformer for CubicSpline {
    fn params_per_feature(&self) -> usize {
        2 * self.bins
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(x, raw, self.params_per_feature())?;
        with_identity_tails(x, self.bound, |u| {
            let knots = self.knots(raw)?;
            let bin = Self::bin(&knots, &search(&knots.xs, u)?)?;
            let t = ((u - &bin.x)? / &bin.width)?.clamp(0.0, 1.0)?;
            let v = (&bin.y + (&bin.height * bin.value(&t)?)?)?;
            Ok((v, bin.log_derivative(&t)?))
        })
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        check_raw_shape(y, raw, self.params_per_feature())?;
        with_identity_tails(y, self.bound, |v| {
            let knots = self.knots(raw)?;
            let bin = Self::bin(&knots, &search(&knots.ys, v)?)?;
            let r = ((v - &bin.y)? / &bin.height)?.clamp(0.0, 1.0)?;
            let (a, b, c) = bin.coefficients()?;
            let t0 = roots(&a, &b, &c, &r)?;
            let residual = (bin.value(&t0)? - &r)?;
            let t = (&t0 - (residual / bin.derivative(&t0)?)?)?.clamp(0.0, 1.0)?;
            let u = (&bin.x + (&bin.width * &t)?)?;
            Ok((u, bin.log_derivative(&t)?.neg()?))
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
        check_transformer(&CubicSpline::new(5, 2.0)?, 2.0)
    }

    #[test]
    fn zero_parameters_are_the_identity() -> Result<()> {
        check_identity(&CubicSpline::new(6, 3.0)?, 1e-12)
    }

    /// With end slopes of at least 1/3, `dy/dx = 1` at `+-B`, as in the tails.
    #[test]
    fn derivative_is_one_at_the_bound_for_moderate_parameters() -> Result<()> {
        let spline = CubicSpline::new(4, 2.5)?;
        for x in [-2.5, 2.5] {
            for ld in log_derivative_at(&spline, x, 3)? {
                assert!(ld.abs() < 1e-12, "log dy/dx at {x}: {ld}");
            }
        }
        Ok(())
    }
}
