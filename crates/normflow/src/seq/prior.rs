//! The flow prior over a sequence of latent vectors `z (B, T, D)` (Ziegler & Rush 2019, "Latent
//! Normalizing Flows for Discrete Sequences", section 4).
//!
//! Every layer is *causal over time*: a GRU carries the history of one side of the layer and a
//! within-step bijection (a MADE autoregressive layer or a split coupling, conditioned on the
//! GRU state) maps step `t`. Two time directions:
//!
//! ```text
//! AF  (density direction z -> eps, one parallel pass):
//!     h_t = GRU(z_0 .. z_{t-1}),   eps_t = f(z_t; h_t)
//!     sampling runs t = 0..T-1 in turn: z_t = f^{-1}(eps_t; h_t)
//! IAF (sampling direction eps -> z, one parallel pass):
//!     g_t = GRU(eps_0 .. eps_{t-1}),   z_t = f(eps_t; g_t)
//!     density runs t = 0..T-1 in turn: eps_t = f^{-1}(z_t; g_t)
//! ```
//!
//! `f` is the within-step map: affine or rational-quadratic spline (the paper's non-affine maps
//! were mixtures of logistics and NLSq; splines stand in for them here), autoregressive within
//! the step (`AF/AF`) or a split coupling (`AF/SCF`, `IAF/SCF`). Stacked layers alternate the
//! within-step order (reversed MADE order, complementary coupling masks).
//!
//! The Jacobian of each layer is block lower-triangular over time, so the density of the first
//! `L` steps is the sum of the first `L` per-step terms: padded steps after a sequence's end are
//! simply masked out, and log-determinants are returned **per step**, `(B, T)`.

use std::sync::Arc;

use candle_core::{Tensor, D};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::bijections::{
    alternating_mask, AffineTransformer, Bijection, CouplingConfig, MafLayerConfig,
    RationalQuadraticSpline, RqSplineConfig, Transformer, TransformerAutoregressive,
    TransformerCoupling,
};
use crate::nn::{Gru, MadeOrder};
use crate::params::Params;
use crate::{ensure_config, Error, Result};

/// `log N(0, 1)` normalizer per dimension, `-0.5 log(2 pi)`.
const HALF_LOG_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// The paper's three prior architectures (time direction / within-step structure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriorKind {
    /// Autoregressive over time, autoregressive (MADE) within each step.
    AfAf,
    /// Autoregressive over time, split coupling within each step.
    AfScf,
    /// Inverse autoregressive over time (parallel sampling), split coupling within each step.
    IafScf,
}

impl PriorKind {
    /// The CLI spelling (`af-af`, `af-scf`, `iaf-scf`).
    pub fn name(&self) -> &'static str {
        match self {
            PriorKind::AfAf => "af-af",
            PriorKind::AfScf => "af-scf",
            PriorKind::IafScf => "iaf-scf",
        }
    }
}

/// Shape of a [`SeqPrior`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqPriorConfig {
    /// The architecture.
    pub kind: PriorKind,
    /// Latent width `D` per step (at least 2 for the split couplings).
    pub latent: usize,
    /// Number of stacked layers.
    pub layers: usize,
    /// GRU state width `H` and the within-step conditioners' hidden width.
    pub hidden: usize,
    /// Rational-quadratic spline bins of the within-step map; 0 = affine.
    pub spline_bins: usize,
    /// The splines' interval `[-B, B]` (identity outside).
    pub spline_bound: f64,
}

impl SeqPriorConfig {
    /// Checks every field, naming the first invalid one.
    pub fn validate(&self) -> Result<()> {
        let min_latent = if self.kind == PriorKind::AfAf { 1 } else { 2 };
        ensure_config!(
            self.latent >= min_latent,
            "latent",
            self.latent,
            format!("the {} prior needs at least {min_latent} latent dimensions", self.kind.name())
        );
        ensure_config!(self.layers >= 1, "layers", self.layers, "must be at least 1");
        ensure_config!(self.hidden >= 1, "hidden", self.hidden, "must be at least 1");
        ensure_config!(
            self.spline_bins == 0 || self.spline_bins >= 2,
            "spline_bins",
            self.spline_bins,
            "0 (affine) or at least 2"
        );
        ensure_config!(
            self.spline_bound.is_finite() && self.spline_bound > 0.0,
            "spline_bound",
            self.spline_bound,
            "a finite value > 0"
        );
        Ok(())
    }

    fn transformer(&self) -> Result<Arc<dyn Transformer>> {
        Ok(if self.spline_bins == 0 {
            Arc::new(AffineTransformer)
        } else {
            Arc::new(RationalQuadraticSpline::new(
                self.spline_bound,
                RqSplineConfig::new(self.spline_bins),
            )?)
        })
    }
}

