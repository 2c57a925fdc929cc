//! Snapshots of a model and the resumable state of a training run.

use std::collections::HashMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::adam::{Adam, AdamConfig};
use super::observer::EpochStats;
use super::schedule::PlateauState;
use crate::params::ParamStore;
use crate::{Error, Result};

/// Detached deep copies of every tensor of a store (parameters and buffers), by name.
///
/// Copies, not clones: the store's `Var`s are overwritten in place by each step, so a clone
/// would change with them.
#[derive(Debug, Clone)]
pub struct Snapshot {
    tensors: Vec<(String, Tensor)>,
}

impl Snapshot {
    /// Copies every tensor of `store`.
    pub fn capture(store: &ParamStore) -> Result<Self> {
        let tensors = store
            .all()
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().copy()?.detach())))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { tensors })
    }

    /// A snapshot of `store`'s tensors from `tensors` (by name, as [`Snapshot::tensors`] gives
    /// them), copied into the store's dtype and device. Fails, naming the tensor, when one is
    /// missing, has another shape, or is not in the store.
    pub fn from_tensors(tensors: &HashMap<String, Tensor>, store: &ParamStore) -> Result<Self> {
        let entries = store.all();
        if let Some(extra) = tensors.keys().find(|k| !entries.iter().any(|(n, _)| n == *k)) {
            return Err(Error::Data(format!("snapshot: tensor `{extra}` is not in the model")));
        }
        let tensors = entries
            .into_iter()
            .map(|(name, var)| {
                let t = tensors
                    .get(&name)
                    .ok_or_else(|| Error::Data(format!("snapshot: tensor `{name}` is missing")))?;
                if t.dims() != var.dims() {
                    return Err(Error::shape(
                        format!("snapshot tensor `{name}`"),
                        format!("{:?}", var.dims()),
                        t.dims(),
                    ));
                }
                let t = t.to_dtype(store.dtype())?.to_device(store.device())?.copy()?.detach();
                Ok((name, t))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { tensors })
    }

    /// The copied tensors, sorted by name.
    pub fn tensors(&self) -> &[(String, Tensor)] {
        &self.tensors
    }

    /// Checks that `store` has exactly the snapshot's names and shapes.
    pub fn check(&self, store: &ParamStore) -> Result<()> {
        let entries = store.all();
        if entries.len() != self.tensors.len() {
            return Err(Error::Data(format!(
                "snapshot: the model has {} tensors, the snapshot {}",
                entries.len(),
                self.tensors.len()
            )));
        }
        for ((name, var), (saved, t)) in entries.iter().zip(&self.tensors) {
            if name != saved {
                return Err(Error::Data(format!(
                    "snapshot: tensor `{saved}` where the model has `{name}`"
                )));
            }
            if var.dims() != t.dims() {
                return Err(Error::shape(
                    format!("snapshot tensor `{name}`"),
                    format!("{:?}", var.dims()),
                    t.dims(),
                ));
            }
        }
        Ok(())
    }

    /// Writes the snapshot back into `store`. Fails, changing nothing, unless the store has
    /// exactly the snapshot's names and shapes ([`Snapshot::check`]).
    pub fn restore(&self, store: &ParamStore) -> Result<()> {
        self.check(store)?;
        for ((_, var), (_, t)) in store.all().iter().zip(&self.tensors) {
            var.set(t)?;
        }
        Ok(())
    }
}

/// The scalar part of a run's state: counters, best-so-far, schedule, history. Serializable
/// (JSON), so a checkpoint is this plus [`TrainState::tensors`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    /// Epochs completed; a resumed run starts with epoch `epochs_done` (0-based).
    pub epochs_done: usize,
    /// Seed of the run; a resumed run must use the same (it fixes the split and shuffles).
    pub seed: u64,
    /// Batch size of the run; a resumed run must use the same.
    pub batch_size: usize,
    /// Training rows after the split.
    pub train_rows: usize,
    /// Validation rows after the split.
    pub val_rows: usize,
    /// Product of the halvings by rollbacks, applied on top of the schedule.
    pub lr_scale: f64,
    /// The learning-rate scheduler's state.
    pub plateau: PlateauState,
    /// Epoch of the best model (1-based); 0 while the initial model is the best.
    pub best_epoch: usize,
    /// Validation mean log-likelihood of the best model.
    pub best_val_log_prob: Option<f64>,
    /// Epochs since the best one (early stopping counts these).
    pub epochs_since_best: usize,
    /// Skipped steps in a row at the end of the last epoch.
    pub consecutive_bad_steps: usize,
    /// Steps skipped in total.
    pub skipped_steps: usize,
    /// Rollbacks to the best state in total.
    pub rollbacks: usize,
    /// Whether early stopping ended the run (a resumed run then trains no further).
    pub stopped_early: bool,
    /// Statistics of every completed epoch.
    pub history: Vec<EpochStats>,
}

/// Everything a run needs to continue exactly from an epoch boundary: the progress, the
/// current model and optimizer, and the best model and optimizer (for rollbacks and the final
/// restore). Given to [`super::TrainObserver::on_checkpoint`]; passed back to
/// [`super::fit_from`].
#[derive(Debug, Clone)]
pub struct TrainState {
    /// Counters, best-so-far, schedule state and history.
    pub progress: TrainProgress,
    /// The model at the boundary (parameters and buffers).
    pub model: Snapshot,
    /// The optimizer at the boundary.
    pub adam: Adam,
    /// The best model so far.
    pub best_model: Snapshot,
    /// The optimizer when the best model was recorded.
    pub best_adam: Adam,
}

const MODEL: &str = "model.";
const BEST: &str = "best.";

impl TrainState {
    /// All tensors, named `model.<name>`, `adam.*` (see [`Adam::state_tensors`]),
    /// `best.model.<name>` and `best.adam.*`: one safetensors file holds them.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        let model = self.model.tensors().iter().map(|(n, t)| (format!("{MODEL}{n}"), t.clone()));
        out.extend(model);
        out.extend(self.adam.state_tensors());
        let best =
            self.best_model.tensors().iter().map(|(n, t)| (format!("{BEST}{MODEL}{n}"), t.clone()));
        out.extend(best);
        out.extend(
            self.best_adam.state_tensors().into_iter().map(|(n, t)| (format!("{BEST}{n}"), t)),
        );
        out
    }

    /// Rebuilds a state from [`TrainState::tensors`] and its progress, checked against `store`
    /// (every tensor present with the right shape; errors name the tensor). `adam` gives the
    /// optimizer's hyperparameters.
    pub fn from_tensors(
        progress: TrainProgress,
        tensors: &HashMap<String, Tensor>,
        store: &ParamStore,
        adam: AdamConfig,
    ) -> Result<Self> {
        let strip = |prefix: &str| -> HashMap<String, Tensor> {
            tensors
                .iter()
                .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_string(), t.clone())))
                .collect()
        };
        let best = strip(BEST);
        let model = Snapshot::from_tensors(&strip(MODEL), store)?;
        let best_model = Snapshot::from_tensors(&strip(&format!("{BEST}{MODEL}")), store)?;
        let mut current = Adam::new(adam)?;
        current.load_state(tensors, store)?;
        let mut best_adam = Adam::new(adam)?;
        best_adam.load_state(&best, store)?;
        Ok(Self { progress, model, adam: current, best_model, best_adam })
    }
}
