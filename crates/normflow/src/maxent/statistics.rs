//! Differentiable evaluation of the statistics `T_k(x)` on a batch of samples.

use candle_core::{DType, Tensor};

use super::constraints::{Constraints, Statistic};
use crate::{Error, Result};

/// The smallest positive normal value of `dtype`: logs are taken of `max(x, tiny)`, so a sample
/// that rounded onto the edge of its support gives a large finite value instead of `-inf`
/// (which would discard the whole step).
fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::MIN_POSITIVE,
        DType::F16 => 6.2e-5,
        _ => f32::MIN_POSITIVE as f64,
    }
}

fn safe_log(x: &Tensor) -> Result<Tensor> {
    Ok(x.clamp(tiny(x.dtype()), f64::INFINITY)?.log()?)
}

/// `x^p` for an integer `p >= 1`, by repeated squaring (defined for negative `x`, unlike
/// `powf`).
fn integer_power(x: &Tensor, mut p: u64) -> Result<Tensor> {
    let mut base = x.clone();
    let mut out: Option<Tensor> = None;
    while p > 0 {
        if p & 1 == 1 {
            out = Some(match out {
                Some(o) => (o * &base)?,
                None => base.clone(),
            });
        }
        p >>= 1;
        if p > 0 {
            base = base.sqr()?;
        }
    }
    out.ok_or_else(|| Error::Numerical("integer_power called with p = 0".into()))
}

/// `sum_i p_i f(x)_i` as `(B,)`: a weighted sum of columns.
fn weighted_sum(fx: &Tensor, powers: &[f64]) -> Result<Tensor> {
    let w =
        Tensor::from_vec(powers.to_vec(), (powers.len(), 1), fx.device())?.to_dtype(fx.dtype())?;
    Ok(fx.matmul(&w)?.squeeze(1)?)
}

impl Statistic {
    /// `T(x_b)` for every row of `x: (B, D)`, shape `(B,)`, differentiable in `x`.
    ///
    /// `x` must lie where the statistic is defined ([`Constraints::check_support`]); logs are
    /// of `max(x, tiny)` so that samples rounded onto a boundary stay finite.
    pub fn evaluate(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Statistic::Moment { powers } => {
                let mut out: Option<Tensor> = None;
                for (i, &p) in powers.iter().enumerate() {
                    if p == 0.0 {
                        continue;
                    }
                    let col = x.narrow(1, i, 1)?.squeeze(1)?;
                    let term = if p > 0.0 && p.fract() == 0.0 {
                        integer_power(&col, p as u64)?
                    } else {
                        col.clamp(tiny(x.dtype()), f64::INFINITY)?.powf(p)?
                    };
                    out = Some(match out {
                        Some(o) => (o * term)?,
                        None => term,
                    });
                }
                out.ok_or_else(|| Error::config("powers", "all zero", "the statistic is constant"))
            }
            Statistic::LogMoment { powers } => weighted_sum(&safe_log(x)?, powers),
            Statistic::LogOneMinus { powers } => {
                weighted_sum(&safe_log(&x.neg()?.affine(1.0, 1.0)?)?, powers)
            }
            Statistic::LogRemainder => safe_log(&x.sum(1)?.neg()?.affine(1.0, 1.0)?),
        }
    }
}

impl Constraints {
    /// Every statistic on every row of `x: (B, D)`: shape `(B, K)`, differentiable in `x`.
    pub fn evaluate(&self, x: &Tensor) -> Result<Tensor> {
        if x.rank() != 2 || x.dim(1)? != self.dim() {
            return Err(Error::shape(
                "constraint statistics",
                format!("(B, {})", self.dim()),
                x.dims(),
            ));
        }
        let columns = self
            .constraints()
            .iter()
            .map(|c| c.statistic.evaluate(x))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&columns, 1)?)
    }

    /// The targets as a `(K,)` tensor like `like` (dtype and device).
    pub fn target_tensor(&self, like: &Tensor) -> Result<Tensor> {
        Ok(Tensor::from_vec(self.targets(), self.len(), like.device())?.to_dtype(like.dtype())?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::constraints::Constraint;
    use super::*;
    use candle_core::{Device, Var};

    fn stat(statistic: Statistic) -> Constraint {
        Constraint { statistic, target: 0.0 }
    }

    #[test]
    fn statistics_match_their_formulas_and_have_gradients() -> Result<()> {
        let rows = [[0.2f64, 0.3], [0.5, 0.1], [-1.5, 0.25]];
        let x = Var::from_tensor(&Tensor::new(&rows, &Device::Cpu)?)?;
        let set = Constraints::new(
            2,
            vec![
                stat(Statistic::Moment { powers: vec![3.0, 1.0] }),
                stat(Statistic::Moment { powers: vec![0.0, -0.5] }),
                stat(Statistic::LogMoment { powers: vec![0.0, 2.0] }),
                stat(Statistic::LogOneMinus { powers: vec![0.0, 1.0] }),
                stat(Statistic::LogRemainder),
            ],
        )?;
        let t = set.evaluate(x.as_tensor())?;
        assert_eq!(t.dims(), [3, 5]);
        let got = t.to_vec2::<f64>()?;
        for (r, row) in rows.iter().enumerate() {
            let [a, b] = *row;
            let want =
                [a.powi(3) * b, b.powf(-0.5), 2.0 * b.ln(), (1.0 - b).ln(), (1.0 - a - b).ln()];
            for (k, w) in want.iter().enumerate() {
                assert!((got[r][k] - w).abs() < 1e-12, "row {r} stat {k}: {} vs {w}", got[r][k]);
            }
        }
        // d/da of a^3 b at the first row is 3 a^2 b.
        let grads = t.narrow(1, 0, 1)?.sum_all()?.backward()?;
        let g = grads.get(x.as_tensor()).expect("gradient").to_vec2::<f64>()?;
        assert!((g[0][0] - 3.0 * 0.04 * 0.3).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn logs_at_the_boundary_stay_finite_and_shapes_are_checked() -> Result<()> {
        let x = Tensor::new(&[[0.0f32, 1.0]], &Device::Cpu)?;
        let set = Constraints::new(
            2,
            vec![
                stat(Statistic::LogMoment { powers: vec![1.0, 0.0] }),
                stat(Statistic::LogOneMinus { powers: vec![0.0, 1.0] }),
            ],
        )?;
        let t = set.evaluate(&x)?.to_vec2::<f32>()?;
        assert!(t[0].iter().all(|v| v.is_finite()), "{t:?}");
        let wrong = Tensor::zeros((4, 3), DType::F32, &Device::Cpu)?;
        assert!(matches!(set.evaluate(&wrong), Err(Error::Shape { .. })));
        Ok(())
    }
}
