//! The maximum-likelihood training loop.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use super::adam::Adam;
use super::config::TrainConfig;
use super::data::{
    add_uniform_noise, all_finite, epoch_order, gather_rows, validation_split,
    VALIDATION_NOISE_STREAM,
};
use super::observer::{nan_as_null, Control, EpochStats, MeanEvaluations, TrainObserver};
use super::schedule::LrScheduler;
use super::state::{Snapshot, TrainProgress, TrainState};
use super::step::maximum_likelihood_step;
use crate::distributions::Distribution;
use crate::params::ParamStore;
use crate::{ensure_config, Error, Result};

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainReport {
    /// Epochs completed (counting those before a resume).
    pub epochs_run: usize,
    /// Epoch of the model left in the store (1-based; 0: no epoch improved on the initial model).
    pub best_epoch: usize,
    /// Validation mean log-likelihood of that model; `None` without validation.
    pub best_val_log_prob: Option<f64>,
    /// Training loss (mean `-log p`) of the last epoch.
    #[serde(with = "nan_as_null")]
    pub final_train_loss: f64,
    /// Statistics of every epoch.
    pub history: Vec<EpochStats>,
    /// Steps skipped because the loss or gradient was not finite.
    pub skipped_steps: usize,
    /// Rollbacks to the best state after `max_bad_steps` skipped steps in a row.
    pub rollbacks: usize,
    /// Wall time of all epochs, validation included.
    pub train_seconds: f64,
    /// Training throughput over all epochs (validation excluded).
    pub rows_per_second: f64,
    /// Whether early stopping (`patience`) ended the run.
    pub stopped_early: bool,
    /// Whether the observer ended the run ([`Control::Stop`]).
    pub interrupted: bool,
}

/// Fits `model` (whose trainable tensors live in `store`) to the rows of `train` by maximum
/// likelihood, from scratch. See [`fit_from`], which this calls without a state to resume.
pub fn fit(
    model: &dyn Distribution,
    store: &ParamStore,
    train: &Tensor,
    train_context: Option<&Tensor>,
    config: &TrainConfig,
    observer: &mut dyn TrainObserver,
) -> Result<TrainReport> {
    fit_from(model, store, train, train_context, config, observer, None)
}

