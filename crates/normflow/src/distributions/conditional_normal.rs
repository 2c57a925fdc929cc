//! Normal distribution whose mean and scale are functions of a context.

use candle_core::Tensor;
use rand::RngCore;

use super::{check_context, check_event_shape, Distribution, HALF_LOG_TWO_PI};
use crate::nn::{Activation, Mlp, MlpConfig};
use crate::params::Params;
use crate::random::standard_normal;
use crate::{ensure_config, Result};

/// `p(x | c) = N(x; loc(c), diag(exp(log_scale(c)))^2)` on `R^D`, where
/// `(loc, log_scale) = MLP(c)` splits the network's `2D` outputs in two halves:
///
/// ```text
/// log p(x | c) = sum_i [ -((x_i - loc_i(c)) / scale_i(c))^2 / 2 - log_scale_i(c) ] - D log(2 pi) / 2
/// ```
///
/// The network's last layer starts at zero, so the distribution starts as `N(0, I)` for every
/// context. The usual conditional base of conditional flows (e.g. the conditional density
/// estimators of Papamakarios et al. 2017 and Winkler et al. 2019). A context is required, one
/// row per sample: `sample(n, ctx)` draws one sample per row of `ctx`, so `n` must equal the
/// number of rows.
///
/// # Shapes
/// `x: (B, D)`, `context: (B, C) -> log_prob (B,)`.
#[derive(Debug, Clone)]
pub struct ConditionalDiagNormal {
    net: Mlp,
    dim: usize,
    context_dim: usize,
}

impl ConditionalDiagNormal {
    /// A normal on `R^dim` conditioned on contexts of width `context_dim`, through an MLP with
    /// the given hidden widths (created under `params.pp("net")`).
    pub fn new(
        params: &Params,
        dim: usize,
        context_dim: usize,
        hidden: &[usize],
        activation: Activation,
    ) -> Result<Self> {
        ensure_config!(dim >= 1, "dim", dim, "must be at least 1");
        ensure_config!(context_dim >= 1, "context_dim", context_dim, "must be at least 1");
        let config = MlpConfig {
            inputs: context_dim,
            hidden: hidden.to_vec(),
            outputs: 2 * dim,
            activation,
            zero_last: true,
        };
        let net = Mlp::new(&params.pp("net"), &config)?;
        Ok(Self { net, dim, context_dim })
    }

    /// `(loc, log_scale)`, each `(B, D)`, for `n` samples at `context (n, C)`.
    pub fn loc_and_log_scale(
        &self,
        n: usize,
        context: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        check_context(context, n, true)?;
        let Some(context) = context else {
            return Err(crate::Error::Context("a context is required".into()));
        };
        check_event_shape(context, &[self.context_dim], "ConditionalDiagNormal context")?;
        let out = self.net.forward(context)?;
        Ok((out.narrow(1, 0, self.dim)?, out.narrow(1, self.dim, self.dim)?))
    }
}

/// `sum(-eps^2 / 2 - log_scale) - D log(2 pi) / 2`, per row.
fn log_prob_of_standardized(eps: &Tensor, log_scale: &Tensor) -> Result<Tensor> {
    let d = eps.dim(1)? as f64;
    let terms = ((eps.sqr()? * -0.5)? - log_scale)?;
    Ok(terms.sum(1)?.affine(1.0, -d * HALF_LOG_TWO_PI)?)
}

impl ConditionalDiagNormal {
    fn draw(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (loc, log_scale) = self.loc_and_log_scale(n, context)?;
        let eps = standard_normal((n, self.dim), loc.dtype(), loc.device(), rng)?;
        let x = ((&eps * log_scale.exp()?)? + loc)?;
        Ok((x, eps, log_scale))
    }
}

impl Distribution for ConditionalDiagNormal {
    fn log_prob(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let batch = check_event_shape(x, &[self.dim], "ConditionalDiagNormal::log_prob")?;
        let (loc, log_scale) = self.loc_and_log_scale(batch, context)?;
        let eps = ((x - loc)? * log_scale.neg()?.exp()?)?;
        log_prob_of_standardized(&eps, &log_scale)
    }

    fn sample(&self, n: usize, context: Option<&Tensor>, rng: &mut dyn RngCore) -> Result<Tensor> {
        Ok(self.draw(n, context, rng)?.0)
    }

    /// Reparameterized: `x = loc(c) + scale(c) * eps`, the log-density computed from `eps`, so
    /// gradients flow from both outputs to the network.
    fn sample_and_log_prob(
        &self,
        n: usize,
        context: Option<&Tensor>,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let (x, eps, log_scale) = self.draw(n, context, rng)?;
        Ok((x, log_prob_of_standardized(&eps, &log_scale)?))
    }

    fn rows_independent(&self) -> bool {
        true
    }

    fn event_shape(&self) -> Vec<usize> {
        vec![self.dim]
    }
}
