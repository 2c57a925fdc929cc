//! Maximum-likelihood training: Adam, learning-rate schedules, the fitting loop, resumable
//! state.
//!
//! [`fit`] minimizes the negative log-likelihood `-mean log p(x | c)` of a [`Distribution`]
//! whose parameters live in a [`ParamStore`] (plus the model's auxiliary regularization term,
//! if it reports one: [`Distribution::auxiliary_loss`]), over mini-batches, with:
//! - a seeded validation split, early stopping, and the best model restored at the end;
//! - [`Adam`] (optionally AdamW), global gradient-norm clipping, an [`LrSchedule`] with warmup;
//! - protection against numerical blow-ups: a step with a non-finite loss or gradient is
//!   skipped, and repeated failures roll back to the best state with a smaller learning rate;
//! - a [`TrainObserver`] for progress display and checkpoints, and exact resumption from a
//!   [`TrainState`] with [`fit_from`].
//!
//! ```
//! use normflow::bijections::ElementwiseAffine;
//! use normflow::candle::{DType, Device, Tensor};
//! use normflow::distributions::StandardNormal;
//! use normflow::train::{fit, NoopObserver, TrainConfig};
//! use normflow::{Flow, ParamStore};
//!
//! # fn main() -> normflow::Result<()> {
//! let store = ParamStore::new(DType::F32, &Device::Cpu, 0);
//! let flow = Flow::new(
//!     ElementwiseAffine::new(&store.root(), &[1])?,
//!     StandardNormal::new(&[1], DType::F32, &Device::Cpu),
//! );
//! // Rows of N(3, 1/4) data (a fixed pattern, for the example).
//! let data: Vec<f32> = (0..64).map(|i| 3.0 + 0.5 * ((i as f32) * 0.7).sin()).collect();
//! let data = Tensor::from_vec(data, (64, 1), &Device::Cpu)?;
//! let config = TrainConfig { epochs: 5, batch_size: 16, lr: 0.05, ..TrainConfig::default() };
//! let report = fit(&flow, &store, &data, None, &config, &mut NoopObserver)?;
//! assert!(report.best_val_log_prob.is_some());
//! # Ok(())
//! # }
//! ```
//!
//! [`Distribution`]: crate::Distribution
//! [`ParamStore`]: crate::ParamStore

mod adam;
mod adam_fused;
mod config;
mod data;
mod fit;
mod observer;
mod schedule;
mod state;
mod step;

pub use adam::{Adam, AdamConfig, STEP_TENSOR};
pub use config::TrainConfig;
pub use data::validation_split;
pub use fit::{fit, fit_from, log_probs, mean_log_prob, TrainReport};
pub(crate) use observer::nan_as_null;
pub use observer::{Control, EpochStats, MeanEvaluations, NoopObserver, TrainObserver};
pub use schedule::{LrSchedule, LrScheduler, PlateauState};
pub use state::{Snapshot, TrainProgress, TrainState};
pub(crate) use step::to_f64;
pub use step::{guarded_step, maximum_likelihood_step};

#[cfg(test)]
mod tests;
