//! Normal distribution with a learnable diagonal covariance.

use candle_core::Tensor;
use rand::RngCore;

use super::{check_context, check_event_shape, Distribution, HALF_LOG_TWO_PI};
use crate::bijections::sum_per_sample;
use crate::params::{Init, Params};
use crate::random::standard_normal;
use crate::{ensure_config, Result};

/// `N(loc, diag(exp(log_scale))^2)` on events of any shape, with learnable `loc` and
/// `log_scale` of the event shape, both starting at 0 (the standard normal):
///
/// ```text
/// log p(x) = sum_i [ -((x_i - loc_i) / scale_i)^2 / 2 - log_scale_i - log(2 pi) / 2 ]
/// ```
///
/// A learnable base density, as in Glow's learned prior (Kingma & Dhariwal 2018). It is
/// unconditional: a context, if given, is ignored by `log_prob` and only fixes `n` in `sample`
/// (so it can sit under a conditional flow).
///
/// # Shapes
/// `x: (B, event...) -> log_prob (B,)`; `loc`, `log_scale`: `event`.
#[derive(Debug, Clone)]
pub struct DiagNormal {
    loc: Tensor,
    log_scale: Tensor,
    event_shape: Vec<usize>,
}

impl DiagNormal {
    /// Creates `loc` and `log_scale` of shape `event_shape` under `params`, both 0.
    pub fn new(params: &Params, event_shape: &[usize]) -> Result<Self> {
        ensure_config!(
            event_shape.iter().all(|&d| d > 0),
            "event_shape",
            format!("{event_shape:?}"),
            "every dimension must be at least 1"
        );
        let loc = params.param("loc", event_shape, Init::Const(0.0))?;
        let log_scale = params.param("log_scale", event_shape, Init::Const(0.0))?;
        Ok(Self { loc, log_scale, event_shape: event_shape.to_vec() })
    }

    /// The mean, of the event shape.
    pub fn loc(&self) -> &Tensor {
        &self.loc
    }

    /// The log standard deviations, of the event shape.
    pub fn log_scale(&self) -> &Tensor {
        &self.log_scale
    }

    fn dim(&self) -> f64 {
        self.event_shape.iter().product::<usize>() as f64
    }

    /// `sum(-eps^2 / 2) - sum(log_scale) - D log(2 pi) / 2` for standardized `eps (B, event...)`.
    fn log_prob_of_standardized(&self, eps: &Tensor) -> Result<Tensor> {
        let quad = sum_per_sample(&eps.sqr()?)?;
        let log_det = self.log_scale.sum_all()?;
        Ok(quad.affine(-0.5, -self.dim() * HALF_LOG_TWO_PI)?.broadcast_sub(&log_det)?)
    }

    fn draw(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        if let Some(c) = context {
            check_context(Some(c), n, true)?;
        }
        let mut shape = vec![n];
        shape.extend(&self.event_shape);
        let eps = standard_normal(shape, self.loc.dtype(), self.loc.device(), rng)?;
        let x = eps.broadcast_mul(&self.log_scale.exp()?)?.broadcast_add(&self.loc)?;
        Ok((x, eps))
    }
}

impl Distribution for DiagNormal {
    fn log_prob(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<Tensor> {
        check_event_shape(x, &self.event_shape, "DiagNormal::log_prob")?;
        let eps = x.broadcast_sub(&self.loc)?.broadcast_mul(&self.log_scale.neg()?.exp()?)?;
        self.log_prob_of_standardized(&eps)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(self.draw(n, context, rng)?.0)
    }

    /// Reparameterized: `x = loc + scale * eps`, and the log-density is computed from `eps`, so
    /// gradients flow from both outputs to `loc` and `log_scale`.
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let (x, eps) = self.draw(n, context, rng)?;
        Ok((x, self.log_prob_of_standardized(&eps)?))
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn event_shape(&self) -> Vec<usize> {
        self.event_shape.clone()
    }
}
