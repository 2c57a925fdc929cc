//! Latent normalizing flows for discrete sequences (Ziegler & Rush 2019, "Latent Normalizing
//! Flows for Discrete Sequences"), on polyphonic music.
//!
//! A sequence `x_1..T` of note sets (a piano roll) is modelled as
//!
//! ```text
//! p(x) = ∫ p_flow(z_1..T) prod_t p(x_t | z_t) dz,     p(x_t | z_t) = prod_n Bernoulli(x_{t,n})
//! ```
//!
//! so that every dependence between steps and between notes lives in the continuous latent
//! flow ([`prior`]: AF/AF, AF/SCF, IAF/SCF). The model is a VAE ([`vae`]) trained on the ELBO
//! and evaluated by the importance-weighted bound ([`crate::latent`]), reported as negative
//! log-likelihood per step: `-sum_x log p(x) / sum_x T(x)` over a split.
//!
//! - [`data`]: loading the classic piano-roll JSON (and the object layout), padded batches;
//! - [`prior`]: the flow prior, a density on `R^{T x D}` for every `T`;
//! - [`vae`]: encoder, prior and emission;
//! - [`baselines`]: independent Bernoulli notes and a GRU over steps, exact likelihoods;
//! - [`model`]: one type for all five, evaluation, sampling, the model directory;
//! - [`train`]: minibatch training with KL warm-up and the best validation epoch kept.

pub mod baselines;
pub mod data;
pub mod model;
pub mod prior;
pub mod train;
pub mod vae;

pub use data::{
    load_sequences, parse_sequences, NoteRange, NoteSequence, SeqBatch, SequenceSplits,
};
pub use model::{SeqEvaluation, SeqModel, SeqModelKind, SeqModelSpec};
pub use prior::{PriorKind, SeqPrior, SeqPriorConfig};
pub use train::{fit_sequences, SeqEpoch, SeqTrainConfig};
pub use vae::SeqVae;