/// One layer causal over time, described in its *fast* direction: `out_t = f(u_t; c_t)` with
/// `c_t = GRU(u_0 .. u_{t-1})`. An AF layer's fast direction is density evaluation; an IAF
/// layer is the same map used the other way round (its fast direction is sampling).
#[derive(Debug)]
pub struct CausalLayer {
    gru: Gru,
    step: Box<dyn Bijection>,
    latent: usize,
    /// `true`: density evaluation is the slow (sequential) direction.
    inverse_autoregressive: bool,
}

impl CausalLayer {
    /// Builds layer `index` of a prior (tensors `gru.*` and `step.*` under `params`).
    pub fn new(params: &Params, config: &SeqPriorConfig, index: usize) -> Result<Self> {
        config.validate()?;
        let (d, h) = (config.latent, config.hidden);
        let gru = Gru::new(&params.pp("gru"), d, h)?;
        let step_params = params.pp("step");
        let step: Box<dyn Bijection> = match config.kind {
            PriorKind::AfAf => {
                let c = MafLayerConfig {
                    context_features: h,
                    order: if index % 2 == 0 { MadeOrder::Natural } else { MadeOrder::Reversed },
                    ..MafLayerConfig::new(d, vec![h])
                };
                Box::new(TransformerAutoregressive::new(&step_params, &c, config.transformer()?)?)
            }
            PriorKind::AfScf | PriorKind::IafScf => {
                let c = CouplingConfig {
                    context_features: h,
                    ..CouplingConfig::new(alternating_mask(d, index), vec![h])
                };
                Box::new(TransformerCoupling::new(&step_params, &c, config.transformer()?)?)
            }
        };
        Ok(Self { gru, step, latent: d, inverse_autoregressive: config.kind == PriorKind::IafScf })
    }

    fn check(&self, u: &Tensor) -> Result<(usize, usize)> {
        match u.dims() {
            &[b, t, d] if d == self.latent && t > 0 => Ok((b, t)),
            dims => {
                Err(Error::shape("sequence prior input", format!("(B, T, {})", self.latent), dims))
            }
        }
    }

    /// Fast direction, parallel over time: `u (B, T, D) -> (out, log|d out/du| (B, T))`.
    fn fast(&self, u: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check(u)?;
        let context = self.gru.run_shifted(u)?.reshape((b * t, self.gru.hidden()))?;
        let flat = u.reshape((b * t, self.latent))?;
        let (out, ladj) = self.step.forward_and_ladj(&flat, Some(&context))?;
        Ok((out.reshape((b, t, self.latent))?, ladj.reshape((b, t))?))
    }

    /// Slow direction, one step at a time: `out (B, T, D) -> (u, log|du/d out| (B, T))` with
    /// `u_t = f^{-1}(out_t; GRU(u_0 .. u_{t-1}))`.
    fn slow(&self, out: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = self.check(out)?;
        let keep_graph = crate::inference::gradients_enabled();
        let mut h = self.gru.zero_state(b, out)?;
        let (mut us, mut ladjs) = (Vec::with_capacity(t), Vec::with_capacity(t));
        for s in 0..t {
            let (mut u, mut ladj) = self
                .step
                .inverse_and_ladj(&out.narrow(1, s, 1)?.squeeze(1)?.contiguous()?, Some(&h))?;
            if !keep_graph {
                u = u.detach();
                ladj = ladj.detach();
            }
            if s + 1 < t {
                h = self.gru.step(&u, &h)?;
                if !keep_graph {
                    h = h.detach();
                }
            }
            us.push(u);
            ladjs.push(ladj);
        }
        Ok((Tensor::stack(&us, 1)?, Tensor::stack(&ladjs, 1)?))
    }

    /// Density direction `z -> eps`, with `log|d eps/dz|` per step `(B, T)`.
    pub fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.inverse_autoregressive {
            self.slow(z)
        } else {
            self.fast(z)
        }
    }

    /// Sampling direction `eps -> z`, with `log|dz/d eps|` per step `(B, T)`.
    pub fn inverse(&self, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.inverse_autoregressive {
            self.fast(eps)
        } else {
            self.slow(eps)
        }
    }

    /// The within-step order of this layer's step map.
    fn step_order(&self) -> Option<Vec<usize>> {
        self.step.jacobian_order()
    }
}

/// A stack of [`CausalLayer`]s on a standard normal base: a density on `R^{T x D}` for every `T`.
#[derive(Debug)]
pub struct SeqPrior {
    layers: Vec<CausalLayer>,
    config: SeqPriorConfig,
}

impl SeqPrior {
    /// Builds the layers under `params` (`layers.{i}.*`).
    pub fn new(params: &Params, config: &SeqPriorConfig) -> Result<Self> {
        config.validate()?;
        let layers = (0..config.layers)
            .map(|i| CausalLayer::new(&params.pp("layers").pp(i), config, i))
            .collect::<Result<_>>()?;
        Ok(Self { layers, config: config.clone() })
    }

    /// The configuration.
    pub fn config(&self) -> &SeqPriorConfig {
        &self.config
    }

