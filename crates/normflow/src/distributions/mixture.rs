//! Mixture of diagonal Gaussians.

use candle_core::{DType, Tensor};
use rand::{Rng, RngCore};

use super::{check_context, check_event_shape, Distribution, HALF_LOG_TWO_PI};
use crate::params::{Init, Params};
use crate::random::standard_normal;
use crate::{ensure_config, Result};

/// A mixture of `K` Gaussians with diagonal covariances on `R^D`:
///
/// ```text
/// p(x) = sum_k w_k N(x; mu_k, diag(exp(log_scale_k))^2),   w = softmax(logits)
/// log p(x) = logsumexp_k [ log w_k + sum_i ( -((x_i - mu_ki) / scale_ki)^2 / 2 - log_scale_ki ) ]
///            - D log(2 pi) / 2
/// ```
///
/// computed with a log-sum-exp that subtracts the per-sample maximum, so it stays finite far
/// from every component. All of `logits (K)`, `means (K, D)`, `log_scales (K, D)` are learnable;
/// the means start as independent `N(0, 1)` draws from the store's generator (so the
/// components are distinct and gradients tell them apart), the logits and log-scales at 0.
///
/// Sampling draws a component per sample from the weights with the caller's generator, then a
/// normal draw from it: the samples are differentiable with respect to the chosen component's
/// mean and log-scale, but not with respect to the logits (the discrete choice has no
/// reparameterization; the default `sample_and_log_prob` evaluates `log_prob` on the samples,
/// which does depend on the logits). Unconditional: a context, if given, is ignored by
/// `log_prob` and only fixes `n` in `sample`.
///
/// # Shapes
/// `x: (B, D) -> log_prob (B,)`.
#[derive(Debug, Clone)]
pub struct GaussianMixture {
    logits: Tensor,
    means: Tensor,
    log_scales: Tensor,
    dim: usize,
}

impl GaussianMixture {
    /// `components >= 1` Gaussians on `R^dim` (`dim >= 1`), with parameters under `params`.
    pub fn new(params: &Params, components: usize, dim: usize) -> Result<Self> {
        ensure_config!(components >= 1, "components", components, "must be at least 1");
        ensure_config!(dim >= 1, "dim", dim, "must be at least 1");
        let logits = params.param("logits", components, Init::Const(0.0))?;
        let means = params.param("means", (components, dim), Init::Normal { std: 1.0 })?;
        let log_scales = params.param("log_scales", (components, dim), Init::Const(0.0))?;
        Ok(Self { logits, means, log_scales, dim })
    }

    /// Unnormalized log-weights `(K,)`.
    pub fn logits(&self) -> &Tensor {
        &self.logits
    }

    /// Component means `(K, D)`.
    pub fn means(&self) -> &Tensor {
        &self.means
    }

    /// Component log standard deviations `(K, D)`.
    pub fn log_scales(&self) -> &Tensor {
        &self.log_scales
    }

    /// The mixture weights `softmax(logits)` `(K,)`.
    pub fn weights(&self) -> Result<Tensor> {
        Ok(log_softmax(&self.logits)?.exp()?)
    }
}

/// `log sum_j exp(t_j)` along the last axis, shifted by the (detached) maximum: the shift
/// cancels in the value and in the gradient, so detaching it only saves work.
fn log_sum_exp_last(t: &Tensor) -> Result<Tensor> {
    let last = t.rank() - 1;
    let max = t.max_keepdim(last)?.detach();
    let sum = t.broadcast_sub(&max)?.exp()?.sum_keepdim(last)?;
    Ok((sum.log()? + max)?.squeeze(last)?)
}

/// `t - logsumexp(t)` for a vector.
fn log_softmax(t: &Tensor) -> Result<Tensor> {
    Ok(t.broadcast_sub(&log_sum_exp_last(&t.unsqueeze(0)?)?)?)
}

impl Distribution for GaussianMixture {
    fn log_prob(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        check_event_shape(x, &[self.dim], "GaussianMixture::log_prob")?;
        // (B, 1, D) against (1, K, D).
        let eps = x
            .unsqueeze(1)?
            .broadcast_sub(&self.means.unsqueeze(0)?)?
            .broadcast_mul(&self.log_scales.neg()?.exp()?.unsqueeze(0)?)?;
        let per_component = (eps.sqr()?.sum(2)? * -0.5)?;
        let log_norm = (self.log_scales.sum(1)? - log_softmax(&self.logits)?)?;
        let joint = per_component.broadcast_sub(&log_norm.unsqueeze(0)?)?;
        Ok(log_sum_exp_last(&joint)?.affine(1.0, -(self.dim as f64) * HALF_LOG_TWO_PI)?)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        if let Some(c) = context {
            check_context(Some(c), n, true)?;
        }
        let weights = self.weights()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let chosen: Vec<u32> = (0..n).map(|_| pick(&weights, rng.random::<f64>())).collect();
        let device = self.means.device();
        let chosen = Tensor::from_vec(chosen, n, device)?;
        let mu = self.means.index_select(&chosen, 0)?;
        let scale = self.log_scales.index_select(&chosen, 0)?.exp()?;
        let eps = standard_normal((n, self.dim), self.means.dtype(), device, rng)?;
        Ok((eps * scale)?.add(&mu)?)
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn event_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
}

/// The index `k` with `cdf_{k-1} <= u < cdf_k` for `u` in `[0, 1)`; the last index when rounding
/// leaves the total weight just under `u`.
fn pick(weights: &[f64], u: f64) -> u32 {
    let mut cumulative = 0.0;
    for (k, w) in weights.iter().enumerate() {
        cumulative += w;
        if u < cumulative {
            return k as u32;
        }
    }
    weights.len().saturating_sub(1) as u32
}
