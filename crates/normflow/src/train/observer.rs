//! What the training loop reports while it runs: per-epoch statistics and observer hooks.

use serde::{Deserialize, Serialize};

use super::adam::Adam;
use super::state::TrainState;
use crate::params::ParamStore;
use crate::Result;

/// Statistics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epochs completed, counting this one (the first epoch is 1).
    pub epoch: usize,
    /// Mean `-log p` over the rows of the steps that were applied; NaN when every step of the
    /// epoch was skipped (written as `null` in JSON).
    #[serde(with = "nan_as_null")]
    pub train_loss: f64,
    /// Mean `log p` over the validation rows, in evaluation mode; `None` without validation.
    pub val_log_prob: Option<f64>,
    /// Learning rate of the epoch's last step (a rollback halves it within the epoch).
    pub lr: f64,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
    /// Training rows per second (validation excluded).
    pub rows_per_second: f64,
    /// Steps skipped in this epoch because the loss or gradient was not finite.
    pub skipped_steps: usize,
    /// Mean function evaluations per training step of the models that solve ODEs (continuous
    /// flows), in the forward and the backward pass; `None` for other models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_evaluations: Option<MeanEvaluations>,
}

/// Mean number of function evaluations per training step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanEvaluations {
    /// Forward pass.
    pub forward: f64,
    /// Backward pass.
    pub backward: f64,
}

/// Whether training should go on after an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Train the next epoch.
    Continue,
    /// Stop now; the best state is restored as after a normal end.
    Stop,
}

/// Hooks called by [`super::fit`]: progress display, checkpoints, interruption.
///
/// Every method has a default that does nothing, so an observer implements only what it uses.
/// Order at the end of an epoch: [`on_new_best`](Self::on_new_best) (if it improved),
/// [`on_checkpoint`](Self::on_checkpoint), then [`on_epoch`](Self::on_epoch). An error
/// returned by a hook ends training with that error.
pub trait TrainObserver {
    /// After each optimization step (applied or skipped): `done` of `total` batches of the
    /// current epoch.
    fn on_batch(&mut self, _done: usize, _total: usize) {}

    /// After each epoch; [`Control::Stop`] ends training.
    fn on_epoch(&mut self, _stats: &EpochStats) -> Control {
        Control::Continue
    }

    /// When the model of epoch `epoch` is the new best (every epoch without validation).
    /// `store` holds that model: the place to write the best-model file.
    fn on_new_best(&mut self, _epoch: usize, _store: &ParamStore, _adam: &Adam) -> Result<()> {
        Ok(())
    }

    /// At each epoch boundary, with everything needed to resume the run exactly from here
    /// (see [`super::fit_from`]): the place to write a resumable checkpoint.
    fn on_checkpoint(&mut self, _state: &TrainState) -> Result<()> {
        Ok(())
    }
}

/// An observer that observes nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopObserver;

impl TrainObserver for NoopObserver {}

/// JSON has no NaN: store a non-finite value as `null` and read `null` back as NaN.
pub(crate) mod nan_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            s.serialize_f64(*value)
        } else {
            s.serialize_none()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}