/// Fits `model` to `train` by maximum likelihood: minimizes `-mean log p(x | c)` over
/// mini-batches with Adam, optionally continuing a run from a [`TrainState`].
///
/// # Data
/// `train` is `(N, event...)`, already preprocessed; `train_context`, for a conditional model,
/// is `(N, C)` and stays paired with the data rows through the split and every shuffle. Both are
/// moved to the store's dtype and device and must be finite. `round(val_frac * N)` rows are held
/// out for validation by a seeded shuffle (see [`super::validation_split`]).
///
/// # Each epoch
/// The training rows are shuffled by a generator that depends only on `(seed, epoch)` and cut
/// into batches of `batch_size` (the last one may be smaller). For each batch, in training mode
/// (`model.set_training(true)`): loss `-mean log p`, backward, global gradient-norm clipping,
/// one Adam step with the epoch's learning rate (schedule, warmup, times `0.5^rollbacks`). A
/// step whose loss or gradient norm is not finite is skipped, so it never reaches the
/// parameters or the optimizer; after `max_bad_steps` skipped steps in a row, the best state
/// (parameters, buffers and optimizer) is restored and the learning rate halved. Then, in
/// evaluation mode, the validation mean log-likelihood ([`mean_log_prob`]).
///
/// # Best model and early stopping
/// An epoch whose finite validation log-likelihood beats every earlier one becomes the best:
/// a detached copy of the whole store and of the optimizer is kept in memory and
/// [`TrainObserver::on_new_best`] is called. Without validation every epoch is the best (the
/// final model is the last). With `patience`, training stops after that many epochs without a
/// new best. At the end (also after [`Control::Stop`]) the best model is written back into
/// `store` and the model is left in evaluation mode. On an error, the store holds the model of
/// the moment of the error.
///
/// # Resuming
/// At each epoch boundary [`TrainObserver::on_checkpoint`] receives a [`TrainState`]. Passing it
/// as `resume` (to a model rebuilt the same way, with the same data and config) continues the
/// run so that the result is bit-identical to the uninterrupted run: the model, optimizer, best
/// state, schedule state and counters are restored, and every epoch's shuffle depends only on
/// `(seed, epoch)`. The seed, batch size and row counts must match the state's (error otherwise);
/// `epochs` may be raised to train longer (a cosine schedule then follows the new length).
#[allow(clippy::too_many_arguments)]
pub fn fit_from(
    model: &dyn Distribution,
    store: &ParamStore,
    train: &Tensor,
    train_context: Option<&Tensor>,
    config: &TrainConfig,
    observer: &mut dyn TrainObserver,
    resume: Option<TrainState>,
) -> Result<TrainReport> {
    config.validate()?;
    let (data, context) = prepare_data(train, train_context, store)?;
    let (train_idx, val_idx) = validation_split(data.dim(0)?, config)?;
    let (train_x, mut val_x) = if val_idx.is_empty() {
        (data.clone(), None)
    } else {
        (gather_rows(&data, &train_idx)?, Some(gather_rows(&data, &val_idx)?))
    };
    if config.uniform_dequantization {
        val_x = val_x
            .map(|v| add_uniform_noise(&v, config.seed, VALIDATION_NOISE_STREAM))
            .transpose()?;
    }
    let (train_c, val_c) = match &context {
        Some(c) if !val_idx.is_empty() => {
            (Some(gather_rows(c, &train_idx)?), Some(gather_rows(c, &val_idx)?))
        }
        other => (other.clone(), None),
    };
    let scheduler =
        LrScheduler::new(config.schedule, config.lr, config.warmup_epochs, config.epochs)?;
    let (progress, adam, best_model, best_adam, scheduler) = match resume {
        None => {
            let adam = Adam::new(config.adam_config())?;
            let progress = TrainProgress {
                epochs_done: 0,
                seed: config.seed,
                batch_size: config.batch_size,
                train_rows: train_idx.len(),
                val_rows: val_idx.len(),
                lr_scale: 1.0,
                plateau: scheduler.state(),
                best_epoch: 0,
                best_val_log_prob: None,
                epochs_since_best: 0,
                consecutive_bad_steps: 0,
                skipped_steps: 0,
                rollbacks: 0,
                stopped_early: false,
                history: Vec::new(),
            };
            (progress, adam.clone(), Snapshot::capture(store)?, adam, scheduler)
        }
        Some(state) => {
            check_resumable(&state.progress, config, train_idx.len(), val_idx.len())?;
            let load = |saved: &Adam| -> Result<Adam> {
                let mut adam = Adam::new(config.adam_config())?;
                adam.load_state(&saved.state_map(), store)?;
                Ok(adam)
            };
            let (adam, best_adam) = (load(&state.adam)?, load(&state.best_adam)?);
            state.best_model.check(store)?;
            state.model.restore(store)?;
            let scheduler = scheduler.with_state(state.progress.plateau)?;
            (state.progress, adam, state.best_model, best_adam, scheduler)
        }
    };
    let mut run = Run {
        model,
        store,
        config,
        observer,
        train_x,
        train_c,
        val_x,
        val_c,
        scheduler,
        progress,
        adam,
        best_model,
        best_adam,
    };
    let mut interrupted = false;
    while !run.progress.stopped_early && run.progress.epochs_done < config.epochs {
        if run.epoch()? == Control::Stop {
            interrupted = true;
            break;
        }
    }
    model.set_training(false);
    run.best_model.restore(store)?;
    Ok(run.report(interrupted))
}

/// Mean `log p(x | c)` over the rows of `x`, evaluated `batch_size` rows at a time with no
/// graph kept (each batch's result is detached before the next). Uses the model in its current
/// mode: call `model.set_training(false)` first for evaluation.
pub fn mean_log_prob(
    model: &dyn Distribution,
    x: &Tensor,
    context: Option<&Tensor>,
    batch_size: usize,
) -> Result<f64> {
    let values = log_probs(model, x, context, batch_size)?;
    Ok(values.iter().sum::<f64>() / values.len() as f64)
}

