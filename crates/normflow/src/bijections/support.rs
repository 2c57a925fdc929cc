//! Fixed bijections from a constrained support onto `R^D`: the last map of a flow whose samples
//! must lie in `(0, inf)^D`, a box, or the simplex (variational inference on a bounded domain,
//! maximum-entropy flows with a support).
//!
//! Direction as everywhere: `forward` maps data on the support to the real line (the
//! normalizing direction), `inverse` maps real values onto the support (the sampling direction),
//! and the log-determinant counts in the density.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::{sum_per_sample, Bijection};
use crate::ops::{log_sigmoid, sigmoid, softplus};
use crate::{ensure_config, Error, Result};

/// The support of a model's data: where its samples lie and where its density is defined.
///
/// A non-real support puts [`SupportMap`] first in the model's chain; the flow itself always
/// works on `R^D`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Support {
    /// `R^D`: no map.
    #[default]
    Real,
    /// `(0, inf)^D`, by the softplus.
    Positive,
    /// The open box `(low, high)^D`, by a scaled sigmoid.
    Interval {
        /// Lower bound of every coordinate.
        low: f64,
        /// Upper bound of every coordinate, above `low`.
        high: f64,
    },
    /// The open simplex `{x : x_i > 0, sum_i x_i < 1}` in `D` coordinates (the first `D` of
    /// `D + 1` probabilities; the last is `1 - sum_i x_i`), by stick-breaking.
    Simplex,
}

impl Support {
    /// Checks the bounds of an interval: finite, `low < high`.
    pub fn validate(&self) -> Result<()> {
        if let Support::Interval { low, high } = *self {
            ensure_config!(
                low.is_finite() && high.is_finite() && low < high,
                "support",
                format!("interval:{low},{high}"),
                "needs finite bounds with low < high"
            );
        }
        Ok(())
    }

    /// The bijection from this support onto `R^D`, or `None` for [`Support::Real`].
    pub fn map(&self) -> Result<Option<SupportMap>> {
        self.validate()?;
        Ok((*self != Support::Real).then_some(SupportMap { support: *self }))
    }

    /// Parses the CLI form: `real`, `positive`, `interval:A,B` or `simplex`.
    pub fn parse(text: &str) -> Result<Self> {
        let support = match text {
            "real" => Support::Real,
            "positive" => Support::Positive,
            "simplex" => Support::Simplex,
            other => {
                let bounds = other.strip_prefix("interval:").and_then(|b| {
                    let (a, b) = b.split_once(',')?;
                    Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?))
                });
                match bounds {
                    Some((low, high)) => Support::Interval { low, high },
                    None => {
                        return Err(Error::config(
                            "support",
                            other,
                            "expected real, positive, interval:A,B or simplex",
                        ))
                    }
                }
            }
        };
        support.validate()?;
        Ok(support)
    }

    /// Whether every coordinate of every row of `x` (shape `(B, D)`) is inside the support.
    pub fn contains(&self, x: &Tensor) -> Result<bool> {
        let rows = x.to_dtype(candle_core::DType::F64)?.to_vec2::<f64>()?;
        Ok(rows.iter().all(|r| match *self {
            Support::Real => r.iter().all(|v| v.is_finite()),
            Support::Positive => r.iter().all(|&v| v > 0.0 && v.is_finite()),
            Support::Interval { low, high } => r.iter().all(|&v| v > low && v < high),
            Support::Simplex => r.iter().all(|&v| v > 0.0) && r.iter().sum::<f64>() < 1.0,
        }))
    }
}

/// The map of a [`Support`] onto `R^D` (forward) and back (inverse).
///
/// ```text
/// positive:       forward z = log(e^x - 1) = x + log(1 - e^{-x}),  inverse x = softplus(z)
///                 log|dx/dz| = log sigmoid(z)
/// interval(a, b): forward z = logit((x - a) / (b - a)),            inverse x = a + (b - a) sigmoid(z)
///                 log|dx/dz| = log(b - a) + log sigmoid(z) + log sigmoid(-z)
/// simplex:        inverse (stick-breaking, Stan's transform), for i = 1..D:
///                 s_i = sigmoid(z_i - log(D + 1 - i)),  x_i = (1 - sum_{j<i} x_j) s_i
///                 log|det dx/dz| = sum_i log s_i + log(1 - s_i) + log(1 - sum_{j<i} x_j)
/// ```
///
/// The simplex offset `log(D + 1 - i)` maps `z = 0` to the centroid `x_i = 1 / (D + 1)`. Its
/// Jacobian is lower triangular in the natural order. Element-wise maps are diagonal.
///
/// # Shapes
/// `x: (B, D)`; ladj `(B,)`.
#[derive(Debug, Clone, Copy)]
pub struct SupportMap {
    support: Support,
}

