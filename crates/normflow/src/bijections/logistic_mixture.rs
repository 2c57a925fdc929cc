//! The logistic-mixture CDF transformer of Flow++ (Ho et al. 2019, "Flow++: Improving Flow-Based
//! Generative Models with Variational Dequantization and Architecture Design", eq. 4).

use candle_core::Tensor;

use super::affine_params::log_scale;
use super::log_space::{constant, log_sum_exp};
use super::transformer::{check_raw_shape, raw_param, Transformer};
use crate::ops::log_sigmoid;
use crate::{ensure_config, Result};

/// Largest number of mixture components (the paper uses 32; more only costs memory).
pub const MAX_COMPONENTS: usize = 256;

/// Flow++'s element-wise map: the logit of a mixture of `K` logistic CDFs, then an affine map,
///
/// ```text
/// pi = softmax(r_pi)   mu_k = r_mu_k + beta_k   log s_k = soft_clamp(r_s_k)   a = soft_clamp(r_a)
/// C(x) = sum_k pi_k sigmoid((x - mu_k) / s_k)
/// y = logit(C(x)) exp(a) + r_b
/// log dy/dx = log sum_k pi_k sigmoid(z_k) sigmoid(-z_k) / s_k - log C - log(1 - C) + a
///             (z_k = (x - mu_k) / s_k)
/// ```
///
/// `P = 3K + 2` raw parameters per element, in the order `[r_pi (K), r_mu (K), r_s (K), r_a,
/// r_b]`. Both log-scales go through the affine layers' soft clamp (`|log s| < ln 1000`), so one
/// layer's slopes stay within a bounded range whatever the conditioner outputs.
///
/// **Log-space.** `log C` and `log(1 - C)` are log-sum-exps of `log pi_k + log sigmoid(+-z_k)`
/// (`1 - C = sum_k pi_k sigmoid(-z_k)`), so `logit(C)` is never taken of a saturated CDF, and
/// values, log-derivatives and gradients are finite at `|x| = 1e4` and beyond. The tails are
/// linear: far left `logit(C) ~ (x - mu_k) / s_k` of the widest component.
///
/// **Zero raw parameters.** With one component the map is exactly the identity
/// (`logit(sigmoid(x)) = x`). With `K > 1`, identical components could never be told apart by
/// a conditioner that starts at zero outputs (their gradients would stay equal), so the means
/// get fixed offsets `beta_k` spread evenly over `[-1/2, 1/2]`, as NAF's sigmoidal transformer
/// does ([`DeepSigmoidTransformer`](super::DeepSigmoidTransformer)): the zero map is then
/// `x -> logit(mean_k sigmoid(x - beta_k))`, not the identity but within `log cosh(1/2) = 0.12`
/// of `x` everywhere (the largest gap is in the tails; tested).
///
/// **Inverse** by [`invert_transformer`](crate::solve::invert_transformer) (bracketed Newton,
/// bisection fallback; the map is strictly increasing and onto `R`).
///
/// # Shapes
/// As [`Transformer`]: `x (B, D)`, `raw (B, D, 3K + 2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogisticMixtureTransformer {
    components: usize,
}

impl LogisticMixtureTransformer {
    /// A mixture of `components` logistics (`1..=MAX_COMPONENTS`).
    pub fn new(components: usize) -> Result<Self> {
        ensure_config!(
            (1..=MAX_COMPONENTS).contains(&components),
            "components",
            components,
            format!("a logistic mixture needs 1 to {MAX_COMPONENTS} components")
        );
        Ok(Self { components })
    }

    /// Number of mixture components `K`.
    pub fn components(&self) -> usize {
        self.components
    }

    /// The fixed mean offsets `beta_k`, evenly spread over `[-1/2, 1/2]` (0 for one component).
    fn offsets(&self) -> Vec<f64> {
        let k = self.components;
        (0..k).map(|i| if k == 1 { 0.0 } else { i as f64 / (k - 1) as f64 - 0.5 }).collect()
    }
}

impl Transformer for LogisticMixtureTransformer {
    fn params_per_feature(&self) -> usize {
        3 * self.components + 2
    }

    fn forward(&self, x: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        let k = self.components;
        check_raw_shape(x, raw, self.params_per_feature())?;
        let log_pi = candle_nn::ops::log_softmax(&raw.narrow(2, 0, k)?, 2)?;
        let mu = raw.narrow(2, k, k)?.broadcast_add(&constant(self.offsets(), &[1, 1, k], raw)?)?;
        let log_s = log_scale(&raw.narrow(2, 2 * k, k)?)?;
        let a = log_scale(&raw_param(raw, 3 * k)?)?;
        let z = x.unsqueeze(2)?.broadcast_sub(&mu)?.mul(&log_s.neg()?.exp()?)?;
        let (lp, ln) = (log_sigmoid(&z)?, log_sigmoid(&z.neg()?)?);
        let log_c = log_sum_exp(&(&log_pi + &lp)?, 2)?;
        let log_1c = log_sum_exp(&(&log_pi + &ln)?, 2)?;
        let log_pdf = log_sum_exp(&(((log_pi + lp)? + ln)? - log_s)?, 2)?;
        let y = ((&log_c - &log_1c)?.mul(&a.exp()?)? + raw_param(raw, 3 * k + 1)?)?;
        let log_dy = (((log_pdf - log_c)? - log_1c)? + a)?;
        Ok((y, log_dy))
    }

