//! The sum-of-squares polynomial transformer (Jaini et al. 2019, "Sum-of-Squares Polynomial
//! Flow").

use candle_core::Tensor;

use super::log_space::constant;
use super::transformer::{check_raw_shape, raw_param, Transformer};
use crate::{ensure_config, Result};

/// Half-width `B` of the interval on which the polynomial acts; outside it the map continues
/// linearly. Inputs of a flow on standardized data lie inside it almost always.
pub const SOS_BOUND: f64 = 4.0;

/// Slope added to the sum of squares so that the map is strictly increasing (and its log-slope
/// finite) even where every polynomial vanishes.
const MIN_SLOPE: f64 = 1e-3;

/// The SOS polynomial transformer of Jaini et al. 2019, on a bounded interval with linear tails.
///
/// With `K` polynomials `q_k(t) = sum_{l=0}^{r} a_kl t^l` of degree `r`, `t = clamp(x / B, -1,
/// 1)`, `x_c = B t` and `B = ` [`SOS_BOUND`]:
///
/// ```text
/// P(x_c) = c + eps x_c + B int_0^t sum_k q_k(s)^2 ds        (a polynomial of degree 2r + 1)
///        = c + eps x_c + B sum_{l,m} Q_lm t^{l+m+1} / (l+m+1),   Q = A^T A
/// y = P(x_c) + P'(x_c) (x - x_c),   dy/dx = eps + sum_k q_k(t)^2 > 0
/// ```
///
/// `eps = 1e-3`. Inside `[-B, B]` it is the paper's map (in the rescaled variable `t`, which
/// keeps the powers bounded); outside, the linear continuation keeps values and gradients finite
/// for any input and makes the map onto `R` (the paper's polynomial is unbounded, which is
/// unusable at `|x| = 1e4`). `P = 1 + K (r + 1)` raw parameters per element: the shift `c`, then
/// `a` row-major `(K, r + 1)`.
///
/// **Zero raw parameters.** `a_k0 = sqrt((1 - eps) / K)` so the slope at 0 is exactly 1, and the
/// higher coefficients start at small fixed values `0.1 sin(2.4 (k (r+1) + l) + 1)`: if every
/// `q_k` started proportional to the others, the gradients would keep them proportional (the
/// sum would stay one square). The zero map is within a few percent of the identity.
///
/// **Inverse** by [`invert_transformer`](crate::solve::invert_transformer).
#[derive(Debug, Clone)]
pub struct SosTransformer {
    polynomials: usize,
    degree: usize,
}

impl SosTransformer {
    /// `polynomials` squares (`K >= 1`) of polynomials of degree `degree` (`r >= 0`, at most 8:
    /// the map has degree `2r + 1`).
    pub fn new(polynomials: usize, degree: usize) -> Result<Self> {
        ensure_config!(polynomials >= 1, "polynomials", polynomials, "must be at least 1");
        ensure_config!(degree <= 8, "degree", degree, "must be at most 8 (map degree 17)");
        Ok(Self { polynomials, degree })
    }

    fn offsets(&self) -> Vec<f64> {
        let (k, r1) = (self.polynomials, self.degree + 1);
        let a0 = ((1.0 - MIN_SLOPE) / k as f64).sqrt();
        (0..k * r1)
            .map(|i| if i % r1 == 0 { a0 } else { 0.1 * (2.4 * i as f64 + 1.0).sin() })
            .collect()
    }
}

impl Transformer for SosTransformer {
    fn params_per_feature(&self) -> usize {
        1 + self.polynomials * (self.degree + 1)
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        let p = self.params_per_feature();
        check_raw_shape(x, raw, p)?;
        let (b, d) = x.dims2()?;
        let (n, k, r1) = (b * d, self.polynomials, self.degree + 1);
        let shift = raw_param(raw, 0)?;
        let a = raw
            .reshape((n, p))?
            .narrow(1, 1, k * r1)?
            .reshape((n, k, r1))?
            .broadcast_add(&constant(self.offsets(), &[1, k, r1], raw)?)?;
        let t = (x / SOS_BOUND)?.clamp(-1.0, 1.0)?;
        let x_c = (&t * SOS_BOUND)?;
        let t1 = t.reshape((n, 1))?;
        let mut powers = vec![t1.ones_like()?];
        for l in 1..r1 {
            powers.push((&powers[l - 1] * &t1)?);
        }
        let powers = Tensor::cat(&powers, 1)?; // (n, r+1)
        let t_lm = powers.unsqueeze(2)?.broadcast_mul(&powers.unsqueeze(1)?)?; // t^(l+m)
        let q = a.transpose(1, 2)?.contiguous()?.matmul(&a)?; // (n, r+1, r+1)
        let qt = (q * t_lm)?;
        let inv: Vec<f64> = (0..r1 * r1).map(|i| 1.0 / ((i / r1 + i % r1) as f64 + 1.0)).collect();
        let integral = qt.broadcast_mul(&constant(inv, &[1, r1, r1], raw)?)?.sum((1, 2))?;
        let slope = (qt.sum((1, 2))?.reshape((b, d))? + MIN_SLOPE)?;
        let integral = (integral.reshape((b, d))? * &t)?;
        let y_c = ((shift + (&x_c * MIN_SLOPE)?)? + (integral * SOS_BOUND)?)?;
        let y = (y_c + (&slope * (x - x_c)?)?)?;
        Ok((y, slope.log()?))
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        crate::solve::invert_transformer(self, y, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::deep_sigmoid::tests::{far_out_is_finite_and_invertible, zero_map};

    #[test]
    fn sos_is_finite_far_out_and_inverts() -> Result<()> {
        far_out_is_finite_and_invertible(&SosTransformer::new(3, 2)?)
    }

    #[test]
    fn zero_parameters_give_a_near_identity_with_unit_slope_at_zero() -> Result<()> {
        let xs = [-100.0, -3.0, 0.0, 1.0, 3.9, 100.0];
        let (y, ld) = zero_map(&SosTransformer::new(4, 3)?, &xs)?;
        assert!(y[2].abs() < 1e-12 && ld[2].abs() < 1e-12, "{y:?} {ld:?}");
        for (a, b) in y.iter().zip(xs) {
            assert!((a - b).abs() < 0.1 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(SosTransformer::new(0, 2).is_err() && SosTransformer::new(2, 9).is_err());
        Ok(())
    }
}