impl SupportMap {
    /// The support this map leaves from.
    pub fn support(&self) -> Support {
        self.support
    }

    /// `log(1 - e^{-x})` for `x > 0`, accurate for small `x` where `1 - e^{-x}` cancels:
    /// there `1 - e^{-x} = x (1 - x/2 + x^2/6 - x^3/24 + x^4/120)` to 1e-15 relative.
    fn log_one_minus_exp_neg(x: &Tensor) -> Result<Tensor> {
        let small = x.lt(1e-2)?;
        let xs = x.clamp(0.0, 1e-2)?;
        let series =
            (((((xs.affine(1.0 / 120.0, -1.0 / 24.0)? * &xs)? + 1.0 / 6.0)? * &xs)? - 0.5)? * &xs)?
                .affine(1.0, 1.0)?;
        let series = (xs.log()? + series.log()?)?;
        // max(x, 1e-2) keeps the unused branch and its gradient finite.
        let large = x.clamp(1e-2, f64::INFINITY)?.neg()?.exp()?.neg()?.affine(1.0, 1.0)?.log()?;
        Ok(small.where_cond(&series, &large)?)
    }

    /// The offsets `log(D + 1 - i)`, `i = 1..D`, as a `(1, D)` tensor.
    fn simplex_offsets(like: &Tensor) -> Result<Tensor> {
        let d = like.dim(1)?;
        let v: Vec<f64> = (1..=d).map(|i| ((d + 1 - i) as f64).ln()).collect();
        Ok(Tensor::from_vec(v, (1, d), like.device())?.to_dtype(like.dtype())?)
    }

    /// The remaining stick `1 - sum_{j<i} x_j` before each coordinate, `(B, D)`.
    fn remaining(x: &Tensor) -> Result<Tensor> {
        let before = (x.cumsum(1)? - x)?;
        Ok(before.neg()?.affine(1.0, 1.0)?)
    }
}

