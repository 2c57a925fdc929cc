//! Training a [`Vae`] on the ELBO with KL warm-up; the best epoch on a validation set is kept.

use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::model::Vae;
use crate::latent::KlWarmup;
use crate::train::{guarded_step, Adam, AdamConfig, Snapshot};
use crate::{ensure_config, Error, Result};

/// Settings of [`fit`]. Defaults follow the papers (Adam 5e-4, batch 100), with warm-up scaled
/// to short runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeTrainConfig {
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Epochs over which the KL weight `β` rises linearly to 1 (0 = no warm-up).
    pub warmup_epochs: usize,
    /// Clip the global gradient norm (None = no clipping).
    pub clip: Option<f64>,
    /// Stop after this many epochs without a better validation ELBO (None = never).
    pub patience: Option<usize>,
    /// Seed of the shuffles, binarizations and posterior samples.
    pub seed: u64,
}

impl Default for VaeTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 50,
            batch_size: 100,
            lr: 5e-4,
            warmup_epochs: 10,
            clip: Some(100.0),
            patience: None,
            seed: 0,
        }
    }
}

/// What happened in one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeEpoch {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean single-sample ELBO of the training batches (nats, `β = 1`, parameters as they were
    /// at each step).
    pub train_elbo: f64,
    /// The KL weight at the epoch's last step.
    pub beta: f64,
    /// Mean single-sample ELBO of the validation rows after the epoch (fixed observation and
    /// samples: comparable across epochs).
    pub val_elbo: Option<f64>,
    /// Steps skipped for a non-finite loss or gradient.
    pub skipped_steps: usize,
    /// Wall time of the epoch, seconds.
    pub seconds: f64,
}

/// The result of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaeFitReport {
    /// One record per epoch run.
    pub epochs: Vec<VaeEpoch>,
    /// The epoch whose parameters the model holds at the end (best validation ELBO among
    /// epochs with `β = 1`, or the last epoch without validation rows).
    pub best_epoch: usize,
    /// Its validation ELBO.
    pub best_val_elbo: Option<f64>,
}

/// A stream of the run's generator: `(seed, purpose)` gives independent, reproducible draws.
fn stream(seed: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(purpose);
    rng
}

/// Trains `vae` on 8-bit pixel rows `train (N, D)` (each batch freshly binarized or
/// dequantized by [`Vae::observe`]), with Adam on `-ELBO_β` and KL warm-up.
///
/// After each epoch the validation rows (observed once, scored with fixed samples) give the
/// epoch's ELBO; the best epoch whose `β` had reached 1 is restored at the end. `on_epoch` sees
/// every epoch with a flag for a new best (to save the model), and may stop the run by
/// returning `false`.
pub fn fit(
    vae: &Vae,
    train: &Tensor,
    validation: Option<&Tensor>,
    config: &VaeTrainConfig,
    on_epoch: &mut dyn FnMut(&VaeEpoch, bool) -> Result<bool>,
) -> Result<VaeFitReport> {
    ensure_config!(config.epochs >= 1, "epochs", config.epochs, "at least 1");
    ensure_config!(config.batch_size >= 1, "batch_size", config.batch_size, "at least 1");
    let rows = train.dim(0)?;
    if rows < config.batch_size {
        return Err(Error::Data(format!(
            "{rows} training rows are fewer than one batch of {}",
            config.batch_size
        )));
    }
    let mut adam = Adam::new(AdamConfig { lr: config.lr, ..AdamConfig::default() })?;
    let batches = rows / config.batch_size;
    let warmup = KlWarmup { steps: config.warmup_epochs * batches };
    let val_obs = validation.map(|v| vae.observe(v, &mut stream(config.seed, 1))).transpose()?;
    let mut report = VaeFitReport { epochs: Vec::new(), best_epoch: 0, best_val_elbo: None };
    let mut best: Option<Snapshot> = None;
    let mut step = 0usize;
    let mut since_best = 0usize;
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        let mut order: Vec<u32> = (0..rows as u32).collect();
        let mut rng = stream(config.seed, 1000 + epoch as u64);
        order.shuffle(&mut rng);
        let (mut sum, mut counted, mut skipped) = (0.0, 0usize, 0usize);
        for b in 0..batches {
            let ids = &order[b * config.batch_size..(b + 1) * config.batch_size];
            let ids = Tensor::from_slice(ids, ids.len(), train.device())?;
            let x = vae.observe(&train.index_select(&ids, 0)?, &mut rng)?;
            let beta = warmup.beta(step);
            let (loss, elbo) = vae.loss(&x, beta, &mut rng)?;
            match guarded_step(vae.store(), &mut adam, &loss, config.clip, config.lr)? {
                Some(_) => {
                    sum += elbo;
                    counted += 1;
                }
                None => skipped += 1,
            }
            step += 1;
        }
        if counted == 0 {
            return Err(Error::NonFinite(format!(
                "epoch {epoch}: every step had a non-finite loss or gradient"
            )));
        }
        let val_elbo = match &val_obs {
            Some(v) => {
                let bounds = vae.bounds(v, 1, &mut stream(config.seed, 2))?;
                Some(bounds.elbo.iter().sum::<f64>() / bounds.elbo.len().max(1) as f64)
            }
            None => None,
        };
        let beta = warmup.beta(step.saturating_sub(1));
        let record = VaeEpoch {
            epoch,
            train_elbo: sum / counted as f64,
            beta,
            val_elbo,
            skipped_steps: skipped,
            seconds: start.elapsed().as_secs_f64(),
        };
        // Only a bound (β = 1) competes for best; without validation rows the last epoch wins.
        let is_best = match val_elbo {
            Some(v) => beta >= 1.0 && v.is_finite() && report.best_val_elbo.is_none_or(|b| v > b),
            None => true,
        };
        if is_best {
            report.best_epoch = epoch;
            report.best_val_elbo = val_elbo;
            best = Some(Snapshot::capture(vae.store())?);
            since_best = 0;
        } else {
            since_best += 1;
        }
        let go_on = on_epoch(&record, is_best)?;
        report.epochs.push(record);
        if !go_on || config.patience.is_some_and(|p| since_best >= p && beta >= 1.0) {
            break;
        }
    }
    match best {
        Some(snapshot) => snapshot.restore(vae.store())?,
        None => {
            // Never reached β = 1 with validation rows: keep the last epoch.
            report.best_epoch = report.epochs.len();
            report.best_val_elbo = report.epochs.last().and_then(|e| e.val_elbo);
        }
    }
    Ok(report)
}