    /// Density direction through every layer: `z (B, T, D) -> (eps, log|d eps/dz| (B, T))`.
    pub fn forward(&self, z: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut ladj: Option<Tensor> = None;
        let mut u = z.clone();
        for layer in &self.layers {
            let (next, l) = layer.forward(&u)?;
            u = next;
            ladj = Some(match ladj {
                None => l,
                Some(acc) => (acc + l)?,
            });
        }
        let ladj = ladj.ok_or_else(|| Error::config("layers", 0, "must be at least 1"))?;
        Ok((u, ladj))
    }

    /// Sampling direction through every layer: `eps -> (z, log|dz/d eps| (B, T))`.
    pub fn inverse(&self, eps: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut ladj: Option<Tensor> = None;
        let mut u = eps.clone();
        for layer in self.layers.iter().rev() {
            let (next, l) = layer.inverse(&u)?;
            u = next;
            ladj = Some(match ladj {
                None => l,
                Some(acc) => (acc + l)?,
            });
        }
        let ladj = ladj.ok_or_else(|| Error::config("layers", 0, "must be at least 1"))?;
        Ok((u, ladj))
    }

    /// `log p(z_t | z_{<t})` for every step: `z (B, T, D) -> (B, T)`. Summing the first `L`
    /// entries of a row gives the log-density of that sequence's first `L` steps.
    pub fn log_prob_steps(&self, z: &Tensor) -> Result<Tensor> {
        let (eps, ladj) = self.forward(z)?;
        Ok((standard_normal_log_prob_steps(&eps)? + ladj)?)
    }

    /// Draws `batch` sequences of `steps` steps: `(z (B, T, D), log p(z) per step (B, T))`, the
    /// log-density computed by the sampler itself (base density minus the sampling direction's
    /// log-determinant), independently of [`SeqPrior::log_prob_steps`].
    pub fn sample(
        &self,
        batch: usize,
        steps: usize,
        like: &Tensor,
        rng: &mut dyn RngCore,
    ) -> Result<(Tensor, Tensor)> {
        let eps = crate::random::standard_normal(
            (batch, steps, self.config.latent),
            like.dtype(),
            like.device(),
            rng,
        )?;
        let (z, ladj) = self.inverse(&eps)?;
        Ok((z, (standard_normal_log_prob_steps(&eps)? - ladj)?))
    }

    /// This prior as a [`Bijection`] on flattened sequences of a fixed length `steps`, for the
    /// checker.
    pub fn flat(self, steps: usize) -> FlatSeqPrior {
        FlatSeqPrior { prior: self, steps }
    }
}

/// `sum_d log N(eps_{t,d}; 0, 1)`: `(B, T, D) -> (B, T)`.
pub fn standard_normal_log_prob_steps(eps: &Tensor) -> Result<Tensor> {
    let d = eps.dim(D::Minus1)? as f64;
    Ok(((eps.sqr()?.sum(D::Minus1)? * -0.5)? - d * HALF_LOG_TWO_PI)?)
}

/// A [`SeqPrior`]'s transform as a [`Bijection`] on `(B, T * D)` rows (step-major), `T` fixed.
/// Its ladj is the sum over steps. A one-layer prior declares its order (step by step, the
/// within-step order inside each step); deeper stacks mix within-step orders and declare none.
#[derive(Debug)]
pub struct FlatSeqPrior {
    prior: SeqPrior,
    steps: usize,
}

impl FlatSeqPrior {
    fn unflatten(&self, x: &Tensor) -> Result<Tensor> {
        let d = self.prior.config.latent;
        match x.dims() {
            &[b, n] if n == self.steps * d => Ok(x.reshape((b, self.steps, d))?),
            dims => Err(Error::shape(
                "flattened sequence prior input",
                format!("(B, {})", self.steps * d),
                dims,
            )),
        }
    }

    fn flatten(&self, x: &Tensor, ladj: &Tensor) -> Result<(Tensor, Tensor)> {
        let b = x.dim(0)?;
        Ok((x.reshape((b, ()))?, ladj.sum(1)?))
    }
}

impl Bijection for FlatSeqPrior {
    fn forward_and_ladj(&self, x: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (z, ladj) = self.prior.forward(&self.unflatten(x)?)?;
        self.flatten(&z, &ladj)
    }

    fn inverse_and_ladj(&self, z: &Tensor, _context: Option<&Tensor>) -> Result<(Tensor, Tensor)> {
        let (x, ladj) = self.prior.inverse(&self.unflatten(z)?)?;
        self.flatten(&x, &ladj)
    }

    fn jacobian_order(&self) -> Option<Vec<usize>> {
        let [layer] = self.prior.layers.as_slice() else { return None };
        let within = layer.step_order()?;
        let d = self.prior.config.latent;
        Some((0..self.steps).flat_map(|t| within.iter().map(move |&i| t * d + i)).collect())
    }
}