impl Bijection for SupportMap {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z, ladj_elements) = match self.support {
            Support::Real => return Ok((x.clone(), super::zero_ladj(x)?)),
            Support::Positive => {
                let log_term = Self::log_one_minus_exp_neg(x)?;
                // dz/dx = 1 / (1 - e^{-x})
                ((x + &log_term)?, log_term.neg()?)
            }
            Support::Interval { low, high } => {
                let u = x.affine(1.0 / (high - low), -low / (high - low))?;
                let (log_u, log_1mu) = (u.log()?, u.neg()?.affine(1.0, 1.0)?.log()?);
                let z = (&log_u - &log_1mu)?;
                (z, ((log_u + log_1mu)?.neg()? - (high - low).ln())?)
            }
            Support::Simplex => {
                let rest = Self::remaining(x)?;
                let s = (x / &rest)?;
                let (log_s, log_1ms) = (s.log()?, s.neg()?.affine(1.0, 1.0)?.log()?);
                let z = ((&log_s - &log_1ms)?.broadcast_add(&Self::simplex_offsets(x)?))?;
                let ladj = ((log_s + log_1ms)? + rest.log()?)?.neg()?;
                (z, ladj)
            }
        };
        Ok((z, sum_per_sample(&ladj_elements)?))
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x, ladj_elements) = match self.support {
            Support::Real => return Ok((z.clone(), super::zero_ladj(z)?)),
            Support::Positive => (softplus(z)?, log_sigmoid(z)?),
            Support::Interval { low, high } => {
                let x = sigmoid(z)?.affine(high - low, low)?;
                let ladj = ((log_sigmoid(z)? + log_sigmoid(&z.neg()?)?)? + (high - low).ln())?;
                (x, ladj)
            }
            Support::Simplex => {
                let shifted = z.broadcast_sub(&Self::simplex_offsets(z)?)?;
                let s = sigmoid(&shifted)?;
                // x_i = s_i prod_{j<i} (1 - s_j): the remaining stick is a product, kept in
                // log space so that it never rounds to 0 before the log.
                let log_1ms = log_sigmoid(&shifted.neg()?)?;
                let log_rest = (log_1ms.cumsum(1)? - &log_1ms)?;
                let x = (&s * log_rest.exp()?)?;
                let ladj = ((log_sigmoid(&shifted)? + log_1ms)? + log_rest)?;
                (x, ladj)
            }
        };
        Ok((x, sum_per_sample(&ladj_elements)?))
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn t(rows: Vec<Vec<f64>>) -> Tensor {
        let (b, d) = (rows.len(), rows[0].len());
        Tensor::from_vec(rows.concat(), (b, d), &Device::Cpu).unwrap()
    }

    #[test]
    fn parse_accepts_the_cli_forms_and_names_bad_ones() -> Result<()> {
        assert_eq!(Support::parse("real")?, Support::Real);
        assert_eq!(Support::parse("positive")?, Support::Positive);
        assert_eq!(Support::parse("simplex")?, Support::Simplex);
        assert_eq!(Support::parse("interval:-4,4")?, Support::Interval { low: -4.0, high: 4.0 });
        for bad in ["interval:4,-4", "interval:0", "interval:a,b", "box", "interval:0,inf"] {
            let err = Support::parse(bad).expect_err(bad);
            assert!(matches!(err, Error::InvalidConfig { .. }), "{bad}: {err}");
        }
        Ok(())
    }

    #[test]
    fn samples_land_inside_the_support_even_at_extreme_latents() -> Result<()> {
        let z = t(vec![vec![-1e4, 0.0, 1e4], vec![-30.0, 30.0, 0.5]]);
        for support in [Support::Positive, Support::Interval { low: -4.0, high: 4.0 }] {
            let map = support.map()?.expect("non-real support has a map");
            let (x, ladj) = map.inverse_and_ladj(&z, None)?;
            let xs = x.to_vec2::<f64>()?;
            // Saturated coordinates may round onto the bound; nothing leaves it or turns NaN.
            assert!(xs.concat().iter().all(|v| v.is_finite()), "{support:?}: {xs:?}");
            assert!(ladj.to_vec1::<f64>()?.iter().all(|v| !v.is_nan()), "{support:?}");
        }
        let (x, _) = Support::Simplex.map()?.expect("map").inverse_and_ladj(&z, None)?;
        for row in x.to_vec2::<f64>()? {
            // A saturated last coordinate takes the whole remaining stick, up to rounding.
            let sum = row.iter().sum::<f64>();
            assert!(row.iter().all(|&v| v >= 0.0) && sum <= 1.0 + 1e-12, "{row:?}");
        }
        Ok(())
    }

    #[test]
    fn simplex_zero_is_the_centroid_and_positive_is_accurate_near_zero() -> Result<()> {
        let map = Support::Simplex.map()?.expect("map");
        let (x, _) =
            map.inverse_and_ladj(&Tensor::zeros((1, 3), DType::F64, &Device::Cpu)?, None)?;
        for v in x.to_vec2::<f64>()?.concat() {
            assert!((v - 0.25).abs() < 1e-12, "{v}");
        }
        // z = log(e^x - 1) at x = 1e-8 is log(1e-8) + 5e-9 to double precision.
        let map = Support::Positive.map()?.expect("map");
        let (z, ladj) = map.forward_and_ladj(&t(vec![vec![1e-8]]), None)?;
        let want = (1e-8f64).ln() + 0.5e-8;
        assert!((z.to_vec2::<f64>()?[0][0] - want).abs() < 1e-12);
        assert!((ladj.to_vec1::<f64>()?[0] + (1e-8f64).ln()).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn contains_checks_every_coordinate() -> Result<()> {
        let inside = t(vec![vec![0.2, 0.3], vec![0.1, 0.1]]);
        let outside = t(vec![vec![0.6, 0.5]]);
        assert!(Support::Simplex.contains(&inside)?);
        assert!(!Support::Simplex.contains(&outside)?);
        assert!(!Support::Positive.contains(&t(vec![vec![0.0, 1.0]]))?);
        Ok(())
    }
}
