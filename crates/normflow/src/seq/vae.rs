//! The latent flow model of Ziegler & Rush (2019): a VAE over note sequences whose prior over the
//! latents `z_1..T` is a flow ([`SeqPrior`]) and whose emission is factorized,
//!
//! ```text
//! p(x, z) = p_flow(z) prod_t prod_n Bernoulli(x_{t,n}; sigmoid(MLP(z_t))_n)
//! q(z | x) = prod_t N(z_t; mu_t, diag sigma_t^2),  (mu_t, log sigma_t) = MLP([h->_t, h<-_t])
//! ```
//!
//! with `h->` and `h<-` a forward and a backward GRU over the piano roll (the backward one reads
//! each sequence from its own end, so padding never reaches a real step). Every dependence
//! between steps and between notes lives in the prior.

use candle_core::{Tensor, D};
use rand::RngCore;

use super::data::{NoteRange, SeqBatch};
use super::prior::{SeqPrior, SeqPriorConfig};
use crate::latent::bernoulli_log_prob;
use crate::nn::{Activation, Gru, Mlp, MlpConfig};
use crate::params::Params;
use crate::{Error, Result};

/// Bound on `|log sigma|` of the posterior (soft clamp): keeps a step from producing a scale of
/// 0 or infinity.
const LOG_SIGMA_BOUND: f64 = 7.0;
const HALF_LOG_TWO_PI: f64 = 0.918_938_533_204_672_8;

/// The per-sequence terms of `K` samples from the posterior, each `(K, B)`:
/// `log p(x | z)`, `log p(z)` and `log q(z | x)`, summed over each sequence's real steps.
#[derive(Debug, Clone)]
pub struct ElboTerms {
    /// Reconstruction `log p(x | z)`.
    pub reconstruction: Tensor,
    /// Prior `log p(z)`.
    pub prior: Tensor,
    /// Posterior `log q(z | x)`.
    pub posterior: Tensor,
}

impl ElboTerms {
    /// Importance log-weights `log p(x | z) + log p(z) - log q(z | x)`, `(K, B)`.
    pub fn log_weights(&self) -> Result<Tensor> {
        Ok(((&self.reconstruction + &self.prior)? - &self.posterior)?)
    }
}

/// Encoder, flow prior and emission (tensors `encoder.*`, `prior.*`, `emission.*`).
#[derive(Debug)]
pub struct SeqVae {
    forward_gru: Gru,
    backward_gru: Gru,
    head: Mlp,
    prior: SeqPrior,
    emission: Mlp,
    notes: NoteRange,
}

impl SeqVae {
    /// Builds the model for `notes.count` Bernoulli outputs per step.
    pub fn new(params: &Params, prior: &SeqPriorConfig, notes: NoteRange) -> Result<Self> {
        prior.validate()?;
        let (n, h, d) = (notes.count, prior.hidden, prior.latent);
        let enc = params.pp("encoder");
        let mlp = |p: Params, inputs: usize, outputs: usize, zero_last: bool| {
            Mlp::new(
                &p,
                &MlpConfig {
                    inputs,
                    hidden: vec![h],
                    outputs,
                    activation: Activation::Relu,
                    zero_last,
                },
            )
        };
        Ok(Self {
            forward_gru: Gru::new(&enc.pp("forward"), n, h)?,
            backward_gru: Gru::new(&enc.pp("backward"), n, h)?,
            // Zero last layer: the posterior starts as the standard normal.
            head: mlp(enc.pp("head"), 2 * h, 2 * d, true)?,
            prior: SeqPrior::new(&params.pp("prior"), prior)?,
            emission: mlp(params.pp("emission"), d, n, false)?,
            notes,
        })
    }

    /// The flow prior.
    pub fn prior(&self) -> &SeqPrior {
        &self.prior
    }

    /// The modelled pitches.
    pub fn notes(&self) -> NoteRange {
        self.notes
    }