/// `log p(x_i | c_i)` of every row of `x`, as host `f64`s, evaluated `batch_size` rows at a time
/// with no graph kept. Uses the model in its current mode (see [`mean_log_prob`]).
pub fn log_probs(
    model: &dyn Distribution,
    x: &Tensor,
    context: Option<&Tensor>,
    batch_size: usize,
) -> Result<Vec<f64>> {
    ensure_config!(batch_size >= 1, "batch_size", batch_size, "at least 1");
    let n = rows(x, "data")?;
    check_context_rows(context, n)?;
    let mut out = Vec::with_capacity(n);
    for start in (0..n).step_by(batch_size) {
        let len = batch_size.min(n - start);
        let xb = x.narrow(0, start, len)?;
        let cb = context.map(|c| c.narrow(0, start, len)).transpose()?;
        let lp = model.log_prob(&xb, cb.as_ref())?.detach();
        out.extend(lp.to_device(&Device::Cpu)?.to_dtype(DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}

struct Run<'a> {
    model: &'a dyn Distribution,
    store: &'a ParamStore,
    config: &'a TrainConfig,
    observer: &'a mut dyn TrainObserver,
    train_x: Tensor,
    train_c: Option<Tensor>,
    val_x: Option<Tensor>,
    val_c: Option<Tensor>,
    scheduler: LrScheduler,
    progress: TrainProgress,
    adam: Adam,
    best_model: Snapshot,
    best_adam: Adam,
}

impl Run<'_> {
    /// Trains one epoch, validates, updates the best state, and reports to the observer.
    fn epoch(&mut self) -> Result<Control> {
        let start = Instant::now();
        let epoch = self.progress.epochs_done;
        let epoch_lr = self.scheduler.lr_for_epoch(epoch);
        let mut lr = epoch_lr * self.progress.lr_scale;
        let n_train = self.progress.train_rows;
        let order = epoch_order(self.config.seed, epoch, n_train);
        let batches: Vec<&[usize]> = order.chunks(self.config.batch_size).collect();
        let (mut loss_sum, mut loss_rows, mut skipped) = (0.0, 0usize, 0usize);
        let (mut nfe_forward, mut nfe_backward, mut nfe_steps) = (0usize, 0usize, 0usize);
        self.model.set_training(true);
        for (b, idx) in batches.iter().enumerate() {
            let mut xb = gather_rows(&self.train_x, idx)?;
            if self.config.uniform_dequantization {
                let stream = ((epoch as u64) << 32) | b as u64;
                xb = add_uniform_noise(&xb, self.config.seed, stream)?;
            }
            let cb = self.train_c.as_ref().map(|c| gather_rows(c, idx)).transpose()?;
            let step = self.try_step(&xb, cb.as_ref(), lr)?;
            if let Some(nfe) = self.model.function_evaluations() {
                nfe_forward += nfe.forward;
                nfe_backward += nfe.backward;
                nfe_steps += 1;
            }
            match step {
                Some(loss) => {
                    loss_sum += loss * idx.len() as f64;
                    loss_rows += idx.len();
                    self.progress.consecutive_bad_steps = 0;
                }
                None => {
                    skipped += 1;
                    self.progress.skipped_steps += 1;
                    self.progress.consecutive_bad_steps += 1;
                    if self.progress.consecutive_bad_steps >= self.config.max_bad_steps {
                        self.rollback()?;
                        lr = epoch_lr * self.progress.lr_scale;
                    }
                }
            }
            self.observer.on_batch(b + 1, batches.len());
        }
        let train_seconds = start.elapsed().as_secs_f64().max(1e-12);
        self.model.set_training(false);
        let val = match &self.val_x {
            Some(x) => {
                Some(mean_log_prob(self.model, x, self.val_c.as_ref(), self.config.batch_size)?)
            }
            None => None,
        };
        let train_loss = if loss_rows > 0 { loss_sum / loss_rows as f64 } else { f64::NAN };

        let progress = &mut self.progress;
        progress.epochs_done += 1;
        let improved = match val {
            Some(v) => v.is_finite() && progress.best_val_log_prob.is_none_or(|best| v > best),
            None => true,
        };
        if improved {
            progress.best_epoch = progress.epochs_done;
            progress.best_val_log_prob = val;
            progress.epochs_since_best = 0;
            self.best_model = Snapshot::capture(self.store)?;
            self.best_adam = self.adam.clone();
        } else {
            progress.epochs_since_best += 1;
        }
        self.scheduler.observe(epoch, val.map_or(train_loss, |v| -v));
        progress.plateau = self.scheduler.state();
        progress.stopped_early =
            self.config.patience.is_some_and(|p| progress.epochs_since_best >= p);
        let stats = EpochStats {
            epoch: progress.epochs_done,
            train_loss,
            val_log_prob: val,
            lr,
            seconds: start.elapsed().as_secs_f64(),
            rows_per_second: n_train as f64 / train_seconds,
            skipped_steps: skipped,
            function_evaluations: (nfe_steps > 0).then(|| MeanEvaluations {
                forward: nfe_forward as f64 / nfe_steps as f64,
                backward: nfe_backward as f64 / nfe_steps as f64,
            }),
        };
        progress.history.push(stats.clone());

        if improved {
            self.observer.on_new_best(self.progress.epochs_done, self.store, &self.adam)?;
        }
        let state = TrainState {
            progress: self.progress.clone(),
            model: Snapshot::capture(self.store)?,
            adam: self.adam.clone(),
            best_model: self.best_model.clone(),
            best_adam: self.best_adam.clone(),
        };
        self.observer.on_checkpoint(&state)?;
        Ok(self.observer.on_epoch(&stats))
    }

    /// One optimization step on a batch ([`maximum_likelihood_step`]).
    fn try_step(&mut self, x: &Tensor, context: Option<&Tensor>, lr: f64) -> Result<Option<f64>> {
        let clip = self.config.clip_grad_norm;
        maximum_likelihood_step(self.model, self.store, &mut self.adam, x, context, clip, lr)
    }

    /// Back to the best state (model and optimizer), with half the learning rate.
    fn rollback(&mut self) -> Result<()> {
        self.best_model.restore(self.store)?;
        self.adam = self.best_adam.clone();
        self.progress.lr_scale *= 0.5;
        self.progress.rollbacks += 1;
        self.progress.consecutive_bad_steps = 0;
        Ok(())
    }

    fn report(self, interrupted: bool) -> TrainReport {
        let p = self.progress;
        let train_seconds = p.history.iter().map(|s| s.seconds).sum();
        let rows = (p.train_rows * p.history.len()) as f64;
        let busy: f64 = p.history.iter().map(|s| p.train_rows as f64 / s.rows_per_second).sum();
        TrainReport {
            epochs_run: p.epochs_done,
            best_epoch: p.best_epoch,
            best_val_log_prob: p.best_val_log_prob,
            final_train_loss: p.history.last().map_or(f64::NAN, |s| s.train_loss),
            skipped_steps: p.skipped_steps,
            rollbacks: p.rollbacks,
            train_seconds,
            rows_per_second: if busy > 0.0 { rows / busy } else { 0.0 },
            stopped_early: p.stopped_early,
            interrupted,
            history: p.history,
        }
    }
}

fn rows(x: &Tensor, what: &str) -> Result<usize> {
    if x.rank() == 0 || x.dim(0)? == 0 {
        return Err(Error::Data(format!(
            "{what} must be (rows, features...) with at least one row, got shape {:?}",
            x.dims()
        )));
    }
    Ok(x.dim(0)?)
}

fn check_context_rows(context: Option<&Tensor>, n: usize) -> Result<()> {
    if let Some(c) = context {
        let m = if c.rank() == 0 { 0 } else { c.dim(0)? };
        if m != n {
            return Err(Error::Context(format!(
                "{n} data rows but {m} context rows: give one context row per data row"
            )));
        }
    }
    Ok(())
}

/// Checks shapes and finiteness, and moves data and context to the store's dtype and device.
fn prepare_data(
    train: &Tensor,
    context: Option<&Tensor>,
    store: &ParamStore,
) -> Result<(Tensor, Option<Tensor>)> {
    let n = rows(train, "training data")?;
    check_context_rows(context, n)?;
    let to_store = |t: &Tensor| -> Result<Tensor> {
        Ok(t.to_dtype(store.dtype())?.to_device(store.device())?)
    };
    let data = to_store(train)?;
    if !all_finite(&data)? {
        return Err(Error::Data("the training data contains NaN or infinite values".into()));
    }
    let context = context.map(to_store).transpose()?;
    if let Some(c) = &context {
        if !all_finite(c)? {
            return Err(Error::Data("the training context contains NaN or infinite values".into()));
        }
    }
    Ok((data, context))
}

fn check_resumable(
    saved: &TrainProgress,
    config: &TrainConfig,
    train_rows: usize,
    val_rows: usize,
) -> Result<()> {
    let resumed = "must equal that of the run being resumed";
    ensure_config!(
        saved.seed == config.seed,
        "seed",
        config.seed,
        format!("{resumed} ({})", saved.seed)
    );
    ensure_config!(
        saved.batch_size == config.batch_size,
        "batch_size",
        config.batch_size,
        format!("{resumed} ({})", saved.batch_size)
    );
    if (saved.train_rows, saved.val_rows) != (train_rows, val_rows) {
        return Err(Error::Data(format!(
            "the run being resumed had {} training and {} validation rows; this data and val_frac \
             give {train_rows} and {val_rows}",
            saved.train_rows, saved.val_rows
        )));
    }
    ensure_config!(
        saved.lr_scale.is_finite() && saved.lr_scale > 0.0,
        "lr_scale",
        saved.lr_scale,
        "a finite value > 0 in the saved progress"
    );
    Ok(())
}
