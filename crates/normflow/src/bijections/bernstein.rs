//! The Bernstein-polynomial transformer (Ramasinghe et al. 2021, "Robust normalizing flows
//! using Bernstein-type polynomials"; Sick et al. 2021, "Deep transformation models").

use candle_core::Tensor;

use super::log_space::{constant, log_sum_exp, LOG_ZERO};
use super::transformer::{check_raw_shape, Transformer};
use crate::ops::log_sigmoid;
use crate::{ensure_config, Result};

/// A Bernstein polynomial with increasing coefficients between a fixed sigmoid and a logit.
///
/// With degree `M`, increments `delta = softmax(raw)` (`M` raw parameters per element),
/// coefficients `theta_0 = 0`, `theta_k = delta_0 + ... + delta_{k-1}` (so `theta_M = 1`) and
/// the Bernstein basis `b_{k,M}(t) = C(M, k) t^k (1 - t)^{M-k}`:
///
/// ```text
/// t = sigmoid(x),   B(t) = sum_{k=0}^{M} theta_k b_{k,M}(t),   y = logit(B(t))
/// dB/dt = M sum_{k=0}^{M-1} delta_k b_{k,M-1}(t)
/// log dy/dx = log dB/dt + log t + log(1 - t) - log B - log(1 - B)
/// ```
///
/// `B` is strictly increasing from `B(0) = 0` to `B(1) = 1` (positive increments), so `y` is a
/// strictly increasing map of `R` onto `R`. **Tails**: near `t = 1`, `1 - B ~ M delta_{M-1} (1 -
/// t)`, so `y ~ x - log(M delta_{M-1})`: slope 1, a shifted identity (likewise at `-inf`).
/// **Zero raw parameters**: `theta_k = k / M`, and Bernstein polynomials reproduce linear
/// functions, so `B(t) = t` and `y = x` exactly.
///
/// Everything is computed in log-space from `log sigmoid(+-x)`: `log b_{k,M} = log C(M,k) + k
/// log t + (M - k) log(1 - t)`, `log B = LSE_{k>=1}(log theta_k + log b_{k,M})` and `log(1 - B) =
/// LSE_{k<M}(log(1 - theta_k) + log b_{k,M})` (the basis sums to 1), with `log theta_k` and
/// `log(1 - theta_k)` log-sum-exps of `log_softmax(raw)`: finite values and gradients at any
/// input.
///
/// **Inverse** by [`invert_transformer`](crate::solve::invert_transformer).
#[derive(Debug, Clone)]
pub struct BernsteinTransformer {
    degree: usize,
}

impl BernsteinTransformer {
    /// Degree `M >= 1` (`M = 1` is the identity map).
    pub fn new(degree: usize) -> Result<Self> {
        ensure_config!(degree >= 1, "degree", degree, "must be at least 1");
        Ok(Self { degree })
    }

    /// Degree `M`.
    pub fn degree(&self) -> usize {
        self.degree
    }
}

fn log_binomial(n: usize, k: usize) -> f64 {
    (1..=k).map(|i| ((n + 1 - i) as f64 / i as f64).ln()).sum()
}

/// `log b_{k,n}(t)` for `k` in `ks`: `(N, 1)` log t, log(1 - t) -> `(N, ks.len())`.
fn log_basis(n: usize, ks: &[usize], lp: &Tensor, ln: &Tensor) -> Result<Tensor> {
    let c: Vec<f64> = ks.iter().map(|&k| log_binomial(n, k)).collect();
    let up: Vec<f64> = ks.iter().map(|&k| k as f64).collect();
    let down: Vec<f64> = ks.iter().map(|&k| (n - k) as f64).collect();
    let m = ks.len();
    Ok(lp
        .broadcast_mul(&constant(up, &[1, m], lp)?)?
        .broadcast_add(&ln.broadcast_mul(&constant(down, &[1, m], lp)?)?)?
        .broadcast_add(&constant(c, &[1, m], lp)?)?)
}

impl Transformer for BernsteinTransformer {
    fn params_per_feature(&self) -> usize {
        self.degree
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        let m = self.degree;
        check_raw_shape(x, raw, m)?;
        let (b, d) = x.dims2()?;
        let n = b * d;
        let log_delta = candle_nn::ops::log_softmax(&raw.reshape((n, m))?, 1)?;
        // Row i of `below`: log theta_{i+1} = LSE_{j <= i} log delta_j; row i of `above`:
        // log(1 - theta_i) = LSE_{j >= i} log delta_j.
        let mask = |keep: fn(usize, usize) -> bool| -> Vec<f64> {
            (0..m * m).map(|i| if keep(i / m, i % m) { 0.0 } else { LOG_ZERO }).collect()
        };
        let cum = |keep: fn(usize, usize) -> bool| -> Result<Tensor> {
            let masked =
                log_delta.unsqueeze(1)?.broadcast_add(&constant(mask(keep), &[1, m, m], raw)?)?;
            log_sum_exp(&masked, 2)
        };
        let log_theta = cum(|i, j| j <= i)?; // k = 1..=M
        let log_1theta = cum(|i, j| j >= i)?; // k = 0..M
        let xs = x.reshape((n, 1))?;
        let (lp, ln) = (log_sigmoid(&xs)?, log_sigmoid(&xs.neg()?)?);
        let upper: Vec<usize> = (1..=m).collect();
        let lower: Vec<usize> = (0..m).collect();
        let log_b = log_sum_exp(&(log_theta + log_basis(m, &upper, &lp, &ln)?)?, 1)?;
        let log_1b = log_sum_exp(&(log_1theta + log_basis(m, &lower, &lp, &ln)?)?, 1)?;
        let log_db = (log_sum_exp(&(log_delta + log_basis(m - 1, &lower, &lp, &ln)?)?, 1)?
            + (m as f64).ln())?;
        let y = (&log_b - &log_1b)?;
        let ld = ((log_db + (lp + ln)?.squeeze(1)?)? - (log_b + log_1b)?)?;
        Ok((y.reshape((b, d))?, ld.reshape((b, d))?))
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
    fn bernstein_is_finite_far_out_and_inverts() -> Result<()> {
        far_out_is_finite_and_invertible(&BernsteinTransformer::new(6)?)
    }

    #[test]
    fn zero_parameters_give_the_identity() -> Result<()> {
        let xs = [-1e4, -30.0, -1.0, 0.0, 2.5, 50.0];
        let (y, ld) = zero_map(&BernsteinTransformer::new(7)?, &xs)?;
        for ((a, b), l) in y.iter().zip(xs).zip(&ld) {
            assert!((a - b).abs() < 1e-9 * b.abs().max(1.0) && l.abs() < 1e-9, "{a} {b} {l}");
        }
        assert!(BernsteinTransformer::new(0).is_err());
        Ok(())
    }
}