    /// `q(z | x)`'s mean and log standard deviation, each `(B, T, D)`.
    pub fn posterior(&self, batch: &SeqBatch) -> Result<(Tensor, Tensor)> {
        let ahead = self.forward_gru.run(&batch.x)?;
        let behind = batch.reverse(&self.backward_gru.run(&batch.reverse(&batch.x)?)?)?;
        let (b, t) = (batch.batch(), batch.steps());
        let features = Tensor::cat(&[&ahead, &behind], 2)?.reshape((b * t, ()))?;
        let out = self.head.forward(&features)?.reshape((b, t, ()))?;
        let d = self.prior.config().latent;
        let log_sigma = crate::ops::soft_clamp(&out.narrow(2, d, d)?, LOG_SIGMA_BOUND)?;
        Ok((out.narrow(2, 0, d)?, log_sigma))
    }

    /// Emission logits `(B, T, N)` of latents `z (B, T, D)`.
    pub fn logits(&self, z: &Tensor) -> Result<Tensor> {
        let (b, t, d) = z.dims3()?;
        Ok(self.emission.forward(&z.reshape((b * t, d))?)?.reshape((b, t, self.notes.count))?)
    }

    /// `K` reparameterized posterior samples per sequence and the three terms of their
    /// log-weights (see [`ElboTerms`]); sample `k` of sequence `b` is row `k * B + b`.
    pub fn elbo_terms(
        &self,
        batch: &SeqBatch,
        samples: usize,
        rng: &mut dyn RngCore,
    ) -> Result<ElboTerms> {
        if samples == 0 {
            return Err(Error::config("samples", 0, "must be at least 1"));
        }
        let (b, t, d) = (batch.batch(), batch.steps(), self.prior.config().latent);
        let (mu, log_sigma) = self.posterior(batch)?;
        let rows = samples * b;
        let (mu, log_sigma) = (mu.repeat((samples, 1, 1))?, log_sigma.repeat((samples, 1, 1))?);
        let eps = crate::random::standard_normal((rows, t, d), mu.dtype(), mu.device(), rng)?;
        let z = (mu + (log_sigma.exp()? * &eps)?)?;
        // log N(z; mu, sigma) = log N(eps; 0, 1) - log sigma, per step.
        let log_q = ((((eps.sqr()? * -0.5)? - log_sigma)? - HALF_LOG_TWO_PI)?).sum(D::Minus1)?;
        let log_prior = self.prior.log_prob_steps(&z)?;
        let x = batch.x.repeat((samples, 1, 1))?;
        let logits = self.logits(&z)?;
        let n = self.notes.count;
        let log_px =
            bernoulli_log_prob(&logits.reshape((rows * t, n))?, &x.reshape((rows * t, n))?)?
                .reshape((rows, t))?;
        let mask = batch.mask.repeat((samples, 1))?;
        let per_sequence = |steps: Tensor| -> Result<Tensor> {
            Ok((steps * &mask)?.sum(1)?.reshape((samples, b))?)
        };
        Ok(ElboTerms {
            reconstruction: per_sequence(log_px)?,
            prior: per_sequence(log_prior)?,
            posterior: per_sequence(log_q)?,
        })
    }

    /// The training loss: minus the ELBO per step with the KL part weighted by `beta`
    /// (`-(1/S) sum_b [log p(x|z) + beta (log p(z) - log q(z|x))]`, `S` the batch's real
    /// steps), one posterior sample per sequence.
    pub fn loss(&self, batch: &SeqBatch, beta: f64, rng: &mut dyn RngCore) -> Result<Tensor> {
        let terms = self.elbo_terms(batch, 1, rng)?;
        let kl = (terms.prior - terms.posterior)?;
        let objective = (terms.reconstruction + (kl * beta)?)?.sum_all()?;
        Ok((objective * (-1.0 / batch.real_steps() as f64))?)
    }

    /// Bernoulli probabilities `(B, T, N)` of `batch` sequences of `steps` steps, with the
    /// prior latents drawn to produce them.
    pub fn sample_probabilities(
        &self,
        batch: usize,
        steps: usize,
        like: &Tensor,
        rng: &mut dyn RngCore,
    ) -> Result<Tensor> {
        let (z, _) = self.prior.sample(batch, steps, like, rng)?;
        crate::ops::sigmoid(&self.logits(&z)?)
    }
}
