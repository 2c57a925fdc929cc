//! The variational-inference loop: reverse KL from a flow to an unnormalized target.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::config::ViConfig;
use super::estimates::check_dims;
use super::target::Target;
use crate::distributions::Distribution;
use crate::params::ParamStore;
use crate::train::{guarded_step, to_f64, Adam, Control, NoopObserver, Snapshot};
use crate::{Error, Result};

/// Applied steps between two snapshots of the last good state (what a rollback returns to).
const SNAPSHOT_EVERY: usize = 50;

/// Statistics of one step of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ViStep {
    /// Steps done, counting this one (the first step is 1).
    pub step: usize,
    /// The batch's ELBO estimate `mean(log p~(z) - log q(z))` at `beta = 1`, whatever the
    /// annealing; NaN when the step was skipped (written as `null` in JSON).
    #[serde(with = "crate::train::nan_as_null")]
    pub elbo: f64,
    /// The inverse temperature of the step.
    pub beta: f64,
    /// The learning rate of the step.
    pub lr: f64,
    /// Whether the step was skipped (non-finite loss or gradient).
    pub skipped: bool,
}

/// What [`fit`] reports to its caller while it runs.
pub trait ViObserver {
    /// After every step (applied or skipped); [`Control::Stop`] ends the run.
    fn on_step(&mut self, stats: &ViStep) -> Control;
}

impl ViObserver for NoopObserver {
    fn on_step(&mut self, _stats: &ViStep) -> Control {
        Control::Continue
    }
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViReport {
    /// Steps taken (applied or skipped).
    pub steps_run: usize,
    /// Statistics of every step.
    pub history: Vec<ViStep>,
    /// Steps skipped because the loss or gradient was not finite.
    pub skipped_steps: usize,
    /// Rollbacks to the last good state after `max_bad_steps` skipped steps in a row.
    pub rollbacks: usize,
    /// Wall time of the run.
    pub seconds: f64,
    /// Whether the observer ended the run.
    pub interrupted: bool,
}

/// The surrogate loss of one step and the batch's log-weights.
///
/// Draws `n` reparameterized samples `z = T(eps)` from `q` with `log q(z)` and returns
///
/// ```text
/// loss  = -mean(beta log p~(z) - log q(z))                       (plain reverse KL)
/// loss  = -mean(beta log p~(z) - [log q(z) - log q_theta(sg(z))]) (sticking the landing)
/// log_w = log p~(z) - log q(z)    (detached, (n,))
/// ```
///
/// With `stl`, the bracket is about 0 in value, but its gradient is `d log q / dz dz / dtheta`
/// only: `log q_theta(sg(z))`, evaluated with the live parameters at the stopped sample, removes
/// the score term `d log q_theta / d theta` (Roeder, Wu & Duvenaud 2017). It costs one density
/// evaluation of `q` per step (for an IAF, its slow direction).
///
/// Gradients reach the parameters only if `q`'s sampling keeps them (every flow in normflow
/// samples by a differentiable pass; the mixture base's component choice is the exception).
pub fn elbo_loss(
    q: &dyn Distribution,
    target: &dyn Target,
    n: usize,
    beta: f64,
    stl: bool,
    rng: &mut dyn RngCore,
) -> Result<(Tensor, Tensor)> {
    let (z, log_q) = q.sample_and_log_prob(n, None, rng)?;
    let log_p = target.log_density(&z)?;
    if log_p.dims() != [n] {
        return Err(Error::shape("target log-density output", format!("({n},)"), log_p.dims()));
    }
    let log_w = (&log_p - &log_q)?.detach();
    let entropy_term = if stl { (&log_q - q.log_prob(&z.detach(), None)?)? } else { log_q };
    let loss = ((log_p * beta)? - entropy_term)?.mean_all()?.neg()?;
    Ok((loss, log_w))
}

/// Fits `q` (whose trainable tensors live in `store`) to `target` by maximizing the ELBO
/// `E_q[log p~(z) - log q(z)] = log Z - KL(q || p)` (Rezende & Mohamed 2015).
///
/// Each step draws `batch_size` reparameterized samples ([`elbo_loss`], with the step's
/// annealing `beta` and optional sticking-the-landing gradient), backpropagates, clips the
/// global gradient norm, and takes one Adam step at the scheduled learning rate (times
/// `0.5^rollbacks`). As in maximum-likelihood training ([`crate::train::fit`]), a step whose
/// loss or gradient is not finite is skipped without touching the parameters or the optimizer,
/// and after `max_bad_steps` skipped steps in a row the parameters and optimizer go back to the
/// last good state (a snapshot taken every 50 applied steps) with half the learning rate.
///
/// `q` must be unconditional with event shape `(target.dim(),)`, and sample on the target's
/// support (for a bounded one, see [`crate::model::Model::with_support`]). The samples come
/// from a generator seeded by `config.seed`, so a run is reproducible. `q` is left in
/// evaluation mode.
pub fn fit(
    q: &dyn Distribution,
    store: &ParamStore,
    target: &dyn Target,
    config: &ViConfig,
    observer: &mut dyn ViObserver,
) -> Result<ViReport> {
    config.validate()?;
    check_dims(q, target)?;
    let start = Instant::now();
    let mut scheduler = config.scheduler()?;
    let mut rng = crate::random::rng_from_seed(config.seed);
    let mut adam = Adam::new(config.adam_config())?;
    let mut good = (Snapshot::capture(store)?, adam.clone());
    let (mut lr_scale, mut bad_in_row, mut applied) = (1.0, 0usize, 0usize);
    let mut report = ViReport {
        steps_run: 0,
        history: Vec::with_capacity(config.steps),
        skipped_steps: 0,
        rollbacks: 0,
        seconds: 0.0,
        interrupted: false,
    };
    q.set_training(true);
    for t in 0..config.steps {
        let beta = config.beta(t);
        let lr = scheduler.lr_for_epoch(t) * lr_scale;
        let (loss, log_w) = elbo_loss(q, target, config.batch_size, beta, config.stl, &mut rng)?;
        let stepped = guarded_step(store, &mut adam, &loss, config.clip_grad_norm, lr)?;
        let elbo = match stepped {
            Some(loss_value) => {
                scheduler.observe(t, loss_value);
                bad_in_row = 0;
                applied += 1;
                if applied % SNAPSHOT_EVERY == 0 {
                    good = (Snapshot::capture(store)?, adam.clone());
                }
                to_f64(&log_w.to_dtype(DType::F64)?.to_device(&Device::Cpu)?.mean_all()?)?
            }
            None => {
                report.skipped_steps += 1;
                bad_in_row += 1;
                if bad_in_row >= config.max_bad_steps {
                    good.0.restore(store)?;
                    adam = good.1.clone();
                    lr_scale *= 0.5;
                    report.rollbacks += 1;
                    bad_in_row = 0;
                }
                f64::NAN
            }
        };
        let stats = ViStep { step: t + 1, elbo, beta, lr, skipped: stepped.is_none() };
        report.history.push(stats);
        report.steps_run = t + 1;
        if observer.on_step(&stats) == Control::Stop {
            report.interrupted = true;
            break;
        }
    }
    q.set_training(false);
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