    fn inverse(&self, y: &Tensor, raw: &Tensor) -> Result<(Tensor, Tensor)> {
        crate::solve::invert_transformer(self, y, raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bijections::deep_sigmoid::tests::{far_out_is_finite_and_invertible, zero_map};
    use candle_core::{DType, Device};

    #[test]
    fn finite_far_out_and_inverts_there() -> Result<()> {
        far_out_is_finite_and_invertible(&LogisticMixtureTransformer::new(1)?)?;
        far_out_is_finite_and_invertible(&LogisticMixtureTransformer::new(4)?)
    }

    #[test]
    fn one_component_at_zero_is_the_identity_and_more_are_close() -> Result<()> {
        let xs = [-1e4, -50.0, -2.0, 0.0, 1.5, 50.0, 1e4];
        let (y, ld) = zero_map(&LogisticMixtureTransformer::new(1)?, &xs)?;
        for ((a, b), l) in y.iter().zip(xs).zip(&ld) {
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0) && l.abs() < 1e-9, "{a} {b} {l}");
        }
        for k in [2, 8, 32] {
            let (y, _) = zero_map(&LogisticMixtureTransformer::new(k)?, &xs)?;
            for (a, b) in y.iter().zip(xs) {
                assert!((a - b).abs() <= 0.5f64.cosh().ln() + 1e-9, "K = {k}: {a} vs {b}");
            }
        }
        Ok(())
    }

    /// The closed-form log-derivative against a central difference, with strongly non-zero
    /// parameters (narrow and wide components, a large affine scale).
    #[test]
    fn log_derivative_matches_finite_differences() -> Result<()> {
        let t = LogisticMixtureTransformer::new(3)?;
        let dev = Device::Cpu;
        let mut rng = crate::random::rng_from_seed(8);
        let raw = (crate::random::standard_normal((1, 5, 11), DType::F64, &dev, &mut rng)? * 2.0)?;
        let x = Tensor::new(&[[-7.0f64, -0.3, 0.0, 0.8, 12.0]], &dev)?;
        let h = 1e-5;
        let (_, ld) = t.forward(&x, &raw)?;
        let (yp, _) = t.forward(&(&x + h)?, &raw)?;
        let (ym, _) = t.forward(&(&x - h)?, &raw)?;
        let fd = ((yp - ym)? / (2.0 * h))?.log()?;
        let diff = (fd - ld)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-6, "{diff}");
        Ok(())
    }

    /// The inverse at extreme targets and with extreme parameters (a component of the smallest
    /// scale, weights far from uniform), in f64 and f32.
    #[test]
    fn inverse_is_accurate_at_extremes() -> Result<()> {
        let t = LogisticMixtureTransformer::new(2)?;
        let dev = Device::Cpu;
        // [r_pi (2), r_mu (2), r_s (2), r_a, r_b]
        let sharp = [8.0, -8.0, 0.5, -3.0, -40.0, 3.0, 2.0, -1.0];
        let flat = [0.0; 8];
        let wide = [-2.0, 2.0, 30.0, -30.0, 40.0, 40.0, -40.0, 5.0];
        let raw: Vec<f64> = [sharp, flat, wide].iter().flat_map(|r| r.iter().copied()).collect();
        let raw = Tensor::from_vec(raw, (1, 3, 8), &dev)?;
        for x0 in [-1e4f64, -300.0, -1.0, 0.0, 0.49, 1.0, 300.0, 1e4] {
            let x = Tensor::new(&[[x0, x0, x0]], &dev)?;
            for dtype in [DType::F64, DType::F32] {
                let (x, raw) = (x.to_dtype(dtype)?, raw.to_dtype(dtype)?);
                let (y, ld) = t.forward(&x, &raw)?;
                let (back, ld_inv) = t.inverse(&y, &raw)?;
                // The inverse's log-derivative is minus the forward one at the point it found
                // (in a steep region a tiny error in x changes the slope noticeably).
                let ld_back = host(&t.forward(&back, &raw)?.1)?;
                let back = host(&back)?;
                let (y, ld) = (host(&y)?, host(&ld)?);
                let ld_inv = host(&ld_inv)?;
                // The solver stops at a residual in y of `tol max(1, |y|)`, which moves x by that
                // over the slope; on top, rounding of x itself.
                let (tol, x_tol) = if dtype == DType::F64 { (1e-10, 1e-9) } else { (1e-4, 1e-5) };
                for i in 0..3 {
                    assert!(y[i].is_finite() && ld[i].is_finite(), "{x0} {dtype:?}: {y:?} {ld:?}");
                    let slack = 2.0 * tol * y[i].abs().max(1.0) * (-ld[i]).exp()
                        + x_tol * x0.abs().max(1.0);
                    assert!((back[i] - x0).abs() <= slack, "{x0} {dtype:?} {i}: {}", back[i]);
                    let gap = (ld_inv[i] + ld_back[i]).abs();
                    // f32 log-sum-exps of terms near -400 carry absolute errors of ~1e-3.
                    let ld_tol = if dtype == DType::F64 { 1e-8 } else { 5e-3 };
                    assert!(gap <= ld_tol * ld_back[i].abs().max(1.0), "{x0} {dtype:?}: {gap}");
                }
            }
        }
        Ok(())
    }

    fn host(t: &Tensor) -> Result<Vec<f64>> {
        Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?)
    }

    #[test]
    fn component_counts_are_checked() -> Result<()> {
        assert_eq!(LogisticMixtureTransformer::new(4)?.params_per_feature(), 14);
        assert!(LogisticMixtureTransformer::new(0).is_err());
        assert!(LogisticMixtureTransformer::new(MAX_COMPONENTS + 1).is_err());
        Ok(())
    }
}
