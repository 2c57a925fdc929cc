//! Baselines in the same units as the latent flows (nats per step, exact likelihoods):
//!
//! - [`IndependentBernoulli`]: every note of every step independent, with the training
//!   frequency smoothed by add-one (Laplace): `p_n = (count_n + 1) / (steps + 2)`;
//! - [`GruBaseline`]: a GRU over steps, notes independent given the history:
//!   `p(x_t | x_{<t}) = prod_n Bernoulli(x_{t,n}; sigmoid(W h_t + b)_n)`,
//!   `h_t = GRU(x_0 .. x_{t-1})` (Boulanger-Lewandowski et al. 2012 used RNN-RBM/NADE emissions;
//!   this factorized one is the paper's simplest autoregressive comparison).

use candle_core::Tensor;
use rand::RngCore;

use super::data::{NoteRange, NoteSequence, SeqBatch};
use crate::latent::bernoulli_log_prob;
use crate::nn::{linear, Gru};
use crate::params::{Init, Params};
use crate::{Error, Result};

/// Per-step log-likelihoods `(B, T)` of Bernoulli `logits (B, T, N)` for `batch`, padding masked.
fn step_log_probs(logits: &Tensor, batch: &SeqBatch) -> Result<Tensor> {
    let (b, t, n) = logits.dims3()?;
    let per_step = bernoulli_log_prob(&logits.reshape((b * t, n))?, &batch.x.reshape((b * t, n))?)?;
    Ok((per_step.reshape((b, t))? * &batch.mask)?)
}

/// The add-one smoothed log-odds `log(p_n / (1 - p_n))`, `p_n = (count_n + 1) / (steps + 2)`,
/// of every modelled pitch over the steps of `train`.
pub fn note_log_odds(train: &[NoteSequence], notes: NoteRange) -> Result<Vec<f64>> {
    let mut counts = vec![0f64; notes.count];
    let mut steps = 0f64;
    for step in train.iter().flatten() {
        steps += 1.0;
        for &p in step {
            if !notes.contains(p) {
                return Err(Error::Data(format!("pitch {p} is outside the model's range")));
            }
            counts[(p - notes.low) as usize] += 1.0;
        }
    }
    Ok(counts
        .iter()
        .map(|c| {
            let p = (c + 1.0) / (steps + 2.0);
            (p / (1.0 - p)).ln()
        })
        .collect())
}

/// Overwrites `var` (shape `(N,)`) with [`note_log_odds`]: the closed-form baseline, and the
/// starting bias of every Bernoulli read-out (so training starts from the marginals instead of
/// spending its first epochs learning that most notes are silent).
pub fn set_to_log_odds(
    var: &candle_core::Var,
    train: &[NoteSequence],
    notes: NoteRange,
) -> Result<()> {
    let t = var.as_tensor();
    if t.dims() != [notes.count] {
        return Err(Error::shape("note log-odds", format!("({},)", notes.count), t.dims()));
    }
    let values = note_log_odds(train, notes)?;
    var.set(&crate::random::from_f64(values, t.shape().clone(), t.dtype(), t.device())?)?;
    Ok(())
}

/// Independent notes with fixed marginal probabilities (logits in tensor `logits`, `(N,)`).
#[derive(Debug)]
pub struct IndependentBernoulli {
    logits: candle_core::Var,
    notes: NoteRange,
}

impl IndependentBernoulli {
    /// Creates the logits (at 0) under `params`; [`IndependentBernoulli::fit`] sets them.
    pub fn new(params: &Params, notes: NoteRange) -> Result<Self> {
        Ok(Self { logits: params.param_var("logits", notes.count, Init::Const(0.0))?, notes })
    }

    /// Sets the logits to the add-one smoothed note frequencies of `train` (closed form).
    pub fn fit(&self, train: &[NoteSequence]) -> Result<()> {
        set_to_log_odds(&self.logits, train, self.notes)
    }

    /// `log p(x_t)` per step, `(B, T)` (0 at padding).
    pub fn log_prob_steps(&self, batch: &SeqBatch) -> Result<Tensor> {
        let logits = self
            .logits
            .as_tensor()
            .reshape((1, 1, self.notes.count))?
            .broadcast_as(batch.x.shape())?;
        step_log_probs(&logits.contiguous()?, batch)
    }

    /// Bernoulli probabilities `(B, T, N)` of new sequences (the same at every step).
    pub fn sample_probabilities(&self, batch: usize, steps: usize) -> Result<Tensor> {
        let p = crate::ops::sigmoid(self.logits.as_tensor())?;
        Ok(p.reshape((1, 1, self.notes.count))?
            .broadcast_as((batch, steps, self.notes.count))?
            .contiguous()?)
    }
}

/// A GRU over the piano roll with a linear Bernoulli read-out (tensors `gru.*`, `readout.*`).
#[derive(Debug)]
pub struct GruBaseline {
    gru: Gru,
    weight: Tensor,
    bias: Tensor,
    notes: NoteRange,
}

impl GruBaseline {
    /// A GRU with `hidden` units over `notes.count` inputs.
    pub fn new(params: &Params, notes: NoteRange, hidden: usize) -> Result<Self> {
        let gru = Gru::new(&params.pp("gru"), notes.count, hidden)?;
        let p = params.pp("readout");
        let init = Init::LinearDefault { fan_in: hidden };
        Ok(Self {
            gru,
            weight: p.param("weight", (notes.count, hidden), init)?,
            bias: p.param("bias", notes.count, init)?,
            notes,
        })
    }

    fn readout(&self, h: &Tensor) -> Result<Tensor> {
        linear(h, &self.weight, &self.bias)
    }

    /// `log p(x_t | x_{<t})` per step, `(B, T)` (0 at padding).
    pub fn log_prob_steps(&self, batch: &SeqBatch) -> Result<Tensor> {
        let (b, t) = (batch.batch(), batch.steps());
        let h = self.gru.run_shifted(&batch.x)?.reshape((b * t, self.gru.hidden()))?;
        let logits = self.readout(&h)?.reshape((b, t, self.notes.count))?;
        step_log_probs(&logits, batch)
    }

    /// Draws `batch` sequences of `steps` steps as 0/1 piano rolls `(B, T, N)`: each step's
    /// notes from the Bernoulli probabilities given the steps drawn before it.
    pub fn sample(
        &self,
        batch: usize,
        steps: usize,
        like: &Tensor,
        rng: &mut dyn RngCore,
    ) -> Result<Tensor> {
        let mut h = self.gru.zero_state(batch, like)?;
        let mut rows = Vec::with_capacity(steps);
        for t in 0..steps {
            let p = crate::ops::sigmoid(&self.readout(&h)?)?;
            let x = crate::latent::dynamic_binarize(&p, rng)?;
            if t + 1 < steps {
                h = self.gru.step(&x, &h)?;
            }
            rows.push(x);
        }
        Ok(Tensor::stack(&rows, 1)?)
    }
}
