//! Closed-form maximum-entropy distributions, to check a fit against.
//!
//! | support   | constraints                               | maximum-entropy answer        |
//! |-----------|-------------------------------------------|-------------------------------|
//! | `R^D`     | `E[x] = mu`, `E[x x^T] = Sigma + mu mu^T` | [`Gaussian`] `N(mu, Sigma)`   |
//! | `(0, inf)`| `E[x] = mu`                               | [`Exponential`] with mean `mu`|
//! | `(0, 1)`  | `E[log x]`, `E[log(1 - x)]`               | Beta = [`Dirichlet`] of 2     |
//! | simplex   | `E[log x_i]`, `i = 1..D+1`                | [`Dirichlet`]                 |
//!
//! [`kl_from_samples`] estimates `KL(p || p*)` of a fitted model to one of them.

use candle_core::{DType, Device};
use rand::RngCore;

use crate::distributions::Distribution;
use crate::{ensure_config, Error, Result};

/// `ln Gamma(x)` for `x > 0` (Lanczos, g = 7, 9 terms; relative error about 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Gamma(x) Gamma(1 - x) = pi / sin(pi x).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).abs().ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let series = C.iter().enumerate().skip(1).fold(C[0], |acc, (i, c)| acc + c / (x + i as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

/// The digamma function `psi(x) = d/dx ln Gamma(x)` for `x > 0` (recurrence up to `x >= 10`,
/// then the asymptotic series; absolute error below 1e-13).
pub fn digamma(mut x: f64) -> f64 {
    let mut shift = 0.0;
    while x < 10.0 {
        shift -= 1.0 / x;
        x += 1.0;
    }
    let f = 1.0 / (x * x);
    let tail =
        f * (1.0 / 12.0 - f * (1.0 / 120.0 - f * (1.0 / 252.0 - f * (1.0 / 240.0 - f / 132.0))));
    shift + x.ln() - 0.5 / x - tail
}

/// The Dirichlet distribution with concentrations `alpha` (`K >= 2` of them) on the simplex
/// in `D = K - 1` coordinates (the first `D` probabilities; the last is `1 - sum x`), the
/// parameterization of [`crate::bijections::Support::Simplex`]. `K = 2` is the Beta on `(0, 1)`.
///
/// ```text
/// log p(x) = ln Gamma(alpha_0) - sum_i ln Gamma(alpha_i) + sum_{i<=K} (alpha_i - 1) log x_i
/// E[log x_i] = psi(alpha_i) - psi(alpha_0),    alpha_0 = sum_i alpha_i
/// H = ln B(alpha) + (alpha_0 - K) psi(alpha_0) - sum_i (alpha_i - 1) psi(alpha_i)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Dirichlet {
    alpha: Vec<f64>,
}

impl Dirichlet {
    /// A Dirichlet with finite `alpha_i > 0`, at least two.
    pub fn new(alpha: Vec<f64>) -> Result<Self> {
        ensure_config!(
            alpha.len() >= 2,
            "alpha",
            format!("{alpha:?}"),
            "at least 2 concentrations"
        );
        ensure_config!(
            alpha.iter().all(|a| a.is_finite() && *a > 0.0),
            "alpha",
            format!("{alpha:?}"),
            "finite values > 0"
        );
        Ok(Self { alpha })
    }

    /// The concentrations.
    pub fn alpha(&self) -> &[f64] {
        &self.alpha
    }

    fn ln_beta(&self) -> f64 {
        self.alpha.iter().map(|&a| ln_gamma(a)).sum::<f64>() - ln_gamma(self.alpha.iter().sum())
    }

    /// `E[log x_i]` for every probability, the last (`1 - sum x`) included: `K` values.
    pub fn log_moments(&self) -> Vec<f64> {
        let psi0 = digamma(self.alpha.iter().sum());
        self.alpha.iter().map(|&a| digamma(a) - psi0).collect()
    }

    /// Differential entropy in nats (with respect to Lebesgue measure on the `D` coordinates).
    pub fn entropy(&self) -> f64 {
        let a0: f64 = self.alpha.iter().sum();
        let k = self.alpha.len() as f64;
        self.ln_beta() + (a0 - k) * digamma(a0)
            - self.alpha.iter().map(|&a| (a - 1.0) * digamma(a)).sum::<f64>()
    }

    /// `log p(x)` for `x` in `D = K - 1` coordinates (`-inf` outside the simplex).
    pub fn log_prob(&self, x: &[f64]) -> f64 {
        let last = 1.0 - x.iter().sum::<f64>();
        if x.len() + 1 != self.alpha.len() || last <= 0.0 || x.iter().any(|&v| v <= 0.0) {
            return f64::NEG_INFINITY;
        }
        let body: f64 = x
            .iter()
            .chain(std::iter::once(&last))
            .zip(&self.alpha)
            .map(|(v, a)| (a - 1.0) * v.ln())
            .sum();
        body - self.ln_beta()
    }
}

/// The exponential distribution with mean `mu > 0` on `(0, inf)`: `log p = -ln mu - x / mu`,
/// `H = 1 + ln mu`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exponential {
    mean: f64,
}

impl Exponential {
    /// An exponential with finite mean `> 0`.
    pub fn new(mean: f64) -> Result<Self> {
        ensure_config!(mean.is_finite() && mean > 0.0, "mean", mean, "a finite value > 0");
        Ok(Self { mean })
    }

    /// Differential entropy in nats.
    pub fn entropy(&self) -> f64 {
        1.0 + self.mean.ln()
    }

    /// `log p(x)` for one coordinate (`-inf` for `x <= 0`).
    pub fn log_prob(&self, x: &[f64]) -> f64 {
        match x {
            [v] if *v > 0.0 => -self.mean.ln() - v / self.mean,
            _ => f64::NEG_INFINITY,
        }
    }
}

