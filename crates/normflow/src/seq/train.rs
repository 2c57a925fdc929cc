//! Training a [`SeqModel`]: Adam on minibatches of whole (padded) sequences, KL warm-up for the
//! latent flows, the validation ELBO per epoch and the best epoch's tensors kept.

use std::collections::HashMap;
use std::time::Instant;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::data::NoteSequence;
use super::model::SeqModel;
use crate::latent::KlWarmup;
use crate::train::{guarded_step, Adam, AdamConfig};
use crate::{ensure_config, Error, Result};

/// Settings of [`fit_sequences`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeqTrainConfig {
    /// Passes over the training sequences.
    pub epochs: usize,
    /// Sequences per minibatch.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Global gradient-norm clip (`None`: no clipping).
    pub clip: Option<f64>,
    /// KL warm-up over this many optimizer steps (0: none).
    pub warmup_steps: usize,
    /// Seed of the shuffles and of the posterior samples.
    pub seed: u64,
    /// Stop after the epoch during which this many seconds have passed (`None`: no limit).
    pub time_limit_s: Option<f64>,
    /// Importance samples for the per-epoch validation figure (1 = the ELBO).
    pub valid_samples: usize,
}

impl Default for SeqTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 16,
            lr: 1e-3,
            clip: Some(10.0),
            warmup_steps: 0,
            seed: 0,
            time_limit_s: None,
            valid_samples: 1,
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeqEpoch {
    /// Epoch number (from 1).
    pub epoch: usize,
    /// Mean training loss per step (with the epoch's KL weights).
    pub train_loss: f64,
    /// Validation negative ELBO per step (`valid_samples` importance samples).
    pub valid_nll: f64,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped: usize,
    /// Seconds since training started.
    pub seconds: f64,
}

/// Trains `model` on `train`, evaluating `valid` after each epoch; restores the tensors of the
/// epoch with the best validation figure. `on_epoch` sees every epoch (progress output).
pub fn fit_sequences(
    model: &SeqModel,
    train: &[NoteSequence],
    valid: &[NoteSequence],
    config: &SeqTrainConfig,
    mut on_epoch: impl FnMut(&SeqEpoch),
) -> Result<Vec<SeqEpoch>> {
    ensure_config!(config.batch_size >= 1, "batch_size", config.batch_size, "must be at least 1");
    ensure_config!(
        config.valid_samples >= 1,
        "valid_samples",
        config.valid_samples,
        "must be >= 1"
    );
    if train.is_empty() || valid.is_empty() {
        return Err(Error::Data("training needs training and validation sequences".into()));
    }
    model.fit_closed_form(train)?;
    if !model.spec().kind.trained() {
        return Ok(Vec::new());
    }
    let mut adam = Adam::new(AdamConfig { lr: config.lr, ..AdamConfig::default() })?;
    let warmup = KlWarmup { steps: config.warmup_steps };
    let start = Instant::now();
    let mut history = Vec::new();
    let mut best: Option<(f64, HashMap<String, candle_core::Tensor>)> = None;
    let mut step = 0usize;
    for epoch in 1..=config.epochs {
        let mut rng =
            crate::random::rng_from_seed(config.seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9));
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut counted, mut skipped) = (0.0, 0usize, 0usize);
        for chunk in order.chunks(config.batch_size) {
            let refs: Vec<&NoteSequence> = chunk.iter().map(|&i| &train[i]).collect();
            let batch = model.batch(&refs)?;
            let loss = model.loss(&batch, warmup.beta(step), &mut rng)?;
            match guarded_step(model.store(), &mut adam, &loss, config.clip, config.lr)? {
                Some(v) => {
                    loss_sum += v;
                    counted += 1;
                }
                None => skipped += 1,
            }
            step += 1;
        }
        let mut eval_rng = crate::random::rng_from_seed(config.seed.wrapping_add(17));
        let valid_nll = model
            .evaluate(valid, config.valid_samples, config.valid_samples, 32, &mut eval_rng)?
            .nll_per_step;
        let record = SeqEpoch {
            epoch,
            train_loss: if counted > 0 { loss_sum / counted as f64 } else { f64::NAN },
            valid_nll,
            skipped,
            seconds: start.elapsed().as_secs_f64(),
        };
        on_epoch(&record);
        history.push(record);
        if best.as_ref().is_none_or(|(b, _)| valid_nll < *b) {
            let snapshot = model
                .store()
                .tensors()
                .into_iter()
                .map(|(n, t)| Ok((n, t.copy()?)))
                .collect::<Result<HashMap<_, _>>>()?;
            best = Some((valid_nll, snapshot));
        }
        if config.time_limit_s.is_some_and(|limit| record.seconds >= limit) {
            break;
        }
    }
    if let Some((_, tensors)) = best {
        model.store().load_tensors(&tensors, std::path::Path::new("<best epoch>"))?;
    }
    Ok(history)
}