/// The Gaussian `N(mu, Sigma)` on `R^D`: `H = 1/2 log det(2 pi e Sigma)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Gaussian {
    mean: Vec<f64>,
    /// Lower Cholesky factor of Sigma, row-major `D x D`.
    chol: Vec<f64>,
}

impl Gaussian {
    /// A Gaussian with mean `mean` (`D` values) and covariance `cov` (row-major `D x D`,
    /// symmetric positive definite).
    pub fn new(mean: Vec<f64>, cov: &[f64]) -> Result<Self> {
        let d = mean.len();
        ensure_config!(
            d >= 1 && cov.len() == d * d,
            "cov",
            format!("{} values", cov.len()),
            format!("{d} x {d} values")
        );
        let mut l = vec![0.0; d * d];
        for i in 0..d {
            for j in 0..=i {
                let s: f64 = (0..j).map(|k| l[i * d + k] * l[j * d + k]).sum();
                if i == j {
                    let v = cov[i * d + i] - s;
                    if !(v > 0.0 && v.is_finite()) {
                        return Err(Error::config(
                            "cov",
                            format!("{cov:?}"),
                            "symmetric positive definite",
                        ));
                    }
                    l[i * d + i] = v.sqrt();
                } else {
                    l[i * d + j] = (cov[i * d + j] - s) / l[j * d + j];
                }
            }
        }
        Ok(Self { mean, chol: l })
    }

    fn half_log_det(&self) -> f64 {
        let d = self.mean.len();
        (0..d).map(|i| self.chol[i * d + i].ln()).sum()
    }

    /// Differential entropy in nats.
    pub fn entropy(&self) -> f64 {
        let d = self.mean.len() as f64;
        0.5 * d * (2.0 * std::f64::consts::PI * std::f64::consts::E).ln() + self.half_log_det()
    }

    /// `log p(x)` for `x` in `D` coordinates.
    pub fn log_prob(&self, x: &[f64]) -> f64 {
        let d = self.mean.len();
        // Solve L y = x - mu; the quadratic form is |y|^2.
        let mut y = vec![0.0; d];
        for i in 0..d {
            let s: f64 = (0..i).map(|k| self.chol[i * d + k] * y[k]).sum();
            y[i] = (x[i] - self.mean[i] - s) / self.chol[i * d + i];
        }
        let q: f64 = y.iter().map(|v| v * v).sum();
        -0.5 * q - self.half_log_det() - 0.5 * d as f64 * (2.0 * std::f64::consts::PI).ln()
    }
}

/// Estimates `KL(p || p*) = E_p[log p(x) - log p*(x)]` from `n >= 2` samples of `model`
/// (drawn with `rng`, without gradients) and a reference log-density `p*`; returns the
/// estimate and its standard error. Small when the fit is close; `>= 0` up to noise.
pub fn kl_from_samples(
    model: &dyn Distribution,
    reference: &dyn Fn(&[f64]) -> f64,
    n: usize,
    rng: &mut dyn RngCore,
) -> Result<(f64, f64)> {
    ensure_config!(n >= 2, "samples", n, "at least 2");
    let (x, lp) = crate::inference::without_gradients(|| model.sample_and_log_prob(n, None, rng))?;
    let x = x.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let lp = lp.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    let diffs: Vec<f64> = x.iter().zip(&lp).map(|(row, l)| l - reference(row)).collect();
    let nf = n as f64;
    let mean = diffs.iter().sum::<f64>() / nf;
    let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (nf - 1.0);
    Ok((mean, (var / nf).sqrt()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_functions_match_known_values() {
        let pi = std::f64::consts::PI;
        assert!((ln_gamma(0.5) - pi.sqrt().ln()).abs() < 1e-13);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.1) - 2.252_712_651_734_206).abs() < 1e-12);
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-12);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-12);
        assert!((digamma(10.0) - 2.251_752_589_066_721).abs() < 1e-12);
    }

    #[test]
    fn closed_forms_agree_with_each_other() -> Result<()> {
        // Uniform on the triangle: Dirichlet(1, 1, 1) has density 2, entropy -ln 2.
        let flat = Dirichlet::new(vec![1.0, 1.0, 1.0])?;
        assert!((flat.entropy() + 2f64.ln()).abs() < 1e-12);
        assert!((flat.log_prob(&[0.2, 0.3]) - 2f64.ln()).abs() < 1e-12);
        assert_eq!(flat.log_prob(&[0.7, 0.4]), f64::NEG_INFINITY);
        // Beta(2, 1): p = 2x, E[log x] = -1/2.
        let beta = Dirichlet::new(vec![2.0, 1.0])?;
        assert!((beta.log_moments()[0] + 0.5).abs() < 1e-12);
        assert!((beta.log_prob(&[0.25]) - 0.5f64.ln()).abs() < 1e-12);
        let g = Gaussian::new(vec![0.0, 1.0], &[2.0, 0.5, 0.5, 1.0])?;
        let det: f64 = 2.0 - 0.25;
        let want = 0.5 * (det * (2.0 * std::f64::consts::PI * std::f64::consts::E).powi(2)).ln();
        assert!((g.entropy() - want).abs() < 1e-12);
        let at_mean = -0.5 * (det * (2.0 * std::f64::consts::PI).powi(2)).ln();
        assert!((g.log_prob(&[0.0, 1.0]) - at_mean).abs() < 1e-12);
        assert!(Gaussian::new(vec![0.0, 0.0], &[1.0, 2.0, 2.0, 1.0]).is_err());
        assert!((Exponential::new(2.0)?.entropy() - 1.0 - 2f64.ln()).abs() < 1e-15);
        Ok(())
    }
}
